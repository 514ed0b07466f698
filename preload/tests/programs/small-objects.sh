# needs: gcc
# Small objects only, read again by threads and forked children (small-objects.c).
# It is built once, under the system allocator, into the build directory.
set -e
bin="$3/small-objects"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -pthread -o "$bin" "$2/small-objects.c"
"$bin"
