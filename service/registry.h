/*
 * The server's collections by name. Each collection is one handle (its
 * sv_durable: reads and writes both go through it, so nothing can write
 * around the log) and one jemalloc account in the registry's arena pool,
 * whose counter is the collection's true memory. Lookups hand out
 * references; a dropped collection is freed when the last reference goes
 * (a search running during a drop finishes safely).
 */
#ifndef SVD_REGISTRY_H
#define SVD_REGISTRY_H

#include <stddef.h>

#include "arena.h"
#include "durable.h"
#include "follow.h"
#include "log.h"
#include "slimvec.h"

#define SVD_NAME_MAX 64

typedef struct svd_coll {
    char name[SVD_NAME_MAX + 1];
    sv_arena *arena;           /* the collection's jemalloc account */
    sv_durable *dur;           /* the one handle: reads and writes */
    int refs;                  /* guarded by the registry's lock */
    /* Owned by the maintenance thread (maintenance.c), under its lock. */
    double snapshot_retry_at;  /* monotonic seconds: no snapshot attempt before */
    double snapshot_backoff;   /* seconds; doubles after each failure */
    uint64_t seen_writes;      /* live + tombstones + slots when last looked at */
    double quiet_since;        /* monotonic seconds since which those did not change */
    /* Cluster mode: the catalog's incarnation of the collection (follow.h,
     * cluster/catalog.h) and the cluster's state for it (freed with it). */
    uint64_t incarnation;
    void *extra;
    void (*extra_free)(void *extra);
} svd_coll;

/*
 * Cluster mode: every collection follows a log another process writes
 * (its shard's stream) instead of writing its own. open_log gives the log
 * of the collection named, and its incarnation; SV_ERR_NOT_FOUND when the
 * cluster has no such collection any more (a local copy of it is stale).
 */
typedef struct svd_registry_follow {
    sv_status (*open_log)(void *ctx, const char *name, uint64_t *incarnation, sv_log **log, sv_error *err);
    void *ctx;
    sv_follow_ids ids;
} svd_registry_follow;

typedef struct svd_registry svd_registry;

typedef struct svd_registry_options {
    const char *data_dir;          /* NULL: collections live in memory only */
    sv_durable_options durable;    /* for every collection */
    uint32_t build_threads;        /* flush threads per collection, 0 = all cores */
    size_t max_collections;        /* creates past this fail (RESOURCE_EXHAUSTED) */
    unsigned arenas;               /* shared jemalloc arenas in the pool */
    const svd_registry_follow *follow; /* cluster mode (needs data_dir); NULL: each writes its own log */
} svd_registry_options;

/* Each collection lives in data_dir/c-<name> (see durable.h). NULL when
 * out of memory. */
svd_registry *svd_registry_create(const svd_registry_options *o);
void svd_registry_free(svd_registry *r); /* closes every collection; no snapshots */
const char *svd_registry_data_dir(const svd_registry *r);
sv_arena_pool *svd_registry_pool(svd_registry *r);
size_t svd_registry_count(svd_registry *r);

/* Lock the data directory (one server per directory), remove what crashed
 * creates and drops left behind, and open every collection in it (log
 * replay). Prints what recovery did to stderr. Fails on the first
 * collection that cannot be opened, naming it. */
sv_status svd_registry_open_all(svd_registry *r, double *seconds, sv_error *err);

/* 1 when name is 1..64 bytes of [A-Za-z0-9_.-]. */
int svd_name_valid(const char *name);

/* Create (SV_ERR_ALREADY_EXISTS when the name is taken, SV_ERR_RESOURCE past
 * max_collections); returns a reference. */
sv_status svd_registry_create_collection(svd_registry *r, const char *name, sv_params *params,
                                         svd_coll **out, sv_error *err);
/* A reference, or NULL when unknown. */
/* Cluster mode: a collection from a peer's snapshot file and, when it keeps
 * originals on disk, the peer's originals file (both moved into its
 * directory), opened and added (the stream after lsn follows). */
sv_status svd_registry_adopt(svd_registry *r, const char *name, const sv_params *params, uint64_t incarnation,
                             const char *snapshot_file, const char *originals_file, uint64_t lsn,
                             sv_error *err);
/* Cluster mode: the shard the collections opened from now on follow. */
void svd_registry_set_follow_shard(svd_registry *r, uint32_t shard);
svd_coll *svd_registry_get(svd_registry *r, const char *name);
void svd_registry_put(svd_registry *r, svd_coll *c);
/* Drop: its directory is removed first (SV_ERR_IO if that fails, and the
 * collection stays); SV_ERR_NOT_FOUND when unknown. */
sv_status svd_registry_drop(svd_registry *r, const char *name, sv_error *err);
/* References to every collection, sorted by name (caller puts each and frees the array). */
size_t svd_registry_list(svd_registry *r, svd_coll ***out);
/* Release a list from svd_registry_list. */
void svd_registry_put_list(svd_registry *r, svd_coll **all, size_t n);

#endif
