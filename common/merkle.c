/*
 * merkle.c: the RFC 9162 Merkle tree (see merkle.h).
 */
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "kmserr.h"
#include "merkle.h"

void
merkle_leaf_hash(const void *data, size_t len, uint8_t out[MERKLE_HASH_LEN])
{
	static const uint8_t prefix = 0x00;
	EVP_MD_CTX *c;
	int ok;

	/* Only an allocation can fail; a zero hash then fails every proof. */
	ok = (c = EVP_MD_CTX_new()) != NULL &&
	    EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(c, &prefix, 1) == 1 &&
	    EVP_DigestUpdate(c, data, len) == 1 &&
	    EVP_DigestFinal_ex(c, out, NULL) == 1;
	EVP_MD_CTX_free(c);
	if (!ok)
		memset(out, 0, MERKLE_HASH_LEN);
}

void
merkle_node_hash(const uint8_t left[MERKLE_HASH_LEN],
    const uint8_t right[MERKLE_HASH_LEN], uint8_t out[MERKLE_HASH_LEN])
{
	uint8_t buf[1 + 2 * MERKLE_HASH_LEN];

	buf[0] = 0x01;
	memcpy(buf + 1, left, MERKLE_HASH_LEN);
	memcpy(buf + 1 + MERKLE_HASH_LEN, right, MERKLE_HASH_LEN);
	SHA256(buf, sizeof(buf), out);
}

void
merkle_edge_init(struct merkle_edge *e)
{
	memset(e, 0, sizeof(*e));
}

int
merkle_edge_append(struct merkle_edge *e,
    const uint8_t leaf[MERKLE_HASH_LEN], merkle_emit_fn emit, void *arg)
{
	uint8_t h[MERKLE_HASH_LEN];
	unsigned int level = 0;
	int r;

	if (e->size == UINT64_MAX)
		return KMS_ERR_RESOURCE_EXHAUSTED;
	memcpy(h, leaf, MERKLE_HASH_LEN);
	if (emit != NULL && (r = emit(arg, 0, e->size, h)) != 0)
		return r;
	/* Every set low bit is a left sibling waiting for this node. */
	while ((e->size >> level) & 1) {
		merkle_node_hash(e->h[level], h, h);
		level++;
		if (emit != NULL &&
		    (r = emit(arg, level, e->size >> level, h)) != 0)
			return r;
	}
	memcpy(e->h[level], h, MERKLE_HASH_LEN);
	e->size++;
	return 0;
}

void
merkle_edge_root(const struct merkle_edge *e, uint8_t out[MERKLE_HASH_LEN])
{
	uint8_t r[MERKLE_HASH_LEN];
	unsigned int l;
	int have = 0;

	if (e->size == 0) {
		SHA256(NULL, 0, out);
		return;
	}
	/* Fold the perfect subtrees from the right (smallest) to the left. */
	for (l = 0; l < MERKLE_LEVELS; l++) {
		if (((e->size >> l) & 1) == 0)
			continue;
		if (!have)
			memcpy(r, e->h[l], MERKLE_HASH_LEN);
		else
			merkle_node_hash(e->h[l], r, r);
		have = 1;
	}
	memcpy(out, r, MERKLE_HASH_LEN);
}

/* The largest power of two below n (n >= 2). */
static uint64_t
split_point(uint64_t n)
{
	return (uint64_t)1 << (63 - __builtin_clzll(n - 1));
}

/*
 * MTH(D[lo:lo+n]) for n >= 1 and lo a multiple of the largest power of
 * two not above n, as every range in RFC 9162's recursion is: the range
 * is a run of perfect subtrees, largest first, folded from the right.
 */
static int
range_hash(merkle_get_fn get, void *arg, uint64_t lo, uint64_t n,
    uint8_t out[MERKLE_HASH_LEN])
{
	uint8_t parts[MERKLE_LEVELS][MERKLE_HASH_LEN];
	unsigned int np = 0, level;
	uint64_t size;
	int r;

	if (n == 0)
		return KMS_ERR_INVALID_ARGUMENT;
	while (n > 0 && np < MERKLE_LEVELS) {
		level = 63 - (unsigned int)__builtin_clzll(n);
		size = (uint64_t)1 << level;
		if ((r = get(arg, level, lo >> level, parts[np])) != 0)
			return r;
		np++;
		lo += size;
		n -= size;
	}
	if (n != 0 || np == 0)
		return KMS_ERR_INVALID_ARGUMENT;
	memcpy(out, parts[np - 1], MERKLE_HASH_LEN);
	for (; np > 1; np--)
		merkle_node_hash(parts[np - 2], out, out);
	return 0;
}

int
merkle_root(merkle_get_fn get, void *arg, uint64_t size,
    uint8_t out[MERKLE_HASH_LEN])
{
	if (size == 0) {
		SHA256(NULL, 0, out);
		return 0;
	}
	return range_hash(get, arg, 0, size, out);
}

