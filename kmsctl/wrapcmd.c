/*
 * wrapcmd.c: `kmsctl wrap`, `unwrap` and `datakey`: envelope encryption
 * with an AES_256_KWP key that never leaves the HSM.
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
	if ((text = kmsctl_b64(p, len)) == NULL)
		return KMSCTL_EXIT_IO;
	strcat(text, "\n");
	r = write_out(path, text, strlen(text), secret);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	return r;
}

/* wrap, unwrap and datakey share their options. */
int
wrapping_cmd(struct ctx *x, int argc, char **argv)
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
	const char *cmd = argv[0];
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
		return die_usage("one key NAME, please");
	if (strcmp(cmd, "datakey") != 0 && (length != 0 || wout != NULL))
		return die_usage("--length and --wrapped-out are datakey's");
	if (strcmp(cmd, "datakey") == 0 && (in != NULL || base64))
		return die_usage("datakey reads no input");
	/*
	 * A data key whose wrapped form is thrown away cannot be unwrapped
	 * again: ask where it goes (--json without -o prints both).
	 */
	if (strcmp(cmd, "datakey") == 0 && wout == NULL &&
	    !(x->json && outpath == NULL))
		return die_usage("datakey needs --wrapped-out FILE for the "
		    "wrapped key (or --json without -o to print both)");
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
			text = kmsctl_b64(w->wrapped.data, w->wrapped.len);
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
			char *p64 = kmsctl_b64(d->plaintext.data, d->plaintext.len);

			text = kmsctl_b64(d->wrapped.data, d->wrapped.len);
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
