/*
 * gRPC C core server runtime (see rpc.h).
 *
 * Every call is one heap context. Its `pending` count holds it alive: one
 * for each batch in flight and one while it has a job (queued, running or
 * deferred); the context is freed when the count reaches zero.
 *
 * Locks (order: the server's mu, then a call's mu; never the reverse, see
 * core/lockorder.h): the server's `mu` guards the job queues, the list of
 * live calls, the counters and the shutdown flags; a call's `mu` guards the
 * call's state. Handlers run holding neither: completions of the same call
 * (its close, a finished send) are handled meanwhile on an event thread.
 *
 * Per call:
 *   RECV_CLOSE_ON_SERVER alone first (completes when the call ends; tells
 *   whether it was cancelled, which handlers read through an atomic). Unary:
 *   the request is a job; its answer goes out in one batch (initial
 *   metadata, message, status). Stream: SEND_INITIAL_METADATA + RECV_MESSAGE,
 *   each message a job, the next read posted once it is answered. At most
 *   one send batch in flight; answers queue behind it. A NULL message is a
 *   half-close *or* a cancel: every message was already answered on its own,
 *   so either way the call just ends.
 *
 * Decoded requests live in a per-job arena whose bytes come from the
 * in-flight budget, so a small message that decodes into a lot of memory is
 * refused instead of allocated; the arena also remembers each string's true
 * length (svd_request_strlen).
 */
#include "rpc.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS_PER_METHOD 4      /* requests kept posted per method */
#define TICK_MS 100             /* deferred jobs retried, send timeouts checked */
#define ARENA_CHUNK (64u * 1024u)

enum tag_kind { TAG_NEW, TAG_DONE, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_CLOSE, TAG_SHUTDOWN };
enum job_state { JOB_NONE, JOB_QUEUED, JOB_RUNNING, JOB_DEFERRED };

struct call;

typedef struct tag {
    struct call *c;
    enum tag_kind kind;
} tag;

typedef struct out_msg {
    grpc_byte_buffer *bb;
    size_t bytes;                 /* reserved in the in-flight budget until sent */
    struct out_msg *next;
} out_msg;

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} chunk;

/* A decoded request's memory: bump allocation from chunks charged to the
 * server's in-flight budget; each block is preceded by its size. */
typedef struct reqmem {
    svd_server *srv;
    chunk *chunks;
    size_t reserved;
    int over;                     /* an allocation was refused by the budget */
} reqmem;

typedef struct call {
    svd_server *srv;
    int method;                   /* index, or -1 for an unknown method */
    grpc_call *call;
    gpr_timespec deadline_raw;
    grpc_metadata_array md;
    grpc_call_details details;    /* unknown methods only */
    grpc_byte_buffer *payload;    /* received, not yet taken by a job */
    pthread_mutex_t mu;
    int pending;                  /* batches in flight + 1 while it has a job */
    tag t_new, t_done, t_recv, t_send, t_status, t_close;
    int close_cancelled;          /* written by gRPC when RECV_CLOSE_ON_SERVER completes */
    atomic_int cancelled;         /* copied from it on that completion: handlers read this */
    int closed;                   /* RECV_CLOSE_ON_SERVER completed */
    int ending;                   /* no more reads: send status after the queue */
    int recv_paused;              /* a read is due once the queue shrinks */
    int sending;                  /* a send batch is in flight */
    _Atomic double send_since;    /* when it started (0: none; -1: cancelled for it);
                                     the ticker reads it without the call's lock */
    size_t sending_bytes;         /* its reservation */
    int status_started;
    int started;                  /* a real call arrived (not a returned request) */
    int counted;                  /* admitted: counted in calls (and streams) */
    int refused;                  /* over a call limit: refused with code and message */
    int want_job;                 /* a job is to be queued once mu is released */
    int has_job;                  /* a job is queued, running or deferred (mu) */
    struct call *wprev, *wnext;   /* the server's list of open watch calls */
    int watching;
    out_msg *head, *tail;
    int queued;
    void *state;                  /* the handler's */
    grpc_status_code code;        /* final status */
    char message[512];
    grpc_slice status_details;
    /* The job: one message (stream) or the request (unary). */
    enum job_state job;           /* guarded by the server's mu */
    grpc_byte_buffer *job_payload;
    ProtobufCMessage *job_req;    /* decoded, kept across deferrals */
    reqmem job_mem;
    size_t unary_bytes;           /* reservation of a unary answer being sent */
    struct call *qnext;           /* in a job queue */
    struct call *lprev, *lnext;   /* the server's list of live contexts */
    svd_ctx ctx;
} call;

typedef struct job_queue {
    call *head, *tail;
    int n;
} job_queue;

struct svd_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    grpc_resource_quota *quota;
    const svd_method *methods;
    size_t n_methods;
    void **registered;            /* per method, from grpc_server_register_method */
    void *app;
    svd_server_config cfg;
    int n_io, n_work;
    pthread_t *io, *work, ticker;
    int ticker_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* shutdown progress */
    pthread_cond_t work_cv;       /* jobs queued, or stop */
    pthread_cond_t tick_cv;
    job_queue ready, deferred;
    call *live;                   /* every context, for the ticker and the shutdown */
    int n_live;
    int calls, streams;           /* admitted and open */
    call *watchers;               /* open watch calls */
    atomic_int shutting_down;     /* no new work: refuse */
    atomic_int stopping;          /* past the grace: every handler should stop */
    int workers_stop, ticker_stop;
    int shutdown_done;
    tag t_shutdown;
    atomic_size_t inflight;
    atomic_ullong refused_calls, refused_bytes, send_timeouts;
    int body_after_auth;          /* unary bodies are read once the token passed */
};

