# replay_key_cache ... notify=CHANNEL: each worker keeps a LISTEN on the
# channel, and "NOTIFY channel, 'id'" drops the entry of that id, so that
# an UPDATE followed by a NOTIFY changes what is served at once, by every
# worker.  Two workers here; a server of the blocks listens with
# "reuseport", so that the kernel spreads its connections over both.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use Time::HiRes ();

our @s3;

workers(2);

no_shuffle();
run_tests();


sub reset_rows {
    my $out = ReplayTest::psql(
        "CREATE TABLE IF NOT EXISTS notify_games (id text PRIMARY KEY, "
        . "replay_url text); "
        . "TRUNCATE notify_games; "
        . "INSERT INTO notify_games VALUES "
        . "('a', 'games/1/replay.bin'), ('b', 'games/2/replay.bin')");

    Test::More::like($out, qr/INSERT 0 2/, 'notify_games reset')
        or Test::More::diag($out);
}

# the workers' LISTENs, once both are up
sub wait_listening {
    my ($channel, $n) = @_;

    my $count = '';

    for (1 .. ($ENV{TEST_NGINX_USE_VALGRIND} ? 1200 : 200)) {
        $count = ReplayTest::psql(
            "SELECT count(*) FROM pg_stat_activity"
            . " WHERE query = 'LISTEN $channel' AND state = 'idle'");
        last if $count eq $n;
        Time::HiRes::sleep(0.05);
    }

    Test::More::is($count, $n, "$n LISTEN $channel, one per worker");
}

# GET on a connection of its own to the reuseport server: [worker pid,
# X-Key-Cache, body]
sub get_one {
    my ($path) = @_;

    my $port = $Test::Nginx::Util::RandPorts->{TEST_NGINX_RAND_PORT_1};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $port, Timeout => 10)
        or die "connect: $!\n";

    binmode $sock;
    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";

    my ($head, $body) = ReplayTest::read_response($sock, 10);
    my ($pid) = $head =~ /^X-Worker: (\d+)\r?$/mi;
    my ($state) = $head =~ /^X-Key-Cache: (\w+)\r?$/mi;

    for my $key ('games/1/replay.bin', 'games/2/replay.bin') {
        push @main::s3, "GET /replays/$key"
            if $body eq ReplayTest::fixture($key);
    }

    return [$pid // 0, $state // '', $body // ''];
}

sub sql_ok {
    my ($sql) = @_;

    my $out = ReplayTest::psql($sql);
    Test::More::like($out, qr/^(UPDATE 1|NOTIFY)$/, $sql)
        or Test::More::diag($out);
}

# until each worker has served PATH twice: {pid => [[state, body], ...]}
sub from_both {
    my ($path) = @_;

    my %seen;

    for (1 .. 200) {
        my ($pid, $state, $body) = @{ get_one($path) };
        push @{ $seen{$pid} }, [$state, $body];
        last if keys %seen == 2 && !grep { @$_ < 2 } values %seen;
    }

    return \%seen;
}


__DATA__

=== TEST 1: an UPDATE and a NOTIFY change the object both workers serve, within a second
The entry of "a" is valid for an hour.  After the UPDATE the cache still
serves the old key (HIT, so without the NOTIFY nothing would change);
after "NOTIFY replay_keys, 'a'" both workers serve the new object, the
first request from the database, the others from the cache again.  "b"
is not dropped.
--- http_config
    server {
        listen  127.0.0.1:$TEST_NGINX_RAND_PORT_1 reuseport;

        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        # (valgrind takes seconds to connect at start)
        replay_db              "$TEST_NGINX_PG_DSN application_name=t072"
                               connect_timeout=20s;
        replay_key_cache       notify_keys:1m valid=1h notify=replay_keys;

        location ~ ^/c/(.*)$ {
            replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
            replay_key_query    "SELECT replay_url FROM notify_games
                                 WHERE id = $1" $1;
            add_header          X-Key-Cache $replay_key_cache always;
            add_header          X-Worker $pid always;
        }

        location = /status {
            replay_status;
        }
    }
--- config
    location = /t {
        return 200 "ok\n";
    }
--- init
main::reset_rows();
@main::s3 = ();
ReplayTest::wait_for_nginx();
--- request
GET /t
--- response_body
ok
--- after_request eval
[sub {
    main::wait_listening('replay_keys', 2);
    Test::More::ok(ReplayTest::wait_for_line('logs/error.log',
                       qr/\[info\] .*replay: listening on channel "replay_keys"/, 30),
                   'TEST 1: "listening on channel" logged');

    # filled: then every answer a HIT of the old object, on both workers
    my $old = ReplayTest::fixture('games/1/replay.bin');
    my $new = ReplayTest::fixture('games/2/replay.bin');
    main::get_one('/c/a');
    main::get_one('/c/b');
    main::sql_ok("UPDATE notify_games SET replay_url = 'games/2/replay.bin' WHERE id = 'a'");
    main::sql_ok("UPDATE notify_games SET replay_url = 'games/1/replay.bin' WHERE id = 'b'");
    my $before = main::from_both('/c/a');
    Test::More::is(CORE::join(' ', map { "$_->[0]:" . ($_->[1] eq $old ? 'old' : 'other') } map { @$_ } values %$before),
                   CORE::join(' ', ('HIT:old') x (map { @$_ } values %$before)),
                   'TEST 1: after the UPDATE alone, both workers serve the old object from the cache');

    # from when psql has the NOTIFY committed
    main::sql_ok("NOTIFY replay_keys, 'a'");
    my $t0 = Time::HiRes::time();

    # within a second: both workers serve the new object
    my ($after, $took);
    for (1 .. 20) {
        my $r = main::get_one('/c/a');
        $took = Time::HiRes::time() - $t0;
        last if $r->[2] eq $new;
        Time::HiRes::sleep(0.05);
    }
    Test::More::cmp_ok($took, '<', 1, sprintf('TEST 1: the new object %.3f s after the NOTIFY', $took));
    $after = main::from_both('/c/a');
    my @all = map { @$_ } values %$after;
    Test::More::is(scalar(grep { $_->[1] eq $new } @all), scalar @all,
                   'TEST 1: then both workers serve the new object (' . scalar(keys %$after) . ' workers, ' . @all . ' requests)');
    # (the other worker's copy of the NOTIFY may come after the first
    # answer refilled the entry, and drop it once more)
    Test::More::cmp_ok(scalar(grep { $_->[0] ne 'HIT' } @all), '<=', 1,
                       'TEST 1: from the cache again');

    my $b = main::get_one('/c/b');
    Test::More::is("$b->[1] " . ($b->[2] eq $new ? 'games/2' : 'other'), 'HIT games/2',
                   'TEST 1: "b" was not dropped');

    my $status = main::get_one('/status')->[2];
    Test::More::like($status, qr/^replay_key_cache_notify_drops_total [12]$/m,
                     'TEST 1: one entry dropped by a NOTIFY');
 }]
--- log_level: info
--- s3_requests eval
sub { @main::s3 }
