/*
 * Adds and deletes (slimvec.h), and their two-step forms for the durable
 * layer (engine.h: prepare -> publish/abort, check -> apply/cancel).
 *
 * An add checks the whole batch before it changes anything, then, under the
 * write lock, takes a slot per vector (recycled or new), binds the ids and
 * copies the vectors into the active buffer. A prepared batch's slots are
 * PENDING: bound (so a later add of the same id is refused, as the log
 * order says it must be) but invisible to search, get and delete.
 *
 * An upsert's given id that exists keeps its old slot bound until the new
 * row is in: then, in one turn of the write lock, the id moves to the new
 * slot and the old one is deleted. A prepared upsert marks the old slots
 * (rep_marks), so that a later delete, payload set or upsert naming the id
 * sees it has a write in flight (SV_ERR_CONFLICT: the durable layer waits
 * for the writes in flight and asks again, which keeps the log's order);
 * an upsert waits the same way for a prepared add or delete of its id.
 * Deletes and payload sets of an id whose add or delete is in flight are
 * refused at once, as before: a refusal is not logged, so the log and the
 * collection agree either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "sort.h"

static uint64_t *slot_bitmap(sv_collection *c, size_t *words);
static void apply_delete(sv_collection *c, const uint32_t *slots, size_t n);

static int id_given(const char *const *ids, size_t i)
{
    return ids && ids[i] && ids[i][0];
}

static int cmp_id_index(const void *a, const void *b, void *ctx)
{
    const char *const *ids = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(ids[x], ids[y]);
    return c ? c : (x > y) - (x < y);
}

/*
 * Under the write lock, before anything changes: no given id may appear
 * twice in the batch, nor exist already unless the batch upserts (then
 * replace[i] is the live slot it replaces, UINT32_MAX for a new id; *n_rep
 * counts them). An upsert of an id with a write in flight (a prepared add,
 * delete or upsert) is SV_ERR_CONFLICT. Canonical numbers have one
 * spelling, so comparing the text finds every duplicate.
 */
static sv_status check_batch_ids(sv_collection *c, const char *const *ids, size_t n, uint32_t *replace,
                                 size_t *n_rep, sv_error *err)
{
    *n_rep = 0;
    if (!ids)
        return SV_OK;
    size_t *order = sv_mem_alloc(&c->alloc, NULL, n * sizeof *order);
    if (!order)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory checking %zu ids", n);
    size_t m = 0;
    sv_status st = SV_OK;
    for (size_t i = 0; i < n; i++) {
        if (!id_given(ids, i))
            continue;
        uint32_t slot = 0;
        if (sv_idmap_find(c->idmap, ids[i], strlen(ids[i]), &slot)) {
            /* An upsert follows a write in flight on its id; a plain add is
             * refused whatever it is (consistent with the log either way:
             * a refusal is not logged). */
            if (replace && (sv_graph_state(&c->graph, slot) == SV_SLOT_PENDING ||
                            sv_marks_test(&c->del_marks, slot) || sv_marks_test(&c->rep_marks, slot))) {
                st = sv_fail(err, SV_ERR_CONFLICT, "id \"%s\" of vector %zu has a write in flight", ids[i], i);
                goto cleanup;
            }
            if (!replace) {
                st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "id \"%s\" of vector %zu already exists", ids[i], i);
                goto cleanup;
            }
            replace[i] = slot;
            (*n_rep)++;
        }
        order[m++] = i;
    }
    sv_sort(order, m, sizeof *order, cmp_id_index, (void *)ids);
    for (size_t i = 1; i < m; i++) {
        if (strcmp(ids[order[i - 1]], ids[order[i]]) == 0) {
            st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "id \"%s\" of vector %zu appears twice in the batch (also vector %zu)",
                      ids[order[i]], order[i], order[i - 1]);
            goto cleanup;
        }
    }
cleanup:
    sv_mem_free(&c->alloc, NULL, order, n * sizeof *order);
    return st;
}

/* Bind every id of the batch to its slot, except those that replace one
 * (they move when the batch is published); on failure unbind them all. */
