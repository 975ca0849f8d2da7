/*
 * A collection: id map + write buffer + vector store + graph (slimvec.h).
 * This file: creation, input checks shared by the other files, the free
 * slot stack, statistics and validation. The work itself is split by job:
 * write.c (add, delete), search.c (search, get), flush.c, consolidate.c,
 * snapshot.c (the snapshot format).
 *
 * Locks (the order is in core/lockorder.h):
 *   maint  one flush, consolidation, validation or snapshot at a time.
 *   lock   writer-preferring rwlock. Writers: add, delete, and the short
 *          start/end steps of flush and consolidation. Readers: search, get,
 *          stats, and the chunks of work of a flush or consolidation, which
 *          take it per chunk so adds and deletes get in between.
 *
 * Adding a vector gives it a slot at once (recycled or new), binds its id
 * and copies it into the active buffer. A flush takes the active buffer (new
 * adds start another one), writes the store records, links the vectors into
 * the graph on all threads, marks them INDEXED, and frees the buffer.
 * Search runs the graph over INDEXED nodes and brute force over both
 * buffers' BUFFERED rows, and merges.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "collection_impl.h"
#include "error.h"
#include "parallel.h"
#include "slimvec.h"

uint64_t sv_coll_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

unsigned sv_coll_threads(const sv_collection *c)
{
    return c->params.threads ? c->params.threads : sv_cpu_count();
}

void sv_params_default(sv_params *p, uint32_t dim)
{
    memset(p, 0, sizeof *p);
    p->dim = dim;
    p->metric = SV_METRIC_L2;
    p->storage = SV_STORAGE_INT8;
    p->R = 32;
    p->L_build = 64;
    /* alpha buys speed with edges, about 10 bytes a vector from 1.0 to
     * 1.1 whatever the dimension: 6% more memory at 128 dimensions, where
     * it bought 8% QPS at recall 0.95 (founding set), but 1% at 784, where
     * it bought 10% at recall 0.99 (Fashion-MNIST: 1.50x hnswlib instead
     * of 1.36x, README "The trade-off behind the defaults"). From 256
     * dimensions the edges are a small share of a vector: spend them. */
    p->alpha = dim >= SV_DENSE_ALPHA_DIM ? 1.1f : 1.0f;
    p->seed = 1;
    p->threads = 0;
    p->flush_threshold = 8192;
    p->allocator = NULL;
}

static sv_status check_params(const sv_params *p, sv_error *err)
{
    if (p->dim < 1 || p->dim > SV_DIM_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "dimension %u is outside 1..%u", p->dim, SV_DIM_MAX);
    if (p->metric != SV_METRIC_L2 && p->metric != SV_METRIC_IP && p->metric != SV_METRIC_COSINE)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "unknown metric %d", (int)p->metric);
    if (p->storage != SV_STORAGE_F32 && p->storage != SV_STORAGE_INT8)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "unknown storage %d", (int)p->storage);
    if (p->R < 2 || p->R > SV_R_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "R=%u is outside 2..%u", p->R, SV_R_MAX);
    if (p->L_build < p->R || p->L_build > SV_L_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "L_build=%u is outside R..%u (R=%u)", p->L_build,
                    SV_L_MAX, p->R);
    if (!(p->alpha >= 1.0f && p->alpha <= 2.0f))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "alpha=%g is outside 1.0..2.0", (double)p->alpha);
    if (p->threads > 64)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "threads=%u is over 64", p->threads);
    if (p->originals != SV_ORIGINALS_NONE && p->originals != SV_ORIGINALS_DISK)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "unknown originals mode %d", (int)p->originals);
    if (p->originals == SV_ORIGINALS_DISK && p->storage != SV_STORAGE_INT8)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                       "originals on disk need int8 storage (float32 storage is exact already)");
    const sv_allocator *a = p->allocator;
    if (a && (!a->alloc || !a->realloc || !a->free))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "allocator hook lacks alloc, realloc or free");
    return SV_OK;
}

