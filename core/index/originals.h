/*
 * Originals on disk: each vector's full-precision float32 original, kept
 * in a file beside the snapshot and never in the arena (memory rule 2), so
 * a search can navigate on the 8-bit codes and re-rank its best candidates
 * exactly.
 *
 * File layout: a 4,096-byte header, then one record of dim float32 per
 * slot at 4096 + slot * 4 * dim (slots are the engine's dense uint32s; a
 * recycled slot's record is overwritten by its next vector):
 *
 *   header  "SVORIG\0\1" | u32 version (1) | u32 format (1 = f32) |
 *           u32 dim | u32 0 | ... zero ... | u32 crc32c(bytes 0..4091)
 *
 * Memory: the records are read through read-only MAP_SHARED maps of 4,096
 * slots each (they never move while the collection grows), so the page
 * cache holds the hot ones and the kernel may drop the rest: that share is
 * reported apart (resident_bytes), not as the collection's memory. Records
 * are written with pwrite(2), never through a map: the space is allocated
 * first (fallocate) so a full disk fails the reservation with a clear error
 * instead of killing the process with SIGBUS on a write to a hole.
 *
 * Threads: reserve, move, truncate and the chunk table change under the
 * collection's write lock; put writes a record no reader can reach yet (a
 * slot being flushed); get reads under the read lock.
 */
#ifndef SV_ORIGINALS_H
#define SV_ORIGINALS_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"

#define SV_ORIG_HEADER 4096u

typedef struct sv_originals sv_originals;

/* Open (or create) the file at `path`; path NULL: an unnamed temporary file
 * in $TMPDIR (or /tmp), gone when closed. An existing file must carry this
 * dim (else SV_ERR_CORRUPT). */
sv_status sv_orig_open(const sv_allocator *a, sv_tally *t, const char *path, uint32_t dim,
                       sv_originals **out, sv_error *err);
void sv_orig_close(sv_originals *o); /* NULL is a no-op */

/* Check a header (fuzzed): SV_OK when buf[0..len) is a valid header for dim. */
sv_status sv_orig_check_header(const uint8_t *buf, size_t len, uint32_t dim, sv_error *err);

/* Map and allocate disk space for slots [0, n_slots). SV_ERR_IO (disk full,
 * ...) or SV_ERR_RESOURCE: nothing the readers see changed. */
sv_status sv_orig_reserve(sv_originals *o, uint32_t n_slots, sv_error *err);
/* Write slot's record (slot < reserved). SV_ERR_IO on a failed write. */
sv_status sv_orig_put(sv_originals *o, uint32_t slot, const float *x);
/* The record of a reserved slot (NULL past the reserved range). */
const float *sv_orig_get(const sv_originals *o, uint32_t slot);
/* Compaction: copy a record to another reserved slot. */
sv_status sv_orig_move(sv_originals *o, uint32_t from, uint32_t to);
/* Drop the maps and the file's bytes past n_slots. */
sv_status sv_orig_truncate(sv_originals *o, uint32_t n_slots, sv_error *err);
/* fdatasync: the records written so far survive a crash of the machine. */
sv_status sv_orig_sync(sv_originals *o, sv_error *err);

typedef struct sv_orig_usage {
    uint64_t file_bytes;     /* the file's length */
    uint64_t disk_bytes;     /* blocks the file holds on disk */
    uint64_t resident_bytes; /* of the mapped records, pages in the page cache */
} sv_orig_usage;
void sv_orig_get_usage(const sv_originals *o, uint32_t n_slots, sv_orig_usage *u);

#endif
