/*
 * Unit tests of the id map (core/idmap.h): number parsing, binding and
 * lookup of numeric and string ids, formatting, the free-number counter,
 * a large randomised insert/remove run (rehash and backward-shift delete),
 * slot reservation, the byte tally, out-of-memory behaviour through a
 * counting allocator that fails on demand, and hash flooding: ids chosen
 * against the old, predictable hash must cost what random ids cost.
 */
#include <check.h>

#include "testutil.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "idmap.h"

/* ---- a counting allocator ---------------------------------------------
 * Each block carries a header with its requested size, so the allocator
 * knows its own live bytes and the test can check that the map's tally
 * (which trusts the sizes the map passes to free) agrees exactly.
 * good_size rounds to a multiple of 48 so that growable arrays see slack
 * that is not a power of two. */

#define HDR 16

typedef struct counting {
    long calls;       /* alloc + realloc calls so far */
    long fail_after;  /* calls >= fail_after fail; -1 = never */
    long live_blocks;
    long long live_bytes; /* sum of good_size over live blocks */
} counting;

static size_t counting_good_size(void *ctx, size_t size)
{
    (void)ctx;
    return (size + 47) / 48 * 48;
}

static int counting_should_fail(counting *c)
{
    long n = c->calls++;
    return c->fail_after >= 0 && n >= c->fail_after;
}

static void *counting_alloc(void *ctx, size_t size)
{
    counting *c = ctx;
    if (counting_should_fail(c))
        return NULL;
    unsigned char *b = malloc(HDR + size);
    if (!b)
        return NULL;
    memcpy(b, &size, sizeof size);
    c->live_blocks++;
    c->live_bytes += (long long)counting_good_size(ctx, size);
    return b + HDR;
}

static void *counting_realloc(void *ctx, void *p, size_t size)
{
    counting *c = ctx;
    if (!p)
        return counting_alloc(ctx, size);
    if (counting_should_fail(c))
        return NULL;
    unsigned char *b = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, b, sizeof old);
    unsigned char *nb = realloc(b, HDR + size);
    if (!nb)
        return NULL;
    memcpy(nb, &size, sizeof size);
    c->live_bytes += (long long)counting_good_size(ctx, size) -
                     (long long)counting_good_size(ctx, old);
    return nb + HDR;
}

static void counting_free(void *ctx, void *p)
{
    counting *c = ctx;
    if (!p)
        return;
    unsigned char *b = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, b, sizeof old);
    c->live_blocks--;
    c->live_bytes -= (long long)counting_good_size(ctx, old);
    free(b);
}

static sv_allocator counting_allocator(counting *c)
{
    *c = (counting){.fail_after = -1};
    return (sv_allocator){.alloc = counting_alloc,
                          .realloc = counting_realloc,
                          .free = counting_free,
                          .good_size = counting_good_size,
                          .ctx = c};
}

/* ---- helpers ------------------------------------------------------------ */

/* Fixed-seed generator for reproducible runs. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int find_str(const sv_idmap *m, const char *id, uint32_t *slot)
{
    return sv_idmap_find(m, id, strlen(id), slot);
}

static sv_status insert_str(sv_idmap *m, const char *id, uint32_t slot)
{
    return sv_idmap_insert(m, id, strlen(id), slot);
}

static sv_idmap *new_map(sv_tally *t, uint32_t slots)
{
    sv_idmap *m = sv_idmap_create(sv_allocator_default(), t, 12345);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, slots), SV_OK);
    return m;
}

/* ---- parse -------------------------------------------------------------- */

static int parse(const char *s, uint64_t *v)
{
    return sv_id_parse_number(s, strlen(s), v);
}

START_TEST(test_parse)
{
    uint64_t v = 99;
    ck_assert(parse("0", &v) && v == 0);
    ck_assert(parse("7", &v) && v == 7);
    ck_assert(parse("17", &v) && v == 17);
    ck_assert(parse("1000000", &v) && v == 1000000);
    ck_assert(parse("9223372036854775807", &v) && v == UINT64_C(9223372036854775807));
    ck_assert(parse("1000000000000000000", &v) && v == UINT64_C(1000000000000000000));

    const char *bad[] = {"",
                         "00",
                         "01",
                         "017",
                         "+1",
                         "-0",
                         "-1",
                         " 1",
                         "1 ",
                         "1a",
                         "a1",
                         "0x10",
                         "1.0",
                         "1e3",
                         "9223372036854775808",  /* 2^63 */
                         "9999999999999999999",  /* 19 digits, too big */
                         "10000000000000000000", /* 20 digits */
                         "18446744073709551616", /* 2^64 */
                         "00000000000000000001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 42;
        ck_assert_msg(!parse(bad[i], &v), "'%s' parsed as a number", bad[i]);
        ck_assert_msg(v == 42, "'%s' wrote the output", bad[i]);
    }

    /* Length is honoured: no NUL terminator needed, and none accepted. */
    ck_assert(sv_id_parse_number("12345", 2, &v) && v == 12);
    ck_assert(!sv_id_parse_number("1\0", 2, &v));
    ck_assert(!sv_id_parse_number("5", 0, &v));
}
END_TEST

/* ---- insert / find / remove --------------------------------------------- */

