/*
 * tlsfront.c: kmsd's connection layer (see tlsfront.h).
 *
 * Descriptors.  A verified connection costs three descriptors: its TCP
 * socket, the RPC layer's end of its socketpair and ours.  The cap and a
 * reserve are sized from RLIMIT_NOFILE so that a flood can never take the
 * descriptors the HSM, the audit log and a reload need; a spare
 * descriptor lets the accept loop drain its queue even if the limit is
 * reached anyway.
 *
 * Identity by descriptor number.  The RPC layer names a call's connection
 * only by the number of its socketpair end ("fd:N").  When the RPC layer
 * closes that end, the number is free for the next connection, while a
 * call of the closed one may still wait in the completion queue: it must
 * not be served under the next connection's identity.  So a number stays
 * bound to its closed connection for QUARANTINE_MS: lookups of it answer
 * "closed", and a new socketpair that gets it is moved to another number
 * while /dev/null holds this one.  XXX a call left waiting in the queue
 * for longer than that (every worker busy for QUARANTINE_MS) could still
 * be matched to a later connection on the same number.
 */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "identity.h"
#include "kmserr.h"
#include "log.h"
#include "tlsctx.h"
#include "tlsfront.h"

#define ACCEPT_BATCH 64		/* accepts per wake-up, for fairness */
#define EVENTS_MAX 256
#define BUF_SIZE 16384
#define QUARANTINE_MS 30000
#define LOG_PER_SECOND 10	/* refusals logged per second, at most */

enum ep_kind { EP_LISTEN = 1, EP_WAKE, EP_TCP, EP_PAIR };

struct ep {
	enum ep_kind kind;
	struct conn *c;
	uint32_t mask;			/* events registered */
};

/* What the RPC layer's lookups see: one per handed-off descriptor. */
struct entry {
	int fd;				/* the RPC layer's number */
	int closed;
	int held;			/* fd is ours now (/dev/null) */
	uint64_t closed_at;		/* ms, monotonic */
	struct conn *owner;		/* while its connection is open */
	struct tlsfront_peer peer;
	struct entry *hnext;		/* hash chain */
	struct entry *qnext;		/* quarantine list */
};

struct conn {
	struct tlsfront *f;
	int fd;				/* TCP */
	int sp;				/* our end of the socketpair, or -1 */
	SSL *ssl;
	int open;			/* handshake done, handed off */
	int dead;
	uint64_t deadline;		/* of the handshake */
	struct conn *hsprev, *hsnext;	/* handshake list, oldest first */
	struct conn *prev, *next;	/* every connection */
	struct conn *deadnext;
	struct entry *ent;
	struct ep ep_tcp, ep_pair;
	unsigned char *a, *b;		/* a: TLS -> pair, b: pair -> TLS */
	size_t a_off, a_len, b_off, b_len;
	int rd_want, wr_want;		/* SSL_ERROR_WANT_* or 0 */
	/*
	 * Worth a read: set by an event on that side, cleared once a read
	 * came up short, so that no read is made only to learn EAGAIN.
	 */
	int tls_readable, pair_readable;
	int pair_eof;
	char addr[64];
};

struct tlsfront {
	struct tlsfront_params p;
	int epfd, lfd, wakefd, nullfd, spare;
	struct ep ep_listen, ep_wake;
	struct sockaddr_storage bound;
	socklen_t boundlen;
	pthread_t thread;
	int running;

	pthread_mutex_t lock;		/* guards ts, the table, the flags */
	struct tls_set *ts;
	struct entry **table;
	size_t tsize;
	int stop, quiesce;
	uint64_t accepted;		/* atomic: connections accepted */

