/*
 * p11mech.c: mechanisms, DigestInfo and ECDSA signature forms (see
 * p11mech.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "p11mech.h"

static const struct {
	CK_MECHANISM_TYPE type;
	enum kms_hash hash;		/* hashed here before signing */
	CK_ULONG min_bits, max_bits;
} mechs[] = {
	{ CKM_ECDSA, KMS_HASH_NONE, 256, 384 },
	{ CKM_ECDSA_SHA256, KMS_HASH_SHA256, 256, 256 },
	{ CKM_ECDSA_SHA384, KMS_HASH_SHA384, 384, 384 },
	{ CKM_EDDSA, KMS_HASH_NONE, 255, 255 },
	{ CKM_RSA_PKCS, KMS_HASH_NONE, 2048, 4096 },
	{ CKM_SHA256_RSA_PKCS, KMS_HASH_SHA256, 2048, 4096 },
	{ CKM_RSA_PKCS_PSS, KMS_HASH_NONE, 2048, 4096 },
	{ CKM_SHA256_RSA_PKCS_PSS, KMS_HASH_SHA256, 2048, 4096 },
};
#define NMECHS (sizeof(mechs) / sizeof(mechs[0]))

const CK_MECHANISM_TYPE *
p11_mech_list(size_t *n)
{
	static const CK_MECHANISM_TYPE list[] = {
		CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_EDDSA,
		CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS_PSS,
		CKM_SHA256_RSA_PKCS_PSS
	};

	*n = sizeof(list) / sizeof(list[0]);
	return list;
}

static int
mech_index(CK_MECHANISM_TYPE t)
{
	size_t i;

	for (i = 0; i < NMECHS; i++)
		if (mechs[i].type == t)
			return (int)i;
	return -1;
}

CK_RV
p11_mech_info(CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *info)
{
	int i;

	if ((i = mech_index(t)) < 0)
		return CKR_MECHANISM_INVALID;
	info->ulMinKeySize = mechs[i].min_bits;
	info->ulMaxKeySize = mechs[i].max_bits;
	info->flags = CKF_SIGN | CKF_VERIFY;
	if (t == CKM_ECDSA || t == CKM_ECDSA_SHA256 || t == CKM_ECDSA_SHA384)
		info->flags |= CKF_EC_F_P | CKF_EC_NAMEDCURVE |
		    CKF_EC_UNCOMPRESS;
	return CKR_OK;
}

enum kms_hash
p11_mech_hash(CK_MECHANISM_TYPE t)
{
	int i;

	return (i = mech_index(t)) < 0 ? KMS_HASH_NONE : mechs[i].hash;
}

/* kms's PSS: SHA-256, MGF1 with SHA-256, 32 bytes of salt. */
static CK_RV
pss_params(const CK_MECHANISM *m)
{
	const CK_RSA_PKCS_PSS_PARAMS *pp = m->pParameter;

	if (pp == NULL || m->ulParameterLen != sizeof(*pp) ||
	    pp->hashAlg != CKM_SHA256 || pp->mgf != CKG_MGF1_SHA256 ||
	    pp->sLen != 32)
		return CKR_MECHANISM_PARAM_INVALID;
	return CKR_OK;
}

CK_RV
p11_mech_check(const CK_MECHANISM *m, const struct kms_alg_info *alg)
{
	int fits;

	if (mech_index(m->mechanism) < 0)
		return CKR_MECHANISM_INVALID;
	switch (m->mechanism) {
	case CKM_ECDSA:
		fits = alg->family == KMS_FAMILY_EC;
		break;
	case CKM_ECDSA_SHA256:
	case CKM_ECDSA_SHA384:
		fits = alg->family == KMS_FAMILY_EC &&
		    alg->hash == p11_mech_hash(m->mechanism);
		break;
	case CKM_EDDSA:
		fits = alg->family == KMS_FAMILY_EDDSA;
		break;
	case CKM_RSA_PKCS:
		fits = alg->family == KMS_FAMILY_RSA_PKCS1 ||
		    alg->family == KMS_FAMILY_RSA_RAW;
		break;
	case CKM_SHA256_RSA_PKCS:
		fits = (alg->family == KMS_FAMILY_RSA_PKCS1 &&
		    alg->hash == KMS_HASH_SHA256) ||
		    alg->family == KMS_FAMILY_RSA_RAW;
		break;
	case CKM_RSA_PKCS_PSS:
	case CKM_SHA256_RSA_PKCS_PSS:
		if (alg->family != KMS_FAMILY_RSA_PSS ||
		    alg->hash != KMS_HASH_SHA256)
			return CKR_KEY_TYPE_INCONSISTENT;
		return pss_params(m);
	default:
		fits = 0;
		break;
	}
	if (!fits)
		return CKR_KEY_TYPE_INCONSISTENT;
	/* The others take no parameter (Ed25519: pure, no context). */
	if (m->pParameter != NULL && m->ulParameterLen > 0)
		return CKR_MECHANISM_PARAM_INVALID;
	return CKR_OK;
}

