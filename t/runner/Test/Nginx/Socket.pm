package Test::Nginx::Socket;

use strict;
use warnings;

our $VERSION = '0.001_runner';

=head1 NAME

Test::Nginx::Socket - minimal stand-in for openresty's test-nginx scaffold

=head1 SYNOPSIS

    use Test::Nginx::Socket 'no_plan';
    no_shuffle();
    run_tests();

    __DATA__

    === TEST 1: hello
    --- config
        location = /t { return 200 "hello\n"; }
    --- request
    GET /t
    --- response_body
    hello

    # run from the top of the repository:
    #   PERL5LIB=t/runner prove t/

=head1 DESCRIPTION

This is an independent, much smaller implementation of the subset of
L<Test::Nginx::Socket> (openresty/test-nginx) that this project's tests
use.  It is only put on C<PERL5LIB> when the real module is not installed;
test files must behave the same under both, so the semantics, defaults and
subtest names follow the real module.  It needs only Perl core modules plus
HTTP::Message (libhttp-message-perl) and Text::Diff (libtext-diff-perl).

Block format (Test::Base): C<=== TEST n: name>, C<--- section [filters]>
and C<--- section [filters]: value>, with the default filters C<norm> and
C<trim>; filters C<eval>, C<chomp>, C<chop>, C<lines>, C<join>, C<array>,
C<escape>, C<regexp>, C<base64_decode>, ... and C<ONLY>, C<SKIP>, C<LAST>.

Sections: C<main_config>, C<post_main_config>, C<http_config>, C<config>,
C<server_name>, C<log_level>, C<error_log_file>, C<user_files>, C<init>,
C<request> (string, or with C<eval> an array of requests, each a string or
an array of packets / C<{value =E<gt> ..., delay_before =E<gt> secs}>),
C<request_eval>, C<raw_request>, C<raw_request_middle_delay>,
C<pipelined_requests>, C<more_headers>, C<shutdown>, C<timeout>, C<abort>,
C<ignore_response>, C<http09>, C<error_code>, C<error_code_like>,
C<response_headers>, C<response_headers_like>,
C<raw_response_headers_like>, C<raw_response_headers_unlike>,
C<response_body>, C<response_body_eval>, C<response_body_like>,
C<response_body_unlike>, C<response_body_filters>, C<charset>,
C<error_log>, C<no_error_log>, C<grep_error_log>, C<grep_error_log_out>,
C<access_log>, C<no_access_log>, C<shutdown_error_log>,
C<no_shutdown_error_log>, C<wait>, C<must_die>, C<suppress_stderr>,
C<tcp_listen>,
C<tcp_reply>, C<tcp_reply_delay>, C<tcp_no_close>, C<tcp_query>,
C<tcp_query_len>, C<tcp_shutdown>, C<tcp_shutdown_delay>, C<skip_eval>,
C<skip_nginx>, C<skip_nginx2>, C<todo>, C<server_addr_for_client>.

Environment: TEST_NGINX_BINARY, TEST_NGINX_PORT / _SERVER_PORT /
_CLIENT_PORT, TEST_NGINX_SERVROOT, TEST_NGINX_LOAD_MODULES,
TEST_NGINX_USE_VALGRIND, TEST_NGINX_LOG_LEVEL, TEST_NGINX_MASTER_PROCESS,
TEST_NGINX_TIMEOUT, TEST_NGINX_SLEEP, TEST_NGINX_NO_SHUFFLE,
TEST_NGINX_NO_CLEAN, TEST_NGINX_NO_NGINX_MANAGER,
TEST_NGINX_FORCE_RESTART_ON_TEST, TEST_NGINX_ERROR_LOG,
TEST_NGINX_EVENT_TYPE, TEST_NGINX_POSTPONE_OUTPUT, TEST_NGINX_REUSE_PORT,
TEST_NGINX_WORKER_USER, TEST_NGINX_IGNORE_MISSING_DIRECTIVES,
TEST_NGINX_VERBOSE, and C<$TEST_NGINX_XXX> expansion (including
C<$TEST_NGINX_RAND_PORT_N>) in the configuration sections, user files,
C<error_log_file>, C<tcp_listen>, C<pipelined_requests>,
C<grep_error_log_out> and string C<response_body> values.

Not supported: HTTP/2 and HTTP/3, the HUP reload mode, systemtap, the
leak-check and benchmark modes, C<udp_listen>, C<curl>, C<stap*>.

Known differences from the real module: see t/runner/README.

=cut

use Digest::MD5 ();
use Digest::SHA ();
use Encode ();
use Errno ();
use HTTP::Response ();
use IO::Socket::INET ();
use List::Util qw(min);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use Test::More ();

use Test::Nginx::Runner::Spec ();
use Test::Nginx::Util;

our $TotalConnectingTimeouts = 0;
our @ResponseBodyChecks;

$Test::Nginx::Util::RunTestHelper = \&run_test_helper;
$Test::Nginx::Util::CheckErrorLog = \&check_error_log;
$Test::Nginx::Util::CheckShutdownErrorLog = \&check_shutdown_error_log;

sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

# ---------------------------------------------------------------------------
# import / exports

# What Test::Nginx::Socket exports ...
our @EXPORT = qw(
    env_to_nginx is_str plan run_tests run_test repeat_each config_preamble
    worker_connections master_process_enabled no_long_string workers
    master_on master_off log_level no_shuffle no_root_location use_hup
    server_name server_addr server_root html_dir server_port
    server_port_for_client timeout no_nginx_manager check_accum_error_log
    add_block_preprocessor bail_out add_test_cleanup_handler
    add_cleanup_handler add_response_body_check
);

