/*
 * Unit tests of kms OTA bundles: the HPKE key schedule against RFC 9180's
 * test vector, the producer and the streaming verifier end to end, and
 * every reason for refusing a bundle, each checked to have released no
 * plaintext of the failing chunk or after it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kmsb/kmsb.h"
#include "kmsb/kmsb_crypto.h"
#include "kmsb/kmsb_hpke.h"
#include "kmsb/kmsb_keys.h"
#include "kmsb/kmsb_seal.h"

#define NOW	1800000000ULL
#define CHUNK	KMSB_CHUNK_MIN		/* small chunks: many of them */
#define APP	"com.example.app"
#define CHANNEL	"production"

/* ---- keys, bundles and a verifier run ---- */

static size_t
unhex(const char *h, uint8_t *out, size_t cap)
{
	size_t n = strlen(h) / 2, i;
	unsigned v;

	assert_true(n <= cap);
	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

struct sigkey {
	EVP_PKEY *pk;
	struct kmsb_pubkey pub;
};

static void
sigkey_new(struct sigkey *k, int alg)
{
	size_t n = sizeof(k->pub.key);

	memset(k, 0, sizeof(*k));
	k->pk = alg == KMSB_SIG_ED25519 ?
	    EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") :
	    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(k->pk);
	k->pub.alg = (uint8_t)alg;
	if (alg == KMSB_SIG_ED25519)
		assert_int_equal(EVP_PKEY_get_raw_public_key(k->pk, k->pub.key,
		    &n), 1);
	else
		assert_int_equal(EVP_PKEY_get_octet_string_param(k->pk,
		    OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, k->pub.key,
		    sizeof(k->pub.key), &n), 1);
	k->pub.len = (uint8_t)n;
}

/* kmsb_sign_fn with a local key (the test's stand-in for kmsd). */
static int
local_sign(void *arg, const uint8_t *msg, size_t len,
    uint8_t sig[KMSB_SIG_MAX], size_t *sig_len)
{
	struct sigkey *k = arg;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	size_t n = KMSB_SIG_MAX;
	int r = -1;

	if (c != NULL && EVP_DigestSignInit(c, NULL,
	    k->pub.alg == KMSB_SIG_ED25519 ? NULL : EVP_sha256(), NULL,
	    k->pk) == 1 && EVP_DigestSign(c, sig, &n, msg, len) == 1) {
		*sig_len = n;
		r = 0;
	}
	EVP_MD_CTX_free(c);
	return r;
}

struct device {
	uint8_t sk[32], pk[32];
};

static void
device_new(struct device *d)
{
	static const uint8_t base[32] = { 9 };

	assert_int_equal(RAND_bytes(d->sk, 32), 1);
	assert_int_equal(kmsb_c_x25519(d->pk, d->sk, base), 0);
}

/* The keys of a test: a root, two signing keys, two devices. */
static struct sigkey root, root2, ed, p256, stranger;
static struct device dev, dev2, outsider;

static int
setup(void **state)
{
	sigkey_new(&root, KMSB_SIG_ED25519);
	sigkey_new(&root2, KMSB_SIG_ED25519);
	sigkey_new(&ed, KMSB_SIG_ED25519);
	sigkey_new(&p256, KMSB_SIG_P256_SHA256);
	sigkey_new(&stranger, KMSB_SIG_ED25519);
	device_new(&dev);
	device_new(&dev2);
	device_new(&outsider);
	return 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(root.pk);
	EVP_PKEY_free(root2.pk);
	EVP_PKEY_free(ed.pk);
	EVP_PKEY_free(p256.pk);
	EVP_PKEY_free(stranger.pk);
	return 0;
}

struct buf {
	uint8_t *p;
	size_t len;
};

/* A statement naming keys (not_after each), signed by by. */
static struct buf
statement(struct sigkey *by, uint64_t seq, uint64_t expires,
    uint64_t not_after, const char *app, int nkeys, ...)
{
	struct kmsb_statement_key keys[KMSB_STATEMENT_KEYS_MAX];
	struct kmsb_statement_params sp;
	struct buf b;
	char why[KMSB_WHY_MAX];
	va_list ap;
	int i;

	va_start(ap, nkeys);
	for (i = 0; i < nkeys; i++) {
		keys[i].pub = va_arg(ap, struct sigkey *)->pub;
		keys[i].not_after = not_after;
	}
	va_end(ap);
	memset(&sp, 0, sizeof(sp));
	sp.app_id = app;
	sp.seq = seq;
	sp.expires = expires;
	sp.root = by->pub;
	sp.keys = keys;
	sp.key_count = (size_t)nkeys;
	b.p = malloc(KMSB_STATEMENT_MAX);
	assert_non_null(b.p);
	assert_int_equal(kmsb_statement_build(&sp, local_sign, by, b.p,
	    KMSB_STATEMENT_MAX, &b.len, why), KMSB_OK);
	return b;
}

struct spec {
	struct sigkey *signer;
	const char *app, *channel;
	uint64_t seq, created, expires;
	struct buf st;
	const struct device *to[3];
	int nto;
};

static void
spec_default(struct spec *s, struct sigkey *signer)
{
	memset(s, 0, sizeof(*s));
	s->signer = signer;
	s->app = APP;
	s->channel = CHANNEL;
	s->seq = 10;
	s->created = NOW - 100;
	s->expires = NOW + 3600;
	s->st = statement(&root, 1, NOW + 86400, NOW + 86400, APP, 2, &ed,
	    &p256);
	s->to[0] = &dev;
	s->nto = 1;
}

/* A bundle of data[0..len) per spec; fills plain with the data if asked. */
static struct buf
seal(struct spec *s, const uint8_t *data, size_t len)
{
	uint8_t recips[3][32];
	struct kmsb_seal_params p;
	struct buf b = { NULL, 0 };
	char why[KMSB_WHY_MAX];
	FILE *in, *out;
	int i, r;

	memset(&p, 0, sizeof(p));
	p.app_id = s->app;
	p.channel = s->channel;
	p.version = "1.2.3";
	p.seq = s->seq;
	p.created = s->created;
	p.expires = s->expires;
	p.chunk_size = CHUNK;
	p.signer = s->signer->pub;
	for (i = 0; i < s->nto; i++)
		memcpy(recips[i], s->to[i]->pk, 32);
	p.recipients = (const uint8_t (*)[32])recips;
	p.recipient_count = (size_t)s->nto;
	p.statement = s->st.p;
	p.statement_len = s->st.len;
	in = tmpfile();
	assert_non_null(in);
	if (len > 0)
		assert_int_equal(fwrite(data, 1, len, in), len);
	rewind(in);
	out = open_memstream((char **)&b.p, &b.len);
	assert_non_null(out);
	r = kmsb_seal(&p, in, len, out, local_sign, s->signer, why);
	if (r != KMSB_OK)
		print_error("kmsb_seal: %s\n", why);
	assert_int_equal(r, KMSB_OK);
	fclose(out);
	fclose(in);
	free(s->st.p);
	s->st.p = NULL;
	return b;
}

static void
policy_default(struct kmsb_policy *p, const struct device *d)
{
	memset(p, 0, sizeof(*p));
	p->root = root.pub;
	p->app_id = APP;
	p->channel = CHANNEL;
	p->now = NOW;
	p->last_seq = 9;
	memcpy(p->recipient_sk, d->sk, 32);
}

struct sink {
	uint8_t *p;
	size_t len, cap;
	int refuse_after;		/* chunks; 0: never */
	int calls;
};

static int
sink_cb(void *arg, const uint8_t *p, size_t len)
{
	struct sink *s = arg;

	if (s->refuse_after != 0 && s->calls == s->refuse_after)
		return -1;
	s->calls++;
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2;
		s->p = realloc(s->p, s->cap);
		assert_non_null(s->p);
	}
	memcpy(s->p + s->len, p, len);
	s->len += len;
	return 0;
}

