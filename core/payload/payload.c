/* The payload store (see payload.h; layout in payload_impl.h). */
#include "payload.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "error.h"
#include "payload_impl.h"
#include "pcodec.h"
#include "pindex.h"
#include "utf8.h"

const char *sv_pv_type_name(sv_pv_type t)
{
    switch (t) {
    case SV_PV_STRING: return "string";
    case SV_PV_INT: return "int64";
    case SV_PV_DOUBLE: return "double";
    case SV_PV_BOOL: return "bool";
    case SV_PV_STRINGS: return "list of strings";
    case SV_PV_INTS: return "list of int64";
    default: return "none";
    }
}

static size_t cells_bytes(sv_pv_type t)
{
    switch (t) {
    case SV_PV_STRING: return (size_t)SV_PAYLOAD_CHUNK * sizeof(uint32_t);
    case SV_PV_INT: return (size_t)SV_PAYLOAD_CHUNK * sizeof(int64_t);
    case SV_PV_DOUBLE: return (size_t)SV_PAYLOAD_CHUNK * sizeof(double);
    case SV_PV_BOOL: return (size_t)PV_WORDS * sizeof(uint64_t);
    default: return (size_t)SV_PAYLOAD_CHUNK * sizeof(pv_list *);
    }
}

static size_t chunk_bytes(sv_pv_type t)
{
    return offsetof(pv_chunk, c) + cells_bytes(t);
}

static size_t list_bytes(sv_pv_type t, uint32_t n)
{
    return offsetof(pv_list, u) + (size_t)n * (t == SV_PV_STRINGS ? sizeof(uint32_t) : sizeof(int64_t));
}

sv_payloads *sv_payloads_create(const sv_allocator *a, sv_tally *t)
{
    sv_payloads *p = sv_mem_calloc(a, t, 1, sizeof *p);
    if (!p)
        return NULL;
    p->a = a;
    p->t = t;
    p->names = sv_dict_create(a, t);
    p->strings = sv_dict_create(a, t);
    if (!p->names || !p->strings) {
        sv_payloads_free(p);
        return NULL;
    }
    return p;
}

/* Forget slot's cell of key k (its string uses, its list): the caller
 * keeps the counts. */
static void drop_cell(sv_payloads *p, const pv_key *k, pv_chunk *ch, uint32_t o)
{
    switch (k->type) {
    case SV_PV_STRING: sv_dict_unref(p->strings, ch->c.code[o]); break;
    case SV_PV_STRINGS:
        for (uint32_t j = 0; j < ch->c.list[o]->n; j++)
            sv_dict_unref(p->strings, ch->c.list[o]->u.codes[j]);
        /* fall through */
    case SV_PV_INTS: sv_mem_free(p->a, p->t, ch->c.list[o], list_bytes(k->type, ch->c.list[o]->n)); break;
    default: break;
    }
}

void sv_payloads_free(sv_payloads *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n_keys; i++) {
        pv_key *k = &p->keys[i];
        for (uint32_t c = 0; c < k->n_chunks; c++) {
            pv_chunk *ch = k->chunks[c];
            if (!ch)
                continue;
            if (k->type == SV_PV_STRINGS || k->type == SV_PV_INTS)
                for (uint32_t o = 0; o < SV_PAYLOAD_CHUNK; o++)
                    if (pv_present(ch, o))
                        sv_mem_free(p->a, p->t, ch->c.list[o], list_bytes(k->type, ch->c.list[o]->n));
            sv_mem_free(p->a, p->t, ch, chunk_bytes(k->type));
        }
        sv_mem_free(p->a, p->t, k->chunks, (size_t)k->cap_chunks * sizeof *k->chunks);
        pv_index_free(p, k->index);
    }
    sv_mem_free(p->a, p->t, p->keys, (size_t)p->cap_keys * sizeof *p->keys);
    sv_dict_free(p->names);
    sv_dict_free(p->strings);
    sv_mem_free(p->a, p->t, p, sizeof *p);
}

