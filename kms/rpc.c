/*
 * rpc.c: the gRPC C-core server and its worker pool.
 *
 * The workers share one completion queue and each serves the call it
 * takes from it: it re-posts the request slot, then hands the request
 * bytes to the gate (gate.h), which runs the call on the worker's own HSM
 * session, and sends the reply (or leaves the reply to the audit writer,
 * which sends it once the record is durable).  Whichever worker takes the
 * completion of a reply frees the call.  No thread hands a call to
 * another: a call costs no wake-up between its arrival and its HSM
 * operation, and a worker busy with a slow operation (an RSA key
 * generation) holds no other call back, as the others keep taking events
 * from the queue.  The whole path of a call, and the order of the locks
 * it takes, are in docs/design.md.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "audit.h"
#include "config.h"
#include "gate.h"
#include "hsm.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "secret.h"
#include "tlsctx.h"
#include "tlsfront.h"
#include "watch.h"

#define SLOTS_PER_METHOD 16	/* requests posted per method at any time */
#define GENERIC_SLOTS 4

enum tag_kind {
	TAG_REGISTERED = 1,
	TAG_GENERIC,
	TAG_REPLY,
	TAG_STREAM_SEND,		/* a streamed message has left */
	TAG_STREAM_CLOSE,		/* a streaming call is over */
	TAG_SHUTDOWN
};

/* Every completion-queue tag starts with this, so its kind can be read. */
struct tag {
	enum tag_kind kind;
};

/* One posted request: the server fills it when a call arrives. */
struct slot {
	struct tag tag;
	size_t method;			/* the gate's method; generic: unused */
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_call_details details;	/* generic slots only */
};

/* One call being served, from dispatch to the completion of its reply. */
struct job {
	struct tag tag;			/* TAG_REPLY */
	struct rpc_server *srv;
	struct audit_waiter waiter;	/* the reply waits for its record */
	struct rpc_reply rep;
	int parts;			/* pending reply: parts finished, of 2 */
	int generic;
	size_t method;
	char *method_name;		/* generic: the path asked for */
	grpc_call *call;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_byte_buffer *reply;
	grpc_slice details;
	int have_details;
	int cancelled;
	struct timespec t0;		/* arrival, for the metrics */

	/*
	 * A streaming call (watch.h): the hub hands it one message at a
	 * time; the job lives until the hub releases it.
	 */
	struct watcher *watch;
	struct tag send_tag;		/* TAG_STREAM_SEND */
	struct tag close_tag;		/* TAG_STREAM_CLOSE */
	grpc_byte_buffer *send_bb;	/* the message in flight */
	int md_sent;			/* initial metadata went with the first */
};

#define JOB_OF(p, member) \
	((struct job *)((char *)(p) - offsetof(struct job, member)))

/* Per-worker state: its HSM session. */
struct worker {
	struct rpc_server *srv;
	pthread_t thread;
	struct hsm_session *hs;
};

struct rpc_server {
	struct service *svc;
	grpc_server *server;
	grpc_server_credentials *plain;	/* for the connections' plaintext */
	struct tlsfront *front;		/* accepts and terminates TLS */
	grpc_completion_queue *cq;
	size_t nmethods;
	void **handles;			/* registered method handles */
	struct slot *slots;
	size_t nslots;

	pthread_mutex_t lock;		/* guards everything below */
	pthread_cond_t cond;		/* state changed */
	int stopping;
	int shutdown_done;
	long inflight;			/* jobs not yet freed */

	struct worker *workers;
	unsigned int nworkers;
	unsigned int workers_started;
	struct tag shutdown_tag;
};

static struct job *
job_new(void)
{
	struct job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	j->tag.kind = TAG_REPLY;
	j->send_tag.kind = TAG_STREAM_SEND;
	j->close_tag.kind = TAG_STREAM_CLOSE;
	return j;
}

static void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	if (j->payload != NULL)
		grpc_byte_buffer_destroy(j->payload);
	if (j->reply != NULL)
		grpc_byte_buffer_destroy(j->reply);
	if (j->send_bb != NULL)
		grpc_byte_buffer_destroy(j->send_bb);
	if (j->have_details)
		grpc_slice_unref(j->details);
	grpc_metadata_array_destroy(&j->md);
	if (j->call != NULL)
		grpc_call_unref(j->call);
	gpr_free(j->method_name);
	free(j);
}