START_TEST(test_numbers)
{
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, 10);
    uint32_t slot = 0;

    ck_assert(!sv_idmap_find_number(m, 5, &slot)); /* empty map */
    ck_assert_int_eq(sv_idmap_insert_number(m, 5, 0), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 0, 1), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, UINT64_C(9223372036854775807), 2), SV_OK);
    ck_assert_uint_eq(sv_idmap_count(m), 3);

    ck_assert(sv_idmap_find_number(m, 5, &slot) && slot == 0);
    ck_assert(sv_idmap_find_number(m, 0, &slot) && slot == 1);
    ck_assert(sv_idmap_find_number(m, UINT64_C(9223372036854775807), &slot) && slot == 2);
    ck_assert(!sv_idmap_find_number(m, 6, &slot));
    ck_assert(!sv_idmap_find_number(m, UINT64_C(1) << 63, &slot));
    ck_assert(!sv_idmap_find_number(m, UINT64_MAX, &slot));
    ck_assert(find_str(m, "5", &slot) && slot == 0);
    ck_assert(!find_str(m, "05", &slot));

    /* Not numeric ids: rejected, nothing changes. */
    ck_assert_int_eq(sv_idmap_insert_number(m, UINT64_C(1) << 63, 3), SV_ERR_INVALID_ARGUMENT);
    /* Slot bound or out of range: rejected. */
    ck_assert_int_eq(sv_idmap_insert_number(m, 8, 0), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(sv_idmap_insert_number(m, 8, 10), SV_ERR_INVALID_ARGUMENT);
    ck_assert_uint_eq(sv_idmap_count(m), 3);

    sv_idmap_remove_slot(m, 0);
    ck_assert(!sv_idmap_find_number(m, 5, &slot));
    ck_assert(sv_idmap_find_number(m, 0, &slot) && slot == 1);
    ck_assert_uint_eq(sv_idmap_count(m), 2);
    sv_idmap_remove_slot(m, 0);   /* unbound: no-op */
    sv_idmap_remove_slot(m, 9);   /* never bound: no-op */
    sv_idmap_remove_slot(m, 999); /* out of range: no-op */
    ck_assert_uint_eq(sv_idmap_count(m), 2);

    /* The freed slot can be bound again, to another id. */
    ck_assert_int_eq(sv_idmap_insert_number(m, 77, 0), SV_OK);
    ck_assert(sv_idmap_find_number(m, 77, &slot) && slot == 0);

    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

START_TEST(test_strings)
{
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, 16);
    uint32_t slot = 0;

    char longest[SV_ID_MAX + 1];
    memset(longest, 'z', SV_ID_MAX);
    longest[SV_ID_MAX] = '\0';
    char too_long[SV_ID_MAX + 2];
    memset(too_long, 'z', SV_ID_MAX + 1);
    too_long[SV_ID_MAX + 1] = '\0';

    ck_assert_int_eq(insert_str(m, "alice", 0), SV_OK);
    ck_assert_int_eq(insert_str(m, "bob", 1), SV_OK);
    ck_assert_int_eq(insert_str(m, "a", 2), SV_OK);
    ck_assert_int_eq(insert_str(m, longest, 3), SV_OK);
    ck_assert_int_eq(insert_str(m, "017", 4), SV_OK); /* strings, not 17 */
    ck_assert_int_eq(insert_str(m, "+1", 5), SV_OK);
    ck_assert_int_eq(insert_str(m, "-0", 6), SV_OK);
    ck_assert_int_eq(insert_str(m, " 1", 7), SV_OK);
    ck_assert_int_eq(insert_str(m, "9223372036854775808", 8), SV_OK);
    /* Arbitrary bytes, including NUL and high bytes. */
    ck_assert_int_eq(sv_idmap_insert(m, "x\0y\xff", 4, 9), SV_OK);
    ck_assert_uint_eq(sv_idmap_count(m), 10);

    ck_assert(find_str(m, "alice", &slot) && slot == 0);
    ck_assert(find_str(m, "bob", &slot) && slot == 1);
    ck_assert(find_str(m, "a", &slot) && slot == 2);
    ck_assert(find_str(m, longest, &slot) && slot == 3);
    ck_assert(find_str(m, "017", &slot) && slot == 4);
    ck_assert(find_str(m, "+1", &slot) && slot == 5);
    ck_assert(find_str(m, "-0", &slot) && slot == 6);
    ck_assert(find_str(m, " 1", &slot) && slot == 7);
    ck_assert(find_str(m, "9223372036854775808", &slot) && slot == 8);
    ck_assert(sv_idmap_find(m, "x\0y\xff", 4, &slot) && slot == 9);

    ck_assert(!find_str(m, "alic", &slot));
    ck_assert(!find_str(m, "alicee", &slot));
    ck_assert(!find_str(m, "Alice", &slot));
    ck_assert(!sv_idmap_find(m, "x\0y", 3, &slot));
    ck_assert(!sv_idmap_find(m, "alice", 0, &slot));
    ck_assert(!find_str(m, too_long, &slot));
    ck_assert(!find_str(m, "17", &slot));
    ck_assert(!find_str(m, "1", &slot));
    ck_assert(!find_str(m, "0", &slot));

    /* Bad lengths are rejected without change. */
    ck_assert_int_eq(sv_idmap_insert(m, "", 0, 10), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(insert_str(m, too_long, 10), SV_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(insert_str(m, "carol", 1), SV_ERR_INVALID_ARGUMENT); /* bound slot */
    ck_assert_uint_eq(sv_idmap_count(m), 10);

    sv_idmap_remove_slot(m, 1);
    ck_assert(!find_str(m, "bob", &slot));
    ck_assert(find_str(m, "alice", &slot) && slot == 0);
    ck_assert_uint_eq(sv_idmap_count(m), 9);
    ck_assert_int_eq(insert_str(m, "bob", 12), SV_OK);
    ck_assert(find_str(m, "bob", &slot) && slot == 12);

    /* Free with strings still bound: every string is released. */
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

START_TEST(test_numeric_string_is_number)
{
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, 8);
    uint32_t slot = 0;

    /* "17" as a string is stored as the number 17 (test_numeric_string_no_alloc
     * shows no string block is made). */
    ck_assert_int_eq(insert_str(m, "17", 0), SV_OK);
    ck_assert(sv_idmap_find_number(m, 17, &slot) && slot == 0);
    ck_assert(find_str(m, "17", &slot) && slot == 0);
    ck_assert(!find_str(m, "017", &slot));

    /* The reverse: a number found through its canonical string. */
    ck_assert_int_eq(sv_idmap_insert_number(m, 42, 1), SV_OK);
    ck_assert(find_str(m, "42", &slot) && slot == 1);
    long long after = sv_tally_get(&t);

    /* A string id does add its own block. */
    ck_assert_int_eq(insert_str(m, "x17", 2), SV_OK);
    ck_assert_int_gt(sv_tally_get(&t), after);

    char buf[SV_ID_MAX + 1];
    ck_assert_uint_eq(sv_idmap_format(m, 0, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "17");

    sv_idmap_remove_slot(m, 0);
    ck_assert(!sv_idmap_find_number(m, 17, &slot));
    ck_assert(!find_str(m, "17", &slot));

    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* Number ids only ever take table + keys memory: binding 100 canonical
 * numeric strings must not allocate once the table is big enough. */
START_TEST(test_numeric_string_no_alloc)
{
    counting c;
    sv_allocator a = counting_allocator(&c);
    sv_idmap *m = sv_idmap_create(&a, NULL, 3);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 100), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 1000, 99), SV_OK); /* makes the table */
    long blocks = c.live_blocks;
    char id[32];
    for (uint32_t i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "%u", i * 1000003u);
        ck_assert_int_eq(insert_str(m, id, i), SV_OK);
    }
    ck_assert_int_eq(c.live_blocks, blocks);
    sv_idmap_free(m);
    ck_assert_int_eq(c.live_blocks, 0);
}
END_TEST

