/*
 * slimvec-bench: measures one collection built from a base set and searched
 * with a query set.
 *
 *   build:  add all base vectors (ids assigned) then one manual flush, timed;
 *   memory: the collection's jemalloc arena (its true bytes) and the process
 *           RSS, both as deltas over the build, per vector;
 *   graph:  sv_collection_stats and sv_collection_validate;
 *   search: for each search list size, single thread, recall@10 against the
 *           exact ground truth, QPS and p50/p99 latency.
 *
 * Results go to stdout as a table and, with --json, to a JSON file that
 * compare.py reads. Run with --help for the options.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sysconf, strtoull on all libcs */
#endif

#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "arena.h"
#include "datasets.h"
#include "filtered.h"
#include "slimvec.h"

#define BENCH_K 10               /* recall@10: hits asked for per query */
#define BENCH_ADD_BATCH 10000    /* vectors per sv_collection_add call */
#define BENCH_MAX_LISTS 64

static const uint32_t DEFAULT_LISTS[] = {10, 16, 20, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256};
static const uint32_t QUICK_LISTS[] = {10, 20, 40, 80, 160, 256};

typedef struct options {
    const char *base, *query, *gt, *gt_out, *dataset, *json, *data_dir;
    ds_metric metric;
    sv_storage storage;
    bool has_R, has_L, has_alpha, has_seed;
    uint32_t R, L, threads;
    float alpha;
    uint64_t seed;
    uint32_t lists[BENCH_MAX_LISTS];
    size_t n_lists;
    bool quick;
    bool originals;                    /* --originals disk */
    uint32_t depths[BENCH_MAX_LISTS];  /* --rerank-depths; 0 = the search list */
    size_t n_depths;
    double sels[FB_MAX_SELS];          /* --filter-selectivity */
    size_t n_sels;
    const char *filter_out;            /* --filter-out DIR: the peers' inputs */
    int filter_index;                  /* --filter-index */
} options;

/* One point of the recall/QPS curve. */
typedef struct point {
    uint32_t search_list;
    uint32_t rerank_depth;   /* 0: no re-ranking */
    double recall, qps, p50_us, p99_us;
} point;

/* Everything measured, for the table and the JSON. */
typedef struct results {
    size_t n, nq;
    uint32_t dim;
    double add_seconds, flush_seconds, build_seconds, insert_rate;
    size_t arena_before, arena_after;
    size_t active_before, active_after; /* arena pages in use, bytes */
    size_t rss_before, rss_after_raw, rss_after;
    double bpv_arena, bpv_arena_active, bpv_rss, bpv_rss_raw;
    sv_stats stats;
    bool validate_ok;
    double validate_seconds;
    char validate_message[320]; /* status name + sv_error.message */
    point points[BENCH_MAX_LISTS * (BENCH_MAX_LISTS + 1)];
    size_t n_points;
} results;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: slimvec-bench (--base B.fvecs --query Q.fvecs [--gt G.ivecs] | --dataset founding|fashion | --quick)\n"
            "                     [--metric l2|ip|cosine] [--storage f32|int8]\n"
            "                     [--R N] [--L N] [--alpha F] [--threads N] [--seed N]\n"
            "                     [--search-lists 10,20,40,...] [--json OUT] [--data-dir DIR] [--gt-out G.ivecs]\n"
            "                     [--originals none|disk] [--rerank-depths 0,20,...]\n"
            "                     [--filter-selectivity 0.5,0.1,0.01,0.001]\n"
            "\n"
            "  --dataset NAME    built-in dataset, written to the cache directory (--data-dir,\n"
            "                    else $SLIMVEC_BENCH_DATA, else ./bench-data) and reused\n"
            "  --gt FILE         exact neighbours (.ivecs, >= %d per query); computed by brute\n"
            "                    force when omitted (and saved to --gt-out if given)\n"
            "  --metric          default l2; --storage default int8\n"
            "  --R --L --alpha --seed   graph parameters (default: sv_params_default)\n"
            "  --threads N       build threads, 0 = all cores (default 0); searches are single-thread\n"
            "  --search-lists    search list sizes to sweep (values below k=%d are dropped)\n"
            "  --quick           the founding set at default parameters with a short sweep\n"
            "  --originals disk  keep float32 originals in a file ($TMPDIR, unnamed) and re-rank:\n"
            "                    each search list is measured without re-ranking and then at\n"
            "                    every --rerank-depths value (default 0 = the search list)\n"
            "  --filter-selectivity  payloads on every row (class: Fashion's label or a seeded one;\n"
            "                    u: uniform 0..999; tags), then filtered searches at each share\n"
            "                    (0.1: one class; else u < 1000 x share) over the search lists,\n"
            "                    against exact filtered answers (the first 1,000 queries)\n"
            "  --filter-index    index class, u and tags (CreateIndex) once the payloads are set\n"
            "  --filter-out DIR  also write the rows' class and u and the filtered answers there\n"
            "                    (attrs.ivecs, filtered-<share>.gt.ivecs: compare.py's peers read them)\n",
            BENCH_K, BENCH_K);
}

