package ReplayTest;

# What every .t of this suite shares, under the real Test::Nginx (0.33) and
# our bundled runner alike (both call the same hooks at the same points:
# add_block_preprocessor before a block, add_response_body_check after each
# response, add_test_cleanup_handler after the block):
#
# * nginx runs with a master process and one worker, as in production, so
#   that a worker that dies is noticed: after each block the master and
#   exactly one live worker must be there, the error log must show no
#   worker started but the first one (and one per ReplayTest::reload), and
#   no "exited on signal" (with valgrind, where nginx is stopped after each
#   block, the log is still read);
# * every block has its own nginx: a block without "--- config" would run
#   on the previous block's, which under valgrind is stopped after each
#   block; the checks below then need no care for what earlier blocks did;
# * each block asserts that the error log holds no [alert], [crit],
#   [emerg] or "exited on signal" line (a wrong r->main->count shows up
#   only as "http request count is zero" alerts while responses look fine),
#   and no [error] line unless the block has an "--- error_log" section
#   (or "--- error_log_at_end": patterns that must match lines of the log
#   once the block is over, for an [error] that a later request of the
#   block brings, which "--- error_log", checked after each request, does
#   not allow);
# * after each nginx shutdown the log it wrote then is read for the same,
#   and for "open socket ... left in connection" (no_shutdown_error_log);
# * every request the suite's S3 server saw during the block is checked
#   against the block's "--- s3_requests" (see check_s3_requests below):
#   method, URL, Range, how it was signed and with which key; a block
#   without that section, or with "--- no_s3_request", asserts that S3 saw
#   no request at all;
# * "--- after_request eval" [CODE or undef, ...] runs code after the
#   request of the same index (SQL between requests, a reload, a pause),
#   with the block and the response body;
# * "--- status_counters eval" {SAMPLE => VALUE, ...}: the block's last
#   response must be replay_status's Prometheus text, well formed, with
#   those samples (and, when it names replay_requests_total samples, every
#   other outcome at 0).

use strict;
use warnings;

use Config ();
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

use Test::Nginx::Socket ();

our $AccessKey = $ENV{TEST_NGINX_S3_ACCESS_KEY} // 'AKIAIOSFODNN7EXAMPLE';

my $s3_log_pos;       # where the S3 log's unread lines start
my $reloads = 0;      # reloads since the current nginx started
my @background;       # pids of requests left running (in_background)
my @never_accepting;  # the sockets of never_accepting

sub import {
    # nginx daemonizes: its master's parent becomes init, which here reaps
    # exited processes late, and Test::Nginx (0.33) waits for a master that
    # has exited but is not reaped yet until its timeout, 3 s per restart.
    # As the subreaper of what we start, the masters become our children
    # instead, and the runner's own waitpid() reaps them at once.
    if ($^O eq 'linux' && $Config::Config{archname} =~ /^x86_64/) {
        syscall(157, 36, 1, 0, 0, 0);    # prctl(PR_SET_CHILD_SUBREAPER, 1)
    }

    Test::Nginx::Socket::master_on();
    Test::Nginx::Socket::workers(1);

    # every block starts an nginx of its own (a file shares a configuration
    # through a preprocessor that fills in "--- config"), so a block's log
    # checks read all its nginx logged, not only what came since the last
    # request of the block
    Test::Nginx::Socket::check_accum_error_log();

    Test::Nginx::Socket::add_block_preprocessor(\&_before_block);
    Test::Nginx::Socket::add_response_body_check(\&_after_request);
    Test::Nginx::Socket::add_test_cleanup_handler(\&_after_block);
}

sub _patterns {
    my ($value) = @_;

    return () unless defined $value;
    return @$value if ref $value eq 'ARRAY';
    return ($value) if ref $value;
    return grep { length } split /\n/, $value;
}

