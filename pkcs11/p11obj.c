/*
 * p11obj.c: the token's objects and their attributes (see p11obj.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "kmserr.h"
#include "p11obj.h"

/* Ed25519's curve, as PKCS#11 3.0 names it in CKA_EC_PARAMS: id-Ed25519. */
static const uint8_t ed25519_oid[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

static int
blob_set(struct p11_blob *b, const uint8_t *p, size_t len)
{
	if ((b->p = malloc(len > 0 ? len : 1)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(b->p, p, len);
	b->len = len;
	return 0;
}

static void
blob_clear(struct p11_blob *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
}

/* A DER OCTET STRING holding p (the form of CKA_EC_POINT). */
static int
octet_string(struct p11_blob *b, const uint8_t *p, size_t len)
{
	size_t hdr = len < 0x80 ? 2 : 3;

	if (len > 0xff)
		return KMS_ERR_INVALID_ARGUMENT;
	if ((b->p = malloc(hdr + len)) == NULL)
		return KMS_ERR_NOMEM;
	b->p[0] = 0x04;
	if (hdr == 2)
		b->p[1] = (uint8_t)len;
	else {
		b->p[1] = 0x81;
		b->p[2] = (uint8_t)len;
	}
	memcpy(b->p + hdr, p, len);
	b->len = hdr + len;
	return 0;
}

static int
bn_blob(const EVP_PKEY *pk, const char *param, struct p11_blob *b)
{
	BIGNUM *bn = NULL;
	int r = KMS_ERR_INVALID_ARGUMENT;

	if (EVP_PKEY_get_bn_param(pk, param, &bn) != 1)
		goto out;
	b->len = (size_t)BN_num_bytes(bn);
	if ((b->p = malloc(b->len > 0 ? b->len : 1)) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	BN_bn2bin(bn, b->p);
	r = 0;
 out:
	BN_free(bn);
	return r;
}

static int
ec_attrs(struct p11_key *k, const EVP_PKEY *pk, const uint8_t *bits,
    int nbits)
{
	const char *want = k->alg->alg == KMS_ALG_EC_P256_SHA256 ?
	    "prime256v1" : "secp384r1";
	char group[64];
	size_t glen;
	uint8_t oid[32], *op = oid;
	ASN1_OBJECT *obj;
	int n, r;

	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
	    group, sizeof(group), &glen) != 1 || strcmp(group, want) != 0)
		return KMS_ERR_INVALID_ARGUMENT;
	if ((obj = OBJ_txt2obj(want, 0)) == NULL)
		return KMS_ERR_INTERNAL;
	n = i2d_ASN1_OBJECT(obj, NULL);
	if (n <= 0 || (size_t)n > sizeof(oid) ||
	    i2d_ASN1_OBJECT(obj, &op) != n) {
		ASN1_OBJECT_free(obj);
		return KMS_ERR_INTERNAL;
	}
	ASN1_OBJECT_free(obj);
	k->key_type = CKK_EC;
	/* The point: the uncompressed form that the SPKI holds. */
	if ((r = blob_set(&k->ec_params, oid, (size_t)n)) != 0 ||
	    (r = octet_string(&k->ec_point, bits, (size_t)nbits)) != 0)
		return r;
	return 0;
}

int
p11_key_new(const char *name, const struct kms_alg_info *alg,
    uint32_t version, const uint8_t *spki, size_t spkilen,
    struct p11_key **out)
{
	const unsigned char *p = spki;
	X509_PUBKEY *xpk = NULL;
	EVP_PKEY *pk = NULL;
	struct p11_key *k = NULL;
	const unsigned char *bits;
	int nbits, r = KMS_ERR_INVALID_ARGUMENT;

	*out = NULL;
	if (alg == NULL || !alg->can_sign || strlen(name) > KMS_KEY_NAME_MAX)
		return KMS_ERR_INVALID_ARGUMENT;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return KMS_ERR_NOMEM;
	strcpy(k->name, name);
	k->alg = alg;
	k->version = version;
	if ((xpk = d2i_X509_PUBKEY(NULL, &p, (long)spkilen)) == NULL ||
	    p != spki + spkilen ||
	    X509_PUBKEY_get0_param(NULL, &bits, &nbits, NULL, xpk) != 1 ||
	    (pk = X509_PUBKEY_get(xpk)) == NULL)
		goto out;
	/* The SubjectKeyIdentifier's usual method: SHA-1 of the key bits. */
	SHA1(bits, (size_t)nbits, k->id);
	if ((r = blob_set(&k->spki, spki, spkilen)) != 0)
		goto out;
	r = KMS_ERR_INVALID_ARGUMENT;
	switch (alg->family) {
	case KMS_FAMILY_EC:
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC)
			goto out;
		r = ec_attrs(k, pk, bits, nbits);
		break;
	case KMS_FAMILY_EDDSA:
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_ED25519 ||
		    nbits != 32)
			goto out;
		k->key_type = CKK_EC_EDWARDS;
		if ((r = blob_set(&k->ec_params, ed25519_oid,
		    sizeof(ed25519_oid))) == 0)
			r = octet_string(&k->ec_point, bits, (size_t)nbits);
		break;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA ||
		    (unsigned int)EVP_PKEY_get_bits(pk) != alg->bits)
			goto out;
		k->key_type = CKK_RSA;
		k->bits = alg->bits;
		if ((r = bn_blob(pk, OSSL_PKEY_PARAM_RSA_N, &k->modulus)) == 0)
			r = bn_blob(pk, OSSL_PKEY_PARAM_RSA_E, &k->exponent);
		break;
	default:
		goto out;
	}
	if (r != 0)
		goto out;
	*out = k;
	k = NULL;
 out:
	p11_key_free(k);
	EVP_PKEY_free(pk);
	X509_PUBKEY_free(xpk);
	return r;
}

