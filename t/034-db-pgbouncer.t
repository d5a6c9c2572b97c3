# Behind PgBouncer in transaction pooling mode (t/services/db-extra): a
# statement prepared in one transaction is gone in the next, so lookups
# either use the unnamed statement (replay_db ... prepare=off) or find out
# at the first lookup and switch to it; and a PgBouncer restart under load
# costs at most the requests that hit it while it was down.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

# Blocks without a configuration get this one.
my $pgbouncer_config = <<'CONF';
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/prepared/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t034-prepared */ FROM games
                             WHERE id = $1::bigint" $1;
    }

    location ~ ^/unnamed/(\d+)$ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGB_PORT
                             dbname=replay user=replay" pool=4 prepare=off;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t034-unnamed */ FROM games
                             WHERE id = $1::bigint" $1;
    }

    location ~ ^/load/(\d+)$ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGB_PORT
                             dbname=replay user=replay" pool=4 prepare=off
                            connect_timeout=1s;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t034-load */ FROM games
                             WHERE id = $1::bigint" $1;
    }
CONF

my $pgbouncer_http_config = <<'CONF';
    replay_db  "host=127.0.0.1 port=$TEST_NGINX_PGB_PORT dbname=replay
                user=replay" pool=4;
CONF

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->config) {
        $block->set_value('config', $pgbouncer_config);
        $block->set_value('http_config', $pgbouncer_http_config);
    }
});

worker_connections(1024);

# the objects of the ids check_all asks for
our %keys = (1 => 'games/1/replay.bin', 2 => 'games/2/replay.bin',
             8 => 'games/8/notes.txt');

no_shuffle();
run_tests();


# lines of the main cluster's statement log that match a pattern
sub pg_log_lines {
    my ($re) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_PG_LOG} or die $!;
    my $n = grep { $_ =~ $re } <$fh>;
    close $fh;

    return $n;
}

# one GET on a new connection: its status
sub status_of {
    my ($path) = @_;

    # nginx may still be starting (under valgrind it takes a while)
    my $sock;
    for (1 .. 200) {
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $Test::Nginx::Util::ServerPortForClient,
                                      Timeout => 10);
        last if $sock;
        Time::HiRes::sleep(0.1);
    }
    return 0 unless $sock;

    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $resp = <$sock> // '';
    close $sock;

    return $resp =~ m{^HTTP/\d\.\d (\d+)} ? $1 : 0;
}

# ids 1, 2, 8 in turn; every answer checked against its object.  With
# "parallel", all at once from one curl (ReplayTest::get_parallel).
sub check_all {
    my ($prefix, $n, $parallel) = @_;

    my @ids = map { (1, 2, 8)[$_ % 3] } 1 .. $n;
    my @paths = map { "$prefix$_" } @ids;
    my @res = $parallel
              ? map { [$_->[0], '', $_->[1]] } ReplayTest::get_parallel(\@paths)
              : ReplayTest::get_concurrently(\@paths);
    my $ok = 0;

    for my $i (0 .. $#ids) {
        $ok++ if $res[$i][0] == 200
                 && $res[$i][2] eq ReplayTest::fixture($main::keys{$ids[$i]});
    }

    return $ok;
}

# what S3 sees of check_all(PREFIX, $n) and of "GET PREFIX<ID>"s
sub s3_of {
    my ($n, @ids) = @_;

    return map { "GET /replays/$main::keys{$_}" }
               (map { (1, 2, 8)[$_ % 3] } 1 .. $n), @ids;
}


__DATA__

=== TEST 1: prepare=off: unnamed statements, right answers through PgBouncer
--- init
Test::More::is(main::check_all('/unnamed/', 40), 40, 'TEST 1: 40 concurrent lookups, every body right');
Test::More::ok(main::pg_log_lines(qr/execute <unnamed>: SELECT replay_url \/\* t034-unnamed/) >= 40,
               'TEST 1: as unnamed statements');
Test::More::is(main::pg_log_lines(qr/ngx_replay_.*t034-unnamed/), 0,
               'TEST 1: never a named one');
--- request
GET /unnamed/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- no_error_log
prepared statements do not last
[error]
--- s3_requests eval
[main::s3_of(40, 2)]



=== TEST 2: prepare=on (the default): the first lookup finds out, and the worker switches to unnamed statements
--- init
Test::More::is(main::check_all('/prepared/', 1), 1, 'TEST 2: the first lookup is answered');
Test::More::is(main::check_all('/prepared/', 40), 40, 'TEST 2: then 40 concurrent ones, every body right');
Test::More::is(main::pg_log_lines(qr/execute ngx_replay_\w+: SELECT replay_url \/\* t034-prepared/), 0,
               'TEST 2: no prepared statement ever ran');
--- request
GET /prepared/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- error_log eval
qr/\[warn\] .*replay: prepared statements do not last on this database's connections \(a pooler in transaction mode\?\); using unnamed statements \(replay_db ... prepare=off says so at once\) while waiting for the database's answer, database: "host=127\.0\.0\.1 port=\d+ dbname=replay", client: /
--- no_error_log
[error]
--- s3_requests eval
[main::s3_of(1), main::s3_of(40, 8)]



