/*
 * Search and get (slimvec.h). Searches hold the read lock: they run the
 * graph over INDEXED nodes and brute force over both buffers' BUFFERED rows
 * (PENDING rows are not durable yet and never seen), and merge the top k.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "filter.h"

static sv_scratch *scratch_acquire(sv_collection *c)
{
    sv_scratch *s = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->pool_n)
        s = c->pool[--c->pool_n];
    pthread_mutex_unlock(&c->pool_lock);
    if (!s && (s = sv_mem_alloc(&c->alloc, &c->t_other, sizeof *s)))
        sv_scratch_init(s, &c->alloc, &c->t_other);
    return s;
}

static void scratch_return(sv_collection *c, sv_scratch *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&c->pool_lock);
    if (c->pool_n == c->pool_cap) {
        uint32_t cap = c->pool_cap ? c->pool_cap * 2 : 8;
        sv_scratch **t = sv_mem_realloc(&c->alloc, &c->t_other, c->pool,
                                        c->pool_cap * sizeof *t, cap * sizeof *t);
        if (t) {
            c->pool = t;
            c->pool_cap = cap;
        }
    }
    if (c->pool_n < c->pool_cap) {
        c->pool[c->pool_n++] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (s) { /* no room to keep it */
        sv_scratch_release(s);
        sv_mem_free(&c->alloc, &c->t_other, s, sizeof *s);
    }
}

/* Keep the best k of (dist, slot) in a sorted array. */
static void topk_push(sv_cand *top, uint32_t *n, uint32_t k, float dist, uint32_t slot)
{
    if (*n == k && dist >= top[k - 1].dist)
        return;
    uint32_t i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && top[i - 1].dist > dist) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = (sv_cand){dist, slot, 0};
}

/* Rows of brute force between two questions to the caller's interrupt. */
#define SCAN_INTERRUPT_EVERY 1024u

/* A filter as the bitmap of the slots it passes, or asked a slot at a
 * time (probe), or none (both NULL). */
typedef struct slot_filter {
    const uint64_t *bits;
    const sv_filter_probe *probe;
} slot_filter;

static int passes(const slot_filter *f, uint32_t slot)
{
    if (f->bits)
        return f->bits[slot >> 6] >> (slot & 63) & 1;
    return !f->probe || sv_filter_probe_pass(f->probe, slot);
}

static sv_status scan_buffer(const sv_collection *c, const sv_buffer *b, const float *q,
                             sv_cand *top, uint32_t *n, uint32_t k, const sv_interrupt *intr,
                             const slot_filter *pass)
{
    for (size_t i = 0; i < b->n; i++) {
        if (intr && i % SCAN_INTERRUPT_EVERY == SCAN_INTERRUPT_EVERY - 1 && intr->stop(intr->ctx))
            return SV_ERR_INTERRUPTED;
        if (sv_graph_state(&c->graph, b->slots[i]) != SV_SLOT_BUFFERED || !passes(pass, b->slots[i]))
            continue;
        float d = sv_metric_distance_f32(c->k, c->params.metric, q, b->vecs + i * b->dim, b->dim);
        topk_push(top, n, k, d, b->slots[i]);
    }
    return SV_OK;
}

sv_status sv_collection_search(sv_collection *c, const float *query, uint32_t dim, uint32_t k,
                               uint32_t search_list, sv_hit *hits, size_t *n_hits, sv_error *err)
{
    sv_search_opts o = {.k = k, .search_list = search_list};
    return sv_collection_search_opts(c, query, dim, &o, hits, n_hits, err);
}

sv_status sv_collection_search_ex(sv_collection *c, const float *query, uint32_t dim, uint32_t k,
                                  uint32_t search_list, const sv_interrupt *intr, sv_hit *hits,
                                  size_t *n_hits, sv_error *err)
{
    sv_search_opts o = {.k = k, .search_list = search_list, .intr = intr};
    return sv_collection_search_opts(c, query, dim, &o, hits, n_hits, err);
}

