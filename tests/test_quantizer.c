/*
 * Tests for the 8-bit quantizer (core/quantizer.h) and the vector store's
 * distances (core/store.h).
 *
 * Why: search quality and every byte figure rest on the record format. A
 * record must reconstruct each component to within half a quantization step
 * (anything worse is an encoding bug, not quantization noise), its cached
 * norm must be the norm of what decodes (the L2 shortcut subtracts it), and
 * the store's algebraic shortcuts (asymmetric float x code, symmetric code x
 * code, the mean terms of IP) must equal the plain distance between the
 * query and the decoded vector. The tally must match the allocations, since
 * stats report it as the vector memory.
 *
 * How: seeded Gaussian data in several shapes (plain, offset by 100, one
 * huge outlier component, constant) at dims 1, 7, 128 and 784. Expected
 * distances are computed in double from the decoded floats. Float
 * tolerances are relative to the "mass" of each distance: the sum of the
 * absolute values of the terms the store's formula adds, since a float sum
 * can only be trusted to a few ulps of that, not of its (possibly tiny)
 * result.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "kernels.h"
#include "quantizer.h"
#include "slimvec.h"
#include "store.h"
#include "testutil.h"

/* Distances: error allowed per unit of mass. A float32 sum of n terms
 * reordered by SIMD lanes is good to ~sqrt(n) ulps of its mass; 1e-5 leaves
 * a wide margin at dim 784 and still catches a dropped or doubled term. */
#define MASS_TOL 1e-5

static const uint32_t dims[] = {1, 7, 128, 784};
#define N_DIMS (sizeof dims / sizeof dims[0])
#define MAX_DIM 784

/* ---- helpers ------------------------------------------------------------- */

static float *alloc_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void normalise_rows(float *v, size_t n, uint32_t dim)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (uint32_t j = 0; j < dim; j++)
            s += (double)v[i * dim + j] * v[i * dim + j];
        float inv = (float)(1.0 / sqrt(s));
        for (uint32_t j = 0; j < dim; j++)
            v[i * dim + j] *= inv;
    }
}

static double dot_d(const float *a, const float *b, uint32_t dim)
{
    double s = 0.0;
    for (uint32_t j = 0; j < dim; j++)
        s += (double)a[j] * b[j];
    return s;
}

static double l2sq_d(const float *a, const float *b, uint32_t dim)
{
    double s = 0.0;
    for (uint32_t j = 0; j < dim; j++) {
        double d = (double)a[j] - b[j];
        s += d * d;
    }
    return s;
}

/* ---- round trip ---------------------------------------------------------- */

/*
 * Encode and decode every row of x (n x dim) against `mean`; each component
 * must come back within delta/2 plus float rounding, lo must be min(x - mean),
 * delta (max - min)/255, and the header norm |decoded - mean|^2.
 */
