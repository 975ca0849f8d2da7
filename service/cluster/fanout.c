/* Fan-out calls to other pods with retries and hedges (see fanout.h). */
#include "fanout.h"

#include "error.h"

#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 2 /* how often hedge timers are looked at */

typedef struct attempt attempt;

typedef struct part {
    svc_part_result r;
    grpc_byte_buffer *req;
    grpc_metadata md[SVC_FANOUT_MD_MAX + 1]; /* the op's, then the part's own */
    size_t n_md;
    grpc_channel *targets[SVC_FANOUT_TARGETS];
    int n_targets;
    int next_target;       /* the next target to start on */
    attempt *live[SVC_FANOUT_TARGETS];
    int in_flight;
    int done;
    double started;        /* when its first attempt started */
    double last_start;     /* when its latest attempt started (the hedge delay runs from it) */
} part;

struct svc_fanout_op {
    svc_fanout *f;
    grpc_slice path;
    double deadline;
    part *parts;
    size_t n, n_done;
    int released;          /* the handler gave it up */
    int live;              /* attempts started and not completed */
    svc_fanout_op *prev, *next; /* the fan-out's list of ops */
};

struct attempt {
    svc_fanout_op *op;
    size_t part;
    int target;
    int hedge;
    grpc_call *call;
    grpc_metadata_array init_md, trailing_md;
    grpc_byte_buffer *req;  /* its own copy: the core holds it until the batch completes */
    grpc_byte_buffer *resp;
    grpc_status_code status;
    grpc_slice details;
};

/*
 * One lock (mu) guards every op, part and attempt; it is never held while
 * calling wake. Handler threads start and release ops; the fan-out's thread
 * takes completions and runs the hedge timers.
 */
struct svc_fanout {
    grpc_completion_queue *cq;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t idle;   /* signalled when `live` reaches 0 while stopping */
    void (*wake)(void *ctx);
    void *wake_ctx;
    double hedge;
    svc_fanout_op *ops;
    int live;
    int stopping;
    svc_fanout_stats stats;
};

/* Our monotonic seconds as a gRPC time: by the distance from now, gRPC's
 * monotonic clock having an origin of its own. */
static gpr_timespec mono(double seconds)
{
    double left = seconds - sv_now_seconds();
    if (left < 0)
        left = 0;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos((int64_t)(left * 1e9), GPR_TIMESPAN));
}

/* With mu. 0 when the call could not be started (the part then moves on). */
static int start_attempt(svc_fanout_op *op, size_t i, int hedge)
{
    svc_fanout *f = op->f;
    part *p = &op->parts[i];
    if (p->next_target >= p->n_targets)
        return 0;
    attempt *a = calloc(1, sizeof *a);
    if (!a)
        return 0;
    a->op = op;
    a->part = i;
    a->target = p->next_target++;
    a->hedge = hedge;
    grpc_metadata_array_init(&a->init_md);
    grpc_metadata_array_init(&a->trailing_md);
    a->req = grpc_byte_buffer_copy(p->req);
    a->call = grpc_channel_create_call(p->targets[a->target], NULL, GRPC_PROPAGATE_DEFAULTS, f->cq, op->path, NULL,
                                       mono(op->deadline), NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = p->n_md;
    ops[0].data.send_initial_metadata.metadata = p->n_md ? p->md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = a->req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &a->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &a->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &a->status;
    ops[5].data.recv_status_on_client.status_details = &a->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &a->trailing_md;
    if (!a->call || grpc_call_start_batch(a->call, ops, 6, a, NULL) != GRPC_CALL_OK) {
        if (a->call)
            grpc_call_unref(a->call);
        grpc_byte_buffer_destroy(a->req);
        grpc_metadata_array_destroy(&a->init_md);
        grpc_metadata_array_destroy(&a->trailing_md);
        free(a);
        return 0;
    }
    for (int k = 0; k < SVC_FANOUT_TARGETS; k++)
        if (!p->live[k]) {
            p->live[k] = a;
            break;
        }
    if (!p->started)
        p->started = sv_now_seconds();
    p->last_start = sv_now_seconds();
    p->in_flight++;
    p->r.attempts++;
    op->live++;
    f->live++;
    f->stats.calls++;
    if (hedge) {
        p->r.hedged = 1;
        f->stats.hedges++;
    }
    return 1;
}

/* Worth another replica: the replica (or the way to it) failed, not the
 * request or the caller. */
static int retryable(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_UNKNOWN || c == GRPC_STATUS_INTERNAL ||
           c == GRPC_STATUS_RESOURCE_EXHAUSTED || c == GRPC_STATUS_CANCELLED || c == GRPC_STATUS_ABORTED;
}

static void finish_part(svc_fanout_op *op, part *p)
{
    p->done = 1;
    p->r.seconds = p->started ? sv_now_seconds() - p->started : 0;
    op->n_done++;
    /* The others lose the race: cancelled (their completions free them). */
    for (int k = 0; k < SVC_FANOUT_TARGETS; k++)
        if (p->live[k])
            grpc_call_cancel(p->live[k]->call, NULL);
}

static void unlink_op(svc_fanout *f, svc_fanout_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        f->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
}

static void free_op(svc_fanout_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        part *p = &op->parts[i];
        grpc_byte_buffer_destroy(p->req);
        if (p->r.response)
            grpc_byte_buffer_destroy(p->r.response);
        for (size_t k = 0; k < p->n_md; k++) {
            grpc_slice_unref(p->md[k].key);
            grpc_slice_unref(p->md[k].value);
        }
    }
    grpc_slice_unref(op->path);
    free(op->parts);
    free(op);
}

