#include "tokens.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "files.h"

#define HASH_BYTES crypto_hash_sha256_BYTES

typedef struct line {
    uint8_t hash[HASH_BYTES];
    svd_role role;
    char *glob; /* NULL: every collection */
} line;

typedef struct table {
    line *lines;
    size_t n;
} table;

struct svd_tokens {
    char *path;               /* NULL: from text, never reloaded */
    pthread_rwlock_t lock;    /* guards cur and generation */
    table *cur;
    uint64_t generation;      /* of cur: bumped at each reload */
    pthread_mutex_t reload_mu; /* one reload at a time; guards stamp */
    svd_filestamp stamp;
    _Atomic uint64_t reloads, reload_errors;
};

typedef struct grant {
    svd_role role;
    char *glob;
} grant;

struct svd_principal {
    size_t n;
    grant *g;
    uint8_t hash[HASH_BYTES]; /* the token's, to check it again after a reload */
    uint64_t generation;      /* of the table the grants come from */
};

const char *svd_role_name(svd_role r)
{
    switch (r) {
    case SVD_ROLE_NONE: return "none";
    case SVD_ROLE_READ: return "read";
    case SVD_ROLE_WRITE: return "write";
    case SVD_ROLE_ADMIN: return "admin";
    case SVD_ROLE_METRICS: return "metrics";
    }
    return "?";
}

static void table_free(table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->lines[i].glob);
    free(t->lines);
    free(t);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* The next whitespace-separated field of [*p, end); 0 when none. */
static int next_field(const char **p, const char *end, const char **f, size_t *flen)
{
    const char *s = *p;
    while (s < end && is_space(*s))
        s++;
    if (s == end)
        return 0;
    const char *e = s;
    while (e < end && !is_space(*e))
        e++;
    *f = s;
    *flen = (size_t)(e - s);
    *p = e;
    return 1;
}

/* A glob over the characters of collection names ([A-Za-z0-9_.-]) and
 * fnmatch's * ? [ ] ! : anything else could never match a name, and a
 * glob that looked like a comment ("#team") would otherwise be taken for
 * one and leave the line covering every collection. */
static int glob_ok(const char *g, size_t n)
{
    if (n == 0 || n > SVD_GLOB_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)g[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-' || c == '*' || c == '?' || c == '[' || c == ']' || c == '!'))
            return 0;
    }
    return 1;
}

static int parse_line(const char *s, const char *end, line *out, char *why, size_t why_cap)
{
    const char *f;
    size_t n;
    *out = (line){0};
    if (!next_field(&s, end, &f, &n))
        return 0; /* blank */
    if (f[0] == '#')
        return 0; /* a comment line */
    if (n != 7 + 2 * HASH_BYTES || strncmp(f, "sha256:", 7) != 0) {
        snprintf(why, why_cap, "expected sha256:<%d hex digits> (the token's SHA-256, never the token)",
                 2 * HASH_BYTES);
        return -1;
    }
    size_t got = 0;
    if (sodium_hex2bin(out->hash, HASH_BYTES, f + 7, 2 * HASH_BYTES, NULL, &got, NULL) != 0 ||
        got != HASH_BYTES) {
        snprintf(why, why_cap, "the hash is not %d hex digits", 2 * HASH_BYTES);
        return -1;
    }
    if (!next_field(&s, end, &f, &n)) {
        snprintf(why, why_cap, "a role is missing (read, write or admin)");
        return -1;
    }
    if (n == 4 && strncmp(f, "read", 4) == 0)
        out->role = SVD_ROLE_READ;
    else if (n == 5 && strncmp(f, "write", 5) == 0)
        out->role = SVD_ROLE_WRITE;
    else if (n == 5 && strncmp(f, "admin", 5) == 0)
        out->role = SVD_ROLE_ADMIN;
    else if (n == 7 && strncmp(f, "metrics", 7) == 0)
        out->role = SVD_ROLE_METRICS;
    else {
        snprintf(why, why_cap, "unknown role '%.*s' (read, write, admin or metrics)",
                 n > 16 ? 16 : (int)n, f);
        return -1;
    }
    if (next_field(&s, end, &f, &n)) {
        if (out->role == SVD_ROLE_METRICS) {
            snprintf(why, why_cap, "the metrics role takes no collection glob");
            return -1;
        }
        if (!glob_ok(f, n)) {
            snprintf(why, why_cap,
                     "the collection glob must be 1..%d of [A-Za-z0-9_.-] and *?[]! (comments take "
                     "whole lines)", SVD_GLOB_MAX);
            return -1;
        }
        if (!(out->glob = strndup(f, n))) {
            snprintf(why, why_cap, "out of memory");
            return -1;
        }
        if (next_field(&s, end, &f, &n)) {
            free(out->glob);
            out->glob = NULL;
            snprintf(why, why_cap, "unexpected text after the glob (comments take whole lines)");
            return -1;
        }
    }
    return 1;
}

