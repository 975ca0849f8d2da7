/*
 * Checks of text a client sends (ids, collection names): protobuf strings
 * must be UTF-8, and a C string stops at a NUL that protobuf allows, so an
 * id "x\0one" would silently become "x". Every such field is checked before
 * it is used; a failure names the item and the byte.
 */
#ifndef SVD_TEXT_H
#define SVD_TEXT_H

#include <stddef.h>

/*
 * Check a string field of a decoded request (see svd_request_strlen):
 * 0 when it holds no NUL and is valid UTF-8; else -1 and `why` (cap bytes)
 * says what and where, e.g. "contains a NUL byte at offset 1".
 */
int svd_text_check(const char *field, char *why, size_t cap);

#endif
