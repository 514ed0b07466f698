# needs: gcc
# A program taking descriptors 3-9 with dup2 while its heap is on devices (low-descriptors.c).
# Built once, under the system allocator, into the build directory.
set -e
bin="$3/low-descriptors"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -o "$bin" "$2/low-descriptors.c"
"$bin"
