/*
 * Following a log (cluster mode's apply path, follow.h) over the local
 * backend: the reader reads what a writer appended, a follower applies it
 * deterministically (ids the cluster assigns, refusals the same on every
 * replica), snapshots at the LSN applied and reopens from snapshot + log;
 * two followers of one log hold the same ids and vectors. The JetStream
 * backend runs the same steps against real nats-server processes
 * (tests/cluster).
 */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "durable.h"
#include "follow.h"
#include "log.h"
#include "logrec.h"
#include "slimvec.h"
#include "testutil.h"

enum { DIM = 8 };

static void rm_rf(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
}

static void make_tmp(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/sv-follow-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* What a router appends: an ADD of n vectors, ids[i] NULL = the cluster
 * assigns it. */
static uint64_t append_add(sv_log *log, const char *const *ids, size_t n, const float *v)
{
    uint64_t zero[64] = {0};
    ck_assert_uint_le(n, 64);
    uint8_t *head = NULL;
    size_t hl = 0;
    ck_assert_int_eq(sv_logrec_add_ids(ids, zero, n, DIM, 0, 0, &head, &hl), SV_OK);
    struct iovec parts[2] = {{head, hl}, {(void *)v, n * DIM * sizeof(float)}};
    uint64_t lsn = 0;
    sv_error err;
    ck_assert_int_eq(sv_log_append(log, SV_WAL_ADD, parts, 2, &lsn, &err), SV_OK);
    free(head);
    return lsn;
}

static uint64_t append_delete(sv_log *log, const char *const *ids, size_t n)
{
    uint8_t *rec = NULL;
    size_t len = 0;
    ck_assert_int_eq(sv_logrec_delete(ids, n, &rec, &len), SV_OK);
    struct iovec part = {rec, len};
    uint64_t lsn = 0;
    sv_error err;
    ck_assert_int_eq(sv_log_append(log, SV_WAL_DELETE, &part, 1, &lsn, &err), SV_OK);
    free(rec);
    return lsn;
}

typedef struct applier {
    sv_durable *d;
    sv_status outcomes[64]; /* by LSN */
    uint64_t first[64];     /* by LSN: duplicate_of */
    uint64_t seen;
} applier;

static sv_status apply_visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    applier *a = ctx;
    sv_follow_result res;
    sv_status st = sv_durable_apply(a->d, type, lsn, p, len, &res, err);
    sv_status outcome = res.outcome;
    if (st == SV_OK && lsn < 64) {
        a->outcomes[lsn] = outcome;
        a->first[lsn] = res.duplicate_of;
    }
    a->seen++;
    return st;
}

static uint64_t stop_at; /* apply_until stops past this LSN (0: never) */

static sv_status apply_until(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    if (stop_at && lsn > stop_at)
        return SV_ERR_INTERRUPTED;
    return apply_visit(ctx, type, lsn, p, len, err);
}

static sv_params params(void)
{
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 0;
    return p;
}

static const sv_follow_ids SHARD = {3, 1};

/* The writer's log: 5 records (adds with given and assigned ids, a
 * duplicate, a delete of an id that is not there, a delete that works). */
static void write_log(const char *dir, float *v)
{
    sv_log *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_log_local_start(dir, 1, 0, &w, &err), SV_OK);
    const char *a[4] = {"alpha", NULL, "7", NULL};
    ck_assert_uint_eq(append_add(w, a, 4, v), 1);
    const char *dup[2] = {"beta", "alpha"}; /* alpha exists: refused whole */
    ck_assert_uint_eq(append_add(w, dup, 2, v + 4 * DIM), 2);
    const char *gone[2] = {"7", "nope"};
    ck_assert_uint_eq(append_delete(w, gone, 2), 3);
    const char *del[1] = {"7"};
    ck_assert_uint_eq(append_delete(w, del, 1), 4);
    const char *b[2] = {"beta", NULL};
    ck_assert_uint_eq(append_add(w, b, 2, v + 6 * DIM), 5);
    ck_assert_int_eq(sv_log_sync(w, 5, &err), SV_OK);
    sv_log_close(w);
}

static sv_log *reader(const char *dir)
{
    sv_log *r = NULL;
    uint64_t torn = 0;
    char note[128] = "";
    sv_error err;
    ck_assert_msg(sv_log_local_open(dir, 0, &r, &torn, note, sizeof note, &err) == SV_OK, "%s", err.message);
    return r;
}

