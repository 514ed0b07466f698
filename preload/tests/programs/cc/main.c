/* A multi-file program that gcc builds under the allocator; it then runs under it too. */
#include "list.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    struct node *head = NULL;
    char buf[32];
    for (unsigned i = 0; i < 20000; i++) {
        unsigned x = i * 2654435761u;
        snprintf(buf, sizeof buf, "w%u", x % 1500);
        head = list_add(head, buf);
    }
    char *joined = list_join(head, 8);
    size_t total = 0;
    for (struct node *n = head; n; n = n->next)
        total += n->count;
    printf("%zu words, %zu counted, first: %s\n", list_len(head), total, joined);
    free(joined);
    list_free(head);
    return 0;
}