/* With mu: one attempt completed. Returns 1 when its op just finished. */
static int completed(svc_fanout *f, attempt *a, int ok)
{
    svc_fanout_op *op = a->op;
    part *p = &op->parts[a->part];
    for (int k = 0; k < SVC_FANOUT_TARGETS; k++)
        if (p->live[k] == a)
            p->live[k] = NULL;
    p->in_flight--;
    op->live--;
    f->live--;
    int was_done = op->n_done == op->n;
    grpc_status_code code = ok ? a->status : GRPC_STATUS_UNAVAILABLE;
    if (!p->done) {
        if (code == GRPC_STATUS_OK && a->resp) {
            p->r.code = GRPC_STATUS_OK;
            p->r.message[0] = '\0';
            p->r.response = a->resp;
            a->resp = NULL;
            p->r.target = a->target;
            if (a->hedge)
                f->stats.hedge_wins++;
            finish_part(op, p);
        } else {
            if (code == GRPC_STATUS_OK)
                code = GRPC_STATUS_INTERNAL; /* OK without a message */
            p->r.aborted += code == GRPC_STATUS_ABORTED;
            p->r.code = code;
            p->r.target = a->target;
            char *d = grpc_slice_to_c_string(a->details);
            snprintf(p->r.message, sizeof p->r.message, "%s", d && *d ? d : "no details");
            gpr_free(d);
            if (p->in_flight == 0) {
                int moved = !op->released && !f->stopping && retryable(code) && sv_now_seconds() < op->deadline &&
                            start_attempt(op, a->part, 0);
                if (moved)
                    f->stats.retries++;
                else {
                    f->stats.failures++;
                    finish_part(op, p);
                }
            }
        }
    }
    if (a->resp)
        grpc_byte_buffer_destroy(a->resp);
    grpc_byte_buffer_destroy(a->req);
    grpc_slice_unref(a->details);
    grpc_metadata_array_destroy(&a->init_md);
    grpc_metadata_array_destroy(&a->trailing_md);
    grpc_call_unref(a->call);
    free(a);
    int finished = !was_done && op->n_done == op->n;
    if (op->released && op->live == 0) {
        unlink_op(f, op);
        free_op(op);
        finished = 0;
    }
    if (f->stopping && f->live == 0)
        pthread_cond_broadcast(&f->idle);
    return finished;
}

/* With mu: hedges whose delay passed. */
static void run_timers(svc_fanout *f)
{
    double now = sv_now_seconds();
    for (svc_fanout_op *op = f->ops; op; op = op->next) {
        if (op->released || op->n_done == op->n)
            continue;
        for (size_t i = 0; i < op->n; i++) {
            part *p = &op->parts[i];
            if (!p->done && p->in_flight == 1 && !p->r.hedged && p->next_target < p->n_targets &&
                now - p->last_start >= f->hedge && now < op->deadline && !f->stopping)
                start_attempt(op, i, 1);
        }
    }
}

static void *loop(void *arg)
{
    svc_fanout *f = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(f->cq, mono(sv_now_seconds() + TICK_MS / 1000.0), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        int wake = 0;
        pthread_mutex_lock(&f->mu);
        if (ev.type == GRPC_OP_COMPLETE)
            wake = completed(f, ev.tag, ev.success);
        run_timers(f);
        pthread_mutex_unlock(&f->mu);
        if (wake && f->wake)
            f->wake(f->wake_ctx);
    }
    return NULL;
}

