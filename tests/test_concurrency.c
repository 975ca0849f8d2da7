/*
 * Concurrency: adders streaming small batches (with automatic flushes),
 * searchers, a deleter and a consolidator run at once on one collection.
 * Checks: no search returns an id whose delete had returned before the
 * search began; every add is visible afterwards exactly once; the graph
 * validates; recall is sane. Run it under TSan (-DSV_TSAN=ON).
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slimvec.h"
#include "testutil.h"

#define DIM 24
#define ADDERS 2
#define PER_ADDER 3000
#define BATCH 50

typedef struct shared {
    sv_collection *c;
    const float *data;           /* ADDERS * PER_ADDER rows */
    atomic_uint added[ADDERS];   /* rows of each adder applied so far */
    atomic_uint deleted_below;   /* adder 0's rows < this with row % 5 == 0 are deleted */
    atomic_int adders_done;
    atomic_int deleter_done;
    atomic_int failures;
    char failure[512];
} shared;

static void note_failure(shared *sh, const char *fmt, const char *id)
{
    if (atomic_fetch_add(&sh->failures, 1) == 0)
        snprintf(sh->failure, sizeof sh->failure, fmt, id);
}

static void id_of(uint32_t adder, uint32_t row, char *buf, size_t cap)
{
    snprintf(buf, cap, "a%u-%u", adder, row);
}

typedef struct adder_arg {
    shared *sh;
    uint32_t id;
} adder_arg;

static void *adder(void *p)
{
    adder_arg *a = p;
    shared *sh = a->sh;
    char names[BATCH][24];
    const char *ids[BATCH];
    for (uint32_t r = 0; r < PER_ADDER; r += BATCH) {
        for (uint32_t i = 0; i < BATCH; i++) {
            id_of(a->id, r + i, names[i], sizeof names[i]);
            ids[i] = names[i];
        }
        const float *rows = sh->data + ((size_t)a->id * PER_ADDER + r) * DIM;
        sv_error err;
        if (sv_collection_add(sh->c, rows, BATCH, DIM, ids, NULL, &err) != SV_OK)
            note_failure(sh, "add failed: %s", err.message);
        atomic_store(&sh->added[a->id], r + BATCH);
    }
    atomic_fetch_add(&sh->adders_done, 1);
    return NULL;
}

static void *searcher(void *p)
{
    shared *sh = p;
    sv_hit hits[10];
    uint64_t q = 0;
    while (atomic_load(&sh->adders_done) < ADDERS) {
        uint32_t below = atomic_load(&sh->deleted_below);
        const float *query = sh->data + (q++ % (ADDERS * PER_ADDER)) * DIM;
        size_t n = 0;
        sv_error err;
        if (sv_collection_search(sh->c, query, DIM, 10, 40, hits, &n, &err) != SV_OK) {
            note_failure(sh, "search failed: %s", err.message);
            continue;
        }
        for (size_t h = 0; h < n; h++) {
            unsigned adder_id = 0, row = 0;
            if (sscanf(hits[h].id, "a%u-%u", &adder_id, &row) != 2)
                note_failure(sh, "unexpected id %s", hits[h].id);
            else if (adder_id == 0 && row % 5 == 0 && row < below)
                note_failure(sh, "deleted id %s returned", hits[h].id);
        }
    }
    return NULL;
}

static void *deleter(void *p)
{
    shared *sh = p;
    uint32_t next = 0;
    char name[24];
    const char *ids[1] = {name};
    while (atomic_load(&sh->adders_done) < ADDERS || next < PER_ADDER) {
        uint32_t avail = atomic_load(&sh->added[0]);
        if (next >= avail) {
            if (atomic_load(&sh->adders_done) == ADDERS)
                break;
            sched_yield();
            continue;
        }
        if (next % 5 == 0) {
            id_of(0, next, name, sizeof name);
            sv_error err;
            if (sv_collection_delete(sh->c, ids, 1, &err) != SV_OK)
                note_failure(sh, "delete failed: %s", err.message);
        }
        next++;
        atomic_store(&sh->deleted_below, next);
    }
    atomic_store(&sh->deleter_done, 1);
    return NULL;
}

