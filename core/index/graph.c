/*
 * Vamana graph algorithms (see graph.h).
 *
 * Design choices:
 * - The beam is a sorted array (L is at most a few hundred, so insertion by
 *   memmove beats a heap); the visited set a bitmap cleared through the
 *   list of bits it set (graph.h).
 * - Neighbours are filtered against the visited set first and their records
 *   prefetched before any distance is computed, so the memory loads of one
 *   expansion overlap.
 * - Robust prune follows DiskANN: candidates in ascending distance, occlusion
 *   factors on squared distances, alpha raised from 1.0 in steps of 1.2x so
 *   the closest, most diverse neighbours are chosen first.
 * - Inserts take their candidates from the nodes the search expanded; the
 *   distances to the new vector are asymmetric (float vs codes), those
 *   between candidates code-to-code.
 * - Connect relinks nodes the prunes cut off in one pass that only replaces
 *   an edge when its target keeps another way in (the long comment above
 *   sv_graph_connect).
 */
#include "graph.h"

#include "error.h"
#include "sort.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VISITED_EMPTY UINT32_MAX

/* ---- scratch -------------------------------------------------------- */

void sv_scratch_init(sv_scratch *s, const sv_allocator *a, sv_tally *t)
{
    memset(s, 0, sizeof *s);
    s->alloc = a;
    s->tally = t;
}

void sv_scratch_release(sv_scratch *s)
{
    const sv_allocator *a = s->alloc;
    sv_tally *t = s->tally;
    sv_mem_free(a, t, s->list, s->list_cap * sizeof *s->list);
    sv_mem_free(a, t, s->bits, s->bits_words * sizeof *s->bits);
    sv_mem_free(a, t, s->vlist, s->vlist_cap * sizeof *s->vlist);
    sv_mem_free(a, t, s->pool, s->pool_cap * sizeof *s->pool);
    sv_mem_free(a, t, s->occl, s->occl_cap * sizeof *s->occl);
    sv_mem_free(a, t, s->tmp, s->tmp_dim * sizeof *s->tmp);
    sv_mem_free(a, t, s->dists, s->dists_cap * sizeof *s->dists);
    sv_scratch_init(s, a, t);
}

/* Grow an array of `elem`-byte items to hold at least `need` (contents kept). */
static int grow_t(const sv_allocator *a, sv_tally *tally, void **p, uint32_t *cap, uint32_t need,
                  size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *t = sv_mem_realloc(a, tally, *p, (size_t)*cap * elem, (size_t)c * elem);
    if (!t)
        return -1;
    *p = t;
    *cap = c;
    return 0;
}

#define grow(s, p, cap, need, elem) grow_t((s)->alloc, (s)->tally, (void **)(p), (cap), (need), (elem))

static float *scratch_vec(sv_scratch *s, uint32_t dim)
{
    if (s->tmp_dim < dim) {
        sv_mem_free(s->alloc, s->tally, s->tmp, s->tmp_dim * sizeof *s->tmp);
        s->tmp_dim = 0;
        s->tmp = sv_mem_alloc(s->alloc, s->tally, (size_t)dim * sizeof *s->tmp);
        if (s->tmp)
            s->tmp_dim = dim;
    }
    return s->tmp;
}

static int pool_push(sv_scratch *s, float dist, uint32_t slot)
{
    if (s->pool_n == s->pool_cap && grow(s, &s->pool, &s->pool_cap, s->pool_n + 1, sizeof *s->pool))
        return -1;
    s->pool[s->pool_n++] = (sv_cand){dist, slot, 0};
    return 0;
}

/* ---- visited set ----------------------------------------------------- */

/* Empty the set and make it cover slots [0, n_slots). */
static int visited_reset(sv_scratch *s, uint32_t n_slots)
{
    for (uint32_t i = 0; i < s->vis_n; i++)
        s->bits[s->vlist[i] >> 6] &= ~(UINT64_C(1) << (s->vlist[i] & 63));
    s->vis_n = 0;
    uint32_t words = (n_slots + 63) / 64;
    if (words > s->bits_words) {
        uint32_t w = words + words / 4; /* room for growth between calls */
        uint64_t *b = sv_mem_realloc(s->alloc, s->tally, s->bits, s->bits_words * sizeof *b,
                                     (size_t)w * sizeof *b);
        if (!b)
            return -1;
        memset(b + s->bits_words, 0, (size_t)(w - s->bits_words) * sizeof *b);
        s->bits = b;
        s->bits_words = w;
    }
    return 0;
}

/* 1 when slot was not in the set (and is now), 0 when it was, -1 on OOM. */
static inline int visited_add(sv_scratch *s, uint32_t slot)
{
    uint64_t *w = &s->bits[slot >> 6];
    uint64_t m = UINT64_C(1) << (slot & 63);
    if (*w & m)
        return 0;
    if (s->vis_n == s->vlist_cap && grow(s, &s->vlist, &s->vlist_cap, s->vis_n + 1, sizeof *s->vlist))
        return -1;
    *w |= m;
    s->vlist[s->vis_n++] = slot;
    return 1;
}

/* ---- graph ------------------------------------------------------------ */

sv_status sv_graph_init(sv_graph *g, const sv_allocator *a, sv_tally *t, sv_store *store,
                        sv_edges *edges, uint32_t R, uint32_t L, float alpha)
{
    memset(g, 0, sizeof *g);
    g->alloc = a;
    g->tally = t;
    g->store = store;
    g->edges = edges;
    g->R = R;
    g->L = L;
    g->alpha = alpha;
    atomic_init(&g->entry, SV_NO_SLOT);
    return SV_OK;
}

