package Test::Nginx::Util;

# Part of the minimal Test::Nginx::Socket stand-in under t/runner/ (see
# Test/Nginx/Socket.pm for the overview and the list of what is supported).
#
# This half manages the nginx under test: settings, the generated
# nginx.conf, the server root t/servroot, starting and stopping nginx
# (optionally under valgrind), the embedded TCP backend (--- tcp_listen),
# string comparison helpers and the end-of-run cleanup.  The package and
# variable names ($ServerPort, $ServRoot, $ErrLogFile, ...) are the ones of
# the real Test::Nginx::Util, so test files that reach for
# $Test::Nginx::Util::XXX work with both.

use strict;
use warnings;

use Exporter ();
our @ISA = ('Exporter');

use Carp qw(croak);
use Config ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp ();
use IO::Socket::INET ();
use IO::Socket::UNIX ();
use List::Util qw(shuffle);
use POSIX qw(SIGQUIT SIGKILL SIGTERM WNOHANG);
use Scalar::Util qw(looks_like_number);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(sleep time);
use Test::More ();

# ---------------------------------------------------------------------------
# settings (same names and defaults as the real Test::Nginx::Util)

our $Verbose          = $ENV{TEST_NGINX_VERBOSE};
our $NoNginxManager   = $ENV{TEST_NGINX_NO_NGINX_MANAGER} || 0;
our $NoShuffle        = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $UseValgrind      = $ENV{TEST_NGINX_USE_VALGRIND};
our $ValgrindFail     = $ENV{TEST_NGINX_VALGRIND_FAIL};   # extension
our $LoadModules      = $ENV{TEST_NGINX_LOAD_MODULES};
our $EventType        = $ENV{TEST_NGINX_EVENT_TYPE};
our $PostponeOutput   = $ENV{TEST_NGINX_POSTPONE_OUTPUT};
our $Timeout          = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $CheckAccumErrLog = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $ReusePort        = $ENV{TEST_NGINX_REUSE_PORT};
our $WorkerUser       = $ENV{TEST_NGINX_WORKER_USER};

our $NginxBinary          = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $Workers              = 1;
our $WorkerConnections    = 64;
our $LogLevel             = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $DaemonEnabled        = 'on';
our $ServerPort           = $ENV{TEST_NGINX_SERVER_PORT}
                            || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient  = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort || 1984;
our $ServerAddr           = '127.0.0.1';
our $ServerName           = 'localhost';
our $NoRootLocation       = 0;
our $TestNginxSleep       = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $ForceRestartOnTest   = defined $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST}
                            ? $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} : 1;
our $RepeatEach           = 1;
our $NoLongString;
our $ConfigPreamble       = '';

our @EnvToNginx;
our @BlockPreprocessors;
our @CleanupHandlers;
our @TestCleanupHandlers;

our ($RunTestHelper, $CheckErrorLog, $CheckShutdownErrorLog);
our ($NginxVersion, $NginxRawVersion, $PrevConfig, $PrevBlock);
our ($ChildPid, $TcpServerPid, $UdpServerPid, $InSubprocess);
our $ErrLogFilePos = 0;
our $RandPorts;    # the $TEST_NGINX_RAND_PORT_N ports of the current block
our $FirstTime = 1;

for my $mode (qw(USE_HUP USE_STAP CHECK_LEAK BENCHMARK USE_HTTP2 USE_HTTP3
                 USE_RR RANDOMIZE))
{
    if ($ENV{"TEST_NGINX_$mode"}) {
        warn "WARNING: TEST_NGINX_$mode is not supported by the minimal "
             . "Test::Nginx::Socket under t/runner; ignored\n";
    }
}

