/*
 * A key's index (payload.c keeps it, filter.c reads it): the (value, slot)
 * pairs of the key's cells, sorted by value, so a match or a range finds
 * its slots by binary search instead of a scan of the whole column.
 *
 * A value is an ordinal: int64 as itself, a double by its bits in an order
 * that keeps <, a string by its dictionary code (matches only). A list
 * cell gives one pair per item.
 *
 * It is a superset, not a copy: a set appends the cell's pairs (unsorted,
 * merged into the sorted run when the tail grows past an eighth of it) and
 * nothing is ever removed; a clear, a replaced value, a moved slot leave
 * stale pairs that the reader drops by checking each candidate's cell
 * (the column stays the truth). It is rebuilt from the column when stale
 * pairs outnumber the rest, and whenever it could not keep up: an
 * allocation failure or a compaction (slots moved) makes it unusable, the
 * reader then scans the column as without an index, and the next set or
 * sv_payloads_reindex rebuilds it. So no failure here is ever a wrong
 * answer, and the writes it follows never fail because of it.
 *
 * Why not Debian's CRoaring (0.2.66): it allocates with malloc, outside
 * the collection's allocator (its bytes would not be the collection's),
 * and roaring_bitmap_add reports no allocation failure.
 */
#ifndef SV_PINDEX_H
#define SV_PINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "payload_impl.h"

/* A pair in 12 bytes (the ordinal split in halves: no padding). */
typedef struct pv_ientry {
    uint32_t ord_lo, ord_hi;
    uint32_t slot;
} pv_ientry;

static inline int64_t pv_ientry_ord(const pv_ientry *e)
{
    return (int64_t)(((uint64_t)e->ord_hi << 32) | e->ord_lo);
}

static inline pv_ientry pv_ientry_make(int64_t ord, uint32_t slot)
{
    return (pv_ientry){(uint32_t)(uint64_t)ord, (uint32_t)((uint64_t)ord >> 32), slot};
}

struct pv_index {
    pv_ientry *e;
    uint32_t n, cap;
    uint32_t sorted;  /* e[0, sorted) is sorted by (ord, slot); the rest is the tail */
    uint32_t built;   /* pairs at the last rebuild or merge */
    int usable;       /* 0: out of date (the reader scans the column) */
};

int64_t pv_ord_double(double d);

/* A new index for key k, built from its cells (out of memory for the
 * pairs: unusable until a later rebuild; NULL: not even the index). */
pv_index *pv_index_create(sv_payloads *p, pv_key *k);
void pv_index_free(sv_payloads *p, pv_index *x);
/* The key lost its last value (its type may change): no pairs. */
void pv_index_clear(sv_payloads *p, pv_index *x);
/* Slot's cell of k was just set: its pairs go in (or the index is rebuilt
 * when unusable or too stale). Cannot fail: out of memory marks it
 * unusable. */
void pv_index_add(sv_payloads *p, pv_key *k, uint32_t slot);
/* Rebuild from the column if unusable (out of memory: stays unusable). */
void pv_index_refresh(sv_payloads *p, pv_key *k);

/* Pairs with lo <= ord <= hi: an upper bound of the slots a reader gets
 * (stale pairs and the whole tail count). */
size_t pv_index_count(const pv_index *x, int64_t lo, int64_t hi);
/* Call fn for each slot with a pair in [lo, hi] (maybe more than once,
 * maybe stale: fn checks the cell). */
void pv_index_visit(const pv_index *x, int64_t lo, int64_t hi, void (*fn)(void *ctx, uint32_t slot), void *ctx);

#endif
