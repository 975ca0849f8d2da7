/*
 * Fuzz target for untrusted file bytes: the params file, write-ahead log
 * segments and their record payloads, and snapshots.
 *
 * Input: byte 0 picks the parser, byte 1 holds flags, the rest is the file:
 *
 *   0  sv_params_decode
 *   1  sv_wal_parse, with a visitor that decodes every record it is handed
 *      (sv_logrec_decode_add / _delete / _train, dim 8) and releases it
 *   2  sv_logrec_decode_add, _delete, _set_payload and _train (dim 8) on
 *      the bytes; decoded payloads (pcodec.h) are encoded again (the same
 *      bytes must decode to the same payload) and set in a payload store
 *   3  sv_snapshot_load (dim 8, R 8, L_build 16, threads 1, flush at 64;
 *      flags pick storage and metric); a snapshot that loads is searched,
 *      validated and, with a flag, written to (add, delete, flush)
 *   4  an originals file (originals.h): a fixed snapshot of a collection
 *      with originals on disk is loaded over these bytes (a memfd), the
 *      records are checked against the codes as a recovery does, and a
 *      collection that passes is searched with re-ranking, read back with
 *      get and written to
 *
 * Checksums would stop nearly every mutation at the first CRC check, so the
 * checksums are recomputed on a copy of the bytes before parsing (params
 * trailer, log segment header and every record that fits, snapshot header
 * and every section that fits), unless the flags' high nibble is 0xF: then
 * the bytes go in as they are and the checksum rejections get exercised.
 *
 * Collections are created through a capped allocator (FUZZ_MEM_CAP live
 * bytes): a snapshot's META can ask for up to 2^32 slots, which the loader
 * reserves before it sees that the file does not hold them.
 *
 * Built as a libFuzzer target with clang (-DSV_FUZZ=ON), and as a
 * corpus-driven ctest with any compiler: valid seeds for every parser are
 * made in memory (the snapshots and one log segment by a real durable
 * collection in a temporary directory), then a fixed-seed stream of
 * mutations of them and random bytes is parsed (run it under ASan).
 *
 *   fuzz_files [N]                    N inputs (default 20000)
 *   fuzz_files --write-corpus DIR     the seeds and some mutants into DIR
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include "fuzzutil.h"
#include "crc32c.h"
#include "durable.h"
#include "engine.h"
#include "fileio.h"
#include "originals.h"
#include "logrec.h"
#include "payload.h"
#include "pcodec.h"
#include "slimvec.h"
#include "snapshot.h"
#include "wal.h"

enum { P_PARAMS, P_WAL, P_LOGREC, P_SNAPSHOT, P_ORIGINALS, N_PARSERS };

#define FUZZ_DIM 8u
#define FLAG_RAW 0xF0u       /* high nibble all set: checksums left alone */
#define FLAG_STRICT 0x04u    /* wal: the visitor returns decode errors */
#define FLAG_WRITE 0x04u     /* snapshot: add, delete and flush after loading */
#define FUZZ_MEM_CAP (48u << 20)

/* ---- counters ------------------------------------------------------------ */

static unsigned long n_accepted[N_PARSERS], n_rejected[N_PARSERS];
static unsigned long n_wal_records, n_wal_decoded;
static unsigned long n_rec_ok[8];                /* add, delete, train, flush, consolidate, -, set payload, index */
static unsigned long n_loaded_valid, n_loaded_invalid, n_loaded_written;

/* ---- a capped allocator for the collections ------------------------------ */

static _Atomic size_t mem_live;
static unsigned long n_mem_refused; /* allocations over the cap */
static int verbose = -1; /* FUZZ_FILES_VERBOSE=1: print why snapshots are rejected */

static int mem_take(size_t n)
{
    size_t prev = atomic_fetch_add(&mem_live, n);
    if (prev + n > FUZZ_MEM_CAP || prev + n < prev) {
        atomic_fetch_sub(&mem_live, n);
        n_mem_refused++;
        return 0;
    }
    return 1;
}

static void *cap_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (n > FUZZ_MEM_CAP) {
        n_mem_refused++;
        return NULL;
    }
    if (!mem_take(n))
        return NULL;
    size_t *h = malloc(n + 16);
    if (!h) {
        atomic_fetch_sub(&mem_live, n);
        return NULL;
    }
    h[0] = n;
    return (char *)h + 16;
}

static void cap_free(void *ctx, void *p)
{
    (void)ctx;
    if (!p)
        return;
    size_t *h = (size_t *)((char *)p - 16);
    atomic_fetch_sub(&mem_live, h[0]);
    free(h);
}

static void *cap_realloc(void *ctx, void *p, size_t n)
{
    if (!p)
        return cap_alloc(ctx, n);
    size_t *h = (size_t *)((char *)p - 16), old = h[0];
    if (n > FUZZ_MEM_CAP) {
        n_mem_refused++;
        return NULL;
    }
    if (n > old && !mem_take(n - old))
        return NULL;
    size_t *q = realloc(h, n + 16);
    if (!q) {
        if (n > old)
            atomic_fetch_sub(&mem_live, n - old);
        return NULL;
    }
    if (n < old)
        atomic_fetch_sub(&mem_live, old - n);
    q[0] = n;
    return (char *)q + 16;
}

static const sv_allocator capped = {cap_alloc, cap_realloc, cap_free, NULL, NULL};

/* ---- little-endian helpers ----------------------------------------------- */

/* ---- checksum fix-up ------------------------------------------------------ */

static void fix_params(uint8_t *b, size_t len)
{
    if (len >= SV_PARAMS_BYTES)
        fu_wr32(b + SV_PARAMS_BYTES - 4, sv_crc32c(0, b, SV_PARAMS_BYTES - 4));
}

static void fix_wal(uint8_t *b, size_t len)
{
    if (len < SV_WAL_HEADER)
        return;
    fu_wr32(b + 28, sv_crc32c(0, b, 28));
    /* Version 2 seeds record checksums with the header's salt. */
    uint64_t salt = fu_rd32(b + 8) >= 2 ? (uint64_t)fu_rd32(b + 24) << 32 | fu_rd32(b + 12) : 0;
    uint32_t seed = sv_wal_seed(salt);
    size_t off = SV_WAL_HEADER;
    while (len - off >= SV_WAL_REC_HEADER) {
        uint32_t plen = fu_rd32(b + off);
        if (plen > len - off - SV_WAL_REC_HEADER)
            break;
        fu_wr32(b + off + 4, sv_wal_record_crc(seed, plen, b + off + 8, 12 + (size_t)plen));
        off += SV_WAL_REC_HEADER + (size_t)plen;
    }
}

