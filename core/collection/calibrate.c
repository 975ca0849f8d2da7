/*
 * Recall calibration (slimvec.h): which search list reaches which recall on
 * this collection's own data, so that a search may ask for a recall instead
 * of a search list.
 *
 * How: queries are made from the data. A stored vector itself is no fair
 * query: the search walks straight to it and its graph neighbours are its
 * nearest neighbours by construction (leave-one-out gave recall 0.92 at
 * search list 10 where fresh queries got 0.67). A fresh query lands about
 * as far from its nearest stored vector as stored vectors are from theirs,
 * so each query is a random stored vector x moved by d1(x), the distance
 * to x's own nearest neighbour, along the difference of two other random
 * stored vectors (a direction the data has). One pass over every live
 * vector finds each x's d1, a second the exact top 10 of each query,
 * reading the originals when the collection keeps them (so the figures
 * include the 8-bit codes' error), else the stored vectors (then they
 * measure the graph only). Then every search list of the grid is run for
 * every query (re-ranked as a default search is) and recall@10 recorded. The pass takes the read lock
 * a chunk of slots at a time, so writers are not held for the whole of it;
 * what changes meanwhile only blurs an estimate.
 *
 * Queries drawn from the data stand for queries like the data: queries
 * from elsewhere may need more. The curve is refreshed by whoever calls
 * sv_collection_calibrate (a server does it as a collection grows).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"

#define CAL_K 10u
#define CHUNK_SLOTS 4096u

static const uint32_t GRID[] = {10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};
#define GRID_N (sizeof GRID / sizeof GRID[0])

/* The exact top CAL_K of one query: sorted (dist, slot), worst last. */
typedef struct truth {
    float dist[CAL_K];
    uint32_t slot[CAL_K];
    uint32_t n;
} truth;

static void truth_push(truth *t, float d, uint32_t slot)
{
    if (t->n == CAL_K && d >= t->dist[CAL_K - 1])
        return;
    uint32_t i = t->n < CAL_K ? t->n++ : CAL_K - 1;
    while (i > 0 && t->dist[i - 1] > d) {
        t->dist[i] = t->dist[i - 1];
        t->slot[i] = t->slot[i - 1];
        i--;
    }
    t->dist[i] = d;
    t->slot[i] = slot;
}

/* Under the read lock: the float vector of a live slot as the exact
 * answer sees it (original, buffered row, or the stored vector). */
static int vector_of(const sv_collection *c, uint32_t slot, float *out)
{
    uint8_t st = sv_graph_state(&c->graph, slot);
    uint32_t dim = c->params.dim;
    if (st == SV_SLOT_INDEXED) {
        const float *o = c->orig ? sv_orig_get(c->orig, slot) : NULL;
        if (o)
            memcpy(out, o, dim * sizeof *out);
        else
            sv_store_get(c->store, slot, out);
        return 1;
    }
    if (st == SV_SLOT_BUFFERED) {
        const sv_buffer *b = &c->active;
        long row = sv_buffer_find(b, slot);
        if (row < 0)
            row = sv_buffer_find(b = &c->flushing, slot);
        if (row >= 0) {
            memcpy(out, b->vecs + (size_t)row * dim, dim * sizeof *out);
            return 1;
        }
    }
    return 0;
}

/* One pass over every live slot: the nearest CAL_K to each of the queries
 * (prepared), leaving out each query's own slot when `skip_self`. */
static void nearest_pass(sv_collection *c, const float *qp, const uint32_t *qslot, uint32_t queries,
                         uint32_t n_slots, float *x, truth *tr, int skip_self)
{
    uint32_t dim = c->params.dim;
    for (uint32_t base = 0; base < n_slots; base += CHUNK_SLOTS) {
        pthread_rwlock_rdlock(&c->lock);
        uint32_t end = base + CHUNK_SLOTS < c->next_slot ? base + CHUNK_SLOTS : c->next_slot;
        for (uint32_t s = base; s < end; s++) {
            if (!vector_of(c, s, x))
                continue;
            /* cosine: the stored vectors are unit already */
            for (uint32_t q = 0; q < queries; q++)
                if (!skip_self || s != qslot[q])
                    truth_push(&tr[q], sv_metric_distance_f32(c->k, c->params.metric, qp + (size_t)q * dim, x, dim), s);
        }
        pthread_rwlock_unlock(&c->lock);
    }
}

