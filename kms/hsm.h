/*
 * hsm.h: the one narrow door to the PKCS#11 module.
 *
 * Only hsm.c includes pkcs11.h; nothing PKCS#11 leaks through this header.
 * The module is loaded with dlopen, initialised with OS locking, the token
 * found by label (slot ids change), and the user logged in once with a PIN
 * read from a file and wiped at once.
 *
 * A struct hsm_session belongs to one thread at a time (one per worker).
 * Recovery is done here, in one place:
 *  - CKR_SESSION_HANDLE_INVALID / CKR_SESSION_CLOSED, and
 *    CKR_OPERATION_ACTIVE (an operation that a failed call left open):
 *    the session is replaced and the call retried once;
 *  - CKR_USER_NOT_LOGGED_IN: the PIN file is read again, the user logged
 *    in again, and the call retried once;
 *  - CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID: KMS_ERR_STALE_HANDLE,
 *    so that the caller looks the object up again;
 *  - CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT and the
 *    like: KMS_ERR_UNAVAILABLE;
 *  - anything else: KMS_ERR_HSM.
 * Every failure is logged once at warn level with the CKR_* name.
 *
 * Keys are generated inside the token as token objects: private and secret
 * keys with CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE = false; a signing
 * key's private half with CKA_SIGN alone (CKA_DECRYPT, CKA_UNWRAP and
 * CKA_DERIVE false); public keys are token objects too so that
 * GetPublicKey needs no private-key access.
 *
 * The layer gives what the token gives: raw attributes and raw
 * signatures.  Encoding them (SubjectPublicKeyInfo, DER ECDSA) is
 * pubkey.h's.  Every function is safe to call from several threads, each
 * with its own session; the ones that touch the token's object store
 * serialise themselves in the process (see hsm.c).
 */
#ifndef KMS_HSM_H
#define KMS_HSM_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"

struct hsm;
struct hsm_session;
struct secret;

typedef unsigned long hsm_handle_t;	/* a CK_OBJECT_HANDLE; 0 is never valid */

enum hsm_obj_class {
	HSM_OBJ_PRIVATE_KEY = 1,
	HSM_OBJ_PUBLIC_KEY,
	HSM_OBJ_SECRET_KEY,
	HSM_OBJ_DATA		/* CKO_DATA with CKA_APPLICATION = HSM_DATA_APPLICATION */
};

#define HSM_DATA_APPLICATION "kms"
#define HSM_LABEL_MAX 256

/*
 * Loads module, initialises it, finds the token labelled token_label,
 * reads the PIN from pin_file (see secret_read_pin_file), logs in as the
 * user and wipes the PIN.  Returns 0 and *out, or an error with a message
 * in st (bad module path, no such token, wrong PIN, PIN file mode).
 */
struct kms_status;
int hsm_open(const char *module, const char *token_label,
    const char *pin_file, struct hsm **out, struct kms_status *st);
/* Logs out, finalizes and unloads; NULL is a no-op.  Close sessions first. */
void hsm_close(struct hsm *hsm);

/* Opens a read-write user session; one per worker thread. */
int hsm_session_open(struct hsm *hsm, struct hsm_session **out);
void hsm_session_close(struct hsm_session *s);

/*
 * Generates a key pair for signing algorithm alg inside the token.  Both
 * objects get CKA_LABEL = label and CKA_ID = id (idlen bytes).
 */
int hsm_generate_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen,
    hsm_handle_t *priv, hsm_handle_t *pub);

/* Generates a secret key (AES-256 for KMS_ALG_AES_256_KWP) inside the token. */
int hsm_generate_secret_key(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen, hsm_handle_t *key);

/*
 * Finds the one object of class cls with CKA_LABEL = label.  Returns
 * KMS_ERR_NOT_FOUND when there is none; when there are several, the first
 * one found.
 */
int hsm_find(struct hsm_session *s, enum hsm_obj_class cls, const char *label,
    hsm_handle_t *out);
