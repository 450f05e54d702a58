/*
 * kmsctl: the command-line client of kmsd.
 *
 *   kmsctl [--addr HOST:PORT] [--as NAME | --cert F --key F --ca F]
 *          [--json] [--timeout SEC] COMMAND ...
 *
 * Global options may also follow the command.  Exit codes: 0 ok,
 * 1 verification failed, 2 usage, 3 transport, 4 refused by the server,
 * 5 local I/O.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "algo.h"
#include "auditcmd.h"
#include "otacmd.h"
#include "capgocmd.h"
#include "kmsclient.h"
#include "kmsctl.h"
#include "kmserr.h"
#include "secret.h"

#include "kms/v1/kms.pb-c.h"

#define DATA_MAX (1024 * 1024)	/* the server's default max_data_bytes */


static void
usage(FILE *f)
{
	fprintf(f,
"usage: kmsctl [--addr HOST:PORT] [--as NAME | --cert F --key F --ca F]\n"
"              [--json] [--timeout SEC] COMMAND ...\n"
"\n"
"commands:\n"
"  key create NAME --algorithm ALG [--rotation-period SECONDS]\n"
"  key get NAME\n"
"  key list [--prefix P]\n"
"  key rotate NAME\n"
"  key enable|disable|destroy|restore NAME --version N\n"
"  key update NAME --rotation-period SECONDS   (0: no scheduled rotation)\n"
"  pubkey NAME [--version N] [--format spki|pkcs1] [-o FILE]\n"
"  sign NAME [--version N] [--in FILE | --digest HEX] [-o FILE]\n"
"       [--format raw|base64|hex]      (stdin when neither --in nor --digest)\n"
"  verify NAME --signature FILE [--in FILE | --digest HEX] [--version N]\n"
"  whoami\n"
"  wrap NAME [--in FILE] [--base64] [-o FILE]    (AES_256_KWP keys; stdin\n"
"       without --in; -o writes the raw blob, else base64 to stdout)\n"
"  unwrap NAME [--in FILE] [--base64] [-o FILE]  (the plaintext, raw to -o)\n"
"  datakey NAME [--length N] [-o FILE] [--wrapped-out FILE]\n"
"  audit list [--follow] [--chain C] [--identity I] [--key-name K] [--rpc R]\n"
"             [--result R] [--since RFC3339] [--until RFC3339] [--after SEQ]\n"
"             [--limit N]\n"
"  audit verify [--pubkey PEM] [PATH]   (offline, no server needed)\n"
"  ota seal|statement|keygen ...        (kms OTA bundles, see\n"
"       docs/bundle-format.md; ota keygen is offline)\n"
"  bundle encrypt --format capgo --key NAME [--version N] -o OUT.zip IN.zip\n"
"  bundle verify|decrypt --format capgo (--pubkey PEM | --key NAME\n"
"         [--version N]) --iv-session-key S --checksum HEX\n"
"         [-o OUT.zip, decrypt only] IN.zip   (RSA_RAW_PKCS1_2048 keys;\n"
"         with --pubkey offline, no server needed)\n"
"\n"
"Global options may go before or after the command.  Files up to 1 MiB\n"
"are sent to be signed as they are; larger ones are hashed here with the\n"
"key's hash (not for ED25519 and RSA_RAW_PKCS1_2048 keys).  Output files\n"
"are written whole or not at all.  --timeout is per call (default 30 s).\n"
"--addr defaults to $KMS_ADDR, else 127.0.0.1:7443; --as NAME uses\n"
"$KMS_HOME/pki/clients/NAME.pem and .key and $KMS_HOME/pki/ca.pem\n"
"($KMS_HOME defaults to ./var); --ca F alone replaces that CA.\n"
"Algorithms: EC_P256_SHA256, EC_P384_SHA384,\n"
"ED25519, RSA_PKCS1_{2048,3072,4096}_SHA256, RSA_PSS_{2048,3072,4096}_SHA256,\n"
"RSA_RAW_PKCS1_2048, AES_256_KWP.\n"
"\n"
"exit codes:\n"
"  0  success\n"
"  1  verification failed (signature or audit log)\n"
"  2  usage error\n"
"  3  transport error: no connection, TLS failure, deadline without an\n"
"     answer\n"
"  4  the server refused the request (its status and message are printed)\n"
"  5  local I/O error (unreadable input, unwritable output)\n");
}

int
die_usage(const char *msg)
{
	if (msg != NULL)
		fprintf(stderr, "kmsctl: %s\n", msg);
	fprintf(stderr, "kmsctl: try kmsctl --help\n");
	return KMSCTL_EXIT_USAGE;
}

static int
connect_server(struct ctx *x)
{
	struct kms_status st;
	int r;

	if (x->c != NULL)
		return 0;
	x->o.quiet = 1;
	kms_status_clear(&st);
	if ((r = kmsclient_open(&x->o, &x->c, &st)) != 0) {
		fprintf(stderr, "kmsctl: %s\n", st.msg);
		return r == KMS_ERR_INVALID_ARGUMENT ? KMSCTL_EXIT_USAGE :
		    KMSCTL_EXIT_IO;
	}
	return 0;
}

/* Prints why a call failed and returns the exit code that says so. */
static int
call_failed(const char *method, const struct kmsclient_result *res,
    const struct kms_status *st)
{
	fprintf(stderr, "kmsctl: %s: %s: %s\n", method,
	    kms_grpc_code_name(res->grpc_code), st->msg);
	return res->transport ? KMSCTL_EXIT_TRANSPORT : KMSCTL_EXIT_REFUSED;
}

int
kmsctl_call(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp)
{
	struct kmsclient_result res;
	struct kms_status st;
	int r;

	*resp = NULL;
	if ((r = connect_server(x)) != 0)
		return r;
	kms_status_clear(&st);
	if (kmsclient_call(x->c, method, req, rd, resp, &res, &st) == 0)
		return 0;
	return call_failed(method, &res, &st);
}

/* A server-streaming RPC (or a unary one), cb called for each reply. */
static int
call_stream(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, kmsclient_msg_cb cb, void *arg)
{
	struct kmsclient_result res;
	struct kms_status st;
	int r;

	if ((r = connect_server(x)) != 0)
		return r;
	kms_status_clear(&st);
	if (kmsclient_call_stream(x->c, method, req, rd, cb, arg, &res,
	    &st) == 0)
		return 0;
	return call_failed(method, &res, &st);
}

