/*
 * Collection behaviour: add/search/get/delete, the write buffer, bad input
 * that changes nothing, ids, edges on demand, deletes and consolidation.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slimvec.h"
#include "testutil.h"

static sv_collection *make(uint32_t dim, sv_metric m, sv_storage s, uint32_t flush_threshold)
{
    sv_params p;
    sv_params_default(&p, dim);
    p.metric = m;
    p.storage = s;
    p.flush_threshold = flush_threshold;
    p.threads = 2;
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_msg(sv_collection_create(&p, &c, &err) == SV_OK, "%s", err.message);
    return c;
}

static void assert_valid(sv_collection *c)
{
    sv_error err;
    sv_status st = sv_collection_validate(c, &err);
    ck_assert_msg(st == SV_OK, "validate: %s", err.message);
}

/* Search results of a few queries, as one string, to prove "unchanged". */
static void fingerprint(sv_collection *c, uint32_t dim, char *out, size_t cap)
{
    float *q = tu_gaussian(3, dim, 999);
    sv_hit hits[5];
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        ck_assert(sv_collection_search(c, q + i * dim, dim, 5, 32, hits, &n, NULL) == SV_OK);
        for (size_t h = 0; h < n; h++)
            used += (size_t)snprintf(out + used, cap - used, "%s:%.5f ", hits[h].id,
                                     (double)hits[h].distance);
    }
    free(q);
}

START_TEST(test_params_rejected)
{
    sv_params p;
    sv_collection *c = NULL;
    sv_error err;
    sv_params_default(&p, 0);
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err.message, "dimension"));
    sv_params_default(&p, 8);
    p.R = 300;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "R=300"));
    sv_params_default(&p, 8);
    p.alpha = NAN;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    sv_params_default(&p, 8);
    p.L_build = 0;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    sv_params_default(&p, 8);
    p.L_build = p.R - 1;
    ck_assert_int_eq(sv_collection_create(&p, &c, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "L_build"));
    /* alpha's default follows the dimension (edges cost the same bytes at
     * any dimension, a smaller share of a long vector). */
    sv_params_default(&p, SV_DENSE_ALPHA_DIM - 1);
    ck_assert(p.alpha == 1.0f);
    sv_params_default(&p, SV_DENSE_ALPHA_DIM);
    ck_assert(p.alpha == 1.1f);
}
END_TEST

/* Records bigger than half a store chunk (one or two per chunk). */
START_TEST(test_large_dimensions)
{
    const uint32_t dims[2] = {8193, 32757};
    const sv_storage kinds[2] = {SV_STORAGE_F32, SV_STORAGE_INT8};
    for (int t = 0; t < 2; t++) {
        uint32_t dim = dims[t];
        sv_collection *c = make(dim, SV_METRIC_L2, kinds[t], 0);
        float *v = tu_gaussian(5, dim, 12);
        tu_add_rows(c, v, 0, 5, dim);
        ck_assert(sv_collection_flush(c, NULL) == SV_OK);
        float *got = malloc(dim * sizeof *got);
        ck_assert(sv_collection_get(c, "4", got, dim, NULL) == SV_OK);
        for (uint32_t j = 0; j < dim; j += 97)
            ck_assert_float_eq_tol(got[j], v[4 * (size_t)dim + j], 0.05f);
        sv_hit hit;
        size_t n = 0;
        ck_assert(sv_collection_search(c, v + 3 * (size_t)dim, dim, 1, 8, &hit, &n, NULL) == SV_OK);
        ck_assert_str_eq(hit.id, "3");
        assert_valid(c);
        free(got);
        free(v);
        sv_collection_free(c);
    }
}
END_TEST

/* Validation with buffered vectors past the flushed range (no edge words). */
START_TEST(test_validate_with_buffered)
{
    const uint32_t dim = 4;
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    float *v = tu_gaussian(9000, dim, 13);
    tu_add_rows(c, v, 0, 1, dim);
    assert_valid(c);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    tu_add_rows(c, v, 1, 8999, dim); /* slots beyond the first edge chunk */
    assert_valid(c);
    free(v);
    sv_collection_free(c);
}
END_TEST