void sv_graph_release(sv_graph *g)
{
    sv_mem_free(g->alloc, g->tally, (void *)g->state, g->state_cap);
    g->state = NULL;
    g->state_cap = 0;
}

sv_status sv_graph_reserve(sv_graph *g, uint32_t n_slots)
{
    if (n_slots <= g->state_cap)
        return SV_OK;
    uint32_t cap = g->state_cap + g->state_cap / 4;
    if (cap < n_slots)
        cap = n_slots;
    cap = (uint32_t)sv_good_size(g->alloc, cap);
    _Atomic uint8_t *s = sv_mem_realloc(g->alloc, g->tally, (void *)g->state, g->state_cap, cap);
    if (!s)
        return SV_ERR_RESOURCE;
    for (uint32_t i = g->state_cap; i < cap; i++)
        atomic_init(&s[i], SV_SLOT_FREE);
    g->state = s;
    g->state_cap = cap;
    return SV_OK;
}

void sv_graph_shrink(sv_graph *g, uint32_t n_slots)
{
    uint32_t cap = (uint32_t)sv_good_size(g->alloc, n_slots ? n_slots : 1);
    if (cap >= g->state_cap || (g->state_cap - cap) * 4 < g->state_cap)
        return; /* not worth a copy */
    _Atomic uint8_t *s = sv_mem_realloc(g->alloc, g->tally, (void *)g->state, g->state_cap, cap);
    if (!s)
        return;
    g->state = s;
    g->state_cap = cap;
}

void sv_graph_set_entry_if_empty(sv_graph *g, uint32_t slot)
{
    uint32_t none = SV_NO_SLOT;
    atomic_compare_exchange_strong(&g->entry, &none, slot);
}

/* Insert c into the sorted beam of at most L; returns its position or L+1. */
static uint32_t beam_insert(sv_scratch *s, uint32_t L, sv_cand c)
{
    /* Branch-free lower bound (the first entry farther than c): the select
     * below is a mask, not a jump. A branchy search mispredicted
     * half its steps; the earlier "branch-free" form still compiled to a
     * jump and was a fifth of search time. */
    uint32_t lo = 0, n = s->n;
    while (n > 1) {
        uint32_t half = n / 2;
        lo += half & -(uint32_t)(s->list[lo + half - 1].dist <= c.dist);
        n -= half;
    }
    if (n == 1)
        lo += s->list[lo].dist <= c.dist;
    if (lo >= L)
        return L + 1;
    uint32_t keep = s->n < L ? s->n : L - 1;
    memmove(&s->list[lo + 1], &s->list[lo], (keep - lo) * sizeof *s->list);
    s->list[lo] = c;
    s->n = keep + 1;
    return lo;
}

/*
 * A filtered search's new candidates around a node (ACORN-1, Patel et al.,
 * SIGMOD 2024): the unvisited neighbours that pass; then, past the ones
 * that do not, the unvisited passing nodes among their own neighbours, so
 * that the beam, which holds only passing nodes, stays connected where
 * most nodes fail. At most cap (the graph's degree bound: as many
 * distances an expansion as without a filter). -1: out of memory.
 */
static int gather_passing(sv_graph *g, sv_scratch *s, const uint32_t *ids, uint32_t count, const uint64_t *pass,
                          uint32_t *todo, uint32_t cap)
{
    uint32_t m = 0, n_fail = 0;
    uint32_t failed[SV_R_MAX];
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id = ids[i];
        int r = visited_add(s, id);
        if (r < 0)
            return -1;
        if (!r)
            continue;
        if (pass[id >> 6] >> (id & 63) & 1) {
            if (m < cap)
                todo[m++] = id;
        } else {
            failed[n_fail++] = id;
        }
    }
    for (uint32_t i = 0; i < n_fail && m < cap; i++) {
        uint32_t hop[SV_R_MAX];
        uint32_t n2 = sv_edges_get(g->edges, failed[i], hop);
        for (uint32_t j = 0; j < n2 && m < cap; j++) {
            uint32_t id2 = hop[j];
            if (!(pass[id2 >> 6] >> (id2 & 63) & 1))
                continue; /* not marked: reached directly later, it is looked past then */
            int r = visited_add(s, id2);
            if (r < 0)
                return -1;
            if (r)
                todo[m++] = id2;
        }
    }
    return (int)m;
}

