/*
 * handlers.c: one function per RPC, all of the same shape:
 * decode -> authenticate -> authorize -> (HSM) -> audit -> reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "audit.h"
#include "auditread.h"
#include "config.h"
#include "handlers.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "names.h"
#include "policy.h"
#include "pubkey.h"
#include "secret.h"

#include "kmsb/kmsb.h"

#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"

#define LIST_KEYS_MAX 10000
#define AUDIT_PAGE_DEFAULT 100
#define AUDIT_PAGE_MAX 1000
#define AUDIT_SCAN_MAX 100000	/* records looked at per call, matching or not */
#define ROLES_MAX 32

/* The state of one call as it moves through the handler. */
struct call {
	struct service *svc;
	struct hsm_session *hs;
	const struct rpc_peer *who;
	const char *rpc;
	const char *key;		/* for the audit record */
	uint32_t version;
	uint8_t req_hash[SHA256_DIGEST_LENGTH];
	int have_hash;
	char detail[1024];		/* extra audit members, JSON, or "" */
	struct kms_status st;
};

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

static int
malformed(struct call *c)
{
	return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
	    "malformed request: not a valid %s request message", c->rpc);
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

static int
authorize(struct call *c, enum kms_op op, const char *key)
{
	struct policy_decision d;

	pthread_rwlock_rdlock(&c->svc->policy_lock);
	policy_check(c->svc->policy, c->who->identity, op, key, &d);
	pthread_rwlock_unlock(&c->svc->policy_lock);
	if (!d.allow)
		return kms_status_set(&c->st, KMS_ERR_PERMISSION_DENIED, "%s",
		    d.reason);
	return 0;
}

/*
 * Validates the key name of a request and remembers it for the audit
 * record (only once it is known to be a well-formed name).
 */
static int
check_name(struct call *c, const char *name)
{
	int r;

	if ((r = names_check_key(name, &c->st)) != 0)
		return r;
	c->key = name;
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

/*
 * Audits the call and, when both the call and the audit record succeeded,
 * stores the record's sequence number in *seq_field (if any) and packs the
 * response.  With a waiter from the transport the record is only queued:
 * the transport sends the reply once the record is durable and withholds
 * it when the record is lost.  A failed audit write withholds the result.
 */
static void
finish(struct call *c, const ProtobufCMessage *resp, uint64_t *seq_field,
    struct rpc_reply *out)
{
	struct audit_event ev;
	uint64_t seq = 0;
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
	if (seq_field != NULL)
		*seq_field = seq;
	len = protobuf_c_message_get_packed_size(resp);
	if ((out->body = malloc(len == 0 ? 1 : len)) == NULL) {
		kms_status_set(&out->st, KMS_ERR_NOMEM, "out of memory");
		return;
	}
	out->len = protobuf_c_message_pack(resp, out->body);
	kms_status_clear(&out->st);
}

/*
 * A rotation period as asked for: 0 (none), or between the configured
 * minimum and ten years.
 */
#define ROTATION_PERIOD_MAX (10LL * 366 * 86400)

static int
check_rotation_period(struct call *c, int64_t period)
{
	if (period == 0)
		return 0;
	if (period < 0 || period < c->svc->cfg->keys_min_rotation_period ||
	    period > ROTATION_PERIOD_MAX)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "rotation_period_seconds must be 0 (no scheduled "
		    "rotation) or from %lld to %lld, not %lld",
		    (long long)c->svc->cfg->keys_min_rotation_period,
		    ROTATION_PERIOD_MAX, (long long)period);
	return 0;
}

/* Key metadata as a protobuf message; free with pb_key_clear. */
static int
pb_key_fill(const struct ks_key *k, Kms__V1__Key *m)
{
	size_t i;

	kms__v1__key__init(m);
	m->name = (char *)k->name;
	m->algorithm = (Kms__V1__Algorithm)k->alg->alg;
	m->primary_version = k->primary;
	m->rotation_period_seconds = k->rotation_period;
	m->create_time = k->create_time;
	m->next_rotation_time = k->next_rotation_time;
	if ((m->versions = calloc(k->nversions,
	    sizeof(*m->versions))) == NULL)
		return KMS_ERR_NOMEM;
	for (i = 0; i < k->nversions; i++) {
		if ((m->versions[i] = malloc(sizeof(**m->versions))) == NULL)
			return KMS_ERR_NOMEM;
		m->n_versions++;
		kms__v1__key_version__init(m->versions[i]);
		m->versions[i]->version = k->versions[i].version;
		m->versions[i]->state =
		    (Kms__V1__KeyVersionState)k->versions[i].state;
		m->versions[i]->create_time = k->versions[i].create_time;
		m->versions[i]->destroy_time = k->versions[i].destroy_time;
	}
	return 0;
}

static void
pb_key_clear(Kms__V1__Key *m)
{
	size_t i;

	for (i = 0; i < m->n_versions; i++)
		free(m->versions[i]);
	free(m->versions);
	m->versions = NULL;
	m->n_versions = 0;
}

/* The reply of a call that changed or made key k: its primary version. */
static void
key_reply(struct call *c, const struct ks_key *k, Kms__V1__Key *resp)
{
	c->version = k->primary;
	if (pb_key_fill(k, resp) != 0)
		kms_status_set(&c->st, KMS_ERR_NOMEM, "out of memory");
}

static void
h_create_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__CreateKeyRequest *req = NULL;
	Kms__V1__Key resp;
	const struct kms_alg_info *alg;
	struct ks_key *k = NULL;
	struct call c;

	call_init(&c, svc, hs, who, "CreateKey");
	kms__v1__key__init(&resp);
	if ((req = kms__v1__create_key_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_CREATE_KEY, req->name) != 0)
		goto out;
	if ((alg = kms_alg_lookup(req->algorithm)) == NULL) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT,
		    "unknown algorithm %d: use one of the Algorithm values, "
		    "e.g. EC_P256_SHA256", (int)req->algorithm);
		goto out;
	}
	if (check_rotation_period(&c, req->rotation_period_seconds) != 0)
		goto out;
	if (keystore_create(svc->ks, hs, req->name, alg,
	    req->rotation_period_seconds, &k, &c.st) != 0)
		goto out;
	key_reply(&c, k, &resp);
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	pb_key_clear(&resp);
	ks_key_free(k);
	kms__v1__create_key_request__free_unpacked(req, NULL);
}

static void
h_get_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__GetKeyRequest *req = NULL;
	Kms__V1__Key resp;
	struct ks_key *k = NULL;
	struct call c;

	call_init(&c, svc, hs, who, "GetKey");
	kms__v1__key__init(&resp);
	if ((req = kms__v1__get_key_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_GET_KEY, req->name) != 0 ||
	    keystore_get(svc->ks, req->name, &k, &c.st) != 0)
		goto out;
	if (pb_key_fill(k, &resp) != 0)
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	pb_key_clear(&resp);
	ks_key_free(k);
	kms__v1__get_key_request__free_unpacked(req, NULL);
}

struct visible_ctx {
	const struct policy *policy;
	const char *identity;
};

static int
visible_to(const char *name, void *arg)
{
	struct visible_ctx *v = arg;

	return policy_may_see(v->policy, v->identity, name);
}

static void
h_list_keys(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__ListKeysRequest *req = NULL;
	Kms__V1__ListKeysResponse resp;
	Kms__V1__Key *keys = NULL;
	struct visible_ctx vc;
	struct ks_key **list = NULL;
	struct call c;
	size_t i, n = 0;
	int r;

	call_init(&c, svc, hs, who, "ListKeys");
	kms__v1__list_keys_response__init(&resp);
	if ((req = kms__v1__list_keys_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0)
		goto out;
	if (strlen(req->prefix) > KMS_KEY_NAME_MAX) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT,
		    "prefix is longer than %d characters", KMS_KEY_NAME_MAX);
		goto out;
	}
	/* The listing is filtered by the policy: no grant of its own. */
	vc.identity = who->identity;
	pthread_rwlock_rdlock(&svc->policy_lock);
	vc.policy = svc->policy;
	r = keystore_list(svc->ks, req->prefix, visible_to, &vc,
	    LIST_KEYS_MAX, &list, &n);
	pthread_rwlock_unlock(&svc->policy_lock);
	if (r != 0) {
		kms_status_set(&c.st, r, "cannot list keys: %s",
		    kms_strerror(r));
		goto out;
	}
	if (n > 0 && ((keys = calloc(n, sizeof(*keys))) == NULL ||
	    (resp.keys = calloc(n, sizeof(*resp.keys))) == NULL)) {
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		resp.keys[i] = &keys[i];
		resp.n_keys++;
		if (pb_key_fill(list[i], &keys[i]) != 0) {
			kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	for (i = 0; i < resp.n_keys; i++)
		pb_key_clear(&keys[i]);
	free(keys);
	free(resp.keys);
	for (i = 0; i < n; i++)
		ks_key_free(list[i]);
	free(list);
	kms__v1__list_keys_request__free_unpacked(req, NULL);
}

static void
h_get_public_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__GetPublicKeyRequest *req = NULL;
	Kms__V1__PublicKey resp;
	const struct kms_alg_info *alg;
	uint8_t *der = NULL;
	char *pem = NULL;
	size_t derlen;
	struct call c;

	call_init(&c, svc, hs, who, "GetPublicKey");
	kms__v1__public_key__init(&resp);
	if ((req = kms__v1__get_public_key_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_GET_PUBLIC_KEY, req->name) != 0 ||
	    keystore_resolve(svc->ks, req->name, req->version,
	    &alg, &c.version, &c.st) != 0 ||
	    keystore_public_key(svc->ks, hs, req->name, c.version, &der,
	    &derlen, &c.st) != 0)
		goto out;
	if (pubkey_pem(der, derlen, &pem) != 0) {
		kms_status_set(&c.st, KMS_ERR_INTERNAL,
		    "cannot encode the public key");
		goto out;
	}
	resp.pem = pem;
	resp.algorithm = (Kms__V1__Algorithm)alg->alg;
	resp.version = c.version;
	resp.name = req->name;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	free(pem);
	free(der);
	kms__v1__get_public_key_request__free_unpacked(req, NULL);
}

