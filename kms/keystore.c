/*
 * keystore.c: key metadata on the token, cached in a hash table.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "secret.h"

#define META_FORMAT 1
#define META_MAX_VERSIONS 100000
#define LABEL_RANDOM_BYTES 8

struct ks_ventry {
	uint32_t version;
	enum ks_state state;
	int64_t create_time;
	int64_t destroy_time;
	char label[HSM_LABEL_MAX];	/* CKA_LABEL of the key objects */
	hsm_handle_t priv;		/* private or secret key; 0 = not looked up */
	hsm_handle_t pub;
	uint8_t *spki;			/* cached DER public key */
	size_t spki_len;
};

struct ks_entry {
	struct ks_entry *next;		/* hash chain */
	char name[KMS_KEY_NAME_MAX + 1];
	const struct kms_alg_info *alg;
	uint32_t primary;
	int64_t rotation_period;
	int64_t create_time;
	hsm_handle_t meta;		/* the CKO_DATA object */
	size_t nv;
	struct ks_ventry *v;
};

struct keystore {
	pthread_rwlock_t lock;		/* the table and every entry */
	pthread_mutex_t create_lock;	/* one creation at a time */
	size_t nbuckets;
	struct ks_entry **buckets;
	size_t count;
};

static const char *const state_names[] = {
	NULL, "ENABLED", "DISABLED", "DESTROY_SCHEDULED", "DESTROYED"
};

