/*
 * Payloads as bytes, for the log and snapshots: one payload is
 *
 *   u16 fields | per field: u8 key length, key, u8 type (sv_pv_type), value
 *   value: STRING u16 length + bytes | INT 8 bytes | DOUBLE 8 bytes (IEEE) |
 *          BOOL u8 | STRINGS u16 count + count x (u16 length + bytes) |
 *          INTS u16 count + count x 8 bytes
 *
 * little-endian. Decoding checks every length and count against the input
 * and the limits of payload.h (SV_ERR_CORRUPT otherwise); what a payload
 * must be beyond its shape (UTF-8, finite doubles, key types) is checked
 * when it is applied, as for a client's.
 */
#ifndef SV_PCODEC_H
#define SV_PCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

/* Bytes pl takes; written to out when cap allows (else nothing). */
size_t sv_payload_encode(const sv_payload *pl, uint8_t *out, size_t cap);

/*
 * n payloads encoded back to back in p[0..len) (exactly: no byte left),
 * decoded into *items (n of them) pointing into *mem, one malloc'd block
 * the caller frees (both NULL when n is 0).
 */
sv_status sv_payload_decode_batch(const uint8_t *p, size_t len, size_t n, sv_payload **items, void **mem,
                                  sv_error *err);

#endif
