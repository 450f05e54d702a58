/*
 * proofcmd.c: `kmsctl audit prove SEQ` and `kmsctl audit consistency OLD
 * NEW`: fetch an RFC 9162 proof from kmsd and check it here, against a
 * C2SP checkpoint signed by the audit key (docs/audit.md).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kmsctl.h"
#include "merkle.h"
#include "note.h"

#include "kms/v1/kms.pb-c.h"

/* The audit key: --pubkey PEM (pinned), else the one kmsd names. */
static int
audit_key(struct ctx *x, const char *path, uint8_t pub[NOTE_ED25519_LEN],
    char *chain, size_t chainlen)
{
	Kms__V1__ListAuditRecordsRequest req =
	    KMS__V1__LIST_AUDIT_RECORDS_REQUEST__INIT;
	Kms__V1__ListAuditRecordsResponse *l;
	ProtobufCMessage *resp = NULL;
	EVP_PKEY *pk = NULL;
	uint8_t *der = NULL;
	BIO *b = NULL;
	FILE *f = NULL;
	int len, r = KMSCTL_EXIT_IO;

	chain[0] = '\0';
	if (path != NULL) {
		if ((f = fopen(path, "r")) == NULL) {
			fprintf(stderr, "kmsctl: %s: cannot open\n", path);
			return KMSCTL_EXIT_IO;
		}
		pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
		fclose(f);
	} else {
		req.limit = 1;
		if ((r = kmsctl_call(x, "ListAuditRecords", &req.base,
		    &kms__v1__list_audit_records_response__descriptor,
		    &resp)) != 0)
			return r;
		l = (Kms__V1__ListAuditRecordsResponse *)resp;
		snprintf(chain, chainlen, "%s", l->chain);
		if ((b = BIO_new_mem_buf(l->audit_key_pem, -1)) != NULL)
			pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
		BIO_free(b);
		protobuf_c_message_free_unpacked(resp, NULL);
		fprintf(stderr, "kmsctl: the audit key comes from kmsd itself; "
		    "pin it with --pubkey\n");
	}
	r = KMSCTL_EXIT_IO;
	if (pk != NULL && (len = i2d_PUBKEY(pk, &der)) > 0 &&
	    note_ed25519_from_spki(der, (size_t)len, pub) == 0)
		r = 0;
	else
		fprintf(stderr, "kmsctl: %s: not an Ed25519 public key\n",
		    path != NULL ? path : "the audit key");
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return r;
}

/* The checkpoint of a signed note, signed by (kms/CHAIN, pub). */
static int
checked(const char *note, const uint8_t pub[NOTE_ED25519_LEN],
    struct checkpoint *cp)
{
	struct note *n;
	char name[NOTE_NAME_MAX + 1];
	int ok;

	if ((n = malloc(sizeof(*n))) == NULL)
		return -1;
	ok = note_parse(note, strlen(note), n) == 0 &&
	    checkpoint_parse(n->text, n->text_len, cp) == 0 &&
	    strncmp(cp->origin, "kms/", 4) == 0 &&
	    snprintf(name, sizeof(name), "%s", cp->origin) > 0 &&
	    note_verify(n, name, pub) == 0;
	free(n);
	return ok ? 0 : -1;
}

/* The proof's hashes, each exactly 32 bytes; NULL when they are not. */
static uint8_t (*
copy_hashes(const ProtobufCBinaryData *h, size_t n))[MERKLE_HASH_LEN]
{
	uint8_t (*out)[MERKLE_HASH_LEN];
	size_t i;

	if (n > MERKLE_PROOF_MAX || (out = calloc(n + 1, sizeof(*out))) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (h[i].len != MERKLE_HASH_LEN) {
			free(out);
			return NULL;
		}
		memcpy(out[i], h[i].data, MERKLE_HASH_LEN);
	}
	return out;
}

static int
proof_opts(int argc, char **argv, const char **pubkey)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	*pubkey = NULL;
	/* argv[0] is "audit"; options follow the subcommand. */
	optind = 2;
	while ((ch = getopt_long(argc, argv, "p:", opts, NULL)) != -1) {
		if (ch != 'p')
			return -1;
		*pubkey = optarg;
	}
	return 0;
}

static int
parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	*v = strtoull(s, &end, 10);
	return *end == '\0' ? 0 : -1;
}

