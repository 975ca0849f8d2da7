/*
 * A client of etcd's v3 gRPC API (KV, Lease, Watch), on our own gRPC C core
 * and the part of etcd's protos we use (proto/etcd/). The cluster keeps
 * its metadata there (meta.h): etcd elects, replicates and commits; we
 * only read, compare-and-swap and hold leases.
 *
 * Endpoints: "host:port,host:port,..." (the etcd members' client URLs, an
 * optional http:// or https:// in front is dropped). Every call goes to one
 * member and moves to the next when that one fails or times out, so a lost
 * member costs one timeout at most. Serializable reads are answered by the
 * member alone (they keep working with no quorum, possibly stale); writes
 * and linearizable reads need a quorum and fail with SV_ERR_IO without one.
 */
#ifndef SVC_ETCD_H
#define SVC_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "etcd/etcdserverpb/rpc.pb-c.h"
#include "slimvec.h"

#define SVC_ETCD_ENDPOINTS_MAX 9

typedef struct svc_etcd_config {
    const char *endpoints;
    svd_client_options tls;      /* tls = 0: plaintext (loopback, or a mesh that encrypts) */
    double timeout_seconds;      /* per call and member (default 2) */
} svc_etcd_config;

typedef struct svc_etcd svc_etcd;

sv_status svc_etcd_create(const svc_etcd_config *cfg, svc_etcd **out, sv_error *err);
void svc_etcd_free(svc_etcd *e); /* after every watch is stopped */

/* The keys from key (prefix = 1: every key starting with it). Free *out
 * with svc_etcd_range_free. */
sv_status svc_etcd_range(svc_etcd *e, const char *key, int prefix, int serializable,
                         Etcdserverpb__RangeResponse **out, sv_error *err);
void svc_etcd_range_free(Etcdserverpb__RangeResponse *r);

/*
 * Put value at key if the key's mod revision is still mod_revision (0:
 * the key does not exist; < 0: whatever it is): one transaction. *swapped says whether it did;
 * *revision is the store's revision after it (the key's new mod revision
 * when swapped). lease: attach the key to it (0: none). A try that failed
 * ambiguously (timed out, perhaps committed) is retried on another member;
 * when the retry's compare fails and the key holds exactly `value`, that
 * is taken as this call's own write.
 */
sv_status svc_etcd_put_if(svc_etcd *e, const char *key, int64_t mod_revision, const uint8_t *value, size_t len,
                          int64_t lease, int *swapped, int64_t *revision, sv_error *err);
/* Delete key if its create revision is create_revision; *deleted says whether. */
sv_status svc_etcd_delete_if(svc_etcd *e, const char *key, int64_t create_revision, int *deleted, sv_error *err);

/* Delete every key starting with prefix. */
sv_status svc_etcd_delete_prefix(svc_etcd *e, const char *prefix, sv_error *err);

/* Leases: grant (ttl seconds), keep alive (*ttl = what remains; 0 when
 * the lease is gone: expired or revoked), revoke. */
sv_status svc_etcd_lease_grant(svc_etcd *e, int64_t ttl, int64_t *id, sv_error *err);
sv_status svc_etcd_lease_keepalive(svc_etcd *e, int64_t id, int64_t *ttl, sv_error *err);
sv_status svc_etcd_lease_revoke(svc_etcd *e, int64_t id, sv_error *err);

/*
 * A watch of every key under prefix, on a thread of its own: changed(ctx)
 * runs (on that thread) after every batch of events, and each time the
 * watch is (re)established, since events may have been missed meanwhile.
 * The watch follows the members like every call does.
 */
typedef struct svc_etcd_watch svc_etcd_watch;
svc_etcd_watch *svc_etcd_watch_start(svc_etcd *e, const char *prefix, void (*changed)(void *ctx), void *ctx);
void svc_etcd_watch_stop(svc_etcd_watch *w); /* NULL is a no-op */

#endif
