/*
 * tlsctx.h: the TLS credentials kmsd serves with, as one immutable set.
 *
 * A set holds the server certificate chain and key, the CA bundle client
 * certificates must chain to, and optionally the CRLs checked on every
 * handshake.  SIGHUP builds a new set from the files and swaps it in only
 * when every file is good; connections keep the set they were accepted
 * with (their SSL holds a reference to its SSL_CTX).
 */
#ifndef KMS_TLSCTX_H
#define KMS_TLSCTX_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct kms_status;

enum tls_file {
	TLS_FILE_CERT = 0,
	TLS_FILE_KEY,
	TLS_FILE_CA,
	TLS_FILE_CRL,
	TLS_FILE_COUNT
};

struct tls_set {
	SSL_CTX *ctx;
	/* SHA-256 of each file as read (all zero: not configured). */
	uint8_t digest[TLS_FILE_COUNT][32];
	int ncrl;			/* CRLs loaded */
};

/* The name of a file of the set in messages and audit records ("crl"). */
const char *tls_file_name(enum tls_file f);

/*
 * Reads the files and builds a set; crl may be NULL or "" (no revocation
 * check).  A file that is missing, unreadable, not PEM, a key that does
 * not match the certificate, a CRL not signed by a CA of the bundle:
 * KMS_ERR_CONFIG with st naming the file and the reason.
 */
int tls_set_load(const char *cert, const char *key, const char *ca,
    const char *crl, struct tls_set **out, struct kms_status *st);
void tls_set_free(struct tls_set *ts);

/*
 * Reads a whole file of at most max bytes into a NUL-terminated buffer
 * (*len excludes the NUL).  Used for PEM files and the policy.
 */
int tls_read_file(const char *path, size_t max, char **out, size_t *len,
    struct kms_status *st);

#endif /* KMS_TLSCTX_H */
