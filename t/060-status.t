# What operators see: the replay_status endpoint (Prometheus text and
# JSON), its counters moving by exactly what each block did; the timing
# variables; the Server-Timing header.
#
# Each block that reads counters starts its own nginx and makes every
# request it counts itself, the status request last.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use JSON::PP ();

# the samples each block's status response must show, by block number;
# every other sample of replay_requests_total must be 0
my %expect = (
    1 => {
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
        'replay_s3_first_byte_seconds_bucket{le="+Inf"}' => 2,
        'replay_s3_first_byte_seconds_count' => 2,
        'replay_db_connects_total' => 0,
    },
    3 => {
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
    },
    4 => {
        'replay_requests_total{outcome="ok"}' => 2,
        'replay_requests_total{outcome="budget"}' => 1,
        'replay_budget_waits_total' => 1,
        'replay_budget_rejects_total{reason="queue_full"}' => 1,
        'replay_budget_rejects_total{reason="timeout"}' => 0,
        'replay_budget_waiting_requests' => 0,
        'replay_memory_reserved_bytes' => 0,
        'replay_memory_bytes' => 0,
        'replay_requests_in_flight' => 0,
    },
    5 => {
        'replay_requests_total{outcome="s3_error"}' => 1,
        'replay_responses_total{status="5xx"}' => 1,
        'replay_s3_responses_total{status="5xx"}' => 1,
        'replay_s3_first_byte_seconds_count' => 1,
        'replay_sent_bytes_total' => 0,
    },
    6 => {
        'replay_requests_total{outcome="timeout"}' => 1,
        'replay_responses_total{status="5xx"}' => 1,
        'replay_s3_first_byte_seconds_count' => 0,
    },
    7 => {
        'replay_requests_total{outcome="incomplete"}' => 1,
        'replay_responses_total{status="2xx"}' => 1,
        'replay_sent_bytes_total' => 10,
    },
    8 => {
        'replay_requests_total{outcome="ok"}' => 1,
        'replay_responses_total{status="3xx"}' => 1,
        'replay_s3_first_byte_seconds_count' => 0,
    },
);

# the same for a status response in JSON
my %expect_json = (
    2 => sub {
        my ($j) = @_;

        Test::More::is($j->{replay_requests_total}{ok}, 1, 'TEST 2: ok');
        Test::More::is($j->{replay_sent_bytes_total}, 38, 'TEST 2: bytes');
        Test::More::is($j->{replay_memory_bytes}, 0, 'TEST 2: memory');
        Test::More::ok($j->{replay_memory_peak_bytes} > 4096,
                       'TEST 2: memory peak');

        my $h = $j->{replay_s3_first_byte_seconds};

        Test::More::is($h->{count}, 1, 'TEST 2: histogram count');
        Test::More::is($h->{buckets}{'+Inf'}, 1, 'TEST 2: +Inf bucket');
        Test::More::ok($h->{buckets}{'0.005'} <= $h->{buckets}{'10'},
                       'TEST 2: buckets are cumulative');
        Test::More::ok($h->{sum} > 0 && $h->{sum} < 10,
                       'TEST 2: histogram sum');
    },
);

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated, $dry_run) = @_;

    return if $dry_run || !defined $body;

    my ($name, $n) = $block->name =~ /\b(TEST (\d+)):/;

    if ($body =~ /\A\{/ && $expect_json{$n}) {
        my $j = eval { JSON::PP::decode_json($body) };
        Test::More::ok($j, "$name: the JSON parses") or return;
        $expect_json{$n}->($j);
        return;
    }

    return if $body !~ /\A# HELP /;

    my $want = $expect{$n} or return;

    my $samples = main::prometheus($body, $name);

    for my $k (sort keys %$want) {
        Test::More::is($samples->{$k}, $want->{$k}, "$name: $k");
    }

    my @other = grep { /^replay_requests_total/ && !exists $want->{$_}
                       && $samples->{$_} != 0 } sort keys %$samples;

    Test::More::is("@other", '', "$name: no other outcome counted");
});

# the release the module says it is
our $replay_version = do {
    open my $h, '<', 'ngx_replay_module/ngx_http_replay_module.h' or die $!;
    my ($v) = join('', <$h>) =~ /#define NGX_HTTP_REPLAY_VERSION\s+"([^"]+)"/
        or die "no NGX_HTTP_REPLAY_VERSION";
    $v;
};

no_shuffle();
run_tests();