static void check_round_trip(const char *what, const float *x, size_t n, uint32_t dim,
                             const float *mean)
{
    /* On the stack: a failed check (no fork) must not leak them. */
    uint8_t rec[SV_QREC_HEADER + MAX_DIM];
    float dec[MAX_DIM];
    ck_assert_uint_le(dim, MAX_DIM);
    double worst = 0.0; /* largest |error| / (delta/2), for the log */
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * dim;
        float lo = INFINITY, hi = -INFINITY;
        for (uint32_t j = 0; j < dim; j++) {
            float r = v[j] - mean[j];
            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
        }
        sv_quant_encode(mean, dim, v, rec);
        sv_quant_decode(mean, dim, rec, dec);
        sv_qrec_header h = sv_quant_header(rec);
        ck_assert_msg(h.lo == lo, "%s dim %u row %zu: header lo %.9g, min(x - mean) is %.9g", what,
                      dim, i, (double)h.lo, (double)lo);
        double want_delta = ((double)hi - lo) / 255.0;
        /* (a subnormal delta is good to its absolute ulp only) */
        ck_assert_msg(h.delta >= 0.0f &&
                          fabs(h.delta - want_delta) <= 1e-6 * want_delta + 2.0 * FLT_TRUE_MIN,
                      "%s dim %u row %zu: header delta %.9g, (max - min)/255 is %.9g", what, dim, i,
                      (double)h.delta, want_delta);
        const uint8_t *codes = rec + SV_QREC_HEADER;
        double norm = 0.0;
        for (uint32_t j = 0; j < dim; j++) {
            /* Rounding in encode and decode: a few ulps of the magnitudes
             * that are added (mean, lo, up to 255 steps, the input), and
             * 255 times the absolute ulp of a subnormal delta. */
            double eps = 8.0 * FLT_EPSILON *
                             (fabs(mean[j]) + fabs(h.lo) + 255.0 * h.delta + fabs(v[j])) +
                         255.0 * FLT_TRUE_MIN;
            double err = fabs((double)dec[j] - v[j]);
            ck_assert_msg(err <= h.delta / 2.0 + eps,
                          "%s dim %u row %zu comp %u: x %.9g decoded %.9g (code %u), error %.3g "
                          "over delta/2 = %.3g (+ %.3g rounding)",
                          what, dim, i, j, (double)v[j], (double)dec[j], codes[j], err,
                          h.delta / 2.0, eps);
            if (h.delta > 0.0f && err / (h.delta / 2.0) > worst)
                worst = err / (h.delta / 2.0);
            double r = (double)dec[j] - mean[j];
            norm += r * r;
        }
        ck_assert_msg(fabs(h.norm - norm) <= 1e-4 * norm + 1e-30,
                      "%s dim %u row %zu: header norm %.9g, |decoded - mean|^2 is %.9g", what, dim, i,
                      (double)h.norm, norm);
        if (h.delta > 0.0f) {
            /* The range is used in full: some code is 0 and some is 255. */
            uint8_t cmin = 255, cmax = 0;
            for (uint32_t j = 0; j < dim; j++) {
                cmin = codes[j] < cmin ? codes[j] : cmin;
                cmax = codes[j] > cmax ? codes[j] : cmax;
            }
            ck_assert_msg(cmin == 0 && cmax == 255, "%s dim %u row %zu: codes span %u..%u, not 0..255",
                          what, dim, i, cmin, cmax);
        } else {
            for (uint32_t j = 0; j < dim; j++)
                ck_assert_msg(codes[j] == 0, "%s dim %u row %zu: delta 0 but code[%u] = %u", what, dim,
                              i, j, codes[j]);
        }
    }
    fprintf(stderr, "round trip %-22s dim %4u: worst error %.3f of delta/2\n", what, dim, worst);
}

START_TEST(test_round_trip)
{
    const size_t n = 200;
    for (size_t d = 0; d < N_DIMS; d++) {
        uint32_t dim = dims[d];
        float *x = tu_gaussian(n, dim, 100 + d);
        float *mean = alloc_floats(dim);
        float *zero = calloc(dim, sizeof *zero);
        ck_assert_ptr_nonnull(zero);

        /* plain Gaussian, trained mean and no mean */
        sv_quant_train(x, n, dim, mean);
        check_round_trip("gaussian", x, n, dim, mean);
        check_round_trip("gaussian, zero mean", x, n, dim, zero);

        /* offset: every component ~ N(100, 1) */
        for (size_t i = 0; i < n * dim; i++)
            x[i] += 100.0f;
        sv_quant_train(x, n, dim, mean);
        for (uint32_t j = 0; j < dim; j++)
            ck_assert_msg(fabsf(mean[j] - 100.0f) < 0.5f, "dim %u: trained mean[%u] = %g, not ~100", dim,
                          j, (double)mean[j]);
        check_round_trip("offset 100", x, n, dim, mean);
        check_round_trip("offset 100, zero mean", x, n, dim, zero);
        for (size_t i = 0; i < n * dim; i++)
            x[i] -= 100.0f;

        /* one huge outlier component per row (a different one each row) */
        for (size_t i = 0; i < n; i++)
            x[i * dim + i % dim] = (i % 2 ? -1.0f : 1.0f) * 1.0e5f;
        sv_quant_train(x, n, dim, mean);
        check_round_trip("outlier 1e5", x, n, dim, mean);
        check_round_trip("outlier 1e5, zero mean", x, n, dim, zero);

        /* constant rows: delta 0 against a zero mean, a spread against a
         * trained one */
        for (size_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < dim; j++)
                x[i * dim + j] = 0.25f * (float)i - 7.0f;
        check_round_trip("constant, zero mean", x, n, dim, zero);
        float *g = tu_gaussian(1, dim, 200 + d);
        check_round_trip("constant, gauss mean", x, n, dim, g);
        free(g);
        /* a row equal to the mean: all residuals 0, norm 0 */
        check_round_trip("equal to the mean", mean, 1, dim, mean);

        free(zero);
        free(mean);
        free(x);
    }
}
END_TEST

