/*
 * kmsb_keys.h: the PEM key files the bundle tools read, decoded without a
 * crypto library (a device has no PEM parser either): base64 between the
 * BEGIN and END lines, then the one fixed DER layout each key type has.
 */
#ifndef KMSB_KEYS_H
#define KMSB_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "kmsb.h"

/*
 * A SubjectPublicKeyInfo PEM ("PUBLIC KEY") of an Ed25519 or P-256 key
 * (uncompressed point), as kms GetPublicKey and OpenSSL write them.
 * Returns 0, or -1 when it is neither.
 */
int kmsb_pem_sig_pubkey(const char *pem, size_t len, struct kmsb_pubkey *k)
    KMSB_WARN_UNUSED;

/* An X25519 SubjectPublicKeyInfo PEM ("PUBLIC KEY"). */
int kmsb_pem_x25519_pub(const char *pem, size_t len, uint8_t pk[32])
    KMSB_WARN_UNUSED;

/* An X25519 PKCS#8 PEM ("PRIVATE KEY"), as OpenSSL writes it. */
int kmsb_pem_x25519_priv(const char *pem, size_t len, uint8_t sk[32])
    KMSB_WARN_UNUSED;

#endif /* KMSB_KEYS_H */
