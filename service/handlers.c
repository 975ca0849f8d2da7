/*
 * The slimvec.v1 methods and grpc.health.v1 Check: protobuf-c messages in,
 * core calls, protobuf-c messages out. Core statuses map to gRPC codes here
 * and nowhere else.
 */
#include "handlers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jemalloc/jemalloc.h>

#include "health/v1/health.pb-c.h"
#include "slimvec/v1/slimvec.pb-c.h"

/* ---- response memory ------------------------------------------------------ */

/* Everything a response points into, freed after it is packed. */
typedef struct owned {
    void **ptrs;
    size_t n, cap;
} owned;

static void owned_free(void *p)
{
    owned *o = p;
    if (!o)
        return;
    for (size_t i = 0; i < o->n; i++)
        free(o->ptrs[i]);
    free(o->ptrs);
    free(o);
}

/* Zeroed memory that lives until the reply is packed (NULL on OOM). */
static void *own(svd_reply *r, size_t size)
{
    owned *o = r->owned;
    if (!o) {
        o = calloc(1, sizeof *o);
        if (!o)
            return NULL;
        r->owned = o;
        r->free_fn = owned_free;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        void **t = realloc(o->ptrs, cap * sizeof *t);
        if (!t)
            return NULL;
        o->ptrs = t;
        o->cap = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (p)
        o->ptrs[o->n++] = p;
    return p;
}

static grpc_status_code code_of(sv_status s)
{
    switch (s) {
    case SV_OK: return GRPC_STATUS_OK;
    case SV_ERR_INVALID_ARGUMENT: return GRPC_STATUS_INVALID_ARGUMENT;
    case SV_ERR_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case SV_ERR_ALREADY_EXISTS: return GRPC_STATUS_ALREADY_EXISTS;
    case SV_ERR_RESOURCE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case SV_ERR_INTERNAL: return GRPC_STATUS_INTERNAL;
    /* The write was not made durable; the client may retry elsewhere/later. */
    case SV_ERR_IO: return GRPC_STATUS_UNAVAILABLE;
    case SV_ERR_CORRUPT: return GRPC_STATUS_DATA_LOSS;
    }
    return GRPC_STATUS_UNKNOWN;
}

static void reply_oom(svd_reply *r)
{
    svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory building the response");
}

/* The collection named, or an error reply (NOT_FOUND). Caller puts it. */
static svd_coll *lookup(svd_app *app, const char *name, svd_reply *r)
{
    svd_coll *c = svd_registry_get(app->registry, name ? name : "");
    if (!c)
        svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "collection \"%.64s\" not found", name ? name : "");
    return c;
}

/* ---- collection info ---------------------------------------------------- */

