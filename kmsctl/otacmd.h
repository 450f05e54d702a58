/*
 * otacmd.h: `kmsctl ota`, the producer side of kms OTA bundles
 * (docs/bundle-format.md): seal, statement, keygen.
 */
#ifndef KMS_OTACMD_H
#define KMS_OTACMD_H

struct ctx;

/* `kmsctl ota seal|statement ...`; argv[0] is "ota".  Returns the exit code. */
int kmsb_cmd(struct ctx *x, int argc, char **argv);

/* `kmsctl ota keygen`, offline; argv[0] is "keygen". */
int kmsb_cmd_keygen(int argc, char **argv);

#endif /* KMS_OTACMD_H */