/*
 * Residual ranges so small that delta is a subnormal float (range below
 * ~255 * FLT_MIN = 3e-36). Such rows are finite with a finite squared norm,
 * so sv_collection_add takes them (a data set scaled to ~1e-38, or a row
 * within 1e-36 of the mean). Each component must still come back within
 * delta/2. Encoding with a reciprocal 1/delta overflows to infinity here and
 * codes every component above lo as 255.
 */
START_TEST(test_round_trip_tiny_range)
{
    const uint32_t dim = 4;
    const float zero[4] = {0};
    const float rows[][4] = {
        {1e-38f, 2e-38f, 3e-38f, 0.0f},   /* delta 1.2e-40 */
        {0.0f, 1e-40f, 5e-41f, 2e-41f},   /* delta 3.9e-43 */
        {-2e-37f, 1e-37f, 0.0f, 5e-38f},  /* delta 1.2e-39 */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char what[40];
        snprintf(what, sizeof what, "tiny range %zu", i);
        check_round_trip(what, rows[i], 1, dim, zero);
    }
}
END_TEST

/* sv_quant_train is the per-component mean, computed in double. */
START_TEST(test_train_mean)
{
    const uint32_t dim = 7;
    const size_t n = 1001;
    float *x = tu_gaussian(n, dim, 11);
    for (size_t i = 0; i < n * dim; i++)
        x[i] = x[i] * 3.0f + (float)(i % dim) * 1000.0f;
    float mean[7];
    sv_quant_train(x, n, dim, mean);
    for (uint32_t j = 0; j < dim; j++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += x[i * dim + j];
        float want = (float)(s / (double)n);
        ck_assert_msg(mean[j] == want, "mean[%u] = %.9g, expected %.9g", j, (double)mean[j],
                      (double)want);
    }
    free(x);
}
END_TEST

/* ---- reconstruction error ------------------------------------------------ */

START_TEST(test_reconstruction_error)
{
    const uint32_t dim = 128;
    const size_t n = 2000;
    float *x = tu_gaussian(n, dim, 12);
    float *mean = alloc_floats(dim);
    float *dec = alloc_floats(dim);
    uint8_t *rec = malloc(sv_quant_record_size(dim));
    ck_assert_ptr_nonnull(rec);
    sv_quant_train(x, n, dim, mean);
    double sum_rel = 0.0, max_rel = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * dim;
        sv_quant_encode(mean, dim, v, rec);
        sv_quant_decode(mean, dim, rec, dec);
        double rel = sqrt(l2sq_d(v, dec, dim) / dot_d(v, v, dim));
        sum_rel += rel;
        max_rel = rel > max_rel ? rel : max_rel;
    }
    double mean_rel = sum_rel / (double)n;
    fprintf(stderr, "reconstruction |x - x^|/|x|, 128-dim gaussian: mean %.5f, max %.5f\n", mean_rel,
            max_rel);
    ck_assert_msg(mean_rel < 0.01, "mean relative reconstruction error %.5f is not below 0.01",
                  mean_rel);
    ck_assert_msg(max_rel < 0.02, "worst relative reconstruction error %.5f is not below 0.02",
                  max_rel);
    free(rec);
    free(dec);
    free(mean);
    free(x);
}
END_TEST

/* ---- store distances ----------------------------------------------------- */

/* The mass of an int8 query distance: the absolute terms of the store's
 * formula (store.c), which a float evaluation is good to a few ulps of. */
