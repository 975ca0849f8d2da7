/* Allocation through the collection's allocator hook, with per-part tallies. */
#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *libc_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void *libc_realloc(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return realloc(p, size);
}

static void libc_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static const sv_allocator libc_allocator = {
    .alloc = libc_alloc, .realloc = libc_realloc, .free = libc_free, .good_size = NULL, .ctx = NULL};

const sv_allocator *sv_allocator_default(void)
{
    return &libc_allocator;
}

size_t sv_good_size(const sv_allocator *a, size_t size)
{
    if (a->good_size && size > 0)
        return a->good_size(a->ctx, size);
    return size;
}

static void tally_add(const sv_allocator *a, sv_tally *t, size_t size, int sign)
{
    if (t && size)
        atomic_fetch_add_explicit(&t->bytes, sign * (long long)sv_good_size(a, size),
                                  memory_order_relaxed);
}

void *sv_mem_alloc(const sv_allocator *a, sv_tally *t, size_t size)
{
    if (size == 0)
        return NULL;
    void *p = a->alloc(a->ctx, size);
    if (p)
        tally_add(a, t, size, 1);
    return p;
}

void *sv_mem_calloc(const sv_allocator *a, sv_tally *t, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = sv_mem_alloc(a, t, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *sv_mem_realloc(const sv_allocator *a, sv_tally *t, void *p, size_t old_size, size_t new_size)
{
    if (!p)
        return sv_mem_alloc(a, t, new_size);
    if (new_size == 0) {
        sv_mem_free(a, t, p, old_size);
        return NULL;
    }
    void *q = a->realloc(a->ctx, p, new_size);
    if (q) {
        tally_add(a, t, old_size, -1);
        tally_add(a, t, new_size, 1);
    }
    return q;
}

void sv_mem_free(const sv_allocator *a, sv_tally *t, void *p, size_t size)
{
    if (!p)
        return;
    tally_add(a, t, size, -1);
    a->free(a->ctx, p);
}

long long sv_tally_get(const sv_tally *t)
{
    return atomic_load_explicit(&t->bytes, memory_order_relaxed);
}