/* Tiny (subnormal) components under cosine normalise to a unit vector. */
START_TEST(test_cosine_tiny_vector)
{
    const uint32_t dim = 4;
    sv_collection *c = make(dim, SV_METRIC_COSINE, SV_STORAGE_INT8, 0);
    float v[3][4] = {{1e-39f, 0, 0, 0}, {0, 1, 0, 0}, {0.5f, 0.5f, 0, 0}};
    const char *ids[3] = {"tiny", "y", "xy"};
    ck_assert(sv_collection_add(c, &v[0][0], 3, dim, ids, NULL, NULL) == SV_OK);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    float got[4];
    ck_assert(sv_collection_get(c, "tiny", got, dim, NULL) == SV_OK);
    ck_assert_float_eq_tol(got[0], 1.0f, 0.01f);
    sv_hit hits[3];
    size_t n = 0;
    ck_assert(sv_collection_search(c, v[0], dim, 3, 8, hits, &n, NULL) == SV_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(hits[0].id, "tiny");
    ck_assert_float_eq_tol(hits[0].distance, 0.0f, 0.01f);
    sv_collection_free(c);
}
END_TEST

START_TEST(test_buffer_searchable_then_freed)
{
    const uint32_t dim = 16;
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    float *v = tu_gaussian(500, dim, 1);
    tu_add_rows(c, v, 0, 500, dim);
    sv_stats s;
    sv_collection_stats(c, &s);
    ck_assert_uint_eq(s.buffered, 500);
    ck_assert_uint_eq(s.indexed, 0);
    ck_assert_uint_gt(s.est_bytes_buffer, 500 * dim * sizeof(float) - 1);
    /* Searchable at once, exactly (brute force over floats). */
    sv_hit hits[1];
    size_t n = 0;
    ck_assert(sv_collection_search(c, v + 123 * dim, dim, 1, 10, hits, &n, NULL) == SV_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(hits[0].id, "123");
    ck_assert_float_eq(hits[0].distance, 0.0f);

    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    sv_collection_stats(c, &s);
    ck_assert_uint_eq(s.buffered, 0);
    ck_assert_uint_eq(s.indexed, 500);
    ck_assert_uint_eq(s.est_bytes_buffer, 0); /* freed, not reset */
    ck_assert(sv_collection_search(c, v + 123 * dim, dim, 1, 10, hits, &n, NULL) == SV_OK);
    ck_assert_str_eq(hits[0].id, "123");
    assert_valid(c);
    sv_collection_free(c);
    free(v);
}
END_TEST

START_TEST(test_auto_flush_and_assigned_ids)
{
    const uint32_t dim = 8;
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 100);
    float *v = tu_gaussian(250, dim, 2);
    uint64_t assigned[250];
    const char *ids[250] = {0};
    ids[5] = "3";       /* a numeric id: the counter must skip 3 */
    ids[6] = "doc-six"; /* a string id */
    sv_error err;
    ck_assert(sv_collection_add(c, v, 250, dim, ids, assigned, &err) == SV_OK);
    ck_assert_uint_eq(assigned[0], 0);
    ck_assert_uint_eq(assigned[2], 2);
    ck_assert_uint_eq(assigned[3], 4); /* 3 was taken by item 5 */
    ck_assert_uint_eq(assigned[4], 5);
    ck_assert_uint_eq(assigned[5], 3);
    ck_assert_uint_eq(assigned[6], UINT64_MAX);
    sv_stats s;
    sv_collection_stats(c, &s);
    ck_assert_uint_eq(s.buffered, 0); /* 250 >= 100 flushed on add */
    ck_assert_uint_eq(sv_collection_count(c), 250);
    float got[8];
    ck_assert(sv_collection_get(c, "doc-six", got, dim, &err) == SV_OK);
    for (uint32_t j = 0; j < dim; j++)
        ck_assert_float_eq_tol(got[j], v[6 * dim + j], 0.05f);
    assert_valid(c);
    sv_collection_free(c);
    free(v);
}
END_TEST

START_TEST(test_bad_input_changes_nothing)
{
    const uint32_t dim = 8;
    sv_collection *c = make(dim, SV_METRIC_COSINE, SV_STORAGE_INT8, 0);
    float *v = tu_gaussian(300, dim, 3);
    tu_add_rows(c, v, 0, 200, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    char before[4096], after[4096];
    fingerprint(c, dim, before, sizeof before);
    sv_stats s0, s1;
    sv_collection_stats(c, &s0);
    sv_error err;
    float *bad = malloc(10 * dim * sizeof *bad);
    memcpy(bad, v + 200 * dim, 10 * dim * sizeof *bad);

    /* dimension mismatch */
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim + 1, NULL, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "dimension 9"));
    /* NaN in item 7 */
    bad[7 * dim + 2] = NAN;
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, NULL, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "vector 7"));
    ck_assert_ptr_nonnull(strstr(err.message, "NaN"));
    bad[7 * dim + 2] = INFINITY;
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, NULL, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "infinite"));
    bad[7 * dim + 2] = 0.5f;
    /* zero vector under cosine, item 4 */
    memset(bad + 4 * dim, 0, dim * sizeof *bad);
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, NULL, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "vector 4 is the zero vector"));
    memcpy(bad + 4 * dim, v + 204 * dim, dim * sizeof *bad);
    /* over-long id at item 2 */
    char longid[SV_ID_MAX + 2];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    const char *ids[10] = {"a", "b", longid};
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, ids, NULL, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "vector 2"));
    /* duplicate inside the batch (items 1 and 8) */
    const char *dup[10] = {"a", "b", "c", NULL, NULL, NULL, NULL, NULL, "b"};
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, dup, NULL, &err), SV_ERR_ALREADY_EXISTS);
    ck_assert_ptr_nonnull(strstr(err.message, "\"b\" of vector 8 appears twice in the batch (also vector 1)"));
    /* duplicate against the collection ("17" exists), item 9 */
    const char *dup2[10] = {"x1", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "17"};
    ck_assert_int_eq(sv_collection_add(c, bad, 10, dim, dup2, NULL, &err), SV_ERR_ALREADY_EXISTS);
    ck_assert_ptr_nonnull(strstr(err.message, "\"17\" of vector 9 already exists"));
    /* bad searches */
    sv_hit hits[4];
    size_t n = 0;
    ck_assert_int_eq(sv_collection_search(c, bad, dim, 0, 10, hits, &n, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "k=0"));
    ck_assert_int_eq(sv_collection_search(c, bad, dim - 1, 4, 10, hits, &n, &err), SV_ERR_INVALID_ARGUMENT);
    float zero[8] = {0};
    ck_assert_int_eq(sv_collection_search(c, zero, dim, 4, 10, hits, &n, &err), SV_ERR_INVALID_ARGUMENT);
    /* unknown ids */
    const char *del[3] = {"1", "nope", "2"};
    ck_assert_int_eq(sv_collection_delete(c, del, 3, &err), SV_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.message, "\"nope\" (item 1)"));
    float got[8];
    ck_assert_int_eq(sv_collection_get(c, "nope", got, dim, &err), SV_ERR_NOT_FOUND);
    ck_assert_int_eq(sv_collection_get(c, "1", got, dim + 1, &err), SV_ERR_INVALID_ARGUMENT);

    /* nothing changed */
    sv_collection_stats(c, &s1);
    ck_assert_uint_eq(s1.live, s0.live);
    ck_assert_uint_eq(s1.indexed, s0.indexed);
    ck_assert_uint_eq(s1.buffered, 0);
    ck_assert_uint_eq(s1.est_bytes_idmap, s0.est_bytes_idmap);
    ck_assert_uint_eq(s1.est_bytes_vectors, s0.est_bytes_vectors);
    fingerprint(c, dim, after, sizeof after);
    ck_assert_str_eq(before, after);
    ck_assert(sv_collection_get(c, "1", got, dim, &err) == SV_OK);
    ck_assert_int_eq(sv_collection_get(c, "a", got, dim, &err), SV_ERR_NOT_FOUND);
    assert_valid(c);
    /* the good batch still goes in afterwards */
    ck_assert(sv_collection_add(c, bad, 10, dim, dup2, NULL, &err) == SV_ERR_ALREADY_EXISTS);
    dup2[9] = "fresh";
    ck_assert_msg(sv_collection_add(c, bad, 10, dim, dup2, NULL, &err) == SV_OK, "%s", err.message);
    ck_assert_uint_eq(sv_collection_count(c), 210);
    free(bad);
    free(v);
    sv_collection_free(c);
}
END_TEST

