# Memory: what each request holds for the module, counted as it is
# allocated ($replay_memory, the debug log); replay_memory_limit, checked
# by nginx -t and, for what a database row brings, at run time;
# replay_memory_budget's queue; and a worker's resident memory while 50
# clients download 50 MiB each.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

# 50 clients at once, and their connections to S3
worker_connections(1024);

# checks of the logs, after the response, by block number
my %after = (
    1 => \&memory_adds_up,
    2 => \&memory_adds_up,
    3 => \&memory_adds_up,
    7 => sub {
        my @mem = logged_memory();
        Test::More::ok(@mem && $mem[-1] > 65536 && $mem[-1] <= 81920,
                       "TEST 7: \$replay_memory $mem[-1] is within 64k "
                       . "and replay_memory_limit 80k");
    },
);

# Under valgrind nginx is restarted for every block: a block without a
# configuration gets the previous block's, for an equal nginx.
my ($prev_config, $prev_http_config);

add_block_preprocessor(sub {
    my $block = shift;

    if (defined $block->config) {
        ($prev_config, $prev_http_config) = ($block->config,
                                             $block->http_config);

    } elsif ($ENV{TEST_NGINX_USE_VALGRIND}) {
        $block->set_value('config', $prev_config);
        $block->set_value('http_config', $prev_http_config);
    }
});

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated, $dry_run) = @_;

    my ($n) = $block->name =~ /\bTEST (\d+):/;
    return if $dry_run || !$after{$n};

    $after{$n}->($block);
});

no_shuffle();
run_tests();


sub log_file {
    my ($name) = @_;

    my $file = Test::Nginx::Util::server_root() . "/logs/$name";

    # the log phase ends before the client sees the connection close, but
    # give a slow (valgrind) nginx a moment
    for (1 .. 50) {
        last if -s $file;
        Time::HiRes::sleep(0.05);
    }

    open my $fh, '<', $file or die "$file: $!";
    my @lines = <$fh>;
    close $fh;

    return @lines;
}

# $replay_memory of each request, from an access log of "mem=N ..."
sub logged_memory {
    return map { /\bmem=(\d+)/ ? $1 : () } log_file('access.log');
}

# The block's one request: what was counted ("replay: memory +N for ...")
# adds up to the peak in the debug log and to $replay_memory.
sub memory_adds_up {
    my ($block) = @_;

    my ($sum, $peak) = (0, undef);

    for (log_file('error.log')) {
        $sum += $1 if /replay: memory \+(\d+) for /;
        $peak = $1 if /replay: request memory: (\d+) bytes at peak/;
    }

    my ($name) = $block->name =~ /\b(TEST \d+):/;
    my @mem = logged_memory();

    Test::More::is($peak, $sum, "$name: the peak is what was counted");
    Test::More::is($mem[-1], $sum, "$name: \$replay_memory is the peak");
}

# GET in a process of its own, left to run, once nginx has answered a
# first request (under valgrind it takes a while to start).
sub get_in_background {
    my ($path) = @_;

    ReplayTest::get_concurrently(['/hold?s=0']);

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        ReplayTest::get_concurrently([$path]);
        POSIX::_exit(0);
    }

    # let it reach nginx first
    Time::HiRes::sleep(0.2);
}

# Sends a GET and goes away after some seconds, without the response.
sub leave_after {
    my ($path, $secs) = @_;

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $Test::Nginx::Util::ServerPortForClient,
    ) or die "connect: $!";

    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    Time::HiRes::sleep($secs);
    close $sock;
}

# The resident memory of nginx (one process: master_process off), in KiB.
sub nginx_rss {
    my $pidfile = Test::Nginx::Util::server_root() . '/logs/nginx.pid';

    open my $fh, '<', $pidfile or die "$pidfile: $!";
    my $pid = <$fh>;
    close $fh;
    chomp $pid;

    open $fh, '<', "/proc/$pid/status" or die "/proc/$pid/status: $!";
    my ($rss) = map { /^VmRSS:\s+(\d+) kB/ ? $1 : () } <$fh>;
    close $fh;

    return $rss;
}


