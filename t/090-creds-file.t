# replay_s3_credentials file=PATH and env: credentials a secrets agent
# writes (here, key pairs the S3 server mints and revokes), read by the
# master at startup and by a worker again whenever the file changes, with
# no reload.  "--- before" sets things up before a block's nginx starts;
# "--- after_request" rotates the file between requests and checks the
# logs at the end.

use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use ReplayTest;
use AwsCreds;
use POSIX ();

AwsCreds::init();

sub pause { AwsCreds::pause(@_) }

sub creds_file { "$Test::Nginx::Util::ServRoot/html/agent.creds" }

our (%pair, $s3_from, $expires);

# a file as a secrets agent writes it, of a pair just minted
sub agent_file {
    my ($name, %opt) = @_;

    my $p = $pair{$name} = AwsCreds::mint($opt{ttl} // 3600);
    my $text = "[default]\n"
               . "aws_access_key_id = $p->{AccessKeyId}\n"
               . "aws_secret_access_key = $p->{SecretAccessKey}\n"
               . "aws_session_token = $p->{SessionToken}\n";

    # the agent may say they expire sooner than they do
    if ($opt{expiry}) {
        $expires = $opt{expires_in} ? time + $opt{expires_in}
                                    : time + ($opt{ttl} // 3600);
        $text .= "x_security_token_expires = "
                 . POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $expires)
                 . "\n";
    }

    return $text;
}

sub rotate {
    my ($name, %opt) = @_;
    AwsCreds::write_file(creds_file(), agent_file($name, %opt));
}

sub mark { $s3_from = AwsCreds::s3_log_size() }

sub keys_since { return AwsCreds::s3_keys($s3_from) }

sub clean {
    my ($n) = @_;
    AwsCreds::no_secrets_in_logs("TEST $n");
}

# the block's first file, in --- user_files ($TEST_NGINX_AGENT_FILE is
# expanded as the block starts, after the server root is made anew)
sub first {
    my (%opt) = @_;
    return sub {
        mark();
        $ENV{TEST_NGINX_AGENT_FILE} = agent_file('A', %opt);
    };
}

# env: a pair of its own, expiring; then the suite's keys back
sub env_expiring {
    my $p = $pair{E} = AwsCreds::mint(12 * $AwsCreds::SLOW);
    $expires = time + 12 * $AwsCreds::SLOW;
    $ENV{AWS_ACCESS_KEY_ID_SAVED} = $ENV{AWS_ACCESS_KEY_ID};
    $ENV{AWS_SECRET_ACCESS_KEY_SAVED} = $ENV{AWS_SECRET_ACCESS_KEY};
    $ENV{AWS_ACCESS_KEY_ID} = $p->{AccessKeyId};
    $ENV{AWS_SECRET_ACCESS_KEY} = $p->{SecretAccessKey};
    $ENV{AWS_SESSION_TOKEN} = $p->{SessionToken};
    $ENV{AWS_CREDENTIAL_EXPIRATION} = $p->{Expiration};
}

sub env_bad_expiry {
    $ENV{AWS_ACCESS_KEY_ID} = delete $ENV{AWS_ACCESS_KEY_ID_SAVED};
    $ENV{AWS_SECRET_ACCESS_KEY} = delete $ENV{AWS_SECRET_ACCESS_KEY_SAVED};
    delete $ENV{AWS_SESSION_TOKEN};
    $ENV{AWS_CREDENTIAL_EXPIRATION} = 'tomorrow';
}

sub t1_rotate {
    rotate('B');
    AwsCreds::revoke($pair{A}{AccessKeyId});
    pause(2.5);
}

sub t1_check {
    my @k = keys_since();
    Test::More::is("@k", "$pair{A}{AccessKeyId} $pair{B}{AccessKeyId}",
                   'TEST 1: the rotated pair signs, no reload');
    AwsCreds::log_like(qr/\[info\] .*replay: AWS credentials from file \(nginx.conf:\d+\) read again: ".*agent\.creds" has changed$/,
                       'TEST 1: the new file is logged');
    clean(1);
}

sub t2_rewrite {
    # the same file (inode) written again, as "cat > file" does
    open my $fh, '>', creds_file() or die $!;
    print $fh agent_file('C');
    close $fh;
    pause(2.5);
}

sub t3_half_written {
    mark();
    AwsCreds::write_file(creds_file(), "[default]\n"
                         . "aws_access_key_id = ASIAHALFWRITTEN\n"
                         . "this line holds the secret mintSECRETx\n");
    pause(3.5);
}

sub t3_check {
    my @k = keys_since();
    Test::More::is("@k", "$pair{A}{AccessKeyId} $pair{D}{AccessKeyId}",
                   'TEST 3: the held pair signs until a good file comes');
    Test::More::is(AwsCreds::log_count(qr/\[error\] .*replay: refreshing AWS credentials from file \(nginx.conf:\d+\) failed: credentials file ".*agent\.creds", line 3: "name = value" expected; those held do not expire, next try in 1s$/),
                   1, 'TEST 3: the bad file is logged once, by line, '
                   . 'without its text');
    clean(3);
}

# "--- s3_requests": S3 saw a GET signed with each pair named, in turn
sub s3_gets {
    my @names = @_;
    return AwsCreds::s3_gets(sub { map { $pair{$_}{AccessKeyId} } @names },
                             0 .. $#names);
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a rotated file is read again, no reload: the new pair signs (the old one is revoked)
--- before eval
main::first()
--- after_request eval
[\&main::t1_rotate, \&main::t1_check]
--- user_files
>>> agent.creds
$TEST_NGINX_AGENT_FILE
--- creds: file=../html/agent.creds check=1s
--- request eval
["GET /s3", "GET /s3"]
--- response_body eval
["bucket=replays key=games/1/replay.bin\n",
 "bucket=replays key=games/1/replay.bin\n"]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
main::s3_gets(qw(A B))




=== TEST 2: a file written in place (same inode) is read again too
--- before eval
main::first()
--- after_request eval
[\&main::t2_rewrite, sub { main::clean(2) }]
--- user_files
>>> agent.creds
$TEST_NGINX_AGENT_FILE
--- creds: file=../html/agent.creds check=1s
--- request eval
["GET /s3", "GET /status?format=json"]
--- response_body_like eval
[qr/^bucket=replays/,
 qr/"replay_credentials":\[\{"source":"file","config":"nginx.conf:\d+","valid":true,"expires":0,"last_refresh":\d+,"next_refresh":\d+,"refreshes":2,"failures":0,/]
--- no_error_log
mintSECRET
[error]
--- s3_requests eval
main::s3_gets(qw(A))




=== TEST 3: a file half written is refused (logged once, by line, not its text), the held pair kept; the next good one is read
--- before eval
main::first()
--- after_request eval
[\&main::t3_half_written, sub { main::rotate('D'); main::pause(2.5) },
 \&main::t3_check]
--- user_files
>>> agent.creds
$TEST_NGINX_AGENT_FILE
--- creds: file=../html/agent.creds check=1s
--- request eval
["GET /s3", "GET /s3", "GET /s3"]
--- error_code eval
[200, 200, 200]
--- no_error_log
mintSECRET
--- s3_requests eval
main::s3_gets(qw(A A D))
--- error_log_at_end eval
qr/\[error\] .*replay: refreshing AWS credentials from file \(nginx.conf:\d+\) failed: credentials file ".*agent\.creds", line 3: "name = value" expected; those held do not expire, next try in 1s$/




=== TEST 4: a file that says when it expires (x_security_token_expires): expired and not rotated, 503; rotated, served again
--- before eval
main::first(ttl => 60, expiry => 1, expires_in => 12 * $AwsCreds::SLOW)
--- after_request eval
[
    # once not used any more (2 s before they expire)
    sub { AwsCreds::pause_until($main::expires - 1) },
    sub { main::rotate('F', ttl => 3600, expiry => 1); main::pause(2.5) },
    sub {
        AwsCreds::log_like(qr/\[error\] .*replay: no AWS credentials to sign with: those from file \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), and none newer came, client: /,
                           'TEST 4: the 503 is logged, with why');
        main::clean(4);
    },
]
--- user_files
>>> agent.creds
$TEST_NGINX_AGENT_FILE
--- creds: file=../html/agent.creds check=1s
--- request eval
["GET /s3", "GET /s3", "GET /s3"]
--- error_code eval
[200, 503, 200]
--- response_headers_like eval
["", "Retry-After: [1-9][0-9]*", ""]
--- no_error_log
mintSECRET
--- s3_requests eval
main::s3_gets(qw(A F))
--- error_log_at_end eval
qr/\[error\] .*replay: no AWS credentials to sign with: those from file \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), and none newer came, client: /




=== TEST 5: an expiry that is not a time is refused, by line
--- user_files
>>> bad.creds
aws_access_key_id = ASIAEXAMPLE
aws_secret_access_key = x
aws_expiration = soon
--- creds: file=../html/bad.creds
--- must_die
--- error_log
bad.creds", line 3: the expiration is not a time like 2024-01-31T12:00:00Z



=== TEST 6: env with AWS_CREDENTIAL_EXPIRATION: served until then, 503 after
--- before eval
\&main::env_expiring
--- after_request eval
[sub { AwsCreds::pause_until($main::expires - 1) }, sub {
    AwsCreds::log_like(qr/replay: no AWS credentials to sign with: those from env \(nginx.conf:\d+\) are no longer valid/,
                       'TEST 6: env\'s expiry is kept to');
}]
--- creds: env
--- request eval
["GET /s3", "GET /s3"]
--- error_code eval
[200, 503]
--- no_error_log
mintSECRET
--- s3_requests eval
main::s3_gets(qw(E))
--- error_log_at_end eval
qr/\[error\] .*replay: no AWS credentials to sign with: those from env \(nginx.conf:\d+\) are no longer valid \(they expire at \S+Z\), and none newer came, client: /




=== TEST 7: AWS_CREDENTIAL_EXPIRATION that is not a time
--- before eval
\&main::env_bad_expiry
--- creds: env
--- must_die
--- error_log
replay_s3_credentials env: AWS_CREDENTIAL_EXPIRATION "tomorrow" is not a time like 2024-01-31T12:00:00Z
