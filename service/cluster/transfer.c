/* A snapshot from a peer replica (see transfer.h). */
#include "transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "call.h"
#include "crc32c.h"
#include "error.h"
#include "fileio.h"
#include "slimvec/v1/slimvec.pb-c.h"

#define CHUNK (1u << 20)
#define STEP_SECONDS 60     /* one chunk may take this long */
#define FIRST_SECONDS 900   /* the first: the peer writes a snapshot for it, behind its other maintenance */
#define CALL_SECONDS 3600   /* the whole transfer */

/* One batch, waited for (plucked): 1 when it completed successfully. */
static int run(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n, double seconds)
{
    void *tag = (void *)ops;
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return 0;
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis((int64_t)(seconds * 1000), GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        /* Cancel, then the batch completes (failed) and is taken off. */
        grpc_call_cancel(call, NULL);
        ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        return 0;
    }
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

sv_status svc_transfer_fetch(grpc_channel *ch, const grpc_metadata *md, size_t n_md, const char *collection,
                             const char *path, const char *originals_path, const atomic_int *stop,
                             svc_fetched *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    double t0 = sv_now_seconds();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sv_fail(err, SV_ERR_IO, "%s: %s", path, strerror(errno));
    int ofd = -1; /* opened when the first originals byte comes */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_seconds(CALL_SECONDS, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string("/slimvec.v1.SlimVecShard/FetchSnapshot"),
                                               NULL, deadline, NULL);
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    sv_status st = SV_OK;
    int status_known = 0;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = n_md ? (grpc_metadata *)md : NULL;
    if (!run(call, cq, ops, 1, STEP_SECONDS)) {
        st = sv_fail(err, SV_ERR_IO, "fetching \"%s\": the call did not start", collection);
        goto finish;
    }
    uint64_t offset = 0, total = 0, orig_total = 0;
    int first = 1;
    for (;;) {
        if (stop && atomic_load(stop)) {
            st = sv_fail(err, SV_ERR_INTERRUPTED, "fetching \"%s\": stopping", collection);
            break;
        }
        Slimvec__V1__SnapshotChunkRequest q = SLIMVEC__V1__SNAPSHOT_CHUNK_REQUEST__INIT;
        q.collection = (char *)collection;
        q.offset = offset;
        q.max_bytes = CHUNK;
        grpc_byte_buffer *send = svd_pack(&q.base);
        grpc_byte_buffer *recv = NULL;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_MESSAGE;
        ops[0].data.send_message.send_message = send;
        int ok = send && run(call, cq, ops, 1, STEP_SECONDS);
        if (send)
            grpc_byte_buffer_destroy(send);
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &recv;
        if (first) {
            ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[1].data.recv_initial_metadata.recv_initial_metadata = &md_init;
        }
        ok = ok && run(call, cq, ops, first ? 2 : 1, first ? FIRST_SECONDS : STEP_SECONDS) && recv;
        first = 0;
        Slimvec__V1__SnapshotChunk *c =
            ok ? (Slimvec__V1__SnapshotChunk *)svd_unpack(&slimvec__v1__snapshot_chunk__descriptor, recv) : NULL;
        if (recv)
            grpc_byte_buffer_destroy(recv);
        if (!ok) {
            st = sv_fail(err, SV_ERR_IO, "fetching \"%s\": the stream ended at byte %" PRIu64, collection, offset);
            break; /* the status below says why */
        }
        if (!c) {
            st = sv_fail(err, SV_ERR_CORRUPT, "fetching \"%s\": a malformed chunk", collection);
            break;
        }
        if (offset == 0) {
            out->lsn = c->lsn;
            out->incarnation = c->incarnation;
            total = c->total;
            orig_total = c->originals_total;
            /* A peer's word on the sizes: the disk must hold them (and some). */
            struct statvfs vfs;
            if (orig_total > UINT64_MAX - total ||
                (fstatvfs(fd, &vfs) == 0 && total + orig_total > (uint64_t)vfs.f_bavail * vfs.f_frsize / 10 * 9)) {
                st = sv_fail(err, SV_ERR_RESOURCE, "fetching \"%s\": a snapshot of %" PRIu64 " bytes and originals of %"
                             PRIu64 " bytes do not fit the free space", collection, total, orig_total);
                protobuf_c_message_free_unpacked(&c->base, NULL);
                break;
            }
            if (orig_total && !originals_path) {
                st = sv_fail(err, SV_ERR_CORRUPT, "fetching \"%s\": the peer sends originals this copy does not keep",
                             collection);
                protobuf_c_message_free_unpacked(&c->base, NULL);
                break;
            }
        }
        /* A chunk lies in one file: the snapshot's bytes, then the originals'. */
        int in_orig = offset >= total && orig_total;
        uint64_t end = in_orig ? total + orig_total : total;
        if (c->offset != offset || c->total != total || c->originals_total != orig_total || c->lsn != out->lsn ||
            c->incarnation != out->incarnation || c->data.len > end - offset || (c->data.len == 0 && offset < end)) {
            st = sv_fail(err, SV_ERR_CORRUPT, "fetching \"%s\": a chunk at %" PRIu64 " does not follow", collection,
                         offset);
        } else if (sv_crc32c(0, c->data.data, c->data.len) != c->crc32c) {
            st = sv_fail(err, SV_ERR_CORRUPT, "fetching \"%s\": the chunk at byte %" PRIu64 " fails its CRC-32C",
                         collection, offset);
        } else if (in_orig && ofd < 0 &&
                   (ofd = open(originals_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
            st = sv_fail(err, SV_ERR_IO, "%s: %s", originals_path, strerror(errno));
        } else if (sv_write_all(in_orig ? ofd : fd, c->data.data, c->data.len) != 0) {
            st = sv_fail(err, SV_ERR_IO, "%s: %s", in_orig ? originals_path : path, strerror(errno));
        } else {
            offset += c->data.len;
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
        if (st != SV_OK || offset == total + orig_total)
            break;
    }
    if (st == SV_OK && fdatasync(fd) != 0)
        st = sv_fail(err, SV_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    if (st == SV_OK && ofd >= 0 && fdatasync(ofd) != 0)
        st = sv_fail(err, SV_ERR_IO, "%s: fsync: %s", originals_path, strerror(errno));
    out->bytes = offset;
    out->originals_bytes = offset > total ? offset - total : 0;
finish:
    /* End our side and hear the status (the server's error when it failed). */
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (st != SV_OK && st != SV_ERR_IO)
        grpc_call_cancel(call, NULL);
    run(call, cq, ops, 1, 5);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    status_known = run(call, cq, ops, 1, 10);
    if (st == SV_ERR_IO && status_known && status != GRPC_STATUS_OK) {
        /* The peer has no such collection (yet): not a failure of the link. */
        char *d = grpc_slice_to_c_string(details);
        st = sv_fail(err, status == GRPC_STATUS_NOT_FOUND ? SV_ERR_NOT_FOUND : SV_ERR_IO,
                     "fetching \"%s\": %s (status %d)", collection, d, (int)status);
        gpr_free(d);
    }
    grpc_call_unref(call);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    close(fd);
    if (ofd >= 0)
        close(ofd);
    if (st != SV_OK) {
        unlink(path);
        if (originals_path)
            unlink(originals_path);
    }
    out->seconds = sv_now_seconds() - t0;
    return st;
}
