/*
 * Prometheus metrics (served over HTTP by http.c).
 *
 * Per collection: vectors, the arena's allocated bytes (the measurement),
 * bytes per vector, and the engine's estimated breakdown by part. Process:
 * jemalloc's allocated, active, resident, mapped, retained and metadata.
 * Per method: calls by final status code, and a histogram of the time spent
 * handling each message (a unary call, or one message of a stream).
 */
#ifndef SVD_METRICS_H
#define SVD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "registry.h"
#include "rpc.h"
#include "tls.h"
#include "tokens.h"

typedef struct svd_metrics svd_metrics;

svd_metrics *svd_metrics_create(const svd_method *methods, size_t n_methods, svd_registry *registry,
                                atomic_int *serving);
void svd_metrics_free(svd_metrics *m);
/* The start-up's recovery time (before svd_metrics_listen). */
void svd_metrics_set_recovery(svd_metrics *m, double seconds);
/* The memory limit (0 = none known) and the cap derived from it. */
void svd_metrics_set_memory(svd_metrics *m, uint64_t limit, uint64_t cap);
/* The RPC server whose calls, streams and budgets are exported (may be
 * set while the daemon runs). */
void svd_metrics_set_server(svd_metrics *m, svd_server *s);

/* The tokens table and TLS set whose reloads and expiry are exported
 * (either NULL; before serving). */
void svd_metrics_set_auth(svd_metrics *m, svd_tokens *tokens, svd_tls *tls);
/* The text of a scrape: svd_text_put appends (printf-style; growing the
 * buffer, or marking the scrape failed when out of memory). */
typedef struct svd_text svd_text;
void svd_text_put(svd_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* More metrics, rendered by another part (the cluster's) into the scrape's
 * text in the exposition format. */
void svd_metrics_set_extra(svd_metrics *m, void (*render)(void *ctx, svd_text *t), void *ctx);
/* /metrics refused (forbidden: a valid token with too weak a role). */
void svd_metrics_http_denied(svd_metrics *m, int forbidden);

/* rpc.c observers (method -1: an unknown method). */
void svd_metrics_message(void *m, int method, double seconds);
void svd_metrics_call_end(void *m, int method, int code);
void svd_metrics_stream_denied(void *m, int method);

/* The exposition text (malloc'd; caller frees). */
char *svd_metrics_render(svd_metrics *m, size_t *len);

#endif
