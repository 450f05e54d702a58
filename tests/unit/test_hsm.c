/*
 * test_hsm.c: the PKCS#11 layer against a real SoftHSM2 token, through
 * the fault-injecting module build/p11fault.so, so that device errors,
 * lost sessions, lost logins and stale handles are reached as well.
 */
#include <sys/stat.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "algo.h"
#include "hsm.h"
#include "kmserr.h"
#include "pubkey.h"
#include "secret.h"

/* PKCS#11 return values used here (hsm.h keeps pkcs11.h to hsm.c). */
#define CKR_DEVICE_ERROR		0x30UL
#define CKR_OBJECT_HANDLE_INVALID	0x82UL
#define CKR_SESSION_HANDLE_INVALID	0xB3UL
#define CKR_USER_NOT_LOGGED_IN		0x101UL

static char dir[64], pin[128], module[512];
static struct hsm *hsm;
static struct hsm_session *s;
static void (*fault_set)(const char *, unsigned long, unsigned long);
static void (*fault_clear)(void);

static void
write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static int
setup(void **state)
{
	char conf[128], text[256], cmd[512];
	const char *build = getenv("BUILD");
	struct kms_status st;
	void *dl;

	(void)state;
	strcpy(dir, "/tmp/kms-test-hsm.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
	snprintf(text, sizeof(text), "directories.tokendir = %s\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", dir);
	write_file(conf, text, 0600);
	setenv("SOFTHSM2_CONF", conf, 1);
	/* t for the tests, t2 for login failures (logins are per token). */
	snprintf(cmd, sizeof(cmd), "softhsm2-util --init-token --free "
	    "--label t --so-pin 12345678 --pin 1234 >/dev/null && "
	    "softhsm2-util --init-token --free --label t2 --so-pin 12345678 "
	    "--pin 1234 >/dev/null");
	if (system(cmd) != 0)
		return -1;
	snprintf(pin, sizeof(pin), "%s/pin", dir);
	write_file(pin, "1234\n", 0600);
	snprintf(module, sizeof(module), "%s/%s/p11fault.so",
	    getcwd(text, sizeof(text)), build != NULL ? build : "build");
	kms_status_clear(&st);
	if (hsm_open(module, "t", pin, &hsm, &st) != 0) {
		fprintf(stderr, "hsm_open: %s\n", st.msg);
		return -1;
	}
	/* The module is loaded already: find its fault switch. */
	if ((dl = dlopen(module, RTLD_NOW | RTLD_NOLOAD)) == NULL)
		return -1;
	fault_set = (void (*)(const char *, unsigned long,
	    unsigned long))dlsym(dl, "p11fault_set");
	fault_clear = (void (*)(void))dlsym(dl, "p11fault_clear");
	if (fault_set == NULL || fault_clear == NULL)
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
}

/* Signs a fixed input and checks the signature with OpenSSL. */
static void
sign_and_verify(const struct kms_alg_info *alg, hsm_handle_t priv,
    hsm_handle_t pub)
{
	uint8_t in[64], sig[HSM_SIG_MAX], *der = NULL;
	size_t inlen, siglen = sizeof(sig), derlen;
	int valid = 0;

	memset(in, 0x5a, sizeof(in));
	inlen = alg->digest_len != 0 ? alg->digest_len : 20;
	assert_int_equal(hsm_sign(s, alg, priv, in, inlen, sig, &siglen), 0);
	assert_int_equal(hsm_public_key_der(s, alg, pub, &der, &derlen), 0);
	assert_int_equal(pubkey_verify(alg, der, derlen, in, inlen, sig,
	    siglen, &valid), 0);
	if (!valid)
		fail_msg("%s: signature does not verify", alg->name);
	/* A changed input must not verify. */
	in[0] ^= 1;
	assert_int_equal(pubkey_verify(alg, der, derlen, in, inlen, sig,
	    siglen, &valid), 0);
	assert_false(valid);
	free(der);
}

static void
test_every_signing_algorithm(void **state)
{
	const struct kms_alg_info *alg;
	hsm_handle_t priv, pub;
	char label[64];
	int a, ok;

	(void)state;
	for (a = 1; a <= KMS_ALG_MAX; a++) {
		alg = kms_alg_lookup(a);
		if (!alg->can_sign)
			continue;
		snprintf(label, sizeof(label), "t-%s", alg->name);
		gen(alg, label, &priv, &pub);
		sign_and_verify(alg, priv, pub);
		/* Generated inside: sensitive and never extractable. */
		assert_int_equal(hsm_key_is_protected(s, priv, &ok), 0);
		assert_true(ok);
	}
}

static int
count_cb(const char *label, hsm_handle_t h, void *arg)
{
	(void)h;
	if (strncmp(label, "list-", 5) == 0)
		(*(int *)arg)++;
	return 0;
}

static void
test_find_list_and_data(void **state)
{
	uint8_t *v = NULL;
	size_t len;
	hsm_handle_t d1, d2, h;
	int n = 0;

	(void)state;
	assert_int_equal(hsm_data_create(s, "list-a", (const uint8_t *)"one",
	    3, &d1), 0);
	assert_int_equal(hsm_data_create(s, "list-b", (const uint8_t *)"two",
	    3, &d2), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-b", &h), 0);
	assert_int_equal(h, d2);
	assert_int_equal(hsm_data_set(s, "list-b", &d2,
	    (const uint8_t *)"three", 5), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-b", &h), 0);
	assert_int_equal(h, d2);
	assert_int_equal(hsm_data_get(s, d2, &v, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal((char *)v, "three");
	free(v);
	assert_int_equal(hsm_list(s, HSM_OBJ_DATA, count_cb, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(hsm_destroy(s, d1), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "list-a", &h),
	    KMS_ERR_NOT_FOUND);
	/* A destroyed object's handle is stale, not a crash. */
	assert_int_equal(hsm_data_get(s, d1, &v, &len), KMS_ERR_STALE_HANDLE);
	assert_int_equal(hsm_destroy(s, d2), 0);
}

static void
test_wrap_unwrap(void **state)
{
	const struct kms_alg_info *alg = kms_alg_lookup(KMS_ALG_AES_256_KWP);
	uint8_t in[37], out[64];
	size_t outlen = sizeof(out);
	struct secret *plain = NULL;
	unsigned long mech;
	hsm_handle_t kek;
	int ok;

	(void)state;
	memset(in, 0x42, sizeof(in));
	assert_int_equal(hsm_generate_secret_key(s, alg, "kek", (const
	    uint8_t *)"kek", 3, &kek), 0);
	assert_int_equal(hsm_key_is_protected(s, kek, &ok), 0);
	assert_true(ok);
	assert_int_equal(hsm_wrap(s, kek, in, sizeof(in), out, &outlen,
	    &mech), 0);
	assert_int_equal(outlen, 48);
	assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen, &plain), 0);
	/* SoftHSM pads to a multiple of 8; the bytes themselves survive. */
	assert_true(plain->len >= sizeof(in));
	assert_memory_equal(plain->buf, in, sizeof(in));
	secret_free(plain);
	plain = NULL;
	out[5] ^= 0x80;
	assert_int_equal(hsm_unwrap(s, kek, mech, out, outlen, &plain),
	    KMS_ERR_VERIFY_FAILED);
	assert_null(plain);
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
	assert_int_not_equal(hsm_open(module, "no-such-token", pin, &h, &st),
	    0);
	assert_non_null(strstr(st.msg, "no-such-token"));
	snprintf(bad, sizeof(bad), "%s/badpin", dir);
	write_file(bad, "9999\n", 0600);
	assert_int_not_equal(hsm_open(module, "t2", bad, &h, &st), 0);
	assert_non_null(strstr(st.msg, "wrong PIN"));
	write_file(bad, "1234\n", 0644);
	assert_int_not_equal(hsm_open(module, "t2", bad, &h, &st), 0);
	assert_non_null(strstr(st.msg, "0600"));
	assert_null(h);
}

static void
test_faults_are_recovered_or_reported(void **state)
{
	const struct kms_alg_info *alg = kms_alg_lookup(KMS_ALG_EC_P256_SHA256);
	uint8_t md[32], sig[HSM_SIG_MAX];
	size_t siglen;
	hsm_handle_t priv, pub, h;

	(void)state;
	memset(md, 1, sizeof(md));
	gen(alg, "fault", &priv, &pub);

	/* A device error is reported as UNAVAILABLE; the next call works. */
	fault_set("C_Sign", 1, CKR_DEVICE_ERROR);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen),
	    KMS_ERR_UNAVAILABLE);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen), 0);

	/* A lost session is reopened and the call retried. */
	fault_set("C_SignInit", 1, CKR_SESSION_HANDLE_INVALID);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen), 0);
	fault_set("C_Sign", 1, CKR_SESSION_HANDLE_INVALID);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen), 0);

	/* A lost login is renewed from the PIN file and the call retried. */
	fault_set("C_SignInit", 1, CKR_USER_NOT_LOGGED_IN);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen), 0);

	/* A session lost at the start of a search is recovered too. */
	fault_set("C_FindObjectsInit", 1, CKR_SESSION_HANDLE_INVALID);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "fault", &h), 0);

	/* A stale handle tells the caller to look the object up again. */
	fault_set("C_SignInit", 1, CKR_OBJECT_HANDLE_INVALID);
	siglen = sizeof(sig);
	assert_int_equal(hsm_sign(s, alg, priv, md, 32, sig, &siglen),
	    KMS_ERR_STALE_HANDLE);

	/* A failed generation leaves nothing behind. */
	fault_set("C_GenerateKeyPair", 1, CKR_DEVICE_ERROR);
	assert_int_equal(hsm_generate_key_pair(s, alg, "never", (const
	    uint8_t *)"n", 1, &priv, &pub), KMS_ERR_UNAVAILABLE);
	assert_int_equal(hsm_find(s, HSM_OBJ_PRIVATE_KEY, "never", &h),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(hsm_find(s, HSM_OBJ_PUBLIC_KEY, "never", &h),
	    KMS_ERR_NOT_FOUND);

	/* Random numbers and data objects fail cleanly too. */
	fault_set("C_GenerateRandom", 1, CKR_DEVICE_ERROR);
	assert_int_equal(hsm_random(s, md, sizeof(md)), KMS_ERR_UNAVAILABLE);
	assert_int_equal(hsm_random(s, md, sizeof(md)), 0);
	fault_set("C_CreateObject", 1, 0x5UL /* CKR_GENERAL_ERROR */);
	assert_int_equal(hsm_data_create(s, "x", md, 4, &h), KMS_ERR_HSM);
	fault_clear();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_signing_algorithm),
		cmocka_unit_test(test_find_list_and_data),
		cmocka_unit_test(test_wrap_unwrap),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_faults_are_recovered_or_reported),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
