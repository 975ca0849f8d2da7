/*
 * Bearer tokens and what they may do.
 *
 * A tokens file holds one token a line, by its hash only:
 *
 *     # comment
 *     sha256:<64 hex digits: SHA-256 of the token> <role> [<collection glob>]
 *
 * Roles, each including the ones before it: read (search, get, describe,
 * list), write (+ ingest, delete, flush, snapshot), admin (+ create, drop,
 * cluster operations); and apart, metrics: the HTTP /metrics only (for a
 * Prometheus, so its credential reads no vector). A glob (fnmatch(3): *,
 * ?, [...], over the characters of collection names) limits the line to
 * the collections it matches; without one the line covers every
 * collection. A token may have several lines; it may do what any of them
 * allows. Comments take whole lines.
 *
 * Clients send the metadata `authorization: Bearer <token>`. A presented
 * token is hashed and its hash compared with every line's in constant time
 * (libsodium): the time taken depends on the table's size and the token's
 * length, never on how much of it matches. Tokens are never stored, logged
 * or echoed.
 *
 * The table reloads itself when the file changes (svd_tokens_refresh); a
 * file that does not parse leaves the previous table in force.
 */
#ifndef SVD_TOKENS_H
#define SVD_TOKENS_H

#include <stddef.h>
#include <stdint.h>

/* The longest token accepted, bytes. */
#define SVD_TOKEN_MAX 4096
/* The largest tokens file, bytes. */
#define SVD_TOKENS_FILE_MAX (4u << 20)
/* The longest collection glob, bytes. */
#define SVD_GLOB_MAX 256

typedef enum svd_role {
    SVD_ROLE_NONE = 0, /* open to everyone (health) */
    SVD_ROLE_READ = 1,
    SVD_ROLE_WRITE = 2,
    SVD_ROLE_ADMIN = 3,
    SVD_ROLE_METRICS = 4 /* outside the order: only the HTTP /metrics (which an
                            unscoped admin may also read); nothing over gRPC */
} svd_role;

const char *svd_role_name(svd_role r);

typedef enum svd_auth_status {
    SVD_AUTH_OK = 0,
    SVD_AUTH_MISSING,   /* no authorization metadata */
    SVD_AUTH_MALFORMED, /* not "Bearer <token>", bad characters, too long */
    SVD_AUTH_UNKNOWN,   /* a well-formed token no line names */
    SVD_AUTH_NOMEM
} svd_auth_status;

typedef struct svd_tokens svd_tokens;
typedef struct svd_principal svd_principal;

/* Room for the longest tokens-file line svd_token_line writes. */
#define SVD_TOKEN_LINE_MAX (7 + 64 + 1 + 8 + 1 + SVD_GLOB_MAX + 2)

/* The tokens-file line for a token: "sha256:<hex> <role>[ <glob>]\n" into
 * out, checked by the same rules as the file's lines. 0, or -1 with why
 * saying what the file would refuse (an unknown role, a bad glob). */
int svd_token_line(const char *token, const char *role, const char *glob, char *out, size_t out_cap,
                   char *why, size_t why_cap);

/* Load a tokens file; NULL with err filled (naming the line) on failure. */
svd_tokens *svd_tokens_open(const char *path, char *err, size_t err_cap);
/* A table from text (tests, fuzzing); never reloads. */
svd_tokens *svd_tokens_from_text(const char *text, size_t len, char *err, size_t err_cap);
void svd_tokens_free(svd_tokens *t);

/* Reload when the file changed: 1 reloaded, 0 unchanged, -1 the new file
 * does not parse (err filled; the previous table stays). Thread-safe. */
int svd_tokens_refresh(svd_tokens *t, char *err, size_t err_cap);

typedef struct svd_tokens_stats {
    size_t lines;        /* lines in force */
    uint64_t reloads;    /* successful reloads since start */
    uint64_t reload_errors;
} svd_tokens_stats;
void svd_tokens_get_stats(svd_tokens *t, svd_tokens_stats *out);

/*
 * Check an authorization value (value NULL: none was sent). On
 * SVD_AUTH_OK *out is the token's principal (free with
 * svd_principal_free); otherwise why says what was wrong, without the
 * token. Thread-safe.
 */
svd_auth_status svd_tokens_check(svd_tokens *t, const char *value, size_t len, svd_principal **out,
                                 char *why, size_t why_cap);

/*
 * Check an open call's principal again if the table changed since it was
 * made (a stream outlives a reload): SVD_AUTH_OK with its grants brought
 * up to date, or SVD_AUTH_UNKNOWN when its token was removed. Thread-safe
 * for the table; the principal must not be in use by another thread.
 */
svd_auth_status svd_tokens_recheck(svd_tokens *t, svd_principal *p);

/* 1 when the principal may act with role on the collection named (role
 * SVD_ROLE_METRICS: may read /metrics, collection ignored). */
int svd_principal_allows(const svd_principal *p, svd_role role, const char *collection);
/* 1 when it may act with role on some collection (a method-level check). */
int svd_principal_allows_some(const svd_principal *p, svd_role role);
/* 1 when it may act with role on every collection (no glob, or "*"). */
int svd_principal_allows_all(const svd_principal *p, svd_role role);
/* The strongest role it has anywhere. */
svd_role svd_principal_max_role(const svd_principal *p);
void svd_principal_free(svd_principal *p);

#endif
