/*
 * test_hsm.c: the PKCS#11 layer against a real SoftHSM2 token, through
 * the fault-injecting module p11fault.so, so that device errors, lost
 * sessions, lost logins and stale handles are reached as well.
 *
 * The module is P11FAULT_SO, else $BUILD/p11fault.so, else
 * build/p11fault.so.  Signatures are checked with OpenSSL directly, not
 * with kms code.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "algo.h"
#include "auditkey.h"
#include "hsm.h"
#include "kmserr.h"
#include "p11token.h"
#include "pubkey.h"
#include "secret.h"

/* PKCS#11 return values used here (hsm.h keeps pkcs11.h to hsm.c). */
#define CKR_GENERAL_ERROR		0x05UL
#define CKR_DEVICE_ERROR		0x30UL
#define CKR_KEY_HANDLE_INVALID		0x60UL
#define CKR_OBJECT_HANDLE_INVALID	0x82UL
#define CKR_BUFFER_TOO_SMALL		0x150UL
#define CKR_SESSION_HANDLE_INVALID	0xB3UL
#define CKR_USER_NOT_LOGGED_IN		0x101UL

static struct hsm *hsm;
static struct hsm_session *s;

static int
setup(void **state)
{
	/* t for the tests, t2 for login failures (logins are per token). */
	static const char *const labels[] = { "t", "t2", NULL };
	struct kms_status st;

	(void)state;
	if (p11token_make("/tmp/kms-test-hsm.XXXXXX", labels) != 0)
		return -1;
	kms_status_clear(&st);
	if (hsm_open(module, "t", pin, &hsm, &st) != 0) {
		fprintf(stderr, "hsm_open %s: %s\n", module, st.msg);
		return -1;
	}
	if (p11token_faults() != 0)
		return -1;
	return hsm_session_open(hsm, &s);
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	hsm_session_close(s);
	hsm_close(hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
gen(const struct kms_alg_info *alg, const char *label, hsm_handle_t *priv,
    hsm_handle_t *pub)
{
	assert_int_equal(hsm_generate_key_pair(s, alg, label,
	    (const uint8_t *)label, strlen(label), priv, pub), 0);
	assert_int_not_equal(*priv, 0);
	assert_int_not_equal(*pub, 0);
}

/*
 * Checks sig over in with OpenSSL alone, following the rules of alg, and
 * that the DER SubjectPublicKeyInfo is a key of the right type and size.
 * Returns 1 when the signature verifies.
 */
static int
openssl_verify(const struct kms_alg_info *alg, const uint8_t *der,
    size_t derlen, const uint8_t *in, size_t inlen, const uint8_t *sig,
    size_t siglen)
{
	const unsigned char *p = der;
	EVP_PKEY *pk;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_MD_CTX *md = NULL;
	int ok;

	pk = d2i_PUBKEY(NULL, &p, (long)derlen);
	assert_non_null(pk);
	assert_ptr_equal(p, der + derlen);
	if (alg->family == KMS_FAMILY_EDDSA) {
		assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_ED25519);
		assert_int_equal(siglen, 64);
		assert_non_null(md = EVP_MD_CTX_new());
		assert_int_equal(EVP_DigestVerifyInit(md, NULL, NULL, NULL,
		    pk), 1);
		ok = EVP_DigestVerify(md, sig, siglen, in, inlen);
		EVP_MD_CTX_free(md);
		EVP_PKEY_free(pk);
		return ok == 1;
	}
	assert_int_equal(EVP_PKEY_get_bits(pk), (int)alg->bits);
	assert_non_null(ctx = EVP_PKEY_CTX_new(pk, NULL));
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	switch (alg->family) {
	case KMS_FAMILY_EC:
		assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_EC);
		break;
	case KMS_FAMILY_RSA_PKCS1:
		assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_RSA);
		assert_int_equal(siglen, alg->bits / 8);
		assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx,
		    RSA_PKCS1_PADDING) > 0);
		assert_true(EVP_PKEY_CTX_set_signature_md(ctx,
		    EVP_sha256()) > 0);
		break;
	case KMS_FAMILY_RSA_PSS:
		assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_RSA);
		assert_int_equal(siglen, alg->bits / 8);
		assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx,
		    RSA_PKCS1_PSS_PADDING) > 0);
		assert_true(EVP_PKEY_CTX_set_signature_md(ctx,
		    EVP_sha256()) > 0);
		assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx,
		    EVP_sha256()) > 0);
		assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) > 0);
		break;
	case KMS_FAMILY_RSA_RAW:
		/* No digest: the type-1 block must hold exactly in. */
		assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_RSA);
		assert_int_equal(siglen, alg->bits / 8);
		assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx,
		    RSA_PKCS1_PADDING) > 0);
		break;
	default:
		fail_msg("%s cannot sign", alg->name);
	}
	ok = EVP_PKEY_verify(ctx, sig, siglen, in, inlen);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return ok == 1;
}