int svd_token_line(const char *token, const char *role, const char *glob, char *out, size_t out_cap,
                   char *why, size_t why_cap)
{
    if (sodium_init() < 0) {
        snprintf(why, why_cap, "libsodium cannot start");
        return -1;
    }
    uint8_t h[HASH_BYTES];
    char hex[2 * HASH_BYTES + 1];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    int n = snprintf(out, out_cap, "sha256:%s %s%s%s\n", hex, role, glob ? " " : "", glob ? glob : "");
    if (n < 0 || (size_t)n >= out_cap) {
        snprintf(why, why_cap, "the line is longer than %zu bytes", out_cap);
        return -1;
    }
    line l;
    int r = parse_line(out, out + n - 1, &l, why, why_cap); /* as the file's lines: without the newline */
    free(l.glob);
    if (r != 1 && r != -1)
        snprintf(why, why_cap, "the line is empty");
    return r == 1 ? 0 : -1;
}

static table *parse(const char *text, size_t len, char *err, size_t err_cap)
{
    table *t = calloc(1, sizeof *t);
    size_t cap = 0;
    if (!t)
        goto oom;
    if (memchr(text, '\0', len)) {
        snprintf(err, err_cap, "the tokens file contains a NUL byte");
        goto fail;
    }
    const char *p = text, *end = text + len;
    for (size_t lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line l;
        char why[160];
        int r = parse_line(p, le, &l, why, sizeof why);
        if (r < 0) {
            snprintf(err, err_cap, "tokens file line %zu: %s", lineno, why);
            goto fail;
        }
        if (r > 0) {
            if (t->n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                line *nl2 = realloc(t->lines, ncap * sizeof *nl2);
                if (!nl2) {
                    free(l.glob);
                    goto oom;
                }
                t->lines = nl2;
                cap = ncap;
            }
            t->lines[t->n++] = l;
        }
        p = nl ? nl + 1 : end;
    }
    return t;
oom:
    snprintf(err, err_cap, "out of memory");
fail:
    table_free(t);
    return NULL;
}

/* Read and parse the file (the caller took its stamp before: a change
 * while reading shows at the next refresh). */
static table *load(const char *path, char *err, size_t err_cap)
{
    size_t len = 0;
    char *text = svd_read_file(path, SVD_TOKENS_FILE_MAX, &len);
    if (!text) {
        snprintf(err, err_cap, "cannot read the tokens file %s: %s", path,
                 errno == EFBIG ? "larger than 4 MiB" : strerror(errno));
        return NULL;
    }
    table *t = parse(text, len, err, err_cap);
    sodium_memzero(text, len);
    free(text);
    return t;
}

static svd_tokens *tokens_new(table *t, const char *path)
{
    svd_tokens *k = calloc(1, sizeof *k);
    if (!k || (path && !(k->path = strdup(path)))) {
        free(k);
        return NULL;
    }
    k->cur = t;
    pthread_rwlock_init(&k->lock, NULL);
    pthread_mutex_init(&k->reload_mu, NULL);
    return k;
}

