/* Durable collections: log, snapshots, recovery (see durable.h). */
#include "durable.h"
#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "crc32c.h"
#include "durable_impl.h"
#include "fileio.h"
#include "logrec.h"
#include "log.h"
#include "follow.h"

static const uint8_t PARAMS_MAGIC[8] = {'S', 'V', 'P', 'A', 'R', 'A', 'M', 1};
#define PARAMS_VERSION 1u
#define PATH_CAP 4200

/*
 * Locks (the whole order is in core/lockorder.h):
 *   snap_lock -> [the collection's maint] -> order -> pending_mu
 *   maint_lock -> [maint] -> order -> pending_mu
 * order serialises check + log append of writes, so the log holds them in
 * the order they were checked. pending_mu guards `pending`: writes that are
 * logged but not yet visible (waiting for their fsync). A flush, a
 * consolidation or a snapshot holds `order` and waits for pending to drain,
 * so each sees every logged write applied and none half-way.
 */
struct sv_durable {
    char *dir;                 /* NULL: in memory */
    sv_collection *c;
    sv_log *log;               /* the only way to the log (log.h): any backend */
    sv_durable_options o;
    pthread_mutex_t order;     /* check + append of adds and deletes, in one order */
    pthread_mutex_t maint_lock; /* one flush or consolidation (their markers) */
    pthread_mutex_t snap_lock;
    pthread_mutex_t stats_lock;
    pthread_mutex_t pending_mu;
    pthread_cond_t pending_cv;
    uint64_t pending;          /* writes logged but not yet applied (pending_mu) */
    uint64_t old_log_bytes;    /* log in no snapshot yet: replayed at open, or sealed by a failed snapshot */
    int mean_unlogged;         /* trained, but the TRAIN record is not durable */
    int dropped;               /* directory removed: no more writes (order + snap_lock) */
    uint64_t marker_lsn;       /* the running flush's or consolidation's marker (maint_lock) */
    size_t marker_n;           /* rows or tombstones it took; 0: it did nothing */
    uint64_t rotated_bytes;    /* log sealed by the running snapshot's rotation */
    uint64_t snapshots, flushes, consolidations; /* stats_lock */
    sv_snapshot_info last;
    int following;             /* the log is another's: records come in by sv_durable_apply */
    sv_follow_ids follow;
    uint64_t applied;          /* following: the last LSN applied (order) */
    uint64_t applied_bytes;    /* following: record bytes applied since the last snapshot (stats_lock) */
    sv_follow_window *window;  /* following: the keys of the last records (order) */
};

/* ---- params file ---------------------------------------------------------- */

void sv_params_encode(const sv_params *p, uint8_t *buf)
{
    memset(buf, 0, SV_PARAMS_BYTES);
    memcpy(buf, PARAMS_MAGIC, 8);
    uint32_t v[6] = {PARAMS_VERSION, p->dim, (uint32_t)p->metric, (uint32_t)p->storage, p->R, p->L_build};
    memcpy(buf + 8, v, sizeof v);
    memcpy(buf + 32, &p->alpha, 4);
    memcpy(buf + 36, &p->seed, 8);
    memcpy(buf + 44, &p->flush_threshold, 4);
    buf[48] = (uint8_t)p->originals; /* a reserved zero byte before: old files read as none */
    uint32_t crc = sv_crc32c(0, buf, SV_PARAMS_BYTES - 4);
    memcpy(buf + SV_PARAMS_BYTES - 4, &crc, 4);
}

sv_status sv_params_decode(const uint8_t *buf, size_t len, sv_params *p, sv_error *err)
{
    if (len != SV_PARAMS_BYTES || memcmp(buf, PARAMS_MAGIC, 8) != 0)
        return sv_fail(err, SV_ERR_CORRUPT, "not a slimvec params file (%zu bytes)", len);
    uint32_t crc;
    memcpy(&crc, buf + SV_PARAMS_BYTES - 4, 4);
    if (crc != sv_crc32c(0, buf, SV_PARAMS_BYTES - 4))
        return sv_fail(err, SV_ERR_CORRUPT, "params checksum mismatch");
    uint32_t v[6];
    memcpy(v, buf + 8, sizeof v);
    if (v[0] != PARAMS_VERSION)
        return sv_fail(err, SV_ERR_CORRUPT, "unsupported params version %u", v[0]);
    sv_params_default(p, v[1]);
    p->metric = (sv_metric)v[2];
    p->storage = (sv_storage)v[3];
    p->R = v[4];
    p->L_build = v[5];
    memcpy(&p->alpha, buf + 32, 4);
    memcpy(&p->seed, buf + 36, 8);
    memcpy(&p->flush_threshold, buf + 44, 4);
    p->originals = (sv_originals_mode)buf[48];
    if (buf[48] > SV_ORIGINALS_DISK)
        return sv_fail(err, SV_ERR_CORRUPT, "params: unknown originals mode %u", buf[48]);
    for (size_t i = 49; i < SV_PARAMS_BYTES - 4; i++)
        if (buf[i])
            return sv_fail(err, SV_ERR_CORRUPT, "params: reserved byte %zu is not zero", i);
    if (v[2] > SV_METRIC_COSINE || v[3] > SV_STORAGE_INT8 || p->dim < 1 || p->dim > SV_DIM_MAX ||
        p->R < 2 || p->R > SV_R_MAX || p->L_build < p->R || p->L_build > SV_L_MAX ||
        !(p->alpha >= 1.0f && p->alpha <= 2.0f))
        return sv_fail(err, SV_ERR_CORRUPT, "params out of range");
    return sv_ok(err);
}

/* ---- create / free -------------------------------------------------------- */