static sv_status bind_ids(sv_collection *c, const char *const *ids, const uint32_t *slots, const uint32_t *replace,
                          size_t n, uint64_t *assigned, sv_error *err)
{
    size_t i = 0;
    /* Given ids first, so assigned numbers skip them. */
    for (; i < n; i++) {
        if (!id_given(ids, i))
            continue;
        size_t len = strlen(ids[i]);
        if ((!replace || replace[i] == UINT32_MAX) && sv_idmap_insert(c->idmap, ids[i], len, slots[i]) != SV_OK)
            goto undo;
        if (len > c->id_len_max)
            c->id_len_max = (uint32_t)len; /* kept even if the batch is undone: a bound */
        uint64_t num = 0;
        if (assigned)
            assigned[i] = sv_id_parse_number(ids[i], len, &num) ? num : UINT64_MAX;
    }
    for (i = 0; i < n; i++) {
        if (id_given(ids, i))
            continue;
        uint64_t num = sv_idmap_next_free_number(c->idmap);
        if (sv_idmap_insert_number(c->idmap, num, slots[i]) != SV_OK)
            goto undo;
        if (assigned)
            assigned[i] = num;
    }
    return SV_OK;
undo:
    for (size_t j = 0; j < n; j++)
        sv_idmap_remove_slot(c->idmap, slots[j]); /* unbound slots: no-op */
    return sv_fail(err, SV_ERR_RESOURCE, "out of memory binding the id of vector %zu", i);
}

/* The checks that need no lock: dimension, values, id lengths. */
static sv_status check_batch(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                             const char *const *ids, sv_error *err)
{
    sv_status st = sv_coll_check_dim(c, dim, err);
    if (st != SV_OK)
        return st;
    if (n == 0)
        return sv_ok(err);
    if (!vectors)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "no vectors given");
    for (size_t i = 0; i < n; i++) {
        if ((st = sv_coll_check_vector(c, vectors + i * dim, i, err)) != SV_OK)
            return st;
        if (id_given(ids, i) && strnlen(ids[i], SV_ID_MAX + 1) > SV_ID_MAX)
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "id of vector %zu is longer than %d bytes", i,
                        SV_ID_MAX);
    }
    return SV_OK;
}

/* Capacity for replacing n_rep live slots: their delete's room on the free
 * stack and, for a prepared batch, their marks (write lock). The id map
 * leaves identity mode now, as the moves at publish cannot fail. */
static sv_status reserve_replace(sv_collection *c, size_t n_rep, uint8_t state)
{
    if (!n_rep)
        return SV_OK;
    if (sv_idmap_materialize(c->idmap) != SV_OK ||
        (state == SV_SLOT_PENDING && sv_marks_reserve(c, &c->rep_marks) != SV_OK))
        return SV_ERR_RESOURCE;
    return sv_coll_reserve_free(c, n_rep);
}

/*
 * Under the write lock: the replaced slots (replace[i] != UINT32_MAX) give
 * their ids to the batch's slots and are deleted. Room was reserved by
 * reserve_replace; cannot fail.
 */
static void replace_now(sv_collection *c, const uint32_t *slots, uint32_t *replace, size_t n, size_t n_rep)
{
    if (!n_rep)
        return;
    uint32_t *old = replace; /* reused in place: the caller is done with it */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (replace[i] == UINT32_MAX)
            continue;
        uint32_t o = replace[i];
        sv_idmap_move_slot(c->idmap, o, slots[i]);
        old[m++] = o;
    }
    apply_delete(c, old, m);
}

/*
 * Under the write lock: the batch's slots, ids and rows, in state `state`
 * (PENDING or BUFFERED). A PENDING batch also reserves room on the free
 * stack for its abort and marks the slots it replaces; a BUFFERED one
 * replaces them at once. Nothing changes on failure.
 */
