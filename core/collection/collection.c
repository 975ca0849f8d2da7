/*
 * A collection: id map + write buffer + vector store + graph (slimvec.h).
 *
 * Lock order (take left before right, never the reverse):
 *   maint (mutex) -> lock (rwlock) -> an edge stripe -> the retired list
 *
 *   maint  one flush, consolidation or validation at a time.
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

#include "collection_impl.h"
#include "error.h"
#include "idmap.h"
#include "kernels.h"
#include "parallel.h"
#include "sort.h"
#include "slimvec.h"
#include "store.h"



static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned thread_count(const sv_collection *c)
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
    p->alpha = 1.0f;
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
    c->k = sv_kernels_best();
    c->rng = params->seed;
    atomic_fetch_add(&c->t_other.bytes, (long long)sv_good_size(&c->alloc, sizeof *c));
    pthread_mutex_init(&c->maint, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
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
    sv_graph_init(&c->graph, a, &c->t_other, c->store, c->edges, params->R, params->L_build,
                  params->alpha);
    sv_buffer_init(&c->active, a, &c->t_buffer, params->dim);
    sv_buffer_init(&c->flushing, a, &c->t_buffer, params->dim);
    if (!c->store || !c->edges || !c->idmap) {
        sv_collection_free(c);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory creating the collection");
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
    sv_edges_free(c->edges);
    sv_store_free(c->store);
    sv_mem_free(&c->alloc, &c->t_other, c->free_slots, c->free_cap * sizeof *c->free_slots);
    for (uint32_t i = 0; i < c->pool_n; i++) {
        sv_scratch_release(c->pool[i]);
        sv_mem_free(&c->alloc, &c->t_other, c->pool[i], sizeof *c->pool[i]);
    }
    sv_mem_free(&c->alloc, &c->t_other, c->pool, c->pool_cap * sizeof *c->pool);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->maint);
    sv_allocator hook = c->alloc;
    hook.free(hook.ctx, c);
}

const sv_params *sv_collection_params(const sv_collection *c)
{
    return &c->params;
}

uint64_t sv_collection_count(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t n = c->n_live;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

/* ---- input checks ------------------------------------------------------ */

static sv_status check_dim(const sv_collection *c, uint32_t dim, sv_error *err)
{
    if (dim != c->params.dim)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "dimension %u does not match the collection's %u",
                    dim, c->params.dim);
    return SV_OK;
}

/* Finiteness and the cosine zero vector; `index` names the vector in a
 * batch ("vector 7: ..."), or is SIZE_MAX for a query ("query: ..."). */
static sv_status check_vector(const sv_collection *c, const float *v, size_t index, sv_error *err)
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
static const float *prepare_vectors(sv_collection *c, const float *v, size_t n)
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

static void free_prepared(sv_collection *c, const float *orig, const float *prep, size_t n)
{
    if (prep && prep != orig)
        sv_mem_free(&c->alloc, NULL, (void *)prep, n * c->params.dim * sizeof(float));
}

/* ---- add ----------------------------------------------------------------- */

static sv_status flush_locked(sv_collection *c, const sv_flush_hooks *h, sv_error *err);

static sv_status reserve_free_list(sv_collection *c, size_t extra)
{
    if (c->n_free + extra <= c->free_cap)
        return SV_OK;
    size_t cap = c->free_cap ? c->free_cap : 64;
    while (cap < c->n_free + extra)
        cap *= 2;
    uint32_t *t = sv_mem_realloc(&c->alloc, &c->t_other, c->free_slots,
                                 c->free_cap * sizeof *t, cap * sizeof *t);
    if (!t)
        return SV_ERR_RESOURCE;
    c->free_slots = t;
    c->free_cap = (uint32_t)cap;
    return SV_OK;
}

sv_status sv_collection_reserve_free(sv_collection *c, size_t n)
{
    return reserve_free_list(c, n);
}

static int id_given(const char *const *ids, size_t i)
{
    return ids && ids[i] && ids[i][0];
}

static int cmp_id_index(const void *a, const void *b, void *ctx)
{
    const char *const *ids = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(ids[x], ids[y]);
    return c ? c : (x > y) - (x < y);
}

/*
 * Under the write lock, before anything changes: no given id may exist
 * already or appear twice in the batch. Canonical numbers have one spelling,
 * so comparing the text finds every duplicate.
 */
