/*
 * The slimvec.v1 methods and grpc.health.v1: protobuf-c messages in, calls
 * on the collection's one handle (sv_durable), protobuf-c messages out.
 * Core statuses map to gRPC codes here and nowhere else.
 *
 * Every handler that allocates in proportion to what the client asked for
 * first bounds the answer: its largest packed size against --max-message,
 * its memory against the server's in-flight budget (svd_ctx_reserve) and
 * the memory cap. Only then does it build anything. Long work (searches)
 * stops when the call's context says so.
 */
#include "handlers.h"
#include "handlers_impl.h"
#include "payload_pb.h"
#include "pcodec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/v1/health.pb-c.h"
#include "slimvec/v1/slimvec.pb-c.h"
#include "text.h"
#include "tokens.h"

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
void *svd_own(svd_reply *r, size_t size)
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

/* n items of `size` bytes, or NULL (also when n * size overflows). */
void *svd_own_array(svd_reply *r, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return svd_own(r, n * size);
}

grpc_status_code svd_code_of(sv_status s)
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
    case SV_ERR_INTERRUPTED: return GRPC_STATUS_CANCELLED;
    case SV_ERR_BUSY: return GRPC_STATUS_UNAVAILABLE;
    case SV_ERR_CONFLICT: return GRPC_STATUS_ABORTED; /* never reaches here: the durable layer retries */
    }
    return GRPC_STATUS_UNKNOWN;
}

void svd_reply_oom(svd_reply *r)
{
    svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory building the response");
}

static int ctx_stop(void *ctx)
{
    return svd_ctx_stopped(ctx);
}

/* 0 and an INVALID_ARGUMENT reply when a text field has a NUL or is not
 * UTF-8 ("id 3 contains a NUL byte at offset 1"). index SIZE_MAX: no index. */
int svd_field_ok(const char *field, const char *what, size_t index, svd_reply *r)
{
    char why[96];
    if (svd_text_check(field, why, sizeof why) == 0)
        return 1;
    if (index == SIZE_MAX)
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%s %s", what, why);
    else
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%s %zu %s", what, index, why);
    return 0;
}

/* 1 when the caller may act with role on the collection named; else 0
 * and PERMISSION_DENIED. Checked before the collection is looked up, so a
 * denial says nothing of whether it exists. */
int svd_allowed(svd_ctx *ctx, svd_role role, const char *name, svd_reply *r)
{
    if (!ctx->principal)
        return 1;
    /* No name is longer; and fnmatch's cost grows with the name's length
     * for globs with several stars. */
    if (strlen(name) > SVD_NAME_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "a collection name is at most %d bytes",
                        SVD_NAME_MAX);
        return 0;
    }
    if (svd_principal_allows(ctx->principal, role, name))
        return 1;
    svd_reply_error(r, GRPC_STATUS_PERMISSION_DENIED, "the token has no %s role on collection \"%.64s\"",
                    svd_role_name(role), name);
    svd_ctx_denied(ctx);
    return 0;
}

/* The collection named, if the caller may act with role on it, or an error
 * reply (INVALID_ARGUMENT for a name that is not text, PERMISSION_DENIED,
 * NOT_FOUND). Caller puts it. */
svd_coll *svd_lookup(svd_app *app, svd_ctx *ctx, svd_role role, const char *name, svd_reply *r)
{
    if (!svd_field_ok(name, "the collection name", SIZE_MAX, r) || !svd_allowed(ctx, role, name, r))
        return NULL;
    svd_coll *c = svd_registry_get(app->registry, name);
    if (!c)
        svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "collection \"%.64s\" not found", name);
    return c;
}

/* 0 and an error reply unless `need` more bytes fit under the memory cap
 * (transient: memory freed once the answer is sent, see memory.h). */
int svd_memory_ok(svd_app *app, uint64_t need, int transient, svd_reply *r)
{
    char why[320];
    if (svd_memory_admit(app->memory, need, transient, why, sizeof why))
        return 1;
    svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", why);
    return 0;
}

/* Bound a response before building it: its packed size against the
 * message limit, its memory (build + packed) against the budget and cap. */
int svd_response_ok(svd_app *app, svd_ctx *ctx, uint64_t packed, uint64_t build,
                       const char *what, svd_reply *r)
{
    if (packed > svd_ctx_max_message(ctx)) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "the response could be up to %llu bytes (%s), over the server's "
                        "--max-message of %zu; ask for less",
                        (unsigned long long)packed, what, svd_ctx_max_message(ctx));
        return 0;
    }
    uint64_t need = packed + build;
    return svd_memory_ok(app, need, 1, r) && svd_ctx_reserve(ctx, (size_t)need, r);
}

/* ---- collection info ---------------------------------------------------- */

/* Upper bound of one CollectionInfo, packed and built. */
#define INFO_PACKED 512u
#define INFO_BUILD 1024u

int svd_fill_spec(Slimvec__V1__CollectionSpec *spec, Slimvec__V1__GraphParams *graph, const char *name,
                  const sv_params *p, svd_reply *r)
{
    slimvec__v1__collection_spec__init(spec);
    slimvec__v1__graph_params__init(graph);
    size_t len = strlen(name) + 1;
    char *copy = svd_own(r, len);
    if (!copy)
        return 0;
    memcpy(copy, name, len);
    spec->name = copy;
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
    spec->originals = p->originals == SV_ORIGINALS_DISK ? SLIMVEC__V1__ORIGINALS__ORIGINALS_DISK
                                                        : SLIMVEC__V1__ORIGINALS__ORIGINALS_NONE;
    return 1;
}

