/*
 * Distance kernels: a scalar reference and SIMD variants chosen at run time.
 *
 * Each variant is compiled with __attribute__((target(...))) in the default
 * build (no -march flags), and sv_kernels_best() picks the widest one the
 * CPU supports (__builtin_cpu_supports). Tests compare every variant the CPU
 * can run against the scalar one.
 *
 * The four kernels cover both storages:
 *   f32 x f32 squared L2 and dot      (float32 storage)
 *   f32 x u8 dot                      (a float query against 8-bit codes)
 *   u8 x u8 dot with both code sums   (code against code, graph building)
 */
#ifndef SV_KERNELS_H
#define SV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sv_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "avx512vnni" */
    float (*l2sq_f32)(const float *a, const float *b, size_t n);
    float (*dot_f32)(const float *a, const float *b, size_t n);
    float (*dot_f32u8)(const float *q, const uint8_t *c, size_t n);
    /* Returns sum a[i]*b[i]; *sum_a = sum a[i]; *sum_b = sum b[i].
     * n <= 65536, so every sum fits in uint32. */
    uint32_t (*dot_u8u8)(const uint8_t *a, const uint8_t *b, size_t n,
                         uint32_t *sum_a, uint32_t *sum_b);
    /* Filters over payload columns (core/payload/filter.c), 64 cells at a
     * time: bit b set when (uint64_t)(v[b] - lo) <= span (v[b] in lo..lo +
     * span, inclusive, in two's complement), or when c[b] == x. */
    uint64_t (*range_mask_i64)(const int64_t *v, int64_t lo, uint64_t span);
    uint64_t (*eq_mask_u32)(const uint32_t *c, uint32_t x);
} sv_kernels;

/* The best variant for this CPU (decided once, thread-safe). */
const sv_kernels *sv_kernels_best(void);

/* Every variant compiled in, scalar first; entries the CPU cannot run are
 * left out. Returns the count written (at most `cap`). */
size_t sv_kernels_available(const sv_kernels **out, size_t cap);

/* A variant by name if the CPU can run it, else NULL. */
const sv_kernels *sv_kernels_by_name(const char *name);

#endif