/* Writes buf to the stream f already open (stdout, a device, a pipe). */
static int
write_stream(FILE *f, const char *name, const void *buf, size_t len)
{
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0) {
		fprintf(stderr, "kmsctl: cannot write to %s: %s\n", name,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/*
 * Writes buf to path, or to stdout when path is NULL or "-".  A file is
 * written to a temporary file beside it and renamed over it, so that a
 * failure never leaves a partial file; an existing device or pipe is
 * written directly.  Secrets are written mode 0600,
 * anything else 0666 less the umask, like any other new file.
 */
int
write_out(const char *path, const void *buf, size_t len, int secret)
{
	char tmp[PATH_MAX];
	struct stat sb;
	mode_t mask;
	FILE *f = NULL;
	int fd = -1, r = KMSCTL_EXIT_IO;

	if (path == NULL || strcmp(path, "-") == 0)
		return write_stream(stdout, "stdout", buf, len);
	/*
	 * An existing device or pipe (/dev/null, /dev/stdout, a FIFO) is
	 * written as it is: renaming a file over it would replace it.
	 */
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		if (S_ISDIR(sb.st_mode)) {
			fprintf(stderr, "kmsctl: %s is a directory\n", path);
			return KMSCTL_EXIT_IO;
		}
		if ((fd = open(path, O_WRONLY | O_CLOEXEC)) == -1 ||
		    (f = fdopen(fd, "wb")) == NULL) {
			fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
			    strerror(errno));
			if (fd != -1)
				close(fd);
			return KMSCTL_EXIT_IO;
		}
		r = write_stream(f, path, buf, len);
		if (fclose(f) != 0 && r == 0) {
			fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
			    strerror(errno));
			r = KMSCTL_EXIT_IO;
		}
		return r;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >=
	    sizeof(tmp)) {
		fprintf(stderr, "kmsctl: %s: path too long\n", path);
		return KMSCTL_EXIT_IO;
	}
	if ((fd = mkstemp(tmp)) == -1) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	mask = umask(0);
	umask(mask);
	if (fchmod(fd, secret ? 0600 : (0666 & ~mask)) != 0 ||
	    (f = fdopen(fd, "wb")) == NULL)
		goto out;
	fd = -1;
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0)
		goto out;
	r = fclose(f) == 0 ? 0 : KMSCTL_EXIT_IO;
	f = NULL;
	if (r == 0 && rename(tmp, path) != 0)
		r = KMSCTL_EXIT_IO;
 out:
	if (r != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		unlink(tmp);
	}
	if (f != NULL)
		fclose(f);
	if (fd != -1)
		close(fd);
	return r;
}

static const char *
in_name(const char *path)
{
	return path == NULL || strcmp(path, "-") == 0 ? "stdin" : path;
}

/* Opens path for reading, stdin when it is NULL or "-". */
static int
open_input(const char *path, FILE **f)
{
	if (path == NULL || strcmp(path, "-") == 0) {
		*f = stdin;
		return 0;
	}
	if ((*f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/*
 * Reads at most max + 1 bytes of f, so that *len > max tells the caller
 * that there is more; the rest stays unread in f.
 */
static int
read_prefix(FILE *f, const char *path, size_t max, uint8_t **buf,
    size_t *len)
{
	size_t cap = 0, n;
	uint8_t *b = NULL, *nb;

	*buf = NULL;
	*len = 0;
	for (;;) {
		if (*len == cap) {
			if (cap > max)
				break;
			cap = cap == 0 ? 65536 : 2 * cap;
			if (cap > max + 1)
				cap = max + 1;
			if ((nb = realloc(b, cap)) == NULL) {
				fprintf(stderr, "kmsctl: out of memory\n");
				goto fail;
			}
			b = nb;
		}
		if ((n = fread(b + *len, 1, cap - *len, f)) == 0)
			break;
		*len += n;
	}
	if (ferror(f)) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", in_name(path),
		    strerror(errno));
		goto fail;
	}
	/* An empty input still gets a buffer, so that NULL means failure. */
	if (b == NULL && (b = malloc(1)) == NULL)
		goto fail;
	*buf = b;
	return 0;
 fail:
	free(b);
	*len = 0;
	return KMSCTL_EXIT_IO;
}

/* Reads all of path (stdin for NULL or "-"); more than max is an error. */
static int
read_all(const char *path, uint8_t **buf, size_t *len, size_t max)
{
	FILE *f;
	int r;

	*buf = NULL;
	*len = 0;
	if ((r = open_input(path, &f)) != 0)
		return r;
	r = read_prefix(f, path, max, buf, len);
	if (f != stdin)
		fclose(f);
	if (r == 0 && *len > max) {
		fprintf(stderr, "kmsctl: %s is larger than %zu bytes\n",
		    in_name(path), max);
		free(*buf);
		*buf = NULL;
		*len = 0;
		return KMSCTL_EXIT_USAGE;
	}
	return r;
}

static int
hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
	size_t i, n = strlen(hex);
	unsigned int v;

	if (n == 0 || n % 2 != 0 || n / 2 > cap)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(hex + 2 * i, "%2x", &v) != 1 ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i]) == NULL ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i + 1]) == NULL)
			return -1;
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

/* Base64 of in, with room for a newline after it. */
static char *
b64(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 2);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Prints o (taking it) as indented JSON; NULL means it could not be made. */
int
print_json(json_t *o)
{
	int r = 0;

	if (o == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return KMSCTL_EXIT_IO;
	}
	if (json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
	    fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
		fprintf(stderr, "kmsctl: cannot write to stdout\n");
		r = KMSCTL_EXIT_IO;
	}
	json_decref(o);
	return r;
}

