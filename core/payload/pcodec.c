/* Payloads as bytes (see pcodec.h). */
#include "pcodec.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "payload.h"

static size_t put(uint8_t *out, size_t cap, size_t at, const void *p, size_t len)
{
    if (out && at + len <= cap)
        memcpy(out + at, p, len);
    return at + len;
}

static size_t put16(uint8_t *out, size_t cap, size_t at, uint32_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return put(out, cap, at, b, 2);
}

static size_t put64(uint8_t *out, size_t cap, size_t at, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return put(out, cap, at, b, 8);
}

static size_t put_text(uint8_t *out, size_t cap, size_t at, const char *s)
{
    size_t len = strlen(s);
    at = put16(out, cap, at, (uint32_t)len);
    return put(out, cap, at, s, len);
}

size_t sv_payload_encode(const sv_payload *pl, uint8_t *out, size_t cap)
{
    /* First the size (no writes), then the bytes when they fit. */
    uint8_t *dst = NULL;
    size_t need = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = put16(dst, cap, 0, pl->n);
        for (uint32_t i = 0; i < pl->n; i++) {
            const sv_pv_field *f = &pl->fields[i];
            uint8_t kl = (uint8_t)strlen(f->key), ty = (uint8_t)f->type;
            at = put(dst, cap, at, &kl, 1);
            at = put(dst, cap, at, f->key, kl);
            at = put(dst, cap, at, &ty, 1);
            switch (f->type) {
            case SV_PV_STRING: at = put_text(dst, cap, at, f->s); break;
            case SV_PV_INT: at = put64(dst, cap, at, (uint64_t)f->i); break;
            case SV_PV_DOUBLE: {
                uint64_t bits;
                memcpy(&bits, &f->d, 8);
                at = put64(dst, cap, at, bits);
                break;
            }
            case SV_PV_BOOL: {
                uint8_t b = (uint8_t)f->b;
                at = put(dst, cap, at, &b, 1);
                break;
            }
            case SV_PV_STRINGS:
                at = put16(dst, cap, at, f->n);
                for (uint32_t j = 0; j < f->n; j++)
                    at = put_text(dst, cap, at, f->ss[j]);
                break;
            default:
                at = put16(dst, cap, at, f->n);
                for (uint32_t j = 0; j < f->n; j++)
                    at = put64(dst, cap, at, (uint64_t)f->is[j]);
                break;
            }
        }
        need = at;
        if (!out || need > cap)
            return need;
        dst = out;
    }
    return need;
}

/* ---- decoding: a pass that measures and checks, then one that fills ---- */

typedef struct rd {
    const uint8_t *p;
    size_t len, at;
} rd;

static int take(rd *r, size_t n, const uint8_t **out)
{
    if (r->len - r->at < n)
        return 0;
    *out = r->p + r->at;
    r->at += n;
    return 1;
}

static int get16(rd *r, uint32_t *v)
{
    const uint8_t *b;
    if (!take(r, 2, &b))
        return 0;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8;
    return 1;
}

static int get64(rd *r, uint64_t *v)
{
    const uint8_t *b;
    if (!take(r, 8, &b))
        return 0;
    *v = 0;
    for (int i = 0; i < 8; i++)
        *v |= (uint64_t)b[i] << (8 * i);
    return 1;
}

/* Sizes the fill pass needs. */
typedef struct sizes {
    size_t fields, ptrs, ints, text;
} sizes;

/* The fill pass's destinations (NULL in the measuring pass). */
typedef struct dest {
    sv_pv_field *fields;
    const char **ptrs;
    int64_t *ints;
    char *text;
} dest;

static int text(rd *r, size_t max, sizes *sz, dest *d, const char **out)
{
    uint32_t len;
    const uint8_t *b;
    if (!get16(r, &len) || len > max || !take(r, len, &b) || memchr(b, 0, len))
        return 0;
    sz->text += (size_t)len + 1;
    if (d->text) {
        memcpy(d->text, b, len);
        d->text[len] = '\0';
        *out = d->text;
        d->text += len + 1;
    }
    return 1;
}