/* "10,20,40" -> lists; values below k are dropped since the engine raises
 * them to k anyway and they would duplicate the k point. */
static int parse_lists(const char *s, options *o)
{
    return bu_parse_u32_list("slimvec-bench", "--search-lists", s, 1, BENCH_K, 1u << 20, o->lists,
                             BENCH_MAX_LISTS, &o->n_lists);
}

/* "0,20,40" -> re-rank depths (0: the search list). */
static int parse_depths(const char *s, options *o)
{
    return bu_parse_u32_list("slimvec-bench", "--rerank-depths", s, 0, 0, SV_L_MAX, o->depths,
                             BENCH_MAX_LISTS, &o->n_depths);
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 on a usage error. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->metric = DS_METRIC_L2;
    o->storage = SV_STORAGE_INT8;
    bool lists_given = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--quick") == 0) {
            o->quick = true;
            continue;
        }
        if (strcmp(arg, "--filter-index") == 0) {
            o->filter_index = 1;
            continue;
        }
        /* Every other option takes a value. */
        if (strncmp(arg, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "slimvec-bench: %s: %s\n", arg,
                    strncmp(arg, "--", 2) != 0 ? "unexpected argument" : "missing value");
            return -1;
        }
        const char *v = argv[++i];
        if (strcmp(arg, "--base") == 0)
            o->base = v;
        else if (strcmp(arg, "--query") == 0)
            o->query = v;
        else if (strcmp(arg, "--gt") == 0)
            o->gt = v;
        else if (strcmp(arg, "--gt-out") == 0)
            o->gt_out = v;
        else if (strcmp(arg, "--dataset") == 0)
            o->dataset = v;
        else if (strcmp(arg, "--json") == 0)
            o->json = v;
        else if (strcmp(arg, "--data-dir") == 0)
            o->data_dir = v;
        else if (strcmp(arg, "--metric") == 0) {
            if (ds_metric_parse(v, &o->metric) != 0) {
                fprintf(stderr, "slimvec-bench: --metric: '%s' is not l2, ip or cosine\n", v);
                return -1;
            }
        } else if (strcmp(arg, "--storage") == 0) {
            if (strcmp(v, "f32") == 0)
                o->storage = SV_STORAGE_F32;
            else if (strcmp(v, "int8") == 0)
                o->storage = SV_STORAGE_INT8;
            else {
                fprintf(stderr, "slimvec-bench: --storage: '%s' is not f32 or int8\n", v);
                return -1;
            }
        } else if (strcmp(arg, "--R") == 0) {
            if (bu_parse_u32("slimvec-bench", arg, v, 1, SV_R_MAX, &o->R) != 0)
                return -1;
            o->has_R = true;
        } else if (strcmp(arg, "--L") == 0) {
            if (bu_parse_u32("slimvec-bench", arg, v, 1, 1u << 20, &o->L) != 0)
                return -1;
            o->has_L = true;
        } else if (strcmp(arg, "--alpha") == 0) {
            char *end = NULL;
            errno = 0;
            o->alpha = strtof(v, &end);
            if (errno != 0 || end == v || *end != '\0' || !isfinite(o->alpha)) {
                fprintf(stderr, "slimvec-bench: --alpha: '%s' is not a number\n", v);
                return -1;
            }
            o->has_alpha = true;
        } else if (strcmp(arg, "--threads") == 0) {
            if (bu_parse_u32("slimvec-bench", arg, v, 0, 1024, &o->threads) != 0)
                return -1;
        } else if (strcmp(arg, "--seed") == 0) {
            if (bu_parse_u64("slimvec-bench", arg, v, 0, UINT64_MAX, &o->seed) != 0)
                return -1;
            o->has_seed = true;
        } else if (strcmp(arg, "--originals") == 0) {
            if (strcmp(v, "disk") != 0 && strcmp(v, "none") != 0) {
                fprintf(stderr, "slimvec-bench: --originals: '%s' is not none or disk\n", v);
                return -1;
            }
            o->originals = strcmp(v, "disk") == 0;
        } else if (strcmp(arg, "--rerank-depths") == 0) {
            if (parse_depths(v, o) != 0)
                return -1;
        } else if (strcmp(arg, "--filter-out") == 0) {
            o->filter_out = v;
        } else if (strcmp(arg, "--filter-selectivity") == 0) {
            char *end = NULL;
            const char *at = v;
            o->n_sels = 0;
            while (*at) {
                double x = strtod(at, &end);
                if (end == at || !(x >= 0.001 && x <= 1.0) || o->n_sels == FB_MAX_SELS || (*end && *end != ',')) {
                    fprintf(stderr, "slimvec-bench: --filter-selectivity: '%s' is not a list of up to %d shares in "
                                    "0.001..1\n", v, FB_MAX_SELS);
                    return -1;
                }
                o->sels[o->n_sels++] = x;
                at = *end ? end + 1 : end;
            }
        } else if (strcmp(arg, "--search-lists") == 0) {
            if (parse_lists(v, o) != 0)
                return -1;
            lists_given = true;
        } else {
            fprintf(stderr, "slimvec-bench: unknown option %s (see --help)\n", arg);
            return -1;
        }
    }

    bool files = o->base || o->query || o->gt;
    if (o->quick && !o->dataset && !files)
        o->dataset = "founding";
    if (o->dataset && files) {
        fprintf(stderr, "slimvec-bench: give either --dataset or --base/--query[/--gt], not both\n");
        return -1;
    }
    if (!o->dataset && (!o->base || !o->query)) {
        fprintf(stderr, "slimvec-bench: need --base and --query, or --dataset (see --help)\n");
        return -1;
    }
    if (!lists_given) {
        const uint32_t *src = o->quick ? QUICK_LISTS : DEFAULT_LISTS;
        size_t n = o->quick ? sizeof QUICK_LISTS / sizeof QUICK_LISTS[0]
                            : sizeof DEFAULT_LISTS / sizeof DEFAULT_LISTS[0];
        memcpy(o->lists, src, n * sizeof *src);
        o->n_lists = n;
    }
    if (!o->data_dir)
        o->data_dir = ds_default_cache_dir();
    return 0;
}

