/*
 * Fuzz target for the untrusted JSON the slimvec client reads:
 * service/cli/jsonpb.c, its payload lines (--payloads), filters (--filter)
 * and the bounded line reader under both.
 *
 * Input: any bytes. Each input is read
 *   - as one payload line (svj_payload_from_json): accepted, the payload
 *     printed back (svj_payload_to_json) parses again to the very same
 *     message (packed bytes equal); refused, a message that names the line
 *     and no payload;
 *   - as one filter (svj_filter_from_json): accepted, the filter packs
 *     and unpacks to the same bytes, and nests no deeper than the protocol
 *     allows; refused, a message and no filter;
 *   - as a file of lines (svl_lines over fmemopen, a small line limit):
 *     every line at most the limit, without NUL bytes, numbered 1, 2, ...;
 *     read twice (after svl_lines_rewind) the same lines; each line is
 *     parsed as a payload.
 * A broken invariant aborts, so libFuzzer and ASan report it; everything
 * parsed is freed, so LeakSanitizer reports a leak.
 *
 * Built as a libFuzzer target with clang (-DSV_FUZZ=ON), and as a
 * corpus-driven ctest with any compiler: valid seeds (payloads and
 * filters of every kind), then a fixed-seed stream of mutations of them,
 * splices and random bytes (run it under ASan). That run also checks a
 * table of refusals for their exact messages, and svl_read_text on real
 * files.
 *
 *   fuzz_clijson [N]                    N inputs (default 20000)
 *   fuzz_clijson --write-corpus DIR [N] the seeds and N mutants into DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "jsonpb.h"
#include "lines.h"

/* The line limit of the line-reader pass: small, so that inputs reach it. */
#define FUZZ_LINE_MAX 200

static unsigned long n_payload_ok, n_payload_bad, n_filter_ok, n_filter_bad, n_lines;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_clijson: invariant broken: %s\n", what);
        abort();
    }
}

/* A message was written: not empty, and terminated. */
static void check_message(const svj_error *err, const char *what)
{
    check(memchr(err->message, '\0', sizeof err->message) != NULL, what);
    check(err->message[0] != '\0', what);
}

/* m packed into a new buffer (*len bytes). */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    if (!b)
        abort();
    check(protobuf_c_message_pack(m, b) == *len, "pack writes its packed size");
    return b;
}

/* ---- payloads ------------------------------------------------------------- */

/* text[len] == '\0'. Returns 1 when accepted. */
static int payload_one(const char *text, size_t len, size_t line)
{
    svj_error err;
    memset(&err, 0x5a, sizeof err); /* garbage: a refusal must set it */
    Slimvec__V1__Payload *p = (Slimvec__V1__Payload *)1;
    if (svj_payload_from_json(text, len, line, &p, &err) != 0) {
        check(p == NULL, "a refused payload leaves no message");
        check_message(&err, "a refused payload says why");
        if (line) {
            char want[32];
            snprintf(want, sizeof want, "line %zu", line);
            check(strncmp(err.message, want, strlen(want)) == 0, "a refused payload line names its line");
        }
        n_payload_bad++;
        return 0;
    }
    check(p != NULL, "an accepted payload is a message");
    for (size_t i = 0; i < p->n_fields; i++) {
        const Slimvec__V1__PayloadValue *v = p->fields[i]->value;
        check(p->fields[i]->key != NULL && v != NULL, "every field has a key and a value");
        check(v->kind_case != SLIMVEC__V1__PAYLOAD_VALUE__KIND__NOT_SET, "every value has a type");
        if (v->kind_case == SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS)
            check(v->strings->n_values > 0, "no empty list of strings");
        if (v->kind_case == SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS)
            check(v->ints->n_values > 0, "no empty list of integers");
    }
    /* The file check: the same payload twice agrees with itself; a key's
     * kind changed by hand is refused naming the line. */
    svj_keys *keys = svj_keys_create();
    check(keys != NULL, "svj_keys_create");
    int ok1 = svj_payload_check(p, keys, line, &err) == 0;
    if (ok1)
        check(svj_payload_check(p, keys, line + 1, &err) == 0, "a payload agrees with itself");
    else
        check_message(&err, "a refused payload line says why");
    if (ok1 && p->n_fields && p->fields[0]->value->kind_case != SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE) {
        Slimvec__V1__PayloadValue *v0 = p->fields[0]->value, saved = *v0;
        v0->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE;
        v0->bool_value = 1;
        check(svj_payload_check(p, keys, line + 2, &err) != 0 && strstr(err.message, "earlier lines gave it"),
              "a key's kind changed is refused");
        *v0 = saved;
    }
    svj_keys_free(keys);
    /* Printed and read back: the same message. */
    json_object *o = svj_payload_to_json(p);
    check(o != NULL, "svj_payload_to_json");
    size_t plen = 0;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &plen);
    check(s != NULL, "printing a payload");
    Slimvec__V1__Payload *q = NULL;
    int again = svj_payload_from_json(s, plen, 0, &q, &err);
    if (again != 0)
        fprintf(stderr, "fuzz_clijson: printed payload %s refused: %s\n", s, err.message);
    check(again == 0, "a printed payload is accepted");
    size_t la, lb;
    uint8_t *a = pack(&p->base, &la), *b = pack(&q->base, &lb);
    check(la == lb && memcmp(a, b, la) == 0, "a printed payload reads back the same");
    free(a);
    free(b);
    json_object_put(o);
    svj_payload_free(q);
    svj_payload_free(p);
    n_payload_ok++;
    return 1;
}

