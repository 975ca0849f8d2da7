/*
 * Compaction (slimvec.h, engine.h): after consolidation has freed the
 * slots of deleted vectors, move the vectors at the top of the slot range
 * into the lowest free slots and give the top back, so that every array
 * indexed by slot (vector store, edge words, slot states, id map keys)
 * shrinks to what the live vectors need.
 *
 * Why: a delete frees its slot only at the next consolidation, and adds
 * that come before it take new slots from the top. Deleting and re-adding
 * half of a collection grew its slot range (and so its bytes per vector)
 * by half, for good, though the number of vectors never changed.
 *
 * How: with the maintenance lock and the write lock held (no reader, no
 * flush), pair the highest movable slot with the lowest free one while the
 * first is above the second (the plan, a remap table); copy the originals
 * and encode every neighbour list that names a moved slot anew (what can
 * fail, done first: a failure changes nothing); then move the record, the
 * neighbour list, the id binding, the state and a buffered row's slot, and
 * put the rewritten lists in place. Only
 * indexed and buffered vectors move: a tombstone or a pending add at the
 * top stops the pass (the next compaction goes on from there), and nothing
 * moves while an add or a delete holds slot numbers between its steps.
 * The cost is one pass over the edges, about as long as a stats walk.
 */
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "sort.h"