int sv_payloads_key_index(const sv_payloads *p, const char *key)
{
    uint32_t code = sv_dict_find(p->names, key, strlen(key));
    return code ? (int)code - 1 : -1;
}

uint32_t sv_payloads_keys(const sv_payloads *p)
{
    return p->n_keys;
}

const char *sv_payloads_key(const sv_payloads *p, uint32_t i, sv_pv_type *type)
{
    if (i >= p->n_keys)
        return NULL;
    if (type)
        *type = p->keys[i].type;
    return sv_dict_str(p->names, i + 1);
}

/* ---- checks ------------------------------------------------------------------------------------------ */

static sv_status check_text(const char *s, size_t max, const char *what, size_t item, const char *key,
                            sv_error *err)
{
    size_t len = strnlen(s, max + 1);
    if (len > max)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%.64s\": %s longer than %zu bytes", item,
                       key, what, max);
    size_t bad = sv_utf8_invalid_at((const unsigned char *)s, len);
    if (bad != len)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%.64s\": %s is not valid UTF-8 (offset %zu)",
                       item, key, what, bad);
    return SV_OK;
}

/* The type a key has now or is given earlier in the batch (NONE: free). */
typedef struct pending_key {
    const char *name;
    sv_pv_type type;
} pending_key;

static sv_status check_field(const sv_pv_field *f, size_t item, sv_error *err)
{
    if (!f->key)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: a field without a key", item);
    size_t klen = strnlen(f->key, SV_PAYLOAD_KEY_MAX + 1);
    if (klen == 0 || klen > SV_PAYLOAD_KEY_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: a key must be 1..%d bytes", item,
                       SV_PAYLOAD_KEY_MAX);
    size_t bad = sv_utf8_invalid_at((const unsigned char *)f->key, klen);
    if (bad != klen)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: a key is not valid UTF-8 (offset %zu)", item, bad);
    sv_status st = SV_OK;
    switch (f->type) {
    case SV_PV_STRING:
        if (!f->s)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a string without text", item,
                           f->key);
        return check_text(f->s, SV_PAYLOAD_STRING_MAX, "the string", item, f->key, err);
    case SV_PV_INT: return SV_OK;
    case SV_PV_DOUBLE:
        if (!isfinite(f->d))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a double must be finite", item,
                           f->key);
        return SV_OK;
    case SV_PV_BOOL:
        if (f->b != 0 && f->b != 1)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a bool is 0 or 1", item, f->key);
        return SV_OK;
    case SV_PV_STRINGS:
    case SV_PV_INTS:
        if (f->n > SV_PAYLOAD_LIST_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a list of %u items (at most %d)",
                           item, f->key, f->n, SV_PAYLOAD_LIST_MAX);
        if (f->n && !(f->type == SV_PV_STRINGS ? (const void *)f->ss : (const void *)f->is))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a list without items", item,
                           f->key);
        for (uint32_t j = 0; f->type == SV_PV_STRINGS && j < f->n && st == SV_OK; j++)
            st = f->ss[j] ? check_text(f->ss[j], SV_PAYLOAD_STRING_MAX, "a list's string", item, f->key, err)
                          : sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": a NULL string in a list",
                                    item, f->key);
        return st;
    default:
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu, key \"%s\": unknown value type %d", item, f->key,
                       (int)f->type);
    }
}

