# replay_s3_credentials web_identity: AssumeRoleWithWebIdentity against
# the suite's STS (t/services/aws/sts.js) over TLS, with the suite's CA
# (t/services/up), the web identity token read from its file at each
# refresh.  %before sets the services up before a block's nginx starts;
# %steps act between its requests and check the logs at the end.  The
# tokens hold "mintJWT" so that every log can be searched for them.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('sts');
AwsCreds::start_dns('sts.s3.replay-test.amazonaws.com' => '127.0.0.1',
                    'sts.wrong.test' => '127.0.0.1',
                    'sts.zz-test-9.amazonaws.com' => '127.0.0.1');

# the blocks' location (AwsCreds.pm), with their "--- creds"
AwsCreds::location();

my $TOKEN1 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl';
my $TOKEN2 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-two.c2lnbmF0dXJl';
my $TOKEN5 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl';

sub sts { AwsCreds::control('sts', reset => 1, @_) }

sub token_file { "$Test::Nginx::Util::ServRoot/html/web-token" }

sub forms { return map { $_->{form} } AwsCreds::requests('sts') }

sub clean {
    my ($n) = @_;
    AwsCreds::no_secrets_in_logs("TEST $n", 'mintJWT');
}

my %before = (
    1 => sub { sts(token => $TOKEN1) },
    2 => sub { sts(token => $TOKEN1, ttl => 6) },
    3 => sub { sts(ttl => 10) },
    4 => sub { sts(ttl => 5) },
    5 => sub { sts() },
    6 => sub { sts() },
    7 => sub { sts() },
    8 => sub { sts() },
    11 => sub { sts() },
    12 => sub {
        sts();
        $ENV{AWS_ROLE_ARN} = 'arn:aws:iam::123456789012:role/from-env';
        $ENV{AWS_WEB_IDENTITY_TOKEN_FILE} = token_file();
        $ENV{AWS_ROLE_SESSION_NAME} = 'env-session';
        $ENV{AWS_ENDPOINT_URL_STS} = $ENV{TEST_NGINX_STS_URL};
        $ENV{AWS_CA_BUNDLE} = "$ENV{TEST_NGINX_TLS_DIR}/ca.crt";
    },
    13 => sub {
        delete @ENV{qw(AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE
                       AWS_ROLE_SESSION_NAME AWS_ENDPOINT_URL_STS
                       AWS_CA_BUNDLE)};
    },
);

my %steps = (
    1 => { 0 => \&AwsCreds::ready,
           1 => sub {
               my @f = forms();
               Test::More::is(scalar @f, 1, 'TEST 1: one call to STS');
               Test::More::is_deeply($f[0], {
                   Action => 'AssumeRoleWithWebIdentity',
                   Version => '2011-06-15',
                   RoleArn => 'arn:aws:iam::123456789012:role/replay',
                   RoleSessionName => 'replay-test',
                   WebIdentityToken => $TOKEN1,
               }, 'TEST 1: the documented form, the file\'s token');
               my ($r) = AwsCreds::requests('sts');
               Test::More::is($r->{method} . ' ' . $r->{url}
                              . ' ' . $r->{headers}{'content-type'},
                              'POST / application/x-www-form-urlencoded; '
                              . 'charset=utf-8', 'TEST 1: a form POST');
               clean(1);
           } },
    2 => AwsCreds::token_rotation_steps('sts', 2, token_file(),
                                        [$TOKEN1, $TOKEN2],
                                        sub { map { $_->{WebIdentityToken} }
                                              forms() },
                                        sub { clean(2) }),
    3 => AwsCreds::refresh_fails_steps('sts', 3, qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: HTTP 500, InternalFailure; those held expire at \S+Z, next try in 1s$/, 3, sub { clean(3) }),
    4 => AwsCreds::expiry_steps('sts', 4, { expired_token => $TOKEN1 }, qr/\[error\] .*replay: no AWS credentials to sign with: those from web_identity \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 400, ExpiredTokenException, client: /, 2, sub { clean(4) }),
    5 => { 0 => sub {
               AwsCreds::pause(1);
               AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\); there are none yet/,
                                  'TEST 5: a certificate of another CA is refused');
               Test::More::ok(!grep({ $_->{WebIdentityToken} eq $TOKEN5 }
                                    forms()),
                              'TEST 5: the token was not sent to it');
           } },
    6 => { 0 => sub {
               AwsCreds::pause(1);
               AwsCreds::log_like(qr/failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\)/,
                                  'TEST 6: the system\'s CAs do not know the suite\'s');
           } },
    7 => { 0 => \&AwsCreds::ready,
           1 => sub { clean(7) } },
    8 => { 0 => sub {
               AwsCreds::pause(1);
               AwsCreds::log_like(qr/failed: the certificate of sts.wrong.test:\d+ is not for "sts.wrong.test"; there are none yet/,
                                  'TEST 8: a certificate for another name is refused');
           } },
    11 => { 0 => sub {
               AwsCreds::pause(1);
               AwsCreds::log_like(qr/failed: could not connect to sts.zz-test-9.amazonaws.com; there are none yet/,
                                  'TEST 11: the regional endpoint, resolved');
               AwsCreds::log_like(qr/connect\(\) to 127\.0\.0\.1:443 failed .* while fetching AWS credentials \(web_identity\) from https:\/\/sts.zz-test-9.amazonaws.com/,
                                  'TEST 11: on port 443, nginx says what for');
           } },
    12 => { 0 => \&AwsCreds::ready,
            1 => sub {
                my ($f) = forms();
                Test::More::is(CORE::join(' ', @$f{qw(RoleArn RoleSessionName
                                                      WebIdentityToken)}),
                               "arn:aws:iam::123456789012:role/from-env "
                               . "env-session $TOKEN1",
                               'TEST 12: all from the AWS_* variables');
                clean(12);
            } },
);

