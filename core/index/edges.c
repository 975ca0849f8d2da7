/* Neighbour lists: bit-packed immutable blocks, lock-free readers (see edges.h). */
#include "edges.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define WORDS_PER_CHUNK 2048u /* 8 KiB of handles (at 64 KiB the unused words of
                                 the last chunk cost 5 bytes a vector at 10,000) */
#define N_STRIPES 256u        /* writer locks, slot % N_STRIPES */
#define SLAB_MAX_UNITS 32768u /* 256 KiB (a handle's low 16 bits address a unit) */
#define SLAB_PACK_UNITS 8192u /* 64 KiB: the slabs a repack fills (an exact size class) */
#define SLAB_MIN_UNITS 512u   /* 4 KiB: the first slab of a small collection */
#define DIR_SLABS 256u        /* slabs per directory; 256 directories */
#define MAX_UNITS 129u        /* the largest block: 16 + 255 x 32 bits in 8-byte units */

/* 256 slabs and their sizes, allocated when the first of them is made. */
typedef struct slab_dir {
    uint64_t *slab[DIR_SLABS];
    uint32_t units[DIR_SLABS];
} slab_dir;

typedef struct retired {
    uint32_t handle;
    uint32_t units;
} retired;

struct sv_edges {
    const sv_allocator *alloc;
    sv_tally *tally;
    _Atomic uint32_t **chunks; /* chunk table of handles, one per slot */
    uint32_t n_chunks, chunks_cap;
    pthread_mutex_t stripes[N_STRIPES];
    /* Block space (space_lock): slabs of 8-byte units, each slab found by
     * a handle's high 16 bits through a two-level table whose entries are
     * written once, before any handle into them is published, and never
     * moved (readers take no lock). */
    pthread_mutex_t space_lock;
    slab_dir *dirs[256];
    uint32_t n_slabs;
    uint32_t bump;             /* next free unit of the last slab */
    uint64_t slab_total;       /* units in all slabs */
    uint64_t used_units;       /* units in published or retired blocks */
    uint32_t slab_hint;        /* units the next slab should have at least (repack) */
    uint32_t free_head[MAX_UNITS + 1]; /* per size: a free block, its first word the next */
    pthread_mutex_t retired_lock; /* guards the retired list */
    retired *retired;
    size_t n_retired, retired_cap;
    size_t n_reserved;    /* entries promised to writers not yet retired */
    atomic_size_t retired_bytes;
};

/* ---- handles and blocks ------------------------------------------------------ */

/* A block: its first 64-bit word holds count (bits 0..7) and width (8..15),
 * the values start at bit 16, whole 8-byte units. Handle 0 is no list (the
 * first slab's unit 0 is never handed out). */
static inline uint32_t block_units(uint32_t count, uint32_t width)
{
    return (uint32_t)((16 + (uint64_t)count * width + 63) / 64);
}

static inline uint64_t *block_at(const sv_edges *e, uint32_t h)
{
    uint32_t slab = h >> 16;
    return e->dirs[slab / DIR_SLABS]->slab[slab % DIR_SLABS] + (h & 0xffffu);
}

static inline uint32_t block_count(const uint64_t *b)
{
    return (uint32_t)(b[0] & 0xffu);
}

static inline uint32_t block_width(const uint64_t *b)
{
    return (uint32_t)((b[0] >> 8) & 0xffu);
}

static inline _Atomic uint32_t *word_at(const sv_edges *e, uint32_t slot)
{
    return &e->chunks[slot / WORDS_PER_CHUNK][slot % WORDS_PER_CHUNK];
}

static inline uint32_t bits_of(uint32_t v)
{
    return v ? 32u - (uint32_t)__builtin_clz(v) : 1u;
}

