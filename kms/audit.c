/*
 * audit.c: the append-only, hash-chained JSON Lines audit log: the writer
 * thread, group commit and checkpoints (opening a chain is auditopen.c,
 * proofs auditproof.c, their shared state audit_int.h).
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
#include "audit_int.h"
#include "auditjson.h"
#include "auditread.h"
#include "audittree.h"
#include "merkle.h"
#include "note.h"
#include "pubkey.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "names.h"

/* A batch buffer larger than this (a burst) is not kept for reuse. */
#define SPARE_CAP_MAX	(1024 * 1024)

void
audit_line_hash(const char *line, size_t len, char *out)
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)line, len, md);
	audit_hex(md, sizeof(md), out);
}

int
audit_mkdir_p(const char *path)
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

int
audit_fsync_dir(const char *dir)
{
	int fd, r;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

int
audit_open_segment(struct audit *a, uint64_t first_seq)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%0*" PRIu64 SEG_SUFFIX, a->dir,
	    SEG_NAME_DIGITS, first_seq);
	a->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->fd == -1)
		return -1;
	a->seg_size = lseek(a->fd, 0, SEEK_END);
	/* The new directory entry must survive a crash as well. */
	return audit_fsync_dir(a->dir);
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

/*
 * Builds the record for seq; the caller holds the lock (prev is read).
 * cp, when not NULL, is the checkpoint member.
 */