int
audit_prove_cmd(struct ctx *x, int argc, char **argv)
{
	Kms__V1__GetAuditProofRequest req = KMS__V1__GET_AUDIT_PROOF_REQUEST__INIT;
	Kms__V1__AuditProof *p;
	ProtobufCMessage *resp = NULL;
	struct checkpoint cp;
	uint8_t pub[NOTE_ED25519_LEN], leaf[MERKLE_HASH_LEN];
	uint8_t (*proof)[MERKLE_HASH_LEN] = NULL;
	const char *pubkey;
	char chain[256];
	int r, ok = 0;

	if (proof_opts(argc, argv, &pubkey) != 0 || argc - optind != 1 ||
	    parse_u64(argv[optind], &req.seq) != 0 || req.seq == 0)
		return die_usage("audit prove [--pubkey PEM] SEQ");
	/* At once: a checkpoint now if none covers the record yet. */
	req.tree_size = 0;
	if ((r = audit_key(x, pubkey, pub, chain, sizeof(chain))) != 0)
		return r;
	r = kmsctl_call(x, "GetAuditProof", &req.base,
	    &kms__v1__audit_proof__descriptor, &resp);
	if (r != 0 && x->grpc_code == 9 /* FAILED_PRECONDITION */) {
		req.tree_size = UINT64_MAX;
		r = kmsctl_call(x, "GetAuditProof", &req.base,
		    &kms__v1__audit_proof__descriptor, &resp);
	}
	if (r != 0)
		return r;
	p = (Kms__V1__AuditProof *)resp;
	if ((proof = copy_hashes(p->inclusion, p->n_inclusion)) == NULL)
		goto out;
	merkle_leaf_hash(p->record, strlen(p->record), leaf);
	ok = checked(p->checkpoint, pub, &cp) == 0 &&
	    cp.size == p->tree_size &&
	    merkle_verify_inclusion(p->leaf_index, p->tree_size, leaf,
	    (const uint8_t (*)[MERKLE_HASH_LEN])proof, p->n_inclusion,
	    cp.root) == 0;
 out:
	if (x->json)
		print_json(json_pack("{s:b, s:I, s:I, s:I, s:s, s:s}", "ok", ok,
		    "seq", (json_int_t)req.seq,
		    "leaf_index", (json_int_t)p->leaf_index,
		    "tree_size", (json_int_t)p->tree_size,
		    "record", p->record, "checkpoint", p->checkpoint));
	else {
		printf("%s\n%s", p->record, p->checkpoint);
		printf("seq %" PRIu64 ": leaf %" PRIu64 " of %" PRIu64 ": "
		    "inclusion proof of %zu hashes %s\n", req.seq,
		    p->leaf_index, p->tree_size, p->n_inclusion,
		    ok ? "verifies against the signed checkpoint" :
		    "does NOT verify");
	}
	free(proof);
	protobuf_c_message_free_unpacked(resp, NULL);
	return ok ? KMSCTL_EXIT_OK : KMSCTL_EXIT_VERIFY;
}

int
audit_consistency_cmd(struct ctx *x, int argc, char **argv)
{
	Kms__V1__GetAuditConsistencyRequest req =
	    KMS__V1__GET_AUDIT_CONSISTENCY_REQUEST__INIT;
	Kms__V1__AuditConsistency *c;
	ProtobufCMessage *resp = NULL;
	struct checkpoint o, n;
	uint8_t pub[NOTE_ED25519_LEN];
	uint8_t (*proof)[MERKLE_HASH_LEN] = NULL;
	const char *pubkey;
	char chain[256];
	int r, ok = 0;

	if (proof_opts(argc, argv, &pubkey) != 0 || argc - optind != 2 ||
	    parse_u64(argv[optind], &req.old_size) != 0 ||
	    parse_u64(argv[optind + 1], &req.new_size) != 0)
		return die_usage("audit consistency [--pubkey PEM] OLD NEW");
	if ((r = audit_key(x, pubkey, pub, chain, sizeof(chain))) != 0)
		return r;
	if ((r = kmsctl_call(x, "GetAuditConsistency", &req.base,
	    &kms__v1__audit_consistency__descriptor, &resp)) != 0)
		return r;
	c = (Kms__V1__AuditConsistency *)resp;
	if ((proof = copy_hashes(c->proof, c->n_proof)) == NULL)
		goto out;
	ok = checked(c->old_checkpoint, pub, &o) == 0 &&
	    checked(c->new_checkpoint, pub, &n) == 0 &&
	    strcmp(o.origin, n.origin) == 0 && o.size == req.old_size &&
	    merkle_verify_consistency(o.size, n.size, o.root, n.root,
	    (const uint8_t (*)[MERKLE_HASH_LEN])proof, c->n_proof) == 0;
 out:
	printf("%s%s", c->old_checkpoint, c->new_checkpoint);
	printf("consistency proof of %zu hashes %s\n", c->n_proof, ok ?
	    "verifies: the new checkpoint extends the old one" :
	    "does NOT verify");
	free(proof);
	protobuf_c_message_free_unpacked(resp, NULL);
	return ok ? KMSCTL_EXIT_OK : KMSCTL_EXIT_VERIFY;
}

