/*
 * The 32-byte header that starts a log segment and a snapshot:
 *
 *   8-byte magic | u32 version | u32 salt low | u64 lsn | u32 salt high |
 *   u32 crc32c(bytes 0..27)
 *
 * (little-endian). The lsn is a segment's first LSN, a snapshot's last.
 * The salt is 0 where a format has none (snapshots, log segments of
 * version 1); log segments of version 2 seed their records' checksums with
 * it (wal.h).
 */
#ifndef SV_FILEHEADER_H
#define SV_FILEHEADER_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

#define SV_FILE_HEADER 32u

void sv_file_header_encode(uint8_t h[SV_FILE_HEADER], const uint8_t magic[8], uint32_t version,
                           uint64_t lsn, uint64_t salt);

/* Check magic, checksum and version (min_version..max_version) of
 * data[0..len) (len >= 32, else "not a slimvec <what>") and give its
 * version, lsn and salt (each may be NULL); SV_ERR_CORRUPT naming offset 0
 * and `what` ("log segment", "snapshot") otherwise. */
sv_status sv_file_header_decode(const uint8_t *data, size_t len, const uint8_t magic[8],
                                uint32_t min_version, uint32_t max_version, const char *what,
                                uint32_t *version, uint64_t *lsn, uint64_t *salt, sv_error *err);

#endif
