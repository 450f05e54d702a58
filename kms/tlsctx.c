/*
 * tlsctx.c: the TLS credentials kmsd serves with (see tlsctx.h).
 *
 * Every file is read whole (bounded), hashed so that a reload can say
 * what changed, and parsed from memory; the private key's buffer is wiped.
 * Sessions are neither cached nor resumed: every connection runs the full
 * verification, CRL check included, so a revoked certificate cannot come
 * back through a ticket issued before the revocation.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "fileio.h"
#include "kmserr.h"
#include "secret.h"
#include "tlsctx.h"

#define PEM_FILE_MAX (1024 * 1024)
#define VERIFY_DEPTH 4

static const char *const file_names[TLS_FILE_COUNT] = {
	"cert", "key", "ca", "crl"
};

const char *
tls_file_name(enum tls_file f)
{
	return (unsigned int)f < TLS_FILE_COUNT ? file_names[f] : "?";
}

/* The first OpenSSL error as text, for messages. */
static const char *
ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "not valid PEM");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* Reads file f into *text and records its digest. */
static int
read_member(struct tls_set *ts, enum tls_file f, const char *path,
    char **text, size_t *len, struct kms_status *st)
{
	int r;

	if ((r = fileio_read(path, PEM_FILE_MAX, text, len, st)) != 0)
		return r;
	if (*len == 0)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: empty", path);
	if (EVP_Digest(*text, *len, ts->digest[f], NULL, EVP_sha256(),
	    NULL) != 1)
		return kms_status_set(st, KMS_ERR_INTERNAL, "cannot hash %s",
		    path);
	return 0;
}

/* A member file read whole, with a memory BIO over it for PEM_read_bio. */
struct pem_in {
	char *text;
	size_t len;
	BIO *bio;
};

static int
pem_open(struct tls_set *ts, enum tls_file f, const char *path,
    struct pem_in *in, struct kms_status *st)
{
	int r;

