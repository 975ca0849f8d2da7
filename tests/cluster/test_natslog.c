/*
 * The JetStream log backend (service/cluster/natslog.c) against three real
 * nats-server processes on loopback: the log interface's contract (LSNs,
 * de-duplication by key, reading and following), a follower applying the
 * stream, the purge below the lowest replica's snapshot mark and what a
 * follower does after it, quorum loss (SIGSTOP two of three: appends fail,
 * nothing is acknowledged; a retry with the same key never doubles a
 * record) and the loss of the stream's leader (SIGKILL: appends stall,
 * then go on; 0 lost, 0 doubled; the stall is printed).
 */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "durable.h"
#include "follow.h"
#include "log.h"
#include "logrec.h"
#include "natslog.h"
#include "natsproc.h"
#include "slimvec.h"
#include "testutil.h"

enum { DIM = 4 };

static np_cluster nats;
static svc_nats *conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void setup(void)
{
    ck_assert_msg(np_start(&nats, 3) == 0, "three nats-server processes did not come up");
    svc_nats_config cfg = {.urls = nats.urls, .timeout_ms = 2000};
    sv_error err;
    ck_assert_msg(svc_nats_connect(&cfg, &conn, &err) == SV_OK, "%s", err.message);
}

static void teardown(void)
{
    svc_nats_free(conn);
    conn = NULL;
    np_stop_all(&nats);
}

/* Two replicas, r0 and r1, as the cluster's marks in etcd would hold
 * them (one stream at a time here): the lowest once both have one. */
static uint64_t marks[2];
static int marked[2];

static sv_status mark(void *ctx, const char *name, uint64_t lsn, uint64_t *lowest, sv_error *err)
{
    (void)name;
    int who = *(const char *)ctx == '0';
    marks[who] = lsn;
    marked[who] = 1;
    *lowest = marked[0] && marked[1] ? (marks[0] < marks[1] ? marks[0] : marks[1]) : 0;
    return sv_ok(err);
}

static sv_log *open_log(const char *name, const char *set)
{
    svc_natslog_config cfg = {.name = name, .replicas = 3, .create = 1, .mark = set ? mark : NULL,
                              .mark_ctx = set ? (void *)(set + 1) : NULL};
    sv_log *log = NULL;
    sv_error err;
    /* The meta leader may still be settling right after start. */
    for (int i = 0; i < 50; i++) {
        if (svc_natslog_open(conn, &cfg, &log, &err) == SV_OK)
            return log;
        usleep(200000);
    }
    ck_abort_msg("opening %s: %s", name, err.message);
    return NULL;
}

/* An ADD of n vectors as a router appends it; ids[i] NULL: assigned. */
static sv_status append_add(sv_log *log, const char *key, const char *const *ids, size_t n, const float *v,
                            uint64_t *lsn, int *dup, sv_error *err)
{
    uint64_t zero[8] = {0};
    uint8_t *head = NULL;
    size_t hl = 0;
    ck_assert_int_eq(sv_logrec_add_ids(ids, zero, n, DIM, 0, 0, &head, &hl), SV_OK);
    struct iovec parts[2] = {{head, hl}, {(void *)v, n * DIM * sizeof(float)}};
    sv_status st = sv_log_append_keyed(log, SV_WAL_ADD, key, parts, 2, lsn, dup, err);
    free(head);
    return st;
}

typedef struct applier {
    sv_durable *d;
    uint64_t seen;
    sv_status outcome[16];
} applier;

static sv_status apply_visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    applier *a = ctx;
    sv_follow_result res;
    sv_status st = sv_durable_apply(a->d, type, lsn, p, len, &res, err);
    sv_status outcome = res.outcome;
    if (lsn < 16)
        a->outcome[lsn] = outcome;
    a->seen++;
    return st;
}

static void tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/sv-natslog-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(out));
}

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
}

static const sv_follow_ids SHARD = {2, 0};

