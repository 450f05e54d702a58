/*
 * keystore.c: key metadata on the token, cached in a hash table.
 *
 * Several kmsd processes may share one token.  The token is the only
 * truth, and nothing on it is changed in place but the change counter's
 * label (the last point):
 *  - a key's metadata document is replaced by creating a new CKO_DATA
 *    object with a higher "seq" and then destroying the old one, so that
 *    a reader sees the old or the new document (the highest seq wins when
 *    it sees both), never a torn one;
 *  - every change of a key (creation, rotation, state, schedule) is made
 *    under a host lock, flock(2) on the configured lock file, which
 *    serialises the instances of one host, and under that key's token
 *    lock, a CKO_DATA object "NAME!lock" (key names cannot hold '!'): a
 *    writer creates its own lock object, then searches
 *    for all of them and holds the lock only when it finds its own alone;
 *    otherwise it removes its own and tries again after a random pause.
 *    On a token where every object a process created is visible to every
 *    later search, two writers can never both find themselves alone.
 *    SoftHSM2's file store is not quite such a token: it reads the token
 *    directory again only when the token's generation counter has moved
 *    since this process last looked, and a process's own creation moves
 *    the counter past what other processes did meanwhile, so their new
 *    objects stay hidden from it until the next change (seen as two
 *    instances losing each other's documents under concurrent
 *    rotations).  Hence the host lock, as that store is local to one host
 *    anyway, and the rule that a writer searches before it creates
 *    anything.  Under the locks the writer reads the document again from
 *    the token, retrying while it sees none or one older than it has
 *    already seen, so a change is always made to the newest state,
 *    whoever made that;
 *  - every instance reads the documents that changed every sync period
 *    (keystore_refresh), comparing object handles, so that it sees what
 *    the others did within about that period;
 *  - so that an idle token is not listed every period (on a big token the
 *    listing, a full-token search and a label read per document, costs
 *    signing throughput), the token holds a change counter: a CKO_DATA
 *    object found by its value CHANGES_VALUE, whose label
 *    "kms!changes N RANDOM" every writer sets anew after each change of
 *    key metadata or key objects, still under the host lock and the
 *    key's token lock (changes_bump).  keystore_refresh reads that one
 *    label and lists the documents only when it differs from the label
 *    read before the last listing, when the process knows no counter (a
 *    token made before it existed gets one at its next change), and at
 *    least every FULL_REFRESH_MS.  The label is changed in place because
 *    SoftHSM2 refuses C_SetAttributeValue on a data object's CKA_VALUE
 *    (CKR_ATTRIBUTE_READ_ONLY, both object stores) and because a label
 *    change is seen by another process's next read of the object on both
 *    stores: the file store re-reads an object whose own generation moved
 *    whatever the token's generation says, so the visibility quirk above
 *    does not hide it, and the db store reads a label from SQLite every
 *    time (it caches a CKA_VALUE once read, so a replaced value in an
 *    object of the same handle would not be seen).  A replaced counter
 *    would also leave the other processes a destroyed handle to read, a
 *    CKR_GENERAL_ERROR on the db store.  The random part makes every label
 *    new, even where two hosts move the counter at once and one write is
 *    lost.  The counter is read before the listing, so a change made while
 *    an instance lists moves it again and is listed next time.  A writer
 *    that dies between its change and the counter leaves that change to
 *    the others' next full listing.  The bundle sequence counters
 *    (keystore_counter_advance) are read from the token under the locks
 *    at each use and cached nowhere, so they do not move it.
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

#include <jansson.h>
#include <openssl/rand.h>

#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "secret.h"

#define META_FORMAT 1
#define META_MAX_DOCS 16		/* records of one key seen at once */
#define LABEL_RANDOM_BYTES 8
#define LOCK_SUFFIX "!lock"
#define LOCK_MAX_WAIT_MS 10000		/* then the change is refused */
#define LOCK_STALE_SECONDS 30		/* a lock older than this is abandoned */
#define READ_TRIES_KNOWN 40		/* x READ_PAUSE_MS: a key known to exist */
#define READ_TRIES_NEW 2		/* a key not seen yet, before creating it */
#define READ_PAUSE_MS 25
/* The token's change counter (see the top of this file). */
#define CHANGES_VALUE "kms change counter 1"	/* what finds it */
#define CHANGES_PREFIX "kms!changes "		/* its label: + N RANDOM */
#define FULL_REFRESH_MS 60000		/* a full listing at least this often */

struct ks_ventry {
	uint32_t version;
	enum ks_state state;
	int64_t create_time;
	int64_t destroy_time;
	char label[HSM_LABEL_MAX];	/* CKA_LABEL of the key objects */
	hsm_handle_t priv;		/* private or secret key; 0 = not looked up */
	hsm_handle_t pub;
	uint8_t *spki;			/* cached DER public key */
	size_t spki_len;
};

struct ks_entry {
	struct ks_entry *next;		/* hash chain */
	char name[KMS_KEY_NAME_MAX + 1];
	const struct kms_alg_info *alg;
	uint32_t primary;
	int64_t rotation_period;
	int64_t create_time;
	hsm_handle_t meta;		/* the CKO_DATA object */
	uint64_t seq;			/* the document's generation */
	size_t nv;
	struct ks_ventry *v;
};

struct keystore {
	char lock_path[PATH_MAX];	/* the host lock (flock) */
	pthread_rwlock_t lock;		/* the table and every entry */
	size_t nbuckets;
	struct ks_entry **buckets;
	size_t count;
	/* The change counter, under lock too: */
	hsm_handle_t chg;		/* its object; 0 = not known */
	char chg_seen[HSM_LABEL_MAX];	/* its label before the last listing */
	int64_t full_ms;		/* when that listing began */
};