static sv_status place_batch(sv_collection *c, const float *prep, size_t n, const char *const *ids,
                             const sv_payload *payloads, uint64_t *assigned, uint32_t *slots, uint32_t *replace,
                             size_t *n_rep_out, uint8_t state, sv_error *err)
{
    uint32_t dim = c->params.dim;
    uint32_t saved_next = c->next_slot, saved_free = c->n_free;
    size_t n_rep = 0;
    *n_rep_out = 0;
    sv_status st = check_batch_ids(c, ids, n, replace, &n_rep, err);
    if (st != SV_OK)
        return st;
    /* An assigned id is the lowest free number: one a checked delete is
     * freeing is bound now but free in the log's order (the delete comes
     * first there), so a replay would hand it out here. Wait for the
     * deletes in flight (the durable layer asks again). */
    if (c->del_marks.count) {
        for (size_t i = 0; i < n; i++)
            if (!id_given(ids, i))
                return sv_fail(err, SV_ERR_CONFLICT, "a delete in flight may free the id vector %zu would get", i);
    }
    /* Payload types depend on what the collection holds: checked here, under the lock. */
    if (payloads && (st = sv_payloads_check(c->payloads, payloads, n, err)) != SV_OK)
        return st;
    if ((uint64_t)c->next_slot + n > (uint64_t)UINT32_MAX - 1)
        return sv_fail(err, SV_ERR_RESOURCE, "the collection cannot hold %zu more vectors", n);
    /* Capacity first: past this point only the id bindings and payloads can fail. */
    if (sv_graph_reserve(&c->graph, c->next_slot + (uint32_t)n) != SV_OK ||
        sv_idmap_reserve_slots(c->idmap, c->next_slot + (uint32_t)n) != SV_OK ||
        sv_buffer_reserve(&c->active, n) != SV_OK ||
        (state == SV_SLOT_PENDING && sv_coll_grow_free(c, n) != SV_OK))
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory adding %zu vectors", n);
    if (reserve_replace(c, n_rep, state) != SV_OK) {
        if (!c->rep_marks.count)
            sv_marks_free(c, &c->rep_marks); /* an idle collection holds no byte for them */
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory replacing %zu vectors", n_rep);
    }
    /* A replacing row takes a new slot past every used one, never a
     * recycled one: a scroll (in slot order) that already passed the old
     * slot then meets the id again ahead instead of missing it. */
    for (size_t i = 0; i < n; i++)
        slots[i] = c->n_free && !(n_rep && replace[i] != UINT32_MAX) ? c->free_slots[--c->n_free] : c->next_slot++;
    if ((st = bind_ids(c, ids, slots, n_rep ? replace : NULL, n, assigned, err)) != SV_OK)
        goto undo;
    for (size_t i = 0; payloads && i < n; i++) {
        sv_error perr;
        if ((st = sv_payloads_set(c->payloads, slots[i], &payloads[i], SV_PAYLOAD_REPLACE, &perr)) == SV_OK)
            continue;
        /* Out of memory: the payloads set so far and every binding go. */
        for (size_t j = 0; j < i; j++)
            sv_payloads_clear(c->payloads, slots[j]);
        for (size_t j = 0; j < n; j++)
            if (!n_rep || replace[j] == UINT32_MAX)
                sv_idmap_remove_slot(c->idmap, slots[j]);
        st = sv_fail(err, st, "vector %zu: %s", i, perr.message);
        goto undo;
    }
    for (size_t i = 0; i < n; i++) {
        sv_buffer_push(&c->active, prep + i * dim, slots[i]);
        sv_graph_set_state(&c->graph, slots[i], state);
    }
    *n_rep_out = n_rep;
    if (state == SV_SLOT_PENDING) {
        c->free_reserved += (uint32_t)n;
        c->n_pending += n;
        for (size_t i = 0; n_rep && i < n; i++)
            if (replace[i] != UINT32_MAX)
                sv_marks_set(&c->rep_marks, &replace[i], 1);
    } else {
        c->n_live += n;
        replace_now(c, slots, replace, n, n_rep);
    }
    return sv_ok(err);
undo:
    c->next_slot = saved_next;
    c->n_free = saved_free; /* the popped slots are still in the array */
    c->free_reserved -= (uint32_t)n_rep;
    if (!c->rep_marks.count)
        sv_marks_free(c, &c->rep_marks);
    return st;
}

static void ticket_release(sv_collection *c, sv_add_ticket *t)
{
    sv_mem_free(&c->alloc, NULL, t->slots, t->n * sizeof *t->slots);
    sv_mem_free(&c->alloc, NULL, t->replace, t->n * sizeof *t->replace);
    *t = (sv_add_ticket){0};
}

/*
 * Check the batch and place it in state `state` under the write lock. On
 * success t holds the slots and, for an upsert, what each replaces (the
 * caller releases it); on failure it is empty. *want_flush says an
 * automatic flush is due.
 */
