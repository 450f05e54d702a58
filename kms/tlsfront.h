/*
 * tlsfront.h: kmsd's connection layer.  It accepts TCP itself, counts the
 * connections against a cap, terminates mutual TLS with OpenSSL (chain,
 * dates, CRL, then the identity rules of identity.h) and hands each
 * verified connection's plaintext to the RPC layer as one end of a
 * socketpair.  The RPC layer maps a call back to its connection with
 * tlsfront_peer() and the number of that descriptor.
 *
 * One event thread (epoll, non-blocking OpenSSL) serves every
 * connection.  A flood of connections that never finish a handshake
 * cannot lock clients out: they time out ([server] handshake_timeout_ms),
 * and when the cap is reached the oldest connection still in its
 * handshake is closed to make room; a new connection is closed at once
 * only when every connection in the cap is a verified one.
 */
#ifndef KMS_TLSFRONT_H
#define KMS_TLSFRONT_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include "identity.h"

struct kms_status;
struct tls_set;
struct tlsfront;

struct tlsfront_params {
	const char *listen;		/* host:port or [v6]:port */
	unsigned int max_connections;	/* see tlsfront_size_limits */
	unsigned int handshake_timeout_ms;
	/*
	 * Gives the plaintext end of a verified connection to the RPC
	 * layer, which owns fd from then on (also when it fails).
	 */
	void (*handoff)(void *arg, int fd);
	void *arg;
};

/* What the RPC layer learns about the connection a call came on. */
struct tlsfront_peer {
	struct identity id;		/* name or reason for the refusal */
	char addr[64];			/* "ipv4:127.0.0.1:54321" */
};

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit, keeps a reserve of
 * descriptors for the HSM, the audit log and reloads, and sizes the cap:
 * *max is the configured cap (0: as many as the limit allows, at most
 * 10,000); a configured cap the limit cannot hold is an error.  Logs the
 * figures.
 */
int tlsfront_size_limits(unsigned int configured, unsigned int *max,
    struct kms_status *st);

/*
 * Binds the listener and starts the event thread with the credentials ts
 * (taken over).  *port receives the bound port.
 */
int tlsfront_start(const struct tlsfront_params *p, struct tls_set *ts,
    struct tlsfront **out, int *port, struct kms_status *st);

/*
 * New connections use ts (taken over) from now on; established ones keep
 * the set they were accepted with.
 */
void tlsfront_set_tls(struct tlsfront *f, struct tls_set *ts);

/*
 * The connection behind the RPC layer's peer string ("fd:N").  Returns 0
 * with *out filled while that connection is open, KMS_ERR_UNAUTHENTICATED
 * otherwise.
 */
int tlsfront_peer(struct tlsfront *f, const char *peer,
    struct tlsfront_peer *out);

/*
 * Connects to the listener and checks that the event thread accepts the
 * connection within timeout_ms.  Returns 0, or -1 when the listener is
 * deaf (the caller exits so that a supervisor restarts kmsd).
 */
int tlsfront_selfcheck(struct tlsfront *f, int timeout_ms);

/* The client connections open now (kms_connections). */
unsigned int tlsfront_connections(struct tlsfront *f);

/* Stops accepting; established connections keep being served. */
void tlsfront_quiesce(struct tlsfront *f);

/* Closes every connection, stops the thread and frees everything. */
void tlsfront_stop(struct tlsfront *f);

/*
 * Within the front (tlsfront_sock.c): binds and listens on HOST:PORT or
 * [V6]:PORT, non-blocking, and says which address it got; names a peer
 * address as gRPC does ("ipv4:127.0.0.1:54321").
 */
int tlsfront_bind(const char *addr, int *lfd, struct sockaddr_storage *bound,
    socklen_t *boundlen, struct kms_status *st);
void tlsfront_format_addr(const struct sockaddr_storage *ss, char *out,
    size_t len);

#endif /* KMS_TLSFRONT_H */