static void fix_originals(uint8_t *b, size_t len)
{
    if (len >= SV_ORIG_HEADER)
        fu_wr32(b + SV_ORIG_HEADER - 4, sv_crc32c(0, b, SV_ORIG_HEADER - 4));
}

static void fix_snapshot(uint8_t *b, size_t len)
{
    if (len < 32)
        return;
    fu_wr32(b + 28, sv_crc32c(0, b, 28));
    size_t off = 32;
    while (len - off >= 16) {
        uint64_t slen = fu_rd64(b + off + 8);
        size_t room = len - off - 16;
        if (room < 4 || slen > room - 4)
            break;
        fu_wr32(b + off + 16 + slen, sv_crc32c(0, b + off + 16, (size_t)slen));
        off += 16 + (size_t)slen + 4;
    }
}

/* ---- the parsers ---------------------------------------------------------- */

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_files: invariant broken: %s\n", what);
        abort();
    }
}

/* A decoded ADD/DELETE must be what logrec.h promises. */
static void check_logrec(const sv_logrec *r, int add)
{
    check(r->n > 0 && r->ids && r->expect, "decoded record has ids");
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->ids[i]) {
            size_t l = strlen(r->ids[i]);
            check(l >= 1 && l <= SV_ID_MAX && r->expect[i] == UINT64_MAX, "given id");
        } else {
            check(add && r->expect[i] < (UINT64_C(1) << 63), "assigned id");
        }
    }
    if (add) {
        check(r->dim >= 1 && r->dim <= SV_DIM_MAX && r->vectors, "ADD vectors");
        volatile float sink = 0;
        for (size_t i = 0; i < (size_t)r->n * r->dim; i++)
            sink += r->vectors[i]; /* every float is readable (ASan) */
        (void)sink;
    }
}

/* Decoded payloads keep pcodec.h's promises: their encoding decodes to the
 * same encoding, and a store takes them or refuses them cleanly. */
static void check_payloads(const sv_payload *pl, size_t n)
{
    static sv_tally t;
    sv_payloads *store = sv_payloads_create(&capped, &t);
    check(store != NULL, "a payload store");
    for (size_t i = 0; i < n; i++) {
        check(pl[i].n <= SV_PAYLOAD_FIELDS_MAX, "fields within the limit");
        for (uint32_t f = 0; f < pl[i].n; f++) {
            size_t kl = strlen(pl[i].fields[f].key);
            check(kl >= 1 && kl <= SV_PAYLOAD_KEY_MAX, "key length");
        }
        size_t len = sv_payload_encode(&pl[i], NULL, 0);
        uint8_t *a = malloc(len), *b = NULL;
        check(a && sv_payload_encode(&pl[i], a, len) == len, "encoded");
        sv_payload *again = NULL;
        void *mem = NULL;
        sv_error err;
        check(sv_payload_decode_batch(a, len, 1, &again, &mem, &err) == SV_OK, "an encoding decodes");
        size_t len2 = sv_payload_encode(again, NULL, 0);
        b = malloc(len2);
        check(b && len2 == len && sv_payload_encode(again, b, len2) == len && memcmp(a, b, len) == 0,
              "decode(encode(x)) encodes the same");
        sv_status st = sv_payloads_set(store, (uint32_t)(i * 977u), &pl[i], SV_PAYLOAD_REPLACE, &err);
        check(st == SV_OK || st == SV_ERR_INVALID_ARGUMENT || st == SV_ERR_RESOURCE, "a store takes or refuses");
        free(mem);
        free(a);
        free(b);
    }
    sv_payloads_free(store);
    check(sv_tally_get(&t) == 0, "the store gives every byte back");
}

static sv_status decode_payload(uint32_t type, const uint8_t *p, size_t len)
{
    sv_error err;
    sv_logrec r;
    sv_status st;
    if (type == SV_WAL_ADD) {
        if ((st = sv_logrec_decode_add(p, len, &r, &err)) == SV_OK) {
            check_logrec(&r, 1);
            if (r.payloads)
                check_payloads(r.payloads, r.n);
            sv_logrec_release(&r);
        }
    } else if (type == SV_WAL_SET_PAYLOAD) {
        if ((st = sv_logrec_decode_set_payload(p, len, &r, &err)) == SV_OK) {
            check(r.n == 1 && r.ids && r.ids[0] && r.payloads, "SET_PAYLOAD decoded");
            check(r.mode == SV_PAYLOAD_REPLACE || r.mode == SV_PAYLOAD_PATCH, "SET_PAYLOAD mode");
            check_payloads(r.payloads, 1);
            sv_logrec_release(&r);
        }
    } else if (type == SV_WAL_INDEX) {
        if ((st = sv_logrec_decode_index(p, len, &r, &err)) == SV_OK) {
            check(r.n == 1 && r.ids && r.ids[0] && strlen(r.ids[0]) >= 1 && strlen(r.ids[0]) <= SV_PAYLOAD_KEY_MAX,
                  "INDEX decoded");
            sv_logrec_release(&r);
        }
    } else if (type == SV_WAL_DELETE) {
        if ((st = sv_logrec_decode_delete(p, len, &r, &err)) == SV_OK) {
            check_logrec(&r, 0);
            sv_logrec_release(&r);
        }
    } else if (type == SV_WAL_TRAIN) {
        float mean[FUZZ_DIM];
        st = sv_logrec_decode_train(p, len, FUZZ_DIM, mean, &err);
    } else if (type == SV_WAL_FLUSH) {
        uint64_t rows = 0;
        if ((st = sv_logrec_decode_flush(p, len, &rows, &err)) == SV_OK)
            check(rows >= 1 && rows <= UINT32_MAX, "FLUSH row count in range");
    } else {
        uint64_t tombs = 0;
        if ((st = sv_logrec_decode_consolidate(p, len, &tombs, &err)) == SV_OK)
            check(tombs >= 1 && tombs <= UINT32_MAX, "CONSOLIDATE count in range");
    }
    if (st != SV_OK)
        check(err.code == st, "error code matches the status");
    return st;
}

