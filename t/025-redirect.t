# Redirect mode: a presigned URL instead of the body.  nginx does not ask
# S3; the URL is fetched straight from the S3 server with curl, as a client
# would: the right bytes, 403 once tampered with, once expired, or with
# another method than the one it was signed for.

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


# The Location a client gets for METHOD /link, asked with curl.
sub location_for {
    my ($method) = @_;

    my (undef, undef, $head) = ReplayTest::curl_get(
        "http://127.0.0.1:$Test::Nginx::Util::ServerPortForClient/link",
        $method);

    my ($url) = $head =~ /^Location: (\S+)\r?$/mi;
    return $url // '';
}


__DATA__

=== TEST 1: 302 with a presigned Location, not cacheable; S3 is not asked
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
--- raw_response_headers_like eval
qr{\r\nLocation: http://127\.0\.0\.1:\d+/replays/games/1/replay\.bin\?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F\d{8}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=\d{8}T\d{6}Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=[0-9a-f]{64}\r\n}
--- no_s3_request



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
--- no_s3_request



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
--- s3_requests
GET /replays/games/1/replay.bin presigned -> 200
GET /replays/games/1/replay.bin presigned -> 403 SignatureDoesNotMatch
GET /replays/games/2/replay.bin presigned -> 403 SignatureDoesNotMatch



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
--- s3_requests
GET /replays/big/50mib.bin presigned -> 200
GET /replays/big/50mib.bin presigned -> 403 SignatureDoesNotMatch
GET /replays/games/2/replay.bin presigned -> 403 SignatureDoesNotMatch



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
--- s3_requests
GET /replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23.bin presigned -> 200
GET /replays/special/all%20%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40~%25%3F%23.bin presigned -> 403 SignatureDoesNotMatch
GET /replays/games/2/replay.bin presigned -> 403 SignatureDoesNotMatch



=== TEST 6: HEAD gets a URL presigned for HEAD: curl's HEAD of it is served, a GET of it refused
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
--- raw_response_headers_like eval
qr{\r\nLocation: http://127\.0\.0\.1:\d+/replays/games/1/replay\.bin\?X-Amz-.*&X-Amz-Signature=[0-9a-f]{64}\r\n}
--- after_request eval
[sub {
    my $url = main::location_for('HEAD');
    my ($code, $body, $head) = ReplayTest::curl_get($url, 'HEAD');
    Test::More::is($code, 200, 'TEST 6: curl HEAD of the HEAD URL is served');
    Test::More::like($head, qr/^Content-Length: 38\r?$/mi,
                     'TEST 6: ... with the object\'s length');
    ($code) = ReplayTest::curl_get($url);
    Test::More::is($code, 403, 'TEST 6: a GET of the HEAD URL is refused');
}]
--- s3_requests
HEAD /replays/games/1/replay.bin presigned -> 200
GET /replays/games/1/replay.bin presigned -> 403 SignatureDoesNotMatch



=== TEST 7: a presigned URL works until it expires, then S3 refuses it
(X-Amz-Date has whole seconds: 2 s from signing is at least 1 s from now)
--- config
    location /link {
        replay_s3_endpoint      $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket        replays;
        replay_s3_credentials   env;
        replay_s3_key           games/1/replay.bin;
        replay_redirect         302;
        replay_presign_expires  2s;
        error_page 302 = /show-location;
    }
    location = /show-location {
        internal;
        return 200 "$sent_http_location\n";
    }
--- request
GET /link
--- response_body_like chomp
&X-Amz-Expires=2&
--- after_request eval
[sub {
    my ($block, $body) = @_;
    CORE::chomp(my $url = $body);
    my ($code) = ReplayTest::curl_get($url);
    Test::More::is($code, 200, 'TEST 7: served before it expires');
    Time::HiRes::sleep(3.1);
    ($code, my $xml) = ReplayTest::curl_get($url);
    Test::More::is($code, 403, 'TEST 7: refused after it expired');
    Test::More::like($xml, qr{<Message>Request has expired</Message>},
                     'TEST 7: ... because it expired');
}]
--- s3_requests
GET /replays/games/1/replay.bin presigned -> 200
GET /replays/games/1/replay.bin presigned -> 403 AccessDenied
