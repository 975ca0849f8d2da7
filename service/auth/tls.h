/*
 * TLS for our servers: a certificate chain and key (PEM files), optionally
 * a CA for client certificates (mutual TLS), watched for changes.
 *
 * The gRPC port takes its credentials from a config fetcher (the gRPC C
 * core's stable API for reloading without a restart): at each new
 * connection gRPC asks for the current set, and we hand over a new one when
 * the files changed (looked at most every reload_seconds). New files are
 * checked with OpenSSL first (they parse, the key matches the certificate):
 * a half-written or wrong pair is refused, counted and logged, and the
 * previous one stays in force, so a bad rotation never breaks serving.
 * Connections already open keep the certificate they were made with.
 *
 * The HTTP port (metrics.c) takes the same PEM bytes; svd_tls_generation
 * says when they changed.
 */
#ifndef SVD_TLS_H
#define SVD_TLS_H

#include <grpc/grpc_security.h>
#include <stddef.h>
#include <stdint.h>

typedef enum svd_client_auth {
    SVD_CLIENT_AUTH_NONE,     /* no client certificate asked for */
    SVD_CLIENT_AUTH_OPTIONAL, /* asked for; verified against the CA when one is sent */
    SVD_CLIENT_AUTH_REQUIRE   /* a client certificate the CA signed, or no connection */
} svd_client_auth;

/* "none", "optional", "require": 0 and *out set, -1 otherwise. */
int svd_client_auth_parse(const char *text, svd_client_auth *out);

typedef struct svd_tls_options {
    const char *cert;        /* PEM certificate chain, the server's first */
    const char *key;         /* PEM private key */
    const char *client_ca;   /* PEM CA bundle for client certificates; NULL: none */
    svd_client_auth client_auth;
    double reload_seconds;   /* the files are looked at no more often than this */
} svd_tls_options;

typedef struct svd_tls svd_tls;

/* Load and check the files; NULL with err filled when they cannot serve. */
svd_tls *svd_tls_open(const svd_tls_options *o, char *err, size_t err_cap);
void svd_tls_free(svd_tls *t);

/* gRPC server credentials that follow the files; t must outlive the
 * server. NULL on failure. */
grpc_server_credentials *svd_tls_server_credentials(svd_tls *t);

/* Look at the files now (rate-limited to reload_seconds unless force):
 * 1 a new set is in force, 0 unchanged, -1 the new files were refused
 * (err filled). Thread-safe. */
int svd_tls_refresh(svd_tls *t, int force, char *err, size_t err_cap);

/* Bumped each time a new set comes into force. */
uint64_t svd_tls_generation(svd_tls *t);
/* Copies of the PEMs in force (malloc'd, caller frees); 0 on success. */
int svd_tls_pems(svd_tls *t, char **cert, char **key, uint64_t *generation);

typedef struct svd_tls_stats {
    uint64_t reloads, reload_errors;
    int64_t not_after;       /* the server certificate's expiry, Unix seconds */
} svd_tls_stats;
void svd_tls_get_stats(svd_tls *t, svd_tls_stats *out);

#endif
