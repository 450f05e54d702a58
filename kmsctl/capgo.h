/*
 * capgo.h: Capgo-compatible encrypted bundles ("encryption v2" with the
 * V3 checksum of @capgo/cli and @capgo/capacitor-updater).
 *
 * A bundle is a zip encrypted with AES-128-CBC (PKCS#7) under a fresh
 * session key; the session key and the SHA-256 of the plaintext are each
 * put through an RSA-2048 PKCS#1 v1.5 type-1 private-key operation over
 * the raw bytes (no DigestInfo), which is what kms does with an
 * RSA_RAW_PKCS1_2048 key.  Nothing here talks to a server: the caller
 * passes a function that performs that operation.  Everything streams
 * through fixed buffers, whatever the size of the bundle.
 */
#ifndef KMS_CAPGO_H
#define KMS_CAPGO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "kmserr.h"

#define CAPGO_RSA_LEN		256	/* the device accepts RSA-2048 only */
#define CAPGO_KEY_LEN		16	/* AES-128 session key */
#define CAPGO_IV_LEN		16
#define CAPGO_SUM_LEN		32	/* SHA-256 */
/* base64(IV) ":" base64(256-byte block), NUL-terminated. */
#define CAPGO_IVSK_MAX		(24 + 1 + 344 + 1)
#define CAPGO_CHECKSUM_HEX_LEN	(2 * CAPGO_RSA_LEN)
#define CAPGO_ZIP_MAGIC_LEN	4
#define CAPGO_PEM_MAX		(64 * 1024)

/*
 * Performs the RSA PKCS#1 v1.5 type-1 private-key operation over the raw
 * inlen bytes (16 or 32) and writes the CAPGO_RSA_LEN-byte result to sig.
 * Returns 0 or a negative KMS_ERR_* with st set.
 */
typedef int (*capgo_sign_fn)(void *arg, const uint8_t *in, size_t inlen,
    uint8_t sig[CAPGO_RSA_LEN], struct kms_status *st);

/* What an encryption produced: the two strings Capgo's upload takes. */
struct capgo_sealed {
	char iv_session_key[CAPGO_IVSK_MAX];
	char checksum[CAPGO_CHECKSUM_HEX_LEN + 1];	/* lowercase hex */
	uint64_t plain_len;
	uint64_t cipher_len;
};

/* 1 when head starts with a zip local file header ("PK\3\4"), else 0. */
int capgo_is_zip(const uint8_t *head, size_t len);

/*
 * Who protects the session key and the checksum.  prepare (may be NULL)
 * runs once on the calling thread while the bundle is already being
 * encrypted on another, so that getting ready to sign (for kms: checking
 * the key, fetching the public key of the version that will sign) costs
 * no time of its own; it may set *check to that public key (the signer
 * keeps ownership).  sign runs on the calling thread as well.
 */
struct capgo_signer {
	int (*prepare)(void *arg, EVP_PKEY **check, struct kms_status *st);
	capgo_sign_fn sign;
	void *arg;
};

/*
 * Encrypts all of in into out with a fresh random session key and IV,
 * hashing the plaintext in the same pass, and has the signer protect the
 * session key and the checksum.  When prepare gave a check key, both
 * results are verified with it before success is reported, so that a
 * wrong key or a faulty signer never produces a bundle that devices would
 * reject.  On failure out holds an unfinished ciphertext: the caller
 * discards it.  The session key is wiped before return.  Returns 0,
 * KMS_ERR_IO (read or write error), KMS_ERR_VERIFY_FAILED (the check key
 * did not verify) or the signer's error.
 */
int capgo_encrypt(FILE *in, FILE *out, const struct capgo_signer *signer,
    struct capgo_sealed *res, struct kms_status *st);

/*
 * Reads an RSA-2048 public key from a PEM in pem[0..len): PKCS#1
 * ("BEGIN RSA PUBLIC KEY", what apps embed) or SubjectPublicKeyInfo.
 * Returns 0 with *pk set (free with EVP_PKEY_free) or
 * KMS_ERR_INVALID_ARGUMENT.
 */
int capgo_pubkey_from_pem(const char *pem, size_t len, EVP_PKEY **pk,
    struct kms_status *st);

/*
 * Does what a device does with a bundle: recovers the session key from
 * iv_session_key and the checksum from checksum (512 hex characters)
 * with the public key pub, decrypts in into out (out may be NULL: check
 * only) and compares the SHA-256 of the plaintext with the checksum.
 * out receives plaintext before the comparison is made: the caller must
 * discard it unless 0 is returned.  Returns 0 when the bundle is
 * authentic, KMS_ERR_VERIFY_FAILED when it is not (bad RSA block, bad
 * padding, checksum mismatch), KMS_ERR_INVALID_ARGUMENT for malformed
 * strings, KMS_ERR_IO for read or write errors.
 */
int capgo_decrypt(FILE *in, FILE *out, EVP_PKEY *pub,
    const char *iv_session_key, const char *checksum, uint64_t *plain_len,
    struct kms_status *st);

#endif /* KMS_CAPGO_H */
