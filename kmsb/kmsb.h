/*
 * kmsb.h: the device side of kms OTA bundles (docs/bundle-format.md).
 *
 * A verifier is made from a policy (the root public key the device was
 * built with, its app id and channel, the time, the last accepted
 * sequence numbers and the device's X25519 private key) and then fed the
 * bundle's bytes in pieces of any size.  Plaintext leaves through the
 * output callback one chunk at a time, and only after that chunk's
 * ciphertext matched the hash in the signed manifest and its GCM tag
 * verified.  kmsb_verifier_final() is the only call that says the whole
 * bundle was good: a device must not act on the output (install, boot)
 * before it returned KMSB_OK.
 *
 * Memory is bounded by the manifest (KMSB_MANIFEST_MAX) plus one chunk
 * (KMSB_CHUNK_MAX), whatever the bundle's size.  No dependency on kms,
 * gRPC or any particular crypto library: the primitives come from the
 * small interface in kmsb_crypto.h.
 */
#ifndef KMSB_H
#define KMSB_H

#include <stddef.h>
#include <stdint.h>

#define KMSB_WARN_UNUSED __attribute__((warn_unused_result))

#define KMSB_FORMAT_VERSION	1

/* Signature algorithms of manifests and statements. */
#define KMSB_SIG_ED25519	1	/* kms ED25519: the message itself */
#define KMSB_SIG_P256_SHA256	2	/* kms EC_P256_SHA256: DER ECDSA */

/* Suites of format version 1 (the only ones defined). */
#define KMSB_PAYLOAD_AES256GCM_CHUNKED	1
#define KMSB_KEM_HPKE_X25519_SHA256_AES128GCM	1

/* Bounds; a bundle beyond them is refused before anything is allocated. */
#define KMSB_MANIFEST_MAX	(256 * 1024)
#define KMSB_STATEMENT_MAX	4096
#define KMSB_SIG_MAX		80	/* DER P-256 is at most 72 */
#define KMSB_CHUNK_MIN		1024
#define KMSB_CHUNK_MAX		(1024 * 1024)
#define KMSB_CHUNK_DEFAULT	(64 * 1024)
#define KMSB_STR_MAX		64	/* app id, channel, version */
#define KMSB_RECIPIENTS_MAX	16
#define KMSB_STATEMENT_KEYS_MAX	8
#define KMSB_TAG_LEN		16
#define KMSB_HASH_LEN		32
#define KMSB_KEY_ID_LEN		32
#define KMSB_NONCE_LEN		12
#define KMSB_CEK_LEN		32
#define KMSB_ENC_LEN		32	/* an X25519 public key */
#define KMSB_SEALED_CEK_LEN	(KMSB_CEK_LEN + KMSB_TAG_LEN)
#define KMSB_PUB_MAX		65	/* uncompressed P-256 point */

/* Fixed part of the manifest, before app id, channel and version. */
#define KMSB_MANIFEST_FIXED	98
#define KMSB_RECIPIENT_LEN	(KMSB_KEY_ID_LEN + KMSB_ENC_LEN + \
				 KMSB_SEALED_CEK_LEN)

/* Why a bundle was refused; 0 is KMSB_OK. */
enum kmsb_err {
	KMSB_OK = 0,
	KMSB_ERR_ARG = -1,		/* bad call (NULL, bad policy) */
	KMSB_ERR_NOMEM = -2,
	KMSB_ERR_FORMAT = -3,		/* malformed manifest, statement or framing */
	KMSB_ERR_LIMIT = -4,		/* beyond a KMSB_*_MAX bound */
	KMSB_ERR_STATEMENT = -5,	/* statement not signed by the root key */
	KMSB_ERR_STATEMENT_EXPIRED = -6,
	KMSB_ERR_STATEMENT_REPLAY = -7,	/* older than the last accepted statement */
	KMSB_ERR_UNKNOWN_KEY = -8,	/* manifest key not named by the statement */
	KMSB_ERR_KEY_EXPIRED = -9,	/* the statement's entry for it expired */
	KMSB_ERR_SIGNATURE = -10,	/* manifest signature does not verify */
	KMSB_ERR_APP = -11,		/* bundle for another app */
	KMSB_ERR_CHANNEL = -12,		/* bundle for another channel */
	KMSB_ERR_ROLLBACK = -13,	/* sequence <= the last accepted one */
	KMSB_ERR_EXPIRED = -14,
	KMSB_ERR_NOT_YET_VALID = -15,
	KMSB_ERR_RECIPIENT = -16,	/* no content key sealed to this device */
	KMSB_ERR_CHUNK = -17,		/* chunk hash or tag mismatch */
	KMSB_ERR_TRUNCATED = -18,	/* stream ended before the last chunk */
	KMSB_ERR_TRAILING = -19,	/* bytes after the last chunk */
	KMSB_ERR_OUTPUT = -20,		/* the output callback refused */
	KMSB_ERR_CRYPTO = -21,		/* the crypto backend failed */
	KMSB_ERR_STATE = -22,		/* call out of order (after final, ...) */
	KMSB_ERR_LAST = -23
};

/* A static description of an error code. */
const char *kmsb_strerror(int err);

/* A public key: algorithm and raw bytes (32, or a 65-byte P-256 point). */
struct kmsb_pubkey {
	uint8_t alg;			/* KMSB_SIG_* */
	uint8_t len;
	uint8_t key[KMSB_PUB_MAX];
};

