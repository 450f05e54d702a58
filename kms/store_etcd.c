/*
 * store_etcd.c: etcd v3 as the keystore's store (see store.h).
 *
 * A document is the etcd key PREFIX "doc/" NAME, its value the document.
 * Its copy id (store_rev.id) is the key's mod_revision, which etcd moves
 * on with every write, so a put is one transaction: "if the key's
 * mod_revision is still the one read (or the key does not exist yet),
 * put the new document".  A lost race answers KMS_ERR_CONFLICT and the
 * keystore reads again and retries; no lock is taken (lock, unlock and
 * touch do nothing), so nothing is ever left locked by a crash.
 *
 * The change mark is what a watch on the prefix last gave: "etcd GEN
 * REV", REV the revision of the newest event and GEN the number of
 * reloads that a compacted revision forced.  The watch starts at the
 * revision after the one the store was opened at and is resumed by
 * etcd.c from the revision after its last event, so no change goes
 * unseen; every event also calls the notify function (the maintenance
 * thread's wake-up), so that other instances list again at once rather
 * than at their next sync period.
 *
 * A put whose transaction was applied by a member that then failed to
 * answer is retried by etcd.c on another member; its compare then fails,
 * and the document found is this put's own (every version has a random
 * label): that counts as success, not as a conflict.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "kmserr.h"
#include "lead.h"
#include "log.h"
#include "store.h"

#define DOC_DIR "doc/"
#define VALUE_DIR STORE_ETCD_VALUE_DIR
#define KEY_MAX 1024

struct store_etcd {
	struct store base;		/* first: a struct store * is one */
	struct etcd *e;
	struct etcd_watch *w;
	store_rev_fn *rev;
	char prefix[STORE_ETCD_PREFIX_MAX + sizeof(DOC_DIR)];
	char top[STORE_ETCD_PREFIX_MAX + 1];	/* [store] prefix */
	pthread_mutex_t lock;		/* guards what follows */
	int64_t seen;			/* the newest event's revision */
	uint64_t gen;			/* reloads forced by compaction */
	store_notify_fn *notify;
	void *notify_arg;
	struct lead *lead;		/* the claim (lead.h), or NULL */
};

static int
doc_key(const struct store_etcd *t, const char *name, char *key, size_t size,
    struct kms_status *st)
{
	if ((size_t)snprintf(key, size, "%s%s", t->prefix, name) >= size)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "document "
		    "name too long for etcd");
	return 0;
}

struct get_ctx {
	store_rev_fn *rev;
	const char *name;
	struct store_doc *out;
	struct kms_status *st;
};

static int
get_one(const struct etcd_kv *kv, void *arg)
{
	struct get_ctx *gc = arg;
	int r;

	if ((gc->out->value = malloc(kv->len + 1)) == NULL)
		return kms_status_set(gc->st, KMS_ERR_NOMEM, "out of memory");
	memcpy(gc->out->value, kv->value, kv->len + 1);
	gc->out->len = kv->len;
	gc->out->at.id = (uint64_t)kv->mod_rev;
	if ((r = gc->rev(gc->name, kv->value, kv->len, &gc->out->at.rev,
	    gc->st)) != 0)
		store_doc_clear(gc->out);
	return r;
}

/* Reads are linearizable: want has nothing to wait for. */
static int
se_get(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock *held, uint64_t want, struct store_doc *out,
    struct kms_status *st)
{
	struct store_etcd *t = (struct store_etcd *)sto;
	struct get_ctx gc = { t->rev, name, out, st };
	char key[KEY_MAX];
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = doc_key(t, name, key, sizeof(key), st)) != 0)
		return r;
	if ((r = etcd_range(t->e, key, 0, get_one, &gc, NULL, NULL, st)) != 0)
		return r;
	if (out->value == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND, "key \"%s\" not "
		    "found", name);
	return 0;
}

struct put_ctx {
	const uint8_t *value;
	size_t len;
	int64_t mod_rev;		/* set when the document is this one */
};

/* After a failed compare: is what etcd holds the document just put? */
static int
put_mine(const struct etcd_kv *kv, void *arg)
{
	struct put_ctx *pc = arg;

	if (kv->len == pc->len && memcmp(kv->value, pc->value, pc->len) == 0) {
		pc->mod_rev = kv->mod_rev;
		return 0;
	}
	return KMS_ERR_CONFLICT;
}

