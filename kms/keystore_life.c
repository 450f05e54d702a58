/*
 * keystore_life.c: the lifecycle of keys (see keystore.h): creation,
 * rotation, version states, rotation periods, the scheduled rotations and
 * destructions, and the bundle sequence counters.
 *
 * Every change has one shape (keystore_change): take the key's lock in
 * the store, read its newest document there (never the cache's: another
 * instance may have changed it), change a copy, write it as the next
 * revision, move the store's change mark on, unlock.  Key material is
 * generated before the document that names it is written, and destroyed
 * again when that write fails, so that nothing half-made stays.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "clock.h"
#include "hsm.h"
#include "keystore.h"
#include "keystore_int.h"
#include "kmserr.h"
#include "log.h"

#define MAX_OBJECTS 16			/* key objects of one label seen at once */
#define KS_CHANGE_TRIES 64		/* lost races before a change gives up */

/* Generates the HSM objects of version i of e, labelled as it says. */
static int
version_generate(struct hsm_session *s, struct ks_entry *e, size_t i,
    struct kms_status *st)
{
	const char *label = e->m.v[i].label;
	int r;

	if (e->m.alg->can_wrap)
		r = hsm_generate_secret_key(s, e->m.alg, label,
		    (const uint8_t *)label, strlen(label), &e->c[i].priv);
	else
		r = hsm_generate_key_pair(s, e->m.alg, label,
		    (const uint8_t *)label, strlen(label), &e->c[i].priv,
		    &e->c[i].pub);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not generate the "
		    "key: %s", kms_strerror(r));
	return 0;
}

/* Destroys every HSM object labelled label (a version's key material). */
static int
objects_destroy(struct hsm_session *s, const char *label)
{
	static const enum hsm_obj_class classes[] = {
		HSM_OBJ_PRIVATE_KEY, HSM_OBJ_PUBLIC_KEY, HSM_OBJ_SECRET_KEY
	};
	hsm_handle_t found[MAX_OBJECTS];
	size_t c, i, n;
	int r;

	for (c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		if ((r = hsm_find_all(s, classes[c], label, found,
		    MAX_OBJECTS, &n)) != 0)
			return r;
		for (i = 0; i < n; i++)
			if ((r = hsm_destroy(s, found[i])) != 0 &&
			    r != KMS_ERR_STALE_HANDLE)
				return r;
	}
	return 0;
}

/* Removes the objects of a version whose document was never written. */
static void
version_undo(struct hsm_session *s, const char *label)
{
	if (objects_destroy(s, label) != 0)
		log_error("keystore: could not remove the objects of a "
		    "version that was not recorded (label %s)", label);
}

/*
 * Removes the objects of a version whose document was never written.  A
 * write whose outcome is unknown (KMS_ERR_UNAVAILABLE from a store whose
 * puts may land later: etcd did not answer, and may still commit it)
 * keeps them: an orphan that no
 * document names is harmless, a document naming destroyed objects is not.
 */
static void
version_undo_after(struct keystore *ks, struct hsm_session *s,
    const char *label, int err)
{
	if (err == KMS_ERR_UNAVAILABLE && ks->store->put_may_land) {
		log_warn("keystore: the objects of %s stay in the HSM: the "
		    "store did not say whether it recorded them", label);
		return;
	}
	version_undo(s, label);
}

/*
 * Appends a new ENABLED version (generated in the HSM) and makes it
 * primary.  On error e is as it was.
 */
static int
entry_add_version(struct ks_entry *e, struct hsm_session *s, int64_t now,
    struct kms_status *st)
{
	struct km_version *nv, *v;
	struct ks_vcache *nc;
	uint32_t version = e->m.nv == 0 ? 1 : e->m.v[e->m.nv - 1].version + 1;
	int r;

