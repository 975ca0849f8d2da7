/* Prometheus metrics over HTTP (see metrics.h). */
#include "metrics.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CODES 17 /* gRPC status codes 0..16 */
static const double BUCKETS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5};
#define N_BUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

static const char *CODE_NAMES[N_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

typedef struct method_stats {
    const char *name;                   /* "slimvec.v1.SlimVec/Search" */
    atomic_ullong calls[N_CODES];
    atomic_ullong buckets[N_BUCKETS];   /* cumulative at render time */
    atomic_ullong count;
    _Atomic double sum;
    atomic_ullong denied_messages;      /* stream messages refused by authorization */
} method_stats;

struct svd_metrics {
    method_stats *methods;              /* n + 1: the last is unknown methods */
    size_t n;
    svd_registry *registry;
    atomic_int *serving;
    double recovery_seconds;            /* set once before listening */
    uint64_t memory_limit, memory_cap;  /* likewise */
    svd_server *server;                 /* set once it runs (NULL before) */
    _Atomic(svd_server *) server_atomic;
    svd_tokens *tokens;                 /* set once before serving (NULL: none) */
    svd_tls *tls;
    atomic_ullong http_denied[2];       /* /metrics: unauthenticated, forbidden */
    void (*extra)(void *ctx, svd_text *t); /* set once before serving (NULL: none) */
    void *extra_ctx;
};

void svd_metrics_set_auth(svd_metrics *m, svd_tokens *tokens, svd_tls *tls)
{
    m->tokens = tokens;
    m->tls = tls;
}

void svd_metrics_http_denied(svd_metrics *m, int forbidden)
{
    atomic_fetch_add(&m->http_denied[forbidden ? 1 : 0], 1);
}

void svd_metrics_set_memory(svd_metrics *m, uint64_t limit, uint64_t cap)
{
    m->memory_limit = limit;
    m->memory_cap = cap;
}

void svd_metrics_set_server(svd_metrics *m, svd_server *s)
{
    atomic_store(&m->server_atomic, s);
}

void svd_metrics_set_extra(svd_metrics *m, void (*render)(void *ctx, svd_text *t), void *ctx)
{
    m->extra = render;
    m->extra_ctx = ctx;
}

void svd_metrics_set_recovery(svd_metrics *m, double seconds)
{
    m->recovery_seconds = seconds;
}

svd_metrics *svd_metrics_create(const svd_method *methods, size_t n_methods, svd_registry *registry,
                                atomic_int *serving)
{
    svd_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->methods = calloc(n_methods + 1, sizeof *m->methods);
    if (!m->methods) {
        free(m);
        return NULL;
    }
    m->n = n_methods;
    for (size_t i = 0; i < n_methods; i++)
        m->methods[i].name = methods[i].path + 1; /* drop the leading '/' */
    m->methods[n_methods].name = "unknown";
    m->registry = registry;
    m->serving = serving;
    return m;
}

void svd_metrics_free(svd_metrics *m)
{
    if (!m)
        return;
    free(m->methods);
    free(m);
}

static method_stats *stats_of(svd_metrics *m, int method)
{
    return &m->methods[method < 0 || (size_t)method >= m->n ? m->n : (size_t)method];
}

void svd_metrics_message(void *mv, int method, double seconds)
{
    method_stats *s = stats_of(mv, method);
    for (size_t b = 0; b < N_BUCKETS; b++) {
        if (seconds <= BUCKETS[b]) {
            atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    double old = atomic_load_explicit(&s->sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&s->sum, &old, old + seconds, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void svd_metrics_stream_denied(void *mv, int method)
{
    atomic_fetch_add_explicit(&stats_of(mv, method)->denied_messages, 1, memory_order_relaxed);
}

void svd_metrics_call_end(void *mv, int method, int code)
{
    method_stats *s = stats_of(mv, method);
    atomic_fetch_add_explicit(&s->calls[code >= 0 && code < N_CODES ? code : 2], 1,
                              memory_order_relaxed);
}

/* ---- text ---------------------------------------------------------------- */

struct svd_text {
    char *buf;
    size_t len, cap;
    int failed;
};
typedef svd_text text;

#define put svd_text_put
void svd_text_put(svd_text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n + 1;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}


char *svd_metrics_render(svd_metrics *m, size_t *len)
{
    text t = {.cap = 16384};
    t.buf = malloc(t.cap);
    if (!t.buf)
        return NULL;
    t.buf[0] = '\0';

    svd_coll **all = NULL;
    size_t n = svd_registry_list(m->registry, &all);
    static const struct {
        const char *name, *help;
    } parts[] = {{"vectors", "vector store: codes and per-vector parameters"},
                 {"edges", "neighbour lists and their index"},
                 {"id_map", "id hash, slot words and string ids"},
                 {"buffer", "write buffer"},
                 {"other", "slot states, search scratch, bookkeeping"},
                 {"payload", "payloads: columns, lists and the string dictionary"}};
    put(&t, "# HELP slimvec_collection_vectors Live vectors in the collection.\n"
            "# TYPE slimvec_collection_vectors gauge\n");
    sv_stats *st = calloc(n ? n : 1, sizeof *st);
    size_t *arena = calloc(n ? n : 1, sizeof *arena);
    if (!st || !arena)
        t.failed = 1;
    for (size_t i = 0; i < n && !t.failed; i++) {
        sv_durable_collection_stats(all[i]->dur, &st[i]);
        arena[i] = sv_arena_allocated(all[i]->arena);
        put(&t, "slimvec_collection_vectors{collection=\"%s\"} %llu\n", all[i]->name,
            (unsigned long long)st[i].live);
    }
    put(&t, "# HELP slimvec_collection_allocated_bytes Bytes the collection holds: jemalloc's usable size of each of its live blocks (measured).\n"
            "# TYPE slimvec_collection_allocated_bytes gauge\n");
    for (size_t i = 0; i < n && !t.failed; i++)
        put(&t, "slimvec_collection_allocated_bytes{collection=\"%s\"} %zu\n", all[i]->name, arena[i]);
    put(&t, "# HELP slimvec_collection_bytes_per_vector Allocated bytes divided by live vectors.\n"
            "# TYPE slimvec_collection_bytes_per_vector gauge\n");
    for (size_t i = 0; i < n && !t.failed; i++)
        put(&t, "slimvec_collection_bytes_per_vector{collection=\"%s\"} %.3f\n", all[i]->name,
            st[i].live ? (double)arena[i] / (double)st[i].live : 0.0);
    put(&t, "# HELP slimvec_collection_part_bytes_estimate The engine's own sum of allocation sizes by part (an estimate; the arena figure is the measurement).\n"
            "# TYPE slimvec_collection_part_bytes_estimate gauge\n");
    for (size_t i = 0; i < n && !t.failed; i++) {
        uint64_t v[6] = {st[i].est_bytes_vectors, st[i].est_bytes_edges, st[i].est_bytes_idmap,
                         st[i].est_bytes_buffer, st[i].est_bytes_other, st[i].est_bytes_payload};
        for (size_t p = 0; p < 6; p++)
            put(&t, "slimvec_collection_part_bytes_estimate{collection=\"%s\",part=\"%s\"} %llu\n",
                all[i]->name, parts[p].name, (unsigned long long)v[p]);
    }
    /* Originals on disk: apart from memory (the page cache may drop them). */
    static const struct {
        const char *name, *help;
    } orig[] = {
        {"slimvec_collection_originals_disk_bytes", "Blocks the collection's originals file holds on disk (ORIGINALS_DISK)."},
        {"slimvec_collection_originals_file_bytes", "Length of the originals file (sparse past the disk bytes)."},
        {"slimvec_collection_originals_resident_bytes", "Of the originals file's records, bytes in the page cache now (not the collection's memory)."},
    };
    for (size_t m = 0; m < sizeof orig / sizeof orig[0] && !t.failed; m++) {
        put(&t, "# HELP %s %s\n# TYPE %s gauge\n", orig[m].name, orig[m].help, orig[m].name);
        for (size_t i = 0; i < n && !t.failed; i++) {
            if (sv_durable_params(all[i]->dur)->originals != SV_ORIGINALS_DISK)
                continue;
            uint64_t v = m == 0 ? st[i].orig_disk_bytes : m == 1 ? st[i].orig_file_bytes : st[i].orig_resident_bytes;
            put(&t, "%s{collection=\"%s\"} %llu\n", orig[m].name, all[i]->name, (unsigned long long)v);
        }
    }
    /* Durability, for collections kept in a data directory. */
    static const struct {
        const char *name, *type, *help;
    } dur[] = {
        {"slimvec_log_bytes", "gauge", "Write-ahead log bytes since the last snapshot."},
        {"slimvec_log_written_bytes_total", "counter", "Write-ahead log bytes appended since start."},
        {"slimvec_log_fsyncs_total", "counter", "fdatasync calls on the write-ahead log (one covers a group of writes)."},
        {"slimvec_log_fsync_seconds_total", "counter", "Time spent in those fdatasync calls."},
        {"slimvec_log_last_lsn", "gauge", "Log sequence number of the last acknowledged write."},
        {"slimvec_snapshots_total", "counter", "Snapshots taken since start."},
        {"slimvec_snapshot_last_bytes", "gauge", "Size of the last snapshot taken."},
        {"slimvec_snapshot_last_seconds", "gauge", "Time to write and fsync the last snapshot."},
        {"slimvec_snapshot_last_stall_seconds", "gauge", "How long ingest and deletes waited for the last snapshot."},
    };
    sv_durable_stats *ds = calloc(n ? n : 1, sizeof *ds);
    if (!ds)
        t.failed = 1;
    for (size_t i = 0; i < n && !t.failed; i++)
        sv_durable_get_stats(all[i]->dur, &ds[i]);
    for (size_t k = 0; k < sizeof dur / sizeof dur[0] && !t.failed; k++) {
        put(&t, "# HELP %s %s\n# TYPE %s %s\n", dur[k].name, dur[k].help, dur[k].name, dur[k].type);
        for (size_t i = 0; i < n; i++) {
            if (!sv_durable_dir(all[i]->dur))
                continue;
            const sv_durable_stats *d = &ds[i];
            double v[] = {(double)d->log_bytes, (double)d->log_bytes_total, (double)d->syncs,
                          d->sync_seconds, (double)d->last_lsn, (double)d->snapshots,
                          (double)d->last_snapshot.bytes, d->last_snapshot.seconds,
                          d->last_snapshot.stall_seconds};
            put(&t, "%s{collection=\"%s\"} %.9g\n", dur[k].name, all[i]->name, v[k]);
        }
    }
    free(ds);
    put(&t, "# HELP slimvec_memory_limit_bytes The memory limit the server was given or read from its cgroup (0: none).\n"
            "# TYPE slimvec_memory_limit_bytes gauge\nslimvec_memory_limit_bytes %llu\n"
            "# HELP slimvec_memory_cap_bytes jemalloc allocated + metadata bytes past which calls that allocate are refused (0: no cap).\n"
            "# TYPE slimvec_memory_cap_bytes gauge\nslimvec_memory_cap_bytes %llu\n",
        (unsigned long long)m->memory_limit, (unsigned long long)m->memory_cap);
    put(&t, "# HELP slimvec_recovery_seconds Time the last start spent opening collections (snapshot load and log replay).\n"
            "# TYPE slimvec_recovery_seconds gauge\nslimvec_recovery_seconds %.6f\n",
        m->recovery_seconds);

    {
        static const char *maint_names[] = {"slimvec_collection_flushes_total",
                                            "slimvec_collection_consolidations_total"};
        static const char *maint_help[] = {"Flushes of the write buffer into the graph since start.",
                                           "Consolidations of deleted vectors since start."};
        for (size_t k = 0; k < 2 && !t.failed; k++) {
            put(&t, "# HELP %s %s\n# TYPE %s counter\n", maint_names[k], maint_help[k], maint_names[k]);
            for (size_t i = 0; i < n; i++) {
                sv_durable_stats d;
                sv_durable_get_stats(all[i]->dur, &d);
                put(&t, "%s{collection=\"%s\"} %llu\n", maint_names[k], all[i]->name,
                    (unsigned long long)(k == 0 ? d.flushes : d.consolidations));
            }
        }
        put(&t, "# HELP slimvec_collection_connect_seconds_total Time the graph's connect step took (after each flush and consolidation).\n"
                "# TYPE slimvec_collection_connect_seconds_total counter\n");
        for (size_t i = 0; i < n && !t.failed; i++)
            put(&t, "slimvec_collection_connect_seconds_total{collection=\"%s\"} %.6f\n", all[i]->name,
                st[i].connect_total.seconds);
        put(&t, "# HELP slimvec_collection_connect_linked_total Cut-off nodes given an in-edge back by the connect step.\n"
                "# TYPE slimvec_collection_connect_linked_total counter\n");
        for (size_t i = 0; i < n && !t.failed; i++)
            put(&t, "slimvec_collection_connect_linked_total{collection=\"%s\"} %llu\n", all[i]->name,
                (unsigned long long)st[i].connect_total.linked);
        put(&t, "# HELP slimvec_collection_tombstones Deleted vectors awaiting consolidation.\n"
                "# TYPE slimvec_collection_tombstones gauge\n");
        for (size_t i = 0; i < n && !t.failed; i++)
            put(&t, "slimvec_collection_tombstones{collection=\"%s\"} %llu\n", all[i]->name,
                (unsigned long long)st[i].tombstones);
        put(&t, "# HELP slimvec_collection_buffered Vectors in the write buffer (searched by brute force).\n"
                "# TYPE slimvec_collection_buffered gauge\n");
        for (size_t i = 0; i < n && !t.failed; i++)
            put(&t, "slimvec_collection_buffered{collection=\"%s\"} %llu\n", all[i]->name,
                (unsigned long long)st[i].buffered);
    }
    if (m->extra)
        m->extra(m->extra_ctx, &t);
    put(&t, "# HELP slimvec_collections Collections the server holds.\n"
            "# TYPE slimvec_collections gauge\nslimvec_collections %zu\n", n);
    svd_registry_put_list(m->registry, all, n);
    free(st);
    free(arena);

    /* One statistics refresh per scrape, whatever the number of collections. */
    sv_arena_pool_stats ps;
    sv_arena_pool_stats_get(svd_registry_pool(m->registry), &ps);
    static const char *je[] = {"allocated", "active", "resident", "mapped", "retained", "metadata"};
    for (size_t i = 0; i < sizeof je / sizeof je[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "stats.%s", je[i]);
        put(&t, "# HELP slimvec_jemalloc_%s_bytes jemalloc %s for the whole process.\n"
                "# TYPE slimvec_jemalloc_%s_bytes gauge\nslimvec_jemalloc_%s_bytes %zu\n",
            je[i], name, je[i], je[i], sv_jemalloc_stat(name));
    }
    put(&t, "# HELP slimvec_arena_pool_arenas Shared jemalloc arenas holding the collections.\n"
            "# TYPE slimvec_arena_pool_arenas gauge\nslimvec_arena_pool_arenas %u\n"
            "# HELP slimvec_arena_pool_allocated_bytes Bytes allocated in those arenas (jemalloc's statistics).\n"
            "# TYPE slimvec_arena_pool_allocated_bytes gauge\nslimvec_arena_pool_allocated_bytes %zu\n"
            "# HELP slimvec_arena_pool_accounted_bytes The collections' own counts of their bytes (must equal the allocated bytes).\n"
            "# TYPE slimvec_arena_pool_accounted_bytes gauge\nslimvec_arena_pool_accounted_bytes %zu\n"
            "# HELP slimvec_arena_pool_metadata_bytes jemalloc metadata of those arenas.\n"
            "# TYPE slimvec_arena_pool_metadata_bytes gauge\nslimvec_arena_pool_metadata_bytes %zu\n",
        ps.arenas, ps.jemalloc, ps.accounted + ps.leaked, ps.metadata);
    svd_server *srv = atomic_load(&m->server_atomic);
    if (srv) {
        svd_server_stats ss;
        svd_server_get_stats(srv, &ss);
        put(&t, "# HELP slimvec_rpc_open_calls Calls open (health checks not counted).\n"
                "# TYPE slimvec_rpc_open_calls gauge\nslimvec_rpc_open_calls %d\n"
                "# HELP slimvec_rpc_open_streams Streaming calls open.\n"
                "# TYPE slimvec_rpc_open_streams gauge\nslimvec_rpc_open_streams %d\n"
                "# HELP slimvec_rpc_deferred Requests waiting off-thread (a full write buffer, a flush or snapshot).\n"
                "# TYPE slimvec_rpc_deferred gauge\nslimvec_rpc_deferred %d\n"
                "# HELP slimvec_rpc_inflight_bytes Decoded requests and unsent responses (bounded by --inflight-memory).\n"
                "# TYPE slimvec_rpc_inflight_bytes gauge\nslimvec_rpc_inflight_bytes %zu\n"
                "# HELP slimvec_rpc_refused_total Calls refused by a server limit, by limit.\n"
                "# TYPE slimvec_rpc_refused_total counter\n"
                "slimvec_rpc_refused_total{limit=\"calls\"} %llu\n"
                "slimvec_rpc_refused_total{limit=\"inflight_memory\"} %llu\n"
                "slimvec_rpc_refused_total{limit=\"send_timeout\"} %llu\n",
            ss.calls, ss.streams, ss.deferred, ss.inflight_bytes, (unsigned long long)ss.refused_calls,
            (unsigned long long)ss.refused_bytes, (unsigned long long)ss.send_timeouts);
    }

    put(&t, "# HELP slimvec_rpc_calls_total Finished calls by method and status code.\n"
            "# TYPE slimvec_rpc_calls_total counter\n");
    for (size_t i = 0; i <= m->n; i++)
        for (int c = 0; c < N_CODES; c++) {
            unsigned long long v = atomic_load(&m->methods[i].calls[c]);
            if (v)
                put(&t, "slimvec_rpc_calls_total{method=\"%s\",code=\"%s\"} %llu\n",
                    m->methods[i].name, CODE_NAMES[c], v);
        }
    put(&t, "# HELP slimvec_auth_denials_total Calls, stream messages and HTTP requests refused: no "
            "valid token (unauthenticated) or a role too weak (permission_denied).\n"
            "# TYPE slimvec_auth_denials_total counter\n");
    for (size_t i = 0; i <= m->n; i++) {
        unsigned long long un = atomic_load(&m->methods[i].calls[GRPC_STATUS_UNAUTHENTICATED]),
                           pd = atomic_load(&m->methods[i].calls[GRPC_STATUS_PERMISSION_DENIED]) +
                                atomic_load(&m->methods[i].denied_messages);
        if (un)
            put(&t, "slimvec_auth_denials_total{method=\"%s\",reason=\"unauthenticated\"} %llu\n",
                m->methods[i].name, un);
        if (pd)
            put(&t, "slimvec_auth_denials_total{method=\"%s\",reason=\"permission_denied\"} %llu\n",
                m->methods[i].name, pd);
    }
    put(&t, "slimvec_auth_denials_total{method=\"http/metrics\",reason=\"unauthenticated\"} %llu\n"
            "slimvec_auth_denials_total{method=\"http/metrics\",reason=\"permission_denied\"} %llu\n",
        (unsigned long long)atomic_load(&m->http_denied[0]),
        (unsigned long long)atomic_load(&m->http_denied[1]));
    if (m->tokens) {
        svd_tokens_stats ts;
        svd_tokens_get_stats(m->tokens, &ts);
        put(&t, "# HELP slimvec_auth_token_lines Lines of the tokens file in force.\n"
                "# TYPE slimvec_auth_token_lines gauge\nslimvec_auth_token_lines %zu\n"
                "# HELP slimvec_auth_token_reloads_total Reloads of the tokens file (error: it did not "
                "parse and the previous one stayed).\n"
                "# TYPE slimvec_auth_token_reloads_total counter\n"
                "slimvec_auth_token_reloads_total{result=\"ok\"} %llu\n"
                "slimvec_auth_token_reloads_total{result=\"error\"} %llu\n",
            ts.lines, (unsigned long long)ts.reloads, (unsigned long long)ts.reload_errors);
    }
    if (m->tls) {
        svd_tls_stats ls;
        svd_tls_get_stats(m->tls, &ls);
        put(&t, "# HELP slimvec_tls_certificate_expiry_seconds When the server certificate in force "
                "expires (Unix time).\n"
                "# TYPE slimvec_tls_certificate_expiry_seconds gauge\n"
                "slimvec_tls_certificate_expiry_seconds %lld\n"
                "# HELP slimvec_tls_reloads_total New certificate files taken up (error: refused, the "
                "previous pair stayed).\n"
                "# TYPE slimvec_tls_reloads_total counter\n"
                "slimvec_tls_reloads_total{result=\"ok\"} %llu\n"
                "slimvec_tls_reloads_total{result=\"error\"} %llu\n",
            (long long)ls.not_after, (unsigned long long)ls.reloads, (unsigned long long)ls.reload_errors);
    }
    put(&t, "# HELP slimvec_rpc_handle_seconds Time to handle one unary call or one stream message.\n"
            "# TYPE slimvec_rpc_handle_seconds histogram\n");
    for (size_t i = 0; i <= m->n; i++) {
        method_stats *s = &m->methods[i];
        unsigned long long cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += atomic_load(&s->buckets[b]);
            put(&t, "slimvec_rpc_handle_seconds_bucket{method=\"%s\",le=\"%g\"} %llu\n", s->name,
                BUCKETS[b], cum);
        }
        unsigned long long count = atomic_load(&s->count);
        put(&t, "slimvec_rpc_handle_seconds_bucket{method=\"%s\",le=\"+Inf\"} %llu\n", s->name, count);
        put(&t, "slimvec_rpc_handle_seconds_sum{method=\"%s\"} %.9f\n", s->name, atomic_load(&s->sum));
        put(&t, "slimvec_rpc_handle_seconds_count{method=\"%s\"} %llu\n", s->name, count);
    }
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
