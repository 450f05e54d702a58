/*
 * lead.c: the instance lease, its presence and alone claims, and the
 * scheduling leader on etcd (see lead.h).
 *
 * One thread per claim keeps the lease alive every LEAD_TICK_MS, so that
 * a maintenance pass that takes long (a rotation in a slow HSM) cannot
 * let it expire.  A lease that expired anyway (etcd without quorum for
 * longer than its TTL, a process stopped in a debugger) is granted anew
 * and the presence put again; leadership is then campaigned for again
 * like any other instance's.  Leadership only saves work: every scheduled
 * change is still one transaction on the key's document, checked to be
 * still due, so two instances that both believe they lead for a moment
 * never rotate a key twice for one period.
 */
#include <unistd.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "clock.h"
#include "etcd.h"
#include "kmserr.h"
#include "lead.h"
#include "log.h"

#define KEY_MAX 1024
#define ID_BYTES 8
#define LEAD_MARGIN_MS 1000	/* lead only this long before the TTL ends */

struct lead {
	struct etcd *e;
	enum store_claim how;
	char id[2 * ID_BYTES + 1];
	char value[128];		/* what the keys say: who holds them */
	char self[KEY_MAX];		/* the presence, or the alone key */
	char leader[KEY_MAX];
	pthread_t thread;
	int running;
	pthread_mutex_t mu;		/* guards what follows */
	pthread_cond_t cv;
	int stop;
	int64_t lease;			/* 0: none (lost) */
	int leading;
	int64_t alive_ms;		/* the last keep-alive that worked */
	int down;			/* etcd did not answer the last tick */
};

static int
key_of(char *out, const char *prefix, const char *name, const char *id)
{
	if ((size_t)snprintf(out, KEY_MAX, "%s%s%s", prefix, name, id) >=
	    KEY_MAX)
		return KMS_ERR_CONFIG;
	return 0;
}

/* How many keys there are at key (prefix 1: under it). */
static int
count(struct lead *l, const char *key, int prefix, size_t *n,
    struct kms_status *st)
{
	*n = 0;
	return etcd_range(l->e, key, prefix, NULL, NULL, NULL, n, st);
}

/* A fresh lease with this claim's key on it. */
static int
grant(struct lead *l, struct kms_status *st)
{
	struct kms_status ign;
	int64_t lease = 0;
	int r;

	if ((r = etcd_lease_grant(l->e, LEAD_TTL_SECONDS, &lease, st)) != 0)
		return r;
	if ((r = etcd_put_if(l->e, l->self, 0, (const uint8_t *)l->value,
	    strlen(l->value), lease, NULL, NULL, NULL, st)) != 0) {
		kms_status_clear(&ign);
		(void)etcd_lease_revoke(l->e, lease, &ign);
		if (r == KMS_ERR_CONFLICT)
			return kms_status_set(st, KMS_ERR_UNAVAILABLE,
			    "another store command holds etcd (%s exists)",
			    l->self);
		return r;
	}
	pthread_mutex_lock(&l->mu);
	l->lease = lease;
	l->alive_ms = clock_ms();
	pthread_mutex_unlock(&l->mu);
	return 0;
}

/* Leads when PREFIX "leader" is free (or already ours). */
static void
campaign(struct lead *l, int64_t lease)
{
	struct kms_status st;
	int r, was;

	kms_status_clear(&st);
	r = etcd_put_if(l->e, l->leader, 0, (const uint8_t *)l->value,
	    strlen(l->value), lease, NULL, NULL, NULL, &st);
	if (r != 0 && r != KMS_ERR_CONFLICT)
		return;		/* etcd does not answer: the next tick */
	pthread_mutex_lock(&l->mu);
	was = l->leading;
	if (r == 0)
		l->leading = 1;
	pthread_mutex_unlock(&l->mu);
	if (r == 0 && !was)
		log_info("store: this instance now runs the scheduled "
		    "rotations and destructions (etcd lease %llx, %d s)",
		    (unsigned long long)lease, LEAD_TTL_SECONDS);
}

/* Whether PREFIX "leader" still holds this instance's value. */
struct check_ctx {
	const char *value;
	int ours;
};

static int
check_one(const struct etcd_kv *kv, void *arg)
{
	struct check_ctx *cc = arg;

	cc->ours = strcmp((const char *)kv->value, cc->value) == 0;
	return 0;
}

static void
lose(struct lead *l, const char *why)
{
	int was;

	pthread_mutex_lock(&l->mu);
	was = l->leading;
	l->leading = 0;
	pthread_mutex_unlock(&l->mu);
	if (was)
		log_warn("store: this instance no longer runs the scheduled "
		    "changes: %s", why);
}