sv_durable *sv_durable_wrap(const char *dir, sv_collection *c, const sv_durable_options *o)
{
    sv_durable *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (dir && !(d->dir = strdup(dir))) {
        free(d);
        return NULL;
    }
    d->c = c;
    d->o = *o;
    pthread_mutex_init(&d->order, NULL);
    pthread_mutex_init(&d->maint_lock, NULL);
    pthread_mutex_init(&d->snap_lock, NULL);
    pthread_mutex_init(&d->stats_lock, NULL);
    pthread_mutex_init(&d->pending_mu, NULL);
    pthread_cond_init(&d->pending_cv, NULL);
    /* Flushes belong to the owner (a server's maintenance thread), never
     * to the request that crosses the threshold. */
    sv_engine_set_manual_flush(c, 1);
    if (dir)
        sv_engine_originals_defer(c);
    return d;
}

void sv_durable_free(sv_durable *d)
{
    if (!d)
        return;
    sv_log_close(d->log);
    sv_follow_window_free(d->window);
    sv_collection_free(d->c);
    pthread_mutex_destroy(&d->order);
    pthread_mutex_destroy(&d->maint_lock);
    pthread_mutex_destroy(&d->snap_lock);
    pthread_mutex_destroy(&d->stats_lock);
    pthread_mutex_destroy(&d->pending_mu);
    pthread_cond_destroy(&d->pending_cv);
    free(d->dir);
    free(d);
}

/* The directory holding `dir` ("." when it has no slash). */
static void parent_of(const char *dir, char *out, size_t cap)
{
    const char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == dir)
        snprintf(out, cap, "/");
    else
        snprintf(out, cap, "%.*s", (int)(slash - dir), dir);
}

static int write_file_synced(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = sv_write_all(fd, data, n) == 0 && fdatasync(fd) == 0 ? 0 : -1;
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* follow_log NULL: a local log of its own; else it follows that log
 * (taken in every case). */
static sv_status create(const char *dir, const sv_params *p, const sv_durable_options *o, sv_log *follow_log,
                        const sv_follow_ids *f, sv_durable **out, sv_error *err)
{
    *out = NULL;
    sv_collection *c = NULL;
    sv_status st = SV_OK;
    if (!dir && (st = sv_collection_create(p, &c, err)) != SV_OK) {
        sv_log_close(follow_log);
        return st;
    }
    if (!dir) {
        if (follow_log) {
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a collection that follows a log needs a directory");
            goto fail_out;
        }
        if (!(*out = sv_durable_wrap(NULL, c, o))) {
            sv_collection_free(c);
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory creating the collection");
        }
        return sv_ok(err);
    }
    char tmp[PATH_CAP], file[PATH_CAP + 16], parent[PATH_CAP];
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "%s already exists", dir);
        goto fail_out;
    }
    /* Build it under a temporary name and rename: a crash leaves either no
     * collection or a whole one (start-up removes stray temporaries). */
    snprintf(tmp, sizeof tmp, "%s~tmp-XXXXXX", dir);
    parent_of(dir, parent, sizeof parent);
    uint8_t buf[SV_PARAMS_BYTES];
    sv_params_encode(p, buf);
    if (!mkdtemp(tmp)) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto fail_out;
    }
    snprintf(file, sizeof file, "%s/params", tmp);
    if (write_file_synced(file, buf, sizeof buf) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", file, strerror(errno));
        sv_remove_dir(tmp);
        goto fail_out;
    }
    /* The collection is made inside the temporary directory: its originals
     * file (if any) is created there and moves with the rename. */
    sv_params cp = *p;
    snprintf(file, sizeof file, "%s/" SV_ORIGINALS_FILE, tmp);
    cp.originals_path = file;
    if ((st = sv_collection_create(&cp, &c, err)) != SV_OK) {
        sv_remove_dir(tmp);
        goto fail_out;
    }
    if (sv_fsync_dir(tmp) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", tmp, strerror(errno));
        sv_remove_dir(tmp);
        goto fail_out;
    }
    if (rename(tmp, dir) != 0) {
        int e = errno;
        sv_remove_dir(tmp);
        st = e == EEXIST || e == ENOTEMPTY ? sv_fail(err, SV_ERR_ALREADY_EXISTS, "%s already exists", dir)
                                           : sv_fail(err, SV_ERR_IO, "%s: %s", dir, strerror(e));
        goto fail_out;
    }
    /* From here a failure must take the directory away again, or the
     * collection would come back at the next start. */
    if (sv_fsync_dir(parent) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", parent, strerror(errno));
        sv_durable_remove_dir(dir, NULL);
        goto fail_out;
    }
    sv_durable *d = sv_durable_wrap(dir, c, o);
    if (!d) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory creating the collection");
        sv_durable_remove_dir(dir, NULL);
        goto fail_out;
    }
    if (follow_log) {
        if ((st = sv_durable_attach_follower(d, follow_log, f, sv_follow_window_create(), 0, 0, err)) != SV_OK) {
            sv_durable_remove_dir(dir, NULL);
            sv_durable_free(d);
            return st;
        }
    } else if ((st = sv_log_local_start(dir, 1, o->sync_interval_ms, &d->log, err)) != SV_OK) {
        sv_durable_remove_dir(dir, NULL);
        sv_durable_free(d);
        return st;
    }
    *out = d;
    return sv_ok(err);
fail_out:
    sv_log_close(follow_log);
    sv_collection_free(c);
    return st;
}

sv_status sv_durable_create(const char *dir, const sv_params *p, const sv_durable_options *o,
                            sv_durable **out, sv_error *err)
{
    return create(dir, p, o, NULL, NULL, out, err);
}