sv_status sv_graph_search(sv_graph *g, const sv_query *q, uint32_t L, sv_scratch *s, int collect,
                          const sv_interrupt *intr, const uint64_t *pass)
{
    s->n = 0;
    s->pool_n = 0;
    uint32_t entry = atomic_load_explicit(&g->entry, memory_order_acquire);
    if (entry == SV_NO_SLOT)
        return SV_OK;
    if (L < 1)
        L = 1;
    if (grow(s, &s->list, &s->list_cap, L + 1, sizeof *s->list) ||
        grow(s, &s->dists, &s->dists_cap, 2 * SV_R_MAX, sizeof *s->dists) ||
        visited_reset(s, g->state_cap))
        return SV_ERR_RESOURCE;

    visited_add(s, entry);
    s->list[0] = (sv_cand){sv_query_distance(q, entry), entry, 0};
    s->n = 1;
    uint32_t todo[2 * SV_R_MAX]; /* a filtered search looks two hops out */
    uint32_t cur = 0;
    /* Work since the caller was last asked: an expansion costs its
     * neighbours' distances plus moves in the beam, which a long list
     * makes large, so the question comes by work, not by expansions. */
    uint64_t work = 0;
    while (cur < s->n) {
        if (intr && (work += 64 + s->n) >= SV_GRAPH_INTERRUPT_WORK) {
            work = 0;
            if (intr->stop(intr->ctx))
                return SV_ERR_INTERRUPTED;
        }
        sv_cand c = s->list[cur];
        s->list[cur].flag = 1;
        if (collect && pool_push(s, c.dist, c.slot))
            return SV_ERR_RESOURCE;
        uint32_t count = 0;
        uint32_t ids_buf[SV_R_MAX];
        count = sv_edges_get(g->edges, c.slot, ids_buf);
        const uint32_t *ids = ids_buf;
        uint32_t m = 0;
        if (pass) {
            int got = gather_passing(g, s, ids, count, pass, todo, g->R);
            if (got < 0)
                return SV_ERR_RESOURCE;
            m = (uint32_t)got;
        } else {
            for (uint32_t i = 0; i < count; i++) {
                uint32_t id = ids[i];
                int r = visited_add(s, id);
                if (r < 0)
                    return SV_ERR_RESOURCE;
                if (r)
                    todo[m++] = id;
            }
        }
        uint32_t first = cur + 1;
        sv_query_distances(q, todo, m, s->dists);
        for (uint32_t i = 0; i < m; i++) {
            float d = s->dists[i];
            if (s->n >= L && d >= s->list[s->n - 1].dist)
                continue;
            uint32_t pos = beam_insert(s, L, (sv_cand){d, todo[i], 0});
            if (pos <= cur)
                cur++; /* the expanded node moved one down */
            if (pos < first)
                first = pos;
            /* A node near the front will be expanded soon: start loading
             * its neighbour list now, a whole expansion ahead. */
            if (pos <= cur + 2)
                sv_edges_prefetch(g->edges, todo[i]);
        }
        /* Everything before `cur` is expanded; the next unexpanded is at or
         * after the first new insertion. */
        cur = first < cur + 1 ? first : cur + 1;
        while (cur < s->n && s->list[cur].flag)
            cur++;
        /* Start loading the next node's neighbour list now. */
        if (cur < s->n)
            sv_edges_prefetch(g->edges, s->list[cur].slot);
    }
    return SV_OK;
}

static int cand_cmp(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    const sv_cand *x = a, *y = b;
    if (x->dist < y->dist)
        return -1;
    if (x->dist > y->dist)
        return 1;
    return (x->slot > y->slot) - (x->slot < y->slot);
}

/*
 * Robust prune of node p over candidates c[0..n) holding d(p, c). Writes at
 * most R neighbours to out, nearest first; returns the count. Candidates
 * equal to p, repeated, or not indexed/buffered are skipped.
 */
static int robust_prune(sv_graph *g, uint32_t p, sv_cand *c, uint32_t n, float alpha,
                        uint32_t *out, uint32_t *n_out, sv_scratch *s)
{
    *n_out = 0;
    if (n == 0)
        return 0;
    sv_sort(c, n, sizeof *c, cand_cmp, NULL);
    if (grow(s, &s->occl, &s->occl_cap, n + 1, sizeof *s->occl))
        return -1;
    float *occl = s->occl;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t st = sv_graph_state(g, c[i].slot);
        int skip = c[i].slot == p || (i > 0 && c[i].slot == c[i - 1].slot) ||
                   (st != SV_SLOT_INDEXED && st != SV_SLOT_BUFFERED);
        occl[i] = skip ? FLT_MAX : 0.0f;
    }
    uint32_t cnt = 0;
    if (!sv_store_build_is_l2(g->store)) {
        /* Inner products are no metric (negative, unscaled): alpha means
         * nothing. Keep t unless a chosen node is nearer to it than p is
         * (the HNSW heuristic). */
        for (uint32_t i = 0; i < n && cnt < g->R; i++) {
            if (occl[i] > 0.0f)
                continue;
            out[cnt++] = c[i].slot;
            for (uint32_t t = i + 1; t < n; t++)
                if (occl[t] == 0.0f &&
                    sv_store_build_distance(g->store, c[i].slot, c[t].slot) <= c[t].dist)
                    occl[t] = FLT_MAX;
        }
        *n_out = cnt;
        return 0;
    }
    /* Two passes: first the plain relative-neighbourhood rule (alpha 1),
     * then, if there is room left, alpha itself. */
    for (int pass = 0; pass < (alpha > 1.0f ? 2 : 1) && cnt < g->R; pass++) {
        float cur = pass == 0 ? 1.0f : alpha;
        for (uint32_t i = 0; i < n && cnt < g->R; i++) {
            if (occl[i] > cur)
                continue;
            occl[i] = FLT_MAX; /* chosen */
            out[cnt++] = c[i].slot;
            for (uint32_t t = i + 1; t < n; t++) {
                if (occl[t] > alpha)
                    continue;
                float djk = sv_store_build_distance(g->store, c[i].slot, c[t].slot);
                /* A copy of a chosen node occludes t, except when p is a
                 * copy too (0/0): exact duplicates then link to each other
                 * instead of all but one losing every in-edge. */
                float f = djk > 0.0f ? c[t].dist / djk : (c[t].dist > 0.0f ? FLT_MAX : 1.0f);
                if (f > occl[t])
                    occl[t] = f;
            }
        }
    }
    *n_out = cnt;
    return 0;
}

/*
 * Lists take reverse edges past R, up to this, before a prune takes them
 * back to R (DiskANN's slack factor, 1.3). Pruning at R itself cost a
 * prune, O(R^2) distances, at nearly every reverse edge once alpha > 1
 * keeps lists near R: 10,000 x 128 at R=64, alpha 1.2 took 13.5 s to build
 * instead of ~1 s. sv_graph_tighten prunes what is left over R at the end
 * of a flush.
 */
static uint32_t slack_R(const sv_graph *g)
{
    uint32_t r = g->R + (g->R * 3 + 9) / 10;
    return r > SV_R_MAX ? SV_R_MAX : r;
}