# as the real module: the version of the nginx under test, 1.22.1 ->
# 1022001, for the test files' own Perl code
if ((`$NginxBinary -v 2>&1` // '') =~ m{/(\d+)\.(\d+)\.(\d+)}) {
    $ENV{TEST_NGINX_VERSION_NUM} = ($1 * 1000 + $2) * 1000 + $3;
}

our $ServRoot   = $ENV{TEST_NGINX_SERVROOT}
                  || File::Spec->rel2abs('t/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

our $LogDir     = File::Spec->catfile($ServRoot, 'logs');
our $ErrLogFile = File::Spec->catfile($LogDir, 'error.log');
our $AccLogFile = File::Spec->catfile($LogDir, 'access.log');
our $HtmlDir    = File::Spec->catfile($ServRoot, 'html');
our $ConfDir    = File::Spec->catfile($ServRoot, 'conf');
our $ConfFile   = File::Spec->catfile($ConfDir, 'nginx.conf');
our $PidFile    = File::Spec->catfile($LogDir, 'nginx.pid');

# where the stderr of "nginx" is kept while it starts (see start_nginx)
our $StartupStderrFile = File::Spec->catfile($LogDir, 'nginx-start.stderr');

our @EXPORT = qw(
    env_to_nginx is_str no_long_string no_diff check_accum_error_log
    is_running parse_time verbose sleep_time bail_out add_cleanup_handler
    access_log_data error_log_data setup_server_root write_config_file
    get_canon_version get_nginx_version trim show_all_chars parse_headers
    run_tests get_pid_from_pidfile add_block_preprocessor timeout
    worker_connections workers master_on master_off config_preamble
    repeat_each master_process_enabled log_level no_shuffle no_root_location
    html_dir server_root server_port server_port_for_client server_addr
    server_name no_nginx_manager use_hup add_test_cleanup_handler
    expand_env_in_text
    $ServerPort $ServerPortForClient $ServerAddr $ServerName $NginxVersion
    $PidFile $ServRoot $ConfFile $RunTestHelper $CheckErrorLog
    $CheckShutdownErrorLog $NoNginxManager $RepeatEach $NoLongString
);

# ---------------------------------------------------------------------------
# setting functions

sub repeat_each (@)          { $RepeatEach = shift if @_; $RepeatEach }
sub workers (@)              { return $Workers unless @_; $Workers = shift }
sub worker_connections (@)   { return $WorkerConnections unless @_;
                               $WorkerConnections = shift }
sub log_level (@)            { return $LogLevel unless @_; $LogLevel = shift }
sub timeout (@)              { return $Timeout unless @_; $Timeout = shift }
sub server_port (@)          { return $ServerPort unless @_; $ServerPort = shift }
sub server_port_for_client (@) { return $ServerPortForClient unless @_;
                                 $ServerPortForClient = shift }
sub server_addr (@)          { return $ServerAddr unless @_; $ServerAddr = shift }
sub server_name (@)          { return $ServerName unless @_; $ServerName = shift }
sub master_on ()             { $MasterProcessEnabled = 'on' }
sub master_off ()            { $MasterProcessEnabled = 'off' }
sub master_process_enabled (@) {
    return $MasterProcessEnabled unless @_;
    $MasterProcessEnabled = shift() ? 'on' : 'off';
}
sub no_shuffle ()            { $NoShuffle = 1 }
sub no_root_location ()      { $NoRootLocation = 1 }
sub no_long_string ()        { $NoLongString = 1 }
sub no_diff ()               { $ENV{TEST_SHOW_NO_DIFFS} = 1 }
sub no_nginx_manager ()      { $NoNginxManager = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub config_preamble ($)      { $ConfigPreamble = shift }
sub html_dir ()              { $HtmlDir }
sub server_root ()           { $ServRoot }
sub sleep_time               { $TestNginxSleep }
sub verbose                  { $Verbose }

sub use_hup () {
    warn "WARNING: use_hup() is not supported by the minimal "
         . "Test::Nginx::Socket under t/runner; ignored\n";
}

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        if ($v !~ /^[A-Za-z_]/ || $v =~ /\n/) {
            croak "env_to_nginx: bad argument value: $v\n";
        }
        push @EnvToNginx, $v;
    }
}

sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)    { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler ($) { unshift @TestCleanupHandlers, shift }

# "50ms" -> 0.05, "2s" -> 2, "1.5" -> 1.5
sub parse_time ($) {
    my $tm = shift;
    return $tm unless defined $tm;
    if ($tm =~ s/([^_a-zA-Z])ms$/$1/) {
        $tm = $tm / 1000;
    } else {
        $tm =~ s/([^_a-zA-Z])s$/$1/;
    }
    return $tm;
}

sub trim ($) {
    my $s = shift;
    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\n/ /gs;
    $s =~ s/\s{2,}/ /gs;
    return $s;
}

sub show_all_chars ($) {
    my $s = shift;
    $s =~ s/\n/\\n/gs;
    $s =~ s/\r/\\r/gs;
    $s =~ s/\t/\\t/gs;
    return $s;
}

# "Name: value" lines -> { Name => value }; "!Name" -> { Name => undef }.
# The order of the lines is kept in the returned list of pairs as well.
sub parse_headers ($) {
    my $s = shift;
    my (%h, @order);
    for my $line (split /\n/, $s) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        my $neg = ($line =~ s/^!\s*//);
        my ($key, $val);
        if ($neg) {
            $key = $line;
        } else {
            ($key, $val) = split /\s*:\s*/, $line, 2;
        }
        push @order, $key unless exists $h{$key};
        $h{$key} = $val;
    }
    return wantarray ? (\%h, \@order) : \%h;
}

# ---------------------------------------------------------------------------
# string comparisons

# Shorten a long value for a diagnostic, with unprintable bytes escaped.
sub _excerpt {
    my ($s, $from, $max) = @_;
    return 'undef' unless defined $s;
    $from ||= 0;
    $max ||= 70;
    my $piece = substr($s, $from, $max);
    $piece =~ s/([\x00-\x1f\x7f-\xff])/sprintf('\x{%02x}', ord $1)/ge;
    my $pre  = $from > 0 ? '...' : '';
    my $post = $from + $max < length $s ? '...' : '';
    return qq{$pre"$piece"$post};
}

# Like Test::LongString::is_string: on failure show where the strings
# start to differ instead of dumping both of them.
sub is_string ($$;$) {
    my ($got, $expected, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $tb = Test::More->builder;

    if (!defined $got || !defined $expected) {
        my $ok = !defined $got && !defined $expected;
        $tb->ok($ok, $name);
        $tb->diag(sprintf("         got: %s\n    expected: %s\n",
                          _excerpt($got), _excerpt($expected))) unless $ok;
        return $ok;
    }

    return $tb->ok(1, $name) if $got eq $expected;

    $tb->ok(0, $name);

    my $diff_at;
    if ((my $x = "$got" ^ "$expected") =~ /[^\x00]/g) {
        $diff_at = pos($x) - 1;
    }
    my $min = length $got < length $expected ? length $got : length $expected;
    $diff_at = $min if !defined $diff_at || $diff_at > $min;

    my $before = substr($expected, 0, $diff_at);
    my $line = 1 + ($before =~ tr/\n//);
    my $col = $diff_at - (rindex($before, "\n") + 1) + 1;
    my $from = $diff_at > 10 ? $diff_at - 10 : 0;

    $tb->diag(sprintf("         got: %s\n      length: %d\n"
                      . "    expected: %s\n      length: %d\n"
                      . "    strings begin to differ at char %d "
                      . "(line %d column %d)\n",
                      _excerpt($got, $from), length $got,
                      _excerpt($expected, $from), length $expected,
                      $diff_at + 1, $line, $col));
    return 0;
}

# Like Test::Base::is: a unified diff for multi-line expected values.
sub base_is ($$;$) {
    my ($got, $expected, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    if ($ENV{TEST_SHOW_NO_DIFFS} || !defined $got || !defined $expected
        || $got eq $expected || $expected !~ /\n./s)
    {
        return Test::More::is($got, $expected, $name);
    }

    require Text::Diff;
    $name = '' unless defined $name;
    return Test::More::ok($got eq $expected,
                          $name . "\n" . Text::Diff::diff(\$expected, \$got));
}

# like/unlike whose failure diagnostics do not dump a huge subject string.
sub like_str ($$;$) {
    my ($got, $re, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = defined $got && $got =~ $re;
    Test::More::ok($ok, $name);
    Test::More::diag(sprintf("                  %s\n    doesn't match '%s'",
                             _excerpt($got, 0, 500), $re)) unless $ok;
    return $ok;
}

sub unlike_str ($$;$) {
    my ($got, $re, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = !defined $got || $got !~ $re;
    Test::More::ok($ok, $name);
    Test::More::diag(sprintf("                  %s\n          matches '%s'",
                             _excerpt($got, 0, 500), $re)) unless $ok;
    return $ok;
}

# Compare honouring no_long_string() and Regexp expectations.
sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    if (ref $expected && ref $expected eq 'Regexp') {
        return like_str($got, $expected, $desc);
    }
    if ($NoLongString) {
        return base_is($got, $expected, $desc);
    }
    return is_string($got, $expected, $desc);
}

# ---------------------------------------------------------------------------
# processes

sub is_running ($) {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;

    waitpid($pid, WNOHANG);    # reaps it if it is an exited child of ours
    return 0 unless kill 0, $pid;

    # an exited daemon whose new parent has not reaped it yet
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $stat = <$fh>;
        close $fh;
        return 0 if defined $stat && $stat =~ /\)\s+[ZX]\s/;
    }
    return 1;
}

# Stop a process: $sig (QUIT by default) and a wait of up to timeout()
# seconds when $wait is set, then TERM a few times, then KILL.
sub kill_process ($$$;$) {
    my ($pid, $wait, $name, $sig) = @_;
    return unless $pid;
    $sig = SIGQUIT unless defined $sig;

    if ($wait) {
        warn "sending signal $sig to $pid\n" if $Verbose;
        kill $sig, $pid;

        my $left = timeout();
        while ($left > 0 && is_running($pid)) {
            sleep 0.01;
            $left -= 0.01;
        }

        if (is_running($pid)) {
            warn "$name - timeout when waiting for the process $pid to exit\n";
            kill SIGKILL, $pid;
            sleep 0.05;
        }
    }

    my $step = $TestNginxSleep;
    for my $i (1 .. 20) {
        return unless is_running($pid);
        warn "WARNING: killing the child process $pid.\n" if $Verbose;
        kill SIGTERM, $pid;
        $step *= 1.2;
        $step = 0.5 if $step > 0.5;
        sleep $step;
    }

    return unless is_running($pid);
    warn "$name - WARNING: killing the child process $pid with force...\n";
    kill SIGKILL, $pid;
    waitpid($pid, 0);
}

sub cleanup () {
    warn "cleaning up everything\n" if $Verbose;

    $_->() for @CleanupHandlers;

    if (defined $UdpServerPid) {
        kill_process($UdpServerPid, 1, "cleanup", SIGTERM);
        undef $UdpServerPid;
    }
    if (defined $TcpServerPid) {
        kill_process($TcpServerPid, 1, "cleanup", SIGTERM);
        undef $TcpServerPid;
    }
    if (defined $ChildPid) {
        kill_process($ChildPid, 1, "cleanup");
        undef $ChildPid;
    }
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

sub can_run {
    my $cmd = shift;
    if ($cmd =~ m{/}) {
        return -f $cmd && -x _ ? $cmd : undef;
    }
    for my $dir ((split /\Q$Config::Config{path_sep}\E/, $ENV{PATH} || ''),
                 '.')
    {
        next if $dir eq '';
        my $abs = File::Spec->catfile($dir, $cmd);
        return $abs if -f $abs && -x _;
    }
    return undef;
}

sub get_canon_version (@) {
    return sprintf "%d.%03d%03d", $_[0], $_[1], $_[2];
}

sub get_nginx_version () {
    my $out = `$NginxBinary -V 2>&1`;
    if (!defined $out || $? != 0) {
        $out = '' unless defined $out;
        bail_out("Failed to get the version of the Nginx in PATH: $out");
    }
    if ($out =~ m{(?:nginx|openresty)[^/]*/(\d+)\.(\d+)\.(\d+)}s
        || $out =~ m{\w+/(\d+)\.(\d+)\.(\d+)}s)
    {
        $NginxRawVersion = "$1.$2.$3";
        return get_canon_version($1, $2, $3);
    }
    bail_out("Failed to parse the output of \"nginx -V\": $out\n");
}

sub get_pid_from_pidfile ($) {
    my $name = shift;
    open my $in, '<', $PidFile
        or bail_out("$name - Failed to open the pid file $PidFile for "
                    . "reading: $!");
    my $pid = do { local $/; <$in> };
    close $in;
    $pid = '' unless defined $pid;
    chomp $pid;
    return $pid;
}

# ---------------------------------------------------------------------------
# the server root and nginx.conf

sub gen_rand_port (;$$) {
    my ($tries, $used) = @_;
    $tries ||= 1000;
    $used ||= {};
    for (1 .. $tries) {
        my $port = int(rand 63550) + 1985;
        next if $used->{$port};
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr,
                                         LocalPort => $port,
                                         Proto => 'tcp');
        if ($sock) {
            close $sock;
            return $port;
        }
    }
    return undef;
}

# Replace $TEST_NGINX_XXX by the value of that environment variable
# ($TEST_NGINX_RAND_PORT_N by a free port, the same one within a block).
sub expand_env_in_text ($$$) {
    my ($text, $name, $rand_ports) = @_;
    return undef unless defined $text;

    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        my $val;
        if ($var =~ /^TEST_NGINX_RAND_PORT_[0-9]+$/) {
            if (!defined $rand_ports->{$var}) {
                my %used = ($ServerPort => 1,
                            map { $_ => 1 } values %$rand_ports);
                my $port = gen_rand_port(1000, \%used);
                defined $port or bail_out("$name - Cannot find an available "
                                          . "listening port number for $var.\n");
                $rand_ports->{$var} = $port;
            }
            $val = $rand_ports->{$var};
        } else {
            defined $ENV{$var}
                or bail_out("$name - No environment $var defined.\n");
            $val = $ENV{$var};
        }
        $val;
    }ge;

    return $text;
}

sub setup_server_root ($) {
    if (-d $ServRoot) {
        # Only remove what the scaffold itself creates, so that a wrong
        # TEST_NGINX_SERVROOT cannot wipe real data.
        remove_tree($ConfDir, $HtmlDir, $LogDir,
                    glob("$ServRoot/*_cache"), glob("$ServRoot/*_temp"));
        rmdir $ServRoot
            or bail_out("Can't remove $ServRoot (not empty?): $!");
    }

    for my $dir ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        next if -d $dir;
        mkdir $dir or bail_out("Failed to do mkdir $dir: $!\n");
    }

    my $index = "$HtmlDir/index.html";
    open my $out, '>', $index
        or bail_out("Can't open $index for writing: $!\n");
    print $out '<html><head><title>It works!</title></head>'
               . '<body>It works!</body></html>';
    close $out;
}

# --- user_files: ">>> name [mtime]" entries, or (with eval) an array of
# [name, body, mtime] triples.  Relative names are under html/.
sub write_user_files ($$) {
    my ($block, $rand_ports) = @_;
    my $name = $block->name;
    my $files = $block->user_files;
    return unless $files;

    if (!ref $files) {
        my @list;
        for my $line (split /^/, $files) {
            if ($line =~ />>> (\S+)(?:\s+(.+))?/) {
                push @list, [$1, undef, $2];
            } elsif (@list) {
                $list[-1][1] .= $line;
            }
        }
        $files = \@list;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - wrong value type: ", ref $files,
                 ", only scalar or ARRAY are accepted");
    }

    for my $file (@$files) {
        my ($fname, $body, $date) = @$file;
        $body = '' unless defined $body;

        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        if ($path =~ m{(.*)/} && !-d $1) {
            make_path($1) or bail_out("$name - Cannot create directory $1");
        }

        $body = expand_env_in_text($body, $name, $rand_ports);

        open my $out, '>', $path
            or bail_out("$name - Cannot open $path for writing: $!\n");
        binmode $out;
        print $out $body;
        close $out;

        if ($date) {
            my $cmd = "TZ=GMT touch -t '$date' '$path'";
            system($cmd) == 0
                or bail_out("Failed to run shell command: $cmd\n");
        }
    }
}