/*
 * With authentication on, a unary call's body is not part of the call gRPC
 * hands over (GRPC_SRM_PAYLOAD_NONE): it is read only once the call's token
 * was accepted, so a client without one cannot make the server receive and
 * hold request bodies (up to --max-message each). Health (light) is open
 * and keeps its body with the call.
 */
static int body_after_auth(const svd_server *s, const svd_method *m)
{
    return s->body_after_auth && m->kind == SVD_UNARY && !m->light;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void svd_reply_error(svd_reply *r, grpc_status_code code, const char *fmt, ...)
{
    r->code = code;
    r->msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

/* ---- the in-flight budget ---------------------------------------------------- */

static int budget_take(svd_server *s, size_t bytes)
{
    size_t cur = atomic_load(&s->inflight);
    do {
        if (bytes > s->cfg.inflight_bytes || cur > s->cfg.inflight_bytes - bytes)
            return 0;
    } while (!atomic_compare_exchange_weak(&s->inflight, &cur, cur + bytes));
    return 1;
}

/* Small answers the handler did not reserve for are charged even past the
 * limit: refusing them would only fail calls that cost nothing. */
static void budget_force(svd_server *s, size_t bytes)
{
    atomic_fetch_add(&s->inflight, bytes);
}

static void budget_give(svd_server *s, size_t bytes)
{
    if (bytes)
        atomic_fetch_sub(&s->inflight, bytes);
}

/* ---- request memory ------------------------------------------------------------- */

static void *reqmem_alloc(void *data, size_t size)
{
    reqmem *m = data;
    size_t need = ((size + 15) & ~(size_t)15) + 16; /* a 16-byte header keeps alignment */
    chunk *c = m->chunks;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > ARENA_CHUNK ? need : ARENA_CHUNK;
        if (m->srv && !budget_take(m->srv, cap + sizeof(chunk))) {
            m->over = 1;
            return NULL;
        }
        c = malloc(sizeof(chunk) + cap);
        if (!c) {
            if (m->srv)
                budget_give(m->srv, cap + sizeof(chunk));
            return NULL;
        }
        if (m->srv)
            m->reserved += cap + sizeof(chunk);
        c->cap = cap;
        c->used = 0;
        c->next = m->chunks;
        m->chunks = c;
    }
    unsigned char *p = c->data + c->used;
    c->used += need;
    memcpy(p, &size, sizeof size);
    return p + 16;
}

static void reqmem_free_block(void *data, void *p)
{
    (void)data; /* everything goes at once in reqmem_release */
    (void)p;
}

static void reqmem_release(reqmem *m)
{
    while (m->chunks) {
        chunk *c = m->chunks;
        m->chunks = c->next;
        free(c);
    }
    if (m->srv)
        budget_give(m->srv, m->reserved);
    m->reserved = 0;
    m->over = 0;
}

struct svd_decoded {
    reqmem mem;
    ProtobufCMessage *msg;
};

ProtobufCMessage *svd_decode(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                             svd_decoded **out)
{
    svd_decoded *m = calloc(1, sizeof *m);
    *out = m;
    if (!m)
        return NULL;
    ProtobufCAllocator alloc = {reqmem_alloc, reqmem_free_block, &m->mem};
    m->msg = protobuf_c_message_unpack(d, &alloc, len, data);
    return m->msg;
}

void svd_decoded_free(svd_decoded *m)
{
    if (!m)
        return;
    reqmem_release(&m->mem);
    free(m);
}

size_t svd_request_strlen(const char *field)
{
    if (!field || field == protobuf_c_empty_string)
        return 0;
    size_t size;
    memcpy(&size, field - 16, sizeof size);
    /* protobuf-c allocates a string field as its bytes + a NUL. */
    return size ? size - 1 : 0;
}

/* Unpack a received buffer into the job's arena (NULL: malformed, or the
 * budget refused; m->over tells which). */
static ProtobufCMessage *unpack(const svd_method *meth, grpc_byte_buffer *bb, reqmem *m)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCAllocator alloc = {reqmem_alloc, reqmem_free_block, m};
    ProtobufCMessage *msg = protobuf_c_message_unpack(meth->request, &alloc, GRPC_SLICE_LENGTH(all),
                                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

/* Pack a message into a byte buffer. */
static grpc_byte_buffer *pack(const ProtobufCMessage *msg, size_t len)
{
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* ---- call contexts ------------------------------------------------------------- */

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
    c->job_mem.srv = s;
    atomic_init(&c->cancelled, 0);
    c->ctx.deadline = INFINITY;
    c->ctx.cancelled = &c->cancelled;
    c->ctx.stopping = &s->stopping;
    c->ctx.srv = s;
    c->ctx.max_message = (size_t)s->cfg.max_message_bytes;
    c->ctx.metadata = &c->md;
    pthread_mutex_lock(&s->mu);
    c->lnext = s->live;
    if (s->live)
        s->live->lprev = c;
    s->live = c;
    s->n_live++;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static const svd_method *method_of(const call *c)
{
    return c->method >= 0 ? &c->srv->methods[c->method] : NULL;
}

static void call_free(call *c)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    pthread_mutex_lock(&s->mu);
    /* Out of the lists first: the ticker and the shutdown walk them with
     * the server lock and take calls' locks. */
    if (c->lprev)
        c->lprev->lnext = c->lnext;
    else
        s->live = c->lnext;
    if (c->lnext)
        c->lnext->lprev = c->lprev;
    if (c->watching) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            s->watchers = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        c->watching = 0;
    }
    if (c->counted) {
        s->calls--;
        if (m && m->kind != SVD_UNARY)
            s->streams--;
    }
    pthread_mutex_unlock(&s->mu);
    const svd_server_config *cfg = &s->cfg;
    int cancelled = atomic_load(&c->cancelled);
    if (c->started && cfg->on_call_end)
        cfg->on_call_end(cfg->observer, c->method,
                         cancelled && c->code == GRPC_STATUS_OK ? GRPC_STATUS_CANCELLED : c->code);
    if (m && m->end && c->started)
        m->end(s->app, c->state, cancelled);
    while (c->head) {
        out_msg *o = c->head;
        c->head = o->next;
        grpc_byte_buffer_destroy(o->bb);
        budget_give(s, o->bytes);
        free(o);
    }
    budget_give(s, c->sending_bytes + c->unary_bytes + c->ctx.reserved);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->job_payload)
        grpc_byte_buffer_destroy(c->job_payload);
    reqmem_release(&c->job_mem);
    if (c->status_started)
        grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->ctx.principal && cfg->principal_free)
        cfg->principal_free((struct svd_principal *)c->ctx.principal);
    if (c->call)
        grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    /* Last: once it is not counted, the shutdown may finish. */
    pthread_mutex_lock(&s->mu);
    if (--s->n_live == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
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
        e = grpc_server_request_registered_call(
            s->server, s->registered[m], &c->call, &c->deadline_raw, &c->md,
            meth->kind == SVD_UNARY && !body_after_auth(s, meth) ? &c->payload : NULL, s->cq, s->cq,
            &c->t_new);
    } else {
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        c->pending = 0;
        call_free(c);
    }
}

