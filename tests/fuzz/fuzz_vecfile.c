/*
 * Fuzz target for untrusted TEXMEX .fvecs / .ivecs bytes: service/vecfile.c,
 * the reader the slimvec client and slimvec-bench share.
 *
 * Input: the file, as it is. Every input is parsed both as .fvecs and as
 * .ivecs, and the results are checked:
 *   - accepted: rows >= 1, dim in 1..SVF_DIM_MAX, the size is exactly
 *     rows x (4 + 4 dim), every record's dimension word is dim, the matrix
 *     holds the file's rows x dim values, .fvecs values are all finite, and
 *     svf_encode of the matrix gives back the very same bytes;
 *   - rejected: a status and a message that starts with the file name, and
 *     (bad content) names a row and a byte offset; the matrix left empty;
 *   - an input accepted as .fvecs is accepted as .ivecs with the same
 *     values (the two differ only in the finiteness check).
 * A broken invariant aborts, so libFuzzer and ASan report it.
 *
 * Built as a libFuzzer target with clang (-DSV_FUZZ=ON), and as a
 * corpus-driven ctest with any compiler: valid seeds made by svf_encode,
 * then a fixed-seed stream of mutations of them and random bytes (run it
 * under ASan). That run also writes and reads real files through
 * svf_write_file / svf_read_file in a temporary directory.
 *
 *   fuzz_vecfile [N]                    N inputs (default 20000)
 *   fuzz_vecfile --write-corpus DIR [N] the seeds and N mutants into DIR
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "vecfile.h"

#define FUZZ_NAME "<fuzz>"

enum { K_F, K_I, N_KINDS };
static const svf_kind kinds[N_KINDS] = {SVF_FVECS, SVF_IVECS};
static unsigned long n_accepted[N_KINDS], n_rejected[N_KINDS];

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_vecfile: invariant broken: %s\n", what);
        abort();
    }
}

/* The invariants of an accepted file (see the top comment). */
static void check_accepted(const uint8_t *b, size_t len, svf_kind kind, const svf_matrix *m,
                           const svf_error *err)
{
    check(err->code == SVF_OK && err->message[0] == '\0', "accepted: the error is cleared");
    check(m->data != NULL && m->rows >= 1, "accepted: at least one row");
    check(m->dim >= 1 && m->dim <= SVF_DIM_MAX, "accepted: dim in 1..SVF_DIM_MAX");
    check(svf_file_size(m->rows, m->dim) == (uint64_t)len, "accepted: size = rows x (4 + 4 dim)");
    size_t rec = 4u + 4u * (size_t)m->dim, row_bytes = 4u * (size_t)m->dim;
    const uint8_t *data = m->data;
    for (size_t r = 0; r < m->rows; r++) {
        check(fu_rd32(b + r * rec) == m->dim, "accepted: every dimension word is dim");
        check(memcmp(data + r * row_bytes, b + r * rec + 4, row_bytes) == 0,
              "accepted: the row's values are the file's");
    }
    if (kind == SVF_FVECS) {
        const float *v = m->data;
        for (size_t i = 0; i < m->rows * (size_t)m->dim; i++)
            check(isfinite(v[i]), "accepted .fvecs: every value finite");
    }
    uint8_t *again = malloc(len);
    if (!again)
        abort();
    svf_error e2;
    check(svf_encode(m->data, m->rows, m->dim, kind, FUZZ_NAME, again, &e2) == SVF_OK,
          "accepted: svf_encode takes the matrix back");
    check(memcmp(again, b, len) == 0, "accepted: svf_encode gives back the same bytes");
    free(again);
}

static void check_rejected(size_t len, svf_status st, const svf_matrix *m, const svf_error *err)
{
    check(err->code == st, "rejected: the error carries the status");
    check(m->data == NULL && m->rows == 0 && m->dim == 0, "rejected: the matrix is left empty");
    check(strncmp(err->message, FUZZ_NAME ": ", strlen(FUZZ_NAME) + 2) == 0,
          "rejected: the message starts with the file name");
    check(strlen(err->message) > strlen(FUZZ_NAME) + 2, "rejected: the message says something");
    if (st == SVF_ERR_FORMAT && len > 0)
        check(strstr(err->message, "row ") && strstr(err->message, "offset "),
              "rejected content: the message names a row and an offset");
    if (len == 0)
        check(strstr(err->message, "empty") != NULL, "rejected empty file: the message says so");
}

