# A block that is wrong must fail.  Each case below is a pair of blocks on
# the stock nginx: one whose expectations are right, which must pass, and
# the same with one expectation wrong (status, body, header, raw header,
# error-log line, ...), which must fail with the subtest that names it.
# The second half does the same for what t/lib/ReplayTest.pm adds to every
# block of the suite: the S3 request log, the worker that must live through
# the block, no [error] line unless expected, the status counters.
#
# Each pair runs as a .t file of its own, in a child perl, with the same
# PERL5LIB: so this checks the bundled runner (make test-runner) and, with
# PERL5LIB=DIR/lib, the real Test::Nginx the same way.  From the top of the
# repository:
#
#   PERL5LIB=t/runner prove -v t/runner/selftest/

use strict;
use warnings;

use File::Temp ();
use Test::More;

my $dir = File::Temp::tempdir(CLEANUP => 1);

# the S3 request log ReplayTest reads: a file of our own, the lines a
# block's init writes into it stand for what S3 saw
my $s3_log = "$dir/s3-requests.log";
open my $fh, '>', $s3_log or die "$s3_log: $!";
close $fh;

my $n = 0;

# Runs one .t file made of $head and $blocks; returns (exit status, output).
sub run_file {
    my ($head, $blocks) = @_;

    my $file = sprintf "%s/case%02d.t", $dir, ++$n;

    open my $out, '>', $file or die "$file: $!";
    print $out $head, "no_shuffle();\nrun_tests();\n\n__DATA__\n\n", $blocks;
    close $out;

    local $ENV{TEST_NGINX_S3_LOG} = $s3_log;
    my $output = `$^X $file 2>&1`;
    return ($? >> 8, $output);
}

# $good must pass; $bad must fail, and a "not ok" line must match $why.
sub pair {
    my ($what, $head, $good, $bad, $why) = @_;

    my ($rc, $out) = run_file($head, $good);
    ok($rc == 0 && $out !~ /^not ok/m, "$what: the right block passes")
        or diag($out);

    ($rc, $out) = run_file($head, $bad);
    # (not the exit status: after a pattern fails twice the runners turn
    # Test::Builder's ending off, as the real one does, and it is 0)
    my @not_ok = $out =~ /^(not ok .*)$/mg;
    ok(grep({ /$why/ } @not_ok),
       "$what: the wrong one fails with \"$why\"")
        or diag($out);
}

my $plain = "use Test::Nginx::Socket 'no_plan';\n";
my $replay = "use lib 't/lib';\nuse Test::Nginx::Socket 'no_plan';\nuse ReplayTest;\n";

my $location = <<'EOF';
--- config
    location = /t {
        add_header X-A "one";
        error_log logs/error.log info;
        return 200 "hello\n";
    }
    location = /bad {
        return 404;
    }
    location = /status {
        return 200 "# HELP replay_x x\n# TYPE replay_x counter\nreplay_x 1\n";
    }
EOF

my $block = sub { "=== TEST 1: case\n$location--- request\nGET /t\n" . shift };

pair('a wrong status', $plain,
     $block->("--- error_code: 200\n"),
     $block->("--- error_code: 404\n"),
     qr/status code ok/);

pair('a wrong body', $plain,
     $block->("--- response_body\nhello\n"),
     $block->("--- response_body\nhello!\n"),
     qr/response_body - response is expected/);

pair('a body unlike the pattern', $plain,
     $block->("--- response_body_like: ^hel+o\$\n"),
     $block->("--- response_body_like: ^bye\n"),
     qr/response_body_like - response is expected/);

pair('a wrong header value', $plain,
     $block->("--- response_headers\nX-A: one\n"),
     $block->("--- response_headers\nX-A: two\n"),
     qr/header X-A ok/);

pair('a header that must be absent', $plain,
     $block->("--- response_headers\n!X-B\n"),
     $block->("--- response_headers\n!X-A\n"),
     qr/header X-A not present/);

pair('a header unlike the pattern', $plain,
     $block->("--- response_headers_like\nX-A: o.e\n"),
     $block->("--- response_headers_like\nX-A: t.o\n"),
     qr/header X-A like ok/);

