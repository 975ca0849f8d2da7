/*
 * service/auth: the tokens file (parse, errors naming the line, reload on
 * change, a bad file keeping the old table), the authorization value
 * (forms refused, roles and globs granted), and a statistical check that
 * refusing a wrong token takes the same time however much of it matches.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tokens.h"

static char *line_of(const char *token, const char *role, const char *glob)
{
    char *s = malloc(SVD_TOKEN_LINE_MAX), why[256];
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(svd_token_line(token, role, glob, s, SVD_TOKEN_LINE_MAX, why, sizeof why) == 0, "%s", why);
    return s;
}

static svd_tokens *table_of(const char *text)
{
    char err[256];
    svd_tokens *t = svd_tokens_from_text(text, strlen(text), err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    return t;
}

static svd_auth_status check_value(svd_tokens *t, const char *value, svd_principal **p, char *why)
{
    return svd_tokens_check(t, value, value ? strlen(value) : 0, p, why, 256);
}

START_TEST(test_parse_and_roles)
{
    ck_assert_int_ge(sodium_init(), 0);
    char *r = line_of("reader", "read", NULL), *w = line_of("writer", "write", "pub-*"),
         *a = line_of("admin", "admin", NULL), *w2 = line_of("writer", "read", "team-[ab]");
    char text[4096];
    /* Comments, blank lines, leading blanks, a token on two lines. */
    snprintf(text, sizeof text, "# slimvec tokens\n\n  %s%s\t# the admin:\n%s%s", r, w, w2, a);
    svd_tokens *t = table_of(text);
    svd_tokens_stats st;
    svd_tokens_get_stats(t, &st);
    ck_assert_uint_eq(st.lines, 4);

    char why[256];
    svd_principal *p = NULL;
    ck_assert_int_eq(check_value(t, "Bearer reader", &p, why), SVD_AUTH_OK);
    ck_assert(svd_principal_allows(p, SVD_ROLE_READ, "anything"));
    ck_assert(!svd_principal_allows(p, SVD_ROLE_WRITE, "anything"));
    ck_assert(svd_principal_allows_all(p, SVD_ROLE_READ));
    ck_assert_int_eq(svd_principal_max_role(p), SVD_ROLE_READ);
    svd_principal_free(p);

    /* Two lines for one token: the union. */
    ck_assert_int_eq(check_value(t, "bearer   writer", &p, why), SVD_AUTH_OK);
    ck_assert(svd_principal_allows(p, SVD_ROLE_WRITE, "pub-1"));
    ck_assert(!svd_principal_allows(p, SVD_ROLE_WRITE, "priv"));
    ck_assert(svd_principal_allows(p, SVD_ROLE_READ, "team-a"));
    ck_assert(!svd_principal_allows(p, SVD_ROLE_READ, "team-c"));
    ck_assert(!svd_principal_allows(p, SVD_ROLE_ADMIN, "pub-1"));
    ck_assert(!svd_principal_allows_all(p, SVD_ROLE_READ));
    ck_assert(svd_principal_allows_some(p, SVD_ROLE_WRITE));
    ck_assert(!svd_principal_allows_some(p, SVD_ROLE_ADMIN));
    svd_principal_free(p);

    ck_assert_int_eq(check_value(t, "BEARER admin", &p, why), SVD_AUTH_OK);
    ck_assert(svd_principal_allows(p, SVD_ROLE_ADMIN, "x"));
    ck_assert(svd_principal_allows(p, SVD_ROLE_METRICS, NULL)); /* an unscoped admin */
    svd_principal_free(p);
    /* The metrics role reads /metrics and nothing else; read-all does not read /metrics. */
    ck_assert_int_eq(check_value(t, "Bearer reader", &p, why), SVD_AUTH_OK);
    ck_assert(!svd_principal_allows(p, SVD_ROLE_METRICS, NULL));
    svd_principal_free(p);
    svd_tokens_free(t);
    char *m = line_of("scraper", "metrics", NULL);
    t = table_of(m);
    ck_assert_int_eq(check_value(t, "Bearer scraper", &p, why), SVD_AUTH_OK);
    ck_assert(svd_principal_allows(p, SVD_ROLE_METRICS, NULL));
    ck_assert(!svd_principal_allows(p, SVD_ROLE_READ, "x"));
    ck_assert(!svd_principal_allows_some(p, SVD_ROLE_READ));
    ck_assert_int_eq(svd_principal_max_role(p), SVD_ROLE_NONE);
    svd_principal_free(p);
    free(m);
    svd_tokens_free(t);
    free(r);
    free(w);
    free(a);
    free(w2);
}
END_TEST