/* ---- filters -------------------------------------------------------------- */

static void check_leaf(int kind, const void *msg)
{
    check(kind >= SLIMVEC__V1__CONDITION__KIND_MATCH && kind <= SLIMVEC__V1__CONDITION__KIND_IS_EMPTY,
          "a leaf condition has a leaf kind");
    check(msg != NULL, "a condition has its message");
}

static void check_filter(const Slimvec__V1__Filter *f)
{
    Slimvec__V1__Condition **lists[3] = {f->must, f->should, f->must_not};
    size_t counts[3] = {f->n_must, f->n_should, f->n_must_not};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l]; i++) {
            const Slimvec__V1__Condition *c = lists[l][i];
            if (c->kind_case != SLIMVEC__V1__CONDITION__KIND_FILTER) {
                check_leaf(c->kind_case, c->match);
                continue;
            }
            const Slimvec__V1__NestedFilter *n = c->filter;
            check(n != NULL, "a nested filter has its message");
            Slimvec__V1__LeafCondition **nl[3] = {n->must, n->should, n->must_not};
            size_t nc[3] = {n->n_must, n->n_should, n->n_must_not};
            for (int k = 0; k < 3; k++)
                for (size_t j = 0; j < nc[k]; j++)
                    check_leaf(nl[k][j]->kind_case, nl[k][j]->match);
        }
}

static int filter_one(const char *text, size_t len)
{
    svj_error err;
    memset(&err, 0x5a, sizeof err);
    Slimvec__V1__Filter *f = (Slimvec__V1__Filter *)1;
    if (svj_filter_from_json(text, len, &f, &err) != 0) {
        check(f == NULL, "a refused filter leaves no message");
        check_message(&err, "a refused filter says why");
        n_filter_bad++;
        return 0;
    }
    check(f != NULL, "an accepted filter is a message");
    check_filter(f);
    size_t la, lb;
    uint8_t *a = pack(&f->base, &la);
    ProtobufCMessage *u = protobuf_c_message_unpack(&slimvec__v1__filter__descriptor, NULL, la, a);
    check(u != NULL, "an accepted filter unpacks");
    uint8_t *b = pack(u, &lb);
    check(la == lb && memcmp(a, b, la) == 0, "an accepted filter packs the same after a round trip");
    free(a);
    free(b);
    protobuf_c_message_free_unpacked(u, NULL);
    svj_filter_free(f);
    n_filter_ok++;
    return 1;
}

/* ---- lines ---------------------------------------------------------------- */

static void lines_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return; /* fmemopen wants a buffer */
    FILE *f = fmemopen((void *)data, size, "rb");
    check(f != NULL, "fmemopen");
    svl_lines r;
    svl_error err;
    check(svl_lines_init(&r, f, "<fuzz>", FUZZ_LINE_MAX, &err) == 0, "svl_lines_init");
    size_t first_count = 0;
    int first_end = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t count = 0;
        int got;
        while ((got = svl_lines_next(&r, &err)) == 1) {
            count++;
            check(r.line == count, "lines are numbered 1, 2, ...");
            check(r.len <= FUZZ_LINE_MAX, "a line is at most the limit");
            check(r.buf[r.len] == '\0' && memchr(r.buf, '\0', r.len) == NULL, "a line is a C string");
            check(memchr(r.buf, '\n', r.len) == NULL, "a line holds no newline");
            if (pass == 0)
                payload_one(r.buf, r.len, r.line);
        }
        if (got < 0)
            check(strncmp(err.message, "<fuzz>: ", 8) == 0, "a line error names the file");
        if (pass == 0) {
            first_count = count;
            first_end = got;
            n_lines += count;
            check(svl_lines_rewind(&r, &err) == 0, "svl_lines_rewind");
        } else {
            check(count == first_count && got == first_end, "the lines read again are the same");
        }
    }
    svl_lines_close(&r);
    fclose(f);
}