/* Signs an input of the right length and checks it with OpenSSL. */
static void
sign_and_verify(const struct kms_alg_info *alg, hsm_handle_t priv,
    hsm_handle_t pub)
{
	uint8_t in[100], raw[HSM_SIG_MAX], sig[HSM_SIG_MAX], *der = NULL;
	size_t i, inlen, rawlen = sizeof(raw), siglen = sizeof(sig), derlen = 0;
	struct hsm_pubkey pk;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + alg->alg);
	inlen = alg->digest_len != 0 ? alg->digest_len : sizeof(in);
	assert_int_equal(hsm_sign(s, alg, priv, in, inlen, raw, &rawlen), 0);
	assert_true(rawlen > 0 && rawlen <= HSM_SIG_MAX);
	/* ECDSA comes out raw, r || s, and is encoded by pubkey.c. */
	if (alg->family == KMS_FAMILY_EC)
		assert_int_equal(rawlen, 2 * ((alg->bits + 7) / 8));
	assert_int_equal(pubkey_sig_encode(alg, raw, rawlen, sig, &siglen), 0);
	assert_int_equal(hsm_public_key(s, alg, pub, &pk), 0);
	assert_int_equal(pubkey_spki(alg, pk.a, pk.alen, pk.b, pk.blen, &der,
	    &derlen), 0);
	hsm_pubkey_clear(&pk);
	if (!openssl_verify(alg, der, derlen, in, inlen, sig, siglen))
		fail_msg("%s: signature does not verify", alg->name);
	/* A changed input must not verify. */
	in[0] ^= 1;
	assert_false(openssl_verify(alg, der, derlen, in, inlen, sig,
	    siglen));
	free(der);
	/* A digest of the wrong length is refused before the token. */
	if (alg->digest_len != 0) {
		siglen = sizeof(sig);
		assert_int_equal(hsm_sign(s, alg, priv, in, alg->digest_len - 1,
		    sig, &siglen), KMS_ERR_INVALID_ARGUMENT);
	}
}

static void
test_every_signing_algorithm(void **state)
{
	const struct kms_alg_info *alg;
	hsm_handle_t priv, pub;
	char label[64];
	int a, n = 0, ok;

	(void)state;
	for (a = 1; a <= KMS_ALG_MAX; a++) {
		alg = kms_alg_lookup(a);
		assert_non_null(alg);
		if (!alg->can_sign)
			continue;
		snprintf(label, sizeof(label), "t-%s", alg->name);
		gen(alg, label, &priv, &pub);
		sign_and_verify(alg, priv, pub);
		/* Generated inside: sensitive and never extractable. */
		assert_int_equal(hsm_key_is_protected(s, priv, &ok), 0);
		assert_true(ok);
		/* A public key is no secret. */
		ok = -1;
		assert_int_equal(hsm_key_is_protected(s, pub, &ok), 0);
		assert_int_equal(ok, 0);
		n++;
	}
	assert_int_equal(n, 10);
}

/*
 * The objects of test_find_list_and_data are labelled OWN_PREFIX...: the
 * token is shared with the other tests, whose objects it must not count.
 */
#define OWN_PREFIX "list-"

struct seen {
	const char *label;
	hsm_handle_t h;
	int found, count;
	const char *prefix;		/* NULL: count every object */
};

static int
seen_cb(const char *label, hsm_handle_t h, void *arg)
{
	struct seen *sn = arg;

	if (sn->prefix == NULL ||
	    strncmp(label, sn->prefix, strlen(sn->prefix)) == 0)
		sn->count++;
	if (sn->label != NULL && strcmp(label, sn->label) == 0) {
		sn->found++;
		sn->h = h;
	}
	return 0;
}

/* The objects labelled label, or with label NULL all of them. */
static int
count(enum hsm_obj_class cls, const char *label)
{
	struct seen sn = { label, 0, 0, 0, NULL };

	assert_int_equal(hsm_list(s, cls, seen_cb, &sn), 0);
	return label != NULL ? sn.found : sn.count;
}

/* The objects of class cls labelled OWN_PREFIX... */
static int
count_own(enum hsm_obj_class cls)
{
	struct seen sn = { NULL, 0, 0, 0, OWN_PREFIX };

	assert_int_equal(hsm_list(s, cls, seen_cb, &sn), 0);
	return sn.count;
}

static int
stop_cb(const char *label, hsm_handle_t h, void *arg)
{
	(void)label;
	(void)h;
	(*(int *)arg)++;
	return 42;
}