sv_status sv_collection_calibrate(sv_collection *c, uint32_t queries, uint64_t seed, sv_error *err)
{
    double t0 = sv_now_seconds();
    uint32_t dim = c->params.dim;
    if (queries < 1 || queries > 1000)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "calibration queries %u is outside 1..1000", queries);
    sv_status st = SV_OK;
    float *qv = NULL, *x = NULL;
    uint32_t *qslot = NULL;
    truth *tr = NULL;
    sv_hit *hits = NULL;

    /* The queries: distinct live slots, by rejection sampling. */
    pthread_rwlock_rdlock(&c->lock);
    uint32_t n_slots = c->next_slot;
    uint64_t live = c->n_live;
    pthread_rwlock_unlock(&c->lock);
    if (live < CAL_K + 2)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "%llu vectors: too few to calibrate (at least %u)",
                       (unsigned long long)live, CAL_K + 2);
    if (queries > live / 2)
        queries = (uint32_t)(live / 2);
    const sv_allocator *a = &c->alloc;
    uint32_t asked = queries;
    qv = sv_mem_alloc(a, NULL, (size_t)asked * dim * sizeof *qv);
    x = sv_mem_alloc(a, NULL, (size_t)dim * sizeof *x);
    qslot = sv_mem_alloc(a, NULL, (size_t)asked * sizeof *qslot);
    tr = sv_mem_calloc(a, NULL, asked, sizeof *tr);
    hits = sv_mem_alloc(a, NULL, (CAL_K + 1) * sizeof *hits);
    if (!qv || !x || !qslot || !tr || !hits) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory calibrating");
        goto cleanup;
    }
    uint64_t rng = seed ? seed : 1;
    uint32_t got = 0;
    pthread_rwlock_rdlock(&c->lock);
    /* (queries is lowered to what was found; the arrays keep `asked`.) */
    for (uint64_t tries = 0; got < queries && tries < (uint64_t)queries * 64; tries++) {
        uint32_t s = (uint32_t)(sv_coll_splitmix(&rng) % (c->next_slot ? c->next_slot : 1));
        int dup = 0;
        for (uint32_t i = 0; i < got && !dup; i++)
            dup = qslot[i] == s;
        if (!dup && vector_of(c, s, qv + (size_t)got * dim))
            qslot[got++] = s;
    }
    /* A direction each: the difference of two random stored vectors. */
    float *dir = sv_mem_alloc(a, NULL, (size_t)asked * dim * sizeof *dir);
    float *y = sv_mem_alloc(a, NULL, (size_t)dim * sizeof *y);
    for (uint32_t q = 0; dir && y && q < got; q++) {
        float *d = dir + (size_t)q * dim;
        int ok = 0;
        for (int t = 0; t < 64 && !ok; t++) {
            uint32_t s1 = (uint32_t)(sv_coll_splitmix(&rng) % c->next_slot);
            uint32_t s2 = (uint32_t)(sv_coll_splitmix(&rng) % c->next_slot);
            ok = s1 != s2 && vector_of(c, s1, d) && vector_of(c, s2, y);
        }
        double norm = 0.0;
        for (uint32_t j = 0; j < dim; j++) {
            d[j] = ok ? d[j] - y[j] : 0.0f;
            norm += (double)d[j] * d[j];
        }
        for (uint32_t j = 0; j < dim; j++)
            d[j] = norm > 0.0 ? (float)(d[j] / sqrt(norm)) : 0.0f;
    }
    pthread_rwlock_unlock(&c->lock);
    if (!dir || !y) {
        sv_mem_free(a, NULL, y, (size_t)dim * sizeof *y);
        sv_mem_free(a, NULL, dir, (size_t)asked * dim * sizeof *dir);
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory calibrating");
        goto cleanup;
    }
    sv_mem_free(a, NULL, y, (size_t)dim * sizeof *y);
    queries = got;
    if (queries == 0) {
        st = sv_fail(err, SV_ERR_INTERNAL, "calibration found no live vector to ask with");
        goto cleanup;
    }
    /* Pass 1: each stored query vector's nearest other vector (d1). */
    {
        const float *xp = sv_coll_prepare_vectors(c, qv, queries);
        if (!xp) {
            sv_mem_free(a, NULL, dir, (size_t)asked * dim * sizeof *dir);
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory calibrating");
            goto cleanup;
        }
        nearest_pass(c, xp, qslot, queries, n_slots, x, tr, 1);
        for (uint32_t q = 0; q < queries; q++) {
            /* d1 as a length: squared for L2 (and cosine, on unit vectors
             * through 1 - cos = |a - b|^2 / 2); for IP the distance is no
             * length, so use the data's own scale: |x| / 2. */
            float d1 = tr[q].n ? tr[q].dist[0] : 0.0f;
            double len;
            if (c->params.metric == SV_METRIC_L2) {
                len = sqrt(d1 > 0.0f ? d1 : 0.0f);
            } else if (c->params.metric == SV_METRIC_COSINE) {
                double xn = 0.0;
                for (uint32_t j = 0; j < dim; j++)
                    xn += (double)qv[(size_t)q * dim + j] * qv[(size_t)q * dim + j];
                len = sqrt(2.0 * (d1 > 0.0f ? d1 : 0.0f)) * sqrt(xn);
            } else {
                double xn = 0.0;
                for (uint32_t j = 0; j < dim; j++)
                    xn += (double)qv[(size_t)q * dim + j] * qv[(size_t)q * dim + j];
                len = 0.5 * sqrt(xn);
            }
            for (uint32_t j = 0; j < dim; j++)
                qv[(size_t)q * dim + j] += (float)(len * dir[(size_t)q * dim + j]);
            tr[q].n = 0;
        }
        sv_coll_free_prepared(c, qv, xp, queries);
    }
    sv_mem_free(a, NULL, dir, (size_t)asked * dim * sizeof *dir);
    /* Queries as a search sees them: normalised under cosine. */
    const float *qp = sv_coll_prepare_vectors(c, qv, queries);
    if (!qp) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory calibrating");
        goto cleanup;
    }

    /* Pass 2: the exact answers of the queries. */
    nearest_pass(c, qp, qslot, queries, n_slots, x, tr, 0);

    /* The curve. */
    sv_calibration cal = {.queries = queries, .live = live, .exact = c->orig != NULL};
    for (uint32_t g = 0; g < GRID_N && st == SV_OK; g++) {
        double sum = 0.0;
        for (uint32_t q = 0; q < queries && st == SV_OK; q++) {
            size_t n = 0;
            sv_search_opts so = {.k = CAL_K + 1, .search_list = GRID[g]};
            st = sv_collection_search_opts(c, qv + (size_t)q * dim, dim, &so, hits, &n, err);
            uint32_t found = 0, counted = 0;
            for (size_t h = 0; h < n && counted < CAL_K; h++) {
                uint32_t slot = 0;
                pthread_rwlock_rdlock(&c->lock);
                int known = sv_idmap_find(c->idmap, hits[h].id, strlen(hits[h].id), &slot);
                pthread_rwlock_unlock(&c->lock);
                counted++;
                for (uint32_t t = 0; known && t < tr[q].n; t++)
                    found += tr[q].slot[t] == slot;
            }
            sum += tr[q].n ? (double)found / tr[q].n : 1.0;
        }
        cal.points[cal.n_points++] = (sv_calib_point){GRID[g], (float)(sum / queries)};
        if (sum / queries >= 0.9995)
            break; /* past the top: the rest of the grid only costs time */
    }
    sv_coll_free_prepared(c, qv, qp, queries);
    qp = NULL;
    if (st != SV_OK)
        goto cleanup;
    cal.seconds = sv_now_seconds() - t0;
    pthread_mutex_lock(&c->calib_lock);
    c->calib = cal;
    pthread_mutex_unlock(&c->calib_lock);
    st = sv_ok(err);
