/*
 * p11obj.h: the token's objects.  Each kms signing key shows its primary
 * version as a private key, a public key and, when a certificate is
 * attached to the version, a certificate, all three with the key name as
 * CKA_LABEL and the same CKA_ID.  The private key holds no key material:
 * it names the kms key version that signs.
 *
 * The public attributes are made once from the version's DER
 * SubjectPublicKeyInfo; the functions that answer templates are pure.
 */
#ifndef KMS_P11OBJ_H
#define KMS_P11OBJ_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "algo.h"
#include "names.h"

/* CKA_ID: the SHA-1 of the public key bits (RFC 5280 4.2.1.2). */
#define P11_ID_LEN 20

enum p11_kind {
	P11_PRIVATE = 0,
	P11_PUBLIC = 1,
	P11_CERT = 2,
	P11_KINDS = 3
};

struct p11_blob {
	uint8_t *p;
	size_t len;
};

struct p11_key {
	char name[KMS_KEY_NAME_MAX + 1];
	const struct kms_alg_info *alg;
	uint32_t version;
	uint8_t id[P11_ID_LEN];
	CK_KEY_TYPE key_type;		/* CKK_EC, CKK_EC_EDWARDS, CKK_RSA */
	CK_ULONG bits;			/* RSA modulus bits */
	struct p11_blob spki;		/* DER SubjectPublicKeyInfo */
	struct p11_blob ec_params;	/* DER OID of the curve */
	struct p11_blob ec_point;	/* DER OCTET STRING of the point */
	struct p11_blob modulus, exponent;
	/* The attached leaf certificate, its subject, issuer and serial. */
	struct p11_blob cert, subject, issuer, serial;
};

/*
 * Makes the key name version of algorithm alg from its DER public key.
 * Returns 0, KMS_ERR_INVALID_ARGUMENT (not a key of that algorithm) or
 * KMS_ERR_NOMEM.
 */
int p11_key_new(const char *name, const struct kms_alg_info *alg,
    uint32_t version, const uint8_t *spki, size_t spkilen,
    struct p11_key **out);

/*
 * Attaches the DER leaf certificate of the key.  Refuses
 * (KMS_ERR_INVALID_ARGUMENT) a certificate whose public key is not the
 * key's.
 */
int p11_key_set_cert(struct p11_key *k, const uint8_t *der, size_t len);

void p11_key_free(struct p11_key *k);

/* Whether the key shows an object of that kind (a certificate needs one). */
int p11_key_has(const struct p11_key *k, enum p11_kind kind);

/*
 * C_GetAttributeValue on object kind of k: fills tmpl as PKCS#11 v2.40
 * section 5.7 says (sizes when pValue is NULL, CK_UNAVAILABLE_INFORMATION
 * for unknown or sensitive attributes) and returns the CK_RV.
 */
CK_RV p11_obj_get(const struct p11_key *k, enum p11_kind kind,
    CK_ATTRIBUTE *tmpl, CK_ULONG n);

/* 1 when object kind of k has every attribute of tmpl with that value. */
int p11_obj_match(const struct p11_key *k, enum p11_kind kind,
    const CK_ATTRIBUTE *tmpl, CK_ULONG n);

#endif /* KMS_P11OBJ_H */
