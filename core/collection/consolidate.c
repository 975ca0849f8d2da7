/*
 * Consolidation (slimvec.h, engine.h), the FreshDiskANN approach: the live
 * nodes whose lists point at tombstones take those tombstones' neighbours
 * as candidates and prune again; then the tombstones' lists are freed and
 * their slots recycled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "parallel.h"

typedef struct repair_job {
    sv_collection *c;
    sv_scratch *scratch;
} repair_job;

static int repair_slot(void *ctx, size_t i, unsigned worker)
{
    repair_job *j = ctx;
    uint8_t st = sv_graph_state(&j->c->graph, (uint32_t)i);
    /* Tombstones that stay (deleted after this pass began) are repaired too:
     * they keep routing searches until their own consolidation. */
    if (st != SV_SLOT_INDEXED && st != SV_SLOT_DELETED)
        return 0;
    return (int)sv_graph_repair_node(&j->c->graph, (uint32_t)i, &j->scratch[worker]);
}

static void reclaim_between_repair(void *ctx)
{
    sv_coll_reclaim_if_due(((repair_job *)ctx)->c);
}

/* With the maintenance lock held. */
static sv_status consolidate_locked(sv_collection *c, const sv_flush_hooks *h, sv_error *err)
{
    sv_status st = SV_OK;
    unsigned threads = sv_coll_threads(c);
    const sv_allocator *a = &c->alloc;
    sv_scratch *scratch = NULL;

    /* Fix the set to remove now: later deletes wait for the next pass. The
     * durable layer logs the point (taking), so a replay removes the same
     * set and recycles the same slots. */
    if (h)
        h->before(h->ctx);
    pthread_rwlock_wrlock(&c->lock);
    uint32_t n_slots = c->next_slot;
    uint64_t n_del = 0;
    for (uint32_t i = 0; i < n_slots; i++) {
        if (sv_graph_state(&c->graph, i) == SV_SLOT_DELETED) {
            sv_graph_set_state(&c->graph, i, SV_SLOT_DELETING);
            n_del++;
        }
    }
    if (n_del && h && (st = h->taking(h->ctx, n_del, err)) != SV_OK) {
        for (uint32_t i = 0; i < n_slots; i++)
            if (sv_graph_state(&c->graph, i) == SV_SLOT_DELETING)
                sv_graph_set_state(&c->graph, i, SV_SLOT_DELETED);
    }
    pthread_rwlock_unlock(&c->lock);
    if (h)
        h->after(h->ctx);
    if (st != SV_OK)
        return st;
    if (n_del == 0) {
        st = c->connect_due && sv_coll_connect(c, NULL, SV_REPACK_DELETE) != SV_OK
                 ? sv_fail(err, SV_ERR_RESOURCE, "out of memory linking cut-off vectors")
                 : sv_ok(err);
        goto cleanup;
    }

    scratch = sv_mem_alloc(a, NULL, threads * sizeof *scratch);
    if (!scratch) {
        st = SV_ERR_RESOURCE;
    } else {
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_init(&scratch[t], a, NULL);
        repair_job job = {c, scratch};
        st = (sv_status)sv_parallel_for(threads, n_slots, 256, &c->lock, repair_slot,
                                        reclaim_between_repair, &job);
    }

    /* A new entry point if the old one goes: an O(n) scan, so under the
     * read lock; the DELETING set cannot change meanwhile. */
    uint32_t entry = SV_NO_SLOT;
    if (st == SV_OK) {
        pthread_rwlock_rdlock(&c->lock);
        entry = sv_graph_pick_entry(&c->graph, n_slots);
        pthread_rwlock_unlock(&c->lock);
    }

    pthread_rwlock_wrlock(&c->lock);
    /* The free list grows here, not earlier: deletes of buffered vectors
     * during the repair push onto it too. */
    if (st == SV_OK && sv_coll_grow_free(c, n_del) != SV_OK)
        st = SV_ERR_RESOURCE;
    if (st == SV_OK) {
        uint32_t old_entry = atomic_load(&c->graph.entry);
        if (old_entry == SV_NO_SLOT || sv_graph_state(&c->graph, old_entry) == SV_SLOT_DELETING)
            atomic_store(&c->graph.entry, entry);
        for (uint32_t i = 0; i < n_slots; i++) {
            if (sv_graph_state(&c->graph, i) != SV_SLOT_DELETING)
                continue;
            sv_edges_clear(c->edges, i);
            sv_graph_set_state(&c->graph, i, SV_SLOT_FREE);
            c->free_slots[c->n_free++] = i;
            c->n_tombstones--;
        }
    } else {
        /* Repairs so far are valid graphs; the tombstones stay for a retry. */
        for (uint32_t i = 0; i < n_slots; i++)
            if (sv_graph_state(&c->graph, i) == SV_SLOT_DELETING)
                sv_graph_set_state(&c->graph, i, SV_SLOT_DELETED);
    }
    sv_edges_reclaim(c->edges);
    pthread_rwlock_unlock(&c->lock);

    if (st == SV_OK && scratch)
        st = sv_coll_connect(c, &scratch[0], SV_REPACK_DELETE);
    else
        c->connect_due = 1; /* the repairs so far may have cut nodes off */
    if (st == SV_ERR_INTERNAL)
        st = sv_fail(err, SV_ERR_INTERNAL, "connect left %llu vectors unreachable from the entry point",
                     (unsigned long long)c->connect_last.unreachable_after);
    else
        st = st == SV_OK ? sv_ok(err) : sv_fail(err, SV_ERR_RESOURCE, "out of memory consolidating");

cleanup:
    if (scratch) {
        for (unsigned t = 0; t < threads; t++)
            sv_scratch_release(&scratch[t]);
        sv_mem_free(a, NULL, scratch, threads * sizeof *scratch);
    }
    return st;
}

sv_status sv_collection_consolidate(sv_collection *c, sv_error *err)
{
    pthread_mutex_lock(&c->maint);
    sv_status st = consolidate_locked(c, NULL, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}

sv_status sv_engine_consolidate(sv_collection *c, const sv_flush_hooks *h, sv_error *err)
{
    pthread_mutex_lock(&c->maint);
    sv_status st = consolidate_locked(c, h, err);
    pthread_mutex_unlock(&c->maint);
    return st;
}