sv_status sv_durable_create_follower(const char *dir, const sv_params *p, const sv_durable_options *o,
                                     sv_log *log, const sv_follow_ids *f, sv_durable **out, sv_error *err)
{
    return create(dir, p, o, log, f, out, err);
}

sv_status sv_durable_prepare_follower(const char *dir, const sv_params *p, const char *snapshot_file,
                                      const char *originals_file, uint64_t lsn, sv_error *err)
{
    char tmp[PATH_CAP], file[PATH_CAP + 48], parent[PATH_CAP], name[48];
    struct stat sb;
    if (p->originals == SV_ORIGINALS_DISK && !originals_file)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "the snapshot came without the originals file the collection keeps");
    if (p->originals != SV_ORIGINALS_DISK && originals_file)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "an originals file came for a collection that keeps none");
    if (stat(dir, &sb) == 0)
        return sv_fail(err, SV_ERR_ALREADY_EXISTS, "%s already exists", dir);
    /* As create(): built under a temporary name, then renamed whole. */
    snprintf(tmp, sizeof tmp, "%s~tmp-XXXXXX", dir);
    parent_of(dir, parent, sizeof parent);
    uint8_t buf[SV_PARAMS_BYTES];
    sv_params_encode(p, buf);
    if (!mkdtemp(tmp))
        return sv_fail(err, SV_ERR_IO, "%s: %s", tmp, strerror(errno));
    snprintf(file, sizeof file, "%s/params", tmp);
    sv_status st = SV_OK;
    if (write_file_synced(file, buf, sizeof buf) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", file, strerror(errno));
        goto fail;
    }
    sv_snapshot_name(lsn, name, sizeof name);
    snprintf(file, sizeof file, "%s/%s", tmp, name);
    if (rename(snapshot_file, file) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", file, strerror(errno));
        goto fail;
    }
    snprintf(file, sizeof file, "%s/" SV_ORIGINALS_FILE, tmp);
    if (originals_file && rename(originals_file, file) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", file, strerror(errno));
        goto fail;
    }
    if (sv_fsync_dir(tmp) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, dir) != 0) {
        int e = errno;
        st = e == EEXIST || e == ENOTEMPTY ? sv_fail(err, SV_ERR_ALREADY_EXISTS, "%s already exists", dir)
                                           : sv_fail(err, SV_ERR_IO, "%s: %s", dir, strerror(e));
        goto fail;
    }
    if (sv_fsync_dir(parent) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", parent, strerror(errno));
        sv_durable_remove_dir(dir, NULL);
        return st;
    }
    return sv_ok(err);
fail:
    sv_remove_dir(tmp);
    return st;
}

sv_status sv_durable_get_payload(sv_durable *d, const char *id, void *buf, size_t cap, sv_payload *out, size_t *need,
                                 sv_error *err)
{
    return sv_collection_get_payload(d->c, id, buf, cap, out, need, err);
}

sv_status sv_durable_count_filtered(sv_durable *d, const sv_filter *filter, const sv_interrupt *intr, uint64_t *count,
                                    sv_error *err)
{
    return sv_collection_count_filtered(d->c, filter, intr, count, err);
}

sv_status sv_durable_scroll(sv_durable *d, const sv_filter *filter, const sv_interrupt *intr, uint64_t *cursor,
                            uint32_t limit, char (*ids)[SV_ID_MAX + 1], uint32_t *n, sv_error *err)
{
    return sv_collection_scroll(d->c, filter, intr, cursor, limit, ids, n, err);
}

sv_collection *sv_durable_collection(sv_durable *d)
{
    return d->c;
}

const char *sv_durable_dir(const sv_durable *d)
{
    return d->dir;
}

/* ---- writes -------------------------------------------------------------- */

static sv_status refuse_dropped(sv_error *err)
{
    return sv_fail(err, SV_ERR_NOT_FOUND, "the collection was dropped");
}

/* Writes to a follower go to the log it follows, never to it. */
static sv_status refuse_write(const sv_durable *d, sv_error *err)
{
    if (d->dropped)
        return refuse_dropped(err);
    return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "this collection follows a log: write to the log, not to it");
}

static void pending_add(sv_durable *d)
{
    pthread_mutex_lock(&d->pending_mu);
    d->pending++;
    pthread_mutex_unlock(&d->pending_mu);
}

static void pending_done(sv_durable *d)
{
    pthread_mutex_lock(&d->pending_mu);
    if (--d->pending == 0)
        pthread_cond_broadcast(&d->pending_cv);
    pthread_mutex_unlock(&d->pending_mu);
}

/* With `order` held: wait until every logged write is applied (or undone).
 * They need neither `order` nor the maintenance lock to finish. */
static void wait_pending(sv_durable *d)
{
    pthread_mutex_lock(&d->pending_mu);
    while (d->pending)
        pthread_cond_wait(&d->pending_cv, &d->pending_mu);
    pthread_mutex_unlock(&d->pending_mu);
}

/* 1 when an fsync must come before the write is visible. */
static int waits_for_fsync(const sv_durable *d)
{
    return d->dir && d->o.sync_interval_ms == 0;
}

/* With `order` held: the write buffer has no room for n more (backpressure). */
static int buffer_full(sv_durable *d, size_t n)
{
    uint32_t threshold = sv_collection_params(d->c)->flush_threshold;
    if (!d->o.buffer_factor || !threshold)
        return 0;
    /* A running flush's rows count: they are searched by brute force too
     * until it finishes. */
    uint64_t have = sv_engine_unindexed(d->c);
    uint64_t bound = (uint64_t)threshold * d->o.buffer_factor;
    /* Below the threshold a batch always fits: one larger than the bound
     * must get in somehow. So the buffer stays under bound + a batch. */
    return have >= threshold && have + n > bound;
}