static uint64_t
name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static struct ks_entry *
find_locked(struct keystore *ks, const char *name)
{
	struct ks_entry *e;

	for (e = ks->buckets[name_hash(name) % ks->nbuckets]; e != NULL;
	    e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static struct ks_ventry *
version_locked(struct ks_entry *e, uint32_t version)
{
	size_t i;

	for (i = 0; i < e->nv; i++)
		if (e->v[i].version == version)
			return &e->v[i];
	return NULL;
}

static int
not_found(struct kms_status *st, const char *name)
{
	return kms_status_set(st, KMS_ERR_NOT_FOUND, "key \"%s\" not found",
	    name);
}

static void
entry_free(struct ks_entry *e)
{
	size_t i;

	if (e == NULL)
		return;
	for (i = 0; i < e->nv; i++)
		free(e->v[i].spki);
	free(e->v);
	free(e);
}

/* Grows the table when it is full enough; called with the write lock. */
static int
insert_locked(struct keystore *ks, struct ks_entry *e)
{
	struct ks_entry **nb, *x, *next;
	size_t i, n, b;

	if (ks->count + 1 > ks->nbuckets) {
		n = ks->nbuckets * 2;
		if ((nb = calloc(n, sizeof(*nb))) == NULL)
			return KMS_ERR_NOMEM;
		for (i = 0; i < ks->nbuckets; i++) {
			for (x = ks->buckets[i]; x != NULL; x = next) {
				next = x->next;
				b = name_hash(x->name) % n;
				x->next = nb[b];
				nb[b] = x;
			}
		}
		free(ks->buckets);
		ks->buckets = nb;
		ks->nbuckets = n;
	}
	b = name_hash(e->name) % ks->nbuckets;
	e->next = ks->buckets[b];
	ks->buckets[b] = e;
	ks->count++;
	return 0;
}

/* The metadata document of e. */
static char *
meta_encode(const struct ks_entry *e)
{
	json_t *o = NULL, *vs = NULL, *v;
	char *s = NULL;
	size_t i;

	if ((o = json_object()) == NULL || (vs = json_array()) == NULL)
		goto out;
	for (i = 0; i < e->nv; i++) {
		v = json_pack("{s:I,s:s,s:I,s:I,s:s}",
		    "version", (json_int_t)e->v[i].version,
		    "state", kms_state_name(e->v[i].state),
		    "create_time", (json_int_t)e->v[i].create_time,
		    "destroy_time", (json_int_t)e->v[i].destroy_time,
		    "label", e->v[i].label);
		if (v == NULL || json_array_append_new(vs, v) != 0)
			goto out;
	}
	if (json_object_set_new(o, "format", json_integer(META_FORMAT)) ||
	    json_object_set_new(o, "seq", json_integer((json_int_t)e->seq)) ||
	    json_object_set_new(o, "name", json_string(e->name)) ||
	    json_object_set_new(o, "algorithm", json_string(e->alg->name)) ||
	    json_object_set_new(o, "primary", json_integer(e->primary)) ||
	    json_object_set_new(o, "rotation_period",
	    json_integer(e->rotation_period)) ||
	    json_object_set_new(o, "create_time",
	    json_integer(e->create_time)) ||
	    json_object_set(o, "versions", vs))
		goto out;
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
 out:
	json_decref(vs);
	json_decref(o);
	return s;
}


/* Parses a metadata document; the caller checks the name against the label. */
static int
meta_decode(const char *text, size_t len, struct ks_entry **out,
    struct kms_status *st)
{
	struct ks_entry *e = NULL;
	json_t *o = NULL, *vs, *v;
	json_error_t jerr;
	const char *name, *alg, *state, *label;
	json_int_t format, primary, period, ctime, ver, vctime, dtime, seq = 0;
	size_t i;
	int r = KMS_ERR_CONFIG;

	*out = NULL;
	if ((o = json_loadb(text, len, 0, &jerr)) == NULL) {
		kms_status_set(st, r, "metadata is not JSON: %s", jerr.text);
		goto out;
	}
	if (json_unpack_ex(o, &jerr, 0, "{s:I,s?I,s:s,s:s,s:I,s:I,s:I,s:o}",
	    "format", &format, "seq", &seq, "name", &name, "algorithm", &alg,
	    "primary", &primary, "rotation_period", &period,
	    "create_time", &ctime, "versions", &vs) != 0) {
		kms_status_set(st, r, "metadata: %s", jerr.text);
		goto out;
	}
	if (format != META_FORMAT || !json_is_array(vs) || seq < 0 ||
	    json_array_size(vs) == 0 ||
	    json_array_size(vs) > KS_MAX_VERSIONS ||
	    strlen(name) > KMS_KEY_NAME_MAX) {
		kms_status_set(st, r, "metadata: unsupported format or size");
		goto out;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->v = calloc(json_array_size(vs), sizeof(*e->v))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(e->name, name);
	if ((e->alg = kms_alg_by_name(alg)) == NULL) {
		kms_status_set(st, r, "metadata: unknown algorithm");
		goto out;
	}
	e->seq = (uint64_t)seq;
	e->primary = (uint32_t)primary;
	e->rotation_period = period;
	e->create_time = ctime;
	json_array_foreach(vs, i, v) {
		if (json_unpack_ex(v, &jerr, 0, "{s:I,s:s,s:I,s:I,s:s}",
		    "version", &ver, "state", &state, "create_time", &vctime,
		    "destroy_time", &dtime, "label", &label) != 0 ||
		    ver <= 0 || ver > UINT32_MAX ||
		    strlen(label) >= HSM_LABEL_MAX ||
		    (i > 0 && (uint32_t)ver <= e->v[i - 1].version) ||
		    (e->v[i].state = (enum ks_state)kms_state_by_name(state)) == 0) {
			kms_status_set(st, r, "metadata: bad version entry");
			goto out;
		}
		e->v[i].version = (uint32_t)ver;
		e->v[i].create_time = vctime;
		e->v[i].destroy_time = dtime;
		strcpy(e->v[i].label, label);
		e->nv++;
	}
	if (version_locked(e, e->primary) == NULL) {
		kms_status_set(st, r, "metadata: primary version missing");
		goto out;
	}
	*out = e;
	e = NULL;
	r = 0;
 out:
	entry_free(e);
	json_decref(o);
	return r;
}

/* Labels ending in LOCK_SUFFIX (or holding any '!') are not key records. */
static int
is_key_label(const char *label)
{
	return strchr(label, '!') == NULL;
}

/* Decodes the record h holding val; its name must match its label. */
static int
record_decode(const char *label, hsm_handle_t h, const uint8_t *val,
    size_t len, struct ks_entry **out, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	int r;

	*out = NULL;
	if ((r = meta_decode((const char *)val, len, &e, st)) != 0)
		return r;
	if (strcmp(e->name, label) != 0) {
		entry_free(e);
		return kms_status_set(st, KMS_ERR_CONFIG,
		    "name does not match label");
	}
	e->meta = h;
	*out = e;
	return 0;
}

/* Reads and decodes the record h; its name must match its label. */
static int
record_read(struct hsm_session *s, const char *label, hsm_handle_t h,
    struct ks_entry **out, struct kms_status *st)
{
	uint8_t *val = NULL;
	size_t len;
	int r;

	*out = NULL;
	if ((r = hsm_data_get(s, h, &val, &len)) != 0)
		return kms_status_set(st, r, "cannot read key metadata: %s",
		    kms_strerror(r));
	r = record_decode(label, h, val, len, out, st);
	free(val);
	return r;
}

/*
 * Moves what this process knows of the HSM objects of old's versions (the
 * handles it looked up, the public keys it read) into e, for the versions
 * whose objects are the same.
 */
static void
carry_over(struct ks_entry *e, struct ks_entry *old)
{
	struct ks_ventry *ov;
	size_t i;

	for (i = 0; i < e->nv; i++) {
		if ((ov = version_locked(old, e->v[i].version)) == NULL ||
		    strcmp(ov->label, e->v[i].label) != 0)
			continue;
		e->v[i].priv = ov->priv;
		e->v[i].pub = ov->pub;
		if (e->v[i].spki == NULL) {
			e->v[i].spki = ov->spki;
			e->v[i].spki_len = ov->spki_len;
			ov->spki = NULL;
		}
	}
}

/*
 * Puts e into the table, replacing an older document of the same key;
 * e is consumed.  A document no newer than the one in the table is
 * dropped (a slow reader must not undo a newer change).
 */
static int
install_locked(struct keystore *ks, struct ks_entry *e)
{
	struct ks_entry **pp, *old;
	int r;

	pp = &ks->buckets[name_hash(e->name) % ks->nbuckets];
	for (; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->name, e->name) == 0)
			break;
	if ((old = *pp) == NULL) {
		if ((r = insert_locked(ks, e)) != 0)
			entry_free(e);
		return r;
	}
	if (e->seq <= old->seq && e->meta != old->meta) {
		entry_free(e);
		return 0;
	}
	carry_over(e, old);
	e->next = old->next;
	*pp = e;
	entry_free(old);
	return 0;
}

static int
install(struct keystore *ks, struct ks_entry *e)
{
	int r;

	pthread_rwlock_wrlock(&ks->lock);
	r = install_locked(ks, e);
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

struct load_ctx {
	struct keystore *ks;
	size_t loaded, skipped;
	hsm_handle_t chg;		/* the change counter, when listed */
};

/*
 * One data object of the token, read with its value by hsm_list_data
 * (a document destroyed meanwhile by the writer that replaced it is not
 * listed).
 */
static int
load_one(const struct hsm_object *o, void *arg)
{
	struct load_ctx *lc = arg;
	struct ks_entry *e, *cur;
	struct kms_status st;
	char esc[160];
	int r;

	if (!is_key_label(o->label))
		return 0;
	pthread_rwlock_rdlock(&lc->ks->lock);
	cur = find_locked(lc->ks, o->label);
	r = cur != NULL && cur->meta == o->h;
	pthread_rwlock_unlock(&lc->ks->lock);
	if (r)
		return 0;	/* the document this process already has */
	kms_status_clear(&st);
	if ((r = record_decode(o->label, o->h, o->value, o->value_len, &e,
	    &st)) != 0) {
		if (r == KMS_ERR_NOMEM)
			return r;
		/* A foreign or damaged object must not stop the service. */
		log_warn("keystore: skipping data object \"%s\": %s",
		    log_escape(o->label, esc, sizeof(esc)), st.msg);
		lc->skipped++;
		return 0;
	}
	if ((r = install(lc->ks, e)) != 0)
		return r;
	lc->loaded++;
	return 0;
}

/* load_one, noting the change counter as it passes. */
static int
refresh_one(const struct hsm_object *o, void *arg)
{
	struct load_ctx *lc = arg;

	if (strncmp(o->label, CHANGES_PREFIX, strlen(CHANGES_PREFIX)) == 0) {
		lc->chg = o->h;
		return 0;
	}
	return load_one(o, arg);
}

int
keystore_open(struct hsm_session *s, const char *lock_file,
    struct keystore **out, struct kms_status *st)
{
	struct keystore *ks;
	struct load_ctx lc;
	int r, fd;

	*out = NULL;
	if (strlen(lock_file) >= PATH_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "lock file path too "
		    "long");
	if ((fd = open(lock_file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "cannot open the "
		    "lock file %s: %s", lock_file, strerror(errno));
	close(fd);
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	strcpy(ks->lock_path, lock_file);
	ks->nbuckets = 1024;
	if ((ks->buckets = calloc(ks->nbuckets, sizeof(*ks->buckets))) ==
	    NULL) {
		free(ks);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	pthread_rwlock_init(&ks->lock, NULL);
	memset(&lc, 0, sizeof(lc));
	lc.ks = ks;
	if ((r = hsm_list_data(s, refresh_one, &lc)) != 0) {
		keystore_free(ks);
		return kms_status_set(st, r, "cannot load key metadata from "
		    "the token: %s", kms_strerror(r));
	}
	ks->chg = lc.chg;
	log_info("keystore: %zu keys loaded, %zu objects skipped",
	    ks->count, lc.skipped);
	*out = ks;
	return 0;
}

static void
pause_ms(unsigned int ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

/* A pause of 1..max_ms milliseconds, random so that contenders part. */
static void
pause_random(unsigned int max_ms)
{
	uint32_t rnd = 0;

	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = (uint32_t)clock();
	pause_ms(1 + rnd % max_ms);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes the host lock: flock(2) on the lock file; *fd to host_unlock. */
static int
host_lock(struct keystore *ks, int *fd, struct kms_status *st)
{
	int64_t deadline = now_ms() + LOCK_MAX_WAIT_MS;

	if ((*fd = open(ks->lock_path, O_RDWR | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "cannot open "
		    "the lock file %s: %s", ks->lock_path, strerror(errno));
	while (flock(*fd, LOCK_EX | LOCK_NB) == -1) {
		if ((errno != EWOULDBLOCK && errno != EINTR) ||
		    now_ms() > deadline) {
			close(*fd);
			*fd = -1;
			return kms_status_set(st, KMS_ERR_UNAVAILABLE, "keys "
			    "are being changed by another request: try again");
		}
		pause_random(8);
	}
	return 0;
}

static void
host_unlock(int fd)
{
	if (fd != -1)
		close(fd);	/* releases the flock */
}

/* Fills out (size > 2 * LABEL_RANDOM_BYTES) with random hex digits. */
static int
random_hex(char *out, size_t size)
{
	uint8_t rnd[LABEL_RANDOM_BYTES];
	size_t j;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return KMS_ERR_INTERNAL;
	for (j = 0; j < sizeof(rnd) && 2 * j + 3 <= size; j++)
		snprintf(out + 2 * j, 3, "%02x", rnd[j]);
	return 0;
}

/*
 * The change counter's label into label, "" when this process does not
 * know the counter's object yet or cannot read it (the caller then lists
 * everything, and finds the object in that listing).
 */
static void
changes_read(struct keystore *ks, struct hsm_session *s, char *label,
    size_t size)
{
	hsm_handle_t h;

	label[0] = '\0';
	pthread_rwlock_rdlock(&ks->lock);
	h = ks->chg;
	pthread_rwlock_unlock(&ks->lock);
	if (h == 0 || (hsm_label_get(s, h, label, size) == 0 &&
	    strncmp(label, CHANGES_PREFIX, strlen(CHANGES_PREFIX)) == 0))
		return;
	/* Removed as a duplicate by a writer: found again by the listing. */
	label[0] = '\0';
	pthread_rwlock_wrlock(&ks->lock);
	if (ks->chg == h)
		ks->chg = 0;
	pthread_rwlock_unlock(&ks->lock);
}

struct warm_ctx {
	struct keystore *ks;
	size_t found;
};

/*
 * hsm_list's callback: a key object labelled NAME#VERSION#RANDOM (see
 * version_label) gives its handle to that version, when the version's
 * label is exactly this one and its handle is not known yet.
 */
static int
warm_one(const char *label, hsm_handle_t h, void *arg)
{
	struct warm_ctx *wc = arg;
	char name[KMS_KEY_NAME_MAX + 1], *end;
	struct ks_entry *e;
	struct ks_ventry *v;
	const char *p;
	unsigned long version;
	size_t n;

	if ((p = strchr(label, '#')) == NULL ||
	    (n = (size_t)(p - label)) > KMS_KEY_NAME_MAX || p[1] < '1' ||
	    p[1] > '9')
		return 0;
	memcpy(name, label, n);
	name[n] = '\0';
	errno = 0;
	version = strtoul(p + 1, &end, 10);
	if (errno != 0 || *end != '#' || version > UINT32_MAX)
		return 0;
	pthread_rwlock_wrlock(&wc->ks->lock);
	if ((e = find_locked(wc->ks, name)) != NULL &&
	    (v = version_locked(e, (uint32_t)version)) != NULL &&
	    v->priv == 0 && strcmp(v->label, label) == 0) {
		v->priv = h;
		wc->found++;
	}
	pthread_rwlock_unlock(&wc->ks->lock);
	return 0;
}

int
keystore_warm(struct keystore *ks, struct hsm_session *s, size_t *found)
{
	struct warm_ctx wc;
	int r;

	memset(&wc, 0, sizeof(wc));
	wc.ks = ks;
	if ((r = hsm_list(s, HSM_OBJ_PRIVATE_KEY, warm_one, &wc)) == 0)
		r = hsm_list(s, HSM_OBJ_SECRET_KEY, warm_one, &wc);
	*found = wc.found;
	return r;
}

int
keystore_refresh(struct keystore *ks, struct hsm_session *s, size_t *changed)
{
	char label[HSM_LABEL_MAX];
	struct load_ctx lc;
	int64_t now = now_ms();
	int same, r;

	if (changed != NULL)
		*changed = 0;
	/*
	 * The counter is read before the listing: a change made after this
	 * read moves it again, so that the next refresh lists once more.
	 */
	changes_read(ks, s, label, sizeof(label));
	pthread_rwlock_rdlock(&ks->lock);
	same = label[0] != '\0' && strcmp(label, ks->chg_seen) == 0 &&
	    now - ks->full_ms < FULL_REFRESH_MS;
	pthread_rwlock_unlock(&ks->lock);
	if (same)
		return 0;
	memset(&lc, 0, sizeof(lc));
	lc.ks = ks;
	r = hsm_list_data(s, refresh_one, &lc);
	if (changed != NULL)
		*changed = lc.loaded;
	if (r != 0)
		return r;
	pthread_rwlock_wrlock(&ks->lock);
	if (ks->chg == 0)
		ks->chg = lc.chg;
	strcpy(ks->chg_seen, label);
	ks->full_ms = now;
	pthread_rwlock_unlock(&ks->lock);
	return 0;
}

/*
 * Moves the token's change counter on after a change of key metadata or
 * key objects, under the host lock and the key's token lock: its label is
 * set in place to the next number and fresh random digits, so that no two
 * changes give the same label even where writers on two hosts move it at
 * once.  Made by the first change on a token that has none.  A failure is
 * logged, not returned: the change itself is made, and the other
 * instances see it at their next full listing, within FULL_REFRESH_MS.
 */
static void
changes_bump(struct keystore *ks, struct hsm_session *s)
{
	hsm_handle_t found[META_MAX_DOCS], h;
	char label[HSM_LABEL_MAX], rnd[2 * LABEL_RANDOM_BYTES + 1];
	unsigned long long n;
	size_t i, nf;
	int r, tries;

	pthread_rwlock_rdlock(&ks->lock);
	h = ks->chg;
	pthread_rwlock_unlock(&ks->lock);
	for (tries = 0; tries < 2; tries++) {
		if (h == 0 || hsm_label_get(s, h, label, sizeof(label)) != 0) {
			h = 0;
			label[0] = '\0';
			if ((r = hsm_find_data_value(s,
			    (const uint8_t *)CHANGES_VALUE,
			    strlen(CHANGES_VALUE), found, META_MAX_DOCS,
			    &nf)) != 0)
				goto fail;
			/*
			 * Several only where hosts that share no host
			 * lock made one each: one stays.
			 */
			for (i = 0; i < nf; i++) {
				if (h == 0 && hsm_label_get(s, found[i], label,
				    sizeof(label)) == 0)
					h = found[i];
				else
					hsm_destroy(s, found[i]);
			}
		}
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
	pthread_rwlock_wrlock(&ks->lock);
	ks->chg = h;
	pthread_rwlock_unlock(&ks->lock);
	return;
 fail:
	log_warn("keystore: could not move the token's change counter on "
	    "(%s): other instances see this change within %d s",
	    kms_strerror(r), FULL_REFRESH_MS / 1000);
}

/*
 * Destroys lock objects whose holder has been gone too long (a crash
 * while holding it).  Reads each one's creation time from its value.
 */
static void
lock_reap(struct hsm_session *s, const char *label, const hsm_handle_t *hs,
    size_t n, hsm_handle_t mine)
{
	long long t;
	uint8_t *val;
	size_t i, len;

	for (i = 0; i < n; i++) {
		if (hs[i] == mine || hsm_data_get(s, hs[i], &val, &len) != 0)
			continue;
		if (sscanf((char *)val, "lock %lld", &t) == 1 &&
		    (int64_t)time(NULL) - t > LOCK_STALE_SECONDS) {
			log_warn("keystore: removing the abandoned lock %s",
			    label);
			hsm_destroy(s, hs[i]);
		}
		free(val);
	}
}

/* Takes the token lock of key name; *h is the lock object to unlock. */
static int
token_lock(struct hsm_session *s, const char *name, hsm_handle_t *h,
    struct kms_status *st)
{
	hsm_handle_t any;

	/*
	 * Search before creating anything: SoftHSM2 reads the token again
	 * only when its generation counter moved, and this process's own
	 * next creation moves it past what other processes did meanwhile,
	 * hiding their changes from this process until the next one.
	 */
	(void)hsm_find(s, HSM_OBJ_DATA, name, &any);

	char label[KMS_KEY_NAME_MAX + sizeof(LOCK_SUFFIX)], val[64];
	hsm_handle_t found[META_MAX_DOCS];
	int64_t deadline = now_ms() + LOCK_MAX_WAIT_MS;
	unsigned int backoff = 4;
	uint8_t rnd[8];
	size_t n;
	int r;

	*h = 0;
	snprintf(label, sizeof(label), "%s" LOCK_SUFFIX, name);
	for (;;) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			return kms_status_set(st, KMS_ERR_INTERNAL,
			    "no randomness");
		snprintf(val, sizeof(val), "lock %lld %02x%02x%02x%02x%02x%02x"
		    "%02x%02x", (long long)time(NULL), rnd[0], rnd[1], rnd[2],
		    rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
		if ((r = hsm_data_create(s, label, (const uint8_t *)val,
		    strlen(val), h)) != 0)
			return kms_status_set(st, r, "cannot lock key \"%s\" on "
			    "the token: %s", name, kms_strerror(r));
		r = hsm_find_all(s, HSM_OBJ_DATA, label, found, META_MAX_DOCS,
		    &n);
		if (r == 0 && n == 1 && found[0] == *h)
			return 0;
		hsm_destroy(s, *h);
		*h = 0;
		if (r != 0)
			return kms_status_set(st, r, "cannot lock key \"%s\" on "
			    "the token: %s", name, kms_strerror(r));
		lock_reap(s, label, found, n, 0);
		if (now_ms() > deadline)
			return kms_status_set(st, KMS_ERR_UNAVAILABLE, "key "
			    "\"%s\" is being changed by another request: try "
			    "again", name);
		pause_random(backoff);
		if (backoff < 256)
			backoff *= 2;
	}
}

static void
token_unlock(struct hsm_session *s, hsm_handle_t h)
{
	if (h != 0 && hsm_destroy(s, h) != 0)
		log_warn("keystore: could not remove a lock object; it "
		    "expires after %d s", LOCK_STALE_SECONDS);
}

/*
 * Reads key name's newest document from the token.  With gc (under the
 * key's lock) older documents left by an interrupted replacement are
 * removed.
 * KMS_ERR_NOT_FOUND when the key does not exist.
 */
static int
token_read(struct hsm_session *s, const char *name, int gc,
    struct ks_entry **out, struct kms_status *st)
{
	hsm_handle_t found[META_MAX_DOCS];
	struct ks_entry *best = NULL, *e;
	size_t i, n;
	int r;

	*out = NULL;
	if ((r = hsm_find_all(s, HSM_OBJ_DATA, name, found, META_MAX_DOCS,
	    &n)) != 0)
		return kms_status_set(st, r, "cannot read key metadata: %s",
		    kms_strerror(r));
	for (i = 0; i < n; i++) {
		if ((r = record_read(s, name, found[i], &e, st)) != 0) {
			entry_free(best);
			return r;
		}
		if (best == NULL || e->seq > best->seq) {
			entry_free(best);
			best = e;
		} else
			entry_free(e);
	}
	if (best == NULL)
		return not_found(st, name);
	for (i = 0; gc && i < n; i++)
		if (found[i] != best->meta && hsm_destroy(s, found[i]) == 0)
			log_info("keystore: removed an older document of "
			    "\"%s\"", name);
	kms_status_clear(st);
	*out = best;
	return 0;
}

/*
 * token_read under the locks, retried while the token shows no document
 * or one older than this process has already seen (see the top of this
 * file: a fresh object can be missed for a moment).  KMS_ERR_NOT_FOUND
 * only for a key that this process has never seen and that stays absent.
 */
static int
token_read_fresh(struct keystore *ks, struct hsm_session *s,
    const char *name, int creating, struct ks_entry **out,
    struct kms_status *st)
{
	struct ks_entry *e = NULL, *cur;
	uint64_t want = 0;
	int known, tries, r;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	if ((known = (cur = find_locked(ks, name)) != NULL))
		want = cur->seq;
	pthread_rwlock_unlock(&ks->lock);
	for (tries = 0;; tries++) {
		r = token_read(s, name, 1, &e, st);
		if (r == 0 && e->seq >= want) {
			*out = e;
			return 0;
		}
		if (r != 0 && r != KMS_ERR_NOT_FOUND)
			return r;
		log_debug("keystore: \"%s\": the token shows %s (want %llu), "
		    "try %d", name, r == 0 ? "an older document" : "none",
		    (unsigned long long)want, tries);
		entry_free(e);
		e = NULL;
		if (tries + 1 >= (known ? READ_TRIES_KNOWN : creating ?
		    READ_TRIES_NEW : 1))
			break;
		pause_ms(READ_PAUSE_MS);
	}
	if (!known)
		return r;
	return kms_status_set(st, KMS_ERR_UNAVAILABLE, "the token does not "
	    "show the newest metadata of key \"%s\" (generation %llu): try "
	    "again", name, (unsigned long long)want);
}

/*
 * Writes e (the next generation of a document read by token_read, or a
 * new key's first) to the token, removes the document it replaces, and
 * installs it in the table; e is consumed.  Called under the token lock.
 */
static int
token_write(struct keystore *ks, struct hsm_session *s, struct ks_entry *e,
    struct kms_status *st)
{
	hsm_handle_t old = e->meta, h;
	char *doc;
	int r;

	e->seq++;
	if ((doc = meta_encode(e)) == NULL) {
		entry_free(e);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	r = hsm_data_create(s, e->name, (const uint8_t *)doc, strlen(doc), &h);
	free(doc);
	if (r != 0) {
		entry_free(e);
		return kms_status_set(st, r, "the HSM could not store the "
		    "key's metadata: %s", kms_strerror(r));
	}
	if (old != 0 && hsm_destroy(s, old) != 0)
		log_warn("keystore: an older document of \"%s\" stays on the "
		    "token until the next change", e->name);
	e->meta = h;
	if ((r = install(ks, e)) != 0)
		return kms_status_set(st, r, "out of memory");
	return 0;
}

/* A fresh label NAME#VERSION#RANDOM for a version's HSM objects. */
static int
version_label(const char *name, uint32_t version, char *label, size_t len,
    struct kms_status *st)
{
	size_t i;

	i = (size_t)snprintf(label, len, "%s#%u#", name, version);
	if (i >= len || random_hex(label + i, len - i) != 0)
		return kms_status_set(st, KMS_ERR_INTERNAL, "no randomness");
	return 0;
}

/* Generates the HSM objects of a new version labelled v->label. */
static int
version_generate(struct hsm_session *s, const struct kms_alg_info *alg,
    struct ks_ventry *v, struct kms_status *st)
{
	int r;

	if (alg->can_wrap)
		r = hsm_generate_secret_key(s, alg, v->label,
		    (const uint8_t *)v->label, strlen(v->label), &v->priv);
	else
		r = hsm_generate_key_pair(s, alg, v->label,
		    (const uint8_t *)v->label, strlen(v->label), &v->priv,
		    &v->pub);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not generate the "
		    "key: %s", kms_strerror(r));
	return 0;
}

/* Destroys every HSM object labelled label (a version's key material). */
static int
objects_destroy(struct hsm_session *s, const char *label)
{
	static const enum hsm_obj_class classes[] = {
		HSM_OBJ_PRIVATE_KEY, HSM_OBJ_PUBLIC_KEY, HSM_OBJ_SECRET_KEY
	};
	hsm_handle_t found[META_MAX_DOCS];
	size_t c, i, n;
	int r;

	for (c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		if ((r = hsm_find_all(s, classes[c], label, found,
		    META_MAX_DOCS, &n)) != 0)
			return r;
		for (i = 0; i < n; i++)
			if ((r = hsm_destroy(s, found[i])) != 0 &&
			    r != KMS_ERR_STALE_HANDLE)
				return r;
	}
	return 0;
}

/* Appends a new ENABLED version (generated in the HSM) and makes it primary. */
static int
entry_add_version(struct ks_entry *e, struct hsm_session *s, int64_t now,
    struct kms_status *st)
{
	struct ks_ventry *nv, *v;
	uint32_t version = e->nv == 0 ? 1 : e->v[e->nv - 1].version + 1;
	int r;

	if (e->nv >= KS_MAX_VERSIONS)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "key "
		    "\"%s\" has %d versions, the most a key may have: create "
		    "a new key", e->name, KS_MAX_VERSIONS);
	if ((nv = realloc(e->v, (e->nv + 1) * sizeof(*nv))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	e->v = nv;
	v = &e->v[e->nv];
	memset(v, 0, sizeof(*v));
	v->version = version;
	v->state = KS_STATE_ENABLED;
	v->create_time = now;
	if ((r = version_label(e->name, version, v->label, sizeof(v->label),
	    st)) != 0 || (r = version_generate(s, e->alg, v, st)) != 0)
		return r;
	e->nv++;
	e->primary = version;
	return 0;
}

/* Removes the objects of a version whose document was never written. */
static void
version_undo(struct hsm_session *s, const struct ks_ventry *v)
{
	if (objects_destroy(s, v->label) != 0)
		log_error("keystore: could not remove the objects of a "
		    "version that was not recorded (label %s)", v->label);
}

int
keystore_create(struct keystore *ks, struct hsm_session *s,
    const char *name, const struct kms_alg_info *alg,
    int64_t rotation_period, struct ks_key **out, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	struct ks_ventry v1;
	hsm_handle_t lock = 0;
	int r, exists, hfd;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	exists = find_locked(ks, name) != NULL;
	pthread_rwlock_unlock(&ks->lock);
	if (exists)
		return kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
		    "key \"%s\" already exists", name);
	if ((r = host_lock(ks, &hfd, st)) != 0)
		return r;
	if ((r = token_lock(s, name, &lock, st)) != 0) {
		host_unlock(hfd);
		return r;
	}
	/* Another instance may have made it a moment ago. */
	if ((r = token_read_fresh(ks, s, name, 1, &e, st)) == 0) {
		install(ks, e);
		e = NULL;
		r = kms_status_set(st, KMS_ERR_ALREADY_EXISTS,
		    "key \"%s\" already exists", name);
		goto out;
	}
	if (r != KMS_ERR_NOT_FOUND)
		goto out;
	kms_status_clear(st);
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(e->name, name);
	e->alg = alg;
	e->rotation_period = rotation_period;
	e->create_time = (int64_t)time(NULL);
	if ((r = entry_add_version(e, s, e->create_time, st)) != 0)
		goto out;
	v1 = e->v[0];
	r = token_write(ks, s, e, st);
	e = NULL;
	if (r != 0) {
		version_undo(s, &v1);	/* nothing half-made stays */
		goto out;
	}
	changes_bump(ks, s);
	r = keystore_get(ks, name, out, st);
 out:
	token_unlock(s, lock);
	host_unlock(hfd);
	entry_free(e);
	return r;
}

/*
 * The shape of every change: lock the key on the token, read its newest
 * document, let fn change a copy (fn may generate HSM objects: *made then
 * names a version to undo if the document cannot be written), write it,
 * unlock.  fn returning KS_NO_CHANGE leaves the token as it was, and so
 * is returned (not an error).
 */
#define KS_NO_CHANGE 1
typedef int change_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    struct ks_ventry **made, struct kms_status *st);

static int
keystore_change(struct keystore *ks, struct hsm_session *s, const char *name,
    change_fn *fn, void *arg, struct kms_status *st)
{
	struct ks_entry *e = NULL;
	struct ks_ventry *made = NULL, undo;
	hsm_handle_t lock = 0;
	int r, hfd;

	if ((r = host_lock(ks, &hfd, st)) != 0)
		return r;
	if ((r = token_lock(s, name, &lock, st)) != 0) {
		host_unlock(hfd);
		return r;
	}
	if ((r = token_read_fresh(ks, s, name, 0, &e, st)) != 0)
		goto out;
	if ((r = fn(e, s, arg, &made, st)) != 0) {
		if (r == KS_NO_CHANGE) {
			install(ks, e);	/* what the token says now */
			e = NULL;
		}
		goto out;
	}
	if (made != NULL)
		undo = *made;
	r = token_write(ks, s, e, st);
	e = NULL;
	if (r != 0 && made != NULL)
		version_undo(s, &undo);
	/* Even when the write failed: fn may have destroyed objects. */
	changes_bump(ks, s);
 out:
	entry_free(e);
	token_unlock(s, lock);
	host_unlock(hfd);
	return r;
}

static int
rotate_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    struct ks_ventry **made, struct kms_status *st)
{
	const int64_t *due = arg;
	const struct ks_ventry *p;
	int64_t now = (int64_t)time(NULL);
	int r;

	/* A scheduled rotation checks, under the lock, that it is still due. */
	if (due != NULL) {
		p = version_locked(e, e->primary);
		if (e->rotation_period <= 0 || p == NULL ||
		    p->create_time + e->rotation_period > *due)
			return KS_NO_CHANGE;
	}
	if ((r = entry_add_version(e, s, now, st)) != 0)
		return r;
	*made = &e->v[e->nv - 1];
	return 0;
}

int
keystore_rotate(struct keystore *ks, struct hsm_session *s, const char *name,
    struct ks_key **out, struct kms_status *st)
{
	int r;

	*out = NULL;
	if ((r = keystore_change(ks, s, name, rotate_fn, NULL, st)) < 0)
		return r;
	return keystore_get(ks, name, out, st);
}

struct state_arg {
	uint32_t version;
	enum ks_state state;
	int64_t destroy_wait;
	struct ks_version result;
};

static int
state_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    struct ks_ventry **made, struct kms_status *st)
{
	struct state_arg *a = arg;
	struct ks_ventry *v;
	int64_t now = (int64_t)time(NULL);

	if ((v = version_locked(e, a->version)) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", e->name, a->version);
	a->result.version = v->version;
	if (v->state == a->state) {
		a->result.state = v->state;
		a->result.create_time = v->create_time;
		a->result.destroy_time = v->destroy_time;
		return KS_NO_CHANGE;	/* already so: nothing to write */
	}
	if (a->version == e->primary)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u is the primary version of key \"%s\" and "
		    "cannot be %s: rotate the key first", a->version, e->name,
		    a->state == KS_STATE_DISABLED ? "disabled" : "destroyed");
	if (v->state == KS_STATE_DESTROYED)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" was destroyed on %lld and "
		    "cannot change any more", a->version, e->name,
		    (long long)v->destroy_time);
	switch (a->state) {
	case KS_STATE_ENABLED:
		if (v->state == KS_STATE_DESTROY_SCHEDULED)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "version %u of key \"%s\" is scheduled for "
			    "destruction: restore it (to DISABLED) first",
			    a->version, e->name);
		v->state = KS_STATE_ENABLED;
		break;
	case KS_STATE_DISABLED:
		if (v->state == KS_STATE_DESTROY_SCHEDULED &&
		    now >= v->destroy_time)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "version %u of key \"%s\" can no longer be "
			    "restored: its destroy time has passed",
			    a->version, e->name);
		v->state = KS_STATE_DISABLED;
		v->destroy_time = 0;
		break;
	case KS_STATE_DESTROY_SCHEDULED:
		v->state = KS_STATE_DESTROY_SCHEDULED;
		v->destroy_time = now + a->destroy_wait;
		break;
	default:
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "state "
		    "must be ENABLED, DISABLED or DESTROY_SCHEDULED (a version "
		    "is DESTROYED only after its waiting period)");
	}
	a->result.state = v->state;
	a->result.create_time = v->create_time;
	a->result.destroy_time = v->destroy_time;
	return 0;
}

int
keystore_set_state(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, enum ks_state state,
    int64_t destroy_wait, struct ks_version *out, struct kms_status *st)
{
	struct state_arg a;
	int r;

	memset(out, 0, sizeof(*out));
	if (state != KS_STATE_ENABLED && state != KS_STATE_DISABLED &&
	    state != KS_STATE_DESTROY_SCHEDULED)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "state "
		    "must be ENABLED, DISABLED or DESTROY_SCHEDULED (a version "
		    "is DESTROYED only after its waiting period)");
	if (version == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "name the version to change (version 0 means the primary, "
		    "whose state cannot change)");
	memset(&a, 0, sizeof(a));
	a.version = version;
	a.state = state;
	a.destroy_wait = destroy_wait;
	if ((r = keystore_change(ks, s, name, state_fn, &a, st)) < 0)
		return r;
	*out = a.result;
	return 0;
}

static int
period_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    struct ks_ventry **made, struct kms_status *st)
{
	const int64_t *period = arg;

	if (e->rotation_period == *period)
		return KS_NO_CHANGE;
	e->rotation_period = *period;
	return 0;
}

int
keystore_set_rotation_period(struct keystore *ks, struct hsm_session *s,
    const char *name, int64_t period, struct ks_key **out,
    struct kms_status *st)
{
	int r;

	*out = NULL;
	if ((r = keystore_change(ks, s, name, period_fn, &period, st)) < 0)
		return r;
	return keystore_get(ks, name, out, st);
}

static int
destroy_fn(struct ks_entry *e, struct hsm_session *s, void *arg,
    struct ks_ventry **made, struct kms_status *st)
{
	struct state_arg *a = arg;
	struct ks_ventry *v;
	int64_t now = (int64_t)time(NULL);
	int r;

	if ((v = version_locked(e, a->version)) == NULL ||
	    v->state != KS_STATE_DESTROY_SCHEDULED || v->destroy_time > now)
		return KS_NO_CHANGE;	/* restored meanwhile, or not yet due */
	/* The objects first: a failed write then finds them gone and retries. */
	if ((r = objects_destroy(s, v->label)) != 0)
		return kms_status_set(st, r, "the HSM could not destroy the "
		    "objects of version %u: %s", v->version, kms_strerror(r));
	v->state = KS_STATE_DESTROYED;
	v->destroy_time = now;
	v->priv = v->pub = 0;
	return 0;
}

/* What keystore_maintain found to do, collected under the table lock. */
struct due {
	char name[KMS_KEY_NAME_MAX + 1];
	uint32_t version;		/* 0: rotate; else destroy it */
};

int
keystore_maintain(struct keystore *ks, struct hsm_session *s, int64_t now,
    ks_event_fn *ev, void *arg)
{
	struct ks_entry *e;
	struct ks_ventry *p;
	struct due *todo = NULL, *t;
	struct state_arg a;
	struct kms_status st;
	size_t i, j, n = 0, cap = 0;
	uint32_t version;
	int r;

	pthread_rwlock_rdlock(&ks->lock);
	for (i = 0; i < ks->nbuckets; i++) {
		for (e = ks->buckets[i]; e != NULL; e = e->next) {
			for (j = 0; j <= e->nv; j++) {
				if (j < e->nv) {
					if (e->v[j].state !=
					    KS_STATE_DESTROY_SCHEDULED ||
					    e->v[j].destroy_time > now)
						continue;
				} else {
					p = version_locked(e, e->primary);
					if (e->rotation_period <= 0 ||
					    p == NULL || p->create_time +
					    e->rotation_period > now)
						continue;
				}
				if (n == cap) {
					cap = cap == 0 ? 16 : cap * 2;
					if ((t = realloc(todo, cap *
					    sizeof(*todo))) == NULL)
						goto listed;
					todo = t;
				}
				strcpy(todo[n].name, e->name);
				todo[n++].version = j < e->nv ?
				    e->v[j].version : 0;
			}
		}
	}
 listed:
	pthread_rwlock_unlock(&ks->lock);
	for (i = 0; i < n; i++) {
		kms_status_clear(&st);
		memset(&a, 0, sizeof(a));
		a.version = version = todo[i].version;
		if (version == 0)
			r = keystore_change(ks, s, todo[i].name, rotate_fn,
			    &now, &st);
		else
			r = keystore_change(ks, s, todo[i].name, destroy_fn,
			    &a, &st);
		/* Nothing to report when another instance did it first. */
		if (r == KS_NO_CHANGE)
			continue;
		if (version == 0 && r == 0) {
			pthread_rwlock_rdlock(&ks->lock);
			if ((e = find_locked(ks, todo[i].name)) != NULL)
				version = e->primary;
			pthread_rwlock_unlock(&ks->lock);
		}
		ev(arg, todo[i].version == 0 ? KS_EVENT_ROTATED :
		    KS_EVENT_DESTROYED, todo[i].name, version, r, &st);
	}
	free(todo);
	return 0;
}
void
keystore_free(struct keystore *ks)
{
	struct ks_entry *e, *next;
	size_t i;

	if (ks == NULL)
		return;
	for (i = 0; i < ks->nbuckets; i++) {
		for (e = ks->buckets[i]; e != NULL; e = next) {
			next = e->next;
			entry_free(e);
		}
	}
	free(ks->buckets);
	pthread_rwlock_destroy(&ks->lock);
	free(ks);
}

size_t
keystore_count(struct keystore *ks)
{
	size_t n;

	pthread_rwlock_rdlock(&ks->lock);
	n = ks->count;
	pthread_rwlock_unlock(&ks->lock);
	return n;
}

void
ks_key_free(struct ks_key *k)
{
	if (k == NULL)
		return;
	free(k->versions);
	free(k);
}

static struct ks_key *
snapshot_locked(const struct ks_entry *e)
{
	const struct ks_ventry *p;
	struct ks_key *k;
	size_t i;

	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (k->versions = calloc(e->nv, sizeof(*k->versions))) == NULL) {
		free(k);
		return NULL;
	}
	strcpy(k->name, e->name);
	k->alg = e->alg;
	k->primary = e->primary;
	k->rotation_period = e->rotation_period;
	k->create_time = e->create_time;
	k->next_rotation_time = 0;
	if (e->rotation_period > 0 && (p = version_locked((struct ks_entry *)e,
	    e->primary)) != NULL)
		k->next_rotation_time = p->create_time + e->rotation_period;
	k->nversions = e->nv;
	for (i = 0; i < e->nv; i++) {
		k->versions[i].version = e->v[i].version;
		k->versions[i].state = e->v[i].state;
		k->versions[i].create_time = e->v[i].create_time;
		k->versions[i].destroy_time = e->v[i].destroy_time;
	}
	return k;
}


int
keystore_get(struct keystore *ks, const char *name, struct ks_key **out,
    struct kms_status *st)
{
	struct ks_entry *e;
	int r = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	if ((e = find_locked(ks, name)) == NULL)
		r = not_found(st, name);
	else if ((*out = snapshot_locked(e)) == NULL)
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

static int
cmp_key_name(const void *a, const void *b)
{
	const struct ks_key *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

int
keystore_list(struct keystore *ks, const char *prefix,
    int (*visible)(const char *name, void *arg), void *arg, size_t max,
    struct ks_key ***out, size_t *n)
{
	struct ks_key **v = NULL, *k;
	struct ks_entry *e;
	size_t i, cnt = 0, cap, plen = prefix == NULL ? 0 : strlen(prefix);
	int r = 0;

	*out = NULL;
	*n = 0;
	pthread_rwlock_rdlock(&ks->lock);
	cap = ks->count < max ? ks->count : max;
	if ((v = calloc(cap == 0 ? 1 : cap, sizeof(*v))) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < ks->nbuckets && cnt < cap; i++) {
		for (e = ks->buckets[i]; e != NULL && cnt < cap; e = e->next) {
			if (plen > 0 && strncmp(e->name, prefix, plen) != 0)
				continue;
			if (visible != NULL && !visible(e->name, arg))
				continue;
			if ((k = snapshot_locked(e)) == NULL) {
				r = KMS_ERR_NOMEM;
				goto out;
			}
			v[cnt++] = k;
		}
	}
 out:
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0) {
		for (i = 0; i < cnt; i++)
			ks_key_free(v[i]);
		free(v);
		return r;
	}
	qsort(v, cnt, sizeof(*v), cmp_key_name);
	*out = v;
	*n = cnt;
	return 0;
}

/* Finds key and version and checks the state; called with the lock held. */
static int
resolve_locked(struct keystore *ks, const char *name, uint32_t version,
    struct ks_entry **ep, struct ks_ventry **vp, struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;

	if ((e = find_locked(ks, name)) == NULL)
		return not_found(st, name);
	if (version == 0)
		version = e->primary;
	if ((v = version_locked(e, version)) == NULL)
		return kms_status_set(st, KMS_ERR_NOT_FOUND,
		    "key \"%s\" has no version %u", name, version);
	if (v->state != KS_STATE_ENABLED)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "version %u of key \"%s\" is %s and cannot be used%s",
		    version, name, kms_state_name(v->state),
		    v->state == KS_STATE_DISABLED ? " until it is enabled" :
		    v->state == KS_STATE_DESTROY_SCHEDULED ? " (restore it "
		    "before its destroy time to keep it)" : "");
	*ep = e;
	*vp = v;
	return 0;
}

int
keystore_resolve(struct keystore *ks, const char *name, uint32_t version,
    const struct kms_alg_info **alg, uint32_t *resolved,
    struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;
	int r;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, &e, &v, st)) == 0) {
		*alg = e->alg;
		*resolved = v->version;
	}
	pthread_rwlock_unlock(&ks->lock);
	return r;
}

