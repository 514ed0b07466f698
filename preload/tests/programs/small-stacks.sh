# needs: gcc
# Threads with 16, 32 and 64 KiB stacks (small-stacks.c). Built once, under the system
# allocator, into the build directory.
set -e
bin="$3/small-stacks"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -pthread -o "$bin" "$2/small-stacks.c"
"$bin"
