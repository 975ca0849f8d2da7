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
#include "wal.h"

#define PATH_CAP 4200

typedef struct segment {
    char name[40];
    uint64_t first, last;
    size_t good_end, size;
    int torn;
} segment;

typedef struct snapfile {
    char name[40];
    uint64_t lsn;
} snapfile;

static int by_first(const void *a, const void *b)
{
    uint64_t x = ((const segment *)a)->first, y = ((const segment *)b)->first;
    return (x > y) - (x < y);
}

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

/* ---- listing ---------------------------------------------------------------- */

typedef struct listing {
    segment *segs;
    size_t n_segs;
    snapfile *snaps;
    size_t n_snaps;
} listing;

static sv_status list_dir(const char *dir, listing *l, sv_error *err)
{
    memset(l, 0, sizeof *l);
    DIR *dh = opendir(dir);
    if (!dh)
        return sv_fail(err, SV_ERR_IO, "%s: %s", dir, strerror(errno));
    size_t cap_s = 0, cap_p = 0;
    struct dirent *e;
    sv_status st = SV_OK;
    char path[PATH_CAP];
    while ((e = readdir(dh)) != NULL && st == SV_OK) {
        uint64_t v;
        if (sv_wal_segment_lsn(e->d_name, &v)) {
            if (l->n_segs == cap_s) {
                cap_s = cap_s ? cap_s * 2 : 8;
                segment *t = realloc(l->segs, cap_s * sizeof *t);
                if (!t) {
                    st = sv_fail(err, SV_ERR_RESOURCE, "out of memory listing %s", dir);
                    break;
                }
                l->segs = t;
            }
            segment *s = &l->segs[l->n_segs++];
            memset(s, 0, sizeof *s);
            s->first = v; /* the name's LSN: the order to sort by */
            snprintf(s->name, sizeof s->name, "%.39s", e->d_name);
        } else if (sv_snapshot_name_lsn(e->d_name, &v)) {
            if (l->n_snaps == cap_p) {
                cap_p = cap_p ? cap_p * 2 : 4;
                snapfile *t = realloc(l->snaps, cap_p * sizeof *t);
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
            /* A snapshot that never finished: its log is still here. */
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(dh);
    if (st != SV_OK)
        return st;
    if (l->n_segs)
        qsort(l->segs, l->n_segs, sizeof *l->segs, by_first);
    if (l->n_snaps)
        qsort(l->snaps, l->n_snaps, sizeof *l->snaps, by_lsn_desc);
    return SV_OK;
}

/* Check every segment; drop header-less ones (a crash while creating). */
static sv_status scan_segments(const char *dir, listing *l, sv_recovery *rec, sv_error *err)
{
    char path[PATH_CAP];
    size_t kept = 0;
    for (size_t i = 0; i < l->n_segs; i++) {
        segment *s = &l->segs[i];
        snprintf(path, sizeof path, "%s/%s", dir, s->name);
        sv_map m;
        if (sv_map_file(path, &m) != 0)
            return sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
        sv_wal_scan scan;
        sv_error perr;
        sv_status st = sv_wal_parse(m.data, m.len, NULL, NULL, &scan, &perr);
        s->size = m.len;
        sv_unmap(&m);
        if (st != SV_OK)
            return sv_fail(err, st, "%s: %s", s->name, perr.message);
        if (s->size < SV_WAL_HEADER) {
            unlink(path);
            note(rec, "removed %s (created, never written)", s->name);
            continue;
        }
        uint64_t named;
        sv_wal_segment_lsn(s->name, &named);
        if (scan.first_lsn != named)
            return sv_fail(err, SV_ERR_CORRUPT, "%s: offset 0: header says LSN %" PRIu64, s->name, scan.first_lsn);
        s->first = scan.first_lsn;
        s->last = scan.last_lsn;
        s->good_end = scan.good_end;
        s->torn = scan.torn;
        l->segs[kept++] = *s;
    }
    l->n_segs = kept;
    for (size_t i = 0; i < l->n_segs; i++) {
        segment *s = &l->segs[i];
        if (s->torn && i + 1 != l->n_segs)
            return sv_fail(err, SV_ERR_CORRUPT,
                           "%s: offset %zu: damaged record in a log segment that is not the newest",
                           s->name, s->good_end);
    }
    return SV_OK;
}

/*
 * 1 when the log continues a state that holds LSNs up to base: the segments
 * with records after base start at or before base + 1 and follow each other
 * without a gap. Segments wholly at or before base do not matter (a crash
 * while a snapshot removed the ones it replaced leaves some behind).
 */
static int log_continues(const listing *l, uint64_t base, char *why, size_t cap)
{
    uint64_t prev = base;
    int first = 1;
    for (size_t i = 0; i < l->n_segs; i++) {
        const segment *s = &l->segs[i];
        if (s->last <= base)
            continue;
        if (first ? s->first > prev + 1 : s->first != prev + 1) {
            snprintf(why, cap, "the log jumps from LSN %" PRIu64 " to %" PRIu64 " at %s (a segment is missing)",
                     prev, s->first, s->name);
            return 0;
        }
        first = 0;
        prev = s->last;
    }
    return 1;
}

/* ---- replay ----------------------------------------------------------------- */

typedef struct replay {
    sv_collection *c;
    uint64_t base;
    const char *path;
    int trained_here;   /* the replay trained the quantizer itself */
    uint64_t applied;
    char why[256];      /* why a record did not apply */
} replay;

static sv_status find_train(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len,
                            size_t off)
{
    replay *r = ctx;
    if (type != SV_WAL_TRAIN || lsn <= r->base || sv_engine_trained(r->c))
        return SV_OK;
    uint32_t dim = sv_collection_params(r->c)->dim;
    float *mean = malloc((size_t)dim * sizeof(float));
    sv_error e;
    sv_status st = mean ? sv_logrec_decode_train(p, len, dim, mean, &e) : SV_ERR_RESOURCE;
    if (st == SV_OK)
        st = sv_engine_set_mean(r->c, mean, &e);
    free(mean);
    if (st != SV_OK && st != SV_ERR_RESOURCE)
        snprintf(r->why, sizeof r->why, "offset %zu: LSN %" PRIu64 ": %.200s", off, lsn, e.message);
    return st;
}

/* Flush where the log says a flush took the buffer (training first if no
 * TRAIN record came before: deterministic, the buffer is the same). */
static sv_status replay_flush(replay *r)
{
    uint32_t dim = sv_collection_params(r->c)->dim;
    float *mean = malloc((size_t)dim * sizeof(float));
    if (!mean)
        return SV_ERR_RESOURCE;
    int trained = 0;
    sv_status st = sv_engine_train(r->c, mean, &trained, NULL);
    free(mean);
    r->trained_here |= trained;
    if (st == SV_OK)
        st = sv_collection_flush(r->c, NULL);
    return st;
}

/* Apply one record; its failure names the record (the caller adds the file). */
static sv_status apply(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, size_t off)
{
    replay *r = ctx;
    if (lsn <= r->base || type == SV_WAL_TRAIN)
        return SV_OK;
    if (type == SV_WAL_CONSOLIDATE || type == SV_WAL_FLUSH) {
        /* Markers: the point where a consolidation fixed its tombstones or
         * a flush took the buffer; the replay does the same there. */
        uint64_t count = 0;
        sv_error e = {0};
        sv_status st;
        if (type == SV_WAL_CONSOLIDATE) {
            if ((st = sv_logrec_decode_consolidate(p, len, &count, &e)) == SV_OK)
                st = sv_collection_consolidate(r->c, &e);
        } else {
            st = sv_logrec_decode_flush(p, len, &count, &e);
            uint64_t have = sv_engine_buffered(r->c);
            if (st == SV_OK && count != have) {
                st = SV_ERR_CORRUPT;
                snprintf(e.message, sizeof e.message, "a flush of %llu rows where the replay buffers %llu",
                         (unsigned long long)count, (unsigned long long)have);
            }
            if (st == SV_OK)
                st = replay_flush(r);
        }
        if (st != SV_OK && st != SV_ERR_RESOURCE)
            snprintf(r->why, sizeof r->why, "offset %zu: LSN %" PRIu64 " does not apply: %.180s", off,
                     lsn, e.message);
        if (st == SV_OK)
            r->applied++;
        return st;
    }
    sv_logrec rec;
    sv_error e = {0};
    sv_status st;
    if (type == SV_WAL_ADD) {
        st = sv_logrec_decode_add(p, len, &rec, &e);
        if (st != SV_OK)
            goto bad;
        uint64_t *got = malloc(rec.n * sizeof *got);
        if (!got) {
            sv_logrec_release(&rec);
            return SV_ERR_RESOURCE;
        }
        sv_engine_set_id_counter(r->c, rec.counter);
        st = sv_collection_add(r->c, rec.vectors, rec.n, rec.dim, (const char *const *)rec.ids, got, &e);
        for (uint32_t i = 0; st == SV_OK && i < rec.n; i++) {
            if (!rec.ids[i] && got[i] != rec.expect[i]) {
                st = SV_ERR_CORRUPT;
                snprintf(e.message, sizeof e.message, "vector %u was assigned id %" PRIu64 " where the log says %" PRIu64,
                         i, got[i], rec.expect[i]);
            }
        }
        free(got);
        sv_logrec_release(&rec);
        if (st != SV_OK)
            goto bad;
    } else {
        st = sv_logrec_decode_delete(p, len, &rec, &e);
        if (st != SV_OK)
            goto bad;
        st = sv_collection_delete(r->c, (const char *const *)rec.ids, rec.n, &e);
        sv_logrec_release(&rec);
        if (st != SV_OK)
            goto bad;
    }
    r->applied++;
    return SV_OK;
bad:
    if (st == SV_ERR_RESOURCE)
        return st;
    /* A record that passed its checksum but does not apply: never skip it. */
    snprintf(r->why, sizeof r->why, "offset %zu: LSN %" PRIu64 " does not apply: %.180s", off, lsn,
             e.message);
    return SV_ERR_CORRUPT;
}

static sv_status replay_segments(const char *dir, const listing *l, replay *r, sv_wal_visit visit,
                                 sv_error *err)
{
    char path[PATH_CAP];
    for (size_t i = 0; i < l->n_segs; i++) {
        const segment *s = &l->segs[i];
        if (s->last <= r->base)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, s->name);
        r->path = path;
        sv_map m;
        if (sv_map_file(path, &m) != 0)
            return sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
        sv_wal_scan scan;
        sv_error perr = {0};
        /* Only the good part: a torn tail is already cut (or reported). */
        size_t len = m.len < s->good_end ? m.len : s->good_end;
        sv_status st = sv_wal_parse(m.data, len, visit, r, &scan, &perr);
        sv_unmap(&m);
        if (st == SV_ERR_RESOURCE)
            return sv_fail(err, st, "out of memory replaying %s", path);
        if (st != SV_OK)
            return sv_fail(err, SV_ERR_CORRUPT, "%s: %s", s->name, r->why[0] ? r->why : perr.message);
    }
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

sv_status sv_durable_open(const char *dir, const sv_allocator *a, uint32_t threads,
                          const sv_durable_options *o, sv_durable **out, sv_recovery *rec,
                          sv_error *err)
{
    *out = NULL;
    sv_recovery local;
    if (!rec)
        rec = &local;
    memset(rec, 0, sizeof *rec);
    double t0 = sv_now_seconds();
    sv_params p;
    listing l = {0};
    sv_collection *c = NULL;
    sv_log *log = NULL;
    char path[PATH_CAP], first_err[256] = "", why[160];
    sv_status st = read_params(dir, a, threads, &p, err);
    if (st == SV_OK)
        st = list_dir(dir, &l, err);
    if (st == SV_OK)
        st = scan_segments(dir, &l, rec, err);
    if (st != SV_OK)
        goto cleanup;
    uint64_t end = l.n_segs ? l.segs[l.n_segs - 1].last : 0;

    /* The newest snapshot that loads and that the log continues. */
    uint64_t base = 0;
    for (size_t i = 0; i < l.n_snaps && !c; i++) {
        snapfile *s = &l.snaps[i];
        snprintf(path, sizeof path, "%s/%s", dir, s->name);
        sv_error serr = {0};
        if (!log_continues(&l, s->lsn, why, sizeof why)) {
            snprintf(serr.message, sizeof serr.message, "%s", why);
        } else {
            double ts = sv_now_seconds();
            sv_map m;
            uint64_t lsn = 0;
            if (sv_map_file(path, &m) != 0) {
                st = sv_fail(err, SV_ERR_IO, "%s: %s", s->name, strerror(errno));
                goto cleanup;
            } else {
                sv_status ls = sv_snapshot_load(m.data, m.len, &p, &c, &lsn, &serr);
                sv_unmap(&m);
                if (ls == SV_ERR_RESOURCE) {
                    st = sv_fail(err, ls, "%s: %s", s->name, serr.message);
                    goto cleanup;
                }
                if (ls == SV_OK && lsn != s->lsn) {
                    sv_collection_free(c);
                    c = NULL;
                    snprintf(serr.message, sizeof serr.message, "offset 16: holds LSN %" PRIu64, lsn);
                }
            }
            /* An older snapshot stands in for a damaged newer one only when
             * the log still holds everything up to the newer one's LSN. */
            if (c && i > 0 && end < l.snaps[0].lsn) {
                sv_collection_free(c);
                c = NULL;
                snprintf(serr.message, sizeof serr.message,
                         "loads, but the log ends at LSN %" PRIu64 ", before the newer snapshot's %" PRIu64,
                         end, l.snaps[0].lsn);
            }
            if (c) {
                base = s->lsn;
                rec->snapshot_lsn = base;
                rec->snapshot_seconds = sv_now_seconds() - ts;
                if (first_err[0])
                    note(rec, "skipped %s", first_err);
                break;
            }
        }
        if (!first_err[0])
            snprintf(first_err, sizeof first_err, "%s: %.200s", s->name, serr.message);
    }
    if (!c) {
        if (l.n_snaps && end < l.snaps[0].lsn) {
            /* Without a snapshot the log alone must hold every LSN up to
             * the newest snapshot's, or acknowledged data would be lost. */
            st = sv_fail(err, SV_ERR_CORRUPT, "%s", first_err);
            goto cleanup;
        }
        if (!log_continues(&l, 0, why, sizeof why)) {
            if (first_err[0])
                st = sv_fail(err, SV_ERR_CORRUPT, "%s", first_err);
            else if (l.segs[0].first > 1)
                st = sv_fail(err, SV_ERR_CORRUPT,
                             "%s: the log starts at LSN %" PRIu64 " and no snapshot holds the LSNs before it",
                             l.segs[0].name, l.segs[0].first);
            else
                st = sv_fail(err, SV_ERR_CORRUPT, "%s", why);
            goto cleanup;
        }
        if (first_err[0])
            note(rec, "replaying the whole log instead of %s", first_err);
        if ((st = sv_collection_create(&p, &c, err)) != SV_OK)
            goto cleanup;
        sv_engine_set_manual_flush(c, 1);
    }

    /* A torn final record was never acknowledged: cut it off. */
    if (l.n_segs && l.segs[l.n_segs - 1].torn) {
        segment *s = &l.segs[l.n_segs - 1];
        snprintf(path, sizeof path, "%s/%s", dir, s->name);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)s->good_end) != 0 || fsync(fd) != 0) {
            st = sv_fail(err, SV_ERR_IO, "%s: cutting the torn record: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            goto cleanup;
        }
        close(fd);
        rec->torn_bytes = s->size - s->good_end;
        note(rec, "cut a torn record of %zu bytes at offset %zu of %s", s->size - s->good_end,
             s->good_end, s->name);
        fprintf(stderr, "slimvec: %s: cut a torn final record (%zu bytes at offset %zu)\n", path,
                s->size - s->good_end, s->good_end);
    }

    replay r = {.c = c, .base = base};
    if (!sv_engine_trained(c) && (st = replay_segments(dir, &l, &r, find_train, err)) != SV_OK)
        goto cleanup;
    if ((st = replay_segments(dir, &l, &r, apply, err)) != SV_OK)
        goto cleanup;
    rec->replayed = r.applied;
    rec->last_lsn = end > base ? end : base;

    uint64_t old_bytes = 0;
    for (size_t i = 0; i < l.n_segs; i++)
        if (l.segs[i].last > base)
            old_bytes += l.segs[i].good_end - SV_WAL_HEADER;
    /* Replay above read the local segments; writing goes on through the
     * log interface like everything durable.c does. */
    if ((st = sv_log_local_start(dir, rec->last_lsn + 1, o->sync_interval_ms, &log, err)) != SV_OK)
        goto cleanup;
    sv_durable *d = sv_durable_wrap(dir, c, o);
    if (!d) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory opening %s", dir);
        goto cleanup;
    }
    c = NULL;
    if ((st = sv_durable_attach_log(d, log, old_bytes, r.trained_here, err)) != SV_OK) {
        sv_durable_free(d); /* closes the log it was given */
        log = NULL;
        goto cleanup;
    }
    log = NULL;
    *out = d;
    rec->seconds = sv_now_seconds() - t0;
    st = sv_ok(err);
cleanup:
    sv_log_close(log);
    sv_collection_free(c);
    free(l.segs);
    free(l.snaps);
    return st;
}