static Slimvec__V1__CollectionInfo *make_info(svd_coll *c, svd_reply *r)
{
    Slimvec__V1__CollectionInfo *info = own(r, sizeof *info);
    Slimvec__V1__CollectionSpec *spec = own(r, sizeof *spec);
    Slimvec__V1__GraphParams *graph = own(r, sizeof *graph);
    Slimvec__V1__MemoryStats *mem = own(r, sizeof *mem);
    if (!info || !spec || !graph || !mem)
        return NULL;
    slimvec__v1__collection_info__init(info);
    slimvec__v1__collection_spec__init(spec);
    slimvec__v1__graph_params__init(graph);
    slimvec__v1__memory_stats__init(mem);
    const sv_params *p = sv_collection_params(c->coll);
    spec->name = c->name;
    spec->dimension = p->dim;
    spec->metric = p->metric == SV_METRIC_L2   ? SLIMVEC__V1__METRIC__METRIC_L2
                   : p->metric == SV_METRIC_IP ? SLIMVEC__V1__METRIC__METRIC_IP
                                               : SLIMVEC__V1__METRIC__METRIC_COSINE;
    spec->storage = p->storage == SV_STORAGE_F32 ? SLIMVEC__V1__STORAGE__STORAGE_F32
                                                 : SLIMVEC__V1__STORAGE__STORAGE_INT8;
    graph->max_degree = p->R;
    graph->build_list = p->L_build;
    graph->alpha = p->alpha;
    spec->graph = graph;
    spec->seed = p->seed;
    spec->flush_threshold = p->flush_threshold;
    sv_stats s;
    sv_collection_stats(c->coll, &s);
    info->spec = spec;
    info->vectors = s.live;
    info->indexed = s.indexed;
    info->buffered = s.buffered;
    info->tombstones = s.tombstones;
    info->avg_degree = s.avg_degree;
    info->avg_edge_slots = s.avg_edge_slots;
    mem->allocated_bytes = sv_arena_allocated(c->arena);
    mem->bytes_per_vector = s.live ? (double)mem->allocated_bytes / (double)s.live : 0.0;
    mem->vectors_bytes_estimate = s.est_bytes_vectors;
    mem->edges_bytes_estimate = s.est_bytes_edges;
    mem->id_map_bytes_estimate = s.est_bytes_idmap;
    mem->buffer_bytes_estimate = s.est_bytes_buffer;
    mem->other_bytes_estimate = s.est_bytes_other;
    if (sv_durable_dir(c->dur)) {
        Slimvec__V1__Persistence *per = own(r, sizeof *per);
        if (!per)
            return NULL;
        slimvec__v1__persistence__init(per);
        sv_durable_stats ds;
        sv_durable_get_stats(c->dur, &ds);
        per->last_lsn = ds.last_lsn;
        per->log_bytes = ds.log_bytes;
        per->snapshot_lsn = ds.last_snapshot.lsn;
        per->snapshot_bytes = ds.last_snapshot.bytes;
        per->snapshot_seconds = ds.last_snapshot.seconds;
        info->persistence = per;
    }
    info->memory = mem;
    return info;
}

/*
 * Answer with a response whose one field is a CollectionInfo (Create,
 * Describe and Flush responses); the descriptor says where that field is.
 */
static void reply_with_info(svd_reply *r, svd_coll *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *resp = own(r, d->sizeof_message);
    Slimvec__V1__CollectionInfo *info = resp ? make_info(c, r) : NULL;
    if (!info) {
        reply_oom(r);
        return;
    }
    protobuf_c_message_init(d, resp);
    *(Slimvec__V1__CollectionInfo **)((char *)resp + d->fields[0].offset) = info;
    r->msg = resp;
}

/* ---- admin ---------------------------------------------------------------- */

static void h_create(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__CreateCollectionRequest *req = (const void *)m;
    const Slimvec__V1__CollectionSpec *spec = req->spec;
    if (!spec) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "spec is missing");
        return;
    }
    if (!svd_name_valid(spec->name)) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "collection name \"%.64s\" must be 1..64 bytes of [A-Za-z0-9_.-]", spec->name);
        return;
    }
    if (spec->dimension < 1 || spec->dimension > app->limits.max_dim) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "dimension %u is outside 1..%u",
                        spec->dimension, app->limits.max_dim);
        return;
    }
    sv_params p;
    sv_params_default(&p, spec->dimension);
    switch (spec->metric) {
    case SLIMVEC__V1__METRIC__METRIC_L2: p.metric = SV_METRIC_L2; break;
    case SLIMVEC__V1__METRIC__METRIC_IP: p.metric = SV_METRIC_IP; break;
    case SLIMVEC__V1__METRIC__METRIC_COSINE: p.metric = SV_METRIC_COSINE; break;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "metric must be L2, IP or COSINE");
        return;
    }
    switch (spec->storage) {
    case SLIMVEC__V1__STORAGE__STORAGE_F32: p.storage = SV_STORAGE_F32; break;
    case SLIMVEC__V1__STORAGE__STORAGE_INT8: p.storage = SV_STORAGE_INT8; break;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "storage must be F32 or INT8");
        return;
    }
    if (spec->graph) {
        if (spec->graph->max_degree)
            p.R = spec->graph->max_degree;
        if (spec->graph->build_list)
            p.L_build = spec->graph->build_list;
        else if (p.L_build < p.R)
            p.L_build = p.R;
        if (spec->graph->alpha != 0.0f)
            p.alpha = spec->graph->alpha;
    }
    if (spec->seed)
        p.seed = spec->seed;
    if (spec->flush_threshold)
        p.flush_threshold = spec->flush_threshold;
    p.threads = app->limits.build_threads;
    svd_coll *c = NULL;
    sv_error err;
    sv_status st = svd_registry_create_collection(app->registry, spec->name, &p, &c, &err);
    if (st != SV_OK) {
        svd_reply_error(r, code_of(st), "%s", err.message);
        return;
    }
    reply_with_info(r, c, &slimvec__v1__create_collection_response__descriptor);
    svd_registry_put(app->registry, c);
}

