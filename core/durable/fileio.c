/* File helpers (see fileio.h). */
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sv_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int sv_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int sv_map_file(const char *path, sv_map *m)
{
    m->data = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        /* Loading reads front to back once: let the kernel read ahead far. */
        madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL | MADV_WILLNEED);
        m->data = p;
        m->len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

void sv_unmap(sv_map *m)
{
    if (m->data)
        munmap((void *)m->data, m->len);
    m->data = NULL;
    m->len = 0;
}

int sv_remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    char file[4096];
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (snprintf(file, sizeof file, "%s/%s", path, e->d_name) >= (int)sizeof file ||
            unlink(file) != 0)
            rc = -1;
    }
    closedir(d);
    if (rc == 0 && rmdir(path) != 0)
        rc = -1;
    return rc;
}

int sv_parse_numbered_name(const char *name, const char *prefix, const char *suffix, uint64_t *num)
{
    size_t lp = strlen(prefix), ls = strlen(suffix);
    if (strlen(name) != lp + 20 + ls || strncmp(name, prefix, lp) != 0 ||
        strcmp(name + lp + 20, suffix) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = lp; i < lp + 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *num = v;
    return 1;
}
