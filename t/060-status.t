# What operators see: the replay_status endpoint (Prometheus text and
# JSON), its counters moving by exactly what each block did, one block per
# outcome (ok, not_found, bad_request, db_error, s3_error, timeout of S3's
# connect, of its read and of the database query, budget by a full queue
# and by its timeout, memory_limit, client_closed, incomplete), the
# database's connect failures (refused, and timed out against a listener
# that never accepts); the gauges shown off zero while requests hold or
# wait for what they count (a request in flight, the database's busy
# connection and its queue, the budget's reservation and its queue); the
# timing variables and the Server-Timing header, shown non-zero where the
# work took time (a query with pg_sleep, an S3 that answers late).
#
# Each block starts its own nginx and makes every request it counts
# itself, the status request last ("--- status_counters", checked by
# t/lib/ReplayTest.pm: every outcome it does not name must be 0).

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use JSON::PP ();
use Time::HiRes ();

# the release the module says it is
our $replay_version = do {
    open my $h, '<', 'ngx_replay_module/ngx_http_replay_module.h' or die $!;
    my ($v) = join('', <$h>) =~ /#define NGX_HTTP_REPLAY_VERSION\s+"([^"]+)"/
        or die "no NGX_HTTP_REPLAY_VERSION";
    $v;
};

no_shuffle();
run_tests();


# The histogram's buckets, from a Prometheus text, in the order of their
# bounds: [[le, count], ...].
sub prometheus_buckets {
    my ($text) = @_;

    my @b = $text =~ /^replay_s3_first_byte_seconds_bucket\{le="([^"]+)"\} (\d+)$/mg;
    my @pairs;
    push @pairs, [splice @b, 0, 2] while @b;
    return @pairs;
}

# A histogram is whole and cumulative: twelve buckets from 0.005 to +Inf,
# counts never falling, +Inf the count.
sub histogram_ok {
    my ($name, $buckets, $count) = @_;

    my @le = map { $_->[0] } @$buckets;
    Test::More::is("@le", '0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf',
                   "$name - the histogram's buckets");

    my @falls = grep { $buckets->[$_][1] < $buckets->[$_ - 1][1] }
                1 .. $#$buckets;
    Test::More::is("@falls", '', "$name - the buckets are cumulative");
    Test::More::is(@$buckets ? $buckets->[-1][1] : undef, $count,
                   "$name - +Inf holds every response");
}

# TEST 22: each location's gauges while a request is in flight (requests
# 0 and 1: Prometheus, JSON) and once it has gone (request 2).
our $held;

