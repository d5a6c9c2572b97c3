# replay_key_cache: what the key query answered, kept in shared memory so
# that a replay asked for again skips the database.  The rows live in a
# table of this file's own (cache_games); blocks change them between
# requests (%between) to tell an answer from the cache from the
# database's.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# SQL run after a request of a block: {block number}{request index}
my %between = (
    1 => { 0 => "UPDATE cache_games SET replay_url = 'games/2/replay.bin' "
                . "WHERE id = 'a'" },
    2 => { 1 => "UPDATE cache_games SET replay_url = 'games/1/replay.bin' "
                . "WHERE id = 'b'" },
    3 => { 0 => "INSERT INTO cache_games VALUES "
                . "('new', 'games/1/replay.bin', NULL, NULL)" },
    4 => { 0 => "UPDATE cache_games SET replay_url = 'games/2/replay.bin' "
                . "WHERE id = 'a'" },
);

# seconds to wait after a request: {block number}{request index}
my %sleep = (
    2 => { 1 => 4.2 },
);

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated, $dry_run) = @_;

    return if $dry_run;

    my ($n) = $block->name =~ /\bTEST (\d+):/;

    if (my $sql = $between{$n} && $between{$n}{$req_idx}) {
        my $out = ReplayTest::psql($sql);
        Test::More::like($out, qr/^(UPDATE|INSERT)/,
                         "TEST $n: $sql") or Test::More::diag($out);
    }

    if (my $s = $sleep{$n} && $sleep{$n}{$req_idx}) {
        select undef, undef, undef, $s;
    }
});

no_shuffle();
run_tests();


# each block starts from the same rows
sub reset_rows {
    my $out = ReplayTest::psql(
        "CREATE TABLE IF NOT EXISTS cache_games (id text PRIMARY KEY, "
        . "replay_url text, content_type text, file_name text); "
        . "TRUNCATE cache_games; "
        . "INSERT INTO cache_games VALUES "
        . "('a', 'games/1/replay.bin', 'text/plain', 'a.replay'), "
        . "('b', 'games/2/replay.bin', NULL, NULL)");

    Test::More::like($out, qr/INSERT 0 2/, 'cache_games reset')
        or Test::More::diag($out);
}


__DATA__

=== TEST 1: a second request is answered from the cache, row and all, without the database
--- init
main::reset_rows();
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       replay_keys:1m;

    location ~ ^/c/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url, content_type, file_name
                             /* t070-hit */ FROM cache_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /c/a", "GET /c/a", "GET /status"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
[
    "X-Key-Cache: MISS\nContent-Type: text/plain",
    "X-Key-Cache: HIT\nContent-Type: text/plain\n"
    . "Content-Disposition: attachment; filename=\"a.replay\"; "
    . "filename*=UTF-8''a.replay",
    "",
]
--- response_body_like eval
[
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\nreplay_key_cache_lookups_total\{result="hit"\} 1\nreplay_key_cache_lookups_total\{result="miss"\} 1\n/,
]



=== TEST 2: TEST 1 ran its query once; an entry expires after valid=
--- init
Test::More::is(ReplayTest::pg_log_count('t070-hit'), 1,
               'TEST 2: the query of TEST 1 was executed once');
main::reset_rows();
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       replay_keys:1m valid=3s;

    location ~ ^/c/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM cache_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }
--- request eval
["GET /c/b", "GET /c/b", "GET /c/b", "GET /c/b"]
--- error_code eval
[200, 200, 200, 200]
--- response_headers eval
[
    "X-Key-Cache: MISS",
    "X-Key-Cache: HIT",
    "X-Key-Cache: EXPIRED",
    "X-Key-Cache: HIT",
]
--- response_body eval
[
    ReplayTest::fixture('games/2/replay.bin'),
    ReplayTest::fixture('games/2/replay.bin'),
    ReplayTest::fixture('games/1/replay.bin'),
    ReplayTest::fixture('games/1/replay.bin'),
]



