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

#include <openssl/crypto.h>

#include "auditkey.h"
#include "auditread.h"
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

/*
 * An anchor kept outside the token is its text and a line "mac=HEX\n":
 * HMAC-SHA256 by the chain's seal key over ANCHOR_MAC_DOMAIN, the
 * anchor's label, "\n" and the text, so that neither an anchor of
 * another chain nor one under another label passes for it.
 */
#define ANCHOR_MAC_DOMAIN "kms-audit-anchor-mac-v1\n"
#define ANCHOR_MAC_LINE (4 + 64 + 1)	/* "mac=" HEX "\n" */
#define ANCHOR_TEXT_MAX 4096

typedef int anchor_mac_fn(void *arg, const uint8_t *in, size_t len,
    uint8_t out[32]);

/* The MAC of text under label, in hex (65 bytes). */
static int
anchor_mac_hex(anchor_mac_fn *mac, void *arg, const char *label,
    const char *text, size_t len, char hex[65])
{
	size_t dlen = strlen(ANCHOR_MAC_DOMAIN), llen = strlen(label), n;
	uint8_t m[32], *in;
	int r;

	if (len > ANCHOR_TEXT_MAX || llen > HSM_LABEL_MAX + 16)
		return KMS_ERR_INVALID_ARGUMENT;
	n = dlen + llen + 1 + len;
	if ((in = malloc(n)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(in, ANCHOR_MAC_DOMAIN, dlen);
	memcpy(in + dlen, label, llen);
	in[dlen + llen] = '\n';
	memcpy(in + dlen + llen + 1, text, len);
	if ((r = mac(arg, in, n, m)) == 0)
		audit_hex(m, sizeof(m), hex);
	free(in);
	return r;
}

/* *out (malloc'd, NUL-terminated): text and its MAC line. */
static int
anchor_seal(anchor_mac_fn *mac, void *arg, const char *label,
    const char *text, size_t len, char **out, size_t *outlen)
{
	char hex[65], *v;
	int r;

	*out = NULL;
	*outlen = 0;
	if ((r = anchor_mac_hex(mac, arg, label, text, len, hex)) != 0)
		return r;
	if ((v = malloc(len + ANCHOR_MAC_LINE + 1)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(v, text, len);
	snprintf(v + len, ANCHOR_MAC_LINE + 1, "mac=%s\n", hex);
	*out = v;
	*outlen = len + ANCHOR_MAC_LINE;
	return 0;
}

/*
 * *text (malloc'd, NUL-terminated): the text of the sealed anchor v, or
 * KMS_ERR_VERIFY_FAILED when its MAC line is missing or does not match.
 */
static int
anchor_open(anchor_mac_fn *mac, void *arg, const char *label,
    const char *v, size_t len, char **text, size_t *textlen)
{
	char hex[65], *t;
	size_t n;
	int r;

	*text = NULL;
	*textlen = 0;
	if (len <= ANCHOR_MAC_LINE)
		return KMS_ERR_VERIFY_FAILED;
	n = len - ANCHOR_MAC_LINE;
	if (v[n - 1] != '\n' || memcmp(v + n, "mac=", 4) != 0 ||
	    v[len - 1] != '\n' || memchr(v, '\0', len) != NULL)
		return KMS_ERR_VERIFY_FAILED;
	if ((r = anchor_mac_hex(mac, arg, label, v, n, hex)) != 0)
		return r == KMS_ERR_INVALID_ARGUMENT ?
		    KMS_ERR_VERIFY_FAILED : r;
	if (CRYPTO_memcmp(hex, v + n + 4, 64) != 0)
		return KMS_ERR_VERIFY_FAILED;
	if ((t = malloc(n + 1)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(t, v, n);
	t[n] = '\0';
	*text = t;
	*textlen = n;
	return 0;
}

/* The seal key of the chain an anchor's label names, on session s. */
struct anchor_key {
	struct hsm_session *s;
	hsm_handle_t key;
};

static int
anchor_key_mac(void *arg, const uint8_t *in, size_t len, uint8_t out[32])
{
	struct anchor_key *ak = arg;

	return hsm_hmac(ak->s, ak->key, in, len, out);
}

static int
anchor_key_find(struct hsm_session *s, const char *label,
    struct anchor_key *ak)
{
	char seal[HSM_LABEL_MAX + 16];
	size_t n = strlen(AUDIT_ANCHOR_LABEL);

	ak->s = s;
	ak->key = 0;
	if (strncmp(label, AUDIT_ANCHOR_LABEL, n) != 0 ||
	    (size_t)snprintf(seal, sizeof(seal), AUDIT_SEAL_LABEL "%s",
	    label + n) >= sizeof(seal))
		return KMS_ERR_INVALID_ARGUMENT;
	return hsm_find(s, HSM_OBJ_SECRET_KEY, seal, &ak->key);
}

int
audit_anchor_seal(struct hsm_session *s, const char *label,
    const char *text, size_t len, char **out, size_t *outlen)
{
	struct anchor_key ak;
	int r;

	*out = NULL;
	*outlen = 0;
	if ((r = anchor_key_find(s, label, &ak)) != 0)
		return r;
	return anchor_seal(anchor_key_mac, &ak, label, text, len, out,
	    outlen);
}

int
audit_anchor_open(struct hsm_session *s, const char *label, const char *v,
    size_t len, char **text, size_t *textlen)
{
	struct anchor_key ak;
	int r;

	*text = NULL;
	*textlen = 0;
	/* No seal key for it: no MAC can be right. */
	if ((r = anchor_key_find(s, label, &ak)) != 0)
		return r == KMS_ERR_NOT_FOUND ? KMS_ERR_VERIFY_FAILED : r;
	return anchor_open(anchor_key_mac, &ak, label, v, len, text,
	    textlen);
}

int
audit_key_anchor_get(void *arg, char **value, size_t *len)
{
	struct audit_key *k = arg;
	uint8_t *v = NULL;
	char *e = NULL;
	size_t n = 0;
	int r;

	*value = NULL;
	*len = 0;
	if (k->aget != NULL) {
		if ((r = k->aget(k->aarg, k->anchor_label, &e, &n)) != 0)
			return r;
		r = anchor_open(audit_key_mac, k, k->anchor_label, e, n,
		    value, len);
		free(e);
		if (r == KMS_ERR_VERIFY_FAILED)
			log_error("audit: the anchor %s kept in %s carries no "
			    "valid MAC by the HSM seal key %s: forged or "
			    "damaged in %s", k->anchor_label, k->awhere,
			    k->seal_label, k->awhere);
		return r;
	}
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
	char *v = NULL;
	size_t n = 0;
	int r;

	if (k->aset != NULL) {
		if ((r = anchor_seal(audit_key_mac, k, k->anchor_label, value,
		    len, &v, &n)) == 0)
			r = k->aset(k->aarg, k->anchor_label, v, n);
		free(v);
		return r;
	}
	if (k->anchor == 0)
		return hsm_data_create(k->s, k->anchor_label,
		    (const uint8_t *)value, len, &k->anchor);
	return hsm_data_set(k->s, k->anchor_label, &k->anchor,
	    (const uint8_t *)value, len);
}

void
audit_key_anchor_elsewhere(struct audit_key *k, const char *where,
    audit_anchor_get_fn *get, audit_anchor_set_fn *set, void *arg)
{
	k->awhere = where;
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
