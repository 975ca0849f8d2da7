#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

struct svd_http {
    svd_http_options o;
    struct sockaddr_in sa;
    struct MHD_Daemon *daemon;
    char *cert, *key;        /* the PEMs the daemon serves (kept while it runs) */
    uint64_t generation;     /* of those PEMs */
};

static struct MHD_Response *text_response(const char *s)
{
    return MHD_create_response_from_buffer(strlen(s), (void *)s, MHD_RESPMEM_PERSISTENT);
}

/* 0 when the request may read /metrics; else the HTTP status to refuse it. */
static unsigned metrics_denied(svd_http *h, struct MHD_Connection *conn)
{
    if (!h->o.tokens)
        return 0;
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    svd_principal *p = NULL;
    char why[160];
    unsigned status = 0;
    if (svd_tokens_check(h->o.tokens, v, v ? strlen(v) : 0, &p, why, sizeof why) != SVD_AUTH_OK)
        status = MHD_HTTP_UNAUTHORIZED;
    else if (!svd_principal_allows(p, SVD_ROLE_METRICS, NULL))
        status = MHD_HTTP_FORBIDDEN;
    svd_principal_free(p);
    if (status)
        svd_metrics_http_denied(h->o.metrics, status == MHD_HTTP_FORBIDDEN);
    return status;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **con_cls)
{
    svd_http *h = cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)con_cls;
    struct MHD_Response *resp = NULL;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        resp = text_response("");
    } else if (strcmp(url, "/metrics") == 0) {
        unsigned denied = metrics_denied(h, conn);
        size_t len = 0;
        char *body = denied ? NULL : svd_metrics_render(h->o.metrics, &len);
        if (denied == MHD_HTTP_UNAUTHORIZED) {
            status = denied;
            resp = text_response("a bearer token is needed: Authorization: Bearer <token>\n");
            if (resp)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"slimvec\"");
        } else if (denied) {
            status = denied;
            resp = text_response("the token needs the metrics role (or admin on every collection)\n");
        } else if (body) {
            resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
            type = "text/plain; version=0.0.4; charset=utf-8";
        } else {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            resp = text_response("out of memory\n");
        }
    } else if (strcmp(url, "/healthz") == 0) {
        resp = text_response("ok\n");
    } else if (strcmp(url, "/readyz") == 0) {
        int ready = atomic_load(h->o.serving);
        status = ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        resp = text_response(ready ? "ready\n" : "shutting down\n");
    } else {
        status = MHD_HTTP_NOT_FOUND;
        resp = text_response("not found\n");
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/*
 * Start a daemon on the address, or on fd (a quiesced daemon's listening
 * socket) when it is not MHD_INVALID_SOCKET. epoll, not select(): with
 * thousands of collections open (a log file each) the socket's descriptor
 * is past FD_SETSIZE. ITC: so it can be quiesced for a TLS reload.
 */
static struct MHD_Daemon *start_daemon(svd_http *h, MHD_socket fd, const char *cert, const char *key)
{
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | (cert ? MHD_USE_TLS : 0);
    struct MHD_OptionItem opts[9];
    size_t n = 0;
    if (fd != MHD_INVALID_SOCKET)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, (intptr_t)fd, NULL};
    else
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &h->sa};
    /* Probes must get through while someone holds connections open: many
     * connections, few per address (the kubelet probes from the node's),
     * and idle ones closed soon. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 512, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, 16, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 10, NULL};
    if (cert) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return MHD_start_daemon(flags, ntohs(h->sa.sin_port), NULL, NULL, answer, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
}

static void free_pems(char **cert, char **key)
{
    if (*key)
        sodium_memzero(*key, strlen(*key));
    free(*cert);
    free(*key);
    *cert = *key = NULL;
}

/* The PEMs the daemon now serves (the previous ones are freed). */
static void adopt(svd_http *h, char *cert, char *key, uint64_t generation)
{
    free_pems(&h->cert, &h->key);
    h->cert = cert;
    h->key = key;
    h->generation = generation;
}

