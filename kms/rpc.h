/*
 * rpc.h: the gRPC server.  The only module that includes gRPC headers.
 *
 * One completion-queue thread dispatches; a pool of workers, each with its
 * own HSM session, runs the handlers and sends the replies.  Requests to
 * methods the gate serves arrive with their payload; every other method
 * is answered UNIMPLEMENTED at once (and audited).
 */
#ifndef KMS_RPC_H
#define KMS_RPC_H

struct service;
struct kms_status;
struct rpc_server;

/*
 * Starts listening on listen with mTLS (clients must present a certificate
 * chaining to the configured CA) and starts the workers.  *port receives
 * the bound port.
 */
int rpc_server_start(struct service *svc, const char *listen,
    struct rpc_server **out, int *port, struct kms_status *st);

/*
 * Stops accepting calls, lets the calls in flight finish (cancelling them
 * after grace_seconds), stops the workers and frees everything.
 */
void rpc_server_stop(struct rpc_server *srv, int grace_seconds);

#endif /* KMS_RPC_H */
