# The PostgreSQL client's timeouts and broken connections: a query past
# query_timeout is cancelled on the server, never left running; a query
# that may have run is never sent twice.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use POSIX ();
use Time::HiRes ();

# Runs psql with "\watch" on a query that counts something, every 20 ms,
# in the background; stop_watch() ends it and gives the counts seen.
my $watch_pid;
my $watch_file = "/tmp/replay-t031-watch.$$";

worker_connections(1024);

no_shuffle();
run_tests();


sub start_watch {
    my ($sql) = @_;

    my @psql = ($ENV{TEST_NGINX_PSQL}, '-X', '-At',
                '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
                '-U', $ENV{TEST_NGINX_PG_SUPERUSER}, '-d', $ENV{TEST_NGINX_PG_DB});

    open my $sql_fh, '>', "$watch_file.sql" or die "$watch_file.sql: $!";
    print $sql_fh "$sql \\watch 0.02\n";
    close $sql_fh;

    $watch_pid = fork;
    die "fork: $!" unless defined $watch_pid;

    if ($watch_pid == 0) {
        open STDOUT, '>', $watch_file or POSIX::_exit(1);
        exec @psql, '-f', "$watch_file.sql" or POSIX::_exit(1);
    }

    # psql's first answer
    for (1 .. 100) {
        last if -s $watch_file;
        Time::HiRes::sleep(0.02);
    }
}

sub stop_watch {
    kill 'TERM', $watch_pid;
    waitpid $watch_pid, 0;
    unlink "$watch_file.sql";

    open my $fh, '<', $watch_file or return ();
    my @counts = grep { /^\d+$/ } map { chomp; $_ } <$fh>;
    close $fh;
    unlink $watch_file;

    return @counts;
}

# How many times the server log (log_statement = all) shows a query with
# the marker run.
sub executed {
    my ($marker) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_PG_LOG} or die "$ENV{TEST_NGINX_PG_LOG}: $!";
    my $n = grep { /LOG:  execute [^:]+: .*\Q$marker\E/ } <$fh>;
    close $fh;

    return $n;
}

# How many of the location's queries the server runs right now.
sub active {
    my ($marker) = @_;

    return ReplayTest::psql("SELECT count(*) FROM pg_stat_activity"
                            . " WHERE state = 'active'"
                            . " AND query LIKE '%$marker%'"
                            . " AND pid <> pg_backend_pid()");
}


__DATA__

=== TEST 1: queries past query_timeout are cancelled: never more running than the pool, none after a second
--- http_config
    replay_db  "$TEST_NGINX_PG_DSN application_name=t031" pool=2
               query_timeout=300ms queue_timeout=10s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t031-burst */
                             FROM games, pg_sleep($1::float8) WHERE id = 1"
                            $arg_s;
    }
--- init
my $cancelled = ReplayTest::pg_log_count('canceling statement due to user request');
main::start_watch("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%t031-burst%' AND pid <> pg_backend_pid()");
my @res = ReplayTest::get_concurrently([map { '/sleep?s=5' } 1 .. 6]);
my $end = Time::HiRes::time();
my $left = main::active('t031-burst');
while ($left ne '0' && Time::HiRes::time() - $end < 1) {
    Time::HiRes::sleep(0.05);
    $left = main::active('t031-burst');
}
my $gone = Time::HiRes::time() - $end;
my @seen = main::stop_watch();
my ($max) = sort { $b <=> $a } @seen;
Test::More::is(join(' ', map { $_->[0] } @res), '504 504 504 504 504 504',
               'TEST 1: six timeouts');
