/*
 * conn.c: kmsctl's connection to kmsd: the client is opened on the first
 * call, so that a command that fails before it needs the server never
 * reads a certificate, and every failed call is reported the same way.
 */
#include <stdio.h>

#include "kmsclient.h"
#include "kmsctl.h"
#include "kmserr.h"

static int
connect_server(struct ctx *x)
{
	struct kms_status st;
	int r;

	if (x->c != NULL)
		return 0;
	x->o.quiet = 1;
	kms_status_clear(&st);
	if ((r = kmsclient_open(&x->o, &x->c, &st)) != 0) {
		fprintf(stderr, "kmsctl: %s\n", st.msg);
		return r == KMS_ERR_INVALID_ARGUMENT ? KMSCTL_EXIT_USAGE :
		    KMSCTL_EXIT_IO;
	}
	return 0;
}

/* Prints why a call failed and returns the exit code that says so. */
static int
call_failed(struct ctx *x, const char *method,
    const struct kmsclient_result *res, const struct kms_status *st)
{
	x->grpc_code = res->grpc_code;
	fprintf(stderr, "kmsctl: %s: %s: %s\n", method,
	    kms_grpc_code_name(res->grpc_code), st->msg);
	return res->transport ? KMSCTL_EXIT_TRANSPORT : KMSCTL_EXIT_REFUSED;
}

int
kmsctl_call(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp)
{
	struct kmsclient_result res;
	struct kms_status st;
	int r;

	*resp = NULL;
	if ((r = connect_server(x)) != 0)
		return r;
	kms_status_clear(&st);
	if (kmsclient_call(x->c, method, req, rd, resp, &res, &st) == 0)
		return 0;
	return call_failed(x, method, &res, &st);
}

static int
call_stream(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, kmsclient_msg_cb cb, void *arg,
    int forever)
{
	struct kmsclient_result res;
	struct kms_status st;
	int r;

	if ((r = connect_server(x)) != 0)
		return r;
	kms_status_clear(&st);
	/* A followed stream has no deadline unless --timeout gives one. */
	if (forever)
		kmsclient_set_timeout(x->c, x->o.timeout_seconds);
	r = kmsclient_call_stream(x->c, method, req, rd, cb, arg, &res, &st);
	if (forever)
		kmsclient_set_timeout(x->c, x->o.timeout_seconds > 0 ?
		    x->o.timeout_seconds : KMSCLIENT_DEFAULT_TIMEOUT);
	/* A positive value is the callback's: it has all it wanted. */
	if (r >= 0)
		return 0;
	return call_failed(x, method, &res, &st);
}

int
kmsctl_call_stream(struct ctx *x, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
    kmsclient_msg_cb cb, void *arg)
{
	return call_stream(x, method, req, rd, cb, arg, 0);
}

int
kmsctl_follow(struct ctx *x, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
    kmsclient_msg_cb cb, void *arg)
{
	return call_stream(x, method, req, rd, cb, arg, 1);
}
