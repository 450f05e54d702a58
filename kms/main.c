/*
 * main.c: kmsd, the key management daemon.
 *
 *   kmsd --config FILE [--listen HOST:PORT] [--log-level LEVEL]
 *
 * Start-up: read the configuration, turn core dumps off, open the HSM
 * (log in with the PIN from its file, then wipe it), load the key
 * metadata from the token, open the audit chain, load the policy, and
 * serve; a maintenance thread follows changes made by other instances on
 * the same token and runs scheduled rotations and destructions.  SIGHUP
 * reloads the policy (a broken file is refused and the old policy stays
 * in force) together with the TLS certificates, CA and CRL (reload.h);
 * every SELFCHECK_SECONDS the listener is tried, and a listener that no
 * longer accepts makes kmsd exit EXIT_DEAF for its supervisor to restart
 * it; SIGTERM and SIGINT stop accepting calls, let the calls in
 * flight finish, close the HSM sessions and exit 0.
 */
#include <sys/prctl.h>
#include <sys/resource.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "audit.h"
#include "auditkey.h"
#include "config.h"
#include "gate.h"
#include "health.h"
#include "healthsrv.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "policy.h"
#include "reload.h"
#include "rpc.h"
#include "rpclog.h"
#include "store.h"
#include "storeopen.h"
#include "tlsfront.h"
#include "version.h"
#include "watch.h"

#define STOP_GRACE_SECONDS 30
#define SELFCHECK_SECONDS 10	/* how often the listener is tried */
#define SELFCHECK_TIMEOUT_MS 5000
#define SELFCHECK_MISSES 2	/* deaf this many times in a row: exit */
#define EXIT_DEAF 3

/*
 * The maintenance thread: first it learns the handles of all key objects
 * (keystore_warm), then every [keys] sync_ms it reads what other
 * instances changed on the token and runs due rotations and destructions
 * (service_maintain), on an HSM session of its own.
 */
struct maint {
	struct service *svc;
	struct hsm_session *hs;
	unsigned int ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int kick;			/* the store saw a change: refresh now */
	pthread_t thread;
	int running;
};

