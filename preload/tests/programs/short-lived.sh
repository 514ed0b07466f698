# needs: perl
# A process shorter than one chaos interval: it builds about 1 MiB of strings and ends, in
# less than 20 ms on the project machine. At a 20 ms interval, only the rounds chaos runs
# before its first interval see it.
perl -e 'my @a = map { ("x" x 100) . $_ } 1 .. 10000;
         my $n = 0; $n += length for @a; print "$n\n"'
