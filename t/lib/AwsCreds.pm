package AwsCreds;

# The suite's AWS credential endpoints (t/services/aws/) for the .t files
# and the reliability scenarios: started before the tests (on free ports,
# getting their key pairs from the S3 server of t/services/up), driven
# through their control API, stopped at the end.
#
#   use AwsCreds;
#   AwsCreds::start('imds');        # sets $ENV{TEST_NGINX_IMDS_URL}
#   AwsCreds::control('imds', reset => 1, ttl => 8);
#   my @reqs = AwsCreds::requests('imds');
#
# t/reliability/ uses it too, without Test::Nginx.
#
# Kinds: imds, container, sts (HTTPS, with the certificate of the suite's
# CA that t/services/up makes: $ENV{TEST_NGINX_TLS_DIR}/ca.crt trusts it,
# for localhost and 127.0.0.1).

use strict;
use warnings;

use File::Temp ();
use JSON::PP ();
use POSIX ();

my $ROOT = do {
    (my $d = __FILE__) =~ s{/t/lib/AwsCreds\.pm$}{};
    $d = '.' if $d eq __FILE__;
    $d;
};

# Test::Nginx's, when it is loaded
no warnings 'once';

my $PARENT = $$;
my (%SVC, @KIDS);

my $JSON = JSON::PP->new->canonical;

# the markers of the secrets the suite's services hand out (server.js)
our @SECRET_MARKERS = ('mintSECRET', 'mintTOKEN', 'mintIMDS');

# start(KIND [, name => NAME]): its URL, also in $ENV{TEST_NGINX_<NAME>_URL}
# and _PORT
sub start {
    my ($kind, %opt) = @_;

    my $name = $opt{name} // $kind;
    return $SVC{$name}{url} if $SVC{$name};

    my $s3 = $ENV{TEST_NGINX_S3_ENDPOINT}
        or die "TEST_NGINX_S3_ENDPOINT is not set: run with make test\n";

    my @cmd = ('node', "$ROOT/t/services/aws/$kind.js", '--mint', $s3);
    my $scheme = 'http';
    my $host = '127.0.0.1';

    if ($kind eq 'sts') {
        my $dir = $ENV{TEST_NGINX_TLS_DIR}
            or die "TEST_NGINX_TLS_DIR is not set: run with make test\n";
        push @cmd, '--cert', "$dir/server.crt", '--key', "$dir/server.key";
        $scheme = 'https';
        $host = 'localhost';
    }

    push @cmd, '--log', $opt{log} if $opt{log};

    my $pid = open my $out, '-|';
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        POSIX::setsid();
        exec @cmd or POSIX::_exit(127);
    }

    my $line;
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 20;
        $line = <$out>;
        alarm 0;
    };

    die "$kind.js did not start\n"
        unless defined $line && $line =~ /^ready [\d.]+:(\d+)$/;

    my $port = $1;
    my $url = "$scheme://$host:$port";

    $SVC{$name} = { pid => $pid, out => $out, url => $url, port => $port,
                    https => $scheme eq 'https' };
    push @KIDS, $pid;

    (my $var = uc $name) =~ s/[^A-Z0-9]/_/g;
    $ENV{"TEST_NGINX_${var}_URL"} = $url;
    $ENV{"TEST_NGINX_${var}_PORT"} = $port;

    return $url;
}

sub url { return $SVC{$_[0]}{url} }

# the processes started, for a caller that may end without END blocks
sub pids { return @KIDS }

# A DNS server of the test's own (Debian's dnsmasq) answering each NAME
# with its ADDRESS, nothing else: start_dns(NAME => ADDRESS, ...).  Its
# port, also in $ENV{TEST_NGINX_DNS_PORT}.
sub start_dns {
    my (%names) = @_;

    return $ENV{TEST_NGINX_DNS_PORT} if $SVC{dns};

    require IO::Socket::INET;

    my $probe = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                                      LocalPort => 0)
        or die "udp socket: $!";
    my $port = $probe->sockport;
    close $probe;

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        POSIX::setsid();
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec 'dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts',
             '--no-poll', '--bind-interfaces', '--listen-address=127.0.0.1',
             "--port=$port", '--pid-file=', '--log-facility=-',
             # a name of its own: an AAAA query is NODATA, not REFUSED
             map({ ("--host-record=$_,$names{$_}", "--local=/$_/") }
                 sort keys %names)
            or POSIX::_exit(127);
    }

    # up when it answers: a query for the first name
    my ($name) = sort keys %names;
    my $q = pack('n n n n n n', 0x1234, 0x0100, 1, 0, 0, 0)
            . CORE::join('', map { chr(length $_) . $_ } split /\./, $name)
            . "\0" . pack('n n', 1, 1);

    for my $try (1 .. 50) {
        my $s = IO::Socket::INET->new(Proto => 'udp', PeerAddr => '127.0.0.1',
                                      PeerPort => $port)
            or die "udp socket: $!";
        $s->send($q);
        my $r = '';
        my $rin = '';
        vec($rin, fileno $s, 1) = 1;
        if (select($rin, undef, undef, 0.1)) {
            $s->recv($r, 512);
        }
        close $s;
        last if length $r;

        if ($try == 50) {
            kill 'TERM', $pid;
            waitpid $pid, 0;
            die "dnsmasq did not start\n";
        }

        # a refused query comes back at once
        select undef, undef, undef, 0.1;
    }

    $SVC{dns} = { pid => $pid, port => $port };
    push @KIDS, $pid;
    $ENV{TEST_NGINX_DNS_PORT} = $port;

    return $port;
}

