/*
 * test_p11.c: the PKCS#11 module's parts that need no kmsd: the objects'
 * attribute templates, DigestInfo parsing, the mechanism rules, ECDSA
 * signature forms, the error mapping and the configuration; and, through
 * dlopen of the built module, the fork rule and C_Initialize's refusals.
 */
#include <sys/wait.h>

#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "kmserr.h"
#include "p11conf.h"
#include "p11err.h"
#include "p11mech.h"
#include "p11obj.h"
#include "pubkey.h"

/* A fresh key of algorithm alg as kmsd would hand it out: DER SPKI. */
static EVP_PKEY *
new_pkey(enum kms_alg alg)
{
	switch (alg) {
	case KMS_ALG_EC_P256_SHA256:
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	case KMS_ALG_EC_P384_SHA384:
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	case KMS_ALG_ED25519:
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	default:
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	}
}

static struct p11_key *
new_key(enum kms_alg alg, EVP_PKEY **pkp)
{
	EVP_PKEY *pk = new_pkey(alg);
	unsigned char *der = NULL;
	struct p11_key *k = NULL;
	int n;

	assert_non_null(pk);
	n = i2d_PUBKEY(pk, &der);
	assert_true(n > 0);
	assert_int_equal(p11_key_new("release/app", kms_alg_lookup(alg), 3,
	    der, (size_t)n, &k), 0);
	OPENSSL_free(der);
	if (pkp != NULL)
		*pkp = pk;
	else
		EVP_PKEY_free(pk);
	return k;
}

static void
test_private_key_template(void **state)
{
	struct p11_key *k = new_key(KMS_ALG_EC_P256_SHA256, NULL);
	CK_OBJECT_CLASS cls = 0;
	CK_BBOOL sign = 0, sens = 0, extr = 1, priv = 1;
	unsigned char value[64], label[64];
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_SIGN, &sign, sizeof(sign) },
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		{ CKA_PRIVATE, &priv, sizeof(priv) },
		{ CKA_LABEL, label, sizeof(label) },
	};
	CK_ATTRIBUTE v = { CKA_VALUE, value, sizeof(value) };
	CK_ATTRIBUTE bogus = { CKA_MODULUS, value, sizeof(value) };

	(void)state;
	assert_int_equal(p11_obj_get(k, P11_PRIVATE, t, 6), CKR_OK);
	assert_int_equal(cls, CKO_PRIVATE_KEY);
	assert_true(sign && sens && !extr && !priv);
	assert_int_equal(t[5].ulValueLen, strlen("release/app"));
	assert_memory_equal(label, "release/app", t[5].ulValueLen);
	/* The private value does not exist here and is never revealed. */
	assert_int_equal(p11_obj_get(k, P11_PRIVATE, &v, 1),
	    CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(v.ulValueLen, CK_UNAVAILABLE_INFORMATION);
	/* An EC key has no modulus. */
	assert_int_equal(p11_obj_get(k, P11_PRIVATE, &bogus, 1),
	    CKR_ATTRIBUTE_TYPE_INVALID);
	assert_int_equal(bogus.ulValueLen, CK_UNAVAILABLE_INFORMATION);
	/* A sensitive attribute cannot be matched either. */
	assert_false(p11_obj_match(k, P11_PRIVATE, &v, 1));
	p11_key_free(k);
}

