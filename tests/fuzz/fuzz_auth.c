/*
 * Fuzz target for untrusted authentication bytes: the `authorization`
 * value a client sends (service/auth/tokens.c, svd_tokens_check) and the
 * tokens file's text (svd_tokens_from_text).
 *
 * Input: a mode byte, then the bytes. Mode even: an authorization value
 * checked against a fixed table; mode odd: a tokens file.
 *   - a value is accepted only when it is "Bearer" (any case), spaces and
 *     one of the table's tokens exactly; its principal then has exactly
 *     that token's rights; anything else is refused with a reason, and a
 *     value not starting with "bearer " is MALFORMED (or MISSING for none);
 *   - a tokens file either parses (its lines counted, never more than the
 *     text's lines) or is refused with a message naming a line; parsing
 *     twice gives the same result.
 * A broken invariant aborts, so libFuzzer and ASan report it.
 *
 *   fuzz_auth [N]                    N inputs (default 20000)
 *   fuzz_auth --write-corpus DIR [N] the seeds and N mutants into DIR
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzzutil.h"
#include "tokens.h"

#define FUZZ_MAX_INPUT (SVD_TOKEN_MAX + 4096)

static const char *TOKENS[] = {"read-token-AAAA", "write.token_BBBB", "admin~token/CC+=", "scoped-DDDD"};
static const svd_role ROLES[] = {SVD_ROLE_READ, SVD_ROLE_WRITE, SVD_ROLE_ADMIN, SVD_ROLE_WRITE};
static svd_tokens *table;
static unsigned long n_ok, n_refused, n_files_ok, n_files_refused;

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_auth: invariant broken: %s\n", what);
        abort();
    }
}

static char *line_for(const char *token, const char *role, const char *glob)
{
    char *s = malloc(SVD_TOKEN_LINE_MAX), why[256];
    if (!s)
        abort();
    check(svd_token_line(token, role, glob, s, SVD_TOKEN_LINE_MAX, why, sizeof why) == 0, why);
    return s;
}

static void make_table(void)
{
    char text[4096] = "# fuzz table\n\n";
    const char *names[] = {"read", "write", "admin", "write"};
    for (size_t i = 0; i < 4; i++) {
        char *l = line_for(TOKENS[i], names[i], i == 3 ? "pub-*" : NULL);
        strcat(text, l);
        free(l);
    }
    char err[256];
    table = svd_tokens_from_text(text, strlen(text), err, sizeof err);
    check(table != NULL, "the fixed table parses");
}

static void run_value(const uint8_t *b, size_t n)
{
    svd_principal *p = NULL;
    char why[256] = "";
    svd_auth_status st = svd_tokens_check(table, (const char *)b, n, &p, why, sizeof why);
    if (st != SVD_AUTH_OK) {
        n_refused++;
        check(p == NULL && why[0], "a refusal has no principal and a reason");
        if (n < 7 || strncasecmp((const char *)b, "bearer ", 7) != 0)
            check(st == SVD_AUTH_MALFORMED, "a value not starting with 'bearer ' is malformed");
        return;
    }
    n_ok++;
    check(p != NULL, "an acceptance has a principal");
    check(n >= 7 && strncasecmp((const char *)b, "bearer ", 7) == 0, "accepted: starts with bearer");
    size_t i = 7;
    while (i < n && b[i] == ' ')
        i++;
    int found = -1;
    for (int t = 0; t < 4; t++)
        if (n - i == strlen(TOKENS[t]) && memcmp(b + i, TOKENS[t], n - i) == 0)
            found = t;
    check(found >= 0, "accepted: the token is one of the table's");
    check(svd_principal_max_role(p) == ROLES[found], "the principal has the token's role");
    check(svd_principal_allows(p, ROLES[found], "pub-x"), "the token may act on pub-x");
    check(svd_principal_allows(p, ROLES[found], "priv") == (found != 3), "the glob limits the scoped token");
    check(!svd_principal_allows(p, SVD_ROLE_ADMIN, "pub-x") || found == 2, "only admin has admin");
    svd_principal_free(p);
}

static void run_file(const uint8_t *b, size_t n)
{
    char err1[256] = "", err2[256] = "";
    svd_tokens *a = svd_tokens_from_text((const char *)b, n, err1, sizeof err1);
    svd_tokens *c = svd_tokens_from_text((const char *)b, n, err2, sizeof err2);
    check((a != NULL) == (c != NULL), "parsing is deterministic");
    if (!a) {
        n_files_refused++;
        check(!strcmp(err1, err2), "the same message twice");
        check(strstr(err1, "line ") != NULL || strstr(err1, "NUL") != NULL || strstr(err1, "memory") != NULL,
              "a refusal names a line");
        return;
    }
    n_files_ok++;
    svd_tokens_stats s1, s2;
    svd_tokens_get_stats(a, &s1);
    svd_tokens_get_stats(c, &s2);
    check(s1.lines == s2.lines, "the same lines twice");
    size_t text_lines = 1;
    for (size_t i = 0; i < n; i++)
        text_lines += b[i] == '\n';
    check(s1.lines <= text_lines, "no more lines than the text has");
    svd_principal *p = NULL;
    char why[256];
    (void)svd_tokens_check(a, "Bearer x", 8, &p, why, sizeof why);
    svd_principal_free(p);
    svd_tokens_free(a);
    svd_tokens_free(c);
}

static void run_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    if (data[0] % 2 == 0)
        run_value(data + 1, size - 1);
    else
        run_file(data + 1, size - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!table)
        make_table();
    run_one(data, size);
    return 0;
}

#ifndef SV_LIBFUZZER
typedef struct seed {
    uint8_t b[1024];
    size_t len;
} seed;

static seed seeds[32];
static size_t n_seeds;

static void add_seed(int mode, const char *text)
{
    seed *s = &seeds[n_seeds++];
    s->b[0] = (uint8_t)mode;
    s->len = 1 + strlen(text);
    memcpy(s->b + 1, text, strlen(text));
}

int main(int argc, char **argv)
{
    const char *corpus = NULL;
    long rounds = 0;
    fu_args("fuzz_auth", argc, argv, &rounds, &corpus);
    make_table();
    char v[128];
    for (int t = 0; t < 4; t++) {
        snprintf(v, sizeof v, "%s %s", t % 2 ? "bearer" : "Bearer", TOKENS[t]);
        add_seed(0, v);
    }
    add_seed(0, "Basic dXNlcjpwYXNz");
    add_seed(0, "Bearer   read-token-AAAA");
    const char *names[] = {"read", "write", "admin"};
    for (int t = 0; t < 3; t++) {
        char *l = line_for(TOKENS[t], names[t], t == 1 ? "team-[ab]*" : NULL);
        add_seed(1, l);
        free(l);
    }
    add_seed(1, "# only a comment\n\n   \n");
    uint8_t *in = malloc(FUZZ_MAX_INPUT);
    if (!in)
        abort();
    unsigned long seeds_ok = 0;
    for (size_t i = 0; i < n_seeds; i++) {
        if (corpus)
            fu_write_input("fuzz_auth", corpus, i, seeds[i].b, seeds[i].len);
        unsigned long before = n_ok + n_files_ok;
        run_one(seeds[i].b, seeds[i].len);
        seeds_ok += n_ok + n_files_ok > before;
    }
    /* 4 + 1 (extra spaces) values and 4 files are valid. */
    check(seeds_ok == 9, "every valid seed is accepted");
    for (long i = 0; i < rounds; i++) {
        size_t len;
        if (i % 32 == 31) {
            /* a long value: past the token limit or just under it */
            len = 8 + SVD_TOKEN_MAX - 2 + fu_below(8);
            in[0] = 0;
            memcpy(in + 1, "Bearer ", 7);
            for (size_t k = 8; k < len; k++)
                in[k] = (uint8_t)('a' + fu_below(26));
        } else {
            const seed *s = &seeds[fu_below((uint32_t)n_seeds)];
            len = s->len;
            memcpy(in, s->b, len);
            int n_mut = 1 + (int)fu_below(4);
            for (int k = 0; k < n_mut; k++) {
                size_t pos = 1 + fu_below((uint32_t)(len > 1 ? len - 1 : 1));
                switch (fu_below(4)) {
                case 0:
                    if (pos < len)
                        in[pos] = (uint8_t)fu_next();
                    break;
                case 1:
                    fu_insert_random(in, &len, 1024, pos, 8);
                    break;
                case 2:
                    fu_delete_chunk(in, &len, pos, 8);
                    break;
                default:
                    if (pos < len)
                        in[pos] = (uint8_t)" \t\n#*:"[fu_below(6)];
                }
            }
        }
        if (corpus)
            fu_write_input("fuzz_auth", corpus, n_seeds + (size_t)i, in, len);
        run_one(in, len);
    }
    printf("fuzz_auth: %ld inputs: values %lu accepted, %lu refused; files %lu parsed, %lu refused\n",
           rounds, n_ok, n_refused, n_files_ok, n_files_refused);
    check(n_refused > 0 && n_files_refused > 0, "the mutants reach the refusals");
    svd_tokens_free(table);
    free(in);
    return 0;
}
#endif
