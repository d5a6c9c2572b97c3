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

my $TOKEN1 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl';
my $TOKEN2 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-two.c2lnbmF0dXJl';
my $TOKEN5 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl';

my $s3_from;

sub ready {
    Test::More::ok(AwsCreds::wait_valid('/status'),
                   'the first credentials came');
    $s3_from = AwsCreds::s3_log_size();
}

sub keys_since { return AwsCreds::s3_keys($s3_from) }

sub pause { select undef, undef, undef, $_[0] }

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
    1 => { 0 => \&ready,
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
    2 => { 0 => sub {
               ready();
               AwsCreds::write_file(token_file(), "$TOKEN2\n");
               AwsCreds::control('sts', token => $TOKEN2);
           },
           1 => sub { pause(4.2) },
           2 => sub {
               my @t = map { $_->{WebIdentityToken} } forms();
               Test::More::is("@t", "$TOKEN1 $TOKEN2",
                              'TEST 2: the token file read again at the refresh');
               my @k = keys_since();
               Test::More::isnt($k[0], $k[1],
                                'TEST 2: new credentials from the new token');
               clean(2);
           } },
    3 => { 0 => sub { ready(); AwsCreds::control('sts', fail => 2) },
           1 => sub { pause(6.3) },
           2 => sub { pause(3.2) },
           3 => sub {
               my @k = keys_since();
               Test::More::is($k[0], $k[1], 'TEST 3: the held credentials '
                              . 'signed while the refresh failed');
               Test::More::isnt($k[1], $k[2],
                                'TEST 3: new credentials once it recovered');
               AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: HTTP 500, InternalFailure; those held expire at \S+Z, next try in 1s$/,
                                  'TEST 3: the failure logged with STS\'s code');
               clean(3);
           } },
    4 => { 0 => sub {
               ready();
               AwsCreds::control('sts', expired_token => $TOKEN1);
           },
           1 => sub { pause(3.5) },
           2 => sub {
               AwsCreds::log_like(qr/\[error\] .*replay: no AWS credentials to sign with: those from web_identity \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 400, ExpiredTokenException, client: /,
                                  'TEST 4: the 503 is logged, with why');
               clean(4);
           } },
    5 => { 0 => sub {
               pause(0.5);
               AwsCreds::log_like(qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\); there are none yet/,
                                  'TEST 5: a certificate of another CA is refused');
               Test::More::ok(!grep({ $_->{WebIdentityToken} eq $TOKEN5 }
                                    forms()),
                              'TEST 5: the token was not sent to it');
           } },
    6 => { 0 => sub {
               pause(0.5);
               AwsCreds::log_like(qr/failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\)/,
                                  'TEST 6: the system\'s CAs do not know the suite\'s');
           } },
    7 => { 0 => \&ready,
           1 => sub { clean(7) } },
    8 => { 0 => sub {
               pause(0.5);
               AwsCreds::log_like(qr/failed: the certificate of sts.wrong.test:\d+ is not for "sts.wrong.test"; there are none yet/,
                                  'TEST 8: a certificate for another name is refused');
           } },
    11 => { 0 => sub {
               pause(0.5);
               AwsCreds::log_like(qr/failed: could not connect to sts.zz-test-9.amazonaws.com; there are none yet/,
                                  'TEST 11: the regional endpoint, resolved');
               AwsCreds::log_like(qr/connect\(\) to 127\.0\.0\.1:443 failed .* while fetching AWS credentials \(web_identity\) from https:\/\/sts.zz-test-9.amazonaws.com/,
                                  'TEST 11: on port 443, nginx says what for');
           } },
    12 => { 0 => \&ready,
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
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               session_name=replay-test
                               sts_endpoint=$TEST_NGINX_STS_URL
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
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
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=$TEST_NGINX_STS_URL
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
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



=== TEST 3: a refresh that fails (STS's InternalFailure) is logged and retried; the credentials held sign meanwhile; it recovers
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=$TEST_NGINX_STS_URL
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
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



=== TEST 4: STS calls the token expired: no refresh possible, the credentials expire, 503 and a log line
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=$TEST_NGINX_STS_URL
                               ca=$TEST_NGINX_TLS_DIR/ca.crt;
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



=== TEST 5: STS's certificate is verified: trusting another CA, nothing is sent
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=$TEST_NGINX_STS_URL
                               ca=$TEST_NGINX_TLS_DIR/other-ca.crt;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT



=== TEST 6: without ca=, the system's CA bundle: the suite's CA is not in it
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=../html/web-token
                               sts_endpoint=$TEST_NGINX_STS_URL;
        replay_s3_key          games/1/replay.bin;
    }
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
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=/nonexistent/token
                               sts_endpoint=https://sts.s3.replay-test.amazonaws.com:$TEST_NGINX_STS_PORT;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*host not found in "https:\/\/sts\.s3\.replay-test\.amazonaws\.com:\d+"/



=== TEST 10: the token goes to STS over TLS only
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity
                               role_arn=arn:aws:iam::123456789012:role/replay
                               token_file=/nonexistent/token
                               sts_endpoint=http://127.0.0.1:1;
        replay_s3_key          games/1/replay.bin;
    }
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
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity;
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



=== TEST 13: no role given, none in the environment
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  web_identity token_file=/x;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log
replay_s3_credentials web_identity: no role_arn= and no AWS_ROLE_ARN in nginx's environment
