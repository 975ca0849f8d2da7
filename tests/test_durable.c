/*
 * Durability: the write-ahead log's framing and torn tails, group commit,
 * log record payloads, the params file, snapshots and recovery (round trip,
 * replay from the log alone, snapshot plus log), damaged directories,
 * concurrent writers during snapshots, failed writes that change nothing,
 * and the in-memory mode.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "durable.h"
#include "durable_impl.h"
#include "log.h"
#include "logrec.h"
#include "slimvec.h"
#include "snapshot.h"
#include "testutil.h"
#include "wal.h"

/* An add, then the flush a server's maintenance thread would make once the
 * buffer reached the threshold (the durable layer never flushes on its own). */
static sv_status dadd(sv_durable *d, const float *v, size_t n, uint32_t dim, const char *const *ids,
                      uint64_t *assigned, sv_error *err)
{
    sv_status st = sv_durable_add(d, v, n, dim, ids, assigned, err);
    if (st == SV_OK && sv_durable_flush_due(d)) {
        sv_error ferr;
        sv_status fs = sv_durable_flush(d, &ferr);
        if (fs != SV_OK && fs != SV_ERR_IO)
            fprintf(stderr, "flush after add: %s\n", ferr.message);
    }
    return st;
}

#define PATHN 512

/* ---- files and directories ---------------------------------------------- */

/* snprintf into a PATHN buffer; the path must fit. */
static void pathf(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATHN, fmt, ap);
    va_end(ap);
    ck_assert_int_lt(n, PATHN);
}

/* Temporary directories: /tmp/sv-durable-<pid of the test program>-XXXXXX.
 * Each test removes its own at its end; should it fail half-way, the
 * fixture's teardown (CK_FORK=no) or main (CK_FORK=yes, where a failed
 * test's process ends at once) removes what is left. */
static char tmp_prefix[64] = "sv-durable-";

static void rm_rf(const char *path);

static void make_tmp(char *out)
{
    pathf(out, "/tmp/%sXXXXXX", tmp_prefix);
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* A durable collection created in a new temporary directory: base (the
 * test removes it) and dir = base/c. */
static sv_durable *tmp_durable(char *base, char *dir, const sv_params *p, const sv_durable_options *o)
{
    make_tmp(base);
    pathf(dir, "%s/c", base);
    sv_durable *d = NULL;
    sv_error err;
    ck_assert_msg(sv_durable_create(dir, p, o, &d, &err) == SV_OK, "%s", err.message);
    return d;
}

static void remove_tmp_dirs(void)
{
    DIR *d = opendir("/tmp");
    if (!d)
        return;
    struct dirent *e;
    char path[PATHN];
    size_t n = strlen(tmp_prefix);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, tmp_prefix, n) == 0 &&
            snprintf(path, sizeof path, "/tmp/%s", e->d_name) < (int)sizeof path)
            rm_rf(path);
    closedir(d);
}

/* rm -r (the test directories hold files and directories only). */
static void rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            char sub[PATHN];
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                pathf(sub, "%s/%s", path, e->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const uint8_t *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    if (len)
        ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* The newest log segment (largest first LSN) or snapshot of dir: its name. */
static int newest(const char *dir, int snapshot, char *name, uint64_t *lsn_out)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int found = 0;
    uint64_t best = 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t v;
        int is = snapshot ? sv_snapshot_name_lsn(e->d_name, &v) : sv_wal_segment_lsn(e->d_name, &v);
        if (is && (!found || v > best)) {
            best = v;
            found = 1;
            snprintf(name, 64, "%.63s", e->d_name);
        }
    }
    closedir(d);
    if (lsn_out)
        *lsn_out = best;
    return found;
}

static int count_files(const char *dir, int snapshot)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t v;
        n += snapshot ? sv_snapshot_name_lsn(e->d_name, &v) : sv_wal_segment_lsn(e->d_name, &v);
    }
    closedir(d);
    return n;
}

/* ---- log segment images --------------------------------------------------- */

typedef struct seen_rec {
    uint32_t type;
    uint64_t lsn;
    uint8_t *payload;
    size_t len, offset;
} seen_rec;

typedef struct visit_log {
    seen_rec r[1024];
    size_t n;
    size_t fail_at; /* return SV_ERR_RESOURCE on this record (0: never) */
} visit_log;

static sv_status collect(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len,
                         size_t off)
{
    visit_log *v = ctx;
    if (v->fail_at && v->n + 1 == v->fail_at)
        return SV_ERR_RESOURCE;
    if (v->n == 1024)
        return SV_ERR_INTERNAL;
    seen_rec *r = &v->r[v->n++];
    r->type = type;
    r->lsn = lsn;
    r->len = len;
    r->offset = off;
    r->payload = malloc(len ? len : 1);
    if (len)
        memcpy(r->payload, p, len);
    return SV_OK;
}

static void visit_free(visit_log *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->r[i].payload);
    v->n = 0;
}

/* Records of one segment file in order (every record must be good). */
static void parse_file(const char *path, visit_log *v, sv_wal_scan *scan)
{
    size_t len;
    uint8_t *b = read_all(path, &len);
    sv_error err;
    sv_status st = sv_wal_parse(b, len, collect, v, scan, &err);
    ck_assert_msg(st == SV_OK, "%s: %s", path, err.message);
    free(b);
}

/* A segment written through sv_wal: first LSN 7, five records. */
#define SEG_FIRST 7u
#define SEG_N 5
static const char *const seg_text[SEG_N] = {"alpha", "", "the third record, a little longer",
                                            "x", "fifth and last"};
static const uint32_t seg_type[SEG_N] = {SV_WAL_ADD, SV_WAL_DELETE, SV_WAL_TRAIN, SV_WAL_ADD,
                                         SV_WAL_DELETE};

static void write_segment(const char *dir, char *path_out)
{
    sv_wal *w = NULL;
    sv_error err;
    ck_assert_msg(sv_wal_start(dir, SEG_FIRST, 0, &w, &err) == SV_OK, "%s", err.message);
    uint64_t expect_bytes = 0;
    for (int i = 0; i < SEG_N; i++) {
        /* Split each payload into up to three parts (some empty). */
        const char *t = seg_text[i];
        size_t l = strlen(t), a = l / 3, b = l / 2;
        struct iovec parts[3] = {{(void *)t, a}, {(void *)(t + a), b - a}, {(void *)(t + b), l - b}};
        uint64_t lsn = 0;
        int n_parts = i == 1 ? 0 : 3;
        ck_assert_msg(sv_wal_append(w, seg_type[i], parts, n_parts, &lsn, &err) == SV_OK, "%s",
                      err.message);
        ck_assert_uint_eq(lsn, SEG_FIRST + (uint64_t)i);
        expect_bytes += SV_WAL_REC_HEADER + l;
    }
    ck_assert_int_eq(sv_wal_sync(w, SEG_FIRST + SEG_N - 1, &err), SV_OK);
    sv_wal_stats s;
    sv_wal_get_stats(w, &s);
    ck_assert_uint_eq(s.next_lsn, SEG_FIRST + SEG_N);
    ck_assert_uint_eq(s.bytes, expect_bytes);
    ck_assert_uint_eq(s.total_bytes, expect_bytes);
    ck_assert_uint_ge(s.syncs, 1);
    sv_wal_close(w);
    char name[64];
    sv_wal_segment_name(SEG_FIRST, name, sizeof name);
    pathf(path_out, "%s/%s", dir, name);
}

