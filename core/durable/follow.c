/* Applying a followed log (see follow.h). */
#include "follow.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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
    st = rec->upsert ? sv_collection_upsert(c, rec->vectors, rec->n, rec->dim, ids, rec->payloads, got, NULL, err)
                     : sv_collection_add_payloads(c, rec->vectors, rec->n, rec->dim, ids, rec->payloads, got, err);
cleanup:
    free(names);
    free(ids);
    free(got);
    return st;
}

/* ---- the window of keys ---------------------------------------------------------- */

typedef struct window_entry {
    uint8_t hash[16];   /* of the key (BLAKE2b, 128 bits: collisions do not happen in practice) */
    uint64_t lsn;       /* of the key's first copy; 0: empty */
    sv_status outcome;
    uint32_t count;
} window_entry;

/* A ring of the last SV_FOLLOW_WINDOW keyed records, by arrival, with an
 * open-addressing index (2x the ring) of their hashes. */
struct sv_follow_window {
    window_entry ring[SV_FOLLOW_WINDOW];
    uint32_t next;                         /* the ring slot the next record takes */
    int32_t index[2 * SV_FOLLOW_WINDOW];   /* ring slot + 1; 0 empty; -1 removed */
};

sv_follow_window *sv_follow_window_create(void)
{
    return calloc(1, sizeof(sv_follow_window));
}

void sv_follow_window_free(sv_follow_window *w)
{
    free(w);
}

static uint32_t slot_of(const uint8_t *hash)
{
    uint32_t h;
    memcpy(&h, hash, 4);
    return h & (2 * SV_FOLLOW_WINDOW - 1);
}

static long window_find(const sv_follow_window *w, const uint8_t *hash)
{
    for (uint32_t i = slot_of(hash), n = 0; n < 2 * SV_FOLLOW_WINDOW; i = (i + 1) & (2 * SV_FOLLOW_WINDOW - 1), n++) {
        int32_t e = w->index[i];
        if (e == 0)
            return -1;
        if (e > 0 && memcmp(w->ring[e - 1].hash, hash, 16) == 0)
            return e - 1;
    }
    return -1;
}

/* Take ring slot `at` out of the index (its entry stays as a hole). */
static void window_remove(sv_follow_window *w, uint32_t at)
{
    for (uint32_t i = slot_of(w->ring[at].hash);; i = (i + 1) & (2 * SV_FOLLOW_WINDOW - 1))
        if (w->index[i] == (int32_t)at + 1) {
            w->index[i] = -1;
            break;
        }
    w->ring[at].lsn = 0;
}

static void window_add(sv_follow_window *w, const uint8_t *hash, uint64_t lsn, sv_status outcome, uint64_t count)
{
    if (w->ring[w->next].lsn)
        window_remove(w, w->next); /* the oldest leaves */
    window_entry *e = &w->ring[w->next];
    *e = (window_entry){.lsn = lsn, .outcome = outcome, .count = (uint32_t)count};
    memcpy(e->hash, hash, 16);
    uint32_t i = slot_of(hash);
    while (w->index[i] > 0)
        i = (i + 1) & (2 * SV_FOLLOW_WINDOW - 1);
    w->index[i] = (int32_t)w->next + 1;
    w->next = (w->next + 1) % SV_FOLLOW_WINDOW;
    /* Removed marks pile up; rebuild the index when the ring wraps. */
    if (w->next == 0) {
        memset(w->index, 0, sizeof w->index);
        for (uint32_t r = 0; r < SV_FOLLOW_WINDOW; r++) {
            if (!w->ring[r].lsn)
                continue;
            uint32_t k = slot_of(w->ring[r].hash);
            while (w->index[k] > 0)
                k = (k + 1) & (2 * SV_FOLLOW_WINDOW - 1);
            w->index[k] = (int32_t)r + 1;
        }
    }
}

/*
 * The first copy of a key, when it is within the window of the record at
 * lsn: its LSN is one of the SV_FOLLOW_WINDOW before. The window is a
 * matter of LSNs only, so a follower that rebuilt it from the log after a
 * restart decides exactly as one that never stopped. A key whose first copy
 * is older is forgotten (its entry taken out): the record is new.
 */
static long window_first(sv_follow_window *w, const uint8_t *hash, uint64_t lsn)
{
    long at = window_find(w, hash);
    if (at < 0)
        return -1;
    if (w->ring[at].lsn + SV_FOLLOW_WINDOW >= lsn)
        return at;
    window_remove(w, (uint32_t)at);
    return -1;
}

int sv_follow_window_outcome(const sv_follow_window *w, uint64_t lsn, sv_follow_result *res)
{
    if (!w || !lsn)
        return 0;
    for (uint32_t i = 0; i < SV_FOLLOW_WINDOW; i++)
        if (w->ring[i].lsn == lsn) {
            *res = (sv_follow_result){w->ring[i].outcome, w->ring[i].count, 0};
            return 1;
        }
    return 0;
}