sv_status sv_payloads_check(const sv_payloads *p, const sv_payload *items, size_t n, sv_error *err)
{
    /* Keys new to the collection take the type their first value in the
     * batch gives: later ones must agree. */
    pending_key fresh[SV_PAYLOAD_FIELDS_MAX];
    uint32_t n_fresh = 0, keys_after = p ? p->n_keys : 0;
    for (size_t it = 0; it < n; it++) {
        const sv_payload *pl = &items[it];
        if (pl->n > SV_PAYLOAD_FIELDS_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: %u fields (at most %d)", it, pl->n,
                           SV_PAYLOAD_FIELDS_MAX);
        if (pl->n && !pl->fields)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: fields missing", it);
        for (uint32_t i = 0; i < pl->n; i++) {
            const sv_pv_field *f = &pl->fields[i];
            sv_status st = check_field(f, it, err);
            if (st != SV_OK)
                return st;
            for (uint32_t j = 0; j < i; j++)
                if (strcmp(pl->fields[j].key, f->key) == 0)
                    return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: key \"%s\" given twice", it, f->key);
            int k = p ? sv_payloads_key_index(p, f->key) : -1;
            sv_pv_type have = k >= 0 ? p->keys[k].type : SV_PV_NONE;
            if (have == SV_PV_NONE) {
                uint32_t j = 0;
                while (j < n_fresh && strcmp(fresh[j].name, f->key) != 0)
                    j++;
                if (j < n_fresh) {
                    have = fresh[j].type;
                } else if (n_fresh < SV_PAYLOAD_FIELDS_MAX) {
                    fresh[n_fresh++] = (pending_key){f->key, f->type};
                    keys_after += k < 0;
                } else {
                    /* More new keys in one batch than a payload may hold:
                     * too many to track here, and a batch that varied keys
                     * this much is refused rather than half-checked. */
                    return sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                                   "payload %zu: a batch may bring at most %d new keys", it, SV_PAYLOAD_FIELDS_MAX);
                }
            }
            if (have != SV_PV_NONE && have != f->type)
                return sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                               "payload %zu, key \"%s\": a %s, but the key holds %s values", it, f->key,
                               sv_pv_type_name(f->type), sv_pv_type_name(have));
        }
    }
    for (size_t it = 0; it < n; it++) {
        size_t bytes = sv_payload_encode(&items[it], NULL, 0);
        if (bytes > SV_PAYLOAD_BYTES_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "payload %zu: %zu bytes (at most %d)", it, bytes,
                           SV_PAYLOAD_BYTES_MAX);
    }
    if (keys_after > SV_PAYLOAD_KEYS_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a collection has at most %d payload keys", SV_PAYLOAD_KEYS_MAX);
    return sv_ok(err);
}

/* ---- writes ------------------------------------------------------------------------------------------ */

/* Key index of name, made (type NONE, no chunks) when new. -1: OOM. */
static int key_for(sv_payloads *p, const char *name)
{
    int k = sv_payloads_key_index(p, name);
    if (k >= 0)
        return k;
    if (p->n_keys == p->cap_keys) {
        uint32_t cap = p->cap_keys ? p->cap_keys * 2 : 8;
        pv_key *keys = sv_mem_realloc(p->a, p->t, p->keys, (size_t)p->cap_keys * sizeof *keys,
                                      (size_t)cap * sizeof *keys);
        if (!keys)
            return -1;
        p->keys = keys;
        p->cap_keys = cap;
    }
    uint32_t code;
    if (sv_dict_intern(p->names, name, strlen(name), &code) != SV_OK)
        return -1;
    /* Keys are never dropped, so codes are handed out in order. */
    memset(&p->keys[p->n_keys], 0, sizeof p->keys[p->n_keys]);
    return (int)p->n_keys++;
}

/* ---- indexes ----------------------------------------------------------------------------------------- */