/* ---- format ------------------------------------------------------------- */

START_TEST(test_format)
{
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, 8);
    char buf[SV_ID_MAX + 1];

    char longest[SV_ID_MAX + 1];
    for (int i = 0; i < SV_ID_MAX; i++)
        longest[i] = (char)('a' + i % 26);
    longest[SV_ID_MAX] = '\0';

    ck_assert_int_eq(sv_idmap_insert_number(m, 0, 0), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, UINT64_C(9223372036854775807), 1), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 1234567890, 2), SV_OK);
    ck_assert_int_eq(insert_str(m, "hello world", 3), SV_OK);
    ck_assert_int_eq(insert_str(m, longest, 4), SV_OK);
    ck_assert_int_eq(sv_idmap_insert(m, "a\0b", 3, 5), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 10, 6), SV_OK);

    memset(buf, '#', sizeof buf);
    ck_assert_uint_eq(sv_idmap_format(m, 0, buf, sizeof buf), 1);
    ck_assert_str_eq(buf, "0");
    ck_assert_uint_eq(sv_idmap_format(m, 1, buf, sizeof buf), 19);
    ck_assert_str_eq(buf, "9223372036854775807");
    ck_assert_uint_eq(sv_idmap_format(m, 2, buf, sizeof buf), 10);
    ck_assert_str_eq(buf, "1234567890");
    ck_assert_uint_eq(sv_idmap_format(m, 3, buf, sizeof buf), 11);
    ck_assert_str_eq(buf, "hello world");
    ck_assert_uint_eq(sv_idmap_format(m, 4, buf, sizeof buf), SV_ID_MAX);
    ck_assert_str_eq(buf, longest);
    ck_assert_uint_eq(sv_idmap_format(m, 5, buf, sizeof buf), 3);
    ck_assert(memcmp(buf, "a\0b\0", 4) == 0);
    ck_assert_uint_eq(sv_idmap_format(m, 6, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "10");

    /* Unbound and out-of-range slots: empty string, length 0. */
    memset(buf, '#', sizeof buf);
    ck_assert_uint_eq(sv_idmap_format(m, 7, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_uint_eq(sv_idmap_format(m, 1000, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");

    /* Formatted ids find their slot again. */
    for (uint32_t s = 0; s < 7; s++) {
        size_t len = sv_idmap_format(m, s, buf, sizeof buf);
        uint32_t slot = 99;
        ck_assert(sv_idmap_find(m, buf, len, &slot) && slot == s);
    }

    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* ---- next free number --------------------------------------------------- */

START_TEST(test_next_free_number)
{
    sv_idmap *m = new_map(NULL, 16);
    ck_assert_uint_eq(sv_idmap_next_free_number(m), 0);
    ck_assert_uint_eq(sv_idmap_next_free_number(m), 1);
    /* Handed-out numbers are not bound by the call. */
    ck_assert(!sv_idmap_find_number(m, 0, NULL));
    ck_assert_uint_eq(sv_idmap_count(m), 0);

    ck_assert_int_eq(sv_idmap_insert_number(m, 2, 0), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 3, 1), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, 5, 2), SV_OK);
    ck_assert_int_eq(insert_str(m, "6", 3), SV_OK);  /* bound through a string */
    ck_assert_int_eq(insert_str(m, "07", 4), SV_OK); /* a string: 7 stays free */
    ck_assert_int_eq(sv_idmap_insert_number(m, 0, 5), SV_OK); /* below the counter */

    ck_assert_uint_eq(sv_idmap_next_free_number(m), 4);
    ck_assert_uint_eq(sv_idmap_next_free_number(m), 7);
    ck_assert_uint_eq(sv_idmap_next_free_number(m), 8);

    /* The counter never goes back, even when a number below it is freed. */
    sv_idmap_remove_slot(m, 0); /* unbinds 2 */
    ck_assert_uint_eq(sv_idmap_next_free_number(m), 9);
    sv_idmap_free(m);
}
END_TEST

/* ---- large mixed run ---------------------------------------------------- */

#define BIG_N 200000u

/* Id i of the run: a third strings, a third numbers, a third numbers given
 * as canonical strings. Numbers come from an odd multiplier modulo 2^63,
 * which is a bijection, so they are distinct. */
static uint64_t big_number(uint32_t i)
{
    return ((uint64_t)i * UINT64_C(0x9e3779b97f4a7c15)) & (UINT64_MAX >> 1);
}

static size_t big_id(uint32_t i, char *buf, size_t cap)
{
    switch (i % 3) {
    case 0: return (size_t)snprintf(buf, cap, "user-%08x-%u", i * 2654435761u, i);
    case 1: return (size_t)snprintf(buf, cap, "%llu", (unsigned long long)big_number(i));
    default: return 0; /* inserted with insert_number */
    }
}

static void big_check(const sv_idmap *m, uint32_t i, int present)
{
    char buf[64];
    uint32_t slot = UINT32_MAX;
    size_t len = big_id(i, buf, sizeof buf);
    int found = len ? sv_idmap_find(m, buf, len, &slot)
                    : sv_idmap_find_number(m, big_number(i), &slot);
    ck_assert_msg(found == present, "id %u: found %d, expected %d", i, found, present);
    if (present)
        ck_assert_msg(slot == i, "id %u found at slot %u", i, slot);
}

START_TEST(test_big_mixed)
{
    counting c;
    sv_allocator a = counting_allocator(&c);
    sv_tally t = {0};
    sv_idmap *m = sv_idmap_create(&a, &t, UINT64_C(0xfeedface));
    ck_assert_ptr_nonnull(m);

    char buf[64];
    for (uint32_t i = 0; i < BIG_N; i++) {
        /* Slots reserved one batch at a time, as the collection does. */
        if (i % 1000 == 0)
            ck_assert_int_eq(sv_idmap_reserve_slots(m, i + 1000), SV_OK);
        size_t len = big_id(i, buf, sizeof buf);
        sv_status st = len ? sv_idmap_insert(m, buf, len, i)
                           : sv_idmap_insert_number(m, big_number(i), i);
        ck_assert_int_eq(st, SV_OK);
    }
    ck_assert_uint_eq(sv_idmap_count(m), BIG_N);
    ck_assert_int_eq(sv_tally_get(&t), c.live_bytes); /* the tally and the allocator agree */

    /* Remove half in a random order (fixed seed). */
    uint32_t *order = malloc(BIG_N * sizeof *order);
    unsigned char *removed = calloc(BIG_N, 1);
    ck_assert_ptr_nonnull(order);
    ck_assert_ptr_nonnull(removed);
    for (uint32_t i = 0; i < BIG_N; i++)
        order[i] = i;
    uint64_t rng = 2024;
    for (uint32_t i = BIG_N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng_next(&rng) % (i + 1));
        uint32_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (uint32_t k = 0; k < BIG_N / 2; k++) {
        sv_idmap_remove_slot(m, order[k]);
        removed[order[k]] = 1;
    }
    ck_assert_uint_eq(sv_idmap_count(m), BIG_N / 2);

    for (uint32_t i = 0; i < BIG_N; i++)
        big_check(m, i, !removed[i]);

    /* Removed slots are unbound; kept ones format back to their id. */
    for (uint32_t i = 0; i < BIG_N; i += 7) {
        char out[SV_ID_MAX + 1];
        size_t n = sv_idmap_format(m, i, out, sizeof out);
        if (removed[i]) {
            ck_assert_uint_eq(n, 0);
        } else {
            size_t len = big_id(i, buf, sizeof buf);
            if (!len)
                len = (size_t)snprintf(buf, sizeof buf, "%llu",
                                       (unsigned long long)big_number(i));
            ck_assert_uint_eq(n, len);
            ck_assert(memcmp(out, buf, len) == 0);
        }
    }
    ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);

    free(order);
    free(removed);
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
    ck_assert_int_eq(c.live_blocks, 0);
    ck_assert_int_eq(c.live_bytes, 0);
}
END_TEST

/* Backward-shift delete checked after every single removal, on a smaller
 * set, then the slots are reused (the table never fills with tombstones). */
START_TEST(test_churn)
{
    enum { N = 3000 };
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, N);
    uint64_t rng = 7;
    uint64_t nums[N];
    unsigned char live[N];
    for (uint32_t i = 0; i < N; i++) {
        /* Small values so many homes cluster together. */
        nums[i] = (uint64_t)i * 3;
        ck_assert_int_eq(sv_idmap_insert_number(m, nums[i], i), SV_OK);
        live[i] = 1;
    }
    for (int round = 0; round < N; round++) {
        uint32_t s = (uint32_t)(rng_next(&rng) % N);
        if (live[s]) {
            sv_idmap_remove_slot(m, s);
            live[s] = 0;
        } else {
            nums[s] = rng_next(&rng) >> 1;
            ck_assert_int_eq(sv_idmap_insert_number(m, nums[s], s), SV_OK);
            live[s] = 1;
        }
        if (round % 3 != 0)
            continue;
        size_t count = 0;
        for (uint32_t i = 0; i < N; i++) {
            uint32_t slot = UINT32_MAX;
            if (live[i]) {
                ck_assert(sv_idmap_find_number(m, nums[i], &slot) && slot == i);
                count++;
            }
        }
        ck_assert_uint_eq(sv_idmap_count(m), count);
    }
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* ---- reserve ------------------------------------------------------------ */

START_TEST(test_reserve_growth)
{
    counting c;
    sv_allocator a = counting_allocator(&c);
    sv_tally t = {0};
    sv_idmap *m = sv_idmap_create(&a, &t, 99);
    ck_assert_ptr_nonnull(m);
    char buf[SV_ID_MAX + 1];
    uint32_t slot;

    /* Binding slots right up to the reserve, one at a time, grows keys[]
     * many times; every earlier binding must survive each move. */
    for (uint32_t i = 0; i < 5000; i++) {
        ck_assert_int_eq(sv_idmap_reserve_slots(m, i + 1), SV_OK);
        if (i % 2) {
            snprintf(buf, sizeof buf, "s%u", i);
            ck_assert_int_eq(insert_str(m, buf, i), SV_OK);
        } else {
            ck_assert_int_eq(sv_idmap_insert_number(m, (uint64_t)i * 11, i), SV_OK);
        }
    }
    long calls = c.calls;
    for (uint32_t i = 0; i < 5000; i++) {
        if (i % 2) {
            snprintf(buf, sizeof buf, "s%u", i);
            ck_assert(find_str(m, buf, &slot) && slot == i);
        } else {
            ck_assert(sv_idmap_find_number(m, (uint64_t)i * 11, &slot) && slot == i);
        }
    }
    /* Growth is geometric: far fewer reallocations than slots. The strings
     * account for 2500 calls; the rest is keys and table growth. */
    ck_assert_int_lt(calls, 2500 + 100);

    /* A big jump, and a smaller request after it, which is a no-op. */
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 100000), SV_OK);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 10), SV_OK);
    for (uint32_t i = 5000; i < 100000; i += 997)
        ck_assert_uint_eq(sv_idmap_format(m, i, buf, sizeof buf), 0); /* unbound */
    ck_assert_int_eq(sv_idmap_insert_number(m, 1, 99999), SV_OK);
    ck_assert(sv_idmap_find_number(m, 1, &slot) && slot == 99999);
    ck_assert(find_str(m, "s4999", &slot) && slot == 4999);
    ck_assert_uint_eq(sv_idmap_count(m), 5001);
    ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);

    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
    ck_assert_int_eq(c.live_blocks, 0);
}
END_TEST

