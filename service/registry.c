/* Collections by name (see registry.h). */
#include "registry.h"

#include "error.h"
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_CAP 4200

/*
 * Two locks: `mu` guards the table and is held only for lookups and edits
 * of it, so no RPC ever waits behind disk work; `dir_lock` serialises
 * creates and drops (which make and remove directories, fsync, and wait
 * for a running snapshot of the collection). Order: dir_lock -> mu.
 */
struct svd_registry {
    pthread_mutex_t dir_lock;
    pthread_mutex_t mu;
    svd_coll **items;   /* sorted by name */
    size_t n, cap;
    char *data_dir;     /* NULL: in memory */
    int lock_fd;
    sv_durable_options opts;
    uint32_t build_threads;
    size_t max_collections;
    sv_arena_pool *pool;
    int following;
    svd_registry_follow follow;
};

svd_registry *svd_registry_create(const svd_registry_options *o)
{
    svd_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if ((o->data_dir && !(r->data_dir = strdup(o->data_dir))) ||
        !(r->pool = sv_arena_pool_create(o->arenas ? o->arenas : 1))) {
        free(r->data_dir);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->dir_lock, NULL);
    r->lock_fd = -1;
    r->opts = o->durable;
    r->build_threads = o->build_threads;
    r->max_collections = o->max_collections ? o->max_collections : SIZE_MAX;
    if (o->follow) {
        r->following = 1;
        r->follow = *o->follow;
    }
    return r;
}

/* Cluster mode: a collection's directory holds the incarnation it
 * follows, so a copy of a collection dropped (and maybe created again)
 * while this server was away is known as stale at the next start. */
