/*
 * Benchmark datasets: TEXMEX .fvecs/.ivecs reading and writing, exact
 * brute-force ground truth, and the two built-in datasets ("founding" and
 * "fashion") materialised into a cache directory so that slimvec-bench and
 * the Python tools (hnswlib_bench.py, compare.py) read the very same files.
 *
 * The file format (TEXMEX, little-endian): each record is an int32 dimension
 * d followed by d values (float32 for .fvecs, int32 for .ivecs). Every record
 * of a file has the same d. The reading and writing is service/vecfile.c's
 * (shared with the slimvec client); ds_read_* and ds_write_* wrap it, and
 * svf_file_size() gives a file's expected size.
 *
 * Errors: functions return 0 on success and -1 on failure, writing a message
 * that names the file (and the row and byte offset, for bad input) into
 * `err`, a buffer of DS_ERR_LEN bytes.
 *
 * This module does not depend on the engine, so it can be tested on its own.
 */
#ifndef SV_BENCH_DATASETS_H
#define SV_BENCH_DATASETS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DS_ERR_LEN 3072     /* room for two full paths and the text */
#define DS_GT_K 100          /* ground-truth ids stored per query */
#define DS_PATH_MAX 1024

typedef enum ds_metric { DS_METRIC_L2 = 0, DS_METRIC_IP, DS_METRIC_COSINE } ds_metric;

/* "l2", "ip", "cosine" -> metric; returns -1 for anything else. */
int ds_metric_parse(const char *s, ds_metric *out);
const char *ds_metric_name(ds_metric m);

/* A row-major matrix read from or written to a vecs file. */
typedef struct ds_fmatrix {
    float *data;   /* rows x dim, malloc'd */
    size_t rows;
    uint32_t dim;
} ds_fmatrix;

typedef struct ds_imatrix {
    int32_t *data; /* rows x dim, malloc'd */
    size_t rows;
    uint32_t dim;
} ds_imatrix;

void ds_fmatrix_free(ds_fmatrix *m); /* frees data, zeroes the struct */
void ds_imatrix_free(ds_imatrix *m);

/* svf_read_file / svf_write_file (service/vecfile.h) with this module's
 * types and errors. A file must be non-empty, every record of dimension
 * 1..SVF_DIM_MAX and the same, and .fvecs values finite. Written to a
 * temporary name and renamed, so a reader never sees half a file. */
int ds_read_fvecs(const char *path, ds_fmatrix *out, char *err);
int ds_read_ivecs(const char *path, ds_imatrix *out, char *err);
int ds_write_fvecs(const char *path, const float *data, size_t rows, uint32_t dim, char *err);
int ds_write_ivecs(const char *path, const int32_t *data, size_t rows, uint32_t dim, char *err);

/*
 * Exact k nearest base rows of every query by brute force in float, on
 * `threads` threads (0 = all online cores). out: nq x k base row indexes,
 * best first; ties go to the smaller index. l2 ranks squared L2 ascending,
 * ip the dot product descending, cosine the cosine descending (a zero vector
 * has cosine 0 with everything). Requires k <= nb.
 */
int ds_ground_truth(const float *base, size_t nb, const float *query, size_t nq,
                    uint32_t dim, ds_metric metric, uint32_t k, unsigned threads,
                    int32_t *out, char *err);

/* The first n Fashion-MNIST training labels (0..9), the classes of the
 * "fashion" dataset's base rows in order. */
int ds_fashion_labels(int32_t *out, size_t n, char *err);

/* $SLIMVEC_BENCH_DATA if set and not empty, else "./bench-data". */
const char *ds_default_cache_dir(void);

/* Paths of a dataset's three files. */
typedef struct ds_files {
    char base[DS_PATH_MAX];
    char query[DS_PATH_MAX];
    char gt[DS_PATH_MAX];
} ds_files;

/*
 * Make sure the built-in dataset `name` ("founding" or "fashion") exists in
 * cache_dir (created if missing) as <name>.base.fvecs, <name>.query.fvecs
 * and <name>.<metric>.gt.ivecs (DS_GT_K ids per query), generating whatever
 * is missing or has the wrong size. `log` (may be NULL) gets progress lines.
 */
int ds_prepare_builtin(const char *name, const char *cache_dir, ds_metric metric,
                       unsigned threads, ds_files *files, FILE *log, char *err);

#endif