uint32_t sv_graph_max_degree(const sv_graph *g)
{
    return slack_R(g);
}

/* With j's lock held: prune N(j) + extra (SV_NO_SLOT: none) to R. */
static sv_status prune_list(sv_graph *g, uint32_t j, uint32_t extra, sv_scratch *s)
{
    uint32_t count = 0;
    uint32_t ids_buf[SV_R_MAX];
    count = sv_edges_get(g->edges, j, ids_buf);
    const uint32_t *ids = ids_buf;
    s->pool_n = 0;
    for (uint32_t i = 0; i < count; i++)
        if (pool_push(s, sv_store_build_distance(g->store, j, ids[i]), ids[i]))
            return SV_ERR_RESOURCE;
    if (extra != SV_NO_SLOT && pool_push(s, sv_store_build_distance(g->store, j, extra), extra))
        return SV_ERR_RESOURCE;
    uint32_t out[SV_R_MAX], n_out = 0;
    if (robust_prune(g, j, s->pool, s->pool_n, g->alpha, out, &n_out, s))
        return SV_ERR_RESOURCE;
    return sv_edges_set(g->edges, j, out, n_out);
}

sv_status sv_graph_tighten(sv_graph *g, uint32_t slot, sv_scratch *s)
{
    uint32_t count = 0;
    count = sv_edges_count(g->edges, slot);
    if (count <= g->R)
        return SV_OK;
    sv_edges_lock(g->edges, slot);
    count = sv_edges_count(g->edges, slot);
    sv_status st = count > g->R ? prune_list(g, slot, SV_NO_SLOT, s) : SV_OK;
    sv_edges_unlock(g->edges, slot);
    return st;
}

/* With j's lock held: add `slot` to N(j), pruning when it is full. */
static sv_status add_reverse(sv_graph *g, uint32_t j, uint32_t slot, sv_scratch *s)
{
    uint32_t have = 0;
    uint32_t cur_buf[SV_R_MAX];
    have = sv_edges_get(g->edges, j, cur_buf);
    const uint32_t *cur = cur_buf;
    for (uint32_t i = 0; i < have; i++)
        if (cur[i] == slot)
            return SV_OK; /* a retried insert: the edge is there already */
    int r = sv_edges_append(g->edges, j, slot, slack_R(g));
    if (r < 0)
        return SV_ERR_RESOURCE;
    if (r > 0)
        return SV_OK;
    return prune_list(g, j, slot, s);
}

sv_status sv_graph_insert(sv_graph *g, uint32_t slot, const float *x, sv_scratch *s)
{
    sv_query q;
    sv_status st = sv_query_prepare(&q, g->store, x, 1);
    if (st != SV_OK)
        return st;
    st = sv_graph_search(g, &q, g->L, s, 1, NULL, NULL);
    sv_query_release(&q);
    if (st != SV_OK)
        return st;

    uint32_t out[SV_R_MAX], n_out = 0;
    if (robust_prune(g, slot, s->pool, s->pool_n, g->alpha, out, &n_out, s))
        return SV_ERR_RESOURCE;
    sv_edges_lock(g->edges, slot);
    st = sv_edges_set(g->edges, slot, out, n_out);
    sv_edges_unlock(g->edges, slot);
    if (st != SV_OK)
        return st;
    for (uint32_t i = 0; i < n_out && st == SV_OK; i++) {
        sv_edges_lock(g->edges, out[i]);
        st = add_reverse(g, out[i], slot, s);
        sv_edges_unlock(g->edges, out[i]);
    }
    return st;
}

/*
 * A node that lost neighbours to deletes keeps more of its replacement
 * candidates than an insert would (alpha at least 1.2): the deleted nodes
 * were its routes. In test_collection's delete test (20% deleted, alpha 1
 * graph) recall went from 0.961 with alpha 1 repairs to 0.976 with 1.2,
 * against 0.970 for a fresh build of the rest.
 */
static float repair_alpha(const sv_graph *g)
{
    return g->alpha > 1.2f ? g->alpha : 1.2f;
}

sv_status sv_graph_repair_node(sv_graph *g, uint32_t p, sv_scratch *s)
{
    uint32_t count = 0;
    uint32_t ids_buf[SV_R_MAX];
    count = sv_edges_get(g->edges, p, ids_buf);
    const uint32_t *ids = ids_buf;
    int any = 0;
    for (uint32_t i = 0; i < count && !any; i++)
        any = sv_slot_is_tombstone(sv_graph_state(g, ids[i]));
    if (!any)
        return SV_OK;
    if (visited_reset(s, g->state_cap))
        return SV_ERR_RESOURCE;
    s->pool_n = 0;
    visited_add(s, p);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t v = ids[i];
        if (!sv_slot_is_tombstone(sv_graph_state(g, v))) {
            int r = visited_add(s, v);
            if (r < 0 || (r && pool_push(s, sv_store_build_distance(g->store, p, v), v)))
                return SV_ERR_RESOURCE;
            continue;
        }
        /* A deleted neighbour's list does not change during consolidation. */
        uint32_t vc = 0;
        uint32_t vids_buf[SV_R_MAX];
        vc = sv_edges_get(g->edges, v, vids_buf);
        const uint32_t *vids = vids_buf;
        for (uint32_t k = 0; k < vc; k++) {
            uint32_t w = vids[k];
            if (sv_slot_is_tombstone(sv_graph_state(g, w)))
                continue;
            int r = visited_add(s, w);
            if (r < 0 || (r && pool_push(s, sv_store_build_distance(g->store, p, w), w)))
                return SV_ERR_RESOURCE;
        }
    }
    uint32_t out[SV_R_MAX], n_out = 0;
    if (robust_prune(g, p, s->pool, s->pool_n, repair_alpha(g), out, &n_out, s))
        return SV_ERR_RESOURCE;
    sv_edges_lock(g->edges, p);
    sv_status st = sv_edges_set(g->edges, p, out, n_out);
    sv_edges_unlock(g->edges, p);
    return st;
}