# The temp directories nginx would otherwise take from its build (Debian:
# /var/lib/nginx/..., shared by every nginx on the machine) go under the
# server root, as the real module does; not for a module nginx was built
# without, nor where http_config sets the path itself.
sub temp_path_directives ($) {
    my $http_config = shift;
    my $v = `$NginxBinary -V 2>&1`;
    $v = '' unless defined $v;

    my @out;
    for my $t (['client_body', undef], ['proxy', undef],
               ['fastcgi', 'http_fastcgi_module'], ['scgi', 'http_scgi_module'],
               ['uwsgi', 'http_uwsgi_module'])
    {
        my ($what, $module) = @$t;
        next if defined $module && $v =~ /--without-\Q$module\E\b/;
        next if $what =~ /^(?:client_body|proxy)$/
                && $http_config =~ /\b${what}_temp_path\b/;
        push @out, "${what}_temp_path $ServRoot/${what}_temp;";
    }
    return join ' ', @out;
}

# nginx.conf.  Its lines are laid out as the real module (0.33, recent
# master) lays them out, so that the "nginx.conf:N" of a configuration
# error names the same line under both; where the real module has lines
# for features this one lacks (HTTP/3), the lines are here but blank or
# comments.
sub write_config_file ($$$) {
    my ($block, $config, $rand_ports) = @_;
    my $name = $block->name;

    my $http_config = expand_env_in_text($block->http_config, $name,
                                         $rand_ports);
    $http_config = '' unless defined $http_config;
    $config = '' unless defined $config;

    my $main_config = expand_env_in_text($block->main_config, $name,
                                         $rand_ports);
    $main_config = '' unless defined $main_config;

    # load_module lines come before main_config (whose stream {} etc. may
    # need the modules), all on one line
    my $load_modules = '';
    if ($LoadModules) {
        $load_modules = join ' ', map { "load_module $_;" } grep { $_ }
                        split /\s+/, $LoadModules;
    }

    my $post_main_config = expand_env_in_text($block->post_main_config,
                                              $name, $rand_ports);
    $post_main_config = '' unless defined $post_main_config;

    # (the real module writes postpone_output only in its HUP mode; here
    # it is kept on the access_log line so that no line moves)
    my $extra_http = '';
    my $postpone = $PostponeOutput;
    undef $postpone if $http_config =~ /\bpostpone_output\b/;
    if (defined $postpone) {
        $postpone =~ /^\d+$/
            or bail_out("Bad TEST_NGINX_POSTPONE_OUTPUT value: $postpone\n");
        $extra_http = " postpone_output $postpone;";
    }

    my $err_log_file = $block->error_log_file || $ErrLogFile;
    $err_log_file = expand_env_in_text($err_log_file, $name, $rand_ports);
    my $server_name = $block->server_name;
    $server_name = $ServerName unless defined $server_name;
    my $listen_opts = $ReusePort ? ' reuseport' : '';
    my $temp_paths = temp_path_directives($http_config);

    my $env = '';
    for my $v (qw(MOCKEAGAIN_VERBOSE MOCKEAGAIN
                  MOCKEAGAIN_WRITE_TIMEOUT_PATTERN LD_PRELOAD LD_LIBRARY_PATH
                  DYLD_INSERT_LIBRARIES DYLD_FORCE_FLAT_NAMESPACE))
    {
        $env .= "env $v;\n";
    }
    for my $v (@EnvToNginx) {
        $env .= $v =~ /\s/ ? "env '$v';\n" : "env $v;\n";
    }

    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_

    my $events_use = $EventType ? "    use $EventType;\n" : '';

    my $user = '';
    if (defined $WorkerUser) {
        $user = "user $WorkerUser;\n";
    } elsif ($> == 0) {
        $user = "user root;\n";
    }

    # under valgrind nginx stays in the foreground as our child
    my $daemon = $UseValgrind ? 'off' : $DaemonEnabled;

    open my $out, '>', $ConfFile
        or bail_out("Can't open $ConfFile for writing: $!\n");
    print $out <<"_EOC_";
worker_processes  $Workers;
daemon $daemon;
master_process $MasterProcessEnabled;
error_log $err_log_file $LogLevel;
pid       $PidFile;
$env# (LUA_PATH)
# (LUA_CPATH)
$load_modules
$main_config

http {
    access_log $AccLogFile; $temp_paths$extra_http
    # (access log)

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          $ServerPort$listen_opts;
        # (HTTP/3 listen)
        server_name     '$server_name';
        # (HTTP/3 TLS)
        client_max_body_size 30M;
        # (client_body_buffer_size)

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

# (timer_resolution)

events {
    accept_mutex off;

    worker_connections  $WorkerConnections;
$events_use}
env ASAN_OPTIONS;
env MOCKNOEAGAIN_VERBOSE;
env MOCKNOEAGAIN;
_EOC_
    print $out $user;
    close $out;
}

# ---------------------------------------------------------------------------
# log files

sub _read_lines_from ($$) {
    my ($file, $use_pos) = @_;
    open my $in, '<', $file or return undef;
    if ($use_pos && !$CheckAccumErrLog && $ErrLogFilePos > 0) {
        seek $in, $ErrLogFilePos, 0;
    }
    my @lines = <$in>;
    if ($use_pos && !$CheckAccumErrLog) {
        $ErrLogFilePos = tell $in;
    }
    close $in;
    return \@lines;
}

# The error.log lines written since the last call (or all of them after
# check_accum_error_log()).
sub error_log_data () {
    # give nginx's log phase (after the connection is closed) a moment
    sleep $TestNginxSleep * 3;
    return _read_lines_from($ErrLogFile, 1);
}

sub access_log_data () {
    sleep $TestNginxSleep * 3;
    my $lines = _read_lines_from($AccLogFile, 0);
    die "open $AccLogFile failed: $!" unless $lines;
    return $lines;
}

sub check_prev_block_shutdown_error_log () {
    my $block = $PrevBlock;
    return unless defined $block
                  && (defined $block->shutdown_error_log
                      || defined $block->no_shutdown_error_log);
    $CheckShutdownErrorLog->($block, $ENV{TEST_NGINX_NO_CLEAN} ? 1 : 0);
}

# ---------------------------------------------------------------------------
# starting and stopping nginx

sub stop_nginx_from_pidfile ($) {
    my $name = shift;
    return unless -f $PidFile;

    my $pid = get_pid_from_pidfile($name);
    if ($pid ne '' && is_running($pid)) {
        kill_process($pid, 1, $name);
    }
    if (-f $PidFile) {
        unlink $PidFile
            or warn "WARNING: failed to remove pid file $PidFile\n";
    }
}

sub valgrind_command ($) {
    my $cmd = shift;
    my $log = $ValgrindFail ? " --log-file=$LogDir/valgrind.%p.log" : '';

    if ($UseValgrind =~ /^\d+$/) {
        my $opts = "--tool=memcheck --leak-check=full "
                   . "--show-possibly-lost=no --keep-debuginfo=yes";
        my $supp = '';
        for my $f ('valgrind.suppress', 't/valgrind.suppress') {
            if (-f $f) {
                $supp = ' --suppressions=' . File::Spec->rel2abs($f);
                last;
            }
        }
        return "valgrind --num-callers=100 -q $opts --gen-suppressions=all"
               . "$supp$log $cmd";
    }

    return "valgrind -q $UseValgrind$log $cmd";
}

# Start nginx.  Returns nothing; handles --- must_die itself (returns 1
# then, meaning "the block is done").
sub start_nginx ($$$) {
    my ($block, $name, $must_die) = @_;

    can_run($NginxBinary)
        or bail_out("$name - Cannot find the nginx executable in the PATH "
                    . "environment");

    # "-e" (nginx 1.19.5+) sends the errors nginx logs before it has read
    # its error_log directive, configuration errors among them, to the
    # server root's error.log, where --- error_log looks, whatever path
    # nginx was built with (Debian's: stderr).  The real module (0.33) does
    # the same.
    my $elog = defined $NginxVersion && $NginxVersion >= 1.019005
               ? " -e $ErrLogFile" : '';
    my $cmd = "$NginxBinary$elog -p $ServRoot/ -c $ConfFile > /dev/null";

    if ($UseValgrind && !defined $must_die) {
        $cmd = valgrind_command($cmd);
        warn "$name\n";
        my $pid = fork();
        defined $pid or bail_out("$name - fork() failed: $!");
        if ($pid == 0) {
            setpgrp;
            $InSubprocess = 1;
            Test::More->builder->no_ending(1);
            warn "command: $cmd\n" if $Verbose;
            exec "exec $cmd" or POSIX::_exit(127);
        }
        $ChildPid = $pid;
        sleep $TestNginxSleep;
        return 0;
    }

    # nginx's own stderr (startup warnings and errors, which it prints
    # there too) is captured and passed on to our stderr unless the block
    # has --- suppress_stderr.
    my $full = "$cmd 2> $StartupStderrFile";
    my $waited = 0;
    my $tries = 0;

    for (my $i = 0; ; ) {
        system($full);
        my $status = $?;
        my $stderr = _slurp($StartupStderrFile);
        print STDERR $stderr
            if length $stderr && !defined $block->suppress_stderr;

        my ($exec_failed, $coredump, $exit_code);
        if ($status == -1) {
            $exec_failed = 1;
        } else {
            $exit_code = $status >> 8;
            $coredump = $status & 128;
        }

        if (defined $must_die) {
            if ($exec_failed) {
                Test::More::fail("$name - failed to execute the nginx "
                                 . "command line");
            } elsif ($coredump) {
                Test::More::fail("$name - nginx core dumped");
            } elsif (looks_like_number($must_die)) {
                Test::More::is($must_die, $exit_code,
                               "$name - die with the expected exit code");
            } else {
                Test::More::isnt($status, 0, "$name - die as expected");
            }

            $CheckErrorLog->($block, undef, 0, $i, 0);

            if ($status == 0) {
                warn "WARNING: $name - nginx must die but it does not; "
                     . "killing it (req $i)\n";
                for (1 .. 15) {
                    last if -f $PidFile;
                    sleep $TestNginxSleep;
                }
                stop_nginx_from_pidfile($name);
            }

            next if ++$i < $RepeatEach;
            return 1;
        }

        return 0 if $status == 0;

        if ($ENV{TEST_NGINX_IGNORE_MISSING_DIRECTIVES}) {
            my $log = (_slurp($ErrLogFile) || '') . $stderr;
            if ($log =~ /\[emerg\] \S+?: unknown directive "([^"]+)"/) {
                $block->{_dry_run} = "the lack of directive $1";
                return 0;
            }
        }

        # An error in nginx.conf will not go away by itself: no point in
        # retrying for 30 seconds as for a port still in use.
        if ($stderr =~ /\[emerg\].* in \Q$ConfFile\E:\d+/) {
            bail_out("$name - Cannot start nginx using command \"$cmd\" "
                     . "(status code $status).");
        }

        $tries++;
        my $delay = 0.1 * $tries;
        $delay = 1 if $delay > 1;
        sleep $delay;
        $waited += $delay;
        next if $waited < 30;

        bail_out("$name - Cannot start nginx using command \"$cmd\" "
                 . "(status code $status).");
    }
}

