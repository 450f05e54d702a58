/*
 * auditcmd.h: the `kmsctl audit` commands that work offline.
 */
#ifndef KMS_AUDITCMD_H
#define KMS_AUDITCMD_H

/* kmsctl's exit codes (documented in `kmsctl --help` and the README). */
#define KMSCTL_EXIT_OK		0
#define KMSCTL_EXIT_VERIFY	1	/* a signature or the audit log did not verify */
#define KMSCTL_EXIT_USAGE	2
#define KMSCTL_EXIT_TRANSPORT	3	/* no connection, TLS failure, deadline */
#define KMSCTL_EXIT_REFUSED	4	/* the server answered with an error */
#define KMSCTL_EXIT_IO		5	/* local file error */

/*
 * `kmsctl audit verify [--pubkey PEM] [--json] [PATH]`; argv[0] is
 * "verify".  Returns the exit code.
 */
int audit_cmd_verify(int argc, char **argv, int json);

#endif /* KMS_AUDITCMD_H */