/* The DER of an X509_NAME or ASN1_INTEGER (it) into a blob. */
static int
item_blob(const void *x, const ASN1_ITEM *it, struct p11_blob *b)
{
	unsigned char *der = NULL;
	int n, r;

	if ((n = ASN1_item_i2d((const ASN1_VALUE *)x, &der, it)) <= 0)
		return KMS_ERR_INVALID_ARGUMENT;
	r = blob_set(b, der, (size_t)n);
	OPENSSL_free(der);
	return r;
}

int
p11_key_set_cert(struct p11_key *k, const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	unsigned char *spki = NULL;
	X509 *x = NULL;
	struct p11_blob cert = { 0 }, subject = { 0 }, issuer = { 0 },
	    serial = { 0 };
	int n, r = KMS_ERR_INVALID_ARGUMENT;

	if ((x = d2i_X509(NULL, &p, (long)len)) == NULL || p != der + len)
		goto out;
	/* The leaf must be this version's: its public key, byte for byte. */
	if ((n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki)) <= 0 ||
	    (size_t)n != k->spki.len || memcmp(spki, k->spki.p, k->spki.len))
		goto out;
	if ((r = blob_set(&cert, der, len)) != 0 ||
	    (r = item_blob(X509_get_subject_name(x), ASN1_ITEM_rptr(X509_NAME),
	    &subject)) != 0 ||
	    (r = item_blob(X509_get_issuer_name(x), ASN1_ITEM_rptr(X509_NAME),
	    &issuer)) != 0 ||
	    (r = item_blob(X509_get0_serialNumber(x),
	    ASN1_ITEM_rptr(ASN1_INTEGER), &serial)) != 0)
		goto out;
	blob_clear(&k->cert);
	blob_clear(&k->subject);
	blob_clear(&k->issuer);
	blob_clear(&k->serial);
	k->cert = cert;
	k->subject = subject;
	k->issuer = issuer;
	k->serial = serial;
	memset(&cert, 0, sizeof(cert));
	memset(&subject, 0, sizeof(subject));
	memset(&issuer, 0, sizeof(issuer));
	memset(&serial, 0, sizeof(serial));
	r = 0;
 out:
	blob_clear(&cert);
	blob_clear(&subject);
	blob_clear(&issuer);
	blob_clear(&serial);
	OPENSSL_free(spki);
	X509_free(x);
	return r;
}

