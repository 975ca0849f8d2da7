/*
 * The process's memory against its cap. jemalloc's allocated bytes plus its
 * metadata (the arenas' own bookkeeping, which many collections multiply)
 * are what the cap bounds; reading them needs a statistics refresh, which
 * is done at most once per REFRESH_MS whoever asks, so a request never pays
 * for one per call.
 */
#ifndef SVD_MEMORY_H
#define SVD_MEMORY_H

#include <stddef.h>
#include <stdint.h>

typedef struct svd_memory svd_memory;

/*
 * cap 0: no cap. limit: the memory limit the cap came from (0: unknown).
 * Calls that keep what they allocate (ingest, create) stop at the cap;
 * calls whose memory is transient (search, get, list: freed once the
 * answer is sent) may go past it by at most `headroom`, the server's
 * in-flight budget, which bounds them anyway: so a server full of data
 * still answers reads.
 */
svd_memory *svd_memory_create(uint64_t cap, uint64_t limit, uint64_t headroom);
void svd_memory_free(svd_memory *m);
uint64_t svd_memory_cap(const svd_memory *m);
uint64_t svd_memory_limit(const svd_memory *m);

/* jemalloc allocated + metadata bytes, at most REFRESH_MS old. */
uint64_t svd_memory_used(svd_memory *m);
/* 1 when `need` more bytes fit under the cap (plus the headroom when
 * `transient`; always without a cap); else 0 and `why` says what does not
 * fit. */
int svd_memory_admit(svd_memory *m, uint64_t need, int transient, char *why, size_t cap);

#endif
