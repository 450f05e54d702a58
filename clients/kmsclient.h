/*
 * kmsclient.h: a small synchronous client for kmsd on the gRPC C core
 * API, with mandatory mutual TLS.  kmsctl is built on it.
 */
#ifndef KMS_KMSCLIENT_H
#define KMS_KMSCLIENT_H

#include <protobuf-c/protobuf-c.h>

struct kms_status;
struct kmsclient;

struct kmsclient_opts {
	const char *addr;		/* HOST:PORT */
	const char *ca_file;		/* CA that the server certificate chains to */
	const char *cert_file;		/* client certificate, PEM */
	const char *key_file;		/* its private key, PEM */
	int timeout_seconds;		/* per call; 0: 30 */
};

/* Reads the PEM files and makes the channel (connecting lazily). */
int kmsclient_open(const struct kmsclient_opts *o, struct kmsclient **out,
    struct kms_status *st);
void kmsclient_close(struct kmsclient *c);

/*
 * Calls /kms.v1.KeyManagementService/METHOD (or a full path starting
 * with '/') with req and unpacks the reply into *resp (free it with
 * protobuf_c_message_free_unpacked).  Returns 0, or -1 with the gRPC
 * status code in *code and the server's message in st->msg.
 * *transport is set to 1 when the failure came from the connection (no
 * server reached, TLS refused, deadline without a connection) rather
 * than from the server's answer.
 */
int kmsclient_call(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, int *code, int *transport,
    struct kms_status *st);

#endif /* KMS_KMSCLIENT_H */
