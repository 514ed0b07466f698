/* Loads libtieralloc.so with dlopen after threads are running (as Python's ctypes or a plugin
 * host would), then allocates through the library's malloc and free from a thread that started
 * before the load, from the main thread and from a thread started after it.
 *
 * The library reads its per-thread heap pointer and scope with initial-exec TLS (static TLS),
 * which a library loaded late gets from glibc's reserve, set up for the threads already
 * running too. Every block must be in tieralloc's managed range (tieralloc_residency accepts
 * it, where it answers TIERALLOC_ENOTMANAGED for glibc's blocks), keep what was written to it,
 * and be freed without a complaint.
 *
 * Usage: dlopen-late <path of libtieralloc.so>. Prints "ok: ..." and exits 0, or says what
 * failed and exits 1. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef int (*residency_fn)(const void *, size_t, size_t *, size_t *, size_t);

static malloc_fn t_malloc;
static free_fn t_free;
static residency_fn t_residency;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t loaded_cond = PTHREAD_COND_INITIALIZER;
static int loaded;

enum { ROUNDS = 200, LIVE = 64 };

/* Allocates, fills, checks and frees blocks of 16 B to 3 KiB through the library; returns a
 * message on the first failure, NULL if all went well. */
static const char *work(unsigned seed) {
    unsigned char *live[LIVE];
    size_t len[LIVE];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < LIVE; i++) {
            seed = seed * 1103515245u + 12345u;
            len[i] = 16 + (seed >> 8) % 3072;
            live[i] = t_malloc(len[i]);
            if (live[i] == NULL)
                return "the library's malloc returned NULL";
            memset(live[i], (i + r) & 0xff, len[i]);
            size_t host = 0, device = 0;
            if (t_residency(live[i], len[i], &host, &device, 0) != 0)
                return "a block of the library's malloc is not in its managed range";
        }
        for (int i = 0; i < LIVE; i++) {
            for (size_t k = 0; k < len[i]; k++)
                if (live[i][k] != ((i + r) & 0xff))
                    return "a block lost what was written to it";
            t_free(live[i]);
        }
    }
    return NULL;
}

static void *early(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!loaded)
        pthread_cond_wait(&loaded_cond, &lock);
    pthread_mutex_unlock(&lock);
    return (void *)work(1);
}

static void *late(void *arg) {
    (void)arg;
    return (void *)work(2);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <libtieralloc.so>\n", argv[0]);
        return 2;
    }
    pthread_t before;
    if (pthread_create(&before, NULL, early, NULL) != 0) {
        printf("pthread_create failed\n");
        return 1;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    t_malloc = (malloc_fn)dlsym(lib, "malloc");
    t_free = (free_fn)dlsym(lib, "free");
    t_residency = (residency_fn)dlsym(lib, "tieralloc_residency");
    if (t_malloc == NULL || t_free == NULL || t_residency == NULL) {
        printf("dlsym failed: %s\n", dlerror());
        return 1;
    }
    /* The program's own malloc is still glibc's: the library was loaded locally. */
    void *mine = malloc(64);
    size_t host = 0, device = 0;
    int not_ours = t_residency(mine, 64, &host, &device, 0);
    free(mine);
    if (not_ours != 1) {
        printf("tieralloc_residency on a glibc block returned %d, not TIERALLOC_ENOTMANAGED\n",
               not_ours);
        return 1;
    }
    pthread_mutex_lock(&lock);
    loaded = 1;
    pthread_cond_broadcast(&loaded_cond);
    pthread_mutex_unlock(&lock);
    pthread_t after;
    if (pthread_create(&after, NULL, late, NULL) != 0) {
        printf("pthread_create failed\n");
        return 1;
    }
    const char *failed = work(3);
    void *r1, *r2;
    pthread_join(before, &r1);
    pthread_join(after, &r2);
    const char *results[] = {r1, failed, r2};
    const char *who[] = {"the thread started before dlopen", "the main thread",
                         "the thread started after dlopen"};
    for (int i = 0; i < 3; i++)
        if (results[i] != NULL) {
            printf("%s: %s\n", who[i], results[i]);
            return 1;
        }
    printf("ok: %d blocks from each of 3 threads, all in the managed range\n", ROUNDS * LIVE);
    return 0;
}
