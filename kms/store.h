/*
 * store.h: where the keystore keeps its documents, shared by every kmsd
 * instance that serves the same keys.
 *
 * A store holds named documents (a key's metadata, a bundle sequence
 * counter), each with a revision that grows with every replacement.  It
 * gives:
 *  - get: the newest document of a name;
 *  - put: a new document replacing the one of a known revision (or none),
 *    under the name's lock; a store without locks compares instead and
 *    answers KMS_ERR_CONFLICT when it lost a race, and the caller reads
 *    again and retries;
 *  - list: every document, for loading and refreshing a cache;
 *  - mark / touch: a change mark that moves on after every change (every
 *    writer moves it on, or the store follows the changes itself), so
 *    that readers list again only when something changed;
 *  - lock / unlock: a lock per name, held across get and put, so that
 *    concurrent changes in several processes (or hosts) never lose one
 *    (a store that compares on put gives no lock: *out is NULL);
 *  - claim: who uses the store: every serving kmsd shares it, and the
 *    store commands (a migration, the removal of orphans) take it alone;
 *  - set_notify: a function called when the mark moved (NULL in the ops
 *    of a store that cannot tell: its readers poll the mark).
 *
 * The keystore sees only this interface.  The token (store_token.c:
 * documents as CKO_DATA objects, a host lock and a lock object, a change
 * counter) and etcd (store_etcd.c: a key per document, a transaction
 * comparing its mod_revision, the mark from a watch) implement it.  Every
 * call takes the calling thread's HSM session, which the token store uses
 * and others ignore.  Revisions come from the documents themselves
 * (store_rev_fn), since the token has none of its own; ids are the
 * store's (the token's object handle, etcd's mod_revision).
 */
#ifndef KMS_STORE_H
#define KMS_STORE_H

#include <stddef.h>
#include <stdint.h>

struct hsm_session;
struct kms_status;
struct store;
struct store_lock;

/* Where a document stands: a put names it to replace the document. */
struct store_rev {
	uint64_t rev;		/* the document's revision */
	uint64_t id;		/* this copy; changes whenever it is replaced */
};

/* A document read by store_get; free with store_doc_clear. */
struct store_doc {
	uint8_t *value;		/* NUL-terminated, the NUL not counted */
	size_t len;
	struct store_rev at;
};

/*
 * The revision of a document (name, value): 0 or an error with st set
 * when the document is damaged or not one of the store's user's.
 */
typedef int store_rev_fn(const char *name, const uint8_t *value, size_t len,
    uint64_t *rev, struct kms_status *st);

/*
 * One document of a listing: its name, its copy id (as store_rev.id) and
 * its value, valid during the call only.  A non-zero return stops the
 * listing and is returned by it.
 */
typedef int store_list_fn(const char *name, uint64_t id, const uint8_t *value,
    size_t len, void *arg);

#define STORE_MARK_MAX 256

/* How a process uses the store, until store_free (store_claim). */
enum store_claim {
	STORE_CLAIM_SERVE = 1,		/* a kmsd serving from it */
	STORE_CLAIM_ALONE		/* a store command: no kmsd serves */
};

/* Called, on a thread of the store's, when the change mark moved. */
typedef void store_notify_fn(void *arg);

struct store_ops {
	int (*get)(struct store *, struct hsm_session *, const char *name,
	    struct store_lock *held, uint64_t want, struct store_doc *out,
	    struct kms_status *st);
	int (*put)(struct store *, struct hsm_session *, struct store_lock *held,
	    const char *name, const struct store_rev *prev,
	    const uint8_t *value, size_t len, struct store_rev *out,
	    struct kms_status *st);
	int (*list)(struct store *, struct hsm_session *, store_list_fn *,
	    void *);
	void (*mark)(struct store *, struct hsm_session *, char *, size_t);
	void (*touch)(struct store *, struct hsm_session *);
	int (*lock)(struct store *, struct hsm_session *, const char *name,
	    struct store_lock **out, struct kms_status *st);
	void (*unlock)(struct store *, struct hsm_session *,
	    struct store_lock *);
	void (*free)(struct store *);
	/* Optional (NULL: claims always succeed). */
	int (*claim)(struct store *, struct hsm_session *, enum store_claim,
	    struct kms_status *);
	/* Optional (NULL: every instance runs the scheduled changes). */
	int (*leads)(struct store *);
	/* Optional (NULL: the store cannot tell; its readers poll). */
	void (*set_notify)(struct store *, store_notify_fn *, void *);
};

/* Every implementation's struct starts with this. */
struct store {
	const struct store_ops *ops;
	/*
	 * 1 when a put that failed with KMS_ERR_UNAVAILABLE may still be
	 * recorded later (a store across the network that did not answer):
	 * what the document names must then stay.
	 */
	int put_may_land;
};

/*
 * The newest document of name.  With held (the caller holds name's lock)
 * the store may clean up older copies, and waits a moment for a
 * document of at least revision want (0: any) where its readers can lag
 * behind its writers (KMS_ERR_UNAVAILABLE when it does not show up).
 * KMS_ERR_NOT_FOUND when name has no document.
 */
static inline int
store_get(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock *held, uint64_t want, struct store_doc *out,
    struct kms_status *st)
{
	return sto->ops->get(sto, s, name, held, want, out, st);
}

