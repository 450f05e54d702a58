/*
 * test_names.c: the key-name grammar and the signing-input rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "algo.h"
#include "kmserr.h"
#include "names.h"

static int
check(const char *name)
{
	struct kms_status st;

	kms_status_clear(&st);
	return names_check_key(name, &st);
}

static void
test_valid_names(void **state)
{
	char max[KMS_KEY_NAME_MAX + 1];

	(void)state;
	assert_int_equal(check("a"), 0);
	assert_int_equal(check("release/android/capgo-v2"), 0);
	assert_int_equal(check("0.9_x-y/Z.z"), 0);
	assert_int_equal(check("a/..b/c..d/.e"), 0);
	memset(max, 'k', KMS_KEY_NAME_MAX);
	max[KMS_KEY_NAME_MAX] = '\0';
	assert_int_equal(check(max), 0);
}

static void
test_invalid_names(void **state)
{
	char big[KMS_KEY_NAME_MAX + 2];
	struct kms_status st;

	(void)state;
	memset(big, 'k', KMS_KEY_NAME_MAX + 1);
	big[KMS_KEY_NAME_MAX + 1] = '\0';
	assert_int_equal(check(big), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check(""), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("-a"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check(".a"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("/a"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a//b"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a/"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a/./b"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a/../b"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a/.."), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a b"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("a#1"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check("caf\xc3\xa9"), KMS_ERR_INVALID_ARGUMENT);
	assert_int_equal(check(NULL), KMS_ERR_INVALID_ARGUMENT);
	kms_status_clear(&st);
	names_check_key("a//b", &st);
	assert_non_null(strstr(st.msg, "//"));
}

static int
input(int alg, size_t digest, size_t data)
{
	struct kms_status st;

	kms_status_clear(&st);
	return names_check_sign_input(kms_alg_lookup(alg), digest, data,
	    1024, &st);
}

static void
test_sign_input_every_algorithm(void **state)
{
	const struct kms_alg_info *a;
	int alg;

	(void)state;
	for (alg = 1; alg <= KMS_ALG_MAX; alg++) {
		a = kms_alg_lookup(alg);
		assert_non_null(a);
		if (!a->can_sign) {
			assert_int_equal(input(alg, 32, 0),
			    KMS_ERR_FAILED_PRECONDITION);
			continue;
		}
		/* Both or neither. */
		assert_int_equal(input(alg, 32, 10), KMS_ERR_INVALID_ARGUMENT);
		assert_int_equal(input(alg, 0, 0), KMS_ERR_INVALID_ARGUMENT);
		if (a->family == KMS_FAMILY_RSA_RAW) {
			assert_int_equal(input(alg, 245, 0), 0);
			assert_int_equal(input(alg, 0, 245), 0);
			assert_int_equal(input(alg, 246, 0),
			    KMS_ERR_INVALID_ARGUMENT);
			assert_int_equal(input(alg, 0, 246),
			    KMS_ERR_INVALID_ARGUMENT);
			continue;
		}
		/* data within and beyond the limit. */
		assert_int_equal(input(alg, 0, 1024), 0);
		assert_int_equal(input(alg, 0, 1025), KMS_ERR_INVALID_ARGUMENT);
		if (a->family == KMS_FAMILY_EDDSA) {
			assert_int_equal(input(alg, 32, 0),
			    KMS_ERR_INVALID_ARGUMENT);
			continue;
		}
		assert_int_equal(input(alg, a->digest_len, 0), 0);
		assert_int_equal(input(alg, a->digest_len - 1, 0),
		    KMS_ERR_INVALID_ARGUMENT);
		assert_int_equal(input(alg, a->digest_len + 1, 0),
		    KMS_ERR_INVALID_ARGUMENT);
	}
}

static void
test_sign_input_messages(void **state)
{
	struct kms_status st;

	(void)state;
	kms_status_clear(&st);
	names_check_sign_input(kms_alg_lookup(KMS_ALG_EC_P256_SHA256), 31, 0,
	    1024, &st);
	assert_string_equal(st.msg, "digest is 31 bytes, EC_P256_SHA256 "
	    "needs 32");
	names_check_sign_input(kms_alg_lookup(KMS_ALG_ED25519), 32, 0, 1024,
	    &st);
	assert_non_null(strstr(st.msg, "send data"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_names),
		cmocka_unit_test(test_invalid_names),
		cmocka_unit_test(test_sign_input_every_algorithm),
		cmocka_unit_test(test_sign_input_messages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
