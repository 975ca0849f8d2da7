/* Filters over payloads (see filter.h): checks, and evaluation by column scans. */
#include "filter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels.h"
#include "payload_impl.h"
#include "pindex.h"
#include "utf8.h"

/* ---- checks ------------------------------------------------------------------------------------------ */

typedef struct check_state {
    const sv_payloads *p;
    uint32_t conditions;
    uint64_t values; /* of match-any conditions and has-id ids, all told */
    sv_error *err;
} check_state;

static sv_status bad(check_state *cs, const char *where, const char *fmt, const char *a, const char *b)
{
    char msg[200];
    snprintf(msg, sizeof msg, fmt, a, b);
    return sv_fail(cs->err, SV_ERR_INVALID_ARGUMENT, "filter %s: %s", where, msg);
}

static int text_ok(const char *s)
{
    if (!s)
        return 0;
    size_t len = strnlen(s, SV_PAYLOAD_STRING_MAX + 1);
    return len <= SV_PAYLOAD_STRING_MAX && sv_utf8_invalid_at((const unsigned char *)s, len) == len;
}

/* The key's type (NONE: known, no values now), or -1 (with the error) when unknown. */
static int key_type(check_state *cs, const char *where, const char *key)
{
    if (!key || !text_ok(key)) {
        bad(cs, where, "a condition needs a key (valid UTF-8)%s%s", "", "");
        return -1;
    }
    int k = sv_payloads_key_index(cs->p, key);
    if (k < 0) {
        bad(cs, where, "unknown key \"%.64s\"%s", key, "");
        return -1;
    }
    return (int)cs->p->keys[k].type;
}

/* A match value's type agrees with the key's (lists match their items). */
static int value_fits(sv_pv_type key, sv_pv_type value)
{
    if (key == SV_PV_NONE)
        return value == SV_PV_STRING || value == SV_PV_INT || value == SV_PV_BOOL;
    if (value == SV_PV_STRING)
        return key == SV_PV_STRING || key == SV_PV_STRINGS;
    if (value == SV_PV_INT)
        return key == SV_PV_INT || key == SV_PV_INTS;
    return value == SV_PV_BOOL && key == SV_PV_BOOL;
}

static sv_status check_value(check_state *cs, const char *where, const char *key, sv_pv_type kt,
                             const sv_pv_field *v)
{
    if (v->type != SV_PV_STRING && v->type != SV_PV_INT && v->type != SV_PV_BOOL)
        return bad(cs, where, "key \"%.64s\": a match value is a string, an int64 or a bool%s", key, "");
    if (v->type == SV_PV_STRING && !text_ok(v->s))
        return bad(cs, where, "key \"%.64s\": the value is not valid UTF-8 (or too long)%s", key, "");
    if (v->type == SV_PV_BOOL && v->b != 0 && v->b != 1)
        return bad(cs, where, "key \"%.64s\": a bool is 0 or 1%s", key, "");
    if (!value_fits((sv_pv_type)kt, v->type))
        return bad(cs, where, "key \"%.64s\" holds %s values", key, sv_pv_type_name(kt));
    return SV_OK;
}

static sv_status check_bound(check_state *cs, const char *where, const char *key, const sv_bound *b)
{
    if (b->set && !b->is_int && !isfinite(b->d))
        return bad(cs, where, "key \"%.64s\": a range bound must be finite%s", key, "");
    return SV_OK;
}

static sv_status check_filter(check_state *cs, const sv_filter *f, const char *where, int depth);

