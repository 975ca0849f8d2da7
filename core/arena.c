/* jemalloc accounts, own arenas and shared pools (see arena.h). */
#include "arena.h"

#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define POOL_MAX 256u

struct sv_arena {
    unsigned index;          /* jemalloc arena index */
    int flags;               /* MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE */
    atomic_size_t bytes;     /* sallocx() of every live block */
    sv_arena_pool *pool;     /* NULL: the arena is the account's own */
    unsigned slot;           /* its arena's place in the pool */
    sv_allocator hook;
};

typedef struct pool_arena {
    unsigned index;
    unsigned accounts;
} pool_arena;

struct sv_arena_pool {
    pthread_mutex_t mu;
    unsigned max, n;
    pool_arena arenas[POOL_MAX];
    unsigned accounts;
    atomic_size_t accounted;  /* bytes of open accounts, summed as they change */
    size_t leaked;
};

static void count(sv_arena *a, long long delta)
{
    if (delta >= 0)
        atomic_fetch_add_explicit(&a->bytes, (size_t)delta, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&a->bytes, (size_t)-delta, memory_order_relaxed);
    if (a->pool) {
        if (delta >= 0)
            atomic_fetch_add_explicit(&a->pool->accounted, (size_t)delta, memory_order_relaxed);
        else
            atomic_fetch_sub_explicit(&a->pool->accounted, (size_t)-delta, memory_order_relaxed);
    }
}

static void *arena_alloc(void *ctx, size_t size)
{
    sv_arena *a = ctx;
    void *p = mallocx(size, a->flags);
    if (p)
        count(a, (long long)sallocx(p, 0));
    return p;
}

static void *arena_realloc(void *ctx, void *p, size_t size)
{
    sv_arena *a = ctx;
    size_t old = sallocx(p, 0);
    void *q = rallocx(p, size, a->flags);
    if (q)
        count(a, (long long)sallocx(q, 0) - (long long)old);
    return q;
}

static void arena_dealloc(void *ctx, void *p)
{
    sv_arena *a = ctx;
    count(a, -(long long)sallocx(p, 0));
    dallocx(p, MALLOCX_TCACHE_NONE);
}

static size_t arena_good_size(void *ctx, size_t size)
{
    sv_arena *a = ctx;
    return nallocx(size, a->flags);
}

static int new_jemalloc_arena(unsigned *index)
{
    size_t len = sizeof *index;
    return mallctl("arenas.create", index, &len, NULL, 0);
}

static void destroy_jemalloc_arena(unsigned index)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.destroy", index);
    mallctl(name, NULL, NULL, NULL, 0);
}

static sv_arena *account_new(unsigned index)
{
    sv_arena *a = malloc(sizeof *a);
    if (!a)
        return NULL;
    a->index = index;
    a->flags = MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE;
    atomic_init(&a->bytes, 0);
    a->pool = NULL;
    a->slot = 0;
    a->hook = (sv_allocator){.alloc = arena_alloc,
                             .realloc = arena_realloc,
                             .free = arena_dealloc,
                             .good_size = arena_good_size,
                             .ctx = a};
    return a;
}

sv_arena *sv_arena_create(void)
{
    unsigned index = 0;
    if (new_jemalloc_arena(&index) != 0)
        return NULL;
    sv_arena *a = account_new(index);
    if (!a)
        destroy_jemalloc_arena(index);
    return a;
}

sv_arena *sv_arena_create_in(sv_arena_pool *p)
{
    pthread_mutex_lock(&p->mu);
    /* The arena with the fewest accounts; a new one while the pool may
     * still grow and every arena has some. */
    unsigned best = 0;
    for (unsigned i = 1; i < p->n; i++)
        if (p->arenas[i].accounts < p->arenas[best].accounts)
            best = i;
    if (p->n == 0 || (p->arenas[best].accounts > 0 && p->n < p->max)) {
        unsigned index = 0;
        if (new_jemalloc_arena(&index) == 0) {
            best = p->n++;
            p->arenas[best] = (pool_arena){index, 0};
        } else if (p->n == 0) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
    }
    sv_arena *a = account_new(p->arenas[best].index);
    if (a) {
        a->pool = p;
        a->slot = best;
        p->arenas[best].accounts++;
        p->accounts++;
    }
    pthread_mutex_unlock(&p->mu);
    return a;
}

void sv_arena_free(sv_arena *a)
{
    if (!a)
        return;
    if (!a->pool) {
        destroy_jemalloc_arena(a->index);
    } else {
        sv_arena_pool *p = a->pool;
        size_t left = atomic_load(&a->bytes);
        pthread_mutex_lock(&p->mu);
        p->arenas[a->slot].accounts--;
        p->accounts--;
        /* Blocks an account did not free stay in the shared arena: keep
         * them visible instead of letting the accounts' sum drift. */
        p->leaked += left;
        pthread_mutex_unlock(&p->mu);
        if (left)
            atomic_fetch_sub(&p->accounted, left);
    }
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

size_t sv_arena_allocated(const sv_arena *a)
{
    return atomic_load_explicit(&a->bytes, memory_order_relaxed);
}

void sv_jemalloc_refresh(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    mallctl("epoch", &epoch, &len, &epoch, len);
}

size_t sv_jemalloc_stat(const char *name)
{
    size_t v = 0, len = sizeof v;
    if (mallctl(name, &v, &len, NULL, 0) != 0)
        return 0;
    return v;
}

static size_t arena_stat(unsigned index, const char *what)
{
    char name[96];
    snprintf(name, sizeof name, "stats.arenas.%u.%s", index, what);
    return sv_jemalloc_stat(name);
}

size_t sv_arena_jemalloc_allocated(const sv_arena *a)
{
    sv_jemalloc_refresh();
    return arena_stat(a->index, "small.allocated") + arena_stat(a->index, "large.allocated");
}

sv_arena_pool *sv_arena_pool_create(unsigned arenas)
{
    if (arenas < 1 || arenas > POOL_MAX)
        return NULL;
    sv_arena_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->max = arenas;
    atomic_init(&p->accounted, 0);
    return p;
}

void sv_arena_pool_free(sv_arena_pool *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->n; i++)
        destroy_jemalloc_arena(p->arenas[i].index);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void sv_arena_pool_stats_get(sv_arena_pool *p, sv_arena_pool_stats *out)
{
    sv_jemalloc_refresh();
    pthread_mutex_lock(&p->mu);
    out->arenas = p->n;
    out->accounts = p->accounts;
    out->leaked = p->leaked;
    out->accounted = atomic_load(&p->accounted);
    out->jemalloc = 0;
    out->metadata = 0;
    for (unsigned i = 0; i < p->n; i++) {
        unsigned ix = p->arenas[i].index;
        out->jemalloc += arena_stat(ix, "small.allocated") + arena_stat(ix, "large.allocated");
        out->metadata += arena_stat(ix, "base") + arena_stat(ix, "internal");
    }
    pthread_mutex_unlock(&p->mu);
}
