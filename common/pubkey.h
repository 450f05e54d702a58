/*
 * pubkey.h: public-key work done in software with OpenSSL: building a
 * SubjectPublicKeyInfo from a token's raw attributes, encoding
 * signatures, PEM encoding and signature verification.  Nothing here
 * touches the HSM or a secret.
 */
#ifndef KMS_PUBKEY_H
#define KMS_PUBKEY_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"

struct kms_status;

/* PEM ("BEGIN PUBLIC KEY") of a DER SubjectPublicKeyInfo; *pem is malloc'd. */
int pubkey_pem(const uint8_t *der, size_t derlen, char **pem);

/*
 * Verifies sig over in with the DER SubjectPublicKeyInfo der, with the
 * rules of alg: in is the digest for EC, RSA PKCS#1 and PSS, the message
 * for Ed25519, the raw bytes for RSA_RAW.  *valid is 1 or 0; the return
 * value is non-zero only when the check could not be made at all.
 */
int pubkey_verify(const struct kms_alg_info *alg, const uint8_t *der,
    size_t derlen, const uint8_t *in, size_t inlen,
    const uint8_t *sig, size_t siglen, int *valid);

/*
 * The DER SubjectPublicKeyInfo of a public key of algorithm alg from its
 * PKCS#11 attributes: for EC and EdDSA a is CKA_EC_POINT (a DER OCTET
 * STRING around the point, as the standard says, or the bare point, as
 * some modules give it) and b is unused; for RSA a is CKA_MODULUS and b
 * CKA_PUBLIC_EXPONENT.  *der is malloc'd.  A point of the wrong size is
 * KMS_ERR_HSM.
 */
int pubkey_spki(const struct kms_alg_info *alg, const uint8_t *a,
    size_t alen, const uint8_t *b, size_t blen, uint8_t **der,
    size_t *derlen);

/*
 * A signature of alg as the API gives it, from what the token made
 * (raw, rawlen bytes): ECDSA's raw r || s becomes a DER ECDSA-Sig-Value,
 * the others are copied.  *siglen holds the capacity of sig on entry.
 */
int pubkey_sig_encode(const struct kms_alg_info *alg, const uint8_t *raw,
    size_t rawlen, uint8_t *sig, size_t *siglen);

/* The most certificates a chain may hold. */
#define PUBKEY_CHAIN_MAX 10

/*
 * The DER of the first certificate (the leaf) of the PEM chain pem, which
 * must hold 1..PUBKEY_CHAIN_MAX certificates and nothing else; *der is
 * malloc'd.  KMS_ERR_INVALID_ARGUMENT, with the reason in st, otherwise.
 */
int pubkey_chain_leaf(const char *pem, uint8_t **der, size_t *derlen,
    struct kms_status *st);

/*
 * Checks that the leaf of the PEM chain pem certifies the public key spki
 * (DER SubjectPublicKeyInfo): 0 or KMS_ERR_INVALID_ARGUMENT with the
 * reason in st.
 */
int pubkey_chain_check(const char *pem, const uint8_t *spki, size_t spkilen,
    struct kms_status *st);

/* SHA-256 or SHA-384 of data into out (kms_hash_len(h) bytes). */
int pubkey_hash(enum kms_hash h, const uint8_t *data, size_t len,
    uint8_t *out);

#endif /* KMS_PUBKEY_H */
