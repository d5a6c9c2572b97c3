# The PostgreSQL key lookup: replay_db, replay_key_query and
# replay_key_param_max_length against the suite's real PostgreSQL and S3.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# Blocks without a configuration run on the first block's: the same
# nginx, whose pools carry over; under valgrind, where nginx is restarted
# for every block, an equal one.
my ($shared_config, $shared_http_config);

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $shared_config) {
        $shared_config = $block->config;
        $shared_http_config = $block->http_config;
        return;
    }

    if (!defined $block->config) {
        $block->set_value('config', $shared_config);
        $block->set_value('http_config', $shared_http_config);
    }
});

# 60 clients at once, and the connections to PostgreSQL and S3
worker_connections(1024);

no_shuffle();
run_tests();


# GETs every path at once, each from its own process; the responses as
# [status, headers, body], in the order of the paths.
sub get_concurrently {
    return ReplayTest::get_concurrently([@_]);
}


__DATA__

=== TEST 1: a key query finds the key; the body is the object's
--- http_config
    log_format  replay_db  'db_time=$replay_db_time key=$replay_key';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" pool=2 query_timeout=1s;

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

    location = /busy {
        replay_db           "$TEST_NGINX_PG_DSN" pool=1 queue=1;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /slow-queue {
        replay_db           "$TEST_NGINX_PG_DSN" pool=1 queue_timeout=200ms;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /plain {
        return 200 "plain\n";
    }
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- response_headers
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="game-1.replay"; filename*=UTF-8''game-1.replay
--- access_log eval
qr{db_time=\d+\.\d{3} key=games/1/replay\.bin}



=== TEST 2: columns 2 and 3 give Content-Type and the file name
--- request
GET /game/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- response_headers
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment; filename="r__sum__ _final_;.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B.txt



=== TEST 3: no row is a 404, logged at info
--- request
GET /game/999999
--- error_code: 404
--- error_log
replay: the key query returned no row



=== TEST 4: a NULL key is a 404, logged
--- request
GET /game/3
--- error_code: 404
--- error_log
replay: the key query returned a NULL key



=== TEST 5: an empty key is a 404, logged
--- request
GET /game/4
--- error_code: 404
--- error_log
replay: the key query returned an empty key



=== TEST 6: an empty parameter is a 400 that never reaches the database
--- request eval
["GET /never?id=", "GET /arg?id=", "GET /arg"]
--- error_code eval
[400, 400, 400]
--- error_log
replay: empty parameter 1 of replay_key_query



=== TEST 7: a parameter above replay_key_param_max_length is a 400
--- request eval
"GET /never?id=" . ("x" x 257)
--- error_code: 400
--- error_log
is 257 bytes long, replay_key_param_max_length is 256



=== TEST 8: the database saw no query from the refused requests above
--- init
Test::More::is(ReplayTest::pg_log_count('t030-never-run'), 0,
               'TEST 8: the refused requests sent no query');
--- request
GET /control?id=1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')



=== TEST 9: ... while the same kind of query does show in the log
--- init
Test::More::ok(ReplayTest::pg_log_count('t030-control-run') > 0,
               'TEST 9: the statement log does record executed queries');
--- request
GET /plain
--- response_body
plain



=== TEST 10: SQL in the id is only ever a value
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



=== TEST 11: a value the database cannot take (not UTF-8) is a 400
--- request
GET /game/%FF%FE
--- error_code: 400
--- error_log
replay: the database rejected a parameter: ERROR: invalid byte sequence for encoding "UTF8"



=== TEST 12: the table is intact
--- init
Test::More::is(ReplayTest::psql('SELECT count(*) > 10 FROM games'), 't',
               'TEST 12: games is still there');
--- request
GET /game/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')



=== TEST 13: two rows: 500, logged; the response says nothing of it
--- request
GET /tournament/10
--- error_code: 500
--- response_body_unlike
row
--- error_log
replay: the key query returned more than one row; it must return one row



=== TEST 14: ten thousand rows: 500 at once, the rest read and dropped
--- request
GET /tournament/999
--- error_code: 500
--- error_log
it must return one row



=== TEST 15: ... and the connections serve the next requests
--- request eval
["GET /game/1", "GET /game/2", "GET /game/1"]
--- response_body eval
[ReplayTest::fixture('games/1/replay.bin'),
 ReplayTest::fixture('games/2/replay.bin'),
 ReplayTest::fixture('games/1/replay.bin')]



=== TEST 16: an SQL error is a 500; PostgreSQL's message goes to the log
--- request
GET /broken?id=1
--- error_code: 500
--- response_body_unlike
no_such_table
--- error_log
replay: database query failed: ERROR: relation "no_such_table" does not exist



=== TEST 17: a query past query_timeout is a 504 and its connection closed
--- request
GET /sleep?s=3
--- error_code: 504
--- error_log
replay: database query timed out after 1000 ms



=== TEST 18: ... and the pool serves again
--- request
GET /sleep?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')



=== TEST 19: a database that cannot be reached: 503 with Retry-After
--- request
GET /down/1
--- error_code: 503
--- response_headers
Retry-After: 1
--- error_log
replay: database connection failed: connection to server at "127.0.0.1", port 1 failed



=== TEST 20: ... and the other locations are not affected
--- request eval
["GET /down/1", "GET /game/1", "GET /down/2", "GET /game/2"]
--- error_code eval
[503, 200, 503, 200]



=== TEST 21: failover: the first host refuses, the second serves
--- request
GET /failover/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')



=== TEST 22: a pool of 2 and 60 requests at once: each gets its own object
--- init
my %keys = (1 => 'games/1/replay.bin', 2 => 'games/2/replay.bin',
            8 => 'games/8/notes.txt', 10 => 'games/dup/a.bin',
            11 => 'games/dup/b.bin', 12 => undef, 13 => undef);
my @ids = map { (sort { $a <=> $b } keys %keys)[$_ % 7] } 0 .. 59;
my @res = main::get_concurrently(map { "/pool2/$_" } @ids);
my $ok = 0;
for my $i (0 .. $#ids) {
    # 12 and 13 hold "../other/secret.txt" and "/other/secret.txt": 404
    my $key = $keys{$ids[$i]};
    if (defined $key ? $res[$i][0] == 200
                       && $res[$i][2] eq ReplayTest::fixture($key)
                     : $res[$i][0] == 404)
    {
        $ok++;
    } else {
        Test::More::diag("id $ids[$i]: status $res[$i][0]: "
                         . substr($res[$i][1], 0, 200));
    }
}
Test::More::is($ok, 60, 'TEST 22: 60 concurrent lookups, every body right');
--- request
GET /pool2/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')



=== TEST 23: a full queue is a 503 with Retry-After, logged
--- init
my @res = main::get_concurrently(map { '/busy?s=0.5' } 1 .. 4);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 200 503 503',
               'TEST 23: one runs, one waits, two are refused');
my @retry = grep { $_->[0] == 503 && $_->[1] =~ /^Retry-After: 1\r?$/mi }
            @res;
Test::More::is(scalar @retry, 2, 'TEST 23: the 503s have Retry-After');
--- request
GET /busy?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: lookup queue is full (1 waiting)



=== TEST 24: queue_timeout: a 503 with Retry-After, logged
--- init
my @res = main::get_concurrently(map { '/slow-queue?s=0.6' } 1 .. 3);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 503 503',
               'TEST 24: the waiting ones give up after queue_timeout');
--- request
GET /slow-queue?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: no database connection was free within 200 ms



=== TEST 25: a client that goes away mid-query: no alert, the connection goes on
--- request
GET /sleep?s=0.5
--- timeout: 0.2
--- abort
--- ignore_response
--- wait: 0.6
--- error_log
replay db: request gone, connection goes on



=== TEST 26: ... and it serves the next request
--- request eval
["GET /sleep?s=0", "GET /sleep?s=0"]
--- response_body eval
[ReplayTest::fixture('games/1/replay.bin'),
 ReplayTest::fixture('games/1/replay.bin')]



=== TEST 27: PostgreSQL restarts: the pool notices, no reload needed
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



=== TEST 28: replay_key_query without replay_db
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



=== TEST 29: a conninfo libpq refuses; the password is not echoed
--- config
    replay_db  "host=127.0.0.1 password=se cret";
--- must_die
--- error_log
invalid database connection string: missing "=" after "..." in connection info string
--- no_error_log
cret



=== TEST 30: the values given must match the query's $N
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



=== TEST 31: $N in strings and comments are not parameters
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



=== TEST 32: an unknown replay_db parameter
--- config
    replay_db  "host=127.0.0.1" pool=0;
--- must_die
--- error_log
invalid parameter "pool=0"