static void h_drop(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__DropCollectionRequest *req = (const void *)m;
    sv_error err;
    sv_status st = svd_registry_drop(app->registry, req->name ? req->name : "", &err);
    if (st != SV_OK) {
        svd_reply_error(r, code_of(st), "%s", err.message);
        return;
    }
    static Slimvec__V1__DropCollectionResponse resp = SLIMVEC__V1__DROP_COLLECTION_RESPONSE__INIT;
    r->msg = &resp.base;
}

static void h_list(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)m;
    svd_coll **all = NULL;
    size_t n = svd_registry_list(app->registry, &all);
    Slimvec__V1__ListCollectionsResponse *resp = own(r, sizeof *resp);
    Slimvec__V1__CollectionInfo **infos = own(r, n * sizeof *infos);
    int okay = resp && infos;
    for (size_t i = 0; i < n; i++) {
        if (okay && !(infos[i] = make_info(all[i], r)))
            okay = 0;
        svd_registry_put(app->registry, all[i]);
    }
    free(all);
    if (!okay) {
        reply_oom(r);
        return;
    }
    slimvec__v1__list_collections_response__init(resp);
    resp->n_collections = n;
    resp->collections = infos;
    r->msg = &resp->base;
}

static void h_describe(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__DescribeCollectionRequest *req = (const void *)m;
    svd_coll *c = lookup(app, req->name, r);
    if (!c)
        return;
    reply_with_info(r, c, &slimvec__v1__describe_collection_response__descriptor);
    svd_registry_put(app->registry, c);
}

static void h_flush(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__FlushRequest *req = (const void *)m;
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    sv_error err;
    sv_status st = sv_durable_flush(c->dur, &err);
    if (st != SV_OK)
        svd_reply_error(r, code_of(st), "%s", err.message);
    else
        reply_with_info(r, c, &slimvec__v1__flush_response__descriptor);
    svd_registry_put(app->registry, c);
}

static void h_snapshot(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__SnapshotRequest *req = (const void *)m;
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    if (!sv_durable_dir(c->dur)) {
        svd_reply_error(r, GRPC_STATUS_FAILED_PRECONDITION,
                        "the server runs without a data directory (--data-dir :memory:)");
        svd_registry_put(app->registry, c);
        return;
    }
    sv_error err;
    sv_snapshot_info info;
    sv_status st = sv_durable_snapshot(c->dur, &info, &err);
    Slimvec__V1__SnapshotResponse *resp = st == SV_OK ? own(r, sizeof *resp) : NULL;
    if (st != SV_OK) {
        svd_reply_error(r, code_of(st), "%s", err.message);
    } else if (!resp) {
        reply_oom(r);
    } else {
        slimvec__v1__snapshot_response__init(resp);
        resp->lsn = info.lsn;
        resp->bytes = info.bytes;
        resp->seconds = info.seconds;
        resp->stall_seconds = info.stall_seconds;
        r->msg = &resp->base;
    }
    svd_registry_put(app->registry, c);
}

/* ---- vectors -------------------------------------------------------------- */

/* Checks shared by batch calls: n vectors of the collection's dimension
 * (declared_dim, when not 0, must be that dimension). */
static int batch_shape(svd_app *app, svd_coll *c, size_t n_floats, size_t n_ids, uint32_t declared_dim,
                       size_t *n_out, svd_reply *r)
{
    uint32_t dim = sv_collection_params(c->coll)->dim;
    if (declared_dim && declared_dim != dim) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "dimension %u does not match the collection's %u", declared_dim, dim);
        return 0;
    }
    if (n_floats == 0 || n_floats % dim != 0) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "%zu floats are not a whole number of %u-dimensional vectors", n_floats, dim);
        return 0;
    }
    size_t n = n_floats / dim;
    if (n_ids != 0 && n_ids != n) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu ids for %zu vectors", n_ids, n);
        return 0;
    }
    if (n > app->limits.max_batch) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "batch of %zu vectors is over the limit of %u",
                        n, app->limits.max_batch);
        return 0;
    }
    *n_out = n;
    return 1;
}

