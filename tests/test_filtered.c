/*
 * Filtered search in a collection: payloads set with the vectors, recall
 * against exact filtered answers at selectivities from 50% to 0.1% (the
 * graph with the filter inside it for broad filters, a scan for narrow
 * ones), every hit passing, k hits whenever k pass; buffered vectors,
 * deletes, patched payloads and compaction; count; refusals.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slimvec.h"
#include "testutil.h"

enum { DIM = 24, N = 20000, EXTRA = 600, NQ = 100, K = 10 };

static const char *const CLASSES[10] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"};

typedef struct row {
    int cls;
    int64_t u;
    int live;
} row;

static row rows[N + EXTRA];

static sv_payload payload_of(int i, sv_pv_field f[2])
{
    f[0] = (sv_pv_field){.key = "class", .type = SV_PV_STRING, .s = CLASSES[rows[i].cls]};
    f[1] = (sv_pv_field){.key = "u", .type = SV_PV_INT, .i = rows[i].u};
    return (sv_payload){f, 2};
}

/* Which filter: 0 u < 500 (50%), 1 class c3 (10%), 2 u < 10 (1%), 3 u == 7
 * (0.1%), 4 class c3 or c4 and not u >= 900 (~16%). */
static int passes(int which, const row *r)
{
    switch (which) {
    case 0: return r->u < 500;
    case 1: return r->cls == 3;
    case 2: return r->u < 10;
    case 3: return r->u == 7;
    default: return (r->cls == 3 || r->cls == 4) && !(r->u >= 900);
    }
}

static sv_cond conds[8];
static sv_pv_field vals[4];
static sv_filter filters[5];
static sv_filter nested;

static void make_filters(void)
{
    conds[0] = (sv_cond){.kind = SV_COND_RANGE, .key = "u", .hi = {.set = 1, .is_int = 1, .i = 500}};
    vals[0] = (sv_pv_field){.type = SV_PV_STRING, .s = "c3"};
    conds[1] = (sv_cond){.kind = SV_COND_MATCH, .key = "class", .value = vals[0]};
    conds[2] = (sv_cond){.kind = SV_COND_RANGE, .key = "u", .hi = {.set = 1, .is_int = 1, .i = 10}};
    conds[3] = (sv_cond){.kind = SV_COND_MATCH, .key = "u", .value = {.type = SV_PV_INT, .i = 7}};
    vals[1] = (sv_pv_field){.type = SV_PV_STRING, .s = "c3"};
    vals[2] = (sv_pv_field){.type = SV_PV_STRING, .s = "c4"};
    conds[4] = (sv_cond){.kind = SV_COND_MATCH_ANY, .key = "class", .any = &vals[1], .n_any = 2};
    conds[5] = (sv_cond){.kind = SV_COND_RANGE, .key = "u", .lo = {.set = 1, .inclusive = 1, .is_int = 1, .i = 900}};
    nested = (sv_filter){.must_not = &conds[5], .n_must_not = 1};
    conds[6] = (sv_cond){.kind = SV_COND_FILTER, .sub = &nested};
    filters[0] = (sv_filter){.must = &conds[0], .n_must = 1};
    filters[1] = (sv_filter){.must = &conds[1], .n_must = 1};
    filters[2] = (sv_filter){.must = &conds[2], .n_must = 1};
    filters[3] = (sv_filter){.must = &conds[3], .n_must = 1};
    filters[4] = (sv_filter){.should = &conds[4], .n_should = 1, .must = &conds[6], .n_must = 1};
}

static float l2(const float *a, const float *b)
{
    float s = 0;
    for (int j = 0; j < DIM; j++)
        s += (a[j] - b[j]) * (a[j] - b[j]);
    return s;
}

