#!/usr/bin/perl
# The reliability scenarios of t/reliability/run (which starts the
# services and sets the environment this reads).  One nginx in normal
# master/worker mode, 2 workers, a configuration of its own in
# $REL_DIR/nginx; each scenario loads it, then checks that no worker
# crashed, that each worker's descriptors and memory are back where they
# were, that the database pools are neither empty nor past their size, and
# that good requests still succeed.  A service that goes away may cause
# errors only while it is away and for a stated grace time after it is
# back; from then on every request must succeed.  After the last scenario
# nginx is stopped and the log it wrote is read.  TAP on stdout; the last
# line says "N passed, M failed".
#
#   perl t/reliability/reliability.pl [SCENARIO...]     (via t/reliability/run)

use strict;
use warnings;

use FindBin ();
use lib $FindBin::Bin, "$FindBin::Bin/../lib";

use Digest::MD5 qw(md5_hex);
use File::Path qw(make_path);
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use POSIX qw(WNOHANG _exit setsid);
use Time::HiRes qw(time sleep);

use AwsCreds ();
use Load ();

$| = 1;

# ---------------------------------------------------------------- settings

my %E = map { $_ => $ENV{$_} } grep { /^(TEST_NGINX_|REL_)/ } keys %ENV;

for (qw(REL_DIR REL_MODULE REL_PORT REL_STALL_PORT TEST_NGINX_PG_PORT
        TEST_NGINX_S3_ENDPOINT TEST_NGINX_FIXTURES))
{
    die "reliability.pl: \$$_ is not set: run t/reliability/run\n"
        unless defined $E{$_};
}

my $DIR      = $E{REL_DIR};
my $NGX_DIR  = "$DIR/nginx";
my $NGINX    = $E{REL_NGINX} || '/usr/sbin/nginx';
my $PORT     = $E{REL_PORT};
my $STALL    = $E{REL_STALL_PORT};
my $WORKERS  = 2;
my $POOL     = 8;
my $TIMEOUT_POOL = 4;           # of the location whose queries time out
my $PSQL     = $E{TEST_NGINX_PSQL};
my @PSQL     = ($PSQL, '-X', '-At', '-h', $E{TEST_NGINX_PG_HOST},
                '-p', $E{TEST_NGINX_PG_PORT}, '-U', $E{TEST_NGINX_PG_USER},
                '-d', $E{TEST_NGINX_PG_DB});
my $ERRLOG   = "$NGX_DIR/logs/error.log";

$Load::Port = $PORT;

my ($passed, $failed, $ntest) = (0, 0, 0);
my @children;                   # pids to stop on exit

sub ok {
    my ($cond, $name, @diag) = @_;

    $ntest++;

    if ($cond) {
        $passed++;
        print "ok $ntest - $name\n";

    } else {
        $failed++;
        print "not ok $ntest - $name\n";
        print map { "#   $_\n" } map { split /\n/ } @diag;
    }

    return $cond;
}

sub note { print map { "# $_\n" } map { split /\n/ } @_ }

# ---------------------------------------------------------------- fixtures

# id => { key, file, body (small ones), md5, len }, from the database and
# the local copies t/services/up keeps
my (%GAME, @VALID, @MISSING, @REFUSED);

sub psql {
    my ($sql) = @_;
    open my $fh, '-|', @PSQL, '-c', $sql or die "psql: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    die "psql failed: $sql\n" if $?;
    $out =~ s/\s+\z//;
    return $out;
}

sub load_fixtures {
    my %file;

    open my $fh, '<', "$E{TEST_NGINX_FIXTURES}/keys.txt" or die "keys.txt: $!";
    while (my $l = <$fh>) {
        chomp $l;
        my ($k, $f) = split /\t/, $l, 2;
        $file{$k} = $f;
    }
    close $fh;

    my $rows = psql("SELECT id, coalesce(encode(convert_to(replay_url, 'UTF8'), 'hex'), '') FROM games ORDER BY id");

    for my $line (split /\n/, $rows) {
        my ($id, $hex) = split /\|/, $line;
        my $key = pack 'H*', $hex;

        if (!defined $file{$key}) {
            push @MISSING, $id;
            next;
        }

        # an empty, "." or ".." segment: refused, whatever S3 holds
        if (grep { $_ eq '' || $_ eq '.' || $_ eq '..' } split m{/}, $key, -1) {
            push @REFUSED, $id;
            $GAME{$id} = { key => $key };
            next;
        }

        open my $o, '<:raw', $file{$key} or die "$file{$key}: $!";
        local $/;
        my $data = <$o>;
        close $o;

        $GAME{$id} = { key => $key, md5 => md5_hex($data),
                       len => length $data,
                       body => length $data <= 65536 ? $data : undef };
        push @VALID, $id;
    }

    die "no valid games\n" unless @VALID > 20;
}

# valid ids a load mixes (not the 50 MiB one)
sub small_valid { grep { $GAME{$_}{len} <= 1048576 } @VALID }

# ---------------------------------------------------------------- nginx

sub write_config {
    my $s3 = $E{TEST_NGINX_S3_ENDPOINT};
    my $dsn = $E{TEST_NGINX_PG_DSN};

    make_path("$NGX_DIR/logs", "$NGX_DIR/conf", "$NGX_DIR/html",
              "$NGX_DIR/tmp");
    chmod 0777, "$NGX_DIR/tmp";

    my $q = 'SELECT replay_url, content_type, file_name FROM games WHERE id = $1::bigint';

    # the web identity token of the rotating credentials' location
    open my $tok, '>', "$NGX_DIR/html/web-token" or die $!;
    print $tok "eyJhbGciOiJSUzI1NiJ9.mintJWT-reliability.c2ln\n";
    close $tok;

    open my $fh, '>', "$NGX_DIR/conf/nginx.conf" or die $!;
    print $fh <<"EOF";
# written by t/reliability/reliability.pl
load_module $E{REL_MODULE};

worker_processes  $WORKERS;
worker_rlimit_nofile 16384;
error_log  $ERRLOG info;
pid        $NGX_DIR/logs/nginx.pid;
${\ ($E{REL_NGINX_MAIN_EXTRA} // '')}

events {
    worker_connections  4096;
    accept_mutex        off;
}

http {
    log_format  rel  '\$status \$request_time "\$request" db=\$replay_db_time';
    access_log  $NGX_DIR/logs/access.log rel;

    client_body_temp_path  $NGX_DIR/tmp/body;
    proxy_temp_path        $NGX_DIR/tmp/proxy;
    fastcgi_temp_path      $NGX_DIR/tmp/fastcgi;
    uwsgi_temp_path        $NGX_DIR/tmp/uwsgi;
    scgi_temp_path         $NGX_DIR/tmp/scgi;

    replay_s3_bucket       replays;
    replay_s3_credentials  env;
    replay_db              "$dsn" pool=$POOL queue=4096
                           connect_timeout=1s query_timeout=3s
                           queue_timeout=5s;

    server {
        listen       127.0.0.1:$PORT;
        server_name  localhost;
        root         $NGX_DIR/html;

        # every id reaches the database, as a bound parameter
        location ~ ^/game/(.*)\$ {
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$1;
            proxy_read_timeout  5s;
        }

        # the README's form: only digits get this far
        location ~ ^/replay/(?<game_id>\\d+)\$ {
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$game_id;
        }

        # the same lookup through replay_key_cache
        location ~ ^/cached/(.*)\$ {
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$1;
            replay_key_cache    rel_keys:4m valid=10m;
        }

        # a lookup that takes a while, to abort during it
        location ~ ^/slow/(\\d+)\$ {
            replay_s3_endpoint  $s3;
            replay_key_query    "SELECT replay_url FROM games, pg_sleep(0.05)
                                 WHERE id = \$1::bigint" \$1;
        }

        # a database by name, through nginx's resolver and the DNS
        # forwarder that answers late on demand (scenario dns_slow)
        location ~ ^/dns/(\\d+)\$ {
            resolver            127.0.0.1:$E{TEST_NGINX_DNS_SLOW_PORT} valid=1s ipv6=off;
            replay_db           "host=pg.replay.test port=$E{TEST_NGINX_PG_PORT}
                                 dbname=$E{TEST_NGINX_PG_DB} user=$E{TEST_NGINX_PG_USER}
                                 application_name=nginx-replay-dns"
                                pool=2 queue=4096 connect_timeout=5s
                                queue_timeout=10s;
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$1;
        }

        # queries past their time (scenario query_timeouts)
        location ~ ^/timeout/(\\d+)\$ {
            replay_db           "$dsn application_name=nginx-replay-timeout"
                                pool=$TIMEOUT_POOL queue=4096 query_timeout=200ms
                                queue_timeout=20s;
            replay_s3_endpoint  $s3;
            replay_key_query    "SELECT replay_url FROM games, pg_sleep(10)
                                 WHERE id = \$1::bigint" \$1;
        }

        # an origin that stalls mid-body (t/reliability: stall_server)
        location ~ ^/stall/(.*)\$ {
            replay_s3_endpoint  http://127.0.0.1:$STALL;
            replay_s3_key       stall/\$1;
            proxy_read_timeout  1s;
        }

        location ~ ^/stall-buffered/(.*)\$ {
            replay_s3_endpoint  http://127.0.0.1:$STALL;
            replay_s3_key       stall/\$1;
            replay_buffering    on;
            proxy_read_timeout  1s;
        }

        # credentials that live 30 s, from STS and from IMDS (scenario
        # creds; the services come from t/lib/AwsCreds.pm)
        location ~ ^/rot-sts/(.*)\$ {
            replay_s3_endpoint     $s3;
            replay_key_query       "$q" \$1;
            replay_s3_credentials  web_identity
                                   role_arn=arn:aws:iam::123456789012:role/replay
                                   token_file=$NGX_DIR/html/web-token
                                   sts_endpoint=$ENV{TEST_NGINX_STS_URL}
                                   ca=$ENV{TEST_NGINX_TLS_DIR}/ca.crt;
        }

        location ~ ^/rot-imds/(.*)\$ {
            replay_s3_endpoint     $s3;
            replay_key_query       "$q" \$1;
            replay_s3_credentials  imds endpoint=$ENV{TEST_NGINX_IMDS_URL};
        }

        location = /status {
            replay_status;
        }

        # the configurations users write around a replay location
        location ~ ^/cors/(\\d+)\$ {
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$1;
            error_page          404 = /fallback;

            if (\$http_origin) {
                add_header  Access-Control-Allow-Origin \$http_origin always;
            }

            limit_except GET {
                allow  127.0.0.1;
                deny   all;
            }
        }

        location = /fallback {
            replay_s3_endpoint  $s3;
            replay_s3_key       games/2/replay.bin;
        }

        location = /page.html {
            ssi  on;
        }

        location = /private.html {
            auth_request  /check/1;
        }

        location ~ ^/check/(\\d+)\$ {
            internal;
            replay_s3_endpoint  $s3;
            replay_key_query    "$q" \$1;
        }

        location = /plain {
            return 200 "plain\\n";
        }
    }
}
EOF
    close $fh;

    open $fh, '>', "$NGX_DIR/html/page.html" or die $!;
    print $fh '[<!--# include virtual="/game/1" -->]'
              . '[<!--# include virtual="/game/2" -->]' . "\n";
    close $fh;

    open $fh, '>', "$NGX_DIR/html/private.html" or die $!;
    print $fh "granted\n";
    close $fh;
}

# a process that runs (an exited one its parent has not reaped yet does not)
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    close $fh;
    return $stat !~ /\)\s+[ZX]\s/;
}

