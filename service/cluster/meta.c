/* The cluster's metadata in etcd (see meta.h). */
#include "meta.h"

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
#include "slimvec/v1/slimvec.pb-c.h"

#define SHARDS_MAX 256
#define REPLICAS_MAX 4096
#define READ_EVERY_SECONDS 1.0   /* the whole prefix is read this often even when the watch is quiet */
#define CAS_TRIES 50
#define IDLE_KEEP 256          /* idle pods past this many: the ones not live are forgotten */

typedef struct view {
    uint64_t epoch;
    uint32_t shards;
    int64_t map_mod;             /* the map key's mod revision (0: none) */
    svc_meta_replica *reps;
    size_t n_reps;
    svc_meta_name *idle;         /* pods that left a shard: they do not join one on their own */
    size_t n_idle;
    svc_meta_replica *pods;      /* live pods (address, replica set from PodInfo) */
    size_t n_pods;
    int64_t revision;            /* the etcd revision it was read at */
} view;

struct svc_meta {
    svc_meta_config cfg;
    char *strings[12];
    char prefix[128];
    char marks[160];             /* /slimvec-marks/<cluster>/: outside the prefix read every second */
    svc_etcd *etcd;
    svc_etcd_watch *watch;
    int64_t lease;
    double keepalive_at;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    view v;
    svc_catalog *catalog;
    atomic_uint rr[SHARDS_MAX]; /* per shard: whose turn it is to be asked first */
    void (*changed)(void *ctx);
    void *ctx;
    pthread_t thread;
    int running;
    int stop, poked;             /* under mu */
};

static const char *keep(svc_meta *m, const char *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof m->strings / sizeof m->strings[0]; i++)
        if (!m->strings[i])
            return m->strings[i] = strdup(s);
    return NULL;
}

static void view_free(view *v)
{
    free(v->reps);
    free(v->idle);
    free(v->pods);
    memset(v, 0, sizeof *v);
}

static int name_ok(const char *s, size_t max, int dots)
{
    size_t n = strlen(s);
    if (!n || n > max)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || (dots && *p == '.')))
            return 0;
    return 1;
}

static void key_of(svc_meta *m, const char *rest, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", m->prefix, rest);
}

/* ---- the map's value ------------------------------------------------------------------- */

