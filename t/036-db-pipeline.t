# Batched lookups: the queries a worker has for one connection in the same
# turn of its event loop go out together in libpq's pipeline mode (one
# write, one read for many), each with its own Sync, so each keeps what a
# query alone has: its own answer, its own error, its own query_timeout
# (and cancel), the one-row limit.  replay_db ... pipeline=off sends them
# one at a time; replay_status counts the queries and the writes
# (replay_db_queries_total, replay_db_batches_total).

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use File::Temp ();
use JSON::PP ();
use Time::HiRes ();

# Blocks without a configuration run on the first block's.
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

worker_connections(1024);

no_shuffle();
run_tests();


our %keys;

BEGIN {
    %keys = (1 => 'games/1/replay.bin', 2 => 'games/2/replay.bin',
             8 => 'games/8/notes.txt');
}

# the objects S3 was asked for during the block: each id answered 200
our %served;

# GETs the paths at once (ReplayTest::get_parallel), noting what was served
sub get_parallel {
    my ($paths) = @_;
    my @res = ReplayTest::get_parallel($paths);

    for my $i (0 .. $#$paths) {
        my ($id) = $paths->[$i] =~ m{/(\w+)$};
        $served{$id}++ if $res[$i][0] == 200 && $main::keys{$id};
    }

    return @res;
}

# "--- s3_requests eval": what was served, and the block's own request;
# for the next block, nothing yet
sub s3_served {
    my @lines = map { ("GET /replays/$main::keys{$_}") x $served{$_} }
                    keys %served;
    %served = ();
    return (@lines, map { "GET /replays/$main::keys{$_}" } @_);
}

# the counters of replay_status, flattened: {"name" or "name{value}" => n}
sub counters {
    my ($sock) = ReplayTest::open_request('/status?format=json');
    my ($head, $body) = ReplayTest::read_response($sock, 10);
    my $json = JSON::PP::decode_json($body);
    my %c;

    for my $name (keys %$json) {
        my $v = $json->{$name};

        if (ref $v eq 'HASH') {
            $c{"$name\{$_\}"} = $v->{$_} for grep { !ref $v->{$_} } keys %$v;
        } else {
            $c{$name} = $v;
        }
    }

    return \%c;
}

# GETs the paths at once (ReplayTest::get_parallel); how many answered 200
# with their object's bytes (the id is the path's last segment), and the
# statuses of the others
sub check_all {
    my @paths = @_;
    my @res = get_parallel(\@paths);
    my ($ok, @other) = (0);

    for my $i (0 .. $#paths) {
        my ($id) = $paths[$i] =~ m{/(\w+)$};

        if ($main::keys{$id} && $res[$i][0] == 200
            && $res[$i][1] eq ReplayTest::fixture($main::keys{$id}))
        {
            $ok++;
        } else {
            push @other, "$paths[$i]: $res[$i][0]";
        }
    }

    return ($ok, @other);
}

# N requests, PAR at once, with curl: the count of each status
sub load {
    my ($prefix, $n, $par) = @_;

    my ($fh, $file) = File::Temp::tempfile(UNLINK => 1);
    my $port = $Test::Nginx::Util::ServerPortForClient;

    for my $i (1 .. $n) {
        my $id = (1, 2, 8)[$i % 3];
        print $fh "url = \"http://127.0.0.1:$port$prefix$id\"\n"
                  . "output = \"/dev/null\"\n";
    }

    close $fh;

    my %codes;

    for (split /\n/, `curl -s --no-progress-meter -Z --parallel-max $par -w '%{http_code} %{url}\\n' -K '$file' 2>/dev/null`) {
        my ($code, $id) = m{^(\d+) .*/(\w+)$} or next;
        $codes{$code}++;
        $served{$id}++ if $code == 200;
    }

    return \%codes;
}

# user + system CPU, in clock ticks, of the backends of an application_name
sub backend_ticks {
    my ($app) = @_;

    my $ticks = 0;
    my @pids = split ' ', ReplayTest::psql(
        "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity"
        . " WHERE application_name = '$app'");

    for my $pid (@pids) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh>;
        close $fh;

        # the fields after the command, which may hold spaces
        $stat =~ s/^.*\) //;
        my @f = split ' ', $stat;
        $ticks += $f[11] + $f[12];
    }

    return ($ticks, scalar @pids);
}


__DATA__

