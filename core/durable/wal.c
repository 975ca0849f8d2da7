/* Write-ahead log segments: parsing, appending, group commit (see wal.h). */
#include "wal.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "crc32c.h"
#include "fileheader.h"
#include "fileio.h"

static const uint8_t MAGIC[8] = {'S', 'V', 'W', 'A', 'L', 0, 0, 1};
/* Version 2 salts the record checksums (wal.h); version 1 segments, whose
 * salt is 0, are still read. */
#define VERSION 2u
#define VERSION_MIN 1u

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint32_t sv_wal_seed(uint64_t salt)
{
    return salt ? sv_crc32c(0, &salt, 8) : 0;
}

uint32_t sv_wal_record_crc(uint32_t seed, uint32_t len, const uint8_t *rest, size_t rest_len)
{
    uint32_t crc = sv_crc32c(seed, &len, 4);
    return sv_crc32c(crc, rest, rest_len);
}

/* ---- reading ------------------------------------------------------------- */

/*
 * Offset of an intact record after `from` whose LSN follows last_lsn, or 0.
 * Appends are sequential, so a crash tears only the final record: when an
 * intact later record exists, the bad one is damage (say a flipped length
 * bit), not a torn tail, and cutting there would drop acknowledged data.
 * The search is bounded: only the next few LSNs count, and at most
 * LATER_CHECKS offsets that hold one pay for a checksum (the bytes are
 * partly a client's vectors, which could be made to look like headers).
 */
#define LATER_LSNS 64u
#define LATER_CHECKS 4096u
static size_t later_record(const uint8_t *data, size_t len, size_t from, uint64_t last_lsn,
                           uint32_t seed)
{
    unsigned checks = 0;
    for (size_t off = from; off + SV_WAL_REC_HEADER <= len && checks < LATER_CHECKS; off++) {
        uint64_t lsn;
        memcpy(&lsn, data + off + 8, 8);
        if (lsn <= last_lsn || lsn - last_lsn > LATER_LSNS)
            continue;
        uint32_t plen;
        memcpy(&plen, data + off, 4);
        if (plen > len - off - SV_WAL_REC_HEADER)
            continue;
        checks++;
        uint32_t crc;
        memcpy(&crc, data + off + 4, 4);
        if (crc == sv_wal_record_crc(seed, plen, data + off + 8, 12 + (size_t)plen))
            return off;
    }
    return 0;
}

sv_status sv_wal_parse(const uint8_t *data, size_t len, sv_wal_visit visit, void *ctx,
                       sv_wal_scan *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    if (len < SV_WAL_HEADER) {
        /* Created but its header never fully reached the disk. */
        out->torn = len > 0;
        return SV_OK;
    }
    uint32_t version = 0;
    uint64_t salt = 0;
    sv_status st = sv_file_header_decode(data, len, MAGIC, VERSION_MIN, VERSION, "log segment", &version,
                                         &out->first_lsn, &salt, err);
    if (st != SV_OK)
        return st;
    if (version == 1 && salt != 0)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: version 1 log segment with a salt");
    uint32_t seed = sv_wal_seed(salt);
    if (out->first_lsn == 0)
        return sv_fail(err, SV_ERR_CORRUPT, "offset 0: segment starts at LSN 0");
    out->last_lsn = out->first_lsn - 1;
    size_t off = SV_WAL_HEADER;
    out->good_end = off;
    while (off < len) {
        size_t left = len - off;
        const uint8_t *r = data + off;
        int bad = 0;
        uint32_t plen = 0;
        if (left < SV_WAL_REC_HEADER) {
            bad = 1;
        } else {
            plen = rd32(r);
            if (plen > SV_WAL_MAX_PAYLOAD || plen > left - SV_WAL_REC_HEADER)
                bad = 1;
            else if (rd32(r + 4) != sv_wal_record_crc(seed, plen, r + 8, 12 + (size_t)plen))
                bad = 1;
        }
        if (bad) {
            /* A bad record with no intact record after it is the torn
             * tail of a crash during an append (never acknowledged: the
             * acknowledgement waits for the fsync). One with an intact
             * record after it is damage to acknowledged data. */
            size_t later = later_record(data, len, off + 1, out->last_lsn, seed);
            if (later)
                return sv_fail(err, SV_ERR_CORRUPT,
                               "offset %zu: damaged record (LSN %" PRIu64 " expected; an intact record follows at offset %zu)",
                               off, out->last_lsn + 1, later);
            out->torn = 1;
            return SV_OK;
        }
        uint64_t lsn = rd64(r + 8);
        uint32_t type = rd32(r + 16);
        if (lsn != out->last_lsn + 1)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: LSN %" PRIu64 " where %" PRIu64 " was expected",
                        off, lsn, out->last_lsn + 1);
        if (type < SV_WAL_ADD || type > SV_WAL_INDEX)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: unknown record type %" PRIu32, off, type);
        if (visit) {
            sv_status st = visit(ctx, type, lsn, r + SV_WAL_REC_HEADER, plen, off);
            if (st != SV_OK)
                return st;
        }
        out->last_lsn = lsn;
        out->n_records++;
        off += SV_WAL_REC_HEADER + (size_t)plen;
        out->good_end = off;
    }
    return SV_OK;
}

