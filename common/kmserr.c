/*
 * kmserr.c: error strings and the one table mapping errors to gRPC codes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kmserr.h"

/* Numeric gRPC status codes (grpc/status.h), repeated so this file needs no gRPC header. */
enum {
	GRPC_OK = 0,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16
};

static const struct {
	int err;
	int grpc;
	const char *text;
} errtab[] = {
	{ KMS_OK, GRPC_OK, "success" },
	{ KMS_ERR_INTERNAL, GRPC_INTERNAL, "internal error" },
	{ KMS_ERR_NOMEM, GRPC_RESOURCE_EXHAUSTED, "out of memory" },
	{ KMS_ERR_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT, "invalid argument" },
	{ KMS_ERR_NOT_FOUND, GRPC_NOT_FOUND, "not found" },
	{ KMS_ERR_ALREADY_EXISTS, GRPC_ALREADY_EXISTS, "already exists" },
	{ KMS_ERR_PERMISSION_DENIED, GRPC_PERMISSION_DENIED, "permission denied" },
	{ KMS_ERR_FAILED_PRECONDITION, GRPC_FAILED_PRECONDITION, "failed precondition" },
	{ KMS_ERR_UNAVAILABLE, GRPC_UNAVAILABLE, "HSM unavailable" },
	{ KMS_ERR_AUDIT, GRPC_UNAVAILABLE, "audit log unavailable" },
	{ KMS_ERR_UNAUTHENTICATED, GRPC_UNAUTHENTICATED, "unauthenticated" },
	{ KMS_ERR_HSM, GRPC_UNAVAILABLE, "HSM operation failed" },
	{ KMS_ERR_CONFIG, GRPC_INTERNAL, "configuration error" },
	{ KMS_ERR_IO, GRPC_INTERNAL, "I/O error" },
	{ KMS_ERR_UNIMPLEMENTED, GRPC_UNIMPLEMENTED, "not implemented" },
	{ KMS_ERR_RESOURCE_EXHAUSTED, GRPC_RESOURCE_EXHAUSTED, "resource exhausted" },
	{ KMS_ERR_STALE_HANDLE, GRPC_UNAVAILABLE, "stale HSM object handle" },
	{ KMS_ERR_VERIFY_FAILED, GRPC_INVALID_ARGUMENT, "verification failed" },
	{ KMS_ERR_CONFLICT, GRPC_ABORTED, "changed concurrently" },
};

const char *
kms_strerror(int err)
{
	size_t i;

	for (i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].err == err)
			return errtab[i].text;
	return "unknown error";
}

int
kms_err_grpc_code(int err)
{
	size_t i;

	for (i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].err == err)
			return errtab[i].grpc;
	return GRPC_INTERNAL;
}

void
kms_status_clear(struct kms_status *st)
{
	if (st == NULL)
		return;
	st->err = KMS_OK;
	st->msg[0] = '\0';
}

int
kms_status_set(struct kms_status *st, int err, const char *fmt, ...)
{
	va_list ap;

	if (st == NULL)
		return err;
	st->err = err;
	va_start(ap, fmt);
	/* vsnprintf truncates and always terminates a non-empty buffer. */
	vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
	va_end(ap);
	return err;
}

static const char *const grpc_code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
	"DATA_LOSS", "UNAUTHENTICATED"
};

const char *
kms_grpc_code_name(int code)
{
	if (code < 0 || (size_t)code >=
	    sizeof(grpc_code_names) / sizeof(grpc_code_names[0]))
		return "UNKNOWN";
	return grpc_code_names[code];
}