=== TEST 1: 50 concurrent lookups on pool=2: every answer its own, sent in batches
--- http_config
    replay_db  "$TEST_NGINX_PG_DSN application_name=t036" pool=2;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    # 50 ms a query: the requests that come meanwhile wait for the batch
    location ~ ^/batch/(\w+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t036-batch */
                             FROM games, pg_sleep(0.05)
                             WHERE id = $1::bigint
                               AND 1 / ($1::bigint - 13) IS NOT NULL" $1;
    }

    location ~ ^/game/(\w+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t036-game */ FROM games
                             WHERE id = $1::bigint" $1;
    }

    location ~ ^/one/(\w+)$ {
        replay_db           "$TEST_NGINX_PG_DSN application_name=t036-off"
                            pool=2 pipeline=off;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t036-one */ FROM games
                             WHERE id = $1::bigint" $1;
    }

    location ~ ^/slow/(\w+)$ {
        replay_db           "$TEST_NGINX_PG_DSN application_name=t036-slow"
                            pool=1 query_timeout=500ms;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t036-slow */
                             FROM games, pg_sleep(CASE WHEN $1 = '99'
                                                  THEN 5 ELSE 0 END)
                             WHERE id = CASE WHEN $1 = '99' THEN 1
                                             ELSE $1::bigint END" $1;
    }

    location ~ ^/rows/(\w+)$ {
        replay_db           "$TEST_NGINX_PG_DSN application_name=t036-rows"
                            pool=1;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT g.replay_url FROM pg_sleep(0.02), games g
                             LEFT JOIN tournament_games t
                               ON t.tournament_id = 999 AND $1 = '999'
                             WHERE g.id = CASE WHEN $1 = '999' THEN 1
                                               ELSE $1::bigint END" $1;
    }

    location = /status {
        replay_status;
    }
--- init
my $before = main::counters();
my ($ok, @other) = main::check_all(map { '/batch/' . (1, 2, 8)[$_ % 3] } 1 .. 50);
my $after = main::counters();
my $queries = $after->{replay_db_queries_total} - $before->{replay_db_queries_total};
my $batches = $after->{replay_db_batches_total} - $before->{replay_db_batches_total};
Test::More::is($ok, 50, 'TEST 1: 50 of 50 answered with their object') or Test::More::diag("@other");
Test::More::is($queries, 50, 'TEST 1: 50 queries sent');
Test::More::ok($batches >= 1 && $batches <= 25,
               "TEST 1: in $batches writes (at most 25: batches of two or more)");
Test::More::is(ReplayTest::psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 't036'"),
               '2', 'TEST 1: on two connections');
--- request
GET /game/2
--- s3_requests eval
sub { main::s3_served(2) }
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- no_error_log
[error]



=== TEST 2: ... one at a time with pipeline=off: one write per query
--- init
my $before = main::counters();
my ($ok, @other) = main::check_all(map { '/one/' . (1, 2, 8)[$_ % 3] } 1 .. 30);
my $after = main::counters();
my $queries = $after->{replay_db_queries_total} - $before->{replay_db_queries_total};
my $batches = $after->{replay_db_batches_total} - $before->{replay_db_batches_total};
Test::More::is($ok, 30, 'TEST 2: 30 of 30 answered with their object') or Test::More::diag("@other");
Test::More::is("$queries $batches", '30 30', 'TEST 2: 30 queries in 30 writes');
--- request
GET /one/8
--- s3_requests eval
sub { main::s3_served(8) }
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')



=== TEST 3: a query that fails in a batch fails its request only
Id 13 divides by zero (500), "x13" is no bigint (400); the others of
their batches are answered.
--- init
my @paths = map { '/batch/' . (1, 2, 8)[$_ % 3] } 1 .. 30;
splice @paths, 10, 0, '/batch/13';
splice @paths, 20, 0, '/batch/x13';
my $before = main::counters();
my @res = main::get_parallel(\@paths);
my $after = main::counters();
my ($ok, %bad) = (0);
for my $i (0 .. $#paths) {
    my ($id) = $paths[$i] =~ m{/(\w+)$};
    if ($main::keys{$id}) {
        $ok++ if $res[$i][0] == 200 && $res[$i][1] eq ReplayTest::fixture($main::keys{$id});
    } else {
        $bad{$id} = $res[$i][0];
    }
}
my $batches = $after->{replay_db_batches_total} - $before->{replay_db_batches_total};
Test::More::is($ok, 30, 'TEST 3: the 30 others answered with their object');
Test::More::is("$bad{13} $bad{x13}", '500 400', 'TEST 3: 500 for the division by zero, 400 for the value');
Test::More::ok($batches < 32, "TEST 3: 32 queries in $batches writes");
--- request
GET /game/1
--- s3_requests eval
sub { main::s3_served(1) }
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: database query failed: ERROR: division by zero
replay: the database rejected a parameter: ERROR: invalid input syntax for type bigint: "x13"



