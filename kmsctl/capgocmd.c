/*
 * capgocmd.c: `kmsctl bundle encrypt|decrypt|verify --format capgo`.
 *
 * encrypt does the bulk work here, in constant memory, and sends kms only
 * the 16-byte session key and the 32-byte checksum to be signed with an
 * RSA_RAW_PKCS1_2048 key.  decrypt and verify do what a device does, with
 * the public key alone: from a PEM file offline, or fetched from kms.
 *
 * Output files are made unnamed (O_TMPFILE) in the target directory and
 * given their name only when everything succeeded, so that neither an
 * error nor a crash leaves a partial or unverified file behind.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "algo.h"
#include "auditcmd.h"
#include "capgocmd.h"
#include "capgo.h"
#include "kmsctl.h"
#include "kmserr.h"

#include "kms/v1/kms.pb-c.h"

#define BUNDLE_USAGE \
"usage: kmsctl bundle encrypt --format capgo --key NAME [--version N]\n" \
"                             -o OUT.zip IN.zip\n" \
"       kmsctl bundle decrypt --format capgo (--pubkey PEM | --key NAME\n" \
"                             [--version N]) --iv-session-key S\n" \
"                             --checksum HEX -o OUT.zip IN.zip\n" \
"       kmsctl bundle verify  --format capgo (--pubkey PEM | --key NAME\n" \
"                             [--version N]) --iv-session-key S\n" \
"                             --checksum HEX IN.zip\n"

struct bundle_args {
	const char *sub;		/* encrypt, decrypt or verify */
	const char *format, *key, *pubkey, *ivsk, *checksum, *out, *in;
	uint32_t version;		/* 0: the primary version */
};

/* An output file that gets its name only on success. */
struct outfile {
	const char *path;
	char tmp[PATH_MAX];		/* the named temporary file, if any */
	int fd;
	FILE *f;
};

/* The state of the Sign calls of one encryption. */
struct signer {
	struct ctx *x;
	const char *name;
	uint32_t asked;			/* --version; 0: the primary one */
	uint32_t version;		/* pinned: both blocks use one version */
	EVP_PKEY *pub;			/* that version's public key */
	uint64_t seq[2];		/* audit receipts: session key, checksum */
	size_t n;
	int exit;			/* non-zero: failed, reported, exit code */
};

static int
bundle_usage(const char *msg)
{
	if (msg != NULL)
		fprintf(stderr, "kmsctl: bundle: %s\n", msg);
	fputs(BUNDLE_USAGE, stderr);
	return KMSCTL_EXIT_USAGE;
}

/* The kmsctl exit code of a KMS_ERR_* from capgo.c or the file code. */
static int
exit_code(int err)
{
	switch (err) {
	case 0:
		return KMSCTL_EXIT_OK;
	case KMS_ERR_VERIFY_FAILED:
		return KMSCTL_EXIT_VERIFY;
	case KMS_ERR_INVALID_ARGUMENT:
		return KMSCTL_EXIT_USAGE;
	default:
		return KMSCTL_EXIT_IO;
	}
}

