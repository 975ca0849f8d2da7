/* The JetStream log backend (see natslog.h). */
#include "natslog.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

#define NAME_MAX_LEN 200
#define POLL_RECORDS 256 /* the most one read without a wait takes */
#define LAST_FRESH_SECONDS 0.5 /* sv_log_last asks the stream at most this often */

/*
 * Locks: natslog.mu (the read subscription, the cached stream bounds,
 * stats) is never held across a call into the log's visitor or the mark
 * hook.
 */
struct svc_nats {
    natsConnection *nc;
    jsCtx *js;
    int64_t timeout_ms;
};

typedef struct natslog {
    sv_log log;
    svc_nats *n;
    char stream[NAME_MAX_LEN + 8];
    char subject[NAME_MAX_LEN + 8];
    int replicas;
    uint64_t keep_before;
    char name[NAME_MAX_LEN + 1];
    sv_status (*mark)(void *ctx, const char *name, uint64_t lsn, uint64_t *lowest, sv_error *err);
    void *mark_ctx;        /* mark NULL: no purge */
    pthread_mutex_t mu;
    natsSubscription *sub; /* the ordered consumer read() follows */
    natsMsg *held;         /* its record a visitor could not take yet (LSN next) */
    uint64_t next;         /* the LSN it delivers next */
    double bounds_at;      /* when first/last were read from the stream (mu) */
    uint64_t first, last;  /* the stream's bounds when last asked */
    uint64_t appends, bytes, dups;
    double append_seconds;
} natslog;

/* A NATS failure as our status: the log could not be reached or did not
 * answer (gRPC UNAVAILABLE); nothing was acknowledged. */
static sv_status nats_fail(sv_error *err, natsStatus s, jsErrCode jerr, const char *what, const char *stream)
{
    const char *last = nats_GetLastError(NULL);
    return sv_fail(err, s == NATS_MAX_PAYLOAD ? SV_ERR_RESOURCE : SV_ERR_IO,
                   "the log (stream %s) %s: %s (%s%s, JetStream error %d)", stream, what, natsStatus_GetText(s),
                   last && *last ? "" : "no detail", last && *last ? last : "", (int)jerr);
}

/* ---- the connection ---------------------------------------------------------- */

static void connected_later(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure; /* the library keeps retrying; nothing to do when it succeeds */
}

sv_status svc_nats_connect(const svc_nats_config *cfg, svc_nats **out, sv_error *err)
{
    *out = NULL;
    svc_nats *n = calloc(1, sizeof *n);
    char *urls = cfg->urls ? strdup(cfg->urls) : NULL;
    const char *list[32];
    int count = 0, secure = cfg->ca_file || cfg->cert_file;
    natsOptions *o = NULL;
    natsStatus s = NATS_NO_MEMORY;
    sv_status st;
    if (!n || !urls) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory connecting to NATS");
        goto cleanup;
    }
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u && count < 32; u = strtok_r(NULL, ",", &save)) {
        list[count++] = u;
        secure |= strncmp(u, "tls://", 6) == 0;
    }
    if (!count) {
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "no NATS URL given");
        goto cleanup;
    }
    n->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
    if ((s = natsOptions_Create(&o)) != NATS_OK || (s = natsOptions_SetServers(o, list, count)) != NATS_OK ||
        (s = natsOptions_SetTimeout(o, n->timeout_ms)) != NATS_OK ||
        (s = natsOptions_SetMaxReconnect(o, -1)) != NATS_OK ||
        (s = natsOptions_SetReconnectWait(o, 200)) != NATS_OK ||
        (s = natsOptions_SetPingInterval(o, 2000)) != NATS_OK ||
        (s = natsOptions_SetRetryOnFailedConnect(o, true, connected_later, NULL)) != NATS_OK)
        goto nats_error;
    if (secure && (s = natsOptions_SetSecure(o, true)) != NATS_OK)
        goto nats_error;
    if (cfg->ca_file && (s = natsOptions_LoadCATrustedCertificates(o, cfg->ca_file)) != NATS_OK)
        goto nats_error;
    if (cfg->cert_file && (s = natsOptions_LoadCertificatesChain(o, cfg->cert_file, cfg->key_file)) != NATS_OK)
        goto nats_error;
    if (cfg->token && (s = natsOptions_SetToken(o, cfg->token)) != NATS_OK)
        goto nats_error;
    s = natsConnection_Connect(&n->nc, o);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
        goto nats_error;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = n->timeout_ms;
    if ((s = natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK)
        goto nats_error;
    natsOptions_Destroy(o);
    free(urls);
    *out = n;
    return sv_ok(err);
nats_error:
    st = sv_fail(err, s == NATS_NO_MEMORY ? SV_ERR_RESOURCE : SV_ERR_INVALID_ARGUMENT, "NATS at %s: %s (%s)",
                 cfg->urls ? cfg->urls : "", natsStatus_GetText(s), nats_GetLastError(NULL));
cleanup:
    natsOptions_Destroy(o);
    svc_nats_free(n);
    free(urls);
    return st;
}

