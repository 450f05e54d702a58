/*
 * fuzz_proof.c: libFuzzer target for the RFC 9162 proof verifiers
 * (merkle_verify_inclusion, merkle_verify_consistency) on arbitrary
 * sizes, indexes, roots and proofs.  The first 16 bytes are two sizes,
 * the next 64 two hashes, the rest proof hashes.  Nothing may crash or
 * read out of bounds, and a proof must never show a leaf outside its
 * tree or a tree consistent with a larger older one.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "merkle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t proof[MERKLE_PROOF_MAX + 4][MERKLE_HASH_LEN];
	uint64_t a, b;
	size_t n;

	if (size < 16 + 2 * MERKLE_HASH_LEN)
		return 0;
	memcpy(&a, data, 8);
	memcpy(&b, data + 8, 8);
	/* Small sizes reach the interesting branches more often. */
	if (data[0] & 1) {
		a &= 0xffff;
		b &= 0xffff;
	}
	n = (size - 16 - 2 * MERKLE_HASH_LEN) / MERKLE_HASH_LEN;
	if (n > MERKLE_PROOF_MAX + 4)
		n = MERKLE_PROOF_MAX + 4;
	memcpy(proof, data + 16 + 2 * MERKLE_HASH_LEN, n * MERKLE_HASH_LEN);
	if (merkle_verify_inclusion(a, b, data + 16, (const uint8_t (*)[
	    MERKLE_HASH_LEN])proof, n, data + 16 + MERKLE_HASH_LEN) == 0 &&
	    a >= b)
		abort();
	if (merkle_verify_consistency(a, b, data + 16, data + 16 +
	    MERKLE_HASH_LEN, (const uint8_t (*)[MERKLE_HASH_LEN])proof,
	    n) == 0 && a > b)
		abort();
	return 0;
}