START_TEST(test_values_refused)
{
    char *r = line_of("reader", "read", NULL);
    svd_tokens *t = table_of(r);
    char why[256];
    svd_principal *p = (svd_principal *)1;
    ck_assert_int_eq(check_value(t, NULL, &p, why), SVD_AUTH_MISSING);
    ck_assert_ptr_null(p);
    static const char *malformed[] = {"", "reader", "Basic cmVhZGVy", "Bearer", "Bearer ", "Bearer    ",
                                      "Bearerreader", "Bearer read er", "Bearer read*er", "Bearer réader",
                                      "Bearer reader\t", "Bearer =reader"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        ck_assert_msg(check_value(t, malformed[i], &p, why) == SVD_AUTH_MALFORMED, "'%s' not malformed",
                      malformed[i]);
        ck_assert_ptr_null(p);
        ck_assert(strstr(why, "reader") == NULL); /* never echoes the token */
    }
    ck_assert_int_eq(check_value(t, "Bearer readers", &p, why), SVD_AUTH_UNKNOWN);
    ck_assert_int_eq(check_value(t, "Bearer Reader", &p, why), SVD_AUTH_UNKNOWN);
    ck_assert_int_eq(check_value(t, "Bearer reader==", &p, why), SVD_AUTH_UNKNOWN);
    /* Length: SVD_TOKEN_MAX is accepted as a form, one more is not. */
    char *big = malloc(7 + SVD_TOKEN_MAX + 2);
    ck_assert_ptr_nonnull(big);
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', SVD_TOKEN_MAX);
    big[7 + SVD_TOKEN_MAX] = '\0';
    ck_assert_int_eq(check_value(t, big, &p, why), SVD_AUTH_UNKNOWN);
    big[7 + SVD_TOKEN_MAX] = 'a';
    big[8 + SVD_TOKEN_MAX] = '\0';
    ck_assert_int_eq(check_value(t, big, &p, why), SVD_AUTH_MALFORMED);
    ck_assert(strstr(why, "longer") != NULL);
    free(big);
    /* An embedded NUL is part of the value (not a shorter token). */
    ck_assert_int_eq(svd_tokens_check(t, "Bearer reader\0x", 15, &p, why, sizeof why), SVD_AUTH_MALFORMED);
    svd_tokens_free(t);
    free(r);
}
END_TEST

START_TEST(test_file_errors)
{
    char *r = line_of("reader", "read", NULL);
    char hex_only[80];
    memcpy(hex_only, r, 71);
    hex_only[71] = '\0';
    struct {
        const char *text, *want;
    } bad[] = {
        {"reader read\n", "line 1"},
        {"sha256:abcd read\n", "line 1"},
        {"# ok\nsha256:zz00000000000000000000000000000000000000000000000000000000000000 read\n", "line 2"},
        {NULL, "unknown role"},
        {NULL, "role is missing"},
        {NULL, "after the glob"},
    };
    char text[1024];
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *s = bad[i].text;
        if (!s) {
            if (i == 3)
                snprintf(text, sizeof text, "\n\n%s superuser\n", hex_only);
            else if (i == 4)
                snprintf(text, sizeof text, "%s\n", hex_only);
            else
                snprintf(text, sizeof text, "%s read a-* extra\n", hex_only);
            s = text;
        }
        svd_tokens *t = svd_tokens_from_text(s, strlen(s), err, sizeof err);
        ck_assert_msg(t == NULL, "accepted: %s", s);
        ck_assert_msg(strstr(err, bad[i].want) != NULL, "'%s' lacks '%s'", err, bad[i].want);
    }
    ck_assert_ptr_null(svd_tokens_from_text("x\0y", 3, err, sizeof err));
    /* The line maker (slimvec token) applies the same rules. */
    char made[SVD_TOKEN_LINE_MAX];
    ck_assert_int_eq(svd_token_line("t", "superuser", NULL, made, sizeof made, err, sizeof err), -1);
    ck_assert(strstr(err, "unknown role") != NULL);
    ck_assert_int_eq(svd_token_line("t", "read", "a/b", made, sizeof made, err, sizeof err), -1);
    ck_assert_int_eq(svd_token_line("t", "metrics", "a-*", made, sizeof made, err, sizeof err), -1);
    /* Comments take whole lines: a glob that looks like one ("#team", which
     * would otherwise leave the line covering every collection) and text
     * after a glob are errors; so are characters no name has, and a glob on
     * the metrics role. */
    static const char *bad_tails[] = {"read #team-*", "read a-* # team a", "read a/b", "read a b",
                                      "metrics x-*", "read "};
    for (size_t i = 0; i < sizeof bad_tails / sizeof bad_tails[0]; i++) {
        snprintf(text, sizeof text, "%s %s\n", hex_only, bad_tails[i]);
        if (i == 5) { /* "read " then nothing: the role alone, fine */
            svd_tokens_free(table_of(text));
            continue;
        }
        ck_assert_msg(svd_tokens_from_text(text, strlen(text), err, sizeof err) == NULL, "accepted: %s", text);
        ck_assert(strstr(err, "line 1") != NULL);
    }
    snprintf(text, sizeof text, "%s read team-[ab]?-*\n", hex_only);
    svd_tokens *t = table_of(text);
    svd_tokens_free(t);
    t = table_of("");
    svd_principal *p = NULL;
    ck_assert_int_eq(check_value(t, "Bearer reader", &p, err), SVD_AUTH_UNKNOWN);
    svd_tokens_free(t);
    free(r);
}
END_TEST