# ... plus what it inherits from Test::Base (the subset that makes sense
# here).
our @BASE_EXPORT = qw(
    ok isnt like unlike is_deeply cmp_ok skip todo_skip pass fail
    eq_array eq_hash eq_set can_ok isa_ok diag
    is no_diff blocks next_block first_block
    croak carp cluck confess
);

my %FROM = (
    (map { $_ => 'Test::More' }
     qw(ok isnt like unlike is_deeply cmp_ok skip todo_skip pass fail
        eq_array eq_hash eq_set can_ok isa_ok diag plan)),
    (map { $_ => 'Carp' } qw(croak carp cluck confess)),
    is      => 'Test::Nginx::Util::base_is',
    run_test => 'Test::Nginx::Util::run_test',
);

sub _export_to {
    my ($target, $class) = @_;
    no strict 'refs';

    for my $sym (@EXPORT, @BASE_EXPORT) {
        my $src = $FROM{$sym} || '';
        my $code;
        if ($src =~ /::/ && $src ne 'Test::More') {
            $code = \&{$src};
        } elsif ($src) {
            require Carp if $src eq 'Carp';
            $code = \&{"${src}::$sym"};
        } else {
            $code = \&{"Test::Nginx::Socket::$sym"};
            $code = \&{"Test::Nginx::Util::$sym"}
                unless defined &{"Test::Nginx::Socket::$sym"};
        }
        *{"${target}::$sym"} = $code;
    }
    *{"${target}::TODO"} = \$Test::More::TODO;

    # a subclass made with "use Test::Nginx::Socket -Base" exports its own
    # @EXPORT as well
    if ($class ne __PACKAGE__) {
        for my $sym (@{"${class}::EXPORT"}) {
            next if $sym =~ /^\W/;
            *{"${target}::$sym"} = \&{"${class}::$sym"}
                if defined &{"${class}::$sym"};
        }
    }
}

sub import {
    my $class = shift;
    my $caller = caller;
    my @args = @_;

    my $as_base = grep { /^-base$/i } @args;
    @args = grep { !/^-base$/i } @args;

    if ($as_base) {
        no strict 'refs';
        push @{"${caller}::ISA"}, $class unless $caller->isa($class);
    }

    _export_to($caller, $class);

    if (@args) {
        Test::More->builder->plan(@args);
    }

    # Test::Base puts "use strict; use warnings;" in front of the code of
    # the file that uses it; do the same so that files behave alike.
    _strict_warnings();
}

sub _strict_warnings {
    require Filter::Util::Call;
    my $done = 0;
    Filter::Util::Call::filter_add(sub {
        return 0 if $done;
        my ($data, $end) = ('', '');
        my $status;
        while (($status = Filter::Util::Call::filter_read()) > 0) {
            if (/^__(?:END|DATA)__\r?$/) {
                $end = $_;
                last;
            }
            $data .= $_;
            $_ = '';
        }
        return $status if $status < 0;
        $_ = "use strict;use warnings;$data$end";
        $done = 1;
        return 1;
    });
}

# ---------------------------------------------------------------------------
# blocks

sub blocks {
    my $section = shift;
    my @blocks = @{ Test::Nginx::Runner::Spec::block_list() };
    if (defined $section && length $section) {
        @blocks = grep { exists $_->{$section} } @blocks;
    }
    return scalar @blocks unless wantarray;
    $_->run_filters for @blocks;
    return @blocks;
}

{
    my @next;

    sub next_block {
        @next = (@{ Test::Nginx::Runner::Spec::block_list() }, undef)
            unless @next;
        my $block = shift @next;
        $block->run_filters if $block;
        return $block;
    }

    sub first_block {
        @next = ();
        return next_block();
    }
}

# ---------------------------------------------------------------------------
# building the requests

