/* A program that frees wrongly, run with libtieralloc.so preloaded: each case must end the
 * process with tieralloc's message, never hand a block out twice or go on silently.
 *
 * Usage: bad-frees <case>, one of
 *   twice-current   the block freed last, freed again (its span is its class's current one)
 *   twice-older     a block of an older span of its class, freed twice
 *   middle-current  a pointer 16 bytes into a block of the current span
 *   middle-older    a pointer 16 bytes into a block of an older span
 * Prints "survived" and exits 0 if the bad free went unnoticed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MANY = 6000 }; /* 48-byte blocks: more than one 64 KiB span holds */

/* Called through a volatile pointer, so the compiler neither warns about nor reasons from the
 * bad frees: they reach the allocator as written. */
static void (*volatile release)(void *) = free;

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    static char *v[MANY];
    for (int i = 0; i < MANY; i++) {
        v[i] = malloc(48);
        memset(v[i], i & 0xff, 48);
    }
    const char *c = argv[1];
    if (strcmp(c, "twice-current") == 0) {
        char *p = v[MANY - 1];
        release(p);
        release(p);
    } else if (strcmp(c, "twice-older") == 0) {
        release(v[0]);
        release(v[0]);
    } else if (strcmp(c, "middle-current") == 0) {
        release(v[MANY - 1] + 16);
    } else if (strcmp(c, "middle-older") == 0) {
        release(v[0] + 16);
    } else {
        return 2;
    }
    /* Had the bad free passed, these two would be the same block. */
    char *a = malloc(48), *b = malloc(48);
    printf("survived%s\n", a == b ? " and handed one block out twice" : "");
    return 0;
}
