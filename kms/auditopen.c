/*
 * auditopen.c: opening an audit chain: the tail of the last segment, the batch
 * seals, the Merkle tree rebuilt, the HSM anchor checked, and new chains.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "audit.h"
#include "auditread.h"
#include "audittree.h"
#include "merkle.h"
#include "note.h"
#include "pubkey.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "names.h"

#include "audit_int.h"

/* Reads len bytes at off into buf; 0 or -1. */
static int
read_at(int fd, char *buf, size_t len, off_t off)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = pread(fd, buf + got, len - got, off + (off_t)got);
		if (n <= 0) {
			if (n == -1 && errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)n;
	}
	return 0;
}

/*
 * Reads the end of the last segment, cuts off a torn last line and learns
 * the next seq and the hash of the last record.  Only a window at the end
 * is read, doubled until it holds the last whole line, so that start-up
 * memory does not grow with the segment.  Sets *cut to the bytes cut.
 */
static int
load_tail(struct audit *a, const char *path, size_t *cut, int *found,
    struct kms_status *st)
{
	char *buf = NULL, *start, *end, *nb;
	json_t *rec = NULL;
	json_error_t jerr;
	struct stat sb;
	size_t size, win, keep, i;
	off_t off;
	int fd = -1, r = KMS_ERR_AUDIT;

	*cut = 0;
	*found = 0;
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) == -1 ||
	    fstat(fd, &sb) == -1) {
		kms_status_set(st, r, "%s: %s", path, strerror(errno));
		goto out;
	}
	size = (size_t)sb.st_size;
	for (win = TAIL_WINDOW;; win *= 2) {
		if (win > size)
			win = size;
		off = (off_t)(size - win);
		if ((nb = realloc(buf, win + 1)) == NULL) {
			r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
			goto out;
		}
		buf = nb;
		if (read_at(fd, buf, win, off) == -1) {
			kms_status_set(st, r, "%s: read failed", path);
			goto out;
		}
		buf[win] = '\0';
		/* keep: bytes of buf up to and with the last newline. */
		for (keep = win; keep > 0 && buf[keep - 1] != '\n'; keep--)
			;
		if (keep == 0 && off > 0)
			continue;
		/* The line before the last newline starts after another. */
		for (i = keep > 0 ? keep - 1 : 0; i > 0 && buf[i - 1] != '\n';
		    i--)
			;
		if (i > 0 || off == 0)
			break;
	}
	/* Everything after the last newline is a torn write. */
	if ((size_t)off + keep != size) {
		if (ftruncate(fd, off + (off_t)keep) == -1 || fsync(fd) == -1) {
			kms_status_set(st, r, "%s: cannot cut torn tail: %s",
			    path, strerror(errno));
			goto out;
		}
		*cut = size - ((size_t)off + keep);
	}
	if (keep == 0) {
		r = 0;
		goto out;
	}
	end = buf + keep - 1;		/* the last newline */
	*end = '\0';
	start = buf + i;
	if ((rec = json_loads(start, 0, &jerr)) == NULL ||
	    !json_is_integer(json_object_get(rec, "seq"))) {
		kms_status_set(st, r, "%s: last record is corrupt (%s); "
		    "check the log with kmsctl audit verify", path,
		    rec == NULL ? jerr.text : "no seq");
		goto out;
	}
	a->next_seq = (uint64_t)json_integer_value(json_object_get(rec,
	    "seq")) + 1;
	audit_line_hash(start, (size_t)(end - start), a->prev);
	*found = 1;
	r = 0;
 out:
	json_decref(rec);
	free(buf);
	if (fd != -1)
		close(fd);
	return r;
}

/* Writes dir/audit-key-FPR16.pem once, atomically. */
static int
write_key_pem(struct audit *a, struct kms_status *st)
{
	char path[4400];
	int r;

	snprintf(path, sizeof(path), "%s/" AUDIT_KEY_PREFIX "%.16s.pem",
	    a->dir, a->key_fpr);
	if ((r = pubkey_pem(a->signer.spki, a->signer.spki_len,
	    &a->key_pem)) != 0)
		return kms_status_set(st, r, "cannot encode the audit key");
	if (access(path, F_OK) == 0)
		return 0;
	if (audit_write_file(path, a->key_pem) == -1 || audit_fsync_dir(a->dir) == -1)
		return kms_status_set(st, KMS_ERR_AUDIT, "cannot write %s: %s",
		    path, strerror(errno));
	return 0;
}

