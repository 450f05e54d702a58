/*
 * kmsfill: fills a token with keys exactly as kmsd's keystore makes them,
 * straight through PKCS#11, for the benchmark of start-up time and memory
 * on a big token.
 *
 *   kmsfill --module SO --token LABEL --pin-file F --count N
 *       [--prefix bulk/k] [--algorithm EC_P256_SHA256] [--procs P]
 *   kmsfill ... --compare REF --with NAME
 *   kmsfill ... --visibility
 *
 * The first form makes the keys PREFIX-000000 .. PREFIX-(N-1) that the
 * token does not hold yet (so an interrupted fill resumes), in P processes
 * with a session each.  Per key, as kms/keystore.c keystore_create and
 * kms/hsm.c do it: a key pair (or an AES secret key) labelled
 * NAME#1#<16 hex digits>, CKA_ID the same bytes, private and secret keys
 * CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not CKA_EXTRACTABLE, public
 * keys token objects; then the CKO_DATA object (CKA_APPLICATION "kms",
 * CKA_LABEL NAME) whose CKA_VALUE is the metadata document, written by
 * kms/keymeta.c as kmsd writes it.  The data object comes last, as in
 * kmsd, so a key is complete when its data object exists.  What is
 * skipped is kmsd's per-key search for an existing name, which is what
 * makes CreateKey slow on a big SoftHSM2 token; the names are known to be
 * new from the one listing at the start.  Prints one JSON object.
 *
 * --compare reads both keys' objects and compares every attribute that
 * does not name the key (class, type, flags, curve...) and the metadata
 * document's fields, to show that a filled key is made like a key made by
 * kmsd's CreateKey.  --visibility checks across two processes that an
 * object created or destroyed by one is seen by the other's next search.
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "keymeta.h"
#include "p11util.h"

#define MAX_PROCS 16
#define MAX_COUNT 1000000
#define NAME_MAX_LEN KMS_KEY_NAME_MAX

struct alg {
	const char *name;		/* as in common/algo.c */
	CK_MECHANISM_TYPE gen;
	const CK_BYTE *params;		/* CKA_EC_PARAMS; NULL: AES */
	CK_ULONG params_len;
};

static const CK_BYTE oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};
static const CK_BYTE oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const CK_BYTE oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

static const struct alg algs[] = {
	{ "EC_P256_SHA256", CKM_EC_KEY_PAIR_GEN, oid_p256, sizeof(oid_p256) },
	{ "EC_P384_SHA384", CKM_EC_KEY_PAIR_GEN, oid_p384, sizeof(oid_p384) },
	{ "ED25519", CKM_EC_EDWARDS_KEY_PAIR_GEN, oid_ed25519,
	    sizeof(oid_ed25519) },
	{ "AES_256_KWP", CKM_AES_KEY_GEN, NULL, 0 },
};

#define ADD(tpl, n, ty, p, l) do {					\
	(tpl)[n].type = (ty);						\
	(tpl)[n].pValue = (void *)(p);					\
	(tpl)[n].ulValueLen = (l);					\
	(n)++;								\
} while (0)

/* What the fill's processes share (a MAP_SHARED mapping). */
struct shared {
	unsigned long dups;		/* handles naming a key seen already */
	unsigned long retries[MAX_PROCS];	/* token not found at open */
	uint8_t present[];		/* per index: the key exists */
};

