/*
 * certcmd.c: `kmsctl key cert self-sign`: an X.509 certificate for a key
 * version's public key, signed by that key through Sign.  The
 * to-be-signed part is built here with OpenSSL; kmsd signs its digest (or,
 * for Ed25519 and RSA_RAW, the bytes) and the private key never leaves
 * the HSM.  The certificate is checked against the public key before it
 * is written or attached.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "algo.h"
#include "kmsctl.h"

#include "kms/v1/kms.pb-c.h"

#define SUBJECT_MAX	1024	/* --subject, in bytes */
#define DAYS_MAX	36500	/* --days */
#define ALGID_MAX	256	/* a signature AlgorithmIdentifier, DER */

/* The DigestInfo prefix of SHA-256 (RFC 8017, 9.2 note 1). */
static const uint8_t sha256_digestinfo[] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
	0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
};

/*
 * "CN=a,O=b" or OpenSSL's "/CN=a/O=b" into name; no escapes, so a value
 * holds neither separator.  0 or -1.
 */
static int
parse_subject(const char *s, X509_NAME *name)
{
	char *copy, *p, *tok, *eq, *save = NULL;
	const char *sep = ",";
	int r = -1;

	if (*s == '/') {
		sep = "/";
		s++;
	}
	if ((copy = strdup(s)) == NULL)
		return -1;
	for (p = copy; (tok = strtok_r(p, sep, &save)) != NULL; p = NULL) {
		while (*tok == ' ')
			tok++;
		if ((eq = strchr(tok, '=')) == NULL || eq == tok ||
		    eq[1] == '\0')
			goto out;
		*eq = '\0';
		if (X509_NAME_add_entry_by_txt(name, tok, MBSTRING_UTF8,
		    (const unsigned char *)eq + 1, -1, -1, 0) != 1)
			goto out;
	}
	r = X509_NAME_entry_count(name) > 0 ? 0 : -1;
 out:
	free(copy);
	return r;
}

/*
 * The signature AlgorithmIdentifier (DER) of alg over pk, as OpenSSL
 * would write it for this key and these parameters (PSS: SHA-256,
 * MGF1-SHA-256, salt 32, as kms signs).  md: the hash kmsd applies, NULL
 * for Ed25519.
 */
static X509_ALGOR *
sig_algorithm(EVP_PKEY *pk, const struct kms_alg_info *alg, const EVP_MD *md)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	uint8_t der[ALGID_MAX];
	const uint8_t *p = der;
	OSSL_PARAM params[2];
	X509_ALGOR *a = NULL;

	if (mctx == NULL ||
	    EVP_DigestVerifyInit(mctx, &pctx, md, NULL, pk) != 1)
		goto out;
	if (alg->family == KMS_FAMILY_RSA_PSS &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1))
		goto out;
	params[0] = OSSL_PARAM_construct_octet_string(
	    OSSL_SIGNATURE_PARAM_ALGORITHM_ID, der, sizeof(der));
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_PKEY_CTX_get_params(pctx, params) != 1 ||
	    !OSSL_PARAM_modified(&params[0]) || params[0].return_size == 0 ||
	    params[0].return_size > sizeof(der))
		goto out;
	a = d2i_X509_ALGOR(NULL, &p, (long)params[0].return_size);
 out:
	EVP_MD_CTX_free(mctx);
	return a;
}

/* tag, length and the parts one after the other, DER, into *out. */
struct part {
	const uint8_t *p;
	size_t n;
};