	if (e->m.nv >= KS_MAX_VERSIONS)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "key "
		    "\"%s\" has %d versions, the most a key may have: create "
		    "a new key", e->m.name, KS_MAX_VERSIONS);
	if ((nv = realloc(e->m.v, (e->m.nv + 1) * sizeof(*nv))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	e->m.v = nv;
	if ((nc = realloc(e->c, (e->m.nv + 1) * sizeof(*nc))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	e->c = nc;
	memset(&e->c[e->m.nv], 0, sizeof(*e->c));
	v = &e->m.v[e->m.nv];
	memset(v, 0, sizeof(*v));
	v->version = version;
	v->state = KS_STATE_ENABLED;
	v->create_time = now;
	if (km_version_label(e->m.name, version, v->label,
	    sizeof(v->label)) != 0)
		return kms_status_set(st, KMS_ERR_INTERNAL, "no randomness");
	if ((r = version_generate(s, e, e->m.nv, st)) != 0)
		return r;
	e->m.nv++;
	e->m.primary = version;
	return 0;
}

/*
 * Writes e (the next revision of the document read under lock, or a new
 * key's first) to the store and installs it in the cache; e is consumed.
 */
static int
entry_write(struct keystore *ks, struct hsm_session *s, struct store_lock *lock,
    struct ks_entry *e, struct ks_key **snap, struct kms_status *st)
{
	struct store_rev prev = e->at;
	char *doc;
	int r;

	e->m.seq++;
	if ((doc = km_encode(&e->m)) == NULL) {
		ks_entry_free(e);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	r = store_put(ks->store, s, lock, e->m.name,
	    prev.id != 0 ? &prev : NULL, (const uint8_t *)doc, strlen(doc),
	    &e->at, st);
	free(doc);
	if (r != 0) {
		ks_entry_free(e);
		return r;
	}
	/*
	 * What was written, as the caller's answer: by the time it could
	 * read the cache, a later change may have replaced it there.
	 */
	if (snap != NULL && (*snap = ks_snapshot(e)) == NULL) {
		ks_install(ks, e);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	if ((r = ks_install(ks, e)) != 0) {
		if (snap != NULL) {
			ks_key_free(*snap);
			*snap = NULL;
		}
		return kms_status_set(st, r, "out of memory");
	}
	return 0;
}

/* The newest document of name in the store, read under its lock. */
static int
entry_read_locked(struct keystore *ks, struct hsm_session *s,
    struct store_lock *lock, const char *name, struct ks_entry **out,
    struct kms_status *st)
{
	struct store_doc d;
	struct ks_entry *cur;
	uint64_t want = 0;
	int r;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	if ((cur = ks_find_locked(ks, name)) != NULL)
		want = cur->at.rev;
	pthread_rwlock_unlock(&ks->lock);
	if ((r = store_get(ks->store, s, name, lock, want, &d, st)) != 0)
		return r;
	r = ks_entry_decode(name, &d.at, d.value, d.len, out, st);
	store_doc_clear(&d);
	return r;
}

/*
 * After a change lost its race in a store that compares (KMS_ERR_CONFLICT):
 * 0 to try again after a short random pause, or KMS_ERR_UNAVAILABLE once
 * KS_CHANGE_TRIES attempts lost.
 */
static int
change_retry(const char *name, int tries, struct kms_status *st)
{
	unsigned char rnd = 0;

	if (tries >= KS_CHANGE_TRIES)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "key \"%s\" "
		    "was changed by others %d times in a row while this change "
		    "was made: try again", name, tries);
	if (RAND_bytes(&rnd, 1) != 1)
		rnd = (unsigned char)tries;
	clock_pause_ms(1 + rnd % (tries < 8 ? 4u * (unsigned)tries : 32u));
	kms_status_clear(st);
	return 0;
}

/* The version of e whose objects are labelled label, or NULL. */
static const struct km_version *
version_labelled(const struct ks_entry *e, const char *label)
{
	size_t i;

	for (i = 0; i < e->m.nv; i++)
		if (strcmp(e->m.v[i].label, label) == 0)
			return &e->m.v[i];
	return NULL;
}

int
keystore_create(struct keystore *ks, struct hsm_session *s,
    const char *name, const struct kms_alg_info *alg,
    int64_t rotation_period, struct ks_key **out, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	struct store_lock *lock = NULL;
	char label[KM_LABEL_MAX];
	int r, rr, exists;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	exists = ks_find_locked(ks, name) != NULL;
	pthread_rwlock_unlock(&ks->lock);
	if (exists)
		return kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
		    "key \"%s\" already exists", name);
	if ((r = store_lock(ks->store, s, name, &lock, st)) != 0)
		return r;
	/* Another instance may have made it a moment ago. */
	if ((r = entry_read_locked(ks, s, lock, name, &e, st)) == 0) {
		ks_install(ks, e);
		e = NULL;
		r = kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
		    "key \"%s\" already exists", name);
		goto out;
	}
	if (r != KMS_ERR_NOT_FOUND)
		goto out;
	kms_status_clear(st);
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(e->m.name, name);
	e->m.alg = alg;
	e->m.rotation_period = rotation_period;
	e->m.create_time = (int64_t)time(NULL);
	if ((r = entry_add_version(e, s, e->m.create_time, st)) != 0)
		goto out;
	strcpy(label, e->m.v[0].label);
	r = entry_write(ks, s, lock, e, out, st);
	e = NULL;
	/* Lost, or landed and changed since (see keystore_change)? */
	if (r == KMS_ERR_CONFLICT &&
	    (rr = entry_read_locked(ks, s, lock, name, &e, st)) != 0 &&
	    rr != KMS_ERR_NOT_FOUND) {
		r = rr;		/* unknown: its objects stay, as an orphan */
		goto out;
	}
	if (r == KMS_ERR_CONFLICT && version_labelled(e, label) != NULL) {
		kms_status_clear(st);
		r = 0;
		if ((*out = ks_snapshot(e)) == NULL)
			r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		ks_install(ks, e);
		e = NULL;
		goto out;
	}
	ks_entry_free(e);
	e = NULL;
	if (r != 0) {
		version_undo_after(ks, s, label, r);	/* nothing half-made stays */
		/* Another instance created it first. */
		if (r == KMS_ERR_CONFLICT)
			r = kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
			    "key \"%s\" already exists", name);
		goto out;
	}
	store_touch(ks->store, s);
 out:
	store_unlock(ks->store, s, lock);
	ks_entry_free(e);
	return r;
}

/*
 * The shape of every change: lock the key in the store, read its newest
 * document, let fn change a copy (fn may generate HSM objects: *made then
 * names the version to undo if fn fails after all or the document cannot
 * be written), write it, unlock.  fn returning KS_NO_CHANGE leaves the store as it was, and so
 * is returned (not an error).  *out (out may be NULL) is the key as this
 * change wrote it, when it wrote one.
 */
#define KS_NO_CHANGE 1
typedef int change_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st);

