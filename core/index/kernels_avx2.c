/*
 * AVX2 + FMA distance kernels ("avx2"), and the same with a 256-bit AVX-VNNI
 * u8 x u8 dot ("avxvnni").
 *
 * The build is generic x86-64, so every function here carries a target
 * attribute instead of relying on -mavx2; kernels.c hands these out only
 * after __builtin_cpu_supports says the CPU has the instructions.
 *
 * The f32 loops keep four independent accumulators: one FMA chain would be
 * bound by FMA latency (4-5 cycles) rather than throughput (2 per cycle).
 * Loads are unaligned; what is left after the last full vector (under 8
 * floats or 16 bytes) is done in scalar code.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels_impl.h"

#define SV_AVX2 __attribute__((target("avx2,fma")))
#define SV_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

SV_AVX2 static inline float hsum_ps256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Horizontal sums in uint32: the lanes may have wrapped, but the true total
 * is below 2^32, so the sum modulo 2^32 is exact. */
SV_AVX2 static inline uint32_t hsum_epi32_128(__m128i v)
{
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(v);
}

SV_AVX2 static inline __m128i fold_epi32_256(__m256i v)
{
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

SV_AVX2 static inline uint32_t hsum_epi64_128(__m128i v)
{
    v = _mm_add_epi64(v, _mm_unpackhi_epi64(v, v));
    return (uint32_t)_mm_cvtsi128_si64(v);
}

SV_AVX2 static inline __m128i fold_epi64_256(__m256i v)
{
    return _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

SV_AVX2 static float avx2_l2sq_f32(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        acc0 = _mm256_fmadd_ps(d0, d0, acc0);
        acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        acc2 = _mm256_fmadd_ps(d2, d2, acc2);
        acc3 = _mm256_fmadd_ps(d3, d3, acc3);
    }
    /* Under 32 left: at most one 16 and one 8 step, on separate chains. */
    if (i + 16 <= n) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        acc0 = _mm256_fmadd_ps(d0, d0, acc0);
        acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        i += 16;
    }
    if (i + 8 <= n) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        acc2 = _mm256_fmadd_ps(d, d, acc2);
        i += 8;
    }
    float sum = hsum_ps256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++) {
        float d = a[i] - b[i];
        sum += d * d;
    }
    return sum;
}

SV_AVX2 static float avx2_dot_f32(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    if (i + 16 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        i += 16;
    }
    if (i + 8 <= n) {
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc2);
        i += 8;
    }
    float sum = hsum_ps256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* 8 codes -> 8 floats. The 8-byte load (movq) needs no alignment and reads
 * nothing past p + 8. */
SV_AVX2 static inline __m256 load8_u8_ps(const uint8_t *p)
{
    __m128i v = _mm_loadl_epi64((const __m128i *)p);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

SV_AVX2 static float avx2_dot_f32u8(const float *q, const uint8_t *c, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8_u8_ps(c + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8_u8_ps(c + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 16), load8_u8_ps(c + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 24), load8_u8_ps(c + i + 24), acc3);
    }
    if (i + 16 <= n) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8_u8_ps(c + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8_u8_ps(c + i + 8), acc1);
        i += 16;
    }
    if (i + 8 <= n) {
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8_u8_ps(c + i), acc2);
        i += 8;
    }
    float sum = hsum_ps256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += q[i] * (float)c[i];
    return sum;
}

/*
 * u8 x u8 without VNNI. maddubs would saturate (it treats one side as
 * signed and adds pairs into int16), so instead split each 16-bit lane into
 * its even byte (and 0x00FF) and odd byte (shift right 8): both halves are
 * then 0..255 in int16 and madd_epi16 multiplies and adds pairs exactly into
 * int32 (at most 2 * 255 * 255). The and/shift stay off the shuffle port
 * that unpacking would use. The byte sums come from sad_epu8 against zero,
 * which adds eight bytes into each 64-bit lane in one instruction.
 */
