/*
 * capgocmd.h: `kmsctl bundle encrypt|decrypt|verify`, encrypted app
 * bundles (the Capgo format, see capgo.h).
 */
#ifndef KMS_CAPGOCMD_H
#define KMS_CAPGOCMD_H

struct ctx;

/*
 * 1 when `kmsctl bundle ...` (argv[0] is "bundle") needs no server: decrypt
 * and verify with --pubkey.  Then no credentials are needed either.
 */
int bundle_cmd_offline(int argc, char **argv);

/* `kmsctl bundle SUBCOMMAND ...`; argv[0] is "bundle".  Returns the exit code. */
int bundle_cmd(struct ctx *x, int argc, char **argv);

#endif /* KMS_CAPGOCMD_H */