static void
test_find_list_and_data(void **state)
{
	const struct kms_alg_info *alg = kms_alg_lookup(KMS_ALG_ED25519);
	struct seen sn = { "list-key", 0, 0, 0, NULL };
	uint8_t *v = NULL, r1[32], r2[32];
	size_t len, nfound;
	hsm_handle_t d1, d2, h, priv, pub, old, found[2];
	char label[HSM_LABEL_MAX];
	int n = 0;

	(void)state;
	/* Keys: found by class and label, listed with the same handle. */
	gen(alg, "list-key", &priv, &pub);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "list-key", &h), 0);
	assert_int_equal(h, priv);
	assert_int_equal(hsm_find(s, HSM_OBJ_PUBLIC_KEY, "list-key", &h), 0);
	assert_int_equal(h, pub);
	assert_int_equal(hsm_find(s, HSM_OBJ_SECRET_KEY, "list-key", &h),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(hsm_list(s, HSM_OBJ_PRIVATE_KEY, seen_cb, &sn), 0);
	assert_int_equal(sn.found, 1);
	assert_int_equal(sn.h, priv);

	/* Data objects: create, find, replace, read, list, destroy. */
	assert_int_equal(hsm_data_create(s, "list-a", (const uint8_t *)"one",
	    3, &d1), 0);
	assert_int_equal(hsm_data_create(s, "list-b", (const uint8_t *)"two",
	    3, &d2), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-b", &h), 0);
	assert_int_equal(h, d2);
	old = d2;
	assert_int_equal(hsm_data_set(s, "list-b", &d2,
	    (const uint8_t *)"three", 5), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-b", &h), 0);
	assert_int_equal(h, d2);
	assert_int_equal(count(HSM_OBJ_DATA, "list-b"), 1);
	if (d2 != old)
		assert_int_equal(hsm_data_get(s, old, &v, &len),
		    KMS_ERR_STALE_HANDLE);
	assert_int_equal(hsm_data_get(s, d2, &v, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal((char *)v, "three");
	free(v);
	v = NULL;
	/* A label changed in place; found by value whatever its label. */
	assert_int_equal(hsm_label_set(s, d2, "list-b2"), 0);
	assert_int_equal(hsm_label_get(s, d2, label, sizeof(label)), 0);
	assert_string_equal(label, "list-b2");
	assert_int_equal(hsm_label_get(s, d2, label, 4), KMS_ERR_HSM);
	assert_int_equal(hsm_find_data_value(s, (const uint8_t *)"three", 5,
	    found, 2, &nfound), 0);
	assert_int_equal(nfound, 1);
	assert_int_equal(found[0], d2);
	assert_int_equal(hsm_find_data_value(s, (const uint8_t *)"thre", 4,
	    found, 2, &nfound), 0);
	assert_int_equal(nfound, 0);
	assert_int_equal(hsm_label_set(s, d2, "list-b"), 0);
	assert_int_equal(count(HSM_OBJ_DATA, "list-a"), 1);
	assert_int_equal(count_own(HSM_OBJ_DATA), 2);
	/* Keys are not data, data objects are not keys. */
	assert_int_equal(count(HSM_OBJ_DATA, "list-key"), 0);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY, "list-a"), 0);
	/* A non-zero return from the callback stops the walk. */
	assert_int_equal(hsm_list(s, HSM_OBJ_DATA, stop_cb, &n), 42);
	assert_int_equal(n, 1);
	assert_int_equal(hsm_destroy(s, d1), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-a", &h),
	    KMS_ERR_NOT_FOUND);
	/* A destroyed object's handle is stale, not a crash. */
	assert_int_equal(hsm_data_get(s, d1, &v, &len), KMS_ERR_STALE_HANDLE);
	assert_null(v);
	assert_int_equal(hsm_destroy(s, d2), 0);
	assert_int_equal(count_own(HSM_OBJ_DATA), 0);
	assert_int_equal(hsm_destroy(s, priv), 0);
	assert_int_equal(hsm_destroy(s, pub), 0);

	/* The generator gives different bytes each time. */
	assert_int_equal(hsm_random(s, r1, sizeof(r1)), 0);
	assert_int_equal(hsm_random(s, r2, sizeof(r2)), 0);
	assert_memory_not_equal(r1, r2, sizeof(r1));
}

static void
test_wrap_unwrap(void **state)
{
	const struct kms_alg_info *alg = kms_alg_lookup(KMS_ALG_AES_256_KWP);
	static const size_t sizes[] = { 1, 8, 37, HSM_WRAP_MAX_IN };
	uint8_t *in, *out;
	size_t i, j, n, outlen, cap = HSM_WRAP_MAX_IN + 16;
	struct secret *plain = NULL;
	unsigned long mech = 0;
	hsm_handle_t kek;
	int ok, secrets;

	(void)state;
	assert_non_null(in = malloc(HSM_WRAP_MAX_IN));
	assert_non_null(out = malloc(cap));
	for (i = 0; i < HSM_WRAP_MAX_IN; i++)
		in[i] = (uint8_t)(i * 13 + 1);
	assert_int_equal(hsm_generate_secret_key(s, alg, "kek", (const
	    uint8_t *)"kek", 3, &kek), 0);
	assert_int_equal(hsm_key_is_protected(s, kek, &ok), 0);
	assert_true(ok);
	assert_int_equal(hsm_find(s, HSM_OBJ_SECRET_KEY, "kek", &kek), 0);
	secrets = count(HSM_OBJ_SECRET_KEY, NULL);
	assert_int_equal(secrets, 1);

	for (j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
		n = sizes[j];
		outlen = cap;
		assert_int_equal(hsm_wrap(s, kek, in, n, out, &outlen, &mech),
		    0);
		assert_int_equal(mech, 0x210AUL);
		assert_int_equal(outlen, (n + 7) / 8 * 8 + 8);
		/*
		 * A ciphertext may match a short input by chance (1 in 256
		 * for one byte): compare only where a match cannot be luck.
		 */
		if (n >= 8)
			assert_memory_not_equal(out, in, 8);
		assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen,
		    &plain), 0);
		/* SoftHSM pads to a multiple of 8; the bytes survive. */
		assert_true(plain->len >= n && plain->len <= (n + 7) / 8 * 8);
		assert_memory_equal(plain->buf, in, n);
		secret_free(plain);
		plain = NULL;
		/* The transient objects are gone. */
		assert_int_equal(count(HSM_OBJ_SECRET_KEY, NULL), secrets);
	}

	/* Tampered or cut short: the integrity check fails. */
	outlen = cap;
	assert_int_equal(hsm_wrap(s, kek, in, 37, out, &outlen, &mech), 0);
	out[5] ^= 0x80;
	assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen, &plain),
	    KMS_ERR_VERIFY_FAILED);
	assert_null(plain);
	out[5] ^= 0x80;
	assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen - 8, &plain),
	    KMS_ERR_VERIFY_FAILED);
	assert_null(plain);
	assert_int_equal(count(HSM_OBJ_SECRET_KEY, NULL), secrets);

	/* Bad sizes are refused before the token. */
	outlen = 47;
	assert_int_equal(hsm_wrap(s, kek, in, 37, out, &outlen, &mech),
	    KMS_ERR_INVALID_ARGUMENT);
	outlen = cap;
	assert_int_equal(hsm_wrap(s, kek, in, 0, out, &outlen, &mech),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(hsm_wrap(s, kek, in, HSM_WRAP_MAX_IN + 1, out,
	    &outlen, &mech), KMS_ERR_INVALID_ARGUMENT);

	/* A failed wrap leaves no transient object behind either. */
	fault_set("C_WrapKey", 1, CKR_DEVICE_ERROR);
	outlen = cap;
	assert_int_equal(hsm_wrap(s, kek, in, 37, out, &outlen, &mech),
	    KMS_ERR_UNAVAILABLE);
	assert_int_equal(count(HSM_OBJ_SECRET_KEY, NULL), secrets);
	/* A session lost in the middle of a wrap: done again in a new one. */
	fault_set("C_WrapKey", 1, CKR_SESSION_HANDLE_INVALID);
	outlen = cap;
	assert_int_equal(hsm_wrap(s, kek, in, 37, out, &outlen, &mech), 0);
	assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen, &plain), 0);
	assert_memory_equal(plain->buf, in, 37);
	secret_free(plain);
	assert_int_equal(count(HSM_OBJ_SECRET_KEY, NULL), secrets);
	fault_clear();
	free(in);
	free(out);
}