void
p11_key_free(struct p11_key *k)
{
	if (k == NULL)
		return;
	blob_clear(&k->spki);
	blob_clear(&k->ec_params);
	blob_clear(&k->ec_point);
	blob_clear(&k->modulus);
	blob_clear(&k->exponent);
	blob_clear(&k->cert);
	blob_clear(&k->subject);
	blob_clear(&k->issuer);
	blob_clear(&k->serial);
	free(k);
}

int
p11_key_has(const struct p11_key *k, enum p11_kind kind)
{
	return kind == P11_PRIVATE || kind == P11_PUBLIC ||
	    (kind == P11_CERT && k->cert.p != NULL);
}

/* One attribute's value: a pointer and length, or none. */
struct attr_val {
	const void *p;
	CK_ULONG len;
	CK_BBOOL b;
	CK_ULONG ul;
	int sensitive;			/* exists but is never revealed */
};

static int
val_bool(struct attr_val *v, int b)
{
	v->b = b ? CK_TRUE : CK_FALSE;
	v->p = &v->b;
	v->len = sizeof(v->b);
	return 1;
}

static int
val_ulong(struct attr_val *v, CK_ULONG ul)
{
	v->ul = ul;
	v->p = &v->ul;
	v->len = sizeof(v->ul);
	return 1;
}

static int
val_blob(struct attr_val *v, const struct p11_blob *b)
{
	if (b->p == NULL)
		return 0;
	v->p = b->p;
	v->len = b->len;
	return 1;
}

static int
val_bytes(struct attr_val *v, const void *p, size_t len)
{
	v->p = p;
	v->len = len;
	return 1;
}

/* What every object and every key object says. */
static int
common_attr(const struct p11_key *k, enum p11_kind kind, CK_ATTRIBUTE_TYPE t,
    struct attr_val *v)
{
	static const CK_OBJECT_CLASS classes[P11_KINDS] = {
		CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE
	};

	switch (t) {
	case CKA_CLASS:
		return val_ulong(v, classes[kind]);
	case CKA_TOKEN:
		return val_bool(v, 1);
	/* Nothing is hidden before C_Login: the token needs none. */
	case CKA_PRIVATE:
	case CKA_MODIFIABLE:
	case CKA_COPYABLE:
	case CKA_DESTROYABLE:
		return val_bool(v, 0);
	case CKA_LABEL:
		return val_bytes(v, k->name, strlen(k->name));
	case CKA_ID:
		return val_bytes(v, k->id, sizeof(k->id));
	case CKA_SUBJECT:
		return k->subject.p != NULL ? val_blob(v, &k->subject) :
		    val_bytes(v, "", 0);
	}
	if (kind == P11_CERT)
		return 0;
	switch (t) {
	case CKA_KEY_TYPE:
		return val_ulong(v, k->key_type);
	case CKA_LOCAL:
		return val_bool(v, 1);
	case CKA_DERIVE:
		return val_bool(v, 0);
	case CKA_PUBLIC_KEY_INFO:
		return val_blob(v, &k->spki);
	case CKA_MODULUS:
		return val_blob(v, &k->modulus);
	case CKA_PUBLIC_EXPONENT:
		return val_blob(v, &k->exponent);
	case CKA_EC_PARAMS:
		return val_blob(v, &k->ec_params);
	/* Also on the private key, for tools that read the point there. */
	case CKA_EC_POINT:
		return val_blob(v, &k->ec_point);
	case CKA_MODULUS_BITS:
		return k->key_type == CKK_RSA ? val_ulong(v, k->bits) : 0;
	}
	return 0;
}

