/*
 * slimvec-bench --filter-selectivity: payloads on every base row (a class
 * label, a uniform int64 "u" in 0..999, a list of tags), then for each
 * selectivity a filter passing about that share of the rows, exact
 * filtered answers by brute force, and the recall/QPS curve of filtered
 * searches over the search lists.
 */
#ifndef FILTERED_H
#define FILTERED_H

#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "datasets.h"
#include "slimvec.h"

#define FB_MAX_SELS 8
#define FB_MAX_POINTS 128

typedef struct fb_point {
    double selectivity;   /* asked */
    uint64_t matches;     /* rows the filter passes */
    uint32_t search_list;
    double recall, qps, p50_us, p99_us;
} fb_point;

typedef struct fb_results {
    double payload_bpv_arena;      /* class + u, by the arena (the figure) */
    double payload_bpv_arena_tags; /* with the tag list too */
    double payload_bpv_tally;      /* everything, by the engine's tally */
    int indexed;                   /* class, u and tags indexed (--filter-index) */
    double index_bpv_arena;        /* their indexes, by the arena */
    size_t queries;
    fb_point points[FB_MAX_POINTS];
    size_t n_points;
} fb_results;

/*
 * Set the payloads of rows 0..base->rows-1 (ids are the row numbers),
 * labels[i] the class of row i (NULL: a seeded uniform class), then
 * measure each selectivity at each search list with the first
 * min(1000, queries) queries. With peer_dir (may be NULL), write there
 * attrs.ivecs (each row's class and u) and filtered-<share>.gt.ivecs (the
 * exact answers; -1 where fewer than 10 pass) for the peers. index_keys:
 * index class, u and tags once the payloads are set (their bytes apart).
 * 0 on success.
 */
int fb_run(sv_collection *c, sv_arena *arena, const ds_fmatrix *base, const ds_fmatrix *query,
           const int32_t *labels, const double *sels, size_t n_sels, const uint32_t *lists, size_t n_lists,
           const char *peer_dir, int index_keys, fb_results *out);
/* The JSON members `filtered` and `payload_bytes_per_vector` (no braces). */
void fb_json(FILE *f, const fb_results *r);

#endif
