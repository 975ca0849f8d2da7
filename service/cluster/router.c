/*
 * The router: the public methods in cluster mode, and the methods the pods
 * call on each other (SlimVecShard).
 *
 * Writes (Ingest, Delete) are split by shard (follow.h routes ids) and
 * appended to each shard's stream; the stream's acknowledgement is the
 * write's. A batch that gives its own ids (which another write may hold)
 * and every delete then wait for a replica of each shard to say how the
 * record applied (SlimVecShard/Applied): a refusal is the same on every
 * replica, so the client hears it as it would from a single node.
 * Reads (Search, Get) go to one replica of every shard at once (fanout.h:
 * retried on the sibling, hedged after a delay) and are merged.
 * Create and Drop go through the catalog's stream. A handler waiting for
 * any of these holds no thread: it defers, and the fan-out or the applier
 * wakes it.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "call.h"
#include "crc32c.h"
#include "snapshot.h"
#include "cluster.h"
#include "error.h"
#include "follow.h"
#include "handlers_impl.h"
#include "logrec.h"
#include "maintenance.h"
#include "payload.h"
#include "payload_pb.h"
#include "pcodec.h"

#define INTERNAL_TIMEOUT 30.0 /* seconds, for calls that came with no deadline */
/* The most payload one log record carries. Fixed, not the NATS servers'
 * limit (1 MiB by default; it must not be set lower): a resend through any
 * pod splits a batch into the same records, so their keys match. */
#define RECORD_BYTES (512 * 1024)
#define STALE_RESTARTS 3      /* a read starts over this often after a stale map */
#define SHARD_MD "slimvec-shard" /* "<shard>@<epoch>" on every call between pods */
#define SHARD_METHOD(name) "/slimvec.v1.SlimVecShard/" name
#define PUBLIC(name) "/slimvec.v1.SlimVec/" name
#define CLUSTER_METHOD(name) "/slimvec.v1.SlimVecCluster/" name

static double deadline_of(svd_ctx *ctx)
{
    return isfinite(ctx->deadline) ? ctx->deadline : sv_now_seconds() + INTERNAL_TIMEOUT;
}

/*
 * A call that came with no deadline waits INTERNAL_TIMEOUT at most for what
 * it defers on (a record to apply, a collection to appear): 1 and
 * DEADLINE_EXCEEDED when it did. *since is the call's own clock (0 at its
 * first run).
 */
static int waited_out(svd_ctx *ctx, double *since, svd_reply *r)
{
    double now = sv_now_seconds();
    if (*since == 0)
        *since = now;
    if (isfinite(ctx->deadline) || now - *since <= INTERNAL_TIMEOUT)
        return 0;
    svd_reply_error(r, GRPC_STATUS_DEADLINE_EXCEEDED,
                    "waited %.0f s (the call has no deadline of its own) for the cluster to catch up", now - *since);
    return 1;
}

/* Start one call per part to the replicas of parts' shards, with the
 * caller's credentials. NULL: out of memory (r says so). */
/* Part i of n to shard shards[i] through targets[i] (n_targets[i] of them,
 * from the map of epochs[i]). NULL and an out-of-memory reply on failure. */
static svc_fanout_op *fan_out_to(svc_cluster *cl, svd_ctx *ctx, const char *path, size_t n,
                                 grpc_byte_buffer *const *reqs, const uint32_t *shards,
                                 grpc_channel *const (*targets)[SVC_FANOUT_TARGETS], const int *n_targets,
                                 const uint64_t *epochs, double deadline, svd_reply *r)
{
    char (*where)[48] = calloc(n ? n : 1, sizeof *where);
    const char **values = calloc(n ? n : 1, sizeof *values);
    svc_fanout_op *op = NULL;
    if (where && values) {
        /* Each part says which shard it means, by which map's epoch: a pod
         * that no longer serves it refuses (svc_cluster_check_shard). */
        for (size_t i = 0; i < n; i++) {
            snprintf(where[i], sizeof where[i], "%u@%" PRIu64, shards[i], epochs[i]);
            values[i] = where[i];
        }
        grpc_metadata md[1];
        size_t n_md = 0;
        if (ctx->authorization) {
            md[0].key = grpc_slice_from_static_string("authorization");
            md[0].value = *ctx->authorization;
            n_md = 1;
        }
        op = svc_fanout_start(svc_cluster_fanout(cl), path, n, reqs, targets, n_targets, md, n_md, SHARD_MD, values,
                              deadline);
    }
    free(where);
    free(values);
    if (!op)
        svd_reply_oom(r);
    return op;
}

/* Part i of n to a replica of shard shards[i] (the live ones first). */
static svc_fanout_op *fan_out(svc_cluster *cl, svd_ctx *ctx, const char *path, size_t n,
                              grpc_byte_buffer *const *reqs, const uint32_t *shards, double deadline, svd_reply *r)
{
    grpc_channel *(*targets)[SVC_FANOUT_TARGETS] = calloc(n ? n : 1, sizeof *targets);
    int *n_targets = calloc(n ? n : 1, sizeof *n_targets);
    uint64_t *epochs = calloc(n ? n : 1, sizeof *epochs);
    svc_fanout_op *op = NULL;
    if (targets && n_targets && epochs) {
        for (size_t i = 0; i < n; i++)
            n_targets[i] = svc_cluster_targets(cl, shards[i], targets[i], NULL, &epochs[i]);
        op = fan_out_to(cl, ctx, path, n, reqs, shards, (grpc_channel *const (*)[SVC_FANOUT_TARGETS])targets,
                        n_targets, epochs, deadline, r);
    } else {
        svd_reply_oom(r);
    }
    free(targets);
    free(n_targets);
    free(epochs);
    return op;
}

/* A replica refused the part: by its map it does not serve the shard. */
static int stale(const svc_part_result *pr)
{
    return pr->code == GRPC_STATUS_ABORTED && strstr(pr->message, "stale shard map") != NULL;
}

/* A part's failure as the reply ("shard 1: ..."). */
static void part_error(svc_cluster *cl, svd_reply *r, uint32_t shard, const svc_part_result *pr)
{
    if (stale(pr))
        svc_cluster_map_stale(cl); /* read the map again: the next call goes where the shard is */
    svd_reply_error(r, pr->code, "shard %u: %s", shard, pr->message);
}

/*
 * The collection named, as svd_lookup; but a name this pod does not hold
 * while the catalog has it (its copy is being made) or while its catalog
 * may be behind etcd (created through another pod a moment ago) defers the
 * call until it caught up, so every pod answers as soon as any pod
 * acknowledged the create.
 */
static svd_coll *lookup(svd_app *app, svd_ctx *ctx, svd_role role, const char *name, double *since, svd_reply *r)
{
    svd_reply probe = {.code = GRPC_STATUS_OK};
    svd_coll *c = svd_lookup(app, ctx, role, name, &probe);
    if (c)
        return c;
    svc_catalog_entry e;
    if (probe.code == GRPC_STATUS_NOT_FOUND && !waited_out(ctx, since, r) &&
        (svc_catalog_find(svc_cluster_catalog(app->cluster), name, &e) ||
         svc_cluster_catalog_behind(app->cluster, *since))) {
        r->defer = 1;
        return NULL;
    }
    if (r->code != GRPC_STATUS_OK)
        return NULL; /* waited out */
    r->code = probe.code;
    memcpy(r->message, probe.message, sizeof r->message);
    return NULL;
}

/*
 * The collection as the cluster's catalog has it (a router needs no copy
 * of its own: a pod that serves no shard routes too), if the caller may
 * act with role on it. A name the catalog lacks while it may be behind
 * etcd defers the call (as lookup). 0 when there is no such collection
 * (r says so) or the call deferred.
 */
static int route_lookup(svd_app *app, svd_ctx *ctx, svd_role role, const char *name, double *since,
                        svc_catalog_entry *out, svd_reply *r)
{
    if (!svd_field_ok(name, "the collection name", SIZE_MAX, r) || !svd_allowed(ctx, role, name, r))
        return 0;
    if (svc_catalog_find(svc_cluster_catalog(app->cluster), name, out))
        return 1;
    if (!waited_out(ctx, since, r) && svc_cluster_catalog_behind(app->cluster, *since)) {
        r->defer = 1;
        return 0;
    }
    if (r->code == GRPC_STATUS_OK)
        svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "collection \"%.64s\" not found", name);
    return 0;
}

/* ---- write path -------------------------------------------------------------------------------- */

/* Where each record of a write went. */
typedef struct rec_pos {
    uint32_t shard;
    uint64_t lsn;
    uint64_t first;  /* the LSN whose ids it has: lsn, or the first copy's when it was sent twice */
    int ask;         /* its outcome is waited for */
} rec_pos;

/* A batch id: what the client gave (printable ASCII, at most 64 bytes), or
 * a fresh random one. 0 and an error reply when the given one is not. */
static int batch_key(const char *given, char *out, size_t cap, svd_reply *r)
{
    if (given && *given) {
        size_t len = strlen(given);
        if (len > 64) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "batch_id is longer than 64 bytes");
            return 0;
        }
        for (size_t i = 0; i < len; i++)
            if (given[i] < 0x21 || given[i] > 0x7e) {
                svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                                "batch_id must be printable ASCII without spaces (byte %zu is not)", i);
                return 0;
            }
        snprintf(out, cap, "%s", given);
        return 1;
    }
    uint8_t raw[12];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, cap, raw, sizeof raw);
    return 1;
}

/* Append one record to the shard's stream; 0 and an error reply on failure. */
static int append_record(svc_cluster *cl, const svc_catalog_entry *c, uint32_t shard, uint32_t type, const char *key,
                         const struct iovec *parts, int n_parts, uint64_t *lsn, svd_reply *r)
{
    sv_log *log = NULL;
    sv_error err;
    sv_status st = svc_cluster_shard_log(cl, c->incarnation, shard, 0, &log, &err);
    double t0 = sv_now_seconds();
    int dup = 0;
    /* The key goes into the record too: the replicas catch a resend the
     * log's own de-duplication let through (follow.h). */
    size_t klen = strlen(key);
    uint8_t head[1 + SV_FOLLOW_KEY_MAX + 4];
    struct iovec all[4];
    if (klen < 1 || klen > SV_FOLLOW_KEY_MAX || n_parts > 3) {
        svd_reply_error(r, GRPC_STATUS_INTERNAL, "a record key of %zu bytes", klen);
        return 0;
    }
    head[0] = (uint8_t)klen;
    memcpy(head + 1, key, klen);
    memcpy(head + 1 + klen, &type, 4);
    all[0] = (struct iovec){head, 1 + klen + 4};
    for (int i = 0; i < n_parts; i++)
        all[i + 1] = parts[i];
    if (st == SV_OK)
        st = sv_log_append_keyed(log, SV_WAL_KEYED, key, all, n_parts + 1, lsn, &dup, &err);
    svc_cluster_note_append(cl, st == SV_OK, sv_now_seconds() - t0);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "shard %u: %s", shard, err.message);
        return 0;
    }
    return 1;
}

/* A write's state across its deferrals: the records written, then the
 * replicas' word on how they applied. */
/*
 * A call's state across its deferrals starts with this head: `replied`
 * says the last message was answered, so the next run (a stream's next
 * message) starts afresh; `reset` empties the rest.
 */
typedef struct state_head {
    int replied;
    int restarts;               /* times the call started over after a stale map */
    void (*reset)(void *state);
} state_head;

/* The call's state (made at its first run; reset after each answer); NULL
 * and an out-of-memory reply when it cannot be made. */
static void *state_of(void **state, size_t size, void (*reset)(void *), svd_reply *r)
{
    state_head *h = *state;
    if (!h) {
        if (!(h = *state = calloc(1, size))) {
            svd_reply_oom(r);
            return NULL;
        }
        h->reset = reset;
    }
    if (h->replied) {
        h->reset(h);
        h->restarts = 0;
    }
    return h;
}

static void state_end(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    state_head *h = state;
    if (h) {
        h->reset(h);
        free(h);
    }
}

/* Zero everything after the head. */
static void clear_after_head(void *state, size_t size)
{
    memset((char *)state + sizeof(state_head), 0, size - sizeof(state_head));
    ((state_head *)state)->replied = 0;
}

typedef struct write_state {
    state_head head;
    int waiting;           /* records written; outcomes asked */
    rec_pos *recs;
    size_t n_recs;
    uint32_t *rec_of;      /* ingest: each vector's record */
    uint32_t *pos_in_rec;  /* and its place in it */
    size_t n;
    grpc_status_code code; /* a failure while writing (the reply says what got in) */
    char message[512];
    svc_fanout_op *op;
    size_t *asked;         /* the records whose outcome the fan-out asks */
    size_t n_asked;
    double since;          /* waited_out's clock */
    uint64_t incarnation;  /* of the collection written */
} write_state;

static void write_reset(void *state)
{
    write_state *w = state;
    svc_fanout_release(w->op);
    free(w->recs);
    free(w->rec_of);
    free(w->pos_in_rec);
    free(w->asked);
    clear_after_head(w, sizeof *w);
}

static write_state *write_state_of(void **state, svd_reply *r)
{
    return state_of(state, sizeof(write_state), write_reset, r);
}

static int add_rec(write_state *w, uint32_t shard, uint64_t lsn, int ask)
{
    rec_pos *t = realloc(w->recs, (w->n_recs + 1) * sizeof *t);
    if (!t)
        return 0;
    w->recs = t;
    w->recs[w->n_recs++] = (rec_pos){shard, lsn, lsn, ask};
    return 1;
}