static void
test_open_errors(void **state)
{
	char bad[160];
	struct hsm *h = NULL;
	struct kms_status st;

	(void)state;
	kms_status_clear(&st);
	assert_int_not_equal(hsm_open("/nonexistent/p11.so", "t", pin, &h,
	    &st), 0);
	assert_non_null(strstr(st.msg, "/nonexistent/p11.so"));
	assert_null(h);
	kms_status_clear(&st);
	assert_int_equal(hsm_open(module, "no-such-token", pin, &h, &st),
	    KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "no-such-token"));
	assert_null(h);
	snprintf(bad, sizeof(bad), "%s/badpin", dir);
	write_file(bad, "9999\n", 0600);
	kms_status_clear(&st);
	assert_int_equal(hsm_open(module, "t2", bad, &h, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "wrong PIN"));
	assert_null(h);
	write_file(bad, "1234\n", 0644);
	kms_status_clear(&st);
	assert_int_equal(hsm_open(module, "t2", bad, &h, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, bad));
	assert_non_null(strstr(st.msg, "0600"));
	assert_null(h);
	snprintf(bad, sizeof(bad), "%s/missing", dir);
	kms_status_clear(&st);
	assert_int_not_equal(hsm_open(module, "t2", bad, &h, &st), 0);
	assert_non_null(strstr(st.msg, bad));
	assert_null(h);
	/* The right PIN still works on t2 after all that. */
	kms_status_clear(&st);
	assert_int_equal(hsm_open(module, "t2", pin, &h, &st), 0);
	hsm_close(h);
}

static int
sign32(const struct kms_alg_info *alg, hsm_handle_t priv)
{
	uint8_t md[32], sig[HSM_SIG_MAX];
	size_t siglen = sizeof(sig);

	memset(md, 1, sizeof(md));
	return hsm_sign(s, alg, priv, md, sizeof(md), sig, &siglen);
}

