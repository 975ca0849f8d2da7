/*
 * Flush (slimvec.h, engine.h): the active write buffer goes into the graph
 * and is freed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "parallel.h"

typedef struct flush_job {
    sv_collection *c;
    const sv_buffer *rows;
    uint32_t *order;       /* insertion order of rows */
    size_t start;          /* the parallel loop's item i is order[start + i] */
    uint8_t *linked;       /* per row: 1 once its insert succeeded */
    sv_scratch *scratch;   /* one per worker */
} flush_job;

static int encode_row(void *ctx, size_t i, unsigned worker)
{
    flush_job *j = ctx;
    (void)worker;
    const float *x = j->rows->vecs + i * j->rows->dim;
    sv_store_put(j->c->store, j->rows->slots[i], x);
    if (j->c->orig && sv_orig_put(j->c->orig, j->rows->slots[i], x) != SV_OK)
        atomic_fetch_add(&j->c->orig_errors, 1);
    return 0;
}

/* Link row `row` (caller holds the read lock). */
static int link_row(flush_job *j, uint32_t row, unsigned worker)
{
    uint32_t slot = j->rows->slots[row];
    if (j->linked[row] || sv_graph_state(&j->c->graph, slot) != SV_SLOT_BUFFERED)
        return 0; /* done, or deleted while waiting: never linked, freed by consolidation */
    sv_status st = sv_graph_insert(&j->c->graph, slot, j->rows->vecs + (size_t)row * j->rows->dim,
                                   &j->scratch[worker]);
    if (st != SV_OK)
        return (int)st;
    j->linked[row] = 1;
    return 0;
}

static int insert_row(void *ctx, size_t i, unsigned worker)
{
    flush_job *j = ctx;
    /* A failed row is retried after the loop; keep going with the rest. */
    link_row(j, j->order[j->start + i], worker);
    return 0;
}

static int tighten_slot(void *ctx, size_t i, unsigned worker)
{
    flush_job *j = ctx;
    /* Tombstones too: a row deleted while it was being linked took reverse
     * edges as well. */
    uint8_t st = sv_graph_state(&j->c->graph, (uint32_t)i);
    if (st == SV_SLOT_INDEXED || sv_slot_is_tombstone(st))
        sv_graph_tighten(&j->c->graph, (uint32_t)i, &j->scratch[worker]);
    return 0; /* out of memory: the list stays a little long, still valid */
}

static void reclaim_between(void *ctx)
{
    sv_coll_reclaim_if_due(((flush_job *)ctx)->c);
}

/* The still-buffered row nearest to the rows' mean, or -1: a central first
 * node and entry point. */
static long central_row(const sv_collection *c, const sv_buffer *b, float *mean)
{
    uint32_t dim = b->dim;
    for (uint32_t j = 0; j < dim; j++) {
        double s = 0.0;
        for (size_t i = 0; i < b->n; i++)
            s += b->vecs[i * dim + j];
        mean[j] = (float)(s / (double)b->n);
    }
    long best = -1;
    float best_d = INFINITY;
    for (size_t i = 0; i < b->n; i++) {
        if (sv_graph_state(&c->graph, b->slots[i]) != SV_SLOT_BUFFERED)
            continue;
        float d = c->k->l2sq_f32(mean, b->vecs + i * dim, dim);
        if (d < best_d) {
            best_d = d;
            best = (long)i;
        }
    }
    return best;
}

/*
 * Everything the flush needs is allocated before the buffer is taken, so
 * an allocation failure leaves the buffer where it was (and the next add or
 * flush retries). Once taken, the rows are linked; a row whose insert fails
 * is retried once, and if it fails again (out of memory) it still becomes
 * INDEXED: connect() gives it an in-edge so search finds it, and the flush
 * reports the error.
 */
