/*
 * audit.c: the append-only, hash-chained JSON Lines audit log.
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

#define SEG_NAME_DIGITS 20
#define SEG_SUFFIX ".jsonl"
#define SEALS_FILE "seals"
#define SEAL_MAGIC "kms-audit-seal-v1\n"
#define ANCHOR_MAGIC "kms-audit-anchor-v1"
#define SEAL_LEN 32
#define TAIL_WINDOW (64 * 1024)	/* first read of a segment's end */

/*
 * Group commit: a record is formatted and chained under the lock and put
 * in the pending batch; whichever caller finds no flush under way becomes
 * the flusher, writes the whole batch and fdatasyncs it once, outside the
 * lock, while later records gather in the next batch.  Each caller
 * returns once its own record is durable.  A failed flush takes the batch
 * back out of the file, and every record chained after it (the pending
 * batch too) fails with it: the generation counter tells their callers.
 */
struct audit {
	struct metrics *metrics;	/* NULL: off; set before use */
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a flush finished */
	char dir[4096];			/* the chain directory */
	char chain[256];
	size_t segment_max;
	int fd;				/* current segment, O_APPEND; flusher only */
	off_t seg_size;			/* flusher only */
	uint64_t next_seq;
	char prev[SHA256_DIGEST_LENGTH * 2 + 1];
	uint64_t durable_seq;		/* every record up to here is on disk */
	uint64_t gen;			/* bumped when a flush fails */
	char *pend;			/* the pending batch */
	size_t pend_len, pend_cap;
	uint64_t pend_first, pend_last;
	char pend_base[SHA256_DIGEST_LENGTH * 2 + 1];	/* prev before it */
	uint64_t pend_base_since;	/* since_cp before it */
	int lock_fd;			/* flock'd: this chain is ours */
	int nosync;			/* benchmarks only */
	uint64_t nbatches, nflushed;	/* group commit: writes and records */

	/* The writer thread and the replies waiting for it. */
	pthread_t writer;
	pthread_cond_t wcond;		/* records are pending, or stop */
	int writer_running, wstop;
	struct audit_waiter *whead, *wtail;

	/* Checkpoints. */
	struct audit_signer signer;	/* sign == NULL: none */
	char key_fpr[SHA256_DIGEST_LENGTH * 2 + 1];
	char *key_pem;
	char origin[256 + 8];		/* "kms/CHAIN", also the key's name */
	uint32_t key_id;		/* its signed-note key ID */
	uint64_t since_cp;		/* records no checkpoint covers yet */
	uint64_t cp_req, cp_tried, cp_done;	/* checkpoints asked for, tried, made */
	uint64_t cp_fails;		/* failed attempts */
	uint64_t cp_seq;		/* the record of the last one */
	char *cp_note;			/* the last signed checkpoint */
	uint64_t cp_size;		/* its tree size */
	pthread_t timer;
	int timer_running, stopping;
	pthread_cond_t timer_cond;

	/*
	 * The Merkle tree over the records (audittree.h): the writer thread
	 * hashes each batch once it is durable and alone touches the tree;
	 * tree_size (under the lock) is what it has published.
	 */
	struct audit_tree *tree;
	uint64_t tree_size;
	uint64_t base;			/* seq of the chain's first record */
	int has_notes;			/* signed-note checkpoints on disk */

	/* The signed checkpoints by tree size, for proofs (lock). */
	struct cp_entry {
		uint64_t size;
		char *note;
	} *cps;
	size_t ncps, capcps;
	struct timespec forced;		/* the last checkpoint asked for */

	/* Batch seals (CHAIN/seals), the writer's: see make_seal. */
	int seal_fd;
	off_t seal_size;
	uint8_t seal_prev[SEAL_LEN];
};

/* The HSM anchor: the last checkpoint this instance signed. */
struct anchor {
	int present;
	char chain[256];
	uint64_t base, size;
	uint8_t root[MERKLE_HASH_LEN];
};

static void
line_hash(const char *line, size_t len, char *out)
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)line, len, md);
	audit_hex(md, sizeof(md), out);
}

static int
mkdir_p(const char *path)
{
	char tmp[4096];
	size_t i, len = strlen(path);

	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, 0700) == -1 && errno != EEXIST)
			return -1;
		tmp[i] = path[i];
	}
	return 0;
}

