/*
 * A collection's payloads (slimvec.h): set, get, count, and the bitmap of
 * the live vectors a filter passes, which count and search share.
 */
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "filter.h"

sv_status sv_collection_set_payload(sv_collection *c, const char *id, const sv_payload *payload,
                                    sv_payload_mode mode, sv_error *err)
{
    if (!payload || (mode != SV_PAYLOAD_REPLACE && mode != SV_PAYLOAD_PATCH))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a payload and a mode (replace or patch) are needed");
    pthread_rwlock_wrlock(&c->lock);
    uint32_t slot;
    sv_status st = sv_coll_find_live(c, id, &slot)
                       ? sv_payloads_set(c->payloads, slot, payload, mode, err)
                       : sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" not found", SV_ID_MAX, id ? id : "");
    pthread_rwlock_unlock(&c->lock);
    return st;
}

sv_status sv_collection_get_payload(sv_collection *c, const char *id, void *buf, size_t cap, sv_payload *out,
                                    size_t *need, sv_error *err)
{
    *need = 0;
    out->fields = NULL;
    out->n = 0;
    pthread_rwlock_rdlock(&c->lock);
    uint32_t slot;
    sv_status st;
    if (!sv_coll_find_live(c, id, &slot)) {
        st = sv_fail(err, SV_ERR_NOT_FOUND, "id \"%.*s\" not found", SV_ID_MAX, id ? id : "");
    } else {
        *need = sv_payloads_copy(c->payloads, slot, buf, cap, out);
        st = *need <= cap ? sv_ok(err)
                          : sv_fail(err, SV_ERR_RESOURCE, "the payload of \"%.*s\" takes %zu bytes, %zu given",
                                    SV_ID_MAX, id, *need, cap);
    }
    pthread_rwlock_unlock(&c->lock);
    return st;
}

sv_status sv_engine_payload_prepare(sv_collection *c, const char *id, const sv_payload *pl, sv_payload_mode mode,
                                    sv_payload_ticket *t, sv_error *err)
{
    t->held = 0;
    if (!pl || (mode != SV_PAYLOAD_REPLACE && mode != SV_PAYLOAD_PATCH))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a payload and a mode (replace or patch) are needed");
    pthread_rwlock_wrlock(&c->lock);
    uint32_t slot;
    sv_status st;
    if ((st = sv_coll_write_target(c, id, &slot)) == SV_ERR_CONFLICT)
        sv_fail(err, st, "id \"%.*s\" has a write in flight", SV_ID_MAX, id);
    else if (st != SV_OK)
        sv_fail(err, st, "id \"%.*s\" not found", SV_ID_MAX, id ? id : "");
    else if ((st = sv_payloads_prepare(c->payloads, slot, pl, mode, &t->plan, err)) == SV_OK)
        c->payload_held++, t->held = 1;
    pthread_rwlock_unlock(&c->lock);
    return st;
}

void sv_engine_payload_commit(sv_collection *c, sv_payload_ticket *t)
{
    if (!t->held)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_payloads_commit(c->payloads, &t->plan);
    c->payload_held--;
    pthread_rwlock_unlock(&c->lock);
    t->held = 0;
}

void sv_engine_payload_cancel(sv_collection *c, sv_payload_ticket *t)
{
    if (!t->held)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_payloads_cancel(c->payloads, &t->plan);
    c->payload_held--;
    pthread_rwlock_unlock(&c->lock);
    t->held = 0;
}

static int64_t live_slot(void *ctx, const char *id)
{
    uint32_t slot;
    return sv_coll_find_live(ctx, id, &slot) ? (int64_t)slot : -1;
}

sv_status sv_coll_filter_slots(sv_collection *c, const sv_filter *f, const sv_interrupt *intr, uint64_t **bits_out,
                               uint64_t *count, sv_error *err)
{
    *bits_out = NULL;
    *count = 0;
    sv_status st = sv_filter_check(c->payloads, f, err);
    return st == SV_OK ? sv_coll_filter_bits(c, f, intr, bits_out, count, err) : st;
}

sv_status sv_coll_filter_bits(sv_collection *c, const sv_filter *f, const sv_interrupt *intr, uint64_t **bits_out,
                              uint64_t *count, sv_error *err)
{
    *bits_out = NULL;
    *count = 0;
    uint32_t n = c->next_slot;
    size_t words = ((size_t)n + 63) / 64;
    uint64_t *bits = sv_mem_alloc(&c->alloc, NULL, (words ? words : 1) * sizeof *bits);
    sv_status st = bits ? sv_filter_eval(c->payloads, f, n, live_slot, c, intr, &c->alloc, NULL, bits) : SV_ERR_RESOURCE;
    if (st != SV_OK) {
        sv_mem_free(&c->alloc, NULL, bits, (words ? words : 1) * sizeof *bits);
        return st == SV_ERR_INTERRUPTED ? sv_fail(err, st, "the filter's evaluation was stopped by its caller")
                                        : sv_fail(err, SV_ERR_RESOURCE, "out of memory evaluating a filter");
    }
    /* Only what a search may return: indexed and buffered vectors. */
    uint64_t total = 0;
    for (size_t w = 0; w < words; w++) {
        for (uint64_t m = bits[w]; m; m &= m - 1) {
            uint32_t s = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(m));
            uint8_t state = sv_graph_state(&c->graph, s);
            if (state != SV_SLOT_INDEXED && state != SV_SLOT_BUFFERED)
                bits[w] &= ~(UINT64_C(1) << (s & 63));
        }
        total += (uint64_t)__builtin_popcountll(bits[w]);
    }
    *bits_out = bits;
    *count = total;
    return sv_ok(err);
}