/*
 * The memory cap: refuse a batch when what jemalloc holds for the process
 * plus a generous guess of the batch's cost (its float copy in the write
 * buffer, its codes and edges, its share of the flush's scratch) would pass
 * the cap. 0 when under it.
 */
static int over_memory_cap(svd_app *app, size_t n, uint32_t dim, svd_reply *r)
{
    if (!app->limits.memory_cap)
        return 0;
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    mallctl("epoch", &epoch, &len, &epoch, len);
    size_t allocated = 0;
    len = sizeof allocated;
    if (mallctl("stats.allocated", &allocated, &len, NULL, 0) != 0)
        return 0;
    uint64_t need = (uint64_t)n * ((uint64_t)dim * 6 + 256);
    if ((uint64_t)allocated + need <= app->limits.memory_cap)
        return 0;
    svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "memory cap: %zu bytes allocated + ~%llu for this batch is over the cap of %llu",
                    allocated, (unsigned long long)need, (unsigned long long)app->limits.memory_cap);
    return 1;
}

/*
 * Apply one ingest batch; fills resp (ids) or returns the error. The core
 * checks the whole batch before applying any of it, so an error means
 * nothing was applied.
 */
static void ingest_batch(svd_app *app, const Slimvec__V1__IngestRequest *req,
                         Slimvec__V1__IngestResponse *resp, svd_reply *r)
{
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    size_t n = 0;
    if (!batch_shape(app, c, req->n_vectors, req->n_ids, req->dimension, &n, r))
        goto done;
    for (size_t i = 0; i < req->n_ids; i++) {
        if (strlen(req->ids[i]) > app->limits.max_id_len) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "id of vector %zu is longer than %u bytes",
                            i, app->limits.max_id_len);
            goto done;
        }
    }
    uint32_t dim = sv_collection_params(c->coll)->dim;
    if (over_memory_cap(app, n, dim, r))
        goto done;
    uint64_t *assigned = own(r, n * sizeof *assigned);
    char **ids = own(r, n * sizeof *ids);
    if (!assigned || !ids) {
        reply_oom(r);
        goto done;
    }
    sv_error err;
    sv_status st = sv_durable_add(c->dur, req->vectors, n, dim,
                                     req->n_ids ? (const char *const *)req->ids : NULL, assigned, &err);
    if (st != SV_OK) {
        svd_reply_error(r, code_of(st), "%s", err.message);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (req->n_ids && req->ids[i][0]) {
            ids[i] = req->ids[i]; /* lives until the response is packed */
            continue;
        }
        ids[i] = own(r, 24);
        if (!ids[i]) {
            reply_oom(r);
            goto done;
        }
        snprintf(ids[i], 24, "%llu", (unsigned long long)assigned[i]);
    }
    resp->applied = (uint32_t)n;
    resp->n_ids = n;
    resp->ids = ids;
done:
    svd_registry_put(app->registry, c);
}

/*
 * In a stream a failed request is answered, not fatal: take what `inner`
 * allocated into r, and turn its error (if any) into a BatchError for the
 * response. NULL when inner succeeded; on out of memory r becomes an error.
 */
static Slimvec__V1__BatchError *batch_error(svd_reply *r, svd_reply *inner)
{
    r->owned = inner->owned;
    r->free_fn = inner->free_fn;
    if (inner->code == GRPC_STATUS_OK)
        return NULL;
    Slimvec__V1__BatchError *berr = own(r, sizeof *berr);
    char *message = own(r, sizeof inner->message);
    if (!berr || !message) {
        reply_oom(r);
        return NULL;
    }
    slimvec__v1__batch_error__init(berr);
    berr->code = (int32_t)inner->code;
    memcpy(message, inner->message, sizeof inner->message);
    berr->message = message;
    return berr;
}

