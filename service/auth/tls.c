#include "tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "files.h"

typedef struct pemset {
    char *cert, *key, *ca; /* ca NULL when none */
    int64_t not_after, not_before;
} pemset;

struct svd_tls {
    svd_tls_options o;
    char *cert_path, *key_path, *ca_path;
    pthread_mutex_t mu;       /* guards everything below */
    pemset cur;
    svd_filestamp stamps[3];  /* cert, key, ca */
    double last_look;         /* monotonic seconds */
    uint64_t generation;      /* of cur */
    uint64_t handed;          /* generation last given to gRPC (0: none yet) */
    _Atomic uint64_t reloads, reload_errors;
};

int svd_client_auth_parse(const char *text, svd_client_auth *out)
{
    if (!strcmp(text, "none"))
        *out = SVD_CLIENT_AUTH_NONE;
    else if (!strcmp(text, "optional"))
        *out = SVD_CLIENT_AUTH_OPTIONAL;
    else if (!strcmp(text, "require"))
        *out = SVD_CLIENT_AUTH_REQUIRE;
    else
        return -1;
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pemset_free(pemset *p)
{
    if (p->key)
        OPENSSL_cleanse(p->key, strlen(p->key));
    free(p->cert);
    free(p->key);
    free(p->ca);
    *p = (pemset){0};
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* An encrypted key is not supported: fail instead of OpenSSL's default of
 * prompting on the terminal (on a gRPC thread, holding our lock). */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* The rest of a chain after its first certificate: every PEM block parses
 * (gRPC would silently stop at a damaged one and serve a cut chain). */
static int chain_rest_ok(BIO *b)
{
    ERR_clear_error();
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
        X509_free(x);
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    /* The end of the file shows as "no start line"; anything else is damage. */
    return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

/* The pair parses and the key is the certificate's. */
static int check_pair(pemset *p, const char *cert_path, const char *key_path, char *err, size_t err_cap)
{
    int ok = 0;
    BIO *cb = BIO_new_mem_buf(p->cert, -1), *kb = BIO_new_mem_buf(p->key, -1);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
    if (!x)
        snprintf(err, err_cap, "%s holds no PEM certificate", cert_path);
    else if (!k)
        snprintf(err, err_cap, "%s holds no PEM private key (an encrypted key is not supported)", key_path);
    else if (X509_check_private_key(x, k) != 1)
        snprintf(err, err_cap, "the key in %s is not the key of the certificate in %s", key_path, cert_path);
    else if (!chain_rest_ok(cb))
        snprintf(err, err_cap, "%s: a certificate after the first one does not parse (a cut chain?)",
                 cert_path);
    else {
        p->not_after = asn1_unix(X509_get0_notAfter(x));
        p->not_before = asn1_unix(X509_get0_notBefore(x));
        ok = 1;
    }
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    return ok;
}

static int check_ca(const char *pem, const char *path, char *err, size_t err_cap)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int ok = x != NULL;
    if (!ok)
        snprintf(err, err_cap, "%s holds no PEM certificate", path);
    X509_free(x);
    BIO_free(b);
    return ok;
}

/* The three files' stamps now. */
static void stamps_of(const svd_tls *t, svd_filestamp stamps[3])
{
    svd_filestamp_of(t->cert_path, &stamps[0]);
    svd_filestamp_of(t->key_path, &stamps[1]);
    svd_filestamp_of(t->ca_path, &stamps[2]);
}

/* Read and check the files into *out (the caller took their stamps before:
 * a change during the read shows at the next look). */
static int load(svd_tls *t, pemset *out, char *err, size_t err_cap)
{
    *out = (pemset){0};
    if (!(out->cert = svd_read_pem(t->cert_path, "certificate", err, err_cap)) ||
        !(out->key = svd_read_pem(t->key_path, "private key", err, err_cap)) ||
        (t->ca_path && !(out->ca = svd_read_pem(t->ca_path, "client CA", err, err_cap))) ||
        !check_pair(out, t->cert_path, t->key_path, err, err_cap) ||
        (out->ca && !check_ca(out->ca, t->ca_path, err, err_cap))) {
        pemset_free(out);
        return -1;
    }
    return 0;
}

svd_tls *svd_tls_open(const svd_tls_options *o, char *err, size_t err_cap)
{
    if (!o->cert || !o->key) {
        snprintf(err, err_cap, "TLS needs both --tls-cert and --tls-key");
        return NULL;
    }
    if (o->client_auth != SVD_CLIENT_AUTH_NONE && !o->client_ca) {
        snprintf(err, err_cap, "--tls-client-auth %s needs --tls-client-ca",
                 o->client_auth == SVD_CLIENT_AUTH_REQUIRE ? "require" : "optional");
        return NULL;
    }
    svd_tls *t = calloc(1, sizeof *t);
    if (!t || !(t->cert_path = strdup(o->cert)) || !(t->key_path = strdup(o->key)) ||
        (o->client_ca && !(t->ca_path = strdup(o->client_ca)))) {
        snprintf(err, err_cap, "out of memory");
        svd_tls_free(t);
        return NULL;
    }
    t->o = *o;
    t->o.cert = t->cert_path;
    t->o.key = t->key_path;
    t->o.client_ca = t->ca_path;
    pthread_mutex_init(&t->mu, NULL);
    stamps_of(t, t->stamps);
    if (load(t, &t->cur, err, err_cap) != 0) {
        svd_tls_free(t);
        return NULL;
    }
    t->generation = 1;
    t->last_look = now_seconds();
    return t;
}

void svd_tls_free(svd_tls *t)
{
    if (!t)
        return;
    pemset_free(&t->cur);
    free(t->cert_path);
    free(t->key_path);
    free(t->ca_path);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* With t->mu held. */
static int refresh_locked(svd_tls *t, int force, char *err, size_t err_cap)
{
    double now = now_seconds();
    if (!force && now - t->last_look < t->o.reload_seconds)
        return 0;
    t->last_look = now;
    svd_filestamp s[3];
    stamps_of(t, s);
    int changed = 0;
    for (int i = 0; i < 3; i++)
        changed |= svd_filestamp_differ(&s[i], &t->stamps[i]);
    if (!changed)
        return 0;
    /* Seen, whether the files load or not: a refused set is not read
     * again until it changes. */
    memcpy(t->stamps, s, sizeof s);
    pemset next;
    if (load(t, &next, err, err_cap) != 0) {
        atomic_fetch_add(&t->reload_errors, 1);
        return -1;
    }
    pemset_free(&t->cur);
    t->cur = next;
    t->generation++;
    atomic_fetch_add(&t->reloads, 1);
    int64_t wall = (int64_t)time(NULL);
    if ((t->cur.not_after && t->cur.not_after < wall) || t->cur.not_before > wall)
        fprintf(stderr, "slimvecd: WARNING: the new certificate in %s is %s: clients will refuse it\n",
                t->cert_path, t->cur.not_before > wall ? "not valid yet" : "expired");
    return 1;
}

int svd_tls_refresh(svd_tls *t, int force, char *err, size_t err_cap)
{
    pthread_mutex_lock(&t->mu);
    int r = refresh_locked(t, force, err, err_cap);
    pthread_mutex_unlock(&t->mu);
    return r;
}

uint64_t svd_tls_generation(svd_tls *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t g = t->generation;
    pthread_mutex_unlock(&t->mu);
    return g;
}

int svd_tls_pems(svd_tls *t, char **cert, char **key, uint64_t *generation)
{
    pthread_mutex_lock(&t->mu);
    *cert = strdup(t->cur.cert);
    *key = strdup(t->cur.key);
    *generation = t->generation;
    pthread_mutex_unlock(&t->mu);
    if (!*cert || !*key) {
        free(*cert);
        free(*key);
        *cert = *key = NULL;
        return -1;
    }
    return 0;
}

void svd_tls_get_stats(svd_tls *t, svd_tls_stats *out)
{
    pthread_mutex_lock(&t->mu);
    out->not_after = t->cur.not_after;
    pthread_mutex_unlock(&t->mu);
    out->reloads = atomic_load(&t->reloads);
    out->reload_errors = atomic_load(&t->reload_errors);
}

/*
 * gRPC's fetcher, called as connections arrive (on gRPC's threads). It
 * hands over a new config when the set in force is one gRPC does not have
 * yet; a refused rotation was logged by refresh and changes nothing.
 */
static grpc_ssl_certificate_config_reload_status fetch(void *user, grpc_ssl_server_certificate_config **config)
{
    svd_tls *t = user;
    char err[512];
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pthread_mutex_lock(&t->mu);
    if (refresh_locked(t, 0, err, sizeof err) < 0)
        fprintf(stderr, "slimvecd: new TLS files refused, the previous certificate stays: %s\n", err);
    if (t->handed != t->generation) {
        grpc_ssl_pem_key_cert_pair pair = {t->cur.key, t->cur.cert};
        /* gRPC 1.51 asserts that a fetched config has root certificates
         * even when no client certificate is asked for; then they are never
         * used, and the server's own chain stands in for them. */
        *config = grpc_ssl_server_certificate_config_create(t->cur.ca ? t->cur.ca : t->cur.cert, &pair, 1);
        if (*config) {
            if (t->handed)
                fprintf(stderr, "slimvecd: TLS certificate reloaded (new connections use it)\n");
            t->handed = t->generation;
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
        } else {
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

grpc_server_credentials *svd_tls_server_credentials(svd_tls *t)
{
    grpc_ssl_client_certificate_request_type req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    if (t->o.client_auth == SVD_CLIENT_AUTH_OPTIONAL)
        req = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    else if (t->o.client_auth == SVD_CLIENT_AUTH_REQUIRE)
        req = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, fetch, t);
    return opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
}
