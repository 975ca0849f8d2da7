/*
 * Tests for the jemalloc arena binding (core/arena.h) and the memory a
 * collection accounts for through it.
 *
 * Why: the arena is how slimvec measures a collection's true memory and the
 * stats' per-part byte tallies are how it explains it. Both are only worth
 * anything if every block goes through the allocator hook and is tallied at
 * the allocator's usable size: then the arena's allocated bytes EQUAL the
 * sum of the tallies at every quiet point (between calls), whatever the
 * collection did. On top of that the memory claims of the design are held
 * here: the write buffer is the only float copy and is gone after a flush,
 * an int8 collection holds ~dim + 12 bytes of vector per row, deletes give
 * memory back, and freeing the collection leaves the arena empty.
 *
 * The arena counters are read with MALLOCX_TCACHE_NONE traffic only, so
 * they are exact. Seeds are fixed; figures are printed for the log.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "slimvec.h"
#include "testutil.h"

static sv_collection *make(sv_arena *arena, uint32_t dim, sv_storage storage)
{
    sv_params p;
    sv_params_default(&p, dim);
    p.storage = storage;
    p.threads = 2;
    p.flush_threshold = 0; /* flush only when the test says so */
    p.allocator = sv_arena_allocator(arena);
    sv_collection *c = NULL;
    sv_error err;
    ck_assert_msg(sv_collection_create(&p, &c, &err) == SV_OK, "create: %s", err.message);
    return c;
}

static uint64_t tally_sum(const sv_stats *s)
{
    return s->est_bytes_vectors + s->est_bytes_edges + s->est_bytes_idmap + s->est_bytes_buffer +
           s->est_bytes_other + s->est_bytes_payload;
}

/*
 * The arena's allocated bytes must equal the stats' tallies: fails with both
 * figures, the difference and the breakdown. Returns the arena figure.
 */
static size_t check_exact(sv_arena *arena, sv_collection *c, const char *when, sv_stats *out)
{
    sv_stats s;
    sv_collection_stats(c, &s);
    size_t got = sv_arena_allocated(arena);
    uint64_t sum = tally_sum(&s);
    fprintf(stderr,
            "%-28s arena %9zu  tallies %9llu (vectors %llu, edges %llu, idmap %llu, buffer %llu, "
            "other %llu)  diff %+lld\n",
            when, got, (unsigned long long)sum, (unsigned long long)s.est_bytes_vectors,
            (unsigned long long)s.est_bytes_edges, (unsigned long long)s.est_bytes_idmap,
            (unsigned long long)s.est_bytes_buffer, (unsigned long long)s.est_bytes_other,
            (long long)got - (long long)sum);
    ck_assert_msg(got == sum,
                  "%s: arena holds %zu bytes but the stats tally %llu (difference %+lld; vectors "
                  "%llu, edges %llu, idmap %llu, buffer %llu, other %llu)",
                  when, got, (unsigned long long)sum, (long long)got - (long long)sum,
                  (unsigned long long)s.est_bytes_vectors, (unsigned long long)s.est_bytes_edges,
                  (unsigned long long)s.est_bytes_idmap, (unsigned long long)s.est_bytes_buffer,
                  (unsigned long long)s.est_bytes_other);
    if (out)
        *out = s;
    return got;
}

static void search_some(sv_collection *c, uint32_t dim, size_t nq, uint64_t seed)
{
    float *q = tu_gaussian(nq, dim, seed);
    sv_hit hits[10];
    for (size_t i = 0; i < nq; i++) {
        size_t n = 0;
        sv_error err;
        ck_assert_msg(sv_collection_search(c, q + i * dim, dim, 10, 64, hits, &n, &err) == SV_OK,
                      "search %zu: %s", i, err.message);
        ck_assert_uint_eq(n, 10);
    }
    free(q);
}

/* Ids of every fifth assigned id: "0", "5", "10", ... */
static void delete_every_fifth(sv_collection *c, size_t n)
{
    size_t nd = (n + 4) / 5;
    char(*names)[24] = malloc(nd * sizeof *names);
    const char **ids = malloc(nd * sizeof *ids);
    ck_assert_ptr_nonnull(names);
    ck_assert_ptr_nonnull(ids);
    for (size_t i = 0; i < nd; i++) {
        snprintf(names[i], sizeof names[i], "%zu", i * 5);
        ids[i] = names[i];
    }
    sv_error err;
    ck_assert_msg(sv_collection_delete(c, ids, nd, &err) == SV_OK, "delete: %s", err.message);
    free(ids);
    free(names);
}

/*
 * The life of a default (int8, L2) collection, with the arena checked
 * against the tallies after every step.
 */
