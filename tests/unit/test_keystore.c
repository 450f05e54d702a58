/*
 * test_keystore.c: key versions, states, rotation and their failure
 * paths, against a real SoftHSM2 token through the fault-injecting module
 * p11fault.so (as test_hsm.c), and two key stores on one token standing
 * for two kmsd instances.
 */
#include <sys/stat.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "algo.h"
#include "hsm.h"
#include "keystore.h"
#include "store.h"
#include "kmserr.h"
#include "p11token.h"

#define CKR_DEVICE_ERROR	0x30UL
#define CKR_OBJECT_HANDLE_INVALID	0x82UL

static char lockfile[128];
static struct hsm *hsm;
static struct hsm_session *s, *s2;

static int
setup(void **state)
{
	static const char *const labels[] = { "ks", NULL };
	struct kms_status st;

	(void)state;
	if (p11token_make("/tmp/kms-test-ks.XXXXXX", labels) != 0)
		return -1;
	snprintf(lockfile, sizeof(lockfile), "%s/keys.lock", dir);
	kms_status_clear(&st);
	if (hsm_open(module, "ks", pin, &hsm, &st) != 0) {
		fprintf(stderr, "hsm_open %s: %s\n", module, st.msg);
		return -1;
	}
	if (p11token_faults() != 0 || hsm_session_open(hsm, &s) != 0)
		return -1;
	return hsm_session_open(hsm, &s2);
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	hsm_session_close(s);
	hsm_session_close(s2);
	hsm_close(hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
count_cb(const char *label, hsm_handle_t h, void *arg)
{
	(void)label;
	(void)h;
	(*(size_t *)arg)++;
	return 0;
}

/* The number of objects of class cls on the token. */
static size_t
count(enum hsm_obj_class cls)
{
	size_t n = 0;

	assert_int_equal(hsm_list(s, cls, count_cb, &n), 0);
	return n;
}

static struct keystore *
open_ks(struct hsm_session *session)
{
	struct keystore *ks;
	struct kms_status st;

	kms_status_clear(&st);
	if (keystore_open(session, lockfile, &ks, &st) != 0)
		fail_msg("keystore_open: %s", st.msg);
	return ks;
}

static struct ks_key *
get(struct keystore *ks, const char *name)
{
	struct ks_key *k;
	struct kms_status st;

	kms_status_clear(&st);
	if (keystore_get(ks, name, &k, &st) != 0)
		fail_msg("keystore_get %s: %s", name, st.msg);
	return k;
}

static void
create(struct keystore *ks, const char *name, const char *alg,
    int64_t period)
{
	struct ks_key *k;
	struct kms_status st;

	kms_status_clear(&st);
	if (keystore_create(ks, s, name, kms_alg_by_name(alg), period, &k,
	    &st) != 0)
		fail_msg("keystore_create %s: %s", name, st.msg);
	assert_int_equal(k->primary, 1);
	assert_int_equal(k->nversions, 1);
	ks_key_free(k);
}

static int
rotate(struct keystore *ks, struct hsm_session *session, const char *name,
    struct kms_status *st)
{
	struct ks_key *k = NULL;
	int r;

	kms_status_clear(st);
	r = keystore_rotate(ks, session, name, &k, st);
	ks_key_free(k);
	return r;
}

/* A failed rotation leaves the key and the token as they were. */
static void
test_rotation_failures_change_nothing(void **state)
{
	struct keystore *ks = open_ks(s);
	struct kms_status st;
	struct ks_key *k;
	size_t privs, datas;

	(void)state;
	create(ks, "fail/ec", "EC_P256_SHA256", 0);
	privs = count(HSM_OBJ_PRIVATE_KEY);
	datas = count(HSM_OBJ_DATA);

	/* The HSM cannot generate the new version. */
	fault_set("C_GenerateKeyPair", 1, CKR_DEVICE_ERROR);
	assert_int_equal(rotate(ks, s, "fail/ec", &st), KMS_ERR_UNAVAILABLE);
	assert_non_null(strstr(st.msg, "generate"));
	fault_clear();
	/* The version is made but its document cannot be written (the
	 * second object creation: the first is the lock object). */
	fault_set("C_CreateObject", 2, CKR_DEVICE_ERROR);
	assert_int_equal(rotate(ks, s, "fail/ec", &st), KMS_ERR_UNAVAILABLE);
	assert_non_null(strstr(st.msg, "metadata"));
	fault_clear();
	/* The lock itself cannot be taken. */
	fault_set("C_CreateObject", 1, CKR_DEVICE_ERROR);
	assert_int_equal(rotate(ks, s, "fail/ec", &st), KMS_ERR_UNAVAILABLE);
	assert_non_null(strstr(st.msg, "lock"));
	fault_clear();

	k = get(ks, "fail/ec");
	assert_int_equal(k->primary, 1);
	assert_int_equal(k->nversions, 1);
	ks_key_free(k);
	/* No key object of a half-made version and no lock object stays. */
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs);
	assert_int_equal(count(HSM_OBJ_DATA), datas);

	assert_int_equal(rotate(ks, s, "fail/ec", &st), 0);
	k = get(ks, "fail/ec");
	assert_int_equal(k->primary, 2);
	assert_int_equal(k->versions[1].version, 2);
	assert_int_equal(k->versions[1].state, KS_STATE_ENABLED);
	ks_key_free(k);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs + 1);
	assert_int_equal(count(HSM_OBJ_DATA), datas);
	assert_int_equal(rotate(ks, s, "fail/none", &st), KMS_ERR_NOT_FOUND);
	keystore_free(ks);
}

