/* The service's methods (handlers.c) and the state they share. */
#ifndef SVD_HANDLERS_H
#define SVD_HANDLERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "maintenance.h"
#include "memory.h"
#include "registry.h"
#include "rpc.h"

typedef struct svd_limits {
    uint32_t max_dim;            /* largest dimension a collection may have */
    uint32_t max_k;              /* most neighbours a query may ask for */
    uint32_t max_batch;          /* most vectors (or queries) in one message */
    uint32_t max_id_len;         /* longest id, bytes (<= SV_ID_MAX) */
    uint32_t build_threads;      /* flush threads per collection, 0 = all cores */
    uint32_t max_search_list;    /* largest search list a query may ask for */
    uint64_t max_search_work;    /* queries x (search list + buffered / 16) per request */
    uint32_t max_get_ids;        /* most ids one Get may ask for */
    uint32_t max_flush_threshold;/* largest flush threshold a collection may have */
    float default_target_recall; /* a search that names neither a list nor a recall
                                    (0: the fixed default list, 64) */
} svd_limits;

typedef struct svd_app {
    svd_registry *registry;
    svd_limits limits;
    svd_memory *memory;          /* the cap every allocating call is checked against */
    svd_maint *maint;            /* flushes and snapshots (NULL: none, tests) */
    atomic_int serving;          /* health: 1 SERVING, 0 NOT_SERVING */
    struct svc_cluster *cluster; /* cluster mode (cluster/router.c), NULL: a single node */
} svd_app;

/* The method table (with the app as every handler's first argument). */
const svd_method *svd_methods(size_t *n);

/* The brute-force cost of one buffered vector against a graph step, in the
 * search work estimate (see svd_limits.max_search_work). */
#define SVD_BUFFER_WORK_DIVISOR 16u

#endif
