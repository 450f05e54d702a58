/*
 * test_store.c: the store interface (store.h) on both backends: the token
 * (a real SoftHSM2 token) and etcd (a real etcd of the test's own, started
 * on free loopback ports; skipped when etcd-server is not installed).
 * Fake endpoints give the error paths: a closed port, and a listener that
 * accepts connections and never answers.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "etcd.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "p11token.h"
#include "store.h"

#define ETCD_BIN "/usr/bin/etcd"
#define ETCD_START_MS 30000

static struct hsm *hsm;
static struct hsm_session *s;
static pid_t etcd_pid;
static char etcd_ep[64];

static int
free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd, port;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		close(fd);
		return -1;
	}
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* A one-member etcd in dir/etcd on free ports; 0 when it answers. */
static int
etcd_start(void)
{
	char data[128], curl[64], purl[64], ipc[96];
	struct etcd_opts o;
	struct etcd *e;
	struct kms_status st;
	int64_t end;
	int cport = free_port(), pport = free_port(), fd;

	snprintf(data, sizeof(data), "%s/etcd", dir);
	snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", cport);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", pport);
	snprintf(ipc, sizeof(ipc), "default=%s", purl);
	snprintf(etcd_ep, sizeof(etcd_ep), "127.0.0.1:%d", cport);
	if ((etcd_pid = fork()) == -1)
		return -1;
	if (etcd_pid == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) != -1) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(ETCD_BIN, ETCD_BIN, "--data-dir", data,
		    "--listen-client-urls", curl, "--advertise-client-urls",
		    curl, "--listen-peer-urls", purl,
		    "--initial-advertise-peer-urls", purl,
		    "--initial-cluster", ipc, (char *)NULL);
		_exit(127);
	}
	memset(&o, 0, sizeof(o));
	o.endpoints = etcd_ep;
	o.timeout_ms = 500;
	kms_status_clear(&st);
	if (etcd_open(&o, &e, &st) != 0)
		return -1;
	for (end = clock_ms() + ETCD_START_MS; clock_ms() < end;) {
		if (etcd_range(e, "/", 1, NULL, NULL, NULL, NULL, &st) == 0) {
			etcd_close(e);
			return 0;
		}
		clock_pause_ms(100);
	}
	etcd_close(e);
	return -1;
}