/* Feeds b in pieces of split bytes (0: all at once); returns the verdict. */
static int
run(const struct kmsb_policy *p, const uint8_t *b, size_t len, size_t split,
    struct sink *out)
{
	struct kmsb_verifier *v = NULL;
	size_t off = 0, n;
	int r;

	assert_int_equal(kmsb_verifier_init(&v, p), KMSB_OK);
	r = KMSB_OK;
	while (r == KMSB_OK && off < len) {
		n = split == 0 || len - off < split ? len - off : split;
		r = kmsb_verifier_update(v, b + off, n, sink_cb, out);
		off += n;
	}
	if (r == KMSB_OK)
		r = kmsb_verifier_final(v);
	else {
		/* A spent verifier keeps saying no. */
		assert_int_equal(kmsb_verifier_final(v), r);
		assert_int_equal(kmsb_verifier_update(v, b, 1, sink_cb, out), r);
	}
	kmsb_verifier_free(v);
	return r;
}

static uint8_t *
random_data(size_t len)
{
	uint8_t *d = malloc(len + 1);

	assert_non_null(d);
	if (len > 0)
		assert_int_equal(RAND_bytes(d, (int)len), 1);
	return d;
}

/* Offsets in a bundle: where the chunks begin. */
static size_t
payload_off(const struct buf *b)
{
	struct kmsb_manifest m;
	size_t mlen, sl, stl;

	mlen = (size_t)b->p[6] << 24 | (size_t)b->p[7] << 16 |
	    (size_t)b->p[8] << 8 | b->p[9];
	assert_int_equal(kmsb_manifest_parse(b->p, mlen, &m), KMSB_OK);
	sl = (size_t)b->p[mlen] << 8 | b->p[mlen + 1];
	stl = (size_t)b->p[mlen + 2 + sl] << 8 | b->p[mlen + 3 + sl];
	return mlen + 2 + sl + 2 + stl;
}

/*
 * Expects the verdict err, whole and fed byte by byte; a refusal must
 * have released nothing at all (every check here precedes chunk 0).
 */