/* Decode and check a map; the replicas into out (malloc'd). */
static int map_decode(const uint8_t *p, size_t len, view *out, char *why, size_t cap)
{
    Slimvec__V1__ShardMap *sm = slimvec__v1__shard_map__unpack(NULL, len, p);
    if (!sm) {
        snprintf(why, cap, "the shard map does not decode");
        return -1;
    }
    int rc = -1;
    if (sm->shards < 1 || sm->shards > SHARDS_MAX) {
        snprintf(why, cap, "the shard map has %u shards (1..%d)", sm->shards, SHARDS_MAX);
        goto done;
    }
    if (sm->n_replicas > REPLICAS_MAX || sm->n_idle > REPLICAS_MAX) {
        snprintf(why, cap, "the shard map has %zu replicas and %zu idle pods (at most %d each)", sm->n_replicas,
                 sm->n_idle, REPLICAS_MAX);
        goto done;
    }
    out->reps = calloc(sm->n_replicas ? sm->n_replicas : 1, sizeof *out->reps);
    out->idle = calloc(sm->n_idle ? sm->n_idle : 1, sizeof *out->idle);
    if (!out->reps || !out->idle) {
        snprintf(why, cap, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < sm->n_replicas; i++) {
        Slimvec__V1__ShardReplica *r = sm->replicas[i];
        if (!name_ok(r->pod, SVC_POD_NAME_MAX, 1) || r->shard >= sm->shards || (int)r->state < SVC_REPLICA_CATCHING_UP ||
            (int)r->state > SVC_REPLICA_LEAVING || !*r->address || strlen(r->address) > SVC_ADDRESS_MAX ||
            strlen(r->replica_set) > 32 || (*r->replaces && !name_ok(r->replaces, SVC_POD_NAME_MAX, 1))) {
            snprintf(why, cap, "the shard map's replica %zu (\"%.64s\") is not valid", i, r->pod);
            goto done;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(out->reps[j].pod, r->pod)) {
                snprintf(why, cap, "the shard map names pod \"%s\" twice", r->pod);
                goto done;
            }
        svc_meta_replica *o = &out->reps[i];
        snprintf(o->pod, sizeof o->pod, "%s", r->pod);
        snprintf(o->address, sizeof o->address, "%s", r->address);
        snprintf(o->replica_set, sizeof o->replica_set, "%s", r->replica_set);
        snprintf(o->replaces, sizeof o->replaces, "%s", r->replaces);
        o->shard = r->shard;
        o->state = (int)r->state;
    }
    for (size_t i = 0; i < sm->n_idle; i++) {
        if (!name_ok(sm->idle[i], SVC_POD_NAME_MAX, 1)) {
            snprintf(why, cap, "the shard map's idle pod %zu is not a pod name", i);
            goto done;
        }
        snprintf(out->idle[i].name, sizeof out->idle[i].name, "%s", sm->idle[i]);
    }
    out->n_idle = sm->n_idle;
    out->n_reps = sm->n_replicas;
    out->epoch = sm->epoch;
    out->shards = sm->shards;
    rc = 0;
done:
    if (rc) {
        free(out->reps);
        free(out->idle);
        out->reps = NULL;
        out->idle = NULL;
        out->n_reps = out->n_idle = 0;
    }
    slimvec__v1__shard_map__free_unpacked(sm, NULL);
    return rc;
}

int svc_meta_map_check(const uint8_t *p, size_t len, char *why, size_t cap)
{
    view v = {0};
    int rc = map_decode(p, len, &v, why, cap);
    view_free(&v);
    return rc;
}

/* The map's value; NULL when out of memory. */
static uint8_t *map_encode(uint64_t epoch, uint32_t shards, const svc_meta_map *mp, size_t *len)
{
    size_t n = mp->n;
    Slimvec__V1__ShardMap sm = SLIMVEC__V1__SHARD_MAP__INIT;
    Slimvec__V1__ShardReplica *rs = calloc(n ? n : 1, sizeof *rs);
    Slimvec__V1__ShardReplica **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char **idle = calloc(mp->n_idle ? mp->n_idle : 1, sizeof *idle);
    uint8_t *out = NULL;
    if (!rs || !ptrs || !idle)
        goto done;
    for (size_t i = 0; i < n; i++) {
        slimvec__v1__shard_replica__init(&rs[i]);
        rs[i].pod = (char *)mp->reps[i].pod;
        rs[i].address = (char *)mp->reps[i].address;
        rs[i].replica_set = (char *)mp->reps[i].replica_set;
        rs[i].replaces = (char *)mp->reps[i].replaces;
        rs[i].shard = mp->reps[i].shard;
        rs[i].state = (Slimvec__V1__ReplicaState)mp->reps[i].state;
        ptrs[i] = &rs[i];
    }
    for (size_t i = 0; i < mp->n_idle; i++)
        idle[i] = (char *)mp->idle[i].name;
    sm.epoch = epoch;
    sm.shards = shards;
    sm.n_replicas = n;
    sm.replicas = ptrs;
    sm.n_idle = mp->n_idle;
    sm.idle = idle;
    *len = slimvec__v1__shard_map__get_packed_size(&sm);
    if ((out = malloc(*len ? *len : 1)))
        slimvec__v1__shard_map__pack(&sm, out);
done:
    free(rs);
    free(ptrs);
    free(idle);
    return out;
}

/* ---- reading --------------------------------------------------------------------------- */

static int pod_live(const view *v, const char *pod)
{
    for (size_t i = 0; i < v->n_pods; i++)
        if (!strcmp(v->pods[i].pod, pod))
            return 1;
    return 0;
}

/* Read the whole prefix; *news when it differs from what we had. */
static sv_status read_all(svc_meta *m, int linearizable, int *news, sv_error *err)
{
    *news = 0;
    Etcdserverpb__RangeResponse *r = NULL;
    sv_status st = svc_etcd_range(m->etcd, m->prefix, 1, !linearizable, &r, err);
    if (st != SV_OK)
        return st;
    view v = {0};
    svc_catalog_entry *colls = calloc(r->n_kvs ? r->n_kvs : 1, sizeof *colls);
    v.pods = calloc(r->n_kvs ? r->n_kvs : 1, sizeof *v.pods);
    size_t n_colls = 0;
    size_t plen = strlen(m->prefix);
    if (!colls || !v.pods) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory reading the cluster's metadata");
        goto done;
    }
    v.revision = r->header ? r->header->revision : 0;
    for (size_t i = 0; i < r->n_kvs; i++) {
        Mvccpb__KeyValue *kv = r->kvs[i];
        if (kv->key.len <= plen || kv->key.len > plen + 200)
            continue;
        char rest[256];
        memcpy(rest, kv->key.data + plen, kv->key.len - plen);
        rest[kv->key.len - plen] = 0;
        char why[200];
        if (!strcmp(rest, "map")) {
            if (map_decode(kv->value.data, kv->value.len, &v, why, sizeof why) != 0) {
                st = sv_fail(err, SV_ERR_CORRUPT, "%smap: %s", m->prefix, why);
                goto done;
            }
            v.map_mod = kv->mod_revision;
        } else if (!strncmp(rest, "pods/", 5)) {
            Slimvec__V1__PodInfo *pi = slimvec__v1__pod_info__unpack(NULL, kv->value.len, kv->value.data);
            if (pi && name_ok(pi->pod, SVC_POD_NAME_MAX, 1) && strlen(pi->address) <= SVC_ADDRESS_MAX) {
                svc_meta_replica *o = &v.pods[v.n_pods++];
                snprintf(o->pod, sizeof o->pod, "%s", pi->pod);
                snprintf(o->address, sizeof o->address, "%s", pi->address);
                snprintf(o->replica_set, sizeof o->replica_set, "%s", pi->replica_set);
                o->live = 1;
                o->router_only = pi->router_only;
            }
            if (pi)
                slimvec__v1__pod_info__free_unpacked(pi, NULL);
        } else if (!strncmp(rest, "collections/", 12)) {
            sv_error derr;
            if (svc_catalog_decode(kv->value.data, kv->value.len, (uint64_t)kv->create_revision, &colls[n_colls],
                                   &derr) == SV_OK)
                n_colls++;
            else
                fprintf(stderr, "slimvecd: cluster: %s: %s (skipped)\n", rest, derr.message);
        }
    }
    for (size_t i = 0; i < v.n_reps; i++)
        v.reps[i].live = pod_live(&v, v.reps[i].pod);
    pthread_mutex_lock(&m->mu);
    if (v.revision >= m->v.revision) {
        /* A member that lags may answer after one that does not: never go back. */
        *news = v.revision != m->v.revision || v.epoch != m->v.epoch;
        view old = m->v;
        m->v = v;
        memset(&v, 0, sizeof v);
        view_free(&old);
    }
    pthread_mutex_unlock(&m->mu);
    st = svc_catalog_set(m->catalog, colls, n_colls, (uint64_t)(r->header ? r->header->revision : 0), err);
done:
    view_free(&v);
    free(colls);
    svc_etcd_range_free(r);
    return st;
}

