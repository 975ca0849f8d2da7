/* etcd's v3 API on our gRPC C core (see etcd.h). */
#include "etcd.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "call.h"
#include "error.h"

#define RETRY_PAUSE_US 300000 /* a watch that broke starts again after this */

struct svc_etcd {
    grpc_channel *ch[SVC_ETCD_ENDPOINTS_MAX];
    int n;
    atomic_int current;          /* the member that answered last: asked first */
    double timeout;
};

sv_status svc_etcd_create(const svc_etcd_config *cfg, svc_etcd **out, sv_error *err)
{
    *out = NULL;
    if (!cfg->endpoints || !*cfg->endpoints)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "no etcd endpoints");
    svc_etcd *e = calloc(1, sizeof *e);
    char *copy = strdup(cfg->endpoints);
    if (!e || !copy) {
        free(e);
        free(copy);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory");
    }
    e->timeout = cfg->timeout_seconds > 0 ? cfg->timeout_seconds : 2;
    /* A member that is down fails at once (connection refused) and one
     * that comes back is found within a second. */
    grpc_arg args[2];
    svd_client_fast_reconnect(args);
    sv_status st = SV_OK;
    char *save = NULL;
    for (char *ep = strtok_r(copy, ",", &save); ep && st == SV_OK; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!strncmp(ep, "http://", 7))
            ep += 7;
        else if (!strncmp(ep, "https://", 8))
            ep += 8;
        if (!*ep)
            continue;
        if (e->n == SVC_ETCD_ENDPOINTS_MAX) {
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "more than %d etcd endpoints", SVC_ETCD_ENDPOINTS_MAX);
            break;
        }
        char why[256] = "";
        if (!(e->ch[e->n] = svd_client_channel(ep, &cfg->tls, args, 2, why, sizeof why)))
            st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "etcd endpoint %s: %s", ep, why);
        else
            e->n++;
    }
    free(copy);
    if (st == SV_OK && !e->n)
        st = sv_fail(err, SV_ERR_INVALID_ARGUMENT, "no etcd endpoints in \"%s\"", cfg->endpoints);
    if (st != SV_OK) {
        svc_etcd_free(e);
        return st;
    }
    *out = e;
    return sv_ok(err);
}

void svc_etcd_free(svc_etcd *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->n; i++)
        grpc_channel_destroy(e->ch[i]);
    free(e);
}

/* A failure of the member (or of reaching it), not of the request: the
 * next member may answer. */
static int member_failed(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED || c == GRPC_STATUS_UNKNOWN ||
           c == GRPC_STATUS_CANCELLED || c == GRPC_STATUS_RESOURCE_EXHAUSTED || c == GRPC_STATUS_INTERNAL;
}

/* One call, on the member that answered last, then on each other one.
 * *retried (may be NULL): an attempt before the one that answered failed
 * in a way that may have applied it (a transaction that timed out may have
 * committed: its caller checks what it finds). */
static sv_status call_ex(svc_etcd *e, const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int *retried,
                         sv_error *err)
{
    int first = atomic_load(&e->current);
    svd_call_status st = {GRPC_STATUS_UNAVAILABLE, "no member"};
    if (retried)
        *retried = 0;
    for (int k = 0; k < e->n; k++) {
        int i = (first + k) % e->n;
        if (svd_call_unary(e->ch[i], path, NULL, 0, req, resp_desc, e->timeout, resp, &st) == GRPC_STATUS_OK) {
            atomic_store(&e->current, i);
            return sv_ok(err);
        }
        if (!member_failed(st.code))
            break;
        if (retried)
            *retried = 1;
    }
    return sv_fail(err, member_failed(st.code) ? SV_ERR_IO : SV_ERR_INVALID_ARGUMENT, "etcd %s: %s (status %d)",
                   strrchr(path, '/') + 1, st.message, (int)st.code);
}

static sv_status call(svc_etcd *e, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, sv_error *err)
{
    return call_ex(e, path, req, resp_desc, resp, NULL, err);
}

/* The end of the range of keys starting with prefix: the prefix with its
 * last byte below 0xff plus one (etcd's convention). */
static size_t prefix_end(const char *prefix, uint8_t *out, size_t cap)
{
    size_t n = strlen(prefix);
    if (n > cap)
        return 0;
    memcpy(out, prefix, n);
    while (n && out[n - 1] == 0xff)
        n--;
    if (!n) {
        out[0] = 0; /* every key */
        return 1;
    }
    out[n - 1]++;
    return n;
}

sv_status svc_etcd_range(svc_etcd *e, const char *key, int prefix, int serializable,
                         Etcdserverpb__RangeResponse **out, sv_error *err)
{
    *out = NULL;
    uint8_t end[512];
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = strlen(key);
    if (prefix) {
        if (!(req.range_end.len = prefix_end(key, end, sizeof end)))
            return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "etcd key too long");
        req.range_end.data = end;
    }
    req.serializable = serializable != 0;
    return call(e, "/etcdserverpb.KV/Range", &req.base, &etcdserverpb__range_response__descriptor,
                (ProtobufCMessage **)out, err);
}

