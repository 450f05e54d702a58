/*
 * pubkey.c: PEM encoding, hashing and signature verification in software.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "kmserr.h"
#include "pubkey.h"

static EVP_PKEY *
load_spki(const uint8_t *der, size_t derlen)
{
	const unsigned char *p = der;

	return d2i_PUBKEY(NULL, &p, (long)derlen);
}

int
pubkey_pem(const uint8_t *der, size_t derlen, char **pem)
{
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	char *data;
	long len;
	int r = KMS_ERR_INTERNAL;

	*pem = NULL;
	if ((pk = load_spki(der, derlen)) == NULL ||
	    (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PUBKEY(bio, pk) != 1)
		goto out;
	if ((len = BIO_get_mem_data(bio, &data)) <= 0)
		goto out;
	if ((*pem = malloc((size_t)len + 1)) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	memcpy(*pem, data, (size_t)len);
	(*pem)[len] = '\0';
	r = 0;
 out:
	BIO_free(bio);
	EVP_PKEY_free(pk);
	return r;
}

static const EVP_MD *
hash_md(enum kms_hash h)
{
	switch (h) {
	case KMS_HASH_SHA256:
		return EVP_sha256();
	case KMS_HASH_SHA384:
		return EVP_sha384();
	default:
		return NULL;
	}
}

int
pubkey_hash(enum kms_hash h, const uint8_t *data, size_t len, uint8_t *out)
{
	const EVP_MD *md = hash_md(h);
	unsigned int n;

	if (md == NULL || EVP_Digest(data, len, out, &n, md, NULL) != 1)
		return KMS_ERR_INTERNAL;
	return 0;
}

int
pubkey_verify(const struct kms_alg_info *alg, const uint8_t *der,
    size_t derlen, const uint8_t *in, size_t inlen,
    const uint8_t *sig, size_t siglen, int *valid)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_MD_CTX *mctx = NULL;
	uint8_t rec[1024];
	size_t reclen = sizeof(rec);
	int r = KMS_ERR_INTERNAL;

	*valid = 0;
	if ((pk = load_spki(der, derlen)) == NULL)
		goto out;
	if (alg->family == KMS_FAMILY_EDDSA) {
		if ((mctx = EVP_MD_CTX_new()) == NULL ||
		    EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, pk) != 1)
			goto out;
		*valid = EVP_DigestVerify(mctx, sig, siglen, in, inlen) == 1;
		r = 0;
		goto out;
	}
	if ((ctx = EVP_PKEY_CTX_new(pk, NULL)) == NULL)
		goto out;
	switch (alg->family) {
	case KMS_FAMILY_EC:
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
		if (EVP_PKEY_verify_init(ctx) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(ctx, hash_md(alg->hash)) != 1)
			goto out;
		if (alg->family == KMS_FAMILY_RSA_PKCS1 &&
		    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)
			goto out;
		if (alg->family == KMS_FAMILY_RSA_PSS &&
		    (EVP_PKEY_CTX_set_rsa_padding(ctx,
		    RSA_PKCS1_PSS_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx,
		    (int)kms_hash_len(alg->hash)) != 1 ||
		    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx,
		    hash_md(alg->hash)) != 1))
			goto out;
		*valid = EVP_PKEY_verify(ctx, sig, siglen, in, inlen) == 1;
		break;
	case KMS_FAMILY_RSA_RAW:
		if (EVP_PKEY_verify_recover_init(ctx) != 1 ||
		    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)
			goto out;
		*valid = EVP_PKEY_verify_recover(ctx, rec, &reclen, sig,
		    siglen) == 1 && reclen == inlen &&
		    CRYPTO_memcmp(rec, in, inlen) == 0;
		break;
	default:
		r = KMS_ERR_FAILED_PRECONDITION;
		goto out;
	}
	r = 0;
 out:
	EVP_MD_CTX_free(mctx);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return r;
}
