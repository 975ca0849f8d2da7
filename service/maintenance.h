/*
 * The server's maintenance thread: every flush, consolidation and snapshot
 * runs here, off the request path. It wakes when kicked (an ingest left a
 * collection's buffer at its flush threshold), when a task is submitted
 * (the Flush and Snapshot RPCs), and once a period to look at every
 * collection:
 *   - flush when the write buffer holds the flush threshold;
 *   - consolidate when tombstones are `consolidate_ratio` of the vectors
 *     (the point is logged, so a replay consolidates at the same one);
 *   - compact when free slots are `compact_ratio` of the slot range, so a
 *     churned collection's memory comes back down;
 *   - once a collection has had no writes for `quiet_seconds`, consolidate
 *     and compact whatever is left below those ratios: a quiet collection
 *     ends with no tombstone and no free slot;
 *   - snapshot when the log passed --snapshot-log-bytes; a failed snapshot
 *     is retried after a back-off that doubles up to five minutes;
 *   - calibrate recall by search list (sv_collection_calibrate) once a
 *     collection holds calibration_min vectors with none buffered and has
 *     had no writes for a period, and again when its count has doubled or
 *     halved since.
 * After each step that empties a buffer it calls `wake` (the RPC server
 * runs deferred ingest again).
 */
#ifndef SVD_MAINTENANCE_H
#define SVD_MAINTENANCE_H

#include "registry.h"

typedef struct svd_maint svd_maint;

typedef struct svd_maint_options {
    unsigned period_ms;          /* look at every collection this often */
    double consolidate_ratio;    /* tombstones / (live + tombstones) that triggers it */
    uint64_t consolidate_min;    /* and at least this many tombstones */
    double compact_ratio;        /* free slots / slot range that triggers a compaction */
    double quiet_seconds;        /* a collection without writes this long is consolidated and
                                    compacted whatever the ratios (0: never) */
    int snapshots;               /* 1: snapshot when the log passed the threshold */
    uint32_t calibration_queries;/* recall calibration's queries (0: never calibrate) */
    uint64_t calibration_min;    /* first calibration at this many vectors, then again
                                    when the count has doubled or halved */
    void (*wake)(void *ctx);     /* after a step that made room (may be NULL) */
    void *wake_ctx;
} svd_maint_options;

svd_maint *svd_maint_start(svd_registry *r, const svd_maint_options *o);
/* Finishes the step in progress, fails the tasks left (UNAVAILABLE-like
 * SV_ERR_IO "shutting down") and joins the thread. NULL: no-op. */
void svd_maint_stop(svd_maint *m);
/* Something may be due: look soon. Cheap; any thread. */
void svd_maint_kick(svd_maint *m);

typedef enum svd_task_kind { SVD_TASK_FLUSH, SVD_TASK_SNAPSHOT } svd_task_kind;
typedef struct svd_task svd_task;

/* Ask for a flush or a snapshot of c (a reference is taken). NULL when out
 * of memory or stopping. */
svd_task *svd_maint_submit(svd_maint *m, svd_coll *c, svd_task_kind kind);
/* 1 once the task ran; then *err and *info (snapshots) hold its outcome. */
int svd_task_done(svd_task *t, sv_status *st, sv_error *err, sv_snapshot_info *info);
/* The submitter lets go (done or not: an abandoned task still runs). */
void svd_task_release(svd_task *t);

/* Snapshot every collection with log since its last snapshot (at
 * shutdown, after svd_maint_stop); prints each. Returns how many failed. */
int svd_snapshot_all(svd_registry *r);

#endif