/*
 * A prepared write would follow one still in flight on the same id
 * (SV_ERR_CONFLICT): with `order` held, wait until the writes in flight are
 * applied (they need neither order nor maint), so that asking again sees
 * them, as the log's order says it must. No new write can start meanwhile.
 */
static int conflict_waited(sv_durable *d, sv_status st, int *tries)
{
    if (st != SV_ERR_CONFLICT)
        return 0;
    pthread_mutex_lock(&d->pending_mu);
    int waited = d->pending != 0;
    while (d->pending)
        pthread_cond_wait(&d->pending_cv, &d->pending_mu);
    pthread_mutex_unlock(&d->pending_mu);
    /* The write in flight may have been applied between the prepare and
     * here (nothing left to wait for): ask again at least once. After
     * that only when a write was waited for: a mark no write clears would
     * otherwise spin. */
    return waited || (*tries)++ == 0;
}

static sv_status add_durable(sv_durable *d, const float *vectors, size_t n, uint32_t dim, const char *const *ids,
                             const sv_payload *payloads, int upsert, uint64_t *assigned, size_t *replaced,
                             sv_error *err)
{
    uint64_t *got = malloc((n ? n : 1) * sizeof *got);
    if (!got)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory adding %zu vectors", n);
    uint8_t *head = NULL, *psec = NULL;
    size_t head_len = 0, psec_len = 0;
    uint64_t lsn = 0;
    sv_add_ticket t = {0};
    int pending = 0;
    pthread_mutex_lock(&d->order);
    uint64_t counter = sv_engine_id_counter(d->c);
    sv_status st;
    if (d->dropped || d->following)
        st = refuse_write(d, err);
    else if (n && buffer_full(d, n))
        st = sv_fail(err, SV_ERR_BUSY, "the write buffer is full; the batch waits for a flush");
    else
        for (int tries = 0;;) {
            st = sv_engine_add_prepare(d->c, vectors, n, dim, ids, payloads, upsert, got, &t, err);
            if (!conflict_waited(d, st, &tries))
                break;
        }
    size_t n_rep = t.n_rep; /* the ticket is released by publish */
    if (st == SV_OK && t.n && d->dir) {
        if (sv_logrec_add_ids(ids, got, n, dim, counter, upsert, &head, &head_len) != SV_OK ||
            (payloads && sv_logrec_add_payloads(payloads, n, &psec, &psec_len) != SV_OK)) {
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory logging %zu vectors", n);
        } else {
            struct iovec parts[3] = {{head, head_len},
                                     {(void *)vectors, n * (size_t)dim * sizeof(float)},
                                     {psec, psec_len}};
            st = sv_log_append(d->log, SV_WAL_ADD, parts, payloads ? 3 : 2, &lsn, err);
        }
        if (st != SV_OK)
            sv_engine_add_abort(d->c, &t);
    }
    if (st == SV_OK && t.n) {
        if (waits_for_fsync(d)) {
            pending = 1;
            pending_add(d);
        } else {
            sv_engine_add_publish(d->c, &t);
        }
    }
    pthread_mutex_unlock(&d->order);
    free(head);
    free(psec);
    if (pending) {
        st = sv_log_sync(d->log, lsn, err);
        if (st == SV_OK)
            sv_engine_add_publish(d->c, &t);
        else
            sv_engine_add_abort(d->c, &t); /* not acknowledged, never seen */
        pending_done(d);
    }
    if (st == SV_OK && assigned)
        memcpy(assigned, got, n * sizeof *got);
    if (replaced)
        *replaced = st == SV_OK ? n_rep : 0;
    free(got);
    return st;
}

sv_status sv_durable_add(sv_durable *d, const float *vectors, size_t n, uint32_t dim,
                         const char *const *ids, uint64_t *assigned, sv_error *err)
{
    return add_durable(d, vectors, n, dim, ids, NULL, 0, assigned, NULL, err);
}

sv_status sv_durable_add_payloads(sv_durable *d, const float *vectors, size_t n, uint32_t dim,
                                  const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                                  sv_error *err)
{
    return add_durable(d, vectors, n, dim, ids, payloads, 0, assigned, NULL, err);
}

sv_status sv_durable_upsert(sv_durable *d, const float *vectors, size_t n, uint32_t dim, const char *const *ids,
                            const sv_payload *payloads, uint64_t *assigned, size_t *replaced, sv_error *err)
{
    return add_durable(d, vectors, n, dim, ids, payloads, 1, assigned, replaced, err);
}

/*
 * Prepared (checked, its memory reserved), logged and, when the log waits
 * for fsync, synced, then committed: all under the order lock, so payload
 * sets and adds change key types in the log's order (a set applied after
 * a later add had checked its types could refuse where the replay would
 * not). The price: writers wait behind this one's fsync.
 */
sv_status sv_durable_set_payload(sv_durable *d, const char *id, const sv_payload *pl, sv_payload_mode mode,
                                 sv_error *err)
{
    if (!id || strnlen(id, SV_ID_MAX + 1) > SV_ID_MAX)
        return sv_fail(err, SV_ERR_NOT_FOUND, "id not found");
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    uint64_t lsn = 0;
    sv_payload_ticket t;
    pthread_mutex_lock(&d->order);
    sv_status st;
    if (d->dropped || d->following)
        st = refuse_write(d, err);
    else
        for (int tries = 0;;) {
            st = sv_engine_payload_prepare(d->c, id, pl, mode, &t, err);
            if (!conflict_waited(d, st, &tries))
                break;
        }
    if (st == SV_OK && d->dir) {
        if (sv_logrec_set_payload(id, pl, mode, &rec, &rec_len) != SV_OK) {
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory logging a payload");
        } else {
            struct iovec part = {rec, rec_len};
            st = sv_log_append(d->log, SV_WAL_SET_PAYLOAD, &part, 1, &lsn, err);
        }
        if (st == SV_OK && waits_for_fsync(d))
            st = sv_log_sync(d->log, lsn, err);
        if (st != SV_OK)
            sv_engine_payload_cancel(d->c, &t);
    }
    if (st == SV_OK)
        sv_engine_payload_commit(d->c, &t);
    pthread_mutex_unlock(&d->order);
    free(rec);
    return st;
}