/*
 * A put answered as lost although it landed (etcd applied an attempt that
 * timed out, and the retry's compare then failed): the store below
 * writes, then says KMS_ERR_CONFLICT once.
 */
static const struct store_ops *real_ops;
static int lie_once;

static int
landed_but_conflict(struct store *sto, struct hsm_session *hs,
    struct store_lock *held, const char *name, const struct store_rev *prev,
    const uint8_t *value, size_t len, struct store_rev *out,
    struct kms_status *st)
{
	int r = real_ops->put(sto, hs, held, name, prev, value, len, out, st);

	if (r == 0 && lie_once) {
		lie_once = 0;
		return kms_status_set(st, KMS_ERR_CONFLICT, "changed meanwhile");
	}
	return r;
}

/* Such a change is recognised by its version's label, and its objects kept. */
static void
test_landed_change_is_not_undone(void **state)
{
	struct keystore *ks = open_ks(s);
	struct store *sto = keystore_store(ks);
	struct store_ops lying;
	struct kms_status st;
	struct ks_key *k = NULL;
	size_t privs;

	(void)state;
	real_ops = sto->ops;
	lying = *real_ops;
	lying.put = landed_but_conflict;
	sto->ops = &lying;
	privs = count(HSM_OBJ_PRIVATE_KEY);
	lie_once = 1;
	kms_status_clear(&st);
	assert_int_equal(keystore_create(ks, s, "landed/ec",
	    kms_alg_by_name("EC_P256_SHA256"), 0, &k, &st), 0);
	assert_int_equal(lie_once, 0);
	assert_int_equal(k->primary, 1);
	ks_key_free(k);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs + 1);

	lie_once = 1;
	k = NULL;
	assert_int_equal(keystore_rotate(ks, s, "landed/ec", &k, &st), 0);
	assert_int_equal(lie_once, 0);
	/* The version this rotation made, not one more. */
	assert_int_equal(k->primary, 2);
	ks_key_free(k);
	k = get(ks, "landed/ec");
	assert_int_equal(k->primary, 2);
	assert_int_equal(k->nversions, 2);
	ks_key_free(k);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs + 2);
	sto->ops = real_ops;
	keystore_free(ks);
}

