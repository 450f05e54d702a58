/*
 * test_capgo.c: the Capgo bundle format (kmsctl/capgo.c): round trips
 * through a local RSA key standing in for kms, a bundle made by Capgo's
 * own CLI (@capgo/cli 8.68.1, V3 checksum) as a known answer, and every
 * way a bundle, its strings or its public key can be wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "capgo.h"
#include "capgo_kat.h"
#include "kmserr.h"

struct keys {
	EVP_PKEY *signer;	/* stands in for the kms key */
	EVP_PKEY *other;
	EVP_PKEY *small;	/* RSA-1024 */
};

/* What the sign callback does, so that tests can make it misbehave. */
struct sign_arg {
	EVP_PKEY *key;
	EVP_PKEY *check;	/* what prepare hands out; NULL: no check */
	int prepare_fails;
	int calls;
	int fail_at;		/* 1-based call that fails; 0: none */
	int corrupt;		/* flip a bit of the result */
};

static int
local_sign(void *arg, const uint8_t *in, size_t inlen,
    uint8_t sig[CAPGO_RSA_LEN], struct kms_status *st)
{
	struct sign_arg *a = arg;
	EVP_PKEY_CTX *ctx;
	size_t n = CAPGO_RSA_LEN;
	int ok;

	a->calls++;
	if (a->fail_at == a->calls)
		return kms_status_set(st, KMS_ERR_PERMISSION_DENIED, "denied");
	assert_true(inlen == CAPGO_KEY_LEN || inlen == CAPGO_SUM_LEN);
	/* PKCS#1 v1.5 type 1 over the raw bytes: no digest set. */
	ctx = EVP_PKEY_CTX_new(a->key, NULL);
	assert_non_null(ctx);
	ok = EVP_PKEY_sign_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
	    EVP_PKEY_sign(ctx, sig, &n, in, inlen) == 1 && n == CAPGO_RSA_LEN;
	EVP_PKEY_CTX_free(ctx);
	assert_true(ok);
	if (a->corrupt)
		sig[CAPGO_RSA_LEN / 2] ^= 0x01;
	return 0;
}

static int
local_prepare(void *arg, EVP_PKEY **check, struct kms_status *st)
{
	struct sign_arg *a = arg;

	if (a->prepare_fails)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "no key");
	*check = a->check;
	return 0;
}

static int
setup(void **state)
{
	struct keys *k = calloc(1, sizeof(*k));

	if (k == NULL || (k->signer = EVP_RSA_gen(2048)) == NULL ||
	    (k->other = EVP_RSA_gen(2048)) == NULL ||
	    (k->small = EVP_RSA_gen(1024)) == NULL)
		return -1;
	*state = k;
	return 0;
}

static int
teardown(void **state)
{
	struct keys *k = *state;

	EVP_PKEY_free(k->signer);
	EVP_PKEY_free(k->other);
	EVP_PKEY_free(k->small);
	free(k);
	return 0;
}

static FILE *
file_with(const uint8_t *p, size_t len)
{
	FILE *f = tmpfile();

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	rewind(f);
	return f;
}

/* The contents of f, from the start, and f rewound; *len set. */
static uint8_t *
contents(FILE *f, size_t *len)
{
	long n;
	uint8_t *p;

	assert_int_equal(fflush(f), 0);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	rewind(f);
	*len = (size_t)n;
	return p;
}

static uint8_t *
pattern(size_t len)
{
	uint8_t *p = malloc(len + 1);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + (i >> 9));
	if (len >= 4)
		memcpy(p, "PK\3\4", 4);
	return p;
}

/* Encrypts plain[0..len) with k->signer; the ciphertext is left in *out. */
static void
seal(struct keys *k, const uint8_t *plain, size_t len, FILE **out,
    struct capgo_sealed *s)
{
	struct sign_arg a = { .key = k->signer, .check = k->signer };
	const struct capgo_signer signer = { local_prepare, local_sign, &a };
	struct kms_status st;
	FILE *in = file_with(plain, len);

