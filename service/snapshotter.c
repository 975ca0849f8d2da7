/* Background and shutdown snapshots (see snapshotter.h). */
#include "snapshotter.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct svd_snapshotter {
    svd_registry *registry;
    unsigned period_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static int snapshot_one(svd_coll *c)
{
    sv_snapshot_info info;
    sv_error err;
    if (sv_durable_snapshot(c->dur, &info, &err) != SV_OK) {
        fprintf(stderr, "slimvecd: snapshot of \"%s\" failed: %s\n", c->name, err.message);
        return -1;
    }
    fprintf(stderr, "slimvecd: snapshot of \"%s\": LSN %llu, %llu bytes, %.3f s (ingest waited %.3f s)\n",
            c->name, (unsigned long long)info.lsn, (unsigned long long)info.bytes, info.seconds,
            info.stall_seconds);
    return 0;
}

static void *run(void *arg)
{
    svd_snapshotter *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long long ns = (unsigned long long)ts.tv_nsec + s->period_ms * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        svd_coll **all = NULL;
        size_t n = svd_registry_list(s->registry, &all);
        for (size_t i = 0; i < n; i++) {
            if (sv_durable_snapshot_due(all[i]->dur))
                snapshot_one(all[i]);
            svd_registry_put(s->registry, all[i]);
        }
        free(all);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

svd_snapshotter *svd_snapshotter_start(svd_registry *r, unsigned period_ms)
{
    svd_snapshotter *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->registry = r;
    s->period_ms = period_ms;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void svd_snapshotter_stop(svd_snapshotter *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int svd_snapshot_all(svd_registry *r)
{
    int failed = 0;
    svd_coll **all = NULL;
    size_t n = svd_registry_list(r, &all);
    for (size_t i = 0; i < n; i++) {
        sv_durable_stats st;
        sv_durable_get_stats(all[i]->dur, &st);
        if (sv_durable_dir(all[i]->dur) && st.log_bytes > 0)
            failed += snapshot_one(all[i]) != 0;
        svd_registry_put(r, all[i]);
    }
    free(all);
    return failed;
}
