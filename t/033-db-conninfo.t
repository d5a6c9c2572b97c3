# Connection strings as users write them: TLS with the suite's own CA
# (verify-full, a wrong CA, a wrong host name), sslmode, passfile,
# postgresql:// URIs, and the database's connect_timeout against servers
# that never answer.  The TLS cluster is t/services/db-extra's primary.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

# Blocks without a configuration get this one.
my $tls_config = <<'CONF';
    replay_s3_bucket       replays;
    replay_s3_credentials  env;

    location /verified/ {
        replay_db           "host=localhost port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=verify-full
                             sslrootcert=$TEST_NGINX_PG_CA
                             application_name=t033-verified";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /resolved/ {
        resolver            127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off;
        replay_db           "host=pg.replay.test port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=verify-full
                             sslrootcert=$TEST_NGINX_PG_CA
                             application_name=t033-resolved";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /wrong-ca/ {
        replay_db           "host=localhost port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=verify-full
                             sslrootcert=$TEST_NGINX_PG_WRONG_CA";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /wrong-name/ {
        resolver            127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off;
        replay_db           "host=wrong-name.replay.test
                             port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=verify-full
                             sslrootcert=$TEST_NGINX_PG_CA";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /require/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=require
                             application_name=t033-require";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /plaintext/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay sslmode=disable
                             application_name=t033-plaintext";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /uri/ {
        replay_db           "postgresql://replay@localhost:$TEST_NGINX_PGHA_PRIMARY_PORT/replay?sslmode=verify-full&sslrootcert=$TEST_NGINX_PG_CA&application_name=t033-uri";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /passfile/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay_pw
                             passfile=$TEST_NGINX_PG_PASSFILE";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /no-password/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PGHA_PRIMARY_PORT
                             dbname=replay user=replay_pw
                             passfile=/nonexistent/pgpass";
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /silent/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PG_SILENT_PORT
                             dbname=replay user=replay"
                            connect_timeout=500ms;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location /tls-stall/ {
        replay_db           "host=127.0.0.1 port=$TEST_NGINX_PG_TLS_STALL_PORT
                             dbname=replay user=replay sslmode=require"
                            connect_timeout=500ms;
        replay_s3_endpoint  $TEST_NGINX_S3_ENDPOINT;
        replay_key_query    "SELECT replay_url FROM games WHERE id = $1::bigint" $id;
    }

    location = /plain {
        return 200 "plain\n";
    }
CONF

my $tls_http_config = <<'CONF';
    map $uri $id {
        ~/(?<n>\d+)$  $n;
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->config) {
        $block->set_value('config', $tls_config);
        $block->set_value('http_config', $tls_http_config);
    }
});

# how much longer things take under valgrind
our $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 3 : 1;

worker_connections(1024);

no_shuffle();
run_tests();


# psql on the TLS primary
sub psql_tls {
    my ($sql) = @_;

    my $out = `$ENV{TEST_NGINX_PSQL} -X -At -h 127.0.0.1 -p $ENV{TEST_NGINX_PGHA_PRIMARY_PORT} -U postgres -d replay -c "$sql" 2>&1`;
    chomp $out;
    return $out;
}

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

=== TEST 1: sslmode=verify-full with the suite's CA: the lookup runs over TLS
--- request
GET /verified/1
--- response_body eval
ReplayTest::fixture('games/1/replay.bin')
--- error_log eval
qr/\[notice\] .*replay_db "host=localhost port=\d+ dbname=replay" in \S+:\d+: no resolver, host "localhost" resolved now to 127\.0\.0\.1/
--- s3_requests
GET /replays/games/1/replay.bin



=== TEST 2: ... PostgreSQL saw a TLS connection
--- init
ReplayTest::get_concurrently(['/verified/2', '/verified/1']);
Test::More::is(main::psql_tls("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 't033-verified'"),
               't', 'TEST 2: TLS');
