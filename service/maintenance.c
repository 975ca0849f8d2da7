/* The maintenance thread (see maintenance.h). */
#include "maintenance.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_FIRST 1.0
#define BACKOFF_MAX 300.0

struct svd_task {
    svd_task_kind kind;
    svd_coll *coll;            /* a registry reference until the task ran */
    atomic_int refs;           /* the submitter's and the thread's */
    atomic_int done;
    sv_status st;
    sv_error err;
    sv_snapshot_info info;
    svd_task *next;
};

struct svd_maint {
    svd_registry *reg;
    svd_maint_options o;
    pthread_t thread;
    pthread_mutex_t mu;        /* tasks, kicked, stop; and every svd_coll's maintenance fields */
    pthread_cond_t cv;
    svd_task *head, *tail;
    int kicked, stop;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void wake(svd_maint *m)
{
    if (m->o.wake)
        m->o.wake(m->o.wake_ctx);
}

static sv_status snapshot_one(svd_coll *c, sv_snapshot_info *info, sv_error *err)
{
    sv_status st = sv_durable_snapshot(c->dur, info, err);
    if (st != SV_OK) {
        fprintf(stderr, "slimvecd: snapshot of \"%s\" failed: %s\n", c->name, err->message);
        return st;
    }
    fprintf(stderr, "slimvecd: snapshot of \"%s\": LSN %llu, %llu bytes, %.3f s (ingest waited %.3f s)\n",
            c->name, (unsigned long long)info->lsn, (unsigned long long)info->bytes, info->seconds,
            info->stall_seconds);
    return st;
}

static void task_unref(svd_task *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1)
        free(t);
}

static void run_task(svd_maint *m, svd_task *t)
{
    sv_error err = {0};
    sv_snapshot_info info = {0};
    sv_status st;
    if (t->kind == SVD_TASK_FLUSH) {
        st = sv_durable_flush(t->coll->dur, &err);
    } else {
        st = snapshot_one(t->coll, &info, &err);
        if (st == SV_OK) {
            pthread_mutex_lock(&m->mu);
            t->coll->snapshot_backoff = 0;
            t->coll->snapshot_retry_at = 0;
            pthread_mutex_unlock(&m->mu);
        }
    }
    svd_registry_put(m->reg, t->coll);
    t->coll = NULL;
    t->st = st;
    t->err = err;
    t->info = info;
    atomic_store(&t->done, 1);
    task_unref(t);
}

/* Run queued tasks (the submitter waits on them). */
static void run_tasks(svd_maint *m)
{
    for (;;) {
        pthread_mutex_lock(&m->mu);
        svd_task *t = m->head;
        if (t) {
            m->head = t->next;
            if (!m->head)
                m->tail = NULL;
        }
        pthread_mutex_unlock(&m->mu);
        if (!t)
            return;
        run_task(m, t);
        wake(m);
    }
}

/* Recall by search list, measured when the collection first reaches
 * calibration_min vectors and again once it doubled or halved (with none
 * buffered: the measure is of the graph as it will stay). */
static void calibrate_if_due(svd_maint *m, svd_coll *c, const sv_stats *counts, double idle)
{
    /* Only between bursts of writes (none for a period): it holds this
     * thread, and flushes waiting behind it would let ingest run into its
     * buffer limit and memory into the cap. */
    if (!m->o.calibration_queries || counts->live < m->o.calibration_min || counts->buffered ||
        idle * 1000.0 < m->o.period_ms)
        return;
    sv_calibration cal;
    if (sv_durable_calibration(c->dur, &cal) && counts->live < 2 * cal.live && 2 * counts->live > cal.live)
        return;
    sv_error err;
    if (sv_durable_calibrate(c->dur, m->o.calibration_queries, counts->live, &err) != SV_OK)
        fprintf(stderr, "slimvecd: calibration of \"%s\" failed: %s\n", c->name, err.message);
}