static void
fmt_time(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *
version_json(const Kms__V1__KeyVersion *v)
{
	json_t *o;
	char ts[32];

	fmt_time(v->create_time, ts, sizeof(ts));
	o = json_pack("{s:i, s:s, s:s}", "version", (int)v->version,
	    "state", kms_state_name(v->state), "create_time", ts);
	if (o != NULL && v->destroy_time != 0) {
		fmt_time(v->destroy_time, ts, sizeof(ts));
		json_object_set_new(o, "destroy_time", json_string(ts));
	}
	if (o != NULL && v->audit_seq != 0)
		json_object_set_new(o, "audit_seq",
		    json_integer((json_int_t)v->audit_seq));
	return o;
}

static json_t *
key_json(const Kms__V1__Key *k)
{
	json_t *o, *vs = json_array();
	char ts[32];
	size_t i;

	if (vs == NULL)
		return NULL;
	for (i = 0; i < k->n_versions; i++)
		json_array_append_new(vs, version_json(k->versions[i]));
	o = json_pack("{s:s, s:s, s:i, s:o, s:I}", "name", k->name,
	    "algorithm", kms_alg_name(k->algorithm), "primary_version",
	    (int)k->primary_version, "versions", vs,
	    "rotation_period_seconds", (json_int_t)k->rotation_period_seconds);
	if (o != NULL && k->next_rotation_time != 0) {
		fmt_time(k->next_rotation_time, ts, sizeof(ts));
		json_object_set_new(o, "next_rotation_time", json_string(ts));
	}
	if (o != NULL && k->audit_seq != 0)
		json_object_set_new(o, "audit_seq",
		    json_integer((json_int_t)k->audit_seq));
	return o;
}

static void
key_print(const Kms__V1__Key *k)
{
	char ts[32];
	size_t i;

	printf("name: %s\nalgorithm: %s\nprimary_version: %u\n", k->name,
	    kms_alg_name(k->algorithm), k->primary_version);
	if (k->rotation_period_seconds > 0) {
		fmt_time(k->next_rotation_time, ts, sizeof(ts));
		printf("rotation_period_seconds: %" PRId64 "\n"
		    "next_rotation_time: %s\n",
		    (int64_t)k->rotation_period_seconds, ts);
	}
	printf("versions:\n");
	for (i = 0; i < k->n_versions; i++) {
		fmt_time(k->versions[i]->create_time, ts, sizeof(ts));
		printf("  %u %s %s", k->versions[i]->version,
		    kms_state_name(k->versions[i]->state), ts);
		if (k->versions[i]->destroy_time != 0) {
			fmt_time(k->versions[i]->destroy_time, ts, sizeof(ts));
			printf(" %s %s", k->versions[i]->state ==
			    KMS__V1__KEY_VERSION_STATE__DESTROYED ?
			    "destroyed" : "destroy_time", ts);
		}
		printf("\n");
	}
}

int
parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || *s == '\0' || *s == '-' ||
	    v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* Who answers a `key` subcommand, and with what. */
static const struct key_sub {
	const char *name;
	const char *method;
	const char *usage;
	int state;		/* SetVersionState: the state asked for */
} key_subs[] = {
	{ "create", "CreateKey", "key create NAME --algorithm ALG "
	    "[--rotation-period SECONDS]", 0 },
	{ "get", "GetKey", "key get NAME", 0 },
	{ "list", "ListKeys", "key list [--prefix P]", 0 },
	{ "rotate", "RotateKey", "key rotate NAME", 0 },
	{ "enable", "SetVersionState", "key enable NAME --version N",
	    KMS__V1__KEY_VERSION_STATE__ENABLED },
	{ "disable", "SetVersionState", "key disable NAME --version N",
	    KMS__V1__KEY_VERSION_STATE__DISABLED },
	{ "destroy", "SetVersionState", "key destroy NAME --version N",
	    KMS__V1__KEY_VERSION_STATE__DESTROY_SCHEDULED },
	/* Restoring a version scheduled for destruction leaves it DISABLED. */
	{ "restore", "SetVersionState", "key restore NAME --version N",
	    KMS__V1__KEY_VERSION_STATE__DISABLED },
	{ "update", "UpdateKey", "key update NAME --rotation-period SECONDS",
	    0 },
};

static int
print_key(struct ctx *x, const Kms__V1__Key *k)
{
	if (x->json)
		return print_json(key_json(k));
	key_print(k);
	return 0;
}

static int
cmd_key(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "algorithm", required_argument, NULL, 'a' },
		{ "rotation-period", required_argument, NULL, 'r' },
		{ "prefix", required_argument, NULL, 'p' },
		{ "version", required_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__CreateKeyRequest creq = KMS__V1__CREATE_KEY_REQUEST__INIT;
	Kms__V1__GetKeyRequest greq = KMS__V1__GET_KEY_REQUEST__INIT;
	Kms__V1__ListKeysRequest lreq = KMS__V1__LIST_KEYS_REQUEST__INIT;
	Kms__V1__RotateKeyRequest rreq = KMS__V1__ROTATE_KEY_REQUEST__INIT;
	Kms__V1__UpdateKeyRequest ureq = KMS__V1__UPDATE_KEY_REQUEST__INIT;
	Kms__V1__SetVersionStateRequest sreq =
	    KMS__V1__SET_VERSION_STATE_REQUEST__INIT;
	const struct kms_alg_info *alg = NULL;
	const struct key_sub *sub = NULL;
	const ProtobufCMessage *req;
	const ProtobufCMessageDescriptor *rd = &kms__v1__key__descriptor;
	ProtobufCMessage *resp = NULL;
	Kms__V1__ListKeysResponse *l;
	const char *prefix = "", *name = NULL;
	long long period = 0;
	uint32_t version = 0;
	int have_version = 0, have_period = 0, ch, r;
	json_t *arr;
	char *end;
	size_t i;

	if (argc < 2)
		return die_usage("key: create, get, list, rotate, enable, "
		    "disable, destroy, restore or update?");
	for (i = 0; i < sizeof(key_subs) / sizeof(key_subs[0]); i++)
		if (strcmp(argv[1], key_subs[i].name) == 0)
			sub = &key_subs[i];
	if (sub == NULL)
		return die_usage("key: unknown subcommand");
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			if ((alg = kms_alg_by_name(optarg)) == NULL)
				return die_usage("unknown --algorithm (see "
				    "kmsctl --help)");
			break;
		case 'r':
			errno = 0;
			period = strtoll(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || *optarg == '\0' ||
			    period < 0)
				return die_usage("--rotation-period: seconds");
			have_period = 1;
			break;
		case 'p':
			prefix = optarg;
			break;
		case 'v':
			if (parse_u32(optarg, &version) != 0 || version == 0)
				return die_usage("--version: a version number");
			have_version = 1;
			break;
		default:
			return die_usage(NULL);
		}
	}
	/* Each option belongs to one subcommand only. */
	if (alg != NULL && strcmp(sub->name, "create") != 0)
		return die_usage(sub->usage);
	if (have_period != (strcmp(sub->name, "update") == 0) &&
	    strcmp(sub->name, "create") != 0)
		return die_usage(sub->usage);
	if (*prefix != '\0' && strcmp(sub->name, "list") != 0)
		return die_usage(sub->usage);
	if (have_version != (sub->state != 0))
		return die_usage(sub->usage);
	if (strcmp(sub->name, "list") == 0) {
		if (optind != argc)
			return die_usage(sub->usage);
	} else if (optind != argc - 1)
		return die_usage(sub->usage);
	else
		name = argv[optind];

	if (strcmp(sub->name, "create") == 0) {
		if (alg == NULL)
			return die_usage(sub->usage);
		creq.name = (char *)name;
		creq.algorithm = (Kms__V1__Algorithm)alg->alg;
		creq.rotation_period_seconds = period;
		req = &creq.base;
	} else if (strcmp(sub->name, "get") == 0) {
		greq.name = (char *)name;
		req = &greq.base;
	} else if (strcmp(sub->name, "list") == 0) {
		lreq.prefix = (char *)prefix;
		req = &lreq.base;
		rd = &kms__v1__list_keys_response__descriptor;
	} else if (strcmp(sub->name, "rotate") == 0) {
		rreq.name = (char *)name;
		req = &rreq.base;
	} else if (strcmp(sub->name, "update") == 0) {
		ureq.name = (char *)name;
		ureq.rotation_period_seconds = period;
		req = &ureq.base;
	} else {
		sreq.name = (char *)name;
		sreq.version = version;
		sreq.state = (Kms__V1__KeyVersionState)sub->state;
		req = &sreq.base;
		rd = &kms__v1__key_version__descriptor;
	}
	if ((r = kmsctl_call(x, sub->method, req, rd, &resp)) != 0)
		return r;

	if (rd == &kms__v1__list_keys_response__descriptor) {
		l = (Kms__V1__ListKeysResponse *)resp;
		if (x->json) {
			arr = json_array();
			for (i = 0; arr != NULL && i < l->n_keys; i++)
				json_array_append_new(arr,
				    key_json(l->keys[i]));
			r = print_json(arr == NULL ? NULL :
			    json_pack("{s:o}", "keys", arr));
		} else
			for (i = 0; i < l->n_keys; i++)
				printf("%s %s v%u\n", l->keys[i]->name,
				    kms_alg_name(l->keys[i]->algorithm),
				    l->keys[i]->primary_version);
	} else if (rd == &kms__v1__key_version__descriptor) {
		Kms__V1__KeyVersion *v = (Kms__V1__KeyVersion *)resp;

		if (x->json)
			r = print_json(version_json(v));
		else
			printf("%s version %u: %s\n", name, v->version,
			    kms_state_name(v->state));
	} else
		r = print_key(x, (Kms__V1__Key *)resp);
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/* SPKI PEM of an RSA key to the PKCS#1 "BEGIN RSA PUBLIC KEY" form. */
static int
to_pkcs1(const char *pem, char **out, size_t *outlen)
{
	BIO *in = BIO_new_mem_buf(pem, -1), *mem = BIO_new(BIO_s_mem());
	OSSL_ENCODER_CTX *ectx = NULL;
	EVP_PKEY *pk = NULL;
	char *p;
	long n;
	int r = -1;

	if (in == NULL || mem == NULL ||
	    (pk = PEM_read_bio_PUBKEY(in, NULL, NULL, NULL)) == NULL ||
	    EVP_PKEY_base_id(pk) != EVP_PKEY_RSA)
		goto out;
	/* The "type-specific" structure of an RSA public key is PKCS#1. */
	if ((ectx = OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_PUBLIC_KEY,
	    "PEM", "type-specific", NULL)) == NULL ||
	    OSSL_ENCODER_to_bio(ectx, mem) != 1)
		goto out;
	n = BIO_get_mem_data(mem, &p);
	if ((*out = malloc((size_t)n + 1)) == NULL)
		goto out;
	memcpy(*out, p, (size_t)n);
	(*out)[n] = '\0';
	*outlen = (size_t)n;
	r = 0;
 out:
	OSSL_ENCODER_CTX_free(ectx);
	EVP_PKEY_free(pk);
	BIO_free(in);
	BIO_free(mem);
	return r;
}

