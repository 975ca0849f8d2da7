/* UTF-8 and NUL checks of client text (see text.h). */
#include "text.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rpc.h"
#include "utf8.h"

int svd_text_check(const char *field, char *why, size_t cap)
{
    size_t len = svd_request_strlen(field);
    size_t clen = strnlen(field, len);
    if (clen != len) {
        snprintf(why, cap, "contains a NUL byte at offset %zu", clen);
        return -1;
    }
    size_t bad = sv_utf8_invalid_at((const unsigned char *)field, len);
    if (bad != len) {
        snprintf(why, cap, "is not valid UTF-8 (byte 0x%02x at offset %zu)",
                 ((const unsigned char *)field)[bad], bad);
        return -1;
    }
    return 0;
}