AwsCreds::before(\%before);
AwsCreds::steps(\%steps);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: AssumeRoleWithWebIdentity over TLS: the documented form, the token file's content; S3 accepts what STS gave
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token session_name=replay-test sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/ca.crt
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr/replay_credentials_valid\{source="web_identity"/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
mintJWT
[error]



=== TEST 2: the token file changes (it is rotated): the next refresh sends the new token
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/ca.crt
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
[error]



=== TEST 3: a refresh that fails (STS's InternalFailure) is logged and retried; the credentials held sign meanwhile; it recovers
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/ca.crt
--- request eval
["GET /status", "GET /s3", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200, 200]
--- no_error_log
mintSECRET



=== TEST 4: STS calls the token expired: no refresh possible, the credentials expire, 503 and a log line
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/ca.crt
--- request eval
["GET /status", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 503]
--- response_headers_like eval
["", "", "Retry-After: [1-9][0-9]*"]
--- no_error_log
mintSECRET



=== TEST 5: STS's certificate is verified: trusting another CA, nothing is sent
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/other-ca.crt
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT



=== TEST 6: without ca=, the system's CA bundle: the suite's CA is not in it
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT



=== TEST 7: with a resolver, STS's name is resolved by it at each refresh (the master could not)
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        resolver               127.0.0.1:$TEST_NGINX_DNS_PORT;
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=https://sts.s3.replay-test.amazonaws.com:$TEST_NGINX_STS_PORT
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]



=== TEST 8: a certificate that is not for STS's name is refused
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        resolver               127.0.0.1:$TEST_NGINX_DNS_PORT;
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=https://sts.wrong.test:$TEST_NGINX_STS_PORT
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT



=== TEST 9: without a resolver, the master resolves STS's name while it loads, as proxy_pass does
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=/nonexistent/token sts_endpoint=https://sts.s3.replay-test.amazonaws.com:$TEST_NGINX_STS_PORT
--- must_die
--- error_log eval
qr/\[emerg\] .*host not found in "https:\/\/sts\.s3\.replay-test\.amazonaws\.com:\d+"/



=== TEST 10: the token goes to STS over TLS only
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=/nonexistent/token sts_endpoint=http://127.0.0.1:1
--- must_die
--- error_log
the STS endpoint "http://127.0.0.1:1" must be https: the token is sent to it



=== TEST 11: no endpoint given: the regional one, sts.REGION.amazonaws.com, on 443
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        resolver               127.0.0.1:$TEST_NGINX_DNS_PORT;
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_region=zz-test-9;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 503



=== TEST 12: everything from the AWS_* environment (as EKS sets it for IRSA), no "env" directive
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity
--- request eval
["GET /status", "GET /s3"]
--- response_body_like eval
[qr//, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- no_error_log
mintSECRET
[error]



=== TEST 13: no role given, none in the environment
--- creds: web_identity token_file=/x
--- must_die
--- error_log
replay_s3_credentials web_identity: no role_arn= and no AWS_ROLE_ARN in nginx's environment
