/*
 * kmsb_manifest.c: the parsers of the manifest and of the signing-key
 * statement (docs/bundle-format.md).  Pure functions over a buffer: no
 * allocation, no crypto, no I/O, so that the device verifier, the
 * producer, the fuzzer and (later) kmsd all share exactly one reading of
 * the format.
 */
#include <string.h>

#include "kmsb.h"

static const char *const errs[] = {
	"ok",
	"bad argument",
	"out of memory",
	"malformed bundle",
	"bundle exceeds a size limit",
	"signing-key statement not signed by the root key",
	"signing-key statement expired",
	"signing-key statement older than the last accepted one",
	"manifest signed by a key the statement does not name",
	"manifest signing key expired",
	"manifest signature does not verify",
	"bundle is for another app",
	"bundle is for another channel",
	"bundle sequence number not above the last accepted one (rollback)",
	"bundle expired",
	"bundle not yet valid",
	"no content key sealed to this device's key",
	"chunk does not match the signed manifest",
	"bundle truncated before its last chunk",
	"data after the last chunk",
	"output refused",
	"crypto backend failure",
	"call out of order",
};

const char *
kmsb_strerror(int err)
{
	if (err > 0 || err <= KMSB_ERR_LAST)
		return "unknown error";
	return errs[-err];
}

/* A bounds-checked reader over a buffer. */
struct rd {
	const uint8_t *p;
	size_t len, off;
	int bad;
};

static const uint8_t *
take(struct rd *r, size_t n)
{
	const uint8_t *q;

	if (r->bad || n > r->len - r->off) {
		r->bad = 1;
		return NULL;
	}
	q = r->p + r->off;
	r->off += n;
	return q;
}

static uint64_t
get_be(struct rd *r, size_t n)
{
	const uint8_t *q = take(r, n);
	uint64_t v = 0;
	size_t i;

	for (i = 0; q != NULL && i < n; i++)
		v = (v << 8) | q[i];
	return v;
}

/*
 * A length-prefixed (u8) string of 1..KMSB_STR_MAX printable ASCII
 * characters: app ids, channels and versions end up in file names, logs
 * and audit records, where control bytes have no business.
 */
static const char *
get_str(struct rd *r, uint8_t *len)
{
	const uint8_t *q;
	size_t i;

	*len = (uint8_t)get_be(r, 1);
	if (*len == 0 || *len > KMSB_STR_MAX)
		r->bad = 1;
	if ((q = take(r, *len)) == NULL)
		return NULL;
	for (i = 0; i < *len; i++)
		if (q[i] < 0x20 || q[i] > 0x7e)
			r->bad = 1;
	return (const char *)q;
}

static int
sig_alg_ok(uint8_t alg)
{
	return alg == KMSB_SIG_ED25519 || alg == KMSB_SIG_P256_SHA256;
}

int
kmsb_manifest_parse(const uint8_t *buf, size_t len, struct kmsb_manifest *m)
{
	struct rd r = { buf, len, 0, 0 };
	uint64_t want;

	memset(m, 0, sizeof(*m));
	if (buf == NULL || len < KMSB_MANIFEST_FIXED)
		return KMSB_ERR_FORMAT;
	if (len > KMSB_MANIFEST_MAX)
		return KMSB_ERR_LIMIT;
	if (memcmp(take(&r, 4), "KMSB", 4) != 0)
		return KMSB_ERR_FORMAT;
	m->format_version = (uint16_t)get_be(&r, 2);
	m->manifest_len = (uint32_t)get_be(&r, 4);
	m->sig_alg = (uint8_t)get_be(&r, 1);
	m->payload_suite = (uint8_t)get_be(&r, 1);
	m->kem_suite = (uint8_t)get_be(&r, 1);
	if (m->format_version != KMSB_FORMAT_VERSION ||
	    m->manifest_len != len || !sig_alg_ok(m->sig_alg) ||
	    m->payload_suite != KMSB_PAYLOAD_AES256GCM_CHUNKED ||
	    m->kem_suite != KMSB_KEM_HPKE_X25519_SHA256_AES128GCM ||
	    get_be(&r, 1) != 0)
		goto bad;
	m->signing_key_id = take(&r, KMSB_KEY_ID_LEN);
	m->seq = get_be(&r, 8);
	m->created = get_be(&r, 8);
	m->expires = get_be(&r, 8);
	m->payload_size = get_be(&r, 8);
	m->chunk_size = (uint32_t)get_be(&r, 4);
	m->chunk_count = (uint32_t)get_be(&r, 4);
	m->nonce_base = take(&r, KMSB_NONCE_LEN);
	m->app_id = get_str(&r, &m->app_id_len);
	m->channel = get_str(&r, &m->channel_len);
	m->version = get_str(&r, &m->version_len);
	m->recipient_count = (uint8_t)get_be(&r, 1);
	if (r.bad || m->created > m->expires ||
	    m->chunk_size < KMSB_CHUNK_MIN || m->chunk_size > KMSB_CHUNK_MAX ||
	    m->recipient_count == 0 ||
	    m->recipient_count > KMSB_RECIPIENTS_MAX)
		goto bad;
	/* An empty payload still has one (empty, last) chunk. */
	want = m->payload_size / m->chunk_size +
	    (m->payload_size % m->chunk_size != 0);
	if (want == 0)
		want = 1;
	if (m->chunk_count != want)
		goto bad;
	m->recipients = take(&r, (size_t)m->recipient_count *
	    KMSB_RECIPIENT_LEN);
	m->header_len = r.off;
	/* The count is bounded by len / 32 before it is multiplied. */
	if (r.bad || m->chunk_count > (len - r.off) / KMSB_HASH_LEN)
		goto bad;
	m->chunk_hashes = take(&r, (size_t)m->chunk_count * KMSB_HASH_LEN);
	if (r.bad || r.off != len)
		goto bad;
	return KMSB_OK;
 bad:
	memset(m, 0, sizeof(*m));
	return KMSB_ERR_FORMAT;
}