static double int8_query_mass(const float *q, const float *mean, const uint8_t *rec, uint32_t dim,
                              int l2)
{
    sv_qrec_header h = sv_quant_header(rec);
    const uint8_t *c = rec + SV_QREC_HEADER;
    double qq = 0.0, q1 = 0.0, qc = 0.0, qm = 0.0;
    for (uint32_t j = 0; j < dim; j++) {
        double v = l2 ? (double)q[j] - mean[j] : (double)q[j];
        qq += v * v;
        q1 += fabs(v);
        qc += fabs(v) * c[j];
        qm += fabs((double)q[j] * mean[j]);
    }
    double part = fabs(h.lo) * q1 + h.delta * qc;
    return l2 ? qq + h.norm + 2.0 * part : qm + part;
}

static double int8_build_mass(const uint8_t *ra, const uint8_t *rb, const float *mean, uint32_t dim,
                              int l2)
{
    sv_qrec_header ha = sv_quant_header(ra), hb = sv_quant_header(rb);
    const uint8_t *ca = ra + SV_QREC_HEADER, *cb = rb + SV_QREC_HEADER;
    double sa = 0, sb = 0, ab = 0, m1 = 0, mm = 0, mca = 0, mcb = 0;
    for (uint32_t j = 0; j < dim; j++) {
        sa += ca[j];
        sb += cb[j];
        ab += (double)ca[j] * cb[j];
        m1 += fabs(mean[j]);
        mm += (double)mean[j] * mean[j];
        mca += fabs(mean[j]) * ca[j];
        mcb += fabs(mean[j]) * cb[j];
    }
    double inner = dim * fabs((double)ha.lo * hb.lo) + fabs(ha.lo) * hb.delta * sb +
                   fabs(hb.lo) * ha.delta * sa + (double)ha.delta * hb.delta * ab;
    if (l2)
        return (double)ha.norm + hb.norm + 2.0 * inner;
    return mm + fabs(ha.lo) * m1 + ha.delta * mca + fabs(hb.lo) * m1 + hb.delta * mcb + inner;
}


/* The mass of an f32 distance: L2 sums squares of differences (all
 * positive); a dot product sums |a_i b_i|. */
static double f32_mass(const float *a, const float *b, uint32_t dim, int l2)
{
    if (l2)
        return l2sq_d(a, b, dim);
    double s = 0.0;
    for (uint32_t j = 0; j < dim; j++)
        s += fabs((double)a[j] * b[j]);
    return s;
}

/* Distance under a metric (0 = L2, the build form) between a and b, in double. */
static double ref_distance(sv_metric m, int build, const float *a, const float *b, uint32_t dim)
{
    int l2 = m == SV_METRIC_L2 || (build && m == SV_METRIC_COSINE);
    if (l2)
        return l2sq_d(a, b, dim);
    double dot = dot_d(a, b, dim);
    return m == SV_METRIC_COSINE ? 1.0 - dot : -dot;
}

static const char *build_name(int build)
{
    return build ? "build" : "search";
}

/* Worst |error| / mass seen per storage, for the log. */
static double worst_ratio[2];

/*
 * One store of n rows (Gaussian + 0.5, so the mean is not zero; unit rows
 * for cosine) and nq queries (the first two are stored rows, where L2
 * distances are ~0 and cancel the most). Every query distance (search and
 * build form) and a spread of record pairs are held to the distance of the
 * decoded vectors.
 */