/*
 * Gives the cached handle of a version's private (want_pub 0) or public
 * (want_pub 1) object, looking it up on the token when it is not known yet
 * or when refresh is set (the HSM called the cached one stale).
 */
static int
version_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, int want_pub, int refresh,
    const struct kms_alg_info **alg, hsm_handle_t *out,
    struct kms_status *st)
{
	struct ks_entry *e;
	struct ks_ventry *v;
	char label[HSM_LABEL_MAX];
	enum hsm_obj_class cls;
	hsm_handle_t h;
	int r, tries;

	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, &e, &v, st)) == 0) {
		*alg = e->alg;
		h = want_pub ? v->pub : v->priv;
		memcpy(label, v->label, sizeof(label));
	}
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0)
		return r;
	if (h != 0 && !refresh) {
		*out = h;
		return 0;
	}
	cls = want_pub ? HSM_OBJ_PUBLIC_KEY : (*alg)->can_wrap ?
	    HSM_OBJ_SECRET_KEY : HSM_OBJ_PRIVATE_KEY;
	/* A version made a moment ago by another instance may hide briefly. */
	for (tries = 0; (r = hsm_find(s, cls, label, &h)) ==
	    KMS_ERR_NOT_FOUND && tries < READ_TRIES_NEW; tries++)
		pause_ms(READ_PAUSE_MS);
	if (r == KMS_ERR_NOT_FOUND && token_read(s, name, 0, &e, st) == 0) {
		/* Destroyed by another instance?  Its document says so. */
		install(ks, e);
		pthread_rwlock_rdlock(&ks->lock);
		r = resolve_locked(ks, name, version, &e, &v, st);
		pthread_rwlock_unlock(&ks->lock);
		if (r != 0)
			return r;
		r = KMS_ERR_NOT_FOUND;
	}
	if (r != 0)
		return kms_status_set(st, r == KMS_ERR_NOT_FOUND ?
		    KMS_ERR_UNAVAILABLE : r, "version %u of key \"%s\": its "
		    "HSM object cannot be found (%s)", version, name,
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (resolve_locked(ks, name, version, &e, &v, st) == 0) {
		if (want_pub)
			v->pub = h;
		else
			v->priv = h;
	}
	pthread_rwlock_unlock(&ks->lock);
	*out = h;
	return 0;
}

