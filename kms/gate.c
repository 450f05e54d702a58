/*
 * gate.c: the one gate every call passes (docs/design.md, "The request
 * path"): bound -> decode -> authenticate -> check the key name ->
 * authorize -> handler -> audit -> pack -> wipe, driven by the method's
 * row in handler_table.  Also the audit records of what happens without
 * a call: unknown methods and the scheduler's rotations and destructions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "audit.h"
#include "auditkey.h"
#include "config.h"
#include "gate.h"
#include "handlers.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "names.h"
#include "policy.h"
#include "store.h"
#include "watch.h"

static void
call_init(struct call *c, struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const char *rpc)
{
	memset(c, 0, sizeof(*c));
	c->svc = svc;
	c->hs = hs;
	c->who = who;
	c->rpc = rpc;
	kms_status_clear(&c->st);
}

int
call_nomem(struct call *c)
{
	return kms_status_set(&c->st, KMS_ERR_NOMEM, "out of memory");
}

void
call_hash(struct call *c, const uint8_t *p, size_t len)
{
	SHA256(p, len, c->req_hash);
	c->have_hash = 1;
}

char *
pb_strdup(const char *s)
{
	return strdup(s == NULL ? "" : s);
}

int
call_authorize(struct call *c, enum kms_op op, const char *resource)
{
	struct policy_decision d;

	pthread_rwlock_rdlock(&c->svc->policy_lock);
	policy_check(c->svc->policy, c->who->identity, op, resource, &d);
	pthread_rwlock_unlock(&c->svc->policy_lock);
	if (!d.allow)
		return kms_status_set(&c->st, KMS_ERR_PERMISSION_DENIED, "%s",
		    d.reason);
	return 0;
}

static int
authenticate(struct call *c)
{
	if (c->who->identity == NULL || c->who->identity[0] == '\0')
		return kms_status_set(&c->st, KMS_ERR_UNAUTHENTICATED, "%s",
		    c->who->refusal != NULL ? c->who->refusal :
		    "no verified client certificate");
	return 0;
}

static const char *
result_of(int err)
{
	if (err == 0)
		return "ok";
	if (err == KMS_ERR_PERMISSION_DENIED || err == KMS_ERR_UNAUTHENTICATED)
		return "denied";
	return "error";
}

/* The field called name of message m, which must be of the type given. */
static void *
pb_field(const ProtobufCMessage *m, const char *name, ProtobufCType type)
{
	const ProtobufCFieldDescriptor *f;

	if (m == NULL || (f = protobuf_c_message_descriptor_get_field_by_name(
	    m->descriptor, name)) == NULL || f->type != type ||
	    f->label == PROTOBUF_C_LABEL_REPEATED)
		return NULL;
	return (char *)m + f->offset;
}

/* Wipes every bytes field of m (the secrets a request or reply holds). */
static void
pb_wipe(ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f;
	ProtobufCBinaryData *b;
	unsigned int i;

	if (m == NULL)
		return;
	for (i = 0; i < m->descriptor->n_fields; i++) {
		f = &m->descriptor->fields[i];
		if (f->type != PROTOBUF_C_TYPE_BYTES ||
		    f->label == PROTOBUF_C_LABEL_REPEATED)
			continue;
		b = (ProtobufCBinaryData *)((char *)m + f->offset);
		if (b->data != NULL)
			OPENSSL_cleanse(b->data, b->len);
	}
}

/*
 * Audits the call and, when both the call and the audit record succeeded,
 * stores the record's sequence number in the response's audit_seq (if it
 * has one) and packs the response.  With a waiter from the transport the
 * record is only queued: the transport sends the reply once the record is
 * durable and withholds it when the record is lost (docs/design.md, "The
 * audit write path").  A failed audit write withholds the result.
 */
static void
finish(struct call *c, ProtobufCMessage *resp, struct rpc_reply *out)
{
	struct audit_event ev;
	uint64_t seq = 0, *seq_field;
	size_t len;
	int r;

	memset(&ev, 0, sizeof(ev));
	ev.identity = c->who->identity;
	ev.fingerprint = c->who->fingerprint;
	ev.peer = c->who->peer;
	ev.rpc = c->rpc;
	ev.key = c->key;
	ev.version = c->version;
	ev.result = result_of(c->st.err);
	ev.status = kms_grpc_code_name(kms_err_grpc_code(c->st.err));
	ev.reason = c->st.err != 0 ? c->st.msg : NULL;
	ev.request_sha256 = c->have_hash ? c->req_hash : NULL;
	ev.detail_json = c->detail[0] != '\0' ? c->detail : NULL;
	if (out->waiter != NULL)
		r = audit_submit(c->svc->audit, &ev, &seq, out->waiter);
	else
		r = audit_append(c->svc->audit, &ev, &seq);
	if (r != 0) {
		kms_status_set(&out->st, KMS_ERR_AUDIT, "the audit log cannot "
		    "be written: the request was refused and no result is "
		    "released");
		return;
	}
	/* From here on the reply waits for its record (out->waiter). */
	out->pending = out->waiter != NULL;
	if (c->st.err != 0) {
		out->st = c->st;
		return;
	}
	if (resp == NULL)	/* a record without a reply (the scheduler) */
		return;
	if ((seq_field = pb_field(resp, "audit_seq",
	    PROTOBUF_C_TYPE_UINT64)) != NULL)
		*seq_field = seq;
	len = protobuf_c_message_get_packed_size(resp);
	if ((out->body = malloc(len == 0 ? 1 : len)) == NULL) {
		kms_status_set(&out->st, KMS_ERR_NOMEM, "out of memory");
		return;
	}
	out->len = protobuf_c_message_pack(resp, out->body);
	kms_status_clear(&out->st);
}