	/* Event thread only (nconns also read atomically by the metrics). */
	unsigned int nconns;
	struct conn *all;
	struct conn *hshead, *hstail;
	struct conn *deadlist;
	struct entry *qhead, *qtail;
	uint64_t log_second;
	unsigned int log_count, log_dropped;
	uint64_t overcap, evicted;
};

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* At most LOG_PER_SECOND refusal messages a second; counts the rest. */
static int
may_log(struct tlsfront *f)
{
	uint64_t s = now_ms() / 1000;

	if (s != f->log_second) {
		if (f->log_dropped > 0)
			log_info("tls: %u more refused connections not logged",
			    f->log_dropped);
		f->log_second = s;
		f->log_count = 0;
		f->log_dropped = 0;
	}
	if (f->log_count < LOG_PER_SECOND) {
		f->log_count++;
		return 1;
	}
	f->log_dropped++;
	return 0;
}

/* The table of handed-off descriptors (lock held). */
static struct entry **
slot_of(struct tlsfront *f, int fd)
{
	struct entry **pp = &f->table[(size_t)fd % f->tsize];

	while (*pp != NULL && (*pp)->fd != fd)
		pp = &(*pp)->hnext;
	return pp;
}

static int
ep_set(struct tlsfront *f, int fd, struct ep *ep, uint32_t mask)
{
	struct epoll_event ev;
	int op;

	if (ep->mask == mask)
		return 0;
	memset(&ev, 0, sizeof(ev));
	ev.events = mask;
	ev.data.ptr = ep;
	if (mask == 0)
		op = EPOLL_CTL_DEL;
	else
		op = ep->mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(f->epfd, op, fd, &ev) != 0)
		return -1;
	ep->mask = mask;
	return 0;
}

static void
hs_unlink(struct tlsfront *f, struct conn *c)
{
	if (c->hsprev != NULL)
		c->hsprev->hsnext = c->hsnext;
	else if (f->hshead == c)
		f->hshead = c->hsnext;
	if (c->hsnext != NULL)
		c->hsnext->hsprev = c->hsprev;
	else if (f->hstail == c)
		f->hstail = c->hsprev;
	c->hsprev = c->hsnext = NULL;
}

/* Starts the quarantine of a handed-off number (see the top). */
static void
entry_close(struct tlsfront *f, struct entry *e)
{
	pthread_mutex_lock(&f->lock);
	if (e->closed) {
		pthread_mutex_unlock(&f->lock);
		return;
	}
	e->closed = 1;
	pthread_mutex_unlock(&f->lock);
	e->closed_at = now_ms();
	e->qnext = NULL;
	if (f->qtail != NULL)
		f->qtail->qnext = e;
	else
		f->qhead = e;
	f->qtail = e;
}

/* Closes a connection now; it is freed after the current batch. */
static void
conn_close(struct tlsfront *f, struct conn *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	if (!c->open)
		hs_unlink(f, c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		f->all = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	if (c->sp != -1)
		close(c->sp);
	if (c->ent != NULL) {
		c->ent->owner = NULL;
		entry_close(f, c->ent);
	}
	__atomic_sub_fetch(&f->nconns, 1, __ATOMIC_RELAXED);
	c->deadnext = f->deadlist;
	f->deadlist = c;
}

static void
free_dead(struct tlsfront *f)
{
	struct conn *c;

	while ((c = f->deadlist) != NULL) {
		f->deadlist = c->deadnext;
		if (c->a != NULL)
			OPENSSL_clear_free(c->a, BUF_SIZE);
		if (c->b != NULL)
			OPENSSL_clear_free(c->b, BUF_SIZE);
		free(c);
	}
}

/* Ends quarantines that are over. */
static void
reap_quarantine(struct tlsfront *f, uint64_t now)
{
	struct entry *e, **pp;

	while ((e = f->qhead) != NULL && now - e->closed_at >= QUARANTINE_MS) {
		if (e->owner != NULL)
			conn_close(f, e->owner);
		f->qhead = e->qnext;
		if (f->qhead == NULL)
			f->qtail = NULL;
		pthread_mutex_lock(&f->lock);
		pp = slot_of(f, e->fd);
		if (*pp == e)
			*pp = e->hnext;
		pthread_mutex_unlock(&f->lock);
		if (e->held)
			close(e->fd);
		free(e);
	}
}

/*
 * The socketpair a verified connection is handed off through.  When the
 * RPC layer's end gets a number still bound to an earlier connection,
 * the new end moves to another number and /dev/null holds the old one
 * until its quarantine is over.
 */
static int
make_pair(struct tlsfront *f, int sp[2])
{
	struct entry *e;
	int moved;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    sp) != 0)
		return -1;
	for (;;) {
		pthread_mutex_lock(&f->lock);
		e = *slot_of(f, sp[0]);
		pthread_mutex_unlock(&f->lock);
		if (e == NULL)
			return 0;
		if ((moved = fcntl(sp[0], F_DUPFD_CLOEXEC, 0)) == -1)
			goto fail;
		if (dup2(f->nullfd, sp[0]) == -1) {
			close(moved);
			goto fail;
		}
		/* The kernel reused the number: the RPC layer closed it. */
		entry_close(f, e);
		e->held = 1;
		sp[0] = moved;
	}
 fail:
	close(sp[0]);
	close(sp[1]);
	return -1;
}