/* ---- tally -------------------------------------------------------------- */

START_TEST(test_tally)
{
    /* Default allocator: the tally counts requested sizes. */
    sv_tally t = {0};
    sv_idmap *m = sv_idmap_create(sv_allocator_default(), &t, 1);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_gt(sv_tally_get(&t), 0); /* the map itself */
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 100), SV_OK);
    for (uint32_t i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof id, i % 2 ? "k%u" : "%u", i);
        ck_assert_int_eq(insert_str(m, id, i), SV_OK);
    }
    for (uint32_t i = 0; i < 100; i += 3)
        sv_idmap_remove_slot(m, i);
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);

    /* An allocator with slack: the tally must match its live bytes at every
     * step (the sizes passed to free are the sizes allocated). */
    counting c;
    sv_allocator a = counting_allocator(&c);
    m = sv_idmap_create(&a, &t, 1);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);
    for (uint32_t i = 0; i < 1000; i++) {
        char id[32];
        snprintf(id, sizeof id, i % 2 ? "key-%u" : "%u", i);
        ck_assert_int_eq(sv_idmap_reserve_slots(m, i + 1), SV_OK);
        ck_assert_int_eq(insert_str(m, id, i), SV_OK);
        ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);
    }
    for (uint32_t i = 0; i < 1000; i += 2) {
        sv_idmap_remove_slot(m, i + 1);
        ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);
    }
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
    ck_assert_int_eq(c.live_bytes, 0);
    ck_assert_int_eq(c.live_blocks, 0);

    /* A NULL tally is allowed. */
    sv_idmap_free(sv_idmap_create(sv_allocator_default(), NULL, 1));
    sv_idmap_free(NULL);
}
END_TEST

