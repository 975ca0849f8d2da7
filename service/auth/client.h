/*
 * How our clients (the CLI, the cluster's links to other pods) reach a
 * slimvecd: a channel, plain or TLS (a CA to trust, optionally a client
 * certificate for mutual TLS), and the bearer token each call carries.
 *
 * Flags win over the environment: SLIMVEC_TOKEN, SLIMVEC_CA, SLIMVEC_CERT,
 * SLIMVEC_KEY, SLIMVEC_TLS=1 (TLS with the system's roots),
 * SLIMVEC_SERVER_NAME (the name the certificate must carry, when the
 * address is an IP or a different name).
 */
#ifndef SVD_CLIENT_H
#define SVD_CLIENT_H

#include <grpc/grpc.h>
#include <stddef.h>

typedef struct svd_client_options {
    int tls;                 /* 1: TLS (set by ca or cert too) */
    const char *ca;          /* PEM file of the CAs to trust; NULL: the system's */
    const char *cert, *key;  /* PEM client certificate and key (mutual TLS) */
    const char *server_name; /* override of the name checked in the certificate */
    const char *token;       /* bearer token; NULL: none */
} svd_client_options;

/* 1 when a gRPC address reaches this machine only (127.x, localhost,
 * [::1], a Unix socket): a token or a server there needs no TLS. */
int svd_address_is_local(const char *addr);

/* Fill the fields still NULL (or 0) from the environment. */
void svd_client_options_from_env(svd_client_options *o);

/* The channel args of a link to a server that may be down (a cluster's
 * peers, etcd members): reconnect tries within 100 ms .. 1 s, so a server
 * that comes back is found quickly and one that is down fails calls at
 * once. Fills out[0..2); returns 2. */
size_t svd_client_fast_reconnect(grpc_arg out[2]);

/* A channel to addr, with extra channel args; NULL with err filled. */
grpc_channel *svd_client_channel(const char *addr, const svd_client_options *o, const grpc_arg *extra,
                                 size_t n_extra, char *err, size_t err_cap);

/* The call metadata carrying the token. */
typedef struct svd_client_auth_md {
    grpc_metadata md[1];
    size_t count;            /* 0 when there is no token */
} svd_client_auth_md;
/* 0, or -1 and err filled when the token cannot be sent (bad characters,
 * too long). Release with svd_client_auth_md_release. */
int svd_client_auth_md_init(svd_client_auth_md *m, const svd_client_options *o, char *err, size_t err_cap);
void svd_client_auth_md_release(svd_client_auth_md *m);

#endif
