/*
 * h_bundle.c: the handler of SignBundleManifest, the server-side guard of
 * OTA bundles (docs/bundle-format.md).  The gate has checked the caller,
 * the key name and the grant on the key, and hashed the manifest.
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

#include "handlers.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "policy.h"

#include "kmsb/kmsb.h"

#include "kms/v1/kms.pb-c.h"

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

/* The signed update's facts for the audit record, as a JSON object. */
static int
bundle_detail(struct call *c, const struct kmsb_manifest *m, const char *app,
    const char *channel, const char *version)
{
	char hex[2 * SHA256_DIGEST_LENGTH + 1];
	char *dtext = NULL;
	json_t *d;
	size_t i;
	int r = 0;

	for (i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", c->req_hash[i]);
	if ((d = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "app", app,
	    "channel", channel, "version", version, "seq",
	    (json_int_t)(m->seq & INT64_MAX), "payload_size",
	    (json_int_t)(m->payload_size & INT64_MAX), "expires",
	    (json_int_t)(m->expires & INT64_MAX), "manifest_sha256", hex)) ==
	    NULL || (dtext = json_dumps(d, JSON_COMPACT)) == NULL ||
	    strlen(dtext) >= sizeof(c->detail))
		r = call_nomem(c);
	else
		strcpy(c->detail, dtext);
	free(dtext);
	json_decref(d);
	return r;
}

/* What the key signs: the domain, then the manifest; hashed for P-256. */
static int
bundle_sign(struct call *c, const struct kms_alg_info *alg, const char *name,
    const ProtobufCBinaryData *manifest, ProtobufCBinaryData *sig)
{
	static const char dom[] = KMSB_MANIFEST_DOMAIN;	/* with its NUL */
	uint8_t md[SHA256_DIGEST_LENGTH], *msg;
	const uint8_t *in;
	size_t inlen;
	int r;

	if ((msg = malloc(sizeof(dom) + manifest->len)) == NULL ||
	    (sig->data = malloc(HSM_SIG_MAX)) == NULL) {
		free(msg);
		return call_nomem(c);
	}
	sig->len = HSM_SIG_MAX;
	memcpy(msg, dom, sizeof(dom));
	memcpy(msg + sizeof(dom), manifest->data, manifest->len);
	inlen = sizeof(dom) + manifest->len;
	in = msg;
	if (alg->hash == KMS_HASH_SHA256) {
		SHA256(msg, inlen, md);
		in = md;
		inlen = sizeof(md);
	}
	r = keystore_sign(c->svc->ks, c->hs, name, c->version, in, inlen,
	    sig->data, &sig->len, &c->st);
	free(msg);
	return r;
}

int
h_sign_bundle_manifest(struct call *c, const void *rq, void *rs)
{
	const Kms__V1__SignBundleManifestRequest *req = rq;
	Kms__V1__SignBundleManifestResponse *resp = rs;
	const struct kms_alg_info *alg;
	struct kmsb_manifest m;
	uint8_t kid[SHA256_DIGEST_LENGTH], kalg = 0;
	char app[KMSB_STR_MAX + 1], channel[KMSB_STR_MAX + 1];
	char version[KMSB_STR_MAX + 1], counter[2 * KMSB_STR_MAX + 2];
	char resource[sizeof(BUNDLE_RESOURCE) + sizeof(counter)];
	uint64_t last = 0;
	int r;

	if (req->manifest.len > KMSB_MANIFEST_MAX ||
	    kmsb_manifest_parse(req->manifest.data, req->manifest.len,
	    &m) != KMSB_OK)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT, "not a "
		    "kms bundle manifest (see docs/bundle-format.md): bad "
		    "magic, version, suite, bound or length");
	if ((r = bundle_name(c, "app id", m.app_id, m.app_id_len, app,
	    sizeof(app))) != 0 || (r = bundle_name(c, "channel", m.channel,
	    m.channel_len, channel, sizeof(channel))) != 0)
		return r;
	memcpy(version, m.version, m.version_len);
	version[m.version_len] = '\0';
	snprintf(counter, sizeof(counter), "%s/%s", app, channel);
	snprintf(resource, sizeof(resource), BUNDLE_RESOURCE "%s", counter);
	/* The update, for the audit record, whatever happens next. */
	if ((r = bundle_detail(c, &m, app, channel, version)) != 0 ||
	    (r = call_authorize(c, KMS_OP_SIGN_BUNDLE_MANIFEST,
	    resource)) != 0 ||
	    (r = keystore_resolve(c->svc->ks, req->name, req->version, &alg,
	    &c->version, &c->st)) != 0 ||
	    (r = bundle_key_id(c, alg, req->name, &kalg, kid)) != 0)
		return r;
	if (m.sig_alg != kalg || CRYPTO_memcmp(m.signing_key_id, kid,
	    sizeof(kid)) != 0)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "manifest names another signing key than version %u of "
		    "key \"%s\"", c->version, req->name);
	if (m.expires <= (uint64_t)time(NULL))
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "manifest has expired already");
	if (m.seq > INT64_MAX)
		return kms_status_set(&c->st, KMS_ERR_INVALID_ARGUMENT,
		    "sequence number too large");
	if ((r = keystore_counter_advance(c->svc->ks, c->hs, counter, m.seq,
	    BUNDLE_SEQ_MAX_STEP, &last, &c->st)) != 0 ||
	    (r = bundle_sign(c, alg, req->name, &req->manifest,
	    &resp->signature)) != 0)
		return r;
	resp->version = c->version;
	resp->algorithm = (Kms__V1__Algorithm)alg->alg;
	resp->sequence = m.seq;
	resp->previous_sequence = last;
	if ((resp->app_id = strdup(app)) == NULL ||
	    (resp->channel = strdup(channel)) == NULL ||
	    (resp->bundle_version = strdup(version)) == NULL ||
	    (resp->manifest_sha256.data = malloc(SHA256_DIGEST_LENGTH)) == NULL)
		return call_nomem(c);
	memcpy(resp->manifest_sha256.data, c->req_hash, SHA256_DIGEST_LENGTH);
	resp->manifest_sha256.len = SHA256_DIGEST_LENGTH;
	return 0;
}
