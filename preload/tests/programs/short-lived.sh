# needs: perl
# A process shorter than one chaos interval: it builds about 10 MiB of strings and ends, in
# 80-120 ms on the project machine (with or without chaos). At a 1 s interval, only the rounds
# chaos runs before its first interval see it.
perl -e 'my @a = map { ("x" x 100) . $_ } 1 .. 100000;
         my $n = 0; $n += length for @a; print "$n\n"'
