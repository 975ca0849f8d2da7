/* Write-ahead log payloads (see logrec.h). */
#include "logrec.h"

#include "pcodec.h"
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int given(const char *const *ids, size_t i)
{
    return ids && ids[i] && ids[i][0];
}

sv_status sv_logrec_add_ids(const char *const *ids, const uint64_t *assigned, size_t n,
                            uint32_t dim, uint64_t counter, int upsert, uint8_t **out, size_t *out_len)
{
    size_t len = 16;
    for (size_t i = 0; i < n; i++)
        len += given(ids, i) ? 2 + strlen(ids[i]) : 9;
    uint8_t *b = malloc(len), *p = b;
    if (!b)
        return SV_ERR_RESOURCE;
    uint32_t n32 = (uint32_t)n;
    memcpy(p, &n32, 4);
    memcpy(p + 4, &dim, 4);
    memcpy(p + 8, &counter, 8);
    p += 16;
    for (size_t i = 0; i < n; i++) {
        if (given(ids, i)) {
            size_t l = strlen(ids[i]);
            *p++ = upsert ? 2 : 1;
            *p++ = (uint8_t)l;
            memcpy(p, ids[i], l);
            p += l;
        } else {
            *p++ = 0;
            memcpy(p, &assigned[i], 8);
            p += 8;
        }
    }
    *out = b;
    *out_len = len;
    return SV_OK;
}

sv_status sv_logrec_delete(const char *const *ids, size_t n, uint8_t **out, size_t *out_len)
{
    size_t len = 4;
    for (size_t i = 0; i < n; i++)
        len += 1 + strlen(ids[i]);
    uint8_t *b = malloc(len), *p = b;
    if (!b)
        return SV_ERR_RESOURCE;
    uint32_t n32 = (uint32_t)n;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        *p++ = (uint8_t)l;
        memcpy(p, ids[i], l);
        p += l;
    }
    *out = b;
    *out_len = len;
    return SV_OK;
}

void sv_logrec_release(sv_logrec *r)
{
    free(r->payload_mem);
    free(r->ids);
    free(r->expect);
    free(r->vectors);
    free(r->strings);
    memset(r, 0, sizeof *r);
}

/* ids[i]: given strings as NUL-terminated copies, assigned ones NULL. */
static sv_status decode_ids(const uint8_t **pp, const uint8_t *end, sv_logrec *r, int typed,
                            sv_error *err)
{
    const uint8_t *p = *pp;
    r->ids = calloc(r->n, sizeof *r->ids);
    r->expect = malloc(r->n * sizeof *r->expect);
    /* Each string costs at least 2 bytes of payload, so this bounds them. */
    r->strings = malloc((size_t)(end - p) + r->n + 1);
    if (!r->ids || !r->expect || !r->strings)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory decoding a log record");
    char *s = r->strings;
    r->upsert = -1; /* not known until the first given id */
    for (uint32_t i = 0; i < r->n; i++) {
        int kind = 1;
        if (typed) {
            if (p >= end)
                return sv_fail(err, SV_ERR_CORRUPT, "id %u runs past the record", i);
            kind = *p++;
        }
        if (kind == 0) {
            if (end - p < 8)
                return sv_fail(err, SV_ERR_CORRUPT, "id %u runs past the record", i);
            memcpy(&r->expect[i], p, 8);
            p += 8;
            if (r->expect[i] >= (UINT64_C(1) << 63))
                return sv_fail(err, SV_ERR_CORRUPT, "assigned id %u is out of range", i);
            continue;
        }
        if (kind != 1 && kind != 2)
            return sv_fail(err, SV_ERR_CORRUPT, "id %u has unknown kind %d", i, kind);
        /* 2: a given id that replaces the vector it names, in an upsert
         * batch (all its given ids are 2, as none of a plain add's). */
        if (r->upsert != -1 && r->upsert != (kind == 2))
            return sv_fail(err, SV_ERR_CORRUPT, "id %u: an upsert's ids and a plain add's in one record", i);
        r->upsert = kind == 2;
        if (p >= end)
            return sv_fail(err, SV_ERR_CORRUPT, "id %u runs past the record", i);
        size_t l = *p++;
        if (l == 0 || l > SV_ID_MAX || (size_t)(end - p) < l)
            return sv_fail(err, SV_ERR_CORRUPT, "id %u has a bad length %zu", i, l);
        if (memchr(p, 0, l))
            return sv_fail(err, SV_ERR_CORRUPT, "id %u holds a NUL byte", i);
        memcpy(s, p, l);
        s[l] = '\0';
        r->ids[i] = s;
        r->expect[i] = UINT64_MAX;
        s += l + 1;
        p += l;
    }
    *pp = p;
    r->upsert = r->upsert == 1;
    return SV_OK;
}