sv_status sv_durable_index_key(sv_durable *d, const char *key, sv_error *err)
{
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    uint64_t lsn = 0;
    pthread_mutex_lock(&d->order);
    sv_status st = d->dropped || d->following ? refuse_write(d, err) : sv_collection_index_key(d->c, key, err);
    if (st == SV_OK && d->dir) {
        if (sv_logrec_index(key, &rec, &rec_len) != SV_OK) {
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory logging an index");
        } else {
            struct iovec part = {rec, rec_len};
            st = sv_log_append(d->log, SV_WAL_INDEX, &part, 1, &lsn, err);
        }
        if (st == SV_OK && waits_for_fsync(d))
            st = sv_log_sync(d->log, lsn, err);
    }
    pthread_mutex_unlock(&d->order);
    free(rec);
    return st;
}

uint32_t sv_durable_indexed_keys(sv_durable *d, const char **keys, uint32_t cap)
{
    return sv_collection_indexed_keys(d->c, keys, cap);
}

sv_status sv_durable_delete(sv_durable *d, const char *const *ids, size_t n, size_t *deleted,
                            sv_error *err)
{
    if (deleted)
        *deleted = 0;
    if (n == 0)
        return sv_ok(err);
    for (size_t i = 0; i < n; i++)
        if (!ids[i] || strnlen(ids[i], SV_ID_MAX + 1) > SV_ID_MAX)
            return sv_fail(err, SV_ERR_NOT_FOUND, "id (item %zu) not found", i);
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    uint64_t lsn = 0;
    sv_delete_ticket t = {0};
    int pending = 0;
    /* Checked (and marked, so no other delete takes the same ids) and
     * logged in one turn of the order lock; applied once durable. */
    pthread_mutex_lock(&d->order);
    sv_status st;
    if (d->dropped || d->following)
        st = refuse_write(d, err);
    else
        for (int tries = 0;;) {
            st = sv_engine_delete_check(d->c, ids, n, &t, err);
            if (!conflict_waited(d, st, &tries))
                break;
        }
    if (st == SV_OK && d->dir) {
        if (sv_logrec_delete(ids, n, &rec, &rec_len) != SV_OK) {
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory logging %zu deletes", n);
        } else {
            struct iovec part = {rec, rec_len};
            st = sv_log_append(d->log, SV_WAL_DELETE, &part, 1, &lsn, err);
        }
        if (st != SV_OK)
            sv_engine_delete_cancel(d->c, &t);
    }
    if (st == SV_OK) {
        if (waits_for_fsync(d)) {
            pending = 1;
            pending_add(d);
        } else {
            sv_engine_delete_apply(d->c, &t, deleted);
        }
    }
    pthread_mutex_unlock(&d->order);
    free(rec);
    if (pending) {
        st = sv_log_sync(d->log, lsn, err);
        if (st == SV_OK)
            sv_engine_delete_apply(d->c, &t, deleted);
        else
            sv_engine_delete_cancel(d->c, &t);
        pending_done(d);
    }
    return st;
}

/* Log the quantizer mean once, durably, before anything is encoded with it. */
static sv_status log_mean(sv_durable *d, const float *mean, sv_error *err)
{
    uint32_t dim = sv_collection_params(d->c)->dim;
    struct iovec parts[2] = {{&dim, 4}, {(void *)mean, (size_t)dim * sizeof(float)}};
    uint64_t lsn = 0;
    sv_status st = sv_log_append(d->log, SV_WAL_TRAIN, parts, 2, &lsn, err);
    if (st == SV_OK)
        st = sv_log_sync(d->log, lsn, err);
    d->mean_unlogged = st != SV_OK;
    return st;
}

/* Hooks of flushes and consolidations: the point where they take their
 * rows or tombstones goes into the log, in order with the writes. */
static void marker_before(void *ctx)
{
    sv_durable *d = ctx;
    pthread_mutex_lock(&d->order);
    wait_pending(d);
}

static sv_status marker_append(sv_durable *d, uint32_t type, size_t n, sv_error *err)
{
    d->marker_n = n;
    if (!d->dir || d->following)
        return sv_ok(err); /* a follower's flushes are its own: its snapshots keep them */
    uint64_t count = n;
    struct iovec part = {&count, 8};
    return sv_log_append(d->log, type, &part, 1, &d->marker_lsn, err);
}

static sv_status flush_taking(void *ctx, size_t n, sv_error *err)
{
    return marker_append(ctx, SV_WAL_FLUSH, n, err);
}

static sv_status consolidate_taking(void *ctx, size_t n, sv_error *err)
{
    return marker_append(ctx, SV_WAL_CONSOLIDATE, n, err);
}

static void marker_after(void *ctx)
{
    pthread_mutex_unlock(&((sv_durable *)ctx)->order);
}

/* The marker needs no fsync of its own for safety (it changes no data),
 * but one makes a crash right after replay the same step too. */
