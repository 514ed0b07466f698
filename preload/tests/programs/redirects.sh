# needs: gcc
# A single-threaded program redirecting its standard output 50000 times, as a shell does for
# `printf ... > file` (redirects.c). Built once, under the system allocator, into the build
# directory.
set -e
bin="$3/redirects"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -o "$bin" "$2/redirects.c"
cd "$1"
"$bin"