/* The steps before the handler; 0 when it may run. */
static int
admit(struct call *c, const struct handler_def *h, const ProtobufCMessage *req)
{
	const ProtobufCBinaryData *in;
	const char **name = NULL;

	if (h->hashed != NULL && (in = pb_field(req, h->hashed,
	    PROTOBUF_C_TYPE_BYTES)) != NULL && in->len > 0)
		call_hash(c, in->data, in->len);
	if ((h->flags & GATE_NOAUTH) == 0 && authenticate(c) != 0)
		return c->st.err;
	if ((h->flags & GATE_KEYED) != 0) {
		if ((name = pb_field(req, "name",
		    PROTOBUF_C_TYPE_STRING)) == NULL)
			return kms_status_set(&c->st, KMS_ERR_INTERNAL,
			    "%s has no key name field", h->name);
		if (names_check_key(*name, &c->st) != 0)
			return c->st.err;
		/* Audited only once it is known to be a well-formed name. */
		c->key = *name;
	}
	if ((h->flags & (GATE_NOAUTH | GATE_NOGRANT)) == 0 &&
	    call_authorize(c, h->op, name != NULL ? *name : "") != 0)
		return c->st.err;
	return 0;
}

size_t
gate_nmethods(void)
{
	size_t n;

	for (n = 0; handler_table[n].path != NULL; n++)
		;
	return n;
}

const char *
gate_method_path(size_t method)
{
	return handler_table[method].path;
}

void
gate(struct service *svc, struct hsm_session *hs, size_t method,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	const struct handler_def *h = &handler_table[method];
	ProtobufCMessage *req = NULL, *resp = NULL;
	struct call c;

	call_init(&c, svc, hs, who, h->name);
	out->wipe_request = (h->flags & GATE_SECRET_IN) != 0;
	/* The transport bounds messages already; a bound of our own. */
	if (len > svc->cfg->max_message_bytes) {
		kms_status_set(&c.st, KMS_ERR_RESOURCE_EXHAUSTED,
		    "request larger than %zu bytes",
		    (size_t)svc->cfg->max_message_bytes);
		goto out;
	}
	if ((resp = malloc(h->resp->sizeof_message)) == NULL) {
		call_nomem(&c);
		goto out;
	}
	h->resp->message_init(resp);
	if ((req = protobuf_c_message_unpack(h->req, NULL, len,
	    body)) == NULL) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT,
		    "malformed request: not a valid %s request message",
		    h->name);
		goto out;
	}
	if (admit(&c, h, req) != 0)
		goto out;
	if (h->fn(&c, req, resp) != 0 && c.st.err == 0)
		kms_status_set(&c.st, KMS_ERR_INTERNAL, "%s failed", h->name);
 out:
	/* A stream's messages are the watcher's: no reply to pack here. */
	finish(&c, (h->flags & GATE_STREAM) != 0 ? NULL : resp, out);
	if (c.stream != NULL && out->st.err == 0)
		out->stream = c.stream;
	else if (c.stream != NULL)
		watch_drop(c.stream);
	if ((h->flags & GATE_SECRET_OUT) != 0)
		pb_wipe(resp);
	if (resp != NULL)
		protobuf_c_message_free_unpacked(resp, NULL);
	if ((h->flags & GATE_SECRET_IN) != 0)
		pb_wipe(req);
	if (req != NULL)
		protobuf_c_message_free_unpacked(req, NULL);
}

void
gate_audit_unimplemented(struct service *svc, const struct rpc_peer *who,
    const char *method)
{
	struct rpc_reply out;
	struct call c;
	char esc[160];

	memset(&out, 0, sizeof(out));
	call_init(&c, svc, NULL, who, "Unimplemented");
	kms_status_set(&c.st, KMS_ERR_UNIMPLEMENTED, "unknown method %s",
	    log_escape(method, esc, sizeof(esc)));
	finish(&c, NULL, &out);
	free(out.body);
}

int
service_audit_event(struct service *svc, const char *identity,
    const char *rpc, const char *key, uint32_t version, const char *detail,
    const struct kms_status *st)
{
	struct rpc_peer who = { identity, "", "internal", NULL };
	struct rpc_reply out;
	struct call c;

	memset(&out, 0, sizeof(out));
	call_init(&c, svc, NULL, &who, rpc);
	c.key = key;
	c.version = version;
	if (st != NULL)
		c.st = *st;
	if (detail != NULL)
		snprintf(c.detail, sizeof(c.detail), "%s", detail);
	finish(&c, NULL, &out);
	free(out.body);
	return out.st.err == KMS_ERR_AUDIT ? KMS_ERR_AUDIT : 0;
}

