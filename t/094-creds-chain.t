# replay_s3_credentials chain: the source picked from the environment as
# the AWS SDKs do (the environment's keys, a web identity token, the
# container endpoint, then IMDS), so that one line serves every AWS
# platform; the master reads the AWS_* variables, the workers need no
# "env" directive.  The suite's IMDS, container and STS stand in for AWS's
# (IMDS's address is always given: something answers on 169.254.169.254
# in this sandbox).

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('imds');
AwsCreds::start('container');
AwsCreds::start('sts');

# the blocks' location (AwsCreds.pm), with their "--- creds"
AwsCreds::location();

my %saved = map { $_ => $ENV{$_} } qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY);

my @vars = qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
              AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS
              AWS_CA_BUNDLE AWS_CONTAINER_CREDENTIALS_FULL_URI
              AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
              AWS_EC2_METADATA_SERVICE_ENDPOINT AWS_EC2_METADATA_DISABLED);

# the environment of a block's nginx: these and nothing else of AWS's
sub env {
    my (%set) = @_;
    delete @ENV{@vars};
    @ENV{keys %set} = values %set;
}

sub web_identity {
    return (AWS_WEB_IDENTITY_TOKEN_FILE
                => "$Test::Nginx::Util::ServRoot/html/web-token",
            AWS_ROLE_ARN => 'arn:aws:iam::123456789012:role/replay',
            AWS_ENDPOINT_URL_STS => $ENV{TEST_NGINX_STS_URL},
            AWS_CA_BUNDLE => "$ENV{TEST_NGINX_TLS_DIR}/ca.crt");
}

sub container {
    return (AWS_CONTAINER_CREDENTIALS_FULL_URI
                => "$ENV{TEST_NGINX_CONTAINER_URL}/v2/credentials/task");
}

sub imds {
    return (AWS_EC2_METADATA_SERVICE_ENDPOINT => $ENV{TEST_NGINX_IMDS_URL});
}

my %before = (
    1 => sub { env(%saved, web_identity(), container(), imds()) },
    2 => sub {
        AwsCreds::control('sts', reset => 1);
        env(web_identity(), container(), imds());
    },
    3 => sub {
        AwsCreds::control('container', reset => 1,
                          path => '/v2/credentials/task');
        env(container(), imds());
    },
    4 => sub { AwsCreds::control('imds', reset => 1); env(imds()) },
    5 => sub { env(AWS_EC2_METADATA_DISABLED => 'true') },
    6 => sub { env(%saved) },
);

my %steps = (
    1 => { 0 => \&AwsCreds::ready,
           1 => sub {
               Test::More::is(scalar(AwsCreds::requests('sts'))
                              + scalar(AwsCreds::requests('container')), 0,
                              'TEST 1: neither STS nor the container '
                              . 'endpoint was asked');
               AwsCreds::log_like(qr/\[notice\] .*replay_s3_credentials chain: env \(AWS_ACCESS_KEY_ID is set\)/,
                                  'TEST 1: the choice is logged');
           } },
    2 => { 0 => \&AwsCreds::ready,
           1 => sub {
               Test::More::is(scalar(AwsCreds::requests('sts')), 1,
                              'TEST 2: STS was asked');
               AwsCreds::no_secrets_in_logs('TEST 2', 'mintJWT');
           } },
    3 => { 0 => \&AwsCreds::ready,
           1 => sub { AwsCreds::no_secrets_in_logs('TEST 3') } },
    4 => { 0 => \&AwsCreds::ready,
           1 => sub { AwsCreds::no_secrets_in_logs('TEST 4') } },
);

AwsCreds::before(\%before);
AwsCreds::steps(\%steps);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the environment's keys come first
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



=== TEST 2: then a web identity token (IRSA on EKS)
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



=== TEST 3: then the container endpoint (ECS, EKS Pod Identity)
--- creds: chain
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="container"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]



=== TEST 4: then IMDS (EC2)
--- creds: chain
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="imds"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]



=== TEST 5: IMDS turned off and nothing else: nginx says so at startup
--- creds: chain
--- must_die
--- error_log
replay_s3_credentials chain: no source in nginx's environment (no AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE or AWS_CONTAINER_CREDENTIALS_*_URI, and AWS_EC2_METADATA_DISABLED is true)



=== TEST 6: one set serves the locations of a server; sources take no parameter of another
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



=== TEST 7: a parameter of another source is refused
--- creds: imds token_file=/x
--- must_die
--- error_log
invalid parameter "token_file=/x"
