/*
 * kmsb: the device-side command for kms OTA bundles.
 *
 *   kmsb open --root ROOT.pem --app A --channel C --recipient-key KEY.pem
 *        [--last-seq N] [--last-statement-seq N] [--state FILE] [--now T]
 *        -o OUT BUNDLE
 *   kmsb verify (the same options, no -o)
 *   kmsb inspect BUNDLE
 *
 * open writes OUT only if the whole bundle verified (through a temporary
 * file renamed into place); with --state it keeps the last accepted
 * sequence numbers in FILE, replaced atomically after a success (verify
 * reads it but leaves it as it is).
 * Exit codes: 0 ok, 1 refused (the reason is printed), 2 usage, 5 I/O.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsb.h"
#include "kmsb_crypto.h"
#include "kmsb_file.h"
#include "kmsb_keys.h"

#define EXIT_REFUSED	1
#define EXIT_USAGE	2
#define EXIT_IO		5

#define PEM_MAX		8192
#define STATE_MAX	256
#define READ_BLOCK	(128 * 1024)

static void
usage(FILE *f)
{
	fprintf(f,
"usage: kmsb open --root ROOT.pem --app A --channel C --recipient-key KEY.pem\n"
"            [--last-seq N] [--last-statement-seq N] [--state FILE]\n"
"            [--now UNIXTIME] -o OUT BUNDLE\n"
"       kmsb verify (the options of open, without -o) BUNDLE\n"
"       kmsb inspect BUNDLE\n"
"\n"
"open decrypts and verifies BUNDLE (\"-\": stdin) and writes OUT only if\n"
"all of it verified.  --state FILE holds the last accepted bundle and\n"
"statement sequence numbers (a missing file means none yet); it is\n"
"replaced atomically after a successful open (verify only reads it).\n"
"inspect prints the manifest "
"without checking anything.\n"
"exit codes: 0 ok, 1 refused, 2 usage, 5 I/O error\n");
}

static int
die_usage(const char *msg)
{
	if (msg != NULL)
		fprintf(stderr, "kmsb: %s\n", msg);
	fprintf(stderr, "kmsb: try kmsb --help\n");
	return EXIT_USAGE;
}

static int
parse_u64(const char *s, uint64_t *v)
{
	char *end;
	unsigned long long x;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*v = x;
	return 0;
}

/* A small file read whole; prints why not. */
static int
slurp(const char *path, size_t max, uint8_t **buf, size_t *len)
{
	if (kmsb_read_file(path, max, buf, len) == 0)
		return 0;
	fprintf(stderr, "kmsb: cannot read %s: %s\n", path,
	    errno == EFBIG ? "too large" : strerror(errno));
	return EXIT_IO;
}

/* The state file: "kmsb-state 1 SEQ STATEMENT_SEQ\n". */
static int
state_read(const char *path, uint64_t *seq, uint64_t *st_seq)
{
	unsigned long long a, b;
	uint8_t *buf;
	size_t len;
	int n;

	*seq = *st_seq = 0;
	if (kmsb_read_file(path, STATE_MAX, &buf, &len) != 0) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "kmsb: cannot read %s: %s\n", path,
		    strerror(errno));
		return EXIT_IO;
	}
	n = sscanf((char *)buf, "kmsb-state 1 %llu %llu", &a, &b);
	free(buf);
	if (n != 2) {
		fprintf(stderr, "kmsb: %s is not a kmsb state file\n", path);
		return EXIT_IO;
	}
	*seq = a;
	*st_seq = b;
	return 0;
}

static int
state_write(const char *path, uint64_t seq, uint64_t st_seq)
{
	struct kmsb_out o;

	if (kmsb_out_open(&o, path, 0) != 0)
		goto fail;
	fprintf(o.f, "kmsb-state 1 %" PRIu64 " %" PRIu64 "\n", seq, st_seq);
	if (kmsb_out_commit(&o) != 0)
		goto fail;
	return 0;
 fail:
	fprintf(stderr, "kmsb: cannot write %s: %s\n", path, strerror(errno));
	return EXIT_IO;
}