sub _slurp {
    my $file = shift;
    open my $in, '<', $file or return '';
    local $/;
    my $s = <$in>;
    close $in;
    return defined $s ? $s : '';
}

# Under valgrind nginx is stopped after every block, so that its report
# belongs to that block.
sub stop_valgrind_nginx ($) {
    my $name = shift;

    if (-f $PidFile) {
        my $pid = get_pid_from_pidfile($name);
        if ($pid ne '' && is_running($pid)) {
            kill SIGQUIT, $pid;
        }
    }

    if (defined $ChildPid) {
        # leak checking at exit takes valgrind a while
        my $left = timeout() > 10 ? timeout() : 10;
        while ($left > 0 && is_running($ChildPid)) {
            sleep 0.05;
            $left -= 0.05;
        }
        if (is_running($ChildPid)) {
            warn "$name - timeout when waiting for the process $ChildPid "
                 . "to exit\n";
            kill SIGKILL, -$ChildPid;
            waitpid($ChildPid, 0);
        }
        undef $ChildPid;
    }

    unlink $PidFile if -f $PidFile;

    if ($ValgrindFail) {
        my $report = '';
        for my $f (glob "$LogDir/valgrind.*.log") {
            $report .= _slurp($f);
            unlink $f;
        }
        print STDERR $report if length $report;
        Test::More::ok($report !~ /\S/,
                       "$name - valgrind reported no errors");
    }
}