Test::More::ok(@seen > 10, "TEST 1: pg_stat_activity watched (@{[scalar @seen]} times)");
Test::More::ok(defined $max && $max <= 2,
               "TEST 1: at most pool=2 of them ran at once (saw " . ($max // 'none') . ")");
Test::More::is($left, '0', sprintf('TEST 1: none left running %.2f s after the last 504', $gone));
# each of the six cancelled; a cancel request may also interrupt the
# query behind it in its pipeline (PostgreSQL signals the backend and its
# process group), which is sent again and times out in turn
Test::More::cmp_ok(ReplayTest::pg_log_count('canceling statement due to user request') - $cancelled,
                   '>=', 6, 'TEST 1: PostgreSQL cancelled the six');
--- request
GET /sleep?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: database query timed out after 300 ms while waiting for the database's answer, database: "host=127.0.0.1 port=
--- no_error_log
did not take the cancel request
--- s3_requests
GET /replays/games/1/replay.bin




=== TEST 2: a connection broken after its query left: 503, logged, and the query is not sent again
--- http_config
    replay_db  "$TEST_NGINX_PG_DSN application_name=t031b" pool=2;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t031-killed */
                             FROM games, pg_sleep($1::float8) WHERE id = 1"
                            $arg_s;
    }
--- init
my $before = main::executed('t031-killed');
my $pid = fork;
if ($pid == 0) {
    # the query runs: its backend is terminated under it
    for (1 .. 100) {
        Time::HiRes::sleep(0.05);
        last if main::active('t031-killed') eq '1';
    }
    system($ENV{TEST_NGINX_PSQL}, '-X', '-q', '-At', '-h', $ENV{TEST_NGINX_PG_HOST},
           '-p', $ENV{TEST_NGINX_PG_PORT}, '-U', $ENV{TEST_NGINX_PG_SUPERUSER},
           '-d', $ENV{TEST_NGINX_PG_DB}, '-o', '/dev/null', '-c',
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%t031-killed%' AND pid <> pg_backend_pid()");
    POSIX::_exit(0);
}
my @res = ReplayTest::get_concurrently(['/sleep?s=3']);
waitpid $pid, 0;
Test::More::is($res[0][0], 503, 'TEST 2: 503');
Test::More::like($res[0][1], qr/^Retry-After: 1\r?$/mi, 'TEST 2: with Retry-After');
Test::More::is(main::executed('t031-killed') - $before, 1,
               'TEST 2: the query was sent once');
--- request
GET /sleep?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: database connection failed: FATAL: terminating connection due to administrator command
--- no_error_log
before the query left
--- s3_requests
GET /replays/games/1/replay.bin




=== TEST 3: pooled connections whose server is gone are replaced before the query leaves
--- http_config
    replay_db  "$TEST_NGINX_PG_DSN application_name=t031c" pool=4;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- init
# four pooled connections, then all four backends terminated at once
ReplayTest::get_concurrently([map { '/game/1' } 1 .. 4]);
my $n = ReplayTest::psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 't031c'");
ReplayTest::psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 't031c'");
# gone from the server (a query sent while a backend is still on its way
# out may have run: that one is a 503, see TEST 2)
for (1 .. 100) {
    last if ReplayTest::psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 't031c'") eq '0';
    Time::HiRes::sleep(0.02);
}
my @res = ReplayTest::get_concurrently([map { '/game/' . (1 + $_ % 2) } 1 .. 8]);
Test::More::ok($n >= 1, "TEST 3: $n pooled connections were terminated");
Test::More::is(join(' ', map { $_->[0] } @res), '200 200 200 200 200 200 200 200',
               'TEST 3: every request served by a new connection');
--- request
GET /game/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- no_error_log
[error]
--- s3_requests eval
[("GET /replays/games/1/replay.bin") x 8, ("GET /replays/games/2/replay.bin") x 5]




=== TEST 4: a query cancelled from elsewhere (pg_cancel_backend): sent again once, then 503
A cancel that the module did not send is not a bystander's: the query
goes once more, and a second cancel is obeyed.
--- http_config
    replay_db  "$TEST_NGINX_PG_DSN application_name=t031d" pool=2
               query_timeout=20s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location = /sleep {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t031-foreign */
                             FROM games, pg_sleep($1::float8) WHERE id = 1"
                            $arg_s;
    }
--- init
my $before = main::executed('t031-foreign');
my $pid = fork;
if ($pid == 0) {
    # each run of the query, once it runs, cancelled by an administrator
    for my $run (1, 2) {
        for (1 .. 200) {
            last if main::executed('t031-foreign') - $before >= $run
                    && main::active('t031-foreign') eq '1';
            Time::HiRes::sleep(0.05);
        }
        ReplayTest::psql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                         . " WHERE query LIKE '%t031-foreign%' AND state = 'active'"
                         . " AND pid <> pg_backend_pid()");
        Time::HiRes::sleep(0.2);
    }
    POSIX::_exit(0);
}
my @res = ReplayTest::get_concurrently(['/sleep?s=4']);
waitpid $pid, 0;
Test::More::is($res[0][0], 503, 'TEST 4: 503');
Test::More::like($res[0][1], qr/^Retry-After: 1\r?$/mi, 'TEST 4: with Retry-After');
Test::More::is(main::executed('t031-foreign') - $before, 2,
               'TEST 4: the query ran twice');
--- request
GET /sleep?s=0
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log
replay: database query failed: ERROR: canceling statement due to user request while waiting for the database's answer
--- grep_error_log eval: qr/replay: (?:the key query was cancelled, sending it again|database query failed): ERROR: canceling statement due to user request/
--- grep_error_log_out
replay: the key query was cancelled, sending it again: ERROR: canceling statement due to user request
replay: database query failed: ERROR: canceling statement due to user request
--- s3_requests
GET /replays/games/1/replay.bin
