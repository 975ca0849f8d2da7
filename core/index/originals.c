/* Originals on disk (see originals.h). */
#include "originals.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "error.h"

static const uint8_t MAGIC[8] = {'S', 'V', 'O', 'R', 'I', 'G', 0, 1};
#define VERSION 1u
#define FORMAT_F32 1u
/* Slots per map: a chunk is 4096 records, so its length is a multiple of
 * 4 KiB whatever the dimension. */
#define CHUNK_SLOTS 4096u

typedef struct chunk {
    uint8_t *base;   /* what mmap returned */
    size_t len;      /* mapped length */
    size_t delta;    /* first record at base + delta (offsets are page-aligned down) */
} chunk;

struct sv_originals {
    const sv_allocator *a;
    sv_tally *t;
    int fd;
    uint32_t dim;
    size_t rec;             /* bytes per record */
    size_t chunk_bytes;     /* CHUNK_SLOTS * rec */
    chunk *chunks;
    uint32_t n_chunks, cap_chunks;
    uint64_t file_len;      /* what the file's length is (we set it) */
    uint64_t allocated_end; /* disk space is allocated below this offset */
    size_t page;
};

static void header_make(uint32_t dim, uint8_t *h)
{
    memset(h, 0, SV_ORIG_HEADER);
    memcpy(h, MAGIC, 8);
    uint32_t v[3] = {VERSION, FORMAT_F32, dim};
    memcpy(h + 8, v, sizeof v);
    uint32_t crc = sv_crc32c(0, h, SV_ORIG_HEADER - 4);
    memcpy(h + SV_ORIG_HEADER - 4, &crc, 4);
}

sv_status sv_orig_check_header(const uint8_t *buf, size_t len, uint32_t dim, sv_error *err)
{
    if (len < SV_ORIG_HEADER || memcmp(buf, MAGIC, 8) != 0)
        return sv_fail(err, SV_ERR_CORRUPT, "originals: not an originals file (%zu bytes)", len);
    uint32_t crc;
    memcpy(&crc, buf + SV_ORIG_HEADER - 4, 4);
    if (crc != sv_crc32c(0, buf, SV_ORIG_HEADER - 4))
        return sv_fail(err, SV_ERR_CORRUPT, "originals: header checksum mismatch");
    uint32_t v[3];
    memcpy(v, buf + 8, sizeof v);
    if (v[0] != VERSION)
        return sv_fail(err, SV_ERR_CORRUPT, "originals: unsupported version %u", v[0]);
    if (v[1] != FORMAT_F32)
        return sv_fail(err, SV_ERR_CORRUPT, "originals: unknown record format %u", v[1]);
    if (v[2] != dim)
        return sv_fail(err, SV_ERR_CORRUPT, "originals: dimension %u, the collection's is %u", v[2], dim);
    for (size_t i = 20; i < SV_ORIG_HEADER - 4; i++)
        if (buf[i])
            return sv_fail(err, SV_ERR_CORRUPT, "originals: reserved header byte %zu is not zero", i);
    return sv_ok(err);
}

