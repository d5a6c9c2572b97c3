# Streaming from the signature-checking S3 server: bodies byte for byte,
# headers relayed or dropped, ranges and conditional requests, HEAD, and
# keys with every character that needs care (one block per key, written by
# t/gen/stream-special.py).  Each block lists the request S3 saw.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# Blocks without a configuration get this one: the key from X-Key.
my $s3_location = <<'CONF';
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $http_x_key;
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', $s3_location) unless defined $block->config;
});

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: GET streams the object
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
--- response_body
bucket=replays key=games/1/replay.bin
--- response_headers eval
"Content-Length: 38
Content-Type: application/octet-stream
Accept-Ranges: bytes
ETag: " . ReplayTest::etag('games/1/replay.bin') . "
!x-amz-request-id
!x-amz-id-2"
--- raw_response_headers_like eval
qr/\r\nLast-Modified: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n/
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 2: the client's other headers do not reach S3, the object's own Content-Type does
--- request
GET /s3
--- more_headers
X-Key: games/8/notes.txt
Authorization: AWS4-HMAC-SHA256 Credential=FORGED/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0000
Cookie: session=1
--- response_body
bucket=replays key=games/8/notes.txt
--- response_headers
Content-Type: text/plain; charset=utf-8
--- s3_requests
GET /replays/games/8/notes.txt



=== TEST 3: HEAD answers the headers without the body
--- request
HEAD /s3
--- more_headers
X-Key: games/1/replay.bin
--- response_body
--- response_headers
Content-Length: 38
!x-amz-request-id
--- s3_requests
HEAD /replays/games/1/replay.bin



=== TEST 4: a range at the start
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
Range: bytes=0-5
--- error_code: 206
--- response_body chomp
bucket
--- response_headers
Content-Range: bytes 0-5/38
Content-Length: 6
--- s3_requests
GET /replays/games/1/replay.bin Range: bytes=0-5 -> 206



=== TEST 5: a range in the middle of the 50 MiB object
--- request
GET /s3
--- more_headers
X-Key: big/50mib.bin
Range: bytes=26214400-26214499
--- error_code: 206
--- response_body eval
substr(ReplayTest::fixture('big/50mib.bin'), 26214400, 100)
--- response_headers
Content-Range: bytes 26214400-26214499/52428800
--- s3_requests
GET /replays/big/50mib.bin Range: bytes=26214400-26214499 -> 206



=== TEST 6: an open range: the end of the object
(the test S3 server reads a suffix range "bytes=-N" as "bytes=0-N", so the
end is asked for by offset)
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
Range: bytes=27-
--- error_code: 206
--- response_body
replay.bin
--- response_headers
Content-Range: bytes 27-37/38
--- s3_requests
GET /replays/games/1/replay.bin Range: bytes=27- -> 206



=== TEST 7: a range past the end is 416, without S3's XML
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
Range: bytes=100-200
--- error_code: 416
--- response_body_like chomp
\A<html>\r?\n<head><title>416 Requested Range Not Satisfiable</title></head>
--- s3_requests
GET /replays/games/1/replay.bin Range: bytes=100-200 -> 416 InvalidRange
--- error_log
replay: S3 answered 416 InvalidRange for key "games/1/replay.bin"



=== TEST 8: If-None-Match with the object's ETag is 304
--- request
GET /s3
--- more_headers eval
"X-Key: games/1/replay.bin\nIf-None-Match: " . ReplayTest::etag('games/1/replay.bin')
--- error_code: 304
--- response_body
--- s3_requests
GET /replays/games/1/replay.bin -> 304



=== TEST 9: If-None-Match with another ETag is 200
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
If-None-Match: "00000000000000000000000000000000"
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin -> 200



=== TEST 10: If-Modified-Since in the future is 304
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT
--- error_code: 304
--- response_body
--- s3_requests
GET /replays/games/1/replay.bin -> 304



=== TEST 11: a missing object is 404, without S3's XML
--- request
GET /s3
--- more_headers
X-Key: games/7/missing.bin
--- error_code: 404
--- response_body_like chomp
\A<html>\r?\n<head><title>404 Not Found</title></head>
--- response_headers
Content-Type: text/html
!x-amz-request-id
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/7/missing.bin"



