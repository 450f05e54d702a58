/*
 * floor: the cheapest server that can answer kms's Sign on this machine,
 * the reference `make bench` measures kmsd against (docs/performance.md).
 *
 *   floor --config KMSD_CONF --listen HOST:PORT --key-name NAME
 *
 * It reads kmsd's own configuration file (kms/config.c) and so serves
 * with the same certificates and CA (clients must present a certificate
 * that chains to it), the same PKCS#11 module, token and PIN file, and the
 * same number of workers, built as kms/rpc.c builds them: one completion
 * queue that every worker takes events from, each worker with its own
 * logged-in session, 16 posted request slots for Sign and a few generic
 * ones, the same receive-size limit, and the reply in one batch sent by
 * the worker that signed.  Unlike kmsd it listens with gRPC's own TLS (a
 * floor has no front of its own), with SO_REUSEPORT off.  It signs with the primary (highest) version of the
 * P-256 key NAME that kmsd created: the private key object labelled
 * NAME#VERSION#RANDOM by kms/keymeta.c.
 *
 * Each /kms.v1.KeyManagementService/Sign is decoded (protobuf-c), its
 * 32-byte digest signed with one C_SignInit + C_Sign on the worker's
 * session, and answered with a SignResponse holding the DER signature, so
 * that build/kmsload drives it as it drives kmsd.  Nothing else happens:
 * no peer identity, policy, key metadata or audit record.  Any other
 * method is answered UNIMPLEMENTED.  SIGINT or SIGTERM stops it.
 *
 * The server's skeleton (slots, worker loop, reply batch, shutdown) is
 * written after kms/rpc.c's rather than linked from it, on purpose: the
 * floor stays fixed while kmsd's RPC layer changes, and a change there
 * shows as a change against the floor.
 *
 * When it serves it prints "floor: serving on port PORT ..." on stderr,
 * the port bound (--listen 127.0.0.1:0 takes a free one).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "config.h"
#include "kmserr.h"
#include "p11util.h"
#include "kms/v1/kms.pb-c.h"

#define SIGN_PATH "/kms.v1.KeyManagementService/Sign"
#define SIGN_SLOTS 16		/* as kms/rpc.c's SLOTS_PER_METHOD */
#define GENERIC_SLOTS 4		/* as kms/rpc.c's GENERIC_SLOTS */
#define NSLOTS (SIGN_SLOTS + GENERIC_SLOTS)
#define PEM_MAX (1024 * 1024)
#define P256_DIGEST 32
#define P256_RAW_SIG 64
#define DER_SIG_MAX 72		/* SEQUENCE of two INTEGERs of at most 33 */
#define REPLY_MAX 128		/* a packed SignResponse of a P-256 key */

/* DER of the P-256 curve OID, as CKA_EC_PARAMS holds it. */
static const uint8_t oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};

enum tag_kind {
	TAG_SIGN = 1,
	TAG_GENERIC,
	TAG_REPLY,
	TAG_SHUTDOWN
};

struct tag {
	enum tag_kind kind;
};

/* One posted request: the server fills it when a call arrives. */
struct slot {
	struct tag tag;
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_call_details details;	/* generic slots only */
};

/* One call from its dispatch to the completion of its reply. */
struct job {
	struct tag tag;			/* TAG_REPLY */
	grpc_call *call;
	grpc_byte_buffer *reply;
	grpc_slice details;
	int cancelled;
};

struct floor;

struct worker {
	struct floor *fl;
	pthread_t thread;
	CK_SESSION_HANDLE s;
	int have_session;
};

struct floor {
	struct p11 p11;
	CK_OBJECT_HANDLE key;
	uint32_t version;
	grpc_server *server;
	grpc_completion_queue *cq;
	void *sign_method;
	struct slot slots[NSLOTS];
	struct worker *workers;
	unsigned int nworkers, started;
	struct tag shutdown_tag;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int running;			/* grpc_server_start was called */
	int stopping;			/* no slot is posted again */
	int shutdown_done;
};

