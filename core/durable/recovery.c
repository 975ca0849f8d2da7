/*
 * Opening a durable collection: pick the snapshot, check the log, cut a
 * torn tail, replay (see durable.h for the rules).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "error.h"
#include "durable_impl.h"
#include "fileio.h"
#include "logrec.h"
#include "snapshot.h"
#include "log.h"
#include "follow.h"

#define PATH_CAP 4200

typedef struct snapfile {
    char name[40];
    uint64_t lsn;
} snapfile;

static int by_lsn_desc(const void *a, const void *b)
{
    uint64_t x = ((const snapfile *)a)->lsn, y = ((const snapfile *)b)->lsn;
    return (x < y) - (x > y);
}

static void note(sv_recovery *rec, const char *fmt, ...)
{
    size_t used = strlen(rec->note);
    if (used + 2 >= sizeof rec->note)
        return;
    if (used)
        rec->note[used++] = ';', rec->note[used++] = ' ', rec->note[used] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rec->note + used, sizeof rec->note - used, fmt, ap);
    va_end(ap);
}

/* ---- snapshots -------------------------------------------------------------- */

typedef struct listing {
    snapfile *snaps;
    size_t n_snaps;
} listing;

/* The snapshots in dir, newest first (a snapshot that never finished is
 * removed: the log it would replace is still there). */
