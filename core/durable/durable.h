/*
 * A durable collection: an sv_collection plus its directory, holding
 *
 *   params                    the parameters (written once, at create)
 *   wal-<first lsn>.log       write-ahead log segments (wal.h)
 *   snap-<lsn>.svs            snapshots (snapshot.h); the newest counts
 *   originals                 full-precision originals, when the collection
 *                             keeps them on disk (originals.h): fsynced
 *                             before each snapshot is renamed into place,
 *                             rewritten by the replay for what the log adds,
 *                             checked against the codes at open
 *
 * Every add and delete is checked, appended to the log in the order it was
 * checked, made durable (fsync, group commit), and only then applied where
 * reads see it; a call that returned SV_OK is never lost, and nothing a read
 * returned is taken back by a crash. The log also records the
 * quantizer's mean before it first encodes anything and the point where
 * each flush takes the write buffer, so a replay rebuilds the same codes
 * and the same split between indexed and buffered vectors (the graph's
 * edges come from parallel inserts and can differ; exhaustive searches and
 * every stored vector are the same). A snapshot rotates the log,
 * writes the collection to a temporary file, fsyncs and renames it, and
 * removes the log segments and snapshots it replaces.
 *
 * Opening loads the newest snapshot that checks out and replays the log
 * after it. A torn final record (a crash during an append) is cut off and
 * reported; any other damage fails the open with SV_ERR_CORRUPT naming the
 * file and offset: acknowledged data is never dropped silently. An older
 * snapshot is used only when the log still covers everything after it.
 *
 * dir NULL gives the same calls without persistence (":memory:").
 */
#ifndef SV_DURABLE_H
#define SV_DURABLE_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"
#include "snapshot.h"

#define SV_ORIGINALS_FILE "originals"

typedef struct sv_durable_options {
    uint32_t sync_interval_ms;   /* 0: fsync before each call returns (default);
                                    > 0: fsync that often, calls return at once */
    uint64_t snapshot_log_bytes; /* sv_durable_snapshot_due past this much log */
    uint32_t buffer_factor;      /* adds get SV_ERR_BUSY while the write buffer holds at
                                    least the flush threshold and the batch would take
                                    it past buffer_factor x the threshold; 0 = no bound */
} sv_durable_options;

typedef struct sv_durable sv_durable;

/* Create the directory (must not exist) with its params and an empty log.
 * The collection never flushes on its own: the owner calls sv_durable_flush
 * (sv_durable_flush_due says when). */
sv_status sv_durable_create(const char *dir, const sv_params *p, const sv_durable_options *o,
                            sv_durable **out, sv_error *err);

typedef struct sv_recovery {
    uint64_t snapshot_lsn;      /* 0: none loaded */
    uint64_t replayed;          /* log records applied after it */
    uint64_t last_lsn;
    uint64_t torn_bytes;        /* cut off the end of the log */
    double snapshot_seconds;    /* loading the snapshot */
    double seconds;             /* the whole open */
    char note[256];             /* what was cut or skipped, for the server log */
} sv_recovery;

/* Open an existing directory (recovery). `a` and `threads` are the run
 * time's; everything else comes from the directory. */
sv_status sv_durable_open(const char *dir, const sv_allocator *a, uint32_t threads,
                          const sv_durable_options *o, sv_durable **out, sv_recovery *rec,
                          sv_error *err);
void sv_durable_free(sv_durable *d); /* closes the log; takes no snapshot */

/* ---- following a log another process writes (cluster mode, follow.h) ---------- */

struct sv_log;
struct sv_follow_ids;
/* A follower's directory from a snapshot another replica wrote: params,
 * the snapshot file (moved in, as holding the log through lsn) and, for
 * originals on disk, that replica's originals file (moved in; required
 * then, refused otherwise), built under a temporary name and renamed to
 * dir; sv_durable_open_follower opens it (the log's records after lsn
 * follow) and checks every indexed original against its code. */
sv_status sv_durable_prepare_follower(const char *dir, const sv_params *p, const char *snapshot_file,
                                      const char *originals_file, uint64_t lsn, sv_error *err);
/* As sv_durable_create and sv_durable_open, but the collection follows
 * `log` (taken in every case: closed on failure): adds and deletes are
 * refused (SV_ERR_INVALID_ARGUMENT); records come in by sv_durable_apply in LSN
 * order; snapshots hold the LSN applied, and release() tells the log. Open
 * loads the newest snapshot the log covers and applies the log after it
 * (a log purged past every snapshot fails with SV_ERR_CORRUPT). */
sv_status sv_durable_create_follower(const char *dir, const sv_params *p, const sv_durable_options *o,
                                     struct sv_log *log, const struct sv_follow_ids *f, sv_durable **out,
                                     sv_error *err);
