/*
 * otacmd.c: `kmsctl ota`: kms OTA bundles made on the CI machine with
 * keys that stay in kmsd's HSM.
 *
 *   ota seal --key NAME[:VER] --app A --channel C --version V --seq N
 *            [--expires-in S] [--chunk-size N] --recipient PUB.pem ...
 *            --statement FILE -o OUT IN
 *   ota statement --root-key NAME[:VER] --app A --signing-key NAME[:VER] ...
 *            --seq N --expires-in S [--key-expires-in S] -o FILE
 *   ota keygen -o PRIVATE.pem --pub PUBLIC.pem     (offline)
 *
 * The payload is encrypted and hashed here in one pass; only the manifest
 * (at most KMSB_MANIFEST_MAX bytes) travels to kmsd's Sign.  The public
 * key of every kms key involved comes from GetPublicKey, and each
 * signature is checked against it before anything is written.
 */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auditcmd.h"
#include "otacmd.h"
#include "kmsctl.h"
#include "kmsb/kmsb.h"
#include "kmsb/kmsb_file.h"
#include "kmsb/kmsb_keys.h"
#include "kmsb/kmsb_seal.h"

#include "kms/v1/kms.pb-c.h"

#define PEM_MAX		8192
#define EXPIRES_DEFAULT	(30 * 24 * 3600)	/* a bundle: 30 days */
#define EXPIRES_MAX	(20ULL * 366 * 24 * 3600)

/* A kms signing key as the bundle tools use it. */
struct kms_signer {
	struct ctx *x;
	char name[160];
	uint32_t version;		/* the one GetPublicKey answered with */
	struct kmsb_pubkey pub;
	uint64_t audit_seq;		/* of the last Sign */
	int rc;				/* kmsctl exit code of a failed Sign */
};

static int
parse_u64(const char *s, uint64_t max, uint64_t *v)
{
	unsigned long long x;
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || x > max)
		return -1;
	*v = x;
	return 0;
}

/*
 * NAME or NAME:VERSION; fetches the public key of that version (the
 * primary one when none is given) and keeps the version for Sign.
 */