	*out = tmpfile();
	assert_non_null(*out);
	kms_status_clear(&st);
	assert_int_equal(capgo_encrypt(in, *out, &signer, s, &st), 0);
	assert_int_equal(a.calls, 2);
	fclose(in);
	rewind(*out);
}

static void
test_round_trip_sizes(void **state)
{
	static const size_t sizes[] = { 0, 1, 15, 16, 17, 65535, 65536, 65537,
	    3 * 65536 + 5 };
	struct keys *k = *state;
	struct capgo_sealed s;
	struct kms_status st;
	uint8_t *plain, *enc, *dec;
	size_t i, elen, dlen;
	uint64_t plen;
	FILE *c, *p;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		plain = pattern(sizes[i]);
		seal(k, plain, sizes[i], &c, &s);
		assert_int_equal(s.plain_len, sizes[i]);
		assert_int_equal(s.cipher_len, (sizes[i] / 16 + 1) * 16);
		assert_int_equal(strlen(s.iv_session_key), 24 + 1 + 344);
		assert_int_equal(s.iv_session_key[24], ':');
		assert_int_equal(strlen(s.checksum), CAPGO_CHECKSUM_HEX_LEN);
		assert_int_equal(strspn(s.checksum, "0123456789abcdef"),
		    CAPGO_CHECKSUM_HEX_LEN);
		enc = contents(c, &elen);
		assert_int_equal(elen, s.cipher_len);
		if (sizes[i] >= 32)
			assert_memory_not_equal(enc, plain, 32);
		free(enc);
		p = tmpfile();
		assert_non_null(p);
		kms_status_clear(&st);
		assert_int_equal(capgo_decrypt(c, p, k->signer, s.iv_session_key,
		    s.checksum, &plen, &st), 0);
		assert_int_equal(plen, sizes[i]);
		dec = contents(p, &dlen);
		assert_int_equal(dlen, sizes[i]);
		if (dlen > 0)
			assert_memory_equal(dec, plain, dlen);
		/* Check only, no output. */
		rewind(c);
		assert_int_equal(capgo_decrypt(c, NULL, k->signer,
		    s.iv_session_key, s.checksum, &plen, &st), 0);
		free(dec);
		free(plain);
		fclose(p);
		fclose(c);
	}
}

static void
test_fresh_key_and_iv(void **state)
{
	struct keys *k = *state;
	struct capgo_sealed a, b;
	uint8_t *plain = pattern(1000), *ea, *eb;
	size_t la, lb;
	FILE *ca, *cb;

	seal(k, plain, 1000, &ca, &a);
	seal(k, plain, 1000, &cb, &b);
	assert_memory_not_equal(a.iv_session_key, b.iv_session_key, 24);
	assert_string_not_equal(a.iv_session_key + 25, b.iv_session_key + 25);
	/* Same plaintext, same checksum: RSA PKCS#1 type 1 is deterministic. */
	assert_string_equal(a.checksum, b.checksum);
	ea = contents(ca, &la);
	eb = contents(cb, &lb);
	assert_int_equal(la, lb);
	assert_memory_not_equal(ea, eb, la);
	free(ea);
	free(eb);
	free(plain);
	fclose(ca);
	fclose(cb);
}

/* Capgo's CLI made it: we must take it, and refuse it altered. */
static void
test_capgo_cli_known_answer(void **state)
{
	struct kms_status st;
	EVP_PKEY *pub = NULL;
	uint8_t *dec, *bad;
	uint64_t plen;
	size_t dlen;
	FILE *c, *p;

	(void)state;
	kms_status_clear(&st);
	assert_int_equal(capgo_pubkey_from_pem(kat_pub, strlen(kat_pub), &pub,
	    &st), 0);
	c = file_with(kat_cipher, sizeof(kat_cipher));
	p = tmpfile();
	assert_non_null(p);
	assert_int_equal(capgo_decrypt(c, p, pub, kat_ivsk, kat_checksum, &plen,
	    &st), 0);
	dec = contents(p, &dlen);
	assert_int_equal(dlen, sizeof(kat_plain));
	assert_memory_equal(dec, kat_plain, dlen);
	assert_true(capgo_is_zip(dec, dlen));
	free(dec);
	fclose(c);
	fclose(p);

	/* One bit of the first block: a garbled block, a wrong checksum. */
	bad = malloc(sizeof(kat_cipher));
	assert_non_null(bad);
	memcpy(bad, kat_cipher, sizeof(kat_cipher));
	bad[3] ^= 0x80;
	c = file_with(bad, sizeof(kat_cipher));
	assert_int_equal(capgo_decrypt(c, NULL, pub, kat_ivsk, kat_checksum,
	    &plen, &st), KMS_ERR_VERIFY_FAILED);
	fclose(c);
	free(bad);
	EVP_PKEY_free(pub);
}