static void
test_state_rules(void **state)
{
	struct keystore *ks = open_ks(s);
	struct kms_status st;
	struct ks_version v;
	const struct kms_alg_info *alg;
	uint32_t resolved;
	int64_t t0 = (int64_t)time(NULL);

	(void)state;
	create(ks, "state/aes", "AES_256_KWP", 0);
	assert_int_equal(rotate(ks, s, "state/aes", &st), 0);
#define SET(ver, stt, want) do {					\
	kms_status_clear(&st);						\
	assert_int_equal(keystore_set_state(ks, s, "state/aes", (ver),	\
	    (stt), 100, &v, &st), (want));				\
} while (0)
	SET(2, KS_STATE_DISABLED, KMS_ERR_FAILED_PRECONDITION);
	assert_non_null(strstr(st.msg, "primary"));
	SET(2, KS_STATE_DESTROY_SCHEDULED, KMS_ERR_FAILED_PRECONDITION);
	SET(1, KS_STATE_DESTROYED, KMS_ERR_INVALID_ARGUMENT);
	SET(0, KS_STATE_DISABLED, KMS_ERR_INVALID_ARGUMENT);
	SET(3, KS_STATE_DISABLED, KMS_ERR_NOT_FOUND);
	SET(1, (enum ks_state)0, KMS_ERR_INVALID_ARGUMENT);

	SET(1, KS_STATE_DISABLED, 0);
	assert_int_equal(v.state, KS_STATE_DISABLED);
	assert_int_equal(keystore_resolve(ks, "state/aes", 1, &alg, &resolved,
	    &st), KMS_ERR_FAILED_PRECONDITION);
	assert_int_equal(keystore_resolve(ks, "state/aes", 0, &alg, &resolved,
	    &st), 0);
	assert_int_equal(resolved, 2);
	SET(1, KS_STATE_DISABLED, 0);		/* already so: no change */
	t0 = (int64_t)time(NULL);
	SET(1, KS_STATE_DESTROY_SCHEDULED, 0);
	/* Bounded by the clock on both sides, however slow the machine. */
	assert_true(v.destroy_time >= t0 + 100 &&
	    v.destroy_time <= (int64_t)time(NULL) + 100);
	SET(1, KS_STATE_ENABLED, KMS_ERR_FAILED_PRECONDITION);
	assert_non_null(strstr(st.msg, "restore"));
	SET(1, KS_STATE_DISABLED, 0);		/* restore */
	assert_int_equal(v.destroy_time, 0);
	SET(1, KS_STATE_ENABLED, 0);
	assert_int_equal(keystore_resolve(ks, "state/aes", 1, &alg, &resolved,
	    &st), 0);
#undef SET
	keystore_free(ks);
}

struct events {
	int n;
	enum ks_event what[8];
	uint32_t version[8];
	int err[8];
	int refuse;			/* on_event's answer: the audit failed */
};

static int
on_event(void *arg, enum ks_event what, const char *name, uint32_t version,
    int err, const struct kms_status *st)
{
	struct events *ev = arg;

	(void)name;
	(void)st;
	if (ev->n < 8) {
		ev->what[ev->n] = what;
		ev->version[ev->n] = version;
		ev->err[ev->n] = err;
	}
	ev->n++;
	return ev->refuse;
}

/*
 * The scheduler of two instances: due work is done once, by whichever
 * instance gets there first, and the other sees it after a refresh.
 */