static int
signer_load(struct ctx *x, const char *spec, struct kms_signer *s)
{
	Kms__V1__GetPublicKeyRequest req = KMS__V1__GET_PUBLIC_KEY_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	Kms__V1__PublicKey *pk;
	const char *colon = strrchr(spec, ':');
	uint64_t ver = 0;
	int r;

	memset(s, 0, sizeof(*s));
	s->x = x;
	if ((colon != NULL && (colon == spec ||
	    parse_u64(colon + 1, UINT32_MAX, &ver) != 0)) ||
	    (size_t)snprintf(s->name, sizeof(s->name), "%.*s",
	    colon != NULL ? (int)(colon - spec) : (int)strlen(spec), spec) >=
	    sizeof(s->name))
		return die_usage("a key is NAME or NAME:VERSION");
	req.name = s->name;
	req.version = (uint32_t)ver;
	if ((r = kmsctl_call(x, "GetPublicKey", &req.base,
	    &kms__v1__public_key__descriptor, &resp)) != 0)
		return r;
	pk = (Kms__V1__PublicKey *)resp;
	s->version = pk->version;
	r = 0;
	if (pk->pem == NULL ||
	    kmsb_pem_sig_pubkey(pk->pem, strlen(pk->pem), &s->pub) != 0) {
		fprintf(stderr, "kmsctl: %s is not an ED25519 or "
		    "EC_P256_SHA256 key: OTA bundles are signed with one of "
		    "those\n", s->name);
		r = KMSCTL_EXIT_USAGE;
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/*
 * kmsb_sign_fn through kmsd, with the version fixed at load: manifests go
 * to SignBundleManifest, which reads them before signing (app and channel
 * grants, sequence above the last one signed) and records what it signed;
 * anything else (statements) to Sign.
 */
static int
signer_sign(void *arg, const uint8_t *msg, size_t len,
    uint8_t sig[KMSB_SIG_MAX], size_t *sig_len)
{
	static const char dom[] = KMSB_MANIFEST_DOMAIN;	/* with its NUL */
	Kms__V1__SignRequest req = KMS__V1__SIGN_REQUEST__INIT;
	Kms__V1__SignBundleManifestRequest mreq =
	    KMS__V1__SIGN_BUNDLE_MANIFEST_REQUEST__INIT;
	Kms__V1__SignResponse *sr;
	Kms__V1__SignBundleManifestResponse *mr;
	ProtobufCMessage *resp = NULL;
	struct kms_signer *s = arg;
	ProtobufCBinaryData got;
	uint32_t version;
	uint64_t seq;
	int r = -1;

	if (len > sizeof(dom) && memcmp(msg, dom, sizeof(dom)) == 0) {
		mreq.name = s->name;
		mreq.version = s->version;
		mreq.manifest.data = (uint8_t *)msg + sizeof(dom);
		mreq.manifest.len = len - sizeof(dom);
		if ((s->rc = kmsctl_call(s->x, "SignBundleManifest",
		    &mreq.base,
		    &kms__v1__sign_bundle_manifest_response__descriptor,
		    &resp)) != 0)
			return -1;
		mr = (Kms__V1__SignBundleManifestResponse *)resp;
		got = mr->signature;
		version = mr->version;
		seq = mr->audit_seq;
	} else {
		req.name = s->name;
		req.version = s->version;
		/* The message itself: the server hashes it, or (Ed25519)
		 * signs it. */
		req.data.data = (uint8_t *)msg;
		req.data.len = len;
		if ((s->rc = kmsctl_call(s->x, "Sign", &req.base,
		    &kms__v1__sign_response__descriptor, &resp)) != 0)
			return -1;
		sr = (Kms__V1__SignResponse *)resp;
		got = sr->signature;
		version = sr->version;
		seq = sr->audit_seq;
	}
	if (version == s->version && got.len > 0 && got.len <= KMSB_SIG_MAX) {
		memcpy(sig, got.data, got.len);
		*sig_len = got.len;
		s->audit_seq = seq;
		r = 0;
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

static int
read_pem(const char *path, uint8_t **buf, size_t *len)
{
	if (kmsb_read_file(path, PEM_MAX, buf, len) == 0)
		return 0;
	fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
	    errno == EFBIG ? "too large" : strerror(errno));
	return KMSCTL_EXIT_IO;
}

static void
report(struct ctx *x, const char *what, const char *out,
    const struct kms_signer *s, uint64_t seq)
{
	json_t *o;

	if (x->json) {
		o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:I}", "output", out,
		    "kind", what, "key", s->name, "version", (int)s->version,
		    "seq", (json_int_t)seq, "audit_seq",
		    (json_int_t)s->audit_seq);
		if (o != NULL) {
			json_dumpf(o, stdout, JSON_COMPACT);
			printf("\n");
			json_decref(o);
		}
		return;
	}
	fprintf(stderr, "wrote %s %s (seq %" PRIu64 "), signed with %s version "
	    "%u (audit seq %" PRIu64 ")\n", what, out, seq, s->name,
	    s->version, s->audit_seq);
}

static int
cmd_seal(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "app", required_argument, NULL, 'a' },
		{ "channel", required_argument, NULL, 'c' },
		{ "version", required_argument, NULL, 'v' },
		{ "seq", required_argument, NULL, 's' },
		{ "expires-in", required_argument, NULL, 'e' },
		{ "chunk-size", required_argument, NULL, 'z' },
		{ "recipient", required_argument, NULL, 'r' },
		{ "statement", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 }
	};
	uint8_t recips[KMSB_RECIPIENTS_MAX][32];
	struct kmsb_seal_params p;
	struct kms_signer s;
	struct kmsb_out o = { .f = NULL };
	struct stat sb;
	const char *key = NULL, *stpath = NULL, *outp = NULL;
	const char *rpaths[KMSB_RECIPIENTS_MAX];
	char why[KMSB_WHY_MAX];
	uint64_t expires_in = EXPIRES_DEFAULT, v;
	uint8_t *buf = NULL, *st = NULL;
	size_t len, st_len = 0, nr = 0, i;
	FILE *in = NULL;
	int ch, r, seq_set = 0;

	memset(&p, 0, sizeof(p));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			key = optarg;
			break;
		case 'a':
			p.app_id = optarg;
			break;
		case 'c':
			p.channel = optarg;
			break;
		case 'v':
			p.version = optarg;
			break;
		case 's':
			if (parse_u64(optarg, UINT64_MAX, &p.seq) != 0)
				return die_usage("--seq: a number");
			seq_set = 1;
			break;
		case 'e':
			if (parse_u64(optarg, EXPIRES_MAX, &expires_in) != 0)
				return die_usage("--expires-in: seconds");
			break;
		case 'z':
			if (parse_u64(optarg, KMSB_CHUNK_MAX, &v) != 0 ||
			    v < KMSB_CHUNK_MIN)
				return die_usage("--chunk-size: 1024 to 1048576");
			p.chunk_size = (uint32_t)v;
			break;
		case 'r':
			if (nr == KMSB_RECIPIENTS_MAX)
				return die_usage("at most 16 --recipient");
			rpaths[nr++] = optarg;
			break;
		case 't':
			stpath = optarg;
			break;
		case 'o':
			outp = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1 || key == NULL || p.app_id == NULL ||
	    p.channel == NULL || p.version == NULL || !seq_set || nr == 0 ||
	    stpath == NULL || outp == NULL || strcmp(outp, "-") == 0)
		return die_usage("ota seal --key NAME --app A --channel C "
		    "--version V --seq N --recipient PUB.pem --statement FILE "
		    "-o OUT IN");
	for (i = 0; i < nr; i++) {
		if ((r = read_pem(rpaths[i], &buf, &len)) != 0)
			return r;
		r = kmsb_pem_x25519_pub((char *)buf, len, recips[i]);
		free(buf);
		if (r != 0) {
			fprintf(stderr, "kmsctl: %s: not an X25519 public key "
			    "PEM (make one with kmsctl ota keygen)\n",
			    rpaths[i]);
			return KMSCTL_EXIT_USAGE;
		}
	}
	if (kmsb_read_file(stpath, KMSB_STATEMENT_MAX, &st, &st_len) != 0) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", stpath,
		    errno == EFBIG ? "larger than a statement can be" :
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	if ((in = fopen(argv[optind], "rb")) == NULL ||
	    fstat(fileno(in), &sb) != 0) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", argv[optind],
		    strerror(errno));
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		fprintf(stderr, "kmsctl: %s: not a regular file (the "
		    "manifest records the payload size up front)\n",
		    argv[optind]);
		r = KMSCTL_EXIT_USAGE;
		goto out;
	}
	if ((r = signer_load(x, key, &s)) != 0)
		goto out;
	p.signer = s.pub;
	p.recipients = (const uint8_t (*)[32])recips;
	p.recipient_count = nr;
	p.statement = st;
	p.statement_len = st_len;
	p.created = (uint64_t)time(NULL);
	p.expires = p.created + expires_in;
	if (kmsb_out_open(&o, outp, 0) != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", outp,
		    strerror(errno));
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if ((r = kmsb_seal(&p, in, (uint64_t)sb.st_size, o.f, signer_sign,
	    &s, why)) != KMSB_OK) {
		fprintf(stderr, "kmsctl: ota seal: %s\n", why);
		/* The server's refusal, a local file, a bad signature, or
		 * what was asked for (statement, sizes, recipients). */
		r = s.rc != 0 ? s.rc : r == KMSB_ERR_OUTPUT ||
		    r == KMSB_ERR_TRUNCATED ? KMSCTL_EXIT_IO :
		    r == KMSB_ERR_SIGNATURE ? KMSCTL_EXIT_VERIFY :
		    KMSCTL_EXIT_USAGE;
		goto out;
	}
	if (kmsb_out_commit(&o) != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", outp,
		    strerror(errno));
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	report(x, "bundle", outp, &s, p.seq);
	r = 0;
 out:
	kmsb_out_abort(&o);
	if (in != NULL)
		fclose(in);
	free(st);
	return r;
}

