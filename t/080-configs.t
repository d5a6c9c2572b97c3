# The configurations nginx users write around a replay location: if and
# limit_except blocks, error_page into and out of it (with and without
# "="), post_action, rewrite, try_files and named locations, SSI,
# auth_request and mirror subrequests, HTTP/2 over TLS, TLS to S3, upstream
# blocks, proxy_cache; and what of S3's answer reaches the client.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# The location most blocks put inside the configuration they test.
our $replay = <<'CONF';
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
CONF

# A TLS front for the suite's S3 server, as an S3 endpoint of a name
# (s3.replay-test.amazonaws.com, an upstream block: never resolved) that
# the suite's certificate holds, bucket subdomains included.
our $tls_s3 = <<'CONF';
    upstream s3.replay-test.amazonaws.com {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate      $TEST_NGINX_TLS_DIR/server.crt;
        ssl_certificate_key  $TEST_NGINX_TLS_DIR/server.key;

        location / {
            proxy_pass        $TEST_NGINX_S3_ENDPOINT;
            proxy_set_header  Host $http_host;
            proxy_buffering   off;
        }
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    for my $s (qw(config http_config)) {
        my $v = $block->$s;
        next unless defined $v;
        $v =~ s/^\s*\@replay;\n/$replay/mg;
        $v =~ s/^\s*\@tls_s3;\n/$tls_s3/mg;
        $block->set_value($s, $v);
    }
});

# "--- curl eval": [[ARGS, STATUS, BODY, HEADER_RE...], ...]: curl ARGS
# (the block's ports and TLS directory expanded) after the block's
# requests; "HTTP-VERSION STATUS", the body (a string or a regex) and the
# response header (each regex) must match.
add_response_body_check(sub {
    my ($block, $body, $idx, $repeated, $dry_run) = @_;

    my $specs = $block->curl or return;
    return if $dry_run;

    my $req = $block->request;
    return if ref $req eq 'ARRAY' && $idx != $#$req;

    require File::Temp;

    for my $spec (@$specs) {
        my ($args, $status, $want, @headers) = @$spec;

        $args =~ s/\$TEST_NGINX_TLS_DIR/$ENV{TEST_NGINX_TLS_DIR}/g;
        $args =~ s/\$(TEST_NGINX_RAND_PORT_\d+)/$Test::Nginx::Util::RandPorts->{$1}/g;

        my ($fh, $out) = File::Temp::tempfile(UNLINK => 1);
        my ($hh, $head) = File::Temp::tempfile(UNLINK => 1);
        close $fh;
        close $hh;

        my $code = `curl -sS --max-time 30 -D '$head' -o '$out' -w '%{http_version} %{http_code}' $args 2>&1`;

        my $name = $block->name . " - curl $args";

        Test::More::is($code, $status, "$name: HTTP version and status");

        open my $in, '<:raw', $out or die "$out: $!";
        my $got = do { local $/; <$in> } // '';
        close $in;

        if (ref $want eq 'Regexp') {
            Test::More::like($got, $want, "$name: body");
        } else {
            Test::More::ok($got eq $want, "$name: body");
        }

        open $in, '<', $head or die "$head: $!";
        my $h = do { local $/; <$in> } // '';
        close $in;

        for my $re (@headers) {
            Test::More::like($h, $re, "$name: header $re");
        }
    }
});

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: if in the location, true: the CORS snippet adds its header, the object is served
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        if ($http_origin) {
            add_header  Access-Control-Allow-Origin $http_origin always;
        }
    }
--- request
GET /s3
--- more_headers
Origin: https://example.com
--- response_headers
Access-Control-Allow-Origin: https://example.com
Content-Length: 38
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 2: if in the location, false: the object is served, no CORS header
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        if ($http_origin) {
            add_header  Access-Control-Allow-Origin $http_origin always;
        }
    }
--- request
GET /s3
--- response_headers
!Access-Control-Allow-Origin
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 3: if with its own key and a return: each branch as written
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        if ($arg_deny) {
            return 403;
        }

        if ($arg_v = 2) {
            set $v 2;
        }
    }
--- request eval
["GET /s3?deny=1", "GET /s3?v=2", "GET /s3"]
--- error_code eval
[403, 200, 200]
--- response_body_like eval
[qr/403 Forbidden/, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
 qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 4: limit_except lets DELETE through access: 405 from the module, nothing to S3
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        limit_except GET {
            allow  127.0.0.1;
            deny   all;
        }
    }
