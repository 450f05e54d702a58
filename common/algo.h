/*
 * algo.h: the algorithms kms supports, independent of protobuf and PKCS#11.
 *
 * The numeric values equal the protobuf enum kms.v1.Algorithm, so that a
 * handler converts with a range check and nothing else.
 */
#ifndef KMS_ALGO_H
#define KMS_ALGO_H

#include <stddef.h>

enum kms_alg {
	KMS_ALG_NONE = 0,
	KMS_ALG_EC_P256_SHA256 = 1,
	KMS_ALG_EC_P384_SHA384 = 2,
	KMS_ALG_ED25519 = 3,
	KMS_ALG_RSA_PKCS1_2048_SHA256 = 4,
	KMS_ALG_RSA_PKCS1_3072_SHA256 = 5,
	KMS_ALG_RSA_PKCS1_4096_SHA256 = 6,
	KMS_ALG_RSA_PSS_2048_SHA256 = 7,
	KMS_ALG_RSA_PSS_3072_SHA256 = 8,
	KMS_ALG_RSA_PSS_4096_SHA256 = 9,
	KMS_ALG_RSA_RAW_PKCS1_2048 = 10,
	KMS_ALG_AES_256_KWP = 11,
	KMS_ALG_MAX = 11
};

enum kms_alg_family {
	KMS_FAMILY_NONE = 0,
	KMS_FAMILY_EC,		/* ECDSA over a digest */
	KMS_FAMILY_EDDSA,	/* Ed25519 over the message */
	KMS_FAMILY_RSA_PKCS1,	/* RSASSA-PKCS1-v1_5 with DigestInfo */
	KMS_FAMILY_RSA_PSS,	/* RSASSA-PSS, MGF1 with the same hash, salt = hash length */
	KMS_FAMILY_RSA_RAW,	/* PKCS#1 v1.5 type-1 block over raw bytes */
	KMS_FAMILY_AES_WRAP	/* RFC 5649 key wrap */
};

enum kms_hash {
	KMS_HASH_NONE = 0,
	KMS_HASH_SHA256,
	KMS_HASH_SHA384
};

struct kms_alg_info {
	enum kms_alg alg;
	const char *name;		/* "EC_P256_SHA256", as in the proto */
	enum kms_alg_family family;
	enum kms_hash hash;		/* hash applied to `data`; NONE when signed as is */
	size_t digest_len;		/* required `digest` length; 0 when digest is refused */
	unsigned int bits;		/* RSA modulus bits, EC field bits, AES key bits */
	size_t max_raw_len;		/* RSA_RAW only: largest input accepted */
	int can_sign;			/* 1 for signing keys */
	int can_wrap;			/* 1 for wrapping keys */
};

/* The table entry for alg, or NULL for KMS_ALG_NONE and unknown values. */
const struct kms_alg_info *kms_alg_lookup(int alg);
/* The table entry named name (exact, case-sensitive), or NULL. */
const struct kms_alg_info *kms_alg_by_name(const char *name);
const char *kms_alg_name(int alg);	/* "UNKNOWN" for bad values */

/*
 * The name of a key version state (kms.v1.KeyVersionState: 0 unspecified,
 * 1 ENABLED .. 4 DESTROYED), as in the proto; "UNKNOWN" for bad values.
 */
const char *kms_state_name(int state);
/* The state named name (1..4), or 0. */
int kms_state_by_name(const char *name);

/* Digest length of a hash, 0 for KMS_HASH_NONE. */
size_t kms_hash_len(enum kms_hash h);

#endif /* KMS_ALGO_H */