static void assert_has(sv_durable *d, const char *id, const float *want)
{
    float got[DIM];
    sv_error err;
    ck_assert_msg(sv_durable_get(d, id, got, DIM, &err) == SV_OK, "%s: %s", id, err.message);
    for (int j = 0; j < DIM; j++)
        ck_assert(fabsf(got[j] - want[j]) < 0.05f);
}

static void assert_state(sv_durable *d, const float *v)
{
    char id[32];
    sv_error err;
    ck_assert_uint_eq(sv_durable_count(d), 5);
    assert_has(d, "alpha", v);
    snprintf(id, sizeof id, "%" PRIu64, sv_follow_assigned_id(&SHARD, 1, 1));
    assert_has(d, id, v + DIM);
    snprintf(id, sizeof id, "%" PRIu64, sv_follow_assigned_id(&SHARD, 1, 3));
    assert_has(d, id, v + 3 * DIM);
    assert_has(d, "beta", v + 6 * DIM);
    snprintf(id, sizeof id, "%" PRIu64, sv_follow_assigned_id(&SHARD, 5, 1));
    assert_has(d, id, v + 7 * DIM);
    float got[DIM];
    ck_assert_int_eq(sv_durable_get(d, "7", got, DIM, &err), SV_ERR_NOT_FOUND);
}

