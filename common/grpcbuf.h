/*
 * grpcbuf.h: what the files that speak gRPC as clients share
 * (common/kmsclient.c, kms/etcd.c): a received message as a protobuf-c
 * message, and the end of a pluck completion queue.
 */
#ifndef KMS_GRPCBUF_H
#define KMS_GRPCBUF_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

/*
 * Unpacks bb as a desc message (free with protobuf_c_message_free_unpacked)
 * or NULL; the wire bytes are wiped (replies may hold unwrapped keys).
 */
ProtobufCMessage *grpcbuf_unpack(grpc_byte_buffer *bb,
    const ProtobufCMessageDescriptor *desc);

/* Shuts down a pluck completion queue, drains it and destroys it. */
void grpcbuf_cq_destroy(grpc_completion_queue *cq);

#endif /* KMS_GRPCBUF_H */