sv_status sv_payloads_index_key(sv_payloads *p, const char *key, sv_error *err)
{
    size_t len = key ? strnlen(key, SV_PAYLOAD_KEY_MAX + 1) : 0;
    if (len == 0 || len > SV_PAYLOAD_KEY_MAX || sv_utf8_invalid_at((const unsigned char *)key, len) != len)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "an index needs a key of 1..%d bytes of UTF-8",
                       SV_PAYLOAD_KEY_MAX);
    int i = sv_payloads_key_index(p, key);
    if (i >= 0 && p->keys[i].index)
        return sv_ok(err);
    if (i < 0 && p->n_keys >= SV_PAYLOAD_KEYS_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "the collection has %d keys already", SV_PAYLOAD_KEYS_MAX);
    uint32_t before = p->n_keys;
    if (i < 0 && (i = key_for(p, key)) < 0)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory indexing \"%s\"", key);
    pv_key *k = &p->keys[i];
    if (!(k->index = pv_index_create(p, k))) {
        if (p->n_keys > before) { /* the key made for it goes again */
            p->n_keys--;
            sv_dict_unref(p->names, p->n_keys + 1);
        }
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory indexing \"%s\"", key);
    }
    return sv_ok(err);
}

void sv_payloads_reindex(sv_payloads *p)
{
    for (uint32_t i = 0; i < p->n_keys; i++)
        pv_index_refresh(p, &p->keys[i]);
}

int sv_payloads_key_indexed(const sv_payloads *p, uint32_t i)
{
    return i < p->n_keys && p->keys[i].index != NULL;
}

/* The chunk of key k (of type t) holding slot, made when missing; *made
 * says whether it is new. NULL: OOM. */
static pv_chunk *chunk_for(sv_payloads *p, pv_key *k, sv_pv_type t, uint32_t slot, int *made)
{
    uint32_t c = slot / SV_PAYLOAD_CHUNK;
    *made = 0;
    if (c >= k->cap_chunks) {
        uint32_t cap = k->cap_chunks ? k->cap_chunks : 4;
        while (cap <= c)
            cap *= 2;
        pv_chunk **chunks = sv_mem_realloc(p->a, p->t, k->chunks, (size_t)k->cap_chunks * sizeof *chunks,
                                           (size_t)cap * sizeof *chunks);
        if (!chunks)
            return NULL;
        memset(chunks + k->cap_chunks, 0, (size_t)(cap - k->cap_chunks) * sizeof *chunks);
        k->chunks = chunks;
        k->cap_chunks = cap;
    }
    if (c >= k->n_chunks)
        k->n_chunks = c + 1;
    if (!k->chunks[c]) {
        if (!(k->chunks[c] = sv_mem_calloc(p->a, p->t, 1, chunk_bytes(t))))
            return NULL;
        *made = 1;
    }
    return k->chunks[c];
}

static void release_chunk_if_empty(sv_payloads *p, pv_key *k, uint32_t c)
{
    if (c < k->n_chunks && k->chunks[c] && k->chunks[c]->count == 0) {
        sv_mem_free(p->a, p->t, k->chunks[c], chunk_bytes(k->type));
        k->chunks[c] = NULL;
    }
}

/* Remove slot's value of key k (if any): counts kept. */
static void clear_cell(sv_payloads *p, pv_key *k, uint32_t slot)
{
    uint32_t c = slot / SV_PAYLOAD_CHUNK, o = slot % SV_PAYLOAD_CHUNK;
    pv_chunk *ch = c < k->n_chunks ? k->chunks[c] : NULL;
    if (!pv_present(ch, slot))
        return;
    drop_cell(p, k, ch, o);
    ch->present[o / 64] &= ~(UINT64_C(1) << (o % 64));
    ch->count--;
    if (ch->count == 0 && p->held) {
        p->emptied = 1;
    } else if (ch->count == 0) {
        sv_mem_free(p->a, p->t, ch, chunk_bytes(k->type));
        k->chunks[c] = NULL;
    }
    if (--k->values == 0 && !p->held)
        k->type = SV_PV_NONE; /* free for another type (not while an empty chunk may stay: its layout is this type's) */
    if (k->values == 0 && k->index)
        pv_index_clear(p, k->index);
}

int sv_payloads_has(const sv_payloads *p, uint32_t slot)
{
    for (uint32_t i = 0; i < p->n_keys; i++)
        if (pv_present(pv_chunk_of(&p->keys[i], slot), slot))
            return 1;
    return 0;
}

