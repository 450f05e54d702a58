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

struct kms_status;

struct audit_key {
	struct hsm_session *s;
	const struct kms_alg_info *alg;
	char label[HSM_LABEL_MAX + 16];
	hsm_handle_t priv;
	uint8_t *spki;			/* DER SubjectPublicKeyInfo */
	size_t spki_len;
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
/* Closes its session and frees it; a zeroed k is a no-op. */
void audit_key_close(struct audit_key *k);

#endif /* KMS_AUDITKEY_H */
