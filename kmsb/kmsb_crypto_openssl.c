/*
 * kmsb_crypto_openssl.c: kmsb_crypto.h on OpenSSL 3, the backend of the
 * host build of the verifier (build/kmsb, the tests).  The only file of
 * the device verifier that includes OpenSSL.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "kmsb_crypto.h"

int
kmsb_c_sha256(const uint8_t *m, size_t len, uint8_t out[32])
{
	unsigned int n = 0;

	if (EVP_Digest(m, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -1;
	return 0;
}

int
kmsb_c_gcm_open(const uint8_t *key, size_t key_len, const uint8_t nonce[12],
    const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
    const uint8_t tag[16], uint8_t *pt)
{
	EVP_CIPHER_CTX *c = NULL;
	const EVP_CIPHER *cipher;
	int n, r = -1;

	if (key_len == 32)
		cipher = EVP_aes_256_gcm();
	else if (key_len == 16)
		cipher = EVP_aes_128_gcm();
	else
		return -1;
	if (ct_len > INT32_MAX || aad_len > INT32_MAX)
		return -1;
	if ((c = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_DecryptInit_ex(c, cipher, NULL, key, nonce) != 1)
		goto out;
	if (aad_len > 0 &&
	    EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) != 1)
		goto out;
	if (ct_len > 0 &&
	    EVP_DecryptUpdate(c, pt, &n, ct, (int)ct_len) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
	    (void *)tag) != 1 ||
	    EVP_DecryptFinal_ex(c, pt + ct_len, &n) != 1)
		goto out;
	r = 0;
 out:
	EVP_CIPHER_CTX_free(c);
	return r;
}

/* One-shot verification with a ready key; md NULL for Ed25519. */
static int
verify_with(EVP_PKEY *pk, const EVP_MD *md, const uint8_t *msg, size_t len,
    const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *c = NULL;
	int r = -1;

	if (pk == NULL || (c = EVP_MD_CTX_new()) == NULL)
		goto out;
	if (EVP_DigestVerifyInit(c, NULL, md, NULL, pk) == 1 &&
	    EVP_DigestVerify(c, sig, sig_len, msg, len) == 1)
		r = 0;
 out:
	EVP_MD_CTX_free(c);
	return r;
}

int
kmsb_c_ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len,
    const uint8_t sig[64])
{
	EVP_PKEY *pk;
	int r;

	pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
	r = verify_with(pk, NULL, msg, len, sig, 64);
	EVP_PKEY_free(pk);
	return r;
}

int
kmsb_c_p256_verify(const uint8_t pub[65], const uint8_t *msg, size_t len,
    const uint8_t *sig, size_t sig_len)
{
	/* SubjectPublicKeyInfo of id-ecPublicKey, prime256v1, before the point. */
	static const uint8_t spki_prefix[26] = {
		0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
		0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
		0x03, 0x01, 0x07, 0x03, 0x42, 0x00
	};
	uint8_t der[sizeof(spki_prefix) + 65];
	const unsigned char *p = der;
	EVP_PKEY *pk;
	int r;

	if (pub[0] != 0x04)
		return -1;
	memcpy(der, spki_prefix, sizeof(spki_prefix));
	memcpy(der + sizeof(spki_prefix), pub, 65);
	pk = d2i_PUBKEY(NULL, &p, sizeof(der));
	r = verify_with(pk, EVP_sha256(), msg, len, sig, sig_len);
	EVP_PKEY_free(pk);
	return r;
}

int
kmsb_c_x25519(uint8_t out[32], const uint8_t sk[32], const uint8_t pk[32])
{
	static const uint8_t zero[32];
	EVP_PKEY *priv = NULL, *peer = NULL;
	EVP_PKEY_CTX *c = NULL;
	size_t n = 32;
	int r = -1;

	if ((priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk,
	    32)) == NULL)
		goto out;
	/* The base point: the public key, which OpenSSL computes itself. */
	if (pk[0] == 9 && CRYPTO_memcmp(pk + 1, zero, 31) == 0) {
		if (EVP_PKEY_get_raw_public_key(priv, out, &n) != 1 || n != 32)
			goto out;
		r = 0;
		goto out;
	}
	if ((peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pk,
	    32)) == NULL ||
	    (c = EVP_PKEY_CTX_new(priv, NULL)) == NULL ||
	    EVP_PKEY_derive_init(c) != 1 ||
	    EVP_PKEY_derive_set_peer(c, peer) != 1 ||
	    EVP_PKEY_derive(c, out, &n) != 1 || n != 32)
		goto out;
	if (CRYPTO_memcmp(out, zero, 32) == 0)
		goto out;
	r = 0;
 out:
	if (r != 0)
		OPENSSL_cleanse(out, 32);
	EVP_PKEY_CTX_free(c);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(priv);
	return r;
}

/* HKDF-SHA256 in one mode, through EVP_KDF "HKDF". */
static int
hkdf(int mode, const uint8_t *salt, size_t salt_len, const uint8_t *key,
    size_t key_len, const uint8_t *info, size_t info_len, uint8_t *out,
    size_t out_len)
{
	static const uint8_t empty[1];
	OSSL_PARAM params[6], *p = params;
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *c = NULL;
	int r = -1;

	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL ||
	    (c = EVP_KDF_CTX_new(kdf)) == NULL)
		goto out;
	*p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	/* An empty IKM or salt is legal HKDF; OpenSSL wants a pointer. */
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
	    (void *)(key_len ? key : empty), key_len);
	if (mode == EVP_KDF_HKDF_MODE_EXTRACT_ONLY)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
		    (void *)(salt_len ? salt : empty), salt_len);
	else if (info_len > 0)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
		    (void *)info, info_len);
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(c, out, out_len, params) == 1)
		r = 0;
 out:
	EVP_KDF_CTX_free(c);
	EVP_KDF_free(kdf);
	return r;
}

int
kmsb_c_hkdf_extract(const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
    size_t ikm_len, uint8_t prk[32])
{
	return hkdf(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, salt, salt_len, ikm,
	    ikm_len, NULL, 0, prk, 32);
}

int
kmsb_c_hkdf_expand(const uint8_t prk[32], const uint8_t *info,
    size_t info_len, uint8_t *out, size_t out_len)
{
	if (out_len == 0 || out_len > 255 * 32)
		return -1;
	return hkdf(EVP_KDF_HKDF_MODE_EXPAND_ONLY, NULL, 0, prk, 32, info,
	    info_len, out, out_len);
}

int
kmsb_c_memcmp(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0 ? 0 : -1;
}

void
kmsb_c_wipe(void *p, size_t len)
{
	if (p != NULL)
		OPENSSL_cleanse(p, len);
}
