/*
 * gRPC C core server runtime (see rpc.h).
 *
 * Every call is one heap context holding the call, a mutex and one tag per
 * kind of batch. Completions of one call can arrive on two workers at once,
 * so every event takes the call's mutex; the context is freed when no batch
 * is in flight and the call is over.
 *
 * Stream protocol, per call:
 *   RECV_CLOSE_ON_SERVER alone first (completes when the call ends; tells
 *   whether it was cancelled), then SEND_INITIAL_METADATA + RECV_MESSAGE,
 *   then one RECV_MESSAGE per handled message. At most one send batch is in
 *   flight; answers queue behind it. A NULL message is a half-close *or* a
 *   cancel: nothing is "committed" at that point, every message was already
 *   applied and answered one by one, so either way the call just ends.
 */
#include "rpc.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS_PER_METHOD 4   /* requests kept posted per method */
#define MAX_QUEUED 16        /* answers waiting before reading pauses */

enum tag_kind { TAG_NEW, TAG_DONE, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_CLOSE, TAG_SHUTDOWN };

struct call;

typedef struct tag {
    struct call *c;
    enum tag_kind kind;
} tag;

typedef struct out_msg {
    grpc_byte_buffer *bb;
    struct out_msg *next;
} out_msg;

typedef struct call {
    svd_server *srv;
    int method;                   /* index, or -1 for an unknown method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;    /* unknown methods only */
    grpc_byte_buffer *payload;    /* unary request / last received message */
    pthread_mutex_t mu;
    int pending;                  /* batches in flight */
    tag t_new, t_done, t_recv, t_send, t_status, t_close;
    int cancelled;                /* from RECV_CLOSE_ON_SERVER */
    int closed;                   /* RECV_CLOSE_ON_SERVER completed */
    int ending;                   /* no more reads: send status after the queue */
    int recv_paused;              /* a read is due once the queue shrinks */
    int sending;                  /* a send batch is in flight */
    int status_started;
    int started;                  /* a real call arrived (not a returned request) */
    struct call *wprev, *wnext;   /* the server's list of open watch calls */
    int watching;
    out_msg *head, *tail;
    int queued;
    void *state;                  /* the stream handler's */
    grpc_status_code code;        /* final status */
    char message[512];
    grpc_slice status_details;
} call;

struct svd_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    const svd_method *methods;
    size_t n_methods;
    void **registered;            /* per method, from grpc_server_register_method */
    void *app;
    int n_threads;
    pthread_t *threads;
    int max_message;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    svd_server_config cfg;        /* observers */
    call *watchers;               /* open watch calls, guarded by mu */
    atomic_int shutting_down;     /* read by workers without the lock */
    int shutdown_done;
    tag t_shutdown;
};

