/* Small helpers the benchmark programs share: option numbers, time,
 * percentiles and JSON output. */
#ifndef SV_BENCHUTIL_H
#define SV_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A whole number in [min, max]; on error prints "prog: opt: ..." and
 * returns -1. */
int bu_parse_u64(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max,
                 uint64_t *out);
int bu_parse_u32(const char *prog, const char *opt, const char *s, uint32_t min, uint32_t max,
                 uint32_t *out);

/* "10,20,40" -> out[0..*n): each value in [min, max]; values below keep_min
 * are dropped with a note (not counted against cap). Prints "prog: opt: ..."
 * and returns -1 when a value is bad, more than cap are kept, or none is. */
int bu_parse_u32_list(const char *prog, const char *opt, const char *s, uint32_t min, uint32_t keep_min,
                      uint32_t max, uint32_t *out, size_t cap, size_t *n);

double bu_now_seconds(void); /* monotonic */

/* qsort comparator for doubles, and the nearest-rank percentile (0..1) of
 * a sorted array (NAN when empty). */
int bu_cmp_double(const void *a, const void *b);
double bu_percentile(const double *sorted, size_t n, double p);

/* JSON values: a number (null when not finite: JSON has no NaN or
 * infinity) and an escaped string (null for NULL). */
void bu_json_num(FILE *f, double v);
void bu_json_str(FILE *f, const char *s);

/* Reproducible standard-normal floats: splitmix64 and Box-Muller (the
 * benchmarks that make their own data share it, so the same seed gives the
 * same bytes in each). Start with {.s = seed}. */
/* splitmix64: the next 64 random bits of the stream *s (seeded by its start). */
uint64_t bu_splitmix64(uint64_t *s);

typedef struct bu_rng {
    uint64_t s;
    int has_spare;
    double spare;
} bu_rng;
void bu_fill_normal(bu_rng *r, float *out, size_t count);

#endif