static void
test_faults_are_recovered_or_reported(void **state)
{
	const struct kms_alg_info *alg = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	hsm_handle_t priv, pub, h;
	unsigned long opens, logins;
	int npriv, npub;

	(void)state;
	gen(alg, "fault", &priv, &pub);

	/* A device error is reported as UNAVAILABLE; the next call works. */
	fault_set("C_Sign", 1, CKR_DEVICE_ERROR);
	assert_int_equal(sign32(alg, priv), KMS_ERR_UNAVAILABLE);
	assert_int_equal(sign32(alg, priv), 0);
	fault_set("C_SignInit", 1, CKR_DEVICE_ERROR);
	assert_int_equal(sign32(alg, priv), KMS_ERR_UNAVAILABLE);
	assert_int_equal(sign32(alg, priv), 0);

	/* A lost session (really closed) is reopened and the call retried. */
	opens = fault_calls("C_OpenSession");
	fault_set("C_Sign", 1, CKR_SESSION_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), 0);
	assert_int_equal(fault_calls("C_OpenSession"), opens + 1);
	fault_set("C_SignInit", 1, CKR_SESSION_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), 0);
	assert_int_equal(fault_calls("C_OpenSession"), opens + 2);
	fault_set("C_FindObjectsInit", 1, CKR_SESSION_HANDLE_INVALID);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "fault", &h), 0);
	assert_int_equal(h, priv);
	assert_int_equal(sign32(alg, priv), 0);

	/*
	 * A lost login (the application really logged out) is renewed from
	 * the PIN file and the call retried.  Private objects are visible
	 * only when logged in, so finding the key proves the new login.
	 */
	logins = fault_calls("C_Login");
	fault_set("C_FindObjectsInit", 1, CKR_USER_NOT_LOGGED_IN);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "fault", &h), 0);
	assert_int_equal(fault_calls("C_Login"), logins + 1);
	/*
	 * SoftHSM2 forgets the handles of private objects at logout and
	 * hands out new ones after the new login: the old handle is stale,
	 * which the caller repairs by looking the key up again.
	 */
	assert_int_not_equal(h, priv);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	priv = h;
	assert_int_equal(sign32(alg, priv), 0);
	fault_set("C_Sign", 1, CKR_USER_NOT_LOGGED_IN);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	assert_int_equal(fault_calls("C_Login"), logins + 2);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "fault", &priv), 0);
	assert_int_equal(sign32(alg, priv), 0);
	/* A public object's handle survives a new login. */
	fault_set("C_GetAttributeValue", 1, CKR_USER_NOT_LOGGED_IN);
	{
		struct hsm_pubkey pk;

		assert_int_equal(hsm_public_key(s, alg, pub, &pk), 0);
		assert_non_null(pk.a);
		hsm_pubkey_clear(&pk);
	}
	assert_int_equal(fault_calls("C_Login"), logins + 3);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "fault", &priv), 0);

	/* A stale handle tells the caller to look the object up again. */
	fault_set("C_SignInit", 1, CKR_OBJECT_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	fault_set("C_SignInit", 1, CKR_KEY_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	fault_set("C_Sign", 1, CKR_KEY_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	fault_set("C_Sign", 1, CKR_OBJECT_HANDLE_INVALID);
	assert_int_equal(sign32(alg, priv), KMS_ERR_STALE_HANDLE);
	assert_int_equal(sign32(alg, priv), 0);

	/* Anything else is an HSM error. */
	fault_set("C_Sign", 1, CKR_GENERAL_ERROR);
	assert_int_equal(sign32(alg, priv), KMS_ERR_HSM);
	assert_int_equal(sign32(alg, priv), 0);

	/* A failed generation returns an error and leaves nothing behind. */
	npriv = count(HSM_OBJ_PRIVATE_KEY, NULL);
	npub = count(HSM_OBJ_PUBLIC_KEY, NULL);
	fault_set("C_GenerateKeyPair", 1, CKR_DEVICE_ERROR);
	assert_int_equal(hsm_generate_key_pair(s, alg, "never", (const
	    uint8_t *)"n", 1, &h, &h), KMS_ERR_UNAVAILABLE);
	fault_set("C_GenerateKeyPair", 1, CKR_GENERAL_ERROR);
	assert_int_equal(hsm_generate_key_pair(s, alg, "never", (const
	    uint8_t *)"n", 1, &h, &h), KMS_ERR_HSM);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "never", &h),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(hsm_find(s, HSM_OBJ_PUBLIC_KEY, "never", &h),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY, NULL), npriv);
	assert_int_equal(count(HSM_OBJ_PUBLIC_KEY, NULL), npub);
	fault_set("C_GenerateKey", 1, CKR_DEVICE_ERROR);
	assert_int_equal(hsm_generate_secret_key(s, kms_alg_lookup(
	    KMS_ALG_AES_256_KWP), "never", (const uint8_t *)"n", 1, &h),
	    KMS_ERR_UNAVAILABLE);
	assert_int_equal(hsm_find(s, HSM_OBJ_SECRET_KEY, "never", &h),
	    KMS_ERR_NOT_FOUND);

	/* Random numbers and data objects fail cleanly too. */
	{
		uint8_t r[16];

		fault_set("C_GenerateRandom", 1, CKR_DEVICE_ERROR);
		assert_int_equal(hsm_random(s, r, sizeof(r)),
		    KMS_ERR_UNAVAILABLE);
		assert_int_equal(hsm_random(s, r, sizeof(r)), 0);
		fault_set("C_CreateObject", 1, CKR_GENERAL_ERROR);
		assert_int_equal(hsm_data_create(s, "x", r, 4, &h),
		    KMS_ERR_HSM);
		assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "x", &h),
		    KMS_ERR_NOT_FOUND);
	}
	fault_clear();
}

/* What hsm_list_data showed of the objects labelled "ld-*". */
struct listed {
	hsm_handle_t destroy;		/* destroyed at the first callback */
	int all, ours, small, big, stop;
	int first_big;			/* ld-big was the first one listed */
	size_t big_len;
};