sv_status sv_coll_filter_probe(sv_collection *c, const sv_filter *f, sv_filter_probe **probe, double *share,
                               sv_error *err)
{
    *probe = NULL;
    *share = -1.0;
    sv_status st = sv_filter_check(c->payloads, f, err);
    if (st != SV_OK)
        return st;
    if (sv_filter_probe_create(c->payloads, f, live_slot, c, &c->alloc, NULL, probe) != SV_OK)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory preparing a filter");
    /* Evenly spread over the slots: the same sample for every query. */
    uint32_t n = c->next_slot, step = n / SV_FILTER_SAMPLE ? n / SV_FILTER_SAMPLE : 1, live = 0, pass = 0;
    for (uint32_t s = step / 2; s < n; s += step) {
        uint8_t state = sv_graph_state(&c->graph, s);
        if (state != SV_SLOT_INDEXED && state != SV_SLOT_BUFFERED)
            continue;
        live++;
        pass += (uint32_t)sv_filter_probe_pass(*probe, s);
    }
    if (live >= 64)
        *share = (double)pass / (double)live;
    return sv_ok(err);
}

void sv_coll_filter_release(sv_collection *c, uint64_t *bits)
{
    size_t words = ((size_t)c->next_slot + 63) / 64;
    sv_mem_free(&c->alloc, NULL, bits, (words ? words : 1) * sizeof *bits);
}

sv_status sv_collection_scroll(sv_collection *c, const sv_filter *filter, const sv_interrupt *intr, uint64_t *cursor,
                               uint32_t limit, char (*ids)[SV_ID_MAX + 1], uint32_t *n, sv_error *err)
{
    *n = 0;
    if (limit == 0)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a page holds at least one vector");
    pthread_rwlock_rdlock(&c->lock);
    /* The cursor: the layout's generation + 1 (0 is the start) and a slot. */
    uint32_t gen = (uint32_t)(*cursor >> 32), from = (uint32_t)*cursor;
    sv_status st = SV_OK;
    uint64_t *pass = NULL, matches = 0;
    if (*cursor && gen != c->layout_gen + 1)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT,
                     "the page token is from before the collection was compacted: start the scroll again");
    else if (filter)
        st = sv_coll_filter_slots(c, filter, intr, &pass, &matches, err);
    if (st == SV_OK) {
        uint32_t s = *cursor ? from : 0, end = c->next_slot;
        for (; s < end && *n < limit; s++) {
            uint8_t state = sv_graph_state(&c->graph, s);
            if ((state != SV_SLOT_INDEXED && state != SV_SLOT_BUFFERED) ||
                (pass && !(pass[s >> 6] >> (s & 63) & 1)))
                continue;
            sv_idmap_format(c->idmap, s, ids[*n], SV_ID_MAX + 1);
            (*n)++;
        }
        /* Whether anything is left past s is the next page's question. */
        *cursor = s < end ? ((uint64_t)(c->layout_gen + 1) << 32) | s : 0;
        sv_ok(err);
    }
    if (pass)
        sv_coll_filter_release(c, pass);
    pthread_rwlock_unlock(&c->lock);
    return st;
}

sv_status sv_collection_count_filtered(sv_collection *c, const sv_filter *filter, const sv_interrupt *intr,
                                        uint64_t *count, sv_error *err)
{
    *count = 0;
    pthread_rwlock_rdlock(&c->lock);
    sv_status st = SV_OK;
    if (!filter) {
        *count = c->n_live;
        sv_ok(err);
    } else {
        uint64_t *bits = NULL;
        if ((st = sv_coll_filter_slots(c, filter, intr, &bits, count, err)) == SV_OK)
            sv_coll_filter_release(c, bits);
    }
    pthread_rwlock_unlock(&c->lock);
    return st;
}

sv_status sv_collection_index_key(sv_collection *c, const char *key, sv_error *err)
{
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = sv_payloads_index_key(c->payloads, key, err);
    pthread_rwlock_unlock(&c->lock);
    return st;
}

uint32_t sv_collection_indexed_keys(sv_collection *c, const char **keys, uint32_t cap)
{
    uint32_t n = 0;
    pthread_rwlock_rdlock(&c->lock);
    for (uint32_t i = 0, nk = sv_payloads_keys(c->payloads); i < nk; i++) {
        if (!sv_payloads_key_indexed(c->payloads, i))
            continue;
        if (n < cap)
            keys[n] = sv_payloads_key(c->payloads, i, NULL);
        n++;
    }
    pthread_rwlock_unlock(&c->lock);
    return n;
}
