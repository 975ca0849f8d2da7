/* Snapshot writing and loading (see snapshot.h). */
#include "snapshot.h"
#include "error.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collection_impl.h"
#include "crc32c.h"
#include "fileheader.h"
#include "fileio.h"
#include "pcodec.h"
#include "quantizer.h"

static const uint8_t MAGIC[8] = {'S', 'V', 'S', 'N', 'A', 'P', 0, 1};
#define VERSION 1u
#define SEC_HEADER 16u

/* PAYLOADS, when any vector has one, comes after BUFFER (older snapshots
 * have none): entries u32 slot | u32 bytes | one payload (pcodec.h).
 * INDEXES, when a key is indexed, comes next: the indexed keys, each
 * u8 length | the name (the indexes are built again from the payloads). */
enum { SEC_META = 1, SEC_MEAN, SEC_STATES, SEC_IDS, SEC_FREE, SEC_BUFFER, SEC_CODES, SEC_EDGES, SEC_END,
       SEC_PAYLOADS, SEC_INDEXES };

static const char *sec_name(uint32_t tag)
{
    static const char *names[] = {"?",     "META",  "MEAN", "STATES", "IDS",     "FREE",
                                  "BUFFER", "CODES", "EDGES", "END",  "PAYLOADS", "INDEXES"};
    return tag <= SEC_INDEXES ? names[tag] : "?";
}

/* META, fixed size. */
typedef struct meta {
    uint32_t dim, metric, storage, R, L_build;
    float alpha;
    uint64_t seed;
    uint32_t flush_threshold;
    uint32_t n_slots;       /* next_slot */
    uint64_t n_live, n_tombstones, rng, id_counter;
    uint32_t entry;
    uint32_t store_slots;   /* records in CODES */
    uint32_t n_free;
    uint32_t record_size;
} meta;
#define META_BYTES 88u

void sv_snapshot_name(uint64_t lsn, char *buf, size_t cap)
{
    snprintf(buf, cap, "snap-%020" PRIu64 ".svs", lsn);
}

int sv_snapshot_name_lsn(const char *name, uint64_t *lsn)
{
    return sv_parse_numbered_name(name, "snap-", ".svs", lsn);
}

/* ---- writing ------------------------------------------------------------ */

#define WBUF (1u << 20)

typedef struct writer {
    int fd;
    uint8_t *buf;
    size_t n;
    uint64_t off;        /* file offset of buf[0] */
    uint64_t sec_start;  /* file offset of the open section's header */
    uint64_t sec_len;
    uint32_t crc;
    int error;           /* errno of the first failure */
} writer;

static void w_flush(writer *w)
{
    if (w->n && !w->error && sv_write_all(w->fd, w->buf, w->n) != 0)
        w->error = errno ? errno : EIO;
    w->off += w->n;
    w->n = 0;
}

static void w_raw(writer *w, const void *p, size_t len)
{
    if (len == 0)
        return; /* p may be NULL (an empty free list) */
    if (len >= WBUF) {
        w_flush(w);
        if (!w->error && sv_write_all(w->fd, p, len) != 0)
            w->error = errno ? errno : EIO;
        w->off += len;
        return;
    }
    if (w->n + len > WBUF)
        w_flush(w);
    memcpy(w->buf + w->n, p, len);
    w->n += len;
}

/* Section payload bytes: counted and checksummed. */
static void w_put(writer *w, const void *p, size_t len)
{
    w->crc = sv_crc32c(w->crc, p, len);
    w->sec_len += len;
    w_raw(w, p, len);
}

static void w_u8(writer *w, uint8_t v) { w_put(w, &v, 1); }
static void w_u32(writer *w, uint32_t v) { w_put(w, &v, 4); }
static void w_u64(writer *w, uint64_t v) { w_put(w, &v, 8); }

static void sec_begin(writer *w, uint32_t tag)
{
    uint8_t h[SEC_HEADER] = {0};
    memcpy(h, &tag, 4);
    w->sec_start = w->off + w->n;
    w_raw(w, h, sizeof h); /* the length is patched at sec_end */
    w->sec_len = 0;
    w->crc = 0;
}

static void sec_end(writer *w)
{
    uint32_t crc = w->crc;
    w_raw(w, &crc, 4);
    w_flush(w);
    if (!w->error &&
        pwrite(w->fd, &w->sec_len, 8, (off_t)(w->sec_start + 8)) != 8)
        w->error = errno ? errno : EIO;
}