static int start(call *c, const grpc_op *ops, size_t n, tag *t)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK)
        return -1;
    c->pending++;
    return 0;
}

/* ---- the call context ------------------------------------------------------------ */

void svd_ctx_init_local(svd_ctx *ctx, size_t max_message, double timeout_seconds)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->deadline = timeout_seconds > 0 ? now_seconds() + timeout_seconds : INFINITY;
    ctx->max_message = max_message;
}

int svd_ctx_stopped(svd_ctx *ctx)
{
    return (ctx->cancelled && atomic_load_explicit(ctx->cancelled, memory_order_relaxed)) ||
           (ctx->stopping && atomic_load_explicit(ctx->stopping, memory_order_relaxed)) ||
           (ctx->deadline != INFINITY && now_seconds() >= ctx->deadline);
}

/* A call whose deadline passes is cancelled by whichever side sees it
 * first: the client's own deadline starts when it sends the call, a moment
 * before the server's (set when the headers arrive), so its cancel can
 * come before our clock reaches the deadline. A cancel that close to the
 * deadline is the deadline. */
#define DEADLINE_SLACK 0.25

grpc_status_code svd_ctx_stop_code(svd_ctx *ctx)
{
    if (ctx->deadline != INFINITY && now_seconds() >= ctx->deadline - DEADLINE_SLACK)
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    if (ctx->stopping && atomic_load(ctx->stopping))
        return GRPC_STATUS_UNAVAILABLE;
    return GRPC_STATUS_CANCELLED;
}

double svd_ctx_remaining(svd_ctx *ctx)
{
    return ctx->deadline == INFINITY ? 1e9 : ctx->deadline - now_seconds();
}

size_t svd_ctx_max_message(svd_ctx *ctx)
{
    return ctx->max_message;
}

void svd_ctx_denied(svd_ctx *ctx)
{
    if (!ctx->srv)
        return;
    call *c = (call *)((char *)ctx - offsetof(call, ctx));
    const svd_method *m = method_of(c);
    if (m && m->kind != SVD_UNARY && ctx->srv->cfg.on_stream_denied)
        ctx->srv->cfg.on_stream_denied(ctx->srv->cfg.observer, c->method);
}

svd_server *svd_ctx_server(svd_ctx *ctx)
{
    return ctx->srv;
}

int svd_ctx_reserve(svd_ctx *ctx, size_t bytes, svd_reply *r)
{
    svd_server *s = ctx->srv;
    if (s && !budget_take(s, bytes)) {
        atomic_fetch_add(&s->refused_bytes, 1);
        svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "the server is busy: this response needs up to %zu bytes and %zu of the "
                        "%zu bytes for requests and responses in flight are taken; retry later",
                        bytes, atomic_load(&s->inflight), s->cfg.inflight_bytes);
        return 0;
    }
    ctx->reserved += bytes;
    return 1;
}

