/*
 * note.h: C2SP signed notes (https://c2sp.org/signed-note) with Ed25519
 * signatures, and the tlog-checkpoint body they carry
 * (https://c2sp.org/tlog-checkpoint).
 *
 * A note is UTF-8 text ending in a newline, a blank line, then one line
 * per signature: "\u2014 NAME BASE64(KEYID[4] || SIG)\n".  For Ed25519
 * the key ID is the first 4 bytes (big-endian) of
 * SHA-256(NAME || "\n" || 0x01 || PUBKEY[32]), and the signature covers
 * the text, its final newline included.  A checkpoint's text is
 *   ORIGIN "\n" TREE-SIZE (decimal) "\n" BASE64(ROOT[32]) "\n"
 * followed by optional extension lines.
 *
 * Parsing takes bounded input, keeps pointers into it and allocates
 * nothing; it is a fuzzing surface (tests/fuzz/fuzz_note.c).
 */
#ifndef KMS_NOTE_H
#define KMS_NOTE_H

#include <stddef.h>
#include <stdint.h>

#include "merkle.h"

#define NOTE_MAX 16384			/* bytes of a whole note */
#define NOTE_SIGS_MAX 100		/* signature lines */
#define NOTE_NAME_MAX 255
#define NOTE_ED25519_LEN 32
#define NOTE_ED25519_SIG_LEN 64
#define NOTE_ALG_ED25519 0x01
#define NOTE_DASH "\xe2\x80\x94"	/* U+2014, as in "— name sig" */

struct note_sig {
	const char *name;		/* into the note, not terminated */
	size_t name_len;
	uint32_t key_id;
	uint8_t sig[NOTE_ED25519_SIG_LEN + 8];
	size_t sig_len;			/* bytes after the key ID */
};

struct note {
	const char *text;		/* with its final newline */
	size_t text_len;
	struct note_sig sigs[NOTE_SIGS_MAX];
	size_t nsigs;
};

/* Splits msg into text and signature lines; 0, or -1 when malformed. */
int note_parse(const char *msg, size_t len, struct note *n)
    __attribute__((warn_unused_result));

uint32_t note_key_id(const char *name, const uint8_t pub[NOTE_ED25519_LEN]);

/*
 * 0 when n carries a valid Ed25519 signature by (name, pub); -1 when it
 * carries none by that key; -2 when one by that key does not verify.
 */
int note_verify(const struct note *n, const char *name,
    const uint8_t pub[NOTE_ED25519_LEN])
    __attribute__((warn_unused_result));

/* "— NAME BASE64\n" into buf; returns its length, or -1 when too long. */
int note_sig_line(const char *name, uint32_t key_id, const uint8_t *sig,
    size_t sig_len, char *buf, size_t len);

/* The verifier key "NAME+KEYID+BASE64(0x01 || PUB)"; length or -1. */
int note_vkey(const char *name, const uint8_t pub[NOTE_ED25519_LEN],
    char *buf, size_t len);
/* Parses a verifier key; checks its key ID.  0 or -1. */
int note_vkey_parse(const char *vkey, char *name, size_t namelen,
    uint8_t pub[NOTE_ED25519_LEN]) __attribute__((warn_unused_result));

/* The raw key of an Ed25519 SubjectPublicKeyInfo (RFC 8410); 0 or -1. */
int note_ed25519_from_spki(const uint8_t *der, size_t len,
    uint8_t pub[NOTE_ED25519_LEN]);
/* The SubjectPublicKeyInfo (44 bytes) of a raw Ed25519 key. */
#define NOTE_ED25519_SPKI_LEN 44
void note_ed25519_spki(const uint8_t pub[NOTE_ED25519_LEN],
    uint8_t der[NOTE_ED25519_SPKI_LEN]);

struct checkpoint {
	char origin[NOTE_NAME_MAX + 1];
	uint64_t size;
	uint8_t root[MERKLE_HASH_LEN];
};

/* Parses a checkpoint body (a note's text); 0 or -1. */
int checkpoint_parse(const char *text, size_t len, struct checkpoint *cp)
    __attribute__((warn_unused_result));
/* Formats a checkpoint body; returns its length or -1. */
int checkpoint_text(const char *origin, uint64_t size,
    const uint8_t root[MERKLE_HASH_LEN], char *buf, size_t len);

/* Standard base64 with padding; lengths or -1. */
int note_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int note_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif /* KMS_NOTE_H */