/* Ask a replica of each record's shard how it applied (the records marked
 * `ask`). 0 when nothing is to be asked. */
static int ask_outcomes(svc_cluster *cl, svd_ctx *ctx, const char *collection, write_state *w, svd_reply *r)
{
    size_t n = 0;
    w->asked = calloc(w->n_recs ? w->n_recs : 1, sizeof *w->asked);
    grpc_byte_buffer **reqs = calloc(w->n_recs ? w->n_recs : 1, sizeof *reqs);
    uint32_t *shards = calloc(w->n_recs ? w->n_recs : 1, sizeof *shards);
    int ok = w->asked && reqs && shards;
    for (size_t i = 0; ok && i < w->n_recs; i++) {
        if (!w->recs[i].ask)
            continue;
        Slimvec__V1__ShardApplyRequest q = SLIMVEC__V1__SHARD_APPLY_REQUEST__INIT;
        Slimvec__V1__LogPosition pos = SLIMVEC__V1__LOG_POSITION__INIT;
        pos.shard = w->recs[i].shard;
        pos.lsn = w->recs[i].lsn;
        pos.incarnation = w->incarnation;
        q.collection = (char *)collection;
        q.position = &pos;
        if (!(reqs[n] = svd_pack(&q.base))) {
            ok = 0;
            break;
        }
        shards[n] = w->recs[i].shard;
        w->asked[n++] = i;
    }
    w->n_asked = n;
    /* How long a write waits to hear how it applied: --outcome-seconds,
     * within the call's own deadline. */
    double until = sv_now_seconds() + svc_cluster_config_of(cl)->outcome_seconds;
    double deadline = deadline_of(ctx) < until ? deadline_of(ctx) : until;
    if (ok && n)
        w->op = fan_out(cl, ctx, SHARD_METHOD("Applied"), n, reqs, shards, deadline, r);
    else if (!ok)
        svd_reply_oom(r);
    for (size_t i = 0; i < n; i++)
        grpc_byte_buffer_destroy(reqs[i]);
    free(reqs);
    free(shards);
    return ok && n && w->op;
}

/* The outcomes: total count, or the first refusal as the reply. 0 when an
 * outcome is missing or a refusal (r set). */
static int outcomes_ok(svc_cluster *cl, write_state *w, uint64_t *count, svd_reply *r)
{
    *count = 0;
    for (size_t k = 0; k < w->n_asked; k++) {
        const svc_part_result *pr = svc_fanout_result(w->op, k);
        rec_pos *rp = &w->recs[w->asked[k]];
        if (pr->code != GRPC_STATUS_OK) {
            if (stale(pr))
                svc_cluster_map_stale(cl);
            svd_reply_error(r, GRPC_STATUS_UNAVAILABLE,
                            "shard %u's part is in its log (LSN %" PRIu64 ") but no replica said how it applied (%s); "
                            "send it again with the same batch_id",
                            rp->shard, rp->lsn, pr->message);
            return 0;
        }
        Slimvec__V1__ShardApplyResponse *a =
            (void *)svd_unpack(&slimvec__v1__shard_apply_response__descriptor, pr->response);
        if (!a) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", rp->shard);
            return 0;
        }
        int refused = a->error != NULL;
        if (refused)
            svd_reply_error(r, a->error->code, "%s (shard %u's part, LSN %" PRIu64 ", was refused by every replica%s)",
                            a->error->message, rp->shard, rp->lsn, w->n_recs > 1 ? "; the other parts were applied" : "");
        *count += a->count;
        if (a->duplicate_of)
            rp->first = a->duplicate_of; /* its ids are the first copy's */
        protobuf_c_message_free_unpacked(&a->base, NULL);
        if (refused)
            return 0;
    }
    return 1;
}

/* The positions the reply gives back (own'd by r). */
/*
 * A write whose records are in w (all of them, when it is not waiting
 * yet): ask how the replicas applied them and wait for it. 1 once they
 * all applied them (*count: the vectors or ids they counted; may be
 * NULL); 0 when the call defers (it comes back here) or r holds a
 * refusal.
 */
static int records_settled(svc_cluster *cl, svd_ctx *ctx, const char *collection, write_state *w, uint64_t *count,
                           svd_reply *r)
{
    if (!w->waiting) {
        if (ask_outcomes(cl, ctx, collection, w, r)) {
            w->waiting = 1;
            r->defer = 1;
            return 0;
        }
        if (r->code != GRPC_STATUS_OK)
            return 0;
    } else if (w->op && !svc_fanout_done(w->op)) {
        r->defer = 1;
        return 0;
    }
    uint64_t ignored = 0;
    return !w->op || outcomes_ok(cl, w, count ? count : &ignored, r);
}

static Slimvec__V1__LogPosition **positions(write_state *w, size_t *n, svd_reply *r)
{
    Slimvec__V1__LogPosition **pp = svd_own_array(r, w->n_recs, sizeof *pp);
    Slimvec__V1__LogPosition *pv = svd_own_array(r, w->n_recs, sizeof *pv);
    if (w->n_recs && (!pp || !pv))
        return NULL;
    for (size_t i = 0; i < w->n_recs; i++) {
        slimvec__v1__log_position__init(&pv[i]);
        pv[i].shard = w->recs[i].shard;
        pv[i].lsn = w->recs[i].lsn;
        pv[i].incarnation = w->incarnation;
        pp[i] = &pv[i];
    }
    *n = w->n_recs;
    return pp;
}

/* Split the batch by shard and append it, a record per shard (more when
 * a shard's part is over the log's message size). */
static void ingest_write(svc_cluster *cl, svd_app *app, const svc_catalog_entry *c, const Slimvec__V1__IngestRequest *req,
                         const sv_payload *pls, size_t n, const char *key, int resend, write_state *w)
{
    const svc_cluster_config *cfg = svc_cluster_config_of(cl);
    uint32_t S = cfg->shards, dim = c->params.dim;
    /* Ids left to the cluster go to one shard per batch: chosen from the
     * batch id, so a resend splits the same way. */
    uint8_t h[8];
    crypto_generichash(h, sizeof h, (const uint8_t *)key, strlen(key), NULL, 0);
    uint64_t hv;
    memcpy(&hv, h, 8);
    uint32_t assign_shard = (uint32_t)(hv % S);
    uint32_t *shard_of = malloc((n ? n : 1) * sizeof *shard_of);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    w->rec_of = malloc((n ? n : 1) * sizeof *w->rec_of);
    w->pos_in_rec = malloc((n ? n : 1) * sizeof *w->pos_in_rec);
    w->n = n;
    if (!shard_of || !order || !w->rec_of || !w->pos_in_rec) {
        w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(w->message, sizeof w->message, "out of memory splitting the batch");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        const char *id = req->n_ids ? req->ids[i] : "";
        shard_of[i] = *id ? sv_follow_route(id, strlen(id), S) : assign_shard;
    }
    int64_t room = RECORD_BYTES;
    (void)app;
    for (uint32_t s = 0; s < S; s++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (shard_of[i] == s)
                order[m++] = i;
        for (size_t from = 0, k = 0; from < m; k++) {
            /* As many vectors as fit in one message. */
            size_t to = from;
            int64_t bytes = 64;
            while (to < m) {
                const char *id = req->n_ids ? req->ids[order[to]] : "";
                int64_t one = (int64_t)dim * 4 + 2 + (int64_t)strlen(id) + 9 +
                              (pls ? (int64_t)sv_payload_encode(&pls[order[to]], NULL, 0) : 0);
                if (to > from && bytes + one + 140 > room)
                    break;
                bytes += one;
                to++;
            }
            size_t cnt = to - from;
            const char **ids = malloc(cnt * sizeof *ids);
            uint64_t *zero = calloc(cnt, sizeof *zero);
            float *vec = malloc(cnt * (size_t)dim * sizeof *vec);
            sv_payload *sub = pls ? malloc(cnt * sizeof *sub) : NULL;
            uint8_t *head = NULL, *psec = NULL;
            size_t hl = 0, pl_len = 0;
            int given = 0, ok = ids && zero && vec && (!pls || sub);
            for (size_t j = 0; ok && j < cnt; j++) {
                size_t i = order[from + j];
                const char *id = req->n_ids ? req->ids[i] : "";
                ids[j] = *id ? id : NULL;
                given |= *id != 0;
                memcpy(vec + j * dim, req->vectors + i * dim, (size_t)dim * sizeof *vec);
                if (pls)
                    sub[j] = pls[i];
            }
            ok = ok && sv_logrec_add_ids(ids, zero, cnt, dim, 0, req->upsert, &head, &hl) == SV_OK &&
                 (!pls || sv_logrec_add_payloads(sub, cnt, &psec, &pl_len) == SV_OK);
            char rkey[128];
            snprintf(rkey, sizeof rkey, "%s:%u:%zu", key, s, k);
            uint64_t lsn = 0;
            svd_reply er = {.code = GRPC_STATUS_OK};
            if (ok) {
                struct iovec parts[3] = {{head, hl}, {vec, cnt * (size_t)dim * sizeof *vec}, {psec, pl_len}};
                ok = append_record(cl, c, s, SV_WAL_ADD, rkey, parts, pls ? 3 : 2, &lsn, &er);
                if (!ok) {
                    w->code = er.code;
                    snprintf(w->message, sizeof w->message, "%s", er.message);
                }
            } else {
                w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                snprintf(w->message, sizeof w->message, "out of memory writing the batch");
            }
            /* A batch with ids of its own may meet ids already there, one
             * with payloads keys of another type, one with a batch id of
             * the client's may be a resend: they wait to hear how they
             * applied. */
            if (ok && !add_rec(w, s, lsn, given || resend || pls)) {
                ok = 0;
                w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                snprintf(w->message, sizeof w->message, "out of memory");
            }
            for (size_t j = 0; ok && j < cnt; j++) {
                w->rec_of[order[from + j]] = (uint32_t)(w->n_recs - 1);
                w->pos_in_rec[order[from + j]] = (uint32_t)j;
            }
            free(ids);
            free(zero);
            free(vec);
            free(sub);
            free(head);
            free(psec);
            if (!ok)
                goto cleanup;
            from = to;
        }
    }
cleanup:
    free(shard_of);
    free(order);
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 1 when no given id comes twice in the batch; else 0 and ALREADY_EXISTS
 * naming it. A single node refuses such a batch whole; here its copies may
 * land in two records of a shard (a part over RECORD_BYTES is split), where
 * no replica would see both: refused before anything is written. */
static int ids_distinct(char *const *ids, size_t n, svd_reply *r)
{
    char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted) {
        svd_reply_oom(r);
        return 0;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i][0])
            sorted[m++] = ids[i];
    qsort(sorted, m, sizeof *sorted, by_text);
    int ok = 1;
    for (size_t i = 1; i < m && ok; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            svd_reply_error(r, GRPC_STATUS_ALREADY_EXISTS, "id \"%s\" appears twice in the batch", sorted[i]);
            ok = 0;
        }
    free(sorted);
    return ok;
}

/* A batch's payloads converted (into r's memory) and checked as far as the
 * router can: text, limits, types within the batch. What the keys already
 * hold is each replica's to check: the batch waits for its outcome. */
static int payloads_fit(const sv_payload *pl, size_t n, svd_reply *r)
{
    sv_error err;
    sv_status st = sv_payloads_check(NULL, pl, n, &err);
    if (st != SV_OK) {
        svd_reply_error(r, svd_code_of(st), "%s", err.message);
        return 0;
    }
    return 1;
}

static int payloads_ok(Slimvec__V1__Payload *const *pb, size_t n, sv_payload **out, svd_reply *r)
{
    return svd_payloads_from_pb(pb, n, out, r) == 0 && payloads_fit(*out, n, r);
}