START_TEST(test_delete_never_returned)
{
    const uint32_t dim = 16;
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    float *v = tu_gaussian(1200, dim, 4);
    tu_add_rows(c, v, 0, 1000, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    tu_add_rows(c, v, 1000, 200, dim); /* these stay buffered */
    /* delete every third id, indexed and buffered alike */
    const char *ids[400];
    char names[400][16];
    size_t nd = 0;
    for (size_t i = 0; i < 1200; i += 3) {
        snprintf(names[nd], sizeof names[nd], "%zu", i);
        ids[nd] = names[nd];
        nd++;
    }
    sv_error err;
    ck_assert(sv_collection_delete(c, ids, nd, &err) == SV_OK);
    ck_assert_uint_eq(sv_collection_count(c), 1200 - nd);
    sv_hit hits[20];
    for (int round = 0; round < 2; round++) {
        for (size_t q = 0; q < 1200; q += 7) {
            size_t n = 0;
            ck_assert(sv_collection_search(c, v + q * dim, dim, 20, 40, hits, &n, NULL) == SV_OK);
            ck_assert_uint_eq(n, 20);
            for (size_t h = 0; h < n; h++)
                ck_assert_msg(strtoul(hits[h].id, NULL, 10) % 3 != 0, "deleted id %s returned", hits[h].id);
        }
        float got[16];
        ck_assert_int_eq(sv_collection_get(c, "3", got, dim, NULL), SV_ERR_NOT_FOUND);
        ck_assert_int_eq(sv_collection_get(c, "1110", got, dim, NULL), SV_ERR_NOT_FOUND);
        assert_valid(c);
        ck_assert(sv_collection_consolidate(c, &err) == SV_OK);
        ck_assert(sv_collection_flush(c, &err) == SV_OK);
    }
    sv_stats s;
    sv_collection_stats(c, &s);
    ck_assert_uint_eq(s.tombstones, 0);
    ck_assert_uint_eq(s.live, 1200 - nd);
    /* a deleted id can be added again and gets a recycled slot */
    ck_assert(sv_collection_add(c, v, 1, dim, ids, NULL, &err) == SV_OK);
    sv_collection_stats(c, &s);
    ck_assert_uint_eq(s.slots, 1200 - nd + 1);
    assert_valid(c);
    sv_collection_free(c);
    free(v);
}
END_TEST

/* Recall after deleting 20% and consolidating vs a fresh build of the rest. */
START_TEST(test_delete_recall_matches_fresh)
{
    const uint32_t dim = 32, n = 6000, nq = 200, k = 10, L = 64;
    float *v = tu_gaussian(n, dim, 5);
    float *q = tu_gaussian(nq, dim, 6);
    uint8_t *gone = calloc(n, 1);
    uint64_t s = 77;
    for (uint32_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        gone[i] = (s >> 33) % 5 == 0;
    }
    uint32_t *truth = tu_exact_knn(v, n, q, nq, dim, k, SV_METRIC_L2, gone);

    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    tu_add_rows(c, v, 0, n, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    char name[16];
    const char *one[1] = {name};
    for (uint32_t i = 0; i < n; i++) {
        if (!gone[i])
            continue;
        snprintf(name, sizeof name, "%u", i);
        ck_assert(sv_collection_delete(c, one, 1, NULL) == SV_OK);
    }
    ck_assert(sv_collection_consolidate(c, NULL) == SV_OK);
    assert_valid(c);
    double after = tu_recall(c, q, nq, dim, k, L, truth);

    sv_collection *f = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    for (uint32_t i = 0; i < n; i++) {
        if (gone[i])
            continue;
        snprintf(name, sizeof name, "%u", i);
        ck_assert(sv_collection_add(f, v + (size_t)i * dim, 1, dim, one, NULL, NULL) == SV_OK);
    }
    ck_assert(sv_collection_flush(f, NULL) == SV_OK);
    double fresh = tu_recall(f, q, nq, dim, k, L, truth);
    fprintf(stderr, "recall after delete+consolidate %.4f, fresh %.4f\n", after, fresh);
    ck_assert_msg(after >= fresh - 0.01, "recall %.4f vs fresh %.4f", after, fresh);
    ck_assert_msg(fresh > 0.85, "fresh recall %.4f", fresh);
    sv_collection_free(c);
    sv_collection_free(f);
    free(truth);
    free(gone);
    free(q);
    free(v);
}
END_TEST

/* Every id's stored vector equals cur[row] (to int8 precision), the graph
 * validates, and `next` slots are in use at most. */
static void assert_rows(sv_collection *c, const float *cur, uint32_t n, uint32_t dim)
{
    float out[64];
    char name[16];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%u", i);
        ck_assert_int_eq(sv_collection_get(c, name, out, dim, NULL), SV_OK);
        float err = 0, top = 0;
        for (uint32_t j = 0; j < dim; j++) {
            err = fmaxf(err, fabsf(out[j] - cur[(size_t)i * dim + j]));
            top = fmaxf(top, fabsf(cur[(size_t)i * dim + j]));
        }
        ck_assert_msg(err <= 0.05f * top + 1e-3f, "row %u is off by %g", i, (double)err);
    }
    assert_valid(c);
}

/*
 * Churn (delete a quarter, re-add it with new vectors before consolidation
 * frees the slots) grows the slot range; compaction moves the top vectors
 * into the freed slots and gives the top back: every vector stays where its
 * id says, the graph validates, the range returns to the vector count and
 * recall matches a fresh build. Also: a tombstone at the top stops the
 * moves, and the free slots must then all stay usable (the free stack was
 * once clobbered when compaction kept some of it).
 */
START_TEST(test_compact_after_churn)
{
    const uint32_t dim = 32, n = 6000, nq = 200, k = 10, L = 64;
    float *cur = tu_gaussian(n, dim, 11);
    float *q = tu_gaussian(nq, dim, 12);
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    tu_add_rows(c, cur, 0, n, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    char name[16];
    const char *one[1] = {name};
    uint64_t rs = 5;
    for (int round = 0; round < 3; round++) {
        float *fresh_rows = tu_gaussian(n, dim, 100 + (uint64_t)round);
        for (uint32_t i = 0; i < n; i++) {
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            if ((rs >> 33) % 4)
                continue;
            snprintf(name, sizeof name, "%u", i);
            ck_assert(sv_collection_delete(c, one, 1, NULL) == SV_OK);
            memcpy(cur + (size_t)i * dim, fresh_rows + (size_t)i * dim, dim * sizeof(float));
            ck_assert(sv_collection_add(c, cur + (size_t)i * dim, 1, dim, one, NULL, NULL) == SV_OK);
        }
        free(fresh_rows);
        ck_assert(sv_collection_flush(c, NULL) == SV_OK);
        ck_assert(sv_collection_consolidate(c, NULL) == SV_OK);
        sv_stats before, after;
        sv_collection_stats(c, &before);
        ck_assert_uint_gt(before.free_slots, 0);
        ck_assert(sv_collection_compact(c, NULL) == SV_OK);
        sv_collection_stats(c, &after);
        fprintf(stderr, "compact round %d: %llu slots + %llu free -> %llu + %llu\n", round,
                (unsigned long long)before.slots, (unsigned long long)before.free_slots,
                (unsigned long long)after.slots, (unsigned long long)after.free_slots);
        ck_assert_uint_eq(after.slots, n);
        ck_assert_uint_eq(after.free_slots, 0);
        assert_rows(c, cur, n, dim);
    }
    uint32_t *truth = tu_exact_knn(cur, n, q, nq, dim, k, SV_METRIC_L2, NULL);
    double churned = tu_recall(c, q, nq, dim, k, L, truth);
    sv_collection *f = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    tu_add_rows(f, cur, 0, n, dim);
    ck_assert(sv_collection_flush(f, NULL) == SV_OK);
    double fresh = tu_recall(f, q, nq, dim, k, L, truth);
    fprintf(stderr, "recall after churn + compaction %.4f, fresh %.4f\n", churned, fresh);
    ck_assert_msg(churned >= fresh - 0.01, "recall %.4f vs fresh %.4f", churned, fresh);

    /* Free slots below a tombstone at the top: nothing moves, and the free
     * slots all come back to the next adds, each once. */
    for (uint32_t i = 0; i < n; i += 3) {
        snprintf(name, sizeof name, "%u", i);
        ck_assert(sv_collection_delete(c, one, 1, NULL) == SV_OK);
    }
    ck_assert(sv_collection_consolidate(c, NULL) == SV_OK);
    /* The vector in the highest slot: the last one re-added... delete it
     * and leave its tombstone at the top. */
    sv_stats st;
    sv_collection_stats(c, &st);
    uint32_t freed = (uint32_t)st.free_slots;
    ck_assert_uint_eq(freed, (n + 2) / 3);
    float top_probe[64];
    uint32_t top_row = UINT32_MAX;
    for (uint32_t i = n; i-- > 0 && top_row == UINT32_MAX;)
        if (i % 3)
            top_row = i; /* some live row: not necessarily the top slot */
    (void)top_probe;
    snprintf(name, sizeof name, "%u", top_row);
    ck_assert(sv_collection_delete(c, one, 1, NULL) == SV_OK);
    ck_assert(sv_collection_compact(c, NULL) == SV_OK);
    /* Re-add every deleted row: each takes a distinct slot. */
    for (uint32_t i = 0; i < n; i++) {
        if (i % 3 && i != top_row)
            continue;
        snprintf(name, sizeof name, "%u", i);
        ck_assert(sv_collection_add(c, cur + (size_t)i * dim, 1, dim, one, NULL, NULL) == SV_OK);
    }
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    assert_rows(c, cur, n, dim);
    sv_collection_free(c);
    sv_collection_free(f);
    free(truth);
    free(q);
    free(cur);
}
END_TEST

/* Recall for each metric and storage against exact float neighbours. */
START_TEST(test_recall_all_metrics)
{
    const uint32_t dim = 24, n = 4000, nq = 100, k = 10;
    float *v = tu_gaussian(n, dim, 7);
    float *q = tu_gaussian(nq, dim, 8);
    for (int m = 0; m < 3; m++) {
        uint32_t *truth = tu_exact_knn(v, n, q, nq, dim, k, (sv_metric)m, NULL);
        for (int st = 0; st < 2; st++) {
            sv_collection *c = make(dim, (sv_metric)m, (sv_storage)st, 0);
            tu_add_rows(c, v, 0, n, dim);
            ck_assert(sv_collection_flush(c, NULL) == SV_OK);
            assert_valid(c);
            double r = tu_recall(c, q, nq, dim, k, 100, truth);
            fprintf(stderr, "metric %s storage %s recall@10 %.4f\n", sv_metric_name((sv_metric)m),
                    sv_storage_name((sv_storage)st), r);
            ck_assert_msg(r >= (m == SV_METRIC_IP ? 0.80 : 0.90), "metric %d storage %d recall %.4f",
                          m, st, r);
            sv_collection_free(c);
        }
        free(truth);
    }
    free(q);
    free(v);
}
END_TEST

/* Calibration: a curve that rises with the search list, and a search that
 * asks for a recall gets about that recall on fresh queries. */
START_TEST(test_calibration_target_recall)
{
    const uint32_t dim = 32, n = 6000, nq = 200, k = 10;
    float *v = tu_gaussian(n, dim, 21);
    float *q = tu_gaussian(nq, dim, 22);
    uint32_t *truth = tu_exact_knn(v, n, q, nq, dim, k, SV_METRIC_L2, NULL);
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    sv_calibration cal;
    ck_assert_int_eq(sv_collection_calibration(c, &cal), 0);
    sv_error err;
    ck_assert_int_eq(sv_collection_calibrate(c, 50, 1, &err), SV_ERR_INVALID_ARGUMENT); /* empty */
    tu_add_rows(c, v, 0, n, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    /* Without a calibration, target_recall falls back to the search list. */
    sv_hit hits[10];
    size_t nh = 0;
    uint32_t used = 0;
    sv_search_opts so = {.k = k, .search_list = 33, .target_recall = 0.9f, .used_search_list = &used};
    ck_assert_int_eq(sv_collection_search_opts(c, q, dim, &so, hits, &nh, &err), SV_OK);
    ck_assert_uint_eq(used, 33);
    ck_assert_msg(sv_collection_calibrate(c, 100, 7, &err) == SV_OK, "%s", err.message);
    ck_assert_int_eq(sv_collection_calibration(c, &cal), 1);
    ck_assert_uint_eq(cal.queries, 100);
    ck_assert_uint_eq(cal.live, n);
    ck_assert_uint_ge(cal.n_points, 4);
    for (uint32_t i = 0; i < cal.n_points; i++)
        fprintf(stderr, "calibration: L %u recall %.3f\n", cal.points[i].search_list, (double)cal.points[i].recall);
    ck_assert(cal.points[0].recall < cal.points[cal.n_points - 1].recall);
    ck_assert(cal.points[cal.n_points - 1].recall >= 0.95f);
    for (float target = 0.8f; target <= 0.951f; target += 0.15f) {
        uint32_t L = sv_calibration_search_list(&cal, target);
        ck_assert_uint_gt(L, 0);
        so = (sv_search_opts){.k = k, .target_recall = target, .used_search_list = &used};
        ck_assert_int_eq(sv_collection_search_opts(c, q, dim, &so, hits, &nh, &err), SV_OK);
        ck_assert_uint_eq(used, L);
        double r = tu_recall(c, q, nq, dim, k, L, truth);
        fprintf(stderr, "target %.2f: search list %u, recall on fresh queries %.3f\n", (double)target, L, r);
        ck_assert_msg(r >= target - 0.05, "target %.2f: recall %.3f", (double)target, r);
    }
    /* More neighbours than the curve's 10: the list scales with k. */
    sv_hit many[30];
    so = (sv_search_opts){.k = 30, .target_recall = 0.95f, .used_search_list = &used};
    ck_assert_int_eq(sv_collection_search_opts(c, q, dim, &so, many, &nh, &err), SV_OK);
    ck_assert_uint_eq(used, 3 * sv_calibration_search_list(&cal, 0.95f));
    so.k = k;
    so.target_recall = 1.5f;
    ck_assert_int_eq(sv_collection_search_opts(c, q, dim, &so, hits, &nh, &err), SV_ERR_INVALID_ARGUMENT);
    so.target_recall = 1.0f; /* beyond the curve: its largest list */
    ck_assert_int_eq(sv_collection_search_opts(c, q, dim, &so, hits, &nh, &err), SV_OK);
    ck_assert_uint_ge(used, cal.points[cal.n_points - 1].search_list);
    sv_collection_free(c);
    free(truth);
    free(q);
    free(v);
}
END_TEST

START_TEST(test_edges_on_demand)
{
    const uint32_t dim = 16;
    sv_collection *c = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    float *v = tu_gaussian(3000, dim, 9);
    tu_add_rows(c, v, 0, 3000, dim);
    ck_assert(sv_collection_flush(c, NULL) == SV_OK);
    sv_stats s;
    sv_collection_stats(c, &s);
    fprintf(stderr, "avg degree %.2f, avg edge slots %.2f, R %u\n", s.avg_degree, s.avg_edge_slots,
            sv_collection_params(c)->R);
    ck_assert(s.avg_degree > 2.0);
    ck_assert(s.max_degree <= sv_collection_params(c)->R);
    ck_assert(s.avg_edge_slots >= s.avg_degree);
    /* Slots follow the degree (size-class rounding only), never R. */
    ck_assert(s.avg_edge_slots < s.avg_degree + 4.0);
    ck_assert(s.avg_edge_slots < sv_collection_params(c)->R);
    sv_collection_free(c);
    free(v);
}
END_TEST

START_TEST(test_assigned_ids_cost_no_strings)
{
    const uint32_t dim = 4, n = 2000;
    float *v = tu_gaussian(n, dim, 10);
    sv_collection *a = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    sv_collection *b = make(dim, SV_METRIC_L2, SV_STORAGE_INT8, 0);
    ck_assert(sv_collection_add(a, v, n, dim, NULL, NULL, NULL) == SV_OK);
    char(*names)[40] = malloc(n * sizeof *names);
    const char **ids = malloc(n * sizeof *ids);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "document-%08u-with-a-name", i);
        ids[i] = names[i];
    }
    ck_assert(sv_collection_add(b, v, n, dim, ids, NULL, NULL) == SV_OK);
    sv_stats sa, sb;
    sv_collection_stats(a, &sa);
    sv_collection_stats(b, &sb);
    fprintf(stderr, "id map bytes/vector: assigned %.1f, strings %.1f\n",
            (double)sa.est_bytes_idmap / n, (double)sb.est_bytes_idmap / n);
    /* assigned: an 8-byte word and ~5 bytes of table per id, no string */
    ck_assert_uint_lt(sa.est_bytes_idmap, (uint64_t)n * 20);
    ck_assert_uint_gt(sb.est_bytes_idmap, sa.est_bytes_idmap + (uint64_t)n * 26);
    free(names);
    free(ids);
    free(v);
    sv_collection_free(a);
    sv_collection_free(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("collection");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_params_rejected);
    tcase_add_test(tc, test_large_dimensions);
    tcase_add_test(tc, test_validate_with_buffered);
    tcase_add_test(tc, test_cosine_tiny_vector);
    tcase_add_test(tc, test_buffer_searchable_then_freed);
    tcase_add_test(tc, test_auto_flush_and_assigned_ids);
    tcase_add_test(tc, test_bad_input_changes_nothing);
    tcase_add_test(tc, test_delete_never_returned);
    tcase_add_test(tc, test_delete_recall_matches_fresh);
    tcase_add_test(tc, test_compact_after_churn);
    tcase_add_test(tc, test_recall_all_metrics);
    tcase_add_test(tc, test_edges_on_demand);
    tcase_add_test(tc, test_calibration_target_recall);
    tcase_add_test(tc, test_assigned_ids_cost_no_strings);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
