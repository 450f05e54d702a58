/*
 * admin.c: the store commands (admin.h), run by kmsd instead of serving.
 *
 * Both work through store.h alone, so that they treat the token and etcd
 * alike:
 *  - --migrate-store lists the source, and for each key document and
 *    counter reads the destination's under its lock, then writes the
 *    source's copy where the destination has none or an older one (a
 *    lower generation: a key's seq, a counter's value).  What is already
 *    there is left alone, which makes a second run a no-op.  Every write
 *    happens under the destination's STORE_CLAIM_ALONE, so no kmsd can
 *    serve from the destination meanwhile; the source may keep serving
 *    (it is only read), and a run after its last change copies that too.
 *  - --gc-orphans lists the token's key objects first and the store's
 *    documents second, so that a version committed between the two reads
 *    is seen as committed.  Objects of a version a document already holds
 *    with other material (or as DESTROYED) can never be committed any
 *    more: their change lost.  Objects of a version no document holds yet
 *    may be a change in flight; they count as orphans only when the
 *    store's STORE_CLAIM_ALONE shows that no kmsd serves.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "auditkey.h"
#include "config.h"
#include "etcd.h"
#include "gate.h"
#include "hsm.h"
#include "keymeta.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "names.h"
#include "store.h"
#include "storeopen.h"

#define ADMIN_IDENTITY "kmsd/admin"
#define ADMIN_CHAIN "kmsd-admin"
#define MAX_DOCS 10000000		/* a sanity bound on a listing */

/* One document of a listing, copied. */
struct doc {
	char *name;
	uint8_t *value;
	size_t len;
};

struct docs {
	struct doc *v;
	size_t n, cap;
};

static void
docs_clear(struct docs *d)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		free(d->v[i].name);
		free(d->v[i].value);
	}
	free(d->v);
	memset(d, 0, sizeof(*d));
}

/* Room in *v (*cap elements of size) for element n, within MAX_DOCS. */
static int
grow(void **v, size_t *cap, size_t n, size_t size)
{
	void *nv;
	size_t want;

	if (n < *cap)
		return 0;
	if (*cap >= MAX_DOCS)
		return KMS_ERR_RESOURCE_EXHAUSTED;
	want = *cap ? 2 * *cap : 64;
	if ((nv = reallocarray(*v, want, size)) == NULL)
		return KMS_ERR_NOMEM;
	*v = nv;
	*cap = want;
	return 0;
}

/* Counters are named KS_COUNTER_PREFIX + a key name. */
static int
is_counter(const char *name)
{
	struct kms_status st;
	size_t n = strlen(KS_COUNTER_PREFIX);

	return strncmp(name, KS_COUNTER_PREFIX, n) == 0 &&
	    names_check_key(name + n, &st) == 0;
}

/* Appends a copy of (name, value) to d. */
static int
docs_push(struct docs *d, const char *name, const uint8_t *value,
    size_t len)
{
	struct doc *nv;
	int r;

	if ((r = grow((void **)&d->v, &d->cap, d->n, sizeof(*d->v))) != 0)
		return r;
	nv = &d->v[d->n];
	if ((nv->name = strdup(name)) == NULL ||
	    (nv->value = malloc(len + 1)) == NULL) {
		free(nv->name);
		return KMS_ERR_NOMEM;
	}
	memcpy(nv->value, value, len);
	nv->value[len] = '\0';
	nv->len = len;
	d->n++;
	return 0;
}

/* A store_list_fn keeping the key documents and counters. */
static int
docs_add(const char *name, uint64_t id, const uint8_t *value, size_t len,
    void *arg)
{
	struct kms_status st;

	(void)id;
	if (names_check_key(name, &st) != 0 && !is_counter(name))
		return 0;	/* the store's own, or not the keystore's */
	return docs_push(arg, name, value, len);
}

static int
docs_load(struct store *sto, struct hsm_session *s, struct docs *d,
    const char *what)
{
	int r;

	if ((r = store_list(sto, s, docs_add, d)) != 0)
		printf("cannot list the %s store: %s\n", what,
		    kms_strerror(r));
	return r;
}

