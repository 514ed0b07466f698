/* malloc and free through the C ABI, the way an unmodified C program calls them: run under
 * each allocator with LD_PRELOAD by `preload_report`. Prints two figures, ns per
 * malloc+free: pairs (a block freed right after it is allocated, sizes 16-128 B) and a batch
 * (10,000 blocks of 16-128 B allocated, then freed in a scrambled order). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    enum { PAIRS = 10000000, BATCH = 10000, ROUNDS = 500 };
    static void *v[BATCH];
    void *volatile sink;
    double t = now();
    for (int i = 0; i < PAIRS; i++) {
        void *p = malloc(16 + (i & 7) * 16);
        sink = p;
        free(p);
    }
    double pairs = (now() - t) / PAIRS * 1e9;
    t = now();
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BATCH; i++)
            v[i] = malloc(16 + (i & 15) * 8);
        for (int i = 0; i < BATCH; i++)
            free(v[(i * 7919) % BATCH]);
    }
    double batch = (now() - t) / ((double)ROUNDS * BATCH) * 1e9;
    (void)sink;
    printf("%.2f %.2f\n", pairs, batch);
    return 0;
}