sub location_gauges {
    my ($body, $idx) = @_;

    my (%mem, %other, $in, $total, $temp);

    if ($idx == 1) {
        my $j = eval { JSON::PP::decode_json($body) };
        Test::More::ok($j, 'TEST 22: the JSON parses') or return;

        %mem = %{$j->{replay_location_memory_bytes}{'/s3'}};
        %other = %{$j->{replay_location_memory_bytes}{'^/a"b\\d$'}};
        $in = $j->{replay_location_requests_in_flight}{'/s3'};
        $temp = $j->{replay_location_temp_file_bytes}{'/s3'};
        $total = $j->{replay_memory_bytes};

    } else {
        my $samples = ReplayTest::prometheus($body, "TEST 22 ($idx)");

        for my $k (qw(pool buffers row tls)) {
            $mem{$k} = $samples->{"replay_location_memory_bytes{location=\"/s3\",kind=\"$k\"}"};
            $other{$k} = $samples->{"replay_location_memory_bytes{location=\"^/a\\\"b\\\\d\$\",kind=\"$k\"}"};
        }

        $in = $samples->{'replay_location_requests_in_flight{location="/s3"}'};
        $temp = $samples->{'replay_location_temp_file_bytes{location="/s3"}'};
        $total = $samples->{replay_memory_bytes};
    }

    my $name = "TEST 22 (" . ($idx == 1 ? 'JSON' : $idx ? 'after' : 'Prometheus') . ")";
    my $sum = 0;
    $sum += $_ // 0 for values %mem;

    Test::More::is(join(' ', map { $other{$_} // 'none' } qw(pool buffers row tls)),
                   '0 0 0 0', "$name: the other location holds nothing");
    Test::More::is($temp, 0, "$name: no temporary file");

    if ($idx == 2) {
        Test::More::is("$in $sum $total", '0 0 0',
                       "$name: nothing in flight, nothing held");
        return;
    }

    Test::More::is($in, 1, "$name: one request in flight");
    Test::More::ok($mem{buffers} >= 65536 && $mem{pool} > 4096
                   && $mem{row} == 0 && $mem{tls} == 0,
                   "$name: its 64k buffer and its pool "
                   . "($mem{buffers}, $mem{pool})");
    Test::More::is($sum, $total, "$name: the kinds add up to "
                   . "replay_memory_bytes");
}

# The access log's "name=seconds" values.
sub logged_times {
    my $file = Test::Nginx::Util::server_root() . '/logs/access.log';

    open my $fh, '<', $file or die "$file: $!";
    my @lines = <$fh>;
    close $fh;

    return map { +{ /(\w+)=([\d.]+|-)/g } } @lines;
}


# Waits (10 s at most) until replay_status counts $n requests in flight:
# the requests a block left running in the background have reached where
# it wants them (each step of a request up to a wait is done in one go by
# the one worker, so a wait has begun once its request counts).
sub wait_in_flight {
    my ($n) = @_;

    for (1 .. ($ENV{TEST_NGINX_USE_VALGRIND} ? 600 : 200)) {
        my ($r) = ReplayTest::get_concurrently(['/status']);
        return 1 if $r->[2] =~ /^replay_requests_in_flight \Q$n\E$/m;
        Time::HiRes::sleep(0.05);
    }

    Test::More::fail("replay_requests_in_flight never reached $n");
    return 0;
}


__DATA__

=== TEST 1: Prometheus: requests by outcome and status, S3's answers, bytes, memory, a whole histogram
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       $arg_key;
    }

    location = /status {
        replay_status;
    }
--- request eval
[
    "POST /s3?key=games/1/replay.bin\nx",
    "GET /s3?key=games/1/replay.bin",
    "GET /s3?key=games/7/missing.bin",
    "GET /status",
]
--- error_code eval
[405, 200, 404, 200]
--- response_headers_like eval
["", "", "", "Content-Type: text/plain; version=0.0.4; charset=utf-8"]
--- response_body_like eval
[
    qr/405/,
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/<title>404 Not Found<\/title>/,
    qr/^# TYPE replay_s3_first_byte_seconds histogram$/m,
]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 1,
    'replay_requests_total{outcome="not_found"}' => 1,
    'replay_requests_total{outcome="bad_request"}' => 1,
    'replay_responses_total{status="2xx"}' => 1,
    'replay_responses_total{status="4xx"}' => 2,
    'replay_responses_total{status="5xx"}' => 0,
    'replay_sent_bytes_total' => 38,
    'replay_requests_in_flight' => 0,
    'replay_memory_bytes' => 0,
    'replay_memory_reserved_bytes' => 0,
    'replay_s3_responses_total{status="2xx"}' => 1,
    'replay_s3_responses_total{status="4xx"}' => 1,
    'replay_s3_first_byte_seconds_count' => 2,
    'replay_db_connects_total' => 0,
}
--- after_request eval
[undef, undef, undef, sub {
    my ($block, $body) = @_;
    main::histogram_ok('TEST 1', [main::prometheus_buckets($body)], 2);
}]
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/7/missing.bin -> 404 NoSuchKey
--- error_log
replay: method POST not allowed



