/*
 * fuzz_audit_verify.c: libFuzzer target for the audit verifier's record
 * parser and chain rules (auditv_chain_line).
 *
 * The input is split into lines as a segment file is.  Built with
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the verifier skips the hash
 * comparison (a fuzzer cannot compute SHA-256 chains) so that every rule
 * after it is reached.  Nothing may crash, leak or read out of bounds,
 * whatever the bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auditread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct audit_keyset *ks;
	struct auditv_chain c;
	const uint8_t *p = data, *end = data + size, *nl;
	char why[512];

	if ((ks = audit_keyset_new()) == NULL)
		return 0;
	auditv_chain_init(&c, "fuzz", ks);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		/* The verifier stops at the first bad line, as here. */
		if (auditv_chain_line(&c, (const char *)p, (size_t)(nl - p),
		    why, sizeof(why)) != 0)
			break;
		p = nl + 1;
	}
	auditv_chain_free(&c);
	audit_keyset_free(ks);
	return 0;
}