static void
refused(const struct kmsb_policy *p, const struct buf *b, int err)
{
	struct sink s = { 0 };

	assert_int_equal(run(p, b->p, b->len, 0, &s), err);
	if (err != KMSB_OK)
		assert_int_equal(s.len, 0);
	free(s.p);
	memset(&s, 0, sizeof(s));
	assert_int_equal(run(p, b->p, b->len, 1, &s), err);
	if (err != KMSB_OK)
		assert_int_equal(s.len, 0);
	free(s.p);
}

/* ---- RFC 9180 A.1.1 ---- */

/*
 * DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base, from
 * RFC 9180 Appendix A.1.1 (and its encryption A.1.1.1, sequence 0 and 1).
 */
static const char v_info[] = "4f6465206f6e2061204772656369616e2055726e";
static const char v_skEm[] =
    "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736";
static const char v_pkEm[] =
    "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431";
static const char v_skRm[] =
    "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8";
static const char v_pkRm[] =
    "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d";
static const char v_shared[] =
    "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc";
static const char v_key[] = "4531685d41d65f03dc48f6b8302c05b0";
static const char v_nonce[] = "56d890e5accaaf011cff4b7d";
static const char v_pt[] =
    "4265617574792069732074727574682c20747275746820626561757479";
static const char v_aad0[] = "436f756e742d30";
static const char v_ct0[] =
    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
    "6d8770ac83d07bea87e13c512a";
static const char v_aad1[] = "436f756e742d31";
static const char v_ct1[] =
    "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab25"
    "1c03d0c22a56b8ca42c2063b84";

static void
test_hpke_rfc9180_a1(void **state)
{
	static const uint8_t base[32] = { 9 };
	uint8_t info[64], skE[32], pkE[32], skR[32], pkR[32], shared[32];
	uint8_t key[16], nonce[12], pt[64], aad[16], ct[64];
	uint8_t got_shared[32], got_key[16], got_nonce[12], dh[32], out[64];
	uint8_t enc[32], gct[64], tag[16];
	size_t info_len, pt_len, aad_len, ct_len;

	info_len = unhex(v_info, info, sizeof(info));
	unhex(v_skEm, skE, 32);
	unhex(v_pkEm, pkE, 32);
	unhex(v_skRm, skR, 32);
	unhex(v_pkRm, pkR, 32);
	unhex(v_shared, shared, 32);
	unhex(v_key, key, 16);
	unhex(v_nonce, nonce, 12);
	pt_len = unhex(v_pt, pt, sizeof(pt));

	/* The key pairs. */
	assert_int_equal(kmsb_c_x25519(out, skR, base), 0);
	assert_memory_equal(out, pkR, 32);
	assert_int_equal(kmsb_c_x25519(out, skE, base), 0);
	assert_memory_equal(out, pkE, 32);

	/* Receiver: Decap and the key schedule. */
	assert_int_equal(kmsb_c_x25519(dh, skR, pkE), 0);
	assert_int_equal(kmsb_hpke_schedule(dh, pkE, pkR, info, info_len,
	    got_shared, got_key, got_nonce), 0);
	assert_memory_equal(got_shared, shared, 32);
	assert_memory_equal(got_key, key, 16);
	assert_memory_equal(got_nonce, nonce, 12);
	/* The sender's side of the DH agrees. */
	assert_int_equal(kmsb_c_x25519(out, skE, pkR), 0);
	assert_memory_equal(out, dh, 32);

	/* Sequence 0: open the RFC's ciphertext. */
	aad_len = unhex(v_aad0, aad, sizeof(aad));
	ct_len = unhex(v_ct0, ct, sizeof(ct));
	assert_int_equal(ct_len, pt_len + 16);
	assert_int_equal(kmsb_hpke_open(skR, pkE, info, info_len, aad, aad_len,
	    ct, pt_len, ct + pt_len, out), 0);
	assert_memory_equal(out, pt, pt_len);
	/* A changed tag, aad or info is refused. */
	ct[ct_len - 1] ^= 1;
	assert_int_not_equal(kmsb_hpke_open(skR, pkE, info, info_len, aad,
	    aad_len, ct, pt_len, ct + pt_len, out), 0);
	ct[ct_len - 1] ^= 1;
	assert_int_not_equal(kmsb_hpke_open(skR, pkE, info, info_len - 1, aad,
	    aad_len, ct, pt_len, ct + pt_len, out), 0);

	/* Sender with the RFC's ephemeral key: the RFC's enc and ciphertext. */
	assert_int_equal(kmsb_hpke_seal(skE, pkR, info, info_len, aad,
	    aad_len, pt, pt_len, enc, gct, tag), 0);
	assert_memory_equal(enc, pkE, 32);
	assert_memory_equal(gct, ct, pt_len);
	assert_memory_equal(tag, ct + pt_len, 16);

	/* Sequence 1: nonce = base_nonce XOR 1, with the derived key. */
	aad_len = unhex(v_aad1, aad, sizeof(aad));
	ct_len = unhex(v_ct1, ct, sizeof(ct));
	nonce[11] ^= 1;
	assert_int_equal(kmsb_c_gcm_open(key, 16, nonce, aad, aad_len, ct,
	    pt_len, ct + pt_len, out), 0);
	assert_memory_equal(out, pt, pt_len);
}