static int
tree_add_line(const char *line, size_t len, void *arg)
{
	struct audit *a = arg;
	struct checkpoint cp;
	json_t *o = NULL, *note;
	int r = 0;

	if (memmem(line, len, "\"rpc\":\"" AUDIT_CHECKPOINT_RPC "\"",
	    strlen(AUDIT_CHECKPOINT_RPC) + 8) != NULL &&
	    memmem(line, len, "\"note\":", 7) != NULL) {
		a->has_notes = 1;
		/* Kept for proofs; the verifier, not this, judges them. */
		if ((o = json_loadb(line, len, 0, NULL)) != NULL &&
		    json_is_string(note = json_object_get(json_object_get(o,
		    "checkpoint"), "note"))) {
			const char *t = json_string_value(note);
			const char *e = strstr(t, "\n\n");

			if (e != NULL && checkpoint_parse(t, (size_t)(e - t) + 1,
			    &cp) == 0 && (a->ncps == 0 ||
			    cp.size >= a->cps[a->ncps - 1].size))
				r = audit_cp_remember(a, cp.size, t);
		}
		json_decref(o);
		if (r != 0)
			return r;
	}
	return audit_tree_add(a->tree, line, len);
}

/*
 * Hashes every record of the chain into a fresh tree.  The node files of
 * an earlier run are not trusted: the records are what the checkpoints
 * signed.
 */
static int
rebuild_tree(struct audit *a, struct kms_status *st)
{
	int r;

	if ((r = audit_tree_open(a->dir, &a->tree, st)) != 0)
		return r;
	if ((r = audit_scan(a->dir, tree_add_line, a, st)) != 0) {
		if (st->err == 0)
			kms_status_set(st, r, "cannot hash the records of %s",
			    a->dir);
		return r;
	}
	if ((r = audit_tree_flush(a->tree)) != 0)
		return kms_status_set(st, r, "cannot write the Merkle tree of "
		    "%s", a->dir);
	a->tree_size = audit_tree_size(a->tree);
	if (a->tree_size != a->next_seq - a->base)
		return kms_status_set(st, KMS_ERR_VERIFY_FAILED, "%s holds %"
		    PRIu64 " records from seq %" PRIu64 " but its last says "
		    "seq %" PRIu64 ": records were removed or inserted; inspect "
		    "it with kmsctl audit verify %s", a->dir, a->tree_size,
		    a->base, a->next_seq - 1, a->dir);
	return 0;
}

/* The segment holding seq and the line it is on, for messages. */
static void
where_is(struct audit *a, uint64_t seq, char *buf, size_t len)
{
	struct dirent **names = NULL;
	uint64_t first = 0, f;
	int i, n;

	n = scandir(a->dir, &names, audit_segment_filter, alphasort);
	for (i = 0; i < n; i++) {
		f = strtoull(names[i]->d_name, NULL, 10);
		if (f <= seq)
			first = f;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (first == 0)
		snprintf(buf, len, "%s (no segment)", a->dir);
	else
		snprintf(buf, len, "%s/%0*" PRIu64 SEG_SUFFIX " line %" PRIu64,
		    a->dir, SEG_NAME_DIGITS, first, seq - first + 1);
}

struct seal {
	uint64_t first, last;
	uint8_t mac[SEAL_LEN];
	long end;			/* offset after its line */
};

/* Reads CHAIN/seals; a line that does not parse is tampering. */
static int
load_seals(struct audit *a, struct seal **out, size_t *n, char *why,
    size_t whylen)
{
	char path[4400], line[256], hex[SEAL_LEN * 2 + 1];
	struct seal *v = NULL, *nv;
	size_t cap = 0, lineno = 0;
	int used;
	FILE *f;

	*out = NULL;
	*n = 0;
	snprintf(path, sizeof(path), "%s/" SEALS_FILE, a->dir);
	if ((f = fopen(path, "r")) == NULL)
		return errno == ENOENT ? 0 : -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (*n == cap) {
			cap = cap == 0 ? 256 : cap * 2;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL)
				goto bad;
			v = nv;
		}
		used = 0;
		if (sscanf(line, "{\"first\":%" SCNu64 ",\"last\":%" SCNu64
		    ",\"mac\":\"%64[0-9a-f]\"}\n%n", &v[*n].first,
		    &v[*n].last, hex, &used) != 3 || used == 0 ||
		    line[used] != '\0' || audit_unhex32(hex, v[*n].mac) != 0 ||
		    v[*n].last < v[*n].first ||
		    (*n > 0 && v[*n].first != v[*n - 1].last + 1)) {
			snprintf(why, whylen, "%s line %zu is not a seal that "
			    "follows the one before it", path, lineno);
			goto bad;
		}
		v[*n].end = ftell(f);
		(*n)++;
	}
	fclose(f);
	*out = v;
	return 0;
 bad:
	fclose(f);
	free(v);
	*n = 0;
	return -1;
}