/*
 * The graph's candidates (sorted by code distance) into the top k. With
 * originals, the best `depth` indexed ones are pushed with their exact
 * distance instead (the rest are left out: a code distance does not
 * compare with an exact one). Under the read lock.
 */
static void take_candidates(const sv_collection *c, const sv_scratch *s, const float *q,
                            uint32_t depth, sv_cand *top, uint32_t *n, uint32_t k, const slot_filter *pass)
{
    uint32_t taken = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t slot = s->list[i].slot;
        if (sv_graph_state(&c->graph, slot) != SV_SLOT_INDEXED || !passes(pass, slot))
            continue;
        if (!depth) {
            topk_push(top, n, k, s->list[i].dist, slot);
            continue;
        }
        const float *x = sv_orig_get(c->orig, slot);
        if (!x)
            continue; /* cannot happen: a flush reserves before indexing */
        if (i + 1 < s->n) /* the next original, while this one is measured */
            __builtin_prefetch(sv_orig_get(c->orig, s->list[i + 1].slot));
        topk_push(top, n, k, sv_metric_distance_f32(c->k, c->params.metric, q, x, c->params.dim), slot);
        if (++taken == depth)
            break;
    }
}

/*
 * Every indexed vector a filter passes, by its exact distance when the
 * originals are on disk (depth > 0), else by its code's. Under the read lock.
 */
static sv_status scan_indexed(const sv_collection *c, const uint64_t *pass, const float *q, const sv_query *pq,
                              uint32_t depth, sv_cand *top, uint32_t *n, uint32_t k, const sv_interrupt *intr)
{
    size_t words = ((size_t)c->next_slot + 63) / 64, seen = 0;
    for (size_t w = 0; w < words; w++) {
        for (uint64_t m = pass[w]; m; m &= m - 1) {
            uint32_t slot = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(m));
            if (sv_graph_state(&c->graph, slot) != SV_SLOT_INDEXED)
                continue;
            if (intr && ++seen % SCAN_INTERRUPT_EVERY == 0 && intr->stop(intr->ctx))
                return SV_ERR_INTERRUPTED;
            const float *x = depth ? sv_orig_get(c->orig, slot) : NULL;
            float d = x ? sv_metric_distance_f32(c->k, c->params.metric, q, x, c->params.dim)
                        : sv_query_distance(pq, slot);
            topk_push(top, n, k, d, slot);
        }
    }
    return SV_OK;
}

/*
 * A filter that few indexed vectors pass is searched by scanning them: up
 * to this many per search-list entry, the scan costs about what a search
 * of the graph with that list does (a graph search computes a few dozen
 * distances an expansion, and a filtered one looks two hops out).
 */
#define FILTER_SCAN_PER_LIST 64u
/* From this share of passing vectors up, the graph is searched without the
 * filter inside it (a list longer by 1 / share) and the passing nodes
 * taken; below it, the filter is inside the traversal (graph.c). */
#define FILTER_NAVIGATE_ALL 0.3
/* From this share (estimated on a sample) up, the filter is not evaluated
 * over every slot at all: the plain graph's candidates are asked one at a
 * time. Its evaluation (a pass over the key's column, then over the slots
 * it passes) cost more than the search itself at 50% on Fashion-MNIST. A
 * margin above FILTER_NAVIGATE_ALL: an estimate a little high costs recall
 * only a little. */
#define FILTER_PROBE_SHARE 0.4

/* The graph, without the filter inside, with a list longer by 1 / share,
 * its candidates that pass taken. A list of L / share holds fewer than k
 * passing nodes about as often as not when L is k: then again with twice
 * the list (up to WIDE_TRIES times), as a search that goes on until it has
 * k passing does, before anything slower. */
