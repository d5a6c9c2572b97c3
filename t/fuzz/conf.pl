#!/usr/bin/perl
# t/fuzz/conf.pl SECONDS MODULE — fuzzes the module's directive parsers the
# way nginx runs them: `nginx -t` on generated configurations, for
# SECONDS, with MODULE (the ASan build under `make fuzz`: the sanitizer
# runtime is preloaded when the module needs it).
#
# Each configuration is a valid one with one to three directives given
# generated values: replay_key_query's SQL (its $N counter skips strings,
# quoted names, comments and dollar quotes), a credentials file
# (replay_s3_credentials file=), replay_db's connection string and
# parameters, replay_s3_endpoint, _bucket, _region, _addressing,
# replay_redirect, replay_presign_expires, replay_key_param_max_length,
# replay_key_cache.
#
# Invariants: nginx exits 0 ("test is successful") or 1 with an [emerg]
# line, never on a signal; no sanitizer report; and where a reference
# below says what the answer must be (the SQL's highest $N against the
# number of values, the credentials file's lines), nginx gives that
# answer.  nginx runs in a network namespace of its own (unshare -n) when
# it can, so that a generated host name is never looked up outside.

use strict;
use warnings;

use File::Temp ();
use POSIX ();
use Time::HiRes qw(time);

my ($seconds, $module) = @ARGV;
die "usage: $0 SECONDS MODULE\n" unless $seconds && $module && -f $module;