static sv_status list_snapshots(const char *dir, listing *l, sv_error *err)
{
    memset(l, 0, sizeof *l);
    DIR *dh = opendir(dir);
    if (!dh)
        return sv_fail(err, SV_ERR_IO, "%s: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    sv_status st = SV_OK;
    char path[PATH_CAP];
    while ((e = readdir(dh)) != NULL && st == SV_OK) {
        uint64_t v;
        if (sv_snapshot_name_lsn(e->d_name, &v)) {
            if (l->n_snaps == cap) {
                cap = cap ? cap * 2 : 4;
                snapfile *t = realloc(l->snaps, cap * sizeof *t);
                if (!t) {
                    st = sv_fail(err, SV_ERR_RESOURCE, "out of memory listing %s", dir);
                    break;
                }
                l->snaps = t;
            }
            snapfile *s = &l->snaps[l->n_snaps++];
            s->lsn = v;
            snprintf(s->name, sizeof s->name, "%.39s", e->d_name);
        } else if (strcmp(e->d_name, "snapshot.tmp") == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(dh);
    if (st == SV_OK && l->n_snaps)
        qsort(l->snaps, l->n_snaps, sizeof *l->snaps, by_lsn_desc);
    return st;
}

/* ---- replay ----------------------------------------------------------------- */

typedef struct replay {
    sv_collection *c;
    uint64_t base;
    const sv_follow_ids *follow; /* NULL: the log this process wrote */
    sv_follow_window *window;    /* following: the keys of the last records */
    int trained_here;   /* the replay trained the quantizer itself */
    uint64_t applied;
    uint64_t bytes;     /* payload bytes read after base */
} replay;

static sv_status find_train(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len,
                            sv_error *err)
{
    replay *r = ctx;
    (void)lsn;
    if (type != SV_WAL_TRAIN || sv_engine_trained(r->c))
        return SV_OK;
    uint32_t dim = sv_collection_params(r->c)->dim;
    float *mean = malloc((size_t)dim * sizeof(float));
    if (!mean)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    sv_status st = sv_logrec_decode_train(p, len, dim, mean, err);
    if (st == SV_OK)
        st = sv_engine_set_mean(r->c, mean, err);
    free(mean);
    return st;
}

/* Flush where the log says a flush took the buffer (training first if no
 * TRAIN record came before: deterministic, the buffer is the same). */
static sv_status replay_flush(replay *r, sv_error *err)
{
    uint32_t dim = sv_collection_params(r->c)->dim;
    float *mean = malloc((size_t)dim * sizeof(float));
    if (!mean)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    int trained = 0;
    sv_status st = sv_engine_train(r->c, mean, &trained, err);
    free(mean);
    r->trained_here |= trained;
    if (st == SV_OK)
        st = sv_collection_flush(r->c, err);
    return st;
}

/* A record that passed its checksum but does not apply: never skip it. */
static sv_status does_not_apply(sv_status st, sv_error *err)
{
    if (st == SV_ERR_RESOURCE)
        return st;
    char msg[sizeof err->message];
    snprintf(msg, sizeof msg, "does not apply: %.230s", err->message);
    return sv_fail(err, SV_ERR_CORRUPT, "%s", msg);
}

static sv_status apply_marker(replay *r, uint32_t type, const uint8_t *p, size_t len, sv_error *err)
{
    /* The point where a consolidation fixed its tombstones or a flush took
     * the buffer; the replay does the same there. */
    uint64_t count = 0;
    sv_status st;
    if (type == SV_WAL_CONSOLIDATE) {
        if ((st = sv_logrec_decode_consolidate(p, len, &count, err)) == SV_OK)
            st = sv_collection_consolidate(r->c, err);
        return st;
    }
    if ((st = sv_logrec_decode_flush(p, len, &count, err)) != SV_OK)
        return st;
    uint64_t have = sv_engine_buffered(r->c);
    if (count != have)
        return sv_fail(err, SV_ERR_CORRUPT, "a flush of %llu rows where the replay buffers %llu",
                       (unsigned long long)count, (unsigned long long)have);
    return replay_flush(r, err);
}

static sv_status apply_own(replay *r, uint32_t type, const uint8_t *p, size_t len, sv_error *err)
{
    sv_logrec rec;
    sv_status st;
    if (type == SV_WAL_CONSOLIDATE || type == SV_WAL_FLUSH)
        return apply_marker(r, type, p, len, err);
    if (type == SV_WAL_DELETE) {
        if ((st = sv_logrec_decode_delete(p, len, &rec, err)) != SV_OK)
            return st;
        st = sv_collection_delete(r->c, (const char *const *)rec.ids, rec.n, err);
        sv_logrec_release(&rec);
        return st;
    }
    if (type == SV_WAL_INDEX) {
        if ((st = sv_logrec_decode_index(p, len, &rec, err)) != SV_OK)
            return st;
        st = sv_collection_index_key(r->c, rec.ids[0], err);
        sv_logrec_release(&rec);
        return st;
    }
    if (type == SV_WAL_SET_PAYLOAD) {
        if ((st = sv_logrec_decode_set_payload(p, len, &rec, err)) != SV_OK)
            return st;
        st = sv_collection_set_payload(r->c, rec.ids[0], &rec.payloads[0], rec.mode, err);
        sv_logrec_release(&rec);
        return st;
    }
    if ((st = sv_logrec_decode_add(p, len, &rec, err)) != SV_OK)
        return st;
    uint64_t *got = malloc(((size_t)rec.n + 1) * sizeof *got);
    if (!got) {
        sv_logrec_release(&rec);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    }
    sv_engine_set_id_counter(r->c, rec.counter);
    st = rec.upsert ? sv_collection_upsert(r->c, rec.vectors, rec.n, rec.dim, (const char *const *)rec.ids,
                                           rec.payloads, got, NULL, err)
                    : sv_collection_add_payloads(r->c, rec.vectors, rec.n, rec.dim, (const char *const *)rec.ids,
                                                 rec.payloads, got, err);
    for (uint32_t i = 0; st == SV_OK && i < rec.n; i++)
        if (!rec.ids[i] && got[i] != rec.expect[i])
            st = sv_fail(err, SV_ERR_CORRUPT, "vector %u was assigned id %" PRIu64 " where the log says %" PRIu64,
                         i, got[i], rec.expect[i]);
    free(got);
    sv_logrec_release(&rec);
    return st;
}

/* Apply one record after the snapshot. */
static sv_status apply(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    replay *r = ctx;
    if (lsn <= r->base || type == SV_WAL_TRAIN)
        return SV_OK;
    r->bytes += len;
    sv_status st;
    if (r->follow) {
        sv_follow_result res; /* a refused record is refused on every replica: done */
        st = sv_follow_apply(r->c, r->follow, r->window, type, lsn, p, len, &res, err);
    } else {
        st = apply_own(r, type, p, len, err);
    }
    if (st != SV_OK)
        return does_not_apply(st, err);
    r->applied++;
    return SV_OK;
}

/* The keyed records before the snapshot, back into the window (a stop
 * past it ends the read). */
static sv_status note_key(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    replay *r = ctx;
    if (lsn > r->base)
        return sv_fail(err, SV_ERR_INTERRUPTED, "past the snapshot");
    sv_follow_window_note(r->window, type, lsn, p, len);
    return SV_OK;
}

/* ---- open ------------------------------------------------------------------- */

static sv_status read_params(const char *dir, const sv_allocator *a, uint32_t threads, sv_params *p,
                             sv_error *err)
{
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/params", dir);
    sv_map m;
    if (sv_map_file(path, &m) != 0)
        return sv_fail(err, errno == ENOENT ? SV_ERR_CORRUPT : SV_ERR_IO, "%s: %s", path, strerror(errno));
    sv_error perr;
    sv_status st = sv_params_decode(m.data, m.len, p, &perr);
    sv_unmap(&m);
    if (st != SV_OK)
        return sv_fail(err, st, "%s: %s", path, perr.message);
    p->allocator = a;
    p->threads = threads;
    return SV_OK;
}

/* The newest snapshot that loads and that the log covers; *c stays NULL
 * when none does (first_err says why the newest did not). */
static sv_status pick_snapshot(const char *dir, const listing *l, sv_log *log, const sv_params *p,
                               sv_collection **c, uint64_t *base, sv_recovery *rec, char *first_err,
                               size_t cap, sv_error *err)
{
    char path[PATH_CAP], why[160];
    uint64_t end = sv_log_last(log);
    for (size_t i = 0; i < l->n_snaps && !*c; i++) {
        snapfile *s = &l->snaps[i];
        snprintf(path, sizeof path, "%s/%s", dir, s->name);
        sv_error serr = {0};
        if (!sv_log_covers(log, s->lsn, why, sizeof why)) {
            snprintf(serr.message, sizeof serr.message, "%s", why);
        } else {
            double ts = sv_now_seconds();
            sv_map m;
            uint64_t lsn = 0;
            if (sv_map_file(path, &m) != 0)
                return sv_fail(err, SV_ERR_IO, "%s: %s", s->name, strerror(errno));
            sv_status ls = sv_snapshot_load(m.data, m.len, p, c, &lsn, &serr);
            sv_unmap(&m);
            if (ls == SV_ERR_RESOURCE)
                return sv_fail(err, ls, "%s: %s", s->name, serr.message);
            if (ls == SV_OK && lsn != s->lsn) {
                sv_collection_free(*c);
                *c = NULL;
                snprintf(serr.message, sizeof serr.message, "offset 16: holds LSN %" PRIu64, lsn);
            }
            /* An older snapshot stands in for a damaged newer one only when
             * the log still holds everything up to the newer one's LSN. */
            if (*c && i > 0 && end < l->snaps[0].lsn) {
                sv_collection_free(*c);
                *c = NULL;
                snprintf(serr.message, sizeof serr.message,
                         "loads, but the log ends at LSN %" PRIu64 ", before the newer snapshot's %" PRIu64, end,
                         l->snaps[0].lsn);
            }
            if (*c) {
                *base = s->lsn;
                rec->snapshot_lsn = s->lsn;
                rec->snapshot_seconds = sv_now_seconds() - ts;
                if (first_err[0])
                    note(rec, "skipped %s", first_err);
                return SV_OK;
            }
        }
        if (!first_err[0])
            snprintf(first_err, cap, "%s: %.200s", s->name, serr.message);
    }
    return SV_OK;
}

/*
 * Recovery over any log (log.h): params and snapshots from dir, the records
 * after the snapshot from the log; then the log is readied for writing (or,
 * following, left to the follower). Takes the log in every case.
 */
static sv_status recover(const char *dir, const sv_allocator *a, uint32_t threads, const sv_durable_options *o,
                         sv_log *log, const sv_follow_ids *follow, sv_durable **out, sv_recovery *rec,
                         sv_error *err)
{
    double t0 = sv_now_seconds();
    sv_params p;
    listing l = {0};
    sv_collection *c = NULL;
    char first_err[256] = "", why[160];
    uint64_t base = 0, end = sv_log_last(log);
    replay r = {0};
    char orig_path[PATH_CAP];
    sv_status st = read_params(dir, a, threads, &p, err);
    snprintf(orig_path, sizeof orig_path, "%s/" SV_ORIGINALS_FILE, dir);
    p.originals_path = orig_path;
    if (st == SV_OK)
        st = list_snapshots(dir, &l, err);
    if (st == SV_OK)
        st = pick_snapshot(dir, &l, log, &p, &c, &base, rec, first_err, sizeof first_err, err);
    if (st != SV_OK)
        goto cleanup;
    if (!c) {
        if (l.n_snaps && end < l.snaps[0].lsn) {
            /* Without a snapshot the log alone must hold every LSN up to
             * the newest snapshot's, or acknowledged data would be lost. */
            st = sv_fail(err, SV_ERR_CORRUPT, "%s", first_err);
            goto cleanup;
        }
        if (!sv_log_covers(log, 0, why, sizeof why)) {
            st = sv_fail(err, SV_ERR_CORRUPT, "%s", first_err[0] ? first_err : why);
            goto cleanup;
        }
        if (first_err[0])
            note(rec, "replaying the whole log instead of %s", first_err);
        if ((st = sv_collection_create(&p, &c, err)) != SV_OK)
            goto cleanup;
        sv_engine_set_manual_flush(c, 1);
    }

    r.c = c;
    r.base = base;
    r.follow = follow;
    uint64_t last = base;
    if (follow) {
        /* The window of keys as it was at the snapshot: its records again
         * (the log keeps them below the lowest snapshot, follow.h). */
        if (!(r.window = sv_follow_window_create())) {
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory following %s", dir);
            goto cleanup;
        }
        uint64_t from = base > SV_FOLLOW_WINDOW ? base - SV_FOLLOW_WINDOW : 0;
        char why2[160];
        if (base && sv_log_covers(log, from, why2, sizeof why2)) {
            st = sv_log_read(log, from, 1, note_key, &r, NULL, err);
            if (st == SV_ERR_INTERRUPTED)
                st = SV_OK;
            if (st != SV_OK)
                goto cleanup;
        }
    }
    /* A wait of 1 ms: a remote log is read through the end it has now, not
     * only what it had at hand (log.h); nothing more is waited for. */
    if (!follow && !sv_engine_trained(c) && (st = sv_log_read(log, base, 1, find_train, &r, NULL, err)) != SV_OK)
        goto cleanup;
    if ((st = sv_log_read(log, base, 1, apply, &r, &last, err)) != SV_OK)
        goto cleanup;
    rec->replayed = r.applied;
    rec->last_lsn = last;
    /* Every record the snapshot relies on was fsynced before it was
     * renamed, and the replay rewrote the rest: a mismatch is damage. */
    if ((st = sv_engine_originals_check(c, err)) != SV_OK)
        goto cleanup;
    if (!follow && (st = sv_log_begin(log, base, err)) != SV_OK)
        goto cleanup;
    sv_durable *d = sv_durable_wrap(dir, c, o);
    if (!d) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory opening %s", dir);
        goto cleanup;
    }
    c = NULL;
    st = follow ? sv_durable_attach_follower(d, log, follow, r.window, last, r.bytes, err)
                : sv_durable_attach_log(d, log, r.bytes, r.trained_here, err);
    log = NULL; /* the durable handle has it (and the window), even when attaching failed */
    r.window = NULL;
    if (st != SV_OK) {
        sv_durable_free(d);
        goto cleanup;
    }
    *out = d;
    rec->seconds = sv_now_seconds() - t0;
    st = sv_ok(err);
cleanup:
    sv_follow_window_free(r.window);
    sv_log_close(log);
    sv_collection_free(c);
    free(l.snaps);
    return st;
}

sv_status sv_durable_open(const char *dir, const sv_allocator *a, uint32_t threads,
                          const sv_durable_options *o, sv_durable **out, sv_recovery *rec,
                          sv_error *err)
{
    *out = NULL;
    sv_recovery local;
    if (!rec)
        rec = &local;
    memset(rec, 0, sizeof *rec);
    sv_log *log = NULL;
    sv_status st = sv_log_local_open(dir, o->sync_interval_ms, &log, &rec->torn_bytes, rec->note,
                                     sizeof rec->note, err);
    return st == SV_OK ? recover(dir, a, threads, o, log, NULL, out, rec, err) : st;
}

sv_status sv_durable_open_follower(const char *dir, const sv_allocator *a, uint32_t threads,
                                   const sv_durable_options *o, sv_log *log, const sv_follow_ids *follow,
                                   sv_durable **out, sv_recovery *rec, sv_error *err)
{
    *out = NULL;
    sv_recovery local;
    if (!rec)
        rec = &local;
    memset(rec, 0, sizeof *rec);
    return recover(dir, a, threads, o, log, follow, out, rec, err);
}