sv_status svc_meta_refresh(svc_meta *m, int linearizable, sv_error *err)
{
    int news;
    sv_status st = read_all(m, linearizable, &news, err);
    if (st == SV_OK && news && m->changed)
        m->changed(m->ctx);
    return st;
}

/* ---- changing the map ------------------------------------------------------------------ */

/* edit(map, ctx): change the copy in place; returns 1 when it changed
 * something, 0 when there is nothing to do, -1 (with err) to give up. */
typedef int (*map_edit)(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err);

static sv_status update_map(svc_meta *m, map_edit edit, void *ctx, sv_error *err)
{
    for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
        int news;
        sv_status st = read_all(m, 1, &news, err);
        if (st != SV_OK)
            return st;
        pthread_mutex_lock(&m->mu);
        svc_meta_map mp = {0};
        mp.n = m->v.n_reps;
        mp.n_idle = m->v.n_idle;
        mp.reps = malloc((mp.n + 2) * sizeof *mp.reps);
        mp.idle = malloc((mp.n_idle + 2) * sizeof *mp.idle);
        if (mp.reps && mp.n)
            memcpy(mp.reps, m->v.reps, mp.n * sizeof *mp.reps);
        if (mp.idle && mp.n_idle)
            memcpy(mp.idle, m->v.idle, mp.n_idle * sizeof *mp.idle);
        mp.pods = m->v.pods; /* read only, under mu: copied below */
        uint64_t epoch = m->v.epoch;
        uint32_t shards = m->v.shards;
        int64_t mod = m->v.map_mod;
        size_t n_pods = m->v.n_pods;
        svc_meta_replica *pods = malloc((n_pods ? n_pods : 1) * sizeof *pods);
        if (pods && n_pods)
            memcpy(pods, m->v.pods, n_pods * sizeof *pods);
        pthread_mutex_unlock(&m->mu);
        mp.pods = pods;
        mp.n_pods = n_pods;
        int changed = -2;
        if (!mp.reps || !mp.idle || !pods)
            sv_fail(err, SV_ERR_RESOURCE, "out of memory");
        else if (!mod)
            sv_fail(err, SV_ERR_NOT_FOUND, "the cluster has no shard map");
        else
            changed = edit(m, &mp, ctx, err);
        uint8_t *val = NULL;
        size_t len = 0;
        if (changed > 0 && !(val = map_encode(epoch + 1, shards, &mp, &len)))
            changed = -2, sv_fail(err, SV_ERR_RESOURCE, "out of memory");
        free(mp.reps);
        free(mp.idle);
        free(pods);
        if (changed < 0)
            return err->code;
        if (changed == 0)
            return sv_ok(err);
        char key[200];
        key_of(m, "map", key, sizeof key);
        int swapped = 0;
        st = svc_etcd_put_if(m->etcd, key, mod, val, len, 0, &swapped, NULL, err);
        free(val);
        if (st != SV_OK)
            return st;
        if (swapped)
            return svc_meta_refresh(m, 1, err);
        /* Someone else changed it first: read it again and redo the edit. */
    }
    return sv_fail(err, SV_ERR_BUSY, "the shard map kept changing under %d tries", CAS_TRIES);
}

long svc_meta_map_find(const svc_meta_map *mp, const char *pod)
{
    for (size_t i = 0; i < mp->n; i++)
        if (!strcmp(mp->reps[i].pod, pod))
            return (long)i;
    return -1;
}

static long find_idle(const svc_meta_map *mp, const char *pod)
{
    for (size_t i = 0; i < mp->n_idle; i++)
        if (!strcmp(mp->idle[i].name, pod))
            return (long)i;
    return -1;
}

static void remove_idle(svc_meta_map *mp, const char *pod)
{
    long at = find_idle(mp, pod);
    if (at >= 0)
        mp->idle[at] = mp->idle[--mp->n_idle];
}

static void remove_rep(svc_meta_map *mp, long at)
{
    memmove(&mp->reps[at], &mp->reps[at + 1], (mp->n - (size_t)at - 1) * sizeof *mp->reps);
    mp->n--;
}

static const svc_meta_replica *live_pod(const svc_meta_map *mp, const char *pod)
{
    for (size_t i = 0; i < mp->n_pods; i++)
        if (!strcmp(mp->pods[i].pod, pod))
            return &mp->pods[i];
    return NULL;
}

/* Join: add this pod (or correct its address) in the map, unless it left
 * a shard before (idle: an operator gives it one). */