static int
cmd_pubkey(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "version", required_argument, NULL, 'v' },
		{ "format", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__GetPublicKeyRequest req = KMS__V1__GET_PUBLIC_KEY_REQUEST__INIT;
	const struct kms_alg_info *alg;
	Kms__V1__PublicKey *pk;
	ProtobufCMessage *resp = NULL;
	const char *format = "spki", *outpath = NULL;
	char *pem = NULL;
	size_t len;
	int ch, r;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			if (parse_u32(optarg, &req.version) != 0)
				return die_usage("--version: a number");
			break;
		case 'f':
			format = optarg;
			break;
		case 'o':
			outpath = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1 || (strcmp(format, "spki") != 0 &&
	    strcmp(format, "pkcs1") != 0))
		return die_usage("pubkey NAME [--version N] "
		    "[--format spki|pkcs1] [-o FILE]");
	req.name = argv[optind];
	if ((r = kmsctl_call(x, "GetPublicKey", &req.base,
	    &kms__v1__public_key__descriptor, &resp)) != 0)
		return r;
	pk = (Kms__V1__PublicKey *)resp;
	alg = kms_alg_lookup(pk->algorithm);
	if (strcmp(format, "pkcs1") == 0 && (alg == NULL ||
	    (alg->family != KMS_FAMILY_RSA_PKCS1 &&
	    alg->family != KMS_FAMILY_RSA_PSS &&
	    alg->family != KMS_FAMILY_RSA_RAW))) {
		fprintf(stderr, "kmsctl: --format pkcs1 needs an RSA key; "
		    "%s is %s\n", pk->name, kms_alg_name(pk->algorithm));
		protobuf_c_message_free_unpacked(resp, NULL);
		return KMSCTL_EXIT_USAGE;
	}
	if (strcmp(format, "pkcs1") == 0) {
		if (to_pkcs1(pk->pem, &pem, &len) != 0) {
			fprintf(stderr, "kmsctl: the server's public key of "
			    "%s is not an RSA SubjectPublicKeyInfo\n",
			    pk->name);
			protobuf_c_message_free_unpacked(resp, NULL);
			return KMSCTL_EXIT_REFUSED;
		}
	} else if ((pem = strdup(pk->pem)) != NULL)
		len = strlen(pem);
	if (pem == NULL)
		r = print_json(NULL);
	else if (x->json && outpath == NULL)
		r = print_json(json_pack("{s:s, s:s, s:i, s:s}", "name",
		    pk->name, "algorithm", kms_alg_name(pk->algorithm),
		    "version", (int)pk->version, "pem", pem));
	else
		r = write_out(outpath, pem, len, 0);
	free(pem);
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/*
 * Fills digest or data for a Sign or Verify request: --digest HEX as is;
 * an input of at most DATA_MAX bytes (the server's default limit) as data,
 * which the server hashes or, for Ed25519 and RSA_RAW, signs as it is; a
 * larger input is hashed here, in constant memory, with the hash of the
 * key's algorithm (asked with GetKey) and sent as the digest.
 */