static Slimvec__V1__CollectionInfo *make_info(svd_coll *c, svd_reply *r)
{
    Slimvec__V1__CollectionInfo *info = svd_own(r, sizeof *info);
    Slimvec__V1__CollectionSpec *spec = svd_own(r, sizeof *spec);
    Slimvec__V1__GraphParams *graph = svd_own(r, sizeof *graph);
    Slimvec__V1__MemoryStats *mem = svd_own(r, sizeof *mem);
    if (!info || !spec || !graph || !mem)
        return NULL;
    slimvec__v1__collection_info__init(info);
    slimvec__v1__memory_stats__init(mem);
    /* A copy of the name: the answer is packed after the reference to c is
     * put, and a drop meanwhile frees c. */
    if (!svd_fill_spec(spec, graph, c->name, sv_durable_params(c->dur), r))
        return NULL;
    sv_stats s;
    sv_durable_collection_stats(c->dur, &s);
    info->spec = spec;
    info->vectors = s.live;
    info->indexed = s.indexed;
    info->buffered = s.buffered;
    info->tombstones = s.tombstones;
    info->avg_degree = s.avg_degree;
    info->avg_edge_slots = s.avg_edge_slots;
    info->avg_edge_bytes = s.avg_edge_bytes;
    /* Copies, as the name's. */
    uint32_t nk = sv_durable_indexed_keys(c->dur, NULL, 0);
    const char **names = nk ? svd_own_array(r, nk, sizeof *names) : NULL;
    char **copies = nk ? svd_own_array(r, nk, sizeof *copies) : NULL;
    if (nk && (!names || !copies))
        return NULL;
    /* A key indexed meanwhile waits for the next Describe (keys are never
     * dropped: the first nk are still there). */
    uint32_t now = sv_durable_indexed_keys(c->dur, names, nk);
    nk = now < nk ? now : nk;
    for (uint32_t i = 0; i < nk; i++) {
        size_t len = strlen(names[i]) + 1;
        if (!(copies[i] = svd_own(r, len)))
            return NULL;
        memcpy(copies[i], names[i], len);
    }
    info->n_indexed_keys = nk;
    info->indexed_keys = copies;
    sv_calibration cal;
    if (sv_durable_calibration(c->dur, &cal)) {
        Slimvec__V1__Calibration *cm = svd_own(r, sizeof *cm);
        Slimvec__V1__CalibrationPoint *pv = svd_own_array(r, cal.n_points, sizeof *pv);
        Slimvec__V1__CalibrationPoint **pp = svd_own_array(r, cal.n_points, sizeof *pp);
        if (!cm || !pv || !pp)
            return NULL;
        slimvec__v1__calibration__init(cm);
        cm->queries = cal.queries;
        cm->vectors = cal.live;
        cm->exact = cal.exact;
        cm->seconds = cal.seconds;
        for (uint32_t i = 0; i < cal.n_points; i++) {
            slimvec__v1__calibration_point__init(&pv[i]);
            pv[i].search_list = cal.points[i].search_list;
            pv[i].recall_at_10 = cal.points[i].recall;
            pp[i] = &pv[i];
        }
        cm->n_points = cal.n_points;
        cm->points = pp;
        info->calibration = cm;
    }
    mem->allocated_bytes = sv_arena_allocated(c->arena);
    mem->bytes_per_vector = s.live ? (double)mem->allocated_bytes / (double)s.live : 0.0;
    mem->vectors_bytes_estimate = s.est_bytes_vectors;
    mem->edges_bytes_estimate = s.est_bytes_edges;
    mem->id_map_bytes_estimate = s.est_bytes_idmap;
    mem->buffer_bytes_estimate = s.est_bytes_buffer;
    mem->other_bytes_estimate = s.est_bytes_other;
    mem->payload_bytes_estimate = s.est_bytes_payload;
    if (sv_durable_params(c->dur)->originals == SV_ORIGINALS_DISK) {
        Slimvec__V1__OriginalsStats *os = svd_own(r, sizeof *os);
        if (!os)
            return NULL;
        slimvec__v1__originals_stats__init(os);
        os->disk_bytes = s.orig_disk_bytes;
        os->disk_bytes_per_vector = s.live ? (double)s.orig_disk_bytes / (double)s.live : 0.0;
        os->file_bytes = s.orig_file_bytes;
        os->resident_bytes = s.orig_resident_bytes;
        info->originals = os;
    }
    if (sv_durable_dir(c->dur)) {
        Slimvec__V1__Persistence *per = svd_own(r, sizeof *per);
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
    ProtobufCMessage *resp = svd_own(r, d->sizeof_message);
    Slimvec__V1__CollectionInfo *info = resp ? make_info(c, r) : NULL;
    if (!info) {
        svd_reply_oom(r);
        return;
    }
    protobuf_c_message_init(d, resp);
    *(Slimvec__V1__CollectionInfo **)((char *)resp + d->fields[0].offset) = info;
    r->msg = resp;
}

/* ---- admin ---------------------------------------------------------------- */

/* The parameters a spec asks for, checked against the server's limits; 0
 * and an INVALID_ARGUMENT reply when they are not acceptable. */
int svd_spec_params(svd_app *app, const Slimvec__V1__CollectionSpec *spec, sv_params *p, svd_reply *r)
{
    if (!svd_name_valid(spec->name)) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "collection name \"%.64s\" must be 1..64 bytes of [A-Za-z0-9_.-]", spec->name);
        return 0;
    }
    if (spec->dimension < 1 || spec->dimension > app->limits.max_dim) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "dimension %u is outside 1..%u",
                        spec->dimension, app->limits.max_dim);
        return 0;
    }
    sv_params_default(p, spec->dimension);
    switch (spec->metric) {
    case SLIMVEC__V1__METRIC__METRIC_L2: p->metric = SV_METRIC_L2; break;
    case SLIMVEC__V1__METRIC__METRIC_IP: p->metric = SV_METRIC_IP; break;
    case SLIMVEC__V1__METRIC__METRIC_COSINE: p->metric = SV_METRIC_COSINE; break;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "metric must be L2, IP or COSINE");
        return 0;
    }
    switch (spec->storage) {
    case SLIMVEC__V1__STORAGE__STORAGE_F32: p->storage = SV_STORAGE_F32; break;
    case SLIMVEC__V1__STORAGE__STORAGE_INT8: p->storage = SV_STORAGE_INT8; break;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "storage must be F32 or INT8");
        return 0;
    }
    switch (spec->originals) {
    case SLIMVEC__V1__ORIGINALS__ORIGINALS_UNSPECIFIED:
    case SLIMVEC__V1__ORIGINALS__ORIGINALS_NONE: p->originals = SV_ORIGINALS_NONE; break;
    case SLIMVEC__V1__ORIGINALS__ORIGINALS_DISK: p->originals = SV_ORIGINALS_DISK; break;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "originals must be NONE or DISK");
        return 0;
    }
    if (p->originals == SV_ORIGINALS_DISK && p->storage != SV_STORAGE_INT8) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "originals on disk need int8 storage (float32 storage is exact already)");
        return 0;
    }
    if (spec->graph) {
        if (spec->graph->max_degree)
            p->R = spec->graph->max_degree;
        if (spec->graph->build_list)
            p->L_build = spec->graph->build_list;
        else if (p->L_build < p->R)
            p->L_build = p->R;
        if (spec->graph->alpha != 0.0f)
            p->alpha = spec->graph->alpha;
    }
    if (p->L_build > app->limits.max_search_list && p->L_build > p->R) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "build_list %u is over the server's --max-search-list %u",
                        p->L_build, app->limits.max_search_list);
        return 0;
    }
    if (spec->seed)
        p->seed = spec->seed;
    if (spec->flush_threshold)
        p->flush_threshold = spec->flush_threshold;
    if (p->flush_threshold > app->limits.max_flush_threshold) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                        "flush_threshold %u is over the server's --max-flush-threshold %u (buffered "
                        "vectors are searched by brute force)",
                        p->flush_threshold, app->limits.max_flush_threshold);
        return 0;
    }
    return 1;
}

