/* Helpers shared by the fuzz programs (see fuzzutil.h). */
#include "fuzzutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t rng = 0x9e3779b97f4a7c15u;

uint64_t fu_next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

uint32_t fu_below(uint32_t n)
{
    return n ? (uint32_t)(fu_next() % n) : 0;
}

uint32_t fu_rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint64_t fu_rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void fu_wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

void fu_insert_random(uint8_t *b, size_t *len, size_t cap, size_t pos, uint32_t max_n)
{
    size_t n = 1 + fu_below(max_n);
    if (pos > *len || *len + n > cap)
        return;
    memmove(b + pos + n, b + pos, *len - pos);
    for (size_t i = 0; i < n; i++)
        b[pos + i] = (uint8_t)fu_next();
    *len += n;
}

void fu_delete_chunk(uint8_t *b, size_t *len, size_t pos, uint32_t max_n)
{
    size_t n = 1 + fu_below(max_n);
    if (pos + n > *len)
        return;
    memmove(b + pos, b + pos + n, *len - pos - n);
    *len -= n;
}

void fu_args(const char *prog, int argc, char **argv, long *rounds, const char **corpus)
{
    *corpus = NULL;
    *rounds = 20000;
    if (argc > 2 && strcmp(argv[1], "--write-corpus") == 0) {
        *corpus = argv[2];
        *rounds = argc > 3 ? atol(argv[3]) : 400;
        if (mkdir(*corpus, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "%s: %s: %s\n", prog, *corpus, strerror(errno));
            exit(1);
        }
    } else if (argc > 1) {
        *rounds = atol(argv[1]);
    }
}

void fu_write_input(const char *prog, const char *dir, size_t k, const uint8_t *in, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%04zu", dir, k);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(in, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        exit(1);
    }
}
