/*
 * kmsclient.c: the synchronous gRPC client behind kmsctl and the PKCS#11
 * module (see kmsclient.h).
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
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include <openssl/crypto.h>

#include "grpcbuf.h"
#include "kmsclient.h"
#include "kmserr.h"

/* A certificate chain or key file larger than this is not a PEM file. */
#define PEM_MAX		(1024 * 1024)
#define METHOD_MAX	256

struct kmsclient {
	grpc_channel *ch;
	grpc_completion_queue *cq;	/* NULL when concurrent */
	int timeout;
};

/*
 * What the client makes of a gRPC status code: the inverse direction of
 * kms_err_grpc_code().  Codes the service never sends map to the nearest
 * error.
 */
static const int grpc_to_err[] = {
	[GRPC_STATUS_OK] = KMS_OK,
	[GRPC_STATUS_CANCELLED] = KMS_ERR_INTERNAL,
	[GRPC_STATUS_UNKNOWN] = KMS_ERR_INTERNAL,
	[GRPC_STATUS_INVALID_ARGUMENT] = KMS_ERR_INVALID_ARGUMENT,
	[GRPC_STATUS_DEADLINE_EXCEEDED] = KMS_ERR_UNAVAILABLE,
	[GRPC_STATUS_NOT_FOUND] = KMS_ERR_NOT_FOUND,
	[GRPC_STATUS_ALREADY_EXISTS] = KMS_ERR_ALREADY_EXISTS,
	[GRPC_STATUS_PERMISSION_DENIED] = KMS_ERR_PERMISSION_DENIED,
	[GRPC_STATUS_RESOURCE_EXHAUSTED] = KMS_ERR_RESOURCE_EXHAUSTED,
	[GRPC_STATUS_FAILED_PRECONDITION] = KMS_ERR_FAILED_PRECONDITION,
	[GRPC_STATUS_ABORTED] = KMS_ERR_UNAVAILABLE,
	[GRPC_STATUS_OUT_OF_RANGE] = KMS_ERR_INVALID_ARGUMENT,
	[GRPC_STATUS_UNIMPLEMENTED] = KMS_ERR_UNIMPLEMENTED,
	[GRPC_STATUS_INTERNAL] = KMS_ERR_INTERNAL,
	[GRPC_STATUS_UNAVAILABLE] = KMS_ERR_UNAVAILABLE,
	[GRPC_STATUS_DATA_LOSS] = KMS_ERR_INTERNAL,
	[GRPC_STATUS_UNAUTHENTICATED] = KMS_ERR_UNAUTHENTICATED,
};

static int
err_of_grpc(grpc_status_code code)
{
	if ((int)code <= 0 ||
	    (size_t)code >= sizeof(grpc_to_err) / sizeof(grpc_to_err[0]))
		return KMS_ERR_INTERNAL;
	return grpc_to_err[code];
}

