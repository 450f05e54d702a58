/*
 * fuzz_capgo.c: libFuzzer target for the Capgo bundle reader: the
 * ivSessionKey and checksum parsers, the RSA block checks, decryption and
 * the checksum comparison, and the public-key PEM reader.
 *
 * Input: IV_SESSION_KEY "\n" CHECKSUM "\n" CIPHERTEXT, checked with the
 * public key of the known answer (tests/unit/capgo_kat.h), whose bundle
 * is the seed; the whole input is also read as a PEM.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "capgo.h"
#include "capgo_kat.h"
#include "kmserr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static EVP_PKEY *pub;
	struct kms_status st;
	EVP_PKEY *pk = NULL;
	const uint8_t *nl1, *nl2;
	char *ivsk = NULL, *sum = NULL;
	uint64_t len;
	size_t rest;
	FILE *in;

	kms_status_clear(&st);
	if (pub == NULL && capgo_pubkey_from_pem(kat_pub, strlen(kat_pub), &pub,
	    &st) != 0)
		abort();
	if (capgo_pubkey_from_pem((const char *)data, size, &pk, &st) == 0)
		EVP_PKEY_free(pk);
	if ((nl1 = memchr(data, '\n', size)) == NULL ||
	    (nl2 = memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - data))) ==
	    NULL)
		return 0;
	if ((ivsk = strndup((const char *)data, (size_t)(nl1 - data))) ==
	    NULL || (sum = strndup((const char *)nl1 + 1,
	    (size_t)(nl2 - nl1 - 1))) == NULL)
		goto out;
	rest = size - (size_t)(nl2 + 1 - data);
	/* fmemopen(3) refuses an empty buffer. */
	in = rest > 0 ? fmemopen((void *)(nl2 + 1), rest, "rb") :
	    fopen("/dev/null", "rb");
	if (in == NULL)
		goto out;
	capgo_decrypt(in, NULL, pub, ivsk, sum, &len, &st);
	fclose(in);
 out:
	free(ivsk);
	free(sum);
	return 0;
}
