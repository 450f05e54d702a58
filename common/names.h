/*
 * names.h: the key-name grammar and request-field checks shared by the
 * handlers.  Pure functions.
 *
 * Key name: 1..128 bytes from [A-Za-z0-9._/-], the first one a letter or
 * digit, no "//", no trailing "/", and no path segment equal to "." or
 * "..".  Example: release/android/capgo-v2.
 */
#ifndef KMS_NAMES_H
#define KMS_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "algo.h"

struct kms_status;

#define KMS_KEY_NAME_MAX 128

/* 0 when name is valid; KMS_ERR_INVALID_ARGUMENT with a reason in st otherwise. */
int names_check_key(const char *name, struct kms_status *st);

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