sub master_pid {
    open my $fh, '<', "$NGX_DIR/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    close $fh;
    return undef unless defined $pid;
    chomp $pid;
    return $pid =~ /^\d+$/ && alive($pid) ? $pid : undef;
}

sub proc_children {
    my ($ppid) = @_;

    my @kids;

    opendir my $d, '/proc' or return ();
    for my $pid (grep { /^\d+$/ } readdir $d) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh>;
        close $fh;
        next unless $stat && $stat =~ /\) \S (\d+)/;
        push @kids, $pid if $1 == $ppid;
    }
    closedir $d;

    return sort { $a <=> $b } @kids;
}

sub cmdline {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $c = <$fh> // '';
    $c =~ tr/\0/ /;
    $c =~ s/\s+$//;
    return $c;
}

# the workers that serve (not those shutting down)
sub workers {
    my $m = master_pid() or return ();
    return grep { cmdline($_) eq 'nginx: worker process' } proc_children($m);
}

sub start_nginx {
    write_config();

    my $out = `$NGINX -p $NGX_DIR/ -c conf/nginx.conf -e $ERRLOG -t 2>&1`;
    die "nginx -t failed:\n$out" if $?;

    system($NGINX, '-p', "$NGX_DIR/", '-c', 'conf/nginx.conf', '-e', $ERRLOG) == 0
        or die "nginx did not start; see $ERRLOG\n";

    for (1 .. 100) {
        last if master_pid() && workers() == $WORKERS;
        sleep 0.1;
    }

    die "nginx: no $WORKERS workers\n" unless workers() == $WORKERS;
}

my $killed;

sub stop_nginx {
    my $m = master_pid() or return;

    kill 'QUIT', $m;

    for (1 .. 100) {
        return unless alive($m);
        sleep 0.1;
    }

    $killed = 1;
    kill 'KILL', $m;
}

# ---------------------------------------------------------------- /proc

# socket inode => [local port, remote port, state] from /proc/net/tcp*
sub tcp_sockets {
    my %s;

    for my $f ('/proc/net/tcp', '/proc/net/tcp6', '/proc/net/udp') {
        open my $fh, '<', $f or next;
        <$fh>;
        while (my $l = <$fh>) {
            my @c = split ' ', $l;
            my ($lp) = $c[1] =~ /:([0-9A-F]+)$/;
            my ($rp) = $c[2] =~ /:([0-9A-F]+)$/;
            $s{ $c[9] } = [hex $lp, hex $rp, $c[3]];
        }
        close $fh;
    }

    return \%s;
}

