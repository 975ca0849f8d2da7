/*
 * Neighbour lists, stored compactly and grown on demand. A node owns one
 * block holding exactly its list, bit-packed: a first 64-bit word with the
 * count and the width, then the ids sorted, the smallest and each
 * difference to the one before in `width` bits (the fewest that hold the
 * largest of them), in whole 8-byte units. 17 neighbours among 10,000
 * slots take 32 bytes instead of 68 + a size class's slack.
 *
 * Blocks live in the collection's own slabs (4 KiB growing to 512 KiB, each
 * a sixteenth of the space in use, so the unused tail of the last is a small
 * share), found by a 32-bit handle per node: the slab's number (16 bits)
 * and the unit in it (16 bits), through a two-level table whose entries
 * never move. No 8-byte pointer per node and no allocator size class per
 * list. Freed blocks go to a free list per size; compaction repacks the
 * slabs when a fifth or more of them is free.
 *
 * Each node's handle is published atomically, so a reader gets a whole
 * list without a lock. Blocks never change once published. Writers of one
 * node hold that node's stripe lock; every change (an append, a prune, a
 * growth) writes a new block, publishes its handle (release) and retires
 * the old one. Retired blocks are freed by sv_edges_reclaim at a quiescent
 * point (the collection's write lock), so a reader may decode a block it
 * loaded until it lets go of the read lock. Lists are read by decoding into
 * the caller's array (order: ascending ids).
 */
#ifndef SV_EDGES_H
#define SV_EDGES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"

typedef struct sv_edges sv_edges;

sv_edges *sv_edges_create(const sv_allocator *a, sv_tally *t);
void sv_edges_free(sv_edges *e);

/* Make words exist for slots [0, n_slots) (collection write lock). */
sv_status sv_edges_reserve(sv_edges *e, uint32_t n_slots);

/* slot's list, decoded into out[0..SV_R_MAX) in ascending order; returns
 * its length. */
uint32_t sv_edges_get(const sv_edges *e, uint32_t slot, uint32_t *out);
uint32_t sv_edges_count(const sv_edges *e, uint32_t slot);
/* Start loading slot's block (a search expands it soon). */
void sv_edges_prefetch(const sv_edges *e, uint32_t slot);
/* The allocator's usable bytes of slot's block (0 without a list). */
uint32_t sv_edges_bytes(const sv_edges *e, uint32_t slot);

/* Per-node writer exclusion. */
void sv_edges_lock(sv_edges *e, uint32_t slot);
void sv_edges_unlock(sv_edges *e, uint32_t slot);

/* With the node's lock held: replace the list (n <= SV_R_MAX). On failure
 * (out of memory) nothing changed. */
sv_status sv_edges_set(sv_edges *e, uint32_t slot, const uint32_t *ids, uint32_t n);
/* With the node's lock held: append id if count < max_degree. Returns 1 when
 * appended, 0 when the list is full (the caller prunes), -1 out of memory. */
int sv_edges_append(sv_edges *e, uint32_t slot, uint32_t id, uint32_t max_degree);
/* With no reader and no other writer (the collection's write lock): free the
 * list at once. */
void sv_edges_clear(sv_edges *e, uint32_t slot);

/* Compaction, with no reader and no writer (the collection's write lock):
 * move a list to a slot with none; release the words wholly past n_slots
 * (which must hold no lists). Rewriting a list's ids is get + set. */
void sv_edges_move(sv_edges *e, uint32_t from, uint32_t to);
void sv_edges_shrink(sv_edges *e, uint32_t n_slots);

/* Compaction's two steps, so that what can fail comes before any change:
 * encode a list (ids sorted in place) into a detached word; install a
 * word as slot's list, freeing the old block at once (no reader may run);
 * discard a word never installed (0 and SV_EDGES_EMPTY are no-ops).
 * Installing SV_EDGES_EMPTY leaves slot without a list. */
#define SV_EDGES_EMPTY UINT64_MAX
sv_status sv_edges_encode(sv_edges *e, uint32_t *ids, uint32_t n, uint64_t *word);
void sv_edges_install(sv_edges *e, uint32_t slot, uint64_t word);
void sv_edges_discard(sv_edges *e, uint64_t word);

/* Slots that have words: [0, sv_edges_slots). */
uint32_t sv_edges_slots(const sv_edges *e);

/* Repack the slabs (no reader, no writer) when min_free_16ths sixteenths or
 * more of them are free; SV_ERR_RESOURCE changes nothing. Space of all
 * slabs, free or not. */
sv_status sv_edges_repack(sv_edges *e, uint32_t n_slots, uint32_t min_free_16ths);
uint64_t sv_edges_space_bytes(const sv_edges *e);

/* Free retired blocks. Only with no reader holding a view. */
void sv_edges_reclaim(sv_edges *e);
/* Bytes of retired blocks waiting for a reclaim (a hint, not locked). */
size_t sv_edges_retired_bytes(sv_edges *e);

#endif