/* An all-zero DH result (a small-order point) is refused. */
static void
test_x25519_small_order(void **state)
{
	uint8_t zero[32] = { 0 }, out[32];

	assert_int_not_equal(kmsb_c_x25519(out, dev.sk, zero), 0);
}

/* ---- round trips ---- */

static void
round_trip(struct sigkey *signer, size_t size)
{
	static const size_t splits[] = { 0, 1, 7, 1000, CHUNK + 16, 65536 };
	struct kmsb_policy p;
	struct spec s;
	struct buf b;
	struct sink out;
	const struct kmsb_manifest *m;
	struct kmsb_verifier *v;
	uint64_t stseq = 0;
	uint8_t *data = random_data(size);
	size_t i;

	spec_default(&s, signer);
	b = seal(&s, data, size);
	/* The plaintext appears nowhere in the bundle. */
	if (size >= 16)
		assert_null(memmem(b.p, b.len, data, 16));
	policy_default(&p, &dev);
	for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		if (size > 100000 && splits[i] == 1)
			continue;	/* slow, and covered by smaller sizes */
		memset(&out, 0, sizeof(out));
		assert_int_equal(run(&p, b.p, b.len, splits[i], &out), KMSB_OK);
		assert_int_equal(out.len, size);
		if (size > 0)
			assert_memory_equal(out.p, data, size);
		free(out.p);
	}
	/* The verified manifest says what it is. */
	assert_int_equal(kmsb_verifier_init(&v, &p), KMSB_OK);
	assert_null(kmsb_verifier_manifest(v, NULL));
	assert_int_equal(kmsb_verifier_update(v, b.p, b.len, NULL, NULL),
	    KMSB_OK);
	assert_int_equal(kmsb_verifier_final(v), KMSB_OK);
	assert_int_equal(kmsb_verifier_final(v), KMSB_ERR_STATE);
	m = kmsb_verifier_manifest(v, &stseq);
	assert_non_null(m);
	assert_int_equal(m->seq, 10);
	assert_int_equal(stseq, 1);
	assert_int_equal(m->payload_size, size);
	assert_int_equal(m->version_len, 5);
	assert_memory_equal(m->version, "1.2.3", 5);
	kmsb_verifier_free(v);
	free(b.p);
	free(data);
}

static void
test_round_trip_sizes(void **state)
{
	static const size_t sizes[] = {
		0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 37 * CHUNK + 5,
		300 * 1024 + 3
	};
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		round_trip(&ed, sizes[i]);
		round_trip(&p256, sizes[i]);
	}
}

/* Each recipient opens it; a device it was not sealed to cannot. */
static void
test_several_recipients(void **state)
{
	struct kmsb_policy p;
	struct spec s;
	struct sink out = { 0 };
	struct buf b;
	uint8_t *data = random_data(5000);

	spec_default(&s, &ed);
	s.to[1] = &dev2;
	s.nto = 2;
	b = seal(&s, data, 5000);
	policy_default(&p, &dev);
	assert_int_equal(run(&p, b.p, b.len, 0, &out), KMSB_OK);
	assert_int_equal(out.len, 5000);
	free(out.p);
	memset(&out, 0, sizeof(out));
	policy_default(&p, &dev2);
	assert_int_equal(run(&p, b.p, b.len, 3, &out), KMSB_OK);
	assert_memory_equal(out.p, data, 5000);
	free(out.p);
	policy_default(&p, &outsider);
	refused(&p, &b, KMSB_ERR_RECIPIENT);
	free(b.p);
	free(data);
}

/* ---- refusals by policy ---- */

static struct buf
default_bundle(size_t size)
{
	struct spec s;
	uint8_t *data = random_data(size);
	struct buf b;

	spec_default(&s, &ed);
	b = seal(&s, data, size);
	free(data);
	return b;
}

static void
test_policy_refusals(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(3 * CHUNK + 1);

	policy_default(&p, &dev);
	p.app_id = "com.example.other";
	refused(&p, &b, KMSB_ERR_APP);
	policy_default(&p, &dev);
	p.channel = "beta";
	refused(&p, &b, KMSB_ERR_CHANNEL);
	policy_default(&p, &dev);
	p.last_seq = 10;		/* the same bundle again */
	refused(&p, &b, KMSB_ERR_ROLLBACK);
	p.last_seq = 11;		/* an older one */
	refused(&p, &b, KMSB_ERR_ROLLBACK);
	policy_default(&p, &dev);
	p.now = NOW + 3601;
	refused(&p, &b, KMSB_ERR_EXPIRED);
	p.now = NOW - 101;
	refused(&p, &b, KMSB_ERR_NOT_YET_VALID);
	policy_default(&p, &outsider);
	refused(&p, &b, KMSB_ERR_RECIPIENT);
	/* The root the device trusts did not sign the statement. */
	policy_default(&p, &dev);
	p.root = root2.pub;
	refused(&p, &b, KMSB_ERR_STATEMENT);
	/* Statement sequence: equal is fine, lower is a replay. */
	policy_default(&p, &dev);
	p.last_statement_seq = 1;
	refused(&p, &b, KMSB_OK);
	p.last_statement_seq = 2;
	refused(&p, &b, KMSB_ERR_STATEMENT_REPLAY);
	free(b.p);
}

