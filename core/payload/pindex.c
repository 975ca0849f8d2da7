/* A key's index (see pindex.h). */
#include "pindex.h"

#include <stdlib.h>
#include <string.h>

int64_t pv_ord_double(double d)
{
    /* IEEE order: flip every bit of a negative, the sign bit of the rest;
     * then unsigned order is the doubles' order (-0 just below +0). */
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    u = (u >> 63) ? ~u : u | (UINT64_C(1) << 63);
    return (int64_t)(u ^ (UINT64_C(1) << 63));
}

static int64_t scalar_ord(const pv_key *k, const pv_chunk *ch, uint32_t o)
{
    switch (k->type) {
    case SV_PV_STRING: return ch->c.code[o];
    case SV_PV_INT: return ch->c.i[o];
    default: return pv_ord_double(ch->c.d[o]);
    }
}

static int indexable(sv_pv_type t)
{
    return t == SV_PV_STRING || t == SV_PV_INT || t == SV_PV_DOUBLE || t == SV_PV_STRINGS || t == SV_PV_INTS;
}

static int is_list(sv_pv_type t)
{
    return t == SV_PV_STRINGS || t == SV_PV_INTS;
}

/* Whether slot's cell of k holds ord now. */
static int pair_live(const pv_key *k, int64_t ord, uint32_t slot)
{
    const pv_chunk *ch = pv_chunk_of(k, slot);
    if (!pv_present(ch, slot) || !indexable(k->type))
        return 0;
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    if (!is_list(k->type))
        return scalar_ord(k, ch, o) == ord;
    const pv_list *l = ch->c.list[o];
    for (uint32_t j = 0; j < l->n; j++)
        if ((k->type == SV_PV_STRINGS ? (int64_t)l->u.codes[j] : l->u.ints[j]) == ord)
            return 1;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const pv_ientry *x = a, *y = b;
    int64_t ox = pv_ientry_ord(x), oy = pv_ientry_ord(y);
    if (ox != oy)
        return ox < oy ? -1 : 1;
    return (x->slot > y->slot) - (x->slot < y->slot);
}

static size_t entries_bytes(uint32_t n)
{
    return (size_t)n * sizeof(pv_ientry);
}

static void set_entries(sv_payloads *p, pv_index *x, pv_ientry *e, uint32_t n, uint32_t cap)
{
    sv_mem_free(p->a, p->t, x->e, entries_bytes(x->cap));
    x->e = e;
    x->n = x->sorted = x->built = n;
    x->cap = cap;
}

void pv_index_clear(sv_payloads *p, pv_index *x)
{
    set_entries(p, x, NULL, 0, 0);
    x->usable = 1;
}

void pv_index_free(sv_payloads *p, pv_index *x)
{
    if (!x)
        return;
    sv_mem_free(p->a, p->t, x->e, entries_bytes(x->cap));
    sv_mem_free(p->a, p->t, x, sizeof *x);
}

/* Pairs of slot's cell into out (at most SV_PAYLOAD_LIST_MAX). */
static uint32_t cell_pairs(const pv_key *k, uint32_t slot, pv_ientry *out)
{
    const pv_chunk *ch = pv_chunk_of(k, slot);
    if (!pv_present(ch, slot) || !indexable(k->type))
        return 0;
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    if (!is_list(k->type)) {
        out[0] = pv_ientry_make(scalar_ord(k, ch, o), slot);
        return 1;
    }
    const pv_list *l = ch->c.list[o];
    for (uint32_t j = 0; j < l->n; j++)
        out[j] = pv_ientry_make(k->type == SV_PV_STRINGS ? (int64_t)l->u.codes[j] : l->u.ints[j], slot);
    return l->n;
}

/* Every pair of the column, sorted. */
static void rebuild(sv_payloads *p, pv_key *k, pv_index *x)
{
    uint64_t n = 0;
    for (uint32_t c = 0; c < k->n_chunks; c++) {
        const pv_chunk *ch = k->chunks[c];
        for (uint32_t o = 0; ch && o < SV_PAYLOAD_CHUNK; o++)
            if (pv_present(ch, c * SV_PAYLOAD_CHUNK + o))
                n += is_list(k->type) ? ch->c.list[o]->n : 1;
    }
    if (!indexable(k->type) || n == 0) {
        pv_index_clear(p, x);
        return;
    }
    if (n > UINT32_MAX / 2) {
        x->usable = 0;
        return;
    }
    uint32_t cap = (uint32_t)n + (uint32_t)n / 4 + 16;
    pv_ientry *e = sv_mem_alloc(p->a, p->t, entries_bytes(cap));
    if (!e) {
        x->usable = 0; /* the old pairs stay, unread, until a rebuild works */
        return;
    }
    uint32_t m = 0;
    for (uint32_t c = 0; c < k->n_chunks; c++)
        for (uint32_t o = 0; k->chunks[c] && o < SV_PAYLOAD_CHUNK; o++)
            m += cell_pairs(k, c * SV_PAYLOAD_CHUNK + o, e + m);
    qsort(e, m, sizeof *e, cmp_entry);
    set_entries(p, x, e, m, cap);
    x->usable = 1;
}