/* What migrating one document does. */
enum step { STEP_SAME, STEP_COPY, STEP_UPDATE, STEP_KEPT, STEP_FAILED };

/*
 * Brings the document src into dst, under its lock there: absent or
 * older there, it is written (unless dry_run).
 */
static enum step
migrate_one(struct store *dst, struct hsm_session *s, const struct doc *src,
    int dry_run, uint64_t *src_rev, uint64_t *dst_rev,
    struct kms_status *st)
{
	struct store_lock *lock = NULL;
	struct store_doc cur;
	enum step step = STEP_FAILED;
	int r, found;

	memset(&cur, 0, sizeof(cur));
	*dst_rev = 0;
	if (keystore_doc_rev(src->name, src->value, src->len, src_rev,
	    st) != 0)
		return STEP_FAILED;
	if (store_lock(dst, s, src->name, &lock, st) != 0)
		return STEP_FAILED;
	r = store_get(dst, s, src->name, lock, 0, &cur, st);
	if (r != 0 && r != KMS_ERR_NOT_FOUND)
		goto out;
	found = r == 0;
	kms_status_clear(st);
	if (found && keystore_doc_rev(src->name, cur.value, cur.len,
	    dst_rev, st) != 0)
		goto out;
	if (found && cur.len == src->len &&
	    memcmp(cur.value, src->value, src->len) == 0)
		step = STEP_SAME;
	else if (found && *dst_rev >= *src_rev)
		step = STEP_KEPT;
	else {
		step = found ? STEP_UPDATE : STEP_COPY;
		if (!dry_run) {
			if (store_put(dst, s, lock, src->name,
			    found ? &cur.at : NULL, src->value, src->len, NULL,
			    st) != 0) {
				step = STEP_FAILED;
				goto out;
			}
			store_touch(dst, s);
		}
	}
 out:
	store_doc_clear(&cur);
	store_unlock(dst, s, lock);
	return step;
}

/*
 * The audit chains' HSM anchors move with the documents: on the token
 * each is a data object labelled AUDIT_ANCHOR_LABEL CHAIN, in etcd a
 * value beside the documents (store_etcd_value_get/set), sealed by the
 * chain's seal key (audit_anchor_seal, opened when read).  A chain opened
 * on the other store would otherwise find no anchor for the checkpoints
 * it signed, and refuse to open.  One is newer than another when it
 * anchors a later point of the chain (audit_anchor_position).
 */
static int
is_anchor(const char *label)
{
	return strncmp(label, AUDIT_ANCHOR_LABEL,
	    strlen(AUDIT_ANCHOR_LABEL)) == 0;
}


static int
anchor_token_one(const struct hsm_object *o, void *arg)
{
	if (!is_anchor(o->label))
		return 0;
	return docs_push(arg, o->label, o->value, o->value_len);
}

struct anchor_etcd_ctx {
	struct docs *d;
	size_t skip;		/* the key's part before the label */
};

static int
anchor_etcd_one(const struct etcd_kv *kv, void *arg)
{
	struct anchor_etcd_ctx *ac = arg;

	if (kv->key_len <= ac->skip || !is_anchor(kv->key + ac->skip))
		return 0;
	return docs_push(ac->d, kv->key + ac->skip, kv->value, kv->len);
}

/* Every anchor of the store: on the token, or in etcd. */
static int
anchors_load(struct store *sto, struct hsm_session *s, struct docs *d,
    struct kms_status *st)
{
	struct anchor_etcd_ctx ac = { d, 0 };
	const char *prefix = NULL;
	struct etcd *e;
	char key[1024];

