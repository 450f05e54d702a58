/*
 * signcmd.c: `kmsctl sign` and `kmsctl verify`: a message (sent as it is
 * up to the server's limit, hashed here beyond it) or a digest.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "algo.h"
#include "kmsctl.h"
#include "kmserr.h"
#include "secret.h"

#include "kms/v1/kms.pb-c.h"

/*
 * Fills digest or data for a Sign or Verify request: --digest HEX as is;
 * an input of at most KMSCTL_DATA_MAX bytes (the server's default limit) as data,
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
	    (r = read_prefix(f, in, KMSCTL_DATA_MAX, &buf, &len)) != 0)
		goto out;
	if (len <= KMSCTL_DATA_MAX) {
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
		    in_name(in), KMSCTL_DATA_MAX, alg ? alg->name : "this key");
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

int
sign_cmd(struct ctx *x, int argc, char **argv)
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
		text = kmsctl_b64(s->signature.data, s->signature.len);
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
				text = kmsctl_b64(s->signature.data, s->signature.len);
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

int
verify_cmd(struct ctx *x, int argc, char **argv)
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
