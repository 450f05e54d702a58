/*
 * store_token.c: the token as the keystore's store (see store.h).
 *
 * Several kmsd processes may share one token.  The token is the only
 * truth, and nothing on it is changed in place but the change mark's
 * label (the last point):
 *  - a document is a CKO_DATA object (CKA_APPLICATION "kms", CKA_LABEL
 *    the document's name) whose value is the document.  It is replaced
 *    by creating a new object with a higher revision (kept inside the
 *    document, read by the store user's store_rev_fn) and then destroying
 *    the old one, so that a reader sees the old or the new document (the
 *    highest revision wins when it sees both), never a torn one;
 *  - every change is made under a host lock, flock(2) on the configured
 *    lock file, which serialises the instances of one host, and under
 *    the name's token lock, a CKO_DATA object "NAME!lock" (names of
 *    documents hold no other '!' than a counter's prefix): a writer
 *    creates its own lock object, then searches for all of them and
 *    holds the lock only when it finds its own alone; otherwise it
 *    removes its own and tries again after a random pause.  On a token
 *    where every object a process created is visible to every later
 *    search, two writers can never both find themselves alone.
 *    SoftHSM2's file store is not quite such a token (docs/design.md,
 *    "Store and keystore"): a process's own creation can hide what other
 *    processes did meanwhile until the next change.  Hence the host lock,
 *    as that store is local to one host anyway, the rule that a writer
 *    searches before it creates anything, and store_get's wait, under
 *    the locks, for a document at least as new as the caller has seen;
 *  - so that an idle token is not listed every sync period (on a big
 *    token the listing, a full-token search and a read per document,
 *    costs signing throughput), the token holds a change mark: a CKO_DATA
 *    object found by its value CHANGES_VALUE, whose label
 *    "kms!changes N RANDOM" every writer sets anew after each change
 *    (store_touch), still under the locks.  The label is changed in
 *    place because SoftHSM2 refuses C_SetAttributeValue on a data
 *    object's CKA_VALUE (CKR_ATTRIBUTE_READ_ONLY, both object stores) and
 *    because a label change is seen by another process's next read of the
 *    object on both stores, where a replaced object would leave the
 *    others a destroyed handle to read.  The random part makes every
 *    label new, even where two hosts move the mark at once and one write
 *    is lost.  A writer that dies between its change and the mark leaves
 *    that change to the others' next full listing.
 */
#include <sys/file.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "clock.h"
#include "hsm.h"
#include "kmserr.h"
#include "log.h"
#include "store.h"

#define MAX_COPIES 16			/* copies of one name seen at once */
#define RANDOM_BYTES 8
#define LOCK_SUFFIX "!lock"
#define LOCK_MAX_WAIT_MS 10000		/* then the change is refused */
#define LOCK_STALE_SECONDS 30		/* a lock older than this is abandoned */
#define UNLOCK_TRIES 3
#define READ_TRIES_KNOWN 40		/* x READ_PAUSE_MS: a revision seen */
#define READ_TRIES_NEW 2		/* none seen yet, under the lock */
#define READ_PAUSE_MS 25
#define CHANGES_VALUE "kms change counter 1"	/* what finds the mark */
#define CHANGES_PREFIX "kms!changes "		/* its label: + N RANDOM */
#define CLAIM_SUFFIX ".serving"			/* lock_file + this: claims */

struct store_token {
	struct store base;		/* first: a struct store * is one */
	char lock_path[PATH_MAX];	/* the host lock (flock) */
	store_rev_fn *rev;
	pthread_mutex_t lock;		/* guards chg */
	hsm_handle_t chg;		/* the change mark; 0 = not known */
	int claim_fd;			/* the claim's flock, or -1 */
};

struct store_lock {
	int fd;				/* the host lock */
	hsm_handle_t obj;		/* the token lock object */
};

void
store_doc_clear(struct store_doc *d)
{
	free(d->value);
	memset(d, 0, sizeof(*d));
}

/* A pause of 1..max_ms milliseconds, random so that contenders part. */
static void
pause_random(unsigned int max_ms)
{
	uint32_t rnd = 0;

	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = (uint32_t)clock();
	clock_pause_ms(1 + rnd % max_ms);
}