static void
test_public_key_template(void **state)
{
	EVP_PKEY *pk;
	struct p11_key *k = new_key(KMS_ALG_EC_P256_SHA256, &pk);
	unsigned char point[128], raw[128], params[32], small[4];
	size_t rawlen;
	CK_ATTRIBUTE t[] = {
		{ CKA_EC_POINT, point, sizeof(point) },
		{ CKA_EC_PARAMS, params, sizeof(params) },
	};
	CK_ATTRIBUTE sz = { CKA_EC_POINT, NULL, 0 };
	CK_ATTRIBUTE tiny = { CKA_EC_POINT, small, sizeof(small) };
	static const unsigned char p256[] = {
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
	};

	(void)state;
	assert_int_equal(p11_obj_get(k, P11_PUBLIC, t, 2), CKR_OK);
	/* The point is a DER OCTET STRING around the uncompressed point. */
	assert_int_equal(EVP_PKEY_get_octet_string_param(pk, "pub", raw,
	    sizeof(raw), &rawlen), 1);
	assert_int_equal(t[0].ulValueLen, rawlen + 2);
	assert_int_equal(point[0], 0x04);
	assert_int_equal(point[1], rawlen);
	assert_memory_equal(point + 2, raw, rawlen);
	assert_int_equal(t[1].ulValueLen, sizeof(p256));
	assert_memory_equal(params, p256, sizeof(p256));
	/* Sizes first, then a short buffer. */
	assert_int_equal(p11_obj_get(k, P11_PUBLIC, &sz, 1), CKR_OK);
	assert_int_equal(sz.ulValueLen, rawlen + 2);
	assert_int_equal(p11_obj_get(k, P11_PUBLIC, &tiny, 1),
	    CKR_BUFFER_TOO_SMALL);
	assert_int_equal(tiny.ulValueLen, CK_UNAVAILABLE_INFORMATION);
	/* Both halves match by label and ID; no certificate without one. */
	assert_true(p11_obj_match(k, P11_PUBLIC, t, 2));
	assert_false(p11_key_has(k, P11_CERT));
	assert_false(p11_obj_match(k, P11_CERT, NULL, 0));
	p11_key_free(k);
	EVP_PKEY_free(pk);
}

static void
test_rsa_and_ed25519_templates(void **state)
{
	struct p11_key *r = new_key(KMS_ALG_RSA_PSS_2048_SHA256, NULL);
	struct p11_key *e = new_key(KMS_ALG_ED25519, NULL);
	CK_KEY_TYPE kt = 0;
	CK_ULONG bits = 0;
	unsigned char mod[512], exp[8], point[64];
	CK_ATTRIBUTE t[] = {
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) },
		{ CKA_MODULUS, mod, sizeof(mod) },
		{ CKA_PUBLIC_EXPONENT, exp, sizeof(exp) },
	};
	CK_ATTRIBUTE et[] = {
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_EC_POINT, point, sizeof(point) },
	};
	const unsigned char f4[] = { 0x01, 0x00, 0x01 };

	(void)state;
	assert_int_equal(p11_obj_get(r, P11_PUBLIC, t, 4), CKR_OK);
	assert_int_equal(kt, CKK_RSA);
	assert_int_equal(bits, 2048);
	assert_int_equal(t[2].ulValueLen, 256);
	assert_int_equal(t[3].ulValueLen, 3);
	assert_memory_equal(exp, f4, 3);
	assert_int_equal(p11_obj_get(e, P11_PUBLIC, et, 2), CKR_OK);
	assert_int_equal(kt, CKK_EC_EDWARDS);
	assert_int_equal(et[1].ulValueLen, 34);
	assert_int_equal(point[0], 0x04);
	assert_int_equal(point[1], 32);
	/* The ID is the same on both halves and differs between keys. */
	assert_memory_not_equal(r->id, e->id, P11_ID_LEN);
	p11_key_free(r);
	p11_key_free(e);
}