void sv_wal_segment_name(uint64_t first_lsn, char *buf, size_t cap)
{
    snprintf(buf, cap, "wal-%020" PRIu64 ".log", first_lsn);
}

int sv_wal_segment_lsn(const char *name, uint64_t *first_lsn)
{
    return sv_parse_numbered_name(name, "wal-", ".log", first_lsn);
}

/* ---- writing -------------------------------------------------------------- */

struct sv_wal {
    char *dir;
    pthread_mutex_t lock;      /* everything below */
    pthread_cond_t synced_cv;  /* a sync finished */
    int fd;
    uint32_t seed;             /* the current segment's checksum seed */
    uint64_t size;             /* bytes in the current segment */
    uint64_t next_lsn;
    uint64_t appended_lsn;     /* last appended */
    uint64_t synced_lsn;       /* last durable */
    int syncing;               /* a leader is in fdatasync */
    int failed_errno;          /* nonzero: poisoned */
    uint64_t bytes, total_bytes, syncs;
    double sync_seconds;
    uint32_t interval_ms;
    int stop;
    pthread_t thread;
    int has_thread;
    pthread_cond_t stop_cv;
};

/* A random nonzero salt (getrandom, or the clock and address mixed when
 * the kernel has none to give). */
static uint64_t new_salt(void)
{
    uint64_t salt = 0;
    if (getrandom(&salt, sizeof salt, 0) != (ssize_t)sizeof salt) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        salt = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&salt;
    }
    return salt ? salt : 1;
}