static int write_incarnation(const char *dir, uint64_t inc)
{
    char path[PATH_CAP + 16];
    snprintf(path, sizeof path, "%s/incarnation", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%llu\n", (unsigned long long)inc) > 0;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    return ok && sv_fsync_dir(dir) == 0 ? 0 : -1;
}

static uint64_t read_incarnation(const char *dir)
{
    char path[PATH_CAP + 16];
    snprintf(path, sizeof path, "%s/incarnation", dir);
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Create the collection's durable handle: its own log, or (cluster mode)
 * following its shard's. */
static sv_status durable_create(svd_registry *r, svd_coll *c, const char *path, sv_params *params, sv_error *err)
{
    if (!r->following)
        return sv_durable_create(r->data_dir ? path : NULL, params, &r->opts, &c->dur, err);
    sv_log *log = NULL;
    sv_status st = r->follow.open_log(r->follow.ctx, c->name, &c->incarnation, &log, err);
    if (st == SV_OK)
        st = sv_durable_create_follower(path, params, &r->opts, log, &r->follow.ids, &c->dur, err);
    if (st == SV_OK && write_incarnation(path, c->incarnation) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s/incarnation: %s", path, strerror(errno));
        sv_error ignored;
        sv_durable_drop(c->dur, &ignored);
        sv_durable_free(c->dur);
        c->dur = NULL;
    }
    return st;
}

/* Open what a collection's directory holds: its own log, or (cluster
 * mode) the stream it follows. SV_ERR_NOT_FOUND: a stale copy (removed). */
static sv_status durable_open(svd_registry *r, svd_coll *c, const char *path, sv_recovery *rec, sv_error *err)
{
    if (!r->following)
        return sv_durable_open(path, sv_arena_allocator(c->arena), r->build_threads, &r->opts, &c->dur, rec, err);
    uint64_t have = read_incarnation(path);
    sv_log *log = NULL;
    sv_status st = r->follow.open_log(r->follow.ctx, c->name, &c->incarnation, &log, err);
    if (st == SV_OK && have != c->incarnation) {
        sv_log_close(log);
        st = sv_fail(err, SV_ERR_NOT_FOUND, "holds incarnation %llu of the collection, the cluster's is %llu",
                     (unsigned long long)have, (unsigned long long)c->incarnation);
    }
    if (st == SV_ERR_NOT_FOUND) {
        sv_durable_remove_dir(path, NULL);
        return st;
    }
    if (st != SV_OK)
        return st;
    return sv_durable_open_follower(path, sv_arena_allocator(c->arena), r->build_threads, &r->opts, log,
                                    &r->follow.ids, &c->dur, rec, err);
}

const char *svd_registry_data_dir(const svd_registry *r)
{
    return r->data_dir;
}

sv_arena_pool *svd_registry_pool(svd_registry *r)
{
    return r->pool;
}

size_t svd_registry_count(svd_registry *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* A collection entry with its account in the pool (no collection in it
 * yet), or NULL. */
static svd_coll *coll_new(svd_registry *r, const char *name)
{
    svd_coll *c = calloc(1, sizeof *c);
    sv_arena *arena = sv_arena_create_in(r->pool);
    if (!c || !arena) {
        free(c);
        sv_arena_free(arena);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->arena = arena;
    return c;
}

static void coll_destroy(svd_coll *c)
{
    sv_durable_free(c->dur);
    if (c->extra_free)
        c->extra_free(c->extra);
    size_t left = sv_arena_allocated(c->arena);
    if (left)
        fprintf(stderr, "slimvecd: collection \"%s\" left %zu bytes allocated after it was freed\n",
                c->name, left);
    sv_arena_free(c->arena);
    free(c);
}

void svd_registry_free(svd_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        coll_destroy(r->items[i]);
    free(r->items);
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    free(r->data_dir);
    sv_arena_pool_free(r->pool);
    pthread_mutex_destroy(&r->dir_lock);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void coll_path(const svd_registry *r, const char *name, char *out, size_t cap)
{
    /* The prefix keeps names like "." and ".." ordinary file names. */
    snprintf(out, cap, "%s/c-%s", r->data_dir, name);
}

static long find(const svd_registry *r, const char *name);

/* Insert c with `refs` references unless the name is taken: the count is
 * set in the same turn of the lock that publishes the entry, or a lookup in
 * between could take and drop a reference and free it under its creator. */
static sv_status insert(svd_registry *r, svd_coll *c, int refs, sv_error *err)
{
    long at = find(r, c->name);
    if (at >= 0) {
        err->code = SV_ERR_ALREADY_EXISTS;
        snprintf(err->message, sizeof err->message, "collection \"%s\" already exists", c->name);
        return SV_ERR_ALREADY_EXISTS;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        svd_coll **t = realloc(r->items, cap * sizeof *t);
        if (!t) {
            err->code = SV_ERR_RESOURCE;
            strcpy(err->message, "out of memory creating the collection");
            return SV_ERR_RESOURCE;
        }
        r->items = t;
        r->cap = cap;
    }
    size_t pos = (size_t)(-at - 1);
    memmove(&r->items[pos + 1], &r->items[pos], (r->n - pos) * sizeof *r->items);
    r->items[pos] = c;
    r->n++;
    c->refs = refs;
    return SV_OK;
}

int svd_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len < 1 || len > SVD_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.' || ch == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

/* Index of name, or -(insertion point) - 1. */
static long find(const svd_registry *r, const char *name)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->items[mid]->name, name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

sv_status svd_registry_create_collection(svd_registry *r, const char *name, sv_params *params,
                                         svd_coll **out, sv_error *err)
{
    *out = NULL;
    svd_coll *c = coll_new(r, name);
    if (!c) {
        err->code = SV_ERR_RESOURCE;
        strcpy(err->message, "out of memory creating the collection");
        return SV_ERR_RESOURCE;
    }
    params->allocator = sv_arena_allocator(c->arena);
    char path[PATH_CAP];
    if (r->data_dir)
        coll_path(r, name, path, sizeof path);
    pthread_mutex_lock(&r->dir_lock);
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    pthread_mutex_unlock(&r->mu);
    sv_status st = SV_OK;
    if (at >= 0) {
        err->code = st = SV_ERR_ALREADY_EXISTS;
        snprintf(err->message, sizeof err->message, "collection \"%s\" already exists", name);
    } else if (r->n >= r->max_collections) {
        err->code = st = SV_ERR_RESOURCE;
        snprintf(err->message, sizeof err->message,
                 "the server holds %zu collections, its limit (--max-collections %zu)", r->n,
                 r->max_collections);
    } else {
        st = durable_create(r, c, path, params, err);
    }
    if (st == SV_OK) {
        pthread_mutex_lock(&r->mu);
        st = insert(r, c, 2, err); /* the registry's and the caller's */
        pthread_mutex_unlock(&r->mu);
        if (st != SV_OK) {
            sv_error ignored;
            sv_durable_drop(c->dur, &ignored);
        }
    }
    if (st != SV_OK) {
        pthread_mutex_unlock(&r->dir_lock);
        coll_destroy(c);
        return st;
    }
    pthread_mutex_unlock(&r->dir_lock);
    *out = c;
    return SV_OK;
}

/* Set a follower's copy that does not open aside (stale-<name>-<time>):
 * the cluster makes a new copy from a peer's snapshot and the stream,
 * where a local log's collection would stop the start. Never removed here
 * (it may be the last copy of something): the operator removes it. */
static void set_aside(svd_registry *r, const char *name, const char *path, const char *why)
{
    char aside[PATH_CAP];
    snprintf(aside, sizeof aside, "%s/stale-%s-%lld", r->data_dir, name, (long long)time(NULL));
    if (rename(path, aside) == 0)
        fprintf(stderr, "slimvecd: %s does not open (%s): set aside as %s (remove it once the collection "
                        "serves again); a peer's snapshot replaces it\n",
                path, why, aside);
    else
        fprintf(stderr, "slimvecd: %s does not open (%s) and cannot be set aside: %s\n", path, why,
                strerror(errno));
}

/* Open the collection in path and add it. */
static sv_status open_one(svd_registry *r, const char *name, const char *path, double *seconds, sv_error *err)
{
    svd_coll *c = coll_new(r, name);
    if (!c)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory opening collections");
    sv_recovery rec;
    sv_error oerr;
    sv_status st = durable_open(r, c, path, &rec, &oerr);
    if (st == SV_ERR_NOT_FOUND && r->following) {
        fprintf(stderr, "slimvecd: removed %s: %s\n", path, oerr.message);
        coll_destroy(c);
        return SV_OK;
    }
    if (st == SV_ERR_CORRUPT && r->following) {
        /* Damaged, or the stream was purged past its snapshots (this pod
         * was away long): not if the stream is out of reach (SV_ERR_IO). */
        set_aside(r, name, path, oerr.message);
        coll_destroy(c);
        if (access(path, F_OK) == 0) /* still there: do not open what does not open */
            return sv_fail(err, SV_ERR_IO, "collection \"%s\": %.180s", name, oerr.message);
        return SV_OK;
    }
    if (st != SV_OK) {
        err->code = st;
        /* The message names the file in the collection's directory. */
        snprintf(err->message, sizeof err->message, "collection \"%s\": %.180s", name, oerr.message);
        fprintf(stderr, "slimvecd: %s: %s\n", path, oerr.message);
        coll_destroy(c);
        return st;
    }
    *seconds += rec.seconds;
    fprintf(stderr,
            "slimvecd: opened \"%s\": %llu vectors, snapshot LSN %llu (%.3f s), %llu log records replayed, %.3f s%s%s\n",
            name, (unsigned long long)sv_durable_count(c->dur), (unsigned long long)rec.snapshot_lsn,
            rec.snapshot_seconds, (unsigned long long)rec.replayed, rec.seconds, rec.note[0] ? "; " : "", rec.note);
    pthread_mutex_lock(&r->mu);
    st = insert(r, c, 1, err);
    pthread_mutex_unlock(&r->mu);
    if (st != SV_OK)
        coll_destroy(c);
    return st;
}

sv_status svd_registry_adopt(svd_registry *r, const char *name, const sv_params *params, uint64_t incarnation,
                             const char *snapshot_file, const char *originals_file, uint64_t lsn, sv_error *err)
{
    if (!r->following || !r->data_dir)
        return sv_fail(err, SV_ERR_INVALID_ARGUMENT, "only a cluster pod adopts a snapshot");
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/c-%s", r->data_dir, name);
    pthread_mutex_lock(&r->dir_lock);
    sv_status st = SV_OK;
    pthread_mutex_lock(&r->mu);
    int have = find(r, name) >= 0;
    pthread_mutex_unlock(&r->mu);
    if (have)
        st = sv_fail(err, SV_ERR_ALREADY_EXISTS, "collection \"%s\" is open here", name);
    if (st == SV_OK)
        st = sv_durable_prepare_follower(path, params, snapshot_file, originals_file, lsn, err);
    if (st == SV_OK && write_incarnation(path, incarnation) != 0) {
        st = sv_fail(err, SV_ERR_IO, "%s/incarnation: %s", path, strerror(errno));
        sv_durable_remove_dir(path, NULL);
    }
    double seconds = 0;
    if (st == SV_OK && (st = open_one(r, name, path, &seconds, err)) != SV_OK)
        sv_durable_remove_dir(path, NULL); /* it came from a peer: the next try fetches it again */
    if (st == SV_OK) {
        pthread_mutex_lock(&r->mu);
        have = find(r, name) >= 0;
        pthread_mutex_unlock(&r->mu);
        if (!have) /* set aside: the snapshot did not open with the stream */
            st = sv_fail(err, SV_ERR_CORRUPT, "the snapshot of \"%s\" at LSN %llu did not open", name,
                         (unsigned long long)lsn);
    }
    pthread_mutex_unlock(&r->dir_lock);
    return st;
}

void svd_registry_set_follow_shard(svd_registry *r, uint32_t shard)
{
    pthread_mutex_lock(&r->mu);
    r->follow.ids.shard = shard;
    pthread_mutex_unlock(&r->mu);
}

sv_status svd_registry_open_all(svd_registry *r, double *seconds, sv_error *err)
{
    *seconds = 0;
    if (!r->data_dir)
        return SV_OK;
    char path[PATH_CAP];
    if (mkdir(r->data_dir, 0755) == 0) {
        /* A new directory is durable only once its parent's entry is. */
        char parent[PATH_CAP];
        const char *slash = strrchr(r->data_dir, '/');
        if (!slash)
            snprintf(parent, sizeof parent, ".");
        else if (slash == r->data_dir)
            snprintf(parent, sizeof parent, "/");
        else
            snprintf(parent, sizeof parent, "%.*s", (int)(slash - r->data_dir), r->data_dir);
        if (sv_fsync_dir(parent) != 0) {
            err->code = SV_ERR_IO;
            snprintf(err->message, sizeof err->message, "%.200s: fsync: %s", parent, strerror(errno));
            return SV_ERR_IO;
        }
    } else if (errno != EEXIST) {
        err->code = SV_ERR_IO;
        snprintf(err->message, sizeof err->message, "%s: %s", r->data_dir, strerror(errno));
        return SV_ERR_IO;
    }
    snprintf(path, sizeof path, "%s/LOCK", r->data_dir);
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->lock_fd < 0 || flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        err->code = SV_ERR_IO;
        snprintf(err->message, sizeof err->message, "%.200s: %s", path,
                 errno == EWOULDBLOCK ? "another slimvecd uses this data directory" : strerror(errno));
        return SV_ERR_IO;
    }
    DIR *dh = opendir(r->data_dir);
    if (!dh) {
        err->code = SV_ERR_IO;
        snprintf(err->message, sizeof err->message, "%s: %s", r->data_dir, strerror(errno));
        return SV_ERR_IO;
    }
    sv_status st = SV_OK;
    struct dirent *e;
    while (st == SV_OK && (e = readdir(dh)) != NULL) {
        if (!strncmp(e->d_name, "fetch-", 6)) { /* a peer's snapshot a crash left half-fetched */
            snprintf(path, sizeof path, "%s/%s", r->data_dir, e->d_name);
            unlink(path);
            continue;
        }
        if (strncmp(e->d_name, "c-", 2) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", r->data_dir, e->d_name);
        /* Crashed creates (~tmp-) and drops (~drop-) leave these behind;
         * '~' is never part of a collection name. */
        if (strchr(e->d_name, '~')) {
            if (sv_remove_dir(path) == 0)
                fprintf(stderr, "slimvecd: removed %s (left by an interrupted create or drop)\n", path);
            continue;
        }
        const char *name = e->d_name + 2;
        if (!svd_name_valid(name)) {
            fprintf(stderr, "slimvecd: ignoring %s: not a collection name\n", path);
            continue;
        }
        st = open_one(r, name, path, seconds, err);
    }
    closedir(dh);
    if (st == SV_OK && r->n > r->max_collections)
        fprintf(stderr, "slimvecd: %zu collections are over --max-collections %zu: creates are refused\n",
                r->n, r->max_collections);
    return st;
}

svd_coll *svd_registry_get(svd_registry *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    svd_coll *c = at >= 0 ? r->items[at] : NULL;
    if (c)
        c->refs++;
    pthread_mutex_unlock(&r->mu);
    return c;
}

void svd_registry_put(svd_registry *r, svd_coll *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&r->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        coll_destroy(c);
}

sv_status svd_registry_drop(svd_registry *r, const char *name, sv_error *err)
{
    pthread_mutex_lock(&r->dir_lock);
    pthread_mutex_lock(&r->mu);
    long at = find(r, name);
    svd_coll *c = at >= 0 ? r->items[at] : NULL;
    if (c)
        c->refs++;
    pthread_mutex_unlock(&r->mu);
    if (!c) {
        pthread_mutex_unlock(&r->dir_lock);
        err->code = SV_ERR_NOT_FOUND;
        snprintf(err->message, sizeof err->message, "collection \"%s\" not found", name);
        return SV_ERR_NOT_FOUND;
    }
    /* The directory goes first: if that fails the collection stays, and
     * the client hears so. Calls still holding c get SV_ERR_NOT_FOUND. */
    sv_status st = sv_durable_drop(c->dur, err);
    if (st == SV_OK) {
        pthread_mutex_lock(&r->mu);
        at = find(r, name); /* still there: creates and drops hold dir_lock */
        memmove(&r->items[at], &r->items[at + 1], (r->n - (size_t)at - 1) * sizeof *r->items);
        r->n--;
        pthread_mutex_unlock(&r->mu);
        svd_registry_put(r, c); /* the table's reference */
    }
    pthread_mutex_unlock(&r->dir_lock);
    svd_registry_put(r, c);
    return st;
}

size_t svd_registry_list(svd_registry *r, svd_coll ***out)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    *out = n ? malloc(n * sizeof **out) : NULL;
    if (n && !*out)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = r->items[i];
        r->items[i]->refs++;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

void svd_registry_put_list(svd_registry *r, svd_coll **all, size_t n)
{
    for (size_t i = 0; i < n; i++)
        svd_registry_put(r, all[i]);
    free(all);
}