void svd_reply_error(svd_reply *r, grpc_status_code code, const char *fmt, ...)
{
    r->code = code;
    r->msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

static call *call_new(svd_server *s, int method)
{
    call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = s;
    c->method = method;
    pthread_mutex_init(&c->mu, NULL);
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    c->t_new = (tag){c, TAG_NEW};
    c->t_done = (tag){c, TAG_DONE};
    c->t_recv = (tag){c, TAG_RECV};
    c->t_send = (tag){c, TAG_SEND};
    c->t_status = (tag){c, TAG_STATUS};
    c->t_close = (tag){c, TAG_CLOSE};
    c->code = GRPC_STATUS_OK;
    return c;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void watch_unlink(call *c)
{
    svd_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    if (c->watching) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            s->watchers = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        c->watching = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

static void call_free(call *c)
{
    watch_unlink(c);
    const svd_method *m = c->method >= 0 ? &c->srv->methods[c->method] : NULL;
    const svd_server_config *cfg = &c->srv->cfg;
    if (c->started && cfg->on_call_end)
        cfg->on_call_end(cfg->observer, c->method,
                         c->cancelled && c->code == GRPC_STATUS_OK ? GRPC_STATUS_CANCELLED : c->code);
    if (m && m->stream && m->end && c->call)
        m->end(c->srv->app, c->state, c->cancelled);
    while (c->head) {
        out_msg *o = c->head;
        c->head = o->next;
        grpc_byte_buffer_destroy(o->bb);
        free(o);
    }
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->status_started)
        grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->call)
        grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Post a request for the next call of method m (-1: unknown methods). */
static void post_request(svd_server *s, int m)
{
    call *c = call_new(s, m);
    if (!c)
        return;
    grpc_call_error e;
    c->pending = 1;
    if (m >= 0) {
        const svd_method *meth = &s->methods[m];
        e = grpc_server_request_registered_call(s->server, s->registered[m], &c->call, &c->deadline,
                                                &c->md, meth->unary ? &c->payload : NULL, s->cq,
                                                s->cq, &c->t_new);
    } else {
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        c->pending = 0;
        call_free(c);
    }
}

/* Pack a protobuf-c message into a byte buffer (NULL on failure). */
static grpc_byte_buffer *pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* Unpack a received buffer with the method's descriptor (NULL: malformed). */
static ProtobufCMessage *unpack(const svd_method *m, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *msg = protobuf_c_message_unpack(m->request, NULL, GRPC_SLICE_LENGTH(all),
                                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

static int start(call *c, const grpc_op *ops, size_t n, tag *t)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK)
        return -1;
    c->pending++;
    return 0;
}

/* Unary and unknown methods: one batch with everything. */
static void finish_unary(call *c, grpc_byte_buffer *response)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (response) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = response;
    }
    c->status_details = grpc_slice_from_copied_string(c->message);
    c->status_started = 1;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    start(c, ops, n, &c->t_done);
    if (response)
        grpc_byte_buffer_destroy(response); /* the batch holds its own reference */
}

static void handle_unary(call *c)
{
    const svd_method *m = &c->srv->methods[c->method];
    ProtobufCMessage *req = c->payload ? unpack(m, c->payload) : NULL;
    grpc_byte_buffer *response = NULL;
    if (!req) {
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(c->message, sizeof c->message, "malformed %s message", m->request->name);
    } else if (c->srv->shutting_down) {
        c->code = GRPC_STATUS_UNAVAILABLE;
        snprintf(c->message, sizeof c->message, "the server is shutting down");
    } else {
        svd_reply r = {.code = GRPC_STATUS_OK};
        double t0 = now_seconds();
        m->unary(c->srv->app, req, &r);
        if (c->srv->cfg.on_message)
            c->srv->cfg.on_message(c->srv->cfg.observer, c->method, now_seconds() - t0);
        c->code = r.code;
        snprintf(c->message, sizeof c->message, "%s", r.code == GRPC_STATUS_OK ? "" : r.message);
        if (r.code == GRPC_STATUS_OK && r.msg)
            response = pack(r.msg);
        if (r.free_fn)
            r.free_fn(r.owned);
        protobuf_c_message_free_unpacked(req, NULL);
    }
    finish_unary(c, response);
}

/* ---- streams ------------------------------------------------------------ */

static void post_recv(call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->payload;
    if (start(c, &op, 1, &c->t_recv) != 0)
        c->ending = 1;
}

static void send_status(call *c)
{
    if (c->status_started)
        return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    c->status_details = grpc_slice_from_copied_string(c->message);
    c->status_started = 1;
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = c->code;
    op.data.send_status_from_server.status_details = &c->status_details;
    start(c, &op, 1, &c->t_status);
}

/* Send the next queued answer, or the status once the stream is ending. */
static void pump(call *c)
{
    if (c->sending)
        return;
    if (c->head && !c->cancelled) {
        out_msg *o = c->head;
        c->head = o->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = o->bb;
        if (start(c, &op, 1, &c->t_send) == 0)
            c->sending = 1;
        grpc_byte_buffer_destroy(o->bb);
        free(o);
        if (c->recv_paused && c->queued < MAX_QUEUED && !c->ending) {
            c->recv_paused = 0;
            post_recv(c);
        }
        return;
    }
    if (c->ending)
        send_status(c);
}