static void h_create(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    (void)state;
    const Slimvec__V1__CreateCollectionRequest *req = (const void *)m;
    const Slimvec__V1__CollectionSpec *spec = req->spec;
    if (!spec) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "spec is missing");
        return;
    }
    if (!svd_field_ok(spec->name, "the collection name", SIZE_MAX, r) ||
        !svd_allowed(ctx, SVD_ROLE_ADMIN, spec->name, r))
        return;
    sv_params p;
    if (!svd_spec_params(app, spec, &p, r) || !svd_index_keys_ok(spec->indexed_keys, spec->n_indexed_keys, r))
        return;
    p.threads = app->limits.build_threads;
    /* A new collection costs a few kilobytes of bookkeeping. */
    if (!svd_memory_ok(app, 64 * 1024, 0, r))
        return;
    svd_coll *c = NULL;
    sv_error err;
    sv_status st = svd_registry_create_collection(app->registry, spec->name, &p, &c, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        return;
    }
    /* Keys checked above: only a full disk or memory can stop these; the
     * collection stays (as created) and the answer says which key. */
    for (size_t i = 0; i < spec->n_indexed_keys; i++) {
        if ((st = sv_durable_index_key(c->dur, spec->indexed_keys[i], &err)) != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "created, but indexing \"%s\" failed: %s", spec->indexed_keys[i],
                            err.message);
            svd_registry_put(app->registry, c);
            return;
        }
    }
    reply_with_info(r, c, &slimvec__v1__create_collection_response__descriptor);
    svd_registry_put(app->registry, c);
}

static void h_drop(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    (void)state;
    const Slimvec__V1__DropCollectionRequest *req = (const void *)m;
    if (!svd_field_ok(req->name, "the collection name", SIZE_MAX, r) ||
        !svd_allowed(ctx, SVD_ROLE_ADMIN, req->name, r))
        return;
    sv_error err;
    sv_status st = svd_registry_drop(app->registry, req->name, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        return;
    }
    static Slimvec__V1__DropCollectionResponse resp = SLIMVEC__V1__DROP_COLLECTION_RESPONSE__INIT;
    r->msg = &resp.base;
}

static void h_list(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)m;
    (void)state;
    svd_coll **all = NULL;
    size_t total = svd_registry_list(app->registry, &all), n = 0;
    /* A scoped token lists only the collections it may read. */
    for (size_t i = 0; i < total; i++) {
        if (!ctx->principal || svd_principal_allows(ctx->principal, SVD_ROLE_READ, all[i]->name))
            all[n++] = all[i];
        else
            svd_registry_put(app->registry, all[i]);
    }
    if (!svd_response_ok(app, ctx, (uint64_t)n * INFO_PACKED + 16, (uint64_t)n * INFO_BUILD,
                     "one entry per collection", r)) {
        svd_registry_put_list(app->registry, all, n);
        return;
    }
    Slimvec__V1__ListCollectionsResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__CollectionInfo **infos = svd_own_array(r, n, sizeof *infos);
    int okay = resp && (infos || n == 0);
    for (size_t i = 0; i < n && okay; i++)
        if (!(infos[i] = make_info(all[i], r)))
            okay = 0;
    svd_registry_put_list(app->registry, all, n);
    if (!okay) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__list_collections_response__init(resp);
    resp->n_collections = n;
    resp->collections = infos;
    r->msg = &resp->base;
}

static void h_describe(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    (void)state;
    const Slimvec__V1__DescribeCollectionRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_READ, req->name, r);
    if (!c)
        return;
    reply_with_info(r, c, &slimvec__v1__describe_collection_response__descriptor);
    svd_registry_put(app->registry, c);
}

/*
 * Flush and Snapshot run on the maintenance thread: the call submits a task
 * and defers (holding no thread) until it ran. *state is the task.
 */
static svd_task *await_task(svd_app *app, svd_ctx *ctx, void **state, const char *name,
                            svd_task_kind kind, sv_status *st, sv_error *err, sv_snapshot_info *info,
                            svd_reply *r)
{
    if (!*state) {
        svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, name, r);
        if (!c)
            return NULL;
        if (kind == SVD_TASK_SNAPSHOT && !sv_durable_dir(c->dur)) {
            svd_reply_error(r, GRPC_STATUS_FAILED_PRECONDITION,
                            "the server runs without a data directory (--data-dir :memory:)");
            svd_registry_put(app->registry, c);
            return NULL;
        }
        svd_task *t = app->maint ? svd_maint_submit(app->maint, c, kind) : NULL;
        svd_registry_put(app->registry, c);
        if (!t) {
            svd_reply_error(r, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
            return NULL;
        }
        *state = t;
    }
    svd_task *t = *state;
    if (!svd_task_done(t, st, err, info)) {
        r->defer = 1;
        return NULL;
    }
    return t;
}