	if ((e = store_etcd_client(sto, &prefix)) == NULL)
		return hsm_list_data(s, anchor_token_one, d);
	if ((size_t)snprintf(key, sizeof(key), "%s" STORE_ETCD_VALUE_DIR
	    AUDIT_ANCHOR_LABEL, prefix) >= sizeof(key))
		return kms_status_set(st, KMS_ERR_CONFIG, "etcd prefix too "
		    "long");
	ac.skip = strlen(prefix) + strlen(STORE_ETCD_VALUE_DIR);
	return etcd_range(e, key, 1, anchor_etcd_one, &ac, NULL, NULL, st);
}

/*
 * The text of the anchor label in the store; KMS_ERR_NOT_FOUND when it has
 * none, KMS_ERR_VERIFY_FAILED when its seal in etcd is wrong.
 */
static int
anchor_get(struct store *sto, struct hsm_session *s, const char *label,
    char **value, size_t *len, hsm_handle_t *h)
{
	uint8_t *v = NULL;
	char *e = NULL;
	size_t n = 0;
	int r;

	*h = 0;
	if (store_etcd_client(sto, NULL) != NULL) {
		if ((r = store_etcd_value_get(sto, label, &e, &n)) == 0)
			r = audit_anchor_open(s, label, e, n, value, len);
		free(e);
		return r;
	}
	if ((r = hsm_find(s, HSM_OBJ_DATA, label, h)) != 0 ||
	    (r = hsm_data_get(s, *h, &v, len)) != 0)
		return r;
	*value = (char *)v;
	return 0;
}

/* Writes the anchor's text, sealed in etcd (audit_anchor_seal). */
static int
anchor_set(struct store *sto, struct hsm_session *s, const char *label,
    const char *text, size_t len, hsm_handle_t h)
{
	char *v = NULL;
	size_t n = 0;
	int r;

	if (store_etcd_client(sto, NULL) != NULL) {
		if ((r = audit_anchor_seal(s, label, text, len, &v, &n)) == 0)
			r = store_etcd_value_set(sto, label, v, n);
		free(v);
		return r;
	}
	if (h == 0)
		return hsm_data_create(s, label, (const uint8_t *)text, len,
		    &h);
	return hsm_data_set(s, label, &h, (const uint8_t *)text, len);
}

/*
 * Brings the anchor d of store src into dst: absent there or older, it is
 * written.  One from etcd whose seal is wrong is not migrated.
 */
static enum step
migrate_anchor(struct store *src, struct store *dst, struct hsm_session *s,
    const struct doc *d, int dry_run, struct kms_status *st)
{
	uint64_t spos, dpos;
	hsm_handle_t h = 0;
	char *text = NULL, *cur = NULL;
	size_t tlen = 0, len = 0;
	enum step step = STEP_FAILED;
	int r;

	if (store_etcd_client(src, NULL) == NULL) {
		if ((text = malloc(d->len + 1)) == NULL) {
			kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
			return STEP_FAILED;
		}
		memcpy(text, d->value, d->len);
		text[d->len] = '\0';
		tlen = d->len;
	} else if ((r = audit_anchor_open(s, d->name, (const char *)d->value,
	    d->len, &text, &tlen)) != 0) {
		kms_status_set(st, r, "its MAC by the HSM seal key is %s: "
		    "forged or damaged in etcd, not migrated",
		    r == KMS_ERR_VERIFY_FAILED ? "missing or wrong" :
		    kms_strerror(r));
		return STEP_FAILED;
	}
	if (strlen(text) != tlen || audit_anchor_position(text, &spos) != 0) {
		kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "not an audit "
		    "anchor");
		goto out;
	}
	r = anchor_get(dst, s, d->name, &cur, &len, &h);
	if (r != 0 && r != KMS_ERR_NOT_FOUND) {
		kms_status_set(st, r, "cannot read it: %s", kms_strerror(r));
		goto out;
	}
	if (r == 0 && len == tlen && memcmp(cur, text, len) == 0)
		step = STEP_SAME;
	else if (r == 0 && audit_anchor_position(cur, &dpos) == 0 &&
	    dpos >= spos)
		step = STEP_KEPT;
	else
		step = r == 0 ? STEP_UPDATE : STEP_COPY;
	if ((step == STEP_COPY || step == STEP_UPDATE) && !dry_run &&
	    (r = anchor_set(dst, s, d->name, text, tlen, h)) != 0) {
		kms_status_set(st, r, "cannot write it: %s", kms_strerror(r));
		step = STEP_FAILED;
	}
 out:
	free(cur);
	free(text);
	return step;
}

