/* The log interface (log.h) and its local backend over wal.c. */
#include "log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "wal.h"

void sv_log_close(sv_log *l)
{
    if (l)
        l->ops->close(l->impl);
}

typedef struct local_log {
    sv_log log;
    sv_wal *wal;
    char *dir;
} local_log;

static sv_status local_append(void *impl, uint32_t type, const struct iovec *parts, int n_parts, uint64_t *lsn,
                              sv_error *err)
{
    return sv_wal_append(((local_log *)impl)->wal, type, parts, n_parts, lsn, err);
}

static sv_status local_sync(void *impl, uint64_t lsn, sv_error *err)
{
    return sv_wal_sync(((local_log *)impl)->wal, lsn, err);
}

static sv_status local_seal(void *impl, uint64_t *last_lsn, sv_error *err)
{
    return sv_wal_rotate(((local_log *)impl)->wal, last_lsn, err);
}

/* Segments are named by their first LSN and sealed at snapshot
 * boundaries, so a segment whose first LSN is at or below the snapshot's
 * ends at or before it: it is wholly in the snapshot. */
static void local_release(void *impl, uint64_t lsn)
{
    local_log *l = impl;
    DIR *dh = opendir(l->dir);
    if (!dh)
        return;
    struct dirent *e;
    size_t cap = strlen(l->dir) + 64;
    char *path = malloc(cap);
    while (path && (e = readdir(dh)) != NULL) {
        uint64_t v = 0;
        if (sv_wal_segment_lsn(e->d_name, &v) && v <= lsn &&
            snprintf(path, cap, "%s/%s", l->dir, e->d_name) < (int)cap)
            unlink(path);
    }
    free(path);
    closedir(dh);
    sv_fsync_dir(l->dir);
}

static void local_stats(void *impl, sv_log_stats *out)
{
    sv_wal_stats w;
    sv_wal_get_stats(((local_log *)impl)->wal, &w);
    *out = (sv_log_stats){w.next_lsn, w.bytes, w.total_bytes, w.syncs, w.sync_seconds};
}

static void local_close(void *impl)
{
    local_log *l = impl;
    sv_wal_close(l->wal);
    free(l->dir);
    free(l);
}

static const sv_log_ops LOCAL_OPS = {local_append, local_sync, local_seal, local_release, local_stats,
                                     local_close};

sv_status sv_log_local_start(const char *dir, uint64_t next_lsn, uint32_t sync_interval_ms, sv_log **out,
                             sv_error *err)
{
    local_log *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory opening the log of %s", dir);
    }
    sv_status st = sv_wal_start(dir, next_lsn, sync_interval_ms, &l->wal, err);
    if (st != SV_OK) {
        free(l->dir);
        free(l);
        return st;
    }
    l->log = (sv_log){&LOCAL_OPS, l};
    *out = &l->log;
    return sv_ok(err);
}