/* Exact filtered top k of a query among live rows [0, n). */
static int exact(const float *base, int n, const float *q, int which, int *out)
{
    float best[K];
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        if (!rows[i].live || !passes(which, &rows[i]))
            continue;
        float d = l2(base + (size_t)i * DIM, q);
        if (cnt == K && d >= best[K - 1])
            continue;
        int p = cnt < K ? cnt++ : K - 1;
        while (p > 0 && best[p - 1] > d) {
            best[p] = best[p - 1];
            out[p] = out[p - 1];
            p--;
        }
        best[p] = d;
        out[p] = i;
    }
    return cnt;
}

/* Recall@10 of filter `which` over NQ queries; every hit checked. */
static uint32_t scan_max; /* sv_search_opts.filter_scan for the searches below */

static double filtered_recall(sv_collection *c, const float *base, int n, const float *qs, int which,
                              uint32_t list)
{
    long found = 0, wanted = 0;
    for (int qi = 0; qi < NQ; qi++) {
        int truth[K];
        int nt = exact(base, n, qs + (size_t)qi * DIM, which, truth);
        sv_hit hits[K];
        size_t nh = 0;
        sv_error err;
        sv_search_opts o = {.k = K, .search_list = list, .filter = &filters[which], .filter_scan = scan_max};
        ck_assert_msg(sv_collection_search_opts(c, qs + (size_t)qi * DIM, DIM, &o, hits, &nh, &err) == SV_OK, "%s",
                      err.message);
        ck_assert_uint_eq(nh, (size_t)nt); /* k whenever k pass */
        for (size_t h = 0; h < nh; h++) {
            int id = atoi(hits[h].id);
            ck_assert_msg(rows[id].live && passes(which, &rows[id]), "filter %d: hit %d does not pass", which, id);
            for (int t = 0; t < nt; t++)
                found += truth[t] == id;
        }
        wanted += nt;
    }
    return wanted ? (double)found / (double)wanted : 1.0;
}

static uint64_t expected_count(int n, int which)
{
    uint64_t m = 0;
    for (int i = 0; i < n; i++)
        m += rows[i].live && passes(which, &rows[i]);
    return m;
}

static void check_counts(sv_collection *c, int n)
{
    for (int w = 0; w < 5; w++) {
        uint64_t got = 0;
        sv_error err;
        ck_assert_int_eq(sv_collection_count_filtered(c, &filters[w], NULL, &got, &err), SV_OK);
        ck_assert_uint_eq(got, expected_count(n, w));
    }
}

static void add_rows(sv_collection *c, const float *base, int from, int to)
{
    for (int i = from; i < to; i += 500) {
        int m = to - i < 500 ? to - i : 500;
        static char names[500][16];
        const char *ids[500];
        sv_pv_field f[500][2];
        sv_payload pl[500];
        for (int j = 0; j < m; j++) {
            snprintf(names[j], sizeof names[j], "%d", i + j);
            ids[j] = names[j];
            pl[j] = payload_of(i + j, f[j]);
            rows[i + j].live = 1;
        }
        sv_error err;
        ck_assert_msg(sv_collection_add_payloads(c, base + (size_t)i * DIM, (size_t)m, DIM, ids, pl, NULL, &err) ==
                          SV_OK,
                      "%s", err.message);
    }
}

/* A collection of rows [0, n) of base with their payloads, all in the
 * graph; key_index: "class" and "u" indexed first. */
static sv_collection *indexed_rows(const float *base, int n, int key_index)
{
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 0;
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_OK);
    if (key_index) {
        ck_assert_int_eq(sv_collection_index_key(c, "class", &err), SV_OK);
        ck_assert_int_eq(sv_collection_index_key(c, "u", &err), SV_OK);
        const char *keys[4];
        ck_assert_uint_eq(sv_collection_indexed_keys(c, keys, 4), 2);
        ck_assert_str_eq(keys[1], "u");
    }
    add_rows(c, base, 0, n);
    ck_assert_int_eq(sv_collection_flush(c, &err), SV_OK);
    return c;
}

/* The whole story, with the keys indexed or not: the answers are the same
 * (counts exact, every hit passing, recall as high). */
