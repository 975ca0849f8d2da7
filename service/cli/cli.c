/*
 * slimvec: command-line client for slimvecd (gRPC C core client API +
 * protobuf-c).
 *
 *   slimvec create  --collection C --dim D --metric l2|ip|cosine --storage f32|int8
 *                   [--R N --L N --alpha F --seed N --flush-threshold N]
 *   slimvec stats   --collection C
 *   slimvec snapshot --collection C
 *   slimvec health  [--service S]
 *   slimvec list
 *   slimvec drop    --collection C
 *   slimvec token   [--role read|write|admin] [--glob G]   (a new token and its tokens-file line)
 *   slimvec ingest  --collection C --file B.fvecs [--batch N] [--window N] [--flush]
 *                   [--payloads P.jsonl] [--ids I.txt] [--upsert]
 *   slimvec search  --collection C --query Q.fvecs [--gt G.ivecs] [--k N]
 *                   [--search-list L] [--window N] [--json OUT]
 *                   [--filter JSON|@FILE] [--with-payload]
 *   slimvec count   --collection C [--filter JSON|@FILE]
 *   slimvec scroll  --collection C [--filter JSON|@FILE] [--page-size N] [--limit N]
 *                   [--with-payload] [--with-vectors]
 *
 * Payloads and filters are JSON (jsonpb.h has the whole mapping):
 *   --payloads: one JSON object per line, line i for vector i ({} = none):
 *     {"class": "coat", "u": 7, "price": 9.5, "active": true, "tags": ["a", "b"]}
 *   --ids: one id per line, line i for vector i (without it the server
 *     assigns ids; --upsert needs it: it replaces the vectors of given ids).
 *   --filter, close to Qdrant's:
 *     {"must": [C...], "should": [C...], "must_not": [C...]}   with C one of
 *     {"key": "class", "match": "coat"}      (a string, an integer or a boolean)
 *     {"key": "class", "match_any": ["coat", "bag"]}   (strings or integers)
 *     {"key": "u", "range": {"gte": 10, "lt": 20}}     (gt, gte, lt, lte)
 *     {"has_id": ["3", "7"]}   {"is_empty": "tags"}
 *     {"filter": {"should": [...]}}   one level of nesting, leaf conditions inside
 * search without --gt prints one JSON line per query:
 *   {"query": 0, "hits": [{"id": "3", "distance": 0.25, "payload": {...}}, ...]}
 * and scroll one per vector: {"id": "3", "payload": {...}, "values": [...]}.
 *
 * Every subcommand takes --addr A (default 127.0.0.1:50051) and the
 * connection flags of auth/client.h: --tls, --ca, --cert, --key,
 * --server-name, --token (or SLIMVEC_CA, SLIMVEC_CERT, SLIMVEC_KEY,
 * SLIMVEC_SERVER_NAME, SLIMVEC_TOKEN, SLIMVEC_TLS=1).
 * Exit status: 0 success, 1 an RPC or I/O failure (a payload or ids file
 * that cannot be read or is refused, too), 2 a usage error (a --filter
 * that is not valid, too).
 *
 * Both streaming RPCs (Ingest, SearchStream) run through one driver,
 * run_stream(): a single thread, one completion queue, at most one send
 * batch in flight (the core allows only one SEND_MESSAGE at a time per
 * call), one RECV_MESSAGE always posted, and a window bounding how many
 * requests may be sent but not yet answered. The server answers in request
 * order, so "answered" is a simple counter.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <sodium.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "call.h"
#include "client.h"
#include "health/v1/health.pb-c.h"
#include "jsonpb.h"
#include "lines.h"
#include "slimvec.h"
#include "utf8.h"
#include "slimvec/v1/slimvec.pb-c.h"
#include "tokens.h"
#include "vecfile.h"

#define DEFAULT_ADDR "127.0.0.1:50051"
#define MAX_MESSAGE (64 << 20)   /* matches the server's default --max-message */
#define UNARY_TIMEOUT_S 600      /* Flush of a large buffer can take minutes */
#define HEALTH_TIMEOUT_S 5       /* a probe must answer fast or count as down */
static int unary_timeout_s = UNARY_TIMEOUT_S;
#define METHOD(name) "/slimvec.v1.SlimVec/" name

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *code_name(grpc_status_code c)
{
    static const char *names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((int)c >= 0 && (size_t)c < sizeof names / sizeof names[0])
        return names[c];
    return "UNKNOWN_CODE";
}

static void rpc_error(const char *rpc, grpc_status_code code, const char *details)
{
    fprintf(stderr, "slimvec: %s: %s: %s\n", rpc, code_name(code), details);
}

static const char *metric_name(Slimvec__V1__Metric m)
{
    switch (m) {
    case SLIMVEC__V1__METRIC__METRIC_L2: return "l2";
    case SLIMVEC__V1__METRIC__METRIC_IP: return "ip";
    case SLIMVEC__V1__METRIC__METRIC_COSINE: return "cosine";
    default: return "unspecified";
    }
}

static const char *storage_name(Slimvec__V1__Storage s)
{
    switch (s) {
    case SLIMVEC__V1__STORAGE__STORAGE_F32: return "f32";
    case SLIMVEC__V1__STORAGE__STORAGE_INT8: return "int8";
    default: return "unspecified";
    }
}

/* ---- .fvecs / .ivecs ---------------------------------------------------- */

/* A TEXMEX file through vecfile.c (shared with slimvec-bench, fuzzed by
 * tests/fuzz/fuzz_vecfile.c); prints its error. Returns 0 or -1. */
