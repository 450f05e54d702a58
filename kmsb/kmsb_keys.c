/*
 * kmsb_keys.c: PEM and the fixed DER layouts of Ed25519, P-256 and X25519
 * keys (RFC 8410, RFC 5480), without a crypto library.
 */
#include <stdio.h>
#include <string.h>

#include "kmsb_keys.h"

#define DER_MAX	256

static const uint8_t ed25519_spki_prefix[12] = {
	0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
};
static const uint8_t p256_spki_prefix[26] = {
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
	0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03,
	0x42, 0x00
};
static const uint8_t kmsb_x25519_spki_prefix[12] = {
	0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00
};
static const uint8_t kmsb_x25519_pkcs8_prefix[16] = {
	0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e,
	0x04, 0x22, 0x04, 0x20
};

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int
b64_value(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64, c)) == NULL)
		return -1;
	return (int)(p - b64);
}

/* Finds s (NUL-terminated) in the first len bytes of text. */
static const char *
find(const char *text, size_t len, const char *s)
{
	size_t n = strlen(s), i;

	for (i = 0; n <= len && i <= len - n; i++)
		if (memcmp(text + i, s, n) == 0)
			return text + i;
	return NULL;
}

/* The DER between "-----BEGIN label-----" and "-----END label-----". */
static int
pem_decode(const char *pem, size_t len, const char *label, uint8_t *der,
    size_t cap, size_t *der_len)
{
	char begin[64], end[64];
	const char *p, *e;
	uint32_t acc = 0;
	int bits = 0, v, pad = 0;
	size_t n = 0;

	*der_len = 0;
	if (pem == NULL || strlen(label) > 40)
		return -1;
	snprintf(begin, sizeof(begin), "-----BEGIN %s-----", label);
	snprintf(end, sizeof(end), "-----END %s-----", label);
	if ((p = find(pem, len, begin)) == NULL)
		return -1;
	p += strlen(begin);
	if ((e = find(p, len - (size_t)(p - pem), end)) == NULL)
		return -1;
	for (; p < e; p++) {
		if (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t')
			continue;
		if (*p == '=') {
			pad++;
			continue;
		}
		if (pad > 0 || (v = b64_value(*p)) < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == cap)
				return -1;
			der[n++] = (uint8_t)(acc >> bits);
		}
	}
	if (pad > 2)
		return -1;
	*der_len = n;
	return 0;
}

/* A PEM whose DER is exactly prefix || key_len bytes; the key to out. */
static int
fixed_der(const char *pem, size_t len, const char *label,
    const uint8_t *prefix, size_t prefix_len, uint8_t *out, size_t key_len)
{
	uint8_t der[DER_MAX];
	size_t n;
	int r = -1;

	if (pem_decode(pem, len, label, der, sizeof(der), &n) == 0 &&
	    n == prefix_len + key_len &&
	    memcmp(der, prefix, prefix_len) == 0) {
		memcpy(out, der + prefix_len, key_len);
		r = 0;
	}
	memset(der, 0, sizeof(der));
	return r;
}

int
kmsb_pem_sig_pubkey(const char *pem, size_t len, struct kmsb_pubkey *k)
{
	memset(k, 0, sizeof(*k));
	if (fixed_der(pem, len, "PUBLIC KEY", ed25519_spki_prefix,
	    sizeof(ed25519_spki_prefix), k->key, 32) == 0) {
		k->alg = KMSB_SIG_ED25519;
		k->len = 32;
		return 0;
	}
	if (fixed_der(pem, len, "PUBLIC KEY", p256_spki_prefix,
	    sizeof(p256_spki_prefix), k->key, 65) == 0 && k->key[0] == 0x04) {
		k->alg = KMSB_SIG_P256_SHA256;
		k->len = 65;
		return 0;
	}
	memset(k, 0, sizeof(*k));
	return -1;
}

int
kmsb_pem_x25519_pub(const char *pem, size_t len, uint8_t pk[32])
{
	return fixed_der(pem, len, "PUBLIC KEY", kmsb_x25519_spki_prefix,
	    sizeof(kmsb_x25519_spki_prefix), pk, 32);
}

int
kmsb_pem_x25519_priv(const char *pem, size_t len, uint8_t sk[32])
{
	return fixed_der(pem, len, "PRIVATE KEY", kmsb_x25519_pkcs8_prefix,
	    sizeof(kmsb_x25519_pkcs8_prefix), sk, 32);
}
