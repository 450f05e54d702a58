/*
 * h_crypto.c: the handlers of key operations: Sign, Verify, Wrap, Unwrap,
 * GenerateDataKey.  The gate has checked the caller, the key name and the
 * grant, and wipes the plaintext of Wrap's request and of Unwrap's and
 * GenerateDataKey's replies (GATE_SECRET_IN, GATE_SECRET_OUT).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "config.h"
#include "handlers.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "names.h"
#include "pubkey.h"
#include "secret.h"

#include "kms/v1/kms.pb-c.h"

#define DATA_KEY_DEFAULT 32
#define DATA_KEY_MAX 1024

/*
 * Resolves the version of a Sign or Verify request and turns its digest
 * or data into what the HSM signs: the digest as given, the hash of data,
 * or data itself (Ed25519, RSA_RAW).  Records the SHA-256 of the caller's
 * input for the audit log.  *in points into the request or into md (at
 * least 64 bytes).
 */
static int
signing_input(struct call *c, const char *name, uint32_t version,
    const ProtobufCBinaryData *digest, const ProtobufCBinaryData *data,
    const struct kms_alg_info **algp, uint8_t *md, const uint8_t **in,
    size_t *inlen)
{
	const ProtobufCBinaryData *given;
	const struct kms_alg_info *alg;
	int r;

	if ((r = keystore_resolve(c->svc->ks, name, version, algp,
	    &c->version, &c->st)) != 0)
		return r;
	alg = *algp;
	if ((r = names_check_sign_input(alg, digest->len, data->len,
	    c->svc->cfg->max_data_bytes, &c->st)) != 0)
		return r;
	given = digest->len > 0 ? digest : data;
	call_hash(c, given->data, given->len);
	if (given == data && alg->hash != KMS_HASH_NONE) {
		if ((r = pubkey_hash(alg->hash, data->data, data->len,
		    md)) != 0)
			return kms_status_set(&c->st, r, "cannot hash data");
		*in = md;
		*inlen = kms_hash_len(alg->hash);
		return 0;
	}
	*in = given->data;
	*inlen = given->len;
	return 0;
}

int
h_sign(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__SignRequest *req = rq;
	Kms__V1__SignResponse *resp = rs;
	const struct kms_alg_info *alg;
	uint8_t md[64];
	const uint8_t *in;
	size_t inlen;
	int r;

	if ((r = signing_input(c, req->name, req->version, &req->digest,
	    &req->data, &alg, md, &in, &inlen)) != 0)
		return r;
	if ((resp->signature.data = malloc(HSM_SIG_MAX)) == NULL)
		return call_nomem(c);
	resp->signature.len = HSM_SIG_MAX;
	if ((r = keystore_sign(c->svc->ks, c->hs, req->name, c->version, in,
	    inlen, resp->signature.data, &resp->signature.len,
	    &c->st)) != 0)
		return r;
	resp->version = c->version;
	resp->algorithm = (Kms__V1__Algorithm)alg->alg;
	return 0;
}

int
h_verify(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__VerifyRequest *req = rq;
	Kms__V1__VerifyResponse *resp = rs;
	const struct kms_alg_info *alg;
	uint8_t md[64], *der = NULL;
	const uint8_t *in;
	size_t inlen, derlen;
	int r, valid = 0;

	if ((r = signing_input(c, req->name, req->version, &req->digest,
	    &req->data, &alg, md, &in, &inlen)) != 0 ||
	    (r = keystore_public_key(c->svc->ks, c->hs, req->name,
	    c->version, &der, &derlen, &c->st)) != 0)
		return r;
	if (req->signature.len == 0 || req->signature.len > HSM_SIG_MAX)
		r = kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "signature must be 1 to %d bytes", HSM_SIG_MAX);
	else if (pubkey_verify(alg, der, derlen, in, inlen,
	    req->signature.data, req->signature.len, &valid) != 0)
		r = kms_status_set(&c->st, KMS_ERR_INTERNAL,
		    "cannot check the signature");
	resp->valid = valid;
	resp->version = c->version;
	free(der);
	return r;
}

/* Checks that key name is a wrapping key and resolves its version. */
static int
resolve_wrap_key(struct call *c, const char *name, uint32_t version)
{
	const struct kms_alg_info *alg;
	int r;

	if ((r = keystore_resolve(c->svc->ks, name, version,
	    &alg, &c->version, &c->st)) != 0)
		return r;
	if (!alg->can_wrap)
		return kms_status_set(&c->st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key and cannot wrap: use an "
		    "AES_256_KWP key", name, alg->name);
	return 0;
}

/* The request's plaintext is wiped by the gate, never hashed. */
int
h_wrap(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__WrapRequest *req = rq;
	Kms__V1__WrapResponse *resp = rs;
	int r;

	if ((r = resolve_wrap_key(c, req->name, 0)) != 0 ||
	    (r = keystore_wrap(c->svc->ks, c->hs, req->name, c->version,
	    req->plaintext.data, req->plaintext.len, &resp->wrapped.data,
	    &resp->wrapped.len, &c->st)) != 0)
		return r;
	resp->version = c->version;
	return 0;
}

int
h_unwrap(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__UnwrapRequest *req = rq;
	Kms__V1__UnwrapResponse *resp = rs;
	struct secret *plain = NULL;
	uint32_t version;
	int r;

	if ((r = resolve_wrap_key(c, req->name, 0)) != 0 ||
	    (r = keystore_blob_version(req->wrapped.data, req->wrapped.len,
	    &version, &c->st)) != 0)
		return r;
	/* The key exists: a version it lacks means a tampered blob. */
	if ((r = resolve_wrap_key(c, req->name, version)) != 0) {
		if (c->st.err == KMS_ERR_NOT_FOUND)
			r = kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
			    "the wrapped blob names version %u, which key "
			    "\"%s\" does not have: it was changed or made with "
			    "another key", version, req->name);
		return r;
	}
	if ((r = keystore_unwrap(c->svc->ks, c->hs, req->name,
	    req->wrapped.data, req->wrapped.len, &plain, &c->st)) != 0)
		return r;
	/* The reply takes the buffer; the gate wipes it (GATE_SECRET_OUT). */
	resp->plaintext.data = plain->buf;
	resp->plaintext.len = plain->len;
	free(plain);
	resp->version = c->version;
	return 0;
}

int
h_generate_data_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__GenerateDataKeyRequest *req = rq;
	Kms__V1__GenerateDataKeyResponse *resp = rs;
	size_t n = req->length == 0 ? DATA_KEY_DEFAULT : req->length;
	int r;

	if ((r = resolve_wrap_key(c, req->name, 0)) != 0)
		return r;
	if (n > DATA_KEY_MAX)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "length must be 1 to %d bytes", DATA_KEY_MAX);
	/* The data key comes from the token's generator. */
	if ((resp->plaintext.data = calloc(1, n)) == NULL)
		return call_nomem(c);
	resp->plaintext.len = n;
	if ((r = hsm_random(c->hs, resp->plaintext.data, n)) != 0)
		return kms_status_set(&c->st, r, "the HSM could not make "
		    "random bytes: %s", kms_strerror(r));
	if ((r = keystore_wrap(c->svc->ks, c->hs, req->name, c->version,
	    resp->plaintext.data, n, &resp->wrapped.data, &resp->wrapped.len,
	    &c->st)) != 0)
		return r;
	call_hash(c, resp->wrapped.data, resp->wrapped.len);
	resp->version = c->version;
	return 0;
}
