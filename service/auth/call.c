/* Client calls (see call.h). */
#include "call.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

grpc_byte_buffer *svd_pack(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice); /* the buffer holds its own reference */
    return bb;
}

ProtobufCMessage *svd_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader rd;
    if (!bb || !grpc_byte_buffer_reader_init(&rd, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return m;
}

grpc_status_code svd_call_unary(grpc_channel *ch, const char *path, const grpc_metadata *md, size_t n_md,
                                const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                                double timeout_seconds, ProtobufCMessage **resp, svd_call_status *st)
{
    *resp = NULL;
    st->code = GRPC_STATUS_UNKNOWN;
    st->message[0] = 0;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_byte_buffer *send_bb = svd_pack(req);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_slice details = grpc_empty_slice();
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis((int64_t)(timeout_seconds * 1000), GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(path), NULL, deadline, NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = n_md ? (grpc_metadata *)md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[5].data.recv_status_on_client.status = &st->code;
    ops[5].data.recv_status_on_client.status_details = &details;
    void *tag = (void *)ops; /* any unique address */
    if (!send_bb || grpc_call_start_batch(call, ops, 6, tag, NULL) != GRPC_CALL_OK) {
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof st->message, "cannot start the call");
        goto cleanup;
    }
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof st->message, "the completion queue failed");
        goto cleanup;
    }
    if (st->code != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(details);
        snprintf(st->message, sizeof st->message, "%s", d);
        gpr_free(d);
        goto cleanup;
    }
    if (!(*resp = recv_bb ? svd_unpack(resp_desc, recv_bb) : NULL)) {
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof st->message, "a malformed or missing answer");
    }
cleanup:
    grpc_call_unref(call);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    /* The one batch completed (plucked above): nothing left to drain. */
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return st->code;
}