SV_AVX2 static uint32_t avx2_dot_u8u8(const uint8_t *a, const uint8_t *b, size_t n,
                                      uint32_t *sum_a, uint32_t *sum_b)
{
    const __m256i lo8 = _mm256_set1_epi16(0x00FF);
    const __m256i zero = _mm256_setzero_si256();
    __m256i dot = zero, sa = zero, sb = zero;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i vb = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i even = _mm256_madd_epi16(_mm256_and_si256(va, lo8), _mm256_and_si256(vb, lo8));
        __m256i odd = _mm256_madd_epi16(_mm256_srli_epi16(va, 8), _mm256_srli_epi16(vb, 8));
        dot = _mm256_add_epi32(dot, _mm256_add_epi32(even, odd));
        sa = _mm256_add_epi64(sa, _mm256_sad_epu8(va, zero));
        sb = _mm256_add_epi64(sb, _mm256_sad_epu8(vb, zero));
    }
    __m128i dot4 = fold_epi32_256(dot);
    __m128i sa2 = fold_epi64_256(sa), sb2 = fold_epi64_256(sb);
    if (i + 16 <= n) {
        const __m128i lo8x = _mm_set1_epi16(0x00FF);
        const __m128i zerox = _mm_setzero_si128();
        __m128i va = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i vb = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i even = _mm_madd_epi16(_mm_and_si128(va, lo8x), _mm_and_si128(vb, lo8x));
        __m128i odd = _mm_madd_epi16(_mm_srli_epi16(va, 8), _mm_srli_epi16(vb, 8));
        dot4 = _mm_add_epi32(dot4, _mm_add_epi32(even, odd));
        sa2 = _mm_add_epi64(sa2, _mm_sad_epu8(va, zerox));
        sb2 = _mm_add_epi64(sb2, _mm_sad_epu8(vb, zerox));
        i += 16;
    }
    uint32_t d = hsum_epi32_128(dot4);
    uint32_t s_a = hsum_epi64_128(sa2), s_b = hsum_epi64_128(sb2);
    for (; i < n; i++) {
        d += (uint32_t)a[i] * b[i];
        s_a += a[i];
        s_b += b[i];
    }
    *sum_a = s_a;
    *sum_b = s_b;
    return d;
}

/*
 * u8 x u8 with AVX-VNNI. vpdpbusd multiplies unsigned bytes of its first
 * operand by signed bytes of its second and adds groups of four into int32.
 * Flipping the top bit of b (b ^ 0x80, read as signed) gives b - 128, so
 * dpbusd(a, b ^ 0x80) = sum a*b - 128 * sum a; adding 128 * sum a back gives
 * the exact dot modulo 2^32, which is exact since it is below 2^32 (the
 * non-saturating dpbusd wraps, it does not clamp). The byte sums still come
 * from sad_epu8, which runs on another port than dpbusd.
 */