sv_status sv_logrec_decode_add(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + len;
    if (len < 16)
        return sv_fail(err, SV_ERR_CORRUPT, "ADD record of %zu bytes is too short", len);
    memcpy(&out->n, p, 4);
    memcpy(&out->dim, p + 4, 4);
    memcpy(&out->counter, p + 8, 8);
    p += 16;
    /* Each vector takes at least 3 bytes of id (kind, length, one byte) and
     * 4 of data: bounds n before anything is allocated for it. */
    if (out->n == 0 || out->dim == 0 || out->dim > SV_DIM_MAX || out->n > len / 7 ||
        out->counter >= (UINT64_C(1) << 63))
        return sv_fail(err, SV_ERR_CORRUPT, "ADD record with n=%u dim=%u in %zu bytes", out->n,
                    out->dim, len);
    sv_status st = decode_ids(&p, end, out, 1, err);
    if (st != SV_OK)
        goto fail_out;
    size_t vec_bytes = (size_t)out->n * out->dim * sizeof(float);
    if ((size_t)(end - p) < vec_bytes) {
        st = sv_fail(err, SV_ERR_CORRUPT, "ADD record holds %zu bytes of vectors for %u x %u",
                  (size_t)(end - p), out->n, out->dim);
        goto fail_out;
    }
    /* After the vectors: nothing, or the payload section. */
    const uint8_t *after = p + vec_bytes;
    if (after != end) {
        uint32_t plen = 0;
        if (end - after < 4 || (memcpy(&plen, after, 4), (size_t)(end - after - 4) != plen)) {
            st = sv_fail(err, SV_ERR_CORRUPT, "ADD record: %zu bytes after the vectors are not a payload section",
                         (size_t)(end - after));
            goto fail_out;
        }
        if ((st = sv_payload_decode_batch(after + 4, plen, out->n, &out->payloads, &out->payload_mem, err)) != SV_OK)
            goto fail_out;
    }
    out->vectors = malloc(vec_bytes);
    if (!out->vectors) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory decoding a log record");
        goto fail_out;
    }
    memcpy(out->vectors, p, vec_bytes);
    return SV_OK;
fail_out:
    sv_logrec_release(out);
    return st;
}

sv_status sv_logrec_decode_delete(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + len;
    if (len < 4)
        return sv_fail(err, SV_ERR_CORRUPT, "DELETE record of %zu bytes is too short", len);
    memcpy(&out->n, p, 4);
    p += 4;
    if (out->n == 0 || out->n > len / 2)
        return sv_fail(err, SV_ERR_CORRUPT, "DELETE record with n=%u in %zu bytes", out->n, len);
    sv_status st = decode_ids(&p, end, out, 0, err);
    if (st == SV_OK && p != end)
        st = sv_fail(err, SV_ERR_CORRUPT, "DELETE record has %zu bytes after its ids", (size_t)(end - p));
    if (st != SV_OK)
        sv_logrec_release(out);
    return st;
}

sv_status sv_logrec_decode_set_payload(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + len;
    if (len < 3 || p[0] > SV_PAYLOAD_PATCH)
        return sv_fail(err, SV_ERR_CORRUPT, "SET_PAYLOAD record of %zu bytes does not decode", len);
    out->mode = (sv_payload_mode)p[0];
    out->n = 1;
    p++;
    sv_status st = decode_ids(&p, end, out, 0, err);
    if (st == SV_OK)
        st = sv_payload_decode_batch(p, (size_t)(end - p), 1, &out->payloads, &out->payload_mem, err);
    if (st != SV_OK)
        sv_logrec_release(out);
    return st;
}

