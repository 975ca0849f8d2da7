/*
 * A collection's log, whatever holds it. The durable layer (durable.c)
 * writes through this interface only, so the log can be the local segment
 * files of wal.c (single node, sv_log_local_start) or, in cluster mode, a
 * replicated stream kept by another engine (NATS JetStream now; Kafka would
 * fit the same operations), whose backend lives outside the core.
 *
 * The contract every backend keeps:
 *   - append gives records consecutive LSNs in the order of the calls; a
 *     failed append appends nothing;
 *   - sync(lsn) returns once every record through lsn is durable by the
 *     backend's definition (fsynced here; committed by a quorum for a
 *     replicated log); after a failure that may have lost written records
 *     every later call fails;
 *   - seal marks a snapshot boundary: every record appended so far (through
 *     *last_lsn) will be in the snapshot being written, and records
 *     appended from now on will not;
 *   - release(lsn) says that snapshot is durable: the backend may drop
 *     every record through lsn (delete segments, purge a stream).
 *
 * Replay at start-up reads the log the backend wrote (recovery.c reads the
 * local segments; a stream is read from the snapshot's LSN + 1).
 */
#ifndef SV_LOG_H
#define SV_LOG_H

#include <stdint.h>
#include <sys/uio.h>

#include "slimvec.h"

/* Record types, the same in every backend (payloads: logrec.h). */
enum { SV_WAL_ADD = 1, SV_WAL_DELETE = 2, SV_WAL_TRAIN = 3, SV_WAL_FLUSH = 4, SV_WAL_CONSOLIDATE = 5 };

typedef struct sv_log_stats {
    uint64_t next_lsn;
    uint64_t bytes;         /* bytes appended since the last seal (or the start) */
    uint64_t total_bytes;   /* bytes appended since the start */
    uint64_t syncs;         /* durability waits that did the work (fsyncs, commits) */
    double sync_seconds;    /* time spent in them */
} sv_log_stats;

typedef struct sv_log_ops {
    sv_status (*append)(void *impl, uint32_t type, const struct iovec *parts, int n_parts, uint64_t *lsn,
                        sv_error *err);
    sv_status (*sync)(void *impl, uint64_t lsn, sv_error *err);
    sv_status (*seal)(void *impl, uint64_t *last_lsn, sv_error *err);
    void (*release)(void *impl, uint64_t lsn);
    void (*stats)(void *impl, sv_log_stats *out);
    void (*close)(void *impl); /* sync what is appended; free the backend and its sv_log */
} sv_log_ops;

typedef struct sv_log {
    const sv_log_ops *ops;
    void *impl;
} sv_log;

/* The calls, for readability at the call sites. */
static inline sv_status sv_log_append(sv_log *l, uint32_t type, const struct iovec *parts, int n_parts,
                                      uint64_t *lsn, sv_error *err)
{
    return l->ops->append(l->impl, type, parts, n_parts, lsn, err);
}
static inline sv_status sv_log_sync(sv_log *l, uint64_t lsn, sv_error *err)
{
    return l->ops->sync(l->impl, lsn, err);
}
static inline sv_status sv_log_seal(sv_log *l, uint64_t *last_lsn, sv_error *err)
{
    return l->ops->seal(l->impl, last_lsn, err);
}
static inline void sv_log_release(sv_log *l, uint64_t lsn)
{
    l->ops->release(l->impl, lsn);
}
static inline void sv_log_get_stats(sv_log *l, sv_log_stats *out)
{
    l->ops->stats(l->impl, out);
}
/* Close and free (NULL is a no-op). */
void sv_log_close(sv_log *l);

/*
 * The local backend: wal.c's segments in dir, a new one started at
 * next_lsn (sync_interval_ms as for sv_wal_start). Seal rotates to a new
 * segment; release deletes the segments wholly at or below the LSN.
 */
sv_status sv_log_local_start(const char *dir, uint64_t next_lsn, uint32_t sync_interval_ms, sv_log **out,
                             sv_error *err);

#endif