sv_status sv_durable_open_follower(const char *dir, const sv_allocator *a, uint32_t threads,
                                   const sv_durable_options *o, struct sv_log *log,
                                   const struct sv_follow_ids *f, sv_durable **out, sv_recovery *rec,
                                   sv_error *err);
/* Apply the record at lsn. SV_OK: done (applied, refused the same way on
 * every replica, or a duplicate: *res says which, err why); an LSN already
 * applied is a no-op. SV_ERR_BUSY: the write buffer is full,
 * apply it again after a flush. Anything else applied nothing. */
struct sv_follow_result;
sv_status sv_durable_apply(sv_durable *d, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len,
                           struct sv_follow_result *res, sv_error *err);
/* What became of each record sv_durable_follow applied (why: "" when OK). */
typedef void (*sv_durable_outcome_fn)(void *ctx, uint64_t lsn, const struct sv_follow_result *res, const char *why);
/* Read the followed log after the last LSN applied (waiting up to wait_ms
 * for a record when none is there) and apply what came; *applied counts
 * the records. Errors as sv_durable_apply's, or the log's (SV_ERR_IO: not
 * reachable now; SV_ERR_CORRUPT: records are missing). One thread at a
 * time per collection. */
sv_status sv_durable_follow(sv_durable *d, uint32_t wait_ms, sv_durable_outcome_fn fn, void *ctx,
                            uint64_t *applied, sv_error *err);
/* The last LSN applied (following), without a lock. */
uint64_t sv_durable_applied(sv_durable *d);
/* How the keyed record at lsn applied, from the window of keys (follow.h):
 * 1 and *res when the window holds it (also after a restart). */
int sv_durable_window_outcome(sv_durable *d, uint64_t lsn, struct sv_follow_result *res);
/* The last LSN its log holds (following: the stream's end, asked now). */
uint64_t sv_durable_log_last(sv_durable *d);

const char *sv_durable_dir(const sv_durable *d); /* NULL in memory */

/* ---- writes: durable before visible ----------------------------------------- */

/* As sv_collection_add, but the batch is checked and made invisible-pending,
 * logged, fsynced, and only then made searchable: no read ever sees a vector
 * a crash could take back. A failed log write or fsync leaves nothing
 * (SV_ERR_IO). SV_ERR_BUSY: the write buffer is full (buffer_factor), retry
 * after the next flush; nothing changed. */
sv_status sv_durable_add(sv_durable *d, const float *vectors, size_t n, uint32_t dim,
                         const char *const *ids, uint64_t *assigned, sv_error *err);
/* sv_durable_add with a payload per vector (payloads NULL: none), logged in
 * the same record. */
sv_status sv_durable_add_payloads(sv_durable *d, const float *vectors, size_t n, uint32_t dim,
                                  const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                                  sv_error *err);
/* As sv_collection_index_key, then one INDEX record (synced when the log
 * waits for fsync), so a restart and the followers index the key too.
 * The index is built before it is logged: an index is not data (a filter
 * answers the same without it), so a log that fails leaves it until a
 * restart, and the call says so. */
sv_status sv_durable_index_key(sv_durable *d, const char *key, sv_error *err);
uint32_t sv_durable_indexed_keys(sv_durable *d, const char **keys, uint32_t cap);
/* As sv_collection_upsert, durable before it is seen: one ADD record whose
 * given ids are marked as replacing (logrec.h); the replacements happen
 * when the batch is published, each in one step. */
sv_status sv_durable_upsert(sv_durable *d, const float *vectors, size_t n, uint32_t dim, const char *const *ids,
                            const sv_payload *payloads, uint64_t *assigned, size_t *replaced, sv_error *err);
/* As sv_collection_set_payload, durable before it is seen (one SET_PAYLOAD
 * record). NOT_FOUND for an id unknown or being deleted. */
sv_status sv_durable_set_payload(sv_durable *d, const char *id, const sv_payload *pl, sv_payload_mode mode,
                                 sv_error *err);
/* Reads of payloads: as sv_collection_get_payload and
 * sv_collection_count_filtered. */
sv_status sv_durable_get_payload(sv_durable *d, const char *id, void *buf, size_t cap, sv_payload *out, size_t *need,
                                 sv_error *err);
sv_status sv_durable_count_filtered(sv_durable *d, const sv_filter *filter, const sv_interrupt *intr, uint64_t *count,
                                    sv_error *err);