--- request
DELETE /s3?acl
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- error_log
replay: method DELETE not allowed
--- s3_requests



=== TEST 5: limit_except: PUT with a body is refused too, GET still served
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        limit_except GET {
            allow  127.0.0.1;
            deny   all;
        }
    }
--- request eval
["PUT /s3\nsome body", "GET /s3"]
--- error_code eval
[405, 200]
--- response_body_like eval
[qr/405 Not Allowed/, qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/]
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 6: limit_except that denies: 403, nothing to S3
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;

        limit_except GET {
            deny  all;
        }
    }
--- request
DELETE /s3
--- error_code: 403
--- error_log
access forbidden by rule
--- s3_requests



=== TEST 7: error_page without "=" out of a replay location: S3's 404 becomes the page, S3's headers stay out
--- user_files
>>> fallback.txt
fallback page
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/7/missing.bin;
        error_page             404 /fallback.txt;
    }
--- request
GET /s3
--- error_code: 404
--- response_body
fallback page
--- response_headers
Content-Type: text/plain
!x-amz-request-id
!x-amz-id-2
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/7/missing.bin"
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey



=== TEST 8: error_page "=" from one replay location to another
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/7/missing.bin;
        error_page             404 = /s3-default;
    }

    location = /s3-default {
        @replay;
        replay_s3_key          games/2/replay.bin;
    }
--- request
GET /s3
--- error_code: 200
--- response_body
bucket=replays key=games/2/replay.bin
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/7/missing.bin"
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey
GET /replays/games/2/replay.bin