static int open_temp(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/slimvec-orig-XXXXXX", dir) >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static int pread_all(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = pwrite(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

sv_status sv_orig_open(const sv_allocator *a, sv_tally *t, const char *path, uint32_t dim,
                       sv_originals **out, sv_error *err)
{
    *out = NULL;
    sv_status st = SV_OK;
    uint8_t *h = NULL;
    sv_originals *o = sv_mem_alloc(a, t, sizeof *o);
    if (!o)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory opening the originals file");
    memset(o, 0, sizeof *o);
    o->a = a;
    o->t = t;
    o->dim = dim;
    o->rec = (size_t)dim * sizeof(float);
    o->chunk_bytes = CHUNK_SLOTS * o->rec;
    o->page = (size_t)sysconf(_SC_PAGESIZE);
    o->fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : open_temp();
    if (o->fd < 0) {
        st = sv_fail(err, SV_ERR_IO, "originals %s: %s", path ? path : "(temporary file)", strerror(errno));
        goto cleanup;
    }
    struct stat sb;
    if (fstat(o->fd, &sb) != 0) {
        st = sv_fail(err, SV_ERR_IO, "originals: fstat: %s", strerror(errno));
        goto cleanup;
    }
    if (!(h = malloc(SV_ORIG_HEADER))) {
        st = sv_fail(err, SV_ERR_RESOURCE, "out of memory opening the originals file");
        goto cleanup;
    }
    if (sb.st_size == 0) {
        header_make(dim, h);
        if (pwrite_all(o->fd, h, SV_ORIG_HEADER, 0) != 0) {
            st = sv_fail(err, SV_ERR_IO, "originals: writing the header: %s", strerror(errno));
            goto cleanup;
        }
        o->file_len = SV_ORIG_HEADER;
    } else {
        if ((uint64_t)sb.st_size < SV_ORIG_HEADER) {
            st = sv_fail(err, SV_ERR_CORRUPT, "originals: %lld bytes, shorter than its header",
                         (long long)sb.st_size);
            goto cleanup;
        }
        if (pread_all(o->fd, h, SV_ORIG_HEADER, 0) != 0) {
            st = sv_fail(err, SV_ERR_IO, "originals: reading the header: %s", strerror(errno));
            goto cleanup;
        }
        if ((st = sv_orig_check_header(h, SV_ORIG_HEADER, dim, err)) != SV_OK)
            goto cleanup;
        o->file_len = (uint64_t)sb.st_size;
    }
    o->allocated_end = SV_ORIG_HEADER;
    *out = o;
    o = NULL;
    st = sv_ok(err);
cleanup:
    free(h);
    sv_orig_close(o);
    return st;
}

static void unmap_from(sv_originals *o, uint32_t keep)
{
    while (o->n_chunks > keep) {
        chunk *c = &o->chunks[--o->n_chunks];
        munmap(c->base, c->len);
    }
}

void sv_orig_close(sv_originals *o)
{
    if (!o)
        return;
    unmap_from(o, 0);
    sv_mem_free(o->a, o->t, o->chunks, o->cap_chunks * sizeof *o->chunks);
    if (o->fd >= 0)
        close(o->fd);
    sv_mem_free(o->a, o->t, o, sizeof *o);
}

static uint64_t chunk_offset(const sv_originals *o, uint32_t i)
{
    return SV_ORIG_HEADER + (uint64_t)i * o->chunk_bytes;
}

sv_status sv_orig_reserve(sv_originals *o, uint32_t n_slots, sv_error *err)
{
    uint32_t need = (uint32_t)(((uint64_t)n_slots + CHUNK_SLOTS - 1) / CHUNK_SLOTS);
    if (need > o->cap_chunks) {
        uint32_t cap = o->cap_chunks ? o->cap_chunks : 4;
        while (cap < need)
            cap *= 2;
        chunk *t = sv_mem_realloc(o->a, o->t, o->chunks, o->cap_chunks * sizeof *t, cap * sizeof *t);
        if (!t)
            return sv_fail(err, SV_ERR_RESOURCE, "out of memory mapping originals");
        o->chunks = t;
        o->cap_chunks = cap;
    }
    /* Every mapped chunk lies inside the file: reading a page past its end
     * would raise SIGBUS. (The length is sparse: no disk space yet.) */
    uint64_t end = need > o->n_chunks ? chunk_offset(o, need) : chunk_offset(o, o->n_chunks);
    if (end > o->file_len) {
        if (ftruncate(o->fd, (off_t)end) != 0)
            return sv_fail(err, SV_ERR_IO, "originals: extending to %llu bytes: %s",
                           (unsigned long long)end, strerror(errno));
        o->file_len = end;
    }
    uint64_t want = SV_ORIG_HEADER + (uint64_t)n_slots * o->rec;
    if (want > o->allocated_end) {
        int e = posix_fallocate(o->fd, (off_t)o->allocated_end, (off_t)(want - o->allocated_end));
        if (e != 0)
            return sv_fail(err, e == ENOSPC ? SV_ERR_RESOURCE : SV_ERR_IO,
                           "originals: allocating %llu bytes on disk: %s",
                           (unsigned long long)(want - o->allocated_end), strerror(e));
        o->allocated_end = want;
    }
    while (o->n_chunks < need) {
        uint64_t off = chunk_offset(o, o->n_chunks);
        uint64_t aligned = off & ~(uint64_t)(o->page - 1);
        size_t len = (size_t)(off - aligned) + o->chunk_bytes;
        void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, o->fd, (off_t)aligned);
        if (p == MAP_FAILED)
            return sv_fail(err, SV_ERR_RESOURCE, "originals: mapping %zu bytes: %s", len, strerror(errno));
        o->chunks[o->n_chunks++] = (chunk){p, len, (size_t)(off - aligned)};
    }
    return sv_ok(err);
}