static int
fsync_dir(const char *dir)
{
	int fd, r;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int
open_segment(struct audit *a, uint64_t first_seq)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%0*" PRIu64 SEG_SUFFIX, a->dir,
	    SEG_NAME_DIGITS, first_seq);
	a->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->fd == -1)
		return -1;
	a->seg_size = lseek(a->fd, 0, SEEK_END);
	/* The new directory entry must survive a crash as well. */
	return fsync_dir(a->dir);
}

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
	line_hash(start, (size_t)(end - start), a->prev);
	*found = 1;
	r = 0;
 out:
	json_decref(rec);
	free(buf);
	if (fd != -1)
		close(fd);
	return r;
}

static void
now_rfc3339(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%06uZ", base,
	    (unsigned int)(ts.tv_nsec / 1000) % 1000000u);
}

/* Every record has every member, null when it does not apply. */
static int
set_str(json_t *o, const char *k, const char *v)
{
	return json_object_set_new(o, k, v == NULL ? json_null() :
	    json_string(v));
}

/*
 * Builds the record for seq; the caller holds the lock (prev is read).
 * cp, when not NULL, is the checkpoint member.
 */
static char *
format_record(struct audit *a, const struct audit_event *ev, uint64_t seq,
    json_t *cp)
{
	char ts[48], hex[SHA256_DIGEST_LENGTH * 2 + 1];
	json_t *o = NULL, *detail = NULL;
	char *line = NULL;

	if ((o = json_object()) == NULL)
		return NULL;
	now_rfc3339(ts, sizeof(ts));
	if (json_object_set_new(o, "seq", json_integer((json_int_t)seq)) ||
	    set_str(o, "time", ts) ||
	    set_str(o, "chain", a->chain) ||
	    set_str(o, "prev", a->prev) ||
	    set_str(o, "identity", ev->identity) ||
	    set_str(o, "fingerprint", ev->fingerprint) ||
	    set_str(o, "peer", ev->peer) ||
	    set_str(o, "rpc", ev->rpc) ||
	    set_str(o, "key", ev->key) ||
	    json_object_set_new(o, "version", ev->version == 0 ? json_null() :
	    json_integer(ev->version)) ||
	    set_str(o, "result", ev->result) ||
	    set_str(o, "status", ev->status) ||
	    set_str(o, "reason", ev->reason))
		goto out;
	if (ev->request_sha256 != NULL)
		audit_hex(ev->request_sha256, SHA256_DIGEST_LENGTH, hex);
	if (set_str(o, "request_sha256", ev->request_sha256 == NULL ? NULL :
	    hex))
		goto out;
	if (ev->detail_json != NULL) {
		if ((detail = json_loads(ev->detail_json, 0, NULL)) == NULL ||
		    json_object_set(o, "detail", detail))
			goto out;
	}
	if (cp != NULL && json_object_set(o, "checkpoint", cp))
		goto out;
	/* Compact output holds no newline: one record, one line. */
	line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
 out:
	json_decref(detail);
	json_decref(o);
	return line;
}

static int
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes one batch to the current segment, starting a new one when due. */
static int
flush_batch(struct audit *a, const char *buf, size_t len, uint64_t first,
    const char *seal)
{
	size_t slen = seal != NULL ? strlen(seal) : 0;
	int saved;

	if (a->fd == -1 || (a->seg_size > 0 &&
	    (size_t)a->seg_size >= a->segment_max)) {
		if (a->fd != -1)
			close(a->fd);
		a->fd = -1;
		if (open_segment(a, first) == -1) {
			log_error("audit: cannot start a segment in %s: %s",
			    a->dir, strerror(errno));
			if (a->fd != -1)
				close(a->fd);
			a->fd = -1;
			return KMS_ERR_AUDIT;
		}
	}
	/*
	 * The seal goes first: a crash between the two writes leaves a seal
	 * whose batch is missing whole (never acknowledged), which start-up
	 * tells apart from records without a seal.  Only the records are
	 * fdatasync'd here: a second fdatasync per batch would cost a third
	 * of Sign's throughput.  The seals survive a crash of kmsd in the
	 * page cache and are made durable with each checkpoint, before the
	 * anchor moves (see sync_seals); after a power failure, records
	 * after the last checkpoint may have lost their seals, and start-up
	 * says so.
	 */
	if ((slen > 0 && write_all(a->seal_fd, seal, slen) == -1) ||
	    write_all(a->fd, buf, len) == -1 ||
	    (!a->nosync && fdatasync(a->fd) == -1)) {
		saved = errno;
		if (slen > 0 && ftruncate(a->seal_fd, a->seal_size) == -1)
			log_error("audit: cannot take back a seal in %s: %s",
			    a->dir, strerror(errno));
		/*
		 * Take back whatever part of the batch reached the file so
		 * that the chain holds no torn line and the next record can
		 * go where this one failed.
		 */
		if (ftruncate(a->fd, a->seg_size) == -1)
			log_error("audit: cannot take back a failed write in "
			    "%s: %s", a->dir, strerror(errno));
		log_error("audit: write to %s failed: %s", a->dir,
		    strerror(saved));
		return KMS_ERR_AUDIT;
	}
	a->seg_size += (off_t)len;
	a->seal_size += (off_t)slen;
	return 0;
}