static sv_status sync_marker(sv_durable *d, sv_status st, int force, sv_error *err)
{
    if (!d->marker_lsn)
        return st;
    sv_error serr;
    sv_status ss = force ? sv_log_sync_force(d->log, d->marker_lsn, &serr)
                         : sv_log_sync(d->log, d->marker_lsn, &serr);
    if (st == SV_OK && ss != SV_OK) {
        st = ss;
        if (err)
            *err = serr;
    }
    return st;
}

/* With maint_lock held. */
static sv_status flush_now(sv_durable *d, sv_error *err)
{
    uint32_t dim = sv_collection_params(d->c)->dim;
    float *mean = malloc((size_t)dim * sizeof(float));
    if (!mean)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory flushing");
    int trained = 0;
    sv_status st = sv_engine_train(d->c, mean, &trained, err);
    if (st == SV_OK && d->dir && !d->following && (trained || d->mean_unlogged)) {
        if (!trained)
            sv_engine_mean(d->c, mean);
        st = log_mean(d, mean, err);
    }
    free(mean);
    if (st != SV_OK)
        return st;
    sv_flush_hooks hooks = {marker_before, flush_taking, marker_after, d};
    d->marker_lsn = 0;
    d->marker_n = 0;
    st = sync_marker(d, sv_engine_flush(d->c, &hooks, 1, err), 0, err);
    if (d->marker_n) {
        pthread_mutex_lock(&d->stats_lock);
        d->flushes++;
        pthread_mutex_unlock(&d->stats_lock);
    }
    return st;
}

sv_status sv_durable_attach_log(sv_durable *d, sv_log *l, uint64_t old_log_bytes, int log,
                                sv_error *err)
{
    d->log = l;
    d->old_log_bytes = old_log_bytes;
    if (!log)
        return sv_ok(err);
    float *mean = malloc((size_t)sv_collection_params(d->c)->dim * sizeof(float));
    if (!mean)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory logging the quantizer mean");
    sv_engine_mean(d->c, mean);
    sv_status st = log_mean(d, mean, err);
    free(mean);
    return st;
}

sv_status sv_durable_attach_follower(sv_durable *d, sv_log *l, const sv_follow_ids *f, sv_follow_window *w,
                                     uint64_t applied, uint64_t old_log_bytes, sv_error *err)
{
    d->log = l;
    d->following = 1;
    d->follow = *f;
    d->window = w;
    d->applied = applied;
    d->old_log_bytes = old_log_bytes;
    return w ? sv_ok(err) : sv_fail(err, SV_ERR_RESOURCE, "out of memory following a log");
}

sv_status sv_durable_apply(sv_durable *d, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len,
                           sv_follow_result *res, sv_error *err)
{
    *res = (sv_follow_result){SV_OK, 0, 0};
    pthread_mutex_lock(&d->order);
    sv_status st = SV_OK;
    if (!d->following)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "this collection writes its own log");
    else if (d->dropped)
        st = refuse_dropped(err);
    else if (lsn <= d->applied)
        st = sv_ok(err); /* delivered again: already in */
    else if (lsn != d->applied + 1)
        st = sv_fail(err, SV_ERR_CORRUPT, "LSN %" PRIu64 " follows %" PRIu64 ": records are missing", lsn,
                     d->applied);
    else if ((type == SV_WAL_ADD || type == SV_WAL_KEYED) && buffer_full(d, 1))
        st = sv_fail(err, SV_ERR_BUSY, "the write buffer is full; LSN %" PRIu64 " waits for a flush", lsn);
    else if ((st = sv_follow_apply(d->c, &d->follow, d->window, type, lsn, payload, len, res, err)) == SV_OK) {
        __atomic_store_n(&d->applied, lsn, __ATOMIC_RELAXED);
        pthread_mutex_lock(&d->stats_lock);
        d->applied_bytes += len;
        pthread_mutex_unlock(&d->stats_lock);
    }
    pthread_mutex_unlock(&d->order);
    return st;
}

typedef struct follow_ctx {
    sv_durable *d;
    sv_durable_outcome_fn fn;
    void *ctx;
    uint64_t n;
} follow_ctx;

static sv_status follow_visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    follow_ctx *f = ctx;
    sv_follow_result res;
    sv_error why = {0};
    sv_status st = sv_durable_apply(f->d, type, lsn, p, len, &res, &why);
    if (st != SV_OK) {
        *err = why;
        return st;
    }
    f->n++;
    if (f->fn)
        f->fn(f->ctx, lsn, &res, res.outcome == SV_OK ? "" : why.message);
    return SV_OK;
}

sv_status sv_durable_follow(sv_durable *d, uint32_t wait_ms, sv_durable_outcome_fn fn, void *ctx,
                            uint64_t *applied, sv_error *err)
{
    follow_ctx f = {d, fn, ctx, 0};
    sv_status st = d->following ? sv_log_read(d->log, sv_durable_applied(d), wait_ms, follow_visit, &f, NULL, err)
                                : sv_fail(err, SV_ERR_INVALID_ARGUMENT, "this collection writes its own log");
    if (applied)
        *applied = f.n;
    return st;
}

int sv_durable_window_outcome(sv_durable *d, uint64_t lsn, sv_follow_result *res)
{
    pthread_mutex_lock(&d->order);
    int found = d->following && sv_follow_window_outcome(d->window, lsn, res);
    pthread_mutex_unlock(&d->order);
    return found;
}

uint64_t sv_durable_log_last(sv_durable *d)
{
    return d->log ? sv_log_last(d->log) : 0;
}

uint64_t sv_durable_applied(sv_durable *d)
{
    return __atomic_load_n(&d->applied, __ATOMIC_RELAXED);
}