static void
test_key_refuses_wrong_algorithm(void **state)
{
	EVP_PKEY *pk = new_pkey(KMS_ALG_EC_P384_SHA384);
	unsigned char *der = NULL;
	struct p11_key *k = NULL;
	int n = i2d_PUBKEY(pk, &der);

	(void)state;
	/* A P-384 key offered as P-256, or as RSA: refused. */
	assert_int_equal(p11_key_new("k", kms_alg_lookup(
	    KMS_ALG_EC_P256_SHA256), 1, der, (size_t)n, &k),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(p11_key_new("k", kms_alg_lookup(
	    KMS_ALG_RSA_PKCS1_2048_SHA256), 1, der, (size_t)n, &k),
	    KMS_ERR_INVALID_ARGUMENT);
	/* Trailing bytes, a truncated key, a wrapping key: refused. */
	assert_int_equal(p11_key_new("k", kms_alg_lookup(
	    KMS_ALG_EC_P384_SHA384), 1, der, (size_t)n - 1, &k),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(p11_key_new("k", kms_alg_lookup(
	    KMS_ALG_AES_256_KWP), 1, der, (size_t)n, &k),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_null(k);
	assert_int_equal(p11_key_new("k", kms_alg_lookup(
	    KMS_ALG_EC_P384_SHA384), 1, der, (size_t)n, &k), 0);
	p11_key_free(k);
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
}

/* A self-signed certificate of pk; DER in *der. */
static int
self_signed(EVP_PKEY *pk, unsigned char **der)
{
	X509 *x = X509_new();
	int n;

	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)"release", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, pk);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	n = i2d_X509(x, der);
	X509_free(x);
	return n;
}

static void
test_certificate_object(void **state)
{
	EVP_PKEY *pk, *other = new_pkey(KMS_ALG_EC_P256_SHA256);
	struct p11_key *k = new_key(KMS_ALG_EC_P256_SHA256, &pk);
	unsigned char *der = NULL, *wrong = NULL, value[2048], id[32];
	int n = self_signed(pk, &der), m = self_signed(other, &wrong);
	CK_CERTIFICATE_TYPE ct = 0;
	CK_ATTRIBUTE t[] = {
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
		{ CKA_VALUE, value, sizeof(value) },
		{ CKA_ID, id, sizeof(id) },
	};

	(void)state;
	/* A leaf for another key is refused and changes nothing. */
	assert_int_equal(p11_key_set_cert(k, wrong, (size_t)m),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_false(p11_key_has(k, P11_CERT));
	assert_int_equal(p11_key_set_cert(k, der, (size_t)n), 0);
	assert_true(p11_key_has(k, P11_CERT));
	assert_int_equal(p11_obj_get(k, P11_CERT, t, 3), CKR_OK);
	assert_int_equal(ct, CKC_X_509);
	assert_int_equal(t[1].ulValueLen, n);
	assert_memory_equal(value, der, (size_t)n);
	assert_int_equal(t[2].ulValueLen, P11_ID_LEN);
	assert_memory_equal(id, k->id, P11_ID_LEN);
	/* The certificate has no key attributes. */
	t[0].type = CKA_SIGN;
	assert_int_equal(p11_obj_get(k, P11_CERT, t, 1),
	    CKR_ATTRIBUTE_TYPE_INVALID);
	OPENSSL_free(der);
	OPENSSL_free(wrong);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(other);
	p11_key_free(k);
}

static void
test_digestinfo(void **state)
{
	static const unsigned char sha256_di[] = {
		0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
		0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
	};
	unsigned char in[128];
	const uint8_t *d;
	size_t dlen;
	int nid;

	(void)state;
	memcpy(in, sha256_di, sizeof(sha256_di));
	memset(in + sizeof(sha256_di), 0xab, 32);
	assert_int_equal(p11_digestinfo_parse(in, sizeof(sha256_di) + 32,
	    &nid, &d, &dlen), 0);
	assert_int_equal(nid, NID_sha256);
	assert_int_equal(dlen, 32);
	assert_ptr_equal(d, in + sizeof(sha256_di));
	/* Without the NULL parameters (RFC 8017 allows it for SHA-2). */
	{
		static const unsigned char noparams[] = {
			0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
			0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20
		};
		unsigned char np[64];

		memcpy(np, noparams, sizeof(noparams));
		memset(np + sizeof(noparams), 1, 32);
		assert_int_equal(p11_digestinfo_parse(np,
		    sizeof(noparams) + 32, &nid, &d, &dlen), 0);
		assert_int_equal(nid, NID_sha256);
	}
	/* Truncated, trailing bytes, a digest of the wrong length. */
	assert_int_equal(p11_digestinfo_parse(in, sizeof(sha256_di) + 31,
	    &nid, &d, &dlen), -1);
	in[sizeof(sha256_di) + 32] = 0;
	assert_int_equal(p11_digestinfo_parse(in, sizeof(sha256_di) + 33,
	    &nid, &d, &dlen), -1);
	in[1] = 0x30;
	in[18] = 0x1f;
	assert_int_equal(p11_digestinfo_parse(in, sizeof(sha256_di) + 31,
	    &nid, &d, &dlen), -1);
	/* A bare digest is no DigestInfo. */
	memset(in, 0x30, 32);
	assert_int_equal(p11_digestinfo_parse(in, 32, &nid, &d, &dlen), -1);
	assert_int_equal(p11_digestinfo_parse(in, 0, &nid, &d, &dlen), -1);
}

static void
test_mechanism_rules(void **state)
{
	const struct kms_alg_info *ec = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	const struct kms_alg_info *ec384 =
	    kms_alg_lookup(KMS_ALG_EC_P384_SHA384);
	const struct kms_alg_info *rsa =
	    kms_alg_lookup(KMS_ALG_RSA_PKCS1_2048_SHA256);
	const struct kms_alg_info *pss =
	    kms_alg_lookup(KMS_ALG_RSA_PSS_2048_SHA256);
	const struct kms_alg_info *raw =
	    kms_alg_lookup(KMS_ALG_RSA_RAW_PKCS1_2048);
	const struct kms_alg_info *ed = kms_alg_lookup(KMS_ALG_ED25519);
	CK_RSA_PKCS_PSS_PARAMS pp = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };

	(void)state;
	assert_int_equal(p11_mech_check(&m, ec), CKR_OK);
	assert_int_equal(p11_mech_check(&m, rsa), CKR_KEY_TYPE_INCONSISTENT);
	assert_int_equal(p11_mech_check(&m, ed), CKR_KEY_TYPE_INCONSISTENT);
	m.mechanism = CKM_ECDSA_SHA256;
	assert_int_equal(p11_mech_check(&m, ec384),
	    CKR_KEY_TYPE_INCONSISTENT);
	m.mechanism = CKM_EDDSA;
	assert_int_equal(p11_mech_check(&m, ed), CKR_OK);
	m.mechanism = CKM_RSA_PKCS;
	assert_int_equal(p11_mech_check(&m, rsa), CKR_OK);
	assert_int_equal(p11_mech_check(&m, raw), CKR_OK);
	assert_int_equal(p11_mech_check(&m, pss), CKR_KEY_TYPE_INCONSISTENT);
	m.mechanism = CKM_SHA256_RSA_PKCS_PSS;
	assert_int_equal(p11_mech_check(&m, pss),
	    CKR_MECHANISM_PARAM_INVALID);
	m.pParameter = &pp;
	m.ulParameterLen = sizeof(pp);
	assert_int_equal(p11_mech_check(&m, pss), CKR_OK);
	assert_int_equal(p11_mech_check(&m, rsa), CKR_KEY_TYPE_INCONSISTENT);
	pp.sLen = 20;
	assert_int_equal(p11_mech_check(&m, pss),
	    CKR_MECHANISM_PARAM_INVALID);
	pp.sLen = 32;
	pp.mgf = CKG_MGF1_SHA1;
	assert_int_equal(p11_mech_check(&m, pss),
	    CKR_MECHANISM_PARAM_INVALID);
	m.mechanism = CKM_SHA384_RSA_PKCS;
	assert_int_equal(p11_mech_check(&m, rsa), CKR_MECHANISM_INVALID);
	assert_int_equal(p11_mech_hash(CKM_ECDSA_SHA384), KMS_HASH_SHA384);
	assert_int_equal(p11_mech_hash(CKM_ECDSA), KMS_HASH_NONE);
}

static void
test_mechanism_input(void **state)
{
	const struct kms_alg_info *rsa =
	    kms_alg_lookup(KMS_ALG_RSA_PKCS1_2048_SHA256);
	const struct kms_alg_info *raw =
	    kms_alg_lookup(KMS_ALG_RSA_RAW_PKCS1_2048);
	const struct kms_alg_info *ec = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	static const unsigned char sha512_di[] = {
		0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
		0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40
	};
	unsigned char digest[32], di[19 + 64];
	struct p11_input in;

	(void)state;
	memset(digest, 7, sizeof(digest));
	/* ECDSA sends the digest; of the wrong length it is refused here. */
	assert_int_equal(p11_mech_input(CKM_ECDSA, ec, digest, 32, &in),
	    CKR_OK);
	assert_false(in.as_data);
	assert_int_equal(in.len, 32);
	assert_int_equal(p11_mech_input(CKM_ECDSA, ec, digest, 20, &in),
	    CKR_DATA_LEN_RANGE);
	/* RSA_PKCS on an RSA_RAW key: the bytes as they are, as data. */
	assert_int_equal(p11_mech_input(CKM_RSA_PKCS, raw, digest, 32, &in),
	    CKR_OK);
	assert_true(in.as_data);
	assert_ptr_equal(in.p, digest);
	/* SHA256_RSA_PKCS on an RSA_RAW key: a DigestInfo built here. */
	assert_int_equal(p11_mech_input(CKM_SHA256_RSA_PKCS, raw, digest, 32,
	    &in), CKR_OK);
	assert_int_equal(in.len, 51);
	assert_int_equal(in.p[0], 0x30);
	assert_memory_equal(in.p + 19, digest, 32);
	/* RSA_PKCS with SHA-512's DigestInfo on a SHA-256 key: refused. */
	memcpy(di, sha512_di, sizeof(sha512_di));
	memset(di + sizeof(sha512_di), 1, 64);
	assert_int_equal(p11_mech_input(CKM_RSA_PKCS, rsa, di, sizeof(di),
	    &in), CKR_DATA_INVALID);
	assert_int_equal(p11_mech_input(CKM_RSA_PKCS, rsa, digest, 32, &in),
	    CKR_DATA_INVALID);
	assert_int_equal(p11_sig_len(ec), 64);
	assert_int_equal(p11_sig_len(rsa), 256);
}

static void
test_ecdsa_forms(void **state)
{
	const struct kms_alg_info *ec = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	unsigned char raw[64], back[64], der[80];
	size_t derlen = sizeof(der);

	(void)state;
	/* r with a high bit (DER adds a zero) and s with leading zeros. */
	memset(raw, 0xff, 32);
	memset(raw + 32, 0, 31);
	raw[63] = 5;
	assert_int_equal(pubkey_sig_encode(ec, raw, 64, der, &derlen), 0);
	assert_int_equal(der[0], 0x30);
	assert_int_equal(p11_ecdsa_der_to_raw(der, derlen, 32, back), 0);
	assert_memory_equal(raw, back, 64);
	/* Trailing garbage and a half too long for the field: refused. */
	assert_int_equal(p11_ecdsa_der_to_raw(der, derlen - 1, 32, back), -1);
	assert_int_equal(p11_ecdsa_der_to_raw(der, derlen, 16, back), -1);
}

static void
test_error_mapping(void **state)
{
	(void)state;
	assert_int_equal(p11_rv_of(KMS_ERR_PERMISSION_DENIED, 0),
	    CKR_FUNCTION_REJECTED);
	assert_int_equal(p11_rv_of(KMS_ERR_FAILED_PRECONDITION, 0),
	    CKR_KEY_FUNCTION_NOT_PERMITTED);
	assert_int_equal(p11_rv_of(KMS_ERR_UNAVAILABLE, 0), CKR_DEVICE_ERROR);
	assert_int_equal(p11_rv_of(KMS_ERR_NOT_FOUND, 0),
	    CKR_KEY_HANDLE_INVALID);
	assert_int_equal(p11_rv_of(KMS_ERR_INVALID_ARGUMENT, 0),
	    CKR_DATA_INVALID);
	assert_int_equal(p11_rv_of(KMS_ERR_NOMEM, 0), CKR_HOST_MEMORY);
	/* No kmsd reached: whatever the code, the device failed. */
	assert_int_equal(p11_rv_of(KMS_ERR_PERMISSION_DENIED, 1),
	    CKR_DEVICE_ERROR);
	assert_int_equal(p11_rv_of(KMS_ERR_INTERNAL, 0), CKR_DEVICE_ERROR);
	assert_int_equal(p11_rv_of(KMS_ERR_AUDIT, 0), CKR_DEVICE_ERROR);
}

struct dir {
	char path[64];
};

static int
dir_setup(void **state)
{
	struct dir *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -1;
	strcpy(d->path, "/tmp/kms-p11.XXXXXX");
	if (mkdtemp(d->path) == NULL) {
		free(d);
		return -1;
	}
	*state = d;
	return 0;
}

static int
dir_teardown(void **state)
{
	struct dir *d = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->path);
	if (system(cmd) != 0)
		return -1;
	free(d);
	return 0;
}

