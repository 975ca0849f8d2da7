/*
 * A jemalloc arena per collection: binds the sv_allocator hook to an arena
 * of its own so that the arena's counters are the collection's true memory.
 *
 * Allocations use mallocx(MALLOCX_ARENA(i) | MALLOCX_TCACHE_NONE): the thread
 * cache would keep freed blocks out of the arena's counters. good_size is
 * nallocx, so growable structures use the size class they are charged for.
 */
#ifndef SV_ARENA_H
#define SV_ARENA_H

#include <stddef.h>

#include "slimvec.h"

typedef struct sv_arena sv_arena;

/* NULL when jemalloc cannot create an arena. */
sv_arena *sv_arena_create(void);
/* Destroys the arena (every block still in it is released). NULL: no-op. */
void sv_arena_free(sv_arena *a);
const sv_allocator *sv_arena_allocator(sv_arena *a);
unsigned sv_arena_index(const sv_arena *a);
/* Live bytes in the arena (small + large allocated), after an epoch refresh. */
size_t sv_arena_allocated(sv_arena *a);

#endif