static void
tick(struct lead *l)
{
	struct check_ctx cc = { l->value, 0 };
	struct kms_status st;
	int64_t lease, left = 0;
	int r, leading;

	kms_status_clear(&st);
	pthread_mutex_lock(&l->mu);
	lease = l->lease;
	leading = l->leading;
	pthread_mutex_unlock(&l->mu);
	if (lease == 0) {
		if ((r = grant(l, &st)) != 0)
			goto fail;
		log_info("store: a new etcd lease holds %s", l->self);
	} else if ((r = etcd_lease_keepalive(l->e, lease, &left, &st)) ==
	    KMS_ERR_NOT_FOUND || (r == 0 && left <= 0)) {
		log_warn("store: the etcd lease of %s expired", l->self);
		pthread_mutex_lock(&l->mu);
		l->lease = 0;
		pthread_mutex_unlock(&l->mu);
		lose(l, "its etcd lease expired");
		return;
	} else if (r != 0)
		goto fail;
	else {
		pthread_mutex_lock(&l->mu);
		l->alive_ms = clock_ms();
		pthread_mutex_unlock(&l->mu);
	}
	if (l->down)
		log_info("store: etcd answers the lease keep-alive again");
	l->down = 0;
	if (l->how != STORE_CLAIM_SERVE)
		return;
	pthread_mutex_lock(&l->mu);
	lease = l->lease;
	pthread_mutex_unlock(&l->mu);
	if (!leading) {
		campaign(l, lease);
		return;
	}
	if (etcd_range(l->e, l->leader, 0, check_one, &cc, NULL, NULL,
	    &st) == 0 && !cc.ours)
		lose(l, "another instance holds the leader key");
	return;
 fail:
	if (!l->down)
		log_warn("store: cannot keep the etcd lease alive: %s", st.msg);
	l->down = 1;
}

static void *
lead_main(void *arg)
{
	struct lead *l = arg;
	struct timespec ts;

	pthread_setname_np(pthread_self(), "kms-lead");
	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += LEAD_TICK_MS / 1000;
		ts.tv_nsec += (long)(LEAD_TICK_MS % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu,
		    &ts) == 0)
			;
		if (l->stop)
			break;
		pthread_mutex_unlock(&l->mu);
		tick(l);
		pthread_mutex_lock(&l->mu);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* The alone claim: no instance present, then the alone key, then again. */
static int
claim_alone(struct lead *l, const char *instances, const char *alone,
    struct kms_status *st)
{
	size_t n;
	int r;

	if ((r = count(l, instances, 1, &n, st)) != 0)
		return r;
	if (n > 0)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "%zu kmsd "
		    "serve from etcd (keys %s...): stop them first", n,
		    instances);
	strcpy(l->self, alone);
	if ((r = grant(l, st)) != 0)
		return r;
	/* An instance that came up meanwhile saw no alone key: refuse. */
	if ((r = count(l, instances, 1, &n, st)) != 0)
		return r;
	if (n > 0)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "a kmsd started "
		    "serving from etcd meanwhile (keys %s...)", instances);
	return 0;
}

static int
claim_serve(struct lead *l, const char *instances, const char *alone,
    struct kms_status *st)
{
	size_t n;
	int r;

	if ((r = count(l, alone, 0, &n, st)) != 0)
		return r;
	if (n > 0)
		return kms_status_set(st, KMS_ERR_UNAVAILABLE, "a store "
		    "command (--migrate-store, --gc-orphans) holds etcd (%s "
		    "exists)", alone);
	if ((size_t)snprintf(l->self, sizeof(l->self), "%s%s", instances,
	    l->id) >= sizeof(l->self))
		return kms_status_set(st, KMS_ERR_CONFIG, "etcd prefix too "
		    "long");
	if ((r = grant(l, st)) != 0)
		return r;
	/* A store command that came up meanwhile saw this instance. */
	campaign(l, l->lease);
	return 0;
}

int
lead_open(struct etcd *e, const char *prefix, enum store_claim how,
    struct lead **out, struct kms_status *st)
{
	char instances[KEY_MAX], alone[KEY_MAX], host[64];
	uint8_t rnd[ID_BYTES];
	struct lead *l;
	pthread_condattr_t ca;
	size_t i;
	int r;

	*out = NULL;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	l->e = e;
	l->how = how;
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		r = kms_status_set(st, KMS_ERR_INTERNAL, "no randomness");
		goto fail;
	}
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(l->id + 2 * i, 3, "%02x", rnd[i]);
	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(l->value, sizeof(l->value), "%s kmsd pid %ld host %s id %s",
	    how == STORE_CLAIM_SERVE ? "serving" : "store command",
	    (long)getpid(), host, l->id);
	if (key_of(instances, prefix, "instances/", "") != 0 ||
	    key_of(alone, prefix, "alone", "") != 0 ||
	    key_of(l->leader, prefix, "leader", "") != 0) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "etcd prefix too long");
		goto fail;
	}
	r = how == STORE_CLAIM_SERVE ? claim_serve(l, instances, alone, st) :
	    claim_alone(l, instances, alone, st);
	if (r != 0)
		goto fail;
	if (pthread_create(&l->thread, NULL, lead_main, l) != 0) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "cannot start the etcd "
		    "lease thread");
		goto fail;
	}
	l->running = 1;
	*out = l;
	return 0;
 fail:
	lead_free(l);
	return r;
}

int
lead_leads(struct lead *l)
{
	int r;

	if (l == NULL)
		return 1;
	pthread_mutex_lock(&l->mu);
	r = l->leading && l->lease != 0 && clock_ms() - l->alive_ms <
	    LEAD_TTL_SECONDS * 1000 - LEAD_MARGIN_MS;
	pthread_mutex_unlock(&l->mu);
	return r;
}

void
lead_free(struct lead *l)
{
	struct kms_status ign;

	if (l == NULL)
		return;
	if (l->running) {
		pthread_mutex_lock(&l->mu);
		l->stop = 1;
		pthread_cond_signal(&l->cv);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	/* The keys on the lease go with it: the next leader need not wait. */
	kms_status_clear(&ign);
	if (l->lease != 0 && etcd_lease_revoke(l->e, l->lease, &ign) != 0)
		log_warn("store: cannot revoke the etcd lease of %s (%s): it "
		    "expires within %d s", l->self, ign.msg, LEAD_TTL_SECONDS);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