static sv_status add_batch(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                           const char *const *ids, const sv_payload *payloads, int upsert, uint64_t *assigned,
                           uint8_t state, sv_add_ticket *t, int *want_flush, sv_error *err)
{
    *t = (sv_add_ticket){0};
    *want_flush = 0;
    sv_status st = check_batch(c, vectors, n, dim, ids, err);
    if (st != SV_OK || n == 0)
        return st;
    const float *prep = sv_coll_prepare_vectors(c, vectors, n);
    t->n = n;
    t->slots = sv_mem_alloc(&c->alloc, NULL, n * sizeof *t->slots);
    if (upsert && ids && (t->replace = sv_mem_alloc(&c->alloc, NULL, n * sizeof *t->replace)))
        memset(t->replace, 0xff, n * sizeof *t->replace);
    if (!prep || !t->slots || (upsert && ids && !t->replace)) {
        ticket_release(c, t);
        sv_coll_free_prepared(c, vectors, prep, n);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory adding %zu vectors", n);
    }
    pthread_rwlock_wrlock(&c->lock);
    st = place_batch(c, prep, n, ids, payloads, assigned, t->slots, t->replace, &t->n_rep, state, err);
    *want_flush = st == SV_OK && !c->manual_flush && c->params.flush_threshold &&
                  c->active.n >= c->params.flush_threshold;
    pthread_rwlock_unlock(&c->lock);
    sv_coll_free_prepared(c, vectors, prep, n);
    if (st != SV_OK)
        ticket_release(c, t);
    return st;
}

static sv_status add_now(sv_collection *c, const float *vectors, size_t n, uint32_t dim, const char *const *ids,
                         const sv_payload *payloads, int upsert, uint64_t *assigned, size_t *replaced,
                         sv_error *err)
{
    sv_add_ticket t;
    int want_flush = 0;
    sv_status st = add_batch(c, vectors, n, dim, ids, payloads, upsert, assigned, SV_SLOT_BUFFERED, &t,
                             &want_flush, err);
    if (replaced)
        *replaced = t.n_rep;
    ticket_release(c, &t);
    /* The batch is applied and searchable in the buffer whatever the flush
     * does. If a flush or consolidation is running, do not wait for it: the
     * next add over the threshold (or an explicit flush) takes the buffer;
     * a flush that fails leaves the buffer to be retried the same way. */
    if (want_flush && pthread_mutex_trylock(&c->maint) == 0) {
        sv_coll_flush_locked(c, NULL, NULL);
        pthread_mutex_unlock(&c->maint);
    }
    return st;
}

sv_status sv_collection_add(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                            const char *const *ids, uint64_t *assigned, sv_error *err)
{
    return add_now(c, vectors, n, dim, ids, NULL, 0, assigned, NULL, err);
}

sv_status sv_collection_add_payloads(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                                     const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                                     sv_error *err)
{
    return add_now(c, vectors, n, dim, ids, payloads, 0, assigned, NULL, err);
}

sv_status sv_collection_upsert(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                               const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                               size_t *replaced, sv_error *err)
{
    return add_now(c, vectors, n, dim, ids, payloads, 1, assigned, replaced, err);
}

sv_status sv_engine_add_prepare(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                                const char *const *ids, const sv_payload *payloads, int upsert, uint64_t *assigned,
                                sv_add_ticket *t, sv_error *err)
{
    int want_flush = 0; /* a manual-flush collection: never set */
    return add_batch(c, vectors, n, dim, ids, payloads, upsert, assigned, SV_SLOT_PENDING, t, &want_flush, err);
}

/* The slots a prepared upsert replaces, unmarked (write lock). */
static void unmark_replaced(sv_collection *c, const sv_add_ticket *t)
{
    for (size_t i = 0; i < t->n; i++) {
        uint32_t o = t->replace[i];
        if (o != UINT32_MAX)
            sv_marks_clear(c, &c->rep_marks, &o, 1);
    }
}

void sv_engine_add_publish(sv_collection *c, sv_add_ticket *t)
{
    if (!t->n)
        return;
    pthread_rwlock_wrlock(&c->lock);
    if (t->n_rep)
        unmark_replaced(c, t);
    for (size_t i = 0; i < t->n; i++)
        sv_graph_set_state(&c->graph, t->slots[i], SV_SLOT_BUFFERED);
    c->n_live += t->n;
    c->n_pending -= t->n;
    c->free_reserved -= (uint32_t)t->n;
    replace_now(c, t->slots, t->replace, t->n, t->n_rep);
    pthread_rwlock_unlock(&c->lock);
    ticket_release(c, t);
}

