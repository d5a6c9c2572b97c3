# replay_s3_credentials imds: an instance profile's credentials from the
# EC2 instance metadata service (the suite's, t/services/aws/imds.js, whose
# key pairs the S3 server mints and then accepts, each until it expires).
# %before sets the service up before a block's nginx starts; %steps act
# between its requests (wait for the first credentials, wait for a time
# after they were got, make the service fail) and check the logs at the
# end; the S3 request log says which key signed what.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('imds');

# the blocks' location (AwsCreds.pm), with their "--- creds"
AwsCreds::location();

sub imds { AwsCreds::control('imds', reset => 1, @_) }

my $t0;     # when the block's first credentials were got

my %before = (
    1 => sub { imds(ttl => 3600) },
    2 => sub { imds(role => 'given-role') },
    3 => sub { imds(ttl => 6) },
    4 => sub { imds(ttl => 10) },
    5 => sub { imds(ttl => 5) },
    6 => sub { imds(hang => 1) },
    7 => sub { imds(v2 => 0, v1 => 1) },
    8 => sub { imds(v2 => 0, v1 => 1) },
);

my %steps = (
    1 => { 0 => \&AwsCreds::ready,
           3 => sub {
               AwsCreds::log_like(qr/\[info\] .*replay: AWS credentials from imds \(nginx.conf:\d+\) refreshed, they expire at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, next refresh in 28\d\ds$/,
                                  'TEST 1: the refresh is logged, and when the next one is');
               AwsCreds::no_secrets_in_logs('TEST 1');
           } },
    2 => { 0 => \&AwsCreds::ready,
           1 => sub {
               my @r = AwsCreds::requests('imds');
               Test::More::is(CORE::join(' ', map { $_->{url} } @r),
                              '/latest/api/token '
                              . '/latest/meta-data/iam/security-credentials/given-role',
                              'TEST 2: the token, then the given role\'s credentials');
               Test::More::is($r[1]{token}, 'valid', 'TEST 2: with the token');
               AwsCreds::no_secrets_in_logs('TEST 2');
           } },
    # 6 s credentials: refreshed 3 s after they were got
    3 => { 0 => sub { AwsCreds::ready(); $t0 = AwsCreds::got() },
           1 => sub { AwsCreds::pause_until($t0 + 4.5) },
           2 => sub {
               my @k = AwsCreds::keys_since();
               Test::More::is(scalar @k, 2, 'TEST 3: two S3 requests');
               Test::More::like($k[0] // '', qr/^ASIA/, 'TEST 3: a minted key');
               Test::More::isnt($k[0], $k[1],
                                'TEST 3: the second signed with new credentials');
               my @c = grep { $_->{step} eq 'credentials' }
                       AwsCreds::requests('imds');
               Test::More::is(scalar @c, 2,
                              'TEST 3: the credentials were fetched twice');
               Test::More::is(AwsCreds::log_count(qr/refreshed, they expire at \S+, next refresh in 3s$/),
                              2, 'TEST 3: each time 3 s (half of 6 s) ahead');
               AwsCreds::no_secrets_in_logs('TEST 3');
           } },
    4 => AwsCreds::refresh_fails_steps('imds', 4, qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in 1s$/, 4, sub {
             AwsCreds::log_like(qr/failed: the role's credentials: HTTP 500; those held expire at \S+Z, next try in [12]s$/,
                                'TEST 4: the second, retried in 2 s (1 s when slow: half of what is left)');
             AwsCreds::no_secrets_in_logs('TEST 4');
         }),
    5 => AwsCreds::expiry_steps('imds', 5, { fail_all => 1 }, qr/\[error\] .*replay: no AWS credentials to sign with: those from imds \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: the role's credentials: HTTP 500, client: /, 3, sub {
             AwsCreds::no_secrets_in_logs('TEST 5');
         }),
    6 => { 0 => sub { AwsCreds::ready() },
           1 => sub {
               AwsCreds::log_like(qr/\[error\] .*replay: no AWS credentials to sign with yet from imds \(nginx.conf:\d+\), client: /,
                                  'TEST 6: the 503 is logged');
               AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the role's credentials: 127\.0\.0\.1:\d+ timed out \(110: Connection timed out\); there are none yet, next try in 1s$/,
                                  'TEST 6: the timeout is logged');
               AwsCreds::no_secrets_in_logs('TEST 6');
           } },
    7 => { 0 => sub {
               AwsCreds::pause(1);
               AwsCreds::log_like(qr/replay: refreshing AWS credentials from imds \(nginx.conf:\d+\) failed: the session token \(PUT \/latest\/api\/token\): HTTP 404; there are none yet/,
                                  'TEST 7: no session token is an error');
           } },
    8 => { 0 => \&AwsCreds::ready,
           1 => sub {
               AwsCreds::log_like(qr/\[info\] .*replay: no IMDSv2 session token \(HTTP 404\), trying IMDSv1 \(imds_v1=on\)$/,
                                  'TEST 8: the fallback is logged');
               my @r = AwsCreds::requests('imds');
               Test::More::is(CORE::join(' ', map { $_->{token} // '-' } @r),
                              '- none none', 'TEST 8: IMDSv1: no token');
               AwsCreds::no_secrets_in_logs('TEST 8');
           } },
);

AwsCreds::before(\%before);
AwsCreds::steps(\%steps);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: IMDSv2: a session token (with its TTL), the role, its credentials; S3 accepts them; no secret in the log or replay_status
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /status?format=json"]
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



=== TEST 2: a role given is not asked for; the token is sent with each request
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL role=given-role
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid/, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]



=== TEST 3: refreshed before they expire (6 s credentials: after 3 s), new ones sign the next request
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
[error]



=== TEST 4: a refresh that fails is logged, counted and retried; the credentials held sign meanwhile; it recovers
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /s3", "GET /status?format=json"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr//, qr/^bucket=replays/, qr/^bucket=replays/, qr/^bucket=replays/,
 qr/"valid":true,.*"refreshes":2,"failures":2,"consecutive_failures":0,"refused":0,"last_error":"the role's credentials: HTTP 500"/]
--- no_error_log
mintSECRET



=== TEST 5: credentials that expire with no refresh possible: 503 with Retry-After, and a log line saying why
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /status"]
--- error_code eval
[200, 200, 503, 200]
--- response_headers_like eval
["", "", "Retry-After: [1-9][0-9]*", ""]
--- response_body_like eval
[qr//, qr/^bucket=replays/, qr/503 Service/,
 qr/replay_credentials_valid\{[^}]+\} 0\n.*replay_credentials_refused_requests_total\{[^}]+\} 1\n/s]
--- no_error_log
mintSECRET



=== TEST 6: a request before the first credentials: 503 with Retry-After; they come after the service's timeout
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL timeout=3s
--- request eval
["GET /s3", "GET /s3"]
--- error_code eval
[503, 200]
--- response_headers_like eval
["Retry-After: [1-9][0-9]*", ""]
--- no_error_log
mintSECRET



=== TEST 7: IMDSv1 is not used by default: an IMDS without the token API is an error
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL
--- request
GET /s3
--- error_code: 503
--- no_error_log
trying IMDSv1



=== TEST 8: imds_v1=on: without a session token, IMDSv1
--- creds: imds endpoint=$TEST_NGINX_IMDS_URL imds_v1=on
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]
