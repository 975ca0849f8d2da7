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
#include "transfer.h"

#define OUTCOMES 512           /* records whose outcome each collection keeps */
#define RECONCILE_SECONDS 1.0  /* the registry is checked against the catalog this often */
#define READY_CHECK_SECONDS 0.2 /* a catching-up replica looks at its lag this often */
#define BACKOFF_SLOTS 64
#define LEAVE_GRACE_SECONDS 5.0 /* a replica leaving a shard keeps its copies this long (calls in flight) */
#define ETCD_BACKOFF_SECONDS 1.0 /* no forced read this long after one failed */
#define FORCED_READ_SECONDS 0.05 /* routers make etcd be read again at most this often */
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

typedef struct peer {
    char address[SVC_ADDRESS_MAX + 1];
    grpc_channel *ch;
} peer;

/*
 * Locks: logs_mu (the writers' log cache), peers_mu (the channels) and
 * stats_mu are leaves. The applier thread is the only one that applies
 * records and changes the registry's collections in cluster mode.
 */
struct svc_cluster {
    svc_cluster_config cfg;
    char *strings[8];            /* the config's strings, owned */
    svc_nats *nats;
    svc_meta *meta;
    int shard;                   /* the shard this pod follows (the map's, acted on by the applier), -1: none */
    double leaving_since;        /* the applier saw this pod leaving its shard (0: not leaving) */
    struct {
        char name[65];
        double next, delay;
    } backoff[BACKOFF_SLOTS];    /* (applier) collections whose peer snapshot failed: when to try again */
    atomic_int meta_changed;     /* etcd said something changed: reconcile */
    pthread_mutex_t refresh_mu;
    double refreshed_at;         /* refresh_mu: the start of the last read routers forced, */
    double done_start;           /* ... the start of the last one that succeeded, */
    double failed_at;            /* ... when the last one failed, */
    int reading;                 /* ... and whether one is under way */
    svd_registry_follow follow;
    pthread_mutex_t peers_mu;
    peer *peers;                 /* one channel per address ever routed to */
    size_t n_peers, cap_peers;
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

/* A replica set's name: [A-Za-z0-9_-], 1..32 bytes (the map shows it;
 * Kubernetes spreads the sets over nodes). */
static sv_status check_set(const char *set, sv_error *err)
{
    if (!set || !*set)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "cluster mode needs --replica-set");
    size_t n = 0;
    for (const char *p = set; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "replica set \"%.40s\": use [A-Za-z0-9_-]", set);
    return n <= 32 ? SV_OK : sv_fail(err, SV_ERR_INVALID_ARGUMENT, "replica set \"%.40s\": at most 32 bytes", set);
}

/* ---- logs ------------------------------------------------------------------------------- */

static void stream_name(uint64_t incarnation, uint32_t shard, char *out, size_t cap)
{
    snprintf(out, cap, "c%" PRIu64 "_s%u", incarnation, shard);
}

/* The natslog's mark hook: this pod's snapshot mark, in etcd (meta.h),
 * and the lowest of every replica of the stream's shard. */
static sv_status mark_snapshot(void *ctx, const char *name, uint64_t lsn, uint64_t *lowest, sv_error *err)
{
    svc_cluster *c = ctx;
    unsigned long long inc;
    unsigned shard;
    char extra;
    if (sscanf(name, "c%llu_s%u%c", &inc, &shard, &extra) != 2)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "stream %s is not a shard's", name);
    return svc_meta_mark(c->meta, name, shard, lsn, lowest, err);
}

/* follower = 1: this pod's own copy follows it (its snapshots mark it). */
static sv_status open_stream(svc_cluster *c, const char *name, int follower, int create, sv_log **out,
                             sv_error *err)
{
    svc_natslog_config nc = {.name = name,
                             .create = create,
                             .replicas = c->cfg.stream_replicas,
                             .keep_before = SV_FOLLOW_WINDOW,
                             .mark = follower ? mark_snapshot : NULL,
                             .mark_ctx = c};
    return svc_natslog_open(c->nats, &nc, out, err);
}