/* Checks one seal against the batch it names; buf holds its lines. */
struct tail_check {
	struct audit *a;
	const struct seal *seals;
	size_t nseals, cur;		/* the seal being filled */
	uint64_t seq;			/* of the line at hand */
	char *buf;
	size_t len, cap;
	int bad;			/* a seal did not verify */
};

static int
tail_line(const char *line, size_t len, void *arg)
{
	struct tail_check *tc = arg;
	const struct seal *s = &tc->seals[tc->cur];
	uint8_t mac[SEAL_LEN], zero[SEAL_LEN];
	char *nb;
	size_t ncap;
	int r;

	if (tc->cur >= tc->nseals || tc->seq++ < s->first)
		return 0;
	if (tc->len + len + 1 > tc->cap) {
		ncap = (tc->len + len + 1) * 2;
		if ((nb = realloc(tc->buf, ncap)) == NULL)
			return KMS_ERR_NOMEM;
		tc->buf = nb;
		tc->cap = ncap;
	}
	memcpy(tc->buf + tc->len, line, len);
	tc->buf[tc->len + len] = '\n';
	tc->len += len + 1;
	if (tc->seq - 1 != s->last)
		return 0;
	memset(zero, 0, sizeof(zero));
	if ((r = audit_seal_mac(tc->a, tc->cur == 0 ? zero : tc->seals[tc->cur -
	    1].mac, tc->buf, tc->len, mac)) != 0)
		return r;
	if (CRYPTO_memcmp(mac, s->mac, SEAL_LEN) != 0) {
		tc->bad = 1;
		return 1;
	}
	tc->len = 0;
	tc->cur++;
	return 0;
}

/*
 * The chain must extend the anchored checkpoint exactly: as long, from
 * the same first seq, with the same root at the anchored size; and every
 * record after it must be under a seal that verifies.  0, or
 * KMS_ERR_VERIFY_FAILED with what was found in st.
 */
static int
check_anchor(struct audit *a, const struct anchor *an,
    struct kms_status *st)
{
	struct tail_check tc;
	struct seal *seals = NULL;
	uint8_t root[MERKLE_HASH_LEN];
	char where[4600], why[4600] = "", path[4400];
	uint64_t from, last = a->next_seq - 1;
	size_t ns = 0, first_tail;
	int r = KMS_ERR_VERIFY_FAILED;

