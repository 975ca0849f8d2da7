/*
 * The server's registry and handlers driven directly by threads, without
 * gRPC (run under ASan and TSan): requests are packed, decoded the way the
 * runtime decodes them (svd_decode: the arena that knows each string's
 * length) and handed to the method table with a local call context.
 *
 *   - creates, drops and lookups of the same names at once (a new entry was
 *     once published with no reference, and a lookup freed it under its
 *     creator);
 *   - ingest, search, get, delete, describe and list on one collection
 *     from several threads, with flushes and consolidations as the
 *     maintenance thread makes them: every acknowledged vector is there
 *     exactly once, no deleted one is, the graph validates;
 *   - a search stops within milliseconds of its deadline or cancel;
 *   - answers are bounded before they are built (--max-message);
 *   - ids with a NUL or invalid UTF-8 are refused naming the item;
 *   - Delete counts a repeated id once; a full write buffer defers ingest.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "handlers.h"
#include "slimvec/v1/slimvec.pb-c.h"
#include "testutil.h"

enum { M_CREATE, M_DROP, M_LIST, M_DESCRIBE, M_INGEST, M_SEARCH, M_SEARCH_STREAM, M_GET, M_DELETE,
       M_FLUSH, M_SNAPSHOT };

static const svd_method *methods;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static svd_app *app_new(size_t max_collections)
{
    size_t n = 0;
    methods = svd_methods(&n);
    ck_assert_str_eq(methods[M_SNAPSHOT].path, "/slimvec.v1.SlimVec/Snapshot");
    svd_app *app = calloc(1, sizeof *app);
    svd_registry_options ro = {.durable = {.buffer_factor = 4}, .build_threads = 1,
                               .max_collections = max_collections, .arenas = 4};
    app->registry = svd_registry_create(&ro);
    app->memory = svd_memory_create(0, 0, 0);
    app->limits = (svd_limits){.max_dim = 512, .max_k = 100, .max_batch = 2000, .max_id_len = 128,
                               .build_threads = 1, .max_search_list = 1000,
                               .max_search_work = 100000000, .max_get_ids = 100,
                               .max_flush_threshold = 65536};
    atomic_init(&app->serving, 1);
    return app;
}

static void app_free(svd_app *app)
{
    svd_registry_free(app->registry);
    svd_memory_free(app->memory);
    free(app);
}

/* A call's outcome, kept past the reply's memory. */
typedef struct outcome {
    grpc_status_code code;
    char message[512];
    int defer;
    uint8_t *packed;   /* the response, packed (caller frees) */
    size_t len;
} outcome;

/* Run method m on the packed request bytes with ctx (NULL: a fresh local one). */
static outcome call_bytes(svd_app *app, int m, const uint8_t *req, size_t len, svd_ctx *ctx)
{
    outcome o = {0};
    svd_ctx local;
    if (!ctx) {
        svd_ctx_init_local(&local, 64u << 20, 0);
        ctx = &local;
    }
    svd_decoded *mem = NULL;
    ProtobufCMessage *msg = svd_decode(methods[m].request, req, len, &mem);
    ck_assert_ptr_nonnull(msg);
    svd_reply r = {.code = GRPC_STATUS_OK};
    void *state = NULL;
    methods[m].handle(app, ctx, &state, msg, &r);
    o.code = r.code;
    o.defer = r.defer;
    snprintf(o.message, sizeof o.message, "%s", r.message);
    if (r.code == GRPC_STATUS_OK && r.msg && !r.defer) {
        o.len = protobuf_c_message_get_packed_size(r.msg);
        o.packed = malloc(o.len ? o.len : 1);
        protobuf_c_message_pack(r.msg, o.packed);
    }
    if (r.free_fn)
        r.free_fn(r.owned);
    if (methods[m].end)
        methods[m].end(app, state, 0);
    svd_decoded_free(mem);
    return o;
}

