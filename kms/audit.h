/*
 * audit.h: the audit log, kept apart from the operational log.
 *
 * Every request, allowed, denied or failed, is appended here before its
 * reply leaves.  Records are JSON Lines (one object per line, written with
 * jansson) under DIR/CHAIN/, in segment files named by their first
 * sequence number (00000000000000000001.jsonl, ...), rotated by size.
 * Each record holds `prev`, the SHA-256 of the previous line of the chain,
 * so that an edit, insertion, removal or reordering breaks the chain.
 *
 * audit_append returns only once the record is written and fdatasync'd;
 * when that fails it returns KMS_ERR_AUDIT and the caller must fail the
 * request (fail closed).  The record never holds key bytes, PINs or
 * plaintext: requests are represented by the SHA-256 of their input.
 */
#ifndef KMS_AUDIT_H
#define KMS_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "merkle.h"

struct kms_status;
struct audit;

struct audit_event {
	const char *identity;		/* verified client identity, or NULL */
	const char *fingerprint;	/* SHA-256 of the client certificate, hex */
	const char *peer;		/* transport address */
	const char *rpc;		/* "Sign" */
	const char *key;		/* key name or NULL */
	uint32_t version;		/* key version used, 0 if none */
	const char *result;		/* "ok", "denied" or "error" */
	const char *status;		/* gRPC status name, "OK", "PERMISSION_DENIED" */
	const char *reason;		/* why denied or failed, or NULL */
	const uint8_t *request_sha256;	/* 32 bytes, or NULL */
	const char *detail_json;	/* extra members as a JSON object text, or NULL */
};

/*
 * Checkpoints: every `every` records and every `seconds` seconds (when
 * records were added), and when the chain is opened and closed, the
 * writer thread signs a C2SP tlog-checkpoint (origin "kms/CHAIN", tree
 * size, base64 RFC 9162 root of every record so far; see note.h) as a
 * signed note with the chain's Ed25519 key in the HSM, and chains it as a
 * checkpoint record {"checkpoint":{"note":...}}.  sign() gets the note's
 * text (the message, not a digest) and returns the 64-byte signature; it
 * is called by the writer thread without the log's lock.  A writer two
 * intervals behind makes new records wait for a checkpoint, and fail
 * when none can be signed.
 */
struct audit_signer {
	int (*sign)(void *arg, const uint8_t *md, size_t mdlen,
	    uint8_t *sig, size_t *siglen);
	void *arg;
	const uint8_t *spki;		/* the Ed25519 key's public half, DER */
	size_t spki_len;
	unsigned int every;		/* records between checkpoints, >= 1 */
	unsigned int seconds;		/* 0: no timed checkpoints */

	/*
	 * The HSM anchor and the batch seals (NULL: none, as in unit tests
	 * without an HSM).  mac is HMAC-SHA256 with a key in the HSM; the
	 * anchor is a value on the token only a logged-in session writes.
	 * Both are used by the writer thread and at open, never at once.
	 */
	int (*mac)(void *arg, const uint8_t *in, size_t len, uint8_t out[32]);
	int (*anchor_get)(void *arg, char **value, size_t *len);
	int (*anchor_set)(void *arg, const char *value, size_t len);
	int new_chain_on_tamper;	/* [audit] on_tamper = new-chain */
	const char *new_chain_reason;	/* kmsd --audit-new-chain REASON */
	/*
	 * [audit] publish = DIR: each signed checkpoint is also written to
	 * DIR/CHAIN/SIZE.note and DIR/CHAIN/latest, for witnesses and
	 * write-once stores (NULL: not published).
	 */
	const char *publish_dir;
	/*
	 * [audit] v2 = no, for measuring what v2 costs only: the writer
	 * hashes no leaves and writes no tree (checkpoints keep the tree as
	 * it was at open); with mac and the anchor NULL too, this is the log
	 * as it was before: a hash chain and signed checkpoints.
	 */
	int no_tree;
};

