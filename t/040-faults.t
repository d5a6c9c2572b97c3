# What a real S3 server won't do on demand, from hand-made backends:
# stalls, bodies cut short, 5xx, other S3 error codes, refused connections,
# a listener that never accepts.  The suite's S3 is not asked (ReplayTest
# checks its log) but where a block lists it.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the first bytes reach the client while S3 stalls mid-body
(the client gives up after 3 s of silence; nginx would wait 10 s for the rest)
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_read_timeout     10s;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_no_close
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nfirst-half"
--- request
GET /s3
--- timeout: 3
--- abort
--- response_body chop
first-half
--- response_headers
Content-Length: 20



=== TEST 2: an object cut short: the client connection is closed, not completed
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nonly-ten!!"
--- request
GET /s3
--- response_body chop
only-ten!!
--- response_headers
Content-Length: 20
--- error_log
upstream prematurely closed connection



=== TEST 3: S3 silent past the read timeout: 504
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_read_timeout     500ms;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_no_close
--- tcp_reply:
--- request
GET /s3
--- error_code: 504
--- error_log
upstream timed out



=== TEST 4: S3 stalls mid-body past the read timeout: the connection is closed
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_read_timeout     500ms;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_no_close
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nfirst-half"
--- request
GET /s3
--- response_body chop
first-half
--- error_log
upstream timed out



=== TEST 5: a refused connection is 502
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- error_log
connect() failed (111: Connection refused)



=== TEST 6: S3 500 is 502, S3's XML stays out of the response
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>';
"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nx-amz-request-id: 4442587FB7D0A2F9\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request
GET /s3
--- error_code: 502
--- response_body_like chomp
\A<html>\r?\n<head><title>502 Bad Gateway</title></head>
--- response_headers
!x-amz-request-id
Content-Type: text/html
--- error_log
replay: S3 answered 500 InternalError for key "games/1/replay.bin"



=== TEST 7: S3 503 SlowDown, chunked, is 503 with Retry-After
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = '<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
"HTTP/1.1 503 Slow Down\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf("%x", length $xml) . "\r\n$xml\r\n0\r\n\r\n"
--- request
GET /s3
--- error_code: 503
--- response_body_like chomp
\A<html>\r?\n<head><title>503 Service Temporarily Unavailable</title></head>
--- response_headers
Retry-After: 1
--- error_log
replay: S3 answered 503 SlowDown for key "games/1/replay.bin"



=== TEST 8: S3 403 AccessDenied is 502
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = '<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>';
"HTTP/1.1 403 Forbidden\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request
GET /s3
--- error_code: 502
--- response_body_like chomp
\A<html>\r?\n<head><title>502 Bad Gateway</title></head>
--- error_log
replay: S3 answered 403 AccessDenied for key "games/1/replay.bin"



=== TEST 9: S3 403 RequestTimeTooSkewed is 502 and named
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = '<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message></Error>';
"HTTP/1.1 403 Forbidden\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request
GET /s3
--- error_code: 502
--- error_log
replay: S3 answered 403 RequestTimeTooSkewed for key "games/1/replay.bin"



=== TEST 10: an S3 error whose body is cut short is the same 502, logged without a code
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 200\r\n\r\n<Error><Code>Intern"
--- request
GET /s3
--- error_code: 502
--- response_body_like chomp
\A<html>\r?\n<head><title>502 Bad Gateway</title></head>
--- error_log
replay: S3 answered 500 (no error code) for key "games/1/replay.bin"



=== TEST 11: replay_buffering on streams through nginx's proxy buffers, whole
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          big/1mib.bin;
        replay_buffering       on;
        proxy_buffers          4 16k;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('big/1mib.bin')
--- response_headers
Content-Length: 1048576
--- s3_requests
GET /replays/big/1mib.bin



=== TEST 12: a forwarded header with a control character is the client's 400, S3 never asked
(S3, like any strict HTTP server, would refuse the whole request: a 502)
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request eval
["GET /s3", "GET /s3"]
--- more_headers eval
["Range: bytes=0-1\x01\x7f", "If-None-Match: \"x\x1b[31m\""]
--- error_code eval
[400, 400]
--- no_s3_request
--- error_log eval
qr/replay: the client's "Range" header holds a control character/



=== TEST 13: a listener that never accepts: the connect times out after proxy_connect_timeout, 504
(its accept queue is full, so the kernel drops nginx's SYN: what a host
that is down or firewalled does)
--- http_config
    log_format  took  '$status $request_time';
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_connect_timeout  1s;
        access_log             logs/access.log took;
    }
--- init
ReplayTest::never_accepting(ReplayTest::rand_port(1));
--- request
GET /s3
--- error_code: 504
--- access_log eval
qr/^504 1\.[0-4]\d\d$/
--- error_log
upstream timed out (110: Connection timed out) while connecting to upstream