/* Parses one input both ways; returns a bit per kind accepted. */
static unsigned run_one(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so a read past the end trips ASan. */
    uint8_t *b = malloc(size ? size : 1);
    if (!b)
        abort();
    if (size)
        memcpy(b, data, size);
    svf_matrix m[N_KINDS];
    unsigned accepted = 0;
    for (int k = 0; k < N_KINDS; k++) {
        svf_error err;
        memset(&err, 0x5a, sizeof err); /* garbage: the parser must set it */
        err.message[sizeof err.message - 1] = '\0';
        svf_status st = svf_parse(size ? b : NULL, size, kinds[k], FUZZ_NAME, &m[k], &err);
        if (st == SVF_OK) {
            check_accepted(b, size, kinds[k], &m[k], &err);
            accepted |= 1u << k;
            n_accepted[k]++;
        } else {
            check_rejected(size, st, &m[k], &err);
            n_rejected[k]++;
        }
    }
    if (accepted & (1u << K_F)) {
        check((accepted & (1u << K_I)) != 0, "accepted as .fvecs => accepted as .ivecs");
        check(m[K_F].rows == m[K_I].rows && m[K_F].dim == m[K_I].dim &&
                  memcmp(m[K_F].data, m[K_I].data, m[K_F].rows * (size_t)m[K_F].dim * 4u) == 0,
              "the same file read both ways gives the same values");
    }
    svf_matrix_free(&m[K_F]);
    svf_matrix_free(&m[K_I]);
    free(b);
    return accepted;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    return 0;
}

#ifndef SV_LIBFUZZER
/* ---- corpus-driven run ------------------------------------------------------ */

#include <errno.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_vecfile: %s: %s\n", what, why ? why : strerror(errno));
    exit(1);
}

typedef struct seed {
    int kind; /* K_F or K_I: the kind it was made as */
    uint8_t *b;
    size_t len;
    uint32_t dim;
} seed;

#define MAX_SEEDS 32
static seed seeds[MAX_SEEDS];
static size_t n_seeds;

/* Values for a seed: small numbers mostly, and the edges of each type. */
static void seed_values(int kind, void *out, size_t n)
{
    static const float fedge[] = {0.0f, -0.0f, FLT_MIN, -FLT_MIN, 1e-45f, FLT_MAX, -FLT_MAX, 1.0f};
    static const int32_t iedge[] = {0, -1, 1, INT32_MIN, INT32_MAX, 99};
    for (size_t i = 0; i < n; i++) {
        if (kind == K_F) {
            float x = fu_below(8) == 0 ? fedge[fu_below(sizeof fedge / sizeof *fedge)]
                                    : (float)((int)fu_below(2000) - 1000) / 100.0f;
            ((float *)out)[i] = x;
        } else {
            int32_t x = fu_below(8) == 0 ? iedge[fu_below(sizeof iedge / sizeof *iedge)]
                                      : (int32_t)fu_below(100000);
            ((int32_t *)out)[i] = x;
        }
    }
}

static void add_seed(int kind, size_t rows, uint32_t dim)
{
    if (n_seeds == MAX_SEEDS)
        abort();
    uint64_t size = svf_file_size(rows, dim);
    void *v = malloc(rows * (size_t)dim * 4u);
    uint8_t *b = malloc((size_t)size);
    if (!size || !v || !b)
        abort();
    seed_values(kind, v, rows * (size_t)dim);
    svf_error err;
    if (svf_encode(v, rows, dim, kinds[kind], "seed", b, &err) != SVF_OK)
        die("svf_encode", err.message);
    free(v);
    seeds[n_seeds++] = (seed){kind, b, (size_t)size, dim};
}

static void make_seeds(void)
{
    static const struct { size_t rows; uint32_t dim; } shapes[] = {
        {1, 1}, {1, 3}, {2, 8}, {5, 17}, {40, 4}, {3, 128}, {10, 1}, {7, 10},
    };
    for (int k = 0; k < N_KINDS; k++)
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            add_seed(k, shapes[i].rows, shapes[i].dim);
}

/* ---- the writer refuses what the reader refuses --------------------------- */

static unsigned long n_file_checks;

static void expect_status(svf_status got, svf_status want, const svf_error *err, const char *needle,
                          const char *what)
{
    if (got != want || (needle && !strstr(err->message, needle))) {
        fprintf(stderr, "fuzz_vecfile: %s: status %d (want %d), message \"%s\" (want \"%s\")\n",
                what, (int)got, (int)want, err->message, needle ? needle : "");
        exit(1);
    }
    n_file_checks++;
}