# ---------------------------------------------------------------------------
# the embedded TCP server of --- tcp_listen

sub start_tcp_server ($$$) {
    my ($block, $name, $rand_ports) = @_;

    my $target = expand_env_in_text($block->tcp_listen, $name, $rand_ports);
    my $reply = $block->tcp_reply;
    if (!defined $reply && !defined $block->tcp_shutdown) {
        bail_out("$name - no --- tcp_reply specified but --- tcp_listen "
                 . "is specified");
    }

    my $req_len = $block->tcp_query_len;
    my $query_file;
    if (defined $block->tcp_query || defined $req_len) {
        $req_len = length $block->tcp_query unless defined $req_len;
        (undef, $query_file) = File::Temp::tempfile('tcp-query-XXXXXX',
                                                    TMPDIR => 1,
                                                    UNLINK => 1);
    }

    my ($sock, $err);
    for my $try (1 .. 30) {
        if ($target =~ /^\d+$/) {
            $sock = IO::Socket::INET->new(LocalHost => '127.0.0.1',
                                          LocalPort => $target,
                                          Proto => 'tcp',
                                          ReuseAddr => 1,
                                          Listen => 5);
        } elsif ($target =~ /\S+\.sock$/) {
            unlink $target if -e $target;
            $sock = IO::Socket::UNIX->new(Local => $target,
                                          Type => SOCK_STREAM,
                                          Listen => 5);
        } else {
            bail_out("$name - bad tcp_listen target: $target");
        }
        last if $sock;
        $err = $!;
        last unless $err =~ /address already in use/i;
        warn "WARNING: failed to create the tcp listening socket: $err\n";
        sleep 1;
    }
    $sock or bail_out("$name - failed to create the tcp listening socket: "
                      . "$err");

    my $pid = fork();
    defined $pid or bail_out("$name - fork() failed: $!");

    if ($pid == 0) {
        $InSubprocess = 1;
        Test::More->builder->no_ending(1);
        tcp_server_child($block, $name, $sock, $reply, $req_len,
                         $query_file);
        POSIX::_exit(0);
    }

    $TcpServerPid = $pid;
    return ($sock, $query_file);
}

