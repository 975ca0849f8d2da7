/* jemalloc arena binding for the allocator hook (see arena.h). */
#include "arena.h"

#include <jemalloc/jemalloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct sv_arena {
    unsigned index;   /* jemalloc arena index from arenas.create */
    int flags;        /* MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE */
    sv_allocator hook;
};

static void *arena_alloc(void *ctx, size_t size)
{
    sv_arena *a = ctx;
    return mallocx(size, a->flags);
}

static void *arena_realloc(void *ctx, void *p, size_t size)
{
    sv_arena *a = ctx;
    return rallocx(p, size, a->flags);
}

static void arena_dealloc(void *ctx, void *p)
{
    sv_arena *a = ctx;
    dallocx(p, MALLOCX_TCACHE_NONE);
    (void)a;
}

static size_t arena_good_size(void *ctx, size_t size)
{
    sv_arena *a = ctx;
    return nallocx(size, a->flags);
}

sv_arena *sv_arena_create(void)
{
    sv_arena *a = malloc(sizeof *a);
    if (!a)
        return NULL;
    unsigned index = 0;
    size_t len = sizeof index;
    if (mallctl("arenas.create", &index, &len, NULL, 0) != 0) {
        free(a);
        return NULL;
    }
    a->index = index;
    a->flags = MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE;
    a->hook = (sv_allocator){.alloc = arena_alloc,
                             .realloc = arena_realloc,
                             .free = arena_dealloc,
                             .good_size = arena_good_size,
                             .ctx = a};
    return a;
}

void sv_arena_free(sv_arena *a)
{
    if (!a)
        return;
    char name[64];
    snprintf(name, sizeof name, "arena.%u.destroy", a->index);
    mallctl(name, NULL, NULL, NULL, 0);
    free(a);
}

const sv_allocator *sv_arena_allocator(sv_arena *a)
{
    return &a->hook;
}

unsigned sv_arena_index(const sv_arena *a)
{
    return a->index;
}

static size_t read_size(const char *name)
{
    size_t v = 0, len = sizeof v;
    if (mallctl(name, &v, &len, NULL, 0) != 0)
        return 0;
    return v;
}

size_t sv_arena_allocated(sv_arena *a)
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    mallctl("epoch", &epoch, &len, &epoch, len);
    char name[96];
    snprintf(name, sizeof name, "stats.arenas.%u.small.allocated", a->index);
    size_t small = read_size(name);
    snprintf(name, sizeof name, "stats.arenas.%u.large.allocated", a->index);
    size_t large = read_size(name);
    return small + large;
}
