/* A counted string dictionary (see dict.h). */
#include "dict.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

typedef struct entry {
    char *s;       /* NUL-terminated; NULL: the code is free */
    uint32_t len;
    uint64_t refs; /* 64 bits: lists repeat a code, and 2^32 uses are within reach */
    uint64_t hash;
} entry;

struct sv_dict {
    const sv_allocator *a;
    sv_tally *t;
    entry *e;          /* by code - 1 */
    uint32_t n_e, cap_e;
    uint32_t *free_codes; /* codes whose entry went, reused first */
    uint32_t n_free, cap_free;
    uint32_t *slots;   /* open addressing: a code, 0 empty, TOMB deleted */
    uint32_t n_slots;  /* a power of two */
    uint32_t used;     /* slots holding a code or TOMB */
    uint64_t live;
};

#define TOMB UINT32_MAX

/* The SipHash key: random per process, set once (see idmap.c for why a
 * keyed hash). */
static unsigned char hash_key[crypto_shorthash_siphash24_KEYBYTES];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_init(void)
{
    if (sodium_init() >= 0)
        randombytes_buf(hash_key, sizeof hash_key);
}

static uint64_t hash_of(const char *s, size_t len)
{
    unsigned char out[crypto_shorthash_siphash24_BYTES];
    crypto_shorthash_siphash24(out, (const unsigned char *)s, (unsigned long long)len, hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

sv_dict *sv_dict_create(const sv_allocator *a, sv_tally *t)
{
    pthread_once(&hash_once, hash_init);
    sv_dict *d = sv_mem_calloc(a, t, 1, sizeof *d);
    if (!d)
        return NULL;
    d->a = a;
    d->t = t;
    return d;
}

void sv_dict_free(sv_dict *d)
{
    if (!d)
        return;
    for (uint32_t i = 0; i < d->n_e; i++)
        if (d->e[i].s)
            sv_mem_free(d->a, d->t, d->e[i].s, d->e[i].len + 1);
    sv_mem_free(d->a, d->t, d->e, (size_t)d->cap_e * sizeof *d->e);
    sv_mem_free(d->a, d->t, d->free_codes, (size_t)d->cap_free * sizeof *d->free_codes);
    sv_mem_free(d->a, d->t, d->slots, (size_t)d->n_slots * sizeof *d->slots);
    sv_mem_free(d->a, d->t, d, sizeof *d);
}

/* The table slot holding s, or the first free one on its probe path
 * (*found says which). */
static uint32_t probe(const sv_dict *d, const char *s, size_t len, uint64_t h, int *found)
{
    uint32_t mask = d->n_slots - 1, i = (uint32_t)h & mask, first_free = UINT32_MAX;
    for (;;) {
        uint32_t c = d->slots[i];
        if (c == 0) {
            *found = 0;
            return first_free != UINT32_MAX ? first_free : i;
        }
        if (c == TOMB) {
            if (first_free == UINT32_MAX)
                first_free = i;
        } else {
            const entry *e = &d->e[c - 1];
            if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0) {
                *found = 1;
                return i;
            }
        }
        i = (i + 1) & mask;
    }
}

uint32_t sv_dict_find(const sv_dict *d, const char *s, size_t len)
{
    if (!d->n_slots)
        return 0;
    int found;
    uint32_t i = probe(d, s, len, hash_of(s, len), &found);
    return found ? d->slots[i] : 0;
}

/* Rebuild the table at n_slots (a power of two), dropping tombstones. */
static int rehash(sv_dict *d, uint32_t n_slots)
{
    uint32_t *slots = sv_mem_calloc(d->a, d->t, n_slots, sizeof *slots);
    if (!slots)
        return -1;
    for (uint32_t c = 1; c <= d->n_e; c++) {
        if (!d->e[c - 1].s)
            continue;
        uint32_t i = (uint32_t)d->e[c - 1].hash & (n_slots - 1);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = c;
    }
    sv_mem_free(d->a, d->t, d->slots, (size_t)d->n_slots * sizeof *d->slots);
    d->slots = slots;
    d->n_slots = n_slots;
    d->used = (uint32_t)d->live;
    return 0;
}

static int grow(sv_dict *d, void **arr, uint32_t *cap, uint32_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    uint32_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *p = sv_mem_realloc(d->a, d->t, *arr, (size_t)*cap * item, (size_t)c * item);
    if (!p)
        return -1;
    *arr = p;
    *cap = c;
    return 0;
}

sv_status sv_dict_intern(sv_dict *d, const char *s, size_t len, uint32_t *code)
{
    if (len >= UINT32_MAX)
        return SV_ERR_INVALID_ARGUMENT;
    uint64_t h = hash_of(s, len);
    int found = 0;
    if (d->n_slots) {
        uint32_t i = probe(d, s, len, h, &found);
        if (found) {
            *code = d->slots[i];
            d->e[*code - 1].refs++;
            return SV_OK;
        }
    }
    /* Keep the table at most 3/4 full, counting tombstones. */
    if ((uint64_t)(d->used + 1) * 4 > (uint64_t)d->n_slots * 3) {
        uint32_t want = d->n_slots ? d->n_slots : 16;
        while ((d->live + 1) * 2 > want) /* at most half full after a rebuild */
            want *= 2;
        if (rehash(d, want) != 0)
            return SV_ERR_RESOURCE;
    }
    /* Room for the new code before anything is written. */
    if (!d->n_free && grow(d, (void **)&d->e, &d->cap_e, d->n_e + 1, sizeof *d->e) != 0)
        return SV_ERR_RESOURCE;
    if (grow(d, (void **)&d->free_codes, &d->cap_free, d->n_e + 1, sizeof *d->free_codes) != 0)
        return SV_ERR_RESOURCE; /* so that a later unref never needs memory */
    char *copy = sv_mem_alloc(d->a, d->t, len + 1);
    if (!copy)
        return SV_ERR_RESOURCE;
    memcpy(copy, s, len);
    copy[len] = '\0';
    uint32_t c = d->n_free ? d->free_codes[--d->n_free] : ++d->n_e;
    d->e[c - 1] = (entry){copy, (uint32_t)len, 1, h};
    uint32_t i = probe(d, s, len, h, &found);
    if (d->slots[i] == 0)
        d->used++;
    d->slots[i] = c;
    d->live++;
    *code = c;
    return SV_OK;
}

void sv_dict_ref(sv_dict *d, uint32_t code)
{
    d->e[code - 1].refs++;
}

void sv_dict_unref(sv_dict *d, uint32_t code)
{
    entry *e = &d->e[code - 1];
    if (--e->refs)
        return;
    int found;
    uint32_t i = probe(d, e->s, e->len, e->hash, &found);
    d->slots[i] = TOMB;
    sv_mem_free(d->a, d->t, e->s, e->len + 1);
    e->s = NULL;
    d->free_codes[d->n_free++] = code; /* room made by intern */
    d->live--;
}

const char *sv_dict_str(const sv_dict *d, uint32_t code)
{
    return code && code <= d->n_e ? d->e[code - 1].s : NULL;
}

uint64_t sv_dict_count(const sv_dict *d)
{
    return d->live;
}