START_TEST(test_wal_framing)
{
    char dir[PATHN], path[PATHN];
    make_tmp(dir);
    write_segment(dir, path);
    ck_assert_str_eq(strrchr(path, '/') + 1, "wal-00000000000000000007.log");

    size_t len;
    uint8_t *b = read_all(path, &len);
    size_t want = SV_WAL_HEADER;
    for (int i = 0; i < SEG_N; i++)
        want += SV_WAL_REC_HEADER + strlen(seg_text[i]);
    ck_assert_uint_eq(len, want);
    ck_assert_int_eq(memcmp(b, "SVWAL\0\0\1", 8), 0);
    uint32_t ver;
    uint64_t first;
    memcpy(&ver, b + 8, 4);
    memcpy(&first, b + 16, 8);
    ck_assert_uint_eq(ver, 2);
    ck_assert_uint_eq(first, SEG_FIRST);
    uint32_t salt_lo, salt_hi;
    memcpy(&salt_lo, b + 12, 4);
    memcpy(&salt_hi, b + 24, 4);
    uint32_t seed = sv_wal_seed((uint64_t)salt_hi << 32 | salt_lo);
    ck_assert_uint_ne(seed, 0); /* a salted segment */

    visit_log *v = calloc(1, sizeof *v);
    sv_wal_scan scan;
    sv_error err;
    ck_assert_int_eq(sv_wal_parse(b, len, collect, v, &scan, &err), SV_OK);
    ck_assert_uint_eq(scan.first_lsn, SEG_FIRST);
    ck_assert_uint_eq(scan.last_lsn, SEG_FIRST + SEG_N - 1);
    ck_assert_uint_eq(scan.n_records, SEG_N);
    ck_assert_uint_eq(scan.good_end, len);
    ck_assert_int_eq(scan.torn, 0);
    ck_assert_uint_eq(v->n, SEG_N);
    size_t off = SV_WAL_HEADER;
    for (int i = 0; i < SEG_N; i++) {
        size_t l = strlen(seg_text[i]);
        ck_assert_uint_eq(v->r[i].lsn, SEG_FIRST + (uint64_t)i);
        ck_assert_uint_eq(v->r[i].type, seg_type[i]);
        ck_assert_uint_eq(v->r[i].len, l);
        ck_assert_uint_eq(v->r[i].offset, off);
        ck_assert_int_eq(memcmp(v->r[i].payload, seg_text[i], l), 0);
        /* the on-disk record header: len, crc over all but itself, lsn, type */
        uint32_t rl, rc, rt;
        uint64_t rlsn;
        memcpy(&rl, b + off, 4);
        memcpy(&rc, b + off + 4, 4);
        memcpy(&rlsn, b + off + 8, 8);
        memcpy(&rt, b + off + 16, 4);
        ck_assert_uint_eq(rl, l);
        ck_assert_uint_eq(rlsn, SEG_FIRST + (uint64_t)i);
        ck_assert_uint_eq(rt, seg_type[i]);
        ck_assert_uint_eq(rc, sv_wal_record_crc(seed, rl, b + off + 8, 12 + l));
        /* ... and not the unsalted checksum (version 1's). */
        ck_assert_uint_ne(rc, sv_wal_record_crc(0, rl, b + off + 8, 12 + l));
        off += SV_WAL_REC_HEADER + l;
    }
    visit_free(v);

    /* A visit error stops the scan and is returned. */
    v->fail_at = 3;
    ck_assert_int_eq(sv_wal_parse(b, len, collect, v, &scan, &err), SV_ERR_RESOURCE);
    ck_assert_uint_eq(v->n, 2);
    visit_free(v);
    free(v);
    free(b);

    /* A fresh segment holds only its header. */
    sv_wal *w = NULL;
    ck_assert_int_eq(sv_wal_start(dir, 0, 0, &w, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(sv_wal_start(dir, 100, 0, &w, &err), SV_OK);
    sv_wal_close(w);
    pathf(path, "%s/wal-00000000000000000100.log", dir);
    b = read_all(path, &len);
    ck_assert_uint_eq(len, SV_WAL_HEADER);
    ck_assert_int_eq(sv_wal_parse(b, len, NULL, NULL, &scan, &err), SV_OK);
    ck_assert_uint_eq(scan.first_lsn, 100);
    ck_assert_uint_eq(scan.last_lsn, 99);
    ck_assert_uint_eq(scan.n_records, 0);
    ck_assert_uint_eq(scan.good_end, SV_WAL_HEADER);
    ck_assert_int_eq(scan.torn, 0);
    free(b);

    /* Names. */
    char name[64];
    uint64_t lsn = 0;
    sv_wal_segment_name(1, name, sizeof name);
    ck_assert_str_eq(name, "wal-00000000000000000001.log");
    ck_assert_int_eq(sv_wal_segment_lsn(name, &lsn), 1);
    ck_assert_uint_eq(lsn, 1);
    sv_wal_segment_name(UINT64_MAX, name, sizeof name);
    ck_assert_str_eq(name, "wal-18446744073709551615.log");
    ck_assert_int_eq(sv_wal_segment_lsn(name, &lsn), 1);
    ck_assert_uint_eq(lsn, UINT64_MAX);
    sv_wal_segment_name(1234567890123ull, name, sizeof name);
    ck_assert_int_eq(sv_wal_segment_lsn(name, &lsn), 1);
    ck_assert_uint_eq(lsn, 1234567890123ull);
    const char *bad[] = {"",
                         "wal-1.log",
                         "wal-0000000000000000001.log",
                         "wal-000000000000000000001.log",
                         "wal-0000000000000000000a.log",
                         "wal-+0000000000000000001.log",
                         "wal- 0000000000000000001.log",
                         "wal-00000000000000000001.lo",
                         "wal-00000000000000000001.logx",
                         "wal-00000000000000000001.LOG",
                         "wax-00000000000000000001.log",
                         "snap-00000000000000000001.svs",
                         "wal-18446744073709551616.log",
                         "wal-99999999999999999999.log",
                         "wal-00000000000000000001.log.tmp"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lsn = 77;
        ck_assert_msg(sv_wal_segment_lsn(bad[i], &lsn) == 0, "accepted \"%s\"", bad[i]);
        ck_assert_uint_eq(lsn, 77);
    }
    sv_snapshot_name(42, name, sizeof name);
    ck_assert_str_eq(name, "snap-00000000000000000042.svs");
    ck_assert_int_eq(sv_snapshot_name_lsn(name, &lsn), 1);
    ck_assert_uint_eq(lsn, 42);
    ck_assert_int_eq(sv_snapshot_name_lsn("snap-0000000000000000004.svs", &lsn), 0);
    ck_assert_int_eq(sv_snapshot_name_lsn("wal-00000000000000000042.log", &lsn), 0);
    ck_assert_int_eq(sv_snapshot_name_lsn("snap-99999999999999999999.svs", &lsn), 0);
    rm_rf(dir);
}
END_TEST

/* Count the segment files in dir. */
static int count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    uint64_t v;
    while ((e = readdir(d)) != NULL)
        n += sv_wal_segment_lsn(e->d_name, &v);
    closedir(d);
    return n;
}

/* The log interface's contract (log.h) on the local backend: consecutive
 * LSNs, seal at a snapshot boundary, release drops exactly what the
 * snapshot holds, stats follow. */
START_TEST(test_log_local_contract)
{
    char dir[PATHN];
    make_tmp(dir);
    sv_error err;
    sv_log *log = NULL;
    ck_assert_int_eq(sv_log_local_start(dir, 1, 0, &log, &err), SV_OK);
    uint8_t payload[100] = {0};
    struct iovec part = {payload, sizeof payload};
    uint64_t lsn = 0;
    for (uint64_t i = 1; i <= 3; i++) {
        ck_assert_int_eq(sv_log_append(log, SV_WAL_ADD, &part, 1, &lsn, &err), SV_OK);
        ck_assert_uint_eq(lsn, i);
    }
    ck_assert_int_eq(sv_log_sync(log, lsn, &err), SV_OK);
    uint64_t sealed = 0;
    ck_assert_int_eq(sv_log_seal(log, &sealed, &err), SV_OK);
    ck_assert_uint_eq(sealed, 3);
    sv_log_stats st;
    sv_log_get_stats(log, &st);
    ck_assert_uint_eq(st.next_lsn, 4);
    ck_assert_uint_eq(st.bytes, 0); /* since the seal */
    ck_assert_uint_eq(st.total_bytes, 3 * (SV_WAL_REC_HEADER + sizeof payload));
    ck_assert_int_eq(sv_log_append(log, SV_WAL_DELETE, &part, 1, &lsn, &err), SV_OK);
    ck_assert_uint_eq(lsn, 4);
    ck_assert_int_eq(count_segments(dir), 2);
    sv_log_release(log, sealed); /* the snapshot at 3 is durable */
    ck_assert_int_eq(count_segments(dir), 1);
    sv_log_release(log, sealed); /* again: nothing more goes */
    ck_assert_int_eq(count_segments(dir), 1);
    sv_log_close(log);
    /* What is left replays from LSN 4. */
    char name[64], path[PATHN];
    sv_wal_segment_name(4, name, sizeof name);
    pathf(path, "%s/%s", dir, name);
    ck_assert_int_eq(access(path, F_OK), 0);
    rm_rf(dir);
}
END_TEST

START_TEST(test_wal_torn_tails)
{
    char dir[PATHN], path[PATHN];
    make_tmp(dir);
    write_segment(dir, path);
    size_t len;
    uint8_t *b = read_all(path, &len);
    size_t off[SEG_N + 1];
    off[0] = SV_WAL_HEADER;
    for (int i = 0; i < SEG_N; i++)
        off[i + 1] = off[i] + SV_WAL_REC_HEADER + strlen(seg_text[i]);
    ck_assert_uint_eq(off[SEG_N], len);
    sv_wal_scan scan;
    sv_error err;
    uint8_t *img = malloc(len + 64);

    /* Cut in the middle of the last record's payload, then of its header:
     * torn, the good part ends at the previous record. */
    size_t cuts[3] = {off[SEG_N - 1] + SV_WAL_REC_HEADER + 5, off[SEG_N - 1] + 7, len - 1};
    for (int c = 0; c < 3; c++) {
        uint8_t *t = malloc(cuts[c]); /* exact size: ASan sees any over-read */
        memcpy(t, b, cuts[c]);
        ck_assert_int_eq(sv_wal_parse(t, cuts[c], NULL, NULL, &scan, &err), SV_OK);
        ck_assert_int_eq(scan.torn, 1);
        ck_assert_uint_eq(scan.good_end, off[SEG_N - 1]);
        ck_assert_uint_eq(scan.n_records, SEG_N - 1);
        ck_assert_uint_eq(scan.last_lsn, SEG_FIRST + SEG_N - 2);
        free(t);
    }
    /* Cut exactly at a record boundary: not torn. */
    ck_assert_int_eq(sv_wal_parse(b, off[3], NULL, NULL, &scan, &err), SV_OK);
    ck_assert_int_eq(scan.torn, 0);
    ck_assert_uint_eq(scan.n_records, 3);
    ck_assert_uint_eq(scan.good_end, off[3]);

    /* Zero bytes after the last record (the file grew, the data did not land). */
    size_t zeros[3] = {1, 7, 64};
    for (int z = 0; z < 3; z++) {
        memcpy(img, b, len);
        memset(img + len, 0, zeros[z]);
        ck_assert_int_eq(sv_wal_parse(img, len + zeros[z], NULL, NULL, &scan, &err), SV_OK);
        ck_assert_int_eq(scan.torn, 1);
        ck_assert_uint_eq(scan.good_end, len);
        ck_assert_uint_eq(scan.n_records, SEG_N);
        ck_assert_uint_eq(scan.last_lsn, SEG_FIRST + SEG_N - 1);
    }
    /* The last record zeroed out entirely: torn at its start. */
    memcpy(img, b, len);
    memset(img + off[SEG_N - 1], 0, len - off[SEG_N - 1]);
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_OK);
    ck_assert_int_eq(scan.torn, 1);
    ck_assert_uint_eq(scan.good_end, off[SEG_N - 1]);

    /* A flipped byte inside a middle record's payload: corruption, named by offset. */
    memcpy(img, b, len);
    img[off[2] + SV_WAL_REC_HEADER + 10] ^= 0x01;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    ck_assert_int_eq(err.code, SV_ERR_CORRUPT);
    char want[64];
    snprintf(want, sizeof want, "offset %zu", off[2]);
    ck_assert_msg(strstr(err.message, want) != NULL, "message \"%s\" lacks \"%s\"", err.message, want);
    /* ... in its crc field or its type: the same. */
    memcpy(img, b, len);
    img[off[1] + 5] ^= 0x80;
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    snprintf(want, sizeof want, "offset %zu", off[1]);
    ck_assert_msg(strstr(err.message, want) != NULL, "%s", err.message);
    /* A bad last record with nothing intact after it (a power loss left
     * stale bytes in its tail): a torn tail, however non-zero. */
    memcpy(img, b, len);
    memset(img + len - 8, 0x5a, 8);
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_OK);
    ck_assert_int_eq(scan.torn, 1);
    ck_assert_uint_eq(scan.good_end, off[SEG_N - 1]);
    ck_assert_uint_eq(scan.n_records, SEG_N - 1);
    /* A flipped length bit in a middle record makes it claim to run past
     * the end of the file; the intact records after it make it damage. */
    memcpy(img, b, len);
    img[off[2] + 2] ^= 0x10;
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    snprintf(want, sizeof want, "offset %zu", off[2]);
    ck_assert_msg(strstr(err.message, want) != NULL && strstr(err.message, "intact record follows"),
                  "%s", err.message);
    /* A good checksum over a wrong LSN: corruption. */
    memcpy(img, b, len);
    uint64_t wrong = SEG_FIRST + 9;
    memcpy(img + off[3] + 8, &wrong, 8);
    uint32_t rl, salt_lo, salt_hi;
    memcpy(&rl, img + off[3], 4);
    memcpy(&salt_lo, img + 12, 4);
    memcpy(&salt_hi, img + 24, 4);
    uint32_t crc = sv_wal_record_crc(sv_wal_seed((uint64_t)salt_hi << 32 | salt_lo), rl,
                                     img + off[3] + 8, 12 + (size_t)rl);
    memcpy(img + off[3] + 4, &crc, 4);
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    snprintf(want, sizeof want, "offset %zu", off[3]);
    ck_assert_msg(strstr(err.message, want) != NULL, "%s", err.message);

    /* Bad header: magic, checksum (first LSN changed), version. */
    memcpy(img, b, len);
    img[2] = 'X';
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.message, "offset 0"));
    memcpy(img, b, len);
    img[16] ^= 0x02;
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.message, "offset 0"));
    memcpy(img, b, len);
    img[29] ^= 0x10;
    ck_assert_int_eq(sv_wal_parse(img, len, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    /* A header alone with bad magic is still corrupt, not torn. */
    ck_assert_int_eq(sv_wal_parse(img, SV_WAL_HEADER, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);

    /* Shorter than a header: a torn, empty segment. */
    for (size_t l = 1; l < SV_WAL_HEADER; l++) {
        uint8_t *t = malloc(l);
        memcpy(t, b, l);
        ck_assert_int_eq(sv_wal_parse(t, l, NULL, NULL, &scan, &err), SV_OK);
        ck_assert_int_eq(scan.torn, 1);
        ck_assert_uint_eq(scan.n_records, 0);
        free(t);
    }
    ck_assert_int_eq(sv_wal_parse(b, 0, NULL, NULL, &scan, &err), SV_OK);
    ck_assert_int_eq(scan.torn, 0);
    ck_assert_uint_eq(scan.n_records, 0);

    free(img);
    free(b);
    rm_rf(dir);
}
END_TEST

/* ---- group commit ------------------------------------------------------------ */

#define GC_THREADS 4
#define GC_PER 200

typedef struct gc_arg {
    sv_wal *w;
    uint32_t t;
    int failures;
} gc_arg;

static void *gc_worker(void *p)
{
    gc_arg *a = p;
    for (uint32_t i = 0; i < GC_PER; i++) {
        uint32_t payload[2] = {a->t, i};
        struct iovec part = {payload, sizeof payload};
        uint64_t lsn = 0;
        if (sv_wal_append(a->w, SV_WAL_ADD, &part, 1, &lsn, NULL) != SV_OK ||
            sv_wal_sync(a->w, lsn, NULL) != SV_OK)
            a->failures++;
    }
    return NULL;
}

START_TEST(test_wal_group_commit)
{
    char dir[PATHN];
    make_tmp(dir);
    sv_wal *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_wal_start(dir, 1, 0, &w, &err), SV_OK);
    pthread_t th[GC_THREADS];
    gc_arg args[GC_THREADS];
    for (uint32_t t = 0; t < GC_THREADS; t++) {
        args[t] = (gc_arg){w, t, 0};
        ck_assert_int_eq(pthread_create(&th[t], NULL, gc_worker, &args[t]), 0);
    }
    for (int t = 0; t < GC_THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(args[t].failures, 0);
    }
    sv_wal_stats s;
    sv_wal_get_stats(w, &s);
    ck_assert_uint_eq(s.next_lsn, GC_THREADS * GC_PER + 1);
    ck_assert_uint_eq(s.total_bytes, (uint64_t)GC_THREADS * GC_PER * (SV_WAL_REC_HEADER + 8));
    ck_assert_uint_ge(s.syncs, 1);
    ck_assert_uint_le(s.syncs, GC_THREADS * GC_PER);
    fprintf(stderr, "group commit: %" PRIu64 " fdatasyncs for %d synced appends\n", s.syncs,
            GC_THREADS * GC_PER);
    sv_wal_close(w);

    char path[PATHN];
    pathf(path, "%s/wal-00000000000000000001.log", dir);
    visit_log *v = calloc(1, sizeof *v);
    sv_wal_scan scan;
    parse_file(path, v, &scan);
    ck_assert_uint_eq(scan.n_records, GC_THREADS * GC_PER);
    ck_assert_uint_eq(v->n, GC_THREADS * GC_PER);
    ck_assert_int_eq(scan.torn, 0);
    ck_assert_uint_eq(scan.first_lsn, 1);
    ck_assert_uint_eq(scan.last_lsn, GC_THREADS * GC_PER);
    uint32_t next[GC_THREADS] = {0};
    for (size_t i = 0; i < v->n; i++) {
        ck_assert_uint_eq(v->r[i].lsn, i + 1);
        ck_assert_uint_eq(v->r[i].len, 8);
        uint32_t p[2];
        memcpy(p, v->r[i].payload, 8);
        ck_assert_uint_lt(p[0], GC_THREADS);
        /* each thread's records appear once each, in its order */
        ck_assert_uint_eq(p[1], next[p[0]]);
        next[p[0]]++;
    }
    for (int t = 0; t < GC_THREADS; t++)
        ck_assert_uint_eq(next[t], GC_PER);
    visit_free(v);
    free(v);
    rm_rf(dir);
}
END_TEST

/* ---- log record payloads ------------------------------------------------------ */

/* payload = the ids part + the vectors */
static uint8_t *add_payload(const char *const *ids, const uint64_t *assigned, size_t n, uint32_t dim,
                            uint64_t counter, const float *vec, size_t *len)
{
    uint8_t *head = NULL;
    size_t hl = 0;
    ck_assert_int_eq(sv_logrec_add_ids(ids, assigned, n, dim, counter, 0, &head, &hl), SV_OK);
    size_t vl = n * dim * sizeof(float);
    uint8_t *p = malloc(hl + vl);
    memcpy(p, head, hl);
    memcpy(p + hl, vec, vl);
    free(head);
    *len = hl + vl;
    return p;
}

START_TEST(test_logrec_round_trip)
{
    const uint32_t dim = 3;
    enum { N = 6 };
    const char *ids[N] = {"doc-a", NULL, "42", "", "x", NULL};
    /* as sv_collection_add returns them: numbers for assigned and numeric ids */
    const uint64_t assigned[N] = {UINT64_MAX, 7, 42, 8, UINT64_MAX, (UINT64_C(1) << 62) + 5};
    float vec[N * 3];
    for (int i = 0; i < N * 3; i++)
        vec[i] = (float)i * 0.25f - 1.0f;
    size_t len = 0;
    uint8_t *p = add_payload(ids, assigned, N, dim, 1234, vec, &len);
    /* 16 + given ids (2+5, 2+2, 2+1) + assigned (3 x 9) + vectors */
    ck_assert_uint_eq(len, 16 + 7 + 4 + 3 + 27 + N * 3 * 4);
    sv_logrec r;
    sv_error err;
    ck_assert_int_eq(sv_logrec_decode_add(p, len, &r, &err), SV_OK);
    ck_assert_uint_eq(r.n, N);
    ck_assert_uint_eq(r.dim, dim);
    ck_assert_uint_eq(r.counter, 1234);
    ck_assert_str_eq(r.ids[0], "doc-a");
    ck_assert_ptr_null(r.ids[1]);
    ck_assert_str_eq(r.ids[2], "42");
    ck_assert_ptr_null(r.ids[3]);
    ck_assert_str_eq(r.ids[4], "x");
    ck_assert_ptr_null(r.ids[5]);
    const uint64_t expect[N] = {UINT64_MAX, 7, UINT64_MAX, 8, UINT64_MAX, (UINT64_C(1) << 62) + 5};
    for (int i = 0; i < N; i++)
        ck_assert_uint_eq(r.expect[i], expect[i]);
    ck_assert_int_eq(memcmp(r.vectors, vec, sizeof vec), 0);
    sv_logrec_release(&r);
    /* The smallest vectors a record can hold: one-byte ids, dimension 1
     * (7 bytes each; an earlier bound assumed 13 and refused this). */
    {
        const char *tiny[8] = {"a", "b", "c", "d", "e", "f", "g", "h"};
        const uint64_t none[8] = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX,
                                  UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
        size_t tlen = 0;
        uint8_t *tp = add_payload(tiny, none, 8, 1, 0, vec, &tlen);
        ck_assert_uint_eq(tlen, 16 + 8 * 3 + 8 * 4);
        ck_assert_int_eq(sv_logrec_decode_add(tp, tlen, &r, &err), SV_OK);
        ck_assert_uint_eq(r.n, 8);
        ck_assert_str_eq(r.ids[7], "h");
        sv_logrec_release(&r);
        free(tp);
    }
    ck_assert_ptr_null(r.ids);

    /* Every truncation fails, in an exact-size copy (ASan catches over-reads). */
    for (size_t l = 0; l < len; l++) {
        uint8_t *t = malloc(l ? l : 1);
        memcpy(t, p, l);
        sv_status st = sv_logrec_decode_add(t, l, &r, &err);
        ck_assert_msg(st == SV_ERR_CORRUPT, "truncation to %zu bytes: %s", l, sv_status_name(st));
        ck_assert_ptr_null(r.ids);
        free(t);
    }
    /* Trailing bytes fail. */
    for (size_t extra = 1; extra <= 8; extra++) {
        uint8_t *t = calloc(1, len + extra);
        memcpy(t, p, len);
        ck_assert_int_eq(sv_logrec_decode_add(t, len + extra, &r, &err), SV_ERR_CORRUPT);
        free(t);
    }
    /* Bad contents: kind 2, zero-length id, NUL in an id, assigned >= 2^63,
     * counter >= 2^63, n = 0, dim = 0. */
    uint8_t *t = malloc(len);
    memcpy(t, p, len);
    t[16] = 2;
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    t[17] = 0;
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    t[19] = 0; /* "doc-a" -> "d\0c-a" */
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    t[16 + 7 + 8] |= 0x80; /* high byte of the first assigned number */
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    t[15] |= 0x80;
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    memset(t, 0, 4);
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    memset(t + 4, 0, 4);
    ck_assert_int_eq(sv_logrec_decode_add(t, len, &r, &err), SV_ERR_CORRUPT);
    free(t);
    free(p);

    /* All ids assigned (ids NULL). */
    uint64_t nums[2] = {0, 1};
    p = add_payload(NULL, nums, 2, dim, 0, vec, &len);
    ck_assert_uint_eq(len, 16 + 18 + 24);
    ck_assert_int_eq(sv_logrec_decode_add(p, len, &r, &err), SV_OK);
    ck_assert_ptr_null(r.ids[0]);
    ck_assert_uint_eq(r.expect[0], 0);
    ck_assert_uint_eq(r.expect[1], 1);
    sv_logrec_release(&r);
    free(p);

    /* DELETE */
    char longest[SV_ID_MAX + 1];
    memset(longest, 'z', SV_ID_MAX);
    longest[SV_ID_MAX] = '\0';
    const char *del[4] = {"doc-a", "7", longest, "q"};
    ck_assert_int_eq(sv_logrec_delete(del, 4, &p, &len), SV_OK);
    ck_assert_uint_eq(len, 4 + 6 + 2 + 1 + SV_ID_MAX + 2);
    ck_assert_int_eq(sv_logrec_decode_delete(p, len, &r, &err), SV_OK);
    ck_assert_uint_eq(r.n, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(r.ids[i], del[i]);
    sv_logrec_release(&r);
    for (size_t l = 0; l < len; l++) {
        t = malloc(l ? l : 1);
        memcpy(t, p, l);
        ck_assert_msg(sv_logrec_decode_delete(t, l, &r, &err) == SV_ERR_CORRUPT, "truncation to %zu", l);
        ck_assert_ptr_null(r.ids);
        free(t);
    }
    t = calloc(1, len + 1);
    memcpy(t, p, len);
    t[len] = 'q';
    ck_assert_int_eq(sv_logrec_decode_delete(t, len + 1, &r, &err), SV_ERR_CORRUPT);
    memcpy(t, p, len);
    t[4] = 0; /* zero-length id */
    ck_assert_int_eq(sv_logrec_decode_delete(t, len, &r, &err), SV_ERR_CORRUPT);
    memset(t, 0, 4); /* n = 0 */
    ck_assert_int_eq(sv_logrec_decode_delete(t, len, &r, &err), SV_ERR_CORRUPT);
    free(t);
    free(p);

    /* TRAIN: u32 dim + dim floats */
    uint8_t tr[4 + 3 * 4];
    uint32_t d3 = 3;
    float mean[3] = {0.5f, -2.0f, 1e-20f}, got[3] = {0};
    memcpy(tr, &d3, 4);
    memcpy(tr + 4, mean, sizeof mean);
    ck_assert_int_eq(sv_logrec_decode_train(tr, sizeof tr, 3, got, &err), SV_OK);
    ck_assert_int_eq(memcmp(got, mean, sizeof mean), 0);
    for (size_t l = 0; l < sizeof tr; l++) {
        t = malloc(l ? l : 1);
        memcpy(t, tr, l);
        ck_assert_int_eq(sv_logrec_decode_train(t, l, 3, got, &err), SV_ERR_CORRUPT);
        free(t);
    }
    ck_assert_int_eq(sv_logrec_decode_train(tr, sizeof tr, 4, got, &err), SV_ERR_CORRUPT);
    uint8_t tr2[sizeof tr + 4] = {0};
    memcpy(tr2, tr, sizeof tr);
    ck_assert_int_eq(sv_logrec_decode_train(tr2, sizeof tr2, 3, got, &err), SV_ERR_CORRUPT);
    float bad = NAN;
    memcpy(tr + 8, &bad, 4);
    ck_assert_int_eq(sv_logrec_decode_train(tr, sizeof tr, 3, got, &err), SV_ERR_CORRUPT);
    bad = -INFINITY;
    memcpy(tr + 8, &bad, 4);
    ck_assert_int_eq(sv_logrec_decode_train(tr, sizeof tr, 3, got, &err), SV_ERR_CORRUPT);
}
END_TEST

/* ---- params file ---------------------------------------------------------------- */

START_TEST(test_params_file)
{
    sv_params p, q;
    sv_params_default(&p, 37);
    p.metric = SV_METRIC_COSINE;
    p.storage = SV_STORAGE_F32;
    p.R = 24;
    p.L_build = 50;
    p.alpha = 1.25f;
    p.seed = 0x0123456789abcdefull;
    p.flush_threshold = 777;
    p.threads = 3;
    uint8_t buf[SV_PARAMS_BYTES];
    sv_params_encode(&p, buf);
    sv_error err;
    ck_assert_int_eq(sv_params_decode(buf, sizeof buf, &q, &err), SV_OK);
    ck_assert_uint_eq(q.dim, 37);
    ck_assert_int_eq(q.metric, SV_METRIC_COSINE);
    ck_assert_int_eq(q.storage, SV_STORAGE_F32);
    ck_assert_uint_eq(q.R, 24);
    ck_assert_uint_eq(q.L_build, 50);
    ck_assert(q.alpha == 1.25f);
    ck_assert_uint_eq(q.seed, 0x0123456789abcdefull);
    ck_assert_uint_eq(q.flush_threshold, 777);
    /* every byte is covered: a flip anywhere is rejected */
    for (size_t i = 0; i < SV_PARAMS_BYTES; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            uint8_t c[SV_PARAMS_BYTES];
            memcpy(c, buf, sizeof c);
            c[i] ^= (uint8_t)(1u << bit);
            ck_assert_msg(sv_params_decode(c, sizeof c, &q, &err) == SV_ERR_CORRUPT,
                          "flip of bit %d of byte %zu accepted", bit, i);
        }
    }
    ck_assert_int_eq(sv_params_decode(buf, sizeof buf - 1, &q, &err), SV_ERR_CORRUPT);
    /* a well-checksummed file with a value out of range */
    sv_params_default(&p, 8);
    p.R = 2;
    p.L_build = 1;
    sv_params_encode(&p, buf);
    ck_assert_int_eq(sv_params_decode(buf, sizeof buf, &q, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.message, "range"));
}
END_TEST

/* ---- a scripted workload over a durable collection ----------------------------- */

#define SC_DIM 16
#define SC_MAX 4000
#define SC_THRESHOLD 300
#define SC_QUERIES 50

typedef struct scen {
    uint32_t dim;
    float *data;          /* SC_MAX rows */
    char (*id)[24];       /* id of each added row */
    uint8_t *deleted;
    size_t rows;
    sv_durable *d;        /* durable, in a directory */
    sv_durable *twin;     /* in memory, the same calls (NULL: none) */
    char base[PATHN], dir[PATHN];
} scen;

static void sc_params(sv_params *p, uint32_t dim)
{
    sv_params_default(p, dim);
    p->threads = 2;
    p->flush_threshold = SC_THRESHOLD;
    p->R = 16;
    p->L_build = 32;
}

static void sc_init(scen *s, int with_twin)
{
    memset(s, 0, sizeof *s);
    s->dim = SC_DIM;
    s->data = tu_gaussian(SC_MAX, s->dim, 4242);
    s->id = calloc(SC_MAX, sizeof *s->id);
    s->deleted = calloc(SC_MAX, 1);
    make_tmp(s->base);
    pathf(s->dir, "%s/coll", s->base); /* does not exist yet */
    sv_params p;
    sc_params(&p, s->dim);
    sv_durable_options o = {0};
    sv_error err;
    ck_assert_msg(sv_durable_create(s->dir, &p, &o, &s->d, &err) == SV_OK, "%s", err.message);
    ck_assert_str_eq(sv_durable_dir(s->d), s->dir);
    ck_assert_int_eq(file_size(s->dir) >= 0, 1);
    ck_assert_int_eq(sv_durable_create(s->dir, &p, &o, &s->twin, &err), SV_ERR_ALREADY_EXISTS);
    s->twin = NULL;
    if (with_twin) {
        ck_assert_int_eq(sv_durable_create(NULL, &p, &o, &s->twin, &err), SV_OK);
        ck_assert_ptr_null(sv_durable_dir(s->twin));
    }
}

static void sc_done(scen *s)
{
    sv_durable_free(s->d);
    sv_durable_free(s->twin);
    free(s->data);
    free(s->id);
    free(s->deleted);
    rm_rf(s->base);
}

/* Add rows [rows, rows + n) in one call: row g gets the string id "s-g"
 * (g % 3 == 0), the numeric id "g" (g % 3 == 1) or an assigned one. */
static void sc_add(scen *s, size_t n)
{
    const char *ids[200];
    char given[200][24];
    uint64_t got[200], got_twin[200];
    ck_assert_uint_le(n, 200);
    ck_assert_uint_le(s->rows + n, SC_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t g = s->rows + i;
        if (g % 3 == 0)
            snprintf(given[i], sizeof given[i], "s-%zu", g);
        else if (g % 3 == 1)
            snprintf(given[i], sizeof given[i], "%zu", g);
        ids[i] = g % 3 == 2 ? NULL : given[i];
    }
    const float *v = s->data + s->rows * s->dim;
    sv_error err;
    ck_assert_msg(dadd(s->d, v, n, s->dim, ids, got, &err) == SV_OK, "%s", err.message);
    if (s->twin)
        ck_assert_int_eq(dadd(s->twin, v, n, s->dim, ids, got_twin, &err), SV_OK);
    for (size_t i = 0; i < n; i++) {
        size_t g = s->rows + i;
        if (g % 3 == 0) {
            ck_assert_uint_eq(got[i], UINT64_MAX);
            snprintf(s->id[g], sizeof s->id[g], "%.23s", given[i]);
        } else if (g % 3 == 1) {
            ck_assert_uint_eq(got[i], g);
            snprintf(s->id[g], sizeof s->id[g], "%.23s", given[i]);
        } else {
            snprintf(s->id[g], sizeof s->id[g], "%" PRIu64, got[i]);
        }
        if (s->twin)
            ck_assert_uint_eq(got_twin[i], got[i]);
    }
    s->rows += n;
}

static void sc_delete(scen *s, const size_t *rows, size_t n)
{
    const char *ids[64];
    ck_assert_uint_le(n, 64);
    for (size_t i = 0; i < n; i++) {
        ck_assert(!s->deleted[rows[i]]);
        ids[i] = s->id[rows[i]];
        s->deleted[rows[i]] = 1;
    }
    sv_error err;
    ck_assert_msg(sv_durable_delete(s->d, ids, n, NULL, &err) == SV_OK, "%s", err.message);
    if (s->twin)
        ck_assert_int_eq(sv_durable_delete(s->twin, ids, n, NULL, &err), SV_OK);
}

static void sc_flush(scen *s)
{
    sv_error err;
    ck_assert_msg(sv_durable_flush(s->d, &err) == SV_OK, "%s", err.message);
    if (s->twin)
        ck_assert_int_eq(sv_durable_flush(s->twin, &err), SV_OK);
}

static size_t sc_live(const scen *s)
{
    size_t n = 0;
    for (size_t g = 0; g < s->rows; g++)
        n += !s->deleted[g];
    return n;
}

/*
 * The workload of the recovery tests (log records: 33 ADDs, 4 DELETEs and
 * one TRAIN: LSNs 1..38): 3050 rows (auto flushes at every 300 buffered; 50 stay
 * buffered), deletes of indexed and buffered rows, an explicit flush when
 * `explicit_flush`, 150 more rows that stay buffered, a few more deletes.
 */
static void sc_workload(scen *s, int explicit_flush)
{
    for (int b = 0; b < 30; b++)
        sc_add(s, 100);
    sv_stats st;
    sv_collection_stats(sv_durable_collection(s->d), &st);
    ck_assert_uint_eq(st.buffered, 0);
    ck_assert_uint_eq(st.indexed, 3000);
    sc_add(s, 50);
    size_t del1[25], del2[25];
    for (int i = 0; i < 20; i++)
        del1[i] = 10 + 75 * (size_t)i; /* indexed */
    for (int i = 0; i < 5; i++)
        del1[20 + i] = 3001 + 2 * (size_t)i; /* buffered */
    for (int i = 0; i < 20; i++)
        del2[i] = 47 + 73 * (size_t)i;
    for (int i = 0; i < 5; i++)
        del2[20 + i] = 3020 + 3 * (size_t)i;
    sc_delete(s, del1, 25);
    sc_delete(s, del2, 25);
    sv_collection_stats(sv_durable_collection(s->d), &st);
    ck_assert_uint_eq(st.tombstones, 40);
    ck_assert_uint_eq(st.buffered, 40);
    if (explicit_flush)
        sc_flush(s);
    sc_add(s, 100);
    sc_add(s, 50);
    size_t del3[10] = {3050, 3077, 3101, 3150, 3199, 5, 500, 1000, 1501, 2999};
    sc_delete(s, del3, 5);
    sc_delete(s, del3 + 5, 5);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(s->d)), 3200 - 60);
    ck_assert_uint_eq(sc_live(s), 3200 - 60);
}