/*
 * Audits a scheduled change under the service's own identity, before it
 * takes effect (see ks_event_fn): no record, no change.
 */
static int
maintain_event(void *arg, enum ks_event what, const char *name,
    uint32_t version, int err, const struct kms_status *st)
{
	struct service *svc = arg;
	const char *rpc = what == KS_EVENT_ROTATED ? "ScheduledRotation" :
	    "ScheduledDestroy";
	char esc[160];

	if (err != 0)
		log_error("keystore: %s of \"%s\" failed: %s", rpc,
		    log_escape(name, esc, sizeof(esc)), st->msg);
	else
		log_info("keystore: %s of \"%s\": version %u", rpc,
		    log_escape(name, esc, sizeof(esc)), version);
	if (service_audit_event(svc, SERVICE_IDENTITY, rpc, name, version,
	    NULL, st) != 0) {
		log_error("audit: the record of %s of \"%s\" version %u could "
		    "not be written: scheduled changes wait for the audit log",
		    rpc, esc, version);
		return KMS_ERR_AUDIT;
	}
	return 0;
}

void
service_maintain(struct service *svc, struct hsm_session *hs)
{
	size_t changed = 0;
	int r;

	if ((r = keystore_refresh(svc->ks, hs, &changed)) != 0)
		log_warn("keystore: cannot read key metadata from the token: "
		    "%s", kms_strerror(r));
	else if (changed > 0)
		log_debug("keystore: %zu key documents changed on the token",
		    changed);
	/* One instance of those sharing the store runs them (lead.h). */
	if (!store_leads(keystore_store(svc->ks)))
		return;
	if ((r = keystore_maintain(svc->ks, hs, (int64_t)time(NULL),
	    maintain_event, svc)) != 0)
		log_warn("keystore: scheduled changes incomplete (%s): tried "
		    "again at the next maintenance", kms_strerror(r));
}

int
service_open_audit(struct service *svc, struct store *sto,
    const char *base, const char *new_chain, struct audit_key *akey,
    struct kms_status *st)
{
	const struct config *cfg = svc->cfg;
	struct audit_signer signer;
	char chain[KMS_CHAIN_NAME_MAX + 16];
	int i, r = 0;

	for (i = 1; i <= SERVICE_CHAIN_TRIES; i++) {
		if (i == 1)
			snprintf(chain, sizeof(chain), "%s", base);
		else
			snprintf(chain, sizeof(chain), "%s-%d", base, i);
		audit_key_close(akey);
		if ((r = audit_key_open(svc->hsm, chain, akey, st)) != 0)
			return r;
		/* With etcd, the token holds key objects only. */
		if (sto != NULL && store_etcd_client(sto, NULL) != NULL)
			audit_key_anchor_elsewhere(akey, "etcd",
			    store_etcd_value_get, store_etcd_value_set, sto);
		memset(&signer, 0, sizeof(signer));
		signer.sign = audit_key_sign;
		signer.arg = akey;
		signer.spki = akey->spki;
		signer.spki_len = akey->spki_len;
		signer.every = cfg->audit_checkpoint_every;
		signer.seconds = cfg->audit_checkpoint_seconds;
		signer.mac = audit_key_mac;
		signer.anchor_get = audit_key_anchor_get;
		signer.anchor_set = audit_key_anchor_set;
		signer.new_chain_on_tamper = cfg->audit_new_chain_on_tamper;
		signer.new_chain_reason = new_chain;
		signer.publish_dir = cfg->audit_publish[0] != '\0' ?
		    cfg->audit_publish : NULL;
		if (!cfg->audit_v2) {
			/* The log as it was before v2 (benchmarks only). */
			signer.mac = NULL;
			signer.anchor_get = NULL;
			signer.anchor_set = NULL;
			signer.no_tree = 1;
		}
		r = audit_open(cfg->audit_dir, chain, cfg->audit_segment_bytes,
		    &signer, &svc->audit, st);
		if (r != KMS_ERR_ALREADY_EXISTS)
			break;
		log_info("audit: %s", st->msg);
	}
	if (r != 0)
		return r;
	if (!cfg->audit_v2)
		log_warn("audit: v2 = no: no Merkle tree, batch seals or HSM "
		    "anchor; use this for measurements only");
	if (!cfg->audit_sync) {
		log_warn("audit: sync = no: records are not fsync'd and a "
		    "crash can lose them; use this for measurements only");
		audit_set_sync(svc->audit, 0);
	}
	return 0;
}

int
service_reload_policy(struct service *svc, struct kms_status *st)
{
	struct policy *np = NULL, *old;
	int r;

	if ((r = policy_load(svc->cfg->policy_file, &np, st)) != 0)
		return r;
	pthread_rwlock_wrlock(&svc->policy_lock);
	old = svc->policy;
	svc->policy = np;
	pthread_rwlock_unlock(&svc->policy_lock);
	policy_free(old);
	return 0;
}