/* Deadline in our monotonic seconds (gRPC's clock may be another). */
static void set_deadline(call *c)
{
    gpr_timespec d = c->deadline_raw;
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0) {
        c->ctx.deadline = INFINITY;
        return;
    }
    gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC),
                                     gpr_now(GPR_CLOCK_MONOTONIC));
    c->ctx.deadline = now_seconds() + (double)left.tv_sec + (double)left.tv_nsec * 1e-9;
}

/* ---- job queues (server mu held) ---------------------------------------------------- */

static void q_push(job_queue *q, call *c)
{
    c->qnext = NULL;
    if (q->tail)
        q->tail->qnext = c;
    else
        q->head = c;
    q->tail = c;
    q->n++;
}

static call *q_pop(job_queue *q)
{
    call *c = q->head;
    if (c) {
        q->head = c->qnext;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return c;
}

/* Queue c's job (c->pending already counts it; call mu not held). */
static void queue_job(svd_server *s, call *c)
{
    pthread_mutex_lock(&s->mu);
    c->job = JOB_QUEUED;
    q_push(&s->ready, c);
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

void svd_server_wake(svd_server *s)
{
    pthread_mutex_lock(&s->mu);
    call *c;
    while ((c = q_pop(&s->deferred)) != NULL) {
        c->job = JOB_QUEUED;
        q_push(&s->ready, c);
    }
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- sending ---------------------------------------------------------------------- */

/* Unary and unknown methods: one batch with everything. bytes: the answer's
 * reservation, released when the batch completes. */
static void finish_unary(call *c, grpc_byte_buffer *response, size_t bytes, int with_close)
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
    if (with_close) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
    }
    c->unary_bytes = bytes;
    if (start(c, ops, n, &c->t_done) != 0) {
        budget_give(c->srv, bytes);
        c->unary_bytes = 0;
    }
    if (response)
        grpc_byte_buffer_destroy(response); /* the batch holds its own reference */
}

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

/* Send the next queued answer, or the status once the stream is ending and
 * no job is left (call mu held). */
static void pump(call *c)
{
    if (c->sending)
        return;
    if (c->head && !atomic_load(&c->cancelled)) {
        out_msg *o = c->head;
        c->head = o->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = o->bb;
        if (start(c, &op, 1, &c->t_send) == 0) {
            c->sending = 1;
            atomic_store(&c->send_since, now_seconds());
            c->sending_bytes = o->bytes;
        } else {
            budget_give(c->srv, o->bytes);
            c->ending = 1;
        }
        grpc_byte_buffer_destroy(o->bb);
        free(o);
        if (c->recv_paused && c->queued < c->srv->cfg.stream_queue && !c->ending) {
            c->recv_paused = 0;
            post_recv(c);
        }
        return;
    }
    if (c->ending && !c->has_job)
        send_status(c);
}

static void enqueue(call *c, grpc_byte_buffer *bb, size_t bytes)
{
    out_msg *o = malloc(sizeof *o);
    if (!o) {
        grpc_byte_buffer_destroy(bb);
        budget_give(c->srv, bytes);
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(c->message, sizeof c->message, "out of memory queueing a response");
        c->ending = 1;
        return;
    }
    o->bb = bb;
    o->bytes = bytes;
    o->next = NULL;
    if (c->tail)
        c->tail->next = o;
    else
        c->head = o;
    c->tail = o;
    c->queued++;
}

/*
 * Turn a handler's reply into bytes to send: NULL and an error in *r when
 * it failed or the packed answer is over the message limit. The handler's
 * reservation shrinks to the packed size, which stays reserved until sent.
 */
static grpc_byte_buffer *reply_bytes(call *c, svd_reply *r, size_t *bytes)
{
    svd_server *s = c->srv;
    grpc_byte_buffer *bb = NULL;
    *bytes = 0;
    if (r->code == GRPC_STATUS_OK && r->msg) {
        size_t len = protobuf_c_message_get_packed_size(r->msg);
        if (len > (size_t)s->cfg.max_message_bytes) {
            svd_reply_error(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                            "the response is %zu bytes, over the server's --max-message of %d", len,
                            s->cfg.max_message_bytes);
        } else {
            bb = pack(r->msg, len);
            if (c->ctx.reserved >= len) {
                budget_give(s, c->ctx.reserved - len);
            } else {
                budget_give(s, c->ctx.reserved);
                budget_force(s, len);
            }
            c->ctx.reserved = 0;
            *bytes = len;
        }
    }
    if (r->free_fn)
        r->free_fn(r->owned);
    r->free_fn = NULL;
    r->owned = NULL;
    budget_give(s, c->ctx.reserved);
    c->ctx.reserved = 0;
    return bb;
}

/* ---- running jobs ------------------------------------------------------------------ */

static void end_job_data(call *c)
{
    if (c->job_payload) {
        grpc_byte_buffer_destroy(c->job_payload);
        c->job_payload = NULL;
    }
    c->job_req = NULL;
    reqmem_release(&c->job_mem);
}

/* Run c's job on a work thread. Returns 1 when the call is to be freed. */
static int run_job(call *c)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    svd_reply r = {.code = GRPC_STATUS_OK};
    double t0 = now_seconds();
    int ran = 0;
    if (svd_ctx_stopped(&c->ctx)) {
        svd_reply_error(&r, svd_ctx_stop_code(&c->ctx), "%s",
                        svd_ctx_stop_code(&c->ctx) == GRPC_STATUS_DEADLINE_EXCEEDED
                            ? "the deadline passed before the call was handled"
                            : "the call was cancelled");
    } else if (atomic_load(&s->shutting_down) && m->kind != SVD_UNARY) {
        svd_reply_error(&r, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
    } else if (m->kind != SVD_UNARY && c->ctx.principal && s->cfg.recheck &&
               s->cfg.recheck(s->cfg.auth, (struct svd_principal *)c->ctx.principal) != GRPC_STATUS_OK) {
        /* The token was removed while the stream was open: it ends here. */
        svd_reply_error(&r, GRPC_STATUS_UNAUTHENTICATED, "the token was revoked");
    } else {
        if (!c->job_req)
            c->job_req = unpack(m, c->job_payload, &c->job_mem);
        if (!c->job_req && c->job_mem.over) {
            reqmem_release(&c->job_mem);
            atomic_fetch_add(&s->refused_bytes, 1);
            if (m->kind != SVD_UNARY) {
                r.defer = 1; /* a stream waits for room; its deadline still holds */
            } else {
                svd_reply_error(&r, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                "the server is busy: decoding this request would take %zu of the %zu "
                                "bytes for requests and responses in flight already taken; retry later",
                                atomic_load(&s->inflight), s->cfg.inflight_bytes);
            }
        } else if (!c->job_req) {
            svd_reply_error(&r, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s message", m->request->name);
        } else {
            m->handle(s->app, &c->ctx, &c->state, c->job_req, &r);
            ran = 1;
        }
    }
    if (ran && s->cfg.on_message)
        s->cfg.on_message(s->cfg.observer, c->method, now_seconds() - t0);
    if (r.defer) {
        /* Nothing changed: the same request runs again later. */
        if (r.free_fn)
            r.free_fn(r.owned);
        budget_give(s, c->ctx.reserved);
        c->ctx.reserved = 0;
        pthread_mutex_lock(&s->mu);
        c->job = JOB_DEFERRED;
        q_push(&s->deferred, c);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    size_t bytes = 0;
    grpc_byte_buffer *bb = reply_bytes(c, &r, &bytes);
    end_job_data(c);
    pthread_mutex_lock(&s->mu);
    c->job = JOB_NONE;
    pthread_mutex_unlock(&s->mu);

    pthread_mutex_lock(&c->mu);
    c->pending--; /* the job's hold */
    c->has_job = 0;
    if (m->kind == SVD_UNARY) {
        c->code = r.code;
        snprintf(c->message, sizeof c->message, "%s", r.code == GRPC_STATUS_OK ? "" : r.message);
        finish_unary(c, bb, bytes, 0);
    } else {
        if (bb) {
            enqueue(c, bb, bytes);
        } else if (r.code != GRPC_STATUS_OK) {
            c->code = r.code;
            snprintf(c->message, sizeof c->message, "%s", r.message);
            c->ending = 1;
        }
        if (!c->ending) {
            if (c->queued >= s->cfg.stream_queue)
                c->recv_paused = 1;
            else
                post_recv(c);
        }
        pump(c);
    }
    int done = c->pending == 0;
    pthread_mutex_unlock(&c->mu);
    return done;
}

static void *work_thread(void *arg)
{
    svd_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        call *c = q_pop(&s->ready);
        if (!c) {
            if (s->workers_stop)
                break;
            pthread_cond_wait(&s->work_cv, &s->mu);
            continue;
        }
        c->job = JOB_RUNNING;
        pthread_mutex_unlock(&s->mu);
        if (run_job(c))
            call_free(c);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- events --------------------------------------------------------------------------- */

/* A light method's request, answered on this event thread (call mu held). */
static grpc_byte_buffer *run_light(call *c, grpc_byte_buffer *payload, const ProtobufCMessage *given,
                                   size_t *bytes)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    svd_reply r = {.code = GRPC_STATUS_OK};
    reqmem mem = {.srv = s};
    ProtobufCMessage *req = NULL;
    if (payload) {
        req = unpack(m, payload, &mem);
        if (!req) {
            svd_reply_error(&r, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s message", m->request->name);
            goto done;
        }
    }
    double t0 = now_seconds();
    m->handle(s->app, &c->ctx, &c->state, req ? req : given, &r);
    if (s->cfg.on_message && req)
        s->cfg.on_message(s->cfg.observer, c->method, now_seconds() - t0);
done:;
    grpc_byte_buffer *bb = reply_bytes(c, &r, bytes);
    reqmem_release(&mem);
    if (!bb) {
        c->code = r.code;
        snprintf(c->message, sizeof c->message, "%s", r.message);
    }
    return bb;
}

static void refuse(call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(call *c, grpc_status_code code, const char *fmt, ...)
{
    c->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
    finish_unary(c, NULL, 0, 1);
}

/* Admit a new call under the limits (light methods always). */
static int admit(call *c)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    if (m->light && m->kind == SVD_UNARY)
        return 1; /* a health check: a watch, which stays open, counts */
    int ok;
    pthread_mutex_lock(&s->mu);
    ok = s->calls < s->cfg.max_calls && (m->kind == SVD_UNARY || s->streams < s->cfg.max_streams);
    if (ok) {
        s->calls++;
        if (m->kind != SVD_UNARY)
            s->streams++;
        c->counted = 1;
    }
    int calls = s->calls, streams = s->streams;
    pthread_mutex_unlock(&s->mu);
    if (!ok) {
        /* Refused in part 2 (a batch is started only with the call's lock). */
        atomic_fetch_add(&s->refused_calls, 1);
        c->refused = 1;
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        if (m->kind == SVD_UNARY || calls >= s->cfg.max_calls)
            snprintf(c->message, sizeof c->message,
                     "the server has %d calls open, its limit (--max-calls %d); retry later", calls,
                     s->cfg.max_calls);
        else
            snprintf(c->message, sizeof c->message,
                     "the server has %d streams open, its limit (--max-streams %d); retry later",
                     streams, s->cfg.max_streams);
    }
    return ok;
}

/*
 * Check the call's token before it counts against any limit (an
 * unauthenticated client cannot take call slots). 0 when refused: code
 * and message set for part 2.
 */
static int authenticate(call *c)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    int role = m ? m->role : -1;
    if (!s->cfg.authenticate || role == 0)
        return 1;
    const char *value = NULL;
    size_t len = 0;
    int seen = 0;
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "authorization") != 0)
            continue;
        value = (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value);
        len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
        c->ctx.authorization = &c->md.metadata[i].value;
        seen++;
    }
    struct svd_principal *p = NULL;
    grpc_status_code code;
    if (seen > 1) {
        code = GRPC_STATUS_UNAUTHENTICATED;
        snprintf(c->message, sizeof c->message, "more than one authorization metadata");
    } else {
        /* A value of length 0 still counts as sent. */
        code = s->cfg.authenticate(s->cfg.auth, c->method, role, seen ? (value ? value : "") : NULL,
                                   len, &p, c->message, sizeof c->message);
    }
    if (code == GRPC_STATUS_OK) {
        c->ctx.principal = p;
        return 1;
    }
    if (p && s->cfg.principal_free)
        s->cfg.principal_free(p);
    c->refused = 1;
    c->code = code;
    return 0;
}

