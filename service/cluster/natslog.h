/*
 * The log of one (collection, shard) as a NATS JetStream stream: the
 * cluster's write-ahead log (core/durable/log.h's interface). Routers
 * append to it (a publish acknowledged by the stream's Raft quorum is the
 * write's acknowledgement); every replica of the shard reads it in order
 * and applies it (follow.h). NATS keeps the replicas of the stream, elects
 * its leader and commits; nothing here does consensus.
 *
 *   stream   SV_<name>, one subject sv.<name>, file storage, `replicas`
 *            copies, de-duplication window `dup_window_ms`; limits: none
 *            (the purge below is the only thing that removes records)
 *   message  u32 record type (little-endian) + the record's payload (the
 *            local log's payloads: logrec.h); LSN = stream sequence
 *   append   key = the message id (Nats-Msg-Id): an append repeated with the
 *            same key inside the window returns the first one's LSN
 *   release  this replica's snapshot LSN is recorded by the config's mark
 *            hook (the cluster keeps marks in etcd, meta.h); the stream is
 *            purged below the lowest mark of every replica that follows it,
 *            once each has one, keeping `keep_before` records below it: a
 *            replica restarting from its own snapshot always finds the
 *            records after it (and the window of keys before it, follow.h)
 *
 * One svc_nats (connection + JetStream context) serves every log of the
 * process; the library reconnects on its own.
 */
#ifndef SVC_NATSLOG_H
#define SVC_NATSLOG_H

#include <stdint.h>

#include "log.h"
#include "slimvec.h"

typedef struct svc_nats_config {
    const char *urls;         /* comma-separated nats:// or tls:// URLs */
    const char *ca_file;      /* TLS: trust these CAs (NULL: the system's) */
    const char *cert_file;    /* TLS client certificate and key (both or neither) */
    const char *key_file;
    const char *token;        /* NATS auth token (NULL: none) */
    int64_t timeout_ms;       /* connect and request timeout (publish ack wait) */
} svc_nats_config;

typedef struct svc_nats svc_nats;

/* Connect (retrying in the background when no server answers yet: the
 * connection comes up when one does). */
sv_status svc_nats_connect(const svc_nats_config *cfg, svc_nats **out, sv_error *err);
void svc_nats_free(svc_nats *n); /* NULL is a no-op; after every log is closed */
/* 1 while connected to a NATS server (a log's bounds are then fresh). */
int svc_nats_connected(svc_nats *n);

typedef struct svc_natslog_config {
    const char *name;               /* [A-Za-z0-9_-], at most 200 bytes: SV_<name>, sv.<name> */
    int replicas;                   /* copies of the stream (1..5) */
    int64_t dup_window_ms;          /* de-duplication window (0: 2 minutes) */
    /* Record that this replica's snapshot holds the stream through lsn;
     * *lowest: the lowest such mark of every replica following the stream
     * (0: one has none yet). NULL: this log never purges. */
    sv_status (*mark)(void *ctx, const char *name, uint64_t lsn, uint64_t *lowest, sv_error *err);
    void *mark_ctx;
    uint64_t keep_before;           /* records kept below the lowest snapshot (a follower reads them again) */
    int create;                     /* make the stream when it does not exist (else SV_ERR_NOT_FOUND) */
} svc_natslog_config;

/* Open the stream's log (creating the stream when it does not exist and
 * cfg->create says so). */
sv_status svc_natslog_open(svc_nats *n, const svc_natslog_config *cfg, sv_log **out, sv_error *err);

/* Remove the stream (a dropped collection). */
sv_status svc_natslog_delete(svc_nats *n, const char *name, sv_error *err);

#endif