typedef struct capture {
    uint64_t count;
    sv_stats stats;
    size_t nq;
    uint32_t k;
    sv_hit *hits;    /* nq * k */
    size_t *n_hits;  /* nq */
} capture;

static void capture_take(sv_collection *c, const scen *s, uint32_t k, uint32_t L, size_t nq, capture *out)
{
    out->count = sv_collection_count(c);
    sv_collection_stats(c, &out->stats);
    out->nq = nq;
    out->k = k;
    out->hits = calloc(nq * k, sizeof *out->hits);
    out->n_hits = calloc(nq, sizeof *out->n_hits);
    float *q = tu_gaussian(nq, s->dim, 777);
    for (size_t i = 0; i < nq; i++) {
        sv_error err;
        sv_status st = sv_collection_search(c, q + i * s->dim, s->dim, k, L, out->hits + i * k,
                                            &out->n_hits[i], &err);
        ck_assert_msg(st == SV_OK, "%s", err.message);
    }
    free(q);
}

static void capture_free(capture *c)
{
    free(c->hits);
    free(c->n_hits);
}

static void assert_same_hits(const capture *a, const capture *b, const char *what)
{
    ck_assert_uint_eq(a->nq, b->nq);
    for (size_t q = 0; q < a->nq; q++) {
        ck_assert_msg(a->n_hits[q] == b->n_hits[q], "%s: query %zu: %zu vs %zu hits", what, q,
                      a->n_hits[q], b->n_hits[q]);
        for (size_t i = 0; i < a->n_hits[q]; i++) {
            const sv_hit *x = &a->hits[q * a->k + i], *y = &b->hits[q * b->k + i];
            ck_assert_msg(strcmp(x->id, y->id) == 0 && x->distance == y->distance,
                          "%s: query %zu hit %zu: %s %.9g vs %s %.9g", what, q, i, x->id,
                          (double)x->distance, y->id, (double)y->distance);
        }
    }
}

static void assert_same_stats(const sv_stats *a, const sv_stats *b, const char *what)
{
    ck_assert_msg(a->live == b->live && a->indexed == b->indexed && a->buffered == b->buffered &&
                      a->tombstones == b->tombstones,
                  "%s: live/indexed/buffered/tombstones %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
                  " vs %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64,
                  what, a->live, a->indexed, a->buffered, a->tombstones, b->live, b->indexed,
                  b->buffered, b->tombstones);
}

static void assert_valid(sv_collection *c)
{
    sv_error err;
    sv_status st = sv_collection_validate(c, &err);
    ck_assert_msg(st == SV_OK, "validate: %s", err.message);
}

/* Every live row is found and every deleted one is not. With `want` (may
 * be NULL) the vectors must equal those of want's collection exactly. */
static void assert_ids(sv_collection *c, const scen *s, sv_collection *want)
{
    float *a = malloc(s->dim * sizeof *a), *b = malloc(s->dim * sizeof *b);
    for (size_t g = 0; g < s->rows; g++) {
        sv_error err;
        sv_status st = sv_collection_get(c, s->id[g], a, s->dim, &err);
        if (s->deleted[g]) {
            ck_assert_msg(st == SV_ERR_NOT_FOUND, "deleted id %s came back (%s)", s->id[g],
                          sv_status_name(st));
            continue;
        }
        ck_assert_msg(st == SV_OK, "id %s: %s", s->id[g], err.message);
        if (want) {
            ck_assert_int_eq(sv_collection_get(want, s->id[g], b, s->dim, NULL), SV_OK);
            ck_assert_msg(memcmp(a, b, s->dim * sizeof *a) == 0, "id %s: vector differs", s->id[g]);
        }
    }
    free(a);
    free(b);
}

