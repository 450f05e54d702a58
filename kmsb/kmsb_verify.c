/*
 * kmsb_verify.c: the streaming verifier of kms OTA bundles.
 *
 * The bundle is: manifest, u16 signature length, signature, u16 statement
 * length, statement, then the chunks (ciphertext || tag each).  The
 * verifier buffers the manifest, signature and statement (bounded), checks
 * them all before it looks at any chunk, and then holds at most one chunk.
 * A chunk is released to the caller only after the SHA-256 of its
 * ciphertext equals the one in the signed manifest and its GCM tag
 * verified; on the first failure the verifier is spent.
 */
#include <stdlib.h>
#include <string.h>

#include "kmsb.h"
#include "kmsb_crypto.h"
#include "kmsb_hpke.h"

/*
 * Room before the manifest and the statement in their buffers for the
 * domain-separation prefix, so that the signed message is contiguous.
 */
#define PREFIX_ROOM	24
#define HEAD_LEN	10	/* magic, version, manifest length */

enum vstate {
	V_HEAD, V_MANIFEST, V_SIGLEN, V_SIG, V_STLEN, V_STATEMENT, V_CHUNK,
	V_DONE, V_FAILED, V_FINISHED
};

struct kmsb_verifier {
	struct kmsb_policy p;
	char app[KMSB_STR_MAX + 1], channel[KMSB_STR_MAX + 1];
	enum vstate state;
	int err;

	/* Where the bytes being collected go: need bytes at dst. */
	uint8_t *dst;
	size_t need, have;

	uint8_t head[HEAD_LEN], len2[2];
	uint8_t *mbuf;			/* PREFIX_ROOM + manifest */
	uint8_t sig[KMSB_SIG_MAX];
	size_t sig_len;
	uint8_t stbuf[PREFIX_ROOM + KMSB_STATEMENT_MAX];
	size_t st_len;

	struct kmsb_manifest m;
	struct kmsb_statement st;
	int accepted;
	uint8_t cek[KMSB_CEK_LEN];
	uint8_t header_hash[KMSB_HASH_LEN];
	uint8_t *cbuf, *pbuf;		/* one chunk: ciphertext || tag, plaintext */
	uint32_t next;			/* index of the next chunk */
};

int
kmsb_key_id(uint8_t alg, const uint8_t *key, size_t len,
    uint8_t id[KMSB_KEY_ID_LEN])
{
	uint8_t buf[1 + KMSB_PUB_MAX];

	if (len > KMSB_PUB_MAX)
		return -1;
	buf[0] = alg;
	memcpy(buf + 1, key, len);
	return kmsb_c_sha256(buf, 1 + len, id);
}

static int
fail(struct kmsb_verifier *v, int err)
{
	v->err = err;
	v->state = V_FAILED;
	kmsb_c_wipe(v->cek, sizeof(v->cek));
	if (v->pbuf != NULL)
		kmsb_c_wipe(v->pbuf, v->m.chunk_size);
	return err;
}

static void
expect(struct kmsb_verifier *v, enum vstate s, uint8_t *dst, size_t need)
{
	v->state = s;
	v->dst = dst;
	v->need = need;
	v->have = 0;
}

static int
str_eq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && memcmp(a, b, alen) == 0;
}

int
kmsb_verifier_init(struct kmsb_verifier **vp, const struct kmsb_policy *p)
{
	struct kmsb_verifier *v;
	size_t al, cl;

	if (vp == NULL)
		return KMSB_ERR_ARG;
	*vp = NULL;
	if (p == NULL || p->app_id == NULL || p->channel == NULL)
		return KMSB_ERR_ARG;
	al = strlen(p->app_id);
	cl = strlen(p->channel);
	if (al == 0 || al > KMSB_STR_MAX || cl == 0 || cl > KMSB_STR_MAX ||
	    !((p->root.alg == KMSB_SIG_ED25519 && p->root.len == 32) ||
	    (p->root.alg == KMSB_SIG_P256_SHA256 && p->root.len == 65)))
		return KMSB_ERR_ARG;
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return KMSB_ERR_NOMEM;
	v->p = *p;
	memcpy(v->app, p->app_id, al + 1);
	memcpy(v->channel, p->channel, cl + 1);
	v->p.app_id = v->app;
	v->p.channel = v->channel;
	expect(v, V_HEAD, v->head, HEAD_LEN);
	*vp = v;
	return KMSB_OK;
}