typedef struct wal_ctx {
    const uint8_t *data;
    size_t len;
    int strict;
} wal_ctx;

static sv_status visit(void *ctx, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len,
                       size_t offset)
{
    wal_ctx *w = ctx;
    (void)lsn;
    check(type >= SV_WAL_ADD && type <= SV_WAL_INDEX, "visited record type");
    check(offset >= SV_WAL_HEADER && offset + SV_WAL_REC_HEADER + len <= w->len &&
              payload == w->data + offset + SV_WAL_REC_HEADER,
          "visited record lies in the segment");
    n_wal_records++;
    sv_status st = decode_payload(type, payload, len);
    n_wal_decoded += st == SV_OK;
    return w->strict ? st : SV_OK;
}

static sv_status run_params(const uint8_t *b, size_t len)
{
    sv_params p;
    sv_error err;
    sv_status st = sv_params_decode(b, len, &p, &err);
    if (st == SV_OK) {
        /* What decodes must encode back to the same fields (bytes 48..59
         * are reserved: the decoder ignores them) and create. */
        uint8_t again[SV_PARAMS_BYTES];
        sv_params_encode(&p, again);
        check(memcmp(again, b, 48) == 0, "params round trip");
        p.threads = 1;
        p.allocator = &capped;
        sv_collection *c = NULL;
        if (sv_collection_create(&p, &c, &err) == SV_OK)
            sv_collection_free(c);
    }
    return st;
}

static sv_status run_wal(const uint8_t *b, size_t len, int strict)
{
    wal_ctx w = {b, len, strict};
    sv_wal_scan scan;
    sv_error err;
    sv_status st = sv_wal_parse(b, len, visit, &w, &scan, &err);
    if (st == SV_OK) {
        check(scan.good_end <= len, "good_end inside the segment");
        check(scan.torn || scan.good_end == len, "an untorn segment is read to its end");
        if (len >= SV_WAL_HEADER)
            check(scan.last_lsn + 1 - scan.first_lsn == scan.n_records, "LSNs count the records");
    }
    return st;
}

static sv_status run_logrec(const uint8_t *b, size_t len)
{
    sv_status st[8];
    for (uint32_t t = SV_WAL_ADD; t <= SV_WAL_INDEX; t++) {
        if (t == SV_WAL_KEYED) {
            st[t - 1] = SV_ERR_CORRUPT; /* a followed log's wrapper: fuzz_follow's */
            continue;
        }
        st[t - 1] = decode_payload(t, b, len);
        n_rec_ok[t - 1] += st[t - 1] == SV_OK;
    }
    for (int t = 0; t < 8; t++)
        if (st[t] == SV_OK)
            return SV_OK;
    return st[0];
}

static void snapshot_params(sv_params *p, unsigned variant)
{
    sv_params_default(p, FUZZ_DIM);
    p->R = 8;
    p->L_build = 16;
    p->threads = 1;
    p->flush_threshold = 64;
    p->storage = variant & 1 ? SV_STORAGE_F32 : SV_STORAGE_INT8;
    p->metric = variant & 2 ? (variant & 1 ? SV_METRIC_IP : SV_METRIC_COSINE) : SV_METRIC_L2;
}

static void search_some(sv_collection *c, const uint8_t *b, size_t len)
{
    float q[FUZZ_DIM];
    sv_hit hits[10];
    size_t n_hits = 0;
    sv_error err;
    uint32_t h = sv_crc32c(0, b, len);
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < FUZZ_DIM; i++) {
            h = h * 1664525u + 1013904223u;
            q[i] = (float)((int)(h >> 16) % 2000 - 1000) / 100.0f;
        }
        uint32_t k = round ? 1 : 10;
        sv_status st = sv_collection_search(c, q, FUZZ_DIM, k, round ? 0 : 24, hits, &n_hits, &err);
        check(st == SV_OK, "a loaded collection can be searched");
        check(n_hits <= k && n_hits <= sv_collection_count(c), "hit count");
        for (size_t i = 0; i < n_hits; i++)
            check(strlen(hits[i].id) >= 1 && hits[i].distance == hits[i].distance, "hit");
    }
}

static sv_status run_snapshot(const uint8_t *b, size_t len, unsigned flags)
{
    sv_params p;
    snapshot_params(&p, flags & 3);
    p.allocator = &capped;
    sv_collection *c = NULL;
    uint64_t lsn = 0;
    sv_error err;
    sv_status st = sv_snapshot_load(b, len, &p, &c, &lsn, &err);
    if (st != SV_OK) {
        check(c == NULL && err.code == st, "a failed load returns nothing");
        if (verbose)
            fprintf(stderr, "snapshot rejected: %s\n", err.message);
    } else {
        check(c != NULL, "a load returns a collection");
        search_some(c, b, len);
        /* The loader promises memory safety, not a connected graph: count. */
        if (sv_collection_validate(c, &err) == SV_OK)
            n_loaded_valid++;
        else
            n_loaded_invalid++;
        if (flags & FLAG_WRITE) {
            /* Writes after a load: the free list, id counter and buffer
             * that came from the file get used. */
            float v[2 * FUZZ_DIM];
            for (uint32_t i = 0; i < 2 * FUZZ_DIM; i++)
                v[i] = (float)i * 0.37f - 2.0f;
            const char *ids[2] = {NULL, "fuzz-new"};
            const char *del[1] = {"fuzz-new"};
            if (sv_collection_add(c, v, 2, FUZZ_DIM, ids, NULL, &err) == SV_OK) {
                sv_collection_delete(c, del, 1, &err);
                n_loaded_written++;
            }
            sv_collection_flush(c, &err);
            search_some(c, b, len);
            sv_collection_validate(c, &err);
        }
        sv_collection_free(c);
    }
    check(atomic_load(&mem_live) == 0, "the collection gave back all its memory");
    return st;
}

/* ---- originals ---------------------------------------------------------- */

#define ORIG_ROWS 40u

static void orig_params(sv_params *p)
{
    snapshot_params(p, 0); /* int8, L2 */
    p->originals = SV_ORIGINALS_DISK;
}

/* The fixed collection: ORIG_ROWS rows ("o-<i>") flushed, three deleted,
 * a snapshot; its snapshot bytes and its originals file, made once in a
 * temporary directory. */