static void writer_checks(void)
{
    float v[6] = {1, 2, 3, 4, 5, 6};
    uint8_t buf[64];
    svf_error err;
    expect_status(svf_encode(v, 2, 3, SVF_FVECS, "w", buf, &err), SVF_OK, &err, NULL, "encode");
    v[4] = NAN;
    expect_status(svf_encode(v, 2, 3, SVF_FVECS, "w", buf, &err), SVF_ERR_ARGUMENT, &err,
                  "row 1 (offset 16), component 1 (offset 24) is not finite (nan)", "encode NaN");
    v[4] = -INFINITY;
    expect_status(svf_encode(v, 2, 3, SVF_FVECS, "w", buf, &err), SVF_ERR_ARGUMENT, &err,
                  "not finite (-inf)", "encode -inf");
    expect_status(svf_encode(v, 2, 3, SVF_IVECS, "w", buf, &err), SVF_OK, &err, NULL,
                  "encode the same bits as ivecs");
    expect_status(svf_encode(v, 0, 3, SVF_FVECS, "w", buf, &err), SVF_ERR_ARGUMENT, &err,
                  "no rows", "encode 0 rows");
    expect_status(svf_encode(v, 1, 0, SVF_FVECS, "w", buf, &err), SVF_ERR_ARGUMENT, &err,
                  "dimension 0", "encode dim 0");
    expect_status(svf_encode(v, 1, SVF_DIM_MAX + 1, SVF_FVECS, "w", buf, &err), SVF_ERR_ARGUMENT,
                  &err, "cannot write dimension", "encode dim over the limit");
    check(svf_file_size(0, 3) == 0 && svf_file_size(2, 0) == 0 &&
              svf_file_size(1, SVF_DIM_MAX + 1) == 0 && svf_file_size(2, 3) == 32,
          "svf_file_size");
    if (sizeof(size_t) == 8)
        check(svf_file_size(SIZE_MAX, SVF_DIM_MAX) == 0, "svf_file_size overflow");

    /* A wrong record in the middle, a NaN, a short file: the exact places. */
    float w[2 * 3] = {1, 2, 3, 4, 5, 6};
    uint8_t file[32];
    svf_matrix m;
    expect_status(svf_encode(w, 2, 3, SVF_FVECS, "w", file, &err), SVF_OK, &err, NULL, "encode");
    fu_wr32(file + 16, 4);
    expect_status(svf_parse(file, 32, SVF_FVECS, "w.fvecs", &m, &err), SVF_ERR_FORMAT, &err,
                  "w.fvecs: row 1 (offset 16) has dimension 4, expected 3", "a wrong dimension word");
    fu_wr32(file + 16, 3);
    float nan = NAN;
    memcpy(file + 28, &nan, 4);
    expect_status(svf_parse(file, 32, SVF_FVECS, "w.fvecs", &m, &err), SVF_ERR_FORMAT, &err,
                  "w.fvecs: row 1 (offset 16), component 2 (offset 28) is not finite (nan)", "NaN");
    expect_status(svf_parse(file, 32, SVF_IVECS, "w.ivecs", &m, &err), SVF_OK, &err, NULL,
                  "NaN bits are an int");
    svf_matrix_free(&m);
    expect_status(svf_parse(file, 30, SVF_IVECS, "w.ivecs", &m, &err), SVF_ERR_FORMAT, &err,
                  "row 1 (offset 16) is cut short", "a short file");
    fu_wr32(file, 0);
    expect_status(svf_parse(file, 32, SVF_IVECS, "w.ivecs", &m, &err), SVF_ERR_FORMAT, &err,
                  "row 0 (offset 0): dimension 0 is not in 1..", "dimension 0");
    expect_status(svf_parse(NULL, 0, SVF_IVECS, "w.ivecs", &m, &err), SVF_ERR_FORMAT, &err,
                  "w.ivecs: empty file", "an empty buffer");
}

