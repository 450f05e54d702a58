/*
 * config.c: the kmsd configuration file, parsed with inih (see config.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config.h"
#include "kmserr.h"
#include "log.h"

struct parse_ctx {
	struct config *cfg;
	const char *path;
	char dir[CONFIG_PATH_MAX];	/* directory of the file, for relative paths */
	struct kms_status *st;
	int line;
};

void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen, "127.0.0.1:7443");
	strcpy(cfg->ca_file, "pki/ca.pem");
	strcpy(cfg->cert_file, "pki/server.pem");
	strcpy(cfg->key_file, "pki/server.key");
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
}

static int fail(struct parse_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct parse_ctx *c, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kms_status_set(c->st, KMS_ERR_CONFIG, "%s:%d: %s", c->path, c->line,
	    msg);
	return 0;
}

/*
 * inih as packaged does not pass line numbers to the handler: count the
 * lines as they are read instead (the handler runs on the line last read).
 */
struct line_reader {
	FILE *f;
	struct parse_ctx *c;
};

static char *
read_line(char *buf, int size, void *stream)
{
	struct line_reader *lr = stream;
	char *r = fgets(buf, size, lr->f);

	if (r != NULL)
		lr->c->line++;
	return r;
}

static int
set_string(struct parse_ctx *c, char *dst, size_t cap, const char *key,
    const char *value)
{
	if (strlen(value) >= cap)
		return fail(c, "%s is too long", key);
	strcpy(dst, value);
	return 1;
}

/* A path; relative ones are taken relative to the config file. */
static int
set_path(struct parse_ctx *c, char *dst, const char *key, const char *value)
{
	int n;

	if (*value == '\0')
		return fail(c, "%s is empty", key);
	if (value[0] == '/' || c->dir[0] == '\0')
		n = snprintf(dst, CONFIG_PATH_MAX, "%s", value);
	else
		n = snprintf(dst, CONFIG_PATH_MAX, "%s/%s", c->dir, value);
	if (n < 0 || n >= CONFIG_PATH_MAX)
		return fail(c, "%s is too long", key);
	return 1;
}

static int
set_number(struct parse_ctx *c, unsigned long long *out, const char *key,
    const char *value, unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	char *end, lo[32], hi[32], range[80];

	errno = 0;
	if (*value < '0' || *value > '9' ||
	    ((v = strtoull(value, &end, 10)), errno != 0) || *end != '\0')
		return fail(c, "%s: \"%s\" is not a number", key, value);
	if (v < min || v > max) {
		snprintf(lo, sizeof(lo), "%llu", min);
		snprintf(hi, sizeof(hi), "%llu", max);
		snprintf(range, sizeof(range), "%s..%s", lo, hi);
		return fail(c, "%s must be in %s", key, range);
	}
	*out = v;
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
		return fail(c, "%s must be yes or no, not \"%s\"", key, value);
	return 1;
}

/* host:port or [v6]:port with a port 0..65535. */
static int
check_listen(const char *v)
{
	const char *colon;
	char *end;
	long port;

	if (v[0] == '[') {
		const char *rb = strchr(v, ']');

		if (rb == NULL || rb == v + 1 || rb[1] != ':')
			return -1;
		colon = rb + 1;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL || colon == v || strchr(v, ':') != colon)
			return -1;
	}
	if (colon[1] == '\0')
		return -1;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 0 || port > 65535 ||
	    colon[1] < '0' || colon[1] > '9')
		return -1;
	return 0;
}