static int
post_slot(struct floor *fl, struct slot *s)
{
	grpc_call_error e;

	s->call = NULL;
	s->payload = NULL;
	grpc_metadata_array_init(&s->md);
	if (s->tag.kind == TAG_GENERIC) {
		grpc_call_details_init(&s->details);
		e = grpc_server_request_call(fl->server, &s->call,
		    &s->details, &s->md, fl->cq, fl->cq, &s->tag);
	} else
		e = grpc_server_request_registered_call(fl->server,
		    fl->sign_method, &s->call, &s->deadline, &s->md,
		    &s->payload, fl->cq, fl->cq, &s->tag);
	if (e != GRPC_CALL_OK) {
		fprintf(stderr, "floor: cannot post a request slot (%d)\n",
		    (int)e);
		return -1;
	}
	return 0;
}

static void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	if (j->reply != NULL)
		grpc_byte_buffer_destroy(j->reply);
	grpc_slice_unref(j->details);
	if (j->call != NULL)
		grpc_call_unref(j->call);
	free(j);
}

/*
 * Sends body (len bytes) with status OK, or no message with code and msg,
 * in one batch; the job is freed when the batch completes.
 */
static void
send_reply(struct job *j, const uint8_t *body, size_t len,
    grpc_status_code code, const char *msg)
{
	grpc_op ops[4];
	grpc_slice s;
	size_t n = 0;
	grpc_call_error e;

	memset(ops, 0, sizeof(ops));
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (code == GRPC_STATUS_OK) {
		s = grpc_slice_from_copied_buffer((const char *)body, len);
		j->reply = grpc_raw_byte_buffer_create(&s, 1);
		grpc_slice_unref(s);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = j->reply;
	}
	j->details = grpc_slice_from_static_string(msg);
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	ops[n++].data.send_status_from_server.status_details = &j->details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &j->cancelled;
	if ((e = grpc_call_start_batch(j->call, ops, n, &j->tag, NULL)) !=
	    GRPC_CALL_OK) {
		fprintf(stderr, "floor: cannot send a reply (%d)\n", (int)e);
		job_free(j);
	}
}

/* The DER INTEGER of the big-endian unsigned n bytes at p; its length. */
static size_t
der_uint(const uint8_t *p, size_t n, uint8_t *out)
{
	size_t k = 0;
	int pad;

	while (n > 1 && p[0] == 0) {
		p++;
		n--;
	}
	pad = (p[0] & 0x80) != 0;
	out[k++] = 0x02;
	out[k++] = (uint8_t)(n + (size_t)pad);
	if (pad)
		out[k++] = 0;
	memcpy(out + k, p, n);
	return k + n;
}

/* A P-256 r || s as a DER ECDSA-Sig-Value (at most DER_SIG_MAX bytes). */
static size_t
ecdsa_der(const uint8_t *raw, uint8_t *out)
{
	size_t n = 2;

	n += der_uint(raw, P256_RAW_SIG / 2, out + n);
	n += der_uint(raw + P256_RAW_SIG / 2, P256_RAW_SIG / 2, out + n);
	out[0] = 0x30;
	out[1] = (uint8_t)(n - 2);
	return n;
}

/* Decodes a SignRequest, signs its digest, replies. */
static void
serve_sign(struct worker *w, struct job *j, grpc_byte_buffer *payload)
{
	struct floor *fl = w->fl;
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	Kms__V1__SignRequest *req = NULL;
	Kms__V1__SignResponse resp;
	grpc_byte_buffer_reader reader;
	grpc_slice slice = grpc_empty_slice();
	uint8_t raw[P256_RAW_SIG], der[DER_SIG_MAX], body[REPLY_MAX];
	CK_ULONG rawlen = sizeof(raw);
	CK_RV rv;

	if (payload != NULL &&
	    grpc_byte_buffer_reader_init(&reader, payload)) {
		slice = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
	}
	if ((req = kms__v1__sign_request__unpack(NULL,
	    GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice))) == NULL) {
		send_reply(j, NULL, 0, GRPC_STATUS_INVALID_ARGUMENT,
		    "malformed SignRequest");
		goto out;
	}
	if (req->digest.len != P256_DIGEST) {
		send_reply(j, NULL, 0, GRPC_STATUS_INVALID_ARGUMENT,
		    "the digest must be 32 bytes");
		goto out;
	}
	if ((rv = fl->p11.f->C_SignInit(w->s, &mech, fl->key)) != CKR_OK ||
	    (rv = fl->p11.f->C_Sign(w->s, req->digest.data, req->digest.len,
	    raw, &rawlen)) != CKR_OK || rawlen != P256_RAW_SIG) {
		send_reply(j, NULL, 0, GRPC_STATUS_INTERNAL,
		    "C_SignInit or C_Sign failed");
		goto out;
	}
	kms__v1__sign_response__init(&resp);
	resp.signature.data = der;
	resp.signature.len = ecdsa_der(raw, der);
	resp.version = fl->version;
	resp.algorithm = KMS__V1__ALGORITHM__EC_P256_SHA256;
	send_reply(j, body, kms__v1__sign_response__pack(&resp, body),
	    GRPC_STATUS_OK, "");
 out:
	kms__v1__sign_request__free_unpacked(req, NULL);
	grpc_slice_unref(slice);
}