pv_index *pv_index_create(sv_payloads *p, pv_key *k)
{
    pv_index *x = sv_mem_calloc(p->a, p->t, 1, sizeof *x);
    if (x)
        rebuild(p, k, x); /* out of memory: unusable, built by a later write or sv_payloads_reindex */
    return x;
}

/* The tail sorted into the run, stale pairs and repeats dropped. */
static void merge(sv_payloads *p, pv_key *k, pv_index *x)
{
    qsort(x->e + x->sorted, x->n - x->sorted, sizeof *x->e, cmp_entry);
    uint32_t cap = x->n + x->n / 4 + 16;
    pv_ientry *e = sv_mem_alloc(p->a, p->t, entries_bytes(cap));
    if (!e) {
        x->usable = 0;
        return;
    }
    uint32_t i = 0, j = x->sorted, m = 0;
    while (i < x->sorted || j < x->n) {
        const pv_ientry *next;
        if (j >= x->n || (i < x->sorted && cmp_entry(&x->e[i], &x->e[j]) <= 0))
            next = &x->e[i++];
        else
            next = &x->e[j++];
        if (m && cmp_entry(&e[m - 1], next) == 0)
            continue;
        if (pair_live(k, pv_ientry_ord(next), next->slot))
            e[m++] = *next;
    }
    set_entries(p, x, e, m, cap);
}

void pv_index_refresh(sv_payloads *p, pv_key *k)
{
    if (k->index && !k->index->usable)
        rebuild(p, k, k->index);
}

void pv_index_add(sv_payloads *p, pv_key *k, uint32_t slot)
{
    pv_index *x = k->index;
    if (!x->usable) {
        rebuild(p, k, x); /* includes slot's cell */
        return;
    }
    pv_ientry pairs[SV_PAYLOAD_LIST_MAX];
    uint32_t m = cell_pairs(k, slot, pairs);
    if (m == 0)
        return;
    if (x->n + m > x->cap) {
        if (x->cap > UINT32_MAX / 2 - m) {
            x->usable = 0;
            return;
        }
        uint32_t cap = x->cap + x->cap / 2 + m + 16;
        pv_ientry *e = sv_mem_realloc(p->a, p->t, x->e, entries_bytes(x->cap), entries_bytes(cap));
        if (!e) {
            x->usable = 0;
            return;
        }
        x->e = e;
        x->cap = cap;
    }
    memcpy(x->e + x->n, pairs, m * sizeof *pairs);
    x->n += m;
    /* A tail past an eighth of the run (and past 256) is merged: a
     * reader's tail scan stays short, the merges cost O(log n) a pair. */
    uint32_t tail = x->n - x->sorted;
    if (tail > 256 && tail > x->sorted / 8)
        merge(p, k, x);
}

/* First position in the run with ord >= v. */
static uint32_t lower(const pv_index *x, int64_t v)
{
    uint32_t lo = 0, hi = x->sorted;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (pv_ientry_ord(&x->e[mid]) < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t pv_index_count(const pv_index *x, int64_t lo, int64_t hi)
{
    if (lo > hi)
        return 0;
    uint32_t a = lower(x, lo);
    uint32_t b = hi == INT64_MAX ? x->sorted : lower(x, hi + 1);
    return (size_t)(b - a) + (x->n - x->sorted);
}

void pv_index_visit(const pv_index *x, int64_t lo, int64_t hi, void (*fn)(void *ctx, uint32_t slot), void *ctx)
{
    if (lo > hi)
        return;
    for (uint32_t i = lower(x, lo); i < x->sorted && pv_ientry_ord(&x->e[i]) <= hi; i++)
        fn(ctx, x->e[i].slot);
    for (uint32_t i = x->sorted; i < x->n; i++) {
        int64_t o = pv_ientry_ord(&x->e[i]);
        if (o >= lo && o <= hi)
            fn(ctx, x->e[i].slot);
    }
}