=== TEST 2: JSON: the same names, and a histogram with cumulative buckets
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       $arg_key;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /s3?key=games/1/replay.bin", "GET /status?format=json"]
--- response_headers_like eval
["", "Content-Type: application/json"]
--- response_body_like eval
[qr/replay\.bin/, qr/\A\{.*\}\n\z/s]
--- after_request eval
[undef, sub {
    my ($block, $body) = @_;
    my $j = eval { JSON::PP::decode_json($body) };
    Test::More::ok($j, 'TEST 2: the JSON parses') or return;

    Test::More::is($j->{replay_requests_total}{ok}, 1, 'TEST 2: ok');
    Test::More::is($j->{replay_sent_bytes_total}, 38, 'TEST 2: bytes');
    Test::More::is($j->{replay_memory_bytes}, 0, 'TEST 2: memory');
    Test::More::cmp_ok($j->{replay_memory_peak_bytes} // 0, '>', 4096,
                       'TEST 2: memory peak');

    my $h = $j->{replay_s3_first_byte_seconds};
    my %b = %{ $h->{buckets} // {} };
    my @le = sort { ($a eq '+Inf' ? 1e9 : $a) <=> ($b eq '+Inf' ? 1e9 : $b) }
             keys %b;

    Test::More::is($h->{count}, 1, 'TEST 2: histogram count');
    main::histogram_ok('TEST 2', [map { [$_, $b{$_}] } @le], 1);
    Test::More::ok($h->{sum} > 0 && $h->{sum} < 10, 'TEST 2: histogram sum');
}]
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 3: the database: lookups by outcome, connections, query errors
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }

    location = /broken {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM no_such_table
                             WHERE id::text = $1" $arg_id;
    }

    location = /status {
        replay_status;
    }
--- request eval
[
    "GET /broken?id=1",
    "GET /game/1",
    "GET /game/999999",
    "GET /game/%FF%FE",
    "GET /status",
]
--- error_code eval
[500, 200, 404, 400, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 1,
    'replay_requests_total{outcome="not_found"}' => 1,
    'replay_requests_total{outcome="bad_request"}' => 1,
    'replay_requests_total{outcome="db_error"}' => 1,
    'replay_db_connects_total' => 1,
    'replay_db_connect_failures_total' => 0,
    'replay_db_query_errors_total' => 1,
    'replay_db_query_timeouts_total' => 0,
    'replay_db_connections{state="idle"}' => 1,
    'replay_db_connections{state="busy"}' => 0,
    'replay_db_waiting_requests' => 0,
    'replay_s3_responses_total{status="2xx"}' => 1,
    'replay_requests_in_flight' => 0,
}
--- s3_requests
GET /replays/games/1/replay.bin
--- error_log
replay: database query failed: ERROR: relation "no_such_table" does not exist



=== TEST 4: a database that cannot be reached: a connect failure
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "host=127.0.0.1 port=1 dbname=replay user=replay";

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /game/1", "GET /status"]
--- error_code eval
[503, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="db_error"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_db_connects_total' => 0,
    'replay_db_connect_failures_total' => 1,
    'replay_db_connections{state="idle"}' => 0,
}
--- no_s3_request
--- error_log
replay: database connection failed



=== TEST 5: a query past query_timeout: a query timeout, the request's outcome "timeout"
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" query_timeout=200ms;

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /sleep?s=1", "GET /status"]
--- error_code eval
[504, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="timeout"}' => 1,
    'replay_db_connects_total' => 1,
    'replay_db_query_timeouts_total' => 1,
    'replay_db_query_errors_total' => 0,
}
--- no_s3_request
--- error_log
replay: database query timed out after 200 ms



=== TEST 6: the memory budget: waits and refusals of a full queue
--- http_config
    replay_memory_budget  100k queue=1;
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

    location = /status {
        replay_status;
    }
--- init
my @res = ReplayTest::get_concurrently([map { '/hold?s=0.5' } 1 .. 3]);
my @codes = sort map { $_->[0] } @res;
Test::More::is("@codes", '200 200 503', 'TEST 6: 200, 200 and 503');
--- request
GET /status
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 2,
    'replay_requests_total{outcome="budget"}' => 1,
    'replay_budget_waits_total' => 1,
    'replay_budget_rejects_total{reason="queue_full"}' => 1,
    'replay_budget_rejects_total{reason="timeout"}' => 0,
    'replay_budget_waiting_requests' => 0,
    'replay_memory_reserved_bytes' => 0,
    'replay_memory_bytes' => 0,
    'replay_requests_in_flight' => 0,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
--- error_log
is taken



=== TEST 7: the memory budget: a wait past its timeout
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

    location = /status {
        replay_status;
    }
--- init
ReplayTest::in_background('/hold?s=1');
--- request eval
["GET /hold?s=0", "GET /status"]
--- error_code eval
[503, 200]
--- after_request eval
[sub { ReplayTest::wait_background() }]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 1,
    'replay_requests_total{outcome="budget"}' => 1,
    'replay_budget_waits_total' => 1,
    'replay_budget_rejects_total{reason="queue_full"}' => 0,
    'replay_budget_rejects_total{reason="timeout"}' => 1,
    'replay_budget_waiting_requests' => 0,
    'replay_memory_reserved_bytes' => 0,
}
--- s3_requests
GET /replays/games/1/replay.bin
--- error_log
replay: no room in memory budget 102400 within 300 ms



