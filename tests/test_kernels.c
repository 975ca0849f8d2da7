/*
 * Tests for the distance kernels (core/kernels.h).
 *
 * Every variant this CPU can run is held to the scalar reference on random
 * inputs over lengths that hit each vector width, its tails and the sizes
 * that matter (128, 784), at random misalignments. Each vector is placed at
 * the very end of its own allocation so AddressSanitizer catches any read
 * past n. Integer results must match exactly; float results may differ by
 * the rounding of a reordered sum, bounded relative to the sum of absolute
 * terms. Seeds are fixed, so a failure reproduces.
 */
#include <check.h>

#include "testutil.h"
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define MAX_VARIANTS 16

/* Reordered float sums may differ by a few ulps per term of the total
 * magnitude; 1e-4 of the sum of |terms| is loose enough for n = 4096 and
 * still catches a dropped or doubled element. */
#define REL_TOL 1e-4

static const size_t lengths[] = {
    0, 1, 3, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65,
    127, 128, 129, 255, 256, 784, 1000, 4096,
};
#define N_LENGTHS (sizeof lengths / sizeof lengths[0])

/* Random misalignment trials per length. */
#define TRIALS 6

static const sv_kernels *variants[MAX_VARIANTS];
static size_t n_variants;

/* splitmix64: small, seedable and the same on every platform. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1) with 24 random bits. */
static float rng_f32(uint64_t *s)
{
    int32_t v = (int32_t)(rng_next(s) >> 40) - (1 << 23);
    return (float)v / (float)(1 << 23);
}

static size_t rng_below(uint64_t *s, size_t bound)
{
    return (size_t)(rng_next(s) % bound);
}

/*
 * A buffer of `off + n` elements of `size` bytes with the vector at element
 * `off`, so it ends exactly at the end of the allocation: any over-read is
 * an ASan error, and `off` shifts its alignment.
 */
typedef struct buf {
    void *base;
    void *p;
} buf;

static buf buf_make(size_t off, size_t n, size_t size)
{
    buf b;
    size_t bytes = (off + n) * size;
    b.base = malloc(bytes > 0 ? bytes : 1);
    ck_assert_ptr_nonnull(b.base);
    b.p = (char *)b.base + off * size;
    return b;
}

static void buf_free(buf *b)
{
    free(b->base);
    b->base = b->p = NULL;
}

static const sv_kernels *scalar(void)
{
    const sv_kernels *s = sv_kernels_by_name("scalar");
    ck_assert_ptr_nonnull(s);
    return s;
}

static void check_close(const char *what, const sv_kernels *k, size_t n,
                        size_t off_a, size_t off_b, double got, double ref,
                        double abs_sum)
{
    double err = fabs(got - ref);
    ck_assert_msg(err <= REL_TOL * abs_sum,
                  "%s %s n=%zu off=(%zu,%zu): got %.9g, reference %.9g "
                  "(error %.3g, allowed %.3g)",
                  k->name, what, n, off_a, off_b, got, ref, err,
                  REL_TOL * abs_sum);
}

/* ---- float x float ---- */