static int read_vecs(const char *path, svf_kind kind, svf_matrix *out)
{
    svf_error err;
    if (svf_read_file(path, kind, out, &err) != SVF_OK) {
        fprintf(stderr, "slimvec: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* ---- gRPC plumbing ------------------------------------------------------- */

/* How to reach the server (flags, then the environment), and the token
 * metadata every call sends: set once in main. */
static svd_client_options conn;
static svd_client_auth_md auth_md;

static grpc_channel *open_channel(const char *addr)
{
    /* Replies (a Search with vectors, a big List) can exceed the 4 MiB
     * default receive limit; match the server's 64 MiB. */
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = MAX_MESSAGE;
    char err[512];
    grpc_channel *ch = svd_client_channel(addr, &conn, args, 2, err, sizeof err);
    if (!ch)
        fprintf(stderr, "slimvec: %s\n", err);
    return ch;
}

/* The first batch's SEND_INITIAL_METADATA: the token, if any. */
static void send_initial_metadata(grpc_op *op)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = auth_md.count;
    op->data.send_initial_metadata.metadata = auth_md.count ? auth_md.md : NULL;
}

/* Shut a queue down and drain it: the core requires both before destroy. */
static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

/*
 * One unary call. On OK, *resp is the unpacked reply (free with
 * protobuf_c_message_free_unpacked). Returns 0, or 1 after printing the
 * error.
 */
static int unary(grpc_channel *ch, const char *rpc, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
    svd_call_status st;
    if (svd_call_unary(ch, path, auth_md.count ? auth_md.md : NULL, auth_md.count, req, resp_desc,
                       unary_timeout_s, resp, &st) == GRPC_STATUS_OK)
        return 0;
    rpc_error(rpc, st.code, st.message);
    return 1;
}

/* ---- streaming driver ---------------------------------------------------- */

typedef struct stream_cb {
    size_t total;      /* requests to send */
    size_t window;     /* most requests sent but not yet answered */
    /* Builds request i (called just before it is sent); NULL aborts. */
    grpc_byte_buffer *(*make)(void *ctx, size_t i);
    /* Handles the reply to request i; nonzero (after printing) aborts. */
    int (*reply)(void *ctx, size_t i, grpc_byte_buffer *bb);
    void *ctx;
} stream_cb;

enum { T_START = 1, T_SEND, T_RECV, T_STATUS };

static void *tag_of(int t)
{
    static char tags[5];
    return &tags[t];
}

static int start_batch(grpc_call *call, const grpc_op *ops, size_t n, int t, int *pending)
{
    if (grpc_call_start_batch(call, ops, n, tag_of(t), NULL) != GRPC_CALL_OK)
        return -1;
    (*pending)++;
    return 0;
}

/* Returns 0 when every request was answered and the status is OK, else 1. */
static int run_stream(grpc_channel *ch, const char *rpc, const char *path, const stream_cb *cb)
{
    int rc = 1;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *recv_bb = NULL;
    grpc_slice method = grpc_slice_from_static_string(path);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    int pending = 0;
    size_t sent = 0, answered = 0;
    int sending = 0;     /* a send (message or close) batch is in flight */
    int closed = 0;      /* SEND_CLOSE_FROM_CLIENT started */
    int broken = 0;      /* a send failed: the call is over, wait for the status */
    int aborted = 0;     /* we gave up (bad reply / make failed) and cancelled */
    grpc_op ops[2];

    memset(ops, 0, sizeof ops);
    send_initial_metadata(&ops[0]);
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    if (start_batch(call, ops, 2, T_START, &pending) != 0)
        goto start_failed;
    /* The status batch is posted up front: it completes when the call
     * ends for any reason, so the loop below always terminates. */
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    if (start_batch(call, ops, 1, T_STATUS, &pending) != 0)
        goto start_failed;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_MESSAGE;
    ops[0].data.recv_message.recv_message = &recv_bb;
    if (start_batch(call, ops, 1, T_RECV, &pending) != 0)
        goto start_failed;

    for (;;) {
        /* Send the next request, or the half-close once all are sent. */
        if (!sending && !broken && !aborted) {
            if (sent < cb->total && sent - answered < cb->window) {
                grpc_byte_buffer *bb = cb->make(cb->ctx, sent);
                if (!bb) {
                    aborted = 1;
                    grpc_call_cancel(call, NULL);
                } else {
                    memset(ops, 0, sizeof ops);
                    ops[0].op = GRPC_OP_SEND_MESSAGE;
                    ops[0].data.send_message.send_message = bb;
                    if (start_batch(call, ops, 1, T_SEND, &pending) == 0) {
                        sending = 1;
                        sent++;
                    } else {
                        broken = 1;
                    }
                    grpc_byte_buffer_destroy(bb); /* the batch keeps its own ref */
                }
            } else if (sent == cb->total && !closed) {
                memset(ops, 0, sizeof ops);
                ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
                if (start_batch(call, ops, 1, T_SEND, &pending) == 0)
                    sending = 1;
                closed = 1;
            }
        }
        if (pending == 0)
            break;
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        pending--;
        if (ev.tag == tag_of(T_SEND)) {
            sending = 0;
            if (!ev.success)
                broken = 1;
        } else if (ev.tag == tag_of(T_RECV)) {
            grpc_byte_buffer *bb = recv_bb;
            recv_bb = NULL;
            if (!ev.success || !bb)
                continue; /* end of replies: the status batch tells why */
            if (!aborted) {
                if (answered >= sent) {
                    fprintf(stderr, "slimvec: %s: unexpected reply beyond request %zu\n", rpc, sent);
                    aborted = 1;
                } else if (cb->reply(cb->ctx, answered, bb) != 0) {
                    aborted = 1;
                }
                answered++;
                if (aborted)
                    grpc_call_cancel(call, NULL);
            }
            grpc_byte_buffer_destroy(bb);
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_RECV_MESSAGE;
            ops[0].data.recv_message.recv_message = &recv_bb;
            start_batch(call, ops, 1, T_RECV, &pending);
        }
        /* T_START and T_STATUS need nothing: their outputs are read below. */
    }

    if (aborted)
        goto cleanup; /* the reason is already printed */
    if (status != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(details);
        rpc_error(rpc, status, d);
        gpr_free(d);
        goto cleanup;
    }
    if (answered != cb->total) {
        /* An OK status with replies missing would hide lost requests. */
        fprintf(stderr, "slimvec: %s: stream ended after %zu of %zu replies\n", rpc, answered,
                cb->total);
        goto cleanup;
    }
    rc = 0;
    goto cleanup;
start_failed:
    fprintf(stderr, "slimvec: %s: cannot start the call\n", rpc);
    grpc_call_cancel(call, NULL);
    while (pending > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            pending--;
    }
cleanup:
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_call_unref(call);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    cq_destroy(cq);
    return rc;
}

/* ---- option parsing ------------------------------------------------------ */

static const char usage_text[] =
    "usage: slimvec COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  create  --collection C --dim D --metric l2|ip|cosine --storage f32|int8\n"
    "          [--R N] [--L N] [--alpha F] [--seed N] [--flush-threshold N]\n"
    "          [--originals none|disk]  (disk: float32 originals in a file, re-ranked; int8 only)\n"
    "  stats   --collection C\n"
    "  snapshot --collection C   (write a snapshot now; needs a server with a data directory)\n"
    "  health  [--service S]     grpc.health.v1 Check; exit 0 when SERVING (container probes)\n"
    "  list                      every collection (a scoped token: those it may read)\n"
    "  drop    --collection C\n"
    "  token   [--role read|write|admin|metrics (read)] [--glob G]\n"
    "                            a new random token, and the line for slimvecd's --tokens-file\n"
    "  ingest  --collection C --file B.fvecs [--batch N (1000)] [--window N (8)] [--flush]\n"
    "          [--payloads P.jsonl]  one JSON object per line, line i for vector i ({} = none)\n"
    "          [--ids FILE]          one id per line, line i for vector i (else the server assigns)\n"
    "          [--upsert]            replace the vectors (and payloads) of ids it has (needs --ids)\n"
    "  search  --collection C --query Q.fvecs [--gt G.ivecs] [--k N (10)]\n"
    "          [--search-list L (0 = server default)] [--window N (8)] [--json OUT]\n"
    "          [--rerank-depth N (0 = the search list)] [--no-rerank]   (originals on disk)\n"
    "          [--target-recall R]  (instead of --search-list: the collection's calibration picks it)\n"
    "          [--filter JSON|@FILE] [--with-payload]\n"
    "                            with --gt: recall@10, QPS and latency; without: one JSON line\n"
    "                            per query, {\"query\":I,\"hits\":[{\"id\",\"distance\"[,\"payload\"]}...]}\n"
    "  count   --collection C [--filter JSON|@FILE]      the number of vectors passing\n"
    "  scroll  --collection C [--filter JSON|@FILE] [--page-size N] [--limit N]\n"
    "          [--with-payload] [--with-vectors]\n"
    "                            one JSON line per vector passing: {\"id\"[,\"payload\"][,\"values\"]}\n"
    "  cluster status            the shard map (epoch, each shard's replicas: state, lease, lag\n"
    "                            and vectors per collection), idle and live pods (admin role)\n"
    "  cluster move --shard N --to POD [--from POD]\n"
    "                            POD joins shard N (a peer's snapshot, then the stream); once it\n"
    "                            is ready the --from pod leaves the shard\n"
    "  cluster drain --pod POD   POD's shard goes to an idle pod, or keeps its other replicas\n"
    "\n"
    "payloads (--payloads): string, integer (int64), number with a fraction or exponent (double),\n"
    "  true/false, array of strings, array of integers; no null, nested object or empty array\n"
    "filters (--filter '{...}', or @FILE): {\"must\":[C...], \"should\":[C...], \"must_not\":[C...]}\n"
    "  with each condition C one of\n"
    "    {\"key\":\"class\", \"match\":\"coat\"}           a string, an integer or a boolean\n"
    "    {\"key\":\"class\", \"match_any\":[\"coat\",\"bag\"]}   strings or integers\n"
    "    {\"key\":\"u\", \"range\":{\"gte\":10, \"lt\":20}}    gt, gte, lt, lte; integers or doubles\n"
    "    {\"has_id\":[\"3\",\"7\"]}   {\"is_empty\":\"tags\"}  (absent or an empty list)\n"
    "    {\"filter\":{\"should\":[...]}}   one level of nesting: only the conditions above inside\n"
    "  a vector passes every must, at least one should (if any) and no must_not\n"
    "\n"
    "every command: --addr HOST:PORT (default " DEFAULT_ADDR ")\n"
    "  --tls                     TLS with the system's CAs (SLIMVEC_TLS=1)\n"
    "  --ca FILE                 TLS, trusting the CAs in FILE (SLIMVEC_CA)\n"
    "  --cert FILE --key FILE    a client certificate, for mutual TLS (SLIMVEC_CERT, SLIMVEC_KEY)\n"
    "  --server-name NAME        the name the server's certificate must carry (SLIMVEC_SERVER_NAME)\n"
    "  --token TOKEN             bearer token sent with every call (SLIMVEC_TOKEN; prefer the\n"
    "                            variable: a flag shows in the process list)\n"
    "exit status: 0 ok, 1 RPC or I/O failure (or a refused payload or ids file), 2 usage error\n"
    "  (or a --filter that is not valid)\n";

typedef struct opts {
    const char *addr, *collection, *file, *query, *gt, *json, *service;
    const char *metric, *storage, *role, *glob, *originals;
    const char *pod, *to, *from;
    const char *payloads, *ids, *filter;
    long shard;
    unsigned long dim, R, L, seed, flush_threshold, batch, window, k, search_list, rerank_depth;
    unsigned long page_size, limit;
    double alpha;
    int flush, no_rerank, upsert, with_payload, with_vectors;
    double target_recall;
    const char *sub;             /* cluster's subcommand */
} opts;

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "slimvec: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_text);
    exit(2);
}

static unsigned long parse_ulong(const char *flag, const char *s, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        usage_error("bad value for %s", flag);
    return v;
}

/* Parses argv[2..]; exits 2 on anything unknown or malformed. */
static void parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->addr = DEFAULT_ADDR;
    o->batch = 1000;
    o->window = 8;
    o->k = 10;
    o->shard = -1;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        /* Flags without a value. */
        const struct {
            const char *name;
            int *set;
        } flags[] = {{"--flush", &o->flush},           {"--no-rerank", &o->no_rerank},
                     {"--upsert", &o->upsert},         {"--with-payload", &o->with_payload},
                     {"--with-vectors", &o->with_vectors}, {"--tls", &conn.tls}};
        int flag = 0;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0] && !flag; k++)
            if (!strcmp(f, flags[k].name))
                *flags[k].set = flag = 1;
        if (flag)
            continue;
        if (i + 1 >= argc)
            usage_error("%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--addr")) o->addr = v;
        else if (!strcmp(f, "--ca")) conn.ca = v;
        else if (!strcmp(f, "--cert")) conn.cert = v;
        else if (!strcmp(f, "--key")) conn.key = v;
        else if (!strcmp(f, "--server-name")) conn.server_name = v;
        else if (!strcmp(f, "--token")) conn.token = v;
        else if (!strcmp(f, "--role")) o->role = v;
        else if (!strcmp(f, "--glob")) o->glob = v;
        else if (!strcmp(f, "--pod")) o->pod = v;
        else if (!strcmp(f, "--to")) o->to = v;
        else if (!strcmp(f, "--from")) o->from = v;
        else if (!strcmp(f, "--shard")) o->shard = (long)parse_ulong(f, v, 65535);
        else if (!strcmp(f, "--collection")) o->collection = v;
        else if (!strcmp(f, "--service")) o->service = v;
        else if (!strcmp(f, "--file")) o->file = v;
        else if (!strcmp(f, "--payloads")) o->payloads = v;
        else if (!strcmp(f, "--ids")) o->ids = v;
        else if (!strcmp(f, "--filter")) o->filter = v;
        else if (!strcmp(f, "--page-size")) o->page_size = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--limit")) o->limit = parse_ulong(f, v, ULONG_MAX);
        else if (!strcmp(f, "--query")) o->query = v;
        else if (!strcmp(f, "--gt")) o->gt = v;
        else if (!strcmp(f, "--json")) o->json = v;
        else if (!strcmp(f, "--metric")) o->metric = v;
        else if (!strcmp(f, "--storage")) o->storage = v;
        else if (!strcmp(f, "--dim")) o->dim = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--R")) o->R = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--L")) o->L = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--seed")) o->seed = parse_ulong(f, v, ULONG_MAX);
        else if (!strcmp(f, "--flush-threshold")) o->flush_threshold = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--batch")) o->batch = parse_ulong(f, v, 1000000);
        else if (!strcmp(f, "--window")) o->window = parse_ulong(f, v, 1024);
        else if (!strcmp(f, "--k")) o->k = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--search-list")) o->search_list = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--rerank-depth")) o->rerank_depth = parse_ulong(f, v, UINT32_MAX);
        else if (!strcmp(f, "--target-recall")) {
            char *end;
            o->target_recall = strtod(v, &end);
            if (*end || end == v || !(o->target_recall > 0.0 && o->target_recall <= 1.0))
                usage_error("bad value for %s (0 < R <= 1)", f);
        }
        else if (!strcmp(f, "--originals")) o->originals = v;
        else if (!strcmp(f, "--alpha")) {
            char *end;
            o->alpha = strtod(v, &end);
            if (end == v || *end || !(o->alpha >= 0))
                usage_error("bad value for %s", f);
        } else
            usage_error("unknown option %s", f);
    }
    if (o->batch == 0)
        usage_error("%s must be at least 1", "--batch");
    if (o->window == 0)
        usage_error("%s must be at least 1", "--window");
}

