/*
 * The cluster's catalog of collections: what etcd holds under
 * /slimvec/<cluster>/collections/ (meta.h), as every pod last read it.
 *
 *   value  u8 name length | name | u32 shards | params (SV_PARAMS_BYTES)
 *
 * A collection's incarnation is the etcd create revision of its key: its
 * shards' streams are named after it (c<incarnation>_s<shard>), so a name
 * dropped and created again never meets its old data. Values come from
 * another process (untrusted): decoding checks everything.
 */
#ifndef SVC_CATALOG_H
#define SVC_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "durable.h"
#include "slimvec.h"

#define SVC_CATALOG_VALUE_MAX (1 + 64 + 4 + SV_PARAMS_BYTES)

typedef struct svc_catalog_entry {
    char name[65];
    uint64_t incarnation;
    uint32_t shards;
    sv_params params;
} svc_catalog_entry;

typedef struct svc_catalog svc_catalog;

svc_catalog *svc_catalog_create(void);
void svc_catalog_free(svc_catalog *c);

/* The value stored for a collection (into out[SVC_CATALOG_VALUE_MAX]); its length. */
size_t svc_catalog_encode(const char *name, uint32_t shards, const sv_params *p, uint8_t *out);
/* A stored value: SV_ERR_CORRUPT when it does not decode. */
sv_status svc_catalog_decode(const uint8_t *p, size_t len, uint64_t incarnation, svc_catalog_entry *out,
                             sv_error *err);

/* Every collection as read at etcd revision `revision`; a read older than
 * the one the catalog holds changes nothing. */
sv_status svc_catalog_set(svc_catalog *c, const svc_catalog_entry *items, size_t n, uint64_t revision,
                          sv_error *err);
/* The revision the catalog was read at. */
uint64_t svc_catalog_revision(svc_catalog *c);
/* 1 and *out when name is in the catalog. */
int svc_catalog_find(svc_catalog *c, const char *name, svc_catalog_entry *out);
/* Every entry (malloc'd array, caller frees); the count. */
size_t svc_catalog_list(svc_catalog *c, svc_catalog_entry **out);

#endif
