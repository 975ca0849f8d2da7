/*
 * A gRPC server on the gRPC C core that no single client can starve.
 *
 * Threads. A few event threads run the completion queue: they only move
 * calls along (post reads and sends, admit or refuse calls) and answer
 * "light" methods (health) themselves, so health is answered whatever the
 * handlers do. Every other request becomes a job for a pool of work
 * threads. A handler that cannot go on now (a full write buffer, waiting for
 * the maintenance thread) defers: its job waits off-thread until
 * svd_server_wake() or a periodic retry, holding no thread.
 *
 * Budgets, each a flag of the server:
 *   - calls and streams open at once (RESOURCE_EXHAUSTED past them);
 *   - bytes in flight: decoded requests plus responses built and not yet
 *     sent, one budget for the whole server (RESOURCE_EXHAUSTED, the figure
 *     and the limit named);
 *   - the size of one message each way (--max-message), checked by the
 *     handler against an upper bound before it builds anything;
 *   - responses queued per stream (reading pauses behind them: HTTP/2 flow
 *     control pushes back on the client), and a send timeout that cancels a
 *     stream whose client stopped reading;
 *   - gRPC's own transport memory (a resource quota).
 *
 * Every job runs with a call context: the call's deadline, its cancellation
 * (the client gave up) and the server's stop (past the shutdown grace).
 * Long work asks svd_ctx_stopped() every few milliseconds and stops.
 *
 * Streams read one message at a time: the next read is posted once the
 * handler has answered the previous one, so responses go out in request
 * order.
 */
#ifndef SVD_RPC_H
#define SVD_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct svd_server svd_server;
struct svd_principal; /* auth/tokens.h */

/*
 * A call's context, handed to its handler. The runtime fills it for every
 * call; svd_ctx_init_local makes one for a handler run without gRPC (tests,
 * fuzzing): no deadline unless given, never cancelled, no budget.
 */
typedef struct svd_ctx {
    double deadline;             /* monotonic seconds; INFINITY when none */
    _Atomic int *cancelled;      /* the client gave up (may be NULL) */
    _Atomic int *stopping;       /* the server is past its grace (may be NULL) */
    svd_server *srv;             /* NULL: a local context */
    size_t max_message;          /* --max-message */
    size_t reserved;             /* bytes reserved by the handler (svd_ctx_reserve) */
    /* Who is calling, from the call's bearer token (see svd_server_config's
     * authenticate). NULL when the server checks no tokens (and in local
     * contexts): then every call may do everything. */
    const struct svd_principal *principal;
    /* The call's "authorization" metadata as received (NULL when the server
     * checks no tokens or none came): a router passes it on, so the pod it
     * calls authorizes the caller itself. Valid while the call lives. */
    const grpc_slice *authorization;
    /* The call's metadata as received (NULL in local contexts). */
    const grpc_metadata_array *metadata;
} svd_ctx;

/* The value of the call's metadata key (the first one); NULL when absent. */
const grpc_slice *svd_ctx_metadata(const svd_ctx *ctx, const char *key);

/* A local context: timeout_seconds <= 0 means no deadline. */
void svd_ctx_init_local(svd_ctx *ctx, size_t max_message, double timeout_seconds);

typedef struct svd_reply {
    grpc_status_code code;       /* GRPC_STATUS_OK or the error */
    char message[512];           /* error details */
    const ProtobufCMessage *msg; /* the response when OK (packed by the runtime) */
    void *owned;                 /* freed with free_fn once msg is packed */
    void (*free_fn)(void *);
    int defer;                   /* set by a handler that changed nothing and wants to
                                    run again later with the same request */
} svd_reply;