static int edit_join(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err)
{
    (void)ctx;
    (void)err;
    long at = svc_meta_map_find(mp, m->cfg.pod);
    if (at >= 0) {
        svc_meta_replica *r = &mp->reps[at];
        if (!strcmp(r->address, m->cfg.address) && !strcmp(r->replica_set, m->cfg.replica_set))
            return 0;
        snprintf(r->address, sizeof r->address, "%s", m->cfg.address);
        snprintf(r->replica_set, sizeof r->replica_set, "%s", m->cfg.replica_set);
        return 1;
    }
    if (find_idle(mp, m->cfg.pod) >= 0 || m->cfg.router_only)
        return 0;
    svc_meta_replica *r = &mp->reps[mp->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->pod, sizeof r->pod, "%s", m->cfg.pod);
    snprintf(r->address, sizeof r->address, "%s", m->cfg.address);
    snprintf(r->replica_set, sizeof r->replica_set, "%s", m->cfg.replica_set);
    r->shard = m->cfg.shard;
    r->state = SVC_REPLICA_CATCHING_UP;
    return 1;
}

static int edit_state(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err)
{
    const int *from_to = ctx;
    int state = from_to[1];
    long at = svc_meta_map_find(mp, m->cfg.pod);
    if (at < 0) {
        sv_fail(err, SV_ERR_NOT_FOUND, "pod \"%s\" is not in the shard map", m->cfg.pod);
        return -1;
    }
    svc_meta_replica *me = &mp->reps[at];
    /* Only from the state the caller saw: a drain that set it leaving
     * meanwhile is not undone. */
    if (me->state == state || me->state != from_to[0])
        return 0;
    me->state = state;
    if (state == SVC_REPLICA_READY && me->replaces[0]) {
        /* A move: the replica this one replaces leaves in the same change,
         * so the shard never has fewer ready replicas than before. */
        long old = svc_meta_map_find(mp, me->replaces);
        if (old >= 0 && mp->reps[old].shard == me->shard)
            mp->reps[old].state = SVC_REPLICA_LEAVING;
        me->replaces[0] = 0;
    }
    return 1;
}

sv_status svc_meta_set_state(svc_meta *m, int from, int to, sv_error *err)
{
    int from_to[2] = {from, to};
    return update_map(m, edit_state, from_to, err);
}

/* Leave: out of the map's replicas, into its idle pods. */
static int edit_leave(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err)
{
    (void)ctx;
    (void)err;
    long at = svc_meta_map_find(mp, m->cfg.pod);
    if (at < 0)
        return 0;
    remove_rep(mp, at);
    /* Idle pods no longer live are forgotten once the list is long (a pod
     * forgotten joins --shard again at its next start). */
    if (mp->n_idle >= IDLE_KEEP)
        for (size_t i = mp->n_idle; i-- > 0;)
            if (!live_pod(mp, mp->idle[i].name))
                mp->idle[i] = mp->idle[--mp->n_idle];
    if (find_idle(mp, m->cfg.pod) < 0 && mp->n_idle < REPLICAS_MAX)
        snprintf(mp->idle[mp->n_idle++].name, sizeof mp->idle[0].name, "%s", m->cfg.pod);
    return 1;
}

sv_status svc_meta_leave(svc_meta *m, sv_error *err)
{
    return update_map(m, edit_leave, NULL, err);
}

typedef struct move_args {
    uint32_t shard;
    const char *to, *from;
} move_args;

static int edit_move(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err)
{
    (void)m;
    move_args *a = ctx;
    if (a->shard >= m->cfg.shards) {
        sv_fail(err, SV_ERR_INVALID_ARGUMENT, "shard %u: the cluster has %u shards", a->shard, m->cfg.shards);
        return -1;
    }
    const svc_meta_replica *live = live_pod(mp, a->to);
    if (!live || live->router_only) {
        sv_fail(err, SV_ERR_INVALID_ARGUMENT, live ? "pod \"%s\" only routes (--router-only)"
                                                   : "pod \"%s\" is not live (no key under pods/)", a->to);
        return -1;
    }
    long to = svc_meta_map_find(mp, a->to);
    if (to >= 0 && mp->reps[to].state != SVC_REPLICA_LEAVING) {
        if (mp->reps[to].shard == a->shard && !strcmp(mp->reps[to].replaces, a->from ? a->from : ""))
            return 0; /* asked twice */
        sv_fail(err, SV_ERR_INVALID_ARGUMENT, "pod \"%s\" serves shard %u: drain it first", a->to,
                mp->reps[to].shard);
        return -1;
    }
    if (to >= 0) {
        sv_fail(err, SV_ERR_INVALID_ARGUMENT, "pod \"%s\" is still leaving shard %u", a->to, mp->reps[to].shard);
        return -1;
    }
    if (a->from && *a->from) {
        long from = svc_meta_map_find(mp, a->from);
        if (from < 0 || mp->reps[from].shard != a->shard || mp->reps[from].state != SVC_REPLICA_READY) {
            sv_fail(err, SV_ERR_INVALID_ARGUMENT, "pod \"%s\" is not a ready replica of shard %u", a->from,
                    a->shard);
            return -1;
        }
    }
    remove_idle(mp, a->to);
    svc_meta_replica *r = &mp->reps[mp->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->pod, sizeof r->pod, "%s", a->to);
    snprintf(r->address, sizeof r->address, "%s", live->address);
    snprintf(r->replica_set, sizeof r->replica_set, "%s", live->replica_set);
    snprintf(r->replaces, sizeof r->replaces, "%s", a->from ? a->from : "");
    r->shard = a->shard;
    r->state = SVC_REPLICA_CATCHING_UP;
    return 1;
}

