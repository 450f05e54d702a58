/*
 * capgo.c: Capgo-compatible encrypted bundles (see capgo.h).
 *
 * The format has no header and no MAC: the ciphertext is bare
 * AES-128-CBC, and integrity rests on the SHA-256 of the plaintext that
 * the device recovers with the public key and compares after decrypting.
 * Both directions stream through one fixed-size buffer pair.  Encryption
 * runs on a thread of its own, so that the signer's round trips to kms
 * overlap with the bulk work.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "capgo.h"
#include "kmserr.h"

#define CHUNK		(64 * 1024)
#define B64_IV_LEN	24	/* base64 of 16 bytes */
#define B64_BLOCK_LEN	344	/* base64 of 256 bytes */

int
capgo_is_zip(const uint8_t *head, size_t len)
{
	static const uint8_t magic[CAPGO_ZIP_MAGIC_LEN] = { 'P', 'K', 3, 4 };

	return len >= sizeof(magic) && memcmp(head, magic, sizeof(magic)) == 0;
}

/* Canonical base64 of in, no line breaks, into out (room for it + NUL). */
static void
b64_encode(const uint8_t *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/*
 * Decodes s[0..slen) into exactly want bytes.  Only the canonical
 * encoding (the one b64_encode makes) is accepted, so that one bundle has
 * one spelling.
 */
static int
b64_decode_exact(const char *s, size_t slen, uint8_t *out, size_t want)
{
	uint8_t tmp[B64_BLOCK_LEN / 4 * 3];
	char again[B64_BLOCK_LEN + 1];
	int n, r = -1;

	if (want > sizeof(tmp) || slen != 4 * ((want + 2) / 3))
		return -1;
	if ((n = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)slen)) < 0)
		goto out;
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if ((size_t)n < want || (size_t)n - want > 2)
		goto out;
	b64_encode(tmp, want, again);
	if (strlen(again) != slen || memcmp(again, s, slen) != 0)
		goto out;
	memcpy(out, tmp, want);
	r = 0;
 out:
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return r;
}

