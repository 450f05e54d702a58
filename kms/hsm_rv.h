/*
 * hsm_rv.h: the name of a PKCS#11 return value (CKR_*), for the log.
 */
#ifndef KMS_HSM_RV_H
#define KMS_HSM_RV_H

/* "CKR_DEVICE_ERROR" and the like; "CKR_(other)" for an unknown one. */
const char *hsm_rv_name(unsigned long rv);

#endif /* KMS_HSM_RV_H */