static void end_task(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    svd_task_release(state);
}

static void h_flush(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    const Slimvec__V1__FlushRequest *req = (const void *)m;
    sv_status st;
    sv_error err;
    if (!await_task(app, ctx, state, req->collection, SVD_TASK_FLUSH, &st, &err, NULL, r))
        return;
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        return;
    }
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, r);
    if (!c)
        return;
    reply_with_info(r, c, &slimvec__v1__flush_response__descriptor);
    svd_registry_put(app->registry, c);
}

static void h_snapshot(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    const Slimvec__V1__SnapshotRequest *req = (const void *)m;
    sv_status st;
    sv_error err;
    sv_snapshot_info info;
    if (!await_task(app, ctx, state, req->collection, SVD_TASK_SNAPSHOT, &st, &err, &info, r))
        return;
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        return;
    }
    Slimvec__V1__SnapshotResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__snapshot_response__init(resp);
    resp->lsn = info.lsn;
    resp->bytes = info.bytes;
    resp->seconds = info.seconds;
    resp->stall_seconds = info.stall_seconds;
    r->msg = &resp->base;
}

/* ---- vectors -------------------------------------------------------------- */

/* Checks shared by batch calls: n vectors of the collection's dimension
 * (declared_dim, when not 0, must be that dimension). */
int svd_batch_shape(svd_app *app, svd_coll *c, size_t n_floats, size_t n_ids, uint32_t declared_dim,
                       size_t *n_out, svd_reply *r)
{
    return svd_batch_shape_dim(app, sv_durable_params(c->dur)->dim, n_floats, n_ids, declared_dim, n_out, r);
}

int svd_batch_shape_dim(svd_app *app, uint32_t dim, size_t n_floats, size_t n_ids, uint32_t declared_dim,
                        size_t *n_out, svd_reply *r)
{
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

/* Every id is text, at most max_id_len bytes (what = "id of vector"). */
int svd_ids_ok(svd_app *app, char **ids, size_t n, const char *what, svd_reply *r)
{
    for (size_t i = 0; i < n; i++) {
        if (!svd_field_ok(ids[i], what, i, r))
            return 0;
        if (strlen(ids[i]) > app->limits.max_id_len) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%s %zu is longer than %u bytes", what, i,
                            app->limits.max_id_len);
            return 0;
        }
    }
    return 1;
}

/*
 * Apply one ingest batch; fills resp (ids) or returns the error. The core
 * checks the whole batch before applying any of it, so an error means
 * nothing was applied. A full write buffer defers the batch (it runs again
 * after the next flush): the stream reads nothing meanwhile, so HTTP/2 flow
 * control pushes back on the client.
 */