/* ---- one input ------------------------------------------------------------ */

/* Bit 0: accepted as a payload, bit 1: as a filter. */
static unsigned run_one(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes and the NUL the parsers need: a read
     * past it trips ASan. */
    char *t = malloc(size + 1);
    if (!t)
        abort();
    if (size)
        memcpy(t, data, size);
    t[size] = '\0';
    unsigned acc = 0;
    acc |= (unsigned)payload_one(t, size, 1);
    acc |= (unsigned)filter_one(t, size) << 1;
    free(t);
    lines_one(data, size);
    return acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    return 0;
}

#ifndef SV_LIBFUZZER
/* ---- corpus-driven run ---------------------------------------------------- */

#include <errno.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_clijson: %s: %s\n", what, why ? why : strerror(errno));
    exit(1);
}

/* Valid payload lines, then valid filters: every kind of value and of
 * condition. */
static const char *const payload_seeds[] = {
    "{}",
    "{\"class\": \"coat\", \"u\": 7, \"price\": 9.5, \"active\": true, \"tags\": [\"a\", \"b\"]}",
    "{\"ints\": [1, -2, 9223372036854775807], \"d\": -0.0, \"e\": 1e-300, \"big\": 1.5e300}",
    "{\"s\": \"caf\\u00e9 \\\"q\\\" \\\\ \\n\", \"b\": false, \"one\": 1.0, \"neg\": -9223372036854775807}",
    "  {\"k\":\"v\"}  \r",
    "{\"x\": 0.1, \"y\": 3.14159265358979, \"z\": 123456789012345678}",
};
static const char *const filter_seeds[] = {
    "{}",
    "{\"must\": [{\"key\": \"class\", \"match\": \"coat\"}]}",
    "{\"must\": [{\"key\": \"u\", \"match\": 7}, {\"key\": \"active\", \"match\": true}]}",
    "{\"should\": [{\"key\": \"class\", \"match_any\": [\"coat\", \"bag\"]}, {\"key\": \"u\", \"match_any\": [1, 2]}]}",
    "{\"must\": [{\"key\": \"u\", \"range\": {\"gte\": 10, \"lt\": 20}}, {\"key\": \"p\", \"range\": {\"gt\": 0.5}}]}",
    "{\"must_not\": [{\"has_id\": [\"3\", 7]}, {\"is_empty\": \"tags\"}]}",
    ("{\"must\": [{\"filter\": {\"should\": [{\"key\": \"u\", \"range\": {\"lte\": 3}}, {\"has_id\": [\"9\"]}],"
     " \"must_not\": [{\"is_empty\": \"t\"}], \"must\": [{\"key\": \"c\", \"match_any\": [\"x\"]}]}}]}"),
};

