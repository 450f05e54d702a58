/*
 * kmsclient.h: a small synchronous client for kmsd on the gRPC C core
 * API, with mandatory mutual TLS.  kmsctl and the PKCS#11 module are built
 * on it.
 *
 * A client holds one channel.  By default it also holds one completion
 * queue and is meant for one thread at a time; with `concurrent` set,
 * every call waits on a completion queue of its own, so that any number
 * of threads share the channel.
 */
#ifndef KMS_KMSCLIENT_H
#define KMS_KMSCLIENT_H

#include <protobuf-c/protobuf-c.h>

struct kms_status;
struct kmsclient;

/* Replies larger than this are refused by the transport. */
#define KMSCLIENT_MAX_REPLY	(64 * 1024 * 1024)
#define KMSCLIENT_DEFAULT_TIMEOUT	30	/* seconds */

struct kmsclient_opts {
	const char *addr;		/* HOST:PORT */
	const char *ca_file;		/* CA that the server certificate chains to */
	const char *cert_file;		/* client certificate, PEM */
	const char *key_file;		/* its private key, PEM */
	int timeout_seconds;		/* per call; 0: KMSCLIENT_DEFAULT_TIMEOUT */
	/*
	 * Non-zero turns gRPC's own log off (unless $GRPC_VERBOSITY asks
	 * for it): what it says about a failed connection is repeated in
	 * the call's status anyway.  The log is process-wide.
	 */
	int quiet;
	int concurrent;			/* calls may come from several threads */
};

/*
 * How a call ended, beyond the KMS_ERR_* code it returned: the numeric
 * gRPC status code (grpc/status.h), and whether the failure came from the
 * connection (no server reached, TLS refused, deadline without a
 * connection) rather than from the server's answer.
 */
struct kmsclient_result {
	int grpc_code;
	int transport;
};

/*
 * Reads the PEM files and makes the channel (it connects lazily, on the
 * first call).  Returns 0 or KMS_ERR_IO (a file cannot be read),
 * KMS_ERR_INVALID_ARGUMENT, KMS_ERR_NOMEM, with the reason in st.
 */
int kmsclient_open(const struct kmsclient_opts *o, struct kmsclient **out,
    struct kms_status *st);
/* Closes the channel; NULL is a no-op. */
void kmsclient_close(struct kmsclient *c);

/*
 * The deadline of the calls made from now on, in seconds; 0: none (a
 * stream followed until the server or the callback ends it).
 */
void kmsclient_set_timeout(struct kmsclient *c, int seconds);

/*
 * Calls /kms.v1.KeyManagementService/METHOD (or METHOD itself when it is
 * a full path starting with '/') with req and unpacks the one reply into
 * *resp (free it with protobuf_c_message_free_unpacked).
 * Returns 0, or a negative KMS_ERR_* mapped from the gRPC status with the
 * server's message in st->msg; res (may be NULL) tells the gRPC code and
 * whether the failure was the connection's.
 */
int kmsclient_call(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, struct kmsclient_result *res,
    struct kms_status *st);

/*
 * Called for each message of a server-streaming reply.  The callback owns
 * msg (free it with protobuf_c_message_free_unpacked).  A non-zero return
 * cancels the call; kmsclient_call_stream then returns that value.
 */
typedef int (*kmsclient_msg_cb)(ProtobufCMessage *msg, void *arg);

/*
 * Calls a server-streaming METHOD with req and hands each reply message to
 * cb in order.  Returns as kmsclient_call; a unary method is a stream of
 * one message.
 */
int kmsclient_call_stream(struct kmsclient *c, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    kmsclient_msg_cb cb, void *arg, struct kmsclient_result *res,
    struct kms_status *st);

#endif /* KMS_KMSCLIENT_H */