int
keystore_sign(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	hsm_handle_t h;
	size_t cap = *siglen;
	int r, attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, 0,
		    attempt > 0, &alg, &h, st)) != 0)
			return r;
		if (!alg->can_sign)
			return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
			    "key \"%s\" is an %s key and cannot sign", name,
			    alg->name);
		*siglen = cap;
		r = hsm_sign(s, alg, h, in, inlen, sig, siglen);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not sign: %s",
		    kms_strerror(r));
	return 0;
}

int
keystore_public_key(struct keystore *ks, struct hsm_session *s,
    const char *name, uint32_t version, uint8_t **der, size_t *derlen,
    struct kms_status *st)
{
	const struct kms_alg_info *alg;
	struct ks_entry *e;
	struct ks_ventry *v;
	uint8_t *buf = NULL;
	hsm_handle_t h;
	size_t len = 0;
	int r, attempt;

	*der = NULL;
	*derlen = 0;
	pthread_rwlock_rdlock(&ks->lock);
	if ((r = resolve_locked(ks, name, version, &e, &v, st)) == 0 &&
	    v->spki != NULL) {
		if ((buf = malloc(v->spki_len)) == NULL)
			r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		else {
			memcpy(buf, v->spki, v->spki_len);
			len = v->spki_len;
		}
	} else if (r == 0 && e->alg->can_wrap)
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is a symmetric %s key: it has no public key",
		    name, e->alg->name);
	pthread_rwlock_unlock(&ks->lock);
	if (r != 0 || buf != NULL)
		goto done;
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = version_handle(ks, s, name, version, 1,
		    attempt > 0, &alg, &h, st)) != 0)
			return r;
		r = hsm_public_key_der(s, alg, h, &buf, &len);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0)
		return kms_status_set(st, r, "cannot read the public key: %s",
		    kms_strerror(r));
	pthread_rwlock_wrlock(&ks->lock);
	if (resolve_locked(ks, name, version, &e, &v, st) == 0 &&
	    v->spki == NULL && (v->spki = malloc(len)) != NULL) {
		memcpy(v->spki, buf, len);
		v->spki_len = len;
	}
	pthread_rwlock_unlock(&ks->lock);
	kms_status_clear(st);
 done:
	if (r != 0)
		return r;
	*der = buf;
	*derlen = len;
	return 0;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Finds the secret key of a resolved version that can wrap. */