sv_status svc_meta_move(svc_meta *m, uint32_t shard, const char *to_pod, const char *from_pod, sv_error *err)
{
    move_args a = {shard, to_pod, from_pod};
    return update_map(m, edit_move, &a, err);
}

typedef struct drain_args {
    const char *pod;
    char moved_to[SVC_POD_NAME_MAX + 1];
} drain_args;

static int edit_drain(svc_meta *m, svc_meta_map *mp, void *ctx, sv_error *err)
{
    (void)m;
    drain_args *a = ctx;
    a->moved_to[0] = 0;
    long at = svc_meta_map_find(mp, a->pod);
    if (at < 0 || mp->reps[at].state == SVC_REPLICA_LEAVING)
        return 0; /* not serving a shard (or leaving already) */
    uint32_t shard = mp->reps[at].shard;
    for (size_t i = 0; i < mp->n; i++)
        if (!strcmp(mp->reps[i].replaces, a->pod))
            return 0; /* a move away from it is under way */
    /* A live pod in no shard takes it over (it joins catching up; this pod
     * leaves when it is ready). */
    for (size_t i = 0; i < mp->n_pods; i++) {
        const svc_meta_replica *p = &mp->pods[i];
        if (svc_meta_map_find(mp, p->pod) >= 0 || !strcmp(p->pod, a->pod) || p->router_only)
            continue;
        move_args mv = {shard, p->pod, mp->reps[at].state == SVC_REPLICA_READY ? a->pod : NULL};
        int rc = edit_move(m, mp, &mv, err);
        if (rc > 0) {
            if (!mv.from) /* it was catching up itself: it just goes */
                mp->reps[at].state = SVC_REPLICA_LEAVING;
            snprintf(a->moved_to, sizeof a->moved_to, "%s", p->pod);
        }
        return rc;
    }
    /* None: the shard keeps its other ready replicas, if it has any. */
    int others = 0;
    for (size_t i = 0; i < mp->n; i++)
        others += (long)i != at && mp->reps[i].shard == shard && mp->reps[i].state == SVC_REPLICA_READY;
    if (!others && mp->reps[at].state == SVC_REPLICA_READY) {
        sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                "pod \"%s\" is shard %u's only ready replica and no live pod is free to take it over", a->pod, shard);
        return -1;
    }
    mp->reps[at].state = SVC_REPLICA_LEAVING;
    return 1;
}

sv_status svc_meta_drain(svc_meta *m, const char *pod, char *moved_to, size_t cap, sv_error *err)
{
    drain_args a = {pod, ""};
    sv_status st = update_map(m, edit_drain, &a, err);
    snprintf(moved_to, cap, "%s", a.moved_to);
    return st;
}

/* The map exists with this pod in it. */
static sv_status ensure_map(svc_meta *m, sv_error *err)
{
    char key[200];
    key_of(m, "map", key, sizeof key);
    for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
        int news;
        sv_status st = read_all(m, 1, &news, err);
        if (st != SV_OK)
            return st;
        pthread_mutex_lock(&m->mu);
        int64_t mod = m->v.map_mod;
        uint32_t shards = m->v.shards;
        pthread_mutex_unlock(&m->mu);
        if (mod) {
            if (shards != m->cfg.shards)
                return sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                               "the cluster \"%s\" has %u shards; --shards says %u", m->cfg.cluster, shards,
                               m->cfg.shards);
            return update_map(m, edit_join, NULL, err);
        }
        size_t len = 0;
        svc_meta_map empty = {0};
        uint8_t *val = map_encode(1, m->cfg.shards, &empty, &len);
        if (!val)
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
        int swapped;
        st = svc_etcd_put_if(m->etcd, key, 0, val, len, 0, &swapped, NULL, err);
        free(val);
        if (st != SV_OK)
            return st;
    }
    return sv_fail(err, SV_ERR_BUSY, "could not make the shard map");
}

/* ---- the pod's lease ------------------------------------------------------------------- */

/* A lease and this pod's key on it; m->lease changes only once the key is
 * written (else the next keep-alive would keep a lease with no key alive,
 * and the pod would never be live again). */
static sv_status register_pod(svc_meta *m, sv_error *err)
{
    int64_t lease = 0;
    sv_status st = svc_etcd_lease_grant(m->etcd, m->cfg.lease_seconds, &lease, err);
    if (st != SV_OK)
        return st;
    Slimvec__V1__PodInfo pi = SLIMVEC__V1__POD_INFO__INIT;
    pi.pod = (char *)m->cfg.pod;
    pi.address = (char *)m->cfg.address;
    pi.replica_set = (char *)m->cfg.replica_set;
    pi.started = (double)time(NULL);
    pi.lease = lease;
    pi.router_only = m->cfg.router_only != 0;
    uint8_t buf[1024];
    size_t len = slimvec__v1__pod_info__get_packed_size(&pi);
    if (len > sizeof buf)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "pod info too long");
    slimvec__v1__pod_info__pack(&pi, buf);
    char key[300];
    snprintf(key, sizeof key, "%spods/%s", m->prefix, m->cfg.pod);
    int swapped;
    st = svc_etcd_put_if(m->etcd, key, -1, buf, len, lease, &swapped, NULL, err);
    if (st != SV_OK) {
        sv_error ignored;
        svc_etcd_lease_revoke(m->etcd, lease, &ignored);
        return st;
    }
    m->lease = lease;
    m->keepalive_at = sv_now_seconds() + m->cfg.lease_seconds / 3.0;
    return st;
}

