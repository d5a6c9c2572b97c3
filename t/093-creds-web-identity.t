# replay_s3_credentials web_identity: AssumeRoleWithWebIdentity against
# the suite's STS (t/services/aws/sts.js) over TLS, with the suite's CA
# (t/services/up), the web identity token read from its file at each
# refresh.  "--- before" sets the service (and the environment) up before
# a block's nginx starts; "--- after_request" acts between its requests and
# checks the logs.  The tokens hold "mintJWT" so that every log can be
# searched for them.  A TLS handshake takes seconds under valgrind: the
# blocks that do one wait 10 s for an answer.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;

AwsCreds::start('sts');
AwsCreds::start_dns('sts.s3.replay-test.amazonaws.com' => '127.0.0.1',
                    'sts.wrong.test' => '127.0.0.1',
                    'sts.zz-test-9.amazonaws.com' => '127.0.0.1');
AwsCreds::init();

our $TOKEN1 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl';
our $TOKEN2 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-two.c2lnbmF0dXJl';
our $TOKEN5 = 'eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl';

my @ENV_VARS = qw(AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE
                  AWS_ROLE_SESSION_NAME AWS_ENDPOINT_URL_STS AWS_CA_BUNDLE);

# STS's state, and the environment of the block's nginx: these of the
# variables above, no other
sub sts {
    my ($state, %env) = @_;

    return sub {
        AwsCreds::control('sts', reset => 1, %{ $state || {} });
        delete @ENV{@ENV_VARS};
        @ENV{keys %env} = values %env;
    };
}

sub token_file { "$Test::Nginx::Util::ServRoot/html/web-token" }

sub forms { return map { $_->{form} } AwsCreds::requests('sts') }

sub clean {
    my ($n) = @_;
    AwsCreds::no_secrets_in_logs("TEST $n", 'mintJWT');
}

# after a moment, the log has a line like $re
sub logged {
    my ($re, $name) = @_;

    return sub {
        AwsCreds::pause($AwsCreds::SLOW);
        AwsCreds::log_like($re, $name);
    };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: AssumeRoleWithWebIdentity over TLS: the documented form, the token file's content; S3 accepts what STS gave
--- before eval
main::sts({ token => $main::TOKEN1 })
--- after_request eval
[\&AwsCreds::ready, sub {
    my @f = main::forms();
    Test::More::is(scalar @f, 1, 'TEST 1: one call to STS');
    Test::More::is_deeply($f[0], {
        Action => 'AssumeRoleWithWebIdentity',
        Version => '2011-06-15',
        RoleArn => 'arn:aws:iam::123456789012:role/replay',
        RoleSessionName => 'replay-test',
        WebIdentityToken => $main::TOKEN1,
    }, 'TEST 1: the documented form, the file\'s token');
    my ($r) = AwsCreds::requests('sts');
    Test::More::is($r->{method} . ' ' . $r->{url}
                   . ' ' . $r->{headers}{'content-type'},
                   'POST / application/x-www-form-urlencoded; charset=utf-8',
                   'TEST 1: a form POST');
    main::clean(1);
}]
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0)




=== TEST 2: the token file changes (it is rotated): the next refresh sends the new token
--- before eval
main::sts({ token => $main::TOKEN1, ttl => AwsCreds::ttl_rotation() })
--- after_request eval
AwsCreds::refreshed('sts', 2, main::token_file(), [$main::TOKEN1, $main::TOKEN2],
                    sub { map { $_->{WebIdentityToken} } main::forms() },
                    sub { main::clean(2) })
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0, 1)




=== TEST 3: a refresh that fails (STS's InternalFailure) is logged and retried; the credentials held sign meanwhile; it recovers
--- before eval
main::sts({ ttl => AwsCreds::ttl_fails() })
--- after_request eval
AwsCreds::refresh_fails('sts', 3, qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: HTTP 500, InternalFailure; those held expire at \S+Z, next try in 1s$/, 3, sub { main::clean(3) })
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0, 0, 1)
--- error_log_at_end eval
qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: HTTP 500, InternalFailure; those held expire at \S+Z, next try in 1s$/




=== TEST 4: STS calls the token expired: no refresh possible, the credentials expire, 503 and a log line
--- before eval
main::sts({ ttl => AwsCreds::ttl_expiry() })
--- after_request eval
AwsCreds::expiry('sts', 4, { expired_token => $main::TOKEN1 }, qr/\[error\] .*replay: no AWS credentials to sign with: those from web_identity \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 400, ExpiredTokenException, client: /, 2, sub { main::clean(4) })
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0)
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: HTTP 400, ExpiredTokenException; those held expire at \S+Z, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with: those from web_identity \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), [1-9] refreshes failed in a row, the last: HTTP 400, ExpiredTokenException, client: /]




