/*
 * persist-bench: the two targets of the durability work.
 *
 *   A. ingest: N standard-normal vectors added in batches of B (ids
 *      assigned) by C client threads, then one flush, in three modes, each
 *      in a fresh collection bound to a jemalloc arena of its own:
 *        memory     sv_durable_create(NULL, ...): no persistence
 *        fsync      a data directory, fsync before each add returns
 *                   (sync_interval_ms 0: group commit between clients)
 *        interval   a data directory, a thread fsyncs every 10 ms and adds
 *                   return at once (sync_interval_ms 10)
 *      Each mode runs --repeat times; the run with the median rate is
 *      reported: vectors/s including the final flush, the ratio to the
 *      memory mode, log bytes, fsyncs and their seconds, and the p50/p99
 *      latency of one add call.
 *
 *   B. restart: a durable collection of --restart-n vectors is built, flushed
 *      and snapshotted, searched (1000 queries, the reference answers) and
 *      closed; the page cache is dropped (or the files evicted) and
 *      sv_durable_open is timed (the restart), then timed again with a warm
 *      cache. Memory per vector (the arena's allocated bytes / live vectors)
 *      before and after, the snapshot load rate, and whether the reopened
 *      collection answers the 1000 queries identically.
 *
 * Results: a table on stdout and one JSON object (stdout, or --json FILE).
 * Progress goes to stderr. Run with --help for the options.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, sync, posix_fadvise, mincore */
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jemalloc/jemalloc.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "benchutil.h"
#include "arena.h"
#include "durable.h"
#include "durable_impl.h"
#include "slimvec.h"
#include "snapshot.h"

#define PB_K 10
#define PB_SEARCH_LIST 64
#define PB_MODES 3
#define PB_MAX_REPEAT 99
#define PB_PATH 4096

/* ---- options -------------------------------------------------------------- */

typedef struct options {
    uint64_t n;            /* part A vectors */
    uint32_t dim;
    uint32_t batch;
    uint32_t clients;
    uint32_t repeat;
    uint32_t threads;      /* collection threads, 0 = all cores */
    uint32_t interval_ms;  /* mode 3 */
    uint64_t seed;
    uint64_t restart_n;
    uint32_t restart_batch;
    uint32_t queries;
    const char *dir;
    const char *json;
    bool keep, skip_ingest, skip_restart;
} options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: persist-bench [--n N] [--dim D] [--batch B] [--clients C] [--repeat R]\n"
            "                     [--interval-ms MS] [--threads T] [--seed S]\n"
            "                     [--restart-n N] [--restart-batch B] [--queries Q]\n"
            "                     [--dir DIR] [--keep] [--json FILE]\n"
            "                     [--skip-ingest] [--skip-restart]\n"
            "\n"
            "  A. ingest (memory / fsync per add / group-commit interval):\n"
            "  --n N             vectors per run (default 200000)\n"
            "  --dim D           dimension, parts A and B (default 128)\n"
            "  --batch B         vectors per add call (default 1000)\n"
            "  --clients C       client threads splitting the batches (default 1)\n"
            "  --repeat R        runs per mode, the median rate is reported (default 3)\n"
            "  --interval-ms MS  sync_interval_ms of the interval mode (default 10)\n"
            "  B. restart from a snapshot:\n"
            "  --restart-n N     vectors in the collection (default 1000000)\n"
            "  --restart-batch B vectors per add call while building it (default 10000)\n"
            "  --queries Q       searches (k %d, search list %d) compared after the restart (default 1000)\n"
            "  common:\n"
            "  --threads T       collection threads (flush), 0 = all cores (default 0)\n"
            "  --seed S          data generator seed (default 42)\n"
            "  --dir DIR         scratch directory, removed and recreated per run and removed\n"
            "                    at the end unless --keep (default /tmp/persist-bench)\n"
            "  --json FILE       write the JSON object there instead of stdout\n"
            "  --skip-ingest / --skip-restart   run only one part\n",
            PB_K, PB_SEARCH_LIST);
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 on a usage error. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n = 200000;
    o->dim = 128;
    o->batch = 1000;
    o->clients = 1;
    o->repeat = 3;
    o->interval_ms = 10;
    o->seed = 42;
    o->restart_n = 1000000;
    o->restart_batch = 10000;
    o->queries = 1000;
    o->dir = "/tmp/persist-bench";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--keep") == 0) {
            o->keep = true;
            continue;
        }
        if (strcmp(a, "--skip-ingest") == 0) {
            o->skip_ingest = true;
            continue;
        }
        if (strcmp(a, "--skip-restart") == 0) {
            o->skip_restart = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "persist-bench: %s: %s\n", a,
                    strncmp(a, "--", 2) != 0 ? "unexpected argument"
                                              : "missing value or unknown option (see --help)");
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--n") == 0)
            rc = bu_parse_u64("persist-bench", a, v, 1, 1ull << 32, &o->n);
        else if (strcmp(a, "--dim") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, SV_DIM_MAX, &o->dim);
        else if (strcmp(a, "--batch") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, 1u << 20, &o->batch);
        else if (strcmp(a, "--clients") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, 256, &o->clients);
        else if (strcmp(a, "--repeat") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, PB_MAX_REPEAT, &o->repeat);
        else if (strcmp(a, "--interval-ms") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, 60000, &o->interval_ms);
        else if (strcmp(a, "--threads") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 0, 1024, &o->threads);
        else if (strcmp(a, "--seed") == 0)
            rc = bu_parse_u64("persist-bench", a, v, 0, UINT64_MAX, &o->seed);
        else if (strcmp(a, "--restart-n") == 0)
            rc = bu_parse_u64("persist-bench", a, v, PB_K, 1ull << 32, &o->restart_n);
        else if (strcmp(a, "--restart-batch") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, 1u << 20, &o->restart_batch);
        else if (strcmp(a, "--queries") == 0)
            rc = bu_parse_u32("persist-bench", a, v, 1, 1u << 20, &o->queries);
        else if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--json") == 0)
            o->json = v;
        else {
            fprintf(stderr, "persist-bench: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (rc != 0)
            return -1;
    }
    if (o->skip_ingest && o->skip_restart) {
        fprintf(stderr, "persist-bench: --skip-ingest and --skip-restart leave nothing to run\n");
        return -1;
    }
    if (o->dir[0] == '\0' || strcmp(o->dir, "/") == 0 || strlen(o->dir) > PB_PATH - 64) {
        fprintf(stderr, "persist-bench: --dir '%s' is not usable as a scratch directory\n", o->dir);
        return -1;
    }
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */


static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT)
        fprintf(stderr, "persist-bench: removing %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Remove and recreate the scratch directory. */
static int fresh_dir(const char *dir)
{
    rm_rf(dir);
    if (mkdir(dir, 0755) != 0) {
        fprintf(stderr, "persist-bench: mkdir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static uint64_t dir_bytes(const char *dir, const char *prefix)
{
    DIR *dh = opendir(dir);
    if (!dh)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    char path[PB_PATH * 2];
    while ((e = readdir(dh)) != NULL) {
        if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            total += (uint64_t)sb.st_size;
    }
    closedir(dh);
    return total;
}

/* Page-cache residency of the regular files of dir (mincore), bytes. */
static void dir_resident(const char *dir, uint64_t *resident, uint64_t *total)
{
    *resident = *total = 0;
    DIR *dh = opendir(dir);
    if (!dh)
        return;
    long page = sysconf(_SC_PAGESIZE);
    struct dirent *e;
    char path[PB_PATH * 2];
    while ((e = readdir(dh)) != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat sb;
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
            close(fd);
            continue;
        }
        size_t len = (size_t)sb.st_size;
        void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (m == MAP_FAILED)
            continue;
        size_t pages = (len + (size_t)page - 1) / (size_t)page;
        unsigned char *vec = malloc(pages);
        if (vec && mincore(m, len, vec) == 0) {
            for (size_t i = 0; i < pages; i++)
                if (vec[i] & 1)
                    *resident += (uint64_t)page;
            *total += (uint64_t)pages * (uint64_t)page;
        }
        free(vec);
        munmap(m, len);
    }
    closedir(dh);
}

/* Evict dir's files from the page cache: drop_caches when allowed (root),
 * else POSIX_FADV_DONTNEED per file (clean pages only, hence the sync).
 * Returns the method that worked: "drop_caches", "fadvise" or "none". */
static const char *drop_cache(const char *dir)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, "3", 1);
        close(fd);
        if (w == 1)
            return "drop_caches";
    }
    DIR *dh = opendir(dir);
    if (!dh)
        return "none";
    int ok = 0;
    struct dirent *e;
    char path[PB_PATH * 2];
    while ((e = readdir(dh)) != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int f = open(path, O_RDONLY | O_CLOEXEC);
        if (f < 0)
            continue;
        struct stat sb;
        if (fstat(f, &sb) == 0 && S_ISREG(sb.st_mode)) {
            fdatasync(f);
            if (posix_fadvise(f, 0, 0, POSIX_FADV_DONTNEED) == 0)
                ok = 1;
        }
        close(f);
    }
    closedir(dh);
    return ok ? "fadvise" : "none";
}

