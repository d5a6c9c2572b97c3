# Failover with target_session_attrs=read-write against a real primary
# and its streaming standby (t/services/db-extra): lookups go to the
# primary; with the primary down they fail rather than go to a read-only
# server; once the standby is promoted they go there, without a reload.
# The old primary is started again at the end (as a second primary), so
# that the other files find their TLS server.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use Time::HiRes ();

worker_connections(1024);

no_shuffle();
run_tests();


sub psql_at {
    my ($port, $sql) = @_;

    my $out = `$ENV{TEST_NGINX_PSQL} -X -At -h 127.0.0.1 -p $port -U postgres -d replay -c "$sql" 2>&1`;
    chomp $out;
    return $out;
}

sub statuses {
    return join ' ', map { $_->[0] } ReplayTest::get_concurrently([@_]);
}


__DATA__

=== TEST 1: the primary moves: lookups follow it, never to a read-only server
--- http_config
    replay_db  "host=127.0.0.1,127.0.0.1
                port=$TEST_NGINX_PGHA_PRIMARY_PORT,$TEST_NGINX_PGHA_STANDBY_PORT
                dbname=replay user=replay target_session_attrs=read-write
                application_name=t035" pool=2 connect_timeout=2s;
--- config
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location ~ ^/game/(\d+)$ {
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }

    location ~ ^/any/(\d+)$ {
        replay_db           "host=127.0.0.1,127.0.0.1
                             port=$TEST_NGINX_PGHA_STANDBY_PORT,$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay application_name=t035-any";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint"
                            $1;
    }
--- init
my $primary = $ENV{TEST_NGINX_PGHA_PRIMARY_PORT};
my $standby = $ENV{TEST_NGINX_PGHA_STANDBY_PORT};

Test::More::is(main::psql_at($standby, 'SELECT pg_is_in_recovery()'), 't',
               'TEST 1: the standby streams from the primary');
Test::More::is(main::statuses('/game/1', '/game/2', '/any/1'), '200 200 200',
               'TEST 1: the lookups are answered');
Test::More::ok(main::psql_at($primary, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 't035'") > 0,
               'TEST 1: ... by the primary');
Test::More::ok(main::psql_at($standby, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 't035-any'") > 0,
               'TEST 1: without target_session_attrs, the standby, listed first, answers');

system("$ENV{TEST_NGINX_PGHA_PRIMARY_CTL} stop") == 0 or die "cannot stop the primary\n";
Test::More::is(main::statuses('/game/1', '/game/2'), '503 503',
               'TEST 1: the primary is down, the standby is read-only: 503');
Test::More::is(main::statuses('/any/1'), '200',
               'TEST 1: a lookup that takes any server still gets the standby');

system("$ENV{TEST_NGINX_PGHA_STANDBY_CTL} promote") == 0 or die "cannot promote the standby\n";
my $t0 = Time::HiRes::time();
my $s = main::statuses('/game/1');
while ($s ne '200' && Time::HiRes::time() - $t0 < 5) {
    Time::HiRes::sleep(0.1);
    $s = main::statuses('/game/1');
}
Test::More::is($s, '200', sprintf('TEST 1: the standby is promoted: 200 (after %.1f s)', Time::HiRes::time() - $t0));
Test::More::is(main::statuses(map { "/game/$_" } 1, 2, 8, 1, 2, 8), '200 200 200 200 200 200',
               'TEST 1: and every lookup after');
Test::More::ok(main::psql_at($standby, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 't035'") > 0,
               'TEST 1: ... by the new primary');

system("$ENV{TEST_NGINX_PGHA_PRIMARY_CTL} start") == 0 or die "cannot start the old primary\n";
--- request
GET /game/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- error_log eval
qr/\[error\] .*replay: database connection failed: .*port \d+ failed: session is read-only while connecting to the database, database: "host=127\.0\.0\.1,127\.0\.0\.1 port=\d+,\d+ dbname=replay", client: /
--- s3_requests eval
# the lookups answered 200: three, /any/1 while the primary is down, the
# first after the promotion, six, the request
[("GET /replays/games/1/replay.bin") x 6, ("GET /replays/games/2/replay.bin") x 3,
 ("GET /replays/games/8/notes.txt") x 3]