static int
wrap_handle(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, int refresh, hsm_handle_t *h, struct kms_status *st)
{
	const struct kms_alg_info *alg;
	int r;

	if ((r = version_handle(ks, s, name, version, 0, refresh, &alg, h, st)) != 0)
		return r;
	if (!alg->can_wrap)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "key \"%s\" is an %s key and cannot wrap: use an "
		    "AES_256_KWP key", name, alg->name);
	return 0;
}

int
keystore_wrap(struct keystore *ks, struct hsm_session *s, const char *name,
    uint32_t version, const uint8_t *in, size_t inlen, uint8_t **blob,
    size_t *bloblen, struct kms_status *st)
{
	uint8_t *inner = NULL, *out = NULL;
	unsigned long mech = 0;
	hsm_handle_t h;
	size_t outlen = 0;
	int r = 0, attempt;

	*blob = NULL;
	*bloblen = 0;
	if (inlen == 0 || inlen > KS_WRAP_MAX_PLAINTEXT)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "plaintext "
		    "must be 1 to %d bytes, not %zu", KS_WRAP_MAX_PLAINTEXT,
		    inlen);
	if ((inner = malloc(inlen + 4)) == NULL ||
	    (out = malloc(KS_WRAP_MAX_BLOB)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	put_be32(inner, (uint32_t)inlen);
	memcpy(inner + 4, in, inlen);
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			goto out;
		outlen = KS_WRAP_MAX_BLOB - KS_WRAP_HEADER;
		r = hsm_wrap(s, h, inner, inlen + 4, out + KS_WRAP_HEADER,
		    &outlen, &mech);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r != 0) {
		kms_status_set(st, r, "the HSM could not wrap: %s",
		    kms_strerror(r));
		goto out;
	}
	out[0] = 0x01;
	put_be32(out + 1, version);
	put_be32(out + 5, (uint32_t)mech);
	*blob = out;
	*bloblen = KS_WRAP_HEADER + outlen;
	out = NULL;
 out:
	secret_freezero(inner, inner == NULL ? 0 : inlen + 4);
	free(out);
	return r;
}