START_TEST(test_follow_apply_snapshot_reopen)
{
    char base[64], logdir[128], dir[128], twin[128];
    make_tmp(base, sizeof base);
    snprintf(logdir, sizeof logdir, "%s/log", base);
    snprintf(dir, sizeof dir, "%s/replica", base);
    snprintf(twin, sizeof twin, "%s/twin", base);
    ck_assert_int_eq(mkdir(logdir, 0755), 0);
    float *v = tu_gaussian(8, DIM, 5);
    write_log(logdir, v);

    sv_params p = params();
    sv_durable_options o = {0};
    sv_error err;
    applier a = {0};
    sv_log *r = reader(logdir);
    ck_assert_uint_eq(sv_log_last(r), 5);
    ck_assert_msg(sv_durable_create_follower(dir, &p, &o, r, &SHARD, &a.d, &err) == SV_OK, "%s", err.message);
    /* A follower takes no writes of its own. */
    const char *ids[1] = {"x"};
    ck_assert_int_eq(sv_durable_add(a.d, v, 1, DIM, ids, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(sv_durable_delete(a.d, ids, 1, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    uint64_t last = 0;
    ck_assert_int_eq(sv_log_read(r, 0, 0, apply_visit, &a, &last, &err), SV_OK);
    ck_assert_uint_eq(last, 5);
    ck_assert_uint_eq(sv_durable_applied(a.d), 5);
    ck_assert_int_eq(a.outcomes[1], SV_OK);
    ck_assert_int_eq(a.outcomes[2], SV_ERR_ALREADY_EXISTS);
    ck_assert_int_eq(a.outcomes[3], SV_ERR_NOT_FOUND);
    ck_assert_int_eq(a.outcomes[4], SV_OK);
    ck_assert_int_eq(a.outcomes[5], SV_OK);
    assert_state(a.d, v);
    /* Delivered again (a consumer restarted): nothing changes. */
    a.seen = 0;
    ck_assert_int_eq(sv_log_read(r, 2, 0, apply_visit, &a, &last, &err), SV_OK);
    ck_assert_uint_eq(a.seen, 3);
    assert_state(a.d, v);
    /* A gap is never skipped. */
    sv_follow_result res;
    uint8_t junk[4] = {0};
    ck_assert_int_eq(sv_durable_apply(a.d, SV_WAL_DELETE, 7, junk, 0, &res, &err), SV_ERR_CORRUPT);

    /* Snapshot at the LSN applied; the reopen loads it and reads nothing
     * more. (The snapshot's release would purge a stream; on this local
     * reader it drops the segments the snapshot holds.) */
    ck_assert_int_eq(sv_durable_flush(a.d, &err), SV_OK);
    sv_snapshot_info info;
    ck_assert_msg(sv_durable_snapshot(a.d, &info, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(info.lsn, 5);
    sv_durable_stats ds;
    sv_durable_get_stats(a.d, &ds);
    ck_assert_uint_eq(ds.last_lsn, 5);
    sv_durable_free(a.d);

    /* A second follower of the same log from nothing, reading as records
     * come: the same ids and vectors. */
    write_log(logdir, v); /* the release above removed the segments: write them again */
    applier t = {0};
    sv_log *r2 = reader(logdir);
    ck_assert_int_eq(sv_durable_create_follower(twin, &p, &o, r2, &SHARD, &t.d, &err), SV_OK);
    for (uint64_t after = 0; after < 5; after++) {
        /* One record at a time, as a consumer hands them over. */
        sv_log *one = reader(logdir);
        ck_assert_int_eq(sv_log_read(one, after, 0, apply_visit, &t, &last, &err), SV_OK);
        sv_log_close(one);
    }
    assert_state(t.d, v);
    sv_durable_free(t.d);

    sv_recovery rec;
    ck_assert_msg(sv_durable_open_follower(dir, NULL, 1, &o, reader(logdir), &SHARD, &a.d, &rec, &err) == SV_OK,
                  "%s", err.message);
    ck_assert_uint_eq(rec.snapshot_lsn, 5);
    ck_assert_uint_eq(rec.replayed, 0);
    assert_state(a.d, v);
    sv_durable_free(a.d);
    free(v);
    rm_rf(base);
}
END_TEST

/* A snapshot the log no longer covers (purged past it) with no newer one:
 * the open fails and says so, it never builds on a hole. */
START_TEST(test_follow_purged_past_snapshot)
{
    char base[64], logdir[128], dir[128];
    make_tmp(base, sizeof base);
    snprintf(logdir, sizeof logdir, "%s/log", base);
    snprintf(dir, sizeof dir, "%s/replica", base);
    ck_assert_int_eq(mkdir(logdir, 0755), 0);
    float *v = tu_gaussian(8, DIM, 6);
    sv_log *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_log_local_start(logdir, 1, 0, &w, &err), SV_OK);
    const char *a[2] = {"a", "b"};
    append_add(w, a, 2, v);
    uint64_t sealed = 0;
    ck_assert_int_eq(sv_log_seal(w, &sealed, &err), SV_OK);
    const char *b[2] = {"c", "d"};
    append_add(w, b, 2, v + 2 * DIM);
    ck_assert_int_eq(sv_log_sync(w, 2, &err), SV_OK);
    sv_log_release(w, sealed); /* LSN 1 is gone */
    sv_log_close(w);

    sv_params p = params();
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    ck_assert_int_eq(sv_durable_create_follower(dir, &p, &o, reader(logdir), &SHARD, &d, &err), SV_OK);
    sv_durable_free(d);
    sv_recovery rec;
    ck_assert_int_eq(sv_durable_open_follower(dir, NULL, 1, &o, reader(logdir), &SHARD, &d, &rec, &err),
                     SV_ERR_CORRUPT);
    ck_assert_ptr_null(d);
    ck_assert_msg(strstr(err.message, "no snapshot holds") != NULL, "%s", err.message);
    free(v);
    rm_rf(base);
}
END_TEST

/* A keyed ADD as a router appends it (key wraps the record, follow.h). */
static uint64_t append_keyed(sv_log *log, const char *key, const char *const *ids, size_t n, const float *v)
{
    uint64_t zero[8] = {0};
    uint8_t *head = NULL, kh[64];
    size_t hl = 0, kl = strlen(key);
    uint32_t type = SV_WAL_ADD;
    ck_assert_int_eq(sv_logrec_add_ids(ids, zero, n, DIM, 0, 0, &head, &hl), SV_OK);
    kh[0] = (uint8_t)kl;
    memcpy(kh + 1, key, kl);
    memcpy(kh + 1 + kl, &type, 4);
    struct iovec parts[3] = {{kh, 1 + kl + 4}, {head, hl}, {(void *)v, n * DIM * sizeof(float)}};
    uint64_t lsn = 0;
    sv_error err;
    ck_assert_int_eq(sv_log_append(log, SV_WAL_KEYED, parts, 3, &lsn, &err), SV_OK);
    free(head);
    return lsn;
}

/* A record sent twice with its key (the log's de-duplication missed it):
 * applied once on every replica, answered as the first; also for a
 * follower that starts from a snapshot taken between the two. */
START_TEST(test_follow_keyed_resend)
{
    char base[64], logdir[128], dir[128];
    make_tmp(base, sizeof base);
    snprintf(logdir, sizeof logdir, "%s/log", base);
    snprintf(dir, sizeof dir, "%s/replica", base);
    ck_assert_int_eq(mkdir(logdir, 0755), 0);
    float *v = tu_gaussian(8, DIM, 9);
    sv_log *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_log_local_start(logdir, 1, 0, &w, &err), SV_OK);
    const char *a[2] = {NULL, "given"};
    ck_assert_uint_eq(append_keyed(w, "batch-a:0:0", a, 2, v), 1);
    const char *b[1] = {NULL};
    ck_assert_uint_eq(append_keyed(w, "batch-b:0:0", b, 1, v + 2 * DIM), 2);
    ck_assert_uint_eq(append_keyed(w, "batch-a:0:0", a, 2, v), 3); /* the resend */
    ck_assert_int_eq(sv_log_sync(w, 3, &err), SV_OK);

    sv_params p = params();
    sv_durable_options o = {0};
    applier r = {0};
    sv_log *rd = reader(logdir);
    ck_assert_int_eq(sv_durable_create_follower(dir, &p, &o, rd, &SHARD, &r.d, &err), SV_OK);
    uint64_t last = 0;
    ck_assert_msg(sv_log_read(rd, 0, 0, apply_visit, &r, &last, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(sv_durable_count(r.d), 3); /* not 5 */
    ck_assert_int_eq(r.outcomes[3], SV_OK);
    ck_assert_uint_eq(r.first[3], 1);
    ck_assert_uint_eq(r.first[2], 0);
    /* The snapshot's release would drop the segment with LSNs 1-3 (a
     * stream keeps SV_FOLLOW_WINDOW records below the lowest snapshot): a
     * copy stands in for that. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s.keep'", logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    sv_snapshot_info info;
    ck_assert_int_eq(sv_durable_snapshot(r.d, &info, &err), SV_OK);
    ck_assert_uint_eq(info.lsn, 3);
    sv_durable_free(r.d);
    sv_log_close(w);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s.keep' '%s'", logdir, logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    /* Another resend, after the snapshot: the reopened follower read the
     * records before its snapshot back into its window. */
    ck_assert_int_eq(sv_log_local_start(logdir, 4, 0, &w, &err), SV_OK);
    ck_assert_uint_eq(append_keyed(w, "batch-b:0:0", b, 1, v + 2 * DIM), 4);
    ck_assert_int_eq(sv_log_sync(w, 4, &err), SV_OK);
    sv_log_close(w);
    sv_recovery rec;
    ck_assert_msg(sv_durable_open_follower(dir, NULL, 1, &o, reader(logdir), &SHARD, &r.d, &rec, &err) == SV_OK,
                  "%s", err.message);
    ck_assert_uint_eq(rec.snapshot_lsn, 3);
    ck_assert_uint_eq(rec.last_lsn, 4);
    ck_assert_uint_eq(sv_durable_count(r.d), 3);
    sv_durable_free(r.d);
    free(v);
    rm_rf(base);
}
END_TEST

/* The window is a matter of LSNs: a resend more than SV_FOLLOW_WINDOW
 * records after the first copy is new, one within is a duplicate; a
 * follower that restarted from a snapshot in between decides the same. */
START_TEST(test_follow_window_by_lsn)
{
    char base[64], logdir[128], d1[128], d2[128], cmd[512];
    make_tmp(base, sizeof base);
    snprintf(logdir, sizeof logdir, "%s/log", base);
    snprintf(d1, sizeof d1, "%s/one", base);
    snprintf(d2, sizeof d2, "%s/two", base);
    ck_assert_int_eq(mkdir(logdir, 0755), 0);
    float *v = tu_gaussian(4, DIM, 11);
    sv_log *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_log_local_start(logdir, 1, 0, &w, &err), SV_OK);
    const char *a[1] = {"a"}, *b[1] = {"b"}, *c[1] = {"c"}, *d[1] = {"d"}, *none[1] = {"none"};
    ck_assert_uint_eq(append_keyed(w, "K1", a, 1, v), 1);
    for (uint64_t i = 2; i <= SV_FOLLOW_WINDOW + 1; i++)
        ck_assert_uint_eq(append_delete(w, none, 1), i); /* refused, but they take LSNs */
    ck_assert_uint_eq(append_keyed(w, "K1", b, 1, v + DIM), SV_FOLLOW_WINDOW + 2);     /* 4097 after: new */
    ck_assert_uint_eq(append_keyed(w, "K2", c, 1, v + 2 * DIM), SV_FOLLOW_WINDOW + 3);
    ck_assert_uint_eq(append_keyed(w, "K2", d, 1, v + 3 * DIM), SV_FOLLOW_WINDOW + 4); /* a resend */
    ck_assert_int_eq(sv_log_sync(w, SV_FOLLOW_WINDOW + 4, &err), SV_OK);
    sv_log_close(w);
    sv_params p = params();
    sv_durable_options o = {0};
    /* One follower straight through. */
    applier one = {0};
    sv_log *r1 = reader(logdir);
    ck_assert_int_eq(sv_durable_create_follower(d1, &p, &o, r1, &SHARD, &one.d, &err), SV_OK);
    ck_assert_int_eq(sv_log_read(r1, 0, 0, apply_visit, &one, NULL, &err), SV_OK);
    float got[DIM];
    ck_assert_int_eq(sv_durable_get(one.d, "a", got, DIM, &err), SV_OK);
    ck_assert_int_eq(sv_durable_get(one.d, "b", got, DIM, &err), SV_OK);
    ck_assert_int_eq(sv_durable_get(one.d, "c", got, DIM, &err), SV_OK);
    ck_assert_int_eq(sv_durable_get(one.d, "d", got, DIM, &err), SV_ERR_NOT_FOUND);
    sv_durable_free(one.d);
    /* Another through 3000, a snapshot there, a restart: the same. */
    applier two = {0};
    sv_log *r2 = reader(logdir);
    ck_assert_int_eq(sv_durable_create_follower(d2, &p, &o, r2, &SHARD, &two.d, &err), SV_OK);
    stop_at = 3000;
    ck_assert_int_eq(sv_log_read(r2, 0, 0, apply_until, &two, NULL, &err), SV_ERR_INTERRUPTED);
    stop_at = 0;
    ck_assert_uint_eq(sv_durable_applied(two.d), 3000);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s.keep'", logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    sv_snapshot_info info;
    ck_assert_int_eq(sv_durable_snapshot(two.d, &info, &err), SV_OK);
    sv_durable_free(two.d);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s.keep' '%s'", logdir, logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    sv_recovery rec;
    ck_assert_int_eq(sv_durable_open_follower(d2, NULL, 1, &o, reader(logdir), &SHARD, &two.d, &rec, &err), SV_OK);
    ck_assert_uint_eq(rec.snapshot_lsn, 3000);
    ck_assert_int_eq(sv_durable_get(two.d, "b", got, DIM, &err), SV_OK);
    ck_assert_int_eq(sv_durable_get(two.d, "c", got, DIM, &err), SV_OK);
    ck_assert_int_eq(sv_durable_get(two.d, "d", got, DIM, &err), SV_ERR_NOT_FOUND);
    ck_assert_uint_eq(sv_durable_count(two.d), 3);
    sv_durable_free(two.d);
    free(v);
    rm_rf(base);
}
END_TEST

/* The follower's vectors and its re-ranked searches are the originals:
 * each assigned id's Get returns v's row bit for bit, and a search for it
 * finds it at distance 0 (re-ranked from the originals file). */
static void assert_originals(sv_durable *d, const float *v, size_t n, uint64_t lsn)
{
    sv_error err;
    for (size_t i = 0; i < n; i++) {
        char id[32];
        float got[DIM];
        snprintf(id, sizeof id, "%" PRIu64, sv_follow_assigned_id(&SHARD, lsn + i / 32, (uint32_t)(i % 32)));
        ck_assert_msg(sv_durable_get(d, id, got, DIM, &err) == SV_OK, "%s: %s", id, err.message);
        ck_assert_msg(memcmp(got, v + i * DIM, sizeof got) == 0, "%s: not its original", id);
        sv_hit hits[3];
        size_t nh = 0;
        sv_search_opts so = {.k = 3, .search_list = 64};
        ck_assert_int_eq(sv_durable_search(d, v + i * DIM, DIM, &so, hits, &nh, &err), SV_OK);
        ck_assert_uint_ge(nh, 1);
        ck_assert_str_eq(hits[0].id, id);
        ck_assert_msg(hits[0].distance == 0.0f, "%s: distance %g", id, (double)hits[0].distance);
    }
}

static void copy_file(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    ck_assert_int_eq(system(cmd), 0);
}

/* Originals on disk in cluster mode: a replica that joins from a peer's
 * snapshot takes the peer's originals file with it (what FetchSnapshot
 * carries), checked against the snapshot's codes when it opens; without
 * it, or with a damaged one, it does not open. Replicas rebuilt from the
 * log write their own. */
START_TEST(test_follow_originals_from_peer)
{
    char base[64], logdir[128], one[128], two[128], three[128], snap[160], orig[160], path[256], name[48];
    make_tmp(base, sizeof base);
    snprintf(logdir, sizeof logdir, "%s/log", base);
    snprintf(one, sizeof one, "%s/one", base);
    snprintf(two, sizeof two, "%s/two", base);
    snprintf(three, sizeof three, "%s/three", base);
    snprintf(snap, sizeof snap, "%s/fetched.snap", base);
    snprintf(orig, sizeof orig, "%s/fetched.originals", base);
    ck_assert_int_eq(mkdir(logdir, 0755), 0);
    enum { N = 192 };
    float *v = tu_gaussian(N, DIM, 21);
    sv_log *w = NULL;
    sv_error err;
    ck_assert_int_eq(sv_log_local_start(logdir, 1, 0, &w, &err), SV_OK);
    const char *none[32] = {NULL};
    for (int b = 0; b < N / 32; b++)
        ck_assert_uint_eq(append_add(w, none, 32, v + (size_t)b * 32 * DIM), (uint64_t)b + 1);
    ck_assert_int_eq(sv_log_sync(w, N / 32, &err), SV_OK);
    sv_log_close(w);

    sv_params p = params();
    p.originals = SV_ORIGINALS_DISK;
    sv_durable_options o = {0};
    /* Replica one from the log: the first four batches, flushed, a
     * snapshot at LSN 4 (the log kept aside: the snapshot releases it). */
    applier a = {0};
    sv_log *r = reader(logdir);
    ck_assert_msg(sv_durable_create_follower(one, &p, &o, r, &SHARD, &a.d, &err) == SV_OK, "%s", err.message);
    stop_at = 4;
    ck_assert_int_eq(sv_log_read(r, 0, 0, apply_until, &a, NULL, &err), SV_ERR_INTERRUPTED);
    stop_at = 0;
    ck_assert_int_eq(sv_durable_flush(a.d, &err), SV_OK);
    assert_originals(a.d, v, 4 * 32, 1);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s.keep'", logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    sv_snapshot_info info;
    ck_assert_msg(sv_durable_snapshot(a.d, &info, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(info.lsn, 4);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s.keep' '%s'", logdir, logdir, logdir);
    ck_assert_int_eq(system(cmd), 0);
    /* What a fetch brings: the snapshot and the originals file. */
    sv_snapshot_name(info.lsn, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", one, name);
    copy_file(path, snap);
    snprintf(path, sizeof path, "%s/" SV_ORIGINALS_FILE, one);
    copy_file(path, orig);
    sv_durable_free(a.d);

    /* Without the originals, or with originals for a collection that keeps
     * none: refused, nothing made. */
    struct stat sb;
    ck_assert_int_eq(sv_durable_prepare_follower(two, &p, snap, NULL, info.lsn, &err), SV_ERR_INVALID_ARGUMENT);
    sv_params plain = params();
    ck_assert_int_eq(sv_durable_prepare_follower(two, &plain, snap, orig, info.lsn, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_ne(stat(two, &sb), 0);
    /* Replica two from the peer's files, then the rest of the log. */
    ck_assert_msg(sv_durable_prepare_follower(two, &p, snap, orig, info.lsn, &err) == SV_OK, "%s", err.message);
    sv_recovery rec;
    applier b = {0};
    sv_log *r2 = reader(logdir);
    ck_assert_msg(sv_durable_open_follower(two, NULL, 1, &o, r2, &SHARD, &b.d, &rec, &err) == SV_OK, "%s",
                  err.message);
    ck_assert_uint_eq(rec.snapshot_lsn, 4);
    ck_assert_int_eq(sv_log_read(r2, sv_durable_applied(b.d), 0, apply_visit, &b, NULL, &err), SV_OK);
    ck_assert_uint_eq(sv_durable_applied(b.d), N / 32);
    ck_assert_int_eq(sv_durable_flush(b.d, &err), SV_OK);
    ck_assert_uint_eq(sv_durable_count(b.d), N);
    assert_originals(b.d, v, N, 1);
    sv_durable_free(b.d);

    /* A damaged record in the peer's originals: the open refuses it (the
     * cluster fetches again) instead of re-ranking with wrong vectors. */
    snprintf(path, sizeof path, "%s/" SV_ORIGINALS_FILE, one);
    copy_file(path, orig);
    snprintf(path, sizeof path, "%s/%s", one, name);
    copy_file(path, snap);
    FILE *f = fopen(orig, "r+b");
    ck_assert_ptr_nonnull(f);
    float junk[DIM];
    for (int j = 0; j < DIM; j++)
        junk[j] = 100.0f + (float)j;
    ck_assert_int_eq(fseek(f, 4096L + 7L * DIM * 4 /* the 4 KiB header, then slot 7 */, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(junk, sizeof junk, 1, f), 1);
    fclose(f);
    ck_assert_int_eq(sv_durable_prepare_follower(three, &p, snap, orig, info.lsn, &err), SV_OK);
    sv_durable *d3 = NULL;
    ck_assert_int_eq(sv_durable_open_follower(three, NULL, 1, &o, reader(logdir), &SHARD, &d3, &rec, &err),
                     SV_ERR_CORRUPT);
    ck_assert_ptr_null(d3);
    ck_assert_msg(strstr(err.message, "slot 7 does not match") != NULL, "%s", err.message);

    /* Replica one restarts from its own snapshot and originals. */
    applier c = {0};
    sv_log *r1 = reader(logdir);
    ck_assert_msg(sv_durable_open_follower(one, NULL, 1, &o, r1, &SHARD, &c.d, &rec, &err) == SV_OK, "%s",
                  err.message);
    ck_assert_int_eq(sv_log_read(r1, sv_durable_applied(c.d), 0, apply_visit, &c, NULL, &err), SV_OK);
    ck_assert_int_eq(sv_durable_flush(c.d, &err), SV_OK);
    assert_originals(c.d, v, N, 1);
    sv_durable_free(c.d);
    free(v);
    rm_rf(base);
}
END_TEST

/* The id scheme: unique, at or above 2^62, routed back to its shard; the
 * route is stable (numbers by value, strings by CRC-32C). */
START_TEST(test_follow_ids_and_routes)
{
    for (uint32_t shards = 1; shards <= 7; shards++) {
        for (uint32_t s = 0; s < shards; s++) {
            sv_follow_ids f = {shards, s};
            uint64_t prev = 0;
            for (uint64_t lsn = 1; lsn < 50; lsn += 7) {
                for (uint32_t i = 0; i < 3; i++) {
                    uint64_t id = sv_follow_assigned_id(&f, lsn, i);
                    ck_assert_uint_ge(id, SV_FOLLOW_ASSIGNED_MIN);
                    ck_assert_uint_lt(id, UINT64_C(1) << 63);
                    ck_assert_uint_gt(id, prev);
                    prev = id;
                    char text[24];
                    int n = snprintf(text, sizeof text, "%" PRIu64, id);
                    ck_assert_uint_eq(sv_follow_route(text, (size_t)n, shards), s);
                    ck_assert(!sv_follow_id_allowed(text, (size_t)n));
                }
            }
            ck_assert_uint_eq(sv_follow_assigned_id(&f, 1, SV_FOLLOW_BATCH_MAX), 0);
            ck_assert_uint_eq(sv_follow_assigned_id(&f, UINT64_C(1) << 50, 0), 0);
        }
    }
    ck_assert_uint_eq(sv_follow_route("10", 2, 4), 2);
    ck_assert_uint_eq(sv_follow_route("010", 3, 4), sv_follow_route("010", 3, 4));
    ck_assert(sv_follow_id_allowed("4611686018427387903", 19)); /* 2^62 - 1 */
    ck_assert(!sv_follow_id_allowed("4611686018427387904", 19));
    ck_assert(sv_follow_id_allowed("doc-1", 5));
    /* Strings spread over the shards. */
    unsigned count[4] = {0};
    for (int i = 0; i < 4000; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "doc-%d", i);
        count[sv_follow_route(id, (size_t)n, 4)]++;
    }
    for (int s = 0; s < 4; s++)
        ck_assert_uint_gt(count[s], 800);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("follow");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_follow_apply_snapshot_reopen);
    tcase_add_test(tc, test_follow_purged_past_snapshot);
    tcase_add_test(tc, test_follow_ids_and_routes);
    tcase_add_test(tc, test_follow_keyed_resend);
    tcase_add_test(tc, test_follow_window_by_lsn);
    tcase_add_test(tc, test_follow_originals_from_peer);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