static uint8_t *orig_snap, *orig_file;
static size_t orig_snap_len, orig_file_len;
static int read_file(const char *path, uint8_t **out, size_t *len);
static int read_named(const char *dir, const char *prefix, uint8_t **out, size_t *len);

static void orig_base(void)
{
    if (orig_snap)
        return;
    char base[] = "/tmp/fuzz_orig_XXXXXX", dir[64], path[96];
    if (!mkdtemp(base))
        abort();
    snprintf(dir, sizeof dir, "%s/c", base);
    sv_params p;
    orig_params(&p);
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    sv_error err;
    char names[ORIG_ROWS][16];
    const char *ids[ORIG_ROWS];
    float v[ORIG_ROWS * FUZZ_DIM];
    uint32_t h = 12345;
    for (uint32_t i = 0; i < ORIG_ROWS; i++) {
        snprintf(names[i], sizeof names[i], "o-%u", i);
        ids[i] = names[i];
    }
    for (size_t i = 0; i < ORIG_ROWS * FUZZ_DIM; i++) {
        h = h * 1664525u + 1013904223u;
        v[i] = (float)((int)(h >> 16) % 2000 - 1000) / 100.0f;
    }
    const char *del[3] = {"o-3", "o-17", "o-30"};
    if (sv_durable_create(dir, &p, &o, &d, &err) != SV_OK || sv_durable_add(d, v, ORIG_ROWS, FUZZ_DIM, ids, NULL, &err) != SV_OK ||
        sv_durable_flush(d, &err) != SV_OK || sv_durable_delete(d, del, 3, NULL, &err) != SV_OK ||
        sv_durable_snapshot(d, NULL, &err) != SV_OK) {
        fprintf(stderr, "fuzz_files: making the originals base: %s\n", err.message);
        abort();
    }
    sv_durable_free(d);
    snprintf(path, sizeof path, "%s/" SV_ORIGINALS_FILE, dir);
    if (read_named(dir, "snap-", &orig_snap, &orig_snap_len) != 0 || read_file(path, &orig_file, &orig_file_len) != 0)
        abort();
    if (sv_remove_dir(dir) != 0 || rmdir(base) != 0)
        abort();
}

static sv_status run_originals(const uint8_t *b, size_t len)
{
    orig_base();
    int fd = memfd_create("fuzz-originals", MFD_CLOEXEC);
    if (fd < 0 || (len && write(fd, b, len) != (ssize_t)len))
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    sv_params p;
    orig_params(&p);
    p.allocator = &capped;
    p.originals_path = path;
    sv_collection *c = NULL;
    uint64_t lsn = 0;
    sv_error err;
    sv_status st = sv_snapshot_load(orig_snap, orig_snap_len, &p, &c, &lsn, &err);
    if (st == SV_OK)
        st = sv_engine_originals_check(c, &err);
    if (st == SV_OK) {
        sv_hit hits[10];
        size_t n = 0;
        float q[FUZZ_DIM] = {0}, got[FUZZ_DIM];
        sv_search_opts so = {.k = 10, .search_list = 20};
        check(sv_collection_search_opts(c, q, FUZZ_DIM, &so, hits, &n, &err) == SV_OK, "re-ranked search");
        for (size_t i = 1; i < n; i++)
            check(hits[i - 1].distance <= hits[i].distance, "re-ranked hits in order");
        check(sv_collection_get(c, "o-0", got, FUZZ_DIM, &err) == SV_OK, "get of a checked original");
        const char *ids[1] = {"late"};
        if (sv_collection_add(c, q, 1, FUZZ_DIM, ids, NULL, &err) == SV_OK)
            sv_collection_flush(c, &err);
        check(sv_collection_search_opts(c, got, FUZZ_DIM, &so, hits, &n, &err) == SV_OK, "search after a write");
    } else if (verbose) {
        fprintf(stderr, "originals rejected: %s\n", err.message);
    }
    sv_collection_free(c);
    close(fd);
    check(atomic_load(&mem_live) == 0, "the collection gave back all its memory");
    return st;
}

/* Parse one input; returns the parser's status (SV_OK: accepted). */
static sv_status run_one(const uint8_t *data, size_t size)
{
    if (size < 2)
        return SV_ERR_INVALID_ARGUMENT;
    unsigned which = data[0] % N_PARSERS, flags = data[1];
    if (verbose < 0)
        verbose = getenv("FUZZ_FILES_VERBOSE") != NULL;
    size_t len = size - 2;
    /* A copy: libFuzzer's bytes are const, and the checksums get fixed.
     * Exactly len bytes, so reads past the file trip ASan. */
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        abort();
    memcpy(b, data + 2, len);
    if ((flags & FLAG_RAW) != FLAG_RAW) {
        if (which == P_PARAMS)
            fix_params(b, len);
        else if (which == P_WAL)
            fix_wal(b, len);
        else if (which == P_SNAPSHOT)
            fix_snapshot(b, len);
        else if (which == P_ORIGINALS)
            fix_originals(b, len);
    }
    sv_status st = SV_OK;
    switch (which) {
    case P_PARAMS:
        st = run_params(b, len);
        break;
    case P_WAL:
        st = run_wal(b, len, (flags & FLAG_STRICT) != 0);
        break;
    case P_LOGREC:
        st = run_logrec(b, len);
        break;
    case P_ORIGINALS:
        st = run_originals(b, len);
        break;
    default:
        st = run_snapshot(b, len, flags);
        break;
    }
    free(b);
    if (st == SV_OK)
        n_accepted[which]++;
    else
        n_rejected[which]++;
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    return 0;
}

#ifndef SV_LIBFUZZER
/* ---- corpus-driven run ------------------------------------------------------ */

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *parser_name[N_PARSERS] = {"params", "wal", "logrec", "snapshot", "originals"};

/* The records/sections of a log segment or snapshot (offset and length of
 * each payload), walked as the checksum fix-up walks them. */
typedef struct region {
    size_t hdr, off, len;  /* header offset, payload offset and length */
} region;

