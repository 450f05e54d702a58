/*
 * reload.c: SIGHUP reloads the TLS credentials and the policy together
 * (see reload.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit.h"
#include "config.h"
#include "gate.h"
#include "kmserr.h"
#include "log.h"
#include "policy.h"
#include "reload.h"
#include "rpc.h"
#include "tlsctx.h"

#define POLICY_FILE_MAX (1024 * 1024)
#define RELOAD_IDENTITY "kmsd"

/* SHA-256 of a file, all zero when it cannot be read. */
static void
file_digest(const char *path, uint8_t md[32])
{
	struct kms_status st;
	char *text = NULL;
	size_t len = 0;

	memset(md, 0, 32);
	if (path[0] == '\0' ||
	    tls_read_file(path, POLICY_FILE_MAX, &text, &len, &st) != 0)
		return;
	if (EVP_Digest(text, len, md, NULL, EVP_sha256(), NULL) != 1)
		memset(md, 0, 32);
	free(text);
}

void
reload_init(struct reload_state *rs, const struct service *svc)
{
	const struct config *cfg = svc->cfg;
	const char *paths[TLS_FILE_COUNT];
	int i;

	paths[TLS_FILE_CERT] = cfg->cert_file;
	paths[TLS_FILE_KEY] = cfg->key_file;
	paths[TLS_FILE_CA] = cfg->ca_file;
	paths[TLS_FILE_CRL] = cfg->crl_file;
	for (i = 0; i < TLS_FILE_COUNT; i++)
		file_digest(paths[i], rs->tls[i]);
	file_digest(cfg->policy_file, rs->policy);
}

/* Appends "name" to the JSON list in buf when the digests differ. */
static void
note_change(char *buf, size_t len, const char *name, const uint8_t *old,
    const uint8_t *new)
{
	size_t used = strlen(buf);

	if (memcmp(old, new, 32) == 0 || used + strlen(name) + 4 >= len)
		return;
	snprintf(buf + used, len - used, "%s\"%s\"",
	    buf[used - 1] == '[' ? "" : ",", name);
}

int
reload_run(struct reload_state *rs, struct service *svc,
    struct rpc_server *srv)
{
	const struct config *cfg = svc->cfg;
	struct reload_state now;
	struct audit_event ev;
	struct kms_status st;
	struct tls_set *ts = NULL;
	struct policy *np = NULL, *old;
	char changed[200], detail[300];
	uint64_t seq = 0;
	int i, r;

	kms_status_clear(&st);
	if ((r = tls_set_load(cfg->cert_file, cfg->key_file, cfg->ca_file,
	    cfg->crl_file, &ts, &st)) == 0)
		r = policy_load(cfg->policy_file, &np, &st);
	/* The digests of what was read, to say what a reload changes. */
	memset(&now, 0, sizeof(now));
	if (ts != NULL)
		memcpy(now.tls, ts->digest, sizeof(now.tls));
	file_digest(cfg->policy_file, now.policy);
	snprintf(changed, sizeof(changed), "[");
	if (r == 0) {
		for (i = 0; i < TLS_FILE_COUNT; i++)
			note_change(changed, sizeof(changed),
			    tls_file_name((enum tls_file)i), rs->tls[i],
			    now.tls[i]);
		note_change(changed, sizeof(changed), "policy", rs->policy,
		    now.policy);
	}
	strncat(changed, "]", sizeof(changed) - strlen(changed) - 1);
	snprintf(detail, sizeof(detail), "{\"changed\":%s,\"accepted\":%s}",
	    changed, r == 0 ? "true" : "false");

	memset(&ev, 0, sizeof(ev));
	ev.identity = RELOAD_IDENTITY;
	ev.fingerprint = "";
	ev.peer = "internal";
	ev.rpc = "Reload";
	ev.result = r == 0 ? "ok" : "error";
	ev.status = kms_grpc_code_name(kms_err_grpc_code(r));
	ev.reason = r != 0 ? st.msg : NULL;
	ev.detail_json = detail;
	if (audit_append(svc->audit, &ev, &seq) != 0) {
		log_error("reload refused, the previous certificates, CA, CRL "
		    "and policy stay in force: the audit record of the reload "
		    "cannot be written");
		r = KMS_ERR_AUDIT;
		goto out;
	}
	if (r != 0) {
		log_error("reload refused, the previous certificates, CA, CRL "
		    "and policy stay in force: %s", st.msg);
		goto out;
	}
	rpc_server_set_tls(srv, ts);
	ts = NULL;
	pthread_rwlock_wrlock(&svc->policy_lock);
	old = svc->policy;
	svc->policy = np;
	pthread_rwlock_unlock(&svc->policy_lock);
	np = NULL;
	policy_free(old);
	*rs = now;
	log_info("reloaded certificate, key, CA, CRL and policy; changed: %s "
	    "(audit record %llu)", changed, (unsigned long long)seq);
 out:
	tls_set_free(ts);
	policy_free(np);
	return r;
}