static void pump(struct tlsfront *f, struct conn *c);

/* The handshake is done: check the identity and hand the stream off. */
static void
conn_verified(struct tlsfront *f, struct conn *c)
{
	struct entry *e;
	X509 *x;
	long vr;
	int sp[2];

	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (c->a = malloc(BUF_SIZE)) == NULL ||
	    (c->b = malloc(BUF_SIZE)) == NULL) {
		free(e);
		log_error("tls: out of memory: connection from %s closed",
		    c->addr);
		conn_close(f, c);
		return;
	}
	x = SSL_get0_peer_certificate(c->ssl);
	if (identity_from_cert(x, &e->peer.id) == 0 &&
	    (vr = SSL_get_verify_result(c->ssl)) != X509_V_OK) {
		/* Let through by verify_cb for identity.c: never serve it. */
		e->peer.id.name[0] = '\0';
		snprintf(e->peer.id.reason, sizeof(e->peer.id.reason),
		    "the certificate is not meant for TLS client "
		    "authentication (%s)", X509_verify_cert_error_string(vr));
	}
	if (e->peer.id.name[0] == '\0' && may_log(f))
		log_info("tls: %s: certificate refused: %s", c->addr,
		    e->peer.id.reason);
	snprintf(e->peer.addr, sizeof(e->peer.addr), "%s", c->addr);
	if (make_pair(f, sp) != 0) {
		log_error("tls: cannot make a socketpair: %s: connection from "
		    "%s closed", strerror(errno), c->addr);
		free(e);
		conn_close(f, c);
		return;
	}
	e->fd = sp[0];
	pthread_mutex_lock(&f->lock);
	e->hnext = f->table[(size_t)e->fd % f->tsize];
	f->table[(size_t)e->fd % f->tsize] = e;
	pthread_mutex_unlock(&f->lock);
	c->ent = e;
	e->owner = c;
	c->sp = sp[1];
	/* The handshake's last read may have brought application data. */
	c->tls_readable = c->pair_readable = 1;
	c->open = 1;
	hs_unlink(f, c);
	f->p.handoff(f->p.arg, sp[0]);
	log_debug("tls: %s: connected as \"%s\" (fd:%d)", c->addr,
	    e->peer.id.name, sp[0]);
	pump(f, c);
}