/* The statement: expired, expired key, replayed, by another root, ... */
static void
test_statement_refusals(void **state)
{
	struct kmsb_policy p;
	struct spec s;
	struct buf b;
	uint8_t d[100] = { 0 };

	policy_default(&p, &dev);
	/* Statement valid when sealed, expired when installed. */
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&root, 1, NOW - 10, NOW + 86400, APP, 1, &ed);
	b = seal(&s, d, sizeof(d));
	refused(&p, &b, KMSB_ERR_STATEMENT_EXPIRED);
	free(b.p);
	/* The statement's entry for the signing key expired. */
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&root, 1, NOW + 86400, NOW - 10, APP, 1, &ed);
	b = seal(&s, d, sizeof(d));
	refused(&p, &b, KMSB_ERR_KEY_EXPIRED);
	free(b.p);
	/* Signed by a root the device does not know. */
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&root2, 1, NOW + 86400, NOW + 86400, APP, 1, &ed);
	b = seal(&s, d, sizeof(d));
	refused(&p, &b, KMSB_ERR_STATEMENT);
	free(b.p);
	/* A statement of another app. */
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&root, 1, NOW + 86400, NOW + 86400, "com.other", 1,
	    &ed);
	s.app = "com.other";
	b = seal(&s, d, sizeof(d));
	refused(&p, &b, KMSB_ERR_APP);
	free(b.p);
	/* Replay: statement 3 after the device accepted statement 5. */
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&root, 3, NOW + 86400, NOW + 86400, APP, 1, &ed);
	b = seal(&s, d, sizeof(d));
	p.last_statement_seq = 5;
	refused(&p, &b, KMSB_ERR_STATEMENT_REPLAY);
	p.last_statement_seq = 3;
	refused(&p, &b, KMSB_OK);
	free(b.p);
}

/* A P-256 root key signs the statement just as well. */
static void
test_p256_root(void **state)
{
	struct kmsb_policy p;
	struct spec s;
	struct sink out = { 0 };
	struct buf b;
	uint8_t d[3000];

	memset(d, 'p', sizeof(d));
	spec_default(&s, &ed);
	free(s.st.p);
	s.st = statement(&p256, 4, NOW + 86400, NOW + 86400, APP, 1, &ed);
	b = seal(&s, d, sizeof(d));
	policy_default(&p, &dev);
	p.root = p256.pub;
	assert_int_equal(run(&p, b.p, b.len, 5, &out), KMSB_OK);
	assert_int_equal(out.len, sizeof(d));
	assert_memory_equal(out.p, d, sizeof(d));
	free(out.p);
	/* The Ed25519 root does not vouch for it. */
	policy_default(&p, &dev);
	refused(&p, &b, KMSB_ERR_STATEMENT);
	free(b.p);
}

/* Replaces the statement of bundle b by st (the framing is unsigned). */
static struct buf
splice_statement(const struct buf *b, const struct buf *st)
{
	size_t mlen, sl, stl, off, rest;
	struct buf n;

	mlen = (size_t)b->p[6] << 24 | (size_t)b->p[7] << 16 |
	    (size_t)b->p[8] << 8 | b->p[9];
	sl = (size_t)b->p[mlen] << 8 | b->p[mlen + 1];
	off = mlen + 2 + sl;
	stl = (size_t)b->p[off] << 8 | b->p[off + 1];
	rest = b->len - off - 2 - stl;
	n.len = off + 2 + st->len + rest;
	n.p = malloc(n.len);
	assert_non_null(n.p);
	memcpy(n.p, b->p, off);
	n.p[off] = (uint8_t)(st->len >> 8);
	n.p[off + 1] = (uint8_t)st->len;
	memcpy(n.p + off + 2, st->p, st->len);
	memcpy(n.p + off + 2 + st->len, b->p + off + 2 + stl, rest);
	return n;
}

static void
test_unknown_signing_key(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(2000), st, n;

	policy_default(&p, &dev);
	/* A genuine statement that does not name the bundle's key. */
	st = statement(&root, 2, NOW + 86400, NOW + 86400, APP, 2, &p256,
	    &stranger);
	n = splice_statement(&b, &st);
	refused(&p, &n, KMSB_ERR_UNKNOWN_KEY);
	free(n.p);
	free(st.p);
	/* The old statement spliced back in still verifies: proof the splice
	 * alone is not what was refused. */
	st = statement(&root, 2, NOW + 86400, NOW + 86400, APP, 1, &ed);
	n = splice_statement(&b, &st);
	refused(&p, &n, KMSB_OK);
	/* A flipped statement byte breaks the root's signature. */
	n.p[payload_off(&n) - 20] ^= 0x01;
	refused(&p, &n, KMSB_ERR_STATEMENT);
	free(n.p);
	free(st.p);
	free(b.p);
}

/* ---- refusals of tampered bytes ---- */