static void
write_text(const char *dir, const char *name, const char *text, char *path,
    size_t size)
{
	FILE *f;

	snprintf(path, size, "%s/%s", dir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
}

static void
test_config_file(void **state)
{
	struct dir *d = *state;
	struct kms_status st;
	struct p11conf c;
	char path[256], want[320];

	write_text(d->path, "ok.conf", "; the CI job's\n[client]\n"
	    "addr = kms.example:7443\nca = pki/ca.pem\ncert = /abs/ci.pem\n"
	    "key = ci.key\nprefix = release/\ntimeout = 5\n", path,
	    sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), 0);
	assert_string_equal(c.addr, "kms.example:7443");
	snprintf(want, sizeof(want), "%s/pki/ca.pem", d->path);
	assert_string_equal(c.ca, want);
	assert_string_equal(c.cert, "/abs/ci.pem");
	snprintf(want, sizeof(want), "%s/ci.key", d->path);
	assert_string_equal(c.key, want);
	assert_string_equal(c.prefix, "release/");
	assert_int_equal(c.timeout, 5);

	/* Each broken file names itself and the line. */
	write_text(d->path, "bad.conf", "[client]\naddr = a:1\nport = 7\n",
	    path, sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:3: unknown key port", path);
	assert_non_null(strstr(st.msg, want));
	write_text(d->path, "sect.conf", "[server]\naddr = a:1\n", path,
	    sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, ":2: unknown section [server]"));
	write_text(d->path, "syntax.conf", "[client]\nthis is not ini\n",
	    path, sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, ":2: syntax error"));
	write_text(d->path, "time.conf", "[client]\ntimeout = 600\n", path,
	    sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, ":2: timeout must be"));
	write_text(d->path, "short.conf", "[client]\naddr = a:1\n", path,
	    sizeof(path));
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "needs addr, ca, cert and key"));
	snprintf(path, sizeof(path), "%s/missing.conf", d->path);
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(path, &c, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, path));
}