/* Reads a whole small file into a NUL-terminated buffer. */
static char *
slurp(const char *path)
{
	uint8_t *buf = NULL;
	size_t len;
	char *s;

	if (read_all(path, &buf, &len, NOTE_MAX) != 0)
		return NULL;
	if ((s = realloc(buf, len + 1)) == NULL) {
		free(buf);
		return NULL;
	}
	s[len] = '\0';
	return s;
}

/* Writes path atomically (temporary file, then rename). */
static int
save(const char *path, const char *text)
{
	char tmp[PATH_MAX + 8];
	FILE *f;
	int ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((f = fopen(tmp, "w")) == NULL)
		return -1;
	ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok = fclose(f) == 0 && ok && rename(tmp, path) == 0;
	return ok ? 0 : -1;
}

/* The note with a cosignature by the witness key appended. */
static char *
cosign(const char *note, EVP_PKEY *wk, const char *name)
{
	struct note *n;
	uint8_t pub[NOTE_ED25519_LEN], sig[NOTE_ED25519_SIG_LEN];
	size_t plen = sizeof(pub), slen = sizeof(sig);
	EVP_MD_CTX *c = NULL;
	char line[NOTE_NAME_MAX + 128], *out = NULL;
	int ok;

	if ((n = malloc(sizeof(*n))) == NULL)
		return NULL;
	ok = note_parse(note, strlen(note), n) == 0 &&
	    EVP_PKEY_get_raw_public_key(wk, pub, &plen) == 1 &&
	    (c = EVP_MD_CTX_new()) != NULL &&
	    EVP_DigestSignInit(c, NULL, NULL, NULL, wk) == 1 &&
	    EVP_DigestSign(c, sig, &slen, (const uint8_t *)n->text,
	    n->text_len) == 1 &&
	    note_sig_line(name, note_key_id(name, pub), sig, slen, line,
	    sizeof(line)) > 0 && asprintf(&out, "%s%s", note, line) > 0;
	EVP_MD_CTX_free(c);
	free(n);
	return ok ? out : NULL;
}

static int
witness_refuses(const char *what, const char *held, const char *seen)
{
	printf("witness REFUSES: %s\n--- the checkpoint this witness holds:\n"
	    "%s--- the checkpoint kmsd shows:\n%s", what, held,
	    seen != NULL ? seen : "(none)\n");
	return KMSCTL_EXIT_VERIFY;
}

/*
 * kmsctl audit witness --state DIR --key KEY --pubkey AUDIT_PUB:
 * takes kmsd's latest checkpoint, checks that it extends the one this
 * witness holds (consistency proof), cosigns it and keeps it; a fork or a
 * truncation is refused with both checkpoints, exit 1.
 */
