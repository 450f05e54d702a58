/*
 * kmsload: a closed-loop load generator for kmsd on the gRPC C core API.
 *
 *   kmsload --addr HOST:PORT --ca CA --cert CERT --key KEY --key-name NAME
 *       [--rpc Sign] [--inflight N] [--threads T] [--seconds S]
 *       [--digest-len 32] [--data-len N]
 *   kmsload ... --rpc CreateKey --count N --key-name PREFIX
 *   kmsload ... --rpc Health [--since-ns T] [--seconds S]
 *
 * The second form creates the P-256 keys PREFIX-000000 .. PREFIX-(N-1)
 * (keys that exist already count as done), to fill a token.
 *
 * The third form waits for kmsd to answer grpc.health.v1.Health/Check with
 * SERVING, for at most S seconds, trying every 5 ms on a new channel (a
 * channel's reconnect back-off would hide the moment the port opens), and
 * prints up_s: the time from T (CLOCK_REALTIME nanoseconds, taken when
 * kmsd was started) to the first SERVING answer.
 *
 * T threads each keep N/T calls in flight on their own channel and
 * completion queue for S seconds, and the latency of every call is kept
 * (bounded: at most MAX_SAMPLES per thread) for percentiles.  Prints one
 * JSON object: ops, ops_per_s, errors, p50_ms, p99_ms, p999_ms, and
 * cpu_us_per_op, this process's own CPU time (user + system) per call.
 */
#include <sys/resource.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"

#define MAX_SAMPLES (1024 * 1024)
#define MAX_INFLIGHT 1024

struct opts {
	const char *addr, *ca, *cert, *key, *key_name, *rpc;
	int inflight, threads, seconds;
	size_t digest_len, data_len;
	unsigned long count;		/* CreateKey: keys to make */
};

static unsigned long next_index;	/* CreateKey: the next name */

struct slot {
	grpc_call *call;
	grpc_byte_buffer *resp;
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status;
	grpc_slice details;
	struct timespec start;
};

struct worker {
	const struct opts *o;
	grpc_channel_credentials *creds;
	grpc_slice method;
	uint8_t *req;
	size_t req_len;
	double *lat;			/* ms */
	size_t nlat;
	uint64_t ops, errors;
	int first_error;
	pthread_t th;
};

/* This process's CPU time so far (user + system), in microseconds. */
static double
cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	    ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *read_file(const char *path);

/* A whole file and its length (binary). */
static char *
read_file_len(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) ==
	    NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "kmsload: cannot read %s\n", path);
		exit(1);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static char *
read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0 || (buf = calloc(1, (size_t)n + 1)) ==
	    NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "kmsload: cannot read %s: %s\n", path,
		    strerror(errno));
		exit(1);
	}
	fclose(f);
	return buf;
}

/* Starts one call; returns 0 when there is nothing left to start. */
static int
start_call(struct worker *w, grpc_channel *ch, grpc_completion_queue *cq,
    struct slot *s, gpr_timespec deadline)
{
	Kms__V1__CreateKeyRequest creq = KMS__V1__CREATE_KEY_REQUEST__INIT;
	grpc_byte_buffer *bb;
	grpc_slice sl;
	grpc_op ops[6];
	uint8_t buf[256];
	char name[160];
	unsigned long i;

	if (w->o->count > 0) {
		i = __atomic_fetch_add(&next_index, 1, __ATOMIC_RELAXED);
		if (i >= w->o->count)
			return 0;
		snprintf(name, sizeof(name), "%s-%06lu", w->o->key_name, i);
		creq.name = name;
		creq.algorithm = KMS__V1__ALGORITHM__EC_P256_SHA256;
		sl = grpc_slice_from_copied_buffer((const char *)buf,
		    protobuf_c_message_pack(&creq.base, buf));
	} else
		sl = grpc_slice_from_copied_buffer((const char *)w->req,
		    w->req_len);
	bb = grpc_raw_byte_buffer_create(&sl, 1);

	grpc_slice_unref(sl);
	memset(ops, 0, sizeof(ops));
	s->resp = NULL;
	grpc_metadata_array_init(&s->init_md);
	grpc_metadata_array_init(&s->trail_md);
	clock_gettime(CLOCK_MONOTONIC, &s->start);
	s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS,
	    cq, w->method, NULL, deadline, NULL);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &s->resp;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &s->trail_md;
	ops[5].data.recv_status_on_client.status = &s->status;
	ops[5].data.recv_status_on_client.status_details = &s->details;
	if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
		fprintf(stderr, "kmsload: grpc_call_start_batch failed\n");
		exit(1);
	}
	grpc_byte_buffer_destroy(bb);
	return 1;
}

