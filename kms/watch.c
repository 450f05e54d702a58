/*
 * watch.c: the hub behind WatchAuditRecords (see watch.h): the pump
 * thread, one segment reader per watcher, the bounded queues and the
 * watchers' lives.
 *
 * A watcher is counted (refs) by the transport until its call closes, by
 * the hub's list while it streams, by each message in flight and by the
 * pump while it serves it; whoever lets the last count go frees it and
 * has the transport free its side (ops->release).  Lock order: the hub's
 * lock is taken alone; the transport's callbacks are called without it.
 */
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "auditread.h"
#include "kmserr.h"
#include "log.h"
#include "watch.h"

#define WATCH_SCAN 4096			/* lines a watcher reads per pass */
#define WATCH_BUF (2 * AUDIT_LINE_MAX)	/* a reader's window of its file */
#define WATCH_STR_MAX 1024		/* a filter string */

struct wmsg {
	struct wmsg *next;
	uint64_t seq;
	uint8_t *body;
	size_t len;
};

struct watcher {
	struct watch_hub *hub;

	/* Set at open, then read by the pump alone. */
	struct audit_filter f;
	char *fstr[6];			/* the filter's copies, as copy_filter */
	int64_t from, to;
	uint64_t after;
	watch_pack_fn *pack;

	/* The reader: the pump's alone. */
	int fd;				/* the segment being read, or -1 */
	char *buf;			/* bytes of the file from boff */
	off_t boff;
	size_t blen, bpos;
	uint64_t pos;			/* the last seq read */
	int caught_up;			/* has read everything durable once */

	/* The hub's lock guards the rest. */
	struct watch_ops ops;
	void *arg;
	int started, listed, ended, busy;
	unsigned int refs;
	struct wmsg *qhead, *qtail;
	unsigned int qlen;
	uint64_t last_sent;		/* the seq of the last message sent */
	struct watcher *next;		/* in the hub's list */
};

struct watch_hub {
	char dir[4096];			/* the chain directory */
	unsigned int max, qmax;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* gen moved, or stopping */
	uint64_t durable;
	uint64_t gen;			/* bumped when the pump has work */
	int stopping;
	unsigned int nopen;		/* watchers opened and not freed */
	struct watcher *list;		/* started and not ended */
	struct watcher **pass;		/* the pump's snapshot of the list */
	pthread_t pump;
	int pump_running;
};

static void
queue_free(struct watcher *w)
{
	struct wmsg *m;

	while ((m = w->qhead) != NULL) {
		w->qhead = m->next;
		free(m->body);
		free(m);
	}
	w->qtail = NULL;
	w->qlen = 0;
}

/* Frees a watcher whose last count went; without the hub's lock. */
static void
watcher_free(struct watcher *w)
{
	struct watch_hub *h = w->hub;
	size_t i;

	if (w->started)
		w->ops.release(w->arg);
	pthread_mutex_lock(&h->lock);
	h->nopen--;
	pthread_mutex_unlock(&h->lock);
	queue_free(w);
	if (w->fd != -1)
		close(w->fd);
	for (i = 0; i < sizeof(w->fstr) / sizeof(w->fstr[0]); i++)
		free(w->fstr[i]);
	free(w->buf);
	free(w);
}

/* Lets one count go, lock held; 1 when it was the last one. */
static int
unref_locked(struct watcher *w)
{
	return --w->refs == 0;
}

static void
put(struct watcher *w)
{
	struct watch_hub *h = w->hub;
	int last;

	pthread_mutex_lock(&h->lock);
	last = unref_locked(w);
	pthread_mutex_unlock(&h->lock);
	if (last)
		watcher_free(w);
}