static void
hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes exactly 2 * want hex digits (either case) of s into out. */
static int
hex_decode_exact(const char *s, uint8_t *out, size_t want)
{
	size_t i;
	int hi, lo;

	if (strlen(s) != 2 * want)
		return -1;
	for (i = 0; i < want; i++) {
		if ((hi = hex_value(s[2 * i])) < 0 ||
		    (lo = hex_value(s[2 * i + 1])) < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/*
 * The public-key side of the type-1 operation: checks the
 * 00 01 FF..FF 00 padding of block and recovers exactly want bytes.
 * Returns 0 or KMS_ERR_VERIFY_FAILED.
 */
static int
rsa_recover(EVP_PKEY *pub, const uint8_t block[CAPGO_RSA_LEN], uint8_t *out,
    size_t want, const char *what, struct kms_status *st)
{
	EVP_PKEY_CTX *ctx = NULL;
	uint8_t buf[CAPGO_RSA_LEN];
	size_t n = sizeof(buf);
	int r = KMS_ERR_VERIFY_FAILED;

	if ((ctx = EVP_PKEY_CTX_new(pub, NULL)) == NULL ||
	    EVP_PKEY_verify_recover_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot set up an RSA "
		    "public-key operation");
		goto out;
	}
	if (EVP_PKEY_verify_recover(ctx, buf, &n, block, CAPGO_RSA_LEN) != 1 ||
	    n != want) {
		r = kms_status_set(st, KMS_ERR_VERIFY_FAILED, "the %s does not "
		    "verify with this public key", what);
		goto out;
	}
	memcpy(out, buf, want);
	r = 0;
 out:
	OPENSSL_cleanse(buf, sizeof(buf));
	EVP_PKEY_CTX_free(ctx);
	/* A failed check is an answer, not an error to report later. */
	ERR_clear_error();
	return r;
}

/* Splits "base64(IV):base64(block)" into its two parts. */
static int
parse_iv_session_key(const char *s, uint8_t iv[CAPGO_IV_LEN],
    uint8_t block[CAPGO_RSA_LEN], struct kms_status *st)
{
	const char *colon = strchr(s, ':');

	if (colon == NULL || strchr(colon + 1, ':') != NULL ||
	    b64_decode_exact(s, (size_t)(colon - s), iv, CAPGO_IV_LEN) != 0 ||
	    b64_decode_exact(colon + 1, strlen(colon + 1), block,
	    CAPGO_RSA_LEN) != 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "ivSessionKey is not base64(16-byte IV):base64(256-byte "
		    "RSA block)");
	return 0;
}

/* Reads up to CHUNK bytes; 0 with *n == 0 at the end. */
static int
read_chunk(FILE *in, uint8_t *buf, size_t *n, struct kms_status *st)
{
	*n = fread(buf, 1, CHUNK, in);
	if (*n == 0 && ferror(in))
		return kms_status_set(st, KMS_ERR_IO, "cannot read the bundle: "
		    "%s", strerror(errno));
	return 0;
}

static int
write_chunk(FILE *out, const uint8_t *buf, size_t n, struct kms_status *st)
{
	if (out != NULL && n > 0 && fwrite(buf, 1, n, out) != n)
		return kms_status_set(st, KMS_ERR_IO, "cannot write the "
		    "output: %s", strerror(errno));
	return 0;
}

static int
flush_out(FILE *out, struct kms_status *st)
{
	if (out != NULL && (fflush(out) != 0 || ferror(out)))
		return kms_status_set(st, KMS_ERR_IO, "cannot write the "
		    "output: %s", strerror(errno));
	return 0;
}

/*
 * One streaming pass of AES-128-CBC over in into out (NULL: discard),
 * hashing the plaintext: the input when enc, the output otherwise.  A
 * non-zero *stop (may be NULL) ends it early with KMS_ERR_INTERNAL.
 */
static int
aes_pass(FILE *in, FILE *out, int enc, const uint8_t key[CAPGO_KEY_LEN],
    const uint8_t iv[CAPGO_IV_LEN], uint8_t sum[CAPGO_SUM_LEN],
    uint64_t *in_len, uint64_t *out_len, atomic_int *stop,
    struct kms_status *st)
{
	EVP_CIPHER_CTX *c = NULL;
	EVP_MD_CTX *md = NULL;
	uint8_t *ibuf = NULL, *obuf = NULL;
	unsigned int mdlen = 0;
	size_t n;
	int olen, r = KMS_ERR_NOMEM;

	*in_len = *out_len = 0;
	/* The output of one update is at most one block longer. */
	if ((ibuf = malloc(CHUNK)) == NULL ||
	    (obuf = malloc(CHUNK + CAPGO_IV_LEN)) == NULL ||
	    (c = EVP_CIPHER_CTX_new()) == NULL ||
	    (md = EVP_MD_CTX_new()) == NULL) {
		kms_status_set(st, r, "out of memory");
		goto out;
	}
	if (EVP_CipherInit_ex(c, EVP_aes_128_cbc(), NULL, key, iv, enc) != 1 ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot set up "
		    "AES-128-CBC and SHA-256");
		goto out;
	}
	for (;;) {
		if (stop != NULL && atomic_load(stop)) {
			r = kms_status_set(st, KMS_ERR_INTERNAL, "stopped");
			goto out;
		}
		if ((r = read_chunk(in, ibuf, &n, st)) != 0)
			goto out;
		if (n == 0)
			break;
		*in_len += n;
		if ((enc && EVP_DigestUpdate(md, ibuf, n) != 1) ||
		    EVP_CipherUpdate(c, obuf, &olen, ibuf, (int)n) != 1 ||
		    (!enc && EVP_DigestUpdate(md, obuf, (size_t)olen) != 1)) {
			r = kms_status_set(st, KMS_ERR_INTERNAL, "AES-128-CBC "
			    "or SHA-256 failed");
			goto out;
		}
		if ((r = write_chunk(out, obuf, (size_t)olen, st)) != 0)
			goto out;
		*out_len += (uint64_t)olen;
	}
	/* Decrypting, a bad final block means a bad key or ciphertext. */
	if (EVP_CipherFinal_ex(c, obuf, &olen) != 1) {
		r = kms_status_set(st, enc ? KMS_ERR_INTERNAL :
		    KMS_ERR_VERIFY_FAILED, enc ? "AES-128-CBC failed" :
		    "the bundle does not decrypt: wrong session key, or the "
		    "ciphertext was altered or truncated");
		goto out;
	}
	if ((!enc && EVP_DigestUpdate(md, obuf, (size_t)olen) != 1) ||
	    EVP_DigestFinal_ex(md, sum, &mdlen) != 1 ||
	    mdlen != CAPGO_SUM_LEN) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "SHA-256 failed");
		goto out;
	}
	if ((r = write_chunk(out, obuf, (size_t)olen, st)) != 0 ||
	    (r = flush_out(out, st)) != 0)
		goto out;
	*out_len += (uint64_t)olen;
	r = 0;
 out:
	/* Decrypting, the buffers hold plaintext; wipe them either way. */
	if (obuf != NULL)
		OPENSSL_cleanse(obuf, CHUNK + CAPGO_IV_LEN);
	if (ibuf != NULL)
		OPENSSL_cleanse(ibuf, CHUNK);
	free(obuf);
	free(ibuf);
	EVP_CIPHER_CTX_free(c);
	EVP_MD_CTX_free(md);
	return r;
}

