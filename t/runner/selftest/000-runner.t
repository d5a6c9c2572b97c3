# Self-test of the minimal Test::Nginx::Socket under t/runner, against the
# stock nginx.  It is written to pass unchanged under the real Test::Nginx
# too (checked with 0.33).  Real versions older than that do not start
# nginx with "-e <servroot>/logs/error.log", so there the error_log checks
# of the must_die blocks (TEST 10, 11, 27) need an nginx that writes its
# startup errors to <prefix>/logs/error.log, which Debian's does not (it
# is built with --error-log-path=stderr).  Run
# from the top of the repository:
#
#   PERL5LIB=t/runner prove -v t/runner/selftest/

use Test::Nginx::Socket 'no_plan';

# the embedded backend of --- tcp_listen (a fixed port, as tcp_query
# below, which is not expanded, names it)
$ENV{TEST_NGINX_BACKEND_PORT} = 19851;

# a default request for blocks without one
add_block_preprocessor(sub {
    my $block = shift;
    if (!defined $block->request && !defined $block->raw_request
        && !defined $block->pipelined_requests)
    {
        $block->set_value("request", "GET /t");
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: hello
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello
--- no_error_log
[error]



=== TEST 2: default request from the preprocessor, one-line sections
--- config
    location = /t {
        return 200 "uri=$uri args=$args method=$request_method";
    }
--- error_code: 200
--- response_body chomp
uri=/t args= method=GET



=== TEST 3: echo of the request: args, more_headers, body length
--- config
    location = /t {
        return 200 "args=$args x-foo=$http_x_foo len=$http_content_length conn=$http_connection host=$http_host\n";
    }
--- more_headers
X-Foo: bar baz
--- request
POST /t?a=1&b=2
hello world
--- response_body
args=a=1&b=2 x-foo=bar baz len=11 conn=close host=localhost



=== TEST 4: 404 from the default root location
--- config
--- request
GET /nope.html
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log eval
[qr/open\(\) ".*nope\.html" failed/, "No such file or directory"]
--- no_error_log
[alert]
[crit]



=== TEST 5: the default index page
--- config
--- request
GET /
--- response_body_like: ^<html><head><title>It works!</title></head>
--- response_headers
Content-Type: text/html



=== TEST 6: response headers: values and absence
--- config
    location = /t {
        add_header X-A "1";
        add_header X-Port "$server_port";
        return 200 "ok\n";
    }
--- response_headers
X-A: 1
X-Port: $ServerPort
Content-Type: text/plain
Content-Length: 3
!X-Missing
--- response_body
ok



=== TEST 7: response_headers_like
--- config
    location = /t {
        add_header X-Time "t$msec";
        return 204;
    }
--- error_code: 204
--- response_headers_like
Server: nginx(/[\d.]+)?
X-Time: t\d+\.\d{3}
--- response_body



=== TEST 8: response_body_unlike, and response_body eval
--- config
    location = /t {
        return 200 "a\tb\0c";
    }
--- response_body_unlike: ^hello
--- response_body eval
"a\tb\\0c"



=== TEST 9: the error log, with strings and a regex
--- config
    location = /t {
        return 301 /elsewhere;
    }
--- error_code: 301
--- response_headers
Location: http://localhost:$ServerPort/elsewhere
--- error_log
http finalize request
--- no_error_log eval
[qr/\[(?:error|alert|crit|emerg)\]/, "no such line will ever be logged"]



=== TEST 10: must_die on a bad directive
--- config
    location = /t {
        return a b c;
    }
--- must_die
--- error_log
invalid number of arguments in "return" directive



=== TEST 11: must_die with the exit code
--- config
    location = /t {
        no_such_directive_here on;
    }
--- must_die: 1
--- error_log
unknown directive "no_such_directive_here"



=== TEST 12: an embedded TCP backend behind proxy_pass
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_BACKEND_PORT/backend;
    }
--- tcp_listen: 19851
--- tcp_query eval
"GET /backend HTTP/1.0\r
Host: 127.0.0.1:19851\r
Connection: close\r
\r
"
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nContent-Length: 6\r\nX-Backend: yes\r\n\r\nhello\n"
--- response_headers
X-Backend: yes
--- response_body
hello



=== TEST 13: a backend reply sent in pieces, after a delay
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_BACKEND_PORT;
    }
--- tcp_listen: 19851
--- tcp_query_len: 61
--- tcp_reply_delay: 300ms
--- tcp_reply eval
["HTTP/1.1 200 OK\r\n", "Content-Length: 11\r\n\r\n", "hello", " world"]
--- response_body chomp
hello world



=== TEST 14: a backend that stalls: upstream timeout
--- config
    location = /t {
        proxy_read_timeout 300ms;
        proxy_pass http://127.0.0.1:$TEST_NGINX_BACKEND_PORT;
    }
--- tcp_listen: 19851
--- tcp_reply:
--- tcp_no_close
--- error_code: 504
--- error_log
upstream timed out



=== TEST 15: a backend that closes early: the client sees a short body
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_BACKEND_PORT;
    }