/*
 * The seal of a batch: HMAC-SHA256 in the HSM over SEAL_MAGIC, the chain
 * name and a newline, the seal before it (32 zero bytes for the first)
 * and the batch's bytes, as a line of CHAIN/seals:
 *   {"first":F,"last":L,"mac":"HEX"}
 * Records after the anchored checkpoint are accepted at start only under
 * seals that verify (see check_tail).
 */
static int
seal_mac(struct audit *a, const uint8_t prev[SEAL_LEN], const char *buf,
    size_t len, uint8_t mac[SEAL_LEN])
{
	size_t hl = strlen(SEAL_MAGIC) + strlen(a->chain) + 1;
	uint8_t *in;
	int r;

	if ((in = malloc(hl + SEAL_LEN + len)) == NULL)
		return KMS_ERR_NOMEM;
	memcpy(in, SEAL_MAGIC, strlen(SEAL_MAGIC));
	memcpy(in + strlen(SEAL_MAGIC), a->chain, strlen(a->chain));
	in[hl - 1] = '\n';
	memcpy(in + hl, prev, SEAL_LEN);
	memcpy(in + hl + SEAL_LEN, buf, len);
	r = a->signer.mac(a->signer.arg, in, hl + SEAL_LEN + len, mac);
	free(in);
	return r;
}

static int
make_seal(struct audit *a, const char *buf, size_t len, uint64_t first,
    uint64_t last, uint8_t mac[SEAL_LEN], char *line, size_t linelen)
{
	char hex[SEAL_LEN * 2 + 1];
	int r;

	if ((r = seal_mac(a, a->seal_prev, buf, len, mac)) != 0) {
		log_error("audit: the HSM could not seal a batch: %s",
		    kms_strerror(r));
		return KMS_ERR_AUDIT;
	}
	audit_hex(mac, SEAL_LEN, hex);
	snprintf(line, linelen, "{\"first\":%" PRIu64 ",\"last\":%" PRIu64
	    ",\"mac\":\"%s\"}\n", first, last, hex);
	return 0;
}

/* Adds a formatted line to the pending batch; called with the lock held. */
static int
pend_add(struct audit *a, const char *line, size_t len, int is_cp)
{
	size_t ncap;
	char *n;

	if (a->pend_len + len + 1 > a->pend_cap) {
		ncap = a->pend_cap == 0 ? 64 * 1024 : a->pend_cap;
		while (ncap < a->pend_len + len + 1)
			ncap *= 2;
		if ((n = realloc(a->pend, ncap)) == NULL)
			return KMS_ERR_NOMEM;
		a->pend = n;
		a->pend_cap = ncap;
	}
	if (a->pend_len == 0) {
		a->pend_first = a->next_seq;
		memcpy(a->pend_base, a->prev, sizeof(a->pend_base));
		a->pend_base_since = a->since_cp;
	}
	memcpy(a->pend + a->pend_len, line, len);
	a->pend[a->pend_len + len] = '\n';
	a->pend_len += len + 1;
	a->pend_last = a->next_seq;
	line_hash(line, len, a->prev);
	a->next_seq++;
	a->since_cp = is_cp ? 0 : a->since_cp + 1;
	return 0;
}

/* Formats and queues a record; *my receives its seq.  Lock held. */
static int
queue_record(struct audit *a, const struct audit_event *ev, json_t *cp,
    uint64_t *my)
{
	char *line;
	size_t len;
	int r;

	if ((line = format_record(a, ev, a->next_seq, cp)) == NULL)
		return KMS_ERR_NOMEM;
	if ((len = strlen(line)) + 1 > AUDIT_LINE_MAX) {
		free(line);
		return KMS_ERR_INTERNAL;
	}
	*my = a->next_seq;
	r = pend_add(a, line, len, cp != NULL);
	free(line);
	return r;
}

static int mkdir_p(const char *path);
static int write_all(int fd, const char *p, size_t len);

/* Writes path atomically: a temporary file, fsync'd, renamed over it. */
static int
write_file(const char *path, const char *text)
{
	char tmp[4600];
	int fd, r = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1)
		return -1;
	if (write_all(fd, text, strlen(text)) == 0 && fsync(fd) == 0)
		r = 0;
	close(fd);
	if (r == 0 && rename(tmp, path) == -1)
		r = -1;
	if (r != 0)
		unlink(tmp);
	return r;
}