static void
test_maintain_on_two_instances(void **state)
{
	struct keystore *a = open_ks(s), *b = open_ks(s2);
	struct events ea, eb;
	struct kms_status st;
	struct ks_version v;
	struct ks_key *k;
	size_t privs, pubs, changed;
	int64_t now;

	(void)state;
	create(a, "sched/ed", "ED25519", 1);
	assert_int_equal(keystore_refresh(b, s2, &changed), 0);
	assert_true(changed >= 1);
	k = get(b, "sched/ed");
	assert_int_equal(k->next_rotation_time, k->versions[0].create_time + 1);
	/* Due once the clock reaches it (a rotation then sets the next). */
	while ((now = (int64_t)time(NULL)) < k->next_rotation_time)
		usleep(50000);
	ks_key_free(k);

	/*
	 * An audit record that cannot be written refuses the rotation:
	 * nothing changes, no key object stays, and the error is returned.
	 */
	privs = count(HSM_OBJ_PRIVATE_KEY);
	memset(&ea, 0, sizeof(ea));
	ea.refuse = KMS_ERR_AUDIT;
	assert_int_equal(keystore_maintain(a, s, now, on_event, &ea),
	    KMS_ERR_AUDIT);
	assert_int_equal(ea.n, 1);
	assert_int_equal(ea.err[0], 0);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs);
	assert_int_equal(keystore_refresh(b, s2, NULL), 0);
	k = get(b, "sched/ed");
	assert_int_equal(k->primary, 1);
	ks_key_free(k);

	/* Once the audit log works, the rotation is made, once. */
	memset(&ea, 0, sizeof(ea));
	memset(&eb, 0, sizeof(eb));
	assert_int_equal(keystore_maintain(a, s, now, on_event, &ea), 0);
	assert_int_equal(keystore_maintain(b, s2, now, on_event, &eb), 0);
	assert_int_equal(ea.n + eb.n, 1);
	assert_int_equal(ea.n, 1);
	assert_int_equal(ea.what[0], KS_EVENT_ROTATED);
	assert_int_equal(ea.version[0], 2);
	assert_int_equal(ea.err[0], 0);
	k = get(b, "sched/ed");
	assert_int_equal(k->primary, 2);
	ks_key_free(k);

	/* A destruction, due at once with a wait of 0 seconds. */
	assert_int_equal(keystore_set_rotation_period(a, s, "sched/ed", 0, &k,
	    &st), 0);
	assert_int_equal(k->next_rotation_time, 0);
	ks_key_free(k);
	kms_status_clear(&st);
	assert_int_equal(keystore_set_state(b, s2, "sched/ed", 1,
	    KS_STATE_DESTROY_SCHEDULED, 0, &v, &st), 0);
	privs = count(HSM_OBJ_PRIVATE_KEY);
	pubs = count(HSM_OBJ_PUBLIC_KEY);
	now = (int64_t)time(NULL) + 1;
	memset(&ea, 0, sizeof(ea));
	memset(&eb, 0, sizeof(eb));
	/* a has not refreshed: it does not know yet; b does it. */
	assert_int_equal(keystore_maintain(a, s, now, on_event, &ea), 0);
	assert_int_equal(ea.n, 0);
	/* Not without its record: the objects stay until it can be written. */
	eb.refuse = KMS_ERR_AUDIT;
	assert_int_equal(keystore_maintain(b, s2, now, on_event, &eb),
	    KMS_ERR_AUDIT);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs);
	memset(&eb, 0, sizeof(eb));
	assert_int_equal(keystore_maintain(b, s2, now, on_event, &eb), 0);
	assert_int_equal(eb.n, 1);
	assert_int_equal(eb.what[0], KS_EVENT_DESTROYED);
	assert_int_equal(eb.version[0], 1);
	assert_int_equal(count(HSM_OBJ_PRIVATE_KEY), privs - 1);
	assert_int_equal(count(HSM_OBJ_PUBLIC_KEY), pubs - 1);
	assert_int_equal(keystore_refresh(a, s, NULL), 0);
	k = get(a, "sched/ed");
	assert_int_equal(k->versions[0].state, KS_STATE_DESTROYED);
	assert_int_equal(k->versions[1].state, KS_STATE_ENABLED);
	assert_int_equal(k->rotation_period, 0);
	ks_key_free(k);
	/* Nothing more is due, on either. */
	memset(&ea, 0, sizeof(ea));
	assert_int_equal(keystore_maintain(a, s, now + 10, on_event, &ea), 0);
	assert_int_equal(keystore_maintain(b, s2, now + 10, on_event, &ea), 0);
	assert_int_equal(ea.n, 0);
	kms_status_clear(&st);
	assert_int_equal(keystore_set_state(a, s, "sched/ed", 1,
	    KS_STATE_DISABLED, 0, &v, &st), KMS_ERR_FAILED_PRECONDITION);
	keystore_free(a);
	keystore_free(b);
}

/* Refreshes ks; returns the searches it made (full listings, look-ups). */
static unsigned long
refresh_searches(struct keystore *ks, struct hsm_session *session,
    size_t *changed)
{
	unsigned long before = fault_calls("C_FindObjectsInit");

	assert_int_equal(keystore_refresh(ks, session, changed), 0);
	return fault_calls("C_FindObjectsInit") - before;
}

static uint32_t
primary_of(struct keystore *ks, const char *name)
{
	struct ks_key *k = get(ks, name);
	uint32_t p = k->primary;

	ks_key_free(k);
	return p;
}