	memset(&tc, 0, sizeof(tc));
	if (!an->present) {
		/* A chain that never had one: new, or older than anchors. */
		if (!a->has_notes)
			return 0;
		kms_status_set(st, r, "the HSM holds no audit anchor, but %s "
		    "has signed checkpoints: the anchor object was removed or "
		    "swapped", a->dir);
		goto out;
	}
	if (strcmp(an->chain, a->chain) != 0) {
		kms_status_set(st, r, "the HSM anchor names chain %s, not %s: "
		    "the anchor object was swapped", an->chain, a->chain);
		goto out;
	}
	if (a->base != an->base) {
		kms_status_set(st, r, "%s starts at seq %" PRIu64 " but the "
		    "HSM anchor says %" PRIu64 ": its first records were "
		    "removed", a->dir, a->base, an->base);
		goto out;
	}
	if (a->tree_size < an->size) {
		kms_status_set(st, r, "%s holds %" PRIu64 " records but the "
		    "HSM anchor says %" PRIu64 ": the log was cut after seq %"
		    PRIu64, a->dir, a->tree_size, an->size, last);
		goto out;
	}
	if ((r = merkle_root(audit_tree_node, a->dir, an->size, root)) != 0) {
		kms_status_set(st, r, "cannot read the Merkle tree of %s",
		    a->dir);
		goto out;
	}
	r = KMS_ERR_VERIFY_FAILED;
	if (memcmp(root, an->root, MERKLE_HASH_LEN) != 0) {
		kms_status_set(st, r, "the first %" PRIu64 " records of %s do "
		    "not hash to the root the HSM anchored: records were "
		    "changed, removed or inserted", an->size, a->dir);
		goto out;
	}
	/* The tail after the anchor, batch by batch under its seals. */
	from = a->base + an->size;
	if (load_seals(a, &seals, &ns, why, sizeof(why)) != 0) {
		kms_status_set(st, r, "%s", why[0] != '\0' ? why :
		    "cannot read the seals");
		goto out;
	}
	/* A last seal whose batch is missing whole was never acknowledged. */
	if (ns > 0 && seals[ns - 1].first == last + 1) {
		log_warn("audit: the last seal of %s names records %" PRIu64
		    "..%" PRIu64 " that never reached the log (a crash between "
		    "the two writes); dropping it", a->dir,
		    seals[ns - 1].first, seals[ns - 1].last);
		ns--;
		snprintf(path, sizeof(path), "%s/" SEALS_FILE, a->dir);
		if (truncate(path, ns > 0 ? (off_t)seals[ns - 1].end : 0) ==
		    -1) {
			kms_status_set(st, KMS_ERR_AUDIT, "cannot cut %s: %s",
			    path, strerror(errno));
			r = KMS_ERR_AUDIT;
			goto out;
		}
	}
	if (from > last)
		goto sealed;
	for (first_tail = 0; first_tail < ns &&
	    seals[first_tail].last < from; first_tail++)
		;
	if (first_tail == ns || seals[first_tail].first > from) {
		where_is(a, from, where, sizeof(where));
		kms_status_set(st, r, "records after the anchored checkpoint "
		    "(seq %" PRIu64 ", %s) carry no seal from this HSM: they "
		    "were not written by kmsd", from, where);
		goto out;
	}
	if (seals[ns - 1].last > last) {
		kms_status_set(st, r, "the seals of %s name records up to seq %"
		    PRIu64 " but the log ends at %" PRIu64 ": records were cut",
		    a->dir, seals[ns - 1].last, last);
		goto out;
	}
	tc.a = a;
	tc.seals = seals;
	tc.nseals = ns;
	tc.cur = first_tail;
	tc.seq = a->base;
	r = audit_scan(a->dir, tail_line, &tc, st);
	if (r < 0)
		goto out;
	r = KMS_ERR_VERIFY_FAILED;
	if (tc.bad) {
		where_is(a, seals[tc.cur].first, where, sizeof(where));
		kms_status_set(st, r, "the seal of records %" PRIu64 "..%"
		    PRIu64 " (from %s) does not verify: they were changed or "
		    "not written by kmsd", seals[tc.cur].first,
		    seals[tc.cur].last, where);
		goto out;
	}
	if (seals[ns - 1].last < last) {
		where_is(a, seals[ns - 1].last + 1, where, sizeof(where));
		kms_status_set(st, r, "records from seq %" PRIu64 " on (%s) "
		    "carry no seal from this HSM: they were not written by "
		    "kmsd", seals[ns - 1].last + 1, where);
		goto out;
	}
 sealed:
	if (ns > 0)
		memcpy(a->seal_prev, seals[ns - 1].mac, SEAL_LEN);
	r = 0;
 out:
	if (r == KMS_ERR_VERIFY_FAILED)
		kms_status_set(st, r, "audit chain %s: %s; inspect it with "
		    "kmsctl audit verify %s", a->chain, (strcpy(why, st->msg),
		    why), a->dir);
	free(tc.buf);
	free(seals);
	return r;
}

/* The checkpoint key: Ed25519, named after the origin "kms/CHAIN". */
static int
setup_signer(struct audit *a, const struct audit_signer *signer,
    struct kms_status *st)
{
	uint8_t md[SHA256_DIGEST_LENGTH], pub[NOTE_ED25519_LEN];