/* Parses "token:etcd" or "etcd:token". */
static int
parse_spec(const char *spec, enum config_store *from, enum config_store *to)
{
	char a[16], b[16];
	const char *colon = strchr(spec, ':');

	if (colon == NULL || (size_t)(colon - spec) >= sizeof(a) ||
	    strlen(colon + 1) >= sizeof(b))
		return KMS_ERR_INVALID_ARGUMENT;
	memcpy(a, spec, (size_t)(colon - spec));
	a[colon - spec] = '\0';
	strcpy(b, colon + 1);
	if (store_backend_parse(a, from) != 0 ||
	    store_backend_parse(b, to) != 0 || *from == *to)
		return KMS_ERR_INVALID_ARGUMENT;
	return 0;
}

int
admin_migrate_store(struct service *svc, const char *spec, int dry_run)
{
	static const char *verbs[2][5] = {
		{ "same", "copied", "updated", "kept", "failed" },
		{ "same", "would copy", "would update", "kept", "failed" },
	};
	struct store *src = NULL, *dst = NULL;
	struct hsm_session *s = NULL;
	struct docs d;
	struct kms_status st;
	enum config_store from, to;
	size_t i, count[5];
	uint64_t srev, drev;
	enum step step;
	const char *fn, *tn;
	int r, rc = 1;

	memset(&d, 0, sizeof(d));
	memset(count, 0, sizeof(count));
	kms_status_clear(&st);
	if (parse_spec(spec, &from, &to) != 0) {
		fprintf(stderr, "kmsd: --migrate-store: token:etcd or "
		    "etcd:token\n");
		return 2;
	}
	fn = store_backend_name(from);
	tn = store_backend_name(to);
	if ((r = hsm_session_open(svc->hsm, &s)) != 0) {
		printf("cannot open an HSM session: %s\n", kms_strerror(r));
		goto out;
	}
	if (store_open(svc->cfg, to, &dst, &st) != 0) {
		printf("cannot open the %s store: %s\n", tn, st.msg);
		goto out;
	}
	if (store_claim(dst, s, STORE_CLAIM_ALONE, &st) != 0) {
		printf("refused: %s\n", st.msg);
		goto out;
	}
	if (store_open(svc->cfg, from, &src, &st) != 0) {
		printf("cannot open the %s store: %s\n", fn, st.msg);
		goto out;
	}
	if (docs_load(src, s, &d, fn) != 0)
		goto out;
	printf("migrate-store %s -> %s%s: %zu documents in %s\n", fn, tn,
	    dry_run ? " (dry run: nothing is written)" : "", d.n, fn);
	for (i = 0; i < d.n; i++) {
		kms_status_clear(&st);
		step = migrate_one(dst, s, &d.v[i], dry_run, &srev, &drev, &st);
		count[step]++;
		if (step == STEP_SAME)
			continue;
		if (step == STEP_FAILED)
			printf("  failed        %s: %s\n", d.v[i].name, st.msg);
		else if (step == STEP_KEPT)
			printf("  kept          %s: generation %llu in %s, not "
			    "older than %llu in %s\n", d.v[i].name,
			    (unsigned long long)drev, tn,
			    (unsigned long long)srev, fn);
		else if (step == STEP_UPDATE)
			printf("  %-13s %s: generation %llu -> %llu\n",
			    verbs[dry_run][step], d.v[i].name,
			    (unsigned long long)drev,
			    (unsigned long long)srev);
		else
			printf("  %-13s %s: generation %llu\n",
			    verbs[dry_run][step], d.v[i].name,
			    (unsigned long long)srev);
	}
	printf("%zu %s, %zu %s, %zu already in %s, %zu kept (newer or "
	    "different in %s), %zu failed\n", count[STEP_COPY],
	    verbs[dry_run][STEP_COPY], count[STEP_UPDATE],
	    verbs[dry_run][STEP_UPDATE], count[STEP_SAME], tn,
	    count[STEP_KEPT], tn, count[STEP_FAILED]);
	rc = count[STEP_FAILED] + count[STEP_KEPT] > 0;
	memset(count, 0, sizeof(count));
	docs_clear(&d);
	kms_status_clear(&st);
	if ((r = anchors_load(src, s, &d, &st)) != 0) {
		printf("cannot list the audit anchors in %s: %s\n", fn,
		    st.msg[0] != '\0' ? st.msg : kms_strerror(r));
		rc = 1;
		goto out;
	}
	for (i = 0; i < d.n; i++) {
		kms_status_clear(&st);
		step = migrate_anchor(src, dst, s, &d.v[i], dry_run,
		    &st);
		count[step]++;
		if (step == STEP_FAILED)
			printf("  failed        %s: %s\n", d.v[i].name, st.msg);
		else if (step == STEP_KEPT)
			printf("  kept          %s: %s anchors a later "
			    "checkpoint\n", d.v[i].name, tn);
		else if (step != STEP_SAME)
			printf("  %-13s %s\n", verbs[dry_run][step],
			    d.v[i].name);
	}
	printf("audit anchors: %zu %s, %zu %s, %zu already in %s, %zu "
	    "kept, %zu failed\n", count[STEP_COPY], verbs[dry_run][STEP_COPY],
	    count[STEP_UPDATE], verbs[dry_run][STEP_UPDATE], count[STEP_SAME],
	    tn, count[STEP_KEPT], count[STEP_FAILED]);
	if (count[STEP_FAILED] + count[STEP_KEPT] > 0)
		rc = 1;
	if (!dry_run)
		log_info("store: migration %s -> %s %s", fn, tn, rc == 0 ?
		    "done" : "incomplete");
 out:
	docs_clear(&d);
	store_free(src);
	store_free(dst);
	hsm_session_close(s);
	return rc;
}

