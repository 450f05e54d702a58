/*
 * config.c: the kmsd configuration file, parsed with inih (see config.h).
 *
 * Limits, beyond the ranges listed in config.h:
 *   - max_message_bytes is at most 128 MiB and at least max_data_bytes
 *     + 64 KiB, so that a Sign or Verify request carrying the largest
 *     accepted `data` still fits with its other fields;
 *   - a line is at most 198 bytes (see below), a value at most the size
 *     of its field in struct config;
 *   - the file is at most 1 MiB and holds no NUL byte.
 *
 * The file is read whole and fed to inih line by line (see inifile.h), so
 * that every message names the right line.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "inifile.h"
#include "kmserr.h"
#include "log.h"

#define MAX_DATA_LIMIT (64ULL << 20)
#define MAX_MESSAGE_LIMIT (128ULL << 20)
#define MESSAGE_OVERHEAD (64ULL << 10)

struct parse_ctx {
	struct inifile_parse ip;	/* the file, its text and first error */
	struct config *cfg;
	char dir[CONFIG_PATH_MAX];	/* the file's, for relative paths */
	int data_line;			/* where max_data_bytes was set */
	int message_line;		/* where max_message_bytes was set */
};

void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen, "127.0.0.1:7443");
	strcpy(cfg->ca_file, "pki/ca.pem");
	strcpy(cfg->cert_file, "pki/server.pem");
	strcpy(cfg->key_file, "pki/server.key");
	cfg->handshake_timeout_ms = 5000;
	cfg->idle_timeout_ms = 300000;
	cfg->workers = 2;
	cfg->max_data_bytes = 1024 * 1024;
	cfg->max_message_bytes = 4 * 1024 * 1024;
	cfg->log_level = LOG_LEVEL_INFO;
	strcpy(cfg->hsm_module, "/usr/lib/softhsm/libsofthsm2.so");
	strcpy(cfg->hsm_token, "kms");
	strcpy(cfg->hsm_pin_file, "pin");
	strcpy(cfg->policy_file, "policy.conf");
	strcpy(cfg->audit_dir, "audit");
	cfg->audit_segment_bytes = 64 * 1024 * 1024;
	cfg->audit_checkpoint_every = 1000;
	cfg->audit_checkpoint_seconds = 60;
	cfg->audit_sync = 1;
	cfg->audit_v2 = 1;
	cfg->audit_max_watchers = 16;
	cfg->audit_watch_queue = 1024;
	cfg->keys_destroy_wait = 86400;
	cfg->keys_min_rotation_period = 3600;
	cfg->keys_sync_ms = 1000;
	strcpy(cfg->keys_lock_file, "keys.lock");
	cfg->store_backend = CONFIG_STORE_TOKEN;
	strcpy(cfg->store_prefix, "/kms/");
	cfg->store_timeout_ms = 2000;
}

static int fail(struct parse_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records the first error, naming the file and line; returns 0 for inih. */
static int
fail(struct parse_ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	inifile_vfail(&c->ip, fmt, ap);
	va_end(ap);
	return 0;
}

static int
set_string(struct parse_ctx *c, char *dst, size_t cap, const char *key,
    const char *value)
{
	if (*value == '\0')
		return fail(c, "%s is empty", key);
	if (strlen(value) >= cap)
		return fail(c, "%s is longer than %zu bytes", key, cap - 1);
	strcpy(dst, value);
	return 1;
}

/* A path; relative ones are taken relative to the config file. */
static int
set_path(struct parse_ctx *c, char *dst, const char *key, const char *value)
{
	char tmp[CONFIG_PATH_MAX];

	if (*value == '\0')
		return fail(c, "%s is empty", key);
	if (inifile_join_path(tmp, sizeof(tmp), c->dir, value) != 0)
		return fail(c, "%s is longer than %d bytes", key,
		    CONFIG_PATH_MAX - 1);
	strcpy(dst, tmp);
	return 1;
}

/* A decimal number in min..max: no sign, no spaces, no other base. */
static int
set_number(struct parse_ctx *c, unsigned long long *out, const char *key,
    const char *value, unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	char *end;

	if (*value < '0' || *value > '9')
		return fail(c, "%s: \"%.64s\" is not a number", key, value);
	errno = 0;
	v = strtoull(value, &end, 10);
	if (errno != 0 || *end != '\0')
		return fail(c, "%s: \"%.64s\" is not a number", key, value);
	if (v < min || v > max)
		return fail(c, "%s must be in %llu..%llu, not %llu", key, min,
		    max, v);
	*out = v;
	return 1;
}

/* set_number for an unsigned int (max fits in one). */
static int
set_uint(struct parse_ctx *c, unsigned int *out, const char *key,
    const char *value, unsigned int min, unsigned int max)
{
	unsigned long long n;

	if (!set_number(c, &n, key, value, min, max))
		return 0;
	*out = (unsigned int)n;
	return 1;
}

static int
set_bool(struct parse_ctx *c, int *out, const char *key, const char *value)
{
	if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 ||
	    strcmp(value, "1") == 0)
		*out = 1;
	else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0 ||
	    strcmp(value, "0") == 0)
		*out = 0;
	else
		return fail(c, "%s must be yes or no, not \"%.64s\"", key,
		    value);
	return 1;
}

