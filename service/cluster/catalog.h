/*
 * The cluster's catalog of collections, kept as a log (the JetStream
 * stream SV_catalog, never purged) that every pod reads in order: the same
 * records give every pod the same catalog. Part 2 moves it to etcd.
 *
 *   CREATE  u8 name length | name | u32 shards | params (SV_PARAMS_BYTES)
 *   DROP    u8 name length | name | u64 incarnation
 *
 * A collection's incarnation is the LSN of the CREATE that made it: its
 * shards' streams are named after it (c<incarnation>_s<shard>), so a name
 * dropped and created again never meets its old data. Applying is
 * deterministic: a CREATE of a name that exists and a DROP of an
 * incarnation that is not the current one change nothing.
 */
#ifndef SVC_CATALOG_H
#define SVC_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "durable.h"
#include "slimvec.h"

enum { SVC_CATALOG_CREATE = 1, SVC_CATALOG_DROP = 2 };
#define SVC_CATALOG_RECORD_MAX (1 + 255 + 4 + SV_PARAMS_BYTES)

typedef struct svc_catalog_entry {
    char name[65];
    uint64_t incarnation;
    uint32_t shards;
    sv_params params;
} svc_catalog_entry;

typedef struct svc_catalog svc_catalog;

svc_catalog *svc_catalog_create(void);
void svc_catalog_free(svc_catalog *c);

/* The records (into out[SVC_CATALOG_RECORD_MAX]); their length. */
size_t svc_catalog_encode_create(const char *name, uint32_t shards, const sv_params *p, uint8_t *out);
size_t svc_catalog_encode_drop(const char *name, uint64_t incarnation, uint8_t *out);

typedef enum svc_catalog_change { SVC_CATALOG_NONE, SVC_CATALOG_CREATED, SVC_CATALOG_DROPPED } svc_catalog_change;

/* Apply the record at lsn; *changed describes what it created or dropped.
 * SV_ERR_CORRUPT for a record that does not decode (nothing changes). */
sv_status svc_catalog_apply(svc_catalog *c, uint32_t type, uint64_t lsn, const uint8_t *p, size_t len,
                            svc_catalog_change *change, svc_catalog_entry *changed, sv_error *err);
/* The last LSN applied. */
uint64_t svc_catalog_applied(svc_catalog *c);
/* 1 and *out when name is in the catalog. */
int svc_catalog_find(svc_catalog *c, const char *name, svc_catalog_entry *out);
/* Every entry (malloc'd array, caller frees); the count. */
size_t svc_catalog_list(svc_catalog *c, svc_catalog_entry **out);

#endif