static int
listed_cb(const struct hsm_object *o, void *arg)
{
	struct listed *l = arg;
	size_t i;

	l->all++;
	if (l->destroy != 0) {
		assert_int_equal(hsm_destroy(s, l->destroy), 0);
		l->destroy = 0;
		l->first_big = strcmp(o->label, "ld-big") == 0;
	}
	if (strncmp(o->label, "ld-", 3) != 0)
		return 0;
	l->ours++;
	/* Both NUL-terminated, the NUL not counted. */
	assert_int_equal(o->value[o->value_len], '\0');
	if (strcmp(o->label, "ld-small") == 0) {
		assert_int_equal(o->value_len, 5);
		assert_memory_equal(o->value, "small", 5);
		l->small++;
	} else if (strcmp(o->label, "ld-big") == 0) {
		l->big_len = o->value_len;
		for (i = 0; i < o->value_len; i++)
			if (o->value[i] != (uint8_t)('a' + i % 26))
				fail_msg("ld-big: byte %zu differs", i);
		l->big++;
	}
	return l->stop;
}

static void
list_data(struct listed *l, int want)
{
	assert_int_equal(hsm_list_data(s, listed_cb, l), want);
}

static void
test_list_data(void **state)
{
	struct listed l;
	uint8_t *big;
	size_t i, n = 10000;
	unsigned long calls;
	hsm_handle_t hs, hb, priv, pub;

	(void)state;
	assert_non_null(big = malloc(n));
	for (i = 0; i < n; i++)
		big[i] = (uint8_t)('a' + i % 26);
	assert_int_equal(hsm_data_create(s, "ld-small",
	    (const uint8_t *)"small", 5, &hs), 0);
	/* Larger than the listing's first value buffer. */
	assert_int_equal(hsm_data_create(s, "ld-big", big, n, &hb), 0);
	/* A key is not a data object. */
	gen(kms_alg_lookup(KMS_ALG_EC_P256_SHA256), "ld-key", &priv, &pub);

	/*
	 * One call per object in the usual case; the big value is too
	 * large for the buffer (CKR_BUFFER_TOO_SMALL), so it costs a size
	 * query and a read with the exact sizes more.
	 */
	memset(&l, 0, sizeof(l));
	calls = fault_calls("C_GetAttributeValue");
	list_data(&l, 0);
	assert_int_equal(l.ours, 2);
	assert_int_equal(l.small, 1);
	assert_int_equal(l.big, 1);
	assert_int_equal(l.big_len, n);
	assert_int_equal(fault_calls("C_GetAttributeValue") - calls,
	    (unsigned long)l.all + 2);

	/* CKR_BUFFER_TOO_SMALL from the module: the exact sizes, again. */
	fault_set("C_GetAttributeValue", 1, CKR_BUFFER_TOO_SMALL);
	memset(&l, 0, sizeof(l));
	list_data(&l, 0);
	assert_int_equal(l.small + l.big, 2);

	/* A non-zero return stops the walk and is returned. */
	memset(&l, 0, sizeof(l));
	l.stop = 7;
	list_data(&l, 7);
	assert_int_equal(l.all, 1);

	/*
	 * An object destroyed between the search and its read (by another
	 * process, here by the callback) is skipped, not an error.
	 */
	fault_set("C_GetAttributeValue", 1, CKR_OBJECT_HANDLE_INVALID);
	memset(&l, 0, sizeof(l));
	list_data(&l, 0);
	assert_int_equal(l.ours, 1);
	memset(&l, 0, sizeof(l));
	l.destroy = hb;
	list_data(&l, 0);
	assert_int_equal(l.small, 1);
	assert_int_equal(l.big, l.first_big);
	memset(&l, 0, sizeof(l));
	list_data(&l, 0);
	assert_int_equal(l.ours, 1);
	assert_int_equal(l.small, 1);

	/* Any other failure stops the listing. */
	fault_set("C_GetAttributeValue", 1, CKR_DEVICE_ERROR);
	memset(&l, 0, sizeof(l));
	list_data(&l, KMS_ERR_UNAVAILABLE);
	fault_set("C_FindObjectsInit", 1, CKR_DEVICE_ERROR);
	list_data(&l, KMS_ERR_UNAVAILABLE);
	fault_clear();

	assert_int_equal(hsm_destroy(s, hs), 0);
	assert_int_equal(hsm_destroy(s, priv), 0);
	assert_int_equal(hsm_destroy(s, pub), 0);
	free(big);
}