static void write_meta(writer *w, const meta *m)
{
    sec_begin(w, SEC_META);
    w_u32(w, m->dim);
    w_u32(w, m->metric);
    w_u32(w, m->storage);
    w_u32(w, m->R);
    w_u32(w, m->L_build);
    w_put(w, &m->alpha, 4);
    w_u64(w, m->seed);
    w_u32(w, m->flush_threshold);
    w_u32(w, m->n_slots);
    w_u64(w, m->n_live);
    w_u64(w, m->n_tombstones);
    w_u64(w, m->rng);
    w_u64(w, m->id_counter);
    w_u32(w, m->entry);
    w_u32(w, m->store_slots);
    w_u32(w, m->n_free);
    w_u32(w, m->record_size);
    sec_end(w);
}

/* *buf holding at least need bytes (grown by realloc). -1: out of memory. */
static int fit(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    void *b = realloc(*buf, need);
    if (!b)
        return -1;
    *buf = b;
    *cap = need;
    return 0;
}

/* Every searchable vector's payload (under the write lock, with the ids). */
static int write_payloads(writer *w, const sv_collection *c)
{
    size_t cap = 4096, ecap = 4096;
    void *buf = malloc(cap), *enc = malloc(ecap);
    int rc = buf && enc ? 0 : -1;
    for (uint32_t s = 0; rc == 0 && s < c->next_slot; s++) {
        uint8_t st = sv_graph_state(&c->graph, s);
        if ((st != SV_SLOT_INDEXED && st != SV_SLOT_BUFFERED) || !sv_payloads_has(c->payloads, s))
            continue;
        sv_payload pl;
        size_t need = sv_payloads_copy(c->payloads, s, buf, cap, &pl);
        if (need > cap) { /* nothing copied: again, with room */
            if (fit(&buf, &cap, need) != 0) {
                rc = -1;
                break;
            }
            sv_payloads_copy(c->payloads, s, buf, cap, &pl);
        }
        size_t len = sv_payload_encode(&pl, NULL, 0);
        if (fit(&enc, &ecap, len) != 0) {
            rc = -1;
            break;
        }
        sv_payload_encode(&pl, enc, ecap);
        w_u32(w, s);
        w_u32(w, (uint32_t)len);
        w_put(w, enc, len);
    }
    free(buf);
    free(enc);
    return rc;
}

static void write_buffer_rows(writer *w, const sv_collection *c, const sv_buffer *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (sv_graph_state(&c->graph, b->slots[i]) != SV_SLOT_BUFFERED)
            continue;
        w_u32(w, b->slots[i]);
        w_put(w, b->vecs + i * b->dim, (size_t)b->dim * sizeof(float));
    }
}

