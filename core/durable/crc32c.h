/*
 * CRC32C (Castagnoli), the checksum of the write-ahead log and snapshots.
 * SSE4.2's crc32 instruction when the CPU has it (chosen at run time, like
 * the distance kernels), a table otherwise. No Debian 12 C library offers
 * CRC32C (zlib's crc32 is the IEEE polynomial).
 */
#ifndef SV_CRC32C_H
#define SV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend `crc` (0 to start) over n bytes. Chaining calls equals one call
 * over the concatenation. */
uint32_t sv_crc32c(uint32_t crc, const void *data, size_t n);

#endif
