/*
 * kmsb_crypto.h: every primitive the device verifier uses, and nothing
 * more.  kmsb_crypto_openssl.c implements it with OpenSSL 3; a device
 * port (mbedTLS / PSA Crypto on an ESP32) provides these functions in its
 * own file and links that instead (docs/bundle-format.md, "Porting").
 *
 * Every function returns 0 on success and -1 on failure (a bad signature
 * or tag is a failure, as is a backend error); none allocates memory that
 * outlives the call, none keeps state between calls.
 */
#ifndef KMSB_CRYPTO_H
#define KMSB_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "kmsb.h"

int kmsb_c_sha256(const uint8_t *m, size_t len, uint8_t out[32])
    KMSB_WARN_UNUSED;

/*
 * AEAD open, AES-GCM with a 12-byte nonce and 16-byte tag; key_len 32
 * (chunks: AES-256-GCM) or 16 (HPKE: AES-128-GCM).  pt receives ct_len
 * bytes; on failure its content is unspecified and must not be used (the
 * caller wipes it).
 */
int kmsb_c_gcm_open(const uint8_t *key, size_t key_len,
    const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
    const uint8_t *ct, size_t ct_len, const uint8_t tag[16], uint8_t *pt)
    KMSB_WARN_UNUSED;

/* Ed25519 (RFC 8032, pure) over msg. */
int kmsb_c_ed25519_verify(const uint8_t pub[32], const uint8_t *msg,
    size_t len, const uint8_t sig[64]) KMSB_WARN_UNUSED;

/*
 * ECDSA P-256 with SHA-256 over msg; pub is the 65-byte uncompressed
 * point, sig the DER encoding.
 */
int kmsb_c_p256_verify(const uint8_t pub[65], const uint8_t *msg,
    size_t len, const uint8_t *sig, size_t sig_len) KMSB_WARN_UNUSED;

/*
 * X25519 (RFC 7748): out = sk * pk.  Fails when the result is all zero
 * (a small-order peer key).  pk = {9, 0, ...} gives the public key of sk.
 */
int kmsb_c_x25519(uint8_t out[32], const uint8_t sk[32],
    const uint8_t pk[32]) KMSB_WARN_UNUSED;

/* HKDF-SHA256 (RFC 5869) extract: prk = HMAC(salt, ikm). */
int kmsb_c_hkdf_extract(const uint8_t *salt, size_t salt_len,
    const uint8_t *ikm, size_t ikm_len, uint8_t prk[32]) KMSB_WARN_UNUSED;

/* HKDF-SHA256 expand; out_len <= 255 * 32. */
int kmsb_c_hkdf_expand(const uint8_t prk[32], const uint8_t *info,
    size_t info_len, uint8_t *out, size_t out_len) KMSB_WARN_UNUSED;

/* Constant-time comparison: 0 when equal. */
int kmsb_c_memcmp(const void *a, const void *b, size_t len);

/* Wipes memory in a way the compiler does not remove. */
void kmsb_c_wipe(void *p, size_t len);

#endif /* KMSB_CRYPTO_H */