int svc_nats_connected(svc_nats *n)
{
    return n && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

void svc_nats_free(svc_nats *n)
{
    if (!n)
        return;
    jsCtx_Destroy(n->js);
    if (n->nc) {
        natsConnection_Close(n->nc);
        natsConnection_Destroy(n->nc);
    }
    free(n);
}

/* ---- the stream's bounds ------------------------------------------------------ */

/* Requests about a stream (create, info) answer in milliseconds or not at
 * all: when several pods create the same stream at once NATS 2.9 can leave
 * one of them unanswered. A short wait, and the callers ask again. */
static void admin_options(svc_nats *n, jsOptions *o)
{
    jsOptions_Init(o);
    o->Wait = n->timeout_ms < 1000 ? n->timeout_ms : 1000;
}

/* Ask the stream for its first and last sequence; 0 and the cache stays
 * when it cannot be reached. */
static int refresh_bounds(natslog *l, sv_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions admin;
    admin_options(l->n, &admin);
    natsStatus s = js_GetStreamInfo(&si, l->n->js, l->stream, &admin, &jerr);
    if (s != NATS_OK || !si) {
        if (err)
            nats_fail(err, s, jerr, "cannot be reached", l->stream);
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    l->first = si->State.FirstSeq;
    l->last = si->State.LastSeq;
    l->bounds_at = sv_now_seconds();
    pthread_mutex_unlock(&l->mu);
    jsStreamInfo_Destroy(si);
    return 1;
}

static int nl_covers(void *impl, uint64_t after, char *why, size_t cap)
{
    natslog *l = impl;
    /* Out of reach (a stream leader being elected): not "purged". Say yes
     * and let the read tell: it fails SV_ERR_IO while the stream is away,
     * and SV_ERR_CORRUPT ("purged") only when records really are gone. A
     * "no" here would make a replica give up a good copy (registry.c sets
     * copies the stream does not cover aside). */
    if (!refresh_bounds(l, NULL))
        return 1;
    pthread_mutex_lock(&l->mu);
    uint64_t first = l->first;
    pthread_mutex_unlock(&l->mu);
    /* A purge below sequence q leaves first = q (also when the stream is
     * empty after it): the records after `after` are all there when the
     * first one kept is at most after + 1. */
    if (first > after + 1) {
        snprintf(why, cap,
                 "the stream %s starts at LSN %" PRIu64 " and no snapshot holds the LSNs before it (%" PRIu64
                 " to %" PRIu64 ", purged)",
                 l->stream, first, after + 1, first - 1);
        return 0;
    }
    return 1;
}

static uint64_t nl_last(void *impl)
{
    natslog *l = impl;
    /* Asked often (each scrape, each status call, the applier's lag): the
     * stream is asked at most every LAST_FRESH_SECONDS, the answer in
     * between is the cached one (appends move it too). */
    pthread_mutex_lock(&l->mu);
    int fresh = sv_now_seconds() - l->bounds_at < LAST_FRESH_SECONDS;
    pthread_mutex_unlock(&l->mu);
    if (!fresh)
        refresh_bounds(l, NULL);
    pthread_mutex_lock(&l->mu);
    uint64_t last = l->last;
    pthread_mutex_unlock(&l->mu);
    return last;
}

/* ---- writing -------------------------------------------------------------------- */

static sv_status nl_append(void *impl, uint32_t type, const char *key, const struct iovec *parts, int n_parts,
                           uint64_t *lsn, int *duplicate, sv_error *err)
{
    natslog *l = impl;
    size_t len = 4;
    for (int i = 0; i < n_parts; i++)
        len += parts[i].iov_len;
    if (len > INT32_MAX)
        return sv_fail(err, SV_ERR_RESOURCE, "a record of %zu bytes", len);
    uint8_t *msg = malloc(len);
    if (!msg)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory appending %zu bytes", len);
    uint8_t t[4] = {(uint8_t)type, (uint8_t)(type >> 8), (uint8_t)(type >> 16), (uint8_t)(type >> 24)};
    memcpy(msg, t, 4);
    size_t off = 4;
    for (int i = 0; i < n_parts; i++) {
        memcpy(msg + off, parts[i].iov_base, parts[i].iov_len);
        off += parts[i].iov_len;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = key;
    po.ExpectStream = l->stream;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    double t0 = sv_now_seconds();
    natsStatus s;
    /* "No responders": the stream has no leader this moment (just created,
     * or an election after a server died). The same message id makes
     * sending again safe; keep at it until the timeout. */
    for (;;) {
        jerr = 0;
        s = js_Publish(&pa, l->n->js, l->subject, msg, (int)len, &po, &jerr);
        if (s != NATS_NO_RESPONDERS || sv_now_seconds() - t0 > (double)l->n->timeout_ms / 1000.0)
            break;
        usleep(50000);
    }
    double dt = sv_now_seconds() - t0;
    free(msg);
    if (s != NATS_OK || !pa) {
        sv_status st = nats_fail(err, s, jerr, "did not acknowledge the append", l->stream);
        jsPubAck_Destroy(pa);
        return st;
    }
    *lsn = pa->Sequence;
    if (duplicate)
        *duplicate = pa->Duplicate;
    pthread_mutex_lock(&l->mu);
    l->appends++;
    l->bytes += len;
    l->dups += pa->Duplicate ? 1 : 0;
    l->append_seconds += dt;
    if (pa->Sequence > l->last)
        l->last = pa->Sequence;
    pthread_mutex_unlock(&l->mu);
    jsPubAck_Destroy(pa);
    return sv_ok(err);
}

/* The publish's acknowledgement came from the stream's quorum: nothing to
 * wait for. */
static sv_status nl_sync(void *impl, uint64_t lsn, sv_error *err)
{
    (void)impl;
    (void)lsn;
    return sv_ok(err);
}

static sv_status nl_seal(void *impl, uint64_t *last_lsn, sv_error *err)
{
    natslog *l = impl;
    *last_lsn = nl_last(l);
    return sv_ok(err);
}

static sv_status nl_begin(void *impl, uint64_t floor, sv_error *err)
{
    (void)impl;
    (void)floor; /* a follower never appends: the stream numbers the records */
    return sv_ok(err);
}

/* ---- snapshots and the purge ----------------------------------------------------- */

static void nl_release(void *impl, uint64_t lsn)
{
    natslog *l = impl;
    if (!l->mark)
        return;
    /* Purge below the lowest mark, once every replica has one. */
    uint64_t low = 0;
    sv_error err;
    if (l->mark(l->mark_ctx, l->name, lsn, &low, &err) != SV_OK)
        return; /* the next snapshot tries again; nothing is purged without it */
    if (!low || low <= l->keep_before)
        return;
    low -= l->keep_before;
    refresh_bounds(l, NULL);
    pthread_mutex_lock(&l->mu);
    uint64_t first = l->first;
    pthread_mutex_unlock(&l->mu);
    if (low + 1 <= first)
        return;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Purge.Sequence = low + 1; /* up to, not including */
    jsErrCode jerr = 0;
    js_PurgeStream(l->n->js, l->stream, &jo, &jerr);
}

/* ---- reading ---------------------------------------------------------------------- */

static void drop_sub(natslog *l)
{
    if (l->held) {
        natsMsg_Destroy(l->held);
        l->held = NULL;
    }
    if (l->sub) {
        natsSubscription_Unsubscribe(l->sub);
        natsSubscription_Destroy(l->sub);
        l->sub = NULL;
    }
}

static sv_status subscribe_from(natslog *l, uint64_t start, sv_error *err)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = l->n->timeout_ms;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = l->stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = start;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&l->sub, l->n->js, l->subject, &jo, &so, &jerr);
    if (s != NATS_OK) {
        l->sub = NULL;
        return nats_fail(err, s, jerr, "cannot be read", l->stream);
    }
    l->next = start;
    return sv_ok(err);
}

/*
 * Read by an ordered consumer kept between calls: a call that continues
 * where the last one stopped goes on with it; any other starts a new one
 * at after + 1. The call returns when it read through the stream's end as
 * it was at the start (wait_ms > 0) or what the consumer had delivered
 * (wait_ms 0: a poll), when no record comes within the wait, or at a
 * failure.
 */
static sv_status nl_read(void *impl, uint64_t after, uint32_t wait_ms, sv_log_visit visit, void *ctx,
                         uint64_t *last_read, sv_error *err)
{
    natslog *l = impl;
    if (last_read)
        *last_read = after;
    sv_status st = SV_OK;
    pthread_mutex_lock(&l->mu);
    if (l->sub && l->next != after + 1)
        drop_sub(l); /* also the record held back */
    if (!l->sub)
        st = subscribe_from(l, after + 1, err);
    natsSubscription *sub = l->sub;
    pthread_mutex_unlock(&l->mu);
    if (st != SV_OK)
        return st;
    /* With a wait, the call reads through the stream's end as it is now
     * (one request for it), waiting for records on their way; without, it
     * takes what has come, at most POLL_RECORDS of it (a poll: a busy
     * stream does not keep its reader from the others). */
    uint64_t target = 0;
    if (wait_ms && refresh_bounds(l, NULL)) {
        pthread_mutex_lock(&l->mu);
        target = l->last;
        pthread_mutex_unlock(&l->mu);
    }
    /* Only this thread reads (one follower per log); mu is not held while
     * the visitor runs. */
    int64_t wait = target > after ? l->n->timeout_ms : wait_ms;
    for (unsigned n = 0; wait_ms || n < POLL_RECORDS; n++) {
        natsMsg *m = l->held; /* a record a visitor could not take last time */
        l->held = NULL;
        if (!m) {
            natsStatus s = natsSubscription_NextMsg(&m, sub, wait);
            if (s == NATS_TIMEOUT)
                break;
            if (s != NATS_OK) {
                st = nats_fail(err, s, 0, "stopped delivering", l->stream);
                break;
            }
        }
        jsMsgMetaData *meta = NULL;
        if (natsMsg_GetMetaData(&meta, m) != NATS_OK || !meta) {
            natsMsg_Destroy(m);
            continue; /* not a stream message (the consumer's own traffic) */
        }
        uint64_t seq = meta->Sequence.Stream, pending = meta->NumPending;
        jsMsgMetaData_Destroy(meta);
        const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
        int len = natsMsg_GetDataLength(m);
        int damaged = 1;
        if (seq != l->next) {
            st = sv_fail(err, SV_ERR_CORRUPT,
                         "the stream %s delivered LSN %" PRIu64 " where %" PRIu64
                         " was next: the records between were purged or lost",
                         l->stream, seq, l->next);
        } else if (len < 4 || !data) {
            st = sv_fail(err, SV_ERR_CORRUPT, "the stream %s: LSN %" PRIu64 " is %d bytes, not a record",
                         l->stream, seq, len);
        } else {
            uint32_t type = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                            (uint32_t)data[3] << 24;
            st = visit(ctx, type, seq, data + 4, (size_t)len - 4, err);
            damaged = 0;
        }
        if (st != SV_OK && !damaged) {
            /* The visitor could not take it now (a full buffer, memory):
             * it comes first at the next read, from the same consumer. */
            l->held = m;
            break;
        }
        natsMsg_Destroy(m);
        if (st != SV_OK)
            break;
        l->next = seq + 1;
        if (last_read)
            *last_read = seq;
        /* Caught up with the stream as it was when this one was sent (and
         * past the end asked for): take what has come since without
         * waiting, then stop. */
        wait = pending == 0 && seq >= target ? 0 : l->n->timeout_ms;
    }
    if (st != SV_OK && !l->held) {
        /* A damaged or missing record, or the connection: the next read
         * starts a new consumer where it stands. */
        pthread_mutex_lock(&l->mu);
        drop_sub(l);
        pthread_mutex_unlock(&l->mu);
    }
    return st;
}

static void nl_stats(void *impl, sv_log_stats *out)
{
    natslog *l = impl;
    pthread_mutex_lock(&l->mu);
    *out = (sv_log_stats){.next_lsn = l->last + 1, .bytes = 0, .total_bytes = l->bytes, .syncs = l->appends,
                          .sync_seconds = l->append_seconds};
    pthread_mutex_unlock(&l->mu);
}

static void nl_close(void *impl)
{
    natslog *l = impl;
    drop_sub(l);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* sync_force NULL: a quorum's commit is the only durability there is. */
static const sv_log_ops NATS_OPS = {nl_append, nl_sync, nl_seal,  nl_release, nl_read,
                                    nl_covers, nl_last, nl_begin, nl_stats,   nl_close,
                                    NULL};

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

sv_status svc_natslog_open(svc_nats *n, const svc_natslog_config *cfg, sv_log **out, sv_error *err)
{
    *out = NULL;
    if (!name_ok(cfg->name))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "a log name of [A-Za-z0-9_-], at most %d bytes: %s",
                       NAME_MAX_LEN, cfg->name);
    if (cfg->replicas < 1 || cfg->replicas > 5)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "%d stream replicas (1..5)", cfg->replicas);
    natslog *l = calloc(1, sizeof *l);
    if (!l)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory opening a log");
    l->log = (sv_log){&NATS_OPS, l};
    l->n = n;
    l->replicas = cfg->replicas;
    l->keep_before = cfg->keep_before;
    pthread_mutex_init(&l->mu, NULL);
    snprintf(l->stream, sizeof l->stream, "SV_%s", cfg->name);
    snprintf(l->subject, sizeof l->subject, "sv.%s", cfg->name);
    sv_status st = SV_OK;
    snprintf(l->name, sizeof l->name, "%s", cfg->name);
    l->mark = cfg->mark;
    l->mark_ctx = cfg->mark_ctx;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {l->subject};
    sc.Name = l->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = cfg->replicas;
    sc.Duplicates = (cfg->dup_window_ms > 0 ? cfg->dup_window_ms : 120000) * 1000000; /* ns */
    /* Adding a stream that exists with the same configuration answers with
     * it (the meta leader answers, not the stream's own leader, which may
     * be in an election); one that exists otherwise is asked for. */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions admin;
    admin_options(n, &admin);
    natsStatus s;
    if (cfg->create) {
        s = js_AddStream(&si, n->js, &sc, &admin, &jerr);
        if (s != NATS_OK && jerr == JSStreamNameExistErr) {
            jerr = 0;
            s = js_GetStreamInfo(&si, n->js, l->stream, &admin, &jerr);
        }
    } else {
        s = js_GetStreamInfo(&si, n->js, l->stream, &admin, &jerr);
        if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
            jsStreamInfo_Destroy(si);
            nl_close(l);
            return sv_fail(err, SV_ERR_NOT_FOUND, "the stream SV_%s does not exist (its collection was dropped)",
                           cfg->name);
        }
    }
    if (s != NATS_OK || !si) {
        st = nats_fail(err, s, jerr, "cannot be opened", l->stream);
        jsStreamInfo_Destroy(si);
        nl_close(l);
        return st;
    }
    l->first = si->State.FirstSeq;
    l->last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    *out = &l->log;
    return sv_ok(err);
}

sv_status svc_natslog_delete(svc_nats *n, const char *name, sv_error *err)
{
    char stream[NAME_MAX_LEN + 8];
    snprintf(stream, sizeof stream, "SV_%s", name);
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(n->js, stream, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND)
        return nats_fail(err, s, jerr, "cannot be deleted", stream);
    return sv_ok(err);
}
