/*
 * Internal: the kernel variants each SIMD file exports, so kernels.c can list
 * and dispatch them. Each table's functions are compiled with a target
 * attribute and must only be called after kernels.c has checked the CPU.
 */
#ifndef SV_KERNELS_IMPL_H
#define SV_KERNELS_IMPL_H

#include "kernels.h"

/* kernels.c: the portable mask kernels (the AVX2 tables use them too). */
uint64_t sv_scalar_range_mask_i64(const int64_t *v, int64_t lo, uint64_t span);
uint64_t sv_scalar_eq_mask_u32(const uint32_t *c, uint32_t x);

/* kernels_avx2.c: AVX2 + FMA. */
extern const sv_kernels sv_kernels_avx2;
/* kernels_avx2.c: AVX2 + FMA with the 256-bit AVX-VNNI dot for u8 x u8. */
extern const sv_kernels sv_kernels_avxvnni;
/* kernels_avx512.c: AVX-512 F + BW. */
extern const sv_kernels sv_kernels_avx512;
/* kernels_avx512.c: AVX-512 F + BW with AVX512-VNNI for u8 x u8. */
extern const sv_kernels sv_kernels_avx512vnni;

#endif
