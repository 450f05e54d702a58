/*
 * witnesscheck.c: `kmsctl audit verify --witness PUB`: once the log
 * itself verifies, every chain must hold a checkpoint that the witness
 * cosigned (docs/audit.md, "Witness").
 *
 * The cosigned notes are those `kmsctl audit witness` keeps (SIZE.note and
 * latest in its --state directory), looked for in --cosigned DIR, else in
 * CHAIN/witness/ beside each chain.  A note counts when a signature line
 * verifies with the witness key (whatever its key name) and its checkpoint
 * (origin, size, root) is one the log holds, which the verifier checked
 * against the audit key and the records.  A cosigned checkpoint the log
 * does not hold, or holds with another root, means the log was cut or
 * forked after the witness saw it: that fails too.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auditcmd.h"
#include "auditread.h"
#include "kmserr.h"
#include "note.h"

#define CP_MAX (1u << 24)	/* checkpoints of one chain kept in memory */

struct cp_seen {
	uint64_t size;
	uint8_t root[MERKLE_HASH_LEN];
};

struct wcheck {
	uint8_t wpub[NOTE_ED25519_LEN];
	const char *cosigned;		/* --cosigned DIR, or NULL */
	char origin[NOTE_NAME_MAX + 1];
	struct cp_seen *cps;		/* the log's checkpoints, by seq */
	size_t ncps, capcps;
	uint64_t records;
	int quiet;			/* --json: no lines of text */
	/* The verdict. */
	int ok;
	unsigned int chains;
	char why[1024];
};

/* The witness key: an Ed25519 public key, PEM. */
static int
witness_key_load(const char *path, uint8_t pub[NOTE_ED25519_LEN])
{
	EVP_PKEY *pk = NULL;
	uint8_t *der = NULL;
	FILE *f;
	int len, r = -1;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (pk != NULL && (len = i2d_PUBKEY(pk, &der)) > 0 &&
	    note_ed25519_from_spki(der, (size_t)len, pub) == 0)
		r = 0;
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return r;
}

