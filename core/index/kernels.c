/*
 * The scalar reference kernels and the run-time choice among variants.
 *
 * The build targets generic x86-64, so the SIMD variants (kernels_avx2.c,
 * kernels_avx512.c) are compiled with target attributes and may only be
 * called on a CPU that has those instructions. This file asks the CPU once
 * (__builtin_cpu_supports, which also checks that the OS saves the wider
 * register state) and keeps the list of variants it can run.
 *
 * The scalar variant is deliberately plain, one accumulator in source
 * order: it is the reference the tests hold every other variant to, and the
 * fallback for CPUs without AVX2.
 */
#include "kernels.h"

#include <pthread.h>
#include <string.h>

#include "kernels_impl.h"

static float scalar_l2sq_f32(const float *a, const float *b, size_t n)
{
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = a[i] - b[i];
        sum += d * d;
    }
    return sum;
}

static float scalar_dot_f32(const float *a, const float *b, size_t n)
{
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static float scalar_dot_f32u8(const float *q, const uint8_t *c, size_t n)
{
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++)
        sum += q[i] * (float)c[i];
    return sum;
}

static uint32_t scalar_dot_u8u8(const uint8_t *a, const uint8_t *b, size_t n,
                                uint32_t *sum_a, uint32_t *sum_b)
{
    /* n <= 65536 keeps every sum below 2^32 (65536 * 255 * 255 < 2^32). */
    uint32_t dot = 0, sa = 0, sb = 0;
    for (size_t i = 0; i < n; i++) {
        dot += (uint32_t)a[i] * b[i];
        sa += a[i];
        sb += b[i];
    }
    *sum_a = sa;
    *sum_b = sb;
    return dot;
}

uint64_t sv_scalar_range_mask_i64(const int64_t *v, int64_t lo, uint64_t span)
{
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b++)
        m |= (uint64_t)((uint64_t)v[b] - (uint64_t)lo <= span) << b;
    return m;
}

uint64_t sv_scalar_eq_mask_u32(const uint32_t *c, uint32_t x)
{
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b++)
        m |= (uint64_t)(c[b] == x) << b;
    return m;
}

static const sv_kernels sv_kernels_scalar = {
    .name = "scalar",
    .l2sq_f32 = scalar_l2sq_f32,
    .dot_f32 = scalar_dot_f32,
    .dot_f32u8 = scalar_dot_f32u8,
    .dot_u8u8 = scalar_dot_u8u8,
    .range_mask_i64 = sv_scalar_range_mask_i64,
    .eq_mask_u32 = sv_scalar_eq_mask_u32,
};

/* Every variant compiled in, from the narrowest to the widest. */
#define SV_KERNELS_MAX 5

/* Written once under detect_once, read-only afterwards. */
static const sv_kernels *g_available[SV_KERNELS_MAX];
static size_t g_count;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
    /* The libgcc constructor normally ran already; calling it again is
     * harmless and makes this safe from other constructors too. */
    __builtin_cpu_init();

    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#if defined(__clang__) && __clang_major__ < 16
    /* clang 14 (Debian 12) does not know the name; fuzz builds use clang. */
    int avxvnni = 0;
#else
    int avxvnni = avx2 && __builtin_cpu_supports("avxvnni");
#endif
    /* Every AVX-512 CPU also has AVX2 and FMA; requiring them costs nothing
     * and keeps any VEX code the compiler emits in those files legal. */
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512bw");
    int avx512vnni = avx512 && __builtin_cpu_supports("avx512vnni");

    size_t n = 0;
    g_available[n++] = &sv_kernels_scalar;
    if (avx2)
        g_available[n++] = &sv_kernels_avx2;
    if (avxvnni)
        g_available[n++] = &sv_kernels_avxvnni;
    if (avx512)
        g_available[n++] = &sv_kernels_avx512;
    if (avx512vnni)
        g_available[n++] = &sv_kernels_avx512vnni;
    g_count = n;
}

static void ensure_detected(void)
{
    pthread_once(&detect_once, detect);
}

const sv_kernels *sv_kernels_best(void)
{
    ensure_detected();
    /* The list goes from narrowest to widest, so the last entry is best. */
    return g_available[g_count - 1];
}

size_t sv_kernels_available(const sv_kernels **out, size_t cap)
{
    ensure_detected();
    size_t n = g_count < cap ? g_count : cap;
    for (size_t i = 0; i < n; i++)
        out[i] = g_available[i];
    return n;
}

const sv_kernels *sv_kernels_by_name(const char *name)
{
    if (name == NULL)
        return NULL;
    ensure_detected();
    for (size_t i = 0; i < g_count; i++) {
        if (strcmp(g_available[i]->name, name) == 0)
            return g_available[i];
    }
    return NULL;
}
