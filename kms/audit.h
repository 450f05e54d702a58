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
 * Opens (creating as needed, mode 0700) the chain directory dir/chain and
 * continues it: the last segment's last complete record gives the next
 * seq and prev hash; a torn last line is cut off and the repair logged.
 * segment_max is the size after which a new segment is started.
 */
int audit_open(const char *dir, const char *chain, size_t segment_max,
    struct audit **out, struct kms_status *st);
void audit_close(struct audit *a);

/* Appends ev durably; *seq receives its sequence number. */
int audit_append(struct audit *a, const struct audit_event *ev,
    uint64_t *seq);

/* The chain directory, e.g. "var/audit/127.0.0.1_7443". */
const char *audit_chain_dir(const struct audit *a);

#endif /* KMS_AUDIT_H */
