/*
 * keystore.c: the cache of key documents, a hash table under one
 * read-write lock (see keystore.h).
 *
 * Every instance loads all documents at start and reads again the ones
 * that changed every sync period (keystore_refresh), comparing the
 * store's copy ids, so that it sees what the others did within about that
 * period; a store that can tell of changes (etcd's watch) has
 * keystore_refresh run at once instead (keystore_set_notify).  The store's change mark spares the listing of an idle store:
 * keystore_refresh lists only when the mark differs from the one read
 * before the last listing, when it cannot be read (a token made before
 * it existed gets one at its next change), and at least every
 * FULL_REFRESH_MS.  The bundle sequence counters are read from the store
 * under the locks at each use and cached nowhere, so they do not move it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hsm.h"
#include "keystore.h"
#include "keystore_int.h"
#include "kmserr.h"
#include "log.h"

#define FULL_REFRESH_MS 60000		/* a full listing at least this often */

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

struct ks_entry *
ks_find_locked(struct keystore *ks, const char *name)
{
	struct ks_entry *e;

	for (e = ks->buckets[name_hash(name) % ks->nbuckets]; e != NULL;
	    e = e->next)
		if (strcmp(e->m.name, name) == 0)
			return e;
	return NULL;
}

size_t
ks_vindex(const struct ks_entry *e, uint32_t version)
{
	size_t i;

	for (i = 0; i < e->m.nv; i++)
		if (e->m.v[i].version == version)
			break;
	return i;
}

int
ks_not_found(struct kms_status *st, const char *name)
{
	return kms_status_set(st, KMS_ERR_NOT_FOUND, "key \"%s\" not found",
	    name);
}

void
ks_entry_free(struct ks_entry *e)
{
	size_t i;

	if (e == NULL)
		return;
	for (i = 0; e->c != NULL && i < e->m.nv; i++)
		free(e->c[i].spki);
	free(e->c);
	km_clear(&e->m);
	free(e);
}

/* Counters are documents too, named KS_COUNTER_PREFIX + their name. */
static int
is_counter(const char *name)
{
	return strncmp(name, KS_COUNTER_PREFIX, strlen(KS_COUNTER_PREFIX)) == 0;
}

int
ks_entry_decode(const char *name, const struct store_rev *at,
    const uint8_t *value, size_t len, struct ks_entry **out,
    struct kms_status *st)
{
	struct ks_entry *e;
	int r;

	*out = NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	if ((r = km_decode((const char *)value, len, &e->m, st)) != 0) {
		free(e);
		return r;
	}
	if (strcmp(e->m.name, name) != 0) {
		ks_entry_free(e);
		return kms_status_set(st, KMS_ERR_CONFIG,
		    "name does not match label");
	}
	if ((e->c = calloc(e->m.nv, sizeof(*e->c))) == NULL) {
		ks_entry_free(e);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	e->at.id = at->id;
	e->at.rev = e->m.seq;
	*out = e;
	return 0;
}

int
keystore_doc_rev(const char *name, const uint8_t *value, size_t len,
    uint64_t *rev, struct kms_status *st)
{
	struct store_rev at = { 0, 0 };
	struct ks_entry *e;
	unsigned long long v;
	int r;

	*rev = 0;
	if (is_counter(name)) {
		/* A value that is not a counter's counts as none. */
		if (sscanf((const char *)value, "seq %llu", &v) == 1)
			*rev = v;
		return 0;
	}
	if ((r = ks_entry_decode(name, &at, value, len, &e, st)) != 0)
		return r;
	*rev = e->m.seq;
	ks_entry_free(e);
	return 0;
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
				b = name_hash(x->m.name) % n;
				x->next = nb[b];
				nb[b] = x;
			}
		}
		free(ks->buckets);
		ks->buckets = nb;
		ks->nbuckets = n;
	}
	b = name_hash(e->m.name) % ks->nbuckets;
	e->next = ks->buckets[b];
	ks->buckets[b] = e;
	ks->count++;
	return 0;
}

