/* The log interface (log.h) and its local backend: wal.c's segments in a
 * directory, read back at start-up and appended to after. */
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "wal.h"

#define PATH_CAP 4200

void sv_log_close(sv_log *l)
{
    if (l)
        l->ops->close(l->impl);
}

/* A segment found at open: its name, LSN range and good length. */
typedef struct segment {
    char name[40];
    uint64_t first, last;
    size_t good_end, size;
    int torn;
} segment;

typedef struct local_log {
    sv_log log;
    char *dir;
    uint32_t sync_interval_ms;
    sv_wal *wal;          /* NULL until begin (or start) */
    segment *segs;        /* what open found, in LSN order */
    size_t n_segs;
    uint64_t last;        /* the last LSN held */
} local_log;

static int by_first(const void *a, const void *b)
{
    uint64_t x = ((const segment *)a)->first, y = ((const segment *)b)->first;
    return (x > y) - (x < y);
}

static void note_add(char *note, size_t cap, const char *fmt, ...)
{
    if (!note || !cap)
        return;
    size_t used = strnlen(note, cap);
    if (used + 3 >= cap)
        return;
    if (used)
        note[used++] = ';', note[used++] = ' ', note[used] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + used, cap - used, fmt, ap);
    va_end(ap);
}

/* ---- writing ---------------------------------------------------------------- */

static sv_status need_wal(local_log *l, sv_error *err)
{
    return l->wal ? SV_OK : sv_fail(err, SV_ERR_INVALID_ARGUMENT, "the log of %s is open for reading only", l->dir);
}

static sv_status local_append(void *impl, uint32_t type, const char *key, const struct iovec *parts, int n_parts,
                              uint64_t *lsn, int *duplicate, sv_error *err)
{
    local_log *l = impl;
    (void)key; /* no de-duplication here: callers give NULL (log.h) */
    if (duplicate)
        *duplicate = 0;
    sv_status st = need_wal(l, err);
    if (st == SV_OK)
        st = sv_wal_append(l->wal, type, parts, n_parts, lsn, err);
    if (st == SV_OK)
        l->last = *lsn;
    return st;
}

static sv_status local_sync(void *impl, uint64_t lsn, sv_error *err)
{
    local_log *l = impl;
    sv_status st = need_wal(l, err);
    return st == SV_OK ? sv_wal_sync(l->wal, lsn, err) : st;
}

static sv_status local_sync_force(void *impl, uint64_t lsn, sv_error *err)
{
    local_log *l = impl;
    sv_status st = need_wal(l, err);
    return st == SV_OK ? sv_wal_sync_force(l->wal, lsn, err) : st;
}

static sv_status local_seal(void *impl, uint64_t *last_lsn, sv_error *err)
{
    local_log *l = impl;
    sv_status st = need_wal(l, err);
    return st == SV_OK ? sv_wal_rotate(l->wal, last_lsn, err) : st;
}

/* Segments are named by their first LSN and sealed at snapshot
 * boundaries, so a segment whose first LSN is at or below the snapshot's
 * ends at or before it: it is wholly in the snapshot. */
static void local_release(void *impl, uint64_t lsn)
{
    local_log *l = impl;
    DIR *dh = opendir(l->dir);
    if (!dh)
        return;
    struct dirent *e;
    size_t cap = strlen(l->dir) + 64;
    char *path = malloc(cap);
    while (path && (e = readdir(dh)) != NULL) {
        uint64_t v = 0;
        if (sv_wal_segment_lsn(e->d_name, &v) && v <= lsn &&
            snprintf(path, cap, "%s/%s", l->dir, e->d_name) < (int)cap)
            unlink(path);
    }
    free(path);
    closedir(dh);
    sv_fsync_dir(l->dir);
}

static void local_stats(void *impl, sv_log_stats *out)
{
    local_log *l = impl;
    if (!l->wal) {
        *out = (sv_log_stats){.next_lsn = l->last + 1};
        return;
    }
    sv_wal_stats w;
    sv_wal_get_stats(l->wal, &w);
    *out = (sv_log_stats){w.next_lsn, w.bytes, w.total_bytes, w.syncs, w.sync_seconds};
}

/* ---- reading ---------------------------------------------------------------- */

/* The segments through which a read after `after` must go follow each
 * other without a gap from after + 1. Segments wholly at or before `after`
 * do not matter (a crash while a snapshot removed the ones it replaced
 * leaves some behind). */