void sv_payloads_clear(sv_payloads *p, uint32_t slot)
{
    int had = sv_payloads_has(p, slot);
    for (uint32_t i = 0; i < p->n_keys; i++)
        clear_cell(p, &p->keys[i], slot);
    p->slots_with -= had;
}

typedef struct sv_pv_prepared prepared;

/* Undo what a set prepared (fields [0, n)): string uses, lists, chunks
 * made, and the keys it added (the last ones: their name codes go back in
 * reverse, so the next key made takes the lowest again and codes stay
 * indexes). */
static void unprepare(sv_payloads *p, const sv_pv_field *f, prepared *pr, uint32_t n, uint32_t slot,
                      uint32_t keys_before)
{
    for (uint32_t i = 0; i < n; i++) {
        if (pr[i].code)
            sv_dict_unref(p->strings, pr[i].code);
        if (pr[i].list) {
            for (uint32_t j = 0; j < pr[i].interned; j++)
                sv_dict_unref(p->strings, pr[i].list->u.codes[j]);
            sv_mem_free(p->a, p->t, pr[i].list, list_bytes(f[i].type, f[i].n));
        }
        if (pr[i].made_chunk) {
            pv_key *k = &p->keys[pr[i].key];
            uint32_t c = slot / SV_PAYLOAD_CHUNK;
            sv_mem_free(p->a, p->t, k->chunks[c], chunk_bytes(f[i].type));
            k->chunks[c] = NULL;
        }
    }
    while (p->n_keys > keys_before) {
        pv_key *k = &p->keys[--p->n_keys];
        sv_mem_free(p->a, p->t, k->chunks, (size_t)k->cap_chunks * sizeof *k->chunks);
        sv_dict_unref(p->names, p->n_keys + 1);
    }
}

static void put_cell(pv_key *k, const sv_pv_field *f, const prepared *pr, uint32_t slot)
{
    pv_chunk *ch = pr->chunk;
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    switch (f->type) {
    case SV_PV_STRING: ch->c.code[o] = pr->code; break;
    case SV_PV_INT: ch->c.i[o] = f->i; break;
    case SV_PV_DOUBLE: ch->c.d[o] = f->d; break;
    case SV_PV_BOOL:
        if (f->b)
            ch->c.bits[o / 64] |= UINT64_C(1) << (o % 64);
        else
            ch->c.bits[o / 64] &= ~(UINT64_C(1) << (o % 64));
        break;
    default: ch->c.list[o] = pr->list; break;
    }
    ch->present[o / 64] |= UINT64_C(1) << (o % 64);
    ch->count++;
    k->values++;
    k->type = f->type;
}

sv_status sv_payloads_prepare(sv_payloads *p, uint32_t slot, const sv_payload *pl, sv_payload_mode mode,
                              sv_payload_plan *plan, sv_error *err)
{
    sv_status st = sv_payloads_check(p, pl, 1, err);
    if (st != SV_OK)
        return st;
    plan->slot = slot;
    plan->mode = mode;
    plan->pl = pl;
    plan->keys_before = p->n_keys;
    const sv_pv_field *f = pl->fields;
    prepared *pr = plan->pr;
    uint32_t done = 0;
    /* Everything that can fail: keys, chunks, strings, lists. */
    for (; done < pl->n; done++) {
        prepared *q = &pr[done];
        memset(q, 0, sizeof *q);
        if ((q->key = key_for(p, f[done].key)) < 0)
            goto oom;
        pv_key *k = &p->keys[q->key];
        if (!(q->chunk = chunk_for(p, k, f[done].type, slot, &q->made_chunk)))
            goto oom;
        if (f[done].type == SV_PV_STRING &&
            sv_dict_intern(p->strings, f[done].s, strlen(f[done].s), &q->code) != SV_OK)
            goto oom;
        if (f[done].type == SV_PV_STRINGS || f[done].type == SV_PV_INTS) {
            if (!(q->list = sv_mem_alloc(p->a, p->t, list_bytes(f[done].type, f[done].n))))
                goto oom;
            q->list->n = f[done].n;
            if (f[done].type == SV_PV_INTS && f[done].n)
                memcpy(q->list->u.ints, f[done].is, (size_t)f[done].n * sizeof(int64_t));
            for (; f[done].type == SV_PV_STRINGS && q->interned < f[done].n; q->interned++)
                if (sv_dict_intern(p->strings, f[done].ss[q->interned], strlen(f[done].ss[q->interned]),
                                   &q->list->u.codes[q->interned]) != SV_OK)
                    goto oom;
        }
    }
    p->held++;
    return sv_ok(err);
oom:
    unprepare(p, f, pr, done + 1, slot, plan->keys_before);
    return sv_fail(err, SV_ERR_RESOURCE, "out of memory storing a payload");
}