/* Refusals and their messages (a part of each). */
static const struct { int filter; const char *in, *want; } refusals[] = {
    {0, "", "line 1: empty ({} is a vector without payload)"},
    {0, "[1]", "line 1: an array, not a JSON object"},
    {0, "{\"a\": null}", "line 1, key \"a\": null is not a payload value"},
    {0, "{\"a\": {\"b\": 1}}", "line 1, key \"a\": a nested object"},
    {0, "{\"a\": []}", "line 1, key \"a\": an empty array"},
    {0, "{\"a\": [1, \"x\"]}", "item 1 is a string in an array of integers"},
    {0, "{\"a\": [1.5]}", "an array of doubles"},
    {0, "{\"a\": 9223372036854775808}", "out of the int64 range"},
    {0, "{\"a\": -9223372036854775809}", "out of the int64 range"},
    {0, "{\"a\": 1e999}", "not finite"},
    {0, "{\"a\": NaN}", "not finite"},
    {0, "{\"a\\u0000b\": 1}", "\\u0000 (a NUL character) at offset 3"},
    {0, "{\"a\": \"x\\\\u0000\"}", NULL}, /* an escaped backslash, then text: accepted */
    {0, "{\"a\": 1} x", "unexpected character"},
    {0, "{\"a\": 1,}", "not valid JSON"},
    {0, "{\"a\": \"\xff\"}", "invalid utf-8"},
    {0, "{\"a\": [[[[[[[1]]]]]]]}", "nested too deep"},
    {1, "[]", "filter: an array, not a filter object"},
    {1, "{\"mus\": []}", "filter: unknown field \"mus\""},
    {1, "{\"must\": {}}", "must: an object, not an array of conditions"},
    {1, "{\"must\": [{\"key\": \"a\"}]}", "must[0]: no condition"},
    {1, "{\"must\": [{\"match\": 1}]}", "must[0]: missing \"key\""},
    {1, "{\"must\": [{\"key\": 1, \"match\": 1}]}", "\"key\" is an integer, not a string"},
    {1, "{\"must\": [{\"key\": \"a\", \"match\": 1, \"range\": {\"gt\": 1}}]}", "both match and range"},
    {1, "{\"should\": [1, {\"key\": \"a\", \"match\": 1.5}]}", "should[0]: an integer, not a condition"},
    {1, "{\"must\": [{\"key\": \"a\", \"match\": 1.5}]}", "match takes a string, an integer or a boolean"},
    {1, "{\"must\": [{\"key\": \"a\", \"match_any\": []}]}", "must[0].match_any: an empty array"},
    {1, "{\"must\": [{\"key\": \"a\", \"match_any\": [true]}]}", "an array of booleans"},
    {1, "{\"must\": [{\"key\": \"a\", \"range\": {}}]}", "must[0].range: needs gt, gte, lt or lte"},
    {1, "{\"must\": [{\"key\": \"a\", \"range\": {\"gt\": 1, \"gte\": 2}}]}", "both gt and gte"},
    {1, "{\"must\": [{\"key\": \"a\", \"range\": {\"lt\": \"x\"}}]}", "lt is a string, not a number"},
    {1, "{\"must\": [{\"key\": \"a\", \"range\": {\"eq\": 1}}]}", "unknown field \"eq\" (gt, gte, lt, lte)"},
    {1, "{\"must\": [{\"has_id\": []}]}", "has_id: an empty array"},
    {1, "{\"must\": [{\"has_id\": [true]}]}", "item 0 is a boolean, not an id"},
    {1, "{\"must\": [{\"is_empty\": 3}]}", "is_empty is an integer, not a key"},
    {1, "{\"must\": [{\"key\": \"a\", \"is_empty\": \"a\"}]}", "\"key\" does not go with is_empty"},
    {1, "{\"must\": [{\"filter\": {\"must\": [{\"filter\": {}}]}}]}",
     "must[0].filter.must[0]: a filter inside a nested filter: the protocol allows one level"},
    {1, "{\"must\": [{\"filter\": {\"nope\": []}}]}", "must[0].filter: unknown field \"nope\""},
    {1, "{\"must\": [{\"filter\": 1}]}", "must[0].filter: an integer, not a filter object"},
    {1, "{\"must\": [", "filter: not valid JSON"},
    {1, "  ", "filter: empty"},
};

static unsigned long n_table;

static void table_checks(void)
{
    for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++) {
        svj_error err;
        err.message[0] = '\0';
        const char *in = refusals[i].in;
        int rc;
        if (refusals[i].filter) {
            Slimvec__V1__Filter *f = NULL;
            rc = svj_filter_from_json(in, strlen(in), &f, &err);
            svj_filter_free(f);
        } else {
            Slimvec__V1__Payload *p = NULL;
            rc = svj_payload_from_json(in, strlen(in), 1, &p, &err);
            svj_payload_free(p);
        }
        int want_ok = refusals[i].want == NULL;
        if ((rc == 0) != want_ok || (!want_ok && !strstr(err.message, refusals[i].want))) {
            fprintf(stderr, "fuzz_clijson: %s \"%s\": %s \"%s\", want %s \"%s\"\n",
                    refusals[i].filter ? "filter" : "payload", in, rc == 0 ? "accepted" : "refused",
                    err.message, want_ok ? "accepted" : "refused with", want_ok ? "" : refusals[i].want);
            exit(1);
        }
        n_table++;
    }
    /* The int64 edges: 2^63 - 1 is kept; -2^63 is refused with the values
     * json-c saturates to it. */
    Slimvec__V1__Payload *p = NULL;
    svj_error err;
    const char *edge = "{\"a\": 9223372036854775807, \"b\": -9223372036854775807}";
    check(svj_payload_from_json(edge, strlen(edge), 1, &p, &err) == 0 &&
              p->fields[0]->value->int_value == INT64_MAX && p->fields[1]->value->int_value == -INT64_MAX,
          "the int64 edges");
    svj_payload_free(p);
    const char *neg = "{\"a\": -9223372036854775808}";
    check(svj_payload_from_json(neg, strlen(neg), 1, &p, &err) != 0, "-2^63 is refused");
    n_table += 2;
}

