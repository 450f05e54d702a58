/*
 * auditkey.h: the audit checkpoint key, an Ed25519 key pair born in the
 * token, one per audit chain, labelled "kms-audit-ed25519#CHAIN" (not a
 * key of the key store: no client can name it).  Checkpoints (C2SP signed
 * notes, see note.h) are signed with it on an HSM session of its own.
 * Chains begun before it have their older checkpoints signed by an ECDSA
 * P-256 key labelled "kms-audit#CHAIN"; its public half stays beside the
 * log, so that they still verify.
 */
#ifndef KMS_AUDITKEY_H
#define KMS_AUDITKEY_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"
#include "hsm.h"

#define AUDIT_KEY_LABEL "kms-audit-ed25519#"
/* '!' keeps them out of the key store's listing (not key names). */
#define AUDIT_SEAL_LABEL "kms-audit!seal#"
#define AUDIT_ANCHOR_LABEL "kms-audit!anchor#"

struct kms_status;

/*
 * An anchor kept outside the token, by its label: *value (malloc'd) or
 * KMS_ERR_NOT_FOUND; set replaces it.
 */
typedef int audit_anchor_get_fn(void *arg, const char *label, char **value,
    size_t *len);
typedef int audit_anchor_set_fn(void *arg, const char *label,
    const char *value, size_t len);

struct audit_key {
	struct hsm_session *s;
	const struct kms_alg_info *alg;
	char label[HSM_LABEL_MAX + 16];
	hsm_handle_t priv;
	uint8_t *spki;			/* DER SubjectPublicKeyInfo */
	size_t spki_len;
	/* The batch-seal HMAC key and the anchor data object (0: none yet). */
	char seal_label[HSM_LABEL_MAX + 16];
	char anchor_label[HSM_LABEL_MAX + 16];
	hsm_handle_t seal, anchor;
	hsm_handle_t seal_copy;		/* seal as a session object, or 0 */
	/* The anchor kept elsewhere (audit_key_anchor_elsewhere), or NULL. */
	audit_anchor_get_fn *aget;
	audit_anchor_set_fn *aset;
	void *aarg;
	const char *awhere;		/* its name in messages: "etcd" */
};

/*
 * Finds the audit key of chain on the token, in one search, or makes it
 * when it is missing, and reads its public key.  k is zeroed first; close
 * it with audit_key_close, also after a failure.
 */
int audit_key_open(struct hsm *hsm, const char *chain, struct audit_key *k,
    struct kms_status *st);
/*
 * The signer of struct audit_signer: signs the message md (PureEdDSA
 * signs the message itself, not a digest of it).  A handle gone
 * stale (the key's objects were rewritten by another process) is looked
 * up again once.
 */
int audit_key_sign(void *arg, const uint8_t *md, size_t mdlen, uint8_t *sig,
    size_t *siglen);
/*
 * The seal of struct audit_signer: HMAC-SHA256 in the token with the
 * chain's seal key, "kms-audit!seal#CHAIN" (made with the audit key).
 */
int audit_key_mac(void *arg, const uint8_t *in, size_t len,
    uint8_t out[32]);
/*
 * The chain's anchor, a private data object "kms-audit!anchor#CHAIN"
 * that only a logged-in session can write: *value (malloc'd) or
 * KMS_ERR_NOT_FOUND.
 */
int audit_key_anchor_get(void *arg, char **value, size_t *len);
/* Replaces the anchor's value. */
int audit_key_anchor_set(void *arg, const char *value, size_t len);
/*
 * Keeps the anchor with get and set (arg) in where ("etcd") instead of in
 * a data object on the token: where the token must hold key objects only
 * (the etcd store, docs/etcd.md).  Kept there, anything with write access
 * could rewrite it without the PIN, so it is kept sealed
 * (audit_anchor_seal): audit_key_anchor_get then answers
 * KMS_ERR_VERIFY_FAILED for a value whose MAC is missing or wrong.
 */
void audit_key_anchor_elsewhere(struct audit_key *k, const char *where,
    audit_anchor_get_fn *get, audit_anchor_set_fn *set, void *arg);
/*
 * An anchor kept outside the token, sealed: its text followed by a line
 * "mac=HEX\n", HMAC-SHA256 in the token by the seal key of the chain its
 * label (AUDIT_ANCHOR_LABEL CHAIN) names, over "kms-audit-anchor-mac-v1\n",
 * the label, "\n" and the text.  s is a logged-in session; *out
 * (malloc'd, NUL-terminated).  audit_anchor_open gives back the text, or
 * KMS_ERR_VERIFY_FAILED when the MAC line is missing or wrong or the
 * chain has no seal key.
 */
int audit_anchor_seal(struct hsm_session *s, const char *label,
    const char *text, size_t len, char **out, size_t *outlen);
int audit_anchor_open(struct hsm_session *s, const char *label,
    const char *v, size_t len, char **text, size_t *textlen);

/* Closes its session and frees it; a zeroed k is a no-op. */
void audit_key_close(struct audit_key *k);

#endif /* KMS_AUDITKEY_H */