/* A key object of a version, by label: NAME#VERSION#16 hex digits. */
struct kobj {
	char label[HSM_LABEL_MAX];
	char name[KMS_KEY_NAME_MAX + 1];
	uint32_t version;
	hsm_handle_t h[3];		/* private, public, secret; 0: none */
	int why;			/* enum verdict */
};

struct kobjs {
	struct kobj *v;
	size_t n, cap;
	int cls;			/* the class listed: index into h */
};

/* Splits a version label; 0 when it is one. */
static int
parse_label(const char *label, char *name, uint32_t *version)
{
	struct kms_status st;
	const char *h1, *h2;
	unsigned long v;
	char *end;
	size_t i;

	if ((h1 = strchr(label, '#')) == NULL ||
	    (size_t)(h1 - label) > KMS_KEY_NAME_MAX ||
	    (h2 = strchr(h1 + 1, '#')) == NULL || strlen(h2 + 1) != 16)
		return -1;
	for (i = 1; h2[i] != '\0'; i++)
		if (strchr("0123456789abcdef", h2[i]) == NULL)
			return -1;
	if (h1[1] < '1' || h1[1] > '9')
		return -1;
	errno = 0;
	v = strtoul(h1 + 1, &end, 10);
	if (errno != 0 || end != h2 || v > KS_MAX_VERSIONS)
		return -1;
	memcpy(name, label, (size_t)(h1 - label));
	name[h1 - label] = '\0';
	if (names_check_key(name, &st) != 0)
		return -1;
	*version = (uint32_t)v;
	return 0;
}

