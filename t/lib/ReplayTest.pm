package ReplayTest;

# What every .t of this suite shares, under the real Test::Nginx and our
# bundled runner alike: each block also asserts that the error log holds
# no [alert], [crit] or [emerg] line (a wrong r->main->count shows up only
# as "http request count is zero" alerts while responses look fine).

use strict;
use warnings;

use Test::Nginx::Socket ();

sub import {
    # "--- after_request eval" [CODE or undef, ...]: code run after the
    # request of the same index (stop a service, a pause), given the block
    # and the response body
    Test::Nginx::Socket::add_response_body_check(sub {
        my ($block, $body, $idx, $repeated, $dry_run) = @_;

        return if $dry_run;

        my $after = $block->after_request or return;
        my $code = $after->[$idx] or return;

        $code->($block, $body);
    });

    Test::Nginx::Socket::add_block_preprocessor(sub {
        my $block = shift;

        my $nel = $block->no_error_log;
        my @list;

        if (ref $nel eq 'ARRAY') {
            @list = @$nel;

        } elsif (defined $nel) {
            @list = grep { length } split /\n/, $nel;
        }

        push @list, '[alert]', '[crit]';
        push @list, '[emerg]' unless defined $block->must_die;

        $block->set_value('no_error_log', \@list);
    });
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

# GET a URL with curl, as a client following a redirect would; --path-as-is
# keeps "..", "//" as they are.  Returns the status and the body.
sub curl_get {
    my ($url) = @_;

    require File::Temp;
    my ($fh, $file) = File::Temp::tempfile(UNLINK => 1);
    close $fh;

    my $code = `curl -sS --path-as-is --max-time 30 -o '$file' -w '%{http_code}' '$url'`;

    open my $in, '<:raw', $file or die "$file: $!\n";
    local $/;
    my $body = <$in>;

    return ($code, defined $body ? $body : '');
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

# The suite's S3 server: "start", "stop", "restart".
sub s3ctl {
    my ($cmd) = @_;

    system($ENV{TEST_NGINX_S3_CTL}, $cmd) == 0
        or die "s3ctl $cmd failed\n";
}

# How many lines of the PostgreSQL server log (log_statement = all) hold
# a string.
sub pg_log_count {
    my ($s) = @_;

    open my $fh, '<', $ENV{TEST_NGINX_PG_LOG}
        or die "$ENV{TEST_NGINX_PG_LOG}: $!";

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

1;