--- request
GET /plain
--- response_body
plain
--- s3_requests
GET /replays/games/2/replay.bin
GET /replays/games/1/replay.bin



=== TEST 3: verify-full with a name from the resolver: verified against the name, connected to its address
--- request
GET /resolved/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 4: a certificate of another CA is refused, and the log says why
--- request
GET /wrong-ca/1
--- error_code: 503
--- response_headers
Retry-After: 1
--- error_log eval
qr/\[error\] .*replay: database connection failed: connection to server at "127\.0\.0\.1", port \d+ failed: SSL error: certificate verify failed while connecting to the database, database: "host=localhost port=\d+ dbname=replay", client: /



=== TEST 5: a certificate for another name is refused, and the log says why
--- request
GET /wrong-name/1
--- error_code: 503
--- error_log
server certificate for "localhost" (and 2 other names) does not match host name "wrong-name.replay.test"



=== TEST 6: sslmode=require encrypts without verifying; sslmode=disable does not encrypt
--- init
my @res = ReplayTest::get_concurrently(['/require/1', '/plaintext/1']);
Test::More::is("$res[0][0] $res[1][0]", '200 200', 'TEST 6: both served');
Test::More::is(main::psql_tls("SELECT string_agg(a.application_name || '=' || s.ssl, ',' ORDER BY a.application_name) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name IN ('t033-require', 't033-plaintext')"),
               't033-plaintext=false,t033-require=true', 'TEST 6: as asked');
--- request
GET /plain
--- response_body
plain
--- s3_requests
GET /replays/games/1/replay.bin
GET /replays/games/1/replay.bin



=== TEST 7: a postgresql:// URI with verify-full
--- request
GET /uri/8
--- response_body eval
ReplayTest::fixture('games/8/notes.txt')
--- s3_requests
GET /replays/games/8/notes.txt



=== TEST 8: a password from a passfile; it never reaches the log
--- log_level: debug
--- timeout: 15
--- request
GET /passfile/2
--- response_body eval
ReplayTest::fixture('games/2/replay.bin')
--- no_error_log
pw-5ecret
--- s3_requests
GET /replays/games/2/replay.bin



=== TEST 9: no password: 503, and the log says so
--- request
GET /no-password/2
--- error_code: 503
--- error_log
fe_sendauth: no password supplied



=== TEST 10: connect_timeout against a listener that never accepts
--- init
my $r = main::timed_get('/silent/1');
Test::More::is($r->[0], 503, 'TEST 10: 503');
Test::More::ok($r->[1] >= 0.45 && $r->[1] < 1.5 * $main::slow,
               sprintf('TEST 10: after %.2f s', $r->[1]));
--- request
GET /plain
--- response_body
plain
--- error_log eval
qr/\[error\] .*replay: database connection timed out after 500 ms while connecting to the database, database: "host=127\.0\.0\.1 port=\d+ dbname=replay", client: /



=== TEST 11: a TLS handshake that stalls: the worker goes on, the lookup times out
--- init
main::timed_get('/plain');
my $pid = fork;
if ($pid == 0) {
    my $r = main::timed_get('/tls-stall/1');
    POSIX::_exit($r->[0] == 503 && $r->[1] >= 0.45 ? 0 : 1);
}
Time::HiRes::sleep(0.05);
my @times;
for (1 .. 10) {
    my $r = main::timed_get('/plain');
    push @times, $r->[1] if $r->[0] == 200;
    Time::HiRes::sleep(0.03);
}
waitpid $pid, 0;
Test::More::is($?, 0, 'TEST 11: the lookup got 503 after connect_timeout');
@times = sort { $a <=> $b } @times;
Test::More::is(scalar @times, 10, 'TEST 11: meanwhile, another location answered');
Test::More::ok($times[-1] < 0.3 * $main::slow, sprintf('TEST 11: in %.1f ms at most', $times[-1] * 1000));
--- request
GET /plain
--- response_body
plain
--- error_log
replay: database connection timed out after 500 ms while connecting to the database