sv_status sv_collection_create(const sv_params *params, sv_collection **out, sv_error *err)
{
    *out = NULL;
    sv_status st = check_params(params, err);
    if (st != SV_OK)
        return st;
    const sv_allocator *hook = params->allocator ? params->allocator : sv_allocator_default();
    sv_collection *c = hook->alloc(hook->ctx, sizeof *c);
    if (!c)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory creating the collection");
    memset(c, 0, sizeof *c);
    c->alloc = *hook;
    c->params = *params;
    c->params.allocator = &c->alloc;
    c->params.originals_path = NULL; /* the caller's string: not kept */
    c->k = sv_kernels_best();
    c->rng = params->seed;
    c->id_len_max = 19; /* assigned ids: numbers below 2^63 */
    atomic_fetch_add(&c->t_other.bytes, (long long)sv_good_size(&c->alloc, sizeof *c));
    pthread_mutex_init(&c->maint, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    pthread_mutex_init(&c->calib_lock, NULL);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Searches never stop: without writer preference an add could starve. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->lock, &attr);
    pthread_rwlockattr_destroy(&attr);

    const sv_allocator *a = &c->alloc;
    c->store = sv_store_create(a, &c->t_vectors, params->dim, params->storage, params->metric);
    c->edges = sv_edges_create(a, &c->t_edges);
    c->idmap = sv_idmap_create(a, &c->t_idmap, params->seed);
    c->payloads = sv_payloads_create(a, &c->t_payload);
    /* Random, so that a scroll token from another process (before a
     * restart, which may follow a compaction) does not pass for this one's. */
    c->layout_gen = randombytes_random();
    sv_graph_init(&c->graph, a, &c->t_other, c->store, c->edges, params->R, params->L_build,
                  params->alpha);
    sv_buffer_init(&c->active, a, &c->t_buffer, params->dim);
    sv_buffer_init(&c->flushing, a, &c->t_buffer, params->dim);
    if (!c->store || !c->edges || !c->idmap || !c->payloads) {
        sv_collection_free(c);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory creating the collection");
    }
    if (params->originals == SV_ORIGINALS_DISK &&
        (st = sv_orig_open(a, &c->t_other, params->originals_path, params->dim, &c->orig, err)) != SV_OK) {
        sv_collection_free(c);
        return st;
    }
    *out = c;
    return sv_ok(err);
}

void sv_collection_free(sv_collection *c)
{
    if (!c)
        return;
    sv_buffer_release(&c->active);
    sv_buffer_release(&c->flushing);
    sv_graph_release(&c->graph);
    sv_idmap_free(c->idmap);
    sv_payloads_free(c->payloads);
    sv_edges_free(c->edges);
    sv_store_free(c->store);
    sv_orig_close(c->orig);
    sv_mem_free(&c->alloc, &c->t_other, c->free_slots, c->free_cap * sizeof *c->free_slots);
    sv_marks_free(c, &c->del_marks);
    sv_marks_free(c, &c->rep_marks);
    for (uint32_t i = 0; i < c->pool_n; i++) {
        sv_scratch_release(c->pool[i]);
        sv_mem_free(&c->alloc, &c->t_other, c->pool[i], sizeof *c->pool[i]);
    }
    sv_mem_free(&c->alloc, &c->t_other, c->pool, c->pool_cap * sizeof *c->pool);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_mutex_destroy(&c->calib_lock);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->maint);
    sv_allocator hook = c->alloc;
    hook.free(hook.ctx, c);
}

const sv_params *sv_collection_params(const sv_collection *c)
{
    return &c->params;
}

size_t sv_collection_id_len_max(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->id_len_max;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

uint64_t sv_collection_count(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t n = c->n_live;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

/* ---- input checks ------------------------------------------------------ */

sv_status sv_coll_check_dim(const sv_collection *c, uint32_t dim, sv_error *err)
{
    if (dim != c->params.dim)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "dimension %u does not match the collection's %u",
                    dim, c->params.dim);
    return SV_OK;
}

/* Finiteness and the cosine zero vector; `index` names the vector in a
 * batch ("vector 7: ..."), or is SIZE_MAX for a query ("query: ..."). */
sv_status sv_coll_check_vector(const sv_collection *c, const float *v, size_t index, sv_error *err)
{
    char what[40];
    if (index == SIZE_MAX)
        snprintf(what, sizeof what, "query");
    else
        snprintf(what, sizeof what, "vector %zu", index);
    double norm = 0.0;
    for (uint32_t j = 0; j < c->params.dim; j++) {
        if (!isfinite(v[j]))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "%s: component %u is %s", what, j,
                        isnan(v[j]) ? "NaN" : "infinite");
        norm += (double)v[j] * v[j];
    }
    if (c->params.metric == SV_METRIC_COSINE && norm == 0.0)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "%s is the zero vector, which has no cosine", what);
    /* Squares that overflow float would poison every distance. */
    if (!isfinite((float)norm))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "%s: its squared norm overflows float", what);
    return SV_OK;
}