static void run_f32(const sv_kernels *k, size_t n, uint64_t *rng)
{
    const sv_kernels *ref = scalar();
    size_t off_a = rng_below(rng, 16), off_b = rng_below(rng, 16);
    buf ba = buf_make(off_a, n, sizeof(float));
    buf bb = buf_make(off_b, n, sizeof(float));
    float *a = ba.p, *b = bb.p;
    double l2_abs = 0.0, dot_abs = 0.0, l2_exact = 0.0, dot_exact = 0.0;
    for (size_t i = 0; i < n; i++) {
        a[i] = rng_f32(rng);
        b[i] = rng_f32(rng);
        double d = (double)a[i] - b[i], p = (double)a[i] * b[i];
        l2_abs += d * d;
        l2_exact += d * d;
        dot_abs += fabs(p);
        dot_exact += p;
    }

    float l2_ref = ref->l2sq_f32(a, b, n);
    float dot_ref = ref->dot_f32(a, b, n);
    /* The reference itself against a double-precision sum. */
    check_close("l2sq_f32 (scalar vs double)", ref, n, off_a, off_b, l2_ref, l2_exact, l2_abs);
    check_close("dot_f32 (scalar vs double)", ref, n, off_a, off_b, dot_ref, dot_exact, dot_abs);

    check_close("l2sq_f32", k, n, off_a, off_b, k->l2sq_f32(a, b, n), l2_ref, l2_abs);
    check_close("dot_f32", k, n, off_a, off_b, k->dot_f32(a, b, n), dot_ref, dot_abs);
    /* Symmetric in its arguments, up to rounding. */
    check_close("l2sq_f32 swapped", k, n, off_b, off_a, k->l2sq_f32(b, a, n), l2_ref, l2_abs);
    /* Distance from a vector to itself is exactly zero in any order. */
    ck_assert_msg(k->l2sq_f32(a, a, n) == 0.0f, "%s l2sq_f32(a, a) n=%zu not 0", k->name, n);

    buf_free(&ba);
    buf_free(&bb);
}

START_TEST(test_f32)
{
    const sv_kernels *k = variants[_i];
    uint64_t rng = 0x5EED0001ull;
    for (size_t li = 0; li < N_LENGTHS; li++)
        for (int t = 0; t < TRIALS; t++)
            run_f32(k, lengths[li], &rng);
}
END_TEST

/* ---- float x u8 ---- */

static void run_f32u8(const sv_kernels *k, size_t n, uint64_t *rng)
{
    const sv_kernels *ref = scalar();
    size_t off_q = rng_below(rng, 16), off_c = rng_below(rng, 64);
    buf bq = buf_make(off_q, n, sizeof(float));
    buf bc = buf_make(off_c, n, 1);
    float *q = bq.p;
    uint8_t *c = bc.p;
    double abs_sum = 0.0, exact = 0.0;
    for (size_t i = 0; i < n; i++) {
        q[i] = rng_f32(rng);
        c[i] = (uint8_t)rng_next(rng);
        abs_sum += fabs((double)q[i] * c[i]);
        exact += (double)q[i] * c[i];
    }

    float r = ref->dot_f32u8(q, c, n);
    check_close("dot_f32u8 (scalar vs double)", ref, n, off_q, off_c, r, exact, abs_sum);
    check_close("dot_f32u8", k, n, off_q, off_c, k->dot_f32u8(q, c, n), r, abs_sum);

    buf_free(&bq);
    buf_free(&bc);
}

START_TEST(test_f32u8)
{
    const sv_kernels *k = variants[_i];
    uint64_t rng = 0x5EED0002ull;
    for (size_t li = 0; li < N_LENGTHS; li++)
        for (int t = 0; t < TRIALS; t++)
            run_f32u8(k, lengths[li], &rng);
}
END_TEST

/* ---- u8 x u8 ---- */

