/*
 * Write buffer: vectors added but not yet in the graph, as float32 with
 * their slots, searchable at once by brute force. A flush takes the whole
 * buffer (sv_buffer_take), links its vectors into the graph, and frees it:
 * after a flush the buffer holds zero bytes. Vectors added during a flush go
 * to a new buffer.
 *
 * Not thread-safe: the collection's lock guards it.
 */
#ifndef SV_BUFFER_H
#define SV_BUFFER_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "slimvec.h"

typedef struct sv_buffer {
    const sv_allocator *alloc;
    sv_tally *tally;
    uint32_t dim;
    float *vecs;     /* n x dim, row-major */
    uint32_t *slots; /* slot of each row */
    size_t n, cap;   /* rows used, rows allocated */
} sv_buffer;

void sv_buffer_init(sv_buffer *b, const sv_allocator *a, sv_tally *t, uint32_t dim);
/* Free every byte; the buffer is empty afterwards. */
void sv_buffer_release(sv_buffer *b);

/* Room for `extra` more rows, so the following appends cannot fail. */
sv_status sv_buffer_reserve(sv_buffer *b, size_t extra);
/* Append one row (capacity reserved before). */
void sv_buffer_push(sv_buffer *b, const float *vec, uint32_t slot);
/* Remove the row holding slot (order not kept); 1 when found. */
int sv_buffer_remove_slot(sv_buffer *b, uint32_t slot);
/* Row index of slot, or -1. */
long sv_buffer_find(const sv_buffer *b, uint32_t slot);

/* Move the contents to *out (which must be empty) and leave b empty. */
void sv_buffer_take(sv_buffer *b, sv_buffer *out);

#endif
