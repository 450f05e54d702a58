/*
 * kmsb_hpke.c: RFC 9180's labeled HKDF, DHKEM(X25519, HKDF-SHA256) and
 * base-mode key schedule, on the primitives of kmsb_crypto.h.
 */
#include <string.h>

#include "kmsb_crypto.h"
#include "kmsb_hpke.h"

#define LABEL_MAX	(KMSB_HPKE_INFO_MAX + 64)

/* suite_id of the KEM, and of the whole HPKE suite (RFC 9180 4.1, 5.1). */
static const uint8_t kem_suite[5] = { 'K', 'E', 'M', 0x00, 0x20 };
static const uint8_t hpke_suite[10] = {
	'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, 0x00, 0x01
};

/*
 * Writes "HPKE-v1" || suite || label || data at buf + off (RFC 9180 4,
 * the labeled input of both LabeledExtract and LabeledExpand); its end,
 * or 0 when it does not fit.
 */
static size_t
labeled(uint8_t buf[LABEL_MAX], size_t off, const uint8_t *suite,
    size_t suite_len, const char *label, const uint8_t *data, size_t len)
{
	size_t ll = strlen(label);

	if (off + 7 + suite_len + ll + len > LABEL_MAX)
		return 0;
	memcpy(buf + off, "HPKE-v1", 7);
	off += 7;
	memcpy(buf + off, suite, suite_len);
	off += suite_len;
	memcpy(buf + off, label, ll);
	off += ll;
	if (len > 0)
		memcpy(buf + off, data, len);
	return off + len;
}

/* LabeledExtract(salt, label, ikm) = Extract(salt, labeled(label, ikm)) */
static int
labeled_extract(const uint8_t *suite, size_t suite_len, const uint8_t *salt,
    size_t salt_len, const char *label, const uint8_t *ikm, size_t ikm_len,
    uint8_t prk[32])
{
	uint8_t buf[LABEL_MAX];
	size_t n;
	int r = -1;

	if ((n = labeled(buf, 0, suite, suite_len, label, ikm, ikm_len)) != 0)
		r = kmsb_c_hkdf_extract(salt, salt_len, buf, n, prk);
	kmsb_c_wipe(buf, sizeof(buf));
	return r;
}

/* LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || labeled(label, info), L) */
static int
labeled_expand(const uint8_t *suite, size_t suite_len, const uint8_t prk[32],
    const char *label, const uint8_t *info, size_t info_len, uint8_t *out,
    size_t out_len)
{
	uint8_t buf[LABEL_MAX];
	size_t n;

	if (out_len > 0xffff)
		return -1;
	buf[0] = (uint8_t)(out_len >> 8);
	buf[1] = (uint8_t)out_len;
	if ((n = labeled(buf, 2, suite, suite_len, label, info,
	    info_len)) == 0)
		return -1;
	return kmsb_c_hkdf_expand(prk, buf, n, out, out_len);
}

int
kmsb_hpke_schedule(const uint8_t dh[32], const uint8_t enc[32],
    const uint8_t pkr[32], const uint8_t *info, size_t info_len,
    uint8_t shared_out[32], uint8_t key[KMSB_HPKE_KEY_LEN],
    uint8_t nonce[KMSB_NONCE_LEN])
{
	uint8_t kem_context[64], prk[32], shared[32], secret[32];
	uint8_t ctx[1 + 32 + 32];	/* mode || psk_id_hash || info_hash */
	int r = -1;

	if (info_len > KMSB_HPKE_INFO_MAX)
		return -1;
	/* DHKEM ExtractAndExpand (RFC 9180 4.1). */
	memcpy(kem_context, enc, 32);
	memcpy(kem_context + 32, pkr, 32);
	if (labeled_extract(kem_suite, sizeof(kem_suite), NULL, 0, "eae_prk",
	    dh, 32, prk) != 0 ||
	    labeled_expand(kem_suite, sizeof(kem_suite), prk, "shared_secret",
	    kem_context, sizeof(kem_context), shared, 32) != 0)
		goto out;
	/* KeySchedule, mode_base: empty psk and psk_id (RFC 9180 5.1). */
	ctx[0] = 0x00;
	if (labeled_extract(hpke_suite, sizeof(hpke_suite), NULL, 0,
	    "psk_id_hash", NULL, 0, ctx + 1) != 0 ||
	    labeled_extract(hpke_suite, sizeof(hpke_suite), NULL, 0,
	    "info_hash", info, info_len, ctx + 33) != 0 ||
	    labeled_extract(hpke_suite, sizeof(hpke_suite), shared, 32,
	    "secret", NULL, 0, secret) != 0 ||
	    labeled_expand(hpke_suite, sizeof(hpke_suite), secret, "key", ctx,
	    sizeof(ctx), key, KMSB_HPKE_KEY_LEN) != 0 ||
	    labeled_expand(hpke_suite, sizeof(hpke_suite), secret,
	    "base_nonce", ctx, sizeof(ctx), nonce, KMSB_NONCE_LEN) != 0)
		goto out;
	if (shared_out != NULL)
		memcpy(shared_out, shared, 32);
	r = 0;
 out:
	kmsb_c_wipe(prk, sizeof(prk));
	kmsb_c_wipe(shared, sizeof(shared));
	kmsb_c_wipe(secret, sizeof(secret));
	if (r != 0) {
		kmsb_c_wipe(key, KMSB_HPKE_KEY_LEN);
		kmsb_c_wipe(nonce, KMSB_NONCE_LEN);
	}
	return r;
}

int
kmsb_hpke_open(const uint8_t skr[32], const uint8_t enc[32],
    const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
    const uint8_t *ct, size_t ct_len, const uint8_t tag[16], uint8_t *pt)
{
	static const uint8_t base[32] = { 9 };
	uint8_t dh[32], pkr[32], key[KMSB_HPKE_KEY_LEN], nonce[KMSB_NONCE_LEN];
	int r = -1;

	/* Decap: dh = DH(skR, pkE), and pkR for the KEM context. */
	if (kmsb_c_x25519(dh, skr, enc) != 0 ||
	    kmsb_c_x25519(pkr, skr, base) != 0 ||
	    kmsb_hpke_schedule(dh, enc, pkr, info, info_len, NULL, key,
	    nonce) != 0)
		goto out;
	/* Sequence number 0: the nonce is the base nonce itself. */
	r = kmsb_c_gcm_open(key, sizeof(key), nonce, aad, aad_len, ct, ct_len,
	    tag, pt);
 out:
	kmsb_c_wipe(dh, sizeof(dh));
	kmsb_c_wipe(key, sizeof(key));
	return r;
}

size_t
kmsb_cek_info(uint8_t out[KMSB_HPKE_INFO_MAX], const char *app,
    size_t app_len, const char *channel, size_t channel_len, uint64_t seq)
{
	static const char label[] = "kms-bundle-cek-v1";
	size_t n = sizeof(label);	/* with its NUL */
	int i;

	if (app_len > KMSB_STR_MAX || channel_len > KMSB_STR_MAX)
		return 0;
	memcpy(out, label, n);
	out[n++] = (uint8_t)app_len;
	memcpy(out + n, app, app_len);
	n += app_len;
	out[n++] = (uint8_t)channel_len;
	memcpy(out + n, channel, channel_len);
	n += channel_len;
	for (i = 7; i >= 0; i--)
		out[n++] = (uint8_t)(seq >> (8 * i));
	return n;
}