static int
se_put(struct store *sto, struct hsm_session *s, struct store_lock *held,
    const char *name, const struct store_rev *prev, const uint8_t *value,
    size_t len, struct store_rev *out, struct kms_status *st)
{
	struct store_etcd *t = (struct store_etcd *)sto;
	struct put_ctx pc = { value, len, 0 };
	struct store_rev at;
	char key[KEY_MAX];
	int64_t rev = 0;
	int r;

	if ((r = t->rev(name, value, len, &at.rev, st)) != 0)
		return r;
	if ((r = doc_key(t, name, key, sizeof(key), st)) != 0)
		return r;
	r = etcd_put_if(t->e, key, prev != NULL ? (int64_t)prev->id : 0,
	    value, len, 0, &rev, put_mine, &pc, st);
	if (r == 0 && pc.mod_rev > 0) {
		/* Shown as a conflict, but the document there is this one. */
		kms_status_clear(st);
		rev = pc.mod_rev;
	} else if (r == KMS_ERR_CONFLICT)
		return kms_status_set(st, KMS_ERR_CONFLICT, "the metadata of "
		    "\"%s\" changed meanwhile in etcd", name);
	else if (r != 0)
		return r;
	at.id = (uint64_t)rev;
	if (out != NULL)
		*out = at;
	return 0;
}

struct list_ctx {
	size_t skip;			/* the prefix's length */
	store_list_fn *fn;
	void *arg;
};

static int
list_one(const struct etcd_kv *kv, void *arg)
{
	struct list_ctx *lc = arg;

	if (kv->key_len <= lc->skip || memchr(kv->key, '\0', kv->key_len))
		return 0;
	return lc->fn(kv->key + lc->skip, (uint64_t)kv->mod_rev, kv->value,
	    kv->len, lc->arg);
}

static int
se_list(struct store *sto, struct hsm_session *s, store_list_fn *fn,
    void *arg)
{
	struct store_etcd *t = (struct store_etcd *)sto;
	struct list_ctx lc = { strlen(t->prefix), fn, arg };
	struct kms_status st;
	int r;

	kms_status_clear(&st);
	if ((r = etcd_range(t->e, t->prefix, 1, list_one, &lc, NULL, NULL,
	    &st)) != 0 && st.msg[0] != '\0')
		log_warn("keystore: %s", st.msg);
	return r;
}

static void
se_mark(struct store *sto, struct hsm_session *s, char *buf, size_t size)
{
	struct store_etcd *t = (struct store_etcd *)sto;

	pthread_mutex_lock(&t->lock);
	snprintf(buf, size, "etcd %llu %lld", (unsigned long long)t->gen,
	    (long long)t->seen);
	pthread_mutex_unlock(&t->lock);
}

/* The watch moves the mark: a writer has nothing to do. */
static void
se_touch(struct store *sto, struct hsm_session *s)
{
}

/* The transaction's compare does what a lock would. */
static int
se_lock(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock **out, struct kms_status *st)
{
	*out = NULL;
	return 0;
}

static void
se_unlock(struct store *sto, struct hsm_session *s, struct store_lock *l)
{
}

static void
se_set_notify(struct store *sto, store_notify_fn *fn, void *arg)
{
	struct store_etcd *t = (struct store_etcd *)sto;

	pthread_mutex_lock(&t->lock);
	t->notify = fn;
	t->notify_arg = arg;
	pthread_mutex_unlock(&t->lock);
}