=== TEST 3: "not found" is not cached: a row added later is found at once
--- init
main::reset_rows();
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       replay_keys:1m;

    location ~ ^/c/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM cache_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }
--- request eval
["GET /c/new", "GET /c/new", "GET /c/new"]
--- error_code eval
[404, 200, 200]
--- response_headers eval
["X-Key-Cache: MISS", "X-Key-Cache: MISS", "X-Key-Cache: HIT"]
--- response_body_like eval
[
    qr/404 Not Found/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
]



=== TEST 4: two queries in one zone never share entries; a location with it off asks each time
--- init
main::reset_rows();
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       replay_keys:1m;

    location ~ ^/c/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM cache_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location ~ ^/other/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT 'games/8/notes.txt'
                             FROM cache_games WHERE id = $1" $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }

    location ~ ^/off/(.*)$ {
        replay_key_cache    off;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM cache_games WHERE id = $1"
                            $1;
        add_header          X-Key-Cache "[$replay_key_cache]" always;
    }
--- request eval
["GET /c/a", "GET /other/a", "GET /c/a", "GET /other/a", "GET /off/a"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_headers eval
[
    "X-Key-Cache: MISS",
    "X-Key-Cache: MISS",
    "X-Key-Cache: HIT",
    "X-Key-Cache: HIT",
    "X-Key-Cache: []",
]
--- response_body eval
[
    ReplayTest::fixture('games/1/replay.bin'),
    ReplayTest::fixture('games/8/notes.txt'),
    ReplayTest::fixture('games/1/replay.bin'),
    ReplayTest::fixture('games/8/notes.txt'),
    ReplayTest::fixture('games/2/replay.bin'),
]



=== TEST 5: a full zone makes room from its least recently used entries
Entries of about 3 KiB each (a long Content-Type) in the smallest zone:
the first ones go, the last ones stay.
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       small:32k;

    location ~ ^/big/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT 'games/1/replay.bin',
                                    'application/x-' || repeat('a', 3000)
                             WHERE $1 <> ''" $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }
--- request eval
[map { "GET /big/$_" } 1 .. 12, 12, 1]
--- error_code eval
[(200) x 14]
--- response_headers eval
[("X-Key-Cache: MISS") x 12, "X-Key-Cache: HIT", "X-Key-Cache: MISS"]
--- response_body eval
[(ReplayTest::fixture('games/1/replay.bin')) x 14]
--- no_error_log
too small for an entry
ngx_slab_alloc() failed



=== TEST 6: an entry larger than the whole zone is not cached, and said so
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_key_cache       small:32k;

    location ~ ^/huge/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT 'games/1/replay.bin', NULL,
                                    repeat('f', 40000)
                             WHERE $1 <> ''" $1;
        add_header          X-Key-Cache $replay_key_cache always;
    }
--- request eval
["GET /huge/1", "GET /huge/1"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Key-Cache: MISS", "X-Key-Cache: MISS"]
--- error_log eval
qr/replay_key_cache zone "small" is too small for an entry of \d+ bytes, not cached/



=== TEST 7: a zone needs a size
--- config
    location / {
        replay_key_cache  replay_keys;
    }
--- must_die
--- error_log
invalid zone "replay_keys": NAME:SIZE



=== TEST 8: a zone of less than 8 pages is refused
--- config
    location / {
        replay_key_cache  replay_keys:4k;
    }
--- must_die
--- error_log
zone "replay_keys" is too small: at least 32k



=== TEST 9: valid= takes a time of at least a second
--- config
    location / {
        replay_key_cache  replay_keys:1m valid=0;
    }
--- must_die
--- error_log
invalid "valid=0": a time of at least 1s



=== TEST 10: an unknown parameter
--- config
    location / {
        replay_key_cache  replay_keys:1m inactive=10m;
    }
--- must_die
--- error_log
invalid parameter "inactive=10m"



=== TEST 11: the status zone's name is not a cache's
--- config
    location / {
        replay_key_cache  replay_status:32k;
    }
--- must_die
--- error_log
zone name "replay_status" is reserved for replay_status
