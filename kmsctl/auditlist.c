/*
 * auditlist.c: `kmsctl audit list`: the audit records kmsd serves, with
 * filters, page by page (ListAuditRecords) or followed as they become
 * durable (--follow: one WatchAuditRecords stream, no polling).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auditread.h"
#include "kmsctl.h"

#include "kms/v1/kms.pb-c.h"

/* Where `audit list` is: one page is one reply, or several streamed. */
struct audit_page {
	int json;
	uint64_t shown, limit, after, last;
	size_t n;
};

static void
print_record(const struct audit_page *p, const Kms__V1__AuditRecord *a)
{
	if (p->json)
		printf("%s\n", a->json);
	else
		printf("%" PRIu64 " %s %s %s %s %s%s%s\n", (uint64_t)a->seq,
		    a->time, a->identity[0] ? a->identity : "-", a->rpc,
		    a->key[0] ? a->key : "-", a->result,
		    a->reason[0] ? " " : "", a->reason);
}

static int
audit_page_cb(ProtobufCMessage *m, void *arg)
{
	Kms__V1__ListAuditRecordsResponse *l =
	    (Kms__V1__ListAuditRecordsResponse *)m;
	struct audit_page *p = arg;
	size_t i;

	for (i = 0; i < l->n_records; i++) {
		if (p->limit != 0 && p->shown >= p->limit)
			break;
		print_record(p, l->records[i]);
		p->shown++;
	}
	fflush(stdout);
	p->n += l->n_records;
	if (l->next_after_seq > p->after)
		p->after = l->next_after_seq;
	/*
	 * Without --follow, read up to the end as it was at the first call:
	 * every call is recorded too, so the log never ends.
	 */
	if (p->last == 0)
		p->last = l->last_seq;
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* One record of a WatchAuditRecords stream; 1 (stop) at --limit. */
static int
audit_watch_cb(ProtobufCMessage *m, void *arg)
{
	Kms__V1__AuditRecord *a = (Kms__V1__AuditRecord *)m;
	struct audit_page *p = arg;

	print_record(p, a);
	fflush(stdout);
	p->shown++;
	if (a->seq > p->after)
		p->after = a->seq;
	protobuf_c_message_free_unpacked(m, NULL);
	return p->limit != 0 && p->shown >= p->limit ? 1 : 0;
}

/*
 * --follow: the records after --after, then each new one as it becomes
 * durable, on one call (recorded once).  A reader cut off for falling
 * behind resumes after the last record it printed, as long as it made
 * progress since the last time.
 */
static int
audit_follow(struct ctx *x, const char *chain, Kms__V1__AuditFilters *f,
    struct audit_page *p)
{
	Kms__V1__WatchAuditRecordsRequest req =
	    KMS__V1__WATCH_AUDIT_RECORDS_REQUEST__INIT;
	uint64_t before;
	int r;

	req.chain = (char *)(chain != NULL ? chain : "");
	req.filters = f;
	for (;;) {
		req.after_seq = before = p->after;
		if ((r = kmsctl_follow(x, "WatchAuditRecords", &req.base,
		    &kms__v1__audit_record__descriptor, audit_watch_cb,
		    p)) == 0)
			return 0;
		if (x->grpc_code != 8 /* RESOURCE_EXHAUSTED */ ||
		    p->after == before)
			return r;
		fprintf(stderr, "kmsctl: resuming after seq %" PRIu64 "\n",
		    p->after);
	}
}

/*
 * The rpc values of audit records besides the service's methods: the
 * records kmsd writes by itself and for calls it does not serve.
 */
static const char *const audit_rpcs_extra[] = {
	AUDIT_CHECKPOINT_RPC, "AuditRepair", "ScheduledRotation",
	"ScheduledDestroy", "Health/Check", "Unimplemented"
};
static const char *const audit_results[] = { "ok", "denied", "error" };

/*
 * The server matches filters exactly: a known name given in another case
 * is replaced by its spelling in the log, an unknown one is refused with
 * the list (instead of silently matching nothing).
 */
static int
canonical_filter(const char *what, const char **v)
{
	const ProtobufCServiceDescriptor *sd =
	    &kms__v1__key_management_service__descriptor;
	const char *const *list = audit_results;
	size_t i, n = sizeof(audit_results) / sizeof(audit_results[0]);

	if (*v == NULL || **v == '\0')
		return 0;
	if (strcmp(what, "rpc") == 0) {
		for (i = 0; i < sd->n_methods; i++)
			if (strcasecmp(*v, sd->methods[i].name) == 0) {
				*v = sd->methods[i].name;
				return 0;
			}
		list = audit_rpcs_extra;
		n = sizeof(audit_rpcs_extra) / sizeof(audit_rpcs_extra[0]);
	}
	for (i = 0; i < n; i++)
		if (strcasecmp(*v, list[i]) == 0) {
			*v = list[i];
			return 0;
		}
	fprintf(stderr, "kmsctl: unknown --%s \"%s\"; one of:", what, *v);
	if (strcmp(what, "rpc") == 0)
		for (i = 0; i < sd->n_methods; i++)
			fprintf(stderr, " %s", sd->methods[i].name);
	for (i = 0; i < n; i++)
		fprintf(stderr, " %s", list[i]);
	fprintf(stderr, "\n");
	return die_usage(NULL);
}

int
audit_list_cmd(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, 'F' },
		{ "chain", required_argument, NULL, 'c' },
		{ "identity", required_argument, NULL, 'i' },
		{ "key-name", required_argument, NULL, 'k' },
		{ "rpc", required_argument, NULL, 'r' },
		{ "result", required_argument, NULL, 'R' },
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "after", required_argument, NULL, 'a' },
		{ "limit", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__ListAuditRecordsRequest req =
	    KMS__V1__LIST_AUDIT_RECORDS_REQUEST__INIT;
	Kms__V1__AuditFilters f = KMS__V1__AUDIT_FILTERS__INIT;
	struct audit_page page = { 0 };
	const char *rpc = NULL, *result = NULL;
	uint64_t limit = 0, after = 0, prev;
	uint32_t u;
	int ch, r, follow = 0;
	char *end;

	/* argv[0] is "audit"; options follow "list". */
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'F': follow = 1; break;
		case 'c': req.chain = optarg; break;
		case 'i': f.identity = optarg; break;
		case 'k': f.key = optarg; break;
		case 'r': rpc = optarg; break;
		case 'R': result = optarg; break;
		case 's': f.time_from = optarg; break;
		case 'u': f.time_to = optarg; break;
		case 'a':
			errno = 0;
			after = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0')
				return die_usage("--after: a seq number");
			break;
		case 'l':
			if (parse_u32(optarg, &u) != 0 || u == 0)
				return die_usage("--limit: a positive number");
			limit = u;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc)
		return die_usage("audit list takes options only");
	if ((r = canonical_filter("rpc", &rpc)) != 0 ||
	    (r = canonical_filter("result", &result)) != 0)
		return r;
	if (rpc != NULL)
		f.rpc = (char *)rpc;
	if (result != NULL)
		f.result = (char *)result;
	req.filters = &f;
	page.json = x->json;
	page.limit = limit;
	page.after = after;
	if (follow)
		return audit_follow(x, req.chain, &f, &page);
	for (;;) {
		req.after_seq = prev = page.after;
		req.limit = 1000;
		if (limit != 0 && limit - page.shown < 1000)
			req.limit = (uint32_t)(limit - page.shown);
		page.n = 0;
		if ((r = kmsctl_call_stream(x, "ListAuditRecords", &req.base,
		    &kms__v1__list_audit_records_response__descriptor,
		    audit_page_cb, &page)) != 0)
			return r;
		if (limit != 0 && page.shown >= limit)
			return 0;
		if (page.after >= page.last || page.after == prev)
			return 0;
	}
}
