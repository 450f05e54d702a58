/*
 * p11conf.c: the PKCS#11 module's configuration (see p11conf.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "inifile.h"
#include "kmserr.h"
#include "p11conf.h"

struct parse_ctx {
	struct inifile_parse ip;	/* the file, its text and first error */
	struct p11conf *conf;
	char dir[P11CONF_PATH_MAX];	/* the file's, for relative paths */
};

static int
handler(void *arg, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = arg;
	struct inifile_parse *ip = &c->ip;
	struct p11conf *conf = c->conf;
	char *dst = NULL, *end;
	long n;

	if (ip->st->err != 0)
		return 0;
	if (strcmp(section, "client") != 0)
		return inifile_fail(ip, "unknown section [%s] (expected "
		    "[client])", section);
	if (*value == '\0')
		return inifile_fail(ip, "%s has no value", key);
	if (strcmp(key, "addr") == 0) {
		if (strlen(value) >= sizeof(conf->addr))
			return inifile_fail(ip, "addr is too long");
		strcpy(conf->addr, value);
		return 1;
	}
	if (strcmp(key, "prefix") == 0) {
		if (strlen(value) > P11CONF_PREFIX_MAX)
			return inifile_fail(ip, "prefix is longer than %d "
			    "characters", P11CONF_PREFIX_MAX);
		strcpy(conf->prefix, value);
		return 1;
	}
	if (strcmp(key, "timeout") == 0) {
		n = strtol(value, &end, 10);
		if (*end != '\0' || n < 1 || n > P11CONF_TIMEOUT_MAX)
			return inifile_fail(ip, "timeout must be 1..%d seconds",
			    P11CONF_TIMEOUT_MAX);
		conf->timeout = (int)n;
		return 1;
	}
	if (strcmp(key, "ca") == 0)
		dst = conf->ca;
	else if (strcmp(key, "cert") == 0)
		dst = conf->cert;
	else if (strcmp(key, "key") == 0)
		dst = conf->key;
	else
		return inifile_fail(ip, "unknown key %s (expected addr, ca, "
		    "cert, key, prefix or timeout)", key);
	if (inifile_join_path(dst, P11CONF_PATH_MAX, c->dir, value) != 0)
		return inifile_fail(ip, "%s: path too long", key);
	return 1;
}

static int
from_file(const char *path, struct p11conf *conf, struct kms_status *st)
{
	struct parse_ctx c;
	const char *slash;
	int r;

	memset(&c, 0, sizeof(c));
	c.conf = conf;
	c.ip.path = path;
	c.ip.st = st;
	if (strlen(path) >= sizeof(conf->source))
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: path too long",
		    path);
	strcpy(conf->source, path);
	if ((slash = strrchr(path, '/')) != NULL) {
		memcpy(c.dir, path, (size_t)(slash - path));
		c.dir[slash - path] = '\0';
		if (c.dir[0] == '\0')
			strcpy(c.dir, "/");
	}
	if ((r = inifile_parse_file(&c.ip, handler, &c)) != 0)
		return r;
	if (conf->addr[0] == '\0' || conf->ca[0] == '\0' ||
	    conf->cert[0] == '\0' || conf->key[0] == '\0')
		return kms_status_set(st, KMS_ERR_CONFIG, "%s:%d: [client] "
		    "needs addr, ca, cert and key", path, c.ip.cur.line);
	return 0;
}

static const char *
env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : dflt;
}

/* kmsctl's defaults: $KMS_ADDR, and $KMS_IDENTITY's files in $KMS_HOME. */
static int
from_env(struct p11conf *conf, struct kms_status *st)
{
	const char *home = env_or("KMS_HOME", "var");
	const char *id = env_or("KMS_IDENTITY", "ci");
	int n1, n2, n3;

	if (id[0] == '.' || strchr(id, '/') != NULL)
		return kms_status_set(st, KMS_ERR_CONFIG, "KMS_IDENTITY: a "
		    "dev identity name like ci");
	if ((size_t)snprintf(conf->addr, sizeof(conf->addr), "%s",
	    env_or("KMS_ADDR", "127.0.0.1:7443")) >= sizeof(conf->addr))
		return kms_status_set(st, KMS_ERR_CONFIG, "KMS_ADDR is too "
		    "long");
	n1 = snprintf(conf->ca, sizeof(conf->ca), "%s/pki/ca.pem", home);
	n2 = snprintf(conf->cert, sizeof(conf->cert), "%s/pki/clients/%s.pem",
	    home, id);
	n3 = snprintf(conf->key, sizeof(conf->key), "%s/pki/clients/%s.key",
	    home, id);
	if (n1 < 0 || n2 < 0 || n3 < 0 || (size_t)n1 >= sizeof(conf->ca) ||
	    (size_t)n2 >= sizeof(conf->cert) ||
	    (size_t)n3 >= sizeof(conf->key))
		return kms_status_set(st, KMS_ERR_CONFIG, "KMS_HOME is too "
		    "long");
	return 0;
}

int
p11conf_load(const char *path, struct p11conf *conf, struct kms_status *st)
{
	memset(conf, 0, sizeof(*conf));
	conf->timeout = P11CONF_TIMEOUT_DEFAULT;
	if (path != NULL && *path != '\0')
		return from_file(path, conf, st);
	return from_env(conf, st);
}
