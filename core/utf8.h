/* UTF-8 validity of text from outside (ids, payload keys and values). */
#ifndef SV_UTF8_H
#define SV_UTF8_H

#include <stddef.h>

/* Offset of the first byte that makes s[0..len) invalid UTF-8 (overlong
 * forms, surrogates, code points past U+10FFFF, truncated sequences), or
 * len when it is valid. */
size_t sv_utf8_invalid_at(const unsigned char *s, size_t len);

#endif
