/*
 * Payloads and filters (core/payload): the dictionary; set, patch, clear,
 * move and read back; every refusal changes nothing, out of memory at any
 * allocation included; bytes per vector by the tally; filters against a
 * brute-force oracle over random payloads and random filter trees.
 */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "filter.h"
#include "payload.h"
#include "testutil.h"

static uint64_t rng_state = 42;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t below(uint32_t n)
{
    return (uint32_t)(rnd() % n);
}

START_TEST(test_dict)
{
    sv_tally t = {0};
    sv_dict *d = sv_dict_create(sv_allocator_default(), &t);
    ck_assert_ptr_nonnull(d);
    uint32_t a, b, a2;
    ck_assert_int_eq(sv_dict_intern(d, "cat", 3, &a), SV_OK);
    ck_assert_int_eq(sv_dict_intern(d, "dog", 3, &b), SV_OK);
    ck_assert_int_eq(sv_dict_intern(d, "cat", 3, &a2), SV_OK);
    ck_assert_uint_eq(a, a2);
    ck_assert_uint_ne(a, b);
    ck_assert_str_eq(sv_dict_str(d, a), "cat");
    ck_assert_uint_eq(sv_dict_find(d, "dog", 3), b);
    ck_assert_uint_eq(sv_dict_find(d, "do", 2), 0);
    sv_dict_unref(d, a);
    ck_assert_uint_eq(sv_dict_find(d, "cat", 3), a); /* one use left */
    sv_dict_unref(d, a);
    ck_assert_uint_eq(sv_dict_find(d, "cat", 3), 0);
    ck_assert_uint_eq(sv_dict_count(d), 1);
    /* Many strings in and out: codes come back, the table stays right. */
    char s[32];
    uint32_t codes[5000];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5000; i++) {
            int n = snprintf(s, sizeof s, "v-%d-%d", round, i);
            ck_assert_int_eq(sv_dict_intern(d, s, (size_t)n, &codes[i]), SV_OK);
        }
        ck_assert_uint_eq(sv_dict_count(d), 5001);
        for (int i = 0; i < 5000; i++) {
            int n = snprintf(s, sizeof s, "v-%d-%d", round, i);
            ck_assert_uint_eq(sv_dict_find(d, s, (size_t)n), codes[i]);
            sv_dict_unref(d, codes[i]);
        }
        ck_assert_uint_eq(sv_dict_count(d), 1);
        ck_assert_uint_le(codes[4999], 5001); /* reused, not growing */
    }
    ck_assert_uint_eq(sv_dict_find(d, "dog", 3), b);
    sv_dict_free(d);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

static sv_pv_field fs(const char *k, const char *v)
{
    return (sv_pv_field){.key = k, .type = SV_PV_STRING, .s = v};
}

static sv_pv_field fi(const char *k, int64_t v)
{
    return (sv_pv_field){.key = k, .type = SV_PV_INT, .i = v};
}

static sv_pv_field fd(const char *k, double v)
{
    return (sv_pv_field){.key = k, .type = SV_PV_DOUBLE, .d = v};
}

static sv_pv_field fb(const char *k, int v)
{
    return (sv_pv_field){.key = k, .type = SV_PV_BOOL, .b = v};
}

/* The slot's payload as text, keys sorted: "k=v;..." (for comparisons). */
static void render(const sv_payloads *p, uint32_t slot, char *out, size_t cap)
{
    static _Alignas(16) unsigned char buf[1 << 16];
    sv_payload pl;
    size_t need = sv_payloads_copy(p, slot, buf, sizeof buf, &pl);
    ck_assert_uint_le(need, sizeof buf);
    char parts[SV_PAYLOAD_FIELDS_MAX][512];
    for (uint32_t i = 0; i < pl.n; i++) {
        const sv_pv_field *f = &pl.fields[i];
        int n = snprintf(parts[i], sizeof parts[i], "%s=", f->key);
        switch (f->type) {
        case SV_PV_STRING: snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "s:%s", f->s); break;
        case SV_PV_INT: snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "i:%" PRId64, f->i); break;
        case SV_PV_DOUBLE: snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "d:%.17g", f->d); break;
        case SV_PV_BOOL: snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "b:%d", f->b); break;
        case SV_PV_STRINGS:
            n += snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "ss:");
            for (uint32_t j = 0; j < f->n; j++)
                n += snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "%s,", f->ss[j]);
            break;
        case SV_PV_INTS:
            n += snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "is:");
            for (uint32_t j = 0; j < f->n; j++)
                n += snprintf(parts[i] + n, sizeof parts[i] - (size_t)n, "%" PRId64 ",", f->is[j]);
            break;
        default: ck_abort_msg("type %d", f->type);
        }
    }
    qsort(parts, pl.n, sizeof parts[0], (int (*)(const void *, const void *))strcmp);
    out[0] = '\0';
    for (uint32_t i = 0; i < pl.n; i++) {
        strncat(out, parts[i], cap - strlen(out) - 1);
        strncat(out, ";", cap - strlen(out) - 1);
    }
}