static int
parse_args(int argc, char **argv, struct bundle_args *a)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "key", required_argument, NULL, 'k' },
		{ "version", required_argument, NULL, 'v' },
		{ "pubkey", required_argument, NULL, 'p' },
		{ "iv-session-key", required_argument, NULL, 'i' },
		{ "checksum", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 }
	};
	int ch, enc, dec;

	memset(a, 0, sizeof(*a));
	if (argc < 2)
		return bundle_usage("encrypt, decrypt or verify?");
	a->sub = argv[1];
	enc = strcmp(a->sub, "encrypt") == 0;
	dec = strcmp(a->sub, "decrypt") == 0;
	if (!enc && !dec && strcmp(a->sub, "verify") != 0)
		return bundle_usage("unknown subcommand");
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'f': a->format = optarg; break;
		case 'k': a->key = optarg; break;
		case 'p': a->pubkey = optarg; break;
		case 'i': a->ivsk = optarg; break;
		case 'c': a->checksum = optarg; break;
		case 'o': a->out = optarg; break;
		case 'v':
			if (parse_u32(optarg, &a->version) != 0 ||
			    a->version == 0)
				return bundle_usage("--version: a version number");
			break;
		default:
			return bundle_usage(NULL);
		}
	}
	if (optind != argc - 2)
		return bundle_usage("one input bundle, please");
	a->in = argv[optind + 1];
	if (a->format == NULL || strcmp(a->format, "capgo") != 0)
		return bundle_usage("--format capgo is required (the only "
		    "format so far)");
	if ((enc || dec) && (a->out == NULL || strcmp(a->out, "-") == 0))
		return bundle_usage("-o OUT.zip is required (a file: it is "
		    "named only once complete)");
	if (!enc && !dec && a->out != NULL)
		return bundle_usage("verify writes nothing: no -o");
	if (enc && (a->key == NULL || a->pubkey != NULL || a->ivsk != NULL ||
	    a->checksum != NULL))
		return bundle_usage("encrypt takes --key NAME, and makes the "
		    "ivSessionKey and checksum itself");
	if (!enc && ((a->key == NULL) == (a->pubkey == NULL) ||
	    a->ivsk == NULL || a->checksum == NULL))
		return bundle_usage("give --pubkey PEM or --key NAME, "
		    "--iv-session-key and --checksum");
	if (a->version != 0 && a->key == NULL)
		return bundle_usage("--version goes with --key");
	return 0;
}

int
bundle_cmd_offline(int argc, char **argv)
{
	int i;

	if (argc < 2 || (strcmp(argv[1], "decrypt") != 0 &&
	    strcmp(argv[1], "verify") != 0))
		return 0;
	for (i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--key") == 0 ||
		    strncmp(argv[i], "--key=", 6) == 0)
			return 0;
	return 1;
}

/* Opens path for reading a bundle: a regular file. */
static int
open_bundle(const char *path, FILE **f)
{
	struct stat sb;

	if ((*f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	if (fstat(fileno(*f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
		fprintf(stderr, "kmsctl: %s is not a regular file\n", path);
		fclose(*f);
		*f = NULL;
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/*
 * Makes the unnamed output file in the directory of path.  File systems
 * without O_TMPFILE get a named temporary file beside path instead.
 */
static int
outfile_open(struct outfile *o, const char *path)
{
	char dir[PATH_MAX];
	struct stat sb;
	mode_t mask;

	memset(o, 0, sizeof(*o));
	o->path = path;
	o->fd = -1;
	/* Renaming the finished file over a device or pipe would replace it. */
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		fprintf(stderr, "kmsctl: %s exists and is not a regular file: "
		    "the output must be a file\n", path);
		return KMSCTL_EXIT_IO;
	}
	if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir) ||
	    (size_t)snprintf(o->tmp, sizeof(o->tmp), "%s.XXXXXX", path) >=
	    sizeof(o->tmp)) {
		fprintf(stderr, "kmsctl: %s: path too long\n", path);
		return KMSCTL_EXIT_IO;
	}
	o->fd = open(dirname(dir), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
	if (o->fd != -1)
		o->tmp[0] = '\0';
	else if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) {
		if ((o->fd = mkstemp(o->tmp)) != -1) {
			mask = umask(0);
			umask(mask);
			if (fchmod(o->fd, 0666 & ~mask) != 0) {
				close(o->fd);
				o->fd = -1;
			}
		}
	}
	if (o->fd == -1 || (o->f = fdopen(o->fd, "wb")) == NULL) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		if (o->fd != -1) {
			close(o->fd);
			o->fd = -1;
		}
		if (o->tmp[0] != '\0')
			unlink(o->tmp);
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/* Throws the output away; safe to call twice. */
static void
outfile_abort(struct outfile *o)
{
	if (o->f != NULL)
		fclose(o->f);
	else if (o->fd != -1)
		close(o->fd);
	o->f = NULL;
	o->fd = -1;
	if (o->tmp[0] != '\0')
		unlink(o->tmp);
	o->tmp[0] = '\0';
}

/* Gives the complete, synced output its name, replacing any old file. */
static int
outfile_commit(struct outfile *o)
{
	char proc[64];
	uint8_t rnd[8];
	int i, ok = 0;

	if (fflush(o->f) != 0 || fsync(o->fd) != 0)
		goto out;
	if (o->tmp[0] == '\0') {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, o->path,
		    AT_SYMLINK_FOLLOW) == 0) {
			ok = 1;
			goto out;
		}
		if (errno != EEXIST)
			goto out;
		/* Link it beside the old file, then rename over it. */
		for (i = 0; i < 16 && o->tmp[0] == '\0'; i++) {
			if (RAND_bytes(rnd, sizeof(rnd)) != 1)
				goto out;
			snprintf(o->tmp, sizeof(o->tmp), "%s.%02x%02x%02x%02x"
			    "%02x%02x%02x%02x", o->path, rnd[0], rnd[1],
			    rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
			if (linkat(AT_FDCWD, proc, AT_FDCWD, o->tmp,
			    AT_SYMLINK_FOLLOW) != 0) {
				o->tmp[0] = '\0';
				if (errno != EEXIST)
					goto out;
			}
		}
		if (o->tmp[0] == '\0')
			goto out;
	}
	if (rename(o->tmp, o->path) != 0)
		goto out;
	o->tmp[0] = '\0';
	ok = 1;
 out:
	if (!ok)
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", o->path,
		    strerror(errno));
	/* Everything was synced before: a late close error changes nothing. */
	fclose(o->f);
	o->f = NULL;
	o->fd = -1;
	if (!ok)
		outfile_abort(o);
	return ok ? 0 : KMSCTL_EXIT_IO;
}

/* Reads a PEM file (bounded) and makes the public key of it. */
static int
pubkey_file(const char *path, EVP_PKEY **pk)
{
	struct kms_status st;
	char *buf = NULL;
	size_t len;
	FILE *f = NULL;
	int r = KMSCTL_EXIT_IO;

	*pk = NULL;
	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		goto out;
	}
	if ((buf = malloc(CAPGO_PEM_MAX + 1)) == NULL)
		goto out;
	len = fread(buf, 1, CAPGO_PEM_MAX + 1, f);
	if (ferror(f)) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		goto out;
	}
	kms_status_clear(&st);
	if (len > CAPGO_PEM_MAX ||
	    capgo_pubkey_from_pem(buf, len, pk, &st) != 0) {
		fprintf(stderr, "kmsctl: %s: %s\n", path, len > CAPGO_PEM_MAX ?
		    "larger than a public key" : st.msg);
		r = KMSCTL_EXIT_USAGE;
		goto out;
	}
	r = 0;
 out:
	free(buf);
	if (f != NULL)
		fclose(f);
	return r;
}