static size_t wal_regions(const uint8_t *b, size_t len, region *r, size_t max)
{
    size_t n = 0, off = SV_WAL_HEADER;
    while (len >= SV_WAL_HEADER && len - off >= SV_WAL_REC_HEADER) {
        uint32_t plen = fu_rd32(b + off);
        if (plen > len - off - SV_WAL_REC_HEADER)
            break;
        if (r && n < max)
            r[n] = (region){off, off + SV_WAL_REC_HEADER, plen};
        n++;
        off += SV_WAL_REC_HEADER + (size_t)plen;
    }
    return n;
}

static size_t snap_regions(const uint8_t *b, size_t len, region *r, size_t max)
{
    size_t n = 0, off = 32;
    while (len >= 32 && len - off >= 16) {
        uint64_t slen = fu_rd64(b + off + 8);
        size_t room = len - off - 16;
        if (room < 4 || slen > room - 4)
            break;
        if (r && n < max)
            r[n] = (region){off, off + 16, (size_t)slen};
        n++;
        off += 16 + (size_t)slen + 4;
    }
    return n;
}

typedef struct seed {
    uint8_t which, flags;
    uint8_t *b;
    size_t len;
} seed;

#define MAX_SEEDS 64
static seed seeds[MAX_SEEDS];
static size_t n_seeds;

static void add_seed(uint8_t which, uint8_t flags, const uint8_t *b, size_t len)
{
    if (n_seeds == MAX_SEEDS)
        abort();
    seed *s = &seeds[n_seeds++];
    s->which = which;
    s->flags = flags;
    s->b = malloc(len ? len : 1);
    if (!s->b)
        abort();
    memcpy(s->b, b, len);
    s->len = len;
}

static void die(const char *what, const sv_error *err)
{
    fprintf(stderr, "fuzz_files: %s: %s\n", what, err ? err->message : strerror(errno));
    exit(1);
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (!b)
        return -1;
    *out = b;
    *len = n;
    return 0;
}

/* The first file in dir whose name starts with prefix, read whole. */
static int read_named(const char *dir, const char *prefix, uint8_t **out, size_t *len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = -1;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            rc = read_file(path, out, len);
            break;
        }
    }
    closedir(d);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void random_vectors(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((int)fu_below(2000) - 1000) / 100.0f;
}

/*
 * A real durable collection: 300 adds (assigned, string and numeric ids),
 * deletes of buffered vectors (free slots), a flush, deletes of indexed
 * ones (tombstones), a few more adds (buffered, reusing slots), a snapshot.
 * Its log segment before the snapshot is a WAL seed.
 */
static void durable_seeds(unsigned variant)
{
    char base[] = "/tmp/fuzz_files_XXXXXX", dir[64];
    if (!mkdtemp(base))
        die("mkdtemp", NULL);
    snprintf(dir, sizeof dir, "%s/c", base);
    sv_params p;
    snapshot_params(&p, variant);
    sv_durable_options o = {0};
    sv_durable *d = NULL;
    sv_error err;
    if (sv_durable_create(dir, &p, &o, &d, &err) != SV_OK)
        die("sv_durable_create", &err);
    char names[310][24];
    const char *ids[25];
    float v[25 * FUZZ_DIM];
    for (int batch = 0; batch < 12; batch++) {
        for (int j = 0; j < 25; j++) {
            int i = batch * 25 + j;
            if (i % 3 == 0)
                snprintf(names[i], sizeof names[i], "%s", ""); /* assigned */
            else if (i % 3 == 1)
                snprintf(names[i], sizeof names[i], "doc-%d", i);
            else
                snprintf(names[i], sizeof names[i], "%d", 100000 + i);
            ids[j] = names[i];
        }
        random_vectors(v, 25 * FUZZ_DIM);
        /* Every other batch with payloads of every type. */
        sv_pv_field f[25][6];
        sv_payload pl[25];
        static const char *tags[3] = {"red", "big", "\xc3\xa9t\xc3\xa9"};
        static const int64_t nums[3] = {-1, 0, INT64_MAX};
        for (int j = 0; j < 25; j++) {
            f[j][0] = (sv_pv_field){.key = "class", .type = SV_PV_STRING, .s = j % 2 ? "shirt" : "coat"};
            f[j][1] = (sv_pv_field){.key = "u", .type = SV_PV_INT, .i = batch * 25 + j};
            f[j][2] = (sv_pv_field){.key = "x", .type = SV_PV_DOUBLE, .d = j * 0.5};
            f[j][3] = (sv_pv_field){.key = "ok", .type = SV_PV_BOOL, .b = j % 2};
            f[j][4] = (sv_pv_field){.key = "tags", .type = SV_PV_STRINGS, .ss = tags, .n = (uint32_t)(j % 4)};
            f[j][5] = (sv_pv_field){.key = "nums", .type = SV_PV_INTS, .is = nums, .n = (uint32_t)(j % 4)};
            pl[j] = (sv_payload){f[j], 1 + (uint32_t)(j % 6)};
        }
        if (sv_durable_add_payloads(d, v, 25, FUZZ_DIM, ids, batch % 2 ? pl : NULL, NULL, &err) != SV_OK)
            die("sv_durable_add", &err);
    }
    sv_pv_field patch = {.key = "u", .type = SV_PV_INT, .i = -7};
    sv_payload patch_pl = {&patch, 1};
    if (sv_durable_set_payload(d, "doc-25", &patch_pl, SV_PAYLOAD_PATCH, &err) != SV_OK)
        die("sv_durable_set_payload", &err);
    /* Indexes: an INDEX record, and the snapshots' INDEXES section. */
    if (sv_durable_index_key(d, "class", &err) != SV_OK || sv_durable_index_key(d, "x", &err) != SV_OK ||
        sv_durable_index_key(d, "label", &err) != SV_OK) /* no values yet */
        die("sv_durable_index_key", &err);
    const char *del1[6] = {"doc-1", "doc-4", "100002", "100005", "0", "3"};
    if (sv_durable_delete(d, del1, 6, NULL, &err) != SV_OK)
        die("sv_durable_delete", &err);
    if (sv_durable_flush(d, &err) != SV_OK)
        die("sv_durable_flush", &err);
    const char *del2[8] = {"doc-7", "doc-10", "doc-100", "100008", "100011", "100200", "6", "9"};
    if (sv_durable_delete(d, del2, 8, NULL, &err) != SV_OK)
        die("sv_durable_delete", &err);
    if (sv_durable_consolidate(d, &err) != SV_OK) /* a CONSOLIDATE record */
        die("sv_durable_consolidate", &err);
    uint8_t *wal = NULL;
    size_t wal_len = 0;
    if (read_named(dir, "wal-", &wal, &wal_len) != 0)
        die("reading the log segment", NULL);
    add_seed(P_WAL, (uint8_t)variant, wal, wal_len);
    free(wal);
    for (int j = 0; j < 10; j++) {
        if (j % 2)
            snprintf(names[300 + j], sizeof names[300 + j], "late-%d", j);
        else
            names[300 + j][0] = '\0'; /* assigned */
        ids[j] = names[300 + j];
    }
    random_vectors(v, 10 * FUZZ_DIM);
    if (sv_durable_add(d, v, 10, FUZZ_DIM, ids, NULL, &err) != SV_OK)
        die("sv_durable_add", &err);
    const char *del3[1] = {"late-1"};
    if (sv_durable_delete(d, del3, 1, NULL, &err) != SV_OK)
        die("sv_durable_delete", &err);
    sv_snapshot_info info;
    if (sv_durable_snapshot(d, &info, &err) != SV_OK)
        die("sv_durable_snapshot", &err);
    uint8_t *snap = NULL;
    size_t snap_len = 0;
    if (read_named(dir, "snap-", &snap, &snap_len) != 0)
        die("reading the snapshot", NULL);
    add_seed(P_SNAPSHOT, (uint8_t)variant, snap, snap_len);
    add_seed(P_SNAPSHOT, (uint8_t)(variant | FLAG_WRITE), snap, snap_len);
    free(snap);
    sv_durable_free(d);
    if (nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        die("removing the temporary directory", NULL);
}

/* Logrec payloads, built with the encoders. */
static size_t add_payload(uint8_t *buf, size_t cap, uint32_t n, uint32_t dim)
{
    const char *ids[8];
    uint64_t assigned[8];
    char names[8][40];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kind = fu_below(3);
        uint32_t shift = 1 + fu_below(60); /* (two calls in one expression: unsequenced) */
        assigned[i] = fu_next() >> shift;
        if (kind == 0) {
            ids[i] = NULL;
        } else if (kind == 1) {
            snprintf(names[i], sizeof names[i], "id-%u-%llu", i, (unsigned long long)(fu_next() % 1000));
            ids[i] = names[i];
        } else {
            snprintf(names[i], sizeof names[i], "%llu", (unsigned long long)(fu_next() % 100000));
            ids[i] = names[i];
        }
    }
    uint8_t *p = NULL;
    size_t len = 0;
    if (sv_logrec_add_ids(ids, assigned, n, dim, fu_next() >> 2, (int)(fu_next() & 1), &p, &len) != SV_OK)
        abort();
    size_t total = len + (size_t)n * dim * 4;
    if (total > cap) {
        free(p);
        return 0;
    }
    memcpy(buf, p, len);
    for (size_t i = 0; i < (size_t)n * dim; i++) {
        float x = (float)((int)fu_below(2000) - 1000) / 100.0f;
        memcpy(buf + len + 4 * i, &x, 4);
    }
    free(p);
    return total;
}

