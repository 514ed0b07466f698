# needs: gcc
# gcc (with cc1, as and ld) builds a multi-file C program, which then runs.
set -e
gcc -O2 -Wall -o "$1/words" "$2/cc/main.c" "$2/cc/list.c"
"$1/words"