/*
 * Opens (creating as needed, mode 0700) the chain directory dir/chain and
 * continues it: the last segment's last complete record gives the next
 * seq and prev hash; a torn last line is cut off and the repair recorded.
 * With an anchor (see docs/audit.md) the chain is the one the anchor
 * names (chain, or chain-chainN after a new chain was started), and it must
 * extend the anchored checkpoint exactly, every record after it sealed;
 * else the open fails with KMS_ERR_VERIFY_FAILED and what was found, or,
 * with new_chain_on_tamper, starts the next chain (chain-chainN+1) whose first
 * seq is above everything the old one held.
 * The chain is locked (flock) for this process: a chain held by another
 * kmsd is KMS_ERR_ALREADY_EXISTS.  With a signer, the audit key's public
 * half is written next to the segments (audit-key-FPR.pem) and a first
 * checkpoint is made at once.  segment_max is the size after which a new
 * segment is started.
 */
int audit_open(const char *dir, const char *chain, size_t segment_max,
    const struct audit_signer *signer, struct audit **out,
    struct kms_status *st);
/* Makes a last checkpoint (when records were added since the last one) and closes. */
void audit_close(struct audit *a);

/*
 * With sync 0 records are written but not fdatasync'd: for measuring what
 * durability costs only (config `[audit] sync = no`), never for service.
 */
void audit_set_sync(struct audit *a, int sync);

/* Counts durable batches and checkpoints into m (metrics.h); before use. */
struct metrics;
void audit_set_metrics(struct audit *a, struct metrics *m);

/*
 * fn(arg, seq) is called by the writer thread after each batch is durable,
 * seq being its last record; it must only take note and return at once
 * (the writer waits for it).  fn NULL: nobody is told.
 */
void audit_set_notify(struct audit *a,
    void (*fn)(void *arg, uint64_t durable_seq), void *arg);

/*
 * A reply waiting for its record: audit_submit fills seq and gen, and the
 * log's writer thread calls done(w, 0) once the record is durable, or
 * done(w, KMS_ERR_AUDIT) when it was lost (the reply must then be
 * withheld).  done must not call back into the log.
 */
struct audit_waiter {
	uint64_t seq, gen;
	int err;
	void (*done)(struct audit_waiter *w, int err);
	struct audit_waiter *next;
};

/*
 * Queues ev and returns at once with *seq; w is settled later as above.
 * The worker that called it is free for the next request while the
 * record is written, so that the HSM never waits for the disk.  On an
 * error return w is not queued.
 */
int audit_submit(struct audit *a, const struct audit_event *ev,
    uint64_t *seq, struct audit_waiter *w);

/* Appends ev and waits until it is durable; *seq receives its number. */
int audit_append(struct audit *a, const struct audit_event *ev,
    uint64_t *seq);

/*
 * Where the text of a chain's HSM anchor stands: the first seq plus the
 * size of the checkpoint it anchors, which only grows as the chain and
 * its successors grow.  KMS_ERR_INVALID_ARGUMENT when v is no anchor.
 */
int audit_anchor_position(const char *v, uint64_t *pos);

/* The chain directory, e.g. "var/audit/127.0.0.1_7443". */
const char *audit_chain_dir(const struct audit *a);
/* The chain's name, e.g. "127.0.0.1_7443". */
const char *audit_chain_name(const struct audit *a);
/* The seq of the last durable record. */
uint64_t audit_last_seq(struct audit *a);
/* The PEM of the key that signs the checkpoints, or NULL without one. */
const char *audit_key_pem(const struct audit *a);

/*
 * Proofs (RFC 9162) against the chain's signed checkpoints, for
 * GetAuditProof and GetAuditConsistency.  tree_size 0 is the latest
 * checkpoint, AUDIT_CHECKPOINT_NOW one made now (at most once a second:
 * else KMS_ERR_RESOURCE_EXHAUSTED).  A record no checkpoint covers yet is
 * KMS_ERR_FAILED_PRECONDITION.  Free with audit_proof_clear.
 */
#define AUDIT_CHECKPOINT_NOW UINT64_MAX
struct audit_proof {
	char *record;			/* the line, without its newline */
	uint64_t leaf_index, tree_size;
	uint8_t inclusion[MERKLE_PROOF_MAX][MERKLE_HASH_LEN];	/* or consistency */
	size_t n;
	char *checkpoint;		/* the signed note of tree_size */
	char *old_checkpoint;		/* consistency: of old_size */
};
int audit_get_proof(struct audit *a, uint64_t seq, uint64_t tree_size,
    struct audit_proof *p, struct kms_status *st);
int audit_get_consistency(struct audit *a, uint64_t old_size,
    uint64_t new_size, struct audit_proof *p, struct kms_status *st);
void audit_proof_clear(struct audit_proof *p);

#endif /* KMS_AUDIT_H */
