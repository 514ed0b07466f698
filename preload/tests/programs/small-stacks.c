/* Threads with small stacks, as programs ask for them: PTHREAD_STACK_MIN (16 KiB here) and
 * 32 KiB (node's inspector thread). A preloaded library's thread-locals are carved out of
 * every thread's stack, and with 36 KiB of tieralloc's thread caches there, pthread_create
 * failed with EINVAL for both (node printed "pthread_create: Invalid argument" at start-up).
 * Each thread allocates, checks and frees a few blocks. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *work(void *arg) {
    long id = (long)arg;
    char *p[16];
    for (int i = 0; i < 16; i++) {
        p[i] = malloc(16 + i * 40);
        if (!p[i]) return (void *)1;
        memset(p[i], (int)(id + i), 16 + i * 40);
    }
    long bad = 0;
    for (int i = 0; i < 16; i++) {
        for (int k = 0; k < 16 + i * 40; k++) bad |= p[i][k] != (char)(id + i);
        free(p[i]);
    }
    return (void *)bad;
}

int main(void) {
    size_t sizes[] = {PTHREAD_STACK_MIN, 32 << 10, 64 << 10};
    int n = 0;
    for (int s = 0; s < 3; s++)
        for (long t = 0; t < 4; t++) {
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, sizes[s]);
            pthread_t th;
            int err = pthread_create(&th, &attr, work, (void *)t);
            pthread_attr_destroy(&attr);
            if (err) {
                fprintf(stderr, "pthread_create with a %zu-byte stack: %s\n", sizes[s], strerror(err));
                return 1;
            }
            void *r;
            pthread_join(th, &r);
            if (r) {
                fprintf(stderr, "a thread with a %zu-byte stack read wrong bytes\n", sizes[s]);
                return 1;
            }
            n++;
        }
    printf("%d threads with stacks of 16, 32 and 64 KiB ran\n", n);
    return 0;
}
