/* A fork child that closes every descriptor from 3 up before it reads its heap, as Python's
 * `subprocess` child does before its `exec` (close_range). Under chaos migration part of the
 * heap is on devices at the fork; tieralloc's userfaultfd is among the descriptors closed.
 * Before a fork child of a chaos process brought its device-resident pages home first, the
 * child read those pages as zero (or stopped in a fault-back that met the closed descriptor).
 *
 * Fills heap blocks, waits for chaos to move them, forks children that close their
 * descriptors and check every byte, checks them itself too, and prints a checksum. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { BLOCKS = 64, CHILDREN = 10 };
static unsigned char *blocks[BLOCKS];
static size_t sizes[BLOCKS];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void spin(double s) {
    double until = now() + s;
    while (now() < until) {
    }
}

/* The first wrong byte, or -1 when every byte is as written; the checksum in *sum. */
static long check(unsigned long *sum) {
    *sum = 0;
    for (int b = 0; b < BLOCKS; b++)
        for (size_t i = 0; i < sizes[b]; i++) {
            if (blocks[b][i] != (unsigned char)(i * 7 + b)) return (long)b << 32 | (long)i;
            *sum = *sum * 31 + blocks[b][i];
        }
    return -1;
}

int main(void) {
    for (int b = 0; b < BLOCKS; b++) {
        sizes[b] = b % 2 ? 200 + b : (64 << 10) + b * 1000;
        blocks[b] = malloc(sizes[b]);
        if (!blocks[b]) return 2;
        for (size_t i = 0; i < sizes[b]; i++) blocks[b][i] = (unsigned char)(i * 7 + b);
    }
    for (int c = 0; c < CHILDREN; c++) {
        spin(0.02); /* let chaos move blocks, touching none */
        pid_t pid = fork();
        if (pid < 0) return 2;
        if (pid == 0) {
            syscall(SYS_close_range, 3u, ~0u, 0u);
            unsigned long sum;
            _exit(check(&sum) == -1 ? 0 : 1);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) return 2;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d: its heap was not as written (status %#x)\n", c, status);
            return 1;
        }
    }
    unsigned long sum;
    if (check(&sum) != -1) {
        fprintf(stderr, "the parent's heap is not as written\n");
        return 1;
    }
    printf("%d children read every byte as written, checksum %lu\n", CHILDREN, sum);
    return 0;
}