my $nginx = $ENV{REPLAY_NGINX_BINARY} || '/usr/sbin/nginx';
my $dir = File::Temp::tempdir('replay-conffuzz.XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
mkdir "$dir/$_" for qw(conf logs san);

my $runtime = '';
for (`ldd $module 2>/dev/null`) {
    $runtime = $1 if /=>\s+(\S*lib(?:clang_rt\.)?asan\S*)/;
}

my @netns = (system('unshare -n true 2>/dev/null') == 0) ? ('unshare', '-n') : ();

$ENV{ASAN_OPTIONS} = "detect_leaks=0:log_path=$dir/san/asan";
$ENV{UBSAN_OPTIONS} = "print_stacktrace=1:log_path=$dir/san/ubsan";
$ENV{AWS_ACCESS_KEY_ID} = 'AKIDFUZZ';
$ENV{AWS_SECRET_ACCESS_KEY} = 'secretfuzz';

my $seed = $ENV{FUZZ_SEED} // time ^ $$;
srand $seed;

# ---------------------------------------------------------------- helpers

sub pick { return $_[int rand @_] }

sub quote {
    my ($s) = @_;
    $s =~ s/\\/\\\\/g;
    $s =~ s/"/\\"/g;
    return qq{"$s"};
}

# random bytes, biased to what parsers look at
sub noise {
    my ($max) = @_;
    my @alpha = (split(//, q{'"$-/*\\E e_ a1;=#[]{}%:@?&+.,~}), "\n", "\t",
                 "\r", ' ', "\x80", "\xff", 0 .. 9, 'a' .. 'f');
    my $n = int rand($max + 1);
    return join '', map { rand() < 0.9 ? pick(@alpha) : chr(1 + int rand 255) } 1 .. $n;
}

# ---------------------------------------------------------------- SQL

# pieces of SQL, some with $N where it counts and some where it does not
sub sql_piece {
    my $d = sub { 1 + int rand(rand() < 0.05 ? 100000 : 6) };
    return pick(
        sub { 'SELECT replay_url FROM games WHERE id = ' },
        sub { ' $' . $d->() },
        sub { '$' . $d->() . '::bigint' },
        sub { " '\$" . $d->() . "'" },
        sub { " E'\\\\'\$" . $d->() . "'" },
        sub { " e'it''s \$" . $d->() . "'" },
        sub { ' "col$' . $d->() . '"' },
        sub { " -- \$" . $d->() . "\n" },
        sub { " -- \$" . $d->() },
        sub { ' /* $' . $d->() . ' */' },
        sub { ' /* $' . $d->() },
        sub { ' $tag$ $' . $d->() . ' $tag$' },
        sub { ' $$ $' . $d->() . ' $$' },
        sub { ' $a$ $' . $d->() },
        sub { ' x$' . $d->() },
        sub { ' $0' },
        sub { ' $' },
        sub { "'" },
        sub { '"' },
        sub { '/*' },
        sub { '*/' },
        sub { ' $' . ('9' x (1 + int rand 8)) },
        sub { noise(12) },
    )->();
}

sub skip_quoted {
    my ($s, $i, $esc) = @_;
    my $q = substr $s, $i++, 1;
    my $n = length $s;
    while ($i < $n) {
        my $c = substr $s, $i, 1;
        if ($esc && $c eq '\\') { $i += 2; next }
        if ($c eq $q) {
            if ($i + 1 < $n && substr($s, $i + 1, 1) eq $q) { $i += 2; next }
            return $i + 1;
        }
        $i++;
    }
    return $n;
}

sub name_char { my ($c) = @_; return $c =~ /[A-Za-z0-9_]/ || ord($c) >= 0x80 }

# the highest $N outside strings, quoted names, comments and dollar
# quotes; -1: above 65535
sub sql_max_param {
    my ($s) = @_;
    my ($max, $i, $n) = (0, 0, length $s);

    while ($i < $n) {
        my $c = substr $s, $i, 1;

        if ($c eq "'") {
            my $e = $i > 0 && substr($s, $i - 1, 1) =~ /^[Ee]$/;
            $i = skip_quoted($s, $i, $e);
        } elsif ($c eq '"') {
            $i = skip_quoted($s, $i, 0);
        } elsif ($c eq '-' && substr($s, $i + 1, 1) eq '-') {
            my $j = index $s, "\n", $i;
            return $max if $j < 0;
            $i = $j + 1;
        } elsif ($c eq '/' && substr($s, $i + 1, 1) eq '*') {
            my $j = index $s, '*/', $i + 2;
            return $max if $j < 0;
            $i = $j + 2;
        } elsif ($c eq '$') {
            if ($i > 0 && name_char(substr $s, $i - 1, 1)) {
                $i++;
            } elsif (substr($s, $i + 1) =~ /^(\d+)/) {
                my $digits = $1;
                (my $v = $digits) =~ s/^0+(?=\d)//;
                return -1 if length $v > 5 || $v > 65535;
                $max = $v if $v > $max;
                $i += 1 + length $digits;
            } elsif (substr($s, $i) =~ /^(\$[A-Za-z0-9_\x80-\xff]*\$)/) {
                my $tag = $1;
                my $j = index $s, $tag, $i + length $tag;
                return $max if $j < 0;
                $i = $j + length $tag;
            } else {
                $i++;
            }
        } else {
            $i++;
        }
    }

    return $max;
}

# ---------------------------------------------------------------- credentials

# the reference reading of one line: [code, value], code as in
# ngx_http_replay_sigv4.h
sub creds_line {
    my ($l) = @_;
    $l =~ s/^[ \t]+//;
    $l =~ s/[ \t\r]+$//;
    return [0] if $l eq '' || $l =~ /^[#;]/;
    return [$l eq '[default]' ? 0 : -1] if $l =~ /^\[/;
    my $eq = index $l, '=';
    return [-2] if $eq < 0;
    my $k = substr $l, 0, $eq;
    my $v = substr $l, $eq + 1;
    $k =~ s/[ \t]+$//;
    $v =~ s/^[ \t]+//;
    $k = substr $k, 4 if length $k > 4 && $k =~ /^aws_/i;
    my %f = (access_key_id => 1, secret_access_key => 2, session_token => 3);
    return [$f{lc $k}, $v] if $f{lc $k};
    return [0];
}

sub creds_file {
    my @lines;
    my $n = int rand 8;
    for (1 .. $n) {
        push @lines, pick(
            sub { 'aws_access_key_id = ' . pick('AKID', noise(6), '') },
            sub { 'aws_secret_access_key = ' . pick('SECRET', noise(6), '') },
            sub { pick('AWS_', 'aws_', '', 'Aws_') . pick('Session_Token', 'session_token') . pick('=', ' = ', "\t=\t") . noise(8) },
            sub { pick('[default]', '[prod]', ' [default] ', '[default') },
            sub { pick('# x', '; y', '', '   ', "\t", 'region = eu-west-1') },
            sub { noise(20) },
        )->();
    }
    my $text = join "\n", @lines;
    $text .= "\n" if rand() < 0.5;
    $text =~ s/\r?$/\r/mg if rand() < 0.2;
    return $text;
}

# what nginx must say of a credentials file: undef (accepted) or a regex
sub creds_expect {
    my ($text) = @_;
    my %got;
    my $line = 0;
    my @lines = split /\n/, $text, -1;
    pop @lines if @lines && $lines[-1] eq '';
    for my $l (@lines) {
        $line++;
        my ($code, $v) = @{ creds_line($l) };
        return qr/line $line: only the "\[default\]" profile/ if $code == -1;
        return qr/line $line: "name = value" expected/ if $code == -2;
        next unless $code > 0;
        return qr/line $line: duplicate key/ if $got{$code};
        return qr/line $line: empty value/ if $v eq '';
        $got{$code} = $v;
    }
    return qr/both an access key id and a secret access key are needed/
        unless $got{1} && $got{2};
    # the values go into the Authorization header and x-amz-security-token:
    # an access key id is letters and digits, the others printable ASCII
    return qr/the access key id holds a character it may not/
        if $got{1} =~ /[^A-Za-z0-9]/;
    return qr/the secret access key holds a character it may not/
        if $got{2} =~ /[^\x21-\x7e]/;
    return qr/the session token holds a character it may not/
        if defined $got{3} && $got{3} =~ /[^\x21-\x7e]/;
    return undef;
}

# ---------------------------------------------------------------- configs

my %ok_value = (
    endpoint   => 'http://127.0.0.1:9',
    bucket     => 'replays',
    region     => 'us-east-1',
    addressing => 'path',
    redirect   => 'off',
    expires    => '15m',
    maxlen     => '256',
    db         => '"host=127.0.0.1 port=9 dbname=replay user=replay"',
    creds      => 'env',
    cache      => 'keys:1m valid=10m',
);

# the two with a reference more often
my @FUZZED = qw(sql sql sql creds creds creds db endpoint bucket region
                addressing redirect expires maxlen cache);

sub generate {
    my %v = %ok_value;
    my %f = map { $_ => 1 } map { pick(@FUZZED) }
            1 .. (rand() < 0.6 ? 1 : 2 + int rand 2);
    my ($sql, $nvalues, $expect);

    $sql = 'SELECT replay_url FROM games WHERE id = $1';
    $nvalues = 1;

    if ($f{sql}) {
        $sql = join '', map { sql_piece() } 1 .. 1 + int rand 6;
        my $max = sql_max_param($sql);
        $nvalues = ($max > 0 && $max <= 40 && rand() < 0.7) ? $max : 1 + int rand 4;

        if (keys %f == 1) {
            $expect = $max < 0 ? qr/the query has a parameter number above 65535/
                    : $max == 0 ? qr/the query has no parameter/
                    : $max != $nvalues ? qr/the query has parameters up to \$$max but $nvalues value/
                    : undef;
            $expect //= 'ok';
        }
    }

    if ($f{creds}) {
        my $text = creds_file();
        open my $fh, '>:raw', "$dir/conf/creds" or die $!;
        print $fh $text;
        close $fh;
        $v{creds} = 'file=creds';
        if (keys %f == 1) {
            $expect = creds_expect($text) // 'ok';
        }
    }

    if ($f{db}) {
        $v{db} = join ' ', quote(pick('host=127.0.0.1 port=9 ', 'postgresql://u@127.0.0.1:9/d?', '', noise(4)) . noise(30)),
                 map { pick('pool=', 'queue=', 'connect_timeout=', 'query_timeout=', 'queue_timeout=', 'x=', '')
                       . pick(noise(4), int rand 100000, '1s', '0', '-1', '500ms', '99999999999999999999') }
                 1 .. int rand 4;
    }

    # hosts stay loopback addresses, or unparsable
    $v{endpoint} = quote(pick('http://', 'https://', 'HTTP://', 'ftp://', '', 'http:/')
                         . pick('127.0.0.1', '[::1]', '127.0.0.1:' . pick(0, 9, 65535, 65536, 'x', ''), '')
                         . pick('', '/', '/b', '?', '@', '$x', ':', noise(3)))
        if $f{endpoint};
    $v{bucket} = quote(pick('', 'ab', 'a' x 256, 'rep lays', 'r.e-p_l', noise(10))) if $f{bucket};
    $v{region} = quote(pick('', 'EU', 'eu-west-1', 'a' x 65, noise(6))) if $f{region};
    $v{addressing} = quote(pick('path', 'virtual', 'Path', '', noise(5))) if $f{addressing};
    $v{redirect} = quote(pick('on', 'off', '302', '307', '301', '', noise(4))) if $f{redirect};
    $v{expires} = quote(pick('0', '1s', '7d', '8d', '604801', '-1', '1y', noise(4))) if $f{expires};
    $v{maxlen} = quote(pick('0', '1', '1k', '1g', '-1', noise(4))) if $f{maxlen};
    $v{cache} = join ' ', quote(pick('keys', 'replay_status', ':', '', noise(6))
                                . pick(':', '') . pick('32k', '1m', '4k', '0',
                                       '-1', '1g', '', noise(4))),
                map { pick('valid=', 'inactive=', '') . pick('1s', '0', '-1',
                      '10m', '1y', noise(4)) } 1 .. int rand 3
        if $f{cache};

    my $values = join ' ', map { "\$arg_v$_" } 1 .. $nvalues;
    my $q = quote($sql);

    my $conf = <<"EOF";
load_module $module;
error_log $dir/logs/error.log;
pid $dir/logs/nginx.pid;
events { }
http {
    access_log off;
    client_body_temp_path $dir/logs;
    proxy_temp_path $dir/logs;
    fastcgi_temp_path $dir/logs;
    uwsgi_temp_path $dir/logs;
    scgi_temp_path $dir/logs;
    replay_s3_credentials $v{creds};
    replay_db $v{db};
    server {
        listen 127.0.0.1:9;
        replay_s3_bucket $v{bucket};
        replay_s3_region $v{region};
        replay_s3_addressing $v{addressing};
        replay_redirect $v{redirect};
        replay_presign_expires $v{expires};
        replay_key_param_max_length $v{maxlen};
        replay_key_cache $v{cache};
        location /q {
            replay_s3_endpoint $v{endpoint};
            replay_key_query $q $values;
        }
        location /k {
            replay_s3_endpoint http://127.0.0.1:9;
            replay_s3_key k/\$arg_k;
        }
    }
}
EOF

    return ($conf, $expect, join(',', sort keys %f));
}

# ---------------------------------------------------------------- run

my ($n, $fail, %outcome) = (0, 0);
my $t_end = time + $seconds;

sub failure {
    my ($why, $conf, $out) = @_;
    $fail++;
    my $keep = $ENV{TMPDIR} || '/tmp';
    my $f = "$keep/replay-conffuzz-failure-$$-$fail.conf";
    if (open my $fh, '>', $f) { print $fh $conf; close $fh }
    print STDERR "conf fuzz: $why (configuration kept in $f)\n$out\n";
}

while (time < $t_end && $fail < 5) {
    my ($conf, $expect, $what) = generate();

    open my $fh, '>:raw', "$dir/conf/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;

    unlink glob "$dir/san/*";

    my @env = $runtime ? ('env', "LD_PRELOAD=$runtime") : ();
    my $pid = open my $out, '-|';
    die "fork: $!" unless defined $pid;

    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        { exec @netns, @env, $nginx, '-t', '-q', '-p', "$dir/", '-c',
               'conf/nginx.conf', '-e', "$dir/logs/error.log" }
        POSIX::_exit(127);
    }

    my $text = do { local $/; <$out> } // '';
    close $out;
    my $st = $?;
    $n++;

    my @san = grep { -s } glob "$dir/san/*";

    if (@san) {
        my $r = join '', map { local (@ARGV, $/) = ($_); <> } @san;
        failure("sanitizer report ($what)", $conf, $r);
        next;
    }

    if ($st & 127) {
        failure('nginx -t died on signal ' . ($st & 127) . " ($what)", $conf, $text);
        next;
    }

    my $rc = $st >> 8;

    if ($rc == 0) {
        $outcome{ok}++;
    } elsif ($rc == 1 && $text =~ /\[emerg\]/) {
        $outcome{refused}++;
    } else {
        failure("nginx -t exited $rc without an [emerg] line ($what)", $conf, $text);
        next;
    }

    next unless defined $expect;

    if ($expect eq 'ok') {
        failure("refused, the reference accepts it ($what)", $conf, $text) if $rc != 0;
    } elsif ($rc == 0 || $text !~ $expect) {
        failure("want $expect ($what)", $conf, $text);
    } else {
        $outcome{"$what as the reference says"}++;
    }
}

printf "conf fuzz: %d configurations in %d s (seed %d): %s; %d failure(s)\n",
       $n, $seconds, $seed,
       join(', ', map { "$_ $outcome{$_}" } sort keys %outcome), $fail;

exit($fail ? 1 : 0);