static size_t delete_payload(uint8_t *buf, size_t cap, uint32_t n)
{
    const char *ids[8];
    char names[8][40];
    for (uint32_t i = 0; i < n; i++) {
        if (fu_below(2))
            snprintf(names[i], sizeof names[i], "id-%u", fu_below(1000));
        else
            snprintf(names[i], sizeof names[i], "%u", fu_below(100000));
        ids[i] = names[i];
    }
    uint8_t *p = NULL;
    size_t len = 0;
    if (sv_logrec_delete(ids, n, &p, &len) != SV_OK)
        abort();
    if (len > cap) {
        free(p);
        return 0;
    }
    memcpy(buf, p, len);
    free(p);
    return len;
}

static size_t train_payload(uint8_t *buf, uint32_t dim)
{
    fu_wr32(buf, dim);
    for (uint32_t i = 0; i < dim; i++) {
        float x = (float)((int)fu_below(2000) - 1000) / 100.0f;
        memcpy(buf + 4 + 4 * (size_t)i, &x, 4);
    }
    return 4 + (size_t)dim * 4;
}

/* A log segment built by hand: header, then records of every type. */
static size_t wal_by_hand(uint8_t *buf, size_t cap, uint64_t first, int n_recs)
{
    memset(buf, 0, SV_WAL_HEADER);
    memcpy(buf, "SVWAL\0\0\1", 8);
    fu_wr32(buf + 8, 1);
    memcpy(buf + 16, &first, 8);
    fu_wr32(buf + 28, sv_crc32c(0, buf, 28));
    size_t off = SV_WAL_HEADER;
    for (int i = 0; i < n_recs; i++) {
        uint8_t pl[2048];
        uint32_t type = i == 0 ? SV_WAL_TRAIN : i % 5 == 4 ? SV_WAL_FLUSH
                                             : i % 7 == 6 ? SV_WAL_CONSOLIDATE : 1 + fu_below(2);
        uint64_t rows = 1 + fu_below(100);
        if (type == SV_WAL_FLUSH || type == SV_WAL_CONSOLIDATE)
            memcpy(pl, &rows, 8);
        size_t plen = type == SV_WAL_FLUSH || type == SV_WAL_CONSOLIDATE ? 8
                      : type == SV_WAL_TRAIN ? train_payload(pl, FUZZ_DIM)
                      : type == SV_WAL_ADD ? add_payload(pl, sizeof pl, 1 + fu_below(4), FUZZ_DIM)
                                           : delete_payload(pl, sizeof pl, 1 + fu_below(4));
        if (off + SV_WAL_REC_HEADER + plen > cap)
            break;
        uint64_t lsn = first + (uint64_t)i;
        fu_wr32(buf + off, (uint32_t)plen);
        memcpy(buf + off + 8, &lsn, 8);
        fu_wr32(buf + off + 16, type);
        memcpy(buf + off + 20, pl, plen);
        uint32_t crc = sv_crc32c(0, buf + off, 4);
        fu_wr32(buf + off + 4, sv_crc32c(crc, buf + off + 8, 12 + plen));
        off += SV_WAL_REC_HEADER + plen;
    }
    return off;
}

