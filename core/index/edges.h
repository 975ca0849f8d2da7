/*
 * Neighbour lists, grown on demand. A node owns exactly the slots its list
 * needs, rounded up to the allocator's size class; nothing is preallocated
 * for the maximum degree.
 *
 * Each node has one 64-bit word, published atomically, so a reader gets a
 * consistent (pointer, count) pair without a lock:
 *
 *   63      56 55     48 47                                  0
 *   +---------+---------+-------------------------------------+
 *   |capacity | count   | pointer to uint32 ids[capacity]     |
 *   +---------+---------+-------------------------------------+
 *
 * (x86-64 and AArch64 user-space pointers fit in 48 bits; creation checks
 * every pointer and fails instead of corrupting.) Words live in 64 KiB
 * chunks that never move.
 *
 * Writers of one node hold that node's stripe lock. A block is never changed
 * under a reader except past its published count: appending writes the id,
 * then publishes count+1 (release). Any other change (a prune, a growth)
 * writes a new block, publishes it and retires the old one. Retired blocks
 * are freed by sv_edges_reclaim at a quiescent point (the collection's write
 * lock), so a reader may keep using the view it loaded until it lets go of
 * the read lock.
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

/* A consistent view of slot's list; valid until the next reclaim. */
const uint32_t *sv_edges_view(const sv_edges *e, uint32_t slot, uint32_t *count);
uint32_t sv_edges_capacity(const sv_edges *e, uint32_t slot);

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
 * the list of slot, writable in place; move a list to a slot with none;
 * release the words wholly past n_slots (which must hold no lists). */
uint32_t *sv_edges_mutable(sv_edges *e, uint32_t slot, uint32_t *count);
void sv_edges_move(sv_edges *e, uint32_t from, uint32_t to);
void sv_edges_shrink(sv_edges *e, uint32_t n_slots);

/* Slots that have words: [0, sv_edges_slots). */
uint32_t sv_edges_slots(const sv_edges *e);

/* Free retired blocks. Only with no reader holding a view. */
void sv_edges_reclaim(sv_edges *e);
/* Bytes of retired blocks waiting for a reclaim (a hint, not locked). */
size_t sv_edges_retired_bytes(sv_edges *e);

#endif