static void keep_alive(svc_meta *m)
{
    if (sv_now_seconds() < m->keepalive_at)
        return;
    int64_t ttl = 0;
    sv_error err;
    sv_status st = svc_etcd_lease_keepalive(m->etcd, m->lease, &ttl, &err);
    if (st == SV_OK && ttl > 0) {
        m->keepalive_at = sv_now_seconds() + m->cfg.lease_seconds / 3.0;
        return;
    }
    if (st == SV_OK || st == SV_ERR_INVALID_ARGUMENT) {
        /* The lease is gone (etcd was out of reach longer than the TTL):
         * a new one, and this pod's key again. */
        if (register_pod(m, &err) == SV_OK) {
            fprintf(stderr, "slimvecd: cluster: the pod's lease had expired; registered again\n");
            return;
        }
    }
    static double last_said;
    if (sv_now_seconds() - last_said > 5) {
        fprintf(stderr, "slimvecd: cluster: keeping the pod's lease: %s\n", err.message);
        last_said = sv_now_seconds();
    }
    m->keepalive_at = sv_now_seconds() + 0.5;
}

static void *meta_thread(void *arg)
{
    svc_meta *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (!m->poked) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            double wait = m->cfg.test_read_seconds > 0 ? m->cfg.test_read_seconds : READ_EVERY_SECONDS;
            double to_keepalive = m->keepalive_at - sv_now_seconds();
            if (to_keepalive < wait)
                wait = to_keepalive > 0.01 ? to_keepalive : 0.01;
            until.tv_sec += (time_t)wait;
            until.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->cond, &m->mu, &until);
        }
        if (m->stop)
            break;
        m->poked = 0;
        pthread_mutex_unlock(&m->mu);
        keep_alive(m);
        sv_error err;
        if (svc_meta_refresh(m, 0, &err) != SV_OK) {
            static double last_said;
            if (sv_now_seconds() - last_said > 5) {
                fprintf(stderr, "slimvecd: cluster: reading etcd: %s\n", err.message);
                last_said = sv_now_seconds();
            }
        }
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

void svc_meta_poke(svc_meta *m)
{
    pthread_mutex_lock(&m->mu);
    m->poked = 1;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

static void on_watch(void *ctx)
{
    svc_meta *m = ctx;
    if (m->cfg.test_read_seconds <= 0)
        svc_meta_poke(m);
}

/* ---- life ------------------------------------------------------------------------------ */

sv_status svc_meta_create(const svc_meta_config *cfg, double wait_seconds, void (*changed)(void *ctx), void *ctx,
                          svc_meta **out, sv_error *err)
{
    *out = NULL;
    svc_meta *m = calloc(1, sizeof *m);
    if (!m)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    m->cfg = *cfg;
    m->cfg.cluster = keep(m, cfg->cluster ? cfg->cluster : "slimvec");
    m->cfg.pod = keep(m, cfg->pod);
    m->cfg.address = keep(m, cfg->address);
    m->cfg.replica_set = keep(m, cfg->replica_set ? cfg->replica_set : "");
    m->cfg.etcd.endpoints = keep(m, cfg->etcd.endpoints);
    m->cfg.etcd.tls.ca = keep(m, cfg->etcd.tls.ca);
    m->cfg.etcd.tls.cert = keep(m, cfg->etcd.tls.cert);
    m->cfg.etcd.tls.key = keep(m, cfg->etcd.tls.key);
    m->cfg.etcd.tls.server_name = keep(m, cfg->etcd.tls.server_name);
    m->cfg.etcd.tls.token = NULL;
    if (m->cfg.lease_seconds < 1)
        m->cfg.lease_seconds = 5;
    m->changed = changed;
    m->ctx = ctx;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cond, NULL);
    sv_status st = SV_OK;
    if (!m->cfg.pod || !name_ok(m->cfg.pod, SVC_POD_NAME_MAX, 1))
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "the pod's name \"%s\" (--pod-name): 1..%d of [A-Za-z0-9_.-]",
                     cfg->pod ? cfg->pod : "", SVC_POD_NAME_MAX);
    else if (!name_ok(m->cfg.cluster, 64, 0))
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "--cluster-name \"%s\": 1..64 of [A-Za-z0-9_-]", m->cfg.cluster);
    else if (!m->cfg.address || !*m->cfg.address || strlen(m->cfg.address) > SVC_ADDRESS_MAX)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "the pod's address (--advertise) is missing or too long");
    else if (strlen(m->cfg.replica_set) > 32)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "replica set name over 32 bytes");
    else if (m->cfg.shards < 1 || m->cfg.shards > SHARDS_MAX || m->cfg.shard >= m->cfg.shards)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "shard %u of %u shards (1..%d shards)", m->cfg.shard,
                     m->cfg.shards, SHARDS_MAX);
    if (st == SV_OK && !(m->catalog = svc_catalog_create()))
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    if (st == SV_OK) {
        snprintf(m->prefix, sizeof m->prefix, "/slimvec/%s/", m->cfg.cluster);
        snprintf(m->marks, sizeof m->marks, "/slimvec-marks/%s/", m->cfg.cluster);
        st = svc_etcd_create(&m->cfg.etcd, &m->etcd, err);
    }
    /* etcd may come up after us (a cluster starting at once): wait. */
    double until = sv_now_seconds() + wait_seconds;
    while (st == SV_OK) {
        st = register_pod(m, err);
        if (st == SV_OK)
            st = ensure_map(m, err);
        if (st != SV_ERR_IO || sv_now_seconds() > until)
            break;
        fprintf(stderr, "slimvecd: cluster: waiting for etcd: %s\n", err->message);
        sleep(1);
        st = SV_OK;
    }
    if (st == SV_OK) {
        m->watch = svc_etcd_watch_start(m->etcd, m->prefix, on_watch, m);
        if (!m->watch || pthread_create(&m->thread, NULL, meta_thread, m) != 0)
            st = sv_fail(err, SV_ERR_RESOURCE, "cannot start the cluster metadata's threads");
        else
            m->running = 1;
    }
    if (st != SV_OK) {
        svc_meta_free(m);
        return st;
    }
    *out = m;
    return sv_ok(err);
}