/* The values of a block: v[0] = the smallest id, v[i] = ids[i] - ids[i-1]. */
static uint32_t decode(const sv_edges *e, uint32_t h, uint32_t *out)
{
    if (!h)
        return 0;
    const uint64_t *b = block_at(e, h);
    uint32_t n = block_count(b), width = block_width(b);
    uint64_t mask = (UINT64_C(1) << width) - 1;
    uint64_t pos = 16;
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

/* ---- block space ---------------------------------------------------------------- */

/* A new slab big enough for `units` (space_lock held): a sixteenth of what
 * the collection has (so the last one's unused tail stays a small share),
 * from 4 KiB up to 256 KiB, grown to the allocator's size class (its slack
 * is usable space, not waste). */
static int slab_add(sv_edges *e, uint32_t units)
{
    if (e->n_slabs == 256u * DIR_SLABS)
        return -1;
    uint64_t want = e->slab_total / 16;
    if (want < e->slab_hint)
        want = e->slab_hint;
    if (want < SLAB_MIN_UNITS)
        want = SLAB_MIN_UNITS;
    if (want < units + 1)
        want = units + 1;
    if (want > SLAB_MAX_UNITS)
        want = SLAB_MAX_UNITS;
    size_t good = sv_good_size(e->alloc, (size_t)want * 8) / 8;
    if (good > want && good <= SLAB_MAX_UNITS)
        want = good;
    uint32_t d = e->n_slabs / DIR_SLABS;
    if (!e->dirs[d] && !(e->dirs[d] = sv_mem_calloc(e->alloc, e->tally, 1, sizeof(slab_dir))))
        return -1;
    uint64_t *slab = sv_mem_alloc(e->alloc, e->tally, (size_t)want * 8);
    if (!slab)
        return -1;
    /* The rest of the last slab is not lost: it goes to the free lists. */
    if (e->n_slabs) {
        uint32_t last = e->n_slabs - 1;
        uint32_t left = e->dirs[last / DIR_SLABS]->units[last % DIR_SLABS] - e->bump;
        while (left) {
            uint32_t u = left > MAX_UNITS ? MAX_UNITS : left;
            uint32_t h = (last << 16) | e->bump;
            block_at(e, h)[0] = e->free_head[u];
            e->free_head[u] = h;
            e->bump += u;
            left -= u;
        }
    }
    e->dirs[d]->slab[e->n_slabs % DIR_SLABS] = slab;
    e->dirs[d]->units[e->n_slabs % DIR_SLABS] = (uint32_t)want;
    e->slab_total += want;
    e->n_slabs++;
    e->bump = e->n_slabs == 1 ? 1 : 0; /* handle 0 means no list */
    return 0;
}

/* A block of `units`; 0 when out of memory. */
static uint32_t space_alloc(sv_edges *e, uint32_t units)
{
    pthread_mutex_lock(&e->space_lock);
    uint32_t h = e->free_head[units];
    if (h) {
        e->free_head[units] = (uint32_t)block_at(e, h)[0];
    } else if (e->n_slabs &&
               e->bump + units <= e->dirs[(e->n_slabs - 1) / DIR_SLABS]->units[(e->n_slabs - 1) % DIR_SLABS]) {
        h = ((e->n_slabs - 1) << 16) | e->bump;
        e->bump += units;
    } else if (slab_add(e, units) == 0) {
        h = ((e->n_slabs - 1) << 16) | e->bump;
        e->bump += units;
    }
    if (h)
        e->used_units += units;
    pthread_mutex_unlock(&e->space_lock);
    return h;
}

static void space_free(sv_edges *e, uint32_t h, uint32_t units)
{
    if (!h)
        return;
    pthread_mutex_lock(&e->space_lock);
    block_at(e, h)[0] = e->free_head[units];
    e->free_head[units] = h;
    e->used_units -= units;
    pthread_mutex_unlock(&e->space_lock);
}

static uint32_t handle_units(const sv_edges *e, uint32_t h)
{
    if (!h)
        return 0;
    const uint64_t *b = block_at(e, h);
    return block_units(block_count(b), block_width(b));
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
    pthread_mutex_init(&e->space_lock, NULL);
    pthread_mutex_init(&e->retired_lock, NULL);
    return e;
}

static void free_slabs(sv_edges *e)
{
    for (uint32_t i = 0; i < e->n_slabs; i++) {
        slab_dir *d = e->dirs[i / DIR_SLABS];
        sv_mem_free(e->alloc, e->tally, d->slab[i % DIR_SLABS], (size_t)d->units[i % DIR_SLABS] * 8);
    }
    for (uint32_t d = 0; d < 256; d++) {
        sv_mem_free(e->alloc, e->tally, e->dirs[d], sizeof(slab_dir));
        e->dirs[d] = NULL;
    }
    e->n_slabs = 0;
    e->bump = 0;
    e->slab_total = e->used_units = 0;
    memset(e->free_head, 0, sizeof e->free_head);
}

void sv_edges_free(sv_edges *e)
{
    if (!e)
        return;
    sv_edges_reclaim(e);
    free_slabs(e);
    for (uint32_t c = 0; c < e->n_chunks; c++)
        sv_mem_free(e->alloc, e->tally, (void *)e->chunks[c], WORDS_PER_CHUNK * sizeof(uint32_t));
    sv_mem_free(e->alloc, e->tally, e->chunks, e->chunks_cap * sizeof *e->chunks);
    sv_mem_free(e->alloc, e->tally, e->retired, e->retired_cap * sizeof *e->retired);
    for (uint32_t i = 0; i < N_STRIPES; i++)
        pthread_mutex_destroy(&e->stripes[i]);
    pthread_mutex_destroy(&e->space_lock);
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
        _Atomic uint32_t *c = sv_mem_calloc(e->alloc, e->tally, WORDS_PER_CHUNK, sizeof(uint32_t));
        if (!c)
            return SV_ERR_RESOURCE;
        e->chunks[e->n_chunks++] = c;
    }
    return SV_OK;
}

