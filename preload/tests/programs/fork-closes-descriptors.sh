# needs: gcc
# Fork children that close every descriptor from 3 up, then read the heap that chaos had on
# devices at the fork (fork-closes-descriptors.c). Built once, under the system allocator,
# into the build directory.
set -e
bin="$3/fork-closes-descriptors"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -o "$bin" "$2/fork-closes-descriptors.c"
"$bin"