sv_status sv_logrec_index(const char *key, uint8_t **out, size_t *out_len)
{
    size_t l = strlen(key);
    if (l == 0 || l > SV_PAYLOAD_KEY_MAX || !(*out = malloc(1 + l)))
        return SV_ERR_RESOURCE;
    (*out)[0] = (uint8_t)l;
    memcpy(*out + 1, key, l);
    *out_len = 1 + l;
    return SV_OK;
}

sv_status sv_logrec_decode_index(const uint8_t *p, size_t len, sv_logrec *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + len;
    out->n = 1;
    if (len < 2 || p[0] == 0 || p[0] > SV_PAYLOAD_KEY_MAX || (size_t)p[0] + 1 != len)
        return sv_fail(err, SV_ERR_CORRUPT, "INDEX record of %zu bytes does not decode", len);
    sv_status st = decode_ids(&p, end, out, 0, err);
    if (st != SV_OK)
        sv_logrec_release(out);
    return st;
}

sv_status sv_logrec_add_payloads(const sv_payload *payloads, size_t n, uint8_t **out, size_t *out_len)
{
    size_t total = 4;
    for (size_t i = 0; i < n; i++)
        total += sv_payload_encode(&payloads[i], NULL, 0);
    if (total - 4 > UINT32_MAX || !(*out = malloc(total)))
        return SV_ERR_RESOURCE;
    uint32_t body = (uint32_t)(total - 4);
    memcpy(*out, &body, 4);
    size_t at = 4;
    for (size_t i = 0; i < n; i++)
        at += sv_payload_encode(&payloads[i], *out + at, total - at);
    *out_len = total;
    return SV_OK;
}

sv_status sv_logrec_set_payload(const char *id, const sv_payload *pl, sv_payload_mode mode, uint8_t **out,
                                size_t *out_len)
{
    size_t idl = strlen(id);
    if (idl > SV_ID_MAX)
        return SV_ERR_INVALID_ARGUMENT;
    size_t plen = sv_payload_encode(pl, NULL, 0), total = 2 + idl + plen;
    if (!(*out = malloc(total)))
        return SV_ERR_RESOURCE;
    (*out)[0] = (uint8_t)mode;
    (*out)[1] = (uint8_t)idl;
    memcpy(*out + 2, id, idl);
    sv_payload_encode(pl, *out + 2 + idl, plen);
    *out_len = total;
    return SV_OK;
}

sv_status sv_logrec_decode_train(const uint8_t *p, size_t len, uint32_t dim, float *mean,
                                 sv_error *err)
{
    uint32_t d = 0;
    if (len >= 4)
        memcpy(&d, p, 4);
    if (len < 4 || d != dim || len != 4 + (size_t)dim * sizeof(float))
        return sv_fail(err, SV_ERR_CORRUPT, "TRAIN record of %zu bytes does not hold %u floats", len, dim);
    memcpy(mean, p + 4, (size_t)dim * sizeof(float));
    for (uint32_t i = 0; i < dim; i++)
        if (mean[i] != mean[i] || mean[i] - mean[i] != 0.0f)
            return sv_fail(err, SV_ERR_CORRUPT, "TRAIN record holds a non-finite mean");
    return SV_OK;
}

sv_status sv_logrec_decode_flush(const uint8_t *p, size_t len, uint64_t *rows, sv_error *err)
{
    if (len != 8)
        return sv_fail(err, SV_ERR_CORRUPT, "FLUSH record of %zu bytes", len);
    memcpy(rows, p, 8);
    if (*rows == 0 || *rows > UINT32_MAX)
        return sv_fail(err, SV_ERR_CORRUPT, "FLUSH record of %llu rows", (unsigned long long)*rows);
    return SV_OK;
}

sv_status sv_logrec_decode_consolidate(const uint8_t *p, size_t len, uint64_t *tombstones,
                                       sv_error *err)
{
    if (len != 8)
        return sv_fail(err, SV_ERR_CORRUPT, "CONSOLIDATE record of %zu bytes", len);
    memcpy(tombstones, p, 8);
    if (*tombstones == 0 || *tombstones > UINT32_MAX)
        return sv_fail(err, SV_ERR_CORRUPT, "CONSOLIDATE record of %llu tombstones",
                       (unsigned long long)*tombstones);
    return SV_OK;
}