static int
der_wrap(uint8_t tag, const struct part *parts, size_t nparts,
    uint8_t **out, size_t *outlen)
{
	size_t len = 0, hdr, i, off;
	uint8_t *b;

	for (i = 0; i < nparts; i++)
		len += parts[i].n;
	/* A certificate is far below 2^24 bytes: four length forms do. */
	if (len >= (1u << 24))
		return -1;
	hdr = len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5;
	if ((b = malloc(hdr + len)) == NULL)
		return -1;
	b[0] = tag;
	if (hdr == 2)
		b[1] = (uint8_t)len;
	else {
		b[1] = (uint8_t)(0x80 | (hdr - 2));
		for (i = 0; i < hdr - 2; i++)
			b[hdr - 1 - i] = (uint8_t)(len >> (8 * i));
	}
	off = hdr;
	for (i = 0; i < nparts; i++) {
		memcpy(b + off, parts[i].p, parts[i].n);
		off += parts[i].n;
	}
	*out = b;
	*outlen = hdr + len;
	return 0;
}

/* An extension from its OpenSSL configuration value, added to x. */
static int
add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e;
	int ok;

	if ((e = X509V3_EXT_conf_nid(NULL, v3, nid, value)) == NULL)
		return -1;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok == 1 ? 0 : -1;
}

/*
 * The unsigned certificate: a random serial, subject = issuer = name,
 * valid from now for days, pk, the signature algorithm a (a copy is
 * kept), and the extensions of a code-signing leaf.
 */
static X509 *
tbs_cert(EVP_PKEY *pk, const X509_NAME *name, long days, const X509_ALGOR *a)
{
	X509 *x = X509_new();
	X509_ALGOR *tbsalg;
	BIGNUM *bn = NULL;
	X509V3_CTX v3;
	uint8_t serial[16];
	int ok = 0;

	if (x == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] = (serial[0] & 0x7f) | 0x40;	/* positive, 16 bytes */
	if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_subject_name(x, name) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0,
	    NULL) == NULL ||
	    X509_set_pubkey(x, pk) != 1)
		goto out;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if (add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") != 0 ||
	    add_ext(x, &v3, NID_ext_key_usage, "codeSigning") != 0)
		goto out;
	/*
	 * XXX OpenSSL 3.0 has no setter for the TBS signature algorithm; the
	 * structure belongs to x, which is ours, so it is written in place.
	 */
	tbsalg = (X509_ALGOR *)X509_get0_tbs_sigalg(x);
	if (X509_ALGOR_copy(tbsalg, a) != 1)
		goto out;
	ok = 1;
 out:
	BN_free(bn);
	if (!ok) {
		X509_free(x);
		x = NULL;
	}
	return x;
}

/*
 * Has kmsd sign tbs with version v of name: the digest of the key's hash,
 * Ed25519 the bytes, RSA_RAW a SHA-256 DigestInfo.  The signature into
 * *sig (malloc'd).  A kmsctl exit code.
 */