/* fill: 0 random bytes, otherwise that byte everywhere. */
static void run_u8u8(const sv_kernels *k, size_t n, uint64_t *rng, int fill)
{
    const sv_kernels *ref = scalar();
    size_t off_a = rng_below(rng, 64), off_b = rng_below(rng, 64);
    buf ba = buf_make(off_a, n, 1);
    buf bb = buf_make(off_b, n, 1);
    uint8_t *a = ba.p, *b = bb.p;
    uint64_t exact = 0, exact_a = 0, exact_b = 0;
    for (size_t i = 0; i < n; i++) {
        a[i] = fill ? (uint8_t)fill : (uint8_t)rng_next(rng);
        b[i] = fill ? (uint8_t)fill : (uint8_t)rng_next(rng);
        exact += (uint64_t)a[i] * b[i];
        exact_a += a[i];
        exact_b += b[i];
    }
    ck_assert_uint_lt(exact, UINT64_C(1) << 32);

    /* Poison the outputs so a kernel that forgets to write them fails. */
    uint32_t ref_a = 0xDEADBEEF, ref_b = 0xDEADBEEF;
    uint32_t ref_dot = ref->dot_u8u8(a, b, n, &ref_a, &ref_b);
    ck_assert_msg(ref_dot == exact && ref_a == exact_a && ref_b == exact_b,
                  "scalar dot_u8u8 n=%zu: got (%u,%u,%u), exact (%llu,%llu,%llu)",
                  n, ref_dot, ref_a, ref_b, (unsigned long long)exact,
                  (unsigned long long)exact_a, (unsigned long long)exact_b);

    uint32_t got_a = 0xDEADBEEF, got_b = 0xDEADBEEF;
    uint32_t got = k->dot_u8u8(a, b, n, &got_a, &got_b);
    ck_assert_msg(got == ref_dot && got_a == ref_a && got_b == ref_b,
                  "%s dot_u8u8 n=%zu off=(%zu,%zu) fill=%d: got (%u,%u,%u), "
                  "reference (%u,%u,%u)",
                  k->name, n, off_a, off_b, fill, got, got_a, got_b, ref_dot,
                  ref_a, ref_b);

    buf_free(&ba);
    buf_free(&bb);
}

START_TEST(test_u8u8)
{
    const sv_kernels *k = variants[_i];
    uint64_t rng = 0x5EED0003ull;
    for (size_t li = 0; li < N_LENGTHS; li++) {
        for (int t = 0; t < TRIALS; t++)
            run_u8u8(k, lengths[li], &rng, 0);
        run_u8u8(k, lengths[li], &rng, 255);
    }
}
END_TEST

/* The largest allowed n: all-255 inputs give a dot of 65536 * 255 * 255,
 * above INT32_MAX and just below 2^32, so any signed or 16-bit overflow
 * along the way shows. */
START_TEST(test_u8u8_max)
{
    const sv_kernels *k = variants[_i];
    uint64_t rng = 0x5EED0004ull;
    for (int t = 0; t < 3; t++) {
        run_u8u8(k, 65536, &rng, 255);
        run_u8u8(k, 65536, &rng, 0);
    }
    /* And one step short of it, for the tail paths. */
    run_u8u8(k, 65536 - 13, &rng, 255);
}
END_TEST

/* ---- dispatch ---- */

START_TEST(test_available)
{
    ck_assert_uint_ge(n_variants, 1);
    ck_assert_str_eq(variants[0]->name, "scalar");
    for (size_t i = 0; i < n_variants; i++) {
        const sv_kernels *k = variants[i];
        ck_assert_ptr_nonnull(k->name);
        /* Compared by hand: ck_assert_ptr_* takes void *, which a
         * function pointer does not portably convert to. */
        ck_assert_msg(k->l2sq_f32 != NULL && k->dot_f32 != NULL &&
                          k->dot_f32u8 != NULL && k->dot_u8u8 != NULL,
                      "%s has a missing function", k->name);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(variants[j]->name, k->name);
    }

    /* The count honours cap, keeping scalar first. */
    const sv_kernels *one[1] = {NULL};
    ck_assert_uint_eq(sv_kernels_available(one, 1), 1);
    ck_assert_ptr_eq(one[0], variants[0]);
    ck_assert_uint_eq(sv_kernels_available(NULL, 0), 0);
}
END_TEST

START_TEST(test_by_name)
{
    const sv_kernels *s = sv_kernels_by_name("scalar");
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->name, "scalar");
    ck_assert_ptr_eq(s, variants[0]);
    for (size_t i = 0; i < n_variants; i++)
        ck_assert_ptr_eq(sv_kernels_by_name(variants[i]->name), variants[i]);
    ck_assert_ptr_null(sv_kernels_by_name("no-such-variant"));
    ck_assert_ptr_null(sv_kernels_by_name(""));
    ck_assert_ptr_null(sv_kernels_by_name(NULL));
}
END_TEST