	if (note_ed25519_from_spki(signer->spki, signer->spki_len, pub) != 0)
		return kms_status_set(st, KMS_ERR_CONFIG, "the audit "
		    "checkpoint key is not an Ed25519 key");
	if ((size_t)snprintf(a->origin, sizeof(a->origin), "kms/%s",
	    a->chain) > NOTE_NAME_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "audit chain name "
		    "too long for a checkpoint origin");
	a->key_id = note_key_id(a->origin, pub);
	a->signer = *signer;
	if (a->signer.every == 0)
		a->signer.every = 1;
	SHA256(signer->spki, signer->spki_len, md);
	audit_hex(md, sizeof(md), a->key_fpr);
	return write_key_pem(a, st);
}

static int
lock_chain(struct audit *a, struct kms_status *st)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/.lock", a->dir);
	if ((a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC,
	    0600)) == -1)
		return kms_status_set(st, KMS_ERR_AUDIT, "cannot open %s: %s",
		    path, strerror(errno));
	if (flock(a->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			return kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
			    "audit chain %s is held by another kmsd", a->dir);
		return kms_status_set(st, KMS_ERR_AUDIT, "cannot lock %s: %s",
		    path, strerror(errno));
	}
	return 0;
}

static int
open_seals(struct audit *a, struct kms_status *st)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/" SEALS_FILE, a->dir);
	if ((a->seal_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0600)) == -1 || (a->seal_size = lseek(a->seal_fd, 0,
	    SEEK_END)) == -1)
		return kms_status_set(st, KMS_ERR_AUDIT, "cannot open %s: %s",
		    path, strerror(errno));
	return 0;
}

/*
 * Opens one chain (see audit_open).  base is the first seq of a chain
 * that has no record yet; start, when not NULL, is the record that opens
 * a new chain, written before its first checkpoint.
 */