static void ingest_batch(svd_app *app, svd_ctx *ctx, const Slimvec__V1__IngestRequest *req,
                         Slimvec__V1__IngestResponse *resp, svd_reply *r)
{
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, r);
    if (!c)
        return;
    size_t n = 0;
    if (!svd_batch_shape(app, c, req->n_vectors, req->n_ids, req->dimension, &n, r) ||
        !svd_ids_ok(app, req->ids, req->n_ids, "id of vector", r))
        goto done;
    uint32_t dim = sv_durable_params(c->dur)->dim;
    /* The batch's cost: its float copy in the write buffer, codes and
     * edges, its share of the flush's scratch; plus the answer's ids. */
    if (!svd_memory_ok(app, (uint64_t)n * ((uint64_t)dim * 6 + 256), 0, r))
        goto done;
    uint64_t *assigned = svd_own_array(r, n, sizeof *assigned);
    char **ids = svd_own_array(r, n, sizeof *ids);
    char *numbers = svd_own_array(r, n, 24);
    if (!assigned || !ids || !numbers) {
        svd_reply_oom(r);
        goto done;
    }
    sv_payload *payloads = NULL;
    if (req->n_payloads && req->n_payloads != n) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu payloads for %zu vectors (give none or one each)",
                        req->n_payloads, n);
        goto done;
    }
    if (req->n_payloads && svd_payloads_from_pb(req->payloads, n, &payloads, r) != 0)
        goto done;
    sv_error err;
    const char *const *given = req->n_ids ? (const char *const *)req->ids : NULL;
    sv_status st = req->upsert ? sv_durable_upsert(c->dur, req->vectors, n, dim, given, payloads, assigned, NULL, &err)
                               : sv_durable_add_payloads(c->dur, req->vectors, n, dim, given, payloads, assigned, &err);
    if (st == SV_ERR_BUSY) {
        svd_maint_kick(app->maint);
        r->defer = 1;
        goto done;
    }
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        goto done;
    }
    if (sv_durable_flush_due(c->dur))
        svd_maint_kick(app->maint);
    for (size_t i = 0; i < n; i++) {
        if (req->n_ids && req->ids[i][0]) {
            ids[i] = req->ids[i]; /* lives until the response is packed */
            continue;
        }
        ids[i] = numbers + 24 * i;
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
Slimvec__V1__BatchError *svd_batch_error(svd_reply *r, svd_reply *inner)
{
    r->owned = inner->owned;
    r->free_fn = inner->free_fn;
    if (inner->code == GRPC_STATUS_OK)
        return NULL;
    Slimvec__V1__BatchError *berr = svd_own(r, sizeof *berr);
    char *message = svd_own(r, sizeof inner->message);
    if (!berr || !message) {
        svd_reply_oom(r);
        return NULL;
    }
    slimvec__v1__batch_error__init(berr);
    berr->code = (int32_t)inner->code;
    memcpy(message, inner->message, sizeof inner->message);
    berr->message = message;
    return berr;
}

int svd_stream_step_done(svd_reply *r, svd_reply *inner, Slimvec__V1__BatchError **berr)
{
    if (inner->defer) {
        r->owned = inner->owned;
        r->free_fn = inner->free_fn;
        r->defer = 1;
        return 1;
    }
    *berr = svd_batch_error(r, inner);
    return 0;
}

static void s_ingest(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    (void)ctx;
    (void)state;
    const Slimvec__V1__IngestRequest *req = (const void *)m;
    Slimvec__V1__IngestResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__ingest_response__init(resp);
    resp->sequence = req->sequence;
    svd_reply inner = SVD_INNER(r);
    ingest_batch(appv, ctx, req, resp, &inner);
    if (svd_stream_step_done(r, &inner, &resp->error))
        return;
    if (resp->error) {
        resp->applied = 0;
        resp->n_ids = 0;
        resp->ids = NULL;
    }
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

/* Upper bound of a packed varint-length-delimited field of `len` bytes. */
static uint64_t field_bytes(uint64_t len)
{
    return 1 + 10 + len;
}

/* A bound of a payload's packed protobuf size: per field its map entry's
 * tag and length, the key, the value's wrapper; an int64 up to 10 bytes as
 * a varint, a string its length and up to 3 bytes of length. */
static uint64_t payload_pb_bound(const sv_payload *pl)
{
    uint64_t b = 0;
    for (uint32_t i = 0; i < pl->n; i++) {
        const sv_pv_field *f = &pl->fields[i];
        b += 16 + strlen(f->key);
        switch (f->type) {
        case SV_PV_STRING: b += 4 + strlen(f->s); break;
        case SV_PV_INT: b += 11; break;
        case SV_PV_DOUBLE: b += 9; break;
        case SV_PV_BOOL: b += 2; break;
        case SV_PV_STRINGS:
            b += 8;
            for (uint32_t j = 0; j < f->n; j++)
                b += 4 + strlen(f->ss[j]);
            break;
        default: b += 8 + 10ull * f->n; break;
        }
    }
    return field_bytes(b);
}

/*
 * The payload of id as a message owned by r (*out NULL when the vector has
 * none or is gone), *bytes increased by a bound of its packed size, which
 * must stay within limit (else RESOURCE_EXHAUSTED, checked before the copy
 * is made). -1 when replied (over the limit, out of memory).
 */
static int payload_of(svd_coll *c, const char *id, Slimvec__V1__Payload **out, uint64_t *bytes, uint64_t limit,
                      svd_reply *r)
{
    *out = NULL;
    sv_payload pl;
    size_t need = 0;
    _Alignas(16) unsigned char probe[8];
    sv_status st = sv_durable_get_payload(c->dur, id, probe, 0, &pl, &need, NULL);
    if (st == SV_ERR_NOT_FOUND || need == 0)
        return 0; /* gone since the search, or none */
    /* A copy is at least as large as the message it becomes, give or take
     * its varints: refuse before making one that cannot fit. */
    if (*bytes + need / 2 > limit)
        goto over;
    void *buf = svd_own(r, need);
    if (!buf) {
        svd_reply_oom(r);
        return -1;
    }
    if (sv_durable_get_payload(c->dur, id, buf, need, &pl, &need, NULL) != SV_OK || !pl.n)
        return 0; /* changed in between: leave it out */
    *bytes += payload_pb_bound(&pl);
    if (*bytes > limit)
        goto over;
    if (!(*out = svd_payload_to_pb(&pl, r)))
        return -1;
    return 0;
over:
    svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "the answer with its payloads would take over the message limit %llu bytes: ask for fewer "
                    "vectors or without payloads", (unsigned long long)limit);
    return -1;
}

/* Run the queries of one search request into resp. */
void svd_search_into(svd_app *app, svd_ctx *ctx, const Slimvec__V1__SearchRequest *req,
                        Slimvec__V1__SearchResponse *resp, svd_reply *r)
{
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_READ, req->collection, r);
    if (!c)
        return;
    size_t m = 0;
    uint32_t dim = sv_durable_params(c->dur)->dim;
    if (!svd_batch_shape(app, c, req->n_queries, 0, req->dimension, &m, r))
        goto done;
    uint32_t k = req->k;
    if (k < 1 || k > app->limits.max_k) {
        svd_reply_error(r, k < 1 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "k=%u is outside 1..%u", k, app->limits.max_k);
        goto done;
    }
    /* A recall instead of a list: the collection's calibration decides. */
    float target = req->target_recall != 0.0f ? req->target_recall
                   : req->search_list ? 0.0f : app->limits.default_target_recall;
    if (target != 0.0f && !(target > 0.0f && target <= 1.0f)) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "target_recall %g is outside (0, 1]", (double)target);
        goto done;
    }
    uint32_t L = req->search_list ? req->search_list : 64;
    uint64_t buffered = sv_durable_buffered(c->dur) / SVD_BUFFER_WORK_DIVISOR;
    sv_calibration cal;
    if (target != 0.0f && sv_durable_calibration(c->dur, &cal)) {
        L = sv_calibration_list_for(&cal, target, k);
        if (L > app->limits.max_search_list) /* the client named no list: stay in bounds */
            L = app->limits.max_search_list;
        /* The server's default target (the client asked for nothing) must not
         * turn a request that fits --max-search-work into a refusal: less
         * recall than the default's, rather than an error. */
        if (req->target_recall == 0.0f && m) {
            uint64_t room = app->limits.max_search_work / m;
            room = room > buffered ? room - buffered : 0;
            if (L > room)
                L = room > k ? (uint32_t)room : (k > 64 ? k : 64);
        }
    }
    if (L > app->limits.max_search_list) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "search_list %u is over the server's --max-search-list %u", L,
                        app->limits.max_search_list);
        goto done;
    }
    /* The answer's bounds, before anything is built: per hit its id (the
     * longest the collection held), distance and vector. */
    uint64_t idmax = sv_durable_id_len_max(c->dur);
    uint64_t vec = req->include_vectors ? field_bytes(4ull * dim) : 0;
    uint64_t hit_packed = field_bytes(field_bytes(idmax) + 5 + vec);
    uint64_t packed = 16 + (uint64_t)m * field_bytes((uint64_t)k * hit_packed);
    uint64_t hit_build = sizeof(Slimvec__V1__Hit) + sizeof(void *) + idmax + 1 +
                         (req->include_vectors ? 4ull * dim : 0);
    uint64_t build = (uint64_t)m * (sizeof(Slimvec__V1__QueryResult) + sizeof(void *) + 64 +
                                    (uint64_t)k * (hit_build + sizeof(sv_hit)));
    char what[160];
    snprintf(what, sizeof what, "%zu queries x %u hits of up to %llu bytes", m, k,
             (unsigned long long)hit_packed);
    if (packed > svd_ctx_max_message(ctx)) {
        svd_response_ok(app, ctx, packed, build, what, r); /* says so */
        goto done;
    }
    uint64_t per_query = (L > k ? L : k) + buffered;
    uint64_t work = (uint64_t)m * per_query;
    if (work > app->limits.max_search_work) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "%zu queries x %llu steps each (search list %u + buffered vectors / %u) = %llu "
                        "is over the server's --max-search-work %llu; send fewer queries per request",
                        m, (unsigned long long)per_query, L > k ? L : k, SVD_BUFFER_WORK_DIVISOR,
                        (unsigned long long)work, (unsigned long long)app->limits.max_search_work);
        goto done;
    }
    if (!svd_response_ok(app, ctx, packed, build, what, r))
        goto done;
    Slimvec__V1__QueryResult **results = svd_own_array(r, m, sizeof *results);
    Slimvec__V1__QueryResult *qrs = svd_own_array(r, m, sizeof *qrs);
    sv_hit *hits = svd_own_array(r, k, sizeof *hits);
    if (!results || !qrs || !hits) {
        svd_reply_oom(r);
        goto done;
    }
    sv_interrupt intr = {ctx_stop, ctx};
    sv_search_opts so = {.k = k, .search_list = L, .rerank = req->skip_rerank ? SV_RERANK_OFF : req->rerank_depth,
                         .intr = &intr};
    sv_filter filter;
    if (req->filter) {
        if (svd_filter_from_pb(req->filter, &filter, r) != 0)
            goto done;
        so.filter = &filter;
    }
    for (size_t q = 0; q < m; q++) {
        size_t n = 0;
        sv_error err;
        sv_status st = sv_durable_search(c->dur, req->queries + q * dim, dim, &so, hits, &n, &err);
        if (st == SV_ERR_INTERRUPTED) {
            svd_reply_error(r, svd_ctx_stop_code(ctx), "query %zu: stopped (%s)", q,
                            svd_ctx_stop_code(ctx) == GRPC_STATUS_DEADLINE_EXCEEDED
                                ? "the deadline passed"
                                : "the call was cancelled");
            goto done;
        }
        if (st != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "query %zu: %s", q, err.message);
            goto done;
        }
        /* One block per query for hits, their pointers, ids and vectors:
         * a hit costs its fields, not an allocation each. */
        size_t id_bytes = 0;
        for (size_t h = 0; h < n; h++)
            id_bytes += strlen(hits[h].id) + 1;
        Slimvec__V1__Hit *hv = svd_own_array(r, n, sizeof *hv);
        Slimvec__V1__Hit **hp = svd_own_array(r, n, sizeof *hp);
        char *idbuf = svd_own(r, id_bytes);
        float *vecs = req->include_vectors ? svd_own_array(r, n, (size_t)dim * sizeof(float)) : NULL;
        if (n && (!hv || !hp || !idbuf || (req->include_vectors && !vecs))) {
            svd_reply_oom(r);
            goto done;
        }
        Slimvec__V1__QueryResult *qr = &qrs[q];
        slimvec__v1__query_result__init(qr);
        for (size_t h = 0; h < n; h++) {
            Slimvec__V1__Hit *hit = &hv[h];
            slimvec__v1__hit__init(hit);
            size_t len = strlen(hits[h].id);
            memcpy(idbuf, hits[h].id, len + 1);
            hit->id = idbuf;
            idbuf += len + 1;
            hit->distance = hits[h].distance;
            if (req->include_vectors) {
                float *v = vecs + (size_t)h * dim;
                /* A vector deleted since the search has no values to return. */
                if (sv_durable_get(c->dur, hit->id, v, dim, NULL) == SV_OK) {
                    hit->n_vector = dim;
                    hit->vector = v;
                }
            }
            if (req->with_payload &&
                payload_of(c, hit->id, &hit->payload, &packed, svd_ctx_max_message(ctx), r) != 0)
                goto done;
            hp[h] = hit;
        }
        qr->n_hits = n;
        qr->hits = hp;
        results[q] = qr;
    }
    resp->n_results = m;
    resp->results = results;
    resp->search_list = L;
