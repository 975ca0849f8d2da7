/*
 * AVX-512 distance kernels: "avx512" needs F + BW, "avx512vnni" adds
 * AVX512-VNNI for the u8 x u8 dot and reuses the rest.
 *
 * The build is generic x86-64, so every function here carries a target
 * attribute instead of relying on -mavx512f; kernels.c hands these out only
 * after __builtin_cpu_supports says the CPU has the instructions.
 *
 * Tails use masked loads: masked-off lanes read as zero and cannot fault,
 * so a vector of any length ends in one partial step with no scalar loop.
 * BW is needed for the byte-masked loads and the 512-bit byte/word integer
 * ops of the u8 dot. The f32 loops keep four independent accumulators so
 * the FMA chains overlap.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels_impl.h"

#define SV_AVX512 __attribute__((target("avx512f,avx512bw")))
#define SV_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* Lanes [0, rem) set; rem < 16 (or < 64) by construction. */
static inline __mmask16 mask16(size_t rem)
{
    return (__mmask16)((1u << rem) - 1u);
}

static inline __mmask64 mask64(size_t rem)
{
    return (__mmask64)((1ull << rem) - 1ull);
}

/* Sum of the int32 lanes as uint32. The lanes may have wrapped, but the true
 * total is below 2^32, so the sum modulo 2^32 is exact. Done by hand because
 * _mm512_reduce_add_epi32 finishes with a signed int addition, which could
 * overflow (undefined behaviour) near 2^32. */
SV_AVX512 static inline uint32_t hsum_epi32_512(__m512i v)
{
    __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(s4);
}

SV_AVX512 static float avx512_l2sq_f32(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
        __m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
        acc0 = _mm512_fmadd_ps(d0, d0, acc0);
        acc1 = _mm512_fmadd_ps(d1, d1, acc1);
        acc2 = _mm512_fmadd_ps(d2, d2, acc2);
        acc3 = _mm512_fmadd_ps(d3, d3, acc3);
    }
    /* Under 64 left: at most a 32 step, a 16 step and a masked step, each on
     * its own chain. */
    if (i + 32 <= n) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        acc0 = _mm512_fmadd_ps(d0, d0, acc0);
        acc1 = _mm512_fmadd_ps(d1, d1, acc1);
        i += 32;
    }
    if (i + 16 <= n) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        acc2 = _mm512_fmadd_ps(d, d, acc2);
        i += 16;
    }
    if (i < n) {
        __mmask16 m = mask16(n - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        acc3 = _mm512_fmadd_ps(d, d, acc3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

SV_AVX512 static float avx512_dot_f32(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
    }
    if (i + 32 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
        i += 32;
    }
    if (i + 16 <= n) {
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc2);
        i += 16;
    }
    if (i < n) {
        __mmask16 m = mask16(n - i);
        acc3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/* 16 codes -> 16 floats (the zero-extension folds the 16-byte load). */
SV_AVX512 static inline __m512 load16_u8_ps(const uint8_t *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
}

SV_AVX512 static float avx512_dot_f32u8(const float *q, const uint8_t *c, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load16_u8_ps(c + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), load16_u8_ps(c + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 32), load16_u8_ps(c + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 48), load16_u8_ps(c + i + 48), acc3);
    }
    if (i + 32 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load16_u8_ps(c + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), load16_u8_ps(c + i + 16), acc1);
        i += 32;
    }
    if (i + 16 <= n) {
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load16_u8_ps(c + i), acc2);
        i += 16;
    }
    if (i < n) {
        /* A 512-bit byte-masked load (BW) keeps this free of AVX512-VL; only
         * its low 16 bytes are used. */
        size_t rem = n - i;
        __m128i cv = _mm512_castsi512_si128(_mm512_maskz_loadu_epi8(mask64(rem), c + i));
        __m512 cf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(cv));
        acc3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask16(rem), q + i), cf, acc3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/*
 * One 64-byte step of the plain AVX-512 u8 x u8 dot. maddubs would saturate
 * (it treats one side as signed and adds pairs into int16), so each 16-bit
 * lane is split into its even byte (and 0x00FF) and odd byte (shift right
 * 8); madd_epi16 then multiplies and adds pairs of 0..255 exactly into int32.
 * The byte sums come from sad_epu8 against zero (eight bytes per 64-bit
 * lane). The int32 lanes may wrap; the total is below 2^32, so the final
 * sum modulo 2^32 is exact.
 */
SV_AVX512 static inline void u8u8_step(__m512i va, __m512i vb, __m512i *dot,
                                       __m512i *sa, __m512i *sb)
{
    const __m512i lo8 = _mm512_set1_epi16(0x00FF);
    const __m512i zero = _mm512_setzero_si512();
    __m512i even = _mm512_madd_epi16(_mm512_and_si512(va, lo8), _mm512_and_si512(vb, lo8));
    __m512i odd = _mm512_madd_epi16(_mm512_srli_epi16(va, 8), _mm512_srli_epi16(vb, 8));
    *dot = _mm512_add_epi32(*dot, _mm512_add_epi32(even, odd));
    *sa = _mm512_add_epi64(*sa, _mm512_sad_epu8(va, zero));
    *sb = _mm512_add_epi64(*sb, _mm512_sad_epu8(vb, zero));
}

