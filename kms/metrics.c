/*
 * metrics.c: the counters behind GET /metrics and their text (metrics.h).
 *
 * Every counter is a uint64_t updated with a relaxed atomic add; a
 * histogram is its buckets, a count and a sum in microseconds.  A scrape
 * reads them without a lock, so a scrape under load sees each counter at
 * some recent value, which is what Prometheus expects.
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "hsm_rv.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "version.h"

#define NCODES		17	/* gRPC status codes 0..16 */
#define NRV		32	/* distinct CKR values counted; then "other" */
#define MAX_SCRAPES	8	/* concurrent connections to the endpoint */

struct histogram {
	const double *le;		/* upper bounds, ascending */
	size_t n;
	uint64_t *bucket;		/* n counts (not cumulative) */
	uint64_t count, sum_us;
};

static const double LE_SECONDS[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5, 5, 10
};
#define NLE_SECONDS (sizeof(LE_SECONDS) / sizeof(LE_SECONDS[0]))
static const double LE_RECORDS[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
	1024 };
#define NLE_RECORDS (sizeof(LE_RECORDS) / sizeof(LE_RECORDS[0]))

static const char *const hsm_op_names[METRICS_HSM_NOPS] = {
	"sign", "generate_key_pair", "generate_key", "wrap", "unwrap",
	"random"
};

struct metrics {
	size_t nmethods;
	const char *(*method_name)(size_t);
	uint64_t (*requests)[NCODES];	/* [nmethods + 1][code] */
	uint64_t *dur_bucket;		/* [nmethods + 1][NLE_SECONDS] */
	uint64_t *dur_count, *dur_sum_us;
	uint64_t hsm_ops[METRICS_HSM_NOPS][2];	/* [op][ok] */
	unsigned long rv[NRV];		/* 0: free slot */
	uint64_t rv_count[NRV + 1];	/* the last: any other */
	uint64_t audit_records, audit_cp_seq;
	uint64_t sync_bucket[NLE_SECONDS], sync_count, sync_sum_us;
	uint64_t batch_bucket[NLE_RECORDS], batch_count, batch_sum;
	struct metrics_gauges g;
	struct MHD_Daemon *d;
	time_t start;
};

static void
add(uint64_t *p, uint64_t v)
{
	__atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static uint64_t
get(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* The bucket of v: the first bound >= v, n when above them all. */
static size_t
bucket_of(const double *le, size_t n, double v)
{
	size_t i;

	for (i = 0; i < n && v > le[i]; i++)
		;
	return i;
}

int
metrics_new(size_t nmethods, const char *(*method_name)(size_t),
    struct metrics **out)
{
	struct metrics *m;
	size_t rows = nmethods + 1;

	*out = NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->requests = calloc(rows, sizeof(*m->requests))) == NULL ||
	    (m->dur_bucket = calloc(rows * NLE_SECONDS,
	    sizeof(uint64_t))) == NULL ||
	    (m->dur_count = calloc(rows, sizeof(uint64_t))) == NULL ||
	    (m->dur_sum_us = calloc(rows, sizeof(uint64_t))) == NULL) {
		metrics_free(m);
		return KMS_ERR_NOMEM;
	}
	m->nmethods = nmethods;
	m->method_name = method_name;
	m->start = time(NULL);
	*out = m;
	return 0;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->d != NULL)
		MHD_stop_daemon(m->d);
	free(m->requests);
	free(m->dur_bucket);
	free(m->dur_count);
	free(m->dur_sum_us);
	free(m);
}

void
metrics_request(struct metrics *m, size_t method, int code, double seconds)
{
	size_t b;

	if (m == NULL)
		return;
	if (method > m->nmethods)
		method = m->nmethods;
	if (code < 0 || code >= NCODES)
		code = 2;	/* UNKNOWN */
	add(&m->requests[method][code], 1);
	b = bucket_of(LE_SECONDS, NLE_SECONDS, seconds);
	if (b < NLE_SECONDS)
		add(&m->dur_bucket[method * NLE_SECONDS + b], 1);
	add(&m->dur_count[method], 1);
	add(&m->dur_sum_us[method], (uint64_t)(seconds * 1e6));
}

