/* Cluster mode: configuration, the catalog, the applier (see cluster.h). */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "follow.h"
#include "maintenance.h"

#define OUTCOMES 512           /* records whose outcome each collection keeps */
#define RECONCILE_SECONDS 1.0  /* the registry is checked against the catalog this often */
#define IDLE_US 2000           /* the applier's pause when nothing came */
#define ERROR_US 50000         /* ... and when something failed */

typedef struct outcome {
    uint64_t lsn;
    uint64_t duplicate_of;
    sv_status st;
    uint32_t count;
    char why[100];
} outcome;

typedef struct outcomes {
    pthread_mutex_t mu;
    outcome ring[OUTCOMES];
} outcomes;

typedef struct shard_log {
    uint64_t incarnation;
    uint32_t shard;
    sv_log *log;
} shard_log;

typedef struct peer_set {
    grpc_channel *ch[SVC_FANOUT_TARGETS];
    int n;
} peer_set;

/*
 * Locks: logs_mu (the writers' log cache) and stats_mu are leaves. The
 * applier thread is the only one that applies records and changes the
 * registry's collections in cluster mode.
 */
struct svc_cluster {
    svc_cluster_config cfg;
    char *strings[8];            /* the config's strings, owned */
    const char *sets[SVC_REPLICA_SETS_MAX];
    int n_sets;
    char *sets_buf;
    svc_nats *nats;
    sv_log *catalog_log;
    svc_catalog *catalog;
    svd_registry_follow follow;
    peer_set peers[SVC_SHARDS_MAX];
    atomic_uint rr[SVC_SHARDS_MAX]; /* per shard: which replica a read asks first */
    pthread_mutex_t logs_mu;
    shard_log *logs;
    size_t n_logs, cap_logs;
    svc_fanout *fanout;
    double open_wait;            /* seconds a stream that cannot be opened is waited for */
    svd_app *app;
    void (*wake)(void *ctx);     /* runs deferred calls again (the server's) */
    void *wake_ctx;
    pthread_t thread;
    int running;
    atomic_int stop;
    pthread_mutex_t stats_mu;
    svc_cluster_stats stats;
};

/* ---- configuration ------------------------------------------------------------------ */

static const char *keep(svc_cluster *c, const char *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof c->strings / sizeof c->strings[0]; i++)
        if (!c->strings[i])
            return c->strings[i] = strdup(s);
    return NULL;
}

/* "0=a:1,b:2;1=c:3" into peer channels. */
static sv_status parse_peers(svc_cluster *c, sv_error *err)
{
    if (!c->cfg.peers || !*c->cfg.peers)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "cluster mode needs --cluster-peers (shard=host:port,...;...)");
    char *copy = strdup(c->cfg.peers);
    if (!copy)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    sv_status st = SV_OK;
    char *save = NULL;
    for (char *group = strtok_r(copy, ";", &save); group && st == SV_OK; group = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(group, '=');
        char *end = NULL;
        unsigned long shard = eq ? strtoul(group, &end, 10) : 0;
        if (!eq || end != eq || shard >= c->cfg.shards) {
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--cluster-peers: \"%.60s\" is not shard=host:port,... with a shard below %u",
                         group, c->cfg.shards);
            break;
        }
        char *save2 = NULL;
        for (char *addr = strtok_r(eq + 1, ",", &save2); addr; addr = strtok_r(NULL, ",", &save2)) {
            peer_set *ps = &c->peers[shard];
            if (ps->n == SVC_FANOUT_TARGETS) {
                st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--cluster-peers: more than %d replicas of shard %lu",
                             SVC_FANOUT_TARGETS, shard);
                break;
            }
            char why[256] = "";
            /* Failing fast on a dead pod is what lets the router move on
             * to its sibling: no waiting for a connection to come up. */
            grpc_arg args[2];
            memset(args, 0, sizeof args);
            args[0].type = args[1].type = GRPC_ARG_INTEGER;
            args[0].key = (char *)"grpc.initial_reconnect_backoff_ms";
            args[0].value.integer = 100;
            args[1].key = (char *)"grpc.max_reconnect_backoff_ms";
            args[1].value.integer = 1000;
            grpc_channel *ch = svd_client_channel(addr, &c->cfg.peer, args, 2, why, sizeof why);
            if (!ch) {
                st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--cluster-peers: %s: %s", addr, why);
                break;
            }
            ps->ch[ps->n++] = ch;
        }
    }
    free(copy);
    for (uint32_t s = 0; st == SV_OK && s < c->cfg.shards; s++)
        if (!c->peers[s].n)
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--cluster-peers names no replica of shard %u", s);
    return st;
}

