/*
 * kmsb_seal.c: makes kms OTA bundles and signing-key statements
 * (docs/bundle-format.md).  Runs on the CI machine: OpenSSL for the
 * randomness and the encryption, the verifier's own code (kmsb_hpke.c,
 * kmsb_manifest.c, kmsb_crypto.h) for everything both sides compute, so
 * that the two cannot drift apart.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kmsb.h"
#include "kmsb_crypto.h"
#include "kmsb_hpke.h"
#include "kmsb_seal.h"

#define PREFIX_ROOM	24
#define NONCE_BASE_OFF	86	/* of the manifest's nonce base */

static int
why_set(char *why, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, KMSB_WHY_MAX, fmt, ap);
	va_end(ap);
	return err;
}

static uint8_t *
put_be(uint8_t *p, uint64_t v, int n)
{
	int i;

	for (i = n - 1; i >= 0; i--)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint8_t *
put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	*p++ = (uint8_t)n;
	memcpy(p, s, n);
	return p + n;
}

/* AES-GCM encryption with a context already keyed: only the IV changes. */
static int
gcm_seal(EVP_CIPHER_CTX *c, const uint8_t nonce[12], const uint8_t *aad,
    size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
    uint8_t tag[16])
{
	int n;

	if (len > INT32_MAX || aad_len > INT32_MAX ||
	    EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
	    (aad_len > 0 &&
	    EVP_EncryptUpdate(c, NULL, &n, aad, (int)aad_len) != 1) ||
	    (len > 0 && EVP_EncryptUpdate(c, ct, &n, pt, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(c, ct + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		return -1;
	return 0;
}

static EVP_CIPHER_CTX *
gcm_new(const uint8_t *key, size_t key_len)
{
	EVP_CIPHER_CTX *c;

	if ((c = EVP_CIPHER_CTX_new()) == NULL)
		return NULL;
	if (EVP_EncryptInit_ex(c, key_len == 32 ? EVP_aes_256_gcm() :
	    EVP_aes_128_gcm(), NULL, key, NULL) != 1) {
		EVP_CIPHER_CTX_free(c);
		return NULL;
	}
	return c;
}

int
kmsb_hpke_seal(const uint8_t ske[32], const uint8_t pkr[32],
    const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
    const uint8_t *pt, size_t pt_len, uint8_t enc[32], uint8_t *ct,
    uint8_t tag[16])
{
	static const uint8_t base[32] = { 9 };
	uint8_t dh[32], key[KMSB_HPKE_KEY_LEN], nonce[KMSB_NONCE_LEN];
	EVP_CIPHER_CTX *c = NULL;
	int r = -1;

	/* Encap (RFC 9180 4.1): enc = pk(skE), dh = DH(skE, pkR). */
	if (kmsb_c_x25519(enc, ske, base) != 0 ||
	    kmsb_c_x25519(dh, ske, pkr) != 0 ||
	    kmsb_hpke_schedule(dh, enc, pkr, info, info_len, NULL, key,
	    nonce) != 0 ||
	    (c = gcm_new(key, sizeof(key))) == NULL ||
	    gcm_seal(c, nonce, aad, aad_len, pt, pt_len, ct, tag) != 0)
		goto out;
	r = 0;
 out:
	EVP_CIPHER_CTX_free(c);
	OPENSSL_cleanse(dh, sizeof(dh));
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* Printable ASCII, 1..KMSB_STR_MAX characters. */
static int
str_ok(const char *s)
{
	size_t i, n = s == NULL ? 0 : strlen(s);

	if (n == 0 || n > KMSB_STR_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* Reads exactly n bytes (fewer only at a premature end of file). */
static size_t
read_full(FILE *f, uint8_t *b, size_t n)
{
	size_t got = 0, k;

	while (got < n && (k = fread(b + got, 1, n - got, f)) > 0)
		got += k;
	return got;
}

/*
 * The statement must name the signer, and neither it nor the signer's
 * entry may have expired by the time the bundle is made.
 */
static int
check_statement(const struct kmsb_seal_params *p, char *why)
{
	struct kmsb_statement st;
	unsigned i;

	if (kmsb_statement_parse(p->statement, p->statement_len, &st) !=
	    KMSB_OK)
		return why_set(why, KMSB_ERR_FORMAT,
		    "the statement is not a kms signing-key statement");
	if (strlen(p->app_id) != st.app_id_len ||
	    memcmp(st.app_id, p->app_id, st.app_id_len) != 0)
		return why_set(why, KMSB_ERR_APP,
		    "the statement is for app %.*s, not %s", st.app_id_len,
		    st.app_id, p->app_id);
	if (st.expires < p->created)
		return why_set(why, KMSB_ERR_STATEMENT_EXPIRED,
		    "the statement expired");
	for (i = 0; i < st.key_count; i++) {
		if (st.keys[i].pub.alg != p->signer.alg ||
		    st.keys[i].pub.len != p->signer.len ||
		    memcmp(st.keys[i].pub.key, p->signer.key,
		    p->signer.len) != 0)
			continue;
		if (st.keys[i].not_after < p->created)
			return why_set(why, KMSB_ERR_KEY_EXPIRED, "the "
			    "statement's entry for the signing key expired");
		return KMSB_OK;
	}
	return why_set(why, KMSB_ERR_UNKNOWN_KEY,
	    "the statement does not name the signing key");
}

int
kmsb_seal(const struct kmsb_seal_params *p, FILE *in, uint64_t in_size,
    FILE *out, kmsb_sign_fn sign, void *arg, char why[KMSB_WHY_MAX])
{
	static const char dom[] = KMSB_MANIFEST_DOMAIN;
	uint8_t cek[KMSB_CEK_LEN], ske[32], hh[KMSB_HASH_LEN];
	uint8_t info[KMSB_HPKE_INFO_MAX], nonce[KMSB_NONCE_LEN];
	uint8_t aad[KMSB_HASH_LEN + 8 + 1], sig[KMSB_SIG_MAX], len2[4];
	uint8_t *mbuf = NULL, *man, *q, *hashes, *pbuf = NULL, *cbuf = NULL;
	EVP_CIPHER_CTX *c = NULL;
	struct kmsb_manifest m;
	uint64_t count, mlen, i, n;
	size_t info_len, sig_len = 0, k, cs;
	FILE *spool = NULL;
	int r = KMSB_ERR_ARG, j;

	why[0] = '\0';
	cs = p->chunk_size == 0 ? KMSB_CHUNK_DEFAULT : p->chunk_size;
	if (!str_ok(p->app_id) || !str_ok(p->channel) || !str_ok(p->version))
		return why_set(why, r, "app id, channel and version must be "
		    "1 to %d printable ASCII characters", KMSB_STR_MAX);
	if (cs < KMSB_CHUNK_MIN || cs > KMSB_CHUNK_MAX)
		return why_set(why, r, "chunk size must be %d to %d bytes",
		    KMSB_CHUNK_MIN, KMSB_CHUNK_MAX);
	if (p->recipient_count == 0 ||
	    p->recipient_count > KMSB_RECIPIENTS_MAX)
		return why_set(why, r, "1 to %d recipients",
		    KMSB_RECIPIENTS_MAX);
	if (p->created > p->expires)
		return why_set(why, r, "the bundle expires before it is made");
	if (p->statement_len > KMSB_STATEMENT_MAX)
		return why_set(why, KMSB_ERR_LIMIT, "statement too large");
	if ((r = check_statement(p, why)) != KMSB_OK)
		return r;
	count = in_size / cs + (in_size % cs != 0);
	if (count == 0)
		count = 1;
	mlen = KMSB_MANIFEST_FIXED + 3 + strlen(p->app_id) +
	    strlen(p->channel) + strlen(p->version) + 1 +
	    p->recipient_count * KMSB_RECIPIENT_LEN;
	if (count > (KMSB_MANIFEST_MAX - mlen) / KMSB_HASH_LEN)
		return why_set(why, KMSB_ERR_LIMIT, "%llu bytes in chunks of "
		    "%zu make a manifest larger than %d bytes: use a larger "
		    "chunk size", (unsigned long long)in_size, cs,
		    KMSB_MANIFEST_MAX);
	mlen += count * KMSB_HASH_LEN;

	r = KMSB_ERR_NOMEM;
	if ((mbuf = malloc(PREFIX_ROOM + mlen)) == NULL ||
	    (pbuf = malloc(cs)) == NULL ||
	    (cbuf = malloc(cs + KMSB_TAG_LEN)) == NULL)
		goto out;
	man = mbuf + PREFIX_ROOM;
	r = KMSB_ERR_CRYPTO;
	if (RAND_bytes(cek, sizeof(cek)) != 1 ||
	    RAND_bytes(nonce, sizeof(nonce)) != 1)
		goto out;

	/* The header: everything but the chunk hashes (format, section 3). */
	memcpy(man, "KMSB", 4);
	q = put_be(man + 4, KMSB_FORMAT_VERSION, 2);
	q = put_be(q, mlen, 4);
	*q++ = p->signer.alg;
	*q++ = KMSB_PAYLOAD_AES256GCM_CHUNKED;
	*q++ = KMSB_KEM_HPKE_X25519_SHA256_AES128GCM;
	*q++ = 0;
	if (kmsb_key_id(p->signer.alg, p->signer.key, p->signer.len, q) != 0)
		goto out;
	q += KMSB_KEY_ID_LEN;
	q = put_be(q, p->seq, 8);
	q = put_be(q, p->created, 8);
	q = put_be(q, p->expires, 8);
	q = put_be(q, in_size, 8);
	q = put_be(q, cs, 4);
	q = put_be(q, count, 4);
	memcpy(q, nonce, KMSB_NONCE_LEN);
	q += KMSB_NONCE_LEN;
	q = put_str(q, p->app_id);
	q = put_str(q, p->channel);
	q = put_str(q, p->version);
	*q++ = (uint8_t)p->recipient_count;
	info_len = kmsb_cek_info(info, p->app_id, strlen(p->app_id),
	    p->channel, strlen(p->channel), p->seq);
	for (k = 0; k < p->recipient_count; k++) {
		if (kmsb_key_id(0, p->recipients[k], 32, q) != 0 ||
		    RAND_bytes(ske, sizeof(ske)) != 1 ||
		    kmsb_hpke_seal(ske, p->recipients[k], info, info_len, NULL,
		    0, cek, sizeof(cek), q + KMSB_KEY_ID_LEN,
		    q + KMSB_KEY_ID_LEN + KMSB_ENC_LEN,
		    q + KMSB_KEY_ID_LEN + KMSB_ENC_LEN + KMSB_CEK_LEN) != 0) {
			why_set(why, r, "cannot seal the content key to "
			    "recipient %zu (not an X25519 public key?)", k + 1);
			goto out;
		}
		q += KMSB_RECIPIENT_LEN;
	}
	hashes = q;
	if (kmsb_c_sha256(man, (size_t)(hashes - man), hh) != 0 ||
	    (c = gcm_new(cek, sizeof(cek))) == NULL)
		goto out;

	/* One pass over the input: encrypt, hash, spool. */
	if ((spool = tmpfile()) == NULL) {
		r = why_set(why, KMSB_ERR_OUTPUT, "cannot make a temporary "
		    "file for the payload");
		goto out;
	}
	memcpy(aad, hh, KMSB_HASH_LEN);
	for (i = 0; i < count; i++) {
		n = i + 1 < count ? cs : in_size - i * cs;
		if (read_full(in, pbuf, (size_t)n) != n) {
			r = why_set(why, KMSB_ERR_TRUNCATED, "the input is "
			    "shorter than %llu bytes (did it change?)",
			    (unsigned long long)in_size);
			goto out;
		}
		memcpy(nonce, man + NONCE_BASE_OFF, KMSB_NONCE_LEN);
		for (j = 0; j < 8; j++) {
			nonce[4 + j] ^= (uint8_t)(i >> (56 - 8 * j));
			aad[KMSB_HASH_LEN + j] = (uint8_t)(i >> (56 - 8 * j));
		}
		aad[KMSB_HASH_LEN + 8] = i + 1 == count;
		if (gcm_seal(c, nonce, aad, sizeof(aad), pbuf, (size_t)n, cbuf,
		    cbuf + n) != 0 ||
		    kmsb_c_sha256(cbuf, (size_t)n + KMSB_TAG_LEN,
		    hashes + i * KMSB_HASH_LEN) != 0)
			goto out;
		if (fwrite(cbuf, 1, (size_t)n + KMSB_TAG_LEN, spool) !=
		    n + KMSB_TAG_LEN) {
			r = why_set(why, KMSB_ERR_OUTPUT, "cannot write the "
			    "temporary payload file");
			goto out;
		}
	}
	if (fgetc(in) != EOF) {
		r = why_set(why, KMSB_ERR_LIMIT, "the input is longer than "
		    "%llu bytes (did it change?)", (unsigned long long)in_size);
		goto out;
	}
	if (ferror(in)) {
		r = why_set(why, KMSB_ERR_OUTPUT, "cannot read the input");
		goto out;
	}
	/* Our own parser must accept what we made. */
	if (kmsb_manifest_parse(man, (size_t)mlen, &m) != KMSB_OK) {
		r = why_set(why, KMSB_ERR_FORMAT, "internal error: the "
		    "manifest does not parse");
		goto out;
	}

	memcpy(man - sizeof(dom), dom, sizeof(dom));
	if (sign(arg, man - sizeof(dom), sizeof(dom) + (size_t)mlen, sig,
	    &sig_len) != 0) {
		r = why_set(why, KMSB_ERR_SIGNATURE, "signing failed");
		goto out;
	}
	if (sig_len == 0 || sig_len > KMSB_SIG_MAX ||
	    kmsb_signature_verify(&p->signer, man - sizeof(dom),
	    sizeof(dom) + (size_t)mlen, sig, sig_len) != KMSB_OK) {
		r = why_set(why, KMSB_ERR_SIGNATURE, "the signature does not "
		    "verify with the signing key's public key");
		goto out;
	}

	/* manifest, u16 sig_len, sig, u16 statement_len, statement, chunks */
	r = KMSB_ERR_OUTPUT;
	put_be(len2, sig_len, 2);
	put_be(len2 + 2, p->statement_len, 2);
	if (fwrite(man, 1, (size_t)mlen, out) != mlen ||
	    fwrite(len2, 1, 2, out) != 2 ||
	    fwrite(sig, 1, sig_len, out) != sig_len ||
	    fwrite(len2 + 2, 1, 2, out) != 2 ||
	    fwrite(p->statement, 1, p->statement_len, out) !=
	    p->statement_len || fflush(spool) != 0 ||
	    fseek(spool, 0, SEEK_SET) != 0) {
		why_set(why, r, "cannot write the bundle");
		goto out;
	}
	while ((k = fread(cbuf, 1, cs + KMSB_TAG_LEN, spool)) > 0)
		if (fwrite(cbuf, 1, k, out) != k) {
			why_set(why, r, "cannot write the bundle");
			goto out;
		}
	if (ferror(spool) || fflush(out) != 0) {
		why_set(why, r, "cannot write the bundle");
		goto out;
	}
	r = KMSB_OK;
 out:
	if (r != KMSB_OK && why[0] == '\0')
		why_set(why, r, "%s", kmsb_strerror(r));
	if (spool != NULL)
		fclose(spool);
	EVP_CIPHER_CTX_free(c);
	OPENSSL_cleanse(cek, sizeof(cek));
	OPENSSL_cleanse(ske, sizeof(ske));
	if (pbuf != NULL)
		OPENSSL_cleanse(pbuf, cs);
	free(pbuf);
	free(cbuf);
	free(mbuf);
	return r;
}

int
kmsb_statement_build(const struct kmsb_statement_params *p,
    kmsb_sign_fn sign, void *arg, uint8_t *out, size_t cap, size_t *len,
    char why[KMSB_WHY_MAX])
{
	static const char dom[] = KMSB_STATEMENT_DOMAIN;
	uint8_t buf[PREFIX_ROOM + KMSB_STATEMENT_MAX], sig[KMSB_SIG_MAX];
	uint8_t *body = buf + PREFIX_ROOM, *q;
	struct kmsb_statement st;
	size_t i, sig_len = 0, body_len, total;

	*len = 0;
	why[0] = '\0';
	if (!str_ok(p->app_id))
		return why_set(why, KMSB_ERR_ARG, "app id: 1 to %d printable "
		    "ASCII characters", KMSB_STR_MAX);
	if (p->key_count == 0 || p->key_count > KMSB_STATEMENT_KEYS_MAX)
		return why_set(why, KMSB_ERR_ARG, "1 to %d signing keys",
		    KMSB_STATEMENT_KEYS_MAX);
	memcpy(body, "KMSS", 4);
	q = put_be(body + 4, KMSB_FORMAT_VERSION, 2);
	q += 2;				/* body_len, below */
	*q++ = p->root.alg;
	*q++ = (uint8_t)p->key_count;
	q = put_be(q, p->seq, 8);
	q = put_be(q, p->expires, 8);
	q = put_str(q, p->app_id);
	for (i = 0; i < p->key_count; i++) {
		if (p->keys[i].pub.len > KMSB_PUB_MAX)
			return why_set(why, KMSB_ERR_ARG, "bad signing key");
		*q++ = p->keys[i].pub.alg;
		*q++ = p->keys[i].pub.len;
		memcpy(q, p->keys[i].pub.key, p->keys[i].pub.len);
		q += p->keys[i].pub.len;
		q = put_be(q, p->keys[i].not_after, 8);
	}
	body_len = (size_t)(q - body);
	put_be(body + 6, body_len, 2);
	memcpy(body - sizeof(dom), dom, sizeof(dom));
	if (sign(arg, body - sizeof(dom), sizeof(dom) + body_len, sig,
	    &sig_len) != 0)
		return why_set(why, KMSB_ERR_SIGNATURE, "signing failed");
	if (sig_len == 0 || sig_len > KMSB_SIG_MAX ||
	    kmsb_signature_verify(&p->root, body - sizeof(dom),
	    sizeof(dom) + body_len, sig, sig_len) != KMSB_OK)
		return why_set(why, KMSB_ERR_SIGNATURE, "the signature does "
		    "not verify with the root key's public key");
	q = put_be(q, sig_len, 2);
	memcpy(q, sig, sig_len);
	total = body_len + 2 + sig_len;
	if (kmsb_statement_parse(body, total, &st) != KMSB_OK)
		return why_set(why, KMSB_ERR_FORMAT, "the statement does not "
		    "parse (a key of an unsupported type?)");
	if (total > cap)
		return why_set(why, KMSB_ERR_LIMIT, "statement too large");
	memcpy(out, body, total);
	*len = total;
	return KMSB_OK;
}