svc_fanout *svc_fanout_create(void (*wake)(void *ctx), void *wake_ctx, double hedge_seconds)
{
    svc_fanout *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->wake = wake;
    f->wake_ctx = wake_ctx;
    f->hedge = hedge_seconds > 0 ? hedge_seconds : 0.05;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->idle, NULL);
    f->cq = grpc_completion_queue_create_for_next(NULL);
    if (!f->cq || pthread_create(&f->thread, NULL, loop, f) != 0) {
        if (f->cq)
            grpc_completion_queue_destroy(f->cq);
        free(f);
        return NULL;
    }
    return f;
}

void svc_fanout_free(svc_fanout *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    for (svc_fanout_op *op = f->ops; op; op = op->next)
        for (size_t i = 0; i < op->n; i++)
            for (int k = 0; k < SVC_FANOUT_TARGETS; k++)
                if (op->parts[i].live[k])
                    grpc_call_cancel(op->parts[i].live[k]->call, NULL);
    while (f->live > 0)
        pthread_cond_wait(&f->idle, &f->mu);
    pthread_mutex_unlock(&f->mu);
    grpc_completion_queue_shutdown(f->cq);
    pthread_join(f->thread, NULL);
    grpc_completion_queue_destroy(f->cq);
    while (f->ops) {
        svc_fanout_op *op = f->ops;
        unlink_op(f, op);
        free_op(op);
    }
    pthread_cond_destroy(&f->idle);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void svc_fanout_get_stats(svc_fanout *f, svc_fanout_stats *out)
{
    pthread_mutex_lock(&f->mu);
    *out = f->stats;
    pthread_mutex_unlock(&f->mu);
}

svc_fanout_op *svc_fanout_start(svc_fanout *f, const char *path, size_t n, grpc_byte_buffer *const *requests,
                                grpc_channel *const (*targets)[SVC_FANOUT_TARGETS], const int *n_targets,
                                const grpc_metadata *md, size_t n_md, const char *part_key,
                                const char *const *part_values, double deadline)
{
    if (n_md > SVC_FANOUT_MD_MAX)
        return NULL;
    svc_fanout_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->parts = calloc(n ? n : 1, sizeof *op->parts);
    if (!op->parts) {
        free(op);
        return NULL;
    }
    op->f = f;
    op->n = n;
    op->deadline = deadline;
    op->path = grpc_slice_from_copied_string(path);
    for (size_t i = 0; i < n; i++) {
        part *p = &op->parts[i];
        for (size_t k = 0; k < n_md; k++) {
            p->md[k].key = grpc_slice_ref(md[k].key);
            p->md[k].value = grpc_slice_ref(md[k].value);
        }
        p->n_md = n_md;
        if (part_key && part_values && part_values[i]) {
            p->md[n_md].key = grpc_slice_from_copied_string(part_key);
            p->md[n_md].value = grpc_slice_from_copied_string(part_values[i]);
            p->n_md++;
        }
        p->req = grpc_byte_buffer_copy(requests[i]);
        p->n_targets = n_targets[i] < SVC_FANOUT_TARGETS ? n_targets[i] : SVC_FANOUT_TARGETS;
        for (int k = 0; k < p->n_targets; k++)
            p->targets[k] = targets[i][k];
        p->r.code = GRPC_STATUS_UNAVAILABLE;
        snprintf(p->r.message, sizeof p->r.message, "no ready replica of this shard");
    }
    pthread_mutex_lock(&f->mu);
    op->next = f->ops;
    if (f->ops)
        f->ops->prev = op;
    f->ops = op;
    for (size_t i = 0; i < n; i++) {
        part *p = &op->parts[i];
        int started = 0;
        while (!started && p->next_target < p->n_targets && !f->stopping)
            started = start_attempt(op, i, 0);
        if (!started) {
            p->done = 1;
            op->n_done++;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return op;
}

int svc_fanout_done(svc_fanout_op *op)
{
    pthread_mutex_lock(&op->f->mu);
    int done = op->n_done == op->n;
    pthread_mutex_unlock(&op->f->mu);
    return done;
}

const svc_part_result *svc_fanout_result(svc_fanout_op *op, size_t i)
{
    return &op->parts[i].r;
}

void svc_fanout_release(svc_fanout_op *op)
{
    if (!op)
        return;
    svc_fanout *f = op->f;
    pthread_mutex_lock(&f->mu);
    op->released = 1;
    if (op->live == 0) {
        unlink_op(f, op);
        free_op(op);
    } else {
        for (size_t i = 0; i < op->n; i++)
            for (int k = 0; k < SVC_FANOUT_TARGETS; k++)
                if (op->parts[i].live[k])
                    grpc_call_cancel(op->parts[i].live[k]->call, NULL);
    }
    pthread_mutex_unlock(&f->mu);
}