static sv_status parse_sets(svc_cluster *c, sv_error *err)
{
    const char *list = c->cfg.replica_sets && *c->cfg.replica_sets ? c->cfg.replica_sets : c->cfg.replica_set;
    if (!c->cfg.replica_set || !*c->cfg.replica_set || !list)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "cluster mode needs --replica-set");
    if (!(c->sets_buf = strdup(list)))
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    int self = 0;
    char *save = NULL;
    for (char *s = strtok_r(c->sets_buf, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        if (c->n_sets == SVC_REPLICA_SETS_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "more than %d replica sets", SVC_REPLICA_SETS_MAX);
        for (const char *p = s; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                  *p == '_'))
                return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "replica set \"%.40s\": use [A-Za-z0-9_-]", s);
        self |= strcmp(s, c->cfg.replica_set) == 0;
        c->sets[c->n_sets++] = s;
    }
    if (!self)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--replica-sets \"%s\" does not name this pod's set \"%s\"",
                       list, c->cfg.replica_set);
    return SV_OK;
}

/* ---- logs ------------------------------------------------------------------------------- */

static void stream_name(uint64_t incarnation, uint32_t shard, char *out, size_t cap)
{
    snprintf(out, cap, "c%" PRIu64 "_s%u", incarnation, shard);
}

static sv_status open_stream(svc_cluster *c, const char *name, const char *set, int create, sv_log **out,
                             sv_error *err)
{
    svc_natslog_config nc = {.name = name,
                             .create = create,
                             .replicas = c->cfg.stream_replicas,
                             .keep_before = SV_FOLLOW_WINDOW,
                             .replica_set = set,
                             .replica_sets = c->sets,
                             .n_replica_sets = c->n_sets};
    return svc_natslog_open(c->nats, &nc, out, err);
}

/* The registry's hook: the stream of this pod's shard of the collection. */
static sv_status follow_open_log(void *ctx, const char *name, uint64_t *incarnation, sv_log **log, sv_error *err)
{
    svc_cluster *c = ctx;
    svc_catalog_entry e;
    if (!svc_catalog_find(c->catalog, name, &e))
        return sv_fail(err, SV_ERR_NOT_FOUND, "the cluster has no collection \"%s\"", name);
    *incarnation = e.incarnation;
    char stream[64];
    stream_name(e.incarnation, c->cfg.shard, stream, sizeof stream);
    /* Right after NATS restarts a stream has no leader for a few seconds:
     * a pod starting then waits for it rather than fail. */
    double until = sv_now_seconds() + c->open_wait;
    for (;;) {
        sv_status st = open_stream(c, stream, c->cfg.replica_set, 1, log, err);
        if (st != SV_ERR_IO || sv_now_seconds() > until)
            return st;
        usleep(250000);
    }
}

