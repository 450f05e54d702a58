/*
 * auditcmd.h: the `kmsctl audit` commands that work offline.
 */
#ifndef KMS_AUDITCMD_H
#define KMS_AUDITCMD_H

#include "kmsctl.h"		/* the exit codes */

/*
 * `kmsctl audit verify [--pubkey PEM] [--json] [PATH]`; argv[0] is
 * "verify".  Returns the exit code.
 */
int audit_cmd_verify(int argc, char **argv, int json);

#endif /* KMS_AUDITCMD_H */