static void require(const char *value, const char *flag)
{
    if (!value)
        usage_error("missing %s", flag);
}

/* ---- create / stats ------------------------------------------------------ */

static void print_spec(const Slimvec__V1__CollectionSpec *s)
{
    printf("collection       %s\n", s->name);
    printf("dimension        %" PRIu32 "\n", s->dimension);
    printf("metric           %s\n", metric_name(s->metric));
    printf("storage          %s\n", storage_name(s->storage));
    if (s->graph) {
        printf("max degree (R)   %" PRIu32 "\n", s->graph->max_degree);
        printf("build list (L)   %" PRIu32 "\n", s->graph->build_list);
        printf("alpha            %.3f\n", s->graph->alpha);
    }
    printf("seed             %" PRIu64 "\n", s->seed);
    printf("flush threshold  %" PRIu32 "\n", s->flush_threshold);
    printf("originals        %s\n", s->originals == SLIMVEC__V1__ORIGINALS__ORIGINALS_DISK ? "disk" : "none");
}

static void print_info(const Slimvec__V1__CollectionInfo *in)
{
    if (in->spec)
        print_spec(in->spec);
    printf("vectors          %" PRIu64 "\n", in->vectors);
    printf("indexed          %" PRIu64 "\n", in->indexed);
    printf("buffered         %" PRIu64 "\n", in->buffered);
    printf("tombstones       %" PRIu64 "\n", in->tombstones);
    printf("avg degree       %.2f\n", in->avg_degree);
    printf("avg edge slots   %.2f\n", in->avg_edge_slots);
    printf("avg edge bytes   %.1f (bit-packed list + its word)\n", in->avg_edge_bytes);
    const Slimvec__V1__MemoryStats *m = in->memory;
    if (!m)
        return;
    printf("allocated bytes  %" PRIu64 " (%.2f MiB, measured)\n", m->allocated_bytes,
           (double)m->allocated_bytes / (1 << 20));
    printf("bytes per vector %.1f\n", m->bytes_per_vector);
    uint64_t sum = m->vectors_bytes_estimate + m->edges_bytes_estimate + m->id_map_bytes_estimate +
                   m->buffer_bytes_estimate + m->other_bytes_estimate;
    printf("estimated breakdown (bytes):\n");
    printf("  vectors        %" PRIu64 "\n", m->vectors_bytes_estimate);
    printf("  edges          %" PRIu64 "\n", m->edges_bytes_estimate);
    printf("  id map         %" PRIu64 "\n", m->id_map_bytes_estimate);
    printf("  write buffer   %" PRIu64 "\n", m->buffer_bytes_estimate);
    printf("  other          %" PRIu64 "\n", m->other_bytes_estimate);
    printf("  sum            %" PRIu64 "\n", sum);
    const Slimvec__V1__Calibration *cal = in->calibration;
    if (cal) {
        printf("calibration      %u queries at %" PRIu64 " vectors, %.2f s, against %s:\n", cal->queries,
               cal->vectors, cal->seconds, cal->exact ? "the originals" : "the stored vectors");
        for (size_t i = 0; i < cal->n_points; i++)
            printf("  search list %5u  recall@10 %.3f\n", cal->points[i]->search_list,
                   (double)cal->points[i]->recall_at_10);
    }
    const Slimvec__V1__OriginalsStats *os = in->originals;
    if (os)
        printf("originals file   %" PRIu64 " bytes on disk (%.1f per vector), %" PRIu64
               " in the page cache (not memory)\n",
               os->disk_bytes, os->disk_bytes_per_vector, os->resident_bytes);
    const Slimvec__V1__Persistence *p = in->persistence;
    if (!p) {
        printf("persistence      none (server runs with --data-dir :memory:)\n");
        return;
    }
    printf("last LSN         %" PRIu64 "\n", p->last_lsn);
    printf("log bytes        %" PRIu64 " (since the last snapshot)\n", p->log_bytes);
    if (p->snapshot_lsn)
        printf("last snapshot    LSN %" PRIu64 ", %" PRIu64 " bytes, %.3f s\n", p->snapshot_lsn,
               p->snapshot_bytes, p->snapshot_seconds);
}