START_TEST(test_natslog_contract_follow_purge)
{
    sv_error err;
    sv_log *w = open_log("contract", NULL);
    float *v = tu_gaussian(16, DIM, 3);
    uint64_t lsn = 0;
    int dup = -1;
    const char *a[3] = {"a", NULL, "b"};
    ck_assert_int_eq(append_add(w, "batch-1", a, 3, v, &lsn, &dup, &err), SV_OK);
    ck_assert_uint_eq(lsn, 1);
    ck_assert_int_eq(dup, 0);
    /* The same key again (a retry): no second record, the first LSN. */
    ck_assert_int_eq(append_add(w, "batch-1", a, 3, v, &lsn, &dup, &err), SV_OK);
    ck_assert_uint_eq(lsn, 1);
    ck_assert_int_eq(dup, 1);
    const char *b[2] = {"c", "a"}; /* a exists: refused on every replica */
    ck_assert_int_eq(append_add(w, "batch-2", b, 2, v + 3 * DIM, &lsn, &dup, &err), SV_OK);
    ck_assert_uint_eq(lsn, 2);
    ck_assert_uint_eq(sv_log_last(w), 2);

    /* A follower in replica set r0 applies what is there, then follows. */
    char base[64], d0[128], d1[128];
    tmpdir(base, sizeof base);
    snprintf(d0, sizeof d0, "%s/r0", base);
    snprintf(d1, sizeof d1, "%s/r1", base);
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 0;
    sv_durable_options o = {0};
    applier r0 = {0};
    sv_log *l0 = open_log("contract", "r0");
    ck_assert_int_eq(sv_durable_create_follower(d0, &p, &o, l0, &SHARD, &r0.d, &err), SV_OK);
    uint64_t last = 0;
    ck_assert_msg(sv_log_read(l0, 0, 1000, apply_visit, &r0, &last, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(last, 2);
    ck_assert_int_eq(r0.outcome[1], SV_OK);
    ck_assert_int_eq(r0.outcome[2], SV_ERR_ALREADY_EXISTS);
    ck_assert_uint_eq(sv_durable_count(r0.d), 3);
    char id[24];
    snprintf(id, sizeof id, "%" PRIu64, sv_follow_assigned_id(&SHARD, 1, 1));
    float got[DIM];
    ck_assert_int_eq(sv_durable_get(r0.d, id, got, DIM, &err), SV_OK);
    ck_assert(fabsf(got[0] - v[DIM]) < 0.05f);
    /* Nothing new: the read waits, then returns where it was. */
    double t0 = now_s();
    ck_assert_int_eq(sv_log_read(l0, 2, 300, apply_visit, &r0, &last, &err), SV_OK);
    ck_assert_uint_eq(last, 2);
    ck_assert_double_ge(now_s() - t0, 0.25);
    for (int i = 0; i < 3; i++) {
        const char *c[1] = {NULL};
        char key[16];
        snprintf(key, sizeof key, "batch-%d", 3 + i);
        ck_assert_int_eq(append_add(w, key, c, 1, v + (5 + i) * DIM, &lsn, &dup, &err), SV_OK);
    }
    ck_assert_int_eq(sv_log_read(l0, 2, 1000, apply_visit, &r0, &last, &err), SV_OK);
    ck_assert_uint_eq(last, 5);
    ck_assert_uint_eq(sv_durable_count(r0.d), 6);

    /* r0 snapshots at 5: no purge while r1 has no snapshot. */
    sv_snapshot_info info;
    ck_assert_int_eq(sv_durable_snapshot(r0.d, &info, &err), SV_OK);
    ck_assert_uint_eq(info.lsn, 5);
    char why[200];
    ck_assert(sv_log_covers(w, 0, why, sizeof why));
    /* r1 applies through 3 and snapshots there: purged below 4. */
    applier r1 = {0};
    sv_log *l1 = open_log("contract", "r1");
    ck_assert_int_eq(sv_durable_create_follower(d1, &p, &o, l1, &SHARD, &r1.d, &err), SV_OK);
    for (uint64_t after = 0; after < 3;) {
        ck_assert_int_eq(sv_log_read(l1, after, 1000, apply_visit, &r1, &last, &err), SV_OK);
        if (last >= 3)
            break;
        after = last;
    }
    ck_assert_int_eq(sv_durable_snapshot(r1.d, &info, &err), SV_OK);
    ck_assert_uint_ge(info.lsn, 3);
    uint64_t r1_lsn = info.lsn;
    if (r1_lsn < 5) {
        ck_assert(!sv_log_covers(w, r1_lsn - 1, why, sizeof why));
        ck_assert_msg(strstr(why, "purged") != NULL, "%s", why);
    }
    ck_assert(sv_log_covers(w, r1_lsn, why, sizeof why));
    sv_durable_free(r1.d);
    sv_durable_free(r0.d);

    /* Reopen r0: its snapshot + the tail. A new replica from nothing
     * cannot build on the purged stream and says so. */
    const char *c[1] = {"late"};
    ck_assert_int_eq(append_add(w, "batch-9", c, 1, v + 9 * DIM, &lsn, &dup, &err), SV_OK);
    sv_recovery rec;
    ck_assert_msg(sv_durable_open_follower(d0, NULL, 1, &o, open_log("contract", "r0"), &SHARD, &r0.d, &rec,
                                           &err) == SV_OK,
                  "%s", err.message);
    ck_assert_uint_eq(rec.snapshot_lsn, 5);
    ck_assert_uint_eq(rec.last_lsn, 6);
    ck_assert_uint_eq(sv_durable_count(r0.d), 7);
    ck_assert_int_eq(sv_durable_get(r0.d, "late", got, DIM, &err), SV_OK);
    sv_durable_free(r0.d);
    if (r1_lsn < 6) {
        sv_durable *fresh = NULL;
        char d2[128];
        snprintf(d2, sizeof d2, "%s/fresh", base);
        sv_log *l2 = open_log("contract", "r0");
        ck_assert_int_eq(sv_durable_create_follower(d2, &p, &o, l2, &SHARD, &fresh, &err), SV_OK);
        applier f = {.d = fresh};
        ck_assert_int_eq(sv_log_read(l2, 0, 1000, apply_visit, &f, &last, &err), SV_ERR_CORRUPT);
        ck_assert_msg(strstr(err.message, "purged") != NULL, "%s", err.message);
        ck_assert_uint_eq(sv_durable_count(fresh), 0);
        sv_durable_free(fresh);
    }
    sv_log_close(w);
    ck_assert_int_eq(svc_natslog_delete(conn, "contract", &err), SV_OK);
    free(v);
    rm_rf(base);
}
END_TEST

/* How many records hold each marker (a vector's first component, 0..63),
 * counted by reading the whole stream. */
typedef struct counter {
    int copies[64]; /* by marker 0..63 */
    uint64_t records;
} counter;

static sv_status count_visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len, sv_error *err)
{
    counter *c = ctx;
    (void)lsn;
    c->records++;
    if (type != SV_WAL_ADD)
        return SV_OK;
    sv_logrec rec;
    if (sv_logrec_decode_add(p, len, &rec, err) != SV_OK)
        return SV_ERR_CORRUPT;
    if (rec.n && rec.vectors[0] >= 0 && rec.vectors[0] < 64)
        c->copies[(int)rec.vectors[0]]++;
    sv_logrec_release(&rec);
    return SV_OK;
}

static void count_copies(const char *name, counter *c)
{
    sv_log *r = open_log(name, NULL);
    memset(c, 0, sizeof *c);
    uint64_t last = 0, after = 0;
    sv_error err;
    uint64_t end = sv_log_last(r);
    ck_assert_uint_gt(end, 0);
    double t0 = now_s();
    /* Right after a server came back the stream may refuse a new consumer
     * for a moment ("temporarily unavailable"): retry those. */
    while (after < end) {
        sv_status st = sv_log_read(r, after, 2000, count_visit, c, &last, &err);
        ck_assert_msg(st == SV_OK || (st == SV_ERR_IO && now_s() - t0 < 30), "%s", err.message);
        if (st != SV_OK)
            usleep(200000);
        after = last;
    }
    ck_assert_uint_eq(c->records, end);
    sv_log_close(r);
}

/* Appends with a key until one is acknowledged; seconds spent. */
static double append_until_acked(sv_log *w, const char *key, const float *vec, double limit_s)
{
    double t0 = now_s();
    sv_error err;
    uint64_t lsn;
    int dup;
    const char *ids[1] = {NULL};
    while (append_add(w, key, ids, 1, vec, &lsn, &dup, &err) != SV_OK) {
        ck_assert_msg(err.code == SV_ERR_IO, "%s", err.message);
        ck_assert_msg(now_s() - t0 < limit_s, "no acknowledgement in %.0f s: %s", limit_s, err.message);
        usleep(100000);
    }
    return now_s() - t0;
}

START_TEST(test_natslog_quorum_loss)
{
    sv_log *w = open_log("quorum", NULL);
    float vec[DIM] = {1, 0, 0, 0};
    append_until_acked(w, "q-1", vec, 10);
    /* One of three stopped: appends go on. */
    np_pause(&nats, 2);
    vec[0] = 2;
    append_until_acked(w, "q-2", vec, 15);
    /* Two of three stopped: no quorum, no acknowledgement (IO: gRPC
     * UNAVAILABLE at the router). */
    np_pause(&nats, 1);
    vec[0] = 3;
    sv_error err;
    uint64_t lsn;
    int dup;
    const char *ids[1] = {NULL};
    int refused = 0;
    for (int i = 0; i < 3; i++) {
        lsn = 0;
        dup = -1;
        sv_status st = append_add(w, "q-3", ids, 1, vec, &lsn, &dup, &err);
        refused += st == SV_ERR_IO;
        ck_assert_msg(st == SV_ERR_IO, "try %d with two of three stopped: status %d, LSN %" PRIu64 ", duplicate %d (%s)", i,
                      st, lsn, dup, st == SV_OK ? "acknowledged" : err.message);
    }
    ck_assert_int_eq(refused, 3);
    np_resume(&nats, 1);
    np_resume(&nats, 2);
    /* The client retries with the same key: whatever the stopped servers
     * had taken, the record is there exactly once. */
    double stall = append_until_acked(w, "q-3", vec, 30);
    printf("natslog: quorum back, the retried append took %.2f s\n", stall);
    sv_log_close(w);
    counter c;
    count_copies("quorum", &c);
    ck_assert_uint_eq(c.records, 3);
    for (int m = 1; m <= 3; m++)
        ck_assert_int_eq(c.copies[m], 1);
}
END_TEST

static int stream_leader(const char *stream)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    int idx = -1;
    if (natsConnection_ConnectTo(&nc, nats.urls) == NATS_OK && natsConnection_JetStream(&js, nc, NULL) == NATS_OK &&
        js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK && si->Cluster)
        idx = np_index(&nats, si->Cluster->Leader);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return idx;
}