static void
test_tampering(void **state)
{
	struct keys *k = *state;
	struct capgo_sealed s, s2;
	struct kms_status st;
	uint8_t *plain = pattern(5000), *enc, *bad;
	char ivsk[sizeof(struct capgo_sealed)], sum[sizeof(struct capgo_sealed)];
	size_t elen, offs[] = { 0, 2500, 0 };
	uint64_t plen;
	FILE *c, *c2, *t;
	int i;

	seal(k, plain, 5000, &c, &s);
	enc = contents(c, &elen);
	offs[2] = elen - 1;
	bad = malloc(elen + 16);
	assert_non_null(bad);
	for (i = 0; i < 3; i++) {
		memcpy(bad, enc, elen);
		bad[offs[i]] ^= 0x04;
		t = file_with(bad, elen);
		kms_status_clear(&st);
		assert_int_equal(capgo_decrypt(t, NULL, k->signer,
		    s.iv_session_key, s.checksum, &plen, &st),
		    KMS_ERR_VERIFY_FAILED);
		fclose(t);
	}
	/* Truncated, extended, empty. */
	t = file_with(enc, elen - 16);
	assert_int_equal(capgo_decrypt(t, NULL, k->signer, s.iv_session_key,
	    s.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	fclose(t);
	memcpy(bad, enc, elen);
	memcpy(bad + elen, enc + elen - 16, 16);
	t = file_with(bad, elen + 16);
	assert_int_equal(capgo_decrypt(t, NULL, k->signer, s.iv_session_key,
	    s.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	fclose(t);
	t = file_with(enc, 0);
	assert_int_equal(capgo_decrypt(t, NULL, k->signer, s.iv_session_key,
	    s.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	fclose(t);

	/* Another bundle's genuine checksum, or session key. */
	memcpy(plain + 100, "other", 5);
	seal(k, plain, 5000, &c2, &s2);
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    s2.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	assert_non_null(strstr(st.msg, "does not match"));
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s2.iv_session_key,
	    s.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	/* An altered RSA block: its padding does not verify. */
	snprintf(sum, sizeof(sum), "%s", s.checksum);
	sum[300] = sum[300] == '0' ? '1' : '0';
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    sum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	snprintf(ivsk, sizeof(ivsk), "%s", s.iv_session_key);
	ivsk[100] = ivsk[100] == 'A' ? 'B' : 'A';
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, ivsk, s.checksum,
	    &plen, &st), KMS_ERR_VERIFY_FAILED);
	/* The wrong public key. */
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->other, s.iv_session_key,
	    s.checksum, &plen, &st), KMS_ERR_VERIFY_FAILED);
	assert_non_null(strstr(st.msg, "public key"));
	/* And the genuine one still passes. */
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    s.checksum, &plen, &st), 0);
	free(bad);
	free(enc);
	free(plain);
	fclose(c);
	fclose(c2);
}