static int
cmd_statement(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "root-key", required_argument, NULL, 'R' },
		{ "signing-key", required_argument, NULL, 'S' },
		{ "app", required_argument, NULL, 'a' },
		{ "seq", required_argument, NULL, 's' },
		{ "expires-in", required_argument, NULL, 'e' },
		{ "key-expires-in", required_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 }
	};
	struct kmsb_statement_key keys[KMSB_STATEMENT_KEYS_MAX];
	struct kmsb_statement_params p;
	struct kms_signer root, k;
	const char *rootspec = NULL, *outp = NULL;
	const char *specs[KMSB_STATEMENT_KEYS_MAX];
	uint8_t out[KMSB_STATEMENT_MAX];
	char why[KMSB_WHY_MAX];
	uint64_t expires_in = 0, key_expires_in = 0, now;
	size_t nk = 0, i, len;
	int ch, r, seq_set = 0;

	memset(&p, 0, sizeof(p));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'R':
			rootspec = optarg;
			break;
		case 'S':
			if (nk == KMSB_STATEMENT_KEYS_MAX)
				return die_usage("at most 8 --signing-key");
			specs[nk++] = optarg;
			break;
		case 'a':
			p.app_id = optarg;
			break;
		case 's':
			if (parse_u64(optarg, UINT64_MAX, &p.seq) != 0)
				return die_usage("--seq: a number");
			seq_set = 1;
			break;
		case 'e':
			if (parse_u64(optarg, EXPIRES_MAX, &expires_in) != 0 ||
			    expires_in == 0)
				return die_usage("--expires-in: seconds");
			break;
		case 'K':
			if (parse_u64(optarg, EXPIRES_MAX,
			    &key_expires_in) != 0 || key_expires_in == 0)
				return die_usage("--key-expires-in: seconds");
			break;
		case 'o':
			outp = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc || rootspec == NULL || nk == 0 ||
	    p.app_id == NULL || !seq_set || expires_in == 0 || outp == NULL)
		return die_usage("ota statement --root-key NAME --app A "
		    "--signing-key NAME[:VER] ... --seq N --expires-in S "
		    "-o FILE");
	now = (uint64_t)time(NULL);
	p.expires = now + expires_in;
	if (key_expires_in == 0)
		key_expires_in = expires_in;
	for (i = 0; i < nk; i++) {
		if ((r = signer_load(x, specs[i], &k)) != 0)
			return r;
		keys[i].pub = k.pub;
		keys[i].not_after = now + key_expires_in;
	}
	if ((r = signer_load(x, rootspec, &root)) != 0)
		return r;
	p.root = root.pub;
	p.keys = keys;
	p.key_count = nk;
	if ((r = kmsb_statement_build(&p, signer_sign, &root, out,
	    sizeof(out), &len, why)) != KMSB_OK) {
		fprintf(stderr, "kmsctl: ota statement: %s\n", why);
		return root.rc != 0 ? root.rc : r == KMSB_ERR_SIGNATURE ?
		    KMSCTL_EXIT_VERIFY : KMSCTL_EXIT_USAGE;
	}
	if ((r = write_out(outp, out, len, 0)) != 0)
		return r;
	report(x, "statement", outp, &root, p.seq);
	return 0;
}

