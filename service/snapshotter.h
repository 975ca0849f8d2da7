/*
 * Background snapshots: a thread that snapshots every collection whose log
 * passed the threshold (sv_durable_snapshot_due), and the snapshot of every
 * collection with unsnapshotted log at shutdown, so a restart after a
 * graceful stop only loads snapshots.
 */
#ifndef SVD_SNAPSHOTTER_H
#define SVD_SNAPSHOTTER_H

#include "registry.h"

typedef struct svd_snapshotter svd_snapshotter;

/* Checks every `period_ms`. NULL when the thread cannot start. */
svd_snapshotter *svd_snapshotter_start(svd_registry *r, unsigned period_ms);
void svd_snapshotter_stop(svd_snapshotter *s); /* waits for a snapshot in progress */

/* Snapshot every collection with log since its last snapshot; prints each.
 * Returns the number that failed. */
int svd_snapshot_all(svd_registry *r);

#endif