/* Create a segment file with its header, fsync it and the directory. */
static int create_segment(const char *dir, uint64_t first_lsn, uint32_t *seed, sv_error *err)
{
    char name[40], path[4200];
    sv_wal_segment_name(first_lsn, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* A leftover empty or torn segment of this LSN (a crash right after
     * creating it) holds nothing acknowledged: replace it. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t h[SV_WAL_HEADER];
    uint64_t salt = new_salt();
    sv_file_header_encode(h, MAGIC, VERSION, first_lsn, salt);
    *seed = sv_wal_seed(salt);
    if (sv_write_all(fd, h, sizeof h) != 0 || fdatasync(fd) != 0 || sv_fsync_dir(dir) != 0) {
        sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static sv_wal_sync_hook _Atomic sync_hook;
static void *_Atomic sync_hook_ctx;

void sv_wal_set_sync_hook(sv_wal_sync_hook hook, void *ctx)
{
    atomic_store(&sync_hook_ctx, ctx);
    atomic_store(&sync_hook, hook);
}

/* Leader of one group commit; called with the lock held, returns with it. */
static int sync_now(sv_wal *w)
{
    w->syncing = 1;
    uint64_t target = w->appended_lsn;
    int fd = w->fd;
    pthread_mutex_unlock(&w->lock);
    double t0 = sv_now_seconds();
    sv_wal_sync_hook hook = atomic_load(&sync_hook);
    int rc = 0, e = 0;
    if (hook && (e = hook(atomic_load(&sync_hook_ctx))) != 0)
        rc = -1;
    else if ((rc = fdatasync(fd)) != 0)
        e = errno;
    double dt = sv_now_seconds() - t0;
    pthread_mutex_lock(&w->lock);
    w->syncing = 0;
    w->syncs++;
    w->sync_seconds += dt;
    if (rc != 0 && !w->failed_errno)
        w->failed_errno = e;
    else if (rc == 0 && target > w->synced_lsn)
        w->synced_lsn = target;
    pthread_cond_broadcast(&w->synced_cv);
    return rc;
}

static void *interval_thread(void *arg)
{
    sv_wal *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)w->interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&w->stop_cv, &w->lock, &ts);
        if (!w->syncing && !w->failed_errno && w->appended_lsn > w->synced_lsn)
            sync_now(w);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

sv_status sv_wal_start(const char *dir, uint64_t next_lsn, uint32_t sync_interval_ms,
                       sv_wal **out, sv_error *err)
{
    *out = NULL;
    if (next_lsn == 0)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "LSNs start at 1");
    sv_wal *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(dir))) {
        free(w);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory starting the log");
    }
    w->fd = create_segment(dir, next_lsn, &w->seed, err);
    if (w->fd < 0) {
        free(w->dir);
        free(w);
        return SV_ERR_IO;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->synced_cv, NULL);
    pthread_cond_init(&w->stop_cv, NULL);
    w->size = SV_WAL_HEADER;
    w->next_lsn = next_lsn;
    w->appended_lsn = w->synced_lsn = next_lsn - 1;
    w->interval_ms = sync_interval_ms;
    if (sync_interval_ms > 0) {
        if (pthread_create(&w->thread, NULL, interval_thread, w) != 0) {
            sv_wal_close(w);
            return sv_fail(err, SV_ERR_RESOURCE, "cannot start the log's sync thread");
        }
        w->has_thread = 1;
    }
    *out = w;
    return sv_ok(err);
}

void sv_wal_close(sv_wal *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->stop_cv);
    pthread_mutex_unlock(&w->lock);
    if (w->has_thread)
        pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->lock);
    while (w->syncing)
        pthread_cond_wait(&w->synced_cv, &w->lock);
    if (!w->failed_errno && w->appended_lsn > w->synced_lsn)
        sync_now(w);
    if (w->failed_errno) /* with --sync-interval-ms, acknowledged writes may be lost */
        fprintf(stderr, "slimvec: %s: the write-ahead log could not be synced: %s\n", w->dir,
                strerror(w->failed_errno));
    pthread_mutex_unlock(&w->lock);
    close(w->fd);
    pthread_cond_destroy(&w->stop_cv);
    pthread_cond_destroy(&w->synced_cv);
    pthread_mutex_destroy(&w->lock);
    free(w->dir);
    free(w);
}

static sv_status poisoned(const sv_wal *w, sv_error *err)
{
    return sv_fail(err, SV_ERR_IO,
                "the write-ahead log failed earlier (%s); restart the server to recover from it",
                strerror(w->failed_errno));
}