static int local_covers(void *impl, uint64_t after, char *why, size_t cap)
{
    local_log *l = impl;
    uint64_t prev = after;
    int first = 1;
    for (size_t i = 0; i < l->n_segs; i++) {
        const segment *s = &l->segs[i];
        if (s->last <= after)
            continue;
        if (first && s->first > prev + 1) {
            snprintf(why, cap, "%s: the log starts at LSN %" PRIu64 " and no snapshot holds the LSNs before it (%" PRIu64
                     " to %" PRIu64 ")", s->name, s->first, prev + 1, s->first - 1);
            return 0;
        }
        if (!first && s->first != prev + 1) {
            snprintf(why, cap, "the log jumps from LSN %" PRIu64 " to %" PRIu64 " at %s (a segment is missing)",
                     prev, s->first, s->name);
            return 0;
        }
        first = 0;
        prev = s->last;
    }
    return 1;
}

static uint64_t local_last(void *impl)
{
    return ((local_log *)impl)->last;
}

typedef struct read_ctx {
    sv_log_visit visit;
    void *ctx;
    uint64_t after, last;
    sv_error *err;
    int failed;
} read_ctx;

static sv_status read_one(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, size_t off)
{
    read_ctx *r = ctx;
    if (lsn <= r->after)
        return SV_OK;
    sv_status st = r->visit(r->ctx, type, lsn, p, len, r->err);
    if (st != SV_OK) {
        r->failed = 1;
        /* The visitor's message, placed: which record of the segment. */
        char msg[sizeof r->err->message];
        snprintf(msg, sizeof msg, "offset %zu: LSN %" PRIu64 ": %.200s", off, lsn, r->err->message);
        snprintf(r->err->message, sizeof r->err->message, "%s", msg);
        return st;
    }
    r->last = lsn;
    return SV_OK;
}

/* The segments that open found (what begin appends after is not read:
 * a reader of a local log is the process that is about to write it). */
static sv_status local_read(void *impl, uint64_t after, uint32_t wait_ms, sv_log_visit visit, void *ctx,
                            uint64_t *last_read, sv_error *err)
{
    local_log *l = impl;
    (void)wait_ms; /* nobody else appends to a local log */
    char path[PATH_CAP];
    read_ctx r = {visit, ctx, after, after, err, 0};
    sv_status st = SV_OK;
    for (size_t i = 0; i < l->n_segs && st == SV_OK; i++) {
        const segment *s = &l->segs[i];
        if (s->last <= after)
            continue;
        snprintf(path, sizeof path, "%s/%s", l->dir, s->name);
        sv_map m;
        if (sv_map_file(path, &m) != 0)
            return sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
        sv_wal_scan scan;
        sv_error perr = {0};
        /* Only the good part: a torn tail is cut (or reported) apart. */
        size_t len = m.len < s->good_end ? m.len : s->good_end;
        st = sv_wal_parse(m.data, len, read_one, &r, &scan, &perr);
        sv_unmap(&m);
        if (st == SV_ERR_RESOURCE)
            st = sv_fail(err, st, "out of memory reading %s", path);
        else if (st != SV_OK && r.failed) {
            char msg[sizeof err->message];
            snprintf(msg, sizeof msg, "%s", err->message);
            st = sv_fail(err, st, "%s: %s", s->name, msg);
        }
        else if (st != SV_OK)
            st = sv_fail(err, SV_ERR_CORRUPT, "%s: %s", s->name, perr.message);
    }
    if (last_read)
        *last_read = r.last;
    return st == SV_OK ? sv_ok(err) : st;
}

/* Check every segment; drop header-less ones (a crash while creating). */
static sv_status scan_segments(local_log *l, uint64_t *torn_bytes, char *note, size_t note_cap, sv_error *err)
{
    char path[PATH_CAP];
    size_t kept = 0;
    for (size_t i = 0; i < l->n_segs; i++) {
        segment *s = &l->segs[i];
        snprintf(path, sizeof path, "%s/%s", l->dir, s->name);
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
            note_add(note, note_cap, "removed %s (created, never written)", s->name);
            continue;
        }
        uint64_t named;
        sv_wal_segment_lsn(s->name, &named);
        if (scan.first_lsn != named)
            return sv_fail(err, SV_ERR_CORRUPT, "%s: offset 0: header says LSN %" PRIu64, s->name,
                           scan.first_lsn);
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
                           "%s: offset %zu: damaged record in a log segment that is not the newest", s->name,
                           s->good_end);
        if (s->last > l->last)
            l->last = s->last;
    }
    if (l->n_segs && l->segs[l->n_segs - 1].torn) {
        segment *s = &l->segs[l->n_segs - 1];
        *torn_bytes = s->size - s->good_end;
        note_add(note, note_cap, "cut a torn record of %zu bytes at offset %zu of %s", s->size - s->good_end,
                 s->good_end, s->name);
    }
    return SV_OK;
}