static void
finish_call(struct worker *w, struct slot *s)
{
	struct timespec end;
	char *msg;

	clock_gettime(CLOCK_MONOTONIC, &end);
	/* Filling a token: a key that exists already is done too. */
	if (w->o->count > 0 && s->status == GRPC_STATUS_ALREADY_EXISTS)
		s->status = GRPC_STATUS_OK;
	if (s->status == GRPC_STATUS_OK && (s->resp != NULL ||
	    w->o->count > 0)) {
		w->ops++;
		if (w->nlat < MAX_SAMPLES)
			w->lat[w->nlat++] = (end.tv_sec - s->start.tv_sec) *
			    1e3 + (end.tv_nsec - s->start.tv_nsec) / 1e6;
	} else {
		w->errors++;
		if (!w->first_error) {
			w->first_error = 1;
			msg = grpc_slice_to_c_string(s->details);
			fprintf(stderr, "kmsload: call failed: status %d: %s\n",
			    (int)s->status, msg);
			gpr_free(msg);
		}
	}
	if (s->resp != NULL)
		grpc_byte_buffer_destroy(s->resp);
	grpc_slice_unref(s->details);
	grpc_metadata_array_destroy(&s->init_md);
	grpc_metadata_array_destroy(&s->trail_md);
	grpc_call_unref(s->call);
	s->call = NULL;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	const struct opts *o = w->o;
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	grpc_channel_args args;
	grpc_arg a[1];
	grpc_channel *ch;
	struct slot *slots;
	gpr_timespec deadline;
	grpc_event ev;
	double end;
	int i, n, active = 0;

	/* A channel of its own, so that threads do not share one connection. */
	a[0].type = GRPC_ARG_INTEGER;
	a[0].key = (char *)"grpc.use_local_subchannel_pool";
	a[0].value.integer = 1;
	args.num_args = 1;
	args.args = a;
	ch = grpc_channel_create(o->addr, w->creds, &args);
	n = o->inflight / o->threads;
	if (n < 1)
		n = 1;
	slots = calloc((size_t)n, sizeof(*slots));
	end = now_ms() + o->seconds * 1e3;
	deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
	    gpr_time_from_seconds(o->seconds + 30, GPR_TIMESPAN));
	for (i = 0; i < n; i++)
		if (start_call(w, ch, cq, &slots[i], deadline))
			active++;
	while (active > 0) {
		ev = grpc_completion_queue_next(cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			break;
		finish_call(w, ev.tag);
		active--;
		if ((o->count > 0 || now_ms() < end) &&
		    start_call(w, ch, cq, ev.tag, deadline))
			active++;
	}
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(
	    GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	free(slots);
	return NULL;
}

/* One Health/Check call on a new channel: 1 when the answer is SERVING. */
static int
health_once(struct worker *w)
{
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	grpc_channel *ch = grpc_channel_create(w->o->addr, w->creds, NULL);
	grpc_byte_buffer_reader rd;
	grpc_slice sl;
	struct slot s;
	int ok = 0;

	memset(&s, 0, sizeof(s));
	start_call(w, ch, cq, &s, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
	    gpr_time_from_millis(500, GPR_TIMESPAN)));
	(void)grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME),
	    NULL);
	if (s.status == GRPC_STATUS_OK && s.resp != NULL &&
	    grpc_byte_buffer_reader_init(&rd, s.resp)) {
		sl = grpc_byte_buffer_reader_readall(&rd);
		grpc_byte_buffer_reader_destroy(&rd);
		resp = grpc__health__v1__health_check_response__unpack(NULL,
		    GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
		ok = resp != NULL && resp->status ==
		    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
		grpc__health__v1__health_check_response__free_unpacked(resp,
		    NULL);
		grpc_slice_unref(sl);
	}
	if (s.resp != NULL)
		grpc_byte_buffer_destroy(s.resp);
	grpc_slice_unref(s.details);
	grpc_metadata_array_destroy(&s.init_md);
	grpc_metadata_array_destroy(&s.trail_md);
	grpc_call_unref(s.call);
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(
	    GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	return ok;
}

static int
health_wait(struct worker *w, long long since_ns)
{
	struct timespec now, pause = { 0, 5 * 1000 * 1000 };
	double end = now_ms() + w->o->seconds * 1e3;
	unsigned long attempts = 0;
	int ok = 0;

	while (!ok && now_ms() < end) {
		attempts++;
		if (!(ok = health_once(w)))
			nanosleep(&pause, NULL);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	printf("{\"rpc\":\"Health\",\"serving\":%s,\"attempts\":%lu,"
	    "\"up_s\":%.3f}\n", ok ? "true" : "false", attempts,
	    since_ns > 0 ? ((long long)now.tv_sec * 1000000000LL +
	    now.tv_nsec - since_ns) / 1e9 : 0.0);
	return ok ? 0 : 1;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
usage(void)
{
	fprintf(stderr, "usage: kmsload --addr HOST:PORT --ca CA --cert CERT "
	    "--key KEY --key-name NAME\n    [--rpc Sign|Verify|GetPublicKey] "
	    "[--inflight N] [--threads T] [--seconds S]\n    [--digest-len N] "
	    "[--data-len N] [--blob-file F (Unwrap)]\n"
	    "       kmsload ... --rpc CreateKey --count N --key-name PREFIX\n"
	    "       kmsload ... --rpc Health [--since-ns T] [--seconds S]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "ca", required_argument, NULL, 'C' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "key-name", required_argument, NULL, 'n' },
		{ "rpc", required_argument, NULL, 'r' },
		{ "inflight", required_argument, NULL, 'i' },
		{ "threads", required_argument, NULL, 't' },
		{ "seconds", required_argument, NULL, 's' },
		{ "digest-len", required_argument, NULL, 'd' },
		{ "data-len", required_argument, NULL, 'D' },
		{ "count", required_argument, NULL, 'N' },
		{ "blob-file", required_argument, NULL, 'B' },
		{ "since-ns", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 }
	};
	struct opts o = { NULL, NULL, NULL, NULL, NULL, "Sign", 16, 2, 5, 32,
	    0, 0 };
	grpc_ssl_pem_key_cert_pair pair;
	struct worker *w;
	Kms__V1__SignRequest sreq = KMS__V1__SIGN_REQUEST__INIT;
	Kms__V1__GetPublicKeyRequest preq = KMS__V1__GET_PUBLIC_KEY_REQUEST__INIT;
	Kms__V1__WrapRequest wreq = KMS__V1__WRAP_REQUEST__INIT;
	Kms__V1__UnwrapRequest ureq = KMS__V1__UNWRAP_REQUEST__INIT;
	Kms__V1__GenerateDataKeyRequest dreq =
	    KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckRequest hreq =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	long long since_ns = 0;
	const char *blob_file = NULL;
	char *blob = NULL;
	const ProtobufCMessage *msg;
	uint8_t *buf, *payload;
	char *ca, *cert, *key, path[256];
	double *all, t0, elapsed, cpu0;
	size_t nall = 0, plen;
	uint64_t ops = 0, errors = 0;
	int ch, i;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'a': o.addr = optarg; break;
		case 'C': o.ca = optarg; break;
		case 'c': o.cert = optarg; break;
		case 'k': o.key = optarg; break;
		case 'n': o.key_name = optarg; break;
		case 'r': o.rpc = optarg; break;
		case 'i': o.inflight = atoi(optarg); break;
		case 't': o.threads = atoi(optarg); break;
		case 's': o.seconds = atoi(optarg); break;
		case 'd': o.digest_len = (size_t)atol(optarg); break;
		case 'D': o.data_len = (size_t)atol(optarg); break;
		case 'N': o.count = strtoul(optarg, NULL, 10); break;
		case 'B': blob_file = optarg; break;
		case 'T': since_ns = atoll(optarg); break;
		default: usage();
		}
	}
	/* Health names no key. */
	if (strcmp(o.rpc, "Health") == 0 && o.key_name == NULL)
		o.key_name = "";
	if (o.addr == NULL || o.ca == NULL || o.cert == NULL ||
	    o.key == NULL || o.key_name == NULL || o.inflight < 1 ||
	    o.inflight > MAX_INFLIGHT || o.threads < 1 || o.threads > 64 ||
	    o.seconds < 1 || o.seconds > 3600)
		usage();
	if (o.threads > o.inflight)
		o.threads = o.inflight;

	plen = o.data_len > 0 ? o.data_len : o.digest_len;
	payload = calloc(1, plen + 1);
	for (i = 0; i < (int)plen; i++)
		payload[i] = (uint8_t)(i * 7 + 1);
	if (strcmp(o.rpc, "Sign") == 0) {
		sreq.name = (char *)o.key_name;
		if (o.data_len > 0) {
			sreq.data.data = payload;
			sreq.data.len = plen;
		} else {
			sreq.digest.data = payload;
			sreq.digest.len = plen;
		}
		msg = &sreq.base;
	} else if (strcmp(o.rpc, "Wrap") == 0) {
		wreq.name = (char *)o.key_name;
		wreq.plaintext.data = payload;
		wreq.plaintext.len = plen;
		msg = &wreq.base;
	} else if (strcmp(o.rpc, "GenerateDataKey") == 0) {
		dreq.name = (char *)o.key_name;
		dreq.length = (uint32_t)plen;
		msg = &dreq.base;
	} else if (strcmp(o.rpc, "Unwrap") == 0 && blob_file != NULL) {
		ureq.name = (char *)o.key_name;
		blob = read_file_len(blob_file, &ureq.wrapped.len);
		ureq.wrapped.data = (uint8_t *)blob;
		msg = &ureq.base;
	} else if (strcmp(o.rpc, "CreateKey") == 0 && o.count > 0) {
		/* Requests are made per call (start_call). */
		preq.name = (char *)o.key_name;
		msg = &preq.base;
		o.seconds = 3600;
	} else if (strcmp(o.rpc, "Health") == 0) {
		msg = &hreq.base;
	} else if (strcmp(o.rpc, "GetPublicKey") == 0) {
		preq.name = (char *)o.key_name;
		msg = &preq.base;
	} else
		usage();

	grpc_init();
	ca = read_file(o.ca);
	cert = read_file(o.cert);
	key = read_file(o.key);
	pair.private_key = key;
	pair.cert_chain = cert;
	w = calloc((size_t)o.threads, sizeof(*w));
	buf = malloc(protobuf_c_message_get_packed_size(msg) + 1);
	if (strcmp(o.rpc, "Health") == 0)
		snprintf(path, sizeof(path), "/grpc.health.v1.Health/Check");
	else
		snprintf(path, sizeof(path), "/kms.v1.KeyManagementService/%s",
		    o.rpc);
	for (i = 0; i < o.threads; i++) {
		w[i].o = &o;
		w[i].creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
		w[i].method = grpc_slice_from_static_string(path);
		w[i].req = buf;
		w[i].req_len = protobuf_c_message_pack(msg, buf);
		if ((w[i].lat = malloc(MAX_SAMPLES * sizeof(double))) == NULL) {
			fprintf(stderr, "kmsload: out of memory\n");
			return 1;
		}
	}
	if (strcmp(o.rpc, "Health") == 0) {
		/* The credentials and the request of the first worker. */
		i = health_wait(&w[0], since_ns);
		grpc_shutdown();
		return i;
	}
	cpu0 = cpu_us();
	t0 = now_ms();
	for (i = 0; i < o.threads; i++)
		pthread_create(&w[i].th, NULL, worker_main, &w[i]);
	for (i = 0; i < o.threads; i++)
		pthread_join(w[i].th, NULL);
	elapsed = (now_ms() - t0) / 1e3;
	for (i = 0; i < o.threads; i++) {
		ops += w[i].ops;
		errors += w[i].errors;
		nall += w[i].nlat;
	}
	all = malloc((nall + 1) * sizeof(double));
	nall = 0;
	for (i = 0; i < o.threads; i++) {
		memcpy(all + nall, w[i].lat, w[i].nlat * sizeof(double));
		nall += w[i].nlat;
		free(w[i].lat);
		grpc_channel_credentials_release(w[i].creds);
	}
	qsort(all, nall, sizeof(double), cmp_double);
#define PCT(p) (nall == 0 ? 0.0 : all[(size_t)((p) * (nall - 1))])
	printf("{\"rpc\":\"%s\",\"inflight\":%d,\"threads\":%d,"
	    "\"seconds\":%.3f,\"ops\":%llu,\"errors\":%llu,"
	    "\"ops_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
	    "\"p999_ms\":%.3f,\"cpu_us_per_op\":%.1f}\n", o.rpc, o.inflight,
	    o.threads, elapsed, (unsigned long long)ops,
	    (unsigned long long)errors, ops / elapsed, PCT(0.50), PCT(0.99),
	    PCT(0.999), ops == 0 ? 0.0 : (cpu_us() - cpu0) / (double)ops);
	free(all);
	free(w);
	free(buf);
	free(payload);
	free(blob);
	free(ca);
	free(cert);
	free(key);
	grpc_shutdown();
	return errors > 0 && ops == 0 ? 1 : 0;
}
