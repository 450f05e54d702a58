/*
 * policy.h: who may do what, as a pure function.
 *
 * The policy file (INI, parsed with inih) maps identities to roles and
 * grants operations on key-name patterns to roles:
 *
 *   [role signer]
 *   members = ci, spiffe://example.org/ci
 *   allow = Sign Verify GetKey GetPublicKey on release-* dev-*
 *
 *   [role officer]
 *   members = officer
 *   allow = CreateKey GetKey ListKeys RotateKey SetVersionState on *
 *
 * `members` and `allow` may repeat.  Patterns are fnmatch(3) globs without
 * FNM_PATHNAME: `*` also matches `/`, so the pattern "release/" followed
 * by a star covers every key below release/.  Operations that touch no key
 * (ListAuditRecords) are granted with any pattern and checked against the
 * key "" (so use `on *`).  Everything not granted is denied.  WhoAmI and
 * Health need no grant.  ListKeys needs no grant of its own: it returns the
 * keys on which the caller holds any grant.
 */
#ifndef KMS_POLICY_H
#define KMS_POLICY_H

#include <stddef.h>

struct kms_status;

enum kms_op {
	KMS_OP_NONE = 0,
	KMS_OP_CREATE_KEY,
	KMS_OP_GET_KEY,
	KMS_OP_LIST_KEYS,
	KMS_OP_GET_PUBLIC_KEY,
	KMS_OP_SIGN,
	KMS_OP_VERIFY,
	KMS_OP_ROTATE_KEY,
	KMS_OP_SET_VERSION_STATE,
	KMS_OP_WRAP,
	KMS_OP_UNWRAP,
	KMS_OP_GENERATE_DATA_KEY,
	KMS_OP_LIST_AUDIT_RECORDS,
	KMS_OP_WHOAMI,
	KMS_OP_UPDATE_KEY,
	KMS_OP_SIGN_BUNDLE_MANIFEST,
	KMS_OP_SET_CERTIFICATE_CHAIN,
	KMS_OP_MAX
};

/* "Sign", "CreateKey", ... as in the RPC names; NULL for bad values. */
const char *policy_op_name(enum kms_op op);
/* The op named name, or KMS_OP_NONE. */
enum kms_op policy_op_by_name(const char *name);

struct policy;

/*
 * Parses a policy file.  A broken file is refused as a whole with
 * KMS_ERR_CONFIG and a message naming the line; *out is then NULL.
 */
int policy_load(const char *path, struct policy **out, struct kms_status *st);
/* Same, from a NUL-terminated string (for tests). */
int policy_parse(const char *text, struct policy **out, struct kms_status *st);
void policy_free(struct policy *p);

#define POLICY_REASON_MAX 384

struct policy_decision {
	int allow;				/* 1 allow, 0 deny */
	char reason[POLICY_REASON_MAX];		/* names the missing grant on deny */
};

/*
 * Decides whether identity may perform op on key (key is "" for ops that
 * touch no key).  Pure: no I/O, no allocation, no global state.  Deny by
 * default.  On deny the reason reads like
 *   identity "ci" (roles: signer) has no grant "CreateKey" on key "x"
 */
void policy_check(const struct policy *p, const char *identity,
    enum kms_op op, const char *key, struct policy_decision *out);

/* 1 when identity holds a grant for any op on key (ListKeys filter). */
int policy_may_see(const struct policy *p, const char *identity,
    const char *key);

/*
 * Writes the roles of identity into roles[0..max-1] (pointers into p,
 * valid while p lives) and returns how many there are in total.
 */
size_t policy_roles(const struct policy *p, const char *identity,
    const char **roles, size_t max);

#endif /* KMS_POLICY_H */