static void print_err(const char *what, const sv_error *err)
{
    fprintf(stderr, "persist-bench: %s: %s: %s\n", what, sv_status_name(err->code), err->message);
}

/* ---- A. ingest ------------------------------------------------------------ */

static const char *MODE_NAMES[PB_MODES] = {"memory", "fsync", "interval"};

typedef struct run_result {
    double add_seconds, flush_seconds, seconds, rate;
    double p50_ms, p90_ms, p99_ms, max_ms, mean_ms;
    uint64_t log_bytes, syncs;
    double sync_seconds;
    uint64_t dir_bytes;   /* files in the data directory after the run */
    uint64_t live;
    double bpv_arena;
    int ok;
} run_result;

typedef struct mode_result {
    run_result runs[PB_MAX_REPEAT];
    uint32_t n_runs;
    uint32_t median;      /* index of the run with the median rate */
    double rate_min, rate_max;
} mode_result;

typedef struct ingest_job {
    sv_durable *d;
    const float *data;
    uint32_t dim, batch, clients, index;
    size_t n_batches;
    uint64_t n;
    double *lat;          /* per batch, seconds */
    pthread_barrier_t *start;
    sv_status st;
    sv_error err;
} ingest_job;

static void *ingest_thread(void *arg)
{
    ingest_job *j = arg;
    j->st = SV_OK;
    pthread_barrier_wait(j->start);
    for (size_t b = j->index; b < j->n_batches; b += j->clients) {
        uint64_t first = (uint64_t)b * j->batch;
        size_t cnt = j->n - first < j->batch ? (size_t)(j->n - first) : j->batch;
        const float *rows = j->data + first * j->dim;
        double t0 = bu_now_seconds();
        sv_status st = sv_durable_add(j->d, rows, cnt, j->dim, NULL, NULL, &j->err);
        /* The flush a server's maintenance thread would make, here inline
         * as the engine itself used to: the p99 is the add that runs it. */
        if (st == SV_OK && sv_durable_flush_due(j->d))
            st = sv_durable_flush(j->d, &j->err);
        j->lat[b] = bu_now_seconds() - t0;
        if (st != SV_OK) {
            j->st = st;
            break;
        }
    }
    return NULL;
}