struct sink {
	FILE *f;
	int failed;
};

static int
sink_write(void *arg, const uint8_t *p, size_t len)
{
	struct sink *s = arg;

	if (s->f != NULL && fwrite(p, 1, len, s->f) != len) {
		s->failed = 1;
		return -1;
	}
	return 0;
}

/* Runs BUNDLE through a verifier; output to out (may be NULL). */
static int
run_verifier(const struct kmsb_policy *pol, const char *path, FILE *out,
    const struct kmsb_manifest **mp, struct kmsb_verifier **vp)
{
	static uint8_t block[READ_BLOCK];
	struct sink s = { out, 0 };
	struct kmsb_verifier *v = NULL;
	FILE *f;
	size_t n;
	int r;

	*vp = NULL;
	if (strcmp(path, "-") == 0)
		f = stdin;
	else if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "kmsb: cannot read %s: %s\n", path,
		    strerror(errno));
		return EXIT_IO;
	}
	if ((r = kmsb_verifier_init(&v, pol)) != KMSB_OK) {
		fprintf(stderr, "kmsb: %s\n", kmsb_strerror(r));
		r = EXIT_USAGE;
		goto out;
	}
	r = KMSB_OK;
	while (r == KMSB_OK && (n = fread(block, 1, sizeof(block), f)) > 0)
		r = kmsb_verifier_update(v, block, n, sink_write, &s);
	if (r == KMSB_OK && ferror(f)) {
		fprintf(stderr, "kmsb: cannot read %s: %s\n", path,
		    strerror(errno));
		r = EXIT_IO;
		goto out;
	}
	if (r == KMSB_OK)
		r = kmsb_verifier_final(v);
	if (s.failed) {
		fprintf(stderr, "kmsb: cannot write the output: %s\n",
		    strerror(errno));
		r = EXIT_IO;
		goto out;
	}
	if (r != KMSB_OK) {
		fprintf(stderr, "kmsb: %s: refused: %s\n", path,
		    kmsb_strerror(r));
		r = EXIT_REFUSED;
		goto out;
	}
	*mp = kmsb_verifier_manifest(v, NULL);
	*vp = v;
	v = NULL;
 out:
	kmsb_verifier_free(v);
	if (f != stdin)
		fclose(f);
	return r;
}