=== TEST 12: the 50 MiB object, byte for byte
--- request
GET /s3
--- more_headers
X-Key: big/50mib.bin
--- timeout: 30
--- response_body eval
ReplayTest::fixture('big/50mib.bin')
--- response_headers
Content-Length: 52428800
--- s3_requests
GET /replays/big/50mib.bin



=== TEST 13: methods other than GET and HEAD are 405 with Allow
--- request
POST /s3
hello
--- more_headers
X-Key: games/1/replay.bin
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- no_s3_request
--- error_log
replay: method POST not allowed



=== TEST 14: an empty key is 404 and says so
--- request
GET /s3
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key is empty



=== TEST 15: a key longer than S3 allows is 400
--- request
GET /s3
--- more_headers eval
"X-Key: long/" . ("k" x 1020)
--- error_code: 400
--- no_s3_request
--- error_log
replay: the object key of the request is 1025 bytes long, S3 allows 1024



=== TEST 16: a key from the URI, with a regex capture
--- config
    location ~ ^/games/(\d+)/replay$ {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/$1/replay.bin;
    }
--- request
GET /games/2/replay
--- response_body
bucket=replays key=games/2/replay.bin
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 17: the same key in another bucket is that bucket's object
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       other;
        replay_s3_credentials  env;
        replay_s3_key          $http_x_key;
    }
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
--- response_body
bucket=other key=games/1/replay.bin
--- s3_requests
GET /other/games/1/replay.bin



=== TEST 18: the request carries the signed path and host ($replay_s3_uri, $replay_s3_host, $replay_key)
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $http_x_key;
        add_header X-Uri $replay_s3_uri always;
        add_header X-Host $replay_s3_host always;
        add_header X-Key $replay_key always;
    }
--- request
GET /s3
--- more_headers
X-Key: special/all !$&'()*+,;=:@~%?#.bin
--- response_body
bucket=replays key=special/all !$&'()*+,;=:@~%?#.bin
--- response_headers eval
"X-Uri: /replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23.bin
X-Host: 127.0.0.1:$ENV{TEST_NGINX_S3_PORT}
X-Key: special/all !\$&'()*+,;=:\@~%?#.bin"
--- s3_requests
GET /replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23.bin



=== TEST 19: virtual-host addressing puts the bucket in Host, not in the path
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:1;
        replay_s3_bucket       replays;
        replay_s3_addressing   virtual;
        replay_s3_credentials  env;
        replay_s3_key          $http_x_key;
        proxy_connect_timeout  1s;
        add_header X-Uri $replay_s3_uri always;
        add_header X-Host $replay_s3_host always;
    }
--- request
GET /s3
--- more_headers
X-Key: games/1/replay.bin
--- error_code: 502
--- response_headers
X-Uri: /games/1/replay.bin
X-Host: replays.127.0.0.1:1
--- no_s3_request
--- error_log
connect() failed (111: Connection refused)



=== TEST 20: S3's metadata: the headers meant for clients are relayed, S3's own (x-amz-*) dropped
--- request
GET /s3
--- more_headers
X-Key: games/9/meta.bin
--- response_body
bucket=replays key=games/9/meta.bin
--- response_headers
Content-Type: application/x-replay
Cache-Control: public, max-age=3600
Content-Disposition: attachment; filename="from-s3.replay"
Content-Language: en
Expires: Thu, 01 Jan 2037 00:00:00 GMT
!x-amz-meta-mtime
!x-amz-meta-uploaded-by
!x-amz-storage-class
!x-amz-website-redirect-location
!x-amz-request-id
!x-amz-id-2
--- s3_requests
GET /replays/games/9/meta.bin



=== TEST 21: ... and the same on HEAD
--- request
HEAD /s3
--- more_headers
X-Key: games/9/meta.bin
--- response_body
--- response_headers
Content-Length: 36
Cache-Control: public, max-age=3600
Content-Language: en
!x-amz-meta-mtime
!x-amz-storage-class
!x-amz-request-id
--- s3_requests
HEAD /replays/games/9/meta.bin



=== TEST 22: key special/a b.bin
--- request
GET /s3
--- more_headers
X-Key: special/a b.bin
--- response_body
bucket=replays key=special/a b.bin
--- s3_requests
GET /replays/special/a%20b.bin