static int one(rd *r, sizes *sz, dest *d, sv_payload *out)
{
    uint32_t n;
    if (!get16(r, &n) || n > SV_PAYLOAD_FIELDS_MAX)
        return 0;
    if (out) {
        out->fields = d->fields;
        out->n = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        sv_pv_field tmp, *f = d->fields ? d->fields++ : &tmp;
        memset(f, 0, sizeof *f);
        sz->fields++;
        const uint8_t *kl, *ty;
        const uint8_t *kb;
        if (!take(r, 1, &kl) || *kl == 0 || *kl > SV_PAYLOAD_KEY_MAX || !take(r, *kl, &kb) || memchr(kb, 0, *kl))
            return 0;
        sz->text += (size_t)*kl + 1;
        if (d->text) {
            memcpy(d->text, kb, *kl);
            d->text[*kl] = '\0';
            f->key = d->text;
            d->text += *kl + 1;
        }
        if (!take(r, 1, &ty))
            return 0;
        f->type = (sv_pv_type)*ty;
        uint64_t v;
        const uint8_t *b;
        switch (*ty) {
        case SV_PV_STRING:
            if (!text(r, SV_PAYLOAD_STRING_MAX, sz, d, &f->s))
                return 0;
            break;
        case SV_PV_INT:
            if (!get64(r, &v))
                return 0;
            f->i = (int64_t)v;
            break;
        case SV_PV_DOUBLE:
            if (!get64(r, &v))
                return 0;
            memcpy(&f->d, &v, 8);
            break;
        case SV_PV_BOOL:
            if (!take(r, 1, &b) || *b > 1)
                return 0;
            f->b = *b;
            break;
        case SV_PV_STRINGS:
        case SV_PV_INTS:
            if (!get16(r, &f->n) || f->n > SV_PAYLOAD_LIST_MAX)
                return 0;
            if (*ty == SV_PV_STRINGS) {
                sz->ptrs += f->n;
                f->ss = d->ptrs;
                for (uint32_t j = 0; j < f->n; j++) {
                    const char *s = NULL;
                    if (!text(r, SV_PAYLOAD_STRING_MAX, sz, d, &s))
                        return 0;
                    if (d->ptrs)
                        *d->ptrs++ = s;
                }
            } else {
                sz->ints += f->n;
                f->is = d->ints;
                for (uint32_t j = 0; j < f->n; j++) {
                    if (!get64(r, &v))
                        return 0;
                    if (d->ints)
                        *d->ints++ = (int64_t)v;
                }
            }
            break;
        default: return 0;
        }
    }
    return 1;
}

sv_status sv_payload_decode_batch(const uint8_t *p, size_t len, size_t n, sv_payload **items, void **mem,
                                  sv_error *err)
{
    *items = NULL;
    *mem = NULL;
    if (n == 0)
        return len == 0 ? sv_ok(err) : sv_fail(err, SV_ERR_CORRUPT, "payloads: %zu stray bytes", len);
    /* Each payload takes at least its 2-byte field count. */
    if (n > len / 2)
        return sv_fail(err, SV_ERR_CORRUPT, "payloads: %zu of them cannot fit %zu bytes", n, len);
    sizes sz = {0};
    dest none = {0};
    rd r = {p, len, 0};
    for (size_t i = 0; i < n; i++)
        if (!one(&r, &sz, &none, NULL))
            return sv_fail(err, SV_ERR_CORRUPT, "payloads: item %zu does not decode (at byte %zu)", i, r.at);
    if (r.at != len)
        return sv_fail(err, SV_ERR_CORRUPT, "payloads: %zu bytes after the last", len - r.at);
    size_t bytes = n * sizeof(sv_payload) + sz.fields * sizeof(sv_pv_field) + sz.ptrs * sizeof(char *) +
                   sz.ints * sizeof(int64_t) + sz.text;
    uint8_t *m = malloc(bytes ? bytes : 1);
    if (!m)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory decoding payloads");
    sv_payload *out = (sv_payload *)m;
    dest d = {(sv_pv_field *)(out + n), NULL, NULL, NULL};
    d.ptrs = (const char **)(d.fields + sz.fields);
    d.ints = (int64_t *)(d.ptrs + sz.ptrs);
    d.text = (char *)(d.ints + sz.ints);
    sizes again = {0};
    r.at = 0;
    for (size_t i = 0; i < n; i++)
        one(&r, &again, &d, &out[i]); /* the same bytes: it succeeds as above */
    *items = out;
    *mem = m;
    return sv_ok(err);
}