/* 2 * RANDOM_BYTES random hex digits into out (size > 2 * RANDOM_BYTES). */
static int
random_hex(char *out, size_t size)
{
	uint8_t rnd[RANDOM_BYTES];
	size_t j;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return KMS_ERR_INTERNAL;
	for (j = 0; j < sizeof(rnd) && 2 * j + 3 <= size; j++)
		snprintf(out + 2 * j, 3, "%02x", rnd[j]);
	return 0;
}

/* Takes the host lock: flock(2) on the lock file. */
static int
host_lock(struct store_token *t, int *fd, struct kms_status *st)
{
	int64_t deadline = clock_ms() + LOCK_MAX_WAIT_MS;

	if ((*fd = open(t->lock_path, O_RDWR | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "cannot open "
		    "the lock file %s: %s", t->lock_path, strerror(errno));
	while (flock(*fd, LOCK_EX | LOCK_NB) == -1) {
		if ((errno != EWOULDBLOCK && errno != EINTR) ||
		    clock_ms() > deadline) {
			close(*fd);
			*fd = -1;
			return kms_status_set(st, KMS_ERR_UNAVAILABLE, "keys "
			    "are being changed by another request: try again");
		}
		pause_random(8);
	}
	return 0;
}

/*
 * Destroys lock objects whose holder has been gone too long (a crash
 * while holding it).  Reads each one's creation time from its value.
 */
static void
lock_reap(struct hsm_session *s, const char *label, const hsm_handle_t *hs,
    size_t n)
{
	long long when;
	uint8_t *val;
	size_t i, len;

	for (i = 0; i < n; i++) {
		if (hsm_data_get(s, hs[i], &val, &len) != 0)
			continue;
		if (sscanf((char *)val, "lock %lld", &when) == 1 &&
		    (int64_t)time(NULL) - when > LOCK_STALE_SECONDS) {
			log_warn("keystore: removing the abandoned lock %s",
			    label);
			hsm_destroy(s, hs[i]);
		}
		free(val);
	}
}

/* Takes the token lock of name: *h is the lock object. */
static int
token_lock(struct hsm_session *s, const char *name, hsm_handle_t *h,
    struct kms_status *st)
{
	char label[HSM_LABEL_MAX], val[64], rnd[2 * RANDOM_BYTES + 1];
	hsm_handle_t found[MAX_COPIES], any;
	int64_t deadline = clock_ms() + LOCK_MAX_WAIT_MS;
	unsigned int backoff = 4;
	size_t n;
	int r;

	*h = 0;
	/*
	 * Search before creating anything: SoftHSM2 reads the token again
	 * only when its generation counter moved, and this process's own
	 * next creation moves it past what other processes did meanwhile.
	 */
	(void)hsm_find(s, HSM_OBJ_DATA, name, &any);
	if ((size_t)snprintf(label, sizeof(label), "%s" LOCK_SUFFIX, name) >=
	    sizeof(label))
		return kms_status_set(st, KMS_ERR_INTERNAL, "name too long");
	for (;;) {
		if (random_hex(rnd, sizeof(rnd)) != 0)
			return kms_status_set(st, KMS_ERR_INTERNAL,
			    "no randomness");
		snprintf(val, sizeof(val), "lock %lld %s",
		    (long long)time(NULL), rnd);
		if ((r = hsm_data_create(s, label, (const uint8_t *)val,
		    strlen(val), h)) != 0)
			return kms_status_set(st, r, "cannot lock \"%s\" on "
			    "the token: %s", name, kms_strerror(r));
		r = hsm_find_all(s, HSM_OBJ_DATA, label, found, MAX_COPIES,
		    &n);
		if (r == 0 && n == 1 && found[0] == *h)
			return 0;
		hsm_destroy(s, *h);
		*h = 0;
		if (r != 0)
			return kms_status_set(st, r, "cannot lock \"%s\" on "
			    "the token: %s", name, kms_strerror(r));
		lock_reap(s, label, found, n);
		if (clock_ms() > deadline)
			return kms_status_set(st, KMS_ERR_UNAVAILABLE, "key "
			    "\"%s\" is being changed by another request: try "
			    "again", name);
		pause_random(backoff);
		if (backoff < 256)
			backoff *= 2;
	}
}

static int
tok_lock(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock **out, struct kms_status *st)
{
	struct store_token *t = (struct store_token *)sto;
	struct store_lock *l;
	int r;

	*out = NULL;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	if ((r = host_lock(t, &l->fd, st)) != 0) {
		free(l);
		return r;
	}
	if ((r = token_lock(s, name, &l->obj, st)) != 0) {
		close(l->fd);
		free(l);
		return r;
	}
	*out = l;
	return 0;
}

/*
 * The lock object is removed with a few tries: one left behind blocks
 * every change of the name until it is abandoned (LOCK_STALE_SECONDS).
 */
static void
tok_unlock(struct store *sto, struct hsm_session *s, struct store_lock *l)
{
	int r = 0, tries;

	for (tries = 0; l->obj != 0 && tries < UNLOCK_TRIES; tries++) {
		if ((r = hsm_destroy(s, l->obj)) == 0 ||
		    r == KMS_ERR_STALE_HANDLE)
			break;
		clock_pause_ms(READ_PAUSE_MS);
	}
	if (tries == UNLOCK_TRIES)
		log_warn("keystore: could not remove a lock object (%s); it "
		    "expires after %d s", kms_strerror(r), LOCK_STALE_SECONDS);
	close(l->fd);		/* releases the flock */
	free(l);
}

/*
 * Reads name's newest copy.  With gc (under the name's lock) older copies
 * left by an interrupted replacement are removed.
 */
static int
read_newest(struct store_token *t, struct hsm_session *s, const char *name,
    int gc, struct store_doc *out, struct kms_status *st)
{
	hsm_handle_t found[MAX_COPIES];
	struct store_doc d;
	size_t i, n;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = hsm_find_all(s, HSM_OBJ_DATA, name, found, MAX_COPIES,
	    &n)) != 0)
		return kms_status_set(st, r, "cannot read \"%s\" from the "
		    "token: %s", name, kms_strerror(r));
	for (i = 0; i < n; i++) {
		memset(&d, 0, sizeof(d));
		if ((r = hsm_data_get(s, found[i], &d.value, &d.len)) != 0) {
			store_doc_clear(out);
			return kms_status_set(st, r, "cannot read \"%s\" from "
			    "the token: %s", name, kms_strerror(r));
		}
		d.at.id = found[i];
		if ((r = t->rev(name, d.value, d.len, &d.at.rev, st)) != 0) {
			store_doc_clear(&d);
			store_doc_clear(out);
			return r;
		}
		if (out->value == NULL || d.at.rev > out->at.rev) {
			store_doc_clear(out);
			*out = d;
		} else
			store_doc_clear(&d);
	}
	if (out->value == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND, "key \"%s\" not "
		    "found", name);
	for (i = 0; gc && i < n; i++)
		if (found[i] != out->at.id && hsm_destroy(s, found[i]) == 0)
			log_info("keystore: removed an older document of "
			    "\"%s\"", name);
	kms_status_clear(st);
	return 0;
}