void
metrics_hsm_op(struct metrics *m, enum metrics_hsm_op op, int ok)
{
	if (m != NULL && op < METRICS_HSM_NOPS)
		add(&m->hsm_ops[op][ok ? 1 : 0], 1);
}

void
metrics_hsm_error(struct metrics *m, unsigned long rv)
{
	unsigned long cur;
	size_t i;

	if (m == NULL)
		return;
	/* Find rv's slot, or claim a free one; full: "other". */
	for (i = 0; i < NRV; i++) {
		cur = __atomic_load_n(&m->rv[i], __ATOMIC_ACQUIRE);
		if (cur == 0) {
			unsigned long zero = 0;

			if (__atomic_compare_exchange_n(&m->rv[i], &zero, rv,
			    0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
				break;
			cur = zero;
		}
		if (cur == rv)
			break;
	}
	add(&m->rv_count[i], 1);
}

void
metrics_audit_batch(struct metrics *m, uint64_t records, double seconds)
{
	size_t b;

	if (m == NULL)
		return;
	add(&m->audit_records, records);
	if ((b = bucket_of(LE_SECONDS, NLE_SECONDS, seconds)) < NLE_SECONDS)
		add(&m->sync_bucket[b], 1);
	add(&m->sync_count, 1);
	add(&m->sync_sum_us, (uint64_t)(seconds * 1e6));
	if ((b = bucket_of(LE_RECORDS, NLE_RECORDS, (double)records)) <
	    NLE_RECORDS)
		add(&m->batch_bucket[b], 1);
	add(&m->batch_count, 1);
	add(&m->batch_sum, records);
}

void
metrics_audit_checkpoint(struct metrics *m, uint64_t seq)
{
	if (m != NULL)
		__atomic_store_n(&m->audit_cp_seq, seq, __ATOMIC_RELAXED);
}

/* The short name of a method: "Sign" of "/kms.v1.KeyManagementService/Sign". */
static const char *
rpc_label(const struct metrics *m, size_t method)
{
	const char *p, *s;

	if (method >= m->nmethods)
		return "Unimplemented";
	p = m->method_name(method);
	s = strrchr(p, '/');
	/* Health/Check and the like keep their service's last word. */
	if (s != NULL && strncmp(p, "/grpc.health.v1.Health/", 23) == 0)
		return "Health/Check";
	return s != NULL ? s + 1 : p;
}

/* A histogram's lines: cumulative buckets, +Inf, sum and count. */
static void
histogram(FILE *f, const char *name, const char *labels, const double *le,
    size_t n, const uint64_t *bucket, uint64_t count, double sum)
{
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		cum += get(&bucket[i]);
		fprintf(f, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name,
		    labels, *labels ? "," : "", le[i], cum);
	}
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels,
	    *labels ? "," : "", count);
	fprintf(f, "%s_sum%s%s%s %.6f\n", name, *labels ? "{" : "", labels,
	    *labels ? "}" : "", sum);
	fprintf(f, "%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "",
	    labels, *labels ? "}" : "", count);
}