sv_status sv_snapshot_write(sv_collection *c, int fd, const sv_snapshot_hooks *hooks,
                            sv_snapshot_info *info, sv_error *err)
{
    memset(info, 0, sizeof *info);
    writer w = {.fd = fd, .buf = malloc(WBUF)};
    if (!w.buf)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory writing a snapshot");
    double t0 = sv_now_seconds();
    sv_status st = SV_OK;
    uint64_t lsn = 0;
    int quiet = 0;
    meta m = {0};

    pthread_mutex_lock(&c->maint);
    if ((st = hooks->quiesce(hooks->ctx, &lsn, err)) != SV_OK)
        goto cleanup;
    quiet = 1;
    double t_stall = sv_now_seconds();

    /* Phase 1: what adds and deletes change. */
    pthread_rwlock_rdlock(&c->lock);
    if (c->n_pending) {
        /* quiesce must wait for adds between prepare and publish: their
         * rows are not durable and have no state a snapshot can hold. */
        pthread_rwlock_unlock(&c->lock);
        st = sv_fail(err, SV_ERR_INTERNAL, "snapshot: %llu vectors are pending",
                     (unsigned long long)c->n_pending);
        goto cleanup;
    }
    const sv_params *p = &c->params;
    m.dim = p->dim;
    m.metric = (uint32_t)p->metric;
    m.storage = (uint32_t)p->storage;
    m.R = p->R;
    m.L_build = p->L_build;
    m.alpha = p->alpha;
    m.seed = p->seed;
    m.flush_threshold = p->flush_threshold;
    m.n_slots = c->next_slot;
    m.n_live = c->n_live;
    m.n_tombstones = c->n_tombstones;
    m.rng = c->rng;
    m.id_counter = sv_idmap_counter(c->idmap);
    m.entry = atomic_load(&c->graph.entry);
    uint32_t cap = sv_store_capacity(c->store);
    m.store_slots = m.n_slots < cap ? m.n_slots : cap;
    m.n_free = c->n_free;
    m.record_size = (uint32_t)sv_store_record_size(c->store);
    /* What this snapshot needs of the originals file (engine.h); written
     * with maint held, read under the write lock by its commit. */
    c->snap_slots = c->next_slot;
    c->snap_gen = c->compact_gen;

    uint8_t hdr[SV_FILE_HEADER];
    sv_file_header_encode(hdr, MAGIC, VERSION, lsn, 0);
    w_raw(&w, hdr, sizeof hdr);
    write_meta(&w, &m);

    sec_begin(&w, SEC_MEAN);
    const float *mean = sv_store_mean(c->store);
    if (mean)
        w_put(&w, mean, (size_t)m.dim * sizeof(float));
    sec_end(&w);

    sec_begin(&w, SEC_STATES);
    for (uint32_t i = 0; i < m.n_slots; i++) {
        uint8_t s = sv_graph_state(&c->graph, i);
        w_u8(&w, s == SV_SLOT_DELETING ? SV_SLOT_DELETED : s);
    }
    sec_end(&w);

    sec_begin(&w, SEC_IDS);
    for (uint32_t i = 0; i < m.n_slots; i++) {
        uint64_t num = 0;
        const char *str = NULL;
        size_t len = 0;
        int kind = sv_idmap_slot_id(c->idmap, i, &num, &str, &len);
        w_u8(&w, (uint8_t)kind);
        if (kind == 1) {
            w_u64(&w, num);
        } else if (kind == 2) {
            w_u8(&w, (uint8_t)len);
            w_put(&w, str, len);
        }
    }
    sec_end(&w);

    sec_begin(&w, SEC_FREE);
    w_put(&w, c->free_slots, (size_t)c->n_free * sizeof(uint32_t));
    sec_end(&w);

    /* The maintenance lock is held, so no flush is linking rows; a flush
     * that failed to take its rows leaves them in the active buffer. */
    sec_begin(&w, SEC_BUFFER);
    write_buffer_rows(&w, c, &c->active);
    write_buffer_rows(&w, c, &c->flushing);
    sec_end(&w);
    sv_payload_stats ps;
    sv_payloads_get_stats(c->payloads, &ps);
    int payload_oom = 0;
    if (ps.slots_with_payload) {
        sec_begin(&w, SEC_PAYLOADS);
        payload_oom = write_payloads(&w, c) != 0;
        sec_end(&w);
    }
    int indexed = 0;
    for (uint32_t i = 0, nk = sv_payloads_keys(c->payloads); i < nk; i++)
        indexed += sv_payloads_key_indexed(c->payloads, i);
    if (indexed) {
        sec_begin(&w, SEC_INDEXES);
        for (uint32_t i = 0, nk = sv_payloads_keys(c->payloads); i < nk; i++) {
            if (!sv_payloads_key_indexed(c->payloads, i))
                continue;
            const char *key = sv_payloads_key(c->payloads, i, NULL);
            w_u8(&w, (uint8_t)strlen(key));
            w_put(&w, key, strlen(key));
        }
        sec_end(&w);
    }
    pthread_rwlock_unlock(&c->lock);
    if (payload_oom) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory writing the payloads");
        goto cleanup;
    }

    hooks->resume(hooks->ctx);
    quiet = 0;
    info->stall_seconds = sv_now_seconds() - t_stall;

    /* Phase 2: codes and edges change only in a flush or a consolidation,
     * which the maintenance lock keeps out; adds and deletes touch neither
     * (nor the chunk tables, which only a flush grows). */
    sec_begin(&w, SEC_CODES);
    uint32_t left = m.store_slots;
    for (uint32_t ci = 0; left > 0; ci++) {
        uint32_t per = 0;
        const uint8_t *chunk = sv_store_chunk(c->store, ci, &per);
        uint32_t take = left < per ? left : per;
        w_put(&w, chunk, (size_t)take * m.record_size);
        left -= take;
    }
    sec_end(&w);

    sec_begin(&w, SEC_EDGES);
    uint32_t edge_slots = sv_edges_slots(c->edges);
    for (uint32_t i = 0; i < m.n_slots; i++) {
        uint32_t ids[SV_R_MAX];
        uint32_t count = i < edge_slots ? sv_edges_get(c->edges, i, ids) : 0;
        w_u8(&w, (uint8_t)count);
        if (count)
            w_put(&w, ids, (size_t)count * sizeof(uint32_t));
    }
    sec_end(&w);
    sec_begin(&w, SEC_END);
    sec_end(&w);
    w_flush(&w);
    if (w.error)
        st = sv_fail(err, SV_ERR_IO, "writing the snapshot: %s", strerror(w.error));

