package Test::Nginx::Runner::Spec;

# Part of the minimal, self-contained Test::Nginx::Socket stand-in that lives
# under t/runner/ (see Test/Nginx/Socket.pm there for the overview).
#
# This file reads the test specification that follows __DATA__ in a .t file
# and turns it into block objects, the way Test::Base does it:
#
#   === TEST 1: name            a block starts; the rest of the line is its name
#   optional description lines
#   --- section [filters]       a multi-line section, value = following lines
#   --- section [filters]: val  a one-line section (value trimmed)
#
# Every section value goes through the default filters "norm" and "trim"
# first, then through the filters named on its header line ("-name" drops a
# filter from the list, "+name" appends it at the end).  A function
# main::NAME, when it exists, is used in place of the stock filter NAME.
# Special sections: ONLY (run that block alone), SKIP (drop the block),
# LAST (drop every block after it).

use strict;
use warnings;

use Carp ();
require Test::More;

our @DefaultFilters = qw(norm trim);

my $Blocks;          # cached list of parsed blocks (filters not yet run)
my $SpecText;        # cached text of the spec

sub spec_text {
    return $SpecText if defined $SpecText;
    no warnings 'once';
    my $fh = \*main::DATA;
    local $/;
    my $text;
    $text = <$fh> if defined fileno($fh);
    $SpecText = defined $text ? $text : '';
    return $SpecText;
}

sub set_spec_text {
    $SpecText = shift;
    undef $Blocks;
}

# All blocks after ONLY/SKIP/LAST selection, unfiltered.
sub block_list {
    return $Blocks if $Blocks;

    my $text = spec_text();
    my @hunks;
    while ($text =~ /^(===.*?)(?=^===|\z)/msg) {
        push @hunks, $1;
    }

    my @blocks;
    my $seq = 1;
    for my $hunk (@hunks) {
        my $block = make_block($hunk);
        $block->{_seq_num} = $seq++;

        if (exists $block->{ONLY}) {
            Test::More::diag("I found ONLY: maybe you're debugging?");
            @blocks = ($block);
            last;
        }

        next if exists $block->{SKIP};
        push @blocks, $block;
        last if exists $block->{LAST};
    }

    $Blocks = \@blocks;
    return $Blocks;
}

sub make_block {
    my $hunk = shift;

    my $block = Test::Nginx::Runner::Block->new;

    $hunk =~ s/\A===[ \t]*(.*)\s+// or Carp::croak("bad block: $hunk");
    my $name = $1;

    # Locate every section header line; what lies between two headers is
    # the value of the first one.
    my @heads;
    while ($hunk =~ /^---[ ]+\(?(\w+)\)?[ ]*(.*)\n/mg) {
        push @heads, [$1, $2, $-[0], $+[0]];
    }

    my $description = @heads ? substr($hunk, 0, $heads[0][2]) : $hunk;
    $description = $name unless $description =~ /\S/;
    $description =~ s/\s*\z//;

    my (%map, @order);
    for my $i (0 .. $#heads) {
        my ($type, $filters, undef, $vstart) = @{ $heads[$i] };
        my $vend = $i < $#heads ? $heads[$i + 1][2] : length $hunk;
        my $value = substr($hunk, $vstart, $vend - $vstart);
        $filters = '' unless defined $filters;

        if ($filters =~ /:(?:\s|\z)/) {
            # one-line form: "--- name filters: value"
            Carp::croak("Extra lines not allowed in '$type' section")
                if $value =~ /\S/;
            ($filters, $value) = split /\s*:(?:\s+|\z)/, $filters, 2;
            $value = '' unless defined $value;
            $value =~ s/^\s+//;
            $value =~ s/\s+$//;
        }

        $map{$type} = { filters => $filters };
        push @order, $type;
        $block->set_value($type, $value);
    }

    $block->set_value(name => $name);
    $block->set_value(description => $description);
    $block->{_section_map} = \%map;
    $block->{_section_order} = \@order;

    return $block;
}

# The filter names to apply to one section, in order.
sub filter_names {
    my ($spec) = @_;
    $spec = '' unless defined $spec;
    $spec =~ s/^\s+|\s+$//g;

    my (@names, @append);
    for my $f (@DefaultFilters, split /\s+/, $spec) {
        last unless length $f;
        if ($f =~ s/^-//) {
            @names = grep { $_ ne $f } @names;
        } elsif ($f =~ s/^\+//) {
            push @append, $f;
        } else {
            push @names, $f;
        }
    }
    return (@names, @append);
}

sub run_filters {
    my $block = shift;
    return if $block->{_filtered};

    for my $type (@{ $block->{_section_order} }) {
        my @value = @{ $block->{$type} };
        for my $spec (filter_names($block->{_section_map}{$type}{filters})) {
            my $filter = $spec;
            my $arg = $filter =~ s/=(.*)$// ? $1 : undef;

            no strict 'refs';
            if (defined &{"main::$filter"}) {
                local $_ = join '', @value;
                local $Test::Nginx::Runner::Filter::Argument = $arg;
                my @out = &{"main::$filter"}(@value);
                if (!@out || (@out == 1 && defined $out[0]
                              && $out[0] =~ /\A(\d+|)\z/))
                {
                    @out = ($_);
                }
                @value = @out;

            } else {
                my $code = Test::Nginx::Runner::Filter->can("f_$filter")
                    or die "Can't find a function or method for '$filter' "
                         . "filter\n";
                local $Test::Nginx::Runner::Filter::Argument = $arg;
                local $Test::Nginx::Runner::Filter::Block = $block;
                local $Test::Nginx::Runner::Filter::Section = $type;
                @value = $code->(@value);
            }

            $block->set_value($type, @value);
        }
    }

    $block->{_filtered} = 1;
}


