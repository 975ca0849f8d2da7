/*
 * The graph layer under the collection: the validator finds every kind of
 * broken graph (so tests that call it can fail), and inserts keep degrees
 * within R and lists sized to what they hold.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "edges.h"
#include "graph.h"
#include "store.h"
#include "testutil.h"

typedef struct fixture {
    sv_tally tv, te, tg;
    sv_store *store;
    sv_edges *edges;
    sv_graph g;
    sv_scratch s;
    uint32_t n;
} fixture;

static void build(fixture *f, uint32_t n, uint32_t dim, uint32_t R)
{
    memset(f, 0, sizeof *f);
    const sv_allocator *a = sv_allocator_default();
    f->store = sv_store_create(a, &f->tv, dim, SV_STORAGE_INT8, SV_METRIC_L2);
    f->edges = sv_edges_create(a, &f->te);
    ck_assert_ptr_nonnull(f->store);
    ck_assert_ptr_nonnull(f->edges);
    sv_graph_init(&f->g, a, &f->tg, f->store, f->edges, R, 2 * R, 1.2f);
    sv_scratch_init(&f->s, a, NULL);
    float *v = tu_gaussian(n, dim, 42);
    ck_assert(sv_store_train(f->store, v, n) == SV_OK);
    ck_assert(sv_store_reserve(f->store, n) == SV_OK);
    ck_assert(sv_edges_reserve(f->edges, n) == SV_OK);
    ck_assert(sv_graph_reserve(&f->g, n) == SV_OK);
    for (uint32_t i = 0; i < n; i++) {
        sv_store_put(f->store, i, v + (size_t)i * dim);
        sv_graph_set_state(&f->g, i, SV_SLOT_INDEXED);
    }
    /* Mark all indexed first: the prune only links to indexed/buffered nodes. */
    for (uint32_t i = 0; i < n; i++) {
        sv_graph_set_entry_if_empty(&f->g, i);
        ck_assert(sv_graph_insert(&f->g, i, v + (size_t)i * dim, &f->s) == SV_OK);
    }
    for (uint32_t i = 0; i < n; i++) /* as a flush does: lists back to R */
        ck_assert(sv_graph_tighten(&f->g, i, &f->s) == SV_OK);
    uint32_t linked = 0;
    ck_assert(sv_graph_connect(&f->g, n, &f->s, &linked) == SV_OK);
    f->n = n;
    free(v);
}

static void teardown(fixture *f)
{
    sv_scratch_release(&f->s);
    sv_graph_release(&f->g);
    sv_edges_free(f->edges);
    sv_store_free(f->store);
    ck_assert_int_eq(sv_tally_get(&f->te), 0);
    ck_assert_int_eq(sv_tally_get(&f->tv), 0);
}

static void expect_invalid(fixture *f, const char *needle)
{
    char msg[200] = "";
    sv_status st = sv_graph_validate(&f->g, f->n, msg, sizeof msg);
    ck_assert_msg(st == SV_ERR_INTERNAL, "validator missed: %s", needle);
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
}

static void expect_valid(fixture *f)
{
    char msg[200] = "";
    sv_status st = sv_graph_validate(&f->g, f->n, msg, sizeof msg);
    ck_assert_msg(st == SV_OK, "validate: %s", msg);
}

/* Replace slot's list, keeping the old one to put back. */
static uint32_t save(fixture *f, uint32_t slot, uint32_t *keep)
{
    uint32_t count = 0;
    uint32_t ids_buf[SV_R_MAX];
    count = sv_edges_get(f->edges, slot, ids_buf);
    const uint32_t *ids = ids_buf;
    memcpy(keep, ids, count * sizeof *keep);
    return count;
}

static void put(fixture *f, uint32_t slot, const uint32_t *ids, uint32_t n)
{
    sv_edges_lock(f->edges, slot);
    ck_assert(sv_edges_set(f->edges, slot, ids, n) == SV_OK);
    sv_edges_unlock(f->edges, slot);
}