/* What a device knows and accepts. */
struct kmsb_policy {
	struct kmsb_pubkey root;	/* built into the device */
	const char *app_id;
	const char *channel;
	uint64_t now;			/* unix seconds */
	uint64_t last_seq;		/* last accepted bundle sequence */
	uint64_t last_statement_seq;	/* last accepted statement sequence */
	uint8_t recipient_sk[32];	/* the device's X25519 private key */
};

/*
 * A parsed manifest.  Pointers point into the buffer that was parsed and
 * live as long as it; strings are NOT NUL-terminated (use the lengths).
 */
struct kmsb_recipient {
	const uint8_t *key_id;		/* SHA-256 of the X25519 public key */
	const uint8_t *enc;		/* HPKE encapsulated key */
	const uint8_t *sealed_cek;	/* AES-128-GCM(content key) || tag */
};

struct kmsb_manifest {
	uint16_t format_version;
	uint32_t manifest_len;
	uint8_t sig_alg, payload_suite, kem_suite;
	const uint8_t *signing_key_id;
	uint64_t seq, created, expires, payload_size;
	uint32_t chunk_size, chunk_count;
	const uint8_t *nonce_base;
	const char *app_id, *channel, *version;
	uint8_t app_id_len, channel_len, version_len;
	uint8_t recipient_count;
	const uint8_t *recipients;	/* recipient_count * KMSB_RECIPIENT_LEN */
	size_t header_len;		/* bytes before the chunk hash table */
	const uint8_t *chunk_hashes;	/* chunk_count * KMSB_HASH_LEN */
};

/*
 * Parses and checks the structure of a manifest (not its signature, not
 * any policy): magic, version, suites, bounds, lengths adding up, the
 * chunk count matching the payload size.  buf must hold exactly the
 * manifest.  No allocation, no crypto: kmsd can link it to look at a
 * manifest before it signs one.  Returns KMSB_OK, KMSB_ERR_FORMAT or
 * KMSB_ERR_LIMIT; *out is zeroed on entry.
 */
int kmsb_manifest_parse(const uint8_t *buf, size_t len,
    struct kmsb_manifest *out) KMSB_WARN_UNUSED;

/* The recipient entry i (< recipient_count) of a parsed manifest. */
void kmsb_manifest_recipient(const struct kmsb_manifest *m, unsigned i,
    struct kmsb_recipient *r);

/* A parsed signing-key statement (pointers into the parsed buffer). */
struct kmsb_statement_key {
	struct kmsb_pubkey pub;
	uint64_t not_after;
};

struct kmsb_statement {
	uint16_t format_version;
	uint16_t body_len;		/* the signed bytes: buf[0, body_len) */
	uint8_t root_alg;
	uint64_t seq, expires;
	const char *app_id;
	uint8_t app_id_len;
	uint8_t key_count;
	struct kmsb_statement_key keys[KMSB_STATEMENT_KEYS_MAX];
	const uint8_t *sig;
	uint16_t sig_len;
};

/* As kmsb_manifest_parse, for a whole statement (body and signature). */
int kmsb_statement_parse(const uint8_t *buf, size_t len,
    struct kmsb_statement *out) KMSB_WARN_UNUSED;

/* The domain-separation prefixes of what is signed (with their NUL). */
#define KMSB_MANIFEST_DOMAIN	"kms-bundle-manifest-v1"
#define KMSB_STATEMENT_DOMAIN	"kms-bundle-statement-v1"

/* The key id of a public key: SHA-256(alg || key).  X25519 keys: alg 0. */
int kmsb_key_id(uint8_t alg, const uint8_t *key, size_t len,
    uint8_t id[KMSB_KEY_ID_LEN]) KMSB_WARN_UNUSED;

/* Verifies sig over msg with k (KMSB_OK or KMSB_ERR_SIGNATURE). */
int kmsb_signature_verify(const struct kmsb_pubkey *k, const uint8_t *msg,
    size_t len, const uint8_t *sig, size_t sig_len) KMSB_WARN_UNUSED;

/*
 * Receives verified plaintext, in order.  Returns 0 to go on, anything
 * else to stop (the verifier then fails with KMSB_ERR_OUTPUT).
 */
typedef int (*kmsb_output_fn)(void *arg, const uint8_t *p, size_t len);

struct kmsb_verifier;

/*
 * Makes a verifier; *vp is NULL on failure.  The policy is copied (the
 * strings too): the caller may wipe its own copy of the private key.
 */
int kmsb_verifier_init(struct kmsb_verifier **vp,
    const struct kmsb_policy *p) KMSB_WARN_UNUSED;

/*
 * Feeds len bytes.  Calls out for each chunk that verified.  On any
 * failure the verifier is spent: every later call returns the same error.
 */
int kmsb_verifier_update(struct kmsb_verifier *v, const uint8_t *in,
    size_t len, kmsb_output_fn out, void *arg) KMSB_WARN_UNUSED;

/*
 * The end of the bundle: KMSB_OK only if the manifest verified, every
 * chunk was seen in order, the last one was flagged last and nothing
 * followed it.
 */
int kmsb_verifier_final(struct kmsb_verifier *v) KMSB_WARN_UNUSED;

/*
 * The manifest, once its signature and the policy checks passed (NULL
 * before); valid until kmsb_verifier_free().  The accepted statement's
 * sequence number, for the device to remember, is in *statement_seq.
 */
const struct kmsb_manifest *kmsb_verifier_manifest(
    const struct kmsb_verifier *v, uint64_t *statement_seq);

/* Wipes the keys and frees; NULL is a no-op. */
void kmsb_verifier_free(struct kmsb_verifier *v);

#endif /* KMSB_H */