/*
 * Under the lock, a copy the caller has not seen yet may hide for a
 * moment (see the top of this file): read again while the token shows
 * none, or one older than the caller has seen.
 */
static int
tok_get(struct store *sto, struct hsm_session *s, const char *name,
    struct store_lock *held, uint64_t want, struct store_doc *out,
    struct kms_status *st)
{
	struct store_token *t = (struct store_token *)sto;
	int tries, r;

	if (held == NULL)
		return read_newest(t, s, name, 0, out, st);
	for (tries = 0;; tries++) {
		r = read_newest(t, s, name, 1, out, st);
		if (r == 0 && out->at.rev >= want)
			return 0;
		if (r != 0 && r != KMS_ERR_NOT_FOUND)
			return r;
		log_debug("keystore: \"%s\": the token shows %s (want %llu), "
		    "try %d", name, r == 0 ? "an older document" : "none",
		    (unsigned long long)want, tries);
		store_doc_clear(out);
		if (tries + 1 >= (want > 0 ? READ_TRIES_KNOWN : READ_TRIES_NEW))
			break;
		clock_pause_ms(READ_PAUSE_MS);
	}
	if (want == 0)
		return r;
	return kms_status_set(st, KMS_ERR_UNAVAILABLE, "the token does not "
	    "show the newest metadata of key \"%s\" (generation %llu): try "
	    "again", name, (unsigned long long)want);
}