static uint64_t
name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static struct ks_entry *
find_locked(struct keystore *ks, const char *name)
{
	struct ks_entry *e;

	for (e = ks->buckets[name_hash(name) % ks->nbuckets]; e != NULL;
	    e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static struct ks_ventry *
version_locked(struct ks_entry *e, uint32_t version)
{
	size_t i;

	for (i = 0; i < e->nv; i++)
		if (e->v[i].version == version)
			return &e->v[i];
	return NULL;
}

static void
entry_free(struct ks_entry *e)
{
	size_t i;

	if (e == NULL)
		return;
	for (i = 0; i < e->nv; i++)
		free(e->v[i].spki);
	free(e->v);
	free(e);
}

/* Grows the table when it is full enough; called with the write lock. */
static int
insert_locked(struct keystore *ks, struct ks_entry *e)
{
	struct ks_entry **nb, *x, *next;
	size_t i, n, b;

	if (ks->count + 1 > ks->nbuckets) {
		n = ks->nbuckets * 2;
		if ((nb = calloc(n, sizeof(*nb))) == NULL)
			return KMS_ERR_NOMEM;
		for (i = 0; i < ks->nbuckets; i++) {
			for (x = ks->buckets[i]; x != NULL; x = next) {
				next = x->next;
				b = name_hash(x->name) % n;
				x->next = nb[b];
				nb[b] = x;
			}
		}
		free(ks->buckets);
		ks->buckets = nb;
		ks->nbuckets = n;
	}
	b = name_hash(e->name) % ks->nbuckets;
	e->next = ks->buckets[b];
	ks->buckets[b] = e;
	ks->count++;
	return 0;
}

/* The metadata document of e. */
static char *
meta_encode(const struct ks_entry *e)
{
	json_t *o = NULL, *vs = NULL, *v;
	char *s = NULL;
	size_t i;

	if ((o = json_object()) == NULL || (vs = json_array()) == NULL)
		goto out;
	for (i = 0; i < e->nv; i++) {
		v = json_pack("{s:I,s:s,s:I,s:I,s:s}",
		    "version", (json_int_t)e->v[i].version,
		    "state", state_names[e->v[i].state],
		    "create_time", (json_int_t)e->v[i].create_time,
		    "destroy_time", (json_int_t)e->v[i].destroy_time,
		    "label", e->v[i].label);
		if (v == NULL || json_array_append_new(vs, v) != 0)
			goto out;
	}
	if (json_object_set_new(o, "format", json_integer(META_FORMAT)) ||
	    json_object_set_new(o, "name", json_string(e->name)) ||
	    json_object_set_new(o, "algorithm", json_string(e->alg->name)) ||
	    json_object_set_new(o, "primary", json_integer(e->primary)) ||
	    json_object_set_new(o, "rotation_period",
	    json_integer(e->rotation_period)) ||
	    json_object_set_new(o, "create_time",
	    json_integer(e->create_time)) ||
	    json_object_set(o, "versions", vs))
		goto out;
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
 out:
	json_decref(vs);
	json_decref(o);
	return s;
}

static enum ks_state
state_parse(const char *s)
{
	int i;

	for (i = KS_STATE_ENABLED; i <= KS_STATE_DESTROYED; i++)
		if (s != NULL && strcmp(s, state_names[i]) == 0)
			return (enum ks_state)i;
	return 0;
}

/* Parses a metadata document; the caller checks the name against the label. */
static int
meta_decode(const char *text, size_t len, struct ks_entry **out,
    struct kms_status *st)
{
	struct ks_entry *e = NULL;
	json_t *o = NULL, *vs, *v;
	json_error_t jerr;
	const char *name, *alg, *state, *label;
	json_int_t format, primary, period, ctime, ver, vctime, dtime;
	size_t i;
	int r = KMS_ERR_CONFIG;

	*out = NULL;
	if ((o = json_loadb(text, len, 0, &jerr)) == NULL) {
		kms_status_set(st, r, "metadata is not JSON: %s", jerr.text);
		goto out;
	}
	if (json_unpack_ex(o, &jerr, 0, "{s:I,s:s,s:s,s:I,s:I,s:I,s:o}",
	    "format", &format, "name", &name, "algorithm", &alg,
	    "primary", &primary, "rotation_period", &period,
	    "create_time", &ctime, "versions", &vs) != 0) {
		kms_status_set(st, r, "metadata: %s", jerr.text);
		goto out;
	}
	if (format != META_FORMAT || !json_is_array(vs) ||
	    json_array_size(vs) == 0 ||
	    json_array_size(vs) > META_MAX_VERSIONS ||
	    strlen(name) > KMS_KEY_NAME_MAX) {
		kms_status_set(st, r, "metadata: unsupported format or size");
		goto out;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->v = calloc(json_array_size(vs), sizeof(*e->v))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(e->name, name);
	if ((e->alg = kms_alg_by_name(alg)) == NULL) {
		kms_status_set(st, r, "metadata: unknown algorithm");
		goto out;
	}
	e->primary = (uint32_t)primary;
	e->rotation_period = period;
	e->create_time = ctime;
	json_array_foreach(vs, i, v) {
		if (json_unpack_ex(v, &jerr, 0, "{s:I,s:s,s:I,s:I,s:s}",
		    "version", &ver, "state", &state, "create_time", &vctime,
		    "destroy_time", &dtime, "label", &label) != 0 ||
		    ver <= 0 || ver > UINT32_MAX ||
		    strlen(label) >= HSM_LABEL_MAX ||
		    (e->v[i].state = state_parse(state)) == 0) {
			kms_status_set(st, r, "metadata: bad version entry");
			goto out;
		}
		e->v[i].version = (uint32_t)ver;
		e->v[i].create_time = vctime;
		e->v[i].destroy_time = dtime;
		strcpy(e->v[i].label, label);
		e->nv++;
	}
	if (version_locked(e, e->primary) == NULL) {
		kms_status_set(st, r, "metadata: primary version missing");
		goto out;
	}
	*out = e;
	e = NULL;
	r = 0;
 out:
	entry_free(e);
	json_decref(o);
	return r;
}

struct load_ctx {
	struct keystore *ks;
	struct hsm_session *s;
	size_t skipped;
	int err;
};

static int
load_one(const char *label, hsm_handle_t h, void *arg)
{
	struct load_ctx *lc = arg;
	struct ks_entry *e = NULL;
	struct kms_status st;
	char esc[160];
	uint8_t *val = NULL;
	size_t len;
	int r;

	if ((r = hsm_data_get(lc->s, h, &val, &len)) != 0) {
		lc->err = r;
		return r;
	}
	r = meta_decode((const char *)val, len, &e, &st);
	if (r == 0 && strcmp(e->name, label) != 0)
		r = kms_status_set(&st, KMS_ERR_CONFIG,
		    "name does not match label");
	if (r != 0) {
		/* A foreign or damaged object must not stop the service. */
		log_warn("keystore: skipping data object \"%s\": %s",
		    log_escape(label, esc, sizeof(esc)), st.msg);
		lc->skipped++;
		entry_free(e);
		free(val);
		return 0;
	}
	free(val);
	e->meta = h;
	if (find_locked(lc->ks, e->name) != NULL) {
		log_warn("keystore: duplicate metadata for \"%s\" ignored",
		    log_escape(label, esc, sizeof(esc)));
		entry_free(e);
		return 0;
	}
	if ((r = insert_locked(lc->ks, e)) != 0) {
		entry_free(e);
		lc->err = r;
		return r;
	}
	return 0;
}

int
keystore_open(struct hsm_session *s, struct keystore **out,
    struct kms_status *st)
{
	struct keystore *ks;
	struct load_ctx lc;
	int r;

	*out = NULL;
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	ks->nbuckets = 1024;
	if ((ks->buckets = calloc(ks->nbuckets, sizeof(*ks->buckets))) ==
	    NULL) {
		free(ks);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	pthread_rwlock_init(&ks->lock, NULL);
	pthread_mutex_init(&ks->create_lock, NULL);
	memset(&lc, 0, sizeof(lc));
	lc.ks = ks;
	lc.s = s;
	/* No other thread sees ks yet: the table needs no lock here. */
	if ((r = hsm_list(s, HSM_OBJ_DATA, load_one, &lc)) != 0) {
		keystore_free(ks);
		return kms_status_set(st, r, "cannot load key metadata from "
		    "the token: %s", kms_strerror(r));
	}
	log_info("keystore: %zu keys loaded, %zu objects skipped",
	    ks->count, lc.skipped);
	*out = ks;
	return 0;
}

void
keystore_free(struct keystore *ks)
{
	struct ks_entry *e, *next;
	size_t i;

	if (ks == NULL)
		return;
	for (i = 0; i < ks->nbuckets; i++) {
		for (e = ks->buckets[i]; e != NULL; e = next) {
			next = e->next;
			entry_free(e);
		}
	}
	free(ks->buckets);
	pthread_rwlock_destroy(&ks->lock);
	pthread_mutex_destroy(&ks->create_lock);
	free(ks);
}

size_t
keystore_count(struct keystore *ks)
{
	size_t n;

	pthread_rwlock_rdlock(&ks->lock);
	n = ks->count;
	pthread_rwlock_unlock(&ks->lock);
	return n;
}

void
ks_key_free(struct ks_key *k)
{
	if (k == NULL)
		return;
	free(k->versions);
	free(k);
}

static struct ks_key *
snapshot_locked(const struct ks_entry *e)
{
	struct ks_key *k;
	size_t i;

	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (k->versions = calloc(e->nv, sizeof(*k->versions))) == NULL) {
		free(k);
		return NULL;
	}
	strcpy(k->name, e->name);
	k->alg = e->alg;
	k->primary = e->primary;
	k->rotation_period = e->rotation_period;
	k->create_time = e->create_time;
	k->nversions = e->nv;
	for (i = 0; i < e->nv; i++) {
		k->versions[i].version = e->v[i].version;
		k->versions[i].state = e->v[i].state;
		k->versions[i].create_time = e->v[i].create_time;
		k->versions[i].destroy_time = e->v[i].destroy_time;
	}
	return k;
}

static int
not_found(struct kms_status *st, const char *name)
{
	return kms_status_set(st, KMS_ERR_NOT_FOUND, "key \"%s\" not found",
	    name);
}

int
keystore_create(struct keystore *ks, struct hsm_session *s,
    const char *name, const struct kms_alg_info *alg,
    int64_t rotation_period, struct ks_key **out, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	uint8_t rnd[LABEL_RANDOM_BYTES];
	hsm_handle_t priv = 0, pub = 0, meta = 0;
	char *doc = NULL;
	size_t i;
	int r, exists;

	*out = NULL;
	pthread_mutex_lock(&ks->create_lock);
	pthread_rwlock_rdlock(&ks->lock);
	exists = find_locked(ks, name) != NULL;
	pthread_rwlock_unlock(&ks->lock);
	if (exists || hsm_find(s, HSM_OBJ_DATA, name, &meta) == 0) {
		r = kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
		    "key \"%s\" already exists", name);
		meta = 0;
		goto out;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->v = calloc(1, sizeof(*e->v))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(e->name, name);
	e->alg = alg;
	e->primary = 1;
	e->rotation_period = rotation_period;
	e->create_time = (int64_t)time(NULL);
	e->nv = 1;
	e->v[0].version = 1;
	e->v[0].state = KS_STATE_ENABLED;
	e->v[0].create_time = e->create_time;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "no randomness");
		goto out;
	}
	i = (size_t)snprintf(e->v[0].label, sizeof(e->v[0].label), "%s#1#",
	    name);
	for (size_t j = 0; j < sizeof(rnd); j++, i += 2)
		snprintf(e->v[0].label + i, 3, "%02x", rnd[j]);
	if (alg->can_wrap)
		r = hsm_generate_secret_key(s, alg, e->v[0].label,
		    (const uint8_t *)e->v[0].label, strlen(e->v[0].label),
		    &priv);
	else
		r = hsm_generate_key_pair(s, alg, e->v[0].label,
		    (const uint8_t *)e->v[0].label, strlen(e->v[0].label),
		    &priv, &pub);
	if (r != 0) {
		kms_status_set(st, r, "the HSM could not generate the key: %s",
		    kms_strerror(r));
		goto out;
	}
	if ((doc = meta_encode(e)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hsm_data_create(s, name, (const uint8_t *)doc, strlen(doc),
	    &meta)) != 0) {
		kms_status_set(st, r, "the HSM could not store the key's "
		    "metadata: %s", kms_strerror(r));
		goto out;
	}
	e->meta = meta;
	e->v[0].priv = priv;
	e->v[0].pub = pub;
	pthread_rwlock_wrlock(&ks->lock);
	r = insert_locked(ks, e);
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0) {
		kms_status_set(st, r, "out of memory");
		hsm_destroy(s, meta);
		goto out;
	}
	/* The table owns e now; the key exists even if the reply is lost. */
	pthread_rwlock_rdlock(&ks->lock);
	*out = snapshot_locked(e);
	pthread_rwlock_unlock(&ks->lock);
	e = NULL;
	priv = pub = 0;
	r = *out == NULL ? kms_status_set(st, KMS_ERR_NOMEM, "out of memory") :
	    0;
 out:
	/* Nothing half-made stays on the token. */
	if (r != 0 && priv != 0 && hsm_destroy(s, priv) != 0)
		log_error("keystore: could not remove a half-created key "
		    "object");
	if (r != 0 && pub != 0)
		hsm_destroy(s, pub);
	pthread_mutex_unlock(&ks->create_lock);
	entry_free(e);
	free(doc);
	return r;
}

