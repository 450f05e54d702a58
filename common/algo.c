/*
 * algo.c: the algorithm table.  One row per kms.v1.Algorithm value.
 */
#include <string.h>

#include "algo.h"

static const struct kms_alg_info algtab[] = {
	{ KMS_ALG_EC_P256_SHA256, "EC_P256_SHA256", KMS_FAMILY_EC,
	    KMS_HASH_SHA256, 32, 256, 0, 1, 0 },
	{ KMS_ALG_EC_P384_SHA384, "EC_P384_SHA384", KMS_FAMILY_EC,
	    KMS_HASH_SHA384, 48, 384, 0, 1, 0 },
	/* Ed25519 signs the message itself (PureEdDSA): no digest input. */
	{ KMS_ALG_ED25519, "ED25519", KMS_FAMILY_EDDSA,
	    KMS_HASH_NONE, 0, 255, 0, 1, 0 },
	{ KMS_ALG_RSA_PKCS1_2048_SHA256, "RSA_PKCS1_2048_SHA256",
	    KMS_FAMILY_RSA_PKCS1, KMS_HASH_SHA256, 32, 2048, 0, 1, 0 },
	{ KMS_ALG_RSA_PKCS1_3072_SHA256, "RSA_PKCS1_3072_SHA256",
	    KMS_FAMILY_RSA_PKCS1, KMS_HASH_SHA256, 32, 3072, 0, 1, 0 },
	{ KMS_ALG_RSA_PKCS1_4096_SHA256, "RSA_PKCS1_4096_SHA256",
	    KMS_FAMILY_RSA_PKCS1, KMS_HASH_SHA256, 32, 4096, 0, 1, 0 },
	{ KMS_ALG_RSA_PSS_2048_SHA256, "RSA_PSS_2048_SHA256",
	    KMS_FAMILY_RSA_PSS, KMS_HASH_SHA256, 32, 2048, 0, 1, 0 },
	{ KMS_ALG_RSA_PSS_3072_SHA256, "RSA_PSS_3072_SHA256",
	    KMS_FAMILY_RSA_PSS, KMS_HASH_SHA256, 32, 3072, 0, 1, 0 },
	{ KMS_ALG_RSA_PSS_4096_SHA256, "RSA_PSS_4096_SHA256",
	    KMS_FAMILY_RSA_PSS, KMS_HASH_SHA256, 32, 4096, 0, 1, 0 },
	/*
	 * The PKCS#1 v1.5 type-1 block over raw bytes, no DigestInfo: a
	 * 2048-bit modulus leaves 256 - 11 = 245 bytes for the input.
	 */
	{ KMS_ALG_RSA_RAW_PKCS1_2048, "RSA_RAW_PKCS1_2048",
	    KMS_FAMILY_RSA_RAW, KMS_HASH_NONE, 0, 2048, 245, 1, 0 },
	{ KMS_ALG_AES_256_KWP, "AES_256_KWP", KMS_FAMILY_AES_WRAP,
	    KMS_HASH_NONE, 0, 256, 0, 0, 1 },
};

const struct kms_alg_info *
kms_alg_lookup(int alg)
{
	size_t i;

	for (i = 0; i < sizeof(algtab) / sizeof(algtab[0]); i++)
		if ((int)algtab[i].alg == alg)
			return &algtab[i];
	return NULL;
}

const struct kms_alg_info *
kms_alg_by_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < sizeof(algtab) / sizeof(algtab[0]); i++)
		if (strcmp(algtab[i].name, name) == 0)
			return &algtab[i];
	return NULL;
}

const char *
kms_alg_name(int alg)
{
	const struct kms_alg_info *a = kms_alg_lookup(alg);

	return a == NULL ? "UNKNOWN" : a->name;
}

size_t
kms_hash_len(enum kms_hash h)
{
	switch (h) {
	case KMS_HASH_SHA256:
		return 32;
	case KMS_HASH_SHA384:
		return 48;
	default:
		return 0;
	}
}

static const char *const state_names[] = {
	"KEY_VERSION_STATE_UNSPECIFIED", "ENABLED", "DISABLED",
	"DESTROY_SCHEDULED", "DESTROYED"
};

const char *
kms_state_name(int state)
{
	if (state < 0 ||
	    (size_t)state >= sizeof(state_names) / sizeof(state_names[0]))
		return "UNKNOWN";
	return state_names[state];
}

int
kms_state_by_name(const char *name)
{
	size_t i;

	for (i = 1; name != NULL &&
	    i < sizeof(state_names) / sizeof(state_names[0]); i++)
		if (strcmp(name, state_names[i]) == 0)
			return (int)i;
	return 0;
}