static void
test_malformed_strings(void **state)
{
	struct keys *k = *state;
	struct capgo_sealed s;
	struct kms_status st;
	uint8_t *plain = pattern(100);
	char buf[sizeof(struct capgo_sealed)], sum[sizeof(struct capgo_sealed)];
	uint64_t plen;
	FILE *c;
	size_t i;

	seal(k, plain, 100, &c, &s);
	/* ivSessionKey: one colon, two canonical base64 parts of 16 and 256. */
	const char *bad_ivsk[] = { "", ":", "abc", "AAAAAAAAAAAAAAAAAAAAAA==" };
	for (i = 0; i < sizeof(bad_ivsk) / sizeof(bad_ivsk[0]); i++) {
		kms_status_clear(&st);
		assert_int_equal(capgo_decrypt(c, NULL, k->signer, bad_ivsk[i],
		    s.checksum, &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	}
	snprintf(buf, sizeof(buf), "%s:", s.iv_session_key);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, buf, s.checksum,
	    &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	snprintf(buf, sizeof(buf), "%s", s.iv_session_key + 1);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, buf, s.checksum,
	    &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	/* A non-canonical IV: the last significant digit carries spare bits. */
	snprintf(buf, sizeof(buf), "%s", s.iv_session_key);
	{
		/* 16 bytes leave the 22nd digit's low 4 bits unused (zero). */
		static const char b64[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789+/";
		const char *pos = strchr(b64, s.iv_session_key[21]);

		assert_non_null(pos);
		buf[21] = b64[(pos - b64) | 1];
	}
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, buf, s.checksum,
	    &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	snprintf(buf, sizeof(buf), "%s", s.iv_session_key);
	buf[30] = '*';
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, buf, s.checksum,
	    &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	/* checksum: exactly 512 hex digits; either case is taken. */
	snprintf(sum, sizeof(sum), "%.*s", CAPGO_CHECKSUM_HEX_LEN - 2,
	    s.checksum);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    sum, &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	snprintf(sum, sizeof(sum), "%s00", s.checksum);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    sum, &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	snprintf(sum, sizeof(sum), "%s", s.checksum);
	sum[7] = 'g';
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    sum, &plen, &st), KMS_ERR_INVALID_ARGUMENT);
	snprintf(sum, sizeof(sum), "%s", s.checksum);
	for (i = 0; sum[i] != '\0'; i++)
		if (sum[i] >= 'a' && sum[i] <= 'f')
			sum[i] = (char)(sum[i] - 'a' + 'A');
	rewind(c);
	assert_int_equal(capgo_decrypt(c, NULL, k->signer, s.iv_session_key,
	    sum, &plen, &st), 0);
	free(plain);
	fclose(c);
}

static void
test_signer_failures(void **state)
{
	struct keys *k = *state;
	struct sign_arg a = { .key = k->signer, .check = k->signer };
	const struct capgo_signer signer = { local_prepare, local_sign, &a };
	struct capgo_sealed s;
	struct kms_status st;
	uint8_t *plain = pattern(300000);
	FILE *in, *out;

	in = file_with(plain, 300000);
	out = tmpfile();
	assert_non_null(out);
	/* The signer cannot get ready: nothing is signed, no result. */
	a.prepare_fails = 1;
	kms_status_clear(&st);
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st),
	    KMS_ERR_FAILED_PRECONDITION);
	assert_int_equal(a.calls, 0);
	assert_int_equal(s.iv_session_key[0], '\0');
	assert_string_equal(st.msg, "no key");
	/* A refused first or second call: no result. */
	a.prepare_fails = 0;
	a.fail_at = 1;
	rewind(in);
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st),
	    KMS_ERR_PERMISSION_DENIED);
	assert_int_equal(s.iv_session_key[0], '\0');
	a.calls = 0;
	a.fail_at = 2;
	rewind(in);
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st),
	    KMS_ERR_PERMISSION_DENIED);
	assert_int_equal(a.calls, 2);
	assert_int_equal(s.checksum[0], '\0');
	/* A block from another key, or a corrupted one, is caught. */
	rewind(in);
	a.calls = 0;
	a.fail_at = 0;
	a.check = k->other;
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st),
	    KMS_ERR_VERIFY_FAILED);
	assert_int_equal(a.calls, 1);
	rewind(in);
	a.calls = 0;
	a.check = k->signer;
	a.corrupt = 1;
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st),
	    KMS_ERR_VERIFY_FAILED);
	/* Without a check key the caller gets what the signer made. */
	rewind(in);
	a.calls = 0;
	a.check = NULL;
	assert_int_equal(capgo_encrypt(in, out, &signer, &s, &st), 0);
	assert_int_equal(a.calls, 2);
	assert_int_equal(s.plain_len, 300000);
	/* Nor is prepare needed. */
	{
		const struct capgo_signer bare = { NULL, local_sign, &a };

		rewind(in);
		a.calls = 0;
		a.corrupt = 0;
		assert_int_equal(capgo_encrypt(in, out, &bare, &s, &st), 0);
		assert_int_equal(a.calls, 2);
	}
	/* A read error is the result, and the checksum is never signed. */
	{
		FILE *wo = fopen("/dev/null", "wb");	/* cannot be read */

		assert_non_null(wo);
		a.calls = 0;
		a.check = k->signer;
		assert_int_equal(capgo_encrypt(wo, out, &signer, &s, &st),
		    KMS_ERR_IO);
		assert_int_equal(a.calls, 1);
		fclose(wo);
	}
	free(plain);
	fclose(in);
	fclose(out);
}

