/*
 * names.h: the key-name grammar and request-field checks shared by the
 * handlers.  Pure functions.
 *
 * Key name: 1..128 bytes from [A-Za-z0-9._/-], the first one a letter or
 * digit, no "//", no trailing "/", and no path segment equal to "." or
 * "..".  Example: release/android/capgo-v2.
 *
 * Plain name (audit chains, OTA apps and channels): letters, digits, '.',
 * '_' and '-'.  An audit chain name is 1..KMS_CHAIN_NAME_MAX plain
 * characters, not starting with '.' (it names a directory).  Example:
 * 127.0.0.1_7443.
 */
#ifndef KMS_NAMES_H
#define KMS_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"

struct kms_status;

#define KMS_KEY_NAME_MAX 128
#define KMS_CHAIN_NAME_MAX 200

/* 0 when name is valid; KMS_ERR_INVALID_ARGUMENT with a reason in st otherwise. */
int names_check_key(const char *name, struct kms_status *st);

/* 1 when the len bytes at p are plain characters only. */
int names_is_plain(const char *p, size_t len);

/* 0 when chain is a chain name; KMS_ERR_INVALID_ARGUMENT and why otherwise. */
int names_check_chain(const char *chain, struct kms_status *st);

/*
 * The chain name made from s (kmsd's listen address) into out (len
 * bytes, at most KMS_CHAIN_NAME_MAX + 1): other characters become '_', a
 * leading '.' too.
 */
void names_chain_from(const char *s, char *out, size_t len);

/*
 * Checks the signing input of a Sign or Verify request for key algorithm
 * alg: exactly one of digest and data is set (non-empty); digest length
 * matches the algorithm; data is at most max_data bytes; Ed25519 takes
 * data only; RSA_RAW_PKCS1_2048 takes 1..245 bytes in either field, signed
 * as is.  Returns 0 or KMS_ERR_INVALID_ARGUMENT (KMS_ERR_FAILED_PRECONDITION
 * when the key cannot sign) with a reason in st.
 */
int names_check_sign_input(const struct kms_alg_info *alg,
    size_t digest_len, size_t data_len, size_t max_data,
    struct kms_status *st);

#endif /* KMS_NAMES_H */
