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
#include "kmsclient.h"
#include "kmserr.h"
#include "secret.h"

#include "kms/v1/kms.pb-c.h"

#define DATA_MAX (1024 * 1024)	/* the server's default max_data_bytes */

static const char *const state_names[] = {
	"KEY_VERSION_STATE_UNSPECIFIED", "ENABLED", "DISABLED",
	"DESTROY_SCHEDULED", "DESTROYED"
};

struct ctx {
	struct kmsclient_opts o;
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	const char *as;
	int json;
	struct kmsclient *c;
};

static void
usage(void)
{
	fprintf(stderr,
"usage: kmsctl [--addr HOST:PORT] [--as NAME | --cert F --key F --ca F]\n"
"              [--json] [--timeout SEC] COMMAND ...\n"
"\n"
"commands:\n"
"  key create NAME --algorithm ALG [--rotation-period SECONDS]\n"
"  key get NAME\n"
"  key list [--prefix P]\n"
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
"\n"
"Global options go before the command (--json may go anywhere).\n"
"--addr defaults to $KMS_ADDR, else 127.0.0.1:7443; --as NAME uses\n"
"$KMS_HOME/pki/clients/NAME.pem and .key and $KMS_HOME/pki/ca.pem\n"
"($KMS_HOME defaults to ./var).  Algorithms: EC_P256_SHA256, EC_P384_SHA384,\n"
"ED25519, RSA_PKCS1_{2048,3072,4096}_SHA256, RSA_PSS_{2048,3072,4096}_SHA256,\n"
"RSA_RAW_PKCS1_2048, AES_256_KWP.\n"
"\n"
"exit codes: 0 ok, 1 verification failed, 2 usage error, 3 connection or\n"
"TLS failure, 4 the server refused (its message is printed), 5 local I/O\n"
"error.\n");
}