void sv_engine_add_abort(sv_collection *c, sv_add_ticket *t)
{
    if (!t->n)
        return;
    pthread_rwlock_wrlock(&c->lock);
    if (t->n_rep)
        unmark_replaced(c, t);
    c->free_reserved -= (uint32_t)t->n_rep; /* the replaced slots' delete */
    size_t words = 0;
    uint64_t *marked = slot_bitmap(c, &words);
    for (size_t i = 0; i < t->n; i++) {
        uint32_t s = t->slots[i];
        if (marked)
            marked[s >> 6] |= UINT64_C(1) << (s & 63);
        else
            sv_buffer_remove_slot(&c->active, s); /* slow, but needs no memory */
        sv_idmap_remove_slot(c->idmap, s); /* a replacing slot is unbound: a no-op */
        sv_payloads_clear(c->payloads, s);
        sv_graph_set_state(&c->graph, s, SV_SLOT_FREE);
        /* Room was reserved at prepare. */
        c->free_slots[c->n_free++] = s;
    }
    if (marked)
        sv_coll_remove_rows(c, marked);
    c->n_pending -= t->n;
    c->free_reserved -= (uint32_t)t->n;
    pthread_rwlock_unlock(&c->lock);
    sv_mem_free(&c->alloc, NULL, marked, (words ? words : 1) * sizeof *marked);
    ticket_release(c, t);
}

/* ---- delete ------------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}


/*
 * Under the write lock: every id live and not being deleted (else NOT_FOUND
 * naming it); the distinct slots in *slots (n of them, sorted) and room
 * reserved on the free stack for them. Nothing changes on failure.
 */
static sv_status check_delete(sv_collection *c, const char *const *ids, size_t n, uint32_t *slots,
                              size_t *n_out, sv_error *err)
{
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        sv_status st = sv_coll_write_target(c, ids[i], &slots[i]);
        if (st == SV_ERR_CONFLICT)
            return sv_fail(err, st, "id \"%.*s\" (item %zu) has a write in flight", SV_ID_MAX, ids[i], i);
        if (st != SV_OK)
            return sv_fail(err, st, "id \"%.*s\" (item %zu) not found", SV_ID_MAX, ids[i] ? ids[i] : "", i);
    }
    sv_sort(slots, n, sizeof *slots, cmp_u32, NULL);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || slots[m - 1] != slots[i])
            slots[m++] = slots[i];
    if (sv_coll_reserve_free(c, m) != SV_OK)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    *n_out = m;
    return sv_ok(err);
}

/* A bitmap over slots [0, next_slot), zeroed (NULL when out of memory). */
static uint64_t *slot_bitmap(sv_collection *c, size_t *words)
{
    *words = ((size_t)c->next_slot + 63) / 64;
    return sv_mem_calloc(&c->alloc, NULL, *words ? *words : 1, sizeof(uint64_t));
}

/*
 * Under the write lock, after check_delete: tombstone or free each slot. A
 * vector still in the active buffer never reached the graph: its slot is
 * free at once. One a running flush is linking stays for the flush to
 * skip, as a tombstone. Rows leave the buffer in one compaction pass;
 * without memory for the bitmaps it falls back to one at a time.
 */
static void apply_delete(sv_collection *c, const uint32_t *slots, size_t n)
{
    size_t words = 0;
    uint64_t *gone = NULL, *flushing = NULL;
    int bitmaps = 0; /* 1: built, -1: no memory */
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = slots[i];
        int in_active = 0;
        if (sv_graph_state(&c->graph, slot) == SV_SLOT_BUFFERED) {
            if (bitmaps == 0) {
                gone = slot_bitmap(c, &words);
                flushing = slot_bitmap(c, &words);
                bitmaps = gone && flushing ? 1 : -1;
                for (size_t r = 0; bitmaps > 0 && r < c->flushing.n; r++)
                    flushing[c->flushing.slots[r] >> 6] |= UINT64_C(1) << (c->flushing.slots[r] & 63);
            }
            if (bitmaps > 0) {
                in_active = !((flushing[slot >> 6] >> (slot & 63)) & 1);
                if (in_active)
                    gone[slot >> 6] |= UINT64_C(1) << (slot & 63);
            } else {
                in_active = sv_buffer_remove_slot(&c->active, slot);
            }
        }
        if (in_active) {
            sv_graph_set_state(&c->graph, slot, SV_SLOT_FREE);
            c->free_slots[c->n_free++] = slot; /* room reserved by check_delete */
        } else {
            sv_graph_set_state(&c->graph, slot, SV_SLOT_DELETED);
            c->n_tombstones++;
        }
        sv_idmap_remove_slot(c->idmap, slot);
        sv_payloads_clear(c->payloads, slot);
        c->n_live--;
    }
    if (bitmaps > 0)
        sv_coll_remove_rows(c, gone);
    sv_mem_free(&c->alloc, NULL, gone, (words ? words : 1) * sizeof *gone);
    sv_mem_free(&c->alloc, NULL, flushing, (words ? words : 1) * sizeof *flushing);
    c->free_reserved -= (uint32_t)n;
}