static void
handshake(struct tlsfront *f, struct conn *c)
{
	char why[160];
	long vr;
	int r, e;

	ERR_clear_error();
	if (c->ssl == NULL) {
		pthread_mutex_lock(&f->lock);
		c->ssl = SSL_new(f->ts->ctx);
		pthread_mutex_unlock(&f->lock);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
			ERR_clear_error();
			conn_close(f, c);
			return;
		}
		SSL_set_accept_state(c->ssl);
	}
	if ((r = SSL_do_handshake(c->ssl)) == 1) {
		conn_verified(f, c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (ep_set(f, c->fd, &c->ep_tcp, e == SSL_ERROR_WANT_READ ?
		    EPOLLIN : EPOLLOUT) != 0)
			conn_close(f, c);
		return;
	}
	vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK) {
		if (may_log(f))
			log_info("tls: %s: handshake refused: %s", c->addr,
			    X509_verify_cert_error_string(vr));
	} else if (e == SSL_ERROR_SSL && ERR_peek_error() != 0) {
		ERR_error_string_n(ERR_peek_error(), why, sizeof(why));
		log_debug("tls: %s: handshake failed: %s", c->addr, why);
	}
	ERR_clear_error();
	conn_close(f, c);
}

/* An SSL_read/SSL_write result: 1 progress, 0 blocked, -1 closed. */
static int
ssl_result(struct conn *c, int n, int *want)
{
	int e;

	if (n > 0) {
		*want = 0;
		return 1;
	}
	e = SSL_get_error(c->ssl, n);
	ERR_clear_error();
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*want = e;
		return 0;
	}
	return -1;
}

/* Moves bytes both ways until nothing moves, then waits for events. */
static void
pump(struct tlsfront *f, struct conn *c)
{
	uint32_t mtcp = 0, mpair = 0;
	ssize_t n;
	int got, moved, r;

	do {
		moved = 0;
		if (c->a_len == 0 && c->tls_readable) {
			got = SSL_read(c->ssl, c->a, BUF_SIZE);
			if ((r = ssl_result(c, got, &c->rd_want)) < 0)
				goto closed;
			if (r > 0) {
				c->a_len = (size_t)got;
				moved = 1;
				/* Nothing buffered: epoll says when more comes. */
				if (!SSL_has_pending(c->ssl)) {
					c->tls_readable = 0;
					c->rd_want = SSL_ERROR_WANT_READ;
				}
			} else
				c->tls_readable = 0;
		}
		if (c->a_len > c->a_off) {
			n = write(c->sp, c->a + c->a_off, c->a_len - c->a_off);
			if (n > 0) {
				c->a_off += (size_t)n;
				if (c->a_off == c->a_len) {
					/* Requests carry plaintexts. */
					OPENSSL_cleanse(c->a, c->a_len);
					c->a_off = c->a_len = 0;
				}
				moved = 1;
			} else if (errno != EAGAIN && errno != EINTR)
				goto closed;
		}
		if (c->b_len == 0 && !c->pair_eof && c->pair_readable) {
			n = read(c->sp, c->b, BUF_SIZE);
			if (n > 0) {
				c->b_len = (size_t)n;
				moved = 1;
				if (n < BUF_SIZE)
					c->pair_readable = 0;
			} else if (n == 0)
				c->pair_eof = 1;
			else if (errno != EAGAIN && errno != EINTR)
				goto closed;
			else
				c->pair_readable = 0;
		}
		if (c->b_len > c->b_off) {
			got = SSL_write(c->ssl, c->b + c->b_off,
			    (int)(c->b_len - c->b_off));
			if ((r = ssl_result(c, got, &c->wr_want)) < 0)
				goto closed;
			if (r > 0) {
				c->b_off += (size_t)got;
				moved = 1;
			}
		}
		if (c->b_off == c->b_len) {
			/* Replies carry plaintexts and data keys. */
			OPENSSL_cleanse(c->b, c->b_len);
			c->b_off = c->b_len = 0;
		}
	} while (moved);
	/*
	 * The RPC layer closed its end: what it said is sent or, for a
	 * client that does not read, dropped.
	 */
	if (c->pair_eof)
		goto closed;
	if (c->a_len == 0)
		mtcp |= c->rd_want == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
	else
		mpair |= EPOLLOUT;
	if (c->b_len > 0)
		mtcp |= c->wr_want == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
	else if (!c->pair_eof)
		mpair |= EPOLLIN;
	if (ep_set(f, c->fd, &c->ep_tcp, mtcp) != 0 ||
	    ep_set(f, c->sp, &c->ep_pair, mpair) != 0)
		goto closed;
	return;
 closed:
	conn_close(f, c);
}

