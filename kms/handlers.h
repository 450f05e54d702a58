/*
 * handlers.h: the handler layer behind the gate: the handler table, the
 * state of one call, and the helpers handlers share.  Only the gate and
 * the handler files (kms/h_*.c) include it; protobuf types stay here.
 *
 * A handler does only its work: the gate has decoded the request, checked
 * the caller, the key name and the grant of the method's row before it
 * runs, and audits, packs and wipes after it returns.  A handler fills the
 * response with memory the response owns (malloc'd strings, bytes and
 * messages): the gate frees it with protobuf_c_message_free_unpacked.  It
 * returns 0, or an error with c->st set.  Adding an RPC is one handler
 * and one row: see docs/design.md.
 */
#ifndef KMS_HANDLERS_H
#define KMS_HANDLERS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>
#include <protobuf-c/protobuf-c.h>

#include "gate.h"
#include "kmserr.h"
#include "policy.h"

/* The state of one call as it moves through the gate and its handler. */
struct call {
	struct service *svc;
	struct hsm_session *hs;		/* NULL for records without a call */
	const struct rpc_peer *who;
	const char *rpc;		/* the row's name, for the audit record */
	const char *key;		/* the key named, once it is well formed */
	uint32_t version;		/* the key version used, for the record */
	uint8_t req_hash[SHA256_DIGEST_LENGTH];
	int have_hash;
	char detail[1024];		/* extra audit members, JSON, or "" */
	struct kms_status st;
	struct watcher *stream;		/* GATE_STREAM: what to stream */
};

/* What the gate does for a method besides decoding and auditing. */
#define GATE_KEYED	0x01	/* request field "name" names a key: the
				   gate checks it and authorizes on it */
#define GATE_NOAUTH	0x02	/* no identity needed, no grant (Health) */
#define GATE_NOGRANT	0x04	/* authenticated, but no grant of its own:
				   the handler shows only what the caller
				   may see, or the caller itself */
#define GATE_SECRET_IN	0x08	/* the request holds plaintext: wiped */
#define GATE_SECRET_OUT	0x10	/* the reply holds plaintext: wiped */
#define GATE_STREAM	0x20	/* server streaming: the handler opens a
				   watcher (c->stream) that the transport
				   starts once the call's record is durable;
				   resp names the type of its messages */

typedef int handler_fn(struct call *c, const void *req, void *resp);

struct handler_def {
	const char *path;		/* "/kms.v1.KeyManagementService/Sign" */
	const char *name;		/* "Sign", as audited */
	enum kms_op op;			/* the grant asked for; KMS_OP_NONE
					   with GATE_NOAUTH or GATE_NOGRANT */
	unsigned int flags;		/* GATE_* */
	const ProtobufCMessageDescriptor *req, *resp;
	/*
	 * A bytes field of the request whose SHA-256 the audit record
	 * holds, taken before any check so that refused calls show it too;
	 * NULL when the handler records its own (call_hash) or none.
	 */
	const char *hashed;
	handler_fn *fn;
};

/* The method table (handlers.c); the last entry has path NULL. */
extern const struct handler_def handler_table[];

/*
 * Authorizes the caller for op on resource, beyond the row's own grant
 * (SignBundleManifest also asks for the grant on its app and channel).
 */
int call_authorize(struct call *c, enum kms_op op, const char *resource);

/* Records the SHA-256 of the caller's input for the audit record. */
void call_hash(struct call *c, const uint8_t *p, size_t len);

/* Sets c->st to out of memory and returns KMS_ERR_NOMEM. */
int call_nomem(struct call *c);

/* A copy of s (NULL: "") for a response string, or NULL. */
char *pb_strdup(const char *s);

/* The handlers, by file. */
handler_fn h_create_key, h_get_key, h_list_keys, h_get_public_key,
    h_rotate_key, h_set_version_state, h_update_key,
    h_set_certificate_chain;					/* h_keys.c */
handler_fn h_sign, h_verify, h_wrap, h_unwrap,
    h_generate_data_key;					/* h_crypto.c */
handler_fn h_sign_bundle_manifest;				/* h_bundle.c */
handler_fn h_list_audit_records, h_watch_audit_records, h_whoami,
    h_health_check;						/* h_service.c */
handler_fn h_get_audit_proof, h_get_audit_consistency;	/* h_audit.c */

#endif /* KMS_HANDLERS_H */