START_TEST(test_validator_catches_breakage)
{
    fixture f;
    build(&f, 600, 16, 12);
    expect_valid(&f);
    uint32_t keep[SV_R_MAX], bad[SV_R_MAX];
    uint32_t n = save(&f, 7, keep);
    ck_assert_uint_gt(n, 1);

    memcpy(bad, keep, n * sizeof *bad);
    bad[0] = 7;
    put(&f, 7, bad, n);
    expect_invalid(&f, "self-loop");

    memcpy(bad, keep, n * sizeof *bad);
    bad[1] = bad[0];
    put(&f, 7, bad, n);
    expect_invalid(&f, "duplicate edge");

    /* Over R is allowed up to the inserts' slack (a flush whose tighten ran
     * out of memory leaves such lists), not past it. */
    uint32_t over = sv_graph_max_degree(&f.g) + 1;
    for (uint32_t i = 0; i < over; i++)
        bad[i] = (7 + 1 + i) % f.n;
    put(&f, 7, bad, over);
    char want[64];
    snprintf(want, sizeof want, "degree %u >", over);
    expect_invalid(&f, want);

    memcpy(bad, keep, n * sizeof *bad);
    bad[0] = f.n + 5;
    put(&f, 7, bad, n);
    expect_invalid(&f, "out of range");

    put(&f, 7, keep, n);
    sv_graph_set_state(&f.g, keep[0], SV_SLOT_FREE);
    expect_invalid(&f, "in state 0");
    sv_graph_set_state(&f.g, keep[0], SV_SLOT_INDEXED);
    expect_valid(&f);

    /* Cut every in-edge of one node: unreachable. */
    uint32_t victim = 123;
    for (uint32_t u = 0; u < f.n; u++) {
        uint32_t c = 0;
        uint32_t ids_buf[SV_R_MAX];
        c = sv_edges_get(f.edges, u, ids_buf);
        const uint32_t *ids = ids_buf;
        uint32_t out[SV_R_MAX], m = 0;
        int had = 0;
        for (uint32_t i = 0; i < c; i++) {
            if (ids[i] == victim)
                had = 1;
            else
                out[m++] = ids[i];
        }
        if (had)
            put(&f, u, out, m);
    }
    if (atomic_load(&f.g.entry) == victim)
        atomic_store(&f.g.entry, 0);
    expect_invalid(&f, "not reachable");
    /* The repair links it back. */
    uint32_t linked = 0;
    ck_assert(sv_graph_connect(&f.g, f.n, &f.s, &linked) == SV_OK);
    ck_assert_uint_ge(linked, 1);
    expect_valid(&f);
    sv_edges_reclaim(f.edges);
    teardown(&f);
}
END_TEST

START_TEST(test_lists_sized_to_degree)
{
    fixture f;
    build(&f, 1500, 24, 20);
    expect_valid(&f);
    uint64_t bytes = 0, deg = 0;
    for (uint32_t u = 0; u < f.n; u++) {
        uint32_t c = sv_edges_count(f.edges, u), ids[SV_R_MAX];
        ck_assert_uint_le(c, 20);
        ck_assert_uint_eq(sv_edges_get(f.edges, u, ids), c);
        for (uint32_t i = 1; i < c; i++)
            ck_assert_uint_lt(ids[i - 1], ids[i]); /* sorted, distinct */
        deg += c;
        bytes += sv_edges_bytes(f.edges, u);
    }
    /* Bit-packed: 1,500 slots need 11 bits an edge, not 32 (whole 8-byte
     * words per list: at most 8 bytes of padding each). */
    ck_assert_uint_le(bytes, deg * 11 / 8 + (uint64_t)f.n * 8);
    ck_assert_uint_lt(bytes, deg * 4 / 2);
    /* Packed (as a flush leaves them once replaced blocks pile up), the
     * tally is the slabs (the lists plus at most a sixteenth more plus the
     * first slab's 4 KiB), their table and the handle chunks. */
    ck_assert(sv_edges_repack(f.edges, f.n, 1) == SV_OK);
    ck_assert_uint_le(sv_edges_space_bytes(f.edges), bytes + bytes / 16 + 4096 + 8);
    long long expect = (long long)sv_edges_space_bytes(f.edges) + (long long)((f.n + 2047) / 2048) * 2048 * 4;
    ck_assert_int_ge(sv_tally_get(&f.te), expect);
    ck_assert_int_lt(sv_tally_get(&f.te), expect + 16384);
    teardown(&f);
}
END_TEST

/* Bit-packed lists round-trip whatever the ids: wide gaps, neighbours,
 * slot 0, the largest slots, one id, R_MAX ids. */