pair('raw headers unlike the pattern', $plain,
     $block->("--- raw_response_headers_like: X-A: one\\r\\n\n"),
     $block->("--- raw_response_headers_like: X-A: two\\r\\n\n"),
     qr/raw resp headers like/);

pair('an error-log line that is not there', $plain,
     "=== TEST 1: case\n$location--- request\nGET /nope.html\n--- error_code: 404\n"
         . "--- error_log\nnope.html\n",
     "=== TEST 1: case\n$location--- request\nGET /nope.html\n--- error_code: 404\n"
         . "--- error_log\nno such line anywhere\n",
     qr/pattern "no such line anywhere" should match a line in error\.log/);

pair('an error-log line that must not be there', $plain,
     "=== TEST 1: case\n$location--- request\nGET /nope.html\n--- error_code: 404\n"
         . "--- no_error_log\nno such line anywhere\n",
     "=== TEST 1: case\n$location--- request\nGET /nope.html\n--- error_code: 404\n"
         . "--- no_error_log\nnope.html\n",
     qr/pattern "nope\.html" should not match any line in error\.log/);

pair('an access-log line that is not there', $plain,
     $block->("--- access_log\nGET /t HTTP/1.1\n"),
     $block->("--- access_log\nGET /u HTTP/1.1\n"),
     qr/should match a line in access\.log/);

# what t/lib/ReplayTest.pm adds

# an init that writes one line to the S3 request log, as S3 would
my $s3_line = sub {
    my ($url, %e) = @_;

    my $json = sprintf '{"method":"GET","url":"%s","auth":"%s",'
                       . '"key":"AKIAIOSFODNN7EXAMPLE","status":%d}',
                       $url, $e{auth} // 'AWS4-HMAC-SHA256', $e{status} // 200;

    return "--- init\n"
           . "open my \$l, '>>', \$ENV{TEST_NGINX_S3_LOG} or die;\n"
           . "print \$l q|$json|, \"\\n\";\n"
           . "close \$l;\n";
};

pair('ReplayTest: a request S3 saw that the block does not list', $replay,
     $block->($s3_line->('/replays/a') . "--- s3_requests\nGET /replays/a\n"),
     $block->($s3_line->('/replays/a')),
     qr/S3 was not asked/);

pair('ReplayTest: a request listed that S3 did not see', $replay,
     $block->($s3_line->('/replays/a') . "--- s3_requests\nGET /replays/a\n"),
     $block->($s3_line->('/replays/a') . "--- s3_requests\nGET /replays/b\n"),
     qr/S3 saw the requests listed and no other/);

pair('ReplayTest: a request S3 refused as unsigned', $replay,
     $block->($s3_line->('/replays/a') . "--- s3_requests\nGET /replays/a\n"),
     $block->($s3_line->('/replays/a', auth => 'anonymous', status => 403)
              . "--- s3_requests\nGET /replays/a\n"),
     qr/S3 saw the requests listed and no other/);

pair('ReplayTest: a worker that dies during the block', $replay,
     $block->("--- after_request eval\n[sub { 1 }]\n"),
     $block->("--- after_request eval\n"
              . "[sub { kill 'SEGV', ReplayTest::worker_pid(); sleep 1 }]\n"),
     qr/nginx and its one worker lived through the block/);

pair('ReplayTest: an [error] line in a block that expects none', $replay,
     $block->(''),
     "=== TEST 1: case\n$location--- request\nGET /nope.html\n--- error_code: 404\n",
     qr/pattern "\[error\]" should not match any line in error\.log/);

pair('ReplayTest: status counters of a response that is not the status', $replay,
     "=== TEST 1: case\n$location--- request\nGET /status\n"
         . "--- status_counters eval\n{ replay_x => 1 }\n",
     $block->("--- status_counters eval\n{ replay_x => 1 }\n"),
     qr/the last response is replay_status's Prometheus text/);

pair('ReplayTest: a status counter with another value', $replay,
     "=== TEST 1: case\n$location--- request\nGET /status\n"
         . "--- status_counters eval\n{ replay_x => 1 }\n",
     "=== TEST 1: case\n$location--- request\nGET /status\n"
         . "--- status_counters eval\n{ replay_x => 2 }\n",
     qr/ - replay_x$/);

done_testing();
