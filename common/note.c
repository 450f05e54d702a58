/*
 * note.c: C2SP signed notes and checkpoints (see note.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "note.h"

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410). */
static const uint8_t ed25519_spki_prefix[12] = {
	0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
};

int
note_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	size_t i, o = 0;
	uint32_t v;

	if ((len + 2) / 3 * 4 + 1 > cap)
		return -1;
	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < len) {
		v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return (int)o;
}

static int
b64_value(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64chars, c)) == NULL)
		return -1;
	return (int)(p - b64chars);
}

/* Strict: padding required, no other bytes, unused bits zero. */
int
note_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	size_t i, o = 0, pad = 0;
	uint32_t v;
	int d[4], k;

	if (len == 0 || len % 4 != 0)
		return -1;
	if (in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	if (len / 4 * 3 - pad > cap)
		return -1;
	for (i = 0; i < len; i += 4) {
		for (k = 0; k < 4; k++) {
			if (i + 4 == len && k >= 4 - (int)pad) {
				if (in[i + k] != '=')
					return -1;
				d[k] = 0;
			} else if ((d[k] = b64_value(in[i + k])) < 0)
				return -1;
		}
		v = (uint32_t)d[0] << 18 | (uint32_t)d[1] << 12 |
		    (uint32_t)d[2] << 6 | (uint32_t)d[3];
		out[o++] = (uint8_t)(v >> 16);
		if (i + 4 < len || pad < 2)
			out[o++] = (uint8_t)(v >> 8);
		else if ((v & 0xffff) != 0)
			return -1;
		if (i + 4 < len || pad < 1)
			out[o++] = (uint8_t)v;
		else if ((v & 0xff) != 0)
			return -1;
	}
	return (int)o;
}