static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;
	struct config *cfg = c->cfg;
	unsigned long long n;
	enum log_level lvl;

	if (c->st->err != 0)
		return 0;
	if (strcmp(section, "server") == 0) {
		if (strcmp(key, "listen") == 0) {
			if (check_listen(value) != 0)
				return fail(c, "listen: \"%s\" is not "
				    "HOST:PORT", value);
			return set_string(c, cfg->listen, sizeof(cfg->listen),
			    key, value);
		}
		if (strcmp(key, "ca") == 0)
			return set_path(c, cfg->ca_file, key, value);
		if (strcmp(key, "cert") == 0)
			return set_path(c, cfg->cert_file, key, value);
		if (strcmp(key, "key") == 0)
			return set_path(c, cfg->key_file, key, value);
		if (strcmp(key, "workers") == 0) {
			if (!set_number(c, &n, key, value, 1, 64))
				return 0;
			cfg->workers = (unsigned int)n;
			return 1;
		}
		if (strcmp(key, "max_data_bytes") == 0) {
			if (!set_number(c, &n, key, value, 1, 64 << 20))
				return 0;
			cfg->max_data_bytes = (size_t)n;
			return 1;
		}
		if (strcmp(key, "max_message_bytes") == 0) {
			if (!set_number(c, &n, key, value, 4096, 128 << 20))
				return 0;
			cfg->max_message_bytes = (size_t)n;
			return 1;
		}
		if (strcmp(key, "log_level") == 0) {
			if (log_level_parse(value, &lvl) != 0)
				return fail(c, "log_level: \"%s\" is not one "
				    "of error, warn, info, debug", value);
			cfg->log_level = lvl;
			return 1;
		}
	} else if (strcmp(section, "hsm") == 0) {
		if (strcmp(key, "module") == 0)
			return set_path(c, cfg->hsm_module, key, value);
		if (strcmp(key, "token") == 0) {
			if (*value == '\0' || strlen(value) > 32)
				return fail(c, "token: a PKCS#11 token label is "
				    "1 to 32 bytes");
			return set_string(c, cfg->hsm_token,
			    sizeof(cfg->hsm_token), key, value);
		}
		if (strcmp(key, "pin_file") == 0)
			return set_path(c, cfg->hsm_pin_file, key, value);
	} else if (strcmp(section, "policy") == 0) {
		if (strcmp(key, "file") == 0)
			return set_path(c, cfg->policy_file, key, value);
	} else if (strcmp(section, "audit") == 0) {
		if (strcmp(key, "dir") == 0)
			return set_path(c, cfg->audit_dir, key, value);
		if (strcmp(key, "segment_bytes") == 0) {
			if (!set_number(c, &n, key, value, 4096, 1ULL << 30))
				return 0;
			cfg->audit_segment_bytes = (size_t)n;
			return 1;
		}
		if (strcmp(key, "checkpoint_every") == 0) {
			if (!set_number(c, &n, key, value, 1, 1000000))
				return 0;
			cfg->audit_checkpoint_every = (unsigned int)n;
			return 1;
		}
		if (strcmp(key, "checkpoint_seconds") == 0) {
			if (!set_number(c, &n, key, value, 0, 86400))
				return 0;
			cfg->audit_checkpoint_seconds = (unsigned int)n;
			return 1;
		}
		if (strcmp(key, "sync") == 0)
			return set_bool(c, &cfg->audit_sync, key, value);
	} else
		return fail(c, "unknown section [%s]", section);
	return fail(c, "unknown key \"%s\" in [%s]", key, section);
}

int
config_load(const char *path, struct config *cfg, struct kms_status *st)
{
	struct parse_ctx c;
	const char *slash;
	FILE *f;
	int r;

	memset(&c, 0, sizeof(c));
	c.cfg = cfg;
	c.path = path;
	c.st = st;
	kms_status_clear(st);
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
	if (c.dir[0] != '\0') {
		char tmp[CONFIG_PATH_MAX];
		char *paths[] = { cfg->ca_file, cfg->cert_file, cfg->key_file,
		    cfg->hsm_pin_file, cfg->policy_file, cfg->audit_dir };
		size_t i;

		for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			if (paths[i][0] == '/')
				continue;
			if (snprintf(tmp, sizeof(tmp), "%s/%s", c.dir,
			    paths[i]) >= (int)sizeof(tmp))
				return kms_status_set(st, KMS_ERR_CONFIG,
				    "%s: path too long", path);
			strcpy(paths[i], tmp);
		}
	}
	if ((f = fopen(path, "r")) == NULL)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: %s", path,
		    strerror(errno));
	{
		struct line_reader lr = { f, &c };

		r = ini_parse_stream(read_line, &lr, handler, &c);
	}
	fclose(f);
	if (st->err != 0)
		return st->err;
	if (r != 0)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s:%d: syntax "
		    "error (expected [section] or key = value)", path, r);
	if (cfg->max_message_bytes < cfg->max_data_bytes + 64 * 1024)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: "
		    "max_message_bytes (%zu) must exceed max_data_bytes (%zu) "
		    "by at least 64 KiB", path, cfg->max_message_bytes,
		    cfg->max_data_bytes);
	return 0;
}
