/*
 * A collection's log, whatever holds it. The durable layer (durable.c)
 * writes through this interface only, so the log can be the local segment
 * files of wal.c (single node, sv_log_local_start) or, in cluster mode, a
 * replicated stream kept by another engine (NATS JetStream now; Kafka would
 * fit the same operations), whose backend lives outside the core.
 *
 * The contract every backend keeps:
 *   - append gives records consecutive LSNs in the order of the calls; a
 *     failed append appends nothing; `key`, when not NULL, makes the
 *     append idempotent where the backend de-duplicates (a stream's message
 *     id): a second append with the same key inside the backend's window
 *     appends nothing and returns the first one's LSN (*duplicate = 1);
 *     the local log is only ever given NULL;
 *   - sync(lsn) returns once every record through lsn is durable by the
 *     backend's definition (fsynced here; committed by a quorum for a
 *     replicated log); after a failure that may have lost written records
 *     every later call fails;
 *   - seal marks a snapshot boundary: every record appended so far (through
 *     *last_lsn) will be in the snapshot being written, and records
 *     appended from now on will not;
 *   - release(lsn) says that snapshot is durable: the backend may drop
 *     every record through lsn (delete segments, purge a stream);
 *   - read(after) visits the records after `after` in LSN order, through
 *     the last one the log holds when the call starts (waiting up to
 *     wait_ms for one when there is none yet; with wait_ms 0 a remote log
 *     may stop at what it has at hand, a poll): the same call replays a
 *     log at start-up and follows a stream another process appends to;
 *   - covers(after) says whether the log still holds every record after
 *     `after` (no segment missing, nothing purged past it), the test a
 *     snapshot at `after` must pass before recovery builds on it;
 *   - begin readies a log that was opened for reading to append after its
 *     last record, and never at or below `floor` (the snapshot recovery
 *     built on: its segments may all be gone) (the local log cuts a torn
 *     tail and starts a segment).
 *
 * Recovery (recovery.c) is the same over every backend: the newest
 * snapshot the log covers, then read() from its LSN.
 */
#ifndef SV_LOG_H
#define SV_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "slimvec.h"

/* Record types, the same in every backend (payloads: logrec.h). */
enum { SV_WAL_ADD = 1, SV_WAL_DELETE = 2, SV_WAL_TRAIN = 3, SV_WAL_FLUSH = 4, SV_WAL_CONSOLIDATE = 5,
       SV_WAL_KEYED = 6 /* a followed log's record with its writer's key (follow.h) */,
       SV_WAL_SET_PAYLOAD = 7, SV_WAL_INDEX = 8 };

typedef struct sv_log_stats {
    uint64_t next_lsn;
    uint64_t bytes;         /* bytes appended since the last seal (or the start) */
    uint64_t total_bytes;   /* bytes appended since the start */
    uint64_t syncs;         /* durability waits that did the work (fsyncs, commits) */
    double sync_seconds;    /* time spent in them */
} sv_log_stats;

/* A record given to read()'s visitor; a nonzero status stops the read and is
 * returned (err filled by the visitor). */
typedef sv_status (*sv_log_visit)(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *payload,
                                  size_t len, sv_error *err);

typedef struct sv_log_ops {
    sv_status (*append)(void *impl, uint32_t type, const char *key, const struct iovec *parts, int n_parts,
                        uint64_t *lsn, int *duplicate, sv_error *err);
    sv_status (*sync)(void *impl, uint64_t lsn, sv_error *err);
    sv_status (*seal)(void *impl, uint64_t *last_lsn, sv_error *err);
    void (*release)(void *impl, uint64_t lsn);
    sv_status (*read)(void *impl, uint64_t after, uint32_t wait_ms, sv_log_visit visit, void *ctx,
                      uint64_t *last_read, sv_error *err);
    int (*covers)(void *impl, uint64_t after, char *why, size_t cap);
    uint64_t (*last)(void *impl); /* the last LSN the log holds (0: none) */
    sv_status (*begin)(void *impl, uint64_t floor, sv_error *err);
    void (*stats)(void *impl, sv_log_stats *out);
    void (*close)(void *impl); /* sync what is appended; free the backend and its sv_log */
    /* sync, durable even where sync is relaxed (the local log's interval
     * mode); NULL: sync always is. */
    sv_status (*sync_force)(void *impl, uint64_t lsn, sv_error *err);
} sv_log_ops;

typedef struct sv_log {
    const sv_log_ops *ops;
    void *impl;
} sv_log;

/* The calls, for readability at the call sites. */
static inline sv_status sv_log_append(sv_log *l, uint32_t type, const struct iovec *parts, int n_parts,
                                      uint64_t *lsn, sv_error *err)
{
    return l->ops->append(l->impl, type, NULL, parts, n_parts, lsn, NULL, err);
}
static inline sv_status sv_log_append_keyed(sv_log *l, uint32_t type, const char *key, const struct iovec *parts,
                                            int n_parts, uint64_t *lsn, int *duplicate, sv_error *err)
{
    return l->ops->append(l->impl, type, key, parts, n_parts, lsn, duplicate, err);
}
static inline sv_status sv_log_sync(sv_log *l, uint64_t lsn, sv_error *err)
{
    return l->ops->sync(l->impl, lsn, err);
}

static inline sv_status sv_log_sync_force(sv_log *l, uint64_t lsn, sv_error *err)
{
    return (l->ops->sync_force ? l->ops->sync_force : l->ops->sync)(l->impl, lsn, err);
}
static inline sv_status sv_log_seal(sv_log *l, uint64_t *last_lsn, sv_error *err)
{
    return l->ops->seal(l->impl, last_lsn, err);
}
static inline void sv_log_release(sv_log *l, uint64_t lsn)
{
    l->ops->release(l->impl, lsn);
}
static inline sv_status sv_log_read(sv_log *l, uint64_t after, uint32_t wait_ms, sv_log_visit visit, void *ctx,
                                    uint64_t *last_read, sv_error *err)
{
    return l->ops->read(l->impl, after, wait_ms, visit, ctx, last_read, err);
}
static inline int sv_log_covers(sv_log *l, uint64_t after, char *why, size_t cap)
{
    return l->ops->covers(l->impl, after, why, cap);
}
static inline uint64_t sv_log_last(sv_log *l)
{
    return l->ops->last(l->impl);
}
static inline sv_status sv_log_begin(sv_log *l, uint64_t floor, sv_error *err)
{
    return l->ops->begin(l->impl, floor, err);
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

/*
 * Open the segments already in dir for reading, changing nothing: each is
 * checked record by record; only the newest may end in a torn record (a
 * crash during an append), which is reported in *torn_bytes and `note` and
 * cut by sv_log_begin, after which appends start at the last LSN + 1 (or
 * the floor's + 1: a snapshot may have released every segment, and the
 * new one may have died before its header was written). A
 * header-less segment (a crash while creating it) is removed. Any other
 * damage fails with SV_ERR_CORRUPT naming the segment and offset.
 */
sv_status sv_log_local_open(const char *dir, uint32_t sync_interval_ms, sv_log **out, uint64_t *torn_bytes,
                            char *note, size_t note_cap, sv_error *err);

#endif