static void
test_bad_manifest_signature(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(5000);
	size_t mlen = (size_t)b.p[8] << 8 | b.p[9];

	policy_default(&p, &dev);
	b.p[mlen + 2 + 10] ^= 0x40;	/* inside the signature */
	refused(&p, &b, KMSB_ERR_SIGNATURE);
	free(b.p);
}

static void
test_flipped_manifest_bytes(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(10 * CHUNK);
	size_t mlen = (size_t)b.p[8] << 8 | b.p[9], i;
	struct sink out;
	int r;

	policy_default(&p, &dev);
	/* Every byte of the manifest, one at a time. */
	for (i = 0; i < mlen; i++) {
		b.p[i] ^= 0x01;
		memset(&out, 0, sizeof(out));
		r = run(&p, b.p, b.len, 0, &out);
		assert_int_not_equal(r, KMSB_OK);
		assert_true(r == KMSB_ERR_SIGNATURE || r == KMSB_ERR_FORMAT ||
		    r == KMSB_ERR_UNKNOWN_KEY || r == KMSB_ERR_LIMIT ||
		    r == KMSB_ERR_TRUNCATED);
		assert_int_equal(out.len, 0);
		free(out.p);
		b.p[i] ^= 0x01;
	}
	free(b.p);
}

/* A flipped byte in chunk k: chunks before it out, nothing of it or after. */
static void
test_flipped_ciphertext(void **state)
{
	struct kmsb_policy p;
	struct spec s;
	uint8_t *data = random_data(6 * CHUNK + 100);
	struct buf b;
	struct sink out;
	size_t off, k, at;
	static const size_t where[] = { 0, 1, CHUNK - 1, CHUNK, CHUNK + 15 };

	spec_default(&s, &ed);
	b = seal(&s, data, 6 * CHUNK + 100);
	policy_default(&p, &dev);
	off = payload_off(&b);
	for (k = 0; k < 7; k++) {
		for (at = 0; at < sizeof(where) / sizeof(where[0]); at++) {
			size_t pos = off + k * (CHUNK + 16) + where[at];

			if (pos >= b.len)
				continue;
			b.p[pos] ^= 0x80;
			memset(&out, 0, sizeof(out));
			assert_int_equal(run(&p, b.p, b.len, 0, &out),
			    KMSB_ERR_CHUNK);
			assert_int_equal(out.len, k * CHUNK);
			if (k > 0)
				assert_memory_equal(out.p, data, k * CHUNK);
			free(out.p);
			memset(&out, 0, sizeof(out));
			assert_int_equal(run(&p, b.p, b.len, 1, &out),
			    KMSB_ERR_CHUNK);
			assert_int_equal(out.len, k * CHUNK);
			free(out.p);
			b.p[pos] ^= 0x80;
		}
	}
	free(b.p);
	free(data);
}

static void
test_reordered_chunks(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(4 * CHUNK);
	uint8_t tmp[CHUNK + 16];
	size_t off = payload_off(&b), c = CHUNK + 16;
	struct sink out = { 0 };

	policy_default(&p, &dev);
	/* Swap chunks 1 and 2: chunk 0 is fine, then refusal. */
	memcpy(tmp, b.p + off + c, c);
	memcpy(b.p + off + c, b.p + off + 2 * c, c);
	memcpy(b.p + off + 2 * c, tmp, c);
	assert_int_equal(run(&p, b.p, b.len, 0, &out), KMSB_ERR_CHUNK);
	assert_int_equal(out.len, CHUNK);
	free(out.p);
	/* Swap 0 and 1 (restoring the rest): nothing at all. */
	memcpy(b.p + off + 2 * c, b.p + off + c, c);
	memcpy(b.p + off + c, tmp, c);
	memcpy(tmp, b.p + off, c);
	memcpy(b.p + off, b.p + off + c, c);
	memcpy(b.p + off + c, tmp, c);
	refused(&p, &b, KMSB_ERR_CHUNK);
	free(b.p);
}

static void
test_truncated_and_trailing(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(3 * CHUNK + 10);
	size_t off = payload_off(&b), cut;
	struct sink out;
	uint8_t *longer;

	policy_default(&p, &dev);
	/* Without the last chunk: the first three came out, final refuses. */
	memset(&out, 0, sizeof(out));
	assert_int_equal(run(&p, b.p, b.len - 26, 0, &out), KMSB_ERR_TRUNCATED);
	assert_int_equal(out.len, 3 * CHUNK);
	free(out.p);
	/* Cut anywhere in the header: nothing released. */
	for (cut = 0; cut < off; cut += 97) {
		memset(&out, 0, sizeof(out));
		assert_int_equal(run(&p, b.p, cut, 0, &out), KMSB_ERR_TRUNCATED);
		assert_int_equal(out.len, 0);
		free(out.p);
	}
	/* Cut inside chunk 1: only chunk 0. */
	memset(&out, 0, sizeof(out));
	assert_int_equal(run(&p, b.p, off + CHUNK + 16 + 100, 0, &out),
	    KMSB_ERR_TRUNCATED);
	assert_int_equal(out.len, CHUNK);
	free(out.p);
	/* One byte more than the bundle. */
	longer = malloc(b.len + 1);
	assert_non_null(longer);
	memcpy(longer, b.p, b.len);
	longer[b.len] = 0;
	memset(&out, 0, sizeof(out));
	assert_int_equal(run(&p, longer, b.len + 1, 0, &out), KMSB_ERR_TRAILING);
	free(out.p);
	free(longer);
	free(b.p);
}