static int cmd_create(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    require(o->metric, "--metric");
    require(o->storage, "--storage");
    if (o->dim == 0)
        usage_error("missing %s", "--dim");
    Slimvec__V1__CollectionSpec spec = SLIMVEC__V1__COLLECTION_SPEC__INIT;
    Slimvec__V1__GraphParams graph = SLIMVEC__V1__GRAPH_PARAMS__INIT;
    spec.name = (char *)o->collection;
    spec.dimension = (uint32_t)o->dim;
    if (!strcmp(o->metric, "l2")) spec.metric = SLIMVEC__V1__METRIC__METRIC_L2;
    else if (!strcmp(o->metric, "ip")) spec.metric = SLIMVEC__V1__METRIC__METRIC_IP;
    else if (!strcmp(o->metric, "cosine")) spec.metric = SLIMVEC__V1__METRIC__METRIC_COSINE;
    else usage_error("unknown metric %s (l2, ip, cosine)", o->metric);
    if (!strcmp(o->storage, "f32")) spec.storage = SLIMVEC__V1__STORAGE__STORAGE_F32;
    else if (!strcmp(o->storage, "int8")) spec.storage = SLIMVEC__V1__STORAGE__STORAGE_INT8;
    else usage_error("unknown storage %s (f32, int8)", o->storage);
    /* Zero means "server default" for every field, so unset options pass through. */
    graph.max_degree = (uint32_t)o->R;
    graph.build_list = (uint32_t)o->L;
    graph.alpha = (float)o->alpha;
    spec.graph = &graph;
    spec.seed = o->seed;
    spec.flush_threshold = (uint32_t)o->flush_threshold;
    if (!o->originals || !strcmp(o->originals, "none")) spec.originals = SLIMVEC__V1__ORIGINALS__ORIGINALS_NONE;
    else if (!strcmp(o->originals, "disk")) spec.originals = SLIMVEC__V1__ORIGINALS__ORIGINALS_DISK;
    else usage_error("unknown originals %s (none, disk)", o->originals);
    Slimvec__V1__CreateCollectionRequest req = SLIMVEC__V1__CREATE_COLLECTION_REQUEST__INIT;
    req.spec = &spec;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "CreateCollection", METHOD("CreateCollection"), &req.base,
              &slimvec__v1__create_collection_response__descriptor, &resp) != 0)
        return 1;
    Slimvec__V1__CreateCollectionResponse *r = (Slimvec__V1__CreateCollectionResponse *)resp;
    if (r->info && r->info->spec)
        print_spec(r->info->spec);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* DescribeCollection; *out is freed with protobuf_c_message_free_unpacked. */
static int describe(grpc_channel *ch, const char *name, Slimvec__V1__DescribeCollectionResponse **out)
{
    Slimvec__V1__DescribeCollectionRequest req = SLIMVEC__V1__DESCRIBE_COLLECTION_REQUEST__INIT;
    req.name = (char *)name;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "DescribeCollection", METHOD("DescribeCollection"), &req.base,
              &slimvec__v1__describe_collection_response__descriptor, &resp) != 0)
        return 1;
    *out = (Slimvec__V1__DescribeCollectionResponse *)resp;
    if (!(*out)->info || !(*out)->info->spec) {
        fprintf(stderr, "slimvec: DescribeCollection: reply without collection info\n");
        protobuf_c_message_free_unpacked(resp, NULL);
        return 1;
    }
    return 0;
}

/*
 * The server splits a batch into len / dimension vectors, so a file of the
 * wrong dimension (128 floats read as two 64-d vectors) would be accepted
 * silently: check before sending anything. *vectors gets the live count.
 */
static int check_dimension(grpc_channel *ch, const char *name, const char *path, uint32_t dim,
                           uint64_t *vectors)
{
    Slimvec__V1__DescribeCollectionResponse *r = NULL;
    if (describe(ch, name, &r) != 0)
        return 1;
    uint32_t want = r->info->spec->dimension;
    if (vectors)
        *vectors = r->info->vectors;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (want != dim) {
        fprintf(stderr, "slimvec: %s: dimension %" PRIu32 ", but collection %s has dimension %" PRIu32 "\n",
                path, dim, name, want);
        return 1;
    }
    return 0;
}

static int cmd_stats(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    Slimvec__V1__DescribeCollectionResponse *r = NULL;
    if (describe(ch, o->collection, &r) != 0)
        return 1;
    print_info(r->info);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int cmd_snapshot(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    Slimvec__V1__SnapshotRequest req = SLIMVEC__V1__SNAPSHOT_REQUEST__INIT;
    req.collection = (char *)o->collection;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "Snapshot", METHOD("Snapshot"), &req.base, &slimvec__v1__snapshot_response__descriptor,
              &resp) != 0)
        return 1;
    const Slimvec__V1__SnapshotResponse *r = (const void *)resp;
    printf("snapshot of %s: LSN %" PRIu64 ", %" PRIu64 " bytes, %.3f s (ingest waited %.3f s)\n",
           o->collection, r->lsn, r->bytes, r->seconds, r->stall_seconds);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int cmd_list(grpc_channel *ch, const opts *o)
{
    (void)o;
    Slimvec__V1__ListCollectionsRequest req = SLIMVEC__V1__LIST_COLLECTIONS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "ListCollections", METHOD("ListCollections"), &req.base,
              &slimvec__v1__list_collections_response__descriptor, &resp) != 0)
        return 1;
    const Slimvec__V1__ListCollectionsResponse *r = (const void *)resp;
    for (size_t i = 0; i < r->n_collections; i++)
        printf("%s\t%" PRIu64 " vectors\n", r->collections[i]->spec ? r->collections[i]->spec->name : "?",
               r->collections[i]->vectors);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int cmd_drop(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    Slimvec__V1__DropCollectionRequest req = SLIMVEC__V1__DROP_COLLECTION_REQUEST__INIT;
    req.name = (char *)o->collection;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "DropCollection", METHOD("DropCollection"), &req.base,
              &slimvec__v1__drop_collection_response__descriptor, &resp) != 0)
        return 1;
    printf("dropped %s\n", o->collection);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/*
 * A new token: 32 random bytes as URL-safe base64 (43 characters of RFC
 * 6750's token set), and the tokens-file line holding only its SHA-256.
 * No server is contacted.
 */
static int make_token(const opts *o)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "slimvec: libsodium cannot start\n");
        return 1;
    }
    unsigned char raw[32];
    char token[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    char line[SVD_TOKEN_LINE_MAX], why[256];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, sizeof token, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    /* The server's own rules decide what a line may hold. */
    int ok = svd_token_line(token, o->role ? o->role : "read", o->glob, line, sizeof line, why, sizeof why) == 0;
    if (ok)
        printf("# the token (give it to the client as SLIMVEC_TOKEN; it is not kept anywhere):\n%s\n"
               "# the line for slimvecd's --tokens-file:\n%s",
               token, line);
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(token, sizeof token);
    if (!ok)
        usage_error("%s", why);
    return 0;
}

/* grpc.health.v1 Check: exit 0 when SERVING (a container health check). */
static int cmd_health(grpc_channel *ch, const opts *o)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(o->service ? o->service : "");
    ProtobufCMessage *resp = NULL;
    unary_timeout_s = HEALTH_TIMEOUT_S;
    if (unary(ch, "Health/Check", "/grpc.health.v1.Health/Check", &req.base,
              &grpc__health__v1__health_check_response__descriptor, &resp) != 0)
        return 1;
    const Grpc__Health__V1__HealthCheckResponse *r = (const void *)resp;
    int serving = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
        &grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
    printf("%s\n", ev ? ev->name : "UNKNOWN");
    protobuf_c_message_free_unpacked(resp, NULL);
    return serving ? 0 : 1;
}

/* ---- ingest --------------------------------------------------------------- */

/* The longest line of an --ids file: far above any id the server takes
 * (128 bytes at most), so that the server names what is wrong with a long
 * one, and small enough that a wrong file is refused at once. */
#define IDS_LINE_MAX 4096