sv_status svc_cluster_shard_log(svc_cluster *c, uint64_t incarnation, uint32_t shard, int create, sv_log **out,
                                sv_error *err)
{
    pthread_mutex_lock(&c->logs_mu);
    for (size_t i = 0; i < c->n_logs; i++)
        if (c->logs[i].incarnation == incarnation && c->logs[i].shard == shard) {
            *out = c->logs[i].log;
            pthread_mutex_unlock(&c->logs_mu);
            return sv_ok(err);
        }
    pthread_mutex_unlock(&c->logs_mu);
    char stream[64];
    stream_name(incarnation, shard, stream, sizeof stream);
    sv_log *log = NULL;
    sv_status st = open_stream(c, stream, NULL, create, &log, err);
    if (st != SV_OK)
        return st;
    pthread_mutex_lock(&c->logs_mu);
    for (size_t i = 0; i < c->n_logs; i++)
        if (c->logs[i].incarnation == incarnation && c->logs[i].shard == shard) {
            /* Another thread opened it meanwhile: use that one. */
            *out = c->logs[i].log;
            pthread_mutex_unlock(&c->logs_mu);
            sv_log_close(log);
            return sv_ok(err);
        }
    if (c->n_logs == c->cap_logs) {
        size_t cap = c->cap_logs ? c->cap_logs * 2 : 16;
        shard_log *t = realloc(c->logs, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&c->logs_mu);
            sv_log_close(log);
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
        }
        c->logs = t;
        c->cap_logs = cap;
    }
    c->logs[c->n_logs++] = (shard_log){incarnation, shard, log};
    pthread_mutex_unlock(&c->logs_mu);
    *out = log;
    return sv_ok(err);
}

sv_status svc_cluster_catalog_append(svc_cluster *c, uint32_t type, const uint8_t *rec, size_t len, uint64_t *lsn,
                                     sv_error *err)
{
    struct iovec part = {(void *)rec, len};
    double t0 = sv_now_seconds();
    sv_status st = sv_log_append(c->catalog_log, type, &part, 1, lsn, err);
    svc_cluster_note_append(c, st == SV_OK, sv_now_seconds() - t0);
    return st;
}

/* ---- outcomes ------------------------------------------------------------------------------ */

static void outcomes_free(void *p)
{
    outcomes *o = p;
    if (!o)
        return;
    pthread_mutex_destroy(&o->mu);
    free(o);
}

typedef struct note_ctx {
    svc_cluster *cluster;
    svd_coll *coll;
} note_ctx;

static void note_outcome(void *ctx, uint64_t lsn, const sv_follow_result *res, const char *why)
{
    svc_cluster *cl = ((note_ctx *)ctx)->cluster;
    svd_coll *coll = ((note_ctx *)ctx)->coll;
    outcomes *o = __atomic_load_n((outcomes **)&coll->extra, __ATOMIC_ACQUIRE);
    if (!o) {
        if (!(o = calloc(1, sizeof *o)))
            return;
        pthread_mutex_init(&o->mu, NULL);
        coll->extra_free = outcomes_free;
        __atomic_store_n((outcomes **)&coll->extra, o, __ATOMIC_RELEASE);
    }
    if (res->outcome != SV_OK || res->duplicate_of) {
        pthread_mutex_lock(&cl->stats_mu);
        cl->stats.refused_records += res->outcome != SV_OK;
        cl->stats.duplicate_records += res->duplicate_of != 0;
        pthread_mutex_unlock(&cl->stats_mu);
    }
    pthread_mutex_lock(&o->mu);
    outcome *slot = &o->ring[lsn % OUTCOMES];
    slot->lsn = lsn;
    slot->duplicate_of = res->duplicate_of;
    slot->st = res->outcome;
    slot->count = (uint32_t)res->count;
    snprintf(slot->why, sizeof slot->why, "%s", why ? why : "");
    pthread_mutex_unlock(&o->mu);
}

int svc_cluster_outcome(svd_coll *coll, uint64_t lsn, sv_status *st, uint32_t *count, uint64_t *duplicate_of,
                        char *why, size_t cap)
{
    outcomes *o = __atomic_load_n((outcomes **)&coll->extra, __ATOMIC_ACQUIRE);
    if (!o)
        return 0; /* applied a moment ago, not noted yet */
    pthread_mutex_lock(&o->mu);
    outcome *slot = &o->ring[lsn % OUTCOMES];
    int known = slot->lsn == lsn ? 1 : slot->lsn < lsn ? 0 : -1;
    if (known == 1) {
        *st = slot->st;
        *count = slot->count;
        *duplicate_of = slot->duplicate_of;
        snprintf(why, cap, "%s", slot->why);
    }
    pthread_mutex_unlock(&o->mu);
    return known;
}

