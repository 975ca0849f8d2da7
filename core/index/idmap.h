/*
 * Id map: the only place string ids exist. Maps external ids to dense uint32
 * slots and back.
 *
 * An id is 1..SV_ID_MAX bytes. A canonical decimal number below 2^63 ("0",
 * "17"; not "017", "+1", "-0", " 1") is a numeric id and is stored as the
 * number itself: no string storage. Any other id is a string, copied once
 * into an allocation of its own (a length byte + the bytes, no NUL).
 *
 * Layout:
 *   keys[slot]  uint64 word per slot:  UINT64_MAX      unbound slot
 *                                      bit 63 clear    the numeric id
 *                                      bit 63 set      pointer to the string
 *                                                      (user-space pointers
 *                                                      never use bit 63)
 *   table[]     open addressing, linear probing, power-of-two size, each
 *               entry slot+1 (0 = empty); the key is found through keys[].
 *               Removal shifts back (no tombstones). Grows at 80% load.
 * So a numeric id costs 8 bytes + ~5 bytes of table; a string id adds its
 * allocation.
 *
 * Identity mode: while every bound slot's id is its own number (assigned
 * ids of a collection that only grew, or numbers given in slot order),
 * there are no keys[] and no table, only one bit per slot: an id costs
 * 1/8 byte. The first binding that breaks it builds the layout above.
 *
 * The table position is SipHash-2-4 (libsodium) of the id under random keys
 * drawn once per process and never shown: clients choose ids, and with a
 * hash they can predict (the old mix64(id ^ seed), seed being a collection
 * parameter anyone can read) they can put thousands of ids in one probe run
 * and make inserts quadratic under the write lock. Numbers hash as their 8
 * little-endian bytes, strings as their bytes, each kind under its own key.
 * Nothing stored depends on the hash, so the keys change at every start.
 *
 * Not thread-safe: the collection's lock guards it.
 */
#ifndef SV_IDMAP_H
#define SV_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"

typedef struct sv_idmap sv_idmap;

/* All allocations go through `a` and are tallied in `t` (may be NULL).
 * `seed` is ignored: it used to salt the hash, which made the hash
 * predictable (see above); it stays until the callers stop passing it.
 * Returns NULL when out of memory, or when libsodium could not be
 * initialised for the hash key (sodium_init failed). */
sv_idmap *sv_idmap_create(const sv_allocator *a, sv_tally *t, uint64_t seed);
void sv_idmap_free(sv_idmap *m); /* NULL is a no-op; frees every string */

/* 1 and *num when id[0..len) is a canonical decimal number below 2^63. */
int sv_id_parse_number(const char *id, size_t len, uint64_t *num);

/* Make keys[] hold at least n_slots slots (new ones unbound). */
sv_status sv_idmap_reserve_slots(sv_idmap *m, uint32_t n_slots);

/* 1 and *slot when the id is bound. Numeric strings are looked up as numbers. */
int sv_idmap_find(const sv_idmap *m, const char *id, size_t len, uint32_t *slot);
int sv_idmap_find_number(const sv_idmap *m, uint64_t num, uint32_t *slot);

/* Bind id -> slot. The caller has checked the id is absent, its length is
 * 1..SV_ID_MAX, and slot < reserved slots and unbound. SV_ERR_RESOURCE when
 * out of memory (then nothing changed). */
sv_status sv_idmap_insert(sv_idmap *m, const char *id, size_t len, uint32_t slot);
sv_status sv_idmap_insert_number(sv_idmap *m, uint64_t num, uint32_t slot);

/* Unbind whatever id slot holds (no-op if unbound); frees its string. */
void sv_idmap_remove_slot(sv_idmap *m, uint32_t slot);

/* Leave identity mode now (see idmap.c): compaction calls it before it
 * moves anything, so that a move cannot need memory. */
sv_status sv_idmap_materialize(sv_idmap *m);

/* Compaction: bind the id of slot `from` to the unbound slot `to` instead;
 * give back keys[] room past n_slots (all unbound there). */
void sv_idmap_move_slot(sv_idmap *m, uint32_t from, uint32_t to);
void sv_idmap_shrink_slots(sv_idmap *m, uint32_t n_slots);

/* Write slot's id, NUL-terminated, into buf (cap >= SV_ID_MAX + 1);
 * returns its length, 0 when the slot is unbound. */
size_t sv_idmap_format(const sv_idmap *m, uint32_t slot, char *buf, size_t cap);

/* The smallest number >= an internal counter that is not bound; the counter
 * moves past it. Ids handed out are not bound by this call. */
uint64_t sv_idmap_next_free_number(sv_idmap *m);

size_t sv_idmap_count(const sv_idmap *m); /* bound ids */

/* What slot holds: 0 unbound, 1 a number (*num), 2 a string (*str, *len;
 * not NUL-terminated, valid while the slot stays bound). */
int sv_idmap_slot_id(const sv_idmap *m, uint32_t slot, uint64_t *num, const char **str, size_t *len);
/* How far bound ids sit from their home positions: what a lookup of each
 * costs, read off the table (O(table) and a hash per id; for tests and
 * diagnostics, not for hot paths). */
typedef struct sv_idmap_probes {
    size_t ids;            /* bound ids (= sv_idmap_count) */
    uint64_t total_probes; /* over bound ids: table positions a successful
                            * lookup visits, 1 = found at home */
    uint64_t max_probes;   /* the most of those for one id */
    size_t longest_run;    /* longest run of occupied positions */
    size_t table_cap;      /* table positions (0 before the first insert) */
} sv_idmap_probes;
void sv_idmap_probe_stats(const sv_idmap *m, sv_idmap_probes *out);

/* The counter behind sv_idmap_next_free_number (snapshots keep it). */
uint64_t sv_idmap_counter(const sv_idmap *m);
void sv_idmap_set_counter(sv_idmap *m, uint64_t counter);

#endif