static void make_seeds(void)
{
    uint8_t buf[8192];
    /* params */
    for (unsigned v = 0; v < 4; v++) {
        sv_params p;
        snapshot_params(&p, v);
        if (v == 3) {
            p.dim = 1536;
            p.R = 64;
            p.L_build = 200;
            p.alpha = 1.2f;
            p.seed = 99;
            p.flush_threshold = 0;
        }
        sv_params_encode(&p, buf);
        add_seed(P_PARAMS, 0, buf, SV_PARAMS_BYTES);
    }
    /* log segments by hand */
    for (int i = 0; i < 3; i++) {
        size_t len = wal_by_hand(buf, sizeof buf, i == 0 ? 1 : 1 + fu_next() % 100000, 2 + 4 * i);
        add_seed(P_WAL, i == 2 ? FLAG_STRICT : 0, buf, len);
    }
    /* record payloads */
    for (uint32_t n = 1; n <= 4; n += 3)
        add_seed(P_LOGREC, 0, buf, add_payload(buf, sizeof buf, n, FUZZ_DIM));
    add_seed(P_LOGREC, 0, buf, add_payload(buf, sizeof buf, 2, 3));
    add_seed(P_LOGREC, 0, buf, delete_payload(buf, sizeof buf, 1));
    add_seed(P_LOGREC, 0, buf, delete_payload(buf, sizeof buf, 5));
    add_seed(P_LOGREC, 0, buf, train_payload(buf, FUZZ_DIM));
    {
        /* payloads: an ADD of two with its payload section, a SET_PAYLOAD */
        const char *tags[2] = {"a", "bb"};
        const int64_t nums[2] = {INT64_MIN, 5};
        sv_pv_field f[6] = {{.key = "s", .type = SV_PV_STRING, .s = "text"},
                            {.key = "i", .type = SV_PV_INT, .i = -3},
                            {.key = "d", .type = SV_PV_DOUBLE, .d = 2.5},
                            {.key = "b", .type = SV_PV_BOOL, .b = 1},
                            {.key = "ss", .type = SV_PV_STRINGS, .ss = tags, .n = 2},
                            {.key = "is", .type = SV_PV_INTS, .is = nums, .n = 2}};
        sv_payload pl[2] = {{f, 6}, {f + 1, 2}};
        size_t alen = add_payload(buf, sizeof buf, 2, FUZZ_DIM);
        uint8_t *sec = NULL, *rec = NULL;
        size_t slen = 0, rlen = 0;
        if (sv_logrec_add_payloads(pl, 2, &sec, &slen) != SV_OK || alen + slen > sizeof buf)
            die("an ADD payload seed", NULL);
        memcpy(buf + alen, sec, slen);
        add_seed(P_LOGREC, 0, buf, alen + slen);
        if (sv_logrec_set_payload("doc-9", &pl[0], SV_PAYLOAD_PATCH, &rec, &rlen) != SV_OK)
            die("a SET_PAYLOAD seed", NULL);
        add_seed(P_LOGREC, 0, rec, rlen);
        free(rec);
        if (sv_logrec_index("tags", &rec, &rlen) != SV_OK)
            die("an INDEX seed", NULL);
        add_seed(P_LOGREC, 0, rec, rlen);
        free(sec);
        free(rec);
    }
    /* snapshots and real log segments: int8/L2, f32/L2, int8/cosine, f32/IP */
    for (unsigned v = 0; v < 4; v++)
        durable_seeds(v);
    /* the originals file of the fixed collection (the mutations cut it
     * short, change records and the header) */
    orig_base();
    add_seed(P_ORIGINALS, 0, orig_file, orig_file_len);
}

/* ---- mutations ---------------------------------------------------------- */

#define FUZZ_MAX_INPUT (1u << 17)

static const uint32_t interesting32[] = {0, 1, 2, 7, 8, 9, 16, 0x7f, 0x80, 0xff, 0x100, 0xffff,
                                         0x7fffffff, 0x80000000u, 0xfffffffeu, 0xffffffffu};

/* A position to mutate: anywhere, or (structure-aware) inside one of the
 * records/sections or their headers, or in META. */
static size_t pick_pos(uint8_t which, const uint8_t *b, size_t len)
{
    if (len == 0)
        return 0;
    region r[16];
    size_t n = 0;
    if (which == P_WAL)
        n = wal_regions(b, len, r, 16);
    else if (which == P_SNAPSHOT)
        n = snap_regions(b, len, r, 16);
    if (n > 16)
        n = 16;
    uint32_t how = fu_below(20);
    if (n && how >= 7) {
        region *g = &r[fu_below((uint32_t)n)];
        if (which == P_SNAPSHOT && fu_below(4) == 0)
            g = &r[0]; /* META: the counts everything is sized by */
        if (how < 10 || g->len == 0)
            return g->hdr + fu_below((uint32_t)(g->off - g->hdr));
        return g->off + fu_below((uint32_t)g->len);
    }
    if (how == 6 && len > 32)
        return fu_below(32); /* the file header */
    return fu_below((uint32_t)len);
}

