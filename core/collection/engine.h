/*
 * The engine's interface for the durable layer (core/durable/): the steps
 * a write-ahead log needs between "checked" and "visible", and the hooks
 * that let it record where flushes and consolidations happen. Nothing
 * outside core/ includes this; the public API is slimvec.h, and the
 * collection's struct stays private to core/collection/.
 *
 * Durable before visible. An add is prepared (checked, slots and ids taken,
 * rows in the write buffer, all in state PENDING: no search, get or delete
 * sees them), then logged and fsynced, then published (searchable) or
 * aborted (as if it never happened). A delete is checked (its ids live, room
 * for its freed slots reserved), logged and fsynced, then applied or
 * cancelled. The durable layer keeps flushes, consolidations and snapshots
 * from starting while any add or delete is between those steps, so none of
 * them ever sees a PENDING row.
 */
#ifndef SV_ENGINE_H
#define SV_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "payload.h"
#include "slimvec.h"

/* An add between prepare and publish/abort. */
typedef struct sv_add_ticket {
    uint32_t *slots;   /* the batch's slots, in batch order (the engine's) */
    uint32_t *replace; /* upsert: per vector the live slot it replaces, or UINT32_MAX; else NULL */
    size_t n;
    size_t n_rep;      /* vectors that replace one */
} sv_add_ticket;

/* As sv_collection_add_payloads, or sv_collection_upsert when upsert is set
 * (same checks, same errors, nothing changed on failure), but the batch
 * stays invisible, and the vectors it replaces in place, until
 * sv_engine_add_publish. assigned[i] as sv_collection_add fills it.
 * SV_ERR_CONFLICT (upsert only): a given id has a prepared write (add,
 * delete, upsert) that this batch would have to follow. */
sv_status sv_engine_add_prepare(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                                const char *const *ids, const sv_payload *payloads, int upsert, uint64_t *assigned,
                                sv_add_ticket *t, sv_error *err);
/* A payload set between prepare and commit/cancel (the durable layer logs
 * it in between). Prepare: the live id's slot (NOT_FOUND when a checked
 * delete is removing it, SV_ERR_CONFLICT when a prepared upsert replaces
 * it), the payload checked and everything it needs
 * reserved; nothing visible changes. pl must stay valid until the end. */
typedef struct sv_payload_ticket {
    sv_payload_plan plan;
    int held;
} sv_payload_ticket;
sv_status sv_engine_payload_prepare(sv_collection *c, const char *id, const sv_payload *pl, sv_payload_mode mode,
                                    sv_payload_ticket *t, sv_error *err);
void sv_engine_payload_commit(sv_collection *c, sv_payload_ticket *t); /* cannot fail */
void sv_engine_payload_cancel(sv_collection *c, sv_payload_ticket *t);

/* Make a prepared batch searchable. Cannot fail. */
void sv_engine_add_publish(sv_collection *c, sv_add_ticket *t);
/* Take a prepared batch back: rows, id bindings and slots. Cannot fail. */
void sv_engine_add_abort(sv_collection *c, sv_add_ticket *t);

/* A delete between check and apply/cancel. */
typedef struct sv_delete_ticket {
    uint32_t *slots;   /* the distinct slots to delete (the engine's) */
    size_t n;
    size_t cap;        /* the array's length */
} sv_delete_ticket;

/* SV_OK when every id is live and not already being deleted by another
 * checked delete (else SV_ERR_NOT_FOUND naming the item) nor replaced by a
 * prepared upsert (else SV_ERR_CONFLICT); the slots are
 * then marked as being deleted (still searchable) and room is reserved so
 * that deleting them cannot run out of memory. Follow with exactly one of
 * _apply or _cancel. */
sv_status sv_engine_delete_check(sv_collection *c, const char *const *ids, size_t n,
                                 sv_delete_ticket *t, sv_error *err);
/* Delete a checked batch; *deleted (may be NULL) is the number of distinct
 * ids removed. Cannot fail. */
void sv_engine_delete_apply(sv_collection *c, sv_delete_ticket *t, size_t *deleted);
void sv_engine_delete_cancel(sv_collection *c, sv_delete_ticket *t);

