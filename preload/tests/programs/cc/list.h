#ifndef LIST_H
#define LIST_H
#include <stddef.h>

struct node {
    struct node *next;
    char *word;
    size_t count;
};

struct node *list_add(struct node *head, const char *word);
size_t list_len(const struct node *head);
void list_free(struct node *head);
char *list_join(const struct node *head, size_t max);
#endif