static int
setup(void **state)
{
	static const char *const labels[] = { "st", NULL };
	struct kms_status st;

	(void)state;
	(void)p11token_faults;		/* no faults here: SoftHSM2 itself */
	if (p11token_make("/tmp/kms-test-store.XXXXXX", labels) != 0)
		return -1;
	kms_status_clear(&st);
	if (hsm_open(module, "st", pin, &hsm, &st) != 0) {
		fprintf(stderr, "hsm_open %s: %s\n", module, st.msg);
		return -1;
	}
	if (hsm_session_open(hsm, &s) != 0)
		return -1;
	if (access(ETCD_BIN, X_OK) == 0 && etcd_start() != 0) {
		fprintf(stderr, "etcd did not start on %s\n", etcd_ep);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGTERM);
		waitpid(etcd_pid, NULL, 0);
	}
	hsm_session_close(s);
	hsm_close(hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* The documents' revision: "seq N" as the keystore's counters. */
static int
seq_rev(const char *name, const uint8_t *value, size_t len, uint64_t *rev,
    struct kms_status *st)
{
	unsigned long long v;

	*rev = 0;
	if (sscanf((const char *)value, "seq %llu", &v) != 1)
		return kms_status_set(st, KMS_ERR_CONFIG, "not a document");
	*rev = v;
	return 0;
}

static struct store *
open_token(void)
{
	char lock[128];
	struct store *sto;
	struct kms_status st;

	snprintf(lock, sizeof(lock), "%s/keys.lock", dir);
	kms_status_clear(&st);
	if (store_token_open(lock, seq_rev, &sto, &st) != 0)
		fail_msg("store_token_open: %s", st.msg);
	return sto;
}

static struct store *
open_etcd(const char *prefix)
{
	struct etcd_opts o;
	struct store *sto;
	struct kms_status st;

	memset(&o, 0, sizeof(o));
	o.endpoints = etcd_ep;
	kms_status_clear(&st);
	if (store_etcd_open(&o, prefix, seq_rev, &sto, &st) != 0)
		fail_msg("store_etcd_open: %s", st.msg);
	return sto;
}

static int
put(struct store *sto, const char *name, const struct store_rev *prev,
    const char *text, struct store_rev *out)
{
	struct kms_status st;
	struct store_lock *l = NULL;
	int r;

	kms_status_clear(&st);
	if ((r = store_lock(sto, s, name, &l, &st)) != 0)
		return r;
	r = store_put(sto, s, l, name, prev, (const uint8_t *)text,
	    strlen(text), out, &st);
	store_unlock(sto, s, l);
	return r;
}

struct seen {
	int n;
	char last[64];
};

static int
list_cb(const char *name, uint64_t id, const uint8_t *value, size_t len,
    void *arg)
{
	struct seen *sn = arg;

	sn->n++;
	snprintf(sn->last, sizeof(sn->last), "%s=%s", name,
	    (const char *)value);
	return 0;
}

/* What every store does: get, put replacing a revision, list. */
static void
check_documents(struct store *sto)
{
	struct store_doc d;
	struct store_rev r1, r2;
	struct kms_status st;
	struct seen sn = { 0, "" };

	kms_status_clear(&st);
	assert_int_equal(store_get(sto, s, "doc/a", NULL, 0, &d, &st),
	    KMS_ERR_NOT_FOUND);
	assert_int_equal(put(sto, "doc/a", NULL, "seq 1", &r1), 0);
	assert_int_equal(r1.rev, 1);
	assert_int_equal(store_get(sto, s, "doc/a", NULL, 0, &d, &st), 0);
	assert_string_equal((const char *)d.value, "seq 1");
	assert_int_equal(d.len, 5);
	assert_true(d.at.id == r1.id && d.at.rev == 1);
	store_doc_clear(&d);
	assert_int_equal(put(sto, "doc/a", &r1, "seq 2", &r2), 0);
	assert_true(r2.id != r1.id && r2.rev == 2);
	assert_int_equal(store_get(sto, s, "doc/a", NULL, 2, &d, &st), 0);
	assert_string_equal((const char *)d.value, "seq 2");
	store_doc_clear(&d);
	/* A document the store user cannot read is refused. */
	assert_int_not_equal(put(sto, "doc/b", NULL, "garbage", NULL), 0);
	assert_int_equal(store_list(sto, s, list_cb, &sn), 0);
	assert_int_equal(sn.n, 1);
	assert_string_equal(sn.last, "doc/a=seq 2");
}

static void
test_token_store(void **state)
{
	struct store *sto = open_token();
	char m1[STORE_MARK_MAX], m2[STORE_MARK_MAX];

	(void)state;
	check_documents(sto);
	/* The token's mark moves when a writer touches it. */
	store_mark(sto, s, m1, sizeof(m1));
	store_touch(sto, s);
	store_mark(sto, s, m2, sizeof(m2));
	assert_string_not_equal(m1, m2);
	/* It cannot tell of changes: its readers poll. */
	assert_int_equal(store_set_notify(sto, NULL, NULL), 0);
	store_free(sto);
}

struct notified {
	pthread_mutex_t mu;
	int n;
};

static void
notify_cb(void *arg)
{
	struct notified *nf = arg;

	pthread_mutex_lock(&nf->mu);
	nf->n++;
	pthread_mutex_unlock(&nf->mu);
}

static int
notified(struct notified *nf)
{
	int n;

	pthread_mutex_lock(&nf->mu);
	n = nf->n;
	pthread_mutex_unlock(&nf->mu);
	return n;
}

static void
test_etcd_store(void **state)
{
	struct store *a, *b;
	struct store_doc d;
	struct store_rev r1, r2, stale;
	struct kms_status st;
	struct notified nf = { PTHREAD_MUTEX_INITIALIZER, 0 };
	char m1[STORE_MARK_MAX], m2[STORE_MARK_MAX];
	int64_t end;

	(void)state;
	if (etcd_pid <= 0)
		skip();
	a = open_etcd("/t1/");
	b = open_etcd("/t1/");
	check_documents(a);
	/* b learns of a's changes through its watch, without a poll. */
	assert_int_equal(store_set_notify(b, notify_cb, &nf), 1);
	store_mark(b, s, m1, sizeof(m1));
	kms_status_clear(&st);
	assert_int_equal(store_get(a, s, "doc/a", NULL, 0, &d, &st), 0);
	r1 = d.at;
	store_doc_clear(&d);
	assert_int_equal(put(a, "doc/a", &r1, "seq 3", &r2), 0);
	for (end = clock_ms() + 1000; notified(&nf) == 0 &&
	    clock_ms() < end;)
		clock_pause_ms(5);
	assert_true(notified(&nf) > 0);
	store_mark(b, s, m2, sizeof(m2));
	assert_string_not_equal(m1, m2);
	store_set_notify(b, NULL, NULL);
	/* A put on a revision that is no longer the newest lost its race. */
	stale = r1;
	assert_int_equal(put(b, "doc/a", &stale, "seq 4", NULL),
	    KMS_ERR_CONFLICT);
	/* A creation where a document exists lost too. */
	assert_int_equal(put(b, "doc/a", NULL, "seq 4", NULL),
	    KMS_ERR_CONFLICT);
	/* The same put again, as after a lost answer: it is this one. */
	assert_int_equal(put(b, "doc/a", &r1, "seq 3", &stale), 0);
	assert_true(stale.id == r2.id);
	/* No lock: the compare does it. */
	store_free(b);
	store_free(a);
}

struct watched {
	pthread_mutex_t mu;
	int compacted, puts, ups;
	int64_t compact_rev, last_rev;
	char last_value[32];
};

static void
watch_cb(void *arg, enum etcd_watch_what what, const struct etcd_kv *kv,
    int64_t rev, const struct kms_status *st)
{
	struct watched *wd = arg;

	pthread_mutex_lock(&wd->mu);
	if (what == ETCD_WATCH_COMPACTED) {
		wd->compacted++;
		wd->compact_rev = rev;
	} else if (what == ETCD_WATCH_PUT) {
		wd->puts++;
		wd->last_rev = kv->mod_rev;
		snprintf(wd->last_value, sizeof(wd->last_value), "%s",
		    (const char *)kv->value);
	} else if (what == ETCD_WATCH_UP)
		wd->ups++;
	pthread_mutex_unlock(&wd->mu);
}

static int
watched_value(struct watched *wd, const char *want)
{
	int same;

	pthread_mutex_lock(&wd->mu);
	same = strcmp(wd->last_value, want) == 0;
	pthread_mutex_unlock(&wd->mu);
	return same;
}

/*
 * A watch from a compacted revision is told so (the caller reloads) and
 * goes on from the oldest revision kept; later events still arrive.
 */
static void
test_etcd_watch_compacted(void **state)
{
	struct watched wd = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, "" };
	struct etcd_opts o;
	struct etcd *e;
	struct etcd_watch *w;
	struct kms_status st;
	char cmd[256], v[16];
	int64_t rev = 0, end;
	int i;

	(void)state;
	if (etcd_pid <= 0 || access("/usr/bin/etcdctl", X_OK) != 0)
		skip();
	memset(&o, 0, sizeof(o));
	o.endpoints = etcd_ep;
	kms_status_clear(&st);
	assert_int_equal(etcd_open(&o, &e, &st), 0);
	for (i = 1; i <= 5; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		assert_int_equal(etcd_put(e, "/t3/a", (const uint8_t *)v,
		    strlen(v), 0, &rev, &st), 0);
	}
	snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 /usr/bin/etcdctl "
	    "--endpoints=http://%s compact %lld >/dev/null 2>&1", etcd_ep,
	    (long long)rev);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(etcd_watch_start(e, "/t3/", 1, watch_cb, &wd, &w,
	    &st), 0);
	for (end = clock_ms() + 5000; !watched_value(&wd, "v5") &&
	    clock_ms() < end;)
		clock_pause_ms(10);
	assert_true(watched_value(&wd, "v5"));
	pthread_mutex_lock(&wd.mu);
	assert_int_equal(wd.compacted, 1);
	assert_true(wd.compact_rev == rev);
	assert_true(wd.last_rev == rev);
	pthread_mutex_unlock(&wd.mu);
	assert_int_equal(etcd_put(e, "/t3/a", (const uint8_t *)"v6", 2, 0,
	    NULL, &st), 0);
	for (end = clock_ms() + 2000; !watched_value(&wd, "v6") &&
	    clock_ms() < end;)
		clock_pause_ms(10);
	assert_true(watched_value(&wd, "v6"));
	pthread_mutex_lock(&wd.mu);
	assert_int_equal(wd.compacted, 1);
	assert_true(wd.ups >= 1);
	pthread_mutex_unlock(&wd.mu);
	etcd_watch_stop(w);
	etcd_close(e);
}

