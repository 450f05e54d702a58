/*
 * h_audit.c: the audit log's proofs (docs/audit.md): GetAuditProof and
 * GetAuditConsistency, RFC 9162 proofs against the chain's C2SP signed
 * checkpoints, for clients that check them on their own.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "handlers.h"
#include "kmserr.h"
#include "policy.h"

#include "kms/v1/kms.pb-c.h"

/* Proofs are served for this instance's chain, the one it can prove. */
static int
own_chain(struct call *c, const char *chain)
{
	const char *mine = audit_chain_name(c->svc->audit);

	if (chain[0] != '\0' && strcmp(chain, mine) != 0)
		return kms_status_set(&c->st, KMS_ERR_NOT_FOUND, "proofs are "
		    "served for this instance's chain %s only", mine);
	return 0;
}

static int
hashes_out(struct call *c, const struct audit_proof *p,
    ProtobufCBinaryData **out, size_t *n)
{
	size_t i;

	*n = 0;
	if (p->n == 0)
		return 0;
	if ((*out = calloc(p->n, sizeof(**out))) == NULL)
		return call_nomem(c);
	for (i = 0; i < p->n; i++) {
		if (((*out)[i].data = malloc(MERKLE_HASH_LEN)) == NULL)
			return call_nomem(c);
		memcpy((*out)[i].data, p->inclusion[i], MERKLE_HASH_LEN);
		(*out)[i].len = MERKLE_HASH_LEN;
		(*n)++;
	}
	return 0;
}

/* The identity a record names; 1 when it is id. */
static int
record_of(const char *line, const char *id)
{
	json_t *o, *v;
	int mine;

	if ((o = json_loads(line, 0, NULL)) == NULL)
		return 0;
	v = json_object_get(o, "identity");
	mine = json_is_string(v) && id != NULL &&
	    strcmp(json_string_value(v), id) == 0;
	json_decref(o);
	return mine;
}

/*
 * Auditors may fetch the proof of any record; any other identity the
 * proof of a record of its own (a receipt it holds), nothing else.
 */
int
h_get_audit_proof(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__GetAuditProofRequest *req = rq;
	Kms__V1__AuditProof *resp = rs;
	struct audit_proof *p = NULL;
	int auditor, r;

	if ((r = own_chain(c, req->chain)) != 0)
		return r;
	if (req->seq == 0)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT, "seq "
		    "is required (records count from 1)");
	auditor = call_authorize(c, KMS_OP_LIST_AUDIT_RECORDS, "") == 0;
	kms_status_clear(&c->st);
	if ((p = malloc(sizeof(*p))) == NULL)
		return call_nomem(c);
	if ((r = audit_get_proof(c->svc->audit, req->seq, req->tree_size, p,
	    &c->st)) != 0)
		goto out;
	if (!auditor && !record_of(p->record, c->who->identity)) {
		r = kms_status_set(&c->st, KMS_ERR_PERMISSION_DENIED,
		    "identity \"%.64s\" may fetch the proofs of its own records "
		    "only (auditors: any)", c->who->identity);
		goto out;
	}
	resp->leaf_index = p->leaf_index;
	resp->tree_size = p->tree_size;
	if ((resp->record = strdup(p->record)) == NULL ||
	    (resp->checkpoint = strdup(p->checkpoint)) == NULL) {
		r = call_nomem(c);
		goto out;
	}
	r = hashes_out(c, p, &resp->inclusion, &resp->n_inclusion);
 out:
	if (p != NULL)
		audit_proof_clear(p);
	free(p);
	return r;
}

/* Auditors only (the table's grant). */
int
h_get_audit_consistency(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__GetAuditConsistencyRequest *req = rq;
	Kms__V1__AuditConsistency *resp = rs;
	struct audit_proof *p = NULL;
	int r;

	if ((r = own_chain(c, req->chain)) != 0)
		return r;
	if ((p = malloc(sizeof(*p))) == NULL)
		return call_nomem(c);
	if ((r = audit_get_consistency(c->svc->audit, req->old_size,
	    req->new_size, p, &c->st)) != 0)
		goto out;
	if ((resp->old_checkpoint = strdup(p->old_checkpoint)) == NULL ||
	    (resp->new_checkpoint = strdup(p->checkpoint)) == NULL) {
		r = call_nomem(c);
		goto out;
	}
	r = hashes_out(c, p, &resp->proof, &resp->n_proof);
 out:
	if (p != NULL)
		audit_proof_clear(p);
	free(p);
	return r;
}