static void stream_begin(call *c)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &c->payload;
    if (start(c, ops, 2, &c->t_recv) != 0)
        c->ending = 1;
}

/* The close batch first: its completion is how a cancel is seen. */
static int post_close(call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    return start(c, &op, 1, &c->t_close);
}

/*
 * A new call, part 1, without the call's lock: what takes the server's
 * lock (the next posted request, admission, the watch list). No batch has
 * been started on the call yet, so no other thread touches it. Returns 1
 * when the call goes on to part 2 as a real call.
 */
static int new_call_admit(call *c, int success)
{
    svd_server *s = c->srv;
    if (!success)
        return 0; /* the server is shutting down: the posted request is returned */
    c->started = 1;
    if (!atomic_load(&s->shutting_down))
        post_request(s, c->method);
    set_deadline(c);
    const svd_method *m = method_of(c);
    if (!authenticate(c))
        return 1; /* refused in part 2 */
    if (!m || (atomic_load(&s->shutting_down) && !m->light))
        return 1; /* refused in part 2 */
    if (!admit(c))
        return 1; /* refused in part 2 */
    if (m->kind == SVD_WATCH) {
        pthread_mutex_lock(&s->mu);
        c->wnext = s->watchers;
        if (s->watchers)
            s->watchers->wprev = c;
        s->watchers = c;
        c->watching = 1;
        pthread_mutex_unlock(&s->mu);
    }
    return 1;
}