/* The process metrics, from /proc/self. */
static void
process_metrics(FILE *f, const struct metrics *m)
{
	struct rusage ru;
	struct dirent *e;
	long pages = 0, page = sysconf(_SC_PAGESIZE);
	unsigned long nfd = 0;
	FILE *sf;
	DIR *d;

	if (getrusage(RUSAGE_SELF, &ru) == 0)
		fprintf(f, "# HELP process_cpu_seconds_total User and system CPU "
		    "time.\n# TYPE process_cpu_seconds_total counter\n"
		    "process_cpu_seconds_total %.3f\n",
		    (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	if ((sf = fopen("/proc/self/statm", "r")) != NULL) {
		if (fscanf(sf, "%*s %ld", &pages) == 1)
			fprintf(f, "# HELP process_resident_memory_bytes Resident "
			    "memory.\n# TYPE process_resident_memory_bytes "
			    "gauge\nprocess_resident_memory_bytes %ld\n",
			    pages * page);
		fclose(sf);
	}
	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				nfd++;
		closedir(d);
		fprintf(f, "# HELP process_open_fds Open file descriptors.\n"
		    "# TYPE process_open_fds gauge\nprocess_open_fds %lu\n",
		    nfd > 0 ? nfd - 1 : 0);	/* less the one reading */
	}
	fprintf(f, "# HELP process_start_time_seconds Start time since 1970.\n"
	    "# TYPE process_start_time_seconds gauge\n"
	    "process_start_time_seconds %lld\n", (long long)m->start);
}

/* The whole text; a malloc'd buffer or NULL. */
static char *
render(const struct metrics *m, size_t *len)
{
	char *buf = NULL, labels[128];
	size_t i, c;
	FILE *f;

	if ((f = open_memstream(&buf, len)) == NULL)
		return NULL;
	fprintf(f, "# HELP kms_build_info kmsd's version.\n"
	    "# TYPE kms_build_info gauge\nkms_build_info{version=\"%s\"} 1\n",
	    KMS_VERSION);
	fprintf(f, "# HELP kms_requests_total Calls by RPC and gRPC status.\n"
	    "# TYPE kms_requests_total counter\n");
	for (i = 0; i <= m->nmethods; i++)
		for (c = 0; c < NCODES; c++)
			if (get(&m->requests[i][c]) != 0)
				fprintf(f, "kms_requests_total{rpc=\"%s\","
				    "code=\"%s\"} %" PRIu64 "\n",
				    rpc_label(m, i), kms_grpc_code_name((int)c),
				    get(&m->requests[i][c]));
	fprintf(f, "# HELP kms_request_duration_seconds Time from a call's "
	    "arrival to its reply.\n"
	    "# TYPE kms_request_duration_seconds histogram\n");
	for (i = 0; i <= m->nmethods; i++) {
		if (get(&m->dur_count[i]) == 0)
			continue;
		snprintf(labels, sizeof(labels), "rpc=\"%s\"", rpc_label(m, i));
		histogram(f, "kms_request_duration_seconds", labels,
		    LE_SECONDS, NLE_SECONDS, &m->dur_bucket[i * NLE_SECONDS],
		    get(&m->dur_count[i]), get(&m->dur_sum_us[i]) / 1e6);
	}
	fprintf(f, "# HELP kms_hsm_operations_total HSM operations by "
	    "result.\n# TYPE kms_hsm_operations_total counter\n");
	for (i = 0; i < METRICS_HSM_NOPS; i++)
		for (c = 0; c < 2; c++)
			fprintf(f, "kms_hsm_operations_total{op=\"%s\","
			    "result=\"%s\"} %" PRIu64 "\n", hsm_op_names[i],
			    c ? "ok" : "error", get(&m->hsm_ops[i][c]));
	fprintf(f, "# HELP kms_hsm_errors_total PKCS#11 calls that failed, "
	    "by return value.\n# TYPE kms_hsm_errors_total counter\n");
	for (i = 0; i <= NRV; i++) {
		unsigned long rv = i < NRV ?
		    __atomic_load_n(&m->rv[i], __ATOMIC_ACQUIRE) : 0;

		if (i < NRV && rv == 0)
			continue;
		if (i == NRV && get(&m->rv_count[i]) == 0)
			continue;
		fprintf(f, "kms_hsm_errors_total{rv=\"%s\"} %" PRIu64 "\n",
		    i < NRV ? hsm_rv_name(rv) : "other", get(&m->rv_count[i]));
	}
	fprintf(f, "# HELP kms_audit_records_total Audit records made "
	    "durable.\n# TYPE kms_audit_records_total counter\n"
	    "kms_audit_records_total %" PRIu64 "\n", get(&m->audit_records));
	fprintf(f, "# HELP kms_audit_sync_seconds Write and fdatasync of a "
	    "batch of records.\n# TYPE kms_audit_sync_seconds histogram\n");
	histogram(f, "kms_audit_sync_seconds", "", LE_SECONDS, NLE_SECONDS,
	    m->sync_bucket, get(&m->sync_count), get(&m->sync_sum_us) / 1e6);
	fprintf(f, "# HELP kms_audit_batch_records Records per durable "
	    "batch.\n# TYPE kms_audit_batch_records histogram\n");
	histogram(f, "kms_audit_batch_records", "", LE_RECORDS, NLE_RECORDS,
	    m->batch_bucket, get(&m->batch_count), (double)get(&m->batch_sum));
	fprintf(f, "# HELP kms_audit_last_checkpoint_seq Sequence number of "
	    "the last signed checkpoint.\n"
	    "# TYPE kms_audit_last_checkpoint_seq gauge\n"
	    "kms_audit_last_checkpoint_seq %" PRIu64 "\n",
	    get(&m->audit_cp_seq));
	if (m->g.keys != NULL)
		fprintf(f, "# HELP kms_keys Keys in the key store.\n"
		    "# TYPE kms_keys gauge\nkms_keys %zu\n", m->g.keys(m->g.arg));
	if (m->g.connections != NULL)
		fprintf(f, "# HELP kms_connections Open client connections.\n"
		    "# TYPE kms_connections gauge\nkms_connections %u\n",
		    m->g.connections(m->g.arg));
	process_metrics(f, m);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static enum MHD_Result
answer(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	const struct metrics *m = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned int status = MHD_HTTP_OK;
	char *text = NULL;
	size_t len = 0;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	else if (strcmp(url, "/metrics") != 0)
		status = MHD_HTTP_NOT_FOUND;
	else if ((text = render(m, &len)) == NULL)
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	if (status != MHD_HTTP_OK) {
		free(text);
		text = strdup(status == MHD_HTTP_NOT_FOUND ? "GET /metrics\n" :
		    "error\n");
		len = text != NULL ? strlen(text) : 0;
	}
	if ((resp = MHD_create_response_from_buffer(len, text != NULL ? text :
	    (char *)"", text != NULL ? MHD_RESPMEM_MUST_FREE :
	    MHD_RESPMEM_PERSISTENT)) == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", status == MHD_HTTP_OK ?
	    "text/plain; version=0.0.4; charset=utf-8" : "text/plain");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int
metrics_serve(struct metrics *m, const char *listen,
    const struct metrics_gauges *g, struct kms_status *st)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	const char *colon = strrchr(listen, ':');
	char host[256];
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_ERROR_LOG;
	size_t n;
	long port;
	char *end;

	if (g != NULL)
		m->g = *g;
	if (colon == NULL || (n = (size_t)(colon - listen)) == 0 ||
	    n >= sizeof(host))
		goto bad;
	memcpy(host, listen, n);
	host[n] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 0 || port > 65535)
		goto bad;
	memset(&ss, 0, sizeof(ss));
	if (host[0] == '[' && host[n - 1] == ']') {
		host[n - 1] = '\0';
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
			goto bad;
		flags |= MHD_USE_IPv6;
	} else {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
			goto bad;
	}
	if ((m->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, answer,
	    m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)MAX_SCRAPES,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
	    MHD_OPTION_END)) == NULL)
		return kms_status_set(st, KMS_ERR_IO, "metrics: cannot listen "
		    "on %s", listen);
	log_info("metrics: serving GET /metrics on %s", listen);
	return 0;
 bad:
	return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "metrics: listen "
	    "= \"%.64s\" is not IPV4:PORT or [IPV6]:PORT", listen);
}
