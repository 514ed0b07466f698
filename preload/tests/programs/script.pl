# Hashes, strings, regexes, sorting and nested structures.
use strict;
use warnings;

my %words;
my $text = '';
for my $i (1 .. 40000) {
    my $w = join '', map { chr(97 + ($i * $_ * 7) % 26) } 1 .. (3 + $i % 9);
    $words{$w} += $i;
    $text .= "$w-$i ";
}
print scalar(keys %words), " distinct words\n";
my @top = (sort { $words{$b} <=> $words{$a} || $a cmp $b } keys %words)[0 .. 4];
print "top: @top\n";

my $count = () = $text =~ /\b([aeiou]\w+)-(\d+8)\b/g;
print "vowel words with numbers ending in 8: $count\n";
(my $swapped = substr($text, 0, 2000)) =~ s/(\w+)-(\d+)/$2:$1/g;
print "swapped: ", substr($swapped, 0, 60), "\n";

my %tree;
for my $i (1 .. 30000) {
    push @{ $tree{ $i % 97 }{ $i % 13 } }, { id => $i, name => "n$i" x ($i % 4) };
}
my $total = 0;
for my $k (keys %tree) {
    for my $j (keys %{ $tree{$k} }) {
        $total += length($_->{name}) for @{ $tree{$k}{$j} };
    }
}
print "tree: $total\n";
delete $tree{$_} for grep { $_ % 2 } keys %tree;
print "left: ", scalar(keys %tree), "\n";

my @lines = map { sprintf "%05d,%s,%.3f", $_, scalar reverse("row$_"), sqrt $_ } 1 .. 20000;
my @parsed = map { [ split /,/ ] } grep { /^0*[1-9]\d*5,/ } @lines;
print "parsed: ", scalar(@parsed), " last $parsed[-1][1]\n";
my $joined = join ';', map { uc $_->[1] } @parsed[0 .. 9];
print "joined: $joined\n";