typedef struct ingest_ctx {
    const char *collection;
    const float *data;
    size_t rows;
    uint32_t dim;
    size_t batch;
    size_t done;        /* vectors acknowledged */
    svl_lines *payloads; /* --payloads, checked whole, read again batch by batch */
    svl_lines *ids;      /* --ids, the same */
    int upsert;
    int tty;
    double t0, last_progress;
} ingest_ctx;

static size_t batch_rows(const ingest_ctx *c, size_t i)
{
    size_t first = i * c->batch;
    return c->rows - first < c->batch ? c->rows - first : c->batch;
}

/* The next line of a file checked whole before the stream began: a
 * failure here means it changed since (or a read error). Prints it. */
static int next_line(svl_lines *r)
{
    svl_error err;
    int got = svl_lines_next(r, &err);
    if (got < 0)
        fprintf(stderr, "slimvec: %s\n", err.message);
    else if (got == 0)
        fprintf(stderr, "slimvec: %s: ends at line %zu: it changed since it was checked\n", r->name, r->line);
    return got == 1 ? 0 : -1;
}

static grpc_byte_buffer *ingest_make(void *ctx, size_t i)
{
    ingest_ctx *c = ctx;
    size_t n = batch_rows(c, i);
    grpc_byte_buffer *bb = NULL;
    Slimvec__V1__IngestRequest req = SLIMVEC__V1__INGEST_REQUEST__INIT;
    req.collection = (char *)c->collection;
    req.sequence = i;
    req.dimension = (uint32_t)c->dim; /* the server refuses a mismatch */
    /* Points into the file's matrix: svd_pack() copies, so no staging buffer. */
    req.n_vectors = n * c->dim;
    req.vectors = (float *)(c->data + i * c->batch * c->dim);
    req.upsert = c->upsert;
    /* Without --ids: no ids, and the server assigns the smallest unused
     * numbers, i.e. row numbers for a fresh collection, which is what the
     * .ivecs ground truth refers to. Payloads and ids are read a batch at
     * a time (batches are made in order), so memory stays one batch's. */
    if (c->payloads) {
        if (!(req.payloads = calloc(n, sizeof *req.payloads)))
            goto oom;
        for (size_t k = 0; k < n; k++) {
            svj_error err;
            if (next_line(c->payloads) != 0)
                goto cleanup;
            if (svj_payload_from_json(c->payloads->buf, c->payloads->len, c->payloads->line, &req.payloads[k],
                                      &err) != 0) {
                fprintf(stderr, "slimvec: %s: %s\n", c->payloads->name, err.message);
                goto cleanup;
            }
            req.n_payloads = k + 1;
        }
    }
    if (c->ids) {
        if (!(req.ids = calloc(n, sizeof *req.ids)))
            goto oom;
        for (size_t k = 0; k < n; k++) {
            if (next_line(c->ids) != 0)
                goto cleanup;
            if (!(req.ids[k] = strdup(c->ids->buf)))
                goto oom;
            req.n_ids = k + 1;
        }
    }
    bb = svd_pack(&req.base);
    goto cleanup;
oom:
    fprintf(stderr, "slimvec: out of memory\n");
cleanup:
    for (size_t k = 0; k < req.n_payloads; k++)
        svj_payload_free(req.payloads[k]);
    free(req.payloads);
    for (size_t k = 0; k < req.n_ids; k++)
        free(req.ids[k]);
    free(req.ids);
    return bb;
}

