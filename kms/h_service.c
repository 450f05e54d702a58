/*
 * h_service.c: the handlers that speak of the service itself rather than
 * of a key: ListAuditRecords, WhoAmI and the gRPC health check.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "auditread.h"
#include "config.h"
#include "handlers.h"
#include "kmserr.h"
#include "policy.h"

#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"

#define AUDIT_PAGE_DEFAULT 100
#define AUDIT_PAGE_MAX 1000
#define AUDIT_SCAN_MAX 100000	/* records looked at per call, matching or not */
#define ROLES_MAX 32

/* Collects the records of one ListAuditRecords page into the response. */
struct audit_page {
	Kms__V1__ListAuditRecordsResponse *resp;
	size_t cap;
};

static int
audit_page_add(const struct audit_record *rec, void *arg)
{
	struct audit_page *p = arg;
	Kms__V1__AuditRecord *m;

	if (p->resp->n_records == p->cap)
		return KMS_ERR_INTERNAL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return KMS_ERR_NOMEM;
	kms__v1__audit_record__init(m);
	p->resp->records[p->resp->n_records++] = m;
	m->seq = rec->seq;
	m->version = rec->version;
	if ((m->time = pb_strdup(rec->time)) == NULL ||
	    (m->identity = pb_strdup(rec->identity)) == NULL ||
	    (m->rpc = pb_strdup(rec->rpc)) == NULL ||
	    (m->key = pb_strdup(rec->key)) == NULL ||
	    (m->result = pb_strdup(rec->result)) == NULL ||
	    (m->reason = pb_strdup(rec->reason)) == NULL ||
	    (m->peer = pb_strdup(rec->peer)) == NULL ||
	    (m->fingerprint = pb_strdup(rec->fingerprint)) == NULL ||
	    (m->request_sha256 = pb_strdup(rec->request_sha256)) == NULL ||
	    (m->status = pb_strdup(rec->status)) == NULL ||
	    (m->chain = pb_strdup(rec->chain)) == NULL ||
	    (m->json = pb_strdup(rec->line)) == NULL)
		return KMS_ERR_NOMEM;
	return 0;
}

/* Chain names as kmsd makes them: [A-Za-z0-9._-], not starting with '.'. */
static int
check_chain(struct call *c, const char *chain)
{
	size_t i;

	for (i = 0; chain[i] != '\0'; i++) {
		char ch = chain[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		    ch == '-'))
			break;
	}
	if (chain[i] != '\0' || i > 200 || chain[0] == '.')
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "bad chain name: use the name of a directory under the "
		    "audit directory, e.g. 127.0.0.1_7443");
	return 0;
}

int
h_list_audit_records(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__ListAuditRecordsRequest *req = rq;
	Kms__V1__ListAuditRecordsResponse *resp = rs;
	struct audit *a = c->svc->audit;
	struct audit_filter f;
	struct audit_page page;
	const char *chain;
	char dir[CONFIG_PATH_MAX + 256];
	uint64_t next = 0;
	size_t limit;
	int r;

	chain = req->chain[0] != '\0' ? req->chain : audit_chain_name(a);
	if ((r = check_chain(c, chain)) != 0)
		return r;
	limit = req->limit == 0 ? AUDIT_PAGE_DEFAULT : req->limit;
	if (limit > AUDIT_PAGE_MAX)
		limit = AUDIT_PAGE_MAX;
	if ((resp->records = calloc(limit, sizeof(*resp->records))) == NULL)
		return call_nomem(c);
	page.resp = resp;
	page.cap = limit;
	memset(&f, 0, sizeof(f));
	if (req->filters != NULL) {
		f.identity = req->filters->identity;
		f.key = req->filters->key;
		f.rpc = req->filters->rpc;
		f.result = req->filters->result;
		f.time_from = req->filters->time_from;
		f.time_to = req->filters->time_to;
	}
	resp->last_seq = strcmp(chain, audit_chain_name(a)) == 0 ?
	    audit_last_seq(a) : 0;
	snprintf(dir, sizeof(dir), "%s/%s", c->svc->cfg->audit_dir, chain);
	if ((r = audit_list(dir, req->after_seq, limit, AUDIT_SCAN_MAX, &f,
	    audit_page_add, &page, &next, &c->st)) != 0)
		return c->st.err != 0 ? r : call_nomem(c);
	resp->next_after_seq = next;
	if ((resp->chain = pb_strdup(audit_chain_name(a))) == NULL ||
	    (audit_key_pem(a) != NULL &&
	    (resp->audit_key_pem = pb_strdup(audit_key_pem(a))) == NULL))
		return call_nomem(c);
	return 0;
}

/* The caller's own identity and roles (GATE_NOGRANT). */
int
h_whoami(struct call *c, const void *rq, void *rs)
{
	Kms__V1__WhoAmIResponse *resp = rs;
	const char *roles[ROLES_MAX];
	size_t i, n;
	int r = 0;

	if ((resp->identity = pb_strdup(c->who->identity)) == NULL ||
	    (resp->fingerprint = pb_strdup(c->who->fingerprint)) == NULL ||
	    (resp->roles = calloc(ROLES_MAX, sizeof(char *))) == NULL)
		return call_nomem(c);
	/* The role names point into the policy: copy them under its lock. */
	pthread_rwlock_rdlock(&c->svc->policy_lock);
	n = policy_roles(c->svc->policy, c->who->identity, roles, ROLES_MAX);
	for (i = 0; i < n && i < ROLES_MAX && r == 0; i++) {
		if ((resp->roles[i] = pb_strdup(roles[i])) == NULL)
			r = call_nomem(c);
		else
			resp->n_roles++;
	}
	pthread_rwlock_unlock(&c->svc->policy_lock);
	return r;
}

/* Anyone may ask (GATE_NOAUTH); only our own service is known. */
int
h_health_check(struct call *c, const void *rq, void *rs)
{
	const Grpc__Health__V1__HealthCheckRequest *req = rq;
	Grpc__Health__V1__HealthCheckResponse *resp = rs;

	if (req->service[0] != '\0' &&
	    strcmp(req->service, "kms.v1.KeyManagementService") != 0)
		return kms_status_set(&c->st, KMS_ERR_NOT_FOUND,
		    "unknown service \"%.128s\"", req->service);
	resp->status =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	return 0;
}