sv_status sv_durable_flush(sv_durable *d, sv_error *err)
{
    pthread_mutex_lock(&d->maint_lock);
    sv_status st = d->dropped ? refuse_dropped(err) : flush_now(d, err);
    pthread_mutex_unlock(&d->maint_lock);
    return st;
}

sv_status sv_durable_consolidate(sv_durable *d, sv_error *err)
{
    pthread_mutex_lock(&d->maint_lock);
    sv_status st = SV_OK;
    if (d->dropped) {
        st = refuse_dropped(err);
    } else {
        sv_flush_hooks hooks = {marker_before, consolidate_taking, marker_after, d};
        d->marker_lsn = 0;
        d->marker_n = 0;
        /* Originals on disk: the slots this frees get other vectors'
         * records at the next flush (or compaction), overwriting ones the
         * last snapshot may name. The deletes that freed them must then
         * be durable whatever --sync-interval-ms says, or a power loss
         * could bring back a vector whose original is gone. */
        st = sync_marker(d, sv_engine_consolidate(d->c, &hooks, err), sv_engine_has_originals(d->c), err);
        if (d->marker_n) {
            pthread_mutex_lock(&d->stats_lock);
            d->consolidations++;
            pthread_mutex_unlock(&d->stats_lock);
        }
    }
    pthread_mutex_unlock(&d->maint_lock);
    return st;
}

sv_status sv_durable_compact(sv_durable *d, uint32_t *moved, sv_error *err)
{
    pthread_mutex_lock(&d->maint_lock);
    sv_status st;
    if (d->dropped) {
        st = refuse_dropped(err);
    } else {
        /* The order lock keeps adds and deletes (which hold slot numbers
         * between their steps) out while slots move. */
        sv_flush_hooks hooks = {marker_before, NULL, marker_after, d};
        st = sv_engine_compact(d->c, &hooks, moved, err);
    }
    pthread_mutex_unlock(&d->maint_lock);
    /* Originals: flushes wait for a snapshot of the new layout (engine.h). */
    if (st == SV_OK && d->dir && sv_engine_originals_waiting(d->c))
        st = sv_durable_snapshot(d, NULL, err);
    return st;
}

int sv_durable_compact_due(sv_durable *d, double ratio)
{
    sv_stats s;
    sv_engine_counts(d->c, &s);
    uint64_t range = s.slots + s.free_slots;
    if (ratio <= 0)
        return s.free_slots > 0;
    return s.free_slots >= 64 && (double)s.free_slots >= ratio * (double)range;
}

void sv_durable_counts(sv_durable *d, sv_stats *out)
{
    sv_engine_counts(d->c, out);
}

/* ---- reads --------------------------------------------------------------------- */

const sv_params *sv_durable_params(const sv_durable *d)
{
    return sv_collection_params(d->c);
}

sv_status sv_durable_search(sv_durable *d, const float *query, uint32_t dim, const sv_search_opts *o,
                            sv_hit *hits, size_t *n_hits, sv_error *err)
{
    return sv_collection_search_opts(d->c, query, dim, o, hits, n_hits, err);
}

sv_status sv_durable_calibrate(sv_durable *d, uint32_t queries, uint64_t seed, sv_error *err)
{
    return sv_collection_calibrate(d->c, queries, seed, err);
}

int sv_durable_calibration(sv_durable *d, sv_calibration *out)
{
    return sv_collection_calibration(d->c, out);
}

sv_status sv_durable_get(sv_durable *d, const char *id, float *out, uint32_t dim, sv_error *err)
{
    return sv_collection_get(d->c, id, out, dim, err);
}

size_t sv_durable_id_len_max(sv_durable *d)
{
    return sv_collection_id_len_max(d->c);
}

uint64_t sv_durable_count(sv_durable *d)
{
    return sv_collection_count(d->c);
}

void sv_durable_collection_stats(sv_durable *d, sv_stats *out)
{
    sv_collection_stats(d->c, out);
}

sv_status sv_durable_validate(sv_durable *d, sv_error *err)
{
    return sv_collection_validate(d->c, err);
}

int sv_durable_flush_due(sv_durable *d)
{
    uint32_t threshold = sv_collection_params(d->c)->flush_threshold;
    return threshold && sv_engine_buffered(d->c) >= threshold;
}

int sv_durable_consolidate_due(sv_durable *d, double ratio, uint64_t min_tombstones)
{
    sv_stats s;
    sv_engine_counts(d->c, &s);
    uint64_t all = s.live + s.tombstones;
    return s.tombstones >= min_tombstones && s.tombstones > 0 &&
           (double)s.tombstones >= ratio * (double)all;
}

uint64_t sv_durable_buffered(sv_durable *d)
{
    return sv_engine_unindexed(d->c);
}

/* ---- snapshots ------------------------------------------------------------ */

static sv_status quiesce(void *ctx, uint64_t *lsn, sv_error *err)
{
    sv_durable *d = ctx;
    pthread_mutex_lock(&d->order);
    wait_pending(d);
    if (d->following) {
        /* The snapshot holds what was applied; the stream keeps the rest. */
        *lsn = d->applied;
        pthread_mutex_lock(&d->stats_lock);
        d->rotated_bytes = d->applied_bytes;
        d->applied_bytes = 0;
        pthread_mutex_unlock(&d->stats_lock);
        return sv_ok(err);
    }
    sv_log_stats ws;
    sv_log_get_stats(d->log, &ws);
    d->rotated_bytes = ws.bytes;
    sv_status st = sv_log_seal(d->log, lsn, err);
    if (st != SV_OK)
        d->rotated_bytes = 0;
    if (st != SV_OK)
        pthread_mutex_unlock(&d->order);
    return st;
}