svd_tokens *svd_tokens_open(const char *path, char *err, size_t err_cap)
{
    if (sodium_init() < 0) {
        snprintf(err, err_cap, "libsodium cannot start");
        return NULL;
    }
    svd_filestamp stamp;
    svd_filestamp_of(path, &stamp);
    table *t = load(path, err, err_cap);
    if (!t)
        return NULL;
    svd_tokens *k = tokens_new(t, path);
    if (!k) {
        table_free(t);
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    k->stamp = stamp;
    return k;
}

svd_tokens *svd_tokens_from_text(const char *text, size_t len, char *err, size_t err_cap)
{
    if (sodium_init() < 0) {
        snprintf(err, err_cap, "libsodium cannot start");
        return NULL;
    }
    table *t = parse(text, len, err, err_cap);
    if (!t)
        return NULL;
    svd_tokens *k = tokens_new(t, NULL);
    if (!k) {
        table_free(t);
        snprintf(err, err_cap, "out of memory");
    }
    return k;
}

void svd_tokens_free(svd_tokens *k)
{
    if (!k)
        return;
    table_free(k->cur);
    pthread_rwlock_destroy(&k->lock);
    pthread_mutex_destroy(&k->reload_mu);
    free(k->path);
    free(k);
}

int svd_tokens_refresh(svd_tokens *k, char *err, size_t err_cap)
{
    if (!k->path)
        return 0;
    int r = 0;
    pthread_mutex_lock(&k->reload_mu);
    svd_filestamp now;
    svd_filestamp_of(k->path, &now);
    if (svd_filestamp_differ(&now, &k->stamp)) {
        k->stamp = now; /* seen: a file that does not parse is not read again until it changes */
        table *t = load(k->path, err, err_cap);
        if (t) {
            pthread_rwlock_wrlock(&k->lock);
            table *old = k->cur;
            k->cur = t;
            k->generation++;
            pthread_rwlock_unlock(&k->lock);
            table_free(old);
            atomic_fetch_add(&k->reloads, 1);
            r = 1;
        } else {
            atomic_fetch_add(&k->reload_errors, 1);
            r = -1;
        }
    }
    pthread_mutex_unlock(&k->reload_mu);
    return r;
}

void svd_tokens_get_stats(svd_tokens *k, svd_tokens_stats *out)
{
    pthread_rwlock_rdlock(&k->lock);
    out->lines = k->cur->n;
    pthread_rwlock_unlock(&k->lock);
    out->reloads = atomic_load(&k->reloads);
    out->reload_errors = atomic_load(&k->reload_errors);
}

/* RFC 6750's b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/",
 * then any "=" padding. */
static int token_chars_ok(const char *s, size_t n)
{
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_' || c == '~' || c == '+' || c == '/'))
            break;
    }
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

svd_auth_status svd_tokens_check(svd_tokens *k, const char *value, size_t len, svd_principal **out,
                                 char *why, size_t why_cap)
{
    *out = NULL;
    if (!value) {
        snprintf(why, why_cap, "no token: send the metadata 'authorization: Bearer <token>'");
        return SVD_AUTH_MISSING;
    }
    if (len < 7 || strncasecmp(value, "bearer ", 7) != 0) {
        snprintf(why, why_cap, "the authorization metadata must be 'Bearer <token>'");
        return SVD_AUTH_MALFORMED;
    }
    const char *tok = value + 7;
    size_t n = len - 7;
    while (n && *tok == ' ') {
        tok++;
        n--;
    }
    if (n == 0) {
        snprintf(why, why_cap, "the bearer token is empty");
        return SVD_AUTH_MALFORMED;
    }
    if (n > SVD_TOKEN_MAX) {
        snprintf(why, why_cap, "the bearer token is longer than %d bytes", SVD_TOKEN_MAX);
        return SVD_AUTH_MALFORMED;
    }
    if (!token_chars_ok(tok, n)) {
        snprintf(why, why_cap, "the bearer token has characters outside RFC 6750's token68 set");
        return SVD_AUTH_MALFORMED;
    }
    svd_principal *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(why, why_cap, "out of memory");
        return SVD_AUTH_NOMEM;
    }
    crypto_hash_sha256(p->hash, (const unsigned char *)tok, n);
    svd_auth_status st = svd_tokens_recheck(k, p);
    if (st == SVD_AUTH_OK) {
        *out = p;
        return st;
    }
    svd_principal_free(p);
    snprintf(why, why_cap, st == SVD_AUTH_NOMEM ? "out of memory" : "unknown token");
    return st;
}

