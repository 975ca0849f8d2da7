/*
 * Vector store: one fixed-size record per slot, float32 or 8-bit codes (see
 * quantizer.h), in chunks of ~32 KiB that never move, so readers hold plain
 * pointers while the chunk table grows (under the collection's write lock).
 * Chunks instead of one growing array: doubling an array wastes up to half
 * of it, a chunk at most one chunk per collection.
 *
 * Distances. Search distances follow the metric: L2 squared distance, IP
 * -<q,x>, cosine 1 - <q,x> on unit vectors. The graph is built with squared
 * L2 for L2 and cosine (on unit vectors L2 orders like cosine and gives the
 * prune a metric to scale by alpha) and with -<a,b> for IP: a graph built on
 * L2 reached recall 0.77 for IP queries on the founding set where one built
 * on IP reached 0.95.
 *
 * Not thread-safe by itself: records are written only for slots no reader
 * can reach yet; the chunk table only grows under the collection write lock.
 */
#ifndef SV_STORE_H
#define SV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "kernels.h"
#include "slimvec.h"

typedef struct sv_store sv_store;

sv_store *sv_store_create(const sv_allocator *a, sv_tally *t, uint32_t dim, sv_storage storage,
                          sv_metric metric);
void sv_store_free(sv_store *s);

/* Make room for slots [0, n_slots). */
sv_status sv_store_reserve(sv_store *s, uint32_t n_slots);
uint32_t sv_store_capacity(const sv_store *s);

/* int8 only: train the quantizer once (mean of the vectors). No-op for f32
 * and when already trained. */
sv_status sv_store_train(sv_store *s, const float *vectors, size_t n);
int sv_store_trained(const sv_store *s);
/* int8: set the mean of an untrained quantizer (a snapshot or log replay).
 * SV_ERR_INVALID_ARGUMENT when trained already or not int8. */
sv_status sv_store_set_mean(sv_store *s, const float *mean);
/* The quantizer mean (dim floats), NULL when untrained or f32. */
const float *sv_store_mean(const sv_store *s);
/* Chunk i's records (NULL past the reserved chunks) and its record count:
 * snapshots copy whole chunks. Records of slots never written are zero. */
uint8_t *sv_store_chunk(const sv_store *s, uint32_t i, uint32_t *n_records);

/* Compaction (no reader, the collection's write lock): copy a record to
 * another slot; release the chunks wholly past n_slots. */
void sv_store_move(sv_store *s, uint32_t from, uint32_t to);
void sv_store_shrink(sv_store *s, uint32_t n_slots);

/* Write slot's record from a (validated, normalised for cosine) vector. */
void sv_store_put(sv_store *s, uint32_t slot, const float *x);
/* The stored vector (dequantized for int8). */
void sv_store_get(const sv_store *s, uint32_t slot, float *out);

const uint8_t *sv_store_record(const sv_store *s, uint32_t slot);
size_t sv_store_record_size(const sv_store *s);
uint32_t sv_store_dim(const sv_store *s);

/*
 * A prepared query. `build` selects the build distance instead of the
 * metric's. Owns a dim-float buffer from the store's allocator; free with
 * sv_query_release.
 */
typedef struct sv_query {
    const sv_store *store;
    float *vec;   /* kernel operand: q - mu (L2, int8) or q */
    float sum;    /* sum of vec */
    float c0;     /* L2: |vec|^2; IP int8: <q, mu> */
    int l2;       /* 1: squared L2; 0: the metric's IP/cosine form */
} sv_query;

sv_status sv_query_prepare(sv_query *q, const sv_store *s, const float *vec, int build);
void sv_query_release(sv_query *q);

/* Distance from a prepared query to a slot's record. */
float sv_query_distance(const sv_query *q, uint32_t slot);
/* Distances to n slots (prefetching them all first). */
void sv_query_distances(const sv_query *q, const uint32_t *slots, uint32_t n, float *out);

/* 1 when the build distance is squared L2 (metric L2 or cosine), 0 for IP. */
int sv_store_build_is_l2(const sv_store *s);
/* The build distance between two stored records. */
float sv_store_build_distance(const sv_store *s, uint32_t a, uint32_t b);

/* The distance of the metric between two float vectors (buffer search). */
float sv_metric_distance_f32(const sv_kernels *k, sv_metric m, const float *a, const float *b,
                             size_t n);

#endif
