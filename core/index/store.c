/* Vector store: chunked fixed-size records and their distances (see store.h). */
#include "store.h"

#include <string.h>

#include "quantizer.h"

/* 32 KiB: the last chunk's unused part is slack the collection pays (at
 * 64 KiB, 3.1 bytes a vector at 10,000 x 128); 16 KiB chunks, jemalloc's
 * large class, cost 16 bytes a vector more in active pages than they save. */
#define STORE_CHUNK_BYTES (32u * 1024u)

struct sv_store {
    const sv_allocator *alloc;
    sv_tally *tally;
    const sv_kernels *k;
    uint32_t dim;
    sv_storage storage;
    sv_metric metric;
    size_t rec_size;      /* bytes per record */
    uint32_t chunk_slots; /* records per chunk */
    uint64_t chunk_magic; /* ceil(2^64 / chunk_slots): division by multiplication */
    size_t chunk_bytes;   /* bytes asked per chunk */
    uint8_t **chunks;     /* chunk table */
    uint32_t n_chunks, chunks_cap;
    float *mean;          /* int8: quantizer mean, NULL until trained */
    float mean_sum;       /* sum of mean[] (IP build distance) */
    float mean_norm;      /* |mean|^2 (IP build distance) */
};

sv_store *sv_store_create(const sv_allocator *a, sv_tally *t, uint32_t dim, sv_storage storage,
                          sv_metric metric)
{
    sv_store *s = sv_mem_calloc(a, t, 1, sizeof *s);
    if (!s)
        return NULL;
    s->alloc = a;
    s->tally = t;
    s->k = sv_kernels_best();
    s->dim = dim;
    s->storage = storage;
    s->metric = metric;
    s->rec_size = storage == SV_STORAGE_INT8 ? sv_quant_record_size(dim) : (size_t)dim * sizeof(float);
    /* Fill the allocator's size class for a ~64 KiB chunk. */
    size_t target = sv_good_size(a, STORE_CHUNK_BYTES);
    s->chunk_slots = (uint32_t)(target / s->rec_size);
    /* At least two records a chunk: the division below needs a divisor
     * above 1 (ceil(2^64 / 1) does not fit in 64 bits). */
    if (s->chunk_slots < 2)
        s->chunk_slots = 2;
    s->chunk_bytes = (size_t)s->chunk_slots * s->rec_size;
    s->chunk_magic = UINT64_MAX / s->chunk_slots + 1;
    return s;
}

void sv_store_free(sv_store *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n_chunks; i++)
        sv_mem_free(s->alloc, s->tally, s->chunks[i], s->chunk_bytes);
    sv_mem_free(s->alloc, s->tally, s->chunks, s->chunks_cap * sizeof *s->chunks);
    sv_mem_free(s->alloc, s->tally, s->mean, s->dim * sizeof(float));
    sv_mem_free(s->alloc, s->tally, s, sizeof *s);
}

uint32_t sv_store_capacity(const sv_store *s)
{
    return s->n_chunks * s->chunk_slots;
}

sv_status sv_store_reserve(sv_store *s, uint32_t n_slots)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + s->chunk_slots - 1) / s->chunk_slots);
    if (need <= s->n_chunks)
        return SV_OK;
    if (need > s->chunks_cap) {
        uint32_t cap = s->chunks_cap ? s->chunks_cap : 16;
        while (cap < need)
            cap *= 2;
        uint8_t **t = sv_mem_realloc(s->alloc, s->tally, s->chunks,
                                     s->chunks_cap * sizeof *s->chunks, cap * sizeof *s->chunks);
        if (!t)
            return SV_ERR_RESOURCE;
        s->chunks = t;
        s->chunks_cap = cap;
    }
    while (s->n_chunks < need) {
        /* Zeroed: a snapshot writes whole chunks, never stale heap bytes. */
        uint8_t *c = sv_mem_calloc(s->alloc, s->tally, 1, s->chunk_bytes);
        if (!c)
            return SV_ERR_RESOURCE; /* chunks made so far stay: capacity only grew */
        s->chunks[s->n_chunks++] = c;
    }
    return SV_OK;
}

sv_status sv_store_train(sv_store *s, const float *vectors, size_t n)
{
    if (s->storage != SV_STORAGE_INT8 || s->mean || n == 0)
        return SV_OK;
    float *mean = sv_mem_alloc(s->alloc, s->tally, s->dim * sizeof(float));
    if (!mean)
        return SV_ERR_RESOURCE;
    sv_quant_train(vectors, n, s->dim, mean);
    s->mean = mean;
    for (uint32_t i = 0; i < s->dim; i++)
        s->mean_sum += mean[i];
    s->mean_norm = s->k->dot_f32(mean, mean, s->dim);
    return SV_OK;
}