static void write_file(const char *path, const char *text)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(rename(tmp, path), 0); /* a new inode: seen even within one mtime tick */
}

/* A tokens file holding text in a new directory dir (a mkdtemp template),
 * opened. */
static svd_tokens *open_temp_tokens(char *dir, char *path, size_t path_cap, const char *text)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, path_cap, "%s/tokens", dir);
    write_file(path, text);
    char err[256];
    svd_tokens *t = svd_tokens_open(path, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    return t;
}

START_TEST(test_reload)
{
    char dir[] = "/tmp/sv-auth-XXXXXX", path[256], err[256];
    char *a = line_of("alpha", "read", NULL), *b = line_of("beta", "admin", NULL);
    svd_tokens *t = open_temp_tokens(dir, path, sizeof path, a);
    svd_principal *p = NULL;
    ck_assert_int_eq(svd_tokens_refresh(t, err, sizeof err), 0);
    ck_assert_int_eq(check_value(t, "Bearer alpha", &p, err), SVD_AUTH_OK);
    svd_principal_free(p);

    svd_principal *open_call = NULL; /* a stream's principal, made before the reload */
    ck_assert_int_eq(check_value(t, "Bearer alpha", &open_call, err), SVD_AUTH_OK);
    ck_assert_int_eq(svd_tokens_recheck(t, open_call), SVD_AUTH_OK);
    write_file(path, b);
    ck_assert_int_eq(svd_tokens_refresh(t, err, sizeof err), 1);
    ck_assert_int_eq(svd_tokens_recheck(t, open_call), SVD_AUTH_UNKNOWN); /* revoked */
    svd_principal_free(open_call);
    ck_assert_int_eq(check_value(t, "Bearer alpha", &p, err), SVD_AUTH_UNKNOWN);
    ck_assert_int_eq(check_value(t, "Bearer beta", &p, err), SVD_AUTH_OK);
    svd_principal_free(p);

    /* A file that does not parse: refused, the table in force stays. */
    write_file(path, "sha256:nothex admin\n");
    ck_assert_int_eq(svd_tokens_refresh(t, err, sizeof err), -1);
    ck_assert(strstr(err, "line 1") != NULL);
    ck_assert_int_eq(check_value(t, "Bearer beta", &p, err), SVD_AUTH_OK);
    svd_principal_free(p);
    ck_assert_int_eq(svd_tokens_refresh(t, err, sizeof err), 0); /* not again until it changes */
    /* A missing file is refused the same way. */
    unlink(path);
    ck_assert_int_eq(svd_tokens_refresh(t, err, sizeof err), -1);
    ck_assert_int_eq(check_value(t, "Bearer beta", &p, err), SVD_AUTH_OK);
    svd_principal_free(p);
    svd_tokens_stats st;
    svd_tokens_get_stats(t, &st);
    ck_assert_uint_eq(st.reloads, 1);
    ck_assert_uint_eq(st.reload_errors, 2);
    svd_tokens_free(t);
    rmdir(dir);
    free(a);
    free(b);
}
END_TEST

typedef struct reader_arg {
    svd_tokens *t;
    atomic_int *stop;
    long checks, ok;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    char why[256];
    while (!atomic_load(a->stop)) {
        svd_principal *pr = NULL;
        svd_auth_status st = svd_tokens_check(a->t, "Bearer beta", 11, &pr, why, sizeof why);
        ck_assert(st == SVD_AUTH_OK || st == SVD_AUTH_UNKNOWN);
        if (st == SVD_AUTH_OK) {
            ck_assert(svd_principal_allows(pr, SVD_ROLE_READ, "x"));
            a->ok++;
        }
        svd_principal_free(pr);
        a->checks++;
    }
    return NULL;
}