/* The new copy first, then the old one goes: a reader sees one or both. */
static int
tok_put(struct store *sto, struct hsm_session *s, struct store_lock *held,
    const char *name, const struct store_rev *prev, const uint8_t *value,
    size_t len, struct store_rev *out, struct kms_status *st)
{
	struct store_token *t = (struct store_token *)sto;
	struct store_rev at;
	hsm_handle_t h;
	int r;

	if ((r = t->rev(name, value, len, &at.rev, st)) != 0)
		return r;
	if ((r = hsm_data_create(s, name, value, len, &h)) != 0)
		return kms_status_set(st, r, "the HSM could not store the "
		    "key's metadata: %s", kms_strerror(r));
	if (prev != NULL && hsm_destroy(s, (hsm_handle_t)prev->id) != 0)
		log_warn("keystore: an older document of \"%s\" stays on the "
		    "token until the next change", name);
	at.id = h;
	if (out != NULL)
		*out = at;
	return 0;
}

struct list_ctx {
	store_list_fn *fn;
	void *arg;
	hsm_handle_t chg;		/* the change mark, when listed */
};

/* Lock objects and the change mark are the store's own, not documents. */
static int
list_one(const struct hsm_object *o, void *arg)
{
	struct list_ctx *lc = arg;
	size_t n = strlen(o->label);

	if (strncmp(o->label, CHANGES_PREFIX, strlen(CHANGES_PREFIX)) == 0) {
		lc->chg = o->h;
		return 0;
	}
	if (n >= strlen(LOCK_SUFFIX) &&
	    strcmp(o->label + n - strlen(LOCK_SUFFIX), LOCK_SUFFIX) == 0)
		return 0;
	return lc->fn(o->label, o->h, o->value, o->value_len, lc->arg);
}