/* A held set ended: what was emptied meanwhile goes now. */
static void release_hold(sv_payloads *p)
{
    if (--p->held || !p->emptied)
        return;
    p->emptied = 0;
    sv_payloads_trim(p);
}

void sv_payloads_cancel(sv_payloads *p, sv_payload_plan *plan)
{
    unprepare(p, plan->pl->fields, plan->pr, plan->pl->n, plan->slot, plan->keys_before);
    release_hold(p);
}

void sv_payloads_commit(sv_payloads *p, sv_payload_plan *plan)
{
    const sv_payload *pl = plan->pl;
    const sv_pv_field *f = pl->fields;
    prepared *pr = plan->pr;
    uint32_t slot = plan->slot;
    /* A chunk made by the prepare belongs to a key whose cell at slot is
     * empty, and a replace clears only the keys not given: no chunk the
     * plan holds is freed here. */
    int had = sv_payloads_has(p, slot);
    if (plan->mode == SV_PAYLOAD_REPLACE) {
        for (uint32_t i = 0; i < p->n_keys; i++) {
            int given = 0;
            for (uint32_t j = 0; j < pl->n && !given; j++)
                given = pr[j].key == (int)i;
            if (!given)
                clear_cell(p, &p->keys[i], slot);
        }
    }
    for (uint32_t j = 0; j < pl->n; j++) {
        pv_key *k = &p->keys[pr[j].key];
        /* The old value goes without its chunk going (its count stays up
         * until the new value is in). */
        pv_chunk *ch = pr[j].chunk;
        uint32_t o = slot % SV_PAYLOAD_CHUNK;
        if (pv_present(ch, slot)) {
            drop_cell(p, k, ch, o);
            ch->present[o / 64] &= ~(UINT64_C(1) << (o % 64));
            ch->count--;
            k->values--;
        }
        put_cell(k, &f[j], &pr[j], slot);
        if (k->index)
            pv_index_add(p, k, slot);
    }
    int has = sv_payloads_has(p, slot);
    p->slots_with += (uint64_t)has - (uint64_t)had;
    release_hold(p);
}

sv_status sv_payloads_set(sv_payloads *p, uint32_t slot, const sv_payload *pl, sv_payload_mode mode,
                          sv_error *err)
{
    sv_payload_plan plan;
    sv_status st = sv_payloads_prepare(p, slot, pl, mode, &plan, err);
    if (st == SV_OK)
        sv_payloads_commit(p, &plan);
    return st;
}

sv_status sv_payloads_reserve_move(sv_payloads *p, uint32_t from, uint32_t to)
{
    /* On failure the chunks made go again (an empty chunk must not stay:
     * a key whose values all go may later take another type's layout). */
    for (uint32_t i = 0; i < p->n_keys; i++) {
        pv_key *k = &p->keys[i];
        int made;
        if (pv_present(pv_chunk_of(k, from), from) && !chunk_for(p, k, k->type, to, &made)) {
            for (uint32_t j = 0; j < i; j++)
                if (pv_present(pv_chunk_of(&p->keys[j], from), from))
                    release_chunk_if_empty(p, &p->keys[j], to / SV_PAYLOAD_CHUNK);
            return SV_ERR_RESOURCE;
        }
    }
    return SV_OK;
}