static void ingest_message(svd_app *app, svd_ctx *ctx, write_state *w, const Slimvec__V1__IngestRequest *req,
                           Slimvec__V1__IngestResponse *resp, svd_reply *r)
{
    svc_cluster *cl = app->cluster;
    svc_catalog_entry ce, *c = &ce;
    if (!route_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, &w->since, c, r))
        return;
    if (!w->incarnation)
        w->incarnation = c->incarnation;
    size_t n = 0;
    if (!w->waiting && !w->n_recs) {
        char key[72];
        if (!svd_batch_shape_dim(app, c->params.dim, req->n_vectors, req->n_ids, req->dimension, &n, r) ||
            !svd_ids_ok(app, req->ids, req->n_ids, "id of vector", r) || !batch_key(req->batch_id, key, sizeof key, r))
            goto done;
        sv_payload *pls = NULL;
        if (req->n_payloads && req->n_payloads != n) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%zu payloads for %zu vectors (give none or one each)",
                            req->n_payloads, n);
            goto done;
        }
        if (req->n_payloads && !payloads_ok(req->payloads, n, &pls, r))
            goto done;
        for (size_t i = 0; i < req->n_ids; i++)
            if (!sv_follow_id_allowed(req->ids[i], strlen(req->ids[i]))) {
                svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                                "id of vector %zu: numbers from 2^62 up are assigned by the cluster", i);
                goto done;
            }
        if (!ids_distinct(req->ids, req->n_ids, r))
            goto done;
        /* Vectors the engine would refuse are refused before they reach
         * the log (every replica would refuse them the same way). */
        uint32_t dim = c->params.dim;
        for (size_t i = 0; i < n * dim; i++)
            if (!isfinite(req->vectors[i])) {
                svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "vector %zu: component %zu is not finite", i / dim,
                                i % dim);
                goto done;
            }
        ingest_write(cl, app, c, req, pls, n, key, req->batch_id && *req->batch_id, w);
        if (w->code == GRPC_STATUS_OK && ask_outcomes(cl, ctx, req->collection, w, r)) {
            w->waiting = 1;
            r->defer = 1;
            goto done;
        }
        if (r->code != GRPC_STATUS_OK)
            goto done;
    } else {
        n = w->n;
        if (w->op && !svc_fanout_done(w->op)) {
            r->defer = 1;
            goto done;
        }
    }
    resp->positions = positions(w, &resp->n_positions, r);
    if (w->code != GRPC_STATUS_OK) {
        svd_reply_error(r, w->code, "%s%s", w->message,
                        w->n_recs ? " (the parts in `positions` are in their logs; a resend with the same "
                                    "batch_id writes only the rest)"
                                  : "");
        goto done;
    }
    uint64_t count = 0;
    if (w->op && !outcomes_ok(cl, w, &count, r))
        goto done;
    char **ids = svd_own_array(r, n, sizeof *ids);
    char *numbers = svd_own_array(r, n, 24);
    if (n && (!ids || !numbers)) {
        svd_reply_oom(r);
        goto done;
    }
    const svc_cluster_config *cfg = svc_cluster_config_of(cl);
    for (size_t i = 0; i < n; i++) {
        if (req->n_ids && req->ids[i][0]) {
            ids[i] = req->ids[i];
            continue;
        }
        rec_pos *rp = &w->recs[w->rec_of[i]];
        sv_follow_ids f = {cfg->shards, rp->shard};
        ids[i] = numbers + 24 * i;
        snprintf(ids[i], 24, "%" PRIu64, sv_follow_assigned_id(&f, rp->first, w->pos_in_rec[i]));
    }
    resp->applied = (uint32_t)n;
    resp->n_ids = n;
    resp->ids = ids;
done:
    return;
}

static void s_ingest(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__IngestRequest *req = (const void *)m;
    write_state *w = write_state_of(state, r);
    Slimvec__V1__IngestResponse *resp = svd_own(r, sizeof *resp);
    if (!w || !resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__ingest_response__init(resp);
    resp->sequence = req->sequence;
    svd_reply inner = SVD_INNER(r);
    ingest_message(appv, ctx, w, req, resp, &inner);
    if (svd_stream_step_done(r, &inner, &resp->error))
        return;
    if (resp->error) {
        resp->applied = 0;
        resp->n_ids = 0;
        resp->ids = NULL;
    }
    w->head.replied = 1;
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

/* Append a delete, a record per shard (more when a shard's ids are over
 * RECORD_BYTES); a failure is left in w (the parts before it are in). */
static void delete_write(svc_cluster *cl, const svc_catalog_entry *c, char **all, size_t n, const char *key, write_state *w)
{
    uint32_t S = svc_cluster_config_of(cl)->shards;
    const char **ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(w->message, sizeof w->message, "out of memory splitting the delete");
        return;
    }
    for (uint32_t s = 0; s < S && w->code == GRPC_STATUS_OK; s++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (sv_follow_route(all[i], strlen(all[i]), S) == s)
                ids[k++] = all[i];
        for (size_t from = 0, part_no = 0; from < k && w->code == GRPC_STATUS_OK; part_no++) {
            size_t to = from, bytes = 4;
            while (to < k && (to == from || bytes + 2 + strlen(ids[to]) <= RECORD_BYTES))
                bytes += 2 + strlen(ids[to++]);
            uint8_t *rec = NULL;
            size_t len = 0;
            char rkey[96];
            snprintf(rkey, sizeof rkey, "%s:%u:%zu", key, s, part_no);
            uint64_t lsn = 0;
            svd_reply er = {.code = GRPC_STATUS_OK};
            if (sv_logrec_delete(ids + from, to - from, &rec, &len) != SV_OK) {
                w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                snprintf(w->message, sizeof w->message, "out of memory writing the delete");
            } else {
                struct iovec part = {rec, len};
                if (!append_record(cl, c, s, SV_WAL_DELETE, rkey, &part, 1, &lsn, &er)) {
                    w->code = er.code;
                    snprintf(w->message, sizeof w->message, "%s", er.message);
                } else if (!add_rec(w, s, lsn, 1)) {
                    w->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                    snprintf(w->message, sizeof w->message, "out of memory");
                }
            }
            free(rec);
            from = to;
        }
    }
    free(ids);
}

static void h_delete(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__DeleteRequest *req = (const void *)m;
    write_state *w = write_state_of(state, r);
    if (!w)
        return;
    svc_catalog_entry ce, *c = &ce;
    if (!route_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, &w->since, c, r))
        return;
    if (!w->incarnation)
        w->incarnation = c->incarnation;
    if (!w->waiting) {
        if (req->n_ids > app->limits.max_batch) {
            svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu ids are over the batch limit of %u", req->n_ids,
                            app->limits.max_batch);
            goto done;
        }
        if (!svd_ids_ok(app, req->ids, req->n_ids, "id", r))
            goto done;
        char key[72];
        batch_key(NULL, key, sizeof key, r);
        delete_write(cl, c, req->ids, req->n_ids, key, w);
        if (w->code == GRPC_STATUS_OK && ask_outcomes(cl, ctx, req->collection, w, r)) {
            w->waiting = 1;
            r->defer = 1;
            goto done;
        }
        if (r->code != GRPC_STATUS_OK)
            goto done;
    } else if (w->op && !svc_fanout_done(w->op)) {
        r->defer = 1;
        goto done;
    }
    Slimvec__V1__DeleteResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        goto done;
    }
    slimvec__v1__delete_response__init(resp);
    resp->positions = positions(w, &resp->n_positions, r);
    if (w->code != GRPC_STATUS_OK) {
        svd_reply_error(r, w->code, "%s", w->message);
        goto done;
    }
    uint64_t count = 0;
    if (w->op && !outcomes_ok(cl, w, &count, r))
        goto done;
    resp->deleted = (uint32_t)count;
    r->msg = &resp->base;
done:
    return;
}

/* ---- read path ----------------------------------------------------------------------------------- */

typedef struct read_state {
    state_head head;
    double since;               /* waited_out's clock */
    svc_fanout_op *op;
    uint32_t shards;
    ProtobufCMessage **answers; /* one per shard, unpacked */
} read_state;

static void read_reset(void *state)
{
    read_state *s = state;
    svc_fanout_release(s->op);
    for (uint32_t i = 0; s->answers && i < s->shards; i++)
        if (s->answers[i])
            protobuf_c_message_free_unpacked(s->answers[i], NULL);
    free(s->answers);
    clear_after_head(s, sizeof *s);
}

static read_state *read_state_of(void **state, svd_reply *r)
{
    return state_of(state, sizeof(read_state), read_reset, r);
}

/*
 * A replica refused a part for a stale map (the shard moved): read the
 * map again and start the call over, from its checks, at most
 * STALE_RESTARTS times. 1 when it starts over (r defers).
 */
static int restart_if_stale(svc_cluster *cl, read_state *s, svd_reply *r)
{
    int any = 0, refused = 0;
    for (uint32_t i = 0; i < s->shards; i++) {
        any |= stale(svc_fanout_result(s->op, i));
        refused += svc_fanout_result(s->op, i)->aborted;
    }
    if (refused)
        svc_cluster_saw_stale(cl, refused); /* even when a sibling answered: this map is old */
    if (!any || s->head.restarts >= STALE_RESTARTS)
        return 0;
    svc_cluster_read_map(cl);
    svc_cluster_note_stale(cl);
    int restarts = s->head.restarts + 1;
    double since = s->since;
    read_reset(s);
    s->head.restarts = restarts;
    s->since = since;
    r->defer = 1;
    return 1;
}

/* The same request to every shard. */
static int fan_all(svc_cluster *cl, svd_ctx *ctx, read_state *s, const char *path, const ProtobufCMessage *req,
                   svd_reply *r)
{
    uint32_t S = svc_cluster_config_of(cl)->shards;
    grpc_byte_buffer *bb = svd_pack(req);
    grpc_byte_buffer **reqs = calloc(S, sizeof *reqs);
    uint32_t *shards = calloc(S, sizeof *shards);
    s->answers = calloc(S, sizeof *s->answers);
    s->shards = S;
    if (bb && reqs && shards && s->answers) {
        for (uint32_t i = 0; i < S; i++) {
            reqs[i] = bb;
            shards[i] = i;
        }
        s->op = fan_out(cl, ctx, path, S, reqs, shards, deadline_of(ctx), r);
    } else {
        svd_reply_oom(r);
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    free(reqs);
    free(shards);
    return s->op != NULL;
}

typedef struct merged_hit {
    float distance;
    Slimvec__V1__Hit *hit;
} merged_hit;

static int by_distance(const void *a, const void *b)
{
    float x = ((const merged_hit *)a)->distance, y = ((const merged_hit *)b)->distance;
    return (x > y) - (x < y);
}

static void search_message(svd_app *app, svd_ctx *ctx, read_state *s, const Slimvec__V1__SearchRequest *req,
                           Slimvec__V1__SearchResponse *resp, svd_reply *r)
{
    svc_cluster *cl = app->cluster;
    if (!s->op) {
        /* The checks a single node makes, before any pod is asked. */
        svc_catalog_entry c;
        if (!route_lookup(app, ctx, SVD_ROLE_READ, req->collection, &s->since, &c, r))
            return;
        size_t m = 0;
        if (!svd_batch_shape_dim(app, c.params.dim, req->n_queries, 0, req->dimension, &m, r))
            return;
        if (req->k < 1 || req->k > app->limits.max_k) {
            svd_reply_error(r, req->k < 1 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
                            "k=%u is outside 1..%u", req->k, app->limits.max_k);
            return;
        }
        if (fan_all(cl, ctx, s, SHARD_METHOD("Search"), &req->base, r))
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(s->op)) {
        r->defer = 1;
        return;
    }
    if (restart_if_stale(cl, s, r))
        return;
    size_t m = 0;
    uint32_t *missing = svd_own_array(r, s->shards, sizeof *missing);
    if (!missing) {
        svd_reply_oom(r);
        return;
    }
    for (uint32_t i = 0; i < s->shards; i++) {
        const svc_part_result *pr = svc_fanout_result(s->op, i);
        svc_cluster_note_fanout(cl, i, pr->seconds);
        if (pr->code == GRPC_STATUS_OK) {
            s->answers[i] = svd_unpack(&slimvec__v1__search_response__descriptor, pr->response);
            if (!s->answers[i]) {
                svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", i);
                return;
            }
            continue;
        }
        /* Only a shard that could not be reached may be left out. */
        int unreachable = pr->code == GRPC_STATUS_UNAVAILABLE || pr->code == GRPC_STATUS_CANCELLED;
        if (!req->allow_partial || !unreachable) {
            part_error(cl, r, i, pr);
            return;
        }
        missing[m++] = i;
    }
    size_t queries = 0;
    for (uint32_t i = 0; i < s->shards; i++)
        if (s->answers[i]) {
            queries = ((Slimvec__V1__SearchResponse *)s->answers[i])->n_results;
            break;
        }
    Slimvec__V1__QueryResult **results = svd_own_array(r, queries, sizeof *results);
    Slimvec__V1__QueryResult *qrs = svd_own_array(r, queries, sizeof *qrs);
    merged_hit *all = svd_own_array(r, (size_t)req->k * s->shards, sizeof *all);
    if (queries && (!results || !qrs || !all)) {
        svd_reply_oom(r);
        return;
    }
    for (size_t q = 0; q < queries; q++) {
        size_t n = 0;
        for (uint32_t i = 0; i < s->shards; i++) {
            Slimvec__V1__SearchResponse *a = (void *)s->answers[i];
            if (!a)
                continue;
            if (a->n_results != queries) {
                svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u answered %zu queries of %zu", i, a->n_results,
                                queries);
                return;
            }
            Slimvec__V1__QueryResult *qr = a->results[q];
            for (size_t h = 0; h < qr->n_hits && n < (size_t)req->k * s->shards; h++)
                all[n++] = (merged_hit){qr->hits[h]->distance, qr->hits[h]};
        }
        /* Each shard's top k, merged: the exact top k of what they found. */
        qsort(all, n, sizeof *all, by_distance);
        size_t keep = n < req->k ? n : req->k;
        Slimvec__V1__Hit **hp = svd_own_array(r, keep, sizeof *hp);
        if (keep && !hp) {
            svd_reply_oom(r);
            return;
        }
        for (size_t h = 0; h < keep; h++)
            hp[h] = all[h].hit;
        slimvec__v1__query_result__init(&qrs[q]);
        qrs[q].n_hits = keep;
        qrs[q].hits = hp;
        results[q] = &qrs[q];
    }
    resp->n_results = queries;
    resp->results = results;
    resp->n_missing_shards = m;
    resp->missing_shards = missing;
}

