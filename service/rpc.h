/*
 * A gRPC server on the gRPC C core: worker threads on one completion
 * queue, registered unary and bidirectional-streaming methods, and
 * UNIMPLEMENTED for every other method (never a hang).
 *
 * Handlers run on the worker thread that received the message and answer
 * with an svd_reply. A stream reads one message at a time: the next read is
 * posted once the handler has answered the previous one, so responses go out
 * in request order, and reading pauses while too many responses wait to be
 * sent (backpressure).
 */
#ifndef SVD_RPC_H
#define SVD_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

typedef struct svd_reply {
    grpc_status_code code;       /* GRPC_STATUS_OK or the error */
    char message[512];           /* error details */
    const ProtobufCMessage *msg; /* the response when OK (packed by the runtime) */
    void *owned;                 /* freed with free_fn once msg is packed */
    void (*free_fn)(void *);
} svd_reply;

/* Set an error reply. */
void svd_reply_error(svd_reply *r, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Unary: answer req (never NULL) in *out. `app` is the server's app pointer. */
typedef void (*svd_unary_fn)(void *app, const ProtobufCMessage *req, svd_reply *out);

/* Stream: called per message. A reply with an error code ends the stream
 * with that status; *state starts NULL and is the handler's to use. */
typedef void (*svd_stream_fn)(void *app, void **state, const ProtobufCMessage *req, svd_reply *out);
/* Stream end (clean, cancelled or failed): free *state. */
typedef void (*svd_stream_end_fn)(void *app, void *state, int cancelled);

typedef struct svd_method {
    const char *path;                           /* "/slimvec.v1.SlimVec/Search" */
    const ProtobufCMessageDescriptor *request;
    svd_unary_fn unary;                         /* unary methods */
    svd_stream_fn stream;                       /* bidirectional streams */
    svd_stream_end_fn end;                      /* streams; may be NULL */
    int watch;   /* server-streaming watch (health Watch): the client's
                    half-close keeps the call open; at shutdown the stream
                    handler is called with req NULL for one last update, and
                    the call ends */
} svd_method;

typedef struct svd_server svd_server;

typedef struct svd_server_config {
    const char *listen;          /* "127.0.0.1:50051" */
    int threads;                 /* completion-queue workers */
    int max_message_bytes;       /* receive and send limit */
    /* Observers (may be NULL); method is an index or -1 (unknown method). */
    void *observer;
    void (*on_message)(void *observer, int method, double seconds); /* one message handled */
    void (*on_call_end)(void *observer, int method, int code);      /* a call finished */
} svd_server_config;

/* Creates, binds and starts the server; NULL with err filled on failure.
 * methods (and app) must outlive the server. */
svd_server *svd_server_start(const svd_server_config *cfg, const svd_method *methods,
                             size_t n_methods, void *app, char *err, size_t err_cap);

/* Stop accepting calls, let running ones finish for up to grace_seconds,
 * cancel the rest, join the workers and free everything. */
void svd_server_stop(svd_server *s, double grace_seconds);

#endif
