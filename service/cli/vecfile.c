/*
 * TEXMEX .fvecs / .ivecs reading and writing (see vecfile.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_CLOEXEC, fileno */
#endif

#include "vecfile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The values are copied as they are: the format is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vecfile.c reads and writes TEXMEX files as native little-endian"
#endif

/* Rows encoded at a time by svf_write_file (at least one). */
#define SVF_WRITE_CHUNK (1u << 20)

static svf_status fail(svf_error *err, svf_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static svf_status fail(svf_error *err, svf_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static svf_status ok(svf_error *err)
{
    if (err) {
        err->code = SVF_OK;
        err->message[0] = '\0';
    }
    return SVF_OK;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static const char *nonfinite_name(float v)
{
    return isnan(v) ? "nan" : v > 0 ? "+inf" : "-inf";
}

void svf_matrix_free(svf_matrix *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

const char *svf_kind_name(svf_kind kind)
{
    return kind == SVF_IVECS ? "ivecs" : "fvecs";
}

uint64_t svf_file_size(size_t rows, uint32_t dim)
{
    if (rows == 0 || dim == 0 || dim > SVF_DIM_MAX)
        return 0;
    uint64_t rec = 4u + 4u * (uint64_t)dim;
    if ((uint64_t)rows > UINT64_MAX / rec)
        return 0;
    return (uint64_t)rows * rec;
}

/* ---- reading ------------------------------------------------------------ */

svf_status svf_parse(const void *buf, size_t len, svf_kind kind, const char *name,
                     svf_matrix *out, svf_error *err)
{
    const unsigned char *b = buf;
    const char *kn = svf_kind_name(kind);
    memset(out, 0, sizeof *out);
    if (!name)
        name = "<memory>";
    if (kind != SVF_FVECS && kind != SVF_IVECS)
        return fail(err, SVF_ERR_ARGUMENT, "%s: unknown file kind %d", name, (int)kind);
    if (len == 0)
        return fail(err, SVF_ERR_FORMAT,
                    "%s: empty file (0 bytes): a .%s file holds at least one row", name, kn);
    if (!b)
        return fail(err, SVF_ERR_ARGUMENT, "%s: no buffer for %zu bytes", name, len);
    if (len < 4)
        return fail(err, SVF_ERR_FORMAT,
                    "%s: row 0 (offset 0): the file is %zu bytes, too short for the 4-byte "
                    "dimension word", name, len);
    int32_t d = (int32_t)rd32(b);
    if (d <= 0 || (uint32_t)d > SVF_DIM_MAX)
        return fail(err, SVF_ERR_FORMAT,
                    "%s: row 0 (offset 0): dimension %" PRId32 " is not in 1..%u (not a .%s file?)",
                    name, d, SVF_DIM_MAX, kn);
    uint32_t dim = (uint32_t)d;
    /* dim <= 2^20, so the record size cannot overflow; the file size is a
     * size_t, which fits in a uint64_t. */
    uint64_t rec = 4u + 4u * (uint64_t)dim;
    uint64_t size = (uint64_t)len;
    if (size % rec != 0) {
        uint64_t whole = size / rec;
        return fail(err, SVF_ERR_FORMAT,
                    "%s: row %" PRIu64 " (offset %" PRIu64 ") is cut short: the file size %" PRIu64
                    " is not a multiple of the record size %" PRIu64 " (4 + 4 x dimension %" PRIu32
                    "); truncated, or not a .%s file",
                    name, whole, whole * rec, size, rec, dim, kn);
    }
    uint64_t rows = size / rec;
    /* rows x dim x 4 < size here, but check it rather than rely on that. */
    if (rows > SIZE_MAX / 4u / dim)
        return fail(err, SVF_ERR_MEMORY, "%s: %" PRIu64 " rows x %" PRIu32
                    " values do not fit in memory", name, rows, dim);
    size_t row_bytes = (size_t)dim * 4u;
    unsigned char *data = malloc((size_t)rows * row_bytes);
    if (!data)
        return fail(err, SVF_ERR_MEMORY, "%s: out of memory for %" PRIu64 " x %" PRIu32 " values",
                    name, rows, dim);

    for (uint64_t r = 0; r < rows; r++) {
        uint64_t off = r * rec;
        int32_t h = (int32_t)rd32(b + off);
        if (h != d) {
            free(data);
            return fail(err, SVF_ERR_FORMAT,
                        "%s: row %" PRIu64 " (offset %" PRIu64 ") has dimension %" PRId32
                        ", expected %" PRIu32 " (row 0's: every row must have the same)",
                        name, r, off, h, dim);
        }
        unsigned char *row = data + (size_t)r * row_bytes;
        memcpy(row, b + off + 4, row_bytes);
        if (kind == SVF_FVECS) {
            const float *v = (const float *)(void *)row;
            for (uint32_t j = 0; j < dim; j++) {
                if (!isfinite(v[j])) {
                    const char *what = nonfinite_name(v[j]);
                    free(data);
                    return fail(err, SVF_ERR_FORMAT,
                                "%s: row %" PRIu64 " (offset %" PRIu64 "), component %" PRIu32
                                " (offset %" PRIu64 ") is not finite (%s)",
                                name, r, off, j, off + 4u + 4u * (uint64_t)j, what);
                }
            }
        }
    }
    out->data = data;
    out->rows = (size_t)rows;
    out->dim = dim;
    return ok(err);
}

svf_status svf_read_file(const char *path, svf_kind kind, svf_matrix *out, svf_error *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, SVF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, SVF_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, SVF_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return fail(err, SVF_ERR_MEMORY, "%s: a file of %lld bytes does not fit in memory", path,
                    (long long)st.st_size);
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return fail(err, SVF_ERR_IO, "%s: cannot map %zu bytes: %s", path, len, strerror(e));
        }
        (void)madvise(map, len, MADV_SEQUENTIAL);
    }
    close(fd); /* the mapping keeps the file */
    svf_status st_parse = svf_parse(map, len, kind, path, out, err);
    if (map)
        munmap(map, len);
    return st_parse;
}

/* ---- writing ------------------------------------------------------------ */

/* What svf_parse would refuse about the shape of a file to write. */
static svf_status check_shape(size_t rows, uint32_t dim, svf_kind kind, const char *name,
                              svf_error *err)
{
    if (kind != SVF_FVECS && kind != SVF_IVECS)
        return fail(err, SVF_ERR_ARGUMENT, "%s: unknown file kind %d", name, (int)kind);
    if (dim == 0 || dim > SVF_DIM_MAX)
        return fail(err, SVF_ERR_ARGUMENT, "%s: cannot write dimension %" PRIu32 " (must be 1..%u)",
                    name, dim, SVF_DIM_MAX);
    if (rows == 0)
        return fail(err, SVF_ERR_ARGUMENT,
                    "%s: no rows to write: a .%s file holds at least one row", name,
                    svf_kind_name(kind));
    if (svf_file_size(rows, dim) == 0)
        return fail(err, SVF_ERR_MEMORY, "%s: %zu rows of dimension %" PRIu32 " are too many",
                    name, rows, dim);
    return SVF_OK;
}

/* Encodes rows first..first+n-1 of data into buf (n records). Row numbers
 * and offsets in messages are those of the whole file. */
static svf_status encode_rows(const unsigned char *data, size_t first, size_t n, uint32_t dim,
                              svf_kind kind, const char *name, unsigned char *buf, svf_error *err)
{
    size_t row_bytes = (size_t)dim * 4u, rec = row_bytes + 4u;
    for (size_t i = 0; i < n; i++) {
        size_t r = first + i;
        const unsigned char *src = data + r * row_bytes;
        if (kind == SVF_FVECS) {
            for (uint32_t j = 0; j < dim; j++) {
                float v;
                memcpy(&v, src + 4u * (size_t)j, 4);
                if (!isfinite(v)) {
                    uint64_t off = (uint64_t)r * rec;
                    return fail(err, SVF_ERR_ARGUMENT,
                                "%s: row %zu (offset %" PRIu64 "), component %" PRIu32
                                " (offset %" PRIu64 ") is not finite (%s): not written",
                                name, r, off, j, off + 4u + 4u * (uint64_t)j, nonfinite_name(v));
                }
            }
        }
        wr32(buf + i * rec, dim);
        memcpy(buf + i * rec + 4u, src, row_bytes);
    }
    return SVF_OK;
}

svf_status svf_encode(const void *data, size_t rows, uint32_t dim, svf_kind kind,
                      const char *name, void *buf, svf_error *err)
{
    if (!name)
        name = "<memory>";
    svf_status st = check_shape(rows, dim, kind, name, err);
    if (st != SVF_OK)
        return st;
    if (svf_file_size(rows, dim) > SIZE_MAX)
        return fail(err, SVF_ERR_MEMORY, "%s: %zu rows of dimension %" PRIu32
                    " do not fit in memory", name, rows, dim);
    st = encode_rows(data, 0, rows, dim, kind, name, buf, err);
    return st == SVF_OK ? ok(err) : st;
}

svf_status svf_write_file(const char *path, const void *data, size_t rows, uint32_t dim,
                          svf_kind kind, svf_error *err)
{
    svf_status st = check_shape(rows, dim, kind, path, err);
    if (st != SVF_OK)
        return st;
    size_t rec = 4u + (size_t)dim * 4u;
    size_t chunk = SVF_WRITE_CHUNK / rec ? SVF_WRITE_CHUNK / rec : 1;
    if (chunk > rows)
        chunk = rows;
    size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    unsigned char *buf = malloc(chunk * rec);
    FILE *f = NULL;
    int created = 0;
    if (!tmp || !buf) {
        st = fail(err, SVF_ERR_MEMORY, "%s: out of memory", path);
        goto cleanup;
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        st = fail(err, SVF_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto cleanup;
    }
    created = 1;
    for (size_t r = 0; r < rows; r += chunk) {
        size_t n = rows - r < chunk ? rows - r : chunk;
        st = encode_rows(data, r, n, dim, kind, path, buf, err);
        if (st != SVF_OK)
            goto cleanup;
        if (fwrite(buf, rec, n, f) != n) {
            st = fail(err, SVF_ERR_IO, "%s: write error at row %zu (offset %" PRIu64 "): %s", tmp,
                      r, (uint64_t)r * rec, strerror(errno));
            goto cleanup;
        }
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0) {
        st = fail(err, SVF_ERR_IO, "%s: write error on close: %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        st = fail(err, SVF_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        goto cleanup;
    }
    created = 0;
    st = ok(err);

cleanup:
    if (f)
        fclose(f);
    if (created)
        remove(tmp);
    free(tmp);
    free(buf);
    return st;
}