/* A daemon bound to the address afresh, with the PEMs in force (at the
 * start, or when a failed reload left the port closed). 0 on success. */
static int bind_fresh(svd_http *h)
{
    char *cert = NULL, *key = NULL;
    uint64_t gen = h->generation;
    if (h->o.tls && svd_tls_pems(h->o.tls, &cert, &key, &gen) != 0)
        return -1;
    h->daemon = start_daemon(h, MHD_INVALID_SOCKET, cert, key);
    if (!h->daemon) {
        free_pems(&cert, &key);
        return -1;
    }
    adopt(h, cert, key, gen);
    return 0;
}

svd_http *svd_http_start(const svd_http_options *o, char *err, size_t err_cap)
{
    svd_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    h->o = *o;
    const char *addr = o->listen;
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, err_cap, "metrics address '%s' is not host:port", addr);
        goto fail;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    h->sa.sin_family = AF_INET;
    h->sa.sin_port = htons((uint16_t)port);
    if (*end || port < 1 || port > 65535 ||
        inet_pton(AF_INET, strcmp(host, "") == 0 ? "0.0.0.0" : host, &h->sa.sin_addr) != 1) {
        snprintf(err, err_cap, "metrics address '%s' is not an IPv4 host:port", addr);
        goto fail;
    }
    if (o->tls && !MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        snprintf(err, err_cap, "this libmicrohttpd has no TLS");
        goto fail;
    }
    if (bind_fresh(h) != 0) {
        snprintf(err, err_cap, "cannot serve metrics on %s", addr);
        goto fail;
    }
    return h;
fail:
    free(h);
    return NULL;
}

int svd_http_refresh(svd_http *h, char *err, size_t err_cap)
{
    if (!h->daemon) {
        /* A failed reload left the port closed: bind it again. */
        if (bind_fresh(h) == 0)
            return 1;
        snprintf(err, err_cap, "the HTTP daemon cannot restart: /metrics, /healthz and /readyz are down");
        return -1;
    }
    if (!h->o.tls || svd_tls_generation(h->o.tls) == h->generation)
        return 0;
    char *cert = NULL, *key = NULL;
    uint64_t gen = 0;
    if (svd_tls_pems(h->o.tls, &cert, &key, &gen) != 0) {
        snprintf(err, err_cap, "out of memory");
        return -1;
    }
    /* The old daemon stops accepting and hands its socket over; the
     * connections it has finish when it stops. */
    MHD_socket fd = MHD_quiesce_daemon(h->daemon);
    if (fd == MHD_INVALID_SOCKET) {
        snprintf(err, err_cap, "the HTTP daemon cannot hand its socket over");
        free_pems(&cert, &key);
        h->generation = gen; /* not again at every refresh: at the next new pair */
        return -1;
    }
    /* A daemon that fails to start closes the socket it was given: keep a
     * duplicate to fall back on. */
    MHD_socket spare = dup(fd);
    struct MHD_Daemon *next = start_daemon(h, fd, cert, key);
    int r = 1;
    if (!next) {
        /* The new pair does not start (gnutls refused it): serve the old. */
        snprintf(err, err_cap, "the HTTP daemon does not start with the new certificate");
        free_pems(&cert, &key);
        h->generation = gen; /* not again at every refresh: at the next new pair */
        next = spare >= 0 ? start_daemon(h, spare, h->cert, h->key) : NULL;
        spare = MHD_INVALID_SOCKET; /* the new daemon owns it, or closed it */
        r = -1;
        if (!next) {
            snprintf(err, err_cap, "the HTTP daemon cannot restart: /metrics, /healthz and /readyz are down");
            MHD_stop_daemon(h->daemon);
            h->daemon = NULL;
            return -1;
        }
    }
    if (spare != MHD_INVALID_SOCKET)
        close(spare);
    MHD_stop_daemon(h->daemon);
    h->daemon = next;
    if (r == 1)
        adopt(h, cert, key, gen);
    return r;
}

void svd_http_stop(svd_http *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    free_pems(&h->cert, &h->key);
    free(h);
}