static void
test_config_environment(void **state)
{
	struct kms_status st;
	struct p11conf c;

	(void)state;
	setenv("KMS_HOME", "/srv/kms", 1);
	setenv("KMS_ADDR", "10.0.0.1:9443", 1);
	setenv("KMS_IDENTITY", "deploy", 1);
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(NULL, &c, &st), 0);
	assert_string_equal(c.addr, "10.0.0.1:9443");
	assert_string_equal(c.ca, "/srv/kms/pki/ca.pem");
	assert_string_equal(c.cert, "/srv/kms/pki/clients/deploy.pem");
	assert_string_equal(c.key, "/srv/kms/pki/clients/deploy.key");
	assert_int_equal(c.timeout, P11CONF_TIMEOUT_DEFAULT);
	setenv("KMS_IDENTITY", "../officer", 1);
	assert_int_equal(p11conf_load("", &c, &st), KMS_ERR_CONFIG);
	unsetenv("KMS_HOME");
	unsetenv("KMS_ADDR");
	unsetenv("KMS_IDENTITY");
	kms_status_clear(&st);
	assert_int_equal(p11conf_load(NULL, &c, &st), 0);
	assert_string_equal(c.addr, "127.0.0.1:7443");
	assert_string_equal(c.cert, "var/pki/clients/ci.pem");
}