static void grants_free(grant *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(g[i].glob);
    free(g);
}

/* The grants of the table in force for p's hash (the read lock held). */
static svd_auth_status grants_of(const table *t, svd_principal *p)
{
    /* Every line is compared, each in constant time: no early exit on a
     * match or on a mismatch's first byte. */
    size_t matches = 0;
    for (size_t i = 0; i < t->n; i++)
        matches += sodium_memcmp(p->hash, t->lines[i].hash, HASH_BYTES) == 0;
    if (!matches)
        return SVD_AUTH_UNKNOWN;
    grant *g = calloc(matches, sizeof *g);
    size_t n = 0;
    if (!g)
        return SVD_AUTH_NOMEM;
    for (size_t i = 0; i < t->n; i++) {
        if (sodium_memcmp(p->hash, t->lines[i].hash, HASH_BYTES) != 0)
            continue;
        g[n].role = t->lines[i].role;
        if (t->lines[i].glob && !(g[n].glob = strdup(t->lines[i].glob))) {
            grants_free(g, n);
            return SVD_AUTH_NOMEM;
        }
        n++;
    }
    grants_free(p->g, p->n);
    p->g = g;
    p->n = n;
    return SVD_AUTH_OK;
}

svd_auth_status svd_tokens_recheck(svd_tokens *k, svd_principal *p)
{
    svd_auth_status st = SVD_AUTH_OK;
    pthread_rwlock_rdlock(&k->lock);
    if (!p->g || p->generation != k->generation) {
        st = grants_of(k->cur, p);
        if (st == SVD_AUTH_OK)
            p->generation = k->generation;
    }
    pthread_rwlock_unlock(&k->lock);
    return st;
}

/* Whether a grant's role covers the role asked for: the order read <
 * write < admin, with metrics apart (only an unscoped admin also has it;
 * the caller checks the scope). */
static int covers(svd_role have, svd_role want)
{
    if (want == SVD_ROLE_METRICS)
        return have == SVD_ROLE_METRICS || have == SVD_ROLE_ADMIN;
    return have != SVD_ROLE_METRICS && have >= want;
}

int svd_principal_allows(const svd_principal *p, svd_role role, const char *collection)
{
    if (role == SVD_ROLE_METRICS)
        return svd_principal_allows_all(p, role);
    for (size_t i = 0; i < p->n; i++)
        if (covers(p->g[i].role, role) && (!p->g[i].glob || fnmatch(p->g[i].glob, collection, 0) == 0))
            return 1;
    return 0;
}

int svd_principal_allows_some(const svd_principal *p, svd_role role)
{
    for (size_t i = 0; i < p->n; i++)
        if (covers(p->g[i].role, role))
            return 1;
    return 0;
}

int svd_principal_allows_all(const svd_principal *p, svd_role role)
{
    for (size_t i = 0; i < p->n; i++)
        if (covers(p->g[i].role, role) && (!p->g[i].glob || strcmp(p->g[i].glob, "*") == 0))
            return 1;
    return 0;
}

svd_role svd_principal_max_role(const svd_principal *p)
{
    svd_role r = SVD_ROLE_NONE;
    for (size_t i = 0; i < p->n; i++)
        if (p->g[i].role != SVD_ROLE_METRICS && p->g[i].role > r)
            r = p->g[i].role;
    return r;
}

void svd_principal_free(svd_principal *p)
{
    if (!p)
        return;
    grants_free(p->g, p->n);
    sodium_memzero(p->hash, sizeof p->hash);
    free(p);
}
