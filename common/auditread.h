/*
 * auditread.h: reading the audit log back: the offline verifier behind
 * `kmsctl audit verify` and the pager behind ListAuditRecords.
 *
 * Layout (see audit.h): AUDIT_ROOT/CHAIN/NNNNNNNNNNNNNNNNNNNN.jsonl, one
 * chain per kmsd instance, segment files named by the seq of their first
 * record, and AUDIT_ROOT/CHAIN/audit-key-*.pem, the public halves of the
 * HSM keys that signed the chain's checkpoints.
 *
 * What the verifier checks, per chain:
 *  - every line is one JSON object (duplicate members refused) with the
 *    chain's name, a seq one above its predecessor's (the first is 1) and
 *    `prev` equal to the SHA-256 of the previous line's bytes (64 zeros
 *    for the first), across segment boundaries;
 *  - segment names equal the seq of their first record, the first
 *    segment starts at 1, and only the last segment may be empty;
 *  - the RFC 9162 Merkle tree over every record (merkle.h) is rebuilt,
 *    and every checkpoint record (rpc "Checkpoint" by "kmsd") of today's
 *    kind holds a C2SP signed note (note.h) with origin "kms/CHAIN", a
 *    tree size between the last checkpoint's and its own seq, the root of
 *    the records up to that size, and a valid Ed25519 signature by a
 *    known audit key under the key name "kms/CHAIN";
 *  - checkpoints of the first kind (ECDSA P-256 over the chain name, seq,
 *    prev and promised interval) still verify, and no more records follow
 *    one than the interval it promised.
 * What it cannot see alone is said in docs/audit.md: records cut off
 * after the last checkpoint, and a whole chain directory removed (the HSM
 * anchor and witnesses see those).
 */
#ifndef KMS_AUDITREAD_H
#define KMS_AUDITREAD_H

#include <stddef.h>
#include <stdint.h>

#include "merkle.h"

struct checkpoint;
struct dirent;
struct kms_status;

#define AUDIT_LINE_MAX (64 * 1024)
#define AUDIT_HASH_HEX 64
#define AUDIT_KEY_PREFIX "audit-key-"
#define AUDIT_CHECKPOINT_RPC "Checkpoint"
/* The first record of a chain started after another, and its last. */
#define AUDIT_CHAIN_START_RPC "AuditChainStart"
#define AUDIT_CHAIN_END_RPC "AuditChainEnd"
#define AUDIT_SERVICE_IDENTITY "kmsd"

/*
 * The bytes a checkpoint signs (SHA-256, then ECDSA P-256 in the HSM):
 *   "kms-audit-checkpoint-v1\nchain=C\nseq=N\nprev=H\nevery=E\n"
 * Returns the length written (always < len for sane inputs) or -1.
 */
int audit_checkpoint_message(const char *chain, uint64_t seq,
    const char *prev, unsigned int every, char *buf, size_t len);

/* A set of trusted audit public keys, looked up by SPKI SHA-256 (hex). */
struct audit_keyset;
struct audit_keyset *audit_keyset_new(void);
void audit_keyset_free(struct audit_keyset *ks);
/* Adds every key of a PEM file ("BEGIN PUBLIC KEY", P-256). */
int audit_keyset_add_pem(struct audit_keyset *ks, const char *path,
    struct kms_status *st);
/* Adds a DER SubjectPublicKeyInfo; *fpr (65 bytes) receives its hex SHA-256. */
int audit_keyset_add_der(struct audit_keyset *ks, const uint8_t *der,
    size_t len, char *fpr);

/* Line-by-line verification of one chain (also the fuzzing surface). */
struct auditv_chain {
	char chain[256];
	const struct audit_keyset *keys;
	uint64_t next_seq;		/* the seq the next line must carry */
	char prev[AUDIT_HASH_HEX + 1];	/* hash of the last line */
	uint64_t last_cp_seq;		/* 0: no checkpoint yet */
	unsigned int cp_every;		/* interval promised by the last one */
	uint64_t since_cp;		/* records since the last checkpoint */
	uint64_t records, checkpoints;
	uint64_t line_seq;		/* seq of the line last looked at */
	char keys_used[4][17];		/* audit keys seen (first 16 hex digits) */
	unsigned int nkeys_used;
	/* The tree: of every record, and of the last signed checkpoint. */
	struct merkle_edge edge, cp_edge;
	uint8_t (*lag)[MERKLE_HASH_LEN];	/* leaves after cp_edge */
	size_t nlag, caplag;
	int notes;			/* a signed-note checkpoint was seen */
	uint64_t start_seq;		/* > 1: a chain started after another */
};

void auditv_chain_init(struct auditv_chain *c, const char *chain,
    const struct audit_keyset *keys);
/* Frees what the chain's check holds; c may be reused after init. */
void auditv_chain_free(struct auditv_chain *c);

/*
 * Checks a signed checkpoint note against the keys: origin "kms/" chain,
 * key name = origin, a valid Ed25519 signature by one of them.  *fpr
 * (65 bytes) receives the signing key's SPKI SHA-256.  0 or -1 with why.
 */
int audit_check_note(const struct audit_keyset *ks, const char *chain,
    const char *note, size_t len, struct checkpoint *cp, char *fpr,
    char *why, size_t whylen);