sv_status sv_coll_flush_locked(sv_collection *c, const sv_flush_hooks *h, sv_error *err)
{
    sv_status st = SV_OK;
    unsigned threads = sv_coll_threads(c);
    const sv_allocator *a = &c->alloc;
    uint32_t dim = c->params.dim;
    uint32_t *order = NULL;
    uint8_t *linked = NULL;
    sv_scratch *scratch = NULL;
    float *mean = NULL;
    size_t n = 0;

    if (h)
        h->before(h->ctx);
    pthread_rwlock_wrlock(&c->lock);
    n = c->active.n;
    /* In manual mode the durable layer trains (and logs the mean) first: a
     * flush never trains on its own then. PENDING rows (an add not yet
     * durable) are never taken: the durable layer's before() waits until
     * there are none, so this only skips a flush that raced one. */
    if (n == 0 || c->n_pending || (c->manual_flush && !sv_store_trained(c->store)) ||
        (c->orig && c->orig_defer && c->compact_gen != c->safe_gen)) {
        pthread_rwlock_unlock(&c->lock);
        if (h)
            h->after(h->ctx);
        if (c->connect_due && sv_coll_connect(c, NULL, SV_REPACK_FLUSH) != SV_OK)
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory linking cut-off vectors");
        return sv_ok(err);
    }
    order = sv_mem_alloc(a, NULL, n * sizeof *order);
    linked = sv_mem_calloc(a, NULL, n, 1);
    scratch = sv_mem_alloc(a, NULL, threads * sizeof *scratch);
    mean = sv_mem_alloc(a, NULL, dim * sizeof *mean);
    if (scratch)
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_init(&scratch[t], a, NULL);
    if (!order || !linked || !scratch || !mean ||
        sv_store_train(c->store, c->active.vecs, n) != SV_OK ||
        sv_store_reserve(c->store, c->next_slot) != SV_OK ||
        sv_edges_reserve(c->edges, c->next_slot) != SV_OK) {
        pthread_rwlock_unlock(&c->lock);
        if (h)
            h->after(h->ctx);
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory flushing %zu vectors", n);
        goto cleanup;
    }
    /* Disk space for the originals first: a full disk stops the flush
     * here, with the buffer where it was. */
    if (c->orig && (st = sv_orig_reserve(c->orig, c->next_slot, err)) != SV_OK) {
        pthread_rwlock_unlock(&c->lock);
        if (h)
            h->after(h->ctx);
        goto cleanup;
    }
    if (h && (st = h->taking(h->ctx, n, err)) != SV_OK) {
        pthread_rwlock_unlock(&c->lock);
        h->after(h->ctx);
        goto cleanup;
    }
    sv_buffer_take(&c->active, &c->flushing);
    pthread_rwlock_unlock(&c->lock);
    if (h)
        h->after(h->ctx);

    /* Only this flush touches c->flushing's rows and their records now. */
    const sv_buffer *rows = &c->flushing;
    flush_job job = {.c = c, .rows = rows, .order = order, .linked = linked, .scratch = scratch};
    sv_parallel_for(threads, n, 256, NULL, encode_row, NULL, &job);

    /* Random insertion order (seeded). */
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t r = sv_coll_splitmix(&c->rng) % (i + 1);
        uint32_t t = order[i];
        order[i] = order[r];
        order[r] = t;
    }
    /* An empty graph starts from its most central row, linked alone before
     * the workers start so that they all have something to find. */
    pthread_rwlock_rdlock(&c->lock);
    if (atomic_load(&c->graph.entry) == SV_NO_SLOT) {
        long first = central_row(c, rows, mean);
        if (first >= 0) {
            for (size_t i = 0; i < n; i++) {
                if (order[i] == (uint32_t)first) {
                    order[i] = order[0];
                    order[0] = (uint32_t)first;
                    break;
                }
            }
            sv_graph_set_entry_if_empty(&c->graph, rows->slots[first]);
            link_row(&job, (uint32_t)first, 0);
            job.start = 1;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    sv_parallel_for(threads, n - job.start, 16, &c->lock, insert_row, reclaim_between, &job);

    size_t failed = 0;
    pthread_rwlock_rdlock(&c->lock);
    for (size_t i = 0; i < n; i++)
        if (link_row(&job, (uint32_t)i, 0) != 0)
            failed++;
    pthread_rwlock_unlock(&c->lock);

    pthread_rwlock_wrlock(&c->lock);
    for (size_t i = 0; i < n; i++)
        if (sv_graph_state(&c->graph, rows->slots[i]) == SV_SLOT_BUFFERED)
            sv_graph_set_state(&c->graph, rows->slots[i], SV_SLOT_INDEXED);
    uint32_t n_slots = c->next_slot; /* adds move it: read under the lock */
    pthread_rwlock_unlock(&c->lock);

    /* Lists the inserts left over R go back to R (graph.c: slack_R). */
    job.start = 0;
    sv_parallel_for(threads, n_slots, 256, &c->lock, tighten_slot, reclaim_between, &job);

    /* Nodes whose in-edges were all pruned away get one back. */
    sv_status cs = sv_coll_connect(c, &scratch[0], SV_REPACK_FLUSH);

    pthread_rwlock_wrlock(&c->lock);
    sv_buffer_release(&c->flushing);
    pthread_rwlock_unlock(&c->lock);
    unsigned long long orig_bad = c->orig ? atomic_load(&c->orig_errors) : 0;
    if (orig_bad)
        st = sv_fail(err, SV_ERR_IO, "originals: %llu records could not be written (disk error); "
                     "snapshots wait until a restart rewrites them from the log", orig_bad);
    else if (cs == SV_ERR_INTERNAL)
        st = sv_fail(err, SV_ERR_INTERNAL, "connect left %llu vectors unreachable from the entry point",
                     (unsigned long long)c->connect_last.unreachable_after);
    else if (failed || cs != SV_OK)
        st = sv_fail(err, SV_ERR_RESOURCE,
                  "out of memory linking vectors into the graph (%zu of %zu poorly linked)", failed, n);
    else
        st = sv_ok(err);

cleanup:
    if (scratch)
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_release(&scratch[t]);
    sv_mem_free(a, NULL, scratch, threads * sizeof *scratch);
    sv_mem_free(a, NULL, order, n * sizeof *order);
    sv_mem_free(a, NULL, linked, n);
    sv_mem_free(a, NULL, mean, dim * sizeof *mean);
    return st;
}

sv_status sv_engine_flush(sv_collection *c, const sv_flush_hooks *h, int wait, sv_error *err)
{
    if (!wait) {
        if (pthread_mutex_trylock(&c->maint) != 0)
            return sv_ok(err);
    } else {
        pthread_mutex_lock(&c->maint);
    }
    sv_status st = sv_coll_flush_locked(c, h, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}

sv_status sv_collection_flush(sv_collection *c, sv_error *err)
{
    pthread_mutex_lock(&c->maint);
    sv_status st = sv_coll_flush_locked(c, NULL, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}
