/*
 * identity.c: the client identity a verified certificate names (see
 * identity.h).  Also the fuzz target's subject: it sees attacker-chosen
 * DER, so every length is bounded and every string checked before use.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "identity.h"
#include "kmserr.h"

#define MAX_SANS 64		/* entries looked at in subjectAltName */

static int refuse(struct identity *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
refuse(struct identity *out, const char *fmt, ...)
{
	va_list ap;

	out->name[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
	return KMS_ERR_UNAUTHENTICATED;
}

/* Length of the UTF-8 sequence at p (shortest form only), or 0. */
static size_t
utf8_seq(const unsigned char *p, size_t left)
{
	unsigned int c;
	size_t n, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		c = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		c = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		c = p[0] & 0x07;
	} else
		return 0;
	if (left < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
	    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	return n;
}

/*
 * Checks a candidate identity: 1..IDENTITY_MAX bytes of UTF-8 without
 * NUL or control characters.  On failure fills out->reason, saying that
 * the certificate's `what` is unusable and why.
 */
static int
check_text(const unsigned char *p, size_t len, const char *what,
    struct identity *out)
{
	size_t i, n;

	if (len == 0)
		return refuse(out, "the certificate's %s is empty", what);
	if (len > IDENTITY_MAX)
		return refuse(out, "the certificate's %s is %zu bytes, more "
		    "than the %d an identity may have", what, len,
		    IDENTITY_MAX);
	if (memchr(p, '\0', len) != NULL)
		return refuse(out, "the certificate's %s contains a NUL byte",
		    what);
	for (i = 0; i < len; i += n) {
		if ((n = utf8_seq(p + i, len - i)) == 0)
			return refuse(out, "the certificate's %s is not "
			    "UTF-8", what);
		if (n == 1 && (p[i] < 0x20 || p[i] == 0x7f))
			return refuse(out, "the certificate's %s contains a "
			    "control character", what);
	}
	return 0;
}

static void
set_name(struct identity *out, const unsigned char *p, size_t len)
{
	memcpy(out->name, p, len);
	out->name[len] = '\0';
}

static int
fingerprint(X509 *x, struct identity *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32)
		return refuse(out, "the certificate cannot be hashed");
	for (i = 0; i < mdlen; i++) {
		out->fingerprint[2 * i] = hex[md[i] >> 4];
		out->fingerprint[2 * i + 1] = hex[md[i] & 0xf];
	}
	out->fingerprint[2 * mdlen] = '\0';
	return 0;
}

/* A certificate must be meant for TLS client authentication. */
static int
check_usage(X509 *x, struct identity *out)
{
	uint32_t xku;

	/* Also caches the extensions; -1 when one of them is malformed. */
	if (X509_check_purpose(x, -1, 0) != 1 ||
	    (X509_get_extension_flags(x) & EXFLAG_INVALID) != 0)
		return refuse(out, "the certificate has a malformed "
		    "extension");
	if ((X509_get_extension_flags(x) & EXFLAG_XKUSAGE) != 0) {
		xku = X509_get_extended_key_usage(x);
		if ((xku & XKU_SSL_CLIENT) == 0)
			return refuse(out, "the certificate's extended key "
			    "usage does not include clientAuth");
	}
	if ((X509_get_extension_flags(x) & EXFLAG_KUSAGE) != 0 &&
	    (X509_get_key_usage(x) &
	    (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT)) == 0)
		return refuse(out, "the certificate's key usage allows "
		    "neither digitalSignature nor keyAgreement");
	return 0;
}

/* The single URI SAN, if any: 1 found, 0 none, or a refusal. */
static int
uri_san(X509 *x, struct identity *out)
{
	GENERAL_NAMES *gens;
	const GENERAL_NAME *g, *uri = NULL;
	int crit = 0, i, n, nuri = 0, r;

	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (gens == NULL) {
		/* -1: absent; anything else: present but unreadable. */
		if (crit != -1)
			return refuse(out, "the certificate's subject "
			    "alternative names cannot be read");
		return 0;
	}
	n = sk_GENERAL_NAME_num(gens);
	if (n > MAX_SANS) {
		r = refuse(out, "the certificate has %d subject alternative "
		    "names, more than %d", n, MAX_SANS);
		goto out;
	}
	for (i = 0; i < n; i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_URI)
			continue;
		nuri++;
		uri = g;
	}
	if (nuri > 1) {
		r = refuse(out, "the certificate has %d URI SANs: an identity "
		    "must be exactly one SPIFFE ID or URI", nuri);
		goto out;
	}
	r = 0;
	if (uri != NULL) {
		const ASN1_IA5STRING *s = uri->d.uniformResourceIdentifier;
		const char *what = s->length >= 9 &&
		    memcmp(s->data, "spiffe://", 9) == 0 ? "SPIFFE ID" :
		    "URI SAN";

		if ((r = check_text(s->data, (size_t)s->length, what,
		    out)) != 0)
			goto out;
		set_name(out, s->data, (size_t)s->length);
		r = 1;
	}
 out:
	GENERAL_NAMES_free(gens);
	return r;
}

/* The single CN of the subject. */
static int
common_name(X509 *x, struct identity *out)
{
	const X509_NAME *subj = X509_get_subject_name(x);
	const X509_NAME_ENTRY *e;
	unsigned char *utf8 = NULL;
	int i, len, r;

	if (subj == NULL ||
	    (i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1)) < 0)
		return refuse(out, "the certificate names no identity: it has "
		    "neither a URI SAN nor a CN");
	if (X509_NAME_get_index_by_NID(subj, NID_commonName, i) >= 0)
		return refuse(out, "the certificate has several CNs and no URI "
		    "SAN: its identity is ambiguous");
	e = X509_NAME_get_entry(subj, i);
	if ((len = ASN1_STRING_to_UTF8(&utf8,
	    X509_NAME_ENTRY_get_data(e))) < 0)
		return refuse(out, "the certificate's CN cannot be read as "
		    "UTF-8");
	if ((r = check_text(utf8, (size_t)len, "CN", out)) == 0)
		set_name(out, utf8, (size_t)len);
	OPENSSL_free(utf8);
	return r;
}

int
identity_is_internal(const char *name)
{
	return strcmp(name, "kmsd") == 0 || strncmp(name, "kmsd/", 5) == 0;
}

int
identity_from_cert(X509 *x, struct identity *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	if (x == NULL)
		return refuse(out, "no client certificate");
	if ((r = fingerprint(x, out)) != 0 ||
	    (r = check_usage(x, out)) != 0)
		return r;
	if ((r = uri_san(x, out)) < 0)
		return r;
	if (r == 0 && (r = common_name(x, out)) != 0)
		return r;
	if (identity_is_internal(out->name))
		return refuse(out, "the identity \"%s\" is kmsd's own and "
		    "cannot be claimed by a client", out->name);
	return 0;
}