static int
signing_input(struct ctx *x, const char *name, const char *in,
    const char *hex, ProtobufCBinaryData *digest, ProtobufCBinaryData *data,
    uint8_t **owned)
{
	Kms__V1__GetKeyRequest kreq = KMS__V1__GET_KEY_REQUEST__INIT;
	const struct kms_alg_info *alg = NULL;
	ProtobufCMessage *resp = NULL;
	EVP_MD_CTX *ctx = NULL;
	uint8_t *buf = NULL, *md = NULL, chunk[65536];
	unsigned int mdlen;
	size_t len, n;
	FILE *f = NULL;
	int r;

	*owned = NULL;
	if (hex != NULL) {
		if ((buf = malloc(EVP_MAX_MD_SIZE)) == NULL)
			return KMSCTL_EXIT_IO;
		if (hex_decode(hex, buf, EVP_MAX_MD_SIZE, &len) != 0) {
			free(buf);
			return die_usage("--digest: 1 to 64 bytes in hex");
		}
		digest->data = buf;
		digest->len = len;
		*owned = buf;
		return 0;
	}
	if ((r = open_input(in, &f)) != 0 ||
	    (r = read_prefix(f, in, DATA_MAX, &buf, &len)) != 0)
		goto out;
	if (len <= DATA_MAX) {
		data->data = buf;
		data->len = len;
		*owned = buf;
		buf = NULL;
		goto out;
	}

	/* Too big to send: hash it here with the key's hash. */
	kreq.name = (char *)name;
	if ((r = kmsctl_call(x, "GetKey", &kreq.base, &kms__v1__key__descriptor,
	    &resp)) != 0)
		goto out;
	alg = kms_alg_lookup(((Kms__V1__Key *)resp)->algorithm);
	protobuf_c_message_free_unpacked(resp, NULL);
	if (alg == NULL || alg->hash == KMS_HASH_NONE ||
	    alg->digest_len == 0) {
		fprintf(stderr, "kmsctl: %s is larger than %d bytes and %s "
		    "signs the message itself, so it cannot be hashed here\n",
		    in_name(in), DATA_MAX, alg ? alg->name : "this key");
		r = KMSCTL_EXIT_USAGE;
		goto out;
	}
	r = KMSCTL_EXIT_IO;
	if ((md = malloc(EVP_MAX_MD_SIZE)) == NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, alg->hash == KMS_HASH_SHA384 ?
	    EVP_sha384() : EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, buf, len) != 1)
		goto out;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (EVP_DigestUpdate(ctx, chunk, n) != 1)
			goto out;
	if (ferror(f)) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", in_name(in),
		    strerror(errno));
		goto out;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 ||
	    mdlen != alg->digest_len)
		goto out;
	digest->data = md;
	digest->len = mdlen;
	*owned = md;
	md = NULL;
	r = 0;
 out:
	EVP_MD_CTX_free(ctx);
	free(md);
	free(buf);
	if (f != NULL && f != stdin)
		fclose(f);
	return r;
}