/* A job is over: free it and let rpc_server_stop know. */
static void
job_done(struct rpc_server *srv, struct job *j)
{
	job_free(j);
	pthread_mutex_lock(&srv->lock);
	srv->inflight--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

static int
post_slot(struct rpc_server *srv, struct slot *s)
{
	grpc_call_error e;

	s->call = NULL;
	s->payload = NULL;
	grpc_metadata_array_init(&s->md);
	if (s->tag.kind == TAG_GENERIC) {
		grpc_call_details_init(&s->details);
		e = grpc_server_request_call(srv->server, &s->call,
		    &s->details, &s->md, srv->cq, srv->cq, &s->tag);
	} else
		e = grpc_server_request_registered_call(srv->server,
		    srv->handles[s->method], &s->call, &s->deadline, &s->md,
		    &s->payload, srv->cq, srv->cq, &s->tag);
	if (e != GRPC_CALL_OK) {
		log_error("rpc: cannot post a request slot (%d)", (int)e);
		return -1;
	}
	return 0;
}

/*
 * Who is calling: the connection layer verified the certificate of the
 * connection the call came on, which the RPC layer names "fd:N".
 */
static void
peer_of(struct rpc_server *srv, grpc_call *call, struct tlsfront_peer *tp,
    struct rpc_peer *who)
{
	char *peer;

	memset(who, 0, sizeof(*who));
	peer = grpc_call_get_peer(call);
	if (tlsfront_peer(srv->front, peer, tp) == 0 && tp->id.name[0] != '\0')
		who->identity = tp->id.name;
	else
		who->refusal = tp->id.reason;
	who->fingerprint = tp->id.fingerprint[0] != '\0' ?
	    tp->id.fingerprint : NULL;
	if (tp->addr[0] == '\0')
		snprintf(tp->addr, sizeof(tp->addr), "%s",
		    peer != NULL ? peer : "unknown");
	who->peer = tp->addr;
	gpr_free(peer);
}

static void
call_metrics(struct rpc_server *srv, struct job *j, int code)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	metrics_request(srv->svc->metrics, j->generic ? gate_nmethods() :
	    j->method, code, (double)(now.tv_sec - j->t0.tv_sec) +
	    (now.tv_nsec - j->t0.tv_nsec) / 1e9);
}

/*
 * Sends the reply (or the error status) in one batch.  The reply's slice
 * takes rep->body and wipes it when gRPC lets the last reference go:
 * replies may carry secrets (unwrapped keys).
 */
static void
send_reply(struct rpc_server *srv, struct job *j, struct rpc_reply *rep)
{
	grpc_op ops[4];
	grpc_slice body;
	grpc_call_error e;
	size_t n = 0;
	int code = rep->st.err == 0 ? GRPC_STATUS_OK :
	    kms_err_grpc_code(rep->st.err);

	call_metrics(srv, j, code);

	memset(ops, 0, sizeof(ops));
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (rep->st.err == 0) {
		body = grpc_slice_new_with_len(rep->body, rep->len,
		    secret_freezero);
		rep->body = NULL;
		j->reply = grpc_raw_byte_buffer_create(&body, 1);
		grpc_slice_unref(body);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = j->reply;
	} else if (rep->body != NULL) {
		secret_freezero(rep->body, rep->len);
		rep->body = NULL;
	}
	j->details = grpc_slice_from_copied_string(rep->st.err == 0 ? "" :
	    rep->st.msg);
	j->have_details = 1;
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n++].data.send_status_from_server.status_details = &j->details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &j->cancelled;
	if ((e = grpc_call_start_batch(j->call, ops, n, &j->tag, NULL)) !=
	    GRPC_CALL_OK) {
		log_error("rpc: cannot send a reply (%d)", (int)e);
		job_done(srv, j);
	}
}

/*
 * The transport's side of a watcher (watch_ops): one SEND_MESSAGE batch
 * per record, the first with the initial metadata; the hub sends the next
 * once this one has left (watch_sent).
 */
static void
free_len(void *p, size_t len)
{
	free(p);
}