static int
cmd_open(int argc, char **argv, int want_out)
{
	static const struct option opts[] = {
		{ "root", required_argument, NULL, 'r' },
		{ "app", required_argument, NULL, 'a' },
		{ "channel", required_argument, NULL, 'c' },
		{ "recipient-key", required_argument, NULL, 'k' },
		{ "last-seq", required_argument, NULL, 'l' },
		{ "last-statement-seq", required_argument, NULL, 'L' },
		{ "state", required_argument, NULL, 's' },
		{ "now", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	const char *root = NULL, *keyf = NULL, *state = NULL, *outp = NULL;
	const struct kmsb_manifest *m = NULL;
	struct kmsb_verifier *v = NULL;
	struct kmsb_policy pol;
	struct kmsb_out o = { .f = NULL };
	uint64_t seq = 0, st_seq = 0, s1, s2;
	uint8_t *buf = NULL;
	size_t len;
	int ch, r, now_set = 0;

	memset(&pol, 0, sizeof(pol));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			root = optarg;
			break;
		case 'a':
			pol.app_id = optarg;
			break;
		case 'c':
			pol.channel = optarg;
			break;
		case 'k':
			keyf = optarg;
			break;
		case 's':
			state = optarg;
			break;
		case 'o':
			outp = optarg;
			break;
		case 'l':
			if (parse_u64(optarg, &pol.last_seq) != 0)
				return die_usage("--last-seq: a number");
			break;
		case 'L':
			if (parse_u64(optarg, &pol.last_statement_seq) != 0)
				return die_usage("--last-statement-seq: a number");
			break;
		case 'n':
			if (parse_u64(optarg, &pol.now) != 0)
				return die_usage("--now: unix seconds");
			now_set = 1;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (optind != argc - 1 || root == NULL || keyf == NULL ||
	    pol.app_id == NULL || pol.channel == NULL ||
	    (want_out && outp == NULL) || (!want_out && outp != NULL))
		return die_usage(want_out ? "open needs --root, --app, "
		    "--channel, --recipient-key, -o OUT and BUNDLE" :
		    "verify needs --root, --app, --channel, --recipient-key "
		    "and BUNDLE");
	if (!now_set)
		pol.now = (uint64_t)time(NULL);
	if ((r = slurp(root, PEM_MAX, &buf, &len)) != 0)
		return r;
	r = kmsb_pem_sig_pubkey((char *)buf, len, &pol.root);
	free(buf);
	if (r != 0) {
		fprintf(stderr, "kmsb: %s: not an Ed25519 or P-256 public "
		    "key PEM\n", root);
		return EXIT_USAGE;
	}
	if ((r = slurp(keyf, PEM_MAX, &buf, &len)) != 0)
		return r;
	r = kmsb_pem_x25519_priv((char *)buf, len, pol.recipient_sk);
	kmsb_c_wipe(buf, len);
	free(buf);
	if (r != 0) {
		fprintf(stderr, "kmsb: %s: not an X25519 private key PEM\n",
		    keyf);
		return EXIT_USAGE;
	}
	if (state != NULL) {
		if ((r = state_read(state, &s1, &s2)) != 0)
			goto out;
		/* The stricter of the state file and the options wins. */
		if (s1 > pol.last_seq)
			pol.last_seq = s1;
		if (s2 > pol.last_statement_seq)
			pol.last_statement_seq = s2;
	}
	if (outp != NULL && kmsb_out_open(&o, outp, 0) != 0) {
		fprintf(stderr, "kmsb: cannot write %s: %s\n", outp,
		    strerror(errno));
		r = EXIT_IO;
		goto out;
	}
	if ((r = run_verifier(&pol, argv[optind], o.f, &m, &v)) != 0)
		goto out;
	(void)kmsb_verifier_manifest(v, &st_seq);
	seq = m->seq;
	if (outp != NULL && kmsb_out_commit(&o) != 0) {
		fprintf(stderr, "kmsb: cannot write %s: %s\n", outp,
		    strerror(errno));
		r = EXIT_IO;
		goto out;
	}
	/* Only an install moves the state forward; verify just checks. */
	if (want_out && state != NULL &&
	    (r = state_write(state, seq, st_seq)) != 0)
		goto out;
	fprintf(stderr, "kmsb: %s: verified: app %.*s channel %.*s version "
	    "%.*s seq %" PRIu64 ", %" PRIu64 " bytes\n", argv[optind],
	    m->app_id_len, m->app_id, m->channel_len, m->channel,
	    m->version_len, m->version, m->seq, m->payload_size);
 out:
	kmsb_out_abort(&o);
	kmsb_verifier_free(v);
	kmsb_c_wipe(&pol, sizeof(pol));
	return r;
}

static void
print_hex(const char *name, const uint8_t *p, size_t n)
{
	size_t i;

	printf("%s", name);
	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

static const char *
alg_name(uint8_t alg)
{
	return alg == KMSB_SIG_ED25519 ? "ED25519" :
	    alg == KMSB_SIG_P256_SHA256 ? "EC_P256_SHA256" : "unknown";
}

/* Reads n bytes of f into b, 0 or -1. */
static int
read_n(FILE *f, uint8_t *b, size_t n)
{
	return fread(b, 1, n, f) == n ? 0 : -1;
}

static int
cmd_inspect(int argc, char **argv)
{
	struct kmsb_manifest m;
	struct kmsb_statement st;
	struct kmsb_recipient rc;
	uint8_t head[10], len2[2], *buf = NULL, st_buf[KMSB_STATEMENT_MAX];
	uint8_t sig[KMSB_SIG_MAX];
	size_t mlen, n;
	unsigned i;
	FILE *f;
	int r = EXIT_REFUSED;

	if (argc != 2)
		return die_usage("inspect BUNDLE");
	if (strcmp(argv[1], "-") == 0)
		f = stdin;
	else if ((f = fopen(argv[1], "rb")) == NULL) {
		fprintf(stderr, "kmsb: cannot read %s: %s\n", argv[1],
		    strerror(errno));
		return EXIT_IO;
	}
	if (read_n(f, head, sizeof(head)) != 0)
		goto bad;
	mlen = (size_t)head[6] << 24 | (size_t)head[7] << 16 |
	    (size_t)head[8] << 8 | head[9];
	if (mlen < sizeof(head) || mlen > KMSB_MANIFEST_MAX ||
	    (buf = malloc(mlen)) == NULL)
		goto bad;
	memcpy(buf, head, sizeof(head));
	if (read_n(f, buf + sizeof(head), mlen - sizeof(head)) != 0 ||
	    kmsb_manifest_parse(buf, mlen, &m) != KMSB_OK)
		goto bad;
	printf("UNVERIFIED (inspect checks no signature)\n");
	printf("format: %u\nmanifest bytes: %zu\n", m.format_version, mlen);
	printf("app: %.*s\nchannel: %.*s\nversion: %.*s\n", m.app_id_len,
	    m.app_id, m.channel_len, m.channel, m.version_len, m.version);
	printf("seq: %" PRIu64 "\ncreated: %" PRIu64 "\nexpires: %" PRIu64
	    "\n", m.seq, m.created, m.expires);
	printf("payload bytes: %" PRIu64 "\nchunk size: %u\nchunks: %u\n",
	    m.payload_size, m.chunk_size, m.chunk_count);
	printf("signature algorithm: %s\n", alg_name(m.sig_alg));
	print_hex("signing key id: ", m.signing_key_id, KMSB_KEY_ID_LEN);
	printf("recipients: %u\n", m.recipient_count);
	for (i = 0; i < m.recipient_count; i++) {
		kmsb_manifest_recipient(&m, i, &rc);
		print_hex("  recipient key id: ", rc.key_id, KMSB_KEY_ID_LEN);
	}
	if (read_n(f, len2, 2) != 0 || (n = (size_t)len2[0] << 8 | len2[1]) >
	    KMSB_SIG_MAX || read_n(f, sig, n) != 0 || read_n(f, len2, 2) != 0 ||
	    (n = (size_t)len2[0] << 8 | len2[1]) > sizeof(st_buf) ||
	    read_n(f, st_buf, n) != 0 ||
	    kmsb_statement_parse(st_buf, n, &st) != KMSB_OK) {
		printf("statement: missing or malformed\n");
		goto out;
	}
	printf("statement seq: %" PRIu64 "\nstatement expires: %" PRIu64
	    "\nstatement app: %.*s\nstatement root algorithm: %s\n",
	    st.seq, st.expires, st.app_id_len, st.app_id,
	    alg_name(st.root_alg));
	for (i = 0; i < st.key_count; i++) {
		uint8_t id[KMSB_KEY_ID_LEN];

		if (kmsb_key_id(st.keys[i].pub.alg, st.keys[i].pub.key,
		    st.keys[i].pub.len, id) != 0)
			goto out;
		printf("  signing key %s not after %" PRIu64 ", ",
		    alg_name(st.keys[i].pub.alg), st.keys[i].not_after);
		print_hex("id ", id, sizeof(id));
	}
	r = 0;
	goto out;
 bad:
	fprintf(stderr, "kmsb: %s: not a kms bundle (bad or truncated "
	    "manifest)\n", argv[1]);
 out:
	free(buf);
	if (f != stdin)
		fclose(f);
	return r;
}

int
main(int argc, char **argv)
{
	if (argc < 2)
		return die_usage(NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "open") == 0)
		return cmd_open(argc - 1, argv + 1, 1);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_open(argc - 1, argv + 1, 0);
	if (strcmp(argv[1], "inspect") == 0)
		return cmd_inspect(argc - 1, argv + 1);
	return die_usage("unknown command");
}