	memset(in, 0, sizeof(*in));
	if ((r = read_member(ts, f, path, &in->text, &in->len, st)) != 0)
		return r;
	if ((in->bio = BIO_new_mem_buf(in->text, (int)in->len)) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	return 0;
}

/* Frees what pem_open made; the text is wiped (it may be a key). */
static void
pem_close(struct pem_in *in)
{
	BIO_free(in->bio);
	if (in->text != NULL)
		secret_freezero(in->text, in->len + 1);
	memset(in, 0, sizeof(*in));
}

static int
load_cert_chain(struct tls_set *ts, const char *path, struct kms_status *st)
{
	struct pem_in in;
	char why[160];
	X509 *x = NULL;
	int r, n = 0;

	if ((r = pem_open(ts, TLS_FILE_CERT, path, &in, st)) != 0)
		goto out;
	r = KMS_ERR_CONFIG;
	while ((x = PEM_read_bio_X509(in.bio, NULL, NULL, NULL)) != NULL) {
		if ((n == 0 ? SSL_CTX_use_certificate(ts->ctx, x) :
		    SSL_CTX_add0_chain_cert(ts->ctx, x)) != 1)
			goto fail;
		if (n == 0)
			X509_free(x);
		x = NULL;
		n++;
	}
	ERR_clear_error();
	if (n == 0)
		goto fail;
	r = 0;
	goto out;
 fail:
	kms_status_set(st, KMS_ERR_CONFIG, "%s: no usable certificate (%s)",
	    path, ossl_reason(why, sizeof(why)));
 out:
	X509_free(x);
	pem_close(&in);
	return r;
}

static int
load_key(struct tls_set *ts, const char *path, struct kms_status *st)
{
	struct pem_in in;
	char why[160];
	EVP_PKEY *pk = NULL;
	int r;

	if ((r = pem_open(ts, TLS_FILE_KEY, path, &in, st)) != 0)
		goto out;
	r = KMS_ERR_CONFIG;
	if ((pk = PEM_read_bio_PrivateKey(in.bio, NULL, NULL, NULL)) == NULL) {
		kms_status_set(st, KMS_ERR_CONFIG, "%s: no usable private key "
		    "(%s)", path, ossl_reason(why, sizeof(why)));
		goto out;
	}
	if (SSL_CTX_use_PrivateKey(ts->ctx, pk) != 1 ||
	    SSL_CTX_check_private_key(ts->ctx) != 1) {
		ERR_clear_error();
		kms_status_set(st, KMS_ERR_CONFIG, "%s: the key does not match "
		    "the server certificate", path);
		goto out;
	}
	r = 0;
 out:
	EVP_PKEY_free(pk);
	pem_close(&in);
	return r;
}

static int
load_ca(struct tls_set *ts, const char *path, STACK_OF(X509) **cas,
    struct kms_status *st)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ts->ctx);
	STACK_OF(X509_NAME) *names = NULL;
	struct pem_in in;
	char why[160];
	X509 *x = NULL;
	int r;

	if ((r = pem_open(ts, TLS_FILE_CA, path, &in, st)) != 0)
		goto out;
	r = KMS_ERR_CONFIG;
	if ((*cas = sk_X509_new_null()) == NULL ||
	    (names = sk_X509_NAME_new_null()) == NULL)
		goto fail;
	while ((x = PEM_read_bio_X509(in.bio, NULL, NULL, NULL)) != NULL) {
		X509_NAME *nm;

		if (X509_STORE_add_cert(store, x) != 1 ||
		    (nm = X509_NAME_dup(X509_get_subject_name(x))) == NULL)
			goto fail;
		if (!sk_X509_NAME_push(names, nm)) {
			X509_NAME_free(nm);
			goto fail;
		}
		if (!sk_X509_push(*cas, x))
			goto fail;
		x = NULL;
	}
	ERR_clear_error();
	if (sk_X509_num(*cas) == 0)
		goto fail;
	/* Tells clients which CA to pick their certificate by. */
	SSL_CTX_set_client_CA_list(ts->ctx, names);
	names = NULL;
	r = 0;
	goto out;
 fail:
	kms_status_set(st, KMS_ERR_CONFIG, "%s: no usable CA certificate "
	    "(%s)", path, ossl_reason(why, sizeof(why)));
 out:
	sk_X509_NAME_pop_free(names, X509_NAME_free);
	X509_free(x);
	pem_close(&in);
	return r;
}

/* The CA of the bundle that issued crl and signed it, or NULL. */
static X509 *
crl_issuer(STACK_OF(X509) *cas, X509_CRL *crl)
{
	X509 *ca;
	int i;

	for (i = 0; i < sk_X509_num(cas); i++) {
		ca = sk_X509_value(cas, i);
		if (X509_NAME_cmp(X509_get_subject_name(ca),
		    X509_CRL_get_issuer(crl)) == 0 &&
		    X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
			return ca;
	}
	ERR_clear_error();
	return NULL;
}

static int
load_crl(struct tls_set *ts, const char *path, STACK_OF(X509) *cas,
    struct kms_status *st)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ts->ctx);
	const ASN1_TIME *next;
	struct pem_in in;
	char why[160];
	X509_CRL *crl = NULL;
	int r;

	if ((r = pem_open(ts, TLS_FILE_CRL, path, &in, st)) != 0)
		goto out;
	r = KMS_ERR_CONFIG;
	while ((crl = PEM_read_bio_X509_CRL(in.bio, NULL, NULL, NULL)) !=
	    NULL) {
		if (crl_issuer(cas, crl) == NULL) {
			kms_status_set(st, KMS_ERR_CONFIG, "%s: CRL %d is not "
			    "signed by a CA of the CA bundle", path,
			    ts->ncrl + 1);
			goto out;
		}
		next = X509_CRL_get0_nextUpdate(crl);
		if (next != NULL && X509_cmp_time(next, NULL) <= 0) {
			kms_status_set(st, KMS_ERR_CONFIG, "%s: CRL %d is out "
			    "of date (its next update was due): issue a new "
			    "one", path, ts->ncrl + 1);
			goto out;
		}
		if (X509_STORE_add_crl(store, crl) != 1) {
			kms_status_set(st, KMS_ERR_CONFIG, "%s: CRL %d: %s",
			    path, ts->ncrl + 1, ossl_reason(why, sizeof(why)));
			goto out;
		}
		X509_CRL_free(crl);
		crl = NULL;
		ts->ncrl++;
	}
	/* Trailing garbage or a damaged block is an error, not the end. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE ||
	    ts->ncrl == 0) {
		kms_status_set(st, KMS_ERR_CONFIG, "%s: no usable CRL (%s)",
		    path, ossl_reason(why, sizeof(why)));
		goto out;
	}
	ERR_clear_error();
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	r = 0;
 out:
	X509_CRL_free(crl);
	pem_close(&in);
	return r;
}

/*
 * A leaf whose key usage does not fit TLS client authentication gets
 * through the handshake, so that identity_from_cert can refuse it with a
 * reason the client sees; every other verification error fails the
 * handshake.
 */