START_TEST(test_natslog_leader_killed)
{
    sv_log *w = open_log("leader", NULL);
    float vec[DIM] = {0, 0, 0, 0};
    char key[32];
    for (int i = 0; i < 20; i++) {
        vec[0] = (float)i;
        snprintf(key, sizeof key, "l-%d", i);
        append_until_acked(w, key, vec, 10);
    }
    int leader = stream_leader("SV_leader");
    ck_assert_int_ge(leader, 0);
    np_kill(&nats, leader);
    double worst = 0;
    for (int i = 20; i < 40; i++) {
        vec[0] = (float)i;
        snprintf(key, sizeof key, "l-%d", i);
        double s = append_until_acked(w, key, vec, 30);
        worst = s > worst ? s : worst;
    }
    printf("natslog: stream leader n%d killed: longest append stall %.2f s\n", leader, worst);
    ck_assert_int_eq(np_restart(&nats, leader), 0);
    sv_log_close(w);
    counter c;
    count_copies("leader", &c);
    ck_assert_uint_eq(c.records, 40); /* 0 lost, 0 doubled */
    for (int m = 0; m < 40; m++)
        ck_assert_int_eq(c.copies[m], 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("natslog");
    TCase *tc = tcase_create("jetstream");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_natslog_contract_follow_purge);
    tcase_add_test(tc, test_natslog_quorum_loss);
    tcase_add_test(tc, test_natslog_leader_killed);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
