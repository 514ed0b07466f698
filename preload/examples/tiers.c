/* The tier API from C: a buffer from plain malloc moves to a device, is touched by the CPU
 * (which brings it back), and errors come back as codes with a message.
 *
 *   cargo build --release -p tieralloc-preload
 *   gcc -O2 -Ipreload/include preload/examples/tiers.c -Ltarget/release -ltieralloc \
 *       -Wl,-rpath,$PWD/target/release -o tiers && ./tiers */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tieralloc.h>

int main(void) {
    size_t len = 8 << 20;
    unsigned char *buf = malloc(len);
    memset(buf, 7, len);

    tieralloc_device_t devs[8];
    int n = tieralloc_devices(devs, 8);
    printf("%d device(s); the first is %s with %zu MiB\n", n, devs[0].name,
           devs[0].capacity >> 20);

    size_t moved = 0;
    if (tieralloc_migrate(buf, len, 0, &moved) != TIERALLOC_OK) {
        fprintf(stderr, "migrate: %s\n", tieralloc_last_error());
        return 1;
    }
    size_t host = 0, on_device[1] = {0};
    tieralloc_residency(buf, len, &host, on_device, 1);
    printf("moved %zu pages: %zu MiB on the host, %zu MiB on device 0\n", moved, host >> 20,
           on_device[0] >> 20);

    unsigned long sum = 0; /* the CPU reads it: the pages come back */
    for (size_t i = 0; i < len; i += 4096)
        sum += buf[i];
    tieralloc_residency(buf, len, &host, on_device, 1);
    printf("after the CPU read it (sum %lu): %zu MiB on the host\n", sum, host >> 20);

    int rc = tieralloc_migrate(buf, len, 99, NULL);
    printf("a device that does not exist: code %d, \"%s\"\n", rc, tieralloc_last_error());

    tieralloc_stats_t s;
    tieralloc_stats(&s);
    printf("%llu MiB went to devices, %llu CPU faults\n",
           (unsigned long long)(s.bytes_to_device >> 20), (unsigned long long)s.cpu_faults);
    free(buf);
    return rc == TIERALLOC_ENODEV ? 0 : 1;
}
