/*
 * A snapshot from a peer replica (SlimVecShard/FetchSnapshot): the client
 * side. A replica that joins a shard, or whose copy the stream no longer
 * covers (purged past its snapshots), loads the newest snapshot of a ready
 * replica, then applies the stream after it. One stream per snapshot, one
 * request per chunk; each chunk's CRC-32C is checked, and the file's own
 * checksums again when it is opened.
 */
#ifndef SVC_TRANSFER_H
#define SVC_TRANSFER_H

#include <grpc/grpc.h>
#include <stdatomic.h>
#include <stdint.h>

#include "slimvec.h"

typedef struct svc_fetched {
    uint64_t lsn;            /* the snapshot holds the stream through this LSN */
    uint64_t incarnation;
    uint64_t bytes;          /* the snapshot's and the originals' */
    uint64_t originals_bytes;/* of them the originals file's (0: none came) */
    double seconds;
} svc_fetched;

/*
 * Fetch collection's snapshot over ch into the new file path, and the
 * originals file that follows it when the collection keeps one into the
 * new file originals_path (both fsynced), calls carrying md (the shard it
 * means, this pod's credentials). Stops early (SV_ERR_INTERRUPTED) when
 * *stop is set; SV_ERR_NOT_FOUND when the peer has no copy of the
 * collection. The files are removed on any failure.
 */
sv_status svc_transfer_fetch(grpc_channel *ch, const grpc_metadata *md, size_t n_md, const char *collection,
                             const char *path, const char *originals_path, const atomic_int *stop,
                             svc_fetched *out, sv_error *err);

#endif
