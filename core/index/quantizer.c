/* 8-bit per-vector quantizer (see quantizer.h for the scheme and layout). */
#include "quantizer.h"

#include <math.h>
#include <string.h>

void sv_quant_train(const float *vectors, size_t n, uint32_t dim, float *mean)
{
    for (uint32_t j = 0; j < dim; j++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += vectors[i * dim + j];
        mean[j] = (float)(s / (double)n);
    }
}

void sv_quant_encode(const float *mean, uint32_t dim, const float *x, uint8_t *record)
{
    uint8_t *codes = record + SV_QREC_HEADER;
    float lo = INFINITY, hi = -INFINITY;
    for (uint32_t i = 0; i < dim; i++) {
        float r = x[i] - mean[i];
        if (r < lo)
            lo = r;
        if (r > hi)
            hi = r;
    }
    float delta = (hi - lo) / 255.0f;
    /* A constant vector (delta 0) is all lo; codes 0. The reciprocal is a
     * double: for ranges below ~1e-38 a float one overflows to infinity. */
    double inv = delta > 0.0f ? 1.0 / (double)delta : 0.0;
    double norm = 0.0;
    for (uint32_t i = 0; i < dim; i++) {
        double t = (double)(x[i] - mean[i] - lo) * inv;
        /* Clamp before converting: out-of-range float to int is undefined. */
        long v = lrint(t < 0.0 ? 0.0 : (t > 255.0 ? 255.0 : t));
        codes[i] = (uint8_t)v;
        double rec = (double)lo + (double)delta * (double)v;
        norm += rec * rec;
    }
    sv_qrec_header h = {.lo = lo, .delta = delta, .norm = (float)norm};
    memcpy(record, &h, sizeof h);
}

void sv_quant_decode(const float *mean, uint32_t dim, const uint8_t *record, float *out)
{
    sv_qrec_header h = sv_quant_header(record);
    const uint8_t *codes = record + SV_QREC_HEADER;
    for (uint32_t i = 0; i < dim; i++)
        out[i] = mean[i] + h.lo + h.delta * (float)codes[i];
}