cleanup:
    if (quiet)
        hooks->resume(hooks->ctx);
    pthread_mutex_unlock(&c->maint);
    free(w.buf);
    info->lsn = lsn;
    info->bytes = w.off;
    info->seconds = sv_now_seconds() - t0;
    return st == SV_OK ? sv_ok(err) : st;
}

/* ---- loading ------------------------------------------------------------ */

typedef struct section {
    const uint8_t *p;
    size_t len;
    size_t off;  /* file offset of the payload */
} section;

typedef struct reader {
    const uint8_t *data;
    size_t len, off;
} reader;

static sv_status next_section(reader *r, uint32_t want, section *s, sv_error *err)
{
    if (r->len - r->off < SEC_HEADER)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: file ends before section %s", r->off, sec_name(want));
    uint32_t tag;
    uint64_t len;
    memcpy(&tag, r->data + r->off, 4);
    memcpy(&len, r->data + r->off + 8, 8);
    if (tag != want)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: section %u where %s was expected", r->off, tag,
                    sec_name(want));
    size_t room = r->len - r->off - SEC_HEADER;
    if (room < 4 || len > room - 4)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: section %s of %" PRIu64 " bytes runs past the end of the file",
                    r->off, sec_name(want), len);
    s->p = r->data + r->off + SEC_HEADER;
    s->len = (size_t)len;
    s->off = r->off + SEC_HEADER;
    uint32_t crc;
    memcpy(&crc, s->p + s->len, 4);
    if (crc != sv_crc32c(0, s->p, s->len))
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: section %s checksum mismatch", r->off, sec_name(want));
    r->off += SEC_HEADER + s->len + 4;
    return SV_OK;
}

static uint32_t g32(const uint8_t **p)
{
    uint32_t v;
    memcpy(&v, *p, 4);
    *p += 4;
    return v;
}

static uint64_t g64(const uint8_t **p)
{
    uint64_t v;
    memcpy(&v, *p, 8);
    *p += 8;
    return v;
}

static sv_status parse_meta(const section *s, const sv_params *e, size_t file_len, meta *m,
                            sv_error *err)
{
    if (s->len != META_BYTES)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: META of %zu bytes, expected %u", s->off, s->len, META_BYTES);
    const uint8_t *p = s->p;
    m->dim = g32(&p);
    m->metric = g32(&p);
    m->storage = g32(&p);
    m->R = g32(&p);
    m->L_build = g32(&p);
    memcpy(&m->alpha, p, 4);
    p += 4;
    m->seed = g64(&p);
    m->flush_threshold = g32(&p);
    m->n_slots = g32(&p);
    m->n_live = g64(&p);
    m->n_tombstones = g64(&p);
    m->rng = g64(&p);
    m->id_counter = g64(&p);
    m->entry = g32(&p);
    m->store_slots = g32(&p);
    m->n_free = g32(&p);
    m->record_size = g32(&p);
    if (m->dim != e->dim || m->metric != (uint32_t)e->metric || m->storage != (uint32_t)e->storage ||
        m->R != e->R || m->L_build != e->L_build || m->alpha != e->alpha || m->seed != e->seed ||
        m->flush_threshold != e->flush_threshold)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: the snapshot's parameters differ from the collection's", s->off);
    if (m->n_slots >= UINT32_MAX - 1 || m->store_slots > m->n_slots || m->n_free > m->n_slots ||
        m->n_live + m->n_tombstones > m->n_slots || m->id_counter >= (UINT64_C(1) << 63) ||
        (m->entry != SV_NO_SLOT && m->entry >= m->n_slots))
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: META counts are inconsistent", s->off);
    /* Memory is sized from these before the sections are read: each must
     * fit what is left of the file (STATES, IDS and EDGES take at least a
     * byte per slot), so damaged counts cannot ask for gigabytes. */
    size_t left = file_len - (s->off + s->len + 4);
    if (m->n_slots > left / 3 || (uint64_t)m->store_slots * m->record_size > left ||
        (uint64_t)m->n_free * 4 > left)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: META counts do not fit the file's %zu bytes",
                       s->off, file_len);
    return SV_OK;
}