static outcome call_msg(svd_app *app, int m, const ProtobufCMessage *req, svd_ctx *ctx)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(req, buf);
    outcome o = call_bytes(app, m, buf, len, ctx);
    free(buf);
    return o;
}

static void create(svd_app *app, const char *name, uint32_t dim, uint32_t threshold)
{
    Slimvec__V1__CollectionSpec spec = SLIMVEC__V1__COLLECTION_SPEC__INIT;
    spec.name = (char *)name;
    spec.dimension = dim;
    spec.metric = SLIMVEC__V1__METRIC__METRIC_L2;
    spec.storage = SLIMVEC__V1__STORAGE__STORAGE_INT8;
    spec.flush_threshold = threshold;
    Slimvec__V1__CreateCollectionRequest req = SLIMVEC__V1__CREATE_COLLECTION_REQUEST__INIT;
    req.spec = &spec;
    outcome o = call_msg(app, M_CREATE, &req.base, NULL);
    ck_assert_msg(o.code == GRPC_STATUS_OK, "create %s: %s", name, o.message);
    free(o.packed);
}

/* ---- registry: creates, drops and lookups at once ------------------------------ */

typedef struct race {
    svd_app *app;
    atomic_int stop;
    atomic_long lookups, found, creates;
} race;

static void *race_creator(void *arg)
{
    race *r = arg;
    char name[16];
    /* At least 300 rounds, and on until the readers did their share (a
     * busy machine may start them late). */
    for (int round = 0; round < 300 || r->lookups < 3000; round++) {
        snprintf(name, sizeof name, "r%d", round % 4);
        Slimvec__V1__CollectionSpec spec = SLIMVEC__V1__COLLECTION_SPEC__INIT;
        spec.name = name;
        spec.dimension = 4;
        spec.metric = SLIMVEC__V1__METRIC__METRIC_L2;
        spec.storage = SLIMVEC__V1__STORAGE__STORAGE_F32;
        Slimvec__V1__CreateCollectionRequest req = SLIMVEC__V1__CREATE_COLLECTION_REQUEST__INIT;
        req.spec = &spec;
        outcome o = call_msg(r->app, M_CREATE, &req.base, NULL);
        free(o.packed);
        r->creates += o.code == GRPC_STATUS_OK;
        Slimvec__V1__DropCollectionRequest drop = SLIMVEC__V1__DROP_COLLECTION_REQUEST__INIT;
        snprintf(name, sizeof name, "r%d", (round + 2) % 4);
        drop.name = name;
        o = call_msg(r->app, M_DROP, &drop.base, NULL);
        free(o.packed);
    }
    atomic_store(&r->stop, 1);
    return NULL;
}

static void *race_reader(void *arg)
{
    race *r = arg;
    char name[16];
    unsigned k = 0;
    while (!atomic_load(&r->stop)) {
        snprintf(name, sizeof name, "r%u", k++ % 4);
        /* Straight at the registry, and through Describe. */
        svd_coll *c = svd_registry_get(r->app->registry, name);
        if (c) {
            ck_assert_str_eq(c->name, name);
            ck_assert_uint_eq(sv_durable_params(c->dur)->dim, 4);
            svd_registry_put(r->app->registry, c);
            r->found++;
        }
        Slimvec__V1__DescribeCollectionRequest d = SLIMVEC__V1__DESCRIBE_COLLECTION_REQUEST__INIT;
        d.name = name;
        outcome o = call_msg(r->app, M_DESCRIBE, &d.base, NULL);
        ck_assert(o.code == GRPC_STATUS_OK || o.code == GRPC_STATUS_NOT_FOUND);
        free(o.packed);
        r->lookups++;
    }
    return NULL;
}

