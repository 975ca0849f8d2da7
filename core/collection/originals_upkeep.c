/*
 * The durable layer's hold on the originals file (engine.h): make it
 * durable before a snapshot that relies on it, give compaction's tail back
 * after one, and check it against the codes after a recovery.
 *
 * Why the records can be trusted after a crash: a record is written only
 * for a slot that is free or new at the time (a flush's rows) or by a
 * compaction, and every snapshot fsyncs the file before it is renamed into
 * place. A slot that is live in the snapshot and still live after the log
 * replay was never free in between (a delete is logged, so its replay
 * deletes it too), so its record is the one the snapshot's fsync made
 * durable; every slot the replay flushes gets its record rewritten from
 * the log's floats. Compaction is the exception (it is not logged, so a
 * replay does not move what it moved): after one, no flush runs (none
 * could overwrite a moved-from record the last snapshot still names) until
 * a snapshot that saw the new layout is committed, and the file's tail is
 * cut only then, past what both that snapshot and the collection use.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collection_impl.h"
#include "error.h"
#include "quantizer.h"

int sv_engine_has_originals(sv_collection *c)
{
    return c->orig != NULL;
}

void sv_engine_originals_defer(sv_collection *c)
{
    pthread_rwlock_wrlock(&c->lock);
    c->orig_defer = 1;
    pthread_rwlock_unlock(&c->lock);
}

sv_status sv_engine_originals_sync(sv_collection *c, sv_error *err)
{
    if (!c->orig)
        return sv_ok(err);
    unsigned long long bad = atomic_load(&c->orig_errors);
    if (bad)
        return sv_fail(err, SV_ERR_IO, "originals: %llu records could not be written; the log keeps "
                       "them until a restart rewrites them", bad);
    return sv_orig_sync(c->orig, err);
}

/* The records the snapshot just committed needs end at its snap_slots,
 * those the collection needs now at next_slot: past both, nothing. */
void sv_engine_originals_commit(sv_collection *c)
{
    if (!c->orig)
        return;
    pthread_rwlock_wrlock(&c->lock);
    uint32_t keep = c->snap_slots > c->next_slot ? c->snap_slots : c->next_slot;
    sv_orig_truncate(c->orig, keep, NULL);
    c->safe_gen = c->snap_gen;
    pthread_rwlock_unlock(&c->lock);
}

int sv_engine_originals_waiting(sv_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    int w = c->orig && c->orig_defer && c->compact_gen != c->safe_gen;
    pthread_rwlock_unlock(&c->lock);
    return w;
}

sv_status sv_engine_originals_check(sv_collection *c, sv_error *err)
{
    if (!c->orig)
        return sv_ok(err);
    sv_status st = SV_OK;
    uint32_t dim = c->params.dim;
    size_t rec = sv_store_record_size(c->store);
    uint8_t *tmp = malloc(rec);
    if (!tmp)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory checking the originals");
    pthread_rwlock_wrlock(&c->lock);
    if ((st = sv_orig_reserve(c->orig, c->next_slot, err)) != SV_OK)
        goto out;
    const float *mean = sv_store_mean(c->store);
    for (uint32_t slot = 0; slot < c->next_slot; slot++) {
        if (sv_graph_state(&c->graph, slot) != SV_SLOT_INDEXED)
            continue;
        const float *x = sv_orig_get(c->orig, slot);
        int ok = x && mean;
        for (uint32_t j = 0; ok && j < dim; j++)
            ok = isfinite(x[j]);
        if (ok) {
            sv_quant_encode(mean, dim, x, tmp);
            ok = memcmp(tmp, sv_store_record(c->store, slot), rec) == 0;
        }
        if (!ok) {
            st = sv_fail(err, SV_ERR_CORRUPT,
                         "originals: the record of slot %u does not match its 8-bit code "
                         "(the file was damaged or replaced)", slot);
            goto out;
        }
    }
    st = sv_ok(err);
out:
    pthread_rwlock_unlock(&c->lock);
    free(tmp);
    return st;
}