# a worker's descriptors by kind: pg, s3 (or the stalling origin),
# client, cancel (the pipe of the thread a worker starts at its first
# query cancel, kept for the next), other (files, listening sockets,
# epoll, eventfd, nginx's pipes)
sub fds {
    my ($pid, $tcp) = @_;

    $tcp ||= tcp_sockets();

    my %n = (pg => 0, s3 => 0, client => 0, dns => 0, other => 0,
             cancel => 0, total => 0);
    my @pipes;
    my ($s3port) = $E{TEST_NGINX_S3_ENDPOINT} =~ /:(\d+)$/;

    opendir my $d, "/proc/$pid/fd" or return undef;

    for my $fd (grep { /^\d+$/ } readdir $d) {
        my $l = readlink "/proc/$pid/fd/$fd" // next;
        $n{total}++;

        if ($l =~ /^socket:\[(\d+)\]$/ && $tcp->{$1}) {
            my ($lp, $rp, $st) = @{ $tcp->{$1} };

            if ($rp == ($E{TEST_NGINX_DNS_SLOW_PORT} // -1)) {
                $n{dns}++;                              # the resolver's
            } elsif ($st eq '0A') {
                $n{other}++;                            # listening
            } elsif ($rp == $E{TEST_NGINX_PG_PORT}) {
                $n{pg}++;
            } elsif ($rp == $s3port || $rp == $STALL) {
                $n{s3}++;
            } elsif ($lp == $PORT) {
                $n{client}++;
            } else {
                $n{other}++;
            }

            next;
        }

        if ($l =~ /^pipe:/) {
            push @pipes, $l;
            next;
        }

        $n{other}++;
    }

    closedir $d;

    # the cancel thread's pipe: both ends in the worker, once it has two
    # threads; any other pipe counts as other
    my %ends;
    $ends{$_}++ for @pipes;
    my @tasks = glob "/proc/$pid/task/*";

    for my $p (keys %ends) {
        if ($ends{$p} == 2 && @tasks > 1 && !$n{cancel}) {
            $n{cancel} = 2;
        } else {
            $n{other} += $ends{$p};
        }
    }

    return \%n;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (my $l = <$fh>) {
        return $1 if $l =~ /^VmRSS:\s+(\d+)/;
    }
    return 0;
}

sub snapshot {
    my $tcp = tcp_sockets();
    my %s;
    for my $w (workers()) {
        $s{$w} = { fds => fds($w, $tcp), rss => rss_kb($w) };
    }
    return \%s;
}

sub fmt_fds {
    my ($f) = @_;
    return 'gone' unless $f;
    return sprintf '%d (pg %d, s3 %d, client %d, dns %d, cancel %d, other %d)',
        @$f{qw(total pg s3 client dns cancel other)};
}

# ---------------------------------------------------------------- error log

my $log_pos = 0;

sub log_mark { return -s $ERRLOG || 0 }

sub log_since {
    my ($pos) = @_;
    open my $fh, '<', $ERRLOG or return ();
    seek $fh, $pos, 0;
    my @l = <$fh>;
    close $fh;
    return @l;
}

# ---------------------------------------------------------------- helpers

sub expect_for {
    my ($id) = @_;
    return $GAME{$id};
}

# checks a response to GET /game/ID (or /replay/ID) of a valid id
sub good_response {
    my ($id, $res) = @_;

    my $g = $GAME{$id};

    return "error $res->{error}" if $res->{error};
    return "status $res->{status}" unless $res->{status} == 200;
    return "incomplete body ($res->{len} of $g->{len} bytes)"
        unless $res->{complete};
    return "wrong body: $res->{len} bytes, md5 $res->{md5}, want $g->{len} bytes, md5 $g->{md5}"
        unless $res->{md5} eq $g->{md5} && $res->{len} == $g->{len};
    return '';
}

sub path_for { my ($id) = @_; return "/game/$id" }

# every valid small id once, concurrently: all must be 200 with their body
sub good_requests_succeed {
    my ($name) = @_;

    my @ids = small_valid();
    my @bad;
    my $i = 0;

    Load::run(
        concurrency => 10,
        keepalive   => 1,
        next => sub {
            return undef if $i >= @ids;
            my $id = $ids[$i++];
            return { path => path_for($id), id => $id };
        },
        done => sub {
            my ($spec, $res) = @_;
            my $why = good_response($spec->{id}, $res);
            push @bad, "id $spec->{id}: $why" if $why;
        },
    );

    ok(!@bad, "$name: good requests succeed (" . scalar(@ids) . " ids)",
       @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
}

# runs a shell command in the background, in its own process group
sub background {
    my ($cmd) = @_;

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        setsid();
        { exec '/bin/bash', '-c', $cmd }
        _exit(127);
    }

    push @children, $pid;
    note_child($pid);
    return $pid;
}

# t/reliability/run stops these too, should this script be killed
sub note_child {
    my ($pid) = @_;
    if (open my $fh, '>>', "$DIR/children.pids") {
        print $fh "$pid\n";
        close $fh;
    }
}

sub reap {
    my ($pid, $timeout) = @_;

    my $t = time + ($timeout // 60);

    while (time < $t) {
        my $r = waitpid $pid, WNOHANG;
        if ($r == $pid) {
            @children = grep { $_ != $pid } @children;
            return $? >> 8;
        }
        sleep 0.05;
    }

    kill 'KILL', -$pid;
    waitpid $pid, 0;
    @children = grep { $_ != $pid } @children;
    return -1;
}

my %BASE;           # worker pid => snapshot after warm-up

# under ASan (REL_SAN_DIR) memory holds its quarantine and shadow too
my $SAN_DIR = $E{REL_SAN_DIR};
my $BASE_RSS_TOL_KB = $SAN_DIR ? 65536 : 4096;

# sanitizer reports (REL_ASAN=1), new since the last call
my %san_seen;

sub sanitizer_reports {
    return () unless $SAN_DIR;

    my @r;

    for my $f (sort glob "$SAN_DIR/*") {
        next if $san_seen{$f}++;
        open my $fh, '<', $f or next;
        local $/;
        my $t = <$fh> // '';
        close $fh;
        push @r, "$f:", split /\n/, $t
            if $t =~ /ERROR: AddressSanitizer|runtime error|ERROR: \w+Sanitizer/;
    }

    return @r;
}

# What every scenario ends with.  Waits (up to 20 s) for the workers'
# connections to close, then: no crash, descriptors and memory back,
# good requests succeed.
sub health {
    my ($name, $mark, %o) = @_;

    # 1. the error log: no crash, nothing at alert level or above
    my @bad = grep { /\[(alert|crit|emerg)\]|exited on signal|Assertion/ }
              log_since($mark);
    ok(!@bad, "$name: no [alert], [crit], [emerg] or crashed worker in the error log",
       @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    if ($SAN_DIR) {
        my @r = sanitizer_reports();
        ok(!@r, "$name: no sanitizer report", @r[0 .. ($#r > 60 ? 60 : $#r)]);
    }

    # 2. the same workers, unless the scenario changes them
    my @w = workers();

    if (!$o{new_workers}) {
        my @base = sort { $a <=> $b } keys %BASE;
        ok("@w" eq "@base", "$name: the same $WORKERS workers serve",
           "workers before: @base", "workers now: @w");
    }

    # 3. descriptors: no client or S3 connection left, at most the pool's
    #    PostgreSQL connections, the rest as at the start
    my $snap;
    my @why;

    for (1 .. 200) {
        $snap = snapshot();
        @why = ();

        for my $w (@w) {
            my $f = $snap->{$w}{fds};
            my $b = $BASE{$w} // (values %BASE)[0];

            push @why, "worker $w: " . fmt_fds($f) . ", at the start "
                       . fmt_fds($b->{fds})
                if !$f || $f->{client} || $f->{s3} || $f->{pg} > $POOL
                   || $f->{dns} > 1 || $f->{other} != $b->{fds}{other};
        }

        last unless @why;
        sleep 0.1;
    }

    ok(!@why, "$name: worker descriptors back to where they started", @why);

    for my $w (@w) {
        my $b = $BASE{$w} // (values %BASE)[0];
        note(sprintf "%s: worker %d fds %s (start %s); RSS %d KiB (start %d KiB)",
                     $name, $w, fmt_fds($snap->{$w}{fds}),
                     fmt_fds($b->{fds}), $snap->{$w}{rss}, $b->{rss});
    }

    # 4. memory: near where it started
    my @mem;

    for my $w (@w) {
        my $b = $BASE{$w} // (values %BASE)[0];
        my $r = $snap->{$w}{rss};
        push @mem, "worker $w: RSS $r KiB, $b->{rss} KiB at the start"
            if $r > $b->{rss} + $BASE_RSS_TOL_KB;
    }

    ok(!@mem, "$name: worker memory back near where it started (within "
              . ($BASE_RSS_TOL_KB / 1024) . " MiB)", @mem);

    # 5. good requests
    good_requests_succeed($name);

    # 6. the pools, as nginx holds them and as PostgreSQL sees them: some
    #    connection kept (not reopened per request), none past pool=
    pool_bounds($name);

    return $snap;
}

sub pool_bounds {
    my ($name) = @_;

    my ($ours, $theirs, @over) = (0);

    for (1 .. 50) {
        my $snap = snapshot();
        ($ours, @over) = (0);
        for my $w (keys %$snap) {
            my $n = $snap->{$w}{fds} ? $snap->{$w}{fds}{pg} : 0;
            $ours += $n;
            push @over, "worker $w holds $n" if $n > $POOL;
        }
        $theirs = pg_backends();
        last if $theirs == $ours;
        sleep 0.1;
    }

    ok($ours >= 1 && !@over && $theirs == $ours,
       "$name: database pools between 1 and $POOL a worker "
       . "(nginx holds $ours, PostgreSQL sees $theirs)", @over);
}

sub pg_backends {
    return psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nginx-replay'");
}

sub summary_of {
    my ($h) = @_;
    return join ', ', map { "$_: $h->{$_}" } sort keys %$h;
}

# ---------------------------------------------------------------- scenarios

sub scenario_warmup {
    my $name = 'warm-up';

    my @ids = small_valid();
    my ($i, @bad) = (0);

    Load::run(
        concurrency => 100,
        next => sub {
            return undef if $i >= 2000;
            my $id = $ids[$i++ % @ids];
            return { path => path_for($id), id => $id };
        },
        done => sub {
            my ($spec, $res) = @_;
            my $why = good_response($spec->{id}, $res);
            push @bad, "id $spec->{id}: $why" if $why;
        },
    );

    ok(!@bad, "$name: 2,000 requests at 100 concurrent, all 200 with the right body",
       scalar(@bad) . " bad", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    # the baseline: connections closed, the pools as they stay
    sleep 1;

    my $snap;
    for (1 .. 100) {
        $snap = snapshot();
        last unless grep { $_->{fds}{client} || $_->{fds}{s3} } values %$snap;
        sleep 0.1;
    }

    %BASE = %$snap;

    for my $w (sort keys %BASE) {
        note(sprintf "baseline: worker %d fds %s, RSS %d KiB", $w,
                     fmt_fds($BASE{$w}{fds}), $BASE{$w}{rss});
    }

    ok(keys(%BASE) == $WORKERS, "$name: $WORKERS workers measured");
}


# 20,000 requests at 100 concurrent: valid, missing and malformed ids
sub scenario_mix {
    my $name = 'mixed load';
    my $mark = log_mark();

    my @valid = small_valid();

    # missing: no row, NULL key, empty key, no object in S3;
    # 15: a 1,025-byte key (the database's error: 500); malformed ones: 400 from the database,
    # or 404 where the README's \d+ location does not match
    my @missing = ([999999, 404], [3, 404], [4, 404], [7, 404],
                   [15, 500], [123456789012, 404], [0, 404], [-1, 404]);

    my @malformed = (
        ['/game/abc', 400], ['/game/1.5', 400], ['/game/1e3', 400],
        ['/game/99999999999999999999', 400], ['/game/%20', 400],
        ['/game/0x10', 400], ['/game/1%3B%20DROP%20TABLE%20games', 400],
        ['/game/%FF', 400], ['/game/1%00', 400],
        ['/game/' . ('9' x 300), 400],
        ['/replay/abc', 404], ['/replay/1a', 404], ['/replay/', 404],
    );

    my (%by_kind, @bad, $n5xx_valid);
    my $total = 20000;
    my $i = 0;
    my @rss;
    my $half = $total / 2;

    my $t0 = time;

    for my $part (1, 2) {
        my $end = $part * $half;

        Load::run(
            concurrency => 100,
            keepalive   => 1,
            next => sub {
                return undef if $i >= $end;
                my $k = $i++ % 10;

                if ($k < 6) {
                    my $id = $valid[int rand @valid];
                    my $p = rand() < 0.5 ? "/game/$id" : "/replay/$id";
                    return { kind => 'valid', id => $id, path => $p };
                }

                if ($k < 8) {
                    my $m = $missing[int rand @missing];
                    my $p = $m->[0] < 0 ? "/replay/$m->[0]" : "/game/$m->[0]";
                    return { kind => 'missing', path => $p,
                             want => $m->[0] < 0 ? 404 : $m->[1] };
                }

                my $m = $malformed[int rand @malformed];
                return { kind => 'malformed', path => $m->[0],
                         want => $m->[1] };
            },
            done => sub {
                my ($spec, $res) = @_;

                $by_kind{"$spec->{kind} $res->{status}"}++;

                if ($spec->{kind} eq 'valid') {
                    my $why = good_response($spec->{id}, $res);
                    push @bad, "$spec->{path}: $why" if $why;
                    $n5xx_valid++ if $res->{status} >= 500;
                    return;
                }

                if ($res->{error} || $res->{status} != $spec->{want}) {
                    push @bad, "$spec->{path}: status $res->{status}"
                               . " (want $spec->{want}) $res->{error}";
                }
            },
        );

        push @rss, { map { $_ => rss_kb($_) } workers() };
    }

    my $dt = time - $t0;

    note(sprintf "%s: %d requests in %.1f s (%.0f/s): %s", $name, $i, $dt,
                 $i / $dt, summary_of(\%by_kind));

    ok(!@bad, "$name: $total requests at 100 concurrent, every body checked against its id, every status right",
       scalar(@bad) . " wrong", @bad[0 .. ($#bad > 19 ? 19 : $#bad)]);
    ok(!$n5xx_valid, "$name: zero 5xx for valid ids", ($n5xx_valid // 0) . " 5xx");

    # a per-request leak shows as growth between the two halves
    my @growth;
    for my $w (keys %{ $rss[0] }) {
        my $g = ($rss[1]{$w} // 0) - $rss[0]{$w};
        note("$name: worker $w RSS after 10,000: $rss[0]{$w} KiB, after 20,000: "
             . ($rss[1]{$w} // 0) . " KiB");
        push @growth, "worker $w grew $g KiB over the second 10,000"
            if $g > 2048;
    }
    ok(!@growth, "$name: no memory growth between the first and second 10,000 requests (< 2 MiB)", @growth);

    health($name, $mark);
}


# if, limit_except, error_page, SSI and auth_request around replay
# locations, under load: every status and body right, no worker lost
sub scenario_configs {
    my $name = 'configurations';
    my $mark = log_mark();

    my @valid = small_valid();
    my $g2 = $GAME{2};

    my $page = Digest::MD5->new;
    $page->add('[' . ($GAME{1}{body} // '') . '][' . ($GAME{2}{body} // '')
               . "]\n");
    my $page_md5 = $page->hexdigest;

    my @kinds = (
        # an id with and without the CORS header's condition true
        sub {
            my $id = $valid[int rand @valid];
            return { kind => 'cors', path => "/cors/$id", id => $id,
                     headers => ['Origin: https://example.com'] };
        },
        sub {
            my $id = $valid[int rand @valid];
            return { kind => 'plain', path => "/cors/$id", id => $id };
        },
        # limit_except lets it through access: the module's 405
        sub { return { kind => 'delete', path => '/cors/1',
                       method => 'DELETE', want => 405 } },
        # no row, no object: error_page = /fallback serves game 2
        sub { return { kind => 'fallback', path => '/cors/424242', id => 2 } },
        sub { return { kind => 'fallback', path => '/cors/7', id => 2 } },
        sub { return { kind => 'ssi', path => '/page.html' } },
        sub { return { kind => 'auth', path => '/private.html' } },
    );

    my (%by_kind, @bad);
    my $total = 6000;
    my $i = 0;
    my $t0 = time;

    Load::run(
        concurrency => 50,
        keepalive   => 1,
        next => sub {
            return undef if $i >= $total;
            return $kinds[$i++ % @kinds]->();
        },
        done => sub {
            my ($spec, $res) = @_;
            my $k = $spec->{kind};
            my $why = '';

            $by_kind{"$k $res->{status}"}++;

            if (defined $spec->{id}) {
                $why = good_response($spec->{id}, $res);

                if (!$why && $k eq 'cors'
                    && ($res->{headers}{'access-control-allow-origin'} // '')
                       ne 'https://example.com')
                {
                    $why = 'no Access-Control-Allow-Origin';
                }

            } elsif ($k eq 'delete') {
                $why = "status $res->{status}" if $res->{status} != 405;

            } elsif ($k eq 'ssi') {
                $why = "status $res->{status}, md5 $res->{md5}"
                    if $res->{status} != 200 || $res->{md5} ne $page_md5;

            } elsif ($k eq 'auth') {
                $why = "status $res->{status}"
                    if $res->{status} != 200 || $res->{body} ne "granted\n";
            }

            $why ||= "error $res->{error}" if $res->{error};
            push @bad, "$k $spec->{path}: $why" if $why;
        },
    );

    my $dt = time - $t0;

    note(sprintf "%s: %d requests in %.1f s (%.0f/s): %s", $name, $i, $dt,
                 $i / $dt, summary_of(\%by_kind));

    ok(!@bad, "$name: $total requests at 50 concurrent through if, limit_except, error_page, SSI and auth_request, every status and body right",
       scalar(@bad) . " wrong", @bad[0 .. ($#bad > 19 ? 19 : $#bad)]);

    health($name, $mark);
}


# one request at a time; each gets its status and, for an error, exactly
# one error-log line; the database is intact afterwards
sub scenario_bad_input {
    my $name = 'bad input';
    my $mark = log_mark();

    my $before = psql("SELECT count(*), md5(string_agg(id || ':' || coalesce(replay_url, '~'), ',' ORDER BY id)) FROM games");
    my $tables = psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");

    my $one = sub { my $d = shift; return '/game/1' };
    my $g1 = $GAME{1};
    my $g5 = $GAME{5};

    my $range = sub {
        my ($spec, $res, $g) = @_;
        # the body must be the right bytes of the object for 200 and 206
        my $data = $g->{body};
        if ($res->{status} == 200) {
            return $res->{md5} eq $g->{md5} ? '' : 'wrong 200 body';
        }
        if ($res->{status} == 206) {
            my $cr = $res->{headers}{'content-range'} // '';
            return "no Content-Range on a 206" unless $cr =~ m{^bytes (\d+)-(\d+)/(\d+)$};
            return "bad Content-Range $cr" unless $3 == $g->{len};
            return '' unless defined $data;
            return substr($data, $1, $2 - $1 + 1) eq $res->{body} ? '' : 'wrong 206 bytes';
        }
        return '';
    };

    my $sqli = sub { my $s = shift; $s =~ s/([^A-Za-z0-9])/sprintf '%%%02X', ord $1/ge; $s };

    # [name, request spec, status (or list), log lines (0 or 1), check]
    my @cases = (
        ['oversized URI (10 KB)', { path => '/game/' . ('1' x 10000) }, 414, 1],
        ['oversized URI (100 KB)', { path => '/game/1?' . ('a' x 100000) }, 414, 1],
        ['oversized header line (10 KB)', { path => '/game/1', headers => ['X-Big: ' . ('b' x 10000)] }, 400, 1],
        ['oversized headers (40 x 1 KB)', { path => '/game/1', headers => [map { "X-H$_: " . ('h' x 1000) } 1 .. 40] }, [200, 400], undef],
        ['oversized Range header (9 KB)', { path => '/game/1', headers => ['Range: bytes=' . join(',', map { "$_-$_" } 0 .. 1500)] }, 400, 1],
        ['Range: bytes=0-4', { path => '/game/1', headers => ['Range: bytes=0-4'] }, 206, 0, sub { $range->(@_, $g1) }],
        # malformed: S3 ignores them (200); the test server reads some
        # as a range (206): either way the bytes must be the object's
        ['Range: bytes=abc', { path => '/game/1', headers => ['Range: bytes=abc'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: bytes=5-1', { path => '/game/1', headers => ['Range: bytes=5-1'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: bytes=--', { path => '/game/1', headers => ['Range: bytes=--'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: items=0-1', { path => '/game/1', headers => ['Range: items=0-1'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: bytes=-0', { path => '/game/1', headers => ['Range: bytes=-0'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        # control characters would make S3 refuse the request: 400 here
        ['Range with control bytes (\\x01 \\x7f)', { path => '/game/1', headers => ["Range: bytes=0-1\x01\x7f"] }, 400, 1],
        ['If-None-Match with an escape byte', { path => '/game/1', headers => ["If-None-Match: \"x\x1b[31m\""] }, 400, 1],
        ['Range with bytes above 0x7f', { path => '/game/1', headers => ["Range: bytes=0-1\x80\xff"] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: bytes=99999-', { path => '/game/1', headers => ['Range: bytes=99999-'] }, 416, 1],
        ['Range: bytes=0-1,3-4 (multi-range)', { path => '/game/1', headers => ['Range: bytes=0-1,3-4'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['Range: 200 ranges', { path => '/game/5', headers => ['Range: bytes=' . join(',', map { ($_ * 10) . '-' . ($_ * 10 + 4) } 0 .. 199)] }, [200, 206, 416], undef, sub { $range->(@_, $g5) }],
        ['Range: bytes=0-18446744073709551616', { path => '/game/1', headers => ['Range: bytes=0-18446744073709551616'] }, [200, 206, 416], undef, sub { $range->(@_, $g1) }],
        ['invalid UTF-8 in the id (%FF%FE)', { path => '/game/%FF%FE' }, 400, 1],
        ['invalid UTF-8 in the id (overlong %C0%AF)', { path => '/game/%C0%AF' }, 400, 1],
        ['invalid UTF-8 in the id (lone continuation %80)', { path => '/game/1%80' }, 400, 1],
        ['raw invalid UTF-8 byte in the request line', { raw => "GET /game/\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }, 400, 1],
        ['NUL in the id (%00)', { path => '/game/1%00' }, 400, 1],
        ['NUL in the id (%00 first)', { path => '/game/%001' }, 400, 1],
        ['raw NUL in the request line', { raw => "GET /game/1\0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }, 400, 1],
        ['control characters in the id (%1B%07%7F)', { path => '/game/1%1B%07%7F' }, 400, 1],
        ['SQL injection: quote', { path => '/game/' . $sqli->("1' OR '1'='1") }, 400, 1],
        ['SQL injection: statement', { path => '/game/' . $sqli->("1; DROP TABLE games; --") }, 400, 1],
        ['SQL injection: union', { path => '/game/' . $sqli->("0 UNION SELECT replay_url, NULL, NULL FROM games") }, 400, 1],
        ['SQL injection: comment', { path => '/game/' . $sqli->("1/**/OR/**/1=1") }, 400, 1],
        ['SQL injection: dollar quote', { path => '/game/' . $sqli->('$$; DELETE FROM games; $$') }, 400, 1],
        ['SQL injection: backslash', { path => '/game/' . $sqli->("1\\'; TRUNCATE games; --") }, 400, 1],
        ['SQL injection: parameter', { path => '/game/' . $sqli->('$1') }, 400, 1],
        ['SQL injection: cast', { path => '/game/' . $sqli->("1)::text; DROP TABLE games; --") }, 400, 1],
        ['id longer than replay_key_param_max_length', { path => '/game/' . ('1' x 257) }, 400, 1],
        ['empty id', { path => '/game/' }, 400, 1],
        ['method POST', { path => '/game/1', method => 'POST' }, 405, 1],
        ['method DELETE', { path => '/game/1', method => 'DELETE' }, 405, 1],
        ['malformed request line', { raw => "GET\r\n\r\n" }, 400, 1],
        ['HTTP/1.1 without Host', { raw => "GET /game/1 HTTP/1.1\r\nConnection: close\r\n\r\n" }, 400, 1],
        ['1,025-byte key in the database (id 15)', { path => '/game/15' }, 500, 1],
        ['1,024-byte key in the database (id 14)', { path => '/game/14', id => 14 }, 200, 0],
        ['no object in S3 (id 7)', { path => '/game/7' }, 404, 1],
        ['NULL key (id 3)', { path => '/game/3' }, 404, 1],
        ['empty key (id 4)', { path => '/game/4' }, 404, 1],
        ['no row', { path => '/game/424242' }, 404, 1],
    );

    # keys with an empty, "." or ".." segment (ids 12, 13 and special ones)
    for my $id (@REFUSED) {
        push @cases, ["refused key \"$GAME{$id}{key}\" (id $id)",
                      { path => "/game/$id" }, 404, 1];
    }

    # every special key of the games table (ids >= 100)
    for my $id (grep { $_ >= 100 } @VALID) {
        push @cases, ["special key \"$GAME{$id}{key}\" (id $id)",
                      { path => "/game/$id", id => $id }, 200, 0];
    }

    my @fail;

    for my $c (@cases) {
        my ($what, $spec, $want, $nlog, $check) = @$c;

        my $m = log_mark();
        my $res;

        my $sent = 0;

        Load::run(
            concurrency => 1,
            next => sub { return $sent++ ? undef : $spec },
            done => sub { $res = $_[1] },
        );

        # the log line of a request is written before its response ends
        my @lines = grep { !/\[debug\]/ } log_since($m);
        my @want = ref $want ? @$want : ($want);
        my @why;

        push @why, "error $res->{error}" if $res->{error};
        push @why, "status $res->{status}, want @want"
            unless grep { $_ == $res->{status} } @want;
        push @why, "incomplete response" unless $res->{complete} || $res->{error};

        if (defined $spec->{id} && $res->{status} == 200) {
            my $why = good_response($spec->{id}, $res);
            push @why, $why if $why;
        }

        if ($check) {
            my $why = $check->($spec, $res);
            push @why, $why if $why;
        }

        # errors: one line; successes: none
        my $n = defined $nlog ? $nlog : ($res->{status} >= 400 ? 1 : 0);
        push @why, scalar(@lines) . " error-log lines, want $n", @lines
            unless @lines == $n;

        push @fail, "$what: " . join('; ', @why) if @why;
        my $l = @lines ? ($lines[0] =~ s/^\S+ \S+ //r =~ s/\s+$//r) : '';
        $l =~ s/, client: .*//;
        $l = substr($l, 0, 110) . '...' if length $l > 110;
        note(sprintf "%-50s %d %s", length $what > 50 ? substr($what, 0, 47) . '...' : $what,
                     $res->{status}, $l);
    }

    ok(!@fail, "$name: " . scalar(@cases) . " requests, each with the right status and one log line per error", @fail);

    my $after = psql("SELECT count(*), md5(string_agg(id || ':' || coalesce(replay_url, '~'), ',' ORDER BY id)) FROM games");
    my $tables_after = psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");

    ok($before eq $after && $tables eq $tables_after,
       "$name: the database is intact (games: $after; tables: $tables_after)",
       "before: $before $tables", "after: $after $tables_after");

    health($name, $mark);
}


# 1,000 clients that go away mid-download, mid-lookup, or right after the
# header, half of them with a reset
sub scenario_aborts {
    my $name = 'aborted downloads';
    my $mark = log_mark();

    my ($i, %how, @bad) = (0);

    Load::run(
        concurrency => 100,
        next => sub {
            return undef if $i >= 1000;
            my $k = $i++;
            my %s = (rst => $k % 2, timeout => 20);

            if ($k % 5 == 0) {
                # during the database lookup
                return { %s, path => '/slow/5', abort => -1, how => 'lookup' };
            }
            if ($k % 5 == 1) {
                return { %s, path => '/game/5', abort => 0, how => 'header' };
            }
            if ($k % 5 == 2) {
                return { %s, path => '/game/6', abort => int rand 1048576,
                         how => '50 MiB' };
            }
            return { %s, path => '/game/5', abort => 1 + int rand 1000000,
                     how => '1 MiB' };
        },
        done => sub {
            my ($spec, $res) = @_;
            $how{"$spec->{how} $res->{status} " . ($res->{error} || 'done')}++;
            push @bad, "$spec->{path}: $res->{status} $res->{error}"
                if $res->{error} && $res->{error} ne 'aborted';
        },
    );

    note("$name: " . summary_of(\%how));
    ok(!@bad, "$name: 1,000 clients went away as planned", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    health($name, $mark);
}


# an origin that sends half a body and stalls; proxy_read_timeout 1s
sub stall_server {
    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid) {
        push @children, $pid;
        note_child($pid);
        for (1 .. 50) {
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$STALL");
            if ($s) { close $s; return $pid }
            sleep 0.1;
        }
        die "the stalling origin did not start\n";
    }

    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$STALL",
                                  Listen => 128, ReuseAddr => 1)
        or _exit(1);
    my $sel = IO::Select->new($l);
    my %buf;

    for (;;) {
        for my $s ($sel->can_read(1)) {
            if ($s == $l) {
                my $c = $l->accept or next;
                $sel->add($c);
                $buf{ fileno $c } = '';
                next;
            }

            my $n = sysread $s, my $b, 4096;

            if (!$n) {
                $sel->remove($s);
                delete $buf{ fileno $s };
                close $s;
                next;
            }

            $buf{ fileno $s } .= $b;
            next unless $buf{ fileno $s } =~ /\r\n\r\n/;

            my ($path) = $buf{ fileno $s } =~ m{^GET (\S+)};
            $buf{ fileno $s } = '';

            # half of a 20,000-byte body, then silence
            if ($path =~ /chunked/) {
                syswrite $s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             . "Content-Type: application/octet-stream\r\n\r\n"
                             . sprintf("%x\r\n", 10000) . ('c' x 10000) . "\r\n";
            } else {
                syswrite $s, "HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n"
                             . "Content-Type: application/octet-stream\r\n\r\n"
                             . ('l' x 10000);
            }
        }
    }
}

sub scenario_stall {
    my $name = 'stalled origin';
    my $mark = log_mark();

    my $srv = stall_server();

    my @paths = (('/stall/cl') x 10, ('/stall/chunked') x 10,
                 ('/stall-buffered/cl') x 10, ('/stall-buffered/chunked') x 10);
    my ($i, @bad, %seen) = (0);

    my $t0 = time;

    Load::run(
        concurrency => 40,
        next => sub {
            return undef if $i >= @paths;
            return { path => $paths[$i++], timeout => 15, keep => 0 };
        },
        done => sub {
            my ($spec, $res) = @_;
            my $k = sprintf '%s: %d, %d of 20000 bytes, %s', $spec->{path},
                            $res->{status}, $res->{len},
                            $res->{complete} ? 'complete' : 'cut';
            $seen{$k}{n}++;
            $seen{$k}{min} = $res->{time}
                if !defined $seen{$k}{min} || $res->{time} < $seen{$k}{min};
            $seen{$k}{max} = $res->{time}
                if !defined $seen{$k}{max} || $res->{time} > $seen{$k}{max};

            push @bad, sprintf('%s: the client waited %.1f s (%s)',
                               $spec->{path}, $res->{time}, $res->{error})
                if $res->{error} eq 'timeout' || $res->{time} > 6;
            push @bad, "$spec->{path}: a short body that looks complete"
                if $res->{complete};
            push @bad, "$spec->{path}: status $res->{status}, error $res->{error}"
                if $res->{status} != 200 && $res->{status} != 504;
            push @bad, sprintf('%s: closed after %.2f s, before the read timeout',
                               $spec->{path}, $res->{time})
                if $res->{time} < 0.9;
        },
    );

    kill 'KILL', $srv;
    reap($srv, 5);

    note(map { sprintf "%s: %s x %d, closed after %.2f-%.2f s", $name, $_,
                       $seen{$_}{n}, $seen{$_}{min}, $seen{$_}{max} }
         sort keys %seen);

    ok(!@bad, "$name: 40 clients: the connection is closed after the 1 s read timeout, never a hang, never a complete-looking short body",
       @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    my @to = grep { /upstream timed out/ } log_since($mark);
    ok(@to >= 40, "$name: each timeout is logged (" . scalar(@to) . " lines)");

    health($name, $mark);
}


# A service stopped and started again while 50 clients keep asking.  The
# control script ($steps, bash) marks each fault with "fault_begin" and
# "fault_end" (the service is away in between); a request may fail (in
# the ways $o{allowed} accepts) only if it overlaps a fault or the $o{grace}
# seconds after one; every other request must succeed, and the load goes
# on for $o{grace} + 3 s after the last fault to show it.
sub service_restart {
    my ($name, $steps, %o) = @_;

    my $mark = log_mark();
    my @valid = small_valid();
    my $grace = $o{grace};
    my $events = "$DIR/fault-events";
    my (%status, @bad, @outside, @after);

    unlink $events;

    my $t0 = time;
    my $ctl_pid = background(
        "fault_begin() { echo \"begin \$(date +%s.%N)\" >> $events; }; "
        . "fault_end() { echo \"end \$(date +%s.%N)\" >> $events; }; "
        . $steps);
    my $ctl_done;
    my @done;

    Load::run(
        concurrency => 50,
        keepalive   => 0,
        next => sub {
            return undef if $ctl_done && time - $ctl_done > $grace + 3;
            # one request in 50 for the 50 MiB object, to be cut mid-body
            my $id = ($o{big} && rand() < 0.02) ? 6 : $valid[int rand @valid];
            return { path => "/game/$id", id => $id, t => time };
        },
        done => sub {
            my ($spec, $res) = @_;
            $status{ $res->{status} . ($res->{error} ? " $res->{error}" : '')
                     . ($res->{status} == 200 && !$res->{complete} ? ' cut' : '')
                     . ($spec->{id} == 6 ? ' (50 MiB)' : '') }++;
            push @done, [$spec, $res];
        },
        tick => sub {
            if (!$ctl_done && waitpid($ctl_pid, WNOHANG) == $ctl_pid) {
                @children = grep { $_ != $ctl_pid } @children;
                $ctl_done = time;
                ok($? == 0, "$name: $o{what}");
            }
        },
    );

    # the faults: [begin, end + grace]
    my (@windows, $begin);
    if (open my $fh, '<', $events) {
        while (<$fh>) {
            $begin = $1 if /^begin (\S+)/;
            push @windows, [$begin, $1 + $grace] if /^end (\S+)/ && defined $begin;
        }
        close $fh;
    }
    my $last_end = @windows ? $windows[-1][1] : $t0;

    my $n_after = 0;

    for my $d (@done) {
        my ($spec, $res) = @$d;
        my ($from, $to) = ($spec->{t}, $spec->{t} + $res->{time});
        my $why = good_response($spec->{id}, $res);
        my $in_fault = grep { $from <= $_->[1] && $to >= $_->[0] } @windows;

        $n_after++ if $from > $last_end;
        next unless $why;

        my $at = sprintf 't=%.2f-%.2f %s: %s', $from - $t0, $to - $t0,
                         $spec->{path}, $why;

        if (!$in_fault) {
            push @outside, $at;
        } elsif (!$o{allowed}->($res)) {
            push @bad, $at;
        }
        push @after, $at if $from > $last_end;
    }

    note(sprintf "%s: %.1f s of load: %s", $name, time - $t0, summary_of(\%status));
    note(map { sprintf "%s: away from t=%.2f to t=%.2f (+%g s grace)", $name,
                       $_->[0] - $t0, $_->[1] - $grace - $t0, $grace } @windows);

    ok(@windows == $o{faults}, "$name: $o{faults} faults marked",
       scalar(@windows) . " marked");
    ok(!@bad, "$name: while it was away, only $o{errors}; never a wrong body",
       scalar(@bad) . ' bad', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    ok(!@outside, "$name: no error while it was there (outside the faults "
                  . "and the $grace s after each)",
       scalar(@outside) . ' errors', @outside[0 .. ($#outside > 9 ? 9 : $#outside)]);
    ok(!@after && $n_after >= 100,
       "$name: all $n_after requests after the last fault + $grace s succeed",
       @after[0 .. ($#after > 9 ? 9 : $#after)]);

    my @errs = grep { /\[error\]/ } log_since($mark);
    note("$name: " . scalar(@errs) . " [error] lines, e.g. "
         . ($errs[0] // '') =~ s/^\S+ \S+ //r);

    health($name, $mark);
}

sub scenario_pg_restart {
    my $ctl = $E{TEST_NGINX_PG_CTL};
    my $kill = join ' ', map { "'$_'" } @PSQL;
    $kill .= q{ -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'nginx-replay'" >/dev/null};

    # stopped (fast shutdown: every connection closed mid-query), started;
    # then its connections killed under the pool ten times; then restarted
    service_restart('PostgreSQL restart',
        "set -e; sleep 2; fault_begin; $ctl stop; sleep 3; $ctl start; fault_end; "
        . "sleep 3; for i in 1 2 3 4 5 6 7 8 9 10; do fault_begin; $kill; "
        . "fault_end; sleep 0.3; done; sleep 3; fault_begin; $ctl restart; fault_end",
        what => 'pgctl stop, start; pg_terminate_backend() x 10; pgctl restart',
        faults => 12,
        grace => 2,
        errors => '503 or 504',
        allowed => sub {
            my ($res) = @_;
            return !$res->{error} && ($res->{status} == 503 || $res->{status} == 504);
        });
}

# PostgreSQL stopped: the ids replay_key_cache holds are still served,
# under load; an id it does not hold is a 503; after a start, all is well
sub scenario_cache {
    my $name = 'key cache, PostgreSQL stopped';
    my $mark = log_mark();
    my $ctl = $E{TEST_NGINX_PG_CTL};
    my @ids = small_valid();
    my ($i, @bad, %status);

    my $load = sub {
        my ($rounds) = @_;
        $i = 0;
        Load::run(
            concurrency => 20,
            keepalive   => 1,
            next => sub {
                return undef if $i >= @ids * $rounds;
                my $id = $ids[$i++ % @ids];
                return { path => "/cached/$id", id => $id };
            },
            done => sub {
                my ($spec, $res) = @_;
                $status{ $res->{status} }++;
                my $why = good_response($spec->{id}, $res);
                push @bad, "id $spec->{id}: $why" if $why;
            },
        );
    };

    $load->(1);
    ok(!@bad, "$name: every id once through the cache, the database up",
       @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    ok(system("$ctl stop >/dev/null 2>&1") == 0, "$name: pgctl stop");

    @bad = ();
    %status = ();
    $load->(20);
    ok(!@bad, "$name: " . 20 * @ids . " requests for cached ids, all served "
       . "with their bytes while the database was down (" . summary_of(\%status)
       . ")", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    my @gone;
    Load::run(
        concurrency => 1,
        keepalive   => 0,
        next => sub { return @gone ? undef : { path => '/cached/999999' } },
        done => sub { push @gone, $_[1] },
    );
    ok(@gone && !$gone[0]{error} && $gone[0]{status} == 503,
       "$name: an id the cache does not hold is a 503",
       @gone ? "status $gone[0]{status}" : 'no response');

    ok(system("$ctl start >/dev/null 2>&1") == 0, "$name: pgctl start");

    health($name, $mark);
}

sub scenario_s3_restart {
    my $ctl = $E{TEST_NGINX_S3_CTL};
    my $pidf = "$E{TEST_NGINX_SERVICES_DIR}/s3.pid";

    # stopped (TERM), started; then killed (KILL), started
    service_restart('S3 restart',
        "set -e; sleep 2; fault_begin; $ctl stop; sleep 2; $ctl start; fault_end; "
        . "sleep 3; fault_begin; kill -KILL \$(cat $pidf); sleep 2; $ctl start; fault_end",
        what => 's3ctl stop, start; kill -KILL, s3ctl start',
        faults => 2,
        grace => 1,
        errors => '502 or a body cut short with the connection closed',
        big => 1,
        allowed => sub {
            my ($res) = @_;
            return 1 if !$res->{error} && $res->{status} == 502;
            # cut mid-body: closed, shorter than its Content-Length
            return 1 if $res->{status} == 200 && !$res->{complete};
            return 0;
        });
}


# nginx -s reload five times under load: no request may fail
sub scenario_reload {
    my $name = 'reload under load';
    my $mark = log_mark();

    my $master = master_pid();
    my @old = workers();
    my @valid = small_valid();
    my (%status, @bad);

    my $t0 = time;
    my $cmd = "$NGINX -p $NGX_DIR/ -c conf/nginx.conf -e $ERRLOG -s reload";
    my $ctl_pid = background(join '; ', map { "sleep 1.5; $cmd" } 1 .. 5);
    my $ctl_done;

    Load::run(
        concurrency => 50,
        keepalive   => 0,
        next => sub {
            return undef if $ctl_done && time - $ctl_done > 2;
            my $id = $valid[int rand @valid];
            return { path => "/game/$id", id => $id, t => time - $t0 };
        },
        done => sub {
            my ($spec, $res) = @_;
            $status{ $res->{status} . ($res->{error} ? " $res->{error}" : '') }++;
            my $why = good_response($spec->{id}, $res);
            push @bad, sprintf('t=%.1f %s: %s', $spec->{t}, $spec->{path}, $why)
                if $why;
        },
        tick => sub {
            if (!$ctl_done && waitpid($ctl_pid, WNOHANG) == $ctl_pid) {
                @children = grep { $_ != $ctl_pid } @children;
                $ctl_done = time;
                ok($? == 0, "$name: nginx -s reload, 5 times");
            }
        },
    );

    my $total = 0;
    $total += $_ for values %status;
    note(sprintf "%s: %d requests in %.1f s: %s", $name, $total, time - $t0,
                 summary_of(\%status));
    ok(!@bad && $total > 100, "$name: $total requests, none failed",
       scalar(@bad) . ' failed', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    # the old generation leaves, with its connections
    my @left;
    for (1 .. 200) {
        @left = grep { kill 0, $_ } @old;
        my @shutting = grep { cmdline($_) =~ /shutting down/ } proc_children($master);
        last unless @left || @shutting;
        sleep 0.1;
    }

    ok(!@left, "$name: the old workers exited", "still there: @left");
    ok(master_pid() == $master, "$name: the same master");

    my @new = workers();
    ok(@new == $WORKERS && !grep({ my $n = $_; grep { $_ == $n } @old } @new),
       "$name: $WORKERS new workers", "old: @old", "new: @new");

    my $n;
    for (1 .. 50) {
        $n = pg_backends();
        last if $n <= $WORKERS * $POOL;
        sleep 0.1;
    }
    ok($n <= $WORKERS * $POOL,
       "$name: $n PostgreSQL connections from nginx, at most workers x pool");

    # the new workers: measured against the old ones' start
    my %old_base = %BASE;
    my @ob = sort { $a <=> $b } keys %old_base;
    %BASE = ();
    for my $k (0 .. $#new) {
        $BASE{ $new[$k] } = $old_base{ $ob[$k] // $ob[0] };
    }

    health($name, $mark, new_workers => 1);
}

# Credentials that live 30 s, rotated all along (STS and IMDS mint a new
# pair at each refresh, every 15 s), while 20 clients download for 3
# minutes: every download whole, S3 refuses none of the requests, no
# reload.
sub start_aws {
    for my $kind (qw(sts imds)) {
        AwsCreds::start($kind);
        AwsCreds::control($kind, reset => 1, ttl => 30);
    }

    note_child($_) for AwsCreds::pids();
}

sub scenario_creds {
    my $name = 'rotating credentials';
    my $mark = log_mark();
    my $s3_from = AwsCreds::s3_log_size();
    my $master = master_pid();
    my $seconds = $E{REL_CREDS_SECONDS} || 180;

    my (%status, @bad, $n, $bytes);

    # the sets' counters since nginx started: earlier scenarios stopped
    # S3, which mints the pairs, so only what moves from here is checked
    my %before = map { $_->{source} => $_ } rotating_sets();
    my $t0 = time;

    Load::run(
        concurrency => 20,
        keepalive   => 1,
        next => sub {
            return undef if time - $t0 >= $seconds;
            my $id = $VALID[int rand @VALID];
            my $where = ($n++ % 2) ? 'sts' : 'imds';
            return { path => "/rot-$where/$id", id => $id, t => time - $t0 };
        },
        done => sub {
            my ($spec, $res) = @_;
            $status{ $res->{status} . ($res->{error} ? " $res->{error}" : '') }++;
            $bytes += $res->{len};
            my $why = good_response($spec->{id}, $res);
            push @bad, sprintf('t=%.1f %s: %s', $spec->{t}, $spec->{path}, $why)
                if $why;
        },
    );

    my $total = 0;
    $total += $_ for values %status;
    note(sprintf "%s: %d downloads (%.0f MiB) in %.0f s: %s", $name, $total,
                 ($bytes // 0) / 1048576, time - $t0, summary_of(\%status));

    ok(!@bad && $total > 1000, "$name: $total downloads at 20 concurrent "
       . "for $seconds s, every one 200 with its bytes",
       scalar(@bad) . ' bad', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    ok(!$status{403} && !$status{502}, "$name: no 403, no 502",
       summary_of(\%status));

    # S3's side: every request signed with a minted pair, none refused
    my (%keys, @refused);
    for my $e (AwsCreds::s3_log($s3_from)) {
        $keys{ $e->{key} // '' }++;
        push @refused, "$e->{status} $e->{error} $e->{url}"
            if ($e->{status} // 0) >= 400;
    }
    ok(!@refused, "$name: S3 refused none of the requests",
       scalar(@refused) . ' refused', @refused[0 .. ($#refused > 9 ? 9 : $#refused)]);

    my $rotations = grep { /^ASIA/ } keys %keys;
    ok($rotations >= 2 * int($seconds / 15) - 2,
       "$name: $rotations key pairs signed in turn (two sources, a new "
       . "pair every 15 s)");

    # each set, over the scenario: refreshed all along, never failed,
    # valid now
    my @rot = rotating_sets();
    for my $set (@rot) {
        my $b = $before{ $set->{source} } || { refreshes => 0, failures => 0 };
        $set->{refreshed} = $set->{refreshes} - $b->{refreshes};
        $set->{failed} = $set->{failures} - $b->{failures};
    }
    ok(@rot == 2 && keys %before == 2
       && !grep({ !$_->{valid} || $_->{failed}
                  || $_->{refreshed} < int($seconds / 15) - 1 } @rot),
       "$name: both sets refreshed every 15 s, no failure",
       map { "$_->{source}: refreshed $_->{refreshed} times, failed "
             . "$_->{failed} times, last error \"$_->{last_error}\"" } @rot);

    ok(master_pid() == $master, "$name: no reload (the same master)");

    health($name, $mark);
}

# the credential sets that rotate (imds, web_identity), as /status says
sub rotating_sets {
    local $ENV{TEST_NGINX_PORT} = $PORT;
    return grep { $_->{source} =~ /^(imds|web_identity)$/ } AwsCreds::sets();
}

# psql \watch on a count, every 50 ms, in the background: watch_stop()
# gives the counts it saw
sub watch_start {
    my ($sql, $file) = @_;

    open my $fh, '>', "$file.sql" or die "$file.sql: $!";
    print $fh "$sql \\watch 0.05\n";
    close $fh;

    my $cmd = join(' ', map { "'$_'" } @PSQL) . " -f '$file.sql' > '$file'";
    return background("exec $cmd");
}

sub watch_stop {
    my ($pid, $file) = @_;

    kill 'TERM', -$pid;
    reap($pid, 10);

    open my $fh, '<', $file or return ();
    my @n = grep { /^\d+$/ } map { chomp; $_ } <$fh>;
    close $fh;

    return @n;
}

sub dns_delay {
    my ($ms) = @_;
    open my $fh, '>', $E{TEST_NGINX_DNS_DELAY_FILE} or die $!;
    print $fh "$ms\n";
    close $fh;
}

# A DNS server that answers 2 s late while the database's connections are
# made anew: the lookups wait for it, the workers keep answering others
sub scenario_dns_slow {
    my $name = 'DNS slow';
    my $mark = log_mark();
    my @valid = small_valid();
    my (%status, @bad, @plain);
    my $kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
               . " WHERE application_name = 'nginx-replay-dns'";

    # the names resolved once, the connections made, then dropped
    my $n = 0;
    Load::run(concurrency => 4, next => sub {
        return undef if $n++ >= 20;
        return { path => "/dns/$valid[0]" };
    });
    psql($kill);
    sleep 2.1;                                  # the answers' validity (whole seconds)

    dns_delay(2000);

    my ($i, $t0) = (0, time);

    Load::run(
        concurrency => 30,
        next => sub {
            return undef if time - $t0 > 6;
            my $k = $i++;
            if ($k % 3) {
                return { path => '/plain', plain => 1 };
            }
            my $id = $valid[int rand @valid];
            return { path => "/dns/$id", id => $id };
        },
        done => sub {
            my ($spec, $res) = @_;
            if ($spec->{plain}) {
                push @plain, $res->{time};
                push @bad, "/plain: $res->{status} $res->{error}"
                    unless $res->{status} == 200;
                return;
            }
            $status{ $res->{status} }++;
            my $why = good_response($spec->{id}, $res);
            push @bad, "$spec->{path}: $why" if $why;
        },
    );

    dns_delay(0);

    @plain = sort { $a <=> $b } @plain;
    my $p99 = $plain[int(@plain * 0.99)] // 0;

    note(sprintf "%s: lookups %s; %d requests of another location, "
                 . "median %.1f ms, p99 %.1f ms, max %.1f ms", $name,
                 summary_of(\%status), scalar @plain,
                 1000 * ($plain[@plain / 2] // 0), 1000 * $p99,
                 1000 * ($plain[-1] // 0));

    ok(!@bad, "$name: every lookup waited for DNS and answered 200 with its body; every other request 200",
       scalar(@bad) . ' bad', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    ok(($status{200} // 0) > 20, "$name: " . ($status{200} // 0) . " lookups answered");
    ok($p99 < ($SAN_DIR ? 0.5 : 0.1),
       sprintf("%s: the workers kept answering: p99 %.1f ms for another location",
               $name, 1000 * $p99));

    # its connections are not the main pool's
    psql($kill);

    health($name, $mark);
}

# Queries that never end within query_timeout, under load: each one is
# cancelled, the server never runs more than the pools allow, nothing is
# left running a second later, and other lookups go on
sub scenario_query_timeouts {
    my $name = 'query timeouts under load';
    my $mark = log_mark();
    my @valid = small_valid();
    my (%status, @bad);
    my $count = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                . " AND application_name = 'nginx-replay-timeout'";
    my $file = "$DIR/watch-timeouts";

    my $w = watch_start($count, $file);
    sleep 0.3;

    my ($i, $t0) = (0, time);

    Load::run(
        concurrency => 60,
        next => sub {
            return undef if $i >= 600;
            my $k = $i++;
            my $id = $valid[int rand @valid];
            return { path => ($k % 3 ? "/game/$id" : "/timeout/$id"), id => $id,
                     timeout => 30, slow => !($k % 3) };
        },
        done => sub {
            my ($spec, $res) = @_;
            $status{ ($spec->{slow} ? 'timeout ' : 'game ') . $res->{status} }++;
            if ($spec->{slow}) {
                push @bad, "$spec->{path}: $res->{status} $res->{error}"
                    unless $res->{status} == 504;
                return;
            }
            my $why = good_response($spec->{id}, $res);
            push @bad, "$spec->{path}: $why" if $why;
        },
    );

    my $end = time;
    my $left = psql($count);
    while ($left ne '0' && time - $end < 1) {
        sleep 0.05;
        $left = psql($count);
    }
    my $gone = time - $end;

    my @seen = watch_stop($w, $file);
    my ($max) = sort { $b <=> $a } @seen;

    note(sprintf "%s: %.1f s: %s; the server ran at most %s of them at once (%d looks)",
                 $name, $end - $t0, summary_of(\%status), $max // '?', scalar @seen);

    ok(!@bad, "$name: each slow lookup a 504, every other one 200 with its body",
       scalar(@bad) . ' bad', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    ok(@seen > 10 && defined $max && $max <= $WORKERS * $TIMEOUT_POOL,
       "$name: never more queries running than workers x pool ("
       . $WORKERS * $TIMEOUT_POOL . "), saw " . ($max // 'none'));
    ok($left eq '0', sprintf "%s: none left running %.2f s after the last 504", $name, $gone);

    health($name, $mark);
}

# ---------------------------------------------------------------- main

my %SCENARIOS = (
    mix        => \&scenario_mix,
    configs    => \&scenario_configs,
    bad_input  => \&scenario_bad_input,
    aborts     => \&scenario_aborts,
    stall      => \&scenario_stall,
    s3         => \&scenario_s3_restart,
    pg         => \&scenario_pg_restart,
    cache      => \&scenario_cache,
    creds      => \&scenario_creds,
    reload     => \&scenario_reload,
    dns_slow   => \&scenario_dns_slow,
    query_timeouts => \&scenario_query_timeouts,
);
my @ORDER = qw(mix configs bad_input aborts stall s3 pg cache dns_slow
               query_timeouts creds reload);

my @run = @ARGV ? @ARGV : @ORDER;

for (@run) {
    die "unknown scenario \"$_\"; known: @ORDER\n" unless $SCENARIOS{$_};
}

sub cleanup {
    for my $pid (@children) {
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    @children = ();
    stop_nginx();
}

$SIG{INT} = $SIG{TERM} = sub { cleanup(); _exit(130) };

# a bound on the whole run: a hang is a failure, not a stuck CI job
my $LIMIT = $E{REL_TIME_LIMIT} || 1200;
$SIG{ALRM} = sub {
    print "not ok - the scenarios did not end within $LIMIT s\n";
    cleanup();
    _exit(1);
};
alarm $LIMIT;
$SIG{PIPE} = 'IGNORE';

my $t_start = time;

load_fixtures();
start_aws();
start_nginx();

note("nginx $NGINX, module $E{REL_MODULE}, port $PORT, $WORKERS workers, pool $POOL");

scenario_warmup();

for my $s (@run) {
    my $t = time;
    note("---- $s");
    eval { $SCENARIOS{$s}->(); 1 } or ok(0, "$s: died", $@);
    note(sprintf "---- %s: %.1f s", $s, time - $t);
}

cleanup();

# the log nginx wrote while it stopped, and all before
{
    my @bad = grep { /\[(alert|crit|emerg)\]|exited on signal|left in connection|Assertion/ }
              log_since(0);
    ok(!@bad, "shutdown: nginx stopped on QUIT within 10 s, and its error log "
              . "holds no [alert], [crit], [emerg], crash or open socket left",
       @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    ok(!$killed, "shutdown: nginx did not have to be killed");
}

printf "1..%d\n", $ntest;
printf "# %d passed, %d failed (%.0f s)\n", $passed, $failed, time - $t_start;

exit($failed ? 1 : 0);
