/*
 * keycmd.c: `kmsctl key ...` (the life of a key: create, get, list,
 * rotate, the state of a version, the rotation period) and `kmsctl pubkey`.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "algo.h"
#include "kmsctl.h"
#include "kmserr.h"

#include "kms/v1/kms.pb-c.h"

/* What `key get` shows of one certificate of a chain. */
struct cert_info {
	char subject[256];
	char issuer[256];
	char not_after[32];
};

/*
 * Calls fn for each certificate of the PEM chain, leaf first.  A chain
 * that does not parse ends early: kmsd checked it when it was attached.
 */
static void
chain_each(const char *pem, void (*fn)(const struct cert_info *, void *),
    void *arg)
{
	const ASN1_TIME *t;
	struct cert_info ci;
	struct tm tm;
	BIO *bio;
	X509 *c;

	if (*pem == '\0' || (bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return;
	while ((c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		X509_NAME_oneline(X509_get_subject_name(c), ci.subject,
		    sizeof(ci.subject));
		X509_NAME_oneline(X509_get_issuer_name(c), ci.issuer,
		    sizeof(ci.issuer));
		t = X509_get0_notAfter(c);
		if (ASN1_TIME_to_tm(t, &tm) != 1 ||
		    strftime(ci.not_after, sizeof(ci.not_after),
		    "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
			snprintf(ci.not_after, sizeof(ci.not_after), "?");
		fn(&ci, arg);
		X509_free(c);
	}
	ERR_clear_error();	/* the end of the chain */
	BIO_free(bio);
}

static void
cert_json(const struct cert_info *ci, void *arg)
{
	json_array_append_new((json_t *)arg, json_pack("{s:s, s:s, s:s}",
	    "subject", ci->subject, "issuer", ci->issuer, "not_after",
	    ci->not_after));
}

static void
cert_print(const struct cert_info *ci, void *arg)
{
	(void)arg;
	printf("    cert %s (issuer %s, until %s)\n", ci->subject,
	    ci->issuer, ci->not_after);
}

static json_t *
version_json(const Kms__V1__KeyVersion *v)
{
	json_t *o, *certs;
	char ts[32];

	kmsctl_fmt_time(v->create_time, ts, sizeof(ts));
	o = json_pack("{s:i, s:s, s:s}", "version", (int)v->version,
	    "state", kms_state_name(v->state), "create_time", ts);
	if (o != NULL && v->destroy_time != 0) {
		kmsctl_fmt_time(v->destroy_time, ts, sizeof(ts));
		json_object_set_new(o, "destroy_time", json_string(ts));
	}
	if (o != NULL && v->audit_seq != 0)
		json_object_set_new(o, "audit_seq",
		    json_integer((json_int_t)v->audit_seq));
	/* The chain as attached, and what its certificates say. */
	if (o != NULL && *v->cert_chain_pem != '\0' &&
	    (certs = json_array()) != NULL) {
		chain_each(v->cert_chain_pem, cert_json, certs);
		json_object_set_new(o, "certificates", certs);
		json_object_set_new(o, "cert_chain_pem",
		    json_string(v->cert_chain_pem));
	}
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
		kmsctl_fmt_time(k->next_rotation_time, ts, sizeof(ts));
		json_object_set_new(o, "next_rotation_time", json_string(ts));
	}
	if (o != NULL && k->audit_seq != 0)
		json_object_set_new(o, "audit_seq",
		    json_integer((json_int_t)k->audit_seq));
	return o;
}

/* "  N STATE CREATED [destroyed|destroy_time T]" */
static void
version_print(const Kms__V1__KeyVersion *v)
{
	char ts[32];

	kmsctl_fmt_time(v->create_time, ts, sizeof(ts));
	printf("  %u %s %s", v->version, kms_state_name(v->state), ts);
	if (v->destroy_time != 0) {
		kmsctl_fmt_time(v->destroy_time, ts, sizeof(ts));
		printf(" %s %s", v->state ==
		    KMS__V1__KEY_VERSION_STATE__DESTROYED ?
		    "destroyed" : "destroy_time", ts);
	}
	printf("\n");
	chain_each(v->cert_chain_pem, cert_print, NULL);
}

static void
key_print(const Kms__V1__Key *k)
{
	char ts[32];
	size_t i;

	printf("name: %s\nalgorithm: %s\nprimary_version: %u\n", k->name,
	    kms_alg_name(k->algorithm), k->primary_version);
	if (k->rotation_period_seconds > 0) {
		kmsctl_fmt_time(k->next_rotation_time, ts, sizeof(ts));
		printf("rotation_period_seconds: %" PRId64 "\n"
		    "next_rotation_time: %s\n",
		    (int64_t)k->rotation_period_seconds, ts);
	}
	printf("versions:\n");
	for (i = 0; i < k->n_versions; i++)
		version_print(k->versions[i]);
}

/*
 * `key list` in text: "NAME ALGORITHM vPRIMARY [next_rotation T]", then
 * each version as in `key get`, indented.
 */
static void
key_list_print(const Kms__V1__ListKeysResponse *l)
{
	const Kms__V1__Key *k;
	char ts[32];
	size_t i, j;

	for (i = 0; i < l->n_keys; i++) {
		k = l->keys[i];
		printf("%s %s v%u", k->name, kms_alg_name(k->algorithm),
		    k->primary_version);
		if (k->rotation_period_seconds > 0) {
			kmsctl_fmt_time(k->next_rotation_time, ts, sizeof(ts));
			printf(" next_rotation %s", ts);
		}
		printf("\n");
		for (j = 0; j < k->n_versions; j++)
			version_print(k->versions[j]);
	}
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

int
key_cmd(struct ctx *x, int argc, char **argv)
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
			key_list_print(l);
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

int
pubkey_cmd(struct ctx *x, int argc, char **argv)
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


/* The largest certificate chain sent (kmsd keeps at most 64 KiB). */
#define CHAIN_FILE_MAX (64 * 1024)

/*
 * Attaches the PEM chain text to version v of name (0: the primary one)
 * and says so.  A kmsctl exit code.
 */
int
key_cert_attach(struct ctx *x, const char *name, uint32_t v, char *text)
{
	Kms__V1__SetCertificateChainRequest req =
	    KMS__V1__SET_CERTIFICATE_CHAIN_REQUEST__INIT;
	Kms__V1__KeyVersion *kv;
	ProtobufCMessage *resp = NULL;
	int r;

	req.name = (char *)name;
	req.version = v;
	req.cert_chain_pem = text;
	if ((r = kmsctl_call(x, "SetCertificateChain", &req.base,
	    &kms__v1__key_version__descriptor, &resp)) != 0)
		return r;
	kv = (Kms__V1__KeyVersion *)resp;
	if (x->json)
		r = print_json(version_json(kv));
	else
		printf("%s version %u: certificate chain %s\n", name,
		    kv->version, *kv->cert_chain_pem != '\0' ? "set" :
		    "removed");
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

/*
 * key cert set NAME [--version N] FILE, or key cert self-sign
 * (certcmd.c).
 */
int
key_cert_cmd(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "version", required_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	static const char usage[] = "key cert set NAME [--version N] FILE | "
	    "key cert self-sign NAME ...";
	uint32_t version = 0;
	uint8_t *pem = NULL;
	char *text;
	size_t len;
	int ch, r;

	if (argc >= 3 && strcmp(argv[2], "self-sign") == 0)
		return key_cert_self_sign(x, argc, argv);
	if (argc < 3 || strcmp(argv[2], "set") != 0)
		return die_usage(usage);
	optind = 3;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'v' || parse_u32(optarg, &version) != 0 ||
		    version == 0)
			return die_usage(usage);
	}
	if (optind != argc - 2)
		return die_usage(usage);
	if ((r = read_all(argv[optind + 1], &pem, &len, CHAIN_FILE_MAX)) != 0)
		return r;
	/* Text: the PEM is sent as a string. */
	if (memchr(pem, '\0', len) != NULL ||
	    (text = malloc(len + 1)) == NULL) {
		free(pem);
		return die_usage("key cert set: FILE is not PEM text");
	}
	memcpy(text, pem, len);
	text[len] = '\0';
	free(pem);
	r = key_cert_attach(x, argv[optind], version, text);
	free(text);
	return r;
}
