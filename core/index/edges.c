/* Neighbour lists: bit-packed immutable blocks, lock-free readers (see edges.h). */
#include "edges.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define WORDS_PER_CHUNK 512u /* 8 KiB of words (at 64 KiB the unused words of
                                 the last chunk cost 5 bytes a vector at 10,000) */
#define N_STRIPES 256u        /* writer locks, slot % N_STRIPES */
#define PTR_MASK ((UINT64_C(1) << 48) - 1)

typedef struct retired {
    uint64_t *block;
    uint32_t bytes;
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

/* ---- the word and the block ------------------------------------------------ */

static inline uint64_t pack(const uint64_t *block, uint32_t count, uint32_t width)
{
    return (uint64_t)(uintptr_t)block | ((uint64_t)count << 48) | ((uint64_t)width << 56);
}

static inline uint64_t *word_block(uint64_t w)
{
    return (uint64_t *)(uintptr_t)(w & PTR_MASK);
}

static inline uint32_t word_count(uint64_t w)
{
    return (uint32_t)(w >> 48) & 0xffu;
}

static inline uint32_t word_width(uint64_t w)
{
    return (uint32_t)(w >> 56);
}

/* Bytes of a block of count values of width bits: whole 64-bit words, so
 * the decoder reads only words that hold value bits. */
static inline uint32_t block_bytes(uint32_t count, uint32_t width)
{
    return (uint32_t)(((uint64_t)count * width + 63) / 64) * 8;
}

static inline _Atomic uint64_t *word_at(const sv_edges *e, uint32_t slot)
{
    return &e->chunks[slot / WORDS_PER_CHUNK][slot % WORDS_PER_CHUNK];
}

static inline uint32_t bits_of(uint32_t v)
{
    return v ? 32u - (uint32_t)__builtin_clz(v) : 1u;
}

/* The values of a block: v[0] = the smallest id, v[i] = ids[i] - ids[i-1]. */
static uint32_t decode(uint64_t w, uint32_t *out)
{
    uint32_t n = word_count(w), width = word_width(w);
    const uint64_t *b = word_block(w);
    uint64_t mask = (UINT64_C(1) << width) - 1;
    uint64_t pos = 0;
    uint32_t acc = 0;
    for (uint32_t i = 0; i < n; i++, pos += width) {
        uint32_t wi = (uint32_t)(pos >> 6), sh = (uint32_t)(pos & 63);
        uint64_t v = b[wi] >> sh;
        if (sh + width > 64)
            v |= b[wi + 1] << (64 - sh);
        acc += (uint32_t)(v & mask);
        out[i] = acc;
    }
    return n;
}

/* Lists are short (at most SV_R_MAX, typically under 64): insertion sort. */
static void sort_ids(uint32_t *ids, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        uint32_t v = ids[i], j = i;
        while (j > 0 && ids[j - 1] > v) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = v;
    }
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

static void free_block(sv_edges *e, uint64_t *block, uint32_t bytes)
{
    sv_mem_free(e->alloc, e->tally, block, bytes);
}

static void free_word(sv_edges *e, uint64_t w)
{
    if (w)
        free_block(e, word_block(w), block_bytes(word_count(w), word_width(w)));
}

void sv_edges_free(sv_edges *e)
{
    if (!e)
        return;
    sv_edges_reclaim(e);
    for (uint32_t c = 0; c < e->n_chunks; c++) {
        for (uint32_t i = 0; i < WORDS_PER_CHUNK; i++)
            free_word(e, atomic_load_explicit(&e->chunks[c][i], memory_order_relaxed));
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

uint32_t sv_edges_get(const sv_edges *e, uint32_t slot, uint32_t *out)
{
    return decode(atomic_load_explicit(word_at(e, slot), memory_order_acquire), out);
}

uint32_t sv_edges_count(const sv_edges *e, uint32_t slot)
{
    return word_count(atomic_load_explicit(word_at(e, slot), memory_order_acquire));
}

void sv_edges_prefetch(const sv_edges *e, uint32_t slot)
{
    uint64_t w = atomic_load_explicit(word_at(e, slot), memory_order_acquire);
    if (w) {
        const char *b = (const char *)word_block(w);
        __builtin_prefetch(b);
        if (block_bytes(word_count(w), word_width(w)) > 64)
            __builtin_prefetch(b + 64);
    }
}

uint32_t sv_edges_bytes(const sv_edges *e, uint32_t slot)
{
    uint64_t w = atomic_load_explicit(word_at(e, slot), memory_order_relaxed);
    return w ? (uint32_t)sv_good_size(e->alloc, block_bytes(word_count(w), word_width(w))) : 0;
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
        uint32_t bytes = block_bytes(word_count(w), word_width(w));
        e->retired[e->n_retired++] = (retired){word_block(w), bytes};
        atomic_fetch_add_explicit(&e->retired_bytes, bytes, memory_order_relaxed);
    }
    pthread_mutex_unlock(&e->retired_lock);
}

/* A new block for ids[0..n) (n >= 1; sorted in place), and its word. */
static sv_status encode(sv_edges *e, uint32_t *ids, uint32_t n, uint64_t *word)
{
    sort_ids(ids, n);
    uint32_t width = bits_of(ids[0]);
    for (uint32_t i = 1; i < n; i++) {
        uint32_t b = bits_of(ids[i] - ids[i - 1]);
        if (b > width)
            width = b;
    }
    uint32_t bytes = block_bytes(n, width);
    uint64_t *block = sv_mem_alloc(e->alloc, e->tally, bytes);
    if (!block)
        return SV_ERR_RESOURCE;
    /* The word keeps 48 bits of pointer; anything else is a platform we do
     * not support, and must not silently corrupt lists. */
    if (((uintptr_t)block & ~(uintptr_t)PTR_MASK) != 0)
        abort();
    memset(block, 0, bytes);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < n; i++, pos += width) {
        uint64_t v = i ? ids[i] - ids[i - 1] : ids[0];
        uint32_t wi = (uint32_t)(pos >> 6), sh = (uint32_t)(pos & 63);
        block[wi] |= v << sh;
        if (sh + width > 64)
            block[wi + 1] |= v >> (64 - sh);
    }
    *word = pack(block, n, width);
    return SV_OK;
}

/* Publish a list (n = 0: none) in place of slot's, retiring the old block. */
static sv_status publish(sv_edges *e, uint32_t slot, uint32_t *ids, uint32_t n)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    uint64_t old = atomic_load_explicit(wp, memory_order_relaxed);
    uint64_t w = 0;
    if (retire_reserve(e))
        return SV_ERR_RESOURCE;
    if (n > 0 && encode(e, ids, n, &w) != SV_OK) {
        retire_cancel(e);
        return SV_ERR_RESOURCE;
    }
    atomic_store_explicit(wp, w, memory_order_release);
    retire(e, old);
    return SV_OK;
}