static int
attr_of(const struct p11_key *k, enum p11_kind kind, CK_ATTRIBUTE_TYPE t,
    struct attr_val *v)
{
	memset(v, 0, sizeof(*v));
	if (common_attr(k, kind, t, v))
		return 1;
	switch (kind) {
	case P11_PRIVATE:
		switch (t) {
		case CKA_SIGN:
		case CKA_SENSITIVE:
		case CKA_ALWAYS_SENSITIVE:
		case CKA_NEVER_EXTRACTABLE:
			return val_bool(v, 1);
		case CKA_DECRYPT:
		case CKA_UNWRAP:
		case CKA_SIGN_RECOVER:
		case CKA_EXTRACTABLE:
		case CKA_WRAP_WITH_TRUSTED:
		case CKA_ALWAYS_AUTHENTICATE:
			return val_bool(v, 0);
		case CKA_VALUE:
		case CKA_PRIVATE_EXPONENT:
		case CKA_PRIME_1:
		case CKA_PRIME_2:
		case CKA_EXPONENT_1:
		case CKA_EXPONENT_2:
		case CKA_COEFFICIENT:
			/* The HSM behind kmsd holds them; nobody else does. */
			v->sensitive = 1;
			return 1;
		}
		return 0;
	case P11_PUBLIC:
		switch (t) {
		case CKA_VERIFY:
			return val_bool(v, 1);
		case CKA_ENCRYPT:
		case CKA_WRAP:
		case CKA_VERIFY_RECOVER:
		case CKA_TRUSTED:
			return val_bool(v, 0);
		}
		return 0;
	case P11_CERT:
		switch (t) {
		case CKA_CERTIFICATE_TYPE:
			return val_ulong(v, CKC_X_509);
		case CKA_CERTIFICATE_CATEGORY:
			return val_ulong(v, 0);	/* unspecified */
		case CKA_TRUSTED:
			return val_bool(v, 0);
		case CKA_VALUE:
			return val_blob(v, &k->cert);
		case CKA_ISSUER:
			return val_blob(v, &k->issuer);
		case CKA_SERIAL_NUMBER:
			return val_blob(v, &k->serial);
		}
		return 0;
	default:
		return 0;
	}
}

CK_RV
p11_obj_get(const struct p11_key *k, enum p11_kind kind, CK_ATTRIBUTE *tmpl,
    CK_ULONG n)
{
	struct attr_val v;
	CK_RV rv = CKR_OK;
	CK_ULONG i;

	for (i = 0; i < n; i++) {
		if (!attr_of(k, kind, tmpl[i].type, &v)) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_TYPE_INVALID;
			continue;
		}
		if (v.sensitive) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL)
				rv = CKR_ATTRIBUTE_SENSITIVE;
			continue;
		}
		if (tmpl[i].pValue == NULL) {
			tmpl[i].ulValueLen = v.len;
			continue;
		}
		if (tmpl[i].ulValueLen < v.len) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			if (rv == CKR_OK)
				rv = CKR_BUFFER_TOO_SMALL;
			continue;
		}
		if (v.len > 0)
			memcpy(tmpl[i].pValue, v.p, v.len);
		tmpl[i].ulValueLen = v.len;
	}
	return rv;
}

int
p11_obj_match(const struct p11_key *k, enum p11_kind kind,
    const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	struct attr_val v;
	CK_ULONG i;

	if (!p11_key_has(k, kind))
		return 0;
	for (i = 0; i < n; i++) {
		if (!attr_of(k, kind, tmpl[i].type, &v) || v.sensitive ||
		    v.len != tmpl[i].ulValueLen)
			return 0;
		if (v.len > 0 && (tmpl[i].pValue == NULL ||
		    memcmp(v.p, tmpl[i].pValue, v.len) != 0))
			return 0;
	}
	return 1;
}
