/*
 * audittree.h: the Merkle tree over a chain's records (common/merkle.h),
 * as the audit writer keeps it: the compact right edge in memory, and
 * every completed node on disk, so that a proof reads O(log n) hashes.
 *
 * Nodes live in CHAIN/tree/LL (LL = level, two digits), the node of index
 * I at offset 32 * I.  The files are derived data: they are rebuilt from
 * the records at every start (audit_open hashes the whole chain anyway
 * to check it against its last checkpoint), never trusted across starts,
 * and not fsync'd.
 *
 * Only the writer thread adds; any thread may read nodes of a tree size
 * the writer has published (audit_tree_node opens the file itself).  The
 * writer flushes before it signs a checkpoint, since proofs are only
 * given for checkpointed sizes, and in between only when
 * AUDIT_TREE_PENDING_MAX bytes of nodes wait: node writes per batch of
 * records would cost a system call per level.
 */
#ifndef KMS_AUDITTREE_H
#define KMS_AUDITTREE_H

#include <stddef.h>
#include <stdint.h>

#include "merkle.h"

struct kms_status;
struct audit_tree;

/* Creates CHAIN/tree, empties its node files and starts an empty tree. */
int audit_tree_open(const char *chain_dir, struct audit_tree **out,
    struct kms_status *st);
void audit_tree_close(struct audit_tree *t);

/* Adds one record (its line, without the newline) as the next leaf. */
int audit_tree_add(struct audit_tree *t, const char *line, size_t len);
/* Adds every line of buf ("line\n" repeated). */
int audit_tree_add_lines(struct audit_tree *t, const char *buf, size_t len);
/* Writes the nodes completed since the last flush. */
int audit_tree_flush(struct audit_tree *t);
/* Bytes of completed nodes not yet flushed. */
size_t audit_tree_pending(const struct audit_tree *t);

#define AUDIT_TREE_PENDING_MAX	(256 * 1024)

/* The writer's view: leaves added, and the root over them. */
uint64_t audit_tree_size(const struct audit_tree *t);
void audit_tree_root(const struct audit_tree *t,
    uint8_t root[MERKLE_HASH_LEN]);

/*
 * merkle_get_fn over the node files of chain_dir (a NUL-terminated path
 * passed as arg): usable by any thread for flushed nodes.
 */
int audit_tree_node(void *chain_dir, unsigned int level, uint64_t index,
    uint8_t out[MERKLE_HASH_LEN]);

#endif /* KMS_AUDITTREE_H */