/* A slot fired: re-post it first, then serve its call. */
static void
dispatch(struct worker *w, struct slot *s, int success)
{
	struct floor *fl = w->fl;
	grpc_byte_buffer *payload = s->payload;
	enum tag_kind kind = s->tag.kind;
	struct job *j;
	int stopping;

	grpc_metadata_array_destroy(&s->md);
	if (kind == TAG_GENERIC)
		grpc_call_details_destroy(&s->details);
	if (!success)
		return;		/* shutting down: the slot stays down */
	if ((j = calloc(1, sizeof(*j))) != NULL) {
		j->tag.kind = TAG_REPLY;
		j->call = s->call;
		j->details = grpc_empty_slice();
	}
	pthread_mutex_lock(&fl->lock);
	stopping = fl->stopping;
	pthread_mutex_unlock(&fl->lock);
	if (j == NULL) {
		grpc_call_cancel_with_status(s->call,
		    GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
		grpc_call_unref(s->call);
	}
	if (!stopping)
		post_slot(fl, s);
	if (j != NULL && kind == TAG_GENERIC)
		send_reply(j, NULL, 0, GRPC_STATUS_UNIMPLEMENTED,
		    "the floor serves Sign only");
	else if (j != NULL)
		serve_sign(w, j, payload);
	if (payload != NULL)
		grpc_byte_buffer_destroy(payload);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct floor *fl = w->fl;
	grpc_event ev;
	struct tag *t;

	pthread_setname_np(pthread_self(), "floor-worker");
	for (;;) {
		ev = grpc_completion_queue_next(fl->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		t = ev.tag;
		switch (t->kind) {
		case TAG_SIGN:
		case TAG_GENERIC:
			dispatch(w, (struct slot *)t, ev.success);
			break;
		case TAG_REPLY:
			job_free((struct job *)t);
			break;
		case TAG_SHUTDOWN:
			pthread_mutex_lock(&fl->lock);
			fl->shutdown_done = 1;
			pthread_cond_broadcast(&fl->cond);
			pthread_mutex_unlock(&fl->lock);
			break;
		}
	}
	return NULL;
}

/*
 * The primary version of key name: the private key object labelled
 * name#VERSION#RANDOM with the highest VERSION (kms/keymeta.c's
 * km_version_label), which must be a P-256 key.
 */
static int
find_key(struct floor *fl, const char *name)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = CKK_EC;
	CK_ATTRIBUTE tpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
	};
	CK_OBJECT_HANDLE *found = NULL;
	CK_ULONG n = 0, i, len;
	unsigned char *label, *params;
	unsigned long v;
	size_t nl = strlen(name);
	char *end;
	int r = -1;
	CK_RV rv;

	fl->key = CK_INVALID_HANDLE;
	fl->version = 0;
	if ((rv = p11_find_all(&fl->p11, tpl, 2, &found, &n)) != CKR_OK) {
		fprintf(stderr, "floor: cannot list the token's EC private "
		    "keys: 0x%lx\n", (unsigned long)rv);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (p11_get_attr(&fl->p11, found[i], CKA_LABEL, &label,
		    &len) != CKR_OK)
			continue;
		if (len > nl + 1 && memcmp(label, name, nl) == 0 &&
		    label[nl] == '#') {
			errno = 0;
			v = strtoul((char *)label + nl + 1, &end, 10);
			if (errno == 0 && *end == '#' && v > fl->version &&
			    v <= UINT32_MAX) {
				fl->version = (uint32_t)v;
				fl->key = found[i];
			}
		}
		free(label);
	}
	free(found);
	if (fl->key == CK_INVALID_HANDLE) {
		fprintf(stderr, "floor: the token holds no EC private key of "
		    "key %s (label %s#VERSION#...): create it with kmsctl key "
		    "create %s --algorithm EC_P256_SHA256\n", name, name, name);
		return -1;
	}
	if (p11_get_attr(&fl->p11, fl->key, CKA_EC_PARAMS, &params,
	    &len) != CKR_OK)
		fprintf(stderr, "floor: cannot read the curve of key %s\n",
		    name);
	else if (len != sizeof(oid_p256) ||
	    memcmp(params, oid_p256, len) != 0)
		fprintf(stderr, "floor: key %s is not a P-256 key\n", name);
	else
		r = 0;
	free(params);
	return r;
}