START_TEST(test_best)
{
    const sv_kernels *best = sv_kernels_best();
    ck_assert_ptr_nonnull(best);
    int found = 0;
    for (size_t i = 0; i < n_variants; i++)
        found |= variants[i] == best;
    ck_assert_msg(found, "best variant %s is not in the available list", best->name);
    ck_assert_ptr_eq(sv_kernels_best(), best);
    printf("kernels: best is %s; available:", best->name);
    for (size_t i = 0; i < n_variants; i++)
        printf(" %s", variants[i]->name);
    printf("\n");
}
END_TEST

#define N_THREADS 8

static pthread_barrier_t start_barrier;

static void *best_thread(void *arg)
{
    const sv_kernels **out = arg;
    pthread_barrier_wait(&start_barrier);
    *out = sv_kernels_best();
    return NULL;
}

/* First calls from several threads at once all get the same answer. This
 * runs in its own suite before anything else asks for the kernels. */
START_TEST(test_best_threads)
{
    pthread_t th[N_THREADS];
    const sv_kernels *got[N_THREADS];
    ck_assert_int_eq(pthread_barrier_init(&start_barrier, NULL, N_THREADS), 0);
    for (int i = 0; i < N_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, best_thread, &got[i]), 0);
    for (int i = 0; i < N_THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start_barrier);
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_ptr_nonnull(got[i]);
        ck_assert_ptr_eq(got[i], got[0]);
    }
}
END_TEST

/* The filter masks: every variant as the scalar one, edges included
 * (the extremes of int64, an empty and a full span, values at the bounds). */
START_TEST(test_masks)
{
    const sv_kernels *k = variants[_i], *ref = sv_kernels_by_name("scalar");
    uint64_t x = 0x5EED0005ull;
    int64_t v[64];
    uint32_t c[64];
    static const int64_t edges[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX};
    for (int t = 0; t < 2000; t++) {
        for (int b = 0; b < 64; b++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            v[b] = t % 3 == 0 ? edges[(x >> 33) % 7] : (int64_t)((x >> 20) % 41) - 20;
            c[b] = (uint32_t)((x >> 40) % 5);
        }
        int64_t lo = t % 4 == 0 ? edges[t % 7] : (int64_t)(t % 21) - 10;
        uint64_t span = t % 5 == 0 ? UINT64_MAX : t % 7 == 0 ? 0 : (uint64_t)(t % 13);
        ck_assert_uint_eq(k->range_mask_i64(v, lo, span), ref->range_mask_i64(v, lo, span));
        ck_assert_uint_eq(k->eq_mask_u32(c, (uint32_t)(t % 5)), ref->eq_mask_u32(c, (uint32_t)(t % 5)));
    }
}
END_TEST

static Suite *first_call_suite(void)
{
    Suite *s = suite_create("kernels_first_call");
    TCase *tc = tcase_create("threads");
    tcase_add_test(tc, test_best_threads);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");

    TCase *tc = tcase_create("dispatch");
    tcase_add_test(tc, test_available);
    tcase_add_test(tc, test_by_name);
    tcase_add_test(tc, test_best);
    suite_add_tcase(s, tc);

    /* One loop iteration per variant, so a failure names it. */
    int nv = (int)n_variants;
    tc = tcase_create("versus_scalar");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_f32, 0, nv);
    tcase_add_loop_test(tc, test_f32u8, 0, nv);
    tcase_add_loop_test(tc, test_u8u8, 0, nv);
    tcase_add_loop_test(tc, test_u8u8_max, 0, nv);
    tcase_add_loop_test(tc, test_masks, 0, nv);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int failed = tu_run_suite(first_call_suite());

    /* The variant list is needed to size the loop tests. */
    n_variants = sv_kernels_available(variants, MAX_VARIANTS);

    failed += tu_run_suite(kernels_suite());
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