cleanup:
    sv_mem_free(a, NULL, qv, (size_t)asked * dim * sizeof *qv);
    sv_mem_free(a, NULL, x, (size_t)dim * sizeof *x);
    sv_mem_free(a, NULL, qslot, (size_t)asked * sizeof *qslot);
    sv_mem_free(a, NULL, tr, (size_t)asked * sizeof *tr);
    sv_mem_free(a, NULL, hits, (CAL_K + 1) * sizeof *hits);
    return st;
}

int sv_collection_calibration(sv_collection *c, sv_calibration *out)
{
    pthread_mutex_lock(&c->calib_lock);
    *out = c->calib;
    pthread_mutex_unlock(&c->calib_lock);
    return out->n_points > 0;
}

/* Past the curve's top, the best list it knows. The curve is recall@10: a
 * search for more neighbours needs a longer list to find as large a share
 * of them, so the list is scaled by k / 10 (an estimate, not a measurement
 * of recall@k), and at most SV_L_MAX. */
uint32_t sv_calibration_list_for(const sv_calibration *cal, float target, uint32_t k)
{
    if (!cal->n_points)
        return 0;
    uint32_t list = sv_calibration_search_list(cal, target);
    if (!list)
        list = cal->points[cal->n_points - 1].search_list;
    if (k <= CAL_K)
        return list;
    uint64_t l = (uint64_t)list * ((k + CAL_K - 1) / CAL_K);
    return l > SV_L_MAX ? SV_L_MAX : (uint32_t)l;
}

uint32_t sv_calibration_search_list(const sv_calibration *cal, float target)
{
    for (uint32_t i = 0; i < cal->n_points; i++)
        if (cal->points[i].recall >= target)
            return cal->points[i].search_list;
    return 0;
}