void svc_meta_free(svc_meta *m)
{
    if (!m)
        return;
    if (m->running) {
        pthread_mutex_lock(&m->mu);
        m->stop = 1;
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    svc_etcd_watch_stop(m->watch);
    if (m->lease) {
        sv_error err;
        svc_etcd_lease_revoke(m->etcd, m->lease, &err); /* the pod's key goes now, not after the TTL */
    }
    svc_etcd_free(m->etcd);
    svc_catalog_free(m->catalog);
    view_free(&m->v);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cond);
    for (size_t i = 0; i < sizeof m->strings / sizeof m->strings[0]; i++)
        free(m->strings[i]);
    free(m);
}

/* ---- questions ------------------------------------------------------------------------- */

uint32_t svc_meta_shards(svc_meta *m)
{
    return m->cfg.shards;
}

uint64_t svc_meta_epoch(svc_meta *m)
{
    pthread_mutex_lock(&m->mu);
    uint64_t e = m->v.epoch;
    pthread_mutex_unlock(&m->mu);
    return e;
}

int svc_meta_my_shard(svc_meta *m, int *state)
{
    pthread_mutex_lock(&m->mu);
    svc_meta_map view_map = {.reps = m->v.reps, .n = m->v.n_reps};
    long at = svc_meta_map_find(&view_map, m->cfg.pod);
    int shard = at >= 0 ? (int)m->v.reps[at].shard : -1;
    *state = at >= 0 ? m->v.reps[at].state : SVC_REPLICA_NONE;
    pthread_mutex_unlock(&m->mu);
    return shard;
}

int svc_meta_serves(svc_meta *m, uint32_t shard)
{
    int state;
    int mine = svc_meta_my_shard(m, &state);
    return mine >= 0 && (uint32_t)mine == shard && state == SVC_REPLICA_READY;
}

