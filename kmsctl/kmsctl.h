/*
 * kmsctl.h: what kmsctl's command files share: the command context (its
 * connection options and lazily opened client) and the helpers that make
 * an RPC, write an output file safely and report a usage error.
 */
#ifndef KMS_KMSCTL_H
#define KMS_KMSCTL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "kmsclient.h"

struct ctx {
	struct kmsclient_opts o;
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	const char *as;
	int json;
	struct kmsclient *c;		/* opened on the first call */
};

/*
 * One RPC (method as for kmsclient_call); on failure prints the server's
 * error and returns the kmsctl exit code that says so, else 0.
 */
int kmsctl_call(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp);

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

/* A decimal number of at most UINT32_MAX, nothing else; 0 or -1. */
int parse_u32(const char *s, uint32_t *out);

/* Prints msg (may be NULL) and the --help hint; returns KMSCTL_EXIT_USAGE. */
int die_usage(const char *msg);

#endif /* KMS_KMSCTL_H */
