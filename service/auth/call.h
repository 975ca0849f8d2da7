/*
 * Client calls made by our own programs (the CLI, a pod calling etcd or
 * another pod): protobuf-c messages in and out of gRPC byte buffers, and
 * one blocking unary call on its own completion queue.
 */
#ifndef SVD_CALL_H
#define SVD_CALL_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* The message as a byte buffer (NULL when out of memory). */
grpc_byte_buffer *svd_pack(const ProtobufCMessage *m);
/* The byte buffer as a message of type d (NULL when it does not decode);
 * free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *svd_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);

typedef struct svd_call_status {
    grpc_status_code code;   /* GRPC_STATUS_OK or the error */
    char message[256];       /* the error's details */
} svd_call_status;

/*
 * Call path on ch with req and the metadata given, waiting at most
 * timeout_seconds. On OK, *resp is the unpacked answer of type resp_desc
 * (a malformed answer is INTERNAL). Returns the status code.
 */
grpc_status_code svd_call_unary(grpc_channel *ch, const char *path, const grpc_metadata *md, size_t n_md,
                                const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                                double timeout_seconds, ProtobufCMessage **resp, svd_call_status *st);

#endif
