/*
 * The HTTP port (libmicrohttpd): /metrics for Prometheus, /healthz and
 * /readyz for probes.
 *
 * Optionally over TLS (the gRPC port's certificate and key; a new pair in
 * force restarts the daemon on the same listening socket, so the port
 * never closes), and optionally /metrics behind a bearer token: one of the
 * tokens file with a read role on every collection (it names them all).
 * /healthz and /readyz stay open for probes.
 */
#ifndef SVD_HTTP_H
#define SVD_HTTP_H

#include <stdatomic.h>
#include <stddef.h>

#include "metrics.h"
#include "tls.h"
#include "tokens.h"

typedef struct svd_http_options {
    const char *listen;     /* IPv4 host:port */
    svd_metrics *metrics;
    atomic_int *serving;    /* /readyz: 1 ready */
    svd_tokens *tokens;     /* NULL: /metrics is open */
    svd_tls *tls;           /* NULL: plain HTTP */
} svd_http_options;

typedef struct svd_http svd_http;

svd_http *svd_http_start(const svd_http_options *o, char *err, size_t err_cap);
/* Take up a new TLS pair if one came into force: 1 done, 0 nothing to do,
 * -1 failed (err filled; the previous daemon keeps serving). */
int svd_http_refresh(svd_http *h, char *err, size_t err_cap);
void svd_http_stop(svd_http *h);

#endif
