/*
 * test_faults.c: the fault sweep.  For each of CreateKey, Sign, RotateKey,
 * Wrap and the start-up (keystore_open and keystore_warm), and for each of
 * CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID and CKR_GENERAL_ERROR, the
 * Nth PKCS#11 call fails, for N = 1, 2, ... until the operation makes
 * fewer than N calls.  Each run must end in success or a clean error (a
 * negative code and a message), and leave the token consistent: a fresh
 * keystore loads every key, a key exists exactly when its creation said
 * so, every version's objects are there and no others, no lock object is
 * left behind, and the operation then succeeds.  Leaks are found by the
 * AddressSanitizer build (make BUILD=build/asan SAN=1 unit).
 *
 * It runs on a throw-away SoftHSM2 token through p11fault.so (see
 * p11token.h), which fails "*" = any function.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "algo.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "p11token.h"
#include "secret.h"

#define CKR_GENERAL_ERROR		0x05UL
#define CKR_DEVICE_ERROR		0x30UL
#define CKR_SESSION_HANDLE_INVALID	0xB3UL

/* More calls than any of the operations makes. */
#define MAX_CALLS 200

static const unsigned long faults[] = {
	CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID, CKR_GENERAL_ERROR
};

static char lockfile[128];
static struct hsm *hsm;
static struct hsm_session *s, *s2;
static struct keystore *ks;
static int (*fault_armed)(void);
/* The keys that exist, as the sweep made them. */
static size_t nkeys;
/* The name of the key CreateKey made last. */
static char created[64];

static void create(const char *name, const char *alg);

static int
setup(void **state)
{
	static const char *const labels[] = { "sweep", NULL };
	struct kms_status st;
	void *dl;

	(void)state;
	if (p11token_make("/tmp/kms-test-faults.XXXXXX", labels) != 0)
		return -1;
	snprintf(lockfile, sizeof(lockfile), "%s/keys.lock", dir);
	kms_status_clear(&st);
	if (hsm_open(module, "sweep", pin, &hsm, &st) != 0) {
		fprintf(stderr, "hsm_open %s: %s\n", module, st.msg);
		return -1;
	}
	if (p11token_faults() != 0 || (dl = dlopen(module, RTLD_NOW |
	    RTLD_NOLOAD)) == NULL)
		return -1;
	fault_armed = (int (*)(void))dlsym(dl, "p11fault_armed");
	dlclose(dl);
	if (fault_armed == NULL || hsm_session_open(hsm, &s) != 0 ||
	    hsm_session_open(hsm, &s2) != 0 ||
	    keystore_open(s, lockfile, &ks, &st) != 0)
		return -1;
	/* Few keys, so that the start-up's sweep stays short. */
	create("sweep/sign", "EC_P256_SHA256");
	create("sweep/wrap", "AES_256_KWP");
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	keystore_free(ks);
	hsm_session_close(s);
	hsm_session_close(s2);
	hsm_close(hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
create(const char *name, const char *alg)
{
	struct ks_key *k = NULL;
	struct kms_status st;

	kms_status_clear(&st);
	if (keystore_create(ks, s, name, kms_alg_by_name(alg), 0, &k,
	    &st) != 0)
		fail_msg("keystore_create %s: %s", name, st.msg);
	ks_key_free(k);
	nkeys++;
}

struct counted {
	const char *suffix;		/* NULL: every object */
	size_t n;
};

static int
count_cb(const char *label, hsm_handle_t h, void *arg)
{
	struct counted *c = arg;
	size_t n = strlen(label);

	(void)h;
	if (c->suffix == NULL || (n >= strlen(c->suffix) &&
	    strcmp(label + n - strlen(c->suffix), c->suffix) == 0))
		c->n++;
	return 0;
}

static size_t
count(enum hsm_obj_class cls, const char *suffix)
{
	struct counted c = { suffix, 0 };

	assert_int_equal(hsm_list(s2, cls, count_cb, &c), 0);
	return c.n;
}

/* Signs with the primary version of name through ks. */
static int
sign(struct keystore *k, struct hsm_session *session, const char *name,
    struct kms_status *st)
{
	uint8_t md[32], sig[HSM_SIG_MAX];
	size_t siglen = sizeof(sig);

	memset(md, 7, sizeof(md));
	return keystore_sign(k, session, name, 0, md, sizeof(md), sig,
	    &siglen, st);
}

/* Wraps and unwraps with the primary version of name through ks. */
static int
wrap(struct keystore *k, struct hsm_session *session, const char *name,
    struct kms_status *st)
{
	static const uint8_t in[37] = "a data key of thirty-seven bytes.....";
	struct secret *out = NULL;
	uint8_t *blob = NULL;
	size_t len = 0;
	int r;

	if ((r = keystore_wrap(k, session, name, 0, in, sizeof(in), &blob,
	    &len, st)) != 0)
		return r;
	r = keystore_unwrap(k, session, name, blob, len, &out, st);
	free(blob);
	if (r == 0) {
		assert_int_equal(out->len, sizeof(in));
		assert_memory_equal(out->buf, in, sizeof(in));
	}
	secret_free(out);
	return r;
}

struct tally {
	struct keystore *ks;
	const char *use;		/* the key to use */
	size_t priv, secret, keys;
};

static int
use_key(const char *name, void *arg)
{
	struct tally *t = arg;
	struct ks_key *k;
	struct kms_status st;
	size_t i, live = 0;

	kms_status_clear(&st);
	assert_int_equal(keystore_get(t->ks, name, &k, &st), 0);
	for (i = 0; i < k->nversions; i++)
		if (k->versions[i].state != KS_STATE_DESTROYED)
			live++;
	if (k->alg->can_wrap)
		t->secret += live;
	else
		t->priv += live;
	if (t->use != NULL && strcmp(name, t->use) == 0 &&
	    (k->alg->can_wrap ? wrap(t->ks, s2, name, &st) :
	    sign(t->ks, s2, name, &st)) != 0)
		fail_msg("%s does not work after the sweep: %s", name, st.msg);
	ks_key_free(k);
	t->keys++;
	return 0;
}

/*
 * The token is consistent: a fresh keystore loads every key, key use (if
 * not NULL) works with its primary version, every live version has its
 * objects and no object is left without a version, and no lock object
 * stays.
 */
static void
check_token(const char *use)
{
	struct kms_status st;
	struct ks_key **keys = NULL;
	struct tally t;
	size_t n, i;

	memset(&t, 0, sizeof(t));
	t.use = use;
	kms_status_clear(&st);
	if (keystore_open(s2, lockfile, &t.ks, &st) != 0)
		fail_msg("a fresh keystore does not open: %s", st.msg);
	assert_int_equal(keystore_count(t.ks), nkeys);
	assert_int_equal(keystore_list(t.ks, NULL, NULL, NULL, nkeys + 1,
	    &keys, &n), 0);
	assert_int_equal(n, nkeys);
	for (i = 0; i < n; i++) {
		use_key(keys[i]->name, &t);
		ks_key_free(keys[i]);
	}
	free(keys);
	assert_int_equal(t.keys, nkeys);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY, NULL), t.priv);
	assert_int_equal(count(HSM_OBJ_PUBLIC_KEY, NULL), t.priv);
	assert_int_equal(count(HSM_OBJ_SECRET_KEY, NULL), t.secret);
	assert_int_equal(count(HSM_OBJ_DATA, "!lock"), 0);
	keystore_free(t.ks);
}