=== TEST 3: PgBouncer restarts under load: 503s only while it is down, then every lookup answers
--- init
my $file = "/tmp/replay-t034.$$";
%main::served = ();
$main::served{1}++ if main::status_of('/load/1') == 200;
my $t0 = Time::HiRes::time();
my @pids;
for my $c (1 .. 4) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open my $out, '>', "$file.$c" or POSIX::_exit(1);
        while (Time::HiRes::time() - $t0 < 3) {
            my $s = main::status_of("/load/" . (1 + $c % 2));
            printf $out "%.3f %d\n", Time::HiRes::time() - $t0, $s;
            Time::HiRes::sleep(0.01);
        }
        close $out;
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
Time::HiRes::sleep(1);
my $down = Time::HiRes::time() - $t0;
system("$ENV{TEST_NGINX_PGB_CTL} restart") == 0 or die "PgBouncer restart failed\n";
my $up = Time::HiRes::time() - $t0;
waitpid $_, 0 for @pids;
my (%status, $n, @late);
for my $c (1 .. 4) {
    open my $in, '<', "$file.$c" or die;
    while (<$in>) {
        my ($t, $s) = split;
        $status{$s}++;
        $main::served{1 + $c % 2}++ if $s == 200;
        $n++;
        push @late, sprintf('%s at %.2f s', $s, $t)
            if $s != 200 && ($t < $down || $t > $up + 1);
    }
    close $in;
    unlink "$file.$c";
}
Test::More::ok($n > 100, "TEST 3: $n requests under load");
Test::More::is(join(',', sort grep { $_ != 200 && $_ != 503 } keys %status), '',
               'TEST 3: every answer a 200 or a 503 (' . join(', ', map { "$_: $status{$_}" } sort keys %status) . ')');
Test::More::is("@late", '', sprintf('TEST 3: no error but while PgBouncer restarted (%.2f to %.2f s) and a second after', $down, $up));
Test::More::is(main::check_all('/load/', 20), 20, 'TEST 3: after the restart, 20 of 20 answered');
--- request
GET /load/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- s3_requests eval
# what answered 200 under load, then check_all and the request
sub { ((map { main::s3_of(0, ($_) x $main::served{$_}) } keys %main::served),
       main::s3_of(20, 1)) }
--- error_log
replay: database connection failed



=== TEST 4: batches through PgBouncer: the queries of a batch, each its own transaction, each answered with its own row
Transaction pooling hands each transaction to any server connection; a
batch's queries (pipeline mode, a Sync each) come back in order all the
same, with unnamed statements (prepare=off) and after the default has
switched to them.  50 ms a query, so that the lookups that come meanwhile
wait for a batch.
--- http_config
    replay_db  "host=127.0.0.1 port=$TEST_NGINX_PGB_PORT dbname=replay
                user=replay" pool=2 prepare=off;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/unnamed/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t034-batch */
                             FROM games, pg_sleep(0.05)
                             WHERE id = $1::bigint" $1;
    }

    location ~ ^/prepared/(\d+)$ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGB_PORT
                             dbname=replay user=replay" pool=2;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url /* t034-batch-default */
                             FROM games, pg_sleep(0.05)
                             WHERE id = $1::bigint" $1;
    }

    location = /status {
        replay_status;
    }
--- init
my $batches = sub {
    my ($sock) = ReplayTest::open_request('/status');
    my ($head, $body) = ReplayTest::read_response($sock, 10);
    my ($q) = $body =~ /^replay_db_queries_total (\d+)$/m;
    my ($b) = $body =~ /^replay_db_batches_total (\d+)$/m;
    return ($q // -1, $b // -1);
};
my ($q0, $b0) = $batches->();
Test::More::is(main::check_all('/unnamed/', 40, 1), 40, 'TEST 4: prepare=off: 40 concurrent lookups, every body right');
my ($q1, $b1) = $batches->();
Test::More::is($q1 - $q0, 40, 'TEST 4: 40 queries');
Test::More::ok($b1 - $b0 <= 20, 'TEST 4: in ' . ($b1 - $b0) . ' writes (at most 20)');
Test::More::is(main::check_all('/prepared/', 1), 1, 'TEST 4: the default: the first lookup finds the pooler out');
Test::More::is(main::check_all('/prepared/', 40, 1), 40, 'TEST 4: then 40 concurrent lookups, every body right');
my ($q2, $b2) = $batches->();
Test::More::ok($b2 - $b1 <= ($q2 - $q1) / 2, 'TEST 4: in ' . ($b2 - $b1) . ' writes for ' . ($q2 - $q1) . ' queries');
--- request
GET /unnamed/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- error_log
using unnamed statements
--- s3_requests eval
[main::s3_of(40), main::s3_of(1), main::s3_of(40), main::s3_of(0, 8)]