/* Accepts connections and never answers (not even the HTTP/2 preface). */
static void *
silent_main(void *arg)
{
	int lfd = *(int *)arg, fds[8], n = 0;

	while (n < 8 && (fds[n] = accept(lfd, NULL, NULL)) != -1)
		n++;
	while (n > 0)
		close(fds[--n]);
	return NULL;
}

static void
test_etcd_error_paths(void **state)
{
	struct etcd_opts o;
	struct etcd *e;
	struct store *sto;
	struct sockaddr_in a;
	struct kms_status st;
	socklen_t len = sizeof(a);
	pthread_t th;
	char ep[96];
	int64_t t0, took;
	int lfd;

	(void)state;
	memset(&o, 0, sizeof(o));
	kms_status_clear(&st);
	/* Configuration: plaintext only on loopback, TLS all or nothing. */
	o.endpoints = "10.1.2.3:2379";
	assert_int_equal(etcd_open(&o, &e, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "not on loopback"));
	o.endpoints = "127.0.0.1:2379";
	o.ca_file = "ca.pem";
	assert_int_equal(etcd_open(&o, &e, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "together"));
	o.ca_file = NULL;
	o.endpoints = "no-port";
	assert_int_equal(etcd_open(&o, &e, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "host:port"));
	o.endpoints = " , ";
	assert_int_equal(etcd_open(&o, &e, &st), KMS_ERR_CONFIG);

	/* Nobody listens: refused at once, UNAVAILABLE naming etcd. */
	snprintf(ep, sizeof(ep), "127.0.0.1:%d", free_port());
	o.endpoints = ep;
	o.timeout_ms = 1000;
	t0 = clock_ms();
	assert_int_equal(store_etcd_open(&o, "/t2/", seq_rev, &sto, &st),
	    KMS_ERR_UNAVAILABLE);
	took = clock_ms() - t0;
	assert_non_null(strstr(st.msg, "etcd unavailable"));
	assert_true(took <= 1500);

	/* A listener that never answers: the deadline bounds the call. */
	assert_true((lfd = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(pthread_create(&th, NULL, silent_main, &lfd), 0);
	/* The silent one first, then the real one (when there is one). */
	snprintf(ep, sizeof(ep), "127.0.0.1:%d%s%s", ntohs(a.sin_port),
	    etcd_pid > 0 ? ", " : "", etcd_pid > 0 ? etcd_ep : "");
	o.endpoints = ep;
	o.timeout_ms = 700;
	assert_int_equal(etcd_open(&o, &e, &st), 0);
	t0 = clock_ms();
	if (etcd_pid > 0) {
		/*
		 * The silent endpoint gets half the deadline, then the real
		 * one answers; the next call starts at the one that answered.
		 */
		if (etcd_range(e, "/t2/", 1, NULL, NULL, NULL, NULL, &st) != 0)
			fail_msg("etcd_range: %s", st.msg);
		took = clock_ms() - t0;
		assert_true(took >= 250 && took < 700);
		t0 = clock_ms();
		assert_int_equal(etcd_range(e, "/t2/", 1, NULL, NULL, NULL,
		    NULL, &st), 0);
		assert_true(clock_ms() - t0 < 250);
	} else {
		assert_int_equal(etcd_range(e, "/t2/", 1, NULL, NULL, NULL,
		    NULL, &st), KMS_ERR_UNAVAILABLE);
		took = clock_ms() - t0;
		assert_true(took >= 600 && took <= 1500);
	}
	etcd_close(e);
	shutdown(lfd, SHUT_RDWR);
	close(lfd);
	pthread_join(th, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_store),
		cmocka_unit_test(test_etcd_store),
		cmocka_unit_test(test_etcd_watch_compacted),
		cmocka_unit_test(test_etcd_error_paths),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
