/*
 * storeopen.h: the store of a kmsd.conf.
 */
#ifndef KMS_STOREOPEN_H
#define KMS_STOREOPEN_H

#include "config.h"
#include "store.h"

/*
 * Opens cfg's store of the given backend (not necessarily the one cfg
 * serves from: a migration opens both) for the keystore's documents.
 */
int store_open(const struct config *cfg, enum config_store backend,
    struct store **out, struct kms_status *st);

/* "token" or "etcd". */
const char *store_backend_name(enum config_store backend);
/* "token" or "etcd" into *out; KMS_ERR_CONFIG for anything else. */
int store_backend_parse(const char *s, enum config_store *out);

#endif /* KMS_STOREOPEN_H */