START_TEST(test_registry_create_drop_lookup_race)
{
    svd_app *app = app_new(100);
    race r = {.app = app};
    pthread_t w, rd[3];
    pthread_create(&w, NULL, race_creator, &r);
    for (int i = 0; i < 3; i++)
        pthread_create(&rd[i], NULL, race_reader, &r);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(rd[i], NULL);
    printf("registry race: %ld creates, %ld lookups (%ld found)\n", (long)r.creates, (long)r.lookups,
           (long)r.found);
    ck_assert_int_gt(r.creates, 100);
    ck_assert_int_gt(r.found, 0);
    app_free(app);
}
END_TEST

/* Past jemalloc's 4,096 arenas: an arena per collection once failed to
 * create at about 4,086 with "out of memory"; the pool has no such limit,
 * and each collection's account still counts exactly its own bytes. */
START_TEST(test_five_thousand_collections)
{
    svd_app *app = app_new(6000);
    char name[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "c%d", i);
        create(app, name, 4, 0);
    }
    ck_assert_uint_eq(svd_registry_count(app->registry), 5000);
    sv_arena_pool_stats ps;
    sv_arena_pool_stats_get(svd_registry_pool(app->registry), &ps);
    ck_assert_uint_le(ps.arenas, 4);
    ck_assert_uint_eq(ps.accounts, 5000);
    ck_assert_uint_eq(ps.jemalloc, ps.accounted); /* (equal under ASan too: its own malloc) */
    svd_coll *c = svd_registry_get(app->registry, "c4999");
    ck_assert_uint_gt(sv_arena_allocated(c->arena), 0);
    svd_registry_put(app->registry, c);
    app_free(app);
}
END_TEST

