/*
 * keystore_ops.c: what keys do (see keystore.h): sign, give their public
 * key, wrap and unwrap in the blob format of keystore.h.  A version's
 * HSM objects are looked up on first use and their handles cached; a
 * handle the HSM calls stale is looked up again once.
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hsm.h"
#include "keystore.h"
#include "keystore_int.h"
#include "kmserr.h"
#include "log.h"
#include "pubkey.h"
#include "secret.h"

#define FIND_TRIES 2			/* x FIND_PAUSE_MS: a version made */
#define FIND_PAUSE_MS 25		/* a moment ago elsewhere */

/*
 * The document of key name as the store has it now, read without the
 * key's lock, into the cache.
 */
static int
entry_reload(struct keystore *ks, struct hsm_session *s, const char *name,
    struct kms_status *st)
{
	struct store_doc d;
	struct ks_entry *e;
	int r;

	if ((r = store_get(ks->store, s, name, NULL, 0, &d, st)) != 0)
		return r;
	r = ks_entry_decode(name, &d.at, d.value, d.len, &e, st);
	store_doc_clear(&d);
	if (r == 0)
		r = ks_install(ks, e);
	return r;
}

/*
 * Gives the cached handle of a version's private (want_pub 0) or public
 * (want_pub 1) object, looking it up on the token when it is not known yet
 * or when refresh is set (the HSM called the cached one stale).
 */
static int
version_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, int want_pub, int refresh,
    const struct kms_alg_info **alg, hsm_handle_t *out,
    struct kms_status *st)
{
	struct ks_entry *e;
	char label[KM_LABEL_MAX];
	enum hsm_obj_class cls;
	hsm_handle_t h = 0;
	size_t i;
	int r, tries;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = ks_resolve_locked(ks, name, version, &e, &i, st)) == 0) {
		*alg = e->m.alg;
		h = want_pub ? e->c[i].pub : e->c[i].priv;
		memcpy(label, e->m.v[i].label, sizeof(label));
	}
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0)
		return r;
	if (h != 0 && !refresh) {
		*out = h;
		return 0;
	}
	cls = want_pub ? HSM_OBJ_PUBLIC_KEY : (*alg)->can_wrap ?
	    HSM_OBJ_SECRET_KEY : HSM_OBJ_PRIVATE_KEY;
	/* A version made a moment ago by another instance may hide briefly. */
	for (tries = 0; (r = hsm_find(s, cls, label, &h)) ==
	    KMS_ERR_NOT_FOUND && tries < FIND_TRIES; tries++)
		clock_pause_ms(FIND_PAUSE_MS);
	if (r == KMS_ERR_NOT_FOUND && entry_reload(ks, s, name, st) == 0) {
		/* Destroyed by another instance?  Its document says so. */
		pthread_rwlock_rdlock(&ks->lock);
		r = ks_resolve_locked(ks, name, version, &e, &i, st);
		pthread_rwlock_unlock(&ks->lock);
		if (r != 0)
			return r;
		r = KMS_ERR_NOT_FOUND;
	}
	if (r != 0)
		return kms_status_set(st, r == KMS_ERR_NOT_FOUND ?
		    KMS_ERR_UNAVAILABLE : r, "version %u of key \"%s\": its "
		    "HSM object cannot be found (%s)", version, name,
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (ks_resolve_locked(ks, name, version, &e, &i, st) == 0) {
		if (want_pub)
			e->c[i].pub = h;
		else
			e->c[i].priv = h;
	}
	pthread_rwlock_unlock(&ks->lock);
	*out = h;
	return 0;
}

int
keystore_sign(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	uint8_t raw[HSM_SIG_MAX];
	hsm_handle_t h;
	size_t rawlen = 0;
	int r, attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, 0,
		    attempt > 0, &alg, &h, st)) != 0)
			return r;
		if (!alg->can_sign)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "key \"%s\" is an %s key and cannot sign", name,
			    alg->name);
		rawlen = sizeof(raw);
		r = hsm_sign(s, alg, h, in, inlen, raw, &rawlen);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r == 0)
		r = pubkey_sig_encode(alg, raw, rawlen, sig, siglen);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not sign: %s",
		    kms_strerror(r));
	return 0;
}

int
keystore_public_key(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, uint8_t **der, size_t *derlen,
    struct kms_status *st)
{
	const struct kms_alg_info *alg;
	struct hsm_pubkey pk;
	struct ks_vcache *c;
	struct ks_entry *e;
	uint8_t *buf = NULL;
	hsm_handle_t h;
	size_t len = 0, i;
	int r, attempt;

	*der = NULL;
	*derlen = 0;
	pthread_rwlock_rdlock(&ks->lock);
	if ((r = ks_resolve_locked(ks, name, version, &e, &i, st)) == 0 &&
	    (c = &e->c[i])->spki != NULL) {
		if ((buf = malloc(c->spki_len)) == NULL)
			r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		else {
			memcpy(buf, c->spki, c->spki_len);
			len = c->spki_len;
		}
	} else if (r == 0 && e->m.alg->can_wrap)
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is a symmetric %s key: it has no public key",
		    name, e->m.alg->name);
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0 || buf != NULL)
		goto done;
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, 1,
		    attempt > 0, &alg, &h, st)) != 0)
			return r;
		if ((r = hsm_public_key(s, alg, h, &pk)) == 0) {
			r = pubkey_spki(alg, pk.a, pk.alen, pk.b, pk.blen,
			    &buf, &len);
			hsm_pubkey_clear(&pk);
		}
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot read the public key: %s",
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (ks_resolve_locked(ks, name, version, &e, &i, st) == 0 &&
	    (c = &e->c[i])->spki == NULL &&
	    (c->spki = malloc(len)) != NULL) {
		memcpy(c->spki, buf, len);
		c->spki_len = len;
	}
	pthread_rwlock_unlock(&ks->lock);
	kms_status_clear(st);
 done:
	if (r != 0)
		return r;
	*der = buf;
	*derlen = len;
	return 0;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Finds the secret key of a resolved version that can wrap. */