static void s_ingest(void *appv, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    (void)state;
    const Slimvec__V1__IngestRequest *req = (const void *)m;
    Slimvec__V1__IngestResponse *resp = own(r, sizeof *resp);
    if (!resp) {
        reply_oom(r);
        return;
    }
    slimvec__v1__ingest_response__init(resp);
    resp->sequence = req->sequence;
    svd_reply inner = {.code = GRPC_STATUS_OK, .owned = r->owned, .free_fn = r->free_fn};
    ingest_batch(appv, req, resp, &inner);
    if ((resp->error = batch_error(r, &inner))) {
        resp->applied = 0;
        resp->n_ids = 0;
        resp->ids = NULL;
    }
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

/* Run the queries of one search request into resp. */
static void search_into(svd_app *app, const Slimvec__V1__SearchRequest *req,
                        Slimvec__V1__SearchResponse *resp, svd_reply *r)
{
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    size_t m = 0;
    uint32_t dim = sv_collection_params(c->coll)->dim;
    if (!batch_shape(app, c, req->n_queries, 0, req->dimension, &m, r))
        goto done;
    if (req->k < 1 || req->k > app->limits.max_k) {
        svd_reply_error(r, req->k < 1 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "k=%u is outside 1..%u", req->k, app->limits.max_k);
        goto done;
    }
    uint32_t L = req->search_list ? req->search_list : 64;
    Slimvec__V1__QueryResult **results = own(r, m * sizeof *results);
    sv_hit *hits = own(r, req->k * sizeof *hits);
    if (!results || !hits) {
        reply_oom(r);
        goto done;
    }
    for (size_t q = 0; q < m; q++) {
        size_t n = 0;
        sv_error err;
        sv_status st = sv_collection_search(c->coll, req->queries + q * dim, dim, req->k, L, hits, &n, &err);
        if (st != SV_OK) {
            svd_reply_error(r, code_of(st), "query %zu: %s", q, err.message);
            goto done;
        }
        Slimvec__V1__QueryResult *qr = own(r, sizeof *qr);
        Slimvec__V1__Hit **hv = own(r, n * sizeof *hv);
        if (!qr || (n && !hv)) {
            reply_oom(r);
            goto done;
        }
        slimvec__v1__query_result__init(qr);
        for (size_t h = 0; h < n; h++) {
            Slimvec__V1__Hit *hit = own(r, sizeof *hit);
            char *id = own(r, strlen(hits[h].id) + 1);
            if (!hit || !id) {
                reply_oom(r);
                goto done;
            }
            slimvec__v1__hit__init(hit);
            strcpy(id, hits[h].id);
            hit->id = id;
            hit->distance = hits[h].distance;
            if (req->include_vectors) {
                float *v = own(r, dim * sizeof *v);
                /* A vector deleted since the search has no values to return. */
                if (v && sv_collection_get(c->coll, id, v, dim, NULL) == SV_OK) {
                    hit->n_vector = dim;
                    hit->vector = v;
                }
            }
            hv[h] = hit;
        }
        qr->n_hits = n;
        qr->hits = hv;
        results[q] = qr;
    }
    resp->n_results = m;
    resp->results = results;
done:
    svd_registry_put(app->registry, c);
}

static void h_search(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    Slimvec__V1__SearchResponse *resp = own(r, sizeof *resp);
    if (!resp) {
        reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    search_into(appv, req, resp, r);
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void s_search(void *appv, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    (void)state;
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    Slimvec__V1__SearchResponse *resp = own(r, sizeof *resp);
    if (!resp) {
        reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    svd_reply inner = {.code = GRPC_STATUS_OK, .owned = r->owned, .free_fn = r->free_fn};
    search_into(appv, req, resp, &inner);
    if ((resp->error = batch_error(r, &inner))) {
        resp->n_results = 0;
        resp->results = NULL;
    }
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void h_get(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__GetRequest *req = (const void *)m;
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    uint32_t dim = sv_collection_params(c->coll)->dim;
    Slimvec__V1__GetResponse *resp = own(r, sizeof *resp);
    Slimvec__V1__Vector **vs = own(r, req->n_ids * sizeof *vs);
    if (!resp || (req->n_ids && !vs)) {
        reply_oom(r);
        goto done;
    }
    slimvec__v1__get_response__init(resp);
    for (size_t i = 0; i < req->n_ids; i++) {
        Slimvec__V1__Vector *v = own(r, sizeof *v);
        float *values = own(r, dim * sizeof *values);
        if (!v || !values) {
            reply_oom(r);
            goto done;
        }
        slimvec__v1__vector__init(v);
        sv_error err;
        sv_status st = sv_collection_get(c->coll, req->ids[i], values, dim, &err);
        if (st != SV_OK) {
            svd_reply_error(r, code_of(st), "item %zu: %s", i, err.message);
            goto done;
        }
        v->id = req->ids[i];
        v->n_values = dim;
        v->values = values;
        vs[i] = v;
    }
    resp->n_vectors = req->n_ids;
    resp->vectors = vs;
    r->msg = &resp->base;
done:
    svd_registry_put(app->registry, c);
}

static void h_delete(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__DeleteRequest *req = (const void *)m;
    svd_coll *c = lookup(app, req->collection, r);
    if (!c)
        return;
    sv_error err;
    sv_status st = sv_durable_delete(c->dur, (const char *const *)req->ids, req->n_ids, &err);
    if (st != SV_OK) {
        svd_reply_error(r, code_of(st), "%s", err.message);
    } else {
        Slimvec__V1__DeleteResponse *resp = own(r, sizeof *resp);
        if (!resp) {
            reply_oom(r);
        } else {
            slimvec__v1__delete_response__init(resp);
            resp->deleted = (uint32_t)req->n_ids;
            r->msg = &resp->base;
        }
    }
    svd_registry_put(app->registry, c);
}

/* ---- health --------------------------------------------------------------- */

static void h_health_check(void *appv, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
    const char *svc = req->service ? req->service : "";
    if (strcmp(svc, "") != 0 && strcmp(svc, "slimvec.v1.SlimVec") != 0) {
        svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "unknown service \"%.128s\"", svc);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse *resp = own(r, sizeof *resp);
    if (!resp) {
        reply_oom(r);
        return;
    }
    grpc__health__v1__health_check_response__init(resp);
    resp->status = atomic_load(&app->serving)
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    r->msg = &resp->base;
}

/* Watch: the status now, for the first message and for each update (req
 * NULL, sent at shutdown). An unknown service is reported as
 * SERVICE_UNKNOWN in the stream, as the health protocol asks. */
static void s_health_watch(void *appv, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
    if (req) {
        const char *svc = req->service ? req->service : "";
        *state = (void *)(uintptr_t)(strcmp(svc, "") == 0 || strcmp(svc, "slimvec.v1.SlimVec") == 0);
    }
    Grpc__Health__V1__HealthCheckResponse *resp = own(r, sizeof *resp);
    if (!resp) {
        reply_oom(r);
        return;
    }
    grpc__health__v1__health_check_response__init(resp);
    if (!*state)
        resp->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    else
        resp->status = atomic_load(&app->serving)
                           ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                           : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    r->msg = &resp->base;
}

static const svd_method methods[] = {
    {"/slimvec.v1.SlimVec/CreateCollection", &slimvec__v1__create_collection_request__descriptor, h_create, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/DropCollection", &slimvec__v1__drop_collection_request__descriptor, h_drop, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/ListCollections", &slimvec__v1__list_collections_request__descriptor, h_list, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/DescribeCollection", &slimvec__v1__describe_collection_request__descriptor, h_describe, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/Ingest", &slimvec__v1__ingest_request__descriptor, NULL, s_ingest, NULL, 0},
    {"/slimvec.v1.SlimVec/Search", &slimvec__v1__search_request__descriptor, h_search, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/SearchStream", &slimvec__v1__search_request__descriptor, NULL, s_search, NULL, 0},
    {"/slimvec.v1.SlimVec/Get", &slimvec__v1__get_request__descriptor, h_get, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/Delete", &slimvec__v1__delete_request__descriptor, h_delete, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/Flush", &slimvec__v1__flush_request__descriptor, h_flush, NULL, NULL, 0},
    {"/slimvec.v1.SlimVec/Snapshot", &slimvec__v1__snapshot_request__descriptor, h_snapshot, NULL, NULL, 0},
    {"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor, h_health_check, NULL, NULL, 0},
    {"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor, NULL, s_health_watch, NULL, 1},
};

const svd_method *svd_methods(size_t *n)
{
    *n = sizeof methods / sizeof methods[0];
    return methods;
}