void svc_etcd_range_free(Etcdserverpb__RangeResponse *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

static sv_status txn(svc_etcd *e, Etcdserverpb__Compare *cmp, Etcdserverpb__RequestOp *op, int *succeeded,
                     int64_t *revision, int *retried, sv_error *err)
{
    Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
    Etcdserverpb__Compare *cmps[1] = {cmp};
    Etcdserverpb__RequestOp *ops[1] = {op};
    req.n_compare = cmp ? 1 : 0;
    req.compare = cmps;
    req.n_success = 1;
    req.success = ops;
    Etcdserverpb__TxnResponse *resp = NULL;
    sv_status st = call_ex(e, "/etcdserverpb.KV/Txn", &req.base, &etcdserverpb__txn_response__descriptor,
                           (ProtobufCMessage **)&resp, retried, err);
    if (st != SV_OK)
        return st;
    *succeeded = resp->succeeded;
    if (revision)
        *revision = resp->header ? resp->header->revision : 0;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return SV_OK;
}

sv_status svc_etcd_put_if(svc_etcd *e, const char *key, int64_t mod_revision, const uint8_t *value, size_t len,
                          int64_t lease, int *swapped, int64_t *revision, sv_error *err)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key.data = (uint8_t *)key;
    cmp.key.len = strlen(key);
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = mod_revision; /* a key that does not exist has mod revision 0 */
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = cmp.key;
    put.value.data = (uint8_t *)value;
    put.value.len = len;
    put.lease = lease;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    int retried = 0;
    sv_status st = txn(e, mod_revision >= 0 ? &cmp : NULL, &op, swapped, revision, &retried, err);
    if (st != SV_OK || *swapped || !retried)
        return st;
    /* The compare failed on a second try: the first may have committed.
     * The key holding exactly this value now is taken as ours (whoever
     * wrote the same bytes wrote the same thing). */
    Etcdserverpb__RangeResponse *r = NULL;
    if (svc_etcd_range(e, key, 0, 0, &r, err) != SV_OK)
        return sv_ok(err); /* not swapped, as far as is known */
    if (r->n_kvs == 1 && r->kvs[0]->value.len == len && (!len || !memcmp(r->kvs[0]->value.data, value, len))) {
        *swapped = 1;
        if (revision)
            *revision = r->kvs[0]->mod_revision;
    }
    svc_etcd_range_free(r);
    return sv_ok(err);
}

sv_status svc_etcd_delete_if(svc_etcd *e, const char *key, int64_t create_revision, int *deleted, sv_error *err)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp.key.data = (uint8_t *)key;
    cmp.key.len = strlen(key);
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp.create_revision = create_revision;
    Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del.key = cmp.key;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op.request_delete_range = &del;
    int retried = 0;
    sv_status st = txn(e, &cmp, &op, deleted, NULL, &retried, err);
    if (st != SV_OK || *deleted || !retried)
        return st;
    /* A second try found the key gone or replaced: gone is what was asked. */
    Etcdserverpb__RangeResponse *r = NULL;
    if (svc_etcd_range(e, key, 0, 0, &r, err) != SV_OK)
        return sv_ok(err);
    *deleted = r->n_kvs == 0;
    svc_etcd_range_free(r);
    return sv_ok(err);
}

sv_status svc_etcd_lease_grant(svc_etcd *e, int64_t ttl, int64_t *id, sv_error *err)
{
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = ttl;
    Etcdserverpb__LeaseGrantResponse *resp = NULL;
    sv_status st = call(e, "/etcdserverpb.Lease/LeaseGrant", &req.base,
                        &etcdserverpb__lease_grant_response__descriptor, (ProtobufCMessage **)&resp, err);
    if (st != SV_OK)
        return st;
    if (resp->error && *resp->error)
        st = sv_fail(err, SV_ERR_IO, "etcd LeaseGrant: %s", resp->error);
    else
        *id = resp->id;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return st;
}

sv_status svc_etcd_lease_keepalive(svc_etcd *e, int64_t id, int64_t *ttl, sv_error *err)
{
    /* LeaseKeepAlive is a stream; one request and the end of ours is one
     * exchange: etcd answers it, sees the end and closes with OK. */
    Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    req.id = id;
    Etcdserverpb__LeaseKeepAliveResponse *resp = NULL;
    sv_status st = call(e, "/etcdserverpb.Lease/LeaseKeepAlive", &req.base,
                        &etcdserverpb__lease_keep_alive_response__descriptor, (ProtobufCMessage **)&resp, err);
    if (st != SV_OK)
        return st;
    *ttl = resp->ttl > 0 ? resp->ttl : 0;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return SV_OK;
}

sv_status svc_etcd_lease_revoke(svc_etcd *e, int64_t id, sv_error *err)
{
    Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    req.id = id;
    Etcdserverpb__LeaseRevokeResponse *resp = NULL;
    sv_status st = call(e, "/etcdserverpb.Lease/LeaseRevoke", &req.base,
                        &etcdserverpb__lease_revoke_response__descriptor, (ProtobufCMessage **)&resp, err);
    if (st == SV_OK)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return st;
}

