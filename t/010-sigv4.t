# Signing, proven against an S3 server that checks signatures: right
# credentials are served, a wrong secret or key id is refused by S3 and
# reported, no secret reaches a log, and the signing variables a log may
# show hold what S3 was sent (TEST 9).  The suite's S3 refuses unsigned
# requests as a private bucket does (TEST 8), and every block of the suite
# lists what S3 saw (--- s3_requests, checked by t/lib/ReplayTest.pm).

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: credentials from a file are used, the object is served
--- user_files
>>> good.creds
# the test S3 server's key pair
[default]
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
region = ignored
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/good.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin
--- no_error_log
wJalrXUtnFEMI



=== TEST 2: a wrong secret is refused by S3: 502, S3's code in the log, no secret anywhere
--- user_files
>>> wrong.creds
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = NotTheSecretAtAllNotTheSecretAtAll123456
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/wrong.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- response_body_like chomp
\A<html>\r?\n<head><title>502 Bad Gateway</title></head>
--- s3_requests
GET /replays/games/1/replay.bin -> 403 SignatureDoesNotMatch
--- error_log
replay: S3 answered 403 SignatureDoesNotMatch for key "games/1/replay.bin"
--- no_error_log
NotTheSecretAtAll
wJalrXUtnFEMI



=== TEST 3: a wrong secret on HEAD is 502 as well
--- user_files
>>> wrong.creds
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = NotTheSecretAtAllNotTheSecretAtAll123456
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/wrong.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- request
HEAD /s3
--- error_code: 502
--- s3_requests
HEAD /replays/games/1/replay.bin -> 403 SignatureDoesNotMatch
--- error_log
replay: S3 answered 403 (no error code) for key "games/1/replay.bin"



=== TEST 4: an unknown access key id is refused by S3: 502 and its code
--- user_files
>>> unknown.creds
aws_access_key_id = AKIDUNKNOWNUNKNOWN00
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/unknown.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- response_body_like chomp
\A<html>\r?\n<head><title>502 Bad Gateway</title></head>
--- s3_requests
GET /replays/games/1/replay.bin key=AKIDUNKNOWNUNKNOWN00 -> 403 InvalidAccessKeyId
--- error_log
replay: S3 answered 403 InvalidAccessKeyId for key "games/1/replay.bin"



=== TEST 5: a request signed for another region is refused
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_region       eu-west-3;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- s3_requests
GET /replays/games/1/replay.bin -> 400 AuthorizationHeaderMalformed
--- error_log eval
qr/replay: S3 answered 400 AuthorizationHeaderMalformed for key "games\/1\/replay.bin"/



=== TEST 6: credentials from the environment, secret kept out of the debug log
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/2/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/2/replay.bin
--- s3_requests
GET /replays/games/2/replay.bin
--- error_log
replay: sigv4 string to sign:
--- no_error_log
wJalrXUtnFEMI



=== TEST 7: what goes on the wire: signed headers, session token, nothing of the client's
--- user_files
>>> token.creds
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
aws_session_token = FQoGZXIvYXdzEXAMPLETOKEN
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/token.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
sub {
    my $q = shift;
    my @lines = split /\r\n/, $q;
    my $rl = shift @lines;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1, $2) : () } @lines;
    my ($sh) = ($h{authorization} // '') =~ /SignedHeaders=([^,]+)/;
    # CORE::join: section code runs where Test::Base has a join filter
    my $body = CORE::join "\n", $rl,
        "headers=" . CORE::join(',', sort keys %h),
        "signed=" . ($sh // ''),
        "token=" . ($h{'x-amz-security-token'} // ''),
        "sha=" . ($h{'x-amz-content-sha256'} // ''), "";
    return "HTTP/1.1 200 OK\r\nContent-Length: " . length($body)
           . "\r\nConnection: close\r\n\r\n$body";
}
--- request
GET /s3
--- more_headers
Cookie: secret-session
X-Forwarded-For: 10.0.0.1
Range: bytes=0-3
--- response_body
GET /replays/games/1/replay.bin HTTP/1.1
headers=authorization,host,range,x-amz-content-sha256,x-amz-date,x-amz-security-token
signed=host;x-amz-content-sha256;x-amz-date;x-amz-security-token
token=FQoGZXIvYXdzEXAMPLETOKEN
sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855



=== TEST 8: the suite's S3 refuses an unsigned request as a private bucket does; its public bucket serves one
(proxy_pass alone: no signature; the block asks for anonymous access by
naming the bucket that has it)
--- config
    location = /unsigned {
        proxy_pass  $TEST_NGINX_S3_ENDPOINT/replays/games/1/replay.bin;
    }
    location = /public {
        proxy_pass  $TEST_NGINX_S3_ENDPOINT/$TEST_NGINX_S3_PUBLIC_BUCKET/games/1/replay.bin;
    }
--- request eval
["GET /unsigned", "GET /public"]
--- error_code eval
[403, 200]
--- response_body_like eval
[qr{<Code>AccessDenied</Code>}, qr{\Abucket=public key=games/1/replay\.bin\n\z}]
--- s3_requests
GET /replays/games/1/replay.bin anonymous -> 403 AccessDenied
GET /public/games/1/replay.bin anonymous -> 200



=== TEST 9: the signing variables hold what S3 was sent, for the log: the date, the signature, the payload hash
--- http_config
    log_format  signing  'date=$replay_s3_date auth="$replay_s3_authorization" sha=$replay_s3_content_sha256';
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        access_log             logs/access.log signing;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
sub {
    my $q = shift;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1, $2) : () } split /\r\n/, $q;
    # the line the log must hold, from what S3 was sent
    my $body = "date=" . ($h{'x-amz-date'} // '')
               . " auth=\"" . ($h{authorization} // '') . "\""
               . " sha=" . ($h{'x-amz-content-sha256'} // '') . "\n";
    return "HTTP/1.1 200 OK\r\nContent-Length: " . length($body)
           . "\r\nConnection: close\r\n\r\n$body";
}
--- request
GET /s3
--- response_body_like
^date=\d{8}T\d{6}Z auth="AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/\d{8}/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}" sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855$
--- after_request eval
[sub {
    my ($block, $body) = @_;
    ReplayTest::wait_for_line('logs/access.log', qr/^date=/, 5);
    my $file = Test::Nginx::Util::server_root() . '/logs/access.log';
    open my $fh, '<', $file or die "$file: $!";
    my @lines = grep { /^date=/ } <$fh>;
    Test::More::is_deeply(\@lines, [$body],
                          'TEST 9: the log holds what S3 was sent');
}]