sub _curl {
    my ($name, @args) = @_;

    my $s = $SVC{$name} or die "no service $name\n";
    my @ca = $s->{https} ? ('--cacert', "$ENV{TEST_NGINX_TLS_DIR}/ca.crt") : ();

    open my $fh, '-|', 'curl', '-sS', '--max-time', '10', @ca, @args
        or die "curl: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    die "curl @args failed\n" if $?;

    return $out;
}

# control(NAME, key => value, ...): the state changed, the new state back
sub control {
    my ($name, %change) = @_;

    $change{reset} = JSON::PP::true if $change{reset};

    for my $k (keys %change) {
        $change{$k} = JSON::PP::true if $k =~ /^(v1|v2|fail_all)$/
                                        && $change{$k} && !ref $change{$k};
        $change{$k} = JSON::PP::false if $k =~ /^(v1|v2|fail_all)$/
                                         && !$change{$k} && !ref $change{$k};
    }

    my $out = _curl($name, '-X', 'POST', '-H', 'Content-Type: application/json',
                    '--data-binary', $JSON->encode(\%change),
                    "$SVC{$name}{url}/_control");

    return $JSON->decode($out);
}

# the requests the service got: hashes of method, url, headers, body, ...
sub requests {
    my ($name) = @_;

    return @{ $JSON->decode(_curl($name, "$SVC{$name}{url}/_control/requests")) };
}

# the access key ids the service handed out since its last reset, oldest
# first
sub handed_out {
    my ($name) = @_;

    return @{ $JSON->decode(_curl($name, "$SVC{$name}{url}/_control/minted")) };
}

# For "--- s3_requests eval": a GET of the blocks' object for each index
# of @idx, signed with the key pair the service $from handed out that
# index-th (0 is the first) since its reset, or ($from a sub) with the
# index-th access key id $from->() gives.  Read when the block is over.
sub s3_gets {
    my ($from, @idx) = @_;

    return sub {
        my @ids = ref $from eq 'CODE' ? $from->() : handed_out($from);

        return map {
            "GET /replays/games/1/replay.bin signed key="
            . ($ids[$_] // "(none handed out as #$_)")
        } @idx;
    };
}

# a key pair straight from the S3 server: AccessKeyId, SecretAccessKey,
# SessionToken, Expiration
sub mint {
    my ($ttl) = @_;

    open my $fh, '-|', 'curl', '-sS', '--max-time', '10', '-X', 'POST',
        "$ENV{TEST_NGINX_S3_ENDPOINT}/_replay/credentials?ttl=$ttl"
        or die "curl: $!";
    local $/;
    my $out = <$fh>;
    close $fh;

    return $JSON->decode($out);
}

sub revoke {
    my ($key) = @_;

    system('curl', '-sS', '--max-time', '10', '-X', 'POST',
           "$ENV{TEST_NGINX_S3_ENDPOINT}/_replay/credentials/revoke?key=$key")
        == 0 or die "revoke failed\n";
}

# the S3 requests logged from byte $from of the S3 request log on, in
# order (t/services/s3/server.js --log): method, url, key, status, ...
sub s3_log {
    my ($from) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_S3_LOG} or die "$ENV{TEST_NGINX_S3_LOG}: $!";
    seek $fh, $from // 0, 0;

    my @e;
    while (my $l = <$fh>) {
        my $e = eval { $JSON->decode($l) } or next;
        push @e, $e if $e->{url} !~ m{^/_replay/};
    }

    close $fh;
    return @e;
}

