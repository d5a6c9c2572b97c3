# replay_s3_credentials container: the ECS task role and EKS Pod
# Identity endpoint (the suite's, t/services/aws/container.js), given by
# AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI (or endpoint=), with
# the authorization token of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read
# again at each refresh) or AWS_CONTAINER_AUTHORIZATION_TOKEN.  "--- before"
# sets the service and the environment up before a block's nginx starts;
# "--- after_request" acts between its requests and checks the logs.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('container');
AwsCreds::init();

our $TOKEN1 = 'mintAUTH-pod-identity-one';
our $TOKEN2 = 'mintAUTH-pod-identity-two';

sub token_file { "$Test::Nginx::Util::ServRoot/html/pod-token" }

sub auths { return map { $_->{authorization} } AwsCreds::requests('container') }

sub clean {
    my ($n) = @_;
    AwsCreds::no_secrets_in_logs("TEST $n", 'mintAUTH');
}

# the agent's state, and the environment of the block's nginx: the
# AWS_CONTAINER_* variables given, no other
sub agent {
    my ($state, %env) = @_;

    return sub {
        AwsCreds::control('container', reset => 1, %$state);
        delete @ENV{qw(AWS_CONTAINER_CREDENTIALS_FULL_URI
                       AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
                       AWS_CONTAINER_AUTHORIZATION_TOKEN
                       AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)};
        @ENV{keys %env} = values %env;
    };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE from the environment
--- before eval
main::agent({ flavor => 'eks', path => '/v1/credentials', token => $main::TOKEN1 },
            AWS_CONTAINER_CREDENTIALS_FULL_URI => "$ENV{TEST_NGINX_CONTAINER_URL}/v1/credentials",
            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => main::token_file())
--- after_request eval
[\&AwsCreds::ready, sub {
    Test::More::is(CORE::join(' ', main::auths()), $main::TOKEN1,
                   'TEST 1: the token file\'s token, as Authorization');
    main::clean(1);
}]
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- creds: container
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="container"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
mintAUTH
[error]
--- s3_requests eval
AwsCreds::s3_gets('container', 0)




=== TEST 2: the token file changes: the next refresh sends the new one
--- before eval
main::agent({ flavor => 'eks', path => '/v1/credentials', token => $main::TOKEN1,
              ttl => AwsCreds::ttl_rotation() })
--- after_request eval
AwsCreds::refreshed('container', 2, main::token_file(),
                    [$main::TOKEN1, $main::TOKEN2], \&main::auths,
                    sub { main::clean(2) })
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- creds: container endpoint=$TEST_NGINX_CONTAINER_URL/v1/credentials token_file=../html/pod-token
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('container', 0, 1)




=== TEST 3: a token of the environment's own (AWS_CONTAINER_AUTHORIZATION_TOKEN)
--- before eval
main::agent({ path => '/v2/credentials/task', token => 'mintAUTH-static' },
            AWS_CONTAINER_CREDENTIALS_FULL_URI => "$ENV{TEST_NGINX_CONTAINER_URL}/v2/credentials/task",
            AWS_CONTAINER_AUTHORIZATION_TOKEN => 'mintAUTH-static')
--- after_request eval
[\&AwsCreds::ready, sub {
    Test::More::is(CORE::join(' ', main::auths()), 'mintAUTH-static',
                   'TEST 3: AWS_CONTAINER_AUTHORIZATION_TOKEN');
    main::clean(3);
}]
--- creds: container
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
mintAUTH
[error]
--- s3_requests eval
AwsCreds::s3_gets('container', 0)




=== TEST 4: ECS (no token): a refresh that fails is logged and retried; the credentials held sign meanwhile; it recovers
--- before eval
main::agent({ path => '/v2/credentials/task', ttl => AwsCreds::ttl_fails() })
--- after_request eval
AwsCreds::refresh_fails('container', 4, qr/\[error\] .*replay: refreshing AWS credentials from container \(nginx.conf:\d+\) failed: HTTP 500, InternalError; those held expire at \S+Z, next try in 1s$/, 3, sub {
    Test::More::ok(!grep({ defined } main::auths()),
                   'TEST 4: no Authorization without a token');
    main::clean(4);
})
--- creds: container endpoint=$TEST_NGINX_CONTAINER_URL/v2/credentials/task
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200, 200]
--- no_error_log
mintSECRET
--- s3_requests eval
AwsCreds::s3_gets('container', 0, 0, 1)
--- error_log_at_end eval
qr/\[error\] .*replay: refreshing AWS credentials from container \(nginx.conf:\d+\) failed: HTTP 500, InternalError; those held expire at \S+Z, next try in 1s$/




=== TEST 5: the agent refuses the token: no refresh possible, the credentials expire, 503 and a log line
--- before eval
main::agent({ flavor => 'eks', path => '/v1/credentials', token => $main::TOKEN1,
              ttl => AwsCreds::ttl_expiry() })
--- after_request eval
AwsCreds::expiry('container', 5, { token => 'mintAUTH-another' }, qr/\[error\] .*replay: no AWS credentials to sign with: those from container \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 403, AccessDenied, client: /, 2, sub { main::clean(5) })
--- user_files
>>> pod-token
mintAUTH-pod-identity-one
--- creds: container endpoint=$TEST_NGINX_CONTAINER_URL/v1/credentials token_file=../html/pod-token
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 503]
--- response_headers_like eval
["", "", "Retry-After: [1-9][0-9]*"]
--- no_error_log
mintSECRET
--- s3_requests eval
AwsCreds::s3_gets('container', 0)
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from container \(nginx.conf:\d+\) failed: HTTP 403, AccessDenied; those held expire at \S+Z, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with: those from container \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 403, AccessDenied, client: /]




=== TEST 6: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is on ECS's endpoint, 169.254.170.2 (the configuration fails after, so that nothing is fetched from it)
--- before eval
main::agent({}, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI => '/v2/credentials/x')
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
--- before eval
main::agent({})
--- creds: container endpoint=http://10.1.2.3/creds
--- must_die
--- error_log
replay_s3_credentials container: "10.1.2.3" is plain http to a host that is neither a loopback address nor the ECS or EKS endpoint; use https



=== TEST 8: no endpoint: neither variable is set
--- before eval
main::agent({})
--- creds: container
--- must_die
--- error_log
replay_s3_credentials container: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set in nginx's environment, and no endpoint= is given