static void filtered_search(int key_index)
{
    make_filters();
    float *base = tu_gaussian(N + EXTRA, DIM, 7);
    float *qs = tu_gaussian(NQ, DIM, 8);
    srand(3);
    for (int i = 0; i < N + EXTRA; i++) {
        rows[i].cls = rand() % 10;
        rows[i].u = rand() % 1000;
    }
    sv_collection *c = indexed_rows(base, N, key_index);
    sv_error err;
    check_counts(c, N);
    static const char *names[5] = {"50%", "10%", "1%", "0.1%", "c3|c4 & !u>=900"};
    for (int w = 0; w < 5; w++) {
        double r = filtered_recall(c, base, N, qs, w, 64);
        printf("filtered search, %s of %d: recall@10 %.4f at list 64\n", names[w], N, r);
        ck_assert_msg(r >= 0.95, "filter %s: recall %.4f", names[w], r);
    }
    /* The same through the graph whatever the selectivity (the filter
     * inside the traversal; the scan only when it finds fewer than k). */
    scan_max = 1;
    for (int w = 0; w < 5; w++) {
        double r = filtered_recall(c, base, N, qs, w, 64);
        printf("filtered search in the graph, %s of %d: recall@10 %.4f at list 64\n", names[w], N, r);
        ck_assert_msg(r >= (w == 3 ? 0.0 : w == 2 ? 0.80 : 0.95), "filter %s in the graph: recall %.4f", names[w], r);
    }
    scan_max = 0;
    /* Buffered vectors (not flushed) are found too. */
    add_rows(c, base, N, N + EXTRA);
    check_counts(c, N + EXTRA);
    for (int w = 0; w < 5; w++)
        ck_assert_double_ge(filtered_recall(c, base, N + EXTRA, qs, w, 64), 0.95);
    /* Deletes: a third of the vectors u < 10 pass, gone. */
    static char del_names[N][16];
    const char *dels[N];
    size_t nd = 0;
    for (int i = 0; i < N; i++) {
        if (rows[i].u < 10 && i % 3 == 0) {
            snprintf(del_names[nd], sizeof del_names[nd], "%d", i);
            dels[nd] = del_names[nd];
            nd++;
            rows[i].live = 0;
        }
    }
    ck_assert_int_eq(sv_collection_delete(c, dels, nd, &err), SV_OK);
    check_counts(c, N + EXTRA);
    ck_assert_double_ge(filtered_recall(c, base, N + EXTRA, qs, 2, 64), 0.95);
    /* A patch moves a vector into filter 3 (u == 7). */
    sv_pv_field pf = {.key = "u", .type = SV_PV_INT, .i = 7};
    sv_payload patch = {&pf, 1};
    int moved_in = -1;
    for (int i = 1; i < N && moved_in < 0; i++)
        if (rows[i].live && rows[i].u != 7)
            moved_in = i;
    char idtext[16];
    snprintf(idtext, sizeof idtext, "%d", moved_in);
    ck_assert_int_eq(sv_collection_set_payload(c, idtext, &patch, SV_PAYLOAD_PATCH, &err), SV_OK);
    rows[moved_in].u = 7;
    check_counts(c, N + EXTRA);
    sv_hit hits[K];
    size_t nh = 0;
    sv_search_opts o = {.k = K, .search_list = 64, .filter = &filters[3]};
    ck_assert_int_eq(sv_collection_search_opts(c, base + (size_t)moved_in * DIM, DIM, &o, hits, &nh, &err), SV_OK);
    ck_assert_uint_ge(nh, 1);
    ck_assert_str_eq(hits[0].id, idtext);
    /* The payload reads back, class kept. */
    _Alignas(16) unsigned char buf[512];
    sv_payload got;
    size_t need = 0;
    ck_assert_int_eq(sv_collection_get_payload(c, idtext, buf, sizeof buf, &got, &need, &err), SV_OK);
    ck_assert_uint_eq(got.n, 2);
    ck_assert_str_eq(got.fields[0].s, CLASSES[rows[moved_in].cls]);
    ck_assert_int_eq(got.fields[1].i, 7);
    ck_assert_int_eq(sv_collection_get_payload(c, idtext, buf, 8, &got, &need, &err), SV_ERR_RESOURCE);
    ck_assert_uint_gt(need, 8);
    /* Compaction moves vectors into the holes: their payloads go along. */
    ck_assert_int_eq(sv_collection_flush(c, &err), SV_OK);
    ck_assert_int_eq(sv_collection_consolidate(c, &err), SV_OK);
    ck_assert_int_eq(sv_collection_compact(c, &err), SV_OK);
    ck_assert_int_eq(sv_collection_validate(c, &err), SV_OK);
    check_counts(c, N + EXTRA);
    for (int w = 0; w < 5; w++)
        ck_assert_double_ge(filtered_recall(c, base, N + EXTRA, qs, w, 64), 0.95);
    for (int i = N; i < N + EXTRA; i += 37) { /* the top slots: moved */
        snprintf(idtext, sizeof idtext, "%d", i);
        ck_assert_int_eq(sv_collection_get_payload(c, idtext, buf, sizeof buf, &got, &need, &err), SV_OK);
        ck_assert_str_eq(got.fields[0].s, CLASSES[rows[i].cls]);
        ck_assert_int_eq(got.fields[1].i, rows[i].u);
    }
    sv_stats st;
    sv_collection_stats(c, &st);
    printf("filtered search%s: payload bytes %.2f per vector (tally)\n", key_index ? " (2 keys indexed)" : "",
           (double)st.est_bytes_payload / (double)st.live);
    ck_assert_double_le((double)st.est_bytes_payload / (double)st.live, key_index ? 48.0 : 16.0);
    sv_collection_free(c);
    free(base);
    free(qs);
}

