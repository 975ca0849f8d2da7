/*
 * Payloads: a few typed fields beside each vector (by slot), the metadata
 * a filtered search selects on.
 *
 * Stored by column, not by vector: each key has one type in a collection
 * (the first value fixes it while the key holds any value; a value of
 * another type is refused) and a column of fixed-size cells in chunks of
 * SV_PAYLOAD_CHUNK slots, allocated where the key has values. A string is
 * a 4-byte code into the collection's dictionary (sv_dict: interned,
 * counted, freed with its last use), an int64 or double 8 bytes, a bool 2
 * bits, each with a presence bit; a list is one block holding its codes or
 * integers. So a class label and an integer cost ~12 bytes a vector, and no
 * vector holds a heap string. Every byte comes from the collection's
 * allocator, charged to its tally.
 *
 * Not thread-safe by itself: the collection changes it under its write
 * lock and reads it under its read lock.
 */
#ifndef SV_PAYLOAD_H
#define SV_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"


#define SV_PAYLOAD_CHUNK 1024u /* slots of a column chunk */

typedef struct sv_payloads sv_payloads;

sv_payloads *sv_payloads_create(const sv_allocator *a, sv_tally *t);
void sv_payloads_free(sv_payloads *p); /* NULL is a no-op */

/*
 * Check n payloads (a batch, item i named in the message) against the
 * limits above and the types of the collection's keys (p NULL: a store
 * with none, as a router that holds no copy checks) and of one another,
 * changing nothing: INVALID_ARGUMENT with a message naming the item, the
 * key and what is wrong.
 */
sv_status sv_payloads_check(const sv_payloads *p, const sv_payload *items, size_t n, sv_error *err);

/*
 * A set in two steps, for a caller that must log it between them: prepare
 * checks the payload and reserves everything it needs (keys, chunks,
 * strings, lists: what can fail), commit makes it the slot's (cannot
 * fail), cancel gives the reservation back. Between them no other set may
 * run (the caller's order), and pl must stay valid; other writers may clear
 * cells (a delete, an aborted add): a chunk emptied meanwhile stays until
 * the plan ends (a plan points at chunks). The plan's members are the
 * store's own.
 */
struct pv_chunk;
struct pv_list;
typedef struct sv_payload_plan {
    uint32_t slot, keys_before;
    sv_payload_mode mode;
    const sv_payload *pl;
    struct sv_pv_prepared {
        int key;
        struct pv_chunk *chunk;
        int made_chunk;
        uint32_t code;        /* STRING */
        struct pv_list *list; /* STRINGS, INTS */
        uint32_t interned;    /* STRINGS: items interned so far */
    } pr[SV_PAYLOAD_FIELDS_MAX];
} sv_payload_plan;
sv_status sv_payloads_prepare(sv_payloads *p, uint32_t slot, const sv_payload *pl, sv_payload_mode mode,
                              sv_payload_plan *plan, sv_error *err);
void sv_payloads_commit(sv_payloads *p, sv_payload_plan *plan);
void sv_payloads_cancel(sv_payloads *p, sv_payload_plan *plan);

/* Set a slot's payload (checked or not: it is checked again). On any
 * failure (invalid, out of memory) nothing changed. */
sv_status sv_payloads_set(sv_payloads *p, uint32_t slot, const sv_payload *pl, sv_payload_mode mode,
                          sv_error *err);
/* Remove the slot's fields (a deleted vector). */
void sv_payloads_clear(sv_payloads *p, uint32_t slot);
/* Compaction: move a slot's fields to a slot with none. SV_ERR_RESOURCE
 * when a chunk for `to` could not be had: nothing moved then. */
sv_status sv_payloads_move(sv_payloads *p, uint32_t from, uint32_t to);
/* Compaction in two steps: the chunks moving from's fields to `to` needs
 * (what can fail, before anything moves), then the moves (which cannot
 * fail once reserved); sv_payloads_trim frees chunks left holding nothing
 * (call it when a compaction stops after reserving). Every reserved chunk
 * is used or trimmed before the store changes otherwise. */
sv_status sv_payloads_reserve_move(sv_payloads *p, uint32_t from, uint32_t to);
void sv_payloads_trim(sv_payloads *p);
/* Whether the slot holds any field. */
int sv_payloads_has(const sv_payloads *p, uint32_t slot);

/*
 * The slot's fields into out[0..cap) (keys in the order they were first
 * used): strings and lists point into the store, valid until it changes.
 * Returns the number of fields the slot holds (may exceed cap).
 */
uint32_t sv_payloads_get(const sv_payloads *p, uint32_t slot, sv_pv_field *out, uint32_t cap);

/*
 * The slot's fields copied into buf[0..cap) (fields, list arrays and texts
 * in one block, *out pointing into it): returns the bytes needed; when
 * that exceeds cap (or buf is NULL) nothing is copied and *out is empty.
 */
size_t sv_payloads_copy(const sv_payloads *p, uint32_t slot, void *buf, size_t cap, sv_payload *out);

/*
 * Index key (made, with no values, when the collection has none yet):
 * matches and ranges on it then find their slots by binary search instead
 * of a scan of its column (pindex.h; string, int64, double and list keys:
 * a bool key's index is never read). Its bytes are the store's. Indexing
 * an indexed key is a no-op. Without memory for its pairs the key is
 * indexed all the same, the index built by a later write or
 * sv_payloads_reindex (an index is not data: a log replay or a snapshot
 * load goes on); SV_ERR_RESOURCE only when not even that could be had
 * (nothing changed), INVALID_ARGUMENT for a bad name or too many keys.
 */
sv_status sv_payloads_index_key(sv_payloads *p, const char *key, sv_error *err);
int sv_payloads_key_indexed(const sv_payloads *p, uint32_t i);
/* Rebuild the indexes a compaction's moves (or an allocation failure)
 * left out of date; out of memory: they stay so (read as absent). */
void sv_payloads_reindex(sv_payloads *p);

/* Keys: count, and the i-th (name, type; NONE while it holds no value). */
uint32_t sv_payloads_keys(const sv_payloads *p);
const char *sv_payloads_key(const sv_payloads *p, uint32_t i, sv_pv_type *type);
/* A key's index, or -1 when the collection has no such key. */
int sv_payloads_key_index(const sv_payloads *p, const char *key);

/* Figures: distinct strings interned, bytes held (the tally's share). */
typedef struct sv_payload_stats {
    uint32_t keys;
    uint64_t strings;
    uint64_t slots_with_payload;
} sv_payload_stats;
void sv_payloads_get_stats(const sv_payloads *p, sv_payload_stats *s);

const char *sv_pv_type_name(sv_pv_type t);

#endif
