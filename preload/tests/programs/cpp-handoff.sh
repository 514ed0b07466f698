# needs: g++
# A multi-threaded C++ program (handoff.cpp) handing containers and strings between threads.
# It is built once, under the system allocator, into the build directory.
set -e
bin="$3/handoff"
[ -x "$bin" ] || env -u LD_PRELOAD g++ -O2 -pthread -o "$bin" "$2/handoff.cpp"
"$bin"