/* host:port or [v6]:port with a decimal port 0..65535; returns 0 or -1. */
static int
check_listen(const char *v)
{
	const char *colon, *p;
	unsigned long port = 0;

	if (v[0] == '[') {
		const char *rb = strchr(v, ']');

		if (rb == NULL || rb == v + 1 || rb[1] != ':')
			return -1;
		colon = rb + 1;
	} else {
		/* A bare IPv6 address would be ambiguous: it needs brackets. */
		colon = strchr(v, ':');
		if (colon == NULL || colon == v ||
		    strchr(colon + 1, ':') != NULL)
			return -1;
	}
	if (colon[1] == '\0' || strlen(colon + 1) > 5)
		return -1;
	for (p = colon + 1; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	return port > 65535 ? -1 : 0;
}

static int
server_key(struct parse_ctx *c, const char *key, const char *value)
{
	struct config *cfg = c->cfg;
	unsigned long long n;
	enum log_level lvl;

	if (strcmp(key, "listen") == 0) {
		if (check_listen(value) != 0)
			return fail(c, "listen: \"%.64s\" is not HOST:PORT or "
			    "[IPV6]:PORT with a port 0..65535", value);
		return set_string(c, cfg->listen, sizeof(cfg->listen), key,
		    value);
	}
	if (strcmp(key, "ca") == 0)
		return set_path(c, cfg->ca_file, key, value);
	if (strcmp(key, "cert") == 0)
		return set_path(c, cfg->cert_file, key, value);
	if (strcmp(key, "key") == 0)
		return set_path(c, cfg->key_file, key, value);
	if (strcmp(key, "crl") == 0)
		return set_path(c, cfg->crl_file, key, value);
	if (strcmp(key, "max_connections") == 0)
		return set_uint(c, &cfg->max_connections, key, value, 0,
		    1000000);
	if (strcmp(key, "handshake_timeout_ms") == 0)
		return set_uint(c, &cfg->handshake_timeout_ms, key, value, 100,
		    600000);
	if (strcmp(key, "idle_timeout_ms") == 0)
		return set_uint(c, &cfg->idle_timeout_ms, key, value, 1000,
		    86400000);
	if (strcmp(key, "workers") == 0)
		return set_uint(c, &cfg->workers, key, value, 1, 64);
	if (strcmp(key, "max_data_bytes") == 0) {
		if (!set_number(c, &n, key, value, 1, MAX_DATA_LIMIT))
			return 0;
		cfg->max_data_bytes = (size_t)n;
		c->data_line = c->ip.cur.line;
		return 1;
	}
	if (strcmp(key, "max_message_bytes") == 0) {
		if (!set_number(c, &n, key, value, MESSAGE_OVERHEAD + 1,
		    MAX_MESSAGE_LIMIT))
			return 0;
		cfg->max_message_bytes = (size_t)n;
		c->message_line = c->ip.cur.line;
		return 1;
	}
	if (strcmp(key, "health_listen") == 0)
		return set_string(c, cfg->health_listen,
		    sizeof(cfg->health_listen), key, value);
	if (strcmp(key, "log_level") == 0) {
		if (log_level_parse(value, &lvl) != 0)
			return fail(c, "log_level: \"%.64s\" is not one of "
			    "error, warn, info, debug", value);
		cfg->log_level = lvl;
		return 1;
	}
	return fail(c, "unknown key \"%.64s\" in [server]", key);
}

static int
hsm_key(struct parse_ctx *c, const char *key, const char *value)
{
	struct config *cfg = c->cfg;

	if (strcmp(key, "module") == 0)
		return set_path(c, cfg->hsm_module, key, value);
	if (strcmp(key, "token") == 0) {
		if (strlen(value) > sizeof(cfg->hsm_token) - 1)
			return fail(c, "token: \"%.64s\" is %zu bytes, a "
			    "PKCS#11 token label is at most %zu", value,
			    strlen(value), sizeof(cfg->hsm_token) - 1);
		return set_string(c, cfg->hsm_token, sizeof(cfg->hsm_token),
		    key, value);
	}
	if (strcmp(key, "pin_file") == 0)
		return set_path(c, cfg->hsm_pin_file, key, value);
	return fail(c, "unknown key \"%.64s\" in [hsm]", key);
}

static int
audit_key(struct parse_ctx *c, const char *key, const char *value)
{
	struct config *cfg = c->cfg;
	unsigned long long n;

	if (strcmp(key, "dir") == 0)
		return set_path(c, cfg->audit_dir, key, value);
	if (strcmp(key, "segment_bytes") == 0) {
		if (!set_number(c, &n, key, value, 4096, 1ULL << 30))
			return 0;
		cfg->audit_segment_bytes = (size_t)n;
		return 1;
	}
	if (strcmp(key, "checkpoint_every") == 0)
		return set_uint(c, &cfg->audit_checkpoint_every, key, value, 1,
		    1000000);
	if (strcmp(key, "checkpoint_seconds") == 0)
		return set_uint(c, &cfg->audit_checkpoint_seconds, key, value, 0,
		    86400);
	if (strcmp(key, "sync") == 0)
		return set_bool(c, &cfg->audit_sync, key, value);
	if (strcmp(key, "publish") == 0)
		return set_path(c, cfg->audit_publish, key, value);
	if (strcmp(key, "v2") == 0)
		return set_bool(c, &cfg->audit_v2, key, value);
	if (strcmp(key, "max_watchers") == 0)
		return set_uint(c, &cfg->audit_max_watchers, key, value, 1, 1024);
	if (strcmp(key, "watch_queue") == 0)
		return set_uint(c, &cfg->audit_watch_queue, key, value, 16,
		    1000000);
	if (strcmp(key, "on_tamper") == 0) {
		if (strcmp(value, "refuse") == 0)
			cfg->audit_new_chain_on_tamper = 0;
		else if (strcmp(value, "new-chain") == 0)
			cfg->audit_new_chain_on_tamper = 1;
		else
			return fail(c, "on_tamper is refuse or new-chain");
		return 1;
	}
	return fail(c, "unknown key \"%.64s\" in [audit]", key);
}

static int
keys_key(struct parse_ctx *c, const char *key, const char *value)
{
	struct config *cfg = c->cfg;
	unsigned long long n;

	if (strcmp(key, "destroy_wait") == 0) {
		if (!set_number(c, &n, key, value, 1, 365ULL * 86400))
			return 0;
		cfg->keys_destroy_wait = (int64_t)n;
		return 1;
	}
	if (strcmp(key, "min_rotation_period") == 0) {
		if (!set_number(c, &n, key, value, 1, 365ULL * 86400))
			return 0;
		cfg->keys_min_rotation_period = (int64_t)n;
		return 1;
	}
	if (strcmp(key, "lock_file") == 0)
		return set_path(c, cfg->keys_lock_file, key, value);
	if (strcmp(key, "sync_ms") == 0)
		return set_uint(c, &cfg->keys_sync_ms, key, value, 50, 60000);
	return fail(c, "unknown key \"%.64s\" in [keys]", key);
}

static int
store_key(struct parse_ctx *c, const char *key, const char *value)
{
	struct config *cfg = c->cfg;

	if (strcmp(key, "backend") == 0) {
		if (strcmp(value, "token") == 0)
			cfg->store_backend = CONFIG_STORE_TOKEN;
		else if (strcmp(value, "etcd") == 0)
			cfg->store_backend = CONFIG_STORE_ETCD;
		else
			return fail(c, "backend is token or etcd, not "
			    "\"%.64s\"", value);
		return 1;
	}
	if (strcmp(key, "endpoints") == 0)
		return set_string(c, cfg->store_endpoints,
		    sizeof(cfg->store_endpoints), key, value);
	if (strcmp(key, "ca") == 0)
		return set_path(c, cfg->store_ca, key, value);
	if (strcmp(key, "cert") == 0)
		return set_path(c, cfg->store_cert, key, value);
	if (strcmp(key, "key") == 0)
		return set_path(c, cfg->store_key, key, value);
	if (strcmp(key, "prefix") == 0) {
		if (*value != '/' || strchr(value, ' ') != NULL)
			return fail(c, "prefix must start with / and hold no "
			    "space");
		return set_string(c, cfg->store_prefix,
		    sizeof(cfg->store_prefix), key, value);
	}
	if (strcmp(key, "timeout_ms") == 0)
		return set_uint(c, &cfg->store_timeout_ms, key, value, 100,
		    60000);
	return fail(c, "unknown key \"%.64s\" in [store]", key);
}

static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;

	if (c->ip.st->err != 0)
		return 0;
	if (strcmp(section, "server") == 0)
		return server_key(c, key, value);
	if (strcmp(section, "hsm") == 0)
		return hsm_key(c, key, value);
	if (strcmp(section, "policy") == 0) {
		if (strcmp(key, "file") == 0)
			return set_path(c, c->cfg->policy_file, key, value);
		return fail(c, "unknown key \"%.64s\" in [policy]", key);
	}
	if (strcmp(section, "audit") == 0)
		return audit_key(c, key, value);
	if (strcmp(section, "metrics") == 0) {
		if (strcmp(key, "listen") == 0)
			return set_string(c, c->cfg->metrics_listen,
			    sizeof(c->cfg->metrics_listen), key, value);
		return fail(c, "unknown key \"%.64s\" in [metrics]", key);
	}
	if (strcmp(section, "keys") == 0)
		return keys_key(c, key, value);
	if (strcmp(section, "store") == 0)
		return store_key(c, key, value);
	if (*section == '\0')
		return fail(c, "\"%.64s\" is outside any [section]", key);
	return fail(c, "unknown section [%.64s]", section);
}

