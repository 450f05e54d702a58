/*
 * kmsclient.c: the synchronous gRPC client behind kmsctl (see kmsclient.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <openssl/crypto.h>

#include "kmsclient.h"
#include "kmserr.h"

#define MAX_REPLY (64 * 1024 * 1024)

struct kmsclient {
	grpc_channel *ch;
	grpc_completion_queue *cq;
	int timeout;
};

static char *
read_pem(const char *path, struct kms_status *st)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0;

	if ((f = fopen(path, "r")) == NULL) {
		kms_status_set(st, KMS_ERR_IO, "cannot read %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	if (getdelim(&buf, &len, '\0', f) == -1) {
		kms_status_set(st, KMS_ERR_IO, "cannot read %s", path);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static void
free_secret_str(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

int
kmsclient_open(const struct kmsclient_opts *o, struct kmsclient **out,
    struct kms_status *st)
{
	grpc_channel_credentials *creds;
	grpc_ssl_pem_key_cert_pair pair;
	grpc_channel_args args;
	grpc_arg a[1];
	char *ca = NULL, *cert = NULL, *key = NULL;
	struct kmsclient *c;

	*out = NULL;
	if ((ca = read_pem(o->ca_file, st)) == NULL ||
	    (cert = read_pem(o->cert_file, st)) == NULL ||
	    (key = read_pem(o->key_file, st)) == NULL) {
		free(ca);
		free(cert);
		return st->err;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		free(ca);
		free(cert);
		free_secret_str(key);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	grpc_init();
	pair.private_key = key;
	pair.cert_chain = cert;
	creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
	a[0].type = GRPC_ARG_INTEGER;
	a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	a[0].value.integer = MAX_REPLY;
	args.num_args = 1;
	args.args = a;
	c->ch = grpc_channel_create(o->addr, creds, &args);
	grpc_channel_credentials_release(creds);
	free(ca);
	free(cert);
	free_secret_str(key);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	c->timeout = o->timeout_seconds > 0 ? o->timeout_seconds : 30;
	*out = c;
	return 0;
}

void
kmsclient_close(struct kmsclient *c)
{
	if (c == NULL)
		return;
	grpc_channel_destroy(c->ch);
	grpc_completion_queue_shutdown(c->cq);
	while (grpc_completion_queue_pluck(c->cq, NULL,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	    GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(c->cq);
	free(c);
	grpc_shutdown();
}

static uint8_t *
buffer_bytes(grpc_byte_buffer *bb, size_t *len)
{
	grpc_byte_buffer_reader r;
	grpc_slice s;
	uint8_t *out;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(s);
	if ((out = malloc(*len + 1)) != NULL)
		memcpy(out, GRPC_SLICE_START_PTR(s), *len);
	grpc_slice_unref(s);
	return out;
}

int
kmsclient_call(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, int *code, int *transport,
    struct kms_status *st)
{
	grpc_metadata_array init_md, trail_md;
	grpc_byte_buffer *send = NULL, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice(), path, sl;
	grpc_call *call;
	grpc_event ev;
	grpc_op ops[6];
	gpr_timespec deadline;
	char full[256], *msg;
	uint8_t *buf, *body;
	size_t len;
	int r = -1;

	*resp = NULL;
	*code = 0;
	*transport = 0;
	if (method[0] == '/')
		snprintf(full, sizeof(full), "%s", method);
	else
		snprintf(full, sizeof(full),
		    "/kms.v1.KeyManagementService/%s", method);
	len = protobuf_c_message_get_packed_size(req);
	if ((buf = malloc(len + 1)) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory"), -1;
	len = protobuf_c_message_pack(req, buf);
	sl = grpc_slice_from_copied_buffer((const char *)buf, len);
	free(buf);
	send = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	path = grpc_slice_from_copied_string(full);
	deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
	    gpr_time_from_seconds(c->timeout, GPR_TIMESPAN));
	call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS,
	    c->cq, path, NULL, deadline, NULL);
	grpc_slice_unref(path);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
		kms_status_set(st, KMS_ERR_INTERNAL, "cannot start the call");
		*code = GRPC_STATUS_INTERNAL;
		goto out;
	}
	ev = grpc_completion_queue_pluck(c->cq, call,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (ev.type != GRPC_OP_COMPLETE) {
		kms_status_set(st, KMS_ERR_INTERNAL, "the call did not finish");
		*code = GRPC_STATUS_INTERNAL;
		goto out;
	}
	*code = (int)status;
	if (status != GRPC_STATUS_OK) {
		msg = grpc_slice_to_c_string(details);
		kms_status_set(st, KMS_ERR_UNAVAILABLE, "%s", msg);
		gpr_free(msg);
		/*
		 * A server that answered leaves a ready channel behind; a
		 * refused connection or TLS handshake does not.
		 */
		if ((status == GRPC_STATUS_UNAVAILABLE ||
		    status == GRPC_STATUS_DEADLINE_EXCEEDED) &&
		    grpc_channel_check_connectivity_state(c->ch, 0) !=
		    GRPC_CHANNEL_READY)
			*transport = 1;
		goto out;
	}
	if (recv == NULL || (body = buffer_bytes(recv, &len)) == NULL) {
		kms_status_set(st, KMS_ERR_INTERNAL, "empty reply");
		*code = GRPC_STATUS_INTERNAL;
		goto out;
	}
	*resp = protobuf_c_message_unpack(resp_desc, NULL, len, body);
	/* Replies may hold unwrapped keys. */
	OPENSSL_cleanse(body, len);
	free(body);
	if (*resp == NULL) {
		kms_status_set(st, KMS_ERR_INTERNAL, "malformed reply");
		*code = GRPC_STATUS_INTERNAL;
		goto out;
	}
	r = 0;
 out:
	grpc_byte_buffer_destroy(send);
	if (recv != NULL)
		grpc_byte_buffer_destroy(recv);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	grpc_call_unref(call);
	return r;
}
