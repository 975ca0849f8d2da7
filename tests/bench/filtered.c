/* Filtered search measured (see filtered.h). */
#include "filtered.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

#define FB_QUERIES 1000
#define FB_K 10

static const char *const TAGS[8] = {"new", "sale", "summer", "winter", "kids", "eco", "premium", "basic"};
static const char *const CLASSES[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

/* The filter for a selectivity: one class (a string match) for 10%, else
 * u < 1000 s (an int64 range). *pass(i) says which rows pass. */
typedef struct fb_filter {
    sv_cond cond;
    sv_filter filter;
    int by_class;
    int64_t below;
} fb_filter;

static void make_filter(double s, fb_filter *f)
{
    memset(f, 0, sizeof *f);
    if (fabs(s - 0.1) < 1e-9) {
        f->by_class = 1;
        f->cond = (sv_cond){.kind = SV_COND_MATCH, .key = "class", .value = {.type = SV_PV_STRING, .s = "3"}};
    } else {
        f->below = (int64_t)llround(s * 1000.0);
        f->cond = (sv_cond){.kind = SV_COND_RANGE, .key = "u", .hi = {.set = 1, .is_int = 1, .i = f->below}};
    }
    f->filter = (sv_filter){.must = &f->cond, .n_must = 1};
}

static int passes(const fb_filter *f, int cls, int64_t u)
{
    return f->by_class ? cls == 3 : u < f->below;
}

static int set_payloads(sv_collection *c, size_t n, const int *cls, const int64_t *u, int with_tags)
{
    char id[24];
    uint64_t seed = 0x5eed7a95ull;
    for (size_t i = 0; i < n; i++) {
        sv_pv_field f[3];
        const char *tags[3];
        uint32_t nt = 1 + (uint32_t)(bu_splitmix64(&seed) % 3);
        for (uint32_t t = 0; t < nt; t++)
            tags[t] = TAGS[bu_splitmix64(&seed) % 8];
        f[0] = (sv_pv_field){.key = "class", .type = SV_PV_STRING, .s = CLASSES[cls[i]]};
        f[1] = (sv_pv_field){.key = "u", .type = SV_PV_INT, .i = u[i]};
        f[2] = (sv_pv_field){.key = "tags", .type = SV_PV_STRINGS, .ss = tags, .n = nt};
        sv_payload pl = with_tags ? (sv_payload){&f[2], 1} : (sv_payload){f, 2};
        snprintf(id, sizeof id, "%zu", i);
        sv_error err;
        if (sv_collection_set_payload(c, id, &pl, SV_PAYLOAD_PATCH, &err) != SV_OK) {
            fprintf(stderr, "slimvec-bench: payload of row %zu: %s\n", i, err.message);
            return -1;
        }
    }
    return 0;
}

/* Exact filtered top FB_K of the first nq queries: rows passing copied
 * into a subset, searched by brute force, mapped back. */
static int truth(const ds_fmatrix *base, const ds_fmatrix *query, size_t nq, const fb_filter *f, const int *cls,
                 const int64_t *u, int32_t *out, uint64_t *matches)
{
    size_t m = 0;
    for (size_t i = 0; i < base->rows; i++)
        m += (size_t)passes(f, cls[i], u[i]);
    *matches = m;
    float *sub = malloc((m ? m : 1) * base->dim * sizeof *sub);
    int32_t *map = malloc((m ? m : 1) * sizeof *map), *got = malloc(nq * FB_K * sizeof *got);
    int rc = -1;
    char err[DS_ERR_LEN];
    if (!sub || !map || !got)
        goto done;
    for (size_t i = 0, j = 0; i < base->rows; i++) {
        if (!passes(f, cls[i], u[i]))
            continue;
        memcpy(sub + j * base->dim, base->data + i * base->dim, base->dim * sizeof *sub);
        map[j++] = (int32_t)i;
    }
    uint32_t k = m < FB_K ? (uint32_t)m : FB_K;
    for (size_t i = 0; i < nq * FB_K; i++)
        out[i] = -1;
    if (k && ds_ground_truth(sub, m, query->data, nq, base->dim, DS_METRIC_L2, k, 0, got, err) != 0) {
        fprintf(stderr, "slimvec-bench: filtered ground truth: %s\n", err);
        goto done;
    }
    for (size_t q = 0; q < nq; q++)
        for (uint32_t r = 0; r < k; r++)
            out[q * FB_K + r] = map[got[q * k + r]];
    rc = 0;
done:
    free(sub);
    free(map);
    free(got);
    return rc;
}

static int measure(sv_collection *c, const ds_fmatrix *query, size_t nq, const fb_filter *f, uint32_t list,
                   const int32_t *gt, uint64_t matches, double *lat, fb_point *pt)
{
    sv_hit hits[FB_K];
    size_t want_per = matches < FB_K ? (size_t)matches : FB_K, found = 0;
    for (int pass = 0; pass < 2; pass++) { /* a warm-up pass, then the measured one */
        found = 0;
        for (size_t q = 0; q < nq; q++) {
            size_t nh = 0;
            sv_error err;
            sv_search_opts o = {.k = FB_K, .search_list = list, .filter = &f->filter};
            double t0 = bu_now_seconds();
            if (sv_collection_search_opts(c, query->data + q * query->dim, query->dim, &o, hits, &nh, &err) != SV_OK) {
                fprintf(stderr, "slimvec-bench: filtered search: %s\n", err.message);
                return -1;
            }
            lat[q] = bu_now_seconds() - t0;
            for (size_t h = 0; h < nh; h++) {
                int32_t row = (int32_t)strtol(hits[h].id, NULL, 10);
                for (size_t r = 0; r < want_per; r++)
                    found += gt[q * FB_K + r] == row;
            }
        }
    }
    double total = 0;
    for (size_t q = 0; q < nq; q++)
        total += lat[q];
    qsort(lat, nq, sizeof *lat, bu_cmp_double);
    pt->search_list = list;
    pt->matches = matches;
    pt->recall = want_per ? (double)found / (double)(want_per * nq) : 1.0;
    pt->qps = total > 0 ? (double)nq / total : 0;
    pt->p50_us = bu_percentile(lat, nq, 0.50) * 1e6;
    pt->p99_us = bu_percentile(lat, nq, 0.99) * 1e6;
    return 0;
}

int fb_run(sv_collection *c, sv_arena *arena, const ds_fmatrix *base, const ds_fmatrix *query,
           const int32_t *labels, const double *sels, size_t n_sels, const uint32_t *lists, size_t n_lists,
           const char *peer_dir, int index_keys, fb_results *out)
{
    memset(out, 0, sizeof *out);
    size_t n = base->rows, nq = query->rows < FB_QUERIES ? query->rows : FB_QUERIES;
    int *cls = malloc(n * sizeof *cls);
    int64_t *u = malloc(n * sizeof *u);
    int32_t *gt = malloc(nq * FB_K * sizeof *gt);
    double *lat = malloc(nq * sizeof *lat);
    int rc = -1;
    if (!cls || !u || !gt || !lat)
        goto done;
    uint64_t seed = 0xf11e7ull;
    for (size_t i = 0; i < n; i++) {
        cls[i] = labels ? labels[i] % 10 : (int)(bu_splitmix64(&seed) % 10);
        u[i] = (int64_t)(bu_splitmix64(&seed) % 1000);
    }
    /* Memory by the arena: the class and u first (the figure),
     * then the tags. */
    size_t a0 = sv_arena_allocated(arena);
    if (set_payloads(c, n, cls, u, 0) != 0)
        goto done;
    size_t a1 = sv_arena_allocated(arena);
    if (set_payloads(c, n, cls, u, 1) != 0)
        goto done;
    size_t a2 = sv_arena_allocated(arena);
    static const char *const index_names[3] = {"class", "u", "tags"};
    for (int k = 0; index_keys && k < 3; k++) {
        sv_error ierr;
        if (sv_collection_index_key(c, index_names[k], &ierr) != SV_OK) {
            fprintf(stderr, "slimvec-bench: indexing %s: %s\n", index_names[k], ierr.message);
            goto done;
        }
    }
    out->indexed = index_keys;
    out->index_bpv_arena = ((double)sv_arena_allocated(arena) - (double)a2) / (double)n;
    sv_stats st;
    sv_collection_stats(c, &st);
    /* For the peers: each row's class and u, and below each share's exact
     * answers (ivecs; -1 where fewer than 10 pass). */
    char path[1024], werr[DS_ERR_LEN];
    if (peer_dir) {
        int32_t *attrs = malloc(n * 2 * sizeof *attrs);
        int wrc = -1;
        if (attrs) {
            for (size_t i = 0; i < n; i++) {
                attrs[2 * i] = cls[i];
                attrs[2 * i + 1] = (int32_t)u[i];
            }
            snprintf(path, sizeof path, "%s/attrs.ivecs", peer_dir);
            wrc = ds_write_ivecs(path, attrs, n, 2, werr);
        }
        free(attrs);
        if (wrc != 0) {
            fprintf(stderr, "slimvec-bench: %s\n", attrs ? werr : "out of memory");
            goto done;
        }
    }
    out->payload_bpv_arena = ((double)a1 - (double)a0) / (double)n;
    out->payload_bpv_arena_tags = ((double)a2 - (double)a0) / (double)n;
    out->payload_bpv_tally = (double)st.est_bytes_payload / (double)n;
    out->queries = nq;
    printf("\npayloads: class + u %.2f B/vector by the arena, with tags %.2f (engine's tally %.2f)\n",
           out->payload_bpv_arena, out->payload_bpv_arena_tags, out->payload_bpv_tally);
    if (index_keys)
        printf("indexes of class, u and tags: %.2f B/vector by the arena\n", out->index_bpv_arena);
    printf("filtered search (single thread, k=%d, %zu queries, exact filtered answers):\n", FB_K, nq);
    printf("%12s %10s %12s %12s %12s %10s %10s\n", "selectivity", "matches", "search_list", "recall@10", "QPS",
           "p50 us", "p99 us");
    for (size_t si = 0; si < n_sels; si++) {
        fb_filter f;
        make_filter(sels[si], &f);
        uint64_t matches = 0;
        if (truth(base, query, nq, &f, cls, u, gt, &matches) != 0)
            goto done;
        if (peer_dir) {
            snprintf(path, sizeof path, "%s/filtered-%g.gt.ivecs", peer_dir, sels[si]);
            if (ds_write_ivecs(path, gt, nq, FB_K, werr) != 0) {
                fprintf(stderr, "slimvec-bench: %s\n", werr);
                goto done;
            }
        }
        for (size_t li = 0; li < n_lists && out->n_points < FB_MAX_POINTS; li++) {
            fb_point *pt = &out->points[out->n_points];
            pt->selectivity = sels[si];
            if (measure(c, query, nq, &f, lists[li], gt, matches, lat, pt) != 0)
                goto done;
            out->n_points++;
            printf("%12g %10llu %12u %12.4f %12.0f %10.1f %10.1f\n", pt->selectivity,
                   (unsigned long long)pt->matches, pt->search_list, pt->recall, pt->qps, pt->p50_us, pt->p99_us);
            fflush(stdout);
        }
    }
    rc = 0;
done:
    if (rc != 0 && (!cls || !u || !gt || !lat))
        fprintf(stderr, "slimvec-bench: out of memory\n");
    free(cls);
    free(u);
    free(gt);
    free(lat);
    return rc;
}

void fb_json(FILE *f, const fb_results *r)
{
    fputs("  \"payload_bytes_per_vector\": ", f);
    bu_json_num(f, r->payload_bpv_arena);
    fputs(",\n  \"payload_bytes_per_vector_with_tags\": ", f);
    bu_json_num(f, r->payload_bpv_arena_tags);
    if (r->indexed) {
        fputs(",\n  \"index_bytes_per_vector\": ", f);
        bu_json_num(f, r->index_bpv_arena);
    }
    fputs(",\n  \"filtered\": [", f);
    for (size_t i = 0; i < r->n_points; i++) {
        const fb_point *p = &r->points[i];
        fprintf(f, "%s\n    {\"selectivity\": ", i ? "," : "");
        bu_json_num(f, p->selectivity);
        fprintf(f, ", \"matches\": %llu, \"search_list\": %u, \"recall_at_10\": ", (unsigned long long)p->matches,
                p->search_list);
        bu_json_num(f, p->recall);
        fputs(", \"qps\": ", f);
        bu_json_num(f, p->qps);
        fputs(", \"p50_us\": ", f);
        bu_json_num(f, p->p50_us);
        fputs(", \"p99_us\": ", f);
        bu_json_num(f, p->p99_us);
        fputs("}", f);
    }
    fputs("\n  ],\n", f);
}