/*
 * [audit] publish: the checkpoint as DIR/CHAIN/SIZE.note and
 * DIR/CHAIN/latest.  A failure is logged and changes nothing else: the
 * checkpoint is in the log either way.
 */
static void
publish(struct audit *a, uint64_t size, const char *note)
{
	char dir[4400], path[4500];

	if (a->signer.publish_dir == NULL)
		return;
	snprintf(dir, sizeof(dir), "%s/%s", a->signer.publish_dir, a->chain);
	snprintf(path, sizeof(path), "%s/%0*" PRIu64 ".note", dir,
	    SEG_NAME_DIGITS, size);
	if (mkdir_p(dir) == -1 || write_file(path, note) == -1 ||
	    (snprintf(path, sizeof(path), "%s/latest", dir) > 0 &&
	    write_file(path, note) == -1))
		log_error("audit: cannot publish checkpoint %" PRIu64 " to "
		    "%s: %s", size, dir, strerror(errno));
}

/* Keeps a copy of a signed checkpoint for proofs.  Lock held (or open). */
static int
cp_remember(struct audit *a, uint64_t size, const char *note)
{
	struct cp_entry *n;
	size_t ncap;

	if (a->ncps > 0 && a->cps[a->ncps - 1].size == size)
		return 0;
	if (a->ncps == a->capcps) {
		ncap = a->capcps == 0 ? 64 : a->capcps * 2;
		if ((n = realloc(a->cps, ncap * sizeof(*n))) == NULL)
			return KMS_ERR_NOMEM;
		a->cps = n;
		a->capcps = ncap;
	}
	if ((a->cps[a->ncps].note = strdup(note)) == NULL)
		return KMS_ERR_NOMEM;
	a->cps[a->ncps].size = size;
	a->ncps++;
	return 0;
}

/* The signed checkpoint of exactly size leaves, or NULL.  Lock held. */
static const char *
cp_find(struct audit *a, uint64_t size)
{
	size_t lo = 0, hi = a->ncps, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (a->cps[mid].size < size)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < a->ncps && a->cps[lo].size == size ? a->cps[lo].note :
	    NULL;
}