int
audit_witness_cmd(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "witness-key", required_argument, NULL, 'k' },	/* alias */
		{ "pubkey", required_argument, NULL, 'p' },
		{ "name", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	Kms__V1__GetAuditConsistencyRequest req =
	    KMS__V1__GET_AUDIT_CONSISTENCY_REQUEST__INIT;
	Kms__V1__AuditConsistency *c = NULL;
	ProtobufCMessage *resp = NULL;
	struct checkpoint held, o, n;
	uint8_t pub[NOTE_ED25519_LEN], (*proof)[MERKLE_HASH_LEN] = NULL;
	const char *state = NULL, *keyf = NULL, *pubkey = NULL;
	const char *name = "kms-witness";
	char chain[256], dir[PATH_MAX], path[PATH_MAX + 64], *have = NULL;
	char *signed_note = NULL;
	EVP_PKEY *wk = NULL;
	FILE *f;
	int ch, r;

	/* argv[0] is "audit"; options follow "witness". */
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's': state = optarg; break;
		case 'k': keyf = optarg; break;
		case 'p': pubkey = optarg; break;
		case 'n': name = optarg; break;
		default:
			return die_usage("audit witness --state DIR --key KEY "
			    "--pubkey AUDIT_PUB");
		}
	}
	if (state == NULL || keyf == NULL || pubkey == NULL || optind != argc)
		return die_usage("audit witness --state DIR --key KEY "
		    "--pubkey AUDIT_PUB");
	if ((f = fopen(keyf, "r")) == NULL ||
	    (wk = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL ||
	    EVP_PKEY_id(wk) != EVP_PKEY_ED25519) {
		if (f != NULL)
			fclose(f);
		EVP_PKEY_free(wk);
		fprintf(stderr, "kmsctl: %s: not an Ed25519 private key\n",
		    keyf);
		return KMSCTL_EXIT_IO;
	}
	fclose(f);
	if ((r = audit_key(x, pubkey, pub, chain, sizeof(chain))) != 0)
		goto out;
	/* What this witness holds: the last checkpoint it cosigned. */
	snprintf(path, sizeof(path), "%s/latest", state);
	if ((have = slurp(path)) != NULL) {
		if (checked(have, pub, &held) != 0) {
			fprintf(stderr, "kmsctl: %s is not a checkpoint signed "
			    "by the audit key\n", path);
			r = KMSCTL_EXIT_IO;
			goto out;
		}
		req.old_size = held.size;
	}
	r = kmsctl_call(x, "GetAuditConsistency", &req.base,
	    &kms__v1__audit_consistency__descriptor, &resp);
	if (r != 0 && have != NULL && x->grpc_code == 5 /* NOT_FOUND */) {
		r = witness_refuses("kmsd holds no checkpoint of the size this "
		    "witness holds: the log was cut or forked", have, NULL);
		goto out;
	}
	if (r != 0)
		goto out;
	c = (Kms__V1__AuditConsistency *)resp;
	r = KMSCTL_EXIT_VERIFY;
	if (checked(c->new_checkpoint, pub, &n) != 0 ||
	    checked(c->old_checkpoint, pub, &o) != 0) {
		fprintf(stderr, "kmsctl: kmsd's checkpoints are not signed by "
		    "the audit key\n");
		goto out;
	}
	if (have != NULL) {
		if (strcmp(n.origin, held.origin) != 0) {
			r = witness_refuses("another log", have,
			    c->new_checkpoint);
			goto out;
		}
		if (n.size < held.size) {
			r = witness_refuses("truncated: kmsd's tree is smaller",
			    have, c->new_checkpoint);
			goto out;
		}
		if (memcmp(o.root, held.root, MERKLE_HASH_LEN) != 0 ||
		    (proof = copy_hashes(c->proof, c->n_proof)) == NULL ||
		    merkle_verify_consistency(held.size, n.size, held.root,
		    n.root, (const uint8_t (*)[MERKLE_HASH_LEN])proof,
		    c->n_proof) != 0) {
			r = witness_refuses("forked: kmsd's checkpoint does not "
			    "extend the one this witness holds", have,
			    c->new_checkpoint);
			goto out;
		}
	}
	if ((signed_note = cosign(c->new_checkpoint, wk, name)) == NULL) {
		fprintf(stderr, "kmsctl: cannot cosign\n");
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s/%020" PRIu64 ".note", state, n.size);
	if (save(dir, signed_note) != 0 || save(path, signed_note) != 0) {
		fprintf(stderr, "kmsctl: cannot write to %s\n", state);
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	printf("%s", signed_note);
	printf("witness cosigned %s at tree size %" PRIu64 "%s\n", n.origin,
	    n.size, have != NULL ? ", consistent with the last one" :
	    " (the first it holds)");
	r = KMSCTL_EXIT_OK;
 out:
	free(proof);
	free(have);
	free(signed_note);
	EVP_PKEY_free(wk);
	if (resp != NULL)
		protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}
