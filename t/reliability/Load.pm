package Load;

# A small event-driven HTTP/1.1 client for the reliability scenarios:
# many connections at once from one process (IO::Select), every response
# parsed and framed (Content-Length, chunked, or closed), bodies hashed as
# they arrive, and a client-side deadline on every request so that a hang
# is a result ("timeout"), never a stuck test.
#
#   Load::run(
#       concurrency => 100,
#       next        => sub { return { path => '/game/1', ... } or undef },
#       done        => sub { my ($spec, $res) = @_; ... },
#       keepalive   => 1,
#   );
#
# A spec: path, or raw (the whole request); headers (extra lines, each
# "Name: value"); method (GET); timeout (s, default 20); keep (bytes of
# body to keep in $res->{body}, default 64 KiB); abort (close after this
# many body bytes: -1 right after sending the request, 0 after the
# header); rst (close with an RST: SO_LINGER 0).
#
# A result: status (0 if none), headers (lower-cased name => value),
# body (the first "keep" bytes), len (body bytes), md5 (hex, of all of
# them), complete (the body ended as its framing says), error ('' or
# "connect", "reset", "timeout", "eof-in-header", "bad-response",
# "aborted"), time (s), reused (sent on a kept-alive connection).

use strict;
use warnings;

use Digest::MD5 ();
use Errno qw(EAGAIN EINPROGRESS EINTR EWOULDBLOCK ECONNRESET EPIPE);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use IO::Select ();
use Socket qw(AF_INET SOCK_STREAM SOL_SOCKET SO_LINGER SO_ERROR
              IPPROTO_TCP TCP_NODELAY inet_aton pack_sockaddr_in);
use Time::HiRes qw(time);

our $Host = '127.0.0.1';
our $Port;

sub _connect {
    socket(my $s, AF_INET, SOCK_STREAM, 0) or return undef;
    my $fl = fcntl($s, F_GETFL, 0);
    fcntl($s, F_SETFL, $fl | O_NONBLOCK);
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);

    if (!connect($s, pack_sockaddr_in($Port, inet_aton($Host)))) {
        return undef unless $! == EINPROGRESS || $! == EAGAIN;
    }

    return $s;
}

sub _request_text {
    my ($spec, $keepalive) = @_;

    return $spec->{raw} if defined $spec->{raw};

    my $m = $spec->{method} // 'GET';
    my $r = "$m $spec->{path} HTTP/1.1\r\nHost: localhost\r\n";
    $r .= "$_\r\n" for @{ $spec->{headers} || [] };
    $r .= "Connection: close\r\n" unless $keepalive;
    return "$r\r\n";
}

sub _new_result {
    return {
        status => 0, headers => {}, body => '', len => 0,
        md5 => Digest::MD5->new, complete => 0, error => '',
    };
}

# feeds body bytes to the result
sub _body {
    my ($c, $data) = @_;

    my $res = $c->{res};
    my $keep = $c->{spec}{keep} // 65536;

    $res->{md5}->add($data);
    $res->{len} += length $data;

    if (length($res->{body}) < $keep) {
        $res->{body} .= substr($data, 0, $keep - length $res->{body});
    }
}