static int
wrap_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, int refresh, hsm_handle_t *h, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	int r;

	if ((r = version_handle(ks, s, name, version, 0, refresh, &alg, h, st)) != 0)
		return r;
	if (!alg->can_wrap)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key and cannot wrap: use an "
		    "AES_256_KWP key", name, alg->name);
	return 0;
}

int
keystore_wrap(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, const uint8_t *in, size_t inlen, uint8_t **blob,
    size_t *bloblen, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	uint8_t *inner = NULL, *out = NULL;
	unsigned long mech = 0;
	hsm_handle_t h;
	size_t outlen = 0;
	int r = 0, attempt;

	*blob = NULL;
	*bloblen = 0;
	if (inlen == 0 || inlen > KS_WRAP_MAX_PLAINTEXT)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "plaintext "
		    "must be 1 to %d bytes, not %zu", KS_WRAP_MAX_PLAINTEXT,
		    inlen);
	/* The blob names its version: 0, the primary, is resolved first. */
	if (version == 0 && (r = keystore_resolve(ks, name, 0, &alg,
	    &version, st)) != 0)
		return r;
	if ((inner = malloc(inlen + 4)) == NULL ||
	    (out = malloc(KS_WRAP_MAX_BLOB)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	put_be32(inner, (uint32_t)inlen);
	memcpy(inner + 4, in, inlen);
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			goto out;
		outlen = KS_WRAP_MAX_BLOB - KS_WRAP_HEADER;
		r = hsm_wrap(s, h, inner, inlen + 4, out + KS_WRAP_HEADER,
		    &outlen, &mech);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0) {
		kms_status_set(st, r, "the HSM could not wrap: %s",
		    kms_strerror(r));
		goto out;
	}
	out[0] = 0x01;
	put_be32(out + 1, version);
	put_be32(out + 5, (uint32_t)mech);
	*blob = out;
	*bloblen = KS_WRAP_HEADER + outlen;
	out = NULL;
 out:
	secret_freezero(inner, inner == NULL ? 0 : inlen + 4);
	free(out);
	return r;
}

int
keystore_blob_version(const uint8_t *blob, size_t len, uint32_t *version,
    struct kms_status *st)
{
	/* A KWP output is at least 16 bytes and a multiple of 8. */
	if (len < KS_WRAP_HEADER + 16 || len > KS_WRAP_MAX_BLOB ||
	    (len - KS_WRAP_HEADER) % 8 != 0 || blob[0] != 0x01 ||
	    get_be32(blob + 1) == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "not a "
		    "wrapped blob made by kms (bad header or length)");
	*version = get_be32(blob + 1);
	return 0;
}

int
keystore_unwrap(struct keystore *ks, struct hsm_session *s, const char *name,
    const uint8_t *blob, size_t len, struct secret **out,
    struct kms_status *st)
{
	struct secret *inner = NULL, *plain = NULL;
	uint32_t version, plen;
	hsm_handle_t h;
	size_t i;
	int r = 0, attempt;

	*out = NULL;
	if ((r = keystore_blob_version(blob, len, &version, st)) != 0)
		return r;
	/* Only the AES key wrap mechanisms (RFC 5649, 0x210A or 0x210B). */
	if (get_be32(blob + 5) != 0x210A && get_be32(blob + 5) != 0x210B)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob names an unknown mechanism 0x%x",
		    (unsigned int)get_be32(blob + 5));
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			return r;
		r = hsm_unwrap(s, h, get_be32(blob + 5), blob + KS_WRAP_HEADER,
		    len - KS_WRAP_HEADER, &inner);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r == KMS_ERR_VERIFY_FAILED)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob does not unwrap with version %u of key "
		    "\"%s\": it was changed, truncated or made with another "
		    "key", version, name);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not unwrap: %s",
		    kms_strerror(r));
	/*
	 * The inner length must fit, and the rest be the zero padding that
	 * SoftHSM2 leaves (other modules strip it).
	 */
	r = KMS_ERR_INVALID_ARGUMENT;
	if (inner->len < 4 || (plen = get_be32(inner->buf)) == 0 ||
	    plen > inner->len - 4 || inner->len - 4 - plen >= 8)
		goto bad;
	for (i = 4 + plen; i < inner->len; i++)
		if (inner->buf[i] != 0)
			goto bad;
	if ((plain = secret_new(plen)) == NULL) {
		secret_free(inner);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	memcpy(plain->buf, inner->buf + 4, plen);
	secret_free(inner);
	*out = plain;
	return 0;
 bad:
	secret_free(inner);
	return kms_status_set(st, r, "the wrapped blob is malformed inside");
}