START_TEST(test_max_collections)
{
    svd_app *app = app_new(3);
    create(app, "a", 4, 0);
    create(app, "b", 4, 0);
    create(app, "c", 4, 0);
    Slimvec__V1__CollectionSpec spec = SLIMVEC__V1__COLLECTION_SPEC__INIT;
    spec.name = "d";
    spec.dimension = 4;
    spec.metric = SLIMVEC__V1__METRIC__METRIC_L2;
    spec.storage = SLIMVEC__V1__STORAGE__STORAGE_F32;
    Slimvec__V1__CreateCollectionRequest req = SLIMVEC__V1__CREATE_COLLECTION_REQUEST__INIT;
    req.spec = &spec;
    outcome o = call_msg(app, M_CREATE, &req.base, NULL);
    ck_assert_int_eq(o.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_ptr_nonnull(strstr(o.message, "--max-collections 3"));
    ck_assert_uint_eq(svd_registry_count(app->registry), 3);
    app_free(app);
}
END_TEST

/* ---- handlers from threads ----------------------------------------------------------- */

#define H_DIM 16
#define H_INGESTERS 2
#define H_BATCHES 40
#define H_BATCH 50

typedef struct hshared {
    svd_app *app;
    float *data;                  /* H_INGESTERS * H_BATCHES * H_BATCH rows */
    atomic_int ingest_done;
    atomic_int acked[H_INGESTERS]; /* batches acknowledged */
    atomic_long deleted;          /* rows of ingester 0 with row % 7 == 0 below this are deleted */
    atomic_long searches, deferred;
    atomic_int failures;
    char failure[256];
} hshared;

static void fail_once(hshared *h, const char *msg)
{
    if (atomic_fetch_add(&h->failures, 1) == 0)
        snprintf(h->failure, sizeof h->failure, "%.200s", msg);
}

typedef struct hworker {
    hshared *h;
    int index;
} hworker;

static void *ingester(void *arg)
{
    hworker *w = arg;
    hshared *h = w->h;
    char names[H_BATCH][24];
    char *ids[H_BATCH];
    for (int b = 0; b < H_BATCHES; b++) {
        size_t first = ((size_t)w->index * H_BATCHES + (size_t)b) * H_BATCH;
        for (int i = 0; i < H_BATCH; i++) {
            snprintf(names[i], sizeof names[i], "w%d-%zu", w->index, first + (size_t)i);
            ids[i] = names[i];
        }
        Slimvec__V1__IngestRequest req = SLIMVEC__V1__INGEST_REQUEST__INIT;
        req.collection = "h";
        req.sequence = (uint64_t)b;
        req.n_vectors = (size_t)H_BATCH * H_DIM;
        req.vectors = h->data + first * H_DIM;
        req.n_ids = H_BATCH;
        req.ids = ids;
        for (;;) {
            outcome o = call_msg(h->app, M_INGEST, &req.base, NULL);
            if (o.defer) {
                /* The maintenance thread would flush, then wake us. */
                h->deferred++;
                usleep(1000);
                continue;
            }
            Slimvec__V1__IngestResponse *resp = slimvec__v1__ingest_response__unpack(NULL, o.len, o.packed);
            if (!resp || resp->error || resp->applied != H_BATCH)
                fail_once(h, resp && resp->error ? resp->error->message : "ingest failed");
            if (resp)
                slimvec__v1__ingest_response__free_unpacked(resp, NULL);
            free(o.packed);
            break;
        }
        atomic_store(&h->acked[w->index], b + 1);
    }
    atomic_fetch_add(&h->ingest_done, 1);
    return NULL;
}

static void *maintainer(void *arg)
{
    hshared *h = arg;
    while (atomic_load(&h->ingest_done) < H_INGESTERS) {
        svd_coll *c = svd_registry_get(h->app->registry, "h");
        sv_error err;
        if (sv_durable_flush_due(c->dur) && sv_durable_flush(c->dur, &err) != SV_OK)
            fail_once(h, err.message);
        if (sv_durable_consolidate_due(c->dur, 0.05, 10) && sv_durable_consolidate(c->dur, &err) != SV_OK)
            fail_once(h, err.message);
        svd_registry_put(h->app->registry, c);
        usleep(2000);
    }
    return NULL;
}

static void *deleter(void *arg)
{
    hshared *h = arg;
    long row = 0;
    char name[24];
    char *ids[1] = {name};
    while (atomic_load(&h->ingest_done) < H_INGESTERS) {
        long acked_rows = (long)atomic_load(&h->acked[0]) * H_BATCH;
        if (row + 7 > acked_rows) {
            usleep(500);
            continue;
        }
        snprintf(name, sizeof name, "w0-%ld", row);
        Slimvec__V1__DeleteRequest req = SLIMVEC__V1__DELETE_REQUEST__INIT;
        req.collection = "h";
        req.n_ids = 1;
        req.ids = ids;
        outcome o = call_msg(h->app, M_DELETE, &req.base, NULL);
        if (o.code != GRPC_STATUS_OK)
            fail_once(h, o.message);
        free(o.packed);
        row += 7;
        atomic_store(&h->deleted, row);
    }
    return NULL;
}

static void *searcher(void *arg)
{
    hshared *h = arg;
    unsigned k = 0;
    while (atomic_load(&h->ingest_done) < H_INGESTERS) {
        long deleted_before = atomic_load(&h->deleted);
        Slimvec__V1__SearchRequest req = SLIMVEC__V1__SEARCH_REQUEST__INIT;
        req.collection = "h";
        req.n_queries = H_DIM;
        req.queries = h->data + (size_t)(k++ % (H_BATCHES * H_BATCH)) * H_DIM;
        req.k = 10;
        req.search_list = 40;
        outcome o = call_msg(h->app, k % 2 ? M_SEARCH : M_SEARCH_STREAM, &req.base, NULL);
        Slimvec__V1__SearchResponse *resp = slimvec__v1__search_response__unpack(NULL, o.len, o.packed);
        if (o.code != GRPC_STATUS_OK || !resp || resp->error || resp->n_results != 1) {
            fail_once(h, o.message);
        } else {
            for (size_t i = 0; i < resp->results[0]->n_hits; i++) {
                long row;
                if (sscanf(resp->results[0]->hits[i]->id, "w0-%ld", &row) == 1 && row % 7 == 0 &&
                    row < deleted_before)
                    fail_once(h, "a search returned a vector deleted before it began");
            }
        }
        if (resp)
            slimvec__v1__search_response__free_unpacked(resp, NULL);
        free(o.packed);
        /* And the admin views, which read stats while all this goes on. */
        Slimvec__V1__ListCollectionsRequest l = SLIMVEC__V1__LIST_COLLECTIONS_REQUEST__INIT;
        o = call_msg(h->app, M_LIST, &l.base, NULL);
        if (o.code != GRPC_STATUS_OK)
            fail_once(h, o.message);
        free(o.packed);
        h->searches++;
    }
    return NULL;
}

START_TEST(test_handlers_from_threads)
{
    hshared h = {.app = app_new(10)};
    size_t rows = (size_t)H_INGESTERS * H_BATCHES * H_BATCH;
    h.data = tu_gaussian(rows, H_DIM, 7);
    create(h.app, "h", H_DIM, 300);
    pthread_t t[H_INGESTERS + 4];
    hworker w[H_INGESTERS];
    for (int i = 0; i < H_INGESTERS; i++) {
        w[i] = (hworker){&h, i};
        pthread_create(&t[i], NULL, ingester, &w[i]);
    }
    pthread_create(&t[H_INGESTERS], NULL, maintainer, &h);
    pthread_create(&t[H_INGESTERS + 1], NULL, deleter, &h);
    pthread_create(&t[H_INGESTERS + 2], NULL, searcher, &h);
    pthread_create(&t[H_INGESTERS + 3], NULL, searcher, &h);
    for (int i = 0; i < H_INGESTERS + 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(atomic_load(&h.failures) == 0, "%s", h.failure);

    /* Every acknowledged vector is there exactly once, no deleted one is. */
    svd_coll *c = svd_registry_get(h.app->registry, "h");
    long deleted = atomic_load(&h.deleted);
    uint64_t want = rows - (uint64_t)(deleted / 7);
    ck_assert_uint_eq(sv_durable_count(c->dur), want);
    float v[H_DIM];
    char name[24];
    for (size_t r = 0; r < rows; r++) {
        snprintf(name, sizeof name, "w%zu-%zu", r / (H_BATCHES * H_BATCH), r);
        int gone = r < (size_t)H_BATCHES * H_BATCH && r % 7 == 0 && (long)r < deleted;
        ck_assert_int_eq(sv_durable_get(c->dur, name, v, H_DIM, NULL), gone ? SV_ERR_NOT_FOUND : SV_OK);
    }
    sv_error err;
    ck_assert_msg(sv_durable_flush(c->dur, &err) == SV_OK, "%s", err.message);
    ck_assert_msg(sv_durable_consolidate(c->dur, &err) == SV_OK, "%s", err.message);
    ck_assert_msg(sv_durable_validate(c->dur, &err) == SV_OK, "%s", err.message);
    sv_durable_stats ds;
    sv_durable_get_stats(c->dur, &ds);
    printf("handlers from threads: %llu live, %ld deletes, %ld searches, %ld ingests deferred, "
           "%llu flushes, %llu consolidations\n",
           (unsigned long long)sv_durable_count(c->dur), deleted / 7, (long)h.searches,
           (long)h.deferred, (unsigned long long)ds.flushes, (unsigned long long)ds.consolidations);
    ck_assert_uint_gt(ds.consolidations, 0);
    svd_registry_put(h.app->registry, c);
    free(h.data);
    app_free(h.app);
}
END_TEST

/* ---- deadlines, cancels and bounds ----------------------------------------------------- */

typedef struct canceller {
    _Atomic int *flag;
    double after;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    usleep((useconds_t)(c->after * 1e6));
    atomic_store(c->flag, 1);
    return NULL;
}

/* A collection of n buffered vectors (brute force: long searches). */
static void fill(svd_app *app, const char *name, uint32_t dim, size_t n, uint32_t threshold)
{
    create(app, name, dim, threshold);
    float *data = tu_gaussian(n, dim, 3);
    for (size_t first = 0; first < n; first += 1000) {
        Slimvec__V1__IngestRequest req = SLIMVEC__V1__INGEST_REQUEST__INIT;
        req.collection = (char *)name;
        req.n_vectors = (n - first < 1000 ? n - first : 1000) * dim;
        req.vectors = data + first * dim;
        outcome o = call_msg(app, M_INGEST, &req.base, NULL);
        ck_assert(!o.defer);
        free(o.packed);
    }
    free(data);
}

START_TEST(test_search_stops_at_deadline_and_cancel)
{
    svd_app *app = app_new(10);
    app->limits.max_search_work = UINT64_MAX;
    app->limits.max_batch = 100000;
    /* 60,000 buffered vectors of dimension 256: each query is a brute force. */
    fill(app, "slow", 256, 60000, 65536);
    float *q = tu_gaussian(2000, 256, 9);
    Slimvec__V1__SearchRequest req = SLIMVEC__V1__SEARCH_REQUEST__INIT;
    req.collection = "slow";
    req.n_queries = 2000 * 256;
    req.queries = q;
    req.k = 10;

    svd_ctx ctx;
    svd_ctx_init_local(&ctx, 64u << 20, 0.05);
    double t0 = now_s();
    outcome o = call_msg(app, M_SEARCH, &req.base, &ctx);
    double dt = now_s() - t0;
    ck_assert_int_eq(o.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    printf("search past a 50 ms deadline stopped after %.3f s: %s\n", dt, o.message);
    ck_assert_msg(dt < 1.0, "stopped only after %.3f s", dt);
    free(o.packed);

    _Atomic int cancelled = 0;
    svd_ctx_init_local(&ctx, 64u << 20, 0);
    ctx.cancelled = &cancelled;
    canceller cc = {&cancelled, 0.05};
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &cc);
    t0 = now_s();
    o = call_msg(app, M_SEARCH, &req.base, &ctx);
    dt = now_s() - t0;
    pthread_join(t, NULL);
    ck_assert_int_eq(o.code, GRPC_STATUS_CANCELLED);
    printf("search cancelled after 50 ms stopped after %.3f s\n", dt);
    ck_assert_msg(dt < 1.0, "stopped only after %.3f s", dt);
    free(o.packed);
    free(q);
    app_free(app);
}
END_TEST

START_TEST(test_answers_bounded_before_built)
{
    svd_app *app = app_new(10);
    app->limits.max_batch = 100000;
    app->limits.max_k = 1000;
    app->limits.max_search_work = UINT64_MAX;
    fill(app, "one", 1, 3000, 65536);
    /* 5,000 one-dimensional queries x k = 1000: 20 KB asking for ~60 MB. */
    float *q = tu_gaussian(5000, 1, 4);
    Slimvec__V1__SearchRequest req = SLIMVEC__V1__SEARCH_REQUEST__INIT;
    req.collection = "one";
    req.n_queries = 5000;
    req.queries = q;
    req.k = 1000;
    svd_ctx ctx;
    svd_ctx_init_local(&ctx, 4u << 20, 0);
    double t0 = now_s();
    outcome o = call_msg(app, M_SEARCH, &req.base, &ctx);
    ck_assert_int_eq(o.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_msg(strstr(o.message, "could be up to") && strstr(o.message, "--max-message of 4194304"),
                  "%s", o.message);
    ck_assert_msg(now_s() - t0 < 0.5, "refused only after the work"); /* nothing searched */
    free(o.packed);
    /* Under the limit it is answered, and the answer is within it. */
    req.n_queries = 10;
    req.k = 100;
    o = call_msg(app, M_SEARCH, &req.base, &ctx);
    ck_assert_msg(o.code == GRPC_STATUS_OK, "%s", o.message);
    ck_assert_uint_le(o.len, 4u << 20);
    free(o.packed);

    /* Get: too many ids, and a large answer. */
    char *ids[200];
    char names[200][16];
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof names[i], "%d", i);
        ids[i] = names[i];
    }
    Slimvec__V1__GetRequest g = SLIMVEC__V1__GET_REQUEST__INIT;
    g.collection = "one";
    g.n_ids = 200;
    g.ids = ids;
    o = call_msg(app, M_GET, &g.base, &ctx);
    ck_assert_int_eq(o.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_ptr_nonnull(strstr(o.message, "--max-get-ids 100"));
    free(o.packed);
    /* The search list and the work per request. */
    req.n_queries = 10;
    req.k = 10;
    req.search_list = 5000;
    o = call_msg(app, M_SEARCH, &req.base, &ctx);
    ck_assert_int_eq(o.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_ptr_nonnull(strstr(o.message, "--max-search-list 1000"));
    free(o.packed);
    app->limits.max_search_work = 1000;
    req.search_list = 100;
    req.n_queries = 100;
    o = call_msg(app, M_SEARCH, &req.base, &ctx);
    ck_assert_int_eq(o.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_ptr_nonnull(strstr(o.message, "--max-search-work 1000"));
    free(o.packed);
    free(q);
    app_free(app);
}
END_TEST

/* A request by hand: field 1 (collection) then field `ids_field` strings. */
static size_t raw_request(uint8_t *buf, const char *coll, int ids_field, const char *id, size_t id_len)
{
    size_t n = 0;
    buf[n++] = 0x0a;
    buf[n++] = (uint8_t)strlen(coll);
    memcpy(buf + n, coll, strlen(coll));
    n += strlen(coll);
    buf[n++] = (uint8_t)(ids_field << 3 | 2);
    buf[n++] = (uint8_t)id_len;
    memcpy(buf + n, id, id_len);
    return n + id_len;
}

START_TEST(test_text_checked)
{
    svd_app *app = app_new(10);
    fill(app, "t", 4, 10, 1000);
    uint8_t buf[128];
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } bad[] = {
        {"x\0one", 5, "NUL byte at offset 1"},
        {"b\xff", 2, "not valid UTF-8 (byte 0xff at offset 1)"},
        {"\xc0\xaf", 2, "not valid UTF-8"},         /* overlong '/' */
        {"\xed\xa0\x80", 3, "not valid UTF-8"},     /* a surrogate */
        {"\xf4\x90\x80\x80", 4, "not valid UTF-8"}, /* past U+10FFFF */
        {"ok\xe2\x82", 4, "not valid UTF-8"},       /* truncated */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* Get (ids = field 2), Delete (ids = field 2), Ingest (ids = field 4). */
        size_t n = raw_request(buf, "t", 2, bad[i].bytes, bad[i].len);
        outcome o = call_bytes(app, M_GET, buf, n, NULL);
        ck_assert_int_eq(o.code, GRPC_STATUS_INVALID_ARGUMENT);
        ck_assert_msg(strstr(o.message, bad[i].why) && strstr(o.message, "id 0"), "%s", o.message);
        o = call_bytes(app, M_DELETE, buf, n, NULL);
        ck_assert_int_eq(o.code, GRPC_STATUS_INVALID_ARGUMENT);
        ck_assert_msg(strstr(o.message, bad[i].why), "%s", o.message);
        /* An ingest batch of one vector with that id: refused, nothing added. */
        uint8_t ib[128];
        size_t m = raw_request(ib, "t", 4, bad[i].bytes, bad[i].len);
        static const uint8_t vec[] = {0x1a, 16, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40};
        memcpy(ib + m, vec, sizeof vec);
        o = call_bytes(app, M_INGEST, ib, m + sizeof vec, NULL);
        Slimvec__V1__IngestResponse *resp = slimvec__v1__ingest_response__unpack(NULL, o.len, o.packed);
        ck_assert_ptr_nonnull(resp);
        ck_assert_ptr_nonnull(resp->error);
        ck_assert_int_eq(resp->error->code, GRPC_STATUS_INVALID_ARGUMENT);
        ck_assert_msg(strstr(resp->error->message, bad[i].why) &&
                          strstr(resp->error->message, "id of vector 0"),
                      "%s", resp->error->message);
        slimvec__v1__ingest_response__free_unpacked(resp, NULL);
        free(o.packed);
    }
    /* A collection name with a NUL never reaches another collection. */
    size_t n = raw_request(buf, "t", 2, "0", 1);
    buf[1] = 3;
    memmove(buf + 5, buf + 3, n - 3);
    memcpy(buf + 2, "t\0z", 3);
    outcome o = call_bytes(app, M_GET, buf, n + 2, NULL);
    ck_assert_int_eq(o.code, GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(o.message, "collection name contains a NUL byte at offset 1"));
    svd_coll *c = svd_registry_get(app->registry, "t");
    ck_assert_uint_eq(sv_durable_count(c->dur), 10);
    svd_registry_put(app->registry, c);
    app_free(app);
}
END_TEST

START_TEST(test_delete_counts_distinct_and_backpressure)
{
    svd_app *app = app_new(10);
    fill(app, "d", 4, 100, 50);
    char *ids[3] = {"5", "5", "6"};
    Slimvec__V1__DeleteRequest req = SLIMVEC__V1__DELETE_REQUEST__INIT;
    req.collection = "d";
    req.n_ids = 3;
    req.ids = ids;
    outcome o = call_msg(app, M_DELETE, &req.base, NULL);
    ck_assert_int_eq(o.code, GRPC_STATUS_OK);
    Slimvec__V1__DeleteResponse *resp = slimvec__v1__delete_response__unpack(NULL, o.len, o.packed);
    ck_assert_uint_eq(resp->deleted, 2);
    slimvec__v1__delete_response__free_unpacked(resp, NULL);
    free(o.packed);

    /* The buffer holds 98 (threshold 50, bound 4 x 50): a batch of 100
     * still fits under the bound, the next one waits for a flush. */
    float v[100 * 4];
    for (int i = 0; i < 400; i++)
        v[i] = (float)(i % 9);
    Slimvec__V1__IngestRequest in = SLIMVEC__V1__INGEST_REQUEST__INIT;
    in.collection = "d";
    in.n_vectors = 100 * 4;
    in.vectors = v;
    o = call_msg(app, M_INGEST, &in.base, NULL);
    ck_assert(!o.defer);
    free(o.packed);
    o = call_msg(app, M_INGEST, &in.base, NULL);
    ck_assert_msg(o.defer, "a batch past 4 x the threshold was taken");
    svd_coll *c = svd_registry_get(app->registry, "d");
    uint64_t before = sv_durable_count(c->dur);
    ck_assert_uint_le(sv_durable_buffered(c->dur), 200);
    ck_assert_int_eq(sv_durable_flush(c->dur, NULL), SV_OK);
    o = call_msg(app, M_INGEST, &in.base, NULL);
    ck_assert(!o.defer);
    free(o.packed);
    ck_assert_uint_eq(sv_durable_count(c->dur), before + 100);
    svd_registry_put(app->registry, c);
    app_free(app);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("service");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_registry_create_drop_lookup_race);
    tcase_add_test(tc, test_max_collections);
    tcase_add_test(tc, test_five_thousand_collections);
    tcase_add_test(tc, test_handlers_from_threads);
    tcase_add_test(tc, test_search_stops_at_deadline_and_cancel);
    tcase_add_test(tc, test_answers_bounded_before_built);
    tcase_add_test(tc, test_text_checked);
    tcase_add_test(tc, test_delete_counts_distinct_and_backpressure);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