/* As sv_collection_scroll. */
sv_status sv_durable_scroll(sv_durable *d, const sv_filter *filter, const sv_interrupt *intr, uint64_t *cursor,
                            uint32_t limit, char (*ids)[SV_ID_MAX + 1], uint32_t *n, sv_error *err);
/* As sv_collection_delete, durable before the vectors disappear. A delete
 * of an id another delete is removing fails (NOT_FOUND). *deleted (may be
 * NULL) counts the distinct ids removed. */
sv_status sv_durable_delete(sv_durable *d, const char *const *ids, size_t n, size_t *deleted,
                            sv_error *err);
/* Flush the write buffer (logging the quantizer mean first, once). */
sv_status sv_durable_flush(sv_durable *d, sv_error *err);
/* Consolidate the tombstones (the point is logged: a replay does the same). */
sv_status sv_durable_consolidate(sv_durable *d, sv_error *err);
/* Compact the slot range (sv_collection_compact); *moved may be NULL. */
sv_status sv_durable_compact(sv_durable *d, uint32_t *moved, sv_error *err);

/* ---- reads (the collection itself stays behind this handle) ------------------- */

const sv_params *sv_durable_params(const sv_durable *d);
sv_status sv_durable_search(sv_durable *d, const float *query, uint32_t dim, const sv_search_opts *o,
                            sv_hit *hits, size_t *n_hits, sv_error *err);
sv_status sv_durable_get(sv_durable *d, const char *id, float *out, uint32_t dim, sv_error *err);
/* Recall calibration of the collection (sv_collection_calibrate) and the
 * last one (0: none). */
sv_status sv_durable_calibrate(sv_durable *d, uint32_t queries, uint64_t seed, sv_error *err);
int sv_durable_calibration(sv_durable *d, sv_calibration *out);
uint64_t sv_durable_count(sv_durable *d);
size_t sv_durable_id_len_max(sv_durable *d);
void sv_durable_collection_stats(sv_durable *d, sv_stats *out);
sv_status sv_durable_validate(sv_durable *d, sv_error *err);

/* ---- what the owner's maintenance asks ------------------------------------------ */

/* The counts kept as they change (live, tombstones, buffered, slots,
 * free_slots), in O(1); the rest of *out is zero. */
void sv_durable_counts(sv_durable *d, sv_stats *out);
/* Buffered vectors reached the flush threshold. */
int sv_durable_flush_due(sv_durable *d);
/* Tombstones are at least `ratio` of the indexed nodes plus tombstones
 * (and at least `min_tombstones`). */
int sv_durable_consolidate_due(sv_durable *d, double ratio, uint64_t min_tombstones);
/* Free slots are at least `ratio` of the slot range (and at least 64, or
 * any with ratio 0): compaction would give memory back. */
int sv_durable_compact_due(sv_durable *d, double ratio);
/* Vectors not in the graph yet (the write buffer and a running flush's
 * rows): what every search scans by brute force. */
uint64_t sv_durable_buffered(sv_durable *d);

/* Take a snapshot now (one at a time per collection; SV_OK and lsn 0 in
 * memory). Searches go on; adds and deletes wait for info->stall_seconds. */
sv_status sv_durable_snapshot(sv_durable *d, sv_snapshot_info *info, sv_error *err);
/* 1 when the log since the last snapshot passed snapshot_log_bytes. */
int sv_durable_snapshot_due(sv_durable *d);

typedef struct sv_durable_stats {
    uint64_t log_bytes;           /* log since the last snapshot */
    uint64_t log_bytes_total;     /* appended since open */
    uint64_t syncs;
    double sync_seconds;
    uint64_t last_lsn;
    uint64_t snapshots;           /* taken since open */
    uint64_t flushes;             /* since open */
    uint64_t consolidations;      /* since open */
    sv_snapshot_info last_snapshot;
} sv_durable_stats;
void sv_durable_get_stats(sv_durable *d, sv_durable_stats *out);

/* Drop: refuse further writes and snapshots (SV_ERR_NOT_FOUND) and remove
 * the directory. The object stays valid for calls in flight; free it after. */
sv_status sv_durable_drop(sv_durable *d, sv_error *err);
/* Remove a collection directory for good: renamed to <dir>~drop-XXXXXX
 * (durable at once), then deleted. Creates build under <dir>~tmp-XXXXXX.
 * Whoever owns the parent removes such leftovers after a crash. */
sv_status sv_durable_remove_dir(const char *dir, sv_error *err);

/* The params file: encode into buf[SV_PARAMS_BYTES], parse (checks all). */
#define SV_PARAMS_BYTES 64u
void sv_params_encode(const sv_params *p, uint8_t *buf);
sv_status sv_params_decode(const uint8_t *buf, size_t len, sv_params *p, sv_error *err);

#endif
