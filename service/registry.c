/* Collections by name (see registry.h). */
#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

struct svd_registry {
    pthread_mutex_t mu;
    svd_coll **items;   /* sorted by name */
    size_t n, cap;
};

svd_registry *svd_registry_create(void)
{
    svd_registry *r = calloc(1, sizeof *r);
    if (r)
        pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void coll_destroy(svd_coll *c)
{
    sv_collection_free(c->coll);
    sv_arena_free(c->arena);
    free(c);
}

void svd_registry_free(svd_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        coll_destroy(r->items[i]);
    free(r->items);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int svd_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len < 1 || len > SVD_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.' || ch == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

/* Index of name, or -(insertion point) - 1. */
static long find(const svd_registry *r, const char *name)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->items[mid]->name, name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

sv_status svd_registry_create_collection(svd_registry *r, const char *name, sv_params *params,
                                         svd_coll **out, sv_error *err)
{
    *out = NULL;
    svd_coll *c = calloc(1, sizeof *c);
    sv_arena *arena = sv_arena_create();
    if (!c || !arena) {
        free(c);
        sv_arena_free(arena);
        err->code = SV_ERR_RESOURCE;
        strcpy(err->message, "out of memory creating the collection");
        return SV_ERR_RESOURCE;
    }
    strcpy(c->name, name);
    c->arena = arena;
    params->allocator = sv_arena_allocator(arena);
    sv_status st = sv_collection_create(params, &c->coll, err);
    if (st != SV_OK) {
        sv_arena_free(arena);
        free(c);
        return st;
    }
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    if (at >= 0) {
        pthread_mutex_unlock(&r->mu);
        coll_destroy(c);
        err->code = SV_ERR_ALREADY_EXISTS;
        snprintf(err->message, sizeof err->message, "collection \"%s\" already exists", name);
        return SV_ERR_ALREADY_EXISTS;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        svd_coll **t = realloc(r->items, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&r->mu);
            coll_destroy(c);
            err->code = SV_ERR_RESOURCE;
            strcpy(err->message, "out of memory creating the collection");
            return SV_ERR_RESOURCE;
        }
        r->items = t;
        r->cap = cap;
    }
    size_t pos = (size_t)(-at - 1);
    memmove(&r->items[pos + 1], &r->items[pos], (r->n - pos) * sizeof *r->items);
    r->items[pos] = c;
    r->n++;
    c->refs = 2; /* the registry's and the caller's */
    pthread_mutex_unlock(&r->mu);
    *out = c;
    return SV_OK;
}

svd_coll *svd_registry_get(svd_registry *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    svd_coll *c = at >= 0 ? r->items[at] : NULL;
    if (c)
        c->refs++;
    pthread_mutex_unlock(&r->mu);
    return c;
}

void svd_registry_put(svd_registry *r, svd_coll *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&r->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        coll_destroy(c);
}

int svd_registry_drop(svd_registry *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    if (at < 0) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    svd_coll *c = r->items[at];
    memmove(&r->items[at], &r->items[at + 1], (r->n - (size_t)at - 1) * sizeof *r->items);
    r->n--;
    pthread_mutex_unlock(&r->mu);
    svd_registry_put(r, c);
    return 0;
}

size_t svd_registry_list(svd_registry *r, svd_coll ***out)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    *out = n ? malloc(n * sizeof **out) : NULL;
    if (n && !*out)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = r->items[i];
        r->items[i]->refs++;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
