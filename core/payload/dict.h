/*
 * A collection's string dictionary: each distinct string once, named by a
 * code (1, 2, ...; 0 is "none"), counted by its uses and freed with the
 * last (its code is then reused). Payload keys and string values are
 * stored as codes. Lookups hash with SipHash under a random key (as the id
 * map does), so strings chosen to collide cannot make them slow.
 *
 * Not thread-safe by itself (the collection's lock).
 */
#ifndef SV_DICT_H
#define SV_DICT_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"

typedef struct sv_dict sv_dict;

sv_dict *sv_dict_create(const sv_allocator *a, sv_tally *t);
void sv_dict_free(sv_dict *d); /* NULL is a no-op */

/* The code of s[0..len), or 0 when it is not in the dictionary. */
uint32_t sv_dict_find(const sv_dict *d, const char *s, size_t len);
/* The code of s[0..len) with one more use (added with one use when new).
 * SV_ERR_RESOURCE (nothing changed) when out of memory. */
sv_status sv_dict_intern(sv_dict *d, const char *s, size_t len, uint32_t *code);
/* One more / one less use of a code; the entry goes with its last use. */
void sv_dict_ref(sv_dict *d, uint32_t code);
void sv_dict_unref(sv_dict *d, uint32_t code);
/* The NUL-terminated string of a code in use (NULL otherwise). */
const char *sv_dict_str(const sv_dict *d, uint32_t code);
/* Strings held. */
uint64_t sv_dict_count(const sv_dict *d);

#endif