/* ---- the applier ------------------------------------------------------------------------------ */

static void stats_add(svc_cluster *c, uint64_t applied, uint64_t errors)
{
    pthread_mutex_lock(&c->stats_mu);
    c->stats.applied_records += applied;
    c->stats.apply_errors += errors;
    pthread_mutex_unlock(&c->stats_mu);
}

static void create_local(svc_cluster *c, const svc_catalog_entry *e)
{
    svd_coll *have = svd_registry_get(c->app->registry, e->name);
    if (have) {
        uint64_t inc = have->incarnation;
        svd_registry_put(c->app->registry, have);
        if (inc == e->incarnation)
            return;
        sv_error err;
        svd_registry_drop(c->app->registry, e->name, &err); /* a stale copy */
    }
    sv_params p = e->params;
    p.threads = c->app->limits.build_threads;
    svd_coll *coll = NULL;
    sv_error err;
    if (svd_registry_create_collection(c->app->registry, e->name, &p, &coll, &err) != SV_OK) {
        fprintf(stderr, "slimvecd: cluster: creating \"%s\" here: %s (tried again later)\n", e->name, err.message);
        return;
    }
    svd_registry_put(c->app->registry, coll);
}

static void drop_local(svc_cluster *c, const svc_catalog_entry *e)
{
    svd_coll *have = svd_registry_get(c->app->registry, e->name);
    if (have) {
        int same = have->incarnation == e->incarnation;
        svd_registry_put(c->app->registry, have);
        sv_error err;
        if (same && svd_registry_drop(c->app->registry, e->name, &err) != SV_OK)
            fprintf(stderr, "slimvecd: cluster: dropping \"%s\" here: %s\n", e->name, err.message);
    }
    /* This shard's stream goes too (the router that dropped it removes
     * every shard's; removing twice is harmless). */
    char stream[64];
    stream_name(e->incarnation, c->cfg.shard, stream, sizeof stream);
    sv_error err;
    svc_natslog_delete(c->nats, stream, &err);
}

typedef struct catalog_visit_ctx {
    svc_cluster *c;
    int act; /* change the registry (after start) */
} catalog_visit_ctx;

static sv_status catalog_visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    catalog_visit_ctx *v = ctx;
    svc_catalog_change change;
    svc_catalog_entry e;
    sv_status st = svc_catalog_apply(v->c->catalog, type, lsn, p, len, &change, &e, err);
    if (st != SV_OK || !v->act)
        return st;
    if (change == SVC_CATALOG_CREATED)
        create_local(v->c, &e);
    else if (change == SVC_CATALOG_DROPPED)
        drop_local(v->c, &e);
    return SV_OK;
}

/* The registry in line with the catalog: what it lacks is created, what it
 * no longer has (or has again under a new incarnation) is dropped. */
static void reconcile(svc_cluster *c)
{
    svc_catalog_entry *all = NULL;
    size_t n = svc_catalog_list(c->catalog, &all);
    for (size_t i = 0; i < n; i++)
        create_local(c, &all[i]);
    free(all);
    svd_coll **colls = NULL;
    size_t m = svd_registry_list(c->app->registry, &colls);
    for (size_t i = 0; i < m; i++) {
        svc_catalog_entry e;
        if (!svc_catalog_find(c->catalog, colls[i]->name, &e) || e.incarnation != colls[i]->incarnation) {
            sv_error err;
            svd_registry_drop(c->app->registry, colls[i]->name, &err);
        }
    }
    svd_registry_put_list(c->app->registry, colls, m);
}