/* A PEM file of at most PEM_MAX bytes, NUL-terminated, or NULL. */
static char *
read_pem(const char *path, size_t *len)
{
	char *buf;
	FILE *f;

	*len = 0;
	if ((buf = calloc(1, PEM_MAX + 1)) == NULL)
		return NULL;
	if ((f = fopen(path, "r")) != NULL) {
		*len = fread(buf, 1, PEM_MAX + 1, f);
		fclose(f);
	}
	if (*len == 0 || *len > PEM_MAX) {
		explicit_bzero(buf, PEM_MAX + 1);
		free(buf);
		fprintf(stderr, "floor: cannot read %s (or it is empty or "
		    "over %d bytes)\n", path, PEM_MAX);
		return NULL;
	}
	return buf;
}

static grpc_server_credentials *
server_credentials(const struct config *cfg)
{
	grpc_ssl_pem_key_cert_pair pair;
	grpc_server_credentials *creds = NULL;
	char *ca = NULL, *cert = NULL, *key = NULL;
	size_t calen = 0, certlen = 0, keylen = 0;

	if ((ca = read_pem(cfg->ca_file, &calen)) == NULL ||
	    (cert = read_pem(cfg->cert_file, &certlen)) == NULL ||
	    (key = read_pem(cfg->key_file, &keylen)) == NULL)
		goto out;
	pair.private_key = key;
	pair.cert_chain = cert;
	if ((creds = grpc_ssl_server_credentials_create_ex(ca, &pair, 1,
	    GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
	    NULL)) == NULL)
		fprintf(stderr, "floor: cannot use the TLS certificate, key or "
		    "CA\n");
 out:
	free(ca);
	free(cert);
	if (key != NULL)
		explicit_bzero(key, keylen);
	free(key);
	return creds;
}

