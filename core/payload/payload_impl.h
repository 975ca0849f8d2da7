/*
 * The payload store's layout, shared by payload.c (writes) and filter.c
 * (column scans) only.
 */
#ifndef SV_PAYLOAD_IMPL_H
#define SV_PAYLOAD_IMPL_H

#include "dict.h"
#include "payload.h"

#define PV_WORDS (SV_PAYLOAD_CHUNK / 64)

/* A list's block: n items (uint32 string codes or int64s) after the header. */
typedef struct pv_list {
    uint32_t n;
    uint32_t pad;
    union {
        uint32_t codes[1];
        int64_t ints[1];
    } u;
} pv_list;

/* SV_PAYLOAD_CHUNK slots of one key: which hold a value, then the cells
 * (by type: a uint32 code, an int64, a double, a bool's bit in `bits`, a
 * list's block). */
typedef struct pv_chunk {
    uint32_t count; /* slots here with a value */
    uint32_t pad;
    uint64_t present[PV_WORDS];
    union {
        uint32_t code[1];
        int64_t i[1];
        double d[1];
        uint64_t bits[1];
        pv_list *list[1];
    } c;
} pv_chunk;

typedef struct pv_index pv_index; /* pindex.h */

typedef struct pv_key {
    sv_pv_type type;  /* NONE while no slot holds a value */
    uint64_t values;  /* slots with a value */
    pv_chunk **chunks;
    uint32_t n_chunks, cap_chunks;
    pv_index *index;  /* NULL: not indexed */
} pv_key;

struct sv_payloads {
    const sv_allocator *a;
    sv_tally *t;
    sv_dict *names;   /* key names; a key's code is its index + 1 (keys stay) */
    sv_dict *strings; /* string values */
    pv_key *keys;
    uint32_t n_keys, cap_keys;
    uint64_t slots_with; /* slots holding any field */
    /* Prepared sets not yet committed or cancelled: their plans point at
     * chunks, so a chunk emptied meanwhile (a delete, an abort) stays until
     * the last of them ends (emptied says one did; sv_payloads_trim). */
    uint32_t held;
    int emptied;
};

static inline const pv_chunk *pv_chunk_of(const pv_key *k, uint32_t slot)
{
    uint32_t c = slot / SV_PAYLOAD_CHUNK;
    return c < k->n_chunks ? k->chunks[c] : NULL;
}

static inline int pv_present(const pv_chunk *ch, uint32_t slot)
{
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    return ch && (ch->present[o / 64] >> (o % 64) & 1);
}

#endif