static uint64_t apply_collections(svc_cluster *c, int *errors)
{
    svd_coll **colls = NULL;
    size_t m = svd_registry_list(c->app->registry, &colls);
    uint64_t total = 0;
    for (size_t i = 0; i < m && !atomic_load(&c->stop); i++) {
        uint64_t n = 0;
        sv_error err;
        note_ctx nc = {c, colls[i]};
        sv_status st = sv_durable_follow(colls[i]->dur, 0, note_outcome, &nc, &n, &err);
        total += n;
        stats_add(c, n, st == SV_OK || st == SV_ERR_BUSY ? 0 : 1);
        *errors += st != SV_OK;
        if (st == SV_ERR_BUSY)
            svd_maint_kick(c->app->maint); /* the buffer is full: a flush makes room */
        else if (st != SV_OK && st != SV_ERR_NOT_FOUND) {
            static double last_said;
            double now = sv_now_seconds();
            if (now - last_said > 5) { /* the log is out of reach: say so now and then */
                fprintf(stderr, "slimvecd: cluster: applying \"%s\": %s\n", colls[i]->name, err.message);
                last_said = now;
            }
        }
        if (sv_durable_flush_due(colls[i]->dur))
            svd_maint_kick(c->app->maint);
    }
    svd_registry_put_list(c->app->registry, colls, m);
    return total;
}

static void *applier(void *arg)
{
    svc_cluster *c = arg;
    catalog_visit_ctx v = {c, 1};
    double reconciled = 0;
    while (!atomic_load(&c->stop)) {
        uint64_t before = svc_catalog_applied(c->catalog), after = before;
        sv_error err;
        sv_log_read(c->catalog_log, before, 0, catalog_visit, &v, &after, &err);
        int errors = 0;
        uint64_t n = apply_collections(c, &errors) + (after - before);
        double now = sv_now_seconds();
        if (now - reconciled > RECONCILE_SECONDS) {
            reconcile(c);
            reconciled = now;
        }
        if (n && c->wake)
            c->wake(c->wake_ctx); /* calls waiting for these records */
        else
            usleep(errors ? ERROR_US : IDLE_US); /* a stuck record or an absent log: not in a tight loop */
        if (c->cfg.apply_delay_seconds > 0)
            usleep((useconds_t)(c->cfg.apply_delay_seconds * 1e6));
    }
    return NULL;
}

/* ---- life ----------------------------------------------------------------------------------- */

sv_status svc_cluster_create(const svc_cluster_config *cfg, double wait_seconds, svc_cluster **out, sv_error *err)
{
    *out = NULL;
    svc_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    c->cfg = *cfg;
    c->cfg.nats.urls = keep(c, cfg->nats.urls);
    c->cfg.nats.ca_file = keep(c, cfg->nats.ca_file);
    c->cfg.nats.cert_file = keep(c, cfg->nats.cert_file);
    c->cfg.nats.key_file = keep(c, cfg->nats.key_file);
    c->cfg.nats.token = keep(c, cfg->nats.token);
    c->cfg.replica_set = keep(c, cfg->replica_set);
    c->cfg.replica_sets = keep(c, cfg->replica_sets);
    c->cfg.peers = keep(c, cfg->peers);
    if (c->cfg.stream_replicas < 1)
        c->cfg.stream_replicas = 3;
    if (c->cfg.outcome_seconds <= 0)
        c->cfg.outcome_seconds = 5;
    pthread_mutex_init(&c->logs_mu, NULL);
    pthread_mutex_init(&c->stats_mu, NULL);
    c->open_wait = wait_seconds;
    sv_status st = SV_OK;
    if (cfg->shards < 1 || cfg->shards > SVC_SHARDS_MAX || cfg->shard >= cfg->shards)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "shard %u of %u shards (1..%d shards)", cfg->shard, cfg->shards,
                     SVC_SHARDS_MAX);
    if (st == SV_OK)
        st = parse_sets(c, err);
    if (st == SV_OK)
        st = parse_peers(c, err);
    if (st == SV_OK && !(c->catalog = svc_catalog_create()))
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    if (st == SV_OK)
        st = svc_nats_connect(&c->cfg.nats, &c->nats, err);
    /* NATS may come up after us (a cluster starting at once): wait. */
    double until = sv_now_seconds() + wait_seconds;
    while (st == SV_OK) {
        st = open_stream(c, "catalog", NULL, 1, &c->catalog_log, err);
        if (st != SV_ERR_IO || sv_now_seconds() > until)
            break;
        fprintf(stderr, "slimvecd: cluster: waiting for NATS: %s\n", err->message);
        sleep(1);
        st = SV_OK;
    }
    /* The whole catalog before anything opens: it says what exists. */
    catalog_visit_ctx v = {c, 0};
    while (st == SV_OK) {
        uint64_t end = sv_log_last(c->catalog_log), at = svc_catalog_applied(c->catalog);
        if (at >= end)
            break;
        uint64_t got = at;
        st = sv_log_read(c->catalog_log, at, 1000, catalog_visit, &v, &got, err);
        if (st == SV_ERR_IO && sv_now_seconds() < until) {
            sleep(1);
            st = SV_OK;
        }
    }
    if (st != SV_OK) {
        svc_cluster_free(c);
        return st;
    }
    c->follow = (svd_registry_follow){follow_open_log, c, {c->cfg.shards, c->cfg.shard}};
    *out = c;
    return sv_ok(err);
}