/* What one collection needs now. */
static void tend(svd_maint *m, svd_coll *c)
{
    sv_error err;
    if (sv_durable_flush_due(c->dur)) {
        if (sv_durable_flush(c->dur, &err) != SV_OK && err.code != SV_ERR_NOT_FOUND)
            fprintf(stderr, "slimvecd: flush of \"%s\" failed: %s\n", c->name, err.message);
        wake(m);
    }
    /* Quiet: nothing changed since the last looks for quiet_seconds. */
    sv_stats counts;
    sv_durable_counts(c->dur, &counts);
    uint64_t writes = counts.live * 3 + counts.tombstones * 5 + counts.slots * 7 + counts.buffered;
    double now0 = now_seconds();
    pthread_mutex_lock(&m->mu);
    if (writes != c->seen_writes) {
        c->seen_writes = writes;
        c->quiet_since = now0;
    }
    int quiet = m->o.quiet_seconds > 0 && now0 - c->quiet_since >= m->o.quiet_seconds;
    pthread_mutex_unlock(&m->mu);
    if (quiet && counts.tombstones > 0) {
        if (sv_durable_consolidate(c->dur, &err) != SV_OK && err.code != SV_ERR_NOT_FOUND)
            fprintf(stderr, "slimvecd: consolidation of \"%s\" failed: %s\n", c->name, err.message);
    } else if (sv_durable_consolidate_due(c->dur, m->o.consolidate_ratio, m->o.consolidate_min)) {
        if (sv_durable_consolidate(c->dur, &err) != SV_OK && err.code != SV_ERR_NOT_FOUND)
            fprintf(stderr, "slimvecd: consolidation of \"%s\" failed: %s\n", c->name, err.message);
    }
    if ((m->o.compact_ratio > 0 && sv_durable_compact_due(c->dur, m->o.compact_ratio)) ||
        (quiet && sv_durable_compact_due(c->dur, 0.0))) {
        if (sv_durable_compact(c->dur, NULL, &err) != SV_OK && err.code != SV_ERR_NOT_FOUND)
            fprintf(stderr, "slimvecd: compaction of \"%s\" failed: %s\n", c->name, err.message);
    }
    calibrate_if_due(m, c, &counts, now0 - c->quiet_since);
    if (!m->o.snapshots || !sv_durable_snapshot_due(c->dur))
        return;
    double now = now_seconds();
    pthread_mutex_lock(&m->mu);
    int wait = now < c->snapshot_retry_at;
    pthread_mutex_unlock(&m->mu);
    if (wait)
        return;
    sv_snapshot_info info;
    sv_status st = snapshot_one(c, &info, &err);
    pthread_mutex_lock(&m->mu);
    if (st == SV_OK) {
        c->snapshot_backoff = 0;
        c->snapshot_retry_at = 0;
    } else if (err.code != SV_ERR_NOT_FOUND) {
        /* A full or failing disk: retrying every period would only load it. */
        c->snapshot_backoff = c->snapshot_backoff ? fmin(c->snapshot_backoff * 2, BACKOFF_MAX)
                                                  : BACKOFF_FIRST;
        c->snapshot_retry_at = now_seconds() + c->snapshot_backoff;
        fprintf(stderr, "slimvecd: next snapshot attempt of \"%s\" in %.0f s\n", c->name,
                c->snapshot_backoff);
    }
    pthread_mutex_unlock(&m->mu);
}

static void *run(void *arg)
{
    svd_maint *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (!m->kicked && !m->head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            unsigned long long ns = (unsigned long long)ts.tv_nsec + m->o.period_ms * 1000000ull;
            ts.tv_sec += (time_t)(ns / 1000000000ull);
            ts.tv_nsec = (long)(ns % 1000000000ull);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        if (m->stop)
            break;
        m->kicked = 0;
        pthread_mutex_unlock(&m->mu);
        run_tasks(m);
        svd_coll **all = NULL;
        size_t n = svd_registry_list(m->reg, &all);
        for (size_t i = 0; i < n; i++) {
            tend(m, all[i]);
            run_tasks(m); /* a long pass must not keep a Flush call waiting */
        }
        svd_registry_put_list(m->reg, all, n);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

svd_maint *svd_maint_start(svd_registry *r, const svd_maint_options *o)
{
    svd_maint *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->reg = r;
    m->o = *o;
    if (!m->o.period_ms)
        m->o.period_ms = 1000;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    return m;
}

void svd_maint_stop(svd_maint *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    /* Tasks nobody ran: their submitters hear the server is stopping. */
    while (m->head) {
        svd_task *t = m->head;
        m->head = t->next;
        svd_registry_put(m->reg, t->coll);
        t->coll = NULL;
        t->st = SV_ERR_IO;
        snprintf(t->err.message, sizeof t->err.message, "the server is shutting down");
        t->err.code = SV_ERR_IO;
        atomic_store(&t->done, 1);
        task_unref(t);
    }
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void svd_maint_kick(svd_maint *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->kicked = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

svd_task *svd_maint_submit(svd_maint *m, svd_coll *c, svd_task_kind kind)
{
    svd_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->kind = kind;
    atomic_init(&t->refs, 2);
    atomic_init(&t->done, 0);
    /* The task's own reference (the caller's may go before it runs). */
    pthread_mutex_lock(&m->mu);
    int stopping = m->stop;
    pthread_mutex_unlock(&m->mu);
    svd_coll *got = stopping ? NULL : svd_registry_get(m->reg, c->name);
    if (got != c) {
        /* Stopping, or dropped (or replaced) since the caller looked it up. */
        svd_registry_put(m->reg, got);
        free(t);
        return NULL;
    }
    t->coll = got;
    pthread_mutex_lock(&m->mu);
    if (m->stop) {
        pthread_mutex_unlock(&m->mu);
        svd_registry_put(m->reg, got);
        free(t);
        return NULL;
    }
    if (m->tail)
        m->tail->next = t;
    else
        m->head = t;
    m->tail = t;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return t;
}

int svd_task_done(svd_task *t, sv_status *st, sv_error *err, sv_snapshot_info *info)
{
    if (!atomic_load(&t->done))
        return 0;
    if (st)
        *st = t->st;
    if (err)
        *err = t->err;
    if (info)
        *info = t->info;
    return 1;
}

void svd_task_release(svd_task *t)
{
    if (t)
        task_unref(t);
}

int svd_snapshot_all(svd_registry *r)
{
    int failed = 0;
    svd_coll **all = NULL;
    size_t n = svd_registry_list(r, &all);
    for (size_t i = 0; i < n; i++) {
        sv_durable_stats st;
        sv_durable_get_stats(all[i]->dur, &st);
        sv_snapshot_info info;
        sv_error err;
        if (sv_durable_dir(all[i]->dur) && st.log_bytes > 0)
            failed += snapshot_one(all[i], &info, &err) != SV_OK;
    }
    svd_registry_put_list(r, all, n);
    return failed;
}