int
keystore_get(struct keystore *ks, const char *name, struct ks_key **out,
    struct kms_status *st)
{
	struct ks_entry *e;
	int r = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	if ((e = find_locked(ks, name)) == NULL)
		r = not_found(st, name);
	else if ((*out = snapshot_locked(e)) == NULL)
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

static int
cmp_key_name(const void *a, const void *b)
{
	const struct ks_key *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

int
keystore_list(struct keystore *ks, const char *prefix,
    int (*visible)(const char *name, void *arg), void *arg, size_t max,
    struct ks_key ***out, size_t *n)
{
	struct ks_key **v = NULL, *k;
	struct ks_entry *e;
	size_t i, cnt = 0, cap, plen = prefix == NULL ? 0 : strlen(prefix);
	int r = 0;

	*out = NULL;
	*n = 0;
	pthread_rwlock_rdlock(&ks->lock);
	cap = ks->count < max ? ks->count : max;
	if ((v = calloc(cap == 0 ? 1 : cap, sizeof(*v))) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < ks->nbuckets && cnt < cap; i++) {
		for (e = ks->buckets[i]; e != NULL && cnt < cap; e = e->next) {
			if (plen > 0 && strncmp(e->name, prefix, plen) != 0)
				continue;
			if (visible != NULL && !visible(e->name, arg))
				continue;
			if ((k = snapshot_locked(e)) == NULL) {
				r = KMS_ERR_NOMEM;
				goto out;
			}
			v[cnt++] = k;
		}
	}
 out:
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0) {
		for (i = 0; i < cnt; i++)
			ks_key_free(v[i]);
		free(v);
		return r;
	}
	qsort(v, cnt, sizeof(*v), cmp_key_name);
	*out = v;
	*n = cnt;
	return 0;
}

/* Finds key and version and checks the state; called with the lock held. */
static int
resolve_locked(struct keystore *ks, const char *name, uint32_t version,
    enum ks_use use, struct ks_entry **ep, struct ks_ventry **vp,
    struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;

	if ((e = find_locked(ks, name)) == NULL)
		return not_found(st, name);
	if (version == 0)
		version = e->primary;
	if ((v = version_locked(e, version)) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", name, version);
	if (v->state == KS_STATE_DESTROYED ||
	    (use == KS_USE_PRIVATE && v->state != KS_STATE_ENABLED))
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" is %s", version, name,
		    state_names[v->state]);
	*ep = e;
	*vp = v;
	return 0;
}

int
keystore_resolve(struct keystore *ks, const char *name, uint32_t version,
    enum ks_use use, const struct kms_alg_info **alg, uint32_t *resolved,
    struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;
	int r;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, use, &e, &v, st)) == 0) {
		*alg = e->alg;
		*resolved = v->version;
	}
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

