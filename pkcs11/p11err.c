/*
 * p11err.c: kms errors as PKCS#11 return values (see p11err.h).
 */
#include "kmserr.h"
#include "p11err.h"

static const struct {
	int err;
	CK_RV rv;
} rv_table[] = {
	{ KMS_OK, CKR_OK },
	{ KMS_ERR_NOMEM, CKR_HOST_MEMORY },
	{ KMS_ERR_INVALID_ARGUMENT, CKR_DATA_INVALID },
	{ KMS_ERR_RESOURCE_EXHAUSTED, CKR_DATA_LEN_RANGE },
	/* The key went away since the object was listed. */
	{ KMS_ERR_NOT_FOUND, CKR_KEY_HANDLE_INVALID },
	{ KMS_ERR_PERMISSION_DENIED, CKR_FUNCTION_REJECTED },
	{ KMS_ERR_UNAUTHENTICATED, CKR_FUNCTION_REJECTED },
	/* A disabled or destroyed version, or a key that cannot sign. */
	{ KMS_ERR_FAILED_PRECONDITION, CKR_KEY_FUNCTION_NOT_PERMITTED },
	{ KMS_ERR_UNIMPLEMENTED, CKR_FUNCTION_NOT_SUPPORTED },
	{ KMS_ERR_UNAVAILABLE, CKR_DEVICE_ERROR },
	{ KMS_ERR_IO, CKR_DEVICE_ERROR },
	{ KMS_ERR_CONFIG, CKR_GENERAL_ERROR },
};

CK_RV
p11_rv_of(int err, int transport)
{
	size_t i;

	if (transport)
		return CKR_DEVICE_ERROR;
	for (i = 0; i < sizeof(rv_table) / sizeof(rv_table[0]); i++)
		if (rv_table[i].err == err)
			return rv_table[i].rv;
	/* INTERNAL, HSM, AUDIT and the rest: kmsd could not do it. */
	return CKR_DEVICE_ERROR;
}