struct opts {
	const char *module, *token, *pin_file, *prefix, *compare, *with;
	const struct alg *alg;
	unsigned long count;
	int procs;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The private and secret key attributes of kms/hsm.c add_protected_key. */
static void
add_protected_key(CK_ATTRIBUTE *tpl, CK_ULONG *n, const char *label)
{
	static CK_BBOOL t = CK_TRUE, f = CK_FALSE;

	ADD(tpl, *n, CKA_TOKEN, &t, sizeof(t));
	ADD(tpl, *n, CKA_PRIVATE, &t, sizeof(t));
	ADD(tpl, *n, CKA_SENSITIVE, &t, sizeof(t));
	ADD(tpl, *n, CKA_EXTRACTABLE, &f, sizeof(f));
	ADD(tpl, *n, CKA_LABEL, label, strlen(label));
	ADD(tpl, *n, CKA_ID, label, strlen(label));
}

/* hsm_generate_key_pair / hsm_generate_secret_key for one new version. */
static CK_RV
generate(struct p11 *p, const struct alg *a, const char *label,
    CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub)
{
	static CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_MECHANISM mech = { a->gen, NULL, 0 };
	CK_ATTRIBUTE pubt[8], privt[14];
	CK_ULONG np = 0, nv = 0;

	*priv = *pub = CK_INVALID_HANDLE;
	if (a->params == NULL) {
		ADD(privt, nv, CKA_CLASS, &cls, sizeof(cls));
		ADD(privt, nv, CKA_KEY_TYPE, &kt, sizeof(kt));
		ADD(privt, nv, CKA_VALUE_LEN, &len, sizeof(len));
		add_protected_key(privt, &nv, label);
		ADD(privt, nv, CKA_WRAP, &t, sizeof(t));
		ADD(privt, nv, CKA_UNWRAP, &t, sizeof(t));
		ADD(privt, nv, CKA_ENCRYPT, &f, sizeof(f));
		ADD(privt, nv, CKA_DECRYPT, &f, sizeof(f));
		return p->f->C_GenerateKey(p->s, &mech, privt, nv, priv);
	}
	ADD(pubt, np, CKA_TOKEN, &t, sizeof(t));
	ADD(pubt, np, CKA_PRIVATE, &f, sizeof(f));
	ADD(pubt, np, CKA_VERIFY, &t, sizeof(t));
	ADD(pubt, np, CKA_LABEL, label, strlen(label));
	ADD(pubt, np, CKA_ID, label, strlen(label));
	ADD(pubt, np, CKA_EC_PARAMS, a->params, a->params_len);
	add_protected_key(privt, &nv, label);
	ADD(privt, nv, CKA_SIGN, &t, sizeof(t));
	ADD(privt, nv, CKA_DECRYPT, &f, sizeof(f));
	ADD(privt, nv, CKA_UNWRAP, &f, sizeof(f));
	ADD(privt, nv, CKA_DERIVE, &f, sizeof(f));
	return p->f->C_GenerateKeyPair(p->s, &mech, pubt, np, privt, nv, pub,
	    priv);
}

/* The metadata document keystore_create writes for a key's version 1. */
static char *
meta_encode(const char *name, const struct alg *a, const char *label,
    int64_t now)
{
	struct km_version v;
	struct km_key k;

	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	snprintf(k.name, sizeof(k.name), "%s", name);
	if ((k.alg = kms_alg_by_name(a->name)) == NULL)
		return NULL;
	k.primary = 1;
	k.create_time = now;
	k.seq = 1;
	k.nv = 1;
	k.v = &v;
	v.version = 1;
	v.state = KS_STATE_ENABLED;
	v.create_time = now;
	snprintf(v.label, sizeof(v.label), "%s", label);
	return km_encode(&k);
}

/* kms/hsm.c hsm_data_create. */
static CK_RV
data_create(struct p11 *p, const char *label, const char *value,
    size_t len, CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL t = CK_TRUE;
	CK_ATTRIBUTE tpl[7];
	CK_ULONG n = 0;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_TOKEN, &t, sizeof(t));
	ADD(tpl, n, CKA_PRIVATE, &t, sizeof(t));
	ADD(tpl, n, CKA_MODIFIABLE, &t, sizeof(t));
	ADD(tpl, n, CKA_LABEL, label, strlen(label));
	ADD(tpl, n, CKA_APPLICATION, "kms", 3);
	ADD(tpl, n, CKA_VALUE, value, len);
	return p->f->C_CreateObject(p->s, tpl, n, h);
}