static sv_durable *sc_reopen(const char *dir, sv_recovery *rec)
{
    sv_durable *d = NULL;
    sv_durable_options o = {0};
    sv_error err;
    sv_status st = sv_durable_open(dir, NULL, 2, &o, &d, rec, &err);
    ck_assert_msg(st == SV_OK, "open %s: %s", dir, err.message);
    ck_assert_ptr_nonnull(d);
    return d;
}

/* The next assigned id of a collection (adds one vector). */
static uint64_t next_assigned(sv_durable *d, const float *v, uint32_t dim)
{
    uint64_t got = 0;
    sv_error err;
    ck_assert_msg(dadd(d, v, 1, dim, NULL, &got, &err) == SV_OK, "%s", err.message);
    return got;
}

START_TEST(test_snapshot_round_trip)
{
    scen s;
    sc_init(&s, 1);
    sc_workload(&s, 1);
    sv_collection *c = sv_durable_collection(s.d);
    sv_snapshot_info info;
    sv_error err;
    ck_assert_msg(sv_durable_snapshot(s.d, &info, &err) == SV_OK, "%s", err.message);
    /* 33 ADDs + 4 DELETEs + 1 TRAIN + 11 FLUSH markers */
    ck_assert_uint_eq(info.lsn, 49);
    char name[64];
    uint64_t lsn;
    ck_assert(newest(s.dir, 1, name, &lsn));
    ck_assert_uint_eq(lsn, 49);
    ck_assert_int_eq(count_files(s.dir, 1), 1);
    ck_assert_int_eq(count_files(s.dir, 0), 1); /* the log before it is gone */
    ck_assert_int_eq(file_size(s.dir) >= 0, 1);
    char path[PATHN];
    pathf(path, "%s/%s", s.dir, name);
    ck_assert_int_eq(file_size(path), (long)info.bytes);
    sv_durable_stats ds;
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.snapshots, 1);
    ck_assert_uint_eq(ds.log_bytes, 0);
    ck_assert_uint_eq(ds.last_lsn, 49);

    capture before, after, twin;
    capture_take(c, &s, 10, 100, SC_QUERIES, &before);
    capture_take(sv_durable_collection(s.twin), &s, 10, 100, 1, &twin);
    assert_same_stats(&before.stats, &twin.stats, "durable vs in-memory twin");
    ck_assert_uint_eq(before.count, 3140);
    ck_assert_uint_eq(before.stats.live, 3140);
    ck_assert_uint_eq(before.stats.buffered, 145);
    ck_assert_uint_eq(before.stats.tombstones, 45);
    ck_assert_uint_eq(before.stats.indexed, 2995);
    /* keep the pre-restart vectors of every id in a frozen copy: the twin */
    sv_durable_free(s.d);
    s.d = NULL;

    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.snapshot_lsn, 49);
    ck_assert_uint_eq(rec.replayed, 0);
    ck_assert_uint_eq(rec.last_lsn, 49);
    ck_assert_uint_eq(rec.torn_bytes, 0);
    capture_take(c, &s, 10, 100, SC_QUERIES, &after);
    ck_assert_uint_eq(after.count, before.count);
    assert_same_stats(&before.stats, &after.stats, "after reopen");
    ck_assert_uint_eq(after.stats.slots, before.stats.slots);
    ck_assert_uint_eq(after.stats.free_slots, before.stats.free_slots);
    ck_assert_uint_eq(after.stats.max_degree, before.stats.max_degree);
    ck_assert(after.stats.avg_degree == before.stats.avg_degree);
    assert_same_hits(&before, &after, "snapshot round trip");
    /* buffered rows: raw floats equal to the input; all rows equal to the twin's
     * (the twin made the same flushes, so it encoded the same codes) */
    assert_ids(c, &s, sv_durable_collection(s.twin));
    float got[SC_DIM];
    ck_assert_int_eq(sv_collection_get(c, s.id[3198], got, SC_DIM, NULL), SV_OK);
    ck_assert_int_eq(memcmp(got, s.data + 3198 * SC_DIM, sizeof got), 0);
    assert_valid(c);
    /* the id counter: the next assigned id is the one the twin hands out */
    uint64_t a = next_assigned(s.d, s.data + 3500 * SC_DIM, SC_DIM);
    uint64_t b = next_assigned(s.twin, s.data + 3500 * SC_DIM, SC_DIM);
    ck_assert_uint_eq(a, b);
    capture_free(&before);
    capture_free(&after);
    capture_free(&twin);
    sc_done(&s);
}
END_TEST

/* Replay from the log alone must rebuild the state the calls made. */
static void replay_case(int explicit_flush)
{
    scen s;
    sc_init(&s, 1);
    sc_workload(&s, explicit_flush);
    sv_collection *c = sv_durable_collection(s.d);
    const uint32_t every = 4000; /* search list over every vector: exhaustive */
    capture before, after;
    capture_take(c, &s, 10, every, 20, &before);
    sv_durable_stats ds;
    sv_durable_get_stats(s.d, &ds);
    /* 33 ADDs + 4 DELETEs + 1 TRAIN + a FLUSH marker per flush: 10 at the
     * threshold, and the explicit one */
    ck_assert_uint_eq(ds.last_lsn, explicit_flush ? 49 : 48);
    ck_assert_uint_eq(ds.snapshots, 0);
    sv_durable_free(s.d);
    s.d = NULL;

    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.snapshot_lsn, 0);
    ck_assert_uint_eq(rec.replayed, explicit_flush ? 48 : 47); /* the TRAIN record is not counted */
    ck_assert_uint_eq(rec.last_lsn, explicit_flush ? 49 : 48);
    ck_assert_uint_eq(rec.torn_bytes, 0);
    ck_assert_uint_eq(sv_collection_count(c), 3140);
    assert_valid(c);
    /* the same live ids; rows buffered before the restart give back exactly their input */
    assert_ids(c, &s, NULL);
    float got[SC_DIM], want[SC_DIM];
    for (size_t g = 3050; g < 3200; g++) {
        if (s.deleted[g])
            continue;
        ck_assert_int_eq(sv_collection_get(c, s.id[g], got, SC_DIM, NULL), SV_OK);
        ck_assert_msg(memcmp(got, s.data + g * SC_DIM, sizeof got) == 0, "row %zu", g);
    }
    capture_take(c, &s, 10, every, 20, &after);

    /* Collect every difference before failing, for a full diagnosis. */
    char why[1024] = "";
    size_t used = 0;
    if (before.stats.live != after.stats.live || before.stats.indexed != after.stats.indexed ||
        before.stats.buffered != after.stats.buffered || before.stats.tombstones != after.stats.tombstones)
        used += (size_t)snprintf(why + used, sizeof why - used,
                                 "stats live/indexed/buffered/tombstones %" PRIu64 "/%" PRIu64 "/%" PRIu64
                                 "/%" PRIu64 " before, %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
                                 " after; ",
                                 before.stats.live, before.stats.indexed, before.stats.buffered,
                                 before.stats.tombstones, after.stats.live, after.stats.indexed,
                                 after.stats.buffered, after.stats.tombstones);
    /* every vector equal to the (never restarted) twin's: same quantizer
     * mean thanks to the TRAIN record, same codes */
    size_t vec_diff = 0, first_diff = SIZE_MAX;
    for (size_t g = 0; g < s.rows; g++) {
        if (s.deleted[g])
            continue;
        ck_assert_int_eq(sv_collection_get(c, s.id[g], got, SC_DIM, NULL), SV_OK);
        ck_assert_int_eq(sv_collection_get(sv_durable_collection(s.twin), s.id[g], want, SC_DIM, NULL), SV_OK);
        if (memcmp(got, want, sizeof got) != 0) {
            vec_diff++;
            if (first_diff == SIZE_MAX)
                first_diff = g;
        }
    }
    if (vec_diff)
        used += (size_t)snprintf(why + used, sizeof why - used,
                                 "%zu vectors differ from the twin's (first: row %zu); ", vec_diff, first_diff);
    size_t q_diff = 0, first_q = SIZE_MAX;
    for (size_t q = 0; q < before.nq; q++) {
        int same = before.n_hits[q] == after.n_hits[q];
        for (size_t i = 0; same && i < before.n_hits[q]; i++)
            same = strcmp(before.hits[q * 10 + i].id, after.hits[q * 10 + i].id) == 0 &&
                   before.hits[q * 10 + i].distance == after.hits[q * 10 + i].distance;
        if (!same) {
            q_diff++;
            if (first_q == SIZE_MAX)
                first_q = q;
        }
    }
    if (q_diff)
        used += (size_t)snprintf(why + used, sizeof why - used,
                                 "%zu of %zu exhaustive searches differ (first: query %zu); ", q_diff,
                                 before.nq, first_q);
    /* the next assigned id is the one a run without the restart gives */
    uint64_t a = next_assigned(s.d, s.data + 3500 * SC_DIM, SC_DIM);
    uint64_t b = next_assigned(s.twin, s.data + 3500 * SC_DIM, SC_DIM);
    if (a != b)
        used += (size_t)snprintf(why + used, sizeof why - used, "next assigned id %" PRIu64 " vs %" PRIu64, a, b);
    ck_assert_msg(used == 0, "replay differs from the state before the restart: %s", why);
    assert_same_hits(&before, &after, "exhaustive search after replay");
    capture_free(&before);
    capture_free(&after);
    sc_done(&s);
}

/* The workload of test_snapshot_round_trip (explicit flush included). */
START_TEST(test_replay_without_snapshot)
{
    replay_case(1);
}
END_TEST

/* The same without the explicit flush (flushes only at the threshold). */
START_TEST(test_replay_threshold_flushes_only)
{
    replay_case(0);
}
END_TEST

/* The first flush trains the quantizer on 100 rows, where a replay would
 * train on the 300 of its first threshold flush: the log's TRAIN record
 * must give the replay the mean the calls used. Once everything is flushed
 * on both sides, every code, hence every vector and every exhaustive
 * search, is the same as the never restarted twin's. */
START_TEST(test_replay_uses_logged_mean)
{
    scen s;
    sc_init(&s, 1);
    sc_add(&s, 100);
    sc_flush(&s); /* trains on these 100 (LSN 2: TRAIN) */
    for (int b = 0; b < 4; b++)
        sc_add(&s, 100);
    size_t del[4] = {1, 150, 420, 499};
    sc_delete(&s, del, 4);
    sv_durable_free(s.d);
    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    ck_assert_uint_eq(rec.last_lsn, 9);
    ck_assert_uint_eq(rec.replayed, 8);
    sc_flush(&s); /* the reopened one and the twin */
    sv_collection *c = sv_durable_collection(s.d), *t = sv_durable_collection(s.twin);
    sv_stats a, b;
    sv_collection_stats(c, &a);
    sv_collection_stats(t, &b);
    ck_assert_uint_eq(a.buffered, 0);
    ck_assert_uint_eq(b.buffered, 0);
    ck_assert_uint_eq(a.live, 496);
    assert_ids(c, &s, t);
    capture x, y;
    capture_take(c, &s, 10, 4000, 20, &x);
    capture_take(t, &s, 10, 4000, 20, &y);
    assert_same_hits(&x, &y, "exhaustive search, replayed vs twin");
    assert_valid(c);
    capture_free(&x);
    capture_free(&y);
    sc_done(&s);
}
END_TEST

START_TEST(test_snapshot_then_log)
{
    scen s;
    sc_init(&s, 1);
    sc_workload(&s, 1);
    sv_snapshot_info info;
    sv_error err;
    ck_assert_msg(sv_durable_snapshot(s.d, &info, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(info.lsn, 49);
    /* after it: 3 ADDs (the third crosses the threshold: a flush), 3 DELETEs */
    sc_add(&s, 100);                      /* 145 + 100 = 245 buffered */
    size_t d1[4] = {3, 3100, 3210, 12};   /* indexed, buffered, new, indexed: 243 */
    sc_delete(&s, d1, 4);
    sc_add(&s, 50);                       /* 293 */
    sc_add(&s, 40);                       /* 333 >= 300: flush */
    sv_stats st;
    sv_collection_stats(sv_durable_collection(s.d), &st);
    ck_assert_uint_eq(st.buffered, 0);
    ck_assert_uint_eq(s.rows, 3390);
    size_t d2[3] = {3290, 3301, 3389};
    sc_delete(&s, d2, 3);
    size_t d3[1] = {2222};
    sc_delete(&s, d3, 1);
    sv_durable_stats ds;
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, 56);
    ck_assert_uint_gt(ds.log_bytes, 0);
    sv_collection *c = sv_durable_collection(s.d);
    capture before, after;
    capture_take(c, &s, 10, 4000, 20, &before);
    sv_durable_free(s.d);
    s.d = NULL;

    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.snapshot_lsn, 49);
    ck_assert_uint_eq(rec.replayed, 7);
    ck_assert_uint_eq(rec.last_lsn, 56);
    ck_assert_uint_eq(sv_collection_count(c), sc_live(&s));
    ck_assert_uint_eq(sv_collection_count(c), 3390 - 68);
    assert_ids(c, &s, sv_durable_collection(s.twin));
    assert_valid(c);
    capture_take(c, &s, 10, 4000, 20, &after);
    assert_same_stats(&before.stats, &after.stats, "snapshot + log");
    assert_same_hits(&before, &after, "exhaustive search after snapshot + log");
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, 56);
    ck_assert_uint_gt(ds.log_bytes, 0); /* the replayed log is not in a snapshot yet */
    capture_free(&after);

    /* once more: the second open replays the same records again */
    sv_durable_free(s.d);
    s.d = sc_reopen(s.dir, &rec);
    c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.snapshot_lsn, 49);
    ck_assert_uint_eq(rec.replayed, 7);
    ck_assert_uint_eq(sv_collection_count(c), 3390 - 68);
    assert_ids(c, &s, NULL);
    capture_free(&before);
    sc_done(&s);
}
END_TEST

/* ---- damaged directories ----------------------------------------------------- */

#define SM_DIM 8

/* A small durable collection: `batches` x 40 vectors, ids "b<batch>-<i>";
 * flush threshold 300 (a flush after batch 8). */
static void small_build(const char *dir, int batches, float **data_out)
{
    sv_params p;
    sv_params_default(&p, SM_DIM);
    p.threads = 2;
    p.flush_threshold = 300;
    p.R = 12;
    p.L_build = 24;
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    sv_error err;
    ck_assert_msg(sv_durable_create(dir, &p, &o, &d, &err) == SV_OK, "%s", err.message);
    float *v = tu_gaussian((size_t)batches * 40, SM_DIM, 99);
    for (int b = 0; b < batches; b++) {
        char names[40][16];
        const char *ids[40];
        for (int i = 0; i < 40; i++) {
            snprintf(names[i], sizeof names[i], "b%d-%d", b, i);
            ids[i] = names[i];
        }
        ck_assert_msg(dadd(d, v + (size_t)b * 40 * SM_DIM, 40, SM_DIM, ids, NULL, &err) == SV_OK,
                      "%s", err.message);
    }
    sv_durable_free(d);
    if (data_out)
        *data_out = v;
    else
        free(v);
}

static void small_has_batches(sv_durable *d, int from, int to, sv_status want)
{
    float got[SM_DIM];
    char id[16];
    for (int b = from; b < to; b++)
        for (int i = 0; i < 40; i++) {
            snprintf(id, sizeof id, "b%d-%d", b, i);
            sv_status st = sv_collection_get(sv_durable_collection(d), id, got, SM_DIM, NULL);
            ck_assert_msg(st == want, "%s: %s", id, sv_status_name(st));
        }
}

