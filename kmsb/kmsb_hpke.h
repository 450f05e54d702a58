/*
 * kmsb_hpke.h: the parts of HPKE (RFC 9180) that a bundle needs: base
 * mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, one message
 * per context (sequence number 0).  OpenSSL 3.0 has no HPKE, so the key
 * schedule is written here on kmsb_crypto.h; the producer and the device
 * use the same code, and tests/unit/test_kmsb.c checks it against the
 * RFC's test vector A.1.1.
 */
#ifndef KMSB_HPKE_H
#define KMSB_HPKE_H

#include <stddef.h>
#include <stdint.h>

#include "kmsb.h"

#define KMSB_HPKE_KEY_LEN	16
#define KMSB_HPKE_INFO_MAX	256

/*
 * From the DH result, the encapsulated key and the recipient's public
 * key: the DHKEM shared secret (shared, may be NULL) and the AEAD key and
 * base nonce of the context for info.  Both sides call it.
 */
int kmsb_hpke_schedule(const uint8_t dh[32], const uint8_t enc[32],
    const uint8_t pkr[32], const uint8_t *info, size_t info_len,
    uint8_t shared[32], uint8_t key[KMSB_HPKE_KEY_LEN],
    uint8_t nonce[KMSB_NONCE_LEN]) KMSB_WARN_UNUSED;

/*
 * Receiver: opens ct (ct_len bytes, then a 16-byte tag) sealed to the
 * X25519 key skr under enc, info and aad, into pt (ct_len bytes).
 */
int kmsb_hpke_open(const uint8_t skr[32], const uint8_t enc[32],
    const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
    const uint8_t *ct, size_t ct_len, const uint8_t tag[16], uint8_t *pt)
    KMSB_WARN_UNUSED;

/* The info that binds a bundle's content key to its app, channel, seq. */
size_t kmsb_cek_info(uint8_t out[KMSB_HPKE_INFO_MAX], const char *app,
    size_t app_len, const char *channel, size_t channel_len, uint64_t seq);

#endif /* KMSB_HPKE_H */