done:
    svd_registry_put(app->registry, c);
}

static void h_search(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    (void)state;
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    Slimvec__V1__SearchResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    svd_search_into(appv, ctx, req, resp, r);
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void s_search(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    (void)state;
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    Slimvec__V1__SearchResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    svd_reply inner = SVD_INNER(r);
    svd_search_into(appv, ctx, req, resp, &inner);
    if (svd_stream_step_done(r, &inner, &resp->error))
        return;
    if (resp->error) {
        resp->n_results = 0;
        resp->results = NULL;
    }
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void h_get(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    const Slimvec__V1__GetRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_READ, req->collection, r);
    if (!c)
        return;
    uint32_t dim = sv_durable_params(c->dur)->dim;
    size_t n = req->n_ids;
    if (n > app->limits.max_get_ids) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu ids are over the server's --max-get-ids %u",
                        n, app->limits.max_get_ids);
        goto done;
    }
    if (!svd_ids_ok(app, req->ids, n, "id", r))
        goto done;
    uint64_t id_bytes = 0;
    for (size_t i = 0; i < n; i++)
        id_bytes += strlen(req->ids[i]);
    uint64_t packed = 16 + (uint64_t)n * (field_bytes(field_bytes(4ull * dim) + 12)) + id_bytes;
    uint64_t build = (uint64_t)n * (sizeof(Slimvec__V1__Vector) + sizeof(void *) + 4ull * dim);
    char what[96];
    snprintf(what, sizeof what, "%zu vectors of dimension %u", n, dim);
    if (!svd_response_ok(app, ctx, packed, build, what, r))
        goto done;
    Slimvec__V1__GetResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__Vector **vs = svd_own_array(r, n, sizeof *vs);
    Slimvec__V1__Vector *vb = svd_own_array(r, n, sizeof *vb);
    float *values = svd_own_array(r, n, (size_t)dim * sizeof(float));
    if (!resp || (n && (!vs || !vb || !values))) {
        svd_reply_oom(r);
        goto done;
    }
    slimvec__v1__get_response__init(resp);
    for (size_t i = 0; i < n; i++) {
        if ((i & 255) == 255 && svd_ctx_stopped(ctx)) {
            svd_reply_error(r, svd_ctx_stop_code(ctx), "stopped at item %zu", i);
            goto done;
        }
        Slimvec__V1__Vector *v = &vb[i];
        slimvec__v1__vector__init(v);
        sv_error err;
        sv_status st = sv_durable_get(c->dur, req->ids[i], values + (size_t)i * dim, dim, &err);
        if (st != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "item %zu: %s", i, err.message);
            goto done;
        }
        v->id = req->ids[i];
        v->n_values = dim;
        v->values = values + (size_t)i * dim;
        if (req->with_payload && payload_of(c, req->ids[i], &v->payload, &packed, svd_ctx_max_message(ctx), r) != 0)
            goto done;
        vs[i] = v;
    }
    resp->n_vectors = n;
    resp->vectors = vs;
    r->msg = &resp->base;
