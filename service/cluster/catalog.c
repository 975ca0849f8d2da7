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
    uint64_t applied;
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

size_t svc_catalog_encode_create(const char *name, uint32_t shards, const sv_params *p, uint8_t *out)
{
    size_t off = put_name(name, out);
    memcpy(out + off, &shards, 4);
    sv_params_encode(p, out + off + 4);
    return off + 4 + SV_PARAMS_BYTES;
}

size_t svc_catalog_encode_drop(const char *name, uint64_t incarnation, uint8_t *out)
{
    size_t off = put_name(name, out);
    memcpy(out + off, &incarnation, 8);
    return off + 8;
}

static long find(const svc_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].name, name) == 0)
            return (long)i;
    return -1;
}

sv_status svc_catalog_apply(svc_catalog *c, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len,
                            svc_catalog_change *change, svc_catalog_entry *changed, sv_error *err)
{
    *change = SVC_CATALOG_NONE;
    char name[65];
    if (len < 1 || p[0] < 1 || p[0] > 64 || len < 1u + p[0])
        return sv_fail(err, SV_ERR_CORRUPT, "catalog LSN %" PRIu64 ": a bad name", lsn);
    memcpy(name, p + 1, p[0]);
    name[p[0]] = '\0';
    size_t off = 1u + p[0];
    svc_catalog_entry e = {0};
    uint64_t inc = 0;
    if (type == SVC_CATALOG_CREATE) {
        if (len != off + 4 + SV_PARAMS_BYTES)
            return sv_fail(err, SV_ERR_CORRUPT, "catalog LSN %" PRIu64 ": a CREATE of %zu bytes", lsn, len);
        memcpy(&e.shards, p + off, 4);
        sv_error perr;
        if (sv_params_decode(p + off + 4, SV_PARAMS_BYTES, &e.params, &perr) != SV_OK || e.shards < 1)
            return sv_fail(err, SV_ERR_CORRUPT, "catalog LSN %" PRIu64 ": %s", lsn, perr.message);
        snprintf(e.name, sizeof e.name, "%s", name);
        e.incarnation = lsn;
    } else if (type == SVC_CATALOG_DROP) {
        if (len != off + 8)
            return sv_fail(err, SV_ERR_CORRUPT, "catalog LSN %" PRIu64 ": a DROP of %zu bytes", lsn, len);
        memcpy(&inc, p + off, 8);
    } else {
        return sv_fail(err, SV_ERR_CORRUPT, "catalog LSN %" PRIu64 ": record type %u", lsn, type);
    }
    pthread_mutex_lock(&c->mu);
    sv_status st = SV_OK;
    if (lsn > c->applied) {
        long at = find(c, name);
        if (type == SVC_CATALOG_CREATE && at < 0) {
            if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 16;
                svc_catalog_entry *t = realloc(c->items, cap * sizeof *t);
                if (!t)
                    st = sv_fail(err, SV_ERR_RESOURCE, "out of memory in the catalog");
                else
                    c->items = t, c->cap = cap;
            }
            if (st == SV_OK) {
                c->items[c->n++] = e;
                *change = SVC_CATALOG_CREATED;
                *changed = e;
            }
        } else if (type == SVC_CATALOG_DROP && at >= 0 && c->items[at].incarnation == inc) {
            *changed = c->items[at];
            c->items[at] = c->items[--c->n];
            *change = SVC_CATALOG_DROPPED;
        }
        if (st == SV_OK)
            c->applied = lsn;
    }
    pthread_mutex_unlock(&c->mu);
    return st == SV_OK ? sv_ok(err) : st;
}

uint64_t svc_catalog_applied(svc_catalog *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t a = c->applied;
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