static int
verify_cb(int ok, X509_STORE_CTX *xs)
{
	if (!ok && X509_STORE_CTX_get_error_depth(xs) == 0 &&
	    X509_STORE_CTX_get_error(xs) == X509_V_ERR_INVALID_PURPOSE)
		return 1;
	return ok;
}

/* gRPC speaks HTTP/2 only, and its clients insist on ALPN "h2". */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h2[] = { 2, 'h', '2' };
	unsigned char *sel = NULL;

	if (SSL_select_next_proto(&sel, outlen, h2, sizeof(h2), in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

void
tls_set_free(struct tls_set *ts)
{
	if (ts == NULL)
		return;
	SSL_CTX_free(ts->ctx);
	free(ts);
}

int
tls_set_load(const char *cert, const char *key, const char *ca,
    const char *crl, struct tls_set **out, struct kms_status *st)
{
	static const unsigned char sid[] = "kmsd";
	STACK_OF(X509) *cas = NULL;
	struct tls_set *ts;
	int r;

	*out = NULL;
	if ((ts = calloc(1, sizeof(*ts))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	if ((ts->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "cannot make a TLS "
		    "context");
		goto out;
	}
	SSL_CTX_set_min_proto_version(ts->ctx, TLS1_2_VERSION);
	/* Decrypted records are wiped once read: they hold plaintexts. */
	SSL_CTX_set_options(ts->ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_CLEANSE_PLAINTEXT);
	SSL_CTX_set_session_cache_mode(ts->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ts->ctx, 0);
	SSL_CTX_set_session_id_context(ts->ctx, sid, sizeof(sid) - 1);
	SSL_CTX_set_mode(ts->ctx, SSL_MODE_RELEASE_BUFFERS |
	    SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Whole TLS records per read: fewer system calls per call. */
	SSL_CTX_set_read_ahead(ts->ctx, 1);
	SSL_CTX_set_verify(ts->ctx, SSL_VERIFY_PEER |
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_verify_depth(ts->ctx, VERIFY_DEPTH);
	SSL_CTX_set_alpn_select_cb(ts->ctx, alpn_cb, NULL);
	if ((r = load_cert_chain(ts, cert, st)) != 0 ||
	    (r = load_key(ts, key, st)) != 0 ||
	    (r = load_ca(ts, ca, &cas, st)) != 0)
		goto out;
	if (crl != NULL && crl[0] != '\0' &&
	    (r = load_crl(ts, crl, cas, st)) != 0)
		goto out;
	*out = ts;
	ts = NULL;
 out:
	sk_X509_pop_free(cas, X509_free);
	tls_set_free(ts);
	ERR_clear_error();
	return r;
}
