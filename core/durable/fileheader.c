/* The header of log segments and snapshots (see fileheader.h). */
#include "fileheader.h"

#include <string.h>

#include "crc32c.h"
#include "error.h"

void sv_file_header_encode(uint8_t h[SV_FILE_HEADER], const uint8_t magic[8], uint32_t version,
                           uint64_t lsn, uint64_t salt)
{
    memset(h, 0, SV_FILE_HEADER);
    memcpy(h, magic, 8);
    memcpy(h + 8, &version, 4);
    uint32_t lo = (uint32_t)salt, hi = (uint32_t)(salt >> 32);
    memcpy(h + 12, &lo, 4);
    memcpy(h + 16, &lsn, 8);
    memcpy(h + 24, &hi, 4);
    uint32_t crc = sv_crc32c(0, h, 28);
    memcpy(h + 28, &crc, 4);
}

sv_status sv_file_header_decode(const uint8_t *data, size_t len, const uint8_t magic[8],
                                uint32_t min_version, uint32_t max_version, const char *what,
                                uint32_t *version, uint64_t *lsn, uint64_t *salt, sv_error *err)
{
    if (len < SV_FILE_HEADER || memcmp(data, magic, 8) != 0)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: not a slimvec %s (bad magic)", what);
    uint32_t crc, ver;
    memcpy(&crc, data + 28, 4);
    memcpy(&ver, data + 8, 4);
    if (crc != sv_crc32c(0, data, 28))
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: %s header checksum mismatch", what);
    if (ver < min_version || ver > max_version)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: unsupported %s version %u", what, ver);
    uint32_t lo, hi;
    memcpy(&lo, data + 12, 4);
    memcpy(&hi, data + 24, 4);
    if (version)
        *version = ver;
    if (lsn)
        memcpy(lsn, data + 16, 8);
    if (salt)
        *salt = (uint64_t)hi << 32 | lo;
    return SV_OK;
}