static void enqueue(call *c, grpc_byte_buffer *bb)
{
    out_msg *o = malloc(sizeof *o);
    if (!o) {
        grpc_byte_buffer_destroy(bb);
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(c->message, sizeof c->message, "out of memory queueing a response");
        c->ending = 1;
        return;
    }
    o->bb = bb;
    o->next = NULL;
    if (c->tail)
        c->tail->next = o;
    else
        c->head = o;
    c->tail = o;
    c->queued++;
}

static void stream_begin(call *c)
{
    if (c->srv->methods[c->method].watch) {
        svd_server *s = c->srv;
        pthread_mutex_lock(&s->mu);
        c->wnext = s->watchers;
        if (s->watchers)
            s->watchers->wprev = c;
        s->watchers = c;
        c->watching = 1;
        pthread_mutex_unlock(&s->mu);
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[0].data.recv_close_on_server.cancelled = &c->cancelled;
    if (start(c, ops, 1, &c->t_close) != 0)
        return;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &c->payload;
    if (start(c, ops, 2, &c->t_recv) != 0)
        c->ending = 1;
}

static void stream_received(call *c, int success)
{
    const svd_method *m = &c->srv->methods[c->method];
    grpc_byte_buffer *bb = c->payload;
    c->payload = NULL;
    if (success && !bb && m->watch) {
        /* A watch stays open after the client's half-close. */
        return;
    }
    if (!success || !bb) {
        /* Half-close or cancel: every message so far was applied and
         * answered on its own, so nothing is pending either way. */
        c->ending = 1;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        pump(c);
        return;
    }
    ProtobufCMessage *req = unpack(m, bb);
    grpc_byte_buffer_destroy(bb);
    if (!req) {
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(c->message, sizeof c->message, "malformed %s message", m->request->name);
        c->ending = 1;
        pump(c);
        return;
    }
    if (c->srv->shutting_down) {
        protobuf_c_message_free_unpacked(req, NULL);
        c->code = GRPC_STATUS_UNAVAILABLE;
        snprintf(c->message, sizeof c->message, "the server is shutting down");
        c->ending = 1;
        pump(c);
        return;
    }
    svd_reply r = {.code = GRPC_STATUS_OK};
    double t0 = now_seconds();
    m->stream(c->srv->app, &c->state, req, &r);
    if (c->srv->cfg.on_message)
        c->srv->cfg.on_message(c->srv->cfg.observer, c->method, now_seconds() - t0);
    if (r.code == GRPC_STATUS_OK && r.msg) {
        enqueue(c, pack(r.msg));
    } else if (r.code != GRPC_STATUS_OK) {
        c->code = r.code;
        snprintf(c->message, sizeof c->message, "%s", r.message);
        c->ending = 1;
    }
    if (r.free_fn)
        r.free_fn(r.owned);
    protobuf_c_message_free_unpacked(req, NULL);
    if (!c->ending) {
        if (c->queued >= MAX_QUEUED)
            c->recv_paused = 1;
        else
            post_recv(c);
    }
    pump(c);
}

/* ---- event loop ----------------------------------------------------------- */

static void handle_new(call *c, int success)
{
    svd_server *s = c->srv;
    if (!success) {
        /* The server is shutting down: the posted request is returned. */
        return;
    }
    c->started = 1;
    if (!s->shutting_down)
        post_request(s, c->method);
    if (c->method < 0) {
        c->code = GRPC_STATUS_UNIMPLEMENTED;
        char *path = grpc_slice_to_c_string(c->details.method);
        snprintf(c->message, sizeof c->message, "unknown method %s", path);
        gpr_free(path);
        finish_unary(c, NULL);
    } else if (s->methods[c->method].unary) {
        handle_unary(c);
    } else {
        stream_begin(c);
    }
}

static void handle_event(svd_server *s, grpc_event ev)
{
    tag *t = ev.tag;
    if (t->kind == TAG_SHUTDOWN) {
        pthread_mutex_lock(&s->mu);
        s->shutdown_done = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    call *c = t->c;
    pthread_mutex_lock(&c->mu);
    c->pending--;
    switch (t->kind) {
    case TAG_NEW: handle_new(c, ev.success); break;
    case TAG_DONE: c->closed = 1; break;
    case TAG_RECV: stream_received(c, ev.success); break;
    case TAG_SEND:
        c->sending = 0;
        if (!ev.success)
            c->ending = 1;
        pump(c);
        break;
    case TAG_STATUS: break;
    case TAG_CLOSE:
        c->closed = 1;
        if (c->cancelled)
            c->ending = 1;
        pump(c);
        break;
    case TAG_SHUTDOWN: break;
    }
    int done = c->pending == 0;
    pthread_mutex_unlock(&c->mu);
    if (done)
        call_free(c);
}

static void *worker(void *arg)
{
    svd_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type == GRPC_OP_COMPLETE)
            handle_event(s, ev);
    }
}