static void check_store(sv_storage storage, sv_metric metric, uint32_t dim, size_t n, size_t nq,
                        uint64_t seed)
{
    char what[80];
    snprintf(what, sizeof what, "%s/%s dim %u", sv_storage_name(storage), sv_metric_name(metric), dim);
    float *x = tu_gaussian(n, dim, seed);
    float *q = tu_gaussian(nq, dim, seed + 1);
    for (size_t i = 0; i < n * dim; i++)
        x[i] += 0.5f;
    for (size_t i = 0; i < nq * dim; i++)
        q[i] += 0.5f;
    if (metric == SV_METRIC_COSINE) {
        normalise_rows(x, n, dim);
        normalise_rows(q, nq, dim);
    }
    memcpy(q, x, dim * sizeof *q);
    memcpy(q + dim, x + (n / 2) * dim, dim * sizeof *q);

    sv_tally tally = {0};
    sv_store *s = sv_store_create(sv_allocator_default(), &tally, dim, storage, metric);
    ck_assert_msg(s != NULL, "%s: sv_store_create failed", what);
    ck_assert_uint_eq(sv_store_dim(s), dim);
    ck_assert_msg(sv_store_trained(s) == (storage == SV_STORAGE_F32), "%s: trained %d before training",
                  what, sv_store_trained(s));
    ck_assert_msg(sv_store_train(s, x, n) == SV_OK, "%s: train failed", what);
    ck_assert_msg(sv_store_trained(s), "%s: not trained after sv_store_train", what);
    ck_assert_msg(sv_store_build_is_l2(s) == (metric != SV_METRIC_IP), "%s: build_is_l2 %d", what,
                  sv_store_build_is_l2(s));
    size_t want_rec = storage == SV_STORAGE_INT8 ? sv_quant_record_size(dim) : dim * sizeof(float);
    ck_assert_msg(sv_store_record_size(s) == want_rec, "%s: record size %zu, expected %zu", what,
                  sv_store_record_size(s), want_rec);
    ck_assert_msg(sv_store_reserve(s, (uint32_t)n) == SV_OK, "%s: reserve failed", what);
    ck_assert_msg(sv_store_capacity(s) >= n, "%s: capacity %u after reserving %zu", what,
                  sv_store_capacity(s), n);
    for (size_t i = 0; i < n; i++)
        sv_store_put(s, (uint32_t)i, x + i * dim);

    /* What each record decodes to; for int8 also the record itself, byte
     * for byte what the quantizer makes with the mean of the same rows. */
    float *mean = calloc(dim, sizeof *mean);
    float *dec = alloc_floats(n * dim);
    float *own = alloc_floats(dim);
    uint8_t *rec = malloc(sv_quant_record_size(dim));
    ck_assert_ptr_nonnull(mean);
    ck_assert_ptr_nonnull(rec);
    if (storage == SV_STORAGE_INT8)
        sv_quant_train(x, n, dim, mean);
    for (size_t i = 0; i < n; i++) {
        float *d = dec + i * dim;
        sv_store_get(s, (uint32_t)i, d);
        if (storage == SV_STORAGE_F32) {
            ck_assert_msg(memcmp(d, x + i * dim, dim * sizeof *d) == 0,
                          "%s: slot %zu does not read back what was put", what, i);
            continue;
        }
        sv_quant_encode(mean, dim, x + i * dim, rec);
        ck_assert_msg(memcmp(sv_store_record(s, (uint32_t)i), rec, sv_quant_record_size(dim)) == 0,
                      "%s: record of slot %zu differs from sv_quant_encode with the trained mean",
                      what, i);
        sv_quant_decode(mean, dim, rec, own);
        ck_assert_msg(memcmp(d, own, dim * sizeof *d) == 0,
                      "%s: sv_store_get of slot %zu differs from sv_quant_decode", what, i);
    }

    uint32_t *slots = malloc(n * sizeof *slots);
    float *batch = alloc_floats(n);
    ck_assert_ptr_nonnull(slots);
    for (size_t i = 0; i < n; i++)
        slots[i] = (uint32_t)(n - 1 - i); /* any order */
    for (size_t qi = 0; qi < nq; qi++) {
        const float *qv = q + qi * dim;
        for (int build = 0; build < 2; build++) {
            sv_query pq;
            ck_assert_msg(sv_query_prepare(&pq, s, qv, build) == SV_OK, "%s: prepare failed", what);
            int l2 = metric == SV_METRIC_L2 || (build && metric == SV_METRIC_COSINE);
            for (size_t i = 0; i < n; i++) {
                const float *d = dec + i * dim;
                double want = ref_distance(metric, build, qv, d, dim);
                double mass = storage == SV_STORAGE_INT8
                                  ? int8_query_mass(qv, mean, sv_store_record(s, (uint32_t)i), dim, l2)
                                  : f32_mass(qv, d, dim, l2);
                if (metric == SV_METRIC_COSINE && !l2)
                    mass += 1.0; /* the 1 of 1 - dot */
                float got = sv_query_distance(&pq, (uint32_t)i);
                double err = fabs(got - want);
                ck_assert_msg(err <= MASS_TOL * mass + 1e-30,
                              "%s, %s distance of query %zu to slot %zu: %.9g, the decoded vector "
                              "gives %.9g (error %.3g, allowed %.3g)",
                              what, build_name(build), qi, i, (double)got, want, err, MASS_TOL * mass);
                if (mass > 0 && err / mass > worst_ratio[storage])
                    worst_ratio[storage] = err / mass;
            }
            sv_query_distances(&pq, slots, (uint32_t)n, batch);
            for (size_t i = 0; i < n; i++) {
                float one = sv_query_distance(&pq, slots[i]);
                ck_assert_msg(batch[i] == one,
                              "%s, %s: sv_query_distances[%zu] (slot %u) = %.9g, single %.9g", what,
                              build_name(build), i, slots[i], (double)batch[i], (double)one);
            }
            sv_query_release(&pq);
            ck_assert_ptr_null(pq.vec);
        }
    }

    /* Record pairs, including each record with itself. */
    int l2 = metric != SV_METRIC_IP;
    for (size_t i = 0; i < n; i += (n > 100 ? 7 : 1)) {
        size_t others[3] = {i, (i * 31 + 5) % n, n - 1 - i};
        for (int k = 0; k < 3; k++) {
            size_t j = others[k];
            const float *da = dec + i * dim, *db = dec + j * dim;
            double want = ref_distance(metric == SV_METRIC_IP ? SV_METRIC_IP : SV_METRIC_L2, 1, da, db,
                                       dim);
            double mass = storage == SV_STORAGE_INT8
                              ? int8_build_mass(sv_store_record(s, (uint32_t)i),
                                                sv_store_record(s, (uint32_t)j), mean, dim, l2)
                              : f32_mass(da, db, dim, l2);
            float got = sv_store_build_distance(s, (uint32_t)i, (uint32_t)j);
            double err = fabs(got - want);
            ck_assert_msg(err <= MASS_TOL * mass + 1e-30,
                          "%s, build distance of slots %zu and %zu: %.9g, the decoded vectors give "
                          "%.9g (error %.3g, allowed %.3g)",
                          what, i, j, (double)got, want, err, MASS_TOL * mass);
            if (mass > 0 && err / mass > worst_ratio[storage])
                worst_ratio[storage] = err / mass;
        }
    }

    ck_assert_msg(sv_tally_get(&tally) > 0, "%s: tally %lld with %zu records stored", what,
                  sv_tally_get(&tally), n);
    sv_store_free(s);
    ck_assert_msg(sv_tally_get(&tally) == 0, "%s: tally %lld after sv_store_free", what,
                  sv_tally_get(&tally));
    free(batch);
    free(slots);
    free(rec);
    free(own);
    free(dec);
    free(mean);
    free(q);
    free(x);
}

