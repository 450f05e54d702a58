/*
 * auditread.c: the audit log verifier and pager (see auditread.h).
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "algo.h"
#include "auditread.h"
#include "kmserr.h"
#include "merkle.h"
#include "note.h"
#include "pubkey.h"

#define SEG_DIGITS 20
#define SEG_SUFFIX ".jsonl"
#define MAX_KEYS 64
/* Records a checkpoint may leave behind it that the verifier keeps. */
#define MAX_LAG ((size_t)1 << 22)

struct audit_key {
	char fpr[AUDIT_HASH_HEX + 1];
	uint8_t *der;
	size_t len;
};

struct audit_keyset {
	struct audit_key keys[MAX_KEYS];
	size_t n;
};

void
audit_hex(const uint8_t *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

int
audit_checkpoint_message(const char *chain, uint64_t seq, const char *prev,
    unsigned int every, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "kms-audit-checkpoint-v1\nchain=%s\nseq=%"
	    PRIu64 "\nprev=%s\nevery=%u\n", chain, seq, prev, every);
	if (n < 0 || (size_t)n >= len)
		return -1;
	return n;
}

struct audit_keyset *
audit_keyset_new(void)
{
	return calloc(1, sizeof(struct audit_keyset));
}

void
audit_keyset_free(struct audit_keyset *ks)
{
	size_t i;

	if (ks == NULL)
		return;
	for (i = 0; i < ks->n; i++)
		free(ks->keys[i].der);
	free(ks);
}

int
audit_keyset_add_der(struct audit_keyset *ks, const uint8_t *der, size_t len,
    char *fpr)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	char hex[AUDIT_HASH_HEX + 1];
	size_t i;

	SHA256(der, len, md);
	audit_hex(md, sizeof(md), hex);
	if (fpr != NULL)
		memcpy(fpr, hex, sizeof(hex));
	for (i = 0; i < ks->n; i++)
		if (strcmp(ks->keys[i].fpr, hex) == 0)
			return 0;
	if (ks->n == MAX_KEYS)
		return KMS_ERR_RESOURCE_EXHAUSTED;
	if ((ks->keys[ks->n].der = malloc(len)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(ks->keys[ks->n].der, der, len);
	ks->keys[ks->n].len = len;
	memcpy(ks->keys[ks->n].fpr, hex, sizeof(hex));
	ks->n++;
	return 0;
}

int
audit_keyset_add_pem(struct audit_keyset *ks, const char *path,
    struct kms_status *st)
{
	EVP_PKEY *pk = NULL;
	uint8_t *der = NULL;
	FILE *f;
	int len, n = 0, r;

	if ((f = fopen(path, "r")) == NULL)
		return kms_status_set(st, KMS_ERR_IO, "%s: %s", path,
		    strerror(errno));
	while ((pk = PEM_read_PUBKEY(f, NULL, NULL, NULL)) != NULL) {
		der = NULL;
		if ((len = i2d_PUBKEY(pk, &der)) <= 0) {
			EVP_PKEY_free(pk);
			fclose(f);
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "%s: cannot encode a public key", path);
		}
		r = audit_keyset_add_der(ks, der, (size_t)len, NULL);
		OPENSSL_free(der);
		EVP_PKEY_free(pk);
		if (r != 0) {
			fclose(f);
			return kms_status_set(st, r, "%s: too many keys", path);
		}
		n++;
	}
	fclose(f);
	if (n == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "%s: no PEM public key in it", path);
	return 0;
}

static const struct audit_key *
keyset_find(const struct audit_keyset *ks, const char *fpr)
{
	size_t i;

	if (ks == NULL)
		return NULL;
	for (i = 0; i < ks->n; i++)
		if (strcmp(ks->keys[i].fpr, fpr) == 0)
			return &ks->keys[i];
	return NULL;
}

void
auditv_chain_init(struct auditv_chain *c, const char *chain,
    const struct audit_keyset *keys)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->chain, sizeof(c->chain), "%s", chain);
	c->keys = keys;
	c->next_seq = 1;
	memset(c->prev, '0', AUDIT_HASH_HEX);
	c->prev[AUDIT_HASH_HEX] = '\0';
	merkle_edge_init(&c->edge);
	merkle_edge_init(&c->cp_edge);
}

void
auditv_chain_free(struct auditv_chain *c)
{
	free(c->lag);
	c->lag = NULL;
	c->nlag = c->caplag = 0;
}