/* The public key of version (0: primary) of kms key name. */
static int
pubkey_kms(struct ctx *x, const char *name, uint32_t version, EVP_PKEY **pk,
    uint32_t *got)
{
	Kms__V1__GetPublicKeyRequest req = KMS__V1__GET_PUBLIC_KEY_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	Kms__V1__PublicKey *p;
	struct kms_status st;
	int r;

	*pk = NULL;
	req.name = (char *)name;
	req.version = version;
	if ((r = kmsctl_call(x, "GetPublicKey", &req.base,
	    &kms__v1__public_key__descriptor, &resp)) != 0)
		return r;
	p = (Kms__V1__PublicKey *)resp;
	kms_status_clear(&st);
	if (p->algorithm != KMS__V1__ALGORITHM__RSA_RAW_PKCS1_2048) {
		fprintf(stderr, "kmsctl: %s is %s: Capgo bundles need an "
		    "RSA_RAW_PKCS1_2048 key\n", name, kms_alg_name(p->algorithm));
		r = KMSCTL_EXIT_USAGE;
	} else if (capgo_pubkey_from_pem(p->pem, strlen(p->pem), pk,
	    &st) != 0) {
		fprintf(stderr, "kmsctl: the public key of %s from the "
		    "server: %s\n", name, st.msg);
		r = KMSCTL_EXIT_REFUSED;
	} else if (got != NULL)
		*got = p->version;
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/* Checks that the kms key exists and is an RSA_RAW_PKCS1_2048 key. */
static int
check_key(struct ctx *x, const char *name, uint32_t *primary)
{
	Kms__V1__GetKeyRequest req = KMS__V1__GET_KEY_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	Kms__V1__Key *k;
	int r;

	req.name = (char *)name;
	if ((r = kmsctl_call(x, "GetKey", &req.base, &kms__v1__key__descriptor,
	    &resp)) != 0)
		return r;
	k = (Kms__V1__Key *)resp;
	if (k->algorithm != KMS__V1__ALGORITHM__RSA_RAW_PKCS1_2048) {
		fprintf(stderr, "kmsctl: %s is %s: Capgo bundles need an "
		    "RSA_RAW_PKCS1_2048 key (key create NAME --algorithm "
		    "RSA_RAW_PKCS1_2048)\n", name, kms_alg_name(k->algorithm));
		r = KMSCTL_EXIT_USAGE;
	} else
		*primary = k->primary_version;
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/*
 * The signer's failure, already reported: capgo.c passes the error up and
 * bundle_encrypt exits with s->exit.
 */
static int
signer_failed(struct signer *s, int exit_code, struct kms_status *st)
{
	s->exit = exit_code;
	return kms_status_set(st, KMS_ERR_UNAVAILABLE, "reported");
}

/*
 * capgo_signer.prepare: the key must be RSA_RAW_PKCS1_2048 (GetKey); one
 * version signs both blocks, and its public key checks them.
 */
static int
sign_prepare(void *arg, EVP_PKEY **check, struct kms_status *st)
{
	struct signer *s = arg;
	uint32_t primary = 0;
	int r;

	if ((r = check_key(s->x, s->name, &primary)) != 0 ||
	    (r = pubkey_kms(s->x, s->name, s->asked ? s->asked : primary,
	    &s->pub, &s->version)) != 0)
		return signer_failed(s, r, st);
	*check = s->pub;
	return 0;
}

/* capgo_signer.sign: one kms Sign of raw bytes with the pinned version. */
static int
sign_cb(void *arg, const uint8_t *in, size_t inlen,
    uint8_t sig[CAPGO_RSA_LEN], struct kms_status *st)
{
	Kms__V1__SignRequest req = KMS__V1__SIGN_REQUEST__INIT;
	struct signer *s = arg;
	ProtobufCMessage *resp = NULL;
	Kms__V1__SignResponse *sr;
	int r = 0;

	req.name = (char *)s->name;
	req.version = s->version;
	req.data.data = (uint8_t *)in;
	req.data.len = inlen;
	if ((r = kmsctl_call(s->x, "Sign", &req.base,
	    &kms__v1__sign_response__descriptor, &resp)) != 0)
		return signer_failed(s, r, st);
	sr = (Kms__V1__SignResponse *)resp;
	if (sr->signature.len != CAPGO_RSA_LEN || sr->version != s->version ||
	    s->n >= sizeof(s->seq) / sizeof(s->seq[0])) {
		fprintf(stderr, "kmsctl: the server signed with version %u "
		    "(%zu bytes), not version %u (%d bytes)\n", sr->version,
		    sr->signature.len, s->version, CAPGO_RSA_LEN);
		r = signer_failed(s, KMSCTL_EXIT_REFUSED, st);
	} else {
		memcpy(sig, sr->signature.data, CAPGO_RSA_LEN);
		s->seq[s->n++] = sr->audit_seq;
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

static int
bundle_encrypt(struct ctx *x, const struct bundle_args *a)
{
	struct signer s = { 0 };
	const struct capgo_signer signer = { sign_prepare, sign_cb, &s };
	struct capgo_sealed sealed;
	struct outfile o = { .fd = -1 };
	struct kms_status st;
	uint8_t head[CAPGO_ZIP_MAGIC_LEN];
	FILE *in = NULL;
	size_t n;
	int r;

	/* Is it a zip at all?  Before any call or any file is made. */
	if ((r = open_bundle(a->in, &in)) != 0)
		goto out;
	n = fread(head, 1, sizeof(head), in);
	if (!capgo_is_zip(head, n)) {
		fprintf(stderr, "kmsctl: %s is not a zip file (it does not "
		    "start with a local file header)\n", a->in);
		r = KMSCTL_EXIT_USAGE;
		goto out;
	}
	if (fseek(in, 0, SEEK_SET) != 0) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", a->in,
		    strerror(errno));
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	/*
	 * The output is unnamed until the end, so encryption may start
	 * while the signer checks the key.
	 */
	s.x = x;
	s.name = a->key;
	s.asked = a->version;
	if ((r = outfile_open(&o, a->out)) != 0)
		goto out;
	kms_status_clear(&st);
	if ((r = capgo_encrypt(in, o.f, &signer, &sealed, &st)) != 0) {
		if (s.exit == 0)
			fprintf(stderr, "kmsctl: bundle encrypt %s: %s\n",
			    a->in, st.msg);
		r = s.exit != 0 ? s.exit : exit_code(r);
		goto out;
	}
	if ((r = outfile_commit(&o)) != 0)
		goto out;
	if (x->json)
		r = print_json(json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, "
		    "s:{s:I, s:I}}", "ivSessionKey", sealed.iv_session_key,
		    "checksum", sealed.checksum, "key", a->key, "version",
		    (int)s.version, "size", (json_int_t)sealed.plain_len,
		    "encrypted_size", (json_int_t)sealed.cipher_len,
		    "audit_seq", "session_key", (json_int_t)s.seq[0],
		    "checksum", (json_int_t)s.seq[1]));
	else {
		printf("key: %s\nversion: %u\nivSessionKey: %s\nchecksum: %s\n",
		    a->key, s.version, sealed.iv_session_key, sealed.checksum);
		fflush(stdout);
		fprintf(stderr, "encrypted %s to %s with %s version %u (audit "
		    "seq %" PRIu64 ", %" PRIu64 ")\n", a->in, a->out, a->key,
		    s.version, s.seq[0], s.seq[1]);
	}
 out:
	outfile_abort(&o);
	EVP_PKEY_free(s.pub);
	if (in != NULL)
		fclose(in);
	return r;
}

/* decrypt (a->out set) and verify (a->out NULL). */
static int
bundle_check(struct ctx *x, const struct bundle_args *a)
{
	struct outfile o = { .fd = -1 };
	struct kms_status st;
	EVP_PKEY *pub = NULL;
	FILE *in = NULL;
	uint64_t len = 0;
	uint32_t version = 0;
	int r, err;

	if (a->pubkey != NULL)
		r = pubkey_file(a->pubkey, &pub);
	else
		r = pubkey_kms(x, a->key, a->version, &pub, &version);
	if (r != 0 || (r = open_bundle(a->in, &in)) != 0)
		goto out;
	if (a->out != NULL && (r = outfile_open(&o, a->out)) != 0)
		goto out;
	kms_status_clear(&st);
	err = capgo_decrypt(in, o.f, pub, a->ivsk, a->checksum, &len, &st);
	/* The plaintext gets its name only once the checksum matched. */
	if (err == 0 && a->out != NULL && (r = outfile_commit(&o)) != 0)
		goto out;
	r = exit_code(err);
	if (x->json) {
		json_t *j = json_pack("{s:b, s:I}", "ok", err == 0, "size",
		    (json_int_t)len);

		if (j != NULL && version != 0)
			json_object_set_new(j, "version", json_integer(version));
		if (j != NULL && err != 0)
			json_object_set_new(j, "why", json_string(st.msg));
		if (print_json(j) != 0 && r == 0)
			r = KMSCTL_EXIT_IO;
	} else if (err == 0)
		printf("bundle verified: %" PRIu64 " bytes, checksum matches%s%s"
		    "\n", len, a->out != NULL ? "; written to " : "",
		    a->out != NULL ? a->out : "");
	if (err != 0)
		fprintf(stderr, "kmsctl: bundle %s %s: %s%s\n", a->sub, a->in,
		    err == KMS_ERR_VERIFY_FAILED ? "FAILED verification: " :
		    "", st.msg);
 out:
	outfile_abort(&o);
	EVP_PKEY_free(pub);
	if (in != NULL)
		fclose(in);
	return r;
}

int
bundle_cmd(struct ctx *x, int argc, char **argv)
{
	struct bundle_args a;
	int r;

	if (argc >= 2 && strcmp(argv[1], "help") == 0) {
		fputs(BUNDLE_USAGE, stdout);
		return KMSCTL_EXIT_OK;
	}
	if ((r = parse_args(argc, argv, &a)) != 0)
		return r;
	if (strcmp(a.sub, "encrypt") == 0)
		return bundle_encrypt(x, &a);
	return bundle_check(x, &a);
}
