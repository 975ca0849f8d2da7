/*
 * Benchmark datasets (see datasets.h): vecs file I/O (wrappers over
 * service/vecfile.c), brute-force ground truth on all cores, and the
 * built-in "founding" (seeded Gaussian) and "fashion" (Fashion-MNIST)
 * datasets cached as vecs files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdir, sysconf */
#endif

#include "datasets.h"

#include "benchutil.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "vecfile.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned resolve_threads(unsigned threads)
{
    if (threads > 0)
        return threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

/* Size of a regular file, or -1 when it does not exist or is not a file. */
static int64_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    return (int64_t)st.st_size;
}

int ds_metric_parse(const char *s, ds_metric *out)
{
    if (strcmp(s, "l2") == 0)
        *out = DS_METRIC_L2;
    else if (strcmp(s, "ip") == 0)
        *out = DS_METRIC_IP;
    else if (strcmp(s, "cosine") == 0)
        *out = DS_METRIC_COSINE;
    else
        return -1;
    return 0;
}

const char *ds_metric_name(ds_metric m)
{
    switch (m) {
    case DS_METRIC_L2:
        return "l2";
    case DS_METRIC_IP:
        return "ip";
    case DS_METRIC_COSINE:
        return "cosine";
    }
    return "?";
}

void ds_fmatrix_free(ds_fmatrix *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

void ds_imatrix_free(ds_imatrix *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ */
/* Reading and writing vecs files: thin wrappers over service/vecfile.c */
/* ------------------------------------------------------------------ */

/* The vecfile error as this module's: its message already names the file,
 * and the row and byte offset for bad content. */
static int vecs_error(const svf_error *e, char *err)
{
    snprintf(err, DS_ERR_LEN, "%s", e->message);
    return -1;
}

int ds_read_fvecs(const char *path, ds_fmatrix *out, char *err)
{
    svf_matrix m;
    svf_error e;
    memset(out, 0, sizeof *out);
    if (svf_read_file(path, SVF_FVECS, &m, &e) != SVF_OK)
        return vecs_error(&e, err);
    *out = (ds_fmatrix){.data = m.data, .rows = m.rows, .dim = m.dim};
    return 0;
}

int ds_read_ivecs(const char *path, ds_imatrix *out, char *err)
{
    svf_matrix m;
    svf_error e;
    memset(out, 0, sizeof *out);
    if (svf_read_file(path, SVF_IVECS, &m, &e) != SVF_OK)
        return vecs_error(&e, err);
    *out = (ds_imatrix){.data = m.data, .rows = m.rows, .dim = m.dim};
    return 0;
}

int ds_write_fvecs(const char *path, const float *data, size_t rows, uint32_t dim, char *err)
{
    svf_error e;
    return svf_write_file(path, data, rows, dim, SVF_FVECS, &e) == SVF_OK ? 0 : vecs_error(&e, err);
}

int ds_write_ivecs(const char *path, const int32_t *data, size_t rows, uint32_t dim, char *err)
{
    svf_error e;
    return svf_write_file(path, data, rows, dim, SVF_IVECS, &e) == SVF_OK ? 0 : vecs_error(&e, err);
}

/* ------------------------------------------------------------------ */
/* Ground truth                                                        */
/* ------------------------------------------------------------------ */

/* A candidate: `score` is "smaller is better" for every metric. */
typedef struct gt_cand {
    float score;
    int32_t id;
} gt_cand;

/* True when a ranks after b: a larger score, or the same score and a larger
 * id (ties go to the smaller base row, so the result is deterministic). */
static bool cand_after(gt_cand a, gt_cand b)
{
    return a.score > b.score || (a.score == b.score && a.id > b.id);
}

/* Bounded max-heap (worst candidate on top) of at most k candidates. */
typedef struct gt_heap {
    gt_cand *items;
    uint32_t size;
} gt_heap;

static void heap_sift_down(gt_cand *h, uint32_t size, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, worst = i;
        if (l < size && cand_after(h[l], h[worst]))
            worst = l;
        if (r < size && cand_after(h[r], h[worst]))
            worst = r;
        if (worst == i)
            return;
        gt_cand t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

static void heap_offer(gt_heap *hp, uint32_t k, gt_cand c)
{
    gt_cand *h = hp->items;
    if (hp->size < k) {
        /* Sift up. */
        uint32_t i = hp->size++;
        h[i] = c;
        while (i > 0) {
            uint32_t parent = (i - 1) / 2;
            if (!cand_after(h[i], h[parent]))
                break;
            gt_cand t = h[i];
            h[i] = h[parent];
            h[parent] = t;
            i = parent;
        }
        return;
    }
    if (!cand_after(h[0], c))
        return; /* not better than the current k-th */
    h[0] = c;
    heap_sift_down(h, hp->size, 0);
}

/* Pops the heap into out[] best first. */
static void heap_drain(gt_heap *hp, int32_t *out)
{
    while (hp->size > 0) {
        gt_cand top = hp->items[0];
        hp->size--;
        hp->items[0] = hp->items[hp->size];
        heap_sift_down(hp->items, hp->size, 0);
        out[hp->size] = top.id;
    }
}

/* Eight independent partial sums: without -ffast-math the compiler may not
 * reorder a float reduction, so this is what lets it use SIMD lanes. */
static float dot_f32(const float *a, const float *b, uint32_t dim)
{
    float acc[8] = {0};
    uint32_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (uint32_t j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < dim; i++)
        s += a[i] * b[i];
    return s;
}

static float l2sq_f32(const float *a, const float *b, uint32_t dim)
{
    float acc[8] = {0};
    uint32_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (uint32_t j = 0; j < 8; j++) {
            float t = a[i + j] - b[i + j];
            acc[j] += t * t;
        }
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < dim; i++) {
        float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

typedef struct gt_job {
    const float *base, *query;
    size_t nb, nq;
    uint32_t dim, k;
    ds_metric metric;
    const float *base_norm, *query_norm; /* cosine only */
    int32_t *out;
    atomic_size_t next_block;
    atomic_int failed;
} gt_job;

/* Queries are handled in blocks, and each block scans the base in chunks
 * that fit in L2: every chunk is then reused by all queries of the block
 * instead of streaming the whole base from memory once per query. */
#define GT_QUERY_BLOCK 16
#define GT_CHUNK_BYTES (512u * 1024u)

static void *gt_worker(void *arg)
{
    gt_job *job = arg;
    gt_cand *items = malloc(sizeof *items * (size_t)GT_QUERY_BLOCK * job->k);
    gt_heap heaps[GT_QUERY_BLOCK];
    if (!items) {
        atomic_store(&job->failed, 1);
        goto cleanup;
    }
    size_t chunk = GT_CHUNK_BYTES / (4u * (size_t)job->dim);
    if (chunk < 16)
        chunk = 16;

    for (;;) {
        size_t block = atomic_fetch_add(&job->next_block, 1);
        size_t q0 = block * GT_QUERY_BLOCK;
        if (q0 >= job->nq)
            break;
        size_t nqb = job->nq - q0 < GT_QUERY_BLOCK ? job->nq - q0 : GT_QUERY_BLOCK;
        for (size_t q = 0; q < nqb; q++) {
            heaps[q].items = items + q * job->k;
            heaps[q].size = 0;
        }
        for (size_t b0 = 0; b0 < job->nb; b0 += chunk) {
            size_t b1 = b0 + chunk < job->nb ? b0 + chunk : job->nb;
            for (size_t q = 0; q < nqb; q++) {
                const float *qv = job->query + (q0 + q) * job->dim;
                for (size_t b = b0; b < b1; b++) {
                    const float *bv = job->base + b * job->dim;
                    gt_cand c = {.id = (int32_t)b};
                    switch (job->metric) {
                    case DS_METRIC_L2:
                        c.score = l2sq_f32(qv, bv, job->dim);
                        break;
                    case DS_METRIC_IP:
                        c.score = -dot_f32(qv, bv, job->dim);
                        break;
                    case DS_METRIC_COSINE: {
                        float nn = job->query_norm[q0 + q] * job->base_norm[b];
                        c.score = nn > 0.0f ? -dot_f32(qv, bv, job->dim) / nn : 0.0f;
                        break;
                    }
                    }
                    heap_offer(&heaps[q], job->k, c);
                }
            }
        }
        for (size_t q = 0; q < nqb; q++)
            heap_drain(&heaps[q], job->out + (q0 + q) * job->k);
    }

cleanup:
    free(items);
    return NULL;
}

static float *row_norms(const float *v, size_t n, uint32_t dim)
{
    float *norms = malloc(sizeof *norms * (n ? n : 1));
    if (!norms)
        return NULL;
    for (size_t i = 0; i < n; i++)
        norms[i] = sqrtf(dot_f32(v + i * dim, v + i * dim, dim));
    return norms;
}

int ds_ground_truth(const float *base, size_t nb, const float *query, size_t nq,
                    uint32_t dim, ds_metric metric, uint32_t k, unsigned threads,
                    int32_t *out, char *err)
{
    pthread_t *tids = NULL;
    unsigned started = 0;
    float *base_norm = NULL, *query_norm = NULL;
    int rc = -1;
    gt_job job = {.base = base, .query = query, .nb = nb, .nq = nq, .dim = dim, .k = k,
                  .metric = metric, .out = out};
    atomic_init(&job.next_block, 0);
    atomic_init(&job.failed, 0);

    if (k == 0 || k > nb || nb > (size_t)INT32_MAX || dim == 0) {
        snprintf(err, DS_ERR_LEN,
                 "ground truth: need 1 <= k (%u) <= base rows (%zu) < 2^31 and dim > 0", k, nb);
        goto cleanup;
    }
    if (metric == DS_METRIC_COSINE) {
        base_norm = row_norms(base, nb, dim);
        query_norm = row_norms(query, nq, dim);
        if (!base_norm || !query_norm) {
            snprintf(err, DS_ERR_LEN, "ground truth: out of memory for norms");
            goto cleanup;
        }
        job.base_norm = base_norm;
        job.query_norm = query_norm;
    }
    threads = resolve_threads(threads);
    tids = malloc(sizeof *tids * threads);
    if (!tids) {
        snprintf(err, DS_ERR_LEN, "ground truth: out of memory");
        goto cleanup;
    }
    for (; started < threads; started++) {
        int e = pthread_create(&tids[started], NULL, gt_worker, &job);
        if (e != 0) {
            /* Fewer threads still finish the job: the blocks are shared. */
            if (started > 0)
                break;
            snprintf(err, DS_ERR_LEN, "ground truth: cannot start a thread: %s", strerror(e));
            goto cleanup;
        }
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    started = 0;
    if (atomic_load(&job.failed)) {
        snprintf(err, DS_ERR_LEN, "ground truth: out of memory in a worker");
        goto cleanup;
    }
    rc = 0;

cleanup:
    free(tids);
    free(base_norm);
    free(query_norm);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Built-in datasets                                                   */
/* ------------------------------------------------------------------ */

/*
 * A PRNG of our own (xoshiro256**, seeded through splitmix64) so that the
 * founding set is the same bytes on every platform and library version.
 * Normal deviates come from the Marsaglia polar method, which needs only
 * sqrt (exact in IEEE) and log: the values are computed in double and
 * rounded to float, so a last-bit difference in a libm's log cannot change
 * the stored floats in practice.
 */
typedef struct rng {
    uint64_t s[4];
} rng;


static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = bu_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static void fill_gaussian(float *out, size_t n, uint64_t seed)
{
    rng r;
    rng_seed(&r, seed);
    size_t i = 0;
    while (i < n) {
        double u = 2.0 * rng_uniform(&r) - 1.0;
        double v = 2.0 * rng_uniform(&r) - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0)
            continue;
        double m = sqrt(-2.0 * log(s) / s);
        out[i++] = (float)(u * m);
        if (i < n)
            out[i++] = (float)(v * m);
    }
}

/* Seeds of the founding set's two streams: fixed forever, since cached
 * files and published results depend on them. */
#define FOUNDING_BASE_SEED 0x736c696d76656301ull  /* "slimvec" 01 */
#define FOUNDING_QUERY_SEED 0x736c696d76656302ull /* "slimvec" 02 */

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define IDX_SIDE 28u

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int ds_fashion_labels(int32_t *out, size_t n, char *err)
{
    const char *path = FASHION_DIR "/train-labels-idx1-ubyte.gz";
    errno = 0;
    gzFile g = gzopen(path, "rb");
    if (!g) {
        snprintf(err, DS_ERR_LEN, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib out of memory");
        return -1;
    }
    unsigned char hdr[8];
    int rc = -1;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        snprintf(err, DS_ERR_LEN, "%s: out of memory", path);
    } else if (gzread(g, hdr, sizeof hdr) != (int)sizeof hdr || be32(hdr) != 0x00000801u) {
        snprintf(err, DS_ERR_LEN, "%s: not an IDX1 label file (magic 0x00000801)", path);
    } else if (be32(hdr + 4) < n) {
        snprintf(err, DS_ERR_LEN, "%s: %u labels, %zu needed", path, be32(hdr + 4), n);
    } else if (gzread(g, buf, (unsigned)n) != (int)n) {
        snprintf(err, DS_ERR_LEN, "%s: the labels end early", path);
    } else {
        for (size_t i = 0; i < n; i++)
            out[i] = buf[i];
        rc = 0;
    }
    free(buf);
    gzclose(g);
    return rc;
}

/* Reads a gzip'd IDX3 unsigned-byte image file of exactly `count` 28x28
 * images into out (count x 784 floats, the raw 0..255 pixel values).
 * Offsets in messages are in the decompressed stream. */
static int read_idx_images(const char *path, uint32_t count, float *out, char *err)
{
    gzFile g = NULL;
    unsigned char *buf = NULL;
    int rc = -1;
    const size_t img = (size_t)IDX_SIDE * IDX_SIDE;
    const uint32_t per_read = 1000; /* images per gzread: ~784 KB, well below INT_MAX */

    errno = 0;
    g = gzopen(path, "rb");
    if (!g) {
        snprintf(err, DS_ERR_LEN, "%s: cannot open: %s", path,
                 errno ? strerror(errno) : "zlib out of memory");
        goto cleanup;
    }
    unsigned char hdr[16];
    int got = gzread(g, hdr, sizeof hdr);
    if (got != (int)sizeof hdr) {
        int zerr = 0;
        const char *zmsg = gzerror(g, &zerr);
        snprintf(err, DS_ERR_LEN,
                 "%s: the decompressed data ends at offset %d, inside the 16-byte IDX header%s%s",
                 path, got < 0 ? 0 : got, zerr ? ": " : "", zerr ? zmsg : "");
        goto cleanup;
    }
    if (be32(hdr) != 0x00000803u) {
        snprintf(err, DS_ERR_LEN,
                 "%s: offset 0: IDX magic 0x%08x, expected 0x00000803 (unsigned bytes, 3 dimensions)",
                 path, be32(hdr));
        goto cleanup;
    }
    if (be32(hdr + 4) != count) {
        snprintf(err, DS_ERR_LEN, "%s: offset 4: image count %u, expected %u", path, be32(hdr + 4),
                 count);
        goto cleanup;
    }
    if (be32(hdr + 8) != IDX_SIDE || be32(hdr + 12) != IDX_SIDE) {
        snprintf(err, DS_ERR_LEN, "%s: offset 8: image size %ux%u, expected %ux%u", path,
                 be32(hdr + 8), be32(hdr + 12), IDX_SIDE, IDX_SIDE);
        goto cleanup;
    }

    buf = malloc(img * per_read);
    if (!buf) {
        snprintf(err, DS_ERR_LEN, "%s: out of memory", path);
        goto cleanup;
    }
    for (uint32_t i0 = 0; i0 < count; i0 += per_read) {
        uint32_t n = count - i0 < per_read ? count - i0 : per_read;
        unsigned want = (unsigned)(n * img);
        int r = gzread(g, buf, want);
        if (r != (int)want) {
            int zerr = 0;
            const char *zmsg = gzerror(g, &zerr);
            unsigned long long at =
                16ull + (unsigned long long)i0 * img + (r > 0 ? (unsigned)r : 0u);
            snprintf(err, DS_ERR_LEN,
                     "%s: decompressed offset %llu: %s (needed %u images of %zu bytes)", path, at,
                     zerr ? zmsg : "unexpected end of data", count, img);
            goto cleanup;
        }
        float *dst = out + (size_t)i0 * img;
        for (size_t j = 0; j < (size_t)n * img; j++)
            dst[j] = (float)buf[j];
    }
    unsigned char extra;
    int r = gzread(g, &extra, 1);
    if (r != 0) {
        snprintf(err, DS_ERR_LEN, "%s: decompressed offset %llu: %s", path,
                 16ull + (unsigned long long)count * img,
                 r > 0 ? "trailing data after the last image" : "decompression error");
        goto cleanup;
    }
    rc = 0;

cleanup:
    free(buf);
    if (g)
        gzclose(g);
    return rc;
}

typedef struct builtin_spec {
    const char *name;
    size_t nb, nq;
    uint32_t dim;
} builtin_spec;

static const builtin_spec BUILTINS[] = {
    {"founding", 10000, 1000, 128},
    {"fashion", 60000, 10000, IDX_SIDE * IDX_SIDE},
};

/* Generates the base (is_base) or query matrix of a built-in dataset. */
static int generate_part(const builtin_spec *spec, bool is_base, float **out, char *err)
{
    size_t rows = is_base ? spec->nb : spec->nq;
    float *v = malloc(sizeof *v * rows * spec->dim);
    if (!v) {
        snprintf(err, DS_ERR_LEN, "%s: out of memory", spec->name);
        return -1;
    }
    if (strcmp(spec->name, "founding") == 0) {
        fill_gaussian(v, rows * spec->dim, is_base ? FOUNDING_BASE_SEED : FOUNDING_QUERY_SEED);
    } else {
        const char *file = is_base ? FASHION_DIR "/train-images-idx3-ubyte.gz"
                                   : FASHION_DIR "/t10k-images-idx3-ubyte.gz";
        if (read_idx_images(file, (uint32_t)rows, v, err) != 0) {
            free(v);
            return -1;
        }
    }
    *out = v;
    return 0;
}

/* mkdir -p: creates each missing component of dir. */
static int make_dirs(const char *dir, char *err)
{
    char path[DS_PATH_MAX];
    if (strlen(dir) >= sizeof path) {
        snprintf(err, DS_ERR_LEN, "%s: path too long", dir);
        return -1;
    }
    strcpy(path, dir);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            snprintf(err, DS_ERR_LEN, "%s: cannot create directory: %s", path, strerror(errno));
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, DS_ERR_LEN, "%s: not a directory", dir);
        return -1;
    }
    return 0;
}

const char *ds_default_cache_dir(void)
{
    const char *env = getenv("SLIMVEC_BENCH_DATA");
    return env && env[0] ? env : "./bench-data";
}

static int join_path(char *out, const char *dir, const char *name, const char *suffix, char *err)
{
    int n = snprintf(out, DS_PATH_MAX, "%s/%s%s", dir, name, suffix);
    if (n < 0 || n >= DS_PATH_MAX) {
        snprintf(err, DS_ERR_LEN, "%s: cache path too long", dir);
        return -1;
    }
    return 0;
}

/* Makes sure one of the base/query files exists with the right size. */
static int ensure_part(const builtin_spec *spec, bool is_base, const char *path, FILE *log,
                       char *err)
{
    size_t rows = is_base ? spec->nb : spec->nq;
    float *v = NULL;
    int rc = -1;
    int64_t have = file_size(path);
    if (have >= 0 && (uint64_t)have == svf_file_size(rows, spec->dim))
        return 0;
    if (log) {
        if (have >= 0)
            fprintf(log, "%s: %s has %lld bytes, expected %llu: regenerating\n", spec->name,
                    path, (long long)have,
                    (unsigned long long)svf_file_size(rows, spec->dim));
        fprintf(log, "%s: writing %s (%zu x %u)\n", spec->name, path, rows, spec->dim);
    }
    if (generate_part(spec, is_base, &v, err) != 0)
        goto cleanup;
    if (ds_write_fvecs(path, v, rows, spec->dim, err) != 0)
        goto cleanup;
    rc = 0;
cleanup:
    free(v);
    return rc;
}

int ds_prepare_builtin(const char *name, const char *cache_dir, ds_metric metric,
                       unsigned threads, ds_files *files, FILE *log, char *err)
{
    const builtin_spec *spec = NULL;
    ds_fmatrix base = {0}, query = {0};
    int32_t *gt = NULL;
    int rc = -1;

    for (size_t i = 0; i < sizeof BUILTINS / sizeof BUILTINS[0]; i++)
        if (strcmp(BUILTINS[i].name, name) == 0)
            spec = &BUILTINS[i];
    if (!spec) {
        snprintf(err, DS_ERR_LEN, "unknown dataset '%s' (known: founding, fashion)", name);
        goto cleanup;
    }
    char gt_suffix[64];
    snprintf(gt_suffix, sizeof gt_suffix, ".%s.gt.ivecs", ds_metric_name(metric));
    if (make_dirs(cache_dir, err) != 0 ||
        join_path(files->base, cache_dir, name, ".base.fvecs", err) != 0 ||
        join_path(files->query, cache_dir, name, ".query.fvecs", err) != 0 ||
        join_path(files->gt, cache_dir, name, gt_suffix, err) != 0)
        goto cleanup;

    if (ensure_part(spec, true, files->base, log, err) != 0 ||
        ensure_part(spec, false, files->query, log, err) != 0)
        goto cleanup;

    int64_t have = file_size(files->gt);
    if (have >= 0 && (uint64_t)have == svf_file_size(spec->nq, DS_GT_K)) {
        rc = 0;
        goto cleanup;
    }
    /* Ground truth from the files just checked, so it always matches them. */
    if (ds_read_fvecs(files->base, &base, err) != 0 ||
        ds_read_fvecs(files->query, &query, err) != 0)
        goto cleanup;
    if (base.rows != spec->nb || query.rows != spec->nq || base.dim != spec->dim ||
        query.dim != spec->dim) {
        snprintf(err, DS_ERR_LEN, "%s: cached files %s / %s do not have the expected shape",
                 name, files->base, files->query);
        goto cleanup;
    }
    gt = malloc(sizeof *gt * spec->nq * DS_GT_K);
    if (!gt) {
        snprintf(err, DS_ERR_LEN, "%s: out of memory for ground truth", name);
        goto cleanup;
    }
    if (log) {
        fprintf(log, "%s: computing exact %s ground truth (%zu queries x %zu base, top %d, %u threads)...\n",
                name, ds_metric_name(metric), spec->nq, spec->nb, DS_GT_K,
                resolve_threads(threads));
        fflush(log);
    }
    double t0 = now_seconds();
    if (ds_ground_truth(base.data, base.rows, query.data, query.rows, spec->dim, metric, DS_GT_K,
                        threads, gt, err) != 0)
        goto cleanup;
    if (log)
        fprintf(log, "%s: ground truth took %.1f s, writing %s\n", name, now_seconds() - t0,
                files->gt);
    if (ds_write_ivecs(files->gt, gt, spec->nq, DS_GT_K, err) != 0)
        goto cleanup;
    rc = 0;

cleanup:
    ds_fmatrix_free(&base);
    ds_fmatrix_free(&query);
    free(gt);
    return rc;
}
