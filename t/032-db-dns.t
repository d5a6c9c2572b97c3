# Host names in replay_db: resolved by nginx's resolver at each new
# connection when "resolver" is set, otherwise once when the configuration
# is read; never by libpq in the worker.  The suite's dnsmasq answers
# *.replay.test; t/services/dns-delay.py relays it late on demand.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

# what a request of another location may take while a lookup waits for
# DNS: 10 ms at the median, and none near the DNS delay, even on a busy
# machine; more under valgrind
our $fast = $ENV{TEST_NGINX_USE_VALGRIND} ? 0.1 : 0.010;
our $slowest = $ENV{TEST_NGINX_USE_VALGRIND} ? 0.5 : 0.1;

# how much longer things take under valgrind
our $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 3 : 1;

worker_connections(1024);

no_shuffle();
run_tests();


sub delay {
    my ($ms) = @_;

    open my $fh, '>', $ENV{TEST_NGINX_DNS_DELAY_FILE} or die $!;
    print $fh "$ms\n";
    close $fh;
}

# how many queries for a name the slow forwarder has relayed
sub queries { ReplayTest::dns_queries(@_) }

# one GET on a new connection: [status, seconds from the connection on]
sub timed_get {
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
    return [0, 0] unless $sock;

    my $t0 = Time::HiRes::time();
    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $resp = <$sock> // '';
    close $sock;

    my ($status) = $resp =~ m{^HTTP/\d\.\d (\d+)};

    return [$status // 0, Time::HiRes::time() - $t0];
}



__DATA__

=== TEST 1: with a resolver, the name is resolved by nginx's, libpq gets the address
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_SLOW_PORT valid=1s ipv6=off;
    replay_db "host=pg.replay.test port=$TEST_NGINX_PG_PORT dbname=replay
               user=replay application_name=t032";
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- init
main::delay(0);
my $before = main::queries('pg.replay.test');
my @res = ReplayTest::get_concurrently(['/game/1']);
Test::More::is($res[0][0], 200, 'TEST 1: 200');
Test::More::ok(main::queries('pg.replay.test') > $before,
               'TEST 1: the name went to the resolver');
# the connection is gone; its successor, past the answer's validity
# (valid=1s, counted in whole seconds by the resolver), asks again
ReplayTest::psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 't032'");
Time::HiRes::sleep(2.1);
$before = main::queries('pg.replay.test');
@res = ReplayTest::get_concurrently(['/game/2']);
Test::More::is($res[0][0], 200, 'TEST 1: 200 on a new connection');
Test::More::ok(main::queries('pg.replay.test') > $before,
               'TEST 1: the new connection resolved the name again');
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log eval
qr/replay_db "host=pg\.replay\.test port=\d+ dbname=replay" in \S+:\d+: host names are resolved by the resolver at each new connection/
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin



=== TEST 2: DNS answers after 1.5 s: the lookup waits, other requests of the worker do not
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_SLOW_PORT valid=1s ipv6=off;
    replay_db "host=pg.replay.test port=$TEST_NGINX_PG_PORT dbname=replay
               user=replay" connect_timeout=5s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }

    location = /plain {
        return 200 "plain\n";
    }
--- init
main::timed_get('/plain');
main::delay(1500);
my $pid = fork;
if ($pid == 0) {
    my $r = main::timed_get('/game/1');
    open my $fh, '>', "/tmp/replay-t032.$$" or POSIX::_exit(1);
    print $fh "@$r\n";
    close $fh;
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.1);
my ($n, $bad, @times) = (0, 0);
my $t0 = Time::HiRes::time();
while (Time::HiRes::time() - $t0 < 1.2) {
    my $r = main::timed_get('/plain');
    $n++;
    $bad++ if $r->[0] != 200;
    push @times, $r->[1];
    Time::HiRes::sleep(0.02);
}
@times = sort { $a <=> $b } @times;
my ($median, $max) = ($times[@times / 2], $times[-1]);
waitpid $pid, 0;
main::delay(0);
open my $fh, '<', "/tmp/replay-t032.$pid" or die;
my ($status, $secs) = split ' ', <$fh>;
close $fh;
unlink "/tmp/replay-t032.$pid";
Test::More::is($status, 200, 'TEST 2: the lookup answers once DNS does');
Test::More::ok($secs >= 1.4, sprintf('TEST 2: ... after %.2f s', $secs));
Test::More::is($bad, 0, "TEST 2: $n requests of another location meanwhile, all 200");
Test::More::ok($median < $main::fast,
               sprintf('TEST 2: they took %.1f ms at the median', $median * 1000));
Test::More::ok($max < $main::slowest,
               sprintf('TEST 2: %.1f ms at most', $max * 1000));
--- request
GET /game/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/2/replay.bin



=== TEST 3: connect_timeout covers resolving: 503, logged
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_SLOW_PORT valid=1s ipv6=off;
    replay_db "host=pg.replay.test port=$TEST_NGINX_PG_PORT dbname=replay
               user=replay" connect_timeout=300ms;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- init
main::delay(1500);
my $r = main::timed_get('/game/1');
main::delay(0);
Test::More::is($r->[0], 503, 'TEST 3: 503');
Test::More::ok($r->[1] < 1.2 * $main::slow, sprintf('TEST 3: after %.2f s', $r->[1]));
Time::HiRes::sleep(1.6);
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log eval
qr/\[error\] .*replay: database connection timed out after 300 ms while resolving the database's host name, database: "host=pg\.replay\.test port=\d+ dbname=replay", client: /
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 4: a name DNS does not know: 503, logged
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off;
    replay_db "host=nx.replay.test port=$TEST_NGINX_PG_PORT dbname=replay
               user=replay";
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- request
GET /game/1
--- error_code: 503
--- response_headers
Retry-After: 1
--- error_log
replay: could not resolve the database host "nx.replay.test" (3: Host not found)
replay: no address for any host of the database



=== TEST 5: failover between names: the first host refuses, the second serves
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off;
    replay_db "host=pg.replay.test,nx.replay.test,pg.replay.test
               port=1,1,$TEST_NGINX_PG_PORT dbname=replay user=replay";
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- request
GET /game/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- error_log
could not resolve the database host "nx.replay.test"
--- s3_requests
GET /replays/games/8/notes.txt



=== TEST 6: no resolver: the name is resolved when the configuration is read, and nginx says so
--- http_config
    replay_db "host=localhost port=$TEST_NGINX_PG_PORT dbname=replay
               user=replay";
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- request
GET /game/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- error_log eval
qr/\[notice\] .*replay_db "host=localhost port=\d+ dbname=replay" in \S+:\d+: no resolver, host "localhost" resolved now to 127\.0\.0\.1; a new address needs a reload/
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 7: no resolver and a name that does not resolve: nginx refuses the configuration
--- http_config
    replay_db "host=no-such-host.invalid dbname=replay";
--- config
    location = /plain {
        return 200;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*replay_db "host=no-such-host\.invalid dbname=replay" in \S+:\d+: host "no-such-host\.invalid" not found/



=== TEST 8: unix sockets and addresses are never resolved
--- http_config
    resolver  127.0.0.1:$TEST_NGINX_DNS_SLOW_PORT ipv6=off;
    replay_db "host=$TEST_NGINX_PG_SOCKET_DIR,127.0.0.1
               port=$TEST_NGINX_PG_PORT dbname=replay user=replay";
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- init
main::delay(1500);
my $r = main::timed_get('/game/1');
main::delay(0);
Test::More::is($r->[0], 200, 'TEST 8: 200');
Test::More::ok($r->[1] < 1 * $main::slow, sprintf('TEST 8: without asking DNS (%.2f s)', $r->[1]));
--- request
GET /game/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- no_error_log
resolved
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin
