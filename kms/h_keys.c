/*
 * h_keys.c: the handlers of key lifecycle and metadata: CreateKey,
 * GetKey, ListKeys, GetPublicKey, RotateKey, SetVersionState, UpdateKey.
 * The gate has checked the caller and the key name (handlers.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "handlers.h"
#include "keystore.h"
#include "kmserr.h"
#include "names.h"
#include "policy.h"
#include "pubkey.h"

#include "kms/v1/kms.pb-c.h"

#define LIST_KEYS_MAX 10000

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

/* Key metadata into m, in memory m owns (the gate frees it). */
static int
pb_key_fill(struct call *c, const struct ks_key *k, Kms__V1__Key *m)
{
	Kms__V1__KeyVersion *v;
	size_t i;

	if ((m->name = strdup(k->name)) == NULL ||
	    (m->versions = calloc(k->nversions == 0 ? 1 : k->nversions,
	    sizeof(*m->versions))) == NULL)
		return call_nomem(c);
	m->algorithm = (Kms__V1__Algorithm)k->alg->alg;
	m->primary_version = k->primary;
	m->rotation_period_seconds = k->rotation_period;
	m->create_time = k->create_time;
	m->next_rotation_time = k->next_rotation_time;
	for (i = 0; i < k->nversions; i++) {
		if ((v = malloc(sizeof(*v))) == NULL)
			return call_nomem(c);
		kms__v1__key_version__init(v);
		m->versions[m->n_versions++] = v;
		v->version = k->versions[i].version;
		v->state = (Kms__V1__KeyVersionState)k->versions[i].state;
		v->create_time = k->versions[i].create_time;
		v->destroy_time = k->versions[i].destroy_time;
		if (k->versions[i].chain != NULL &&
		    (v->cert_chain_pem = strdup(k->versions[i].chain)) ==
		    NULL)
			return call_nomem(c);
	}
	return 0;
}

/* The reply of a call that changed or made key k: its primary version. */
static int
key_reply(struct call *c, struct ks_key *k, Kms__V1__Key *resp)
{
	int r;

	c->version = k->primary;
	r = pb_key_fill(c, k, resp);
	ks_key_free(k);
	return r;
}

int
h_create_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__CreateKeyRequest *req = rq;
	const struct kms_alg_info *alg;
	struct ks_key *k = NULL;
	int r;

	if ((alg = kms_alg_lookup(req->algorithm)) == NULL)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "unknown algorithm %d: use one of the Algorithm values, "
		    "e.g. EC_P256_SHA256", (int)req->algorithm);
	if ((r = check_rotation_period(c, req->rotation_period_seconds)) != 0 ||
	    (r = keystore_create(c->svc->ks, c->hs, req->name, alg,
	    req->rotation_period_seconds, &k, &c->st)) != 0)
		return r;
	return key_reply(c, k, rs);
}

int
h_get_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__GetKeyRequest *req = rq;
	struct ks_key *k = NULL;
	int r;

	if ((r = keystore_get(c->svc->ks, req->name, &k, &c->st)) != 0)
		return r;
	r = pb_key_fill(c, k, rs);
	ks_key_free(k);
	return r;
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

/* The listing is filtered by the policy, key by key (GATE_NOGRANT). */
int
h_list_keys(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__ListKeysRequest *req = rq;
	Kms__V1__ListKeysResponse *resp = rs;
	struct service *svc = c->svc;
	struct ks_key **list = NULL;
	struct visible_ctx vc;
	Kms__V1__Key *m;
	size_t i, n = 0;
	int r;

	if (strlen(req->prefix) > KMS_KEY_NAME_MAX)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "prefix is longer than %d characters", KMS_KEY_NAME_MAX);
	vc.identity = c->who->identity;
	pthread_rwlock_rdlock(&svc->policy_lock);
	vc.policy = svc->policy;
	r = keystore_list(svc->ks, req->prefix, visible_to, &vc,
	    LIST_KEYS_MAX, &list, &n);
	pthread_rwlock_unlock(&svc->policy_lock);
	if (r != 0)
		return kms_status_set(&c->st, r, "cannot list keys: %s",
		    kms_strerror(r));
	if (n > 0 && (resp->keys = calloc(n, sizeof(*resp->keys))) == NULL)
		r = call_nomem(c);
	for (i = 0; r == 0 && i < n; i++) {
		if ((m = malloc(sizeof(*m))) == NULL) {
			r = call_nomem(c);
			break;
		}
		kms__v1__key__init(m);
		resp->keys[resp->n_keys++] = m;
		r = pb_key_fill(c, list[i], m);
	}
	for (i = 0; i < n; i++)
		ks_key_free(list[i]);
	free(list);
	return r;
}

/* A copy of the certificate chain of version of key name, or NULL. */
static int
version_chain(struct call *c, const char *name, uint32_t version,
    char **out)
{
	struct ks_key *k = NULL;
	size_t i;
	int r;

	*out = NULL;
	if ((r = keystore_get(c->svc->ks, name, &k, &c->st)) != 0)
		return r;
	for (i = 0; i < k->nversions; i++)
		if (k->versions[i].version == version &&
		    k->versions[i].chain != NULL &&
		    (*out = strdup(k->versions[i].chain)) == NULL)
			r = call_nomem(c);
	ks_key_free(k);
	return r;
}

int
h_get_public_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__GetPublicKeyRequest *req = rq;
	Kms__V1__PublicKey *resp = rs;
	const struct kms_alg_info *alg;
	uint8_t *der = NULL;
	size_t derlen;
	int r;

	if ((r = keystore_resolve(c->svc->ks, req->name, req->version,
	    &alg, &c->version, &c->st)) != 0 ||
	    (r = keystore_public_key(c->svc->ks, c->hs, req->name,
	    c->version, &der, &derlen, &c->st)) != 0)
		return r;
	if (pubkey_pem(der, derlen, &resp->pem) != 0)
		r = kms_status_set(&c->st, KMS_ERR_INTERNAL,
		    "cannot encode the public key");
	else if ((resp->name = strdup(req->name)) == NULL)
		r = call_nomem(c);
	else
		r = version_chain(c, req->name, c->version,
		    &resp->cert_chain_pem);
	resp->algorithm = (Kms__V1__Algorithm)alg->alg;
	resp->version = c->version;
	free(der);
	return r;
}

/*
 * SetCertificateChain: the leaf must certify the version's own public
 * key, so that a tool finds the key's certificate and no other.
 */
int
h_set_certificate_chain(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__SetCertificateChainRequest *req = rq;
	Kms__V1__KeyVersion *resp = rs;
	const struct kms_alg_info *alg;
	struct ks_version v;
	uint8_t *der = NULL;
	size_t derlen;
	int set = *req->cert_chain_pem != '\0', r;

	if ((r = keystore_resolve(c->svc->ks, req->name, req->version,
	    &alg, &c->version, &c->st)) != 0)
		return r;
	if (set && ((r = keystore_public_key(c->svc->ks, c->hs, req->name,
	    c->version, &der, &derlen, &c->st)) != 0 ||
	    (r = pubkey_chain_check(req->cert_chain_pem, der, derlen,
	    &c->st)) != 0)) {
		free(der);
		return r;
	}
	free(der);
	snprintf(c->detail, sizeof(c->detail), "{\"cert_chain\":\"%s\"}",
	    set ? "set" : "removed");
	if ((r = keystore_set_chain(c->svc->ks, c->hs, req->name,
	    c->version, req->cert_chain_pem, &v, &c->st)) != 0)
		return r;
	resp->version = v.version;
	resp->state = (Kms__V1__KeyVersionState)v.state;
	resp->create_time = v.create_time;
	resp->destroy_time = v.destroy_time;
	if (set && (resp->cert_chain_pem = strdup(req->cert_chain_pem)) ==
	    NULL)
		return call_nomem(c);
	return 0;
}

int
h_rotate_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__RotateKeyRequest *req = rq;
	struct ks_key *k = NULL;
	int r;

	if ((r = keystore_rotate(c->svc->ks, c->hs, req->name, &k,
	    &c->st)) != 0)
		return r;
	return key_reply(c, k, rs);
}

int
h_set_version_state(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__SetVersionStateRequest *req = rq;
	Kms__V1__KeyVersion *resp = rs;
	struct ks_version v;
	int r;

	c->version = req->version;
	snprintf(c->detail, sizeof(c->detail), "{\"state\":\"%s\"}",
	    kms_state_name(req->state));
	if ((r = keystore_set_state(c->svc->ks, c->hs, req->name,
	    req->version, (enum ks_state)req->state,
	    c->svc->cfg->keys_destroy_wait, &v, &c->st)) != 0)
		return r;
	resp->version = v.version;
	resp->state = (Kms__V1__KeyVersionState)v.state;
	resp->create_time = v.create_time;
	resp->destroy_time = v.destroy_time;
	return 0;
}

int
h_update_key(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__UpdateKeyRequest *req = rq;
	struct ks_key *k = NULL;
	int r;

	if ((r = check_rotation_period(c, req->rotation_period_seconds)) != 0)
		return r;
	snprintf(c->detail, sizeof(c->detail), "{\"rotation_period\":%lld}",
	    (long long)req->rotation_period_seconds);
	if ((r = keystore_set_rotation_period(c->svc->ks, c->hs, req->name,
	    req->rotation_period_seconds, &k, &c->st)) != 0)
		return r;
	return key_reply(c, k, rs);
}