/* ---- out of memory ------------------------------------------------------ */

typedef struct snapshot {
    size_t count;
    long long tally;
    long blocks;
} snapshot;

static snapshot take(const sv_idmap *m, const sv_tally *t, const counting *c)
{
    return (snapshot){sv_idmap_count(m), sv_tally_get(t), c->live_blocks};
}

/* The 12 ids of base_map(). */
static void check_base(const sv_idmap *m)
{
    char id[16];
    uint32_t slot;
    for (uint32_t i = 0; i < 12; i++) {
        snprintf(id, sizeof id, i % 2 ? "name%u" : "%u", i);
        ck_assert(find_str(m, id, &slot) && slot == i);
    }
}

/* A map holding the 12 base ids: a 16-entry table at 75%, so a 13th id
 * needs a rehash. */
static sv_idmap *base_map(const sv_allocator *a, sv_tally *t)
{
    sv_idmap *m = sv_idmap_create(a, t, 5);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 13), SV_OK);
    for (uint32_t i = 0; i < 12; i++) {
        char id[16];
        snprintf(id, sizeof id, i % 2 ? "name%u" : "%u", i);
        ck_assert_int_eq(insert_str(m, id, i), SV_OK);
    }
    return m;
}

START_TEST(test_out_of_memory)
{
    counting c;
    sv_allocator a = counting_allocator(&c);
    sv_tally t = {0};

    /* Create fails cleanly. */
    c.fail_after = 0;
    ck_assert_ptr_null(sv_idmap_create(&a, &t, 5));
    ck_assert_int_eq(sv_tally_get(&t), 0);
    c.fail_after = -1;

    /* Each insert kind is tried on a fresh base map with allocation failing
     * after N more calls, N = 0, 1, ..., until it succeeds. Every failure
     * must change nothing. A string id needs two allocations (its block,
     * then the bigger table); a number, or a numeric string, one. */
    const char *kinds[] = {"a-string", "13", NULL};
    const long needed[] = {2, 1, 1};
    for (int k = 0; k < 3; k++) {
        sv_idmap *m = base_map(&a, &t);
        long n = 0;
        for (;; n++) {
            ck_assert_int_lt(n, 10);
            snapshot before = take(m, &t, &c);
            c.fail_after = c.calls + n;
            sv_status st = kinds[k] ? insert_str(m, kinds[k], 12)
                                    : sv_idmap_insert_number(m, 777, 12);
            c.fail_after = -1;
            if (st == SV_OK)
                break;
            ck_assert_int_eq(st, SV_ERR_RESOURCE);
            snapshot after = take(m, &t, &c);
            ck_assert_uint_eq(after.count, before.count);
            ck_assert_int_eq(after.tally, before.tally);
            ck_assert_int_eq(after.blocks, before.blocks);
            ck_assert_int_eq(sv_tally_get(&t), c.live_bytes);
            check_base(m);
            char buf[SV_ID_MAX + 1];
            ck_assert_uint_eq(sv_idmap_format(m, 12, buf, sizeof buf), 0);
            ck_assert(!find_str(m, "a-string", NULL));
            ck_assert(!sv_idmap_find_number(m, 13, NULL));
            ck_assert(!sv_idmap_find_number(m, 777, NULL));
        }
        ck_assert_int_eq(n, needed[k]);
        uint32_t slot;
        if (kinds[k])
            ck_assert(find_str(m, kinds[k], &slot) && slot == 12);
        else
            ck_assert(sv_idmap_find_number(m, 777, &slot) && slot == 12);
        check_base(m);
        ck_assert_uint_eq(sv_idmap_count(m), 13);
        sv_idmap_free(m);
        ck_assert_int_eq(sv_tally_get(&t), 0);
    }

    /* A failed reserve keeps every binding. */
    sv_idmap *m = base_map(&a, &t);
    snapshot before = take(m, &t, &c);
    c.fail_after = c.calls;
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 1000), SV_ERR_RESOURCE);
    c.fail_after = -1;
    snapshot after = take(m, &t, &c);
    ck_assert_int_eq(after.tally, before.tally);
    ck_assert_uint_eq(after.count, before.count);
    check_base(m);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, 1000), SV_OK);
    check_base(m);

    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
    ck_assert_int_eq(c.live_blocks, 0);
}
END_TEST