/* One object per entry first (kobj_add), merged by label (kobjs_merge). */
static int
kobj_add(const char *label, hsm_handle_t h, void *arg)
{
	struct kobjs *ko = arg;
	char name[KMS_KEY_NAME_MAX + 1];
	struct kobj *o;
	uint32_t version;
	int r;

	if (parse_label(label, name, &version) != 0)
		return 0;	/* not a version's (the audit keys, say) */
	if ((r = grow((void **)&ko->v, &ko->cap, ko->n, sizeof(*ko->v))) != 0)
		return r;
	o = &ko->v[ko->n++];
	memset(o, 0, sizeof(*o));
	snprintf(o->label, sizeof(o->label), "%s", label);
	strcpy(o->name, name);
	o->version = version;
	o->h[ko->cls] = h;
	return 0;
}

static int
kobj_cmp(const void *a, const void *b)
{
	return strcmp(((const struct kobj *)a)->label,
	    ((const struct kobj *)b)->label);
}

/* Sorts by label and makes one entry of the objects of each label. */
static void
kobjs_merge(struct kobjs *ko)
{
	size_t i, j, c;

	if (ko->n == 0)
		return;
	qsort(ko->v, ko->n, sizeof(*ko->v), kobj_cmp);
	for (i = 0, j = 1; j < ko->n; j++) {
		if (strcmp(ko->v[i].label, ko->v[j].label) != 0) {
			ko->v[++i] = ko->v[j];
			continue;
		}
		for (c = 0; c < 3; c++)
			if (ko->v[i].h[c] == 0)
				ko->v[i].h[c] = ko->v[j].h[c];
	}
	ko->n = i + 1;
}

enum verdict {
	V_LIVE = 0,		/* a document references it */
	V_LOST,			/* its version holds other material */
	V_DESTROYED,		/* its version is DESTROYED */
	V_UNRECORDED		/* no document holds its version (yet) */
};

static int
docs_cmp(const void *a, const void *b)
{
	return strcmp(((const struct doc *)a)->name,
	    ((const struct doc *)b)->name);
}

/* What the documents say of object o (d sorted by name). */
static enum verdict
judge(const struct docs *d, const struct kobj *o)
{
	struct kms_status st;
	struct km_version *v;
	struct km_key k;
	struct doc key, *doc;
	enum verdict out = V_UNRECORDED;

	key.name = (char *)o->name;
	if ((doc = bsearch(&key, d->v, d->n, sizeof(*d->v),
	    docs_cmp)) == NULL || km_decode((const char *)doc->value,
	    doc->len, &k, &st) != 0)
		return V_UNRECORDED;
	if ((v = km_version(&k, o->version)) != NULL) {
		if (strcmp(v->label, o->label) != 0)
			out = V_LOST;
		else if (v->state == KS_STATE_DESTROYED)
			out = V_DESTROYED;
		else
			out = V_LIVE;
	}
	km_clear(&k);
	return out;
}

/* Destroys the objects of o, audited first. */
static int
gc_destroy(struct service *svc, struct hsm_session *s, const struct kobj *o,
    const char *why)
{
	char detail[HSM_LABEL_MAX + 96];
	size_t c;
	int r, ret = 0;

	snprintf(detail, sizeof(detail), "{\"label\":\"%s\",\"why\":\"%s\"}",
	    o->label, why);
	if (service_audit_event(svc, ADMIN_IDENTITY, "GcOrphans", o->name,
	    o->version, detail, NULL) != 0) {
		printf("the audit log cannot be written: nothing more is "
		    "destroyed\n");
		return KMS_ERR_AUDIT;
	}
	for (c = 0; c < 3; c++) {
		if (o->h[c] == 0)
			continue;
		if ((r = hsm_destroy(s, o->h[c])) != 0 &&
		    r != KMS_ERR_STALE_HANDLE) {
			printf("  cannot destroy an object of %s: %s\n",
			    o->label, kms_strerror(r));
			ret = r;
		}
	}
	return ret;
}