START_TEST(test_lists_round_trip)
{
    sv_tally t = {0};
    sv_edges *e = sv_edges_create(sv_allocator_default(), &t);
    ck_assert_ptr_nonnull(e);
    ck_assert(sv_edges_reserve(e, 4) == SV_OK);
    uint64_t rng = 42;
    for (int round = 0; round < 2000; round++) {
        uint32_t n = 1 + (uint32_t)(rng % SV_R_MAX), ids[SV_R_MAX], got[SV_R_MAX];
        for (uint32_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t span = round % 4 == 0 ? UINT32_MAX - 1 : round % 4 == 1 ? 300 : 1u << (round % 31);
            ids[i] = (uint32_t)(rng >> 33) % span;
            for (uint32_t k = 0; k < i; k++)
                if (ids[k] == ids[i]) {
                    ids[i] = UINT32_MAX - 1 - i; /* distinct */
                    break;
                }
        }
        if (round == 7)
            ids[0] = 0;
        uint32_t slot = (uint32_t)round % 4;
        ck_assert(sv_edges_set(e, slot, ids, n) == SV_OK);
        ck_assert_uint_eq(sv_edges_get(e, slot, got), n);
        for (uint32_t i = 0; i < n; i++) {
            int found = 0;
            for (uint32_t k = 0; k < n && !found; k++)
                found = got[k] == ids[i];
            ck_assert_msg(found, "round %d: id %u lost", round, ids[i]);
        }
        for (uint32_t i = 1; i < n; i++)
            ck_assert_uint_lt(got[i - 1], got[i]);
        if (round % 64 == 0)
            sv_edges_reclaim(e);
    }
    sv_edges_free(e);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* Drop every edge into any of the given nodes. */
static void cut_in_edges(fixture *f, const uint32_t *victims, uint32_t nv)
{
    for (uint32_t u = 0; u < f->n; u++) {
        uint32_t c = 0;
        uint32_t ids_buf[SV_R_MAX];
        c = sv_edges_get(f->edges, u, ids_buf);
        const uint32_t *ids = ids_buf;
        uint32_t out[SV_R_MAX], m = 0;
        for (uint32_t i = 0; i < c; i++) {
            int hit = 0;
            for (uint32_t k = 0; k < nv; k++)
                hit |= ids[i] == victims[k];
            if (!hit)
                out[m++] = ids[i];
        }
        if (m != c)
            put(f, u, out, m);
    }
}

/* Two cut-off nodes where b is only reachable through a: linking a must
 * reach b too, with one new edge and no duplicate. */
START_TEST(test_connect_links_once)
{
    fixture f;
    build(&f, 800, 16, 12);
    uint32_t v[2] = {200, 300};
    if (atomic_load(&f.g.entry) == v[0] || atomic_load(&f.g.entry) == v[1])
        atomic_store(&f.g.entry, 0);
    cut_in_edges(&f, v, 2);
    uint32_t keep[SV_R_MAX];
    uint32_t n = save(&f, v[0], keep);
    keep[n > 0 ? n - 1 : 0] = v[1]; /* a -> b */
    put(&f, v[0], keep, n > 0 ? n : 1);
    expect_invalid(&f, "not reachable");
    uint32_t linked = 0;
    ck_assert(sv_graph_connect(&f.g, f.n, &f.s, &linked) == SV_OK);
    ck_assert_uint_eq(linked, 1);
    expect_valid(&f);
    sv_edges_reclaim(f.edges);
    teardown(&f);
}
END_TEST

/*
 * Every reached node full, and two cut-off nodes a and b whose nearest node
 * is the same, v. The first connect replaced v's last edge, which was the
 * edge it had just given a when it came to b: a and b took the slot from
 * each other every round until the cap of 16 rounds, and one stayed
 * unreachable (the 1M one-flush failure in miniature). Connect must link
 * both in one pass, replacing only edges whose targets keep another way in.
 *
 *   2-D points, R = 2, entry 0:   2 (-10,10)      0 (10,10)
 *                                     b (-1,0) 3 (0,0) a (1,0)   5 (20,0)
 *                                 4 (-10,-10)     1 (10,-10)
 */
START_TEST(test_connect_full_neighbours)
{
    const sv_allocator *al = sv_allocator_default();
    fixture f;
    memset(&f, 0, sizeof f);
    f.n = 8;
    sv_store *store = f.store = sv_store_create(al, &f.tv, 2, SV_STORAGE_F32, SV_METRIC_L2);
    sv_edges *edges = f.edges = sv_edges_create(al, &f.te);
    ck_assert_ptr_nonnull(store);
    ck_assert_ptr_nonnull(edges);
    sv_graph_init(&f.g, al, &f.tg, store, edges, 2, 16, 1.0f);
    sv_scratch_init(&f.s, al, NULL);
    ck_assert(sv_store_reserve(store, f.n) == SV_OK);
    ck_assert(sv_edges_reserve(edges, f.n) == SV_OK);
    ck_assert(sv_graph_reserve(&f.g, f.n) == SV_OK);
    static const float pos[8][2] = {{10, 10}, {10, -10}, {-10, 10}, {0, 0},
                                    {-10, -10}, {20, 0}, {1, 0}, {-1, 0}};
    static const uint32_t out[8][2] = {{1, 2}, {2, 3}, {3, 4}, {4, 5},
                                       {5, 0}, {0, 1}, {3, 4}, {3, 2}};
    for (uint32_t i = 0; i < f.n; i++) {
        sv_store_put(store, i, pos[i]);
        sv_graph_set_state(&f.g, i, SV_SLOT_INDEXED);
        put(&f, i, out[i], 2);
    }
    sv_graph_set_entry_if_empty(&f.g, 0);
    expect_invalid(&f, "not reachable");

    uint32_t linked = 0;
    ck_assert(sv_graph_connect(&f.g, f.n, &f.s, &linked) == SV_OK);
    expect_valid(&f); /* degrees <= R and everything reachable */
    ck_assert_uint_eq(linked, 2);
    ck_assert_uint_eq(f.g.last_connect.unreachable_before, 2);
    ck_assert_uint_eq(f.g.last_connect.unreachable_after, 0);
    ck_assert_uint_eq(f.g.last_connect.rounds, 1);
    ck_assert_uint_eq(f.g.last_connect.replaced, 2);
    /* v = 3 gave up its spare edges (to 4 and 5, which keep 2 -> 4 and
     * 4 -> 5), not the one it had just given a. */
    uint32_t c = 0;
    uint32_t ids_buf[SV_R_MAX];
    c = sv_edges_get(edges, 3, ids_buf);
    const uint32_t *ids = ids_buf;
    ck_assert_uint_eq(c, 2);
    ck_assert((ids[0] == 6 && ids[1] == 7) || (ids[0] == 7 && ids[1] == 6));
    sv_edges_reclaim(edges);
    teardown(&f);
}
END_TEST

/* A larger version: every node that the entry reaches is topped up to R
 * edges and a fifth of the nodes lose every in-edge, so each one connect
 * links costs someone an edge. One pass, nothing left, degrees <= R. */
START_TEST(test_connect_all_full)
{
    fixture f;
    build(&f, 800, 16, 12);
    uint32_t entry = atomic_load(&f.g.entry);
    uint32_t victims[160] = {0}, nv = 0;
    for (uint32_t u = 3; u < f.n && nv < 160; u += 5)
        if (u != entry)
            victims[nv++] = u;
    cut_in_edges(&f, victims, nv);
    uint8_t *is_victim = calloc(f.n, 1);
    ck_assert_ptr_nonnull(is_victim);
    for (uint32_t i = 0; i < nv; i++)
        is_victim[victims[i]] = 1;
    uint64_t rng = 7;
    for (uint32_t u = 0; u < f.n; u++) {
        if (is_victim[u])
            continue;
        uint32_t keep[SV_R_MAX];
        uint32_t n = save(&f, u, keep);
        while (n < 12) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t w = (uint32_t)(rng >> 33) % f.n;
            int dup = w == u || is_victim[w];
            for (uint32_t i = 0; i < n && !dup; i++)
                dup = keep[i] == w;
            if (!dup)
                keep[n++] = w;
        }
        put(&f, u, keep, n);
    }
    expect_invalid(&f, "not reachable");
    uint32_t linked = 0;
    ck_assert(sv_graph_connect(&f.g, f.n, &f.s, &linked) == SV_OK);
    expect_valid(&f);
    ck_assert_uint_eq(f.g.last_connect.unreachable_after, 0);
    ck_assert_uint_eq(f.g.last_connect.rounds, 1);
    ck_assert_uint_ge(f.g.last_connect.replaced, 1);
    /* A second call finds nothing to do. */
    ck_assert(sv_graph_connect(&f.g, f.n, &f.s, &linked) == SV_OK);
    ck_assert_uint_eq(linked, 0);
    ck_assert_uint_eq(f.g.last_connect.rounds, 0);
    free(is_victim);
    sv_edges_reclaim(f.edges);
    teardown(&f);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_validator_catches_breakage);
    tcase_add_test(tc, test_lists_sized_to_degree);
    tcase_add_test(tc, test_lists_round_trip);
    tcase_add_test(tc, test_connect_links_once);
    tcase_add_test(tc, test_connect_full_neighbours);
    tcase_add_test(tc, test_connect_all_full);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