/*
 * Gives the cached handle of a version's private (want_pub 0) or public
 * (want_pub 1) object, looking it up on the token when it is not known yet
 * or when refresh is set (the HSM called the cached one stale).
 */
static int
version_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, enum ks_use use, int want_pub, int refresh,
    const struct kms_alg_info **alg, hsm_handle_t *out,
    struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;
	char label[HSM_LABEL_MAX];
	enum hsm_obj_class cls;
	hsm_handle_t h;
	int r;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, use, &e, &v, st)) == 0) {
		*alg = e->alg;
		h = want_pub ? v->pub : v->priv;
		memcpy(label, v->label, sizeof(label));
	}
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0)
		return r;
	if (h != 0 && !refresh) {
		*out = h;
		return 0;
	}
	cls = want_pub ? HSM_OBJ_PUBLIC_KEY : (*alg)->can_wrap ?
	    HSM_OBJ_SECRET_KEY : HSM_OBJ_PRIVATE_KEY;
	if ((r = hsm_find(s, cls, label, &h)) != 0)
		return kms_status_set(st, r == KMS_ERR_NOT_FOUND ?
		    KMS_ERR_UNAVAILABLE : r, "version %u of key \"%s\": its "
		    "HSM object cannot be found (%s)", version, name,
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (resolve_locked(ks, name, version, use, &e, &v, st) == 0) {
		if (want_pub)
			v->pub = h;
		else
			v->priv = h;
	}
	pthread_rwlock_unlock(&ks->lock);
	*out = h;
	return 0;
}

