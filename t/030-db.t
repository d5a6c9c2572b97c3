# The PostgreSQL key lookup: replay_db, replay_key_query and
# replay_key_param_max_length against the suite's real PostgreSQL and S3.
#
# Each block starts its own nginx, with $db_config unless it has a
# configuration of its own; what must carry over from request to request
# (the one connection of the pool, after a timeout, an abandoned query,
# 10,000 rows read and dropped) happens within one block, and
# replay_db_connects_total in /status tells whether the connection was
# kept or opened anew.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# pool=1: the requests of a block share the one connection (query_timeout
# leaves valgrind the time to read 10,000 rows; /sleep has 1 s)
my $db_config = <<'CONF';
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" pool=1 query_timeout=10s;

    location ~ ^/game/(.*)$ {
        access_log          logs/access.log replay_db;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url, content_type, file_name
                             FROM games WHERE id::text = $1" $1;
    }

    location = /arg {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $arg_id;
    }

    location = /never {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t030-never-run */
                             FROM games WHERE id::text = $1" $arg_id;
    }

    location = /control {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t030-control-run */
                             FROM games WHERE id::text = $1" $arg_id;
    }

    location ~ ^/tournament/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM tournament_games
                             WHERE tournament_id::text = $1" $1;
    }

    location = /sleep {
        replay_db           "$TEST_NGINX_PG_DSN" pool=1 query_timeout=1s;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /broken {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM no_such_table
                             WHERE id::text = $1" $arg_id;
    }

    location ~ ^/down/(.*)$ {
        replay_db           "host=127.0.0.1 port=1 dbname=replay user=replay"
                            connect_timeout=1s;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }

    location ~ ^/failover/(.*)$ {
        replay_db           "host=127.0.0.1,127.0.0.1 port=1,$TEST_NGINX_PG_PORT
                             dbname=$TEST_NGINX_PG_DB
                             user=$TEST_NGINX_PG_USER";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }

    location ~ ^/pool2/(.*)$ {
        replay_db           "$TEST_NGINX_PG_DSN" pool=2;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep(0.02)
                             WHERE id::text = $1" $1;
    }

    # one query at a time: what waits is in the queue (a batch would
    # take the waiting ones with the first)
    location = /busy {
        replay_db           "$TEST_NGINX_PG_DSN" pool=1 queue=1
                            pipeline=off;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /slow-queue {
        replay_db           "$TEST_NGINX_PG_DSN" pool=1 queue_timeout=200ms
                            pipeline=off;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /plain {
        return 200 "plain\n";
    }

    location = /status {
        replay_status;
    }
CONF

my $db_http_config = <<'CONF';
    log_format  replay_db  'db_time=$replay_db_time key=$replay_key';
CONF

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->config) {
        $block->set_value('config', $db_config);
        $block->set_value('http_config', $db_http_config);
    }
});

# 60 clients at once, and the connections to PostgreSQL and S3
worker_connections(1024);

# the objects of the ids TEST 17 asks for at once (/pool2/ID); 12 and 13
# hold "../other/secret.txt" and "/other/secret.txt", refused: 404
our %pool_keys = (1 => 'games/1/replay.bin', 2 => 'games/2/replay.bin',
                  8 => 'games/8/notes.txt', 10 => 'games/dup/a.bin',
                  11 => 'games/dup/b.bin', 12 => undef, 13 => undef);
our @pool_ids = map { (sort { $a <=> $b } keys %pool_keys)[$_ % 7] } 0 .. 59;

no_shuffle();
run_tests();


__DATA__

=== TEST 1: a key query finds the key; the body is the object's
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- response_headers
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="game-1.replay"; filename*=UTF-8''game-1.replay
--- access_log eval
qr{db_time=\d+\.\d{6} key=games/1/replay\.bin}
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 2: columns 2 and 3 give Content-Type and the file name
--- request
GET /game/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- response_headers
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment; filename="r__sum__ _final_;.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B.txt
--- s3_requests
GET /replays/games/8/notes.txt



=== TEST 3: no row is a 404, logged at info
--- request
GET /game/999999
--- error_code: 404
--- no_s3_request
--- error_log
replay: the key query returned no row



=== TEST 4: a NULL key is a 404, logged
--- request
GET /game/3
--- error_code: 404
--- no_s3_request
--- error_log
replay: the key query returned a NULL key



=== TEST 5: an empty key is a 404, logged
--- request
GET /game/4
--- error_code: 404
--- no_s3_request
--- error_log
replay: the key query returned an empty key



=== TEST 6: an empty parameter is a 400 that never reaches the database
--- request eval
["GET /never?id=", "GET /arg?id=", "GET /arg"]
--- error_code eval
[400, 400, 400]
--- no_s3_request
--- error_log
replay: empty parameter 1 of replay_key_query



=== TEST 7: a parameter above replay_key_param_max_length is a 400
--- request eval
"GET /never?id=" . ("x" x 257)
--- error_code: 400
--- no_s3_request
--- error_log
is 257 bytes long, replay_key_param_max_length is 256



=== TEST 8: the refused requests sent the database no query; the same query, allowed, shows in its log
--- init
$main::pg_from = ReplayTest::pg_log_size();
--- request eval
["GET /never?id=", "GET /never?id=" . ("x" x 257), "GET /control?id=1"]
--- error_code eval
[400, 400, 200]
--- after_request eval
[undef, undef, sub {
    Test::More::is(ReplayTest::pg_log_count('t030-never-run', $main::pg_from),
                   0, 'TEST 8: the refused requests sent no query');
    Test::More::is(ReplayTest::pg_log_count('t030-control-run', $main::pg_from),
                   1, 'TEST 8: the statement log shows the one executed');
}]
--- s3_requests
GET /replays/games/1/replay.bin
--- error_log
replay: empty parameter 1 of replay_key_query



=== TEST 9: SQL in the id is only ever a value; the table is intact
--- request eval
[
    "GET /game/1%3B%20DROP%20TABLE%20games",
    "GET /game/1'%20OR%20'1'='1",
    "GET /game/1%22%20OR%201=1%20--",
    "GET /game/%5C'%5C%5C%5C",
    "GET /game/\$1",
    "GET /arg?id=1%00",
    "GET /game/1%00",
    "GET /game/" . ("%C3%A9" x 100) . "",
    "GET /game/" . ("%E6%97%A5" x 90) . "",
    "GET /game/1",
]
--- error_code eval
[404, 404, 404, 404, 404, 404, 400, 404, 400, 200]
--- after_request eval
[(undef) x 9, sub {
    Test::More::is(ReplayTest::psql('SELECT count(*) > 10 FROM games'), 't',
                   'TEST 9: games is still there');
}]
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 10: a value the database cannot take (not UTF-8) is a 400
--- request
GET /game/%FF%FE
--- error_code: 400
--- no_s3_request
--- error_log
replay: the database rejected a parameter: ERROR: invalid byte sequence for encoding "UTF8"



=== TEST 11: two rows: 500, logged; the response says nothing of it
--- request
GET /tournament/10
--- error_code: 500
--- response_body_unlike
row
--- no_s3_request
--- error_log
replay: the key query returned more than one row; it must return one row



=== TEST 12: ten thousand rows: 500 at once, the rest read and dropped; the connection then serves the next requests
--- request eval
["GET /tournament/999", "GET /game/1", "GET /game/2", "GET /game/1",
 "GET /status"]
--- error_code eval
[500, 200, 200, 200, 200]
--- response_body_like eval
[qr/500 Internal Server Error/,
 ReplayTest::fixture_re('games/1/replay.bin'),
 ReplayTest::fixture_re('games/2/replay.bin'),
 ReplayTest::fixture_re('games/1/replay.bin'),
 qr/^# HELP /]
--- status_counters eval
{
    'replay_db_connects_total' => 1,
    'replay_db_connections{state="idle"}' => 1,
    'replay_requests_total{outcome="ok"}' => 3,
    'replay_requests_total{outcome="db_error"}' => 1,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin
--- error_log
it must return one row



=== TEST 13: an SQL error is a 500; PostgreSQL's message goes to the log
--- request
GET /broken?id=1
--- error_code: 500
--- response_body_unlike
no_such_table
--- no_s3_request
--- error_log
replay: database query failed: ERROR: relation "no_such_table" does not exist



=== TEST 14: a query past query_timeout is a 504 and its connection closed; a new one serves the next request
--- request eval
["GET /sleep?s=3", "GET /sleep?s=0", "GET /status"]
--- error_code eval
[504, 200, 200]
--- response_body_like eval
[qr/504 Gateway Time-out/, ReplayTest::fixture_re('games/1/replay.bin'),
 qr/^# HELP /]
--- status_counters eval
{
    'replay_db_connects_total' => 2,
    'replay_db_query_timeouts_total' => 1,
    'replay_db_connections{state="idle"}' => 1,
    'replay_requests_total{outcome="ok"}' => 1,
    'replay_requests_total{outcome="timeout"}' => 1,
}
--- s3_requests
GET /replays/games/1/replay.bin
--- error_log
replay: database query timed out after 1000 ms



=== TEST 15: a database that cannot be reached: 503 with Retry-After; the other locations are not affected
--- request eval
["GET /down/1", "GET /game/1", "GET /down/2", "GET /game/2"]
--- error_code eval
[503, 200, 503, 200]
--- response_headers eval
["Retry-After: 1", "!Retry-After", "Retry-After: 1", "!Retry-After"]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
--- error_log
replay: database connection failed: connection to server at "127.0.0.1", port 1 failed



=== TEST 16: failover: the first host refuses, the second serves
--- request
GET /failover/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 17: a pool of 2 and 60 requests at once: each gets its own object
--- init
my @res = ReplayTest::get_concurrently([map { "/pool2/$_" } @main::pool_ids]);
my $ok = 0;
for my $i (0 .. $#main::pool_ids) {
    my $id = $main::pool_ids[$i];
    my $key = $main::pool_keys{$id};
    if (defined $key ? $res[$i][0] == 200
                       && $res[$i][2] eq ReplayTest::fixture($key)
                     : $res[$i][0] == 404)
    {
        $ok++;
    } else {
        Test::More::diag("id $id: status $res[$i][0]: "
                         . substr($res[$i][1], 0, 200));
    }
}
Test::More::is($ok, 60, 'TEST 17: 60 concurrent lookups, every body right');
--- request
GET /pool2/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- s3_requests eval
[map { "GET /replays/$main::pool_keys{$_}" }
 grep { defined $main::pool_keys{$_} } @main::pool_ids, 1]
--- error_log
has an empty, "." or ".." segment



=== TEST 18: a full queue is a 503 with Retry-After, logged
--- init
my @res = ReplayTest::get_concurrently([map { '/busy?s=0.5' } 1 .. 4]);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 200 503 503',
               'TEST 18: one runs, one waits, two are refused');
my @retry = grep { $_->[0] == 503 && $_->[1] =~ /^Retry-After: 1\r?$/mi }
            @res;
Test::More::is(scalar @retry, 2, 'TEST 18: the 503s have Retry-After');
--- request
GET /busy?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
--- error_log
replay: lookup queue is full (1 waiting)



=== TEST 19: queue_timeout: a 503 with Retry-After, logged
--- init
my @res = ReplayTest::get_concurrently([map { '/slow-queue?s=0.6' } 1 .. 3]);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 503 503',
               'TEST 19: the waiting ones give up after queue_timeout');
--- request
GET /slow-queue?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
--- error_log
replay: no database connection was free within 200 ms



=== TEST 20: a client that goes away mid-query: no alert, the connection goes on and serves the next requests
--- init
ReplayTest::leave_after('/sleep?s=0.5', 0.2);
--- request eval
["GET /sleep?s=0", "GET /sleep?s=0", "GET /status"]
--- response_body_like eval
[ReplayTest::fixture_re('games/1/replay.bin'),
 ReplayTest::fixture_re('games/1/replay.bin'),
 qr/^# HELP /]
--- status_counters eval
{
    'replay_db_connects_total' => 1,
    'replay_db_connections{state="idle"}' => 1,
    'replay_requests_total{outcome="ok"}' => 2,
    'replay_requests_total{outcome="client_closed"}' => 1,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
--- error_log
replay db: request gone, connection goes on



=== TEST 21: PostgreSQL restarts: the pool notices, no reload needed
--- init
ReplayTest::get_concurrently(['/game/1']) for 1 .. 2;
system("$ENV{TEST_NGINX_PG_CTL} restart >/dev/null 2>&1") == 0
    or die "pg restart failed\n";
--- request eval
["GET /game/1", "GET /game/2", "GET /failover/1"]
--- response_body eval
[ReplayTest::fixture('games/1/replay.bin'),
 ReplayTest::fixture('games/2/replay.bin'),
 ReplayTest::fixture('games/1/replay.bin')]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin



=== TEST 22: PostgreSQL sees the connections as application_name "nginx-replay", or as the one CONNINFO names
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /default {
        replay_db           "$TEST_NGINX_PG_DSN";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t030-app-default */
                             FROM games WHERE id::text = $1" $arg_id;
    }

    location = /named {
        replay_db           "$TEST_NGINX_PG_DSN application_name=t030-named";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t030-app-named */
                             FROM games WHERE id::text = $1" $arg_id;
    }
--- request eval
["GET /default?id=1", "GET /named?id=2"]
--- after_request eval
[undef, sub {
    # the pools' idle connections, by the last query each ran
    my $app = sub {
        ReplayTest::psql("SELECT string_agg(application_name, ',') FROM pg_stat_activity "
                         . "WHERE query LIKE '%$_[0]%' AND pid <> pg_backend_pid()");
    };
    Test::More::is($app->('t030-app-default'), 'nginx-replay',
                   'TEST 22: the default application_name');
    Test::More::is($app->('t030-app-named'), 't030-named',
                   'TEST 22: the application_name CONNINFO gives');
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin



=== TEST 23: replay_key_query without replay_db
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_key_query       "SELECT k FROM t WHERE id = $1" $uri;
    }
--- must_die
--- error_log
replay_key_query is set but no replay_db is given in the location or above it



=== TEST 24: a conninfo libpq refuses; the password is not echoed
--- config
    replay_db  "host=127.0.0.1 password=se cret";
--- must_die
--- error_log
invalid database connection string: missing "=" after "..." in connection info string
--- no_error_log
cret



=== TEST 25: the values given must match the query's $N
--- config
    replay_db  "host=127.0.0.1";
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_key_query       "SELECT k FROM t WHERE id = $1 AND x = $2"
                               $uri;
    }
--- must_die
--- error_log
the query has parameters up to $2 but 1 value is given



=== TEST 26: $N in strings and comments are not parameters
--- config
    replay_db  "host=127.0.0.1";
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_key_query       "SELECT '$2' || $$ $3 $$ || k -- $4
                                FROM t WHERE id = $1 /* $5 */" $uri;
    }
    location = /plain {
        return 200 "plain\n";
    }
--- request
GET /plain
--- response_body
plain



=== TEST 27: an unknown replay_db parameter
--- config
    replay_db  "host=127.0.0.1" pool=0;
--- must_die
--- error_log
invalid parameter "pool=0"