static sv_status check_batch_ids(sv_collection *c, const char *const *ids, size_t n, sv_error *err)
{
    if (!ids)
        return SV_OK;
    size_t *order = sv_mem_alloc(&c->alloc, NULL, n * sizeof *order);
    if (!order)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory checking %zu ids", n);
    size_t m = 0;
    sv_status st = SV_OK;
    for (size_t i = 0; i < n; i++) {
        if (!id_given(ids, i))
            continue;
        uint32_t slot = 0;
        if (sv_idmap_find(c->idmap, ids[i], strlen(ids[i]), &slot)) {
            st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "id \"%s\" of vector %zu already exists", ids[i], i);
            goto cleanup;
        }
        order[m++] = i;
    }
    sv_sort(order, m, sizeof *order, cmp_id_index, (void *)ids);
    for (size_t i = 1; i < m; i++) {
        if (strcmp(ids[order[i - 1]], ids[order[i]]) == 0) {
            st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "id \"%s\" of vector %zu appears twice in the batch (also vector %zu)",
                      ids[order[i]], order[i], order[i - 1]);
            goto cleanup;
        }
    }
cleanup:
    sv_mem_free(&c->alloc, NULL, order, n * sizeof *order);
    return st;
}

/* Bind every id of the batch to its slot; on failure unbind them all. */
static sv_status bind_ids(sv_collection *c, const char *const *ids, const uint32_t *slots, size_t n,
                          uint64_t *assigned, sv_error *err)
{
    size_t i = 0;
    /* Given ids first, so assigned numbers skip them. */
    for (; i < n; i++) {
        if (!id_given(ids, i))
            continue;
        size_t len = strlen(ids[i]);
        if (sv_idmap_insert(c->idmap, ids[i], len, slots[i]) != SV_OK)
            goto undo;
        uint64_t num = 0;
        if (assigned)
            assigned[i] = sv_id_parse_number(ids[i], len, &num) ? num : UINT64_MAX;
    }
    for (i = 0; i < n; i++) {
        if (id_given(ids, i))
            continue;
        uint64_t num = sv_idmap_next_free_number(c->idmap);
        if (sv_idmap_insert_number(c->idmap, num, slots[i]) != SV_OK)
            goto undo;
        if (assigned)
            assigned[i] = num;
    }
    return SV_OK;
undo:
    for (size_t j = 0; j < n; j++)
        sv_idmap_remove_slot(c->idmap, slots[j]); /* unbound slots: no-op */
    return sv_fail(err, SV_ERR_RESOURCE, "out of memory binding the id of vector %zu", i);
}

sv_status sv_collection_add(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                            const char *const *ids, uint64_t *assigned, sv_error *err)
{
    sv_status st = check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    if (n == 0)
        return sv_ok(err);
    if (!vectors)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "no vectors given");
    for (size_t i = 0; i < n; i++) {
        if ((st = check_vector(c, vectors + i * dim, i, err)) != SV_OK)
            return st;
        if (id_given(ids, i) && strnlen(ids[i], SV_ID_MAX + 1) > SV_ID_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "id of vector %zu is longer than %d bytes", i,
                        SV_ID_MAX);
    }
    const float *prep = prepare_vectors(c, vectors, n);
    uint32_t *slots = sv_mem_alloc(&c->alloc, NULL, n * sizeof *slots);
    if (!prep || !slots) {
        sv_mem_free(&c->alloc, NULL, slots, n * sizeof *slots);
        free_prepared(c, vectors, prep, n);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory adding %zu vectors", n);
    }

    pthread_rwlock_wrlock(&c->lock);
    uint32_t saved_next = c->next_slot, saved_free = c->n_free;
    if ((st = check_batch_ids(c, ids, n, err)) != SV_OK)
        goto cleanup;
    if ((uint64_t)c->next_slot + n > (uint64_t)UINT32_MAX - 1) {
        st = sv_fail(err, SV_ERR_RESOURCE, "the collection cannot hold %zu more vectors", n);
        goto cleanup;
    }
    /* Capacity first: past this point only the id bindings can fail. */
    if (sv_graph_reserve(&c->graph, c->next_slot + (uint32_t)n) != SV_OK ||
        sv_idmap_reserve_slots(c->idmap, c->next_slot + (uint32_t)n) != SV_OK ||
        sv_buffer_reserve(&c->active, n) != SV_OK) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory adding %zu vectors", n);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++)
        slots[i] = c->n_free ? c->free_slots[--c->n_free] : c->next_slot++;
    if ((st = bind_ids(c, ids, slots, n, assigned, err)) != SV_OK) {
        c->next_slot = saved_next;
        c->n_free = saved_free; /* the popped slots are still in the array */
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        sv_buffer_push(&c->active, prep + i * dim, slots[i]);
        sv_graph_set_state(&c->graph, slots[i], SV_SLOT_BUFFERED);
    }
    c->n_live += n;
    st = sv_ok(err);