static void h_search(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    read_state *s = read_state_of(state, r);
    Slimvec__V1__SearchResponse *resp = svd_own(r, sizeof *resp);
    if (!s || !resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    search_message(appv, ctx, s, req, resp, r);
    if (r->defer)
        return;
    s->head.replied = 1;
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void s_search(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    read_state *s = read_state_of(state, r);
    Slimvec__V1__SearchResponse *resp = svd_own(r, sizeof *resp);
    if (!s || !resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__search_response__init(resp);
    resp->tag = req->tag;
    svd_reply inner = SVD_INNER(r);
    search_message(appv, ctx, s, req, resp, &inner);
    if (svd_stream_step_done(r, &inner, &resp->error))
        return;
    if (resp->error) {
        resp->n_results = 0;
        resp->results = NULL;
    }
    s->head.replied = 1;
    if (r->code == GRPC_STATUS_OK)
        r->msg = &resp->base;
}

static void h_get(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__GetRequest *req = (const void *)m;
    read_state *s = read_state_of(state, r);
    if (!s)
        return;
    uint32_t S = svc_cluster_config_of(cl)->shards;
    if (!s->op) {
        svc_catalog_entry c;
        if (!route_lookup(app, ctx, SVD_ROLE_READ, req->collection, &s->since, &c, r))
            return;
        if (req->n_ids > app->limits.max_get_ids) {
            svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%zu ids are over the server's --max-get-ids %u",
                            req->n_ids, app->limits.max_get_ids);
            return;
        }
        if (!svd_ids_ok(app, req->ids, req->n_ids, "id", r))
            return;
        /* Each shard is asked for its own ids. */
        grpc_byte_buffer **reqs = calloc(S, sizeof *reqs);
        uint32_t *shards = calloc(S, sizeof *shards);
        char **sub = malloc((req->n_ids ? req->n_ids : 1) * sizeof *sub);
        s->answers = calloc(S, sizeof *s->answers);
        s->shards = S;
        int ok = reqs && shards && sub && s->answers;
        for (uint32_t i = 0; ok && i < S; i++) {
            Slimvec__V1__GetRequest g = SLIMVEC__V1__GET_REQUEST__INIT;
            g.collection = req->collection;
            g.n_after = req->n_after;
            g.after = req->after;
            g.with_payload = req->with_payload;
            for (size_t k = 0; k < req->n_ids; k++)
                if (sv_follow_route(req->ids[k], strlen(req->ids[k]), S) == i)
                    sub[g.n_ids++] = req->ids[k];
            g.ids = sub;
            shards[i] = i;
            ok = (reqs[i] = svd_pack(&g.base)) != NULL;
        }
        if (ok)
            s->op = fan_out(cl, ctx, SHARD_METHOD("Get"), S, reqs, shards, deadline_of(ctx), r);
        else
            svd_reply_oom(r);
        for (uint32_t i = 0; reqs && i < S; i++)
            if (reqs[i])
                grpc_byte_buffer_destroy(reqs[i]);
        free(reqs);
        free(shards);
        free(sub);
        if (s->op)
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(s->op)) {
        r->defer = 1;
        return;
    }
    if (restart_if_stale(cl, s, r))
        return;
    for (uint32_t i = 0; i < S; i++) {
        const svc_part_result *pr = svc_fanout_result(s->op, i);
        if (pr->code != GRPC_STATUS_OK) {
            part_error(cl, r, i, pr);
            s->head.replied = 1;
            return;
        }
        if (!(s->answers[i] = svd_unpack(&slimvec__v1__get_response__descriptor, pr->response))) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", i);
            s->head.replied = 1;
            return;
        }
    }
    /* Back in request order: each shard answered its ids in order. */
    Slimvec__V1__GetResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__Vector **vs = svd_own_array(r, req->n_ids, sizeof *vs);
    size_t *next = svd_own_array(r, S, sizeof *next);
    if (!resp || !next || (req->n_ids && !vs)) {
        svd_reply_oom(r);
        s->head.replied = 1;
        return;
    }
    slimvec__v1__get_response__init(resp);
    for (size_t k = 0; k < req->n_ids; k++) {
        uint32_t i = sv_follow_route(req->ids[k], strlen(req->ids[k]), S);
        Slimvec__V1__GetResponse *a = (void *)s->answers[i];
        if (next[i] >= a->n_vectors) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u answered %zu vectors", i, a->n_vectors);
            s->head.replied = 1;
            return;
        }
        vs[k] = a->vectors[next[i]++];
    }
    resp->n_vectors = req->n_ids;
    resp->vectors = vs;
    r->msg = &resp->base;
    s->head.replied = 1;
}

/* ---- the catalog --------------------------------------------------------------------------------- */

typedef struct catalog_state {
    double since;         /* waited_out's clock */
    uint64_t incarnation; /* the one created, or dropped */
    int indexed;          /* a create's INDEX records are in every shard's log */
} catalog_state;

/* One INDEX record of key in every shard's log (w collects them). */
/* One record (rec[0..len)) of a write under batch key bkey in shard's log,
 * its position kept in w (NULL: not kept). 0 and r set on failure. */
static int record_to(svc_cluster *cl, const svc_catalog_entry *c, uint32_t shard, uint32_t type, const char *bkey,
                     uint8_t *rec, size_t len, write_state *w, svd_reply *r)
{
    char rkey[96];
    snprintf(rkey, sizeof rkey, "%s:%u:0", bkey, shard);
    struct iovec part = {rec, len};
    uint64_t lsn = 0;
    if (!append_record(cl, c, shard, type, rkey, &part, 1, &lsn, r))
        return 0;
    if (w && !add_rec(w, shard, lsn, 1)) {
        svd_reply_oom(r);
        return 0;
    }
    return 1;
}

static void index_write(svc_cluster *cl, const svc_catalog_entry *c, const char *key, write_state *w, svd_reply *r)
{
    uint8_t *rec = NULL;
    size_t len = 0;
    if (sv_logrec_index(key, &rec, &len) != SV_OK) {
        svd_reply_oom(r);
        return;
    }
    char bkey[72];
    batch_key(NULL, bkey, sizeof bkey, r);
    for (uint32_t s = 0; s < svc_cluster_config_of(cl)->shards; s++)
        if (!record_to(cl, c, s, SV_WAL_INDEX, bkey, rec, len, w, r))
            break;
    free(rec);
}

/* The end of a call whose state is one block (catalog and pod-to-pod calls). */
static void free_end(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    free(state);
}

static void h_create(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__CreateCollectionRequest *req = (const void *)m;
    catalog_state *cs = *state;
    if (!cs) {
        const Slimvec__V1__CollectionSpec *spec = req->spec;
        if (!spec) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "spec is missing");
            return;
        }
        sv_params p;
        if (!svd_field_ok(spec->name, "the collection name", SIZE_MAX, r) ||
            !svd_allowed(ctx, SVD_ROLE_ADMIN, spec->name, r) || !svd_spec_params(app, spec, &p, r) ||
            !svd_index_keys_ok(spec->indexed_keys, spec->n_indexed_keys, r) || !svd_memory_ok(app, 64 * 1024, 0, r))
            return;
        if (strlen(spec->name) > 64) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "a cluster's collection names are at most 64 bytes");
            return;
        }
        /* etcd decides: the first create of the name is the one that counts. */
        uint8_t val[SVC_CATALOG_VALUE_MAX];
        size_t len = svc_catalog_encode(spec->name, svc_cluster_config_of(cl)->shards, &p, val);
        sv_error err;
        uint64_t inc = 0;
        sv_status st = svc_meta_create_collection(svc_cluster_meta(cl), spec->name, val, len, &inc, &err);
        if (st != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "%s", err.message);
            return;
        }
        if (!(cs = *state = calloc(1, sizeof *cs))) {
            svd_reply_oom(r);
            return;
        }
        cs->incarnation = inc;
    }
    /* Every shard's stream exists before the create is answered: writes
     * only open streams, so a write racing a drop cannot bring one back. */
    for (uint32_t s = 0; s < svc_cluster_config_of(cl)->shards; s++) {
        sv_log *log = NULL;
        sv_error err;
        sv_status st = svc_cluster_shard_log(cl, cs->incarnation, s, 1, &log, &err);
        if (st == SV_ERR_IO && !waited_out(ctx, &cs->since, r) && sv_now_seconds() + 1 < deadline_of(ctx)) {
            /* NATS 2.9 may leave one of several pods making the same stream
             * at once unanswered: ask again in a moment (the entry is in
             * etcd; a create that gives up here leaves it there). */
            r->defer = 1;
            return;
        }
        if (st != SV_OK) {
            if (r->code == GRPC_STATUS_OK)
                svd_reply_error(r, svd_code_of(st), "shard %u: %s", s, err.message);
            return;
        }
    }
    /* The keys to index: a record each in every shard's log, before any
     * write can come (no one has the answer yet). */
    if (!cs->indexed) {
        svc_catalog_entry ce = {.incarnation = cs->incarnation};
        for (size_t i = 0; i < req->spec->n_indexed_keys && r->code == GRPC_STATUS_OK; i++)
            index_write(cl, &ce, req->spec->indexed_keys[i], NULL, r);
        if (r->code != GRPC_STATUS_OK)
            return;
        cs->indexed = 1;
    }
    /* Answered with this pod's copy once it has one (the applier makes it). */
    svd_coll *c = svd_registry_get(app->registry, req->spec->name);
    if (!c || c->incarnation != cs->incarnation) {
        svd_registry_put(app->registry, c);
        if (!waited_out(ctx, &cs->since, r))
            r->defer = 1;
        return;
    }
    svd_handler_fn describe = svd_local_handler("/slimvec.v1.SlimVec/DescribeCollection");
    svd_registry_put(app->registry, c);
    Slimvec__V1__DescribeCollectionRequest d = SLIMVEC__V1__DESCRIBE_COLLECTION_REQUEST__INIT;
    d.name = req->spec->name;
    void *none = NULL;
    describe(appv, ctx, &none, &d.base, r);
    /* Describe's answer and Create's have the same fields: info = 1. */
    if (r->code == GRPC_STATUS_OK && r->msg) {
        const Slimvec__V1__DescribeCollectionResponse *dr = (const void *)r->msg;
        Slimvec__V1__CreateCollectionResponse *cr = svd_own(r, sizeof *cr);
        if (!cr) {
            svd_reply_oom(r);
            return;
        }
        slimvec__v1__create_collection_response__init(cr);
        cr->info = dr->info;
        r->msg = &cr->base;
    }
}

static void h_drop(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__DropCollectionRequest *req = (const void *)m;
    catalog_state *cs = *state;
    if (!cs) {
        if (!svd_field_ok(req->name, "the collection name", SIZE_MAX, r) ||
            !svd_allowed(ctx, SVD_ROLE_ADMIN, req->name, r))
            return;
        svc_catalog_entry e;
        sv_error err;
        if (!svc_catalog_find(svc_cluster_catalog(cl), req->name, &e)) {
            /* Created through another pod a moment ago? Ask etcd itself. */
            svc_meta_refresh(svc_cluster_meta(cl), 1, &err);
            if (!svc_catalog_find(svc_cluster_catalog(cl), req->name, &e)) {
                svd_reply_error(r, GRPC_STATUS_NOT_FOUND, "collection \"%.64s\" not found", req->name);
                return;
            }
        }
        sv_status st = svc_meta_drop_collection(svc_cluster_meta(cl), req->name, e.incarnation, &err);
        if (st != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "%s", err.message);
            return;
        }
        if (!(cs = *state = calloc(1, sizeof *cs))) {
            svd_reply_oom(r);
            return;
        }
        cs->incarnation = e.incarnation;
    }
    svd_coll *c = svd_registry_get(app->registry, req->name);
    int still = c && c->incarnation == cs->incarnation;
    svd_registry_put(app->registry, c);
    if (still) {
        if (!waited_out(ctx, &cs->since, r))
            r->defer = 1;
        return;
    }
    svc_cluster_delete_streams(cl, cs->incarnation);
    static Slimvec__V1__DropCollectionResponse resp = SLIMVEC__V1__DROP_COLLECTION_RESPONSE__INIT;
    r->msg = &resp.base;
}

/* ---- what the pods ask each other -------------------------------------------------------------------- */

/* Wait (deferred) until this replica applied every position of its shard. */
/* 1 when this replica applied every position of its shard; -1 (and r
 * says so) when one is of another incarnation of the collection. */
static int caught_up(svd_app *app, svd_coll *c, Slimvec__V1__LogPosition **after, size_t n, svd_reply *r)
{
    int mine = svc_cluster_shard(app->cluster);
    uint64_t applied = sv_durable_applied(c->dur);
    int ready = 1;
    for (size_t i = 0; i < n; i++) {
        if (!after[i])
            continue;
        if (after[i]->incarnation && after[i]->incarnation != c->incarnation) {
            svd_reply_error(r, GRPC_STATUS_FAILED_PRECONDITION,
                            "position %zu is of a collection \"%s\" that was dropped (and created again) since",
                            i, c->name);
            return -1;
        }
        if (mine >= 0 && after[i]->shard == (uint32_t)mine && after[i]->lsn > applied)
            ready = 0;
    }
    return ready;
}

/* A call between pods names its shard and the router's map epoch: 1 when
 * this pod serves that shard now; else ABORTED "stale shard map" (the
 * router reads the map again) and 0. */
static int serves(svd_app *app, svd_ctx *ctx, uint32_t *shard, svd_reply *r)
{
    char why[256];
    uint32_t s = 0;
    if (svc_cluster_check_shard(app->cluster, svd_ctx_metadata(ctx, SHARD_MD), &s, why, sizeof why)) {
        if (shard)
            *shard = s;
        return 1;
    }
    svd_reply_error(r, strstr(why, "stale shard map") ? GRPC_STATUS_ABORTED : GRPC_STATUS_INVALID_ARGUMENT, "%s",
                    why);
    return 0;
}

/* What a pod-to-pod call keeps across its deferrals. */
typedef struct shard_state {
    double since; /* waited_out's clock */
} shard_state;

static shard_state *shard_state_of(void **state, svd_reply *r)
{
    if (!*state && !(*state = calloc(1, sizeof(shard_state))))
        svd_reply_oom(r);
    return *state;
}

