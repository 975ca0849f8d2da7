/* Helpers shared by the benchmark programs (see benchutil.h). */
#include "benchutil.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int bu_parse_u64(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max,
                 uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "%s: %s: '%s' is not a whole number in %llu..%llu\n", prog, opt, s,
            (unsigned long long)min, (unsigned long long)max);
    return -1;
}

int bu_parse_u32(const char *prog, const char *opt, const char *s, uint32_t min, uint32_t max,
                 uint32_t *out)
{
    uint64_t v = 0;
    if (bu_parse_u64(prog, opt, s, min, max, &v) != 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int bu_parse_u32_list(const char *prog, const char *opt, const char *s, uint32_t min, uint32_t keep_min,
                      uint32_t max, uint32_t *out, size_t cap, size_t *n)
{
    char buf[1024];
    *n = 0;
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "%s: %s: too long\n", prog, opt);
        return -1;
    }
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t v = 0;
        if (bu_parse_u32(prog, opt, tok, min, max, &v) != 0)
            return -1;
        if (v < keep_min) {
            fprintf(stderr, "%s: note: %s value %u < %u dropped\n", prog, opt, v, keep_min);
            continue;
        }
        if (*n == cap) {
            fprintf(stderr, "%s: %s: at most %zu values\n", prog, opt, cap);
            return -1;
        }
        out[(*n)++] = v;
    }
    if (*n == 0) {
        fprintf(stderr, "%s: %s: no value >= %u\n", prog, opt, keep_min);
        return -1;
    }
    return 0;
}

double bu_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bu_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bu_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

void bu_json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

void bu_json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

uint64_t bu_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: never 0, so log() is finite. */
static double uniform01(bu_rng *r)
{
    return ((double)(bu_splitmix64(&r->s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static double normal(bu_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = uniform01(r), u2 = uniform01(r);
    double m = sqrt(-2.0 * log(u1));
    r->spare = m * sin(2.0 * M_PI * u2);
    r->has_spare = 1;
    return m * cos(2.0 * M_PI * u2);
}

void bu_fill_normal(bu_rng *r, float *out, size_t count)
{
    for (size_t i = 0; i < count; i++)
        out[i] = (float)normal(r);
}
