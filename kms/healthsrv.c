/*
 * healthsrv.c: the plaintext health port ([server] health_listen).
 *
 * A gRPC server of its own, without TLS, that serves grpc.health.v1.Health
 * Check and Watch from the state the main thread's probe sets (health.h)
 * and answers everything else UNIMPLEMENTED.  It never reaches the gate,
 * the HSM or the audit log: a load balancer without a client certificate
 * learns whether kmsd can serve, nothing more.  One thread owns every
 * call; a Watch is sent the status again whenever it changes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"

#include "healthsrv.h"
#include "kmserr.h"
#include "log.h"

#define SERVICE_NAME	"kms.v1.KeyManagementService"
#define CHECK_PATH	"/grpc.health.v1.Health/Check"
#define WATCH_PATH	"/grpc.health.v1.Health/Watch"
#define MAX_WATCHES	64	/* more are answered RESOURCE_EXHAUSTED */

enum { T_NEW, T_RECV, T_SEND, T_CLOSE, T_DONE, T_SHUTDOWN };
enum { K_OTHER, K_CHECK, K_WATCH };

struct hcall;

struct htag {
	struct hcall *c;
	int what;
};

struct hcall {
	struct healthsrv *hs;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_byte_buffer *req, *resp;
	grpc_slice status_details;
	int cancelled;
	int kind;
	int known;			/* the service asked for is kmsd's */
	int sent;			/* status last sent to a Watch; -1 none */
	int busy;			/* a send in flight */
	int closed;			/* the client is gone */
	struct htag t[5];
	struct hcall *next;		/* the Watches */
};

struct healthsrv {
	grpc_server *server;
	grpc_completion_queue *cq;
	pthread_t thread;
	int running;
	int serving;			/* atomic: the probe's verdict */
	int stop;			/* atomic */
	struct hcall *watches;
	size_t nwatches, live;		/* thread only */
	struct htag shutdown_tag;
};

static struct hcall *
hcall_new(struct healthsrv *hs)
{
	struct hcall *c = calloc(1, sizeof(*c));
	int i;

	if (c == NULL)
		return NULL;
	c->hs = hs;
	c->sent = -1;
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	for (i = 0; i < 5; i++) {
		c->t[i].c = c;
		c->t[i].what = i;
	}
	hs->live++;
	return c;
}

static void
hcall_free(struct hcall *c)
{
	struct hcall **p;

	if (c == NULL)
		return;
	for (p = &c->hs->watches; *p != NULL; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			c->hs->nwatches--;
			break;
		}
	if (c->call != NULL)
		grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	if (c->req != NULL)
		grpc_byte_buffer_destroy(c->req);
	if (c->resp != NULL)
		grpc_byte_buffer_destroy(c->resp);
	grpc_slice_unref(c->status_details);
	c->hs->live--;
	free(c);
}

/* Waits for the next call; 0 or -1 (out of memory or shut down). */
static int
post_request(struct healthsrv *hs)
{
	struct hcall *c;

	if (__atomic_load_n(&hs->stop, __ATOMIC_ACQUIRE) ||
	    (c = hcall_new(hs)) == NULL)
		return -1;
	if (grpc_server_request_call(hs->server, &c->call, &c->details,
	    &c->md, hs->cq, hs->cq, &c->t[T_NEW]) != GRPC_CALL_OK) {
		hcall_free(c);
		return -1;
	}
	return 0;
}