static int ingest_run(const options *o, int mode, const float *data, const char *coll_dir,
                      run_result *r)
{
    memset(r, 0, sizeof *r);
    sv_error err = {0};
    sv_durable *d = NULL;
    sv_arena *arena = NULL;
    ingest_job *jobs = NULL;
    pthread_t *tids = NULL;
    double *lat = NULL;
    int rc = -1;
    size_t n_batches = (size_t)((o->n + o->batch - 1) / o->batch);

    if (mode != 0 && fresh_dir(o->dir) != 0)
        return -1;
    arena = sv_arena_create();
    if (!arena) {
        fprintf(stderr, "persist-bench: cannot create a jemalloc arena\n");
        return -1;
    }
    sv_params p;
    sv_params_default(&p, o->dim);
    p.threads = o->threads;
    p.allocator = sv_arena_allocator(arena);
    sv_durable_options dopt = {.sync_interval_ms = mode == 2 ? o->interval_ms : 0,
                               .snapshot_log_bytes = 0};
    size_t arena0 = sv_arena_allocated(arena);
    if (sv_durable_create(mode == 0 ? NULL : coll_dir, &p, &dopt, &d, &err) != SV_OK) {
        print_err("sv_durable_create", &err);
        goto out;
    }

    lat = calloc(n_batches, sizeof *lat);
    jobs = calloc(o->clients, sizeof *jobs);
    tids = calloc(o->clients, sizeof *tids);
    if (!lat || !jobs || !tids) {
        fprintf(stderr, "persist-bench: out of memory\n");
        goto out;
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, o->clients + 1);
    uint32_t started = 0;
    for (uint32_t t = 0; t < o->clients; t++) {
        jobs[t] = (ingest_job){.d = d, .data = data, .dim = o->dim, .batch = o->batch,
                               .clients = o->clients, .index = t, .n_batches = n_batches,
                               .n = o->n, .lat = lat, .start = &start};
        if (pthread_create(&tids[t], NULL, ingest_thread, &jobs[t]) != 0) {
            fprintf(stderr, "persist-bench: cannot start client thread %u\n", t);
            /* Cannot release the barrier with fewer threads: give up. */
            exit(1);
        }
        started++;
    }
    double t0 = bu_now_seconds();
    pthread_barrier_wait(&start);
    for (uint32_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    double t1 = bu_now_seconds();
    pthread_barrier_destroy(&start);
    for (uint32_t t = 0; t < o->clients; t++) {
        if (jobs[t].st != SV_OK) {
            print_err("sv_durable_add", &jobs[t].err);
            goto out;
        }
    }
    if (sv_durable_flush(d, &err) != SV_OK) {
        print_err("sv_durable_flush", &err);
        goto out;
    }
    double t2 = bu_now_seconds();

    r->add_seconds = t1 - t0;
    r->flush_seconds = t2 - t1;
    r->seconds = t2 - t0;
    r->rate = r->seconds > 0 ? (double)o->n / r->seconds : 0.0;
    double sum = 0;
    for (size_t i = 0; i < n_batches; i++)
        sum += lat[i];
    qsort(lat, n_batches, sizeof *lat, bu_cmp_double);
    r->mean_ms = sum / (double)n_batches * 1e3;
    r->p50_ms = bu_percentile(lat, n_batches, 0.50) * 1e3;
    r->p90_ms = bu_percentile(lat, n_batches, 0.90) * 1e3;
    r->p99_ms = bu_percentile(lat, n_batches, 0.99) * 1e3;
    r->max_ms = lat[n_batches - 1] * 1e3;

    sv_durable_stats ds;
    sv_durable_get_stats(d, &ds);
    r->log_bytes = ds.log_bytes_total;
    r->syncs = ds.syncs;
    r->sync_seconds = ds.sync_seconds;
    r->live = sv_collection_count(sv_durable_collection(d));
    r->bpv_arena = r->live ? ((double)sv_arena_allocated(arena) - (double)arena0) / (double)r->live
                           : 0.0;
    if (r->live != o->n)
        fprintf(stderr, "persist-bench: WARNING: %s: %llu live vectors, expected %llu\n",
                MODE_NAMES[mode], (unsigned long long)r->live, (unsigned long long)o->n);
    r->ok = 1;
    rc = 0;
out:
    sv_durable_free(d);
    sv_arena_free(arena);
    if (mode != 0 && rc == 0)
        r->dir_bytes = dir_bytes(coll_dir, NULL);
    free(lat);
    free(jobs);
    free(tids);
    return rc;
}

static int cmp_rate_idx(const void *a, const void *b, void *ctx)
{
    const run_result *runs = ctx;
    double x = runs[*(const uint32_t *)a].rate, y = runs[*(const uint32_t *)b].rate;
    return (x > y) - (x < y);
}

static int run_ingest(const options *o, mode_result *modes)
{
    char coll_dir[PB_PATH + 32];
    snprintf(coll_dir, sizeof coll_dir, "%s/ingest", o->dir);
    size_t count = (size_t)o->n * o->dim;
    float *data = malloc(count * sizeof *data);
    if (!data) {
        fprintf(stderr, "persist-bench: out of memory for %zu floats\n", count);
        return -1;
    }
    bu_rng r = {.s = o->seed};
    bu_fill_normal(&r, data, count);
    fprintf(stderr, "persist-bench: ingest data ready (%llu x %u)\n", (unsigned long long)o->n,
            o->dim);

    int rc = 0;
    /* Rounds of the three modes interleaved, so that a burst of load from
     * elsewhere on the machine spreads over the modes rather than one, and
     * the order rotated each round, so that no mode always runs first. */
    for (uint32_t rep = 0; rep < o->repeat && rc == 0; rep++) {
        for (int k = 0; k < PB_MODES; k++) {
            int m = (int)((k + rep) % PB_MODES);
            run_result *rr = &modes[m].runs[rep];
            if (ingest_run(o, m, data, coll_dir, rr) != 0) {
                rc = -1;
                break;
            }
            modes[m].n_runs++;
            fprintf(stderr,
                    "persist-bench: ingest %-8s run %u/%u: %.0f vectors/s (%.2f s, flush %.2f s), "
                    "add p50 %.2f ms p99 %.2f ms, %llu fsyncs\n",
                    MODE_NAMES[m], rep + 1, o->repeat, rr->rate, rr->seconds, rr->flush_seconds,
                    rr->p50_ms, rr->p99_ms, (unsigned long long)rr->syncs);
        }
    }
    free(data);
    if (rc != 0)
        return rc;
    for (int m = 0; m < PB_MODES; m++) {
        mode_result *mr = &modes[m];
        uint32_t idx[PB_MAX_REPEAT];
        for (uint32_t i = 0; i < mr->n_runs; i++)
            idx[i] = i;
        qsort_r(idx, mr->n_runs, sizeof *idx, cmp_rate_idx, mr->runs);
        mr->median = idx[(mr->n_runs - 1) / 2];
        mr->rate_min = mr->runs[idx[0]].rate;
        mr->rate_max = mr->runs[idx[mr->n_runs - 1]].rate;
    }
    return 0;
}

static void print_ingest(const options *o, const mode_result *modes)
{
    printf("\nA. ingest: n %llu, dim %u, batch %u, clients %u, repeat %u (median run shown), "
           "int8 R 32 L 64, flush_threshold 8192, threads %u%s\n",
           (unsigned long long)o->n, o->dim, o->batch, o->clients, o->repeat, o->threads,
           o->threads == 0 ? " (all cores)" : "");
    printf("%-9s %11s %7s %17s %8s %8s %9s %9s %9s %8s %9s %9s\n", "mode", "vectors/s", "ratio",
           "min..max/s", "total s", "flush s", "add p50ms", "add p99ms", "add maxms", "fsyncs",
           "fsync s", "log MB");
    double base = modes[0].runs[modes[0].median].rate;
    for (int m = 0; m < PB_MODES; m++) {
        const run_result *r = &modes[m].runs[modes[m].median];
        char range[40];
        snprintf(range, sizeof range, "%.0f..%.0f", modes[m].rate_min, modes[m].rate_max);
        printf("%-9s %11.0f %7.3f %17s %8.2f %8.2f %9.2f %9.2f %9.2f %8llu %9.3f %8.1f\n",
               MODE_NAMES[m], r->rate, base > 0 ? r->rate / base : NAN, range, r->seconds,
               r->flush_seconds, r->p50_ms, r->p99_ms, r->max_ms, (unsigned long long)r->syncs,
               r->sync_seconds, (double)r->log_bytes / 1e6);
    }
    printf("(fsync: sync_interval_ms 0, one fsync (group commit) before each add returns; "
           "interval: sync_interval_ms %u)\n", o->interval_ms);
    printf("all runs, vectors/s:");
    for (int m = 0; m < PB_MODES; m++) {
        printf("  %s", MODE_NAMES[m]);
        for (uint32_t i = 0; i < modes[m].n_runs; i++)
            printf(" %.0f", modes[m].runs[i].rate);
    }
    printf("\n");
}

/* ---- B. restart ----------------------------------------------------------- */

typedef struct mem_view {
    size_t arena_bytes;
    uint64_t live;
    double bpv;
    sv_stats stats;
} mem_view;

typedef struct restart_result {
    uint64_t n;
    double build_seconds, build_rate;
    uint64_t build_syncs, build_log_bytes;
    sv_snapshot_info snap;
    double snap_wall;
    uint64_t snap_file_bytes;
    mem_view before, after;
    const char *cache_method;
    uint64_t resident_before, resident_total; /* page cache of the dir before the cold open */
    sv_recovery cold, warm;
    double cold_wall, warm_wall;
    double load_mbps_cold, load_mbps_warm;
    uint64_t queries, mismatched_queries, mismatched_warm;
    int identical, identical_warm;
    double validate_seconds;
    int validate_ok;
    char validate_msg[300];
    double search_seconds_before, search_seconds_after;
} restart_result;

static void mem_measure(sv_arena *arena, sv_collection *c, mem_view *m)
{
    m->arena_bytes = sv_arena_allocated(arena);
    sv_collection_stats(c, &m->stats);
    m->live = m->stats.live;
    m->bpv = m->live ? (double)m->arena_bytes / (double)m->live : 0.0;
}

static int search_all(sv_collection *c, const float *queries, uint32_t nq, uint32_t dim,
                      sv_hit *hits, size_t *counts, double *seconds)
{
    sv_error err = {0};
    double t0 = bu_now_seconds();
    for (uint32_t q = 0; q < nq; q++) {
        if (sv_collection_search(c, queries + (size_t)q * dim, dim, PB_K, PB_SEARCH_LIST,
                                 hits + (size_t)q * PB_K, &counts[q], &err) != SV_OK) {
            print_err("sv_collection_search", &err);
            return -1;
        }
    }
    *seconds = bu_now_seconds() - t0;
    return 0;
}

/* Queries whose answers differ (ids, order or distance bits). */
static uint64_t compare_hits(const sv_hit *a, const size_t *na, const sv_hit *b, const size_t *nb,
                             uint32_t nq, int verbose)
{
    uint64_t bad = 0;
    for (uint32_t q = 0; q < nq; q++) {
        int same = na[q] == nb[q];
        for (size_t j = 0; same && j < na[q]; j++) {
            const sv_hit *x = &a[(size_t)q * PB_K + j], *y = &b[(size_t)q * PB_K + j];
            same = strcmp(x->id, y->id) == 0 &&
                   memcmp(&x->distance, &y->distance, sizeof x->distance) == 0;
        }
        if (!same) {
            if (verbose && bad < 3) {
                const sv_hit *x = &a[(size_t)q * PB_K], *y = &b[(size_t)q * PB_K];
                fprintf(stderr, "persist-bench: query %u differs: %zu hits [0] %s %.6g vs %zu hits [0] %s %.6g\n",
                        q, na[q], na[q] ? x->id : "-", na[q] ? (double)x->distance : 0.0, nb[q],
                        nb[q] ? y->id : "-", nb[q] ? (double)y->distance : 0.0);
            }
            bad++;
        }
    }
    return bad;
}

static int timed_open(const options *o, const char *coll_dir, sv_arena *arena, sv_durable **d,
                      sv_recovery *rec, double *wall)
{
    sv_error err = {0};
    sv_durable_options dopt = {.sync_interval_ms = 0, .snapshot_log_bytes = 0};
    double t0 = bu_now_seconds();
    sv_status st = sv_durable_open(coll_dir, sv_arena_allocator(arena), o->threads, &dopt, d, rec,
                                   &err);
    *wall = bu_now_seconds() - t0;
    if (st != SV_OK) {
        print_err("sv_durable_open", &err);
        return -1;
    }
    return 0;
}

static int run_restart(const options *o, restart_result *r)
{
    memset(r, 0, sizeof *r);
    char coll_dir[PB_PATH + 32];
    snprintf(coll_dir, sizeof coll_dir, "%s/restart", o->dir);
    sv_error err = {0};
    sv_durable *d = NULL;
    sv_arena *arena = NULL, *arena2 = NULL;
    float *batch = NULL, *queries = NULL;
    sv_hit *ref = NULL, *got = NULL;
    size_t *ref_n = NULL, *got_n = NULL;
    int rc = -1;
    uint32_t dim = o->dim, nq = o->queries;
    r->n = o->restart_n;
    r->queries = nq;

    if (fresh_dir(o->dir) != 0)
        return -1;
    batch = malloc((size_t)o->restart_batch * dim * sizeof *batch);
    queries = malloc((size_t)nq * dim * sizeof *queries);
    ref = malloc((size_t)nq * PB_K * sizeof *ref);
    got = malloc((size_t)nq * PB_K * sizeof *got);
    ref_n = calloc(nq, sizeof *ref_n);
    got_n = calloc(nq, sizeof *got_n);
    arena = sv_arena_create();
    if (!batch || !queries || !ref || !got || !ref_n || !got_n || !arena) {
        fprintf(stderr, "persist-bench: out of memory (or no jemalloc arena)\n");
        goto out;
    }
    bu_rng qr = {.s = o->seed ^ 0x5155455259ull}; /* queries: a stream of their own */
    bu_fill_normal(&qr, queries, (size_t)nq * dim);

    sv_params p;
    sv_params_default(&p, dim);
    p.threads = o->threads;
    p.allocator = sv_arena_allocator(arena);
    sv_durable_options dopt = {.sync_interval_ms = 0, .snapshot_log_bytes = 0};
    if (sv_durable_create(coll_dir, &p, &dopt, &d, &err) != SV_OK) {
        print_err("sv_durable_create", &err);
        goto out;
    }

    /* Build. */
    bu_rng br = {.s = o->seed + 1};
    double t0 = bu_now_seconds(), last = t0;
    for (uint64_t done = 0; done < o->restart_n;) {
        size_t cnt = o->restart_n - done < o->restart_batch ? (size_t)(o->restart_n - done)
                                                            : o->restart_batch;
        bu_fill_normal(&br, batch, cnt * dim);
        if (sv_durable_add(d, batch, cnt, dim, NULL, NULL, &err) != SV_OK ||
            (sv_durable_flush_due(d) && sv_durable_flush(d, &err) != SV_OK)) {
            print_err("sv_durable_add", &err);
            goto out;
        }
        done += cnt;
        double t = bu_now_seconds();
        if (t - last >= 10.0 || done == o->restart_n) {
            fprintf(stderr, "persist-bench: restart build %llu/%llu vectors, %.0f s, %.0f vectors/s\n",
                    (unsigned long long)done, (unsigned long long)o->restart_n, t - t0,
                    (double)done / (t - t0));
            last = t;
        }
    }
    if (sv_durable_flush(d, &err) != SV_OK) {
        print_err("sv_durable_flush", &err);
        goto out;
    }
    r->build_seconds = bu_now_seconds() - t0;
    r->build_rate = (double)o->restart_n / r->build_seconds;
    sv_durable_stats ds;
    sv_durable_get_stats(d, &ds);
    r->build_syncs = ds.syncs;
    r->build_log_bytes = ds.log_bytes_total;
    fprintf(stderr, "persist-bench: built in %.1f s; taking the snapshot\n", r->build_seconds);

    double ts = bu_now_seconds();
    if (sv_durable_snapshot(d, &r->snap, &err) != SV_OK) {
        print_err("sv_durable_snapshot", &err);
        goto out;
    }
    r->snap_wall = bu_now_seconds() - ts;
    r->snap_file_bytes = dir_bytes(coll_dir, "snap-");
    mem_measure(arena, sv_durable_collection(d), &r->before);

    if (search_all(sv_durable_collection(d), queries, nq, dim, ref, ref_n,
                   &r->search_seconds_before) != 0)
        goto out;
    sv_durable_free(d);
    d = NULL;
    sv_arena_free(arena);
    arena = NULL;

    /* Cold restart. */
    r->cache_method = drop_cache(coll_dir);
    dir_resident(coll_dir, &r->resident_before, &r->resident_total);
    fprintf(stderr, "persist-bench: page cache dropped (%s), %.1f%% of the directory resident; opening\n",
            r->cache_method,
            r->resident_total ? 100.0 * (double)r->resident_before / (double)r->resident_total : 0.0);
    arena = sv_arena_create();
    if (!arena || timed_open(o, coll_dir, arena, &d, &r->cold, &r->cold_wall) != 0)
        goto out;
    mem_measure(arena, sv_durable_collection(d), &r->after);
    if (search_all(sv_durable_collection(d), queries, nq, dim, got, got_n,
                   &r->search_seconds_after) != 0)
        goto out;
    r->mismatched_queries = compare_hits(ref, ref_n, got, got_n, nq, 1);
    r->identical = r->mismatched_queries == 0;
    sv_error verr = {0};
    double tv = bu_now_seconds();
    r->validate_ok = sv_collection_validate(sv_durable_collection(d), &verr) == SV_OK;
    r->validate_seconds = bu_now_seconds() - tv;
    if (!r->validate_ok)
        snprintf(r->validate_msg, sizeof r->validate_msg, "%s: %s", sv_status_name(verr.code),
                 verr.message);
    sv_durable_free(d);
    d = NULL;
    sv_arena_free(arena); /* both opens start from a new, empty arena */
    arena = NULL;

    /* Warm restart: the files are in the page cache now. */
    fprintf(stderr, "persist-bench: opening again (warm cache)\n");
    arena2 = sv_arena_create();
    if (!arena2 || timed_open(o, coll_dir, arena2, &d, &r->warm, &r->warm_wall) != 0)
        goto out;
    if (search_all(sv_durable_collection(d), queries, nq, dim, got, got_n,
                   &r->search_seconds_after) != 0)
        goto out;
    r->mismatched_warm = compare_hits(ref, ref_n, got, got_n, nq, 1);
    r->identical_warm = r->mismatched_warm == 0;

    r->load_mbps_cold = r->cold.snapshot_seconds > 0
                            ? (double)r->snap.bytes / 1e6 / r->cold.snapshot_seconds : NAN;
    r->load_mbps_warm = r->warm.snapshot_seconds > 0
                            ? (double)r->snap.bytes / 1e6 / r->warm.snapshot_seconds : NAN;
    rc = 0;
out:
    sv_durable_free(d);
    sv_arena_free(arena);
    sv_arena_free(arena2);
    free(batch);
    free(queries);
    free(ref);
    free(got);
    free(ref_n);
    free(got_n);
    return rc;
}

static void print_mem_parts(const char *label, const mem_view *m)
{
    const sv_stats *s = &m->stats;
    double n = m->live ? (double)m->live : 1.0;
    printf("  %-7s arena %.1f B/vector (%zu B, %llu live, %llu indexed, %llu buffered); "
           "engine estimate: vectors %.1f, edges %.1f, id map %.1f, buffer %.1f, other %.1f; "
           "avg degree %.2f, edge slots %.2f\n",
           label, m->bpv, m->arena_bytes, (unsigned long long)m->live,
           (unsigned long long)s->indexed, (unsigned long long)s->buffered,
           (double)s->est_bytes_vectors / n, (double)s->est_bytes_edges / n,
           (double)s->est_bytes_idmap / n, (double)s->est_bytes_buffer / n,
           (double)s->est_bytes_other / n, s->avg_degree, s->avg_edge_slots);
}

static void print_restart(const options *o, const restart_result *r)
{
    printf("\nB. restart: n %llu, dim %u, int8 R 32 L 64, build batch %u (fsync per add), threads %u%s\n",
           (unsigned long long)r->n, o->dim, o->restart_batch, o->threads,
           o->threads == 0 ? " (all cores)" : "");
    printf("build:    %.1f s, %.0f vectors/s (incl. flush), %llu fsyncs, log %.1f MB\n",
           r->build_seconds, r->build_rate, (unsigned long long)r->build_syncs,
           (double)r->build_log_bytes / 1e6);
    printf("snapshot: %.1f MB (file %.1f MB), %.3f s (write + fsync), call %.3f s, stall %.4f s\n",
           (double)r->snap.bytes / 1e6, (double)r->snap_file_bytes / 1e6, r->snap.seconds,
           r->snap_wall, r->snap.stall_seconds);
    printf("page cache before the cold open: %s, %.1f%% of %.1f MB resident\n", r->cache_method,
           r->resident_total ? 100.0 * (double)r->resident_before / (double)r->resident_total : 0.0,
           (double)r->resident_total / 1e6);
    printf("%-6s %10s %12s %10s %9s %10s %8s\n", "open", "open s", "snapshot s", "load MB/s",
           "replayed", "wall s", "note");
    printf("%-6s %10.3f %12.3f %10.1f %9llu %10.3f %8s\n", "cold", r->cold.seconds,
           r->cold.snapshot_seconds, r->load_mbps_cold, (unsigned long long)r->cold.replayed,
           r->cold_wall, r->cold.note[0] ? r->cold.note : "-");
    printf("%-6s %10.3f %12.3f %10.1f %9llu %10.3f %8s\n", "warm", r->warm.seconds,
           r->warm.snapshot_seconds, r->load_mbps_warm, (unsigned long long)r->warm.replayed,
           r->warm_wall, r->warm.note[0] ? r->warm.note : "-");
    printf("memory per vector (arena allocated / live):\n");
    print_mem_parts("before", &r->before);
    print_mem_parts("after", &r->after);
    double ratio = r->before.bpv > 0 ? r->after.bpv / r->before.bpv : NAN;
    printf("  after/before %.4f (%+.2f%%): %s\n", ratio, (ratio - 1.0) * 100.0,
           fabs(ratio - 1.0) <= 0.02 ? "within 2%" : "NOT within 2%");
    printf("searches (%llu, k %d, search list %d): cold reopen %s (%llu differ), warm reopen %s "
           "(%llu differ); %.3f s before, %.3f s after\n",
           (unsigned long long)r->queries, PB_K, PB_SEARCH_LIST, r->identical ? "OK" : "MISMATCH",
           (unsigned long long)r->mismatched_queries, r->identical_warm ? "OK" : "MISMATCH",
           (unsigned long long)r->mismatched_warm, r->search_seconds_before,
           r->search_seconds_after);
    printf("validate after reopen: %s (%.2f s)%s%s\n", r->validate_ok ? "ok" : "FAILED",
           r->validate_seconds, r->validate_ok ? "" : ": ", r->validate_ok ? "" : r->validate_msg);
}

/* ---- JSON ----------------------------------------------------------------- */

static void json_run(FILE *f, const run_result *r)
{
    fputs("{\"vectors_per_second\": ", f);
    bu_json_num(f, r->rate);
    fputs(", \"seconds\": ", f);
    bu_json_num(f, r->seconds);
    fputs(", \"add_seconds\": ", f);
    bu_json_num(f, r->add_seconds);
    fputs(", \"flush_seconds\": ", f);
    bu_json_num(f, r->flush_seconds);
    fputs(", \"add_latency_ms\": {\"p50\": ", f);
    bu_json_num(f, r->p50_ms);
    fputs(", \"p90\": ", f);
    bu_json_num(f, r->p90_ms);
    fputs(", \"p99\": ", f);
    bu_json_num(f, r->p99_ms);
    fputs(", \"max\": ", f);
    bu_json_num(f, r->max_ms);
    fputs(", \"mean\": ", f);
    bu_json_num(f, r->mean_ms);
    fprintf(f, "}, \"log_bytes\": %llu, \"fsyncs\": %llu, \"fsync_seconds\": ",
            (unsigned long long)r->log_bytes, (unsigned long long)r->syncs);
    bu_json_num(f, r->sync_seconds);
    fprintf(f, ", \"dir_bytes\": %llu, \"live\": %llu, \"bytes_per_vector_arena\": ",
            (unsigned long long)r->dir_bytes, (unsigned long long)r->live);
    bu_json_num(f, r->bpv_arena);
    fputc('}', f);
}

static void json_mem(FILE *f, const mem_view *m)
{
    const sv_stats *s = &m->stats;
    fprintf(f, "{\"arena_bytes\": %zu, \"live\": %llu, \"indexed\": %llu, \"bytes_per_vector\": ",
            m->arena_bytes, (unsigned long long)m->live, (unsigned long long)s->indexed);
    bu_json_num(f, m->bpv);
    fprintf(f,
            ", \"est_bytes\": {\"vectors\": %llu, \"edges\": %llu, \"idmap\": %llu, \"buffer\": %llu, \"other\": %llu}, \"avg_degree\": ",
            (unsigned long long)s->est_bytes_vectors, (unsigned long long)s->est_bytes_edges,
            (unsigned long long)s->est_bytes_idmap, (unsigned long long)s->est_bytes_buffer,
            (unsigned long long)s->est_bytes_other);
    bu_json_num(f, s->avg_degree);
    fputs(", \"avg_edge_slots\": ", f);
    bu_json_num(f, s->avg_edge_slots);
    fputc('}', f);
}

static void json_recovery(FILE *f, const sv_recovery *rec, double wall, double mbps)
{
    fprintf(f, "{\"seconds\": ");
    bu_json_num(f, rec->seconds);
    fputs(", \"snapshot_seconds\": ", f);
    bu_json_num(f, rec->snapshot_seconds);
    fprintf(f, ", \"replayed\": %llu, \"snapshot_lsn\": %llu, \"last_lsn\": %llu, \"torn_bytes\": %llu, \"wall_seconds\": ",
            (unsigned long long)rec->replayed, (unsigned long long)rec->snapshot_lsn,
            (unsigned long long)rec->last_lsn, (unsigned long long)rec->torn_bytes);
    bu_json_num(f, wall);
    fputs(", \"load_mb_per_second\": ", f);
    bu_json_num(f, mbps);
    fputs(", \"note\": ", f);
    bu_json_str(f, rec->note);
    fputc('}', f);
}

static int write_json(const options *o, const mode_result *modes, const restart_result *rr)
{
    FILE *f = o->json ? fopen(o->json, "w") : stdout;
    if (!f) {
        fprintf(stderr, "persist-bench: %s: cannot create: %s\n", o->json, strerror(errno));
        return -1;
    }
    if (!o->json)
        fputs("\n", f);
    fprintf(f, "{\n  \"engine\": \"slimvec\",\n  \"bench\": \"persist\",\n  \"cores\": %ld,\n  \"dim\": %u,\n  \"threads\": %u,\n  \"seed\": %llu",
            sysconf(_SC_NPROCESSORS_ONLN), o->dim, o->threads, (unsigned long long)o->seed);
    if (modes) {
        fprintf(f, ",\n  \"ingest\": {\n    \"n\": %llu, \"batch\": %u, \"clients\": %u, \"repeat\": %u, \"interval_ms\": %u,\n    \"modes\": {",
                (unsigned long long)o->n, o->batch, o->clients, o->repeat, o->interval_ms);
        double base = modes[0].runs[modes[0].median].rate;
        for (int m = 0; m < PB_MODES; m++) {
            const mode_result *mr = &modes[m];
            const run_result *r = &mr->runs[mr->median];
            fprintf(f, "%s\n      \"%s\": {\"median\": ", m ? "," : "", MODE_NAMES[m]);
            json_run(f, r);
            fputs(",\n        \"ratio_to_memory\": ", f);
            bu_json_num(f, base > 0 ? r->rate / base : NAN);
            fputs(", \"rate_min\": ", f);
            bu_json_num(f, mr->rate_min);
            fputs(", \"rate_max\": ", f);
            bu_json_num(f, mr->rate_max);
            fputs(", \"rates\": [", f);
            for (uint32_t i = 0; i < mr->n_runs; i++) {
                if (i)
                    fputs(", ", f);
                bu_json_num(f, mr->runs[i].rate);
            }
            fputs("]}", f);
        }
        fputs("\n    }\n  }", f);
    }
    if (rr) {
        fprintf(f, ",\n  \"restart\": {\n    \"n\": %llu, \"build_batch\": %u, \"build_seconds\": ",
                (unsigned long long)rr->n, o->restart_batch);
        bu_json_num(f, rr->build_seconds);
        fputs(", \"build_vectors_per_second\": ", f);
        bu_json_num(f, rr->build_rate);
        fprintf(f, ", \"build_fsyncs\": %llu, \"build_log_bytes\": %llu,\n",
                (unsigned long long)rr->build_syncs, (unsigned long long)rr->build_log_bytes);
        fprintf(f, "    \"snapshot\": {\"bytes\": %llu, \"file_bytes\": %llu, \"lsn\": %llu, \"seconds\": ",
                (unsigned long long)rr->snap.bytes, (unsigned long long)rr->snap_file_bytes,
                (unsigned long long)rr->snap.lsn);
        bu_json_num(f, rr->snap.seconds);
        fputs(", \"stall_seconds\": ", f);
        bu_json_num(f, rr->snap.stall_seconds);
        fputs(", \"call_seconds\": ", f);
        bu_json_num(f, rr->snap_wall);
        fputs("},\n    \"cache_drop\": ", f);
        bu_json_str(f, rr->cache_method);
        fprintf(f, ", \"resident_bytes_before_open\": %llu, \"dir_bytes\": %llu,\n    \"cold\": ",
                (unsigned long long)rr->resident_before, (unsigned long long)rr->resident_total);
        json_recovery(f, &rr->cold, rr->cold_wall, rr->load_mbps_cold);
        fputs(",\n    \"warm\": ", f);
        json_recovery(f, &rr->warm, rr->warm_wall, rr->load_mbps_warm);
        fputs(",\n    \"memory_before\": ", f);
        json_mem(f, &rr->before);
        fputs(",\n    \"memory_after\": ", f);
        json_mem(f, &rr->after);
        fputs(",\n    \"bytes_per_vector_ratio\": ", f);
        bu_json_num(f, rr->before.bpv > 0 ? rr->after.bpv / rr->before.bpv : NAN);
        fprintf(f, ",\n    \"searches\": {\"queries\": %llu, \"k\": %d, \"search_list\": %d, \"identical\": %s, \"mismatched\": %llu, \"identical_warm\": %s, \"mismatched_warm\": %llu},\n",
                (unsigned long long)rr->queries, PB_K, PB_SEARCH_LIST,
                rr->identical ? "true" : "false", (unsigned long long)rr->mismatched_queries,
                rr->identical_warm ? "true" : "false", (unsigned long long)rr->mismatched_warm);
        fprintf(f, "    \"validate\": {\"ok\": %s, \"seconds\": ", rr->validate_ok ? "true" : "false");
        bu_json_num(f, rr->validate_seconds);
        fputs(", \"message\": ", f);
        bu_json_str(f, rr->validate_ok ? NULL : rr->validate_msg);
        fputs("}\n  }", f);
    }
    fputs("\n}\n", f);
    if (o->json) {
        if (fclose(f) != 0) {
            fprintf(stderr, "persist-bench: %s: write error: %s\n", o->json, strerror(errno));
            return -1;
        }
        printf("\nwrote %s\n", o->json);
    } else {
        fflush(f);
    }
    return 0;
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options o;
    int pa = parse_args(argc, argv, &o);
    if (pa != 0)
        return pa > 0 ? 0 : 2;

    mode_result *modes = NULL;
    restart_result *rr = NULL;
    int rc = 1;

    printf("persist-bench: %ld cores, data dir %s\n", sysconf(_SC_NPROCESSORS_ONLN), o.dir);
    fflush(stdout);
    if (!o.skip_ingest) {
        modes = calloc(PB_MODES, sizeof *modes);
        if (!modes || run_ingest(&o, modes) != 0)
            goto out;
        print_ingest(&o, modes);
        fflush(stdout);
    }
    if (!o.skip_restart) {
        rr = calloc(1, sizeof *rr);
        if (!rr || run_restart(&o, rr) != 0)
            goto out;
        print_restart(&o, rr);
        fflush(stdout);
    }
    if (write_json(&o, modes, rr) != 0)
        goto out;
    rc = rr && (!rr->identical || !rr->identical_warm || !rr->validate_ok) ? 1 : 0;
out:
    if (!o.keep)
        rm_rf(o.dir);
    free(modes);
    free(rr);
    return rc;
}
