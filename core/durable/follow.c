/* Applying a followed log (see follow.h). */
#include "follow.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "error.h"
#include "idmap.h"
#include "log.h"
#include "logrec.h"

uint64_t sv_follow_assigned_id(const sv_follow_ids *f, uint64_t lsn, uint32_t i)
{
    uint64_t s = f->shards ? f->shards : 1;
    uint64_t base = (SV_FOLLOW_ASSIGNED_MIN + s - 1) / s; /* ceil(2^62 / S) */
    /* k = base + lsn * 2^20 + i, and S * k + shard < 2^63. */
    uint64_t room = (UINT64_MAX >> 1) / s - base; /* largest k - base that fits */
    if (i >= SV_FOLLOW_BATCH_MAX || lsn > (room >> 20) - 1)
        return 0;
    uint64_t k = base + (lsn << 20) + i;
    return s * k + f->shard;
}

uint32_t sv_follow_route(const char *id, size_t len, uint32_t shards)
{
    if (shards <= 1)
        return 0;
    uint64_t num;
    if (sv_id_parse_number(id, len, &num))
        return (uint32_t)(num % shards);
    return sv_crc32c(0, id, len) % shards;
}

int sv_follow_id_allowed(const char *id, size_t len)
{
    uint64_t num;
    return !sv_id_parse_number(id, len, &num) || num < SV_FOLLOW_ASSIGNED_MIN;
}

/* A refusal every replica makes the same way (the record is done). */
static int deterministic(sv_status st)
{
    return st == SV_ERR_ALREADY_EXISTS || st == SV_ERR_NOT_FOUND || st == SV_ERR_INVALID_ARGUMENT;
}

static sv_status apply_add(sv_collection *c, const sv_follow_ids *f, uint64_t lsn, const sv_logrec *rec,
                           sv_error *err)
{
    if (rec->n > SV_FOLLOW_BATCH_MAX)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a record of %u vectors (at most %u)", rec->n, SV_FOLLOW_BATCH_MAX);
    /* Ids left to the follower are numbered from the LSN: written out as
     * canonical decimals they are numeric ids to the engine. */
    char *names = malloc((size_t)rec->n * 21 + 1);
    const char **ids = malloc(((size_t)rec->n + 1) * sizeof *ids);
    uint64_t *got = malloc(((size_t)rec->n + 1) * sizeof *got);
    sv_status st = SV_OK;
    if (!names || !ids || !got) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory applying %u vectors", rec->n);
        goto cleanup;
    }
    for (uint32_t i = 0; i < rec->n; i++) {
        if (rec->ids[i]) {
            ids[i] = rec->ids[i];
            continue;
        }
        uint64_t id = sv_follow_assigned_id(f, lsn, i);
        if (!id) {
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "LSN %" PRIu64 " is past the ids the cluster can assign", lsn);
            goto cleanup;
        }
        snprintf(names + (size_t)i * 21, 21, "%" PRIu64, id);
        ids[i] = names + (size_t)i * 21;
    }
    st = sv_collection_add(c, rec->vectors, rec->n, rec->dim, ids, got, err);
cleanup:
    free(names);
    free(ids);
    free(got);
    return st;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct ids of a delete (a repeated id counts once), sorting rec.ids. */
static uint64_t distinct(char **ids, uint32_t n)
{
    if (n == 0)
        return 0;
    qsort(ids, n, sizeof *ids, by_text);
    uint64_t k = 1;
    for (uint32_t i = 1; i < n; i++)
        k += strcmp(ids[i - 1], ids[i]) != 0;
    return k;
}

sv_status sv_follow_apply(sv_collection *c, const sv_follow_ids *f, uint32_t type, uint64_t lsn,
                          const uint8_t *payload, size_t len, sv_status *outcome, uint64_t *count,
                          sv_error *err)
{
    *outcome = SV_OK;
    *count = 0;
    if (type != SV_WAL_ADD && type != SV_WAL_DELETE)
        return sv_ok(err); /* a replica's own markers are never in a followed log */
    sv_logrec rec;
    sv_error derr = {0};
    sv_status st = type == SV_WAL_ADD ? sv_logrec_decode_add(payload, len, &rec, &derr)
                                      : sv_logrec_decode_delete(payload, len, &rec, &derr);
    if (st == SV_ERR_RESOURCE)
        return sv_fail(err, st, "out of memory decoding LSN %" PRIu64, lsn);
    if (st != SV_OK)
        return sv_fail(err, SV_ERR_CORRUPT, "LSN %" PRIu64 " does not decode: %s", lsn, derr.message);
    if (type == SV_WAL_ADD) {
        st = apply_add(c, f, lsn, &rec, err);
        *count = st == SV_OK ? rec.n : 0;
    } else {
        st = sv_collection_delete(c, (const char *const *)rec.ids, rec.n, err);
        *count = st == SV_OK ? distinct(rec.ids, rec.n) : 0;
    }
    sv_logrec_release(&rec);
    if (deterministic(st)) {
        *outcome = st;
        return SV_OK;
    }
    return st == SV_OK ? sv_ok(err) : st;
}