sv_status sv_edges_set(sv_edges *e, uint32_t slot, const uint32_t *ids, uint32_t n)
{
    uint32_t copy[SV_R_MAX];
    memcpy(copy, ids, (size_t)n * sizeof *copy);
    return publish(e, slot, copy, n);
}

int sv_edges_append(sv_edges *e, uint32_t slot, uint32_t id, uint32_t max_degree)
{
    uint32_t ids[SV_R_MAX];
    uint32_t count = decode(atomic_load_explicit(word_at(e, slot), memory_order_relaxed), ids);
    if (count >= max_degree)
        return 0;
    ids[count] = id;
    return publish(e, slot, ids, count + 1) == SV_OK ? 1 : -1;
}

sv_status sv_edges_encode(sv_edges *e, uint32_t *ids, uint32_t n, uint64_t *word)
{
    *word = 0;
    return n ? encode(e, ids, n, word) : SV_OK;
}

void sv_edges_install(sv_edges *e, uint32_t slot, uint64_t word)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    uint64_t w = word == SV_EDGES_EMPTY ? 0 : word;
    free_word(e, atomic_exchange_explicit(wp, w, memory_order_acq_rel));
}

void sv_edges_discard(sv_edges *e, uint64_t word)
{
    if (word != SV_EDGES_EMPTY)
        free_word(e, word);
}

void sv_edges_clear(sv_edges *e, uint32_t slot)
{
    _Atomic uint64_t *wp = word_at(e, slot);
    free_word(e, atomic_exchange_explicit(wp, 0, memory_order_acq_rel));
}

uint32_t sv_edges_slots(const sv_edges *e)
{
    return e->n_chunks * WORDS_PER_CHUNK;
}

void sv_edges_reclaim(sv_edges *e)
{
    pthread_mutex_lock(&e->retired_lock);
    for (size_t i = 0; i < e->n_retired; i++)
        free_block(e, e->retired[i].block, e->retired[i].bytes);
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