static void
se_free(struct store *sto)
{
	struct store_etcd *t = (struct store_etcd *)sto;

	lead_free(t->lead);
	etcd_watch_stop(t->w);
	etcd_close(t->e);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* The watch thread: every event and every reload moves the mark. */
static void
watched(void *arg, enum etcd_watch_what what, const struct etcd_kv *kv,
    int64_t rev, const struct kms_status *st)
{
	struct store_etcd *t = arg;

	if (what == ETCD_WATCH_DOWN || what == ETCD_WATCH_UP)
		return;
	/*
	 * Called under the lock, so that once se_set_notify(NULL) returns
	 * the old function is never called again (it only wakes a thread).
	 */
	pthread_mutex_lock(&t->lock);
	if (what == ETCD_WATCH_COMPACTED)
		t->gen++;
	else if (rev > t->seen)
		t->seen = rev;
	if (t->notify != NULL)
		t->notify(t->notify_arg);
	pthread_mutex_unlock(&t->lock);
}

static const struct store_ops etcd_ops;

struct etcd *
store_etcd_client(struct store *sto, const char **prefix)
{
	struct store_etcd *t = (struct store_etcd *)sto;

	if (sto == NULL || sto->ops != &etcd_ops)
		return NULL;
	if (prefix != NULL)
		*prefix = t->top;
	return t->e;
}

struct value_ctx {
	char **value;
	size_t *len;
};

static int
value_one(const struct etcd_kv *kv, void *arg)
{
	struct value_ctx *vc = arg;

	if ((*vc->value = malloc(kv->len + 1)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(*vc->value, kv->value, kv->len + 1);
	*vc->len = kv->len;
	return 0;
}

/* The etcd key of one of kmsd's own values; st cleared for the call. */
static int
value_key(const struct store_etcd *t, const char *label, char *key,
    size_t size, struct kms_status *st)
{
	kms_status_clear(st);
	if ((size_t)snprintf(key, size, "%s" VALUE_DIR "%s", t->top, label) >=
	    size)
		return KMS_ERR_INVALID_ARGUMENT;
	return 0;
}

int
store_etcd_value_get(void *arg, const char *label, char **value, size_t *len)
{
	struct store_etcd *t = arg;
	struct value_ctx vc = { value, len };
	struct kms_status st;
	char key[KEY_MAX];
	int r;

	*value = NULL;
	*len = 0;
	if ((r = value_key(t, label, key, sizeof(key), &st)) != 0)
		return r;
	if ((r = etcd_range(t->e, key, 0, value_one, &vc, NULL, NULL,
	    &st)) != 0) {
		if (st.msg[0] != '\0')
			log_warn("audit: %s", st.msg);
		return r;
	}
	return *value == NULL ? KMS_ERR_NOT_FOUND : 0;
}

int
store_etcd_value_set(void *arg, const char *label, const char *value,
    size_t len)
{
	struct store_etcd *t = arg;
	struct kms_status st;
	char key[KEY_MAX];
	int r;

	if ((r = value_key(t, label, key, sizeof(key), &st)) != 0)
		return r;
	if ((r = etcd_put(t->e, key, (const uint8_t *)value, len, 0, NULL,
	    &st)) != 0)
		log_warn("audit: %s", st.msg);
	return r;
}

/* Who serves, and who runs the scheduled changes: lead.h. */
static int
se_claim(struct store *sto, struct hsm_session *s, enum store_claim how,
    struct kms_status *st)
{
	struct store_etcd *t = (struct store_etcd *)sto;

	(void)s;
	if (t->lead != NULL)
		return kms_status_set(st, KMS_ERR_INTERNAL, "the etcd store "
		    "is claimed already");
	return lead_open(t->e, t->top, how, &t->lead, st);
}

static int
se_leads(struct store *sto)
{
	return lead_leads(((struct store_etcd *)sto)->lead);
}

static const struct store_ops etcd_ops = {
	se_get, se_put, se_list, se_mark, se_touch, se_lock,
	se_unlock, se_free, se_claim, se_leads, se_set_notify
};

int
store_etcd_open(const struct etcd_opts *o, const char *prefix,
    store_rev_fn *rev, struct store **out, struct kms_status *st)
{
	struct store_etcd *t;
	int64_t at = 0;
	int r;

	*out = NULL;
	if (*prefix == '\0' || strlen(prefix) > STORE_ETCD_PREFIX_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "the etcd prefix is "
		    "empty or longer than %d bytes", STORE_ETCD_PREFIX_MAX);
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	t->base.ops = &etcd_ops;
	t->base.put_may_land = 1;
	t->rev = rev;
	snprintf(t->prefix, sizeof(t->prefix), "%s" DOC_DIR, prefix);
	snprintf(t->top, sizeof(t->top), "%s", prefix);
	pthread_mutex_init(&t->lock, NULL);
	if ((r = etcd_open(o, &t->e, st)) != 0)
		goto fail;
	/* Where the watch starts: nothing after this goes unseen. */
	if ((r = etcd_range(t->e, t->prefix, 1, NULL, NULL, &at, NULL,
	    st)) != 0)
		goto fail;
	t->seen = at;
	if ((r = etcd_watch_start(t->e, t->prefix, at + 1, watched, t, &t->w,
	    st)) != 0)
		goto fail;
	log_info("keystore: etcd store on %zu endpoints, prefix %s, at "
	    "revision %lld", etcd_endpoint_count(t->e), prefix,
	    (long long)at);
	*out = &t->base;
	return 0;
 fail:
	etcd_close(t->e);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return r;
}