static sv_status list_segments(local_log *l, sv_error *err)
{
    DIR *dh = opendir(l->dir);
    if (!dh)
        return sv_fail(err, SV_ERR_IO, "%s: %s", l->dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    sv_status st = SV_OK;
    while ((e = readdir(dh)) != NULL && st == SV_OK) {
        uint64_t v;
        if (!sv_wal_segment_lsn(e->d_name, &v))
            continue;
        if (l->n_segs == cap) {
            cap = cap ? cap * 2 : 8;
            segment *t = realloc(l->segs, cap * sizeof *t);
            if (!t) {
                st = sv_fail(err, SV_ERR_RESOURCE, "out of memory listing %s", l->dir);
                break;
            }
            l->segs = t;
        }
        segment *s = &l->segs[l->n_segs++];
        memset(s, 0, sizeof *s);
        s->first = v; /* the name's LSN: the order to sort by */
        snprintf(s->name, sizeof s->name, "%.39s", e->d_name);
    }
    closedir(dh);
    if (st == SV_OK && l->n_segs)
        qsort(l->segs, l->n_segs, sizeof *l->segs, by_first);
    return st;
}

/* A torn final record was never acknowledged: cut it off, then write on in
 * a new segment after the last good record. */
static sv_status local_begin(void *impl, uint64_t floor, sv_error *err)
{
    local_log *l = impl;
    if (l->wal)
        return sv_ok(err);
    /* The snapshot recovery loaded holds LSNs up to floor. After it released
     * every segment below, a crash before the next segment's header was
     * written leaves none: starting again at 1 would give new writes LSNs
     * the snapshot already claims, and the next recovery would skip them. */
    if (l->last < floor)
        l->last = floor;
    if (l->n_segs && l->segs[l->n_segs - 1].torn) {
        segment *s = &l->segs[l->n_segs - 1];
        char path[PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", l->dir, s->name);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)s->good_end) != 0 || fsync(fd) != 0) {
            sv_status st = sv_fail(err, SV_ERR_IO, "%s: cutting the torn record: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return st;
        }
        close(fd);
        fprintf(stderr, "slimvec: %s: cut a torn final record (%zu bytes at offset %zu)\n", path,
                s->size - s->good_end, s->good_end);
        s->torn = 0;
        s->size = s->good_end;
    }
    return sv_wal_start(l->dir, l->last + 1, l->sync_interval_ms, &l->wal, err);
}

static void local_close(void *impl)
{
    local_log *l = impl;
    sv_wal_close(l->wal);
    free(l->segs);
    free(l->dir);
    free(l);
}

static const sv_log_ops LOCAL_OPS = {local_append, local_sync,   local_seal,  local_release, local_read,
                                     local_covers, local_last,   local_begin, local_stats,   local_close,
                                     local_sync_force};

static local_log *local_new(const char *dir, uint32_t sync_interval_ms, sv_error *err)
{
    local_log *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        sv_fail(err, SV_ERR_RESOURCE, "out of memory opening the log of %s", dir);
        return NULL;
    }
    l->sync_interval_ms = sync_interval_ms;
    l->log = (sv_log){&LOCAL_OPS, l};
    return l;
}

sv_status sv_log_local_start(const char *dir, uint64_t next_lsn, uint32_t sync_interval_ms, sv_log **out,
                             sv_error *err)
{
    local_log *l = local_new(dir, sync_interval_ms, err);
    if (!l)
        return SV_ERR_RESOURCE;
    l->last = next_lsn - 1;
    sv_status st = sv_wal_start(dir, next_lsn, sync_interval_ms, &l->wal, err);
    if (st != SV_OK) {
        local_close(l);
        return st;
    }
    *out = &l->log;
    return sv_ok(err);
}

sv_status sv_log_local_open(const char *dir, uint32_t sync_interval_ms, sv_log **out, uint64_t *torn_bytes,
                            char *note, size_t note_cap, sv_error *err)
{
    *out = NULL;
    *torn_bytes = 0;
    local_log *l = local_new(dir, sync_interval_ms, err);
    if (!l)
        return SV_ERR_RESOURCE;
    sv_status st = list_segments(l, err);
    if (st == SV_OK)
        st = scan_segments(l, torn_bytes, note, note_cap, err);
    if (st != SV_OK) {
        local_close(l);
        return st;
    }
    *out = &l->log;
    return sv_ok(err);
}