START_TEST(test_filtered_search)
{
    filtered_search(0);
}
END_TEST

START_TEST(test_filtered_search_indexed)
{
    filtered_search(1);
}
END_TEST

/* Refusals change nothing: a batch with one bad payload adds nothing; a
 * filter on an unknown key or of the wrong type is INVALID_ARGUMENT. */
START_TEST(test_filtered_refusals)
{
    make_filters();
    sv_params p;
    sv_params_default(&p, DIM);
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_OK);
    float *v = tu_gaussian(3, DIM, 1);
    sv_pv_field f0[] = {{.key = "u", .type = SV_PV_INT, .i = 1}};
    sv_pv_field f1[] = {{.key = "u", .type = SV_PV_STRING, .s = "one"}};
    sv_payload pl[3] = {{f0, 1}, {f0, 1}, {f1, 1}};
    const char *ids[3] = {"a", "b", "c"};
    ck_assert_int_eq(sv_collection_add_payloads(c, v, 3, DIM, ids, pl, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "payload 2, key \"u\"") != NULL, "%s", err.message);
    ck_assert_uint_eq(sv_collection_count(c), 0);
    pl[2] = pl[0];
    ck_assert_int_eq(sv_collection_add_payloads(c, v, 3, DIM, ids, pl, NULL, &err), SV_OK);
    sv_cond bad = {.kind = SV_COND_MATCH, .key = "nope", .value = {.type = SV_PV_INT, .i = 1}};
    sv_filter f = {.must = &bad, .n_must = 1};
    sv_hit hits[K];
    size_t nh = 7;
    sv_search_opts o = {.k = K, .search_list = 16, .filter = &f};
    ck_assert_int_eq(sv_collection_search_opts(c, v, DIM, &o, hits, &nh, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "unknown key \"nope\"") != NULL, "%s", err.message);
    ck_assert_uint_eq(nh, 0);
    uint64_t cnt;
    ck_assert_int_eq(sv_collection_count_filtered(c, &f, NULL, &cnt, &err), SV_ERR_INVALID_ARGUMENT);
    bad = (sv_cond){.kind = SV_COND_MATCH, .key = "u", .value = {.type = SV_PV_STRING, .s = "x"}};
    ck_assert_int_eq(sv_collection_search_opts(c, v, DIM, &o, hits, &nh, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "holds int64 values") != NULL, "%s", err.message);
    /* Patching an unknown id. */
    ck_assert_int_eq(sv_collection_set_payload(c, "zz", &pl[0], SV_PAYLOAD_PATCH, &err), SV_ERR_NOT_FOUND);
    sv_collection_free(c);
    free(v);
}
END_TEST

