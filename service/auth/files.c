#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void svd_filestamp_of(const char *path, svd_filestamp *out)
{
    struct stat st;
    *out = (svd_filestamp){0};
    if (!path || stat(path, &st) != 0)
        return;
    out->exists = 1;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    out->ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}

int svd_filestamp_differ(const svd_filestamp *a, const svd_filestamp *b)
{
    return a->exists != b->exists || a->dev != b->dev || a->ino != b->ino || a->size != b->size ||
           a->mtime_ns != b->mtime_ns || a->ctime_ns != b->ctime_ns;
}

char *svd_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > max + 2)
                ncap = max + 2;
            char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (!nb) {
                int e = ncap > cap ? ENOMEM : EFBIG;
                free(buf);
                fclose(f);
                errno = e;
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (n > max) {
            free(buf);
            fclose(f);
            errno = EFBIG;
            return NULL;
        }
        if (got == 0) {
            if (ferror(f)) {
                int e = errno ? errno : EIO;
                free(buf);
                fclose(f);
                errno = e;
                return NULL;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

char *svd_read_pem(const char *path, const char *what, char *err, size_t err_cap)
{
    char *s = svd_read_file(path, 1u << 20, NULL);
    if (!s)
        snprintf(err, err_cap, "cannot read the %s %s: %s", what, path,
                 errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
    return s;
}
