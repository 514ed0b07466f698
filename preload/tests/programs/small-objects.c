/* A heap of small objects only (a linked list of 64-byte nodes, no block over 8 KiB), read
 * again after a pause, from threads whose stacks the C library then caches, and from forked
 * children. Under chaos migration every page of it may move to a device and must come back
 * with the same bytes; a fork child must not hang on the C library's own blocks (each
 * thread's TLS vector is malloc'ed, and a child reads those of cached stacks when it creates
 * its first thread). The same output under any allocator. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct node {
    struct node *next;
    unsigned long value;
    char pad[48];
};

static struct node *head;

static unsigned long sum(void) {
    unsigned long s = 0;
    for (struct node *n = head; n; n = n->next)
        s = s * 31 + n->value;
    return s;
}

static void *reader(void *arg) {
    *(unsigned long *)arg = sum();
    return NULL;
}

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(void) {
    for (unsigned long i = 0; i < 100000; i++) {
        struct node *n = malloc(sizeof *n);
        n->value = i * 2654435761UL;
        n->next = head;
        head = n;
    }
    unsigned long want = sum();
    printf("sum %lu\n", want);
    for (int round = 0; round < 5; round++) {
        pause_ms(30); /* chaos moves some of the list meanwhile */
        pthread_t t[4];
        unsigned long got[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, reader, &got[i]);
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            if (got[i] != want)
                printf("round %d thread %d read %lu\n", round, i, got[i]);
        }
        for (int k = 0; k < 4; k++) {
            pid_t pid = fork();
            if (pid == 0) {
                /* A thread in the child: its stack may come from the cache. */
                pthread_t c;
                unsigned long g = 0;
                pthread_create(&c, NULL, reader, &g);
                pthread_join(c, NULL);
                _exit(g == want ? 0 : 1);
            }
            int status = 0;
            waitpid(pid, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                printf("round %d child %d failed: %d\n", round, k, status);
        }
    }
    printf("done\n");
    return 0;
}
