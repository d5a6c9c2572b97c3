# replay_key_cache: what the key query answered, kept in shared memory so
# that a replay asked for again skips the database.  The rows live in a
# table of this file's own (cache_games); blocks change them between
# requests ("--- after_request") to tell an answer from the cache from the
# database's.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

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

# runs SQL that changes the rows (after a request, to tell the cache from
# the database)
sub sql {
    my ($sql) = @_;

    my $out = ReplayTest::psql($sql);
    Test::More::like($out, qr/^(UPDATE|INSERT) /, $sql)
        or Test::More::diag($out);
}


__DATA__

=== TEST 1: a second request is answered from the cache, row and all, without the database
--- init
main::reset_rows();
$main::pg_from = ReplayTest::pg_log_size();
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
--- after_request eval
[sub { main::sql("UPDATE cache_games SET replay_url = 'games/2/replay.bin' WHERE id = 'a'") },
 undef,
 sub {
    Test::More::is(ReplayTest::pg_log_count('t070-hit', $main::pg_from), 1,
                   'TEST 1: the query was executed once');
 }]
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
    qr/^# HELP /,
]
--- status_counters eval
{
    'replay_key_cache_lookups_total{result="hit"}' => 1,
    'replay_key_cache_lookups_total{result="miss"}' => 1,
    'replay_requests_total{outcome="ok"}' => 2,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 2: an entry expires after valid=
--- init
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
--- after_request eval
[undef,
 sub {
    main::sql("UPDATE cache_games SET replay_url = 'games/1/replay.bin' WHERE id = 'b'");
    Time::HiRes::sleep(4.2);
 }]
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
--- s3_requests
GET /replays/games/2/replay.bin
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



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
--- after_request eval
[sub { main::sql("INSERT INTO cache_games VALUES ('new', 'games/1/replay.bin', NULL, NULL)") }]
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
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



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
--- after_request eval
[sub { main::sql("UPDATE cache_games SET replay_url = 'games/2/replay.bin' WHERE id = 'a'") }]
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
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/8/notes.txt
GET /replays/games/1/replay.bin
GET /replays/games/8/notes.txt
GET /replays/games/2/replay.bin



=== TEST 5: a full zone makes room from its least recently used entry, not its oldest
Entries of about 3 KiB each (a long Content-Type): the smallest zone holds
five.  Entry 1, the oldest, was used last but one when entry 6 comes: entry
2 goes, 1 stays (first in, first out would drop 1 and keep 2).
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
[map { "GET /big/$_" } 1 .. 5, 1, 6, 1, 2]
--- error_code eval
[(200) x 9]
--- response_headers eval
[("X-Key-Cache: MISS") x 5, "X-Key-Cache: HIT", "X-Key-Cache: MISS",
 "X-Key-Cache: HIT", "X-Key-Cache: MISS"]
--- response_body eval
[(ReplayTest::fixture('games/1/replay.bin')) x 9]
--- s3_requests eval
[("GET /replays/games/1/replay.bin") x 9]
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
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
--- error_log eval
qr/replay_key_cache zone "small" is too small for an entry of \d+ bytes, not cached/



=== TEST 7: a reload (HUP) keeps the cache's entries and the status counters
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

    location = /status {
        replay_status;
    }
--- request eval
["GET /c/a", "GET /c/b", "GET /c/a", "GET /status"]
--- after_request eval
[sub { main::sql("UPDATE cache_games SET replay_url = 'games/2/replay.bin' WHERE id = 'a'") },
 sub { ReplayTest::reload() }]
--- error_code eval
[200, 200, 200, 200]
--- response_headers eval
["X-Key-Cache: MISS", "X-Key-Cache: MISS", "X-Key-Cache: HIT", ""]
--- response_body_like eval
[
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/\Abucket=replays key=games\/2\/replay\.bin\n\z/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/^# HELP /,
]
--- status_counters eval
{
    'replay_key_cache_lookups_total{result="hit"}' => 1,
    'replay_key_cache_lookups_total{result="miss"}' => 2,
    'replay_requests_total{outcome="ok"}' => 3,
    'replay_s3_responses_total{status="2xx"}' => 3,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin



=== TEST 8: a zone needs a size
--- config
    location / {
        replay_key_cache  replay_keys;
    }
--- must_die
--- error_log
invalid zone "replay_keys": NAME:SIZE



=== TEST 9: a zone of less than 8 pages is refused
--- config
    location / {
        replay_key_cache  replay_keys:4k;
    }
--- must_die
--- error_log
zone "replay_keys" is too small: at least 32k



=== TEST 10: valid= takes a time of at least a second
--- config
    location / {
        replay_key_cache  replay_keys:1m valid=0;
    }
--- must_die
--- error_log
invalid "valid=0": a time of at least 1s



=== TEST 11: an unknown parameter
--- config
    location / {
        replay_key_cache  replay_keys:1m inactive=10m;
    }
--- must_die
--- error_log
invalid parameter "inactive=10m"



=== TEST 12: the status zone's name is not a cache's
--- config
    location / {
        replay_key_cache  replay_status:32k;
    }
--- must_die
--- error_log
zone name "replay_status" is reserved for replay_status