sv_status sv_store_set_mean(sv_store *s, const float *mean)
{
    if (s->storage != SV_STORAGE_INT8 || s->mean)
        return SV_ERR_INVALID_ARGUMENT;
    float *m = sv_mem_alloc(s->alloc, s->tally, s->dim * sizeof(float));
    if (!m)
        return SV_ERR_RESOURCE;
    memcpy(m, mean, s->dim * sizeof(float));
    s->mean = m;
    for (uint32_t i = 0; i < s->dim; i++)
        s->mean_sum += m[i];
    s->mean_norm = s->k->dot_f32(m, m, s->dim);
    return SV_OK;
}

const float *sv_store_mean(const sv_store *s)
{
    return s->mean;
}

uint8_t *sv_store_chunk(const sv_store *s, uint32_t i, uint32_t *n_records)
{
    *n_records = s->chunk_slots;
    return i < s->n_chunks ? s->chunks[i] : NULL;
}

int sv_store_trained(const sv_store *s)
{
    return s->storage != SV_STORAGE_INT8 || s->mean != NULL;
}

/*
 * Chunks hold a non-power-of-two count of records (a power of two would
 * waste up to a fifth of each chunk to size-class rounding), so the chunk
 * index is a division; done as Lemire's multiply-high by ceil(2^64/d), which
 * is exact for 32-bit numerators and took the division out of the search
 * profile (8% of it).
 */
static inline uint8_t *record_at(const sv_store *s, uint32_t slot)
{
    uint32_t chunk = (uint32_t)(((unsigned __int128)s->chunk_magic * slot) >> 64);
    uint32_t within = slot - chunk * s->chunk_slots;
    return s->chunks[chunk] + (size_t)within * s->rec_size;
}

const uint8_t *sv_store_record(const sv_store *s, uint32_t slot)
{
    return record_at(s, slot);
}

size_t sv_store_record_size(const sv_store *s)
{
    return s->rec_size;
}

uint32_t sv_store_dim(const sv_store *s)
{
    return s->dim;
}

void sv_store_put(sv_store *s, uint32_t slot, const float *x)
{
    uint8_t *rec = record_at(s, slot);
    if (s->storage == SV_STORAGE_INT8)
        sv_quant_encode(s->mean, s->dim, x, rec);
    else
        memcpy(rec, x, s->rec_size);
}

void sv_store_move(sv_store *s, uint32_t from, uint32_t to)
{
    memcpy(record_at(s, to), record_at(s, from), s->rec_size);
}

void sv_store_shrink(sv_store *s, uint32_t n_slots)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + s->chunk_slots - 1) / s->chunk_slots);
    while (s->n_chunks > need) {
        s->n_chunks--;
        sv_mem_free(s->alloc, s->tally, s->chunks[s->n_chunks], s->chunk_bytes);
        s->chunks[s->n_chunks] = NULL;
    }
}

void sv_store_get(const sv_store *s, uint32_t slot, float *out)
{
    const uint8_t *rec = record_at(s, slot);
    if (s->storage == SV_STORAGE_INT8)
        sv_quant_decode(s->mean, s->dim, rec, out);
    else
        memcpy(out, rec, s->rec_size);
}


int sv_store_build_is_l2(const sv_store *s)
{
    return s->metric != SV_METRIC_IP;
}

sv_status sv_query_prepare(sv_query *q, const sv_store *s, const float *vec, int build)
{
    memset(q, 0, sizeof *q);
    q->store = s;
    int l2 = s->metric == SV_METRIC_L2 || (build && sv_store_build_is_l2(s));
    q->l2 = l2;
    q->vec = sv_mem_alloc(s->alloc, NULL, s->dim * sizeof(float));
    if (!q->vec)
        return SV_ERR_RESOURCE;
    float sum = 0.0f;
    if (s->storage == SV_STORAGE_INT8 && l2) {
        for (uint32_t i = 0; i < s->dim; i++) {
            q->vec[i] = vec[i] - s->mean[i];
            sum += q->vec[i];
        }
        q->c0 = s->k->dot_f32(q->vec, q->vec, s->dim);
    } else {
        memcpy(q->vec, vec, s->dim * sizeof(float));
        for (uint32_t i = 0; i < s->dim; i++)
            sum += vec[i];
        if (s->storage == SV_STORAGE_INT8)
            q->c0 = s->k->dot_f32(q->vec, s->mean, s->dim);
    }
    q->sum = sum;
    return SV_OK;
}