__DATA__

=== TEST 1: unbuffered: the context, key, S3 path, signature and one proxy buffer
--- http_config
    log_format  mem  'mem=$replay_memory';
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_buffer_size      64k;
        proxy_buffers          4 64k;
        access_log             logs/access.log mem;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: memory +18 for key
for S3 path
for Authorization
replay: memory +65536 for proxy buffers
--- no_error_log
for S3 error head
--- access_log eval
qr/^mem=\d+$/



=== TEST 2: buffered: proxy_buffers are counted whole, on top of proxy_buffer_size
--- http_config
    log_format  mem  'mem=$replay_memory';
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_buffering       on;
        proxy_buffer_size      64k;
        proxy_buffers          4 64k;
        access_log             logs/access.log mem;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: memory +327680 for proxy buffers



=== TEST 3: a key query: its parameters, the row's copies, Content-Disposition
--- http_config
    log_format  mem  'mem=$replay_memory db=$replay_db_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url, content_type, file_name
                             FROM games WHERE id::text = $1" $1;
        access_log          logs/access.log mem;
    }
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- response_headers
Content-Disposition: attachment; filename="game-1.replay"; filename*=UTF-8''game-1.replay
--- error_log eval
[
    "for database request",
    # the query's 16-byte identity, then "1" and its NUL
    "replay: memory +18 for query parameters",
    "replay: memory +18 for database row",
    "replay: memory +24 for database row",
    "replay: memory +13 for database row",
    "replay: memory +"
    . length(q{attachment; filename="game-1.replay"; filename*=UTF-8''game-1.replay})
    . " for Content-Disposition",
]
--- access_log eval
qr/^mem=\d+ db=\d+\.\d{3}$/



=== TEST 4: nginx -t: a limit below proxy_buffer_size and the module's own data
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_buffer_size      64k;
        proxy_buffers          4 64k;
        replay_memory_limit    32k;
    }
--- must_die
--- error_log eval
qr/a request of location "\/s3" may hold \d+ bytes, past replay_memory_limit 32768: proxy_buffer_size 65536 \+ \d+ of the module's own \(context, key, S3 path, signature, query parameters\)/



=== TEST 5: nginx -t: buffered, proxy_buffers count too
--- config
    replay_memory_limit  256k;

    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_buffering       on;
        proxy_buffer_size      64k;
        proxy_buffers          8 64k;
    }
--- must_die
--- error_log eval
qr/past replay_memory_limit 262144: proxy_buffer_size 65536 \+ proxy_buffers 8 x 65536 \(replay_buffering on\) \+ \d+ of the module's own/



=== TEST 6: nginx -t: a budget that cannot hold a single request
--- http_config
    replay_memory_budget  8k;
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- must_die
--- error_log eval
qr/replay_memory_budget 8192 cannot hold a single request of location "\/s3", which may hold \d+ bytes: proxy_buffer_size \d+ \+ \d+ of the module's own/



=== TEST 7: a limit that holds: the request stays under it
--- http_config
    log_format  mem  'mem=$replay_memory';
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          big/1mib.bin;
        proxy_buffer_size      64k;
        proxy_buffers          4 64k;
        replay_memory_limit    80k;
        access_log             logs/access.log mem;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('big/1mib.bin')



=== TEST 8: a key query under replay_memory_limit: its row fits
--- http_config
    log_format  mem  '$status s3=$replay_s3_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint   $TEST_NGINX_S3_ENDPOINT;
        replay_key_query     "SELECT replay_url, content_type,
                                     repeat('n', $2::int)
                              FROM games WHERE id::text = $1" $1 $arg_n;
        replay_memory_limit  16k;
        access_log           logs/access.log mem;
    }
--- request
GET /game/1?n=10
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- access_log eval
qr/^200 s3=\d+\.\d{3}$/



