/*
 * test_kmserr.c: the error strings, the one table mapping errors to gRPC
 * status codes, and struct kms_status formatting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kmserr.h"

/* gRPC status codes as in grpc/status.h (not included on purpose). */
enum {
	G_OK = 0,
	G_INVALID_ARGUMENT = 3,
	G_NOT_FOUND = 5,
	G_ALREADY_EXISTS = 6,
	G_PERMISSION_DENIED = 7,
	G_RESOURCE_EXHAUSTED = 8,
	G_FAILED_PRECONDITION = 9,
	G_ABORTED = 10,
	G_UNIMPLEMENTED = 12,
	G_INTERNAL = 13,
	G_UNAVAILABLE = 14,
	G_UNAUTHENTICATED = 16
};

/* What a client must see for each error, one row per KMS_ERR_*. */
static const struct {
	int err;
	int grpc;
} expected[] = {
	{ KMS_OK, G_OK },
	{ KMS_ERR_INTERNAL, G_INTERNAL },
	{ KMS_ERR_NOMEM, G_RESOURCE_EXHAUSTED },
	{ KMS_ERR_INVALID_ARGUMENT, G_INVALID_ARGUMENT },
	{ KMS_ERR_NOT_FOUND, G_NOT_FOUND },
	{ KMS_ERR_ALREADY_EXISTS, G_ALREADY_EXISTS },
	{ KMS_ERR_PERMISSION_DENIED, G_PERMISSION_DENIED },
	{ KMS_ERR_FAILED_PRECONDITION, G_FAILED_PRECONDITION },
	{ KMS_ERR_UNAVAILABLE, G_UNAVAILABLE },
	{ KMS_ERR_AUDIT, G_UNAVAILABLE },
	{ KMS_ERR_UNAUTHENTICATED, G_UNAUTHENTICATED },
	{ KMS_ERR_HSM, G_UNAVAILABLE },
	{ KMS_ERR_CONFIG, G_INTERNAL },
	{ KMS_ERR_IO, G_INTERNAL },
	{ KMS_ERR_UNIMPLEMENTED, G_UNIMPLEMENTED },
	{ KMS_ERR_RESOURCE_EXHAUSTED, G_RESOURCE_EXHAUSTED },
	{ KMS_ERR_STALE_HANDLE, G_UNAVAILABLE },
	{ KMS_ERR_VERIFY_FAILED, G_INVALID_ARGUMENT },
	{ KMS_ERR_CONFLICT, G_ABORTED },
};

#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))

static void
test_table_covers_every_error(void **state)
{
	int err;
	size_t i;

	(void)state;
	/* Every code from KMS_OK down to KMS_ERR_LAST + 1 has a row. */
	assert_int_equal(NEXPECTED, (size_t)(-KMS_ERR_LAST));
	for (err = KMS_OK; err > KMS_ERR_LAST; err--) {
		for (i = 0; i < NEXPECTED; i++)
			if (expected[i].err == err)
				break;
		assert_true(i < NEXPECTED);
	}
}

static void
test_grpc_mapping(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NEXPECTED; i++) {
		if (kms_err_grpc_code(expected[i].err) != expected[i].grpc)
			fail_msg("error %d maps to gRPC %d, expected %d",
			    expected[i].err,
			    kms_err_grpc_code(expected[i].err),
			    expected[i].grpc);
	}
}

static void
test_unknown_errors_are_internal(void **state)
{
	(void)state;
	assert_int_equal(kms_err_grpc_code(KMS_ERR_LAST), G_INTERNAL);
	assert_int_equal(kms_err_grpc_code(-1000), G_INTERNAL);
	assert_int_equal(kms_err_grpc_code(1), G_INTERNAL);
	assert_string_equal(kms_strerror(KMS_ERR_LAST), "unknown error");
	assert_string_equal(kms_strerror(42), "unknown error");
}