static int
keystore_change(struct keystore *ks, struct hsm_session *s, const char *name,
    change_fn *fn, void *arg, struct ks_key **out, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	struct store_lock *lock = NULL;
	const struct km_version *mine;
	const char *made = NULL;
	char undo[KM_LABEL_MAX];
	int r, tries, lost = 0;

	if ((r = store_lock(ks->store, s, name, &lock, st)) != 0)
		return r;
	for (tries = 1;; tries++) {
		made = NULL;
		if ((r = entry_read_locked(ks, s, lock, name, &e, st)) != 0)
			goto out;	/* a lost version's objects stay: unknown */
		/*
		 * A put that lost its race may have landed after all: etcd
		 * applied an attempt that timed out, and another change was
		 * made on top of it before the retry compared.  Its version's
		 * random label in the document tells; only a version that no
		 * document names is destroyed.
		 */
		if (lost && (mine = version_labelled(e, undo)) != NULL) {
			if (out != NULL) {
				if ((*out = ks_snapshot(e)) == NULL) {
					r = kms_status_set(st, KMS_ERR_NOMEM,
					    "out of memory");
					goto out;
				}
				(*out)->primary = mine->version;
			}
			ks_install(ks, e);
			e = NULL;
			kms_status_clear(st);
			r = 0;
			goto out;
		}
		if (lost)
			version_undo(s, undo);
		lost = 0;
		if ((r = fn(e, s, arg, &made, st)) != 0) {
			if (r == KS_NO_CHANGE) {
				ks_install(ks, e);	/* what the store says now */
				e = NULL;
			} else if (made != NULL)
				version_undo(s, made);
			goto out;
		}
		if (made != NULL)
			snprintf(undo, sizeof(undo), "%s", made);
		r = entry_write(ks, s, lock, e, out, st);
		e = NULL;
		if (r == KMS_ERR_CONFLICT && made != NULL)
			lost = 1;	/* decided on the next read */
		else if (r != 0 && made != NULL)
			version_undo_after(ks, s, undo, r);
		/* Even when the write failed: fn may have destroyed objects. */
		store_touch(ks->store, s);
		if (r != KMS_ERR_CONFLICT)
			break;
		/* Another instance changed the key first: again, on its change. */
		if ((r = change_retry(name, tries, st)) != 0)
			break;
	}
 out:
	ks_entry_free(e);
	store_unlock(ks->store, s, lock);
	return r;
}

