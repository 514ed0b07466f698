# needs: gcc
# The malloc family's corner cases (semantics.c): the same output under any allocator.
# It is built once, under the system allocator, into the build directory.
set -e
bin="$3/semantics"
[ -x "$bin" ] || env -u LD_PRELOAD gcc -O1 -pthread -Wno-alloc-size-larger-than -o "$bin" "$2/semantics.c" -ldl
"$bin"