void sv_payloads_trim(sv_payloads *p)
{
    for (uint32_t i = 0; i < p->n_keys; i++) {
        for (uint32_t c = 0; c < p->keys[i].n_chunks; c++)
            release_chunk_if_empty(p, &p->keys[i], c);
        if (p->keys[i].values == 0)
            p->keys[i].type = SV_PV_NONE; /* its chunks are gone: free for another type */
        pv_index_refresh(p, &p->keys[i]);
    }
}

sv_status sv_payloads_move(sv_payloads *p, uint32_t from, uint32_t to)
{
    /* Chunks for every value first, so that the move cannot stop halfway. */
    if (sv_payloads_reserve_move(p, from, to) != SV_OK)
        return SV_ERR_RESOURCE;
    uint32_t fo = from % SV_PAYLOAD_CHUNK, to_o = to % SV_PAYLOAD_CHUNK;
    for (uint32_t i = 0; i < p->n_keys; i++) {
        pv_key *k = &p->keys[i];
        pv_chunk *src = k->n_chunks > from / SV_PAYLOAD_CHUNK ? k->chunks[from / SV_PAYLOAD_CHUNK] : NULL;
        if (!pv_present(src, from))
            continue;
        pv_chunk *dst = k->chunks[to / SV_PAYLOAD_CHUNK];
        switch (k->type) {
        case SV_PV_STRING: dst->c.code[to_o] = src->c.code[fo]; break;
        case SV_PV_INT: dst->c.i[to_o] = src->c.i[fo]; break;
        case SV_PV_DOUBLE: dst->c.d[to_o] = src->c.d[fo]; break;
        case SV_PV_BOOL:
            dst->c.bits[to_o / 64] &= ~(UINT64_C(1) << (to_o % 64));
            dst->c.bits[to_o / 64] |= (src->c.bits[fo / 64] >> (fo % 64) & 1) << (to_o % 64);
            break;
        default: dst->c.list[to_o] = src->c.list[fo]; break;
        }
        dst->present[to_o / 64] |= UINT64_C(1) << (to_o % 64);
        dst->count++;
        if (k->index)
            k->index->usable = 0; /* its pairs name `from`: rebuilt by sv_payloads_trim or the next set */
        /* The value moved, its string uses and list with it: take it off
         * `from` without dropping them. */
        src->present[fo / 64] &= ~(UINT64_C(1) << (fo % 64));
        if (--src->count == 0) {
            sv_mem_free(p->a, p->t, src, chunk_bytes(k->type));
            k->chunks[from / SV_PAYLOAD_CHUNK] = NULL;
        }
    }
    return SV_OK;
}

/* ---- reads ------------------------------------------------------------------------------------------- */

uint32_t sv_payloads_get(const sv_payloads *p, uint32_t slot, sv_pv_field *out, uint32_t cap)
{
    uint32_t n = 0;
    uint32_t o = slot % SV_PAYLOAD_CHUNK;
    for (uint32_t i = 0; i < p->n_keys; i++) {
        const pv_key *k = &p->keys[i];
        const pv_chunk *ch = pv_chunk_of(k, slot);
        if (!pv_present(ch, slot))
            continue;
        if (n < cap) {
            sv_pv_field *f = &out[n];
            memset(f, 0, sizeof *f);
            f->key = sv_dict_str(p->names, i + 1);
            f->type = k->type;
            switch (k->type) {
            case SV_PV_STRING: f->s = sv_dict_str(p->strings, ch->c.code[o]); break;
            case SV_PV_INT: f->i = ch->c.i[o]; break;
            case SV_PV_DOUBLE: f->d = ch->c.d[o]; break;
            case SV_PV_BOOL: f->b = (int)(ch->c.bits[o / 64] >> (o % 64) & 1); break;
            case SV_PV_INTS:
                f->n = ch->c.list[o]->n;
                f->is = ch->c.list[o]->u.ints;
                break;
            default: f->n = ch->c.list[o]->n; break; /* STRINGS: sv_payloads_copy gives the texts */
            }
        }
        n++;
    }
    return n;
}

