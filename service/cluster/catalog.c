/* The cluster's catalog (see catalog.h). */
#include "catalog.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct svc_catalog {
    pthread_mutex_t mu;
    svc_catalog_entry *items;
    size_t n, cap;
    uint64_t revision;
};

svc_catalog *svc_catalog_create(void)
{
    svc_catalog *c = calloc(1, sizeof *c);
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

void svc_catalog_free(svc_catalog *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->items);
    free(c);
}

static size_t put_name(const char *name, uint8_t *out)
{
    size_t len = strlen(name);
    if (len > 64)
        len = 64;
    out[0] = (uint8_t)len;
    memcpy(out + 1, name, len);
    return 1 + len;
}

size_t svc_catalog_encode(const char *name, uint32_t shards, const sv_params *p, uint8_t *out)
{
    size_t off = put_name(name, out);
    memcpy(out + off, &shards, 4);
    sv_params_encode(p, out + off + 4);
    return off + 4 + SV_PARAMS_BYTES;
}

static long find(const svc_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].name, name) == 0)
            return (long)i;
    return -1;
}

sv_status svc_catalog_decode(const uint8_t *p, size_t len, uint64_t incarnation, svc_catalog_entry *out,
                             sv_error *err)
{
    memset(out, 0, sizeof *out);
    if (len < 1 || p[0] < 1 || p[0] > 64 || len < 1u + p[0])
        return sv_fail(err, SV_ERR_CORRUPT, "collection record: a bad name");
    memcpy(out->name, p + 1, p[0]);
    out->name[p[0]] = '\0';
    if (strlen(out->name) != p[0])
        return sv_fail(err, SV_ERR_CORRUPT, "collection record: a NUL in the name");
    size_t off = 1u + p[0];
    if (len != off + 4 + SV_PARAMS_BYTES)
        return sv_fail(err, SV_ERR_CORRUPT, "collection record \"%s\": %zu bytes", out->name, len);
    memcpy(&out->shards, p + off, 4);
    sv_error perr;
    if (sv_params_decode(p + off + 4, SV_PARAMS_BYTES, &out->params, &perr) != SV_OK)
        return sv_fail(err, SV_ERR_CORRUPT, "collection record \"%s\": %s", out->name, perr.message);
    if (out->shards < 1)
        return sv_fail(err, SV_ERR_CORRUPT, "collection record \"%s\": 0 shards", out->name);
    out->incarnation = incarnation;
    return sv_ok(err);
}

sv_status svc_catalog_set(svc_catalog *c, const svc_catalog_entry *items, size_t n, uint64_t revision,
                          sv_error *err)
{
    svc_catalog_entry *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return sv_fail(err, SV_ERR_RESOURCE, "out of memory in the catalog");
    if (n)
        memcpy(copy, items, n * sizeof *copy);
    pthread_mutex_lock(&c->mu);
    if (revision >= c->revision) {
        free(c->items);
        c->items = copy;
        c->n = c->cap = n;
        c->revision = revision;
        copy = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    free(copy);
    return sv_ok(err);
}

uint64_t svc_catalog_revision(svc_catalog *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t a = c->revision;
    pthread_mutex_unlock(&c->mu);
    return a;
}

int svc_catalog_find(svc_catalog *c, const char *name, svc_catalog_entry *out)
{
    pthread_mutex_lock(&c->mu);
    long at = find(c, name);
    if (at >= 0)
        *out = c->items[at];
    pthread_mutex_unlock(&c->mu);
    return at >= 0;
}

size_t svc_catalog_list(svc_catalog *c, svc_catalog_entry **out)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        n = 0;
    else if (n)
        memcpy(*out, c->items, n * sizeof **out);
    pthread_mutex_unlock(&c->mu);
    return n;
}
