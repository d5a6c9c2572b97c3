# replay_key_cache ... stale=TIME: an expired entry is kept that much
# longer, and served (X-Key-Cache: STALE, counted) when the database fails
# the lookup that was to renew it: stopped, or slow past query_timeout.
# What the database never answered, or answered "not found", is not served.
# The rows live in a table of this file's own (stale_games); the blocks
# stop PostgreSQL and start it again.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use Time::HiRes ();

no_shuffle();
run_tests();


our ($stopped, @s3);

# each block starts from the same rows
sub reset_rows {
    my $out = ReplayTest::psql(
        "CREATE TABLE IF NOT EXISTS stale_games (id text PRIMARY KEY, "
        . "replay_url text, delay float8 NOT NULL DEFAULT 0); "
        . "TRUNCATE stale_games; "
        . "INSERT INTO stale_games (id, replay_url) VALUES "
        . "('a', 'games/1/replay.bin'), ('b', 'games/2/replay.bin')");

    Test::More::like($out, qr/INSERT 0 2/, 'stale_games reset')
        or Test::More::diag($out);
}

sub sql {
    my ($sql) = @_;

    my $out = ReplayTest::psql($sql);
    Test::More::like($out, qr/^(UPDATE|DELETE) 1/, $sql)
        or Test::More::diag($out);
}

# GET on a connection of its own, checked: status, X-Key-Cache and the
# object served (a key of the fixtures, or the status)
sub get_ok {
    my ($path, $want) = @_;

    my ($sock) = ReplayTest::open_request($path);
    my ($head, $body) = ReplayTest::read_response($sock, 10);
    my ($status) = $head =~ m{^HTTP/\d\.\d (\d+)};
    my ($state) = $head =~ /^X-Key-Cache: (\w+)\r?$/mi;
    my $what = $status;

    for my $key ('games/1/replay.bin', 'games/2/replay.bin') {
        if ($status == 200 && $body eq ReplayTest::fixture($key)) {
            $what = $key;
            push @main::s3, "GET /replays/$key";
        }
    }

    Test::More::is("$what " . ($state // '-'), $want, "GET $path");
}

sub pg {
    my ($what) = @_;

    system("$ENV{TEST_NGINX_PG_CTL} $what >/dev/null 2>&1") == 0
        or die "PostgreSQL $what failed\n";

    $stopped = ($what eq 'stop');
}

# a block that dies half-way leaves PostgreSQL to the next ones
END {
    local $?;    # system() would replace the exit status Test::More set
    pg('start') if $stopped;
}


__DATA__

=== TEST 1: the database stopped: expired entries served STALE within stale=, the others 503
/c/ keeps entries 1 s and 1 h more; /s/ 1 s and 1 s more.  Filled, then
"b" deleted and asked for again once expired while the database runs:
404, and its entry goes.  Then with PostgreSQL stopped: "a" is served
from its expired entry, "b" and the unknown "zz" are 503, and /s/'s "a",
past its stale=, 503.  Started again, "a" is renewed from the database.
--- init
main::reset_rows();
@main::s3 = ();
main::get_ok('/c/a', 'games/1/replay.bin MISS');
main::get_ok('/c/b', 'games/2/replay.bin MISS');
main::get_ok('/s/a', 'games/1/replay.bin MISS');
main::sql("DELETE FROM stale_games WHERE id = 'b'");
Time::HiRes::sleep(2.2);
main::get_ok('/c/b', '404 EXPIRED');
main::pg('stop');
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" connect_timeout=1s;
    replay_key_cache       stale_keys:1m valid=1s stale=1h;

    location ~ ^/c/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM stale_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location ~ ^/s/(.*)$ {
        replay_key_cache    short_keys:1m valid=1s stale=1s;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM stale_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /c/a", "GET /c/a", "GET /c/b", "GET /c/zz", "GET /s/a", "GET /c/a",
 "GET /status"]
--- after_request eval
[undef, undef, undef, undef, sub { main::pg('start') }]
--- error_code eval
[200, 200, 503, 503, 503, 200, 200]
--- response_headers eval
[
    "X-Key-Cache: STALE", "X-Key-Cache: STALE", "X-Key-Cache: MISS",
    "X-Key-Cache: MISS", "X-Key-Cache: EXPIRED", "X-Key-Cache: EXPIRED",
    "",
]
--- response_body_like eval
[
    ReplayTest::fixture_re('games/1/replay.bin'),
    ReplayTest::fixture_re('games/1/replay.bin'),
    qr/503/, qr/503/, qr/503/,
    ReplayTest::fixture_re('games/1/replay.bin'),
    qr/^# HELP /,
]
--- status_counters eval
{
    'replay_key_cache_lookups_total{result="stale"}' => 2,
    'replay_key_cache_lookups_total{result="hit"}' => 0,
}
--- error_log eval
qr/\[warn\] .*replay: the database failed the lookup \(503\), serving the expired replay_key_cache entry "games\/1\/replay\.bin"/
--- s3_requests eval
sub {
    (@main::s3, ('GET /replays/games/1/replay.bin') x 3)
}



=== TEST 2: slow past query_timeout: the expired entry served STALE, and 504 without stale=
"a" takes 2 s once its entries have expired (query_timeout=300ms).
--- init
main::reset_rows();
@main::s3 = ();
main::get_ok('/t/a', 'games/1/replay.bin MISS');
main::get_ok('/n/a', 'games/1/replay.bin MISS');
main::sql("UPDATE stale_games SET delay = 2 WHERE id = 'a'");
Time::HiRes::sleep(2.2);
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" query_timeout=300ms;

    location ~ ^/t/(.*)$ {
        replay_key_cache    slow_keys:1m valid=1s stale=1m;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM stale_games, pg_sleep(delay)
                             WHERE id = $1" $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location ~ ^/n/(.*)$ {
        replay_key_cache    fresh_keys:1m valid=1s;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM stale_games, pg_sleep(delay)
                             WHERE id = $1" $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }
--- request eval
["GET /t/a", "GET /n/a"]
--- error_code eval
[200, 504]
--- response_headers eval
["X-Key-Cache: STALE", "X-Key-Cache: EXPIRED"]
--- response_body_like eval
[ReplayTest::fixture_re('games/1/replay.bin'), qr/504/]
--- error_log eval
[qr/replay: the database failed the lookup \(504\), serving the expired replay_key_cache entry "games\/1\/replay\.bin"/,
 qr/database query timed out after 300 ms/]
--- s3_requests eval
sub { (@main::s3, 'GET /replays/games/1/replay.bin') }



=== TEST 3: stale= takes a time
--- config
    replay_key_cache  bad_keys:1m stale=soon;
--- must_die
--- error_log
invalid "stale=soon": a time, e.g. 1h
--- no_s3_request



=== TEST 4: notify= takes a plain channel name
--- config
    replay_key_cache  bad_keys:1m notify=replay-keys;
--- must_die
--- error_log
invalid "notify=replay-keys": a channel is a name of letters, digits and "_", not starting with a digit, at most 63
--- no_s3_request
