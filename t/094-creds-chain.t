# replay_s3_credentials chain: the source picked from the environment as
# the AWS SDKs do (the environment's keys, a web identity token, the
# container endpoint, then IMDS), so that one line serves every AWS
# platform; the master reads the AWS_* variables, the workers need no
# "env" directive.  The suite's IMDS, container and STS stand in for AWS's
# (IMDS's address is always given: something answers on 169.254.169.254
# in this sandbox).  "--- before" gives a block's nginx its environment.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('imds');
AwsCreds::start('container');
AwsCreds::start('sts');
AwsCreds::init();

my %saved = map { $_ => $ENV{$_} } qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY);

my @vars = qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
              AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS
              AWS_CA_BUNDLE AWS_CONTAINER_CREDENTIALS_FULL_URI
              AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
              AWS_EC2_METADATA_SERVICE_ENDPOINT AWS_EC2_METADATA_DISABLED);

# the environment of a block's nginx: the sources named (keys, web
# identity, container, imds) and nothing else of AWS's; the services reset
sub env {
    my (@sources) = @_;

    return sub {
        my %set;

        for my $s (@sources) {
            if ($s eq 'keys') {
                %set = (%set, %saved);

            } elsif ($s eq 'web_identity') {
                AwsCreds::control('sts', reset => 1);
                %set = (%set,
                        AWS_WEB_IDENTITY_TOKEN_FILE
                            => "$Test::Nginx::Util::ServRoot/html/web-token",
                        AWS_ROLE_ARN => 'arn:aws:iam::123456789012:role/replay',
                        AWS_ENDPOINT_URL_STS => $ENV{TEST_NGINX_STS_URL},
                        AWS_CA_BUNDLE => "$ENV{TEST_NGINX_TLS_DIR}/ca.crt");

            } elsif ($s eq 'container') {
                AwsCreds::control('container', reset => 1,
                                  path => '/v2/credentials/task');
                $set{AWS_CONTAINER_CREDENTIALS_FULL_URI}
                    = "$ENV{TEST_NGINX_CONTAINER_URL}/v2/credentials/task";

            } elsif ($s eq 'imds') {
                AwsCreds::control('imds', reset => 1);
                $set{AWS_EC2_METADATA_SERVICE_ENDPOINT}
                    = $ENV{TEST_NGINX_IMDS_URL};

            } else {
                $set{AWS_EC2_METADATA_DISABLED} = 'true';
            }
        }

        delete @ENV{@vars};
        @ENV{keys %set} = values %set;
    };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the environment's keys come first
--- before eval
main::env(qw(keys web_identity container imds))
--- after_request eval
[\&AwsCreds::ready, sub {
    Test::More::is(scalar(AwsCreds::requests('sts'))
                   + scalar(AwsCreds::requests('container')), 0,
                   'TEST 1: neither STS nor the container endpoint was asked');
    AwsCreds::log_like(qr/\[notice\] .*replay_s3_credentials chain: env \(AWS_ACCESS_KEY_ID is set\)/,
                       'TEST 1: the choice is logged');
}]
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-chain.c2ln
--- creds: chain
--- request eval
["GET /status?format=json", "GET /s3"]
--- response_body_like eval
[qr/"replay_credentials":\[\{"source":"env",/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
[error]
--- s3_requests
# the suite's own key pair, from AWS_ACCESS_KEY_ID
GET /replays/games/1/replay.bin signed




=== TEST 2: then a web identity token (IRSA on EKS)
--- before eval
main::env(qw(web_identity container imds))
--- after_request eval
[\&AwsCreds::ready, sub {
    Test::More::is(scalar(AwsCreds::requests('sts')), 1, 'TEST 2: STS was asked');
    AwsCreds::no_secrets_in_logs('TEST 2', 'mintJWT');
}]
--- timeout: 10
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-chain.c2ln
--- creds: chain
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="web_identity"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('sts', 0)




=== TEST 3: then the container endpoint (ECS, EKS Pod Identity)
--- before eval
main::env(qw(container imds))
--- after_request eval
[\&AwsCreds::ready, sub { AwsCreds::no_secrets_in_logs('TEST 3') }]
--- creds: chain
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="container"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('container', 0)




=== TEST 4: then IMDS (EC2)
--- before eval
main::env(qw(imds))
--- after_request eval
[\&AwsCreds::ready, sub { AwsCreds::no_secrets_in_logs('TEST 4') }]
--- creds: chain
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="imds"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('imds', 0)




=== TEST 5: IMDS turned off and nothing else: nginx says so at startup
--- before eval
main::env(qw(no_imds))
--- creds: chain
--- must_die
--- error_log
replay_s3_credentials chain: no source in nginx's environment (no AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE or AWS_CONTAINER_CREDENTIALS_*_URI, and AWS_EC2_METADATA_DISABLED is true)



=== TEST 6: one set serves the locations of a server; sources take no parameter of another
--- before eval
main::env(qw(keys))
--- config
    replay_s3_credentials  chain timeout=2s;

    location /a {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_key          games/1/replay.bin;
    }

    location /b {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_key          games/2/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /a", "GET /b", "GET /status"]
--- response_body_like eval
[qr/^bucket=replays key=games\/1/, qr/^bucket=replays key=games\/2/,
 qr/\n# TYPE replay_credentials_valid gauge\nreplay_credentials_valid\{source="env",config="nginx.conf:\d+"\} 1\n#/]
--- s3_requests
GET /replays/games/1/replay.bin signed
GET /replays/games/2/replay.bin signed




=== TEST 7: a parameter of another source is refused
--- creds: imds token_file=/x
--- must_die
--- error_log
invalid parameter "token_file=/x"