void
kmsb_manifest_recipient(const struct kmsb_manifest *m, unsigned i,
    struct kmsb_recipient *rc)
{
	const uint8_t *e = m->recipients + (size_t)i * KMSB_RECIPIENT_LEN;

	rc->key_id = e;
	rc->enc = e + KMSB_KEY_ID_LEN;
	rc->sealed_cek = e + KMSB_KEY_ID_LEN + KMSB_ENC_LEN;
}

/* The length of a raw public key of alg, 0 for an unknown alg. */
static size_t
pub_len(uint8_t alg)
{
	return alg == KMSB_SIG_ED25519 ? 32 :
	    alg == KMSB_SIG_P256_SHA256 ? 65 : 0;
}

int
kmsb_statement_parse(const uint8_t *buf, size_t len, struct kmsb_statement *s)
{
	struct rd r = { buf, len, 0, 0 };
	struct kmsb_statement_key *k;
	unsigned i;

	memset(s, 0, sizeof(*s));
	if (buf == NULL || len < 8)
		return KMSB_ERR_FORMAT;
	if (len > KMSB_STATEMENT_MAX)
		return KMSB_ERR_LIMIT;
	if (memcmp(take(&r, 4), "KMSS", 4) != 0)
		return KMSB_ERR_FORMAT;
	s->format_version = (uint16_t)get_be(&r, 2);
	s->body_len = (uint16_t)get_be(&r, 2);
	s->root_alg = (uint8_t)get_be(&r, 1);
	s->key_count = (uint8_t)get_be(&r, 1);
	s->seq = get_be(&r, 8);
	s->expires = get_be(&r, 8);
	s->app_id = get_str(&r, &s->app_id_len);
	if (r.bad || s->format_version != KMSB_FORMAT_VERSION ||
	    !sig_alg_ok(s->root_alg) || s->key_count == 0 ||
	    s->key_count > KMSB_STATEMENT_KEYS_MAX)
		goto bad;
	for (i = 0; i < s->key_count; i++) {
		k = &s->keys[i];
		k->pub.alg = (uint8_t)get_be(&r, 1);
		k->pub.len = (uint8_t)get_be(&r, 1);
		if (r.bad || pub_len(k->pub.alg) == 0 ||
		    k->pub.len != pub_len(k->pub.alg) ||
		    take(&r, k->pub.len) == NULL)
			goto bad;
		memcpy(k->pub.key, buf + r.off - k->pub.len, k->pub.len);
		k->not_after = get_be(&r, 8);
	}
	if (r.bad || r.off != s->body_len)
		goto bad;
	s->sig_len = (uint16_t)get_be(&r, 2);
	if (s->sig_len == 0 || s->sig_len > KMSB_SIG_MAX)
		goto bad;
	s->sig = take(&r, s->sig_len);
	if (r.bad || r.off != len)
		goto bad;
	return KMSB_OK;
 bad:
	memset(s, 0, sizeof(*s));
	return KMSB_ERR_FORMAT;
}
