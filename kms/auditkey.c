/*
 * auditkey.c: the audit key of a chain (see auditkey.h).
 *
 * It is looked up at every start, when the key store has just listed the
 * token: on SoftHSM2's file store every search visits every object of the
 * token, so both halves of the pair are found in one search
 * (hsm_find_key_pair), not one search each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auditkey.h"
#include "kmserr.h"
#include "log.h"
#include "pubkey.h"

int
audit_key_sign(void *arg, const uint8_t *md, size_t mdlen, uint8_t *sig,
    size_t *siglen)
{
	struct audit_key *k = arg;
	uint8_t raw[HSM_SIG_MAX];
	size_t rawlen = sizeof(raw);
	int r;

	r = hsm_sign(k->s, k->alg, k->priv, md, mdlen, raw, &rawlen);
	if (r == KMS_ERR_STALE_HANDLE &&
	    hsm_find(k->s, HSM_OBJ_PRIVATE_KEY, k->label, &k->priv) == 0) {
		rawlen = sizeof(raw);
		r = hsm_sign(k->s, k->alg, k->priv, md, mdlen, raw, &rawlen);
	}
	if (r == 0)
		r = pubkey_sig_encode(k->alg, raw, rawlen, sig, siglen);
	return r;
}

int
audit_key_open(struct hsm *hsm, const char *chain, struct audit_key *k,
    struct kms_status *st)
{
	struct hsm_pubkey pk;
	hsm_handle_t pub;
	int r;

	memset(k, 0, sizeof(*k));
	k->alg = kms_alg_lookup(KMS_ALG_ED25519);
	snprintf(k->label, sizeof(k->label), AUDIT_KEY_LABEL "%s", chain);
	if ((r = hsm_session_open(hsm, &k->s)) != 0)
		return kms_status_set(st, r, "cannot open an HSM session for "
		    "the audit key");
	r = hsm_find_key_pair(k->s, k->alg, k->label, &k->priv, &pub);
	if (r == KMS_ERR_NOT_FOUND) {
		log_info("audit: generating audit key %s in the HSM", k->label);
		r = hsm_generate_key_pair(k->s, k->alg, k->label,
		    (const uint8_t *)k->label, strlen(k->label), &k->priv,
		    &pub);
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot find or make the audit "
		    "key %s: %s", k->label, kms_strerror(r));
	snprintf(k->seal_label, sizeof(k->seal_label), AUDIT_SEAL_LABEL "%s",
	    chain);
	snprintf(k->anchor_label, sizeof(k->anchor_label),
	    AUDIT_ANCHOR_LABEL "%s", chain);
	r = hsm_find(k->s, HSM_OBJ_SECRET_KEY, k->seal_label, &k->seal);
	if (r == KMS_ERR_NOT_FOUND) {
		log_info("audit: generating seal key %s in the HSM",
		    k->seal_label);
		r = hsm_generate_hmac_key(k->s, k->seal_label, &k->seal);
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot find or make the audit "
		    "seal key %s: %s", k->seal_label, kms_strerror(r));
	/*
	 * Every batch is sealed: with the token object, SoftHSM2's file
	 * store would re-read the key's file for each.  Without a copy the
	 * token object serves.
	 */
	if (hsm_session_copy(k->s, k->seal, &k->seal_copy) != 0)
		log_info("audit: seal key %s used from the token",
		    k->seal_label);
	r = hsm_find(k->s, HSM_OBJ_DATA, k->anchor_label, &k->anchor);
	if (r == KMS_ERR_NOT_FOUND)
		k->anchor = 0;
	else if (r != 0)
		return kms_status_set(st, r, "cannot look for the audit anchor "
		    "%s: %s", k->anchor_label, kms_strerror(r));
	if ((r = hsm_public_key(k->s, k->alg, pub, &pk)) == 0) {
		r = pubkey_spki(k->alg, pk.a, pk.alen, pk.b, pk.blen,
		    &k->spki, &k->spki_len);
		hsm_pubkey_clear(&pk);
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot read the audit key: %s",
		    kms_strerror(r));
	return 0;
}

int
audit_key_mac(void *arg, const uint8_t *in, size_t len, uint8_t out[32])
{
	struct audit_key *k = arg;
	int r;

	if (k->seal_copy != 0) {
		if ((r = hsm_hmac(k->s, k->seal_copy, in, len, out)) !=
		    KMS_ERR_STALE_HANDLE)
			return r;
		/* The session was reopened: its copy went with it. */
		k->seal_copy = 0;
	}
	r = hsm_hmac(k->s, k->seal, in, len, out);
	if (r == KMS_ERR_STALE_HANDLE &&
	    hsm_find(k->s, HSM_OBJ_SECRET_KEY, k->seal_label, &k->seal) == 0)
		r = hsm_hmac(k->s, k->seal, in, len, out);
	return r;
}

int
audit_key_anchor_get(void *arg, char **value, size_t *len)
{
	struct audit_key *k = arg;
	uint8_t *v = NULL;
	int r;

	*value = NULL;
	*len = 0;
	if (k->aget != NULL)
		return k->aget(k->aarg, k->anchor_label, value, len);
	if (k->anchor == 0)
		return KMS_ERR_NOT_FOUND;
	r = hsm_data_get(k->s, k->anchor, &v, len);
	if (r == KMS_ERR_STALE_HANDLE &&
	    (r = hsm_find(k->s, HSM_OBJ_DATA, k->anchor_label,
	    &k->anchor)) == 0)
		r = hsm_data_get(k->s, k->anchor, &v, len);
	if (r == 0)
		*value = (char *)v;
	return r;
}

int
audit_key_anchor_set(void *arg, const char *value, size_t len)
{
	struct audit_key *k = arg;

	if (k->aset != NULL)
		return k->aset(k->aarg, k->anchor_label, value, len);
	if (k->anchor == 0)
		return hsm_data_create(k->s, k->anchor_label,
		    (const uint8_t *)value, len, &k->anchor);
	return hsm_data_set(k->s, k->anchor_label, &k->anchor,
	    (const uint8_t *)value, len);
}

void
audit_key_anchor_elsewhere(struct audit_key *k, audit_anchor_get_fn *get,
    audit_anchor_set_fn *set, void *arg)
{
	k->aget = get;
	k->aset = set;
	k->aarg = arg;
}

void
audit_key_close(struct audit_key *k)
{
	hsm_session_close(k->s);
	free(k->spki);
	memset(k, 0, sizeof(*k));
}
