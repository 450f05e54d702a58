/*
 * handlers.h: the RPC handlers and the service state they share.
 *
 * Handlers see bytes in and bytes out; they never include gRPC headers,
 * and protobuf types do not leak out of handlers.c.  Every handler has
 * the same shape: decode -> authenticate -> authorize -> (HSM) -> audit
 * -> reply.  A request that fails at any step is audited as well, and a
 * request whose audit record cannot be written is answered UNAVAILABLE
 * with its result withheld.
 */
#ifndef KMS_HANDLERS_H
#define KMS_HANDLERS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kmserr.h"
#include "policy.h"

struct audit;
struct config;
struct hsm;
struct hsm_session;
struct keystore;

struct service {
	const struct config *cfg;
	struct hsm *hsm;
	struct keystore *ks;
	struct audit *audit;
	pthread_rwlock_t policy_lock;	/* guards policy (swapped on SIGHUP) */
	struct policy *policy;
};

/* Who is calling, as established by the transport. */
struct rpc_peer {
	const char *identity;		/* NULL when no verified certificate */
	const char *fingerprint;	/* SHA-256 of the certificate, hex */
	const char *peer;		/* transport address */
	const char *refusal;		/* why no identity, or NULL */
};

struct audit_waiter;

struct rpc_reply {
	uint8_t *body;			/* packed response, malloc'd; NULL on error */
	size_t len;
	struct kms_status st;		/* st.err != 0: the status to send */
	/*
	 * Given by the transport: when set, the handler queues its audit
	 * record with it and sets pending; the reply may leave only when
	 * the waiter is settled (see audit_submit).  When NULL the handler
	 * waits for the record itself.
	 */
	struct audit_waiter *waiter;
	int pending;
};

typedef void handler_fn(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out);

struct handler_def {
	const char *path;		/* "/kms.v1.KeyManagementService/Sign" */
	const char *name;		/* "Sign" */
	handler_fn *fn;
};

/* The method table; the last entry has path NULL. */
extern const struct handler_def handler_table[];

/* Loads the policy file named in the configuration and swaps it in. */
int service_reload_policy(struct service *svc, struct kms_status *st);

/* The identity under which kmsd's own scheduled changes are audited. */
#define SERVICE_IDENTITY "kmsd/scheduler"

/*
 * Reads what other instances changed on the token, then rotates due keys
 * and destroys due versions, auditing each; called every [keys] sync_ms
 * on a session of its own.
 */
void service_maintain(struct service *svc, struct hsm_session *hs);

/* Records a call refused before any handler ran (unknown method). */
void service_audit_unimplemented(struct service *svc,
    const struct rpc_peer *who, const char *method);

#endif /* KMS_HANDLERS_H */