int sv_follow_unwrap(const uint8_t *p, size_t len, const uint8_t **key, size_t *key_len, uint32_t *type,
                     const uint8_t **inner, size_t *inner_len)
{
    if (len < 1 || p[0] < 1 || p[0] > SV_FOLLOW_KEY_MAX || len < 1u + p[0] + 4u)
        return 0;
    *key = p + 1;
    *key_len = p[0];
    memcpy(type, p + 1 + p[0], 4);
    *inner = p + 1 + p[0] + 4;
    *inner_len = len - 1 - p[0] - 4;
    return 1;
}

static void key_hash(const uint8_t *key, size_t len, uint8_t *out)
{
    crypto_generichash(out, 16, key, len, NULL, 0);
}

void sv_follow_window_note(sv_follow_window *w, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len)
{
    const uint8_t *key, *inner;
    size_t key_len, inner_len;
    uint32_t t;
    uint8_t hash[16];
    if (!w || type != SV_WAL_KEYED || !sv_follow_unwrap(payload, len, &key, &key_len, &t, &inner, &inner_len))
        return;
    key_hash(key, key_len, hash);
    if (window_first(w, hash, lsn) < 0)
        window_add(w, hash, lsn, SV_OK, 0);
}

/* ---- applying ---------------------------------------------------------------------- */

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

/* An ADD or DELETE (not keyed). */
static sv_status apply_plain(sv_collection *c, const sv_follow_ids *f, uint32_t type, uint64_t lsn,
                             const uint8_t *payload, size_t len, sv_follow_result *res, sv_error *err)
{
    if (type != SV_WAL_ADD && type != SV_WAL_DELETE && type != SV_WAL_SET_PAYLOAD && type != SV_WAL_INDEX)
        return sv_ok(err); /* a replica's own markers are never in a followed log */
    sv_logrec rec;
    sv_error derr = {0};
    sv_status st = type == SV_WAL_ADD      ? sv_logrec_decode_add(payload, len, &rec, &derr)
                   : type == SV_WAL_DELETE ? sv_logrec_decode_delete(payload, len, &rec, &derr)
                   : type == SV_WAL_INDEX  ? sv_logrec_decode_index(payload, len, &rec, &derr)
                                           : sv_logrec_decode_set_payload(payload, len, &rec, &derr);
    if (st == SV_ERR_RESOURCE)
        return sv_fail(err, st, "out of memory decoding LSN %" PRIu64, lsn);
    if (st != SV_OK)
        return sv_fail(err, SV_ERR_CORRUPT, "LSN %" PRIu64 " does not decode: %s", lsn, derr.message);
    if (type == SV_WAL_ADD) {
        st = apply_add(c, f, lsn, &rec, err);
        res->count = st == SV_OK ? rec.n : 0;
    } else if (type == SV_WAL_INDEX) {
        st = sv_collection_index_key(c, rec.ids[0], err);
        res->count = st == SV_OK;
    } else if (type == SV_WAL_SET_PAYLOAD) {
        st = sv_collection_set_payload(c, rec.ids[0], &rec.payloads[0], rec.mode, err);
        res->count = st == SV_OK;
    } else {
        st = sv_collection_delete(c, (const char *const *)rec.ids, rec.n, err);
        res->count = st == SV_OK ? distinct(rec.ids, rec.n) : 0;
    }
    sv_logrec_release(&rec);
    if (deterministic(st)) {
        res->outcome = st;
        return SV_OK;
    }
    return st == SV_OK ? sv_ok(err) : st;
}

sv_status sv_follow_apply(sv_collection *c, const sv_follow_ids *f, sv_follow_window *w, uint32_t type,
                          uint64_t lsn, const uint8_t *payload, size_t len, sv_follow_result *res, sv_error *err)
{
    *res = (sv_follow_result){SV_OK, 0, 0};
    if (type != SV_WAL_KEYED)
        return apply_plain(c, f, type, lsn, payload, len, res, err);
    const uint8_t *key, *inner;
    size_t key_len, inner_len;
    uint32_t inner_type;
    if (!sv_follow_unwrap(payload, len, &key, &key_len, &inner_type, &inner, &inner_len) ||
        inner_type == SV_WAL_KEYED)
        return sv_fail(err, SV_ERR_CORRUPT, "LSN %" PRIu64 ": a keyed record that does not decode", lsn);
    if (!w)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "LSN %" PRIu64 ": a keyed record and no window", lsn);
    uint8_t hash[16];
    key_hash(key, key_len, hash);
    long at = window_first(w, hash, lsn);
    if (at >= 0) {
        /* Sent twice: the first one's answer, nothing applied. */
        res->duplicate_of = w->ring[at].lsn;
        res->outcome = w->ring[at].outcome;
        res->count = w->ring[at].count;
        if (res->outcome != SV_OK)
            sv_fail(err, res->outcome, "a record sent again; the first (LSN %" PRIu64 ") was refused",
                    res->duplicate_of);
        return SV_OK;
    }
    sv_status st = apply_plain(c, f, inner_type, lsn, inner, inner_len, res, err);
    if (st == SV_OK)
        window_add(w, hash, lsn, res->outcome, res->count);
    return st;
}