/* Consolidation runs on its own, so deletes (of indexed and of still
 * buffered vectors) land while it repairs. */
static void *consolidator(void *p)
{
    shared *sh = p;
    while (!atomic_load(&sh->deleter_done)) {
        sv_error err;
        if (sv_collection_consolidate(sh->c, &err) != SV_OK)
            note_failure(sh, "consolidate failed: %s", err.message);
        usleep(2000);
    }
    return NULL;
}

START_TEST(test_mixed_load)
{
    shared sh;
    memset(&sh, 0, sizeof sh);
    float *data = tu_gaussian((size_t)ADDERS * PER_ADDER, DIM, 11);
    sh.data = data;
    sv_params p;
    sv_params_default(&p, DIM);
    p.flush_threshold = 500;
    p.threads = 2;
    sv_error err;
    ck_assert(sv_collection_create(&p, &sh.c, &err) == SV_OK);

    pthread_t t_add[ADDERS], t_search[2], t_del, t_cons;
    adder_arg args[ADDERS];
    for (uint32_t i = 0; i < ADDERS; i++) {
        args[i] = (adder_arg){&sh, i};
        pthread_create(&t_add[i], NULL, adder, &args[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_create(&t_search[i], NULL, searcher, &sh);
    pthread_create(&t_del, NULL, deleter, &sh);
    pthread_create(&t_cons, NULL, consolidator, &sh);
    for (uint32_t i = 0; i < ADDERS; i++)
        pthread_join(t_add[i], NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(t_search[i], NULL);
    pthread_join(t_del, NULL);
    pthread_join(t_cons, NULL);
    ck_assert_msg(atomic_load(&sh.failures) == 0, "%d failures, first: %s",
                  atomic_load(&sh.failures), sh.failure);

    ck_assert(sv_collection_validate(sh.c, &err) == SV_OK);
    ck_assert(sv_collection_flush(sh.c, &err) == SV_OK);
    ck_assert(sv_collection_consolidate(sh.c, &err) == SV_OK);
    ck_assert_msg(sv_collection_validate(sh.c, &err) == SV_OK, "%s", err.message);

    uint64_t expect = (uint64_t)ADDERS * PER_ADDER - PER_ADDER / 5;
    ck_assert_uint_eq(sv_collection_count(sh.c), expect);
    /* Every acknowledged add is there exactly once; every delete is gone. */
    float got[DIM];
    char name[24];
    for (uint32_t a = 0; a < ADDERS; a++) {
        for (uint32_t r = 0; r < PER_ADDER; r++) {
            id_of(a, r, name, sizeof name);
            sv_status st = sv_collection_get(sh.c, name, got, DIM, NULL);
            if (a == 0 && r % 5 == 0)
                ck_assert_msg(st == SV_ERR_NOT_FOUND, "%s should be deleted", name);
            else
                ck_assert_msg(st == SV_OK, "%s missing", name);
        }
    }
    /* An added vector finds itself. */
    sv_hit hits[1];
    size_t n = 0, self = 0, tried = 0;
    for (uint32_t r = 1; r < PER_ADDER; r += 37) {
        ck_assert(sv_collection_search(sh.c, data + ((size_t)PER_ADDER + r) * DIM, DIM, 1, 32, hits,
                                       &n, NULL) == SV_OK);
        id_of(1, r, name, sizeof name);
        tried++;
        self += n == 1 && strcmp(hits[0].id, name) == 0;
    }
    ck_assert_msg(self * 100 >= tried * 95, "self-recall %zu/%zu", self, tried);
    sv_collection_free(sh.c);
    free(data);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("concurrency");
    TCase *tc = tcase_create("mixed");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_mixed_load);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