/* Reads a whole PEM file into a NUL-terminated string; *len is its size. */
static int
read_pem(const char *path, char **out, size_t *len, struct kms_status *st)
{
	FILE *f;
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	int r = KMS_ERR_IO;

	*out = NULL;
	*len = 0;
	if ((f = fopen(path, "r")) == NULL)
		return kms_status_set(st, KMS_ERR_IO, "cannot read %s: %s",
		    path, strerror(errno));
	/* The files are text: no NUL inside, so one getdelim reads it all. */
	errno = 0;
	if ((n = getdelim(&buf, &cap, '\0', f)) <= 0) {
		kms_status_set(st, KMS_ERR_IO, "cannot read %s: %s", path,
		    errno != 0 ? strerror(errno) : "empty file");
		goto out;
	}
	if ((size_t)n > PEM_MAX || strlen(buf) != (size_t)n) {
		kms_status_set(st, KMS_ERR_IO, "%s is not a PEM file", path);
		goto out;
	}
	*out = buf;
	*len = (size_t)n;
	buf = NULL;
	r = 0;
 out:
	if (buf != NULL) {
		/* It may have been the private key. */
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	fclose(f);
	return r;
}

static void
log_nothing(gpr_log_func_args *args)
{
	(void)args;
}

int
kmsclient_open(const struct kmsclient_opts *o, struct kmsclient **out,
    struct kms_status *st)
{
	grpc_channel_credentials *creds = NULL;
	grpc_ssl_pem_key_cert_pair pair;
	grpc_channel_args args;
	grpc_arg a[1];
	char *ca = NULL, *cert = NULL, *key = NULL;
	size_t calen = 0, certlen = 0, keylen = 0;
	struct kmsclient *c = NULL;
	int r;

	*out = NULL;
	if (o->addr == NULL || *o->addr == '\0' || o->ca_file == NULL ||
	    o->cert_file == NULL || o->key_file == NULL)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "an address, a CA, a certificate and a key are needed");
	if ((r = read_pem(o->ca_file, &ca, &calen, st)) != 0 ||
	    (r = read_pem(o->cert_file, &cert, &certlen, st)) != 0 ||
	    (r = read_pem(o->key_file, &key, &keylen, st)) != 0)
		goto out;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (o->quiet && getenv("GRPC_VERBOSITY") == NULL)
		gpr_set_log_function(log_nothing);
	grpc_init();
	pair.private_key = key;
	pair.cert_chain = cert;
	/* The server is always verified against ca: no system roots. */
	creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
	a[0].type = GRPC_ARG_INTEGER;
	a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	a[0].value.integer = KMSCLIENT_MAX_REPLY;
	args.num_args = sizeof(a) / sizeof(a[0]);
	args.args = a;
	c->ch = grpc_channel_create(o->addr, creds, &args);
	grpc_channel_credentials_release(creds);
	if (!o->concurrent)
		c->cq = grpc_completion_queue_create_for_pluck(NULL);
	c->timeout = o->timeout_seconds > 0 ? o->timeout_seconds :
	    KMSCLIENT_DEFAULT_TIMEOUT;
	*out = c;
	c = NULL;
	r = 0;
 out:
	free(c);
	free(ca);
	free(cert);
	if (key != NULL) {
		OPENSSL_cleanse(key, keylen);
		free(key);
	}
	return r;
}

void
kmsclient_close(struct kmsclient *c)
{
	if (c == NULL)
		return;
	grpc_channel_destroy(c->ch);
	if (c->cq != NULL)
		grpcbuf_cq_destroy(c->cq);
	free(c);
	grpc_shutdown();
}