/* A scheduled change: when it was found due, and its audit. */
struct sched {
	int64_t due;
	uint32_t version;		/* the version to destroy */
	ks_event_fn *ev;
	void *arg;
	int refused;			/* ev refused it: the audit failed */
};

/* The audit of a scheduled change before it takes effect. */
static int
sched_audit(struct sched *sc, enum ks_event what, const char *name,
    uint32_t version, struct kms_status *st)
{
	struct kms_status ok;
	int r;

	kms_status_clear(&ok);
	if ((r = sc->ev(sc->arg, what, name, version, 0, &ok)) == 0)
		return 0;
	sc->refused = 1;
	return kms_status_set(st, r < 0 ? r : KMS_ERR_INTERNAL, "the audit "
	    "record could not be written: the change is not made");
}

static int
rotate_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st)
{
	struct sched *sc = arg;
	const struct km_version *p;
	int64_t now = (int64_t)time(NULL);
	int r;

	/* A scheduled rotation checks, under the lock, that it is still due. */
	if (sc != NULL) {
		p = km_version(&e->m, e->m.primary);
		if (e->m.rotation_period <= 0 || p == NULL ||
		    p->create_time + e->m.rotation_period > sc->due)
			return KS_NO_CHANGE;
	}
	if ((r = entry_add_version(e, s, now, st)) != 0)
		return r;
	*made = e->m.v[e->m.nv - 1].label;
	if (sc != NULL)
		return sched_audit(sc, KS_EVENT_ROTATED, e->m.name,
		    e->m.primary, st);
	return 0;
}

int
keystore_rotate(struct keystore *ks, struct hsm_session *s, const char *name,
    struct ks_key **out, struct kms_status *st)
{
	int r;

	*out = NULL;
	if ((r = keystore_change(ks, s, name, rotate_fn, NULL, out, st)) < 0)
		return r;
	return *out != NULL ? 0 : keystore_get(ks, name, out, st);
}

struct state_arg {
	uint32_t version;
	enum ks_state state;
	int64_t destroy_wait;
	struct ks_version result;
};

static void
state_result(struct ks_version *out, const struct km_version *v)
{
	out->version = v->version;
	out->state = v->state;
	out->create_time = v->create_time;
	out->destroy_time = v->destroy_time;
}