=== TEST 4: a query past query_timeout in a batch: 504 and cancelled, the others of the batch answered
pool=1: the slow query (id 99, pg_sleep(5)) and ten others share the
connection's batches.  Each query has query_timeout from when the server
starts on it.
--- init
my $t0 = Time::HiRes::time();
my @paths = ('/slow/99', map { '/slow/' . (1, 2, 8)[$_ % 3] } 1 .. 10);
@paths = (@paths[1 .. 5], $paths[0], @paths[6 .. 10]);
my @res = main::get_parallel(\@paths);
my $took = Time::HiRes::time() - $t0;
my ($ok, $slow) = (0, '');
for my $i (0 .. $#paths) {
    my ($id) = $paths[$i] =~ m{/(\w+)$};
    if ($id eq '99') {
        $slow = $res[$i][0];
    } elsif ($res[$i][0] == 200 && $res[$i][1] eq ReplayTest::fixture($main::keys{$id})) {
        $ok++;
    }
}
Test::More::is($slow, 504, 'TEST 4: the slow one is a 504');
Test::More::is($ok, 10, 'TEST 4: the ten others answered with their object');
# valgrind's pace: the ten take seconds, the slow one's 5 s are not waited
Test::More::ok($took < ($ENV{TEST_NGINX_USE_VALGRIND} ? 20 : 3),
               sprintf('TEST 4: all within %.2f s (the sleep was 5 s)', $took));
my $left = '';
for (1 .. 50) {
    $left = ReplayTest::psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%t036-slow%' AND pid <> pg_backend_pid()");
    last if $left eq '0';
    Time::HiRes::sleep(0.02);
}
Test::More::is($left, '0', 'TEST 4: the slow query was cancelled on the server');
--- request
GET /slow/2
--- s3_requests eval
sub { main::s3_served(2) }
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- error_log
replay: database query timed out after 500 ms



=== TEST 5: ten thousand rows in a batch: 500 for that request, the others answered
--- init
my @paths = map { '/rows/' . (1, 2, 8)[$_ % 3] } 1 .. 12;
splice @paths, 4, 0, '/rows/999';
my @res = main::get_parallel(\@paths);
my ($ok, $many) = (0, '');
for my $i (0 .. $#paths) {
    my ($id) = $paths[$i] =~ m{/(\w+)$};
    if ($id eq '999') {
        $many = $res[$i][0];
    } elsif ($res[$i][0] == 200 && $res[$i][1] eq ReplayTest::fixture($main::keys{$id})) {
        $ok++;
    }
}
Test::More::is($many, 500, 'TEST 5: 500 for the query of many rows');
Test::More::is($ok, 12, 'TEST 5: the twelve others answered with their object');
--- request
GET /rows/8
--- s3_requests eval
sub { main::s3_served(8) }
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- error_log
replay: the key query returned more than one row



=== TEST 6: PostgreSQL spends less CPU per lookup in batches than one at a time
The same 1,500 lookups, 50 at once, on two connections each way; the CPU
of the backends (utime + stime from /proc).
--- init
SKIP: {
Test::More::skip('TEST 6: CPU under valgrind means little', 4)
    if $ENV{TEST_NGINX_USE_VALGRIND};
main::load('/game/', 60, 50);
main::load('/one/', 60, 50);
my ($on0) = main::backend_ticks('t036');
my ($off0) = main::backend_ticks('t036-off');
my $on = main::load('/game/', 1500, 50);
my $off = main::load('/one/', 1500, 50);
my ($on1, $non) = main::backend_ticks('t036');
my ($off1, $noff) = main::backend_ticks('t036-off');
Test::More::is($on->{200}, 1500, 'TEST 6: 1,500 lookups in batches answered');
Test::More::is($off->{200}, 1500, 'TEST 6: 1,500 lookups one at a time answered');
Test::More::is("$non $noff", '2 2', 'TEST 6: two connections each');
Test::More::cmp_ok($on1 - $on0, '<', $off1 - $off0,
                   sprintf('TEST 6: backend CPU %d ticks in batches, %d one at a time',
                           $on1 - $on0, $off1 - $off0));
}
--- request
GET /game/1
--- s3_requests eval
sub { main::s3_served(1) }
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