SV_AVX512 static uint32_t avx512_dot_u8u8(const uint8_t *a, const uint8_t *b, size_t n,
                                          uint32_t *sum_a, uint32_t *sum_b)
{
    __m512i dot = _mm512_setzero_si512();
    __m512i sa = _mm512_setzero_si512(), sb = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        u8u8_step(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i), &dot, &sa, &sb);
    if (i < n) {
        __mmask64 m = mask64(n - i);
        u8u8_step(_mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i),
                  &dot, &sa, &sb);
    }
    *sum_a = (uint32_t)_mm512_reduce_add_epi64(sa);
    *sum_b = (uint32_t)_mm512_reduce_add_epi64(sb);
    return hsum_epi32_512(dot);
}

/*
 * One 64-byte step with VNNI. vpdpbusd multiplies unsigned bytes of its
 * first operand by signed bytes of its second and adds groups of four into
 * int32. b ^ 0x80 read as signed is b - 128, so dpbusd(a, b ^ 0x80) =
 * sum a*b - 128 * sum a; the caller adds 128 * sum a back. The
 * non-saturating dpbusd wraps rather than clamps, so the result is exact
 * modulo 2^32, and the true dot is below 2^32. The byte sums use sad_epu8,
 * which issues on a different port than dpbusd on Intel cores.
 */
SV_AVX512VNNI static inline void u8u8_vnni_step(__m512i va, __m512i vb, __m512i *dot,
                                                __m512i *sa, __m512i *sb)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i zero = _mm512_setzero_si512();
    *dot = _mm512_dpbusd_epi32(*dot, va, _mm512_xor_si512(vb, flip));
    *sa = _mm512_add_epi64(*sa, _mm512_sad_epu8(va, zero));
    *sb = _mm512_add_epi64(*sb, _mm512_sad_epu8(vb, zero));
}

SV_AVX512VNNI static uint32_t avx512vnni_dot_u8u8(const uint8_t *a, const uint8_t *b, size_t n,
                                                  uint32_t *sum_a, uint32_t *sum_b)
{
    /* Two dot chains (and two of each sum) since dpbusd has a latency of
     * several cycles; 128-dim codes take exactly two steps. */
    __m512i dot0 = _mm512_setzero_si512(), dot1 = _mm512_setzero_si512();
    __m512i sa0 = _mm512_setzero_si512(), sa1 = _mm512_setzero_si512();
    __m512i sb0 = _mm512_setzero_si512(), sb1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        u8u8_vnni_step(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i), &dot0, &sa0, &sb0);
        u8u8_vnni_step(_mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64),
                       &dot1, &sa1, &sb1);
    }
    if (i + 64 <= n) {
        u8u8_vnni_step(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i), &dot0, &sa0, &sb0);
        i += 64;
    }
    if (i < n) {
        /* Masked-off bytes of a are zero, so they add nothing whatever the
         * flipped b holds there. */
        __mmask64 m = mask64(n - i);
        u8u8_vnni_step(_mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i),
                       &dot1, &sa1, &sb1);
    }
    uint32_t s_a = (uint32_t)_mm512_reduce_add_epi64(_mm512_add_epi64(sa0, sa1));
    uint32_t s_b = (uint32_t)_mm512_reduce_add_epi64(_mm512_add_epi64(sb0, sb1));
    *sum_a = s_a;
    *sum_b = s_b;
    return hsum_epi32_512(_mm512_add_epi32(dot0, dot1)) + 128u * s_a;
}

/* 64 cells, 8 (or 16) at a time, with unsigned compares into masks. */
SV_AVX512 static uint64_t avx512_range_mask_i64(const int64_t *v, int64_t lo, uint64_t span)
{
    const __m512i vlo = _mm512_set1_epi64(lo), vspan = _mm512_set1_epi64((long long)span);
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b += 8) {
        __m512i d = _mm512_sub_epi64(_mm512_loadu_si512((const void *)(v + b)), vlo);
        m |= (uint64_t)_mm512_cmple_epu64_mask(d, vspan) << b;
    }
    return m;
}

SV_AVX512 static uint64_t avx512_eq_mask_u32(const uint32_t *c, uint32_t x)
{
    const __m512i vx = _mm512_set1_epi32((int)x);
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b += 16)
        m |= (uint64_t)_mm512_cmpeq_epu32_mask(_mm512_loadu_si512((const void *)(c + b)), vx) << b;
    return m;
}

const sv_kernels sv_kernels_avx512 = {
    .name = "avx512",
    .l2sq_f32 = avx512_l2sq_f32,
    .dot_f32 = avx512_dot_f32,
    .dot_f32u8 = avx512_dot_f32u8,
    .dot_u8u8 = avx512_dot_u8u8,
    .range_mask_i64 = avx512_range_mask_i64,
    .eq_mask_u32 = avx512_eq_mask_u32,
};

/* Only the u8 x u8 dot gains from VNNI; the rest is the F + BW code. */
const sv_kernels sv_kernels_avx512vnni = {
    .name = "avx512vnni",
    .l2sq_f32 = avx512_l2sq_f32,
    .dot_f32 = avx512_dot_f32,
    .dot_f32u8 = avx512_dot_f32u8,
    .dot_u8u8 = avx512vnni_dot_u8u8,
    .range_mask_i64 = avx512_range_mask_i64,
    .eq_mask_u32 = avx512_eq_mask_u32,
};
