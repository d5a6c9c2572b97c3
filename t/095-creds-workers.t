# Two workers share one set of credentials through the replay_credentials
# zone: one of them (whichever takes the lease) refreshes, both sign with
# what it got.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;
use Time::HiRes ();

AwsCreds::start('imds');

master_on();
workers(2);

AwsCreds::init();

our @t1_s3;

# credentials living ttl_rotation(), refreshed after half of it, while
# requests come to both workers for 9 s (27 s under valgrind)
sub t1_load {
    AwsCreds::ready();
    my $from = AwsCreds::s3_log_size();
    my $until = Time::HiRes::time() + 8.5 * $AwsCreds::SLOW;
    my (@status, $n);

    while (Time::HiRes::time() < $until) {
        push @status, map { $_->[0] } ReplayTest::get_concurrently(
            [('/s3') x 8], discard => 1);
        Time::HiRes::sleep(0.25);
    }

    $n = grep { $_ != 200 } @status;
    Test::More::is($n, 0, 'TEST 1: ' . scalar(@status)
                   . ' requests, all 200');

    # contiguous runs: a key, once replaced, never signs again
    my @k = AwsCreds::s3_keys($from);
    my (%done, $cur, $back);
    for my $k (@k) {
        next if defined $cur && $k eq $cur;
        $back++ if $done{$k};
        $done{$cur} = 1 if defined $cur;
        $cur = $k;
    }
    Test::More::is(scalar @k, scalar @status,
                   'TEST 1: each request went to S3 once');

    # what S3 must have seen: each request signed with a key pair that
    # IMDS handed out (one of another kind stays unmatched)
    my %handed = map { ($_ => 1) } AwsCreds::handed_out('imds');
    @t1_s3 = map { 'GET /replays/games/1/replay.bin signed key='
                   . ($handed{$_} ? $_ : '(one IMDS handed out)') } @k;

    Test::More::ok(!$back, 'TEST 1: the workers signed with one '
                   . 'set at a time (' . scalar(keys %done) . ' '
                   . 'replaced)');

    my @t = map { $_->{time} }
            grep { $_->{step} eq 'credentials' }
            AwsCreds::requests('imds');
    Test::More::ok(@t >= 3 && @t <= 4, 'TEST 1: '
                   . scalar(@t) . ' fetches in 9 s for two '
                   . 'workers: one per refresh');
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: one refresh for both workers, both sign with the set it got
--- before eval
sub { AwsCreds::control('imds', reset => 1, ttl => AwsCreds::ttl_rotation()) }
--- config
    location /s3 {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  imds endpoint=$TEST_NGINX_IMDS_URL;
        replay_s3_key          games/1/replay.bin;
    }

    location = /status {
        replay_status;
    }
--- request eval
["GET /status", "GET /status?format=json"]
--- after_request eval
[\&main::t1_load]
--- response_body_like eval
[qr//, qr/"refreshes":[34],"failures":0,/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
sub { @main::t1_s3 }