/*
 * Turns a Sign or Verify request's digest or data into what the HSM
 * signs: the digest as given, the hash of data, or data itself (Ed25519,
 * RSA_RAW).  Records the SHA-256 of the caller's input for the audit log.
 * *in points into the request or into md (at least 64 bytes).
 */
static int
signing_input(struct call *c, const struct kms_alg_info *alg,
    const ProtobufCBinaryData *digest, const ProtobufCBinaryData *data,
    uint8_t *md, const uint8_t **in, size_t *inlen)
{
	const ProtobufCBinaryData *given;
	int r;

	if ((r = names_check_sign_input(alg, digest->len, data->len,
	    c->svc->cfg->max_data_bytes, &c->st)) != 0)
		return r;
	given = digest->len > 0 ? digest : data;
	SHA256(given->data, given->len, c->req_hash);
	c->have_hash = 1;
	if (given == data && alg->hash != KMS_HASH_NONE) {
		if ((r = pubkey_hash(alg->hash, data->data, data->len,
		    md)) != 0)
			return kms_status_set(&c->st, r, "cannot hash data");
		*in = md;
		*inlen = kms_hash_len(alg->hash);
		return 0;
	}
	*in = given->data;
	*inlen = given->len;
	return 0;
}

static void
h_sign(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__SignRequest *req = NULL;
	Kms__V1__SignResponse resp;
	const struct kms_alg_info *alg;
	uint8_t md[64], sig[HSM_SIG_MAX];
	const uint8_t *in;
	size_t inlen, siglen = sizeof(sig);
	struct call c;

	call_init(&c, svc, hs, who, "Sign");
	kms__v1__sign_response__init(&resp);
	if ((req = kms__v1__sign_request__unpack(NULL, len, body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_SIGN, req->name) != 0 ||
	    keystore_resolve(svc->ks, req->name, req->version, &alg,
	    &c.version, &c.st) != 0 ||
	    signing_input(&c, alg, &req->digest, &req->data, md, &in,
	    &inlen) != 0 ||
	    keystore_sign(svc->ks, hs, req->name, c.version, in, inlen, sig,
	    &siglen, &c.st) != 0)
		goto out;
	resp.signature.data = sig;
	resp.signature.len = siglen;
	resp.version = c.version;
	resp.algorithm = (Kms__V1__Algorithm)alg->alg;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	kms__v1__sign_request__free_unpacked(req, NULL);
}

#define DATA_KEY_DEFAULT 32
#define DATA_KEY_MAX 1024

static void
hash_input(struct call *c, const uint8_t *p, size_t len)
{
	SHA256(p, len, c->req_hash);
	c->have_hash = 1;
}

/*
 * SignBundleManifest: the server-side guard of OTA bundles.  kms reads
 * the manifest before it signs: the caller needs the SignBundleManifest
 * grant on the key and on "bundles/APP/CHANNEL"; the manifest must name
 * the signing key's own key id and not be expired; its sequence number
 * must be above the last one signed for that app and channel (a counter
 * on the token, shared by every instance; advanced before signing, so a
 * failed signature burns the number, never reuses it); and the audit
 * record says which update was signed.
 */
#define BUNDLE_SEQ_MAX_STEP (1ULL << 32)
#define BUNDLE_RESOURCE "bundles/"

/* A manifest string (length-prefixed) as a C string, if it may name a grant. */
static int
bundle_name(struct call *c, const char *what, const char *p, size_t len,
    char *out, size_t cap)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') ||
		    (p[i] >= 'A' && p[i] <= 'Z') ||
		    (p[i] >= '0' && p[i] <= '9') || p[i] == '.' ||
		    p[i] == '_' || p[i] == '-'))
			return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
			    "the manifest's %s may hold only letters, digits, "
			    "'.', '_' and '-' (kms grants apps and channels by "
			    "name)", what);
	if (len == 0 || len >= cap)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "the manifest's %s is empty or too long", what);
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

/* The kmsb key id of a version's public key: SHA-256(alg || raw key). */
static int
bundle_key_id(struct call *c, const struct kms_alg_info *alg,
    const char *name, uint8_t *kalg, uint8_t id[SHA256_DIGEST_LENGTH])
{
	uint8_t *der = NULL, raw[1 + 65];
	const unsigned char *p;
	EVP_PKEY *pk = NULL;
	size_t derlen, rawlen = 0;
	int r;

	if (alg->alg == KMS_ALG_ED25519)
		*kalg = KMSB_SIG_ED25519;
	else if (alg->alg == KMS_ALG_EC_P256_SHA256)
		*kalg = KMSB_SIG_P256_SHA256;
	else
		return kms_status_set(&c->st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key: bundle manifests are signed "
		    "with ED25519 or EC_P256_SHA256 keys", name, alg->name);
	if ((r = keystore_public_key(c->svc->ks, c->hs, name, c->version,
	    &der, &derlen, &c->st)) != 0)
		return r;
	p = der;
	raw[0] = *kalg;
	if ((pk = d2i_PUBKEY(NULL, &p, (long)derlen)) == NULL ||
	    (*kalg == KMSB_SIG_ED25519 && ((rawlen = 32),
	    EVP_PKEY_get_raw_public_key(pk, raw + 1, &rawlen) != 1 ||
	    rawlen != 32)) ||
	    (*kalg == KMSB_SIG_P256_SHA256 &&
	    (EVP_PKEY_get_octet_string_param(pk,
	    OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, raw + 1, 65, &rawlen) != 1 ||
	    rawlen != 65)))
		r = kms_status_set(&c->st, KMS_ERR_INTERNAL,
		    "cannot read the public key of key \"%s\"", name);
	else
		SHA256(raw, 1 + rawlen, id);
	EVP_PKEY_free(pk);
	free(der);
	return r;
}

static void
h_sign_bundle_manifest(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	static const char dom[] = KMSB_MANIFEST_DOMAIN;	/* with its NUL */
	Kms__V1__SignBundleManifestRequest *req = NULL;
	Kms__V1__SignBundleManifestResponse resp;
	const struct kms_alg_info *alg;
	struct kmsb_manifest m;
	uint8_t kid[SHA256_DIGEST_LENGTH], md[SHA256_DIGEST_LENGTH];
	uint8_t sig[HSM_SIG_MAX], *msg = NULL, kalg = 0;
	char app[KMSB_STR_MAX + 1], channel[KMSB_STR_MAX + 1];
	char version[KMSB_STR_MAX + 1], counter[2 * KMSB_STR_MAX + 2];
	char resource[sizeof(BUNDLE_RESOURCE) + sizeof(counter)];
	char hex[2 * SHA256_DIGEST_LENGTH + 1];
	const uint8_t *in;
	size_t inlen, siglen = sizeof(sig), i;
	uint64_t last = 0;
	json_t *d = NULL;
	char *dtext = NULL;
	struct call c;

	call_init(&c, svc, hs, who, "SignBundleManifest");
	kms__v1__sign_bundle_manifest_response__init(&resp);
	if ((req = kms__v1__sign_bundle_manifest_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (req->manifest.len > 0)
		hash_input(&c, req->manifest.data, req->manifest.len);
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_SIGN_BUNDLE_MANIFEST, req->name) != 0)
		goto out;
	if (req->manifest.len > KMSB_MANIFEST_MAX ||
	    kmsb_manifest_parse(req->manifest.data, req->manifest.len,
	    &m) != KMSB_OK) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "not a kms "
		    "bundle manifest (see docs/bundle-format.md): bad magic, "
		    "version, suite, bound or length");
		goto out;
	}
	if (bundle_name(&c, "app id", m.app_id, m.app_id_len, app,
	    sizeof(app)) != 0 || bundle_name(&c, "channel", m.channel,
	    m.channel_len, channel, sizeof(channel)) != 0)
		goto out;
	memcpy(version, m.version, m.version_len);
	version[m.version_len] = '\0';
	snprintf(counter, sizeof(counter), "%s/%s", app, channel);
	snprintf(resource, sizeof(resource), BUNDLE_RESOURCE "%s", counter);
	/* The update, for the audit record, whatever happens next. */
	for (i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", c.req_hash[i]);
	if ((d = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "app", app,
	    "channel", channel, "version", version, "seq",
	    (json_int_t)(m.seq & INT64_MAX), "payload_size",
	    (json_int_t)(m.payload_size & INT64_MAX), "expires",
	    (json_int_t)(m.expires & INT64_MAX), "manifest_sha256", hex)) ==
	    NULL || (dtext = json_dumps(d, JSON_COMPACT)) == NULL ||
	    strlen(dtext) >= sizeof(c.detail)) {
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(c.detail, dtext);
	if (authorize(&c, KMS_OP_SIGN_BUNDLE_MANIFEST, resource) != 0 ||
	    keystore_resolve(svc->ks, req->name, req->version, &alg,
	    &c.version, &c.st) != 0 ||
	    bundle_key_id(&c, alg, req->name, &kalg, kid) != 0)
		goto out;
	if (m.sig_alg != kalg || CRYPTO_memcmp(m.signing_key_id, kid,
	    sizeof(kid)) != 0) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "the manifest "
		    "names another signing key than version %u of key \"%s\"",
		    c.version, req->name);
		goto out;
	}
	if (m.expires <= (uint64_t)time(NULL)) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "the manifest "
		    "has expired already");
		goto out;
	}
	if (m.seq > INT64_MAX) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "sequence "
		    "number too large");
		goto out;
	}
	if ((msg = malloc(sizeof(dom) + req->manifest.len)) == NULL) {
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	memcpy(msg, dom, sizeof(dom));
	memcpy(msg + sizeof(dom), req->manifest.data, req->manifest.len);
	inlen = sizeof(dom) + req->manifest.len;
	in = msg;
	if (alg->hash == KMS_HASH_SHA256) {
		SHA256(msg, inlen, md);
		in = md;
		inlen = sizeof(md);
	}
	if (keystore_counter_advance(svc->ks, hs, counter, m.seq,
	    BUNDLE_SEQ_MAX_STEP, &last, &c.st) != 0 ||
	    keystore_sign(svc->ks, hs, req->name, c.version, in, inlen, sig,
	    &siglen, &c.st) != 0)
		goto out;
	resp.signature.data = sig;
	resp.signature.len = siglen;
	resp.version = c.version;
	resp.algorithm = (Kms__V1__Algorithm)alg->alg;
	resp.app_id = app;
	resp.channel = channel;
	resp.bundle_version = version;
	resp.sequence = m.seq;
	resp.previous_sequence = last;
	resp.manifest_sha256.data = c.req_hash;
	resp.manifest_sha256.len = SHA256_DIGEST_LENGTH;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	free(msg);
	free(dtext);
	json_decref(d);
	kms__v1__sign_bundle_manifest_request__free_unpacked(req, NULL);
}


