/*
 * The cluster's metadata in etcd (etcd.h), as this pod keeps it: the
 * shard map, which pods live, the catalog of collections. Keys under
 * /slimvec/<cluster>/ (the proto's "Cluster metadata" section):
 *
 *   map                 ShardMap {epoch, shards, replicas}: changed only by
 *                       a compare-and-swap on its mod revision, each change
 *                       one epoch more; never by a lock
 *   pods/<pod>          PodInfo on the pod's lease (TTL --lease-seconds,
 *                       kept alive by this pod): gone when the pod is
 *   collections/<name>  catalog.h's value; incarnation = create revision

 * and under /slimvec-marks/<cluster>/ (not read every second):
 *
 *   <stream>/<pod>      8 bytes LE: the LSN through which that replica's
 *                       newest snapshot holds the stream (not on a lease:
 *                       a pod that restarts needs the records after it);
 *                       the stream is purged below the lowest mark of the
 *                       shard's replicas in the map; a pod's marks go when
 *                       it leaves its shard, a stream's when it is deleted
 *
 * A background thread keeps the lease alive (a lease that expired, as
 * after etcd lost its quorum for longer than the TTL, is replaced and the
 * pod's key written again) and reads the whole prefix again when the watch
 * says something changed, and every second in any case. Reads are
 * serializable: a member that lost its quorum still answers them (the map
 * keeps working, possibly stale), while changes need the quorum and fail
 * with SV_ERR_IO without it.
 *
 * Locks: mu is a leaf.
 */
#ifndef SVC_META_H
#define SVC_META_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "etcd.h"
#include "slimvec.h"

#define SVC_POD_NAME_MAX 64
#define SVC_ADDRESS_MAX 256

typedef struct svc_meta_config {
    svc_etcd_config etcd;
    const char *cluster;         /* [A-Za-z0-9_-]: the key prefix */
    const char *pod;             /* unique in the cluster ([A-Za-z0-9_.-]) */
    const char *address;         /* host:port others reach this pod at */
    const char *replica_set;
    uint32_t shards;             /* S: makes the map when none exists; must match it otherwise */
    uint32_t shard;              /* where this pod joins when the map does not name it */
    int lease_seconds;           /* TTL of the pod's key (default 5) */
    int router_only;             /* join no shard; only route */
    double test_read_seconds;    /* tests only (> 0): read etcd this often, deaf to the watch (a stale map) */
} svc_meta_config;

enum { SVC_REPLICA_NONE = 0, SVC_REPLICA_CATCHING_UP = 1, SVC_REPLICA_READY = 2, SVC_REPLICA_LEAVING = 3 };

typedef struct svc_meta_replica {
    char pod[SVC_POD_NAME_MAX + 1];
    char address[SVC_ADDRESS_MAX + 1];
    char replica_set[33];
    char replaces[SVC_POD_NAME_MAX + 1]; /* a move: the pod that leaves when this one is ready */
    uint32_t shard;
    int state;
    int live;                    /* pods/<pod> exists */
    int router_only;             /* (live pods) it serves no shard, ever */
} svc_meta_replica;

typedef struct svc_meta_name {
    char name[SVC_POD_NAME_MAX + 1];
} svc_meta_name;

/* A copy of the map being changed (room for two more entries in each list). */
typedef struct svc_meta_map {
    svc_meta_replica *reps;
    size_t n;
    svc_meta_name *idle;
    size_t n_idle;
    const svc_meta_replica *pods; /* the live pods, read only */
    size_t n_pods;
} svc_meta_map;
long svc_meta_map_find(const svc_meta_map *mp, const char *pod);

typedef struct svc_meta svc_meta;

/*
 * Connect, take a lease, write this pod's key, read everything; make the
 * map when there is none; join it (at cfg->shard, catching up) when it
 * does not name this pod. Waits up to wait_seconds for etcd to answer.
 * changed(ctx) runs on the background thread after each read that found
 * something new.
 */