/*
 * Moves what this process knows of the HSM objects of old's versions (the
 * handles it looked up, the public keys it read) into e, for the versions
 * whose objects are the same.
 */
static void
carry_over(struct ks_entry *e, struct ks_entry *old)
{
	struct ks_vcache *oc;
	size_t i, j;

	for (i = 0; i < e->m.nv; i++) {
		if ((j = ks_vindex(old, e->m.v[i].version)) == old->m.nv ||
		    strcmp(old->m.v[j].label, e->m.v[i].label) != 0)
			continue;
		oc = &old->c[j];
		e->c[i].priv = oc->priv;
		e->c[i].pub = oc->pub;
		if (e->c[i].spki == NULL) {
			e->c[i].spki = oc->spki;
			e->c[i].spki_len = oc->spki_len;
			oc->spki = NULL;
		}
	}
}

static int
install_locked(struct keystore *ks, struct ks_entry *e)
{
	struct ks_entry **pp, *old;
	int r;

	pp = &ks->buckets[name_hash(e->m.name) % ks->nbuckets];
	for (; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->m.name, e->m.name) == 0)
			break;
	if ((old = *pp) == NULL) {
		if ((r = insert_locked(ks, e)) != 0)
			ks_entry_free(e);
		return r;
	}
	if (e->at.rev <= old->at.rev && e->at.id != old->at.id) {
		ks_entry_free(e);
		return 0;
	}
	carry_over(e, old);
	e->next = old->next;
	*pp = e;
	ks_entry_free(old);
	return 0;
}

