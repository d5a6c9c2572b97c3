# Redirect mode: a presigned URL instead of the body.  The URL is fetched
# straight from the S3 server with curl: the right bytes, and 403 once
# tampered with.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

# Blocks with "--- presigned_key" answer with their presigned URL as the
# body (error_page, below); fetch it as a client would.
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated, $dry_run) = @_;

    my $key = $block->presigned_key;
    return if !defined $key || $dry_run;

    my $name = $block->name;
    chomp(my $url = $body // '');

    my ($code, $got) = ReplayTest::curl_get($url);
    is($code, 200, "$name - curl gets the presigned URL");
    ok($got eq ReplayTest::fixture($key),
       "$name - curl gets the object's bytes");

    # one hex digit of the signature changed
    (my $bad = $url) =~ s/(X-Amz-Signature=[0-9a-f]{10})([0-9a-f])/
        $1 . ($2 eq '0' ? '1' : '0')/e;
    isnt($bad, $url, "$name - the URL was tampered with");
    ($code) = ReplayTest::curl_get($bad);
    is($code, 403, "$name - the tampered URL is refused");

    # another object under the same signature
    (my $other = $url) =~ s{/replays/[^?]+}{/replays/games/2/replay.bin};
    ($code) = ReplayTest::curl_get($other);
    is($code, 403, "$name - the signature does not open another key");
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: 302 with a presigned Location, not cacheable
--- config
    location /link {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_redirect        on;
    }
--- request
GET /link
--- error_code: 302
--- response_headers
Cache-Control: no-store
--- response_headers_like
Location: ^http://127\.0\.0\.1:\d+/replays/games/1/replay\.bin\?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F\d{8}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=\d{8}T\d{6}Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=[0-9a-f]{64}$



=== TEST 2: 307 and a shorter expiry
--- config
    location /link {
        replay_s3_endpoint      $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket        replays;
        replay_s3_credentials   env;
        replay_s3_key           games/1/replay.bin;
        replay_redirect         307;
        replay_presign_expires  1m;
    }
--- request
GET /link
--- error_code: 307
--- response_headers_like
Location: .*&X-Amz-Expires=60&.*



=== TEST 3: the presigned URL works from curl; tampered, it does not
--- config
    location /link {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_redirect        302;
        error_page 302 = /show-location;
    }
    location = /show-location {
        internal;
        return 200 "$sent_http_location\n";
    }
--- request
GET /link
--- presigned_key: games/1/replay.bin
--- response_body_like chomp
^http://127\.0\.0\.1:\d+/replays/games/1/replay\.bin\?X-Amz-



=== TEST 4: the 50 MiB object through its presigned URL
--- config
    location /link {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          big/50mib.bin;
        replay_redirect        302;
        error_page 302 = /show-location;
    }
    location = /show-location {
        internal;
        return 200 "$sent_http_location\n";
    }
--- request
GET /link
--- presigned_key: big/50mib.bin
--- response_body_like chomp
/replays/big/50mib\.bin\?



=== TEST 5: a key with special characters, presigned
--- config
    location /link {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $http_x_key;
        replay_redirect        302;
        error_page 302 = /show-location;
    }
    location = /show-location {
        internal;
        return 200 "$sent_http_location\n";
    }
--- request
GET /link
--- more_headers
X-Key: special/all !$&'()*+,;=:@~%?#.bin
--- presigned_key: special/all !$&'()*+,;=:@~%?#.bin
--- response_body_like chomp
/replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23\.bin\?



=== TEST 6: HEAD gets a URL presigned for HEAD
--- config
    location /link {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          games/1/replay.bin;
        replay_redirect        302;
    }
--- request
HEAD /link
--- error_code: 302
--- response_headers_like
Location: .*&X-Amz-Signature=[0-9a-f]{64}