/* Checks from four threads while the file is rewritten and reloaded: each
 * sees the old table or the new, whole (run under TSan in CI). */
START_TEST(test_reload_while_checking)
{
    char dir[] = "/tmp/sv-auth-XXXXXX", path[256], err[256];
    char *a = line_of("alpha", "read", NULL), *b = line_of("beta", "admin", NULL);
    svd_tokens *t = open_temp_tokens(dir, path, sizeof path, a);
    atomic_int stop = 0;
    pthread_t th[4];
    reader_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg){t, &stop, 0, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    int reloads = 0;
    for (int i = 0; i < 200; i++) {
        write_file(path, i % 2 ? a : b);
        reloads += svd_tokens_refresh(t, err, sizeof err) == 1;
    }
    atomic_store(&stop, 1);
    long checks = 0, ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        checks += args[i].checks;
        ok += args[i].ok;
    }
    ck_assert_int_eq(reloads, 200);
    ck_assert_int_gt(checks, 0);
    printf("reload x200 while checking: %ld checks from 4 threads, %ld accepted\n", checks, ok);
    svd_tokens_free(t);
    unlink(path);
    rmdir(dir);
    free(a);
    free(b);
}
END_TEST

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*
 * Refusing a wrong token costs the same whether it shares all but its last
 * byte with a real one or nothing at all. Statistical, not a timed unit
 * test: 41 rounds alternate the two kinds (1,000 checks each), and the
 * medians of the per-round means must agree within 10%. The tokens are
 * long (4 KB), so a comparison that stopped at the first differing byte
 * would differ by the cost of comparing 4 KB, far past 10%... were the
 * token compared rather than its hash.
 */
START_TEST(test_timing_independent_of_match)
{
    enum { LEN = 4000, ROUNDS = 41, PER = 1000 };
    char *real = malloc(LEN + 8), *near = malloc(LEN + 8), *far = malloc(LEN + 8);
    ck_assert(real && near && far);
    memcpy(real, "Bearer ", 7);
    for (size_t i = 7; i < LEN; i++)
        real[i] = (char)('a' + i % 26);
    real[LEN] = '\0';
    memcpy(near, real, LEN + 1);
    near[LEN - 1] = near[LEN - 1] == 'z' ? 'y' : 'z';
    memcpy(far, real, LEN + 1);
    for (size_t i = 7; i < LEN; i++)
        far[i] = (char)('A' + i % 26);
    /* A table of 64 lines, one of them the real token. */
    size_t cap = 64 * 100;
    char *text = calloc(1, cap);
    ck_assert_ptr_nonnull(text);
    for (int i = 0; i < 63; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "other-%d", i);
        char *l = line_of(tok, "read", NULL);
        strcat(text, l);
        free(l);
    }
    char *l = line_of(real + 7, "admin", NULL);
    strcat(text, l);
    free(l);
    svd_tokens *t = table_of(text);
    char why[256];
    svd_principal *p = NULL;
    ck_assert_int_eq(check_value(t, real, &p, why), SVD_AUTH_OK);
    svd_principal_free(p);
    double m_near[ROUNDS], m_far[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < 2; k++) {
            const char *v = (k ^ (r & 1)) ? near : far;
            double t0 = now_ns();
            for (int i = 0; i < PER; i++)
                ck_assert_int_eq(svd_tokens_check(t, v, LEN, &p, why, sizeof why), SVD_AUTH_UNKNOWN);
            double per = (now_ns() - t0) / PER;
            if (v == near)
                m_near[r] = per;
            else
                m_far[r] = per;
        }
    }
    qsort(m_near, ROUNDS, sizeof(double), cmp_double);
    qsort(m_far, ROUNDS, sizeof(double), cmp_double);
    double a = m_near[ROUNDS / 2], b = m_far[ROUNDS / 2];
    printf("refusing a 4 KB token: %.0f ns sharing all but 1 byte, %.0f ns sharing none (medians of %d rounds)\n",
           a, b, ROUNDS);
    ck_assert_msg(fabs(a - b) < 0.10 * (a > b ? a : b), "near %.0f ns vs far %.0f ns", a, b);
    svd_tokens_free(t);
    free(text);
    free(real);
    free(near);
    free(far);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("tokens");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_parse_and_roles);
    tcase_add_test(tc, test_values_refused);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_reload);
    tcase_add_test(tc, test_reload_while_checking);
    tcase_add_test(tc, test_timing_independent_of_match);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