=== TEST 9: error_page without "=" into a replay location: the status stays, the body is the object, S3's headers are filtered
--- config
    location /static/ {
        error_page             404 /s3-default;
    }

    location = /s3-default {
        @replay;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /static/nothing-here
--- error_code: 404
--- response_body
bucket=replays key=games/1/replay.bin
--- response_headers
Content-Length: 38
!x-amz-request-id
!x-amz-id-2
--- error_log
No such file or directory
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 10: error_page "=" into a named location on a module error (an empty key)
--- config
    location /s3 {
        @replay;
        replay_s3_key          $arg_key;
        error_page             404 = @missing;
    }

    location @missing {
        return 200 "no such replay\n";
    }
--- request
GET /s3
--- error_code: 200
--- response_body
no such replay
--- error_log
replay: the object key is empty
--- s3_requests



=== TEST 11: post_action to a replay location with a lookup, under a memory budget for one request: both signed, no wait on itself
--- http_config
    replay_memory_budget  16k timeout=2s;
--- config
    replay_db  "$TEST_NGINX_PG_DSN";

    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;
        post_action            /after;
    }

    location = /after {
        @replay;
        replay_key_query       "SELECT replay_url FROM games WHERE id = $1::bigint"
                               2;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/1/replay.bin
--- wait: 0.5
--- no_error_log
no room in memory budget
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin



=== TEST 12: rewrite ... last into a replay location
--- config
    location /old/ {
        rewrite ^/old/(.+)$ /replays/$1 last;
    }

    location ~ ^/replays/(.+)$ {
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /old/games/2/replay.bin
--- response_body
bucket=replays key=games/2/replay.bin
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 13: try_files falls back to a named replay location
--- user_files
>>> files/local.txt
served from disk
--- config
    location /files/ {
        try_files  $uri @replay;
    }

    location @replay {
        @replay;
        replay_s3_key          games/8/notes.txt;
    }
--- request eval
["GET /files/local.txt", "GET /files/elsewhere.txt"]
--- response_body eval
["served from disk\n", "bucket=replays key=games/8/notes.txt\n"]
--- s3_requests
GET /replays/games/8/notes.txt



=== TEST 14: proxy_method in a replay location is refused by nginx -t
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/1/replay.bin;
        proxy_method           POST;
    }
--- must_die
--- error_log
"proxy_method" directive is duplicate



=== TEST 15: S3's response headers: only the object's description reaches the client
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 200 OK\r\n"
. "Content-Type: application/x-replay\r\n"
. "Content-Length: 5\r\n"
. "ETag: \"abc\"\r\n"
. "Last-Modified: Tue, 01 Sep 2026 10:00:00 GMT\r\n"
. "Cache-Control: max-age=60\r\n"
. "Expires: Tue, 01 Sep 2026 11:00:00 GMT\r\n"
. "Content-Language: en\r\n"
. "Content-Disposition: attachment; filename=\"a.bin\"\r\n"
. "Content-Disposition: attachment; filename=\"b.bin\"\r\n"
. "Set-Cookie: s3=1\r\n"
. "Location: http://elsewhere.example/\r\n"
. "Refresh: 0; url=http://elsewhere.example/\r\n"
. "WWW-Authenticate: Basic\r\n"
. "X-Amz-Meta-Owner: player-7\r\n"
. "x-amz-request-id: 4442587FB7D0A2F9\r\n"
. "X-Custom: yes\r\n"
. "\r\nhello"
--- request
GET /s3
--- response_body chomp
hello
--- response_headers
Content-Type: application/x-replay
ETag: "abc"
Last-Modified: Tue, 01 Sep 2026 10:00:00 GMT
Cache-Control: max-age=60
Expires: Tue, 01 Sep 2026 11:00:00 GMT
Content-Language: en
Content-Disposition: attachment; filename="a.bin"
!Set-Cookie
!Location
!Refresh
!WWW-Authenticate
!X-Amz-Meta-Owner
!x-amz-request-id
!X-Custom
--- raw_response_headers_unlike: b\.bin
--- s3_requests



=== TEST 16: a redirect from S3 is never followed nor passed on: 502, logged with its Location
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 301 Moved Permanently\r\nLocation: http://elsewhere.example/x\r\nContent-Length: 0\r\n\r\n"
--- request
GET /s3
--- error_code: 502
--- response_headers
!Location
--- error_log
replay: S3 answered 301 with Location "http://elsewhere.example/x" for key "games/1/replay.bin", not followed
--- s3_requests



=== TEST 17: S3's error code and the key are escaped in the log: no forged line
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          "games/1/ev\"il.bin";
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = "<Error><Code>Bad\r\n2026/01/01 00:00:00 [notice] 1#1: forged</Code></Error>";
"HTTP/1.1 403 Forbidden\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request
GET /s3
--- error_code: 502
--- error_log
replay: S3 answered 403 Bad\x0D\x0A2026/01/01 00:00:00 [notice] 1#1: forged for key "games/1/ev\x22il.bin"
--- no_error_log eval
qr/^2026\/01\/01 00:00:00/
--- s3_requests



=== TEST 18: a 416 from S3 keeps its Content-Range, nothing else of S3's
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = "<Error><Code>InvalidRange</Code></Error>";
"HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Range: bytes */38\r\nx-amz-request-id: 1\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request
GET /s3
--- more_headers
Range: bytes=100-200
--- error_code: 416
--- response_headers
Content-Range: bytes */38
!x-amz-request-id
--- error_log
replay: S3 answered 416 InvalidRange for key "games/1/replay.bin"
--- s3_requests



=== TEST 19: an upstream block as the endpoint, a name no DNS knows, with keepalive
--- http_config
    upstream s3.replay-test.amazonaws.com {
        server     127.0.0.1:$TEST_NGINX_S3_PORT;
        keepalive  4;
    }
--- config
    location /s3 {
        replay_s3_endpoint     http://s3.replay-test.amazonaws.com;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_set_header       Connection "";
    }
--- request eval
["GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n", "bucket=replays key=games/1/replay.bin\n"]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 20: virtual-host addressing against a real endpoint name: Host names the bucket
--- http_config
    upstream s3.replay-test.amazonaws.com {
        server     127.0.0.1:$TEST_NGINX_S3_PORT;
    }
--- config
    location /s3 {
        replay_s3_endpoint     http://s3.replay-test.amazonaws.com;
        replay_s3_bucket       other;
        replay_s3_addressing   virtual;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=other key=games/1/replay.bin
--- s3_requests
GET /games/1/replay.bin



=== TEST 21: TLS to S3, verified against the CA given, SNI and Host the endpoint's name
--- timeout: 10
--- http_config
    @tls_s3;
--- config
    location /s3 {
        replay_s3_endpoint     https://s3.replay-test.amazonaws.com
                               ssl_trusted_certificate=$TEST_NGINX_TLS_DIR/ca.crt;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 22: TLS to S3 in virtual-host style: the bucket's name is verified and sent as SNI
--- timeout: 10
--- http_config
    @tls_s3;
--- config
    location /s3 {
        replay_s3_endpoint     https://s3.replay-test.amazonaws.com
                               ssl_trusted_certificate=$TEST_NGINX_TLS_DIR/ca.crt;
        replay_s3_bucket       other;
        replay_s3_addressing   virtual;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=other key=games/1/replay.bin
--- s3_requests
GET /games/1/replay.bin



=== TEST 23: TLS to S3 is verified by default: a certificate the system does not trust is a 502
--- timeout: 10
--- http_config
    @tls_s3;
--- config
    location /s3 {
        replay_s3_endpoint     https://s3.replay-test.amazonaws.com;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- error_log eval
qr/upstream SSL certificate verify error: \(\d+:unable to (?:get local issuer|verify the first) certificate\)/
--- s3_requests



=== TEST 24: TLS to S3 against another CA: refused
--- timeout: 10
--- http_config
    @tls_s3;
--- config
    location /s3 {
        replay_s3_endpoint     https://s3.replay-test.amazonaws.com
                               ssl_trusted_certificate=$TEST_NGINX_TLS_DIR/other-ca.crt;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- error_code: 502
--- error_log eval
qr/upstream SSL certificate verify error/
--- s3_requests



=== TEST 25: ssl_verify=off for a private endpoint
--- timeout: 10
--- http_config
    @tls_s3;
--- config
    location /s3 {
        replay_s3_endpoint     https://s3.replay-test.amazonaws.com ssl_verify=off;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/1/replay.bin
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 26: HTTP/2 over TLS: GET, a range and HEAD
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl http2;
        ssl_certificate      $TEST_NGINX_TLS_DIR/server.crt;
        ssl_certificate_key  $TEST_NGINX_TLS_DIR/server.key;

        location /s3 {
            replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
            replay_s3_bucket       replays;
            replay_s3_credentials  env;
            replay_s3_key          big/1mib.bin;
        }
    }
--- config
    location = /t {
        return 200 "plain\n";
    }
--- request
GET /t
--- response_body
plain
--- curl eval
[['--http2 --cacert $TEST_NGINX_TLS_DIR/ca.crt https://localhost:$TEST_NGINX_RAND_PORT_2/s3',
  "2 200", ReplayTest::fixture('big/1mib.bin'), qr/^content-length: 1048576\r?$/mi],
 ['--http2 --cacert $TEST_NGINX_TLS_DIR/ca.crt -r 1000-1009 https://localhost:$TEST_NGINX_RAND_PORT_2/s3',
  "2 206", substr(ReplayTest::fixture('big/1mib.bin'), 1000, 10),
  qr{^content-range: bytes 1000-1009/1048576\r?$}mi],
 ['--http2 --cacert $TEST_NGINX_TLS_DIR/ca.crt -I https://localhost:$TEST_NGINX_RAND_PORT_2/s3',
  "2 200", qr/\AHTTP\/2 200 \r\n(?:[^\r\n]+\r\n)+\r\n\z/,
  qr/^content-length: 1048576\r?$/mi]]
--- s3_requests
GET /replays/big/1mib.bin
GET /replays/big/1mib.bin Range: bytes=1000-1009
HEAD /replays/big/1mib.bin



=== TEST 27: SSI include virtual: each object in its place, S3's 404 mapped and logged, no XML
--- user_files
>>> page.html
A<!--# include virtual="/s3/games/1/replay.bin" -->B<!--# include virtual="/s3/games/7/missing.bin" -->C
--- config
    location = /page.html {
        ssi  on;
    }

    location ~ ^/s3/(.+)$ {
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /page.html
--- response_body_like chomp
\AAbucket=replays key=games/1/replay\.bin\nB<html>\r?\n<head><title>404 Not Found</title></head>(?:(?!<Error>).)*</html>\r?\nC\n\z
--- error_log eval
qr/replay: S3 answered 404 NoSuchKey for key "games\/7\/missing\.bin" while reading response header from upstream, .*subrequest: "\/s3\/games\/7\/missing\.bin"/
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/7/missing.bin -> 404 NoSuchKey



=== TEST 28: SSI include of the 50 MiB object streams unbuffered: byte for byte, no temporary file even for a slow client
--- user_files
>>> big.html
A<!--# include virtual="/s3/big/50mib.bin" -->B
--- config
    location = /big.html {
        ssi  on;
    }

    location ~ ^/s3/(.+)$ {
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /big.html
--- timeout: 60
--- response_body eval
"A" . ReplayTest::fixture('big/50mib.bin') . "B\n"
--- after_request eval
[sub {
    my ($block) = @_;
    # a client that takes nothing for a second: buffered, nginx would
    # spill S3's body into a temporary file meanwhile
    my ($s) = ReplayTest::open_request('/big.html');
    Time::HiRes::sleep(1);
    my ($head, $body) = ReplayTest::read_response($s, 60);
    close $s;
    Test::More::ok($body eq "A" . ReplayTest::fixture('big/50mib.bin') . "B\n",
                   $block->name . ' - the slow client gets every byte');
}]
--- no_error_log
buffered to a temporary file
--- s3_requests
GET /replays/big/50mib.bin
GET /replays/big/50mib.bin



=== TEST 29: auth_request to a replay location: an object that exists grants access
--- user_files
>>> private.txt
granted
--- config
    location = /private.txt {
        auth_request  /check/games/1/replay.bin;
    }

    location ~ ^/check/(.+)$ {
        internal;
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /private.txt
--- response_body
granted
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 30: auth_request to a replay location: S3's 404 is logged and mapped, never its body
--- user_files
>>> private.txt
granted
--- config
    location = /private.txt {
        auth_request  /check/games/7/missing.bin;
    }

    location ~ ^/check/(.+)$ {
        internal;
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /private.txt
--- error_code: 500
--- response_body_unlike: <Error>
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/7/missing.bin"
auth request unexpected status: 404
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey



=== TEST 31: mirror to a replay location: the mirror's request is signed, the client's response unchanged
--- user_files
>>> mirrored.txt
the original
--- config
    location = /mirrored.txt {
        mirror  /m/games/2/replay.bin;
    }

    location ~ ^/m/(.+)$ {
        internal;
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /mirrored.txt
--- response_body
the original
--- wait: 0.5
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 32: mirror to a replay location: S3's error is mapped and logged under the mirror's subrequest
--- user_files
>>> mirrored.txt
the original
--- config
    location = /mirrored.txt {
        mirror  /m/games/7/missing.bin;
    }

    location ~ ^/m/(.+)$ {
        internal;
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /mirrored.txt
--- response_body
the original
--- wait: 0.5
--- error_log eval
qr/replay: S3 answered 404 NoSuchKey for key "games\/7\/missing\.bin" .*subrequest: "\/m\/games\/7\/missing\.bin"/
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey



=== TEST 33: proxy_cache: HEAD is fetched as a signed GET and cached; HEAD, GET and a range hit; S3 away, still served
(the cache is kept apart from the server root, which nginx may still be
writing into when the next block removes it)
--- http_config
    proxy_cache_path  $TEST_NGINX_SERVICES_DIR/cache-080-32 keys_zone=replays:1m;
--- config
    location ~ ^/c/(.+)$ {
        @replay;
        replay_s3_key          $1;
        proxy_cache            replays;
        proxy_cache_valid      200 10m;
        add_header             X-Cache $upstream_cache_status always;
    }
--- request eval
["HEAD /c/games/1/replay.bin", "HEAD /c/games/1/replay.bin",
 "GET /c/games/1/replay.bin", "GET /c/games/1/replay.bin",
 "GET /c/games/1/replay.bin"]
--- more_headers eval
["", "", "", "Range: bytes=0-5", ""]
--- error_code eval
[200, 200, 200, 206, 200]
--- response_headers eval
["X-Cache: MISS\nContent-Length: 38", "X-Cache: HIT\nContent-Length: 38",
 "X-Cache: HIT", "X-Cache: HIT\nContent-Range: bytes 0-5/38", "X-Cache: HIT"]
--- response_body eval
["", "", "bucket=replays key=games/1/replay.bin\n", "bucket",
 "bucket=replays key=games/1/replay.bin\n"]
--- after_request eval
[undef, undef, undef, sub { ReplayTest::s3ctl('stop') },
 sub { ReplayTest::s3ctl('start') }]
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 34: proxy_cache keys name the object: the same URI for other keys, and two buckets in virtual-host style, never mixed
--- http_config
    proxy_cache_path  $TEST_NGINX_SERVICES_DIR/cache-080-33 keys_zone=replays:1m;

    upstream s3.replay-test.amazonaws.com {
        server  127.0.0.1:$TEST_NGINX_S3_PORT;
    }
--- config
    proxy_cache        replays;
    proxy_cache_valid  200 10m;

    location = /by-header {
        @replay;
        replay_s3_key          $http_x_key;
    }

    location ~ ^/vr/(.+)$ {
        replay_s3_endpoint     http://s3.replay-test.amazonaws.com;
        replay_s3_bucket       replays;
        replay_s3_addressing   virtual;
        replay_s3_credentials  env;
        replay_s3_key          $1;
    }

    location ~ ^/vo/(.+)$ {
        replay_s3_endpoint     http://s3.replay-test.amazonaws.com;
        replay_s3_bucket       other;
        replay_s3_addressing   virtual;
        replay_s3_credentials  env;
        replay_s3_key          $1;
    }
--- request eval
["GET /by-header", "GET /by-header", "GET /vr/games/1/replay.bin",
 "GET /vo/games/1/replay.bin", "GET /vr/games/1/replay.bin",
 "GET /vo/games/1/replay.bin"]
--- more_headers eval
["X-Key: games/1/replay.bin", "X-Key: games/2/replay.bin", "", "", "", ""]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/2/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n",
 "bucket=other key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n",
 "bucket=other key=games/1/replay.bin\n"]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
GET /games/1/replay.bin
GET /games/1/replay.bin



=== TEST 35: replay_memory_budget: one reservation per request, so an error_page into another replay location does not wait for itself
--- http_config
    replay_memory_budget  16k timeout=2s;
--- config
    location /s3 {
        @replay;
        replay_s3_key          games/7/missing.bin;
        error_page             404 = /s3-default;
    }

    location = /s3-default {
        @replay;
        replay_s3_key          games/2/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/2/replay.bin
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/7/missing.bin"
--- no_error_log
no room in memory budget
--- s3_requests
GET /replays/games/7/missing.bin -> 404 NoSuchKey
GET /replays/games/2/replay.bin



=== TEST 36: replay_memory_budget: SSI subrequests share their request's reservation
--- http_config
    replay_memory_budget  16k timeout=2s;
--- user_files
>>> page.html
<!--# include virtual="/s3/games/1/replay.bin" --><!--# include virtual="/s3/games/2/replay.bin" -->
--- config
    location = /page.html {
        ssi  on;
    }

    location ~ ^/s3/(.+)$ {
        @replay;
        replay_s3_key          $1;
    }
--- request
GET /page.html
--- response_body eval
"bucket=replays key=games/1/replay.bin\nbucket=replays key=games/2/replay.bin\n\n"
--- no_error_log
no room in memory budget
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin



=== TEST 37: replay_memory_budget: a waiting request at the head of the queue that leaves lets the next one in at once
(A holds a reservation while its S3 stalls; B, too big to fit beside it,
waits at the head; C, small, waits behind B; B's client leaves: C must be
served now, not when A ends or the wait times out)
--- http_config
    replay_memory_budget  600k timeout=5s;
--- config
    replay_buffering  on;
    proxy_buffers     8 64k;

    location = /a {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /b {
        @replay;
        replay_s3_key          games/1/replay.bin;
    }

    location = /c {
        @replay;
        replay_s3_key          games/2/replay.bin;
        replay_buffering       off;
        proxy_buffers          8 4k;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_no_close
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nfirst-half"
--- request
GET /c
--- response_body
bucket=replays key=games/2/replay.bin
--- after_request eval
[sub {
    my ($block) = @_;
    my @a = ReplayTest::open_request('/a');
    Time::HiRes::sleep(0.3);
    my @b = ReplayTest::open_request('/b');
    Time::HiRes::sleep(0.3);
    my @c = ReplayTest::open_request('/c');
    Time::HiRes::sleep(0.3);
    close $b[0];
    my $t0 = Time::HiRes::time();
    my ($head, $body) = ReplayTest::read_response($c[0], 4);
    my $took = Time::HiRes::time() - $t0;
    close $a[0];
    Test::More::like($head, qr{\AHTTP/1\.\d 200 }, $block->name . ' - C is served');
    Test::More::is($body, "bucket=replays key=games/2/replay.bin\n",
                   $block->name . ' - C gets its object');
    Test::More::cmp_ok($took, '<', 2, $block->name . ' - C goes on as B leaves');
}]
--- error_log eval
qr/client prematurely closed connection while waiting for the memory budget, .* request: "GET \/b HTTP\/1\.0"/
--- s3_requests
GET /replays/games/2/replay.bin
GET /replays/games/2/replay.bin



=== TEST 38: a client that closes with its request is let go at once, its lookup still running
--- http_config
    log_format  t080  '$request_uri $status';
--- config
    replay_db  "$TEST_NGINX_PG_DSN" pool=2 query_timeout=10s;

    location = /slow {
        access_log  logs/t080.log t080;
        @replay;
        replay_key_query  "SELECT 'games/1/replay.bin'::text FROM pg_sleep(3)
                           WHERE $1 <> ''" $arg_v;
    }

    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- after_request eval
[sub {
    my ($block) = @_;
    my ($s) = ReplayTest::open_request('/slow?v=1');
    shutdown $s, 1;
    my $seen = ReplayTest::wait_for_line('logs/t080.log',
                                         qr{^/slow\?v=1 499$}, 1.5);
    close $s;
    Test::More::ok($seen, $block->name . ' - 499 logged before the query ends');
}]
--- error_log
client prematurely closed connection while looking up the replay key
--- s3_requests



=== TEST 39: a client that closes during the lookup is let go at once
--- http_config
    log_format  t080  '$request_uri $status';
--- config
    replay_db  "$TEST_NGINX_PG_DSN" pool=2 query_timeout=10s;

    location = /slow {
        access_log  logs/t080.log t080;
        @replay;
        replay_key_query  "SELECT 'games/1/replay.bin'::text FROM pg_sleep(3)
                           WHERE $1 <> ''" $arg_v;
    }

    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- after_request eval
[sub {
    my ($block) = @_;
    my ($s) = ReplayTest::open_request('/slow?v=2');
    Time::HiRes::sleep(0.3);
    close $s;
    my $seen = ReplayTest::wait_for_line('logs/t080.log',
                                         qr{^/slow\?v=2 499$}, 1.5);
    Test::More::ok($seen, $block->name . ' - 499 logged before the query ends');
}]
--- error_log
client prematurely closed connection while looking up the replay key
--- s3_requests



=== TEST 40: a key from the database longer than S3 allows is the server's error: 500, logged
--- config
    replay_db  "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(\d+)$ {
        @replay;
        replay_key_query  "SELECT replay_url FROM games WHERE id = $1::bigint" $1;
    }
--- request
GET /game/15
--- error_code: 500
--- error_log
replay: the object key from the database is 1025 bytes long, S3 allows 1024
--- s3_requests



=== TEST 41: a key from the database with CR, LF and quotes is escaped in the log: no line forged
--- init
ReplayTest::psql("DELETE FROM games WHERE id = 9080; INSERT INTO games (id, tournament_id, game_folder, replay_url, note) VALUES (9080, 90, 'x', 'games/none' || chr(13) || chr(10) || '2026/01/01 00:00:00 [notice] 1#1: ' || chr(34) || 'forged', 't/080-configs.t')");
--- config
    replay_db  "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(\d+)$ {
        @replay;
        replay_key_query  "SELECT replay_url FROM games WHERE id = $1::bigint" $1;
    }
--- request
GET /game/9080
--- error_code: 404
--- error_log
replay: S3 answered 404 NoSuchKey for key "games/none\x0D\x0A2026/01/01 00:00:00 [notice] 1#1: \x22forged"
--- no_error_log eval
qr/^2026\/01\/01 00:00:00/
--- s3_requests
GET /replays/games/none%0D%0A2026/01/01%2000%3A00%3A00%20%5Bnotice%5D%201%231%3A%20%22forged -> 404 NoSuchKey



=== TEST 42: a file name from the database: exactly one Content-Disposition, the row's
--- config
    replay_db  "$TEST_NGINX_PG_DSN";

    location = /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_key_query       "SELECT 'games/1/replay.bin'::text, NULL::text,
                                       'game one.replay'::text
                                WHERE $1 <> ''" $arg_v;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Disposition: inline\r\n\r\nhello"
--- request
GET /s3?v=1
--- response_body chomp
hello
--- response_headers
Content-Disposition: attachment; filename="game one.replay"; filename*=UTF-8''game%20one.replay
--- raw_response_headers_unlike: inline
--- s3_requests



=== TEST 43: at debug level, neither the secret nor the session token reaches the log
--- user_files
>>> token.creds
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
aws_session_token = FQoGZXIvYXdzEXAMPLESESSIONTOKENt080secret
--- log_level: debug
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/token.creds;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body
bucket=replays key=games/1/replay.bin
--- error_log
replay: no debug log while the proxy builds the S3 request
--- no_error_log
FQoGZXIvYXdzEXAMPLESESSIONTOKEN
wJalrXUtnFEMI
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 44: redirect mode refuses the same keys: a ".." segment is a 404, no URL presigned
--- config
    location /link {
        @replay;
        replay_s3_key          $http_x_key;
        replay_redirect        on;
    }
--- request
GET /link
--- more_headers
X-Key: games/1/../../other/secret.txt
--- error_code: 404
--- response_headers
!Location
--- error_log
replay: the object key "games/1/../../other/secret.txt" has an empty, "." or ".." segment
--- s3_requests



=== TEST 45: redirect mode: a leading "/" (an empty segment) is a 404 too
--- config
    location /link {
        @replay;
        replay_s3_key          $http_x_key;
        replay_redirect        on;
    }
--- request
GET /link
--- more_headers
X-Key: /other/secret.txt
--- error_code: 404
--- response_headers
!Location
--- error_log
replay: the object key "/other/secret.txt" has an empty, "." or ".." segment
--- s3_requests



=== TEST 46: keepalive to S3 by default: the requests of a worker share one connection
--- http_config
    log_format  front  '$connection $connection_requests $request_uri';

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        access_log  logs/front.log front;

        location / {
            proxy_pass        $TEST_NGINX_S3_ENDPOINT;
            proxy_set_header  Host $http_host;
        }
    }
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request eval
["GET /s3", "GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n"]
--- after_request eval
[undef, undef, sub {
    my ($block) = @_;
    my @c = ReplayTest::log_column('logs/front.log', 0);
    Test::More::is(scalar(@c), 3, $block->name . ' - S3 saw 3 requests');
    Test::More::is(scalar(keys %{{ map { $_ => 1 } @c }}), 1,
                   $block->name . ' - on one connection');
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 47: keepalive=0: a connection per request
--- http_config
    log_format  front  '$connection $connection_requests $request_uri';

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        access_log  logs/front.log front;

        location / {
            proxy_pass        $TEST_NGINX_S3_ENDPOINT;
            proxy_set_header  Host $http_host;
        }
    }
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1
                               keepalive=0;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request eval
["GET /s3", "GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n"]
--- after_request eval
[undef, undef, sub {
    my ($block) = @_;
    my @c = ReplayTest::log_column('logs/front.log', 0);
    Test::More::is(scalar(@c), 3, $block->name . ' - S3 saw 3 requests');
    Test::More::is(scalar(keys %{{ map { $_ => 1 } @c }}), 3,
                   $block->name . ' - on three connections');
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 48: keepalive by default over TLS too: one handshake for all the requests of a worker
--- timeout: 10
--- http_config
    log_format  front  '$connection $connection_requests $ssl_session_reused';

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate      $TEST_NGINX_TLS_DIR/server.crt;
        ssl_certificate_key  $TEST_NGINX_TLS_DIR/server.key;
        access_log  logs/front.log front;

        location / {
            proxy_pass        $TEST_NGINX_S3_ENDPOINT;
            proxy_set_header  Host $http_host;
        }
    }
--- config
    location /s3 {
        replay_s3_endpoint     https://127.0.0.1:$TEST_NGINX_RAND_PORT_1
                               ssl_verify=off;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request eval
["GET /s3", "GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n"]
--- after_request eval
[undef, undef, sub {
    my ($block) = @_;
    my @c = ReplayTest::log_column('logs/front.log', 0);
    Test::More::is(scalar(@c), 3, $block->name . ' - S3 saw 3 requests');
    Test::More::is(scalar(keys %{{ map { $_ => 1 } @c }}), 1,
                   $block->name . ' - on one TLS connection');
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 49: a host name with a resolver: resolved by nginx's resolver when requests need it, again once its answer has expired
--- config
    resolver  127.0.0.1:$TEST_NGINX_DNS_SLOW_PORT valid=1s ipv6=off;

    location /s3 {
        replay_s3_endpoint     http://s3.replay-test.amazonaws.com:$TEST_NGINX_S3_PORT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request eval
["GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n"]
--- after_request eval
[sub {
    my ($block) = @_;
    $main::asked = ReplayTest::dns_queries('s3.replay-test.amazonaws.com');
    Test::More::cmp_ok($main::asked, '>=', 1,
                       $block->name . ' - the name was asked at run time');
    Time::HiRes::sleep(2.1);
}, sub {
    my ($block) = @_;
    Test::More::cmp_ok(ReplayTest::dns_queries('s3.replay-test.amazonaws.com'),
                       '>', $main::asked,
                       $block->name . ' - and asked again after 1 s');
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 50: a resolver written after replay_s3_endpoint is refused: the name was resolved at startup
--- config
    location /s3 {
        replay_s3_endpoint     http://localhost:$TEST_NGINX_S3_PORT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        resolver               127.0.0.1:$TEST_NGINX_DNS_PORT;
    }
--- must_die
--- error_log
location "/s3" has a resolver, but replay_s3_endpoint "http://localhost:
put "resolver" before replay_s3_endpoint



=== TEST 51: a name neither DNS nor an upstream block knows is refused at startup
--- config
    location /s3 {
        replay_s3_endpoint     http://no-such-host.replay.invalid;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log
host not found in upstream "no-such-host.replay.invalid"
