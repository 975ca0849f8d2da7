/* Write buffer (see buffer.h). */
#include "buffer.h"

#include <string.h>

void sv_buffer_init(sv_buffer *b, const sv_allocator *a, sv_tally *t, uint32_t dim)
{
    memset(b, 0, sizeof *b);
    b->alloc = a;
    b->tally = t;
    b->dim = dim;
}

void sv_buffer_release(sv_buffer *b)
{
    sv_mem_free(b->alloc, b->tally, b->vecs, b->cap * b->dim * sizeof(float));
    sv_mem_free(b->alloc, b->tally, b->slots, b->cap * sizeof(uint32_t));
    b->vecs = NULL;
    b->slots = NULL;
    b->n = b->cap = 0;
}

sv_status sv_buffer_reserve(sv_buffer *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return SV_OK;
    /* Grow by half: the buffer is transient, but it is charged in full. */
    size_t cap = b->cap + b->cap / 2;
    if (cap < b->n + extra)
        cap = b->n + extra;
    if (cap < 64)
        cap = 64;
    size_t row = (size_t)b->dim * sizeof(float);
    /* New arrays, then copy: either both grow or nothing changes. */
    float *v = sv_mem_alloc(b->alloc, b->tally, cap * row);
    uint32_t *s = sv_mem_alloc(b->alloc, b->tally, cap * sizeof(uint32_t));
    if (!v || !s) {
        sv_mem_free(b->alloc, b->tally, v, cap * row);
        sv_mem_free(b->alloc, b->tally, s, cap * sizeof(uint32_t));
        return SV_ERR_RESOURCE;
    }
    if (b->n) {
        memcpy(v, b->vecs, b->n * row);
        memcpy(s, b->slots, b->n * sizeof(uint32_t));
    }
    size_t n = b->n;
    sv_buffer_release(b); /* frees the old arrays and zeroes n */
    b->vecs = v;
    b->slots = s;
    b->cap = cap;
    b->n = n;
    return SV_OK;
}

void sv_buffer_push(sv_buffer *b, const float *vec, uint32_t slot)
{
    memcpy(b->vecs + b->n * b->dim, vec, (size_t)b->dim * sizeof(float));
    b->slots[b->n] = slot;
    b->n++;
}

long sv_buffer_find(const sv_buffer *b, uint32_t slot)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->slots[i] == slot)
            return (long)i;
    return -1;
}

int sv_buffer_remove_slot(sv_buffer *b, uint32_t slot)
{
    long i = sv_buffer_find(b, slot);
    if (i < 0)
        return 0;
    size_t last = b->n - 1;
    if ((size_t)i != last) {
        memcpy(b->vecs + (size_t)i * b->dim, b->vecs + last * b->dim, (size_t)b->dim * sizeof(float));
        b->slots[i] = b->slots[last];
    }
    b->n--;
    return 1;
}

void sv_buffer_take(sv_buffer *b, sv_buffer *out)
{
    *out = *b;
    b->vecs = NULL;
    b->slots = NULL;
    b->n = b->cap = 0;
}