/* What the [store] keys must say together. */
static int
check_store(const char *path, const struct config *cfg,
    struct kms_status *st)
{
	int tls = (cfg->store_ca[0] != '\0') + (cfg->store_cert[0] != '\0') +
	    (cfg->store_key[0] != '\0');

	/* With backend = token they may name etcd for --migrate-store. */
	if (cfg->store_endpoints[0] == '\0') {
		if (cfg->store_backend == CONFIG_STORE_ETCD)
			return kms_status_set(st, KMS_ERR_CONFIG, "%s: [store] "
			    "backend = etcd needs endpoints (host:port, ...)",
			    path);
		if (tls != 0)
			return kms_status_set(st, KMS_ERR_CONFIG, "%s: [store] "
			    "ca, cert and key are for the etcd endpoints, and "
			    "there are none", path);
		return 0;
	}
	if (tls != 0 && tls != 3)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: [store] ca, cert "
		    "and key go together (TLS to etcd), or none of them "
		    "(plaintext, loopback endpoints only)", path);
	return 0;
}

int
config_load(const char *path, struct config *cfg, struct kms_status *st)
{
	struct kms_status local;
	struct parse_ctx c;
	const char *slash;
	char tmp[CONFIG_PATH_MAX];
	char *paths[7];
	size_t i;
	int r, line;

	if (st == NULL)
		st = &local;
	kms_status_clear(st);
	memset(&c, 0, sizeof(c));
	c.cfg = cfg;
	c.ip.path = path;
	c.ip.st = st;
	if ((slash = strrchr(path, '/')) != NULL) {
		if ((size_t)(slash - path) >= sizeof(c.dir))
			return kms_status_set(st, KMS_ERR_CONFIG,
			    "%s: path too long", path);
		memcpy(c.dir, path, (size_t)(slash - path));
		c.dir[slash - path] = '\0';
		if (c.dir[0] == '\0')
			strcpy(c.dir, "/");
	}
	/* The defaults' relative paths are relative to the file, too. */
	paths[0] = cfg->ca_file;
	paths[1] = cfg->cert_file;
	paths[2] = cfg->key_file;
	paths[3] = cfg->hsm_pin_file;
	paths[4] = cfg->policy_file;
	paths[5] = cfg->audit_dir;
	paths[6] = cfg->keys_lock_file;
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		if (inifile_join_path(tmp, sizeof(tmp), c.dir, paths[i]) != 0)
			return kms_status_set(st, KMS_ERR_CONFIG,
			    "%s: path too long", path);
		strcpy(paths[i], tmp);
	}
	if ((r = inifile_parse_file(&c.ip, handler, &c)) != 0)
		return r;
	if ((unsigned long long)cfg->max_message_bytes <
	    (unsigned long long)cfg->max_data_bytes + MESSAGE_OVERHEAD) {
		line = c.data_line > c.message_line ? c.data_line :
		    c.message_line;
		return kms_status_set(st, KMS_ERR_CONFIG, "%s:%d: "
		    "max_message_bytes (%zu) must be at least max_data_bytes "
		    "(%zu) + 65536", path, line, cfg->max_message_bytes,
		    cfg->max_data_bytes);
	}
	return check_store(path, cfg, st);
}
