/*
 * slimvec-scale: one large collection built the two ways a flush can be
 * driven, then checked.
 *
 *   one-flush  flush_threshold 0: every batch waits in the write buffer and
 *              one sv_collection_flush links them all (the parallel inserts
 *              of a whole million, then one connect pass).
 *   streaming  the default threshold (8192): adds flush as batches arrive,
 *              so each flush links about one batch into a growing graph.
 *
 * N standard-normal vectors of --dim (splitmix64 + Box-Muller, seeded) are
 * added in batches of --batch with assigned ids (vector i gets id i), into a
 * collection with the default parameters (L2, int8, R 32, L_build 64,
 * alpha 1.0) bound to a jemalloc arena of its own. Then:
 *   - sv_collection_validate (degrees, edges, reachability); the exit status
 *     is 1 when it fails, after everything else is reported;
 *   - build time and vectors/s (adds + flushes), the time in flushes;
 *   - the figures of connect (the graph's own record): the last call, and
 *     all calls summed (streaming runs one per flush);
 *   - bytes per vector: arena allocated bytes / live vectors;
 *   - recall@10 of --queries fresh standard-normal queries against exact
 *     float ground truth over the whole base (brute force on all cores,
 *     datasets.c), single-thread, at each search list of the sweep.
 *
 * Results: a table on stdout and one JSON object (stdout, or --json FILE).
 * Progress goes to stderr.
 *
 * The connect figures come from sv_stats (connect_last, connect_total).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "benchutil.h"
#include "datasets.h"
#include "slimvec.h"

#define SB_K 10
#define SB_MAX_LISTS 16

typedef enum sb_mode { SB_ONE_FLUSH = 0, SB_STREAMING } sb_mode;

typedef struct options {
    uint64_t n;
    uint32_t dim;
    uint32_t batch;
    sb_mode mode;
    uint32_t threads;      /* collection threads, 0 = all cores */
    uint32_t queries;      /* 0: no recall */
    uint32_t lists[SB_MAX_LISTS];
    uint32_t n_lists;
    uint64_t seed;
    const char *json;
    uint32_t R, L_build;  /* 0: the defaults */
    float alpha;
} options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: slimvec-scale [--n N] [--dim D] [--batch B] [--mode one-flush|streaming]\n"
            "                     [--threads T] [--queries Q] [--search-list L[,L...]]\n"
            "                     [--seed S] [--json FILE] [--R N] [--L N] [--alpha F]\n"
            "\n"
            "  --n N              vectors (default 1000000)\n"
            "  --dim D            dimension (default 128)\n"
            "  --batch B          vectors per add call (default 10000)\n"
            "  --mode M           one-flush: flush_threshold 0 and one flush at the end;\n"
            "                     streaming: the default threshold, flushes as batches come\n"
            "                     (default one-flush)\n"
            "  --threads T        flush threads, 0 = all cores (default 0)\n"
            "  --queries Q        recall@%d queries, 0 for none (default 1000)\n"
            "  --search-list L    comma-separated search list sizes (default 10,32,64,128)\n"
            "  --seed S           data seed (default 42)\n"
            "  --R --L --alpha    graph parameters (default: sv_params_default)\n"
            "  --json FILE        write the JSON object there instead of stdout\n"
            "Exit status: 0 ok, 1 the graph fails validation or a call fails, 2 usage.\n",
            SB_K);
}

static int parse_lists(const char *s, options *o)
{
    o->n_lists = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf)
        goto bad;
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (o->n_lists == SB_MAX_LISTS)
            goto bad;
        if (bu_parse_u32("slimvec-scale", "--search-list", tok, SB_K, SV_L_MAX,
                         &o->lists[o->n_lists]) != 0)
            return -1;
        o->n_lists++;
    }
    if (o->n_lists > 0)
        return 0;