/* One key as keystore_create makes it; on failure nothing stays. */
static int
make_key(struct p11 *p, const struct alg *a, const char *name)
{
	CK_OBJECT_HANDLE priv, pub, meta;
	char label[KM_LABEL_MAX], *doc = NULL;
	CK_RV rv;

	if (km_version_label(name, 1, label, sizeof(label)) != 0) {
		fprintf(stderr, "kmsfill: no randomness\n");
		return -1;
	}
	if ((rv = generate(p, a, label, &priv, &pub)) != CKR_OK) {
		fprintf(stderr, "kmsfill: %s: generating the key failed: "
		    "0x%lx\n", name, (unsigned long)rv);
		return -1;
	}
	if ((doc = meta_encode(name, a, label, (int64_t)time(NULL))) ==
	    NULL) {
		fprintf(stderr, "kmsfill: out of memory\n");
		rv = CKR_HOST_MEMORY;
	} else if ((rv = data_create(p, name, doc, strlen(doc), &meta)) !=
	    CKR_OK)
		fprintf(stderr, "kmsfill: %s: C_CreateObject failed: 0x%lx\n",
		    name, (unsigned long)rv);
	free(doc);
	if (rv == CKR_OK)
		return 0;
	p->f->C_DestroyObject(p->s, priv);
	if (pub != CK_INVALID_HANDLE)
		p->f->C_DestroyObject(p->s, pub);
	return -1;
}

/* The index of name in PREFIX-NNNNNN, or -1. */
static long
name_index(const char *prefix, const char *name, unsigned long count)
{
	size_t plen = strlen(prefix);
	unsigned long i;
	char *end;

	if (strncmp(name, prefix, plen) != 0 || name[plen] != '-' ||
	    name[plen + 1] < '0' || name[plen + 1] > '9')
		return -1;
	i = strtoul(name + plen + 1, &end, 10);
	if (*end != '\0' || i >= count)
		return -1;
	return (long)i;
}

/*
 * Marks in present[] the keys of the series the token holds already, as
 * kmsd finds them at start: the kms data objects, by label.  Also counts
 * the handles the search gave that named a key seen already.
 */
static int
list_present(const struct opts *o, struct shared *sh)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_APPLICATION, (void *)"kms", 3 },
	};
	CK_OBJECT_HANDLE *all = NULL;
	CK_ULONG n = 0, i, len;
	unsigned char *label;
	struct p11 p;
	long k;
	CK_RV rv;

	if (p11_open(&p, "kmsfill", o->module, o->token, o->pin_file) != 0)
		return -1;
	if ((rv = p11_find_all(&p, tpl, 2, &all, &n)) != CKR_OK) {
		fprintf(stderr, "kmsfill: listing the data objects failed: "
		    "0x%lx\n", (unsigned long)rv);
		p11_close(&p);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (p11_get_attr(&p, all[i], CKA_LABEL, &label, &len) !=
		    CKR_OK)
			continue;
		if ((k = name_index(o->prefix, (char *)label, o->count)) >= 0) {
			if (sh->present[k])
				sh->dups++;
			sh->present[k] = 1;
		}
		free(label);
	}
	free(all);
	p11_close(&p);
	return 0;
}

/* Worker w of the fill: the missing keys whose index is w modulo procs. */
static int
fill_worker(const struct opts *o, struct shared *sh, int w)
{
	char name[NAME_MAX_LEN + 1];
	struct p11 p;
	unsigned long i;
	int r = 0;

	r = p11_open(&p, "kmsfill", o->module, o->token, o->pin_file);
	sh->retries[w] = p.open_retries;
	if (r != 0)
		return -1;
	for (i = (unsigned long)w; i < o->count && r == 0;
	    i += (unsigned long)o->procs) {
		if (sh->present[i])
			continue;
		snprintf(name, sizeof(name), "%s-%06lu", o->prefix, i);
		r = make_key(&p, o->alg, name);
	}
	p11_close(&p);
	return r;
}