/* svl_read_text and svl_lines_open on real files. */
static void file_checks(void)
{
    char dir[] = "/tmp/fuzz_clijson_XXXXXX", path[256];
    if (!mkdtemp(dir))
        die("mkdtemp", NULL);
    snprintf(path, sizeof path, "%s/f.json", dir);
    svl_error err;
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "wb");
    if (!f || fputs(filter_seeds[1], f) == EOF || fclose(f) != 0)
        die(path, NULL);
    check(svl_read_text(path, 1000, &text, &len, &err) == 0 && len == strlen(filter_seeds[1]) &&
              strcmp(text, filter_seeds[1]) == 0,
          "svl_read_text reads the file");
    free(text);
    check(svl_read_text(path, 10, &text, &len, &err) != 0 && text == NULL && strstr(err.message, "more than 10 bytes"),
          "svl_read_text refuses a file over the limit");
    f = fopen(path, "wb");
    if (!f || fwrite("{\0}", 1, 3, f) != 3 || fclose(f) != 0)
        die(path, NULL);
    check(svl_read_text(path, 1000, &text, &len, &err) != 0 && strstr(err.message, "a NUL byte at offset 1"),
          "svl_read_text refuses a NUL byte");
    svl_lines r;
    check(svl_lines_open(&r, dir, 100, &err) != 0 && strstr(err.message, "not a regular file"),
          "svl_lines_open refuses a directory");
    svl_lines_close(&r);
    remove(path);
    check(svl_read_text(path, 1000, &text, &len, &err) != 0 && strstr(err.message, "cannot open"),
          "svl_read_text of a missing file");
    if (rmdir(dir) != 0)
        die(dir, NULL);
    n_table += 5;
}

/* ---- mutations ---------------------------------------------------------- */

#define FUZZ_MAX_INPUT 4096

static const char *const tokens[] = {
    "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "\\", "\\u0000", "\\u00e9", "\\ud800", "null", "true",
    "1e999", "-0", "0.5", "99999999999999999999", "-9223372036854775808", "9223372036854775807", "NaN",
    "\"key\":", "\"match\":", "\"match_any\":", "\"range\":", "\"gt\":", "\"lte\":", "\"has_id\":",
    "\"is_empty\":", "\"filter\":", "\"must\":", "\"should\":", "\"must_not\":", "{\"filter\":{\"must\":[",
    "[[[[", "\xff", "\xc3\xa9", "\r\n",
};

static void insert_bytes(uint8_t *b, size_t *len, size_t pos, const char *s)
{
    size_t n = strlen(s);
    if (pos > *len || *len + n > FUZZ_MAX_INPUT)
        return;
    memmove(b + pos + n, b + pos, *len - pos);
    memcpy(b + pos, s, n);
    *len += n;
}

static void mutate_once(uint8_t *b, size_t *lenp)
{
    size_t len = *lenp;
    size_t pos = len ? fu_below((uint32_t)len) : 0;
    switch (fu_below(8)) {
    case 0: /* bit flip */
        if (len)
            b[pos] ^= (uint8_t)(1u << fu_below(8));
        break;
    case 1: /* a byte to a JSON-ish or random one */
        if (len) {
            static const char bytes[] = "{}[]\":,0123456789-+.eE \\tfnu";
            b[pos] = fu_below(2) ? (uint8_t)bytes[fu_below(sizeof bytes - 1)] : (uint8_t)fu_next();
        }
        break;
    case 2: /* truncation */
        if (len)
            len = fu_below((uint32_t)len);
        break;
    case 3:
        fu_insert_random(b, &len, FUZZ_MAX_INPUT, pos, 8);
        break;
    case 4:
        fu_delete_chunk(b, &len, pos, 16);
        break;
    case 5:
    case 6: /* a token (most mutations keep the text JSON-like) */
        insert_bytes(b, &len, pos, tokens[fu_below(sizeof tokens / sizeof *tokens)]);
        break;
    default: /* duplicate a chunk (deeper nesting, longer lists) */
        if (len) {
            size_t n = 1 + fu_below(32);
            if (pos + n > len)
                n = len - pos;
            if (len + n <= FUZZ_MAX_INPUT) {
                memmove(b + pos + n, b + pos, len - pos);
                len += n;
            }
        }
        break;
    }
    *lenp = len;
}

