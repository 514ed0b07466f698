#include "list.h"
#include <stdlib.h>
#include <string.h>

struct node *list_add(struct node *head, const char *word) {
    for (struct node *n = head; n; n = n->next)
        if (strcmp(n->word, word) == 0) {
            n->count++;
            return head;
        }
    struct node *n = calloc(1, sizeof *n);
    n->word = strdup(word);
    n->count = 1;
    n->next = head;
    return n;
}

size_t list_len(const struct node *head) {
    size_t n = 0;
    for (; head; head = head->next)
        n++;
    return n;
}

void list_free(struct node *head) {
    while (head) {
        struct node *next = head->next;
        free(head->word);
        free(head);
        head = next;
    }
}

char *list_join(const struct node *head, size_t max) {
    char *out = NULL;
    size_t len = 0;
    for (size_t i = 0; head && i < max; head = head->next, i++) {
        size_t w = strlen(head->word);
        out = realloc(out, len + w + 2);
        memcpy(out + len, head->word, w);
        len += w;
        out[len++] = ' ';
        out[len] = 0;
    }
    return out;
}