uint32_t sv_graph_pick_entry(const sv_graph *g, uint32_t n_slots)
{
    uint32_t entry = atomic_load(&g->entry);
    if (entry != SV_NO_SLOT && sv_graph_state(g, entry) == SV_SLOT_INDEXED)
        return entry;
    uint32_t best = SV_NO_SLOT;
    float best_d = FLT_MAX;
    for (uint32_t i = 0; i < n_slots; i++) {
        if (sv_graph_state(g, i) != SV_SLOT_INDEXED)
            continue;
        if (entry == SV_NO_SLOT)
            return i; /* no old entry to stay near */
        /* The live node nearest to the old entry keeps the start central. */
        float d = sv_store_build_distance(g->store, entry, i);
        if (d < best_d) {
            best_d = d;
            best = i;
        }
    }
    return best;
}

/* Mark everything reachable from `start` that is not marked yet (BFS;
 * queue holds n_slots entries). */
static void mark_from(const sv_graph *g, uint8_t *seen, uint32_t *queue, uint32_t start,
                      uint32_t n_slots)
{
    if (start >= n_slots || seen[start])
        return;
    size_t head = 0, tail = 0;
    seen[start] = 1;
    queue[tail++] = start;
    while (head < tail) {
        uint32_t u = queue[head++];
        uint32_t count = 0;
        uint32_t ids_buf[SV_R_MAX];
        count = sv_edges_get(g->edges, u, ids_buf);
        const uint32_t *ids = ids_buf;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t v = ids[i];
            if (v < n_slots && !seen[v]) {
                seen[v] = 1;
                queue[tail++] = v;
            }
        }
    }
}

/* The nodes reachable from the entry (caller frees seen, n_slots bytes);
 * *queue_out, when not NULL, receives the BFS queue for reuse. */
static uint8_t *reach(sv_graph *g, uint32_t n_slots, uint32_t **queue_out)
{
    size_t seen_bytes = n_slots ? n_slots : 1;
    uint8_t *seen = sv_mem_calloc(g->alloc, NULL, seen_bytes, 1);
    uint32_t *queue = sv_mem_alloc(g->alloc, NULL, ((size_t)n_slots + 1) * sizeof *queue);
    if (!seen || !queue) {
        sv_mem_free(g->alloc, NULL, seen, seen_bytes);
        sv_mem_free(g->alloc, NULL, queue, ((size_t)n_slots + 1) * sizeof *queue);
        return NULL;
    }
    uint32_t entry = atomic_load(&g->entry);
    if (entry != SV_NO_SLOT)
        mark_from(g, seen, queue, entry, n_slots);
    if (queue_out)
        *queue_out = queue;
    else
        sv_mem_free(g->alloc, NULL, queue, ((size_t)n_slots + 1) * sizeof *queue);
    return seen;
}

/*
 * Connect: give every live indexed node the entry cannot reach an in-edge.
 *
 * Why nodes get cut off at all: an insert adds reverse edges, and a full
 * list is robust-pruned back to its diverse core (at alpha 1, from R=32 to
 * ~11 on 128-d normal data), dropping every in-edge the prune occludes. A
 * node whose in-edges all went that way is unreachable, and no later insert
 * can pick it as a neighbour (searches never see it). One flush of 1M such
 * vectors into an empty graph left ~141,000 (14%) unreachable; a 100k one
 * 5%.
 *
 * The first version linked each one from the nearest node with room that a
 * search from the entry reached, and when all were full (hub nodes near the
 * mean are), replaced that node's *last* edge, taking it for the farthest.
 * It is not (appends go last), and it was often the edge connect itself had
 * just added: two or three outliers whose nearest full node was the same
 * took its last slot from each other in turn. At 1M the unreachable count
 * went 141,361 -> 6 -> 3, 2, 3, 2, ... until the cap of 16 rounds, and the
 * flush left one unreachable (test_connect_full_neighbours in miniature).
 *
 * Now an edge is replaced only when its target provably stays reachable,
 * so one pass links everything and never undoes its own work:
 *
 * - A BFS from the entry gives each reached node a depth, and counts per
 *   node its "parent edges": in-edges from reached nodes of smaller depth.
 *   Every reached node but the entry has one (its BFS predecessor), and
 *   following parent edges strictly lowers the depth, so it ends at the
 *   entry: having a parent edge each is what keeps every node reachable.
 * - Dropping v -> w keeps that true iff w keeps a parent edge: v -> w is not
 *   one of w's (depth v >= depth w), or w has another ("spare" edges).
 *   Adding v -> u for an unreached u gives u depth(v) + 1 and one parent
 *   edge; the nodes reached through u are counted as a BFS from u reaches
 *   them. So after every step each reached node still has a parent edge:
 *   nothing linked in the pass is cut off later in it, and the map stays
 *   exact, so a scan of it (not a second BFS) tells whether all are in.
 * - Where u's in-edge comes from, cheapest first: the nearest reached node
 *   with room among u's out-neighbours and theirs; else the nearest node
 *   with room that a search from the entry reaches (the old rule); else the
 *   nearest such node with a spare edge, which gives up its farthest spare
 *   edge; else the nearest reached node anywhere with room or a spare edge.
 *   One exists: if every reached node were full, their R * reached edges
 *   could not all be the only parent edge of their target (at most
 *   reached - 1 are).
 * - Degrees never pass R. The pass repeats (with a fresh BFS) only if a
 *   node found no linker, which the argument above rules out unless a
 *   caller changes edges during connect; past CONNECT_MAX_ROUNDS it returns
 *   SV_ERR_INTERNAL and last_connect.unreachable_after says how many are
 *   left.
 *
 * Cost at 1M x 128 (slimvec-scale): one flush of all, the old rounds took
 * 21.5 s (18.3 s of searches in the first, 0.2 s per BFS after it); this
 * pass with a search per node still took 18.0 s, with the two-hop
 * neighbourhood first 2.0 s (1,893 searches for 140,017 links, 2 edges
 * replaced). Streaming (100 flushes of 10k): 56.6 s of connect in all
 * before, 17.2 s now, most of it the one BFS per flush. A two-hop linker
 * is a little farther from u than the search's, so later prunes drop more
 * of those links (200k streaming: 34,157 nodes cut off over all flushes
 * instead of 25,516), which the next connect relinks for less than the
 * searches cost; recall@10 was the same (1M, L 64: 0.203 either way).
 */