=== TEST 8: a row past replay_memory_limit: the outcome "memory_limit"
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint   $TEST_NGINX_S3_ENDPOINT;
        replay_key_query     "SELECT replay_url, content_type,
                                     repeat('n', 20000)
                              FROM games WHERE id::text = $1" $1;
        replay_memory_limit  16k;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /game/1", "GET /status"]
--- error_code eval
[500, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="memory_limit"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_memory_bytes' => 0,
}
--- no_s3_request
--- error_log
replay: the key query's row needs



=== TEST 9: a client that leaves while its query runs: the outcome "client_closed"
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /status {
        replay_status;
    }
--- init
ReplayTest::leave_after('/sleep?s=0.5', 0.2);
--- request
GET /status
--- status_counters eval
{
    'replay_requests_total{outcome="client_closed"}' => 1,
    'replay_requests_in_flight' => 0,
}
--- no_s3_request



=== TEST 10: an S3 error
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
my $xml = '<Error><Code>InternalError</Code></Error>';
"HTTP/1.1 500 Internal Server Error\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[502, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="s3_error"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_s3_responses_total{status="5xx"}' => 1,
    'replay_s3_first_byte_seconds_count' => 1,
    'replay_sent_bytes_total' => 0,
}
--- error_log
replay: S3 answered 500 InternalError



=== TEST 11: S3 refuses the connection: an S3 error, no S3 response
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[502, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="s3_error"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_s3_responses_total{status="5xx"}' => 0,
    'replay_s3_first_byte_seconds_count' => 0,
}
--- error_log
connect() failed (111: Connection refused)



=== TEST 12: S3 never accepts the connection: a timeout
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_connect_timeout  300ms;
    }

    location = /status {
        replay_status;
    }
--- init
ReplayTest::never_accepting(ReplayTest::rand_port(1));
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[504, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="timeout"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_s3_first_byte_seconds_count' => 0,
}
--- error_log
while connecting to upstream



=== TEST 13: S3 silent past proxy_read_timeout: a timeout
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_read_timeout     300ms;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_no_close
--- tcp_reply:
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[504, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="timeout"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_s3_first_byte_seconds_count' => 0,
}
--- error_log
upstream timed out



=== TEST 14: a body cut short: incomplete
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nonly-ten!!"
--- request eval
["GET /s3", "GET /status"]
--- response_body_like eval
[qr/^only-ten!!$/, qr/^# HELP /]
--- status_counters eval
{
    'replay_requests_total{outcome="incomplete"}' => 1,
    'replay_responses_total{status="2xx"}' => 1,
    'replay_sent_bytes_total' => 10,
}
--- error_log
upstream prematurely closed connection



=== TEST 15: a presigned redirect is an ok request, S3 unasked
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_redirect        on;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[302, 200]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 1,
    'replay_responses_total{status="3xx"}' => 1,
    'replay_s3_first_byte_seconds_count' => 0,
}
--- no_s3_request



=== TEST 16: the status location takes GET and HEAD, and format=json or prometheus
--- config
    location = /status {
        replay_status;
    }
--- request eval
["POST /status\nx", "GET /status?format=xml", "HEAD /status",
 "GET /status?format=prometheus"]
--- error_code eval
[405, 400, 200, 200]
--- response_body_like eval
[qr/405/, qr/400/, qr/\A\z/, qr/^replay_requests_in_flight 0$/m]