/*
 * Finds the objects of class cls labelled label: at most max handles in
 * out, their number in *n (0 when there is none; not an error).
 */
int hsm_find_all(struct hsm_session *s, enum hsm_obj_class cls,
    const char *label, hsm_handle_t *out, size_t max, size_t *n);

/*
 * Finds the data objects (CKA_APPLICATION = HSM_DATA_APPLICATION) whose
 * CKA_VALUE is value, for an object whose label changes: as hsm_find_all.
 */
int hsm_find_data_value(struct hsm_session *s, const uint8_t *value,
    size_t len, hsm_handle_t *out, size_t max, size_t *n);

/*
 * Finds the private and the public key of key type alg labelled label in
 * one search of the token, where two hsm_find calls would make two: on
 * SoftHSM2's file store every search visits every object on the token.
 * Returns KMS_ERR_NOT_FOUND when either half is missing; when there are
 * several of a kind, the first one found.
 */
int hsm_find_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, hsm_handle_t *priv, hsm_handle_t *pub);

/*
 * Calls cb for every object of class cls (for HSM_OBJ_DATA: only objects
 * with CKA_APPLICATION = HSM_DATA_APPLICATION) with its label and handle.
 * Labels longer than HSM_LABEL_MAX - 1 are skipped, and so are objects
 * destroyed by another process between the search and the read of their
 * label.  A non-zero return from cb stops the walk and is returned.
 */
int hsm_list(struct hsm_session *s, enum hsm_obj_class cls,
    int (*cb)(const char *label, hsm_handle_t h, void *arg), void *arg);

/*
 * One data object of hsm_list_data: its label and its CKA_VALUE, both
 * NUL-terminated (the NUL not counted in value_len), valid during the
 * callback only.
 */
struct hsm_object {
	hsm_handle_t h;
	const char *label;
	const uint8_t *value;
	size_t value_len;
};

/*
 * As hsm_list for HSM_OBJ_DATA, with each object's label and value read
 * in one C_GetAttributeValue call (into buffers that fit the usual
 * object; a larger one costs a size query and a second read).  Loading
 * the key store reads every data object on the token this way, and every
 * call costs file operations on SoftHSM2's file store.
 */
int hsm_list_data(struct hsm_session *s,
    int (*cb)(const struct hsm_object *o, void *arg), void *arg);

/*
 * Signs in with the private key priv of algorithm alg.  in is the digest
 * (EC, RSA PKCS#1, RSA PSS), the message (Ed25519) or the raw bytes
 * (RSA_RAW).  The signature is the token's: ECDSA as raw r || s (see
 * pubkey_sig_encode), Ed25519 as 64 raw bytes, RSA as the modulus-sized
 * block.  *siglen holds the capacity of sig on entry (HSM_SIG_MAX always
 * suffices).
 */
#define HSM_SIG_MAX 1024
int hsm_sign(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t priv, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen);

/*
 * The public attributes of the public key pub of algorithm alg, as the
 * token gives them: for EC and EdDSA a is CKA_EC_POINT; for RSA a is
 * CKA_MODULUS and b CKA_PUBLIC_EXPONENT (see pubkey_spki).  Free with
 * hsm_pubkey_clear.
 */
struct hsm_pubkey {
	uint8_t *a, *b;
	size_t alen, blen;
};
int hsm_public_key(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t pub, struct hsm_pubkey *out);
void hsm_pubkey_clear(struct hsm_pubkey *pk);

/* Creates a token, private, modifiable CKO_DATA object. */
int hsm_data_create(struct hsm_session *s, const char *label,
    const uint8_t *value, size_t len, hsm_handle_t *out);
/*
 * Replaces the CKA_VALUE of the data object *h labelled label.  Modules
 * that refuse to change it (SoftHSM2: CKR_ATTRIBUTE_READ_ONLY) get a new
 * object with the same label and the old one destroyed; *h is updated.
 */
