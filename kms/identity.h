/*
 * identity.h: the client identity a verified certificate names.
 *
 * The identity is exactly one of, in this order: the certificate's single
 * URI SAN (a SPIFFE ID when it starts with spiffe://, or any other URI),
 * else its single CN.  Nothing falls back: a certificate whose URI SAN
 * cannot be used (too long, a NUL, not UTF-8, control characters, several
 * URI SANs) is refused, never served under its CN.  Also refused: a
 * certificate not meant for TLS client authentication (an extended key
 * usage without clientAuth, a key usage without digitalSignature), and
 * the names kmsd uses for itself ("kmsd" and everything under "kmsd/").
 *
 * The chain, the dates and revocation are checked by the TLS layer before
 * this runs; this is a pure function of the certificate.
 */
#ifndef KMS_IDENTITY_H
#define KMS_IDENTITY_H

#include <stddef.h>

#include <openssl/x509.h>

#define IDENTITY_MAX 512		/* bytes, without the NUL */
#define IDENTITY_REASON_MAX 256
#define IDENTITY_FPR_HEX (32 * 2 + 1)	/* SHA-256, lowercase hex + NUL */

struct identity {
	char name[IDENTITY_MAX + 1];	/* "" when refused */
	char reason[IDENTITY_REASON_MAX];	/* why refused, or "" */
	char fingerprint[IDENTITY_FPR_HEX];	/* of the DER certificate */
};

/*
 * Fills *out from the certificate x.  Returns 0 with out->name set, or
 * KMS_ERR_UNAUTHENTICATED with out->reason naming why the certificate
 * names no usable identity (a sentence a person can act on).
 */
int identity_from_cert(X509 *x, struct identity *out);

/* True for the identities kmsd keeps for itself. */
int identity_is_internal(const char *name);

#endif /* KMS_IDENTITY_H */
