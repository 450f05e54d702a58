/*
 * test_names.c: the key-name grammar and the signing-input checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "algo.h"
#include "kmserr.h"
#include "names.h"

#define MAX_DATA (1024 * 1024)

static int
check_key(const char *name, struct kms_status *st)
{
	kms_status_clear(st);
	return names_check_key(name, st);
}

static void
assert_key_ok(const char *name)
{
	struct kms_status st;

	if (check_key(name, &st) != 0)
		fail_msg("\"%s\" refused: %s", name, st.msg);
	assert_int_equal(st.err, 0);
}

/* name is refused with a message holding want. */
static void
assert_key_bad(const char *name, const char *want)
{
	struct kms_status st;
	int r;

	r = check_key(name, &st);
	if (r != KMS_ERR_INVALID_ARGUMENT)
		fail_msg("\"%s\": %d, expected INVALID_ARGUMENT", name, r);
	assert_int_equal(st.err, KMS_ERR_INVALID_ARGUMENT);
	if (strstr(st.msg, want) == NULL)
		fail_msg("\"%s\": message \"%s\" lacks \"%s\"", name, st.msg,
		    want);
}

static void
test_valid_names(void **state)
{
	char name[KMS_KEY_NAME_MAX + 1];

	(void)state;
	assert_key_ok("a");
	assert_key_ok("7");
	assert_key_ok("release/android/capgo-v2");
	assert_key_ok("Dev_key.v1");
	assert_key_ok("a/b/c/d.e_f-g");
	assert_key_ok("a..b");		/* dots inside a segment are fine */
	assert_key_ok("a/.hidden");	/* so is a segment starting with '.' */
	assert_key_ok("a/...");		/* "..." is not "..": allowed */
	assert_key_ok("a/-x");		/* only the first byte must be alnum */
	/* Exactly 128 bytes. */
	memset(name, 'k', KMS_KEY_NAME_MAX);
	name[KMS_KEY_NAME_MAX] = '\0';
	assert_int_equal(strlen(name), 128);
	assert_key_ok(name);
	name[60] = '/';
	assert_key_ok(name);
}

static void
test_invalid_names(void **state)
{
	char name[KMS_KEY_NAME_MAX + 2];
	struct kms_status st;

	(void)state;
	assert_key_bad("", "empty");
	assert_int_equal(check_key(NULL, &st), KMS_ERR_INVALID_ARGUMENT);
	/* 129 bytes. */
	memset(name, 'k', KMS_KEY_NAME_MAX + 1);
	name[KMS_KEY_NAME_MAX + 1] = '\0';
	assert_key_bad(name, "129 bytes");
	assert_key_bad(name, "at most 128");

	assert_key_bad("-a", "start with a letter or digit");
	assert_key_bad(".a", "start with a letter or digit");
	assert_key_bad("_a", "start with a letter or digit");
	assert_key_bad("/a", "start with a letter or digit");
	assert_key_bad("a/", "end with '/'");
	assert_key_bad("a/b/", "end with '/'");
	assert_key_bad("a//b", "\"//\"");
	assert_key_bad("a/./b", "\".\" or \"..\"");
	assert_key_bad("a/../b", "\".\" or \"..\"");
	assert_key_bad("a/..", "\".\" or \"..\"");
	assert_key_bad("a/.", "\".\" or \"..\"");
	assert_key_bad("a b", "outside [A-Za-z0-9._/-] at byte 2");
	assert_key_bad("a\nb", "outside");
	assert_key_bad("a\"b", "outside");
	assert_key_bad("a*", "outside");
	assert_key_bad("a:b", "outside");
	assert_key_bad("a\\b", "outside");
	/* Non-ASCII: UTF-8 "é" and a lone high byte. */
	assert_key_bad("caf\xc3\xa9", "at byte 4");
	assert_key_bad("\xc3\xa9t\xc3\xa9", "start with a letter or digit");
	assert_key_bad("a\x80", "outside");
	assert_key_bad("a\x7f", "outside");
}

static int
sign_input(enum kms_alg alg, size_t digest, size_t data, size_t max,
    struct kms_status *st)
{
	const struct kms_alg_info *ai = kms_alg_lookup(alg);

	assert_non_null(ai);
	kms_status_clear(st);
	return names_check_sign_input(ai, digest, data, max, st);
}

