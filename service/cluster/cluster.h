/*
 * Cluster mode. Every slimvecd of a cluster is a router for every shard,
 * and a replica of at most one shard (of S), as the shard map says:
 *
 *   - the cluster's metadata is in etcd (meta.h): the shard map (which pods
 *     serve which shard, with an epoch), the pods' leases, the catalog of
 *     collections;
 *   - the log of each (collection, shard) is a NATS JetStream stream
 *     (natslog.h);
 *   - this pod applies its shard's streams in order (the applier thread
 *     below), snapshots locally, and restarts from its snapshots plus the
 *     streams' tails; it joins the map catching up and turns itself ready
 *     once it has caught up;
 *   - as a router (router.c) it writes any shard's stream and fans reads
 *     out to one ready replica of every shard (fanout.h), each call
 *     carrying the map's epoch: a replica that no longer serves the shard
 *     refuses, and the router reads the map again.
 *
 * Nothing here elects, replicates or commits: NATS and etcd do.
 */
#ifndef SVC_CLUSTER_H
#define SVC_CLUSTER_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "client.h"
#include "fanout.h"
#include "handlers.h"
#include "log.h"
#include "metrics.h"
#include "meta.h"
#include "natslog.h"
#include "registry.h"

#define SVC_SHARDS_MAX 256

typedef struct svc_cluster_config {
    svc_nats_config nats;
    svc_meta_config meta;         /* etcd, the cluster's name, this pod's name and address, S, where it joins */
    uint32_t shards;              /* S >= 1 */
    uint32_t shard;               /* where this pod joins when the map does not name it, < S */
    const char *replica_set;      /* this pod's replica set ("r0") */
    int stream_replicas;          /* copies of each stream NATS keeps (1..5) */
    double hedge_seconds;         /* a read's second replica starts after this */
    double outcome_seconds;       /* how long a write waits to hear how it applied */
    svd_client_options peer;      /* TLS to the other pods (the caller's token is passed on) */
    uint64_t ready_lag;           /* records behind (per collection) a catching-up replica turns ready at */
    double apply_delay_seconds;   /* tests only: the applier pauses this long between passes (a lagging replica) */
} svc_cluster_config;

typedef struct svc_cluster svc_cluster;

/* Connect to etcd and NATS, join the shard map, read the catalog
 * (waiting up to wait_seconds for them to answer). */
sv_status svc_cluster_create(const svc_cluster_config *cfg, double wait_seconds, svc_cluster **out, sv_error *err);
/* What the registry needs to follow the shard's streams. */
const svd_registry_follow *svc_cluster_follow(svc_cluster *c);
/* Bring the registry in line with the catalog and start applying (the
 * server wakes deferred calls when records are applied). */
sv_status svc_cluster_start(svc_cluster *c, svd_app *app, void (*wake)(void *ctx), void *wake_ctx, sv_error *err);
/* Stop applying (before the server's collections close). */
void svc_cluster_stop(svc_cluster *c);
void svc_cluster_free(svc_cluster *c);

const svc_cluster_config *svc_cluster_config_of(svc_cluster *c);
svc_fanout *svc_cluster_fanout(svc_cluster *c);
/* The shard's ready replicas (live ones first, rotating); their count;
 * *epoch: the map's epoch they come from. pods (may be NULL): each one's
 * pod name, in the same order. */
int svc_cluster_targets(svc_cluster *c, uint32_t shard, grpc_channel **out, char (*pods)[SVC_POD_NAME_MAX + 1],
                        uint64_t *epoch);
/* This pod's shard (-1: none). */
int svc_cluster_shard(svc_cluster *c);
/* A call to SlimVecShard names (metadata "slimvec-shard" =
 * "<shard>@<epoch>") the shard it means: 1 when this pod serves it (the
 * map is read again first when the caller's epoch is newer than ours);
 * else 0 and why. */
int svc_cluster_check_shard(svc_cluster *c, const grpc_slice *md, uint32_t *shard, char *why, size_t cap);
/* Read the map again now (a router about to retry a refused read): at
 * most one read at a time, and none while etcd is failing. */
void svc_cluster_read_map(svc_cluster *c);
/* A router was refused for a stale map: read it again soon. */
void svc_cluster_map_stale(svc_cluster *c);
svc_meta *svc_cluster_meta(svc_cluster *c);
/* The channel to another pod (made at first use, kept); NULL when it
 * cannot be made. */
grpc_channel *svc_cluster_channel(svc_cluster *c, const char *address);

/* The writer's log of (incarnation, shard), opened once and kept. Only a
 * create makes the stream (create = 1): a write racing a drop finds the
 * stream gone (SV_ERR_NOT_FOUND) and never brings it back. */
sv_status svc_cluster_shard_log(svc_cluster *c, uint64_t incarnation, uint32_t shard, int create, sv_log **out,
                                sv_error *err);
svc_catalog *svc_cluster_catalog(svc_cluster *c);
/* A name the catalog lacks, looked up by a call that started at
 * call_start: 1 when the catalog may be behind etcd (it was read again,
 * or will be in a moment: look again), 0 when it was read after the call
 * started (the name really is unknown). */
int svc_cluster_catalog_behind(svc_cluster *c, double call_start);
/* Remove every shard's stream of a dropped collection. */
void svc_cluster_delete_streams(svc_cluster *c, uint64_t incarnation);

/* How a record this pod applied went (kept for the last records of each
 * collection): 1 and the outcome when known; 0 when not noted yet (the
 * applier notes it just after applying); -1 when no longer kept. A record
 * sent twice: *duplicate_of is the first one's LSN (follow.h). */
int svc_cluster_outcome(svd_coll *coll, uint64_t lsn, sv_status *st, uint32_t *count, uint64_t *duplicate_of,
                        char *why, size_t cap);

typedef struct svc_cluster_stats {
    uint64_t applied_records, refused_records, duplicate_records, apply_errors;
    uint64_t appends, append_failures;
    uint64_t snapshots_fetched, snapshot_bytes_fetched; /* peers' snapshots this pod loaded */
    uint64_t stale_restarts;     /* reads routed here that started over after a stale map */
    uint64_t stale_refusals;     /* calls of this router that replicas refused for a stale map */
    double append_seconds;
    uint64_t fanout_parts[SVC_SHARDS_MAX];   /* reads answered per shard */
    double fanout_seconds[SVC_SHARDS_MAX];
    svc_fanout_stats fanout;
} svc_cluster_stats;
void svc_cluster_get_stats(svc_cluster *c, svc_cluster_stats *out);
void svc_cluster_note_append(svc_cluster *c, int ok, double seconds);
void svc_cluster_note_fanout(svc_cluster *c, uint32_t shard, double seconds);
void svc_cluster_note_stale(svc_cluster *c);
/* Replicas refused n calls for a stale map: counted, and the map is read
 * again (at most every few milliseconds, whatever the rate). */
void svc_cluster_saw_stale(svc_cluster *c, int n);
/* The cluster's metrics, in the exposition format, into a /metrics scrape. */
void svc_cluster_metrics(void *c, svd_text *t);

/* The router's method table (router.c). */
const svd_method *svc_router_methods(size_t *n);

#endif