/* Runs fn(o, arg, i) in a child process; returns its pid or -1. */
static pid_t
spawn(int (*fn)(const struct opts *, struct shared *, int),
    const struct opts *o, struct shared *arg, int i)
{
	pid_t pid;

	if ((pid = fork()) == 0)
		_exit(fn(o, arg, i) == 0 ? 0 : 1);
	if (pid < 0)
		perror("kmsfill: fork");
	return pid;
}

static int
lister(const struct opts *o, struct shared *sh, int unused)
{
	return list_present(o, sh);
}

static int
fill(const struct opts *o)
{
	struct shared *sh;
	size_t size = sizeof(*sh) + o->count;
	unsigned long have = 0, retries = 0, i;
	pid_t pids[MAX_PROCS], pid;
	double t0, el;
	int st, k, failed = 0;

	/*
	 * Every PKCS#11 user is a child process that initialises the module
	 * itself: a module is not to be used across fork().
	 */
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("kmsfill: mmap");
		return 1;
	}
	if ((pid = spawn(lister, o, sh, 0)) < 0 ||
	    waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0) {
		fprintf(stderr, "kmsfill: could not list the token\n");
		return 1;
	}
	for (i = 0; i < o->count; i++)
		have += sh->present[i];
	t0 = now_s();
	for (k = 0; k < o->procs; k++)
		if ((pids[k] = spawn(fill_worker, o, sh, k)) < 0)
			failed = 1;
	for (k = 0; k < o->procs; k++)
		if (pids[k] > 0 && (waitpid(pids[k], &st, 0) != pids[k] ||
		    !WIFEXITED(st) || WEXITSTATUS(st) != 0))
			failed = 1;
	el = now_s() - t0;
	for (k = 0; k < o->procs; k++)
		retries += sh->retries[k];
	printf("{\"keys\":%lu,\"present\":%lu,\"made\":%lu,\"procs\":%d,"
	    "\"algorithm\":\"%s\",\"seconds\":%.3f,\"keys_per_s\":%.1f,"
	    "\"duplicate_handles\":%lu,\"token_not_found_retries\":%lu,"
	    "\"complete\":%s}\n", o->count, have, o->count - have, o->procs,
	    o->alg->name, el, el > 0 ? (o->count - have) / el : 0.0, sh->dups,
	    retries, failed ? "false" : "true");
	munmap(sh, size);
	return failed;
}

/* The attributes that do not name a key or hold its value. */
static const CK_ATTRIBUTE_TYPE compared[] = {
	CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE,
	CKA_COPYABLE, CKA_DESTROYABLE, CKA_LOCAL, CKA_KEY_GEN_MECHANISM,
	CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_EXTRACTABLE,
	CKA_NEVER_EXTRACTABLE, CKA_SIGN, CKA_SIGN_RECOVER, CKA_VERIFY,
	CKA_VERIFY_RECOVER, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP,
	CKA_DERIVE, CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED, CKA_ALWAYS_AUTHENTICATE,
	CKA_EC_PARAMS, CKA_VALUE_LEN, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT,
	CKA_APPLICATION,
};

/* The one object of class cls labelled label (data: application kms). */
static CK_RV
find_one(struct p11 *p, CK_OBJECT_CLASS cls, const char *label,
    CK_OBJECT_HANDLE *h)
{
	CK_ATTRIBUTE tpl[3] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_APPLICATION, (void *)"kms", 3 },
	};
	CK_OBJECT_HANDLE *all;
	CK_ULONG n;
	CK_RV rv;

	*h = CK_INVALID_HANDLE;
	if ((rv = p11_find_all(p, tpl, cls == CKO_DATA ? 3 : 2, &all, &n)) !=
	    CKR_OK)
		return rv;
	if (n > 0)
		*h = all[0];
	free(all);
	return n == 1 ? CKR_OK : CKR_GENERAL_ERROR;
}

