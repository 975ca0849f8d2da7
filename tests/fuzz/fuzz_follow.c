/*
 * Fuzz target for the records a cluster pod reads from NATS and etcd (bytes
 * another process wrote, so untrusted):
 *
 *   byte 0 even  a shard stream's record, applied to a follower collection
 *                (sv_follow_apply, dim 8, with the window of keys): byte 1
 *                is the record type (ADD, DELETE, KEYED, or anything)
 *   byte 0 odd   what a pod reads from etcd: byte 1 odd, a collection's
 *                value (svc_catalog_decode); even, the shard map
 *                (svc_meta_map_check)
 *
 * A record either applies, is refused the way every replica refuses it
 * (the outcome), or is reported damaged; never a crash, a leak or a change
 * after a refusal (the collection's count is checked; etcd values decode or not).
 * Valid seeds (an ADD with given and left-to-the-cluster ids, a DELETE,
 * both wrapped with a key, a collection value and a shard map) are made in memory,
 * then a fixed-seed stream of their mutations and random bytes is applied.
 *
 *   fuzz_follow [N]                    N inputs (default 20000)
 *   fuzz_follow --write-corpus DIR     the seeds and some mutants into DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "meta.h"
#include "slimvec/v1/slimvec.pb-c.h"
#include "follow.h"
#include "fuzzutil.h"
#include "log.h"
#include "logrec.h"
#include "slimvec.h"

#define DIM 8u
#define FUZZ_MAX_INPUT 4096u

static sv_collection *coll;
static sv_follow_window *window;
static svc_catalog *catalog;
static uint64_t lsn;
static unsigned long applied, refused, damaged, cat_changed, cat_refused;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_follow: invariant broken: %s\n", what);
        abort();
    }
}

static void fresh(void)
{
    sv_collection_free(coll);
    sv_follow_window_free(window);
    svc_catalog_free(catalog);
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 0;
    p.threads = 1;
    check(sv_collection_create(&p, &coll, NULL) == SV_OK, "a collection");
    window = sv_follow_window_create();
    catalog = svc_catalog_create();
    check(window && catalog, "a window and a catalog");
}

static sv_status run_one(const uint8_t *in, size_t size)
{
    if (size < 2)
        return SV_ERR_INVALID_ARGUMENT;
    uint32_t type = in[1];
    const uint8_t *p = in + 2;
    size_t len = size - 2;
    sv_error err;
    if (in[0] & 1) {
        /* What a pod reads from etcd: a collection's value or the map. */
        if (type & 1) {
            svc_catalog_entry e;
            sv_status st = svc_catalog_decode(p, len, ++lsn, &e, &err);
            if (st == SV_OK)
                check(e.shards >= 1 && strlen(e.name) >= 1 && strlen(e.name) <= 64, "a decoded collection is sane");
            cat_changed += st == SV_OK;
            cat_refused += st != SV_OK;
            return st;
        }
        char why[200];
        int rc = svc_meta_map_check(p, len, why, sizeof why);
        cat_changed += rc == 0;
        cat_refused += rc != 0;
        return rc == 0 ? SV_OK : SV_ERR_CORRUPT;
    }
    uint64_t count_before = sv_collection_count(coll);
    sv_follow_ids f = {3, 1};
    sv_follow_result res;
    sv_status st = sv_follow_apply(coll, &f, window, type, ++lsn, p, len, &res, &err);
    if (st != SV_OK || res.outcome != SV_OK || res.duplicate_of)
        check(sv_collection_count(coll) == count_before, "a refused record changed nothing");
    if (st != SV_OK)
        damaged++;
    else if (res.outcome != SV_OK || res.duplicate_of)
        refused++;
    else
        applied++;
    if (sv_collection_count(coll) > 20000)
        fresh(); /* bounded memory over long runs */
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!coll)
        fresh();
    run_one(data, size);
    return 0;
}

#ifndef SV_LIBFUZZER
typedef struct seed {
    uint8_t b[FUZZ_MAX_INPUT];
    size_t len;
} seed;

static seed seeds[8];
static size_t n_seeds;

static void add_seed(uint8_t which, uint8_t type, const uint8_t *p, size_t len)
{
    seed *s = &seeds[n_seeds++];
    s->b[0] = which;
    s->b[1] = type;
    memcpy(s->b + 2, p, len);
    s->len = len + 2;
}

/* The record wrapped with its key, as a router writes it. */
static size_t keyed(const char *key, uint32_t type, const uint8_t *p, size_t len, uint8_t *out)
{
    size_t k = strlen(key);
    out[0] = (uint8_t)k;
    memcpy(out + 1, key, k);
    memcpy(out + 1 + k, &type, 4);
    memcpy(out + 5 + k, p, len);
    return 5 + k + len;
}