# One connection: optionally shut a direction down, read the query (one
# read, or until tcp_query_len bytes), wait tcp_reply_delay, send the reply
# (a string, an array of strings sent one after the other, or a sub that
# gets the query and returns either), then close unless tcp_no_close.
sub tcp_server_child {
    my ($block, $name, $sock, $reply, $req_len, $query_file) = @_;
    local $| = 1;
    $SIG{PIPE} = 'DEFAULT';

    my $client;
    until ($client = $sock->accept) {
        warn "WARNING: $name - TCP server: failed to accept: $!\n";
        sleep $TestNginxSleep;
    }

    my ($no_read, $no_write);
    if (defined $block->tcp_shutdown) {
        my $how = $block->tcp_shutdown;
        $how = 0 unless length $how;
        sleep parse_time($block->tcp_shutdown_delay)
            if $block->tcp_shutdown_delay;
        $client->shutdown($how);
        if ($how == 0 || $how == 2) {
            $no_read = 1;
        } else {
            $no_write = 1;
        }
    }

    my $buf = '';
    unless ($no_read) {
        while (1) {
            my $n = sysread($client, my $b, 4096);
            if (!defined $n) {
                next if $!{EINTR};
                die "failed to receive: $!\n";
            }
            last if $n == 0;
            $buf .= $b;
            if ($query_file && open my $out, '>', $query_file) {
                binmode $out;
                print $out $buf;
                close $out;
            }
            last if !$req_len || length($buf) >= $req_len;
        }
    }

    my $delay = parse_time($block->tcp_reply_delay);
    sleep $delay if $delay;

    if (!$no_write && defined $reply) {
        if (ref $reply eq 'CODE') {
            $reply = $reply->($buf);
        }
        my @pieces;
        if (ref $reply) {
            ref $reply eq 'ARRAY' or bail_out('bad --- tcp_reply value');
            @pieces = @$reply;
        } else {
            @pieces = ($reply);
        }
        for my $piece (@pieces) {
            my $bytes = $client->send($piece);
            warn "WARNING: tcp server failed to send reply: $!\n"
                unless defined $bytes;
        }
    }

    if (defined $block->tcp_no_close) {
        sleep 1 while 1;
    }

    $client->close;
    $sock->close;
}