#define CONNECT_MAX_ROUNDS 8
#define UNREACHED UINT32_MAX

/* Connect's view of reachability over slots [0, n). */
typedef struct reach_map {
    const sv_allocator *alloc;
    uint32_t n;
    size_t cap;         /* entries allocated per array (n, at least 1) */
    uint32_t root;      /* the entry */
    uint32_t *depth;    /* BFS depth from root, UNREACHED if not reached */
    uint32_t *parents;  /* in-edges from reached nodes of smaller depth */
    uint32_t *queue;    /* BFS queue, n entries */
} reach_map;

static void reach_map_free(reach_map *m)
{
    sv_mem_free(m->alloc, NULL, m->depth, m->cap * sizeof *m->depth);
    sv_mem_free(m->alloc, NULL, m->parents, m->cap * sizeof *m->parents);
    sv_mem_free(m->alloc, NULL, m->queue, m->cap * sizeof *m->queue);
    m->depth = m->parents = m->queue = NULL;
}

/* 12 bytes a slot while connect runs (12 MB at 1M slots). */
static int reach_map_init(reach_map *m, const sv_allocator *a, uint32_t n)
{
    memset(m, 0, sizeof *m);
    m->alloc = a;
    m->n = n;
    m->cap = n ? n : 1;
    m->depth = sv_mem_alloc(a, NULL, m->cap * sizeof *m->depth);
    m->parents = sv_mem_alloc(a, NULL, m->cap * sizeof *m->parents);
    m->queue = sv_mem_alloc(a, NULL, m->cap * sizeof *m->queue);
    if (!m->depth || !m->parents || !m->queue) {
        reach_map_free(m);
        return -1;
    }
    return 0;
}

/* Reach `start` at depth `d` with `parents` parent edges, then everything
 * unreached that it leads to (BFS). Each newly reached node's out-edges are
 * counted here, once: into a node already reached they are parent edges
 * when they come from a smaller depth. */
static void reach_from(const sv_graph *g, reach_map *m, uint32_t start, uint32_t d,
                       uint32_t parents)
{
    if (start >= m->n || m->depth[start] != UNREACHED)
        return;
    size_t head = 0, tail = 0;
    m->depth[start] = d;
    m->parents[start] = parents;
    m->queue[tail++] = start;
    while (head < tail) {
        uint32_t a = m->queue[head++];
        uint32_t da = m->depth[a];
        uint32_t count = 0;
        uint32_t ids_buf[SV_R_MAX];
        count = sv_edges_get(g->edges, a, ids_buf);
        const uint32_t *ids = ids_buf;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t b = ids[i];
            if (b >= m->n)
                continue;
            if (m->depth[b] == UNREACHED) {
                m->depth[b] = da + 1;
                m->parents[b] = 1;
                m->queue[tail++] = b;
            } else if (da < m->depth[b]) {
                m->parents[b]++;
            }
        }
    }
}

/* Live indexed nodes the map has not reached. */
static uint64_t count_missing(const sv_graph *g, const reach_map *m)
{
    uint64_t missing = 0;
    for (uint32_t u = 0; u < m->n; u++)
        missing += m->depth[u] == UNREACHED && sv_graph_state(g, u) == SV_SLOT_INDEXED;
    return missing;
}

/* A fresh BFS from the entry; returns count_missing. */
static uint64_t reach_all(const sv_graph *g, reach_map *m)
{
    memset(m->depth, 0xff, m->cap * sizeof *m->depth);
    m->root = atomic_load(&g->entry);
    reach_from(g, m, m->root, 0, 0);
    return count_missing(g, m);
}

/* Whether dropping v -> w keeps w (and so everything) reachable. */
static int edge_is_spare(const reach_map *m, uint32_t v, uint32_t w)
{
    if (w == m->root || w >= m->n)
        return 1;
    return m->parents[w] > (m->depth[v] < m->depth[w] ? 1u : 0u);
}

/* The edge of v that can go (the farthest spare one), or -1. */
static int spare_edge(const sv_graph *g, const reach_map *m, uint32_t v)
{
    uint32_t count = 0;
    uint32_t ids_buf[SV_R_MAX];
    count = sv_edges_get(g->edges, v, ids_buf);
    const uint32_t *ids = ids_buf;
    int best = -1;
    float best_d = -1.0f;
    for (uint32_t i = 0; i < count; i++) {
        if (!edge_is_spare(m, v, ids[i]))
            continue;
        float d = sv_store_build_distance(g->store, v, ids[i]);
        if (d > best_d) {
            best_d = d;
            best = (int)i;
        }
    }
    return best;
}