static sv_status try_open(const char *dir, sv_durable **d, sv_recovery *rec, sv_error *err)
{
    sv_durable_options o = {0};
    memset(err, 0, sizeof *err);
    return sv_durable_open(dir, NULL, 2, &o, d, rec, err);
}

START_TEST(test_open_torn_tail)
{
    char base[PATHN], dir[PATHN], path[PATHN], name[64];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    small_build(dir, 5, NULL);
    ck_assert(newest(dir, 0, name, NULL));
    ck_assert_str_eq(name, "wal-00000000000000000001.log");
    pathf(path, "%s/%s", dir, name);
    visit_log *v = calloc(1, sizeof *v);
    sv_wal_scan scan;
    parse_file(path, v, &scan);
    ck_assert_uint_eq(v->n, 5);
    size_t last_off = v->r[4].offset, last_size = SV_WAL_REC_HEADER + v->r[4].len;
    visit_free(v);
    free(v);
    long size = file_size(path);
    ck_assert_int_eq(size, (long)(last_off + last_size));
    ck_assert_int_eq(truncate(path, size - 5), 0);

    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(rec.torn_bytes, last_size - 5);
    ck_assert_uint_eq(rec.replayed, 4);
    ck_assert_uint_eq(rec.last_lsn, 4);
    ck_assert_ptr_nonnull(strstr(rec.note, "torn"));
    ck_assert_int_eq(file_size(path), (long)last_off); /* cut at the good end */
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 160);
    small_has_batches(d, 0, 4, SV_OK);
    small_has_batches(d, 4, 5, SV_ERR_NOT_FOUND);
    /* the log goes on at LSN 5 and a new batch survives another restart */
    float vec[40 * SM_DIM];
    for (int i = 0; i < 40 * SM_DIM; i++)
        vec[i] = (float)(i % 17) - 8.0f;
    char names[40][16];
    const char *ids[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "b4-%d", i);
        ids[i] = names[i];
    }
    ck_assert_int_eq(dadd(d, vec, 40, SM_DIM, ids, NULL, &err), SV_OK);
    sv_durable_free(d);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(rec.torn_bytes, 0);
    ck_assert_uint_eq(rec.last_lsn, 5);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 200);
    small_has_batches(d, 0, 5, SV_OK);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

/*
 * Vectors are a client's bytes. One that spells out a record with the next
 * LSN (and the checksum an unsalted log would give it), written in a batch
 * whose record a crash then tears: an unsalted log would find an "intact
 * record" after the torn one and refuse to start. The salted log cuts the
 * torn record, as it must. The same forgery made with the segment's real
 * seed (which never leaves the disk) is what damage looks like.
 */
START_TEST(test_open_forged_record_in_vectors)
{
    char base[PATHN], dir[PATHN], path[PATHN], name[64];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    small_build(dir, 3, NULL);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    uint64_t lsn = rec.last_lsn + 1; /* the batch's own record */
    /* The fake: len 0, crc, lsn, type; 20 bytes = 5 floats, all finite. */
    float vec[40 * SM_DIM];
    for (int i = 0; i < 40 * SM_DIM; i++)
        vec[i] = (float)(i % 13) * 0.25f;
    const int at = 16 * SM_DIM; /* float index of the fake inside the batch */
    int forged = 0;
    for (uint32_t type = SV_WAL_ADD; type <= SV_WAL_CONSOLIDATE && !forged; type++) {
        uint8_t rec_bytes[20] = {0};
        memcpy(rec_bytes + 8, &lsn, 8);
        memcpy(rec_bytes + 16, &type, 4);
        uint32_t crc = sv_wal_record_crc(0, 0, rec_bytes + 8, 12);
        memcpy(rec_bytes + 4, &crc, 4);
        float f[5];
        memcpy(f, rec_bytes, 20);
        int finite = 1;
        for (int k = 0; k < 5; k++)
            finite &= isfinite(f[k]);
        if (finite) {
            memcpy(vec + at, f, 20);
            forged = 1;
        }
    }
    ck_assert(forged);
    ck_assert_msg(sv_durable_add(d, vec, 40, SM_DIM, NULL, NULL, &err) == SV_OK, "%s", err.message);
    sv_durable_free(d);
    ck_assert(newest(dir, 0, name, NULL));
    pathf(path, "%s/%s", dir, name);
    size_t len;
    uint8_t *img = read_all(path, &len);
    /* Find the fake's bytes and tear the file a little after them. */
    uint8_t needle[20];
    memcpy(needle, vec + at, 20);
    uint8_t *hit = memmem(img, len, needle, 20);
    ck_assert_ptr_nonnull(hit);
    size_t cut = (size_t)(hit - img) + 20 + 40;
    ck_assert_uint_lt(cut, len);
    write_all(path, img, cut);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "a forged record steered recovery: %s",
                  err.message);
    ck_assert_uint_gt(rec.torn_bytes, 0);
    ck_assert_ptr_nonnull(strstr(rec.note, "torn"));
    ck_assert_uint_eq(rec.last_lsn, lsn - 1);
    sv_durable_free(d);

    /* With the real seed the same forgery is indistinguishable from an
     * intact record after damage: the secret is what protects. */
    uint32_t salt_lo, salt_hi;
    memcpy(&salt_lo, img + 12, 4);
    memcpy(&salt_hi, img + 24, 4);
    uint32_t crc = sv_wal_record_crc(sv_wal_seed((uint64_t)salt_hi << 32 | salt_lo), 0, hit + 8, 12);
    memcpy(hit + 4, &crc, 4);
    sv_wal_scan scan;
    ck_assert_int_eq(sv_wal_parse(img, cut, NULL, NULL, &scan, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.message, "intact record follows"));
    free(img);
    rm_rf(base);
}
END_TEST

/* ---- durable before visible ---------------------------------------------- */

/* A sync hook that holds every fsync until released, or fails it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open, fail_errno;
} gate;

static int gate_hook(void *ctx)
{
    gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open && !g->fail_errno)
        pthread_cond_wait(&g->cv, &g->mu);
    int e = g->fail_errno;
    pthread_mutex_unlock(&g->mu);
    return e;
}

static void gate_wait_entered(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    while (g->entered < n)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_set(gate *g, int open, int fail_errno)
{
    pthread_mutex_lock(&g->mu);
    g->open = open;
    g->fail_errno = fail_errno;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct write_job {
    sv_durable *d;
    const float *v;
    size_t n;
    const char *const *ids;
    int is_delete;
    uint64_t *assigned; /* an add's ids (n of them), or NULL */
    sv_status st;
    size_t deleted;
    sv_error err;
    atomic_int done;
} write_job;

static void *write_thread(void *arg)
{
    write_job *j = arg;
    if (j->is_delete)
        j->st = sv_durable_delete(j->d, j->ids, j->n, &j->deleted, &j->err);
    else
        j->st = sv_durable_add(j->d, j->v, j->n, SM_DIM, j->ids, j->assigned, &j->err);
    atomic_store(&j->done, 1);
    return NULL;
}

/*
 * An add with an assigned id beside a delete in flight of the number it
 * would get: the log holds the delete first, so a replay frees the number
 * before it assigns; the add waits for the delete (it does not skip the
 * number), and the collection opens again with the same ids.
 */