/* Checks that key name is a wrapping key and resolves its version. */
static int
resolve_wrap_key(struct call *c, const char *name, uint32_t version)
{
	const struct kms_alg_info *alg;
	int r;

	if ((r = keystore_resolve(c->svc->ks, name, version,
	    &alg, &c->version, &c->st)) != 0)
		return r;
	if (!alg->can_wrap)
		return kms_status_set(&c->st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key and cannot wrap: use an "
		    "AES_256_KWP key", name, alg->name);
	return 0;
}

static void
h_wrap(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__WrapRequest *req = NULL;
	Kms__V1__WrapResponse resp;
	uint8_t *blob = NULL;
	size_t bloblen = 0;
	struct call c;

	call_init(&c, svc, hs, who, "Wrap");
	kms__v1__wrap_response__init(&resp);
	if ((req = kms__v1__wrap_request__unpack(NULL, len, body)) == NULL) {
		malformed(&c);
		goto out;
	}
	/*
	 * No request_sha256 for Wrap: an unsalted hash of a short
	 * plaintext would let anyone who reads the log guess it.
	 */
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_WRAP, req->name) != 0 ||
	    resolve_wrap_key(&c, req->name, 0) != 0 ||
	    keystore_wrap(svc->ks, hs, req->name, c.version,
	    req->plaintext.data, req->plaintext.len, &blob, &bloblen,
	    &c.st) != 0)
		goto out;
	resp.wrapped.data = blob;
	resp.wrapped.len = bloblen;
	resp.version = c.version;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	free(blob);
	if (req != NULL && req->plaintext.data != NULL)
		OPENSSL_cleanse(req->plaintext.data, req->plaintext.len);
	kms__v1__wrap_request__free_unpacked(req, NULL);
}

static void
h_unwrap(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__UnwrapRequest *req = NULL;
	Kms__V1__UnwrapResponse resp;
	struct secret *plain = NULL;
	uint32_t version;
	struct call c;

	call_init(&c, svc, hs, who, "Unwrap");
	kms__v1__unwrap_response__init(&resp);
	if ((req = kms__v1__unwrap_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (req->wrapped.len > 0)
		hash_input(&c, req->wrapped.data, req->wrapped.len);
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_UNWRAP, req->name) != 0 ||
	    resolve_wrap_key(&c, req->name, 0) != 0 ||
	    keystore_blob_version(req->wrapped.data, req->wrapped.len,
	    &version, &c.st) != 0)
		goto out;
	/* The key exists: a version it lacks means a tampered blob. */
	if (resolve_wrap_key(&c, req->name, version) != 0) {
		if (c.st.err == KMS_ERR_NOT_FOUND)
			kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "the "
			    "wrapped blob names version %u, which key \"%s\" "
			    "does not have: it was changed or made with another "
			    "key", version, req->name);
		goto out;
	}
	if (keystore_unwrap(svc->ks, hs, req->name, req->wrapped.data,
	    req->wrapped.len, &plain, &c.st) != 0)
		goto out;
	resp.plaintext.data = plain->buf;
	resp.plaintext.len = plain->len;
	resp.version = c.version;
 out:
	/* The packed reply is wiped by the transport after sending. */
	finish(&c, &resp.base, &resp.audit_seq, out);
	secret_free(plain);
	kms__v1__unwrap_request__free_unpacked(req, NULL);
}

