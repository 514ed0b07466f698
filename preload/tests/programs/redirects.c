/* A single-threaded program that redirects its standard output thousands of times the way
 * dash does for `printf ... > file`: save descriptor 1 above 10, close it, mark the copy
 * close-on-exec, `dup2` the file onto 1, write, restore. Its buffers are heap blocks, which
 * chaos migration moves to devices meanwhile.
 *
 * tieralloc's own threads (chaos, fault handlers) run beside it and must never take or close
 * a descriptor it is moving: when the chaos thread opened /proc/self/pagemap per migration,
 * that open could land in the gap after `close(1)`, the `dup2` then closed tieralloc's file,
 * and tieralloc's `close` closed the program's output (`write` failed with EBADF).
 *
 * Prints how many bytes it wrote and a checksum of what it reads back. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    enum { ROUNDS = 50000, FILES = 50, BUF = 1024 };
    char *bufs[FILES];
    for (int i = 0; i < FILES; i++) {
        bufs[i] = malloc(BUF);
        if (!bufs[i]) return 2;
    }
    long total = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char name[32];
        snprintf(name, sizeof name, "f%d.txt", r % FILES);
        char *b = bufs[r % FILES];
        int n = snprintf(b, BUF, "line %d\n%0100d\n", r, r);
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) { perror("open"); return 1; }
        int saved = fcntl(1, F_DUPFD, 10);
        close(1);
        fcntl(saved, F_SETFD, FD_CLOEXEC);
        dup2(fd, 1);
        close(fd);
        ssize_t w = write(1, b, n);
        int err = errno;
        dup2(saved, 1);
        close(saved);
        if (w != n) {
            fprintf(stderr, "round %d: write returned %zd (%s)\n", r, w, strerror(err));
            return 1;
        }
        total += w;
    }
    unsigned long sum = 0;
    for (int i = 0; i < FILES; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d.txt", i);
        FILE *f = fopen(name, "r");
        if (!f) { perror("fopen"); return 1; }
        int c;
        while ((c = fgetc(f)) != EOF) sum = sum * 31 + (unsigned char)c;
        fclose(f);
    }
    printf("%ld bytes written, checksum %lu\n", total, sum);
    return 0;
}