/* Search and Get of this pod's own shard: the single node's handlers, once
 * the read-your-writes positions are applied here. */
static void shard_read(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, const char *collection,
                       Slimvec__V1__LogPosition **after, size_t n_after, const char *local, svd_reply *r)
{
    svd_app *app = appv;
    if (!serves(app, ctx, NULL, r))
        return;
    shard_state *ss = shard_state_of(state, r);
    if (!ss)
        return;
    svd_coll *c = lookup(app, ctx, SVD_ROLE_READ, collection, &ss->since, r);
    if (!c)
        return;
    int ready = caught_up(app, c, after, n_after, r);
    svd_registry_put(app->registry, c);
    if (ready < 0)
        return;
    if (!ready) {
        /* Until the deadline, then DEADLINE_EXCEEDED: never stale. */
        if (!waited_out(ctx, &ss->since, r))
            r->defer = 1;
        return;
    }
    svd_local_handler(local)(appv, ctx, state, m, r); /* it keeps no state of its own */
}

static void sh_search(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__SearchRequest *req = (const void *)m;
    shard_read(appv, ctx, state, m, req->collection, req->after, req->n_after, PUBLIC("Search"), r);
}

static void sh_get(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__GetRequest *req = (const void *)m;
    shard_read(appv, ctx, state, m, req->collection, req->after, req->n_after, PUBLIC("Get"), r);
}

static void sh_applied(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__ShardApplyRequest *req = (const void *)m;
    if (!req->position) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "position is missing");
        return;
    }
    uint32_t shard = 0;
    if (!serves(app, ctx, &shard, r))
        return;
    if (req->position->shard != shard) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "a position of shard %u sent to shard %u",
                        req->position->shard, shard);
        return;
    }
    shard_state *ss = shard_state_of(state, r);
    if (!ss)
        return;
    svd_coll *c = lookup(app, ctx, SVD_ROLE_WRITE, req->collection, &ss->since, r);
    if (!c)
        return;
    Slimvec__V1__LogPosition *one[1] = {req->position};
    if (caught_up(app, c, one, 1, r) < 0) {
        svd_registry_put(app->registry, c);
        return;
    }
    if (sv_durable_applied(c->dur) < req->position->lsn) {
        svd_registry_put(app->registry, c);
        if (!waited_out(ctx, &ss->since, r))
            r->defer = 1;
        return;
    }
    sv_status st = SV_OK;
    uint32_t count = 0;
    uint64_t first = 0;
    char why[128];
    int known = svc_cluster_outcome(c, req->position->lsn, &st, &count, &first, why, sizeof why);
    if (known != 1) {
        /* Not in the ring of outcomes (applied before this pod restarted,
         * or long ago): the window of keys may still hold it. */
        sv_follow_result res;
        if (sv_durable_window_outcome(c->dur, req->position->lsn, &res)) {
            known = 1;
            st = res.outcome;
            count = (uint32_t)res.count;
            first = 0;
            snprintf(why, sizeof why, "%s", st == SV_OK ? "" : "refused (its first copy was)");
        }
    }
    svd_registry_put(app->registry, c);
    if (known == 0) {
        if (!waited_out(ctx, &ss->since, r))
            r->defer = 1; /* applied, its outcome noted in a moment */
        return;
    }
    if (known < 0) {
        svd_reply_error(r, GRPC_STATUS_UNAVAILABLE, "the outcome of LSN %" PRIu64 " is no longer kept here",
                        req->position->lsn);
        return;
    }
    Slimvec__V1__ShardApplyResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__BatchError *be = svd_own(r, sizeof *be);
    char *msg = svd_own(r, sizeof why);
    if (!resp || !be || !msg) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__shard_apply_response__init(resp);
    resp->count = count;
    resp->duplicate_of = first;
    if (st != SV_OK) {
        slimvec__v1__batch_error__init(be);
        be->code = (int32_t)svd_code_of(st);
        memcpy(msg, why, sizeof why);
        be->message = msg;
        resp->error = be;
    }
    r->msg = &resp->base;
}

/* ---- snapshots between replicas ------------------------------------------------------------------------ */

#define CHUNK_DEFAULT (1u << 20)
#define CHUNK_MAX (4u << 20)
#define FETCHES_MAX 2             /* snapshot transfers a pod serves at once */

static atomic_int fetches;        /* under way (FetchSnapshot streams) */

typedef struct fetch_state {
    svd_task *task;       /* the snapshot being written for this stream */
    int fd;               /* then the file, open for the stream's life (a newer snapshot may unlink it) */
    int ofd;              /* the originals file (ORIGINALS_DISK), sent after the snapshot; else -1 */
    uint64_t lsn, incarnation, total, orig_total;
} fetch_state;

static void fetch_end(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    fetch_state *fs = state;
    if (!fs)
        return;
    atomic_fetch_sub(&fetches, 1);
    if (fs->task)
        svd_task_release(fs->task);
    if (fs->fd >= 0)
        close(fs->fd);
    if (fs->ofd >= 0)
        close(fs->ofd);
    free(fs);
}

/* A fresh snapshot of the collection (written for this stream, so it holds
 * what this replica applied now), then its bytes chunk by chunk, then those
 * of its originals file when it keeps one. The snapshot fsynced the
 * originals of every vector it indexes before it was renamed, so the file
 * read after it holds them. A compaction here while the file is read may
 * move records under the reader: the fetching replica's open checks every
 * indexed original against its code and fetches again when one differs. */
static void sh_fetch(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    const Slimvec__V1__SnapshotChunkRequest *req = (const void *)m;
    if (!serves(app, ctx, NULL, r))
        return;
    fetch_state *fs = *state;
    if (!fs) {
        /* Each stream makes this pod write a snapshot and holds a file:
         * a few at once (replicas joining), not as many as callers ask. */
        if (atomic_fetch_add(&fetches, 1) >= FETCHES_MAX) {
            atomic_fetch_sub(&fetches, 1);
            svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d snapshot transfers are under way here",
                            FETCHES_MAX);
            return;
        }
        if (!(fs = *state = calloc(1, sizeof *fs))) {
            atomic_fetch_sub(&fetches, 1);
            svd_reply_oom(r);
            return;
        }
        fs->fd = -1;
        fs->ofd = -1;
    }
    if (fs->fd < 0) {
        if (!fs->task) {
            svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_ADMIN, req->collection, r);
            if (!c)
                return;
            fs->incarnation = c->incarnation;
            fs->task = app->maint ? svd_maint_submit(app->maint, c, SVD_TASK_SNAPSHOT) : NULL;
            svd_registry_put(app->registry, c);
            if (!fs->task) {
                svd_reply_error(r, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
                return;
            }
        }
        sv_status st;
        sv_error err;
        sv_snapshot_info info;
        if (!svd_task_done(fs->task, &st, &err, &info)) {
            r->defer = 1;
            return;
        }
        svd_task_release(fs->task);
        fs->task = NULL;
        if (st != SV_OK) {
            svd_reply_error(r, svd_code_of(st), "snapshot of \"%.64s\": %s", req->collection, err.message);
            return;
        }
        svd_coll *c = svd_lookup(app, ctx, SVD_ROLE_ADMIN, req->collection, r);
        if (!c)
            return;
        char name[48], path[4200], opath[4200];
        sv_snapshot_name(info.lsn, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", sv_durable_dir(c->dur), name);
        snprintf(opath, sizeof opath, "%s/" SV_ORIGINALS_FILE, sv_durable_dir(c->dur));
        int same = c->incarnation == fs->incarnation;
        int with_originals = sv_durable_params(c->dur)->originals == SV_ORIGINALS_DISK;
        svd_registry_put(app->registry, c);
        struct stat sb, osb;
        if (!same || (fs->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fs->fd, &sb) != 0) {
            /* Dropped and created again, or replaced by a newer one at once:
             * the fetching replica starts over. */
            svd_reply_error(r, GRPC_STATUS_ABORTED, "the snapshot of \"%.64s\" went away while it was opened",
                            req->collection);
            return;
        }
        if (with_originals && ((fs->ofd = open(opath, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fs->ofd, &osb) != 0)) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "the originals of \"%.64s\": %s", req->collection,
                            strerror(errno));
            return;
        }
        fs->lsn = info.lsn;
        fs->total = (uint64_t)sb.st_size;
        fs->orig_total = with_originals ? (uint64_t)osb.st_size : 0;
    }
    if (req->offset > fs->total + fs->orig_total) {
        svd_reply_error(r, GRPC_STATUS_OUT_OF_RANGE,
                        "offset %" PRIu64 " is past the snapshot's %" PRIu64 " bytes and its originals' %" PRIu64,
                        req->offset, fs->total, fs->orig_total);
        return;
    }
    /* Which file the offset is in; a chunk ends where its file ends. */
    int in_originals = req->offset >= fs->total && fs->orig_total;
    int fd = in_originals ? fs->ofd : fs->fd;
    uint64_t at = in_originals ? req->offset - fs->total : req->offset;
    uint64_t end = in_originals ? fs->orig_total : fs->total;
    size_t want = req->max_bytes ? req->max_bytes : CHUNK_DEFAULT;
    if (want > CHUNK_MAX)
        want = CHUNK_MAX;
    if (ctx->max_message && want > ctx->max_message / 2)
        want = ctx->max_message / 2; /* room for the message around it */
    if (want > end - at)
        want = (size_t)(end - at);
    uint8_t *buf = svd_own(r, want ? want : 1);
    Slimvec__V1__SnapshotChunk *resp = svd_own(r, sizeof *resp);
    if (!buf || !resp) {
        svd_reply_oom(r);
        return;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t k = pread(fd, buf + got, want - got, (off_t)(at + got));
        if (k <= 0) {
            /* The originals file is cut at a snapshot's commit: a newer
             * snapshot than this stream's may have cut it. */
            svd_reply_error(r, in_originals && !k ? GRPC_STATUS_ABORTED : GRPC_STATUS_INTERNAL, "reading the %s: %s",
                            in_originals ? "originals" : "snapshot", k ? strerror(errno) : "short file");
            return;
        }
        got += (size_t)k;
    }
    slimvec__v1__snapshot_chunk__init(resp);
    resp->lsn = fs->lsn;
    resp->incarnation = fs->incarnation;
    resp->total = fs->total;
    resp->originals_total = fs->orig_total;
    resp->offset = req->offset;
    resp->data.data = buf;
    resp->data.len = got;
    resp->crc32c = sv_crc32c(0, buf, got);
    r->msg = &resp->base;
}