/*
 * A flush that tells the durable layer where it takes the buffer, so the
 * log can record the point and a replay flushes at the same one. With the
 * maintenance lock held: before() (durable.c takes its ordering lock and
 * waits until no add or delete is pending), then under the write lock
 * taking(n) (logs; an error cancels the flush, nothing changed), then
 * after() once the buffer is taken or the flush gave up.
 */
typedef struct sv_flush_hooks {
    void (*before)(void *ctx);
    sv_status (*taking)(void *ctx, size_t n, sv_error *err);
    void (*after)(void *ctx);
    void *ctx;
} sv_flush_hooks;
/* wait 0: return at once, nothing done, if a flush, consolidation or
 * snapshot holds the maintenance lock. */
sv_status sv_engine_flush(sv_collection *c, const sv_flush_hooks *h, int wait, sv_error *err);

/* The same for consolidation: taking(n) is called under the write lock when
 * the n tombstones this pass removes are fixed (a replay consolidates at
 * the same point, so the same slots are recycled). n = 0: no call. */
sv_status sv_engine_consolidate(sv_collection *c, const sv_flush_hooks *h, sv_error *err);

/* Compaction (compact.c): vectors at the top of the slot range move into
 * free slots below and the top is given back. before()/after() of h are
 * called around it (taking is not: it changes no logical content, so the
 * log does not record it). *moved (may be NULL): vectors moved. Skipped
 * (SV_OK, 0 moved) while an add or delete is between its steps. */
sv_status sv_engine_compact(sv_collection *c, const sv_flush_hooks *h, uint32_t *moved, sv_error *err);

/* Adds stop flushing on their own (the durable layer flushes and logs). */
void sv_engine_set_manual_flush(sv_collection *c, int on);
/* int8: train the quantizer from the write buffer if it is untrained and
 * the buffer holds vectors; *trained is 1 when it trained now, and the mean
 * is copied to mean[dim]. */
sv_status sv_engine_train(sv_collection *c, float *mean, int *trained, sv_error *err);
/* int8: set an untrained quantizer's mean (log replay). */
sv_status sv_engine_set_mean(sv_collection *c, const float *mean, sv_error *err);
/* The quantizer mean copied to mean[dim]; 0 when untrained or f32. */
int sv_engine_mean(sv_collection *c, float *mean);
/* 1 when the store can encode (int8 trained, or f32). */
int sv_engine_trained(sv_collection *c);
/* The assigned-id counter (sv_idmap_next_free_number): logged with each
 * ADD so a replay hands out the same numbers. */
uint64_t sv_engine_id_counter(sv_collection *c);
void sv_engine_set_id_counter(sv_collection *c, uint64_t counter);
/* Vectors in the active write buffer (what the next flush takes). */
uint64_t sv_engine_buffered(sv_collection *c);
/* Vectors not in the graph yet: the active buffer and the rows a running
 * flush is linking (both searched by brute force). */
uint64_t sv_engine_unindexed(sv_collection *c);
/* The counts kept as they change, in O(1): live, tombstones, buffered
 * (active buffer), free_slots, slots. The rest of *out is zero. */
void sv_engine_counts(sv_collection *c, sv_stats *out);

/*
 * Originals on disk (originals_upkeep.c). has: 1 when the collection keeps
 * them. defer: compaction leaves the file's tail until _commit (a data
 * directory's collection: its last snapshot may still need it), and
 * flushes wait after a compaction until a snapshot is committed (waiting
 * says so: take one). sync: make every record written so far durable
 * (before a snapshot is renamed into place); SV_ERR_IO when a flush failed
 * to write one. commit: after the snapshot is in place, cut the tail and
 * let flushes go on. check: after a recovery, every indexed slot's original
 * must quantize to its code (else SV_ERR_CORRUPT).
 */
int sv_engine_has_originals(sv_collection *c);
void sv_engine_originals_defer(sv_collection *c);
sv_status sv_engine_originals_sync(sv_collection *c, sv_error *err);
void sv_engine_originals_commit(sv_collection *c);
int sv_engine_originals_waiting(sv_collection *c);
sv_status sv_engine_originals_check(sv_collection *c, sv_error *err);

#endif
