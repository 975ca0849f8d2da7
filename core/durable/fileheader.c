/* The header of log segments and snapshots (see fileheader.h). */
#include "fileheader.h"

#include <string.h>

#include "crc32c.h"
#include "error.h"

void sv_file_header_encode(uint8_t h[SV_FILE_HEADER], const uint8_t magic[8], uint32_t version,
                           uint64_t lsn)
{
    memset(h, 0, SV_FILE_HEADER);
    memcpy(h, magic, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 16, &lsn, 8);
    uint32_t crc = sv_crc32c(0, h, 28);
    memcpy(h + 28, &crc, 4);
}

sv_status sv_file_header_decode(const uint8_t *data, size_t len, const uint8_t magic[8],
                                uint32_t version, const char *what, uint64_t *lsn, sv_error *err)
{
    if (len < SV_FILE_HEADER || memcmp(data, magic, 8) != 0)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: not a slimvec %s (bad magic)", what);
    uint32_t crc, ver;
    memcpy(&crc, data + 28, 4);
    memcpy(&ver, data + 8, 4);
    if (crc != sv_crc32c(0, data, 28))
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: %s header checksum mismatch", what);
    if (ver != version)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: unsupported %s version %u", what, ver);
    memcpy(lsn, data + 16, 8);
    return SV_OK;
}