int
kmsb_cmd(struct ctx *x, int argc, char **argv)
{
	if (argc < 2)
		return die_usage("ota: seal, statement or keygen?");
	if (strcmp(argv[1], "seal") == 0)
		return cmd_seal(x, argc - 1, argv + 1);
	if (strcmp(argv[1], "statement") == 0)
		return cmd_statement(x, argc - 1, argv + 1);
	if (strcmp(argv[1], "keygen") == 0)
		return kmsb_cmd_keygen(argc - 1, argv + 1);
	return die_usage("ota: unknown subcommand");
}

int
kmsb_cmd_keygen(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pub", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	const char *privp = NULL, *pubp = NULL;
	EVP_PKEY *pk = NULL;
	BIO *priv = NULL, *pub = NULL;
	char *pd, *pubd;
	long pl, publ;
	int ch, r = KMSCTL_EXIT_IO;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			privp = optarg;
			break;
		case 'p':
			pubp = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc || privp == NULL || pubp == NULL ||
	    strcmp(privp, "-") == 0)
		return die_usage("ota keygen -o PRIVATE.pem --pub PUBLIC.pem");
	if ((pk = EVP_PKEY_Q_keygen(NULL, NULL, "X25519")) == NULL ||
	    (priv = BIO_new(BIO_s_secmem())) == NULL ||
	    (pub = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(priv, pk, NULL, NULL, 0, NULL,
	    NULL) != 1 || PEM_write_bio_PUBKEY(pub, pk) != 1) {
		fprintf(stderr, "kmsctl: cannot make an X25519 key\n");
		goto out;
	}
	pl = BIO_get_mem_data(priv, &pd);
	publ = BIO_get_mem_data(pub, &pubd);
	/* The private key first: a public key without it is useless. */
	if ((r = write_out(privp, pd, (size_t)pl, 1)) != 0)
		goto out;
	if ((r = write_out(pubp, pubd, (size_t)publ, 0)) != 0) {
		unlink(privp);
		goto out;
	}
	fprintf(stderr, "wrote %s (private, mode 0600) and %s\n", privp, pubp);
 out:
	BIO_free(pub);
	BIO_free(priv);
	EVP_PKEY_free(pk);
	return r;
}