static int
state_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st)
{
	struct state_arg *a = arg;
	struct km_version *v;
	int64_t now = (int64_t)time(NULL);

	if ((v = km_version(&e->m, a->version)) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", e->m.name, a->version);
	a->result.version = v->version;
	if (v->state == a->state) {
		state_result(&a->result, v);
		return KS_NO_CHANGE;	/* already so: nothing to write */
	}
	if (a->version == e->m.primary)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u is the primary version of key \"%s\" and "
		    "cannot be %s: rotate the key first", a->version,
		    e->m.name,
		    a->state == KS_STATE_DISABLED ? "disabled" : "destroyed");
	if (v->state == KS_STATE_DESTROYED)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" was destroyed on %lld and "
		    "cannot change any more", a->version, e->m.name,
		    (long long)v->destroy_time);
	switch (a->state) {
	case KS_STATE_ENABLED:
		if (v->state == KS_STATE_DESTROY_SCHEDULED)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "version %u of key \"%s\" is scheduled for "
			    "destruction: restore it (to DISABLED) first",
			    a->version, e->m.name);
		v->state = KS_STATE_ENABLED;
		break;
	case KS_STATE_DISABLED:
		if (v->state == KS_STATE_DESTROY_SCHEDULED &&
		    now >= v->destroy_time)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "version %u of key \"%s\" can no longer be "
			    "restored: its destroy time has passed",
			    a->version, e->m.name);
		v->state = KS_STATE_DISABLED;
		v->destroy_time = 0;
		break;
	case KS_STATE_DESTROY_SCHEDULED:
		v->state = KS_STATE_DESTROY_SCHEDULED;
		v->destroy_time = now + a->destroy_wait;
		break;
	default:
		return KMS_ERR_INTERNAL;	/* checked by keystore_set_state */
	}
	state_result(&a->result, v);
	return 0;
}

int
keystore_set_state(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, enum ks_state state,
    int64_t destroy_wait, struct ks_version *out, struct kms_status *st)
{
	struct state_arg a;
	int r;

	memset(out, 0, sizeof(*out));
	if (state != KS_STATE_ENABLED && state != KS_STATE_DISABLED &&
	    state != KS_STATE_DESTROY_SCHEDULED)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "state "
		    "must be ENABLED, DISABLED or DESTROY_SCHEDULED (a version "
		    "is DESTROYED only after its waiting period)");
	if (version == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "name the version to change (version 0 means the primary, "
		    "whose state cannot change)");
	memset(&a, 0, sizeof(a));
	a.version = version;
	a.state = state;
	a.destroy_wait = destroy_wait;
	if ((r = keystore_change(ks, s, name, state_fn, &a, NULL, st)) < 0)
		return r;
	*out = a.result;
	return 0;
}

struct chain_arg {
	uint32_t version;
	const char *pem;
	struct ks_version result;
};

static int
chain_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st)
{
	struct chain_arg *a = arg;
	struct km_version *v;
	char *copy = NULL;
	uint32_t version = a->version != 0 ? a->version : e->m.primary;

	if ((v = km_version(&e->m, version)) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", e->m.name, version);
	if (v->state == KS_STATE_DESTROYED)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" was destroyed", version,
		    e->m.name);
	state_result(&a->result, v);
	if ((v->chain == NULL && a->pem == NULL) || (v->chain != NULL &&
	    a->pem != NULL && strcmp(v->chain, a->pem) == 0))
		return KS_NO_CHANGE;
	if (a->pem != NULL && (copy = strdup(a->pem)) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	free(v->chain);
	v->chain = copy;
	return 0;
}

int
keystore_set_chain(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const char *pem,
    struct ks_version *out, struct kms_status *st)
{
	struct chain_arg a;
	int r;

	memset(out, 0, sizeof(*out));
	memset(&a, 0, sizeof(a));
	a.version = version;
	a.pem = pem != NULL && *pem != '\0' ? pem : NULL;
	if (a.pem != NULL && strlen(a.pem) > KM_CHAIN_MAX)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "certificate chain is longer than %d bytes", KM_CHAIN_MAX);
	if ((r = keystore_change(ks, s, name, chain_fn, &a, NULL, st)) < 0)
		return r;
	*out = a.result;
	return 0;
}