# their access key ids
sub s3_keys { return map { $_->{key} // '' } s3_log(@_) }

sub s3_log_size { return -s $ENV{TEST_NGINX_S3_LOG} || 0 }

# writes a file atomically (a new inode, as secrets agents do)
sub write_file {
    my ($path, $content, $mode) = @_;

    open my $fh, '>', "$path.tmp" or die "$path.tmp: $!";
    print $fh $content;
    close $fh;
    chmod $mode // 0644, "$path.tmp";
    rename "$path.tmp", $path or die "rename $path: $!";
}

# The location the blocks test: a location /s3 that serves
# games/1/replay.bin with "replay_s3_credentials CREDS;", and
# replay_status at /status.
my $LOCATION = <<'CONF';
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  CREDS;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
CONF

# Under valgrind nginx starts, and TLS handshakes, seconds slower: the
# credentials' lifetimes and the waits that follow from them are longer.
our $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 3 : 1;

# For a .t of credentials: "--- before eval" (a sub run before the
# block's nginx starts: --- init runs after it) and "--- creds" (the line
# that goes into the location of location() below, unless the block has a
# "--- config" of its own).  Code between requests goes in ReplayTest's
# "--- after_request eval".
sub init {
    my ($template) = @_;

    $template //= $LOCATION;

    require Test::Nginx::Socket;

    Test::Nginx::Socket::add_block_preprocessor(sub {
        my ($block) = @_;

        my $creds = $block->creds;

        if (defined $creds && !defined $block->config) {
            (my $config = $template) =~ s/\bCREDS\b/$creds/;
            $block->set_value('config', $config);
        }

        my $before = $block->before;
        $before->($block) if ref $before eq 'CODE';
    });
}

# the error log's lines, as they are now
sub error_log {
    open my $fh, '<', $Test::Nginx::Util::ErrLogFile or return ();
    my @l = <$fh>;
    close $fh;
    return @l;
}

# a Test::More check that a line of the error log matches $re
sub log_like {
    my ($re, $name) = @_;

    my @all = error_log();
    my @l = grep { $_ =~ $re } @all;

    return if Test::More::ok(scalar @l, $name);

    my @replay = grep { /replay: / && !/\[debug\]/ } @all;
    Test::More::diag("no line like $re; the module's lines:\n",
                     @replay[($#replay > 5 ? $#replay - 5 : 0) .. $#replay]);
}

# how many lines of the error log match $re
sub log_count {
    my ($re) = @_;
    return scalar grep { $_ =~ $re } error_log();
}

# Every file of the logs directory searched for the secrets the services
# hand out (and @more, the tokens of a test's own), at whatever level
# they were logged.
sub no_secrets_in_logs {
    my ($name, @more) = @_;

    my $dir = $Test::Nginx::Util::LogDir;
    my @found;

    opendir my $d, $dir or die "$dir: $!";

    for my $f (sort grep { -f "$dir/$_" } readdir $d) {
        open my $fh, '<', "$dir/$f" or next;

        # an entry: a dated line and the lines that follow it undated
        my ($entry, @entries) = ('');

        while (my $l = <$fh>) {
            if ($l =~ m{^\d{4}/\d\d/\d\d } && $entry ne '') {
                push @entries, $entry;
                $entry = '';
            }

            $entry .= $l;
        }

        push @entries, $entry if $entry ne '';
        close $fh;

        for my $e (@entries) {
            for my $m (@SECRET_MARKERS, @more) {
                push @found, "$f: $m in: " . substr($e, 0, 200)
                    if index($e, $m) >= 0;
            }
        }
    }

    closedir $d;

    Test::More::ok(!@found, "$name: no secret or token in any log")
        or Test::More::diag(join "\n", @found[0 .. ($#found > 4 ? 4 : $#found)]);
}

my $S3_FROM = 0;

# after a block's first request: the first credentials have come (from
# replay_status at /status), the S3 request log is marked
sub ready {
    Test::More::ok(wait_valid('/status', 15 * $SLOW),
                   'the first credentials came');
    $S3_FROM = s3_log_size();
}

# the access key ids that signed S3's requests since ready()
sub keys_since { return s3_keys($S3_FROM) }

sub pause { select undef, undef, undef, $_[0] }

# sleeps until Unix time $t (a fraction allowed)
sub pause_until {
    my ($t) = @_;

    require Time::HiRes;

    my $left = $t - Time::HiRes::time();
    select undef, undef, undef, $left if $left > 0;
}

# every credentials set's state in replay_status (JSON), in order:
# source, expires, last_refresh, refreshes, failures, ...
sub sets {
    my ($status, $body) = get('/status?format=json');
    my $st = eval { $JSON->decode($body) } || {};
    return @{ $st->{replay_credentials} || [] };
}

# the first set's
sub state { return (sets())[0] || {} }

# When the credentials held were minted, for a block that acts at a time
# after that: their expiry less the lifetime asked ($ttl).  (nginx's own
# figure, last_refresh, is its cached clock, which under valgrind lags
# behind by a TLS handshake.)
sub minted {
    my ($ttl) = @_;

    my $st = state();

    return $st->{expires} ? $st->{expires} - $ttl : time;
}

# The lifetimes the helpers below expect the service to give (its "ttl").
sub ttl_fails    { 20 * $SLOW }
sub ttl_expiry   { 8 * $SLOW }
sub ttl_rotation { 6 * $SLOW }

# A block whose refresh fails: credentials of ttl_fails(), due at half of
# it (D), the service failing three times (at D, D + 1, D + 3: backoff),
# new credentials at D + 6.  Its requests: /status, then the S3 location
# at once, between the failures, after the recovery, and then what it
# likes.  The after_request array: the keys are checked at request $last,
# with the log against $log_re (the first failure's line), then $more->().
sub refresh_fails {
    my ($service, $n, $log_re, $last, $more) = @_;

    my ($t0, $d, @after);

    $d = ttl_fails() / 2;

    $after[0] = sub {
        ready();
        $t0 = minted(ttl_fails());
        control($service, fail => 3);
    };
    $after[1] = sub { pause_until($t0 + $d + 2.5) };
    $after[2] = sub { pause_until($t0 + $d + 7 + 3 * $SLOW) };
    $after[$last] = sub {
        my @k = keys_since();
        Test::More::is($k[0], $k[1], "TEST $n: the held credentials "
                       . 'signed while the refresh failed');
        Test::More::isnt($k[1], $k[2],
                         "TEST $n: new credentials once it recovered");
        log_like($log_re, "TEST $n: the failure is logged, with why");
        $more->() if $more;
    };

    return \@after;
}

# A block whose credentials expire with no refresh possible: credentials
# of ttl_expiry(), then the service changed by %$fail so that every
# refresh fails; a second before they expire, they are not signed with.
# Its requests: /status, the S3 location at once, then that second; at
# request $last the log is checked against $log_re (the 503's line).
sub expiry {
    my ($service, $n, $fail, $log_re, $last, $more) = @_;

    my ($t0, @after);

    $after[0] = sub {
        ready();
        $t0 = minted(ttl_expiry());
        control($service, %$fail);
    };
    $after[1] = sub { pause_until($t0 + ttl_expiry() - 1) };
    $after[$last] = sub {
        log_like($log_re, "TEST $n: the 503 is logged, with why");
        $more->() if $more;
    };

    return \@after;
}

# A block whose credentials are refreshed (ttl_rotation(): at half of it)
# and, given a token file ($file, a path) and two tokens, whose token file
# is rotated after the first ones (the service taking only the new one):
# the next request comes once the refresh is done.  Its requests:
# /status, the S3 location at once, then later; the keys (and the tokens
# sent, $sent->() gives them, in order) are checked at request 2, then
# $more->().
sub refreshed {
    my ($service, $n, $file, $tokens, $sent, $more) = @_;

    my ($t0, @after);

    $after[0] = sub {
        ready();
        $t0 = minted(ttl_rotation());

        if ($file) {
            write_file($file, "$tokens->[1]\n");
            control($service, token => $tokens->[1]);
        }
    };
    $after[1] = sub { pause_until($t0 + ttl_rotation() / 2 + 1.5 * $SLOW) };
    $after[2] = sub {
        if ($file) {
            Test::More::is(CORE::join(' ', $sent->()), "@$tokens",
                           "TEST $n: the token file read again at the "
                           . 'refresh');
        }
        my @k = keys_since();
        Test::More::isnt($k[0], $k[1],
                         "TEST $n: the second request signed with new "
                         . 'credentials');
        $more->() if $more;
    };

    return \@after;
}

# GETs a path of the nginx under test: status and body
sub get {
    my ($path) = @_;

    my $port = $Test::Nginx::Util::ServerPortForClient
               || $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT};

    open my $fh, '-|', 'curl', '-sS', '--max-time', '10', '-o', '-',
        '-w', '\n%{http_code}', "http://127.0.0.1:$port$path"
        or die "curl: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;

    my ($body, $status) = $out =~ /\A(.*)\n(\d+)\z/s;
    return ($status // 0, $body // '');
}

# waits (up to $timeout seconds) until replay_status at $path shows every
# credentials set valid; true if they are
sub wait_valid {
    my ($path, $timeout) = @_;

    my $until = time + ($timeout // 15);

    while (time < $until) {
        my ($status, $body) = get($path . '?format=json');

        if ($status == 200) {
            my $st = eval { $JSON->decode($body) };
            my $sets = $st && $st->{replay_credentials};
            return 1 if $sets && @$sets && !grep { !$_->{valid} } @$sets;
        }

        select undef, undef, undef, 0.1;
    }

    return 0;
}

sub stop_all {
    return unless $$ == $PARENT;

    for my $pid (@KIDS) {
        kill 'TERM', $pid;
    }

    for my $pid (@KIDS) {
        waitpid $pid, 0;
    }

    @KIDS = ();
    %SVC = ();
}

# waitpid sets $?, which END blocks leave as the exit status: a script's
# failure would exit 0 once its helpers had exited cleanly
END {
    local $?;
    stop_all();
}

1;
