/*
 * keymeta.h: the metadata document of a key, as JSON text.
 *
 * Per key the store keeps one document: its generation (seq), algorithm,
 * primary version, rotation period, creation time, and per version its
 * state, creation and destroy time and the CKA_LABEL of its HSM objects.
 * This module only encodes and decodes; it touches neither the HSM nor a
 * lock, so that tools (bench/kmsfill.c) write documents exactly as kmsd
 * does by linking it.
 */
#ifndef KMS_KEYMETA_H
#define KMS_KEYMETA_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"
#include "names.h"

struct kms_status;

#define KM_FORMAT 1
/* The longest label of a version's HSM objects, NUL included (HSM_LABEL_MAX). */
#define KM_LABEL_MAX 256
/* The most versions one key may have (rotation is refused beyond). */
#define KS_MAX_VERSIONS 10000

/* Values equal the protobuf enum kms.v1.KeyVersionState. */
enum ks_state {
	KS_STATE_ENABLED = 1,
	KS_STATE_DISABLED = 2,
	KS_STATE_DESTROY_SCHEDULED = 3,
	KS_STATE_DESTROYED = 4
};

struct km_version {
	uint32_t version;
	enum ks_state state;
	int64_t create_time;		/* seconds since the epoch */
	int64_t destroy_time;		/* DESTROY_SCHEDULED: when; DESTROYED: when */
	char label[KM_LABEL_MAX];	/* CKA_LABEL of the key objects */
	char *chain;			/* PEM certificate chain, or NULL */
};

/* The largest certificate chain a version may hold. */
#define KM_CHAIN_MAX (64 * 1024)

struct km_key {
	char name[KMS_KEY_NAME_MAX + 1];
	const struct kms_alg_info *alg;
	uint32_t primary;
	int64_t rotation_period;	/* 0: no scheduled rotation */
	int64_t create_time;
	uint64_t seq;			/* the document's generation */
	size_t nv;			/* versions, in increasing order */
	struct km_version *v;
};

/* The document of k, malloc'd and NUL-terminated; NULL when out of memory. */
char *km_encode(const struct km_key *k);

/*
 * Parses a document of len bytes into *k (its versions malloc'd; free
 * with km_clear).  A document that is not of format KM_FORMAT, names an
 * unknown algorithm or state, has versions out of order or a primary it
 * does not hold is KMS_ERR_CONFIG.  On error *k holds nothing to free.
 */
int km_decode(const char *text, size_t len, struct km_key *k,
    struct kms_status *st);

/* Frees the versions of k; k itself belongs to the caller. */
void km_clear(struct km_key *k);

/*
 * A fresh label NAME#VERSION#RANDOM (16 random hex digits) for the HSM
 * objects of a new version, so that an object left behind by an
 * interrupted creation can never be taken for a live version.  0, or
 * KMS_ERR_INTERNAL when there is no randomness or no room.
 */
int km_version_label(const char *name, uint32_t version, char *label,
    size_t size);

/* Version version of k, or NULL. */
struct km_version *km_version(const struct km_key *k, uint32_t version);

#endif /* KMS_KEYMETA_H */