/* Prints the attributes in which objects a and b differ; 0 when none. */
static int
compare_objects(struct p11 *p, const char *what, CK_OBJECT_HANDLE a,
    CK_OBJECT_HANDLE b)
{
	unsigned char *va, *vb;
	CK_ULONG la, lb;
	CK_RV ra, rb;
	size_t i;
	int diff = 0;

	for (i = 0; i < sizeof(compared) / sizeof(compared[0]); i++) {
		ra = p11_get_attr(p, a, compared[i], &va, &la);
		rb = p11_get_attr(p, b, compared[i], &vb, &lb);
		if (ra != rb || (ra == CKR_OK && (la != lb ||
		    memcmp(va, vb, la) != 0))) {
			printf("%s: attribute 0x%lx differs\n", what,
			    (unsigned long)compared[i]);
			diff = 1;
		}
		free(va);
		free(vb);
	}
	printf("%s: %s\n", what, diff ? "DIFFERENT" : "same attributes");
	return diff;
}

/* The metadata document of key name, parsed, and its version's label. */
static json_t *
load_meta(struct p11 *p, const char *name, CK_OBJECT_HANDLE *h,
    const char **label)
{
	unsigned char *v;
	CK_ULONG len;
	json_t *o;

	*label = NULL;
	if (find_one(p, CKO_DATA, name, h) != CKR_OK ||
	    p11_get_attr(p, *h, CKA_VALUE, &v, &len) != CKR_OK) {
		fprintf(stderr, "kmsfill: no metadata object for %s\n", name);
		return NULL;
	}
	o = json_loadb((char *)v, len, 0, NULL);
	free(v);
	if (o == NULL || json_unpack(o, "{s:[{s:s}]}", "versions", "label",
	    label) != 0) {
		fprintf(stderr, "kmsfill: the metadata of %s is not a kms "
		    "document\n", name);
		json_decref(o);
		return NULL;
	}
	return o;
}

/*
 * Same fields with values of the same type; equal values except for the
 * name, the labels and the times.
 */
static int
same_shape(const json_t *a, const json_t *b, const char *key)
{
	const char *k;
	json_t *va;
	size_t i;

	if (json_typeof(a) != json_typeof(b))
		return 0;
	if (json_is_object(a)) {
		if (json_object_size(a) != json_object_size(b))
			return 0;
		json_object_foreach((json_t *)a, k, va)
			if (!same_shape(va, json_object_get(b, k), k))
				return 0;
		return 1;
	}
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (i = 0; i < json_array_size(a); i++)
			if (!same_shape(json_array_get(a, i),
			    json_array_get(b, i), key))
				return 0;
		return 1;
	}
	if (key != NULL && (strcmp(key, "name") == 0 ||
	    strcmp(key, "label") == 0 || strcmp(key, "create_time") == 0))
		return 1;
	return json_equal((json_t *)a, (json_t *)b);
}

static int
compare(const struct opts *o)
{
	CK_OBJECT_HANDLE ma, mb, ka, kb;
	CK_OBJECT_CLASS classes[] = { CKO_PRIVATE_KEY, CKO_PUBLIC_KEY,
	    CKO_SECRET_KEY };
	const char *names[] = { "private key", "public key", "secret key" };
	const char *la, *lb;
	json_t *ja = NULL, *jb = NULL;
	struct p11 p;
	size_t i;
	int diff = 0, nobj = 0;

	if (p11_open(&p, "kmsfill", o->module, o->token, o->pin_file) != 0)
		return 1;
	if ((ja = load_meta(&p, o->compare, &ma, &la)) == NULL ||
	    (jb = load_meta(&p, o->with, &mb, &lb)) == NULL) {
		diff = 1;
		goto out;
	}
	diff |= compare_objects(&p, "data object", ma, mb);
	for (i = 0; i < 3; i++) {
		int fa = find_one(&p, classes[i], la, &ka) == CKR_OK;
		int fb = find_one(&p, classes[i], lb, &kb) == CKR_OK;

		if (fa != fb) {
			printf("%s: only one of the keys has one\n", names[i]);
			diff = 1;
		} else if (fa) {
			diff |= compare_objects(&p, names[i], ka, kb);
			nobj++;
		}
	}
	if (nobj == 0 && !diff) {
		printf("no key objects found for either key\n");
		diff = 1;
	}
	if (!same_shape(ja, jb, NULL)) {
		printf("metadata document: DIFFERENT\n");
		diff = 1;
	} else
		printf("metadata document: same fields and values\n");
 out:
	json_decref(ja);
	json_decref(jb);
	p11_close(&p);
	return diff;
}