/* Scroll: every passing vector once, in pages; a cursor from before a
 * compaction that moved vectors is refused. */
START_TEST(test_scroll)
{
    make_filters();
    enum { SN = 3000 };
    float *v = tu_gaussian(SN, DIM, 21);
    for (int i = 0; i < SN; i++) {
        rows[i].cls = i % 10;
        rows[i].u = (i * 7) % 1000;
        rows[i].live = 0;
    }
    sv_collection *c = indexed_rows(v, SN, 1);
    sv_error err;
    static char ids[256][SV_ID_MAX + 1];
    static int seen[SN];
    for (int w = -1; w < 5; w++) {
        memset(seen, 0, sizeof seen);
        uint64_t cursor = 0;
        int pages = 0, total = 0;
        do {
            uint32_t n = 0;
            ck_assert_int_eq(sv_collection_scroll(c, w < 0 ? NULL : &filters[w], NULL, &cursor, 256, ids, &n, &err), SV_OK);
            for (uint32_t i = 0; i < n; i++) {
                int id = atoi(ids[i]);
                ck_assert_int_eq(seen[id]++, 0);
                ck_assert(w < 0 || passes(w, &rows[id]));
                total++;
            }
            pages++;
        } while (cursor);
        ck_assert_int_eq(total, w < 0 ? SN : (int)expected_count(SN, w));
        ck_assert_int_ge(pages, total / 256);
    }
    /* A cursor, then deletes, consolidation and a compaction that moves. */
    uint64_t cursor = 0;
    uint32_t n = 0;
    ck_assert_int_eq(sv_collection_scroll(c, NULL, NULL, &cursor, 100, ids, &n, &err), SV_OK);
    ck_assert_uint_ne(cursor, 0);
    static char del_names[SN][16];
    const char *dels[SN];
    size_t nd = 0;
    for (int i = 0; i < SN; i += 4) {
        snprintf(del_names[nd], sizeof del_names[nd], "%d", i);
        dels[nd] = del_names[nd];
        nd++;
    }
    ck_assert_int_eq(sv_collection_delete(c, dels, nd, &err), SV_OK);
    ck_assert_int_eq(sv_collection_consolidate(c, &err), SV_OK);
    ck_assert_int_eq(sv_collection_compact(c, &err), SV_OK);
    ck_assert_int_eq(sv_collection_scroll(c, NULL, NULL, &cursor, 100, ids, &n, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "start the scroll again") != NULL, "%s", err.message);
    ck_assert_int_eq(sv_collection_scroll(c, NULL, NULL, &cursor, 0, ids, &n, &err), SV_ERR_INVALID_ARGUMENT);
    sv_collection_free(c);
    free(v);
}
END_TEST

/* Filtered searches while other threads add vectors with payloads, patch
 * a key the filter does not read, and delete: every hit passes, nothing
 * crashes (run under TSan in CI). */
enum { CN = 4000, CADD = 2000 };
static float *cbase;
static int cclass[CN + CADD];
static atomic_int cdone;