static int cmp_u32(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* With maint and the write lock held. *moved: vectors moved. */
static sv_status compact_locked(sv_collection *c, uint32_t *moved, sv_error *err)
{
    *moved = 0;
    if (c->n_pending || c->del_marks.count || c->rep_marks.count || c->payload_held || c->flushing.n || c->n_free == 0)
        return sv_ok(err); /* slot numbers are held elsewhere, or nothing to do */
    uint32_t n = c->next_slot;
    uint32_t *remap = sv_mem_alloc(&c->alloc, NULL, (size_t)n * sizeof *remap);
    if (!remap)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory compacting %u slots", n);
    memset(remap, 0xff, (size_t)n * sizeof *remap); /* SV_NO_SLOT: not moved */
    sv_edges_reclaim(c->edges);
    sv_sort(c->free_slots, c->n_free, sizeof *c->free_slots, cmp_u32, NULL);

    /* 1. The plan: which slot moves where (remap), nothing changed yet. */
    uint32_t lo = 0, hi = n;
    while (hi > 0) {
        uint32_t top = hi - 1;
        if (lo > 0 && c->free_slots[lo - 1] >= top)
            break; /* met the slots taken as targets (still FREE in the plan) */
        uint8_t st = sv_graph_state(&c->graph, top);
        if (st == SV_SLOT_FREE) {
            hi--; /* dropped below */
            continue;
        }
        if ((st != SV_SLOT_INDEXED && st != SV_SLOT_BUFFERED) || lo >= c->n_free ||
            c->free_slots[lo] >= top)
            break;
        remap[top] = c->free_slots[lo++];
        (*moved)++;
        hi--;
    }
    uint32_t new_n = hi;
    /* 2. What can fail, before anything the readers see changes: the
     * originals' copies (into free slots: harmless if we stop) and the
     * rewritten neighbour lists (new blocks: freed if we stop). */
    uint64_t *lists = NULL; /* per slot below n: its new list's word, or 0 */
    sv_status st = SV_OK;
    for (uint32_t top = new_n; top < n && st == SV_OK; top++)
        if (remap[top] != SV_NO_SLOT && c->orig && sv_graph_state(&c->graph, top) == SV_SLOT_INDEXED &&
            sv_orig_move(c->orig, top, remap[top]) != SV_OK)
            st = sv_fail(err, SV_ERR_IO, "originals: copying slot %u during compaction failed", top);
    for (uint32_t top = new_n; top < n && st == SV_OK; top++)
        if (remap[top] != SV_NO_SLOT && sv_payloads_reserve_move(c->payloads, top, remap[top]) != SV_OK)
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory compacting the payloads");
    if (st == SV_OK && *moved && sv_idmap_materialize(c->idmap) != SV_OK)
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory compacting the id map");
    if (st == SV_OK && *moved && !(lists = sv_mem_calloc(&c->alloc, NULL, n, sizeof *lists)))
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory compacting %u slots", n);
    for (uint32_t u = 0; u < n && st == SV_OK && lists; u++) {
        uint8_t us = sv_graph_state(&c->graph, u);
        if (us != SV_SLOT_INDEXED && !sv_slot_is_tombstone(us))
            continue;
        uint32_t ids[SV_R_MAX];
        uint32_t count = sv_edges_get(c->edges, u, ids), k = 0;
        int changed = 0;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t v = ids[i] < new_n ? ids[i] : remap[ids[i]];
            changed |= v != ids[i];
            /* An edge to a slot that was free (none should exist): gone. */
            if (v != SV_NO_SLOT)
                ids[k++] = v;
        }
        if (changed && k && sv_edges_encode(c->edges, ids, k, &lists[u]) != SV_OK)
            st = sv_fail(err, SV_ERR_RESOURCE, "out of memory compacting the neighbour lists");
        if (changed && !k)
            lists[u] = SV_EDGES_EMPTY;
    }
    if (st != SV_OK) {
        for (uint32_t u = 0; lists && u < n; u++)
            sv_edges_discard(c->edges, lists[u]);
        sv_mem_free(&c->alloc, NULL, lists, (size_t)n * sizeof *lists);
        sv_mem_free(&c->alloc, NULL, remap, (size_t)n * sizeof *remap);
        sv_payloads_trim(c->payloads);
        *moved = 0;
        return st;
    }
    /* 3. The moves; then every rewritten list goes where its node is now
     * (no reader: the old blocks are freed at once). */
    for (uint32_t top = new_n; top < n; top++) {
        uint32_t to = remap[top];
        if (to == SV_NO_SLOT)
            continue;
        uint8_t ts = sv_graph_state(&c->graph, top);
        if (ts == SV_SLOT_INDEXED) {
            sv_store_move(c->store, top, to);
            sv_edges_move(c->edges, top, to);
        }
        sv_idmap_move_slot(c->idmap, top, to);
        sv_payloads_move(c->payloads, top, to); /* reserved above: cannot fail */
        sv_graph_set_state(&c->graph, to, ts);
        sv_graph_set_state(&c->graph, top, SV_SLOT_FREE);
    }
    sv_payloads_reindex(c->payloads); /* the moves left the indexes naming old slots */
    for (uint32_t u = 0; lists && u < n; u++)
        if (lists[u])
            sv_edges_install(c->edges, u < new_n ? u : remap[u], lists[u]);
    sv_mem_free(&c->alloc, NULL, lists, (size_t)n * sizeof *lists);
    /* The list space churn left free goes back too (out of memory: it
     * stays, and is reused by later lists). */
    sv_edges_repack(c->edges, new_n, SV_REPACK_DELETE);
    for (size_t r = 0; r < c->active.n; r++)
        if (c->active.slots[r] >= new_n)
            c->active.slots[r] = remap[c->active.slots[r]];
    uint32_t entry = atomic_load(&c->graph.entry);
    if (entry != SV_NO_SLOT && entry >= new_n)
        atomic_store(&c->graph.entry, remap[entry]);
    /* The free stack keeps the free slots below the new end, lowest on top
     * (popped first: new vectors fill the low range). */
    uint32_t kept = 0;
    for (uint32_t i = lo; i < c->n_free; i++) /* ascending: never overtakes the reads */
        if (c->free_slots[i] < new_n)
            c->free_slots[kept++] = c->free_slots[i];
    for (uint32_t i = 0; i < kept / 2; i++) {
        uint32_t t = c->free_slots[i];
        c->free_slots[i] = c->free_slots[kept - 1 - i];
        c->free_slots[kept - 1 - i] = t;
    }
    c->n_free = kept;
    c->next_slot = new_n;
    sv_mem_free(&c->alloc, NULL, remap, (size_t)n * sizeof *remap);

    c->layout_gen += *moved > 0;
    /* Give the room back. */
    sv_store_shrink(c->store, new_n);
    if (c->orig) {
        /* Durable: the last snapshot may still name the moved-from slots;
         * the file keeps them until the next one is committed. */
        if (c->orig_defer)
            c->compact_gen += *moved > 0;
        else
            sv_orig_truncate(c->orig, new_n, NULL);
    }
    sv_edges_shrink(c->edges, new_n);
    sv_graph_shrink(&c->graph, new_n);
    sv_idmap_shrink_slots(c->idmap, new_n);
    size_t want = (size_t)c->n_free + c->free_reserved;
    if (c->free_cap > 64 && want * 4 < c->free_cap) {
        size_t cap = want < 64 ? 64 : want * 2;
        uint32_t *t = sv_mem_realloc(&c->alloc, &c->t_other, c->free_slots, c->free_cap * sizeof *t,
                                     cap * sizeof *t);
        if (t) {
            c->free_slots = t;
            c->free_cap = (uint32_t)cap;
        }
    }
    /* Pooled search scratch is sized for the old slot range. */
    pthread_mutex_lock(&c->pool_lock);
    for (uint32_t i = 0; i < c->pool_n; i++) {
        sv_scratch_release(c->pool[i]);
        sv_mem_free(&c->alloc, &c->t_other, c->pool[i], sizeof *c->pool[i]);
    }
    c->pool_n = 0;
    pthread_mutex_unlock(&c->pool_lock);
    return sv_ok(err);
}

sv_status sv_engine_compact(sv_collection *c, const sv_flush_hooks *h, uint32_t *moved, sv_error *err)
{
    uint32_t local = 0;
    if (!moved)
        moved = &local;
    pthread_mutex_lock(&c->maint);
    if (h)
        h->before(h->ctx);
    pthread_rwlock_wrlock(&c->lock);
    sv_status st = compact_locked(c, moved, err);
    pthread_rwlock_unlock(&c->lock);
    if (h)
        h->after(h->ctx);
    pthread_mutex_unlock(&c->maint);
    return st;
}

sv_status sv_collection_compact(sv_collection *c, sv_error *err)
{
    return sv_engine_compact(c, NULL, NULL, err);
}