/* Real files: write, read back, and the file-level refusals. */
static void file_checks(void)
{
    char dir[] = "/tmp/fuzz_vecfile_XXXXXX", path[256], tmp[300];
    if (!mkdtemp(dir))
        die("mkdtemp", NULL);
    svf_error err;
    svf_matrix m;
    for (size_t i = 0; i < n_seeds; i++) {
        const seed *s = &seeds[i];
        size_t rows = s->len / (4u + 4u * (size_t)s->dim);
        svf_matrix want;
        if (svf_parse(s->b, s->len, kinds[s->kind], "seed", &want, &err) != SVF_OK)
            die("seed", err.message);
        snprintf(path, sizeof path, "%s/s%zu.%s", dir, i, svf_kind_name(kinds[s->kind]));
        expect_status(svf_write_file(path, want.data, rows, s->dim, kinds[s->kind], &err), SVF_OK,
                      &err, NULL, "svf_write_file");
        expect_status(svf_read_file(path, kinds[s->kind], &m, &err), SVF_OK, &err, NULL,
                      "svf_read_file of a written file");
        check(m.rows == rows && m.dim == s->dim &&
                  memcmp(m.data, want.data, rows * (size_t)s->dim * 4u) == 0,
              "a written file reads back the same");
        svf_matrix_free(&m);
        svf_matrix_free(&want);
        remove(path);
    }
    float bad[4] = {1, 2, INFINITY, 4};
    snprintf(path, sizeof path, "%s/bad.fvecs", dir);
    expect_status(svf_write_file(path, bad, 2, 2, SVF_FVECS, &err), SVF_ERR_ARGUMENT, &err,
                  "row 1 (offset 12), component 0 (offset 16) is not finite (+inf)",
                  "svf_write_file of an infinity");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    struct stat st;
    check(stat(path, &st) != 0 && stat(tmp, &st) != 0, "a refused write leaves no file");
    expect_status(svf_read_file(path, SVF_FVECS, &m, &err), SVF_ERR_IO, &err, "cannot open",
                  "svf_read_file of a missing file");
    expect_status(svf_read_file(dir, SVF_FVECS, &m, &err), SVF_ERR_IO, &err, "not a regular file",
                  "svf_read_file of a directory");
    snprintf(path, sizeof path, "%s/empty.ivecs", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fclose(f) != 0)
        die(path, NULL);
    expect_status(svf_read_file(path, SVF_IVECS, &m, &err), SVF_ERR_FORMAT, &err,
                  "empty.ivecs: empty file", "svf_read_file of an empty file");
    check(m.data == NULL && m.rows == 0, "a refused file leaves the matrix empty");
    remove(path);
    if (rmdir(dir) != 0)
        die(dir, NULL);
}

/* ---- mutations ---------------------------------------------------------- */

#define FUZZ_MAX_INPUT (1u << 15)

static const uint32_t interesting32[] = {0, 1, 2, 3, 4, 8, 17, 128, 0x7f, 0x80, 0xffff,
                                         1u << 20, (1u << 20) + 1, 0x7fffffff, 0x80000000u,
                                         0xffffffffu, 0x7fc00000u /* NaN */,
                                         0x7f800000u /* +inf */, 0xff800000u /* -inf */};

/* A 4-byte-aligned word of the seed's layout: a dimension word or a value. */
static size_t pick_word(size_t len, uint32_t dim, int header)
{
    size_t rec = 4u + 4u * (size_t)dim, rows = len / rec;
    if (rows == 0)
        return len >= 4 ? 4u * fu_below((uint32_t)(len / 4)) : 0;
    size_t r = fu_below((uint32_t)rows);
    return header ? r * rec : r * rec + 4u + 4u * fu_below(dim);
}

static void mutate_once(uint32_t dim, uint8_t *b, size_t *lenp)
{
    size_t len = *lenp, rec = 4u + 4u * (size_t)dim;
    size_t pos = len ? fu_below((uint32_t)len) : 0;
    switch (fu_below(12)) {
    case 0: /* bit flip */
        if (len)
            b[pos] ^= (uint8_t)(1u << fu_below(8));
        break;
    case 1: /* byte to 0, 0xff or random */
        if (len) {
            uint32_t k = fu_below(3);
            b[pos] = k == 0 ? 0 : k == 1 ? 0xff : (uint8_t)fu_next();
        }
        break;
    case 2: /* truncation: a few bytes, or anywhere */
        if (len)
            len = fu_below(2) ? len - 1 - fu_below((uint32_t)(len < 8 ? len : 8)) : fu_below((uint32_t)len);
        break;
    case 3: { /* insert random bytes */
        fu_insert_random(b, &len, FUZZ_MAX_INPUT, pos, 8);
        break;
    }
    case 4: { /* delete a chunk */
        fu_delete_chunk(b, &len, pos, 16);
        break;
    }
    case 5: /* a dimension word: off by a little, or interesting */
        if (len >= 4) {
            size_t at = pick_word(len, dim, 1);
            uint32_t v = fu_rd32(b + at);
            fu_wr32(b + at, fu_below(2) ? v + (uint32_t)((int)fu_below(5) - 2)
                                  : interesting32[fu_below(sizeof interesting32 / sizeof *interesting32)]);
        }
        break;
    case 6: /* a value: NaN, an infinity, or interesting */
        if (len >= 4)
            fu_wr32(b + pick_word(len, dim, 0),
                 interesting32[fu_below(sizeof interesting32 / sizeof *interesting32)]);
        break;
    case 7: /* append a copy of a whole record (still valid) */
        if (len >= rec && len + rec <= FUZZ_MAX_INPUT) {
            size_t from = fu_below((uint32_t)(len / rec)) * rec;
            memcpy(b + len, b + from, rec);
            len += rec;
        }
        break;
    case 8: /* drop a whole record (valid unless it was the last) */
        if (len >= rec) {
            size_t at = fu_below((uint32_t)(len / rec)) * rec;
            memmove(b + at, b + at + rec, len - at - rec);
            len -= rec;
        }
        break;
    case 9: { /* a value's bits at random (an .ivecs stays valid) */
        if (len >= 4) {
            size_t at = pick_word(len, dim, 0);
            fu_wr32(b + at, (uint32_t)fu_next());
        }
        break;
    }
    case 10: /* the whole file's dimension words to another dim: valid if the size fits */
        if (len >= 4) {
            uint32_t nd = 1 + fu_below(2 * dim + 2);
            size_t nrec = 4u + 4u * (size_t)nd;
            for (size_t at = 0; at + 4 <= len; at += nrec)
                fu_wr32(b + at, nd);
        }
        break;
    default: /* zero a run */
        if (len) {
            size_t n = 1 + fu_below(16);
            if (pos + n > len)
                n = len - pos;
            memset(b + pos, 0, n);
        }
        break;
    }
    *lenp = len;
}