package Test::Nginx::Runner::Block;

# A test block.  Each section is stored as an array (Test::Base keeps lists
# because filters may return lists); the accessor returns the whole list in
# list context and its first element in scalar context.  Unknown sections
# read as undef.

use strict;
use warnings;

our $AUTOLOAD;

sub new { return bless {}, shift }

sub set_value {
    my ($self, $name, @values) = @_;
    $self->{$name} = [@values];
    return;
}

sub seq_num     { $_[0]{_seq_num} }
sub is_filtered { $_[0]{_filtered} }
sub run_filters { Test::Nginx::Runner::Spec::run_filters($_[0]) }

sub original_values { $_[0]{_original_values} ||= {} }

sub AUTOLOAD {
    my $self = shift;
    (my $name = $AUTOLOAD) =~ s/.*:://;
    return if $name eq 'DESTROY';
    return unless ref $self;

    my $v = $self->{$name};
    return unless ref $v eq 'ARRAY';
    return wantarray ? @$v : $v->[0];
}

sub DESTROY { }


package Test::Nginx::Runner::Filter;

# The stock Test::Base filters that test files commonly use.  Each takes and
# returns a list of values.

use strict;
use warnings;

our ($Argument, $Block, $Section);

sub assert_scalar {
    my ($filter, @v) = @_;
    return if @v == 1;
    Carp::croak("Input to the '$filter' filter must be a scalar, not a list");
}

sub f_norm {
    assert_scalar('norm', @_);
    my $text = shift || '';
    $text =~ s/\015\012/\n/g;
    $text =~ s/\r/\n/g;
    return $text;
}

sub f_trim {
    return map {
        my $s = $_;
        if (defined $s && !ref $s) {
            $s =~ s/\A(?:[ \t]*\n)+//;
            $s =~ s/(?<=\n)\s*\z//;
        }
        $s;
    } @_;
}

sub f_chomp   { return map { my $s = $_; chomp $s if defined $s; $s } @_ }
sub f_chop    { return map { my $s = $_; chop $s if defined $s; $s } @_ }
sub f_unchomp { return map { $_ . "\n" } @_ }
sub f_array   { return [@_] }
sub f_hash    { return {@_} }
sub f_reverse { return reverse @_ }
sub f_sort    { return sort @_ }

sub f_join {
    my $sep = defined $Argument ? $Argument : '';
    return join $sep, @_;
}

sub f_lines {
    assert_scalar('lines', @_);
    my $text = shift;
    return () unless length $text;
    return ($text =~ /^(.*\n?)/gm);
}

sub f_split {
    assert_scalar('split', @_);
    my $sep = $Argument;
    if (defined $sep && $sep =~ s{^/(.*)/$}{$1}) {
        $sep = qr/$sep/;
    }
    $sep = qr/\s+/ unless $sep;
    return split $sep, shift;
}

sub f_append  { my $s = _arg(); return map { $_ . $s } @_ }
sub f_prepend { my $s = _arg(); return map { $s . $_ } @_ }

sub f_head { my $n = $Argument || 1; return splice(@_, 0, $n) }
sub f_tail { my $n = $Argument || 1; return splice(@_, @_ - $n, $n) }

sub f_escape {
    assert_scalar('escape', @_);
    my $text = shift;
    $text =~ s/(\\.)/eval "qq{$1}"/ge;
    return $text;
}

sub f_base64_decode {
    assert_scalar('base64_decode', @_);
    require MIME::Base64;
    return MIME::Base64::decode_base64(shift);
}

sub f_base64_encode {
    assert_scalar('base64_encode', @_);
    require MIME::Base64;
    return MIME::Base64::encode_base64(shift);
}

sub f_regexp {
    assert_scalar('regexp', @_);
    my $text = shift;
    my $flags = $Argument;
    if ($text =~ /\n.*?\n/s) {
        $flags = 'xism' unless defined $flags;
    } else {
        chomp $text;
    }
    $flags ||= '';
    my $re = eval "qr{$text}$flags";
    die $@ if $@;
    return $re;
}

sub f_eval {
    assert_scalar('eval', @_);
    my $code = shift;
    my @ret = _eval_code($code);
    if ($@) {
        my $err = $@;
        my $name = $Block ? $Block->name : '?';
        warn "WARNING: $name - \"--- $Section eval\" failed: $err";
        # Test::Base hands the error text over as the section value.
        return $err;
    }
    return @ret;
}

sub _arg {
    return '' unless defined $Argument;
    my $a = $Argument;
    $a =~ s/\\s/ /g;
    $a =~ s/(\\[a-z])/'"' . $1 . '"'/gee;
    return $a;
}

# Section code is evaluated under strict and warnings in a package of its
# own, as Test::Base does (its eval runs inside Test::Base::Filter).
sub _eval_code {
    package Test::Nginx::Runner::Eval;
    use strict;
    use warnings;
    return eval $_[0];
}

# Test::Base::Filter has methods named join, reverse, chomp and chop, so
# there a plain join(...) in section code warns "Ambiguous call resolved as
# CORE::join()".  These declarations make it warn here too (CORE::join, or
# a join in a sub defined elsewhere, is quiet under both).
package Test::Nginx::Runner::Eval;
sub join;
sub reverse;
sub chomp;
sub chop;

1;
