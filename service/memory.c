/* Memory against the cap (see memory.h). */
#include "memory.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "arena.h"

#define REFRESH_MS 20

struct svd_memory {
    uint64_t cap, limit, headroom;
    pthread_mutex_t refresh;       /* one refresh at a time */
    atomic_ullong used;
    atomic_llong refreshed_ms;     /* monotonic ms of the last refresh */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

svd_memory *svd_memory_create(uint64_t cap, uint64_t limit, uint64_t headroom)
{
    svd_memory *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cap = cap;
    m->limit = limit;
    m->headroom = headroom;
    pthread_mutex_init(&m->refresh, NULL);
    atomic_init(&m->used, 0);
    atomic_init(&m->refreshed_ms, -1000000);
    return m;
}

void svd_memory_free(svd_memory *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->refresh);
    free(m);
}

uint64_t svd_memory_cap(const svd_memory *m)
{
    return m->cap;
}

uint64_t svd_memory_limit(const svd_memory *m)
{
    return m->limit;
}

uint64_t svd_memory_used(svd_memory *m)
{
    long long now = now_ms();
    /* Whoever finds the figure stale refreshes it; the others use the old
     * one meanwhile instead of queueing for the refresh. */
    if (now - atomic_load(&m->refreshed_ms) >= REFRESH_MS && pthread_mutex_trylock(&m->refresh) == 0) {
        sv_jemalloc_refresh();
        atomic_store(&m->used, (unsigned long long)(sv_jemalloc_stat("stats.allocated") +
                                                    sv_jemalloc_stat("stats.metadata")));
        atomic_store(&m->refreshed_ms, now);
        pthread_mutex_unlock(&m->refresh);
    }
    return atomic_load(&m->used);
}

int svd_memory_admit(svd_memory *m, uint64_t need, int transient, char *why, size_t cap)
{
    if (!m || !m->cap)
        return 1;
    uint64_t used = svd_memory_used(m);
    uint64_t bound = m->cap + (transient ? m->headroom : 0);
    if (used + need <= bound)
        return 1;
    if (transient)
        snprintf(why, cap,
                 "memory cap: %llu bytes in use (jemalloc allocated + metadata) + ~%llu for this call "
                 "is over the cap of %llu + %llu for answers in flight",
                 (unsigned long long)used, (unsigned long long)need, (unsigned long long)m->cap,
                 (unsigned long long)m->headroom);
    else
        snprintf(why, cap,
                 "memory cap: %llu bytes in use (jemalloc allocated + metadata) + ~%llu for this call "
                 "is over the cap of %llu",
                 (unsigned long long)used, (unsigned long long)need, (unsigned long long)m->cap);
    return 0;
}
