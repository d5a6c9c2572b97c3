# replay_s3_credentials imds: an instance profile's credentials from the
# EC2 instance metadata service (the suite's, t/services/aws/imds.js, whose
# key pairs the S3 server mints and then accepts, each until it expires).
# "--- before" sets the service up before a block's nginx starts;
# "--- after_request" acts between its requests (wait for the first
# credentials, wait for a time after they were minted, make the service
# fail) and checks the logs at the end; the S3 request log says which key
# signed what.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('imds');
AwsCreds::init();

sub imds { my @a = @_; return sub { AwsCreds::control('imds', reset => 1, @a) } }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: IMDSv2: a session token (with its TTL), the role, its credentials; S3 accepts them; no secret in the log or replay_status
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- before eval: main::imds(ttl => 3600)
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /status?format=json"]
--- after_request eval
[\&AwsCreds::ready, undef, undef, sub {
    AwsCreds::log_like(qr/\[info\] .*replay: AWS credentials from imds \(nginx.conf:\d+\) refreshed, they expire at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, next refresh in 28\d\ds$/,
                       'TEST 1: the refresh is logged, and when the next one is');
    AwsCreds::no_secrets_in_logs('TEST 1');
}]
--- response_body_like eval
[
    qr/replay_credentials_valid\{source="imds",config="nginx.conf:\d+"\} [01]\n/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\A(?!.*mint(SECRET|TOKEN)).*"replay_credentials":\[\{"source":"imds","config":"nginx.conf:\d+","valid":true,"expires":\d{10},"last_refresh":\d{10},"next_refresh":\d{10},"refreshes":1,"failures":0,"consecutive_failures":0,"refused":0,"last_error":""\}\]\}\n\z/s,
]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('imds', 0, 0)




=== TEST 2: a role given is not asked for; the token is sent with each request
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL role=given-role
--- before eval: main::imds(role => 'given-role')
--- request eval
["GET /status", "GET /s3"]
--- after_request eval
[\&AwsCreds::ready, sub {
    my @r = AwsCreds::requests('imds');
    Test::More::is(CORE::join(' ', map { $_->{url} } @r),
                   '/latest/api/token '
                   . '/latest/meta-data/iam/security-credentials/given-role',
                   'TEST 2: the token, then the given role\'s credentials');
    Test::More::is($r[1]{token}, 'valid', 'TEST 2: with the token');
    AwsCreds::no_secrets_in_logs('TEST 2');
}]
--- response_body_like eval
[qr/replay_credentials_valid/, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('imds', 0)




=== TEST 3: refreshed before they expire (after half their life: 3 s of 6), new ones sign the next request
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- before eval: main::imds(ttl => AwsCreds::ttl_rotation())
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- after_request eval
AwsCreds::refreshed('imds', 3, undef, undef, undef, sub {
    my @c = grep { $_->{step} eq 'credentials' } AwsCreds::requests('imds');
    Test::More::is(scalar @c, 2, 'TEST 3: the credentials were fetched twice');
    my $half = AwsCreds::ttl_rotation() / 2;
    Test::More::is(AwsCreds::log_count(qr/refreshed, they expire at \S+, next refresh in ${half}s$/),
                   2, 'TEST 3: each time half their life ahead');
    AwsCreds::no_secrets_in_logs('TEST 3');
})
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('imds', 0, 1)




=== TEST 4: a refresh that fails is logged, counted and retried with backoff; the credentials held sign meanwhile; it recovers
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- before eval: main::imds(ttl => AwsCreds::ttl_fails())
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /s3", "GET /status?format=json"]
--- after_request eval
AwsCreds::refresh_fails('imds', 4, qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in 1s$/, 3, sub {
    AwsCreds::log_like(qr/failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in 2s$/,
                       'TEST 4: the second, retried in 2 s');
    AwsCreds::no_secrets_in_logs('TEST 4');
})
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr//, qr/^bucket=replays/, qr/^bucket=replays/, qr/^bucket=replays/,
 qr/"valid":true,.*"refreshes":2,"failures":3,"consecutive_failures":0,"refused":0,"last_error":"the role's credentials: HTTP 500"/]