static void
h_generate_data_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__GenerateDataKeyRequest *req = NULL;
	Kms__V1__GenerateDataKeyResponse resp;
	struct secret *key = NULL;
	uint8_t *blob = NULL;
	size_t bloblen = 0, n;
	struct call c;
	int r;

	call_init(&c, svc, hs, who, "GenerateDataKey");
	kms__v1__generate_data_key_response__init(&resp);
	if ((req = kms__v1__generate_data_key_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	n = req->length == 0 ? DATA_KEY_DEFAULT : req->length;
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_GENERATE_DATA_KEY, req->name) != 0 ||
	    resolve_wrap_key(&c, req->name, 0) != 0)
		goto out;
	if (n > DATA_KEY_MAX) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT, "length must "
		    "be 1 to %d bytes", DATA_KEY_MAX);
		goto out;
	}
	/* The data key comes from the token's generator. */
	if ((key = secret_new(n)) == NULL) {
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hsm_random(hs, key->buf, n)) != 0) {
		kms_status_set(&c.st, r, "the HSM could not make random "
		    "bytes: %s", kms_strerror(r));
		goto out;
	}
	if (keystore_wrap(svc->ks, hs, req->name, c.version, key->buf, n,
	    &blob, &bloblen, &c.st) != 0)
		goto out;
	hash_input(&c, blob, bloblen);
	resp.plaintext.data = key->buf;
	resp.plaintext.len = n;
	resp.wrapped.data = blob;
	resp.wrapped.len = bloblen;
	resp.version = c.version;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	secret_free(key);
	free(blob);
	kms__v1__generate_data_key_request__free_unpacked(req, NULL);
}

static void
h_verify(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__VerifyRequest *req = NULL;
	Kms__V1__VerifyResponse resp;
	const struct kms_alg_info *alg;
	uint8_t md[64], *der = NULL;
	const uint8_t *in;
	size_t inlen, derlen;
	struct call c;
	int valid = 0;

	call_init(&c, svc, hs, who, "Verify");
	kms__v1__verify_response__init(&resp);
	if ((req = kms__v1__verify_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_VERIFY, req->name) != 0 ||
	    keystore_resolve(svc->ks, req->name, req->version,
	    &alg, &c.version, &c.st) != 0 ||
	    signing_input(&c, alg, &req->digest, &req->data, md, &in,
	    &inlen) != 0 ||
	    keystore_public_key(svc->ks, hs, req->name, c.version, &der,
	    &derlen, &c.st) != 0)
		goto out;
	if (req->signature.len == 0 || req->signature.len > HSM_SIG_MAX) {
		kms_status_set(&c.st, KMS_ERR_INVALID_ARGUMENT,
		    "signature must be 1 to %d bytes", HSM_SIG_MAX);
		goto out;
	}
	if (pubkey_verify(alg, der, derlen, in, inlen, req->signature.data,
	    req->signature.len, &valid) != 0) {
		kms_status_set(&c.st, KMS_ERR_INTERNAL,
		    "cannot check the signature");
		goto out;
	}
	resp.valid = valid;
	resp.version = c.version;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	free(der);
	kms__v1__verify_request__free_unpacked(req, NULL);
}

static void
h_whoami(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__WhoAmIRequest *req = NULL;
	Kms__V1__WhoAmIResponse resp;
	const char *roles[ROLES_MAX];
	struct call c;
	size_t n;

	call_init(&c, svc, hs, who, "WhoAmI");
	kms__v1__who_am_iresponse__init(&resp);
	if ((req = kms__v1__who_am_irequest__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0)
		goto out;
	/* The role names point into the policy: build the reply under the lock. */
	pthread_rwlock_rdlock(&svc->policy_lock);
	n = policy_roles(svc->policy, who->identity, roles, ROLES_MAX);
	resp.identity = (char *)who->identity;
	resp.fingerprint = (char *)(who->fingerprint == NULL ? "" :
	    who->fingerprint);
	resp.roles = (char **)roles;
	resp.n_roles = n < ROLES_MAX ? n : ROLES_MAX;
	finish(&c, &resp.base, NULL, out);
	pthread_rwlock_unlock(&svc->policy_lock);
	kms__v1__who_am_irequest__free_unpacked(req, NULL);
	return;
 out:
	finish(&c, &resp.base, NULL, out);
	kms__v1__who_am_irequest__free_unpacked(req, NULL);
}

/* Collects the records of one ListAuditRecords page. */
struct audit_page {
	Kms__V1__AuditRecord **recs;
	size_t n, cap;
};

static char *
dup_or_empty(const char *s)
{
	return strdup(s == NULL ? "" : s);
}

static void
audit_page_free(struct audit_page *p)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		Kms__V1__AuditRecord *r = p->recs[i];

		free(r->time);
		free(r->identity);
		free(r->rpc);
		free(r->key);
		free(r->result);
		free(r->reason);
		free(r->peer);
		free(r->fingerprint);
		free(r->request_sha256);
		free(r->status);
		free(r->chain);
		free(r->json);
		free(r);
	}
	free(p->recs);
}