static void mutate_once(uint8_t which, uint8_t *b, size_t *lenp)
{
    size_t len = *lenp;
    size_t pos = pick_pos(which, b, len);
    switch (fu_below(10)) {
    case 0: /* bit flip */
        if (len)
            b[pos] ^= (uint8_t)(1u << fu_below(8));
        break;
    case 1: /* byte to 0, 0xff or random */
        if (len) {
            uint32_t k = fu_below(3);
            b[pos] = k == 0 ? 0 : k == 1 ? 0xff : (uint8_t)fu_next();
        }
        break;
    case 2: /* small add/sub */
        if (len)
            b[pos] = (uint8_t)(b[pos] + (int)fu_below(9) - 4);
        break;
    case 3: /* truncation */
        if (len)
            len = fu_below(4) ? len - 1 - fu_below((uint32_t)(len < 64 ? len : 64)) : fu_below((uint32_t)len);
        break;
    case 4: { /* duplicate a chunk at a position */
        if (len) {
            size_t from = fu_below((uint32_t)len), n = 1 + fu_below(64);
            if (n > len - from)
                n = len - from;
            if (len + n <= FUZZ_MAX_INPUT) {
                uint8_t tmp[64];
                memcpy(tmp, b + from, n);
                memmove(b + pos + n, b + pos, len - pos);
                memcpy(b + pos, tmp, n);
                len += n;
            }
        }
        break;
    }
    case 5: { /* insert random bytes */
        fu_insert_random(b, &len, FUZZ_MAX_INPUT, pos, 16);
        break;
    }
    case 6: { /* delete a chunk */
        fu_delete_chunk(b, &len, pos, 32);
        break;
    }
    case 7: /* an interesting u32 */
        if (len >= 4) {
            if (pos > len - 4)
                pos = len - 4;
            fu_wr32(b + pos, interesting32[fu_below(sizeof interesting32 / sizeof *interesting32)]);
        }
        break;
    case 8: { /* a length field: record/section length, or the first u32 */
        region r[64];
        size_t n = which == P_WAL ? wal_regions(b, len, r, 64)
                   : which == P_SNAPSHOT ? snap_regions(b, len, r, 64)
                                         : 0;
        if (n > 64)
            n = 64;
        int delta = (int)fu_below(17) - 8;
        if (n) {
            region *g = &r[fu_below((uint32_t)n)];
            size_t at = which == P_WAL ? g->hdr : g->hdr + 8;
            uint32_t v = fu_rd32(b + at);
            fu_wr32(b + at, fu_below(8) ? v + (uint32_t)delta : (uint32_t)fu_next());
        } else if (len >= 4) {
            fu_wr32(b, fu_rd32(b) + (uint32_t)delta);
        }
        break;
    }
    default: /* zero a run (a torn tail, a hole) */
        if (len) {
            size_t n = 1 + fu_below(fu_below(2) ? 8 : 256);
            if (pos + n > len || fu_below(3) == 0)
                n = len - pos;
            memset(b + pos, 0, n);
        }
        break;
    }
    *lenp = len;
}

int main(int argc, char **argv)
{
    const char *corpus = NULL;
    long rounds = 0;
    fu_args("fuzz_files", argc, argv, &rounds, &corpus);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    make_seeds();
    uint8_t *in = malloc(FUZZ_MAX_INPUT + 2);
    if (!in)
        abort();

    /* Every valid seed must be accepted: otherwise the seeds test nothing. */
    for (size_t i = 0; i < n_seeds; i++) {
        in[0] = seeds[i].which;
        in[1] = seeds[i].flags;
        memcpy(in + 2, seeds[i].b, seeds[i].len);
        if (corpus)
            fu_write_input("fuzz_files", corpus, i, in, seeds[i].len + 2);
        if (run_one(in, seeds[i].len + 2) != SV_OK) {
            fprintf(stderr, "fuzz_files: valid seed %zu (%s) rejected\n", i, parser_name[seeds[i].which]);
            return 1;
        }
    }

    unsigned long mutated[N_PARSERS] = {0}, mutated_ok[N_PARSERS] = {0};
    for (long i = 0; i < rounds; i++) {
        size_t len;
        uint8_t which;
        int is_mutant = 0;
        const seed *s = NULL;
        if (i % 16 == 15) {
            /* random bytes, possibly behind a valid file header */
            which = (uint8_t)fu_below(N_PARSERS);
            in[0] = which;
            in[1] = (uint8_t)fu_next();
            len = fu_below(fu_below(2) ? 64 : 512);
            for (size_t k = 0; k < len; k++)
                in[2 + k] = (uint8_t)fu_next();
            if (len >= 8 && fu_below(2)) {
                const char *magic = which == P_WAL ? "SVWAL\0\0\1" : which == P_SNAPSHOT ? "SVSNAP\0\1" : NULL;
                if (magic)
                    memcpy(in + 2, magic, 8);
            }
        } else {
            s = &seeds[fu_below((uint32_t)n_seeds)];
            which = s->which;
            in[0] = which;
            in[1] = s->flags;
            if (which == P_WAL)
                in[1] = (uint8_t)(in[1] | (fu_below(2) ? FLAG_STRICT : 0));
            else if (which == P_SNAPSHOT && fu_below(4) == 0)
                in[1] = (uint8_t)(in[1] | FLAG_WRITE);
            len = s->len;
            memcpy(in + 2, s->b, len);
            int n_mut = 1 + (int)fu_below(fu_below(4) ? 2 : 8);
            for (int k = 0; k < n_mut; k++)
                mutate_once(which, in + 2, &len);
            is_mutant = len != s->len || memcmp(in + 2, s->b, len) != 0;
        }
        if (fu_below(20) == 0)
            in[1] |= FLAG_RAW; /* checksums as they are */
        if (corpus) {
            fu_write_input("fuzz_files", corpus, n_seeds + (size_t)i, in, len + 2);
            continue;
        }
        sv_status st = run_one(in, len + 2);
        if (is_mutant) {
            mutated[which]++;
            mutated_ok[which] += st == SV_OK;
        }
    }
    free(in);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].b);
    if (corpus) {
        printf("fuzz_files: wrote %zu seeds and %ld mutants to %s\n", n_seeds, rounds, corpus);
        return 0;
    }

    printf("fuzz_files: %ld inputs (+%zu valid seeds), no crash, %.1f s CPU\n", rounds, n_seeds,
           (double)clock() / CLOCKS_PER_SEC - t0);
    for (int p = 0; p < N_PARSERS; p++)
        printf("  %-8s accepted %6lu  rejected %6lu   mutants accepted %lu of %lu\n", parser_name[p],
               n_accepted[p], n_rejected[p], mutated_ok[p], mutated[p]);
    printf("  wal: %lu records visited, %lu decoded; logrec: add %lu, delete %lu, train %lu, flush %lu, consolidate %lu, "
           "set payload %lu decoded\n",
           n_wal_records, n_wal_decoded, n_rec_ok[0], n_rec_ok[1], n_rec_ok[2], n_rec_ok[3], n_rec_ok[4], n_rec_ok[6]);
    printf("  snapshots loaded: %lu validate, %lu fail validate (a graph the loader does not check);"
           " %lu written to after loading; %lu allocations refused (over %u MiB)\n",
           n_loaded_valid, n_loaded_invalid, n_loaded_written, n_mem_refused, FUZZ_MEM_CAP >> 20);
    if (mutated_ok[P_SNAPSHOT] == 0 || mutated_ok[P_WAL] == 0) {
        fprintf(stderr, "fuzz_files: no mutated snapshot or log segment was ever accepted: "
                        "the inputs never got past the checks\n");
        return 1;
    }
    return 0;
}
#endif
