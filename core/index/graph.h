/*
 * The Vamana graph (DiskANN): greedy beam search, robust prune with alpha,
 * incremental inserts with reverse edges pruned when a node exceeds R, and
 * FreshDiskANN-style consolidation of deletes.
 *
 * The graph owns the slot states; it reads vectors from the store and
 * neighbour lists from the edge set. Concurrency: searches and inserts run
 * under the collection's read lock; each neighbour list is written under its
 * node's stripe lock and read lock-free (edges.h). Slot states are atomics.
 */
#ifndef SV_GRAPH_H
#define SV_GRAPH_H

#include <stdatomic.h>
#include <stdint.h>

#include "alloc.h"
#include "edges.h"
#include "slimvec.h"
#include "store.h"

/* Slot life cycle: FREE -> PENDING -> BUFFERED -> INDEXED -> DELETED ->
 * DELETING -> FREE. PENDING holds an add that is not durable yet (engine.h):
 * its row is in the buffer and its id bound, but nothing reads it; it
 * becomes BUFFERED or goes back to FREE. DELETING marks the tombstones one
 * consolidation pass removes (later deletes wait for the next pass). A
 * vector deleted while still in a buffer goes straight back to FREE. */
enum {
    SV_SLOT_FREE = 0,
    SV_SLOT_BUFFERED = 1,
    SV_SLOT_INDEXED = 2,
    SV_SLOT_DELETED = 3,
    SV_SLOT_DELETING = 4,
    SV_SLOT_PENDING = 5
};

static inline int sv_slot_is_tombstone(uint8_t st)
{
    return st == SV_SLOT_DELETED || st == SV_SLOT_DELETING;
}

#define SV_NO_SLOT UINT32_MAX

/* sv_connect_stats (what sv_graph_connect did) is in slimvec.h: sv_stats carries it. */

typedef struct sv_graph {
    const sv_allocator *alloc;
    sv_tally *tally;          /* for the state array */
    sv_store *store;
    sv_edges *edges;
    _Atomic uint8_t *state;   /* one per slot */
    uint32_t state_cap;
    uint32_t R, L;
    float alpha;
    _Atomic uint32_t entry;   /* SV_NO_SLOT while the graph is empty */
    /* Written by sv_graph_connect only, under the read lock: read them where
     * no connect can run (the collection's maintenance lock). */
    sv_connect_stats last_connect;  /* the last sv_graph_connect */
    sv_connect_stats connect_total; /* every sv_graph_connect so far, summed */
} sv_graph;

/* A candidate: slot and distance; `flag` marks expanded / pruned. */
typedef struct sv_cand {
    float dist;
    uint32_t slot;
    uint32_t flag;
} sv_cand;

/* Per-search scratch, allocated through the collection's allocator. The
 * visited set is a bitmap over all slots plus the list of slots set, which
 * clears it afterwards: a bit test per neighbour instead of a hash probe
 * (the hash set took 22% of search time), and no O(n) clear per search. */
typedef struct sv_scratch {
    const sv_allocator *alloc;
    sv_tally *tally;      /* NULL for transient scratch */
    sv_cand *list;        /* the beam, sorted by distance */
    uint32_t n, list_cap;
    uint64_t *bits;       /* visited bitmap, all zero between uses */
    uint32_t bits_words;
    uint32_t *vlist;      /* slots whose bit is set */
    uint32_t vis_n, vlist_cap;
    sv_cand *pool;        /* expanded nodes (inserts) or prune candidates */
    uint32_t pool_n, pool_cap;
    float *occl;          /* prune occlusion factors */
    uint32_t occl_cap;
    float *tmp;           /* a dim-float vector */
    uint32_t tmp_dim;
    float *dists;         /* distances of one expansion */
    uint32_t dists_cap;
} sv_scratch;

void sv_scratch_init(sv_scratch *s, const sv_allocator *a, sv_tally *t);
void sv_scratch_release(sv_scratch *s);

sv_status sv_graph_init(sv_graph *g, const sv_allocator *a, sv_tally *t, sv_store *store,
                        sv_edges *edges, uint32_t R, uint32_t L, float alpha);
void sv_graph_release(sv_graph *g);
sv_status sv_graph_reserve(sv_graph *g, uint32_t n_slots); /* write lock */
/* Give back state room past n_slots (compaction; write lock). */
void sv_graph_shrink(sv_graph *g, uint32_t n_slots);

static inline uint8_t sv_graph_state(const sv_graph *g, uint32_t slot)
{
    return atomic_load_explicit(&g->state[slot], memory_order_relaxed);
}
static inline void sv_graph_set_state(sv_graph *g, uint32_t slot, uint8_t st)
{
    atomic_store_explicit(&g->state[slot], st, memory_order_relaxed);
}

/*
 * Beam search from the entry point with list size L. Leaves the beam in
 * s->list[0..s->n) and, when collect is set, the expanded nodes in s->pool.
 * `intr` (may be NULL) is asked after about SV_GRAPH_INTERRUPT_WORK units of
 * work (an expansion counts 64 + the beam's length: the beam moves grow
 * with it); when it says stop, the search returns SV_ERR_INTERRUPTED.
 */
#define SV_GRAPH_INTERRUPT_WORK 8192u
/* pass (may be NULL: every node): a bitmap over slots; then the beam holds
 * only nodes that pass (and the entry point, which may not), found up to
 * two hops out past the ones that do not (graph.c: gather_passing). */
sv_status sv_graph_search(sv_graph *g, const sv_query *q, uint32_t L, sv_scratch *s, int collect,
                          const sv_interrupt *intr, const uint64_t *pass);

/* Link an already stored slot into the graph (x: its float vector). */
sv_status sv_graph_insert(sv_graph *g, uint32_t slot, const float *x, sv_scratch *s);

/* Inserts let lists grow a little past R (graph.c: slack_R); this prunes
 * slot's list back to R if it is longer (read lock; takes the node's lock). */
sv_status sv_graph_tighten(sv_graph *g, uint32_t slot, sv_scratch *s);
/* The longest list an insert leaves before tighten: R plus the slack. */
uint32_t sv_graph_max_degree(const sv_graph *g);

/* Make `slot` the entry point if the graph has none. */
void sv_graph_set_entry_if_empty(sv_graph *g, uint32_t slot);

/* Consolidation, step 1 for one live node: if it has deleted out-neighbours,
 * replace them by their live neighbours and prune. */
sv_status sv_graph_repair_node(sv_graph *g, uint32_t slot, sv_scratch *s);

/* The entry point to use: the current one when it is live, else the live
 * node nearest to it (SV_NO_SLOT when none is live). Read lock suffices;
 * the caller stores it under the write lock. */
uint32_t sv_graph_pick_entry(const sv_graph *g, uint32_t n_slots);

/* Link every live indexed node that the entry point cannot reach (graph.c
 * says how), keeping degrees <= R. *linked receives the number of nodes
 * linked, g->last_connect the figures. Read lock suffices; no other writer
 * of edges may run meanwhile. SV_ERR_INTERNAL if nodes stay unreachable
 * (last_connect.unreachable_after), SV_ERR_RESOURCE out of memory. */
sv_status sv_graph_connect(sv_graph *g, uint32_t n_slots, sv_scratch *s, uint32_t *linked);

/* The checks of sv_collection_validate over slots [0, n_slots). */
sv_status sv_graph_validate(sv_graph *g, uint32_t n_slots, char *msg, size_t msg_cap);

#endif