/* This replica's shard, epoch and progress per collection. */
static void sh_status(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    (void)state;
    (void)m;
    svc_cluster *cl = app->cluster;
    svd_coll **colls = NULL;
    size_t total = svd_registry_list(app->registry, &colls), n = 0;
    for (size_t i = 0; i < total; i++) { /* the collections the caller may read */
        if (!ctx->principal || svd_principal_allows(ctx->principal, SVD_ROLE_READ, colls[i]->name))
            colls[n++] = colls[i];
        else
            svd_registry_put(app->registry, colls[i]);
    }
    Slimvec__V1__ShardStatusResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__ClusterCollectionLag **lp = svd_own_array(r, n, sizeof *lp);
    Slimvec__V1__ClusterCollectionLag *lv = svd_own_array(r, n, sizeof *lv);
    char *names = svd_own_array(r, n, 65);
    if (!resp || (n && (!lp || !lv || !names))) {
        svd_registry_put_list(app->registry, colls, n);
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__shard_status_response__init(resp);
    resp->pod = (char *)svc_cluster_config_of(cl)->meta.pod;
    int mine = svc_cluster_shard(cl);
    resp->shard = mine < 0 ? UINT32_MAX : (uint32_t)mine;
    resp->epoch = svc_meta_epoch(svc_cluster_meta(cl));
    for (size_t i = 0; i < n; i++) {
        slimvec__v1__cluster_collection_lag__init(&lv[i]);
        snprintf(names + i * 65, 65, "%s", colls[i]->name);
        lv[i].collection = names + i * 65;
        uint64_t last = sv_durable_log_last(colls[i]->dur), applied = sv_durable_applied(colls[i]->dur);
        lv[i].applied_lsn = applied;
        lv[i].lag_records = last > applied ? last - applied : 0;
        lv[i].vectors = sv_durable_count(colls[i]->dur);
        lp[i] = &lv[i];
    }
    resp->n_collections = n;
    resp->collections = lp;
    svd_registry_put_list(app->registry, colls, n);
    r->msg = &resp->base;
}

/* ---- operators' calls ---------------------------------------------------------------------------------- */

/* The map as the proto message (own'd by r). */
static Slimvec__V1__ShardMap *map_message(svc_cluster *cl, svd_reply *r)
{
    svc_meta *meta = svc_cluster_meta(cl);
    svc_meta_replica *reps = NULL;
    svc_meta_name *idle = NULL;
    uint64_t epoch = 0;
    int64_t rev = 0;
    size_t n = svc_meta_replicas(meta, &reps, &epoch, &rev);
    size_t n_idle = svc_meta_idle(meta, &idle);
    Slimvec__V1__ShardMap *sm = svd_own(r, sizeof *sm);
    Slimvec__V1__ShardReplica **rp = svd_own_array(r, n, sizeof *rp);
    Slimvec__V1__ShardReplica *rv = svd_own_array(r, n, sizeof *rv);
    svc_meta_replica *keep = svd_own_array(r, n, sizeof *keep);
    char **ip = svd_own_array(r, n_idle, sizeof *ip);
    svc_meta_name *ikeep = svd_own_array(r, n_idle, sizeof *ikeep);
    if (!sm || (n && (!rp || !rv || !keep)) || (n_idle && (!ip || !ikeep)) || !reps || !idle) {
        free(reps);
        free(idle);
        return NULL;
    }
    slimvec__v1__shard_map__init(sm);
    sm->epoch = epoch;
    sm->shards = svc_cluster_config_of(cl)->shards;
    for (size_t i = 0; i < n; i++) {
        keep[i] = reps[i];
        slimvec__v1__shard_replica__init(&rv[i]);
        rv[i].pod = keep[i].pod;
        rv[i].shard = keep[i].shard;
        rv[i].state = (Slimvec__V1__ReplicaState)keep[i].state;
        rv[i].address = keep[i].address;
        rv[i].replica_set = keep[i].replica_set;
        rv[i].replaces = keep[i].replaces;
        rp[i] = &rv[i];
    }
    for (size_t i = 0; i < n_idle; i++) {
        ikeep[i] = idle[i];
        ip[i] = ikeep[i].name;
    }
    sm->n_replicas = n;
    sm->replicas = rp;
    sm->n_idle = n_idle;
    sm->idle = ip;
    free(reps);
    free(idle);
    return sm;
}

typedef struct status_state {
    double since;
    svc_fanout_op *op;
    size_t n;
    svc_meta_replica *reps;
} status_state;

static void status_end(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    status_state *ss = state;
    if (!ss)
        return;
    svc_fanout_release(ss->op);
    free(ss->reps);
    free(ss);
}

static void c_status(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    (void)m;
    status_state *ss = *state;
    if (!ss) {
        if (!svd_allowed(ctx, SVD_ROLE_ADMIN, "*", r))
            return;
        if (!(ss = *state = calloc(1, sizeof *ss))) {
            svd_reply_oom(r);
            return;
        }
        sv_error err;
        svc_meta_refresh(svc_cluster_meta(cl), 0, &err);
        uint64_t epoch;
        int64_t rev;
        ss->n = svc_meta_replicas(svc_cluster_meta(cl), &ss->reps, &epoch, &rev);
        /* Every replica, each asked once (its own figures). */
        size_t n = ss->n;
        grpc_byte_buffer **reqs = calloc(n ? n : 1, sizeof *reqs);
        grpc_channel *(*targets)[SVC_FANOUT_TARGETS] = calloc(n ? n : 1, sizeof *targets);
        int *n_targets = calloc(n ? n : 1, sizeof *n_targets);
        Slimvec__V1__ShardStatusRequest q = SLIMVEC__V1__SHARD_STATUS_REQUEST__INIT;
        grpc_byte_buffer *bb = svd_pack(&q.base);
        if (reqs && targets && n_targets && bb && ss->reps) {
            for (size_t i = 0; i < n; i++) {
                reqs[i] = bb;
                targets[i][0] = svc_cluster_channel(cl, ss->reps[i].address);
                n_targets[i] = targets[i][0] != NULL;
            }
            grpc_metadata md[1];
            size_t n_md = 0;
            if (ctx->authorization) {
                md[0].key = grpc_slice_from_static_string("authorization");
                md[0].value = *ctx->authorization;
                n_md = 1;
            }
            double deadline = sv_now_seconds() + 2;
            if (deadline > deadline_of(ctx))
                deadline = deadline_of(ctx);
            ss->op = svc_fanout_start(svc_cluster_fanout(cl), SHARD_METHOD("Status"), n, reqs,
                                      (grpc_channel *const (*)[SVC_FANOUT_TARGETS])targets, n_targets, md, n_md,
                                      NULL, NULL, deadline);
        }
        if (bb)
            grpc_byte_buffer_destroy(bb);
        free(reqs);
        free(targets);
        free(n_targets);
        if (!ss->op) {
            svd_reply_oom(r);
            return;
        }
    }
    if (!svc_fanout_done(ss->op)) {
        r->defer = 1;
        return;
    }
    Slimvec__V1__ClusterStatusResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__ShardMap *sm = map_message(cl, r);
    Slimvec__V1__ClusterReplicaStatus **rp = svd_own_array(r, ss->n, sizeof *rp);
    Slimvec__V1__ClusterReplicaStatus *rv = svd_own_array(r, ss->n, sizeof *rv);
    Slimvec__V1__ShardReplica *rr = svd_own_array(r, ss->n, sizeof *rr);
    svc_meta_replica *keep = svd_own_array(r, ss->n, sizeof *keep);
    svc_meta_replica *pods = NULL;
    size_t n_pods = svc_meta_pods(svc_cluster_meta(cl), &pods);
    Slimvec__V1__PodInfo **pp = svd_own_array(r, n_pods, sizeof *pp);
    Slimvec__V1__PodInfo *pv = svd_own_array(r, n_pods, sizeof *pv);
    svc_meta_replica *pkeep = svd_own_array(r, n_pods, sizeof *pkeep);
    if (!resp || !sm || !pods || (ss->n && (!rp || !rv || !rr || !keep)) || (n_pods && (!pp || !pv || !pkeep))) {
        free(pods);
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__cluster_status_response__init(resp);
    resp->map = sm;
    for (size_t i = 0; i < ss->n; i++) {
        keep[i] = ss->reps[i];
        slimvec__v1__cluster_replica_status__init(&rv[i]);
        slimvec__v1__shard_replica__init(&rr[i]);
        rr[i].pod = keep[i].pod;
        rr[i].shard = keep[i].shard;
        rr[i].state = (Slimvec__V1__ReplicaState)keep[i].state;
        rr[i].address = keep[i].address;
        rr[i].replica_set = keep[i].replica_set;
        rr[i].replaces = keep[i].replaces;
        rv[i].replica = &rr[i];
        rv[i].live = keep[i].live;
        const svc_part_result *pr = svc_fanout_result(ss->op, i);
        Slimvec__V1__ShardStatusResponse *a =
            pr->code == GRPC_STATUS_OK
                ? (void *)svd_unpack(&slimvec__v1__shard_status_response__descriptor, pr->response)
                : NULL;
        if (!a) {
            char *why = svd_own(r, sizeof pr->message);
            if (why) {
                snprintf(why, sizeof pr->message, "%s", pr->code == GRPC_STATUS_OK ? "a malformed answer"
                                                                                    : pr->message);
                rv[i].error = why;
            }
        } else {
            /* Its figures move into r's memory (the answer is freed here). */
            Slimvec__V1__ClusterCollectionLag **lp = svd_own_array(r, a->n_collections, sizeof *lp);
            Slimvec__V1__ClusterCollectionLag *lv = svd_own_array(r, a->n_collections, sizeof *lv);
            char *names = svd_own_array(r, a->n_collections, 65);
            if (a->n_collections && (!lp || !lv || !names)) {
                protobuf_c_message_free_unpacked(&a->base, NULL);
                svd_reply_oom(r);
                free(pods);
                return;
            }
            for (size_t k = 0; k < a->n_collections; k++) {
                /* Field by field: a copy of the struct would keep pointers
                 * (unknown fields) into the answer freed below. */
                slimvec__v1__cluster_collection_lag__init(&lv[k]);
                snprintf(names + k * 65, 65, "%s", a->collections[k]->collection);
                lv[k].collection = names + k * 65;
                lv[k].applied_lsn = a->collections[k]->applied_lsn;
                lv[k].lag_records = a->collections[k]->lag_records;
                lv[k].vectors = a->collections[k]->vectors;
                lp[k] = &lv[k];
            }
            rv[i].n_collections = a->n_collections;
            rv[i].collections = lp;
            protobuf_c_message_free_unpacked(&a->base, NULL);
        }
        rp[i] = &rv[i];
    }
    resp->n_replicas = ss->n;
    resp->replicas = rp;
    for (size_t i = 0; i < n_pods; i++) {
        pkeep[i] = pods[i];
        slimvec__v1__pod_info__init(&pv[i]);
        pv[i].pod = pkeep[i].pod;
        pv[i].address = pkeep[i].address;
        pv[i].replica_set = pkeep[i].replica_set;
        pp[i] = &pv[i];
    }
    free(pods);
    resp->n_pods = n_pods;
    resp->pods = pp;
    r->msg = &resp->base;
}

/* A refusal the map explains is FAILED_PRECONDITION for an operator. */
static void map_error(svd_reply *r, sv_status st, const sv_error *err)
{
    svd_reply_error(r, st == SV_ERR_INVALID_ARGUMENT ? GRPC_STATUS_FAILED_PRECONDITION : svd_code_of(st), "%s",
                    err->message);
}

static void c_move(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__MoveShardRequest *req = (const void *)m;
    (void)state;
    if (!svd_allowed(ctx, SVD_ROLE_ADMIN, "*", r) || !svd_field_ok(req->to_pod, "to_pod", SIZE_MAX, r) ||
        !svd_field_ok(req->from_pod, "from_pod", SIZE_MAX, r))
        return;
    if (!*req->to_pod || strlen(req->to_pod) > SVC_POD_NAME_MAX || strlen(req->from_pod) > SVC_POD_NAME_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "to_pod is 1..%d bytes, from_pod at most %d",
                        SVC_POD_NAME_MAX, SVC_POD_NAME_MAX);
        return;
    }
    if (req->shard >= svc_cluster_config_of(cl)->shards) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "shard %u: the cluster has %u shards", req->shard,
                        svc_cluster_config_of(cl)->shards);
        return;
    }
    sv_error err;
    sv_status st = svc_meta_move(svc_cluster_meta(cl), req->shard, req->to_pod, req->from_pod, &err);
    if (st != SV_OK) {
        map_error(r, st, &err);
        return;
    }
    Slimvec__V1__MoveShardResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__ShardMap *sm = map_message(cl, r);
    if (!resp || !sm) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__move_shard_response__init(resp);
    resp->map = sm;
    r->msg = &resp->base;
}

static void c_drain(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__DrainPodRequest *req = (const void *)m;
    (void)state;
    if (!svd_allowed(ctx, SVD_ROLE_ADMIN, "*", r) || !svd_field_ok(req->pod, "pod", SIZE_MAX, r))
        return;
    if (!*req->pod || strlen(req->pod) > SVC_POD_NAME_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "pod is 1..%d bytes", SVC_POD_NAME_MAX);
        return;
    }
    sv_error err;
    char *moved = svd_own(r, SVC_POD_NAME_MAX + 1);
    if (!moved) {
        svd_reply_oom(r);
        return;
    }
    sv_status st = svc_meta_drain(svc_cluster_meta(cl), req->pod, moved, SVC_POD_NAME_MAX + 1, &err);
    if (st != SV_OK) {
        map_error(r, st, &err);
        return;
    }
    Slimvec__V1__DrainPodResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__ShardMap *sm = map_message(cl, r);
    if (!resp || !sm) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__drain_pod_response__init(resp);
    resp->map = sm;
    resp->moved_to = moved;
    r->msg = &resp->base;
}

/* ---- collection admin, cluster-wide ----------------------------------------------------------------------- */

/* This replica's own figures (the single node's Describe of its copy). */
static void sh_describe(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_local_handler(PUBLIC("DescribeCollection"))(appv, ctx, state, m, r);
}

typedef struct admin_state {
    double since;
    svc_fanout_op *op;
    size_t n;
    svc_meta_replica *reps;      /* Describe: the replica each part asked */
    ProtobufCMessage **answers;  /* unpacked, freed at the end (the reply points into them) */
    svc_catalog_entry ce;
} admin_state;

static void admin_end(void *app, void *state, int cancelled)
{
    (void)app;
    (void)cancelled;
    admin_state *as = state;
    if (!as)
        return;
    svc_fanout_release(as->op);
    for (size_t i = 0; as->answers && i < as->n; i++)
        if (as->answers[i])
            protobuf_c_message_free_unpacked(as->answers[i], NULL);
    free(as->answers);
    free(as->reps);
    free(as);
}