static void
assert_msg(const struct kms_status *st, const char *want)
{
	if (strstr(st->msg, want) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", st->msg, want);
}

/*
 * The rules every digest-based algorithm shares: the right digest, data
 * up to the limit, and nothing else.
 */
static void
check_digest_alg(enum kms_alg alg, size_t dlen)
{
	const struct kms_alg_info *ai = kms_alg_lookup(alg);
	struct kms_status st;
	char want[128];

	assert_non_null(ai);
	assert_int_equal(ai->digest_len, dlen);
	assert_int_equal(sign_input(alg, dlen, 0, MAX_DATA, &st), 0);
	assert_int_equal(sign_input(alg, 0, 1, MAX_DATA, &st), 0);
	assert_int_equal(sign_input(alg, 0, MAX_DATA, MAX_DATA, &st), 0);

	assert_int_equal(sign_input(alg, dlen - 1, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	snprintf(want, sizeof(want), "digest is %zu bytes, %s needs %zu",
	    dlen - 1, ai->name, dlen);
	assert_string_equal(st.msg, want);
	assert_int_equal(sign_input(alg, dlen + 1, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	snprintf(want, sizeof(want), "digest is %zu bytes, %s needs %zu",
	    dlen + 1, ai->name, dlen);
	assert_string_equal(st.msg, want);

	assert_int_equal(sign_input(alg, dlen, 10, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "not both");
	assert_int_equal(sign_input(alg, 0, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "neither");
	assert_int_equal(sign_input(alg, 0, MAX_DATA + 1, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	snprintf(want, sizeof(want), "data is %d bytes, at most %d",
	    MAX_DATA + 1, MAX_DATA);
	assert_msg(&st, want);
}

static void
test_sign_input_ec(void **state)
{
	struct kms_status st;

	(void)state;
	check_digest_alg(KMS_ALG_EC_P256_SHA256, 32);
	check_digest_alg(KMS_ALG_EC_P384_SHA384, 48);
	/* The message the handlers show, word for word. */
	assert_int_equal(sign_input(KMS_ALG_EC_P256_SHA256, 31, 0, MAX_DATA,
	    &st), KMS_ERR_INVALID_ARGUMENT);
	assert_string_equal(st.msg, "digest is 31 bytes, EC_P256_SHA256 "
	    "needs 32");
	/* A SHA-256 digest is not a SHA-384 one. */
	assert_int_equal(sign_input(KMS_ALG_EC_P384_SHA384, 32, 0, MAX_DATA,
	    &st), KMS_ERR_INVALID_ARGUMENT);
}

static void
test_sign_input_rsa(void **state)
{
	(void)state;
	check_digest_alg(KMS_ALG_RSA_PKCS1_2048_SHA256, 32);
	check_digest_alg(KMS_ALG_RSA_PKCS1_3072_SHA256, 32);
	check_digest_alg(KMS_ALG_RSA_PKCS1_4096_SHA256, 32);
	check_digest_alg(KMS_ALG_RSA_PSS_2048_SHA256, 32);
	check_digest_alg(KMS_ALG_RSA_PSS_3072_SHA256, 32);
	check_digest_alg(KMS_ALG_RSA_PSS_4096_SHA256, 32);
}

static void
test_sign_input_ed25519(void **state)
{
	struct kms_status st;

	(void)state;
	assert_int_equal(sign_input(KMS_ALG_ED25519, 0, 1, MAX_DATA, &st), 0);
	assert_int_equal(sign_input(KMS_ALG_ED25519, 0, MAX_DATA, MAX_DATA,
	    &st), 0);
	/* PureEdDSA signs the message: no digest of any length. */
	assert_int_equal(sign_input(KMS_ALG_ED25519, 32, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "ED25519 signs the message itself");
	assert_int_equal(sign_input(KMS_ALG_ED25519, 64, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(sign_input(KMS_ALG_ED25519, 32, 5, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "not both");
	assert_int_equal(sign_input(KMS_ALG_ED25519, 0, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(sign_input(KMS_ALG_ED25519, 0, 101, 100, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "data is 101 bytes, at most 100");
}

static void
test_sign_input_rsa_raw(void **state)
{
	struct kms_status st;

	(void)state;
	/* 256-byte modulus minus 11 bytes of padding: 245, in either field. */
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 245, 0,
	    MAX_DATA, &st), 0);
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 0, 245,
	    MAX_DATA, &st), 0);
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 1, 0,
	    MAX_DATA, &st), 0);
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 0, 1,
	    MAX_DATA, &st), 0);
	/* A DigestInfo-wrapped SHA-256 (51 bytes) is just raw input here. */
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 51, 0,
	    MAX_DATA, &st), 0);
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 246, 0,
	    MAX_DATA, &st), KMS_ERR_INVALID_ARGUMENT);
	assert_string_equal(st.msg, "RSA_RAW_PKCS1_2048 signs at most 245 "
	    "bytes, 246 were given");
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 0, 246,
	    MAX_DATA, &st), KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "246 were given");
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 10, 10,
	    MAX_DATA, &st), KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "not both");
	assert_int_equal(sign_input(KMS_ALG_RSA_RAW_PKCS1_2048, 0, 0,
	    MAX_DATA, &st), KMS_ERR_INVALID_ARGUMENT);
}