/* In double: for subnormal inputs a float reciprocal of the norm is
 * infinite and would turn the vector (and a quantizer mean) into NaN. */
static void normalise(float *v, uint32_t dim)
{
    double norm = 0.0;
    for (uint32_t j = 0; j < dim; j++)
        norm += (double)v[j] * v[j];
    double inv = 1.0 / sqrt(norm);
    for (uint32_t j = 0; j < dim; j++)
        v[j] = (float)(v[j] * inv);
}

/* The vectors as the store takes them: a normalised copy under cosine
 * (caller frees with free_prepared), else the input itself. */
const float *sv_coll_prepare_vectors(sv_collection *c, const float *v, size_t n)
{
    if (c->params.metric != SV_METRIC_COSINE)
        return v;
    size_t bytes = n * c->params.dim * sizeof(float);
    float *copy = sv_mem_alloc(&c->alloc, NULL, bytes);
    if (!copy)
        return NULL;
    memcpy(copy, v, bytes);
    for (size_t i = 0; i < n; i++)
        normalise(copy + i * c->params.dim, c->params.dim);
    return copy;
}

void sv_coll_free_prepared(sv_collection *c, const float *orig, const float *prep, size_t n)
{
    if (prep && prep != orig)
        sv_mem_free(&c->alloc, NULL, (void *)prep, n * c->params.dim * sizeof(float));
}

/* ---- the free slot stack -------------------------------------------------- */

sv_status sv_coll_grow_free(sv_collection *c, size_t extra)
{
    size_t need = (size_t)c->n_free + c->free_reserved + extra;
    if (need <= c->free_cap)
        return SV_OK;
    if (need > UINT32_MAX)
        return SV_ERR_RESOURCE;
    size_t cap = c->free_cap ? c->free_cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    uint32_t *t = sv_mem_realloc(&c->alloc, &c->t_other, c->free_slots,
                                 c->free_cap * sizeof *t, cap * sizeof *t);
    if (!t)
        return SV_ERR_RESOURCE;
    c->free_slots = t;
    c->free_cap = (uint32_t)cap;
    return SV_OK;
}

sv_status sv_coll_reserve_free(sv_collection *c, size_t extra)
{
    sv_status st = sv_coll_grow_free(c, extra);
    if (st == SV_OK)
        c->free_reserved += (uint32_t)extra;
    return st;
}

/* ---- ids and buffered rows ------------------------------------------------- */

int sv_coll_find_live(sv_collection *c, const char *id, uint32_t *slot)
{
    size_t len = id ? strnlen(id, SV_ID_MAX + 1) : 0;
    if (len == 0 || len > SV_ID_MAX || !sv_idmap_find(c->idmap, id, len, slot))
        return 0;
    uint8_t st = sv_graph_state(&c->graph, *slot);
    return st == SV_SLOT_BUFFERED || st == SV_SLOT_INDEXED;
}

sv_status sv_coll_write_target(sv_collection *c, const char *id, uint32_t *slot)
{
    size_t len = id ? strnlen(id, SV_ID_MAX + 1) : 0;
    if (len == 0 || len > SV_ID_MAX || !sv_idmap_find(c->idmap, id, len, slot))
        return SV_ERR_NOT_FOUND;
    if (sv_marks_test(&c->rep_marks, *slot))
        return SV_ERR_CONFLICT;
    /* An add in flight (PENDING) or a delete in flight: refused at once (see write.c). */
    uint8_t st = sv_graph_state(&c->graph, *slot);
    if (sv_marks_test(&c->del_marks, *slot))
        return SV_ERR_NOT_FOUND;
    return st == SV_SLOT_BUFFERED || st == SV_SLOT_INDEXED ? SV_OK : SV_ERR_NOT_FOUND;
}

/* Keep the rows whose slots are not marked, in their order. */
static void compact_rows(sv_buffer *b, const uint64_t *marked)
{
    size_t keep = 0;
    size_t row = (size_t)b->dim;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t s = b->slots[i];
        if ((marked[s >> 6] >> (s & 63)) & 1)
            continue;
        if (keep != i) {
            memcpy(b->vecs + keep * row, b->vecs + i * row, row * sizeof(float));
            b->slots[keep] = s;
        }
        keep++;
    }
    b->n = keep;
}

