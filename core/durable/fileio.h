/*
 * Small POSIX file helpers for the durability code: whole writes, fsync of
 * files and directories, read-only maps of whole files, directory removal.
 * Each returns 0 on success and -1 with errno set.
 */
#ifndef SV_FILEIO_H
#define SV_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* write(2) until all n bytes are written (retries EINTR and short writes). */
int sv_write_all(int fd, const void *buf, size_t n);
/* fsync the directory `path` (makes creations, renames, unlinks durable). */
int sv_fsync_dir(const char *path);

/* A read-only map of a whole file (len 0 maps nothing, data NULL). */
typedef struct sv_map {
    const uint8_t *data;
    size_t len;
} sv_map;
int sv_map_file(const char *path, sv_map *m);
void sv_unmap(sv_map *m);

/* Names like "wal-00000000000000000042.log": prefix, exactly 20 decimal
 * digits, suffix. 1 and *num when name has that form. */
int sv_parse_numbered_name(const char *name, const char *prefix, const char *suffix, uint64_t *num);

/* Remove a directory and the regular files in it (one level, as the data
 * directory's collections are laid out). */
int sv_remove_dir(const char *path);

#endif
