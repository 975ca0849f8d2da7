/*
 * TEXMEX .fvecs / .ivecs files: the one reader (and writer) of the format,
 * shared by the `slimvec` command-line client and slimvec-bench, and fuzzed
 * by tests/fuzz/fuzz_vecfile.c.
 *
 * The format (little-endian): a file is one or more records; a record is an
 * int32 dimension d followed by d 4-byte values, float32 for .fvecs and
 * int32 for .ivecs. A file is accepted only when
 *   - it is not empty (at least one record),
 *   - the first dimension word is in 1..SVF_DIM_MAX, and every record's
 *     dimension word equals it,
 *   - its size is an exact multiple of the record size 4 + 4 d,
 *   - rows x d values fit in memory (size arithmetic is checked), and
 *   - for .fvecs, every value is finite (no NaN, no infinity: the engine
 *     refuses them and a ranking with NaN means nothing).
 *
 * Errors: every function returns SVF_OK or another svf_status and, on
 * failure, fills the svf_error (if not NULL) with the status and a message
 * that starts with the file name and, for bad content, names the row and
 * the byte offset of the problem:
 *   "q.fvecs: row 3 (offset 156), component 7 (offset 188) is not finite (nan)"
 * On failure the output matrix is left zeroed: nothing to free.
 *
 * No dependency on the engine or on anything but libc, so that a fuzz
 * target can build it alone.
 */
#ifndef SV_SERVICE_VECFILE_H
#define SV_SERVICE_VECFILE_H

#include <stddef.h>
#include <stdint.h>

/* A dimension word above this is taken as a sign of a corrupt file (or not
 * a vecs file at all) rather than a request to allocate gigabytes a row.
 * 2^20 is far above any embedding in use and above the engine's own limit. */
#define SVF_DIM_MAX (1u << 20)

#define SVF_ERR_LEN 2048 /* room for a long path and the text */

typedef enum svf_status {
    SVF_OK = 0,
    SVF_ERR_ARGUMENT, /* a bad argument from the caller (writer: dim, rows) */
    SVF_ERR_IO,       /* open, stat, map, write or rename failed */
    SVF_ERR_FORMAT,   /* the bytes are not a valid file of that kind */
    SVF_ERR_MEMORY    /* out of memory, or rows x dim does not fit in size_t */
} svf_status;

typedef struct svf_error {
    svf_status code;
    char message[SVF_ERR_LEN];
} svf_error;

typedef enum svf_kind {
    SVF_FVECS = 0, /* float32 values, all finite */
    SVF_IVECS      /* int32 values, any */
} svf_kind;

/* A row-major rows x dim matrix of 4-byte values: float for SVF_FVECS,
 * int32_t for SVF_IVECS. data is malloc'd (free(data) or svf_matrix_free). */
typedef struct svf_matrix {
    void *data;
    size_t rows;
    uint32_t dim;
} svf_matrix;

void svf_matrix_free(svf_matrix *m); /* frees data, zeroes the struct */

/* "fvecs" or "ivecs". */
const char *svf_kind_name(svf_kind kind);

/*
 * Parses a whole file held in memory (len bytes at buf; buf may be NULL
 * when len is 0, and need not be aligned). `name` is the file name used in
 * messages. On SVF_OK, *out holds a fresh copy of the values.
 */
svf_status svf_parse(const void *buf, size_t len, svf_kind kind, const char *name,
                     svf_matrix *out, svf_error *err);

/*
 * Maps the regular file at `path` read-only and parses it with svf_parse.
 * The file must not be truncated while it is read (a concurrent truncation
 * of a mapped file is a SIGBUS); svf_write_file never does that to a reader.
 */
svf_status svf_read_file(const char *path, svf_kind kind, svf_matrix *out, svf_error *err);

/*
 * Size in bytes of a file of rows x dim: rows x (4 + 4 dim), or 0 when
 * there is no such valid file (rows 0, dim 0 or over SVF_DIM_MAX, or a
 * size over UINT64_MAX).
 */
uint64_t svf_file_size(size_t rows, uint32_t dim);

/*
 * Encodes rows x dim values (float for SVF_FVECS, int32_t for SVF_IVECS)
 * into buf, which must hold svf_file_size(rows, dim) bytes. Refuses what
 * svf_parse would refuse: rows 0, dim 0 or over SVF_DIM_MAX, a non-finite
 * .fvecs value (then buf's contents are unspecified). `name` is the file
 * name used in messages.
 */
svf_status svf_encode(const void *data, size_t rows, uint32_t dim, svf_kind kind,
                      const char *name, void *buf, svf_error *err);

/*
 * Writes rows x dim values to `path`, through a temporary file in the same
 * directory renamed into place, so that a reader never sees half a file
 * and an interrupted run never leaves a file of the right name and the
 * wrong content. Refuses what svf_encode refuses.
 */
svf_status svf_write_file(const char *path, const void *data, size_t rows, uint32_t dim,
                          svf_kind kind, svf_error *err);

#endif