/* Takes w out of the hub's list; lock held, and a count besides the list's. */
static void
unlist_locked(struct watcher *w)
{
	struct watcher **pp;

	if (!w->listed)
		return;
	for (pp = &w->hub->list; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	w->listed = 0;
	w->next = NULL;
	unref_locked(w);
}

/*
 * Ends a started watcher: its queue goes and the transport ends the call.
 * The caller holds a count.
 */
static void
end(struct watcher *w, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
end(struct watcher *w, int err, const char *fmt, ...)
{
	struct watch_hub *h = w->hub;
	char msg[256];
	va_list ap;

	pthread_mutex_lock(&h->lock);
	if (w->ended) {
		pthread_mutex_unlock(&h->lock);
		return;
	}
	w->ended = 1;
	queue_free(w);
	unlist_locked(w);
	pthread_mutex_unlock(&h->lock);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("audit: a watcher ends: %s", msg);
	w->ops.end(w->arg, err, msg);
}

/*
 * Hands the next queued message to the transport when none is in flight;
 * lock held.  Returns the message to send (after unlocking), or NULL.
 */
static struct wmsg *
next_locked(struct watcher *w)
{
	struct wmsg *m;

	if (w->busy || w->ended || (m = w->qhead) == NULL)
		return NULL;
	if ((w->qhead = m->next) == NULL)
		w->qtail = NULL;
	w->qlen--;
	w->busy = 1;
	w->refs++;
	w->last_sent = m->seq;
	/* A reader catching up reads on once its queue is half empty. */
	if (w->qlen == w->hub->qmax / 2) {
		w->hub->gen++;
		pthread_cond_signal(&w->hub->cond);
	}
	return m;
}

static void
send_msg(struct watcher *w, struct wmsg *m)
{
	if (m == NULL)
		return;
	w->ops.send(w->arg, m->body, m->len);
	free(m);
}

/*
 * Opens the segment that holds seq first_seq (its name) or, with
 * first_seq 0, the one where the records after w->after begin.
 */
static int
open_segment(struct watcher *w, uint64_t first_seq)
{
	struct dirent **segs = NULL;
	char path[4200];
	uint64_t first = first_seq;
	int i, n;

	if (first == 0) {
		if ((n = scandir(w->hub->dir, &segs, audit_segment_filter,
		    alphasort)) < 0)
			return -1;
		if (n > 0)
			first = strtoull(segs[audit_segment_start(segs, n,
			    w->after)]->d_name, NULL, 10);
		for (i = 0; i < n; i++)
			free(segs[i]);
		free(segs);
		if (first == 0) {
			errno = ENOENT;
			return -1;
		}
	}
	snprintf(path, sizeof(path), "%s/%0*" PRIu64 ".jsonl", w->hub->dir,
	    20, first);
	if (w->fd != -1)
		close(w->fd);
	if ((w->fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	w->boff = 0;
	w->blen = w->bpos = 0;
	w->pos = first - 1;
	return 0;
}

/*
 * The next complete line of the chain (without its newline), moving on to
 * the next segment at the end of one.  1: a line; 0: none more durable
 * yet; -1: the log cannot be read (errno, or 0 for a torn line).
 */
static int
next_line(struct watcher *w, uint64_t durable, char **line, size_t *len)
{
	char *nl;
	ssize_t n;

	for (;;) {
		if ((nl = memchr(w->buf + w->bpos, '\n', w->blen -
		    w->bpos)) != NULL) {
			*line = w->buf + w->bpos;
			*len = (size_t)(nl - *line);
			*nl = '\0';	/* a string, as records are read */
			w->bpos += *len + 1;
			return 1;
		}
		/* Keep the partial line, read on after it. */
		memmove(w->buf, w->buf + w->bpos, w->blen - w->bpos);
		w->boff += (off_t)w->bpos;
		w->blen -= w->bpos;
		w->bpos = 0;
		if (w->blen == WATCH_BUF) {
			errno = EFBIG;
			return -1;
		}
		n = pread(w->fd, w->buf + w->blen, WATCH_BUF - w->blen,
		    w->boff + (off_t)w->blen);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n > 0) {
			w->blen += (size_t)n;
			continue;
		}
		/* The end of the segment. */
		if (w->pos >= durable)
			return 0;
		if (w->blen != 0) {
			errno = 0;
			return -1;
		}
		/* A durable record beyond it starts the next segment. */
		if (open_segment(w, w->pos + 1) != 0)
			return -1;
	}
}

/* Queues a packed record; 0, or -1 when the queue is full. */
static int
enqueue(struct watcher *w, uint64_t seq, uint8_t *body, size_t len)
{
	struct watch_hub *h = w->hub;
	struct wmsg *m, *send;

	if ((m = calloc(1, sizeof(*m))) == NULL) {
		free(body);
		return -2;
	}
	m->seq = seq;
	m->body = body;
	m->len = len;
	pthread_mutex_lock(&h->lock);
	if (w->ended || w->qlen >= h->qmax) {
		pthread_mutex_unlock(&h->lock);
		free(body);
		free(m);
		return w->ended ? 0 : -1;
	}
	if (w->qtail != NULL)
		w->qtail->next = m;
	else
		w->qhead = m;
	w->qtail = m;
	w->qlen++;
	send = next_locked(w);
	pthread_mutex_unlock(&h->lock);
	send_msg(w, send);
	return 0;
}

/*
 * Reads w's records up to durable and queues those that pass its
 * filters.  Returns 1 when w wants another pass at once (it stopped at
 * the scan bound with room left in its queue).
 */
static int
serve(struct watcher *w, uint64_t durable)
{
	struct watch_hub *h = w->hub;
	struct audit_record rec;
	json_t *o;
	unsigned int room, scanned = 0;
	uint8_t *body;
	size_t len;
	char *line;
	int r;

	pthread_mutex_lock(&h->lock);
	room = w->ended ? 0 : h->qmax - w->qlen;
	pthread_mutex_unlock(&h->lock);
	if (room == 0 && (!w->caught_up || w->ended))
		return 0;
	if (w->fd == -1 && open_segment(w, 0) != 0) {
		end(w, KMS_ERR_AUDIT, "cannot read the audit chain: %s",
		    strerror(errno));
		return 0;
	}
	while (w->pos < durable && scanned < WATCH_SCAN &&
	    (w->caught_up || room > 0)) {
		if ((r = next_line(w, durable, &line, &len)) == 0)
			break;
		if (r < 0) {
			end(w, KMS_ERR_AUDIT, "cannot read the audit chain "
			    "after seq %" PRIu64 ": %s", w->pos, errno != 0 ?
			    strerror(errno) : "a torn line");
			return 0;
		}
		scanned++;
		if (audit_record_parse(line, len, &rec, &o) != 0) {
			end(w, KMS_ERR_AUDIT, "the audit chain holds a line "
			    "that is not a record after seq %" PRIu64, w->pos);
			return 0;
		}
		if (rec.seq > durable) {
			/* Written but not durable yet: read it again later. */
			line[len] = '\n';
			w->bpos -= len + 1;
			json_decref(o);
			break;
		}
		w->pos = rec.seq;
		r = 0;
		if (rec.seq > w->after && audit_filter_match(&w->f, w->from,
		    w->to, &rec)) {
			if ((r = w->pack(&rec, &body, &len)) == 0)
				r = enqueue(w, rec.seq, body, len);
			room = room > 0 ? room - 1 : 0;
		}
		json_decref(o);
		if (r == -1) {
			end(w, KMS_ERR_RESOURCE_EXHAUSTED, "this reader fell %u "
			    "records behind the audit log and was cut off: watch "
			    "again with after_seq %" PRIu64, h->qmax,
			    w->last_sent);
			return 0;
		}
		if (r != 0) {
			end(w, KMS_ERR_NOMEM, "out of memory");
			return 0;
		}
	}
	if (w->pos >= durable)
		w->caught_up = 1;
	return w->pos < durable && scanned == WATCH_SCAN;
}

static void *
pump_main(void *arg)
{
	struct watch_hub *h = arg;
	struct watcher *w;
	uint64_t seen = 0, durable;
	unsigned int i, n;
	int more;

	pthread_setname_np(pthread_self(), "kms-watch");
	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		if (h->gen == seen) {
			pthread_cond_wait(&h->cond, &h->lock);
			continue;
		}
		seen = h->gen;
		durable = h->durable;
		for (n = 0, w = h->list; w != NULL && n < h->max; w = w->next) {
			w->refs++;
			h->pass[n++] = w;
		}
		pthread_mutex_unlock(&h->lock);
		for (more = 0, i = 0; i < n; i++) {
			more |= serve(h->pass[i], durable);
			put(h->pass[i]);
		}
		pthread_mutex_lock(&h->lock);
		if (more)
			h->gen++;
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

int
watch_hub_new(struct audit *a, unsigned int max_watchers,
    unsigned int queue_max, struct watch_hub **out, struct kms_status *st)
{
	struct watch_hub *h;

	*out = NULL;
	if ((h = calloc(1, sizeof(*h))) == NULL ||
	    (h->pass = calloc(max_watchers + 1, sizeof(*h->pass))) == NULL) {
		free(h);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	snprintf(h->dir, sizeof(h->dir), "%s", audit_chain_dir(a));
	h->max = max_watchers;
	h->qmax = queue_max > 0 ? queue_max : 1;
	h->durable = audit_last_seq(a);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	if (pthread_create(&h->pump, NULL, pump_main, h) != 0) {
		pthread_mutex_destroy(&h->lock);
		pthread_cond_destroy(&h->cond);
		free(h->pass);
		free(h);
		return kms_status_set(st, KMS_ERR_INTERNAL,
		    "cannot start the audit watch thread");
	}
	h->pump_running = 1;
	*out = h;
	return 0;
}

void
watch_hub_notify(void *arg, uint64_t durable_seq)
{
	struct watch_hub *h = arg;

	pthread_mutex_lock(&h->lock);
	if (durable_seq > h->durable)
		h->durable = durable_seq;
	if (h->list != NULL) {
		h->gen++;
		pthread_cond_signal(&h->cond);
	}
	pthread_mutex_unlock(&h->lock);
}

void
watch_hub_shutdown(struct watch_hub *h)
{
	struct watcher *w;
	unsigned int i, n = 0;

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stopping = 1;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (h->pump_running)
		pthread_join(h->pump, NULL);
	h->pump_running = 0;
	/* The pump is gone: its snapshot array is free for this. */
	pthread_mutex_lock(&h->lock);
	for (w = h->list; w != NULL && n < h->max; w = w->next) {
		w->refs++;
		h->pass[n++] = w;
	}
	pthread_mutex_unlock(&h->lock);
	for (i = 0; i < n; i++) {
		end(h->pass[i], KMS_ERR_UNAVAILABLE, "kmsd is stopping: "
		    "watch again with after_seq %" PRIu64 " once it is back",
		    h->pass[i]->last_sent);
		put(h->pass[i]);
	}
}

void
watch_hub_free(struct watch_hub *h)
{
	if (h == NULL)
		return;
	watch_hub_shutdown(h);
	if (h->nopen != 0)
		log_error("audit: %u watchers still open at exit", h->nopen);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h->pass);
	free(h);
}

static int
copy_filter(struct watcher *w, const struct audit_filter *f)
{
	const char *in[] = { f->identity, f->key, f->rpc, f->result,
	    f->time_from, f->time_to };
	const char **outp[] = { &w->f.identity, &w->f.key, &w->f.rpc,
	    &w->f.result, &w->f.time_from, &w->f.time_to };
	size_t i;

	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		if (in[i] == NULL || in[i][0] == '\0')
			continue;
		if (strlen(in[i]) > WATCH_STR_MAX)
			return KMS_ERR_INVALID_ARGUMENT;
		if ((w->fstr[i] = strdup(in[i])) == NULL)
			return KMS_ERR_NOMEM;
		*outp[i] = w->fstr[i];
	}
	return 0;
}

int
watch_open(struct watch_hub *h, uint64_t after_seq,
    const struct audit_filter *f, watch_pack_fn *pack, struct watcher **out,
    struct kms_status *st)
{
	struct watcher *w;
	size_t i;
	int r;

	*out = NULL;
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->buf = malloc(WATCH_BUF)) == NULL) {
		free(w);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	w->hub = h;
	w->fd = -1;
	w->after = after_seq;
	w->last_sent = after_seq;
	w->pack = pack;
	w->refs = 1;
	if ((r = copy_filter(w, f)) != 0) {
		r = r == KMS_ERR_NOMEM ? kms_status_set(st, r, "out of memory") :
		    kms_status_set(st, r, "a filter longer than %d characters",
		    WATCH_STR_MAX);
		goto fail;
	}
	if ((r = audit_filter_bounds(&w->f, &w->from, &w->to, st)) != 0)
		goto fail;
	pthread_mutex_lock(&h->lock);
	if (h->stopping)
		r = kms_status_set(st, KMS_ERR_UNAVAILABLE, "kmsd is stopping");
	else if (h->nopen >= h->max)
		r = kms_status_set(st, KMS_ERR_RESOURCE_EXHAUSTED, "%u audit "
		    "watchers are open already, the most this kmsd serves "
		    "([audit] max_watchers)", h->max);
	else
		h->nopen++;
	pthread_mutex_unlock(&h->lock);
	if (r != 0)
		goto fail;
	*out = w;
	return 0;
 fail:
	for (i = 0; i < sizeof(w->fstr) / sizeof(w->fstr[0]); i++)
		free(w->fstr[i]);
	free(w->buf);
	free(w);
	return r;
}

int
watch_start(struct watcher *w, const struct watch_ops *ops, void *arg)
{
	struct watch_hub *h = w->hub;

	pthread_mutex_lock(&h->lock);
	if (h->stopping) {
		pthread_mutex_unlock(&h->lock);
		return KMS_ERR_UNAVAILABLE;
	}
	w->ops = *ops;
	w->arg = arg;
	w->started = 1;
	w->listed = 1;
	w->refs++;
	w->next = h->list;
	h->list = w;
	h->gen++;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	return 0;
}

void
watch_drop(struct watcher *w)
{
	if (w != NULL)
		put(w);
}

void
watch_sent(struct watcher *w, int ok)
{
	struct watch_hub *h = w->hub;
	struct wmsg *m = NULL;
	int last;

	pthread_mutex_lock(&h->lock);
	w->busy = 0;
	if (ok)
		m = next_locked(w);
	last = unref_locked(w);
	pthread_mutex_unlock(&h->lock);
	send_msg(w, m);
	if (last)
		watcher_free(w);
}

void
watch_closed(struct watcher *w)
{
	struct watch_hub *h = w->hub;
	int last;

	pthread_mutex_lock(&h->lock);
	w->ended = 1;
	queue_free(w);
	unlist_locked(w);
	last = unref_locked(w);	/* the transport's */
	pthread_mutex_unlock(&h->lock);
	if (last)
		watcher_free(w);
}