/* Has sign protect in[0..len) and checks that the block is whole. */
static int
protect(capgo_sign_fn sign, void *arg, EVP_PKEY *check, const uint8_t *in,
    size_t len, uint8_t block[CAPGO_RSA_LEN], const char *what,
    struct kms_status *st)
{
	uint8_t back[CAPGO_SUM_LEN];
	int r;

	if ((r = sign(arg, in, len, block, st)) != 0)
		return r;
	if (check == NULL)
		return 0;
	if ((r = rsa_recover(check, block, back, len, what, st)) == 0 &&
	    CRYPTO_memcmp(back, in, len) != 0)
		r = kms_status_set(st, KMS_ERR_VERIFY_FAILED, "the signed %s "
		    "does not recover to its value", what);
	OPENSSL_cleanse(back, sizeof(back));
	return r;
}

/* The encryption thread's work and results. */
struct seal_pass {
	FILE *in, *out;
	const uint8_t *key, *iv;
	uint8_t sum[CAPGO_SUM_LEN];
	uint64_t plain_len, cipher_len;
	atomic_int stop;
	int r;
	struct kms_status st;
};

static void *
seal_pass_run(void *arg)
{
	struct seal_pass *p = arg;

	kms_status_clear(&p->st);
	p->r = aes_pass(p->in, p->out, 1, p->key, p->iv, p->sum, &p->plain_len,
	    &p->cipher_len, &p->stop, &p->st);
	return NULL;
}

int
capgo_encrypt(FILE *in, FILE *out, const struct capgo_signer *signer,
    struct capgo_sealed *res, struct kms_status *st)
{
	uint8_t key[CAPGO_KEY_LEN], iv[CAPGO_IV_LEN];
	uint8_t kblock[CAPGO_RSA_LEN], sblock[CAPGO_RSA_LEN];
	struct seal_pass p = { .in = in, .out = out, .key = key, .iv = iv };
	EVP_PKEY *check = NULL;
	pthread_t t;
	int r, threaded;

	memset(res, 0, sizeof(*res));
	atomic_init(&p.stop, 0);
	if (RAND_bytes(key, sizeof(key)) != 1 ||
	    RAND_bytes(iv, sizeof(iv)) != 1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "the random number "
		    "generator failed");
		goto out;
	}
	/*
	 * The bulk work starts at once; the signer gets ready and protects
	 * the session key meanwhile.  Without a thread, one after the other.
	 */
	threaded = pthread_create(&t, NULL, seal_pass_run, &p) == 0;
	r = 0;
	if (signer->prepare != NULL)
		r = signer->prepare(signer->arg, &check, st);
	if (r == 0)
		r = protect(signer->sign, signer->arg, check, key, sizeof(key),
		    kblock, "session key", st);
	if (r != 0)
		atomic_store(&p.stop, 1);
	if (threaded)
		pthread_join(t, NULL);
	else if (r == 0)
		seal_pass_run(&p);
	if (r != 0)
		goto out;
	if ((r = p.r) != 0) {
		kms_status_set(st, r, "%s", p.st.msg);
		goto out;
	}
	if ((r = protect(signer->sign, signer->arg, check, p.sum,
	    sizeof(p.sum), sblock, "checksum", st)) != 0)
		goto out;
	res->plain_len = p.plain_len;
	res->cipher_len = p.cipher_len;
	b64_encode(iv, sizeof(iv), res->iv_session_key);
	res->iv_session_key[B64_IV_LEN] = ':';
	b64_encode(kblock, sizeof(kblock), res->iv_session_key + B64_IV_LEN + 1);
	hex_encode(sblock, sizeof(sblock), res->checksum);
	r = 0;
 out:
	OPENSSL_cleanse(key, sizeof(key));
	if (r != 0)
		memset(res, 0, sizeof(*res));
	return r;
}