static int
open_chain(const char *dir, const char *chain, uint64_t base,
    size_t segment_max, const struct audit_signer *signer,
    const struct anchor *an, const struct audit_event *start,
    struct audit **out, struct kms_status *st)
{
	struct dirent **names = NULL;
	struct audit *a = NULL;
	struct audit_event ev;
	char path[4400], segname[64] = "", cutname[64] = "", reason[512];
	uint64_t seq, gen;
	size_t cut = 0, c;
	int found = 0;
	int i, n = -1, r = KMS_ERR_AUDIT;

	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	a->fd = -1;
	a->lock_fd = -1;
	a->seal_fd = -1;
	/* The seal key is needed before the rest of the signer (tail check). */
	if (signer != NULL) {
		a->signer.mac = signer->mac;
		a->signer.arg = signer->arg;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	pthread_cond_init(&a->wcond, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&a->timer_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	a->segment_max = segment_max < 4096 ? 4096 : segment_max;
	a->next_seq = 1;
	memset(a->prev, '0', SHA256_DIGEST_LENGTH * 2);
	/* The caller made the name by the grammar (names_chain_from). */
	if (names_check_chain(chain, NULL) != 0 ||
	    strlen(chain) >= sizeof(a->chain)) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "bad audit chain "
		    "name \"%s\"", chain);
		goto out;
	}
	if ((size_t)snprintf(a->dir, sizeof(a->dir), "%s/%s", dir, chain) >=
	    sizeof(a->dir)) {
		kms_status_set(st, r, "audit directory path too long: %s/%s",
		    dir, chain);
		goto out;
	}
	strcpy(a->chain, chain);
	if (audit_mkdir_p(a->dir) == -1) {
		kms_status_set(st, r, "cannot create %s: %s", a->dir,
		    strerror(errno));
		goto out;
	}
	if ((r = lock_chain(a, st)) != 0)
		goto out;
	r = KMS_ERR_AUDIT;
	if ((n = scandir(a->dir, &names, audit_segment_filter, alphasort)) == -1) {
		kms_status_set(st, r, "cannot read %s: %s", a->dir,
		    strerror(errno));
		goto out;
	}
	/*
	 * Continue the chain from the last record, which is in the last
	 * non-empty segment (a crash can leave an empty one after it).
	 */
	seq = 1;
	for (i = n - 1; i >= 0 && !found; i--) {
		/* Segment names are exactly 26 bytes (audit_segment_filter). */
		memcpy(segname, names[i]->d_name,
		    SEG_NAME_DIGITS + sizeof(SEG_SUFFIX));
		snprintf(path, sizeof(path), "%s/%s", a->dir, segname);
		if ((r = load_tail(a, path, &c, &found, st)) != 0)
			goto out;
		r = KMS_ERR_AUDIT;
		if (i == n - 1) {
			cut = c;
			memcpy(cutname, segname, sizeof(cutname));
			seq = strtoull(segname, NULL, 10);
		}
	}
	/* An empty last segment starts where its name says. */
	if (a->next_seq < seq)
		a->next_seq = seq;
	/* The chain's first seq: its first segment's name, or base. */
	a->base = n > 0 ? strtoull(names[0]->d_name, NULL, 10) : base;
	if (n == 0)
		a->next_seq = base;
	if ((r = rebuild_tree(a, st)) != 0)
		goto out;
	if (an != NULL && signer != NULL && signer->anchor_get != NULL &&
	    (r = check_anchor(a, an, st)) != 0)
		goto out;
	if (signer != NULL && signer->mac != NULL &&
	    (r = open_seals(a, st)) != 0)
		goto out;
	r = KMS_ERR_AUDIT;
	if (n > 0 && audit_open_segment(a, seq) == -1) {
		kms_status_set(st, r, "cannot open audit segment in %s: %s",
		    a->dir, strerror(errno));
		goto out;
	}
	if (pthread_create(&a->writer, NULL, audit_writer_main, a) != 0) {
		kms_status_set(st, r, "cannot start the audit writer");
		goto out;
	}
	a->writer_running = 1;
	pthread_mutex_lock(&a->lock);
	if (signer != NULL && signer->sign != NULL &&
	    (r = setup_signer(a, signer, st)) != 0) {
		pthread_mutex_unlock(&a->lock);
		goto out;
	}
	if (start != NULL) {
		gen = a->gen;
		if ((r = audit_queue_record(a, start, NULL, &seq)) != 0 ||
		    (r = audit_wait_durable(a, seq, gen)) != 0) {
			pthread_mutex_unlock(&a->lock);
			kms_status_set(st, r, "cannot start the chain %s",
			    a->dir);
			goto out;
		}
	}
	if (a->signer.sign != NULL) {
		if ((r = audit_checkpoint_now(a)) != 0) {
			pthread_mutex_unlock(&a->lock);
			if (st->err == 0)
				kms_status_set(st, r, "cannot write the first "
				    "checkpoint in %s", a->dir);
			goto out;
		}
	}
	if (cut > 0) {
		log_warn("audit: cut %zu bytes of a torn record at the end "
		    "of %s/%s", cut, a->dir, cutname);
		memset(&ev, 0, sizeof(ev));
		snprintf(reason, sizeof(reason), "cut %zu bytes of a torn "
		    "record at the end of segment %s", cut, cutname);
		ev.identity = AUDIT_SERVICE_IDENTITY;
		ev.rpc = "AuditRepair";
		ev.result = "ok";
		ev.status = "OK";
		ev.reason = reason;
		gen = a->gen;
		if ((r = audit_queue_record(a, &ev, NULL, &seq)) != 0 ||
		    (r = audit_wait_durable(a, seq, gen)) != 0) {
			pthread_mutex_unlock(&a->lock);
			kms_status_set(st, r, "cannot record the audit repair");
			goto out;
		}
	}
	pthread_mutex_unlock(&a->lock);
	if (a->signer.sign != NULL && a->signer.seconds > 0) {
		if (pthread_create(&a->timer, NULL, audit_timer_main, a) != 0) {
			kms_status_set(st, r, "cannot start the checkpoint "
			    "timer");
			goto out;
		}
		a->timer_running = 1;
	}
	*out = a;
	a = NULL;
	r = 0;
 out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (a != NULL)
		a->signer.sign = NULL;	/* no closing checkpoint */
	audit_close(a);
	return r;
}

struct highest {
	uint64_t seq;
};