void sv_coll_remove_rows(sv_collection *c, const uint64_t *marked)
{
    /* One pass per buffer: removing rows one by one, each found by a
     * linear search, cost O(batch x buffer) under the write lock. */
    compact_rows(&c->active, marked);
    compact_rows(&c->flushing, marked);
}

/*
 * Every replaced neighbour list is retired, not freed, until no reader can
 * hold it. Freeing them once per flush let a build of 10,000 vectors retire
 * ~5x its final edge memory and left jemalloc's slabs sparsely filled (arena
 * active pages 5x the allocated bytes); freeing every 256 KiB lets the
 * allocator reuse the holes while the graph grows.
 */
#define RECLAIM_BYTES (256u * 1024u)

void sv_coll_reclaim_if_due(sv_collection *c)
{
    if (sv_edges_retired_bytes(c->edges) < RECLAIM_BYTES)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_edges_reclaim(c->edges);
    pthread_rwlock_unlock(&c->lock);
}

sv_status sv_coll_connect(sv_collection *c, sv_scratch *s, uint32_t repack_16ths)
{
    sv_scratch local;
    if (!s) {
        sv_scratch_init(&local, &c->alloc, NULL);
        s = &local;
    }
    uint32_t linked = 0;
    pthread_rwlock_rdlock(&c->lock);
    sv_status st = sv_graph_connect(&c->graph, c->next_slot, s, &linked);
    pthread_rwlock_unlock(&c->lock);
    pthread_rwlock_wrlock(&c->lock);
    /* Blocks the flush or consolidation replaced sit in free lists of
     * their sizes: pack the slabs again past the caller's share. */
    sv_edges_repack(c->edges, c->next_slot, repack_16ths);
    c->connect_last = c->graph.last_connect;
    c->connect_total = c->graph.connect_total;
    c->connect_due = st != SV_OK;
    pthread_rwlock_unlock(&c->lock);
    if (s == &local)
        sv_scratch_release(&local);
    return st;
}

/* ---- the durable layer's small steps (engine.h) ---------------------------- */

void sv_engine_set_manual_flush(sv_collection *c, int on)
{
    pthread_rwlock_wrlock(&c->lock);
    c->manual_flush = on;
    pthread_rwlock_unlock(&c->lock);
}

uint64_t sv_engine_id_counter(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t v = sv_idmap_counter(c->idmap);
    pthread_rwlock_unlock(&c->lock);
    return v;
}

void sv_engine_set_id_counter(sv_collection *c, uint64_t counter)
{
    pthread_rwlock_wrlock(&c->lock);
    sv_idmap_set_counter(c->idmap, counter);
    pthread_rwlock_unlock(&c->lock);
}

