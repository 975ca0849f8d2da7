/* Text files a line at a time, and whole (see lines.h). */
#include "lines.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void set_err(svl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(svl_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

int svl_lines_init(svl_lines *r, FILE *f, const char *name, size_t max, svl_error *err)
{
    memset(r, 0, sizeof *r);
    r->f = f;
    r->name = name;
    r->max = max;
    if (!(r->buf = malloc(max + 1))) {
        set_err(err, "%s: out of memory", name);
        return -1;
    }
    r->buf[0] = '\0';
    return 0;
}

int svl_lines_open(svl_lines *r, const char *path, size_t max, svl_error *err)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, "%s: not a regular file (it is read twice: checked whole, then sent)", path);
        fclose(f);
        return -1;
    }
    if (svl_lines_init(r, f, path, max, err) != 0) {
        fclose(f);
        return -1;
    }
    r->own = 1;
    return 0;
}

int svl_lines_rewind(svl_lines *r, svl_error *err)
{
    if (fseek(r->f, 0, SEEK_SET) != 0) {
        set_err(err, "%s: cannot read it again: %s", r->name, strerror(errno));
        return -1;
    }
    clearerr(r->f);
    r->line = 0;
    r->len = 0;
    r->buf[0] = '\0';
    return 0;
}

int svl_lines_next(svl_lines *r, svl_error *err)
{
    size_t len = 0;
    int c, any = 0;
    r->len = 0;
    r->buf[0] = '\0';
    while ((c = getc(r->f)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (c == '\0') {
            set_err(err, "%s: line %zu: a NUL byte at column %zu (not a text file?)", r->name, r->line + 1,
                    len + 1);
            return -1;
        }
        if (len == r->max) {
            set_err(err, "%s: line %zu: longer than %zu bytes", r->name, r->line + 1, r->max);
            return -1;
        }
        r->buf[len++] = (char)c;
    }
    if (ferror(r->f)) {
        set_err(err, "%s: read error after line %zu: %s", r->name, r->line, strerror(errno));
        return -1;
    }
    if (!any)
        return 0;
    if (len > 0 && r->buf[len - 1] == '\r')
        len--;
    r->buf[len] = '\0';
    r->len = len;
    r->line++;
    return 1;
}

void svl_lines_close(svl_lines *r)
{
    if (r->own && r->f)
        fclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

int svl_read_text(const char *path, size_t max, char **out, size_t *len, svl_error *err)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        set_err(err, "%s: out of memory", path);
        goto cleanup;
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                set_err(err, "%s: more than %zu bytes", path, max);
                goto cleanup;
            }
            /* Grows to max + 1 at most: one byte past max tells "too long". */
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                set_err(err, "%s: out of memory", path);
                goto cleanup;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        set_err(err, "%s: read error: %s", path, strerror(errno));
        goto cleanup;
    }
    if (n > max) {
        set_err(err, "%s: more than %zu bytes", path, max);
        goto cleanup;
    }
    if (memchr(buf, '\0', n)) {
        set_err(err, "%s: a NUL byte at offset %zu (not a text file?)", path, (size_t)((char *)memchr(buf, '\0', n) - buf));
        goto cleanup;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
cleanup:
    free(buf);
    fclose(f);
    return rc;
}
