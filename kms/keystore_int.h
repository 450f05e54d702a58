/*
 * keystore_int.h: what the keystore's files share (keystore.c: the cache,
 * keystore_life.c: lifecycle, keystore_ops.c: key operations).  Not for
 * other modules: they use keystore.h.
 */
#ifndef KMS_KEYSTORE_INT_H
#define KMS_KEYSTORE_INT_H

#include <pthread.h>

#include "hsm.h"
#include "keymeta.h"
#include "keystore.h"
#include "store.h"

/* What this process knows of a version's HSM objects. */
struct ks_vcache {
	hsm_handle_t priv;		/* private or secret key; 0 = not looked up */
	hsm_handle_t pub;
	uint8_t *spki;			/* cached DER public key */
	size_t spki_len;
};

/* A key in the cache: its document and, per version, what is cached. */
struct ks_entry {
	struct ks_entry *next;		/* hash chain */
	struct km_key m;		/* the document */
	struct store_rev at;		/* where it stands in the store */
	struct ks_vcache *c;		/* m.nv of them, as m.v */
};

struct keystore {
	struct store *store;
	pthread_rwlock_t lock;		/* the table and every entry */
	size_t nbuckets;
	struct ks_entry **buckets;
	size_t count;
	char mark_seen[STORE_MARK_MAX];	/* the change mark before the last listing */
	int64_t full_ms;		/* when that listing began */
};

/* Looks key name up; called with the lock held. */
struct ks_entry *ks_find_locked(struct keystore *ks, const char *name);
/* The index of version in e->m.v and e->c, or e->m.nv. */
size_t ks_vindex(const struct ks_entry *e, uint32_t version);
void ks_entry_free(struct ks_entry *e);
/* An entry for the document (name, at, value); its name must be name. */
int ks_entry_decode(const char *name, const struct store_rev *at,
    const uint8_t *value, size_t len, struct ks_entry **out,
    struct kms_status *st);
/*
 * Puts e into the table, replacing an older document of the same key; e
 * is consumed.  A document no newer than the one in the table is dropped
 * (a slow reader must not undo a newer change).
 */
int ks_install(struct keystore *ks, struct ks_entry *e);
/*
 * Finds key and version (0: the primary) and checks that the version is
 * ENABLED; called with the lock held.  *ip is the version's index.
 */
int ks_resolve_locked(struct keystore *ks, const char *name,
    uint32_t version, struct ks_entry **ep, size_t *ip,
    struct kms_status *st);
int ks_not_found(struct kms_status *st, const char *name);
/*
 * A copy of e as callers see it (NULL: out of memory), made under the
 * table lock or of an entry not installed yet.
 */
struct ks_key *ks_snapshot(const struct ks_entry *e);

#endif /* KMS_KEYSTORE_INT_H */