int
ks_install(struct keystore *ks, struct ks_entry *e)
{
	int r;

	pthread_rwlock_wrlock(&ks->lock);
	r = install_locked(ks, e);
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

struct load_ctx {
	struct keystore *ks;
	size_t loaded, skipped;
};

/*
 * One document of the store (a document destroyed meanwhile by the writer
 * that replaced it is not listed).  Key names hold no '!': counters and
 * anything else are not keys.
 */
static int
load_one(const char *name, uint64_t id, const uint8_t *value, size_t len,
    void *arg)
{
	struct load_ctx *lc = arg;
	struct store_rev at = { 0, id };
	struct ks_entry *e, *cur;
	struct kms_status st;
	char esc[160];
	int r;

	if (strchr(name, '!') != NULL)
		return 0;
	pthread_rwlock_rdlock(&lc->ks->lock);
	cur = ks_find_locked(lc->ks, name);
	r = cur != NULL && cur->at.id == id;
	pthread_rwlock_unlock(&lc->ks->lock);
	if (r)
		return 0;	/* the document this process already has */
	kms_status_clear(&st);
	if ((r = ks_entry_decode(name, &at, value, len, &e, &st)) != 0) {
		if (r == KMS_ERR_NOMEM)
			return r;
		/* A foreign or damaged object must not stop the service. */
		log_warn("keystore: skipping data object \"%s\": %s",
		    log_escape(name, esc, sizeof(esc)), st.msg);
		lc->skipped++;
		return 0;
	}
	if ((r = ks_install(lc->ks, e)) != 0)
		return r;
	lc->loaded++;
	return 0;
}

int
keystore_open_store(struct store *sto, struct hsm_session *s,
    struct keystore **out, struct kms_status *st)
{
	struct keystore *ks;
	struct load_ctx lc;
	int r;

	*out = NULL;
	if ((ks = calloc(1, sizeof(*ks))) == NULL) {
		store_free(sto);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	ks->store = sto;
	ks->nbuckets = 1024;
	pthread_rwlock_init(&ks->lock, NULL);
	if ((ks->buckets = calloc(ks->nbuckets, sizeof(*ks->buckets))) ==
	    NULL) {
		keystore_free(ks);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	memset(&lc, 0, sizeof(lc));
	lc.ks = ks;
	if ((r = store_list(sto, s, load_one, &lc)) != 0) {
		keystore_free(ks);
		return kms_status_set(st, r, "cannot load key metadata from "
		    "the store: %s", kms_strerror(r));
	}
	log_info("keystore: %zu keys loaded, %zu objects skipped",
	    ks->count, lc.skipped);
	*out = ks;
	return 0;
}

int
keystore_open(struct hsm_session *s, const char *lock_file,
    struct keystore **out, struct kms_status *st)
{
	struct store *sto;
	int r;

	*out = NULL;
	if ((r = store_token_open(lock_file, keystore_doc_rev, &sto,
	    st)) != 0)
		return r;
	return keystore_open_store(sto, s, out, st);
}

struct store *
keystore_store(struct keystore *ks)
{
	return ks->store;
}

int
keystore_set_notify(struct keystore *ks, void (*fn)(void *), void *arg)
{
	return store_set_notify(ks->store, fn, arg);
}

int
keystore_refresh(struct keystore *ks, struct hsm_session *s, size_t *changed)
{
	char mark[STORE_MARK_MAX];
	struct load_ctx lc;
	int64_t now = clock_ms();
	int same, r;

	if (changed != NULL)
		*changed = 0;
	/*
	 * The mark is read before the listing: a change made after this
	 * read moves it again, so that the next refresh lists once more.
	 */
	store_mark(ks->store, s, mark, sizeof(mark));
	pthread_rwlock_rdlock(&ks->lock);
	same = mark[0] != '\0' && strcmp(mark, ks->mark_seen) == 0 &&
	    now - ks->full_ms < FULL_REFRESH_MS;
	pthread_rwlock_unlock(&ks->lock);
	if (same)
		return 0;
	memset(&lc, 0, sizeof(lc));
	lc.ks = ks;
	r = store_list(ks->store, s, load_one, &lc);
	if (changed != NULL)
		*changed = lc.loaded;
	if (r != 0)
		return r;
	pthread_rwlock_wrlock(&ks->lock);
	strcpy(ks->mark_seen, mark);
	ks->full_ms = now;
	pthread_rwlock_unlock(&ks->lock);
	return 0;
}

struct warm_ctx {
	struct keystore *ks;
	size_t found;
};

/*
 * hsm_list's callback: a key object labelled NAME#VERSION#RANDOM (see
 * km_version_label) gives its handle to that version, when the version's
 * label is exactly this one and its handle is not known yet.
 */
static int
warm_one(const char *label, hsm_handle_t h, void *arg)
{
	struct warm_ctx *wc = arg;
	char name[KMS_KEY_NAME_MAX + 1], *end;
	struct ks_entry *e;
	const char *p;
	unsigned long version;
	size_t n, i;

	if ((p = strchr(label, '#')) == NULL ||
	    (n = (size_t)(p - label)) > KMS_KEY_NAME_MAX || p[1] < '1' ||
	    p[1] > '9')
		return 0;
	memcpy(name, label, n);
	name[n] = '\0';
	errno = 0;
	version = strtoul(p + 1, &end, 10);
	if (errno != 0 || *end != '#' || version > UINT32_MAX)
		return 0;
	pthread_rwlock_wrlock(&wc->ks->lock);
	if ((e = ks_find_locked(wc->ks, name)) != NULL &&
	    (i = ks_vindex(e, (uint32_t)version)) < e->m.nv &&
	    e->c[i].priv == 0 && strcmp(e->m.v[i].label, label) == 0) {
		e->c[i].priv = h;
		wc->found++;
	}
	pthread_rwlock_unlock(&wc->ks->lock);
	return 0;
}

int
keystore_warm(struct keystore *ks, struct hsm_session *s, size_t *found)
{
	struct warm_ctx wc;
	int r;

	memset(&wc, 0, sizeof(wc));
	wc.ks = ks;
	if ((r = hsm_list(s, HSM_OBJ_PRIVATE_KEY, warm_one, &wc)) == 0)
		r = hsm_list(s, HSM_OBJ_SECRET_KEY, warm_one, &wc);
	*found = wc.found;
	return r;
}

void
keystore_free(struct keystore *ks)
{
	struct ks_entry *e, *next;
	size_t i;

	if (ks == NULL)
		return;
	for (i = 0; ks->buckets != NULL && i < ks->nbuckets; i++) {
		for (e = ks->buckets[i]; e != NULL; e = next) {
			next = e->next;
			ks_entry_free(e);
		}
	}
	free(ks->buckets);
	store_free(ks->store);
	pthread_rwlock_destroy(&ks->lock);
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
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < k->nversions && k->versions != NULL; i++)
		free(k->versions[i].chain);
	free(k->versions);
	free(k);
}

struct ks_key *
ks_snapshot(const struct ks_entry *e)
{
	const struct km_version *p;
	struct ks_key *k;
	size_t i;

	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (k->versions = calloc(e->m.nv, sizeof(*k->versions))) == NULL) {
		free(k);
		return NULL;
	}
	strcpy(k->name, e->m.name);
	k->alg = e->m.alg;
	k->primary = e->m.primary;
	k->rotation_period = e->m.rotation_period;
	k->create_time = e->m.create_time;
	k->next_rotation_time = 0;
	if (e->m.rotation_period > 0 &&
	    (p = km_version(&e->m, e->m.primary)) != NULL)
		k->next_rotation_time = p->create_time + e->m.rotation_period;
	k->nversions = e->m.nv;
	for (i = 0; i < e->m.nv; i++) {
		k->versions[i].version = e->m.v[i].version;
		k->versions[i].state = e->m.v[i].state;
		k->versions[i].create_time = e->m.v[i].create_time;
		k->versions[i].destroy_time = e->m.v[i].destroy_time;
		if (e->m.v[i].chain != NULL &&
		    (k->versions[i].chain = strdup(e->m.v[i].chain)) == NULL) {
			ks_key_free(k);
			return NULL;
		}
	}
	return k;
}

int
keystore_get(struct keystore *ks, const char *name, struct ks_key **out,
    struct kms_status *st)
{
	struct ks_entry *e;
	int r = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	if ((e = ks_find_locked(ks, name)) == NULL)
		r = ks_not_found(st, name);
	else if ((*out = ks_snapshot(e)) == NULL)
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
			if (plen > 0 && strncmp(e->m.name, prefix, plen) != 0)
				continue;
			if (visible != NULL && !visible(e->m.name, arg))
				continue;
			if ((k = ks_snapshot(e)) == NULL) {
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

int
ks_resolve_locked(struct keystore *ks, const char *name, uint32_t version,
    struct ks_entry **ep, size_t *ip, struct kms_status *st)
{
	struct ks_entry *e;
	struct km_version *v;
	size_t i;

	if ((e = ks_find_locked(ks, name)) == NULL)
		return ks_not_found(st, name);
	if (version == 0)
		version = e->m.primary;
	if ((i = ks_vindex(e, version)) == e->m.nv)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", name, version);
	v = &e->m.v[i];
	if (v->state != KS_STATE_ENABLED)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" is %s and cannot be used%s",
		    version, name, kms_state_name(v->state),
		    v->state == KS_STATE_DISABLED ? " until it is enabled" :
		    v->state == KS_STATE_DESTROY_SCHEDULED ? " (restore it "
		    "before its destroy time to keep it)" : "");
	*ep = e;
	*ip = i;
	return 0;
}

int
keystore_resolve(struct keystore *ks, const char *name, uint32_t version,
    const struct kms_alg_info **alg, uint32_t *resolved,
    struct kms_status *st)
{
	struct ks_entry *e;
	size_t i;
	int r;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = ks_resolve_locked(ks, name, version, &e, &i, st)) == 0) {
		*alg = e->m.alg;
		*resolved = e->m.v[i].version;
	}
	pthread_rwlock_unlock(&ks->lock);
	return r;
}