/* Keeps the checkpoint of a log line that holds one (audit_scan cb). */
static int
log_checkpoint(const char *line, size_t len, void *arg)
{
	struct wcheck *w = arg;
	struct checkpoint cp;
	struct note *n = NULL;
	struct cp_seen *nc;
	const char *rpc, *text;
	json_t *o, *v;
	int r = 0;

	w->records++;
	if ((o = json_loadb(line, len, 0, NULL)) == NULL)
		return 0;
	rpc = json_string_value(json_object_get(o, "rpc"));
	v = json_object_get(json_object_get(o, "checkpoint"), "note");
	if (rpc == NULL || strcmp(rpc, AUDIT_CHECKPOINT_RPC) != 0 ||
	    (text = json_string_value(v)) == NULL)
		goto out;
	if ((n = malloc(sizeof(*n))) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	if (note_parse(text, strlen(text), n) != 0 ||
	    checkpoint_parse(n->text, n->text_len, &cp) != 0 ||
	    strcmp(cp.origin, w->origin) != 0)
		goto out;
	if (w->ncps == w->capcps) {
		if (w->capcps >= CP_MAX || (nc = realloc(w->cps,
		    (w->capcps == 0 ? 64 : w->capcps * 2) *
		    sizeof(*nc))) == NULL) {
			r = KMS_ERR_NOMEM;
			goto out;
		}
		w->cps = nc;
		w->capcps = w->capcps == 0 ? 64 : w->capcps * 2;
	}
	w->cps[w->ncps].size = cp.size;
	memcpy(w->cps[w->ncps].root, cp.root, MERKLE_HASH_LEN);
	w->ncps++;
 out:
	free(n);
	json_decref(o);
	return r;
}

static const struct cp_seen *
cp_of_size(const struct wcheck *w, uint64_t size)
{
	size_t i;

	for (i = 0; i < w->ncps; i++)
		if (w->cps[i].size == size)
			return &w->cps[i];
	return NULL;
}

/* 1 when a signature line of n verifies with the witness key. */
static int
cosigned(const struct note *n, const uint8_t wpub[NOTE_ED25519_LEN])
{
	char name[NOTE_NAME_MAX + 1];
	size_t i;

	for (i = 0; i < n->nsigs; i++) {
		if (n->sigs[i].name_len > NOTE_NAME_MAX)
			continue;
		memcpy(name, n->sigs[i].name, n->sigs[i].name_len);
		name[n->sigs[i].name_len] = '\0';
		if (note_verify(n, name, wpub) == 0)
			return 1;
	}
	return 0;
}

static int
note_file(const struct dirent *d)
{
	size_t l = strlen(d->d_name);

	return strcmp(d->d_name, "latest") == 0 ||
	    (l > 5 && strcmp(d->d_name + l - 5, ".note") == 0);
}

/*
 * The cosigned checkpoints of one chain in dir: *best receives the
 * largest witnessed size; 0 when all is well (even with none), -1 with
 * w->why when a cosigned checkpoint is not in the log.
 */
static int
scan_cosigned(struct wcheck *w, const char *dir, uint64_t *best,
    unsigned int *count)
{
	struct dirent **ents = NULL;
	const struct cp_seen *seen;
	struct checkpoint cp;
	struct note *n;
	char path[8192];
	uint8_t *buf = NULL;
	size_t len;
	int i, ne, latest = 0, r = 0;

	*best = 0;
	*count = 0;
	if ((ne = scandir(dir, &ents, note_file, alphasort)) < 0)
		return 0;
	if ((n = malloc(sizeof(*n))) == NULL) {
		snprintf(w->why, sizeof(w->why), "out of memory");
		r = -1;
	}
	for (i = 0; i < ne; i++) {
		if (r == 0 && (size_t)snprintf(path, sizeof(path), "%s/%s",
		    dir, ents[i]->d_name) < sizeof(path) &&
		    read_all(path, &buf, &len, NOTE_MAX) == 0 &&
		    note_parse((const char *)buf, len, n) == 0 &&
		    checkpoint_parse(n->text, n->text_len, &cp) == 0 &&
		    strcmp(cp.origin, w->origin) == 0 && cosigned(n, w->wpub)) {
			seen = cp_of_size(w, cp.size);
			if (seen == NULL || memcmp(seen->root, cp.root,
			    MERKLE_HASH_LEN) != 0) {
				snprintf(w->why, sizeof(w->why), "%.500s: the "
				    "witness cosigned %s at tree size %" PRIu64
				    ", which this log %s: it was cut or forked "
				    "after the witness saw it", path, cp.origin,
				    cp.size, seen == NULL ? "does not hold" :
				    "holds with another root");
				r = -1;
			} else {
				/* latest repeats one of SIZE.note, if kept. */
				if (strcmp(ents[i]->d_name, "latest") != 0)
					(*count)++;
				else
					latest = 1;
				if (cp.size > *best)
					*best = cp.size;
			}
		}
		free(buf);
		buf = NULL;
		free(ents[i]);
	}
	free(ents);
	free(n);
	if (*count == 0 && latest)
		*count = 1;
	return r;
}

static int
check_chain(const char *dir, const char *name, void *arg)
{
	struct wcheck *w = arg;
	struct kms_status st;
	char wdir[8192];
	uint64_t best;
	unsigned int count;
	int r;

	w->ncps = 0;
	w->records = 0;
	w->chains++;
	snprintf(w->origin, sizeof(w->origin), "kms/%s", name);
	kms_status_clear(&st);
	if ((r = audit_scan(dir, log_checkpoint, w, &st)) != 0) {
		snprintf(w->why, sizeof(w->why), "%.500s: %s", dir,
		    st.err != 0 ? st.msg : kms_strerror(r));
		w->ok = 0;
		return 1;
	}
	if (w->cosigned != NULL)
		snprintf(wdir, sizeof(wdir), "%s", w->cosigned);
	else
		snprintf(wdir, sizeof(wdir), "%s/witness", dir);
	if (scan_cosigned(w, wdir, &best, &count) != 0) {
		w->ok = 0;
		return 1;
	}
	if (count == 0) {
		snprintf(w->why, sizeof(w->why), "chain %s: no checkpoint of "
		    "it is cosigned by the witness key (looked in %.500s)", name,
		    wdir);
		w->ok = 0;
		return 1;
	}
	if (!w->quiet)
		printf("chain %s: %u checkpoint(s) cosigned by the witness, the "
		    "latest at tree size %" PRIu64 " of %" PRIu64 " records\n",
		    name, count, best, w->records);
	return 0;
}

int
audit_witness_check(const char *path, const char *witness_pem,
    const char *cosigned_dir, int quiet, char *why, size_t whylen)
{
	struct wcheck *w;
	struct kms_status st;
	int r;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		snprintf(why, whylen, "out of memory");
		return KMSCTL_EXIT_IO;
	}
	if (witness_key_load(witness_pem, w->wpub) != 0) {
		snprintf(why, whylen, "%s: not an Ed25519 public key (PEM)",
		    witness_pem);
		free(w);
		return KMSCTL_EXIT_IO;
	}
	w->cosigned = cosigned_dir;
	w->quiet = quiet;
	w->ok = 1;
	kms_status_clear(&st);
	if ((r = audit_chain_dirs(path, 0, check_chain, w, &st)) != 0) {
		snprintf(why, whylen, "%s", st.msg);
		r = KMSCTL_EXIT_IO;
	} else if (!w->ok) {
		snprintf(why, whylen, "%s", w->why);
		r = KMSCTL_EXIT_VERIFY;
	}
	free(w->cps);
	free(w);
	return r;
}
