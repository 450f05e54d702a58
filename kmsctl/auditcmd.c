/*
 * auditcmd.c: `kmsctl audit verify`, the offline audit log verifier.
 *
 * It needs no server and no credentials: it reads a (copied) audit
 * directory and the audit public keys beside it, or a pinned key.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auditcmd.h"
#include "auditread.h"
#include "kmserr.h"

static void
print_note(const char *msg, void *arg)
{
	FILE *f = arg;

	fprintf(f, "%s\n", msg);
}

static void
verify_usage(void)
{
	fprintf(stderr, "usage: kmsctl audit verify [--pubkey PEM] "
	    "[--witness PUB [--cosigned DIR]] [--json] [PATH]\n"
	    "  PATH defaults to $KMS_HOME/audit; it may be the audit "
	    "directory\n  or one chain directory in it.  Exit 0 intact, 1 "
	    "tampered, 5 unreadable.\n");
}

int
audit_cmd_verify(int argc, char **argv, int json)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'p' },
		{ "witness", required_argument, NULL, 'w' },
		{ "cosigned", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct audit_verify_result res;
	struct kms_status st;
	const char *pubkey = NULL, *witness = NULL, *cosigned = NULL;
	char defpath[4096], why[1024];
	int wr = 0;
	const char *path;
	json_t *o;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "p:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			pubkey = optarg;
			break;
		case 'w':
			witness = optarg;
			break;
		case 'c':
			cosigned = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			verify_usage();
			return KMSCTL_EXIT_OK;
		default:
			verify_usage();
			return KMSCTL_EXIT_USAGE;
		}
	}
	if (argc - optind > 1 || (cosigned != NULL && witness == NULL)) {
		verify_usage();
		return KMSCTL_EXIT_USAGE;
	}
	if (optind < argc)
		path = argv[optind];
	else {
		kmsctl_audit_dir(defpath, sizeof(defpath));
		path = defpath;
	}
	kms_status_clear(&st);
	if (audit_verify(path, pubkey, &res, json ? NULL : print_note, stdout,
	    &st) != 0) {
		fprintf(stderr, "kmsctl: audit verify: %s\n", st.msg);
		return KMSCTL_EXIT_IO;
	}
	/* The witness is asked only about a log that verifies. */
	if (res.ok && witness != NULL)
		wr = audit_witness_check(path, witness, cosigned, json, why,
		    sizeof(why));
	if (json) {
		o = json_pack("{s:b, s:i, s:I, s:I, s:I, s:i, s:I, s:s}", "ok",
		    res.ok, "chains", (int)res.chains,
		    "records", (json_int_t)res.records,
		    "checkpoints", (json_int_t)res.checkpoints,
		    "unsigned_tail", (json_int_t)res.unsigned_tail,
		    "warnings", (int)res.warnings,
		    "tree_size", (json_int_t)res.tree_size,
		    "root", res.root);
		if (o != NULL && witness != NULL && res.ok)
			json_object_set_new(o, "witness", wr == 0 ?
			    json_pack("{s:b}", "ok", 1) :
			    json_pack("{s:b, s:s}", "ok", 0, "why", why));
		if (o != NULL && !res.ok)
			json_object_set_new(o, "first_bad", json_pack(
			    "{s:s, s:I, s:I, s:s}", "file", res.file,
			    "line", (json_int_t)res.line,
			    "seq", (json_int_t)res.seq, "why", res.why));
		if (o != NULL) {
			json_dumpf(o, stdout, JSON_COMPACT);
			fputc('\n', stdout);
			json_decref(o);
		}
	} else if (res.ok) {
		printf("audit log intact: %u chain(s), %" PRIu64 " records, %"
		    PRIu64 " checkpoints whose Merkle roots match the records; %"
		    PRIu64 " record(s) after the last checkpoint are protected "
		    "by the hash chain only (keep a copy elsewhere)\n",
		    res.chains, res.records, res.checkpoints,
		    res.unsigned_tail);
	} else {
		printf("audit log FAILED verification: %s", res.file);
		if (res.line != 0)
			printf(": line %lu", res.line);
		if (res.seq != 0)
			printf(": seq %" PRIu64, res.seq);
		printf(": %s\n", res.why);
	}
	if (res.ok && wr != 0 && !json)
		printf("audit log NOT witnessed: %s\n", why);
	fflush(stdout);
	if (res.ok && wr != 0)
		return wr;
	return res.ok ? KMSCTL_EXIT_OK : KMSCTL_EXIT_VERIFY;
}
