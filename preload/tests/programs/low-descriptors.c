/* A program that takes descriptors 3 to 9 for itself with dup2, as a shell does for
 * `exec 3>file`, while chaos migration has its heap on devices. dup2 closes whatever was at
 * those numbers: when tieralloc's userfaultfd was there (it took the lowest free number),
 * every device-resident page then read as zero, and dash crashed in 2 of 6 runs of a script
 * with `exec 3>/dev/null`.
 *
 * Fills heap blocks with a pattern, waits for chaos to move them (without touching them),
 * takes the descriptors, checks every byte and prints a checksum. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    enum { BLOCKS = 64 };
    static unsigned char *blocks[BLOCKS];
    static size_t sizes[BLOCKS];
    for (int b = 0; b < BLOCKS; b++) {
        sizes[b] = b % 2 ? 200 + b : (64 << 10) + b * 1000; /* small objects and large blocks */
        blocks[b] = malloc(sizes[b]);
        if (!blocks[b]) return 2;
        for (size_t i = 0; i < sizes[b]; i++) blocks[b][i] = (unsigned char)(i * 7 + b);
    }
    /* Let chaos move them: 100 ms, touching nothing of theirs. */
    double until = now() + 0.1;
    while (now() < until) {
    }
    int null = open("/dev/null", O_WRONLY);
    if (null < 0) return 2;
    for (int fd = 3; fd <= 9; fd++)
        if (fd != null && dup2(null, fd) != fd) return 2;
    until = now() + 0.02;
    while (now() < until) {
    }
    unsigned long sum = 0;
    for (int b = 0; b < BLOCKS; b++)
        for (size_t i = 0; i < sizes[b]; i++) {
            if (blocks[b][i] != (unsigned char)(i * 7 + b)) {
                fprintf(stderr, "block %d byte %zu: %d, not %d\n", b, i, blocks[b][i],
                        (unsigned char)(i * 7 + b));
                return 1;
            }
            sum = sum * 31 + blocks[b][i];
        }
    printf("every byte as written, checksum %lu\n", sum);
    return 0;
}