done:
    svd_registry_put(app->registry, c);
}

sv_payload *svd_set_payload_arg(svd_app *app, const Slimvec__V1__SetPayloadRequest *req, svd_reply *r)
{
    char *one[1] = {req->id};
    sv_payload *pl = NULL;
    if (!svd_ids_ok(app, one, 1, "id", r))
        return NULL;
    if (!req->payload) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "payload is missing (an empty one clears with patch off)");
        return NULL;
    }
    Slimvec__V1__Payload *const pbs[1] = {req->payload};
    return svd_payloads_from_pb(pbs, 1, &pl, r) == 0 ? pl : NULL;
}

static void h_set_payload(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    const Slimvec__V1__SetPayloadRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, r);
    if (!c)
        return;
    sv_payload *pl = NULL;
    Slimvec__V1__SetPayloadResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        goto done;
    }
    if (!(pl = svd_set_payload_arg(app, req, r)))
        goto done;
    sv_error err;
    sv_status st = sv_durable_set_payload(c->dur, req->id, pl, req->patch ? SV_PAYLOAD_PATCH : SV_PAYLOAD_REPLACE,
                                          &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        goto done;
    }
    slimvec__v1__set_payload_response__init(resp);
    r->msg = &resp->base;
done:
    svd_registry_put(app->registry, c);
}

int svd_index_keys_ok(char *const *keys, size_t n, svd_reply *r)
{
    if (n > SVD_INDEXED_KEYS_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu keys to index (at most %d)", n, SVD_INDEXED_KEYS_MAX);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!svd_field_ok(keys[i], "key to index", n == 1 ? SIZE_MAX : i, r))
            return 0;
        size_t len = strlen(keys[i]);
        if (len == 0 || len > SV_PAYLOAD_KEY_MAX) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "a key to index is 1..%d bytes (%zu given)",
                            SV_PAYLOAD_KEY_MAX, len);
            return 0;
        }
    }
    return 1;
}

static void h_create_index(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    const Slimvec__V1__CreateIndexRequest *req = (const void *)m;
    char *const keys[1] = {req->key};
    if (!svd_index_keys_ok(keys, 1, r))
        return;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, r);
    if (!c)
        return;
    Slimvec__V1__CreateIndexResponse *resp = svd_own(r, sizeof *resp);
    sv_error err;
    sv_status st = resp ? sv_durable_index_key(c->dur, req->key, &err) : SV_ERR_RESOURCE;
    if (!resp)
        svd_reply_oom(r);
    else if (st != SV_OK)
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
    else {
        slimvec__v1__create_index_response__init(resp);
        r->msg = &resp->base;
    }
    svd_registry_put(app->registry, c);
}

static void h_count(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    const Slimvec__V1__CountRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_READ, req->collection, r);
    if (!c)
        return;
    Slimvec__V1__CountResponse *resp = svd_own(r, sizeof *resp);
    sv_filter filter;
    if (!resp) {
        svd_reply_oom(r);
        goto done;
    }
    if (req->filter && svd_filter_from_pb(req->filter, &filter, r) != 0)
        goto done;
    slimvec__v1__count_response__init(resp);
    sv_error err;
    sv_interrupt intr = {ctx_stop, ctx};
    sv_status st = sv_durable_count_filtered(c->dur, req->filter ? &filter : NULL, &intr, &resp->count, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        goto done;
    }
    r->msg = &resp->base;
done:
    svd_registry_put(app->registry, c);
}

static void h_scroll(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    const Slimvec__V1__ScrollRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_READ, req->collection, r);
    if (!c)
        return;
    uint32_t dim = sv_durable_params(c->dur)->dim;
    uint32_t limit = req->page_size ? req->page_size : 100;
    if (limit > app->limits.max_get_ids) {
        if (req->page_size) {
            svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "page_size %u is over the server's --max-get-ids %u",
                            req->page_size, app->limits.max_get_ids);
            goto done;
        }
        limit = app->limits.max_get_ids;
    }
    /* The token: the cursor in decimal, nothing else. */
    uint64_t cursor = 0;
    if (req->page_token[0]) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(req->page_token, &end, 10);
        if (errno || *end || req->page_token[0] == '-' || v == 0 || strlen(req->page_token) > 20) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "page_token is not one this server gave");
            goto done;
        }
        cursor = v;
    }
    sv_filter filter;
    if (req->filter && svd_filter_from_pb(req->filter, &filter, r) != 0)
        goto done;
    uint64_t packed = 16 + (uint64_t)limit * field_bytes(field_bytes(SV_ID_MAX) +
                                                        (req->with_vectors ? field_bytes(4ull * dim) : 0));
    uint64_t build = (uint64_t)limit * (sizeof(Slimvec__V1__Vector) + sizeof(void *) + SV_ID_MAX + 1 +
                                        (req->with_vectors ? 4ull * dim : 0));
    if (!svd_response_ok(app, ctx, packed, build, "a page of vectors", r))
        goto done;
    Slimvec__V1__ScrollResponse *resp = svd_own(r, sizeof *resp);
    char(*ids)[SV_ID_MAX + 1] = svd_own_array(r, limit, sizeof *ids);
    Slimvec__V1__Vector *vb = svd_own_array(r, limit, sizeof *vb);
    Slimvec__V1__Vector **vs = svd_own_array(r, limit, sizeof *vs);
    float *values = req->with_vectors ? svd_own_array(r, limit, (size_t)dim * sizeof(float)) : NULL;
    char *token = svd_own(r, 24);
    if (!resp || !ids || !vb || !vs || !token || (req->with_vectors && !values)) {
        svd_reply_oom(r);
        goto done;
    }
    uint32_t n = 0;
    sv_error err;
    sv_interrupt intr = {ctx_stop, ctx};
    sv_status st = sv_durable_scroll(c->dur, req->filter ? &filter : NULL, &intr, &cursor, limit, ids, &n, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        goto done;
    }
    slimvec__v1__scroll_response__init(resp);
    size_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        Slimvec__V1__Vector *v = &vb[kept];
        slimvec__v1__vector__init(v);
        v->id = ids[i];
        if (req->with_vectors) {
            float *dst = values + kept * dim;
            if (sv_durable_get(c->dur, ids[i], dst, dim, NULL) != SV_OK)
                continue; /* deleted since its page was read */
            v->n_values = dim;
            v->values = dst;
        }
        if (req->with_payload && payload_of(c, ids[i], &v->payload, &packed, svd_ctx_max_message(ctx), r) != 0)
            goto done;
        vs[kept++] = v;
    }
    snprintf(token, 24, "%llu", (unsigned long long)cursor);
    resp->n_vectors = kept;
    resp->vectors = vs;
    resp->next_page_token = cursor ? token : "";
    r->msg = &resp->base;
