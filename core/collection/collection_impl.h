/*
 * The collection's internals, shared by the files of core/collection/ only
 * (collection.c, write.c, search.c, flush.c, consolidate.c, snapshot.c).
 * The public API is slimvec.h; the durable layer uses engine.h.
 *
 * Locks: see core/lockorder.h (maint -> lock -> an edge stripe -> the
 * retired list; pool_lock is a leaf).
 */
#ifndef SV_COLLECTION_IMPL_H
#define SV_COLLECTION_IMPL_H

#include <pthread.h>

#include "alloc.h"
#include "buffer.h"
#include "edges.h"
#include "engine.h"
#include "graph.h"
#include "idmap.h"
#include "kernels.h"
#include "originals.h"
#include "payload.h"
#include "slimvec.h"
#include "store.h"

/* A set of slots marked by writes in flight: a bitmap over slots,
 * allocated while any is marked; charged to t_other. */
typedef struct sv_slot_marks {
    uint64_t *bits;
    size_t words;
    size_t count;
} sv_slot_marks;

struct sv_collection {
    sv_params params;      /* params.allocator points at `alloc` below */
    int manual_flush;      /* 1: adds never flush (the durable layer does) */
    sv_allocator alloc;    /* copy of the caller's hook */
    const sv_kernels *k;
    pthread_mutex_t maint; /* one flush, consolidation, validation or snapshot */
    pthread_rwlock_t lock; /* writer-preferring; see collection.c */
    sv_tally t_vectors, t_edges, t_idmap, t_buffer, t_other, t_payload;
    sv_store *store;
    /* Originals on disk (NULL without). Records are written by flushes
     * (for slots no reader reaches yet) and by compaction; orig_errors
     * counts records a flush failed to write (a snapshot refuses while any
     * exist, so the log keeps them for a replay to rewrite).
     * orig_defer (a data directory's collection; originals_upkeep.c says
     * why): compaction leaves the file's tail, bumps compact_gen, and no
     * flush runs until a snapshot taken after it (snap_gen, captured with
     * snap_slots by sv_snapshot_write) is committed (safe_gen). Under the
     * write lock. */
    sv_originals *orig;
    _Atomic unsigned long long orig_errors;
    int orig_defer;
    uint64_t compact_gen, snap_gen, safe_gen;
    uint32_t snap_slots;
    sv_edges *edges;
    sv_graph graph;
    sv_idmap *idmap;
    /* Payloads by slot: set with the vector (PENDING too: its abort clears
     * them), cleared by its delete, moved by compaction. */
    sv_payloads *payloads;
    /* Payload sets prepared and not committed or cancelled (engine.h): they
     * hold a slot number, so compaction waits. */
    uint32_t payload_held;
    /* Compactions that moved vectors, from a random start: a scroll's
     * cursor names a slot of one layout of this process (payloads.c). */
    uint32_t layout_gen;
    sv_buffer active;      /* adds go here */
    sv_buffer flushing;    /* the rows a flush is linking */
    uint32_t *free_slots;  /* recycled slots, a stack */
    uint32_t n_free, free_cap;
    /* Room on the free stack promised to calls that have not finished: a
     * pending add (its abort gives its slots back) and a checked delete
     * (its apply may free buffered slots). Every reservation counts it, so
     * two promises never share the same room. */
    uint32_t free_reserved;
    uint32_t next_slot;    /* slots [0, next_slot) have been handed out */
    uint64_t n_live;       /* searchable vectors (not PENDING ones) */
    uint64_t n_tombstones;
    uint64_t n_pending;    /* rows in state PENDING (an add not yet published) */
    /* Slots a checked delete will remove once it is durable (engine.h): a
     * second delete of the same id must fail, as its replay would. */
    sv_slot_marks del_marks;
    /* Slots a prepared upsert will replace once it is durable: a write
     * naming their ids waits for it (SV_ERR_CONFLICT; write.c). */
    sv_slot_marks rep_marks;
    uint64_t rng;          /* splitmix64 state */
    uint32_t id_len_max;   /* longest id bound so far (only grows) */
    /* The graph's connect figures, copied under the write lock after each
     * connect (which writes the graph's own under the read lock). */
    sv_connect_stats connect_last, connect_total;
    /* A connect did not finish (out of memory): the next flush or
     * consolidation runs one even when it has nothing else to do (maint). */
    int connect_due;
    /* Search scratch kept between searches (its visited bitmap covers every
     * slot: allocating and clearing it per query would cost O(n)). One per
     * concurrent search at most; charged to t_other. */
    pthread_mutex_t pool_lock;
    /* The last recall calibration (calibrate.c); calib_lock is a leaf. */
    pthread_mutex_t calib_lock;
    sv_calibration calib;
    sv_scratch **pool;
    uint32_t pool_n, pool_cap;
};

/* ---- shared between the collection's files (not part of any API) ---- */

/* Whether slot is marked (under the lock). */
static inline int sv_marks_test(const sv_slot_marks *m, uint32_t slot)
{
    return (size_t)(slot >> 6) < m->words && ((m->bits[slot >> 6] >> (slot & 63)) & 1);
}