/* One operation under test; its own check of what it did. */
struct op {
	const char *what;
	const char *key;		/* the key it uses (without after) */
	int (*run)(int n, unsigned long rv, struct kms_status *st);
	void (*after)(int n, unsigned long rv, int r);
};

static void
sweep(const struct op *op)
{
	struct kms_status st;
	size_t f;
	int n, r, fired, runs = 0;

	for (f = 0; f < sizeof(faults) / sizeof(faults[0]); f++) {
		for (n = 1; ; n++) {
			if (n > MAX_CALLS)
				fail_msg("%s: still failing after %d calls",
				    op->what, MAX_CALLS);
			kms_status_clear(&st);
			fault_set("*", (unsigned long)n, faults[f]);
			r = op->run(n, faults[f], &st);
			fired = !fault_armed();
			fault_clear();
			runs++;
			if (r != 0 && (r >= 0 || st.msg[0] == '\0'))
				fail_msg("%s, call %d failing with 0x%lx: not a "
				    "clean error (%d, \"%s\")", op->what, n,
				    faults[f], r, st.msg);
			/* An op with an after hook checks the token there. */
			if (op->after != NULL)
				op->after(n, faults[f], r);
			else
				check_token(op->key);
			if (!fired) {
				if (r != 0)
					fail_msg("%s failed without a fault: %s",
					    op->what, st.msg);
				break;
			}
		}
		print_message("%s, 0x%lx: %d calls\n", op->what, faults[f],
		    n - 1);
	}
	assert_true(runs > 3);
}


static int
run_create(int n, unsigned long rv, struct kms_status *st)
{
	struct ks_key *k = NULL;
	int r;

	snprintf(created, sizeof(created), "sweep/c-%lx-%d", rv, n);
	r = keystore_create(ks, s, created, kms_alg_by_name(
	    "EC_P256_SHA256"), 0, &k, st);
	ks_key_free(k);
	return r;
}

struct doomed {
	char prefix[80];
	int exact;
	hsm_handle_t h[16];
	size_t n;
};

static int
doomed_cb(const char *label, hsm_handle_t h, void *arg)
{
	struct doomed *d = arg;

	/* Key objects NAME#..., the document NAME exactly. */
	if ((d->exact ? strcmp(label, d->prefix) :
	    strncmp(label, d->prefix, strlen(d->prefix))) == 0 && d->n < 16)
		d->h[d->n++] = h;
	return 0;
}