static void *
maint_main(void *arg)
{
	struct maint *m = arg;
	struct timespec ts;
	size_t n = 0;
	int r;

	pthread_setname_np(pthread_self(), "kms-maint");
	/* Calls served meanwhile look their key up themselves. */
	if ((r = keystore_warm(m->svc->ks, m->hs, &n)) != 0)
		log_warn("keystore: cannot list the key objects: %s",
		    kms_strerror(r));
	else
		log_info("keystore: %zu key object handles learnt", n);
	pthread_mutex_lock(&m->mu);
	while (!m->stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += m->ms / 1000;
		ts.tv_nsec += (long)(m->ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!m->stop && !m->kick && pthread_cond_timedwait(&m->cv,
		    &m->mu, &ts) == 0)
			;
		if (m->stop)
			break;
		m->kick = 0;
		pthread_mutex_unlock(&m->mu);
		service_maintain(m->svc, m->hs);
		pthread_mutex_lock(&m->mu);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* The store saw a change (on its own thread): refresh at once. */
static void
maint_kick(void *arg)
{
	struct maint *m = arg;

	pthread_mutex_lock(&m->mu);
	m->kick = 1;
	pthread_cond_signal(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

static int
maint_start(struct maint *m, struct service *svc, unsigned int ms)
{
	pthread_condattr_t ca;
	int r;

	m->svc = svc;
	m->ms = ms;
	if ((r = hsm_session_open(svc->hsm, &m->hs)) != 0)
		return r;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&m->mu, NULL);
	if (pthread_create(&m->thread, NULL, maint_main, m) != 0)
		return KMS_ERR_NOMEM;
	m->running = 1;
	if (keystore_set_notify(svc->ks, maint_kick, m))
		log_info("keystore: the store's watch triggers refreshes");
	return 0;
}

static void
maint_stop(struct maint *m)
{
	if (m->running) {
		keystore_set_notify(m->svc->ks, NULL, NULL);
		pthread_mutex_lock(&m->mu);
		m->stop = 1;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->thread, NULL);
		pthread_cond_destroy(&m->cv);
		pthread_mutex_destroy(&m->mu);
		m->running = 0;
	}
	hsm_session_close(m->hs);
	m->hs = NULL;
}

static void
usage(int ok)
{
	fprintf(ok ? stdout : stderr,
	    "usage: kmsd --config FILE [--listen HOST:PORT]\n"
	    "            [--log-level error|warn|info|debug] "
	    "[--log-format text|json]\n"
	    "            [--audit-new-chain REASON]\n"
	    "       kmsd --config FILE --migrate-store token:etcd|etcd:token "
	    "[--dry-run]\n"
	    "       kmsd --config FILE --gc-orphans [--apply]\n"
	    "       kmsd --version | --help\n"
	    "\n"
	    "  --config FILE      kmsd.conf (see kmsd.conf(5))\n"
	    "  --listen ADDR      overrides [server] listen\n"
	    "  --log-level L      overrides [server] log_level\n"
	    "  --log-format F     text (default) or json: one object per line,\n"
	    "                     gRPC's own messages included\n"
	    "  --audit-new-chain REASON\n"
	    "                     end this instance's audit chain (saying why\n"
	    "                     in it) and start the next one\n"
	    "  --migrate-store FROM:TO\n"
	    "                     copy the key metadata and counters from one\n"
	    "                     store into the other, then exit\n"
	    "  --gc-orphans       list the key objects no metadata references;\n"
	    "                     with --apply destroy them (audited), then exit\n"
	    "\n"
	    "SIGHUP reloads the policy; SIGTERM stops.  See kmsd(8).\n");
	exit(ok ? 0 : 2);
}

/*
 * The once-a-second probe: logs a change of health, feeds the watchdog
 * only while healthy.
 */
static void
health_tick(struct service *svc, struct watchdog *wd, struct healthsrv *hsrv,
    int *healthy)
{
	struct kms_status st;
	int ok;

	kms_status_clear(&st);
	ok = health_probe(svc->hsm, svc->audit, &st) == 0;
	if (ok != *healthy) {
		if (ok)
			log_info("health: serving again");
		else
			log_error("health: not serving: %s", st.msg);
		*healthy = ok;
	}
	healthsrv_set(hsrv, ok);
	watchdog_tick(wd, ok);
}

/* What the metrics read when scraped. */
struct gauge_src {
	struct service *svc;
	struct rpc_server *srv;
};

static size_t
gauge_keys(void *arg)
{
	return keystore_count(((struct gauge_src *)arg)->svc->ks);
}

static unsigned int
gauge_connections(void *arg)
{
	return rpc_server_connections(((struct gauge_src *)arg)->srv);
}

/*
 * The listener self-check: 1 when the listener has not accepted a
 * connection SELFCHECK_MISSES times in a row.
 */
static int
listener_deaf(struct rpc_server *srv, int *misses)
{
	if (rpc_server_selfcheck(srv, SELFCHECK_TIMEOUT_MS) == 0) {
		*misses = 0;
		return 0;
	}
	if (++*misses < SELFCHECK_MISSES) {
		log_warn("connections: the listener did not accept a "
		    "connection within %d ms", SELFCHECK_TIMEOUT_MS);
		return 0;
	}
	log_error("connections: the listener has stopped accepting "
	    "connections: exiting %d for a restart", EXIT_DEAF);
	return 1;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "log-level", required_argument, NULL, 'v' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "audit-new-chain", required_argument, NULL, 'N' },
		{ "migrate-store", required_argument, NULL, 'M' },
		{ "dry-run", no_argument, NULL, 'D' },
		{ "gc-orphans", no_argument, NULL, 'G' },
		{ "apply", no_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 }
	};
	static struct config cfg;
	struct service svc;
	struct rpc_server *srv = NULL;
	struct hsm_session *hs = NULL;
	struct store *sto = NULL;
	struct kms_status st;
	struct rlimit rl;
	const char *config_path = NULL, *listen = NULL, *level = NULL;
	const char *new_chain = NULL, *migrate = NULL;
	int gc = 0, apply = 0, dry_run = 0;
	enum log_format fmt;
	struct timespec tick = { 1, 0 };
	struct watchdog *wd = NULL;
	struct healthsrv *hsrv = NULL;
	struct gauge_src gsrc = { NULL, NULL };
	struct metrics_gauges gauges = { gauge_keys, gauge_connections, NULL };
	char status[300];
	int healthy = 1;
	static struct audit_key akey;
	static struct maint maint;
	static struct reload_state rs;
	unsigned int ticks = 0;
	int misses = 0;
	/* The base leaves room for service_open_audit's suffix "-16". */
	char base[KMS_CHAIN_NAME_MAX - 3];
	sigset_t sigs;
	enum log_level lvl;
	int ch, sig, port, r, rc = 1;

	while ((ch = getopt_long(argc, argv, "c:l:v:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'v':
			level = optarg;
			break;
		case 'f':
			if (log_format_parse(optarg, &fmt) != 0) {
				fprintf(stderr, "kmsd: --log-format: text or "
				    "json\n");
				usage(0);
			}
			log_set_format(fmt);
			break;
		case 'V':
			printf("kmsd %s\n", KMS_VERSION);
			return 0;
		case 'N':
			if (*optarg == '\0' || strlen(optarg) > 500) {
				fprintf(stderr, "kmsd: --audit-new-chain needs "
				    "a reason of 1..500 bytes\n");
				usage(0);
			}
			new_chain = optarg;
			break;
		case 'M':
			migrate = optarg;
			break;
		case 'D':
			dry_run = 1;
			break;
		case 'G':
			gc = 1;
			break;
		case 'A':
			apply = 1;
			break;
		case 'h':
			usage(1);
			break;
		default:
			usage(0);
		}
	}
	if (config_path == NULL || optind != argc ||
	    (migrate != NULL && gc) || (dry_run && migrate == NULL) ||
	    (apply && !gc))
		usage(0);
	rpc_log_init();

	/* Key material passes through this process: never dump it. */
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	/* Signals are taken synchronously by the main thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A file size limit fails the audit write (fail closed), not kmsd. */
	signal(SIGXFSZ, SIG_IGN);

	memset(&svc, 0, sizeof(svc));
	pthread_rwlock_init(&svc.policy_lock, NULL);
	kms_status_clear(&st);
	config_defaults(&cfg);
	if (config_load(config_path, &cfg, &st) != 0) {
		log_error("%s", st.msg);
		goto out;
	}
	if (listen != NULL) {
		if (strlen(listen) >= sizeof(cfg.listen)) {
			log_error("--listen: address too long");
			goto out;
		}
		strcpy(cfg.listen, listen);
	}
	log_set_level(cfg.log_level);
	if (level != NULL) {
		if (log_level_parse(level, &lvl) != 0) {
			log_error("--log-level: use error, warn, info or debug");
			goto out;
		}
		log_set_level(lvl);
	}
	svc.cfg = &cfg;
	/* Before the HSM opens its files: the descriptors are planned. */
	if (migrate == NULL && !gc && tlsfront_size_limits(
	    cfg.max_connections, &cfg.max_connections, &st) != 0) {
		log_error("connections: %s", st.msg);
		goto out;
	}
	if (cfg.metrics_listen[0] != '\0' && (r = metrics_new(gate_nmethods(),
	    gate_method_path, &svc.metrics)) != 0) {
		log_error("metrics: %s", kms_strerror(r));
		goto out;
	}
	if (hsm_open(cfg.hsm_module, cfg.hsm_token, cfg.hsm_pin_file,
	    &svc.hsm, &st) != 0) {
		log_error("hsm: %s", st.msg);
		goto out;
	}
	hsm_set_metrics(svc.hsm, svc.metrics);
	if (migrate != NULL || gc) {
		/* The store commands (admin.h) print their result. */
		rc = migrate != NULL ? admin_migrate_store(&svc, migrate,
		    dry_run) : admin_gc_orphans(&svc, &akey, apply);
		goto done;
	}
	if ((r = hsm_session_open(svc.hsm, &hs)) != 0) {
		log_error("hsm: cannot open a session: %s", kms_strerror(r));
		goto out;
	}
	if (store_open(&cfg, cfg.store_backend, &sto, &st) != 0 ||
	    store_claim(sto, hs, STORE_CLAIM_SERVE, &st) != 0) {
		store_free(sto);
		log_error("keystore: %s", st.msg);
		goto out;
	}
	/* The keystore owns the store from here on, freed or not. */
	if (keystore_open_store(sto, hs, &svc.ks, &st) != 0) {
		log_error("keystore: %s", st.msg);
		goto out;
	}
	hsm_session_close(hs);
	hs = NULL;
	/*
	 * One chain per instance, named after the listen address; a chain
	 * held by another kmsd on the same state directory (same address
	 * with port 0, say) makes this one take the next free name.
	 */
	names_chain_from(cfg.listen, base, sizeof(base));
	if (service_open_audit(&svc, keystore_store(svc.ks), base, new_chain,
	    &akey, &st) != 0) {
		log_error("audit: %s", st.msg);
		goto out;
	}
	audit_set_metrics(svc.audit, svc.metrics);
	if (watch_hub_new(svc.audit, cfg.audit_max_watchers,
	    cfg.audit_watch_queue, &svc.watch, &st) != 0) {
		log_error("audit: %s", st.msg);
		goto out;
	}
	audit_set_notify(svc.audit, watch_hub_notify, svc.watch);
	if (service_reload_policy(&svc, &st) != 0) {
		log_error("policy: %s", st.msg);
		goto out;
	}
	if (rpc_server_start(&svc, cfg.listen, &srv, &port, &st) != 0) {
		log_error("rpc: %s", st.msg);
		goto out;
	}
	gauges.arg = &gsrc;
	gsrc.svc = &svc;
	gsrc.srv = srv;
	if (svc.metrics != NULL && metrics_serve(svc.metrics,
	    cfg.metrics_listen, &gauges, &st) != 0) {
		log_error("%s", st.msg);
		goto out;
	}
	if ((r = maint_start(&maint, &svc, cfg.keys_sync_ms)) != 0) {
		log_error("keystore: cannot start the maintenance thread: %s",
		    kms_strerror(r));
		goto out;
	}
	reload_init(&rs, &svc);
	log_info("listening on %s (port %d), %u workers, %zu keys, audit "
	    "chain %s", cfg.listen, port, cfg.workers, keystore_count(svc.ks),
	    audit_chain_dir(svc.audit));

	if (cfg.health_listen[0] != '\0' &&
	    healthsrv_start(cfg.health_listen, &hsrv, &st) != 0) {
		log_error("%s", st.msg);
		goto out;
	}
	if ((r = watchdog_open(cfg.listen, port, &wd)) != 0) {
		log_error("watchdog: %s", kms_strerror(r));
		goto out;
	}
	snprintf(status, sizeof(status), "listening on %s", cfg.listen);
	watchdog_ready(status);

	rc = 0;
	for (;;) {
		/*
		 * Once a second: is kmsd healthy?  That feeds the watchdog
		 * and the health port.  Every SELFCHECK_SECONDS: does the
		 * listener still accept?
		 */
		if ((sig = sigtimedwait(&sigs, NULL, &tick)) == -1) {
			if (errno != EAGAIN)
				continue;
			health_tick(&svc, wd, hsrv, &healthy);
			if (++ticks % SELFCHECK_SECONDS == 0 &&
			    listener_deaf(srv, &misses)) {
				rc = EXIT_DEAF;
				break;
			}
			continue;
		}
		if (sig == SIGHUP) {
			reload_run(&rs, &svc, srv);
			continue;
		}
		log_info("signal %d: stopping", sig);
		break;
	}
	watchdog_stopping();
	healthsrv_stop(hsrv);
	hsrv = NULL;
	maint_stop(&maint);
	rpc_server_stop(srv, STOP_GRACE_SECONDS);
	srv = NULL;
 out:
	healthsrv_stop(hsrv);
	watchdog_free(wd);
	maint_stop(&maint);
	rpc_server_stop(srv, 0);
	if (svc.audit != NULL)
		audit_set_notify(svc.audit, NULL, NULL);
	watch_hub_free(svc.watch);
	hsm_session_close(hs);
	policy_free(svc.policy);
	audit_close(svc.audit);
	audit_key_close(&akey);
	keystore_free(svc.ks);
	hsm_close(svc.hsm);
	metrics_free(svc.metrics);
	pthread_rwlock_destroy(&svc.policy_lock);
	if (rc == 0)
		log_info("stopped");
	else if (rc == EXIT_DEAF)
		log_error("stopped: the listener was deaf");
	return rc;
 done:
	audit_close(svc.audit);
	audit_key_close(&akey);
	hsm_close(svc.hsm);
	metrics_free(svc.metrics);
	pthread_rwlock_destroy(&svc.policy_lock);
	return rc;
}