svd_server *svd_server_start(const svd_server_config *cfg, const svd_method *methods,
                             size_t n_methods, void *app, char *err, size_t err_cap)
{
    svd_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    s->methods = methods;
    s->n_methods = n_methods;
    s->app = app;
    s->n_threads = cfg->threads > 0 ? cfg->threads : 2;
    s->max_message = cfg->max_message_bytes;
    s->cfg = *cfg;
    s->t_shutdown = (tag){NULL, TAG_SHUTDOWN};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);

    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = cfg->max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = cfg->max_message_bytes;
    grpc_channel_args chargs = {2, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->registered = calloc(n_methods, sizeof *s->registered);
    for (size_t i = 0; i < n_methods; i++) {
        s->registered[i] = grpc_server_register_method(
            s->server, methods[i].path, NULL,
            methods[i].unary ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
        if (!s->registered[i]) {
            snprintf(err, err_cap, "cannot register %s", methods[i].path);
            goto fail;
        }
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, err_cap, "cannot listen on %s", cfg->listen);
        goto fail;
    }
    grpc_server_start(s->server);
    for (size_t i = 0; i < n_methods; i++)
        for (int k = 0; k < SLOTS_PER_METHOD; k++)
            post_request(s, (int)i);
    for (int k = 0; k < SLOTS_PER_METHOD; k++)
        post_request(s, -1);
    s->threads = calloc((size_t)s->n_threads, sizeof *s->threads);
    for (int i = 0; i < s->n_threads; i++)
        pthread_create(&s->threads[i], NULL, worker, s);
    return s;

fail:
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    free(s->registered);
    free(s);
    return NULL;
}

void svd_server_stop(svd_server *s, double grace_seconds)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->shutting_down = 1;
    /* Watchers get one last update (e.g. NOT_SERVING), then their calls end
     * so that the drain can finish. Lock order: server, then call. */
    for (call *c = s->watchers; c; c = c->wnext) {
        pthread_mutex_lock(&c->mu);
        const svd_method *m = &s->methods[c->method];
        /* pending 0: a worker has decided to free this call and waits for
         * the list lock to unlink it; starting a batch now would race that. */
        if (!c->ending && c->pending > 0) {
            svd_reply r = {.code = GRPC_STATUS_OK};
            m->stream(s->app, &c->state, NULL, &r);
            if (r.code == GRPC_STATUS_OK && r.msg)
                enqueue(c, pack(r.msg));
            if (r.free_fn)
                r.free_fn(r.owned);
            c->ending = 1;
            pump(c);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                      gpr_time_from_millis((int64_t)(grace_seconds * 1000), GPR_TIMESPAN));
    struct timespec ts = {until.tv_sec, until.tv_nsec};
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0)
            break;
    }
    int drained = s->shutdown_done;
    pthread_mutex_unlock(&s->mu);
    if (!drained) {
        grpc_server_cancel_all_calls(s->server);
        pthread_mutex_lock(&s->mu);
        while (!s->shutdown_done)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
    grpc_completion_queue_shutdown(s->cq);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->threads);
    free(s->registered);
    free(s);
}
