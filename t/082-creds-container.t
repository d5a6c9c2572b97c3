# replay_s3_credentials container: the ECS task role and EKS Pod
# Identity endpoint (the suite's, t/services/aws/container.js), given by
# AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI (or endpoint=), with
# the authorization token of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read
# again at each refresh) or AWS_CONTAINER_AUTHORIZATION_TOKEN.  %before
# sets the service and the environment up before a block's nginx starts;
# %steps act between its requests and check the logs at the end.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('container');

my $TOKEN1 = 'mintAUTH-pod-identity-one';
my $TOKEN2 = 'mintAUTH-pod-identity-two';

my $s3_from;

sub ready {
    Test::More::ok(AwsCreds::wait_valid('/status'),
                   'the first credentials came');
    $s3_from = AwsCreds::s3_log_size();
}

sub keys_since { return AwsCreds::s3_keys($s3_from) }

sub pause { select undef, undef, undef, $_[0] }

sub agent { AwsCreds::control('container', reset => 1, @_) }

sub token_file { "$Test::Nginx::Util::ServRoot/html/pod-token" }

sub auths { return map { $_->{authorization} } AwsCreds::requests('container') }

sub clean {
    my ($n) = @_;
    AwsCreds::no_secrets_in_logs("TEST $n", 'mintAUTH');
}

sub unset_env {
    delete @ENV{qw(AWS_CONTAINER_CREDENTIALS_FULL_URI
                   AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
                   AWS_CONTAINER_AUTHORIZATION_TOKEN
                   AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)};
}

my %before = (
    1 => sub {
        agent(flavor => 'eks', path => '/v1/credentials', token => $TOKEN1);
        $ENV{AWS_CONTAINER_CREDENTIALS_FULL_URI}
            = "$ENV{TEST_NGINX_CONTAINER_URL}/v1/credentials";
        $ENV{AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE} = token_file();
    },
    2 => sub {
        unset_env();
        agent(flavor => 'eks', path => '/v1/credentials', token => $TOKEN1,
              ttl => 6);
    },
    3 => sub {
        agent(path => '/v2/credentials/task', token => 'mintAUTH-static');
        $ENV{AWS_CONTAINER_CREDENTIALS_FULL_URI}
            = "$ENV{TEST_NGINX_CONTAINER_URL}/v2/credentials/task";
        $ENV{AWS_CONTAINER_AUTHORIZATION_TOKEN} = 'mintAUTH-static';
    },
    4 => sub { unset_env(); agent(path => '/v2/credentials/task', ttl => 10) },
    5 => sub {
        agent(flavor => 'eks', path => '/v1/credentials', token => $TOKEN1,
              ttl => 5);
    },
    6 => sub {
        unset_env();
        $ENV{AWS_CONTAINER_CREDENTIALS_RELATIVE_URI} = '/v2/credentials/x';
    },
    7 => sub { unset_env() },
);

my %steps = (
    1 => { 0 => \&ready,
           1 => sub {
               Test::More::is(CORE::join(' ', auths()), $TOKEN1,
                              'TEST 1: the token file\'s token, as '
                              . 'Authorization');
               clean(1);
           } },
    2 => { 0 => sub {
               ready();
               AwsCreds::write_file(token_file(), "$TOKEN2\n");
               AwsCreds::control('container', token => $TOKEN2);
           },
           1 => sub { pause(4.2) },
           2 => sub {
               Test::More::is(CORE::join(' ', auths()), "$TOKEN1 $TOKEN2",
                              'TEST 2: the token file read again at the '
                              . 'refresh');
               my @k = keys_since();
               Test::More::isnt($k[0], $k[1], 'TEST 2: new credentials');
               clean(2);
           } },
    3 => { 0 => \&ready,
           1 => sub {
               Test::More::is(CORE::join(' ', auths()), 'mintAUTH-static',
                              'TEST 3: AWS_CONTAINER_AUTHORIZATION_TOKEN');
               clean(3);
           } },
    4 => { 0 => sub { ready(); AwsCreds::control('container', fail => 2) },
           1 => sub { pause(6.3) },
           2 => sub { pause(3.2) },
           3 => sub {
               my @k = keys_since();
               Test::More::is($k[0], $k[1], 'TEST 4: the held credentials '
                              . 'signed while the refresh failed');
               Test::More::isnt($k[1], $k[2],
                                'TEST 4: new credentials once it recovered');
               Test::More::ok(!grep({ defined } auths()),
                              'TEST 4: no Authorization without a token');
               AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from container \(nginx.conf:\d+\) failed: HTTP 500, InternalError; those held expire at \S+Z, next try in 1s$/,
                                  'TEST 4: the failure logged with the '
                                  . 'agent\'s code');
               clean(4);
           } },
    5 => { 0 => sub {
               ready();
               AwsCreds::control('container', token => 'mintAUTH-another');
           },
           1 => sub { pause(3.5) },
           2 => sub {
               AwsCreds::log_like(qr/\[error\] .*replay: no AWS credentials to sign with: those from container \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 403, AccessDenied, client: /,
                                  'TEST 5: the 503 is logged, with why');
               clean(5);
           } },
);

AwsCreds::before(\%before);
AwsCreds::steps(\%steps);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE from the environment
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="container"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
mintAUTH
[error]



=== TEST 2: the token file changes: the next refresh sends the new one
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container
                               endpoint=$TEST_NGINX_CONTAINER_URL/v1/credentials
                               token_file=../html/pod-token;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
[error]



=== TEST 3: a token of the environment's own (AWS_CONTAINER_AUTHORIZATION_TOKEN)
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container;
        replay_s3_key          games/2/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/2\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
mintAUTH
[error]



=== TEST 4: ECS (no token): a refresh that fails is logged and retried; the credentials held sign meanwhile; it recovers
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container
                               endpoint=$TEST_NGINX_CONTAINER_URL/v2/credentials/task;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200, 200]
--- no_error_log
mintSECRET



=== TEST 5: the agent refuses the token: no refresh possible, the credentials expire, 503 and a log line
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container
                               endpoint=$TEST_NGINX_CONTAINER_URL/v1/credentials
                               token_file=../html/pod-token;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 503]
--- response_headers eval
["", "", "Retry-After: 1"]
--- no_error_log
mintSECRET



=== TEST 6: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is on ECS's endpoint, 169.254.170.2 (the configuration fails after, so that nothing is fetched from it)
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container;
        replay_s3_key          games/1/replay.bin;
        replay_s3_addressing   none;
    }
--- must_die
--- error_log
replay_s3_credentials container: http://169.254.170.2, from AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
invalid value "none"



=== TEST 7: plain http only to this host or the ECS / EKS endpoints, as the AWS SDKs
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container endpoint=http://10.1.2.3/creds;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log
replay_s3_credentials container: "10.1.2.3" is plain http to a host that is neither a loopback address nor the ECS or EKS endpoint; use https



=== TEST 8: no endpoint: neither variable is set
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  container;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log
replay_s3_credentials container: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set in nginx's environment, and no endpoint= is given