int
kmsb_signature_verify(const struct kmsb_pubkey *k, const uint8_t *msg,
    size_t len, const uint8_t *sig, size_t sig_len)
{
	int ok = 0;

	if (k->alg == KMSB_SIG_ED25519)
		ok = sig_len == 64 && k->len == 32 &&
		    kmsb_c_ed25519_verify(k->key, msg, len, sig) == 0;
	else if (k->alg == KMSB_SIG_P256_SHA256)
		ok = k->len == 65 &&
		    kmsb_c_p256_verify(k->key, msg, len, sig, sig_len) == 0;
	return ok ? KMSB_OK : KMSB_ERR_SIGNATURE;
}

/* The statement: signed by the root, for this app, current, not replayed. */
static int
check_statement(struct kmsb_verifier *v)
{
	static const char dom[] = KMSB_STATEMENT_DOMAIN;
	struct kmsb_statement *s = &v->st;
	uint8_t *body = v->stbuf + PREFIX_ROOM;
	int r;

	if ((r = kmsb_statement_parse(body, v->st_len, s)) != KMSB_OK)
		return r;
	memcpy(body - sizeof(dom), dom, sizeof(dom));
	if (s->root_alg != v->p.root.alg ||
	    kmsb_signature_verify(&v->p.root, body - sizeof(dom),
	    sizeof(dom) + s->body_len, s->sig, s->sig_len) != 0)
		return KMSB_ERR_STATEMENT;
	if (!str_eq(s->app_id, s->app_id_len, v->p.app_id))
		return KMSB_ERR_APP;
	if (s->seq < v->p.last_statement_seq)
		return KMSB_ERR_STATEMENT_REPLAY;
	if (v->p.now > s->expires)
		return KMSB_ERR_STATEMENT_EXPIRED;
	return KMSB_OK;
}

/* The manifest's signature, by a key the statement names. */
static int
check_manifest_sig(struct kmsb_verifier *v)
{
	static const char dom[] = KMSB_MANIFEST_DOMAIN;
	const struct kmsb_statement_key *k = NULL;
	uint8_t id[KMSB_KEY_ID_LEN], *man = v->mbuf + PREFIX_ROOM;
	unsigned i;

	for (i = 0; i < v->st.key_count && k == NULL; i++) {
		if (kmsb_key_id(v->st.keys[i].pub.alg, v->st.keys[i].pub.key,
		    v->st.keys[i].pub.len, id) != 0)
			return KMSB_ERR_CRYPTO;
		if (v->st.keys[i].pub.alg == v->m.sig_alg &&
		    memcmp(id, v->m.signing_key_id, sizeof(id)) == 0)
			k = &v->st.keys[i];
	}
	if (k == NULL)
		return KMSB_ERR_UNKNOWN_KEY;
	if (v->p.now > k->not_after)
		return KMSB_ERR_KEY_EXPIRED;
	memcpy(man - sizeof(dom), dom, sizeof(dom));
	if (kmsb_signature_verify(&k->pub, man - sizeof(dom),
	    sizeof(dom) + v->m.manifest_len, v->sig, v->sig_len) != 0)
		return KMSB_ERR_SIGNATURE;
	return KMSB_OK;
}

/* Opens the content key sealed to this device. */
static int
open_cek(struct kmsb_verifier *v)
{
	static const uint8_t base[32] = { 9 };
	struct kmsb_recipient rc;
	uint8_t pk[32], id[KMSB_KEY_ID_LEN], info[KMSB_HPKE_INFO_MAX];
	size_t info_len;
	unsigned i;

	if (kmsb_c_x25519(pk, v->p.recipient_sk, base) != 0 ||
	    kmsb_key_id(0, pk, sizeof(pk), id) != 0)
		return KMSB_ERR_RECIPIENT;
	info_len = kmsb_cek_info(info, v->m.app_id, v->m.app_id_len,
	    v->m.channel, v->m.channel_len, v->m.seq);
	for (i = 0; i < v->m.recipient_count; i++) {
		kmsb_manifest_recipient(&v->m, i, &rc);
		if (memcmp(rc.key_id, id, sizeof(id)) != 0)
			continue;
		if (kmsb_hpke_open(v->p.recipient_sk, rc.enc, info, info_len,
		    NULL, 0, rc.sealed_cek, KMSB_CEK_LEN,
		    rc.sealed_cek + KMSB_CEK_LEN, v->cek) == 0)
			return KMSB_OK;
		kmsb_c_wipe(v->cek, sizeof(v->cek));
	}
	return KMSB_ERR_RECIPIENT;
}

