/*
 * slimvec-churn: what deletes and re-adds do to a collection over time.
 *
 * A collection is built from a dataset (Fashion-MNIST by default), then, for
 * each round, a random half of it is deleted and added again (same ids,
 * same vectors, in batches) while a searcher thread keeps querying. The
 * server's maintenance thread is played by a thread here doing exactly what
 * slimvecd's does: flush at the threshold, consolidate past a tombstone
 * ratio, compact past a free-slot ratio (the durable layer's calls, in
 * memory), and consolidate and compact whatever is left once the
 * collection has been quiet for --quiet-seconds (the server's default, 10).
 * After each round: bytes per vector (the collection's jemalloc account)
 * and recall@10 against the exact ground truth, once the ratios are met
 * ("settled") and once quiet, next to a fresh build of the same vectors.
 * Search latency is reported by phase: idle, during churn, and while a
 * consolidation or compaction runs.
 *
 *   slimvec-churn [--dataset fashion|founding] [--rounds 5] [--fraction 0.5]
 *                 [--search-list 64] [--threads 0] [--json OUT]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "benchutil.h"
#include "datasets.h"
#include "durable.h"
#include "slimvec.h"

#define K 10
#define BATCH 1000
#define MAX_ROUNDS 32

enum phase { PHASE_IDLE, PHASE_CHURN, PHASE_FLUSH, PHASE_CONSOLIDATE, N_PHASES };
static const char *PHASE_NAMES[N_PHASES] = {"idle", "churn", "flushing", "consolidating"};

/* slimvecd's defaults (service/main.c) */
#define CONSOLIDATE_RATIO 0.05
#define CONSOLIDATE_MIN 64
#define COMPACT_RATIO 0.05

typedef struct options {
    const char *dataset, *json, *cache;
    uint32_t rounds, search_list, threads;
    double fraction, quiet;
} options;

typedef struct lat {
    double *v;
    size_t n, cap;
} lat;

typedef struct shared {
    sv_durable *d;
    const ds_fmatrix *query;
    uint32_t search_list;
    atomic_int stop;
    atomic_int churning;
    atomic_int flushing;
    atomic_int consolidating;
    pthread_mutex_t mu;            /* the latency samples */
    lat samples[N_PHASES];
    atomic_ulong consolidations, compactions, flushes;
    double quiet;                  /* seconds without writes before the clean-up */
} shared;

typedef struct round_result {
    double bpv, recall;           /* settled: the ratios met */
    uint64_t slots, free_slots, tombstones;
    double quiet_bpv, quiet_recall; /* after the quiet clean-up */
    double seconds;
} round_result;