int hsm_data_set(struct hsm_session *s, const char *label, hsm_handle_t *h,
    const uint8_t *value, size_t len);
/* Reads its CKA_VALUE into a malloc'd buffer (NUL-terminated, not counted in *len). */
int hsm_data_get(struct hsm_session *s, hsm_handle_t h,
    uint8_t **value, size_t *len);

/*
 * Reads the CKA_LABEL of object h into label (size bytes, NUL-terminated);
 * a label that does not fit, or that holds a NUL, is KMS_ERR_HSM.
 */
int hsm_label_get(struct hsm_session *s, hsm_handle_t h, char *label,
    size_t size);
/*
 * Changes the CKA_LABEL of object h in place (C_SetAttributeValue).  On
 * SoftHSM2 another process sees the new label at its next read of the
 * object, on both object stores; CKA_VALUE, by contrast, it refuses to
 * change (CKR_ATTRIBUTE_READ_ONLY).
 */
int hsm_label_set(struct hsm_session *s, hsm_handle_t h, const char *label);

/* C_DestroyObject. */
int hsm_destroy(struct hsm_session *s, hsm_handle_t h);

/*
 * Sets *ok to 1 when the key object h is sensitive, always sensitive, not
 * extractable and never extractable (secret and private keys), else 0.
 */
int hsm_key_is_protected(struct hsm_session *s, hsm_handle_t h, int *ok);

/* Fills buf with len bytes from the token's generator (C_GenerateRandom). */
int hsm_random(struct hsm_session *s, uint8_t *buf, size_t len);

/* Counts operations and failed calls into m (metrics.h); before use. */
struct metrics;
void hsm_set_metrics(struct hsm *hsm, struct metrics *m);

/*
 * Key wrap with the AES key kek (RFC 5649, padded AES key wrap), done in
 * the token: the bytes are put into a transient session secret-key object,
 * wrapped with C_WrapKey and the object destroyed, on every path.
 * *mech receives the PKCS#11 mechanism used, to be recorded in the blob.
 * out must hold inlen rounded up to 8, plus 8.
 */
#define HSM_WRAP_MAX_IN (65536 + 8)
int hsm_wrap(struct hsm_session *s, hsm_handle_t kek,
    const uint8_t *in, size_t inlen, uint8_t *out, size_t *outlen,
    unsigned long *mech);
/*
 * Unwraps with mechanism mech (as recorded at wrap time) into *out (a
 * secret holding the unwrapped bytes, which SoftHSM pads with zeros to a
 * multiple of 8: the caller keeps the true length).  A tampered blob is
 * KMS_ERR_VERIFY_FAILED.
 */
int hsm_unwrap(struct hsm_session *s, hsm_handle_t kek, unsigned long mech,
    const uint8_t *in, size_t inlen, struct secret **out);

/*
 * HMAC-SHA256 in the token, for the audit log's batch seals: a generic
 * secret key of HSM_HMAC_LEN bytes born in the token (private, sensitive,
 * never extractable, sign and verify only), and a MAC made with it.
 */
#define HSM_HMAC_LEN 32
int hsm_generate_hmac_key(struct hsm_session *s, const char *label,
    hsm_handle_t *key);
int hsm_hmac(struct hsm_session *s, hsm_handle_t key, const uint8_t *in,
    size_t inlen, uint8_t out[HSM_HMAC_LEN]);

/*
 * A copy of key as a session object of s (C_CopyObject with CKA_TOKEN
 * false): the same secret, still sensitive and never extractable, gone
 * when s closes or is reopened.  SoftHSM2's file store re-reads a token
 * object's file (open, lock, read) on every use, a session object lives
 * in memory, so a key used on every batch costs less as its copy.
 */
int hsm_session_copy(struct hsm_session *s, hsm_handle_t key,
    hsm_handle_t *copy);

#endif /* KMS_HSM_H */