static int
status_now(const struct hcall *c)
{
	if (!c->known)
		return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
	return __atomic_load_n(&c->hs->serving, __ATOMIC_ACQUIRE) ?
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING :
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* A packed HealthCheckResponse with status, or NULL. */
static grpc_byte_buffer *
response(int status)
{
	Grpc__Health__V1__HealthCheckResponse r =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	uint8_t buf[16];
	grpc_slice s;
	grpc_byte_buffer *bb;
	size_t n;

	r.status = status;
	if ((n = grpc__health__v1__health_check_response__get_packed_size(&r)) >
	    sizeof(buf))
		return NULL;
	grpc__health__v1__health_check_response__pack(&r, buf);
	s = grpc_slice_from_copied_buffer((const char *)buf, n);
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* Ends a call with code and message: the reply (if any) goes with it. */
static void
finish(struct hcall *c, grpc_byte_buffer *msg, grpc_status_code code,
    const char *why)
{
	grpc_op ops[4];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (c->kind != K_WATCH || c->sent < 0)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (msg != NULL) {
		c->resp = msg;
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = msg;
	}
	c->status_details = grpc_slice_from_copied_string(why);
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	ops[n++].data.send_status_from_server.status_details =
	    &c->status_details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
	if (grpc_call_start_batch(c->call, ops, n, &c->t[T_DONE], NULL) !=
	    GRPC_CALL_OK)
		hcall_free(c);
}

/* Sends a Watch the status now (its first message or a change). */
static void
watch_send(struct hcall *c)
{
	grpc_op ops[2];
	size_t n = 0;
	int st = status_now(c);

	if (c->resp != NULL) {
		grpc_byte_buffer_destroy(c->resp);
		c->resp = NULL;
	}
	if ((c->resp = response(st)) == NULL)
		return;
	memset(ops, 0, sizeof(ops));
	if (c->sent < 0)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = c->resp;
	if (grpc_call_start_batch(c->call, ops, n, &c->t[T_SEND], NULL) ==
	    GRPC_CALL_OK) {
		c->busy = 1;
		c->sent = st;
	}
}

static int
slice_is(grpc_slice s, const char *str)
{
	size_t n = strlen(str);

	return GRPC_SLICE_LENGTH(s) == n &&
	    memcmp(GRPC_SLICE_START_PTR(s), str, n) == 0;
}

/* A new call: its kind; Check and Watch first read the request. */
static void
on_new(struct hcall *c)
{
	grpc_op op;

	if (slice_is(c->details.method, CHECK_PATH))
		c->kind = K_CHECK;
	else if (slice_is(c->details.method, WATCH_PATH))
		c->kind = K_WATCH;
	if (c->kind == K_OTHER) {
		finish(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "this port serves "
		    "grpc.health.v1.Health only");
		return;
	}
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->req;
	if (grpc_call_start_batch(c->call, &op, 1, &c->t[T_RECV], NULL) !=
	    GRPC_CALL_OK)
		finish(c, NULL, GRPC_STATUS_INTERNAL, "cannot read");
}

static void
on_recv(struct hcall *c)
{
	Grpc__Health__V1__HealthCheckRequest *req = NULL;
	grpc_byte_buffer_reader rd;
	grpc_slice s;
	grpc_op op;

	if (c->req != NULL && grpc_byte_buffer_reader_init(&rd, c->req)) {
		s = grpc_byte_buffer_reader_readall(&rd);
		grpc_byte_buffer_reader_destroy(&rd);
		req = grpc__health__v1__health_check_request__unpack(NULL,
		    GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
		grpc_slice_unref(s);
	}
	if (req == NULL) {
		finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
		    "not a HealthCheckRequest");
		return;
	}
	c->known = req->service[0] == '\0' ||
	    strcmp(req->service, SERVICE_NAME) == 0;
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	if (c->kind == K_CHECK) {
		if (!c->known)
			finish(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service");
		else
			finish(c, response(status_now(c)), GRPC_STATUS_OK, "");
		return;
	}
	if (c->hs->nwatches >= MAX_WATCHES) {
		finish(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
		    "too many watches");
		return;
	}
	/* A Watch: learn when the client leaves, send the status now. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->cancelled;
	if (grpc_call_start_batch(c->call, &op, 1, &c->t[T_CLOSE], NULL) !=
	    GRPC_CALL_OK) {
		hcall_free(c);
		return;
	}
	c->next = c->hs->watches;
	c->hs->watches = c;
	c->hs->nwatches++;
	watch_send(c);
}

static void *
health_main(void *arg)
{
	struct healthsrv *hs = arg;
	struct hcall *c, *next;
	struct htag *t;
	grpc_event ev;
	int shut = 0, posted;

	pthread_setname_np(pthread_self(), "kms-health");
	posted = post_request(hs) == 0;
	for (;;) {
		ev = grpc_completion_queue_next(hs->cq,
		    gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
		    gpr_time_from_millis(250, GPR_TIMESPAN)), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE) {
			t = ev.tag;
			c = t->c;
			switch (t->what) {
			case T_NEW:
				posted = 0;
				if (!ev.success) {
					hcall_free(c);
					break;
				}
				posted = post_request(hs) == 0;
				on_new(c);
				break;
			case T_RECV:
				if (ev.success)
					on_recv(c);
				else
					hcall_free(c);
				break;
			case T_SEND:
				c->busy = 0;
				if (c->closed)
					hcall_free(c);
				break;
			case T_CLOSE:
				c->closed = 1;
				if (!c->busy)
					hcall_free(c);
				break;
			case T_DONE:
				hcall_free(c);
				break;
			case T_SHUTDOWN:
				shut = 1;
				break;
			}
		}
		/* Watches hear of a change of status. */
		for (c = hs->watches; c != NULL; c = next) {
			next = c->next;
			if (!c->busy && !c->closed && c->sent != status_now(c))
				watch_send(c);
		}
		if (__atomic_load_n(&hs->stop, __ATOMIC_ACQUIRE) && shut &&
		    hs->live == 0)
			grpc_completion_queue_shutdown(hs->cq);
		else if (!posted && !__atomic_load_n(&hs->stop,
		    __ATOMIC_ACQUIRE))
			posted = post_request(hs) == 0;
	}
	return NULL;
}

int
healthsrv_start(const char *listen, struct healthsrv **out,
    struct kms_status *st)
{
	grpc_server_credentials *creds;
	struct healthsrv *hs;
	int port;

	*out = NULL;
	if ((hs = calloc(1, sizeof(*hs))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	hs->serving = 1;
	hs->shutdown_tag.what = T_SHUTDOWN;
	grpc_init();
	hs->cq = grpc_completion_queue_create_for_next(NULL);
	hs->server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(hs->server, hs->cq, NULL);
	creds = grpc_insecure_server_credentials_create();
	port = grpc_server_add_http2_port(hs->server, listen, creds);
	grpc_server_credentials_release(creds);
	if (port <= 0) {
		grpc_server_destroy(hs->server);
		grpc_completion_queue_shutdown(hs->cq);
		while (grpc_completion_queue_next(hs->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		    GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(hs->cq);
		free(hs);
		grpc_shutdown();
		return kms_status_set(st, KMS_ERR_IO, "health: cannot listen "
		    "on %s", listen);
	}
	grpc_server_start(hs->server);
	if (pthread_create(&hs->thread, NULL, health_main, hs) != 0) {
		hs->running = 0;
		healthsrv_stop(hs);
		return kms_status_set(st, KMS_ERR_NOMEM, "health: no thread");
	}
	hs->running = 1;
	log_info("health: grpc.health.v1.Health in plaintext on %s", listen);
	*out = hs;
	return 0;
}

void
healthsrv_set(struct healthsrv *hs, int serving)
{
	if (hs != NULL)
		__atomic_store_n(&hs->serving, serving ? 1 : 0,
		    __ATOMIC_RELEASE);
}

void
healthsrv_stop(struct healthsrv *hs)
{
	if (hs == NULL)
		return;
	__atomic_store_n(&hs->stop, 1, __ATOMIC_RELEASE);
	grpc_server_shutdown_and_notify(hs->server, hs->cq, &hs->shutdown_tag);
	grpc_server_cancel_all_calls(hs->server);
	if (hs->running)
		pthread_join(hs->thread, NULL);
	else {
		grpc_completion_queue_shutdown(hs->cq);
		while (grpc_completion_queue_next(hs->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		    GRPC_QUEUE_SHUTDOWN)
			;
	}
	grpc_server_destroy(hs->server);
	grpc_completion_queue_destroy(hs->cq);
	free(hs);
	grpc_shutdown();
}