static void
stream_send(void *arg, uint8_t *body, size_t len)
{
	struct job *j = arg;
	grpc_slice slice;
	grpc_op ops[2];
	size_t n = 0;

	slice = grpc_slice_new_with_len(body, len, free_len);
	j->send_bb = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	memset(ops, 0, sizeof(ops));
	if (!j->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = j->send_bb;
	if (grpc_call_start_batch(j->call, ops, n, &j->send_tag, NULL) !=
	    GRPC_CALL_OK) {
		grpc_byte_buffer_destroy(j->send_bb);
		j->send_bb = NULL;
		watch_sent(j->watch, 0);
		return;
	}
	j->md_sent = 1;
}

/* Ends the call: the client sees the status; the close follows. */
static void
stream_end(void *arg, int err, const char *msg)
{
	struct job *j = arg;

	grpc_call_cancel_with_status(j->call,
	    (grpc_status_code)kms_err_grpc_code(err), msg, NULL);
}

static void
stream_release(void *arg)
{
	struct job *j = arg;

	job_done(j->srv, j);
}

/*
 * Starts streaming a call the gate let in, now that its record is
 * durable.  RECV_CLOSE_ON_SERVER tells when the call is over: the client
 * cancelled, its deadline passed, or the hub ended it.
 */
static void
stream_start(struct job *j, struct watcher *w, struct rpc_reply *rep)
{
	static const struct watch_ops wops = {
		stream_send, stream_end, stream_release
	};
	grpc_op op;

	j->watch = w;
	if (watch_start(w, &wops, j) != 0) {
		j->watch = NULL;
		watch_drop(w);
		kms_status_set(&rep->st, KMS_ERR_UNAVAILABLE,
		    "kmsd is stopping");
		send_reply(j->srv, j, rep);
		return;
	}
	call_metrics(j->srv, j, GRPC_STATUS_OK);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &j->cancelled;
	if (grpc_call_start_batch(j->call, &op, 1, &j->close_tag, NULL) !=
	    GRPC_CALL_OK) {
		log_error("rpc: cannot watch a stream's end");
		grpc_call_cancel_with_status(j->call, GRPC_STATUS_INTERNAL,
		    "cannot watch the stream's end", NULL);
		watch_closed(w);
	}
}

/* Sends the reply, or starts the stream the gate let in. */
static void
reply_or_stream(struct job *j, struct rpc_reply *rep)
{
	if (rep->stream != NULL && rep->st.err == 0) {
		free(rep->body);
		rep->body = NULL;
		stream_start(j, rep->stream, rep);
		return;
	}
	if (rep->stream != NULL)
		watch_drop(rep->stream);
	rep->stream = NULL;
	send_reply(j->srv, j, rep);
}

/*
 * Sends a reply that waited for its audit record: the result when the
 * record is durable, UNAVAILABLE without the result when it was lost.
 * The job may be freed as soon as the reply is started, so it is sent
 * from a copy of the reply.
 */
static void
reply_complete(struct job *j)
{
	struct rpc_reply rep = j->rep;

	if (j->waiter.err != 0) {
		if (rep.body != NULL)
			secret_freezero(rep.body, rep.len);
		rep.body = NULL;
		rep.len = 0;
		kms_status_set(&rep.st, KMS_ERR_AUDIT, "the audit log cannot "
		    "be written: the request was refused and no result is "
		    "released");
	}
	reply_or_stream(j, &rep);
}

/*
 * A pending reply has two parts, the packed response (the worker) and the
 * settled audit record (the log's writer thread), which finish in either
 * order: whoever finishes second sends it.
 */
static void
reply_part_done(struct job *j)
{
	if (__atomic_add_fetch(&j->parts, 1, __ATOMIC_ACQ_REL) == 2)
		reply_complete(j);
}

/* Called by the audit log's writer thread (see audit_submit). */
static void
reply_when_durable(struct audit_waiter *aw, int err)
{
	struct job *j = (struct job *)((char *)aw -
	    offsetof(struct job, waiter));

	aw->err = err;
	reply_part_done(j);
}

/*
 * Wipes the request bytes gRPC received: the slices of the payload as
 * they came, and the one-piece copy the handler read (when the reader
 * had to join or inflate them).
 */
static void
wipe_request(grpc_byte_buffer *payload, grpc_slice *joined)
{
	grpc_slice_buffer *sb;
	size_t i;

	if (joined != NULL)
		OPENSSL_cleanse(GRPC_SLICE_START_PTR(*joined),
		    GRPC_SLICE_LENGTH(*joined));
	if (payload == NULL || payload->type != GRPC_BB_RAW)
		return;
	sb = &payload->data.raw.slice_buffer;
	for (i = 0; i < sb->count; i++)
		OPENSSL_cleanse(GRPC_SLICE_START_PTR(sb->slices[i]),
		    GRPC_SLICE_LENGTH(sb->slices[i]));
}

static void
serve(struct worker *w, struct job *j)
{
	struct rpc_server *srv = w->srv;
	grpc_byte_buffer_reader reader;
	struct tlsfront_peer tp;
	struct rpc_reply rep;
	struct rpc_peer who;
	grpc_slice slice;
	int have_slice = 0;

	memset(&rep, 0, sizeof(rep));
	clock_gettime(CLOCK_MONOTONIC, &j->t0);
	j->srv = srv;
	j->waiter.done = reply_when_durable;
	rep.waiter = &j->waiter;
	peer_of(srv, j->call, &tp, &who);
	if (j->generic) {
		gate_audit_unimplemented(srv->svc, &who, j->method_name);
		kms_status_set(&rep.st, KMS_ERR_UNIMPLEMENTED,
		    "unknown method %.200s", j->method_name);
	} else {
		if (j->payload != NULL &&
		    grpc_byte_buffer_reader_init(&reader, j->payload)) {
			slice = grpc_byte_buffer_reader_readall(&reader);
			grpc_byte_buffer_reader_destroy(&reader);
			have_slice = 1;
		}
		gate(srv->svc, w->hs, j->method, &who,
		    have_slice ? GRPC_SLICE_START_PTR(slice) :
		    (const uint8_t *)"",
		    have_slice ? GRPC_SLICE_LENGTH(slice) : 0, &rep);
		if (rep.wipe_request)
			wipe_request(j->payload, have_slice ? &slice : NULL);
	}
	if (rep.pending) {
		/* Sent by whoever is last: this worker or the audit writer. */
		j->rep = rep;
		reply_part_done(j);
	} else {
		reply_or_stream(j, &rep);
	}
	if (have_slice)
		grpc_slice_unref(slice);
}

/* A slot fired: re-post it and serve its call. */
static void
dispatch(struct worker *w, struct slot *s, int success)
{
	struct rpc_server *srv = w->srv;
	struct job *j;
	int stopping;

	if (!success) {
		/* The server is shutting down: the slot will not be re-posted. */
		grpc_metadata_array_destroy(&s->md);
		if (s->tag.kind == TAG_GENERIC)
			grpc_call_details_destroy(&s->details);
		return;
	}
	if ((j = job_new()) == NULL) {
		log_error("rpc: out of memory: call dropped");
		grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
		    "out of memory", NULL);
		grpc_call_unref(s->call);
		if (s->payload != NULL)
			grpc_byte_buffer_destroy(s->payload);
		grpc_metadata_array_destroy(&s->md);
		if (s->tag.kind == TAG_GENERIC)
			grpc_call_details_destroy(&s->details);
	} else {
		j->call = s->call;
		j->payload = s->payload;
		j->md = s->md;
		j->method = s->method;
		if (s->tag.kind == TAG_GENERIC) {
			j->generic = 1;
			j->method_name = grpc_slice_to_c_string(
			    s->details.method);
			grpc_call_details_destroy(&s->details);
		}
	}
	pthread_mutex_lock(&srv->lock);
	stopping = srv->stopping;
	if (j != NULL)
		srv->inflight++;
	pthread_mutex_unlock(&srv->lock);
	/* The slot goes back first, so that other calls keep coming in. */
	if (!stopping)
		post_slot(srv, s);
	if (j != NULL)
		serve(w, j);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct rpc_server *srv = w->srv;
	grpc_event ev;
	struct tag *t;
	struct job *j;

	pthread_setname_np(pthread_self(), "kms-worker");
	for (;;) {
		ev = grpc_completion_queue_next(srv->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		t = ev.tag;
		switch (t->kind) {
		case TAG_REGISTERED:
		case TAG_GENERIC:
			dispatch(w, (struct slot *)t, ev.success);
			break;
		case TAG_REPLY:
			job_done(srv, (struct job *)t);
			break;
		case TAG_STREAM_SEND:
			j = JOB_OF(t, send_tag);
			grpc_byte_buffer_destroy(j->send_bb);
			j->send_bb = NULL;
			watch_sent(j->watch, ev.success);
			break;
		case TAG_STREAM_CLOSE:
			watch_closed(JOB_OF(t, close_tag)->watch);
			break;
		case TAG_SHUTDOWN:
			pthread_mutex_lock(&srv->lock);
			srv->shutdown_done = 1;
			pthread_cond_broadcast(&srv->cond);
			pthread_mutex_unlock(&srv->lock);
			break;
		}
	}
	return NULL;
}

/* A verified connection's plaintext becomes one of our channels. */
static void
handoff(void *arg, int fd)
{
	struct rpc_server *srv = arg;

	grpc_server_add_channel_from_fd(srv->server, fd, srv->plain);
}

/*
 * What is left once the server, its credentials and its queue are gone:
 * the first nworkers workers' HSM sessions, the tables, the locks, and
 * this process's hold on gRPC.
 */
static void
server_free(struct rpc_server *srv, unsigned int nworkers)
{
	unsigned int w;

	for (w = 0; srv->workers != NULL && w < nworkers; w++)
		hsm_session_close(srv->workers[w].hs);
	free(srv->workers);
	free(srv->handles);
	free(srv->slots);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
	grpc_shutdown();
}

int
rpc_server_start(struct service *svc, const char *listen,
    struct rpc_server **out, int *port, struct kms_status *st)
{
	const struct config *cfg = svc->cfg;
	struct tlsfront_params fp;
	struct tls_set *ts = NULL;
	struct rpc_server *srv;
	grpc_channel_args chargs;
	grpc_arg args[2];
	size_t i, k;
	unsigned int w;
	int r = KMS_ERR_INTERNAL;

	*out = NULL;
	*port = 0;
	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	srv->svc = svc;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	srv->shutdown_tag.kind = TAG_SHUTDOWN;
	grpc_init();
	srv->nmethods = gate_nmethods();
	srv->nslots = srv->nmethods * SLOTS_PER_METHOD + GENERIC_SLOTS;
	if ((srv->handles = calloc(srv->nmethods, sizeof(void *))) == NULL ||
	    (srv->slots = calloc(srv->nslots, sizeof(*srv->slots))) == NULL ||
	    (srv->workers = calloc(cfg->workers,
	    sizeof(*srv->workers))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((r = tls_set_load(cfg->cert_file, cfg->key_file, cfg->ca_file,
	    cfg->crl_file, &ts, st)) != 0)
		goto fail;
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)cfg->max_message_bytes;
	/* A connection without calls for this long is closed. */
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_CONNECTION_IDLE_MS;
	args[1].value.integer = (int)cfg->idle_timeout_ms;
	chargs.num_args = 2;
	chargs.args = args;
	srv->cq = grpc_completion_queue_create_for_next(NULL);
	srv->server = grpc_server_create(&chargs, NULL);
	srv->plain = grpc_insecure_server_credentials_create();
	grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
	for (i = 0; i < srv->nmethods; i++)
		srv->handles[i] = grpc_server_register_method(srv->server,
		    gate_method_path(i), NULL,
		    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	/* One HSM session per worker, opened before any call is accepted. */
	srv->nworkers = cfg->workers;
	for (w = 0; w < srv->nworkers; w++) {
		srv->workers[w].srv = srv;
		if ((r = hsm_session_open(svc->hsm,
		    &srv->workers[w].hs)) != 0) {
			kms_status_set(st, r, "cannot open an HSM session: %s",
			    kms_strerror(r));
			goto fail;
		}
	}
	grpc_server_start(srv->server);
	for (w = 0; w < srv->nworkers; w++) {
		if (pthread_create(&srv->workers[w].thread, NULL, worker_main,
		    &srv->workers[w]) != 0) {
			r = kms_status_set(st, KMS_ERR_INTERNAL,
			    "cannot start a worker thread");
			goto fail_started;
		}
		srv->workers_started++;
	}
	for (i = 0, k = 0; i < srv->nmethods; i++) {
		for (w = 0; w < SLOTS_PER_METHOD; w++, k++) {
			srv->slots[k].tag.kind = TAG_REGISTERED;
			srv->slots[k].method = i;
		}
	}
	for (; k < srv->nslots; k++)
		srv->slots[k].tag.kind = TAG_GENERIC;
	for (k = 0; k < srv->nslots; k++) {
		if (post_slot(srv, &srv->slots[k]) != 0) {
			r = kms_status_set(st, KMS_ERR_INTERNAL,
			    "cannot post request slots");
			goto fail_started;
		}
	}
	/* Last: connections come in once everything is ready for them. */
	memset(&fp, 0, sizeof(fp));
	fp.listen = listen;
	fp.max_connections = cfg->max_connections;
	fp.handshake_timeout_ms = cfg->handshake_timeout_ms;
	fp.handoff = handoff;
	fp.arg = srv;
	r = tlsfront_start(&fp, ts, &srv->front, port, st);
	ts = NULL;
	if (r != 0)
		goto fail_started;
	*out = srv;
	return 0;
 fail_started:
	rpc_server_stop(srv, 0);
	return r;
 fail:
	tls_set_free(ts);
	if (srv->server != NULL)
		grpc_server_destroy(srv->server);
	if (srv->plain != NULL)
		grpc_server_credentials_release(srv->plain);
	if (srv->cq != NULL) {
		grpc_completion_queue_shutdown(srv->cq);
		while (grpc_completion_queue_next(srv->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		    GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(srv->cq);
	}
	server_free(srv, cfg->workers);
	return r;
}

void
rpc_server_set_tls(struct rpc_server *srv, struct tls_set *ts)
{
	tlsfront_set_tls(srv->front, ts);
}

unsigned int
rpc_server_connections(struct rpc_server *srv)
{
	return tlsfront_connections(srv->front);
}

int
rpc_server_selfcheck(struct rpc_server *srv, int timeout_ms)
{
	return tlsfront_selfcheck(srv->front, timeout_ms);
}

/*
 * Waits until no call is in flight and, with shutdown set, the server
 * has shut down.
 */
static int
wait_drained(struct rpc_server *srv, int shutdown, int seconds)
{
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&srv->lock);
	while (!((srv->shutdown_done || !shutdown) && srv->inflight == 0) &&
	    r == 0)
		r = pthread_cond_timedwait(&srv->cond, &srv->lock, &until);
	r = (srv->shutdown_done || !shutdown) && srv->inflight == 0 ? 0 : -1;
	pthread_mutex_unlock(&srv->lock);
	return r;
}

void
rpc_server_stop(struct rpc_server *srv, int grace_seconds)
{
	unsigned int w;

	if (srv == NULL)
		return;
	pthread_mutex_lock(&srv->lock);
	srv->stopping = 1;
	pthread_mutex_unlock(&srv->lock);
	/* No new connections; the established ones finish their calls. */
	tlsfront_quiesce(srv->front);
	/* Streams never finish by themselves: end them. */
	watch_hub_shutdown(srv->svc->watch);
	grpc_server_shutdown_and_notify(srv->server, srv->cq,
	    &srv->shutdown_tag);
	/*
	 * The server says GOAWAY on every connection and closes each once
	 * its calls are done and the client has seen the final GOAWAY (a
	 * client that has, retries its next call on a new connection
	 * instead of failing it).
	 */
	if (srv->workers_started > 0 &&
	    wait_drained(srv, 1, grace_seconds) != 0) {
		log_warn("rpc: calls still in flight after %d s: cancelling "
		    "them", grace_seconds);
		grpc_server_cancel_all_calls(srv->server);
	}
	tlsfront_stop(srv->front);
	srv->front = NULL;
	if (srv->workers_started > 0 && wait_drained(srv, 1, 5) != 0) {
		grpc_server_cancel_all_calls(srv->server);
		if (wait_drained(srv, 1, 5) != 0)
			log_error("rpc: calls still in flight after cancel");
	}
	grpc_server_destroy(srv->server);
	grpc_server_credentials_release(srv->plain);
	/* The workers take what is left, then see the queue shut down. */
	grpc_completion_queue_shutdown(srv->cq);
	for (w = 0; w < srv->workers_started; w++)
		pthread_join(srv->workers[w].thread, NULL);
	if (srv->workers_started == 0)
		while (grpc_completion_queue_next(srv->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		    GRPC_QUEUE_SHUTDOWN)
			;
	grpc_completion_queue_destroy(srv->cq);
	server_free(srv, srv->nworkers);
}