/* The caller's refusal stops the stream. */
static void
test_output_refused(void **state)
{
	struct kmsb_policy p;
	struct buf b = default_bundle(5 * CHUNK);
	struct sink out = { 0 };

	policy_default(&p, &dev);
	out.refuse_after = 2;
	assert_int_equal(run(&p, b.p, b.len, 0, &out), KMSB_ERR_OUTPUT);
	assert_int_equal(out.len, 2 * CHUNK);
	free(out.p);
	free(b.p);
}

static void
test_bad_arguments(void **state)
{
	struct kmsb_verifier *v = (struct kmsb_verifier *)&v;
	struct kmsb_policy p;

	policy_default(&p, &dev);
	p.app_id = "";
	assert_int_equal(kmsb_verifier_init(&v, &p), KMSB_ERR_ARG);
	assert_null(v);
	policy_default(&p, &dev);
	p.root.len = 31;
	assert_int_equal(kmsb_verifier_init(&v, &p), KMSB_ERR_ARG);
	assert_int_equal(kmsb_verifier_init(NULL, &p), KMSB_ERR_ARG);
	assert_int_equal(kmsb_verifier_update(NULL, NULL, 0, NULL, NULL),
	    KMSB_ERR_ARG);
	assert_int_equal(kmsb_verifier_final(NULL), KMSB_ERR_ARG);
	kmsb_verifier_free(NULL);
	assert_string_equal(kmsb_strerror(KMSB_ERR_ROLLBACK), "bundle sequence "
	    "number not above the last accepted one (rollback)");
	assert_string_equal(kmsb_strerror(-1000), "unknown error");
	assert_string_equal(kmsb_strerror(KMSB_ERR_LAST + 1),
	    "call out of order");
}

/* kmsb_seal() with params p over len bytes; its verdict, nothing written. */
static int
seal_fails(struct kmsb_seal_params *p, struct sigkey *k, uint64_t len,
    uint64_t claimed)
{
	char why[KMSB_WHY_MAX], *out_buf = NULL;
	size_t out_len = 0;
	uint8_t *d = random_data((size_t)len);
	FILE *in = tmpfile(), *out;
	int r;

	assert_non_null(in);
	if (len > 0)
		assert_int_equal(fwrite(d, 1, (size_t)len, in), len);
	rewind(in);
	out = open_memstream(&out_buf, &out_len);
	assert_non_null(out);
	r = kmsb_seal(p, in, claimed, out, local_sign, k, why);
	fclose(out);
	assert_int_not_equal(r, KMSB_OK);
	assert_true(strlen(why) > 0);
	assert_int_equal(out_len, 0);
	free(out_buf);
	fclose(in);
	free(d);
	return r;
}

/* The producer refuses what no device would accept, and writes nothing. */
static void
test_seal_refusals(void **state)
{
	struct kmsb_seal_params p;
	struct buf st = statement(&root, 1, NOW + 86400, NOW + 86400, APP, 1,
	    &ed);
	struct buf old = statement(&root, 1, NOW - 200, NOW + 86400, APP, 1,
	    &ed);

	memset(&p, 0, sizeof(p));
	p.app_id = APP;
	p.channel = CHANNEL;
	p.version = "1";
	p.seq = 1;
	p.created = NOW - 100;
	p.expires = NOW + 100;
	p.signer = ed.pub;
	p.recipients = (const uint8_t (*)[32])dev.pk;
	p.recipient_count = 1;
	p.statement = st.p;
	p.statement_len = st.len;
	/* The signer is not in the statement. */
	p.signer = p256.pub;
	assert_int_equal(seal_fails(&p, &p256, 10, 10), KMSB_ERR_UNKNOWN_KEY);
	p.signer = ed.pub;
	/* sign() signs with another key than the one named. */
	assert_int_equal(seal_fails(&p, &stranger, 10, 10),
	    KMSB_ERR_SIGNATURE);
	/* An expired statement, another app, a control character. */
	p.statement = old.p;
	p.statement_len = old.len;
	assert_int_equal(seal_fails(&p, &ed, 10, 10),
	    KMSB_ERR_STATEMENT_EXPIRED);
	p.statement = st.p;
	p.statement_len = st.len;
	p.app_id = "com.example.other";
	assert_int_equal(seal_fails(&p, &ed, 10, 10), KMSB_ERR_APP);
	p.app_id = APP;
	p.version = "1\n2";
	assert_int_equal(seal_fails(&p, &ed, 10, 10), KMSB_ERR_ARG);
	p.version = "1";
	/* The input is shorter or longer than its size said. */
	assert_int_equal(seal_fails(&p, &ed, 10, 11), KMSB_ERR_TRUNCATED);
	assert_int_equal(seal_fails(&p, &ed, 10, 9), KMSB_ERR_LIMIT);
	/* More chunks than a manifest can hold. */
	p.chunk_size = KMSB_CHUNK_MIN;
	assert_int_equal(seal_fails(&p, &ed, 0, 9000ULL * KMSB_CHUNK_MIN),
	    KMSB_ERR_LIMIT);
	p.chunk_size = 100;
	assert_int_equal(seal_fails(&p, &ed, 10, 10), KMSB_ERR_ARG);
	p.chunk_size = 0;
	p.recipient_count = 0;
	assert_int_equal(seal_fails(&p, &ed, 10, 10), KMSB_ERR_ARG);
	free(st.p);
	free(old.p);
}