/*
 * Stores value as the document of name, replacing prev (NULL: name has
 * no document yet), under name's lock held; *out (may be NULL) is where
 * the new document stands.  A store without a lock of its own compares
 * prev with what it holds and refuses (KMS_ERR_CONFLICT) when they
 * differ: the caller reads the newest document again and retries.
 */
static inline int
store_put(struct store *sto, struct hsm_session *s, struct store_lock *held,
    const char *name, const struct store_rev *prev, const uint8_t *value,
    size_t len, struct store_rev *out, struct kms_status *st)
{
	return sto->ops->put(sto, s, held, name, prev, value, len, out, st);
}

/* Calls fn for every document. */
static inline int
store_list(struct store *sto, struct hsm_session *s, store_list_fn *fn,
    void *arg)
{
	return sto->ops->list(sto, s, fn, arg);
}

/*
 * The change mark into buf (size bytes, at most STORE_MARK_MAX), ""
 * when it cannot be read: the caller then lists everything.  Read it
 * before a listing: a change made meanwhile moves it again.
 */
static inline void
store_mark(struct store *sto, struct hsm_session *s, char *buf, size_t size)
{
	sto->ops->mark(sto, s, buf, size);
}

/*
 * Moves the change mark on after a change (of documents or of what they
 * describe), under the lock of the name changed.  A failure is logged:
 * the others then see the change at their next full listing.
 */
static inline void
store_touch(struct store *sto, struct hsm_session *s)
{
	sto->ops->touch(sto, s);
}

/*
 * Takes the lock of name; KMS_ERR_UNAVAILABLE when it stays taken.  *out
 * is NULL when the store has no locks (its put compares).
 */
static inline int
store_lock(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock **out, struct kms_status *st)
{
	return sto->ops->lock(sto, s, name, out, st);
}

/* Releases a lock; NULL is a no-op. */
static inline void
store_unlock(struct store *sto, struct hsm_session *s, struct store_lock *l)
{
	if (l != NULL)
		sto->ops->unlock(sto, s, l);
}

/*
 * Has fn(arg) called whenever the change mark moves; returns 0 when the
 * store cannot tell (the caller then polls store_mark).
 */
static inline int
store_set_notify(struct store *sto, store_notify_fn *fn, void *arg)
{
	if (sto->ops->set_notify == NULL)
		return 0;
	sto->ops->set_notify(sto, fn, arg);
	return 1;
}

/*
 * Claims the store for how until store_free: STORE_CLAIM_SERVE is shared
 * by every kmsd serving from the store and refused while a store command
 * holds STORE_CLAIM_ALONE, which is refused while any kmsd serves (both
 * KMS_ERR_UNAVAILABLE, st saying who holds it).  The store commands take
 * it so that a migration never writes under a serving instance.
 */
static inline int
store_claim(struct store *sto, struct hsm_session *s, enum store_claim how,
    struct kms_status *st)
{
	return sto->ops->claim != NULL ? sto->ops->claim(sto, s, how, st) : 0;
}

/*
 * 1 when this process should run the scheduled rotations and
 * destructions now: on etcd, the one instance that holds the leader key
 * (lead.h); on the token, every instance (each change is checked again
 * under the key's lock, so a second instance finds it done).
 */
static inline int
store_leads(struct store *sto)
{
	return sto->ops->leads != NULL ? sto->ops->leads(sto) : 1;
}

/* NULL is a no-op. */
static inline void
store_free(struct store *sto)
{
	if (sto != NULL)
		sto->ops->free(sto);
}

void store_doc_clear(struct store_doc *d);

/*
 * The token as a store (store_token.c): documents are CKO_DATA objects
 * labelled by name, and changes are serialised by flock(2) on lock_file
 * (created if needed), which every instance on this host that shares the
 * token must share, and by a lock object on the token.  Its claims are
 * flock(2) on lock_file.serving: shared to serve, exclusive alone.
 */
int store_token_open(const char *lock_file, store_rev_fn *rev,
    struct store **out, struct kms_status *st);

/*
 * etcd as a store (store_etcd.c): documents are the keys prefix "doc/"
 * NAME of the cluster o names; a put is one transaction comparing the
 * key's mod_revision, and a watch on the prefix moves the change mark.
 * Fails when etcd cannot be reached now.
 */
#define STORE_ETCD_PREFIX_MAX 200
struct etcd_opts;
int store_etcd_open(const struct etcd_opts *o, const char *prefix,
    store_rev_fn *rev, struct store **out, struct kms_status *st);
/*
 * A value of kmsd's own beside the documents (the audit chains' anchors:
 * auditkey.h's audit_anchor_get_fn and _set_fn), the etcd key prefix
 * "audit/" label; arg is an etcd store.  get: *value (malloc'd,
 * NUL-terminated) or KMS_ERR_NOT_FOUND.
 */
/* Where the values live under the prefix (beside doc/). */
#define STORE_ETCD_VALUE_DIR "audit/"
int store_etcd_value_get(void *arg, const char *label, char **value,
    size_t *len);
int store_etcd_value_set(void *arg, const char *label, const char *value,
    size_t len);
/* The etcd client of an etcd store and its prefix; NULL for another. */
struct etcd *store_etcd_client(struct store *sto, const char **prefix);

#endif /* KMS_STORE_H */