/* Resident set size from /proc/self/statm (second field, in pages). */
static size_t read_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Returns the dirty pages of every jemalloc arena to the kernel. Blocks freed
 * during the build (flush scratch, the emptied write buffer) would otherwise
 * stay resident until jemalloc's decay timer runs, and the RSS delta would
 * depend on how fast the machine is rather than on what the collection
 * holds. Both figures (before and after the purge) are reported. */
static void purge_all_arenas(void)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
    mallctl(name, NULL, NULL, NULL, 0);
}

/* Pages the collection's arena holds active (in-use slabs and large
 * extents), in bytes: above the allocated bytes by the size-class rounding
 * and the free regions of partly used slabs, i.e. the fragmentation that the
 * RSS pays for and sv_arena_allocated does not show. */
static size_t arena_active_bytes(sv_arena *arena)
{
    char name[96];
    size_t pages = 0, len = sizeof pages;
    uint64_t epoch = 1;
    size_t elen = sizeof epoch;
    mallctl("epoch", &epoch, &elen, &epoch, elen);
    snprintf(name, sizeof name, "stats.arenas.%u.pactive", sv_arena_index(arena));
    if (mallctl(name, &pages, &len, NULL, 0) != 0)
        return 0;
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* A hit id is the decimal of an assigned id, which for a fresh collection
 * filled in order is the base row index. Returns -1 for anything else. */
static int64_t hit_row(const char *id, size_t nb)
{
    char *end = NULL;
    errno = 0;
    if (id[0] < '0' || id[0] > '9')
        return -1;
    unsigned long long v = strtoull(id, &end, 10);
    if (errno != 0 || *end != '\0' || v >= nb)
        return -1;
    return (int64_t)v;
}

/* Loads base, query and ground truth. The base array is read (so every page
 * is touched) before the first RSS reading and freed only at exit, so it is
 * outside the measured delta. */
static int load_inputs(options *o, ds_files *files, ds_fmatrix *base, ds_fmatrix *query,
                       ds_imatrix *gt)
{
    char err[DS_ERR_LEN];
    int rc = -1;

    if (o->dataset) {
        if (ds_prepare_builtin(o->dataset, o->data_dir, o->metric, o->threads, files, stderr,
                               err) != 0)
            goto fail;
        printf("dataset %s files:\n  base  %s\n  query %s\n  gt    %s\n", o->dataset, files->base,
               files->query, files->gt);
        o->base = files->base;
        o->query = files->query;
        o->gt = files->gt;
    }
    if (ds_read_fvecs(o->base, base, err) != 0 || ds_read_fvecs(o->query, query, err) != 0)
        goto fail;
    if (base->dim != query->dim) {
        fprintf(stderr, "slimvec-bench: %s has dimension %u but %s has %u\n", o->base, base->dim,
                o->query, query->dim);
        goto cleanup;
    }
    if (base->dim > SV_DIM_MAX || base->rows < BENCH_K || query->rows == 0) {
        fprintf(stderr, "slimvec-bench: need dim <= %d, >= %d base rows and >= 1 query (have %u, %zu, %zu)\n",
                SV_DIM_MAX, BENCH_K, base->dim, base->rows, query->rows);
        goto cleanup;
    }

    if (o->gt) {
        if (ds_read_ivecs(o->gt, gt, err) != 0)
            goto fail;
        if (gt->rows != query->rows || gt->dim < BENCH_K) {
            fprintf(stderr, "slimvec-bench: %s: %zu rows of %u ids; need %zu rows (one per query) of >= %d\n",
                    o->gt, gt->rows, gt->dim, query->rows, BENCH_K);
            goto cleanup;
        }
        for (size_t i = 0; i < gt->rows * gt->dim; i++) {
            if (gt->data[i] < 0 || (size_t)gt->data[i] >= base->rows) {
                fprintf(stderr, "slimvec-bench: %s: record %zu, id %d at offset %llu is not a row of %s (%zu rows)\n",
                        o->gt, i / gt->dim, (int)gt->data[i],
                        (unsigned long long)((i / gt->dim) * (4ull + 4ull * gt->dim) + 4ull +
                                             4ull * (i % gt->dim)),
                        o->base, base->rows);
                goto cleanup;
            }
        }
    } else {
        uint32_t k = base->rows < DS_GT_K ? (uint32_t)base->rows : DS_GT_K;
        gt->rows = query->rows;
        gt->dim = k;
        gt->data = malloc(sizeof *gt->data * query->rows * k);
        if (!gt->data) {
            fprintf(stderr, "slimvec-bench: out of memory for the ground truth\n");
            goto cleanup;
        }
        printf("computing exact %s ground truth (%zu x %zu, top %u)...\n", ds_metric_name(o->metric),
               query->rows, base->rows, k);
        fflush(stdout);
        double t0 = bu_now_seconds();
        if (ds_ground_truth(base->data, base->rows, query->data, query->rows, base->dim, o->metric,
                            k, o->threads, gt->data, err) != 0)
            goto fail;
        printf("ground truth: %.1f s\n", bu_now_seconds() - t0);
        if (o->gt_out) {
            if (ds_write_ivecs(o->gt_out, gt->data, gt->rows, gt->dim, err) != 0)
                goto fail;
            printf("ground truth written to %s\n", o->gt_out);
            o->gt = o->gt_out;
        }
    }
    rc = 0;
    goto cleanup;

fail:
    fprintf(stderr, "slimvec-bench: %s\n", err);
cleanup:
    return rc;
}

/* Adds every base row (ids assigned) and flushes; fills build and memory
 * figures. */
static int build(sv_collection **out, const sv_params *params, sv_arena *arena,
                 const ds_fmatrix *base, results *res)
{
    sv_error err = {0};
    sv_collection *c = NULL;
    int rc = -1;

    /* Baselines after a purge, so that the before and after readings treat
     * retained free pages the same way. The collection is created inside the
     * measured span: its fixed overhead is part of its true cost. */
    purge_all_arenas();
    res->rss_before = read_rss();
    res->arena_before = sv_arena_allocated(arena);
    res->active_before = arena_active_bytes(arena);

    double t0 = bu_now_seconds();
    if (sv_collection_create(params, &c, &err) != SV_OK) {
        fprintf(stderr, "slimvec-bench: sv_collection_create: %s: %s\n", sv_status_name(err.code),
                err.message);
        goto cleanup;
    }
    for (size_t i = 0; i < base->rows; i += BENCH_ADD_BATCH) {
        size_t n = base->rows - i < BENCH_ADD_BATCH ? base->rows - i : BENCH_ADD_BATCH;
        const float *rows = base->data + i * base->dim;
        if (sv_collection_add(c, rows, n, base->dim, NULL, NULL, &err) != SV_OK) {
            fprintf(stderr, "slimvec-bench: sv_collection_add (rows %zu..%zu): %s: %s\n", i,
                    i + n - 1, sv_status_name(err.code), err.message);
            goto cleanup;
        }
    }
    double t1 = bu_now_seconds();
    if (sv_collection_flush(c, &err) != SV_OK) {
        fprintf(stderr, "slimvec-bench: sv_collection_flush: %s: %s\n", sv_status_name(err.code),
                err.message);
        goto cleanup;
    }
    double t2 = bu_now_seconds();

    res->add_seconds = t1 - t0;
    res->flush_seconds = t2 - t1;
    res->build_seconds = t2 - t0;
    res->insert_rate = res->build_seconds > 0 ? (double)base->rows / res->build_seconds : 0.0;

    res->arena_after = sv_arena_allocated(arena);
    res->active_after = arena_active_bytes(arena);
    res->rss_after_raw = read_rss();
    purge_all_arenas();
    res->rss_after = read_rss();
    double n = (double)base->rows;
    res->bpv_arena = ((double)res->arena_after - (double)res->arena_before) / n;
    res->bpv_arena_active = ((double)res->active_after - (double)res->active_before) / n;
    res->bpv_rss = ((double)res->rss_after - (double)res->rss_before) / n;
    res->bpv_rss_raw = ((double)res->rss_after_raw - (double)res->rss_before) / n;

    *out = c;
    c = NULL;
    rc = 0;

cleanup:
    sv_collection_free(c);
    return rc;
}

/* Runs every query at one search list size: a warm-up pass, then a timed
 * pass with a clock reading around each query. Recall is scored after the
 * timed pass so that it costs no query time. */
static int sweep_point(sv_collection *c, const ds_fmatrix *base, const ds_fmatrix *query,
                       const ds_imatrix *gt, uint32_t search_list, uint32_t rerank, double *lat,
                       int64_t *found, point *pt)
{
    sv_error err = {0};
    sv_search_opts so = {.k = BENCH_K, .search_list = search_list, .rerank = rerank};
    sv_hit hits[BENCH_K];
    size_t n_hits = 0;

    for (size_t q = 0; q < query->rows; q++) {
        const float *qv = query->data + q * query->dim;
        if (sv_collection_search_opts(c, qv, query->dim, &so, hits, &n_hits, &err) != SV_OK)
            goto search_failed;
    }

    /* QPS is queries over the summed per-query times, so the id parsing
     * below is not charged to the engine. */
    double total_us = 0.0;
    for (size_t q = 0; q < query->rows; q++) {
        const float *qv = query->data + q * query->dim;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        sv_status s = sv_collection_search_opts(c, qv, query->dim, &so, hits, &n_hits, &err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (s != SV_OK)
            goto search_failed;
        lat[q] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) * 1e-3;
        total_us += lat[q];
        for (size_t j = 0; j < BENCH_K; j++)
            found[q * BENCH_K + j] = -1;
        for (size_t j = 0; j < n_hits && j < BENCH_K; j++) {
            int64_t row = hit_row(hits[j].id, base->rows);
            if (row < 0) {
                fprintf(stderr, "slimvec-bench: query %zu: hit id '%s' is not a base row index 0..%zu\n",
                        q, hits[j].id, base->rows - 1);
                return -1;
            }
            found[q * BENCH_K + j] = row;
        }
    }

    /* recall@10 = |result top 10 ∩ exact top 10| / 10, averaged; a row
     * returned twice counts once. */
    double sum = 0.0;
    for (size_t q = 0; q < query->rows; q++) {
        const int64_t *f = found + q * BENCH_K;
        const int32_t *g = gt->data + q * gt->dim;
        unsigned match = 0;
        for (size_t j = 0; j < BENCH_K; j++) {
            if (f[j] < 0)
                continue;
            bool dup = false;
            for (size_t i = 0; i < j; i++)
                dup = dup || f[i] == f[j];
            if (dup)
                continue;
            for (size_t i = 0; i < BENCH_K; i++) {
                if (g[i] == f[j]) {
                    match++;
                    break;
                }
            }
        }
        sum += (double)match / BENCH_K;
    }

    qsort(lat, query->rows, sizeof *lat, bu_cmp_double);
    pt->search_list = search_list;
    pt->rerank_depth = rerank == SV_RERANK_OFF || !sv_collection_params(c)->originals ? 0
                       : rerank ? (rerank < search_list ? rerank : search_list) : search_list;
    pt->recall = sum / (double)query->rows;
    pt->qps = total_us > 0 ? (double)query->rows * 1e6 / total_us : 0.0;
    pt->p50_us = bu_percentile(lat, query->rows, 0.50);
    pt->p99_us = bu_percentile(lat, query->rows, 0.99);
    return 0;

search_failed:
    fprintf(stderr, "slimvec-bench: sv_collection_search (search list %u): %s: %s\n", search_list,
            sv_status_name(err.code), err.message);
    return -1;
}

static void print_breakdown(const results *r)
{
    const sv_stats *s = &r->stats;
    double n = (double)r->n;
    uint64_t est = s->est_bytes_vectors + s->est_bytes_edges + s->est_bytes_idmap +
                   s->est_bytes_buffer + s->est_bytes_other + s->est_bytes_payload;
    printf("\ngraph: live %llu, indexed %llu, buffered %llu, avg degree %.2f, avg edge slots %.2f, max degree %u\n",
           (unsigned long long)s->live, (unsigned long long)s->indexed,
           (unsigned long long)s->buffered, s->avg_degree, s->avg_edge_slots, s->max_degree);
    printf("memory per vector (engine's estimate by part):\n");
    printf("  vectors %8.1f B\n  edges   %8.1f B\n  id map  %8.1f B\n  buffer  %8.1f B\n  other   %8.1f B\n",
           (double)s->est_bytes_vectors / n, (double)s->est_bytes_edges / n,
           (double)s->est_bytes_idmap / n, (double)s->est_bytes_buffer / n,
           (double)s->est_bytes_other / n);
    if (s->est_bytes_payload)
        printf("  payload %8.1f B\n", (double)s->est_bytes_payload / n);
    printf("  sum     %8.1f B   (arena measured: %.1f B)\n", (double)est / n, r->bpv_arena);
    if (s->orig_file_bytes)
        printf("originals on disk (not memory): %.1f B/vector on disk, %.1f B/vector in the page cache\n",
               (double)s->orig_disk_bytes / n, (double)s->orig_resident_bytes / n);
}

static int write_json(const char *path, const options *o, const sv_params *p, const results *r,
                      const fb_results *fb)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "slimvec-bench: %s: cannot create: %s\n", path, strerror(errno));
        return -1;
    }
    const sv_stats *s = &r->stats;
    fputs("{\n  \"engine\": \"slimvec\",\n  \"dataset\": ", f);
    bu_json_str(f, o->dataset);
    fputs(",\n  \"files\": {\"base\": ", f);
    bu_json_str(f, o->base);
    fputs(", \"query\": ", f);
    bu_json_str(f, o->query);
    fputs(", \"gt\": ", f);
    bu_json_str(f, o->gt);
    fprintf(f, "},\n  \"metric\": \"%s\",\n  \"storage\": \"%s\",\n", ds_metric_name(o->metric),
            o->storage == SV_STORAGE_INT8 ? "int8" : "f32");
    /* alpha is a float: %g keeps 1.2 from printing as 1.200000048. */
    fprintf(f, "  \"R\": %u,\n  \"L\": %u,\n  \"alpha\": %g", p->R, p->L_build, (double)p->alpha);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"threads\": %u,\n  \"cores\": %ld,\n  \"k\": %d,\n",
            (unsigned long long)p->seed, p->threads, sysconf(_SC_NPROCESSORS_ONLN), BENCH_K);
    fprintf(f, "  \"n\": %zu,\n  \"dim\": %u,\n  \"n_queries\": %zu,\n", r->n, r->dim, r->nq);
    fputs("  \"add_seconds\": ", f);
    bu_json_num(f, r->add_seconds);
    fputs(",\n  \"flush_seconds\": ", f);
    bu_json_num(f, r->flush_seconds);
    fputs(",\n  \"build_seconds\": ", f);
    bu_json_num(f, r->build_seconds);
    fputs(",\n  \"insert_rate\": ", f);
    bu_json_num(f, r->insert_rate);
    fprintf(f, ",\n  \"arena_bytes\": %lld,\n  \"rss_bytes_delta\": %lld,\n",
            (long long)r->arena_after - (long long)r->arena_before,
            (long long)r->rss_after - (long long)r->rss_before);
    fputs("  \"bytes_per_vector_arena\": ", f);
    bu_json_num(f, r->bpv_arena);
    fputs(",\n  \"bytes_per_vector_arena_active\": ", f);
    bu_json_num(f, r->bpv_arena_active);
    fputs(",\n  \"bytes_per_vector_rss\": ", f);
    bu_json_num(f, r->bpv_rss);
    fputs(",\n  \"bytes_per_vector_rss_unpurged\": ", f);
    bu_json_num(f, r->bpv_rss_raw);
    fputs(",\n  \"avg_degree\": ", f);
    bu_json_num(f, s->avg_degree);
    fputs(",\n  \"avg_edge_slots\": ", f);
    bu_json_num(f, s->avg_edge_slots);
    fputs(",\n  \"avg_edge_bytes\": ", f);
    bu_json_num(f, s->avg_edge_bytes);
    fprintf(f, ",\n  \"max_degree\": %u,\n", s->max_degree);
    fprintf(f,
            "  \"est_bytes\": {\"vectors\": %llu, \"edges\": %llu, \"idmap\": %llu, \"buffer\": %llu, \"other\": %llu},\n",
            (unsigned long long)s->est_bytes_vectors, (unsigned long long)s->est_bytes_edges,
            (unsigned long long)s->est_bytes_idmap, (unsigned long long)s->est_bytes_buffer,
            (unsigned long long)s->est_bytes_other);
    fprintf(f, "  \"memory_by_part\": {\"codes\": ");
    bu_json_num(f, (double)s->est_bytes_vectors / (double)r->n);
    fputs(", \"edges\": ", f);
    bu_json_num(f, (double)s->est_bytes_edges / (double)r->n);
    fputs(", \"ids\": ", f);
    bu_json_num(f, (double)s->est_bytes_idmap / (double)r->n);
    fputs(", \"other\": ", f);
    bu_json_num(f, (double)(s->est_bytes_buffer + s->est_bytes_other) / (double)r->n);
    fputs(", \"payload\": ", f);
    bu_json_num(f, (double)s->est_bytes_payload / (double)r->n);
    fprintf(f, "},\n  \"originals\": \"%s\",\n  \"disk_bytes_per_vector\": ", o->originals ? "disk" : "none");
    bu_json_num(f, (double)s->orig_disk_bytes / (double)r->n);
    fputs(",\n  \"originals_resident_bytes_per_vector\": ", f);
    bu_json_num(f, (double)s->orig_resident_bytes / (double)r->n);
    fputs(",\n", f);
    if (fb)
        fb_json(f, fb);
    fprintf(f, "  \"validate\": {\"ok\": %s, \"seconds\": ", r->validate_ok ? "true" : "false");
    bu_json_num(f, r->validate_seconds);
    fputs(", \"message\": ", f);
    bu_json_str(f, r->validate_ok ? NULL : r->validate_message);
    fputs("},\n  \"points\": [", f);
    for (size_t i = 0; i < r->n_points; i++) {
        const point *pt = &r->points[i];
        fprintf(f, "%s\n    {\"search_list\": %u, \"rerank_depth\": %u, \"recall_at_10\": ", i ? "," : "",
                pt->search_list, pt->rerank_depth);
        bu_json_num(f, pt->recall);
        fputs(", \"qps\": ", f);
        bu_json_num(f, pt->qps);
        fputs(", \"p50_us\": ", f);
        bu_json_num(f, pt->p50_us);
        fputs(", \"p99_us\": ", f);
        bu_json_num(f, pt->p99_us);
        fputc('}', f);
    }
    fputs("\n  ]\n}\n", f);
    if (fclose(f) != 0) {
        fprintf(stderr, "slimvec-bench: %s: write error: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    ds_files files;
    ds_fmatrix base = {0}, query = {0};
    ds_imatrix gt = {0};
    sv_arena *arena = NULL;
    sv_collection *c = NULL;
    double *lat = NULL;
    int64_t *found = NULL;
    results *res = NULL;
    fb_results *fb = NULL;
    int rc = 1;

    int pa = parse_args(argc, argv, &o);
    if (pa != 0) {
        rc = pa > 0 ? 0 : 2;
        goto cleanup;
    }
    res = calloc(1, sizeof *res);
    if (!res) {
        fprintf(stderr, "slimvec-bench: out of memory\n");
        goto cleanup;
    }
    if (load_inputs(&o, &files, &base, &query, &gt) != 0)
        goto cleanup;
    res->n = base.rows;
    res->nq = query.rows;
    res->dim = base.dim;

    arena = sv_arena_create();
    if (!arena) {
        fprintf(stderr, "slimvec-bench: cannot create a jemalloc arena\n");
        goto cleanup;
    }
    sv_params params;
    sv_params_default(&params, base.dim);
    params.metric = o.metric == DS_METRIC_L2   ? SV_METRIC_L2
                    : o.metric == DS_METRIC_IP ? SV_METRIC_IP
                                               : SV_METRIC_COSINE;
    params.storage = o.storage;
    if (o.has_R)
        params.R = o.R;
    if (o.has_L)
        params.L_build = o.L;
    if (o.has_alpha)
        params.alpha = o.alpha;
    if (o.has_seed)
        params.seed = o.seed;
    params.threads = o.threads;
    params.flush_threshold = 0; /* one manual flush: the build is add + flush */
    params.allocator = sv_arena_allocator(arena);
    params.originals = o.originals ? SV_ORIGINALS_DISK : SV_ORIGINALS_NONE;

    printf("slimvec: n %zu, dim %u, queries %zu, metric %s, storage %s, R %u, L %u, alpha %.2f, threads %u%s\n",
           base.rows, base.dim, query.rows, sv_metric_name(params.metric),
           sv_storage_name(params.storage), params.R, params.L_build, params.alpha, params.threads,
           params.threads == 0 ? " (all cores)" : "");
    fflush(stdout);

    if (build(&c, &params, arena, &base, res) != 0)
        goto cleanup;
    printf("build: %.2f s (add %.2f s + flush %.2f s), %.0f vectors/s\n", res->build_seconds,
           res->add_seconds, res->flush_seconds, res->insert_rate);
    printf("memory per vector: arena allocated %.1f B, arena active pages %.1f B, "
           "RSS %.1f B (%.1f B before purging freed pages)\n",
           res->bpv_arena, res->bpv_arena_active, res->bpv_rss, res->bpv_rss_raw);

    sv_collection_stats(c, &res->stats);
    print_breakdown(res);
    if (res->stats.live != base.rows || res->stats.indexed != base.rows)
        printf("WARNING: expected %zu live and indexed vectors\n", base.rows);

    sv_error verr = {0};
    double tv = bu_now_seconds();
    res->validate_ok = sv_collection_validate(c, &verr) == SV_OK;
    res->validate_seconds = bu_now_seconds() - tv;
    if (res->validate_ok) {
        printf("validate: ok (%.2f s)\n", res->validate_seconds);
    } else {
        snprintf(res->validate_message, sizeof res->validate_message, "%s: %s",
                 sv_status_name(verr.code), verr.message);
        printf("validate: FAILED: %s\n", res->validate_message);
    }

    lat = malloc(sizeof *lat * query.rows);
    found = malloc(sizeof *found * query.rows * BENCH_K);
    if (!lat || !found) {
        fprintf(stderr, "slimvec-bench: out of memory\n");
        goto cleanup;
    }
    printf("\nsearch (single thread, k=%d, %zu queries, warm-up pass first):\n", BENCH_K, query.rows);
    printf("%12s %8s %12s %12s %10s %10s\n", "search_list", "rerank", "recall@10", "QPS", "p50 us",
           "p99 us");
    /* With originals: each list without re-ranking, then at each depth. */
    uint32_t depths[BENCH_MAX_LISTS + 1];
    size_t nd = 0;
    depths[nd++] = SV_RERANK_OFF;
    if (o.originals) {
        if (!o.n_depths)
            depths[nd++] = 0;
        for (size_t j = 0; j < o.n_depths; j++)
            depths[nd++] = o.depths[j];
    }
    for (size_t i = 0; i < o.n_lists; i++) {
        for (size_t j = 0; j < nd; j++) {
            point *pt = &res->points[res->n_points];
            if (sweep_point(c, &base, &query, &gt, o.lists[i], depths[j], lat, found, pt) != 0)
                goto cleanup;
            res->n_points++;
            printf("%12u %8u %12.4f %12.0f %10.1f %10.1f\n", pt->search_list, pt->rerank_depth, pt->recall,
                   pt->qps, pt->p50_us, pt->p99_us);
            fflush(stdout);
        }
    }
    /* The page-cache share after the searches touched the originals. */
    sv_collection_stats(c, &res->stats);

    if (o.n_sels) {
        if (!(fb = calloc(1, sizeof *fb)))
            goto cleanup;
        int32_t *labels = NULL;
        char lerr[DS_ERR_LEN];
        if (o.dataset && strcmp(o.dataset, "fashion") == 0) {
            if (!(labels = malloc(base.rows * sizeof *labels)) || ds_fashion_labels(labels, base.rows, lerr) != 0) {
                fprintf(stderr, "slimvec-bench: %s\n", labels ? lerr : "out of memory");
                free(labels);
                goto cleanup;
            }
        }
        int frc = fb_run(c, arena, &base, &query, labels, o.sels, o.n_sels, o.lists, o.n_lists, o.filter_out,
                         o.filter_index, fb);
        free(labels);
        if (frc != 0)
            goto cleanup;
    }

    if (o.json) {
        if (write_json(o.json, &o, sv_collection_params(c), res, fb) != 0)
            goto cleanup;
        printf("\nwrote %s\n", o.json);
    }
    rc = res->validate_ok ? 0 : 1;

cleanup:
    sv_collection_free(c);
    sv_arena_free(arena);
    ds_fmatrix_free(&base);
    ds_fmatrix_free(&query);
    ds_imatrix_free(&gt);
    free(lat);
    free(found);
    free(res);
    free(fb);
    return rc;
}
