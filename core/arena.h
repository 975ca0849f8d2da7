/*
 * jemalloc binding of the allocator hook: every byte a collection holds is
 * counted where jemalloc says it lives.
 *
 * An account (sv_arena) belongs to one collection. It allocates in a
 * jemalloc arena with mallocx(MALLOCX_ARENA(i) | MALLOCX_TCACHE_NONE) (the
 * thread cache would keep freed blocks out of the arena's counters) and
 * keeps the sum of sallocx() over its live blocks: jemalloc's own usable
 * size of each block, the same figure the arena's `small.allocated +
 * large.allocated` statistics add up. good_size is nallocx, so growable
 * structures use the size class they are charged for.
 *
 * Two ways to get an account:
 *   - sv_arena_create(): a jemalloc arena of its own (destroyed with it).
 *     Simple, but each arena costs ~140 KB of jemalloc metadata, a refresh
 *     of jemalloc's statistics walks every arena, and jemalloc stops at
 *     4,096 arenas: one per collection does not scale to many collections.
 *   - sv_arena_create_in(pool): an account in one of the pool's few shared
 *     arenas. Many accounts share an arena, each counting its own bytes
 *     exactly; the pool checks that an arena's jemalloc statistics equal
 *     the sum of its accounts (sv_arena_pool_check), so the figure stays
 *     the allocator's, not the engine's.
 * Reading an account is an atomic load: no statistics refresh.
 */
#ifndef SV_ARENA_H
#define SV_ARENA_H

#include <stddef.h>

#include "slimvec.h"

typedef struct sv_arena sv_arena;
typedef struct sv_arena_pool sv_arena_pool;

/* An account with a jemalloc arena of its own; NULL when jemalloc cannot
 * create one. */
sv_arena *sv_arena_create(void);
/* An account in the pool's least used arena (arenas are created as the
 * pool needs them, up to its size); NULL on failure. */
sv_arena *sv_arena_create_in(sv_arena_pool *p);
/* Frees the account. An own arena is destroyed (every block still in it is
 * released); an account in a pool must be empty (its collection freed
 * everything), else its bytes stay counted as the pool's leak. NULL: no-op. */
void sv_arena_free(sv_arena *a);
const sv_allocator *sv_arena_allocator(sv_arena *a);
unsigned sv_arena_index(const sv_arena *a);
/* Live bytes of the account (jemalloc's usable sizes of its blocks). */
size_t sv_arena_allocated(const sv_arena *a);
/* Live bytes of the whole jemalloc arena the account is in, from jemalloc's
 * statistics (refreshes them: call once per scrape, not per request). */
size_t sv_arena_jemalloc_allocated(const sv_arena *a);

/* A pool of up to `arenas` shared jemalloc arenas (1..256). */
sv_arena_pool *sv_arena_pool_create(unsigned arenas);
/* Destroys the arenas; every account must be freed before. NULL: no-op. */
void sv_arena_pool_free(sv_arena_pool *p);

typedef struct sv_arena_pool_stats {
    unsigned arenas;          /* created so far */
    unsigned accounts;        /* open accounts */
    size_t accounted;         /* the accounts' bytes */
    size_t jemalloc;          /* the arenas' allocated bytes, from jemalloc's statistics */
    size_t metadata;          /* jemalloc metadata of the pool's arenas */
    size_t leaked;            /* bytes freed accounts left behind */
} sv_arena_pool_stats;
/* Figures of the pool (refreshes jemalloc's statistics once). */
void sv_arena_pool_stats_get(sv_arena_pool *p, sv_arena_pool_stats *out);

/* Refresh jemalloc's statistics (the "epoch"), then read a process-wide
 * size_t statistic such as "stats.allocated"; 0 when unknown. */
void sv_jemalloc_refresh(void);
size_t sv_jemalloc_stat(const char *name);

#endif
