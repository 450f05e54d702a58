/*
 * p11kms.h: the PKCS#11 module's calls to kmsd: the keys the identity
 * sees, and signatures.  Every signature is one Sign call, audited by
 * kmsd under the caller's identity.
 */
#ifndef KMS_P11KMS_H
#define KMS_P11KMS_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

struct kmsclient;
struct p11_input;
struct p11_key;
struct kms_alg_info;

#define P11KMS_KEYS_MAX 10000

/*
 * The primary versions of the signing keys that ListKeys shows (those
 * whose names start with prefix), with
 * their public keys (a key whose public key may not be read is left
 * out).  *keys is an array of *n keys; free each with p11_key_free and
 * the array with free().
 */
CK_RV p11kms_list(struct kmsclient *c, const char *prefix,
    struct p11_key ***keys, size_t *n);

/*
 * Signs in with version of key name (algorithm alg) and writes the
 * PKCS#11 form of the signature (ECDSA as r || s) to sig, which holds
 * p11_sig_len(alg) bytes; *siglen is its length.
 */
CK_RV p11kms_sign(struct kmsclient *c, const char *name, uint32_t version,
    const struct kms_alg_info *alg, const struct p11_input *in,
    uint8_t *sig, size_t *siglen);

#endif /* KMS_P11KMS_H */
