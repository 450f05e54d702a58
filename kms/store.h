/*
 * store.h: where the keystore keeps its documents, shared by every kmsd
 * instance that serves the same keys.
 *
 * A store holds named documents (a key's metadata, a bundle sequence
 * counter), each with a revision that grows with every replacement.  It
 * gives:
 *  - get: the newest document of a name;
 *  - put: a new document replacing the one of a known revision (or none),
 *    under the name's lock;
 *  - list: every document, for loading and refreshing a cache;
 *  - mark / touch: a change mark that every writer moves on after a
 *    change, so that readers list again only when something changed;
 *  - lock / unlock: a lock per name, held across get and put, so that
 *    concurrent changes in several processes (or hosts) never lose one;
 *  - claim: who uses the store: every serving kmsd shares it, and the
 *    store commands (a migration, the removal of orphans) take it alone.
 *
 * The keystore sees only this interface; the token (store_token.c:
 * documents as CKO_DATA objects) is the first implementation, and another
 * one (etcd: a key per document, mod_revision, a lease lock, a watch)
 * plugs in without touching the keystore.  Every call takes the calling
 * thread's HSM session, which the token store uses and others may ignore.
 * Revisions come from the documents themselves (store_rev_fn), since the
 * token has none of its own; a store that has them may use its own.
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
};

/* Every implementation's struct starts with this. */
struct store {
	const struct store_ops *ops;
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
 * prev with what it holds and refuses (KMS_ERR_UNAVAILABLE) when they
 * differ.
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

/* Takes the lock of name; KMS_ERR_UNAVAILABLE when it stays taken. */
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

#endif /* KMS_STORE_H */
