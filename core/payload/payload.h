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

#define SV_PAYLOAD_KEY_MAX 64        /* bytes of a key */
#define SV_PAYLOAD_STRING_MAX 1024   /* bytes of a string value */
#define SV_PAYLOAD_LIST_MAX 256      /* items of a list */
#define SV_PAYLOAD_FIELDS_MAX 64     /* fields of one payload */
#define SV_PAYLOAD_KEYS_MAX 1024     /* keys of one collection */
#define SV_PAYLOAD_CHUNK 1024u       /* slots of a column chunk */

typedef enum sv_pv_type {
    SV_PV_NONE = 0,
    SV_PV_STRING = 1,
    SV_PV_INT = 2,    /* int64 */
    SV_PV_DOUBLE = 3, /* finite */
    SV_PV_BOOL = 4,
    SV_PV_STRINGS = 5, /* a list of strings */
    SV_PV_INTS = 6,    /* a list of int64 */
} sv_pv_type;

/* One field as a caller gives it (and as sv_payloads_get returns it). */
typedef struct sv_pv_field {
    const char *key;        /* NUL-terminated UTF-8, 1..SV_PAYLOAD_KEY_MAX bytes */
    sv_pv_type type;
    const char *s;          /* STRING: NUL-terminated UTF-8 */
    int64_t i;              /* INT */
    double d;               /* DOUBLE */
    int b;                  /* BOOL: 0 or 1 */
    const char *const *ss;  /* STRINGS: n items */
    const int64_t *is;      /* INTS: n items */
    uint32_t n;             /* items of a list */
} sv_pv_field;

typedef struct sv_payload {
    const sv_pv_field *fields;
    uint32_t n;
} sv_payload;

typedef enum sv_payload_mode {
    SV_PAYLOAD_REPLACE = 0, /* the slot's fields become exactly these */
    SV_PAYLOAD_PATCH = 1,   /* these fields set, the others kept */
} sv_payload_mode;

typedef struct sv_payloads sv_payloads;

sv_payloads *sv_payloads_create(const sv_allocator *a, sv_tally *t);
void sv_payloads_free(sv_payloads *p); /* NULL is a no-op */

/*
 * Check n payloads (a batch, item i named in the message) against the
 * limits above and the types of the collection's keys and of one another,
 * changing nothing: INVALID_ARGUMENT with a message naming the item, the
 * key and what is wrong.
 */
sv_status sv_payloads_check(const sv_payloads *p, const sv_payload *items, size_t n, sv_error *err);

/* Set a slot's payload (checked or not: it is checked again). On any
 * failure (invalid, out of memory) nothing changed. */
sv_status sv_payloads_set(sv_payloads *p, uint32_t slot, const sv_payload *pl, sv_payload_mode mode,
                          sv_error *err);
/* Remove the slot's fields (a deleted vector). */
void sv_payloads_clear(sv_payloads *p, uint32_t slot);
/* Compaction: move a slot's fields to a slot with none. SV_ERR_RESOURCE
 * when a chunk for `to` could not be had: nothing moved then. */
sv_status sv_payloads_move(sv_payloads *p, uint32_t from, uint32_t to);
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