/* Start path on every part: request req, part i to targets[i][0..n). */
static int admin_fan(svc_cluster *cl, svd_ctx *ctx, admin_state *as, const char *path, const ProtobufCMessage *req,
                     grpc_channel *const (*targets)[SVC_FANOUT_TARGETS], const int *n_targets, svd_reply *r)
{
    grpc_byte_buffer *bb = svd_pack(req);
    grpc_byte_buffer **reqs = calloc(as->n ? as->n : 1, sizeof *reqs);
    as->answers = calloc(as->n ? as->n : 1, sizeof *as->answers);
    if (bb && reqs && as->answers) {
        for (size_t i = 0; i < as->n; i++)
            reqs[i] = bb;
        grpc_metadata md[1];
        size_t n_md = 0;
        if (ctx->authorization) {
            md[0].key = grpc_slice_from_static_string("authorization");
            md[0].value = *ctx->authorization;
            n_md = 1;
        }
        double deadline = sv_now_seconds() + 5;
        if (deadline > deadline_of(ctx))
            deadline = deadline_of(ctx);
        as->op = svc_fanout_start(svc_cluster_fanout(cl), path, as->n, reqs, targets, n_targets, md, n_md, NULL,
                                  NULL, deadline);
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    free(reqs);
    if (!as->op)
        svd_reply_oom(r);
    return as->op != NULL;
}

/*
 * Describe through any pod: every replica's own figures (its shard's
 * part), and the cluster's totals: counts once per shard (its first ready
 * replica that answered), memory over every replica.
 */
static void h_describe(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__DescribeCollectionRequest *req = (const void *)m;
    admin_state *as = *state;
    if (!as) {
        if (!(as = *state = calloc(1, sizeof *as))) {
            svd_reply_oom(r);
            return;
        }
    }
    if (!as->op) {
        if (!route_lookup(app, ctx, SVD_ROLE_READ, req->name, &as->since, &as->ce, r))
            return;
        uint64_t epoch;
        int64_t rev;
        svc_meta_replica *all = NULL;
        size_t n = svc_meta_replicas(svc_cluster_meta(cl), &all, &epoch, &rev), k = 0;
        for (size_t i = 0; all && i < n; i++)
            if (all[i].state != SVC_REPLICA_LEAVING)
                all[k++] = all[i];
        as->reps = all;
        as->n = k;
        grpc_channel *(*targets)[SVC_FANOUT_TARGETS] = calloc(k ? k : 1, sizeof *targets);
        int *n_targets = calloc(k ? k : 1, sizeof *n_targets);
        int ok = all && targets && n_targets;
        for (size_t i = 0; ok && i < k; i++)
            n_targets[i] = (targets[i][0] = svc_cluster_channel(cl, all[i].address)) != NULL;
        if (ok)
            ok = admin_fan(cl, ctx, as, SHARD_METHOD("Describe"), m,
                           (grpc_channel *const (*)[SVC_FANOUT_TARGETS])targets, n_targets, r);
        else
            svd_reply_oom(r);
        free(targets);
        free(n_targets);
        if (ok)
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(as->op)) {
        r->defer = 1;
        return;
    }
    uint32_t S = svc_cluster_config_of(cl)->shards;
    Slimvec__V1__DescribeCollectionResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__CollectionInfo *info = svd_own(r, sizeof *info);
    Slimvec__V1__MemoryStats *mem = svd_own(r, sizeof *mem);
    Slimvec__V1__CollectionSpec *spec = svd_own(r, sizeof *spec);
    Slimvec__V1__GraphParams *graph = svd_own(r, sizeof *graph);
    Slimvec__V1__ReplicaCollectionInfo **rp = svd_own_array(r, as->n, sizeof *rp);
    Slimvec__V1__ReplicaCollectionInfo *rv = svd_own_array(r, as->n, sizeof *rv);
    svc_meta_replica *keep = svd_own_array(r, as->n, sizeof *keep);
    uint32_t *missing = svd_own_array(r, S, sizeof *missing);
    int *counted = calloc(S, sizeof *counted);
    if (!resp || !info || !mem || !spec || !graph || !missing || !counted ||
        (as->n && (!rp || !rv || !keep))) {
        free(counted);
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__describe_collection_response__init(resp);
    slimvec__v1__collection_info__init(info);
    slimvec__v1__memory_stats__init(mem);
    if (!svd_fill_spec(spec, graph, as->ce.name, &as->ce.params, r)) {
        free(counted);
        svd_reply_oom(r);
        return;
    }
    double degree_sum = 0, slots_sum = 0;
    for (size_t i = 0; i < as->n; i++) {
        const svc_part_result *pr = svc_fanout_result(as->op, i);
        keep[i] = as->reps[i];
        slimvec__v1__replica_collection_info__init(&rv[i]);
        rv[i].pod = keep[i].pod;
        rv[i].shard = keep[i].shard;
        rv[i].state = (Slimvec__V1__ReplicaState)keep[i].state;
        rp[i] = &rv[i];
        Slimvec__V1__DescribeCollectionResponse *a =
            pr->code == GRPC_STATUS_OK
                ? (void *)svd_unpack(&slimvec__v1__describe_collection_response__descriptor, pr->response)
                : NULL;
        as->answers[i] = a ? &a->base : NULL;
        if (!a || !a->info) {
            char *why = svd_own(r, sizeof pr->message);
            if (why) {
                snprintf(why, sizeof pr->message, "%s", pr->code == GRPC_STATUS_OK ? "a malformed answer" : pr->message);
                rv[i].error = why;
            }
            continue;
        }
        const Slimvec__V1__CollectionInfo *x = a->info;
        rv[i].info = a->info;
        if (x->memory) {
            mem->allocated_bytes += x->memory->allocated_bytes;
            mem->vectors_bytes_estimate += x->memory->vectors_bytes_estimate;
            mem->edges_bytes_estimate += x->memory->edges_bytes_estimate;
            mem->id_map_bytes_estimate += x->memory->id_map_bytes_estimate;
            mem->buffer_bytes_estimate += x->memory->buffer_bytes_estimate;
            mem->other_bytes_estimate += x->memory->other_bytes_estimate;
            mem->payload_bytes_estimate += x->memory->payload_bytes_estimate;
        }
        if (keep[i].shard < S && keep[i].state == SVC_REPLICA_READY && !counted[keep[i].shard]) {
            counted[keep[i].shard] = 1;
            info->vectors += x->vectors;
            info->indexed += x->indexed;
            info->buffered += x->buffered;
            info->tombstones += x->tombstones;
            /* Every replica applies the same INDEX records: the one with the most is the newest. */
            if (x->n_indexed_keys > info->n_indexed_keys) {
                info->n_indexed_keys = x->n_indexed_keys;
                info->indexed_keys = x->indexed_keys;
            }
            degree_sum += x->avg_degree * (double)x->indexed;
            slots_sum += x->avg_edge_slots * (double)x->indexed;
        }
    }
    for (uint32_t s = 0; s < S; s++)
        if (!counted[s])
            missing[resp->n_missing_shards++] = s;
    free(counted);
    info->spec = spec;
    info->avg_degree = info->indexed ? degree_sum / (double)info->indexed : 0;
    info->avg_edge_slots = info->indexed ? slots_sum / (double)info->indexed : 0;
    mem->bytes_per_vector = info->vectors ? (double)mem->allocated_bytes / (double)info->vectors : 0;
    info->memory = mem;
    resp->info = info;
    resp->n_replicas = as->n;
    resp->replicas = rp;
    resp->missing_shards = missing;
    r->msg = &resp->base;
}

/* ---- payloads: SetPayload, Count, Scroll ----------------------------------------------------------- */

/* A payload set: one SET_PAYLOAD record in the id's shard, answered by how
 * its replicas applied it (NOT_FOUND, a key's type: refusals they all make). */
static void h_set_payload(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__SetPayloadRequest *req = (const void *)m;
    write_state *w = write_state_of(state, r);
    if (!w)
        return;
    svc_catalog_entry ce;
    if (!route_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, &w->since, &ce, r))
        return;
    if (!w->incarnation)
        w->incarnation = ce.incarnation;
    if (!w->waiting) {
        sv_payload *pl = svd_set_payload_arg(app, req, r);
        if (!pl || !payloads_fit(pl, 1, r))
            return;
        uint8_t *rec = NULL;
        size_t len = 0;
        if (sv_logrec_set_payload(req->id, pl, req->patch ? SV_PAYLOAD_PATCH : SV_PAYLOAD_REPLACE, &rec, &len) !=
            SV_OK) {
            svd_reply_oom(r);
            return;
        }
        char key[72];
        batch_key(NULL, key, sizeof key, r);
        uint32_t shard = sv_follow_route(req->id, strlen(req->id), svc_cluster_config_of(cl)->shards);
        int ok = record_to(cl, &ce, shard, SV_WAL_SET_PAYLOAD, key, rec, len, w, r);
        free(rec);
        if (!ok)
            return;
    }
    if (!records_settled(cl, ctx, req->collection, w, NULL, r))
        return;
    Slimvec__V1__SetPayloadResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__set_payload_response__init(resp);
    resp->positions = positions(w, &resp->n_positions, r);
    r->msg = &resp->base;
}

/* CreateIndex: a record in every shard's log, answered once the replicas
 * applied them. */
static void h_create_index(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__CreateIndexRequest *req = (const void *)m;
    write_state *w = write_state_of(state, r);
    if (!w)
        return;
    svc_catalog_entry ce;
    char *const keys[1] = {req->key};
    if (!w->waiting && !svd_index_keys_ok(keys, 1, r))
        return;
    if (!route_lookup(app, ctx, SVD_ROLE_WRITE, req->collection, &w->since, &ce, r))
        return;
    if (!w->incarnation)
        w->incarnation = ce.incarnation;
    if (!w->waiting) {
        index_write(cl, &ce, req->key, w, r);
        if (r->code != GRPC_STATUS_OK)
            return;
    }
    if (!records_settled(cl, ctx, req->collection, w, NULL, r))
        return;
    Slimvec__V1__CreateIndexResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__create_index_response__init(resp);
    resp->positions = positions(w, &resp->n_positions, r);
    r->msg = &resp->base;
}

/* Count: every shard's, summed (a ready replica of each). */
static void h_count(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__CountRequest *req = (const void *)m;
    read_state *s = read_state_of(state, r);
    if (!s)
        return;
    if (!s->op) {
        svc_catalog_entry c;
        if (route_lookup(app, ctx, SVD_ROLE_READ, req->collection, &s->since, &c, r) &&
            fan_all(cl, ctx, s, SHARD_METHOD("Count"), m, r))
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(s->op)) {
        r->defer = 1;
        return;
    }
    if (restart_if_stale(cl, s, r))
        return;
    s->head.replied = 1;
    Slimvec__V1__CountResponse *resp = svd_own(r, sizeof *resp);
    if (!resp) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__count_response__init(resp);
    for (uint32_t i = 0; i < s->shards; i++) {
        const svc_part_result *pr = svc_fanout_result(s->op, i);
        if (pr->code != GRPC_STATUS_OK) {
            part_error(cl, r, i, pr);
            return;
        }
        Slimvec__V1__CountResponse *a = (void *)svd_unpack(&slimvec__v1__count_response__descriptor, pr->response);
        if (!a) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", i);
            return;
        }
        resp->count += a->count;
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    r->msg = &resp->base;
}

/*
 * Scroll: the shards in turn, each through its own pages. A shard's token
 * is a position in one replica's slot order, which its sibling does not
 * share (each recycles slots when it consolidates, on its own schedule):
 * so a scroll stays on the replica that gave the token. The cluster's
 * token is "shard:pod:token of that replica" (the replica checks its own
 * part), or "shard:*:" at a shard's start; when that pod no longer serves the shard the scroll must start
 * again (FAILED_PRECONDITION). A page takes what it can from one shard,
 * then goes on with the next while it has room: it is short only at the
 * end.
 */
typedef struct scroll_state {
    state_head head;
    double since;
    svc_fanout_op *op;
    uint32_t shard;                      /* the one asked now */
    char pod[SVC_POD_NAME_MAX + 1];      /* its replica ("": any, at a shard's start) */
    char token[32];                      /* that replica's token */
    char asked[SVC_FANOUT_TARGETS][SVC_POD_NAME_MAX + 1]; /* the pods of the op's targets */
    uint32_t want;                       /* vectors the page still has room for */
    ProtobufCMessage **pages;            /* the shards' answers so far */
    size_t n_pages;
} scroll_state;

static void scroll_reset(void *state)
{
    scroll_state *s = state;
    svc_fanout_release(s->op);
    for (size_t i = 0; i < s->n_pages; i++)
        protobuf_c_message_free_unpacked(s->pages[i], NULL);
    free(s->pages);
    clear_after_head(s, sizeof *s);
}

/* "shard:pod:token" into s; 0 and INVALID_ARGUMENT when it is not one a router gave. */
static int scroll_token(scroll_state *s, const char *token, uint32_t shards, svd_reply *r)
{
    if (!token[0])
        return 1;
    const char *c1 = strchr(token, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(token, &end, 10);
    /* "*" and no token: the start of a shard, on any replica. */
    int any = c2 == c1 + 2 && c1[1] == '*';
    if (!c2 || end != c1 || errno || token[0] < '0' || token[0] > '9' || v >= shards || c2 == c1 + 1 ||
        (size_t)(c2 - c1 - 1) > SVC_POD_NAME_MAX || (c2[1] == '\0') != any || strlen(c2 + 1) >= sizeof s->token) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "page_token is not one this cluster gave");
        return 0;
    }
    s->shard = (uint32_t)v;
    if (!any) {
        memcpy(s->pod, c1 + 1, (size_t)(c2 - c1 - 1));
        s->pod[c2 - c1 - 1] = '\0';
    }
    snprintf(s->token, sizeof s->token, "%s", c2 + 1);
    return 1;
}

/* Ask s->shard (its replica s->pod when one is set) for up to s->want
 * vectors from s->token. */
static int scroll_ask(svc_cluster *cl, svd_ctx *ctx, scroll_state *s, const Slimvec__V1__ScrollRequest *req,
                      svd_reply *r)
{
    grpc_channel *targets[1][SVC_FANOUT_TARGETS];
    uint64_t epoch = 0;
    int n = svc_cluster_targets(cl, s->shard, targets[0], s->asked, &epoch);
    if (s->pod[0]) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(s->asked[i], s->pod) == 0) {
                targets[0][k] = targets[0][i];
                memmove(s->asked[k++], s->asked[i], sizeof s->asked[i]);
            }
        if (!k) {
            svd_reply_error(r, GRPC_STATUS_FAILED_PRECONDITION,
                            "the replica this scroll was reading (%s, shard %u) no longer serves it: start the "
                            "scroll again", s->pod, s->shard);
            return 0;
        }
        n = k;
    }
    Slimvec__V1__ScrollRequest q = *req;
    q.page_size = s->want;
    q.page_token = s->token;
    grpc_byte_buffer *bb = svd_pack(&q.base);
    if (!bb) {
        svd_reply_oom(r);
        return 0;
    }
    svc_fanout_release(s->op);
    s->op = fan_out_to(cl, ctx, SHARD_METHOD("Scroll"), 1, &bb, &s->shard,
                       (grpc_channel *const (*)[SVC_FANOUT_TARGETS])targets, &n, &epoch, deadline_of(ctx), r);
    grpc_byte_buffer_destroy(bb);
    return s->op != NULL;
}

