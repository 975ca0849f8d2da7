/*
 * Files the auth module reads: whole, PEM, and whether one changed since
 * it was last read: its device, inode, size,
 * modification and status-change times. A Kubernetes Secret volume swaps
 * its files by renaming a symlink (stat follows it: the inode changes); an
 * editor or `cp` changes the times.
 */
#ifndef SVD_FILES_H
#define SVD_FILES_H

#include <stddef.h>
#include <stdint.h>

typedef struct svd_filestamp {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
    int exists;
} svd_filestamp;

/* The file's stamp now (exists = 0 when it cannot be stat'ed). */
void svd_filestamp_of(const char *path, svd_filestamp *out);
/* 1 when a and b differ. */
int svd_filestamp_differ(const svd_filestamp *a, const svd_filestamp *b);

/* Read a whole file of at most max bytes into a NUL-terminated buffer
 * (malloc'd; *len without the NUL). NULL and errno set on failure (EFBIG
 * past max). */
char *svd_read_file(const char *path, size_t max, size_t *len);

/* A PEM file (at most 1 MiB), or NULL with err saying "cannot read the
 * <what> <path>: <why>". */
char *svd_read_pem(const char *path, const char *what, char *err, size_t err_cap);

#endif