/* Valid UTF-8 with no control character but newline (as the Go reference). */
static int
valid_text(const unsigned char *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t c;

	while (i < len) {
		c = s[i];
		if (c < 0x80) {
			if ((c < 0x20 && c != '\n') || c == 0x7f)
				return 0;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, c &= 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, c &= 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, c &= 0x07;
		else
			return 0;
		if (i + n >= len)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			c = c << 6 | (s[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates, beyond U+10FFFF. */
		if ((n == 2 && c < 0x800) || (n == 3 && c < 0x10000) ||
		    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
			return 0;
		i += n + 1;
	}
	return 1;
}

/* A key name: non-empty, no space, no '+' (bytes <= 0x20 refused). */
static int
valid_name(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > NOTE_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == '+' ||
		    s[i] == 0x7f)
			return 0;
	return valid_text((const unsigned char *)s, len);
}

int
note_parse(const char *msg, size_t len, struct note *n)
{
	const char *sigs, *end, *line, *nl, *sp;
	struct note_sig *s;
	uint8_t raw[NOTE_ED25519_SIG_LEN + 12];
	size_t i;
	int dl;

	memset(n, 0, sizeof(*n));
	if (len < 2 || len > NOTE_MAX ||
	    !valid_text((const unsigned char *)msg, len))
		return -1;
	/* The signature block follows the last blank line. */
	for (i = len - 1; i > 0; i--)
		if (msg[i - 1] == '\n' && msg[i] == '\n')
			break;
	if (i == 0)
		return -1;
	n->text = msg;
	n->text_len = i;
	sigs = msg + i + 1;
	end = msg + len;
	if (sigs == end || end[-1] != '\n')
		return -1;
	for (line = sigs; line < end; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(end - line));
		if (n->nsigs == NOTE_SIGS_MAX ||
		    (size_t)(nl - line) < strlen(NOTE_DASH " ") ||
		    memcmp(line, NOTE_DASH " ", strlen(NOTE_DASH " ")) != 0)
			return -1;
		line += strlen(NOTE_DASH " ");
		/* "NAME BASE64": the name ends at the last space. */
		for (sp = nl; sp > line && sp[-1] != ' '; sp--)
			;
		if (sp == line)
			return -1;
		s = &n->sigs[n->nsigs];
		s->name = line;
		s->name_len = (size_t)(sp - 1 - line);
		if (!valid_name(s->name, s->name_len) ||
		    (dl = note_b64_decode(sp, (size_t)(nl - sp), raw,
		    sizeof(raw))) < 5 || (size_t)dl - 4 > sizeof(s->sig))
			return -1;
		s->key_id = (uint32_t)raw[0] << 24 | (uint32_t)raw[1] << 16 |
		    (uint32_t)raw[2] << 8 | raw[3];
		s->sig_len = (size_t)dl - 4;
		memcpy(s->sig, raw + 4, s->sig_len);
		n->nsigs++;
	}
	return 0;
}

uint32_t
note_key_id(const char *name, const uint8_t pub[NOTE_ED25519_LEN])
{
	uint8_t buf[NOTE_NAME_MAX + 2 + NOTE_ED25519_LEN], md[32];
	size_t nl = strlen(name);

	if (nl > NOTE_NAME_MAX)
		nl = NOTE_NAME_MAX;
	memcpy(buf, name, nl);
	buf[nl] = '\n';
	buf[nl + 1] = NOTE_ALG_ED25519;
	memcpy(buf + nl + 2, pub, NOTE_ED25519_LEN);
	SHA256(buf, nl + 2 + NOTE_ED25519_LEN, md);
	return (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 |
	    (uint32_t)md[2] << 8 | md[3];
}

static int
ed25519_verify(const uint8_t pub[NOTE_ED25519_LEN], const char *msg,
    size_t len, const uint8_t *sig, size_t siglen)
{
	EVP_PKEY *pk;
	EVP_MD_CTX *c = NULL;
	int ok = 0;

	if (siglen != NOTE_ED25519_SIG_LEN ||
	    (pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
	    NOTE_ED25519_LEN)) == NULL)
		return 0;
	ok = (c = EVP_MD_CTX_new()) != NULL &&
	    EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) == 1 &&
	    EVP_DigestVerify(c, sig, siglen, (const uint8_t *)msg, len) == 1;
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(pk);
	return ok;
}

int
note_verify(const struct note *n, const char *name,
    const uint8_t pub[NOTE_ED25519_LEN])
{
	uint32_t id = note_key_id(name, pub);
	size_t i, nl = strlen(name);
	int seen = 0;

	for (i = 0; i < n->nsigs; i++) {
		if (n->sigs[i].key_id != id || n->sigs[i].name_len != nl ||
		    memcmp(n->sigs[i].name, name, nl) != 0)
			continue;
		if (ed25519_verify(pub, n->text, n->text_len, n->sigs[i].sig,
		    n->sigs[i].sig_len))
			return 0;
		seen = 1;
	}
	return seen ? -2 : -1;
}

int
note_sig_line(const char *name, uint32_t key_id, const uint8_t *sig,
    size_t sig_len, char *buf, size_t len)
{
	uint8_t raw[4 + NOTE_ED25519_SIG_LEN];
	char b64[(sizeof(raw) + 2) / 3 * 4 + 1];
	int n;

	if (sig_len > NOTE_ED25519_SIG_LEN || !valid_name(name, strlen(name)))
		return -1;
	raw[0] = (uint8_t)(key_id >> 24);
	raw[1] = (uint8_t)(key_id >> 16);
	raw[2] = (uint8_t)(key_id >> 8);
	raw[3] = (uint8_t)key_id;
	memcpy(raw + 4, sig, sig_len);
	if (note_b64_encode(raw, 4 + sig_len, b64, sizeof(b64)) < 0)
		return -1;
	n = snprintf(buf, len, NOTE_DASH " %s %s\n", name, b64);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

int
note_vkey(const char *name, const uint8_t pub[NOTE_ED25519_LEN], char *buf,
    size_t len)
{
	uint8_t raw[1 + NOTE_ED25519_LEN];
	char b64[64];
	int n;

	if (!valid_name(name, strlen(name)))
		return -1;
	raw[0] = NOTE_ALG_ED25519;
	memcpy(raw + 1, pub, NOTE_ED25519_LEN);
	if (note_b64_encode(raw, sizeof(raw), b64, sizeof(b64)) < 0)
		return -1;
	n = snprintf(buf, len, "%s+%08" PRIx32 "+%s", name,
	    note_key_id(name, pub), b64);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

int
note_vkey_parse(const char *vkey, char *name, size_t namelen,
    uint8_t pub[NOTE_ED25519_LEN])
{
	const char *p1, *p2;
	uint8_t raw[1 + NOTE_ED25519_LEN + 4];
	char hex[9];
	size_t nl, i;
	unsigned long id;
	char *endp;

	if ((p1 = strchr(vkey, '+')) == NULL ||
	    (p2 = strchr(p1 + 1, '+')) == NULL || p2 - p1 != 9)
		return -1;
	nl = (size_t)(p1 - vkey);
	if (nl + 1 > namelen || !valid_name(vkey, nl))
		return -1;
	memcpy(hex, p1 + 1, 8);
	hex[8] = '\0';
	for (i = 0; i < 8; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') ||
		    (hex[i] >= 'a' && hex[i] <= 'f')))
			return -1;
	id = strtoul(hex, &endp, 16);
	if (note_b64_decode(p2 + 1, strlen(p2 + 1), raw, sizeof(raw)) !=
	    1 + NOTE_ED25519_LEN || raw[0] != NOTE_ALG_ED25519)
		return -1;
	memcpy(name, vkey, nl);
	name[nl] = '\0';
	memcpy(pub, raw + 1, NOTE_ED25519_LEN);
	return note_key_id(name, pub) == (uint32_t)id ? 0 : -1;
}

int
note_ed25519_from_spki(const uint8_t *der, size_t len,
    uint8_t pub[NOTE_ED25519_LEN])
{
	if (len != NOTE_ED25519_SPKI_LEN ||
	    memcmp(der, ed25519_spki_prefix, sizeof(ed25519_spki_prefix)) != 0)
		return -1;
	memcpy(pub, der + sizeof(ed25519_spki_prefix), NOTE_ED25519_LEN);
	return 0;
}

void
note_ed25519_spki(const uint8_t pub[NOTE_ED25519_LEN],
    uint8_t der[NOTE_ED25519_SPKI_LEN])
{
	memcpy(der, ed25519_spki_prefix, sizeof(ed25519_spki_prefix));
	memcpy(der + sizeof(ed25519_spki_prefix), pub, NOTE_ED25519_LEN);
}

int
checkpoint_parse(const char *text, size_t len, struct checkpoint *cp)
{
	const char *p = text, *end = text + len, *nl;
	uint64_t v = 0;
	size_t n;

	memset(cp, 0, sizeof(*cp));
	if (len == 0 || text[len - 1] != '\n')
		return -1;
	/* Origin. */
	nl = memchr(p, '\n', (size_t)(end - p));
	n = (size_t)(nl - p);
	if (n == 0 || n > NOTE_NAME_MAX ||
	    !valid_text((const unsigned char *)p, n))
		return -1;
	memcpy(cp->origin, p, n);
	p = nl + 1;
	/* Tree size: decimal, no sign, no leading zero. */
	if (p == end || (nl = memchr(p, '\n', (size_t)(end - p))) == NULL ||
	    nl == p || (*p == '0' && nl - p > 1))
		return -1;
	for (; p < nl; p++) {
		if (*p < '0' || *p > '9' ||
		    v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	cp->size = v;
	p = nl + 1;
	/* Root hash. */
	if (p == end || (nl = memchr(p, '\n', (size_t)(end - p))) == NULL ||
	    note_b64_decode(p, (size_t)(nl - p), cp->root,
	    sizeof(cp->root)) != MERKLE_HASH_LEN)
		return -1;
	/* Extension lines, if any, must not be empty. */
	for (p = nl + 1; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == p)
			return -1;
	}
	return 0;
}

int
checkpoint_text(const char *origin, uint64_t size,
    const uint8_t root[MERKLE_HASH_LEN], char *buf, size_t len)
{
	char b64[48];
	int n;

	if (note_b64_encode(root, MERKLE_HASH_LEN, b64, sizeof(b64)) < 0 ||
	    strchr(origin, '\n') != NULL || *origin == '\0')
		return -1;
	n = snprintf(buf, len, "%s\n%" PRIu64 "\n%s\n", origin, size, b64);
	return n < 0 || (size_t)n >= len ? -1 : n;
}
