/*
 * storeopen.c: opens the store of a kmsd.conf, the one the keystore serves
 * from or, for the store commands (admin.c), either of them.
 */
#include <string.h>

#include "config.h"
#include "keystore.h"
#include "kmserr.h"
#include "storeopen.h"

int
store_open(const struct config *cfg, enum config_store backend,
    struct store **out, struct kms_status *st)
{
	*out = NULL;
	switch (backend) {
	case CONFIG_STORE_TOKEN:
		return store_token_open(cfg->keys_lock_file, keystore_doc_rev,
		    out, st);
	case CONFIG_STORE_ETCD:
		break;
	}
	return kms_status_set(st, KMS_ERR_CONFIG, "this kmsd cannot open an "
	    "etcd store");
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
