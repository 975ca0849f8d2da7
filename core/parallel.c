/* A chunked parallel for-loop on pthreads (see parallel.h). */
#include "parallel.h"

#include <stdatomic.h>
#include <unistd.h>

typedef struct job {
    size_t n, chunk;
    pthread_rwlock_t *rd;
    sv_parallel_fn fn;
    sv_parallel_between_fn between;
    void *ctx;
    atomic_size_t next;   /* first item of the next chunk */
    atomic_int result;    /* first nonzero result, 0 while all is well */
} job;

typedef struct worker_arg {
    job *j;
    unsigned id;
} worker_arg;

static void run(job *j, unsigned id)
{
    for (;;) {
        if (atomic_load_explicit(&j->result, memory_order_relaxed) != 0)
            return;
        size_t start = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
        if (start >= j->n)
            return;
        size_t end = start + j->chunk < j->n ? start + j->chunk : j->n;
        if (j->rd)
            pthread_rwlock_rdlock(j->rd);
        for (size_t i = start; i < end; i++) {
            int rc = j->fn(j->ctx, i, id);
            if (rc != 0) {
                int zero = 0;
                atomic_compare_exchange_strong(&j->result, &zero, rc);
                break;
            }
        }
        if (j->rd)
            pthread_rwlock_unlock(j->rd);
        if (j->between)
            j->between(j->ctx);
    }
}

static void *worker_main(void *p)
{
    worker_arg *a = p;
    run(a->j, a->id);
    return NULL;
}

int sv_parallel_for(unsigned threads, size_t n, size_t chunk, pthread_rwlock_t *rd,
                    sv_parallel_fn fn, sv_parallel_between_fn between, void *ctx)
{
    job j = {.n = n, .chunk = chunk ? chunk : 1, .rd = rd, .fn = fn, .between = between, .ctx = ctx};
    atomic_init(&j.next, 0);
    atomic_init(&j.result, 0);
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    pthread_t tids[64];
    worker_arg args[64];
    unsigned started = 0;
    for (unsigned t = 1; t < threads && (size_t)t * j.chunk < n; t++) {
        args[t] = (worker_arg){&j, t};
        if (pthread_create(&tids[t], NULL, worker_main, &args[t]) != 0)
            break; /* fewer threads still finish the loop */
        started = t;
    }
    run(&j, 0);
    for (unsigned t = 1; t <= started; t++)
        pthread_join(tids[t], NULL);
    return atomic_load(&j.result);
}

unsigned sv_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}