static void resume(void *ctx)
{
    sv_durable *d = ctx;
    pthread_mutex_unlock(&d->order);
}

/* Remove what the snapshot at lsn replaces: the log through lsn (the
 * backend's business) and older snapshots. */
static void remove_replaced(sv_durable *d, uint64_t lsn)
{
    sv_log_release(d->log, lsn);
    const char *dir = d->dir;
    DIR *dh = opendir(dir);
    if (!dh)
        return;
    struct dirent *e;
    char path[PATH_CAP];
    while ((e = readdir(dh)) != NULL) {
        uint64_t v = 0;
        int old = sv_snapshot_name_lsn(e->d_name, &v) && v < lsn;
        if (old && snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    }
    closedir(dh);
    sv_fsync_dir(dir);
}

sv_status sv_durable_snapshot(sv_durable *d, sv_snapshot_info *info, sv_error *err)
{
    sv_snapshot_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (!d->dir)
        return sv_ok(err);
    char tmp[PATH_CAP], final[PATH_CAP], name[48];
    pthread_mutex_lock(&d->snap_lock);
    snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", d->dir);
    sv_status st = SV_OK;
    if (d->dropped) {
        st = sv_fail(err, SV_ERR_NOT_FOUND, "the collection was dropped");
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = sv_fail(err, SV_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    sv_snapshot_hooks hooks = {quiesce, resume, d};
    st = sv_snapshot_write(d->c, fd, &hooks, info, err);
    double t0 = sv_now_seconds();
    if (st == SV_OK && fdatasync(fd) != 0)
        st = sv_fail(err, SV_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
    close(fd);
    /* The snapshot relies on the originals written so far: durable first. */
    if (st == SV_OK)
        st = sv_engine_originals_sync(d->c, err);
    if (st == SV_OK) {
        sv_snapshot_name(info->lsn, name, sizeof name);
        snprintf(final, sizeof final, "%s/%s", d->dir, name);
        if (rename(tmp, final) != 0 || sv_fsync_dir(d->dir) != 0)
            st = sv_fail(err, SV_ERR_IO, "%s: %s", final, strerror(errno));
    }
    info->seconds += sv_now_seconds() - t0;
    if (st != SV_OK) {
        unlink(tmp);
        /* The rotation sealed log that no snapshot holds yet: keep
         * counting it towards the next one. */
        pthread_mutex_lock(&d->stats_lock);
        d->old_log_bytes += d->rotated_bytes;
        pthread_mutex_unlock(&d->stats_lock);
        d->rotated_bytes = 0;
        goto out;
    }
    remove_replaced(d, info->lsn);
    sv_engine_originals_commit(d->c);
    pthread_mutex_lock(&d->stats_lock);
    d->old_log_bytes = 0;
    d->snapshots++;
    d->last = *info;
    pthread_mutex_unlock(&d->stats_lock);
    sv_ok(err);
out:
    pthread_mutex_unlock(&d->snap_lock);
    return st;
}

int sv_durable_snapshot_due(sv_durable *d)
{
    if (d->dir && sv_engine_originals_waiting(d->c))
        return 1; /* flushes wait for it */
    if (!d->dir || !d->o.snapshot_log_bytes)
        return 0;
    sv_durable_stats s;
    sv_durable_get_stats(d, &s);
    return s.log_bytes >= d->o.snapshot_log_bytes;
}

void sv_durable_get_stats(sv_durable *d, sv_durable_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&d->stats_lock);
    out->flushes = d->flushes;
    out->consolidations = d->consolidations;
    pthread_mutex_unlock(&d->stats_lock);
    if (!d->dir)
        return;
    sv_log_stats w;
    sv_log_get_stats(d->log, &w);
    pthread_mutex_lock(&d->stats_lock);
    out->log_bytes = w.bytes + d->old_log_bytes + d->applied_bytes;
    out->log_bytes_total = w.total_bytes;
    out->syncs = w.syncs;
    out->sync_seconds = w.sync_seconds;
    out->last_lsn = w.next_lsn - 1;
    if (d->following)
        out->last_lsn = __atomic_load_n(&d->applied, __ATOMIC_RELAXED);
    out->snapshots = d->snapshots;
    out->flushes = d->flushes;
    out->consolidations = d->consolidations;
    out->last_snapshot = d->last;
    pthread_mutex_unlock(&d->stats_lock);
}

sv_status sv_durable_drop(sv_durable *d, sv_error *err)
{
    if (!d->dir)
        return sv_ok(err);
    /* No snapshot may write into the path once a new collection can take
     * it, and no write may be logged after the directory goes. */
    pthread_mutex_lock(&d->snap_lock);
    pthread_mutex_lock(&d->order);
    sv_status st = sv_durable_remove_dir(d->dir, err);
    d->dropped = st == SV_OK;
    pthread_mutex_unlock(&d->order);
    pthread_mutex_unlock(&d->snap_lock);
    return st;
}

sv_status sv_durable_remove_dir(const char *dir, sv_error *err)
{
    char gone[PATH_CAP], parent[PATH_CAP];
    snprintf(gone, sizeof gone, "%s~drop-XXXXXX", dir);
    /* mkdtemp picks a free name; rename replaces the empty directory. */
    if (!mkdtemp(gone) || rename(dir, gone) != 0)
        return sv_fail(err, SV_ERR_IO, "removing %s: %s", dir, strerror(errno));
    parent_of(dir, parent, sizeof parent);
    if (sv_fsync_dir(parent) != 0)
        return sv_fail(err, SV_ERR_IO, "%s: %s", parent, strerror(errno));
    sv_remove_dir(gone); /* a leftover is removed at the next start */
    return sv_ok(err);
}