int
keystore_blob_version(const uint8_t *blob, size_t len, uint32_t *version,
    struct kms_status *st)
{
	/* A KWP output is at least 16 bytes and a multiple of 8. */
	if (len < KS_WRAP_HEADER + 16 || len > KS_WRAP_MAX_BLOB ||
	    (len - KS_WRAP_HEADER) % 8 != 0 || blob[0] != 0x01 ||
	    get_be32(blob + 1) == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "not a "
		    "wrapped blob made by kms (bad header or length)");
	*version = get_be32(blob + 1);
	return 0;
}

int
keystore_unwrap(struct keystore *ks, struct hsm_session *s, const char *name,
    const uint8_t *blob, size_t len, struct secret **out,
    struct kms_status *st)
{
	struct secret *inner = NULL, *plain = NULL;
	uint32_t version, plen;
	hsm_handle_t h;
	size_t i;
	int r = 0, attempt;

	*out = NULL;
	if ((r = keystore_blob_version(blob, len, &version, st)) != 0)
		return r;
	/* Only the AES key wrap mechanisms (RFC 5649, 0x210A or 0x210B). */
	if (get_be32(blob + 5) != 0x210A && get_be32(blob + 5) != 0x210B)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob names an unknown mechanism 0x%x",
		    (unsigned int)get_be32(blob + 5));
	for (attempt = 0; attempt < 2; attempt++) {
		if ((r = wrap_handle(ks, s, name, version, attempt > 0, &h,
		    st)) != 0)
			return r;
		r = hsm_unwrap(s, h, get_be32(blob + 5), blob + KS_WRAP_HEADER,
		    len - KS_WRAP_HEADER, &inner);
		if (r != KMS_ERR_STALE_HANDLE)
			break;
	}
	if (r == KMS_ERR_VERIFY_FAILED)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "the "
		    "wrapped blob does not unwrap with version %u of key "
		    "\"%s\": it was changed, truncated or made with another "
		    "key", version, name);
	if (r != 0)
		return kms_status_set(st, r, "the HSM could not unwrap: %s",
		    kms_strerror(r));
	/*
	 * The inner length must fit, and the rest be the zero padding that
	 * SoftHSM2 leaves (other modules strip it).
	 */
	r = KMS_ERR_INVALID_ARGUMENT;
	if (inner->len < 4 || (plen = get_be32(inner->buf)) == 0 ||
	    plen > inner->len - 4 || inner->len - 4 - plen >= 8)
		goto bad;
	for (i = 4 + plen; i < inner->len; i++)
		if (inner->buf[i] != 0)
			goto bad;
	if ((plain = secret_new(plen)) == NULL) {
		secret_free(inner);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	memcpy(plain->buf, inner->buf + 4, plen);
	secret_free(inner);
	*out = plain;
	return 0;
 bad:
	secret_free(inner);
	return kms_status_set(st, r, "the wrapped blob is malformed inside");
}

