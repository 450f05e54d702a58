/*
 * version.h: the version of kms (kmsd --version, kmsctl --version, the
 * man pages and kms_build_info).
 */
#ifndef KMS_VERSION_H
#define KMS_VERSION_H

#define KMS_VERSION "1.0.0"

#endif /* KMS_VERSION_H */