sub _before_block {
    my $block = shift;

    defined $block->config
        or die $block->name . ": no --- config; share a configuration with "
               . "a preprocessor that fills it in (see t/020-stream.t)\n";

    my @nel = _patterns(scalar $block->no_error_log);

    push @nel, '[alert]', '[crit]', 'exited on signal';

    if (!defined $block->must_die) {
        push @nel, '[emerg]';
        push @nel, '[error]' unless defined $block->error_log
                                    || defined $block->error_log_at_end;

        $block->set_value('no_shutdown_error_log', [
            _patterns(scalar $block->no_shutdown_error_log),
            '[alert]', '[crit]', '[emerg]', 'exited on signal',
            qr/open socket #\d+ left in connection/,
        ]);
    }

    $block->set_value('no_error_log', \@nel);

    $reloads = 0;

    $s3_log_pos //= -s ($ENV{TEST_NGINX_S3_LOG} // '') // 0;
}

sub _after_request {
    my ($block, $body, $idx, $repeated, $dry_run) = @_;

    return if $dry_run;

    my $req = $block->request;
    my $last = ref $req eq 'ARRAY' ? $#$req : 0;

    if ($idx == $last && defined(my $want = $block->status_counters)) {
        check_counters($block->name, $body, $want);
    }

    my $after = $block->after_request or return;

    ref $after eq 'ARRAY'
        or die $block->name . ": --- after_request must be an array\n";

    my $code = $after->[$idx] or return;
    $code->($block, $body);
}

sub _after_block {
    my $block = shift;

    return if defined $block->SKIP;

    # requests left running by the block end before its accounts are read
    wait_background();
    @never_accepting = ();

    check_s3_requests($block);
    check_error_log_at_end($block);
    check_nginx($block) unless defined $block->must_die;
}

# "--- error_log_at_end": each pattern (a string, or with eval a qr// or
# an array of them) matches a line of the error log as the block ends.
sub check_error_log_at_end {
    my ($block) = @_;

    my @pats = _patterns(scalar $block->error_log_at_end) or return;
    my @log = _slurp_lines(Test::Nginx::Util::server_root()
                           . '/logs/error.log');

    for my $pat (@pats) {
        my $found = ref $pat ? grep { $_ =~ $pat } @log
                             : grep { index($_, $pat) >= 0 } @log;

        Test::More::ok($found, $block->name . " - \"$pat\" in the error "
                                . "log by the block's end");
    }
}


# ---------------------------------------------------------------------------
# nginx: the master, its one worker, the workers it started

sub _slurp_lines {
    my ($file) = @_;

    open my $fh, '<', $file or return;
    my @lines = <$fh>;
    close $fh;
    return @lines;
}

sub _stat {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/stat" or return;
    my $stat = <$fh> // '';
    close $fh;

    # pid (comm) state ppid ...
    return $stat =~ /\)\s+(\S)\s+(\d+)/ ? ($1, $2) : ();
}

sub _cmdline {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $cmd = <$fh> // '';
    close $fh;
    $cmd =~ tr/\0/ /;
    return $cmd;
}

# The master's pid, from the pid file ('' when there is none).
sub master_pid {
    my $file = Test::Nginx::Util::server_root() . '/logs/nginx.pid';

    open my $fh, '<', $file or return '';
    my $pid = <$fh> // '';
    close $fh;
    chomp $pid;
    return $pid;
}

# The master's children: { pid => [state, cmdline] }.
sub _children {
    my ($master) = @_;

    my %kids;

    opendir my $dh, '/proc' or return {};

    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my ($state, $ppid) = _stat($pid);
        next unless defined $ppid && $ppid == $master;
        $kids{$pid} = [$state, _cmdline($pid)];
    }

    closedir $dh;
    return \%kids;
}

# Of the master's children, the live worker processes that serve.  Under
# valgrind the command lines stay valgrind's (nginx's process titles are
# in the guest's memory): then every live child is taken for one, which
# holds where there is no cache manager.
sub _workers {
    my ($kids) = @_;

    my @live = grep { $kids->{$_}[0] !~ /[ZX]/ } keys %$kids;

    return sort { $a <=> $b } @live
        unless grep { $kids->{$_}[1] =~ /^nginx: / } @live;

    return sort { $a <=> $b }
           grep { $kids->{$_}[1] =~ /worker process/
                  && $kids->{$_}[1] !~ /is shutting down/ } @live;
}

# The pids of the master's live worker processes.
sub worker_pids {
    my $master = master_pid() or return ();
    return _workers(_children($master));
}