/* The built module, through C_GetFunctionList. */
static CK_FUNCTION_LIST *
load_module(void)
{
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_FUNCTION_LIST *f = NULL;
	const char *build = getenv("BUILD");
	char path[256];
	void *h;

	snprintf(path, sizeof(path), "%s/libkms-pkcs11.so",
	    build != NULL ? build : "build");
	assert_non_null(h = dlopen(path, RTLD_NOW | RTLD_LOCAL));
	/* Nothing else is exported: no symbol of the module's insides. */
	assert_null(dlsym(h, "C_Initialize"));
	assert_null(dlsym(h, "kmsclient_open"));
	*(void **)&get = dlsym(h, "C_GetFunctionList");
	assert_non_null(get);
	assert_int_equal(get(&f), CKR_OK);
	return f;
}

/* PKCS#11 3.0's CK_INTERFACE (Debian 12's p11-kit headers stop at 2.40). */
struct interface {
	CK_CHAR *name;
	CK_VOID_PTR list;
	CK_FLAGS flags;
};

/*
 * C_GetInterfaceList and C_GetInterface, callable before C_Initialize:
 * one interface, "PKCS 11", whose list is C_GetFunctionList's; any other
 * name, version or flag is refused.
 */
static void
test_module_interfaces(void **state)
{
	CK_RV (*getlist)(struct interface *, CK_ULONG_PTR);
	CK_RV (*get)(CK_UTF8CHAR_PTR, CK_VERSION_PTR, struct interface **,
	    CK_FLAGS);
	CK_FUNCTION_LIST *f = load_module();
	const char *build = getenv("BUILD");
	struct interface list[2], *one = NULL;
	CK_VERSION v = { 2, 40 }, v3 = { 3, 0 };
	CK_ULONG n = 0;
	char path[256];
	void *h;

	(void)state;
	snprintf(path, sizeof(path), "%s/libkms-pkcs11.so",
	    build != NULL ? build : "build");
	assert_non_null(h = dlopen(path, RTLD_NOW | RTLD_LOCAL));
	*(void **)&getlist = dlsym(h, "C_GetInterfaceList");
	*(void **)&get = dlsym(h, "C_GetInterface");
	assert_non_null(getlist);
	assert_non_null(get);

	assert_int_equal(getlist(NULL, NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(getlist(NULL, &n), CKR_OK);
	assert_int_equal(n, 1);
	n = 0;
	assert_int_equal(getlist(list, &n), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(n, 1);
	n = 2;
	assert_int_equal(getlist(list, &n), CKR_OK);
	assert_int_equal(n, 1);
	assert_string_equal((char *)list[0].name, "PKCS 11");
	assert_ptr_equal(list[0].list, f);
	assert_int_equal(list[0].flags, 0);

	assert_int_equal(get(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
	assert_int_equal(get(NULL, NULL, &one, 0), CKR_OK);
	assert_ptr_equal(one->list, f);
	one = NULL;
	assert_int_equal(get((CK_UTF8CHAR_PTR)"PKCS 11", &v, &one, 0),
	    CKR_OK);
	assert_ptr_equal(one->list, f);
	assert_string_equal((char *)one->name, "PKCS 11");
	assert_int_equal(get((CK_UTF8CHAR_PTR)"Vendor kms", NULL, &one, 0),
	    CKR_ARGUMENTS_BAD);
	assert_int_equal(get(NULL, &v3, &one, 0), CKR_ARGUMENTS_BAD);
	assert_int_equal(get(NULL, NULL, &one, 1), CKR_ARGUMENTS_BAD);
	dlclose(h);
}

/* A configuration with PEM files that gRPC reads only when it connects. */
static void
module_config(const char *dir)
{
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nMA==\n"
	    "-----END CERTIFICATE-----\n";
	char path[256];

	write_text(dir, "ca.pem", pem, path, sizeof(path));
	write_text(dir, "ci.pem", pem, path, sizeof(path));
	write_text(dir, "ci.key", pem, path, sizeof(path));
	write_text(dir, "m.conf", "[client]\naddr = 127.0.0.1:1\n"
	    "ca = ca.pem\ncert = ci.pem\nkey = ci.key\n", path, sizeof(path));
	setenv("KMS_PKCS11_CONFIG", path, 1);
}

static void
test_module_fork_rule(void **state)
{
	struct dir *d = *state;
	CK_FUNCTION_LIST *f = load_module();
	CK_C_INITIALIZE_ARGS args;
	CK_SESSION_HANDLE s;
	CK_INFO info;
	CK_TOKEN_INFO ti;
	int status;
	pid_t pid;

	module_config(d->path);
	assert_int_equal(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	assert_int_equal(f->C_Initialize(&args), CKR_OK);
	assert_int_equal(f->C_Initialize(&args),
	    CKR_CRYPTOKI_ALREADY_INITIALIZED);
	assert_int_equal(f->C_GetTokenInfo(0, &ti), CKR_OK);
	assert_memory_equal(ti.label, "kms ", 4);
	assert_false(ti.flags & CKF_LOGIN_REQUIRED);
	assert_int_equal(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL,
	    &s), CKR_OK);
	assert_int_equal(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"any", 3),
	    CKR_OK);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The child: nothing works until it initialises again. */
		int bad = f->C_GetInfo(&info) != CKR_CRYPTOKI_NOT_INITIALIZED ||
		    f->C_GetTokenInfo(0, &ti) !=
		    CKR_CRYPTOKI_NOT_INITIALIZED ||
		    f->C_CloseSession(s) != CKR_CRYPTOKI_NOT_INITIALIZED ||
		    f->C_Finalize(NULL) != CKR_CRYPTOKI_NOT_INITIALIZED ||
		    f->C_Initialize(NULL) != CKR_OK ||
		    f->C_GetInfo(&info) != CKR_OK ||
		    f->C_CloseSession(s) != CKR_SESSION_HANDLE_INVALID ||
		    f->C_Finalize(NULL) != CKR_OK;
		_exit(bad ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The parent's module is untouched. */
	assert_int_equal(f->C_GetInfo(&info), CKR_OK);
	assert_int_equal(f->C_CloseSession(s), CKR_OK);
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	assert_int_equal(f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
}

static CK_RV
fake_create(CK_VOID_PTR_PTR m)
{
	(void)m;
	return CKR_OK;
}

static CK_RV
fake_mutex(CK_VOID_PTR m)
{
	(void)m;
	return CKR_OK;
}

static void
test_module_initialize_refusals(void **state)
{
	struct dir *d = *state;
	CK_FUNCTION_LIST *f = load_module();
	CK_C_INITIALIZE_ARGS args;
	char path[256];

	module_config(d->path);
	/* Only the operating system's locks. */
	memset(&args, 0, sizeof(args));
	args.CreateMutex = fake_create;
	args.DestroyMutex = fake_mutex;
	args.LockMutex = fake_mutex;
	args.UnlockMutex = fake_mutex;
	assert_int_equal(f->C_Initialize(&args), CKR_CANT_LOCK);
	args.LockMutex = NULL;
	assert_int_equal(f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
	/* A broken configuration fails C_Initialize, and nothing crashes. */
	write_text(d->path, "broken.conf", "[client]\naddr\n", path,
	    sizeof(path));
	setenv("KMS_PKCS11_CONFIG", path, 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
	snprintf(path, sizeof(path), "%s/none.conf", d->path);
	setenv("KMS_PKCS11_CONFIG", path, 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
	unsetenv("KMS_PKCS11_CONFIG");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_private_key_template),
		cmocka_unit_test(test_public_key_template),
		cmocka_unit_test(test_rsa_and_ed25519_templates),
		cmocka_unit_test(test_key_refuses_wrong_algorithm),
		cmocka_unit_test(test_certificate_object),
		cmocka_unit_test(test_digestinfo),
		cmocka_unit_test(test_mechanism_rules),
		cmocka_unit_test(test_mechanism_input),
		cmocka_unit_test(test_ecdsa_forms),
		cmocka_unit_test(test_error_mapping),
		cmocka_unit_test_setup_teardown(test_config_file, dir_setup,
		    dir_teardown),
		cmocka_unit_test(test_config_environment),
		cmocka_unit_test(test_module_interfaces),
		cmocka_unit_test_setup_teardown(test_module_fork_rule,
		    dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(
		    test_module_initialize_refusals, dir_setup, dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
