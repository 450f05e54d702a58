/*
 * test_merkle.c: the RFC 9162 tree, proofs and verifiers (merkle.c).
 *
 * The known answers are the Certificate Transparency test vectors as kept
 * in github.com/transparency-dev/merkle, proof/verify_test.go (Apache 2.0;
 * the same vectors as google/certificate-transparency's
 * merkle_tree_test.cc): eight leaves, the roots of the trees of 1..8 of
 * them, and inclusion and consistency proofs between them.  Besides, every
 * proof of every tree up to 70 leaves is checked against a tree computed
 * the slow way, straight from the RFC's recursive definition, and every
 * one-bit change of a proof must fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "merkle.h"

#define H MERKLE_HASH_LEN

static const char *kat_leaves[8] = {
	"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
	"606162636465666768696a6b6c6d6e6f"
};

static const char *kat_roots[8] = {
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* {leaf (1-based), size, proof...} */
static const struct {
	uint64_t leaf, size;
	const char *proof[3];
	size_t n;
} kat_incl[] = {
	{ 1, 1, { NULL }, 0 },
	{ 1, 8, { "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
	    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4" }, 3 },
	{ 6, 8, { "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
	    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7" }, 3 },
	{ 3, 3, { "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125" }, 1 },
	{ 2, 5, { "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b" }, 3 },
};

static const struct {
	uint64_t size1, size2;
	const char *proof[3];
	size_t n;
} kat_cons[] = {
	{ 1, 1, { NULL }, 0 },
	{ 1, 8, { "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
	    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4" }, 3 },
	{ 6, 8, { "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
	    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
	    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7" }, 3 },
	{ 2, 5, { "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b" }, 2 },
	{ 6, 7, { "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
	    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
	    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7" }, 3 },
};

static size_t
unhex(const char *s, uint8_t *out)
{
	size_t i, n = strlen(s) / 2;
	unsigned int b;

	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(s + 2 * i, "%2x", &b), 1);
		out[i] = (uint8_t)b;
	}
	return n;
}

/* A tree in memory: leaf hashes, nodes computed from the definition. */
struct memtree {
	uint8_t (*leaf)[H];
	uint64_t n;
	unsigned int gets;
};

/* MTH(D[lo:lo+n]) by the RFC's recursion, for the cross-checks. */
static void
mth(const struct memtree *t, uint64_t lo, uint64_t n, uint8_t out[H])
{
	uint8_t l[H], r[H];
	uint64_t k = 1;

	if (n == 1) {
		memcpy(out, t->leaf[lo], H);
		return;
	}
	while (k * 2 < n)
		k *= 2;
	mth(t, lo, k, l);
	mth(t, lo + k, n - k, r);
	merkle_node_hash(l, r, out);
}

static int
mem_get(void *arg, unsigned int level, uint64_t index, uint8_t out[H])
{
	struct memtree *t = arg;
	uint64_t lo = index << level, n = (uint64_t)1 << level;

	t->gets++;
	if (level >= 63 || lo + n > t->n)
		return -1;
	mth(t, lo, n, out);
	return 0;
}

static void
kat_tree(struct memtree *t, uint8_t leaves[8][H])
{
	uint8_t data[16];
	size_t i, len;

	for (i = 0; i < 8; i++) {
		len = unhex(kat_leaves[i], data);
		merkle_leaf_hash(data, len, leaves[i]);
	}
	t->leaf = leaves;
	t->n = 8;
	t->gets = 0;
}

static void
test_kat_roots(void **state)
{
	uint8_t leaves[8][H], want[H], got[H];
	struct merkle_edge e;
	struct memtree t;
	size_t i;

	(void)state;
	kat_tree(&t, leaves);
	merkle_edge_init(&e);
	merkle_edge_root(&e, got);
	unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	    want);
	assert_memory_equal(got, want, H);
	for (i = 0; i < 8; i++) {
		assert_int_equal(merkle_edge_append(&e, leaves[i], NULL, NULL),
		    0);
		unhex(kat_roots[i], want);
		merkle_edge_root(&e, got);
		assert_memory_equal(got, want, H);
		assert_int_equal(merkle_root(mem_get, &t, i + 1, got), 0);
		assert_memory_equal(got, want, H);
	}
}

static void
test_kat_inclusion(void **state)
{
	uint8_t leaves[8][H], root[H], want[MERKLE_PROOF_MAX][H];
	uint8_t got[MERKLE_PROOF_MAX][H];
	struct memtree t;
	size_t i, j, n;

	(void)state;
	kat_tree(&t, leaves);
	for (i = 0; i < sizeof(kat_incl) / sizeof(kat_incl[0]); i++) {
		for (j = 0; j < kat_incl[i].n; j++)
			unhex(kat_incl[i].proof[j], want[j]);
		unhex(kat_roots[kat_incl[i].size - 1], root);
		assert_int_equal(merkle_inclusion_proof(mem_get, &t,
		    kat_incl[i].leaf - 1, kat_incl[i].size, got, &n), 0);
		assert_int_equal(n, kat_incl[i].n);
		if (n > 0)
			assert_memory_equal(got, want, n * H);
		assert_int_equal(merkle_verify_inclusion(kat_incl[i].leaf - 1,
		    kat_incl[i].size, leaves[kat_incl[i].leaf - 1],
		    (const uint8_t (*)[H])want, kat_incl[i].n, root), 0);
		/* The wrong leaf, index or size fails. */
		assert_int_not_equal(merkle_verify_inclusion(
		    kat_incl[i].leaf % kat_incl[i].size, kat_incl[i].size,
		    leaves[kat_incl[i].leaf - 1], (const uint8_t (*)[H])want,
		    kat_incl[i].n, root) == 0 && kat_incl[i].size > 1, 1);
		assert_int_not_equal(merkle_verify_inclusion(
		    kat_incl[i].leaf - 1, kat_incl[i].size * 2,
		    leaves[kat_incl[i].leaf - 1], (const uint8_t (*)[H])want,
		    kat_incl[i].n, root), 0);
	}
}

static void
test_kat_consistency(void **state)
{
	uint8_t leaves[8][H], r1[H], r2[H], want[MERKLE_PROOF_MAX][H];
	uint8_t got[MERKLE_PROOF_MAX][H];
	struct memtree t;
	size_t i, j, n;

	(void)state;
	kat_tree(&t, leaves);
	for (i = 0; i < sizeof(kat_cons) / sizeof(kat_cons[0]); i++) {
		for (j = 0; j < kat_cons[i].n; j++)
			unhex(kat_cons[i].proof[j], want[j]);
		unhex(kat_roots[kat_cons[i].size1 - 1], r1);
		unhex(kat_roots[kat_cons[i].size2 - 1], r2);
		assert_int_equal(merkle_consistency_proof(mem_get, &t,
		    kat_cons[i].size1, kat_cons[i].size2, got, &n), 0);
		assert_int_equal(n, kat_cons[i].n);
		if (n > 0)
			assert_memory_equal(got, want, n * H);
		assert_int_equal(merkle_verify_consistency(kat_cons[i].size1,
		    kat_cons[i].size2, r1, r2, (const uint8_t (*)[H])want,
		    kat_cons[i].n), 0);
		if (kat_cons[i].n == 0)
			continue;
		/* Swapped roots, a shorter proof and the wrong size fail. */
		assert_int_not_equal(merkle_verify_consistency(
		    kat_cons[i].size1, kat_cons[i].size2, r2, r1,
		    (const uint8_t (*)[H])want, kat_cons[i].n), 0);
		assert_int_not_equal(merkle_verify_consistency(
		    kat_cons[i].size1, kat_cons[i].size2, r1, r2,
		    (const uint8_t (*)[H])want, kat_cons[i].n - 1), 0);
		assert_int_not_equal(merkle_verify_consistency(
		    kat_cons[i].size1 + 1, kat_cons[i].size2, r1, r2,
		    (const uint8_t (*)[H])want, kat_cons[i].n), 0);
	}
}

static void
test_edge_cases(void **state)
{
	uint8_t a[H], b[H], p[MERKLE_PROOF_MAX][H];

	(void)state;
	memset(a, 1, H);
	memset(b, 2, H);
	memset(p, 3, sizeof(p));
	/* Index out of range, empty trees, proofs too long. */
	assert_int_not_equal(merkle_verify_inclusion(0, 0, a, p, 0, a), 0);
	assert_int_not_equal(merkle_verify_inclusion(1, 1, a, p, 0, a), 0);
	assert_int_equal(merkle_verify_inclusion(0, 1, a, p, 0, a), 0);
	assert_int_not_equal(merkle_verify_inclusion(0, 1, a, p, 1, a), 0);
	assert_int_not_equal(merkle_verify_inclusion(0, 1, a, p, 0, b), 0);
	assert_int_equal(merkle_verify_consistency(0, 0, a, a, p, 0), 0);
	assert_int_equal(merkle_verify_consistency(0, 5, a, b, p, 0), 0);
	assert_int_not_equal(merkle_verify_consistency(0, 5, a, b, p, 1), 0);
	assert_int_not_equal(merkle_verify_consistency(3, 3, a, b, p, 0), 0);
	assert_int_not_equal(merkle_verify_consistency(3, 3, a, a, p, 1), 0);
	assert_int_not_equal(merkle_verify_consistency(4, 3, a, b, p, 0), 0);
	assert_int_not_equal(merkle_verify_consistency(1, 2, a, b, p, 0), 0);
	assert_int_not_equal(merkle_verify_consistency(1, 2, a, b, p,
	    MERKLE_PROOF_MAX + 1), 0);
}

struct emitted {
	uint8_t (*nodes)[8][H];	/* [index][level] */
	unsigned int count;
};

static int
keep_node(void *arg, unsigned int level, uint64_t index, const uint8_t h[H])
{
	struct emitted *em = arg;

	assert_true(level < 8);
	memcpy(em->nodes[index][level], h, H);
	em->count++;
	return 0;
}

static int
emitted_get(void *arg, unsigned int level, uint64_t index, uint8_t out[H])
{
	struct emitted *em = arg;

	memcpy(out, em->nodes[index][level], H);
	return 0;
}

/* Every proof of every tree up to 70 leaves, and every flipped bit. */
static void
test_exhaustive(void **state)
{
	enum { N = 70 };
	static uint8_t leaves[N][H], nodes[N][8][H];
	uint8_t root[N + 1][H], edge_root[H], p[MERKLE_PROOF_MAX][H];
	struct merkle_edge e;
	struct emitted em = { nodes, 0 };
	struct memtree t = { leaves, N, 0 };
	uint64_t size, i, j;
	size_t n, k;
	char buf[32];

	(void)state;
	merkle_edge_init(&e);
	for (i = 0; i < N; i++) {
		snprintf(buf, sizeof(buf), "record %u", (unsigned int)i);
		merkle_leaf_hash(buf, strlen(buf), leaves[i]);
		assert_int_equal(merkle_edge_append(&e, leaves[i], keep_node,
		    &em), 0);
		mth(&t, 0, i + 1, root[i + 1]);
		merkle_edge_root(&e, edge_root);
		assert_memory_equal(edge_root, root[i + 1], H);
	}
	/* Each perfect subtree is emitted once: N/2^l of them per level. */
	for (i = 0, j = 0; i < 8; i++)
		j += N >> i;
	assert_int_equal(em.count, j);
	for (size = 1; size <= N; size++) {
		assert_int_equal(merkle_root(emitted_get, &em, size,
		    edge_root), 0);
		assert_memory_equal(edge_root, root[size], H);
		for (i = 0; i < size; i++) {
			assert_int_equal(merkle_inclusion_proof(emitted_get,
			    &em, i, size, p, &n), 0);
			assert_int_equal(merkle_verify_inclusion(i, size,
			    leaves[i], (const uint8_t (*)[H])p, n,
			    root[size]), 0);
			if (size > 1)
				assert_int_not_equal(merkle_verify_inclusion(
				    (i + 1) % size, size, leaves[i],
				    (const uint8_t (*)[H])p, n, root[size]), 0);
			for (k = 0; k < n; k++) {
				p[k][k % H] ^= 0x10;
				assert_int_not_equal(merkle_verify_inclusion(i,
				    size, leaves[i], (const uint8_t (*)[H])p,
				    n, root[size]), 0);
				p[k][k % H] ^= 0x10;
			}
		}
		for (j = 1; j <= size; j++) {
			assert_int_equal(merkle_consistency_proof(emitted_get,
			    &em, j, size, p, &n), 0);
			assert_int_equal(merkle_verify_consistency(j, size,
			    root[j], root[size], (const uint8_t (*)[H])p, n),
			    0);
			if (j == size)
				continue;
			assert_int_not_equal(merkle_verify_consistency(j, size,
			    root[j == 1 ? 2 : j - 1], root[size],
			    (const uint8_t (*)[H])p, n), 0);
			for (k = 0; k < n; k++) {
				p[k][(k * 7) % H] ^= 0x01;
				assert_int_not_equal(merkle_verify_consistency(
				    j, size, root[j], root[size],
				    (const uint8_t (*)[H])p, n), 0);
				p[k][(k * 7) % H] ^= 0x01;
			}
		}
	}
	/* Proof generation asks only for nodes that exist. */
	assert_int_not_equal(merkle_inclusion_proof(emitted_get, &em, N, N, p,
	    &n), 0);
	assert_int_not_equal(merkle_consistency_proof(emitted_get, &em, 5, 4,
	    p, &n), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kat_roots),
		cmocka_unit_test(test_kat_inclusion),
		cmocka_unit_test(test_kat_consistency),
		cmocka_unit_test(test_edge_cases),
		cmocka_unit_test(test_exhaustive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