--- no_error_log
mintSECRET
--- s3_requests eval
AwsCreds::s3_gets('imds', 0, 0, 1)
--- error_log_at_end eval
qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in 1s$/




=== TEST 5: credentials that expire with no refresh possible: 503 with Retry-After, and a log line saying why
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- before eval: main::imds(ttl => AwsCreds::ttl_expiry())
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /status"]
--- after_request eval
AwsCreds::expiry('imds', 5, { fail_all => 1 }, qr/\[error\] .*replay: no AWS credentials to sign with: those from imds \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: the role's credentials: HTTP 500, client: /, 3, sub {
    AwsCreds::no_secrets_in_logs('TEST 5');
})
--- error_code eval
[200, 200, 503, 200]
--- response_headers_like eval
["", "", "Retry-After: [1-9][0-9]*", ""]
--- response_body_like eval
[qr//, qr/^bucket=replays/, qr/503 Service/,
 qr/replay_credentials_valid\{[^}]+\} 0\n.*replay_credentials_refused_requests_total\{[^}]+\} 1\n/s]
--- no_error_log
mintSECRET
--- s3_requests eval
AwsCreds::s3_gets('imds', 0)
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with: those from imds \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: the role's credentials: HTTP 500, client: /]




=== TEST 6: a request before the first credentials: 503 with Retry-After; they come after the service's timeout
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL timeout=3s
--- before eval: main::imds(hang => 1)
--- request eval
["GET /s3", "GET /s3"]
--- after_request eval
[\&AwsCreds::ready, sub {
    AwsCreds::log_like(qr/\[error\] .*replay: no AWS credentials to sign with yet from imds \(nginx.conf:\d+\), client: /,
                       'TEST 6: the 503 is logged');
    AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: 127\.0\.0\.1:\d+ timed out \(110: Connection timed out\); there are none yet, next try in 1s$/,
                       'TEST 6: the timeout is logged');
    AwsCreds::no_secrets_in_logs('TEST 6');
}]
--- error_code eval
[503, 200]
--- response_headers_like eval
["Retry-After: [1-9][0-9]*", ""]
--- no_error_log
mintSECRET
--- s3_requests eval
AwsCreds::s3_gets('imds', 0)
--- error_log_at_end eval
[qr/\[error\] .*replay: no AWS credentials to sign with yet from imds \(nginx.conf:\d+\), client: /,
 qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: 127\.0\.0\.1:\d+ timed out \(110: Connection timed out\); there are none yet, next try in 1s$/]




=== TEST 7: IMDSv1 is not used by default: an IMDS without the token API is an error
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- before eval: main::imds(v2 => 0, v1 => 1)
--- request
GET /s3
--- after_request eval
[sub {
    AwsCreds::pause($AwsCreds::SLOW);
    AwsCreds::log_like(qr/replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the session token \(PUT \/latest\/api\/token\): HTTP 404; there are none yet/,
                       'TEST 7: no session token is an error');
}]
--- error_code: 503
--- no_error_log
trying IMDSv1
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the session token \(PUT \/latest\/api\/token\): HTTP 404; there are none yet, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with yet from imds \(nginx.conf:\d+\)(, the last try failed: the session token \(PUT \/latest\/api\/token\): HTTP 404)?, client: /]




=== TEST 8: imds_v1=on: without a session token, IMDSv1
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL imds_v1=on
--- before eval: main::imds(v2 => 0, v1 => 1)
--- request eval
["GET /status", "GET /s3"]
--- after_request eval
[\&AwsCreds::ready, sub {
    AwsCreds::log_like(qr/\[info\] .*replay: no IMDSv2 session token \(HTTP 404\), trying IMDSv1 \(imds_v1=on\)$/,
                       'TEST 8: the fallback is logged');
    my @r = AwsCreds::requests('imds');
    Test::More::is(CORE::join(' ', map { $_->{token} // '-' } @r),
                   '- none none', 'TEST 8: IMDSv1: no token');
    AwsCreds::no_secrets_in_logs('TEST 8');
}]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
AwsCreds::s3_gets('imds', 0)