static int
period_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st)
{
	const int64_t *period = arg;

	if (e->m.rotation_period == *period)
		return KS_NO_CHANGE;
	e->m.rotation_period = *period;
	return 0;
}

int
keystore_set_rotation_period(struct keystore *ks, struct hsm_session *s,
    const char *name, int64_t period, struct ks_key **out,
    struct kms_status *st)
{
	int r;

	*out = NULL;
	if ((r = keystore_change(ks, s, name, period_fn, &period, out,
	    st)) < 0)
		return r;
	/* Nothing to write: the key as it stands. */
	return *out != NULL ? 0 : keystore_get(ks, name, out, st);
}

static int
destroy_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    const char **made, struct kms_status *st)
{
	struct sched *sc = arg;
	struct km_version *v;
	int64_t now = (int64_t)time(NULL);
	size_t i;
	int r;

	if ((i = ks_vindex(e, sc->version)) == e->m.nv ||
	    (v = &e->m.v[i])->state != KS_STATE_DESTROY_SCHEDULED ||
	    v->destroy_time > now)
		return KS_NO_CHANGE;	/* restored meanwhile, or not yet due */
	if ((r = sched_audit(sc, KS_EVENT_DESTROYED, e->m.name, v->version,
	    st)) != 0)
		return r;
	/* The objects first: a failed write then finds them gone and retries. */
	if ((r = objects_destroy(s, v->label)) != 0)
		return kms_status_set(st, r, "the HSM could not destroy the "
		    "objects of version %u: %s", v->version, kms_strerror(r));
	v->state = KS_STATE_DESTROYED;
	v->destroy_time = now;
	e->c[i].priv = e->c[i].pub = 0;
	return 0;
}

/* What keystore_maintain found to do, collected under the table lock. */
struct due {
	char name[KMS_KEY_NAME_MAX + 1];
	uint32_t version;		/* 0: rotate; else destroy it */
};

/*
 * Lists what is due at now into *todo (*n of them), under the table
 * lock.  KMS_ERR_NOMEM when not all of it fits: what was listed is still
 * given.
 */
