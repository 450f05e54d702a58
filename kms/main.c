/*
 * main.c: kmsd, the key management daemon.
 *
 *   kmsd --config FILE [--listen HOST:PORT] [--log-level LEVEL]
 *
 * Start-up: read the configuration, turn core dumps off, open the HSM
 * (log in with the PIN from its file, then wipe it), load the key
 * metadata from the token, open the audit chain, load the policy, and
 * serve.  SIGHUP reloads the policy (a broken file is refused and the old
 * policy stays in force); SIGTERM and SIGINT stop accepting calls, let the
 * calls in flight finish, close the HSM sessions and exit 0.
 */
#include <sys/prctl.h>
#include <sys/resource.h>

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "config.h"
#include "handlers.h"
#include "hsm.h"
#include "keystore.h"
#include "kmserr.h"
#include "log.h"
#include "policy.h"
#include "rpc.h"

#define AUDIT_SEGMENT_MAX (64UL * 1024 * 1024)
#define STOP_GRACE_SECONDS 30

static void
usage(void)
{
	fprintf(stderr, "usage: kmsd --config FILE [--listen HOST:PORT] "
	    "[--log-level error|warn|info|debug]\n");
	exit(2);
}

/* A chain name from the listen address: one audit chain per instance. */
static void
chain_name(const char *listen, char *out, size_t len)
{
	size_t i;

	for (i = 0; listen[i] != '\0' && i + 1 < len; i++) {
		char c = listen[i];

		out[i] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '-') ? c : '_';
	}
	out[i] = '\0';
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "log-level", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	static struct config cfg;
	struct service svc;
	struct rpc_server *srv = NULL;
	struct hsm_session *hs = NULL;
	struct kms_status st;
	struct rlimit rl;
	const char *config_path = NULL, *listen = NULL, *level = NULL;
	char chain[256];
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
		default:
			usage();
		}
	}
	if (config_path == NULL || optind != argc)
		usage();

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
	if (hsm_open(cfg.hsm_module, cfg.hsm_token, cfg.hsm_pin_file,
	    &svc.hsm, &st) != 0) {
		log_error("hsm: %s", st.msg);
		goto out;
	}
	if ((r = hsm_session_open(svc.hsm, &hs)) != 0) {
		log_error("hsm: cannot open a session: %s", kms_strerror(r));
		goto out;
	}
	if (keystore_open(hs, &svc.ks, &st) != 0) {
		log_error("keystore: %s", st.msg);
		goto out;
	}
	hsm_session_close(hs);
	hs = NULL;
	chain_name(cfg.listen, chain, sizeof(chain));
	if (audit_open(cfg.audit_dir, chain, AUDIT_SEGMENT_MAX, &svc.audit,
	    &st) != 0) {
		log_error("audit: %s", st.msg);
		goto out;
	}
	if (service_reload_policy(&svc, &st) != 0) {
		log_error("policy: %s", st.msg);
		goto out;
	}
	if (rpc_server_start(&svc, cfg.listen, &srv, &port, &st) != 0) {
		log_error("rpc: %s", st.msg);
		goto out;
	}
	log_info("listening on %s (port %d), %u workers, %zu keys, audit "
	    "chain %s", cfg.listen, port, cfg.workers, keystore_count(svc.ks),
	    audit_chain_dir(svc.audit));

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			if (service_reload_policy(&svc, &st) != 0)
				log_error("policy reload refused, the previous "
				    "policy stays in force: %s", st.msg);
			else
				log_info("policy reloaded from %s",
				    cfg.policy_file);
			continue;
		}
		log_info("signal %d: stopping", sig);
		break;
	}
	rpc_server_stop(srv, STOP_GRACE_SECONDS);
	srv = NULL;
	rc = 0;
 out:
	rpc_server_stop(srv, 0);
	hsm_session_close(hs);
	policy_free(svc.policy);
	audit_close(svc.audit);
	keystore_free(svc.ks);
	hsm_close(svc.hsm);
	pthread_rwlock_destroy(&svc.policy_lock);
	if (rc == 0)
		log_info("stopped");
	return rc;
}