START_TEST(test_store_distances_int8)
{
    for (size_t d = 0; d < N_DIMS; d++)
        for (int m = 0; m < 3; m++)
            check_store(SV_STORAGE_INT8, (sv_metric)m, dims[d], dims[d] > 128 ? 600 : 1200, 6,
                        300 + 10 * d + (uint64_t)m);
    fprintf(stderr, "int8 store: worst distance error %.3g of its mass\n", worst_ratio[SV_STORAGE_INT8]);
}
END_TEST

START_TEST(test_store_distances_f32)
{
    for (size_t d = 0; d < N_DIMS; d++)
        for (int m = 0; m < 3; m++)
            check_store(SV_STORAGE_F32, (sv_metric)m, dims[d], dims[d] > 128 ? 600 : 1200, 6,
                        400 + 10 * d + (uint64_t)m);
    fprintf(stderr, "f32 store: worst distance error %.3g of its mass\n", worst_ratio[SV_STORAGE_F32]);
}
END_TEST

/* ---- tally --------------------------------------------------------------- */

/*
 * A counting allocator: each block carries its requested size in a header;
 * `live` sums good_size (32-byte classes) of the blocks outstanding, which is
 * what the tally should hold for the blocks charged to it.
 */
typedef struct counter {
    long long live;
    long long blocks;
} counter;

#define HDR 16

static size_t count_good(void *ctx, size_t size)
{
    (void)ctx;
    return (size + 31) & ~(size_t)31;
}

