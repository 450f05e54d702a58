/*
 * h_service.c: the handlers that speak of the service itself rather than
 * of a key: ListAuditRecords, WatchAuditRecords, WhoAmI and the gRPC
 * health check.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "auditread.h"
#include "config.h"
#include "handlers.h"
#include "kmserr.h"
#include "names.h"
#include "policy.h"
#include "watch.h"

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

/*
 * The message of a record, its strings pointing into rec (NULL as ""):
 * copied for a page, packed at once for a stream.
 */
static void
record_view(const struct audit_record *rec, Kms__V1__AuditRecord *m)
{
	char **str[] = { &m->time, &m->identity, &m->rpc, &m->key,
	    &m->result, &m->reason, &m->peer, &m->fingerprint,
	    &m->request_sha256, &m->status, &m->chain, &m->json };
	const char *val[] = { rec->time, rec->identity, rec->rpc, rec->key,
	    rec->result, rec->reason, rec->peer, rec->fingerprint,
	    rec->request_sha256, rec->status, rec->chain, rec->line };
	size_t i;

	kms__v1__audit_record__init(m);
	m->seq = rec->seq;
	m->version = rec->version;
	for (i = 0; i < sizeof(str) / sizeof(str[0]); i++)
		*str[i] = (char *)(val[i] != NULL ? val[i] : "");
}

static int
audit_page_add(const struct audit_record *rec, void *arg)
{
	struct audit_page *p = arg;
	Kms__V1__AuditRecord *m, view;

	if (p->resp->n_records == p->cap)
		return KMS_ERR_INTERNAL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return KMS_ERR_NOMEM;
	kms__v1__audit_record__init(m);
	p->resp->records[p->resp->n_records++] = m;
	record_view(rec, &view);
	m->seq = view.seq;
	m->version = view.version;
	if ((m->time = strdup(view.time)) == NULL ||
	    (m->identity = strdup(view.identity)) == NULL ||
	    (m->rpc = strdup(view.rpc)) == NULL ||
	    (m->key = strdup(view.key)) == NULL ||
	    (m->result = strdup(view.result)) == NULL ||
	    (m->reason = strdup(view.reason)) == NULL ||
	    (m->peer = strdup(view.peer)) == NULL ||
	    (m->fingerprint = strdup(view.fingerprint)) == NULL ||
	    (m->request_sha256 = strdup(view.request_sha256)) == NULL ||
	    (m->status = strdup(view.status)) == NULL ||
	    (m->chain = strdup(view.chain)) == NULL ||
	    (m->json = strdup(view.json)) == NULL)
		return KMS_ERR_NOMEM;
	return 0;
}

/* One message of WatchAuditRecords (watch_pack_fn). */
static int
audit_record_pack(const struct audit_record *rec, uint8_t **body, size_t *len)
{
	Kms__V1__AuditRecord view;
	size_t n;

	record_view(rec, &view);
	n = kms__v1__audit_record__get_packed_size(&view);
	if ((*body = malloc(n == 0 ? 1 : n)) == NULL)
		return KMS_ERR_NOMEM;
	*len = kms__v1__audit_record__pack(&view, *body);
	return 0;
}

/* The request's filters, pointing into it. */
static void
filters_of(const Kms__V1__AuditFilters *in, struct audit_filter *f)
{
	memset(f, 0, sizeof(*f));
	if (in == NULL)
		return;
	f->identity = in->identity;
	f->key = in->key;
	f->rpc = in->rpc;
	f->result = in->result;
	f->time_from = in->time_from;
	f->time_to = in->time_to;
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
	if ((r = names_check_chain(chain, &c->st)) != 0)
		return r;
	limit = req->limit == 0 ? AUDIT_PAGE_DEFAULT : req->limit;
	if (limit > AUDIT_PAGE_MAX)
		limit = AUDIT_PAGE_MAX;
	if ((resp->records = calloc(limit, sizeof(*resp->records))) == NULL)
		return call_nomem(c);
	page.resp = resp;
	page.cap = limit;
	filters_of(req->filters, &f);
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

/*
 * Auditors (the table's grant): the stream of this instance's chain.  The
 * watcher starts once this call's own record is durable (the transport
 * starts it, see watch_start); until then it only holds its place among
 * the [audit] max_watchers.
 */
int
h_watch_audit_records(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__WatchAuditRecordsRequest *req = rq;
	struct audit_filter f;
	const char *mine = audit_chain_name(c->svc->audit);

	if (req->chain[0] != '\0' && strcmp(req->chain, mine) != 0)
		return kms_status_set(&c->st, KMS_ERR_NOT_FOUND, "only this "
		    "instance's chain %s is watched (ListAuditRecords reads "
		    "the others)", mine);
	if (c->svc->watch == NULL)
		return kms_status_set(&c->st, KMS_ERR_UNAVAILABLE,
		    "audit watching is not running");
	snprintf(c->detail, sizeof(c->detail), "{\"after_seq\":%" PRIu64 "}",
	    (uint64_t)req->after_seq);
	filters_of(req->filters, &f);
	return watch_open(c->svc->watch, req->after_seq, &f,
	    audit_record_pack, &c->stream, &c->st);
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