static void make_seeds(void)
{
    uint8_t buf[FUZZ_MAX_INPUT], wrapped[FUZZ_MAX_INPUT];
    const char *ids[3] = {"doc-1", NULL, "42"};
    uint64_t zero[3] = {0};
    float v[3 * DIM];
    for (size_t i = 0; i < 3 * DIM; i++)
        v[i] = (float)i * 0.25f - 2.0f;
    uint8_t *head = NULL;
    size_t hl = 0;
    check(sv_logrec_add_ids(ids, zero, 3, DIM, 0, 0, &head, &hl) == SV_OK, "an ADD");
    memcpy(buf, head, hl);
    memcpy(buf + hl, v, sizeof v);
    free(head);
    size_t add_len = hl + sizeof v;
    add_seed(0, SV_WAL_ADD, buf, add_len);
    add_seed(0, SV_WAL_KEYED, wrapped, keyed("batch-1:1:0", SV_WAL_ADD, buf, add_len, wrapped));
    uint8_t *del = NULL;
    size_t dl = 0;
    const char *gone[2] = {"doc-1", "42"};
    check(sv_logrec_delete(gone, 2, &del, &dl) == SV_OK, "a DELETE");
    add_seed(0, SV_WAL_DELETE, del, dl);
    add_seed(0, SV_WAL_KEYED, wrapped, keyed("del-7:1", SV_WAL_DELETE, del, dl, wrapped));
    free(del);
    sv_params p;
    sv_params_default(&p, DIM);
    add_seed(1, 1, buf, svc_catalog_encode("docs", 2, &p, buf));
    /* A map of two shards with three replicas. */
    Slimvec__V1__ShardReplica r[3];
    Slimvec__V1__ShardReplica *rp[3];
    const char *pods[3] = {"slimvec-r0-0", "slimvec-r1-0", "slimvec-r0-1"};
    for (int i = 0; i < 3; i++) {
        slimvec__v1__shard_replica__init(&r[i]);
        r[i].pod = (char *)pods[i];
        r[i].address = (char *)"10.0.0.1:50051";
        r[i].replica_set = (char *)"r0";
        r[i].shard = (uint32_t)(i % 2);
        r[i].state = i == 2 ? SLIMVEC__V1__REPLICA_STATE__REPLICA_CATCHING_UP : SLIMVEC__V1__REPLICA_STATE__REPLICA_READY;
        rp[i] = &r[i];
    }
    Slimvec__V1__ShardMap map = SLIMVEC__V1__SHARD_MAP__INIT;
    map.epoch = 7;
    map.shards = 2;
    map.n_replicas = 3;
    map.replicas = rp;
    size_t ml = slimvec__v1__shard_map__get_packed_size(&map);
    check(ml <= sizeof buf, "a small map");
    slimvec__v1__shard_map__pack(&map, buf);
    add_seed(1, 2, buf, ml);
}

static void mutate(uint8_t *b, size_t *len)
{
    size_t n = *len;
    size_t pos = n > 2 ? 2 + fu_below((uint32_t)(n - 2)) : 2;
    switch (fu_below(6)) {
    case 0: /* flip bits */
        if (n > 2)
            b[pos] ^= (uint8_t)(1u << fu_below(8));
        break;
    case 1: /* a random byte */
        if (n > 2)
            b[pos] = (uint8_t)fu_next();
        break;
    case 2:
        fu_insert_random(b, len, FUZZ_MAX_INPUT, pos, 16);
        break;
    case 3:
        if (n > 2)
            fu_delete_chunk(b, len, pos, 16);
        break;
    case 4: /* a length-ish word off by a little */
        if (n >= pos + 4)
            fu_wr32(b + pos, fu_rd32(b + pos) + (uint32_t)(fu_below(5)) - 2u);
        break;
    default: /* another record type */
        b[1] = (uint8_t)fu_below(9);
        break;
    }
}

int main(int argc, char **argv)
{
    const char *corpus = NULL;
    long rounds = 0;
    fu_args("fuzz_follow", argc, argv, &rounds, &corpus);
    fresh();
    make_seeds();
    for (size_t i = 0; i < n_seeds; i++) {
        if (corpus)
            fu_write_input("fuzz_follow", corpus, i, seeds[i].b, seeds[i].len);
        else
            check(run_one(seeds[i].b, seeds[i].len) == SV_OK, "a valid seed applies");
    }
    uint8_t in[FUZZ_MAX_INPUT];
    for (long i = 0; i < rounds; i++) {
        size_t len;
        if (i % 16 == 15) {
            len = 2 + fu_below(200);
            for (size_t k = 0; k < len; k++)
                in[k] = (uint8_t)fu_next();
        } else {
            const seed *s = &seeds[fu_below((uint32_t)n_seeds)];
            memcpy(in, s->b, s->len);
            len = s->len;
            for (int k = 1 + (int)fu_below(3); k > 0; k--)
                mutate(in, &len);
        }
        if (corpus)
            fu_write_input("fuzz_follow", corpus, n_seeds + (size_t)i, in, len);
        else
            run_one(in, len);
    }
    printf("fuzz_follow: %ld inputs: records applied %lu, refused or sent twice %lu, damaged %lu; etcd values "
           "decoded %lu, refused %lu\n",
           rounds, applied, refused, damaged, cat_changed, cat_refused);
    sv_collection_free(coll);
    sv_follow_window_free(window);
    svc_catalog_free(catalog);
    return 0;
}
#endif