uint32_t sv_edges_get(const sv_edges *e, uint32_t slot, uint32_t *out)
{
    return decode(e, atomic_load_explicit(word_at(e, slot), memory_order_acquire), out);
}

uint32_t sv_edges_count(const sv_edges *e, uint32_t slot)
{
    uint32_t h = atomic_load_explicit(word_at(e, slot), memory_order_acquire);
    return h ? block_count(block_at(e, h)) : 0;
}

void sv_edges_prefetch(const sv_edges *e, uint32_t slot)
{
    uint32_t h = atomic_load_explicit(word_at(e, slot), memory_order_acquire);
    if (h) {
        const char *b = (const char *)block_at(e, h);
        __builtin_prefetch(b);
        __builtin_prefetch(b + 64);
    }
}

uint32_t sv_edges_bytes(const sv_edges *e, uint32_t slot)
{
    return handle_units(e, atomic_load_explicit(word_at(e, slot), memory_order_acquire)) * 8;
}

void sv_edges_move(sv_edges *e, uint32_t from, uint32_t to)
{
    uint32_t h = atomic_load_explicit(word_at(e, from), memory_order_relaxed);
    assert(atomic_load_explicit(word_at(e, to), memory_order_relaxed) == 0);
    atomic_store_explicit(word_at(e, to), h, memory_order_relaxed);
    atomic_store_explicit(word_at(e, from), 0, memory_order_relaxed);
}

