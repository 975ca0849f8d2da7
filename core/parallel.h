/*
 * A parallel for-loop over [0, n) on `threads` threads (the caller's thread
 * is one of them). Items are handed out in chunks from an atomic counter.
 * When `rd` is not NULL each chunk runs under a read lock of it, so writers
 * (adds, deletes) get in between chunks instead of waiting for the loop.
 */
#ifndef SV_PARALLEL_H
#define SV_PARALLEL_H

#include <pthread.h>
#include <stddef.h>

#include "slimvec.h"

/* Called once per item; `worker` is 0..threads-1. Nonzero stops the loop
 * early and is returned (the first one seen). */
typedef int (*sv_parallel_fn)(void *ctx, size_t item, unsigned worker);

/* Called between chunks, without the read lock (may be NULL): a place for
 * work that needs the write lock, such as freeing retired blocks. */
typedef void (*sv_parallel_between_fn)(void *ctx);

int sv_parallel_for(unsigned threads, size_t n, size_t chunk, pthread_rwlock_t *rd,
                    sv_parallel_fn fn, sv_parallel_between_fn between, void *ctx);

/* Online CPUs (at least 1). */
unsigned sv_cpu_count(void);

#endif