/*
 * Checks one line (without its newline).  Returns 0, or -1 with the
 * reason in why.
 */
int auditv_chain_line(struct auditv_chain *c, const char *line, size_t len,
    char *why, size_t whylen);

struct audit_verify_result {
	unsigned int chains;
	uint64_t records;		/* every record, checkpoints included */
	uint64_t checkpoints;
	uint64_t unsigned_tail;		/* records after each chain's last checkpoint */
	uint64_t tree_size;		/* of the last chain */
	char root[MERKLE_HASH_LEN * 2 + 1];	/* its root, hex */
	unsigned int warnings;		/* e.g. a torn last line kmsd will cut */
	int ok;				/* 1 intact */
	/* The first problem found, when !ok. */
	char file[8192];
	unsigned long line;		/* 1-based; 0 when not about a line */
	uint64_t seq;			/* the record's seq when known, else 0 */
	char why[512];
};

/*
 * Verifies path: an audit root holding chain directories, or one chain
 * directory.  When pubkey_pem is not NULL only the keys in that file are
 * trusted (a pinned key, fetched from kms or kept apart); otherwise the
 * audit-key-*.pem files of each chain.  note, when not NULL, is called
 * with a line of text per chain and per warning.  Returns 0 when the
 * check could be made (res->ok tells the verdict), or an error (path
 * unreadable) with st set.
 */
int audit_verify(const char *path, const char *pubkey_pem,
    struct audit_verify_result *res,
    void (*note)(const char *msg, void *arg), void *arg,
    struct kms_status *st);

/*
 * Calls cb(dir, name) for the chain path is (when it holds segment files
 * itself) or for each directory in it (with segments_only, those holding
 * segment files), in name order, until cb returns non-zero: a negative
 * return is an error returned as is, a positive one stops the walk.
 * None found is KMS_ERR_NOT_FOUND, an unreadable path KMS_ERR_IO (st).
 */
int audit_chain_dirs(const char *path, int segments_only,
    int (*cb)(const char *dir, const char *name, void *arg), void *arg,
    struct kms_status *st);

/* One record as read back, valid during the callback. */
struct audit_record {
	uint64_t seq;
	uint32_t version;
	const char *time, *chain, *identity, *fingerprint, *peer, *rpc, *key;
	const char *result, *status, *reason, *request_sha256;
	const char *line;		/* the stored line, NUL-terminated */
	size_t len;
};

/* Filters; NULL or "" members match everything.  Times are RFC 3339. */
struct audit_filter {
	const char *identity, *key, *rpc, *result;
	const char *time_from, *time_to;	/* inclusive bounds */
};

/*
 * The time bounds of f in microseconds (INT64_MIN / INT64_MAX when open);
 * a bad bound is KMS_ERR_INVALID_ARGUMENT with st set.
 */
int audit_filter_bounds(const struct audit_filter *f, int64_t *from,
    int64_t *to, struct kms_status *st);
/* 1 when rec passes f (from and to as audit_filter_bounds gave them). */
int audit_filter_match(const struct audit_filter *f, int64_t from, int64_t to,
    const struct audit_record *rec);

/*
 * Parses a stored line into rec, whose strings point into *hold (free it
 * with json_decref once rec is no longer used).  -1 when the line is not
 * a record (no JSON object with an integer seq).
 */
struct json_t;
int audit_record_parse(const char *line, size_t len, struct audit_record *rec,
    struct json_t **hold);

/*
 * Calls cb for up to limit records of the chain directory dir with seq >
 * after_seq that pass f, reading segment by segment with bounded memory
 * and looking at no more than scan_max records.  *next_after receives the
 * seq to pass as after_seq for the next page.  A bad time bound is
 * KMS_ERR_INVALID_ARGUMENT.
 */
int audit_list(const char *dir, uint64_t after_seq, size_t limit,
    size_t scan_max, const struct audit_filter *f,
    int (*cb)(const struct audit_record *rec, void *arg), void *arg,
    uint64_t *next_after, struct kms_status *st);

/*
 * Calls cb with every complete line (without its newline) of the chain
 * directory dir, segment by segment in seq order, with bounded memory; a
 * torn last line is left out.  Stops at the first non-zero cb return and
 * returns it.  Over-long lines and read errors are KMS_ERR_AUDIT.
 */
int audit_scan(const char *dir,
    int (*cb)(const char *line, size_t len, void *arg), void *arg,
    struct kms_status *st);

/* Lower-case hex of in into out (2 * len + 1 bytes). */
void audit_hex(const uint8_t *in, size_t len, char *out);
/* scandir(3) filter: segment files, NNNNNNNNNNNNNNNNNNNN.jsonl. */
int audit_segment_filter(const struct dirent *d);
/*
 * Of nseg segments sorted by name, the index of the last one that starts
 * at or before after_seq + 1 (where a reader of the records after
 * after_seq begins), or 0.
 */
int audit_segment_start(struct dirent **segs, int nseg, uint64_t after_seq);

/* Parses "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" into microseconds since 1970. */
int audit_parse_time(const char *s, int64_t *usec);

#endif /* KMS_AUDITREAD_H */