static sv_status check_cond(check_state *cs, const sv_cond *c, const char *where, int depth)
{
    if (++cs->conditions > SV_FILTER_CONDITIONS_MAX)
        return sv_fail(cs->err, SV_ERR_INVALID_ARGUMENT, "filter: more than %d conditions",
                       SV_FILTER_CONDITIONS_MAX);
    int kt;
    sv_status st = SV_OK;
    switch (c->kind) {
    case SV_COND_MATCH:
        if ((kt = key_type(cs, where, c->key)) < 0)
            return cs->err->code;
        return check_value(cs, where, c->key, (sv_pv_type)kt, &c->value);
    case SV_COND_MATCH_ANY:
        if ((kt = key_type(cs, where, c->key)) < 0)
            return cs->err->code;
        if (c->n_any == 0 || c->n_any > SV_FILTER_VALUES_MAX || !c->any)
            return bad(cs, where, "key \"%.64s\": match any needs 1..1024 values%s", c->key, "");
        if ((cs->values += c->n_any) > SV_FILTER_VALUES_TOTAL_MAX)
            return sv_fail(cs->err, SV_ERR_INVALID_ARGUMENT, "filter: more than %d values and ids in all",
                           SV_FILTER_VALUES_TOTAL_MAX);
        for (uint32_t i = 0; i < c->n_any && st == SV_OK; i++) {
            if (c->any[i].type != c->any[0].type || c->any[i].type == SV_PV_BOOL)
                return bad(cs, where, "key \"%.64s\": match any takes strings or int64s, all of one type%s",
                           c->key, "");
            st = check_value(cs, where, c->key, (sv_pv_type)kt, &c->any[i]);
        }
        return st;
    case SV_COND_RANGE:
        if ((kt = key_type(cs, where, c->key)) < 0)
            return cs->err->code;
        if (kt != SV_PV_NONE && kt != SV_PV_INT && kt != SV_PV_INTS && kt != SV_PV_DOUBLE)
            return bad(cs, where, "key \"%.64s\" holds %s values: a range needs numbers", c->key,
                       sv_pv_type_name((sv_pv_type)kt));
        if (!c->lo.set && !c->hi.set)
            return bad(cs, where, "key \"%.64s\": a range needs a bound%s", c->key, "");
        if ((st = check_bound(cs, where, c->key, &c->lo)) != SV_OK)
            return st;
        return check_bound(cs, where, c->key, &c->hi);
    case SV_COND_IS_EMPTY:
        return key_type(cs, where, c->key) < 0 ? cs->err->code : SV_OK;
    case SV_COND_HAS_ID:
        if (c->n_ids == 0 || c->n_ids > SV_FILTER_VALUES_MAX || !c->ids)
            return bad(cs, where, "has id needs 1..1024 ids%s%s", "", "");
        if ((cs->values += c->n_ids) > SV_FILTER_VALUES_TOTAL_MAX)
            return sv_fail(cs->err, SV_ERR_INVALID_ARGUMENT, "filter: more than %d values and ids in all",
                           SV_FILTER_VALUES_TOTAL_MAX);
        for (uint32_t i = 0; i < c->n_ids; i++)
            if (!text_ok(c->ids[i]))
                return bad(cs, where, "has id: an id is not valid UTF-8%s%s", "", "");
        return SV_OK;
    case SV_COND_FILTER:
        if (!c->sub)
            return bad(cs, where, "a nested filter is missing%s%s", "", "");
        if (depth + 1 > SV_FILTER_DEPTH_MAX)
            return sv_fail(cs->err, SV_ERR_INVALID_ARGUMENT, "filter: nested more than %d deep", SV_FILTER_DEPTH_MAX);
        return check_filter(cs, c->sub, where, depth + 1);
    default: return bad(cs, where, "unknown condition kind%s%s", "", "");
    }
}

static sv_status check_list(check_state *cs, const sv_cond *list, uint32_t n, const char *name,
                            const char *where, int depth)
{
    if (n && !list)
        return bad(cs, where, "%s conditions missing%s", name, "");
    for (uint32_t i = 0; i < n; i++) {
        char here[128];
        snprintf(here, sizeof here, "%s%s%s[%u]", where, *where ? "." : "", name, i);
        sv_status st = check_cond(cs, &list[i], here, depth);
        if (st != SV_OK)
            return st;
    }
    return SV_OK;
}

static sv_status check_filter(check_state *cs, const sv_filter *f, const char *where, int depth)
{
    sv_status st;
    if ((st = check_list(cs, f->must, f->n_must, "must", where, depth)) != SV_OK ||
        (st = check_list(cs, f->should, f->n_should, "should", where, depth)) != SV_OK)
        return st;
    return check_list(cs, f->must_not, f->n_must_not, "must_not", where, depth);
}

sv_status sv_filter_check(const sv_payloads *p, const sv_filter *f, sv_error *err)
{
    sv_error local;
    check_state cs = {p, 0, 0, err ? err : &local};
    sv_status st = check_filter(&cs, f, "", 0);
    return st != SV_OK ? st : sv_ok(err);
}

/* ---- evaluation -------------------------------------------------------------------------------------- */

typedef struct eval_state {
    const sv_payloads *p;
    uint32_t n_slots, words;
    sv_filter_id_fn id_slot;
    void *id_ctx;
    const sv_allocator *a;
    sv_tally *t;
    const sv_interrupt *intr;
} eval_state;

