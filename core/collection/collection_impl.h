/*
 * The collection's internals, shared by collection.c and the durability
 * code in core (snapshot.c, durable.c) only. Nothing outside core/ includes
 * this; the public API is slimvec.h.
 */
#ifndef SV_COLLECTION_IMPL_H
#define SV_COLLECTION_IMPL_H

#include <pthread.h>

#include "alloc.h"
#include "buffer.h"
#include "edges.h"
#include "graph.h"
#include "idmap.h"
#include "kernels.h"
#include "slimvec.h"
#include "store.h"

struct sv_collection {
    sv_params params;      /* params.allocator points at `alloc` below */
    int manual_flush;      /* 1: adds never flush (the durable layer does) */
    sv_allocator alloc;    /* copy of the caller's hook */
    const sv_kernels *k;
    pthread_mutex_t maint;
    pthread_rwlock_t lock;
    sv_tally t_vectors, t_edges, t_idmap, t_buffer, t_other;
    sv_store *store;
    sv_edges *edges;
    sv_graph graph;
    sv_idmap *idmap;
    sv_buffer active;      /* adds go here */
    sv_buffer flushing;    /* the rows a flush is linking */
    uint32_t *free_slots;  /* recycled slots, a stack */
    uint32_t n_free, free_cap;
    uint32_t next_slot;    /* slots [0, next_slot) have been handed out */
    uint64_t n_live;
    uint64_t n_tombstones;
    uint64_t rng;          /* splitmix64 state */
    /* Search scratch kept between searches (its visited bitmap covers every
     * slot: allocating and clearing it per query would cost O(n)). One per
     * concurrent search at most; charged to t_other. */
    pthread_mutex_t pool_lock;
    sv_scratch **pool;
    uint32_t pool_n, pool_cap;
};

/*
 * A flush that tells the durable layer where it takes the buffer, so the
 * log can record the point and a replay flushes at the same one. With the
 * maintenance lock held: before() (durable.c takes its ordering lock, so no
 * add is between being applied and being logged), then under the write
 * lock taking(n) (logs; an error cancels the flush, nothing changed), then
 * after() once the buffer is taken or the flush gave up.
 */
typedef struct sv_flush_hooks {
    void (*before)(void *ctx);
    sv_status (*taking)(void *ctx, size_t n, sv_error *err);
    void (*after)(void *ctx);
    void *ctx;
} sv_flush_hooks;
sv_status sv_collection_flush_hooked(sv_collection *c, const sv_flush_hooks *h, int wait,
                                     sv_error *err);
/* (wait 0: return at once, nothing done, if a flush, consolidation or
 * snapshot holds the maintenance lock; the next add over the threshold
 * tries again.) */

/* Adds stop flushing on their own (durable.c flushes and logs first). */
void sv_collection_set_manual_flush(sv_collection *c, int on);
/* int8: train the quantizer from the write buffer if it is untrained and
 * the buffer holds vectors; *trained is 1 when it trained now, and the mean
 * is copied to mean[dim]. */
sv_status sv_collection_train(sv_collection *c, float *mean, int *trained, sv_error *err);
/* int8: set an untrained quantizer's mean (log replay). */
sv_status sv_collection_set_mean(sv_collection *c, const float *mean, sv_error *err);
/* Room for n entries on the free-slot stack (snapshot loading). */
sv_status sv_collection_reserve_free(sv_collection *c, size_t n);
/* The assigned-id counter (sv_idmap_next_free_number): logged with each
 * ADD so a replay hands out the same numbers. */
uint64_t sv_collection_id_counter(sv_collection *c);
void sv_collection_set_id_counter(sv_collection *c, uint64_t counter);
/* SV_OK when every id is live (else SV_ERR_NOT_FOUND as delete says it),
 * with room reserved so that deleting them cannot run out of memory. */
sv_status sv_collection_check_ids(sv_collection *c, const char *const *ids, size_t n, sv_error *err);
/* Buffered (unflushed) live vectors. */
uint64_t sv_collection_buffered(sv_collection *c);

#endif