static void
conn_new(struct tlsfront *f, int fd, const struct sockaddr_storage *ss)
{
	struct conn *c;
	int one = 1;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->f = f;
	c->fd = fd;
	c->sp = -1;
	c->ep_tcp.kind = EP_TCP;
	c->ep_tcp.c = c;
	c->ep_pair.kind = EP_PAIR;
	c->ep_pair.c = c;
	tlsfront_format_addr(ss, c->addr, sizeof(c->addr));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->deadline = now_ms() + f->p.handshake_timeout_ms;
	c->hsprev = f->hstail;
	if (f->hstail != NULL)
		f->hstail->hsnext = c;
	else
		f->hshead = c;
	f->hstail = c;
	c->next = f->all;
	if (f->all != NULL)
		f->all->prev = c;
	f->all = c;
	__atomic_add_fetch(&f->nconns, 1, __ATOMIC_RELAXED);
	/* The TLS state is made when the client first speaks. */
	if (ep_set(f, fd, &c->ep_tcp, EPOLLIN) != 0)
		conn_close(f, c);
}

/*
 * Out of descriptors although the reserve should prevent it: take the
 * pending connection with the spare descriptor and close it, so that the
 * queue drains instead of spinning.
 */
static void
shed_one(struct tlsfront *f)
{
	int fd;

	if (f->spare != -1) {
		close(f->spare);
		f->spare = -1;
	}
	if ((fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC)) != -1)
		close(fd);
	f->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
	f->overcap++;
}

static void
accept_some(struct tlsfront *f)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, i;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		sl = sizeof(ss);
		fd = accept4(f->lfd, (struct sockaddr *)&ss, &sl,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				if (may_log(f))
					log_warn("connections: out of "
					    "descriptors: a connection was "
					    "closed at once");
				shed_one(f);
				continue;
			}
			log_error("connections: accept: %s", strerror(errno));
			return;
		}
		__atomic_add_fetch(&f->accepted, 1, __ATOMIC_RELAXED);
		if (f->nconns >= f->p.max_connections) {
			if (f->hshead == NULL) {
				close(fd);
				if (f->overcap++ % 1000 == 0)
					log_warn("connections: at the cap of "
					    "%u verified connections: %llu "
					    "closed at once so far",
					    f->p.max_connections,
					    (unsigned long long)f->overcap);
				continue;
			}
			/* Make room: the oldest unverified one goes. */
			if (f->evicted++ % 1000 == 0)
				log_warn("connections: at the cap of %u: the "
				    "oldest connection still in its "
				    "handshake is closed for a new one "
				    "(%llu so far)", f->p.max_connections,
				    (unsigned long long)f->evicted);
			conn_close(f, f->hshead);
		}
		conn_new(f, fd, &ss);
	}
}

/* Handshakes past their deadline. */
static void
expire(struct tlsfront *f, uint64_t now)
{
	while (f->hshead != NULL && f->hshead->deadline <= now) {
		log_debug("tls: %s: no handshake within %u ms: closed",
		    f->hshead->addr, f->p.handshake_timeout_ms);
		conn_close(f, f->hshead);
	}
}

static int
next_timeout(struct tlsfront *f, uint64_t now)
{
	uint64_t t = 1000;

	if (f->hshead != NULL)
		t = f->hshead->deadline > now ? f->hshead->deadline - now : 0;
	return t > 1000 ? 1000 : (int)t;
}

