/*
 * keystore.h: keys and their versions.
 *
 * Key material is born and stays in the HSM; what the keys are (their
 * versions, states and schedules) is one document per key in a store
 * (store.h; by default the token itself, so that there is no side
 * database that could disagree with it, and several kmsd processes on one
 * token see the same keys).  The document is keymeta.h's.  Key material
 * objects are labelled NAME#VERSION#RANDOM, so that an object left behind
 * by an interrupted creation can never be mistaken for a live version.
 * Changes are made under the store's lock of the key, so that concurrent
 * rotations in several processes never lose or duplicate a version.
 *
 * The module is three files: keystore.c, the cache of documents (loaded
 * at start, read again by keystore_refresh); keystore_life.c, lifecycle
 * (create, rotate, states, the scheduled rotations and destructions);
 * keystore_ops.c, the key operations (sign, wrap and the blob format).
 * Object handles are looked up on first use and cached, and looked up
 * again when the HSM says a handle is stale.  All functions are
 * thread-safe; no in-process lock is held across an HSM call.
 */
#ifndef KMS_KEYSTORE_H
#define KMS_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"
#include "keymeta.h"
#include "names.h"

struct hsm_session;
struct kms_status;
struct keystore;
struct store;

struct ks_version {
	uint32_t version;
	enum ks_state state;
	int64_t create_time;		/* seconds since the epoch */
	int64_t destroy_time;		/* DESTROY_SCHEDULED: when; else 0 */
	char *chain;			/* PEM certificate chain, or NULL */
};

/* A snapshot of a key's metadata, owned by the caller (ks_key_free). */
struct ks_key {
	char name[KMS_KEY_NAME_MAX + 1];
	const struct kms_alg_info *alg;
	uint32_t primary;
	int64_t rotation_period;	/* 0: no scheduled rotation */
	int64_t create_time;
	int64_t next_rotation_time;	/* primary's create time + period, or 0 */
	size_t nversions;
	struct ks_version *versions;
};

void ks_key_free(struct ks_key *k);

/*
 * Loads every key's metadata from the token through session s (the token
 * as the store, store_token_open).  Changes are serialised with flock(2)
 * on lock_file (created if needed), which every instance on this host
 * that shares the token must share.
 */
int keystore_open(struct hsm_session *s, const char *lock_file,
    struct keystore **out, struct kms_status *st);
/* The same with another store, which the keystore owns from now on. */
int keystore_open_store(struct store *sto, struct hsm_session *s,
    struct keystore **out, struct kms_status *st);
void keystore_free(struct keystore *ks);
size_t keystore_count(struct keystore *ks);
/* The keystore's store (for its claim, store_claim). */
struct store *keystore_store(struct keystore *ks);

/*
 * The revision of one of the keystore's documents (a store_rev_fn): a
 * key's generation (its seq, the document checked whole), a counter's
 * value.  Stores opened for the keystore take it.
 */
int keystore_doc_rev(const char *name, const uint8_t *value, size_t len,
    uint64_t *rev, struct kms_status *st);
/*
 * Has fn(arg) called when the store sees a change (so that the caller
 * runs keystore_refresh at once); returns 0 when the store cannot tell
 * and must be polled.
 */
int keystore_set_notify(struct keystore *ks, void (*fn)(void *), void *arg);

/*
 * Reads again the documents that changed in the store since they were
 * last read (made by other processes); *changed (may be NULL) counts them.
 * Lists the store only when its change mark moved (store_mark), and at
 * least once a minute; otherwise reads the mark alone.
 */
int keystore_refresh(struct keystore *ks, struct hsm_session *s,
    size_t *changed);

/*
 * Learns the handles of every version's private or secret key in two
 * searches of the token, so that no first use of a version pays for a
 * search of its own (on SoftHSM2's file store a search visits every
 * object: about a second at 10,000 keys, where these two searches take
 * about as long for all keys).  kmsd's maintenance thread calls it once,
 * after start-up; *found counts the handles learnt.
 */
int keystore_warm(struct keystore *ks, struct hsm_session *s,
    size_t *found);

/*
 * Creates key name with version 1 generated inside the HSM.
 * KMS_ERR_ALREADY_EXISTS when the name is taken.
 */
int keystore_create(struct keystore *ks, struct hsm_session *s,
    const char *name, const struct kms_alg_info *alg,
    int64_t rotation_period, struct ks_key **out, struct kms_status *st);

/*
 * Makes a new version of key name inside the HSM and makes it primary;
 * *out is the key afterwards.
 */
int keystore_rotate(struct keystore *ks, struct hsm_session *s,
    const char *name, struct ks_key **out, struct kms_status *st);

/*
 * Changes the state of a version: ENABLED <-> DISABLED; ENABLED or
 * DISABLED -> DESTROY_SCHEDULED (destroy_time = now + destroy_wait);
 * DESTROY_SCHEDULED -> DISABLED before destroy_time (restore).  The
 * primary version cannot be disabled or scheduled for destruction
 * (KMS_ERR_FAILED_PRECONDITION, as for a DESTROYED version); asking for
 * the state a version is already in changes nothing.  *out is the version
 * afterwards.
 */
int keystore_set_state(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, enum ks_state state,
    int64_t destroy_wait, struct ks_version *out, struct kms_status *st);

/* Sets the rotation period (0: none); *out is the key afterwards. */
/*
 * Attaches the PEM certificate chain pem (NULL or "" removes it) to
 * version (0: the primary) of key name; *out is the version afterwards
 * (its chain not filled in).  The caller checks the chain.
 */
