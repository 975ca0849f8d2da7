/*
 * Out of memory anywhere changes nothing it should not: a workload (add,
 * flush, add, delete, flush, consolidate) runs once for every allocation it
 * makes, with exactly that allocation failing. Each call either succeeds or
 * fails whole; afterwards, with memory back, the collection validates, its
 * count matches what the calls reported, every id it should hold is there,
 * and the tallies return to zero when it is freed. Under ASan this also
 * proves no failure path touches freed or uninitialised memory.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slimvec.h"
#include "testutil.h"

enum { N = 200, D = 8 };

static atomic_long countdown = -1; /* fail when it reaches 0; -1: never */
static atomic_long calls;
static atomic_long live_blocks;

static int should_fail(void)
{
    atomic_fetch_add(&calls, 1);
    return atomic_load(&countdown) >= 0 && atomic_fetch_sub(&countdown, 1) == 0;
}

static void *f_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (should_fail())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

static void *f_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    if (should_fail())
        return NULL;
    return realloc(p, n);
}

static void f_free(void *ctx, void *p)
{
    (void)ctx;
    if (p)
        atomic_fetch_sub(&live_blocks, 1);
    free(p);
}

static const sv_allocator failing = {f_alloc, f_realloc, f_free, NULL, NULL};

/* Runs the workload failing allocation k (-1: none); returns allocations used. */
static long run_once(long k, const float *v, const char *const *ids)
{
    sv_params p;
    sv_params_default(&p, D);
    p.flush_threshold = 0;
    p.threads = 1;
    p.R = 8;
    p.L_build = 16;
    p.allocator = &failing;
    atomic_store(&countdown, -1);
    atomic_store(&live_blocks, 0);
    sv_collection *c = NULL;
    sv_error e;
    ck_assert(sv_collection_create(&p, &c, &e) == SV_OK);
    atomic_store(&calls, 0);
    atomic_store(&countdown, k);
    sv_status add1 = sv_collection_add(c, v, N, D, ids, NULL, &e);
    sv_collection_flush(c, &e);
    sv_status add2 = sv_collection_add(c, v + N * D, N, D, ids + N, NULL, &e);
    /* half of these are indexed, half still buffered */
    sv_status del = sv_collection_delete(c, ids + N / 2, N, &e);
    sv_collection_flush(c, &e);
    sv_collection_consolidate(c, &e);
    long used = atomic_load(&calls);
    atomic_store(&countdown, -1);

    ck_assert(sv_collection_flush(c, &e) == SV_OK);
    ck_assert(sv_collection_consolidate(c, &e) == SV_OK);
    ck_assert_msg(sv_collection_validate(c, &e) == SV_OK, "k=%ld: %s", k, e.message);
    for (int i = 0; i < 2 * N; i++) {
        int added = i < N ? add1 == SV_OK : add2 == SV_OK;
        int deleted = i >= N / 2 && i < N / 2 + N && del == SV_OK;
        float out[D];
        sv_status g = sv_collection_get(c, ids[i], out, D, NULL);
        ck_assert_msg((g == SV_OK) == (added && !deleted), "k=%ld: id %s: get %s, added %d deleted %d",
                      k, ids[i], sv_status_name(g), added, deleted);
    }
    uint64_t expect = (add1 == SV_OK ? N : 0) + (add2 == SV_OK ? N : 0) - (del == SV_OK ? N : 0);
    ck_assert_msg(sv_collection_count(c) == expect, "k=%ld: count %llu, expected %llu", k,
                  (unsigned long long)sv_collection_count(c), (unsigned long long)expect);
    sv_collection_free(c);
    ck_assert_msg(atomic_load(&live_blocks) == 0, "k=%ld: %ld blocks leaked", k, atomic_load(&live_blocks));
    return used;
}

START_TEST(test_every_allocation_fails_once)
{
    float *v = tu_gaussian(2 * N, D, 21);
    static char names[2 * N][16];
    const char *ids[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        snprintf(names[i], sizeof names[i], "s%d", i);
        ids[i] = names[i];
    }
    long total = run_once(-1, v, ids);
    ck_assert_int_gt(total, 100);
    for (long k = 0; k < total; k++)
        run_once(k, v, ids);
    free(v);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_every_allocation_fails_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