static void *
front_main(void *arg)
{
	struct tlsfront *f = arg;
	struct epoll_event evs[EVENTS_MAX];
	struct ep *ep;
	uint64_t now, v;
	int i, n, stop, quiesce, listening = 1;

	pthread_setname_np(pthread_self(), "kms-tlsfront");
	for (;;) {
		now = now_ms();
		n = epoll_wait(f->epfd, evs, EVENTS_MAX, next_timeout(f, now));
		if (n == -1 && errno != EINTR) {
			log_error("connections: epoll_wait: %s",
			    strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			ep = evs[i].data.ptr;
			switch (ep->kind) {
			case EP_LISTEN:
				if (listening)
					accept_some(f);
				break;
			case EP_WAKE:
				if (read(f->wakefd, &v, sizeof(v)) < 0)
					break;
				break;
			case EP_TCP:
			case EP_PAIR:
				if (ep->c->dead)
					break;
				if (ep->kind == EP_TCP)
					ep->c->tls_readable = 1;
				else
					ep->c->pair_readable = 1;
				if (ep->c->open)
					pump(f, ep->c);
				else
					handshake(f, ep->c);
				break;
			}
		}
		free_dead(f);
		now = now_ms();
		expire(f, now);
		reap_quarantine(f, now);
		free_dead(f);
		pthread_mutex_lock(&f->lock);
		stop = f->stop;
		quiesce = f->quiesce;
		pthread_mutex_unlock(&f->lock);
		if (stop)
			break;
		if (quiesce && listening) {
			ep_set(f, f->lfd, &f->ep_listen, 0);
			close(f->lfd);
			f->lfd = -1;
			listening = 0;
			while (f->hshead != NULL)
				conn_close(f, f->hshead);
			free_dead(f);
		}
	}
	return NULL;
}

static void
front_free(struct tlsfront *f)
{
	struct entry *e;
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; f->table != NULL && i < f->tsize; i++) {
		while ((e = f->table[i]) != NULL) {
			f->table[i] = e->hnext;
			if (e->held)
				close(e->fd);
			free(e);
		}
	}
	free(f->table);
	tls_set_free(f->ts);
	if (f->lfd != -1)
		close(f->lfd);
	if (f->epfd != -1)
		close(f->epfd);
	if (f->wakefd != -1)
		close(f->wakefd);
	if (f->nullfd != -1)
		close(f->nullfd);
	if (f->spare != -1)
		close(f->spare);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int
tlsfront_start(const struct tlsfront_params *p, struct tls_set *ts,
    struct tlsfront **out, int *port, struct kms_status *st)
{
	struct tlsfront *f;
	int r;

	*out = NULL;
	*port = 0;
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		tls_set_free(ts);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	f->p = *p;
	f->ts = ts;
	f->epfd = f->lfd = f->wakefd = f->nullfd = f->spare = -1;
	pthread_mutex_init(&f->lock, NULL);
	f->tsize = (size_t)p->max_connections * 2 + 1;
	if ((f->table = calloc(f->tsize, sizeof(*f->table))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((f->epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (f->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (f->nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1 ||
	    (f->spare = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "connections: %s",
		    strerror(errno));
		goto fail;
	}
	if ((r = tlsfront_bind(p->listen, &f->lfd, &f->bound,
	    &f->boundlen, st)) != 0)
		goto fail;
	f->ep_listen.kind = EP_LISTEN;
	f->ep_wake.kind = EP_WAKE;
	if (ep_set(f, f->lfd, &f->ep_listen, EPOLLIN) != 0 ||
	    ep_set(f, f->wakefd, &f->ep_wake, EPOLLIN) != 0) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "epoll_ctl: %s",
		    strerror(errno));
		goto fail;
	}
	if (pthread_create(&f->thread, NULL, front_main, f) != 0) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "cannot start the "
		    "connection thread");
		goto fail;
	}
	f->running = 1;
	*port = ntohs(f->bound.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&f->bound)->sin6_port :
	    ((struct sockaddr_in *)&f->bound)->sin_port);
	*out = f;
	return 0;
 fail:
	front_free(f);
	return r;
}

void
tlsfront_set_tls(struct tlsfront *f, struct tls_set *ts)
{
	struct tls_set *old;

	pthread_mutex_lock(&f->lock);
	old = f->ts;
	f->ts = ts;
	pthread_mutex_unlock(&f->lock);
	/* Connections made with it hold their own reference. */
	tls_set_free(old);
}

int
tlsfront_peer(struct tlsfront *f, const char *peer,
    struct tlsfront_peer *out)
{
	struct entry *e;
	char *end;
	long fd;
	int r = KMS_ERR_UNAUTHENTICATED;

	memset(out, 0, sizeof(*out));
	snprintf(out->id.reason, sizeof(out->id.reason), "the connection "
	    "is closed");
	if (peer == NULL || strncmp(peer, "fd:", 3) != 0)
		return r;
	errno = 0;
	fd = strtol(peer + 3, &end, 10);
	if (errno != 0 || *end != '\0' || end == peer + 3 || fd < 0 ||
	    fd > (1L << 30))
		return r;
	pthread_mutex_lock(&f->lock);
	e = *slot_of(f, (int)fd);
	if (e != NULL && !e->closed) {
		*out = e->peer;
		r = 0;
	}
	pthread_mutex_unlock(&f->lock);
	return r;
}

int
tlsfront_selfcheck(struct tlsfront *f, int timeout_ms)
{
	struct sockaddr_storage to = f->bound;
	struct pollfd pfd;
	uint64_t before, deadline;
	int fd, r = -1;

	/* A wildcard address is reached on the loopback. */
	if (to.ss_family == AF_INET) {
		struct sockaddr_in *in = (void *)&to;

		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (to.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)&to;

		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
	}
	before = __atomic_load_n(&f->accepted, __ATOMIC_RELAXED);
	deadline = now_ms() + (uint64_t)timeout_ms;
	if ((fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&to, f->boundlen) != 0 &&
	    errno != EINPROGRESS)
		goto out;
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, timeout_ms) != 1 || (pfd.revents & POLLOUT) == 0)
		goto out;
	while (now_ms() < deadline) {
		if (__atomic_load_n(&f->accepted, __ATOMIC_RELAXED) != before) {
			r = 0;
			break;
		}
		usleep(10000);
	}
 out:
	close(fd);
	return r;
}

