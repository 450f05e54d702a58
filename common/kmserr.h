/*
 * kmserr.h: error codes shared by every kms module.
 *
 * Functions return 0 on success or a negative KMS_ERR_* value.  The
 * mapping to gRPC status codes lives in exactly one table (kmserr.c) so
 * that a client sees the same status for the same failure everywhere.
 */
#ifndef KMS_KMSERR_H
#define KMS_KMSERR_H

#include <stddef.h>

enum kms_err {
	KMS_OK = 0,
	KMS_ERR_INTERNAL = -1,		/* bug or unexpected state */
	KMS_ERR_NOMEM = -2,		/* allocation failed */
	KMS_ERR_INVALID_ARGUMENT = -3,	/* caller sent bad input */
	KMS_ERR_NOT_FOUND = -4,		/* no such key / version */
	KMS_ERR_ALREADY_EXISTS = -5,	/* key name taken */
	KMS_ERR_PERMISSION_DENIED = -6,	/* policy says no */
	KMS_ERR_FAILED_PRECONDITION = -7, /* wrong state or purpose */
	KMS_ERR_UNAVAILABLE = -8,	/* HSM unusable right now */
	KMS_ERR_AUDIT = -9,		/* audit record could not be made durable */
	KMS_ERR_UNAUTHENTICATED = -10,	/* no verified client identity */
	KMS_ERR_HSM = -11,		/* HSM refused or failed the operation */
	KMS_ERR_CONFIG = -12,		/* bad configuration or policy file */
	KMS_ERR_IO = -13,		/* file system error */
	KMS_ERR_UNIMPLEMENTED = -14,	/* not supported */
	KMS_ERR_RESOURCE_EXHAUSTED = -15, /* too large or too many */
	KMS_ERR_STALE_HANDLE = -16,	/* cached HSM object handle no longer valid: look it up again */
	KMS_ERR_VERIFY_FAILED = -17,	/* a signature or MAC did not verify */
	KMS_ERR_CONFLICT = -18,		/* the store changed meanwhile: read it again */
	KMS_ERR_LAST = -19
};

/* A human-readable, static description of an error code. */
const char *kms_strerror(int err);

/*
 * The numeric gRPC status code (as in grpc/status.h, which this header
 * does not include) that answers a request failing with err.
 */
int kms_err_grpc_code(int err);

/* The name of a numeric gRPC status code ("PERMISSION_DENIED"). */
const char *kms_grpc_code_name(int code);

/*
 * A status travelling with a request: the error code and a message that
 * a person can act on.  The message never holds key bytes, PINs or
 * plaintext.
 */
#define KMS_STATUS_MSG_MAX 512
struct kms_status {
	int err;
	char msg[KMS_STATUS_MSG_MAX];
};

void kms_status_clear(struct kms_status *st);
/* Sets st and returns err, so that callers can `return kms_status_set(...)`. */
int kms_status_set(struct kms_status *st, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* KMS_KMSERR_H */
