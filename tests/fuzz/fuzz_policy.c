/*
 * fuzz_policy.c: libFuzzer target for the policy parser and the decision
 * function, and the key-name grammar, on arbitrary bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmserr.h"
#include "names.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_decision d;
	struct kms_status st;
	struct policy *p = NULL;
	const char *roles[8];
	char *text;
	int op;

	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	kms_status_clear(&st);
	/* The same bytes as a key name and as an identity. */
	names_check_key(text, &st);
	if (policy_parse(text, &p, &st) == 0) {
		for (op = KMS_OP_NONE; op <= KMS_OP_MAX; op++) {
			policy_check(p, "ci", (enum kms_op)op, "release/a", &d);
			policy_check(p, text, (enum kms_op)op, text, &d);
		}
		policy_may_see(p, text, "release/a");
		policy_roles(p, text, roles, 8);
		policy_free(p);
	}
	free(text);
	return 0;
}