done:
    svd_registry_put(app->registry, c);
}

static void h_delete(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    (void)state;
    const Slimvec__V1__DeleteRequest *req = (const void *)m;
    svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, r);
    if (!c)
        return;
    if (req->n_ids > app->limits.max_batch) {
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu ids are over the batch limit of %u",
                        req->n_ids, app->limits.max_batch);
        goto done;
    }
    if (!svd_ids_ok(app, req->ids, req->n_ids, "id", r))
        goto done;
    sv_error err;
    size_t deleted = 0;
    sv_status st = sv_durable_delete(c->dur, (const char *const *)req->ids, req->n_ids, &deleted, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        goto done;
    }
    Slimvec__V1__DeleteResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        goto done;
    }
    slimvec__v1__delete_response__init(resp);
    resp->deleted = (uint32_t)deleted; /* distinct ids: a repeated id counts once */
    r->msg = &resp->base;
    if (deleted)
        svd_maint_kick(app->maint); /* consolidation may be due */
done:
    svd_registry_put(app->registry, c);
}

/* ---- health --------------------------------------------------------------- */

static int health_known(const char *svc)
{
    return strcmp(svc, "") == 0 || strcmp(svc, "slimvec.v1.SlimVec") == 0;
}

static void h_health_check(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m,
                           svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    (void)state;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
    const char *svc = req->service ? req->service : "";
    if (!health_known(svc)) {
        svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "unknown service \"%.128s\"", svc);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
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
static void s_health_watch(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m,
                           svd_reply *r)
{
    svd_app *app = appv;
    (void)ctx;
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
    if (req)
        *state = (void *)(uintptr_t)health_known(req->service ? req->service : "");
    Grpc__Health__V1__HealthCheckResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
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

#define M(path, req, fn, end, kind, light, role) {path, &req##__descriptor, fn, end, kind, light, role}
static const svd_method methods[] = {
    M("/slimvec.v1.SlimVec/CreateCollection", slimvec__v1__create_collection_request, h_create, NULL, SVD_UNARY, 0, SVD_ROLE_ADMIN),
    M("/slimvec.v1.SlimVec/DropCollection", slimvec__v1__drop_collection_request, h_drop, NULL, SVD_UNARY, 0, SVD_ROLE_ADMIN),
    M("/slimvec.v1.SlimVec/ListCollections", slimvec__v1__list_collections_request, h_list, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/DescribeCollection", slimvec__v1__describe_collection_request, h_describe, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/Ingest", slimvec__v1__ingest_request, s_ingest, NULL, SVD_STREAM, 0, SVD_ROLE_WRITE),
    M("/slimvec.v1.SlimVec/Search", slimvec__v1__search_request, h_search, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/SearchStream", slimvec__v1__search_request, s_search, NULL, SVD_STREAM, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/Get", slimvec__v1__get_request, h_get, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/Delete", slimvec__v1__delete_request, h_delete, NULL, SVD_UNARY, 0, SVD_ROLE_WRITE),
    M("/slimvec.v1.SlimVec/Flush", slimvec__v1__flush_request, h_flush, end_task, SVD_UNARY, 0, SVD_ROLE_WRITE),
    M("/slimvec.v1.SlimVec/Snapshot", slimvec__v1__snapshot_request, h_snapshot, end_task, SVD_UNARY, 0, SVD_ROLE_WRITE),
    M("/slimvec.v1.SlimVec/SetPayload", slimvec__v1__set_payload_request, h_set_payload, NULL, SVD_UNARY, 0, SVD_ROLE_WRITE),
    M("/slimvec.v1.SlimVec/Count", slimvec__v1__count_request, h_count, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/Scroll", slimvec__v1__scroll_request, h_scroll, NULL, SVD_UNARY, 0, SVD_ROLE_READ),
    M("/slimvec.v1.SlimVec/CreateIndex", slimvec__v1__create_index_request, h_create_index, NULL, SVD_UNARY, 0, SVD_ROLE_WRITE),
    M("/grpc.health.v1.Health/Check", grpc__health__v1__health_check_request, h_health_check, NULL, SVD_UNARY, 1, SVD_ROLE_NONE),
    M("/grpc.health.v1.Health/Watch", grpc__health__v1__health_check_request, s_health_watch, NULL, SVD_WATCH, 1, SVD_ROLE_NONE),
};
#undef M

svd_handler_fn svd_local_handler(const char *path)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(methods[i].path, path) == 0)
            return methods[i].handle;
    return NULL;
}

const svd_method *svd_methods(size_t *n)
{
    *n = sizeof methods / sizeof methods[0];
    return methods;
}