static void
test_find_key_pair(void **state)
{
	const struct kms_alg_info *ec = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	const struct kms_alg_info *ed = kms_alg_lookup(KMS_ALG_ED25519);
	hsm_handle_t priv, pub, p, q, d;
	unsigned long finds;

	(void)state;
	assert_int_equal(hsm_find_key_pair(s, ec, "kp", &p, &q),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(p, 0);
	assert_int_equal(q, 0);
	gen(ec, "kp", &priv, &pub);
	/* A data object of the same label is not half of the pair. */
	assert_int_equal(hsm_data_create(s, "kp", (const uint8_t *)"x", 1,
	    &d), 0);
	finds = fault_calls("C_FindObjectsInit");
	assert_int_equal(hsm_find_key_pair(s, ec, "kp", &p, &q), 0);
	assert_int_equal(fault_calls("C_FindObjectsInit") - finds, 1);
	assert_int_equal(p, priv);
	assert_int_equal(q, pub);
	/* A pair of another key type is not this one. */
	assert_int_equal(hsm_find_key_pair(s, ed, "kp", &p, &q),
	    KMS_ERR_NOT_FOUND);
	/* Secret keys come in no pairs. */
	assert_int_equal(hsm_find_key_pair(s,
	    kms_alg_lookup(KMS_ALG_AES_256_KWP), "kp", &p, &q),
	    KMS_ERR_INVALID_ARGUMENT);
	/* Half of it destroyed meanwhile: not found, and no error. */
	fault_set("C_GetAttributeValue", 1, CKR_OBJECT_HANDLE_INVALID);
	assert_int_equal(hsm_find_key_pair(s, ec, "kp", &p, &q),
	    KMS_ERR_NOT_FOUND);
	fault_set("C_GetAttributeValue", 1, CKR_DEVICE_ERROR);
	assert_int_equal(hsm_find_key_pair(s, ec, "kp", &p, &q),
	    KMS_ERR_UNAVAILABLE);
	assert_int_equal(hsm_destroy(s, pub), 0);
	assert_int_equal(hsm_find_key_pair(s, ec, "kp", &p, &q),
	    KMS_ERR_NOT_FOUND);
	fault_clear();
	assert_int_equal(hsm_destroy(s, priv), 0);
	assert_int_equal(hsm_destroy(s, d), 0);
}

/* Signs a message with the audit key and checks it against its spki. */
static void
audit_sign_and_verify(struct audit_key *k)
{
	uint8_t md[32], sig[HSM_SIG_MAX];
	size_t siglen = sizeof(sig);

	memset(md, 0x5a, sizeof(md));
	assert_int_equal(audit_key_sign(k, md, sizeof(md), sig, &siglen), 0);
	assert_true(openssl_verify(k->alg, k->spki, k->spki_len, md,
	    sizeof(md), sig, siglen));
}

/* An anchor kept outside the token: one value in memory. */
struct fake_anchor {
	char label[128];
	char v[512];
	size_t len;
};

static int
fake_anchor_get(void *arg, const char *label, char **value, size_t *len)
{
	struct fake_anchor *f = arg;

	if (f->len == 0 || strcmp(label, f->label) != 0)
		return KMS_ERR_NOT_FOUND;
	if ((*value = malloc(f->len + 1)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(*value, f->v, f->len + 1);
	*len = f->len;
	return 0;
}

static int
fake_anchor_set(void *arg, const char *label, const char *value, size_t len)
{
	struct fake_anchor *f = arg;

	if (len >= sizeof(f->v))
		return KMS_ERR_INVALID_ARGUMENT;
	snprintf(f->label, sizeof(f->label), "%s", label);
	memcpy(f->v, value, len);
	f->v[len] = '\0';
	f->len = len;
	return 0;
}

static void
test_audit_key(void **state)
{
	struct audit_key k, k2;
	struct kms_status st;
	hsm_handle_t found[4];
	unsigned long finds, gens;
	size_t n;

	(void)state;
	kms_status_clear(&st);
	/* Missing: made, and usable at once. */
	gens = fault_calls("C_GenerateKeyPair");
	assert_int_equal(audit_key_open(hsm, "ut", &k, &st), 0);
	assert_int_equal(fault_calls("C_GenerateKeyPair") - gens, 1);
	assert_string_equal(k.label, "kms-audit-ed25519#ut");
	assert_non_null(k.spki);
	audit_sign_and_verify(&k);

	/*
	 * Present: found in one search each (the pair, the seal key, the
	 * anchor), nothing made.
	 */
	finds = fault_calls("C_FindObjectsInit");
	assert_int_equal(audit_key_open(hsm, "ut", &k2, &st), 0);
	assert_int_equal(fault_calls("C_FindObjectsInit") - finds, 3);
	assert_int_equal(fault_calls("C_GenerateKeyPair") - gens, 1);
	assert_int_equal(k2.priv, k.priv);
	assert_int_equal(k2.spki_len, k.spki_len);
	assert_memory_equal(k2.spki, k.spki, k.spki_len);
	assert_int_equal(hsm_find_all(s, HSM_OBJ_PRIVATE_KEY,
	    "kms-audit-ed25519#ut", found, 4, &n), 0);
	assert_int_equal(n, 1);
	audit_key_close(&k2);

	/* A handle gone stale is looked up again. */
	fault_set("C_SignInit", 1, CKR_KEY_HANDLE_INVALID);
	audit_sign_and_verify(&k);
	/* Another failure is the caller's. */
	fault_set("C_FindObjectsInit", 1, CKR_DEVICE_ERROR);
	assert_int_equal(audit_key_open(hsm, "ut", &k2, &st),
	    KMS_ERR_UNAVAILABLE);
	audit_key_close(&k2);
	fault_clear();

	/* The seal key MACs in the token; the anchor round-trips. */
	{
		uint8_t m1[32], m2[32], m3[32];
		char *v = NULL;
		size_t vlen;

		assert_int_equal(audit_key_mac(&k, (const uint8_t *)"batch", 5,
		    m1), 0);
		assert_int_equal(audit_key_mac(&k, (const uint8_t *)"batch", 5,
		    m2), 0);
		assert_int_equal(audit_key_mac(&k, (const uint8_t *)"batcH", 5,
		    m3), 0);
		assert_memory_equal(m1, m2, 32);
		assert_memory_not_equal(m1, m3, 32);
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen),
		    KMS_ERR_NOT_FOUND);
		assert_int_equal(audit_key_anchor_set(&k, "one", 3), 0);
		assert_int_equal(audit_key_anchor_set(&k, "two!", 4), 0);
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen), 0);
		assert_int_equal(vlen, 4);
		assert_string_equal(v, "two!");
		free(v);
		assert_int_equal(hsm_destroy(s, k.anchor), 0);
	}

	/* Kept elsewhere, the anchor is sealed by the seal key. */
	{
		const char *text = "kms-audit-anchor-v1\nchain=ut\nbase=1\n"
		    "size=2\nroot=00\n";
		struct fake_anchor f;
		char *v = NULL, *w = NULL;
		size_t vlen, wlen;

		memset(&f, 0, sizeof(f));
		audit_key_anchor_elsewhere(&k, "memory", fake_anchor_get,
		    fake_anchor_set, &f);
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen),
		    KMS_ERR_NOT_FOUND);
		assert_int_equal(audit_key_anchor_set(&k, text, strlen(text)),
		    0);
		assert_string_equal(f.label, "kms-audit!anchor#ut");
		assert_int_equal(f.len, strlen(text) + 69);
		assert_memory_equal(f.v, text, strlen(text));
		assert_memory_equal(f.v + strlen(text), "mac=", 4);
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen), 0);
		assert_int_equal(vlen, strlen(text));
		assert_string_equal(v, text);
		free(v);
		/* The same seal by a session and the label alone. */
		assert_int_equal(audit_anchor_seal(s, f.label, text,
		    strlen(text), &w, &wlen), 0);
		assert_int_equal(wlen, f.len);
		assert_memory_equal(w, f.v, wlen);
		free(w);
		assert_int_equal(audit_anchor_open(s, f.label, f.v, f.len, &w,
		    &wlen), 0);
		assert_string_equal(w, text);
		free(w);
		/* Under another label (no seal key, or not an anchor's). */
		assert_int_equal(audit_anchor_open(s, "kms-audit!anchor#ut2",
		    f.v, f.len, &w, &wlen), KMS_ERR_VERIFY_FAILED);
		assert_int_equal(audit_anchor_open(s, "kms-audit!seal#ut",
		    f.v, f.len, &w, &wlen), KMS_ERR_INVALID_ARGUMENT);
		assert_null(w);
		/* Changed text, changed MAC, or no MAC: refused. */
		f.v[strlen(text) - 2] = '1';
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen),
		    KMS_ERR_VERIFY_FAILED);
		assert_null(v);
		f.v[strlen(text) - 2] = '0';
		f.v[strlen(text) + 4] ^= 1;
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen),
		    KMS_ERR_VERIFY_FAILED);
		f.v[strlen(text) + 4] ^= 1;
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen), 0);
		free(v);
		f.len = strlen(text);
		f.v[f.len] = '\0';
		assert_int_equal(audit_key_anchor_get(&k, &v, &vlen),
		    KMS_ERR_VERIFY_FAILED);
		assert_int_equal(hsm_destroy(s, k.seal), 0);
	}
	audit_key_close(&k);
	audit_key_close(&k);	/* a closed key closes again */
}

