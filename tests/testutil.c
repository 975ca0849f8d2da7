/* Helpers shared by the core tests (see testutil.h). */
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float *tu_gaussian(size_t n, uint32_t dim, uint64_t seed)
{
    float *v = malloc(n * dim * sizeof *v);
    ck_assert_ptr_nonnull(v);
    uint64_t s = seed;
    for (size_t i = 0; i < n * dim; i++) {
        double u1 = ((next(&s) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (next(&s) >> 11) / 9007199254740992.0;
        v[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
    return v;
}

static double dist(const float *a, const float *b, uint32_t dim, sv_metric m)
{
    double s = 0, na = 0, nb = 0;
    for (uint32_t j = 0; j < dim; j++) {
        if (m == SV_METRIC_L2) {
            double d = (double)a[j] - b[j];
            s += d * d;
        } else {
            s += (double)a[j] * b[j];
            na += (double)a[j] * a[j];
            nb += (double)b[j] * b[j];
        }
    }
    if (m == SV_METRIC_L2)
        return s;
    if (m == SV_METRIC_IP)
        return -s;
    return 1.0 - s / sqrt(na * nb);
}

uint32_t *tu_exact_knn(const float *base, size_t n, const float *queries, size_t n_q, uint32_t dim,
                       uint32_t k, sv_metric metric, const uint8_t *skip)
{
    uint32_t *out = malloc(n_q * k * sizeof *out);
    double *best = malloc(k * sizeof *best);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(best);
    for (size_t q = 0; q < n_q; q++) {
        uint32_t have = 0;
        for (size_t i = 0; i < n; i++) {
            if (skip && skip[i])
                continue;
            double d = dist(queries + q * dim, base + i * dim, dim, metric);
            if (have == k && d >= best[k - 1])
                continue;
            uint32_t p = have < k ? have++ : k - 1;
            while (p > 0 && best[p - 1] > d) {
                best[p] = best[p - 1];
                out[q * k + p] = out[q * k + p - 1];
                p--;
            }
            best[p] = d;
            out[q * k + p] = (uint32_t)i;
        }
    }
    free(best);
    return out;
}

double tu_recall(sv_collection *c, const float *queries, size_t n_q, uint32_t dim, uint32_t k,
                 uint32_t search_list, const uint32_t *truth)
{
    sv_hit *hits = malloc(k * sizeof *hits);
    ck_assert_ptr_nonnull(hits);
    size_t found = 0;
    for (size_t q = 0; q < n_q; q++) {
        size_t n = 0;
        sv_error err;
        sv_status st = sv_collection_search(c, queries + q * dim, dim, k, search_list, hits, &n, &err);
        ck_assert_msg(st == SV_OK, "search failed: %s", err.message);
        for (size_t i = 0; i < n; i++) {
            unsigned long id = strtoul(hits[i].id, NULL, 10);
            for (uint32_t t = 0; t < k; t++)
                if (truth[q * k + t] == id) {
                    found++;
                    break;
                }
        }
    }
    free(hits);
    return (double)found / (double)(n_q * k);
}

void tu_add_rows(sv_collection *c, const float *base, size_t first, size_t n, uint32_t dim)
{
    const size_t batch = 1000;
    char(*names)[24] = malloc(batch * sizeof *names);
    const char **ids = malloc(batch * sizeof *ids);
    ck_assert_ptr_nonnull(names);
    ck_assert_ptr_nonnull(ids);
    for (size_t s = 0; s < n; s += batch) {
        size_t m = n - s < batch ? n - s : batch;
        for (size_t i = 0; i < m; i++) {
            snprintf(names[i], sizeof names[i], "%zu", first + s + i);
            ids[i] = names[i];
        }
        sv_error err;
        sv_status st = sv_collection_add(c, base + (first + s) * dim, m, dim, ids, NULL, &err);
        ck_assert_msg(st == SV_OK, "add failed: %s", err.message);
    }
    free(names);
    free(ids);
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
