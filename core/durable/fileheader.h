/*
 * The 32-byte header that starts a log segment and a snapshot:
 *
 *   8-byte magic | u32 version | u32 0 | u64 lsn | u32 0 | u32 crc32c(bytes 0..27)
 *
 * (little-endian). The lsn is a segment's first LSN, a snapshot's last.
 */
#ifndef SV_FILEHEADER_H
#define SV_FILEHEADER_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

#define SV_FILE_HEADER 32u

void sv_file_header_encode(uint8_t h[SV_FILE_HEADER], const uint8_t magic[8], uint32_t version,
                           uint64_t lsn);

/* Check magic, checksum and version of data[0..len) (len >= 32, else
 * "not a slimvec <what>") and give its lsn; SV_ERR_CORRUPT naming offset 0
 * and `what` ("log segment", "snapshot") otherwise. */
sv_status sv_file_header_decode(const uint8_t *data, size_t len, const uint8_t magic[8],
                                uint32_t version, const char *what, uint64_t *lsn, sv_error *err);

#endif