/* Everything before the first chunk. */
static int
accept_header(struct kmsb_verifier *v)
{
	const struct kmsb_manifest *m = &v->m;
	int r;

	if ((r = check_statement(v)) != KMSB_OK ||
	    (r = check_manifest_sig(v)) != KMSB_OK)
		return r;
	if (!str_eq(m->app_id, m->app_id_len, v->p.app_id))
		return KMSB_ERR_APP;
	if (!str_eq(m->channel, m->channel_len, v->p.channel))
		return KMSB_ERR_CHANNEL;
	if (m->seq <= v->p.last_seq)
		return KMSB_ERR_ROLLBACK;
	if (v->p.now < m->created)
		return KMSB_ERR_NOT_YET_VALID;
	if (v->p.now > m->expires)
		return KMSB_ERR_EXPIRED;
	if ((r = open_cek(v)) != KMSB_OK)
		return r;
	if (kmsb_c_sha256(v->mbuf + PREFIX_ROOM, m->header_len,
	    v->header_hash) != 0)
		return KMSB_ERR_CRYPTO;
	if ((v->cbuf = malloc((size_t)m->chunk_size + KMSB_TAG_LEN)) == NULL ||
	    (v->pbuf = malloc(m->chunk_size)) == NULL)
		return KMSB_ERR_NOMEM;
	v->accepted = 1;
	return KMSB_OK;
}

/* The ciphertext length of chunk i. */
static size_t
chunk_len(const struct kmsb_manifest *m, uint32_t i)
{
	if (i + 1 < m->chunk_count)
		return m->chunk_size;
	return (size_t)(m->payload_size - (uint64_t)i * m->chunk_size);
}

/* One whole chunk, ciphertext || tag, n bytes. */
static int
process_chunk(struct kmsb_verifier *v, const uint8_t *c, size_t n,
    kmsb_output_fn out, void *arg)
{
	const struct kmsb_manifest *m = &v->m;
	uint8_t h[KMSB_HASH_LEN], nonce[KMSB_NONCE_LEN];
	uint8_t aad[KMSB_HASH_LEN + 8 + 1];
	size_t ptlen = n - KMSB_TAG_LEN;
	uint64_t i = v->next;
	int k;

	if (kmsb_c_sha256(c, n, h) != 0)
		return KMSB_ERR_CRYPTO;
	if (kmsb_c_memcmp(h, m->chunk_hashes + i * KMSB_HASH_LEN,
	    KMSB_HASH_LEN) != 0)
		return KMSB_ERR_CHUNK;
	/* nonce = base XOR (0^32 || be64(i)); AAD = header hash || i || last */
	memcpy(nonce, m->nonce_base, KMSB_NONCE_LEN);
	memcpy(aad, v->header_hash, KMSB_HASH_LEN);
	for (k = 0; k < 8; k++) {
		nonce[4 + k] ^= (uint8_t)(i >> (56 - 8 * k));
		aad[KMSB_HASH_LEN + k] = (uint8_t)(i >> (56 - 8 * k));
	}
	aad[KMSB_HASH_LEN + 8] = i + 1 == m->chunk_count;
	if (kmsb_c_gcm_open(v->cek, sizeof(v->cek), nonce, aad, sizeof(aad),
	    c, ptlen, c + ptlen, v->pbuf) != 0)
		return KMSB_ERR_CHUNK;
	if (ptlen > 0 && out != NULL && out(arg, v->pbuf, ptlen) != 0)
		return KMSB_ERR_OUTPUT;
	kmsb_c_wipe(v->pbuf, ptlen);
	v->next++;
	return KMSB_OK;
}

static void
expect_chunk(struct kmsb_verifier *v)
{
	if (v->next == v->m.chunk_count) {
		kmsb_c_wipe(v->cek, sizeof(v->cek));
		expect(v, V_DONE, NULL, 0);
	} else
		expect(v, V_CHUNK, v->cbuf, chunk_len(&v->m, v->next) +
		    KMSB_TAG_LEN);
}