int main(int argc, char **argv)
{
    const char *corpus = NULL;
    long rounds = 0;
    fu_args("fuzz_vecfile", argc, argv, &rounds, &corpus);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    make_seeds();
    uint8_t *in = malloc(FUZZ_MAX_INPUT);
    if (!in)
        abort();

    /* Every valid seed must be accepted as its kind: otherwise the seeds
     * test nothing. */
    for (size_t i = 0; i < n_seeds; i++) {
        if (corpus)
            fu_write_input("fuzz_vecfile", corpus, i, seeds[i].b, seeds[i].len);
        if (!(run_one(seeds[i].b, seeds[i].len) & (1u << seeds[i].kind))) {
            fprintf(stderr, "fuzz_vecfile: valid seed %zu (%s) rejected\n", i,
                    svf_kind_name(kinds[seeds[i].kind]));
            return 1;
        }
    }
    if (!corpus) {
        writer_checks();
        file_checks();
    }

    unsigned long mutated[N_KINDS] = {0}, mutated_ok[N_KINDS] = {0};
    for (long i = 0; i < rounds; i++) {
        size_t len;
        int kind = -1, is_mutant = 0;
        if (i % 16 == 15) {
            /* random bytes, sometimes behind a plausible dimension word */
            len = fu_below(fu_below(2) ? 64 : 1024);
            for (size_t k = 0; k < len; k++)
                in[k] = (uint8_t)fu_next();
            if (len >= 4 && fu_below(2))
                fu_wr32(in, 1 + fu_below(16));
        } else {
            const seed *s = &seeds[fu_below((uint32_t)n_seeds)];
            kind = s->kind;
            len = s->len;
            memcpy(in, s->b, len);
            int n_mut = 1 + (int)fu_below(fu_below(4) ? 2 : 8);
            for (int k = 0; k < n_mut; k++)
                mutate_once(s->dim, in, &len);
            is_mutant = len != s->len || memcmp(in, s->b, len) != 0;
        }
        if (corpus) {
            fu_write_input("fuzz_vecfile", corpus, n_seeds + (size_t)i, in, len);
            continue;
        }
        unsigned acc = run_one(in, len);
        if (is_mutant) {
            mutated[kind]++;
            mutated_ok[kind] += (acc >> kind) & 1u;
        }
    }
    free(in);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].b);
    if (corpus) {
        printf("fuzz_vecfile: wrote %zu seeds and %ld mutants to %s\n", n_seeds, rounds, corpus);
        return 0;
    }

    printf("fuzz_vecfile: %ld inputs (+%zu valid seeds, %lu writer/file checks), no crash, %.1f s CPU\n",
           rounds, n_seeds, n_file_checks, (double)clock() / CLOCKS_PER_SEC - t0);
    for (int k = 0; k < N_KINDS; k++)
        printf("  %s  accepted %6lu  rejected %6lu   mutants of %s seeds accepted %lu of %lu\n",
               svf_kind_name(kinds[k]), n_accepted[k], n_rejected[k], svf_kind_name(kinds[k]),
               mutated_ok[k], mutated[k]);
    if (mutated_ok[K_F] == 0 || mutated_ok[K_I] == 0) {
        fprintf(stderr, "fuzz_vecfile: no mutated .fvecs or .ivecs file was ever accepted: "
                        "the inputs never got past the checks\n");
        return 1;
    }
    return 0;
}
#endif