/*
 * Counters (bundle sequence numbers): a CKO_DATA object labelled
 * KS_COUNTER_PREFIX + name whose value is "seq N", replaced as a key's
 * document is, under the same locks.
 */
int
keystore_counter_advance(struct keystore *ks, struct hsm_session *s,
    const char *name, uint64_t value, uint64_t max_step, uint64_t *last,
    struct kms_status *st)
{
	char label[HSM_LABEL_MAX], text[32];
	hsm_handle_t found[META_MAX_DOCS], lock = 0, h;
	unsigned long long v, best = 0;
	uint8_t *val;
	size_t i, n, len;
	int r, hfd;

	*last = 0;
	if (strlen(name) + sizeof(KS_COUNTER_PREFIX) > sizeof(label))
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "counter "
		    "name too long");
	snprintf(label, sizeof(label), KS_COUNTER_PREFIX "%s", name);
	if ((r = host_lock(ks, &hfd, st)) != 0)
		return r;
	if ((r = token_lock(s, label, &lock, st)) != 0)
		goto out;
	if ((r = hsm_find_all(s, HSM_OBJ_DATA, label, found, META_MAX_DOCS,
	    &n)) != 0) {
		kms_status_set(st, r, "cannot read counter %s: %s", name,
		    kms_strerror(r));
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((r = hsm_data_get(s, found[i], &val, &len)) != 0) {
			kms_status_set(st, r, "cannot read counter %s: %s",
			    name, kms_strerror(r));
			goto out;
		}
		if (sscanf((char *)val, "seq %llu", &v) == 1 && v > best)
			best = v;
		free(val);
	}
	*last = best;
	if (value <= best) {
		r = kms_status_set(st, KMS_ERR_FAILED_PRECONDITION, "sequence "
		    "number %llu is not above %llu, the last one signed for "
		    "%s", (unsigned long long)value, best, name);
		goto out;
	}
	if (value - best > max_step) {
		r = kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "sequence "
		    "number %llu is more than %llu above %llu, the last one "
		    "signed for %s", (unsigned long long)value,
		    (unsigned long long)max_step, best, name);
		goto out;
	}
	snprintf(text, sizeof(text), "seq %llu", (unsigned long long)value);
	if ((r = hsm_data_create(s, label, (const uint8_t *)text,
	    strlen(text), &h)) != 0) {
		kms_status_set(st, r, "cannot store counter %s: %s", name,
		    kms_strerror(r));
		goto out;
	}
	for (i = 0; i < n; i++)
		hsm_destroy(s, found[i]);
	r = 0;
 out:
	token_unlock(s, lock);
	host_unlock(hfd);
	return r;
}