int
capgo_pubkey_from_pem(const char *pem, size_t len, EVP_PKEY **pk,
    struct kms_status *st)
{
	static const char pkcs1[] = "-----BEGIN RSA PUBLIC KEY-----";
	static const char spki[] = "-----BEGIN PUBLIC KEY-----";
	OSSL_DECODER_CTX *dctx = NULL;
	const unsigned char *p = (const unsigned char *)pem;
	EVP_PKEY *k = NULL;
	size_t left = len;
	int r = KMS_ERR_INVALID_ARGUMENT;

	*pk = NULL;
	/* A public key only: never read a private key that was passed by mistake. */
	if (len > CAPGO_PEM_MAX || (memmem(pem, len, pkcs1, strlen(pkcs1)) ==
	    NULL && memmem(pem, len, spki, strlen(spki)) == NULL)) {
		kms_status_set(st, r, "not a PEM public key (BEGIN RSA PUBLIC "
		    "KEY or BEGIN PUBLIC KEY)");
		goto out;
	}
	if ((dctx = OSSL_DECODER_CTX_new_for_pkey(&k, "PEM", NULL, "RSA",
	    EVP_PKEY_PUBLIC_KEY, NULL, NULL)) == NULL ||
	    OSSL_DECODER_from_data(dctx, &p, &left) != 1 || k == NULL) {
		kms_status_set(st, r, "not an RSA public key PEM");
		goto out;
	}
	if (EVP_PKEY_get_bits(k) != 8 * CAPGO_RSA_LEN) {
		kms_status_set(st, r, "an RSA-%d key: Capgo bundles need "
		    "RSA-2048", EVP_PKEY_get_bits(k));
		goto out;
	}
	*pk = k;
	k = NULL;
	r = 0;
 out:
	EVP_PKEY_free(k);
	OSSL_DECODER_CTX_free(dctx);
	return r;
}

int
capgo_decrypt(FILE *in, FILE *out, EVP_PKEY *pub,
    const char *iv_session_key, const char *checksum, uint64_t *plain_len,
    struct kms_status *st)
{
	uint8_t iv[CAPGO_IV_LEN], kblock[CAPGO_RSA_LEN], sblock[CAPGO_RSA_LEN];
	uint8_t key[CAPGO_KEY_LEN], want[CAPGO_SUM_LEN], got[CAPGO_SUM_LEN];
	uint64_t cipher_len = 0;
	int r;

	*plain_len = 0;
	if ((r = parse_iv_session_key(iv_session_key, iv, kblock, st)) != 0)
		goto out;
	if (hex_decode_exact(checksum, sblock, sizeof(sblock)) != 0) {
		r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the checksum "
		    "is not %d hex characters (the encrypted checksum)",
		    CAPGO_CHECKSUM_HEX_LEN);
		goto out;
	}
	/* Both blocks are checked before any work is done on the data. */
	if ((r = rsa_recover(pub, kblock, key, sizeof(key), "session key",
	    st)) != 0 ||
	    (r = rsa_recover(pub, sblock, want, sizeof(want), "checksum",
	    st)) != 0 ||
	    (r = aes_pass(in, out, 0, key, iv, got, &cipher_len, plain_len,
	    NULL, st)) != 0)
		goto out;
	if (CRYPTO_memcmp(got, want, sizeof(got)) != 0) {
		r = kms_status_set(st, KMS_ERR_VERIFY_FAILED, "the SHA-256 of "
		    "the decrypted bundle does not match its checksum");
		goto out;
	}
	r = 0;
 out:
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}
