# needs: perl
# Hashes, strings, regexes and nested structures (script.pl).
set -e
perl "$2/script.pl"