--- tcp_listen: 19851
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"
--- response_body: hello
--- error_log
upstream prematurely closed connection



=== TEST 16: user files
--- config
    location /files/ {
        alias html/;
    }
--- user_files
>>> a.txt
Hello, a!
>>> sub/b.txt
Hello, b!
--- request eval
["GET /files/a.txt", "GET /files/sub/b.txt"]
--- response_body eval
["Hello, a!\n", "Hello, b!\n"]



=== TEST 17: several requests, one connection each
--- config
    location = /t {
        return 200 "t\n";
    }
--- request eval
["GET /t", "GET /missing", "HEAD /t"]
--- error_code eval
[200, 404, 200]
--- response_body eval
["t\n", qr/404 Not Found/, ""]



=== TEST 18: pipelined requests
--- config
    location = /t {
        return 200 "t=$arg_n\n";
    }
--- pipelined_requests eval
["GET /t?n=1", "GET /t?n=2"]
--- response_body eval
["t=1\n", "t=2\n"]



=== TEST 19: a request body sent in two packets
--- config
    location = /t {
        return 200 "len=$http_content_length\n";
    }
--- request eval
[["POST /t\nhel", {value => "lo", delay_before => 0.2}]]
--- response_body
len=5



=== TEST 20: a raw request
--- config
    location = /t {
        return 200 "proto=$server_protocol host=$host\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: example.com\r\n\r\n"
--- response_body
proto=HTTP/1.0 host=example.com



=== TEST 21: a 50 MiB static file
--- config
--- init
my $f = "$Test::Nginx::Util::HtmlDir/big.bin";
open my $out, '>', $f or die "$f: $!";
print $out "0123456789abcdef" x (50 * 1024 * 64);
close $out;
--- request
GET /big.bin
--- response_headers
Content-Length: 52428800
--- response_body_filters
length
--- response_body: 52428800
--- timeout: 20



=== TEST 22: a 50 MiB chunked body
--- config
    location /c/ {
        alias html/;
        sub_filter_types *;
        sub_filter 'never-there' 'x';
        sub_filter_once off;
    }
--- init
my $f = "$Test::Nginx::Util::HtmlDir/big.bin";
open my $out, '>', $f or die "$f: $!";
print $out "0123456789abcdef" x (50 * 1024 * 64);
close $out;
--- request
GET /c/big.bin
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body_filters
md5_hex
--- response_body eval
use Digest::MD5 ();
Digest::MD5::md5_hex("0123456789abcdef" x (50 * 1024 * 64))
--- timeout: 20



=== TEST 23: environment expansion in the configuration
--- config
    location = /t {
        return 200 "$TEST_NGINX_SERVER_ROOT $TEST_NGINX_SERVER_PORT\n";
    }
--- response_body eval
"$Test::Nginx::Util::ServRoot $Test::Nginx::Util::ServerPort\n"



=== TEST 24: http_config and main_config
--- main_config
env TEST_NGINX_SELFTEST_MAIN=on;
--- http_config
    map $arg_x $mapped {
        default "none";
        1       "one";
    }
--- config
    location = /t {
        return 200 "$mapped\n";
    }
--- request
GET /t?x=1
--- response_body
one



=== TEST 25: $TEST_NGINX_RAND_PORT_N in tcp_listen and in the config
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
--- response_body
ok



=== TEST 26: $TEST_NGINX_XXX in response_body is expanded too
--- config
    location = /t {
        return 200 "port $TEST_NGINX_SERVER_PORT\n";
    }
--- response_body
port $TEST_NGINX_SERVER_PORT



=== TEST 27: the test case config starts on line 39 of nginx.conf
--- config
    no_such_directive_either;
--- must_die
--- error_log eval
qr/unknown directive "no_such_directive_either" in \S+nginx\.conf:39$/