/* The field being collected is complete: on to the next. */
static int
step(struct kmsb_verifier *v)
{
	uint32_t mlen;
	size_t n;
	int r;

	switch (v->state) {
	case V_HEAD:
		if (memcmp(v->head, "KMSB", 4) != 0 ||
		    ((v->head[4] << 8) | v->head[5]) != KMSB_FORMAT_VERSION)
			return KMSB_ERR_FORMAT;
		mlen = (uint32_t)v->head[6] << 24 | (uint32_t)v->head[7] << 16 |
		    (uint32_t)v->head[8] << 8 | v->head[9];
		if (mlen < KMSB_MANIFEST_FIXED)
			return KMSB_ERR_FORMAT;
		if (mlen > KMSB_MANIFEST_MAX)
			return KMSB_ERR_LIMIT;
		if ((v->mbuf = malloc(PREFIX_ROOM + (size_t)mlen)) == NULL)
			return KMSB_ERR_NOMEM;
		memcpy(v->mbuf + PREFIX_ROOM, v->head, HEAD_LEN);
		expect(v, V_MANIFEST, v->mbuf + PREFIX_ROOM, mlen);
		v->have = HEAD_LEN;
		return KMSB_OK;
	case V_MANIFEST:
		if ((r = kmsb_manifest_parse(v->mbuf + PREFIX_ROOM, v->need,
		    &v->m)) != KMSB_OK)
			return r;
		expect(v, V_SIGLEN, v->len2, 2);
		return KMSB_OK;
	case V_SIGLEN:
		n = (size_t)v->len2[0] << 8 | v->len2[1];
		if (n == 0 || n > KMSB_SIG_MAX)
			return KMSB_ERR_FORMAT;
		v->sig_len = n;
		expect(v, V_SIG, v->sig, n);
		return KMSB_OK;
	case V_SIG:
		expect(v, V_STLEN, v->len2, 2);
		return KMSB_OK;
	case V_STLEN:
		n = (size_t)v->len2[0] << 8 | v->len2[1];
		if (n == 0)
			return KMSB_ERR_FORMAT;
		if (n > KMSB_STATEMENT_MAX)
			return KMSB_ERR_LIMIT;
		v->st_len = n;
		expect(v, V_STATEMENT, v->stbuf + PREFIX_ROOM, n);
		return KMSB_OK;
	case V_STATEMENT:
		if ((r = accept_header(v)) != KMSB_OK)
			return r;
		expect_chunk(v);
		return KMSB_OK;
	default:
		return KMSB_ERR_STATE;
	}
}

int
kmsb_verifier_update(struct kmsb_verifier *v, const uint8_t *in, size_t len,
    kmsb_output_fn out, void *arg)
{
	size_t n;
	int r;

	if (v == NULL || (in == NULL && len > 0))
		return KMSB_ERR_ARG;
	if (v->state == V_FAILED)
		return v->err;
	if (v->state == V_FINISHED)
		return KMSB_ERR_STATE;
	while (len > 0) {
		if (v->state == V_DONE)
			return fail(v, KMSB_ERR_TRAILING);
		/* A whole chunk in the input is used in place, not copied. */
		if (v->state == V_CHUNK && v->have == 0 && len >= v->need) {
			n = v->need;
			if ((r = process_chunk(v, in, n, out, arg)) != KMSB_OK)
				return fail(v, r);
			in += n;
			len -= n;
			expect_chunk(v);
			continue;
		}
		n = v->need - v->have;
		if (n > len)
			n = len;
		memcpy(v->dst + v->have, in, n);
		v->have += n;
		in += n;
		len -= n;
		if (v->have < v->need)
			break;
		if (v->state == V_CHUNK) {
			r = process_chunk(v, v->cbuf, v->need, out, arg);
			if (r == KMSB_OK)
				expect_chunk(v);
		} else
			r = step(v);
		if (r != KMSB_OK)
			return fail(v, r);
	}
	return KMSB_OK;
}

int
kmsb_verifier_final(struct kmsb_verifier *v)
{
	if (v == NULL)
		return KMSB_ERR_ARG;
	if (v->state == V_FAILED)
		return v->err;
	if (v->state == V_FINISHED)
		return KMSB_ERR_STATE;
	if (v->state != V_DONE)
		return fail(v, KMSB_ERR_TRUNCATED);
	v->state = V_FINISHED;
	return KMSB_OK;
}

const struct kmsb_manifest *
kmsb_verifier_manifest(const struct kmsb_verifier *v, uint64_t *statement_seq)
{
	if (v == NULL || !v->accepted)
		return NULL;
	if (statement_seq != NULL)
		*statement_seq = v->st.seq;
	return &v->m;
}

void
kmsb_verifier_free(struct kmsb_verifier *v)
{
	if (v == NULL)
		return;
	if (v->pbuf != NULL)
		kmsb_c_wipe(v->pbuf, v->m.chunk_size);
	free(v->pbuf);
	free(v->cbuf);
	free(v->mbuf);
	kmsb_c_wipe(v, sizeof(*v));
	free(v);
}