#define WIDE_TRIES 3
static sv_status search_wide(sv_collection *c, sv_scratch *s, const sv_query *pq, const float *q, uint32_t L,
                             double share, uint32_t depth, const slot_filter *pass, sv_cand *top, uint32_t *n,
                             uint32_t k, const sv_interrupt *intr)
{
    double wide = ceil((double)L / share);
    sv_status st = SV_OK;
    for (int t = 0; t < WIDE_TRIES && st == SV_OK; t++, wide *= 2) {
        uint32_t L_graph = wide > SV_L_MAX ? SV_L_MAX : (uint32_t)wide;
        *n = 0;
        if ((st = sv_graph_search(&c->graph, pq, L_graph, s, 0, intr, NULL)) == SV_OK)
            take_candidates(c, s, q, depth, top, n, k, pass);
        if (*n == k || (!pass->bits && !pass->probe) || L_graph == SV_L_MAX)
            break;
    }
    return st;
}

sv_status sv_collection_search_opts(sv_collection *c, const float *query, uint32_t dim,
                                    const sv_search_opts *o, sv_hit *hits, size_t *n_hits,
                                    sv_error *err)
{
    *n_hits = 0;
    uint32_t k = o->k, search_list = o->search_list;
    const sv_interrupt *intr = o->intr;
    sv_status st = sv_coll_check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    if (k < 1 || k > SV_K_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "k=%u is outside 1..%d", k, SV_K_MAX);
    if (search_list > SV_L_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "search list %u is over %d", search_list, SV_L_MAX);
    if ((st = sv_coll_check_vector(c, query, SIZE_MAX, err)) != SV_OK)
        return st;
    if (o->target_recall != 0.0f) {
        if (!(o->target_recall > 0.0f && o->target_recall <= 1.0f))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "target recall %g is outside (0, 1]",
                           (double)o->target_recall);
        sv_calibration cal;
        if (sv_collection_calibration(c, &cal))
            search_list = sv_calibration_list_for(&cal, o->target_recall, k);
    }
    uint32_t L = search_list < k ? k : search_list;
    if (o->used_search_list)
        *o->used_search_list = L;
    uint32_t depth = 0; /* 0: no re-ranking */
    /* A record a flush failed to write would give another vector's
     * distance: no re-ranking until a restart rewrote them. */
    if (c->orig && o->rerank != SV_RERANK_OFF && atomic_load(&c->orig_errors) == 0) {
        depth = o->rerank ? o->rerank : L;
        if (depth < k)
            depth = k;
    }
    const float *q = sv_coll_prepare_vectors(c, query, 1);
    sv_cand *top = sv_mem_alloc(&c->alloc, NULL, (size_t)k * sizeof *top);
    sv_scratch *s = scratch_acquire(c);
    sv_query pq = {0};
    uint32_t n = 0;
    if (!q || !top || !s) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory searching");
        goto cleanup;
    }

    pthread_rwlock_rdlock(&c->lock);
    uint64_t *bits = NULL, matches = 0;
    sv_filter_probe *probe = NULL;
    double est = -1.0;
    if (o->filter && (st = sv_coll_filter_probe(c, o->filter, &probe, &est, err)) != SV_OK) {
        pthread_rwlock_unlock(&c->lock);
        goto cleanup; /* the filter's own message */
    }
    int graph = atomic_load(&c->graph.entry) != SV_NO_SLOT;
    if (graph && (st = sv_query_prepare(&pq, c->store, q, 0)) != SV_OK)
        graph = 0;
    /* Most pass: asked of the candidates alone (no bitmap). Fewer than k
     * found where more may pass: the bitmap's way below answers. */
    if (st == SV_OK && probe && est >= FILTER_PROBE_SHARE) {
        slot_filter pf = {NULL, probe};
        if (graph)
            st = search_wide(c, s, &pq, q, L, est, depth, &pf, top, &n, k, intr);
        if (st == SV_OK)
            st = scan_buffer(c, &c->active, q, top, &n, k, intr, &pf);
        if (st == SV_OK)
            st = scan_buffer(c, &c->flushing, q, top, &n, k, intr, &pf);
        if (st == SV_OK && n == k)
            goto answered;
        n = 0;
    }
    if (st == SV_OK && o->filter && (st = sv_coll_filter_bits(c, o->filter, intr, &bits, &matches, err)) != SV_OK) {
        sv_filter_probe_free(probe);
        pthread_rwlock_unlock(&c->lock);
        goto cleanup; /* the filter's own message */
    }
    slot_filter pass = {bits, NULL};
    if (st == SV_OK && graph && (!bits || matches)) {
        uint64_t scan_max = o->filter_scan ? o->filter_scan : (uint64_t)FILTER_SCAN_PER_LIST * L;
        int scan = bits && matches <= scan_max;
        /* Most pass: the plain graph with a list longer by 1 / share holds
         * about L passing nodes, cheaper than looking past the few that
         * fail two hops out. */
        double share = bits && c->n_live ? (double)matches / (double)c->n_live : 1.0;
        if (!scan && (!bits || share >= FILTER_NAVIGATE_ALL)) {
            st = search_wide(c, s, &pq, q, L, share, depth, &pass, top, &n, k, intr);
        } else if (!scan) {
            /* The filter inside the traversal (graph.c). */
            if ((st = sv_graph_search(&c->graph, &pq, L, s, 0, intr, bits)) == SV_OK)
                take_candidates(c, s, q, depth, top, &n, k, &pass);
        }
        /* The graph did not reach k passing vectors where more pass: the
         * scan finds them (k hits whenever k pass). */
        if (st == SV_OK && !scan && bits && n < k && matches > n) {
            n = 0;
            scan = 1;
        }
        if (st == SV_OK && scan)
            st = scan_indexed(c, bits, q, &pq, depth, top, &n, k, intr);
    }
    if (st == SV_OK && (!bits || matches))
        st = scan_buffer(c, &c->active, q, top, &n, k, intr, &pass);
    if (st == SV_OK && (!bits || matches))
        st = scan_buffer(c, &c->flushing, q, top, &n, k, intr, &pass);