/* ---- seeds -------------------------------------------------------------- */

/* Different seeds give different tables but the same answers. */
START_TEST(test_seeds)
{
    uint64_t seeds[] = {0, 1, UINT64_MAX, UINT64_C(0x8000000000000000)};
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        sv_tally t = {0};
        sv_idmap *m = sv_idmap_create(sv_allocator_default(), &t, seeds[k]);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(sv_idmap_reserve_slots(m, 2000), SV_OK);
        for (uint32_t i = 0; i < 1000; i++)
            ck_assert_int_eq(sv_idmap_insert_number(m, i, i), SV_OK);
        for (uint32_t i = 0; i < 1000; i++) {
            char id[16];
            snprintf(id, sizeof id, "n%u", i);
            ck_assert_int_eq(insert_str(m, id, 1000 + i), SV_OK);
        }
        for (uint32_t i = 0; i < 1000; i++) {
            char id[16];
            uint32_t slot;
            snprintf(id, sizeof id, "n%u", i);
            ck_assert(find_str(m, id, &slot) && slot == 1000 + i);
            ck_assert(sv_idmap_find_number(m, i, &slot) && slot == i);
        }
        sv_idmap_free(m);
        ck_assert_int_eq(sv_tally_get(&t), 0);
    }
}
END_TEST

/* ---- hash flooding -------------------------------------------------------
 * The map used to place ids by mix64(num ^ seed) and, for strings, seeded
 * FNV-1a then mix64, seed being the collection's `seed`, which clients
 * choose and DescribeCollection returns. The functions below are that old
 * scheme, as an attacker would rebuild it, and mix64's inverse: with them
 * the attacker picks ids that all share one home position, so every insert
 * walks the whole run (quadratic). The tests assert on probe counts read
 * off the table, not on time, so they do not depend on the machine. */

#define FLOOD_SEED UINT64_C(12345)

static uint64_t old_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Inverse of an odd number mod 2^64 (Newton: each step doubles the correct
 * low bits; a*a == 1 mod 8 gives 3 to start, so 5 steps give 96). */
static uint64_t inverse_odd(uint64_t a)
{
    uint64_t x = a;
    for (int i = 0; i < 5; i++)
        x *= 2 - a * x;
    return x;
}

/* Inverse of x ^= x >> s (s >= 22 here: two steps reach every bit). */
static uint64_t unxorshift(uint64_t x, int s)
{
    return x ^ (x >> s) ^ (x >> (2 * s));
}

static uint64_t old_unmix64(uint64_t z)
{
    z = unxorshift(z, 31);
    z *= inverse_odd(UINT64_C(0x94d049bb133111eb));
    z = unxorshift(z, 27);
    z *= inverse_odd(UINT64_C(0xbf58476d1ce4e5b9));
    return unxorshift(z, 30);
}

static uint64_t old_hash_number(uint64_t seed, uint64_t num)
{
    return old_mix64(num ^ seed);
}

static uint64_t old_hash_string(uint64_t seed, const unsigned char *s, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return old_mix64(h ^ (uint64_t)len ^ (seed << 1));
}

/* Insert ids[i] (numbers) or strs[i] (strings, when strs != NULL) into a
 * fresh map created with FLOOD_SEED, and read its probe figures. */
static sv_idmap_probes probes_of(const uint64_t *nums, char (*strs)[16], uint32_t n)
{
    sv_tally t = {0};
    sv_idmap *m = sv_idmap_create(sv_allocator_default(), &t, FLOOD_SEED);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sv_idmap_reserve_slots(m, n), SV_OK);
    for (uint32_t i = 0; i < n; i++) {
        if (strs)
            ck_assert_int_eq(insert_str(m, strs[i], i), SV_OK);
        else
            ck_assert_int_eq(sv_idmap_insert_number(m, nums[i], i), SV_OK);
    }
    for (uint32_t i = 0; i < n; i++) { /* still an id map */
        uint32_t slot = UINT32_MAX;
        if (strs)
            ck_assert(find_str(m, strs[i], &slot) && slot == i);
        else
            ck_assert(sv_idmap_find_number(m, nums[i], &slot) && slot == i);
    }
    sv_idmap_probes p;
    sv_idmap_probe_stats(m, &p);
    ck_assert_uint_eq(p.ids, n);
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
    return p;
}