/* Set an error reply. */
void svd_reply_error(svd_reply *r, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A handler: answer req (never NULL, except for a watch's last update at
 * shutdown) in *out. *state starts NULL, lives as long as the call (kept
 * across deferrals and, for streams, across messages); `end` frees it.
 */
typedef void (*svd_handler_fn)(void *app, svd_ctx *ctx, void **state, const ProtobufCMessage *req,
                               svd_reply *out);
typedef void (*svd_end_fn)(void *app, void *state, int cancelled);

typedef enum svd_kind {
    SVD_UNARY,
    SVD_STREAM,  /* bidirectional: one answer per message */
    SVD_WATCH    /* server-streaming watch (health Watch): the client's half-close keeps
                    the call open; at shutdown the handler gets req NULL for one last
                    update, and the call ends */
} svd_kind;

typedef struct svd_method {
    const char *path;                           /* "/slimvec.v1.SlimVec/Search" */
    const ProtobufCMessageDescriptor *request;
    svd_handler_fn handle;
    svd_end_fn end;                             /* may be NULL */
    svd_kind kind;
    int light;   /* answered on the event threads, never refused by the call limits:
                    only for handlers that do a few microseconds of work (health) */
    int role;    /* the least role (auth/tokens.h svd_role) a caller must have on some
                    collection; 0: open to every caller (health) */
} svd_method;

typedef struct svd_server_config {
    const char *listen;          /* "127.0.0.1:50051" */
    int threads;                 /* work threads */
    int io_threads;              /* completion-queue threads (0: 2) */
    int max_message_bytes;       /* receive and send limit */
    int max_calls;               /* calls open at once (streams included) */
    int max_streams;             /* streaming calls open at once */
    size_t inflight_bytes;       /* decoded requests + unsent responses, whole server */
    size_t grpc_memory;          /* gRPC transport resource quota; 0 = gRPC's default */
    double send_timeout;         /* seconds a stream's send may wait for its client */
    int stream_queue;            /* responses queued per stream before reading pauses */
    grpc_server_credentials *credentials; /* NULL: plaintext (the server takes a ref) */
    /*
     * Authentication (NULL: none). Called on an event thread for each new
     * call of a method whose role is not 0 (unknown methods included, role
     * -1), before the call counts against any limit, with the value of its
     * "authorization" metadata (NULL when absent). Returns GRPC_STATUS_OK
     * and sets *principal (handed to the handler in its context, freed
     * with principal_free when the call ends), or the code and message the
     * call is refused with.
     */
    void *auth;
    grpc_status_code (*authenticate)(void *auth, int method, int role, const char *value, size_t len,
                                     struct svd_principal **principal, char *msg, size_t msg_cap);
    void (*principal_free)(struct svd_principal *principal);
    /* Before each message of a stream: the principal brought up to date
     * with the tokens in force (a reload may have narrowed or removed its
     * token); not OK ends the stream UNAUTHENTICATED. May be NULL. */
    grpc_status_code (*recheck)(void *auth, struct svd_principal *principal);
    /* Observers (may be NULL); method is an index or -1 (unknown method). */
    void *observer;
    void (*on_message)(void *observer, int method, double seconds); /* one message handled */
    void (*on_call_end)(void *observer, int method, int code);      /* a call finished */
    void (*on_stream_denied)(void *observer, int method);           /* a stream message refused
                                                                       by authorization */
} svd_server_config;

/* Creates, binds and starts the server; NULL with err filled on failure.
 * methods (and app) must outlive the server. */
svd_server *svd_server_start(const svd_server_config *cfg, const svd_method *methods,
                             size_t n_methods, void *app, char *err, size_t err_cap);

/* Run every deferred job again (something they wait for may have happened). */
void svd_server_wake(svd_server *s);

/*
 * Stop accepting calls, let running ones finish for up to grace_seconds,
 * then cancel the rest: their handlers see svd_ctx_stopped() and return
 * within milliseconds. Joins every thread and frees everything. Returns 0,
 * or -1 when some handler did not return within hard_seconds after the
 * cancel (the threads are then left behind; exit soon).
 */
int svd_server_stop(svd_server *s, double grace_seconds, double hard_seconds);

typedef struct svd_server_stats {
    int calls;               /* open calls (health Check not counted) */
    int streams;             /* open streaming calls */
    int deferred;            /* jobs waiting off-thread */
    size_t inflight_bytes;   /* reserved: decoded requests + unsent responses */
    uint64_t refused_calls;  /* over max_calls / max_streams */
    uint64_t refused_bytes;  /* over inflight_bytes */
    uint64_t send_timeouts;  /* streams cancelled for not reading */
} svd_server_stats;
void svd_server_get_stats(svd_server *s, svd_server_stats *out);

/* ---- the call context, for handlers -------------------------------------- */

/* 1 when the handler should stop now: the client cancelled, the deadline
 * passed, or the server is stopping. Cheap (an atomic load and a clock
 * read); safe from any thread. */
int svd_ctx_stopped(svd_ctx *ctx);
/* The status for a stopped call: DEADLINE_EXCEEDED, CANCELLED or UNAVAILABLE. */
grpc_status_code svd_ctx_stop_code(svd_ctx *ctx);
/* Seconds left before the deadline (a large number when none). */
double svd_ctx_remaining(svd_ctx *ctx);
/* The most bytes one response may have (--max-message). */
size_t svd_ctx_max_message(svd_ctx *ctx);
/*
 * Reserve bytes of the in-flight budget for the response this handler is
 * about to build (an upper bound of what it will allocate). Released by the
 * runtime once the response is sent (or dropped). 0 and *r set to
 * RESOURCE_EXHAUSTED naming the figures when the budget has no room.
 */
int svd_ctx_reserve(svd_ctx *ctx, size_t bytes, svd_reply *r);
/* A handler refused this call's current message for authorization
 * (PERMISSION_DENIED). A unary call's denial shows in its status; a
 * stream's, answered in-band, is counted here. */
void svd_ctx_denied(svd_ctx *ctx);
/* The server this call runs on (for svd_server_wake from a handler). */
svd_server *svd_ctx_server(svd_ctx *ctx);

/* The true length of a string field of the request a handler was given:
 * strlen() stops at an embedded NUL, which protobuf allows. Only for
 * requests decoded by the runtime or by svd_decode. */
size_t svd_request_strlen(const char *field);

/* Decode a request as the runtime does, for a handler run without gRPC
 * (NULL when malformed). Free the message and its memory with svd_decoded_free. */
typedef struct svd_decoded svd_decoded;
ProtobufCMessage *svd_decode(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                             svd_decoded **mem);
void svd_decoded_free(svd_decoded *mem);

#endif