static int
anchor_format(const char *chain, uint64_t base, uint64_t size,
    const uint8_t root[MERKLE_HASH_LEN], char *buf, size_t len)
{
	char hex[MERKLE_HASH_LEN * 2 + 1];
	int n;

	audit_hex(root, MERKLE_HASH_LEN, hex);
	n = snprintf(buf, len, ANCHOR_MAGIC "\nchain=%s\nbase=%" PRIu64
	    "\nsize=%" PRIu64 "\nroot=%s\n", chain, base, size, hex);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

static int
unhex32(const char *s, uint8_t out[32])
{
	unsigned int b, i;

	if (strlen(s) != 64)
		return -1;
	for (i = 0; i < 32; i++) {
		if (sscanf(s + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = (uint8_t)b;
	}
	return 0;
}

static int
anchor_parse(const char *v, struct anchor *an)
{
	char chain[256], hex[65];
	uint64_t base, size;
	int used = 0;

	if (sscanf(v, ANCHOR_MAGIC "\nchain=%255[^\n]\nbase=%" SCNu64
	    "\nsize=%" SCNu64 "\nroot=%64[0-9a-f]\n%n", chain, &base, &size,
	    hex, &used) != 4 || used == 0 || v[used] != '\0' ||
	    unhex32(hex, an->root) != 0 || base == 0)
		return -1;
	snprintf(an->chain, sizeof(an->chain), "%s", chain);
	an->base = base;
	an->size = size;
	an->present = 1;
	return 0;
}

/*
 * Signs a checkpoint of the tree as the writer has built it and queues
 * it as a record.  Called by the writer thread with the lock held; the
 * lock is let go while the HSM signs, so that records keep coming.  The
 * checkpoint is a C2SP signed note (note.h) of the tree of every record
 * hashed so far; its record comes later in the chain and is covered by
 * the next one.
 */
static void
writer_checkpoint(struct audit *a)
{
	struct audit_event ev;
	uint8_t root[MERKLE_HASH_LEN], sig[512];
	char text[NOTE_NAME_MAX + 128], line[NOTE_NAME_MAX + 128], *note = NULL;
	char anchor[512];
	json_t *cp = NULL;
	uint64_t req = a->cp_req, size, seq;
	size_t siglen = sizeof(sig);
	int n, l = -1, r;

	a->cp_tried = req;
	size = audit_tree_size(a->tree);
	audit_tree_root(a->tree, root);
	pthread_mutex_unlock(&a->lock);
	r = KMS_ERR_INTERNAL;
	if ((n = checkpoint_text(a->origin, size, root, text,
	    sizeof(text))) > 0 &&
	    (r = a->signer.sign(a->signer.arg, (const uint8_t *)text,
	    (size_t)n, sig, &siglen)) == 0 &&
	    ((l = note_sig_line(a->origin, a->key_id, sig, siglen, line,
	    sizeof(line))) < 0 || asprintf(&note, "%s\n%s", text,
	    line) == -1)) {
		note = NULL;
		r = KMS_ERR_NOMEM;
	}
	/*
	 * The anchor moves with each checkpoint: every record it names is
	 * durable (the writer hashes only what it has written), and so are
	 * the seals so far.
	 */
	if (r == 0 && a->seal_fd != -1 && !a->nosync &&
	    fdatasync(a->seal_fd) == -1) {
		log_error("audit: cannot sync %s/" SEALS_FILE ": %s", a->dir,
		    strerror(errno));
		r = KMS_ERR_AUDIT;
	}
	if (r == 0 && a->signer.anchor_set != NULL &&
	    ((n = anchor_format(a->chain, a->base, size, root, anchor,
	    sizeof(anchor))) < 0 ||
	    (r = a->signer.anchor_set(a->signer.arg, anchor,
	    (size_t)n)) != 0)) {
		log_error("audit: cannot move the HSM anchor: %s",
		    kms_strerror(r));
		r = r != 0 ? r : KMS_ERR_INTERNAL;
	}
	if (r == 0)
		publish(a, size, note);
	pthread_mutex_lock(&a->lock);
	if (r == 0 && (cp = json_pack("{s:s}", "note", note)) == NULL)
		r = KMS_ERR_NOMEM;
	if (r == 0) {
		memset(&ev, 0, sizeof(ev));
		ev.identity = AUDIT_SERVICE_IDENTITY;
		ev.rpc = AUDIT_CHECKPOINT_RPC;
		ev.result = "ok";
		ev.status = "OK";
		r = queue_record(a, &ev, cp, &seq);
	}
	json_decref(cp);
	if (r != 0) {
		log_error("audit: the HSM could not sign a checkpoint: %s",
		    kms_strerror(r));
		free(note);
		a->cp_fails++;
		pthread_cond_broadcast(&a->cond);
		return;
	}
	/* Records queued while the HSM signed are not covered by it. */
	a->since_cp = seq - a->base - size;
	a->cp_seq = seq;
	metrics_audit_checkpoint(__atomic_load_n(&a->metrics,
	    __ATOMIC_ACQUIRE), seq);
	a->cp_done = req;
	free(a->cp_note);
	a->cp_note = note;
	a->cp_size = size;
	if (cp_remember(a, size, note) != 0)
		log_warn("audit: out of memory keeping checkpoint %" PRIu64,
		    size);
	pthread_cond_broadcast(&a->cond);
}

/*
 * The writer thread: group commit.  It takes everything pending, writes
 * and fdatasyncs it in one go outside the lock while later records gather
 * in the next batch, then releases the replies that were waiting for
 * those records.  A failed write takes the batch back out of the file,
 * and every record chained after it (the pending batch too) fails with
 * it: the generation counter tells their waiters.
 */
static void *
writer_main(void *arg)
{
	struct audit *a = arg;
	struct audit_waiter *done, *w, **tail;
	char *buf, base[SHA256_DIGEST_LENGTH * 2 + 1], seal[160];
	uint8_t mac[SEAL_LEN];
	uint64_t first, last, since;
	struct timespec t0, t1;
	size_t len;
	int r;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (a->pend_len == 0 && !a->wstop &&
		    a->cp_req == a->cp_tried)
			pthread_cond_wait(&a->wcond, &a->lock);
		if (a->pend_len == 0 && a->cp_req != a->cp_tried) {
			writer_checkpoint(a);
			continue;
		}
		if (a->pend_len == 0)
			break;
		buf = a->pend;
		len = a->pend_len;
		first = a->pend_first;
		last = a->pend_last;
		since = a->pend_base_since;
		memcpy(base, a->pend_base, sizeof(base));
		a->pend = NULL;
		a->pend_len = a->pend_cap = 0;
		pthread_mutex_unlock(&a->lock);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = 0;
		if (a->signer.mac != NULL)
			r = make_seal(a, buf, len, first, last, mac, seal,
			    sizeof(seal));
		if (r == 0)
			r = flush_batch(a, buf, len, first,
			    a->signer.mac != NULL ? seal : NULL);
		if (r == 0 && a->signer.mac != NULL)
			memcpy(a->seal_prev, mac, SEAL_LEN);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (r == 0)
			metrics_audit_batch(__atomic_load_n(&a->metrics,
			    __ATOMIC_ACQUIRE), last - first + 1,
			    (double)(t1.tv_sec - t0.tv_sec) +
			    (t1.tv_nsec - t0.tv_nsec) / 1e9);
		/*
		 * The leaves are hashed here, off the requests' path; a tree
		 * that cannot be written fails nothing already durable but
		 * leaves proofs unavailable until the next start.
		 */
		if (r == 0 && (audit_tree_add_lines(a->tree, buf, len) != 0 ||
		    audit_tree_flush(a->tree) != 0))
			log_error("audit: the Merkle tree of %s is incomplete "
			    "until kmsd restarts", a->dir);
		free(buf);
		pthread_mutex_lock(&a->lock);
		if (r == 0) {
			a->durable_seq = last;
			a->tree_size = audit_tree_size(a->tree);
			a->nbatches++;
			a->nflushed += last - first + 1;
		} else {
			/* Start again from before the batch. */
			a->gen++;
			a->next_seq = first;
			a->since_cp = since;
			memcpy(a->prev, base, sizeof(a->prev));
			a->pend_len = 0;
		}
		/* The waiters that are settled, in seq order. */
		done = NULL;
		tail = &done;
		while ((w = a->whead) != NULL && (w->gen != a->gen ||
		    w->seq <= a->durable_seq)) {
			w->err = w->gen == a->gen ? 0 : KMS_ERR_AUDIT;
			a->whead = w->next;
			w->next = NULL;
			*tail = w;
			tail = &w->next;
		}
		if (a->whead == NULL)
			a->wtail = NULL;
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
		while ((w = done) != NULL) {
			done = w->next;
			w->done(w, w->err);
		}
		pthread_mutex_lock(&a->lock);
		if (r == 0 && (a->cp_req != a->cp_tried ||
		    (a->signer.sign != NULL &&
		    a->since_cp >= a->signer.every)))
			writer_checkpoint(a);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* Waits, lock held, until record my is durable or lost. */
static int
wait_durable(struct audit *a, uint64_t my, uint64_t gen)
{
	pthread_cond_signal(&a->wcond);
	while (a->gen == gen && a->durable_seq < my)
		pthread_cond_wait(&a->cond, &a->lock);
	return a->gen == gen ? 0 : KMS_ERR_AUDIT;
}

/*
 * Asks the writer for a checkpoint of everything durable and waits until
 * its record is durable too.  Lock held.
 */
static int
checkpoint_now(struct audit *a)
{
	uint64_t req, fails = a->cp_fails, gen = a->gen;

	req = ++a->cp_req;
	pthread_cond_signal(&a->wcond);
	while (a->cp_done < req && a->cp_fails == fails)
		pthread_cond_wait(&a->cond, &a->lock);
	if (a->cp_done < req)
		return KMS_ERR_AUDIT;
	return wait_durable(a, a->cp_seq, gen);
}

/*
 * The writer may lag one interval behind; two intervals without a
 * checkpoint mean that the HSM cannot sign: wait for one, or add nothing.
 */
static int
keep_checkpoint_promise(struct audit *a)
{
	if (a->signer.sign == NULL ||
	    a->since_cp < 2 * (uint64_t)a->signer.every)
		return 0;
	return checkpoint_now(a);
}

static void *
timer_main(void *arg)
{
	struct audit *a = arg;
	struct timespec ts;

	pthread_mutex_lock(&a->lock);
	while (!a->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += a->signer.seconds;
		while (!a->stopping && pthread_cond_timedwait(&a->timer_cond,
		    &a->lock, &ts) == 0)
			;
		if (!a->stopping && a->since_cp > 0 && checkpoint_now(a) != 0)
			log_warn("audit: timed checkpoint failed; retrying in "
			    "%u s", a->signer.seconds);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
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
	if (write_file(path, a->key_pem) == -1 || fsync_dir(a->dir) == -1)
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
				r = cp_remember(a, cp.size, t);
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
		    line[used] != '\0' || unhex32(hex, v[*n].mac) != 0 ||
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
	if ((r = seal_mac(tc->a, tc->cur == 0 ? zero : tc->seals[tc->cur -
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
	if ((size_t)snprintf(a->dir, sizeof(a->dir), "%s/%s", dir, chain) >=
	    sizeof(a->dir) || strlen(chain) >= sizeof(a->chain) ||
	    *chain == '\0' || *chain == '.' || strchr(chain, '/') != NULL) {
		kms_status_set(st, r, "bad audit chain name \"%s\"", chain);
		goto out;
	}
	strcpy(a->chain, chain);
	if (mkdir_p(a->dir) == -1) {
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
	if (n > 0 && open_segment(a, seq) == -1) {
		kms_status_set(st, r, "cannot open audit segment in %s: %s",
		    a->dir, strerror(errno));
		goto out;
	}
	if (pthread_create(&a->writer, NULL, writer_main, a) != 0) {
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
		if ((r = queue_record(a, start, NULL, &seq)) != 0 ||
		    (r = wait_durable(a, seq, gen)) != 0) {
			pthread_mutex_unlock(&a->lock);
			kms_status_set(st, r, "cannot start the chain %s",
			    a->dir);
			goto out;
		}
	}
	if (a->signer.sign != NULL) {
		if ((r = checkpoint_now(a)) != 0) {
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
		if ((r = queue_record(a, &ev, NULL, &seq)) != 0 ||
		    (r = wait_durable(a, seq, gen)) != 0) {
			pthread_mutex_unlock(&a->lock);
			kms_status_set(st, r, "cannot record the audit repair");
			goto out;
		}
	}
	pthread_mutex_unlock(&a->lock);
	if (a->signer.sign != NULL && a->signer.seconds > 0) {
		if (pthread_create(&a->timer, NULL, timer_main, a) != 0) {
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
		if (r == 0 && (strlen(v) != len || anchor_parse(v, &an) != 0 ||
		    !is_generation(chain, an.chain)))
			r = kms_status_set(st, KMS_ERR_VERIFY_FAILED, "the HSM "
			    "anchor of audit chain %s does not belong to it: "
			    "swapped or damaged; inspect the chain with kmsctl "
			    "audit verify %s/%s", chain, dir, chain);
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
	    checkpoint_now(a) != 0)
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
	free(a->key_pem);
	free(a);
}

const char *
audit_chain_dir(const struct audit *a)
{
	return a->dir;
}

const char *
audit_chain_name(const struct audit *a)
{
	return a->chain;
}

uint64_t
audit_last_seq(struct audit *a)
{
	uint64_t seq;

	pthread_mutex_lock(&a->lock);
	seq = a->durable_seq;
	pthread_mutex_unlock(&a->lock);
	return seq;
}

void
audit_set_sync(struct audit *a, int sync)
{
	pthread_mutex_lock(&a->lock);
	a->nosync = !sync;
	pthread_mutex_unlock(&a->lock);
}

const char *
audit_key_pem(const struct audit *a)
{
	return a->key_pem;
}

int
audit_submit(struct audit *a, const struct audit_event *ev, uint64_t *seq,
    struct audit_waiter *w)
{
	int r;

	*seq = 0;
	pthread_mutex_lock(&a->lock);
	if ((r = keep_checkpoint_promise(a)) != 0)
		goto out;
	if ((r = queue_record(a, ev, NULL, seq)) != 0)
		goto out;
	w->seq = *seq;
	w->gen = a->gen;
	w->err = 0;
	w->next = NULL;
	if (a->wtail != NULL)
		a->wtail->next = w;
	else
		a->whead = w;
	a->wtail = w;
	pthread_cond_signal(&a->wcond);
 out:
	pthread_mutex_unlock(&a->lock);
	return r;
}

int
audit_append(struct audit *a, const struct audit_event *ev, uint64_t *seq)
{
	uint64_t my, gen;
	int r;

	*seq = 0;
	pthread_mutex_lock(&a->lock);
	gen = a->gen;
	if ((r = keep_checkpoint_promise(a)) != 0)
		goto out;
	if ((r = queue_record(a, ev, NULL, &my)) != 0)
		goto out;
	if ((r = wait_durable(a, my, gen)) == 0)
		*seq = my;
 out:
	pthread_mutex_unlock(&a->lock);
	return r;
}

struct one_line {
	uint64_t seq;
	char *line;
};

static int
keep_line(const struct audit_record *rec, void *arg)
{
	struct one_line *ol = arg;

	if (rec->seq != ol->seq)
		return 0;
	if ((ol->line = strdup(rec->line)) == NULL)
		return KMS_ERR_NOMEM;
	return 1;
}

/* The latest checkpoint, or one made now (at most once a second). */
static int
proof_size(struct audit *a, uint64_t want, uint64_t *size,
    struct kms_status *st)
{
	struct timespec now;
	int r;

	if (want == AUDIT_CHECKPOINT_NOW && a->signer.sign != NULL) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (a->forced.tv_sec != 0 && now.tv_sec - a->forced.tv_sec < 1 &&
		    !(now.tv_sec == a->forced.tv_sec + 1 &&
		    now.tv_nsec >= a->forced.tv_nsec))
			return kms_status_set(st, KMS_ERR_RESOURCE_EXHAUSTED,
			    "a checkpoint was made less than a second ago; "
			    "ask for tree_size 0");
		a->forced = now;
		if ((r = checkpoint_now(a)) != 0)
			return kms_status_set(st, r, "the HSM could not sign a "
			    "checkpoint");
		want = 0;
	}
	if (a->ncps == 0)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "no "
		    "checkpoint yet");
	*size = want == 0 ? a->cps[a->ncps - 1].size : want;
	if (cp_find(a, *size) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND, "no checkpoint of "
		    "tree size %" PRIu64 " in this chain", *size);
	return 0;
}

int
audit_get_proof(struct audit *a, uint64_t seq, uint64_t tree_size,
    struct audit_proof *p, struct kms_status *st)
{
	struct audit_filter f;
	struct one_line ol = { seq, NULL };
	uint64_t next;
	int r;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&a->lock);
	if (seq < a->base || seq >= a->next_seq) {
		r = kms_status_set(st, KMS_ERR_NOT_FOUND, "no record %" PRIu64
		    " in chain %s", seq, a->chain);
		goto out;
	}
	if ((r = proof_size(a, tree_size, &p->tree_size, st)) != 0)
		goto out;
	p->leaf_index = seq - a->base;
	if (p->leaf_index >= p->tree_size) {
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "record %"
		    PRIu64 " is not covered by a checkpoint yet: the next is "
		    "due within %u s or %u records (or ask with tree_size "
		    "UINT64_MAX)", seq, a->signer.seconds, a->signer.every);
		goto out;
	}
	if ((p->checkpoint = strdup(cp_find(a, p->tree_size))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_unlock(&a->lock);
	if ((r = merkle_inclusion_proof(audit_tree_node, a->dir,
	    p->leaf_index, p->tree_size, p->inclusion, &p->n)) != 0) {
		kms_status_set(st, KMS_ERR_INTERNAL, "cannot read the Merkle "
		    "tree of %s", a->dir);
		goto fail;
	}
	memset(&f, 0, sizeof(f));
	r = audit_list(a->dir, seq - 1, 1, 1, &f, keep_line, &ol, &next, st);
	if (r < 0 || ol.line == NULL) {
		if (st->err == 0)
			kms_status_set(st, r < 0 ? r : KMS_ERR_INTERNAL,
			    "cannot read record %" PRIu64, seq);
		goto fail;
	}
	p->record = ol.line;
	return 0;
 out:
	pthread_mutex_unlock(&a->lock);
	if (r == 0)
		return 0;
 fail:
	free(ol.line);
	audit_proof_clear(p);
	return st->err != 0 ? st->err : KMS_ERR_INTERNAL;
}

void
audit_proof_clear(struct audit_proof *p)
{
	free(p->record);
	free(p->checkpoint);
	free(p->old_checkpoint);
	memset(p, 0, sizeof(*p));
}

int
audit_get_consistency(struct audit *a, uint64_t old_size, uint64_t new_size,
    struct audit_proof *p, struct kms_status *st)
{
	const char *o;
	int r;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&a->lock);
	if ((r = proof_size(a, new_size, &p->tree_size, st)) != 0)
		goto out;
	if (old_size > p->tree_size) {
		r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "old_size %"
		    PRIu64 " is above new_size %" PRIu64, old_size,
		    p->tree_size);
		goto out;
	}
	if ((o = cp_find(a, old_size)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOT_FOUND, "no checkpoint of "
		    "tree size %" PRIu64 " in this chain", old_size);
		goto out;
	}
	if ((p->old_checkpoint = strdup(o)) == NULL ||
	    (p->checkpoint = strdup(cp_find(a, p->tree_size))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
 out:
	pthread_mutex_unlock(&a->lock);
	if (r == 0 && (r = merkle_consistency_proof(audit_tree_node, a->dir,
	    old_size, p->tree_size, p->inclusion, &p->n)) != 0)
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot read the "
		    "Merkle tree of %s", a->dir);
	if (r != 0)
		audit_proof_clear(p);
	return r;
}

void
audit_set_metrics(struct audit *a, struct metrics *m)
{
	/* The writer thread runs already: it loads the pointer atomically. */
	__atomic_store_n(&a->metrics, m, __ATOMIC_RELEASE);
	pthread_mutex_lock(&a->lock);
	if (a->cp_seq != 0)
		metrics_audit_checkpoint(m, a->cp_seq);
	pthread_mutex_unlock(&a->lock);
}