static int
tok_list(struct store *sto, struct hsm_session *s, store_list_fn *fn,
    void *arg)
{
	struct store_token *t = (struct store_token *)sto;
	struct list_ctx lc = { fn, arg, 0 };
	int r;

	if ((r = hsm_list_data(s, list_one, &lc)) != 0)
		return r;
	pthread_mutex_lock(&t->lock);
	if (t->chg == 0)
		t->chg = lc.chg;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static void
tok_mark(struct store *sto, struct hsm_session *s, char *label, size_t size)
{
	struct store_token *t = (struct store_token *)sto;
	hsm_handle_t h;

	label[0] = '\0';
	pthread_mutex_lock(&t->lock);
	h = t->chg;
	pthread_mutex_unlock(&t->lock);
	if (h == 0 || (hsm_label_get(s, h, label, size) == 0 &&
	    strncmp(label, CHANGES_PREFIX, strlen(CHANGES_PREFIX)) == 0))
		return;
	/* Removed as a duplicate by a writer: found again by the listing. */
	label[0] = '\0';
	pthread_mutex_lock(&t->lock);
	if (t->chg == h)
		t->chg = 0;
	pthread_mutex_unlock(&t->lock);
}

/*
 * Finds the change mark on the token: several only where hosts that
 * share no host lock made one each, and then one stays.
 */
static int
mark_find(struct hsm_session *s, hsm_handle_t *h, char *label, size_t size)
{
	hsm_handle_t found[MAX_COPIES];
	size_t i, nf;
	int r;

	*h = 0;
	label[0] = '\0';
	if ((r = hsm_find_data_value(s, (const uint8_t *)CHANGES_VALUE,
	    strlen(CHANGES_VALUE), found, MAX_COPIES, &nf)) != 0)
		return r;
	for (i = 0; i < nf; i++) {
		if (*h == 0 && hsm_label_get(s, found[i], label, size) == 0)
			*h = found[i];
		else
			hsm_destroy(s, found[i]);
	}
	return 0;
}

/*
 * Sets the mark's label in place to the next number and fresh random
 * digits, so that no two changes give the same label even where writers
 * on two hosts move it at once.  Made by the first change on a token that
 * has none.
 */
static void
tok_touch(struct store *sto, struct hsm_session *s)
{
	struct store_token *t = (struct store_token *)sto;
	char label[HSM_LABEL_MAX], rnd[2 * RANDOM_BYTES + 1];
	unsigned long long n;
	hsm_handle_t h;
	int r = 0, tries;

	pthread_mutex_lock(&t->lock);
	h = t->chg;
	pthread_mutex_unlock(&t->lock);
	for (tries = 0; tries < 2; tries++) {
		if ((h == 0 || hsm_label_get(s, h, label, sizeof(label)) != 0) &&
		    (r = mark_find(s, &h, label, sizeof(label))) != 0)
			goto fail;
		if (sscanf(label, CHANGES_PREFIX "%llu", &n) != 1)
			n = 0;
		if ((r = random_hex(rnd, sizeof(rnd))) != 0)
			goto fail;
		snprintf(label, sizeof(label), CHANGES_PREFIX "%llu %s", n + 1,
		    rnd);
		if (h == 0)
			r = hsm_data_create(s, label,
			    (const uint8_t *)CHANGES_VALUE,
			    strlen(CHANGES_VALUE), &h);
		else
			r = hsm_label_set(s, h, label);
		if (r == 0)
			break;
		h = 0;		/* removed meanwhile: look for it again */
	}
	if (r != 0)
		goto fail;
	pthread_mutex_lock(&t->lock);
	t->chg = h;
	pthread_mutex_unlock(&t->lock);
	return;
 fail:
	log_warn("keystore: could not move the token's change counter on "
	    "(%s): other instances see this change at their next full "
	    "listing", kms_strerror(r));
}

/*
 * The claims are flock(2) on the lock file's sibling LOCK_FILE.serving,
 * held until the store is freed (or the process dies): shared by every
 * serving kmsd, exclusive for a store command.  The token store serves
 * the instances of one host (the host lock above), so a host's lock is
 * enough here too.
 */
static int
tok_claim(struct store *sto, struct hsm_session *s, enum store_claim how,
    struct kms_status *st)
{
	struct store_token *t = (struct store_token *)sto;
	char path[PATH_MAX + sizeof(CLAIM_SUFFIX)];
	int fd;

	(void)s;
	if (t->claim_fd != -1)
		return kms_status_set(st, KMS_ERR_INTERNAL, "the token store "
		    "is claimed already");
	snprintf(path, sizeof(path), "%s" CLAIM_SUFFIX, t->lock_path);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot open %s: %s",
		    path, strerror(errno));
	while (flock(fd, (how == STORE_CLAIM_SERVE ? LOCK_SH : LOCK_EX) |
	    LOCK_NB) == -1) {
		if (errno == EINTR)
			continue;
		close(fd);
		if (errno != EWOULDBLOCK)
			return kms_status_set(st, KMS_ERR_CONFIG, "cannot lock "
			    "%s: %s", path, strerror(errno));
		if (how == STORE_CLAIM_SERVE)
			return kms_status_set(st, KMS_ERR_UNAVAILABLE, "a store "
			    "command (--migrate-store, --gc-orphans) is "
			    "running on this token (it holds %s)", path);
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "a kmsd serves "
		    "from this token (it holds %s): stop every kmsd of the "
		    "token first", path);
	}
	t->claim_fd = fd;
	return 0;
}

static void
tok_free(struct store *sto)
{
	struct store_token *t = (struct store_token *)sto;

	if (t->claim_fd != -1)
		close(t->claim_fd);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static const struct store_ops token_ops = {
	tok_get, tok_put, tok_list, tok_mark, tok_touch, tok_lock, tok_unlock,
	tok_free, tok_claim, NULL, NULL
};

int
store_token_open(const char *lock_file, store_rev_fn *rev,
    struct store **out, struct kms_status *st)
{
	struct store_token *t;
	int fd;

	*out = NULL;
	if (strlen(lock_file) >= PATH_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "lock file path too "
		    "long");
	if ((fd = open(lock_file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot open the "
		    "lock file %s: %s", lock_file, strerror(errno));
	close(fd);
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	t->base.ops = &token_ops;
	strcpy(t->lock_path, lock_file);
	t->rev = rev;
	t->claim_fd = -1;
	pthread_mutex_init(&t->lock, NULL);
	*out = &t->base;
	return 0;
}