static void
note_key_used(struct auditv_chain *c, const char *fpr)
{
	unsigned int i;

	/* Remember which keys signed (the first 4 distinct ones). */
	for (i = 0; i < c->nkeys_used; i++)
		if (strncmp(c->keys_used[i], fpr, 16) == 0)
			return;
	if (c->nkeys_used < 4) {
		snprintf(c->keys_used[c->nkeys_used], 17, "%.16s", fpr);
		c->nkeys_used++;
	}
}

int
audit_check_note(const struct audit_keyset *ks, const char *chain,
    const char *text, size_t len, struct checkpoint *cp, char *fpr,
    char *why, size_t whylen)
{
	struct note n;
	uint8_t pub[NOTE_ED25519_LEN];
	char origin[NOTE_NAME_MAX + 1];
	size_t i;
	int v, bad = 0;

	if (note_parse(text, len, &n) != 0 ||
	    checkpoint_parse(n.text, n.text_len, cp) != 0) {
		snprintf(why, whylen, "checkpoint note is malformed");
		return -1;
	}
	snprintf(origin, sizeof(origin), "kms/%s", chain);
	if (strcmp(cp->origin, origin) != 0) {
		snprintf(why, whylen, "checkpoint of origin \"%.64s\" where "
		    "\"%.64s\" is due", cp->origin, origin);
		return -1;
	}
	for (i = 0; ks != NULL && i < ks->n; i++) {
		if (note_ed25519_from_spki(ks->keys[i].der, ks->keys[i].len,
		    pub) != 0)
			continue;
		if ((v = note_verify(&n, origin, pub)) == 0) {
			memcpy(fpr, ks->keys[i].fpr, AUDIT_HASH_HEX + 1);
			return 0;
		}
		if (v == -2)
			bad = 1;
	}
	snprintf(why, whylen, bad ? "checkpoint signature does not verify" :
	    "checkpoint signed by unknown audit key (no trusted Ed25519 key "
	    "named %.64s signed it)", origin);
	return -1;
}

/* A signed-note checkpoint: the signature, then the tree it names. */
static int
check_note_record(struct auditv_chain *c, json_t *rec, uint64_t seq,
    char *why, size_t whylen)
{
	struct checkpoint cp;
	struct merkle_edge e;
	uint8_t root[MERKLE_HASH_LEN];
	char fpr[AUDIT_HASH_HEX + 1], hex[MERKLE_HASH_LEN * 2 + 1];
	json_t *note = json_object_get(json_object_get(rec, "checkpoint"),
	    "note");
	size_t i, k;

	if (!json_is_string(note)) {
		snprintf(why, whylen, "checkpoint record without a note");
		return -1;
	}
	if (audit_check_note(c->keys, c->chain, json_string_value(note),
	    json_string_length(note), &cp, fpr, why, whylen) != 0)
		return -1;
	if (cp.size < c->cp_edge.size || cp.size > c->edge.size) {
		snprintf(why, whylen, "checkpoint of tree size %" PRIu64
		    " where %" PRIu64 "..%" PRIu64 " is due", cp.size,
		    c->cp_edge.size, c->edge.size);
		return -1;
	}
	e = c->cp_edge;
	k = (size_t)(cp.size - c->cp_edge.size);
	for (i = 0; i < k; i++)
		(void)merkle_edge_append(&e, c->lag[i], NULL, NULL);
	merkle_edge_root(&e, root);
	if (memcmp(root, cp.root, MERKLE_HASH_LEN) != 0) {
		audit_hex(root, sizeof(root), hex);
		snprintf(why, whylen, "checkpoint root of tree size %" PRIu64
		    " does not match the records (they hash to %.16s...): "
		    "records were changed, removed or inserted", cp.size, hex);
		return -1;
	}
	c->cp_edge = e;
	if (k > 0) {
		memmove(c->lag, c->lag + k, (c->nlag - k) * MERKLE_HASH_LEN);
		c->nlag -= k;
	}
	c->notes = 1;
	c->cp_every = 0;
	/* Records after the tree it names and before it are not covered. */
	c->since_cp = c->edge.size - cp.size;
	note_key_used(c, fpr);
	return 0;
}

/* Adds an accepted line to the tree. */
static int
add_leaf(struct auditv_chain *c, const char *line, size_t len, char *why,
    size_t whylen)
{
	uint8_t (*n)[MERKLE_HASH_LEN];
	size_t ncap;

	if (c->nlag == c->caplag) {
		ncap = c->caplag == 0 ? 1024 : c->caplag * 2;
		if (ncap > MAX_LAG || (n = realloc(c->lag,
		    ncap * MERKLE_HASH_LEN)) == NULL) {
			snprintf(why, whylen, "more than %zu records after the "
			    "last checkpoint's tree: too many to check",
			    c->caplag);
			return -1;
		}
		c->lag = n;
		c->caplag = ncap;
	}
	merkle_leaf_hash(line, len, c->lag[c->nlag]);
	if (merkle_edge_append(&c->edge, c->lag[c->nlag], NULL, NULL) != 0) {
		snprintf(why, whylen, "tree full");
		return -1;
	}
	c->nlag++;
	return 0;
}

