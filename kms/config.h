/*
 * config.h: the kmsd configuration file (INI, parsed with inih).
 *
 *   [server]
 *   listen = 127.0.0.1:7443        ; host:port
 *   ca = pki/ca.pem                 ; CA that client certificates must chain to
 *   cert = pki/server.pem
 *   key = pki/server.key
 *   crl = pki/crl.pem               ; PEM CRLs of the CA, checked on every
 *                                   ; handshake (default: none)
 *   max_connections = 0             ; 0: sized from the open files limit
 *   handshake_timeout_ms = 5000     ; a TLS handshake must finish this soon
 *   idle_timeout_ms = 300000        ; a connection without calls is closed
 *   workers = 2                     ; HSM worker threads (1..64)
 *   max_data_bytes = 1048576        ; largest Sign/Verify `data` (1..64 MiB)
 *   max_message_bytes = 4194304     ; gRPC max receive size (at least
 *                                   ; max_data_bytes + 64 KiB, at most 128 MiB)
 *   log_level = info
 *   [hsm]
 *   module = /usr/lib/softhsm/libsofthsm2.so
 *   token = kms                     ; token label
 *   pin_file = pin
 *   [policy]
 *   file = policy.conf
 *   [audit]
 *   dir = audit
 *   segment_bytes = 67108864        ; start a new segment file past this size
 *   checkpoint_every = 1000         ; records between signed checkpoints
 *   checkpoint_seconds = 60         ; and at least this often (0: off)
 *   sync = yes                      ; no: skip fdatasync (benchmarks only)
 *   v2 = yes                        ; no: no Merkle tree, batch seals or
 *                                   ; HSM anchor (benchmarks only)
 *   max_watchers = 16               ; WatchAuditRecords streams open at once
 *   watch_queue = 1024              ; records queued per stream before a
 *                                   ; reader that cannot keep up is cut off
 *   [keys]
 *   destroy_wait = 86400            ; seconds a version stays DESTROY_SCHEDULED
 *   min_rotation_period = 3600      ; shortest rotation_period_seconds accepted
 *   sync_ms = 1000                  ; how often metadata changed by other
 *                                   ; instances is read from the token, and
 *                                   ; due rotations and destructions run
 *   lock_file = keys.lock           ; serialises key changes between the
 *                                   ; instances of one host (see keystore.c)
 *   [store]                         ; where key metadata lives (docs/etcd.md)
 *   backend = token                 ; token (default) or etcd
 *   endpoints = 127.0.0.1:2379, ... ; etcd's client URLs (backend = etcd)
 *   ca = pki/etcd-ca.pem            ; TLS to etcd: ca, cert and key together;
 *   cert = pki/etcd-client.pem      ; none of them: plaintext, loopback
 *   key = pki/etcd-client.key       ; endpoints only
 *   prefix = /kms/                  ; every etcd key of kms starts with it
 *   timeout_ms = 2000               ; each etcd call's deadline (100..60000)
 *
 * Relative paths are taken relative to the directory of the config file.
 */
#ifndef KMS_CONFIG_H
#define KMS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CONFIG_PATH_MAX 4096

/* Where the keystore's documents live ([store] backend). */
enum config_store {
	CONFIG_STORE_TOKEN = 0,		/* on the token itself (store_token.c) */
	CONFIG_STORE_ETCD		/* in etcd (store_etcd.c) */
};

struct config {
	char listen[256];
	char health_listen[256];		/* "": no health port */
	char metrics_listen[256];		/* "": no metrics */
	char ca_file[CONFIG_PATH_MAX];
	char cert_file[CONFIG_PATH_MAX];
	char key_file[CONFIG_PATH_MAX];
	char crl_file[CONFIG_PATH_MAX];		/* "" when not configured */
	unsigned int max_connections;		/* 0: from the limit */
	unsigned int handshake_timeout_ms;	/* 100 .. 600000 */
	unsigned int idle_timeout_ms;		/* 1000 .. 86400000 */
	unsigned int workers;
	size_t max_data_bytes;
	size_t max_message_bytes;
	enum log_level log_level;

	char hsm_module[CONFIG_PATH_MAX];
	char hsm_token[33];		/* PKCS#11 labels are at most 32 bytes */
	char hsm_pin_file[CONFIG_PATH_MAX];

	char policy_file[CONFIG_PATH_MAX];
	char audit_dir[CONFIG_PATH_MAX];
	size_t audit_segment_bytes;		/* 4 KiB .. 1 GiB */
	unsigned int audit_checkpoint_every;	/* 1 .. 1000000 */
	unsigned int audit_checkpoint_seconds;	/* 0 .. 86400 */
	int audit_sync;				/* 1: fdatasync every batch */
	int audit_new_chain_on_tamper;		/* on_tamper = new-chain */
	char audit_publish[CONFIG_PATH_MAX];	/* "": checkpoints not published */
	int audit_v2;				/* 0: no tree, seals, anchor */
	unsigned int audit_max_watchers;	/* 1 .. 1024 */
	unsigned int audit_watch_queue;		/* 16 .. 1000000 */

	int64_t keys_destroy_wait;		/* 1 s .. 1 year */
	int64_t keys_min_rotation_period;	/* 1 s .. 1 year */
	unsigned int keys_sync_ms;		/* 50 .. 60000 */
	char keys_lock_file[CONFIG_PATH_MAX];

	enum config_store store_backend;
	char store_endpoints[1024];
	char store_ca[CONFIG_PATH_MAX];		/* "": plaintext */
	char store_cert[CONFIG_PATH_MAX];
	char store_key[CONFIG_PATH_MAX];
	char store_prefix[201];			/* STORE_ETCD_PREFIX_MAX */
	unsigned int store_timeout_ms;		/* 100 .. 60000 */
};

/* Fills cfg with the defaults above (paths relative to the current directory). */
void config_defaults(struct config *cfg);

/*
 * Loads path over the defaults.  Unknown sections or keys, bad numbers and
 * over-long values are errors: returns KMS_ERR_CONFIG with a message naming
 * the line in st, and leaves *cfg in an unspecified state.
 */
struct kms_status;
int config_load(const char *path, struct config *cfg, struct kms_status *st);

#endif /* KMS_CONFIG_H */