static int ingest_reply(void *ctx, size_t i, grpc_byte_buffer *bb)
{
    ingest_ctx *c = ctx;
    int rc = 1;
    Slimvec__V1__IngestResponse *r =
        (Slimvec__V1__IngestResponse *)svd_unpack(&slimvec__v1__ingest_response__descriptor, bb);
    if (!r) {
        if (c->tty && c->done > 0)
            fputc('\n', stderr); /* the error goes below the progress line */
        fprintf(stderr, "slimvec: Ingest: malformed acknowledgement for batch %zu\n", i);
        return 1;
    }
    if (c->tty && c->done > 0 && (r->error || r->sequence != i || r->applied != batch_rows(c, i)))
        fputc('\n', stderr); /* the error goes below the progress line */
    if (r->error) {
        fprintf(stderr, "slimvec: Ingest: %s: batch %zu (rows %zu..%zu) rejected: %s\n",
                code_name((grpc_status_code)r->error->code), i, i * c->batch,
                i * c->batch + batch_rows(c, i) - 1, r->error->message);
        goto cleanup;
    }
    if (r->sequence != i) {
        fprintf(stderr, "slimvec: Ingest: acknowledgement for sequence %" PRIu64 ", expected %zu\n",
                r->sequence, i);
        goto cleanup;
    }
    if (r->applied != batch_rows(c, i)) {
        fprintf(stderr, "slimvec: Ingest: batch %zu: %" PRIu32 " of %zu vectors applied\n", i,
                r->applied, batch_rows(c, i));
        goto cleanup;
    }
    c->done += r->applied;
    rc = 0;
cleanup:
    if (c->tty && rc == 0) {
        /* Throttled to ~10 updates a second so a fast stream does not flood
         * the terminal. */
        double t = now_s();
        if (t - c->last_progress >= 0.1 || c->done == c->rows) {
            c->last_progress = t;
            fprintf(stderr, "\ringest: %zu/%zu vectors (%.1f%%), %.0f vectors/s   ", c->done,
                    c->rows, 100.0 * (double)c->done / (double)c->rows,
                    (double)c->done / (t - c->t0 > 0 ? t - c->t0 : 1e-9));
        }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/*
 * Opens a --payloads or --ids file and checks it whole before anything is
 * sent, so that a bad line refuses the ingest rather than stops it
 * halfway: one line per vector (`rows`), every payload line a payload
 * (payloads) or every id line not empty. Then back to its first line.
 * Returns 0, or 1 after printing the error.
 */
static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Why the server would refuse an id line (NULL: it would not). */
static const char *id_fault(const char *id, size_t len)
{
    if (len == 0)
        return "an empty id";
    _Static_assert(SV_ID_MAX == 128, "the message below says 128");
    if (len > SV_ID_MAX)
        return "an id over 128 bytes (the server's limit)";
    if (sv_utf8_invalid_at((const unsigned char *)id, len) != len)
        return "an id that is not valid UTF-8";
    return NULL;
}

/* 1 after printing the first id given twice in the file (sorts ids). */
static int ids_repeat(char **ids, size_t n, const char *path)
{
    qsort(ids, n, sizeof *ids, by_text);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0) {
            fprintf(stderr, "slimvec: %s: id \"%s\" is given twice\n", path, ids[i]);
            return 1;
        }
    return 0;
}

static int check_lines(svl_lines *r, const char *path, int payloads, size_t rows)
{
    svl_error err;
    int rc = 1;
    svj_keys *keys = payloads ? svj_keys_create() : NULL;
    char **seen = payloads ? NULL : calloc(rows ? rows : 1, sizeof *seen);
    if ((payloads && !keys) || (!payloads && !seen)) {
        fprintf(stderr, "slimvec: %s: out of memory\n", path);
        goto cleanup;
    }
    if (svl_lines_open(r, path, payloads ? SVJ_TEXT_MAX : IDS_LINE_MAX, &err) != 0)
        goto failed;
    int got;
    while ((got = svl_lines_next(r, &err)) == 1) {
        if (r->line > rows)
            break;
        if (payloads) {
            /* What the server checks of a line, here, so that a line it
             * would refuse refuses the ingest before any batch is sent. */
            Slimvec__V1__Payload *p = NULL;
            svj_error jerr;
            int bad = svj_payload_from_json(r->buf, r->len, r->line, &p, &jerr) != 0 ||
                      svj_payload_check(p, keys, r->line, &jerr) != 0;
            svj_payload_free(p);
            if (bad) {
                fprintf(stderr, "slimvec: %s: %s\n", path, jerr.message);
                goto cleanup;
            }
        } else {
            const char *fault = id_fault(r->buf, r->len);
            if (fault) {
                fprintf(stderr, "slimvec: %s: line %zu: %s\n", path, r->line, fault);
                goto cleanup;
            }
            if (!(seen[r->line - 1] = strdup(r->buf))) {
                fprintf(stderr, "slimvec: %s: out of memory\n", path);
                goto cleanup;
            }
        }
    }
    if (got < 0)
        goto failed;
    if (!payloads && r->line == rows && ids_repeat(seen, rows, path) != 0)
        goto cleanup;
    if (r->line != rows) {
        fprintf(stderr, "slimvec: %s: %s%zu lines for %zu vectors (one line per vector, in order%s)\n", path,
                r->line > rows ? "more than " : "", r->line > rows ? rows : r->line, rows,
                payloads ? "; {} for a vector without payload" : "");
        return 1;
    }
    if (svl_lines_rewind(r, &err) != 0)
        goto failed;
    rc = 0;
    goto cleanup;
failed:
    fprintf(stderr, "slimvec: %s\n", err.message);
cleanup:
    svj_keys_free(keys);
    for (size_t i = 0; seen && i < rows; i++)
        free(seen[i]);
    free(seen);
    return rc;
}

static int cmd_ingest(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    require(o->file, "--file");
    if (o->upsert && !o->ids)
        usage_error("%s needs --ids (it replaces the vectors of ids the collection has)", "--upsert");
    int rc = 1;
    svf_matrix file = {0};
    ingest_ctx c = {0};
    svl_lines payloads = {0}, ids = {0};
    if (read_vecs(o->file, SVF_FVECS, &file) != 0)
        return 1;
    c.rows = file.rows;
    c.dim = file.dim;
    if (o->payloads) {
        if (check_lines(&payloads, o->payloads, 1, c.rows) != 0)
            goto cleanup;
        c.payloads = &payloads;
    }
    if (o->ids) {
        if (check_lines(&ids, o->ids, 0, c.rows) != 0)
            goto cleanup;
        c.ids = &ids;
    }
    c.upsert = o->upsert;
    uint64_t existing = 0;
    if (check_dimension(ch, o->collection, o->file, c.dim, &existing) != 0)
        goto cleanup;
    if (existing > 0 && !o->ids)
        fprintf(stderr, "slimvec: note: %s already holds %" PRIu64 " vectors; the ids assigned "
                "now are not the file's row numbers\n", o->collection, existing);
    c.collection = o->collection;
    c.data = file.data;
    c.batch = o->batch;
    c.tty = isatty(2);
    stream_cb cb = {(c.rows + c.batch - 1) / c.batch, o->window, ingest_make, ingest_reply, &c};
    c.t0 = now_s();
    int failed = run_stream(ch, "Ingest", METHOD("Ingest"), &cb);
    double secs = now_s() - c.t0;
    if (c.tty)
        fputc('\n', stderr);
    if (failed) {
        fprintf(stderr, "slimvec: Ingest: %zu of %zu vectors acknowledged before the failure\n",
                c.done, c.rows);
        goto cleanup;
    }
    printf("ingested %zu vectors (dim %" PRIu32 ", %zu batches of %zu) in %.3f s: %.0f vectors/s\n",
           c.done, c.dim, cb.total, c.batch, secs, secs > 0 ? (double)c.done / secs : 0.0);
    if (o->flush) {
        Slimvec__V1__FlushRequest req = SLIMVEC__V1__FLUSH_REQUEST__INIT;
        req.collection = (char *)o->collection;
        ProtobufCMessage *resp = NULL;
        double t = now_s();
        if (unary(ch, "Flush", METHOD("Flush"), &req.base, &slimvec__v1__flush_response__descriptor,
                  &resp) != 0)
            goto cleanup;
        Slimvec__V1__FlushResponse *r = (Slimvec__V1__FlushResponse *)resp;
        printf("flushed in %.3f s", now_s() - t);
        if (r->info)
            printf(": %" PRIu64 " vectors, %" PRIu64 " indexed, %" PRIu64 " buffered", r->info->vectors,
                   r->info->indexed, r->info->buffered);
        printf("\n");
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rc = 0;
cleanup:
    svl_lines_close(&payloads);
    svl_lines_close(&ids);
    svf_matrix_free(&file);
    return rc;
}

/* ---- filters and JSON output ---------------------------------------------- */

/*
 * --filter JSON, or @FILE holding it: *out is the filter (NULL without
 * --filter; free with svj_filter_free). Returns 0, 1 when the file cannot
 * be read, 2 when the filter is not valid (after printing why).
 */
static int load_filter(const char *arg, Slimvec__V1__Filter **out)
{
    *out = NULL;
    if (!arg)
        return 0;
    svj_error err;
    char *text = NULL;
    size_t len = strlen(arg);
    const char *src = arg;
    if (arg[0] == '@') {
        svl_error lerr;
        if (svl_read_text(arg + 1, SVJ_TEXT_MAX, &text, &len, &lerr) != 0) {
            fprintf(stderr, "slimvec: --filter: %s\n", lerr.message);
            return 1;
        }
        src = text;
    }
    int rc = 0;
    if (svj_filter_from_json(src, len, out, &err) != 0) {
        fprintf(stderr, "slimvec: --filter%s%s: %s\n", text ? " " : "", text ? arg : "", err.message);
        rc = 2;
    }
    free(text);
    return rc;
}

/* Prints o as one line of JSON and drops it. Returns 0, or 1 when out of
 * memory (o NULL: a constructor failed) or stdout fails. */
static int print_json_line(json_object *o)
{
    if (!o) {
        fprintf(stderr, "slimvec: out of memory\n");
        return 1;
    }
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    int rc = 0;
    if (!s || puts(s) == EOF) {
        fprintf(stderr, "slimvec: cannot write the output\n");
        rc = 1;
    }
    json_object_put(o);
    return rc;
}

/* Adds key: v to o, taking v; o is dropped (and NULL returned) on failure,
 * so that constructors chain and print_json_line reports it. */
static json_object *with(json_object *o, const char *key, json_object *v)
{
    if (!o || !v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        json_object_put(o);
        return NULL;
    }
    return o;
}

static json_object *floats_json(const float *v, size_t n)
{
    json_object *a = json_object_new_array_ext((int)(n < INT_MAX ? n : INT_MAX));
    for (size_t i = 0; a && i < n; i++) {
        json_object *x = svj_float_to_json(v[i]);
        if (!x || json_object_array_add(a, x) != 0) {
            json_object_put(x);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* ---- search --------------------------------------------------------------- */

#define RECALL_AT 10

typedef struct search_ctx {
    const char *collection;
    const float *queries;
    uint32_t dim;
    const int32_t *gt;   /* NULL: print each query's hits instead of measuring */
    uint32_t gt_dim;
    uint32_t k, search_list, rerank_depth;
    int no_rerank;
    Slimvec__V1__Filter *filter;
    int with_payload;
    float target_recall;
    double *sent_at;     /* per query: when its request was handed to gRPC */
    double *latency;     /* per query, seconds */
    size_t hits_found;   /* ground-truth ids found in the top RECALL_AT */
} search_ctx;

static grpc_byte_buffer *search_make(void *ctx, size_t i)
{
    search_ctx *c = ctx;
    Slimvec__V1__SearchRequest req = SLIMVEC__V1__SEARCH_REQUEST__INIT;
    req.collection = (char *)c->collection;
    req.n_queries = c->dim;
    req.queries = (float *)(c->queries + i * c->dim);
    req.k = c->k;
    req.search_list = c->search_list;
    req.rerank_depth = c->rerank_depth;
    req.target_recall = c->target_recall;
    req.skip_rerank = c->no_rerank;
    req.tag = i;
    req.dimension = (uint32_t)c->dim;
    req.filter = c->filter;
    req.with_payload = c->with_payload;
    grpc_byte_buffer *bb = svd_pack(&req.base);
    c->sent_at[i] = now_s();
    return bb;
}

static int search_reply(void *ctx, size_t i, grpc_byte_buffer *bb)
{
    search_ctx *c = ctx;
    c->latency[i] = now_s() - c->sent_at[i];
    int rc = 1;
    Slimvec__V1__SearchResponse *r =
        (Slimvec__V1__SearchResponse *)svd_unpack(&slimvec__v1__search_response__descriptor, bb);
    if (!r) {
        fprintf(stderr, "slimvec: SearchStream: malformed reply for query %zu\n", i);
        return 1;
    }
    if (r->error) {
        char what[64];
        snprintf(what, sizeof what, "query %zu: ", i);
        fprintf(stderr, "slimvec: SearchStream: %s: %s%s\n",
                code_name((grpc_status_code)r->error->code), what, r->error->message);
        goto cleanup;
    }
    if (r->tag != i || r->n_results != 1) {
        fprintf(stderr, "slimvec: SearchStream: reply tag %" PRIu64 " with %zu results, expected tag %zu with 1\n",
                r->tag, r->n_results, i);
        goto cleanup;
    }
    const Slimvec__V1__QueryResult *res = r->results[0];
    if (!c->gt) {
        /* {"query": i, "hits": [{"id", "distance"[, "payload"]}, ...]} */
        json_object *hits = json_object_new_array_ext((int)(res->n_hits < INT_MAX ? res->n_hits : INT_MAX));
        for (size_t h = 0; hits && h < res->n_hits; h++) {
            const Slimvec__V1__Hit *hit = res->hits[h];
            json_object *o = with(json_object_new_object(), "id", json_object_new_string(hit->id));
            o = with(o, "distance", svj_float_to_json(hit->distance));
            if (c->with_payload)
                o = with(o, "payload", svj_payload_to_json(hit->payload));
            if (!o || json_object_array_add(hits, o) != 0) {
                json_object_put(o);
                json_object_put(hits);
                hits = NULL;
            }
        }
        json_object *line = with(json_object_new_object(), "query", json_object_new_int64((int64_t)i));
        if (print_json_line(with(line, "hits", hits)) != 0)
            goto cleanup;
        rc = 0;
        goto cleanup;
    }
    size_t n = res->n_hits < RECALL_AT ? res->n_hits : RECALL_AT;
    const int32_t *truth = c->gt + i * c->gt_dim;
    for (size_t h = 0; h < n; h++) {
        /* Ids are decimal row numbers; anything else cannot match. */
        char *end;
        errno = 0;
        long long id = strtoll(res->hits[h]->id, &end, 10);
        if (errno || end == res->hits[h]->id || *end)
            continue;
        for (size_t g = 0; g < RECALL_AT; g++) {
            if (truth[g] == id) {
                c->hits_found++;
                break;
            }
        }
    }
    rc = 0;
cleanup:
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static int cmd_search(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    require(o->query, "--query");
    if (o->gt && o->k < RECALL_AT)
        usage_error("%s must be at least 10 to measure recall@10", "--k");
    if (!o->gt && o->json)
        usage_error("%s needs --gt (it holds the measurements)", "--json");
    if (o->k == 0)
        usage_error("%s must be at least 1", "--k");
    int rc = 1;
    svf_matrix qm = {0}, gm = {0};
    search_ctx c = {0};
    if ((rc = load_filter(o->filter, &c.filter)) != 0)
        return rc;
    rc = 1;
    if (read_vecs(o->query, SVF_FVECS, &qm) != 0 || (o->gt && read_vecs(o->gt, SVF_IVECS, &gm) != 0))
        goto cleanup;
    size_t nq = qm.rows, ng = gm.rows;
    c.dim = qm.dim;
    c.gt_dim = gm.dim;
    if (o->gt && (ng < nq || c.gt_dim < RECALL_AT)) {
        fprintf(stderr, "slimvec: %s: %zu rows of %" PRIu32 " ids; need %zu rows of at least %d\n",
                o->gt, ng, c.gt_dim, nq, RECALL_AT);
        goto cleanup;
    }
    if (check_dimension(ch, o->collection, o->query, c.dim, NULL) != 0)
        goto cleanup;
    c.collection = o->collection;
    c.queries = qm.data;
    c.gt = gm.data;
    c.with_payload = o->with_payload;
    c.k = (uint32_t)o->k;
    c.search_list = (uint32_t)o->search_list;
    c.rerank_depth = (uint32_t)o->rerank_depth;
    c.target_recall = (float)o->target_recall;
    c.no_rerank = o->no_rerank;
    c.sent_at = calloc(nq, sizeof *c.sent_at);
    c.latency = calloc(nq, sizeof *c.latency);
    if (!c.sent_at || !c.latency) {
        fprintf(stderr, "slimvec: out of memory\n");
        goto cleanup;
    }
    stream_cb cb = {nq, o->window, search_make, search_reply, &c};
    double t0 = now_s();
    if (run_stream(ch, "SearchStream", METHOD("SearchStream"), &cb) != 0)
        goto cleanup;
    if (!c.gt) {
        /* The hits are printed: nothing to measure. */
        if (fflush(stdout) != 0) {
            fprintf(stderr, "slimvec: cannot write the output\n");
            goto cleanup;
        }
        rc = 0;
        goto cleanup;
    }
    double secs = now_s() - t0;
    qsort(c.latency, nq, sizeof *c.latency, cmp_double);
    double recall = nq ? (double)c.hits_found / ((double)nq * RECALL_AT) : 0.0;
    double qps = secs > 0 ? (double)nq / secs : 0.0;
    double p50 = nq ? percentile(c.latency, nq, 0.50) * 1e6 : 0.0;
    double p99 = nq ? percentile(c.latency, nq, 0.99) * 1e6 : 0.0;
    printf("queries %zu, k %" PRIu32 ", search list %" PRIu32 ", window %zu\n", nq, c.k,
           c.search_list, (size_t)o->window);
    printf("recall@10 %.4f\n", recall);
    printf("QPS       %.0f (%.3f s)\n", qps, secs);
    printf("p50       %.0f us\n", p50);
    printf("p99       %.0f us\n", p99);
    if (o->json) {
        FILE *f = fopen(o->json, "w");
        if (!f) {
            fprintf(stderr, "slimvec: %s: %s\n", o->json, strerror(errno));
            goto cleanup;
        }
        fprintf(f,
                "{\"recall_at_10\": %.6f, \"qps\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
                "\"queries\": %zu, \"k\": %" PRIu32 ", \"search_list\": %" PRIu32 "}\n",
                recall, qps, p50, p99, nq, c.k, c.search_list);
        if (fclose(f) != 0) {
            fprintf(stderr, "slimvec: %s: write error\n", o->json);
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    free(c.sent_at);
    free(c.latency);
    svf_matrix_free(&qm);
    svf_matrix_free(&gm);
    svj_filter_free(c.filter);
    return rc;
}

/* ---- count / scroll --------------------------------------------------------- */

static int cmd_count(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    Slimvec__V1__CountRequest req = SLIMVEC__V1__COUNT_REQUEST__INIT;
    int rc = load_filter(o->filter, &req.filter);
    if (rc != 0)
        return rc;
    req.collection = (char *)o->collection;
    ProtobufCMessage *resp = NULL;
    rc = unary(ch, "Count", METHOD("Count"), &req.base, &slimvec__v1__count_response__descriptor, &resp);
    if (rc == 0) {
        printf("%" PRIu64 "\n", ((const Slimvec__V1__CountResponse *)resp)->count);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    svj_filter_free(req.filter);
    return rc;
}

/* One scrolled vector as a JSON line: id, then payload and values as asked. */
static int print_vector(const Slimvec__V1__Vector *v, const opts *o)
{
    json_object *line = with(json_object_new_object(), "id", json_object_new_string(v->id));
    if (o->with_payload)
        line = with(line, "payload", svj_payload_to_json(v->payload));
    if (o->with_vectors)
        line = with(line, "values", floats_json(v->values, v->n_values));
    return print_json_line(line);
}

/* Scroll pages, following next_page_token until it is empty or --limit
 * vectors are printed. */
static int cmd_scroll(grpc_channel *ch, const opts *o)
{
    require(o->collection, "--collection");
    Slimvec__V1__ScrollRequest req = SLIMVEC__V1__SCROLL_REQUEST__INIT;
    int rc = load_filter(o->filter, &req.filter);
    if (rc != 0)
        return rc;
    rc = 1;
    char *token = strdup("");
    if (!token) {
        fprintf(stderr, "slimvec: out of memory\n");
        goto cleanup;
    }
    req.collection = (char *)o->collection;
    req.with_payload = o->with_payload;
    req.with_vectors = o->with_vectors;
    unsigned long printed = 0;
    for (;;) {
        req.page_token = token;
        req.page_size = (uint32_t)o->page_size;
        if (o->limit) {
            /* No more than the rest of the limit; 0 (the server's default
             * of 100, or its limit when lower) stays while more is left. */
            unsigned long rest = o->limit - printed;
            if (o->page_size ? rest < o->page_size : rest < 100)
                req.page_size = (uint32_t)rest;
        }
        ProtobufCMessage *resp = NULL;
        if (unary(ch, "Scroll", METHOD("Scroll"), &req.base, &slimvec__v1__scroll_response__descriptor, &resp) != 0)
            goto cleanup;
        const Slimvec__V1__ScrollResponse *r = (const void *)resp;
        int failed = 0;
        for (size_t i = 0; i < r->n_vectors && !failed && (!o->limit || printed < o->limit); i++) {
            failed = print_vector(r->vectors[i], o);
            printed++;
        }
        /* An empty page that hands back the token it was given would loop
         * forever. */
        int stuck = r->n_vectors == 0 && *r->next_page_token && !strcmp(r->next_page_token, token);
        free(token);
        token = strdup(r->next_page_token);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (failed)
            goto cleanup;
        if (!token) {
            fprintf(stderr, "slimvec: out of memory\n");
            goto cleanup;
        }
        if (stuck) {
            fprintf(stderr, "slimvec: Scroll: an empty page with the same page token: stopping\n");
            goto cleanup;
        }
        if (!*token || (o->limit && printed >= o->limit))
            break;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "slimvec: cannot write the output\n");
        goto cleanup;
    }
    rc = 0;
cleanup:
    free(token);
    svj_filter_free(req.filter);
    return rc;
}

/* ---- cluster ------------------------------------------------------------- */

#define CLUSTER_METHOD(name) "/slimvec.v1.SlimVecCluster/" name

static const char *state_name(Slimvec__V1__ReplicaState s)
{
    switch (s) {
    case SLIMVEC__V1__REPLICA_STATE__REPLICA_CATCHING_UP: return "catching-up";
    case SLIMVEC__V1__REPLICA_STATE__REPLICA_READY: return "ready";
    case SLIMVEC__V1__REPLICA_STATE__REPLICA_LEAVING: return "leaving";
    default: return "?";
    }
}

static void print_map(const Slimvec__V1__ShardMap *m)
{
    if (!m)
        return;
    printf("shard map: %u shards, epoch %" PRIu64 "\n", m->shards, m->epoch);
    for (uint32_t s = 0; s < m->shards; s++)
        for (size_t i = 0; i < m->n_replicas; i++) {
            const Slimvec__V1__ShardReplica *r = m->replicas[i];
            if (r->shard == s)
                printf("  shard %u  %-20s %-12s %s%s%s\n", s, r->pod, state_name(r->state), r->address,
                       *r->replaces ? "  replaces " : "", r->replaces);
        }
    for (size_t i = 0; i < m->n_idle; i++)
        printf("  idle     %s\n", m->idle[i]);
}

static int cluster_status(grpc_channel *ch)
{
    Slimvec__V1__ClusterStatusRequest req = SLIMVEC__V1__CLUSTER_STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if (unary(ch, "cluster status", CLUSTER_METHOD("Status"), &req.base,
              &slimvec__v1__cluster_status_response__descriptor, &resp) != 0)
        return 1;
    const Slimvec__V1__ClusterStatusResponse *r = (const void *)resp;
    const Slimvec__V1__ShardMap *m = r->map;
    printf("shard map: %u shards, epoch %" PRIu64 "\n", m ? m->shards : 0, m ? m->epoch : 0);
    printf("%-6s %-20s %-12s %-5s %-22s %s\n", "shard", "pod", "state", "lease", "address",
           "collection: applied LSN, lag (records), vectors");
    for (uint32_t s = 0; m && s < m->shards; s++) {
        int any = 0;
        for (size_t i = 0; i < r->n_replicas; i++) {
            const Slimvec__V1__ClusterReplicaStatus *x = r->replicas[i];
            if (!x->replica || x->replica->shard != s)
                continue;
            any = 1;
            printf("%-6u %-20s %-12s %-5s %-22s", s, x->replica->pod, state_name(x->replica->state),
                   x->live ? "live" : "GONE", x->replica->address);
            if (*x->error)
                printf(" (no answer: %s)", x->error);
            for (size_t k = 0; k < x->n_collections; k++)
                printf("%s%s: %" PRIu64 ", %" PRIu64 ", %" PRIu64, k ? "; " : " ", x->collections[k]->collection,
                       x->collections[k]->applied_lsn, x->collections[k]->lag_records, x->collections[k]->vectors);
            printf("\n");
        }
        if (!any)
            printf("%-6u (no replica)\n", s);
    }
    for (size_t i = 0; m && i < m->n_idle; i++)
        printf("idle   %s\n", m->idle[i]);
    printf("live pods:");
    for (size_t i = 0; i < r->n_pods; i++)
        printf(" %s", r->pods[i]->pod);
    printf("\n");
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int cmd_cluster(grpc_channel *ch, const opts *o)
{
    if (!strcmp(o->sub, "status"))
        return cluster_status(ch);
    ProtobufCMessage *resp = NULL;
    if (!strcmp(o->sub, "move")) {
        Slimvec__V1__MoveShardRequest req = SLIMVEC__V1__MOVE_SHARD_REQUEST__INIT;
        req.shard = (uint32_t)o->shard;
        req.to_pod = (char *)o->to;
        req.from_pod = (char *)(o->from ? o->from : "");
        if (unary(ch, "cluster move", CLUSTER_METHOD("MoveShard"), &req.base,
                  &slimvec__v1__move_shard_response__descriptor, &resp) != 0)
            return 1;
        printf("%s joins shard %ld, catching up%s%s%s\n", o->to, o->shard, o->from ? "; " : "",
               o->from ? o->from : "", o->from ? " leaves once it is ready" : "");
        print_map(((const Slimvec__V1__MoveShardResponse *)resp)->map);
    } else {
        Slimvec__V1__DrainPodRequest req = SLIMVEC__V1__DRAIN_POD_REQUEST__INIT;
        req.pod = (char *)o->pod;
        if (unary(ch, "cluster drain", CLUSTER_METHOD("DrainPod"), &req.base,
                  &slimvec__v1__drain_pod_response__descriptor, &resp) != 0)
            return 1;
        const Slimvec__V1__DrainPodResponse *r = (const void *)resp;
        if (*r->moved_to)
            printf("%s's shard moves to %s (it leaves once %s is ready)\n", o->pod, r->moved_to, r->moved_to);
        else
            printf("%s leaves its shard (its other replicas serve it)\n", o->pod);
        print_map(r->map);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    int (*run)(grpc_channel *, const opts *) = NULL;
    if (!strcmp(cmd, "create")) run = cmd_create;
    else if (!strcmp(cmd, "stats")) run = cmd_stats;
    else if (!strcmp(cmd, "snapshot")) run = cmd_snapshot;
    else if (!strcmp(cmd, "health")) run = cmd_health;
    else if (!strcmp(cmd, "ingest")) run = cmd_ingest;
    else if (!strcmp(cmd, "search")) run = cmd_search;
    else if (!strcmp(cmd, "count")) run = cmd_count;
    else if (!strcmp(cmd, "scroll")) run = cmd_scroll;
    else if (!strcmp(cmd, "list")) run = cmd_list;
    else if (!strcmp(cmd, "drop")) run = cmd_drop;
    else if (!strcmp(cmd, "cluster")) run = cmd_cluster;
    else if (strcmp(cmd, "token")) usage_error("unknown command %s", cmd);
    opts o;
    const char *sub = NULL;
    if (run == cmd_cluster) {
        /* slimvec cluster SUB [options]: the options after the subcommand. */
        if (argc < 3 || (strcmp(argv[2], "status") && strcmp(argv[2], "move") && strcmp(argv[2], "drain")))
            usage_error("cluster needs status, move or drain%s", "");
        sub = argv[2];
        argc--;
        argv++;
    }
    parse_opts(argc, argv, &o); /* before grpc_init: usage errors exit at once */
    o.sub = sub;
    if (sub && !strcmp(sub, "move") && (o.shard < 0 || !o.to))
        usage_error("cluster move needs --shard N and --to POD%s", "");
    if (sub && !strcmp(sub, "drain"))
        require(o.pod, "--pod");
    if (!run)
        return make_token(&o);
    svd_client_options_from_env(&conn);
    if (conn.token && !conn.tls && !conn.ca && !conn.cert && !svd_address_is_local(o.addr))
        fprintf(stderr, "slimvec: warning: sending the token to %s without TLS (--ca or --tls)\n", o.addr);
    grpc_init();
    char err[256];
    if (svd_client_auth_md_init(&auth_md, &conn, err, sizeof err) != 0) {
        fprintf(stderr, "slimvec: %s\n", err);
        grpc_shutdown_blocking();
        return 2;
    }
    int rc = 1;
    grpc_channel *ch = open_channel(o.addr);
    if (ch) {
        rc = run(ch, &o);
        grpc_channel_destroy(ch);
    }
    svd_client_auth_md_release(&auth_md);
    grpc_shutdown_blocking();
    return rc;
}
