#include "client.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "tokens.h"

static const char *env_or(const char *v, const char *name)
{
    if (v)
        return v;
    const char *e = getenv(name);
    return e && *e ? e : NULL;
}

int svd_address_is_local(const char *addr)
{
    return !strncmp(addr, "127.", 4) || !strncmp(addr, "localhost:", 10) || !strncmp(addr, "[::1]:", 6) ||
           !strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14);
}

void svd_client_options_from_env(svd_client_options *o)
{
    o->ca = env_or(o->ca, "SLIMVEC_CA");
    o->cert = env_or(o->cert, "SLIMVEC_CERT");
    o->key = env_or(o->key, "SLIMVEC_KEY");
    o->server_name = env_or(o->server_name, "SLIMVEC_SERVER_NAME");
    o->token = env_or(o->token, "SLIMVEC_TOKEN");
    const char *tls = getenv("SLIMVEC_TLS");
    if (tls && (!strcmp(tls, "1") || !strcmp(tls, "true") || !strcmp(tls, "yes")))
        o->tls = 1;
}

size_t svd_client_fast_reconnect(grpc_arg out[2])
{
    memset(out, 0, 2 * sizeof *out);
    out[0].type = out[1].type = GRPC_ARG_INTEGER;
    out[0].key = (char *)"grpc.initial_reconnect_backoff_ms";
    out[0].value.integer = 100;
    out[1].key = (char *)"grpc.max_reconnect_backoff_ms";
    out[1].value.integer = 1000;
    return 2;
}

grpc_channel *svd_client_channel(const char *addr, const svd_client_options *o, const grpc_arg *extra,
                                 size_t n_extra, char *err, size_t err_cap)
{
    grpc_channel *ch = NULL;
    grpc_channel_credentials *creds = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_arg *args = calloc(n_extra + 1, sizeof *args);
    if (!args) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    if (n_extra)
        memcpy(args, extra, n_extra * sizeof *args);
    size_t n_args = n_extra;
    if ((o->cert != NULL) != (o->key != NULL)) {
        snprintf(err, err_cap, "a client certificate needs both --cert and --key");
        goto cleanup;
    }
    if (o->tls || o->ca || o->cert) {
        if (o->ca && !(ca = svd_read_pem(o->ca, "CA file", err, err_cap)))
            goto cleanup;
        if (o->cert && (!(cert = svd_read_pem(o->cert, "client certificate", err, err_cap)) ||
                        !(key = svd_read_pem(o->key, "client key", err, err_cap))))
            goto cleanup;
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (o->server_name) {
            args[n_args].type = GRPC_ARG_STRING;
            args[n_args].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            args[n_args++].value.string = (char *)o->server_name;
        }
    } else {
        creds = grpc_insecure_credentials_create();
    }
    if (!creds) {
        snprintf(err, err_cap, "cannot make the channel's credentials");
        goto cleanup;
    }
    grpc_channel_args chargs = {n_args, args};
    ch = grpc_channel_create(addr, creds, &chargs);
    if (!ch)
        snprintf(err, err_cap, "cannot open a channel to %s", addr);
cleanup:
    if (creds)
        grpc_channel_credentials_release(creds);
    if (key) {
        sodium_memzero(key, strlen(key));
        free(key);
    }
    free(cert);
    free(ca);
    free(args);
    return ch;
}

int svd_client_auth_md_init(svd_client_auth_md *m, const svd_client_options *o, char *err, size_t err_cap)
{
    memset(m, 0, sizeof *m);
    if (!o->token)
        return 0;
    size_t n = strlen(o->token);
    if (n == 0 || n > SVD_TOKEN_MAX) {
        snprintf(err, err_cap, "the token must be 1..%d bytes", SVD_TOKEN_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)o->token[i] <= 0x20 || (unsigned char)o->token[i] >= 0x7f) {
            snprintf(err, err_cap, "the token has a space or a character outside ASCII");
            return -1;
        }
    char *v = malloc(n + 8);
    if (!v) {
        snprintf(err, err_cap, "out of memory");
        return -1;
    }
    memcpy(v, "Bearer ", 7);
    memcpy(v + 7, o->token, n + 1);
    m->md[0].key = grpc_slice_from_static_string("authorization");
    m->md[0].value = grpc_slice_from_copied_buffer(v, n + 7);
    sodium_memzero(v, n + 7);
    free(v);
    m->count = 1;
    return 0;
}

void svd_client_auth_md_release(svd_client_auth_md *m)
{
    if (m->count)
        grpc_slice_unref(m->md[0].value);
    m->count = 0;
}
