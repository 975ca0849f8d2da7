/*
 * Cluster mode (part 1: a static shard map). Every slimvecd of a cluster
 * is a replica of one shard (of S) and a router for all of them:
 *
 *   - the log of each (collection, shard) is a NATS JetStream stream
 *     (natslog.h); the catalog of collections is one more (catalog.h);
 *   - this pod applies the catalog and its own shard's streams in order
 *     (the applier thread below), snapshots locally, and restarts from its
 *     snapshots plus the streams' tails;
 *   - as a router (router.c) it writes any shard's stream and fans reads
 *     out to one replica of every shard (fanout.h), whose addresses come
 *     from the configuration.
 *
 * Nothing here elects, replicates or commits: NATS does.
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
#include "natslog.h"
#include "registry.h"

#define SVC_SHARDS_MAX 256
#define SVC_REPLICA_SETS_MAX 8

typedef struct svc_cluster_config {
    svc_nats_config nats;
    uint32_t shards;              /* S >= 1 */
    uint32_t shard;               /* this pod's shard, < S */
    const char *replica_set;      /* this pod's replica set ("r0") */
    const char *replica_sets;     /* every replica set, comma-separated ("r0,r1"): the purge waits for all */
    int stream_replicas;          /* copies of each stream NATS keeps (1..5) */
    /* Every replica of every shard: "0=host:port,host:port;1=host:port,..."
     * (this pod's own address among them). */
    const char *peers;
    double hedge_seconds;         /* a read's second replica starts after this */
    double outcome_seconds;       /* how long a write waits to hear how it applied */
    svd_client_options peer;      /* TLS to the other pods (the caller's token is passed on) */
    double apply_delay_seconds;   /* tests only: the applier pauses this long between passes (a lagging replica) */
} svc_cluster_config;

typedef struct svc_cluster svc_cluster;

/* Connect to NATS and read the catalog (waiting up to wait_seconds for
 * NATS to answer). */
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
/* The shard's replicas (best first: channels not known to be failing
 * first, rotating between the rest); their count. */
int svc_cluster_targets(svc_cluster *c, uint32_t shard, grpc_channel **out);

/* The writer's log of (incarnation, shard), opened once and kept. Only a
 * create makes the stream (create = 1): a write racing a drop finds the
 * stream gone (SV_ERR_NOT_FOUND) and never brings it back. */
sv_status svc_cluster_shard_log(svc_cluster *c, uint64_t incarnation, uint32_t shard, int create, sv_log **out,
                                sv_error *err);
/* Append to the catalog (create or drop); the LSN. */
sv_status svc_cluster_catalog_append(svc_cluster *c, uint32_t type, const uint8_t *rec, size_t len,
                                     uint64_t *lsn, sv_error *err);
svc_catalog *svc_cluster_catalog(svc_cluster *c);
/* 1 when the catalog's stream holds records this pod has not applied yet
 * (a collection created through another pod a moment ago). */
int svc_cluster_catalog_behind(svc_cluster *c);
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
    double append_seconds;
    uint64_t fanout_parts[SVC_SHARDS_MAX];   /* reads answered per shard */
    double fanout_seconds[SVC_SHARDS_MAX];
    svc_fanout_stats fanout;
} svc_cluster_stats;
void svc_cluster_get_stats(svc_cluster *c, svc_cluster_stats *out);
void svc_cluster_note_append(svc_cluster *c, int ok, double seconds);
void svc_cluster_note_fanout(svc_cluster *c, uint32_t shard, double seconds);
/* The cluster's metrics, in the exposition format, into a /metrics scrape. */
void svc_cluster_metrics(void *c, svd_text *t);

/* The router's method table (router.c). */
const svd_method *svc_router_methods(size_t *n);

#endif