START_TEST(test_payload_set_get)
{
    sv_tally t = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    const char *tags[3] = {"red", "big", "red"};
    int64_t nums[2] = {-5, INT64_MAX};
    sv_pv_field f1[] = {fs("label", "shirt"), fi("n", 7), fd("x", 0.25), fb("ok", 1),
                        {.key = "tags", .type = SV_PV_STRINGS, .ss = tags, .n = 3},
                        {.key = "nums", .type = SV_PV_INTS, .is = nums, .n = 2}};
    sv_payload pl = {f1, 6};
    ck_assert_msg(sv_payloads_set(p, 5000, &pl, SV_PAYLOAD_REPLACE, &err) == SV_OK, "%s", err.message);
    char text[1024];
    render(p, 5000, text, sizeof text);
    ck_assert_str_eq(text, "label=s:shirt;n=i:7;nums=is:-5,9223372036854775807,;ok=b:1;tags=ss:red,big,red,;x=d:0.25;");
    ck_assert(sv_payloads_has(p, 5000));
    ck_assert(!sv_payloads_has(p, 4999));
    /* Patch: one changed, one added, the rest kept. */
    sv_pv_field f2[] = {fi("n", 8), fs("extra", "e")};
    sv_payload p2 = {f2, 2};
    ck_assert_int_eq(sv_payloads_set(p, 5000, &p2, SV_PAYLOAD_PATCH, &err), SV_OK);
    render(p, 5000, text, sizeof text);
    ck_assert_str_eq(text,
                     "extra=s:e;label=s:shirt;n=i:8;nums=is:-5,9223372036854775807,;ok=b:1;tags=ss:red,big,red,;x=d:0.25;");
    /* Replace: exactly these. */
    ck_assert_int_eq(sv_payloads_set(p, 5000, &p2, SV_PAYLOAD_REPLACE, &err), SV_OK);
    render(p, 5000, text, sizeof text);
    ck_assert_str_eq(text, "extra=s:e;n=i:8;");
    sv_payload_stats st;
    sv_payloads_get_stats(p, &st);
    ck_assert_uint_eq(st.strings, 1); /* "shirt", "red", "big" went with their last use */
    ck_assert_uint_eq(st.slots_with_payload, 1);
    /* Move (compaction) and clear. */
    ck_assert_int_eq(sv_payloads_move(p, 5000, 3), SV_OK);
    ck_assert(!sv_payloads_has(p, 5000));
    render(p, 3, text, sizeof text);
    ck_assert_str_eq(text, "extra=s:e;n=i:8;");
    sv_payloads_clear(p, 3);
    ck_assert(!sv_payloads_has(p, 3));
    sv_payloads_get_stats(p, &st);
    ck_assert_uint_eq(st.strings, 0);
    ck_assert_uint_eq(st.slots_with_payload, 0);
    /* A key that holds no value any more may take another type. */
    sv_pv_field f3[] = {fs("n", "now a string")};
    sv_payload p3 = {f3, 1};
    ck_assert_int_eq(sv_payloads_set(p, 1, &p3, SV_PAYLOAD_REPLACE, &err), SV_OK);
    sv_pv_type ty;
    sv_payloads_key(p, (uint32_t)sv_payloads_key_index(p, "n"), &ty);
    ck_assert_int_eq(ty, SV_PV_STRING);
    sv_payloads_free(p);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* Each refusal: INVALID_ARGUMENT with a message, and nothing changed. */
START_TEST(test_payload_refusals)
{
    sv_tally t = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    sv_pv_field base[] = {fs("label", "a"), fi("n", 1)};
    sv_payload pl = {base, 2};
    ck_assert_int_eq(sv_payloads_set(p, 0, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    char before[256], after[256];
    render(p, 0, before, sizeof before);
    long long bytes = sv_tally_get(&t);

    static char longs[SV_PAYLOAD_STRING_MAX + 2];
    memset(longs, 'x', sizeof longs - 1);
    static char longk[SV_PAYLOAD_KEY_MAX + 2];
    memset(longk, 'k', sizeof longk - 1);
    const char *one[1] = {"x"};
    static const int64_t many_ints[SV_PAYLOAD_LIST_MAX + 1];
    struct {
        sv_pv_field f[2];
        uint32_t n;
        const char *want;
    } cases[] = {
        {{fs("n", "text")}, 1, "a string, but the key holds int64 values"},
        {{fi("label", 3)}, 1, "a int64, but the key holds string values"},
        {{fs("label", longs)}, 1, "longer than"},
        {{fs(longk, "v")}, 1, "a key must be"},
        {{fs("", "v")}, 1, "a key must be"},
        {{fs("bad", "\xc3\x28")}, 1, "not valid UTF-8"},
        {{fs("\xff", "v")}, 1, "not valid UTF-8"},
        {{fd("x", NAN)}, 1, "finite"},
        {{fd("x", INFINITY)}, 1, "finite"},
        {{fb("ok", 2)}, 1, "0 or 1"},
        {{fi("n", 2), fi("n", 3)}, 2, "given twice"},
        {{{.key = "ints", .type = SV_PV_INTS, .is = many_ints, .n = SV_PAYLOAD_LIST_MAX + 1}}, 1, "items"},
        {{{.key = "strs", .type = SV_PV_STRINGS, .ss = one, .n = 2}}, 1, ""}, /* not run: reads past */
        {{{.key = "t", .type = (sv_pv_type)99}}, 1, "unknown value type"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].f[0].type == SV_PV_STRINGS)
            continue;
        sv_payload bad = {cases[i].f, cases[i].n};
        for (int mode = 0; mode < 2; mode++) {
            ck_assert_int_eq(sv_payloads_set(p, 0, &bad, (sv_payload_mode)mode, &err), SV_ERR_INVALID_ARGUMENT);
            ck_assert_msg(strstr(err.message, cases[i].want) != NULL, "case %zu: %s", i, err.message);
            render(p, 0, after, sizeof after);
            ck_assert_str_eq(before, after);
        }
    }
    /* Over SV_PAYLOAD_BYTES_MAX encoded (a list of 256 strings of 1 KB). */
    static char kb[SV_PAYLOAD_STRING_MAX + 1];
    memset(kb, 'y', SV_PAYLOAD_STRING_MAX);
    static const char *many[SV_PAYLOAD_LIST_MAX];
    for (int i = 0; i < SV_PAYLOAD_LIST_MAX; i++)
        many[i] = kb;
    sv_pv_field huge = {.key = "big", .type = SV_PV_STRINGS, .ss = many, .n = SV_PAYLOAD_LIST_MAX};
    sv_payload hp = {&huge, 1};
    ck_assert_int_eq(sv_payloads_set(p, 0, &hp, SV_PAYLOAD_PATCH, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "bytes (at most 65536)") != NULL, "%s", err.message);
    render(p, 0, after, sizeof after);
    ck_assert_str_eq(before, after);
    /* Too many fields in one payload. */
    sv_pv_field lots[SV_PAYLOAD_FIELDS_MAX + 1];
    static char names[SV_PAYLOAD_FIELDS_MAX + 1][8];
    for (int i = 0; i <= SV_PAYLOAD_FIELDS_MAX; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        lots[i] = fi(names[i], i);
    }
    sv_payload big = {lots, SV_PAYLOAD_FIELDS_MAX + 1};
    ck_assert_int_eq(sv_payloads_set(p, 0, &big, SV_PAYLOAD_PATCH, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "fields"));
    /* A batch whose items disagree on a new key's type. */
    sv_pv_field b1[] = {fi("fresh", 1)}, b2[] = {fs("fresh", "one")};
    sv_payload batch[2] = {{b1, 1}, {b2, 1}};
    ck_assert_int_eq(sv_payloads_check(p, batch, 2, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err.message, "payload 1, key \"fresh\"") != NULL, "%s", err.message);
    render(p, 0, after, sizeof after);
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(sv_tally_get(&t), bytes);
    sv_payloads_free(p);
}
END_TEST

/* A set held between prepare and commit (the durable layer logs it then)
 * while a delete empties the chunk the plan points at: the chunk stays
 * until the plan ends (run under ASan: no use after free). */
START_TEST(test_payload_plan_survives_clears)
{
    sv_tally t = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    sv_pv_field five = fi("tag", 5), seven = fi("tag", 7), nine = fi("tag", 9);
    sv_payload p5 = {&five, 1}, p7 = {&seven, 1}, p9 = {&nine, 1};
    ck_assert_int_eq(sv_payloads_set(p, 5, &p5, SV_PAYLOAD_REPLACE, &err), SV_OK);
    long long base = sv_tally_get(&t);
    sv_payload_plan plan;
    ck_assert_int_eq(sv_payloads_prepare(p, 7, &p7, SV_PAYLOAD_PATCH, &plan, &err), SV_OK);
    sv_payloads_clear(p, 5); /* the chunk's last value: it stays, the plan holds it */
    sv_payloads_commit(p, &plan);
    char text[64];
    render(p, 7, text, sizeof text);
    ck_assert_str_eq(text, "tag=i:7;");
    ck_assert(!sv_payloads_has(p, 5));
    /* Cancel: the emptied chunk goes when the plan ends. */
    ck_assert_int_eq(sv_payloads_prepare(p, 9, &p9, SV_PAYLOAD_PATCH, &plan, &err), SV_OK);
    sv_payloads_clear(p, 7);
    sv_payloads_cancel(p, &plan);
    ck_assert(!sv_payloads_has(p, 9));
    ck_assert_int_lt(sv_tally_get(&t), base); /* the chunk went */
    /* The key holds no value: free for another type again. */
    sv_pv_field s9 = fs("tag", "nine");
    sv_payload ps9 = {&s9, 1};
    ck_assert_int_eq(sv_payloads_set(p, 9, &ps9, SV_PAYLOAD_REPLACE, &err), SV_OK);
    render(p, 9, text, sizeof text);
    ck_assert_str_eq(text, "tag=s:nine;");
    sv_payloads_free(p);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* An allocator that fails its k-th allocation. */
static _Atomic long countdown = -1;

static void *f_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (atomic_fetch_sub(&countdown, 1) == 0)
        return NULL;
    return malloc(n);
}

static void *f_realloc(void *ctx, void *q, size_t n)
{
    (void)ctx;
    if (atomic_fetch_sub(&countdown, 1) == 0)
        return NULL;
    return realloc(q, n);
}

static void f_free(void *ctx, void *q)
{
    (void)ctx;
    free(q);
}

static const sv_allocator failing = {f_alloc, f_realloc, f_free, NULL, NULL};

/* Out of memory at each allocation of a set and of a move in turn: the
 * call fails and the store reads as before (and holds the same bytes). */
START_TEST(test_payload_out_of_memory)
{
    const char *tags[4] = {"t1", "t2", "t3", "t4"};
    int64_t nums[3] = {1, 2, 3};
    sv_pv_field first[] = {fs("label", "a"), fi("n", 1), fb("ok", 0)};
    sv_pv_field second[] = {fs("label", "new label"), fi("n", 2), fs("brand", "b"), fd("x", 1.5),
                            {.key = "tags", .type = SV_PV_STRINGS, .ss = tags, .n = 4},
                            {.key = "nums", .type = SV_PV_INTS, .is = nums, .n = 3}};
    int set_done = 0, move_done = 0;
    for (long k = 0; (!set_done || !move_done) && k < 200; k++) {
        atomic_store(&countdown, -1);
        sv_tally t = {0};
        sv_payloads *p = sv_payloads_create(&failing, &t);
        ck_assert_ptr_nonnull(p);
        sv_error err;
        sv_payload a = {first, 3}, b = {second, 6};
        ck_assert_int_eq(sv_payloads_set(p, 7, &a, SV_PAYLOAD_REPLACE, &err), SV_OK);
        char before[1024], after[1024];
        render(p, 7, before, sizeof before);
        long long bytes = sv_tally_get(&t);
        atomic_store(&countdown, k);
        sv_status st = sv_payloads_set(p, 7, &b, SV_PAYLOAD_PATCH, &err);
        long left = atomic_load(&countdown);
        atomic_store(&countdown, -1);
        if (st == SV_OK) {
            set_done = 1;
            ck_assert_int_ge(left, 0); /* it needed fewer than k + 1 allocations */
        } else {
            ck_assert_int_eq(st, SV_ERR_RESOURCE);
            render(p, 7, after, sizeof after);
            ck_assert_str_eq(before, after);
            ck_assert_uint_eq(sv_payloads_keys(p), 3); /* the new keys went again */
            /* Arrays may keep the capacity they grew to, nothing more. */
            ck_assert_int_le(sv_tally_get(&t) - bytes, 512);
        }
        /* A move to a slot in another chunk. */
        render(p, 7, before, sizeof before);
        atomic_store(&countdown, k);
        st = sv_payloads_move(p, 7, 7 + 3 * SV_PAYLOAD_CHUNK);
        atomic_store(&countdown, -1);
        if (st == SV_OK) {
            move_done = 1;
            render(p, 7 + 3 * SV_PAYLOAD_CHUNK, after, sizeof after);
            ck_assert(!sv_payloads_has(p, 7));
        } else {
            render(p, 7, after, sizeof after);
            ck_assert(!sv_payloads_has(p, 7 + 3 * SV_PAYLOAD_CHUNK));
        }
        ck_assert_str_eq(before, after);
        sv_payloads_free(p);
        ck_assert_int_eq(sv_tally_get(&t), 0);
    }
    ck_assert(set_done && move_done);
}
END_TEST

/* A class label (10 values) and an int per vector: bytes by the tally. */
/* Indexed keys under allocation failures: whatever fails (a set, an
 * index's append, merge or rebuild), the filters answer exactly. */
static int64_t oom_n[2000];
static int oom_has[2000];

static void oom_check(sv_payloads *p, uint32_t n_slots)
{
    sv_tally scratch = {0};
    uint64_t bits[2000 / 64 + 1];
    for (int64_t want = 0; want < 50; want += 7) {
        sv_cond c = {.kind = SV_COND_MATCH, .key = "n", .value = {.type = SV_PV_INT, .i = want}};
        sv_filter f = {.must = &c, .n_must = 1};
        ck_assert_int_eq(sv_filter_eval(p, &f, n_slots, NULL, NULL, NULL, sv_allocator_default(), &scratch, bits),
                         SV_OK);
        for (uint32_t s = 0; s < n_slots; s++)
            ck_assert_msg(((bits[s / 64] >> (s % 64)) & 1) == (uint64_t)(oom_has[s] && oom_n[s] == want),
                          "slot %u, n == %lld", s, (long long)want);
    }
}

START_TEST(test_index_out_of_memory)
{
    int clean = 0;
    for (long k = 0; !clean && k < 300; k++) {
        atomic_store(&countdown, -1);
        sv_tally t = {0};
        sv_payloads *p = sv_payloads_create(&failing, &t);
        sv_error err;
        ck_assert_int_eq(sv_payloads_index_key(p, "n", &err), SV_OK);
        memset(oom_has, 0, sizeof oom_has);
        for (uint32_t s = 0; s < 1500; s++) {
            sv_pv_field f = fi("n", (int64_t)(s % 50));
            sv_payload pl = {&f, 1};
            ck_assert_int_eq(sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
            oom_n[s] = s % 50;
            oom_has[s] = 1;
        }
        /* Under pressure: new slots, changed values, cleared ones. */
        atomic_store(&countdown, k);
        long before = k;
        for (uint32_t i = 0; i < 400; i++) {
            uint32_t s = (i * 37) % 1900;
            if (i % 5 == 4) {
                sv_payloads_clear(p, s);
                oom_has[s] = 0;
                continue;
            }
            sv_pv_field f = fi("n", (int64_t)((s + i) % 50));
            sv_payload pl = {&f, 1};
            if (sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err) == SV_OK) {
                oom_n[s] = (s + i) % 50;
                oom_has[s] = 1;
            }
        }
        long left = atomic_load(&countdown);
        atomic_store(&countdown, -1);
        clean = left >= 0 && before == k; /* no allocation failed */
        oom_check(p, 1900);
        /* The next write (no failure now) brings an out-of-date index back. */
        sv_pv_field f = fi("n", 7);
        sv_payload pl = {&f, 1};
        ck_assert_int_eq(sv_payloads_set(p, 1950, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
        oom_n[1950] = 7;
        oom_has[1950] = 1;
        oom_check(p, 2000);
        sv_payloads_free(p);
        ck_assert_int_eq(sv_tally_get(&t), 0);
    }
    ck_assert_msg(clean, "the writes kept failing");
}
END_TEST

START_TEST(test_payload_bytes_per_vector)
{
    sv_tally t = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    static const char *labels[10] = {"T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                                     "Sandal",  "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    enum { N = 60000 };
    sv_error err;
    for (uint32_t s = 0; s < N; s++) {
        sv_pv_field f[] = {fs("class", labels[s % 10]), fi("rank", (int64_t)(rnd() % 1000000))};
        sv_payload pl = {f, 2};
        ck_assert_int_eq(sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    }
    double per = (double)sv_tally_get(&t) / N;
    printf("payload: class label + int64: %.2f bytes/vector by the tally\n", per);
    ck_assert_double_le(per, 14.0);
    sv_payloads_free(p);
}
END_TEST

/* ---- filters against an oracle ---------------------------------------------------------------------- */

enum { NS = 3000, NK = 7 };
static const char *const KEYS[NK] = {"label", "n", "x", "flag", "tags", "nums", "rare"};
static const sv_pv_type TYPES[NK] = {SV_PV_STRING, SV_PV_INT, SV_PV_DOUBLE, SV_PV_BOOL,
                                     SV_PV_STRINGS, SV_PV_INTS, SV_PV_STRING};
static const char *const WORDS[10] = {"a", "b", "c", "d", "e", "f", "g", "h", "zz-none", "\xc3\xa9t\xc3\xa9"};

/* The test's own copy of each slot's payload. */
typedef struct mslot {
    int has[NK];
    const char *s[NK]; /* label, rare */
    int64_t i;
    double d;
    int b;
    uint32_t nl[NK];
    const char *ss[4];
    int64_t is[4];
    int live;
} mslot;

static mslot model[NS];

static void random_payload(mslot *m, sv_pv_field *f, uint32_t *n)
{
    memset(m, 0, sizeof *m);
    *n = 0;
    for (int k = 0; k < NK; k++) {
        if (below(10) < (k == 6 ? 1u : 7u))
            continue; /* absent (rare mostly) */
        m->has[k] = 1;
        sv_pv_field *x = &f[(*n)++];
        memset(x, 0, sizeof *x);
        x->key = KEYS[k];
        x->type = TYPES[k];
        switch (k) {
        case 0:
        case 6: x->s = m->s[k] = WORDS[below(8)]; break;
        case 1: x->i = m->i = (int64_t)below(41) - 20; break;
        case 2: x->d = m->d = ((double)below(2001) - 1000.0) / 100.0; break;
        case 3: x->b = m->b = (int)below(2); break;
        case 4:
            m->nl[k] = below(5);
            for (uint32_t j = 0; j < m->nl[k]; j++)
                m->ss[j] = WORDS[below(8)];
            x->ss = m->ss;
            x->n = m->nl[k];
            break;
        case 5:
            m->nl[k] = below(5);
            for (uint32_t j = 0; j < m->nl[k]; j++)
                m->is[j] = (int64_t)below(11) - 5;
            x->is = m->is;
            x->n = m->nl[k];
            break;
        }
    }
}

/* A random condition tree (its storage in a pool). */
typedef struct pool {
    sv_cond conds[512];
    sv_filter filters[128];
    sv_pv_field vals[1024];
    const char *ids[256];
    char idtext[256][16];
    uint32_t nc, nf, nv, ni;
} pool;

static void random_filter(pool *pl, sv_filter *f, int depth);

static void random_cond(pool *pl, sv_cond *c, int depth)
{
    memset(c, 0, sizeof *c);
    uint32_t kind = below(depth < 2 ? 6 : 5) + 1; /* FILTER only above depth 2 */
    int k = (int)below(NK);
    c->key = KEYS[k];
    switch (kind) {
    case SV_COND_MATCH:
    case SV_COND_MATCH_ANY:
        if (TYPES[k] == SV_PV_DOUBLE)
            k = 1;
        c->key = KEYS[k];
        c->kind = TYPES[k] == SV_PV_BOOL ? SV_COND_MATCH : (sv_cond_kind)kind;
        if (c->kind == SV_COND_MATCH) {
            c->value.type = TYPES[k] == SV_PV_STRINGS ? SV_PV_STRING : TYPES[k] == SV_PV_INTS ? SV_PV_INT : TYPES[k];
            c->value.s = WORDS[below(10)];
            c->value.i = (int64_t)below(41) - 20;
            c->value.b = (int)below(2);
        } else {
            c->n_any = 1 + below(3);
            c->any = &pl->vals[pl->nv];
            for (uint32_t j = 0; j < c->n_any; j++) {
                sv_pv_field *v = &pl->vals[pl->nv++];
                memset(v, 0, sizeof *v);
                v->type = TYPES[k] == SV_PV_STRING || TYPES[k] == SV_PV_STRINGS ? SV_PV_STRING : SV_PV_INT;
                v->s = WORDS[below(10)];
                v->i = (int64_t)below(41) - 20;
            }
        }
        break;
    case SV_COND_RANGE: {
        static const int num[3] = {1, 2, 5};
        k = num[below(3)];
        c->key = KEYS[k];
        c->kind = SV_COND_RANGE;
        sv_bound *b[2] = {&c->lo, &c->hi};
        for (int j = 0; j < 2; j++) {
            if (below(3) == 0 && !(j == 1 && !c->lo.set))
                continue;
            b[j]->set = 1;
            b[j]->inclusive = (int)below(2);
            b[j]->is_int = (int)below(2);
            b[j]->i = (int64_t)below(41) - 20;
            b[j]->d = ((double)below(4001) - 2000.0) / 100.0;
        }
        break;
    }
    case SV_COND_HAS_ID:
        c->kind = SV_COND_HAS_ID;
        c->n_ids = 1 + below(4);
        c->ids = &pl->ids[pl->ni];
        for (uint32_t j = 0; j < c->n_ids; j++) {
            snprintf(pl->idtext[pl->ni], sizeof pl->idtext[0], "id%u", below(NS + 50));
            pl->ids[pl->ni] = pl->idtext[pl->ni];
            pl->ni++;
        }
        break;
    case SV_COND_IS_EMPTY: c->kind = SV_COND_IS_EMPTY; break;
    default: {
        c->kind = SV_COND_FILTER;
        sv_filter *sub = &pl->filters[pl->nf++];
        random_filter(pl, sub, depth + 1);
        c->sub = sub;
    }
    }
}

static void random_filter(pool *pl, sv_filter *f, int depth)
{
    memset(f, 0, sizeof *f);
    uint32_t *counts[3] = {&f->n_must, &f->n_should, &f->n_must_not};
    const sv_cond **lists[3] = {&f->must, &f->should, &f->must_not};
    for (int l = 0; l < 3; l++) {
        *counts[l] = below(3);
        *lists[l] = &pl->conds[pl->nc];
        sv_cond *cs = &pl->conds[pl->nc];
        pl->nc += *counts[l];
        for (uint32_t j = 0; j < *counts[l]; j++)
            random_cond(pl, &cs[j], depth);
    }
}

static int in_range(long double v, const sv_cond *c)
{
    const sv_bound *lo = &c->lo, *hi = &c->hi;
    if (lo->set) {
        long double x = lo->is_int ? (long double)lo->i : (long double)lo->d;
        if (lo->inclusive ? v < x : v <= x)
            return 0;
    }
    if (hi->set) {
        long double x = hi->is_int ? (long double)hi->i : (long double)hi->d;
        if (hi->inclusive ? v > x : v >= x)
            return 0;
    }
    return 1;
}

static int key_of(const char *key)
{
    for (int k = 0; k < NK; k++)
        if (!strcmp(KEYS[k], key))
            return k;
    ck_abort_msg("key %s", key);
    return -1;
}

static int oracle_filter(const mslot *m, uint32_t slot, const sv_filter *f);

static int str_eq_any(const char *s, const sv_cond *c)
{
    if (c->kind == SV_COND_MATCH)
        return !strcmp(s, c->value.s);
    for (uint32_t j = 0; j < c->n_any; j++)
        if (!strcmp(s, c->any[j].s))
            return 1;
    return 0;
}

static int int_eq_any(int64_t v, const sv_cond *c)
{
    if (c->kind == SV_COND_MATCH)
        return v == c->value.i;
    for (uint32_t j = 0; j < c->n_any; j++)
        if (v == c->any[j].i)
            return 1;
    return 0;
}

static int oracle_cond(const mslot *m, uint32_t slot, const sv_cond *c)
{
    if (c->kind == SV_COND_FILTER)
        return oracle_filter(m, slot, c->sub);
    if (c->kind == SV_COND_HAS_ID) {
        char id[16];
        snprintf(id, sizeof id, "id%u", slot);
        for (uint32_t j = 0; j < c->n_ids; j++)
            if (m->live && !strcmp(c->ids[j], id))
                return 1;
        return 0;
    }
    int k = key_of(c->key);
    if (c->kind == SV_COND_IS_EMPTY)
        return !m->has[k] || ((TYPES[k] == SV_PV_STRINGS || TYPES[k] == SV_PV_INTS) && m->nl[k] == 0);
    if (!m->has[k])
        return 0;
    switch (TYPES[k]) {
    case SV_PV_STRING: return str_eq_any(m->s[k], c);
    case SV_PV_INT: return c->kind == SV_COND_RANGE ? in_range((long double)m->i, c) : int_eq_any(m->i, c);
    case SV_PV_DOUBLE: return in_range((long double)m->d, c);
    case SV_PV_BOOL: return m->b == c->value.b;
    case SV_PV_STRINGS:
        for (uint32_t j = 0; j < m->nl[k]; j++)
            if (str_eq_any(m->ss[j], c))
                return 1;
        return 0;
    case SV_PV_INTS:
        for (uint32_t j = 0; j < m->nl[k]; j++)
            if (c->kind == SV_COND_RANGE ? in_range((long double)m->is[j], c) : int_eq_any(m->is[j], c))
                return 1;
        return 0;
    default: return 0;
    }
}

static int oracle_filter(const mslot *m, uint32_t slot, const sv_filter *f)
{
    for (uint32_t i = 0; i < f->n_must; i++)
        if (!oracle_cond(m, slot, &f->must[i]))
            return 0;
    if (f->n_should) {
        int any = 0;
        for (uint32_t i = 0; i < f->n_should && !any; i++)
            any = oracle_cond(m, slot, &f->should[i]);
        if (!any)
            return 0;
    }
    for (uint32_t i = 0; i < f->n_must_not; i++)
        if (oracle_cond(m, slot, &f->must_not[i]))
            return 0;
    return 1;
}

static int64_t id_slot(void *ctx, const char *id)
{
    (void)ctx;
    unsigned s;
    if (sscanf(id, "id%u", &s) != 1 || s >= NS || !model[s].live)
        return -1;
    return s;
}

/* The property below with the keys indexed: some before the payloads
 * come, the rest after; slots moved (a compaction) before the filters. */
static void index_keys(sv_payloads *p, int first, int last)
{
    sv_error err;
    for (int k = first; k <= last; k++)
        ck_assert_msg(sv_payloads_index_key(p, KEYS[k], &err) == SV_OK, "%s", err.message);
}

static void move_some(sv_payloads *p)
{
    for (int i = 0, moved = 0; i < 4 * NS && moved < 200; i++) {
        uint32_t from = below(NS), to = below(NS);
        if (!sv_payloads_has(p, from) || sv_payloads_has(p, to) || model[to].live)
            continue;
        ck_assert_int_eq(sv_payloads_move(p, from, to), SV_OK);
        model[to] = model[from];
        memset(&model[from], 0, sizeof model[from]);
        moved++;
    }
    sv_payloads_trim(p); /* what a compaction ends with: the indexes rebuilt */
}

static void filter_property(int indexed)
{
    sv_tally t = {0}, scratch = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    if (indexed)
        index_keys(p, 0, 1);
    /* Random payloads, then churn: replaced, patched, cleared. */
    for (uint32_t s = 0; s < NS; s++) {
        sv_pv_field f[NK];
        uint32_t n;
        random_payload(&model[s], f, &n);
        model[s].live = 1;
        sv_payload pl = {f, n};
        ck_assert_msg(sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err) == SV_OK, "%s", err.message);
    }
    for (int i = 0; i < NS / 3; i++) {
        uint32_t s = below(NS);
        if (below(4) == 0) {
            sv_payloads_clear(p, s);
            memset(&model[s], 0, sizeof model[s]);
            model[s].live = below(2);
            continue;
        }
        sv_pv_field f[NK];
        uint32_t n;
        random_payload(&model[s], f, &n);
        model[s].live = 1;
        sv_payload pl = {f, n};
        ck_assert_int_eq(sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
        if (indexed && i == NS / 6)
            index_keys(p, 2, NK - 1);
    }
    if (indexed)
        move_some(p);
    uint64_t *bits = calloc((NS + 63) / 64, sizeof *bits);
    static pool pl;
    long passed_total = 0;
    for (int round = 0; round < 400; round++) {
        memset(&pl, 0, sizeof pl);
        sv_filter f;
        random_filter(&pl, &f, 0);
        ck_assert_msg(sv_filter_check(p, &f, &err) == SV_OK, "round %d: %s", round, err.message);
        ck_assert_int_eq(sv_filter_eval(p, &f, NS, id_slot, NULL, NULL, sv_allocator_default(), &scratch, bits), SV_OK);
        /* And one slot at a time (what a search with few candidates asks). */
        sv_filter_probe *probe = NULL;
        ck_assert_int_eq(sv_filter_probe_create(p, &f, id_slot, NULL, sv_allocator_default(), &scratch, &probe), SV_OK);
        for (uint32_t s = 0; s < NS; s++) {
            int got = (int)(bits[s / 64] >> (s % 64) & 1), want = oracle_filter(&model[s], s, &f);
            ck_assert_msg(got == want, "round %d, slot %u: filter says %d, oracle %d", round, s, got, want);
            ck_assert_msg(sv_filter_probe_pass(probe, s) == want, "round %d, slot %u: the probe says %d, oracle %d",
                          round, s, !want, want);
            passed_total += got;
        }
        sv_filter_probe_free(probe);
    }
    /* Neither all nor nothing on average: the filters were selective. */
    ck_assert_int_gt(passed_total, 400L * NS / 20);
    ck_assert_int_lt(passed_total, 400L * NS * 19 / 20);
    ck_assert_int_eq(sv_tally_get(&scratch), 0);
    free(bits);
    sv_payloads_free(p);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}

START_TEST(test_filter_property)
{
    filter_property(0);
}
END_TEST

START_TEST(test_filter_property_indexed)
{
    filter_property(1);
}
END_TEST

/* The probe and the bitmap at the edges the random trees do not reach:
 * int64 extremes with int and double bounds (2^63 exactly, +-1e19,
 * exclusive bounds at INT64_MIN/MAX), a key whose values all went and came
 * back as another type, slots past every chunk (is-empty, must-not). */
START_TEST(test_probe_edges)
{
    sv_tally t = {0}, scratch = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    const int64_t vals[6] = {INT64_MIN, INT64_MIN + 1, -1, 0, INT64_MAX - 1, INT64_MAX};
    for (uint32_t s = 0; s < 6; s++) {
        sv_pv_field f = fi("n", vals[s]);
        sv_payload pl = {&f, 1};
        ck_assert_int_eq(sv_payloads_set(p, s, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    }
    /* "k" holds ints, loses them all, then holds strings. */
    sv_pv_field ki = fi("k", 5);
    sv_payload kpl = {&ki, 1};
    ck_assert_int_eq(sv_payloads_set(p, 10, &kpl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    sv_payloads_clear(p, 10);
    sv_pv_field ks = fs("k", "five");
    kpl.fields = &ks;
    ck_assert_int_eq(sv_payloads_set(p, 11, &kpl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    ck_assert_int_eq(sv_payloads_index_key(p, "n", &err), SV_OK);
    const sv_bound none = {0};
    const sv_bound bounds[] = {
        {.set = 1, .is_int = 1, .i = INT64_MIN},
        {.set = 1, .inclusive = 1, .is_int = 1, .i = INT64_MIN},
        {.set = 1, .is_int = 1, .i = INT64_MAX},
        {.set = 1, .inclusive = 1, .is_int = 1, .i = INT64_MAX},
        {.set = 1, .d = 9223372036854775808.0},
        {.set = 1, .inclusive = 1, .d = -9223372036854775808.0},
        {.set = 1, .d = 1e19},
        {.set = 1, .d = -1e19},
        {.set = 1, .inclusive = 1, .d = -0.5},
        {.set = 1, .d = 0.0},
    };
    enum { NB = sizeof bounds / sizeof bounds[0], SLOTS = 3 * SV_PAYLOAD_CHUNK };
    uint64_t bits[SLOTS / 64];
    int checked = 0;
    for (int lo = -1; lo < (int)NB; lo++) {
        for (int hi = -1; hi < (int)NB; hi++) {
            if (lo < 0 && hi < 0)
                continue;
            sv_cond conds[4] = {
                {.kind = SV_COND_RANGE, .key = "n", .lo = lo < 0 ? none : bounds[lo], .hi = hi < 0 ? none : bounds[hi]},
                {.kind = SV_COND_MATCH, .key = "k", .value = {.type = SV_PV_STRING, .s = "five"}},
                {.kind = SV_COND_IS_EMPTY, .key = "k"},
                {.kind = SV_COND_MATCH, .key = "n", .value = {.type = SV_PV_INT, .i = INT64_MIN}},
            };
            sv_filter fs_[3] = {{.must = conds, .n_must = 1},
                                {.should = conds, .n_should = 2, .must_not = &conds[3], .n_must_not = 1},
                                {.must = &conds[2], .n_must = 1, .must_not = conds, .n_must_not = 1}};
            for (int w = 0; w < 3; w++) {
                ck_assert_int_eq(sv_filter_check(p, &fs_[w], &err), SV_OK);
                ck_assert_int_eq(sv_filter_eval(p, &fs_[w], SLOTS, NULL, NULL, NULL, sv_allocator_default(), &scratch,
                                                bits),
                                 SV_OK);
                sv_filter_probe *probe = NULL;
                ck_assert_int_eq(sv_filter_probe_create(p, &fs_[w], NULL, NULL, sv_allocator_default(), &scratch,
                                                        &probe),
                                 SV_OK);
                for (uint32_t s = 0; s < SLOTS; s++)
                    ck_assert_msg(sv_filter_probe_pass(probe, s) == (int)(bits[s / 64] >> (s % 64) & 1),
                                  "bounds %d..%d, filter %d, slot %u", lo, hi, w, s);
                sv_filter_probe_free(probe);
                checked++;
            }
        }
    }
    ck_assert_int_gt(checked, 300);
    ck_assert_int_eq(sv_tally_get(&scratch), 0);
    sv_payloads_free(p);
}
END_TEST

/* A filter prepared to be asked a slot at a time, out of memory at each
 * allocation in turn: refused with nothing held, or whole. */
START_TEST(test_probe_out_of_memory)
{
    sv_tally t = {0}, pt = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    sv_pv_field f[2] = {fs("label", "a"), fi("n", 3)};
    sv_payload pl = {f, 2};
    ck_assert_int_eq(sv_payloads_set(p, 5, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    sv_pv_field any[2] = {{.type = SV_PV_STRING, .s = "a"}, {.type = SV_PV_STRING, .s = "b"}};
    const char *ids[1] = {"id5"};
    sv_cond inner[2] = {{.kind = SV_COND_MATCH_ANY, .key = "label", .any = any, .n_any = 2},
                        {.kind = SV_COND_HAS_ID, .ids = ids, .n_ids = 1}};
    sv_filter sub = {.should = inner, .n_should = 2};
    sv_cond outer[2] = {{.kind = SV_COND_FILTER, .sub = &sub},
                        {.kind = SV_COND_RANGE, .key = "n", .lo = {.set = 1, .is_int = 1, .i = 1}}};
    sv_filter flt = {.must = outer, .n_must = 2};
    model[5].live = 1;
    int done = 0;
    for (long k = 0; !done && k < 50; k++) {
        sv_filter_probe *probe = NULL;
        atomic_store(&countdown, k);
        sv_status st = sv_filter_probe_create(p, &flt, id_slot, NULL, &failing, &pt, &probe);
        long left = atomic_load(&countdown);
        atomic_store(&countdown, -1);
        if (st == SV_OK) {
            ck_assert(sv_filter_probe_pass(probe, 5));
            ck_assert(!sv_filter_probe_pass(probe, 6));
            sv_filter_probe_free(probe);
            done = left >= 0;
        } else {
            ck_assert_int_eq(st, SV_ERR_RESOURCE);
            ck_assert_ptr_null(probe);
        }
        ck_assert_int_eq(sv_tally_get(&pt), 0);
    }
    ck_assert(done);
    model[5].live = 0;
    sv_payloads_free(p);
}
END_TEST

START_TEST(test_filter_refusals)
{
    sv_tally t = {0};
    sv_payloads *p = sv_payloads_create(sv_allocator_default(), &t);
    sv_error err;
    sv_pv_field f[] = {fs("label", "a"), fi("n", 1), fd("x", 2.0)};
    sv_payload pl = {f, 3};
    ck_assert_int_eq(sv_payloads_set(p, 0, &pl, SV_PAYLOAD_REPLACE, &err), SV_OK);
    struct {
        sv_cond c;
        const char *want;
    } cases[] = {
        {{.kind = SV_COND_MATCH, .key = "nope", .value = fs(NULL, "a")}, "must[0]: unknown key \"nope\""},
        {{.kind = SV_COND_MATCH, .key = "n", .value = fs(NULL, "a")}, "key \"n\" holds int64 values"},
        {{.kind = SV_COND_MATCH, .key = "x", .value = fi(NULL, 1)}, "key \"x\" holds double values"},
        {{.kind = SV_COND_RANGE, .key = "label", .lo = {1, 1, 1, 0, 0}}, "a range needs numbers"},
        {{.kind = SV_COND_RANGE, .key = "n"}, "a range needs a bound"},
        {{.kind = SV_COND_RANGE, .key = "x", .lo = {1, 1, 0, 0, NAN}}, "finite"},
        {{.kind = SV_COND_MATCH_ANY, .key = "label"}, "match any needs"},
        {{.kind = SV_COND_HAS_ID}, "has id needs"},
        {{.kind = SV_COND_IS_EMPTY, .key = NULL}, "needs a key"},
        {{.kind = SV_COND_FILTER}, "nested filter is missing"},
        {{.kind = (sv_cond_kind)42, .key = "n"}, "unknown condition kind"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sv_filter flt = {.must = &cases[i].c, .n_must = 1};
        ck_assert_int_eq(sv_filter_check(p, &flt, &err), SV_ERR_INVALID_ARGUMENT);
        ck_assert_msg(strstr(err.message, cases[i].want) != NULL, "case %zu: %s", i, err.message);
    }
    /* Nested too deep, and too many conditions. */
    sv_filter chain[SV_FILTER_DEPTH_MAX + 2];
    sv_cond links[SV_FILTER_DEPTH_MAX + 2];
    for (int i = 0; i < SV_FILTER_DEPTH_MAX + 2; i++) {
        links[i] = (sv_cond){.kind = SV_COND_FILTER, .sub = &chain[i + 1]};
        chain[i] = (sv_filter){.should = &links[i], .n_should = i < SV_FILTER_DEPTH_MAX + 1};
    }
    ck_assert_int_eq(sv_filter_check(p, &chain[0], &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "nested more than"));
    static sv_cond flat[SV_FILTER_CONDITIONS_MAX + 1];
    for (int i = 0; i <= SV_FILTER_CONDITIONS_MAX; i++)
        flat[i] = (sv_cond){.kind = SV_COND_IS_EMPTY, .key = "n"};
    sv_filter wide = {.must_not = flat, .n_must_not = SV_FILTER_CONDITIONS_MAX + 1};
    ck_assert_int_eq(sv_filter_check(p, &wide, &err), SV_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err.message, "more than"));
    sv_payloads_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("payload");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_dict);
    tcase_add_test(tc, test_payload_set_get);
    tcase_add_test(tc, test_payload_refusals);
    tcase_add_test(tc, test_payload_plan_survives_clears);
    tcase_add_test(tc, test_payload_out_of_memory);
    tcase_add_test(tc, test_payload_bytes_per_vector);
    tcase_add_test(tc, test_filter_property);
    tcase_add_test(tc, test_filter_property_indexed);
    tcase_add_test(tc, test_index_out_of_memory);
    tcase_add_test(tc, test_probe_out_of_memory);
    tcase_add_test(tc, test_probe_edges);
    tcase_add_test(tc, test_filter_refusals);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