SV_AVXVNNI static uint32_t avxvnni_dot_u8u8(const uint8_t *a, const uint8_t *b, size_t n,
                                            uint32_t *sum_a, uint32_t *sum_b)
{
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i zero = _mm256_setzero_si256();
    /* Two dot chains: dpbusd has a latency of several cycles. */
    __m256i dot0 = zero, dot1 = zero, sa = zero, sb = zero;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i va0 = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i vb0 = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i va1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
        __m256i vb1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
        dot0 = _mm256_dpbusd_avx_epi32(dot0, va0, _mm256_xor_si256(vb0, flip));
        dot1 = _mm256_dpbusd_avx_epi32(dot1, va1, _mm256_xor_si256(vb1, flip));
        sa = _mm256_add_epi64(sa, _mm256_add_epi64(_mm256_sad_epu8(va0, zero),
                                                   _mm256_sad_epu8(va1, zero)));
        sb = _mm256_add_epi64(sb, _mm256_add_epi64(_mm256_sad_epu8(vb0, zero),
                                                   _mm256_sad_epu8(vb1, zero)));
    }
    if (i + 32 <= n) {
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i vb = _mm256_loadu_si256((const __m256i *)(b + i));
        dot0 = _mm256_dpbusd_avx_epi32(dot0, va, _mm256_xor_si256(vb, flip));
        sa = _mm256_add_epi64(sa, _mm256_sad_epu8(va, zero));
        sb = _mm256_add_epi64(sb, _mm256_sad_epu8(vb, zero));
        i += 32;
    }
    __m128i dot4 = fold_epi32_256(_mm256_add_epi32(dot0, dot1));
    __m128i sa2 = fold_epi64_256(sa), sb2 = fold_epi64_256(sb);
    if (i + 16 <= n) {
        const __m128i flipx = _mm_set1_epi8((char)0x80);
        const __m128i zerox = _mm_setzero_si128();
        __m128i va = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i vb = _mm_loadu_si128((const __m128i *)(b + i));
        dot4 = _mm_dpbusd_avx_epi32(dot4, va, _mm_xor_si128(vb, flipx));
        sa2 = _mm_add_epi64(sa2, _mm_sad_epu8(va, zerox));
        sb2 = _mm_add_epi64(sb2, _mm_sad_epu8(vb, zerox));
        i += 16;
    }
    uint32_t s_a = hsum_epi64_128(sa2), s_b = hsum_epi64_128(sb2);
    /* Undo the bias on the vector part before the scalar tail adds to s_a. */
    uint32_t d = hsum_epi32_128(dot4) + 128u * s_a;
    for (; i < n; i++) {
        d += (uint32_t)a[i] * b[i];
        s_a += a[i];
        s_b += b[i];
    }
    *sum_a = s_a;
    *sum_b = s_b;
    return d;
}

/* 64 cells, 4 at a time: AVX2 compares 64-bit lanes signed only, so the
 * unsigned (v - lo) <= span is done on values with the sign bit flipped. */
SV_AVX2 static uint64_t avx2_range_mask_i64(const int64_t *v, int64_t lo, uint64_t span)
{
    const __m256i flip = _mm256_set1_epi64x((long long)(UINT64_C(1) << 63));
    const __m256i vlo = _mm256_set1_epi64x(lo);
    const __m256i top = _mm256_xor_si256(_mm256_set1_epi64x((long long)span), flip);
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b += 4) {
        __m256i d = _mm256_xor_si256(_mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(v + b)), vlo), flip);
        /* outside: d > top (as signed after the flip) */
        __m256i out = _mm256_cmpgt_epi64(d, top);
        unsigned bits = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(out));
        m |= (uint64_t)(~bits & 0xfu) << b;
    }
    return m;
}

SV_AVX2 static uint64_t avx2_eq_mask_u32(const uint32_t *c, uint32_t x)
{
    const __m256i vx = _mm256_set1_epi32((int)x);
    uint64_t m = 0;
    for (unsigned b = 0; b < 64; b += 8) {
        __m256i eq = _mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i *)(c + b)), vx);
        m |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(eq)) << b;
    }
    return m;
}

const sv_kernels sv_kernels_avx2 = {
    .name = "avx2",
    .l2sq_f32 = avx2_l2sq_f32,
    .dot_f32 = avx2_dot_f32,
    .dot_f32u8 = avx2_dot_f32u8,
    .dot_u8u8 = avx2_dot_u8u8,
    .range_mask_i64 = avx2_range_mask_i64,
    .eq_mask_u32 = avx2_eq_mask_u32,
};

/* Only the u8 x u8 dot gains from VNNI; the rest is the AVX2 code. */
const sv_kernels sv_kernels_avxvnni = {
    .name = "avxvnni",
    .l2sq_f32 = avx2_l2sq_f32,
    .dot_f32 = avx2_dot_f32,
    .dot_f32u8 = avx2_dot_f32u8,
    .dot_u8u8 = avxvnni_dot_u8u8,
    .range_mask_i64 = avx2_range_mask_i64,
    .eq_mask_u32 = avx2_eq_mask_u32,
};