cleanup:;
    int want_flush = st == SV_OK && !c->manual_flush && c->params.flush_threshold &&
                     c->active.n >= c->params.flush_threshold;
    pthread_rwlock_unlock(&c->lock);
    sv_mem_free(&c->alloc, NULL, slots, n * sizeof *slots);
    free_prepared(c, vectors, prep, n);
    /* The batch is applied and searchable in the buffer whatever the flush
     * does. If a flush or consolidation is running, do not wait for it: the
     * next add over the threshold (or an explicit flush) takes the buffer;
     * a flush that fails leaves the buffer to be retried the same way. */
    if (want_flush && pthread_mutex_trylock(&c->maint) == 0) {
        flush_locked(c, NULL, NULL);
        pthread_mutex_unlock(&c->maint);
    }
    return st;
}

/* ---- search ------------------------------------------------------------- */

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

static void scan_buffer(const sv_collection *c, const sv_buffer *b, const float *q, sv_cand *top,
                        uint32_t *n, uint32_t k)
{
    for (size_t i = 0; i < b->n; i++) {
        if (sv_graph_state(&c->graph, b->slots[i]) != SV_SLOT_BUFFERED)
            continue;
        float d = sv_metric_distance_f32(c->k, c->params.metric, q, b->vecs + i * b->dim, b->dim);
        topk_push(top, n, k, d, b->slots[i]);
    }
}

sv_status sv_collection_search(sv_collection *c, const float *query, uint32_t dim, uint32_t k,
                               uint32_t search_list, sv_hit *hits, size_t *n_hits, sv_error *err)
{
    *n_hits = 0;
    sv_status st = check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    if (k < 1 || k > SV_K_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "k=%u is outside 1..%d", k, SV_K_MAX);
    if (search_list > SV_L_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "search list %u is over %d", search_list, SV_L_MAX);
    if ((st = check_vector(c, query, SIZE_MAX, err)) != SV_OK)
        return st;
    uint32_t L = search_list < k ? k : search_list;
    const float *q = prepare_vectors(c, query, 1);
    sv_cand *top = sv_mem_alloc(&c->alloc, NULL, (size_t)k * sizeof *top);
    sv_scratch *s = scratch_acquire(c);
    sv_query pq = {0};
    uint32_t n = 0;
    if (!q || !top || !s) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory searching");
        goto cleanup;
    }

    pthread_rwlock_rdlock(&c->lock);
    if (atomic_load(&c->graph.entry) != SV_NO_SLOT) {
        if ((st = sv_query_prepare(&pq, c->store, q, 0)) == SV_OK)
            st = sv_graph_search(&c->graph, &pq, L, s, 0);
        for (uint32_t i = 0; st == SV_OK && i < s->n; i++)
            if (sv_graph_state(&c->graph, s->list[i].slot) == SV_SLOT_INDEXED)
                topk_push(top, &n, k, s->list[i].dist, s->list[i].slot);
    }
    if (st == SV_OK) {
        scan_buffer(c, &c->active, q, top, &n, k);
        scan_buffer(c, &c->flushing, q, top, &n, k);
        for (uint32_t i = 0; i < n; i++) {
            hits[i].distance = top[i].dist;
            sv_idmap_format(c->idmap, top[i].slot, hits[i].id, sizeof hits[i].id);
        }
        *n_hits = n;
    }
    pthread_rwlock_unlock(&c->lock);
    if (st != SV_OK)
        sv_fail(err, st, "out of memory searching");
    else
        sv_ok(err);

cleanup:
    if (pq.vec)
        sv_query_release(&pq);
    scratch_return(c, s);
    sv_mem_free(&c->alloc, NULL, top, (size_t)k * sizeof *top);
    free_prepared(c, query, q, 1);
    return st;
}

