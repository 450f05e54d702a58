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
 * Starts the workers, then listens on listen with mTLS through the
 * connection layer (tlsfront.h: clients must present a certificate
 * chaining to the configured CA, not revoked, naming a usable identity).
 * *port receives the bound port.
 */
int rpc_server_start(struct service *svc, const char *listen,
    struct rpc_server **out, int *port, struct kms_status *st);

/*
 * New connections use the credentials ts (taken over) from now on;
 * established ones keep theirs.
 */
struct tls_set;
void rpc_server_set_tls(struct rpc_server *srv, struct tls_set *ts);

/*
 * Checks that the listener still accepts connections (see
 * tlsfront_selfcheck); 0 when it does.
 */
int rpc_server_selfcheck(struct rpc_server *srv, int timeout_ms);

/* The client connections open now. */
unsigned int rpc_server_connections(struct rpc_server *srv);

/*
 * Stops accepting calls, lets the calls in flight finish (cancelling them
 * after grace_seconds), stops the workers and frees everything.
 */
void rpc_server_stop(struct rpc_server *srv, int grace_seconds);

#endif /* KMS_RPC_H */