/* Starts the server on listen; *port is the port bound. */
static int
floor_start(struct floor *fl, const struct config *cfg, const char *listen,
    int *port)
{
	grpc_server_credentials *creds;
	grpc_channel_args chargs;
	grpc_arg args[2];
	unsigned int w;
	size_t k;
	CK_RV rv;

	if ((creds = server_credentials(cfg)) == NULL)
		return -1;
	/* The arguments kms/rpc.c gives its server. */
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
	args[0].value.integer = 0;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[1].value.integer = (int)cfg->max_message_bytes;
	chargs.num_args = 2;
	chargs.args = args;
	fl->cq = grpc_completion_queue_create_for_next(NULL);
	fl->server = grpc_server_create(&chargs, NULL);
	grpc_server_register_completion_queue(fl->server, fl->cq, NULL);
	fl->sign_method = grpc_server_register_method(fl->server, SIGN_PATH,
	    NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	*port = grpc_server_add_http2_port(fl->server, listen, creds);
	grpc_server_credentials_release(creds);
	if (*port == 0) {
		fprintf(stderr, "floor: cannot listen on %s\n", listen);
		return -1;
	}
	/* One session per worker, as kmsd's workers have. */
	for (w = 0; w < fl->nworkers; w++) {
		fl->workers[w].fl = fl;
		if ((rv = fl->p11.f->C_OpenSession(fl->p11.slot,
		    CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
		    &fl->workers[w].s)) != CKR_OK) {
			fprintf(stderr, "floor: C_OpenSession failed: 0x%lx\n",
			    (unsigned long)rv);
			return -1;
		}
		fl->workers[w].have_session = 1;
	}
	grpc_server_start(fl->server);
	fl->running = 1;
	for (w = 0; w < fl->nworkers; w++) {
		if (pthread_create(&fl->workers[w].thread, NULL, worker_main,
		    &fl->workers[w]) != 0) {
			fprintf(stderr, "floor: cannot start a worker\n");
			return -1;
		}
		fl->started++;
	}
	for (k = 0; k < NSLOTS; k++) {
		fl->slots[k].tag.kind = k < SIGN_SLOTS ? TAG_SIGN : TAG_GENERIC;
		if (post_slot(fl, &fl->slots[k]) != 0)
			return -1;
	}
	return 0;
}

/* Stops the server, drains the queue, closes the sessions. */
static void
floor_stop(struct floor *fl)
{
	grpc_event ev;
	unsigned int w;

	if (fl->server != NULL) {
		pthread_mutex_lock(&fl->lock);
		fl->stopping = 1;
		pthread_mutex_unlock(&fl->lock);
		/*
		 * A started server is shut down and its calls cancelled; a
		 * worker takes the shutdown tag, or this thread when none
		 * started (then no slot was posted either).
		 */
		if (fl->running) {
			grpc_server_shutdown_and_notify(fl->server, fl->cq,
			    &fl->shutdown_tag);
			grpc_server_cancel_all_calls(fl->server);
		}
		if (fl->running && fl->started > 0) {
			pthread_mutex_lock(&fl->lock);
			while (!fl->shutdown_done)
				pthread_cond_wait(&fl->cond, &fl->lock);
			pthread_mutex_unlock(&fl->lock);
		} else if (fl->running) {
			do
				ev = grpc_completion_queue_next(fl->cq,
				    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
			while (ev.type != GRPC_OP_COMPLETE ||
			    ev.tag != &fl->shutdown_tag);
		}
		grpc_server_destroy(fl->server);
	}
	if (fl->cq != NULL) {
		grpc_completion_queue_shutdown(fl->cq);
		for (w = 0; w < fl->started; w++)
			pthread_join(fl->workers[w].thread, NULL);
		if (fl->started == 0)
			while (grpc_completion_queue_next(fl->cq,
			    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
			    GRPC_QUEUE_SHUTDOWN)
				;
		grpc_completion_queue_destroy(fl->cq);
	}
	for (w = 0; fl->workers != NULL && w < fl->nworkers; w++)
		if (fl->workers[w].have_session)
			fl->p11.f->C_CloseSession(fl->workers[w].s);
}

static void
usage(void)
{
	fprintf(stderr, "usage: floor --config KMSD_CONF --listen HOST:PORT "
	    "--key-name NAME\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "key-name", required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 }
	};
	const char *conf = NULL, *listen = NULL, *name = NULL;
	struct config *cfg = NULL;
	struct kms_status st;
	struct floor fl;
	sigset_t sigs;
	int ch, port = 0, sig, r = 1;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': conf = optarg; break;
		case 'l': listen = optarg; break;
		case 'k': name = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || conf == NULL || listen == NULL || name == NULL)
		usage();
	memset(&fl, 0, sizeof(fl));
	pthread_mutex_init(&fl.lock, NULL);
	pthread_cond_init(&fl.cond, NULL);
	fl.shutdown_tag.kind = TAG_SHUTDOWN;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		fprintf(stderr, "floor: out of memory\n");
		return 1;
	}
	config_defaults(cfg);
	if (config_load(conf, cfg, &st) != 0) {
		fprintf(stderr, "floor: %s\n", st.msg);
		free(cfg);
		return 1;
	}
	/* Every thread, gRPC's too, leaves SIGINT and SIGTERM to sigwait. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (p11_open(&fl.p11, "floor", cfg->hsm_module, cfg->hsm_token,
	    cfg->hsm_pin_file) != 0) {
		free(cfg);
		return 1;
	}
	grpc_init();
	fl.nworkers = cfg->workers;
	if (find_key(&fl, name) != 0)
		goto out;
	if ((fl.workers = calloc(fl.nworkers, sizeof(*fl.workers))) == NULL) {
		fprintf(stderr, "floor: out of memory\n");
		goto out;
	}
	if (floor_start(&fl, cfg, listen, &port) != 0)
		goto out;
	fprintf(stderr, "floor: serving on port %d (%u workers, key %s "
	    "version %u)\n", port, fl.nworkers, name,
	    (unsigned int)fl.version);
	if (sigwait(&sigs, &sig) == 0)
		r = 0;
 out:
	floor_stop(&fl);
	free(fl.workers);
	p11_close(&fl.p11);
	grpc_shutdown();
	pthread_mutex_destroy(&fl.lock);
	pthread_cond_destroy(&fl.cond);
	free(cfg);
	return r;
}