=== TEST 23: key special/a+b.bin
--- request
GET /s3
--- more_headers
X-Key: special/a+b.bin
--- response_body
bucket=replays key=special/a+b.bin
--- s3_requests
GET /replays/special/a%2Bb.bin



=== TEST 24: key special/bang!.bin
--- request
GET /s3
--- more_headers
X-Key: special/bang!.bin
--- response_body
bucket=replays key=special/bang!.bin
--- s3_requests
GET /replays/special/bang%21.bin



=== TEST 25: key special/dollar$.bin
--- request
GET /s3
--- more_headers
X-Key: special/dollar$.bin
--- response_body
bucket=replays key=special/dollar$.bin
--- s3_requests
GET /replays/special/dollar%24.bin



=== TEST 26: key special/amp&.bin
--- request
GET /s3
--- more_headers
X-Key: special/amp&.bin
--- response_body
bucket=replays key=special/amp&.bin
--- s3_requests
GET /replays/special/amp%26.bin



=== TEST 27: key special/apos'.bin
--- request
GET /s3
--- more_headers
X-Key: special/apos'.bin
--- response_body
bucket=replays key=special/apos'.bin
--- s3_requests
GET /replays/special/apos%27.bin



=== TEST 28: key special/paren().bin
--- request
GET /s3
--- more_headers
X-Key: special/paren().bin
--- response_body
bucket=replays key=special/paren().bin
--- s3_requests
GET /replays/special/paren%28%29.bin



=== TEST 29: key special/star*.bin
--- request
GET /s3
--- more_headers
X-Key: special/star*.bin
--- response_body
bucket=replays key=special/star*.bin
--- s3_requests
GET /replays/special/star%2A.bin



=== TEST 30: key special/comma,.bin
--- request
GET /s3
--- more_headers
X-Key: special/comma,.bin
--- response_body
bucket=replays key=special/comma,.bin
--- s3_requests
GET /replays/special/comma%2C.bin



=== TEST 31: key special/semi;.bin
--- request
GET /s3
--- more_headers
X-Key: special/semi;.bin
--- response_body
bucket=replays key=special/semi;.bin
--- s3_requests
GET /replays/special/semi%3B.bin



=== TEST 32: key special/eq=.bin
--- request
GET /s3
--- more_headers
X-Key: special/eq=.bin
--- response_body
bucket=replays key=special/eq=.bin
--- s3_requests
GET /replays/special/eq%3D.bin



=== TEST 33: key special/colon:.bin
--- request
GET /s3
--- more_headers
X-Key: special/colon:.bin
--- response_body
bucket=replays key=special/colon:.bin
--- s3_requests
GET /replays/special/colon%3A.bin



=== TEST 34: key special/at@.bin
--- request
GET /s3
--- more_headers
X-Key: special/at@.bin
--- response_body
bucket=replays key=special/at@.bin
--- s3_requests
GET /replays/special/at%40.bin



=== TEST 35: key special/tilde~.bin
--- request
GET /s3
--- more_headers
X-Key: special/tilde~.bin
--- response_body
bucket=replays key=special/tilde~.bin
--- s3_requests
GET /replays/special/tilde~.bin



=== TEST 36: key special/pct%.bin
--- request
GET /s3
--- more_headers
X-Key: special/pct%.bin
--- response_body
bucket=replays key=special/pct%.bin
--- s3_requests
GET /replays/special/pct%25.bin



=== TEST 37: key special/pct%20.bin
--- request
GET /s3
--- more_headers
X-Key: special/pct%20.bin
--- response_body
bucket=replays key=special/pct%20.bin
--- s3_requests
GET /replays/special/pct%2520.bin



=== TEST 38: key special/pct%2F.bin
--- request
GET /s3
--- more_headers
X-Key: special/pct%2F.bin
--- response_body
bucket=replays key=special/pct%2F.bin
--- s3_requests
GET /replays/special/pct%252F.bin



=== TEST 39: key special/q?.bin
--- request
GET /s3
--- more_headers
X-Key: special/q?.bin
--- response_body
bucket=replays key=special/q?.bin
--- s3_requests
GET /replays/special/q%3F.bin