static int
remote_sign(struct ctx *x, const char *name, uint32_t v,
    const struct kms_alg_info *alg, const EVP_MD *md, const uint8_t *tbs,
    size_t tbslen, uint8_t **sig, size_t *siglen)
{
	Kms__V1__SignRequest req = KMS__V1__SIGN_REQUEST__INIT;
	Kms__V1__SignResponse *s;
	ProtobufCMessage *resp = NULL;
	uint8_t buf[sizeof(sha256_digestinfo) + EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int r;

	*sig = NULL;
	*siglen = 0;
	req.name = (char *)name;
	req.version = v;
	if (alg->family == KMS_FAMILY_EDDSA) {
		req.data.data = (uint8_t *)tbs;
		req.data.len = tbslen;
	} else if (alg->family == KMS_FAMILY_RSA_RAW) {
		memcpy(buf, sha256_digestinfo, sizeof(sha256_digestinfo));
		if (EVP_Digest(tbs, tbslen, buf + sizeof(sha256_digestinfo),
		    &mdlen, EVP_sha256(), NULL) != 1)
			return KMSCTL_EXIT_IO;
		req.data.data = buf;
		req.data.len = sizeof(sha256_digestinfo) + mdlen;
	} else {
		if (EVP_Digest(tbs, tbslen, buf, &mdlen, md, NULL) != 1)
			return KMSCTL_EXIT_IO;
		req.digest.data = buf;
		req.digest.len = mdlen;
	}
	if ((r = kmsctl_call(x, "Sign", &req.base,
	    &kms__v1__sign_response__descriptor, &resp)) != 0)
		return r;
	s = (Kms__V1__SignResponse *)resp;
	if (s->version != v || s->signature.len == 0 ||
	    (*sig = malloc(s->signature.len)) == NULL) {
		fprintf(stderr, "kmsctl: %s: no signature of version %u\n",
		    name, v);
		r = KMSCTL_EXIT_REFUSED;
	} else {
		memcpy(*sig, s->signature.data, s->signature.len);
		*siglen = s->signature.len;
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/*
 * The certificate: tbs, the algorithm and the signature as a BIT STRING,
 * in a SEQUENCE (RFC 5280, 4.1), parsed back and verified with pk.
 */
static X509 *
assemble(const uint8_t *tbs, size_t tbslen, const X509_ALGOR *a,
    const uint8_t *sig, size_t siglen, EVP_PKEY *pk)
{
	static const uint8_t no_unused_bits = 0;
	uint8_t *alg = NULL, *bits = NULL, *der = NULL;
	const uint8_t *p;
	size_t bitslen, derlen;
	X509 *cert = NULL;
	struct part bitparts[2], certparts[3];
	int alglen;

	bitparts[0].p = &no_unused_bits;
	bitparts[0].n = 1;
	bitparts[1].p = sig;
	bitparts[1].n = siglen;
	if ((alglen = i2d_X509_ALGOR(a, &alg)) <= 0 ||
	    der_wrap(V_ASN1_BIT_STRING, bitparts, 2, &bits, &bitslen) != 0)
		goto out;
	certparts[0].p = tbs;
	certparts[0].n = tbslen;
	certparts[1].p = alg;
	certparts[1].n = (size_t)alglen;
	certparts[2].p = bits;
	certparts[2].n = bitslen;
	if (der_wrap(V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, certparts, 3,
	    &der, &derlen) != 0)
		goto out;
	p = der;
	if ((cert = d2i_X509(NULL, &p, (long)derlen)) == NULL ||
	    p != der + derlen || X509_verify(cert, pk) != 1) {
		X509_free(cert);
		cert = NULL;
	}
 out:
	OPENSSL_free(alg);
	free(bits);
	free(der);
	return cert;
}

/*
 * key cert self-sign NAME [--version N] [--subject DN] [--days N]
 *     [-o FILE | --attach]
 */
int
key_cert_self_sign(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "version", required_argument, NULL, 'v' },
		{ "subject", required_argument, NULL, 's' },
		{ "days", required_argument, NULL, 'd' },
		{ "attach", no_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 }
	};
	static const char usage[] = "key cert self-sign NAME [--version N] "
	    "[--subject DN] [--days N] [-o FILE | --attach]";
	Kms__V1__GetPublicKeyRequest preq = KMS__V1__GET_PUBLIC_KEY_REQUEST__INIT;
	Kms__V1__PublicKey *pub;
	const struct kms_alg_info *alg;
	const EVP_MD *md = NULL;
	ProtobufCMessage *resp = NULL;
	const char *subject = NULL, *outpath = NULL;
	char *pem = NULL;
	uint8_t *tbs = NULL, *sig = NULL;
	size_t siglen, len;
	uint32_t days = 365;
	int ch, attach = 0, tbslen, r;
	EVP_PKEY *pk = NULL;
	X509_ALGOR *a = NULL;
	X509_NAME *name = NULL;
	X509 *unsigned_cert = NULL, *cert = NULL;
	BIO *bio = NULL;
	char *p;

	optind = 3;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			if (parse_u32(optarg, &preq.version) != 0 ||
			    preq.version == 0)
				return die_usage("--version: a version number");
			break;
		case 's':
			if (*optarg == '\0' || strlen(optarg) > SUBJECT_MAX)
				return die_usage("--subject: 1 to 1024 bytes");
			subject = optarg;
			break;
		case 'd':
			if (parse_u32(optarg, &days) != 0 || days == 0 ||
			    days > DAYS_MAX)
				return die_usage("--days: 1 to 36500");
			break;
		case 'a':
			attach = 1;
			break;
		case 'o':
			outpath = optarg;
			break;
		default:
			return die_usage(usage);
		}
	}
	if (optind != argc - 1 || (attach && outpath != NULL))
		return die_usage(usage);
	preq.name = argv[optind];
	/* The subject is checked before any call: bad input changes nothing. */
	if ((name = X509_NAME_new()) == NULL)
		return KMSCTL_EXIT_IO;
	if (subject != NULL ? parse_subject(subject, name) != 0 :
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	    (const unsigned char *)preq.name, -1, -1, 0) != 1) {
		X509_NAME_free(name);
		return die_usage(subject != NULL ? "--subject: NAME=VALUE "
		    "pairs, as CN=release,O=Example or /CN=release/O=Example" :
		    "the key name does not fit a CN (64 characters): give "
		    "--subject");
	}

	/* The version's public key and algorithm; the version resolved. */
	if ((r = kmsctl_call(x, "GetPublicKey", &preq.base,
	    &kms__v1__public_key__descriptor, &resp)) != 0) {
		X509_NAME_free(name);
		return r;
	}
	pub = (Kms__V1__PublicKey *)resp;
	r = KMSCTL_EXIT_REFUSED;
	if ((alg = kms_alg_lookup(pub->algorithm)) == NULL || !alg->can_sign) {
		fprintf(stderr, "kmsctl: %s is %s, not a signing key\n",
		    preq.name, kms_alg_name(pub->algorithm));
		goto out;
	}
	if ((bio = BIO_new_mem_buf(pub->pem, -1)) == NULL ||
	    (pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) == NULL) {
		fprintf(stderr, "kmsctl: the server's public key of %s is not "
		    "a PEM SubjectPublicKeyInfo\n", preq.name);
		goto out;
	}
	if (alg->family != KMS_FAMILY_EDDSA)
		md = alg->hash == KMS_HASH_SHA384 ? EVP_sha384() :
		    EVP_sha256();
	if ((a = sig_algorithm(pk, alg, md)) == NULL) {
		fprintf(stderr, "kmsctl: no certificate signature algorithm "
		    "for %s\n", kms_alg_name(pub->algorithm));
		goto out;
	}
	if ((unsigned_cert = tbs_cert(pk, name, (long)days, a)) == NULL) {
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if ((tbslen = i2d_re_X509_tbs(unsigned_cert, &tbs)) <= 0) {
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if ((r = remote_sign(x, preq.name, pub->version, alg, md, tbs,
	    (size_t)tbslen, &sig, &siglen)) != 0)
		goto out;
	if ((cert = assemble(tbs, (size_t)tbslen, a, sig, siglen,
	    pk)) == NULL) {
		fprintf(stderr, "kmsctl: the signature kmsd returned does not "
		    "verify with the public key of %s version %u\n",
		    preq.name, pub->version);
		r = KMSCTL_EXIT_VERIFY;
		goto out;
	}
	BIO_free(bio);
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(bio, cert) != 1 ||
	    (len = (size_t)BIO_get_mem_data(bio, &p)) == 0 ||
	    (pem = strndup(p, len)) == NULL) {
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if (attach)
		r = key_cert_attach(x, preq.name, pub->version, pem);
	else
		r = write_out(outpath, pem, len, 0);
 out:
	free(pem);
	free(sig);
	OPENSSL_free(tbs);
	X509_free(cert);
	X509_free(unsigned_cert);
	X509_ALGOR_free(a);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	X509_NAME_free(name);
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}
