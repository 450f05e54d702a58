/*
 * auditproof.c: inclusion and consistency proofs over the audit log's Merkle
 * tree, with the signed checkpoints they are checked against.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "audit.h"
#include "auditread.h"
#include "audittree.h"
#include "merkle.h"
#include "note.h"
#include "pubkey.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "names.h"

#include "audit_int.h"

struct one_line {
	uint64_t seq;
	char *line;
};

static int
keep_line(const struct audit_record *rec, void *arg)
{
	struct one_line *ol = arg;

	if (rec->seq != ol->seq)
		return 0;
	if ((ol->line = strdup(rec->line)) == NULL)
		return KMS_ERR_NOMEM;
	return 1;
}

/* The latest checkpoint, or one made now (at most once a second). */
static int
proof_size(struct audit *a, uint64_t want, uint64_t *size,
    struct kms_status *st)
{
	struct timespec now;
	int r;

	if (want == AUDIT_CHECKPOINT_NOW && a->signer.sign != NULL) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* Refused while less than a second has passed. */
		if (a->forced.tv_sec != 0 &&
		    (now.tv_sec - a->forced.tv_sec < 1 ||
		    (now.tv_sec - a->forced.tv_sec == 1 &&
		    now.tv_nsec < a->forced.tv_nsec)))
			return kms_status_set(st, KMS_ERR_RESOURCE_EXHAUSTED,
			    "a checkpoint was made less than a second ago; "
			    "ask for tree_size 0");
		a->forced = now;
		if ((r = audit_checkpoint_now(a)) != 0)
			return kms_status_set(st, r, "the HSM could not sign a "
			    "checkpoint");
		want = 0;
	}
	if (a->ncps == 0)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "no "
		    "checkpoint yet");
	*size = want == 0 ? a->cps[a->ncps - 1].size : want;
	if (audit_cp_find(a, *size) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND, "no checkpoint of "
		    "tree size %" PRIu64 " in this chain", *size);
	return 0;
}

int
audit_get_proof(struct audit *a, uint64_t seq, uint64_t tree_size,
    struct audit_proof *p, struct kms_status *st)
{
	struct audit_filter f;
	struct one_line ol = { seq, NULL };
	uint64_t next;
	int r;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&a->lock);
	if (seq < a->base || seq >= a->next_seq) {
		r = kms_status_set(st, KMS_ERR_NOT_FOUND, "no record %" PRIu64
		    " in chain %s", seq, a->chain);
		goto out;
	}
	if ((r = proof_size(a, tree_size, &p->tree_size, st)) != 0)
		goto out;
	p->leaf_index = seq - a->base;
	if (p->leaf_index >= p->tree_size) {
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "record %"
		    PRIu64 " is not covered by a checkpoint yet: the next is "
		    "due within %u s or %u records (or ask with tree_size "
		    "UINT64_MAX)", seq, a->signer.seconds, a->signer.every);
		goto out;
	}
	if ((p->checkpoint = strdup(audit_cp_find(a, p->tree_size))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_unlock(&a->lock);
	if ((r = merkle_inclusion_proof(audit_tree_node, a->dir,
	    p->leaf_index, p->tree_size, p->inclusion, &p->n)) != 0) {
		kms_status_set(st, KMS_ERR_INTERNAL, "cannot read the Merkle "
		    "tree of %s", a->dir);
		goto fail;
	}
	memset(&f, 0, sizeof(f));
	r = audit_list(a->dir, seq - 1, 1, 1, &f, keep_line, &ol, &next, st);
	if (r < 0 || ol.line == NULL) {
		if (st->err == 0)
			kms_status_set(st, r < 0 ? r : KMS_ERR_INTERNAL,
			    "cannot read record %" PRIu64, seq);
		goto fail;
	}
	p->record = ol.line;
	return 0;
 out:
	pthread_mutex_unlock(&a->lock);
	if (r == 0)
		return 0;
 fail:
	free(ol.line);
	audit_proof_clear(p);
	return st->err != 0 ? st->err : KMS_ERR_INTERNAL;
}

void
audit_proof_clear(struct audit_proof *p)
{
	free(p->record);
	free(p->checkpoint);
	free(p->old_checkpoint);
	memset(p, 0, sizeof(*p));
}

int
audit_get_consistency(struct audit *a, uint64_t old_size, uint64_t new_size,
    struct audit_proof *p, struct kms_status *st)
{
	const char *o;
	int r;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&a->lock);
	if ((r = proof_size(a, new_size, &p->tree_size, st)) != 0)
		goto out;
	if (old_size > p->tree_size) {
		r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "old_size %"
		    PRIu64 " is above new_size %" PRIu64, old_size,
		    p->tree_size);
		goto out;
	}
	if ((o = audit_cp_find(a, old_size)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOT_FOUND, "no checkpoint of "
		    "tree size %" PRIu64 " in this chain", old_size);
		goto out;
	}
	if ((p->old_checkpoint = strdup(o)) == NULL ||
	    (p->checkpoint = strdup(audit_cp_find(a, p->tree_size))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
 out:
	pthread_mutex_unlock(&a->lock);
	if (r == 0 && (r = merkle_consistency_proof(audit_tree_node, a->dir,
	    old_size, p->tree_size, p->inclusion, &p->n)) != 0)
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot read the "
		    "Merkle tree of %s", a->dir);
	if (r != 0)
		audit_proof_clear(p);
	return r;
}