int
admin_gc_orphans(struct service *svc, struct audit_key *akey, int apply)
{
	static const enum hsm_obj_class classes[3] = {
		HSM_OBJ_PRIVATE_KEY, HSM_OBJ_PUBLIC_KEY, HSM_OBJ_SECRET_KEY
	};
	static const char *whys[] = {
		"referenced",
		"its version holds other key material: the change lost",
		"its version is DESTROYED",
		"no document holds its version",
	};
	struct store *sto = NULL;
	struct hsm_session *s = NULL;
	struct kobjs ko;
	struct docs d;
	struct kms_status st;
	size_t i, orphans = 0, unsure = 0, destroyed = 0;
	const char *bn = store_backend_name(svc->cfg->store_backend);
	int alone, r, rc = 1;

	memset(&ko, 0, sizeof(ko));
	memset(&d, 0, sizeof(d));
	kms_status_clear(&st);
	if ((r = hsm_session_open(svc->hsm, &s)) != 0) {
		printf("cannot open an HSM session: %s\n", kms_strerror(r));
		goto out;
	}
	if (store_open(svc->cfg, svc->cfg->store_backend, &sto, &st) != 0) {
		printf("cannot open the %s store: %s\n", bn, st.msg);
		goto out;
	}
	if ((r = store_claim(sto, s, STORE_CLAIM_ALONE, &st)) != 0 &&
	    r != KMS_ERR_UNAVAILABLE) {
		printf("cannot claim the %s store: %s\n", bn, st.msg);
		goto out;
	}
	alone = r == 0;
	for (ko.cls = 0; ko.cls < 3; ko.cls++)
		if ((r = hsm_list(s, classes[ko.cls], kobj_add, &ko)) != 0) {
			printf("cannot list the token's key objects: %s\n",
			    kms_strerror(r));
			goto out;
		}
	kobjs_merge(&ko);
	if (docs_load(sto, s, &d, bn) != 0)
		goto out;
	qsort(d.v, d.n, sizeof(*d.v), docs_cmp);
	printf("gc-orphans: %zu key objects of versions on the token, %zu "
	    "documents in the %s store%s\n", ko.n, d.n, bn, alone ? "" :
	    "; kmsd serves from the store, so objects of versions not "
	    "recorded yet may be changes in flight and are kept");
	for (i = 0; i < ko.n; i++) {
		ko.v[i].why = judge(&d, &ko.v[i]);
		if (ko.v[i].why == V_LIVE)
			continue;
		if (ko.v[i].why == V_UNRECORDED && !alone) {
			unsure++;
			printf("  in flight?  %s: %s\n", ko.v[i].label,
			    whys[ko.v[i].why]);
			continue;
		}
		orphans++;
		printf("  orphan      %s: %s\n", ko.v[i].label,
		    whys[ko.v[i].why]);
	}
	if (!apply) {
		printf("%zu orphans, %zu possibly in flight; dry run: nothing "
		    "destroyed (--apply destroys the orphans)\n", orphans,
		    unsure);
		rc = 0;
		goto out;
	}
	if (orphans > 0 && service_open_audit(svc, sto, ADMIN_CHAIN, NULL,
	    akey, &st) != 0) {
		printf("cannot open the audit log: %s\n", st.msg);
		goto out;
	}
	rc = 0;
	for (i = 0; i < ko.n; i++) {
		if (ko.v[i].why == V_LIVE ||
		    (ko.v[i].why == V_UNRECORDED && !alone))
			continue;
		if ((r = gc_destroy(svc, s, &ko.v[i], whys[ko.v[i].why])) ==
		    KMS_ERR_AUDIT) {
			rc = 1;
			break;
		}
		if (r != 0)
			rc = 1;
		else
			destroyed++;
	}
	printf("%zu orphans destroyed, %zu possibly in flight kept\n",
	    destroyed, unsure);
	log_info("store: gc-orphans destroyed %zu orphaned key objects",
	    destroyed);
 out:
	/* Its last checkpoint moves the anchor, which may live in sto. */
	audit_close(svc->audit);
	svc->audit = NULL;
	free(ko.v);
	docs_clear(&d);
	store_free(sto);
	hsm_session_close(s);
	return rc;
}