static double mean_probes(const sv_idmap_probes *p)
{
    return (double)p->total_probes / (double)p->ids;
}

/* Chosen ids must cost about what random ids cost. Against the old hash
 * the chosen ones sat in one run: mean ~n/2 probes, the longest n. */
static void check_not_flooded(const char *what, const sv_idmap_probes *chosen,
                              const sv_idmap_probes *random)
{
    printf("%s: chosen ids mean %.2f probes (max %llu, longest run %zu), "
           "random ids mean %.2f (max %llu, longest run %zu), table %zu\n",
           what, mean_probes(chosen), (unsigned long long)chosen->max_probes, chosen->longest_run,
           mean_probes(random), (unsigned long long)random->max_probes, random->longest_run,
           chosen->table_cap);
    ck_assert_uint_eq(chosen->table_cap, random->table_cap);
    ck_assert(mean_probes(chosen) <= 2.0 * mean_probes(random));
    /* Random ids, over 1,000 processes (keys): mean 1.37-1.60 probes and
     * the longest run at most 46 for 2,000 strings; 1.73-1.85 and 108 for
     * 20,000 numbers. ids/10 leaves room for the random key and is still
     * a tenth of what a flood costs. */
    ck_assert(mean_probes(chosen) < 4.0);
    ck_assert_uint_lt(chosen->max_probes, chosen->ids / 10);
    ck_assert_uint_lt(chosen->longest_run, chosen->ids / 10);
}

/* 20,000 numbers whose old hash has its low 32 bits zero: one home
 * position in every table size the map can reach. */
START_TEST(test_flood_numbers)
{
    enum { N = 20000 };
    static uint64_t chosen[N], random[N];
    uint32_t n = 0;
    for (uint64_t k = 1; n < N; k++) {
        uint64_t num = old_unmix64(k << 32) ^ FLOOD_SEED;
        if (num >> 63)
            continue; /* not a numeric id */
        /* The attack is real: the old scheme sends every one home to 0. */
        ck_assert_uint_eq(old_hash_number(FLOOD_SEED, num) & UINT32_MAX, 0);
        chosen[n++] = num;
    }
    uint64_t rng = 99;
    for (uint32_t i = 0; i < N; i++)
        random[i] = rng_next(&rng) >> 1;

    sv_idmap_probes pc = probes_of(chosen, NULL, N);
    sv_idmap_probes pr = probes_of(random, NULL, N);
    check_not_flooded("numbers", &pc, &pr);
}
END_TEST

/* 2,000 strings whose old hash has its low 12 bits zero: one home in the
 * 4,096-entry table that 2,000 ids end in (and in every smaller one on
 * the way). Found by trying candidates, as an attacker would: ~4,096 tries
 * per id (full 64-bit collisions of FNV-1a would take more than a test). */
START_TEST(test_flood_strings)
{
    enum { N = 2000, LOW_BITS = 12 };
    static char chosen[N][16], random[N][16];
    static const char digits[] = "0123456789abcdefghijklmnopqrstuv";
    uint32_t n = 0;
    for (uint64_t k = 0; n < N; k++) {
        /* "x" + k in base 32, 8 digits: never a canonical number. */
        char id[16] = "x";
        for (int d = 0; d < 8; d++)
            id[1 + d] = digits[(k >> (5 * (7 - d))) & 31];
        id[9] = '\0';
        uint64_t h = old_hash_string(FLOOD_SEED, (const unsigned char *)id, 9);
        if ((h & ((1u << LOW_BITS) - 1)) != 0)
            continue;
        memcpy(chosen[n++], id, 10);
    }
    uint64_t rng = 5;
    for (uint32_t i = 0; i < N; i++)
        snprintf(random[i], sizeof random[i], "r%014llx", (unsigned long long)(rng_next(&rng) >> 8));

    sv_idmap_probes pc = probes_of(NULL, chosen, N);
    sv_idmap_probes pr = probes_of(NULL, random, N);
    ck_assert_uint_eq(pc.table_cap, 1u << LOW_BITS);
    check_not_flooded("strings", &pc, &pr);
}
END_TEST

/* The collection's seed no longer places ids: the same ids in the same
 * order make the same table whatever the seed. */
START_TEST(test_seed_does_not_place)
{
    sv_idmap_probes p[3];
    uint64_t seeds[3] = {0, FLOOD_SEED, UINT64_MAX};
    for (int k = 0; k < 3; k++) {
        sv_idmap *m = sv_idmap_create(sv_allocator_default(), NULL, seeds[k]);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(sv_idmap_reserve_slots(m, 3000), SV_OK);
        for (uint32_t i = 0; i < 3000; i++)
            ck_assert_int_eq(sv_idmap_insert_number(m, (uint64_t)i * 7, i), SV_OK);
        sv_idmap_probe_stats(m, &p[k]);
        sv_idmap_free(m);
    }
    for (int k = 1; k < 3; k++) {
        ck_assert_uint_eq(p[k].total_probes, p[0].total_probes);
        ck_assert_uint_eq(p[k].max_probes, p[0].max_probes);
        ck_assert_uint_eq(p[k].longest_run, p[0].longest_run);
    }
}
END_TEST

/* An 8-byte string hashes over the same bytes as the number they spell in
 * little-endian order; the two are still different ids. */