static int
audit_page_add(const struct audit_record *rec, void *arg)
{
	struct audit_page *p = arg;
	Kms__V1__AuditRecord *m;

	if (p->n == p->cap)
		return KMS_ERR_INTERNAL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return KMS_ERR_NOMEM;
	kms__v1__audit_record__init(m);
	p->recs[p->n++] = m;
	m->seq = rec->seq;
	m->version = rec->version;
	if ((m->time = dup_or_empty(rec->time)) == NULL ||
	    (m->identity = dup_or_empty(rec->identity)) == NULL ||
	    (m->rpc = dup_or_empty(rec->rpc)) == NULL ||
	    (m->key = dup_or_empty(rec->key)) == NULL ||
	    (m->result = dup_or_empty(rec->result)) == NULL ||
	    (m->reason = dup_or_empty(rec->reason)) == NULL ||
	    (m->peer = dup_or_empty(rec->peer)) == NULL ||
	    (m->fingerprint = dup_or_empty(rec->fingerprint)) == NULL ||
	    (m->request_sha256 = dup_or_empty(rec->request_sha256)) == NULL ||
	    (m->status = dup_or_empty(rec->status)) == NULL ||
	    (m->chain = dup_or_empty(rec->chain)) == NULL ||
	    (m->json = dup_or_empty(rec->line)) == NULL)
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

static void
h_list_audit_records(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__ListAuditRecordsRequest *req = NULL;
	Kms__V1__ListAuditRecordsResponse resp;
	struct audit_filter f;
	struct audit_page page;
	const char *chain;
	char dir[CONFIG_PATH_MAX + 256];
	uint64_t next = 0;
	size_t limit;
	struct call c;

	call_init(&c, svc, hs, who, "ListAuditRecords");
	kms__v1__list_audit_records_response__init(&resp);
	memset(&page, 0, sizeof(page));
	if ((req = kms__v1__list_audit_records_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 ||
	    authorize(&c, KMS_OP_LIST_AUDIT_RECORDS, "") != 0)
		goto out;
	chain = req->chain[0] != '\0' ? req->chain :
	    audit_chain_name(svc->audit);
	if (check_chain(&c, chain) != 0)
		goto out;
	limit = req->limit == 0 ? AUDIT_PAGE_DEFAULT : req->limit;
	if (limit > AUDIT_PAGE_MAX)
		limit = AUDIT_PAGE_MAX;
	if ((page.recs = calloc(limit, sizeof(*page.recs))) == NULL) {
		kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
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
	resp.last_seq = strcmp(chain, audit_chain_name(svc->audit)) == 0 ?
	    audit_last_seq(svc->audit) : 0;
	snprintf(dir, sizeof(dir), "%s/%s", svc->cfg->audit_dir, chain);
	if (audit_list(dir, req->after_seq, limit, AUDIT_SCAN_MAX, &f,
	    audit_page_add, &page, &next, &c.st) != 0) {
		if (c.st.err == 0)
			kms_status_set(&c.st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	resp.records = page.recs;
	resp.n_records = page.n;
	resp.next_after_seq = next;
	resp.chain = (char *)audit_chain_name(svc->audit);
	if (audit_key_pem(svc->audit) != NULL)
		resp.audit_key_pem = (char *)audit_key_pem(svc->audit);
 out:
	finish(&c, &resp.base, NULL, out);
	audit_page_free(&page);
	kms__v1__list_audit_records_request__free_unpacked(req, NULL);
}

static void
h_health_check(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Grpc__Health__V1__HealthCheckRequest *req = NULL;
	Grpc__Health__V1__HealthCheckResponse resp;
	struct call c;

	call_init(&c, svc, hs, who, "Health/Check");
	grpc__health__v1__health_check_response__init(&resp);
	if ((req = grpc__health__v1__health_check_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (req->service[0] != '\0' &&
	    strcmp(req->service, "kms.v1.KeyManagementService") != 0) {
		kms_status_set(&c.st, KMS_ERR_NOT_FOUND,
		    "unknown service \"%.128s\"", req->service);
		goto out;
	}
	resp.status =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
 out:
	finish(&c, &resp.base, NULL, out);
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
}

static void
h_rotate_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__RotateKeyRequest *req = NULL;
	Kms__V1__Key resp;
	struct ks_key *k = NULL;
	struct call c;

	call_init(&c, svc, hs, who, "RotateKey");
	kms__v1__key__init(&resp);
	if ((req = kms__v1__rotate_key_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_ROTATE_KEY, req->name) != 0 ||
	    keystore_rotate(svc->ks, hs, req->name, &k, &c.st) != 0)
		goto out;
	key_reply(&c, k, &resp);
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	pb_key_clear(&resp);
	ks_key_free(k);
	kms__v1__rotate_key_request__free_unpacked(req, NULL);
}

static void
h_set_version_state(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__SetVersionStateRequest *req = NULL;
	Kms__V1__KeyVersion resp;
	struct ks_version v;
	struct call c;

	call_init(&c, svc, hs, who, "SetVersionState");
	kms__v1__key_version__init(&resp);
	if ((req = kms__v1__set_version_state_request__unpack(NULL, len,
	    body)) == NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_SET_VERSION_STATE, req->name) != 0)
		goto out;
	c.version = req->version;
	snprintf(c.detail, sizeof(c.detail), "{\"state\":\"%s\"}",
	    kms_state_name(req->state));
	if (keystore_set_state(svc->ks, hs, req->name, req->version,
	    (enum ks_state)req->state, svc->cfg->keys_destroy_wait, &v,
	    &c.st) != 0)
		goto out;
	resp.version = v.version;
	resp.state = (Kms__V1__KeyVersionState)v.state;
	resp.create_time = v.create_time;
	resp.destroy_time = v.destroy_time;
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	kms__v1__set_version_state_request__free_unpacked(req, NULL);
}

static void
h_update_key(struct service *svc, struct hsm_session *hs,
    const struct rpc_peer *who, const uint8_t *body, size_t len,
    struct rpc_reply *out)
{
	Kms__V1__UpdateKeyRequest *req = NULL;
	Kms__V1__Key resp;
	struct ks_key *k = NULL;
	struct call c;

	call_init(&c, svc, hs, who, "UpdateKey");
	kms__v1__key__init(&resp);
	if ((req = kms__v1__update_key_request__unpack(NULL, len, body)) ==
	    NULL) {
		malformed(&c);
		goto out;
	}
	if (authenticate(&c) != 0 || check_name(&c, req->name) != 0 ||
	    authorize(&c, KMS_OP_UPDATE_KEY, req->name) != 0 ||
	    check_rotation_period(&c, req->rotation_period_seconds) != 0)
		goto out;
	snprintf(c.detail, sizeof(c.detail), "{\"rotation_period\":%lld}",
	    (long long)req->rotation_period_seconds);
	if (keystore_set_rotation_period(svc->ks, hs, req->name,
	    req->rotation_period_seconds, &k, &c.st) != 0)
		goto out;
	key_reply(&c, k, &resp);
 out:
	finish(&c, &resp.base, &resp.audit_seq, out);
	pb_key_clear(&resp);
	ks_key_free(k);
	kms__v1__update_key_request__free_unpacked(req, NULL);
}

/* Audits what the scheduler did, under the service's own identity. */
static void
maintain_event(void *arg, enum ks_event what, const char *name,
    uint32_t version, int err, const struct kms_status *st)
{
	struct service *svc = arg;
	struct rpc_peer who = { SERVICE_IDENTITY, "", "internal", NULL };
	struct rpc_reply out;
	struct call c;
	char esc[160];

	memset(&out, 0, sizeof(out));
	call_init(&c, svc, NULL, &who, what == KS_EVENT_ROTATED ?
	    "ScheduledRotation" : "ScheduledDestroy");
	c.key = name;
	c.version = version;
	c.st = *st;
	if (err != 0)
		log_error("keystore: %s of \"%s\" failed: %s", c.rpc,
		    log_escape(name, esc, sizeof(esc)), st->msg);
	else
		log_info("keystore: %s of \"%s\": version %u", c.rpc,
		    log_escape(name, esc, sizeof(esc)), version);
	finish(&c, NULL, NULL, &out);
	if (out.st.err != 0)
		log_error("audit: the record of %s of \"%s\" version %u could "
		    "not be written: %s", c.rpc, esc, version, out.st.msg);
	free(out.body);
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
	keystore_maintain(svc->ks, hs, (int64_t)time(NULL), maintain_event,
	    svc);
}

void
service_audit_unimplemented(struct service *svc, const struct rpc_peer *who,
    const char *method)
{
	struct rpc_reply out;
	struct call c;
	char esc[160];

	memset(&out, 0, sizeof(out));
	call_init(&c, svc, NULL, who, "Unimplemented");
	kms_status_set(&c.st, KMS_ERR_UNIMPLEMENTED, "unknown method %s",
	    log_escape(method, esc, sizeof(esc)));
	finish(&c, NULL, NULL, &out);
	free(out.body);
}

#define KMS_PATH(m) "/kms.v1.KeyManagementService/" m

const struct handler_def handler_table[] = {
	{ KMS_PATH("CreateKey"), "CreateKey", h_create_key },
	{ KMS_PATH("GetKey"), "GetKey", h_get_key },
	{ KMS_PATH("ListKeys"), "ListKeys", h_list_keys },
	{ KMS_PATH("GetPublicKey"), "GetPublicKey", h_get_public_key },
	{ KMS_PATH("Sign"), "Sign", h_sign },
	{ KMS_PATH("Verify"), "Verify", h_verify },
	{ KMS_PATH("WhoAmI"), "WhoAmI", h_whoami },
	{ KMS_PATH("ListAuditRecords"), "ListAuditRecords",
	    h_list_audit_records },
	{ KMS_PATH("Wrap"), "Wrap", h_wrap },
	{ KMS_PATH("Unwrap"), "Unwrap", h_unwrap },
	{ KMS_PATH("GenerateDataKey"), "GenerateDataKey",
	    h_generate_data_key },
	{ KMS_PATH("RotateKey"), "RotateKey", h_rotate_key },
	{ KMS_PATH("SetVersionState"), "SetVersionState",
	    h_set_version_state },
	{ KMS_PATH("UpdateKey"), "UpdateKey", h_update_key },
	{ KMS_PATH("SignBundleManifest"), "SignBundleManifest",
	    h_sign_bundle_manifest },
	{ "/grpc.health.v1.Health/Check", "Health/Check", h_health_check },
	{ NULL, NULL, NULL }
};

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