=== TEST 17: the timing variables, in seconds to the microsecond, each at least the time its work took
(the query sleeps 20 ms, S3 answers after 100 ms; signing takes some
microseconds)
--- http_config
    log_format  timing  'db=$replay_db_time sign=$replay_sign_time s3=$replay_s3_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    access_log  logs/access.log timing;

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_key_query    "SELECT (SELECT replay_url FROM games
                                     WHERE id::text = $1)
                             FROM pg_sleep(0.02)" $1;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply_delay: 100ms
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
--- request
GET /game/1
--- response_body chop
abc
--- access_log eval
qr/^db=(?!0\.000000)\d+\.\d{6} sign=(?!0\.000000)\d+\.\d{6} s3=\d+\.\d{6}$/
--- after_request eval
[sub {
    my ($t) = main::logged_times();
    Test::More::cmp_ok($t->{db}, '>=', 0.020, 'TEST 17: db >= the 20 ms sleep');
    Test::More::cmp_ok($t->{s3}, '>=', 0.100, 'TEST 17: s3 >= the 100 ms wait');
    Test::More::cmp_ok($t->{sign}, '>', 0, 'TEST 17: sign > 0');
    Test::More::cmp_ok($t->{sign}, '<', 1, 'TEST 17: sign < 1 s');
}]



=== TEST 18: ... without a database, and before S3: empty
--- http_config
    log_format  timing  'db=$replay_db_time sign=$replay_sign_time s3=$replay_s3_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    access_log  logs/access.log timing;

    location /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       $arg_key;
    }
--- request
GET /s3
--- error_code: 404
--- access_log eval
qr/^db=- sign=- s3=-$/
--- no_s3_request
--- error_log
replay: the object key is empty



=== TEST 19: Server-Timing on: sign and s3, neither zero
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_server_timing   on;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- raw_response_headers_like eval
qr/\r\nServer-Timing: sign;dur=(?!0\.000)\d+\.\d{3}, s3;dur=(?!0\.000)\d+\.\d{3}\r\n/
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 20: Server-Timing with a key query: on a 404, db only; else db, sign and s3, each at least what it took
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_server_timing   on;

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        replay_key_query    "SELECT (SELECT replay_url FROM games
                                     WHERE id::text = $1)
                             FROM pg_sleep(0.02)" $1;
    }
--- tcp_listen: $TEST_NGINX_RAND_PORT_1
--- tcp_reply_delay: 100ms
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
--- request eval
["GET /game/999999", "GET /game/1"]
--- error_code eval
[404, 200]
--- raw_response_headers_like eval
[qr/\r\nServer-Timing: db;dur=(?:[2-9]\d|[1-9]\d{2,})\.\d{3}\r\n/,
 qr/\r\nServer-Timing: db;dur=(?:[2-9]\d|[1-9]\d{2,})\.\d{3}, sign;dur=(?!0\.000)\d+\.\d{3}, s3;dur=[1-9]\d{2,}\.\d{3}\r\n/]
--- error_log
replay: the key query returned a NULL key