/* ---- get / delete ------------------------------------------------------- */

static int find_id(sv_collection *c, const char *id, uint32_t *slot)
{
    size_t len = id ? strnlen(id, SV_ID_MAX + 1) : 0;
    if (len == 0 || len > SV_ID_MAX)
        return 0;
    return sv_idmap_find(c->idmap, id, len, slot);
}

sv_status sv_collection_get(sv_collection *c, const char *id, float *out, uint32_t dim,
                            sv_error *err)
{
    sv_status st = check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    pthread_rwlock_rdlock(&c->lock);
    uint32_t slot = 0;
    st = sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" not found", SV_ID_MAX, id ? id : "");
    if (find_id(c, id, &slot)) {
        uint8_t state = sv_graph_state(&c->graph, slot);
        long row = -1;
        if (state == SV_SLOT_INDEXED) {
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

sv_status sv_collection_delete(sv_collection *c, const char *const *ids, size_t n, sv_error *err)
{
    if (n == 0)
        return sv_ok(err);
    uint32_t *slots = sv_mem_alloc(&c->alloc, NULL, n * sizeof *slots);
    if (!slots)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    sv_status st = SV_OK;
    pthread_rwlock_wrlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        if (!find_id(c, ids[i], &slots[i])) {
            st = sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" (item %zu) not found", SV_ID_MAX,
                      ids[i] ? ids[i] : "", i);
            goto cleanup;
        }
    }
    if (reserve_free_list(c, n) != SV_OK) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = slots[i];
        uint8_t state = sv_graph_state(&c->graph, slot);
        if (state == SV_SLOT_BUFFERED && sv_buffer_remove_slot(&c->active, slot)) {
            /* Never reached the graph: the slot is free at once. */
            sv_graph_set_state(&c->graph, slot, SV_SLOT_FREE);
            c->free_slots[c->n_free++] = slot;
        } else if (state == SV_SLOT_BUFFERED || state == SV_SLOT_INDEXED) {
            sv_graph_set_state(&c->graph, slot, SV_SLOT_DELETED);
            c->n_tombstones++;
        } else {
            continue; /* the same id twice in one call */
        }
        sv_idmap_remove_slot(c->idmap, slot);
        c->n_live--;
    }
    st = sv_ok(err);
cleanup:
    pthread_rwlock_unlock(&c->lock);
    sv_mem_free(&c->alloc, NULL, slots, n * sizeof *slots);
    return st;
}

/* ---- flush -------------------------------------------------------------- */

/*
 * Every replaced neighbour list is retired, not freed, until no reader can
 * hold it. Freeing them once per flush let a build of 10,000 vectors retire
 * ~5x its final edge memory and left jemalloc's slabs sparsely filled (arena
 * active pages 5x the allocated bytes); freeing every 256 KiB lets the
 * allocator reuse the holes while the graph grows.
 */
#define RECLAIM_BYTES (256u * 1024u)

static void reclaim_if_due(sv_collection *c)
{
    if (sv_edges_retired_bytes(c->edges) < RECLAIM_BYTES)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_edges_reclaim(c->edges);
    pthread_rwlock_unlock(&c->lock);
}

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
    sv_store_put(j->c->store, j->rows->slots[i], j->rows->vecs + i * j->rows->dim);
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