/* Room to mark any slot below next_slot (write lock). */
sv_status sv_marks_reserve(sv_collection *c, sv_slot_marks *m);
/* Mark slots (after sv_marks_reserve; none marked already). */
void sv_marks_set(sv_slot_marks *m, const uint32_t *slots, size_t n);
/* Unmark slots; the bitmap is freed when none is left, so an idle
 * collection holds no byte for it. */
void sv_marks_clear(sv_collection *c, sv_slot_marks *m, const uint32_t *slots, size_t n);
void sv_marks_free(sv_collection *c, sv_slot_marks *m);

/* Worker threads for a flush or a consolidation. */
unsigned sv_coll_threads(const sv_collection *c);
uint64_t sv_coll_splitmix(uint64_t *state);

/* Input checks: dimension; finiteness, cosine zero vector and overflow of
 * one vector (`index` names it in a batch, SIZE_MAX for a query). */
sv_status sv_coll_check_dim(const sv_collection *c, uint32_t dim, sv_error *err);
sv_status sv_coll_check_vector(const sv_collection *c, const float *v, size_t index, sv_error *err);
/* The vectors as the store takes them: a normalised copy under cosine
 * (free with sv_coll_free_prepared), else the input itself. NULL: OOM. */
const float *sv_coll_prepare_vectors(sv_collection *c, const float *v, size_t n);
void sv_coll_free_prepared(sv_collection *c, const float *orig, const float *prep, size_t n);

/* Under the write lock: make room for `extra` more free-stack entries
 * beyond those in use and those reserved. reserve_free also adds `extra`
 * to free_reserved (a promise); grow_free does not. */
sv_status sv_coll_grow_free(sv_collection *c, size_t extra);
sv_status sv_coll_reserve_free(sv_collection *c, size_t extra);
/* Under the lock (read or write): the live slot of an id, or 0 (unknown, over-long,
 * or bound to a PENDING slot). */
int sv_coll_find_live(sv_collection *c, const char *id, uint32_t *slot);
/* For a delete or payload set naming id (write lock): SV_OK and *slot when
 * the id is live; SV_ERR_CONFLICT when a prepared upsert replaces it (wait
 * for it: see write.c); SV_ERR_NOT_FOUND otherwise, a checked delete's
 * slot included. */
sv_status sv_coll_write_target(sv_collection *c, const char *id, uint32_t *slot);

/* Under the write lock: remove the buffered rows whose slots are marked
 * (a bitmap over slots [0, next_slot)) from both buffers, in one pass each. */
void sv_coll_remove_rows(sv_collection *c, const uint64_t *marked);

/* Free edge blocks retired by writers once enough have piled up (takes the
 * write lock briefly). */
void sv_coll_reclaim_if_due(sv_collection *c);

/* With maint held: sv_graph_connect over every slot under the read lock,
 * its figures copied, retired blocks freed and the list slabs repacked when
 * repack_16ths sixteenths or more are free (sv_edges_repack); connect_due
 * set on failure and cleared on success. s: scratch (NULL: a transient). */
#define SV_REPACK_FLUSH 3u   /* ~19%: a flush's replaced blocks are mostly reused by the next */
#define SV_REPACK_DELETE 1u  /* ~6%: what deletes freed comes back */
sv_status sv_coll_connect(sv_collection *c, sv_scratch *s, uint32_t repack_16ths);

/* Under the lock (read or write; it must stay held while the bitmap is
 * used, since next_slot sizes it): check filter f and set in a new bitmap
 * the indexed and buffered slots it passes, *count of them. Free with
 * sv_coll_filter_release under the same hold. */
struct sv_filter;
sv_status sv_coll_filter_slots(sv_collection *c, const struct sv_filter *f, const sv_interrupt *intr,
                               uint64_t **bits, uint64_t *count, sv_error *err);
/* The same for a filter already checked (by sv_coll_filter_probe). */
sv_status sv_coll_filter_bits(sv_collection *c, const struct sv_filter *f, const sv_interrupt *intr,
                              uint64_t **bits, uint64_t *count, sv_error *err);
void sv_coll_filter_release(sv_collection *c, uint64_t *bits);
/* Under the lock: check filter f and prepare it to be asked one slot at a
 * time (*probe; free with sv_filter_probe_free under the same hold);
 * *share: the share of the indexed and buffered vectors it passes,
 * estimated on up to SV_FILTER_SAMPLE of them spread over the slots (-1
 * when fewer than 64 were there to ask: no estimate). */
#define SV_FILTER_SAMPLE 256u
struct sv_filter_probe;
sv_status sv_coll_filter_probe(sv_collection *c, const struct sv_filter *f, struct sv_filter_probe **probe,
                               double *share, sv_error *err);

/* The flush with the maintenance lock held (flush.c). */
sv_status sv_coll_flush_locked(sv_collection *c, const sv_flush_hooks *h, sv_error *err);

#endif