answered:
    if (bits)
        sv_coll_filter_release(c, bits);
    sv_filter_probe_free(probe);
    if (st == SV_OK) {
        for (uint32_t i = 0; i < n; i++) {
            hits[i].distance = top[i].dist;
            sv_idmap_format(c->idmap, top[i].slot, hits[i].id, sizeof hits[i].id);
        }
        *n_hits = n;
    }
    pthread_rwlock_unlock(&c->lock);
    if (st == SV_ERR_INTERRUPTED)
        sv_fail(err, st, "the search was stopped by its caller");
    else if (st != SV_OK)
        sv_fail(err, st, "out of memory searching");
    else
        sv_ok(err);

cleanup:
    if (pq.vec)
        sv_query_release(&pq);
    scratch_return(c, s);
    sv_mem_free(&c->alloc, NULL, top, (size_t)k * sizeof *top);
    sv_coll_free_prepared(c, query, q, 1);
    return st;
}


sv_status sv_collection_get(sv_collection *c, const char *id, float *out, uint32_t dim,
                            sv_error *err)
{
    sv_status st = sv_coll_check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    pthread_rwlock_rdlock(&c->lock);
    uint32_t slot = 0;
    st = sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" not found", SV_ID_MAX, id ? id : "");
    if (sv_coll_find_live(c, id, &slot)) {
        uint8_t state = sv_graph_state(&c->graph, slot);
        long row = -1;
        const float *orig = c->orig && state == SV_SLOT_INDEXED && atomic_load(&c->orig_errors) == 0
                                ? sv_orig_get(c->orig, slot)
                                : NULL;
        if (orig) {
            memcpy(out, orig, dim * sizeof(float));
            st = sv_ok(err);
        } else if (state == SV_SLOT_INDEXED) {
            sv_store_get(c->store, slot, out);
            st = sv_ok(err);
        } else if (state == SV_SLOT_BUFFERED) {
            const sv_buffer *b = &c->active;
            if ((row = sv_buffer_find(b, slot)) < 0)
                row = sv_buffer_find(b = &c->flushing, slot);
            if (row >= 0) {
                memcpy(out, b->vecs + (size_t)row * dim, dim * sizeof(float));
                st = sv_ok(err);
            }
        }
    }
    pthread_rwlock_unlock(&c->lock);
    return st;
}