/* What node v can do for u: 2 room for an edge, 1 a spare edge to give up
 * (looked for only when `spare`: it costs up to R distances), 0 nothing.
 * Only reached nodes qualify, and only indexed ones unless `any_state` (the
 * last resort: a reached tombstone will do). */
static int link_kind(const sv_graph *g, const reach_map *m, uint32_t v, uint32_t u, int spare,
                     int any_state)
{
    if (v == u || v >= m->n || m->depth[v] == UNREACHED)
        return 0;
    if (!any_state && sv_graph_state(g, v) != SV_SLOT_INDEXED)
        return 0;
    uint32_t count = 0;
    count = sv_edges_count(g->edges, v);
    if (count < g->R)
        return 2;
    return spare && spare_edge(g, m, v) >= 0 ? 1 : 0;
}

/* Add v -> u for an unreached u: appended when v has room, else in place
 * of v's spare edge; then reach what u leads to. */
static sv_status link_to(sv_graph *g, reach_map *m, uint32_t v, uint32_t u, sv_connect_stats *cs)
{
    sv_status st = SV_OK;
    sv_edges_lock(g->edges, v);
    int r = sv_edges_append(g->edges, v, u, g->R);
    if (r == 0) {
        int i = spare_edge(g, m, v);
        uint32_t count = 0;
        uint32_t ids_buf[SV_R_MAX];
        count = sv_edges_get(g->edges, v, ids_buf);
        const uint32_t *ids = ids_buf;
        if (i < 0) {
            st = SV_ERR_INTERNAL; /* link_kind said it had one */
        } else {
            uint32_t copy[SV_R_MAX];
            memcpy(copy, ids, count * sizeof *copy);
            uint32_t w = copy[i];
            copy[i] = u;
            st = sv_edges_set(g->edges, v, copy, count);
            if (st == SV_OK) {
                if (w < m->n && m->depth[v] < m->depth[w])
                    m->parents[w]--;
                cs->replaced++;
            }
        }
    } else if (r < 0) {
        st = SV_ERR_RESOURCE;
    }
    sv_edges_unlock(g->edges, v);
    if (st == SV_OK) {
        reach_from(g, m, u, m->depth[v] + 1, 1);
        cs->linked++;
    }
    return st;
}

/* Pick the node that links to u (see the comment above): SV_NO_SLOT only
 * if the argument for one existing failed. */
static sv_status pick_linker(sv_graph *g, const reach_map *m, uint32_t u, sv_scratch *s,
                             sv_connect_stats *cs, uint32_t *out)
{
    *out = SV_NO_SLOT;
    /* 1. The nearest reached node with room among u's out-neighbours and
     * theirs. u's own are mostly full hubs (the nodes whose prune dropped
     * u); one hop further nearly always has room: at 200k one-flush this
     * linked 14,915 of 14,998 nodes, and connect took 0.16 s instead of
     * 1.18 s with a search per node, at the same recall. */
    uint32_t count = 0;
    uint32_t ids_buf[SV_R_MAX];
    count = sv_edges_get(g->edges, u, ids_buf);
    const uint32_t *ids = ids_buf;
    uint32_t best = SV_NO_SLOT;
    float best_d = FLT_MAX;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t v = ids[i];
        if (v >= m->n || m->depth[v] == UNREACHED)
            continue;
        uint32_t c2 = 0;
        uint32_t ids2_buf[SV_R_MAX];
        c2 = sv_edges_get(g->edges, v, ids2_buf);
        const uint32_t *ids2 = ids2_buf;
        for (uint32_t k = 0; k <= c2; k++) {
            uint32_t w = k < c2 ? ids2[k] : v; /* and v itself */
            if (link_kind(g, m, w, u, 0, 0) != 2)
                continue;
            float d = sv_store_build_distance(g->store, u, w);
            if (d < best_d) {
                best_d = d;
                best = w;
            }
        }
    }
    if (best != SV_NO_SLOT) {
        *out = best;
        return SV_OK;
    }

    /* 2. A search from the entry: the nearest reached node with room, else
     * the nearest with a spare edge. The beam only holds reached nodes. */
    float *x = scratch_vec(s, sv_store_dim(g->store));
    if (!x)
        return SV_ERR_RESOURCE;
    sv_store_get(g->store, u, x);
    sv_query q;
    sv_status st = sv_query_prepare(&q, g->store, x, 1);
    if (st != SV_OK)
        return st;
    st = sv_graph_search(g, &q, g->L, s, 0, NULL, NULL);
    sv_query_release(&q);
    if (st != SV_OK)
        return st;
    cs->searches++;
    for (int spare = 0; spare < 2; spare++) {
        for (uint32_t i = 0; i < s->n; i++) {
            if (link_kind(g, m, s->list[i].slot, u, spare, 0) != 0) {
                *out = s->list[i].slot;
                return SV_OK;
            }
        }
    }

    /* 3. Every node the search saw was full without a spare edge: the
     * nearest reached node anywhere that can link, indexed ones first. */
    cs->scans++;
    for (int any_state = 0; any_state < 2 && best == SV_NO_SLOT; any_state++) {
        int best_k = 0;
        for (uint32_t v = 0; v < m->n; v++) {
            int k = link_kind(g, m, v, u, 1, any_state);
            if (k == 0)
                continue;
            float d = sv_store_build_distance(g->store, u, v);
            if (k > best_k || (k == best_k && d < best_d)) {
                best_k = k;
                best_d = d;
                best = v;
            }
        }
    }
    *out = best;
    return SV_OK;
}

