/*
 * p11mech.h: the signing mechanisms, and what each sends to kmsd.
 *
 * kmsd signs a digest (EC, RSA PKCS#1 and PSS keys), the message itself
 * (Ed25519) or raw bytes (RSA_RAW).  A mechanism is accepted only on a
 * key whose kms algorithm makes exactly the signature the mechanism
 * promises; everything else is CKR_KEY_TYPE_INCONSISTENT, never a
 * different signature.  The *_SHA* mechanisms and multi-part signing
 * hash here and send one digest.
 */
#ifndef KMS_P11MECH_H
#define KMS_P11MECH_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "algo.h"

/* The largest input sent as built here (a DigestInfo) or as a digest. */
#define P11_INPUT_MAX 64
/* The largest signature of any kms key (RSA 4096). */
#define P11_SIG_MAX 512
/* The largest message buffered for one signature (kmsd's default limit). */
#define P11_DATA_MAX (1024 * 1024)

/* The mechanisms of the token, for C_GetMechanismList. */
const CK_MECHANISM_TYPE *p11_mech_list(size_t *n);
/* C_GetMechanismInfo; CKR_MECHANISM_INVALID for others. */
CK_RV p11_mech_info(CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *info);

/*
 * Whether mechanism m may sign or verify with a key of algorithm alg:
 * CKR_OK, CKR_MECHANISM_INVALID, CKR_KEY_TYPE_INCONSISTENT or
 * CKR_MECHANISM_PARAM_INVALID (PSS with other parameters than kms's:
 * SHA-256, MGF1-SHA-256, 32 bytes of salt).
 */
CK_RV p11_mech_check(const CK_MECHANISM *m, const struct kms_alg_info *alg);

/*
 * The hash the mechanism computes over its input before signing
 * (CKM_ECDSA_SHA256 ...), KMS_HASH_NONE when it takes its input as is.
 */
enum kms_hash p11_mech_hash(CK_MECHANISM_TYPE t);

/* What goes to kmsd (Sign's digest or data) and to the local verifier. */
struct p11_input {
	const uint8_t *p;		/* into the caller's input, or buf */
	size_t len;
	int as_data;			/* SignRequest.data, else .digest */
	uint8_t buf[P11_INPUT_MAX];
};

/*
 * Turns the mechanism's input in (already hashed by the caller when
 * p11_mech_hash(t) says so) into what kmsd signs for a key of algorithm
 * alg.  CKR_OK, CKR_DATA_LEN_RANGE, or CKR_DATA_INVALID (a DigestInfo
 * that is malformed or names another hash than the key's).
 */
CK_RV p11_mech_input(CK_MECHANISM_TYPE t, const struct kms_alg_info *alg,
    const uint8_t *in, size_t inlen, struct p11_input *out);

/* The length of a PKCS#11 signature by a key of algorithm alg. */
size_t p11_sig_len(const struct kms_alg_info *alg);

/*
 * Parses a DER DigestInfo: *nid is the OpenSSL NID of its hash, *digest
 * points into in.  Returns 0, or -1 when in is not exactly one DigestInfo
 * whose digest has its hash's length.
 */
int p11_digestinfo_parse(const uint8_t *in, size_t len, int *nid,
    const uint8_t **digest, size_t *dlen);

/*
 * ECDSA signatures: kms returns DER, PKCS#11 wants r || s with each half
 * as long as the field (half bytes).  Returns 0 or -1.  (The other way
 * is pubkey_sig_encode.)
 */
int p11_ecdsa_der_to_raw(const uint8_t *der, size_t len, size_t half,
    uint8_t *out);

#endif /* KMS_P11MECH_H */