static void *c_search(void *arg)
{
    sv_collection *c = arg;
    sv_pv_field v = {.type = SV_PV_STRING, .s = "c3"};
    sv_cond cond = {.kind = SV_COND_MATCH, .key = "class", .value = v};
    sv_filter f = {.must = &cond, .n_must = 1};
    long searches = 0;
    while (!atomic_load(&cdone) || searches < 50) {
        sv_hit hits[K];
        size_t nh = 0;
        sv_error err;
        sv_search_opts o = {.k = K, .search_list = 32, .filter = &f, .filter_scan = searches % 2 ? 1 : 0};
        ck_assert_int_eq(sv_collection_search_opts(c, cbase + (size_t)(searches % CN) * DIM, DIM, &o, hits, &nh, &err),
                         SV_OK);
        for (size_t h = 0; h < nh; h++)
            ck_assert_int_eq(cclass[atoi(hits[h].id)], 3);
        searches++;
    }
    return NULL;
}

/* Rows [from, from + n) with ids their numbers, class cclass[i] and u. */
static void c_add(sv_collection *c, int from, int n)
{
    const char *ids[500];
    char names[500][16];
    sv_pv_field fl[500][2];
    sv_payload pl[500];
    ck_assert_int_le(n, 500);
    for (int j = 0; j < n; j++) {
        snprintf(names[j], sizeof names[j], "%d", from + j);
        ids[j] = names[j];
        fl[j][0] = (sv_pv_field){.key = "class", .type = SV_PV_STRING, .s = CLASSES[cclass[from + j]]};
        fl[j][1] = (sv_pv_field){.key = "u", .type = SV_PV_INT, .i = j};
        pl[j] = (sv_payload){fl[j], 2};
    }
    sv_error err;
    ck_assert_msg(sv_collection_add_payloads(c, cbase + (size_t)from * DIM, (size_t)n, DIM, ids, pl, NULL, &err) ==
                      SV_OK,
                  "%s", err.message);
}

static void *c_write(void *arg)
{
    sv_collection *c = arg;
    sv_error err;
    char id[16];
    for (int i = CN; i < CN + CADD; i += 50) {
        c_add(c, i, 50);
        sv_pv_field u = {.key = "u", .type = SV_PV_INT, .i = i};
        sv_payload patch = {&u, 1};
        snprintf(id, sizeof id, "%d", i - CN);
        ck_assert_int_eq(sv_collection_set_payload(c, id, &patch, SV_PAYLOAD_PATCH, &err), SV_OK);
        snprintf(id, sizeof id, "%d", i - CN + 1);
        const char *del[1] = {id};
        ck_assert_int_eq(sv_collection_delete(c, del, 1, &err), SV_OK);
        if ((i / 50) % 10 == 0)
            ck_assert_int_eq(sv_collection_flush(c, &err), SV_OK);
    }
    atomic_store(&cdone, 1);
    return NULL;
}

START_TEST(test_filtered_concurrent)
{
    cbase = tu_gaussian(CN + CADD, DIM, 11);
    for (int i = 0; i < CN + CADD; i++)
        cclass[i] = i % 10;
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 0;
    p.threads = 1;
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_OK);
    for (int i = 0; i < CN; i += 500)
        c_add(c, i, 500);
    ck_assert_int_eq(sv_collection_flush(c, &err), SV_OK);
    pthread_t s1, s2, w;
    atomic_store(&cdone, 0);
    pthread_create(&s1, NULL, c_search, c);
    pthread_create(&s2, NULL, c_search, c);
    pthread_create(&w, NULL, c_write, c);
    pthread_join(w, NULL);
    pthread_join(s1, NULL);
    pthread_join(s2, NULL);
    ck_assert_int_eq(sv_collection_validate(c, &err), SV_OK);
    sv_collection_free(c);
    free(cbase);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("filtered");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_filtered_search);
    tcase_add_test(tc, test_filtered_search_indexed);
    tcase_add_test(tc, test_filtered_refusals);
    tcase_add_test(tc, test_scroll);
    suite_add_tcase(s, tc);
    /* Its own case: the TSan run takes it alone (CK_RUN_CASE=concurrent). */
    TCase *cc = tcase_create("concurrent");
    tcase_set_timeout(cc, 600);
    tcase_add_test(cc, test_filtered_concurrent);
    suite_add_tcase(s, cc);
    return tu_run_suite(s);
}