=== TEST 21: Server-Timing off (the default): no header
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }
--- request
GET /s3
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- response_headers
!Server-Timing
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 22: each location's memory by kind while a request is in flight, both formats, back to zero after
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    proxy_buffer_size      64k;
    proxy_buffers          4 64k;

    location /s3 {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       big/50mib.bin;
    }

    location ~ "^/a\"b\\d$" {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_s3_key       games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- init
# a client that asks for 50 MiB and reads nothing: its request stays in
# flight, holding what it holds
ReplayTest::get_concurrently(['/status']);
$main::held = ReplayTest::open_request('/s3');
ReplayTest::wait_for_line('logs/error.log', qr/replay: memory at S3's header/, 10);
--- request eval
["GET /status", "GET /status?format=json", "GET /status"]
--- after_request eval
[sub { main::location_gauges($_[1], 0) },
 sub { main::location_gauges($_[1], 1); close $main::held; Time::HiRes::sleep(1); },
 sub { main::location_gauges($_[1], 2) }]
--- error_code eval
[200, 200, 200]
--- s3_requests
GET /replays/big/50mib.bin



=== TEST 23: the database's gauges: its one connection busy, a request waiting for it; then idle, none waiting
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" pool=1 pipeline=off
                           queue_timeout=20s query_timeout=20s;

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
    }

    location = /status {
        replay_status;
    }
--- init
# the first holds the connection for 2 s (6 under valgrind), in flight
# before the second starts, which waits for it
ReplayTest::in_background('/sleep?s=' . ($ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 2));
main::wait_in_flight(1);
ReplayTest::in_background('/sleep?s=0');
main::wait_in_flight(2);
--- request eval
["GET /status", "GET /status"]
--- after_request eval
[sub {
    ReplayTest::check_counters('TEST 23 (while one waits)', $_[1], {
        'replay_requests_in_flight' => 2,
        'replay_db_connections{state="busy"}' => 1,
        'replay_db_connections{state="idle"}' => 0,
        'replay_db_waiting_requests' => 1,
    });
    ReplayTest::wait_background();
}]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 2,
    'replay_requests_in_flight' => 0,
    'replay_db_connects_total' => 1,
    'replay_db_connections{state="busy"}' => 0,
    'replay_db_connections{state="idle"}' => 1,
    'replay_db_waiting_requests' => 0,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 24: the budget's gauges: a request's bound reserved, the next one waiting; then nothing reserved, none waiting
--- http_config
    replay_memory_budget  100k timeout=10s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN" query_timeout=20s;

    location = /hold {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games, pg_sleep($1::float8)
                             WHERE id = 1" $arg_s;
        proxy_buffer_size   64k;
        proxy_buffers       4 64k;
    }

    location = /status {
        replay_status;
    }
--- init
# the first holds the budget (one 64k buffer and more: its bound) for 2 s;
# the second waits for room
ReplayTest::in_background('/hold?s=' . ($ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 2));
main::wait_in_flight(1);
ReplayTest::in_background('/hold?s=0');
main::wait_in_flight(2);
--- request eval
["GET /status", "GET /status"]
--- after_request eval
[sub {
    my $name = 'TEST 24 (while one waits)';
    ReplayTest::check_counters($name, $_[1], {
        'replay_requests_in_flight' => 2,
        'replay_budget_waiting_requests' => 1,
        'replay_budget_waits_total' => 1,
    });
    my $reserved = ReplayTest::prometheus($_[1], $name)
                       ->{replay_memory_reserved_bytes} // 0;
    Test::More::ok($reserved > 65536 && $reserved <= 102400,
                   "$name - one request's bound reserved ($reserved)");
    ReplayTest::wait_background();
}]
--- status_counters eval
{
    'replay_requests_total{outcome="ok"}' => 2,
    'replay_requests_in_flight' => 0,
    'replay_budget_waits_total' => 1,
    'replay_budget_waiting_requests' => 0,
    'replay_memory_reserved_bytes' => 0,
}
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 25: a database that never accepts the connection: a connect failure after connect_timeout
(its accept queue is full, so the kernel drops the SYN: what a host that
is down or firewalled does)
--- http_config
    log_format  took  '$status $request_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "host=127.0.0.1 port=$TEST_NGINX_RAND_PORT_1
                            dbname=replay user=replay"
                           connect_timeout=300ms;

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
        access_log          logs/access.log took;
    }

    location = /status {
        replay_status;
    }
--- init
ReplayTest::never_accepting(ReplayTest::rand_port(1));
--- request eval
["GET /game/1", "GET /status"]
--- error_code eval
[503, 200]
--- access_log eval
qr/^503 (?:0\.[3-9]|1\.[0-4])\d\d$/
--- status_counters eval
{
    'replay_requests_total{outcome="db_error"}' => 1,
    'replay_responses_total{status="5xx"}' => 1,
    'replay_db_connects_total' => 0,
    'replay_db_connect_failures_total' => 1,
    'replay_db_connections{state="idle"}' => 0,
    'replay_db_connections{state="busy"}' => 0,
}
--- no_s3_request
--- error_log
replay: database connection timed out after 300 ms



=== TEST 26: the module's version: replay_build_info in Prometheus, "version" first in JSON
--- config
    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /status?format=json"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^# TYPE replay_build_info gauge\nreplay_build_info\{version="\Q$main::replay_version\E"\} 1$/m,
 qr/\A\{"version":"\Q$main::replay_version\E",".*\}\n\z/s]
--- no_error_log
[error]



=== TEST 27: nginx's start logs the module's version and libraries at notice
--- config
    location = /t {
        return 204;
    }
--- request
GET /t
--- error_code: 204
--- error_log eval
qr/\[notice\] \d+#\d+: ngx_http_replay_module\/\Q$main::replay_version\E \(nginx\/1\.\d+\.\d+, OpenSSL \d+\.\d+\.\d+\S* .*, libpq \d+\.\d+\)$/m
--- no_error_log
[error]
