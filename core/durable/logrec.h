/*
 * Payloads of the write-ahead log's records (wal.h frames them).
 *
 *   ADD     u32 n | u32 dim | u64 id counter before the batch | n ids |
 *           n * dim f32 vectors (as given, before any normalisation) |
 *           optionally u32 bytes + n payloads (pcodec.h), one a vector
 *           id: u8 0 + u64 number   assigned by the engine
 *               u8 1 + u8 len + len bytes   given by the client
 *               u8 2 + u8 len + len bytes   given, in an upsert: replaces
 *                                           the vector it names if any (a
 *                                           record's given ids are all 1
 *                                           or all 2)
 *   DELETE  u32 n | n * (u8 len + len bytes)
 *   SET_PAYLOAD  u8 mode (0 replace, 1 patch) | u8 len + id | one payload
 *   INDEX   u8 len + a payload key to index
 *   TRAIN   u32 dim | dim f32: the quantizer mean, logged before the first
 *           flush encodes anything, so a replay encodes identically
 *   FLUSH   u64 rows: a flush took the write buffer (that many rows) here;
 *           a replay flushes at the same point, so what was indexed and
 *           what was buffered come back the same
 *   CONSOLIDATE  u64 tombstones: a consolidation fixed its set of
 *           tombstones (that many) here; a replay consolidates at the same
 *           point, so the same slots are recycled (the count is the
 *           original's, for the record: a pass that failed and left its
 *           tombstones for the next one makes them differ)
 *
 * Little-endian; decoding checks every length against the payload and
 * fails (SV_ERR_CORRUPT) on anything that does not fit exactly.
 */
#ifndef SV_LOGREC_H
#define SV_LOGREC_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

/* The ids part of an ADD record for a batch that was applied: ids[i] (may
 * be NULL/""), assigned[i] from sv_collection_add; upsert: the batch
 * replaces the vectors its given ids name. Malloc'd into *out. */
sv_status sv_logrec_add_ids(const char *const *ids, const uint64_t *assigned, size_t n,
                            uint32_t dim, uint64_t counter, int upsert, uint8_t **out, size_t *out_len);
/* The payload section of an ADD record (n payloads). Malloc'd into *out. */
sv_status sv_logrec_add_payloads(const sv_payload *payloads, size_t n, uint8_t **out, size_t *out_len);
/* A SET_PAYLOAD record. Malloc'd into *out. */
sv_status sv_logrec_set_payload(const char *id, const sv_payload *pl, sv_payload_mode mode, uint8_t **out,
                                size_t *out_len);
/* An INDEX record. Malloc'd into *out. */
sv_status sv_logrec_index(const char *key, uint8_t **out, size_t *out_len);
/* A DELETE payload. Malloc'd into *out. */
sv_status sv_logrec_delete(const char *const *ids, size_t n, uint8_t **out, size_t *out_len);

/* A decoded ADD or DELETE. ids[i] is NULL for an engine-assigned id, whose
 * number is expect[i] (UINT64_MAX for given ids). Free with
 * sv_logrec_release. */
typedef struct sv_logrec {
    uint32_t n, dim;
    uint64_t counter;  /* ADD: the id counter before the batch */
    char **ids;
    uint64_t *expect;
    float *vectors;   /* ADD: n * dim, aligned copy */
    char *strings;    /* backing store of ids */
    sv_payload *payloads; /* ADD: n of them, or NULL; SET_PAYLOAD: one */
    void *payload_mem;    /* their backing store */
    sv_payload_mode mode; /* SET_PAYLOAD */
    int upsert;           /* ADD: the batch replaces the vectors its given ids name */
} sv_logrec;

sv_status sv_logrec_decode_add(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err);
sv_status sv_logrec_decode_delete(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err);
/* SET_PAYLOAD: ids[0] the id, payloads[0] the payload, mode. */
sv_status sv_logrec_decode_set_payload(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err);
/* INDEX: ids[0] the key. */
sv_status sv_logrec_decode_index(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err);
/* TRAIN: dim must match; the mean is copied into mean[dim]. */
sv_status sv_logrec_decode_train(const uint8_t *p, size_t len, uint32_t dim, float *mean,
                                 sv_error *err);
/* FLUSH: the row count. */
sv_status sv_logrec_decode_flush(const uint8_t *p, size_t len, uint64_t *rows, sv_error *err);
/* CONSOLIDATE: the tombstone count. */
sv_status sv_logrec_decode_consolidate(const uint8_t *p, size_t len, uint64_t *tombstones,
                                       sv_error *err);
void sv_logrec_release(sv_logrec *r);

#endif