=== TEST 40: key special/hash#.bin
--- request
GET /s3
--- more_headers
X-Key: special/hash#.bin
--- response_body
bucket=replays key=special/hash#.bin
--- s3_requests
GET /replays/special/hash%23.bin



=== TEST 41: key special/all !$&'()*+,;=:@~%?#.bin
--- request
GET /s3
--- more_headers
X-Key: special/all !$&'()*+,;=:@~%?#.bin
--- response_body
bucket=replays key=special/all !$&'()*+,;=:@~%?#.bin
--- s3_requests
GET /replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23.bin



=== TEST 42: key special/other "<>\^`{|}[].bin
--- request
GET /s3
--- more_headers
X-Key: special/other "<>\^`{|}[].bin
--- response_body
bucket=replays key=special/other "<>\^`{|}[].bin
--- s3_requests
GET /replays/special/other%20%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D.bin



=== TEST 43: key special/café.bin
--- request
GET /s3
--- more_headers
X-Key: special/café.bin
--- response_body
bucket=replays key=special/café.bin
--- s3_requests
GET /replays/special/caf%C3%A9.bin



=== TEST 44: key special/日本/リプレイ.bin
--- request
GET /s3
--- more_headers
X-Key: special/日本/リプレイ.bin
--- response_body
bucket=replays key=special/日本/リプレイ.bin
--- s3_requests
GET /replays/special/%E6%97%A5%E6%9C%AC/%E3%83%AA%E3%83%97%E3%83%AC%E3%82%A4.bin



=== TEST 45: key special/dots/../up.bin: refused
--- request
GET /s3
--- more_headers
X-Key: special/dots/../up.bin
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "special/dots/../up.bin" has an empty, "." or ".." segment



=== TEST 46: key special/up.bin
--- request
GET /s3
--- more_headers
X-Key: special/up.bin
--- response_body
bucket=replays key=special/up.bin
--- s3_requests
GET /replays/special/up.bin



=== TEST 47: key special/dot/./here.bin: refused
--- request
GET /s3
--- more_headers
X-Key: special/dot/./here.bin
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "special/dot/./here.bin" has an empty, "." or ".." segment



=== TEST 48: key special/dot/here.bin
--- request
GET /s3
--- more_headers
X-Key: special/dot/here.bin
--- response_body
bucket=replays key=special/dot/here.bin
--- s3_requests
GET /replays/special/dot/here.bin



=== TEST 49: key special//double-slash.bin: refused
--- request
GET /s3
--- more_headers
X-Key: special//double-slash.bin
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "special//double-slash.bin" has an empty, "." or ".." segment



=== TEST 50: key special/double-slash.bin
--- request
GET /s3
--- more_headers
X-Key: special/double-slash.bin
--- response_body
bucket=replays key=special/double-slash.bin
--- s3_requests
GET /replays/special/double-slash.bin



=== TEST 51: key special/trailing/: refused
--- request
GET /s3
--- more_headers
X-Key: special/trailing/
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "special/trailing/" has an empty, "." or ".." segment



=== TEST 52: key special/trailing
--- request
GET /s3
--- more_headers
X-Key: special/trailing
--- response_body
bucket=replays key=special/trailing
--- s3_requests
GET /replays/special/trailing



=== TEST 53: key /leading-slash.bin: refused
--- request
GET /s3
--- more_headers
X-Key: /leading-slash.bin
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "/leading-slash.bin" has an empty, "." or ".." segment



=== TEST 54: key leading-slash.bin
--- request
GET /s3
--- more_headers
X-Key: leading-slash.bin
--- response_body
bucket=replays key=leading-slash.bin
--- s3_requests
GET /replays/leading-slash.bin



=== TEST 55: key ../other/secret.txt: refused
--- request
GET /s3
--- more_headers
X-Key: ../other/secret.txt
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "../other/secret.txt" has an empty, "." or ".." segment



=== TEST 56: key /other/secret.txt: refused
--- request
GET /s3
--- more_headers
X-Key: /other/secret.txt
--- error_code: 404
--- no_s3_request
--- error_log
replay: the object key "/other/secret.txt" has an empty, "." or ".." segment



=== TEST 57: key long/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk... (1024 bytes)
--- request
GET /s3
--- more_headers
X-Key: long/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk
--- response_body
bucket=replays key=long/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk
--- s3_requests
GET /replays/long/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk

