/*
 * p11err.h: what a failed call to kmsd means in PKCS#11, in one table.
 */
#ifndef KMS_P11ERR_H
#define KMS_P11ERR_H

#include <p11-kit/pkcs11.h>

/*
 * The CK_RV of a call to kmsd that failed with err (KMS_ERR_*), transport
 * non-zero when no kmsd answered: PERMISSION_DENIED is
 * CKR_FUNCTION_REJECTED, a disabled version (FAILED_PRECONDITION)
 * CKR_KEY_FUNCTION_NOT_PERMITTED, an unreachable kmsd CKR_DEVICE_ERROR.
 */
CK_RV p11_rv_of(int err, int transport);

#endif /* KMS_P11ERR_H */