static const char *
get_str(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int
b64_decode(const char *in, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t inlen = strlen(in);
	int n;

	/* Base64 with padding only; EVP_DecodeBlock counts the pad bytes. */
	if (inlen == 0 || inlen % 4 != 0 || inlen / 4 * 3 > cap)
		return -1;
	if ((n = EVP_DecodeBlock(out, (const unsigned char *)in,
	    (int)inlen)) < 0)
		return -1;
	if (in[inlen - 1] == '=')
		n--;
	if (in[inlen - 2] == '=')
		n--;
	*outlen = (size_t)n;
	return 0;
}

/* Checks the signature of a checkpoint record. */
static int
check_checkpoint(struct auditv_chain *c, json_t *rec, uint64_t seq,
    const char *prev, char *why, size_t whylen)
{
	const struct kms_alg_info *alg;
	const struct audit_key *k;
	json_t *cp, *every;
	const char *fpr, *algname, *sig64;
	uint8_t sig[512], md[SHA256_DIGEST_LENGTH];
	char msg[512];
	size_t siglen;
	int n, valid = 0;

	cp = json_object_get(rec, "checkpoint");
	every = json_object_get(cp, "every");
	if (!json_is_object(cp) || (fpr = get_str(cp, "key")) == NULL ||
	    (algname = get_str(cp, "alg")) == NULL ||
	    (sig64 = get_str(cp, "sig")) == NULL || !json_is_integer(every) ||
	    json_integer_value(every) < 1 ||
	    json_integer_value(every) > 10000000) {
		snprintf(why, whylen, "checkpoint record without a complete "
		    "checkpoint member");
		return -1;
	}
	if ((alg = kms_alg_by_name(algname)) == NULL ||
	    alg->alg != KMS_ALG_EC_P256_SHA256) {
		snprintf(why, whylen, "checkpoint signed with unsupported "
		    "algorithm \"%.64s\"", algname);
		return -1;
	}
	if ((k = keyset_find(c->keys, fpr)) == NULL) {
		snprintf(why, whylen, "checkpoint signed by unknown audit key "
		    "%.64s", fpr);
		return -1;
	}
	if (b64_decode(sig64, sig, sizeof(sig), &siglen) != 0) {
		snprintf(why, whylen, "checkpoint signature is not base64");
		return -1;
	}
	n = audit_checkpoint_message(c->chain, seq, prev,
	    (unsigned int)json_integer_value(every), msg, sizeof(msg));
	if (n < 0) {
		snprintf(why, whylen, "checkpoint fields too long");
		return -1;
	}
	SHA256((const unsigned char *)msg, (size_t)n, md);
	if (pubkey_verify(alg, k->der, k->len, md, sizeof(md), sig, siglen,
	    &valid) != 0 || !valid) {
		snprintf(why, whylen, "checkpoint signature does not verify "
		    "with audit key %.16s", fpr);
		return -1;
	}
	c->cp_every = (unsigned int)json_integer_value(every);
	note_key_used(c, fpr);
	return 0;
}

int
auditv_chain_line(struct auditv_chain *c, const char *line, size_t len,
    char *why, size_t whylen)
{
	json_t *rec = NULL, *jseq;
	json_error_t jerr;
	const char *prev, *chain, *rpc, *ident;
	uint8_t md[SHA256_DIGEST_LENGTH];
	uint64_t seq;
	int64_t t;
	int r = -1;

	c->line_seq = 0;
	if (len > AUDIT_LINE_MAX) {
		snprintf(why, whylen, "line longer than %d bytes",
		    AUDIT_LINE_MAX);
		goto out;
	}
	if ((rec = json_loadb(line, len, JSON_REJECT_DUPLICATES,
	    &jerr)) == NULL || !json_is_object(rec)) {
		snprintf(why, whylen, "not a JSON object: %s",
		    rec == NULL ? jerr.text : "other JSON value");
		goto out;
	}
	jseq = json_object_get(rec, "seq");
	if (!json_is_integer(jseq) || json_integer_value(jseq) < 1) {
		snprintf(why, whylen, "no valid seq");
		goto out;
	}
	seq = (uint64_t)json_integer_value(jseq);
	c->line_seq = seq;
	if ((chain = get_str(rec, "chain")) == NULL ||
	    strcmp(chain, c->chain) != 0) {
		snprintf(why, whylen, "record of chain \"%.64s\" in chain "
		    "\"%.64s\"", chain == NULL ? "" : chain, c->chain);
		goto out;
	}
	if (c->records == 0 && c->start_seq > 1) {
		/* A chain started after another opens with saying so. */
		rpc = get_str(rec, "rpc");
		ident = get_str(rec, "identity");
		if (seq != c->start_seq || rpc == NULL || ident == NULL ||
		    strcmp(rpc, AUDIT_CHAIN_START_RPC) != 0 ||
		    strcmp(ident, AUDIT_SERVICE_IDENTITY) != 0) {
			snprintf(why, whylen, "the chain starts at seq %" PRIu64
			    " without an " AUDIT_CHAIN_START_RPC " record: "
			    "earlier records were removed", c->start_seq);
			goto out;
		}
		c->next_seq = seq;
	}
	if (seq != c->next_seq) {
		if (seq < c->next_seq)
			snprintf(why, whylen, "seq %" PRIu64 " where %" PRIu64
			    " was due: a record repeated or moved back",
			    seq, c->next_seq);
		else
			snprintf(why, whylen, "seq %" PRIu64 " where %" PRIu64
			    " was due: %" PRIu64 " record(s) missing", seq,
			    c->next_seq, seq - c->next_seq);
		goto out;
	}
	if ((prev = get_str(rec, "prev")) == NULL
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	    || strcmp(prev, c->prev) != 0
#endif
	    ) {
		snprintf(why, whylen, "prev does not match the hash of the "
		    "previous record: the previous record was changed, or "
		    "records were removed, inserted or reordered");
		goto out;
	}
	if (get_str(rec, "time") == NULL ||
	    audit_parse_time(get_str(rec, "time"), &t) != 0 ||
	    (rpc = get_str(rec, "rpc")) == NULL ||
	    get_str(rec, "result") == NULL) {
		snprintf(why, whylen, "time, rpc or result missing or "
		    "malformed");
		goto out;
	}
	ident = get_str(rec, "identity");
	if (strcmp(rpc, AUDIT_CHECKPOINT_RPC) == 0 && ident != NULL &&
	    strcmp(ident, AUDIT_SERVICE_IDENTITY) == 0) {
		if (json_object_get(json_object_get(rec, "checkpoint"),
		    "note") != NULL) {
			if (check_note_record(c, rec, seq, why, whylen) != 0)
				goto out;
		} else {
			/* The first kind of checkpoint ends with the second. */
			if (c->notes) {
				snprintf(why, whylen, "a checkpoint of the "
				    "first kind after signed-note checkpoints");
				goto out;
			}
			if (check_checkpoint(c, rec, seq, prev, why,
			    whylen) != 0)
				goto out;
			c->since_cp = 0;
		}
		c->last_cp_seq = seq;
		c->checkpoints++;
	} else {
		c->since_cp++;
		/*
		 * A checkpoint promises the next one within `every`
		 * records; before the first one only the start-up records
		 * may stand (kmsd signs a checkpoint as it starts).
		 */
		if ((c->last_cp_seq != 0 && !c->notes &&
		    c->since_cp > c->cp_every) ||
		    (c->last_cp_seq == 0 && c->since_cp > 1)) {
			snprintf(why, whylen, "a checkpoint is missing: %"
			    PRIu64 " records follow %s", c->since_cp,
			    c->last_cp_seq == 0 ? "the start of the chain "
			    "without one" : "the last checkpoint, more than "
			    "it allowed");
			goto out;
		}
	}
	if (add_leaf(c, line, len, why, whylen) != 0)
		goto out;
	SHA256((const unsigned char *)line, len, md);
	audit_hex(md, sizeof(md), c->prev);
	c->next_seq = seq + 1;
	c->records++;
	r = 0;
 out:
	json_decref(rec);
	return r;
}

/*
 * A line reader with bounded memory: lines longer than AUDIT_LINE_MAX are
 * reported, not buffered.
 */
struct lreader {
	int fd;
	size_t len;		/* bytes in buf */
	size_t off;		/* start of the unread part */
	int eof;
	char buf[AUDIT_LINE_MAX + 2];
};

/*
 * Returns 1 with a line (without '\n', NUL-terminated in place), 0 at the
 * end (*torn set when bytes without a newline were left), -1 on a read
 * error, -2 on an over-long line.
 */
static int
lreader_next(struct lreader *lr, char **line, size_t *len, int *torn)
{
	char *nl;
	ssize_t n;

	*torn = 0;
	for (;;) {
		nl = memchr(lr->buf + lr->off, '\n', lr->len - lr->off);
		if (nl != NULL) {
			*nl = '\0';
			*line = lr->buf + lr->off;
			*len = (size_t)(nl - *line);
			lr->off = (size_t)(nl - lr->buf) + 1;
			return 1;
		}
		if (lr->off > 0) {
			memmove(lr->buf, lr->buf + lr->off, lr->len - lr->off);
			lr->len -= lr->off;
			lr->off = 0;
		}
		if (lr->eof) {
			*torn = lr->len > 0;
			return 0;
		}
		if (lr->len >= sizeof(lr->buf) - 1)
			return -2;
		n = read(lr->fd, lr->buf + lr->len,
		    sizeof(lr->buf) - 1 - lr->len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			lr->eof = 1;
		lr->len += (size_t)n;
	}
}

static int
is_segment(const char *name)
{
	size_t i;

	for (i = 0; i < SEG_DIGITS; i++)
		if (name[i] < '0' || name[i] > '9')
			return 0;
	return strcmp(name + SEG_DIGITS, SEG_SUFFIX) == 0;
}

int
audit_segment_filter(const struct dirent *d)
{
	return is_segment(d->d_name);
}

static int
jsonl_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return n > strlen(SEG_SUFFIX) &&
	    strcmp(d->d_name + n - strlen(SEG_SUFFIX), SEG_SUFFIX) == 0;
}

static int
key_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return strncmp(d->d_name, AUDIT_KEY_PREFIX,
	    strlen(AUDIT_KEY_PREFIX)) == 0 && n > 4 &&
	    strcmp(d->d_name + n - 4, ".pem") == 0;
}

