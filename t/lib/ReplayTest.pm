package ReplayTest;

# What every .t of this suite shares, under the real Test::Nginx and our
# bundled runner alike: each block also asserts that the error log holds
# no [alert], [crit] or [emerg] line (a wrong r->main->count shows up only
# as "http request count is zero" alerts while responses look fine).

use strict;
use warnings;

use Test::Nginx::Socket ();

sub import {
    Test::Nginx::Socket::add_block_preprocessor(sub {
        my $block = shift;

        my $nel = $block->no_error_log;
        my @list;

        if (ref $nel eq 'ARRAY') {
            @list = @$nel;

        } elsif (defined $nel) {
            @list = grep { length } split /\n/, $nel;
        }

        # under valgrind nginx runs without t/bin/nginx, so its startup
        # errors reach only stderr, which Test::Nginx does not read: a
        # must_die block then checks only that nginx refuses to start
        if (defined $block->must_die && $ENV{TEST_NGINX_USE_VALGRIND}) {
            $block->set_value('error_log', undef);
        }

        push @list, '[alert]', '[crit]';
        push @list, '[emerg]' unless defined $block->must_die;

        $block->set_value('no_error_log', \@list);
    });
}

# The bytes of an object the services uploaded, from the local copy that
# t/services/up keeps (DIR/fixtures/keys.txt: "key<TAB>file").
sub fixture {
    my ($key, $list) = @_;

    my $dir = $ENV{TEST_NGINX_FIXTURES}
        or die "TEST_NGINX_FIXTURES is not set: run the suite with make test\n";

    $list //= 'keys.txt';

    open my $fh, '<', "$dir/$list" or die "$dir/$list: $!\n";

    while (my $line = <$fh>) {
        chomp $line;
        my ($k, $file) = split /\t/, $line, 2;
        next unless defined $file && $k eq $key;

        $file = "$dir/$file" unless $file =~ m{^/};
        open my $obj, '<:raw', $file or die "$file: $!\n";
        local $/;
        my $data = <$obj>;
        return defined $data ? $data : '';
    }

    die "no fixture for key \"$key\" in $dir/$list\n";
}

# GET a URL with curl, as a client following a redirect would; --path-as-is
# keeps "..", "//" as they are.  Returns the status and the body.
sub curl_get {
    my ($url) = @_;

    require File::Temp;
    my ($fh, $file) = File::Temp::tempfile(UNLINK => 1);
    close $fh;

    my $code = `curl -sS --path-as-is --max-time 30 -o '$file' -w '%{http_code}' '$url'`;

    open my $in, '<:raw', $file or die "$file: $!\n";
    local $/;
    my $body = <$in>;

    return ($code, defined $body ? $body : '');
}

# The ETag S3 gives an object uploaded in one piece: its quoted MD5.
sub etag {
    require Digest::MD5;
    return '"' . Digest::MD5::md5_hex(fixture(@_)) . '"';
}

1;