START_TEST(test_accounting_exact)
{
    const uint32_t dim = 64;
    const size_t n = 5000;
    sv_arena *arena = sv_arena_create();
    ck_assert_msg(arena != NULL, "sv_arena_create failed (jemalloc arenas.create)");
    ck_assert_msg(sv_arena_allocated(arena) == 0, "a new arena holds %zu bytes",
                  sv_arena_allocated(arena));
    sv_collection *c = make(arena, dim, SV_STORAGE_INT8);
    check_exact(arena, c, "created", NULL);

    float *v = tu_gaussian(n, dim, 21);
    uint64_t *assigned = malloc(n * sizeof *assigned);
    ck_assert_ptr_nonnull(assigned);
    sv_error err;
    ck_assert_msg(sv_collection_add(c, v, n, dim, NULL, assigned, &err) == SV_OK, "add: %s",
                  err.message);
    ck_assert_uint_eq(assigned[0], 0);
    ck_assert_uint_eq(assigned[n - 1], n - 1);
    sv_stats added;
    size_t before_flush = check_exact(arena, c, "added 5000 x 64", &added);

    /* One copy: the buffer holds the floats until the flush... */
    ck_assert_msg(added.est_bytes_buffer >= (uint64_t)n * dim * sizeof(float),
                  "before flush the buffer tallies %llu bytes, less than the %zu of the floats",
                  (unsigned long long)added.est_bytes_buffer, n * dim * sizeof(float));
    ck_assert_uint_eq(added.buffered, n);

    ck_assert_msg(sv_collection_flush(c, &err) == SV_OK, "flush: %s", err.message);
    sv_stats flushed;
    size_t after_flush = check_exact(arena, c, "flushed", &flushed);
    /* ...and none is left after it. The arena lost the buffer's bytes: what
     * it holds now is what it held before, minus the buffer, plus only what
     * the other parts grew by (the store records and the graph). */
    ck_assert_uint_eq(flushed.buffered, 0);
    ck_assert_uint_eq(flushed.indexed, n);
    ck_assert_msg(flushed.est_bytes_buffer == 0, "after flush the buffer still tallies %llu bytes",
                  (unsigned long long)flushed.est_bytes_buffer);
    uint64_t grown = (tally_sum(&flushed) - flushed.est_bytes_buffer) -
                     (tally_sum(&added) - added.est_bytes_buffer);
    ck_assert_msg((long long)before_flush - (long long)after_flush + (long long)grown >=
                      (long long)added.est_bytes_buffer,
                  "the flush freed only %lld bytes of the %llu-byte buffer (arena %zu -> %zu, other "
                  "parts grew %llu)",
                  (long long)before_flush - (long long)after_flush + (long long)grown,
                  (unsigned long long)added.est_bytes_buffer, before_flush, after_flush,
                  (unsigned long long)grown);

    search_some(c, dim, 200, 22);
    sv_stats searched;
    size_t before_delete = check_exact(arena, c, "searched 200", &searched);

    delete_every_fifth(c, n);
    check_exact(arena, c, "deleted 20%", NULL);
    ck_assert_msg(sv_collection_consolidate(c, &err) == SV_OK, "consolidate: %s", err.message);
    sv_stats cons;
    size_t after_cons = check_exact(arena, c, "consolidated", &cons);
    ck_assert_uint_eq(cons.live, n - n / 5);
    ck_assert_uint_eq(cons.tombstones, 0);
    ck_assert_uint_eq(cons.free_slots, n / 5);
    /* Deletes give memory back (the freed nodes' edges and ids). */
    ck_assert_msg(after_cons < before_delete,
                  "arena holds %zu bytes after deleting 20%% and consolidating, not less than the "
                  "%zu before the delete",
                  after_cons, before_delete);
    search_some(c, dim, 50, 23);
    check_exact(arena, c, "searched after consolidate", NULL);

    /* Recycled slots: adding back fills them, accounting still exact. */
    ck_assert_msg(sv_collection_add(c, v, 500, dim, NULL, NULL, &err) == SV_OK, "re-add: %s",
                  err.message);
    check_exact(arena, c, "re-added 500", NULL);
    ck_assert_msg(sv_collection_flush(c, &err) == SV_OK, "flush: %s", err.message);
    check_exact(arena, c, "flushed again", NULL);
    ck_assert_msg(sv_collection_validate(c, &err) == SV_OK, "validate: %s", err.message);

    sv_collection_free(c);
    ck_assert_msg(sv_arena_allocated(arena) == 0, "the arena holds %zu bytes after sv_collection_free",
                  sv_arena_allocated(arena));
    sv_arena_free(arena);
    free(assigned);
    free(v);
}
END_TEST

