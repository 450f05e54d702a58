/*
 * audittree.c: the audit chain's Merkle tree and its node files (see
 * audittree.h).
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audittree.h"
#include "kmserr.h"
#include "log.h"

#define TREE_SUBDIR "tree"

/* Nodes completed since the last flush, per level, in index order. */
struct level_buf {
	uint8_t *buf;
	size_t len, cap;
	uint64_t first;			/* index of the first node in buf */
};

struct audit_tree {
	char dir[4400];			/* CHAIN/tree */
	int fd[MERKLE_LEVELS];		/* -1 until the level exists */
	struct merkle_edge edge;
	struct level_buf lv[MERKLE_LEVELS];
};

static void
level_path(const char *tree_dir, unsigned int level, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%02u", tree_dir, level);
}

int
audit_tree_open(const char *chain_dir, struct audit_tree **out,
    struct kms_status *st)
{
	struct audit_tree *t;
	char path[4500];
	unsigned int l;

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	for (l = 0; l < MERKLE_LEVELS; l++)
		t->fd[l] = -1;
	merkle_edge_init(&t->edge);
	if ((size_t)snprintf(t->dir, sizeof(t->dir), "%s/" TREE_SUBDIR,
	    chain_dir) >= sizeof(t->dir) ||
	    (mkdir(t->dir, 0700) == -1 && errno != EEXIST)) {
		kms_status_set(st, KMS_ERR_AUDIT, "cannot create %s: %s",
		    t->dir, strerror(errno));
		audit_tree_close(t);
		return KMS_ERR_AUDIT;
	}
	/* Node files of an earlier run are rebuilt, never trusted. */
	for (l = 0; l < MERKLE_LEVELS; l++) {
		level_path(t->dir, l, path, sizeof(path));
		if (unlink(path) == -1 && errno != ENOENT) {
			kms_status_set(st, KMS_ERR_AUDIT, "cannot remove %s: "
			    "%s", path, strerror(errno));
			audit_tree_close(t);
			return KMS_ERR_AUDIT;
		}
	}
	*out = t;
	return 0;
}

void
audit_tree_close(struct audit_tree *t)
{
	unsigned int l;

	if (t == NULL)
		return;
	for (l = 0; l < MERKLE_LEVELS; l++) {
		if (t->fd[l] != -1)
			close(t->fd[l]);
		free(t->lv[l].buf);
	}
	free(t);
}

static int
keep_node(void *arg, unsigned int level, uint64_t index,
    const uint8_t hash[MERKLE_HASH_LEN])
{
	struct audit_tree *t = arg;
	struct level_buf *b = &t->lv[level];
	size_t ncap;
	uint8_t *n;

	if (b->len == 0)
		b->first = index;
	if (b->len + MERKLE_HASH_LEN > b->cap) {
		ncap = b->cap == 0 ? 64 * MERKLE_HASH_LEN : b->cap * 2;
		if ((n = realloc(b->buf, ncap)) == NULL)
			return KMS_ERR_NOMEM;
		b->buf = n;
		b->cap = ncap;
	}
	memcpy(b->buf + b->len, hash, MERKLE_HASH_LEN);
	b->len += MERKLE_HASH_LEN;
	return 0;
}

int
audit_tree_add(struct audit_tree *t, const char *line, size_t len)
{
	uint8_t leaf[MERKLE_HASH_LEN];

	merkle_leaf_hash(line, len, leaf);
	return merkle_edge_append(&t->edge, leaf, keep_node, t);
}

int
audit_tree_add_lines(struct audit_tree *t, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len, *nl;
	int r;

	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			return KMS_ERR_INTERNAL;
		if ((r = audit_tree_add(t, p, (size_t)(nl - p))) != 0)
			return r;
		p = nl + 1;
	}
	return 0;
}

int
audit_tree_flush(struct audit_tree *t)
{
	struct level_buf *b;
	char path[4500];
	unsigned int l;

	for (l = 0; l < MERKLE_LEVELS; l++) {
		b = &t->lv[l];
		if (b->len == 0)
			continue;
		if (t->fd[l] == -1) {
			level_path(t->dir, l, path, sizeof(path));
			if ((t->fd[l] = open(path, O_RDWR | O_CREAT |
			    O_CLOEXEC, 0600)) == -1) {
				log_error("audit: cannot open %s: %s", path,
				    strerror(errno));
				return KMS_ERR_AUDIT;
			}
		}
		/* A regular file takes the whole write or fails (ENOSPC). */
		if (pwrite(t->fd[l], b->buf, b->len,
		    (off_t)(b->first * MERKLE_HASH_LEN)) != (ssize_t)b->len) {
			log_error("audit: cannot write the tree level %u in "
			    "%s: %s", l, t->dir, strerror(errno));
			return KMS_ERR_AUDIT;
		}
		b->len = 0;
	}
	return 0;
}

size_t
audit_tree_pending(const struct audit_tree *t)
{
	size_t l, n = 0;

	for (l = 0; l < MERKLE_LEVELS; l++)
		n += t->lv[l].len;
	return n;
}

uint64_t
audit_tree_size(const struct audit_tree *t)
{
	return t->edge.size;
}

void
audit_tree_root(const struct audit_tree *t, uint8_t root[MERKLE_HASH_LEN])
{
	merkle_edge_root(&t->edge, root);
}

int
audit_tree_node(void *chain_dir, unsigned int level, uint64_t index,
    uint8_t out[MERKLE_HASH_LEN])
{
	char path[4500];
	ssize_t n;
	int fd;

	if (level >= MERKLE_LEVELS || index > UINT64_MAX / MERKLE_HASH_LEN)
		return KMS_ERR_INVALID_ARGUMENT;
	snprintf(path, sizeof(path), "%s/" TREE_SUBDIR "/%02u",
	    (const char *)chain_dir, level);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return KMS_ERR_IO;
	n = pread(fd, out, MERKLE_HASH_LEN, (off_t)(index * MERKLE_HASH_LEN));
	close(fd);
	return n == MERKLE_HASH_LEN ? 0 : KMS_ERR_IO;
}