static void reclaim_between(void *ctx)
{
    reclaim_if_due(((flush_job *)ctx)->c);
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
static sv_status flush_locked(sv_collection *c, const sv_flush_hooks *h, sv_error *err)
{
    sv_status st = SV_OK;
    unsigned threads = thread_count(c);
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
     * flush never trains on its own then. */
    if (n == 0 || (c->manual_flush && !sv_store_trained(c->store))) {
        pthread_rwlock_unlock(&c->lock);
        if (h)
            h->after(h->ctx);
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
        size_t r = splitmix64(&c->rng) % (i + 1);
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
    pthread_rwlock_unlock(&c->lock);

    /* Nodes whose in-edges were all pruned away get one back. */
    uint32_t connected = 0;
    pthread_rwlock_rdlock(&c->lock);
    sv_status cs = sv_graph_connect(&c->graph, c->next_slot, &scratch[0], &connected);
    pthread_rwlock_unlock(&c->lock);

    pthread_rwlock_wrlock(&c->lock);
    sv_buffer_release(&c->flushing);
    sv_edges_reclaim(c->edges);
    pthread_rwlock_unlock(&c->lock);
    if (failed || cs != SV_OK)
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

sv_status sv_collection_flush_hooked(sv_collection *c, const sv_flush_hooks *h, int wait,
                                     sv_error *err)
{
    if (!wait) {
        if (pthread_mutex_trylock(&c->maint) != 0)
            return sv_ok(err);
    } else {
        pthread_mutex_lock(&c->maint);
    }
    sv_status st = flush_locked(c, h, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}

sv_status sv_collection_flush(sv_collection *c, sv_error *err)
{
    pthread_mutex_lock(&c->maint);
    sv_status st = flush_locked(c, NULL, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}

void sv_collection_set_manual_flush(sv_collection *c, int on)
{
    pthread_rwlock_wrlock(&c->lock);
    c->manual_flush = on;
    pthread_rwlock_unlock(&c->lock);
}

uint64_t sv_collection_id_counter(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t v = sv_idmap_counter(c->idmap);
    pthread_rwlock_unlock(&c->lock);
    return v;
}

void sv_collection_set_id_counter(sv_collection *c, uint64_t counter)
{
    pthread_rwlock_wrlock(&c->lock);
    sv_idmap_set_counter(c->idmap, counter);
    pthread_rwlock_unlock(&c->lock);
}

sv_status sv_collection_check_ids(sv_collection *c, const char *const *ids, size_t n, sv_error *err)
{
    sv_status st = SV_OK;
    pthread_rwlock_wrlock(&c->lock);
    for (size_t i = 0; i < n && st == SV_OK; i++) {
        uint32_t slot;
        if (!find_id(c, ids[i], &slot))
            st = sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" (item %zu) not found", SV_ID_MAX,
                         ids[i] ? ids[i] : "", i);
    }
    /* The delete that follows then finds the free list's room reserved. */
    if (st == SV_OK && reserve_free_list(c, n) != SV_OK)
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    pthread_rwlock_unlock(&c->lock);
    return st == SV_OK ? sv_ok(err) : st;
}

uint64_t sv_collection_buffered(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    uint64_t n = c->active.n;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

sv_status sv_collection_train(sv_collection *c, float *mean, int *trained, sv_error *err)
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

sv_status sv_collection_set_mean(sv_collection *c, const float *mean, sv_error *err)
{
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = sv_store_set_mean(c->store, mean);
    pthread_rwlock_unlock(&c->lock);
    if (st == SV_ERR_INVALID_ARGUMENT)
        return sv_fail(err, st, "the quantizer is already trained or the storage is not int8");
    return st == SV_OK ? sv_ok(err) : sv_fail(err, st, "out of memory setting the quantizer");
}

/* ---- consolidation ------------------------------------------------------ */

typedef struct repair_job {
    sv_collection *c;
    sv_scratch *scratch;
} repair_job;

static int repair_slot(void *ctx, size_t i, unsigned worker)
{
    repair_job *j = ctx;
    uint8_t st = sv_graph_state(&j->c->graph, (uint32_t)i);
    /* Tombstones that stay (deleted after this pass began) are repaired too:
     * they keep routing searches until their own consolidation. */
    if (st != SV_SLOT_INDEXED && st != SV_SLOT_DELETED)
        return 0;
    return (int)sv_graph_repair_node(&j->c->graph, (uint32_t)i, &j->scratch[worker]);
}

static void reclaim_between_repair(void *ctx)
{
    reclaim_if_due(((repair_job *)ctx)->c);
}

sv_status sv_collection_consolidate(sv_collection *c, sv_error *err)
{
    sv_status st = SV_OK;
    unsigned threads = thread_count(c);
    const sv_allocator *a = &c->alloc;
    sv_scratch *scratch = NULL;
    pthread_mutex_lock(&c->maint);

    /* Fix the set to remove now: later deletes wait for the next pass. */
    pthread_rwlock_wrlock(&c->lock);
    uint32_t n_slots = c->next_slot;
    uint64_t n_del = 0;
    for (uint32_t i = 0; i < n_slots; i++) {
        if (sv_graph_state(&c->graph, i) == SV_SLOT_DELETED) {
            sv_graph_set_state(&c->graph, i, SV_SLOT_DELETING);
            n_del++;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    if (n_del == 0) {
        st = sv_ok(err);
        goto cleanup;
    }

    scratch = sv_mem_alloc(a, NULL, threads * sizeof *scratch);
    if (!scratch) {
        st = SV_ERR_RESOURCE;
    } else {
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_init(&scratch[t], a, NULL);
        repair_job job = {c, scratch};
        st = (sv_status)sv_parallel_for(threads, n_slots, 256, &c->lock, repair_slot,
                                        reclaim_between_repair, &job);
    }

    /* A new entry point if the old one goes: an O(n) scan, so under the
     * read lock; the DELETING set cannot change meanwhile. */
    uint32_t entry = SV_NO_SLOT;
    if (st == SV_OK) {
        pthread_rwlock_rdlock(&c->lock);
        entry = sv_graph_pick_entry(&c->graph, n_slots);
        pthread_rwlock_unlock(&c->lock);
    }

    pthread_rwlock_wrlock(&c->lock);
    /* The free list is reserved here, not earlier: deletes of buffered
     * vectors during the repair push onto it too. */
    if (st == SV_OK && reserve_free_list(c, n_del) != SV_OK)
        st = SV_ERR_RESOURCE;
    if (st == SV_OK) {
        uint32_t old_entry = atomic_load(&c->graph.entry);
        if (old_entry == SV_NO_SLOT || sv_graph_state(&c->graph, old_entry) == SV_SLOT_DELETING)
            atomic_store(&c->graph.entry, entry);
        for (uint32_t i = 0; i < n_slots; i++) {
            if (sv_graph_state(&c->graph, i) != SV_SLOT_DELETING)
                continue;
            sv_edges_clear(c->edges, i);
            sv_graph_set_state(&c->graph, i, SV_SLOT_FREE);
            c->free_slots[c->n_free++] = i;
            c->n_tombstones--;
        }
    } else {
        /* Repairs so far are valid graphs; the tombstones stay for a retry. */
        for (uint32_t i = 0; i < n_slots; i++)
            if (sv_graph_state(&c->graph, i) == SV_SLOT_DELETING)
                sv_graph_set_state(&c->graph, i, SV_SLOT_DELETED);
    }
    sv_edges_reclaim(c->edges);
    pthread_rwlock_unlock(&c->lock);

    if (st == SV_OK && scratch) {
        uint32_t linked = 0;
        pthread_rwlock_rdlock(&c->lock);
        st = sv_graph_connect(&c->graph, n_slots, &scratch[0], &linked);
        pthread_rwlock_unlock(&c->lock);
        pthread_rwlock_wrlock(&c->lock);
        sv_edges_reclaim(c->edges);
        pthread_rwlock_unlock(&c->lock);
    }
    st = st == SV_OK ? sv_ok(err) : sv_fail(err, SV_ERR_RESOURCE, "out of memory consolidating");

cleanup:
    if (scratch) {
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_release(&scratch[t]);
        sv_mem_free(a, NULL, scratch, threads * sizeof *scratch);
    }
    pthread_mutex_unlock(&c->maint);
    return st;
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
    else if (st == SV_OK && sv_idmap_count(c->idmap) != c->n_live)
        st = sv_fail(err, SV_ERR_INTERNAL, "the id map holds %zu ids for %llu live vectors",
                  sv_idmap_count(c->idmap), (unsigned long long)c->n_live);
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
        if (s == SV_SLOT_FREE)
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
        sv_edges_view(c->edges, i, &count);
        degree_sum += count;
        cap_sum += sv_edges_capacity(c->edges, i);
        nodes++;
        if (count > out->max_degree)
            out->max_degree = count;
    }
    out->live = c->n_live;
    out->free_slots = c->n_free;
    out->avg_degree = nodes ? (double)degree_sum / (double)nodes : 0.0;
    out->avg_edge_slots = nodes ? (double)cap_sum / (double)nodes : 0.0;
    out->est_bytes_vectors = (uint64_t)sv_tally_get(&c->t_vectors);
    out->est_bytes_edges = (uint64_t)sv_tally_get(&c->t_edges);
    out->est_bytes_idmap = (uint64_t)sv_tally_get(&c->t_idmap);
    out->est_bytes_buffer = (uint64_t)sv_tally_get(&c->t_buffer);
    out->est_bytes_other = (uint64_t)sv_tally_get(&c->t_other);
    pthread_rwlock_unlock(&c->lock);
}