static void wake_server(void *ctx)
{
    svc_cluster *c = ctx;
    if (c->wake)
        c->wake(c->wake_ctx);
}

const svd_registry_follow *svc_cluster_follow(svc_cluster *c)
{
    return &c->follow;
}

sv_status svc_cluster_start(svc_cluster *c, svd_app *app, void (*wake)(void *ctx), void *wake_ctx, sv_error *err)
{
    c->app = app;
    c->wake = wake;
    c->wake_ctx = wake_ctx;
    if (!(c->fanout = svc_fanout_create(wake_server, c, c->cfg.hedge_seconds)))
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory starting the cluster's calls");
    reconcile(c);
    /* From here a stream that cannot be opened is tried again at the next
     * reconcile, not waited for: the applier serves every collection. */
    c->open_wait = 2;
    if (pthread_create(&c->thread, NULL, applier, c) != 0)
        return sv_fail(err, SV_ERR_RESOURCE, "cannot start the applier thread: %s", strerror(errno));
    c->running = 1;
    return sv_ok(err);
}

void svc_cluster_stop(svc_cluster *c)
{
    if (!c || !c->running)
        return;
    atomic_store(&c->stop, 1);
    pthread_join(c->thread, NULL);
    c->running = 0;
}

void svc_cluster_free(svc_cluster *c)
{
    if (!c)
        return;
    svc_cluster_stop(c);
    svc_fanout_free(c->fanout);
    for (size_t i = 0; i < c->n_logs; i++)
        sv_log_close(c->logs[i].log);
    free(c->logs);
    sv_log_close(c->catalog_log);
    svc_catalog_free(c->catalog);
    for (uint32_t s = 0; s < SVC_SHARDS_MAX; s++)
        for (int k = 0; k < c->peers[s].n; k++)
            grpc_channel_destroy(c->peers[s].ch[k]);
    svc_nats_free(c->nats);
    for (size_t i = 0; i < sizeof c->strings / sizeof c->strings[0]; i++)
        free(c->strings[i]);
    free(c->sets_buf);
    pthread_mutex_destroy(&c->logs_mu);
    pthread_mutex_destroy(&c->stats_mu);
    free(c);
}

const svc_cluster_config *svc_cluster_config_of(svc_cluster *c)
{
    return &c->cfg;
}

svc_fanout *svc_cluster_fanout(svc_cluster *c)
{
    return c->fanout;
}

int svc_cluster_catalog_behind(svc_cluster *c)
{
    return svc_catalog_applied(c->catalog) < sv_log_last(c->catalog_log);
}

svc_catalog *svc_cluster_catalog(svc_cluster *c)
{
    return c->catalog;
}