int
merkle_inclusion_proof(merkle_get_fn get, void *arg, uint64_t index,
    uint64_t size, uint8_t proof[][MERKLE_HASH_LEN], size_t *n)
{
	uint64_t lo = 0, k;
	size_t depth = 0, i;
	uint8_t tmp[MERKLE_HASH_LEN];
	int r;

	*n = 0;
	if (index >= size)
		return KMS_ERR_INVALID_ARGUMENT;
	/* Siblings from the root down; the proof lists them bottom up. */
	while (size > 1) {
		k = split_point(size);
		if (index < k) {
			r = range_hash(get, arg, lo + k, size - k,
			    proof[depth]);
			size = k;
		} else {
			r = range_hash(get, arg, lo, k, proof[depth]);
			index -= k;
			lo += k;
			size -= k;
		}
		if (r != 0)
			return r;
		depth++;
	}
	for (i = 0; i < depth / 2; i++) {
		memcpy(tmp, proof[i], MERKLE_HASH_LEN);
		memcpy(proof[i], proof[depth - 1 - i], MERKLE_HASH_LEN);
		memcpy(proof[depth - 1 - i], tmp, MERKLE_HASH_LEN);
	}
	*n = depth;
	return 0;
}

int
merkle_consistency_proof(merkle_get_fn get, void *arg, uint64_t old_size,
    uint64_t new_size, uint8_t proof[][MERKLE_HASH_LEN], size_t *n)
{
	uint8_t sib[MERKLE_LEVELS][MERKLE_HASH_LEN];
	uint64_t m = old_size, size = new_size, lo = 0, k;
	size_t ns = 0, out = 0;
	int whole = 1, r;

	*n = 0;
	if (old_size > new_size)
		return KMS_ERR_INVALID_ARGUMENT;
	if (old_size == 0 || old_size == new_size)
		return 0;
	/* SUBPROOF(m, D[lo:lo+size], whole), its siblings top down. */
	while (m != size) {
		k = split_point(size);
		if (m <= k) {
			r = range_hash(get, arg, lo + k, size - k, sib[ns]);
			size = k;
		} else {
			r = range_hash(get, arg, lo, k, sib[ns]);
			m -= k;
			lo += k;
			size -= k;
			whole = 0;
		}
		if (r != 0)
			return r;
		ns++;
	}
	/* The old tree is a subtree here: named unless it is the left edge. */
	if (!whole && (r = range_hash(get, arg, lo, size, proof[out++])) != 0)
		return r;
	while (ns > 0)
		memcpy(proof[out++], sib[--ns], MERKLE_HASH_LEN);
	*n = out;
	return 0;
}

int
merkle_verify_inclusion(uint64_t index, uint64_t size,
    const uint8_t leaf[MERKLE_HASH_LEN],
    const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
    const uint8_t root[MERKLE_HASH_LEN])
{
	uint8_t r[MERKLE_HASH_LEN];
	uint64_t fn, sn;
	size_t i;

	if (index >= size || n > MERKLE_PROOF_MAX)
		return -1;
	fn = index;
	sn = size - 1;
	memcpy(r, leaf, MERKLE_HASH_LEN);
	for (i = 0; i < n; i++) {
		if (sn == 0)
			return -1;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(proof[i], r, r);
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else
			merkle_node_hash(r, proof[i], r);
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || memcmp(r, root, MERKLE_HASH_LEN) != 0)
		return -1;
	return 0;
}

int
merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
    const uint8_t old_root[MERKLE_HASH_LEN],
    const uint8_t new_root[MERKLE_HASH_LEN],
    const uint8_t proof[][MERKLE_HASH_LEN], size_t n)
{
	uint8_t fr[MERKLE_HASH_LEN], sr[MERKLE_HASH_LEN];
	const uint8_t *c;
	uint64_t fn, sn;
	size_t i, start;

	if (old_size > new_size || n > MERKLE_PROOF_MAX)
		return -1;
	if (old_size == new_size)
		return n == 0 && memcmp(old_root, new_root,
		    MERKLE_HASH_LEN) == 0 ? 0 : -1;
	if (old_size == 0)
		return n == 0 ? 0 : -1;
	if (n == 0)
		return -1;
	/*
	 * An old tree of a power-of-two size is the left edge of the new
	 * one and is not in the proof: its root starts the path.
	 */
	start = (old_size & (old_size - 1)) == 0 ? 0 : 1;
	c = start == 0 ? old_root : proof[0];
	fn = old_size - 1;
	sn = new_size - 1;
	while (fn & 1) {
		fn >>= 1;
		sn >>= 1;
	}
	memcpy(fr, c, MERKLE_HASH_LEN);
	memcpy(sr, c, MERKLE_HASH_LEN);
	for (i = start; i < n; i++) {
		if (sn == 0)
			return -1;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(proof[i], fr, fr);
			merkle_node_hash(proof[i], sr, sr);
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else
			merkle_node_hash(sr, proof[i], sr);
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || memcmp(fr, old_root, MERKLE_HASH_LEN) != 0 ||
	    memcmp(sr, new_root, MERKLE_HASH_LEN) != 0)
		return -1;
	return 0;
}