static int
cmd_sign(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "version", required_argument, NULL, 'v' },
		{ "in", required_argument, NULL, 'i' },
		{ "digest", required_argument, NULL, 'd' },
		{ "format", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__SignRequest req = KMS__V1__SIGN_REQUEST__INIT;
	Kms__V1__SignResponse *s;
	ProtobufCMessage *resp = NULL;
	const char *in = NULL, *hex = NULL, *outpath = NULL, *format = NULL;
	uint8_t *owned = NULL;
	char *text = NULL;
	size_t i;
	int ch, r;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			if (parse_u32(optarg, &req.version) != 0)
				return die_usage("--version: a number");
			break;
		case 'i':
			in = optarg;
			break;
		case 'd':
			hex = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 'o':
			outpath = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1 || (in != NULL && hex != NULL) ||
	    (format != NULL && strcmp(format, "raw") != 0 &&
	    strcmp(format, "base64") != 0 && strcmp(format, "hex") != 0))
		return die_usage("sign NAME [--in FILE | --digest HEX] [-o FILE] "
		    "[--format raw|base64|hex]");
	req.name = argv[optind];
	if ((r = signing_input(x, req.name, in, hex, &req.digest, &req.data,
	    &owned)) != 0)
		return r;
	r = kmsctl_call(x, "Sign", &req.base, &kms__v1__sign_response__descriptor,
	    &resp);
	free(owned);
	if (r != 0)
		return r;
	s = (Kms__V1__SignResponse *)resp;
	if (x->json) {
		text = b64(s->signature.data, s->signature.len);
		r = print_json(text == NULL ? NULL : json_pack(
		    "{s:s, s:s, s:i, s:I}", "name", req.name, "signature",
		    text, "version", (int)s->version, "audit_seq",
		    (json_int_t)s->audit_seq));
		free(text);
	} else {
		if (format == NULL)
			format = outpath != NULL ? "raw" : "base64";
		if (strcmp(format, "raw") == 0)
			r = write_out(outpath, s->signature.data,
			    s->signature.len, 0);
		else {
			if (strcmp(format, "base64") == 0)
				text = b64(s->signature.data, s->signature.len);
			else if ((text = malloc(2 * s->signature.len + 2)) !=
			    NULL)
				for (i = 0; i < s->signature.len; i++)
					sprintf(text + 2 * i, "%02x",
					    s->signature.data[i]);
			if (text != NULL)
				strcat(text, "\n");
			r = text == NULL ? KMSCTL_EXIT_IO :
			    write_out(outpath, text, strlen(text), 0);
			free(text);
		}
		if (r == 0 && outpath != NULL)
			fprintf(stderr, "signed with %s version %u (audit "
			    "seq %" PRIu64 ")\n", req.name, s->version,
			    (uint64_t)s->audit_seq);
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

static int
cmd_verify(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "version", required_argument, NULL, 'v' },
		{ "in", required_argument, NULL, 'i' },
		{ "digest", required_argument, NULL, 'd' },
		{ "signature", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__VerifyRequest req = KMS__V1__VERIFY_REQUEST__INIT;
	Kms__V1__VerifyResponse *v;
	ProtobufCMessage *resp = NULL;
	const char *in = NULL, *hex = NULL, *sigpath = NULL;
	uint8_t *owned = NULL, *sig = NULL;
	size_t siglen;
	int ch, r;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			if (parse_u32(optarg, &req.version) != 0)
				return die_usage("--version: a number");
			break;
		case 'i':
			in = optarg;
			break;
		case 'd':
			hex = optarg;
			break;
		case 's':
			sigpath = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1 || sigpath == NULL || (in != NULL &&
	    hex != NULL))
		return die_usage("verify NAME --signature FILE "
		    "[--in FILE | --digest HEX]");
	req.name = argv[optind];
	if ((r = read_all(sigpath, &sig, &siglen, 4096)) != 0)
		return r;
	req.signature.data = sig;
	req.signature.len = siglen;
	if ((r = signing_input(x, req.name, in, hex, &req.digest, &req.data,
	    &owned)) != 0) {
		free(sig);
		return r;
	}
	r = kmsctl_call(x, "Verify", &req.base, &kms__v1__verify_response__descriptor,
	    &resp);
	free(owned);
	free(sig);
	if (r != 0)
		return r;
	v = (Kms__V1__VerifyResponse *)resp;
	if (x->json)
		r = print_json(json_pack("{s:b, s:i, s:I}", "valid", v->valid,
		    "version", (int)v->version, "audit_seq",
		    (json_int_t)v->audit_seq));
	else
		printf("%s\n", v->valid ? "signature valid" :
		    "signature INVALID");
	if (r == 0 && !v->valid)
		r = KMSCTL_EXIT_VERIFY;
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/* Binary-safe input: a file, or stdin; --base64 input decoded first. */
static int
read_input(const char *path, int base64, uint8_t **buf, size_t *len,
    size_t max)
{
	uint8_t *raw = NULL, *dec;
	size_t rawlen, i, j;
	int r, n;

	if ((r = read_all(path, &raw, &rawlen, base64 ? 2 * max + 16 :
	    max)) != 0)
		return r;
	if (!base64) {
		*buf = raw;
		*len = rawlen;
		return 0;
	}
	/* Drop white space, then decode. */
	for (i = j = 0; i < rawlen; i++)
		if (raw[i] != '\n' && raw[i] != '\r' && raw[i] != ' ')
			raw[j++] = raw[i];
	if (j % 4 != 0 || (dec = malloc(j / 4 * 3 + 1)) == NULL ||
	    (n = EVP_DecodeBlock(dec, raw, (int)j)) < 0) {
		free(raw);
		fprintf(stderr, "kmsctl: input is not base64\n");
		return KMSCTL_EXIT_USAGE;
	}
	if (j > 0 && raw[j - 1] == '=')
		n--;
	if (j > 1 && raw[j - 2] == '=')
		n--;
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	*buf = dec;
	*len = (size_t)n;
	return 0;
}

/* Writes secret or binary output raw to a file, or base64 to stdout. */
static int
write_binary(const char *path, int base64, const uint8_t *p, size_t len,
    int secret)
{
	char *text;
	int r;

	if (!base64 && path != NULL)
		return write_out(path, p, len, secret);
	if ((text = b64(p, len)) == NULL)
		return KMSCTL_EXIT_IO;
	strcat(text, "\n");
	r = write_out(path, text, strlen(text), secret);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	return r;
}

/* wrap, unwrap and datakey share their options. */
static int
cmd_wrapping(struct ctx *x, const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "in", required_argument, NULL, 'i' },
		{ "base64", no_argument, NULL, 'b' },
		{ "length", required_argument, NULL, 'l' },
		{ "wrapped-out", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 }
	};
	const char *in = NULL, *outpath = NULL, *wout = NULL;
	ProtobufCMessage *resp = NULL;
	uint8_t *buf = NULL;
	char *text;
	uint32_t length = 0;
	size_t len = 0;
	int ch, r, base64 = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'i': in = optarg; break;
		case 'b': base64 = 1; break;
		case 'o': outpath = optarg; break;
		case 'w': wout = optarg; break;
		case 'l':
			if (parse_u32(optarg, &length) != 0)
				return die_usage("--length: bytes");
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1)
		return die_usage("wrap|unwrap NAME [--in FILE] [--base64] "
		    "[-o FILE]; datakey NAME [--length N] [-o FILE] "
		    "[--wrapped-out FILE]");
	if (strcmp(cmd, "wrap") == 0) {
		Kms__V1__WrapRequest req = KMS__V1__WRAP_REQUEST__INIT;
		Kms__V1__WrapResponse *w;

		if ((r = read_input(in, base64, &buf, &len, 65536)) != 0)
			return r;
		req.name = argv[optind];
		req.plaintext.data = buf;
		req.plaintext.len = len;
		r = kmsctl_call(x, "Wrap", &req.base,
		    &kms__v1__wrap_response__descriptor, &resp);
		secret_freezero(buf, len);
		if (r != 0)
			return r;
		w = (Kms__V1__WrapResponse *)resp;
		if (x->json) {
			text = b64(w->wrapped.data, w->wrapped.len);
			r = print_json(text == NULL ? NULL : json_pack(
			    "{s:s, s:i, s:I}", "wrapped", text, "version",
			    (int)w->version, "audit_seq",
			    (json_int_t)w->audit_seq));
			free(text);
		} else
			r = write_binary(outpath, outpath == NULL,
			    w->wrapped.data, w->wrapped.len, 0);
	} else if (strcmp(cmd, "unwrap") == 0) {
		Kms__V1__UnwrapRequest req = KMS__V1__UNWRAP_REQUEST__INIT;
		Kms__V1__UnwrapResponse *u;

		if ((r = read_input(in, base64, &buf, &len, 70000)) != 0)
			return r;
		req.name = argv[optind];
		req.wrapped.data = buf;
		req.wrapped.len = len;
		r = kmsctl_call(x, "Unwrap", &req.base,
		    &kms__v1__unwrap_response__descriptor, &resp);
		free(buf);
		if (r != 0)
			return r;
		u = (Kms__V1__UnwrapResponse *)resp;
		r = write_binary(outpath, outpath == NULL, u->plaintext.data,
		    u->plaintext.len, 1);
		OPENSSL_cleanse(u->plaintext.data, u->plaintext.len);
	} else {
		Kms__V1__GenerateDataKeyRequest req =
		    KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
		Kms__V1__GenerateDataKeyResponse *d;

		req.name = argv[optind];
		req.length = length;
		if ((r = kmsctl_call(x, "GenerateDataKey", &req.base,
		    &kms__v1__generate_data_key_response__descriptor,
		    &resp)) != 0)
			return r;
		d = (Kms__V1__GenerateDataKeyResponse *)resp;
		if (x->json && outpath == NULL) {
			char *p64 = b64(d->plaintext.data, d->plaintext.len);

			text = b64(d->wrapped.data, d->wrapped.len);
			r = print_json(p64 == NULL || text == NULL ? NULL :
			    json_pack("{s:s, s:s, s:i, s:I}",
			    "plaintext", p64, "wrapped", text, "version",
			    (int)d->version, "audit_seq",
			    (json_int_t)d->audit_seq));
			if (p64 != NULL)
				OPENSSL_cleanse(p64, strlen(p64));
			free(p64);
			free(text);
		} else if ((r = write_binary(outpath, outpath == NULL,
		    d->plaintext.data, d->plaintext.len, 1)) == 0 &&
		    wout != NULL)
			r = write_out(wout, d->wrapped.data, d->wrapped.len,
			    0);
		OPENSSL_cleanse(d->plaintext.data, d->plaintext.len);
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

static int
cmd_whoami(struct ctx *x, int argc, char **argv)
{
	Kms__V1__WhoAmIRequest req = KMS__V1__WHO_AM_IREQUEST__INIT;
	Kms__V1__WhoAmIResponse *w;
	ProtobufCMessage *resp = NULL;
	json_t *roles;
	size_t i;
	int r;

	(void)argv;
	if (argc != 1)
		return die_usage("whoami takes no arguments");
	if ((r = kmsctl_call(x, "WhoAmI", &req.base,
	    &kms__v1__who_am_iresponse__descriptor, &resp)) != 0)
		return r;
	w = (Kms__V1__WhoAmIResponse *)resp;
	if (x->json) {
		roles = json_array();
		for (i = 0; i < w->n_roles; i++)
			json_array_append_new(roles, json_string(w->roles[i]));
		r = print_json(roles == NULL ? NULL : json_pack(
		    "{s:s, s:o, s:s}", "identity", w->identity, "roles",
		    roles, "fingerprint", w->fingerprint));
	} else {
		printf("identity: %s\nroles:", w->identity);
		for (i = 0; i < w->n_roles; i++)
			printf(" %s", w->roles[i]);
		printf("%s\nfingerprint: %s\n", w->n_roles ? "" : " none",
		    w->fingerprint);
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/* Where `audit list` is: one page is one reply, or several streamed. */
struct audit_page {
	int json;
	uint64_t shown, limit, after, last;
	size_t n;
};

static int
audit_page_cb(ProtobufCMessage *m, void *arg)
{
	Kms__V1__ListAuditRecordsResponse *l =
	    (Kms__V1__ListAuditRecordsResponse *)m;
	struct audit_page *p = arg;
	Kms__V1__AuditRecord *a;
	size_t i;

	for (i = 0; i < l->n_records; i++) {
		if (p->limit != 0 && p->shown >= p->limit)
			break;
		a = l->records[i];
		if (p->json)
			printf("%s\n", a->json);
		else
			printf("%" PRIu64 " %s %s %s %s %s%s%s\n",
			    (uint64_t)a->seq, a->time,
			    a->identity[0] ? a->identity : "-",
			    a->rpc, a->key[0] ? a->key : "-",
			    a->result, a->reason[0] ? " " : "",
			    a->reason);
		p->shown++;
	}
	fflush(stdout);
	p->n += l->n_records;
	if (l->next_after_seq > p->after)
		p->after = l->next_after_seq;
	/*
	 * Without --follow, read up to the end as it was at the first call:
	 * every call is recorded too, so the log never ends.
	 */
	if (p->last == 0)
		p->last = l->last_seq;
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int
cmd_audit_list(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, 'F' },
		{ "chain", required_argument, NULL, 'c' },
		{ "identity", required_argument, NULL, 'i' },
		{ "key-name", required_argument, NULL, 'k' },
		{ "rpc", required_argument, NULL, 'r' },
		{ "result", required_argument, NULL, 'R' },
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "after", required_argument, NULL, 'a' },
		{ "limit", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__ListAuditRecordsRequest req =
	    KMS__V1__LIST_AUDIT_RECORDS_REQUEST__INIT;
	Kms__V1__AuditFilters f = KMS__V1__AUDIT_FILTERS__INIT;
	struct audit_page page = { 0 };
	uint64_t limit = 0, after = 0, prev;
	uint32_t u;
	int ch, r, follow = 0;
	char *end;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'F': follow = 1; break;
		case 'c': req.chain = optarg; break;
		case 'i': f.identity = optarg; break;
		case 'k': f.key = optarg; break;
		case 'r': f.rpc = optarg; break;
		case 'R': f.result = optarg; break;
		case 's': f.time_from = optarg; break;
		case 'u': f.time_to = optarg; break;
		case 'a':
			errno = 0;
			after = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0')
				return die_usage("--after: a seq number");
			break;
		case 'l':
			if (parse_u32(optarg, &u) != 0 || u == 0)
				return die_usage("--limit: a positive number");
			limit = u;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc)
		return die_usage("audit list takes options only");
	req.filters = &f;
	page.json = x->json;
	page.limit = limit;
	page.after = after;
	for (;;) {
		req.after_seq = prev = page.after;
		req.limit = 1000;
		if (limit != 0 && limit - page.shown < 1000)
			req.limit = (uint32_t)(limit - page.shown);
		page.n = 0;
		if ((r = call_stream(x, "ListAuditRecords", &req.base,
		    &kms__v1__list_audit_records_response__descriptor,
		    audit_page_cb, &page)) != 0)
			return r;
		if (limit != 0 && page.shown >= limit)
			return 0;
		if (!follow && (page.after >= page.last || page.after == prev))
			return 0;
		if (follow && (page.n == 0 || page.after == prev))
			sleep(1);
	}
}

static int
cmd_audit(struct ctx *x, int argc, char **argv)
{
	if (argc < 2)
		return die_usage("audit: list or verify?");
	if (strcmp(argv[1], "verify") == 0)
		return audit_cmd_verify(argc - 1, argv + 1, x->json);
	if (strcmp(argv[1], "list") == 0)
		return cmd_audit_list(x, argc - 1, argv + 1);
	return die_usage("audit: unknown subcommand");
}

static int
set_cred(struct ctx *x)
{
	const char *home = getenv("KMS_HOME");

	if (home == NULL || *home == '\0')
		home = "var";
	if (x->as != NULL) {
		if (x->as[0] == '\0' || x->as[0] == '.' ||
		    strchr(x->as, '/') != NULL)
			return die_usage("--as: a dev identity name like ci");
		if (x->o.cert_file == NULL) {
			snprintf(x->cert, sizeof(x->cert),
			    "%s/pki/clients/%s.pem", home, x->as);
			x->o.cert_file = x->cert;
		}
		if (x->o.key_file == NULL) {
			snprintf(x->key, sizeof(x->key),
			    "%s/pki/clients/%s.key", home, x->as);
			x->o.key_file = x->key;
		}
	}
	if (x->o.ca_file == NULL) {
		snprintf(x->ca, sizeof(x->ca), "%s/pki/ca.pem", home);
		x->o.ca_file = x->ca;
	}
	if (x->o.cert_file == NULL || x->o.key_file == NULL)
		return die_usage("no client certificate: use --as NAME or "
		    "--cert F --key F");
	return 0;
}

/* The global options; each takes a value except --json. */
static const char *const global_names[] = {
	"--addr", "--as", "--cert", "--key", "--ca", "--timeout", "--json"
};

/*
 * Options that a command defines for itself: after that command word they
 * keep the command's meaning (`bundle encrypt --key NAME` names a kms key,
 * not a TLS key file).
 */
static const struct {
	const char *cmd;
	const char *opt;
} command_owns[] = {
	{ "bundle", "--key" },
	{ "ota", "--key" },
};

static int
command_owns_opt(const char *cmd, const char *opt)
{
	size_t i;

	for (i = 0; cmd != NULL &&
	    i < sizeof(command_owns) / sizeof(command_owns[0]); i++)
		if (strcmp(cmd, command_owns[i].cmd) == 0 &&
		    strcmp(opt, command_owns[i].opt) == 0)
			return 1;
	return 0;
}

static int
set_global(struct ctx *x, const char *name, char *v)
{
	char *end;
	long t;

	if (strcmp(name, "--addr") == 0)
		x->o.addr = v;
	else if (strcmp(name, "--as") == 0)
		x->as = v;
	else if (strcmp(name, "--cert") == 0)
		x->o.cert_file = v;
	else if (strcmp(name, "--key") == 0)
		x->o.key_file = v;
	else if (strcmp(name, "--ca") == 0)
		x->o.ca_file = v;
	else if (strcmp(name, "--timeout") == 0) {
		errno = 0;
		t = strtol(v, &end, 10);
		if (errno != 0 || *v == '\0' || *end != '\0' || t <= 0 ||
		    t > 24 * 3600)
			return die_usage("--timeout: seconds, 1 to 86400");
		x->o.timeout_seconds = (int)t;
	}
	return 0;
}

/*
 * Takes the global options out of argv wherever they are (before or after
 * the command word; not after "--"), leaving the command and its own
 * arguments in order.  --help prints the usage and exits.
 */
static int
global_opts(struct ctx *x, int *argc, char **argv)
{
	const char *cmd = NULL, *name;
	char *a, *v;
	size_t k, nl;
	int i, j = 0, r, rest = 0;

	for (i = 1; i < *argc; i++) {
		a = argv[i];
		name = NULL;
		if (!rest && strcmp(a, "--") == 0)
			rest = 1;
		else if (!rest && (strcmp(a, "--help") == 0 ||
		    strcmp(a, "-h") == 0)) {
			usage(stdout);
			exit(KMSCTL_EXIT_OK);
		}
		for (k = 0; !rest && k < sizeof(global_names) /
		    sizeof(global_names[0]); k++) {
			nl = strlen(global_names[k]);
			if (strncmp(a, global_names[k], nl) == 0 &&
			    (a[nl] == '\0' || a[nl] == '='))
				name = global_names[k];
		}
		if (name != NULL && command_owns_opt(cmd, name))
			name = NULL;
		if (name == NULL) {
			if (cmd == NULL && a[0] != '-')
				cmd = a;
			argv[++j] = a;
			continue;
		}
		nl = strlen(name);
		if (strcmp(name, "--json") == 0) {
			if (a[nl] == '=')
				return die_usage("--json takes no value");
			x->json = 1;
			continue;
		}
		if (a[nl] == '=')
			v = a + nl + 1;
		else if (i + 1 < *argc)
			v = argv[++i];
		else {
			fprintf(stderr, "kmsctl: %s needs a value\n", name);
			return die_usage(NULL);
		}
		if ((r = set_global(x, name, v)) != 0)
			return r;
	}
	*argc = j + 1;
	argv[*argc] = NULL;
	return 0;
}

int
main(int argc, char **argv)
{
	static struct ctx x;
	const char *cmd;
	int r;

	if ((r = global_opts(&x, &argc, argv)) != 0)
		return r;
	if (argc < 2) {
		usage(stderr);
		return KMSCTL_EXIT_USAGE;
	}
	if (x.o.addr == NULL)
		x.o.addr = getenv("KMS_ADDR");
	if (x.o.addr == NULL || *x.o.addr == '\0')
		x.o.addr = "127.0.0.1:7443";
	cmd = argv[1];
	/* Offline commands need no credentials. */
	if (strcmp(cmd, "audit") == 0 && argc > 2 &&
	    strcmp(argv[2], "verify") == 0)
		return audit_cmd_verify(argc - 2, argv + 2, x.json);
	/* kms OTA bundles (kmsctl/otacmd.c); keygen works offline. */
	if (strcmp(cmd, "ota") == 0) {
		if (argc > 2 && strcmp(argv[2], "keygen") == 0)
			return kmsb_cmd_keygen(argc - 2, argv + 2);
		if ((r = set_cred(&x)) == 0)
			r = kmsb_cmd(&x, argc - 1, argv + 1);
		kmsclient_close(x.c);
		return r;
	}
	if (strcmp(cmd, "bundle") == 0 && bundle_cmd_offline(argc - 1, argv + 1))
		return bundle_cmd(&x, argc - 1, argv + 1);
	if ((r = set_cred(&x)) != 0)
		return r;
	if (strcmp(cmd, "key") == 0)
		r = cmd_key(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "pubkey") == 0)
		r = cmd_pubkey(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "sign") == 0)
		r = cmd_sign(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "verify") == 0)
		r = cmd_verify(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "whoami") == 0)
		r = cmd_whoami(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "wrap") == 0 || strcmp(cmd, "unwrap") == 0 ||
	    strcmp(cmd, "datakey") == 0)
		r = cmd_wrapping(&x, cmd, argc - 1, argv + 1);
	else if (strcmp(cmd, "audit") == 0)
		r = cmd_audit(&x, argc - 1, argv + 1);
	else if (strcmp(cmd, "bundle") == 0)
		r = bundle_cmd(&x, argc - 1, argv + 1);
	else
		r = die_usage("unknown command");
	kmsclient_close(x.c);
	return r;
}