static int
due_list(struct keystore *ks, int64_t now, struct due **todo, size_t *n)
{
	struct ks_entry *e;
	const struct km_version *p;
	struct due *t;
	size_t i, j, cap = 0;
	int r = 0;

	*todo = NULL;
	*n = 0;
	pthread_rwlock_rdlock(&ks->lock);
	for (i = 0; i < ks->nbuckets && r == 0; i++) {
		for (e = ks->buckets[i]; e != NULL && r == 0; e = e->next) {
			for (j = 0; j <= e->m.nv; j++) {
				if (j < e->m.nv) {
					if (e->m.v[j].state !=
					    KS_STATE_DESTROY_SCHEDULED ||
					    e->m.v[j].destroy_time > now)
						continue;
				} else {
					p = km_version(&e->m, e->m.primary);
					if (e->m.rotation_period <= 0 ||
					    p == NULL || p->create_time +
					    e->m.rotation_period > now)
						continue;
				}
				if (*n == cap) {
					cap = cap == 0 ? 16 : cap * 2;
					if ((t = realloc(*todo, cap *
					    sizeof(**todo))) == NULL) {
						r = KMS_ERR_NOMEM;
						break;
					}
					*todo = t;
				}
				strcpy((*todo)[*n].name, e->m.name);
				(*todo)[(*n)++].version = j < e->m.nv ?
				    e->m.v[j].version : 0;
			}
		}
	}
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

int
keystore_maintain(struct keystore *ks, struct hsm_session *s, int64_t now,
    ks_event_fn *ev, void *arg)
{
	struct due *todo = NULL;
	struct kms_status st;
	struct sched sc;
	enum ks_event what;
	size_t i, n = 0;
	int r, ret;

	if ((ret = due_list(ks, now, &todo, &n)) != 0)
		log_error("keystore: out of memory listing the scheduled "
		    "changes: %zu of them are made now, the rest later", n);
	for (i = 0; i < n; i++) {
		kms_status_clear(&st);
		memset(&sc, 0, sizeof(sc));
		sc.due = now;
		sc.version = todo[i].version;
		sc.ev = ev;
		sc.arg = arg;
		what = sc.version == 0 ? KS_EVENT_ROTATED : KS_EVENT_DESTROYED;
		r = keystore_change(ks, s, todo[i].name, sc.version == 0 ?
		    rotate_fn : destroy_fn, &sc, NULL, &st);
		/* Nothing to report when another instance did it first. */
		if (r == 0 || r == KS_NO_CHANGE)
			continue;
		if (ret == 0)
			ret = r;
		/* No record, no change: the rest waits for the audit log. */
		if (sc.refused)
			break;
		if (ev(arg, what, todo[i].name, sc.version, r, &st) != 0)
			break;
	}
	free(todo);
	return ret;
}

/*
 * Counters (bundle sequence numbers): documents named KS_COUNTER_PREFIX +
 * name whose value is "seq N w RANDOM" (older ones: "seq N"), replaced as
 * a key's document is, under the same locks.  The random part makes each
 * writer's document its own: a store that takes a compare that failed on
 * a document equal to its own as its own earlier write (etcd, after an
 * answer was lost) must never take another writer's "seq N" for it, or N
 * would be signed twice.
 */
int
keystore_counter_advance(struct keystore *ks, struct hsm_session *s,
    const char *name, uint64_t value, uint64_t max_step, uint64_t *last,
    struct kms_status *st)
{
	char label[HSM_LABEL_MAX], text[64];
	struct store_lock *lock = NULL;
	struct store_doc d;
	unsigned long long best = 0;
	uint8_t rnd[8];
	int r, found, tries;

	*last = 0;
	memset(&d, 0, sizeof(d));
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return kms_status_set(st, KMS_ERR_INTERNAL, "no randomness");
	if (strlen(name) + sizeof(KS_COUNTER_PREFIX) > sizeof(label))
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "counter "
		    "name too long");
	snprintf(label, sizeof(label), KS_COUNTER_PREFIX "%s", name);
	if ((r = store_lock(ks->store, s, label, &lock, st)) != 0)
		return r;
	for (tries = 1;; tries++) {
		store_doc_clear(&d);
		r = store_get(ks->store, s, label, lock, 0, &d, st);
		if (r != 0 && r != KMS_ERR_NOT_FOUND) {
			kms_status_set(st, r, "cannot read counter %s: %s",
			    name, kms_strerror(r));
			goto out;
		}
		found = r == 0;
		kms_status_clear(st);
		best = found ? d.at.rev : 0;
		*last = best;
		if (value <= best) {
			r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "sequence number %llu is not above %llu, the last "
			    "one signed for %s", (unsigned long long)value,
			    best, name);
			goto out;
		}
		if (value - best > max_step) {
			r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "sequence number %llu is more than %llu above "
			    "%llu, the last one signed for %s",
			    (unsigned long long)value,
			    (unsigned long long)max_step, best, name);
			goto out;
		}
		snprintf(text, sizeof(text), "seq %llu w %02x%02x%02x%02x"
		    "%02x%02x%02x%02x", (unsigned long long)value, rnd[0],
		    rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
		if ((r = store_put(ks->store, s, lock, label, found ? &d.at :
		    NULL, (const uint8_t *)text, strlen(text), NULL, st)) == 0)
			break;
		/* The store's message names the counter and the cause. */
		if (r != KMS_ERR_CONFLICT || (r = change_retry(label, tries,
		    st)) != 0)
			goto out;
	}
 out:
	store_doc_clear(&d);
	store_unlock(ks->store, s, lock);
	return r;
}
