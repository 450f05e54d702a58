/*
 * gate.h: the one way into the service.  The RPC layer hands every call
 * to gate() as bytes with the caller's identity; the gate decodes,
 * authenticates, checks the key name, authorizes, runs the handler of the
 * method's row in the handler table, audits and packs the reply.  A
 * request whose audit record cannot be written is answered UNAVAILABLE
 * with its result withheld.  The request path is drawn in docs/design.md.
 *
 * Nothing here names gRPC or protobuf types: the RPC layer sees bytes.
 */
#ifndef KMS_GATE_H
#define KMS_GATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kmserr.h"

struct audit;
struct audit_waiter;
struct config;
struct hsm;
struct hsm_session;
struct keystore;
struct policy;
struct watch_hub;
struct watcher;

struct service {
	const struct config *cfg;
	struct hsm *hsm;
	struct keystore *ks;
	struct audit *audit;
	pthread_rwlock_t policy_lock;	/* guards policy (swapped on SIGHUP) */
	struct policy *policy;
	struct metrics *metrics;	/* NULL: metrics off */
	struct watch_hub *watch;	/* WatchAuditRecords (watch.h) */
};

/* Who is calling, as established by the transport. */
struct rpc_peer {
	const char *identity;		/* NULL when no verified certificate */
	const char *fingerprint;	/* SHA-256 of the certificate, hex */
	const char *peer;		/* transport address */
	const char *refusal;		/* why no identity, or NULL */
};

struct rpc_reply {
	uint8_t *body;			/* packed response, malloc'd; NULL on error */
	size_t len;
	struct kms_status st;		/* st.err != 0: the status to send */
	/*
	 * Given by the transport: when set, the gate queues the audit
	 * record with it and sets pending; the reply may leave only when
	 * the waiter is settled (see audit_submit).  When NULL the gate
	 * waits for the record itself.
	 */
	struct audit_waiter *waiter;
	int pending;
	/*
	 * Set by the gate when the request carried a secret (Wrap's
	 * plaintext): the transport wipes its copies of the request bytes.
	 * The body is always wiped when it is freed.
	 */
	int wipe_request;
	/*
	 * A streaming call the gate let in: the transport starts it
	 * (watch_start) once the reply may leave, or drops it (watch_drop).
	 */
	struct watcher *stream;
};

/* The methods served, numbered from 0: their paths for the transport. */
size_t gate_nmethods(void);
const char *gate_method_path(size_t method);

/*
 * Serves one call of method (an index below gate_nmethods()) with the
 * request bytes body and fills *out; see the top of this file.
 */
void gate(struct service *svc, struct hsm_session *hs, size_t method,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out);

/* Records a call refused before the gate (an unknown method). */
void gate_audit_unimplemented(struct service *svc,
    const struct rpc_peer *who, const char *method);

/* Loads the policy file named in the configuration and swaps it in. */
int service_reload_policy(struct service *svc, struct kms_status *st);

/*
 * Opens svc->audit: the chain base, or when another process holds it
 * base-2 .. base-SERVICE_CHAIN_TRIES, signed by its key in the HSM
 * (*akey: closed by the caller after audit_close).  new_chain: the reason
 * to end the chain and start the next one (--audit-new-chain), or NULL.
 * The chain's anchor is kept in sto when it is an etcd store (the token
 * then holds key objects only), else (sto NULL too) on the token.
 */
#define SERVICE_CHAIN_TRIES 16
struct audit_key;
struct store;
int service_open_audit(struct service *svc, struct store *sto,
    const char *base, const char *new_chain, struct audit_key *akey,
    struct kms_status *st);

/*
 * Audits what happens without a call (the scheduler, the store commands)
 * under identity: rpc on key (NULL: none) and version, with detail (JSON
 * members or NULL) and st (NULL: it succeeded).  KMS_ERR_AUDIT when the
 * record cannot be written: the caller then does not act.
 */
int service_audit_event(struct service *svc, const char *identity,
    const char *rpc, const char *key, uint32_t version, const char *detail,
    const struct kms_status *st);

/* The identity under which kmsd's own scheduled changes are audited. */
#define SERVICE_IDENTITY "kmsd/scheduler"

/*
 * Reads what other instances changed on the token, then rotates due keys
 * and destroys due versions, auditing each; called every [keys] sync_ms
 * on a session of its own.
 */
void service_maintain(struct service *svc, struct hsm_session *hs);

#endif /* KMS_GATE_H */
