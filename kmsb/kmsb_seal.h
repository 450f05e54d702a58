/*
 * kmsb_seal.h: the producer of kms OTA bundles (it runs on the CI
 * machine).  It encrypts and hashes the input in one streaming pass and
 * leaves the signing to a callback, so that it needs neither kms nor
 * gRPC: kmsctl's callback sends the manifest to kmsd's Sign, the tests'
 * callback signs with a local key.
 */
#ifndef KMSB_SEAL_H
#define KMSB_SEAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kmsb.h"

#define KMSB_WHY_MAX	200

/*
 * Signs msg (the domain-separated manifest or statement body) with the
 * key whose public half the caller named; writes at most KMSB_SIG_MAX
 * bytes to sig.  Returns 0, or non-zero to give up.
 */
typedef int (*kmsb_sign_fn)(void *arg, const uint8_t *msg, size_t len,
    uint8_t sig[KMSB_SIG_MAX], size_t *sig_len);

struct kmsb_seal_params {
	const char *app_id, *channel, *version;
	uint64_t seq, created, expires;
	uint32_t chunk_size;		/* 0: KMSB_CHUNK_DEFAULT */
	struct kmsb_pubkey signer;	/* the key sign() signs with */
	const uint8_t (*recipients)[32];	/* X25519 public keys */
	size_t recipient_count;
	const uint8_t *statement;	/* must name signer */
	size_t statement_len;
};

/*
 * Reads exactly in_size bytes of plaintext from in and writes the whole
 * bundle to out.  The ciphertext is spooled to an unlinked temporary file
 * (tmpfile(3), $TMPDIR) while the chunk hashes are collected, because the
 * manifest that holds them precedes the payload; memory stays at one
 * chunk plus the manifest.  The signature that comes back is verified
 * with signer before anything is written.  Returns KMSB_OK or a
 * KMSB_ERR_* with the reason in why.
 */
int kmsb_seal(const struct kmsb_seal_params *p, FILE *in, uint64_t in_size,
    FILE *out, kmsb_sign_fn sign, void *arg, char why[KMSB_WHY_MAX])
    KMSB_WARN_UNUSED;

struct kmsb_statement_params {
	const char *app_id;
	uint64_t seq, expires;
	struct kmsb_pubkey root;	/* the key sign() signs with */
	const struct kmsb_statement_key *keys;
	size_t key_count;
};

/* Builds and signs a statement into out (cap bytes), its length to *len. */
int kmsb_statement_build(const struct kmsb_statement_params *p,
    kmsb_sign_fn sign, void *arg, uint8_t *out, size_t cap, size_t *len,
    char why[KMSB_WHY_MAX]) KMSB_WARN_UNUSED;

/*
 * HPKE base-mode single-shot seal with the given ephemeral private key
 * (random in kmsb_seal(); fixed by the RFC 9180 test vector in the unit
 * test): enc, and ct (pt_len bytes) || tag.
 */
int kmsb_hpke_seal(const uint8_t ske[32], const uint8_t pkr[32],
    const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
    const uint8_t *pt, size_t pt_len, uint8_t enc[32], uint8_t *ct,
    uint8_t tag[16]) KMSB_WARN_UNUSED;

#endif /* KMSB_SEAL_H */
