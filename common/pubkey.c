/*
 * pubkey.c: PEM encoding, hashing and signature verification in software.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
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

/*
 * CKA_EC_POINT as the standard and SoftHSM2 give it, a DER OCTET STRING
 * around the point, or as some modules give it, the bare point.  The
 * length of the bare point (want) tells the two apart: an uncompressed
 * point also starts with 0x04.
 */
static int
ec_point(const uint8_t **p, size_t *len, size_t want)
{
	if (*len == want)
		return 0;
	if (*len == want + 2 && want < 0x80 && (*p)[0] == 0x04 &&
	    (*p)[1] == want) {
		*p += 2;
		*len -= 2;
		return 0;
	}
	if (*len == want + 3 && want < 0x100 && (*p)[0] == 0x04 &&
	    (*p)[1] == 0x81 && (*p)[2] == want) {
		*p += 3;
		*len -= 3;
		return 0;
	}
	return KMS_ERR_HSM;
}

/* The key of an OSSL_PARAM list built by bld, of OpenSSL type name. */
static EVP_PKEY *
from_params(const char *name, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;

	if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pk;
}

int
pubkey_spki(const struct kms_alg_info *alg, const uint8_t *a, size_t alen,
    const uint8_t *b, size_t blen, uint8_t **der, size_t *derlen)
{
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pk = NULL;
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	uint8_t *out = NULL;
	const uint8_t *pt = a;
	size_t ptlen = alen;
	int len, r = KMS_ERR_HSM;

	*der = NULL;
	*derlen = 0;
	switch (alg->family) {
	case KMS_FAMILY_EC:
	case KMS_FAMILY_EDDSA:
		/* Ed25519: 32 bytes; EC: 0x04 || X || Y, uncompressed. */
		if ((r = ec_point(&pt, &ptlen, alg->family ==
		    KMS_FAMILY_EDDSA ? 32 : 1 + 2 * ((alg->bits + 7) / 8))) != 0)
			goto out;
		r = KMS_ERR_HSM;
		if (alg->family == KMS_FAMILY_EDDSA) {
			pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519,
			    NULL, pt, ptlen);
			break;
		}
		if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_utf8_string(bld,
		    OSSL_PKEY_PARAM_GROUP_NAME, alg->bits == 256 ?
		    "prime256v1" : "secp384r1", 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld,
		    OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen))
			goto out;
		pk = from_params("EC", bld);
		break;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		if ((bn_n = BN_bin2bn(a, (int)alen, NULL)) == NULL ||
		    (bn_e = BN_bin2bn(b, (int)blen, NULL)) == NULL ||
		    (bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
			goto out;
		pk = from_params("RSA", bld);
		break;
	default:
		r = KMS_ERR_FAILED_PRECONDITION;
		goto out;
	}
	if (pk == NULL || (len = i2d_PUBKEY(pk, &out)) <= 0)
		goto out;
	if ((*der = malloc((size_t)len)) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	memcpy(*der, out, (size_t)len);
	*derlen = (size_t)len;
	r = 0;
 out:
	OPENSSL_free(out);
	EVP_PKEY_free(pk);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	return r;
}

/* Raw r || s to a DER ECDSA-Sig-Value. */
static int
ecdsa_to_der(const uint8_t *raw, size_t rawlen, uint8_t *sig, size_t *siglen)
{
	ECDSA_SIG *es;
	BIGNUM *r, *sv;
	unsigned char *p = sig;
	int len;

	if (rawlen == 0 || rawlen % 2 != 0)
		return KMS_ERR_HSM;
	r = BN_bin2bn(raw, (int)(rawlen / 2), NULL);
	sv = BN_bin2bn(raw + rawlen / 2, (int)(rawlen / 2), NULL);
	if ((es = ECDSA_SIG_new()) == NULL || r == NULL || sv == NULL ||
	    ECDSA_SIG_set0(es, r, sv) != 1) {
		BN_free(r);
		BN_free(sv);
		ECDSA_SIG_free(es);
		return KMS_ERR_NOMEM;
	}
	len = i2d_ECDSA_SIG(es, NULL);
	if (len <= 0 || (size_t)len > *siglen) {
		ECDSA_SIG_free(es);
		return KMS_ERR_INTERNAL;
	}
	len = i2d_ECDSA_SIG(es, &p);
	ECDSA_SIG_free(es);
	*siglen = (size_t)len;
	return 0;
}

int
pubkey_sig_encode(const struct kms_alg_info *alg, const uint8_t *raw,
    size_t rawlen, uint8_t *sig, size_t *siglen)
{
	if (alg->family == KMS_FAMILY_EC)
		return ecdsa_to_der(raw, rawlen, sig, siglen);
	if (rawlen > *siglen)
		return KMS_ERR_INTERNAL;
	memcpy(sig, raw, rawlen);
	*siglen = rawlen;
	return 0;
}

/* How many PEM blocks pem holds. */
static int
pem_blocks(const char *pem)
{
	const char *p;
	int n = 0;

	for (p = pem; (p = strstr(p, "-----BEGIN ")) != NULL; p++)
		n++;
	return n;
}

int
pubkey_chain_leaf(const char *pem, uint8_t **der, size_t *derlen,
    struct kms_status *st)
{
	BIO *bio = NULL;
	X509 *x, *leaf = NULL;
	unsigned char *p = NULL;
	int n, count = 0, r = KMS_ERR_INVALID_ARGUMENT;

	*der = NULL;
	*derlen = 0;
	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (leaf == NULL)
			leaf = x;
		else
			X509_free(x);
		if (++count > PUBKEY_CHAIN_MAX) {
			kms_status_set(st, r, "the chain holds more than %d "
			    "certificates", PUBKEY_CHAIN_MAX);
			goto out;
		}
	}
	ERR_clear_error();
	/* Certificates only: a private key pasted in is refused. */
	if (leaf == NULL || count != pem_blocks(pem)) {
		kms_status_set(st, r, "not a PEM certificate chain");
		goto out;
	}
	/* Encoded straight into the caller's buffer. */
	if ((n = i2d_X509(leaf, NULL)) <= 0 ||
	    (*der = malloc((size_t)n)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	p = *der;
	*derlen = (size_t)i2d_X509(leaf, &p);
	r = 0;
 out:
	X509_free(leaf);
	BIO_free(bio);
	return r;
}

int
pubkey_chain_check(const char *pem, const uint8_t *spki, size_t spkilen,
    struct kms_status *st)
{
	const unsigned char *q;
	unsigned char *key = NULL;
	uint8_t *der = NULL;
	size_t derlen;
	X509 *x = NULL;
	int n, r;

	if ((r = pubkey_chain_leaf(pem, &der, &derlen, st)) != 0)
		return r;
	q = der;
	r = KMS_ERR_INVALID_ARGUMENT;
	if ((x = d2i_X509(NULL, &q, (long)derlen)) == NULL ||
	    (n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &key)) <= 0) {
		kms_status_set(st, r, "the leaf certificate has no readable "
		    "public key");
		goto out;
	}
	if ((size_t)n != spkilen || memcmp(key, spki, spkilen) != 0) {
		kms_status_set(st, r, "the leaf certificate is not for this "
		    "key version: its public key differs");
		goto out;
	}
	r = 0;
 out:
	OPENSSL_free(key);
	X509_free(x);
	free(der);
	return r;
}