int keystore_set_chain(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const char *pem,
    struct ks_version *out, struct kms_status *st);

int keystore_set_rotation_period(struct keystore *ks, struct hsm_session *s,
    const char *name, int64_t period, struct ks_key **out,
    struct kms_status *st);

/* What keystore_maintain does, for the caller's audit log. */
enum ks_event {
	KS_EVENT_ROTATED = 1,		/* version: the new primary */
	KS_EVENT_DESTROYED		/* version: the one destroyed */
};
/*
 * The caller's audit of a scheduled change.  Called with err 0 before the
 * change takes effect (under the key's lock, once it is known to be still
 * due and, for a rotation, once the new version is generated but not yet
 * recorded): a non-zero return, because the record could not be written,
 * refuses the change.  Called with err != 0 (and st) when the change
 * failed; a non-zero return then stops the maintenance as well.
 */
typedef int ks_event_fn(void *arg, enum ks_event what, const char *name,
    uint32_t version, int err, const struct kms_status *st);

/*
 * Rotates the keys whose rotation is due at time now and destroys the
 * versions whose destroy time has passed, each under its key's lock and
 * after checking again that it is still due (another instance may have
 * done it); ev audits each one first (see ks_event_fn).  Returns 0 when
 * everything due was done; else the first error: a change that failed
 * (the others are still tried), or at once, leaving the rest for the
 * next call, the error of an audit that could not be written (nothing is
 * changed without its record: maintenance pauses until the audit log
 * works again).
 */
int keystore_maintain(struct keystore *ks, struct hsm_session *s, int64_t now,
    ks_event_fn *ev, void *arg);

/* A snapshot of key name; KMS_ERR_NOT_FOUND when there is none. */
int keystore_get(struct keystore *ks, const char *name, struct ks_key **out,
    struct kms_status *st);

/*
 * Snapshots of the keys whose names start with prefix and for which
 * visible(name, arg) returns non-zero, sorted by name, at most max.
 * *out is an array of *n pointers; free each and the array.
 */
int keystore_list(struct keystore *ks, const char *prefix,
    int (*visible)(const char *name, void *arg), void *arg, size_t max,
    struct ks_key ***out, size_t *n);

/*
 * Resolves version (0 = primary) of key name for use: checks the key and
 * the version exist and that the version is ENABLED (a DISABLED,
 * DESTROY_SCHEDULED or DESTROYED version is KMS_ERR_FAILED_PRECONDITION
 * for every use).  Gives the key's algorithm and the version number
 * resolved.  No allocation.
 */
int keystore_resolve(struct keystore *ks, const char *name, uint32_t version,
    const struct kms_alg_info **alg, uint32_t *resolved,
    struct kms_status *st);

/*
 * Signs in with the private key of the resolved version (see hsm_sign for
 * what in is and the signature format).  The version's state is checked
 * again.  *siglen holds the capacity of sig on entry.
 */
int keystore_sign(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen, struct kms_status *st);

/*
 * The DER SubjectPublicKeyInfo of a resolved version (cached after the
 * first read); *der is malloc'd.
 */
int keystore_public_key(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, uint8_t **der, size_t *derlen,
    struct kms_status *st);

/*
 * Wrapped blobs (AES_256_KWP keys), self-describing so that Unwrap finds
 * the right version after any number of rotations:
 *
 *   0x01 | key version (4 bytes, big-endian) | PKCS#11 mechanism (4 bytes)
 *        | KWP( plaintext length (4 bytes) | plaintext )
 *
 * The length travels inside the wrapped part, so it is authenticated; a
 * changed header names another version or mechanism and fails to unwrap.
 */
#define KS_WRAP_MAX_PLAINTEXT 65536
#define KS_WRAP_HEADER 9
#define KS_WRAP_MAX_BLOB (KS_WRAP_HEADER + KS_WRAP_MAX_PLAINTEXT + 4 + 16)

/*
 * Wraps in (1..KS_WRAP_MAX_PLAINTEXT bytes) under version (0: the
 * primary) of key name into a malloc'd blob.
 */
int keystore_wrap(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const uint8_t *in, size_t inlen,
    uint8_t **blob, size_t *bloblen, struct kms_status *st);

/* The key version a blob names, or KMS_ERR_INVALID_ARGUMENT. */
int keystore_blob_version(const uint8_t *blob, size_t len, uint32_t *version,
    struct kms_status *st);

/*
 * Unwraps a blob made by keystore_wrap with the version it names; a
 * tampered or truncated blob is KMS_ERR_INVALID_ARGUMENT and nothing is
 * returned.  *out is a secret (free with secret_free).
 */
struct secret;
int keystore_unwrap(struct keystore *ks, struct hsm_session *s,
    const char *name, const uint8_t *blob, size_t len, struct secret **out,
    struct kms_status *st);

/*
 * Advances the counter name (kept on the token, shared by every instance)
 * to value, which must be above its current value (*last; 0 for a new
 * counter), else KMS_ERR_FAILED_PRECONDITION, and at most max_step above
 * it, else KMS_ERR_INVALID_ARGUMENT; on error nothing changes.
 */
#define KS_COUNTER_PREFIX "kms-counter!"
int keystore_counter_advance(struct keystore *ks, struct hsm_session *s,
    const char *name, uint64_t value, uint64_t max_step, uint64_t *last,
    struct kms_status *st);

#endif /* KMS_KEYSTORE_H */
