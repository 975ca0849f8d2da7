/* Neighbour lists with on-demand blocks and lock-free readers (see edges.h). */
#include "edges.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define WORDS_PER_CHUNK 8192u /* 64 KiB of words */
#define N_STRIPES 256u        /* writer locks, slot % N_STRIPES */
#define PTR_MASK ((UINT64_C(1) << 48) - 1)

typedef struct retired {
    uint32_t *ids;
    uint32_t cap;
} retired;

struct sv_edges {
    const sv_allocator *alloc;
    sv_tally *tally;
    _Atomic uint64_t **chunks; /* chunk table of words */
    uint32_t n_chunks, chunks_cap;
    pthread_mutex_t stripes[N_STRIPES];
    pthread_mutex_t retired_lock; /* guards the retired list */
    retired *retired;
    size_t n_retired, retired_cap;
    size_t n_reserved;    /* entries promised to writers not yet retired */
    atomic_size_t retired_bytes;
};

static inline uint64_t pack(uint32_t *ids, uint32_t count, uint32_t cap)
{
    return (uint64_t)(uintptr_t)ids | ((uint64_t)count << 48) | ((uint64_t)cap << 56);
}

static inline uint32_t *word_ids(uint64_t w)
{
    return (uint32_t *)(uintptr_t)(w & PTR_MASK);
}

static inline uint32_t word_count(uint64_t w)
{
    return (uint32_t)(w >> 48) & 0xffu;
}

static inline uint32_t word_cap(uint64_t w)
{
    return (uint32_t)(w >> 56);
}

static inline _Atomic uint64_t *word_at(const sv_edges *e, uint32_t slot)
{
    return &e->chunks[slot / WORDS_PER_CHUNK][slot % WORDS_PER_CHUNK];
}

sv_edges *sv_edges_create(const sv_allocator *a, sv_tally *t)
{
    sv_edges *e = sv_mem_calloc(a, t, 1, sizeof *e);
    if (!e)
        return NULL;
    e->alloc = a;
    e->tally = t;
    for (uint32_t i = 0; i < N_STRIPES; i++)
        pthread_mutex_init(&e->stripes[i], NULL);
    pthread_mutex_init(&e->retired_lock, NULL);
    return e;
}

static void free_block(sv_edges *e, uint32_t *ids, uint32_t cap)
{
    sv_mem_free(e->alloc, e->tally, ids, (size_t)cap * sizeof(uint32_t));
}

void sv_edges_free(sv_edges *e)
{
    if (!e)
        return;
    sv_edges_reclaim(e);
    for (uint32_t c = 0; c < e->n_chunks; c++) {
        for (uint32_t i = 0; i < WORDS_PER_CHUNK; i++) {
            uint64_t w = atomic_load_explicit(&e->chunks[c][i], memory_order_relaxed);
            if (w)
                free_block(e, word_ids(w), word_cap(w));
        }
        sv_mem_free(e->alloc, e->tally, (void *)e->chunks[c], WORDS_PER_CHUNK * sizeof(uint64_t));
    }
    sv_mem_free(e->alloc, e->tally, e->chunks, e->chunks_cap * sizeof *e->chunks);
    sv_mem_free(e->alloc, e->tally, e->retired, e->retired_cap * sizeof *e->retired);
    for (uint32_t i = 0; i < N_STRIPES; i++)
        pthread_mutex_destroy(&e->stripes[i]);
    pthread_mutex_destroy(&e->retired_lock);
    sv_mem_free(e->alloc, e->tally, e, sizeof *e);
}

