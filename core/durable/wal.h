/*
 * Write-ahead log: one collection's changes as numbered, checksummed records
 * in segment files `wal-<first lsn, 20 digits>.log` of its directory.
 *
 * Segment layout (little-endian):
 *
 *   header, 32 bytes   "SVWAL\0\0\1" | u32 version (2) | u32 salt low |
 *                      u64 first lsn | u32 salt high | u32 crc32c(bytes 0..27)
 *   records            u32 len | u32 crc | u64 lsn | u32 type | len payload bytes
 *
 * A record's crc is the CRC32C of its len, lsn, type and payload (all but the
 * crc field), started from a seed drawn from the segment's random salt.
 * Why: records hold bytes a client chose (vectors, ids). Without the seed
 * a client could write a vector whose bytes form a valid record with the
 * next LSN; a crash that tears the real record before it would then look
 * like damage followed by an intact record, and the server would refuse to
 * start. The salt never leaves the disk, so such a forgery passes one check
 * in 2^32. Version 1 segments (no salt, seed 0) are still read.
 * LSNs count up by one across segments. A segment is written
 * only at its end, so a crash can tear only its final record: a bad record
 * with no intact record after it is a torn tail (never acknowledged, since
 * acknowledgements wait for the fsync). A bad record followed by an intact
 * one is corruption.
 *
 * Appends are serialised inside; sv_wal_sync implements group commit: one
 * fdatasync covers every record appended before it started, and callers
 * that arrive meanwhile wait for it instead of issuing their own.
 */
#ifndef SV_WAL_H
#define SV_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "log.h"
#include "slimvec.h"

#define SV_WAL_HEADER 32u
#define SV_WAL_REC_HEADER 20u
#define SV_WAL_MAX_PAYLOAD (1u << 30)


/* ---- reading (pure: parses bytes in memory) ---------------------------- */

typedef struct sv_wal_scan {
    uint64_t first_lsn;  /* from the header */
    uint64_t last_lsn;   /* of the last good record; first_lsn - 1 when none */
    size_t good_end;     /* offset just past the last good record */
    size_t n_records;
    int torn;            /* bytes after good_end are a torn final record */
} sv_wal_scan;

typedef sv_status (*sv_wal_visit)(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *payload,
                                  size_t len, size_t offset);

/*
 * Check a segment image record by record and call `visit` (may be NULL) on
 * each good one. SV_OK: every record up to good_end is good (torn says
 * whether a torn tail follows). SV_ERR_CORRUPT: a bad header or a bad
 * record that is not a torn tail; err names the offset. A visit error stops
 * the scan and is returned. A file shorter than the header (a crash while
 * creating it) is a torn, empty segment.
 */
sv_status sv_wal_parse(const uint8_t *data, size_t len, sv_wal_visit visit, void *ctx,
                       sv_wal_scan *out, sv_error *err);

/* A record's checksum: seed from sv_wal_seed(the segment's salt), len, and
 * the record's bytes after its crc field (lsn, type, payload). */
uint32_t sv_wal_seed(uint64_t salt);
uint32_t sv_wal_record_crc(uint32_t seed, uint32_t len, const uint8_t *rest, size_t rest_len);

/* The segment name for first_lsn into buf ("wal-00000000000000000001.log"). */
void sv_wal_segment_name(uint64_t first_lsn, char *buf, size_t cap);
/* 1 and *first_lsn when name is a segment name. */
int sv_wal_segment_lsn(const char *name, uint64_t *first_lsn);

/* ---- writing -------------------------------------------------------------- */

typedef struct sv_wal sv_wal;

/*
 * Start a new segment at next_lsn in dir (created, header fsynced, the
 * directory fsynced). sync_interval_ms 0: sv_wal_sync fsyncs (group commit);
 * > 0: a thread fsyncs that often and sv_wal_sync returns at once.
 */
sv_status sv_wal_start(const char *dir, uint64_t next_lsn, uint32_t sync_interval_ms,
                       sv_wal **out, sv_error *err);
/* Sync what is appended and close (NULL is a no-op). */
void sv_wal_close(sv_wal *w);

/* Append one record made of the parts (payload = their concatenation).
 * On failure nothing is appended. After an fsync failure every call fails
 * (SV_ERR_IO): the page cache may have dropped what was written. */
sv_status sv_wal_append(sv_wal *w, uint32_t type, const struct iovec *parts, int n_parts,
                        uint64_t *lsn, sv_error *err);
/* Make every record through lsn durable (see sync_interval_ms). */
sv_status sv_wal_sync(sv_wal *w, uint64_t lsn, sv_error *err);
/* The same, fsyncing even with sync_interval_ms > 0 (a point other files
 * rely on: see durable.c, consolidation with originals on disk). */
sv_status sv_wal_sync_force(sv_wal *w, uint64_t lsn, sv_error *err);
/* Seal the current segment (fsynced) and start the next one. *last_lsn gets
 * the last LSN of the sealed segments. */
sv_status sv_wal_rotate(sv_wal *w, uint64_t *last_lsn, sv_error *err);

/* Tests only: a hook every log's group-commit leader calls just before its
 * fdatasync (without the log's lock); a nonzero return fails that sync with
 * that errno. Process-wide; NULL removes it. */
typedef int (*sv_wal_sync_hook)(void *ctx);
void sv_wal_set_sync_hook(sv_wal_sync_hook hook, void *ctx);

typedef struct sv_wal_stats {
    uint64_t next_lsn;
    uint64_t bytes;         /* bytes appended since the wal started or last rotated */
    uint64_t total_bytes;   /* bytes appended since start */
    uint64_t syncs;         /* fdatasync calls */
    double sync_seconds;    /* time spent in them */
} sv_wal_stats;
void sv_wal_get_stats(sv_wal *w, sv_wal_stats *out);

#endif