static int
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

	if (x->c != NULL)
		return 0;
	kms_status_clear(&st);
	if (kmsclient_open(&x->o, &x->c, &st) != 0) {
		fprintf(stderr, "kmsctl: %s\n", st.msg);
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/* One RPC; prints the server's error and returns the exit code. */
static int
call(struct ctx *x, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp)
{
	struct kms_status st;
	int r, code, transport;

	if ((r = connect_server(x)) != 0)
		return r;
	kms_status_clear(&st);
	if (kmsclient_call(x->c, method, req, rd, resp, &code, &transport,
	    &st) == 0)
		return 0;
	fprintf(stderr, "kmsctl: %s: %s: %s\n", method,
	    kms_grpc_code_name(code), st.msg);
	return transport ? KMSCTL_EXIT_TRANSPORT : KMSCTL_EXIT_REFUSED;
}

/* Writes buf to path atomically (temp file, then rename), or to stdout. */
static int
write_out(const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX];
	FILE *f;
	int fd;

	if (path == NULL || strcmp(path, "-") == 0) {
		if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0) {
			fprintf(stderr, "kmsctl: cannot write to stdout\n");
			return KMSCTL_EXIT_IO;
		}
		return 0;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >=
	    sizeof(tmp) || (fd = mkstemp(tmp)) == -1) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	fchmod(fd, 0644);
	if ((f = fdopen(fd, "wb")) == NULL || fwrite(buf, 1, len, f) != len ||
	    fflush(f) != 0 || fsync(fd) != 0 || fclose(f) != 0 ||
	    rename(tmp, path) != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		if (f == NULL)
			close(fd);
		unlink(tmp);
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

static int
read_all(const char *path, uint8_t **buf, size_t *len, size_t max)
{
	FILE *f = path == NULL ? stdin : fopen(path, "rb");
	size_t cap = 65536, n;
	uint8_t *b = NULL, *nb;

	*len = 0;
	if (f == NULL) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	if ((b = malloc(cap)) == NULL)
		goto fail;
	while ((n = fread(b + *len, 1, cap - *len, f)) > 0) {
		*len += n;
		if (*len > max)
			break;
		if (*len == cap) {
			cap *= 2;
			if ((nb = realloc(b, cap)) == NULL)
				goto fail;
			b = nb;
		}
	}
	if (ferror(f))
		goto fail;
	if (f != stdin)
		fclose(f);
	*buf = b;
	return 0;
 fail:
	fprintf(stderr, "kmsctl: cannot read %s\n", path ? path : "stdin");
	free(b);
	if (f != stdin)
		fclose(f);
	return KMSCTL_EXIT_IO;
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

static char *
b64(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

static void
print_json(json_t *o)
{
	if (o == NULL)
		return;
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(o);
}

static const char *
state_name(int s)
{
	if (s < 0 || (size_t)s >= sizeof(state_names) / sizeof(state_names[0]))
		return "UNKNOWN";
	return state_names[s];
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
key_json(const Kms__V1__Key *k)
{
	json_t *o, *vs = json_array();
	char ts[32];
	size_t i;

	for (i = 0; i < k->n_versions; i++) {
		fmt_time(k->versions[i]->create_time, ts, sizeof(ts));
		json_array_append_new(vs, json_pack("{s:i, s:s, s:s}",
		    "version", (int)k->versions[i]->version, "state",
		    state_name(k->versions[i]->state), "create_time", ts));
	}
	o = json_pack("{s:s, s:s, s:i, s:o, s:I}", "name", k->name,
	    "algorithm", kms_alg_name(k->algorithm), "primary_version",
	    (int)k->primary_version, "versions", vs,
	    "rotation_period_seconds", (json_int_t)k->rotation_period_seconds);
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
	if (k->rotation_period_seconds > 0)
		printf("rotation_period_seconds: %" PRId64 "\n",
		    (int64_t)k->rotation_period_seconds);
	printf("versions:\n");
	for (i = 0; i < k->n_versions; i++) {
		fmt_time(k->versions[i]->create_time, ts, sizeof(ts));
		printf("  %u %s %s\n", k->versions[i]->version,
		    state_name(k->versions[i]->state), ts);
	}
}

static int
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

static int
cmd_key(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "algorithm", required_argument, NULL, 'a' },
		{ "rotation-period", required_argument, NULL, 'r' },
		{ "prefix", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	const struct kms_alg_info *alg = NULL;
	const char *sub, *prefix = "";
	ProtobufCMessage *resp = NULL;
	long long period = 0;
	char *end;
	size_t i;
	int ch, r;

	if (argc < 2)
		return die_usage("key: create, get or list?");
	sub = argv[1];
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			if ((alg = kms_alg_by_name(optarg)) == NULL)
				return die_usage("unknown --algorithm");
			break;
		case 'r':
			errno = 0;
			period = strtoll(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || period < 0)
				return die_usage("--rotation-period: seconds");
			break;
		case 'p':
			prefix = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (strcmp(sub, "create") == 0) {
		Kms__V1__CreateKeyRequest req = KMS__V1__CREATE_KEY_REQUEST__INIT;

		if (optind != argc - 1 || alg == NULL)
			return die_usage("key create NAME --algorithm ALG");
		req.name = argv[optind];
		req.algorithm = (Kms__V1__Algorithm)alg->alg;
		req.rotation_period_seconds = period;
		if ((r = call(x, "CreateKey", &req.base,
		    &kms__v1__key__descriptor, &resp)) != 0)
			return r;
	} else if (strcmp(sub, "get") == 0) {
		Kms__V1__GetKeyRequest req = KMS__V1__GET_KEY_REQUEST__INIT;

		if (optind != argc - 1)
			return die_usage("key get NAME");
		req.name = argv[optind];
		if ((r = call(x, "GetKey", &req.base,
		    &kms__v1__key__descriptor, &resp)) != 0)
			return r;
	} else if (strcmp(sub, "list") == 0) {
		Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
		Kms__V1__ListKeysResponse *l;
		json_t *arr;

		if (optind != argc)
			return die_usage("key list [--prefix P]");
		req.prefix = (char *)prefix;
		if ((r = call(x, "ListKeys", &req.base,
		    &kms__v1__list_keys_response__descriptor, &resp)) != 0)
			return r;
		l = (Kms__V1__ListKeysResponse *)resp;
		if (x->json) {
			arr = json_array();
			for (i = 0; i < l->n_keys; i++)
				json_array_append_new(arr, key_json(l->keys[i]));
			print_json(json_pack("{s:o}", "keys", arr));
		} else
			for (i = 0; i < l->n_keys; i++)
				printf("%s %s v%u\n", l->keys[i]->name,
				    kms_alg_name(l->keys[i]->algorithm),
				    l->keys[i]->primary_version);
		protobuf_c_message_free_unpacked(resp, NULL);
		return 0;
	} else
		return die_usage("key: unknown subcommand");
	if (x->json)
		print_json(key_json((Kms__V1__Key *)resp));
	else
		key_print((Kms__V1__Key *)resp);
	protobuf_c_message_free_unpacked(resp, NULL);
	return 0;
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
	if ((r = call(x, "GetPublicKey", &req.base,
	    &kms__v1__public_key__descriptor, &resp)) != 0)
		return r;
	pk = (Kms__V1__PublicKey *)resp;
	if (strcmp(format, "pkcs1") == 0) {
		if (to_pkcs1(pk->pem, &pem, &len) != 0) {
			fprintf(stderr, "kmsctl: --format pkcs1 needs an RSA "
			    "key; %s is %s\n", pk->name,
			    kms_alg_name(pk->algorithm));
			protobuf_c_message_free_unpacked(resp, NULL);
			return KMSCTL_EXIT_USAGE;
		}
	} else {
		pem = strdup(pk->pem);
		len = strlen(pk->pem);
	}
	if (x->json && outpath == NULL) {
		print_json(json_pack("{s:s, s:s, s:i, s:s}", "name", pk->name,
		    "algorithm", kms_alg_name(pk->algorithm), "version",
		    (int)pk->version, "pem", pem));
		r = 0;
	} else
		r = write_out(outpath, pem, len);
	free(pem);
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/* Hashes a file of any size with alg's hash, in constant memory. */
static int
hash_file(const char *path, const struct kms_alg_info *alg, uint8_t *md,
    size_t *mdlen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t buf[65536];
	unsigned int n;
	size_t got;
	FILE *f = path == NULL ? stdin : fopen(path, "rb");
	int r = KMSCTL_EXIT_IO;

	if (f == NULL || ctx == NULL || EVP_DigestInit_ex(ctx,
	    alg->hash == KMS_HASH_SHA384 ? EVP_sha384() : EVP_sha256(),
	    NULL) != 1)
		goto out;
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(ctx, buf, got);
	if (ferror(f) || EVP_DigestFinal_ex(ctx, md, &n) != 1)
		goto out;
	*mdlen = n;
	r = 0;
 out:
	if (r != 0)
		fprintf(stderr, "kmsctl: cannot read %s\n",
		    path ? path : "stdin");
	if (f != NULL && f != stdin)
		fclose(f);
	EVP_MD_CTX_free(ctx);
	return r;
}

/*
 * Fills digest or data for a Sign or Verify request: --digest HEX as is;
 * a file of at most DATA_MAX bytes as data (the server hashes it); a
 * larger one hashed here with the key's hash.
 */
static int
signing_input(struct ctx *x, const char *name, const char *in,
    const char *hex, ProtobufCBinaryData *digest, ProtobufCBinaryData *data,
    uint8_t **owned)
{
	Kms__V1__GetKeyRequest kreq = KMS__V1__GET_KEY_REQUEST__INIT;
	const struct kms_alg_info *alg;
	ProtobufCMessage *resp = NULL;
	struct stat sb;
	uint8_t *buf;
	size_t len;
	int r;

	*owned = NULL;
	if (hex != NULL) {
		if ((buf = malloc(64)) == NULL)
			return KMSCTL_EXIT_IO;
		if (hex_decode(hex, buf, 64, &len) != 0) {
			free(buf);
			return die_usage("--digest: 1 to 64 bytes in hex");
		}
		digest->data = buf;
		digest->len = len;
		*owned = buf;
		return 0;
	}
	if (in != NULL && stat(in, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_size > DATA_MAX) {
		/* Too big to send: hash it here with the key's hash. */
		kreq.name = (char *)name;
		if ((r = call(x, "GetKey", &kreq.base,
		    &kms__v1__key__descriptor, &resp)) != 0)
			return r;
		alg = kms_alg_lookup(((Kms__V1__Key *)resp)->algorithm);
		protobuf_c_message_free_unpacked(resp, NULL);
		if (alg == NULL || alg->hash == KMS_HASH_NONE) {
			fprintf(stderr, "kmsctl: %s is larger than %d bytes "
			    "and %s signs the message itself: it cannot be "
			    "hashed here\n", in, DATA_MAX,
			    alg ? alg->name : "this key");
			return KMSCTL_EXIT_USAGE;
		}
		if ((buf = malloc(64)) == NULL)
			return KMSCTL_EXIT_IO;
		if ((r = hash_file(in, alg, buf, &len)) != 0) {
			free(buf);
			return r;
		}
		digest->data = buf;
		digest->len = len;
		*owned = buf;
		return 0;
	}
	if ((r = read_all(in, &buf, &len, DATA_MAX)) != 0)
		return r;
	if (len > DATA_MAX) {
		free(buf);
		fprintf(stderr, "kmsctl: input larger than %d bytes: pass it "
		    "as a file with --in\n", DATA_MAX);
		return KMSCTL_EXIT_USAGE;
	}
	data->data = buf;
	data->len = len;
	*owned = buf;
	return 0;
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
	r = call(x, "Sign", &req.base, &kms__v1__sign_response__descriptor,
	    &resp);
	free(owned);
	if (r != 0)
		return r;
	s = (Kms__V1__SignResponse *)resp;
	if (x->json) {
		text = b64(s->signature.data, s->signature.len);
		print_json(json_pack("{s:s, s:s, s:i, s:I}", "name", req.name,
		    "signature", text, "version", (int)s->version, "audit_seq",
		    (json_int_t)s->audit_seq));
		free(text);
		r = 0;
	} else {
		if (format == NULL)
			format = outpath != NULL ? "raw" : "base64";
		if (strcmp(format, "raw") == 0)
			r = write_out(outpath, s->signature.data,
			    s->signature.len);
		else {
			if (strcmp(format, "base64") == 0)
				text = b64(s->signature.data, s->signature.len);
			else if ((text = malloc(2 * s->signature.len + 1)) !=
			    NULL)
				for (i = 0; i < s->signature.len; i++)
					sprintf(text + 2 * i, "%02x",
					    s->signature.data[i]);
			if (text != NULL)
				strcat(text, "\n");
			r = text == NULL ? KMSCTL_EXIT_IO :
			    write_out(outpath, text, strlen(text));
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
	r = call(x, "Verify", &req.base, &kms__v1__verify_response__descriptor,
	    &resp);
	free(owned);
	free(sig);
	if (r != 0)
		return r;
	v = (Kms__V1__VerifyResponse *)resp;
	if (x->json)
		print_json(json_pack("{s:b, s:i, s:I}", "valid", v->valid,
		    "version", (int)v->version, "audit_seq",
		    (json_int_t)v->audit_seq));
	else
		printf("%s\n", v->valid ? "signature valid" :
		    "signature INVALID");
	r = v->valid ? 0 : KMSCTL_EXIT_VERIFY;
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

	if ((r = read_all(path, &raw, &rawlen, base64 ? 4 * max / 3 + 8 :
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
write_binary(const char *path, int base64, const uint8_t *p, size_t len)
{
	char *text;
	int r;

	if (!base64 && path != NULL)
		return write_out(path, p, len);
	if ((text = b64(p, len)) == NULL)
		return KMSCTL_EXIT_IO;
	strcat(text, "\n");
	r = write_out(path, text, strlen(text));
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
		r = call(x, "Wrap", &req.base,
		    &kms__v1__wrap_response__descriptor, &resp);
		secret_freezero(buf, len);
		if (r != 0)
			return r;
		w = (Kms__V1__WrapResponse *)resp;
		if (x->json) {
			text = b64(w->wrapped.data, w->wrapped.len);
			print_json(json_pack("{s:s, s:i, s:I}", "wrapped", text,
			    "version", (int)w->version, "audit_seq",
			    (json_int_t)w->audit_seq));
			free(text);
		} else
			r = write_binary(outpath, outpath == NULL,
			    w->wrapped.data, w->wrapped.len);
	} else if (strcmp(cmd, "unwrap") == 0) {
		Kms__V1__UnwrapRequest req = KMS__V1__UNWRAP_REQUEST__INIT;
		Kms__V1__UnwrapResponse *u;

		if ((r = read_input(in, base64, &buf, &len, 70000)) != 0)
			return r;
		req.name = argv[optind];
		req.wrapped.data = buf;
		req.wrapped.len = len;
		r = call(x, "Unwrap", &req.base,
		    &kms__v1__unwrap_response__descriptor, &resp);
		free(buf);
		if (r != 0)
			return r;
		u = (Kms__V1__UnwrapResponse *)resp;
		r = write_binary(outpath, outpath == NULL, u->plaintext.data,
		    u->plaintext.len);
		OPENSSL_cleanse(u->plaintext.data, u->plaintext.len);
	} else {
		Kms__V1__GenerateDataKeyRequest req =
		    KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
		Kms__V1__GenerateDataKeyResponse *d;

		req.name = argv[optind];
		req.length = length;
		if ((r = call(x, "GenerateDataKey", &req.base,
		    &kms__v1__generate_data_key_response__descriptor,
		    &resp)) != 0)
			return r;
		d = (Kms__V1__GenerateDataKeyResponse *)resp;
		if (x->json && outpath == NULL) {
			char *p64 = b64(d->plaintext.data, d->plaintext.len);

			text = b64(d->wrapped.data, d->wrapped.len);
			print_json(json_pack("{s:s, s:s, s:i, s:I}",
			    "plaintext", p64, "wrapped", text, "version",
			    (int)d->version, "audit_seq",
			    (json_int_t)d->audit_seq));
			OPENSSL_cleanse(p64, strlen(p64));
			free(p64);
			free(text);
		} else if ((r = write_binary(outpath, outpath == NULL,
		    d->plaintext.data, d->plaintext.len)) == 0 &&
		    wout != NULL)
			r = write_out(wout, d->wrapped.data, d->wrapped.len);
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
	if ((r = call(x, "WhoAmI", &req.base,
	    &kms__v1__who_am_iresponse__descriptor, &resp)) != 0)
		return r;
	w = (Kms__V1__WhoAmIResponse *)resp;
	if (x->json) {
		roles = json_array();
		for (i = 0; i < w->n_roles; i++)
			json_array_append_new(roles, json_string(w->roles[i]));
		print_json(json_pack("{s:s, s:o, s:s}", "identity", w->identity,
		    "roles", roles, "fingerprint", w->fingerprint));
	} else {
		printf("identity: %s\nroles:", w->identity);
		for (i = 0; i < w->n_roles; i++)
			printf(" %s", w->roles[i]);
		printf("%s\nfingerprint: %s\n", w->n_roles ? "" : " none",
		    w->fingerprint);
	}
	protobuf_c_message_free_unpacked(resp, NULL);
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
	Kms__V1__ListAuditRecordsResponse *l;
	Kms__V1__AuditRecord *a;
	ProtobufCMessage *resp = NULL;
	uint64_t shown = 0, limit = 0, after = 0, last = 0;
	uint32_t u;
	size_t i;
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
	for (;;) {
		req.after_seq = after;
		req.limit = 1000;
		if (limit != 0 && limit - shown < 1000)
			req.limit = (uint32_t)(limit - shown);
		if ((r = call(x, "ListAuditRecords", &req.base,
		    &kms__v1__list_audit_records_response__descriptor,
		    &resp)) != 0)
			return r;
		l = (Kms__V1__ListAuditRecordsResponse *)resp;
		for (i = 0; i < l->n_records; i++) {
			a = l->records[i];
			if (x->json)
				printf("%s\n", a->json);
			else
				printf("%" PRIu64 " %s %s %s %s %s%s%s\n",
				    (uint64_t)a->seq, a->time,
				    a->identity[0] ? a->identity : "-",
				    a->rpc, a->key[0] ? a->key : "-",
				    a->result, a->reason[0] ? " " : "",
				    a->reason);
			shown++;
		}
		fflush(stdout);
		after = l->next_after_seq > after ? l->next_after_seq : after;
		/*
		 * Without --follow, read up to the end as it was at the first
		 * call: every call is recorded too, so the log never ends.
		 */
		if (last == 0)
			last = l->last_seq;
		i = l->n_records;
		protobuf_c_message_free_unpacked(resp, NULL);
		if (limit != 0 && shown >= limit)
			return 0;
		if (!follow && (after >= last || after == req.after_seq))
			return 0;
		if (follow && (i == 0 || after == req.after_seq))
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
		if (strchr(x->as, '/') != NULL || x->as[0] == '.')
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

/*
 * Takes the global options (before the command word; --json anywhere) out
 * of argv, leaving the command and its own arguments in order.
 */
static int
global_opts(struct ctx *x, int *argc, char **argv)
{
	char *v;
	int i, j = 0, n, seen_cmd = 0;

	for (i = 1; i < *argc; i++) {
		const char *a = argv[i];
		const char *names[] = { "--addr", "--as", "--cert", "--key",
		    "--ca", "--timeout" };
		size_t k;
		int hit = -1;

		if (strcmp(a, "--json") == 0) {
			x->json = 1;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage();
			exit(0);
		}
		for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
			size_t nl = strlen(names[k]);

			if (strncmp(a, names[k], nl) == 0 &&
			    (a[nl] == '\0' || a[nl] == '='))
				hit = (int)k;
		}
		if (hit < 0 || seen_cmd) {
			if (a[0] != '-')
				seen_cmd = 1;
			argv[++j] = argv[i];
			continue;
		}
		n = (int)strlen(names[hit]);
		if (a[n] == '=')
			v = (char *)a + n + 1;
		else if (i + 1 < *argc)
			v = argv[++i];
		else
			return die_usage("option needs a value");
		switch (hit) {
		case 0: x->o.addr = v; break;
		case 1: x->as = v; break;
		case 2: x->o.cert_file = v; break;
		case 3: x->o.key_file = v; break;
		case 4: x->o.ca_file = v; break;
		case 5:
			x->o.timeout_seconds = atoi(v);
			if (x->o.timeout_seconds <= 0)
				return die_usage("--timeout: seconds");
			break;
		}
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
		usage();
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
	else
		r = die_usage("unknown command");
	kmsclient_close(x.c);
	return r;
}