# parses what is in $c->{rbuf}; returns 1 when the response is complete
sub _parse {
    my ($c) = @_;

    my $res = $c->{res};

    if ($c->{state} eq 'head') {
        my $i = index $c->{rbuf}, "\r\n\r\n";
        return 0 if $i < 0;

        my $head = substr $c->{rbuf}, 0, $i;
        substr($c->{rbuf}, 0, $i + 4) = '';

        my ($line, @lines) = split /\r\n/, $head;

        if (!defined $line || $line !~ m{^HTTP/1\.[01] (\d{3})}) {
            $res->{error} = 'bad-response';
            return 1;
        }

        $res->{status} = $1;
        $res->{status_line} = $line;

        for (@lines) {
            my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
            $k = lc $k;
            $res->{headers}{$k} = exists $res->{headers}{$k}
                                  ? "$res->{headers}{$k}, $v" : $v;
        }

        my $h = $res->{headers};

        if (($c->{spec}{method} // 'GET') eq 'HEAD'
            || $res->{status} == 204 || $res->{status} == 304)
        {
            $c->{state} = 'done';
            $res->{complete} = 1;
            return 1;
        }

        if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
            $c->{state} = 'chunk-size';

        } elsif (defined $h->{'content-length'}) {
            $c->{state} = 'length';
            $c->{left} = $h->{'content-length'};

        } else {
            $c->{state} = 'close';
        }

        $c->{close} = 1 if ($h->{connection} // '') =~ /close/i
                           || $c->{state} eq 'close';
        $c->{body_started} = 1;
    }

    for (;;) {
        my $st = $c->{state};

        if ($st eq 'length') {
            my $n = length $c->{rbuf};
            $n = $c->{left} if $n > $c->{left};
            _body($c, substr($c->{rbuf}, 0, $n, '')) if $n;
            $c->{left} -= $n;

            if ($c->{left} == 0) {
                $c->{state} = 'done';
                $res->{complete} = 1;
                return 1;
            }

            return 0;
        }

        if ($st eq 'close') {
            _body($c, $c->{rbuf}) if length $c->{rbuf};
            $c->{rbuf} = '';
            return 0;
        }

        if ($st eq 'chunk-size') {
            my $i = index $c->{rbuf}, "\r\n";
            return 0 if $i < 0;

            my $line = substr $c->{rbuf}, 0, $i + 2, '';

            if ($line !~ /^([0-9a-fA-F]+)/) {
                $res->{error} = 'bad-response';
                return 1;
            }

            $c->{left} = hex $1;
            $c->{state} = $c->{left} ? 'chunk-data' : 'trailer';
            next;
        }

        if ($st eq 'chunk-data') {
            my $n = length $c->{rbuf};
            $n = $c->{left} if $n > $c->{left};
            _body($c, substr($c->{rbuf}, 0, $n, '')) if $n;
            $c->{left} -= $n;
            return 0 if $c->{left};
            $c->{state} = 'chunk-crlf';
            next;
        }

        if ($st eq 'chunk-crlf') {
            return 0 if length $c->{rbuf} < 2;

            if (substr($c->{rbuf}, 0, 2, '') ne "\r\n") {
                $res->{error} = 'bad-response';
                return 1;
            }

            $c->{state} = 'chunk-size';
            next;
        }

        if ($st eq 'trailer') {
            my $i = index $c->{rbuf}, "\r\n";
            return 0 if $i < 0;

            my $line = substr $c->{rbuf}, 0, $i + 2, '';
            next if length $line > 2;

            $c->{state} = 'done';
            $res->{complete} = 1;
            return 1;
        }

        return 1;
    }
}

sub _close {
    my ($c, $rst) = @_;

    if ($rst) {
        setsockopt($c->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
    }

    close $c->{sock};
}

sub run {
    my %o = @_;

    my $conc = $o{concurrency} // 10;
    my $next = $o{next};
    my $done = $o{done} || sub {};
    my $keepalive = $o{keepalive} // 0;
    my $tick = $o{tick};            # called about every 50 ms

    my $rsel = IO::Select->new;
    my $wsel = IO::Select->new;
    my %conns;                      # fileno => conn
    my @idle;                       # kept-alive connections
    my $exhausted = 0;
    my ($n, $last_tick) = (0, time);

    my $start = sub {
        my ($c) = @_;

        my $spec = $c->{spec};
        $c->{wbuf} = _request_text($spec, $keepalive && !$spec->{abort});
        $c->{rbuf} = '';
        $c->{state} = 'head';
        $c->{close} = 0;
        $c->{body_started} = 0;
        $c->{res} = _new_result();
        $c->{t0} = time;
        $c->{deadline} = $c->{t0} + ($spec->{timeout} // 20);
        $wsel->add($c->{sock});
    };

    my $finish = sub {
        my ($c, $error) = @_;

        my $res = $c->{res};
        $res->{error} ||= $error // '';
        $res->{time} = time - $c->{t0};
        $res->{reused} = $c->{reused} ? 1 : 0;
        $res->{md5} = $res->{md5}->hexdigest;

        $rsel->remove($c->{sock});
        $wsel->remove($c->{sock});

        my $spec = $c->{spec};
        delete $c->{spec};

        if (!$res->{error} && $res->{complete} && !$c->{close}
            && $keepalive && !$spec->{abort})
        {
            $c->{reused} = 1;
            push @idle, $c;

        } else {
            delete $conns{ fileno $c->{sock} };
            _close($c, $spec->{rst} && $res->{error} eq 'aborted');
        }

        $n++;
        $done->($spec, $res);
    };

    for (;;) {
        # fill up to the concurrency
        while (!$exhausted && keys(%conns) - @idle < $conc) {
            my $spec = $next->();

            if (!defined $spec) {
                $exhausted = 1;
                last;
            }

            my $c = shift @idle;

            if (!$c) {
                my $s = _connect();

                if (!$s) {
                    $done->($spec, { %{ _new_result() }, md5 => '',
                                     error => 'connect', time => 0 });
                    next;
                }

                $c = { sock => $s };
                $conns{ fileno $s } = $c;
            }

            $c->{spec} = $spec;
            $start->($c);
        }

        my @busy = grep { $_->{spec} } values %conns;
        last if $exhausted && !@busy;

        if (!@busy) {
            select undef, undef, undef, 0.01;
            next;
        }

        my ($r, $w) = IO::Select->select($rsel, $wsel, undef, 0.05);

        for my $s (@{ $w || [] }) {
            my $c = $conns{ fileno $s } or next;
            next unless $c->{spec};

            my $err = getsockopt($s, SOL_SOCKET, SO_ERROR);
            $err = $err ? unpack('i', $err) : 0;

            if ($err) {
                $finish->($c, $c->{reused} ? 'reset' : 'connect');
                next;
            }

            my $k = syswrite $s, $c->{wbuf};

            if (!defined $k) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $finish->($c, $c->{reused} ? 'reset' : 'connect');
                next;
            }

            substr($c->{wbuf}, 0, $k) = '';
            next if length $c->{wbuf};

            $wsel->remove($s);

            if (($c->{spec}{abort} // -2) == -1) {
                $finish->($c, 'aborted');
                next;
            }

            $rsel->add($s);
        }

        for my $s (@{ $r || [] }) {
            my $c = $conns{ fileno $s } or next;
            next unless $c->{spec};

            my $k = sysread $s, my $buf, 65536;

            if (!defined $k) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $finish->($c, ($! == ECONNRESET) ? 'reset' : "read: $!");
                next;
            }

            if ($k == 0) {
                if ($c->{state} eq 'close') {
                    $c->{res}{complete} = 1;
                    $finish->($c);

                } elsif ($c->{state} eq 'head') {
                    $finish->($c, length $c->{rbuf} ? 'eof-in-header'
                                                    : 'eof');
                } else {
                    # the body ended before its framing says: truncated
                    $finish->($c);
                }

                next;
            }

            $c->{rbuf} .= $buf;

            if (_parse($c)) {
                $finish->($c);
                next;
            }

            my $abort = $c->{spec}{abort};

            if (defined $abort && $abort >= 0 && $c->{body_started}
                && $c->{res}{len} >= $abort)
            {
                $finish->($c, 'aborted');
            }
        }

        my $now = time;

        for my $c (values %conns) {
            $finish->($c, 'timeout') if $c->{spec} && $now > $c->{deadline};
        }

        if ($tick && $now - $last_tick >= 0.05) {
            $last_tick = $now;
            $tick->();
        }
    }

    for my $c (@idle) {
        close $c->{sock};
    }

    return $n;
}

1;
