# Directives: what nginx -t accepts and what it refuses, with which message.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a minimal location loads and serves
--- config
    location ~ ^/r/(.+)$ {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $1;
    }
    location = /plain {
        return 200 "plain\n";
    }
--- request
GET /plain
--- response_body
plain



=== TEST 2: the endpoint needs a scheme
--- config
    location /r {
        replay_s3_endpoint     127.0.0.1:9000;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          x;
    }
--- must_die
--- error_log
replay_s3_endpoint "127.0.0.1:9000" must start with "http://" or "https://"



=== TEST 3: the endpoint takes no path
--- config
    location /r {
        replay_s3_endpoint     http://127.0.0.1:9000/bucket;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          x;
    }
--- must_die
--- error_log
must be a scheme and a host with an optional port, without a path



=== TEST 4: a bucket is required
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_credentials  env;
        replay_s3_key          x;
    }
--- must_die
--- error_log
is set but replay_s3_bucket is not



=== TEST 5: a key or a key query is required
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
    }
--- must_die
--- error_log
is set but neither replay_s3_key nor replay_key_query is



=== TEST 6: credentials are required
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_key          x;
    }
--- must_die
--- error_log
is set but replay_s3_credentials is not



=== TEST 7: a bucket name cannot smuggle a path or a host
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       "replays/../other";
        replay_s3_credentials  env;
        replay_s3_key          x;
    }
--- must_die
--- error_log
may hold only letters, digits, ".", "-" and "_"



=== TEST 8: unknown credentials source
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  inline;
        replay_s3_key          x;
    }
--- must_die
--- error_log
invalid parameter "inline", it must be "env", "file=PATH", "imds", "container", "web_identity" or "chain"



=== TEST 9: a missing credentials file is named
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=/nonexistent/replay.creds;
        replay_s3_key          x;
    }
--- must_die
--- error_log
open() "/nonexistent/replay.creds" failed



=== TEST 10: a malformed credentials file names the line, not its text
--- user_files
>>> bad.creds
[default]
aws_access_key_id = AKIDEXAMPLE
this line holds the secret wJalrXUtnFEMI
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/bad.creds;
        replay_s3_key          x;
    }
--- must_die
--- error_log
bad.creds", line 3: "name = value" expected
--- no_error_log
wJalrXUtnFEMI



=== TEST 11: a credentials file without a secret is refused
--- user_files
>>> half.creds
aws_access_key_id = AKIDEXAMPLE
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  file=../html/half.creds;
        replay_s3_key          x;
    }
--- must_die
--- error_log
both an access key id and a secret access key are needed



=== TEST 12: proxy_pass cannot be added to a replay location
--- config
    location /r {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          x;
        proxy_pass             http://127.0.0.1:1;
    }
--- must_die
--- error_log
"proxy_pass" directive is duplicate



=== TEST 13: replay_redirect takes off, on, 302 or 307
--- config
    location /r {
        replay_redirect  301;
    }
--- must_die
--- error_log
invalid value "301", it must be "off", "on", "302" or "307"



=== TEST 14: presigned URLs live at most seven days
--- config
    location /r {
        replay_presign_expires  8d;
    }
--- must_die
--- error_log
must be from 1s to 7d



=== TEST 15: addressing is path or virtual
--- config
    location /r {
        replay_s3_addressing  subdomain;
    }
--- must_die
--- error_log
invalid value "subdomain"



=== TEST 16: key and key query are exclusive
--- http_config
    replay_db "host=127.0.0.1 port=1 dbname=replay";
--- config
    location ~ ^/r/(.+)$ {
        replay_s3_endpoint     $TEST_NGINX_S3_ENDPOINT;
        replay_s3_bucket       replays;
        replay_s3_credentials  env;
        replay_s3_key          $1;
        replay_key_query       "SELECT key FROM games WHERE id = $1" $1;
    }
--- must_die
--- error_log
replay_s3_key and replay_key_query are both set