static sv_status load_sections(sv_collection *c, reader *r, const meta *m, sv_error *err)
{
    section s;
    sv_status st;
    const uint32_t dim = m->dim, n = m->n_slots;
    uint8_t *seen = NULL;
    sv_buffer *b = &c->active;

    if ((st = next_section(r, SEC_MEAN, &s, err)) != SV_OK)
        return st;
    if (s.len) {
        if (m->storage != SV_STORAGE_INT8 || s.len != (size_t)dim * sizeof(float))
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: MEAN of %zu bytes", s.off, s.len);
        float *mean = malloc(s.len);
        if (!mean)
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory loading the snapshot");
        memcpy(mean, s.p, s.len);
        int finite = 1;
        for (uint32_t i = 0; i < dim; i++)
            finite &= isfinite(mean[i]) != 0;
        st = finite ? sv_store_set_mean(c->store, mean) : SV_ERR_CORRUPT;
        free(mean);
        if (st != SV_OK)
            return sv_fail(err, st, "offset %zu: bad quantizer mean", s.off);
    }

    if (sv_graph_reserve(&c->graph, n) != SV_OK || sv_idmap_reserve_slots(c->idmap, n) != SV_OK ||
        sv_store_reserve(c->store, m->store_slots) != SV_OK || sv_edges_reserve(c->edges, n) != SV_OK ||
        sv_coll_grow_free(c, m->n_free) != SV_OK)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory loading %u slots", n);
    if (c->orig && (st = sv_orig_reserve(c->orig, n, err)) != SV_OK)
        return st;

    /* STATES */
    if ((st = next_section(r, SEC_STATES, &s, err)) != SV_OK)
        return st;
    if (s.len != n)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: STATES of %zu bytes for %u slots", s.off, s.len, n);
    uint64_t live = 0, tomb = 0, buffered = 0, n_free_states = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t v = s.p[i];
        if (v > SV_SLOT_DELETED)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has state %u", s.off + i, i, v);
        if ((v == SV_SLOT_INDEXED || v == SV_SLOT_DELETED) && i >= m->store_slots)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: indexed slot %u has no record", s.off + i, i);
        sv_graph_set_state(&c->graph, i, v);
        live += v == SV_SLOT_BUFFERED || v == SV_SLOT_INDEXED;
        buffered += v == SV_SLOT_BUFFERED;
        tomb += v == SV_SLOT_DELETED;
        n_free_states += v == SV_SLOT_FREE;
    }
    if (live != m->n_live || tomb != m->n_tombstones || n_free_states != m->n_free)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot states disagree with META", s.off);
    if (m->entry != SV_NO_SLOT) {
        uint8_t v = sv_graph_state(&c->graph, m->entry);
        if (v != SV_SLOT_INDEXED && v != SV_SLOT_DELETED)
            return sv_fail(err, SV_ERR_CORRUPT, "entry point %u is not in the graph", m->entry);
    }

    /* IDS: exactly the live slots are bound, each id once. */
    if ((st = next_section(r, SEC_IDS, &s, err)) != SV_OK)
        return st;
    const uint8_t *p = s.p, *end = s.p + s.len;
    for (uint32_t i = 0; i < n; i++) {
        size_t at = s.off + (size_t)(p - s.p);
        if (p >= end)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: IDS ends at slot %u", at, i);
        uint8_t kind = *p++;
        uint8_t v = sv_graph_state(&c->graph, i);
        int is_live = v == SV_SLOT_BUFFERED || v == SV_SLOT_INDEXED;
        if ((kind != 0) != is_live || kind > 2)
            return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u (state %u) has id kind %u", at, i, v, kind);
        if (kind == 0)
            continue;
        uint32_t other;
        if (kind == 1) {
            if (end - p < 8)
                return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: IDS ends inside slot %u", at, i);
            uint64_t num = g64(&p);
            if (num >= (UINT64_C(1) << 63) || sv_idmap_find_number(c->idmap, num, &other))
                return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has a bad or repeated id", at, i);
            st = sv_idmap_insert_number(c->idmap, num, i);
        } else {
            if (p >= end || *p == 0 || *p > SV_ID_MAX || end - p - 1 < *p)
                return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has a bad id length", at, i);
            size_t len = *p++;
            if (memchr(p, 0, len) || sv_idmap_find(c->idmap, (const char *)p, len, &other))
                return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has a bad or repeated id", at, i);
            st = sv_idmap_insert(c->idmap, (const char *)p, len, i);
            if (len > c->id_len_max)
                c->id_len_max = (uint32_t)len;
            p += len;
        }
        if (st != SV_OK)
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory loading ids");
    }
    if (p != end)
        return sv_fail(err, SV_ERR_CORRUPT, "offset %zu: IDS has %zu extra bytes", s.off, (size_t)(end - p));
    sv_idmap_set_counter(c->idmap, m->id_counter);

    seen = calloc((size_t)n / 8 + 1, 1);
    if (!seen)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory loading the snapshot");

    /* FREE: exactly the free slots, each once. */
    if ((st = next_section(r, SEC_FREE, &s, err)) != SV_OK)
        goto out;
    if (s.len != (size_t)m->n_free * 4) {
        st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: FREE of %zu bytes for %u slots", s.off, s.len, m->n_free);
        goto out;
    }
    for (uint32_t i = 0; i < m->n_free; i++) {
        uint32_t slot;
        memcpy(&slot, s.p + 4 * (size_t)i, 4);
        if (slot >= n || sv_graph_state(&c->graph, slot) != SV_SLOT_FREE || (seen[slot / 8] >> (slot % 8)) & 1) {
            st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: free slot %u is bad", s.off + 4 * (size_t)i, slot);
            goto out;
        }
        seen[slot / 8] |= (uint8_t)(1u << (slot % 8));
        c->free_slots[i] = slot;
    }
    c->n_free = m->n_free;

    /* BUFFER: exactly the buffered slots, each once, finite. */
    if ((st = next_section(r, SEC_BUFFER, &s, err)) != SV_OK)
        goto out;
    size_t row = 4 + (size_t)dim * sizeof(float);
    if (s.len % row != 0 || s.len / row != buffered) {
        st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: BUFFER of %zu bytes for %" PRIu64 " vectors", s.off, s.len, buffered);
        goto out;
    }
    if (sv_buffer_reserve(b, (size_t)buffered) != SV_OK) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory loading the write buffer");
        goto out;
    }
    for (size_t i = 0; i < buffered; i++) {
        const uint8_t *q = s.p + i * row;
        uint32_t slot;
        memcpy(&slot, q, 4);
        if (slot >= n || sv_graph_state(&c->graph, slot) != SV_SLOT_BUFFERED || (seen[slot / 8] >> (slot % 8)) & 1) {
            st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: buffered slot %u is bad", s.off + i * row, slot);
            goto out;
        }
        seen[slot / 8] |= (uint8_t)(1u << (slot % 8));
        float *dst = b->vecs + b->n * dim;
        memcpy(dst, q + 4, (size_t)dim * sizeof(float));
        for (uint32_t j = 0; j < dim; j++) {
            if (!isfinite(dst[j])) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: buffered vector of slot %u is not finite", s.off + i * row, slot);
                goto out;
            }
        }
        b->slots[b->n++] = slot;
    }

    /* PAYLOADS (optional): each entry a searchable slot's, at most once. */
    uint32_t tag = 0;
    if (r->len - r->off >= 4)
        memcpy(&tag, r->data + r->off, 4);
    if (tag == SEC_PAYLOADS) {
        if ((st = next_section(r, SEC_PAYLOADS, &s, err)) != SV_OK)
            goto out;
        memset(seen, 0, ((size_t)n + 7) / 8);
        for (size_t at = 0; at < s.len;) {
            uint32_t slot, plen;
            if (s.len - at < 8 || (memcpy(&slot, s.p + at, 4), memcpy(&plen, s.p + at + 4, 4), s.len - at - 8 < plen)) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: PAYLOADS entry runs past the section", s.off + at);
                goto out;
            }
            uint8_t state = slot < n ? sv_graph_state(&c->graph, slot) : SV_SLOT_FREE;
            if ((state != SV_SLOT_INDEXED && state != SV_SLOT_BUFFERED) || (seen[slot / 8] >> (slot % 8)) & 1) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: payload of slot %u, which holds no vector or has one",
                             s.off + at, slot);
                goto out;
            }
            seen[slot / 8] |= (uint8_t)(1u << (slot % 8));
            sv_payload *pl = NULL;
            void *mem = NULL;
            sv_error perr;
            if ((st = sv_payload_decode_batch(s.p + at + 8, plen, 1, &pl, &mem, &perr)) == SV_OK)
                st = sv_payloads_set(c->payloads, slot, pl, SV_PAYLOAD_REPLACE, &perr);
            free(mem);
            if (st != SV_OK) {
                st = sv_fail(err, st == SV_ERR_RESOURCE ? st : SV_ERR_CORRUPT, "offset %zu: payload of slot %u: %s",
                             s.off + at, slot, perr.message);
                goto out;
            }
            at += 8 + (size_t)plen;
        }
    }

    /* INDEXES (optional): built again over the payloads just read. */
    tag = 0;
    if (r->len - r->off >= 4)
        memcpy(&tag, r->data + r->off, 4);
    if (tag == SEC_INDEXES) {
        if ((st = next_section(r, SEC_INDEXES, &s, err)) != SV_OK)
            goto out;
        for (size_t at = 0; at < s.len;) {
            size_t klen = s.p[at];
            char key[SV_PAYLOAD_KEY_MAX + 1];
            if (klen == 0 || klen > SV_PAYLOAD_KEY_MAX || s.len - at - 1 < klen || memchr(s.p + at + 1, 0, klen)) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: INDEXES entry of %zu bytes", s.off + at, klen);
                goto out;
            }
            memcpy(key, s.p + at + 1, klen);
            key[klen] = '\0';
            sv_error ierr;
            if ((st = sv_payloads_index_key(c->payloads, key, &ierr)) != SV_OK) {
                st = sv_fail(err, st == SV_ERR_RESOURCE ? st : SV_ERR_CORRUPT, "offset %zu: index of \"%s\": %s",
                             s.off + at, key, ierr.message);
                goto out;
            }
            at += 1 + klen;
        }
    }

    /* CODES: straight into the store's chunks. */
    if ((st = next_section(r, SEC_CODES, &s, err)) != SV_OK)
        goto out;
    if (m->record_size != sv_store_record_size(c->store) ||
        s.len != (size_t)m->store_slots * m->record_size) {
        st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: CODES of %zu bytes for %u records", s.off, s.len, m->store_slots);
        goto out;
    }
    if (m->store_slots && m->storage == SV_STORAGE_INT8 && !sv_store_mean(c->store)) {
        for (uint32_t i = 0; i < m->store_slots; i++) {
            uint8_t v = sv_graph_state(&c->graph, i);
            if (v == SV_SLOT_INDEXED || v == SV_SLOT_DELETED) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: codes without a quantizer mean", s.off);
                goto out;
            }
        }
    }
    const uint8_t *src = s.p;
    uint32_t left = m->store_slots;
    for (uint32_t ci = 0; left > 0; ci++) {
        uint32_t per = 0;
        uint8_t *chunk = sv_store_chunk(c->store, ci, &per);
        uint32_t take = left < per ? left : per;
        memcpy(chunk, src, (size_t)take * m->record_size);
        src += (size_t)take * m->record_size;
        left -= take;
    }
    /* Records of graph nodes must hold finite numbers (distances use them). */
    for (uint32_t i = 0; i < m->store_slots; i++) {
        uint8_t v = sv_graph_state(&c->graph, i);
        if (v != SV_SLOT_INDEXED && v != SV_SLOT_DELETED)
            continue;
        const uint8_t *rec = sv_store_record(c->store, i);
        int finite = 1;
        if (m->storage == SV_STORAGE_INT8) {
            sv_qrec_header h = sv_quant_header(rec);
            finite = isfinite(h.lo) && isfinite(h.delta) && isfinite(h.norm);
        } else {
            for (uint32_t j = 0; j < dim && finite; j++) {
                float x;
                memcpy(&x, rec + 4 * (size_t)j, 4);
                finite = isfinite(x);
            }
        }
        if (!finite) {
            st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: the record of slot %u is not finite",
                      s.off + (size_t)i * m->record_size, i);
            goto out;
        }
    }

    /* EDGES: degree <= R, neighbours in the graph, no self-loops or repeats. */
    if ((st = next_section(r, SEC_EDGES, &s, err)) != SV_OK)
        goto out;
    p = s.p;
    end = s.p + s.len;
    for (uint32_t i = 0; i < n; i++) {
        size_t at = s.off + (size_t)(p - s.p);
        if (p >= end) {
            st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: EDGES ends at slot %u", at, i);
            goto out;
        }
        uint32_t count = *p++;
        uint8_t v = sv_graph_state(&c->graph, i);
        int node = v == SV_SLOT_INDEXED || v == SV_SLOT_DELETED;
        /* Up to the inserts' slack: a list a flush could not tighten (out of
         * memory) is valid, and snapshots written so stay loadable. */
        if (count > sv_graph_max_degree(&c->graph) || (count && !node) || (size_t)(end - p) < (size_t)count * 4) {
            st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has a bad degree %u", at, i, count);
            goto out;
        }
        uint32_t ids[SV_R_MAX];
        memcpy(ids, p, (size_t)count * 4);
        p += (size_t)count * 4;
        for (uint32_t a = 0; a < count; a++) {
            uint8_t nv = ids[a] < n ? sv_graph_state(&c->graph, ids[a]) : SV_SLOT_FREE;
            int bad = ids[a] == i || (nv != SV_SLOT_INDEXED && nv != SV_SLOT_DELETED);
            for (uint32_t b2 = 0; b2 < a && !bad; b2++)
                bad = ids[b2] == ids[a];
            if (bad) {
                st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: slot %u has a bad neighbour %u", at, i, ids[a]);
                goto out;
            }
        }
        if (count) {
            sv_edges_lock(c->edges, i);
            st = sv_edges_set(c->edges, i, ids, count);
            sv_edges_unlock(c->edges, i);
            if (st != SV_OK) {
                st = sv_fail(err, SV_ERR_RESOURCE, "out of memory loading edges");
                goto out;
            }
        }
    }
    if (p != end) {
        st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: EDGES has %zu extra bytes", s.off, (size_t)(end - p));
        goto out;
    }
    sv_edges_reclaim(c->edges);

    if ((st = next_section(r, SEC_END, &s, err)) != SV_OK)
        goto out;
    if (s.len != 0 || r->off != r->len) {
        st = sv_fail(err, SV_ERR_CORRUPT, "offset %zu: %zu bytes after the END section", r->off, r->len - r->off);
        goto out;
    }
    atomic_store(&c->graph.entry, m->entry);
    c->next_slot = n;
    c->n_live = m->n_live;
    c->n_tombstones = m->n_tombstones;
    c->rng = m->rng;