static void
test_sign_input_aes(void **state)
{
	struct kms_status st;

	(void)state;
	/* A wrapping key cannot sign whatever the input. */
	assert_int_equal(sign_input(KMS_ALG_AES_256_KWP, 32, 0, MAX_DATA,
	    &st), KMS_ERR_FAILED_PRECONDITION);
	assert_int_equal(st.err, KMS_ERR_FAILED_PRECONDITION);
	assert_msg(&st, "AES_256_KWP key cannot sign");
	assert_int_equal(sign_input(KMS_ALG_AES_256_KWP, 0, 10, MAX_DATA,
	    &st), KMS_ERR_FAILED_PRECONDITION);
	assert_int_equal(sign_input(KMS_ALG_AES_256_KWP, 0, 0, MAX_DATA,
	    &st), KMS_ERR_FAILED_PRECONDITION);
	assert_int_equal(names_check_sign_input(NULL, 32, 0, MAX_DATA, &st),
	    KMS_ERR_INVALID_ARGUMENT);
}

static void
test_every_algorithm_covered(void **state)
{
	const struct kms_alg_info *ai;
	struct kms_status st;
	int alg, covered = 0;

	(void)state;
	/*
	 * Whatever the table says, an algorithm that can sign accepts one
	 * right-sized input, and one that cannot is a precondition failure.
	 */
	for (alg = 1; alg <= KMS_ALG_MAX; alg++) {
		ai = kms_alg_lookup(alg);
		assert_non_null(ai);
		kms_status_clear(&st);
		if (!ai->can_sign) {
			assert_int_equal(names_check_sign_input(ai, 0, 1,
			    MAX_DATA, &st), KMS_ERR_FAILED_PRECONDITION);
		} else if (ai->digest_len > 0) {
			assert_int_equal(names_check_sign_input(ai,
			    ai->digest_len, 0, MAX_DATA, &st), 0);
		} else {
			assert_int_equal(names_check_sign_input(ai, 0, 1,
			    MAX_DATA, &st), 0);
		}
		covered++;
	}
	assert_int_equal(covered, 11);
}

static void
test_chain_names(void **state)
{
	struct kms_status st;
	char long_name[KMS_CHAIN_NAME_MAX + 2], out[KMS_CHAIN_NAME_MAX + 1];

	(void)state;
	assert_int_equal(names_check_chain("127.0.0.1_7443", &st), 0);
	assert_int_equal(names_check_chain("a-2", &st), 0);
	memset(long_name, 'a', sizeof(long_name));
	long_name[KMS_CHAIN_NAME_MAX] = '\0';
	assert_int_equal(names_check_chain(long_name, &st), 0);
	long_name[KMS_CHAIN_NAME_MAX] = 'a';
	long_name[KMS_CHAIN_NAME_MAX + 1] = '\0';
	assert_int_equal(names_check_chain(long_name, &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(names_check_chain("", &st), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(names_check_chain(".hidden", &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(names_check_chain("..", &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(names_check_chain("a/b", &st),
	    KMS_ERR_INVALID_ARGUMENT);
	assert_msg(&st, "bad chain name");
	assert_int_equal(names_check_chain("a b", NULL),
	    KMS_ERR_INVALID_ARGUMENT);

	/* What kmsd makes of its listen address always passes the check. */
	names_chain_from("[::1]:7443", out, sizeof(out));
	assert_string_equal(out, "___1__7443");
	assert_int_equal(names_check_chain(out, &st), 0);
	names_chain_from(".x/../y", out, sizeof(out));
	assert_string_equal(out, "_x_.._y");
	assert_int_equal(names_check_chain(out, &st), 0);
	names_chain_from("abcdef", out, 4);
	assert_string_equal(out, "abc");

	assert_true(names_is_plain("app.v-1_x", 9));
	assert_true(names_is_plain("", 0));
	assert_false(names_is_plain("a/b", 3));
	assert_false(names_is_plain("a\0b", 3));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_names),
		cmocka_unit_test(test_invalid_names),
		cmocka_unit_test(test_sign_input_ec),
		cmocka_unit_test(test_sign_input_rsa),
		cmocka_unit_test(test_sign_input_ed25519),
		cmocka_unit_test(test_sign_input_rsa_raw),
		cmocka_unit_test(test_sign_input_aes),
		cmocka_unit_test(test_every_algorithm_covered),
		cmocka_unit_test(test_chain_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