sub run_tcp_server_tests ($$$) {
    my ($block, $sock, $query_file) = @_;
    return unless defined $sock;
    my $name = $block->name;

    my $buf = $query_file ? _slurp($query_file) : '';

    if (defined $block->tcp_query) {
        is_str($buf, $block->tcp_query, "$name - tcp_query ok");
    }
    if (defined $block->tcp_query_len) {
        Test::More::is(length($buf), $block->tcp_query_len,
                       "$name - TCP query length ok");
    }
}

# ---------------------------------------------------------------------------
# running the blocks

sub run_tests () {
    $NginxVersion = get_nginx_version();

    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort
        unless defined $ENV{TEST_NGINX_SERVER_PORT};
    $ENV{TEST_NGINX_STREAM_PORT} = $ServerPort + 1
        unless defined $ENV{TEST_NGINX_STREAM_PORT};

    my @blocks = Test::Nginx::Socket::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value('name', $0 . ' ' . $block->name);
        run_test($block);
        $_->($block) for @TestCleanupHandlers;
        $PrevBlock = $block;
    }

    cleanup();
}

# The "skip_*" and "todo" sections: returns (count, should_skip, reason,
# should_todo, todo_reason).
sub skip_and_todo ($$) {
    my ($block, $name) = @_;
    my ($count, $skip, $reason, $todo, $todo_reason);

    if (defined(my $spec = $block->skip_eval)) {
        if ($spec =~ /^\s*(\d+)\s*:\s*(.*)/s) {
            ($count, $reason) = ($1, 'skip_eval');
            my $code = $2;
            $skip = eval $code;
            bail_out("$name - skip_eval - failed to eval the Perl code "
                     . "\"$code\": $@") if $@;
        }
    }

    my $ver = qr/([<>]=?)\s*(\d+)\.(\d+)\.(\d+)/;
    my $cmp = sub {
        my ($op, @v) = @_;
        return 1 if !defined $NginxVersion && $op =~ /^</;
        return defined $NginxVersion
               && eval "$NginxVersion $op " . get_canon_version(@v);
    };

    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*$ver(?:\s*:\s*(.*))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        $count = $1;
        $reason = $6 || "nginx version $2 $3.$4.$5";
        $skip = 1 if $cmp->($2, $3, $4, $5);

    } elsif (defined(my $spec2 = $block->skip_nginx2)) {
        $spec2 =~ /^\s*(\d+)\s*:\s*$ver\s*(or|and)\s*$ver(?:\s*:\s*(.*))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx2 spec: $spec2");
        $count = $1;
        $reason = $11;
        my $x = $cmp->($2, $3, $4, $5);
        my $y = $cmp->($7, $8, $9, $10);
        $skip = 1 if !defined $NginxVersion
                     || ($6 eq 'or' ? ($x || $y) : ($x && $y));
    }

    if (defined(my $spec = $block->todo)) {
        $spec =~ /^\s*(\d+)\s*:\s*(.*)/s
            or bail_out("$name - Invalid --- todo spec: $spec");
        ($todo, $count, $todo_reason) = (1, $1, $2);
    }

    $reason = 'various reasons' unless defined $reason;
    $todo_reason = 'various reasons' unless defined $todo_reason;
    return ($count, $skip, $reason, $todo, $todo_reason);
}