/*
 * Two instances: a change made through one is seen by the other's next
 * refresh, and a refresh of an unchanged token reads the change counter
 * alone (no search, one label read) instead of listing the token.
 */
static void
test_refresh_follows_the_change_counter(void **state)
{
	static const char value[] = "kms change counter 1";
	struct keystore *a = open_ks(s), *b = open_ks(s2);
	struct kms_status st;
	struct ks_version v;
	struct ks_key *k;
	hsm_handle_t found[4];
	unsigned long reads;
	size_t changed, n;

	(void)state;
	create(a, "chg/ec", "EC_P256_SHA256", 0);
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_int_equal(changed, 1);
	assert_int_equal(primary_of(b, "chg/ec"), 1);
	/* Unchanged: the counter's label only. */
	reads = fault_calls("C_GetAttributeValue");
	assert_int_equal(refresh_searches(b, s2, &changed), 0);
	assert_int_equal(changed, 0);
	assert_true(fault_calls("C_GetAttributeValue") - reads <= 2);

	assert_int_equal(rotate(a, s, "chg/ec", &st), 0);
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_int_equal(changed, 1);
	assert_int_equal(primary_of(b, "chg/ec"), 2);
	assert_int_equal(refresh_searches(b, s2, &changed), 0);
	/* a's own change is listed once by a, then a is idle too. */
	assert_true(refresh_searches(a, s, &changed) >= 1);
	assert_int_equal(refresh_searches(a, s, &changed), 0);
	assert_int_equal(changed, 0);

	/*
	 * A token made before the counter existed: every refresh lists, and
	 * the next change makes the counter again, once.
	 */
	assert_int_equal(hsm_find_data_value(s, (const uint8_t *)value,
	    strlen(value), found, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(hsm_destroy(s, found[0]), 0);
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_int_equal(rotate(a, s, "chg/ec", &st), 0);
	assert_int_equal(hsm_find_data_value(s, (const uint8_t *)value,
	    strlen(value), found, 4, &n), 0);
	assert_int_equal(n, 1);
	/* b finds the new counter in its listing, and then its label. */
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_int_equal(changed, 1);
	assert_int_equal(primary_of(b, "chg/ec"), 3);
	assert_true(refresh_searches(b, s2, &changed) >= 1);
	assert_int_equal(refresh_searches(b, s2, &changed), 0);
	/* A state change is a change too. */
	kms_status_clear(&st);
	assert_int_equal(keystore_set_state(a, s, "chg/ec", 1,
	    KS_STATE_DISABLED, 0, &v, &st), 0);
	assert_int_equal(refresh_searches(b, s2, &changed), 1);
	assert_int_equal(changed, 1);
	k = get(b, "chg/ec");
	assert_int_equal(k->versions[0].state, KS_STATE_DISABLED);
	ks_key_free(k);
	keystore_free(a);
	keystore_free(b);
}

/*
 * keystore_warm gives every version of another instance's keys its handle
 * (and no foreign object with a look-alike label), after which a first
 * Sign searches nothing.
 */
static void
test_warm_learns_every_handle(void **state)
{
	struct keystore *a = open_ks(s), *b;
	struct kms_status st;
	hsm_handle_t priv, pub;
	uint8_t md[32], sig[128], *der = NULL;
	const uint8_t *p;
	EVP_PKEY *pk;
	EVP_PKEY_CTX *ctx;
	unsigned long before;
	size_t n = 0, siglen = sizeof(sig), derlen = 0;

	(void)state;
	create(a, "warm/ec", "EC_P256_SHA256", 0);
	create(a, "warm/kek", "AES_256_KWP", 0);
	assert_int_equal(rotate(a, s, "warm/ec", &st), 0);
	assert_int_equal(hsm_generate_key_pair(s,
	    kms_alg_by_name("EC_P256_SHA256"), "warm/ec#1#0000000000000000",
	    (const uint8_t *)"x", 1, &priv, &pub), 0);
	b = open_ks(s2);
	/* These three versions, and those of the earlier tests' keys. */
	assert_int_equal(keystore_warm(b, s2, &n), 0);
	assert_true(n >= 3);
	assert_int_equal(keystore_warm(b, s2, &n), 0);
	assert_int_equal(n, 0);
	memset(md, 7, sizeof(md));
	before = fault_calls("C_FindObjectsInit");
	kms_status_clear(&st);
	assert_int_equal(keystore_sign(b, s2, "warm/ec", 2, md, sizeof(md),
	    sig, &siglen, &st), 0);
	siglen = sizeof(sig);
	assert_int_equal(keystore_sign(b, s2, "warm/ec", 1, md, sizeof(md),
	    sig, &siglen, &st), 0);
	assert_int_equal(fault_calls("C_FindObjectsInit") - before, 0);
	/* Signed by version 1's own key, not the look-alike's. */
	kms_status_clear(&st);
	assert_int_equal(keystore_public_key(b, s2, "warm/ec", 1, &der,
	    &derlen, &st), 0);
	p = der;
	assert_non_null(pk = d2i_PUBKEY(NULL, &p, (long)derlen));
	assert_non_null(ctx = EVP_PKEY_CTX_new(pk, NULL));
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	assert_int_equal(EVP_PKEY_verify(ctx, sig, siglen, md, sizeof(md)), 1);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	free(der);
	keystore_free(a);
	keystore_free(b);
}

/* A lock left by a crashed instance is removed once it is old enough. */
static void
test_abandoned_lock_is_reaped(void **state)
{
	struct keystore *ks = open_ks(s);
	struct kms_status st;
	hsm_handle_t h;
	size_t datas;

	(void)state;
	create(ks, "lock/ec", "EC_P256_SHA256", 0);
	datas = count(HSM_OBJ_DATA);
	assert_int_equal(hsm_data_create(s, "lock/ec!lock",
	    (const uint8_t *)"lock 1000 00", 12, &h), 0);
	assert_int_equal(rotate(ks, s, "lock/ec", &st), 0);
	assert_int_equal(count(HSM_OBJ_DATA), datas);
	keystore_free(ks);
}

/*
 * Another instance loads every document, one larger than the first read
 * buffer of the listing too, and skips one destroyed between the search
 * and its read, which the next refresh then finds again.
 */
static void
test_open_reads_every_document(void **state)
{
	struct keystore *ks = open_ks(s), *ks2;
	struct kms_status st;
	struct ks_key *k;
	hsm_handle_t h;
	uint8_t *doc;
	size_t changed = 0, len;
	int i;

	(void)state;
	/* About 110 bytes of document per version. */
	create(ks, "big/ec", "EC_P256_SHA256", 0);
	for (i = 0; i < 45; i++)
		assert_int_equal(rotate(ks, s, "big/ec", &st), 0);
	assert_int_equal(hsm_find(s, HSM_OBJ_DATA, "big/ec", &h), 0);
	assert_int_equal(hsm_data_get(s, h, &doc, &len), 0);
	free(doc);
	assert_true(len > 4096);
	ks2 = open_ks(s2);
	assert_int_equal(keystore_count(ks2), keystore_count(ks));
	k = get(ks2, "big/ec");
	assert_int_equal(k->nversions, 46);
	assert_int_equal(k->primary, 46);
	ks_key_free(k);
	keystore_free(ks2);

	fault_set("C_GetAttributeValue", 1, CKR_OBJECT_HANDLE_INVALID);
	ks2 = open_ks(s2);
	fault_clear();
	assert_int_equal(keystore_count(ks2), keystore_count(ks) - 1);
	assert_int_equal(keystore_refresh(ks2, s2, &changed), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(keystore_count(ks2), keystore_count(ks));
	/* Nothing changed since: nothing read again. */
	assert_int_equal(keystore_refresh(ks2, s2, &changed), 0);
	assert_int_equal(changed, 0);
	keystore_free(ks2);
	keystore_free(ks);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rotation_failures_change_nothing),
		cmocka_unit_test(test_landed_change_is_not_undone),
		cmocka_unit_test(test_state_rules),
		cmocka_unit_test(test_maintain_on_two_instances),
		cmocka_unit_test(test_refresh_follows_the_change_counter),
		cmocka_unit_test(test_warm_learns_every_handle),
		cmocka_unit_test(test_abandoned_lock_is_reaped),
		cmocka_unit_test(test_open_reads_every_document),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