uint64_t sv_engine_unindexed(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t n = c->active.n + c->flushing.n;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

uint64_t sv_engine_buffered(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t n = c->active.n;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

void sv_engine_counts(sv_collection *c, sv_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&c->lock);
    out->live = c->n_live;
    out->tombstones = c->n_tombstones;
    out->buffered = c->active.n;
    out->free_slots = c->n_free;
    out->slots = c->next_slot - c->n_free;
    pthread_rwlock_unlock(&c->lock);
}

sv_status sv_engine_train(sv_collection *c, float *mean, int *trained, sv_error *err)
{
    *trained = 0;
    sv_status st = SV_OK;
    pthread_rwlock_wrlock(&c->lock);
    if (c->params.storage == SV_STORAGE_INT8 && !sv_store_trained(c->store) && c->active.n > 0) {
        st = sv_store_train(c->store, c->active.vecs, c->active.n);
        if (st == SV_OK) {
            memcpy(mean, sv_store_mean(c->store), c->params.dim * sizeof(float));
            *trained = 1;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    return st == SV_OK ? sv_ok(err) : sv_fail(err, st, "out of memory training the quantizer");
}

sv_status sv_engine_set_mean(sv_collection *c, const float *mean, sv_error *err)
{
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = sv_store_set_mean(c->store, mean);
    pthread_rwlock_unlock(&c->lock);
    if (st == SV_ERR_INVALID_ARGUMENT)
        return sv_fail(err, st, "the quantizer is already trained or the storage is not int8");
    return st == SV_OK ? sv_ok(err) : sv_fail(err, st, "out of memory setting the quantizer");
}

int sv_engine_trained(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    int t = sv_store_trained(c->store);
    pthread_rwlock_unlock(&c->lock);
    return t;
}

int sv_engine_mean(sv_collection *c, float *mean)
{
    pthread_rwlock_rdlock(&c->lock);
    const float *m = sv_store_mean(c->store);
    if (m)
        memcpy(mean, m, c->params.dim * sizeof(float));
    pthread_rwlock_unlock(&c->lock);
    return m != NULL;
}

/* ---- validation and stats ----------------------------------------------- */

sv_status sv_collection_validate(sv_collection *c, sv_error *err)
{
    char msg[200] = "";
    pthread_mutex_lock(&c->maint);
    pthread_rwlock_rdlock(&c->lock);
    sv_status st = sv_graph_validate(&c->graph, c->next_slot, msg, sizeof msg);
    uint64_t live = 0, tomb = 0;
    for (uint32_t i = 0; st == SV_OK && i < c->next_slot; i++) {
        uint8_t s = sv_graph_state(&c->graph, i);
        live += s == SV_SLOT_INDEXED || s == SV_SLOT_BUFFERED;
        tomb += s == SV_SLOT_DELETED;
    }
    if (st == SV_OK && (live != c->n_live || tomb != c->n_tombstones))
        st = sv_fail(err, SV_ERR_INTERNAL, "counts disagree: %llu live slots vs %llu, %llu tombstones vs %llu",
                  (unsigned long long)live, (unsigned long long)c->n_live,
                  (unsigned long long)tomb, (unsigned long long)c->n_tombstones);
    else if (st == SV_OK && sv_idmap_count(c->idmap) != c->n_live + c->n_pending)
        st = sv_fail(err, SV_ERR_INTERNAL, "the id map holds %zu ids for %llu live and %llu pending vectors",
                  sv_idmap_count(c->idmap), (unsigned long long)c->n_live,
                  (unsigned long long)c->n_pending);
    else if (st != SV_OK)
        sv_fail(err, st, "%s", msg);
    else
        sv_ok(err);
    pthread_rwlock_unlock(&c->lock);
    pthread_mutex_unlock(&c->maint);
    return st;
}

void sv_collection_stats(sv_collection *c, sv_stats *out)
{
    memset(out, 0, sizeof *out);
    uint64_t degree_sum = 0, cap_sum = 0, nodes = 0;
    pthread_rwlock_rdlock(&c->lock);
    for (uint32_t i = 0; i < c->next_slot; i++) {
        uint8_t s = sv_graph_state(&c->graph, i);
        if (s == SV_SLOT_FREE || s == SV_SLOT_PENDING)
            continue;
        out->slots++;
        if (s == SV_SLOT_BUFFERED)
            out->buffered++;
        if (s == SV_SLOT_DELETED || s == SV_SLOT_DELETING)
            out->tombstones++;
        if (s != SV_SLOT_INDEXED)
            continue;
        out->indexed++;
        uint32_t count = 0;
        count = sv_edges_count(c->edges, i);
        degree_sum += count;
        cap_sum += sv_edges_bytes(c->edges, i);
        nodes++;
        if (count > out->max_degree)
            out->max_degree = count;
    }
    out->live = c->n_live;
    out->free_slots = c->n_free;
    out->avg_degree = nodes ? (double)degree_sum / (double)nodes : 0.0;
    /* Blocks hold exactly their lists: the slots are the degree. */
    out->avg_edge_slots = out->avg_degree;
    out->avg_edge_bytes = nodes ? (double)cap_sum / (double)nodes + 4.0 : 0.0;
    out->est_bytes_vectors = (uint64_t)sv_tally_get(&c->t_vectors);
    out->est_bytes_edges = (uint64_t)sv_tally_get(&c->t_edges);
    out->est_bytes_idmap = (uint64_t)sv_tally_get(&c->t_idmap);
    out->est_bytes_buffer = (uint64_t)sv_tally_get(&c->t_buffer);
    out->est_bytes_other = (uint64_t)sv_tally_get(&c->t_other);
    out->est_bytes_payload = (uint64_t)sv_tally_get(&c->t_payload);
    out->connect_last = c->connect_last;
    out->connect_total = c->connect_total;
    if (c->orig) {
        sv_orig_usage u;
        sv_orig_get_usage(c->orig, c->next_slot, &u);
        out->orig_file_bytes = u.file_bytes;
        out->orig_disk_bytes = u.disk_bytes;
        out->orig_resident_bytes = u.resident_bytes;
    }
    pthread_rwlock_unlock(&c->lock);
}
