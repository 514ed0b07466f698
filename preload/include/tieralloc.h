/* tieralloc.h: the tier API of libtieralloc.so for C and C++.
 *
 * Link with -ltieralloc (or LD_PRELOAD the library and declare these functions weak). Every
 * call returns 0 on success or a TIERALLOC_E* code, and tieralloc_last_error() describes the
 * calling thread's last failure. Memory from malloc and friends lives in tieralloc's managed
 * range once the library is loaded; these calls move its pages between the host and the
 * emulated devices (TIERALLOC_DEVICES), and a CPU touch of a device page brings it back. */
#ifndef TIERALLOC_H
#define TIERALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A tier: the host, or a device number from 0. */
#define TIERALLOC_HOST (-1)

/* Error codes. */
#define TIERALLOC_OK 0
#define TIERALLOC_ENOTMANAGED 1 /* the range is not in tieralloc's managed range */
#define TIERALLOC_EINVAL 2      /* zero length, overflowing range, bad tier or advice */
#define TIERALLOC_ENOTALLOC 3   /* the range holds pages that are not allocated */
#define TIERALLOC_ENODEV 4      /* no such device */
#define TIERALLOC_EFULL 5       /* the device is full and its policy does not evict */
#define TIERALLOC_ELIMIT 6      /* an OS limit (mappings, address space) was reached */
#define TIERALLOC_EBACKEND 7    /* the fault backend cannot do this here */
#define TIERALLOC_ESYS 8        /* a system call failed */
#define TIERALLOC_EOTHER 9      /* anything else: see tieralloc_last_error() */

/* Advice for tieralloc_advise. */
#define TIERALLOC_ADVISE_PREFERRED_LOCATION 0 /* where the data should live (takes a tier) */
#define TIERALLOC_ADVISE_ACCESSED_BY 1        /* a device reads it where it is (takes a tier) */
#define TIERALLOC_ADVISE_READ_MOSTLY 2        /* migrations leave a read-only duplicate */
#define TIERALLOC_ADVISE_RESET 3              /* forget all advice */

typedef struct tieralloc_device {
    char name[32];   /* NUL-terminated */
    size_t capacity; /* bytes */
    size_t used;     /* bytes on it now */
} tieralloc_device_t;

typedef struct tieralloc_stats {
    size_t used_bytes;        /* high-water mark of the managed range */
    size_t host_resident;     /* bytes of it in host memory now */
    uint64_t bytes_to_device; /* moved host -> device */
    uint64_t bytes_to_host;   /* moved device -> host */
    uint64_t cpu_faults;      /* CPU touches that brought pages back */
    uint64_t migrations;      /* tieralloc_migrate calls */
    uint64_t chaos_bytes;     /* moved by chaos migration (TIERALLOC_CHAOS) */
} tieralloc_stats_t;

/* Moves the pages of [p, p+len) to tier `to`; *moved (if not NULL) gets the pages moved. */
int tieralloc_migrate(const void *p, size_t len, int to, size_t *moved);
/* Starts the same move in the background and returns at once. */
int tieralloc_prefetch(const void *p, size_t len, int to);
/* Records advice for [p, p+len); `tier` is used by PREFERRED_LOCATION and ACCESSED_BY. */
int tieralloc_advise(const void *p, size_t len, int advice, int tier);
/* Bytes of [p, p+len) on the host (*host) and on each device d < ndevices (device[d]). */
int tieralloc_residency(const void *p, size_t len, size_t *host, size_t *device, size_t ndevices);
/* Fills out[0..max) and returns the number of devices, or -1 on error. */
int tieralloc_devices(tieralloc_device_t *out, size_t max);
/* Fills *out with the main counters. */
int tieralloc_stats(tieralloc_stats_t *out);
/* The calling thread's last error, in words ("" if none). */
const char *tieralloc_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