static void
free_names(struct dirent **names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static void
fail_at(struct audit_verify_result *res, const char *file,
    unsigned long line, uint64_t seq, const char *why)
{
	if (!res->ok)
		return;
	res->ok = 0;
	snprintf(res->file, sizeof(res->file), "%s", file);
	res->line = line;
	res->seq = seq;
	snprintf(res->why, sizeof(res->why), "%s", why);
}

static void
notef(void (*note)(const char *, void *), void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
notef(void (*note)(const char *, void *), void *arg, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	note(buf, arg);
}

/* Verifies one chain directory; returns -1 only when it cannot be read. */
static int
verify_chain(const char *dir, const char *chain, const char *pubkey_pem,
    struct audit_verify_result *res, void (*note)(const char *, void *),
    void *arg, struct kms_status *st)
{
	struct dirent **segs = NULL, **all = NULL, **keys = NULL;
	struct audit_keyset *ks = NULL;
	struct auditv_chain c;
	struct lreader *lr = NULL;
	uint8_t rootbin[MERKLE_HASH_LEN];
	char path[8192], why[512];
	unsigned long lineno;
	uint64_t first;
	size_t len;
	char *line;
	int nseg = -1, nall = -1, nkeys = -1, i, rv, torn, r = -1;

	auditv_chain_init(&c, chain, NULL);
	if ((ks = audit_keyset_new()) == NULL ||
	    (lr = malloc(sizeof(*lr))) == NULL) {
		kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (pubkey_pem != NULL) {
		if (audit_keyset_add_pem(ks, pubkey_pem, st) != 0)
			goto out;
	} else {
		if ((nkeys = scandir(dir, &keys, key_filter, alphasort)) < 0) {
			kms_status_set(st, KMS_ERR_IO, "%s: %s", dir,
			    strerror(errno));
			goto out;
		}
		for (i = 0; i < nkeys; i++) {
			snprintf(path, sizeof(path), "%s/%s", dir,
			    keys[i]->d_name);
			if (audit_keyset_add_pem(ks, path, st) != 0)
				goto out;
		}
	}
	if ((nseg = scandir(dir, &segs, audit_segment_filter, alphasort)) < 0 ||
	    (nall = scandir(dir, &all, jsonl_filter, alphasort)) < 0) {
		kms_status_set(st, KMS_ERR_IO, "%s: %s", dir, strerror(errno));
		goto out;
	}
	res->chains++;
	r = 0;
	/* A segment renamed out of the pattern is a removed segment. */
	for (i = 0; i < nall; i++) {
		if (is_segment(all[i]->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, all[i]->d_name);
		fail_at(res, path, 0, 0, "not a segment name: segment files "
		    "are named by the 20-digit seq of their first record");
		goto out;
	}
	auditv_chain_init(&c, chain, ks);
	for (i = 0; i < nseg; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, segs[i]->d_name);
		first = strtoull(segs[i]->d_name, NULL, 10);
		if (i == 0 && first > 1) {
			c.start_seq = first;
			c.next_seq = first;
		}
		if (first != c.next_seq) {
			snprintf(why, sizeof(why), "segment starts at seq %"
			    PRIu64 " but seq %" PRIu64 " is due: %s", first,
			    c.next_seq, i == 0 ? "earlier segments are "
			    "missing" : "a segment is missing, renamed or "
			    "out of order");
			fail_at(res, path, 0, c.next_seq, why);
			goto out;
		}
		memset(lr, 0, offsetof(struct lreader, buf));
		if ((lr->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
			kms_status_set(st, KMS_ERR_IO, "%s: %s", path,
			    strerror(errno));
			r = -1;
			goto out;
		}
		lineno = 0;
		while ((rv = lreader_next(lr, &line, &len, &torn)) == 1) {
			lineno++;
			if (auditv_chain_line(&c, line, len, why,
			    sizeof(why)) != 0) {
				fail_at(res, path, lineno, c.line_seq != 0 ?
				    c.line_seq : c.next_seq, why);
				close(lr->fd);
				goto out;
			}
		}
		close(lr->fd);
		if (rv == -1) {
			kms_status_set(st, KMS_ERR_IO, "%s: read error", path);
			r = -1;
			goto out;
		}
		if (rv == -2) {
			fail_at(res, path, lineno + 1, 0, "line too long");
			goto out;
		}
		if (torn) {
			if (i != nseg - 1) {
				fail_at(res, path, lineno + 1, 0, "unfinished "
				    "record in a segment that is not the last");
				goto out;
			}
			res->warnings++;
			notef(note, arg, "%s: line %lu: an unfinished last "
			    "record (a write cut by a crash); kmsd cuts it and "
			    "records the repair when it starts", path,
			    lineno + 1);
		}
		if (lineno == 0 && i != nseg - 1) {
			fail_at(res, path, 0, 0, "empty segment before the "
			    "last one: its records were removed");
			goto out;
		}
	}
	res->records += c.records;
	res->checkpoints += c.checkpoints;
	res->unsigned_tail += c.since_cp;
	res->tree_size = c.edge.size;
	merkle_edge_root(&c.edge, rootbin);
	audit_hex(rootbin, sizeof(rootbin), res->root);
	notef(note, arg, "chain %s: %" PRIu64 " records, Merkle tree root %s; "
	    "%" PRIu64 " checkpoints, the last at seq %" PRIu64 ", %" PRIu64
	    " record(s) not covered by one; checkpoints signed by %u audit "
	    "key(s)%s%s%s%s%s%s%s%s", chain, c.records, res->root,
	    c.checkpoints, c.last_cp_seq,
	    c.since_cp, c.nkeys_used, c.nkeys_used > 0 ? ": " : "",
	    c.nkeys_used > 0 ? c.keys_used[0] : "",
	    c.nkeys_used > 1 ? ", " : "", c.nkeys_used > 1 ? c.keys_used[1] : "",
	    c.nkeys_used > 2 ? ", " : "", c.nkeys_used > 2 ? c.keys_used[2] : "",
	    c.nkeys_used > 3 ? ", " : "", c.nkeys_used > 3 ? c.keys_used[3] : "");
	if (c.nkeys_used > 1)
		notef(note, arg, "chain %s: WARNING: more than one audit key "
		    "signed its checkpoints; unless the token was replaced, pin "
		    "the real key with --pubkey", chain);
 out:
	if (segs != NULL)
		free_names(segs, nseg);
	if (all != NULL)
		free_names(all, nall);
	if (keys != NULL)
		free_names(keys, nkeys);
	auditv_chain_free(&c);
	audit_keyset_free(ks);
	free(lr);
	return r;
}

static int
has_segments(const char *dir)
{
	struct dirent **names = NULL;
	int n;

	if ((n = scandir(dir, &names, jsonl_filter, NULL)) < 0)
		return 0;
	free_names(names, n);
	return n > 0;
}

static int
subdir_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

int
audit_chain_dirs(const char *path, int segments_only,
    int (*cb)(const char *dir, const char *name, void *arg), void *arg,
    struct kms_status *st)
{
	struct dirent **names = NULL;
	struct stat sb;
	char sub[8192], *copy = NULL;
	const char *base;
	int i, n = -1, found = 0, r = 0;

	if (stat(path, &sb) == -1 || !S_ISDIR(sb.st_mode))
		return kms_status_set(st, KMS_ERR_IO, "%s: %s", path,
		    errno != 0 && stat(path, &sb) == -1 ? strerror(errno) :
		    "not a directory");
	/* A chain directory itself, or a root of chain directories. */
	if (has_segments(path)) {
		if ((copy = strdup(path)) == NULL)
			return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
			copy[strlen(copy) - 1] = '\0';
		base = strrchr(copy, '/') == NULL ? copy :
		    strrchr(copy, '/') + 1;
		r = cb(path, base, arg);
		free(copy);
		return r < 0 ? r : 0;
	}
	if ((n = scandir(path, &names, subdir_filter, alphasort)) < 0)
		return kms_status_set(st, KMS_ERR_IO, "%s: %s", path,
		    strerror(errno));
	for (i = 0; i < n && r == 0; i++) {
		if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path,
		    names[i]->d_name) >= sizeof(sub) || stat(sub, &sb) == -1 ||
		    !S_ISDIR(sb.st_mode) ||
		    (segments_only && !has_segments(sub)))
			continue;
		found++;
		r = cb(sub, names[i]->d_name, arg);
	}
	free_names(names, n);
	if (r < 0)
		return r;
	if (found == 0)
		return kms_status_set(st, KMS_ERR_NOT_FOUND, "%s: no audit "
		    "chain in it", path);
	return 0;
}

/* What audit_verify carries from chain to chain. */
struct verify_walk {
	const char *pubkey_pem;
	struct audit_verify_result *res;
	void (*note)(const char *, void *);
	void *arg;
	struct kms_status *st;
};

static int
verify_one(const char *dir, const char *name, void *arg)
{
	struct verify_walk *vw = arg;

	if (verify_chain(dir, name, vw->pubkey_pem, vw->res, vw->note,
	    vw->arg, vw->st) != 0)
		return vw->st->err != 0 ? vw->st->err : KMS_ERR_INTERNAL;
	return vw->res->ok ? 0 : 1;
}

int
audit_verify(const char *path, const char *pubkey_pem,
    struct audit_verify_result *res, void (*note)(const char *, void *),
    void *arg, struct kms_status *st)
{
	struct verify_walk vw = { pubkey_pem, res, note, arg, st };

	memset(res, 0, sizeof(*res));
	res->ok = 1;
	return audit_chain_dirs(path, 0, verify_one, &vw, st);
}

int
audit_parse_time(const char *s, int64_t *usec)
{
	struct tm tm;
	const char *p;
	time_t t;
	long frac = 0;
	int digits = 0;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || (p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			if (digits++ >= 6)
				return -1;
			frac = frac * 10 + (*p - '0');
		}
		if (digits == 0)
			return -1;
		for (; digits < 6; digits++)
			frac *= 10;
	}
	if (strcmp(p, "Z") != 0)
		return -1;
	if ((t = timegm(&tm)) == (time_t)-1)
		return -1;
	*usec = (int64_t)t * 1000000 + frac;
	return 0;
}

int
audit_segment_start(struct dirent **segs, int nseg, uint64_t after_seq)
{
	int i, start = 0;

	for (i = 0; i < nseg; i++)
		if (strtoull(segs[i]->d_name, NULL, 10) <= after_seq + 1)
			start = i;
	return start;
}

int
audit_scan(const char *dir,
    int (*cb)(const char *line, size_t len, void *arg), void *arg,
    struct kms_status *st)
{
	struct dirent **segs = NULL;
	struct lreader *lr = NULL;
	char path[8192], *line;
	size_t len;
	int nseg, i, rv, torn, r = 0;

	if ((nseg = scandir(dir, &segs, audit_segment_filter, alphasort)) < 0)
		return kms_status_set(st, KMS_ERR_AUDIT, "cannot read %s: %s",
		    dir, strerror(errno));
	if ((lr = malloc(sizeof(*lr))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < nseg && r == 0; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, segs[i]->d_name);
		memset(lr, 0, offsetof(struct lreader, buf));
		if ((lr->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
			r = kms_status_set(st, KMS_ERR_AUDIT, "cannot read %s: "
			    "%s", path, strerror(errno));
			goto out;
		}
		while ((rv = lreader_next(lr, &line, &len, &torn)) == 1 &&
		    (r = cb(line, len, arg)) == 0)
			;
		close(lr->fd);
		if (r == 0 && rv < 0)
			r = kms_status_set(st, KMS_ERR_AUDIT, "%s: %s", path,
			    rv == -2 ? "a line longer than the limit" :
			    "read error");
	}
 out:
	free(lr);
	free_names(segs, nseg);
	return r;
}

static int
match_str(const char *want, const char *have)
{
	if (want == NULL || *want == '\0')
		return 1;
	return have != NULL && strcmp(want, have) == 0;
}

int
audit_filter_bounds(const struct audit_filter *f, int64_t *from,
    int64_t *to, struct kms_status *st)
{
	*from = INT64_MIN;
	*to = INT64_MAX;
	if (f->time_from != NULL && *f->time_from != '\0' &&
	    audit_parse_time(f->time_from, from) != 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "time_from "
		    "is not an RFC 3339 UTC time like 2026-01-31T12:00:00Z");
	if (f->time_to != NULL && *f->time_to != '\0' &&
	    audit_parse_time(f->time_to, to) != 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "time_to "
		    "is not an RFC 3339 UTC time like 2026-01-31T12:00:00Z");
	return 0;
}

int
audit_filter_match(const struct audit_filter *f, int64_t from, int64_t to,
    const struct audit_record *rec)
{
	int64_t t;

	if (!match_str(f->identity, rec->identity) ||
	    !match_str(f->key, rec->key) ||
	    !match_str(f->rpc, rec->rpc) ||
	    !match_str(f->result, rec->result))
		return 0;
	if ((from != INT64_MIN || to != INT64_MAX) &&
	    (audit_parse_time(rec->time, &t) != 0 || t < from || t > to))
		return 0;
	return 1;
}

int
audit_record_parse(const char *line, size_t len, struct audit_record *rec,
    struct json_t **hold)
{
	json_t *o, *v;

	*hold = NULL;
	if ((o = json_loadb(line, len, 0, NULL)) == NULL)
		return -1;
	if (!json_is_integer(v = json_object_get(o, "seq"))) {
		json_decref(o);
		return -1;
	}
	memset(rec, 0, sizeof(*rec));
	rec->seq = (uint64_t)json_integer_value(v);
	rec->time = get_str(o, "time");
	rec->chain = get_str(o, "chain");
	rec->identity = get_str(o, "identity");
	rec->fingerprint = get_str(o, "fingerprint");
	rec->peer = get_str(o, "peer");
	rec->rpc = get_str(o, "rpc");
	rec->key = get_str(o, "key");
	rec->result = get_str(o, "result");
	rec->status = get_str(o, "status");
	rec->reason = get_str(o, "reason");
	rec->request_sha256 = get_str(o, "request_sha256");
	v = json_object_get(o, "version");
	rec->version = json_is_integer(v) ? (uint32_t)json_integer_value(v) : 0;
	rec->line = line;
	rec->len = len;
	*hold = o;
	return 0;
}

int
audit_list(const char *dir, uint64_t after_seq, size_t limit,
    size_t scan_max, const struct audit_filter *f,
    int (*cb)(const struct audit_record *, void *), void *arg,
    uint64_t *next_after, struct kms_status *st)
{
	struct dirent **segs = NULL;
	struct audit_record rec;
	struct lreader *lr = NULL;
	json_t *o = NULL;
	int64_t from, to;
	char path[8192];
	size_t len, emitted = 0, scanned = 0;
	char *line;
	int nseg, i, start, rv, torn, r = 0;

	*next_after = after_seq;
	if ((r = audit_filter_bounds(f, &from, &to, st)) != 0)
		return r;
	if ((nseg = scandir(dir, &segs, audit_segment_filter, alphasort)) < 0) {
		if (errno == ENOENT)
			return kms_status_set(st, KMS_ERR_NOT_FOUND,
			    "no such audit chain");
		return kms_status_set(st, KMS_ERR_IO, "cannot read the audit "
		    "log: %s", strerror(errno));
	}
	if ((lr = malloc(sizeof(*lr))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	start = audit_segment_start(segs, nseg, after_seq);
	for (i = start; i < nseg && emitted < limit && scanned < scan_max;
	    i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, segs[i]->d_name);
		memset(lr, 0, offsetof(struct lreader, buf));
		if ((lr->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
			r = kms_status_set(st, KMS_ERR_IO, "cannot read the "
			    "audit log: %s", strerror(errno));
			goto out;
		}
		while (emitted < limit && scanned < scan_max &&
		    (rv = lreader_next(lr, &line, &len, &torn)) == 1) {
			json_decref(o);
			if (audit_record_parse(line, len, &rec, &o) != 0 ||
			    rec.seq <= after_seq)
				continue;
			scanned++;
			*next_after = rec.seq;
			if (!audit_filter_match(f, from, to, &rec))
				continue;
			if ((r = cb(&rec, arg)) != 0) {
				close(lr->fd);
				goto out;
			}
			emitted++;
		}
		close(lr->fd);
	}
 out:
	json_decref(o);
	free(lr);
	free_names(segs, nseg);
	return r;
}