START_TEST(test_string_spelling_a_number)
{
    sv_tally t = {0};
    sv_idmap *m = new_map(&t, 4);
    const char *str = "abcdefgh";
    uint64_t num = UINT64_C(0x6867666564636261); /* "abcdefgh", little-endian */
    ck_assert_int_eq(insert_str(m, str, 0), SV_OK);
    ck_assert_int_eq(sv_idmap_insert_number(m, num, 1), SV_OK);
    uint32_t slot = UINT32_MAX;
    ck_assert(find_str(m, str, &slot) && slot == 0);
    ck_assert(sv_idmap_find_number(m, num, &slot) && slot == 1);
    sv_idmap_remove_slot(m, 0);
    ck_assert(!find_str(m, str, &slot));
    ck_assert(sv_idmap_find_number(m, num, &slot) && slot == 1);
    sv_idmap_free(m);
    ck_assert_int_eq(sv_tally_get(&t), 0);
}
END_TEST

/* Ids equal to their slots cost a bit each; the first id that breaks it
 * (a string, another number, a move) builds the full map, and every id
 * reads back the same before and after. */
START_TEST(test_identity_mode)
{
    for (int breaker = 0; breaker < 3; breaker++) {
        sv_tally t = {0};
        sv_idmap *m = new_map(&t, 100000);
        for (uint32_t i = 0; i < 100000; i++)
            ck_assert_int_eq(sv_idmap_insert_number(m, i, i), SV_OK);
        /* 100,000 ids: ~12.5 KB of bits (+ the map), not ~1.3 MB. */
        ck_assert_int_lt(sv_tally_get(&t), 16 * 1024);
        uint32_t slot = 0;
        char buf[SV_ID_MAX + 1];
        ck_assert(sv_idmap_find_number(m, 4242, &slot) && slot == 4242);
        ck_assert(find_str(m, "99999", &slot) && slot == 99999);
        ck_assert(!find_str(m, "100000", &slot));
        ck_assert(!find_str(m, "doc", &slot));
        ck_assert_uint_eq(sv_idmap_format(m, 17, buf, sizeof buf), 2);
        ck_assert_str_eq(buf, "17");
        sv_idmap_remove_slot(m, 17);
        ck_assert(!sv_idmap_find_number(m, 17, &slot));
        ck_assert_uint_eq(sv_idmap_count(m), 99999);
        /* Assigned numbers skip the bound ones: 17 was freed, so it is next. */
        ck_assert_uint_eq(sv_idmap_next_free_number(m), 17);
        ck_assert_int_eq(sv_idmap_reserve_slots(m, 100002), SV_OK);
        if (breaker == 0)
            ck_assert_int_eq(sv_idmap_insert(m, "doc", 3, 100000), SV_OK);
        else if (breaker == 1)
            ck_assert_int_eq(sv_idmap_insert_number(m, 7777777, 100000), SV_OK);
        else {
            ck_assert_int_eq(sv_idmap_materialize(m), SV_OK);
            sv_idmap_move_slot(m, 99999, 17);
        }
        ck_assert_int_gt(sv_tally_get(&t), 800 * 1024); /* the full map now */
        ck_assert(sv_idmap_find_number(m, 4242, &slot) && slot == 4242);
        ck_assert(!sv_idmap_find_number(m, 17, &slot) || breaker == 2);
        if (breaker == 2) {
            ck_assert(sv_idmap_find_number(m, 99999, &slot) && slot == 17);
            ck_assert_uint_eq(sv_idmap_format(m, 17, buf, sizeof buf), 5);
        } else {
            ck_assert(sv_idmap_find_number(m, 99999, &slot) && slot == 99999);
            ck_assert(find_str(m, breaker == 0 ? "doc" : "7777777", &slot) && slot == 100000);
        }
        ck_assert_uint_eq(sv_idmap_count(m), breaker == 2 ? 99999 : 100000);
        sv_idmap_free(m);
        ck_assert_int_eq(sv_tally_get(&t), 0);
    }
}
END_TEST

/* The statistic itself: empty, every id counted, back to zero. */
START_TEST(test_probe_stats)
{
    sv_idmap *m = new_map(NULL, 1000);
    sv_idmap_probes p;
    sv_idmap_probe_stats(m, &p);
    ck_assert_uint_eq(p.ids, 0);
    ck_assert_uint_eq(p.total_probes, 0);
    ck_assert_uint_eq(p.table_cap, 0);
    for (uint32_t i = 0; i < 1000; i++) /* not slot = id: the table holds them */
        ck_assert_int_eq(sv_idmap_insert_number(m, i + 5000, i), SV_OK);
    sv_idmap_probe_stats(m, &p);
    ck_assert_uint_eq(p.ids, 1000);
    ck_assert_uint_ge(p.total_probes, 1000);
    ck_assert_uint_ge(p.max_probes, 1);
    ck_assert_uint_ge(p.longest_run, p.max_probes);
    ck_assert_uint_eq(p.table_cap, 2048);
    for (uint32_t i = 0; i < 1000; i++)
        sv_idmap_remove_slot(m, i);
    sv_idmap_probe_stats(m, &p);
    ck_assert_uint_eq(p.ids, 0);
    ck_assert_uint_eq(p.longest_run, 0);
    sv_idmap_free(m);
}
END_TEST

static Suite *idmap_suite(void)
{
    Suite *s = suite_create("idmap");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_numbers);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_numeric_string_is_number);
    tcase_add_test(tc, test_numeric_string_no_alloc);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_next_free_number);
    tcase_add_test(tc, test_big_mixed);
    tcase_add_test(tc, test_churn);
    tcase_add_test(tc, test_reserve_growth);
    tcase_add_test(tc, test_tally);
    tcase_add_test(tc, test_out_of_memory);
    tcase_add_test(tc, test_seeds);
    tcase_add_test(tc, test_flood_numbers);
    tcase_add_test(tc, test_flood_strings);
    tcase_add_test(tc, test_seed_does_not_place);
    tcase_add_test(tc, test_string_spelling_a_number);
    tcase_add_test(tc, test_probe_stats);
    tcase_add_test(tc, test_identity_mode);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(idmap_suite());
}