static char *
format_record(struct audit *a, const struct audit_event *ev, uint64_t seq,
    json_t *cp)
{
	struct auditjson_head h;
	char ts[48];

	now_rfc3339(ts, sizeof(ts));
	h.seq = seq;
	h.time = ts;
	h.chain = a->chain;
	h.prev = a->prev;
	/* Compact output holds no newline: one record, one line. */
	return auditjson_record(&h, ev, cp);
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
		if (audit_open_segment(a, first) == -1) {
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
int
audit_seal_mac(struct audit *a, const uint8_t prev[SEAL_LEN], const char *buf,
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

	if ((r = audit_seal_mac(a, a->seal_prev, buf, len, mac)) != 0) {
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

	if (a->pend == NULL && a->spare != NULL) {
		a->pend = a->spare;
		a->pend_cap = a->spare_cap;
		a->spare = NULL;
		a->spare_cap = 0;
	}
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
	audit_line_hash(line, len, a->prev);
	a->next_seq++;
	a->since_cp = is_cp ? 0 : a->since_cp + 1;
	return 0;
}

/* Formats and queues a record; *my receives its seq.  Lock held. */
int
audit_queue_record(struct audit *a, const struct audit_event *ev, json_t *cp,
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

static int write_all(int fd, const char *p, size_t len);

/* Writes path atomically: a temporary file, fsync'd, renamed over it. */
int
audit_write_file(const char *path, const char *text)
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
	if (audit_mkdir_p(dir) == -1 || audit_write_file(path, note) == -1 ||
	    (snprintf(path, sizeof(path), "%s/latest", dir) > 0 &&
	    audit_write_file(path, note) == -1))
		log_error("audit: cannot publish checkpoint %" PRIu64 " to "
		    "%s: %s", size, dir, strerror(errno));
}

/* Keeps a copy of a signed checkpoint for proofs.  Lock held (or open). */
int
audit_cp_remember(struct audit *a, uint64_t size, const char *note)
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
const char *
audit_cp_find(struct audit *a, uint64_t size)
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

int
audit_unhex32(const char *s, uint8_t out[32])
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

int
audit_anchor_parse(const char *v, struct anchor *an)
{
	char chain[256], hex[65];
	uint64_t base, size;
	int used = 0;

	if (sscanf(v, ANCHOR_MAGIC "\nchain=%255[^\n]\nbase=%" SCNu64
	    "\nsize=%" SCNu64 "\nroot=%64[0-9a-f]\n%n", chain, &base, &size,
	    hex, &used) != 4 || used == 0 || v[used] != '\0' ||
	    audit_unhex32(hex, an->root) != 0 || base == 0)
		return -1;
	snprintf(an->chain, sizeof(an->chain), "%s", chain);
	an->base = base;
	an->size = size;
	an->present = 1;
	return 0;
}

int
audit_anchor_position(const char *v, uint64_t *pos)
{
	struct anchor an;

	*pos = 0;
	if (audit_anchor_parse(v, &an) != 0)
		return KMS_ERR_INVALID_ARGUMENT;
	*pos = an.base + an.size;
	return 0;
}

static void
tree_incomplete(struct audit *a)
{
	log_error("audit: the Merkle tree of %s is incomplete until kmsd "
	    "restarts", a->dir);
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
	/* Proofs at this size read its nodes from the files. */
	if (!a->signer.no_tree && audit_tree_flush(a->tree) != 0)
		tree_incomplete(a);
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
		r = audit_queue_record(a, &ev, cp, &seq);
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
	/*
	 * Records queued while the HSM signed are not covered by it.  Without
	 * the tree (v2 = no) a checkpoint counts as covering every record, as
	 * the log before v2 did.
	 */
	a->since_cp = a->signer.no_tree ? 0 : seq - a->base - size;
	a->cp_seq = seq;
	metrics_audit_checkpoint(__atomic_load_n(&a->metrics,
	    __ATOMIC_ACQUIRE), seq);
	a->cp_done = req;
	free(a->cp_note);
	a->cp_note = note;
	a->cp_size = size;
	if (audit_cp_remember(a, size, note) != 0)
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
void *
audit_writer_main(void *arg)
{
	struct audit *a = arg;
	struct audit_waiter *done, *w, **tail;
	void (*notify)(void *, uint64_t);
	void *notify_arg;
	char *buf, base[SHA256_DIGEST_LENGTH * 2 + 1], seal[160];
	uint8_t mac[SEAL_LEN];
	uint64_t first, last, since;
	struct timespec t0, t1;
	size_t len, cap;
	int r;

	pthread_setname_np(pthread_self(), "kms-audit");
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
		cap = a->pend_cap;
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
		 * leaves proofs unavailable until the next start.  Its nodes
		 * are written before each checkpoint (see audittree.h).
		 */
		if (r == 0 && !a->signer.no_tree &&
		    (audit_tree_add_lines(a->tree, buf, len) != 0 ||
		    (audit_tree_pending(a->tree) > AUDIT_TREE_PENDING_MAX &&
		    audit_tree_flush(a->tree) != 0)))
			tree_incomplete(a);
		pthread_mutex_lock(&a->lock);
		/* The buffer serves a later batch, unless a burst grew it. */
		if (a->spare == NULL && cap <= SPARE_CAP_MAX) {
			a->spare = buf;
			a->spare_cap = cap;
		} else
			free(buf);
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
		notify = r == 0 ? a->notify : NULL;
		notify_arg = a->notify_arg;
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
		while ((w = done) != NULL) {
			done = w->next;
			w->done(w, w->err);
		}
		if (notify != NULL)
			notify(notify_arg, last);
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
int
audit_wait_durable(struct audit *a, uint64_t my, uint64_t gen)
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
int
audit_checkpoint_now(struct audit *a)
{
	uint64_t req, fails = a->cp_fails, gen = a->gen;

	req = ++a->cp_req;
	pthread_cond_signal(&a->wcond);
	while (a->cp_done < req && a->cp_fails == fails)
		pthread_cond_wait(&a->cond, &a->lock);
	if (a->cp_done < req)
		return KMS_ERR_AUDIT;
	return audit_wait_durable(a, a->cp_seq, gen);
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
	return audit_checkpoint_now(a);
}

void *
audit_timer_main(void *arg)
{
	struct audit *a = arg;
	struct timespec ts;

	pthread_setname_np(pthread_self(), "kms-audit-timer");
	pthread_mutex_lock(&a->lock);
	while (!a->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += a->signer.seconds;
		while (!a->stopping && pthread_cond_timedwait(&a->timer_cond,
		    &a->lock, &ts) == 0)
			;
		if (!a->stopping && a->since_cp > 0 && audit_checkpoint_now(a) != 0)
			log_warn("audit: timed checkpoint failed; retrying in "
			    "%u s", a->signer.seconds);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
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
	if ((r = audit_queue_record(a, ev, NULL, seq)) != 0)
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
	if ((r = audit_queue_record(a, ev, NULL, &my)) != 0)
		goto out;
	if ((r = audit_wait_durable(a, my, gen)) == 0)
		*seq = my;
 out:
	pthread_mutex_unlock(&a->lock);
	return r;
}

void
audit_set_notify(struct audit *a, void (*fn)(void *arg, uint64_t durable_seq),
    void *arg)
{
	pthread_mutex_lock(&a->lock);
	a->notify = fn;
	a->notify_arg = arg;
	pthread_mutex_unlock(&a->lock);
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
