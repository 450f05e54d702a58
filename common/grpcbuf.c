/*
 * grpcbuf.c: see grpcbuf.h.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>

#include "grpcbuf.h"

ProtobufCMessage *
grpcbuf_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc)
{
	grpc_byte_buffer_reader rd;
	ProtobufCMessage *m;
	grpc_slice s;

	if (!grpc_byte_buffer_reader_init(&rd, bb))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s),
	    GRPC_SLICE_START_PTR(s));
	OPENSSL_cleanse(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
	grpc_slice_unref(s);
	return m;
}

void
grpcbuf_cq_destroy(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_pluck(cq, NULL,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	    GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}
