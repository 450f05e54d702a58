/*
 * storeopen.c: opens the store of a kmsd.conf, the one the keystore serves
 * from or, for the store commands (admin.c), either of them.
 */
#include <string.h>

#include "config.h"
#include "etcd.h"
#include "keystore.h"
#include "kmserr.h"
#include "storeopen.h"

int
store_open(const struct config *cfg, enum config_store backend,
    struct store **out, struct kms_status *st)
{
	struct etcd_opts eo;

	*out = NULL;
	switch (backend) {
	case CONFIG_STORE_TOKEN:
		return store_token_open(cfg->keys_lock_file, keystore_doc_rev,
		    out, st);
	case CONFIG_STORE_ETCD:
		memset(&eo, 0, sizeof(eo));
		eo.endpoints = cfg->store_endpoints;
		eo.ca_file = cfg->store_ca;
		eo.cert_file = cfg->store_cert;
		eo.key_file = cfg->store_key;
		eo.timeout_ms = cfg->store_timeout_ms;
		return store_etcd_open(&eo, cfg->store_prefix, keystore_doc_rev,
		    out, st);
	}
	return kms_status_set(st, KMS_ERR_CONFIG, "unknown store backend");
}

const char *
store_backend_name(enum config_store backend)
{
	return backend == CONFIG_STORE_ETCD ? "etcd" : "token";
}

int
store_backend_parse(const char *s, enum config_store *out)
{
	if (strcmp(s, "token") == 0)
		*out = CONFIG_STORE_TOKEN;
	else if (strcmp(s, "etcd") == 0)
		*out = CONFIG_STORE_ETCD;
	else
		return KMS_ERR_CONFIG;
	return 0;
}