/* The registry's hook: the stream of this pod's shard of the collection. */
static sv_status follow_open_log(void *ctx, const char *name, uint64_t *incarnation, sv_log **log, sv_error *err)
{
    svc_cluster *c = ctx;
    svc_catalog_entry e;
    if (!svc_catalog_find(svc_meta_catalog(c->meta), name, &e))
        return sv_fail(err, SV_ERR_NOT_FOUND, "the cluster has no collection \"%s\"", name);
    if (c->shard < 0)
        return sv_fail(err, SV_ERR_NOT_FOUND, "this pod serves no shard");
    *incarnation = e.incarnation;
    char stream[64];
    stream_name(e.incarnation, (uint32_t)c->shard, stream, sizeof stream);
    /* Right after NATS restarts a stream has no leader for a few seconds:
     * a pod starting then waits for it rather than fail. */
    double until = sv_now_seconds() + c->open_wait;
    for (;;) {
        sv_status st = open_stream(c, stream, 1, 1, log, err);
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
    sv_status st = open_stream(c, stream, 0, create, &log, err);
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

/* The metadata a call to a replica of this pod's shard carries, with this
 * pod's own token (--peer-token): background calls have no caller. */
static size_t own_md(svc_cluster *c, grpc_metadata *md, char *where, size_t cap, char *bearer, size_t bcap)
{
    size_t n = 0;
    snprintf(where, cap, "%d@%llu", c->shard, (unsigned long long)svc_meta_epoch(c->meta));
    md[n].key = grpc_slice_from_static_string("slimvec-shard");
    md[n++].value = grpc_slice_from_static_string(where);
    if (c->cfg.peer.token && *c->cfg.peer.token) {
        snprintf(bearer, bcap, "Bearer %s", c->cfg.peer.token);
        md[n].key = grpc_slice_from_static_string("authorization");
        md[n++].value = grpc_slice_from_static_string(bearer);
    }
    return n;
}

/*
 * This pod's copy of a collection from a ready replica's snapshot (then
 * the stream after it): how a replica that joins a shard starts, and how a
 * copy the stream no longer covers (purged past it) comes back. SV_ERR_NOT_FOUND
 * when the shard has no other ready replica (a new shard: it starts empty).
 */
static sv_status bootstrap(svc_cluster *c, const svc_catalog_entry *e, sv_error *err)
{
    svc_meta_replica reps[SVC_FANOUT_TARGETS];
    uint64_t epoch;
    int n = svc_meta_targets(c->meta, (uint32_t)c->shard, reps, SVC_FANOUT_TARGETS, &epoch);
    sv_status st = sv_fail(err, SV_ERR_NOT_FOUND, "shard %d has no other ready replica with a copy", c->shard);
    int tried = 0;
    char path[4200], opath[4200];
    snprintf(path, sizeof path, "%s/fetch-%s.tmp", svd_registry_data_dir(c->app->registry), e->name);
    snprintf(opath, sizeof opath, "%s/fetch-%s.originals.tmp", svd_registry_data_dir(c->app->registry), e->name);
    int with_originals = e->params.originals == SV_ORIGINALS_DISK;
    for (int i = 0; i < n && st != SV_OK && !atomic_load(&c->stop); i++) {
        if (!strcmp(reps[i].pod, c->cfg.meta.pod))
            continue;
        grpc_channel *ch = svc_cluster_channel(c, reps[i].address);
        if (!ch)
            continue;
        grpc_metadata md[2];
        char where[48], bearer[600];
        size_t n_md = own_md(c, md, where, sizeof where, bearer, sizeof bearer);
        svc_fetched f;
        sv_error ferr;
        st = svc_transfer_fetch(ch, md, n_md, e->name, path, with_originals ? opath : NULL, &c->stop, &f, &ferr);
        tried += st != SV_ERR_NOT_FOUND;
        if (st == SV_OK && f.incarnation != e->incarnation)
            st = sv_fail(&ferr, SV_ERR_NOT_FOUND, "the peer holds incarnation %llu, not %llu",
                         (unsigned long long)f.incarnation, (unsigned long long)e->incarnation);
        if (st == SV_OK) {
            sv_params p = e->params;
            p.threads = c->app->limits.build_threads;
            st = svd_registry_adopt(c->app->registry, e->name, &p, e->incarnation, path,
                                    f.originals_bytes ? opath : NULL, f.lsn, &ferr);
            if (st == SV_OK) {
                fprintf(stderr,
                        "slimvecd: cluster: \"%s\" from %s's snapshot: %llu bytes (originals %llu bytes) at LSN "
                        "%llu in %.2f s; the stream follows\n",
                        e->name, reps[i].pod, (unsigned long long)f.bytes, (unsigned long long)f.originals_bytes,
                        (unsigned long long)f.lsn, f.seconds);
                pthread_mutex_lock(&c->stats_mu);
                c->stats.snapshots_fetched++;
                c->stats.snapshot_bytes_fetched += f.bytes;
                pthread_mutex_unlock(&c->stats_mu);
            }
        }
        unlink(path);
        unlink(opath);
        if (st != SV_OK && st != SV_ERR_NOT_FOUND) {
            fprintf(stderr, "slimvecd: cluster: \"%s\" from %s's snapshot: %s\n", e->name, reps[i].pod,
                    ferr.message);
            *err = ferr;
        }
    }
    /* Only peers without a copy: as if there were none. */
    return st != SV_OK && !tried ? sv_fail(err, SV_ERR_NOT_FOUND, "no ready replica of shard %d has a copy",
                                           c->shard)
                                 : st;
}

/* 1 when the shard's stream still holds every record from its start: a
 * copy can be built from it alone. A stream not made yet (the collection
 * was created a moment ago: the router makes the streams after the
 * catalog entry) or out of reach counts as whole: had it been purged, the
 * follower finds out when it reads and a peer's snapshot replaces it. */
static int stream_whole(svc_cluster *c, const svc_catalog_entry *e)
{
    sv_log *log = NULL;
    sv_error err;
    char why[160];
    if (svc_cluster_shard_log(c, e->incarnation, (uint32_t)c->shard, 0, &log, &err) != SV_OK)
        return 1;
    return sv_log_covers(log, 0, why, sizeof why);
}

/* After a failed fetch of a peer's snapshot the next try of that
 * collection waits (1 s doubling to 60 s): each try makes a peer write a
 * snapshot. */
static int backoff_due(svc_cluster *c, const char *name)
{
    double now = sv_now_seconds();
    for (int i = 0; i < BACKOFF_SLOTS; i++)
        if (!strcmp(c->backoff[i].name, name))
            return now >= c->backoff[i].next;
    return 1;
}

static void backoff_note(svc_cluster *c, const char *name, int failed)
{
    int at = -1, oldest = 0;
    for (int i = 0; i < BACKOFF_SLOTS && at < 0; i++)
        if (!strcmp(c->backoff[i].name, name))
            at = i;
    if (!failed) {
        if (at >= 0)
            memset(&c->backoff[at], 0, sizeof c->backoff[at]);
        return;
    }
    if (at < 0) {
        for (int i = 1; i < BACKOFF_SLOTS; i++)
            if (c->backoff[i].next < c->backoff[oldest].next)
                oldest = i;
        at = oldest;
        memset(&c->backoff[at], 0, sizeof c->backoff[at]);
        snprintf(c->backoff[at].name, sizeof c->backoff[at].name, "%s", name);
    }
    double d = c->backoff[at].delay ? c->backoff[at].delay * 2 : 1;
    c->backoff[at].delay = d > 60 ? 60 : d;
    c->backoff[at].next = sv_now_seconds() + c->backoff[at].delay;
}

static void create_local(svc_cluster *c, const svc_catalog_entry *e)
{
    if (c->shard < 0)
        return; /* no shard: nothing to hold */
    svd_coll *have = svd_registry_get(c->app->registry, e->name);
    if (have) {
        uint64_t inc = have->incarnation;
        svd_registry_put(c->app->registry, have);
        if (inc == e->incarnation)
            return;
        sv_error err;
        svd_registry_drop(c->app->registry, e->name, &err); /* a stale copy */
    }
    sv_error err;
    int state;
    /* A replica joining a shard loads a peer's snapshot (then the tail);
     * so does one whose copy the stream alone cannot rebuild (purged). A
     * ready replica builds a new collection from the stream. */
    int catching = svc_meta_my_shard(c->meta, &state) == c->shard && state == SVC_REPLICA_CATCHING_UP;
    int whole = stream_whole(c, e);
    if (catching || !whole) {
        if (!backoff_due(c, e->name))
            return;
        sv_status st = bootstrap(c, e, &err);
        backoff_note(c, e->name, st != SV_OK && st != SV_ERR_NOT_FOUND);
        if (st == SV_OK || st != SV_ERR_NOT_FOUND || !whole)
            return; /* adopted; or tried again at the next reconcile */
    }
    sv_params p = e->params;
    p.threads = c->app->limits.build_threads;
    svd_coll *coll = NULL;
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
    if (c->shard < 0)
        return;
    char stream[64];
    stream_name(e->incarnation, (uint32_t)c->shard, stream, sizeof stream);
    sv_error err;
    svc_natslog_delete(c->nats, stream, &err);
}

/* The registry in line with the catalog: what it lacks is created, what it
 * no longer has (or has again under a new incarnation) is dropped. */
static void reconcile(svc_cluster *c)
{
    if (c->shard < 0 || c->leaving_since)
        return; /* no copies to keep in line (leaving: follow_map drops them) */
    svc_catalog_entry *all = NULL;
    size_t n = svc_catalog_list(svc_meta_catalog(c->meta), &all);
    /* A collection dropped in etcd: dropped here (and this shard's stream). */
    svd_coll **have = NULL;
    size_t h = svd_registry_list(c->app->registry, &have);
    for (size_t i = 0; i < h; i++) {
        int found = 0;
        for (size_t k = 0; k < n && !found; k++)
            found = !strcmp(all[k].name, have[i]->name) && all[k].incarnation == have[i]->incarnation;
        if (!found) {
            svc_catalog_entry gone = {0};
            snprintf(gone.name, sizeof gone.name, "%s", have[i]->name);
            gone.incarnation = have[i]->incarnation;
            drop_local(c, &gone);
        }
    }
    svd_registry_put_list(c->app->registry, have, h);
    for (size_t i = 0; i < n; i++)
        create_local(c, &all[i]);
    free(all);
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
        if (st == SV_ERR_BUSY) {
            svd_maint_kick(c->app->maint); /* the buffer is full: a flush makes room */
        } else if (st == SV_ERR_CORRUPT && strstr(err.message, "purged")) {
            /* The stream was purged past what this copy applied (it lagged
             * behind every other replica set's snapshots): this copy goes,
             * and the next reconcile loads a peer's newer snapshot. */
            fprintf(stderr, "slimvecd: cluster: \"%s\": %s; a peer's snapshot replaces this copy\n",
                    colls[i]->name, err.message);
            sv_error derr;
            svd_registry_drop(c->app->registry, colls[i]->name, &derr);
            atomic_store(&c->meta_changed, 1);
        } else if (st != SV_OK && st != SV_ERR_NOT_FOUND) {
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

/* A catching-up replica that applied (nearly) everything turns itself
 * ready: routers start reading from it. */
static void maybe_ready(svc_cluster *c)
{
    int state;
    if (c->shard < 0 || svc_meta_my_shard(c->meta, &state) != c->shard || state != SVC_REPLICA_CATCHING_UP)
        return;
    if (!svc_nats_connected(c->nats))
        return; /* the streams' ends would be the last ones seen, maybe long ago */
    svc_catalog_entry *all = NULL;
    size_t n = svc_catalog_list(svc_meta_catalog(c->meta), &all);
    int behind = 0;
    for (size_t i = 0; i < n && !behind; i++) {
        svd_coll *coll = svd_registry_get(c->app->registry, all[i].name);
        if (!coll || coll->incarnation != all[i].incarnation) {
            behind = 1; /* not opened here yet */
        } else {
            uint64_t last = sv_durable_log_last(coll->dur), applied = sv_durable_applied(coll->dur);
            behind = last > applied + c->cfg.ready_lag;
        }
        svd_registry_put(c->app->registry, coll);
    }
    free(all);
    if (behind)
        return;
    sv_error err;
    if (svc_meta_set_state(c->meta, SVC_REPLICA_CATCHING_UP, SVC_REPLICA_READY, &err) == SV_OK)
        fprintf(stderr, "slimvecd: cluster: caught up with shard %d: ready (epoch %llu)\n", c->shard,
                (unsigned long long)svc_meta_epoch(c->meta));
    else
        fprintf(stderr, "slimvecd: cluster: turning ready: %s (tried again)\n", err.message);
}

/*
 * This pod's place in the map, acted on: a shard given to a pod that had
 * none (a move, an idle pod): follow it, catching up; a shard this pod is
 * leaving (moved away, drained): stop being read (routers no longer ask
 * it, it refuses those with an old map), and after LEAVE_GRACE_SECONDS
 * drop its copies and leave the map.
 */
static void follow_map(svc_cluster *c)
{
    int state;
    int shard = svc_meta_my_shard(c->meta, &state);
    double now = sv_now_seconds();
    /* Copies go only when the map says so: this pod leaving its shard, or
     * moved to another. A map that does not name this pod at all (deleted,
     * or an operator's edit by hand) drops nothing: this pod only stops
     * serving (its checks refuse) and says so. */
    int leaving = c->shard >= 0 && ((shard == c->shard && state == SVC_REPLICA_LEAVING) ||
                                    (shard >= 0 && shard != c->shard));
    if (c->shard >= 0 && shard < 0) {
        static double last_said;
        if (now - last_said > 30) {
            fprintf(stderr, "slimvecd: cluster: the shard map does not name this pod (%s) any more; it keeps its "
                            "copies of shard %d and serves no reads until the map names it\n",
                    c->cfg.meta.pod, c->shard);
            last_said = now;
        }
    }
    if (!leaving && c->leaving_since) {
        c->leaving_since = 0; /* the map changed its mind (a drain undone): stay */
        fprintf(stderr, "slimvecd: cluster: staying in shard %d\n", c->shard);
    }
    if (leaving) {
        if (!c->leaving_since) {
            c->leaving_since = now;
            fprintf(stderr, "slimvecd: cluster: leaving shard %d (epoch %llu); its copies go in %.0f s\n", c->shard,
                    (unsigned long long)svc_meta_epoch(c->meta), LEAVE_GRACE_SECONDS);
        }
        if (now - c->leaving_since < LEAVE_GRACE_SECONDS)
            return;
        svd_coll **colls = NULL;
        size_t m = svd_registry_list(c->app->registry, &colls);
        for (size_t i = 0; i < m; i++) {
            sv_error err; /* the copy only: the shard's stream stays for its other replicas */
            if (svd_registry_drop(c->app->registry, colls[i]->name, &err) != SV_OK)
                fprintf(stderr, "slimvecd: cluster: dropping \"%s\" here: %s\n", colls[i]->name, err.message);
        }
        svd_registry_put_list(c->app->registry, colls, m);
        sv_error err;
        if (shard == c->shard && state == SVC_REPLICA_LEAVING && svc_meta_leave(c->meta, &err) != SV_OK) {
            fprintf(stderr, "slimvecd: cluster: leaving the shard map: %s (tried again)\n", err.message);
            return;
        }
        if (svc_meta_forget_my_marks(c->meta, &err) != SV_OK) /* they would hold the purge back */
            fprintf(stderr, "slimvecd: cluster: removing this pod's snapshot marks: %s\n", err.message);
        fprintf(stderr, "slimvecd: cluster: left shard %d\n", c->shard);
        c->shard = -1;
        c->leaving_since = 0;
        return;
    }
    if (c->shard < 0 && shard >= 0 && state != SVC_REPLICA_LEAVING) {
        c->shard = shard;
        c->follow.ids.shard = (uint32_t)shard;
        svd_registry_set_follow_shard(c->app->registry, (uint32_t)shard);
        fprintf(stderr, "slimvecd: cluster: joining shard %d (epoch %llu), catching up\n", shard,
                (unsigned long long)svc_meta_epoch(c->meta));
        atomic_store(&c->meta_changed, 1);
    }
}

static void *applier(void *arg)
{
    svc_cluster *c = arg;
    double reconciled = 0, readied = 0;
    while (!atomic_load(&c->stop)) {
        int errors = 0;
        double now = sv_now_seconds();
        follow_map(c);
        if (atomic_exchange(&c->meta_changed, 0) || now - reconciled > RECONCILE_SECONDS) {
            reconcile(c);
            reconciled = now;
        }
        uint64_t n = apply_collections(c, &errors);
        if (now - readied > READY_CHECK_SECONDS) {
            maybe_ready(c);
            readied = now;
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

static void meta_changed(void *ctx)
{
    svc_cluster *c = ctx;
    atomic_store(&c->meta_changed, 1);
}

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
    if (c->cfg.stream_replicas < 1)
        c->cfg.stream_replicas = 3;
    if (c->cfg.outcome_seconds <= 0)
        c->cfg.outcome_seconds = 5;
    c->shard = -1;
    pthread_mutex_init(&c->logs_mu, NULL);
    pthread_mutex_init(&c->peers_mu, NULL);
    pthread_mutex_init(&c->refresh_mu, NULL);
    pthread_mutex_init(&c->stats_mu, NULL);
    c->open_wait = wait_seconds;
    sv_status st = SV_OK;
    if (cfg->shards < 1 || cfg->shards > SVC_SHARDS_MAX || cfg->shard >= cfg->shards)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "shard %u of %u shards (1..%d shards)", cfg->shard, cfg->shards,
                     SVC_SHARDS_MAX);
    if (st == SV_OK)
        st = check_set(c->cfg.replica_set, err);
    if (st == SV_OK) {
        svc_meta_config mc = cfg->meta;
        mc.shards = cfg->shards;
        mc.shard = cfg->shard;
        mc.replica_set = c->cfg.replica_set;
        st = svc_meta_create(&mc, wait_seconds, meta_changed, c, &c->meta, err);
    }
    if (st == SV_OK) {
        int state;
        c->shard = svc_meta_my_shard(c->meta, &state);
        st = svc_nats_connect(&c->cfg.nats, &c->nats, err);
    }
    if (st != SV_OK) {
        svc_cluster_free(c);
        return st;
    }
    c->follow = (svd_registry_follow){follow_open_log, c, {c->cfg.shards, c->shard < 0 ? 0 : (uint32_t)c->shard}};
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
    svc_meta_free(c->meta);
    for (size_t i = 0; i < c->n_peers; i++)
        grpc_channel_destroy(c->peers[i].ch);
    free(c->peers);
    svc_nats_free(c->nats);
    for (size_t i = 0; i < sizeof c->strings / sizeof c->strings[0]; i++)
        free(c->strings[i]);
    pthread_mutex_destroy(&c->logs_mu);
    pthread_mutex_destroy(&c->peers_mu);
    pthread_mutex_destroy(&c->refresh_mu);
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

/*
 * Routers make the metadata be read again (a name unknown here, a
 * replica's refusal): one read at a time and at most one every
 * FORCED_READ_SECONDS whatever the callers' rate; none for
 * ETCD_BACKOFF_SECONDS after one failed (etcd without its quorum answers
 * only at its timeout: no call waits for that). Returns 0 when a read that
 * began after call_start is done, or etcd is failing (what this pod has is
 * all it knows); 1 when a read was made now or comes in a moment.
 */
static int forced_read(svc_cluster *c, double call_start)
{
    pthread_mutex_lock(&c->refresh_mu);
    double now = sv_now_seconds();
    if (c->done_start >= call_start || now - c->failed_at < ETCD_BACKOFF_SECONDS) {
        pthread_mutex_unlock(&c->refresh_mu);
        return 0;
    }
    if (c->reading || now - c->refreshed_at < FORCED_READ_SECONDS) {
        pthread_mutex_unlock(&c->refresh_mu);
        svc_meta_poke(c->meta);
        return 1;
    }
    c->refreshed_at = now;
    c->reading = 1;
    pthread_mutex_unlock(&c->refresh_mu);
    sv_error err;
    sv_status st = svc_meta_refresh(c->meta, 1, &err);
    pthread_mutex_lock(&c->refresh_mu);
    c->reading = 0;
    if (st == SV_OK)
        c->done_start = now;
    else
        c->failed_at = sv_now_seconds();
    pthread_mutex_unlock(&c->refresh_mu);
    return 1;
}

int svc_cluster_catalog_behind(svc_cluster *c, double call_start)
{
    return forced_read(c, call_start);
}

void svc_cluster_read_map(svc_cluster *c)
{
    forced_read(c, sv_now_seconds());
}

svc_catalog *svc_cluster_catalog(svc_cluster *c)
{
    return svc_meta_catalog(c->meta);
}

svc_meta *svc_cluster_meta(svc_cluster *c)
{
    return c->meta;
}

int svc_cluster_shard(svc_cluster *c)
{
    return c->shard;
}

void svc_cluster_map_stale(svc_cluster *c)
{
    svc_meta_poke(c->meta);
}

/* The channel to address (made once, kept: the pods of a cluster are few). */
grpc_channel *svc_cluster_channel(svc_cluster *c, const char *address)
{
    pthread_mutex_lock(&c->peers_mu);
    grpc_channel *ch = NULL;
    for (size_t i = 0; i < c->n_peers && !ch; i++)
        if (!strcmp(c->peers[i].address, address))
            ch = c->peers[i].ch;
    if (!ch && c->n_peers == c->cap_peers) {
        size_t cap = c->cap_peers ? c->cap_peers * 2 : 16;
        peer *t = realloc(c->peers, cap * sizeof *t);
        if (t) {
            c->peers = t;
            c->cap_peers = cap;
        }
    }
    if (!ch && c->n_peers < c->cap_peers) {
        char why[256] = "";
        /* Failing fast on a dead pod is what lets the router move on
         * to its sibling: no waiting for a connection to come up. */
        grpc_arg args[2];
        svd_client_fast_reconnect(args);
        if ((ch = svd_client_channel(address, &c->cfg.peer, args, 2, why, sizeof why))) {
            snprintf(c->peers[c->n_peers].address, sizeof c->peers[c->n_peers].address, "%s", address);
            c->peers[c->n_peers++].ch = ch;
        } else {
            fprintf(stderr, "slimvecd: cluster: a channel to %s: %s\n", address, why);
        }
    }
    pthread_mutex_unlock(&c->peers_mu);
    return ch;
}

int svc_cluster_targets(svc_cluster *c, uint32_t shard, grpc_channel **out, char (*pods)[SVC_POD_NAME_MAX + 1],
                        uint64_t *epoch)
{
    svc_meta_replica reps[SVC_FANOUT_TARGETS];
    int n = svc_meta_targets(c->meta, shard, reps, SVC_FANOUT_TARGETS, epoch), k = 0;
    grpc_channel *chs[SVC_FANOUT_TARGETS];
    int rep_of[SVC_FANOUT_TARGETS];
    for (int i = 0; i < n; i++)
        if ((chs[k] = svc_cluster_channel(c, reps[i].address)))
            rep_of[k++] = i;
    /* Healthy-looking channels first, failing ones last. */
    int m = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < k; i++) {
            int failing = grpc_channel_check_connectivity_state(chs[i], 1) == GRPC_CHANNEL_TRANSIENT_FAILURE;
            if (failing != pass)
                continue;
            if (pods)
                memcpy(pods[m], reps[rep_of[i]].pod, sizeof pods[m]);
            out[m++] = chs[i];
        }
    return m;
}

int svc_cluster_check_shard(svc_cluster *c, const grpc_slice *md, uint32_t *shard, char *why, size_t cap)
{
    char buf[64];
    size_t len = md ? GRPC_SLICE_LENGTH(*md) : 0;
    unsigned long long epoch = 0;
    unsigned s = 0;
    char extra;
    if (!md || len >= sizeof buf) {
        snprintf(why, cap, "a call between pods without its shard (metadata slimvec-shard)");
        return 0;
    }
    memcpy(buf, GRPC_SLICE_START_PTR(*md), len);
    buf[len] = 0;
    if (sscanf(buf, "%u@%llu%c", &s, &epoch, &extra) != 2) {
        snprintf(why, cap, "metadata slimvec-shard \"%s\" is not <shard>@<epoch>", buf);
        return 0;
    }
    *shard = s;
    if (epoch > svc_meta_epoch(c->meta))
        forced_read(c, sv_now_seconds()); /* the caller saw a newer map than ours */
    if (svc_meta_serves(c->meta, s))
        return 1;
    int state;
    int mine = svc_meta_my_shard(c->meta, &state);
    snprintf(why, cap, "stale shard map: this pod is %s of shard %d, not a ready replica of shard %u (epoch %llu "
             "here, %llu at the router)", state == SVC_REPLICA_READY ? "a ready replica"
             : state == SVC_REPLICA_CATCHING_UP ? "catching up" : state == SVC_REPLICA_LEAVING ? "leaving" : "no replica",
             mine, s, (unsigned long long)svc_meta_epoch(c->meta), epoch);
    return 0;
}

void svc_cluster_delete_streams(svc_cluster *c, uint64_t incarnation)
{
    for (uint32_t s = 0; s < c->cfg.shards; s++) {
        char stream[64];
        stream_name(incarnation, s, stream, sizeof stream);
        sv_error err;
        svc_natslog_delete(c->nats, stream, &err);
        svc_meta_forget_marks(c->meta, stream, &err);
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

void svc_cluster_note_stale(svc_cluster *c)
{
    pthread_mutex_lock(&c->stats_mu);
    c->stats.stale_restarts++;
    pthread_mutex_unlock(&c->stats_mu);
}

void svc_cluster_saw_stale(svc_cluster *c, int n)
{
    pthread_mutex_lock(&c->stats_mu);
    c->stats.stale_refusals += (uint64_t)n;
    pthread_mutex_unlock(&c->stats_mu);
    forced_read(c, sv_now_seconds());
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
         "# HELP slimvec_cluster_shard This pod's shard (-1: none) and replica set (cluster mode).\n"
         "# TYPE slimvec_cluster_shard gauge\nslimvec_cluster_shard{shards=\"%u\",replica_set=\"%s\"} %d\n"
         "# HELP slimvec_cluster_map_epoch The epoch of the shard map this pod routes by.\n"
         "# TYPE slimvec_cluster_map_epoch gauge\nslimvec_cluster_map_epoch %llu\n"
         "# HELP slimvec_cluster_replica_ready 1 when this pod is a ready replica of its shard.\n"
         "# TYPE slimvec_cluster_replica_ready gauge\nslimvec_cluster_replica_ready %d\n",
         c->cfg.shards, c->cfg.replica_set, c->shard, (unsigned long long)svc_meta_epoch(c->meta),
         c->shard >= 0 && svc_meta_serves(c->meta, (uint32_t)c->shard));
    /* Per collection: where this replica is in its shard's stream. */
    svd_coll **colls = NULL;
    size_t m = c->app ? svd_registry_list(c->app->registry, &colls) : 0;
    svd_text_put(t, "# HELP slimvec_cluster_applied_lsn The last record of the shard's stream this replica applied.\n"
                         "# TYPE slimvec_cluster_applied_lsn gauge\n");
    for (size_t i = 0; i < m; i++)
        svd_text_put(t, "slimvec_cluster_applied_lsn{collection=\"%s\",shard=\"%d\"} %llu\n", colls[i]->name,
             c->shard, (unsigned long long)sv_durable_applied(colls[i]->dur));
    svd_text_put(t, "# HELP slimvec_cluster_lag_records Records in the shard's stream this replica has not applied yet.\n"
                         "# TYPE slimvec_cluster_lag_records gauge\n");
    for (size_t i = 0; i < m; i++) {
        uint64_t last = sv_durable_log_last(colls[i]->dur), applied = sv_durable_applied(colls[i]->dur);
        svd_text_put(t, "slimvec_cluster_lag_records{collection=\"%s\",shard=\"%d\"} %llu\n", colls[i]->name,
             c->shard, (unsigned long long)(last > applied ? last - applied : 0));
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
         "# TYPE slimvec_cluster_append_seconds_total counter\nslimvec_cluster_append_seconds_total %.6f\n"
         "# HELP slimvec_cluster_snapshots_fetched_total Peers' snapshots this pod loaded (joining a shard, or after a purge).\n"
         "# TYPE slimvec_cluster_snapshots_fetched_total counter\nslimvec_cluster_snapshots_fetched_total %llu\n"
         "# HELP slimvec_cluster_snapshot_fetched_bytes_total Bytes of those snapshots.\n"
         "# TYPE slimvec_cluster_snapshot_fetched_bytes_total counter\nslimvec_cluster_snapshot_fetched_bytes_total %llu\n"
         "# HELP slimvec_cluster_stale_map_restarts_total Reads routed here that a replica refused for a stale shard map; the map was read again and the read started over.\n"
         "# TYPE slimvec_cluster_stale_map_restarts_total counter\nslimvec_cluster_stale_map_restarts_total %llu\n"
         "# HELP slimvec_cluster_stale_map_refusals_total Calls of this router a replica refused for a stale shard map (retried elsewhere; the map is read again).\n"
         "# TYPE slimvec_cluster_stale_map_refusals_total counter\nslimvec_cluster_stale_map_refusals_total %llu\n",
         (unsigned long long)s.applied_records, (unsigned long long)s.refused_records,
         (unsigned long long)s.duplicate_records, (unsigned long long)s.apply_errors, (unsigned long long)s.appends,
         (unsigned long long)s.append_failures, s.append_seconds, (unsigned long long)s.snapshots_fetched,
         (unsigned long long)s.snapshot_bytes_fetched, (unsigned long long)s.stale_restarts,
         (unsigned long long)s.stale_refusals);
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