sv_status sv_edges_reserve(sv_edges *e, uint32_t n_slots)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + WORDS_PER_CHUNK - 1) / WORDS_PER_CHUNK);
    if (need <= e->n_chunks)
        return SV_OK;
    if (need > e->chunks_cap) {
        uint32_t cap = e->chunks_cap ? e->chunks_cap : 16;
        while (cap < need)
            cap *= 2;
        void *t = sv_mem_realloc(e->alloc, e->tally, e->chunks, e->chunks_cap * sizeof *e->chunks,
                                 cap * sizeof *e->chunks);
        if (!t)
            return SV_ERR_RESOURCE;
        e->chunks = t;
        e->chunks_cap = cap;
    }
    while (e->n_chunks < need) {
        _Atomic uint64_t *c = sv_mem_calloc(e->alloc, e->tally, WORDS_PER_CHUNK, sizeof(uint64_t));
        if (!c)
            return SV_ERR_RESOURCE;
        e->chunks[e->n_chunks++] = c;
    }
    return SV_OK;
}

const uint32_t *sv_edges_view(const sv_edges *e, uint32_t slot, uint32_t *count)
{
    uint64_t w = atomic_load_explicit(word_at(e, slot), memory_order_acquire);
    *count = word_count(w);
    return word_ids(w);
}

uint32_t *sv_edges_mutable(sv_edges *e, uint32_t slot, uint32_t *count)
{
    uint64_t w = atomic_load_explicit(word_at(e, slot), memory_order_relaxed);
    *count = word_count(w);
    return word_ids(w);
}

void sv_edges_move(sv_edges *e, uint32_t from, uint32_t to)
{
    uint64_t w = atomic_load_explicit(word_at(e, from), memory_order_relaxed);
    assert(atomic_load_explicit(word_at(e, to), memory_order_relaxed) == 0);
    atomic_store_explicit(word_at(e, to), w, memory_order_relaxed);
    atomic_store_explicit(word_at(e, from), 0, memory_order_relaxed);
}

void sv_edges_shrink(sv_edges *e, uint32_t n_slots)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + WORDS_PER_CHUNK - 1) / WORDS_PER_CHUNK);
    while (e->n_chunks > need) {
        e->n_chunks--;
        sv_mem_free(e->alloc, e->tally, (void *)e->chunks[e->n_chunks], WORDS_PER_CHUNK * sizeof(uint64_t));
        e->chunks[e->n_chunks] = NULL;
    }
}

uint32_t sv_edges_capacity(const sv_edges *e, uint32_t slot)
{
    return word_cap(atomic_load_explicit(word_at(e, slot), memory_order_relaxed));
}

void sv_edges_lock(sv_edges *e, uint32_t slot)
{
    pthread_mutex_lock(&e->stripes[slot % N_STRIPES]);
}

void sv_edges_unlock(sv_edges *e, uint32_t slot)
{
    pthread_mutex_unlock(&e->stripes[slot % N_STRIPES]);
}

/*
 * A writer reserves its retired-list entry before publishing a new block, so
 * that once a block is published retiring the old one cannot fail: the old
 * one can be neither freed (a reader may hold it) nor forgotten (the
 * accounting would lie).
 */
static int retire_reserve(sv_edges *e)
{
    int rc = 0;
    pthread_mutex_lock(&e->retired_lock);
    size_t need = e->n_retired + e->n_reserved + 1;
    if (need > e->retired_cap) {
        size_t cap = e->retired_cap ? e->retired_cap * 2 : 256;
        retired *t = sv_mem_realloc(e->alloc, e->tally, e->retired,
                                    e->retired_cap * sizeof *e->retired, cap * sizeof *t);
        if (t) {
            e->retired = t;
            e->retired_cap = cap;
        } else {
            rc = -1;
        }
    }
    if (rc == 0)
        e->n_reserved++;
    pthread_mutex_unlock(&e->retired_lock);
    return rc;
}

static void retire_cancel(sv_edges *e)
{
    pthread_mutex_lock(&e->retired_lock);
    e->n_reserved--;
    pthread_mutex_unlock(&e->retired_lock);
}

/* Retire the block of word w (0: nothing) into the reserved entry. */
static void retire(sv_edges *e, uint64_t w)
{
    pthread_mutex_lock(&e->retired_lock);
    e->n_reserved--;
    if (w) {
        e->retired[e->n_retired++] = (retired){word_ids(w), word_cap(w)};
        atomic_fetch_add_explicit(&e->retired_bytes, word_cap(w) * sizeof(uint32_t),
                                  memory_order_relaxed);
    }
    pthread_mutex_unlock(&e->retired_lock);
}