sub run_test ($) {
    my $block = shift;
    return if defined $block->SKIP;

    my $name = $block->name;
    my $first_time = $FirstTime;
    undef $FirstTime;

    my $rand_ports = {};
    $RandPorts = $rand_ports;
    my $config = expand_env_in_text($block->config, $name, $rand_ports);

    local $LogLevel = $block->log_level || $LogLevel;
    my $must_die = $block->must_die;
    local $UseValgrind = defined $must_die ? undef : $UseValgrind;

    my $should_restart;
    if (!defined $config) {
        if (!$NoNginxManager && !defined $PrevConfig) {
            bail_out("$name - No '--- config' section specified and could "
                     . "not get previous one. Use "
                     . "TEST_NGINX_NO_NGINX_MANAGER ?");
        }
        # keep using the nginx started for an earlier block
        $should_restart = 0;
    } elsif ($NoNginxManager) {
        Test::More::diag("NO_NGINX_MANAGER activated: config for $name "
                         . "ignored");
        $should_restart = 0;
    } else {
        $should_restart = !defined $PrevConfig || $config ne $PrevConfig
                          || $ForceRestartOnTest;
    }

    my ($tests_to_skip, $should_skip, $skip_reason, $should_todo,
        $todo_reason) = skip_and_todo($block, $name);

    delete $block->{_dry_run};

    if (!$NoNginxManager && !$should_skip && $should_restart) {
        $PrevConfig = $config;

        stop_nginx_from_pidfile($name);
        check_prev_block_shutdown_error_log();

        setup_server_root($first_time);
        write_user_files($block, $rand_ports);
        write_config_file($block, $config, $rand_ports);

        $ErrLogFilePos = 0;
        return if start_nginx($block, $name, $must_die);
        sleep $TestNginxSleep;
    }

    my $dry_run = $block->{_dry_run} || 0;

    if ($block->init) {
        eval $block->init;
        bail_out("$name - init failed: $@") if $@;
    }

    $ErrLogFilePos = 0;
    for my $i (1 .. $RepeatEach) {
        warn "Run the test block $name ...\n" if $Verbose;

        my ($tcp_sock, $tcp_query_file);
        if (defined $block->tcp_listen) {
            ($tcp_sock, $tcp_query_file) = start_tcp_server($block, $name,
                                                            $rand_ports);
        }

        write_user_files($block, $rand_ports) if $i > 1;

        my $run = sub {
            $RunTestHelper->($block, $dry_run, $i - 1);
            run_tcp_server_tests($block, $tcp_sock, $tcp_query_file);
        };

        if ($should_skip && defined $tests_to_skip) {
            SKIP: {
                Test::More::skip("$name - $skip_reason", $tests_to_skip);
                $run->();
            }
        } elsif ($should_todo) {
            TODO: {
                Test::More::todo_skip("$name - $todo_reason",
                                      $tests_to_skip);
                $run->();
            }
        } else {
            $run->();
        }

        if (defined $tcp_sock) {
            if (defined $TcpServerPid) {
                kill_process($TcpServerPid, 1, $name, SIGTERM);
                undef $TcpServerPid;
            }
            $tcp_sock->close;
        }
    }

    if (my $total = $ENV{TEST_NGINX_ERROR_LOG}) {
        if (-s $ErrLogFile) {
            open my $out, '>>', $total
                or bail_out("Failed to append test case title to $total: "
                            . "$!\n");
            print $out "\n=== $0 $name\n", _slurp($ErrLogFile);
            close $out;
        }
    }

    if ($UseValgrind) {
        stop_valgrind_nginx($name);
    }
}

END {
    return if $InSubprocess;

    local $?;    # keep the exit status Test::Builder has chosen

    cleanup();

    if ($UseValgrind || !$ENV{TEST_NGINX_NO_CLEAN}) {
        if (defined $PidFile && -f $PidFile) {
            my $pid = get_pid_from_pidfile('END');
            if ($pid ne '' && is_running($pid)) {
                kill_process($pid, 1, 'END');
            } else {
                unlink $PidFile;
            }
        }
    }

    check_prev_block_shutdown_error_log();
}

1;
