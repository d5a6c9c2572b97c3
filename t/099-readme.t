# What a new user meets first: README.md's configuration, read from
# README.md itself and run as written (only the S3 endpoint, the database,
# the region and the credentials are the suite's); and what the docs say
# about slow clients and limit_rate.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use Socket ();
use Time::HiRes ();

# README.md's ```nginx block: the http-level directives before "server {",
# and the server's locations
our ($readme_http, $readme_locations) = do {
    open my $h, '<', 'README.md' or die "README.md: $!";
    my ($conf) = join('', <$h>) =~ /^```nginx\n(.*?)^```$/ms
        or die "no ```nginx block in README.md";
    my ($http, $server) = $conf =~ /^http \{\n(.*?)^    server \{\n(.*)^    \}\n^\}/ms
        or die "README.md's configuration is not http { ... server { ... } }";
    $server =~ s/^\s*listen\s[^;]*;\n//m;

    for ($http, $server) {
        s{https://s3\.eu-west-1\.amazonaws\.com}{\$TEST_NGINX_S3_ENDPOINT}g;
        s{replay_db\s+"[^"]*"}{replay_db "\$TEST_NGINX_PG_DSN"};
        s{replay_s3_region\s+\S+;}{replay_s3_region \$TEST_NGINX_S3_REGION;};
        s{replay_s3_credentials\s+\S+;}{replay_s3_credentials env;};
    }

    ($http, $server);
};

no_shuffle();
run_tests();

__DATA__



=== TEST 1: README's configuration: a replay by its id
--- http_config eval: $main::readme_http
--- config eval: $main::readme_locations
--- request
GET /game/1/replay
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- no_error_log
[error]
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 2: ... an id that is not a bigint is 400, logged at info
--- http_config eval: $main::readme_http
--- config eval: $main::readme_locations
--- request
GET /game/abc/replay
--- error_code: 400
--- error_log eval
qr/\[info\] .*replay: the database rejected a parameter: .*invalid input syntax for type bigint/
--- no_error_log
[error]
--- no_s3_request



=== TEST 3: ... so is one out of a bigint's range
--- http_config eval: $main::readme_http
--- config eval: $main::readme_locations
--- request
GET /game/99999999999999999999/replay
--- error_code: 400
--- error_log eval
qr/\[info\] .*replay: the database rejected a parameter: .*out of range for type bigint/
--- no_error_log
[error]
--- no_s3_request



=== TEST 4: ... an unknown id is 404
--- http_config eval: $main::readme_http
--- config eval: $main::readme_locations
--- request
GET /game/999999/replay
--- error_code: 404
--- error_log
replay: the key query returned no row
--- no_error_log
[error]
--- no_s3_request



=== TEST 5: replay_buffering on: limit_rate paces the client (1 MiB at 256 KiB/s takes 3 s or more)
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       big/1mib.bin;
        replay_buffering    on;
        limit_rate          256k;
    }

    location = /t {
        return 204;
    }
--- init
my $t = Time::HiRes::time();
my ($res) = ReplayTest::get_concurrently(['/s3']);
my $took = Time::HiRes::time() - $t;
Test::More::is($res->[0], 200, 'TEST 5: 200');
Test::More::ok($res->[2] eq ReplayTest::fixture('big/1mib.bin'), 'TEST 5: the whole object');
Test::More::cmp_ok($took, '>=', 3, 'TEST 5: limit_rate held it to 256 KiB/s');
--- request
GET /t
--- error_code: 204
--- no_error_log
[error]
--- s3_requests
GET /replays/big/1mib.bin



=== TEST 6: replay_buffering off (the default): nginx does not apply limit_rate (1 MiB at 8 KiB/s would take 128 s)
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       big/1mib.bin;
        limit_rate          8k;
    }
--- request
GET /s3
--- timeout: 30
--- response_body eval
ReplayTest::fixture('big/1mib.bin')
--- no_error_log
[error]
--- s3_requests
GET /replays/big/1mib.bin



=== TEST 7: send_timeout closes a client that stops reading (replay_buffering off)
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       big/50mib.bin;
        send_timeout        1s;
    }

    location = /t {
        return 204;
    }
--- init
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $Test::Nginx::Util::ServerPortForClient,
                                  Timeout => 10)
    or die "connect: $!";
# a small receive window, so that nginx's writes block soon
setsockopt($sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096);
print $sock "GET /s3 HTTP/1.1\r\nHost: localhost\r\n\r\n";
sysread $sock, my $head, 1024;
Test::More::like($head, qr{^HTTP/1\.1 200 }, 'TEST 7: the download starts');
# stop reading: nginx's send_timeout is 1 s
Time::HiRes::sleep(4);
close $sock;
--- request
GET /t
--- error_code: 204
--- error_log eval
qr/\[info\] .*client timed out \(110: Connection timed out\) while sending to client/
--- no_error_log
[error]
--- s3_requests
GET /replays/big/50mib.bin
