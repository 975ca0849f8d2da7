/* The service's methods (handlers.c) and the state they share. */
#ifndef SVD_HANDLERS_H
#define SVD_HANDLERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "registry.h"
#include "rpc.h"

typedef struct svd_limits {
    uint32_t max_dim;        /* largest dimension a collection may have */
    uint32_t max_k;          /* most neighbours a query may ask for */
    uint32_t max_batch;      /* most vectors (or queries) in one message */
    uint32_t max_id_len;     /* longest id, bytes (<= SV_ID_MAX) */
    uint32_t build_threads;  /* flush threads per collection, 0 = all cores */
    uint64_t memory_cap;     /* bytes jemalloc may hold before ingest is refused, 0 = none */
} svd_limits;

typedef struct svd_app {
    svd_registry *registry;
    svd_limits limits;
    atomic_int serving;      /* health: 1 SERVING, 0 NOT_SERVING */
} svd_app;

/* The method table (with the app as every handler's first argument). */
const svd_method *svd_methods(size_t *n);

#endif
