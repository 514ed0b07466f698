/* The malloc family's glibc semantics, checked under whichever allocator is loaded: the same
 * output under the system allocator and under libtieralloc.so. Exit code 1 on a failed check. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);

static int failed;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            printf("FAILED line %d: %s\n", __LINE__, #c);                                          \
            failed = 1;                                                                            \
        }                                                                                          \
    } while (0)

static void *churn(void *arg) {
    uintptr_t seed = (uintptr_t)arg;
    void *live[256] = {0};
    for (int i = 0; i < 200000; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        int slot = (seed >> 33) % 256;
        free(live[slot]);
        size_t size = (seed >> 45) % (i % 16 == 0 ? 300000 : 2000);
        live[slot] = malloc(size);
        if (size)
            memset(live[slot], slot, size);
    }
    for (int i = 0; i < 256; i++)
        free(live[i]);
    return NULL;
}

int main(void) {
    /* alignment and zeroing */
    for (size_t s = 0; s < 100000; s = s * 3 + 1) {
        char *p = malloc(s);
        CHECK(p != NULL && (uintptr_t)p % 16 == 0);
        CHECK(malloc_usable_size(p) >= s);
        memset(p, 0xab, s);
        char *z = calloc(s, 1);
        for (size_t i = 0; i < s; i++)
            CHECK(z[i] == 0);
        free(z);
        free(p);
    }
    /* calloc and reallocarray overflow */
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    char *r = malloc(10);
    errno = 0;
    CHECK(reallocarray(r, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    r = reallocarray(r, 100, 10);
    CHECK(r != NULL && malloc_usable_size(r) >= 1000);
    free(r);
    /* malloc of an impossible size */
    errno = 0;
    CHECK(malloc(SIZE_MAX - 100) == NULL && errno == ENOMEM);
    /* realloc keeps contents, grows and shrinks; realloc(NULL) allocates; size 0 frees */
    char *g = realloc(NULL, 5);
    memcpy(g, "hello", 5);
    for (size_t s = 8; s < (8u << 20); s *= 2) {
        g = realloc(g, s);
        CHECK(g != NULL && memcmp(g, "hello", 5) == 0);
    }
    g = realloc(g, 3);
    CHECK(g != NULL && memcmp(g, "hel", 3) == 0);
    CHECK(realloc(g, 0) == NULL);
    /* aligned allocation */
    void *a = NULL;
    CHECK(posix_memalign(&a, 3, 10) == EINVAL);
    CHECK(posix_memalign(&a, 4, 10) == EINVAL); /* not a multiple of sizeof(void *) */
    for (size_t al = 8; al <= (1u << 21); al *= 4) {
        CHECK(posix_memalign(&a, al, 100) == 0 && (uintptr_t)a % al == 0);
        free(a);
        void *b = aligned_alloc(al, al * 2);
        CHECK(b != NULL && (uintptr_t)b % al == 0);
        b = realloc(b, al * 3);
        CHECK(b != NULL);
        free(b);
        void *m = memalign(al, 7);
        CHECK(m != NULL && (uintptr_t)m % al == 0);
        free(m);
    }
    void *m = memalign(48, 10); /* raised to 64 */
    CHECK(m != NULL && (uintptr_t)m % 64 == 0);
    free(m);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(1);
    CHECK(v != NULL && (uintptr_t)v % page == 0);
    free(v);
    void *pv = pvalloc(1);
    CHECK(pv != NULL && (uintptr_t)pv % page == 0 && malloc_usable_size(pv) >= (size_t)page);
    free(pv);
    /* errno is left alone by a successful call */
    errno = 1234;
    void *e = malloc(1 << 20);
    free(e);
    e = malloc(24);
    free(e);
    CHECK(errno == 1234);
    /* a block of the allocator loaded after this one is freed by it */
    void *f = __libc_malloc(100);
    CHECK(f != NULL);
    f = realloc(f, 200);
    CHECK(f != NULL);
    free(f);
    CHECK(malloc_usable_size(NULL) == 0);
    free(NULL);
    /* threads created by pthread_create, freeing each other's blocks through churn */
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn, (void *)(i + 1));
    /* fork while they run: the child allocates and exits cleanly */
    pid_t pid = fork();
    if (pid == 0) {
        churn((void *)99);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* a library loaded at run time allocates through the same functions */
    void *lib = dlopen("libm.so.6", RTLD_NOW);
    CHECK(lib != NULL);
    if (lib)
        dlclose(lib);
    malloc_trim(0);
    printf("semantics: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