void sv_edges_shrink(sv_edges *e, uint32_t n_slots)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + WORDS_PER_CHUNK - 1) / WORDS_PER_CHUNK);
    while (e->n_chunks > need) {
        e->n_chunks--;
        sv_mem_free(e->alloc, e->tally, (void *)e->chunks[e->n_chunks], WORDS_PER_CHUNK * sizeof(uint32_t));
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

/* Retire block h (0: nothing) into the reserved entry. */
static void retire(sv_edges *e, uint32_t h)
{
    uint32_t units = handle_units(e, h);
    pthread_mutex_lock(&e->retired_lock);
    e->n_reserved--;
    if (h) {
        e->retired[e->n_retired++] = (retired){h, units};
        atomic_fetch_add_explicit(&e->retired_bytes, (size_t)units * 8, memory_order_relaxed);
    }
    pthread_mutex_unlock(&e->retired_lock);
}

/* A new block for ids[0..n) (n >= 1; sorted in place), and its handle. */
static sv_status encode(sv_edges *e, uint32_t *ids, uint32_t n, uint32_t *handle)
{
    sort_ids(ids, n);
    uint32_t width = bits_of(ids[0]);
    for (uint32_t i = 1; i < n; i++) {
        uint32_t b = bits_of(ids[i] - ids[i - 1]);
        if (b > width)
            width = b;
    }
    uint32_t units = block_units(n, width);
    uint32_t h = space_alloc(e, units);
    if (!h)
        return SV_ERR_RESOURCE;
    uint64_t *block = block_at(e, h);
    memset(block, 0, (size_t)units * 8);
    block[0] = (uint64_t)n | ((uint64_t)width << 8);
    uint64_t pos = 16;
    for (uint32_t i = 0; i < n; i++, pos += width) {
        uint64_t v = i ? ids[i] - ids[i - 1] : ids[0];
        uint32_t wi = (uint32_t)(pos >> 6), sh = (uint32_t)(pos & 63);
        block[wi] |= v << sh;
        if (sh + width > 64)
            block[wi + 1] |= v >> (64 - sh);
    }
    *handle = h;
    return SV_OK;
}

/* Publish a list (n = 0: none) in place of slot's, retiring the old block. */
static sv_status publish(sv_edges *e, uint32_t slot, uint32_t *ids, uint32_t n)
{
    _Atomic uint32_t *wp = word_at(e, slot);
    uint32_t old = atomic_load_explicit(wp, memory_order_relaxed);
    uint32_t h = 0;
    if (retire_reserve(e))
        return SV_ERR_RESOURCE;
    if (n > 0 && encode(e, ids, n, &h) != SV_OK) {
        retire_cancel(e);
        return SV_ERR_RESOURCE;
    }
    atomic_store_explicit(wp, h, memory_order_release);
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
    uint32_t count = decode(e, atomic_load_explicit(word_at(e, slot), memory_order_relaxed), ids);
    if (count >= max_degree)
        return 0;
    ids[count] = id;
    return publish(e, slot, ids, count + 1) == SV_OK ? 1 : -1;
}

sv_status sv_edges_encode(sv_edges *e, uint32_t *ids, uint32_t n, uint64_t *word)
{
    uint32_t h = 0;
    *word = 0;
    if (n && encode(e, ids, n, &h) != SV_OK)
        return SV_ERR_RESOURCE;
    *word = h;
    return SV_OK;
}

void sv_edges_install(sv_edges *e, uint32_t slot, uint64_t word)
{
    _Atomic uint32_t *wp = word_at(e, slot);
    uint32_t h = word == SV_EDGES_EMPTY ? 0 : (uint32_t)word;
    uint32_t old = atomic_exchange_explicit(wp, h, memory_order_acq_rel);
    space_free(e, old, handle_units(e, old));
}

void sv_edges_discard(sv_edges *e, uint64_t word)
{
    if (word != SV_EDGES_EMPTY && word)
        space_free(e, (uint32_t)word, handle_units(e, (uint32_t)word));
}

void sv_edges_clear(sv_edges *e, uint32_t slot)
{
    uint32_t old = atomic_exchange_explicit(word_at(e, slot), 0, memory_order_acq_rel);
    space_free(e, old, handle_units(e, old));
}

uint32_t sv_edges_slots(const sv_edges *e)
{
    return e->n_chunks * WORDS_PER_CHUNK;
}

void sv_edges_reclaim(sv_edges *e)
{
    pthread_mutex_lock(&e->retired_lock);
    for (size_t i = 0; i < e->n_retired; i++)
        space_free(e, e->retired[i].handle, e->retired[i].units);
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

/*
 * Repack (no reader, no writer: the collection's write lock), when at
 * least min_free_16ths sixteenths of the slabs are free: copy every list
 * into fresh slabs, back to back, and free the old ones with their free
 * lists. A copy costs about a search's worth of memory traffic per 100
 * lists. Lists of sizes the collection no longer makes (after churn)
 * otherwise hold their space for good. Out of memory: nothing changed.
 */
sv_status sv_edges_repack(sv_edges *e, uint32_t n_slots, uint32_t min_free_16ths)
{
    sv_edges_reclaim(e);
    if (e->slab_total == 0 || (e->slab_total - e->used_units) * 16 < e->slab_total * min_free_16ths)
        return SV_OK; /* too little free to be worth a copy */
    sv_edges fresh;
    memset(&fresh, 0, sizeof fresh);
    fresh.alloc = e->alloc;
    fresh.tally = e->tally;
    pthread_mutex_init(&fresh.space_lock, NULL);
    /* 64 KiB slabs back to back, the last one cut to what it holds. */
    fresh.slab_hint = SLAB_PACK_UNITS;
    uint32_t *handles = sv_mem_alloc(e->alloc, NULL, (size_t)(n_slots ? n_slots : 1) * sizeof *handles);
    if (!handles)
        return SV_ERR_RESOURCE;
    sv_status st = SV_OK;
    uint32_t limit = n_slots < sv_edges_slots(e) ? n_slots : sv_edges_slots(e);
    for (uint32_t u = 0; u < limit; u++) {
        uint32_t h = atomic_load_explicit(word_at(e, u), memory_order_relaxed), nh = 0;
        if (h) {
            uint32_t units = handle_units(e, h);
            nh = space_alloc(&fresh, units);
            if (!nh) {
                st = SV_ERR_RESOURCE;
                limit = u;
                break;
            }
            memcpy(block_at(&fresh, nh), block_at(e, h), (size_t)units * 8);
        }
        handles[u] = nh;
    }
    if (st == SV_OK && fresh.n_slabs) {
        uint32_t last = fresh.n_slabs - 1;
        slab_dir *ld = fresh.dirs[last / DIR_SLABS];
        uint32_t have = ld->units[last % DIR_SLABS];
        uint32_t keep = (uint32_t)(sv_good_size(e->alloc, (size_t)(fresh.bump ? fresh.bump : 1) * 8) / 8);
        if (keep < have) {
            uint64_t *t = sv_mem_realloc(e->alloc, e->tally, ld->slab[last % DIR_SLABS], (size_t)have * 8,
                                         (size_t)keep * 8);
            if (t) { /* else the slab stays whole: still correct */
                ld->slab[last % DIR_SLABS] = t;
                ld->units[last % DIR_SLABS] = keep;
                fresh.slab_total -= have - keep;
            }
        }
    }
    if (st != SV_OK) {
        free_slabs(&fresh);
    } else {
        for (uint32_t u = 0; u < limit; u++)
            atomic_store_explicit(word_at(e, u), handles[u], memory_order_relaxed);
        free_slabs(e);
        memcpy(e->dirs, fresh.dirs, sizeof e->dirs);
        e->n_slabs = fresh.n_slabs;
        e->bump = fresh.bump;
        e->slab_total = fresh.slab_total;
        e->used_units = fresh.used_units;
        memcpy(e->free_head, fresh.free_head, sizeof e->free_head);
    }
    pthread_mutex_destroy(&fresh.space_lock);
    sv_mem_free(e->alloc, NULL, handles, (size_t)(n_slots ? n_slots : 1) * sizeof *handles);
    return st;
}

uint64_t sv_edges_space_bytes(const sv_edges *e)
{
    return e->slab_total * 8;
}
