/*
 * Internal allocation helpers over the sv_allocator hook. Core code allocates
 * only through these (never malloc/free directly), so every byte a collection
 * holds is charged to the allocator it was created with. Each helper also
 * keeps a per-part byte tally (the usable sizes of live blocks) so stats can
 * show the breakdown; the tally is labelled an estimate, the arena is the
 * measurement.
 */
#ifndef SV_ALLOC_H
#define SV_ALLOC_H

#include <stdatomic.h>
#include <stddef.h>

#include "slimvec.h"

/* A tally of live bytes for one part of a collection. */
typedef struct sv_tally {
    _Atomic long long bytes;
} sv_tally;

/* Usable size the allocator reserves for `size` (size itself without good_size). */
size_t sv_good_size(const sv_allocator *a, size_t size);

/* Allocate/free charging `t` (t may be NULL). sv_mem_alloc returns NULL on
 * failure or size 0 overflow; sv_mem_free(NULL) is a no-op. `size` passed to
 * free/realloc must be the size asked for at allocation. */
void *sv_mem_alloc(const sv_allocator *a, sv_tally *t, size_t size);
void *sv_mem_calloc(const sv_allocator *a, sv_tally *t, size_t count, size_t size);
void *sv_mem_realloc(const sv_allocator *a, sv_tally *t, void *p, size_t old_size, size_t new_size);
void sv_mem_free(const sv_allocator *a, sv_tally *t, void *p, size_t size);

long long sv_tally_get(const sv_tally *t);

#endif
