/*
 * libFuzzer target for kms OTA bundles: the manifest and statement
 * parsers on arbitrary bytes, and the streaming verifier on arbitrary
 * streams fed in input-chosen pieces.  The verifier's policy uses fixed
 * keys, so that the seed bundle in tests/fuzz/corpus-kmsb/ (made by this
 * file built with -DKMSB_MKSEED, see the comment at the end) verifies and
 * the fuzzer starts from the whole successful path.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "kmsb.h"
#include "kmsb_crypto.h"

/* Fixed, public test keys: never use them for anything else. */
static const uint8_t root_seed[32] = {
	0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
	0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
	0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11
};
static const uint8_t signer_seed[32] = {
	0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
	0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
	0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22
};
static const uint8_t device_sk[32] = {
	0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
	0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
	0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33
};

#define FUZZ_APP	"com.example.fuzz"
#define FUZZ_CHANNEL	"stable"
#define FUZZ_NOW	1800000000ULL

static void
ed25519_pub(const uint8_t seed[32], struct kmsb_pubkey *k)
{
	EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL,
	    seed, 32);
	size_t n = 32;

	memset(k, 0, sizeof(*k));
	if (pk == NULL || EVP_PKEY_get_raw_public_key(pk, k->key, &n) != 1)
		abort();
	k->alg = KMSB_SIG_ED25519;
	k->len = 32;
	EVP_PKEY_free(pk);
}

static int
discard(void *arg, const uint8_t *p, size_t len)
{
	size_t *total = arg;

	*total += len;
	return 0;
}

#ifndef KMSB_MKSEED
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kmsb_policy pol;
	static int ready;
	struct kmsb_manifest m;
	struct kmsb_statement st;
	struct kmsb_verifier *v = NULL;
	size_t off = 0, n, total = 0, step;
	int r;

	if (!ready) {
		ed25519_pub(root_seed, &pol.root);
		pol.app_id = FUZZ_APP;
		pol.channel = FUZZ_CHANNEL;
		pol.now = FUZZ_NOW;
		memcpy(pol.recipient_sk, device_sk, 32);
		ready = 1;
	}
	if (kmsb_manifest_parse(data, size, &m) == KMSB_OK &&
	    (m.manifest_len != size || m.header_len +
	    (size_t)m.chunk_count * KMSB_HASH_LEN != size))
		abort();
	if (kmsb_statement_parse(data, size, &st) == KMSB_OK &&
	    st.body_len + 2u + st.sig_len != size)
		abort();

	/* The whole input as a bundle, in pieces sized by its first byte. */
	step = size > 0 ? (size_t)data[0] * 37 + 1 : 1;
	if (kmsb_verifier_init(&v, &pol) != KMSB_OK)
		abort();
	r = KMSB_OK;
	while (r == KMSB_OK && off < size) {
		n = size - off < step ? size - off : step;
		r = kmsb_verifier_update(v, data + off, n, discard, &total);
		off += n;
	}
	if (r == KMSB_OK)
		r = kmsb_verifier_final(v);
	/* Plaintext only ever comes out of a manifest that verified. */
	if (total > 0 && kmsb_verifier_manifest(v, NULL) == NULL)
		abort();
	kmsb_verifier_free(v);
	return 0;
}
#else
/*
 * The seed corpus:
 *   cc -DKMSB_MKSEED -D_GNU_SOURCE -Ikmsb -o /tmp/mkseed \
 *       tests/fuzz/fuzz_kmsb_manifest.c \
 *       $(ls kmsb/kmsb_*.c | grep -v main) -lcrypto
 *   /tmp/mkseed tests/fuzz/corpus-kmsb
 */
#include "kmsb_seal.h"

static int
sign_with(void *arg, const uint8_t *msg, size_t len,
    uint8_t sig[KMSB_SIG_MAX], size_t *sig_len)
{
	EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL,
	    arg, 32);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	size_t n = KMSB_SIG_MAX;
	int r = -1;

	if (pk != NULL && c != NULL &&
	    EVP_DigestSignInit(c, NULL, NULL, NULL, pk) == 1 &&
	    EVP_DigestSign(c, sig, &n, msg, len) == 1) {
		*sig_len = n;
		r = 0;
	}
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(pk);
	return r;
}

static void
write_file(const char *dir, const char *name, const uint8_t *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(p, 1, n, f) != n ||
	    fclose(f) != 0)
		abort();
}

int
main(int argc, char **argv)
{
	static const uint8_t base[32] = { 9 };
	struct kmsb_statement_key key;
	struct kmsb_statement_params sp;
	struct kmsb_seal_params p;
	struct kmsb_pubkey root;
	uint8_t st[KMSB_STATEMENT_MAX], dpk[32], data[3000];
	char why[KMSB_WHY_MAX], *bundle = NULL;
	size_t st_len, blen = 0, mlen;
	FILE *in, *out;

	if (argc != 2)
		return 2;
	ed25519_pub(root_seed, &root);
	ed25519_pub(signer_seed, &key.pub);
	key.not_after = FUZZ_NOW + 86400;
	memset(&sp, 0, sizeof(sp));
	sp.app_id = FUZZ_APP;
	sp.seq = 1;
	sp.expires = FUZZ_NOW + 86400;
	sp.root = root;
	sp.keys = &key;
	sp.key_count = 1;
	if (kmsb_statement_build(&sp, sign_with, (void *)root_seed, st,
	    sizeof(st), &st_len, why) != KMSB_OK ||
	    kmsb_c_x25519(dpk, device_sk, base) != 0)
		abort();
	write_file(argv[1], "statement", st, st_len);
	memset(data, 'x', sizeof(data));
	memset(&p, 0, sizeof(p));
	p.app_id = FUZZ_APP;
	p.channel = FUZZ_CHANNEL;
	p.version = "1.0.0";
	p.seq = 1;
	p.created = FUZZ_NOW - 10;
	p.expires = FUZZ_NOW + 3600;
	p.chunk_size = KMSB_CHUNK_MIN;
	p.signer = key.pub;
	p.recipients = (const uint8_t (*)[32])dpk;
	p.recipient_count = 1;
	p.statement = st;
	p.statement_len = st_len;
	if ((in = tmpfile()) == NULL ||
	    fwrite(data, 1, sizeof(data), in) != sizeof(data))
		abort();
	rewind(in);
	if ((out = open_memstream(&bundle, &blen)) == NULL ||
	    kmsb_seal(&p, in, sizeof(data), out, sign_with,
	    (void *)signer_seed, why) != KMSB_OK)
		abort();
	fclose(out);
	fclose(in);
	write_file(argv[1], "bundle-3000", (uint8_t *)bundle, blen);
	mlen = (size_t)(uint8_t)bundle[8] << 8 | (uint8_t)bundle[9];
	write_file(argv[1], "manifest", (uint8_t *)bundle, mlen);
	free(bundle);
	return 0;
}
#endif