static int
highest_line(const char *line, size_t len, void *arg)
{
	struct highest *h = arg;
	json_t *o, *v;

	if ((o = json_loadb(line, len, 0, NULL)) != NULL &&
	    json_is_integer(v = json_object_get(o, "seq")) &&
	    json_integer_value(v) > 0 &&
	    (uint64_t)json_integer_value(v) > h->seq)
		h->seq = (uint64_t)json_integer_value(v);
	json_decref(o);
	return 0;
}

/* The highest seq any line of dir/chain claims (0: none), for new chains. */
static uint64_t
highest_seq(const char *dir, const char *chain)
{
	struct kms_status st;
	struct highest h = { 0 };
	char path[4400];

	snprintf(path, sizeof(path), "%s/%s", dir, chain);
	kms_status_clear(&st);
	(void)audit_scan(path, highest_line, &h, &st);
	return h.seq;
}

/*
 * "CHAIN-chainN": the chain after chain (CHAIN, or CHAIN-chainM), in the
 * characters chain names may hold.
 */
#define NEXT_CHAIN "-chain"

static const char *
generation_suffix(const char *chain)
{
	const char *t = strstr(chain, NEXT_CHAIN), *n;

	for (n = t; n != NULL; n = strstr(n + 1, NEXT_CHAIN))
		t = n;
	if (t == NULL || t[strlen(NEXT_CHAIN)] < '2' ||
	    t[strlen(NEXT_CHAIN)] > '9' ||
	    strspn(t + strlen(NEXT_CHAIN), "0123456789") !=
	    strlen(t + strlen(NEXT_CHAIN)))
		return NULL;
	return t;
}

static void
next_chain_name(const char *chain, char *buf, size_t len)
{
	const char *t = generation_suffix(chain);

	if (t != NULL)
		snprintf(buf, len, "%.*s" NEXT_CHAIN "%lu", (int)(t - chain),
		    chain, strtoul(t + strlen(NEXT_CHAIN), NULL, 10) + 1);
	else
		snprintf(buf, len, "%s" NEXT_CHAIN "2", chain);
}

/* The anchor names chain or one of its successors chain-chainN. */
static int
is_generation(const char *chain, const char *name)
{
	const char *t = generation_suffix(name);

	return strcmp(name, chain) == 0 || (t != NULL &&
	    (size_t)(t - name) == strlen(chain) &&
	    strncmp(name, chain, strlen(chain)) == 0);
}

/*
 * Starts the chain after old at base, its first record saying why (the
 * operator's reason, or what was found) and which chain came before.
 */
static int
start_next_chain(const char *dir, const char *old, uint64_t base,
    const char *why, size_t segment_max, const struct audit_signer *signer,
    struct audit **out, struct kms_status *st)
{
	struct audit_event ev;
	char next[300], *detail = NULL;
	json_t *d;
	int r;

	next_chain_name(old, next, sizeof(next));
	if ((d = json_pack("{s:s, s:I}", "previous_chain", old, "base",
	    (json_int_t)base)) == NULL ||
	    (detail = json_dumps(d, JSON_COMPACT)) == NULL) {
		json_decref(d);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	json_decref(d);
	memset(&ev, 0, sizeof(ev));
	ev.identity = AUDIT_SERVICE_IDENTITY;
	ev.rpc = AUDIT_CHAIN_START_RPC;
	ev.result = "ok";
	ev.status = "OK";
	ev.reason = why;
	ev.detail_json = detail;
	log_warn("audit: starting chain %s at seq %" PRIu64 " after %s: %s",
	    next, base, old, why);
	r = open_chain(dir, next, base, segment_max, signer, NULL, &ev, out,
	    st);
	free(detail);
	return r;
}

int
audit_open(const char *dir, const char *chain, size_t segment_max,
    const struct audit_signer *signer, struct audit **out,
    struct kms_status *st)
{
	struct anchor an;
	struct audit *a = NULL;
	struct audit_event ev;
	const char *cur = chain;
	char *v = NULL, why[1024];
	uint64_t seq, base;
	size_t len;
	int r;