/* Part 2, with the call's lock: its first batches. */
static void handle_new(call *c)
{
    svd_server *s = c->srv;
    const svd_method *m = method_of(c);
    if (c->refused) {
        finish_unary(c, NULL, 0, 1); /* code and message set by authenticate() or admit() */
        return;
    }
    if (!m) {
        char *path = grpc_slice_to_c_string(c->details.method);
        refuse(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", path);
        gpr_free(path);
        return;
    }
    if (atomic_load(&s->shutting_down) && !m->light && !c->counted) {
        refuse(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        return;
    }
    if (m->kind == SVD_UNARY && m->light) {
        size_t bytes = 0;
        grpc_byte_buffer *bb = run_light(c, c->payload, NULL, &bytes);
        finish_unary(c, bb, bytes, 1);
        return;
    }
    if (post_close(c) != 0) {
        refuse(c, GRPC_STATUS_INTERNAL, "cannot start the call");
        return;
    }
    if (m->kind == SVD_UNARY && body_after_auth(s, m)) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->payload;
        if (start(c, &op, 1, &c->t_recv) != 0) {
            c->code = GRPC_STATUS_INTERNAL;
            snprintf(c->message, sizeof c->message, "cannot read the request");
            finish_unary(c, NULL, 0, 0);
        }
    } else if (m->kind == SVD_UNARY) {
        c->job_payload = c->payload;
        c->payload = NULL;
        c->pending++; /* the job's hold */
        c->want_job = c->has_job = 1;
    } else {
        stream_begin(c);
    }
}

/* A unary call's body, read after its token passed (body_after_auth). */
static void unary_received(call *c, int success)
{
    grpc_byte_buffer *bb = c->payload;
    c->payload = NULL;
    if (!success || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->code = success ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED;
        snprintf(c->message, sizeof c->message, "%s",
                 success ? "the call has no request message" : "the request was not received");
        finish_unary(c, NULL, 0, 0);
        return;
    }
    c->job_payload = bb;
    c->pending++; /* the job's hold */
    c->want_job = c->has_job = 1;
}

static void stream_received(call *c, int success)
{
    const svd_method *m = method_of(c);
    if (m->kind == SVD_UNARY) {
        unary_received(c, success);
        return;
    }
    grpc_byte_buffer *bb = c->payload;
    c->payload = NULL;
    if (success && !bb && m->kind == SVD_WATCH)
        return; /* a watch stays open after the client's half-close */
    if (!success || !bb) {
        /* Half-close or cancel: every message so far was answered on its
         * own, so nothing is pending either way. */
        c->ending = 1;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        pump(c);
        return;
    }
    if (m->light) {
        size_t bytes = 0;
        grpc_byte_buffer *out = run_light(c, bb, NULL, &bytes);
        grpc_byte_buffer_destroy(bb);
        if (out)
            enqueue(c, out, bytes);
        else
            c->ending = 1;
        pump(c);
        return;
    }
    c->job_payload = bb;
    c->pending++; /* the job's hold */
    c->want_job = c->has_job = 1;
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
    int go_on = 1;
    if (t->kind == TAG_NEW)
        go_on = new_call_admit(c, ev.success); /* takes the server's lock: before the call's */
    pthread_mutex_lock(&c->mu);
    c->pending--;
    switch (t->kind) {
    case TAG_NEW:
        if (go_on)
            handle_new(c);
        break;
    case TAG_DONE:
        c->closed = 1;
        budget_give(s, c->unary_bytes);
        c->unary_bytes = 0;
        if (c->close_cancelled)
            atomic_store(&c->cancelled, 1);
        break;
    case TAG_RECV: stream_received(c, ev.success); break;
    case TAG_SEND:
        c->sending = 0;
        atomic_store(&c->send_since, 0.0);
        budget_give(s, c->sending_bytes);
        c->sending_bytes = 0;
        if (!ev.success)
            c->ending = 1;
        pump(c);
        break;
    case TAG_STATUS: break;
    case TAG_CLOSE:
        c->closed = 1;
        if (c->close_cancelled) {
            atomic_store(&c->cancelled, 1);
            c->ending = 1;
        }
        if (method_of(c) && method_of(c)->kind != SVD_UNARY)
            pump(c);
        break;
    case TAG_SHUTDOWN: break;
    }
    int want_job = c->want_job;
    c->want_job = 0;
    int done = c->pending == 0;
    pthread_mutex_unlock(&c->mu);
    if (want_job)
        queue_job(s, c);
    else if (done)
        call_free(c);
}

static void *io_thread(void *arg)
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

/* Every TICK_MS: deferred jobs run again (their deadlines and whatever
 * they wait for), and streams whose client stopped reading are cancelled. */
static void *ticker_thread(void *arg)
{
    svd_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->ticker_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + TICK_MS * 1000000L;
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&s->tick_cv, &s->mu, &ts);
        if (s->ticker_stop)
            break;
        call *c;
        int moved = 0;
        while ((c = q_pop(&s->deferred)) != NULL) {
            c->job = JOB_QUEUED;
            q_push(&s->ready, c);
            moved = 1;
        }
        if (moved)
            pthread_cond_broadcast(&s->work_cv);
        double now = now_seconds();
        for (c = s->live; c; c = c->lnext) {
            /* No call lock here (the order is server, then call, and event
             * threads take the server's while starting a call): the send's
             * start time is an atomic, and a call in the list is alive. */
            double since = atomic_load(&c->send_since);
            int stalled = since > 0 && now - since > s->cfg.send_timeout &&
                          atomic_compare_exchange_strong(&c->send_since, &since, -1.0);
            if (stalled) {
                atomic_fetch_add(&s->send_timeouts, 1);
                char msg[160];
                snprintf(msg, sizeof msg,
                         "the client read no response for %.0f s (--send-timeout); the stream is closed",
                         s->cfg.send_timeout);
                grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- start and stop -------------------------------------------------------------------- */

static void destroy(svd_server *s)
{
    if (s->quota)
        grpc_resource_quota_unref(s->quota);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->tick_cv);
    free(s->io);
    free(s->work);
    free(s->registered);
    free(s);
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
    s->cfg = *cfg;
    if (s->cfg.threads < 1)
        s->cfg.threads = 2;
    if (s->cfg.io_threads < 1)
        s->cfg.io_threads = 2;
    if (s->cfg.max_calls < 1)
        s->cfg.max_calls = 1;
    if (s->cfg.max_streams < 1)
        s->cfg.max_streams = 1;
    if (s->cfg.stream_queue < 1)
        s->cfg.stream_queue = 1;
    if (!(s->cfg.send_timeout > 0))
        s->cfg.send_timeout = 30;
    s->t_shutdown = (tag){NULL, TAG_SHUTDOWN};
    s->body_after_auth = cfg->authenticate != NULL;
    atomic_init(&s->inflight, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->tick_cv, NULL);

    grpc_arg args[4];
    int n_args = 0;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n_args++].value.integer = cfg->max_message_bytes;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[n_args++].value.integer = cfg->max_message_bytes;
    /* One connection cannot open more streams than the server admits. */
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[n_args++].value.integer = s->cfg.max_calls + 16;
    if (cfg->grpc_memory) {
        s->quota = grpc_resource_quota_create("slimvecd");
        grpc_resource_quota_resize(s->quota, cfg->grpc_memory);
        args[n_args].type = GRPC_ARG_POINTER;
        args[n_args].key = GRPC_ARG_RESOURCE_QUOTA;
        args[n_args].value.pointer.p = s->quota;
        args[n_args++].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    }
    grpc_channel_args chargs = {(size_t)n_args, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->registered = calloc(n_methods, sizeof *s->registered);
    s->io = calloc((size_t)s->cfg.io_threads, sizeof *s->io);
    s->work = calloc((size_t)s->cfg.threads, sizeof *s->work);
    if (!s->registered || !s->io || !s->work) {
        snprintf(err, err_cap, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_methods; i++) {
        s->registered[i] = grpc_server_register_method(
            s->server, methods[i].path, NULL,
            methods[i].kind == SVD_UNARY && !body_after_auth(s, &methods[i])
                ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                : GRPC_SRM_PAYLOAD_NONE,
            0);
        if (!s->registered[i]) {
            snprintf(err, err_cap, "cannot register %s", methods[i].path);
            goto fail;
        }
    }
    grpc_server_credentials *creds =
        cfg->credentials ? cfg->credentials : grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, cfg->listen, creds);
    if (!cfg->credentials)
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
    for (int i = 0; i < s->cfg.io_threads; i++)
        pthread_create(&s->io[i], NULL, io_thread, s);
    for (int i = 0; i < s->cfg.threads; i++)
        pthread_create(&s->work[i], NULL, work_thread, s);
    s->ticker_started = pthread_create(&s->ticker, NULL, ticker_thread, s) == 0;
    s->n_io = s->cfg.io_threads;
    s->n_work = s->cfg.threads;
    return s;

fail:
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    destroy(s);
    return NULL;
}

/* Wait on s->cv (mu held) until *flag or the deadline (monotonic seconds). */
static int wait_until(svd_server *s, const int *flag, double until)
{
    while (!*flag) {
        double left = until - now_seconds();
        if (left <= 0)
            return 0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + (left < 0.2 ? left : 0.2);
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    return 1;
}

int svd_server_stop(svd_server *s, double grace_seconds, double hard_seconds)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->shutting_down, 1);
    /* Watchers get one last update (NOT_SERVING), then their calls end so
     * that the drain can finish. Lock order: server, then call. */
    for (call *c = s->watchers; c; c = c->wnext) {
        pthread_mutex_lock(&c->mu);
        /* pending 0: a thread has decided to free this call and waits for
         * the server lock to unlink it; starting a batch now would race it. */
        if (!c->ending && c->pending > 0) {
            size_t bytes = 0;
            grpc_byte_buffer *bb = run_light(c, NULL, NULL, &bytes);
            if (bb)
                enqueue(c, bb, bytes);
            c->ending = 1;
            pump(c);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);

    double t0 = now_seconds();
    pthread_mutex_lock(&s->mu);
    int drained = wait_until(s, &s->shutdown_done, t0 + grace_seconds);
    pthread_mutex_unlock(&s->mu);
    if (!drained) {
        /* Past the grace: every handler sees svd_ctx_stopped(); deferred
         * jobs run once more to notice. */
        atomic_store(&s->stopping, 1);
        grpc_server_cancel_all_calls(s->server);
        svd_server_wake(s);
    }
    /* Every context must be gone before the queue shuts down: a batch
     * started on a shut-down queue aborts the process. */
    double hard_until = now_seconds() + hard_seconds;
    pthread_mutex_lock(&s->mu);
    int ok = wait_until(s, &s->shutdown_done, hard_until);
    while (ok && s->n_live > 0) {
        if (now_seconds() >= hard_until) {
            ok = 0;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    if (!ok) {
        pthread_mutex_unlock(&s->mu);
        return -1; /* a handler is stuck: leave its threads alone */
    }
    s->workers_stop = 1;
    s->ticker_stop = 1;
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_broadcast(&s->tick_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_work; i++)
        pthread_join(s->work[i], NULL);
    if (s->ticker_started)
        pthread_join(s->ticker, NULL);
    grpc_completion_queue_shutdown(s->cq);
    for (int i = 0; i < s->n_io; i++)
        pthread_join(s->io[i], NULL);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    destroy(s);
    return 0;
}

void svd_server_get_stats(svd_server *s, svd_server_stats *out)
{
    pthread_mutex_lock(&s->mu);
    out->calls = s->calls;
    out->streams = s->streams;
    out->deferred = s->deferred.n;
    pthread_mutex_unlock(&s->mu);
    out->inflight_bytes = atomic_load(&s->inflight);
    out->refused_calls = atomic_load(&s->refused_calls);
    out->refused_bytes = atomic_load(&s->refused_bytes);
    out->send_timeouts = atomic_load(&s->send_timeouts);
}

const grpc_slice *svd_ctx_metadata(const svd_ctx *ctx, const char *key)
{
    if (!ctx->metadata)
        return NULL;
    for (size_t i = 0; i < ctx->metadata->count; i++)
        if (grpc_slice_str_cmp(ctx->metadata->metadata[i].key, key) == 0)
            return &ctx->metadata->metadata[i].value;
    return NULL;
}
