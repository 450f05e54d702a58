/*
 * p11conf.h: where the PKCS#11 module finds kmsd and its client
 * certificate.
 *
 * The file named by $KMS_PKCS11_CONFIG is an INI file:
 *
 *	[client]
 *	addr = 127.0.0.1:7443	; kmsd
 *	ca = pki/ca.pem		; relative to the file's directory
 *	cert = pki/clients/ci.pem
 *	key = pki/clients/ci.key
 *	timeout = 8		; seconds per call, 1..60 (optional)
 *	prefix = release/	; only the keys whose names start so (optional)
 *
 * Without it the module takes kmsctl's defaults: $KMS_ADDR (else
 * 127.0.0.1:7443), and the identity $KMS_IDENTITY (else ci) under
 * $KMS_HOME/pki/clients/ ($KMS_HOME defaults to ./var).
 */
#ifndef KMS_P11CONF_H
#define KMS_P11CONF_H

struct kms_status;

#define P11CONF_PATH_MAX 4096
#define P11CONF_ADDR_MAX 256
#define P11CONF_TIMEOUT_DEFAULT 8	/* seconds: unreachable kmsd < 10 s */
#define P11CONF_TIMEOUT_MAX 60
#define P11CONF_PREFIX_MAX 128

struct p11conf {
	char addr[P11CONF_ADDR_MAX];
	char ca[P11CONF_PATH_MAX];
	char cert[P11CONF_PATH_MAX];
	char key[P11CONF_PATH_MAX];
	int timeout;
	char prefix[P11CONF_PREFIX_MAX + 1];	/* ListKeys' prefix, "" all */
	char source[P11CONF_PATH_MAX];	/* the file read, or "" */
};

/*
 * Fills conf from the file path, or from the environment when path is
 * NULL or empty.  Returns 0 or KMS_ERR_CONFIG with "FILE:LINE: reason"
 * (or "FILE: reason") in st.
 */
int p11conf_load(const char *path, struct p11conf *conf,
    struct kms_status *st);

#endif /* KMS_P11CONF_H */