void sv_query_release(sv_query *q)
{
    if (q->vec)
        sv_mem_free(q->store->alloc, NULL, q->vec, q->store->dim * sizeof(float));
    q->vec = NULL;
}

float sv_query_distance(const sv_query *q, uint32_t slot)
{
    const sv_store *s = q->store;
    const uint8_t *rec = record_at(s, slot);
    if (s->storage == SV_STORAGE_F32) {
        const float *x = (const float *)rec;
        if (q->l2)
            return s->k->l2sq_f32(q->vec, x, s->dim);
        float dot = s->k->dot_f32(q->vec, x, s->dim);
        return s->metric == SV_METRIC_COSINE ? 1.0f - dot : -dot;
    }
    sv_qrec_header h = sv_quant_header(rec);
    float dot = s->k->dot_f32u8(q->vec, rec + SV_QREC_HEADER, s->dim);
    float part = h.lo * q->sum + h.delta * dot;
    if (q->l2) {
        float d = q->c0 + h.norm - 2.0f * part;
        return d > 0.0f ? d : 0.0f;
    }
    float ip = q->c0 + part;
    return s->metric == SV_METRIC_COSINE ? 1.0f - ip : -ip;
}

void sv_query_distances(const sv_query *q, const uint32_t *slots, uint32_t n, float *out)
{
    const sv_store *s = q->store;
    /* Start every record's first lines loading before the first distance. */
    size_t lines = s->rec_size < 256 ? (s->rec_size + 63) / 64 : 4;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *rec = record_at(s, slots[i]);
        for (size_t l = 0; l < lines; l++)
            __builtin_prefetch(rec + l * 64);
    }
    if (s->storage != SV_STORAGE_INT8) {
        for (uint32_t i = 0; i < n; i++)
            out[i] = sv_query_distance(q, slots[i]);
        return;
    }
    /* The int8 case inlined: this loop is most of a search. */
    const int l2 = q->l2, cosine = s->metric == SV_METRIC_COSINE;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *rec = record_at(s, slots[i]);
        sv_qrec_header h = sv_quant_header(rec);
        float part = h.lo * q->sum + h.delta * s->k->dot_f32u8(q->vec, rec + SV_QREC_HEADER, s->dim);
        if (l2) {
            float d = q->c0 + h.norm - 2.0f * part;
            out[i] = d > 0.0f ? d : 0.0f;
        } else {
            float ip = q->c0 + part;
            out[i] = cosine ? 1.0f - ip : -ip;
        }
    }
}

float sv_store_build_distance(const sv_store *s, uint32_t a, uint32_t b)
{
    const uint8_t *ra = record_at(s, a), *rb = record_at(s, b);
    int l2 = sv_store_build_is_l2(s);
    if (s->storage == SV_STORAGE_F32) {
        const float *fa = (const float *)ra, *fb = (const float *)rb;
        return l2 ? s->k->l2sq_f32(fa, fb, s->dim) : -s->k->dot_f32(fa, fb, s->dim);
    }
    const uint8_t *ca = ra + SV_QREC_HEADER, *cb = rb + SV_QREC_HEADER;
    sv_qrec_header ha = sv_quant_header(ra), hb = sv_quant_header(rb);
    uint32_t sa = 0, sb = 0;
    uint32_t ab = s->k->dot_u8u8(ca, cb, s->dim, &sa, &sb);
    /* <r^a, r^b> of the centred reconstructions (quantizer.h) */
    double inner = (double)s->dim * ha.lo * hb.lo + (double)ha.lo * hb.delta * sb +
                   (double)hb.lo * ha.delta * sa + (double)ha.delta * hb.delta * ab;
    if (l2) {
        double d = (double)ha.norm + hb.norm - 2.0 * inner;
        return d > 0.0 ? (float)d : 0.0f;
    }
    /* <mu + r^a, mu + r^b> = |mu|^2 + <mu, r^a> + <mu, r^b> + <r^a, r^b> */
    double mua = (double)ha.lo * s->mean_sum + (double)ha.delta * s->k->dot_f32u8(s->mean, ca, s->dim);
    double mub = (double)hb.lo * s->mean_sum + (double)hb.delta * s->k->dot_f32u8(s->mean, cb, s->dim);
    return (float)-(s->mean_norm + mua + mub + inner);
}

float sv_metric_distance_f32(const sv_kernels *k, sv_metric m, const float *a, const float *b,
                             size_t n)
{
    switch (m) {
    case SV_METRIC_L2: return k->l2sq_f32(a, b, n);
    case SV_METRIC_IP: return -k->dot_f32(a, b, n);
    case SV_METRIC_COSINE: return 1.0f - k->dot_f32(a, b, n);
    }
    return 0.0f;
}