static void
wake(struct tlsfront *f)
{
	uint64_t one = 1;

	if (write(f->wakefd, &one, sizeof(one)) < 0)
		log_debug("connections: wake-up: %s", strerror(errno));
}

void
tlsfront_quiesce(struct tlsfront *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->lock);
	f->quiesce = 1;
	pthread_mutex_unlock(&f->lock);
	wake(f);
}

void
tlsfront_stop(struct tlsfront *f)
{
	if (f == NULL)
		return;
	if (f->running) {
		pthread_mutex_lock(&f->lock);
		f->stop = 1;
		pthread_mutex_unlock(&f->lock);
		wake(f);
		pthread_join(f->thread, NULL);
	}
	/* What the RPC layer said last (its GOAWAY) goes out first. */
	while (f->all != NULL) {
		if (f->all->open) {
			f->all->pair_readable = 1;
			pump(f, f->all);
			if (!f->all->dead && f->all->ssl != NULL)
				SSL_shutdown(f->all->ssl);
			ERR_clear_error();
		}
		if (f->all != NULL && !f->all->dead)
			conn_close(f, f->all);
	}
	free_dead(f);
	front_free(f);
}

unsigned int
tlsfront_connections(struct tlsfront *f)
{
	return __atomic_load_n(&f->nconns, __ATOMIC_RELAXED);
}