/*
 * The cross-process check: two processes, each with the module initialised
 * on its own, step through create / search / destroy / search on a data
 * object and report what the other one saw.
 */
static void
send_int(int fd, int v)
{
	if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		_exit(3);
}

static int
recv_int(int fd)
{
	int v;

	if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		_exit(3);
	return v;
}

/* The number of handles a fresh search for label gives. */
static int
count_label(struct p11 *p, const char *label)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE *all;
	CK_ULONG n;

	if (p11_find_all(p, tpl, 2, &all, &n) != CKR_OK)
		return -1;
	free(all);
	return (int)n;
}

/*
 * One side of the check.  The maker creates and destroys, the watcher
 * searches; each answer goes back on the pipe.  Returns to the maker:
 * seen after create, seen after destroy, and the CK_RV of reading the
 * destroyed object by its old handle.
 */
static void
watcher(struct p11 *p, const char *label, int in, int out)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE *all = NULL;
	unsigned char *v;
	CK_ULONG n = 0, len;
	CK_OBJECT_HANDLE old = CK_INVALID_HANDLE;

	send_int(out, count_label(p, label));	/* before: the index is warm */
	(void)recv_int(in);			/* created */
	if (p11_find_all(p, tpl, 2, &all, &n) == CKR_OK && n > 0)
		old = all[0];
	free(all);
	send_int(out, (int)n);
	(void)recv_int(in);			/* destroyed */
	send_int(out, count_label(p, label));
	send_int(out, old == CK_INVALID_HANDLE ? -1 :
	    (int)p11_get_attr(p, old, CKA_VALUE, &v, &len));
	if (old != CK_INVALID_HANDLE)
		free(v);
}

struct vis {
	int before, created, destroyed, stale_rv;
};

static int
maker(struct p11 *p, const char *label, int in, int out, struct vis *r)
{
	CK_OBJECT_HANDLE h;
	CK_RV rv;

	r->before = recv_int(in);
	if ((rv = data_create(p, label, "x", 1, &h)) != CKR_OK) {
		fprintf(stderr, "kmsfill: C_CreateObject failed: 0x%lx\n",
		    (unsigned long)rv);
		return -1;
	}
	send_int(out, 1);
	r->created = recv_int(in);
	if ((rv = p->f->C_DestroyObject(p->s, h)) != CKR_OK) {
		fprintf(stderr, "kmsfill: C_DestroyObject failed: 0x%lx\n",
		    (unsigned long)rv);
		return -1;
	}
	send_int(out, 1);
	r->destroyed = recv_int(in);
	r->stale_rv = recv_int(in);
	return 0;
}

