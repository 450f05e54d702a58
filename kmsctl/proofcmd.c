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