=== TEST 9: a row that would take the request past its limit: 500 before S3, logged
--- request
GET /game/1?n=20000
--- error_code: 500
--- error_log eval
qr/replay: the key query's row needs \d+ bytes, replay_memory_limit 16384 leaves it \d+/
--- access_log eval
qr/^500 s3=-$/



=== TEST 10: the budget: one request at a time, one waits, the next is refused
--- http_config
    replay_memory_budget  100k queue=1 timeout=5s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location = /hold {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
        proxy_buffer_size   64k;
        proxy_buffers       4 64k;
    }
--- init
my @res = ReplayTest::get_concurrently([map { '/hold?s=0.5' } 1 .. 3]);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 200 503',
               'TEST 10: one runs, one waits and runs, one is refused');
my @retry = grep { $_->[0] == 503 && $_->[1] =~ /^Retry-After: 1\r?$/mi }
            @res;
Test::More::is(scalar @retry, 1, 'TEST 10: the 503 has Retry-After');
--- request
GET /hold?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log eval
qr/replay: memory budget 102400 is taken \(\d+ reserved\) and 1 requests wait already/



=== TEST 11: the budget: a wait past its timeout is a 503 with Retry-After
--- http_config
    replay_memory_budget  100k timeout=300ms;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location = /hold {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
        proxy_buffer_size   64k;
        proxy_buffers       4 64k;
    }
--- init
main::get_in_background('/hold?s=1');
--- request
GET /hold?s=0
--- error_code: 503
--- response_headers
Retry-After: 1
--- error_log
replay: no room in memory budget 102400 within 300 ms



=== TEST 12: a client that leaves while it waits: no alert, its place is freed
--- http_config
    replay_memory_budget  100k timeout=5s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location = /hold {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
        proxy_buffer_size   64k;
        proxy_buffers       4 64k;
    }
--- init
main::get_in_background('/hold?s=1');
main::leave_after('/hold?s=0', 0.3);
--- request
GET /hold?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
client prematurely closed connection



=== TEST 13: 50 clients download 50 MiB each: the worker grows by less than 256 KiB a client
(proxy_buffer_size 64k, unbuffered: each request holds one 64 KiB buffer
and the module's small data; nginx's own request and connection memory
comes on top.  Skipped under valgrind, where resident memory means little.)
--- http_config
    log_format  mem  'mem=$replay_memory';
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $arg_key;
        proxy_buffer_size      64k;
        proxy_buffers          4 64k;
        replay_memory_limit    128k;
        access_log             logs/access.log mem;
    }
--- init
if ($ENV{TEST_NGINX_USE_VALGRIND}) {
    Test::More::pass('TEST 13: skipped under valgrind');
    return;
}
# a first request, so that what nginx sets up once is not counted
ReplayTest::get_concurrently(['/s3?key=games/1/replay.bin']);
my $before = main::nginx_rss();
my $max = $before;
my $t0 = Time::HiRes::time();
my @res = ReplayTest::get_concurrently(
    [map { '/s3?key=big/50mib.bin' } 1 .. 50],
    discard => 1,
    poll => sub {
        my $rss = main::nginx_rss();
        $max = $rss if $rss > $max;
    });
my $secs = Time::HiRes::time() - $t0;
my $ok = grep { $_->[0] == 200 && $_->[2] == 52428800 } @res;
Test::More::is($ok, 50, 'TEST 13: 50 whole 50 MiB bodies');
Test::More::cmp_ok(($max - $before) * 1024, '<', 50 * 256 * 1024,
                   "TEST 13: RSS grew by less than 50 x 256 KiB "
                   . "(from $before to $max KiB, in "
                   . sprintf('%.1f', $secs) . " s)");
# the first line is the first request's
my @mem = main::logged_memory();
shift @mem;
Test::More::is(scalar @mem, 50, 'TEST 13: 50 $replay_memory logged');
my @in = grep { $_ > 65536 && $_ <= 131072 } @mem;
Test::More::is(scalar @in, 50,
               'TEST 13: each over 64k and under replay_memory_limit 128k');
--- request
GET /s3?key=games/1/replay.bin
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- timeout: 30