sv_status sv_orig_put(sv_originals *o, uint32_t slot, const float *x)
{
    off_t off = (off_t)(SV_ORIG_HEADER + (uint64_t)slot * o->rec);
    return pwrite_all(o->fd, x, o->rec, off) == 0 ? SV_OK : SV_ERR_IO;
}

const float *sv_orig_get(const sv_originals *o, uint32_t slot)
{
    uint32_t i = slot / CHUNK_SLOTS;
    if (i >= o->n_chunks)
        return NULL;
    const chunk *c = &o->chunks[i];
    return (const float *)(c->base + c->delta + (size_t)(slot % CHUNK_SLOTS) * o->rec);
}

sv_status sv_orig_move(sv_originals *o, uint32_t from, uint32_t to)
{
    const float *src = sv_orig_get(o, from);
    if (!src || !sv_orig_get(o, to))
        return SV_ERR_INTERNAL;
    return sv_orig_put(o, to, src);
}

sv_status sv_orig_truncate(sv_originals *o, uint32_t n_slots, sv_error *err)
{
    uint32_t keep = (uint32_t)(((uint64_t)n_slots + CHUNK_SLOTS - 1) / CHUNK_SLOTS);
    unmap_from(o, keep);
    /* The kept chunks' maps may reach past the new end: nothing reads
     * there (slots >= n_slots), and reserve restores the length first. */
    uint64_t end = SV_ORIG_HEADER + (uint64_t)n_slots * o->rec;
    if (end >= o->file_len)
        return sv_ok(err);
    if (ftruncate(o->fd, (off_t)end) != 0)
        return sv_fail(err, SV_ERR_IO, "originals: truncating to %llu bytes: %s",
                       (unsigned long long)end, strerror(errno));
    o->file_len = end;
    if (o->allocated_end > end)
        o->allocated_end = end;
    return sv_ok(err);
}

sv_status sv_orig_sync(sv_originals *o, sv_error *err)
{
    if (fdatasync(o->fd) != 0)
        return sv_fail(err, SV_ERR_IO, "originals: fsync: %s", strerror(errno));
    return sv_ok(err);
}

void sv_orig_get_usage(const sv_originals *o, uint32_t n_slots, sv_orig_usage *u)
{
    memset(u, 0, sizeof *u);
    struct stat sb;
    if (fstat(o->fd, &sb) == 0) {
        u->file_bytes = (uint64_t)sb.st_size;
        u->disk_bytes = (uint64_t)sb.st_blocks * 512u;
    }
    unsigned char vec[1024];
    for (uint32_t i = 0; i < o->n_chunks && (uint64_t)i * CHUNK_SLOTS < n_slots; i++) {
        const chunk *c = &o->chunks[i];
        uint64_t slots = n_slots - (uint64_t)i * CHUNK_SLOTS;
        size_t want = c->delta + (size_t)(slots < CHUNK_SLOTS ? slots : CHUNK_SLOTS) * o->rec;
        if (want > c->len)
            want = c->len;
        for (size_t off = 0; off < want; off += sizeof vec * o->page) {
            size_t len = want - off < sizeof vec * o->page ? want - off : sizeof vec * o->page;
            size_t pages = (len + o->page - 1) / o->page;
            if (mincore(c->base + off, len, vec) != 0)
                break;
            for (size_t p = 0; p < pages; p++)
                u->resident_bytes += (vec[p] & 1) ? o->page : 0;
        }
    }
}
