/*
 * test_kmserr.c: the one table from kms errors to gRPC status codes, and
 * status messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kmserr.h"

static void
test_grpc_codes(void **state)
{
	(void)state;
	assert_int_equal(kms_err_grpc_code(KMS_OK), 0);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_INVALID_ARGUMENT), 3);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_NOT_FOUND), 5);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_ALREADY_EXISTS), 6);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_PERMISSION_DENIED), 7);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_RESOURCE_EXHAUSTED), 8);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_FAILED_PRECONDITION), 9);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_UNIMPLEMENTED), 12);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_INTERNAL), 13);
	/* The HSM or the audit log unusable: the caller may retry. */
	assert_int_equal(kms_err_grpc_code(KMS_ERR_UNAVAILABLE), 14);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_AUDIT), 14);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_HSM), 14);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_STALE_HANDLE), 14);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_UNAUTHENTICATED), 16);
	assert_int_equal(kms_err_grpc_code(KMS_ERR_VERIFY_FAILED), 3);
	/* Unknown values are internal errors, never OK. */
	assert_int_equal(kms_err_grpc_code(-1000), 13);
	assert_int_equal(kms_err_grpc_code(5), 13);
}

static void
test_every_error_has_text(void **state)
{
	int e;

	(void)state;
	for (e = KMS_ERR_INTERNAL; e > KMS_ERR_LAST; e--) {
		assert_non_null(kms_strerror(e));
		assert_string_not_equal(kms_strerror(e), "unknown error");
		assert_int_not_equal(kms_err_grpc_code(e), 0);
	}
	assert_string_equal(kms_strerror(-999), "unknown error");
}

static void
test_status_set_and_truncation(void **state)
{
	struct kms_status st;
	char big[2000];

	(void)state;
	kms_status_clear(&st);
	assert_int_equal(st.err, 0);
	assert_string_equal(st.msg, "");
	assert_int_equal(kms_status_set(&st, KMS_ERR_NOT_FOUND, "key %s",
	    "a/b"), KMS_ERR_NOT_FOUND);
	assert_int_equal(st.err, KMS_ERR_NOT_FOUND);
	assert_string_equal(st.msg, "key a/b");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	kms_status_set(&st, KMS_ERR_INTERNAL, "%s", big);
	assert_int_equal(strlen(st.msg), KMS_STATUS_MSG_MAX - 1);
	kms_status_clear(&st);
	assert_int_equal(st.err, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grpc_codes),
		cmocka_unit_test(test_every_error_has_text),
		cmocka_unit_test(test_status_set_and_truncation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