	*out = NULL;
	memset(&an, 0, sizeof(an));
	if (signer != NULL && signer->anchor_get != NULL) {
		r = signer->anchor_get(signer->arg, &v, &len);
		/* VERIFY_FAILED: kept outside the token, its MAC is wrong. */
		if (r == KMS_ERR_VERIFY_FAILED || (r == 0 &&
		    (strlen(v) != len || audit_anchor_parse(v, &an) != 0 ||
		    !is_generation(chain, an.chain))))
			r = kms_status_set(st, KMS_ERR_VERIFY_FAILED, "the HSM "
			    "anchor of audit chain %s does not belong to it: "
			    "swapped, forged or damaged; inspect the chain with "
			    "kmsctl audit verify %s/%s", chain, dir, chain);
		else if (r != 0 && r != KMS_ERR_NOT_FOUND)
			r = kms_status_set(st, r, "cannot read the HSM anchor "
			    "of audit chain %s: %s", chain, kms_strerror(r));
		else
			r = 0;
		free(v);
		if (r != 0)
			return r;
		/* The anchor says which chain is the current one. */
		if (an.present)
			cur = an.chain;
	}
	r = open_chain(dir, cur, 1, segment_max, signer, &an, NULL, &a, st);
	if (r == KMS_ERR_VERIFY_FAILED) {
		/* Configured, or the operator's decision after a refusal. */
		if (signer == NULL || (!signer->new_chain_on_tamper &&
		    signer->new_chain_reason == NULL))
			return r;
		log_error("audit: %s", st->msg);
		/* Above anything the old chain or the anchor ever held. */
		snprintf(why, sizeof(why), "%s%s%s", signer->new_chain_reason ?
		    signer->new_chain_reason : "", signer->new_chain_reason ?
		    ": " : "", st->msg);
		base = an.present ? an.base + an.size + 1 : 1;
		if ((seq = highest_seq(dir, cur)) >= base)
			base = seq + 1;
		kms_status_clear(st);
		return start_next_chain(dir, cur, base, why, segment_max,
		    signer, out, st);
	}
	if (r != 0 || signer == NULL || signer->new_chain_reason == NULL) {
		*out = a;
		return r;
	}
	/* The operator ends this chain: said in it, and in the next. */
	memset(&ev, 0, sizeof(ev));
	ev.identity = AUDIT_SERVICE_IDENTITY;
	ev.rpc = AUDIT_CHAIN_END_RPC;
	ev.result = "ok";
	ev.status = "OK";
	ev.reason = signer->new_chain_reason;
	if ((r = audit_append(a, &ev, &seq)) != 0) {
		audit_close(a);
		return kms_status_set(st, r, "cannot end audit chain %s", cur);
	}
	snprintf(why, sizeof(why), "%s", signer->new_chain_reason);
	audit_close(a);
	/* The closing checkpoint follows the last record: leave it room. */
	base = highest_seq(dir, cur) + 1;
	return start_next_chain(dir, cur, base, why, segment_max, signer, out,
	    st);
}

void
audit_close(struct audit *a)
{
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	a->stopping = 1;
	pthread_cond_broadcast(&a->timer_cond);
	pthread_mutex_unlock(&a->lock);
	if (a->timer_running)
		pthread_join(a->timer, NULL);
	pthread_mutex_lock(&a->lock);
	/* A clean stop leaves no record outside a checkpoint. */
	if (a->signer.sign != NULL && a->since_cp > 0 &&
	    audit_checkpoint_now(a) != 0)
		log_warn("audit: the closing checkpoint failed");
	/* The writer writes what is pending, then stops. */
	a->wstop = 1;
	pthread_cond_signal(&a->wcond);
	pthread_mutex_unlock(&a->lock);
	if (a->writer_running)
		pthread_join(a->writer, NULL);
	if (a->nbatches > 0)
		log_info("audit: %" PRIu64 " records in %" PRIu64 " writes "
		    "(%.1f records per %s)", a->nflushed, a->nbatches,
		    (double)a->nflushed / (double)a->nbatches,
		    a->nosync ? "write" : "fdatasync");
	if (a->fd != -1)
		close(a->fd);
	if (a->seal_fd != -1)
		close(a->seal_fd);
	if (a->lock_fd != -1)
		close(a->lock_fd);
	audit_tree_close(a->tree);
	free(a->cp_note);
	while (a->ncps > 0)
		free(a->cps[--a->ncps].note);
	free(a->cps);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	pthread_cond_destroy(&a->wcond);
	pthread_cond_destroy(&a->timer_cond);
	free(a->pend);
	free(a->spare);
	free(a->key_pem);
	free(a);
}