int svc_meta_targets(svc_meta *m, uint32_t shard, svc_meta_replica *out, int max, uint64_t *epoch)
{
    /* Who goes first: a per-shard counter, mixed (a plain rotation would
     * keep step with any caller that alternates, e.g. between two shards,
     * and always ask the same replica first). */
    uint64_t turn = shard < SHARDS_MAX ? atomic_fetch_add(&m->rr[shard], 1) : 0;
    turn = (turn + 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    turn ^= turn >> 31;
    unsigned start = (unsigned)(turn >> 32);
    pthread_mutex_lock(&m->mu);
    *epoch = m->v.epoch;
    int k = 0;
    /* Live pods first (rotating), then those whose lease is gone: a pod
     * restarting may answer before its key is back. */
    for (int live = 1; live >= 0; live--) {
        int first = k;
        for (size_t i = 0; i < m->v.n_reps && k < max; i++) {
            const svc_meta_replica *r = &m->v.reps[i];
            if (r->shard == shard && r->state == SVC_REPLICA_READY && r->live == live)
                out[k++] = *r;
        }
        int n = k - first;
        for (int turn = 0; n > 1 && turn < (int)(start % (unsigned)n); turn++) {
            svc_meta_replica t = out[first];
            memmove(&out[first], &out[first + 1], (size_t)(n - 1) * sizeof *out);
            out[first + n - 1] = t;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return k;
}

static size_t copy_out(const svc_meta_replica *src, size_t n, svc_meta_replica **out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return 0;
    if (n)
        memcpy(*out, src, n * sizeof **out);
    return n;
}

size_t svc_meta_replicas(svc_meta *m, svc_meta_replica **out, uint64_t *epoch, int64_t *revision)
{
    pthread_mutex_lock(&m->mu);
    size_t n = copy_out(m->v.reps, m->v.n_reps, out);
    *epoch = m->v.epoch;
    *revision = m->v.revision;
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t svc_meta_idle(svc_meta *m, svc_meta_name **out)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->v.n_idle;
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        n = 0;
    else if (n)
        memcpy(*out, m->v.idle, n * sizeof **out);
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t svc_meta_pods(svc_meta *m, svc_meta_replica **out)
{
    pthread_mutex_lock(&m->mu);
    size_t n = copy_out(m->v.pods, m->v.n_pods, out);
    pthread_mutex_unlock(&m->mu);
    return n;
}

svc_catalog *svc_meta_catalog(svc_meta *m)
{
    return m->catalog;
}

sv_status svc_meta_create_collection(svc_meta *m, const char *name, const uint8_t *value, size_t len,
                                     uint64_t *incarnation, sv_error *err)
{
    char key[300];
    snprintf(key, sizeof key, "%scollections/%s", m->prefix, name);
    int swapped = 0;
    int64_t rev = 0;
    sv_status st = svc_etcd_put_if(m->etcd, key, 0, value, len, 0, &swapped, &rev, err);
    if (st != SV_OK)
        return st;
    if (!swapped)
        return sv_fail(err, SV_ERR_ALREADY_EXISTS, "collection \"%s\" already exists", name);
    *incarnation = (uint64_t)rev;
    return svc_meta_refresh(m, 1, err);
}

sv_status svc_meta_drop_collection(svc_meta *m, const char *name, uint64_t incarnation, sv_error *err)
{
    char key[300];
    snprintf(key, sizeof key, "%scollections/%s", m->prefix, name);
    int deleted = 0;
    sv_status st = svc_etcd_delete_if(m->etcd, key, (int64_t)incarnation, &deleted, err);
    if (st != SV_OK)
        return st;
    if (!deleted)
        return sv_fail(err, SV_ERR_NOT_FOUND, "collection \"%s\" was dropped meanwhile", name);
    return svc_meta_refresh(m, 1, err);
}

/* ---- snapshot marks -------------------------------------------------------------------- */

sv_status svc_meta_mark(svc_meta *m, const char *stream, uint32_t shard, uint64_t lsn, uint64_t *lowest,
                        sv_error *err)
{
    *lowest = 0;
    char key[400];
    snprintf(key, sizeof key, "%s%s/%s", m->marks, stream, m->cfg.pod);
    uint8_t v[8];
    for (int i = 0; i < 8; i++)
        v[i] = (uint8_t)(lsn >> (8 * i));
    int swapped;
    sv_status st = svc_etcd_put_if(m->etcd, key, -1, v, sizeof v, 0, &swapped, NULL, err);
    if (st != SV_OK)
        return st;
    snprintf(key, sizeof key, "%s%s/", m->marks, stream);
    Etcdserverpb__RangeResponse *r = NULL;
    if ((st = svc_etcd_range(m->etcd, key, 1, 0, &r, err)) != SV_OK)
        return st;
    size_t plen = strlen(key);
    uint64_t low = UINT64_MAX;
    int missing = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->v.n_reps && !missing; i++) {
        const svc_meta_replica *rep = &m->v.reps[i];
        if (rep->shard != shard || rep->state == SVC_REPLICA_LEAVING)
            continue;
        int found = 0;
        for (size_t k = 0; k < r->n_kvs && !found; k++) {
            const Mvccpb__KeyValue *kv = r->kvs[k];
            if (kv->key.len != plen + strlen(rep->pod) || memcmp(kv->key.data + plen, rep->pod, kv->key.len - plen) ||
                kv->value.len != 8)
                continue;
            uint64_t x = 0;
            for (int b = 0; b < 8; b++)
                x |= (uint64_t)kv->value.data[b] << (8 * b);
            if (x < low)
                low = x;
            found = 1;
        }
        missing = !found;
    }
    pthread_mutex_unlock(&m->mu);
    svc_etcd_range_free(r);
    if (!missing && low != UINT64_MAX)
        *lowest = low;
    return sv_ok(err);
}

sv_status svc_meta_forget_marks(svc_meta *m, const char *stream, sv_error *err)
{
    char key[400];
    snprintf(key, sizeof key, "%s%s/", m->marks, stream);
    return svc_etcd_delete_prefix(m->etcd, key, err);
}

sv_status svc_meta_forget_my_marks(svc_meta *m, sv_error *err)
{
    Etcdserverpb__RangeResponse *r = NULL;
    sv_status st = svc_etcd_range(m->etcd, m->marks, 1, 0, &r, err);
    if (st != SV_OK)
        return st;
    size_t pl = strlen(m->cfg.pod);
    for (size_t i = 0; i < r->n_kvs && st == SV_OK; i++) {
        const Mvccpb__KeyValue *kv = r->kvs[i];
        if (kv->key.len <= pl + 1 || kv->key.len >= 400 || kv->key.data[kv->key.len - pl - 1] != '/' ||
            memcmp(kv->key.data + kv->key.len - pl, m->cfg.pod, pl))
            continue;
        char key[400];
        memcpy(key, kv->key.data, kv->key.len);
        key[kv->key.len] = 0;
        int deleted;
        st = svc_etcd_delete_if(m->etcd, key, kv->create_revision, &deleted, err);
    }
    svc_etcd_range_free(r);
    return st;
}