/*
 * Removes key name from the token behind the keystores' backs (its
 * document and its objects), so that the token stays small: on
 * SoftHSM2's file store every listing reads every object.
 */
static void
forget(const char *name)
{
	static const enum hsm_obj_class classes[] = {
		HSM_OBJ_PRIVATE_KEY, HSM_OBJ_PUBLIC_KEY, HSM_OBJ_DATA
	};
	struct doomed d;
	size_t c, i;

	for (c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
		memset(&d, 0, sizeof(d));
		d.exact = classes[c] == HSM_OBJ_DATA;
		snprintf(d.prefix, sizeof(d.prefix), "%s%s", name,
		    d.exact ? "" : "#");
		assert_int_equal(hsm_list(s2, classes[c], doomed_cb, &d), 0);
		for (i = 0; i < d.n; i++)
			assert_int_equal(hsm_destroy(s2, d.h[i]), 0);
	}
	nkeys--;
}

/*
 * The key exists exactly when its creation said so (check_token, which
 * counts the keys), and can be made now; then it goes again.
 */
static void
after_create(int n, unsigned long rv, int r)
{
	if (r == 0)
		nkeys++;
	else
		create(created, "EC_P256_SHA256");
	check_token(created);
	forget(created);
}

static void
test_create(void **state)
{
	static const struct op op = { "CreateKey", NULL, run_create,
	    after_create };

	(void)state;
	sweep(&op);
}

/*
 * Each run signs twice on a keystore of its own, opened without faults:
 * the first signature looks the key up, the second uses the cached
 * handle.
 */
static int
run_sign(int n, unsigned long rv, struct kms_status *st)
{
	struct keystore *k;
	int r;

	fault_clear();
	k = NULL;
	if (keystore_open(s2, lockfile, &k, st) != 0)
		fail_msg("keystore_open: %s", st->msg);
	fault_set("*", (unsigned long)n, rv);
	if ((r = sign(k, s, "sweep/sign", st)) == 0)
		r = sign(k, s, "sweep/sign", st);
	keystore_free(k);
	return r;
}

static void
test_sign(void **state)
{
	static const struct op op = { "Sign", "sweep/sign", run_sign, NULL };

	(void)state;
	sweep(&op);
}

/*
 * Each run rotates a key of its own, made without faults (and removed
 * afterwards), so that the token does not grow with the sweep.
 */
static int
run_rotate(int n, unsigned long rv, struct kms_status *st)
{
	struct ks_key *k = NULL;
	int r;

	fault_clear();
	snprintf(created, sizeof(created), "sweep/r-%lx-%d", rv, n);
	create(created, "EC_P256_SHA256");
	fault_set("*", (unsigned long)n, rv);
	r = keystore_rotate(ks, s, created, &k, st);
	ks_key_free(k);
	return r;
}

/*
 * A rotation that failed can be made now and left nothing behind
 * (check_token counts the objects: two versions' worth); the key signs
 * with its new version.
 */
static void
after_rotate(int n, unsigned long rv, int r)
{
	struct ks_key *k = NULL;
	struct kms_status st;

	kms_status_clear(&st);
	if (r != 0 && keystore_rotate(ks, s, created, &k, &st) != 0)
		fail_msg("rotate after a failed one: %s", st.msg);
	ks_key_free(k);
	if (sign(ks, s, created, &st) != 0)
		fail_msg("sign after a rotation: %s", st.msg);
	check_token(created);
	forget(created);
}

static void
test_rotate(void **state)
{
	static const struct op op = { "RotateKey", NULL, run_rotate,
	    after_rotate };

	(void)state;
	sweep(&op);
}

static int
run_wrap(int n, unsigned long rv, struct kms_status *st)
{
	return wrap(ks, s, "sweep/wrap", st);
}

static void
test_wrap(void **state)
{
	static const struct op op = { "Wrap", "sweep/wrap", run_wrap, NULL };

	(void)state;
	sweep(&op);
}

static int
run_start(int n, unsigned long rv, struct kms_status *st)
{
	struct keystore *k = NULL;
	size_t found = 0;
	int r;

	if ((r = keystore_open(s, lockfile, &k, st)) != 0)
		return r;
	if (keystore_count(k) != nkeys)
		fail_msg("start-up loaded %zu keys of %zu", keystore_count(k),
		    nkeys);
	if ((r = keystore_warm(k, s, &found)) != 0)
		kms_status_set(st, r, "keystore_warm: %s", kms_strerror(r));
	keystore_free(k);
	return r;
}

static void
test_start(void **state)
{
	static const struct op op = { "start-up", "sweep/sign", run_start,
	    NULL };

	(void)state;
	sweep(&op);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start),
		cmocka_unit_test(test_sign),
		cmocka_unit_test(test_wrap),
		cmocka_unit_test(test_rotate),
		cmocka_unit_test(test_create),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
