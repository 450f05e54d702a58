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

/*
 * --witness: every chain of path must hold a checkpoint cosigned by the
 * witness key in witness_pem (Ed25519 PEM), the cosigned notes read from
 * cosigned_dir or else CHAIN/witness/ (witnesscheck.c).  Returns 0, or
 * KMSCTL_EXIT_VERIFY / KMSCTL_EXIT_IO with why.  quiet: no text lines.
 */
int audit_witness_check(const char *path, const char *witness_pem,
    const char *cosigned_dir, int quiet, char *why, size_t whylen);

#endif /* KMS_AUDITCMD_H */
