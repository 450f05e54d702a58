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
flush_batch(struct audit *a, const char *buf, size_t len, uint64_t first)
{
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
	if (write_all(a->fd, buf, len) == -1 ||
	    (!a->nosync && fdatasync(a->fd) == -1)) {
		saved = errno;
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
	a->since_cp = seq - 1 - size;
	a->cp_seq = seq;
	metrics_audit_checkpoint(__atomic_load_n(&a->metrics,
	    __ATOMIC_ACQUIRE), seq);
	a->cp_done = req;
	free(a->cp_note);
	a->cp_note = note;
	a->cp_size = size;
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
	char *buf, base[SHA256_DIGEST_LENGTH * 2 + 1];
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
		r = flush_batch(a, buf, len, first);
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
	char path[4400], tmp[4500], *pem = NULL;
	size_t len;
	int fd = -1, r;

	snprintf(path, sizeof(path), "%s/" AUDIT_KEY_PREFIX "%.16s.pem",
	    a->dir, a->key_fpr);
	if ((r = pubkey_pem(a->signer.spki, a->signer.spki_len,
	    &a->key_pem)) != 0)
		return kms_status_set(st, r, "cannot encode the audit key");
	if (access(path, F_OK) == 0)
		return 0;
	pem = a->key_pem;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	len = strlen(pem);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1 || write_all(fd, pem, len) == -1 || fsync(fd) == -1 ||
	    rename(tmp, path) == -1 || fsync_dir(a->dir) == -1) {
		r = kms_status_set(st, KMS_ERR_AUDIT, "cannot write %s: %s",
		    path, strerror(errno));
		unlink(tmp);
	} else
		r = 0;
	if (fd != -1)
		close(fd);
	return r;
}

static int
tree_add_line(const char *line, size_t len, void *arg)
{
	return audit_tree_add(arg, line, len);
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
	if ((r = audit_scan(a->dir, tree_add_line, a->tree, st)) != 0) {
		if (st->err == 0)
			kms_status_set(st, r, "cannot hash the records of %s",
			    a->dir);
		return r;
	}
	if ((r = audit_tree_flush(a->tree)) != 0)
		return kms_status_set(st, r, "cannot write the Merkle tree of "
		    "%s", a->dir);
	a->tree_size = audit_tree_size(a->tree);
	if (a->tree_size != a->next_seq - 1)
		return kms_status_set(st, KMS_ERR_AUDIT, "%s holds %" PRIu64
		    " records but its last says seq %" PRIu64 "; inspect it "
		    "with kmsctl audit verify %s", a->dir, a->tree_size,
		    a->next_seq - 1, a->dir);
	return 0;
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

int
audit_open(const char *dir, const char *chain, size_t segment_max,
    const struct audit_signer *signer, struct audit **out,
    struct kms_status *st)
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
	if ((r = rebuild_tree(a, st)) != 0)
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
	if (signer != NULL && signer->sign != NULL) {
		if ((r = setup_signer(a, signer, st)) != 0 ||
		    (r = checkpoint_now(a)) != 0) {
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
	if (a->lock_fd != -1)
		close(a->lock_fd);
	audit_tree_close(a->tree);
	free(a->cp_note);
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