=== TEST 5: STS's certificate is verified: trusting another CA, nothing is sent
--- before eval
main::sts()
--- after_request eval
[sub {
    main::logged(qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\); there are none yet/,
                 'TEST 5: a certificate of another CA is refused')->();
    Test::More::ok(!grep({ $_->{WebIdentityToken} eq $main::TOKEN5 } main::forms()),
                   'TEST 5: the token was not sent to it');
}]
--- timeout: 10
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-five.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL ca=$TEST_NGINX_TLS_DIR/other-ca.crt
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\); there are none yet, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with yet from web_identity \(nginx.conf:\d+\)(, the last try failed: .*)?, client: /]




=== TEST 6: without ca=, the system's CA bundle: the suite's CA is not in it
--- before eval
main::sts()
--- after_request eval
[main::logged(qr/failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\)/,
               'TEST 6: the system\'s CAs do not know the suite\'s')]
--- timeout: 10
--- user_files
>>> web-token
eyJhbGciOiJSUzI1NiJ9.mintJWT-one.c2lnbmF0dXJl
--- creds: web_identity role_arn=arn:aws:iam::123456789012:role/replay token_file=../html/web-token sts_endpoint=$TEST_NGINX_STS_URL
--- request
GET /s3
--- error_code: 503
--- no_error_log
mintJWT
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of localhost:\d+ is not trusted \(2[01]: unable to (verify the first|get local issuer) certificate\); there are none yet, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with yet from web_identity \(nginx.conf:\d+\)(, the last try failed: .*)?, client: /]




=== TEST 7: with a resolver, STS's name is resolved by it at each refresh (the master could not)
--- before eval
main::sts()
--- after_request eval
[\&AwsCreds::ready, sub { main::clean(7) }]
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0)




=== TEST 8: a certificate that is not for STS's name is refused
--- before eval
main::sts()
--- after_request eval
[main::logged(qr/failed: the certificate of sts.wrong.test:\d+ is not for "sts.wrong.test"; there are none yet/,
               'TEST 8: a certificate for another name is refused')]
--- timeout: 10
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
--- error_log_at_end eval
[qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: the certificate of sts.wrong.test:\d+ is not for "sts.wrong.test"; there are none yet, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with yet from web_identity \(nginx.conf:\d+\)(, the last try failed: .*)?, client: /]




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
--- before eval
main::sts()
--- after_request eval
[sub {
    main::logged(qr/failed: could not connect to sts.zz-test-9.amazonaws.com; there are none yet/,
                 'TEST 11: the regional endpoint, resolved')->();
    AwsCreds::log_like(qr/connect\(\) to 127\.0\.0\.1:443 failed .* while fetching AWS credentials \(web_identity\) from https:\/\/sts.zz-test-9.amazonaws.com/,
                       'TEST 11: on port 443, nginx says what for');
}]
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
--- error_log_at_end eval
[qr/\[error\] .*connect\(\) to 127\.0\.0\.1:443 failed .* while fetching AWS credentials \(web_identity\) from https:\/\/sts.zz-test-9.amazonaws.com/,
 qr/\[error\] .*replay: refreshing AWS credentials from web_identity \(nginx.conf:\d+\) failed: could not connect to sts.zz-test-9.amazonaws.com; there are none yet, next try in 1s$/,
 qr/\[error\] .*replay: no AWS credentials to sign with yet from web_identity \(nginx.conf:\d+\)(, the last try failed: .*)?, client: /]




=== TEST 12: everything from the AWS_* environment (as EKS sets it for IRSA), no "env" directive
--- before eval
main::sts(undef, AWS_ROLE_ARN => 'arn:aws:iam::123456789012:role/from-env',
          AWS_WEB_IDENTITY_TOKEN_FILE => main::token_file(),
          AWS_ROLE_SESSION_NAME => 'env-session',
          AWS_ENDPOINT_URL_STS => $ENV{TEST_NGINX_STS_URL},
          AWS_CA_BUNDLE => "$ENV{TEST_NGINX_TLS_DIR}/ca.crt")
--- after_request eval
[\&AwsCreds::ready, sub {
    my ($f) = main::forms();
    Test::More::is(CORE::join(' ', @$f{qw(RoleArn RoleSessionName WebIdentityToken)}),
                   "arn:aws:iam::123456789012:role/from-env env-session $main::TOKEN1",
                   'TEST 12: all from the AWS_* variables');
    main::clean(12);
}]
--- timeout: 10
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
--- s3_requests eval
AwsCreds::s3_gets('sts', 0)




=== TEST 13: no role given, none in the environment
--- before eval
main::sts()
--- creds: web_identity token_file=/x
--- must_die
--- error_log
replay_s3_credentials web_identity: no role_arn= and no AWS_ROLE_ARN in nginx's environment
