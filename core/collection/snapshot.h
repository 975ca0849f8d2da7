/*
 * Snapshots: a collection's whole state in one versioned, checksummed file.
 *
 * Layout (little-endian): a 32-byte header, then sections in a fixed order,
 * each  u32 tag | u32 0 | u64 len | len bytes | u32 crc32c(the len bytes):
 *
 *   header   "SVSNAP\0\1" | u32 version (1) | u32 0 | u64 lsn | u32 0 |
 *            u32 crc32c(bytes 0..27)
 *   META     parameters, counts, entry point, id counter, rng state
 *   MEAN     the quantizer mean (dim f32), empty when untrained
 *   STATES   one byte per slot (free, buffered, indexed, deleted)
 *   IDS      per slot: u8 0 | u8 1 + u64 number | u8 2 + u8 len + bytes
 *   FREE     u32 recycled slots
 *   BUFFER   per buffered vector: u32 slot + dim f32
 *   CODES    the vector store's records of slots [0, META.store_slots)
 *   EDGES    per slot: u8 count + count u32 neighbours
 *   END      empty; the file ends right after it
 *
 * `lsn` is the last log record the snapshot contains. Loading checks every
 * section's checksum before reading it, every size against the file, and
 * every value that indexes memory (slots, counts, degrees), and fails with
 * SV_ERR_CORRUPT naming the offset otherwise: it never trusts the bytes.
 */
#ifndef SV_SNAPSHOT_H
#define SV_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

/*
 * Taking a snapshot. The collection's maintenance lock is held throughout
 * (no flush or consolidation). `quiesce` is called next: it must stop adds
 * and deletes and return the LSN of the last change applied (durable.c takes
 * its ordering lock and rotates the log). Ids, states, free list and buffer
 * are written under the read lock (searches go on); then `resume` lets adds
 * and deletes go on while the codes and edges, which only a flush or a
 * consolidation change, are written. The caller fsyncs and renames.
 */
typedef struct sv_snapshot_hooks {
    sv_status (*quiesce)(void *ctx, uint64_t *lsn, sv_error *err);
    void (*resume)(void *ctx);
    void *ctx;
} sv_snapshot_hooks;

typedef struct sv_snapshot_info {
    uint64_t lsn;
    uint64_t bytes;
    double stall_seconds;  /* adds and deletes waited this long */
    double seconds;        /* whole write, without the caller's fsync */
} sv_snapshot_info;

sv_status sv_snapshot_write(sv_collection *c, int fd, const sv_snapshot_hooks *hooks,
                            sv_snapshot_info *info, sv_error *err);

/*
 * Load a snapshot image. `expect` gives the parameters the collection must
 * have (the data directory's record of them) plus the allocator and threads
 * to use. The new collection is in manual-flush mode (durable.c flushes).
 */
sv_status sv_snapshot_load(const uint8_t *data, size_t len, const sv_params *expect,
                           sv_collection **out, uint64_t *lsn, sv_error *err);

/* The snapshot name for lsn ("snap-00000000000000000042.svs") and back. */
void sv_snapshot_name(uint64_t lsn, char *buf, size_t cap);
int sv_snapshot_name_lsn(const char *name, uint64_t *lsn);

#endif
