/*
 * Internal: the kernel variants each SIMD file exports, so kernels.c can list
 * and dispatch them. Each table's functions are compiled with a target
 * attribute and must only be called after kernels.c has checked the CPU.
 */
#ifndef SV_KERNELS_IMPL_H
#define SV_KERNELS_IMPL_H

#include "kernels.h"

/* kernels_avx2.c: AVX2 + FMA. */
extern const sv_kernels sv_kernels_avx2;
/* kernels_avx2.c: AVX2 + FMA with the 256-bit AVX-VNNI dot for u8 x u8. */
extern const sv_kernels sv_kernels_avxvnni;
/* kernels_avx512.c: AVX-512 F + BW. */
extern const sv_kernels sv_kernels_avx512;
/* kernels_avx512.c: AVX-512 F + BW with AVX512-VNNI for u8 x u8. */
extern const sv_kernels sv_kernels_avx512vnni;

#endif
