/*
 * 8-bit quantizer: mean-centred, one scale and offset per vector (the LVQ
 * scheme of Aguerrebere et al., VLDB 2023).
 *
 * Training computes the mean mu of the first flushed batch. A vector x is
 * stored as r = x - mu ~= lo + delta * c, with lo = min(r), delta =
 * (max(r) - lo) / 255 and c[i] = round((r[i] - lo) / delta) in 0..255.
 *
 * Record layout (12 + dim bytes, no float copy of the vector anywhere):
 *
 *   +----------+----------+----------+---------------------+
 *   | lo (f32) | delta    | norm     | c[0] ... c[dim-1]   |
 *   |          | (f32)    | |r^|^2   | uint8 codes         |
 *   +----------+----------+----------+---------------------+
 *
 * `norm` is the squared norm of the reconstruction r^ = lo + delta*c, so a
 * squared L2 distance needs one dot product per pair:
 *   asymmetric  |qc - r^|^2 = |qc|^2 + norm - 2 (lo * sum(qc) + delta * <qc, c>)
 *   symmetric   |r^a - r^b|^2 = norm_a + norm_b - 2 <r^a, r^b>,
 *     <r^a, r^b> = dim lo_a lo_b + lo_a delta_b sum(b) + lo_b delta_a sum(a)
 *                  + delta_a delta_b <a, b>
 * and an inner product <q, x^> = <q, mu> + lo * sum(q) + delta * <q, c>.
 *
 * Why per-vector ranges: per-dimension min/max ranges are set by the worst
 * outlier of each dimension over the whole data set and waste most of the
 * 256 levels on real float embeddings; a vector's own range adapts to it.
 * Centering first removes the shared offset so the range covers only what
 * differs between vectors. Why asymmetric distances for queries: the query
 * is never quantized, which removes half the error at the cost of a float x
 * u8 kernel instead of an integer one; the integer kernel serves
 * code-to-code distances while building the graph.
 */
#ifndef SV_QUANTIZER_H
#define SV_QUANTIZER_H

#include <stddef.h>
#include <stdint.h>

#define SV_QREC_HEADER 12

typedef struct sv_qrec_header {
    float lo;
    float delta;
    float norm;
} sv_qrec_header;

static inline size_t sv_quant_record_size(uint32_t dim)
{
    return SV_QREC_HEADER + (size_t)dim;
}

/* mean[dim] = the mean of n vectors (n >= 1), computed in double. */
void sv_quant_train(const float *vectors, size_t n, uint32_t dim, float *mean);

/* Encode one finite vector into a record (layout above). */
void sv_quant_encode(const float *mean, uint32_t dim, const float *x, uint8_t *record);

/* Reconstruct mu + lo + delta * c into out[dim]. */
void sv_quant_decode(const float *mean, uint32_t dim, const uint8_t *record, float *out);

static inline sv_qrec_header sv_quant_header(const uint8_t *record)
{
    sv_qrec_header h;
    __builtin_memcpy(&h, record, sizeof h);
    return h;
}

#endif
