/*
 * pubkey.h: public-key work done in software with OpenSSL: PEM encoding
 * and signature verification.  Nothing here touches the HSM or a secret.
 */
#ifndef KMS_PUBKEY_H
#define KMS_PUBKEY_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"

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

/* SHA-256 or SHA-384 of data into out (kms_hash_len(h) bytes). */
int pubkey_hash(enum kms_hash h, const uint8_t *data, size_t len,
    uint8_t *out);

#endif /* KMS_PUBKEY_H */