static void stats_add(sv_connect_stats *t, const sv_connect_stats *c)
{
    t->calls += c->calls;
    t->seconds += c->seconds;
    t->rounds += c->rounds;
    t->unreachable_before += c->unreachable_before;
    t->linked += c->linked;
    t->replaced += c->replaced;
    t->searches += c->searches;
    t->scans += c->scans;
    t->unreachable_after += c->unreachable_after;
}

sv_status sv_graph_connect(sv_graph *g, uint32_t n_slots, sv_scratch *s, uint32_t *linked)
{
    sv_connect_stats cs = {.calls = 1};
    double t0 = sv_now_seconds();
    sv_status st = SV_OK;
    uint64_t missing = 0;
    reach_map m;
    *linked = 0;
    if (reach_map_init(&m, g->alloc, n_slots) != 0) {
        st = SV_ERR_RESOURCE;
        goto cleanup;
    }
    if (atomic_load(&g->entry) == SV_NO_SLOT) {
        for (uint32_t u = 0; u < n_slots; u++) {
            if (sv_graph_state(g, u) == SV_SLOT_INDEXED) {
                atomic_store(&g->entry, u);
                break;
            }
        }
    }
    for (;;) {
        missing = reach_all(g, &m);
        if (cs.rounds == 0)
            cs.unreachable_before = missing;
        if (missing == 0)
            break;
        if (cs.rounds == CONNECT_MAX_ROUNDS) {
            st = SV_ERR_INTERNAL; /* see the comment above: should not happen */
            break;
        }
        cs.rounds++;
        for (uint32_t u = 0; u < n_slots && st == SV_OK; u++) {
            if (m.depth[u] != UNREACHED || sv_graph_state(g, u) != SV_SLOT_INDEXED)
                continue;
            uint32_t v = SV_NO_SLOT;
            st = pick_linker(g, &m, u, s, &cs, &v);
            if (st == SV_OK && v != SV_NO_SLOT)
                st = link_to(g, &m, v, u, &cs);
        }
        if (st != SV_OK)
            break;
        /* The map has followed every link, so a scan (not a second BFS,
         * 0.2 s at 1M) says whether the pass left anyone behind. */
        missing = count_missing(g, &m);
        if (missing == 0)
            break;
    }
    cs.unreachable_after = missing;

cleanup:
    reach_map_free(&m);
    cs.seconds = sv_now_seconds() - t0;
    g->last_connect = cs;
    stats_add(&g->connect_total, &cs);
    *linked = cs.linked > UINT32_MAX ? UINT32_MAX : (uint32_t)cs.linked;
    return st;
}

sv_status sv_graph_validate(sv_graph *g, uint32_t n_slots, char *msg, size_t cap)
{
    uint32_t entry = atomic_load(&g->entry);
    uint64_t indexed = 0;
    uint32_t with_words = sv_edges_slots(g->edges);
    for (uint32_t u = 0; u < n_slots; u++) {
        uint8_t st = sv_graph_state(g, u);
        uint32_t count = 0, ids[SV_R_MAX];
        /* Slots added since the last flush may have no word yet. */
        if (u < with_words)
            count = sv_edges_get(g->edges, u, ids);
        else if (st == SV_SLOT_INDEXED || sv_slot_is_tombstone(st)) {
            snprintf(msg, cap, "slot %u (state %u) is in the graph but has no edge word", u, st);
            return SV_ERR_INTERNAL;
        }
        if (st == SV_SLOT_INDEXED)
            indexed++;
        if (st != SV_SLOT_INDEXED && !sv_slot_is_tombstone(st)) {
            if (count) {
                snprintf(msg, cap, "slot %u (state %u) has %u edges", u, st, count);
                return SV_ERR_INTERNAL;
            }
            continue;
        }
        if (count > slack_R(g)) {
            snprintf(msg, cap, "slot %u has degree %u > %u (R=%u + the inserts' slack)", u, count,
                     slack_R(g), g->R);
            return SV_ERR_INTERNAL;
        }
        for (uint32_t i = 0; i < count; i++) {
            uint32_t v = ids[i];
            if (v == u) {
                snprintf(msg, cap, "slot %u has a self-loop", u);
                return SV_ERR_INTERNAL;
            }
            if (v >= n_slots) {
                snprintf(msg, cap, "slot %u has an edge to slot %u out of range", u, v);
                return SV_ERR_INTERNAL;
            }
            uint8_t vs = sv_graph_state(g, v);
            if (vs != SV_SLOT_INDEXED && !sv_slot_is_tombstone(vs)) {
                snprintf(msg, cap, "slot %u has an edge to slot %u in state %u", u, v, vs);
                return SV_ERR_INTERNAL;
            }
            for (uint32_t k = 0; k < i; k++) {
                if (ids[k] == v) {
                    snprintf(msg, cap, "slot %u has a duplicate edge to %u", u, v);
                    return SV_ERR_INTERNAL;
                }
            }
        }
    }
    if (indexed == 0)
        return SV_OK;
    if (entry == SV_NO_SLOT || entry >= n_slots) {
        snprintf(msg, cap, "%llu indexed nodes but no entry point", (unsigned long long)indexed);
        return SV_ERR_INTERNAL;
    }
    uint8_t *seen = reach(g, n_slots, NULL);
    if (!seen) {
        snprintf(msg, cap, "out of memory while checking reachability");
        return SV_ERR_RESOURCE;
    }
    sv_status st = SV_OK;
    for (uint32_t u = 0; u < n_slots; u++) {
        if (sv_graph_state(g, u) == SV_SLOT_INDEXED && !seen[u]) {
            snprintf(msg, cap, "slot %u is not reachable from the entry point %u", u, entry);
            st = SV_ERR_INTERNAL;
            break;
        }
    }
    sv_mem_free(g->alloc, NULL, seen, n_slots ? n_slots : 1);
    return st;
}