out:
    free(seen);
    return st;
}

sv_status sv_snapshot_load(const uint8_t *data, size_t len, const sv_params *expect,
                           sv_collection **out, uint64_t *lsn, sv_error *err)
{
    *out = NULL;
    uint64_t salt = 0;
    sv_status st = sv_file_header_decode(data, len, MAGIC, VERSION, VERSION, "snapshot", NULL, lsn, &salt, err);
    if (st == SV_OK && salt != 0)
        st = sv_fail(err, SV_ERR_CORRUPT, "offset 0: snapshot header has nonzero reserved bytes");
    if (st != SV_OK)
        return st;

    reader r = {data, len, SV_FILE_HEADER};
    section s;
    meta m = {0};
    st = next_section(&r, SEC_META, &s, err);
    if (st == SV_OK)
        st = parse_meta(&s, expect, len, &m, err);
    if (st != SV_OK)
        return st;
    sv_collection *c = NULL;
    if ((st = sv_collection_create(expect, &c, err)) != SV_OK)
        return st;
    c->manual_flush = 1;
    if ((st = load_sections(c, &r, &m, err)) != SV_OK) {
        sv_collection_free(c);
        return st;
    }
    /* The lists went into slabs that grew as they came: pack them back to
     * back, as a running collection keeps them (a restart must not change
     * bytes per vector). Out of memory: they stay as loaded. */
    sv_edges_repack(c->edges, c->next_slot, 0);
    *out = c;
    return sv_ok(err);
}