sv_status sv_wal_append(sv_wal *w, uint32_t type, const struct iovec *parts, int n_parts,
                        uint64_t *lsn, sv_error *err)
{
    size_t plen = 0;
    for (int i = 0; i < n_parts; i++)
        plen += parts[i].iov_len;
    if (plen > SV_WAL_MAX_PAYLOAD)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "log record of %zu bytes is over the limit", plen);
    uint8_t h[SV_WAL_REC_HEADER];
    uint32_t len32 = (uint32_t)plen;
    memcpy(h, &len32, 4);
    memcpy(h + 16, &type, 4);

    pthread_mutex_lock(&w->lock);
    if (w->failed_errno) {
        sv_status st = poisoned(w, err);
        pthread_mutex_unlock(&w->lock);
        return st;
    }
    uint64_t my_lsn = w->next_lsn;
    memcpy(h + 8, &my_lsn, 8);
    uint32_t crc = sv_crc32c(w->seed, &len32, 4);
    crc = sv_crc32c(crc, h + 8, 12);
    for (int i = 0; i < n_parts; i++)
        crc = sv_crc32c(crc, parts[i].iov_base, parts[i].iov_len);
    memcpy(h + 4, &crc, 4);

    /* pwrite at the known end; a failed or short write is cut off again so
     * the segment never holds a half record followed by good ones. */
    uint64_t at = w->size;
    int rc = 0;
    uint64_t pos = at;
    for (int i = -1; rc == 0 && i < n_parts; i++) {
        const uint8_t *p = i < 0 ? h : parts[i].iov_base;
        size_t left = i < 0 ? sizeof h : parts[i].iov_len;
        while (left > 0) {
            ssize_t n = pwrite(w->fd, p, left, (off_t)pos);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n == 0)
                    errno = ENOSPC;
                rc = -1;
                break;
            }
            p += n;
            left -= (size_t)n;
            pos += (uint64_t)n;
        }
    }
    if (rc != 0) {
        int e = errno;
        /* Out of space: cut the partial record off and go on (the caller
         * undoes the batch). Anything else, or a failed cut: the file's
         * state is unknown, stop using this log. */
        if (ftruncate(w->fd, (off_t)at) != 0)
            w->failed_errno = errno;
        else if (e != ENOSPC && e != EDQUOT && e != EFBIG)
            w->failed_errno = e;
        pthread_mutex_unlock(&w->lock);
        return sv_fail(err, SV_ERR_IO, "write-ahead log append: %s", strerror(e));
    }
    w->size = pos;
    w->next_lsn++;
    w->appended_lsn = my_lsn;
    w->bytes += sizeof h + plen;
    w->total_bytes += sizeof h + plen;
    pthread_mutex_unlock(&w->lock);
    *lsn = my_lsn;
    return sv_ok(err);
}

static sv_status sync_to(sv_wal *w, uint64_t lsn, int force, sv_error *err)
{
    pthread_mutex_lock(&w->lock);
    if (!force && w->interval_ms > 0 && !w->failed_errno) {
        pthread_mutex_unlock(&w->lock);
        return SV_OK;
    }
    while (!w->failed_errno && w->synced_lsn < lsn) {
        if (w->syncing)
            pthread_cond_wait(&w->synced_cv, &w->lock);
        else
            sync_now(w);
    }
    sv_status st = w->failed_errno ? poisoned(w, err) : SV_OK;
    pthread_mutex_unlock(&w->lock);
    return st;
}

sv_status sv_wal_sync(sv_wal *w, uint64_t lsn, sv_error *err)
{
    return sync_to(w, lsn, 0, err);
}

sv_status sv_wal_sync_force(sv_wal *w, uint64_t lsn, sv_error *err)
{
    return sync_to(w, lsn, 1, err);
}

sv_status sv_wal_rotate(sv_wal *w, uint64_t *last_lsn, sv_error *err)
{
    pthread_mutex_lock(&w->lock);
    /* Everything appended to this segment must be synced before it is
     * sealed: a sync drops the lock, and an append may land meanwhile. */
    while (!w->failed_errno && (w->syncing || w->appended_lsn > w->synced_lsn)) {
        if (w->syncing)
            pthread_cond_wait(&w->synced_cv, &w->lock);
        else
            sync_now(w);
    }
    if (w->failed_errno) {
        sv_status st = poisoned(w, err);
        pthread_mutex_unlock(&w->lock);
        return st;
    }
    uint32_t seed = 0;
    int fd = create_segment(w->dir, w->next_lsn, &seed, err);
    if (fd < 0) {
        pthread_mutex_unlock(&w->lock);
        return SV_ERR_IO;
    }
    w->seed = seed;
    close(w->fd);
    w->fd = fd;
    w->size = SV_WAL_HEADER;
    w->bytes = 0;
    *last_lsn = w->next_lsn - 1;
    pthread_mutex_unlock(&w->lock);
    return SV_OK;
}

void sv_wal_get_stats(sv_wal *w, sv_wal_stats *out)
{
    pthread_mutex_lock(&w->lock);
    out->next_lsn = w->next_lsn;
    out->bytes = w->bytes;
    out->total_bytes = w->total_bytes;
    out->syncs = w->syncs;
    out->sync_seconds = w->sync_seconds;
    pthread_mutex_unlock(&w->lock);
}