/* A block of at least n ids, sized to its allocator class (capped at 255). */
static uint32_t *new_block(sv_edges *e, uint32_t n, uint32_t *cap_out)
{
    size_t bytes = sv_good_size(e->alloc, (size_t)n * sizeof(uint32_t));
    uint32_t cap = (uint32_t)(bytes / sizeof(uint32_t));
    if (cap > SV_R_MAX)
        cap = SV_R_MAX;
    if (cap < n)
        cap = n;
    uint32_t *ids = sv_mem_alloc(e->alloc, e->tally, (size_t)cap * sizeof(uint32_t));
    if (!ids)
        return NULL;
    /* The word keeps 48 bits of pointer; anything else is a platform we do
     * not support, and must not silently corrupt lists. */
    if (((uintptr_t)ids & ~(uintptr_t)PTR_MASK) != 0)
        abort();
    *cap_out = cap;
    return ids;
}

sv_status sv_edges_set(sv_edges *e, uint32_t slot, const uint32_t *ids, uint32_t n)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    uint64_t old = atomic_load_explicit(wp, memory_order_relaxed);
    uint64_t w = 0;
    if (retire_reserve(e))
        return SV_ERR_RESOURCE;
    if (n > 0) {
        uint32_t cap = 0;
        uint32_t *block = new_block(e, n, &cap);
        if (!block) {
            retire_cancel(e);
            return SV_ERR_RESOURCE;
        }
        memcpy(block, ids, (size_t)n * sizeof(uint32_t));
        w = pack(block, n, cap);
    }
    atomic_store_explicit(wp, w, memory_order_release);
    retire(e, old);
    return SV_OK;
}

int sv_edges_append(sv_edges *e, uint32_t slot, uint32_t id, uint32_t max_degree)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    uint32_t count = word_count(w), cap = word_cap(w);
    if (count >= max_degree)
        return 0;
    if (count < cap) {
        uint32_t *ids = word_ids(w);
        ids[count] = id; /* past the published count: no reader looks here */
        atomic_store_explicit(wp, pack(ids, count + 1, cap), memory_order_release);
        return 1;
    }
    if (retire_reserve(e))
        return -1;
    uint32_t ncap = 0;
    uint32_t *block = new_block(e, count + 1, &ncap);
    if (!block) {
        retire_cancel(e);
        return -1;
    }
    if (count)
        memcpy(block, word_ids(w), (size_t)count * sizeof(uint32_t));
    block[count] = id;
    atomic_store_explicit(wp, pack(block, count + 1, ncap), memory_order_release);
    retire(e, w);
    return 1;
}

void sv_edges_clear(sv_edges *e, uint32_t slot)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    uint64_t old = atomic_exchange_explicit(wp, 0, memory_order_acq_rel);
    if (old)
        free_block(e, word_ids(old), word_cap(old));
}

uint32_t sv_edges_slots(const sv_edges *e)
{
    return e->n_chunks * WORDS_PER_CHUNK;
}

void sv_edges_reclaim(sv_edges *e)
{
    pthread_mutex_lock(&e->retired_lock);
    for (size_t i = 0; i < e->n_retired; i++)
        free_block(e, e->retired[i].ids, e->retired[i].cap);
    e->n_retired = 0;
    atomic_store_explicit(&e->retired_bytes, 0, memory_order_relaxed);
    /* The list itself is scratch of a flush: give it back unless a writer
     * holds a reservation in it. */
    if (e->n_reserved == 0) {
        sv_mem_free(e->alloc, e->tally, e->retired, e->retired_cap * sizeof *e->retired);
        e->retired = NULL;
        e->retired_cap = 0;
    }
    pthread_mutex_unlock(&e->retired_lock);
}

size_t sv_edges_retired_bytes(sv_edges *e)
{
    return atomic_load_explicit(&e->retired_bytes, memory_order_relaxed);
}