size_t sv_payloads_copy(const sv_payloads *p, uint32_t slot, void *buf, size_t cap, sv_payload *out)
{
    /* Layout: fields, then per list of strings its pointer array, then
     * per list of ints its items, then every string's bytes. */
    uint32_t o = slot % SV_PAYLOAD_CHUNK, n = 0, ptrs = 0, ints = 0;
    size_t text = 0;
    for (uint32_t i = 0; i < p->n_keys; i++) {
        const pv_key *k = &p->keys[i];
        const pv_chunk *ch = pv_chunk_of(k, slot);
        if (!pv_present(ch, slot))
            continue;
        n++;
        text += strlen(sv_dict_str(p->names, i + 1)) + 1;
        if (k->type == SV_PV_STRING)
            text += strlen(sv_dict_str(p->strings, ch->c.code[o])) + 1;
        if (k->type == SV_PV_STRINGS) {
            ptrs += ch->c.list[o]->n;
            for (uint32_t j = 0; j < ch->c.list[o]->n; j++)
                text += strlen(sv_dict_str(p->strings, ch->c.list[o]->u.codes[j])) + 1;
        }
        if (k->type == SV_PV_INTS)
            ints += ch->c.list[o]->n;
    }
    size_t need = (size_t)n * sizeof(sv_pv_field) + (size_t)ptrs * sizeof(char *) + (size_t)ints * sizeof(int64_t) +
                  text;
    out->fields = NULL;
    out->n = 0;
    if (need > cap || !buf)
        return need;
    sv_pv_field *fields = buf;
    const char **pp = (const char **)(fields + n);
    int64_t *ip = (int64_t *)(pp + ptrs);
    char *tp = (char *)(ip + ints);
    uint32_t got = sv_payloads_get(p, slot, fields, n);
    (void)got;
#define COPY_TEXT(dst, src)                                                                                   \
    do {                                                                                                      \
        size_t l_ = strlen(src) + 1;                                                                          \
        memcpy(tp, (src), l_);                                                                                \
        (dst) = tp;                                                                                           \
        tp += l_;                                                                                             \
    } while (0)
    uint32_t f_i = 0;
    for (uint32_t i = 0; i < p->n_keys; i++) {
        const pv_key *k = &p->keys[i];
        const pv_chunk *ch = pv_chunk_of(k, slot);
        if (!pv_present(ch, slot))
            continue;
        sv_pv_field *f = &fields[f_i++];
        COPY_TEXT(f->key, sv_dict_str(p->names, i + 1));
        if (k->type == SV_PV_STRING)
            COPY_TEXT(f->s, sv_dict_str(p->strings, ch->c.code[o]));
        if (k->type == SV_PV_INTS) {
            memcpy(ip, ch->c.list[o]->u.ints, (size_t)f->n * sizeof *ip);
            f->is = ip;
            ip += f->n;
        }
        if (k->type == SV_PV_STRINGS) {
            for (uint32_t j = 0; j < f->n; j++)
                COPY_TEXT(pp[j], sv_dict_str(p->strings, ch->c.list[o]->u.codes[j]));
            f->ss = pp;
            pp += f->n;
        }
    }
#undef COPY_TEXT
    out->fields = fields;
    out->n = n;
    return need;
}

void sv_payloads_get_stats(const sv_payloads *p, sv_payload_stats *s)
{
    s->keys = p->n_keys;
    s->strings = sv_dict_count(p->strings);
    s->slots_with_payload = p->slots_with;
}