static int
hash_nid(enum kms_hash h)
{
	switch (h) {
	case KMS_HASH_SHA256:
		return NID_sha256;
	case KMS_HASH_SHA384:
		return NID_sha384;
	default:
		return NID_undef;
	}
}

int
p11_digestinfo_parse(const uint8_t *in, size_t len, int *nid,
    const uint8_t **digest, size_t *dlen)
{
	const unsigned char *p = in;
	unsigned char *again = NULL;
	const X509_ALGOR *algor;
	const ASN1_OCTET_STRING *os;
	const ASN1_OBJECT *obj;
	const EVP_MD *md;
	const void *pval;
	X509_SIG *sig = NULL;
	int ptype, n, r = -1;

	*nid = NID_undef;
	*digest = NULL;
	*dlen = 0;
	if (len == 0 || len > 1024 ||
	    (sig = d2i_X509_SIG(NULL, &p, (long)len)) == NULL ||
	    p != in + len)
		goto out;
	/* Only the one DER encoding: what was parsed must encode back to in. */
	if ((n = i2d_X509_SIG(sig, &again)) < 0 || (size_t)n != len ||
	    memcmp(again, in, len) != 0)
		goto out;
	X509_SIG_get0(sig, &algor, &os);
	X509_ALGOR_get0(&obj, &ptype, &pval, algor);
	if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
		goto out;
	if ((md = EVP_get_digestbyobj(obj)) == NULL ||
	    ASN1_STRING_length(os) != EVP_MD_get_size(md))
		goto out;
	*nid = EVP_MD_get_type(md);
	*dlen = (size_t)ASN1_STRING_length(os);
	/* The octets lie at the end of in, which they were parsed from. */
	*digest = in + len - *dlen;
	if (memcmp(*digest, ASN1_STRING_get0_data(os), *dlen) != 0)
		goto out;
	r = 0;
 out:
	OPENSSL_free(again);
	X509_SIG_free(sig);
	return r;
}

/* The DER DigestInfo of a SHA-256 digest, for RSA_RAW keys. */
static CK_RV
sha256_digestinfo(const uint8_t *d, size_t dlen, struct p11_input *out)
{
	static const uint8_t prefix[] = {
		0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
		0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
	};

	if (dlen != 32)
		return CKR_DATA_LEN_RANGE;
	memcpy(out->buf, prefix, sizeof(prefix));
	memcpy(out->buf + sizeof(prefix), d, dlen);
	out->p = out->buf;
	out->len = sizeof(prefix) + dlen;
	out->as_data = 1;
	return CKR_OK;
}

CK_RV
p11_mech_input(CK_MECHANISM_TYPE t, const struct kms_alg_info *alg,
    const uint8_t *in, size_t inlen, struct p11_input *out)
{
	const uint8_t *d;
	size_t dlen;
	int nid;

	memset(out, 0, sizeof(*out));
	out->p = in;
	out->len = inlen;
	switch (alg->family) {
	case KMS_FAMILY_EDDSA:
		out->as_data = 1;
		return inlen == 0 || inlen > P11_DATA_MAX ?
		    CKR_DATA_LEN_RANGE : CKR_OK;
	case KMS_FAMILY_RSA_RAW:
		if (t == CKM_SHA256_RSA_PKCS)
			return sha256_digestinfo(in, inlen, out);
		out->as_data = 1;
		return inlen == 0 || inlen > alg->max_raw_len ?
		    CKR_DATA_LEN_RANGE : CKR_OK;
	case KMS_FAMILY_RSA_PKCS1:
		if (t != CKM_RSA_PKCS)
			break;
		/* The caller's DigestInfo: its hash must be the key's. */
		if (p11_digestinfo_parse(in, inlen, &nid, &d, &dlen) != 0 ||
		    nid != hash_nid(alg->hash))
			return CKR_DATA_INVALID;
		out->p = d;
		out->len = dlen;
		break;
	default:
		break;
	}
	return out->len == alg->digest_len ? CKR_OK : CKR_DATA_LEN_RANGE;
}

size_t
p11_sig_len(const struct kms_alg_info *alg)
{
	switch (alg->family) {
	case KMS_FAMILY_EC:
		return 2 * ((alg->bits + 7) / 8);
	case KMS_FAMILY_EDDSA:
		return 64;
	default:
		return alg->bits / 8;
	}
}

int
p11_ecdsa_der_to_raw(const uint8_t *der, size_t len, size_t half,
    uint8_t *out)
{
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	ECDSA_SIG *sig;
	int ret = -1;

	if ((sig = d2i_ECDSA_SIG(NULL, &p, (long)len)) == NULL ||
	    p != der + len)
		goto out;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, out, (int)half) != (int)half ||
	    BN_bn2binpad(s, out + half, (int)half) != (int)half)
		goto out;
	ret = 0;
 out:
	ECDSA_SIG_free(sig);
	return ret;
}
