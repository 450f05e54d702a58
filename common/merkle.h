/*
 * merkle.h: the RFC 9162 (Certificate Transparency 2.0) Merkle tree over
 * the audit records, with inclusion and consistency proofs and their
 * verifiers.
 *
 *   leaf hash  = SHA-256(0x00 || record line without its newline)
 *   node hash  = SHA-256(0x01 || left || right)
 *   empty tree = SHA-256("")
 *
 * The writer keeps only the right edge of the tree (struct merkle_edge:
 * one hash per set bit of the size) and hands every completed perfect
 * subtree ("node": level L, index I covers leaves [I << L, (I + 1) << L))
 * to a store, so that proofs need O(log n) node reads.  Nothing here does
 * I/O: nodes come and go through callbacks.
 */
#ifndef KMS_MERKLE_H
#define KMS_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_LEN 32
#define MERKLE_LEVELS 64
/* Inclusion proofs have at most 64 hashes, consistency proofs 65. */
#define MERKLE_PROOF_MAX 66

void merkle_leaf_hash(const void *data, size_t len,
    uint8_t out[MERKLE_HASH_LEN]);
void merkle_node_hash(const uint8_t left[MERKLE_HASH_LEN],
    const uint8_t right[MERKLE_HASH_LEN], uint8_t out[MERKLE_HASH_LEN]);

/* The compact right edge: h[l] is valid when bit l of size is set. */
struct merkle_edge {
	uint64_t size;
	uint8_t h[MERKLE_LEVELS][MERKLE_HASH_LEN];
};

/* Receives a completed node (the leaf itself at level 0); non-zero stops. */
typedef int (*merkle_emit_fn)(void *arg, unsigned int level, uint64_t index,
    const uint8_t hash[MERKLE_HASH_LEN]);
/* Returns the hash of a completed node, 0 or an error code. */
typedef int (*merkle_get_fn)(void *arg, unsigned int level, uint64_t index,
    uint8_t out[MERKLE_HASH_LEN]);

void merkle_edge_init(struct merkle_edge *e);
/*
 * Appends a leaf hash; emit (may be NULL) sees the leaf and every node it
 * completes, lowest level first.  A tree of 2^64 - 1 leaves is full.
 */
int merkle_edge_append(struct merkle_edge *e,
    const uint8_t leaf[MERKLE_HASH_LEN], merkle_emit_fn emit, void *arg);
/* The root hash of the tree the edge describes. */
void merkle_edge_root(const struct merkle_edge *e,
    uint8_t out[MERKLE_HASH_LEN]);

/* The root of the first size leaves, from stored nodes. */
int merkle_root(merkle_get_fn get, void *arg, uint64_t size,
    uint8_t out[MERKLE_HASH_LEN]);

/*
 * RFC 9162 2.1.3.1: the inclusion proof of leaf index in the tree of
 * size leaves, into proof (MERKLE_PROOF_MAX hashes), *n hashes.
 */
int merkle_inclusion_proof(merkle_get_fn get, void *arg, uint64_t index,
    uint64_t size, uint8_t proof[][MERKLE_HASH_LEN], size_t *n);
/* RFC 9162 2.1.4.1: the consistency proof from old_size to new_size. */
int merkle_consistency_proof(merkle_get_fn get, void *arg,
    uint64_t old_size, uint64_t new_size, uint8_t proof[][MERKLE_HASH_LEN],
    size_t *n);

/*
 * RFC 9162 2.1.3.2: 0 when proof shows leaf at index in the tree of size
 * leaves with the given root, else -1.
 */
int merkle_verify_inclusion(uint64_t index, uint64_t size,
    const uint8_t leaf[MERKLE_HASH_LEN],
    const uint8_t proof[][MERKLE_HASH_LEN], size_t n,
    const uint8_t root[MERKLE_HASH_LEN])
    __attribute__((warn_unused_result));
/*
 * RFC 9162 2.1.4.2: 0 when proof shows that the tree of old_size leaves
 * with old_root is a prefix of the tree of new_size leaves with new_root.
 * Equal sizes need an empty proof and equal roots; old_size 0 an empty
 * proof.
 */
int merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
    const uint8_t old_root[MERKLE_HASH_LEN],
    const uint8_t new_root[MERKLE_HASH_LEN],
    const uint8_t proof[][MERKLE_HASH_LEN], size_t n)
    __attribute__((warn_unused_result));

#endif /* KMS_MERKLE_H */
