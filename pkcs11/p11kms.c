/*
 * p11kms.c: the PKCS#11 module's calls to kmsd (see p11kms.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kms/v1/kms.pb-c.h"

#include "algo.h"
#include "kmsclient.h"
#include "kmserr.h"
#include "p11err.h"
#include "p11kms.h"
#include "p11mech.h"
#include "p11obj.h"
#include "pubkey.h"

/* The RPC's failure as a CK_RV, with kmsd's reason on stderr. */
static CK_RV
failed(const char *what, const char *name, int r,
    const struct kmsclient_result *res, const struct kms_status *st)
{
	fprintf(stderr, "kms-pkcs11: %s%s%s: %s\n", what,
	    name != NULL ? " " : "", name != NULL ? name : "",
	    st->msg[0] != '\0' ? st->msg : kms_strerror(r));
	return p11_rv_of(r, res->transport);
}

/* DER SubjectPublicKeyInfo of a PEM public key; *der is OpenSSL's. */
static int
spki_der(const char *pem, uint8_t **der, size_t *len)
{
	BIO *bio;
	EVP_PKEY *pk = NULL;
	int n;

	*der = NULL;
	*len = 0;
	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return KMS_ERR_NOMEM;
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (pk == NULL)
		return KMS_ERR_INVALID_ARGUMENT;
	n = i2d_PUBKEY(pk, der);
	EVP_PKEY_free(pk);
	if (n <= 0)
		return KMS_ERR_INVALID_ARGUMENT;
	*len = (size_t)n;
	return 0;
}

/*
 * The object of one listed key: its primary version's public key.  A key
 * the identity may not read is skipped (*out stays NULL, CKR_OK).
 */
static CK_RV
load_key(struct kmsclient *c, const Kms__V1__Key *key, struct p11_key **out)
{
	Kms__V1__GetPublicKeyRequest req;
	Kms__V1__PublicKey *pub = NULL;
	struct kmsclient_result res;
	struct kms_status st;
	const struct kms_alg_info *alg;
	uint8_t *der = NULL, *leaf = NULL;
	size_t derlen, leaflen;
	CK_RV rv = CKR_OK;
	int r;

	*out = NULL;
	if ((alg = kms_alg_lookup(key->algorithm)) == NULL || !alg->can_sign)
		return CKR_OK;
	kms__v1__get_public_key_request__init(&req);
	req.name = key->name;
	req.version = key->primary_version;
	kms_status_clear(&st);
	if ((r = kmsclient_call(c, "GetPublicKey", &req.base,
	    &kms__v1__public_key__descriptor, (ProtobufCMessage **)&pub,
	    &res, &st)) != 0) {
		/* Not this identity's to see, or gone since the listing. */
		if (!res.transport && (r == KMS_ERR_PERMISSION_DENIED ||
		    r == KMS_ERR_NOT_FOUND || r == KMS_ERR_FAILED_PRECONDITION))
			return CKR_OK;
		return failed("GetPublicKey", key->name, r, &res, &st);
	}
	if (spki_der(pub->pem, &der, &derlen) != 0 ||
	    p11_key_new(key->name, alg, pub->version, der, derlen, out) != 0) {
		fprintf(stderr, "kms-pkcs11: %s: kmsd sent a public key that "
		    "is not a %s key\n", key->name, alg->name);
		rv = CKR_DEVICE_ERROR;
	}
	OPENSSL_free(der);
	/* The leaf of an attached chain; one that does not fit is left out. */
	if (rv == CKR_OK && *pub->cert_chain_pem != '\0' &&
	    (pubkey_chain_leaf(pub->cert_chain_pem, &leaf, &leaflen,
	    &st) != 0 || p11_key_set_cert(*out, leaf, leaflen) != 0))
		fprintf(stderr, "kms-pkcs11: %s: the attached certificate "
		    "chain is not usable\n", key->name);
	free(leaf);
	protobuf_c_message_free_unpacked(&pub->base, NULL);
	return rv;
}

CK_RV
p11kms_list(struct kmsclient *c, const char *prefix, struct p11_key ***keys,
    size_t *n)
{
	Kms__V1__ListKeysRequest req;
	Kms__V1__ListKeysResponse *resp = NULL;
	struct kmsclient_result res;
	struct kms_status st;
	struct p11_key **list = NULL, *k;
	size_t i, cnt = 0;
	CK_RV rv;
	int r;

	*keys = NULL;
	*n = 0;
	kms__v1__list_keys_request__init(&req);
	req.prefix = (char *)prefix;
	kms_status_clear(&st);
	if ((r = kmsclient_call(c, "ListKeys", &req.base,
	    &kms__v1__list_keys_response__descriptor,
	    (ProtobufCMessage **)&resp, &res, &st)) != 0)
		return failed("ListKeys", NULL, r, &res, &st);
	if (resp->n_keys > P11KMS_KEYS_MAX) {
		rv = CKR_DEVICE_ERROR;
		goto out;
	}
	if (resp->n_keys > 0 &&
	    (list = calloc(resp->n_keys, sizeof(*list))) == NULL) {
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	for (i = 0; i < resp->n_keys; i++) {
		if ((rv = load_key(c, resp->keys[i], &k)) != CKR_OK)
			goto out;
		if (k != NULL)
			list[cnt++] = k;
	}
	*keys = list;
	*n = cnt;
	list = NULL;
	cnt = 0;
	rv = CKR_OK;
 out:
	for (i = 0; i < cnt; i++)
		p11_key_free(list[i]);
	free(list);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return rv;
}

CK_RV
p11kms_sign(struct kmsclient *c, const char *name, uint32_t version,
    const struct kms_alg_info *alg, const struct p11_input *in,
    uint8_t *sig, size_t *siglen)
{
	Kms__V1__SignRequest req;
	Kms__V1__SignResponse *resp = NULL;
	struct kmsclient_result res;
	struct kms_status st;
	size_t want = p11_sig_len(alg);
	CK_RV rv = CKR_DEVICE_ERROR;
	int r;

	*siglen = 0;
	kms__v1__sign_request__init(&req);
	req.name = (char *)name;
	req.version = version;
	if (in->as_data) {
		req.data.data = (uint8_t *)in->p;
		req.data.len = in->len;
	} else {
		req.digest.data = (uint8_t *)in->p;
		req.digest.len = in->len;
	}
	kms_status_clear(&st);
	if ((r = kmsclient_call(c, "Sign", &req.base,
	    &kms__v1__sign_response__descriptor, (ProtobufCMessage **)&resp,
	    &res, &st)) != 0)
		return failed("Sign", name, r, &res, &st);
	if (resp->version != version || (int)resp->algorithm != (int)alg->alg)
		goto out;
	if (alg->family == KMS_FAMILY_EC) {
		if (p11_ecdsa_der_to_raw(resp->signature.data,
		    resp->signature.len, want / 2, sig) != 0)
			goto out;
	} else {
		if (resp->signature.len != want)
			goto out;
		memcpy(sig, resp->signature.data, want);
	}
	*siglen = want;
	rv = CKR_OK;
 out:
	if (rv != CKR_OK)
		fprintf(stderr, "kms-pkcs11: Sign %s: kmsd's reply is not a "
		    "%s signature of version %u\n", name, alg->name,
		    (unsigned)version);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return rv;
}
