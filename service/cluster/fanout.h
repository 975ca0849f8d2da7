/*
 * Calls to the other pods of a cluster, many at once, without holding a
 * thread: one completion queue and one thread run every call a router
 * makes. A fan-out is a set of parts (one per shard); each part has a
 * list of targets (the shard's replicas, best first). A part starts on its
 * first target; on an error it moves to the next (a retry); when the first
 * attempt has not answered after the hedge delay it also starts on the
 * next (a hedge) and takes whichever answers first, cancelling the other.
 * When every part is done the fan-out calls `wake` (a router's handler
 * deferred itself meanwhile: svd_server_wake runs it again).
 *
 * Every call carries the metadata given (the caller's own credentials: the
 * replica authorizes the caller, not the router) and the deadline.
 */
#ifndef SVC_FANOUT_H
#define SVC_FANOUT_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

#define SVC_FANOUT_TARGETS 8
#define SVC_FANOUT_MD_MAX 4    /* metadata common to every part */

typedef struct svc_fanout svc_fanout;
typedef struct svc_fanout_op svc_fanout_op;

typedef struct svc_part_result {
    grpc_status_code code;
    char message[256];
    grpc_byte_buffer *response; /* OK: the answer (owned by the op) */
    int target;                 /* the target that answered (or failed last) */
    int attempts;               /* calls started: 1, more after retries and hedges */
    int hedged;                 /* a hedge was started */
    int aborted;                /* attempts a replica refused with ABORTED (a stale shard map), retried or not */
    double seconds;             /* from the start to its answer (or its last failure) */
} svc_part_result;

typedef struct svc_fanout_stats {
    uint64_t calls, retries, hedges, hedge_wins, failures;
} svc_fanout_stats;

svc_fanout *svc_fanout_create(void (*wake)(void *ctx), void *wake_ctx, double hedge_seconds);
/* Cancels what is in flight, waits for it, frees. */
void svc_fanout_free(svc_fanout *f);
void svc_fanout_get_stats(svc_fanout *f, svc_fanout_stats *out);

/*
 * Start n parts of the method `path`: part i sends requests[i] (copied) to
 * targets[i][0..n_targets[i]), with the metadata md (at most
 * SVC_FANOUT_MD_MAX) and, when part_values[i] is not NULL, part_key =
 * part_values[i]. deadline: CLOCK_MONOTONIC seconds. NULL when out of
 * memory.
 */
svc_fanout_op *svc_fanout_start(svc_fanout *f, const char *path, size_t n, grpc_byte_buffer *const *requests,
                                grpc_channel *const (*targets)[SVC_FANOUT_TARGETS], const int *n_targets,
                                const grpc_metadata *md, size_t n_md, const char *part_key,
                                const char *const *part_values, double deadline);
/* 1 when every part is done. */
int svc_fanout_done(svc_fanout_op *op);
/* Part i's result (after svc_fanout_done). */
const svc_part_result *svc_fanout_result(svc_fanout_op *op, size_t i);
/* Give the op up (done or not: calls in flight are cancelled). */
void svc_fanout_release(svc_fanout_op *op);

#endif