/* Words of chunk ci that lie below n_slots (the bitmaps' length). */
static uint32_t chunk_words(const eval_state *es, uint32_t ci)
{
    uint32_t first = ci * PV_WORDS;
    return first >= es->words ? 0 : es->words - first < PV_WORDS ? es->words - first : PV_WORDS;
}

/* Asked once a chunk: a filter over many slots and long lists takes time. */
static int stopped(const eval_state *es)
{
    return es->intr && es->intr->stop(es->intr->ctx);
}

/* Exact comparison of an int64 or a double with a bound (long double holds both). */
static int above_lo(long double v, const sv_bound *b)
{
    if (!b->set)
        return 1;
    long double x = b->is_int ? (long double)b->i : (long double)b->d;
    return b->inclusive ? v >= x : v > x;
}

static int below_hi(long double v, const sv_bound *b)
{
    if (!b->set)
        return 1;
    long double x = b->is_int ? (long double)b->i : (long double)b->d;
    return b->inclusive ? v <= x : v < x;
}

/* A condition's values sorted, so a match-any is a binary search: a long
 * list against a long set costs items x log(values), not items x values. */
typedef struct sorted_values {
    int64_t ints[SV_FILTER_VALUES_MAX];
    uint32_t codes[SV_FILTER_VALUES_MAX];
    uint32_t n_ints, n_codes;
} sorted_values;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether one stored int64 (a cell, or a list's item) meets c. */
static int int_meets(const sv_cond *c, const sorted_values *sv, int64_t v)
{
    if (c->kind == SV_COND_RANGE)
        return above_lo((long double)v, &c->lo) && below_hi((long double)v, &c->hi);
    if (c->kind == SV_COND_MATCH)
        return c->value.i == v;
    return bsearch(&v, sv->ints, sv->n_ints, sizeof v, cmp_i64) != NULL;
}

/* MATCH / MATCH_ANY on strings compare codes: the values' codes (sorted),
 * none for a value the dictionary does not hold (nothing has it). */
static int code_meets(const sorted_values *sv, uint32_t v)
{
    return bsearch(&v, sv->codes, sv->n_codes, sizeof v, cmp_u32) != NULL;
}

static sv_status eval_filter(eval_state *es, const sv_filter *f, uint64_t *out);

/* A range or a match on int64 values as inclusive int64 bounds (exact for
 * double bounds too); 0 when nothing can be inside. */
static int int_bounds(const sv_cond *c, int64_t *lo, int64_t *hi)
{
    if (c->kind == SV_COND_MATCH) {
        *lo = *hi = c->value.i;
        return 1;
    }
    long double l = -18446744073709551616.0L, h = 18446744073709551616.0L; /* past int64 either way */
    if (c->lo.set) {
        long double x = c->lo.is_int ? (long double)c->lo.i : (long double)c->lo.d;
        l = c->lo.inclusive ? ceill(x) : floorl(x) + 1;
    }
    if (c->hi.set) {
        long double x = c->hi.is_int ? (long double)c->hi.i : (long double)c->hi.d;
        h = c->hi.inclusive ? floorl(x) : ceill(x) - 1;
    }
    if (l < (long double)INT64_MIN)
        l = (long double)INT64_MIN;
    if (h > (long double)INT64_MAX)
        h = (long double)INT64_MAX;
    if (l > h)
        return 0;
    *lo = (int64_t)l;
    *hi = (int64_t)h;
    return 1;
}

/* Whether one cell (present) meets a match, match-any or range. */
static int cell_meets(const pv_key *k, const pv_chunk *ch, uint32_t o, const sv_cond *c, const sorted_values *sv)
{
    int yes = 0;
    switch (k->type) {
    case SV_PV_STRING: return code_meets(sv, ch->c.code[o]);
    case SV_PV_INT: return int_meets(c, sv, ch->c.i[o]);
    case SV_PV_DOUBLE:
        return above_lo((long double)ch->c.d[o], &c->lo) && below_hi((long double)ch->c.d[o], &c->hi);
    case SV_PV_STRINGS:
        for (uint32_t j = 0; j < ch->c.list[o]->n && !yes; j++)
            yes = code_meets(sv, ch->c.list[o]->u.codes[j]);
        return yes;
    case SV_PV_INTS:
        for (uint32_t j = 0; j < ch->c.list[o]->n && !yes; j++)
            yes = int_meets(c, sv, ch->c.list[o]->u.ints[j]);
        return yes;
    default: return 0;
    }
}

/* A double bound as an ordinal (pindex.h) on its safe side: the double
 * nearest to it that lets nothing in range out (the cells decide). */
static int64_t double_ord(const sv_bound *b, int upper)
{
    if (!b->set)
        return upper ? INT64_MAX : INT64_MIN;
    long double x = b->is_int ? (long double)b->i : (long double)b->d;
    double d = (double)x;
    if (!upper && (long double)d > x)
        d = nextafter(d, -INFINITY);
    if (upper && (long double)d < x)
        d = nextafter(d, INFINITY);
    if (d == 0.0)
        d = upper ? 0.0 : -0.0;
    return pv_ord_double(d);
}

typedef struct index_read {
    const pv_key *k;
    const sv_cond *c;
    const sorted_values *sv;
    uint64_t *out;
    uint32_t n_slots;
} index_read;

static void index_candidate(void *ctx, uint32_t slot)
{
    index_read *ir = ctx;
    const pv_chunk *ch = pv_chunk_of(ir->k, slot);
    if (slot < ir->n_slots && pv_present(ch, slot) && cell_meets(ir->k, ch, slot % SV_PAYLOAD_CHUNK, ir->c, ir->sv))
        ir->out[slot / 64] |= UINT64_C(1) << (slot % 64);
}

/*
 * A match, match-any or range through the key's index: each value's (or
 * the range's) pairs found by binary search, every candidate checked
 * against its cell. 1 when it answered into out; 0 when the column scan
 * should (no usable index, or so many candidates that the scan, 64 cells a
 * step, is as fast).
 */
static int index_eval(const eval_state *es, const pv_key *k, const sv_cond *c, const sorted_values *sv,
                      uint64_t *out)
{
    const pv_index *x = k->index;
    if (!x || !x->usable || (c->kind != SV_COND_MATCH && c->kind != SV_COND_MATCH_ANY && c->kind != SV_COND_RANGE))
        return 0;
    int strings = k->type == SV_PV_STRING || k->type == SV_PV_STRINGS;
    int ints = k->type == SV_PV_INT || k->type == SV_PV_INTS;
    if (!strings && !ints && !(k->type == SV_PV_DOUBLE && c->kind == SV_COND_RANGE))
        return 0;
    /* One interval of ordinals, or one point a value. */
    int64_t lo = 0, hi = -1;
    uint32_t points = strings ? sv->n_codes : c->kind == SV_COND_MATCH_ANY ? sv->n_ints : 0;
    if (strings && c->kind == SV_COND_RANGE)
        return 0;
    if (!points && ints && !int_bounds(c, &lo, &hi))
        return 1; /* nothing can be inside: out stays empty */
    if (!points && k->type == SV_PV_DOUBLE) {
        lo = double_ord(&c->lo, 0);
        hi = double_ord(&c->hi, 1);
    }
    size_t candidates = 0;
    for (uint32_t i = 0; i < (points ? points : 1); i++) {
        int64_t v = strings ? (int64_t)sv->codes[i] : points ? sv->ints[i] : 0;
        candidates += points ? pv_index_count(x, v, v) : pv_index_count(x, lo, hi);
    }
    if (candidates > es->n_slots / 16 + 256)
        return 0;
    index_read ir = {k, c, sv, out, es->n_slots};
    for (uint32_t i = 0; i < (points ? points : 1); i++) {
        int64_t v = strings ? (int64_t)sv->codes[i] : points ? sv->ints[i] : 0;
        if (points)
            pv_index_visit(x, v, v, index_candidate, &ir);
        else
            pv_index_visit(x, lo, hi, index_candidate, &ir);
    }
    return 1;
}

/* out = the slots meeting one condition. */
static sv_status eval_cond(eval_state *es, const sv_cond *c, uint64_t *out)
{
    memset(out, 0, (size_t)es->words * sizeof *out);
    if (c->kind == SV_COND_FILTER)
        return eval_filter(es, c->sub, out);
    if (c->kind == SV_COND_HAS_ID) {
        for (uint32_t i = 0; i < c->n_ids; i++) {
            int64_t s = es->id_slot ? es->id_slot(es->id_ctx, c->ids[i]) : -1;
            if (s >= 0 && (uint64_t)s < es->n_slots)
                out[s / 64] |= UINT64_C(1) << (s % 64);
        }
        return SV_OK;
    }
    const pv_key *k = &es->p->keys[sv_payloads_key_index(es->p, c->key)];
    if (c->kind == SV_COND_IS_EMPTY) {
        /* Empty: everywhere but where the key holds a scalar or a list with items. */
        memset(out, 0xff, (size_t)es->words * sizeof *out);
        for (uint32_t ci = 0; ci < k->n_chunks; ci++) {
            const pv_chunk *ch = k->chunks[ci];
            if (!ch)
                continue;
            for (uint32_t w = 0, nw = chunk_words(es, ci); w < nw; w++) {
                uint32_t gw = ci * PV_WORDS + w;
                uint64_t full = ch->present[w];
                if (k->type == SV_PV_STRINGS || k->type == SV_PV_INTS) {
                    for (uint64_t m = full; m; m &= m - 1) {
                        uint32_t o = w * 64 + (uint32_t)__builtin_ctzll(m);
                        if (ch->c.list[o]->n == 0)
                            full &= ~(UINT64_C(1) << (o % 64));
                    }
                }
                out[gw] &= ~full;
            }
        }
        return SV_OK;
    }
    /* String values as codes (none: held by no vector), int64 ones sorted. */
    sorted_values *sv = sv_mem_alloc(es->a, es->t, sizeof *sv);
    if (!sv)
        return SV_ERR_RESOURCE;
    sv->n_ints = sv->n_codes = 0;
    sv_status st = SV_OK;
    if ((c->kind == SV_COND_MATCH && c->value.type == SV_PV_STRING) ||
        (c->kind == SV_COND_MATCH_ANY && c->any[0].type == SV_PV_STRING)) {
        const sv_pv_field *vals = c->kind == SV_COND_MATCH ? &c->value : c->any;
        uint32_t nv = c->kind == SV_COND_MATCH ? 1 : c->n_any;
        for (uint32_t i = 0; i < nv; i++) {
            uint32_t code = sv_dict_find(es->p->strings, vals[i].s, strlen(vals[i].s));
            if (code)
                sv->codes[sv->n_codes++] = code;
        }
        qsort(sv->codes, sv->n_codes, sizeof *sv->codes, cmp_u32);
        if (!sv->n_codes)
            goto out;
    } else if (c->kind == SV_COND_MATCH_ANY) {
        for (uint32_t i = 0; i < c->n_any; i++)
            sv->ints[sv->n_ints++] = c->any[i].i;
        qsort(sv->ints, sv->n_ints, sizeof *sv->ints, cmp_i64);
    }
    if (index_eval(es, k, c, sv, out))
        goto out;
    /* The common cases word by word without a branch a cell: a range or a
     * match on int64 scalars, a match of one string. */
    int64_t lo = 0, hi = 0;
    int int_scan = k->type == SV_PV_INT && c->kind != SV_COND_MATCH_ANY;
    if (int_scan && !int_bounds(c, &lo, &hi))
        goto out;
    int code_scan = k->type == SV_PV_STRING && sv->n_codes == 1;
    if (int_scan || code_scan) {
        uint64_t span = (uint64_t)hi - (uint64_t)lo;
        const sv_kernels *kern = sv_kernels_best();
        for (uint32_t ci = 0; ci < k->n_chunks; ci++) {
            if (stopped(es)) {
                st = SV_ERR_INTERRUPTED;
                goto out;
            }
            const pv_chunk *ch = k->chunks[ci];
            for (uint32_t w = 0, nw = ch ? chunk_words(es, ci) : 0; w < nw; w++) {
                /* Cells without a value hold zeros: masked off below. */
                uint64_t hit = int_scan ? kern->range_mask_i64(ch->c.i + w * 64, lo, span)
                                        : kern->eq_mask_u32(ch->c.code + w * 64, sv->codes[0]);
                out[ci * PV_WORDS + w] = hit & ch->present[w];
            }
        }
        goto out;
    }
    /* A bool matches its bit; a string its code; an int64 or a double its number. */
    for (uint32_t ci = 0; ci < k->n_chunks; ci++) {
        if (stopped(es)) {
            st = SV_ERR_INTERRUPTED;
            goto out;
        }
        const pv_chunk *ch = k->chunks[ci];
        if (!ch)
            continue;
        for (uint32_t w = 0, nw = chunk_words(es, ci); w < nw; w++) {
            uint32_t gw = ci * PV_WORDS + w;
            uint64_t hit = 0;
            if (k->type == SV_PV_BOOL) {
                hit = ch->present[w] & (c->value.b ? ch->c.bits[w] : ~ch->c.bits[w]);
                out[gw] = hit;
                continue;
            }
            for (uint64_t m = ch->present[w]; m; m &= m - 1) {
                uint32_t b = (uint32_t)__builtin_ctzll(m), o = w * 64 + b;
                int yes = 0;
                switch (k->type) {
                case SV_PV_STRING: yes = code_meets(sv, ch->c.code[o]); break;
                case SV_PV_INT: yes = int_meets(c, sv, ch->c.i[o]); break;
                case SV_PV_DOUBLE:
                    yes = above_lo((long double)ch->c.d[o], &c->lo) && below_hi((long double)ch->c.d[o], &c->hi);
                    break;
                case SV_PV_STRINGS:
                    for (uint32_t j = 0; j < ch->c.list[o]->n && !yes; j++)
                        yes = code_meets(sv, ch->c.list[o]->u.codes[j]);
                    break;
                case SV_PV_INTS:
                    for (uint32_t j = 0; j < ch->c.list[o]->n && !yes; j++)
                        yes = int_meets(c, sv, ch->c.list[o]->u.ints[j]);
                    break;
                default: break;
                }
                hit |= (uint64_t)yes << b;
            }
            out[gw] = hit;
        }
    }
out:
    sv_mem_free(es->a, es->t, sv, sizeof *sv);
    return st;
}

static sv_status eval_filter(eval_state *es, const sv_filter *f, uint64_t *out)
{
    size_t bytes = (size_t)es->words * sizeof(uint64_t);
    uint64_t *tmp = sv_mem_alloc(es->a, es->t, bytes ? bytes : 8);
    uint64_t *any = f->n_should ? sv_mem_alloc(es->a, es->t, bytes ? bytes : 8) : NULL;
    sv_status st = SV_OK;
    if (!tmp || (f->n_should && !any)) {
        st = SV_ERR_RESOURCE;
        goto cleanup;
    }
    memset(out, 0xff, bytes);
    for (uint32_t i = 0; i < f->n_must && st == SV_OK; i++) {
        if ((st = eval_cond(es, &f->must[i], tmp)) == SV_OK)
            for (uint32_t w = 0; w < es->words; w++)
                out[w] &= tmp[w];
    }
    if (f->n_should && st == SV_OK) {
        memset(any, 0, bytes);
        for (uint32_t i = 0; i < f->n_should && st == SV_OK; i++) {
            if ((st = eval_cond(es, &f->should[i], tmp)) == SV_OK)
                for (uint32_t w = 0; w < es->words; w++)
                    any[w] |= tmp[w];
        }
        for (uint32_t w = 0; w < es->words; w++)
            out[w] &= any[w];
    }
    for (uint32_t i = 0; i < f->n_must_not && st == SV_OK; i++) {
        if ((st = eval_cond(es, &f->must_not[i], tmp)) == SV_OK)
            for (uint32_t w = 0; w < es->words; w++)
                out[w] &= ~tmp[w];
    }
    /* Past n_slots nothing passes. */
    if (es->n_slots % 64 && es->words)
        out[es->words - 1] &= (UINT64_C(1) << (es->n_slots % 64)) - 1;
cleanup:
    sv_mem_free(es->a, es->t, tmp, bytes ? bytes : 8);
    sv_mem_free(es->a, es->t, any, bytes ? bytes : 8);
    return st;
}

sv_status sv_filter_eval(const sv_payloads *p, const sv_filter *f, uint32_t n_slots, sv_filter_id_fn id_slot,
                         void *id_ctx, const sv_interrupt *intr, const sv_allocator *a, sv_tally *t, uint64_t *out)
{
    eval_state es = {p, n_slots, (n_slots + 63) / 64, id_slot, id_ctx, a, t, intr};
    return eval_filter(&es, f, out);
}

/* ---- one slot at a time ---------------------------------------------------------------------------- */

typedef struct probe_filter probe_filter;

typedef struct probe_cond {
    const sv_cond *c;
    const pv_key *k;      /* MATCH, MATCH_ANY, RANGE, IS_EMPTY */
    sorted_values *sv;    /* string values as codes, match-any ints: sorted (NULL when not needed) */
    int none;             /* nothing can match: no value the dictionary holds, an empty range */
    int ints;             /* an int64 key's match or range: lo..hi exactly (no long double a slot) */
    int64_t lo, hi;
    uint32_t *slots;      /* HAS_ID: the ids' live slots, sorted */
    uint32_t n_slots;
    probe_filter *sub;    /* FILTER */
} probe_cond;

struct probe_filter {
    probe_cond *conds;    /* must, then should, then must_not */
    uint32_t n_must, n_should, n_must_not; /* made so far */
    uint32_t cap;         /* conds allocated */
};

struct sv_filter_probe {
    const sv_allocator *a;
    sv_tally *t;
    probe_filter *root;
};

static void probe_filter_free(sv_filter_probe *pr, probe_filter *pf)
{
    if (!pf)
        return;
    uint32_t n = pf->n_must + pf->n_should + pf->n_must_not;
    for (uint32_t i = 0; pf->conds && i < n; i++) {
        probe_cond *pc = &pf->conds[i];
        sv_mem_free(pr->a, pr->t, pc->sv, sizeof *pc->sv);
        sv_mem_free(pr->a, pr->t, pc->slots, (size_t)(pc->c->n_ids ? pc->c->n_ids : 1) * sizeof *pc->slots);
        probe_filter_free(pr, pc->sub);
    }
    sv_mem_free(pr->a, pr->t, pf->conds, (size_t)pf->cap * sizeof *pf->conds);
    sv_mem_free(pr->a, pr->t, pf, sizeof *pf);
}

static probe_filter *probe_filter_make(sv_filter_probe *pr, const sv_payloads *p, const sv_filter *f,
                                       sv_filter_id_fn id_slot, void *id_ctx);

/* What one condition needs to be asked of a slot; 0 or -1 (out of memory). */
static int probe_cond_make(sv_filter_probe *pr, const sv_payloads *p, const sv_cond *c, probe_cond *pc,
                           sv_filter_id_fn id_slot, void *id_ctx)
{
    pc->c = c;
    if (c->kind == SV_COND_FILTER)
        return (pc->sub = probe_filter_make(pr, p, c->sub, id_slot, id_ctx)) ? 0 : -1;
    if (c->kind == SV_COND_HAS_ID) {
        if (!(pc->slots = sv_mem_alloc(pr->a, pr->t, (size_t)(c->n_ids ? c->n_ids : 1) * sizeof *pc->slots)))
            return -1;
        for (uint32_t i = 0; i < c->n_ids; i++) {
            int64_t s = id_slot ? id_slot(id_ctx, c->ids[i]) : -1;
            if (s >= 0)
                pc->slots[pc->n_slots++] = (uint32_t)s;
        }
        qsort(pc->slots, pc->n_slots, sizeof *pc->slots, cmp_u32);
        return 0;
    }
    pc->k = &p->keys[sv_payloads_key_index(p, c->key)];
    if (c->kind == SV_COND_IS_EMPTY)
        return 0;
    int strings = (c->kind == SV_COND_MATCH && c->value.type == SV_PV_STRING) ||
                  (c->kind == SV_COND_MATCH_ANY && c->any[0].type == SV_PV_STRING);
    if (strings || c->kind == SV_COND_MATCH_ANY) {
        if (!(pc->sv = sv_mem_alloc(pr->a, pr->t, sizeof *pc->sv)))
            return -1;
        pc->sv->n_ints = pc->sv->n_codes = 0;
        const sv_pv_field *vals = c->kind == SV_COND_MATCH ? &c->value : c->any;
        uint32_t nv = c->kind == SV_COND_MATCH ? 1 : c->n_any;
        for (uint32_t i = 0; i < nv; i++) {
            if (strings) {
                uint32_t code = sv_dict_find(p->strings, vals[i].s, strlen(vals[i].s));
                if (code)
                    pc->sv->codes[pc->sv->n_codes++] = code;
            } else {
                pc->sv->ints[pc->sv->n_ints++] = vals[i].i;
            }
        }
        qsort(pc->sv->codes, pc->sv->n_codes, sizeof *pc->sv->codes, cmp_u32);
        qsort(pc->sv->ints, pc->sv->n_ints, sizeof *pc->sv->ints, cmp_i64);
        pc->none = strings && pc->sv->n_codes == 0;
    }
    if ((pc->k->type == SV_PV_INT || pc->k->type == SV_PV_INTS) &&
        (c->kind == SV_COND_RANGE || c->kind == SV_COND_MATCH)) {
        pc->ints = 1;
        pc->none = !int_bounds(c, &pc->lo, &pc->hi);
    }
    return 0;
}

static probe_filter *probe_filter_make(sv_filter_probe *pr, const sv_payloads *p, const sv_filter *f,
                                       sv_filter_id_fn id_slot, void *id_ctx)
{
    probe_filter *pf = sv_mem_calloc(pr->a, pr->t, 1, sizeof *pf);
    if (!pf)
        return NULL;
    uint32_t n = f->n_must + f->n_should + f->n_must_not;
    if (!(pf->conds = sv_mem_calloc(pr->a, pr->t, n ? n : 1, sizeof *pf->conds))) {
        sv_mem_free(pr->a, pr->t, pf, sizeof *pf);
        return NULL;
    }
    pf->cap = n ? n : 1;
    /* Counted as they are made: a half-made filter frees what it holds. */
    const sv_cond *lists[3] = {f->must, f->should, f->must_not};
    uint32_t lens[3] = {f->n_must, f->n_should, f->n_must_not}, *counts[3] = {&pf->n_must, &pf->n_should,
                                                                              &pf->n_must_not};
    uint32_t at = 0;
    for (int l = 0; l < 3; l++)
        for (uint32_t i = 0; i < lens[l]; i++) {
            (*counts[l])++;
            if (probe_cond_make(pr, p, &lists[l][i], &pf->conds[at++], id_slot, id_ctx) != 0) {
                probe_filter_free(pr, pf);
                return NULL;
            }
        }
    return pf;
}

static int probe_filter_pass(const probe_filter *pf, uint32_t slot);

static int probe_cond_pass(const probe_cond *pc, uint32_t slot)
{
    const sv_cond *c = pc->c;
    if (c->kind == SV_COND_FILTER)
        return probe_filter_pass(pc->sub, slot);
    if (c->kind == SV_COND_HAS_ID)
        return bsearch(&slot, pc->slots, pc->n_slots, sizeof slot, cmp_u32) != NULL;
    const pv_key *k = pc->k;
    const pv_chunk *ch = pv_chunk_of(k, slot);
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    int present = pv_present(ch, slot);
    if (c->kind == SV_COND_IS_EMPTY)
        return !present || ((k->type == SV_PV_STRINGS || k->type == SV_PV_INTS) && ch->c.list[o]->n == 0);
    if (!present || pc->none)
        return 0;
    if (k->type == SV_PV_BOOL)
        return (int)(ch->c.bits[o / 64] >> (o % 64) & 1) == (c->value.b != 0);
    if (pc->ints && k->type == SV_PV_INT)
        return ch->c.i[o] >= pc->lo && ch->c.i[o] <= pc->hi;
    if (pc->ints) {
        const pv_list *l = ch->c.list[o];
        for (uint32_t j = 0; j < l->n; j++)
            if (l->u.ints[j] >= pc->lo && l->u.ints[j] <= pc->hi)
                return 1;
        return 0;
    }
    return cell_meets(k, ch, o, c, pc->sv);
}

static int probe_filter_pass(const probe_filter *pf, uint32_t slot)
{
    const probe_cond *pc = pf->conds;
    for (uint32_t i = 0; i < pf->n_must; i++, pc++)
        if (!probe_cond_pass(pc, slot))
            return 0;
    int any = pf->n_should == 0;
    for (uint32_t i = 0; i < pf->n_should; i++, pc++)
        if (!any && probe_cond_pass(pc, slot))
            any = 1;
    if (!any)
        return 0;
    for (uint32_t i = 0; i < pf->n_must_not; i++, pc++)
        if (probe_cond_pass(pc, slot))
            return 0;
    return 1;
}

sv_status sv_filter_probe_create(const sv_payloads *p, const sv_filter *f, sv_filter_id_fn id_slot, void *id_ctx,
                                 const sv_allocator *a, sv_tally *t, sv_filter_probe **out)
{
    *out = NULL;
    sv_filter_probe *pr = sv_mem_calloc(a, t, 1, sizeof *pr);
    if (!pr)
        return SV_ERR_RESOURCE;
    pr->a = a;
    pr->t = t;
    if (!(pr->root = probe_filter_make(pr, p, f, id_slot, id_ctx))) {
        sv_mem_free(a, t, pr, sizeof *pr);
        return SV_ERR_RESOURCE;
    }
    *out = pr;
    return SV_OK;
}

int sv_filter_probe_pass(const sv_filter_probe *pr, uint32_t slot)
{
    return probe_filter_pass(pr->root, slot);
}

void sv_filter_probe_free(sv_filter_probe *pr)
{
    if (!pr)
        return;
    probe_filter_free(pr, pr->root);
    sv_mem_free(pr->a, pr->t, pr, sizeof *pr);
}
