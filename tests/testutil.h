/* Helpers shared by the core tests: seeded data, exact neighbours, recall. */
#ifndef SV_TESTUTIL_H
#define SV_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

/* n x dim standard normal floats (malloc'd; caller frees), fixed by seed. */
float *tu_gaussian(size_t n, uint32_t dim, uint64_t seed);

/* Exact k nearest rows of base for each query under metric (brute force);
 * rows flagged in `skip` (may be NULL) are left out. Returns n_q x k row
 * indexes (malloc'd). */
uint32_t *tu_exact_knn(const float *base, size_t n, const float *queries, size_t n_q, uint32_t dim,
                       uint32_t k, sv_metric metric, const uint8_t *skip);

/* Mean recall@k of searching every query in c (ids are decimal row numbers). */
double tu_recall(sv_collection *c, const float *queries, size_t n_q, uint32_t dim, uint32_t k,
                 uint32_t search_list, const uint32_t *truth);

/* Add n rows with ids "0".."n-1" given explicitly, in batches. */
void tu_add_rows(sv_collection *c, const float *base, size_t first, size_t n, uint32_t dim);

/* Run a suite, print Check's report; 0 when every test passed. */
int tu_run_suite(Suite *s);

#endif
