/*
 * fuzz_identity.c: libFuzzer target for the certificate identity rules
 * (kms/identity.c): DER certificates in, an identity or a refusal out.
 * Checks the promises of identity.h on every input it can parse.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "identity.h"
#include "kmserr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *p = data;
	struct identity id;
	size_t i, len;
	X509 *x;
	int r;

	if ((x = d2i_X509(NULL, &p, (long)size)) == NULL)
		return 0;
	r = identity_from_cert(x, &id);
	len = strnlen(id.name, sizeof(id.name));
	if (len == sizeof(id.name) ||
	    strnlen(id.reason, sizeof(id.reason)) == sizeof(id.reason))
		abort();
	if (r == 0) {
		/* An identity: 1..512 bytes, no control byte, not kmsd's. */
		if (len == 0 || len > IDENTITY_MAX || id.reason[0] != '\0' ||
		    identity_is_internal(id.name))
			abort();
		for (i = 0; i < len; i++)
			if ((unsigned char)id.name[i] < 0x20 ||
			    id.name[i] == 0x7f)
				abort();
	} else if (r != KMS_ERR_UNAUTHENTICATED || len != 0 ||
	    id.reason[0] == '\0')
		abort();
	X509_free(x);
	return 0;
}