static int
visibility(const struct opts *o)
{
	char label[64];
	int ab[2], ba[2], st, ok, fail = 0;
	struct vis r[2];
	struct p11 p;
	pid_t pid;

	snprintf(label, sizeof(label), "kmsfill-visibility-%ld",
	    (long)getpid());
	if (pipe(ab) != 0 || pipe(ba) != 0 || (pid = fork()) < 0) {
		perror("kmsfill");
		return 1;
	}
	if (pid == 0) {
		/* The child watches first, then makes. */
		if (p11_open(&p, "kmsfill", o->module, o->token,
		    o->pin_file) != 0)
			_exit(2);
		watcher(&p, label, ab[0], ba[1]);
		if (maker(&p, label, ab[0], ba[1], &r[1]) != 0)
			_exit(2);
		if (write(ba[1], &r[1], sizeof(r[1])) != sizeof(r[1]))
			_exit(3);
		p11_close(&p);
		_exit(0);
	}
	if (p11_open(&p, "kmsfill", o->module, o->token, o->pin_file) != 0)
		fail = 1;
	else {
		if (maker(&p, label, ba[0], ab[1], &r[0]) != 0)
			fail = 1;
		else {
			watcher(&p, label, ba[0], ab[1]);
			if (read(ba[0], &r[1], sizeof(r[1])) != sizeof(r[1]))
				fail = 1;
		}
		p11_close(&p);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0 || fail) {
		fprintf(stderr, "kmsfill: the visibility check did not run\n");
		return 1;
	}
	ok = r[0].before == 0 && r[0].created == 1 && r[0].destroyed == 0 &&
	    r[1].before == 0 && r[1].created == 1 && r[1].destroyed == 0;
	/* What kms needs of a stale handle: CKR_OBJECT_HANDLE_INVALID. */
	printf("{\"created_seen\":[%d,%d],\"destroyed_seen\":[%d,%d],"
	    "\"stale_handle_rv\":[\"0x%x\",\"0x%x\"],"
	    "\"stale_handle_invalid\":%s,\"holds\":%s}\n",
	    r[0].created, r[1].created, r[0].destroyed, r[1].destroyed,
	    (unsigned)r[0].stale_rv, (unsigned)r[1].stale_rv,
	    r[0].stale_rv == CKR_OBJECT_HANDLE_INVALID &&
	    r[1].stale_rv == CKR_OBJECT_HANDLE_INVALID ? "true" : "false",
	    ok ? "true" : "false");
	return ok ? 0 : 1;
}

static void
usage(void)
{
	fprintf(stderr, "usage: kmsfill --module SO --token LABEL --pin-file F "
	    "--count N\n               [--prefix P] [--algorithm ALG] "
	    "[--procs N]\n       kmsfill ... --compare REF --with NAME\n"
	    "       kmsfill ... --visibility\n"
	    "ALG: EC_P256_SHA256 (default), EC_P384_SHA384, ED25519, "
	    "AES_256_KWP\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },
		{ "pin-file", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "prefix", required_argument, NULL, 'P' },
		{ "algorithm", required_argument, NULL, 'a' },
		{ "procs", required_argument, NULL, 'j' },
		{ "compare", required_argument, NULL, 'c' },
		{ "with", required_argument, NULL, 'w' },
		{ "visibility", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct opts o;
	const char *alg = "EC_P256_SHA256";
	char *end;
	size_t i;
	int ch, vis = 0;

	memset(&o, 0, sizeof(o));
	o.prefix = "bulk/k";
	o.procs = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'm': o.module = optarg; break;
		case 't': o.token = optarg; break;
		case 'p': o.pin_file = optarg; break;
		case 'P': o.prefix = optarg; break;
		case 'a': alg = optarg; break;
		case 'c': o.compare = optarg; break;
		case 'w': o.with = optarg; break;
		case 'v': vis = 1; break;
		case 'n':
			o.count = strtoul(optarg, &end, 10);
			if (*end != '\0' || o.count == 0 || o.count > MAX_COUNT)
				usage();
			break;
		case 'j':
			o.procs = atoi(optarg);
			if (o.procs < 1 || o.procs > MAX_PROCS)
				usage();
			break;
		default:
			usage();
		}
	}
	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcmp(alg, algs[i].name) == 0)
			o.alg = &algs[i];
	/* PREFIX-NNNNNN must be a key name of at most 128 bytes. */
	if (o.module == NULL || o.token == NULL || o.pin_file == NULL ||
	    o.alg == NULL || optind != argc || strlen(o.prefix) == 0 ||
	    strlen(o.prefix) > NAME_MAX_LEN - 8 ||
	    (o.compare != NULL) != (o.with != NULL) ||
	    (o.count == 0 && o.compare == NULL && !vis))
		usage();
	if (vis)
		return visibility(&o);
	if (o.compare != NULL)
		return compare(&o);
	return fill(&o);
}