# The one worker's pid; dies if there is not exactly one.
sub worker_pid {
    my @w = worker_pids();
    die "nginx has " . @w . " workers, not one\n" unless @w == 1;
    return $w[0];
}

# Reloads nginx (HUP) and waits until the new worker serves and the old
# one has gone, as a deploy would; the block's worker checks then expect
# the extra "start worker process".
sub reload {
    my $master = master_pid() or die "reload: no nginx running\n";
    my ($old) = worker_pids();

    kill 'HUP', $master or die "reload: kill -HUP $master: $!\n";

    # the new worker, then the old one's exit (valgrind is slow at both)
    for (1 .. ($ENV{TEST_NGINX_USE_VALGRIND} ? 2400 : 400)) {
        my $kids = _children($master);
        my @new = grep { $_ != ($old // 0) } _workers($kids);
        if (@new == 1 && !($old && $kids->{$old})) {
            $reloads++;
            return $new[0];
        }
        Time::HiRes::sleep(0.025);
    }

    die "reload: no new worker, or the old one stays\n";
}

# The workers nginx runs: one, unless a .t asks for more with workers(N)
# after "use ReplayTest" (t/095-creds-workers.t).
sub _nworkers {
    return Test::Nginx::Util::workers() || 1;
}

# After a block: nginx and its one worker are still there, no worker died
# or was started anew.  Under valgrind nginx has been stopped already: the
# log is read all the same.
sub check_nginx {
    my ($block) = @_;

    my $name = $block->name;
    my $log = Test::Nginx::Util::server_root() . '/logs/error.log';
    my @problems;

    if (!$ENV{TEST_NGINX_USE_VALGRIND}) {
        my $master = master_pid();
        my ($state) = $master ? _stat($master) : ();

        if (!$master || !defined $state || $state =~ /[ZX]/) {
            push @problems, "nginx (pid " . ($master || 'unknown')
                            . ") is gone";

        } else {
            my $kids = _children($master);
            my @dead = grep { $kids->{$_}[0] =~ /[ZX]/ } sort keys %$kids;
            my @live = worker_pids();

            push @problems, "a worker process died: pid @dead" if @dead;
            push @problems, "nginx has " . @live . " live workers, not "
                            . _nworkers()
                unless @live == _nworkers();
        }
    }

    my @log = _slurp_lines($log);
    my @starts = grep { /\bstart worker process \d+/ } @log;
    my @signals = grep { /exited on signal/ } @log;

    push @problems, map { "error.log: $_" } @signals;

    # (a log level above notice does not show the starts)
    if (@starts && @starts != _nworkers() * (1 + $reloads)) {
        push @problems, "nginx started " . @starts . " workers, expected "
                        . _nworkers() * (1 + $reloads) . " (a worker died "
                        . "and was replaced?)";
    }

    Test::More::ok(!@problems, "$name - nginx and its "
                               . (_nworkers() == 1 ? "one worker" : "workers")
                               . " lived through the block")
        or Test::More::diag(join "\n", @problems);
}


# ---------------------------------------------------------------------------
# what S3 saw

# "--- s3_requests" lists, one a line, every request the suite's S3 server
# must have seen during the block, in any order (a line starting with "#"
# is a comment; with "eval", an array of lines):
#
#   METHOD URL [Range: SPEC] [signed|presigned|anonymous] [key=ID]
#              [-> STATUS [CODE]]
#
# With "eval", the section may also be a sub giving the lines when the
# block is over, for what depends on how the block went.
#
# URL is the request target as sent (percent-encoded as on the wire); for a
# presigned request, its path (the query is checked to be a presigned one).
# "signed" (the default) is an Authorization: AWS4-HMAC-SHA256 header;
# "key=" the access key it names (default: the suite's); without "->" S3
# must not have refused the request as unsigned or badly signed (no 400 or
# 403), with it the status (and S3's error code) must be those.  No Range
# means the request had none.
sub parse_s3_spec {
    my ($line) = @_;

    my @t = split ' ', $line;
    my %spec = (line => $line, method => shift @t, url => shift @t,
                auth => 'signed', key => $AccessKey);

    defined $spec{url} or die "bad --- s3_requests line: \"$line\"\n";

    while (@t) {
        my $t = shift @t;

        if ($t eq 'Range:') {
            $spec{range} = shift @t;

        } elsif ($t =~ /^(signed|presigned|anonymous)$/) {
            $spec{auth} = $t;

        } elsif ($t =~ /^key=(\S+)$/) {
            $spec{key} = $1;

        } elsif ($t eq '->') {
            $spec{status} = shift @t;
            $spec{code} = shift @t if @t;
            die "bad --- s3_requests line: \"$line\"\n" if @t;

        } else {
            die "bad --- s3_requests line: \"$line\" (at \"$t\")\n";
        }
    }

    return \%spec;
}

my %auth_name = ('AWS4-HMAC-SHA256' => 'signed',
                 'presigned-v4' => 'presigned', anonymous => 'anonymous');

# One logged request in the spec's words.
sub show_s3_entry {
    my ($e) = @_;

    my $auth = $auth_name{$e->{auth} // ''} // "auth=" . ($e->{auth} // '');
    my $s = "$e->{method} $e->{url}";
    $s .= " Range: $e->{range}" if defined $e->{range};
    $s .= " $auth";
    $s .= " key=$e->{key}" if defined $e->{key} && $e->{key} ne $AccessKey;
    $s .= " -> $e->{status}";
    $s .= " $e->{error}" if defined $e->{error};
    return $s;
}

sub s3_entry_matches {
    my ($spec, $e) = @_;

    return 0 unless $e->{method} eq $spec->{method};
    return 0 unless ($e->{range} // '') eq ($spec->{range} // '');

    my $auth = $auth_name{$e->{auth} // ''} // '';
    return 0 unless $auth eq $spec->{auth};

    if ($auth eq 'presigned') {
        my ($path, $query) = split /\?/, $e->{url}, 2;
        return 0 unless $path eq $spec->{url}
                        && ($query // '') =~ /(?:^|&)X-Amz-Signature=/;
    } else {
        return 0 unless $e->{url} eq $spec->{url};
    }

    return 0 if $auth ne 'anonymous' && ($e->{key} // '') ne $spec->{key};

    if (defined $spec->{status}) {
        return 0 unless $e->{status} == $spec->{status};
        return 0 if defined $spec->{code} && ($e->{error} // '') ne $spec->{code};
    } else {
        return 0 if $e->{status} == 400 || $e->{status} == 403;
    }

    return 1;
}

# The requests S3 logged since the last call.
sub s3_log_entries {
    my $file = $ENV{TEST_NGINX_S3_LOG} or return ();

    open my $fh, '<', $file or die "$file: $!\n";
    seek $fh, $s3_log_pos // 0, 0;

    my @entries;

    while (my $line = <$fh>) {
        # a line being written: read it next time
        last unless $line =~ /\n\z/;
        $s3_log_pos = tell $fh;
        push @entries, JSON::PP::decode_json($line);
    }

    close $fh;
    return @entries;
}

sub check_s3_requests {
    my ($block) = @_;

    my $name = $block->name;

    if (!$ENV{TEST_NGINX_S3_LOG}) {
        Test::More::fail("$name - TEST_NGINX_S3_LOG is not set: run the suite "
                         . "with make test");
        return;
    }

    my $want = $block->s3_requests;
    $want = [$want->()] if ref $want eq 'CODE';
    my @lines = ref $want eq 'ARRAY' ? @$want : split /\n/, $want // '';
    @lines = grep { /\S/ && !/^\s*#/ } @lines;

    if (defined $block->no_s3_request && @lines) {
        die "$name: both --- s3_requests and --- no_s3_request\n";
    }

    # the ones with a status first: they are the pickier
    my @specs = sort { defined $b->{status} <=> defined $a->{status} }
                map { parse_s3_spec($_) } @lines;
    my @left = s3_log_entries();

    my @missing;

    SPEC: for my $spec (@specs) {
        for my $i (0 .. $#left) {
            if (s3_entry_matches($spec, $left[$i])) {
                splice @left, $i, 1;
                next SPEC;
            }
        }
        push @missing, $spec->{line};
    }

    my $what = @specs ? "S3 saw the requests listed and no other"
                      : "S3 was not asked";

    Test::More::ok(!@missing && !@left, "$name - $what")
        or Test::More::diag(join "\n",
            (map { "    listed, not seen: $_" } @missing),
            (map { "    seen, not listed: " . show_s3_entry($_) } @left));
}


# ---------------------------------------------------------------------------
# replay_status

# The samples of a Prometheus text exposition, by name and labels; its
# format is checked on the way (a HELP and a TYPE line for each family, no
# other line) as a test named "NAME - Prometheus text format".
sub prometheus {
    my ($text, $name) = @_;

    my (%samples, %typed, @bad);

    for my $line (split /\n/, $text // '') {
        if ($line =~ /^# (HELP|TYPE) ([a-z0-9_]+) (.+)$/) {
            $typed{$2}{$1} = $3;
            next;
        }

        if ($line =~ /^(([a-z0-9_]+?)(?:_bucket|_sum|_count)?(?:\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})?) (\d+(?:\.\d+)?)$/
            && ($typed{$2} || $typed{$1}))
        {
            $samples{$1} = $3;
            next;
        }

        push @bad, $line;
    }

    my @untyped = grep { !($typed{$_}{HELP} && $typed{$_}{TYPE}) }
                  keys %typed;

    Test::More::is("@bad@untyped", '', "$name - Prometheus text format");

    return \%samples;
}

# The status response $body has the samples of %$want; if those name
# replay_requests_total samples, the other outcomes are 0.
sub check_counters {
    my ($name, $body, $want) = @_;

    if (($body // '') !~ /\A# HELP /) {
        Test::More::fail("$name - the last response is replay_status's "
                         . "Prometheus text");
        Test::More::diag("got: " . substr($body // '(none)', 0, 200));
        return;
    }

    my $samples = prometheus($body, $name);

    for my $k (sort keys %$want) {
        Test::More::is($samples->{$k}, $want->{$k}, "$name - $k");
    }

    if (grep { /^replay_requests_total\{/ } keys %$want) {
        my @other = grep { /^replay_requests_total\{/ && !exists $want->{$_}
                           && $samples->{$_} != 0 } sort keys %$samples;

        Test::More::is("@other", '', "$name - no other outcome counted");
    }
}


# ---------------------------------------------------------------------------
# helpers for the test files

# Returns once nginx accepts connections (under valgrind it takes a while
# to start: up to a minute on a busy machine).
sub wait_for_nginx {
    require IO::Socket::INET;

    for (1 .. ($ENV{TEST_NGINX_USE_VALGRIND} ? 1200 : 200)) {
        my $sock = IO::Socket::INET->new(
            PeerAddr => '127.0.0.1',
            PeerPort => $Test::Nginx::Util::ServerPortForClient);
        return if $sock;
        Time::HiRes::sleep(0.05);
    }

    die "nginx does not accept connections\n";
}

# Runs a GET in a process of its own, left to run while the block goes on
# (its request waits, holds a place...); the block's checks of S3 and
# nginx wait for it.  Returns once it has had time to reach nginx.
sub in_background {
    my ($path, $delay) = @_;

    wait_for_nginx();

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        get_concurrently([$path]);
        POSIX::_exit(0);
    }

    push @background, $pid;
    Time::HiRes::sleep($delay // 0.2);
}

# The port $TEST_NGINX_RAND_PORT_N stands for in the current block.
sub rand_port {
    my ($n) = @_;

    return $Test::Nginx::Util::RandPorts->{"TEST_NGINX_RAND_PORT_$n"}
        // die "no \$TEST_NGINX_RAND_PORT_$n in this block's configuration\n";
}

# A listener on 127.0.0.1:$port that never accepts, kept until the block
# ends: its accept queue (backlog 1) is filled, so the kernel drops further
# SYNs and a connect() to it times out, as to a host that is down.
sub never_accepting {
    my ($port) = @_;

    require IO::Socket::INET;

    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $port, Listen => 1,
                                  ReuseAddr => 1)
        or die "listen on $port: $!\n";

    my @held = ($l);

    # the queue holds backlog + 1; the first connect that times out shows
    # it is full
    for (1 .. 8) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Timeout => 0.2)
            or return push @never_accepting, @held;
        push @held, $c;
    }

    die "the listener on $port keeps accepting\n";
}

# Waits for the requests in_background left running.
sub wait_background {
    waitpid $_, 0 for splice @background;
}

# Sends a GET and goes away after $secs seconds, without the response.
sub leave_after {
    my ($path, $secs) = @_;

    require IO::Socket::INET;

    wait_for_nginx();

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $Test::Nginx::Util::ServerPortForClient,
    ) or die "connect: $!";

    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    Time::HiRes::sleep($secs);
    close $sock;
}

# How many descriptors the worker has open.
sub worker_fds {
    my (%o) = @_;

    my $pid = worker_pid();

    opendir my $dh, "/proc/$pid/fd" or die "/proc/$pid/fd: $!";
    my @fds = grep { /^\d+$/ } readdir $dh;
    closedir $dh;

    return scalar @fds unless defined $o{peer_port};

    # with peer_port => PORT: (descriptors but the TCP connections to PORT,
    # those connections)
    my %peer;

    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split ' ';
            next unless @c > 9 && $c[2] =~ /:([0-9A-F]{4})$/;
            $peer{$c[9]} = hex $1;
        }
        close $fh;
    }

    my ($other, $to) = (0, 0);

    for my $fd (@fds) {
        my $l = readlink "/proc/$pid/fd/$fd" // next;

        if ($l =~ /^socket:\[(\d+)\]$/ && ($peer{$1} // -1) == $o{peer_port}) {
            $to++;
        } else {
            $other++;
        }
    }

    return ($other, $to);
}


# The resident memory of the worker, in KiB.
sub worker_rss {
    my $pid = worker_pid();

    open my $fh, '<', "/proc/$pid/status" or die "/proc/$pid/status: $!";
    my ($rss) = map { /^VmRSS:\s+(\d+) kB/ ? $1 : () } <$fh>;
    close $fh;

    return $rss;
}

# The bytes of an object the services uploaded, from the local copy that
# t/services/up keeps (DIR/fixtures/keys.txt: "key<TAB>file").
sub fixture {
    my ($key, $list) = @_;

    my $dir = $ENV{TEST_NGINX_FIXTURES}
        or die "TEST_NGINX_FIXTURES is not set: run the suite with make test\n";

    $list //= 'keys.txt';

    open my $fh, '<', "$dir/$list" or die "$dir/$list: $!\n";

    while (my $line = <$fh>) {
        chomp $line;
        my ($k, $file) = split /\t/, $line, 2;
        next unless defined $file && $k eq $key;

        $file = "$dir/$file" unless $file =~ m{^/};
        open my $obj, '<:raw', $file or die "$file: $!\n";
        local $/;
        my $data = <$obj>;
        return defined $data ? $data : '';
    }

    die "no fixture for key \"$key\" in $dir/$list\n";
}

# The same as a pattern that matches those bytes and nothing else.
sub fixture_re {
    my $data = fixture(@_);
    return qr/\A\Q$data\E\z/;
}

# GET (or HEAD, with $method) a URL with curl, as a client following a
# redirect would; --path-as-is keeps "..", "//" as they are.  Returns the
# status, the body and the response head.
sub curl_get {
    my ($url, $method) = @_;

    require File::Temp;
    my ($fh, $file) = File::Temp::tempfile(UNLINK => 1);
    my ($hfh, $hfile) = File::Temp::tempfile(UNLINK => 1);
    close $fh;
    close $hfh;

    my $how = ($method // 'GET') eq 'HEAD' ? '-I' : '';
    my $code = `curl -sS $how --path-as-is --max-time 30 -D '$hfile' -o '$file' -w '%{http_code}' '$url'`;

    local $/;
    open my $in, '<:raw', $file or die "$file: $!\n";
    my $body = <$in>;
    open $in, '<:raw', $hfile or die "$hfile: $!\n";
    my $head = <$in>;

    return ($code, $body // '', $head // '');
}

# Runs SQL with psql on the suite's PostgreSQL; its output, chomped.
sub psql {
    my ($sql) = @_;

    my $cmd = join ' ', $ENV{TEST_NGINX_PSQL}, '-X', '-At',
                  '-h', $ENV{TEST_NGINX_PG_HOST}, '-p', $ENV{TEST_NGINX_PG_PORT},
                  '-U', $ENV{TEST_NGINX_PG_USER}, '-d', $ENV{TEST_NGINX_PG_DB};

    my $out = `$cmd -c "$sql" 2>&1`;
    chomp $out;
    return $out;
}

# The size of the PostgreSQL server log: pg_log_count's $from.
sub pg_log_size {
    return -s $ENV{TEST_NGINX_PG_LOG} // 0;
}

# The suite's S3 server: "start", "stop", "restart".
sub s3ctl {
    my ($cmd) = @_;

    system($ENV{TEST_NGINX_S3_CTL}, $cmd) == 0
        or die "s3ctl $cmd failed\n";
}

# How many lines of the PostgreSQL server log (log_statement = all) hold
# a string (from byte $from on).
sub pg_log_count {
    my ($s, $from) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_PG_LOG}
        or die "$ENV{TEST_NGINX_PG_LOG}: $!";
    seek $fh, $from, 0 if $from;

    my $n = 0;
    while (<$fh>) {
        $n++ if index($_, $s) >= 0;
    }

    close $fh;
    return $n;
}

# The ETag S3 gives an object uploaded in one piece: its quoted MD5.
sub etag {
    require Digest::MD5;
    return '"' . Digest::MD5::md5_hex(fixture(@_)) . '"';
}

# GETs every path at once, each from a process of its own, over HTTP/1.0.
# Returns [status, head, body] per path, in their order; with
# discard => 1 the body is counted, not kept: [status, head, length].
# While the clients run, "poll" (a sub) is called every 20 ms.
sub get_concurrently {
    my ($paths, %opt) = @_;

    require File::Temp;
    require POSIX;
    require Time::HiRes;

    my $dir = File::Temp::tempdir(CLEANUP => 1);
    my @pids;

    wait_for_nginx();

    for my $i (0 .. $#$paths) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;

        if ($pid == 0) {
            my ($head, $body, $len) = _get($paths->[$i], $opt{discard});
            if (open my $fh, '>:raw', "$dir/$i") {
                print $fh $opt{discard} ? "$len\n$head" : "$head\r\n\r\n$body";
                close $fh;
            }
            # no END blocks here: they would stop nginx
            POSIX::_exit(0);
        }

        push @pids, $pid;
    }

    my %left = map { $_ => 1 } @pids;

    while (%left) {
        for my $pid (keys %left) {
            delete $left{$pid} if waitpid($pid, POSIX::WNOHANG()) != 0;
        }
        $opt{poll}->() if $opt{poll};
        Time::HiRes::sleep(0.02) if %left;
    }

    my @out;

    for my $i (0 .. $#$paths) {
        my $resp = '';
        if (open my $fh, '<:raw', "$dir/$i") {
            local $/;
            $resp = <$fh> // '';
            close $fh;
        }

        my ($head, $body);

        if ($opt{discard}) {
            ($body, $head) = split /\n/, $resp, 2;
        } else {
            ($head, $body) = split /\r\n\r\n/, $resp, 2;
        }

        my ($status) = ($head // '') =~ m{^HTTP/\d\.\d (\d+)};
        push @out, [$status // 0, $head // '', $body // ''];
    }

    return @out;
}

# Sends "GET PATH" on a connection of its own and leaves it open: returns
# the socket (to read the response with read_response, or to close).
sub open_request {
    my ($path, $extra) = @_;

    require IO::Socket::INET;

    wait_for_nginx();

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $Test::Nginx::Util::ServerPortForClient,
        Timeout  => 20,
    ) or die "connect: $!\n";

    binmode $sock;
    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n"
                . ($extra // '') . "\r\n";

    return ($sock);
}

# Reads a response to its end, for at most $timeout seconds: the head and
# the body ('' and '' if nothing came).
sub read_response {
    my ($sock, $timeout) = @_;

    require IO::Select;
    require Time::HiRes;

    my $sel = IO::Select->new($sock);
    my $end = Time::HiRes::time() + $timeout;
    my $buf = '';

    while ((my $left = $end - Time::HiRes::time()) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread $sock, my $chunk, 65536;
        last unless $n;
        $buf .= $chunk;
    }

    my ($head, $body) = split /\r\n\r\n/, $buf, 2;

    return ($head // '', $body // '');
}

# Column N (from 0, split on white space) of every line of FILE, relative
# to the server root.
sub log_column {
    my ($file, $n) = @_;

    my $path = Test::Nginx::Util::server_root() . "/$file";

    open my $fh, '<', $path or die "$path: $!\n";
    my @col = map { (split ' ', $_)[$n] } <$fh>;
    close $fh;

    return @col;
}

# How many queries for NAME the suite's DNS forwarder has relayed
# (t/services/dns-delay.py's log).
sub dns_queries {
    my ($name) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_DNS_QUERY_LOG}
        or die "$ENV{TEST_NGINX_DNS_QUERY_LOG}: $!\n";
    my $n = grep { / \Q$name\E$/ } <$fh>;
    close $fh;

    return $n;
}

# Waits up to $timeout seconds for a line of FILE (relative to the server
# root) to match $re; true if one did.
sub wait_for_line {
    my ($file, $re, $timeout) = @_;

    require Time::HiRes;

    my $path = Test::Nginx::Util::server_root() . "/$file";
    my $end = Time::HiRes::time() + $timeout;

    for (;;) {
        if (open my $fh, '<', $path) {
            while (my $l = <$fh>) {
                chomp $l;
                return 1 if $l =~ $re;
            }
            close $fh;
        }

        return 0 if Time::HiRes::time() > $end;
        Time::HiRes::sleep(0.05);
    }
}

# One GET: the head, and the body or, with $discard, its length.
sub _get {
    my ($path, $discard) = @_;

    require IO::Socket::INET;

    my $sock;

    # nginx may still be starting (under valgrind it takes a while)
    for (1 .. 100) {
        $sock = IO::Socket::INET->new(
            PeerAddr => '127.0.0.1',
            PeerPort => $Test::Nginx::Util::ServerPortForClient,
            Timeout  => 20,
        );
        last if $sock;
        select undef, undef, undef, 0.1;
    }

    return ("connect failed: $!", '', 0) unless $sock;

    binmode $sock;
    print $sock "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";

    my ($buf, $head, $body, $len) = ('', undef, '', 0);

    while (sysread $sock, my $chunk, 65536) {
        if (defined $head) {
            $len += length $chunk;
            $body .= $chunk unless $discard;
            next;
        }

        $buf .= $chunk;
        my $end = index $buf, "\r\n\r\n";
        next if $end < 0;

        $head = substr $buf, 0, $end;
        $body = substr $buf, $end + 4;
        $len = length $body;
        $body = '' if $discard;
    }

    close $sock;

    return (defined $head ? $head : $buf, $body, $len);
}

# GETs every path at once from one curl process (a connection each, all
# opened together: they reach nginx within a few milliseconds, where
# forked clients trickle in).  Returns [status, body] per path, in order.
sub get_parallel {
    my ($paths) = @_;

    require File::Temp;

    wait_for_nginx();

    my $dir = File::Temp::tempdir(CLEANUP => 1);
    my $port = $Test::Nginx::Util::ServerPortForClient;

    open my $fh, '>', "$dir/list" or die "$dir/list: $!";

    for my $i (0 .. $#$paths) {
        print $fh "url = \"http://127.0.0.1:$port$paths->[$i]\"\n"
                  . "output = \"$dir/$i\"\n";
    }

    close $fh;

    my @codes = split ' ', `curl -s --no-progress-meter -Z --parallel-immediate --parallel-max 200 -w '%{urlnum} %{http_code}\\n' -K '$dir/list' 2>/dev/null`;
    my @res;

    while (my ($n, $code) = splice @codes, 0, 2) {
        open my $in, '<:raw', "$dir/$n" or next;
        local $/;
        my $body = <$in>;
        $res[$n] = [$code, $body // ''];
    }

    return map { $_ // [0, ''] } @res[0 .. $#$paths];
}

1;