int
keystore_sign(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	hsm_handle_t h;
	size_t cap = *siglen;
	int r, attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, KS_USE_PRIVATE,
		    0, attempt > 0, &alg, &h, st)) != 0)
			return r;
		if (!alg->can_sign)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "key \"%s\" is an %s key and cannot sign", name,
			    alg->name);
		*siglen = cap;
		r = hsm_sign(s, alg, h, in, inlen, sig, siglen);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not sign: %s",
		    kms_strerror(r));
	return 0;
}

int
keystore_public_key(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, uint8_t **der, size_t *derlen,
    struct kms_status *st)
{
	const struct kms_alg_info *alg;
	struct ks_entry *e;
	struct ks_ventry *v;
	uint8_t *buf = NULL;
	hsm_handle_t h;
	size_t len = 0;
	int r, attempt;

	*der = NULL;
	*derlen = 0;
	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, KS_USE_PUBLIC, &e, &v,
	    st)) == 0 && v->spki != NULL) {
		if ((buf = malloc(v->spki_len)) == NULL)
			r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		else {
			memcpy(buf, v->spki, v->spki_len);
			len = v->spki_len;
		}
	} else if (r == 0 && e->alg->can_wrap)
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is a symmetric %s key: it has no public key",
		    name, e->alg->name);
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0 || buf != NULL)
		goto done;
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, KS_USE_PUBLIC, 1,
		    attempt > 0, &alg, &h, st)) != 0)
			return r;
		r = hsm_public_key_der(s, alg, h, &buf, &len);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot read the public key: %s",
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (resolve_locked(ks, name, version, KS_USE_PUBLIC, &e, &v,
	    st) == 0 && v->spki == NULL && (v->spki = malloc(len)) != NULL) {
		memcpy(v->spki, buf, len);
		v->spki_len = len;
	}
	pthread_rwlock_unlock(&ks->lock);
	kms_status_clear(st);
 done:
	if (r != 0)
		return r;
	*der = buf;
	*derlen = len;
	return 0;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Finds the secret key of a resolved version that can wrap. */