/* An int8 collection holds codes, not floats, once flushed. */
START_TEST(test_quantized_only)
{
    const uint32_t dim = 128;
    const size_t n = 5000;
    sv_arena *arena = sv_arena_create();
    ck_assert_ptr_nonnull(arena);
    sv_collection *c = make(arena, dim, SV_STORAGE_INT8);
    float *v = tu_gaussian(n, dim, 31);
    sv_error err;
    ck_assert_msg(sv_collection_add(c, v, n, dim, NULL, NULL, &err) == SV_OK, "add: %s", err.message);
    ck_assert_msg(sv_collection_flush(c, &err) == SV_OK, "flush: %s", err.message);
    sv_stats s;
    size_t total = check_exact(arena, c, "int8 5000 x 128 flushed", &s);
    double per_vec = (double)total / (double)n;
    double vec_per_vec = (double)s.est_bytes_vectors / (double)n;
    /* The store grows in ~32 KiB chunks (store.h), so up to one chunk is
     * allocated ahead of the records: a fixed cost per collection, not per
     * vector. At 5,000 rows it is ~13 bytes a row and decides whether the
     * raw figure lands under dim + 12 + 4 (it does not: 144.3), so the
     * per-vector bound is held with that one chunk taken off. */
    const double chunk = 32.0 * 1024.0;
    double vec_per_vec_net = ((double)s.est_bytes_vectors - chunk) / (double)n;
    fprintf(stderr,
            "int8 dim 128: %.1f arena bytes per vector, %.1f of them vector store (%.1f without "
            "one 32 KiB chunk)\n",
            per_vec, vec_per_vec, vec_per_vec_net);
    ck_assert_msg(per_vec < dim * sizeof(float),
                  "%.1f arena bytes per vector: not below the %zu of a float copy alone", per_vec,
                  dim * sizeof(float));
    ck_assert_msg(s.est_bytes_vectors >= (uint64_t)n * (dim + 12),
                  "the vector store tallies %llu bytes, less than %zu records of %u bytes",
                  (unsigned long long)s.est_bytes_vectors, n, dim + 12);
    ck_assert_msg(vec_per_vec_net < dim + 12 + 4,
                  "the vector store costs %.1f bytes per vector beyond one chunk, over codes + "
                  "header + 4 (%u)",
                  vec_per_vec_net, dim + 12 + 4);
    sv_collection_free(c);
    ck_assert_msg(sv_arena_allocated(arena) == 0, "the arena holds %zu bytes after sv_collection_free",
                  sv_arena_allocated(arena));
    sv_arena_free(arena);
    free(v);
}
END_TEST

/* Two collections in two arenas do not see each other's bytes, and an
 * f32/cosine collection (normalised copies, float records) is exact too. */
START_TEST(test_arenas_are_separate)
{
    const uint32_t dim = 24;
    const size_t n = 2000;
    sv_arena *a = sv_arena_create(), *b = sv_arena_create();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_ne(sv_arena_index(a), sv_arena_index(b));
    sv_params p;
    sv_params_default(&p, dim);
    p.metric = SV_METRIC_COSINE;
    p.storage = SV_STORAGE_F32;
    p.threads = 2;
    p.flush_threshold = 700; /* flushes inside add */
    p.allocator = sv_arena_allocator(a);
    sv_collection *ca = NULL;
    sv_error err;
    ck_assert_msg(sv_collection_create(&p, &ca, &err) == SV_OK, "%s", err.message);
    sv_collection *cb = make(b, dim, SV_STORAGE_INT8);
    float *v = tu_gaussian(n, dim, 41);
    ck_assert_msg(sv_collection_add(ca, v, n, dim, NULL, NULL, &err) == SV_OK, "%s", err.message);
    size_t b_before = check_exact(b, cb, "b, empty", NULL);
    check_exact(a, ca, "a, f32 cosine auto-flushed", NULL);
    ck_assert_msg(sv_collection_add(cb, v, n, dim, NULL, NULL, &err) == SV_OK, "%s", err.message);
    ck_assert_msg(sv_collection_flush(cb, &err) == SV_OK, "%s", err.message);
    ck_assert_msg(sv_collection_flush(ca, &err) == SV_OK, "%s", err.message);
    check_exact(a, ca, "a, flushed", NULL);
    size_t b_after = check_exact(b, cb, "b, flushed", NULL);
    ck_assert_uint_gt(b_after, b_before);
    sv_collection_free(ca);
    ck_assert_msg(sv_arena_allocated(a) == 0, "arena a holds %zu bytes after free",
                  sv_arena_allocated(a));
    ck_assert_msg(sv_arena_allocated(b) == b_after, "freeing a changed arena b: %zu -> %zu", b_after,
                  sv_arena_allocated(b));
    sv_collection_free(cb);
    ck_assert_msg(sv_arena_allocated(b) == 0, "arena b holds %zu bytes after free",
                  sv_arena_allocated(b));
    sv_arena_free(a);
    sv_arena_free(b);
    free(v);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_accounting_exact);
    tcase_add_test(tc, test_quantized_only);
    tcase_add_test(tc, test_arenas_are_separate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