bad:
    fprintf(stderr, "slimvec-scale: --search-list: '%s' is not 1..%d comma-separated sizes\n", s,
            SB_MAX_LISTS);
    return -1;
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 on a usage error. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n = 1000000;
    o->dim = 128;
    o->batch = 10000;
    o->mode = SB_ONE_FLUSH;
    o->queries = 1000;
    o->seed = 42;
    const uint32_t lists[] = {10, 32, 64, 128};
    memcpy(o->lists, lists, sizeof lists);
    o->n_lists = 4;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "slimvec-scale: %s: %s\n", a,
                    strncmp(a, "--", 2) != 0 ? "unexpected argument"
                                              : "missing value or unknown option (see --help)");
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--n") == 0)
            rc = bu_parse_u64("slimvec-scale", a, v, SB_K, UINT32_MAX - 1, &o->n);
        else if (strcmp(a, "--dim") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 1, SV_DIM_MAX, &o->dim);
        else if (strcmp(a, "--batch") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 1, 1u << 20, &o->batch);
        else if (strcmp(a, "--threads") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 0, 1024, &o->threads);
        else if (strcmp(a, "--queries") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 0, 1u << 20, &o->queries);
        else if (strcmp(a, "--search-list") == 0)
            rc = parse_lists(v, o);
        else if (strcmp(a, "--seed") == 0)
            rc = bu_parse_u64("slimvec-scale", a, v, 0, UINT64_MAX, &o->seed);
        else if (strcmp(a, "--json") == 0)
            o->json = v;
        else if (strcmp(a, "--R") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 2, SV_R_MAX, &o->R);
        else if (strcmp(a, "--L") == 0)
            rc = bu_parse_u32("slimvec-scale", a, v, 2, SV_L_MAX, &o->L_build);
        else if (strcmp(a, "--alpha") == 0) {
            char *end;
            o->alpha = strtof(v, &end);
            if (*end || end == v || !(o->alpha >= 1.0f && o->alpha <= 2.0f)) {
                fprintf(stderr, "slimvec-scale: --alpha: '%s' is not in 1.0..2.0\n", v);
                return -1;
            }
        }
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "one-flush") == 0)
                o->mode = SB_ONE_FLUSH;
            else if (strcmp(v, "streaming") == 0)
                o->mode = SB_STREAMING;
            else {
                fprintf(stderr, "slimvec-scale: --mode: '%s' is not one-flush or streaming\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "slimvec-scale: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- data ----------------------------------------------------------------- */


/* ---- results -------------------------------------------------------------- */

typedef struct list_result {
    uint32_t L;
    double recall;        /* mean over queries of |found ∩ true top 10| / 10 */
    double qps;           /* single thread */
    double p50_ms, p99_ms;
} list_result;

typedef struct result {
    double add_seconds;   /* in sv_collection_add (includes streaming flushes) */
    double flush_seconds; /* in flushes: the explicit one(s) only for streaming */
    double build_seconds; /* adds + the final flush */
    double rate;
    uint64_t flushes_explicit;
    sv_connect_stats connect; /* the last connect pass */
    sv_connect_stats connect_total; /* every connect pass of the build */
    double validate_seconds;
    int validate_ok;
    char validate_msg[300];
    size_t arena_empty, arena_bytes;
    double bpv;
    sv_stats stats;
    double gt_seconds;
    list_result lists[SB_MAX_LISTS];
    uint32_t n_lists;
    uint32_t R, L_build;  /* the graph parameters used */
    float alpha;
} result;

static void print_err(const char *what, const sv_error *err)
{
    fprintf(stderr, "slimvec-scale: %s: %s: %s\n", what, sv_status_name(err->code), err->message);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Single-thread searches of every query at search list L; recall against
 * gt (nq x SB_K base rows = assigned ids). */
static int measure_list(sv_collection *c, const float *queries, uint32_t nq, uint32_t dim,
                        const int32_t *gt, uint32_t L, double *lat, list_result *out)
{
    sv_hit hits[SB_K];
    uint64_t found[SB_K], truth[SB_K];
    uint64_t hit_total = 0;
    double t0 = bu_now_seconds();
    for (uint32_t q = 0; q < nq; q++) {
        size_t n_hits = 0;
        sv_error err = {0};
        double tq = bu_now_seconds();
        if (sv_collection_search(c, queries + (size_t)q * dim, dim, SB_K, L, hits, &n_hits,
                                 &err) != SV_OK) {
            print_err("sv_collection_search", &err);
            return -1;
        }
        lat[q] = bu_now_seconds() - tq;
        for (size_t i = 0; i < n_hits; i++)
            found[i] = strtoull(hits[i].id, NULL, 10);
        for (uint32_t i = 0; i < SB_K; i++)
            truth[i] = (uint64_t)gt[(size_t)q * SB_K + i];
        qsort(found, n_hits, sizeof *found, cmp_u64);
        qsort(truth, SB_K, sizeof *truth, cmp_u64);
        for (size_t i = 0, j = 0; i < n_hits && j < SB_K;) {
            if (found[i] == truth[j]) {
                hit_total++;
                i++;
                j++;
            } else if (found[i] < truth[j]) {
                i++;
            } else {
                j++;
            }
        }
    }
    double secs = bu_now_seconds() - t0;
    qsort(lat, nq, sizeof *lat, bu_cmp_double);
    out->L = L;
    out->recall = (double)hit_total / ((double)nq * SB_K);
    out->qps = secs > 0 ? (double)nq / secs : NAN;
    out->p50_ms = bu_percentile(lat, nq, 0.50) * 1e3;
    out->p99_ms = bu_percentile(lat, nq, 0.99) * 1e3;
    return 0;
}

static int run(const options *o, result *r)
{
    memset(r, 0, sizeof *r);
    int rc = -1;
    sv_error err = {0};
    sv_arena *arena = NULL;
    sv_collection *c = NULL;
    float *base = NULL, *queries = NULL;
    int32_t *gt = NULL;
    double *lat = NULL;
    uint64_t *assigned = NULL;
    uint32_t dim = o->dim;
    int want_recall = o->queries > 0;

    /* The base stays in memory for the ground truth; without recall one
     * batch at a time is enough. */
    size_t base_rows = want_recall ? (size_t)o->n : o->batch;
    base = malloc(base_rows * dim * sizeof *base);
    assigned = malloc((size_t)o->batch * sizeof *assigned);
    arena = sv_arena_create();
    if (!base || !assigned || !arena) {
        fprintf(stderr, "slimvec-scale: out of memory (or no jemalloc arena)\n");
        goto cleanup;
    }
    sv_params p;
    sv_params_default(&p, dim);
    p.threads = o->threads;
    p.seed = o->seed;
    p.allocator = sv_arena_allocator(arena);
    if (o->R)
        p.R = o->R;
    if (o->L_build)
        p.L_build = o->L_build;
    else if (p.L_build < p.R)
        p.L_build = p.R;
    if (o->alpha != 0.0f)
        p.alpha = o->alpha;
    r->R = p.R;
    r->L_build = p.L_build;
    r->alpha = p.alpha;
    if (o->mode == SB_ONE_FLUSH)
        p.flush_threshold = 0;
    r->arena_empty = sv_arena_allocated(arena);
    if (sv_collection_create(&p, &c, &err) != SV_OK) {
        print_err("sv_collection_create", &err);
        goto cleanup;
    }

    bu_rng br = {.s = o->seed};
    double t0 = bu_now_seconds(), last = t0;
    for (uint64_t done = 0; done < o->n;) {
        size_t cnt = o->n - done < o->batch ? (size_t)(o->n - done) : o->batch;
        float *rows = want_recall ? base + done * dim : base;
        bu_fill_normal(&br, rows, cnt * dim);
        double ta = bu_now_seconds();
        if (sv_collection_add(c, rows, cnt, dim, NULL, assigned, &err) != SV_OK) {
            print_err("sv_collection_add", &err);
            goto cleanup;
        }
        r->add_seconds += bu_now_seconds() - ta;
        /* Recall maps hit ids to base rows: ids must be the row numbers. */
        for (size_t i = 0; i < cnt; i++) {
            if (assigned[i] != done + i) {
                fprintf(stderr, "slimvec-scale: row %llu got id %llu\n",
                        (unsigned long long)(done + i), (unsigned long long)assigned[i]);
                goto cleanup;
            }
        }
        done += cnt;
        double t = bu_now_seconds();
        if (t - last >= 10.0 || done == o->n) {
            fprintf(stderr, "slimvec-scale: added %llu/%llu, %.0f s\n", (unsigned long long)done,
                    (unsigned long long)o->n, t - t0);
            last = t;
        }
    }
    double tf = bu_now_seconds();
    if (sv_collection_flush(c, &err) != SV_OK) {
        print_err("sv_collection_flush", &err);
        goto cleanup;
    }
    r->flush_seconds = bu_now_seconds() - tf;
    r->build_seconds = bu_now_seconds() - t0;
    r->rate = (double)o->n / r->build_seconds;
    /* Nothing else touches the collection now. */
    sv_stats cs;
    sv_collection_stats(c, &cs);
    r->connect = cs.connect_last;
    r->connect_total = cs.connect_total;
    fprintf(stderr, "slimvec-scale: built in %.1f s (final flush %.1f s); validating\n",
            r->build_seconds, r->flush_seconds);

    sv_error verr = {0};
    double tv = bu_now_seconds();
    r->validate_ok = sv_collection_validate(c, &verr) == SV_OK;
    r->validate_seconds = bu_now_seconds() - tv;
    if (!r->validate_ok)
        snprintf(r->validate_msg, sizeof r->validate_msg, "%s: %s", sv_status_name(verr.code),
                 verr.message);

    r->arena_bytes = sv_arena_allocated(arena);
    sv_collection_stats(c, &r->stats);
    r->bpv = r->stats.live ? (double)(r->arena_bytes - r->arena_empty) / (double)r->stats.live
                           : NAN;

    if (want_recall) {
        queries = malloc((size_t)o->queries * dim * sizeof *queries);
        gt = malloc((size_t)o->queries * SB_K * sizeof *gt);
        lat = malloc((size_t)o->queries * sizeof *lat);
        if (!queries || !gt || !lat) {
            fprintf(stderr, "slimvec-scale: out of memory for the queries\n");
            goto cleanup;
        }
        bu_rng qr = {.s = o->seed ^ 0x5155455259ull}; /* a stream of their own */
        bu_fill_normal(&qr, queries, (size_t)o->queries * dim);
        fprintf(stderr, "slimvec-scale: exact ground truth for %u queries\n", o->queries);
        char gerr[DS_ERR_LEN];
        double tg = bu_now_seconds();
        if (ds_ground_truth(base, (size_t)o->n, queries, o->queries, dim, DS_METRIC_L2, SB_K, 0,
                            gt, gerr) != 0) {
            fprintf(stderr, "slimvec-scale: %s\n", gerr);
            goto cleanup;
        }
        r->gt_seconds = bu_now_seconds() - tg;
        /* One warm-up pass, then the sweep. */
        list_result warm;
        if (measure_list(c, queries, o->queries, dim, gt, o->lists[0], lat, &warm) != 0)
            goto cleanup;
        for (uint32_t i = 0; i < o->n_lists; i++)
            if (measure_list(c, queries, o->queries, dim, gt, o->lists[i], lat, &r->lists[i]) != 0)
                goto cleanup;
        r->n_lists = o->n_lists;
    }
    rc = 0;

cleanup:
    sv_collection_free(c);
    sv_arena_free(arena);
    free(base);
    free(queries);
    free(gt);
    free(lat);
    free(assigned);
    return rc;
}

/* ---- output --------------------------------------------------------------- */

static const char *mode_name(sb_mode m)
{
    return m == SB_ONE_FLUSH ? "one-flush" : "streaming";
}

static void print_table(const options *o, const result *r)
{
    const sv_stats *s = &r->stats;
    double n = s->live ? (double)s->live : 1.0;
    printf("slimvec-scale: n %llu, dim %u, batch %u, mode %s, int8 R %u L_build %u alpha %.2f, "
           "threads %u%s, %ld cores\n",
           (unsigned long long)o->n, o->dim, o->batch, mode_name(o->mode), r->R, r->L_build, (double)r->alpha, o->threads,
           o->threads == 0 ? " (all)" : "", sysconf(_SC_NPROCESSORS_ONLN));
    printf("build:    %.1f s, %.0f vectors/s (adds %.1f s, final flush %.1f s)\n", r->build_seconds,
           r->rate, r->add_seconds, r->flush_seconds);
    for (int t = 0; t < 2; t++) {
        const sv_connect_stats *k = t ? &r->connect_total : &r->connect;
        printf("connect:  %-5s %llu call(s) %.3f s, %llu rounds, %llu unreachable before, "
               "%llu linked (%llu edges replaced, %llu searches, %llu scans), "
               "%llu unreachable after\n",
               t ? "all" : "last", (unsigned long long)k->calls, k->seconds,
               (unsigned long long)k->rounds, (unsigned long long)k->unreachable_before,
               (unsigned long long)k->linked, (unsigned long long)k->replaced,
               (unsigned long long)k->searches, (unsigned long long)k->scans,
               (unsigned long long)k->unreachable_after);
    }
    printf("validate: %s (%.2f s)%s%s\n", r->validate_ok ? "ok" : "FAILED", r->validate_seconds,
           r->validate_ok ? "" : ": ", r->validate_ok ? "" : r->validate_msg);
    printf("memory:   arena %.1f B/vector (%zu B, %llu live); engine estimate: vectors %.1f, "
           "edges %.1f, id map %.1f, buffer %.1f, other %.1f; avg degree %.2f, edge slots %.2f, "
           "max degree %u\n",
           r->bpv, r->arena_bytes - r->arena_empty, (unsigned long long)s->live,
           (double)s->est_bytes_vectors / n, (double)s->est_bytes_edges / n,
           (double)s->est_bytes_idmap / n, (double)s->est_bytes_buffer / n,
           (double)s->est_bytes_other / n, s->avg_degree, s->avg_edge_slots, s->max_degree);
    if (r->n_lists) {
        printf("recall@%d, %u queries, exact ground truth (%.1f s), one thread:\n", SB_K,
               o->queries, r->gt_seconds);
        printf("  %8s %10s %10s %10s %10s\n", "L", "recall", "QPS", "p50 ms", "p99 ms");
        for (uint32_t i = 0; i < r->n_lists; i++) {
            const list_result *l = &r->lists[i];
            printf("  %8u %10.4f %10.0f %10.3f %10.3f\n", l->L, l->recall, l->qps, l->p50_ms,
                   l->p99_ms);
        }
    }
}

static int write_json(const options *o, const result *r)
{
    FILE *f = o->json ? fopen(o->json, "w") : stdout;
    if (!f) {
        fprintf(stderr, "slimvec-scale: %s: cannot create: %s\n", o->json, strerror(errno));
        return -1;
    }
    const sv_stats *s = &r->stats;
    if (!o->json)
        fputs("\n", f);
    fprintf(f, "{\n  \"engine\": \"slimvec\",\n  \"bench\": \"scale\",\n  \"cores\": %ld,\n",
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "  \"n\": %llu, \"dim\": %u, \"batch\": %u, \"mode\": \"%s\", \"threads\": %u, "
               "\"seed\": %llu,\n",
            (unsigned long long)o->n, o->dim, o->batch, mode_name(o->mode), o->threads,
            (unsigned long long)o->seed);
    fprintf(f, "  \"R\": %u, \"L\": %u, \"alpha\": %g,\n", r->R, r->L_build, (double)r->alpha);
    fputs("  \"build_seconds\": ", f);
    bu_json_num(f, r->build_seconds);
    fputs(", \"vectors_per_second\": ", f);
    bu_json_num(f, r->rate);
    fputs(", \"add_seconds\": ", f);
    bu_json_num(f, r->add_seconds);
    fputs(", \"final_flush_seconds\": ", f);
    bu_json_num(f, r->flush_seconds);
    fputs(",\n  \"connect\": {", f);
    for (int t = 0; t < 2; t++) {
        const sv_connect_stats *k = t ? &r->connect_total : &r->connect;
        fprintf(f, "%s\"%s\": {\"calls\": %llu, \"seconds\": ", t ? ", " : "",
                t ? "all" : "last", (unsigned long long)k->calls);
        bu_json_num(f, k->seconds);
        fprintf(f, ", \"rounds\": %llu, \"unreachable_before\": %llu, \"linked\": %llu, "
                   "\"replaced\": %llu, \"searches\": %llu, \"scans\": %llu, "
                   "\"unreachable_after\": %llu}",
                (unsigned long long)k->rounds, (unsigned long long)k->unreachable_before,
                (unsigned long long)k->linked, (unsigned long long)k->replaced,
                (unsigned long long)k->searches, (unsigned long long)k->scans,
                (unsigned long long)k->unreachable_after);
    }
    fputs("},\n", f);
    fprintf(f, "  \"validate\": {\"ok\": %s, \"seconds\": ", r->validate_ok ? "true" : "false");
    bu_json_num(f, r->validate_seconds);
    fputs(", \"message\": ", f);
    bu_json_str(f, r->validate_ok ? NULL : r->validate_msg);
    fprintf(f, "},\n  \"memory\": {\"arena_bytes\": %zu, \"live\": %llu, \"bytes_per_vector_arena\": ",
            r->arena_bytes - r->arena_empty, (unsigned long long)s->live);
    bu_json_num(f, r->bpv);
    fputs(", \"avg_degree\": ", f);
    bu_json_num(f, s->avg_degree);
    fputs(", \"avg_edge_slots\": ", f);
    bu_json_num(f, s->avg_edge_slots);
    fprintf(f, ", \"max_degree\": %u},\n  \"recall\": {\"k\": %d, \"queries\": %u, "
               "\"ground_truth\": \"exact\", \"gt_seconds\": ",
            s->max_degree, SB_K, o->queries);
    bu_json_num(f, r->gt_seconds);
    fputs(", \"lists\": [", f);
    for (uint32_t i = 0; i < r->n_lists; i++) {
        const list_result *l = &r->lists[i];
        fprintf(f, "%s\n    {\"L\": %u, \"recall\": ", i ? "," : "", l->L);
        bu_json_num(f, l->recall);
        fputs(", \"qps\": ", f);
        bu_json_num(f, l->qps);
        fputs(", \"p50_ms\": ", f);
        bu_json_num(f, l->p50_ms);
        fputs(", \"p99_ms\": ", f);
        bu_json_num(f, l->p99_ms);
        fputc('}', f);
    }
    fputs("]}\n}\n", f);
    if (o->json) {
        if (fclose(f) != 0) {
            fprintf(stderr, "slimvec-scale: %s: write error: %s\n", o->json, strerror(errno));
            return -1;
        }
        printf("wrote %s\n", o->json);
    } else {
        fflush(f);
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int pa = parse_args(argc, argv, &o);
    if (pa != 0)
        return pa > 0 ? 0 : 2;
    result *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "slimvec-scale: out of memory\n");
        return 1;
    }
    int rc = 1;
    if (run(&o, r) != 0)
        goto cleanup;
    print_table(&o, r);
    fflush(stdout);
    if (write_json(&o, r) != 0)
        goto cleanup;
    rc = r->validate_ok ? 0 : 1;
cleanup:
    free(r);
    return rc;
}