START_TEST(test_assigned_beside_delete_in_flight)
{
    char base[PATHN], dir[PATHN];
    sv_params p;
    sv_params_default(&p, SM_DIM);
    p.threads = 1;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    float v[SM_DIM];
    for (int i = 0; i < SM_DIM; i++)
        v[i] = (float)i + 0.5f;
    const char *zero[1] = {"0"};
    sv_error err;
    ck_assert_int_eq(sv_durable_add(d, v, 1, SM_DIM, zero, NULL, &err), SV_OK);
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    sv_wal_set_sync_hook(gate_hook, &g);
    write_job del = {.d = d, .n = 1, .ids = zero, .is_delete = 1};
    pthread_t td, ta;
    pthread_create(&td, NULL, write_thread, &del);
    gate_wait_entered(&g, 1); /* the delete is logged, its fsync held */
    uint64_t id = UINT64_MAX;
    write_job add = {.d = d, .v = v, .n = 1, .assigned = &id};
    pthread_create(&ta, NULL, write_thread, &add);
    usleep(100 * 1000);
    ck_assert_int_eq(atomic_load(&add.done), 0); /* waiting for the delete */
    gate_set(&g, 1, 0);
    pthread_join(td, NULL);
    pthread_join(ta, NULL);
    sv_wal_set_sync_hook(NULL, NULL);
    ck_assert_int_eq(del.st, SV_OK);
    ck_assert_int_eq(add.st, SV_OK);
    ck_assert_uint_eq(id, 0); /* the number the delete freed */
    sv_durable_free(d);
    sv_recovery rec;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    float out[SM_DIM];
    ck_assert_int_eq(sv_durable_get(d, "0", out, SM_DIM, NULL), SV_OK);
    ck_assert_uint_eq(sv_durable_count(d), 1);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

/*
 * An add is invisible until its fsync returns: no search, get or delete
 * sees it meanwhile (a crash then would take back what a reader saw), and
 * a failed fsync leaves nothing visible and nothing acknowledged. A delete
 * likewise: the vector stays until the delete is durable, and a second
 * delete of it fails meanwhile (its replay would).
 */
START_TEST(test_visible_only_when_durable)
{
    char base[PATHN], dir[PATHN];
    sv_params p;
    sv_params_default(&p, SM_DIM);
    p.threads = 1;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    sv_error err;
    float v[4 * SM_DIM];
    for (int i = 0; i < 4 * SM_DIM; i++)
        v[i] = (float)(i % 7) + 0.5f;
    const char *ids[4] = {"v0", "v1", "v2", "v3"};
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    sv_wal_set_sync_hook(gate_hook, &g);

    write_job add = {.d = d, .v = v, .n = 4, .ids = ids};
    pthread_t t;
    pthread_create(&t, NULL, write_thread, &add);
    gate_wait_entered(&g, 1); /* logged, its fsync held */
    float out[SM_DIM];
    sv_hit hits[4];
    size_t nh = 0;
    ck_assert_int_eq(sv_durable_get(d, "v0", out, SM_DIM, NULL), SV_ERR_NOT_FOUND);
    ck_assert_int_eq(sv_durable_search(d, v, SM_DIM, &(sv_search_opts){.k = 4, .search_list = 16}, hits, &nh, NULL), SV_OK);
    ck_assert_uint_eq(nh, 0);
    ck_assert_uint_eq(sv_durable_count(d), 0);
    const char *v1[1] = {"v1"};
    ck_assert_int_eq(sv_durable_delete(d, v1, 1, NULL, NULL), SV_ERR_NOT_FOUND);
    gate_set(&g, 1, 0);
    pthread_join(t, NULL);
    ck_assert_msg(add.st == SV_OK, "%s", add.err.message);
    ck_assert_int_eq(sv_durable_get(d, "v0", out, SM_DIM, NULL), SV_OK);
    ck_assert_uint_eq(sv_durable_count(d), 4);

    /* A delete: still there until durable; a second delete fails meanwhile. */
    gate_set(&g, 0, 0);
    g.entered = 0;
    write_job del = {.d = d, .n = 1, .ids = v1, .is_delete = 1};
    pthread_create(&t, NULL, write_thread, &del);
    gate_wait_entered(&g, 1);
    ck_assert_int_eq(sv_durable_get(d, "v1", out, SM_DIM, NULL), SV_OK);
    ck_assert_int_eq(sv_durable_delete(d, v1, 1, NULL, &err), SV_ERR_NOT_FOUND);
    gate_set(&g, 1, 0);
    pthread_join(t, NULL);
    ck_assert_msg(del.st == SV_OK, "%s", del.err.message);
    ck_assert_uint_eq(del.deleted, 1);
    ck_assert_int_eq(sv_durable_get(d, "v1", out, SM_DIM, NULL), SV_ERR_NOT_FOUND);

    /* A failed fsync: nothing visible, nothing acknowledged, and the log
     * refuses further writes until a restart rebuilds from it. */
    gate_set(&g, 0, EIO);
    const char *w[2] = {"w0", "w1"};
    ck_assert_int_eq(sv_durable_add(d, v, 2, SM_DIM, w, NULL, &err), SV_ERR_IO);
    ck_assert_int_eq(sv_durable_get(d, "w0", out, SM_DIM, NULL), SV_ERR_NOT_FOUND);
    ck_assert_uint_eq(sv_durable_count(d), 3);
    ck_assert_msg(sv_durable_validate(d, &err) == SV_OK, "%s", err.message);
    sv_wal_set_sync_hook(NULL, NULL);
    ck_assert_int_eq(sv_durable_add(d, v, 2, SM_DIM, w, NULL, &err), SV_ERR_IO);
    sv_durable_free(d);
    /* What a restart finds: the acknowledged writes; w0/w1 maybe (their
     * record was written, then its fsync failed), whole or not at all. */
    sv_recovery rec;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_int_eq(sv_durable_get(d, "v0", out, SM_DIM, NULL), SV_OK);
    ck_assert_int_eq(sv_durable_get(d, "v1", out, SM_DIM, NULL), SV_ERR_NOT_FOUND);
    uint64_t n = sv_durable_count(d);
    ck_assert(n == 3 || n == 5);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

/*
 * A consolidation is logged where it fixes its tombstones: a replay
 * consolidates at the same point, so the slots come back the same and the
 * adds after it reuse them as they did (the memory matches the original).
 */
START_TEST(test_consolidation_replays)
{
    char base[PATHN], dir[PATHN];
    sv_params p;
    sv_params_default(&p, SM_DIM);
    p.threads = 1;
    p.flush_threshold = 100;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    sv_error err;
    float *v = tu_gaussian(600, SM_DIM, 5);
    char names[600][16];
    const char *ids[600];
    for (int i = 0; i < 600; i++) {
        snprintf(names[i], sizeof names[i], "%d", i);
        ids[i] = names[i];
    }
    ck_assert_int_eq(dadd(d, v, 300, SM_DIM, ids, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    ck_assert_int_eq(sv_durable_delete(d, ids, 120, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
    ck_assert_int_eq(dadd(d, v + 300 * SM_DIM, 100, SM_DIM, ids + 300, NULL, &err), SV_OK);
    sv_stats before;
    sv_durable_collection_stats(d, &before);
    ck_assert_uint_eq(before.slots, 280); /* the adds reused freed slots */
    ck_assert_uint_eq(before.tombstones, 0);
    sv_durable_free(d); /* no snapshot: the log alone */
    sv_recovery rec;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    sv_stats after;
    sv_durable_collection_stats(d, &after);
    ck_assert_uint_eq(after.slots, before.slots);
    ck_assert_uint_eq(after.free_slots, before.free_slots);
    ck_assert_uint_eq(after.tombstones, 0);
    ck_assert_uint_eq(after.live, 280);
    ck_assert_msg(sv_durable_validate(d, &err) == SV_OK, "%s", err.message);
    sv_durable_free(d);
    free(v);
    rm_rf(base);
}
END_TEST

START_TEST(test_open_corrupt_record)
{
    char base[PATHN], dir[PATHN], path[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    small_build(dir, 5, NULL);
    pathf(path, "%s/wal-00000000000000000001.log", dir);
    visit_log *v = calloc(1, sizeof *v);
    sv_wal_scan scan;
    parse_file(path, v, &scan);
    size_t off = v->r[2].offset, at = off + SV_WAL_REC_HEADER + v->r[2].len / 2;
    visit_free(v);
    free(v);
    size_t len;
    uint8_t *b = read_all(path, &len);
    b[at] ^= 0x20;
    write_all(path, b, len);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_int_eq(try_open(dir, &d, &rec, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(err.code, SV_ERR_CORRUPT);
    char want[64];
    snprintf(want, sizeof want, "offset %zu", off);
    ck_assert_msg(strstr(err.message, "wal-00000000000000000001.log") && strstr(err.message, want),
                  "message: %s", err.message);
    /* nothing was cut: the file is as it was */
    ck_assert_int_eq(file_size(path), (long)len);
    free(b);
    rm_rf(base);
}
END_TEST

/* The payload offset of a snapshot section (0: none) and its length. */
static size_t snap_section(const uint8_t *b, size_t len, uint32_t tag, size_t *plen)
{
    size_t off = 32;
    while (off + 16 <= len) {
        uint32_t t;
        uint64_t l;
        memcpy(&t, b + off, 4);
        memcpy(&l, b + off + 8, 8);
        if (t == tag) {
            *plen = (size_t)l;
            return off + 16;
        }
        off += 16 + (size_t)l + 4;
    }
    return 0;
}

/* 10 batches (a flush after the 8th), a snapshot, one batch after it. */
static void snap_build(const char *dir, char *snap_path)
{
    small_build(dir, 10, NULL);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    sv_snapshot_info info;
    ck_assert_msg(sv_durable_snapshot(d, &info, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(info.lsn, 12); /* 10 ADDs + TRAIN + FLUSH */
    float vec[40 * SM_DIM];
    for (int i = 0; i < 40 * SM_DIM; i++)
        vec[i] = (float)(i % 13) * 0.5f;
    ck_assert_int_eq(dadd(d, vec, 40, SM_DIM, NULL, NULL, &err), SV_OK);
    sv_durable_free(d);
    char name[64];
    ck_assert(newest(dir, 1, name, NULL));
    ck_assert_str_eq(name, "snap-00000000000000000012.svs");
    pathf(snap_path, "%s/%s", dir, name);
    char first[64];
    uint64_t lsn;
    ck_assert(newest(dir, 0, first, &lsn));
    ck_assert_int_eq(count_files(dir, 0), 1);
    ck_assert_uint_eq(lsn, 13); /* the log starts after LSN 1 */
}

START_TEST(test_open_corrupt_snapshot)
{
    char base[PATHN], dir[PATHN], snap[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    snap_build(dir, snap);
    size_t len;
    uint8_t *good = read_all(snap, &len);
    uint8_t *b = malloc(len);
    const uint32_t tags[2] = {4 /* IDS */, 7 /* CODES */};
    for (int t = 0; t < 2; t++) {
        size_t plen = 0, off = snap_section(good, len, tags[t], &plen);
        ck_assert_uint_gt(off, 0);
        ck_assert_uint_gt(plen, 100);
        memcpy(b, good, len);
        b[off + plen / 2] ^= 0x04;
        write_all(snap, b, len);
        sv_durable *d = NULL;
        sv_recovery rec;
        sv_error err;
        ck_assert_int_eq(try_open(dir, &d, &rec, &err), SV_ERR_CORRUPT);
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(err.message, "snap-00000000000000000012.svs") != NULL &&
                          strstr(err.message, "offset") != NULL,
                      "message: %s", err.message);
        write_all(snap, good, len);
    }
    /* restored: it opens, with everything */
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(rec.snapshot_lsn, 12);
    ck_assert_uint_eq(rec.replayed, 1);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 440);
    small_has_batches(d, 0, 10, SV_OK);
    assert_valid(sv_durable_collection(d));
    sv_durable_free(d);
    free(b);
    free(good);
    rm_rf(base);
}
END_TEST

START_TEST(test_open_missing_snapshot)
{
    char base[PATHN], dir[PATHN], snap[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    snap_build(dir, snap);
    ck_assert_int_eq(unlink(snap), 0);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_int_eq(try_open(dir, &d, &rec, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_null(d);
    ck_assert_msg(strstr(err.message, "no snapshot holds") != NULL, "message: %s", err.message);
    rm_rf(base);
}
END_TEST

/* A damaged snapshot with no log at all after it (a crash re-creating the
 * empty newest segment left it header-less, and the next start removed
 * it): the log cannot stand in for the snapshot, so the open must fail,
 * never come up empty. */
START_TEST(test_open_damaged_snapshot_without_log)
{
    char base[PATHN], dir[PATHN], snap[PATHN], seg[64], path[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    snap_build(dir, snap);
    /* a snapshot holding everything, and an empty newest segment */
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    sv_snapshot_info info;
    ck_assert_msg(sv_durable_snapshot(d, &info, &err) == SV_OK, "%s", err.message);
    sv_durable_free(d);
    ck_assert(newest(dir, 1, seg, NULL));
    pathf(snap, "%s/%s", dir, seg);
    ck_assert(newest(dir, 0, seg, NULL));
    pathf(path, "%s/%s", dir, seg);
    ck_assert_int_eq(truncate(path, 0), 0);
    size_t len;
    uint8_t *b = read_all(snap, &len);
    b[len / 2] ^= 0x01;
    write_all(snap, b, len);
    free(b);
    ck_assert_int_eq(try_open(dir, &d, &rec, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_null(d);
    ck_assert_msg(strstr(err.message, "snap-") != NULL, "message: %s", err.message);
    rm_rf(base);
}
END_TEST

START_TEST(test_open_empty_dir)
{
    char base[PATHN], dir[PATHN];
    make_tmp(base);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_int_eq(try_open(base, &d, &rec, &err), SV_ERR_CORRUPT);
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(err.message, "params"));
    /* a directory that does not exist at all */
    pathf(dir, "%s/none", base);
    ck_assert_int_ne(try_open(dir, &d, &rec, &err), SV_OK);
    ck_assert_ptr_null(d);
    /* a params file alone (no log at all): an empty collection */
    pathf(dir, "%s/params", base);
    sv_params p;
    sv_params_default(&p, 4);
    uint8_t buf[SV_PARAMS_BYTES];
    sv_params_encode(&p, buf);
    write_all(dir, buf, sizeof buf);
    ck_assert_msg(try_open(base, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 0);
    ck_assert_uint_eq(rec.last_lsn, 0);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

START_TEST(test_open_cleans_leftovers)
{
    char base[PATHN], dir[PATHN], path[PATHN], tmp[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    small_build(dir, 5, NULL);
    pathf(tmp, "%s/snapshot.tmp", dir);
    write_all(tmp, (const uint8_t *)"SVSNAP half written", 19);
    pathf(path, "%s/wal-00000000000000000006.log", dir);
    write_all(path, NULL, 0);
    ck_assert_int_eq(file_size(path), 0);
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_int_eq(file_size(tmp), -1);
    ck_assert_msg(strstr(rec.note, "removed wal-00000000000000000006.log") != NULL, "note: %s", rec.note);
    ck_assert_uint_eq(rec.torn_bytes, 0);
    ck_assert_uint_eq(rec.last_lsn, 5);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 200);
    small_has_batches(d, 0, 5, SV_OK);
    /* the new log's segment took its place, with a header */
    ck_assert_int_eq(file_size(path), SV_WAL_HEADER);
    sv_durable_free(d);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 200);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

/* Every open starts a new segment: after several restarts without a
 * snapshot the log is several segments, and they must be read in LSN order
 * whatever order the directory lists them in. */
START_TEST(test_reopen_many_segments)
{
    char base[PATHN], dir[PATHN];
    make_tmp(base);
    pathf(dir, "%s/c", base);
    small_build(dir, 1, NULL);
    float vec[40 * SM_DIM];
    for (int i = 0; i < 40 * SM_DIM; i++)
        vec[i] = (float)(i % 11) - 5.0f;
    sv_durable *d = NULL;
    sv_recovery rec;
    sv_error err;
    for (int b = 1; b < 6; b++) {
        ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "open %d: %s", b, err.message);
        ck_assert_uint_eq(rec.last_lsn, (uint64_t)b);
        ck_assert_uint_eq(rec.replayed, (uint64_t)b);
        char names[40][16];
        const char *ids[40];
        for (int i = 0; i < 40; i++) {
            snprintf(names[i], sizeof names[i], "b%d-%d", b, i);
            ids[i] = names[i];
        }
        ck_assert_int_eq(dadd(d, vec, 40, SM_DIM, ids, NULL, &err), SV_OK);
        sv_durable_free(d);
        d = NULL;
    }
    ck_assert_int_eq(count_files(dir, 0), 6);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "final open: %s", err.message);
    ck_assert_uint_eq(rec.last_lsn, 6);
    ck_assert_uint_eq(rec.replayed, 6);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(d)), 240);
    small_has_batches(d, 0, 6, SV_OK);
    sv_durable_free(d);
    rm_rf(base);
}
END_TEST

/* ---- concurrency --------------------------------------------------------------- */

#define CC_BATCHES 20
#define CC_BATCH 100

typedef struct cc_shared {
    sv_durable *d;
    const float *data;     /* 2 * CC_BATCHES * CC_BATCH rows */
    int adders_done;       /* under lock */
    int batches_acked;     /* under lock */
    pthread_mutex_t lock;
} cc_shared;

typedef struct cc_adder {
    cc_shared *sh;
    int t;
    uint64_t assigned[CC_BATCHES * CC_BATCH];
    size_t acked;
    int failures;
    char msg[256];
} cc_adder;

static void *cc_add(void *p)
{
    cc_adder *a = p;
    char names[CC_BATCH][24];
    const char *ids[CC_BATCH];
    for (int b = 0; b < CC_BATCHES; b++) {
        for (int i = 0; i < CC_BATCH; i++) {
            snprintf(names[i], sizeof names[i], "a-%d", b * CC_BATCH + i);
            ids[i] = names[i];
        }
        size_t row = ((size_t)a->t * CC_BATCHES + (size_t)b) * CC_BATCH;
        sv_error err;
        sv_status st = dadd(a->sh->d, a->sh->data + row * SC_DIM, CC_BATCH, SC_DIM,
                                      a->t == 0 ? ids : NULL, a->assigned + (size_t)b * CC_BATCH, &err);
        if (st == SV_OK) {
            a->acked += CC_BATCH;
            pthread_mutex_lock(&a->sh->lock);
            a->sh->batches_acked++;
            pthread_mutex_unlock(&a->sh->lock);
        } else {
            a->failures++;
            snprintf(a->msg, sizeof a->msg, "%s", err.message);
        }
    }
    return NULL;
}

typedef struct cc_snapper {
    cc_shared *sh;
    int taken, failures;
    uint64_t lsns[5];
    char msg[256];
} cc_snapper;

static void *cc_snap(void *p)
{
    cc_snapper *s = p;
    for (int i = 0; i < 5; i++) {
        /* spread over the adds: after 1/6, 2/6, ... of the batches */
        for (;;) {
            pthread_mutex_lock(&s->sh->lock);
            int acked = s->sh->batches_acked;
            pthread_mutex_unlock(&s->sh->lock);
            if (acked * 6 >= (i + 1) * 2 * CC_BATCHES)
                break;
            usleep(500);
        }
        sv_snapshot_info info;
        sv_error err;
        if (sv_durable_snapshot(s->sh->d, &info, &err) == SV_OK) {
            s->lsns[s->taken++] = info.lsn;
        } else {
            s->failures++;
            snprintf(s->msg, sizeof s->msg, "%s", err.message);
        }
    }
    return NULL;
}

typedef struct cc_searcher {
    cc_shared *sh;
    long searches;
    int failures;
} cc_searcher;

static void *cc_search(void *p)
{
    cc_searcher *s = p;
    float *q = tu_gaussian(16, SC_DIM, 5);
    sv_hit hits[10];
    for (;;) {
        pthread_mutex_lock(&s->sh->lock);
        int done = s->sh->adders_done;
        pthread_mutex_unlock(&s->sh->lock);
        if (done)
            break;
        size_t n = 0;
        if (sv_collection_search(sv_durable_collection(s->sh->d), q + (s->searches % 16) * SC_DIM, SC_DIM,
                                 10, 40, hits, &n, NULL) != SV_OK)
            s->failures++;
        s->searches++;
    }
    free(q);
    return NULL;
}

static void cc_check(sv_durable *d, const cc_adder *num)
{
    sv_collection *c = sv_durable_collection(d);
    float got[SC_DIM];
    char id[24];
    for (int i = 0; i < CC_BATCHES * CC_BATCH; i++) {
        snprintf(id, sizeof id, "a-%d", i);
        ck_assert_msg(sv_collection_get(c, id, got, SC_DIM, NULL) == SV_OK, "%s missing", id);
        snprintf(id, sizeof id, "%" PRIu64, num->assigned[i]);
        ck_assert_msg(sv_collection_get(c, id, got, SC_DIM, NULL) == SV_OK, "%s missing", id);
    }
}

START_TEST(test_concurrent_snapshots)
{
    scen s;
    sc_init(&s, 0);
    cc_shared sh = {.d = s.d};
    pthread_mutex_init(&sh.lock, NULL);
    float *data = tu_gaussian(2 * CC_BATCHES * CC_BATCH, SC_DIM, 31);
    sh.data = data;
    cc_adder *ad = calloc(2, sizeof *ad);
    cc_snapper sn = {.sh = &sh};
    cc_searcher se = {.sh = &sh};
    pthread_t ta[2], ts, tq;
    for (int t = 0; t < 2; t++) {
        ad[t].sh = &sh;
        ad[t].t = t;
        ck_assert_int_eq(pthread_create(&ta[t], NULL, cc_add, &ad[t]), 0);
    }
    ck_assert_int_eq(pthread_create(&ts, NULL, cc_snap, &sn), 0);
    ck_assert_int_eq(pthread_create(&tq, NULL, cc_search, &se), 0);
    pthread_join(ta[0], NULL);
    pthread_join(ta[1], NULL);
    pthread_mutex_lock(&sh.lock);
    sh.adders_done = 1;
    pthread_mutex_unlock(&sh.lock);
    pthread_join(ts, NULL);
    pthread_join(tq, NULL);
    ck_assert_msg(ad[0].failures == 0 && ad[1].failures == 0, "add failed: %s %s", ad[0].msg, ad[1].msg);
    ck_assert_msg(sn.failures == 0, "snapshot failed: %s", sn.msg);
    ck_assert_int_eq(sn.taken, 5);
    ck_assert_int_eq(se.failures, 0);
    for (int i = 1; i < 5; i++)
        ck_assert_uint_ge(sn.lsns[i], sn.lsns[i - 1]);
    fprintf(stderr, "concurrent: %ld searches; snapshots at LSNs %" PRIu64 " %" PRIu64 " %" PRIu64
                    " %" PRIu64 " %" PRIu64 "\n",
            se.searches, sn.lsns[0], sn.lsns[1], sn.lsns[2], sn.lsns[3], sn.lsns[4]);
    const uint64_t acked = ad[0].acked + ad[1].acked;
    ck_assert_uint_eq(acked, 2 * CC_BATCHES * CC_BATCH);
    /* the assigned numbers are distinct */
    for (int i = 1; i < CC_BATCHES * CC_BATCH; i++)
        for (int j = i - 1; j >= 0 && j >= i - CC_BATCH * 2; j--)
            ck_assert_uint_ne(ad[1].assigned[i], ad[1].assigned[j]);
    ck_assert_uint_eq(sv_collection_count(sv_durable_collection(s.d)), acked);
    cc_check(s.d, &ad[1]);
    sv_durable_stats ds;
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.snapshots, 5);
    sv_durable_free(s.d);

    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    sv_collection *c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.snapshot_lsn, sn.lsns[4]);
    ck_assert_uint_eq(rec.last_lsn, ds.last_lsn);
    ck_assert_uint_eq(sv_collection_count(c), acked);
    sv_stats st;
    sv_collection_stats(c, &st);
    ck_assert_uint_eq(st.live, acked);
    ck_assert_uint_eq(st.tombstones, 0);
    cc_check(s.d, &ad[1]);
    assert_valid(c);
    ck_assert_int_eq(count_files(s.dir, 1), 1);
    pthread_mutex_destroy(&sh.lock);
    free(ad);
    free(data);
    sc_done(&s);
}
END_TEST

/* ---- failed writes change nothing ------------------------------------------------ */

START_TEST(test_failures_log_nothing)
{
    scen s;
    sc_init(&s, 0);
    for (int b = 0; b < 4; b++)
        sc_add(&s, 100); /* a flush at 300: trained, 100 buffered */
    sv_collection *c = sv_durable_collection(s.d);
    char seg[64], path[PATHN];
    ck_assert(newest(s.dir, 0, seg, NULL));
    pathf(path, "%s/%s", s.dir, seg);
    const long size0 = file_size(path);
    sv_stats st0, st;
    sv_collection_stats(c, &st0);
    ck_assert_uint_eq(st0.live, 400);
    sv_durable_stats ds0, ds;
    sv_durable_get_stats(s.d, &ds0);
    ck_assert_uint_eq(ds0.last_lsn, 6);
    sv_error err;

    /* NaN in the third vector */
    float bad[3 * SC_DIM];
    memcpy(bad, s.data + 3900 * SC_DIM, sizeof bad);
    bad[2 * SC_DIM + 5] = NAN;
    const char *ids3[3] = {"n0", NULL, "n2"};
    uint64_t got[3] = {11, 11, 11};
    ck_assert_int_eq(dadd(s.d, bad, 3, SC_DIM, ids3, got, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(err.code, SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "vector 2"));
    ck_assert_uint_eq(got[0], 11); /* assigned untouched */
    bad[2 * SC_DIM + 5] = INFINITY;
    ck_assert_int_eq(dadd(s.d, bad, 3, SC_DIM, ids3, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    /* wrong dimension */
    ck_assert_int_eq(dadd(s.d, bad, 1, SC_DIM - 1, NULL, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(file_size(path), size0);
    /* duplicate ids: with the collection, and twice in the batch */
    const char *dup1[3] = {"fresh-1", s.id[7], "fresh-2"};
    ck_assert_int_eq(dadd(s.d, s.data + 3900 * SC_DIM, 3, SC_DIM, dup1, NULL, &err),
                     SV_ERR_ALREADY_EXISTS);
    const char *dup2[3] = {"fresh-1", NULL, "fresh-1"};
    ck_assert_int_eq(dadd(s.d, s.data + 3900 * SC_DIM, 3, SC_DIM, dup2, NULL, &err),
                     SV_ERR_ALREADY_EXISTS);
    ck_assert_int_eq(file_size(path), size0);
    /* delete of an unknown id (with known ones in the same call) */
    const char *del[3] = {s.id[1], "no-such-id", s.id[2]};
    ck_assert_int_eq(sv_durable_delete(s.d, del, 3, NULL, &err), SV_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.message, "no-such-id"));
    const char *del_null[1] = {NULL};
    ck_assert_int_eq(sv_durable_delete(s.d, del_null, 1, NULL, &err), SV_ERR_NOT_FOUND);
    ck_assert_int_eq(file_size(path), size0);
    float v[SC_DIM];
    ck_assert_int_eq(sv_collection_get(c, s.id[1], v, SC_DIM, NULL), SV_OK);
    ck_assert_int_eq(sv_collection_get(c, "fresh-1", v, SC_DIM, NULL), SV_ERR_NOT_FOUND);
    sv_collection_stats(c, &st);
    assert_same_stats(&st0, &st, "after refused calls");
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, ds0.last_lsn);

    /* A log append that really fails (file size limit): SV_ERR_IO, the
     * batch undone, the segment cut back. */
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)size0 + 30; /* the 20-byte header fits, the payload not */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const char *ids_io[3] = {"io-0", NULL, "io-2"};
    sv_status io = dadd(s.d, s.data + 3900 * SC_DIM, 3, SC_DIM, ids_io, got, &err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    ck_assert_msg(io == SV_ERR_IO, "append over the size limit: %s", sv_status_name(io));
    ck_assert_int_eq(file_size(path), size0);
    ck_assert_int_eq(sv_collection_get(c, "io-0", v, SC_DIM, NULL), SV_ERR_NOT_FOUND);
    ck_assert_int_eq(sv_collection_get(c, "io-2", v, SC_DIM, NULL), SV_ERR_NOT_FOUND);
    ck_assert_uint_eq(sv_collection_count(c), 400);
    sv_collection_stats(c, &st);
    assert_same_stats(&st0, &st, "after a failed append");
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, ds0.last_lsn);
    /* the log still works: the same ids go in now */
    uint64_t ok_got[3];
    ck_assert_msg(dadd(s.d, s.data + 3900 * SC_DIM, 3, SC_DIM, ids_io, ok_got, &err) == SV_OK,
                  "%s", err.message);
    ck_assert_uint_eq(sv_collection_count(c), 403);
    sv_durable_get_stats(s.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, ds0.last_lsn + 1);
    char assigned_id[24];
    snprintf(assigned_id, sizeof assigned_id, "%" PRIu64, ok_got[1]);
    sv_durable_free(s.d);

    sv_recovery rec;
    s.d = sc_reopen(s.dir, &rec);
    c = sv_durable_collection(s.d);
    ck_assert_uint_eq(rec.replayed, 6);
    ck_assert_uint_eq(rec.torn_bytes, 0);
    ck_assert_uint_eq(sv_collection_count(c), 403);
    ck_assert_int_eq(sv_collection_get(c, "io-0", v, SC_DIM, NULL), SV_OK);
    ck_assert_int_eq(sv_collection_get(c, assigned_id, v, SC_DIM, NULL), SV_OK);
    ck_assert_int_eq(memcmp(v, s.data + 3901 * SC_DIM, sizeof v), 0);
    ck_assert_int_eq(sv_collection_get(c, "fresh-1", v, SC_DIM, NULL), SV_ERR_NOT_FOUND);
    assert_ids(c, &s, NULL);
    sc_done(&s);
}
END_TEST

/* ---- in memory --------------------------------------------------------------------- */

START_TEST(test_in_memory)
{
    sv_params p;
    sc_params(&p, SC_DIM);
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    sv_error err;
    ck_assert_int_eq(sv_durable_create(NULL, &p, &o, &d, &err), SV_OK);
    ck_assert_ptr_null(sv_durable_dir(d));
    float *v = tu_gaussian(700, SC_DIM, 8);
    uint64_t got[350];
    ck_assert_int_eq(dadd(d, v, 350, SC_DIM, NULL, got, &err), SV_OK);
    for (int i = 0; i < 350; i++)
        ck_assert_uint_eq(got[i], (uint64_t)i);
    sv_collection *c = sv_durable_collection(d);
    sv_stats st;
    sv_collection_stats(c, &st);
    ck_assert_uint_eq(st.indexed, 350); /* crossed the threshold: flushed */
    const char *ids[2] = {"m-a", "m-b"};
    ck_assert_int_eq(dadd(d, v + 350 * SC_DIM, 2, SC_DIM, ids, NULL, &err), SV_OK);
    ck_assert_int_eq(dadd(d, v + 350 * SC_DIM, 2, SC_DIM, ids, NULL, &err), SV_ERR_ALREADY_EXISTS);
    const char *del[2] = {"m-a", "17"};
    ck_assert_int_eq(sv_durable_delete(d, del, 2, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_delete(d, del, 1, NULL, &err), SV_ERR_NOT_FOUND);
    ck_assert_uint_eq(sv_collection_count(c), 350);
    sv_collection_stats(c, &st);
    ck_assert_uint_eq(st.buffered, 1);
    ck_assert_uint_eq(st.tombstones, 1);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    sv_collection_stats(c, &st);
    ck_assert_uint_eq(st.buffered, 0);
    ck_assert_uint_eq(st.indexed, 350);
    sv_snapshot_info info;
    memset(&info, 0xff, sizeof info);
    ck_assert_int_eq(sv_durable_snapshot(d, &info, &err), SV_OK);
    ck_assert_uint_eq(info.lsn, 0);
    ck_assert_uint_eq(info.bytes, 0);
    ck_assert_int_eq(sv_durable_snapshot(d, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_snapshot_due(d), 0);
    sv_durable_stats ds;
    sv_durable_get_stats(d, &ds);
    ck_assert_uint_eq(ds.last_lsn, 0);
    ck_assert_uint_eq(ds.snapshots, 0);
    float g[SC_DIM];
    ck_assert_int_eq(sv_collection_get(c, "m-b", g, SC_DIM, NULL), SV_OK);
    sv_hit hits[5];
    size_t n = 0;
    ck_assert_int_eq(sv_collection_search(c, v + 100 * SC_DIM, SC_DIM, 5, 50, hits, &n, NULL), SV_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(hits[0].id, "100");
    assert_valid(c);
    sv_durable_free(d);
    free(v);
}
END_TEST

/* A snapshot released every log segment, then the process died before the
 * new segment's header was written (a header-less segment is removed at
 * open): appends must go on after the snapshot's LSN, not from 1, or the
 * next recovery skips them as already in the snapshot. */
START_TEST(test_log_restarts_after_snapshot_lsn)
{
    char base[PATHN], dir[PATHN], path[PATHN];
    sv_params p;
    sv_params_default(&p, SM_DIM);
    p.threads = 1;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    sv_error err;
    float *v = tu_gaussian(40, SM_DIM, 3);
    static char names[40][16];
    const char *ids[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        ids[i] = names[i];
    }
    for (int b = 0; b < 4; b++)
        ck_assert_int_eq(sv_durable_add(d, v + b * 5 * SM_DIM, 5, SM_DIM, ids + b * 5, NULL, &err), SV_OK);
    sv_snapshot_info info;
    ck_assert_msg(sv_durable_snapshot(d, &info, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_ge(info.lsn, 4);
    sv_durable_free(d);
    /* Every segment is now past the snapshot: cut each to less than a
     * header, as a crash while creating it would leave it. */
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    struct dirent *e;
    int cut = 0;
    while ((e = readdir(dh)) != NULL) {
        if (strncmp(e->d_name, "wal-", 4) != 0)
            continue;
        pathf(path, "%s/%s", dir, e->d_name);
        ck_assert_int_eq(truncate(path, 3), 0);
        cut++;
    }
    closedir(dh);
    ck_assert_int_ge(cut, 1);
    sv_recovery rec;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    for (int b = 4; b < 8; b++)
        ck_assert_int_eq(sv_durable_add(d, v + b * 5 * SM_DIM, 5, SM_DIM, ids + b * 5, NULL, &err), SV_OK);
    sv_durable_stats ds;
    sv_durable_get_stats(d, &ds);
    ck_assert_uint_gt(ds.last_lsn, info.lsn);
    sv_durable_free(d);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(sv_durable_count(d), 40);
    float out[SM_DIM];
    for (int i = 0; i < 40; i++)
        ck_assert_msg(sv_durable_get(d, ids[i], out, SM_DIM, &err) == SV_OK, "%s lost", ids[i]);
    sv_durable_free(d);
    free(v);
    rm_rf(base);
}
END_TEST

/* ---- originals on disk ------------------------------------------------------ */

#define OR_DIM 16

static void or_ids(char (*names)[16], const char **ids, int n)
{
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 16, "%d", i);
        ids[i] = names[i];
    }
}

/* Every live id in [from, to) reads back its exact original, and a search
 * for it finds it first at distance 0 (re-ranked), or not exactly 0 from
 * the codes alone. */
static void or_check_exact(sv_durable *d, const float *v, const char **ids, int from, int to)
{
    float got[OR_DIM];
    sv_error err;
    sv_hit hits[5];
    size_t n = 0;
    int inexact = 0;
    for (int i = from; i < to; i++) {
        ck_assert_msg(sv_durable_get(d, ids[i], got, OR_DIM, &err) == SV_OK, "get %s: %s", ids[i], err.message);
        ck_assert_msg(memcmp(got, v + (size_t)i * OR_DIM, sizeof got) == 0, "id %s: not its original", ids[i]);
        sv_search_opts so = {.k = 5, .search_list = 32};
        ck_assert_int_eq(sv_durable_search(d, v + (size_t)i * OR_DIM, OR_DIM, &so, hits, &n, &err), SV_OK);
        ck_assert_uint_ge(n, 1);
        ck_assert_str_eq(hits[0].id, ids[i]);
        ck_assert_msg(hits[0].distance == 0.0f, "id %s: re-ranked distance %g", ids[i], (double)hits[0].distance);
        so.rerank = SV_RERANK_OFF;
        ck_assert_int_eq(sv_durable_search(d, v + (size_t)i * OR_DIM, OR_DIM, &so, hits, &n, &err), SV_OK);
        inexact += n && hits[0].distance != 0.0f;
    }
    /* Code distances are not exact (buffered rows are: they are floats). */
    sv_stats s;
    sv_durable_collection_stats(d, &s);
    if (s.indexed > 10 && to - from > 10)
        ck_assert_int_gt(inexact, 0);
}

START_TEST(test_originals_durable)
{
    char base[PATHN], dir[PATHN], path[PATHN];
    sv_params p;
    sv_params_default(&p, OR_DIM);
    p.threads = 2;
    p.flush_threshold = 100;
    p.originals = SV_ORIGINALS_DISK;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    pathf(path, "%s/" SV_ORIGINALS_FILE, dir);
    sv_error err;
    ck_assert_int_eq(sv_durable_params(d)->originals, SV_ORIGINALS_DISK);
    float *v = tu_gaussian(600, OR_DIM, 11);
    static char names[600][16];
    const char *ids[600];
    or_ids(names, ids, 600);
    ck_assert_int_eq(dadd(d, v, 300, OR_DIM, ids, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    ck_assert_msg(sv_durable_snapshot(d, NULL, &err) == SV_OK, "%s", err.message);
    ck_assert_int_eq(dadd(d, v + 300 * OR_DIM, 100, OR_DIM, ids + 300, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    ck_assert_int_eq(sv_durable_delete(d, ids, 50, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
    /* These reuse the freed slots: their records are overwritten after
     * the snapshot, and the replay writes them again. */
    ck_assert_int_eq(dadd(d, v + 400 * OR_DIM, 60, OR_DIM, ids + 400, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    or_check_exact(d, v, ids, 50, 460);
    sv_stats s;
    sv_durable_collection_stats(d, &s);
    ck_assert_uint_ge(s.orig_disk_bytes, (uint64_t)410 * OR_DIM * 4);
    ck_assert_uint_gt(s.orig_resident_bytes, 0);
    sv_durable_free(d); /* the snapshot plus the log */

    sv_recovery rec;
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_gt(rec.replayed, 0);
    or_check_exact(d, v, ids, 50, 460);

    /* Compaction moves records; flushes go on once the snapshot it takes
     * holds the new layout, and the file gives the tail back. */
    ck_assert_int_eq(sv_durable_delete(d, ids + 300, 160, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
    uint32_t moved = 0;
    ck_assert_msg(sv_durable_compact(d, &moved, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_gt(moved, 0);
    ck_assert_int_eq(sv_durable_snapshot_due(d), 0);
    ck_assert_int_eq(dadd(d, v + 460 * OR_DIM, 40, OR_DIM, ids + 460, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    sv_durable_collection_stats(d, &s);
    ck_assert_uint_eq(s.indexed, 290);
    or_check_exact(d, v, ids, 50, 300);
    or_check_exact(d, v, ids, 460, 500);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    sv_durable_free(d);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    or_check_exact(d, v, ids, 50, 300);
    or_check_exact(d, v, ids, 460, 500);
    ck_assert_msg(sv_durable_validate(d, &err) == SV_OK, "%s", err.message);
    ck_assert_msg(sv_durable_snapshot(d, NULL, &err) == SV_OK, "%s", err.message);
    sv_durable_free(d);

    /* Damage: a changed record, a cut file, a lost file, a wrong header:
     * each stops the open with a clear error. */
    size_t len = 0;
    uint8_t *orig = read_all(path, &len);
    ck_assert_ptr_nonnull(orig);
    size_t rec_bytes = OR_DIM * 4;
    for (int damage = 0; damage < 4; damage++) {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        if (damage == 0) { /* one float of every record a little off */
            uint8_t *copy = malloc(len);
            memcpy(copy, orig, len);
            for (size_t off = 4096; off + rec_bytes <= len; off += rec_bytes)
                copy[off + 5] ^= 0x40;
            ck_assert_uint_eq(fwrite(copy, 1, len, f), len);
            free(copy);
        } else if (damage == 1) {
            ck_assert_uint_eq(fwrite(orig, 1, 4096 + 10 * rec_bytes, f), 4096 + 10 * rec_bytes);
        } else if (damage == 3) {
            uint8_t *copy = malloc(len);
            memcpy(copy, orig, len);
            copy[16] ^= 1; /* the dimension */
            ck_assert_uint_eq(fwrite(copy, 1, len, f), len);
            free(copy);
        }
        fclose(f);
        if (damage == 2)
            ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(try_open(dir, &d, &rec, &err), SV_ERR_CORRUPT);
        ck_assert_msg(strstr(err.message, "originals") != NULL, "%s", err.message);
    }
    FILE *f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(orig, 1, len, f), len);
    fclose(f);
    ck_assert_msg(try_open(dir, &d, &rec, &err) == SV_OK, "%s", err.message);
    or_check_exact(d, v, ids, 460, 500);
    sv_durable_free(d);
    free(orig);
    free(v);
    rm_rf(base);
}
END_TEST

/* --sync-interval-ms: acknowledgements do not wait for an fsync, but with
 * originals a consolidation's deletes must be durable before the freed
 * slots take other vectors' records. */
START_TEST(test_originals_consolidation_syncs)
{
    for (int with = 0; with < 2; with++) {
        char base[PATHN], dir[PATHN];
        sv_params p;
        sv_params_default(&p, OR_DIM);
        p.threads = 1;
        p.originals = with ? SV_ORIGINALS_DISK : SV_ORIGINALS_NONE;
        sv_durable_options o = {.sync_interval_ms = 60000}; /* its thread never comes */
        sv_durable *d = tmp_durable(base, dir, &p, &o);
        sv_error err;
        float *v = tu_gaussian(100, OR_DIM, 9);
        static char names[100][16];
        const char *ids[100];
        or_ids(names, ids, 100);
        ck_assert_int_eq(sv_durable_add(d, v, 100, OR_DIM, ids, NULL, &err), SV_OK);
        ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
        ck_assert_int_eq(sv_durable_delete(d, ids, 30, NULL, &err), SV_OK);
        sv_durable_stats before, after;
        sv_durable_get_stats(d, &before);
        ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
        sv_durable_get_stats(d, &after);
        if (with)
            ck_assert_uint_gt(after.syncs, before.syncs);
        else
            ck_assert_uint_eq(after.syncs, before.syncs);
        sv_durable_free(d);
        free(v);
        rm_rf(base);
    }
}
END_TEST

START_TEST(test_originals_refused)
{
    sv_params p;
    sv_params_default(&p, OR_DIM);
    p.originals = SV_ORIGINALS_DISK;
    p.storage = SV_STORAGE_F32;
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
    p.storage = SV_STORAGE_INT8;
    p.originals = (sv_originals_mode)7;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    /* In memory (no directory): an unnamed temporary file. */
    p.originals = SV_ORIGINALS_DISK;
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    ck_assert_msg(sv_durable_create(NULL, &p, &o, &d, &err) == SV_OK, "%s", err.message);
    float *v = tu_gaussian(200, OR_DIM, 3);
    static char names[200][16];
    const char *ids[200];
    or_ids(names, ids, 200);
    ck_assert_int_eq(sv_durable_add(d, v, 200, OR_DIM, ids, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
    or_check_exact(d, v, ids, 0, 200);
    /* Compaction without a directory cuts the file at once. */
    ck_assert_int_eq(sv_durable_delete(d, ids + 100, 100, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
    ck_assert_int_eq(sv_durable_compact(d, NULL, &err), SV_OK);
    or_check_exact(d, v, ids, 0, 100);
    sv_durable_free(d);
    free(v);
}
END_TEST

/* ---- payloads ------------------------------------------------------------------ */

enum { PL_DIM = 8, PL_N = 300 };

/* Row i's payload as the test set it: class c<i%7>, u = i, tags on even rows;
 * after the patch round, u = -i on multiples of 5. */
static void pl_expect(int i, int patched, char *out, size_t cap)
{
    int64_t u = patched && i % 5 == 0 ? -i : i;
    if (i % 2 == 0)
        snprintf(out, cap, "class=c%d;u=%" PRId64 ";tags=t%d,x;", i % 7, u, i % 3);
    else
        snprintf(out, cap, "class=c%d;u=%" PRId64 ";", i % 7, u);
}

static void pl_render(sv_durable *d, const char *id, char *out, size_t cap)
{
    _Alignas(16) unsigned char buf[2048];
    sv_payload pl;
    size_t need = 0;
    sv_error err;
    ck_assert_msg(sv_collection_get_payload(sv_durable_collection(d), id, buf, sizeof buf, &pl, &need, &err) == SV_OK,
                  "%s: %s", id, err.message);
    out[0] = '\0';
    size_t at = 0;
    for (uint32_t i = 0; i < pl.n; i++) {
        const sv_pv_field *f = &pl.fields[i];
        at += (size_t)snprintf(out + at, cap - at, "%s=", f->key);
        if (f->type == SV_PV_STRING)
            at += (size_t)snprintf(out + at, cap - at, "%s;", f->s);
        else if (f->type == SV_PV_INT)
            at += (size_t)snprintf(out + at, cap - at, "%" PRId64 ";", f->i);
        else {
            for (uint32_t j = 0; j < f->n; j++)
                at += (size_t)snprintf(out + at, cap - at, "%s%s", f->ss[j], j + 1 < f->n ? "," : ";");
        }
    }
}

static void pl_check(sv_durable *d, int patched)
{
    char want[256], got[256], id[16];
    for (int i = 0; i < PL_N; i++) {
        snprintf(id, sizeof id, "r%d", i);
        float v[PL_DIM];
        sv_error err;
        if (i % 10 == 3) { /* deleted */
            ck_assert_int_eq(sv_durable_get(d, id, v, PL_DIM, &err), SV_ERR_NOT_FOUND);
            continue;
        }
        pl_expect(i, patched, want, sizeof want);
        pl_render(d, id, got, sizeof got);
        ck_assert_str_eq(got, want);
    }
    /* A filter over them agrees: class c3 and u >= 0. */
    sv_pv_field c3 = {.type = SV_PV_STRING, .s = "c3"};
    sv_cond cs[2] = {{.kind = SV_COND_MATCH, .key = "class", .value = c3},
                     {.kind = SV_COND_RANGE, .key = "u", .lo = {.set = 1, .inclusive = 1, .is_int = 1, .i = 0}}};
    sv_filter f = {.must = cs, .n_must = 2};
    uint64_t want_n = 0, got_n = 0;
    for (int i = 0; i < PL_N; i++)
        want_n += i % 10 != 3 && i % 7 == 3 && !(patched && i % 5 == 0 && i > 0);
    sv_error err;
    ck_assert_int_eq(sv_collection_count_filtered(sv_durable_collection(d), &f, NULL, &got_n, &err), SV_OK);
    ck_assert_uint_eq(got_n, want_n);
}

/* The keys indexed, in order, as one string ("class,tags"). */
static void check_indexed(sv_durable *d, const char *want)
{
    const char *keys[8];
    uint32_t n = sv_durable_indexed_keys(d, keys, 8);
    char got[128] = "";
    for (uint32_t i = 0; i < n && i < 8; i++) {
        strcat(got, i ? "," : "");
        strcat(got, keys[i]);
    }
    ck_assert_str_eq(got, want);
}

/* Payloads are logged with their vectors and by SET_PAYLOAD, written into
 * snapshots, and come back from the log, a snapshot, and both; a refused
 * payload is not logged. Indexes too (INDEX records, the INDEXES
 * section), and the filters read through them agree. */
START_TEST(test_payloads_durable)
{
    char base[PATHN], dir[PATHN];
    sv_params p;
    sv_params_default(&p, PL_DIM);
    p.flush_threshold = 0;
    sv_durable_options o = {0};
    sv_durable *d = tmp_durable(base, dir, &p, &o);
    float *v = tu_gaussian(PL_N, PL_DIM, 5);
    static char names[PL_N][16], classes[PL_N][8], tag0[PL_N][8];
    sv_error err;
    for (int b = 0; b < PL_N; b += 50) {
        const char *ids[50];
        const char *tags[50][2];
        sv_pv_field f[50][3];
        sv_payload pl[50];
        for (int j = 0; j < 50; j++) {
            int i = b + j;
            snprintf(names[i], sizeof names[i], "r%d", i);
            snprintf(classes[i], sizeof classes[i], "c%d", i % 7);
            snprintf(tag0[i], sizeof tag0[i], "t%d", i % 3);
            ids[j] = names[i];
            tags[j][0] = tag0[i];
            tags[j][1] = "x";
            f[j][0] = (sv_pv_field){.key = "class", .type = SV_PV_STRING, .s = classes[i]};
            f[j][1] = (sv_pv_field){.key = "u", .type = SV_PV_INT, .i = i};
            f[j][2] = (sv_pv_field){.key = "tags", .type = SV_PV_STRINGS, .ss = tags[j], .n = 2};
            pl[j] = (sv_payload){f[j], i % 2 == 0 ? 3u : 2u};
        }
        ck_assert_msg(sv_durable_add_payloads(d, v + (size_t)b * PL_DIM, 50, PL_DIM, ids, pl, NULL, &err) == SV_OK,
                      "%s", err.message);
        if (b == 100) {
            ck_assert_int_eq(sv_durable_flush(d, &err), SV_OK);
            ck_assert_int_eq(sv_durable_index_key(d, "class", &err), SV_OK);
        }
    }
    ck_assert_int_eq(sv_durable_index_key(d, "class", &err), SV_OK); /* again: a no-op */
    ck_assert_int_eq(sv_durable_index_key(d, "", &err), SV_ERR_INVALID_ARGUMENT);
    check_indexed(d, "class");
    /* A refused batch (a string where u holds int64s) and a refused set. */
    sv_pv_field bad = {.key = "u", .type = SV_PV_STRING, .s = "no"};
    sv_payload badpl = {&bad, 1};
    const char *nid[1] = {"extra"};
    ck_assert_int_eq(sv_durable_add_payloads(d, v, 1, PL_DIM, nid, &badpl, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(sv_durable_set_payload(d, "r1", &badpl, SV_PAYLOAD_PATCH, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(sv_durable_set_payload(d, "nobody", &badpl, SV_PAYLOAD_PATCH, &err), SV_ERR_NOT_FOUND);
    static char del_names[PL_N][16];
    const char *dels[PL_N];
    size_t nd = 0;
    for (int i = 3; i < PL_N; i += 10) {
        snprintf(del_names[nd], sizeof del_names[nd], "r%d", i);
        dels[nd] = del_names[nd];
        nd++;
    }
    ck_assert_int_eq(sv_durable_delete(d, dels, nd, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_set_payload(d, dels[0], &badpl, SV_PAYLOAD_PATCH, &err), SV_ERR_NOT_FOUND);
    pl_check(d, 0);
    sv_durable_free(d);

    /* From the log alone. */
    sv_recovery rec;
    d = sc_reopen(dir, &rec);
    check_indexed(d, "class");
    pl_check(d, 0);
    /* Patches (logged as SET_PAYLOAD), then a snapshot, then more patches:
     * from snapshot + log. */
    for (int i = 0; i < PL_N; i += 5) {
        if (i % 10 == 3)
            continue;
        sv_pv_field u = {.key = "u", .type = SV_PV_INT, .i = -i};
        sv_payload patch = {&u, 1};
        ck_assert_msg(sv_durable_set_payload(d, names[i], &patch, SV_PAYLOAD_PATCH, &err) == SV_OK, "%s",
                      err.message);
        if (i == 150) {
            sv_snapshot_info info;
            ck_assert_msg(sv_durable_snapshot(d, &info, &err) == SV_OK, "%s", err.message);
            ck_assert_int_eq(sv_durable_index_key(d, "u", &err), SV_OK);
        }
    }
    pl_check(d, 1);
    sv_durable_free(d);
    d = sc_reopen(dir, &rec);
    check_indexed(d, "class,u");
    ck_assert_uint_gt(rec.snapshot_lsn, 0);
    ck_assert_uint_gt(rec.replayed, 0);
    pl_check(d, 1);
    /* From a snapshot alone (compacted first: payloads move with the vectors). */
    ck_assert_int_eq(sv_durable_consolidate(d, &err), SV_OK);
    ck_assert_int_eq(sv_durable_compact(d, NULL, &err), SV_OK);
    pl_check(d, 1);
    sv_snapshot_info info;
    ck_assert_int_eq(sv_durable_snapshot(d, &info, &err), SV_OK);
    sv_durable_free(d);
    d = sc_reopen(dir, &rec);
    ck_assert_uint_eq(rec.replayed, 0);
    check_indexed(d, "class,u");
    pl_check(d, 1);
    ck_assert_uint_eq(sv_durable_count(d), PL_N - nd);
    sv_durable_free(d);
    free(v);
    rm_rf(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("durable");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, NULL, remove_tmp_dirs);
    tcase_add_test(tc, test_wal_framing);
    tcase_add_test(tc, test_payloads_durable);
    tcase_add_test(tc, test_assigned_beside_delete_in_flight);
    tcase_add_test(tc, test_log_local_contract);
    tcase_add_test(tc, test_wal_torn_tails);
    tcase_add_test(tc, test_wal_group_commit);
    tcase_add_test(tc, test_logrec_round_trip);
    tcase_add_test(tc, test_params_file);
    tcase_add_test(tc, test_snapshot_round_trip);
    tcase_add_test(tc, test_replay_without_snapshot);
    tcase_add_test(tc, test_replay_threshold_flushes_only);
    tcase_add_test(tc, test_replay_uses_logged_mean);
    tcase_add_test(tc, test_snapshot_then_log);
    tcase_add_test(tc, test_open_torn_tail);
    tcase_add_test(tc, test_open_forged_record_in_vectors);
    tcase_add_test(tc, test_visible_only_when_durable);
    tcase_add_test(tc, test_consolidation_replays);
    tcase_add_test(tc, test_open_corrupt_record);
    tcase_add_test(tc, test_open_damaged_snapshot_without_log);
    tcase_add_test(tc, test_open_empty_dir);
    tcase_add_test(tc, test_open_cleans_leftovers);
    tcase_add_test(tc, test_reopen_many_segments);
    tcase_add_test(tc, test_failures_log_nothing);
    tcase_add_test(tc, test_in_memory);
    tcase_add_test(tc, test_originals_durable);
    tcase_add_test(tc, test_originals_consolidation_syncs);
    tcase_add_test(tc, test_log_restarts_after_snapshot_lsn);
    tcase_add_test(tc, test_originals_refused);
    /* Last: these snapshot collections that never freed a slot, which
     * passes a NULL free list to memcpy in sv_snapshot_write (UBSan stops
     * the sanitizer build there until that is fixed). */
    tcase_add_test(tc, test_open_corrupt_snapshot);
    tcase_add_test(tc, test_open_missing_snapshot);
    tcase_add_test(tc, test_concurrent_snapshots);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    snprintf(tmp_prefix, sizeof tmp_prefix, "sv-durable-%ld-", (long)getpid());
    int rc = tu_run_suite(suite());
    remove_tmp_dirs();
    return rc;
}