/* ---- watch ------------------------------------------------------------------------- */

struct svc_etcd_watch {
    svc_etcd *e;
    char *prefix;
    void (*changed)(void *ctx);
    void *ctx;
    pthread_t thread;
    atomic_int stop;
};

enum { W_START = 1, W_RECV, W_STATUS };
static char watch_tags[4];

/* One watch call on member i until it ends (or stop): 0 when it ran. */
static void watch_once(svc_etcd_watch *w, int i)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_call *call = grpc_channel_create_call(w->e->ch[i], NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string("/etcdserverpb.Watch/Watch"), NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *recv_bb = NULL;
    uint8_t end[512];
    Etcdserverpb__WatchCreateRequest create = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    create.key.data = (uint8_t *)w->prefix;
    create.key.len = strlen(w->prefix);
    create.range_end.data = end;
    create.range_end.len = prefix_end(w->prefix, end, sizeof end);
    Etcdserverpb__WatchRequest wreq = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wreq.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wreq.create_request = &create;
    grpc_byte_buffer *send_bb = svd_pack(&wreq.base);
    int pending = 0, recv_pending = 0, status_done = 0, cancelled = 0;

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    if (grpc_call_start_batch(call, ops, 3, &watch_tags[W_START], NULL) == GRPC_CALL_OK)
        pending++;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(call, ops, 1, &watch_tags[W_STATUS], NULL) == GRPC_CALL_OK)
        pending++;
    else
        status_done = 1;
    int first = 1;
    while (pending) {
        if (!recv_pending && !status_done && !cancelled) {
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_RECV_MESSAGE;
            ops[0].data.recv_message.recv_message = &recv_bb;
            if (grpc_call_start_batch(call, ops, 1, &watch_tags[W_RECV], NULL) == GRPC_CALL_OK) {
                pending++;
                recv_pending = 1;
            }
        }
        /* Wake now and then to see whether to stop. */
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (atomic_load(&w->stop) && !cancelled) {
                grpc_call_cancel(call, NULL);
                cancelled = 1;
            }
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        pending--;
        if (ev.tag == &watch_tags[W_STATUS]) {
            status_done = 1;
        } else if (ev.tag == &watch_tags[W_RECV]) {
            recv_pending = 0;
            if (!ev.success || !recv_bb) {
                if (!cancelled) { /* the stream ended: wait for the status */
                    grpc_call_cancel(call, NULL);
                    cancelled = 1;
                }
                continue;
            }
            Etcdserverpb__WatchResponse *resp =
                (Etcdserverpb__WatchResponse *)svd_unpack(&etcdserverpb__watch_response__descriptor, recv_bb);
            grpc_byte_buffer_destroy(recv_bb);
            recv_bb = NULL;
            int news = resp && (resp->n_events || first);
            int over = !resp || resp->canceled;
            if (resp)
                protobuf_c_message_free_unpacked(&resp->base, NULL);
            first = 0;
            if (news && !atomic_load(&w->stop))
                w->changed(w->ctx); /* the watch is up (or events came): read again */
            if (over && !cancelled) {
                grpc_call_cancel(call, NULL);
                cancelled = 1;
            }
        }
    }
    grpc_call_unref(call);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

static void *watch_thread(void *arg)
{
    svc_etcd_watch *w = arg;
    while (!atomic_load(&w->stop)) {
        int i = atomic_load(&w->e->current);
        watch_once(w, i);
        if (atomic_load(&w->stop))
            break;
        /* It broke (the member went away): something may have changed
         * meanwhile; look, then watch through another member. */
        w->changed(w->ctx);
        int expect = i;
        atomic_compare_exchange_strong(&w->e->current, &expect, (i + 1) % w->e->n);
        for (int t = 0; t < RETRY_PAUSE_US / 50000 && !atomic_load(&w->stop); t++)
            usleep(50000);
    }
    return NULL;
}

svc_etcd_watch *svc_etcd_watch_start(svc_etcd *e, const char *prefix, void (*changed)(void *ctx), void *ctx)
{
    svc_etcd_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->prefix = strdup(prefix))) {
        free(w);
        return NULL;
    }
    w->e = e;
    w->changed = changed;
    w->ctx = ctx;
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        free(w->prefix);
        free(w);
        return NULL;
    }
    return w;
}

void svc_etcd_watch_stop(svc_etcd_watch *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    free(w->prefix);
    free(w);
}

sv_status svc_etcd_delete_prefix(svc_etcd *e, const char *prefix, sv_error *err)
{
    uint8_t end[512];
    Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del.key.data = (uint8_t *)prefix;
    del.key.len = strlen(prefix);
    if (!(del.range_end.len = prefix_end(prefix, end, sizeof end)))
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "etcd key too long");
    del.range_end.data = end;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op.request_delete_range = &del;
    int done = 0;
    return txn(e, NULL, &op, &done, NULL, NULL, err);
}