static void h_scroll(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    const Slimvec__V1__ScrollRequest *req = (const void *)m;
    scroll_state *s = state_of(state, sizeof(scroll_state), scroll_reset, r);
    if (!s)
        return;
    uint32_t S = svc_cluster_config_of(cl)->shards;
    if (!s->op) {
        svc_catalog_entry c;
        if (!route_lookup(app, ctx, SVD_ROLE_READ, req->collection, &s->since, &c, r))
            return;
        s->want = req->page_size ? req->page_size : 100;
        if (s->want > app->limits.max_get_ids) {
            if (req->page_size) {
                svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "page_size %u is over the server's --max-get-ids %u",
                                req->page_size, app->limits.max_get_ids);
                return;
            }
            s->want = app->limits.max_get_ids;
        }
        if (scroll_token(s, req->page_token, S, r) && scroll_ask(cl, ctx, s, req, r))
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(s->op)) {
        r->defer = 1;
        return;
    }
    const svc_part_result *pr = svc_fanout_result(s->op, 0);
    if (pr->code != GRPC_STATUS_OK) {
        s->head.replied = 1;
        part_error(cl, r, s->shard, pr);
        return;
    }
    ProtobufCMessage **t = realloc(s->pages, (s->n_pages + 1) * sizeof *t);
    Slimvec__V1__ScrollResponse *a = NULL;
    if (t)
        s->pages = t;
    if (!t || !(a = (void *)svd_unpack(&slimvec__v1__scroll_response__descriptor, pr->response))) {
        s->head.replied = 1;
        if (t)
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", s->shard);
        else
            svd_reply_oom(r);
        return;
    }
    s->pages[s->n_pages++] = &a->base;
    s->want -= a->n_vectors < s->want ? (uint32_t)a->n_vectors : s->want;
    int more = 1;
    if (a->next_page_token[0]) {
        /* Pinned to the replica that answered from here on. */
        if (pr->target >= 0 && pr->target < SVC_FANOUT_TARGETS)
            memcpy(s->pod, s->asked[pr->target], sizeof s->pod);
        snprintf(s->token, sizeof s->token, "%s", a->next_page_token);
    } else if (s->shard + 1 < S) {
        s->shard++;
        s->pod[0] = s->token[0] = '\0';
    } else {
        more = 0;
    }
    if (more && s->want > 0) {
        if (scroll_ask(cl, ctx, s, req, r))
            r->defer = 1;
        else
            s->head.replied = 1;
        return;
    }
    s->head.replied = 1;
    size_t n = 0;
    for (size_t i = 0; i < s->n_pages; i++)
        n += ((Slimvec__V1__ScrollResponse *)s->pages[i])->n_vectors;
    Slimvec__V1__ScrollResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__Vector **vs = svd_own_array(r, n, sizeof *vs);
    char *token = svd_own(r, 48 + SVC_POD_NAME_MAX);
    if (!resp || (n && !vs) || !token) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__scroll_response__init(resp);
    n = 0;
    for (size_t i = 0; i < s->n_pages; i++) {
        Slimvec__V1__ScrollResponse *pg = (void *)s->pages[i];
        for (size_t k = 0; k < pg->n_vectors; k++)
            vs[n++] = pg->vectors[k];
    }
    /* A new shard's first page: its pod is picked when it is asked. */
    if (!s->pod[0] && more)
        snprintf(token, 48 + SVC_POD_NAME_MAX, "%u:*:", s->shard);
    else
        snprintf(token, 48 + SVC_POD_NAME_MAX, "%u:%s:%s", s->shard, s->pod, s->token);
    resp->n_vectors = n;
    resp->vectors = vs;
    resp->next_page_token = more ? token : "";
    r->msg = &resp->base;
}

static void sh_count(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__CountRequest *req = (const void *)m;
    shard_read(appv, ctx, state, m, req->collection, req->after, req->n_after, PUBLIC("Count"), r);
}

static void sh_scroll(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    const Slimvec__V1__ScrollRequest *req = (const void *)m;
    shard_read(appv, ctx, state, m, req->collection, req->after, req->n_after, PUBLIC("Scroll"), r);
}

/* List through any pod: the catalog's collections the caller may read,
 * their vectors summed over the shards (a ready replica of each). */
static void h_list(void *appv, svd_ctx *ctx, void **state, const ProtobufCMessage *m, svd_reply *r)
{
    svd_app *app = appv;
    svc_cluster *cl = app->cluster;
    admin_state *as = *state;
    uint32_t S = svc_cluster_config_of(cl)->shards;
    if (!as) {
        if (!(as = *state = calloc(1, sizeof *as))) {
            svd_reply_oom(r);
            return;
        }
        as->n = S;
        grpc_channel *(*targets)[SVC_FANOUT_TARGETS] = calloc(S, sizeof *targets);
        int *n_targets = calloc(S, sizeof *n_targets);
        int ok = targets && n_targets;
        for (uint32_t i = 0; ok && i < S; i++) {
            uint64_t epoch;
            n_targets[i] = svc_cluster_targets(cl, i, targets[i], NULL, &epoch);
        }
        Slimvec__V1__ShardStatusRequest q = SLIMVEC__V1__SHARD_STATUS_REQUEST__INIT;
        (void)m;
        if (ok)
            ok = admin_fan(cl, ctx, as, SHARD_METHOD("Status"), &q.base,
                           (grpc_channel *const (*)[SVC_FANOUT_TARGETS])targets, n_targets, r);
        else
            svd_reply_oom(r);
        free(targets);
        free(n_targets);
        if (ok)
            r->defer = 1;
        return;
    }
    if (!svc_fanout_done(as->op)) {
        r->defer = 1;
        return;
    }
    for (uint32_t i = 0; i < S; i++) {
        const svc_part_result *pr = svc_fanout_result(as->op, i);
        if (pr->code != GRPC_STATUS_OK) {
            part_error(cl, r, i, pr);
            return;
        }
        if (!(as->answers[i] = svd_unpack(&slimvec__v1__shard_status_response__descriptor, pr->response))) {
            svd_reply_error(r, GRPC_STATUS_INTERNAL, "shard %u: a malformed answer", i);
            return;
        }
    }
    svc_catalog_entry *all = NULL;
    size_t total = svc_catalog_list(svc_cluster_catalog(cl), &all), n = 0;
    for (size_t i = 0; i < total; i++) /* a scoped token lists only what it may read */
        if (!ctx->principal || svd_principal_allows(ctx->principal, SVD_ROLE_READ, all[i].name))
            all[n++] = all[i];
    Slimvec__V1__ListCollectionsResponse *resp = svd_own(r, sizeof *resp);
    Slimvec__V1__CollectionInfo **ip = svd_own_array(r, n, sizeof *ip);
    Slimvec__V1__CollectionInfo *iv = svd_own_array(r, n, sizeof *iv);
    Slimvec__V1__CollectionSpec *sv = svd_own_array(r, n, sizeof *sv);
    Slimvec__V1__GraphParams *gv = svd_own_array(r, n, sizeof *gv);
    int ok = resp && (!n || (ip && iv && sv && gv));
    for (size_t i = 0; ok && i < n; i++) {
        slimvec__v1__collection_info__init(&iv[i]);
        ok = svd_fill_spec(&sv[i], &gv[i], all[i].name, &all[i].params, r);
        iv[i].spec = &sv[i];
        for (uint32_t s = 0; s < S; s++) {
            const Slimvec__V1__ShardStatusResponse *a = (const void *)as->answers[s];
            for (size_t k = 0; k < a->n_collections; k++)
                if (!strcmp(a->collections[k]->collection, all[i].name))
                    iv[i].vectors += a->collections[k]->vectors;
        }
        ip[i] = &iv[i];
    }
    free(all);
    if (!ok) {
        svd_reply_oom(r);
        return;
    }
    slimvec__v1__list_collections_response__init(resp);
    resp->n_collections = n;
    resp->collections = ip;
    r->msg = &resp->base;
}

/* ---- the table ----------------------------------------------------------------------------------------- */

static svd_method table[64];
static size_t table_n;

static void set(const char *path, const ProtobufCMessageDescriptor *d, svd_handler_fn fn, svd_end_fn end,
                svd_kind kind, int role)
{
    for (size_t i = 0; i < table_n; i++)
        if (strcmp(table[i].path, path) == 0) {
            table[i].handle = fn;
            table[i].end = end;
            return;
        }
    if (table_n == sizeof table / sizeof table[0])
        abort(); /* a table too small is a build mistake, found by the first test */
    table[table_n++] = (svd_method){path, d, fn, end, kind, 0, role};
}

const svd_method *svc_router_methods(size_t *n)
{
    if (!table_n) {
        size_t base_n = 0;
        const svd_method *base = svd_methods(&base_n);
        for (size_t i = 0; i < base_n && table_n < sizeof table / sizeof table[0]; i++)
            table[table_n++] = base[i];
        set(PUBLIC("CreateCollection"), &slimvec__v1__create_collection_request__descriptor, h_create, free_end,
            SVD_UNARY, SVD_ROLE_ADMIN);
        set(PUBLIC("DropCollection"), &slimvec__v1__drop_collection_request__descriptor, h_drop, free_end,
            SVD_UNARY, SVD_ROLE_ADMIN);
        set(PUBLIC("Ingest"), &slimvec__v1__ingest_request__descriptor, s_ingest, state_end, SVD_STREAM,
            SVD_ROLE_WRITE);
        set(PUBLIC("Delete"), &slimvec__v1__delete_request__descriptor, h_delete, state_end, SVD_UNARY,
            SVD_ROLE_WRITE);
        set(PUBLIC("Search"), &slimvec__v1__search_request__descriptor, h_search, state_end, SVD_UNARY,
            SVD_ROLE_READ);
        set(PUBLIC("SearchStream"), &slimvec__v1__search_request__descriptor, s_search, state_end, SVD_STREAM,
            SVD_ROLE_READ);
        set(PUBLIC("Get"), &slimvec__v1__get_request__descriptor, h_get, state_end, SVD_UNARY, SVD_ROLE_READ);
        set(SHARD_METHOD("Search"), &slimvec__v1__search_request__descriptor, sh_search, free_end, SVD_UNARY,
            SVD_ROLE_READ);
        set(SHARD_METHOD("Get"), &slimvec__v1__get_request__descriptor, sh_get, free_end,
            SVD_UNARY, SVD_ROLE_READ);
        set(SHARD_METHOD("Applied"), &slimvec__v1__shard_apply_request__descriptor, sh_applied, free_end,
            SVD_UNARY, SVD_ROLE_WRITE);
        set(SHARD_METHOD("Status"), &slimvec__v1__shard_status_request__descriptor, sh_status, NULL, SVD_UNARY,
            SVD_ROLE_READ);
        set(SHARD_METHOD("Describe"), &slimvec__v1__describe_collection_request__descriptor, sh_describe, NULL,
            SVD_UNARY, SVD_ROLE_READ);
        set(PUBLIC("DescribeCollection"), &slimvec__v1__describe_collection_request__descriptor, h_describe,
            admin_end, SVD_UNARY, SVD_ROLE_READ);
        set(PUBLIC("ListCollections"), &slimvec__v1__list_collections_request__descriptor, h_list, admin_end,
            SVD_UNARY, SVD_ROLE_READ);
        set(PUBLIC("SetPayload"), &slimvec__v1__set_payload_request__descriptor, h_set_payload, state_end,
            SVD_UNARY, SVD_ROLE_WRITE);
        set(PUBLIC("Count"), &slimvec__v1__count_request__descriptor, h_count, state_end, SVD_UNARY, SVD_ROLE_READ);
        set(PUBLIC("Scroll"), &slimvec__v1__scroll_request__descriptor, h_scroll, state_end, SVD_UNARY,
            SVD_ROLE_READ);
        set(PUBLIC("CreateIndex"), &slimvec__v1__create_index_request__descriptor, h_create_index, state_end,
            SVD_UNARY, SVD_ROLE_WRITE);
        set(SHARD_METHOD("Count"), &slimvec__v1__count_request__descriptor, sh_count, free_end, SVD_UNARY,
            SVD_ROLE_READ);
        set(SHARD_METHOD("Scroll"), &slimvec__v1__scroll_request__descriptor, sh_scroll, free_end, SVD_UNARY,
            SVD_ROLE_READ);
        set(SHARD_METHOD("FetchSnapshot"), &slimvec__v1__snapshot_chunk_request__descriptor, sh_fetch, fetch_end,
            SVD_STREAM, SVD_ROLE_ADMIN);
        set(CLUSTER_METHOD("Status"), &slimvec__v1__cluster_status_request__descriptor, c_status, status_end,
            SVD_UNARY, SVD_ROLE_ADMIN);
        set(CLUSTER_METHOD("MoveShard"), &slimvec__v1__move_shard_request__descriptor, c_move, NULL, SVD_UNARY,
            SVD_ROLE_ADMIN);
        set(CLUSTER_METHOD("DrainPod"), &slimvec__v1__drain_pod_request__descriptor, c_drain, NULL, SVD_UNARY,
            SVD_ROLE_ADMIN);
    }
    *n = table_n;
    return table;
}