# "more_headers" text -> ("Key: value\r\n"..., is_chunked)
sub parse_more_headers ($) {
    my $in = shift;
    my ($out, $chunked) = ('', undef);
    for my $line (split /\n+/, $in) {
        next if $line =~ /^\s*\#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $val = '' unless defined $val;
        $chunked = 1 if lc($key) eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# Turn "METHOD [URI [VERSION]]\n[body]" split over one or more packets into
# the wire request: a complete request line, Host/Connection/Content-Length
# headers added, the more_headers, the (trimmed) body.  Packet boundaries
# stay where they were in the original text.
sub build_request ($$$$$) {
    my ($name, $hdr, $chunked, $conn, $packets) = @_;

    my $whole = join '', map { defined $_ ? $_ : '' } @$packets;
    my ($first) = $whole =~ /\A([^\n]*\n?)/;
    bail_out("$name - Request line should be non-empty") unless $first;

    $first =~ /^(\s*)(\S+)( *)((\S+)( *))?((\S+)( *))?(\s*)$/
        or bail_out("$name - Request line is not valid. Should be "
                    . "'meth [url [version]]' but got \"$first\".");
    my ($lead, $meth, $sp1, $url, $sp2, $ver, $sp3, $eol)
        = ($1, $2, $3, $5, $6, $8, $9, $10);

    my $content = substr($whole, length $first);
    my $new_content = $content;
    my $len_header = '';
    if (!$chunked && $content ne ''
        && $hdr !~ /(?:^|\n)Content-Length:/)
    {
        $new_content =~ s/^\s+|\s+$//gs;
        $len_header = "Content-Length: " . length($new_content) . "\r\n";
    }

    $hdr =~ s/(?<!\r)\n/\r\n/gs;

    my $headers = '';
    $headers .= "Host: $Test::Nginx::Util::ServerName\r\n"
        unless $hdr =~ /(?:^|\n)Host:/msi;
    $headers .= "Connection: $conn\r\n"
        unless $hdr =~ /(?:^|\n)Connection/msi;
    $headers .= "$hdr$len_header\r\n";

    my $L = sub { defined $_[0] ? length $_[0] : 0 };

    # [length in the original text, replacement text]
    my @segments = (
        [$L->($lead), ''],
        [$L->($meth), "$meth "],
        [$L->($sp1), ''],
        [$L->($url), (defined $url ? $url : '/') . ' '],
        [$L->($sp2), ''],
        [$L->($ver), (defined $ver ? $ver : 'HTTP/1.1') . "\r\n"],
        [$L->($sp3) + $L->($eol), ''],
        [0, $headers],
        [length $content, $new_content],
    );

    # Walk the packets; a replacement lands in the packet where its
    # original text starts, spilling over as far as the original did.
    my @out = ('') x @$packets;
    my $pi = 0;
    my $rem = $L->($packets->[0]);
    for my $seg (@segments) {
        my ($len, $val) = @$seg;
        while ($len > $rem && $pi < $#$packets) {
            $out[$pi] .= substr($val, 0, $rem);
            $val = length $val > $rem ? substr($val, $rem) : '';
            $len -= $rem;
            $pi++;
            $rem = $L->($packets->[$pi]);
        }
        $out[$pi] .= $val;
        $rem -= $len;
    }

    return \@out;
}

# A list of requests; each one a list of packets { value, delay_before }.
sub get_req_from_block ($) {
    my $block = shift;
    my $name = $block->name;
    my @reqs;

    if (defined $block->raw_request) {
        my $raw = $block->raw_request;
        if (ref $raw eq 'ARRAY') {
            push @reqs, [ map { { value => $_ } } @$raw ];
        } else {
            push @reqs, [ { value => $raw } ];
        }
        return \@reqs;
    }

    my $request;
    if (defined $block->request_eval) {
        Test::More::diag("$name - request_eval DEPRECATED. Use request "
                         . "eval instead.");
        $request = eval $block->request_eval;
        warn $@ if $@;
    } else {
        $request = $block->request;
        if (defined $request && !ref $request) {
            # leading comment lines and blank space
            1 while $request =~ s/^\s*\#[^\n]+\s+|^\s+//gs;
        }
    }

    my $more_headers = $block->more_headers || '';
    my $headers_for = sub {
        my $i = shift;
        if (ref $more_headers eq 'ARRAY') {
            my $h = $more_headers->[$i];
            bail_out("--- more_headers lacks data for the ${i}th request")
                unless defined $h;
            return parse_more_headers($h);
        }
        return parse_more_headers($more_headers);
    };

    if (my $pipelined = $block->pipelined_requests) {
        ref $pipelined eq 'ARRAY'
            or bail_out("$name - invalid entries in --- pipelined_requests");
        my $all = '';
        for my $i (0 .. $#$pipelined) {
            my ($hdr, $chunked) = $headers_for->($i);
            my $conn = $i == $#$pipelined ? 'close' : 'keep-alive';
            my $req = expand_env_in_text($pipelined->[$i], $name,
                                         $Test::Nginx::Util::RandPorts);
            $all .= build_request($name, $hdr, $chunked, $conn, [$req])->[0];
        }
        push @reqs, [ { value => $all } ];
        return \@reqs;
    }

    if (!ref $request) {
        my ($hdr, $chunked) = $headers_for->(0);
        push @reqs, [ { value => build_request($name, $hdr, $chunked,
                                               'close', [$request])->[0] } ];

    } elsif (ref $request eq 'ARRAY') {
        for my $i (0 .. $#$request) {
            my $one = $request->[$i];
            my ($hdr, $chunked) = $headers_for->($i);

            if (!ref $one) {
                push @reqs, [ { value => build_request($name, $hdr, $chunked,
                                                       'close', [$one])->[0]
                              } ];

            } elsif (ref $one eq 'ARRAY') {
                my @raw = map {
                    !ref $_ ? $_
                    : ref $_ eq 'HASH' ? $_->{value}
                    : bail_out("$name - Invalid syntax. $_ should be a "
                               . "string or hash with value.")
                } @$one;
                my $built = build_request($name, $hdr, $chunked, 'close',
                                          \@raw);
                my @packets;
                for my $k (0 .. $#$one) {
                    my %p = ref $one->[$k] ? %{ $one->[$k] } : ();
                    $p{value} = $built->[$k];
                    push @packets, \%p;
                }
                push @reqs, \@packets;

            } else {
                bail_out("$name - Invalid syntax. $one should be a string "
                         . "or an array of packets.");
            }
        }

    } else {
        bail_out("$name - invalid ---request : MUST be string or array of "
                 . "requests");
    }

    return \@reqs;
}

# ---------------------------------------------------------------------------
# talking to nginx

sub connect_to_server ($$) {
    my ($block, $timeout) = @_;
    my $name = $block->name;

    my $addr = $block->server_addr_for_client;
    $addr = $Test::Nginx::Util::ServerAddr unless defined $addr;
    my $port = $Test::Nginx::Util::ServerPortForClient;
    my $total = $TotalConnectingTimeouts ? 20 : 50;
    my $step = Test::Nginx::Util::sleep_time();

    for (my $tries = 1; ; $tries++) {
        my $sock = IO::Socket::INET->new(PeerAddr => $addr,
                                         PeerPort => $port,
                                         Proto => 'tcp',
                                         Timeout => $timeout);
        return $sock if $sock;
        my $err = $!;

        my $child = $Test::Nginx::Util::ChildPid;
        if (defined $child && !is_running($child)) {
            warn "WARNING: Child process $child is already gone.\n";
            warn `tail -n20 $Test::Nginx::Util::ErrLogFile`;
            Test::More->builder->no_ending(1);
            Test::More::fail("$name - Can't connect to $addr:$port: $err "
                             . "(aborted)\n");
            return;
        }

        if ($tries > $total) {
            my $msg = "$name - Can't connect to $addr:$port: $err (aborted)\n";
            if (++$TotalConnectingTimeouts < 3) {
                Test::More->builder->no_ending(1);
                Test::More::fail($msg);
                return;
            }
            bail_out($msg);
        }

        my $wait = ($step + $step * $tries) * $tries / 2;
        $wait = 1 if $wait >= 1;
        if ($wait >= 0.6) {
            warn "$name - Can't connect to $addr:$port: $err\n";
            warn "\tRetry connecting after $wait sec\n" if $tries < $total;
        }
        sleep $wait;
    }
}

# Send one request (a list of packets) and read the response until the
# server closes the connection.  $timeout bounds the wait for each I/O
# event, not the whole exchange.  Returns (raw response, is HEAD request).
sub send_request ($$$$) {
    my ($req, $middle_delay, $timeout, $block) = @_;
    my $name = $block->name;

    my @bits = @$req;
    my $head_req = (join '', map { defined $_->{value} ? $_->{value} : '' }
                    @bits) =~ /^\s*HEAD\s+/ ? 1 : 0;

    my $sock = connect_to_server($block, $timeout) or return (undef, $head_req);
    $sock->blocking(0);
    my $fd = fileno $sock;

    local $SIG{PIPE} = 'IGNORE';

    my $resp = '';
    my $wbuf = (shift @bits)->{value};
    $wbuf = '' unless defined $wbuf;
    my $woff = 0;
    my ($reading, $writing) = (1, 1);

    while ($reading || $writing) {
        my ($rin, $win) = ('', '');
        vec($rin, $fd, 1) = 1 if $reading;
        vec($win, $fd, 1) = 1 if $writing;

        my $n = select(my $rout = $rin, my $wout = $win, undef, $timeout);
        if ($n < 0) {
            next if $!{EINTR};
            warn "exception occurs on the socket: $!\n";
            last;
        }

        if ($n == 0) {
            close $sock;
            if (!defined $block->abort) {
                Test::More->builder->no_ending(1);
                Test::More::fail("ERROR: client socket timed out - $name\n");
            } else {
                sleep 0.005;
            }
            return ($resp, $head_req);
        }

        if ($reading && vec($rout, $fd, 1)) {
            while (1) {
                my $got = sysread($sock, $resp, 1 << 20, length $resp);
                if (!defined $got) {
                    last if $!{EAGAIN} || $!{EWOULDBLOCK};
                    next if $!{EINTR};
                    warn "WARNING: $name - HTTP response read failure: $!";
                    ($reading, $writing) = (0, 0);
                    last;
                }
                if ($got == 0) {      # the server closed the connection
                    ($reading, $writing) = (0, 0);
                    last;
                }
            }
        }

        if ($writing && vec($wout, $fd, 1)) {
            while (1) {
                my $rest = length($wbuf) - $woff;
                if ($rest > 0) {
                    my $wrote = syswrite($sock, $wbuf, $rest, $woff);
                    if (!defined $wrote) {
                        last if $!{EAGAIN} || $!{EWOULDBLOCK};
                        next if $!{EINTR};
                        my $err = "write failed: $!";
                        warn "$err\n";
                        $resp = $err if $resp eq '';
                        ($reading, $writing) = (0, 0);
                        last;
                    }
                    $woff += $wrote;
                    next;
                }

                my $next = shift @bits;
                if (!$next) {
                    $writing = 0;
                    my $shutdown = $block->shutdown;
                    if (defined $shutdown) {
                        $shutdown = 1 if $shutdown eq '';
                        shutdown($sock, $shutdown);
                    }
                    last;
                }

                $wbuf = defined $next->{value} ? $next->{value} : '';
                $woff = 0;
                my $wait = defined $next->{delay_before}
                           ? $next->{delay_before} : $middle_delay;
                sleep $wait if $wait;
            }
        }
    }

    close $sock;
    return ($resp, $head_req);
}

# Show at most a screenful of a raw response in a failure message.
sub _short ($) {
    my $s = shift;
    return $s if length $s <= 1024;
    return substr($s, 0, 1024) . '... (' . length($s) . ' bytes in all)';
}

# Raw response -> (HTTP::Response, raw header text, bytes left after it).
# Chunked bodies are decoded; a body shorter than its Content-Length is a
# warning, as with the real module, and the checks see what arrived.
#
# $raw may be a reference to the response text, which is then consumed in
# place: with bodies of tens of MiB every copy counts.
sub parse_response ($$$) {
    my ($name, $raw, $head_req) = @_;
    my $buf = ref $raw ? $raw : \(my $copy = $raw);

    my ($head, $raw_headers) = ('', '');
    my $end = index($$buf, "\r\n\r\n");
    if ($end >= 0) {
        $raw_headers = substr($$buf, 0, $end + 2);
        $head = substr($$buf, 0, $end);
        substr($$buf, 0, $end + 4, '');
    } elsif (($end = index($$buf, "\n\n")) >= 0) {
        $head = substr($$buf, 0, $end);
        substr($$buf, 0, $end + 2, '');
    } else {
        $head = $$buf;
        $$buf = '';
    }

    my $res = HTTP::Response->parse($head);

    my $code = $res->code;
    if (defined $code && $code ne '' && $code !~ /^\d+$/) {
        undef $code;
        $res->code(undef);
    }
    if ($code && ($code == 304 || $code == 101)) {
        $res->content($$buf);
        return ($res, $raw_headers);
    }

    my $enc = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');
    my $left;

    if (defined $enc && $enc eq 'chunked') {
        my $fail = sub {
            Test::More->builder->no_ending(1);
            Test::More::fail("$name - $_[0]");
            return;
        };

        # Decode in place: chunk data is moved down to $w.
        my ($p, $w) = (0, 0);
        while (1) {
            my $eol = index($$buf, "\r\n", $p);
            if ($eol < 0) {
                return $fail->("invalid chunked body received: "
                               . _short(substr($$buf, $p)))
                    if $p < length $$buf;
                return $fail->("no last chunk found - "
                               . _short(substr($$buf, 0, $w)));
            }

            my $line = substr($$buf, $p, $eol - $p);

            if ($line =~ /^0[ \t]*$/
                && substr($$buf, $eol + 2, 2) eq "\r\n")
            {
                $left = substr($$buf, $eol + 4) if $eol + 4 < length $$buf;
                substr($$buf, $w, length($$buf) - $w, '');
                last;
            }

            if ($line !~ /^[ \t]*([A-Fa-f0-9]+)[ \t]*$/) {
                return $fail->("invalid chunked body received: "
                               . _short(substr($$buf, $p)));
            }

            my $size = hex $1;
            $p = $eol + 2;
            if (length($$buf) - $p < $size) {
                return $fail->("invalid chunked data received (not enought "
                               . "octets for the data section)");
            }
            if ($w != $p) {
                substr($$buf, $w, $size, substr($$buf, $p, $size));
            }
            $w += $size;
            $p += $size;

            if (substr($$buf, $p, 2) ne "\r\n") {
                return $fail->("invalid chunked data received (expected "
                               . "CRLF).");
            }
            $p += 2;
        }
        $res->content($$buf);

    } elsif (defined $len && $len ne '' && $len =~ /^\d+$/) {
        my $got = length $$buf;
        if ($got < $len) {
            warn "WARNING: $name - response body truncated: $len expected, "
                 . "but got $got\n" unless $head_req;
        } elsif ($got > $len) {
            $left = substr($$buf, $len);
            substr($$buf, $len, $got - $len, '');
        }
        $res->content($$buf);

    } else {
        $res->content($$buf);
    }

    return ($res, $raw_headers, $left);
}

# ---------------------------------------------------------------------------
# the checks

sub get_indexed_value ($$$$) {
    my ($name, $value, $idx, $need_array) = @_;
    if ($need_array) {
        return $value->[$idx] if ref $value eq 'ARRAY';
        bail_out("$name - You asked for many requests, the expected results "
                 . "should be arrays as well.");
    }
    if (ref $value eq 'ARRAY') {
        bail_out("$name - SHOULD NOT HAPPEN: idx != 0 and don't need array.")
            if $idx != 0;
        return $value->[0];
    }
    return $value;
}

sub check_error_code ($$$$$) {
    my ($block, $res, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;
    my $code = ($res && $res->code) || '';

    SKIP: {
        Test::More::skip("$name - tests skipped due to $dry_run", 1)
            if $dry_run;

        if (defined $block->error_code_like) {
            my $v = get_indexed_value($name, $block->error_code_like, $idx,
                                      $need_array);
            Test::More::like($code, qr/$v/sm, "$name - status code ok");
        } elsif (defined $block->error_code) {
            Test::Nginx::Util::base_is($code,
                get_indexed_value($name, $block->error_code, $idx,
                                  $need_array),
                "$name - status code ok");
        } else {
            Test::Nginx::Util::base_is($code, 200, "$name - status code ok");
        }
    }
}

sub check_raw_response_headers ($$$$$) {
    my ($block, $raw_headers, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;

    if (defined $block->raw_response_headers_like) {
        SKIP: {
            Test::More::skip("$name - raw_response_headers_like - tests "
                             . "skipped due to $dry_run", 1) if $dry_run;
            my $re = get_indexed_value($name, $block->raw_response_headers_like,
                                       $idx, $need_array);
            Test::More::like($raw_headers, qr/$re/s,
                             "$name - raw resp headers like");
        }
    }

    if (defined $block->raw_response_headers_unlike) {
        SKIP: {
            Test::More::skip("$name - raw_response_headers_unlike - tests "
                             . "skipped due to $dry_run", 1) if $dry_run;
            my $re = get_indexed_value($name,
                                       $block->raw_response_headers_unlike,
                                       $idx, $need_array);
            Test::More::unlike($raw_headers, qr/$re/s,
                               "$name - raw resp headers unlike");
        }
    }
}

sub check_response_headers ($$$$$$) {
    my ($block, $res, $raw_headers, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;
    my $port = $Test::Nginx::Util::ServerPort;
    my $cport = $Test::Nginx::Util::ServerPortForClient;

    if (defined $block->response_headers) {
        my ($h, $order) = parse_headers(get_indexed_value($name,
            $block->response_headers, $idx, $need_array));

        for my $key (@$order) {
            my $val = $h->{$key};
            if (!defined $val) {
                SKIP: {
                    Test::More::skip("$name - response_headers - tests "
                                     . "skipped due to $dry_run", 1)
                        if $dry_run;
                    Test::More::unlike($raw_headers,
                        qr/^\s*\Q$key\E\s*:/ms,
                        "$name - header $key not present in the raw headers");
                }
                next;
            }

            $val =~ s/\$ServerPort\b/$port/g;
            $val =~ s/\$ServerPortForClient\b/$cport/g;

            my $actual = $res ? $res->header($key) : undef;
            $actual = '' unless defined $actual;

            SKIP: {
                Test::More::skip("$name - response_headers - tests skipped "
                                 . "due to $dry_run", 1) if $dry_run;
                Test::Nginx::Util::base_is($actual, $val,
                                           "$name - header $key ok");
            }
        }

    } elsif (defined $block->response_headers_like) {
        my ($h, $order) = parse_headers(get_indexed_value($name,
            $block->response_headers_like, $idx, $need_array));

        for my $key (@$order) {
            my $val = $h->{$key};
            $val = '' unless defined $val;
            my $actual = $res ? $res->header($key) : undef;
            $actual = '' unless defined $actual;
            SKIP: {
                Test::More::skip("$name - response_headers_like - tests "
                                 . "skipped due to $dry_run", 1) if $dry_run;
                Test::More::like($actual, qr/^$val$/,
                                 "$name - header $key like ok");
            }
        }
    }
}

sub run_body_filter ($$$) {
    my ($block, $filter, $content) = @_;
    my $name = $block->name;

    if (ref $filter eq 'CODE') {
        return $filter->($content);
    }
    if (ref $filter) {
        bail_out("$name - the --- response_body_filters section only "
                 . "supports subroutine reference values and string values");
    }

    my %builtin = (
        md5_hex  => sub { Digest::MD5::md5_hex($_[0]) },
        sha1_hex => sub { Digest::SHA::sha1_hex($_[0]) },
        uc       => sub { uc $_[0] },
        lc       => sub { lc $_[0] },
        ucfirst  => sub { ucfirst $_[0] },
        lcfirst  => sub { lcfirst $_[0] },
        length   => sub { length $_[0] },
    );
    my $code = $builtin{$filter}
        or bail_out("$name - unknown filter, \"$filter\", specified in the "
                    . "--- response_body_filters section");
    return $code->($content);
}

sub transform_response_body ($$$) {
    my ($block, $res, $idx) = @_;
    return unless defined $res;
    my $filters = $block->response_body_filters;
    return unless defined $filters;
    my $content = $res->content;
    return unless defined $content;
    my $name = $block->name;

    if (!ref $filters) {
        $filters =~ s/^\s+|\s+$//gs;
        $filters = [split /\s+/, $filters];
    } elsif (ref $filters ne 'ARRAY') {
        $filters = [$filters];
    }

    my $list = $filters;
    if (ref $filters->[0] eq 'ARRAY') {
        for my $elem (@$filters) {
            bail_out("$name - the --- response_body_filters two-dimensional "
                     . "array only be like [[uc], [lc]] not [[uc], lc]")
                if ref $elem ne 'ARRAY';
        }
        $list = $filters->[$idx];
        bail_out("$name - the ---response_body_filters two-dimensional array "
                 . "unmatch the specified request($idx)") unless defined $list;
    }

    $content = run_body_filter($block, $_, $content) for @$list;
    $res->content($content);
}

sub check_response_body ($$$$$$) {
    my ($block, $res, $dry_run, $idx, $repeated, $need_array) = @_;
    my $name = $block->name;
    my $port = $Test::Nginx::Util::ServerPort;
    my $cport = $Test::Nginx::Util::ServerPortForClient;

    my $content = $res ? $res->content : undef;
    if (defined $content) {
        $content =~ s/^TE: deflate,gzip;q=0\.3\r\n//gms;
        $content =~ s/^Connection: TE, close\r\n//gms;
    }

    if (defined $block->response_body || defined $block->response_body_eval) {
        my $expected;
        if ($block->response_body_eval) {
            Test::More::diag("$name - response_body_eval is DEPRECATED. Use "
                             . "response_body eval instead.");
            $expected = eval get_indexed_value($name,
                $block->response_body_eval, $idx, $need_array);
            warn $@ if $@;
        } else {
            $expected = get_indexed_value($name, $block->response_body, $idx,
                                          $need_array);
        }

        if ($block->charset) {
            Encode::from_to($expected, 'UTF-8', $block->charset);
        }

        if (defined $expected && !ref $expected) {
            $expected =~ s/\$ServerPort\b/$port/g;
            $expected =~ s/\$ServerPortForClient\b/$cport/g;
            # as the real module: $TEST_NGINX_XXX too (an unset one is an
            # error)
            $expected = expand_env_in_text($expected, $name,
                                           $Test::Nginx::Util::RandPorts);
        }

        SKIP: {
            Test::More::skip("$name - response_body - tests skipped due to "
                             . "$dry_run", 1) if $dry_run;
            if (ref $expected) {
                Test::Nginx::Util::like_str($content, $expected,
                    "$name - response_body - like (repeated req $repeated, "
                    . "req $idx)");
            } elsif ($Test::Nginx::Util::NoLongString) {
                Test::Nginx::Util::base_is($content, $expected,
                    "$name - response_body - response is expected (repeated "
                    . "req $repeated, req $idx)");
            } else {
                Test::Nginx::Util::is_string($content, $expected,
                    "$name - response_body - response is expected (repeated "
                    . "req $repeated, req $idx)");
            }
        }

    } elsif (defined $block->response_body_like
             || defined $block->response_body_unlike)
    {
        my ($patterns, $type, $cmp);
        if (defined $block->response_body_like) {
            ($patterns, $type, $cmp) = ($block->response_body_like, 'like',
                                        \&Test::Nginx::Util::like_str);
        } else {
            ($patterns, $type, $cmp) = ($block->response_body_unlike,
                                        'unlike',
                                        \&Test::Nginx::Util::unlike_str);
        }

        my $pat = get_indexed_value($name, $patterns, $idx, $need_array);
        $pat =~ s/\$ServerPort\b/$port/g;
        $pat =~ s/\$ServerPortForClient\b/$cport/g;

        my $summary = trim(defined $content && length $content > 2000
                           ? substr($content, 0, 2000) . ' ...' : $content);
        $summary = '' unless defined $summary;

        SKIP: {
            Test::More::skip("$name - response_body_$type - tests skipped "
                             . "due to $dry_run", 1) if $dry_run;
            $cmp->($content, qr/$pat/s,
                   "$name - response_body_$type - response is expected "
                   . "($summary)");
        }
    }

    for my $check (@ResponseBodyChecks) {
        $check->($block, $res ? $res->content : undef, $idx, $repeated,
                 $dry_run);
    }
}

sub fmt_str ($) {
    my $s = shift;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

sub value_contains {
    my ($val, $pat) = @_;
    return $val =~ /\Q$pat\E/ if !ref $val || ref $val eq 'Regexp';
    if (ref $val eq 'ARRAY') {
        for my $v (@$val) {
            return 1 if value_contains($v, $pat);
        }
    }
    return undef;
}

# Section value -> list of patterns: text lines, or qr//, or an array of
# either (with eval).
sub _patterns ($) {
    my $pats = shift;
    if (!ref $pats) {
        chomp $pats;
        return [ split /\n+/, $pats ];
    }
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats];
}

sub _line_matches ($$) {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ /$pat/ : index($line, $pat) >= 0;
}

# "must match a line" and "must not match any line" checks over $lines.
sub _log_checks {
    my ($name, $what, $file, $lines, $want, $unwant, $dry_run, $req_suffix)
        = @_;

    if (defined $want) {
        my $pats = _patterns($want);
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless defined $pat;
                if (_line_matches($line, $pat)) {
                    SKIP: {
                        Test::More::skip("$name - $what - tests skipped due "
                                         . "to $dry_run", 1) if $dry_run;
                        Test::More::pass("$name - pattern \"$pat\" matches a "
                                         . "line in $file$req_suffix");
                    }
                    undef $pat;
                }
            }
        }
        for my $pat (@$pats) {
            next unless defined $pat;
            SKIP: {
                Test::More::skip("$name - $what - tests skipped due to "
                                 . "$dry_run", 1) if $dry_run;
                Test::More::fail("$name - pattern \"$pat\" should match a "
                                 . "line in $file$req_suffix");
            }
        }
    }

    if (defined $unwant) {
        my $pats = _patterns($unwant);
        my %found;
        for my $i (0 .. $#$lines) {
            my $line = $lines->[$i];
            for my $pat (@$pats) {
                next unless defined $pat;
                next unless _line_matches($line, $pat);

                if ($found{$pat}++) {
                    # more failures than planned subtests
                    Test::More->builder->no_ending(1);
                }

                SKIP: {
                    Test::More::skip("$name - no_$what - tests skipped due "
                                     . "to $dry_run ($line)", 1) if $dry_run;
                    my $ln = fmt_str($line);
                    my $p = fmt_str($pat);
                    my @more;
                    for (my $j = $i + 1; $j < min($i + 10, @$lines - 1); $j++)
                    {
                        push @more, $lines->[$j];
                    }
                    Test::More::fail("$name - pattern \"$p\" should not match "
                        . "any line in $file but matches line \"$ln\""
                        . ($req_suffix ? "$req_suffix\n" . join('', @more)
                                       : ''));
                }
            }
        }
        for my $pat (@$pats) {
            next if !defined $pat || $found{$pat};
            SKIP: {
                Test::More::skip("$name - no_$what - tests skipped due to "
                                 . "$dry_run", 1) if $dry_run;
                my $p = fmt_str($pat);
                Test::More::pass("$name - pattern \"$p\" does not match a "
                                 . "line in $file$req_suffix");
            }
        }
    }
}

sub check_access_log ($$$) {
    my ($block, $dry_run, $repeated) = @_;
    return unless defined $block->access_log || defined $block->no_access_log;
    my $lines = access_log_data();
    _log_checks($block->name, 'access_log', 'access.log', $lines,
                scalar($block->access_log), scalar($block->no_access_log), $dry_run,
                " (req $repeated)");
}

sub check_error_log ($$$$$) {
    my ($block, $res, $dry_run, $repeated, $need_array) = @_;
    my $name = $block->name;
    my $lines;

    my %warn_about = map { $_ => 1 } qw(alert crit emerg);

    my $grep_pats = $block->grep_error_log;
    my $grep_pat;
    if (defined $grep_pats) {
        $grep_pat = ref $grep_pats eq 'ARRAY' ? $grep_pats->[$repeated]
                                              : $grep_pats;
    } elsif (defined $block->grep_error_log_out) {
        bail_out("$name - No --- grep_error_log defined but "
                 . "--- grep_error_log_out is defined");
    }

    if (defined $grep_pat) {
        my $expected = $block->grep_error_log_out;
        defined $expected
            or bail_out("$name - No --- grep_error_log_out defined but "
                        . "--- grep_error_log is defined");
        # The real module (0.33) runs the value through the $TEST_NGINX_XXX
        # expansion before looking at its type, which turns an array or a
        # qr// (from "--- grep_error_log_out eval") into the string
        # "ARRAY(0x...)" or "(?^:...)": such a block fails there, so it is
        # refused here rather than passing under this runner only.
        if (ref $expected) {
            bail_out("$name - --- grep_error_log_out must be a string: "
                     . "Test::Nginx 0.33 stringifies an array or a regex "
                     . "(" . ref($expected) . ") given here");
        }
        $expected = expand_env_in_text($expected, $name,
                                       $Test::Nginx::Util::RandPorts);

        SKIP: {
            Test::More::skip("$name - error_log - tests skipped due to "
                             . "$dry_run", 1) if $dry_run;
            $lines ||= error_log_data() || [];
            my $matched = '';
            for my $line (@$lines) {
                my $m;
                if (ref $grep_pat) {
                    $m = $1 if $line =~ /($grep_pat)/;
                } elsif (index($line, $grep_pat) >= 0) {
                    $m = $grep_pat;
                }
                $matched .= "$m\n" if defined $m && $m !~ /\n/;
            }

            my $tname = "$name - grep_error_log_out (req $repeated)";
            if (ref $expected eq 'Regexp') {
                Test::More::like($matched, $expected, $tname);
            } elsif ($Test::Nginx::Util::NoLongString) {
                Test::Nginx::Util::base_is($matched, $expected, $tname);
            } else {
                Test::Nginx::Util::is_string($matched, $expected, $tname);
            }
        }
    }

    for my $sec (qw(error_log no_error_log)) {
        my $pats = $block->$sec;
        next unless defined $pats;
        for my $level (keys %warn_about) {
            delete $warn_about{$level} if value_contains($pats, "[$level");
        }
    }

    if (defined $block->error_log || defined $block->no_error_log) {
        $lines ||= error_log_data() || [];
        _log_checks($name, 'error_log', 'error.log', $lines,
                    scalar($block->error_log), scalar($block->no_error_log), $dry_run,
                    " (req $repeated)");
    }

    if (!$dry_run && %warn_about) {
        $lines ||= error_log_data() || [];
        for my $line (@$lines) {
            if ($line =~ /\[(alert|crit|emerg)\]/ && $warn_about{$1}) {
                warn "WARNING: $name - " . fmt_str($line) . "\n";
            }
        }
    }

    for my $line (@{ $lines || [] }) {
        if ($line =~ /\bAssertion .*?failed\b/) {
            Test::More->builder->no_ending(1);
            (my $l = $line) =~ s/\n\z//;
            Test::More::fail("$name - $l\n");
        }
    }
}

sub check_shutdown_error_log ($$) {
    my ($block, $dry_run) = @_;
    my $name = $block->name;

    my $lines = error_log_data() || [];
    _log_checks($name, 'shutdown_error_log', 'error.log', $lines,
                undef, scalar($block->no_shutdown_error_log), $dry_run, '');
    _log_checks($name, 'shutdown_error_log', 'error.log', $lines,
                scalar($block->shutdown_error_log), undef, $dry_run, '');

    for my $line (@$lines) {
        if ($line =~ /\bAssertion .*? failed\.$/) {
            Test::More->builder->no_ending(1);
            (my $l = $line) =~ s/\n\z//;
            Test::More::fail("$name - $l");
        }
    }
}

# ---------------------------------------------------------------------------
# one repetition of one block: send the request(s), check the response(s)
# and the logs

sub run_test_helper ($$$) {
    my ($block, $dry_run, $repeated) = @_;
    my $name = $block->name;

    my $reqs = get_req_from_block($block);
    bail_out("$name - request empty") unless @$reqs;

    my $timeout = parse_time($block->timeout);
    $timeout = timeout() unless defined $timeout;

    my ($res, $need_array);
    my $idx = 0;

    for my $k (0 .. $#$reqs) {
        my ($raw, $head_req);
        if ($dry_run) {
            $raw = "200 OK HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
        } else {
            ($raw, $head_req) = send_request($reqs->[$k],
                                             $block->raw_request_middle_delay,
                                             $timeout, $block);
        }

        my $pending;    # responses still expected on a pipelined connection
        if ($block->pipelined_requests) {
            $pending = @{ $block->pipelined_requests };
            $need_array = 1;
        } else {
            $need_array = @$reqs > 1;
        }

        while (1) {
            $raw = '' unless defined $raw;
            my ($raw_headers, $left);

            if (!defined $block->ignore_response) {
                if (defined $block->http09) {
                    $res = HTTP::Response->new(200, 'OK', [], $raw);
                    $raw_headers = '';
                } else {
                    ($res, $raw_headers, $left)
                        = parse_response($name, \$raw, $head_req);
                }
            }

            if (!$pending) {
                if ($left) {
                    $left =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                    warn "WARNING: $name - unexpected extra bytes after last "
                         . "chunk in response: \"" . _short($left) . "\"\n";
                }
            } else {
                $raw = $left;
                $pending--;
            }

            if (!defined $block->ignore_response) {
                check_error_code($block, $res, $dry_run, $idx, $need_array);
                check_raw_response_headers($block, $raw_headers, $dry_run,
                                           $idx, $need_array);
                check_response_headers($block, $res, $raw_headers, $dry_run,
                                       $idx, $need_array);
                transform_response_body($block, $res, $idx);
                check_response_body($block, $res, $dry_run, $idx, $repeated,
                                    $need_array);
            }

            if ($pending || $idx < @$reqs - 1) {
                sleep $block->wait if $block->wait;
                check_error_log($block, $res, $dry_run, $repeated,
                                $need_array);
                check_access_log($block, $dry_run, $repeated)
                    unless defined $block->ignore_response;
            }

            $idx++;
            last unless $pending;
        }
    }

    sleep $block->wait if $block->wait;

    check_error_log($block, $res, $dry_run, $repeated, $need_array);
    check_access_log($block, $dry_run, $repeated)
        unless defined $block->ignore_response;
}

1;