sv_status svc_meta_create(const svc_meta_config *cfg, double wait_seconds, void (*changed)(void *ctx), void *ctx,
                          svc_meta **out, sv_error *err);
/* Stop the thread and revoke the lease (the pod's key goes at once). */
void svc_meta_free(svc_meta *m);

uint32_t svc_meta_shards(svc_meta *m);
uint64_t svc_meta_epoch(svc_meta *m);
/* This pod's shard and state in the map (-1 and NONE when it has none). */
int svc_meta_my_shard(svc_meta *m, int *state);
/* 1 when this pod is READY on shard in its map. */
int svc_meta_serves(svc_meta *m, uint32_t shard);

/* The READY replicas of shard, live ones first, rotating (at most max); the
 * map's epoch. */
int svc_meta_targets(svc_meta *m, uint32_t shard, svc_meta_replica *out, int max, uint64_t *epoch);
/* Every replica in the map and every live pod (malloc'd; caller frees). */
size_t svc_meta_replicas(svc_meta *m, svc_meta_replica **out, uint64_t *epoch, int64_t *revision);
size_t svc_meta_pods(svc_meta *m, svc_meta_replica **out);

/* Read everything again now (linearizable = 1: the quorum's latest). */
sv_status svc_meta_refresh(svc_meta *m, int linearizable, sv_error *err);
/* Ask the background thread for a read soon (a router saw a stale map). */
void svc_meta_poke(svc_meta *m);

/* Changes of the map, each one compare-and-swap (a new epoch); a refusal
 * the map's state explains (a pod that is not live, a shard's last ready
 * replica) is SV_ERR_INVALID_ARGUMENT with why. */
/* This pod's state from `from` (else nothing changes) to `to`; READY also
 * sets the pod it replaces LEAVING. */
sv_status svc_meta_set_state(svc_meta *m, int from, int to, sv_error *err);
/* This pod out of its shard, into the idle pods. */
sv_status svc_meta_leave(svc_meta *m, sv_error *err);
/* to_pod (live, in no shard) joins shard catching up, replacing from_pod
 * (NULL or "": an added replica). */
sv_status svc_meta_move(svc_meta *m, uint32_t shard, const char *to_pod, const char *from_pod, sv_error *err);
/* pod's shard goes to an idle live pod (its name into moved_to) or, with
 * none, pod leaves and the shard keeps its other ready replicas. */
sv_status svc_meta_drain(svc_meta *m, const char *pod, char *moved_to, size_t cap, sv_error *err);
size_t svc_meta_idle(svc_meta *m, svc_meta_name **out);

/* This pod's snapshot mark on stream (of shard); *lowest: the lowest mark
 * of every replica of the shard in the map, not leaving (0 when one has
 * none yet: nothing may be purged). */
sv_status svc_meta_mark(svc_meta *m, const char *stream, uint32_t shard, uint64_t lsn, uint64_t *lowest,
                        sv_error *err);
/* The marks of a stream that is gone; this pod's marks (it left its shard). */
sv_status svc_meta_forget_marks(svc_meta *m, const char *stream, sv_error *err);
sv_status svc_meta_forget_my_marks(svc_meta *m, sv_error *err);

svc_catalog *svc_meta_catalog(svc_meta *m);
/* Create a collection: SV_ERR_ALREADY_EXISTS when the name is taken;
 * *incarnation is the new one. */
sv_status svc_meta_create_collection(svc_meta *m, const char *name, const uint8_t *value, size_t len,
                                     uint64_t *incarnation, sv_error *err);
/* Drop incarnation of name: SV_ERR_NOT_FOUND when that one is gone. */
sv_status svc_meta_drop_collection(svc_meta *m, const char *name, uint64_t incarnation, sv_error *err);

/* Decoding and checking a map's value (untrusted bytes from etcd): 0, or
 * -1 with why. The parts the fuzz target drives. */
int svc_meta_map_check(const uint8_t *p, size_t len, char *why, size_t cap);

#endif