int main(int argc, char **argv)
{
    const char *corpus = NULL;
    long rounds = 0;
    fu_args("fuzz_clijson", argc, argv, &rounds, &corpus);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    size_t np = sizeof payload_seeds / sizeof *payload_seeds, nf = sizeof filter_seeds / sizeof *filter_seeds;
    size_t n_seeds = np + nf;
    uint8_t *in = malloc(FUZZ_MAX_INPUT);
    if (!in)
        abort();

    /* Every valid seed is accepted as what it is: otherwise they test nothing. */
    for (size_t i = 0; i < n_seeds; i++) {
        const char *s = i < np ? payload_seeds[i] : filter_seeds[i - np];
        if (corpus) {
            fu_write_input("fuzz_clijson", corpus, i, (const uint8_t *)s, strlen(s));
            continue;
        }
        if (!(run_one((const uint8_t *)s, strlen(s)) & (i < np ? 1u : 2u))) {
            fprintf(stderr, "fuzz_clijson: valid seed %zu refused: %s\n", i, s);
            return 1;
        }
    }
    if (!corpus) {
        table_checks();
        file_checks();
    }

    unsigned long mutants = 0, mutants_ok[2] = {0, 0};
    for (long i = 0; i < rounds; i++) {
        size_t len;
        if (i % 16 == 15) {
            /* random bytes */
            len = fu_below(fu_below(2) ? 64 : 512);
            for (size_t k = 0; k < len; k++)
                in[k] = (uint8_t)fu_next();
        } else {
            size_t k = fu_below((uint32_t)n_seeds);
            const char *s = k < np ? payload_seeds[k] : filter_seeds[k - np];
            len = strlen(s);
            memcpy(in, s, len);
            if (i % 16 == 7) {
                /* a splice: a file of several seeds, one per line */
                for (int extra = 1 + (int)fu_below(4); extra > 0; extra--) {
                    const char *t = payload_seeds[fu_below((uint32_t)np)];
                    insert_bytes(in, &len, len, "\n");
                    insert_bytes(in, &len, len, t);
                }
            }
            int n_mut = 1 + (int)fu_below(fu_below(4) ? 2 : 8);
            for (int m = 0; m < n_mut; m++)
                mutate_once(in, &len);
            mutants++;
        }
        if (corpus) {
            fu_write_input("fuzz_clijson", corpus, n_seeds + (size_t)i, in, len);
            continue;
        }
        unsigned acc = run_one(in, len);
        mutants_ok[0] += acc & 1u;
        mutants_ok[1] += (acc >> 1) & 1u;
    }
    free(in);
    if (corpus) {
        printf("fuzz_clijson: wrote %zu seeds and %ld mutants to %s\n", n_seeds, rounds, corpus);
        return 0;
    }
    printf("fuzz_clijson: %ld inputs (+%zu valid seeds, %lu table and file checks), no crash, %.1f s CPU\n",
           rounds, n_seeds, n_table, (double)clock() / CLOCKS_PER_SEC - t0);
    printf("  payloads accepted %lu refused %lu; filters accepted %lu refused %lu; %lu lines read\n",
           n_payload_ok, n_payload_bad, n_filter_ok, n_filter_bad, n_lines);
    printf("  inputs accepted as a payload %lu, as a filter %lu (of %lu mutants and %ld random)\n",
           mutants_ok[0], mutants_ok[1], mutants, rounds - (long)mutants);
    if (rounds >= 1000 && (mutants_ok[0] == 0 || mutants_ok[1] == 0)) {
        fprintf(stderr, "fuzz_clijson: no mutated payload or filter was ever accepted: "
                        "the inputs never got past the parser\n");
        return 1;
    }
    return 0;
}
#endif