sv_status sv_collection_delete(sv_collection *c, const char *const *ids, size_t n, sv_error *err)
{
    if (n == 0)
        return sv_ok(err);
    uint32_t *slots = sv_mem_alloc(&c->alloc, NULL, n * sizeof *slots);
    if (!slots)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    size_t m = 0;
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = check_delete(c, ids, n, slots, &m, err);
    if (st == SV_OK)
        apply_delete(c, slots, m);
    pthread_rwlock_unlock(&c->lock);
    sv_mem_free(&c->alloc, NULL, slots, n * sizeof *slots);
    return st;
}

sv_status sv_engine_delete_check(sv_collection *c, const char *const *ids, size_t n,
                                 sv_delete_ticket *t, sv_error *err)
{
    t->slots = NULL;
    t->n = 0;
    if (n == 0)
        return sv_ok(err);
    uint32_t *slots = sv_mem_alloc(&c->alloc, NULL, n * sizeof *slots);
    if (!slots)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    size_t m = 0;
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = check_delete(c, ids, n, slots, &m, err);
    if (st == SV_OK && sv_marks_reserve(c, &c->del_marks) != SV_OK) {
        c->free_reserved -= (uint32_t)m;
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory deleting %zu ids", n);
    }
    if (st == SV_OK)
        sv_marks_set(&c->del_marks, slots, m);
    pthread_rwlock_unlock(&c->lock);
    if (st != SV_OK) {
        sv_mem_free(&c->alloc, NULL, slots, n * sizeof *slots);
        return st;
    }
    /* The array keeps its allocated size n for the free (m <= n). */
    t->slots = slots;
    t->n = m;
    t->cap = n;
    return SV_OK;
}

static void delete_ticket_release(sv_collection *c, sv_delete_ticket *t)
{
    sv_mem_free(&c->alloc, NULL, t->slots, t->cap * sizeof *t->slots);
    t->slots = NULL;
    t->n = t->cap = 0;
}

void sv_engine_delete_apply(sv_collection *c, sv_delete_ticket *t, size_t *deleted)
{
    if (deleted)
        *deleted = t->n;
    if (!t->slots)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_marks_clear(c, &c->del_marks, t->slots, t->n);
    apply_delete(c, t->slots, t->n);
    pthread_rwlock_unlock(&c->lock);
    delete_ticket_release(c, t);
}

void sv_engine_delete_cancel(sv_collection *c, sv_delete_ticket *t)
{
    if (!t->slots)
        return;
    pthread_rwlock_wrlock(&c->lock);
    sv_marks_clear(c, &c->del_marks, t->slots, t->n);
    c->free_reserved -= (uint32_t)t->n;
    pthread_rwlock_unlock(&c->lock);
    delete_ticket_release(c, t);
}

/* ---- marks of writes in flight ------------------------------------------------ */

sv_status sv_marks_reserve(sv_collection *c, sv_slot_marks *m)
{
    size_t words = ((size_t)c->next_slot + 63) / 64;
    if (words <= m->words)
        return SV_OK;
    words += words / 4;
    uint64_t *t = sv_mem_realloc(&c->alloc, &c->t_other, m->bits, m->words * sizeof *t, words * sizeof *t);
    if (!t)
        return SV_ERR_RESOURCE;
    memset(t + m->words, 0, (words - m->words) * sizeof *t);
    m->bits = t;
    m->words = words;
    return SV_OK;
}

void sv_marks_set(sv_slot_marks *m, const uint32_t *slots, size_t n)
{
    for (size_t i = 0; i < n; i++)
        m->bits[slots[i] >> 6] |= UINT64_C(1) << (slots[i] & 63);
    m->count += n;
}

void sv_marks_free(sv_collection *c, sv_slot_marks *m)
{
    sv_mem_free(&c->alloc, &c->t_other, m->bits, m->words * sizeof *m->bits);
    *m = (sv_slot_marks){0};
}

void sv_marks_clear(sv_collection *c, sv_slot_marks *m, const uint32_t *slots, size_t n)
{
    for (size_t i = 0; i < n; i++)
        m->bits[slots[i] >> 6] &= ~(UINT64_C(1) << (slots[i] & 63));
    m->count -= n;
    if (m->count == 0)
        sv_marks_free(c, m);
}