static char *
pem_of(EVP_PKEY *k, int pkcs1, int private)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out;
	long n;

	assert_non_null(b);
	if (private)
		assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0,
		    NULL, NULL), 1);
	else if (pkcs1) {
		OSSL_ENCODER_CTX *e = OSSL_ENCODER_CTX_new_for_pkey(k,
		    EVP_PKEY_PUBLIC_KEY, "PEM", "type-specific", NULL);

		assert_non_null(e);
		assert_int_equal(OSSL_ENCODER_to_bio(e, b), 1);
		OSSL_ENCODER_CTX_free(e);
	} else
		assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
	n = BIO_get_mem_data(b, &p);
	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	return out;
}

static void
test_public_key_pem(void **state)
{
	struct keys *k = *state;
	struct kms_status st;
	EVP_PKEY *pk;
	char *pem;

	pem = pem_of(k->signer, 1, 0);
	assert_non_null(strstr(pem, "BEGIN RSA PUBLIC KEY"));
	kms_status_clear(&st);
	assert_int_equal(capgo_pubkey_from_pem(pem, strlen(pem), &pk, &st), 0);
	assert_int_equal(EVP_PKEY_eq(pk, k->signer), 1);
	EVP_PKEY_free(pk);
	free(pem);

	pem = pem_of(k->signer, 0, 0);
	assert_int_equal(capgo_pubkey_from_pem(pem, strlen(pem), &pk, &st), 0);
	assert_int_equal(EVP_PKEY_eq(pk, k->signer), 1);
	EVP_PKEY_free(pk);
	free(pem);

	/* A private key, a small key, garbage: refused. */
	pem = pem_of(k->signer, 0, 1);
	assert_int_equal(capgo_pubkey_from_pem(pem, strlen(pem), &pk, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_null(pk);
	free(pem);
	pem = pem_of(k->small, 1, 0);
	assert_int_equal(capgo_pubkey_from_pem(pem, strlen(pem), &pk, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_non_null(strstr(st.msg, "RSA-2048"));
	assert_null(pk);
	free(pem);
	assert_int_equal(capgo_pubkey_from_pem("-----BEGIN PUBLIC KEY-----\n"
	    "AAAA\n-----END PUBLIC KEY-----\n", 55, &pk, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(capgo_pubkey_from_pem("", 0, &pk, &st),
	    KMS_ERR_INVALID_ARGUMENT);
}

static void
test_zip_magic(void **state)
{
	(void)state;
	assert_true(capgo_is_zip((const uint8_t *)"PK\3\4rest", 8));
	assert_true(capgo_is_zip((const uint8_t *)"PK\3\4", 4));
	assert_false(capgo_is_zip((const uint8_t *)"PK\3", 3));
	assert_false(capgo_is_zip((const uint8_t *)"PK\5\6", 4));
	assert_false(capgo_is_zip((const uint8_t *)"hello", 5));
	assert_false(capgo_is_zip((const uint8_t *)"", 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_sizes),
		cmocka_unit_test(test_fresh_key_and_iv),
		cmocka_unit_test(test_capgo_cli_known_answer),
		cmocka_unit_test(test_tampering),
		cmocka_unit_test(test_malformed_strings),
		cmocka_unit_test(test_signer_failures),
		cmocka_unit_test(test_public_key_pem),
		cmocka_unit_test(test_zip_magic),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
