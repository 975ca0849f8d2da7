/*
 * In-place heapsort. The C library's qsort may allocate a merge buffer with
 * malloc (glibc does past 1 KiB), which would bypass the collection's
 * allocator hook and its arena; this sorts without allocating.
 */
#ifndef SV_SORT_H
#define SV_SORT_H

#include <stddef.h>

/* cmp(a, b, ctx) < 0 when a sorts before b. Not stable. */
typedef int (*sv_cmp_fn)(const void *a, const void *b, void *ctx);

void sv_sort(void *base, size_t n, size_t size, sv_cmp_fn cmp, void *ctx);

#endif