static void *count_alloc(void *ctx, size_t size)
{
    counter *c = ctx;
    unsigned char *p = malloc(size + HDR);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    c->live += (long long)count_good(ctx, size);
    c->blocks++;
    return p + HDR;
}

static void *count_realloc(void *ctx, void *ptr, size_t size)
{
    counter *c = ctx;
    if (!ptr)
        return count_alloc(ctx, size);
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *t = realloc(p, size + HDR);
    if (!t)
        return NULL;
    memcpy(t, &size, sizeof size);
    c->live += (long long)count_good(ctx, size) - (long long)count_good(ctx, old);
    return t + HDR;
}

static void count_free(void *ctx, void *ptr)
{
    counter *c = ctx;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    c->live -= (long long)count_good(ctx, old);
    c->blocks--;
    free(p);
}

START_TEST(test_store_tally)
{
    for (int st = 0; st < 2; st++) {
        const uint32_t dim = 100;
        const sv_storage storage = (sv_storage)st;
        counter cnt = {0, 0};
        sv_allocator a = {count_alloc, count_realloc, count_free, count_good, &cnt};
        sv_tally tally = {0};
        sv_store *s = sv_store_create(&a, &tally, dim, storage, SV_METRIC_IP);
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(sv_tally_get(&tally) == cnt.live, "%s: tally %lld, allocated %lld after create",
                      sv_storage_name(storage), sv_tally_get(&tally), cnt.live);
        float *x = tu_gaussian(64, dim, 500);
        ck_assert(sv_store_train(s, x, 64) == SV_OK);
        ck_assert(sv_store_train(s, x, 64) == SV_OK); /* once only */
        ck_assert_msg(sv_tally_get(&tally) == cnt.live, "%s: tally %lld, allocated %lld after train",
                      sv_storage_name(storage), sv_tally_get(&tally), cnt.live);
        /* Grow in steps past 16 chunks, so the chunk table reallocates. */
        uint32_t steps[] = {1, 500, 3000, 12000, 12000, 20000};
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
            ck_assert(sv_store_reserve(s, steps[k]) == SV_OK);
            ck_assert_msg(sv_store_capacity(s) >= steps[k], "capacity %u < %u", sv_store_capacity(s),
                          steps[k]);
            ck_assert_msg(sv_tally_get(&tally) == cnt.live,
                          "%s: tally %lld, allocated %lld after reserving %u slots",
                          sv_storage_name(storage), sv_tally_get(&tally), cnt.live, steps[k]);
        }
        for (uint32_t i = 0; i < 64; i++)
            sv_store_put(s, i * 311, x + (size_t)i * dim);
        /* A prepared query holds scratch from the allocator but is not part
         * of the store: the tally leaves it out, the allocator sees it. */
        sv_query q;
        ck_assert(sv_query_prepare(&q, s, x, 0) == SV_OK);
        ck_assert_msg(cnt.live == sv_tally_get(&tally) + (long long)count_good(NULL, dim * sizeof(float)),
                      "%s: with a query prepared, allocated %lld, tally %lld", sv_storage_name(storage),
                      cnt.live, sv_tally_get(&tally));
        sv_query_release(&q);
        ck_assert_msg(sv_tally_get(&tally) == cnt.live, "%s: tally %lld, allocated %lld after a query",
                      sv_storage_name(storage), sv_tally_get(&tally), cnt.live);
        fprintf(stderr, "%s store, 20000 slots of dim %u: %lld bytes in %lld blocks\n",
                sv_storage_name(storage), dim, cnt.live, cnt.blocks);
        sv_store_free(s);
        ck_assert_msg(sv_tally_get(&tally) == 0, "%s: tally %lld after free", sv_storage_name(storage),
                      sv_tally_get(&tally));
        ck_assert_msg(cnt.live == 0 && cnt.blocks == 0, "%s: %lld bytes in %lld blocks leaked by free",
                      sv_storage_name(storage), cnt.live, cnt.blocks);
        free(x);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("quantizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_round_trip_tiny_range);
    tcase_add_test(tc, test_train_mean);
    tcase_add_test(tc, test_reconstruction_error);
    tcase_add_test(tc, test_store_distances_int8);
    tcase_add_test(tc, test_store_distances_f32);
    tcase_add_test(tc, test_store_tally);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