/* The waits below end at the latest with the call's own deadline. */
static grpc_event
wait_for(grpc_completion_queue *cq, void *tag)
{
	return grpc_completion_queue_pluck(cq, tag,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

int
kmsclient_call_stream(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    kmsclient_msg_cb cb, void *arg, struct kmsclient_result *res,
    struct kms_status *st)
{
	grpc_metadata_array init_md, trail_md;
	grpc_byte_buffer *send = NULL, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice(), path, sl;
	grpc_completion_queue *cq = c->cq;
	grpc_call *call = NULL;
	grpc_event ev;
	grpc_op ops[5], rop;
	gpr_timespec deadline;
	ProtobufCMessage *m;
	struct kmsclient_result dummy;
	char full[METHOD_MAX], *msg;
	uint8_t *buf;
	size_t len;
	int r = KMS_ERR_INTERNAL, cbr = 0;
	/* Distinct addresses serve as the tags of the two kinds of batch. */
	char tag_call, tag_msg;

	if (res == NULL)
		res = &dummy;
	res->grpc_code = GRPC_STATUS_INTERNAL;
	res->transport = 0;
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	if ((size_t)snprintf(full, sizeof(full), "%s%s", method[0] == '/' ?
	    "" : "/kms.v1.KeyManagementService/", method) >= sizeof(full)) {
		r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "method name too long");
		goto out;
	}
	len = protobuf_c_message_get_packed_size(req);
	if ((buf = malloc(len + 1)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	len = protobuf_c_message_pack(req, buf);
	sl = grpc_slice_from_copied_buffer((const char *)buf, len);
	/* Requests may hold plaintext to wrap. */
	OPENSSL_cleanse(buf, len);
	free(buf);
	send = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);

	if (cq == NULL)
		cq = grpc_completion_queue_create_for_pluck(NULL);
	path = grpc_slice_from_copied_string(full);
	deadline = c->timeout > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
	    gpr_time_from_seconds(c->timeout, GPR_TIMESPAN)) :
	    gpr_inf_future(GPR_CLOCK_REALTIME);
	call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS,
	    cq, path, NULL, deadline, NULL);
	grpc_slice_unref(path);
	if (call == NULL) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot make a call");
		goto out;
	}

	/*
	 * One batch sends the request and asks for the final status; the
	 * reply messages are read one batch each until the stream ends, and
	 * the status arrives after the last of them.
	 */
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[4].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[4].data.recv_status_on_client.status = &status;
	ops[4].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 5, &tag_call, NULL) !=
	    GRPC_CALL_OK) {
		r = kms_status_set(st, KMS_ERR_INTERNAL,
		    "cannot start the call");
		goto out;
	}
	for (;;) {
		memset(&rop, 0, sizeof(rop));
		rop.op = GRPC_OP_RECV_MESSAGE;
		rop.data.recv_message.recv_message = &recv;
		if (grpc_call_start_batch(call, &rop, 1, &tag_msg, NULL) !=
		    GRPC_CALL_OK) {
			grpc_call_cancel(call, NULL);
			cbr = kms_status_set(st, KMS_ERR_INTERNAL,
			    "cannot read the reply");
			break;
		}
		ev = wait_for(cq, &tag_msg);
		/* No message: the stream ended (the status says how). */
		if (ev.type != GRPC_OP_COMPLETE || !ev.success || recv == NULL)
			break;
		m = grpcbuf_unpack(recv, resp_desc);
		grpc_byte_buffer_destroy(recv);
		recv = NULL;
		if (m == NULL) {
			grpc_call_cancel(call, NULL);
			cbr = kms_status_set(st, KMS_ERR_INTERNAL,
			    "malformed reply to %s", full);
			break;
		}
		if ((cbr = cb(m, arg)) != 0) {
			grpc_call_cancel(call, NULL);
			break;
		}
	}
	ev = wait_for(cq, &tag_call);
	if (ev.type != GRPC_OP_COMPLETE) {
		r = kms_status_set(st, KMS_ERR_INTERNAL,
		    "the call did not finish");
		goto out;
	}
	if (cbr != 0) {
		/* The reply was refused here; the status is our CANCELLED. */
		r = cbr;
		goto out;
	}
	res->grpc_code = (int)status;
	if (status == GRPC_STATUS_OK) {
		r = 0;
		goto out;
	}
	r = err_of_grpc(status);
	msg = grpc_slice_to_c_string(details);
	kms_status_set(st, r, "%s", *msg != '\0' ? msg :
	    kms_grpc_code_name(status));
	gpr_free(msg);
	/*
	 * A server that answered leaves a ready channel behind; a refused
	 * connection or TLS handshake, or a peer that never completes one,
	 * does not.
	 */
	if ((status == GRPC_STATUS_UNAVAILABLE ||
	    status == GRPC_STATUS_DEADLINE_EXCEEDED) &&
	    grpc_channel_check_connectivity_state(c->ch, 0) !=
	    GRPC_CHANNEL_READY)
		res->transport = 1;
 out:
	if (send != NULL)
		grpc_byte_buffer_destroy(send);
	if (recv != NULL)
		grpc_byte_buffer_destroy(recv);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	if (call != NULL)
		grpc_call_unref(call);
	if (cq != NULL && cq != c->cq)
		grpcbuf_cq_destroy(cq);
	return r;
}

void
kmsclient_set_timeout(struct kmsclient *c, int seconds)
{
	c->timeout = seconds > 0 ? seconds : 0;
}

struct unary {
	ProtobufCMessage *resp;
	const char *method;
	struct kms_status *st;
};

static int
take_one(ProtobufCMessage *m, void *arg)
{
	struct unary *u = arg;

	if (u->resp != NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		return kms_status_set(u->st, KMS_ERR_INTERNAL,
		    "%s: more than one reply", u->method);
	}
	u->resp = m;
	return 0;
}

int
kmsclient_call(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, struct kmsclient_result *res,
    struct kms_status *st)
{
	struct unary u;
	int r;

	*resp = NULL;
	u.resp = NULL;
	u.method = method;
	u.st = st;
	if ((r = kmsclient_call_stream(c, method, req, resp_desc, take_one,
	    &u, res, st)) == 0 && u.resp == NULL)
		r = kms_status_set(st, KMS_ERR_INTERNAL, "%s: empty reply",
		    method);
	if (r != 0) {
		if (u.resp != NULL)
			protobuf_c_message_free_unpacked(u.resp, NULL);
		return r;
	}
	*resp = u.resp;
	return 0;
}