int svc_cluster_targets(svc_cluster *c, uint32_t shard, grpc_channel **out)
{
    peer_set *ps = &c->peers[shard];
    int n = ps->n, k = 0;
    unsigned start = atomic_fetch_add(&c->rr[shard], 1);
    /* Healthy-looking channels first (rotating), failing ones last. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            grpc_channel *ch = ps->ch[(start + (unsigned)i) % (unsigned)n];
            int failing = grpc_channel_check_connectivity_state(ch, 1) == GRPC_CHANNEL_TRANSIENT_FAILURE;
            if (failing == pass)
                out[k++] = ch;
        }
    return k;
}

void svc_cluster_delete_streams(svc_cluster *c, uint64_t incarnation)
{
    for (uint32_t s = 0; s < c->cfg.shards; s++) {
        char stream[64];
        stream_name(incarnation, s, stream, sizeof stream);
        sv_error err;
        svc_natslog_delete(c->nats, stream, &err);
    }
}

void svc_cluster_note_append(svc_cluster *c, int ok, double seconds)
{
    pthread_mutex_lock(&c->stats_mu);
    if (ok) {
        c->stats.appends++;
        c->stats.append_seconds += seconds;
    } else {
        c->stats.append_failures++;
    }
    pthread_mutex_unlock(&c->stats_mu);
}

void svc_cluster_note_fanout(svc_cluster *c, uint32_t shard, double seconds)
{
    if (shard >= SVC_SHARDS_MAX)
        return;
    pthread_mutex_lock(&c->stats_mu);
    c->stats.fanout_parts[shard]++;
    c->stats.fanout_seconds[shard] += seconds;
    pthread_mutex_unlock(&c->stats_mu);
}

void svc_cluster_metrics(void *ctx, svd_text *t)
{
    svc_cluster *c = ctx;
    svc_cluster_stats s;
    svc_cluster_get_stats(c, &s);
    svd_text_put(t,
         "# HELP slimvec_cluster_shard This pod's shard and replica set (cluster mode).\n"
         "# TYPE slimvec_cluster_shard gauge\nslimvec_cluster_shard{shard=\"%u\",shards=\"%u\",replica_set=\"%s\"} 1\n",
         c->cfg.shard, c->cfg.shards, c->cfg.replica_set);
    /* Per collection: where this replica is in its shard's stream. */
    svd_coll **colls = NULL;
    size_t m = c->app ? svd_registry_list(c->app->registry, &colls) : 0;
    svd_text_put(t, "# HELP slimvec_cluster_applied_lsn The last record of the shard's stream this replica applied.\n"
                         "# TYPE slimvec_cluster_applied_lsn gauge\n");
    for (size_t i = 0; i < m; i++)
        svd_text_put(t, "slimvec_cluster_applied_lsn{collection=\"%s\",shard=\"%u\"} %llu\n", colls[i]->name,
             c->cfg.shard, (unsigned long long)sv_durable_applied(colls[i]->dur));
    svd_text_put(t, "# HELP slimvec_cluster_lag_records Records in the shard's stream this replica has not applied yet.\n"
                         "# TYPE slimvec_cluster_lag_records gauge\n");
    for (size_t i = 0; i < m; i++) {
        uint64_t last = sv_durable_log_last(colls[i]->dur), applied = sv_durable_applied(colls[i]->dur);
        svd_text_put(t, "slimvec_cluster_lag_records{collection=\"%s\",shard=\"%u\"} %llu\n", colls[i]->name,
             c->cfg.shard, (unsigned long long)(last > applied ? last - applied : 0));
    }
    if (c->app)
        svd_registry_put_list(c->app->registry, colls, m);
    svd_text_put(t,
         "# HELP slimvec_cluster_records_applied_total Stream records this pod applied (all collections).\n"
         "# TYPE slimvec_cluster_records_applied_total counter\nslimvec_cluster_records_applied_total %llu\n"
         "# HELP slimvec_cluster_records_refused_total Records refused by every replica (a duplicate id, an unknown id to delete).\n"
         "# TYPE slimvec_cluster_records_refused_total counter\nslimvec_cluster_records_refused_total %llu\n"
         "# HELP slimvec_cluster_records_duplicate_total Records sent twice that the log let through, applied once.\n"
         "# TYPE slimvec_cluster_records_duplicate_total counter\nslimvec_cluster_records_duplicate_total %llu\n"
         "# HELP slimvec_cluster_apply_errors_total Passes that could not read or apply a stream (retried).\n"
         "# TYPE slimvec_cluster_apply_errors_total counter\nslimvec_cluster_apply_errors_total %llu\n"
         "# HELP slimvec_cluster_appends_total Records this pod appended to the logs, acknowledged by their quorum.\n"
         "# TYPE slimvec_cluster_appends_total counter\nslimvec_cluster_appends_total %llu\n"
         "# HELP slimvec_cluster_append_failures_total Appends the log did not acknowledge (answered UNAVAILABLE).\n"
         "# TYPE slimvec_cluster_append_failures_total counter\nslimvec_cluster_append_failures_total %llu\n"
         "# HELP slimvec_cluster_append_seconds_total Time appends waited for the log's acknowledgement (publish latency).\n"
         "# TYPE slimvec_cluster_append_seconds_total counter\nslimvec_cluster_append_seconds_total %.6f\n",
         (unsigned long long)s.applied_records, (unsigned long long)s.refused_records,
         (unsigned long long)s.duplicate_records, (unsigned long long)s.apply_errors, (unsigned long long)s.appends,
         (unsigned long long)s.append_failures, s.append_seconds);
    svd_text_put(t, "# HELP slimvec_cluster_fanout_seconds_total Time reads routed here waited for each shard's answer.\n"
                         "# TYPE slimvec_cluster_fanout_seconds_total counter\n");
    for (uint32_t i = 0; i < c->cfg.shards; i++)
        svd_text_put(t, "slimvec_cluster_fanout_seconds_total{shard=\"%u\"} %.6f\n", i, s.fanout_seconds[i]);
    svd_text_put(t, "# HELP slimvec_cluster_fanout_answers_total Shard answers to reads routed here.\n"
                         "# TYPE slimvec_cluster_fanout_answers_total counter\n");
    for (uint32_t i = 0; i < c->cfg.shards; i++)
        svd_text_put(t, "slimvec_cluster_fanout_answers_total{shard=\"%u\"} %llu\n", i,
             (unsigned long long)s.fanout_parts[i]);
    svd_text_put(t,
         "# HELP slimvec_cluster_calls_total Calls to other pods (reads, outcomes), attempts included.\n"
         "# TYPE slimvec_cluster_calls_total counter\nslimvec_cluster_calls_total %llu\n"
         "# HELP slimvec_cluster_retries_total Calls moved to another replica after an error.\n"
         "# TYPE slimvec_cluster_retries_total counter\nslimvec_cluster_retries_total %llu\n"
         "# HELP slimvec_cluster_hedges_total Second calls started to another replica after the hedge delay.\n"
         "# TYPE slimvec_cluster_hedges_total counter\nslimvec_cluster_hedges_total %llu\n"
         "# HELP slimvec_cluster_hedge_wins_total Hedges that answered first.\n"
         "# TYPE slimvec_cluster_hedge_wins_total counter\nslimvec_cluster_hedge_wins_total %llu\n"
         "# HELP slimvec_cluster_call_failures_total Shard parts that failed on every replica.\n"
         "# TYPE slimvec_cluster_call_failures_total counter\nslimvec_cluster_call_failures_total %llu\n",
         (unsigned long long)s.fanout.calls, (unsigned long long)s.fanout.retries, (unsigned long long)s.fanout.hedges,
         (unsigned long long)s.fanout.hedge_wins, (unsigned long long)s.fanout.failures);
}

void svc_cluster_get_stats(svc_cluster *c, svc_cluster_stats *out)
{
    pthread_mutex_lock(&c->stats_mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->stats_mu);
    if (c->fanout)
        svc_fanout_get_stats(c->fanout, &out->fanout);
}