/*
 * The child half of test_fault_from_environment: a fresh process whose
 * P11FAULT makes its second C_GenerateRandom fail.
 */
static int
env_child(const char *mod, const char *pinfile)
{
	struct hsm *h = NULL;
	struct hsm_session *cs = NULL;
	struct kms_status st;
	uint8_t r[8];
	int ok;

	kms_status_clear(&st);
	if (hsm_open(mod, "t", pinfile, &h, &st) != 0 ||
	    hsm_session_open(h, &cs) != 0)
		return 2;
	ok = hsm_random(cs, r, sizeof(r)) == 0 &&
	    hsm_random(cs, r, sizeof(r)) == KMS_ERR_UNAVAILABLE &&
	    hsm_random(cs, r, sizeof(r)) == 0;
	hsm_session_close(cs);
	hsm_close(h);
	return ok ? 0 : 1;
}

static void
test_fault_from_environment(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	if ((pid = fork()) == 0) {
		setenv("P11FAULT", "C_GenerateRandom:2:0x30", 1);
		execl("/proc/self/exe", "test_hsm", "--env-child", module, pin,
		    (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_signing_algorithm),
		cmocka_unit_test(test_find_list_and_data),
		cmocka_unit_test(test_list_data),
		cmocka_unit_test(test_find_key_pair),
		cmocka_unit_test(test_audit_key),
		cmocka_unit_test(test_wrap_unwrap),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_faults_are_recovered_or_reported),
		cmocka_unit_test(test_fault_from_environment),
	};

	if (argc == 4 && strcmp(argv[1], "--env-child") == 0)
		return env_child(argv[2], argv[3]);
	return cmocka_run_group_tests(tests, setup, teardown);
}
