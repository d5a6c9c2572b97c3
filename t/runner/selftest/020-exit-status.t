# A script of the suite that fails must exit non-zero even when it has
# started helper servers: t/lib/AwsCreds.pm reaps them in an END block,
# and waitpid there would otherwise leave their exit status, 0, as the
# script's (t/reliability/reliability.pl "passed" with failures so).
# Run from the top of the repository.

use strict;
use warnings;

use Test::More;

$ENV{TEST_NGINX_S3_ENDPOINT} = 'http://127.0.0.1:9';

for my $want (1, 0) {
    system($^X, '-It/lib', '-e',
           "use AwsCreds; AwsCreds::start('imds'); exit $want");
    is($? >> 8, $want, "a script that started IMDS's server and exits "
                       . "$want exits $want");
}

done_testing();
