/*
 * kmsctl.h: kmsctl's small core, shared by its command files: the exit
 * codes, the command context (connection options and the client opened
 * on the first call), the command table, and the helpers that make an
 * RPC, read input, write output safely and report a usage error.
 */
#ifndef KMS_KMSCTL_H
#define KMS_KMSCTL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "kmsclient.h"

/* kmsctl's exit codes (kmsctl help, kmsctl(1)). */
#define KMSCTL_EXIT_OK		0
#define KMSCTL_EXIT_VERIFY	1	/* a signature or the audit log did not verify */
#define KMSCTL_EXIT_USAGE	2
#define KMSCTL_EXIT_TRANSPORT	3	/* no connection, TLS failure, deadline */
#define KMSCTL_EXIT_REFUSED	4	/* the server answered with an error */
#define KMSCTL_EXIT_IO		5	/* local file error */

#define KMSCTL_DATA_MAX	(1024 * 1024)	/* the server's default max_data_bytes */

struct ctx {
	struct kmsclient_opts o;
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	const char *as;
	int json;
	int grpc_code;			/* of the last failed call, or -1 */
	struct kmsclient *c;		/* opened on the first call */
};

/*
 * One row of the command table (kmsctl/cmdtab.c): `kmsctl GROUP [NAME]`.
 * run gets argv[0] == GROUP.  A command is offline (never asks for a
 * certificate) when offline is set, or when offline_if says so for the
 * arguments given (argv[0] == GROUP).
 */
struct kmsctl_cmd {
	const char *group;
	const char *name;		/* the subcommand; NULL: none */
	int offline;
	int (*offline_if)(int argc, char **argv);
	int (*run)(struct ctx *x, int argc, char **argv);
	const char *summary;		/* one line */
	const char *usage;		/* after "kmsctl ", may span lines */
	const char *help;		/* options and examples */
};

extern const struct kmsctl_cmd kmsctl_cmds[];	/* ends with group NULL */

/* What an exit code means, in a few words. */
const char *kmsctl_exit_meaning(int code);

/*
 * One RPC (method as for kmsclient_call); on failure prints the server's
 * error and returns the kmsctl exit code that says so, else 0.
 */
int kmsctl_call(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp);
/*
 * A server-streaming RPC (or a unary one), cb called for each reply; a
 * positive cb return ends the call early and counts as success.
 */
int kmsctl_call_stream(struct ctx *x, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
    kmsclient_msg_cb cb, void *arg);
/* The same for a stream followed without end: no deadline but --timeout. */
int kmsctl_follow(struct ctx *x, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
    kmsclient_msg_cb cb, void *arg);

/*
 * Writes buf to path, or to stdout when path is NULL or "-", through a
 * temporary file renamed into place (never a partial file).  secret: mode
 * 0600.  Returns a kmsctl exit code.
 */
int write_out(const char *path, const void *buf, size_t len, int secret);

/*
 * Prints o (taking it) as indented JSON on stdout; NULL means it could not
 * be made (out of memory).  Returns a kmsctl exit code.
 */
int print_json(json_t *o);

/* Base64 of in, NUL-terminated, with room for a newline after it. */
char *kmsctl_b64(const uint8_t *in, size_t len);

/* "2026-01-02T03:04:05Z" of t into buf. */
void kmsctl_fmt_time(int64_t t, char *buf, size_t len);

/* The dev audit directory, $KMS_HOME/audit ($KMS_HOME defaults to var). */
void kmsctl_audit_dir(char *buf, size_t len);

/* "stdin" for NULL or "-", else path. */
const char *in_name(const char *path);
/* Opens path for reading, stdin when it is NULL or "-". */
int open_input(const char *path, FILE **f);
/*
 * Reads at most max + 1 bytes of f, so that *len > max tells the caller
 * that there is more; the rest stays unread in f.
 */
int read_prefix(FILE *f, const char *path, size_t max, uint8_t **buf,
    size_t *len);
/* Reads all of path (stdin for NULL or "-"); more than max is an error. */
int read_all(const char *path, uint8_t **buf, size_t *len, size_t max);

/* A decimal number of at most UINT32_MAX, nothing else; 0 or -1. */
int parse_u32(const char *s, uint32_t *out);
/* HEX of 1 to cap bytes into out; 0 or -1. */
int hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len);

/* Prints msg (may be NULL) and the --help hint; returns KMSCTL_EXIT_USAGE. */
int die_usage(const char *msg);

/* The command files' entry points, named in the table. */
int key_cmd(struct ctx *x, int argc, char **argv);
int key_cert_cmd(struct ctx *x, int argc, char **argv);
int key_cert_self_sign(struct ctx *x, int argc, char **argv);
/* Attaches a PEM chain to a version (0: the primary) and says so. */
int key_cert_attach(struct ctx *x, const char *name, uint32_t v, char *text);
int pubkey_cmd(struct ctx *x, int argc, char **argv);
int sign_cmd(struct ctx *x, int argc, char **argv);
int verify_cmd(struct ctx *x, int argc, char **argv);
int wrapping_cmd(struct ctx *x, int argc, char **argv);
int whoami_cmd(struct ctx *x, int argc, char **argv);
int audit_list_cmd(struct ctx *x, int argc, char **argv);
int audit_report_cmd(struct ctx *x, int argc, char **argv);
int audit_prove_cmd(struct ctx *x, int argc, char **argv);
int audit_consistency_cmd(struct ctx *x, int argc, char **argv);
int audit_witness_cmd(struct ctx *x, int argc, char **argv);

#endif /* KMS_KMSCTL_H */