# The samples of a Prometheus text exposition, by name and labels; its
# format is checked on the way: a HELP and a TYPE line before each
# family's samples.
sub prometheus {
    my ($text, $name) = @_;

    my (%samples, %typed, @bad);

    for my $line (split /\n/, $text) {
        if ($line =~ /^# (HELP|TYPE) ([a-z0-9_]+) (.+)$/) {
            $typed{$2}{$1} = $3;
            next;
        }

        if ($line =~ /^(([a-z0-9_]+?)(?:_bucket|_sum|_count)?(?:\{[a-z_]+="[^"]*"\})?) (\d+(?:\.\d+)?)$/
            && ($typed{$2} || $typed{$1}))
        {
            $samples{$1} = $3;
            next;
        }

        push @bad, $line;
    }

    my @untyped = grep { !($typed{$_}{HELP} && $typed{$_}{TYPE}) }
                  keys %typed;

    Test::More::is("@bad@untyped", '', "$name: Prometheus text format");

    return \%samples;
}


__DATA__

=== TEST 1: Prometheus: requests by outcome and status, S3's answers, bytes, memory
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
    "GET /s3?key=games/1/replay.bin",
    "GET /s3?key=games/7/missing.bin",
    "POST /s3?key=games/1/replay.bin\nx",
    "GET /status",
]
--- error_code eval
[200, 404, 405, 200]
--- response_headers_like eval
["", "", "", "Content-Type: text/plain; version=0.0.4; charset=utf-8"]
--- response_body_like eval
[
    qr/\Abucket=replays key=games\/1\/replay\.bin\n\z/,
    qr/<title>404 Not Found<\/title>/,
    qr/405/,
    qr/^# TYPE replay_s3_first_byte_seconds histogram$/m,
]



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
    "GET /game/1",
    "GET /game/999999",
    "GET /game/%FF%FE",
    "GET /broken?id=1",
    "GET /status",
]
--- error_code eval
[200, 404, 400, 500, 200]



=== TEST 4: the memory budget: waits and refusals
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
Test::More::is("@codes", '200 200 503', 'TEST 4: 200, 200 and 503');
--- request
GET /status



=== TEST 5: an S3 error
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:19861;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: 19861
--- tcp_reply eval
my $xml = '<Error><Code>InternalError</Code></Error>';
"HTTP/1.1 500 Internal Server Error\r\nContent-Length: " . length($xml) . "\r\n\r\n$xml"
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[502, 200]



=== TEST 6: S3 silent past proxy_read_timeout
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:19862;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        proxy_read_timeout     300ms;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: 19862
--- tcp_no_close
--- tcp_reply:
--- request eval
["GET /s3", "GET /status"]
--- error_code eval
[504, 200]



=== TEST 7: a body cut short
--- config
    location /s3 {
        replay_s3_endpoint     http://127.0.0.1:19863;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- tcp_listen: 19863
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nonly-ten!!"
--- request eval
["GET /s3", "GET /status"]
--- response_body_like eval
[qr/^only-ten!!$/, qr/^# HELP /]



=== TEST 8: a presigned redirect is an ok request, S3 unasked
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



=== TEST 9: the status location takes GET and HEAD, and format=json or prometheus
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



=== TEST 10: the timing variables
--- http_config
    log_format  timing  'db=$replay_db_time sign=$replay_sign_time s3=$replay_s3_time';
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";

    access_log  logs/access.log timing;

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }
--- request
GET /game/1
--- access_log eval
qr/^db=\d+\.\d{3} sign=0\.\d{6} s3=\d+\.\d{3}$/



=== TEST 11: ... without a database, and before S3: empty
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



=== TEST 12: Server-Timing on: sign and s3
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
qr/\r\nServer-Timing: sign;dur=\d+\.\d{3}, s3;dur=\d+\.\d{3}\r\n/



=== TEST 13: Server-Timing with a key query: db, sign and s3; on a 404, db only
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$TEST_NGINX_PG_DSN";
    replay_server_timing   on;

    location ~ ^/game/(.*)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id::text = $1"
                            $1;
    }
--- request eval
["GET /game/1", "GET /game/999999", "GET /game/7"]
--- error_code eval
[200, 404, 404]
--- raw_response_headers_like eval
[qr/\r\nServer-Timing: db;dur=\d+\.\d{3}, sign;dur=\d+\.\d{3}, s3;dur=\d+\.\d{3}\r\n/,
 qr/\r\nServer-Timing: db;dur=\d+\.\d{3}\r\n/,
 qr/\r\nServer-Timing: db;dur=\d+\.\d{3}, sign;dur=\d+\.\d{3}, s3;dur=\d+\.\d{3}\r\n/]



=== TEST 14: Server-Timing off (the default): no header
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



=== TEST 15: the module's version: replay_build_info in Prometheus, "version" first in JSON
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



=== TEST 16: nginx's start logs the module's version and libraries at notice
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