/* The parser on its own: structure errors and the bounds. */
static void
test_manifest_parse(void **state)
{
	struct buf b = default_bundle(2 * CHUNK);
	struct kmsb_manifest m;
	size_t mlen = (size_t)b.p[8] << 8 | b.p[9];
	uint8_t *big;

	assert_int_equal(kmsb_manifest_parse(b.p, mlen, &m), KMSB_OK);
	assert_int_equal(m.chunk_count, 2);
	assert_int_equal(m.chunk_size, CHUNK);
	assert_int_equal(m.app_id_len, strlen(APP));
	assert_memory_equal(m.app_id, APP, strlen(APP));
	assert_int_equal(m.recipient_count, 1);
	assert_int_equal(m.header_len + 2 * KMSB_HASH_LEN, mlen);
	/* One byte short or long of what its header says. */
	assert_int_equal(kmsb_manifest_parse(b.p, mlen - 1, &m),
	    KMSB_ERR_FORMAT);
	assert_null(m.app_id);
	assert_int_equal(kmsb_manifest_parse(b.p, mlen + 1, &m),
	    KMSB_ERR_FORMAT);
	assert_int_equal(kmsb_manifest_parse(NULL, 0, &m), KMSB_ERR_FORMAT);
	/* The payload size no longer matches the chunk count. */
	b.p[77] ^= 0x01;
	assert_int_equal(kmsb_manifest_parse(b.p, mlen, &m), KMSB_ERR_FORMAT);
	b.p[77] ^= 0x01;
	/* An unknown suite. */
	b.p[11] = 2;
	assert_int_equal(kmsb_manifest_parse(b.p, mlen, &m), KMSB_ERR_FORMAT);
	b.p[11] = 1;
	/* Larger than any manifest may be. */
	big = calloc(1, KMSB_MANIFEST_MAX + 1);
	assert_non_null(big);
	memcpy(big, b.p, mlen);
	assert_int_equal(kmsb_manifest_parse(big, KMSB_MANIFEST_MAX + 1, &m),
	    KMSB_ERR_LIMIT);
	free(big);
	free(b.p);
}

/* PEM files of the keys the tools read. */
static void
test_pem_keys(void **state)
{
	static const char x25519_pub[] =
	    "-----BEGIN PUBLIC KEY-----\n"
	    "MCowBQYDK2VuAyEAvZx9C/W8pa7Zai5iwvl1DDXccsK0aDcIz4VACUm0wXE=\n"
	    "-----END PUBLIC KEY-----\n";
	static const char ed_pub[] =
	    "-----BEGIN PUBLIC KEY-----\n"
	    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
	    "-----END PUBLIC KEY-----\n";
	struct kmsb_pubkey k;
	uint8_t pk[32];

	assert_int_equal(kmsb_pem_x25519_pub(x25519_pub, strlen(x25519_pub),
	    pk), 0);
	assert_int_equal(pk[0], 0xbd);
	assert_int_equal(pk[31], 0x71);
	/* An X25519 key is no signing key, and the other way round. */
	assert_int_not_equal(kmsb_pem_sig_pubkey(x25519_pub,
	    strlen(x25519_pub), &k), 0);
	assert_int_equal(kmsb_pem_sig_pubkey(ed_pub, strlen(ed_pub), &k), 0);
	assert_int_equal(k.alg, KMSB_SIG_ED25519);
	assert_int_equal(k.key[0], 0x19);
	assert_int_not_equal(kmsb_pem_x25519_pub(ed_pub, strlen(ed_pub), pk),
	    0);
	assert_int_not_equal(kmsb_pem_x25519_pub("garbage", 7, pk), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hpke_rfc9180_a1),
		cmocka_unit_test(test_x25519_small_order),
		cmocka_unit_test(test_round_trip_sizes),
		cmocka_unit_test(test_several_recipients),
		cmocka_unit_test(test_policy_refusals),
		cmocka_unit_test(test_statement_refusals),
		cmocka_unit_test(test_p256_root),
		cmocka_unit_test(test_unknown_signing_key),
		cmocka_unit_test(test_bad_manifest_signature),
		cmocka_unit_test(test_flipped_manifest_bytes),
		cmocka_unit_test(test_flipped_ciphertext),
		cmocka_unit_test(test_reordered_chunks),
		cmocka_unit_test(test_truncated_and_trailing),
		cmocka_unit_test(test_output_refused),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_seal_refusals),
		cmocka_unit_test(test_manifest_parse),
		cmocka_unit_test(test_pem_keys),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