static int
wrap_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, int refresh, hsm_handle_t *h, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	int r;

	if ((r = version_handle(ks, s, name, version, KS_USE_PRIVATE, 0,
	    refresh, &alg, h, st)) != 0)
		return r;
	if (!alg->can_wrap)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key and cannot wrap: use an "
		    "AES_256_KWP key", name, alg->name);
	return 0;
}

int
keystore_wrap(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, const uint8_t *in, size_t inlen, uint8_t **blob,
    size_t *bloblen, struct kms_status *st)
{
	uint8_t *inner = NULL, *out = NULL;
	unsigned long mech = 0;
	hsm_handle_t h;
	size_t outlen = 0;
	int r = 0, attempt;

	*blob = NULL;
	*bloblen = 0;
	if (inlen == 0 || inlen > KS_WRAP_MAX_PLAINTEXT)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "plaintext "
		    "must be 1 to %d bytes, not %zu", KS_WRAP_MAX_PLAINTEXT,
		    inlen);
	if ((inner = malloc(inlen + 4)) == NULL ||
	    (out = malloc(KS_WRAP_MAX_BLOB)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	put_be32(inner, (uint32_t)inlen);
	memcpy(inner + 4, in, inlen);
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			goto out;
		outlen = KS_WRAP_MAX_BLOB - KS_WRAP_HEADER;
		r = hsm_wrap(s, h, inner, inlen + 4, out + KS_WRAP_HEADER,
		    &outlen, &mech);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0) {
		kms_status_set(st, r, "the HSM could not wrap: %s",
		    kms_strerror(r));
		goto out;
	}
	out[0] = 0x01;
	put_be32(out + 1, version);
	put_be32(out + 5, (uint32_t)mech);
	*blob = out;
	*bloblen = KS_WRAP_HEADER + outlen;
	out = NULL;
 out:
	secret_freezero(inner, inner == NULL ? 0 : inlen + 4);
	free(out);
	return r;
}

int
keystore_blob_version(const uint8_t *blob, size_t len, uint32_t *version,
    struct kms_status *st)
{
	/* A KWP output is at least 16 bytes and a multiple of 8. */
	if (len < KS_WRAP_HEADER + 16 || len > KS_WRAP_MAX_BLOB ||
	    (len - KS_WRAP_HEADER) % 8 != 0 || blob[0] != 0x01 ||
	    get_be32(blob + 1) == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "not a "
		    "wrapped blob made by kms (bad header or length)");
	*version = get_be32(blob + 1);
	return 0;
}

int
keystore_unwrap(struct keystore *ks, struct hsm_session *s, const char *name,
    const uint8_t *blob, size_t len, struct secret **out,
    struct kms_status *st)
{
	struct secret *inner = NULL, *plain = NULL;
	uint32_t version, plen;
	hsm_handle_t h;
	size_t i;
	int r = 0, attempt;

	*out = NULL;
	if ((r = keystore_blob_version(blob, len, &version, st)) != 0)
		return r;
	/* Only the AES key wrap mechanisms (RFC 5649, 0x210A or 0x210B). */
	if (get_be32(blob + 5) != 0x210A && get_be32(blob + 5) != 0x210B)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob names an unknown mechanism 0x%x",
		    (unsigned int)get_be32(blob + 5));
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			return r;
		r = hsm_unwrap(s, h, get_be32(blob + 5), blob + KS_WRAP_HEADER,
		    len - KS_WRAP_HEADER, &inner);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r == KMS_ERR_VERIFY_FAILED)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob does not unwrap with version %u of key "
		    "\"%s\": it was changed, truncated or made with another "
		    "key", version, name);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not unwrap: %s",
		    kms_strerror(r));
	/*
	 * The inner length must fit, and the rest be the zero padding that
	 * SoftHSM2 leaves (other modules strip it).
	 */
	r = KMS_ERR_INVALID_ARGUMENT;
	if (inner->len < 4 || (plen = get_be32(inner->buf)) == 0 ||
	    plen > inner->len - 4 || inner->len - 4 - plen >= 8)
		goto bad;
	for (i = 4 + plen; i < inner->len; i++)
		if (inner->buf[i] != 0)
			goto bad;
	if ((plain = secret_new(plen)) == NULL) {
		secret_free(inner);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	memcpy(plain->buf, inner->buf + 4, plen);
	secret_free(inner);
	*out = plain;
	return 0;
 bad:
	secret_free(inner);
	return kms_status_set(st, r, "the wrapped blob is malformed inside");
}
