/*
 * rpc.c: the gRPC C-core server, its method table and its worker pool.
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
 * from the queue.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
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
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit.h"
#include "config.h"
#include "gate.h"
#include "hsm.h"
#include "kmserr.h"
#include "log.h"
#include "rpc.h"
#include "secret.h"

#define SLOTS_PER_METHOD 16	/* requests posted per method at any time */
#define GENERIC_SLOTS 4
#define PEM_FILE_MAX (1024 * 1024)
#define IDENTITY_MAX 512
#define FPR_HEX (32 * 2 + 1)

enum tag_kind {
	TAG_REGISTERED = 1,
	TAG_GENERIC,
	TAG_REPLY,
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
};

/* Per-worker state: its HSM session and a one-entry fingerprint cache. */
struct worker {
	struct rpc_server *srv;
	pthread_t thread;
	struct hsm_session *hs;
	char *last_pem;
	char last_fpr[FPR_HEX];
};

struct rpc_server {
	struct service *svc;
	grpc_server *server;
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

static int
read_file(const char *path, char **out, size_t *outlen, struct kms_status *st)
{
	struct stat sb;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot open %s: %s",
		    path, strerror(errno));
	if (fstat(fd, &sb) == -1 || sb.st_size <= 0 ||
	    sb.st_size > PEM_FILE_MAX) {
		close(fd);
		return kms_status_set(st, KMS_ERR_CONFIG,
		    "%s: empty, unreadable or larger than %d bytes", path,
		    PEM_FILE_MAX);
	}
	if ((buf = calloc(1, (size_t)sb.st_size + 1)) == NULL) {
		close(fd);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	while (len < (size_t)sb.st_size) {
		n = read(fd, buf + len, (size_t)sb.st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*outlen = (size_t)sb.st_size + 1;
	return 0;
}

static struct job *
job_new(void)
{
	struct job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	j->tag.kind = TAG_REPLY;
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

/* Copies the first value of auth property name, or NULL. */
static char *
auth_property(grpc_auth_context *ctx, const char *name, size_t max)
{
	grpc_auth_property_iterator it;
	const grpc_auth_property *p;
	char *s;

	it = grpc_auth_context_find_properties_by_name(ctx, name);
	if ((p = grpc_auth_property_iterator_next(&it)) == NULL ||
	    p->value_length == 0 || p->value_length > max)
		return NULL;
	if ((s = malloc(p->value_length + 1)) == NULL)
		return NULL;
	memcpy(s, p->value, p->value_length);
	s[p->value_length] = '\0';
	/* An identity with an embedded NUL would be read as another name. */
	if (strlen(s) != p->value_length) {
		free(s);
		return NULL;
	}
	return s;
}

static int
pem_fingerprint(const char *pem, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	X509 *x = NULL;
	BIO *bio;

	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return -1;
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL || X509_digest(x, EVP_sha256(), md, &mdlen) != 1 ||
	    mdlen != 32) {
		X509_free(x);
		return -1;
	}
	X509_free(x);
	for (i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[2 * mdlen] = '\0';
	return 0;
}

/*
 * The caller's identity from the verified certificate: its SPIFFE ID, else
 * its first URI SAN, else its CN.  Also the certificate's fingerprint.
 */
static void
peer_identity(struct worker *w, grpc_call *call, char **identity, char *fpr)
{
	grpc_auth_context *ctx;
	char *pem;

	*identity = NULL;
	fpr[0] = '\0';
	if ((ctx = grpc_call_auth_context(call)) == NULL)
		return;
	if (grpc_auth_context_peer_is_authenticated(ctx)) {
		if ((*identity = auth_property(ctx,
		    GRPC_PEER_SPIFFE_ID_PROPERTY_NAME, IDENTITY_MAX)) == NULL &&
		    (*identity = auth_property(ctx,
		    GRPC_PEER_URI_PROPERTY_NAME, IDENTITY_MAX)) == NULL)
			*identity = auth_property(ctx,
			    GRPC_X509_CN_PROPERTY_NAME, IDENTITY_MAX);
		if ((pem = auth_property(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME,
		    PEM_FILE_MAX)) != NULL) {
			if (w->last_pem != NULL &&
			    strcmp(w->last_pem, pem) == 0) {
				memcpy(fpr, w->last_fpr, FPR_HEX);
				free(pem);
			} else if (pem_fingerprint(pem, fpr) == 0) {
				free(w->last_pem);
				w->last_pem = pem;
				memcpy(w->last_fpr, fpr, FPR_HEX);
			} else
				free(pem);
		}
	}
	grpc_auth_context_release(ctx);
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
	send_reply(j->srv, j, &rep);
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
	struct rpc_reply rep;
	struct rpc_peer who;
	grpc_slice slice;
	char *identity = NULL, *peer, fpr[FPR_HEX];
	int have_slice = 0;

	memset(&rep, 0, sizeof(rep));
	j->srv = srv;
	j->waiter.done = reply_when_durable;
	rep.waiter = &j->waiter;
	peer_identity(w, j->call, &identity, fpr);
	peer = grpc_call_get_peer(j->call);
	who.identity = identity;
	who.fingerprint = fpr[0] != '\0' ? fpr : NULL;
	who.peer = peer;
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
		send_reply(srv, j, &rep);
	}
	if (have_slice)
		grpc_slice_unref(slice);
	gpr_free(peer);
	free(identity);
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

static grpc_server_credentials *
server_credentials(const struct config *cfg, struct kms_status *st)
{
	grpc_ssl_pem_key_cert_pair pair;
	grpc_server_credentials *creds = NULL;
	char *ca = NULL, *cert = NULL, *key = NULL;
	size_t calen, certlen, keylen = 0;

	if (read_file(cfg->ca_file, &ca, &calen, st) != 0 ||
	    read_file(cfg->cert_file, &cert, &certlen, st) != 0 ||
	    read_file(cfg->key_file, &key, &keylen, st) != 0)
		goto out;
	pair.private_key = key;
	pair.cert_chain = cert;
	/* Clients must present a certificate that chains to our CA. */
	creds = grpc_ssl_server_credentials_create_ex(ca, &pair, 1,
	    GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
	if (creds == NULL)
		kms_status_set(st, KMS_ERR_CONFIG, "cannot use the TLS "
		    "certificate, key or CA (%s, %s, %s)", cfg->cert_file,
		    cfg->key_file, cfg->ca_file);
 out:
	free(ca);
	free(cert);
	secret_freezero(key, keylen);
	return creds;
}

int
rpc_server_start(struct service *svc, const char *listen,
    struct rpc_server **out, int *port, struct kms_status *st)
{
	const struct config *cfg = svc->cfg;
	grpc_server_credentials *creds = NULL;
	struct rpc_server *srv;
	grpc_channel_args chargs;
	grpc_arg args[3];
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
	if ((creds = server_credentials(cfg, st)) == NULL) {
		r = st->err;
		goto fail;
	}
	memset(args, 0, sizeof(args));
	/* A second server on our address must fail, not share our port. */
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
	args[0].value.integer = 0;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[1].value.integer = (int)cfg->max_message_bytes;
	chargs.num_args = 2;
	chargs.args = args;
	srv->cq = grpc_completion_queue_create_for_next(NULL);
	srv->server = grpc_server_create(&chargs, NULL);
	grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
	for (i = 0; i < srv->nmethods; i++)
		srv->handles[i] = grpc_server_register_method(srv->server,
		    gate_method_path(i), NULL,
		    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	*port = grpc_server_add_http2_port(srv->server, listen, creds);
	grpc_server_credentials_release(creds);
	if (*port == 0) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "cannot listen on %s "
		    "(address in use or not valid?)", listen);
		goto fail;
	}
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
	*out = srv;
	return 0;
 fail_started:
	rpc_server_stop(srv, 0);
	return r;
 fail:
	for (w = 0; srv->workers != NULL && w < cfg->workers; w++)
		hsm_session_close(srv->workers[w].hs);
	if (srv->server != NULL)
		grpc_server_destroy(srv->server);
	if (srv->cq != NULL) {
		grpc_completion_queue_shutdown(srv->cq);
		while (grpc_completion_queue_next(srv->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		    GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(srv->cq);
	}
	free(srv->handles);
	free(srv->slots);
	free(srv->workers);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
	grpc_shutdown();
	return r;
}

/* Waits until the server has shut down and no call is in flight. */
static int
wait_drained(struct rpc_server *srv, int seconds)
{
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&srv->lock);
	while (!(srv->shutdown_done && srv->inflight == 0) && r == 0)
		r = pthread_cond_timedwait(&srv->cond, &srv->lock, &until);
	r = srv->shutdown_done && srv->inflight == 0 ? 0 : -1;
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
	grpc_server_shutdown_and_notify(srv->server, srv->cq,
	    &srv->shutdown_tag);
	if (srv->workers_started > 0 &&
	    wait_drained(srv, grace_seconds) != 0) {
		log_warn("rpc: calls still in flight after %d s: cancelling "
		    "them", grace_seconds);
		grpc_server_cancel_all_calls(srv->server);
		if (wait_drained(srv, 5) != 0)
			log_error("rpc: calls still in flight after cancel");
	}
	grpc_server_destroy(srv->server);
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
	for (w = 0; w < srv->nworkers; w++) {
		hsm_session_close(srv->workers[w].hs);
		free(srv->workers[w].last_pem);
	}
	free(srv->workers);
	free(srv->handles);
	free(srv->slots);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
	grpc_shutdown();
}