static void lat_push(lat *l, double v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        double *t = realloc(l->v, cap * sizeof *t);
        if (!t)
            return;
        l->v = t;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

static void die(const char *what, const sv_error *err)
{
    fprintf(stderr, "slimvec-churn: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    exit(1);
}

/* The server's maintenance thread, as slimvecd runs it (maintenance.c). */
static void *maintainer(void *arg)
{
    shared *sh = arg;
    sv_error err;
    uint64_t seen = 0;
    double since = bu_now_seconds();
    while (!atomic_load(&sh->stop)) {
        sv_stats c;
        sv_durable_counts(sh->d, &c);
        uint64_t w = c.live * 3 + c.tombstones * 5 + c.slots * 7 + c.buffered;
        if (w != seen) {
            seen = w;
            since = bu_now_seconds();
        }
        if (sh->quiet > 0 && bu_now_seconds() - since >= sh->quiet &&
            (c.tombstones > 0 || c.free_slots > 0)) {
            atomic_store(&sh->consolidating, 1);
            if (c.tombstones && sv_durable_consolidate(sh->d, &err) != SV_OK)
                die("consolidate", &err);
            if (sv_durable_compact(sh->d, NULL, &err) != SV_OK)
                die("compact", &err);
            atomic_store(&sh->consolidating, 0);
        }
        if (sv_durable_flush_due(sh->d)) {
            atomic_store(&sh->flushing, 1);
            if (sv_durable_flush(sh->d, &err) != SV_OK)
                die("flush", &err);
            atomic_store(&sh->flushing, 0);
            atomic_fetch_add(&sh->flushes, 1);
        }
        if (sv_durable_consolidate_due(sh->d, CONSOLIDATE_RATIO, CONSOLIDATE_MIN)) {
            atomic_store(&sh->consolidating, 1);
            if (sv_durable_consolidate(sh->d, &err) != SV_OK)
                die("consolidate", &err);
            atomic_store(&sh->consolidating, 0);
            atomic_fetch_add(&sh->consolidations, 1);
        }
        if (sv_durable_compact_due(sh->d, COMPACT_RATIO)) {
            atomic_store(&sh->consolidating, 1);
            if (sv_durable_compact(sh->d, NULL, &err) != SV_OK)
                die("compact", &err);
            atomic_store(&sh->consolidating, 0);
            atomic_fetch_add(&sh->compactions, 1);
        }
        usleep(10000);
    }
    return NULL;
}

static void *searcher(void *arg)
{
    shared *sh = arg;
    sv_hit hits[K];
    size_t i = 0;
    while (!atomic_load(&sh->stop)) {
        const float *q = sh->query->data + (i++ % sh->query->rows) * sh->query->dim;
        int phase = atomic_load(&sh->consolidating) ? PHASE_CONSOLIDATE
                    : atomic_load(&sh->flushing)    ? PHASE_FLUSH
                    : atomic_load(&sh->churning)    ? PHASE_CHURN
                                                    : PHASE_IDLE;
        size_t n = 0;
        double t0 = bu_now_seconds();
        sv_durable_search(sh->d, q, sh->query->dim, &(sv_search_opts){.k = K, .search_list = sh->search_list}, hits, &n, NULL);
        double dt = bu_now_seconds() - t0;
        /* The phase at the end counts too: a search maintenance ran into. */
        if (atomic_load(&sh->consolidating))
            phase = PHASE_CONSOLIDATE;
        else if (phase != PHASE_CONSOLIDATE && atomic_load(&sh->flushing))
            phase = PHASE_FLUSH;
        pthread_mutex_lock(&sh->mu);
        lat_push(&sh->samples[phase], dt);
        pthread_mutex_unlock(&sh->mu);
        usleep(200); /* a steady query stream, not a second core's worth */
    }
    return NULL;
}

static double recall(sv_durable *d, const ds_fmatrix *q, const ds_imatrix *gt, uint32_t L)
{
    sv_hit hits[K];
    size_t found = 0;
    for (size_t i = 0; i < q->rows; i++) {
        size_t n = 0;
        if (sv_durable_search(d, q->data + i * q->dim, q->dim, &(sv_search_opts){.k = K, .search_list = L}, hits, &n, NULL) != SV_OK)
            die("search", NULL);
        for (size_t h = 0; h < n; h++) {
            long id = strtol(hits[h].id, NULL, 10);
            for (int j = 0; j < K; j++)
                if (gt->data[i * gt->dim + (size_t)j] == id)
                    found++;
        }
    }
    return (double)found / ((double)q->rows * K);
}

/* bounded: slimvecd's buffer bound (2 x the threshold; the maintenance
 * thread must run); else none (a fresh build flushes once at the end). */
static sv_durable *build(const ds_fmatrix *base, sv_arena *arena, uint32_t threads, int bounded)
{
    sv_params p;
    sv_params_default(&p, base->dim);
    p.threads = threads;
    p.allocator = sv_arena_allocator(arena);
    sv_durable_options o = {.buffer_factor = bounded ? 2 : 0};
    sv_durable *d = NULL;
    sv_error err;
    if (sv_durable_create(NULL, &p, &o, &d, &err) != SV_OK)
        die("create", &err);
    return d;
}

static void add_rows(sv_durable *d, const ds_fmatrix *base, const uint32_t *rows, size_t n)
{
    char (*names)[12] = malloc(BATCH * sizeof *names);
    const char **ids = malloc(BATCH * sizeof *ids);
    float *v = malloc((size_t)BATCH * base->dim * sizeof *v);
    sv_error err;
    for (size_t at = 0; at < n; at += BATCH) {
        size_t m = n - at < BATCH ? n - at : BATCH;
        for (size_t i = 0; i < m; i++) {
            uint32_t r = rows[at + i];
            snprintf(names[i], sizeof names[i], "%u", r);
            ids[i] = names[i];
            memcpy(v + i * base->dim, base->data + (size_t)r * base->dim, base->dim * sizeof *v);
        }
        sv_status st;
        /* A full buffer (SV_ERR_BUSY) waits for the maintenance thread. */
        while ((st = sv_durable_add(d, v, m, base->dim, ids, NULL, &err)) == SV_ERR_BUSY)
            usleep(1000);
        if (st != SV_OK)
            die("add", &err);
    }
    free(names);
    free(ids);
    free(v);
}

static void delete_rows(sv_durable *d, const uint32_t *rows, size_t n)
{
    char (*names)[12] = malloc(BATCH * sizeof *names);
    const char **ids = malloc(BATCH * sizeof *ids);
    sv_error err;
    for (size_t at = 0; at < n; at += BATCH) {
        size_t m = n - at < BATCH ? n - at : BATCH;
        for (size_t i = 0; i < m; i++) {
            snprintf(names[i], sizeof names[i], "%u", rows[at + i]);
            ids[i] = names[i];
        }
        if (sv_durable_delete(d, ids, m, NULL, &err) != SV_OK)
            die("delete", &err);
    }
    free(names);
    free(ids);
}

/* Wait until the maintenance thread has nothing left to do. */
static void settle(sv_durable *d)
{
    for (;;) {
        sv_stats s;
        sv_durable_collection_stats(d, &s);
        if (!sv_durable_flush_due(d) && !sv_durable_consolidate_due(d, CONSOLIDATE_RATIO, CONSOLIDATE_MIN) &&
            !sv_durable_compact_due(d, COMPACT_RATIO))
            break;
        usleep(20000);
    }
    sv_error err;
    if (sv_durable_flush(d, &err) != SV_OK) /* what stays under the threshold */
        die("flush", &err);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: slimvec-churn [--dataset fashion|founding] [--rounds N (5)] [--fraction F (0.5)]\n"
               "                     [--search-list L (64)] [--quiet-seconds S (10)] [--threads N (0: all)]\n"
               "                     [--cache DIR] [--json OUT]\n");
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.dataset = "fashion", .rounds = 5, .search_list = 64, .fraction = 0.5,
                   .quiet = 10, .cache = ds_default_cache_dir()};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!v)
            return -1;
        i++;
        if (!strcmp(f, "--dataset"))
            o->dataset = v;
        else if (!strcmp(f, "--json"))
            o->json = v;
        else if (!strcmp(f, "--cache"))
            o->cache = v;
        else if (!strcmp(f, "--rounds")) {
            if (bu_parse_u32("slimvec-churn", f, v, 1, MAX_ROUNDS, &o->rounds))
                return -1;
        } else if (!strcmp(f, "--search-list")) {
            if (bu_parse_u32("slimvec-churn", f, v, 10, 10000, &o->search_list))
                return -1;
        } else if (!strcmp(f, "--threads")) {
            if (bu_parse_u32("slimvec-churn", f, v, 0, 64, &o->threads))
                return -1;
        } else if (!strcmp(f, "--quiet-seconds")) {
            o->quiet = strtod(v, NULL);
            if (!(o->quiet >= 0))
                return -1;
        } else if (!strcmp(f, "--fraction")) {
            o->fraction = strtod(v, NULL);
            if (!(o->fraction > 0 && o->fraction <= 1))
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

static void lat_report(lat *l, double *p50, double *p99)
{
    qsort(l->v, l->n, sizeof *l->v, bu_cmp_double);
    *p50 = bu_percentile(l->v, l->n, 0.5) * 1e6;
    *p99 = bu_percentile(l->v, l->n, 0.99) * 1e6;
}

int main(int argc, char **argv)
{
    options o;
    if (parse(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    char err[DS_ERR_LEN];
    ds_files files;
    if (ds_prepare_builtin(o.dataset, o.cache, DS_METRIC_L2, o.threads, &files, stderr, err) != 0) {
        fprintf(stderr, "slimvec-churn: %s\n", err);
        return 1;
    }
    ds_fmatrix base, query;
    ds_imatrix gt;
    if (ds_read_fvecs(files.base, &base, err) || ds_read_fvecs(files.query, &query, err) ||
        ds_read_ivecs(files.gt, &gt, err)) {
        fprintf(stderr, "slimvec-churn: %s\n", err);
        return 1;
    }
    if (query.rows > 2000)
        query.rows = 2000; /* recall over 2,000 queries: enough, and quick */
    size_t n = base.rows;
    uint32_t *all = malloc(n * sizeof *all), *pick = malloc(n * sizeof *pick);
    for (size_t i = 0; i < n; i++)
        all[i] = (uint32_t)i;

    sv_arena *arena = sv_arena_create();
    sv_durable *d = build(&base, arena, o.threads, 1);
    double t0 = bu_now_seconds();
    shared sh = {.d = d, .query = &query, .search_list = o.search_list, .quiet = o.quiet};
    pthread_mutex_init(&sh.mu, NULL);
    pthread_t tm, ts;
    pthread_create(&tm, NULL, maintainer, &sh);
    add_rows(d, &base, all, n);
    settle(d);
    printf("slimvec-churn: %s, %zu x %u, built in %.1f s; search list %u, %u rounds of %.0f%%\n",
           o.dataset, n, base.dim, bu_now_seconds() - t0, o.search_list, o.rounds, o.fraction * 100);
    pthread_create(&ts, NULL, searcher, &sh);

    round_result res[MAX_ROUNDS + 1];
    uint64_t seed = 12345;
    for (uint32_t r = 0; r <= o.rounds; r++) {
        double rt = bu_now_seconds();
        if (r > 0) {
            /* A random `fraction` of the rows: shuffle, take the front. */
            memcpy(pick, all, n * sizeof *pick);
            size_t m = (size_t)(o.fraction * (double)n);
            for (size_t i = 0; i < m; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                size_t j = i + (size_t)((seed >> 33) % (n - i));
                uint32_t t = pick[i];
                pick[i] = pick[j];
                pick[j] = t;
            }
            atomic_store(&sh.churning, 1);
            delete_rows(d, pick, m);
            add_rows(d, &base, pick, m);
            atomic_store(&sh.churning, 0);
            settle(d);
        }
        sv_stats s;
        sv_durable_collection_stats(d, &s);
        res[r] = (round_result){.bpv = (double)sv_arena_allocated(arena) / (double)s.live,
                                .recall = recall(d, &query, &gt, o.search_list),
                                .slots = s.slots,
                                .free_slots = s.free_slots,
                                .tombstones = s.tombstones,
                                .seconds = bu_now_seconds() - rt};
        /* Then quiet: the maintenance cleans up what the ratios left. */
        while (o.quiet > 0) {
            sv_stats c;
            sv_durable_counts(d, &c);
            if (!c.tombstones && !c.free_slots)
                break;
            usleep(50000);
        }
        res[r].quiet_bpv = (double)sv_arena_allocated(arena) / (double)sv_durable_count(d);
        res[r].quiet_recall = recall(d, &query, &gt, o.search_list);
        sv_error verr;
        if (sv_durable_validate(d, &verr) != SV_OK)
            die("validate", &verr);
        printf("round %u: settled %.1f bytes/vector, recall@10 %.4f (%llu slots + %llu free, %llu tombstones); "
               "quiet %.1f bytes/vector, recall@10 %.4f; %.1f s\n",
               r, res[r].bpv, res[r].recall, (unsigned long long)s.slots, (unsigned long long)s.free_slots,
               (unsigned long long)s.tombstones, res[r].quiet_bpv, res[r].quiet_recall, res[r].seconds);
        fflush(stdout);
    }
    atomic_store(&sh.stop, 1);
    pthread_join(ts, NULL);
    pthread_join(tm, NULL);

    /* A fresh build of the same vectors. */
    sv_arena *farena = sv_arena_create();
    sv_durable *f = build(&base, farena, o.threads, 0);
    add_rows(f, &base, all, n);
    sv_error ferr;
    if (sv_durable_flush(f, &ferr) != SV_OK)
        die("flush", &ferr);
    sv_stats fs;
    sv_durable_collection_stats(f, &fs);
    double fresh_bpv = (double)sv_arena_allocated(farena) / (double)fs.live;
    double fresh_recall = recall(f, &query, &gt, o.search_list);
    printf("fresh build: %.1f bytes/vector, recall@10 %.4f\n", fresh_bpv, fresh_recall);

    double p50[N_PHASES], p99[N_PHASES];
    for (int p = 0; p < N_PHASES; p++) {
        lat_report(&sh.samples[p], &p50[p], &p99[p]);
        printf("search %-13s %7zu queries, p50 %.0f us, p99 %.0f us\n", PHASE_NAMES[p], sh.samples[p].n,
               p50[p], p99[p]);
    }
    printf("maintenance: %lu flushes, %lu consolidations, %lu compactions\n", atomic_load(&sh.flushes),
           atomic_load(&sh.consolidations), atomic_load(&sh.compactions));
    double worst_bpv = 0, worst_recall = 1, worst_qbpv = 0, worst_qrecall = 1;
    for (uint32_t r = 1; r <= o.rounds; r++) {
        worst_bpv = fmax(worst_bpv, res[r].bpv / fresh_bpv - 1);
        worst_recall = fmin(worst_recall, res[r].recall - fresh_recall);
        worst_qbpv = fmax(worst_qbpv, res[r].quiet_bpv / fresh_bpv - 1);
        worst_qrecall = fmin(worst_qrecall, res[r].quiet_recall - fresh_recall);
    }
    printf("worst round vs fresh, settled: bytes/vector %+.1f%%, recall %+.4f; quiet: %+.1f%%, %+.4f "
           "(targets: within 10%% and 0.01)\n",
           worst_bpv * 100, worst_recall, worst_qbpv * 100, worst_qrecall);

    if (o.json) {
        FILE *j = fopen(o.json, "w");
        if (!j)
            die("cannot write the JSON file", NULL);
        fprintf(j, "{\"dataset\": ");
        bu_json_str(j, o.dataset);
        fprintf(j, ", \"n\": %zu, \"dim\": %u, \"search_list\": %u, \"fraction\": %g, \"rounds\": [",
                n, base.dim, o.search_list, o.fraction);
        for (uint32_t r = 0; r <= o.rounds; r++) {
            fprintf(j, "%s{\"round\": %u, \"bytes_per_vector\": ", r ? ", " : "", r);
            bu_json_num(j, res[r].bpv);
            fprintf(j, ", \"recall\": ");
            bu_json_num(j, res[r].recall);
            fprintf(j, ", \"slots\": %llu, \"free_slots\": %llu, \"tombstones\": %llu, \"quiet_bytes_per_vector\": ",
                    (unsigned long long)res[r].slots, (unsigned long long)res[r].free_slots,
                    (unsigned long long)res[r].tombstones);
            bu_json_num(j, res[r].quiet_bpv);
            fprintf(j, ", \"quiet_recall\": ");
            bu_json_num(j, res[r].quiet_recall);
            fprintf(j, "}");
        }
        fprintf(j, "], \"fresh\": {\"bytes_per_vector\": ");
        bu_json_num(j, fresh_bpv);
        fprintf(j, ", \"recall\": ");
        bu_json_num(j, fresh_recall);
        fprintf(j, "}, \"search_us\": {");
        for (int p = 0; p < N_PHASES; p++) {
            fprintf(j, "%s\"%s\": {\"queries\": %zu, \"p50\": ", p ? ", " : "", PHASE_NAMES[p],
                    sh.samples[p].n);
            bu_json_num(j, p50[p]);
            fprintf(j, ", \"p99\": ");
            bu_json_num(j, p99[p]);
            fprintf(j, "}");
        }
        fprintf(j, "}}\n");
        fclose(j);
    }
    sv_durable_free(d);
    sv_durable_free(f);
    sv_arena_free(arena);
    sv_arena_free(farena);
    for (int p = 0; p < N_PHASES; p++)
        free(sh.samples[p].v);
    ds_fmatrix_free(&base);
    ds_fmatrix_free(&query);
    ds_imatrix_free(&gt);
    free(all);
    free(pick);
    return worst_bpv <= 0.10 && worst_recall >= -0.01 && worst_qbpv <= 0.10 && worst_qrecall >= -0.01 ? 0 : 3;
}