static void
test_strerror_distinct(void **state)
{
	size_t i, j;

	(void)state;
	assert_string_equal(kms_strerror(KMS_OK), "success");
	assert_string_equal(kms_strerror(KMS_ERR_PERMISSION_DENIED),
	    "permission denied");
	for (i = 0; i < NEXPECTED; i++) {
		const char *a = kms_strerror(expected[i].err);

		assert_non_null(a);
		assert_true(strlen(a) > 0);
		assert_string_not_equal(a, "unknown error");
		for (j = i + 1; j < NEXPECTED; j++)
			assert_string_not_equal(a,
			    kms_strerror(expected[j].err));
	}
}

static void
test_status_set_and_clear(void **state)
{
	struct kms_status st;
	int r;

	(void)state;
	memset(&st, 'x', sizeof(st));
	kms_status_clear(&st);
	assert_int_equal(st.err, KMS_OK);
	assert_string_equal(st.msg, "");

	r = kms_status_set(&st, KMS_ERR_NOT_FOUND, "key \"%s\" version %d",
	    "release/a", 3);
	assert_int_equal(r, KMS_ERR_NOT_FOUND);
	assert_int_equal(st.err, KMS_ERR_NOT_FOUND);
	assert_string_equal(st.msg, "key \"release/a\" version 3");

	/* A later set replaces the earlier message entirely. */
	kms_status_set(&st, KMS_ERR_IO, "short");
	assert_int_equal(st.err, KMS_ERR_IO);
	assert_string_equal(st.msg, "short");

	kms_status_clear(&st);
	assert_int_equal(st.err, KMS_OK);
	assert_string_equal(st.msg, "");
}

static void
test_status_truncates(void **state)
{
	struct kms_status st;
	char big[2 * KMS_STATUS_MSG_MAX];

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(kms_status_set(&st, KMS_ERR_INTERNAL, "<%s>", big),
	    KMS_ERR_INTERNAL);
	/* Cut to the buffer, always terminated, the start kept. */
	assert_int_equal(strlen(st.msg), KMS_STATUS_MSG_MAX - 1);
	assert_int_equal(st.msg[0], '<');
	assert_int_equal(st.msg[KMS_STATUS_MSG_MAX - 2], 'a');

	/* Exactly KMS_STATUS_MSG_MAX - 1 characters fit untouched. */
	big[KMS_STATUS_MSG_MAX - 1] = '\0';
	kms_status_set(&st, KMS_ERR_INTERNAL, "%s", big);
	assert_string_equal(st.msg, big);
}

static void
test_status_null(void **state)
{
	(void)state;
	/* Callers may pass no status: the code still comes back. */
	assert_int_equal(kms_status_set(NULL, KMS_ERR_HSM, "x %d", 1),
	    KMS_ERR_HSM);
	kms_status_clear(NULL);
}

static void
test_grpc_code_names(void **state)
{
	(void)state;
	assert_string_equal(kms_grpc_code_name(0), "OK");
	assert_string_equal(kms_grpc_code_name(7), "PERMISSION_DENIED");
	assert_string_equal(kms_grpc_code_name(14), "UNAVAILABLE");
	assert_string_equal(kms_grpc_code_name(16), "UNAUTHENTICATED");
	assert_string_equal(kms_grpc_code_name(17), "UNKNOWN");
	assert_string_equal(kms_grpc_code_name(-1), "UNKNOWN");
	/* Every error maps to a named code. */
	assert_string_equal(kms_grpc_code_name(kms_err_grpc_code(
	    KMS_ERR_AUDIT)), "UNAVAILABLE");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_covers_every_error),
		cmocka_unit_test(test_grpc_mapping),
		cmocka_unit_test(test_unknown_errors_are_internal),
		cmocka_unit_test(test_strerror_distinct),
		cmocka_unit_test(test_status_set_and_clear),
		cmocka_unit_test(test_status_truncates),
		cmocka_unit_test(test_status_null),
		cmocka_unit_test(test_grpc_code_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
