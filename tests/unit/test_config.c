/*
 * test_config.c: the kmsd configuration file: defaults, a full file,
 * relative paths, and every kind of error naming its line.
 */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "fileio.h"
#include "inifile.h"
#include "kmserr.h"
#include "log.h"

struct fixture {
	char dir[64];
	char path[128];
	struct config cfg;
	struct kms_status st;
};

static int
setup(void **state)
{
	struct fixture *fx;

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/kms-config.XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/kmsd.conf", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	unlink(fx->path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Writes text to the fixture's file and loads it over the defaults. */
static int
load(struct fixture *fx, const char *text)
{
	FILE *f;

	assert_non_null(f = fopen(fx->path, "w"));
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	config_defaults(&fx->cfg);
	return config_load(fx->path, &fx->cfg, &fx->st);
}

static void
assert_loads(struct fixture *fx, const char *text)
{
	int r = load(fx, text);

	if (r != 0)
		fail_msg("refused (%d): %s\n--\n%s", r, fx->st.msg, text);
	assert_int_equal(fx->st.err, 0);
}

/*
 * text is refused with KMS_ERR_CONFIG and a message "PATH:LINE: ..."
 * holding want.
 */
static void
assert_refused(struct fixture *fx, const char *text, int line,
    const char *want)
{
	char prefix[160];
	int r = load(fx, text);

	if (r != KMS_ERR_CONFIG)
		fail_msg("got %d (%s), expected KMS_ERR_CONFIG\n--\n%s", r,
		    fx->st.msg, text);
	assert_int_equal(fx->st.err, KMS_ERR_CONFIG);
	snprintf(prefix, sizeof(prefix), "%s:%d: ", fx->path, line);
	if (strncmp(fx->st.msg, prefix, strlen(prefix)) != 0)
		fail_msg("message \"%s\" does not start with \"%s\"",
		    fx->st.msg, prefix);
	if (strstr(fx->st.msg, want) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", fx->st.msg, want);
}

static void
test_defaults(void **state)
{
	struct config cfg;

	(void)state;
	memset(&cfg, 0xa5, sizeof(cfg));
	config_defaults(&cfg);
	assert_string_equal(cfg.listen, "127.0.0.1:7443");
	assert_string_equal(cfg.ca_file, "pki/ca.pem");
	assert_string_equal(cfg.cert_file, "pki/server.pem");
	assert_string_equal(cfg.key_file, "pki/server.key");
	assert_int_equal(cfg.workers, 2);
	assert_int_equal(cfg.max_data_bytes, 1048576);
	assert_int_equal(cfg.max_message_bytes, 4194304);
	assert_int_equal(cfg.log_level, LOG_LEVEL_INFO);
	assert_string_equal(cfg.hsm_module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(cfg.hsm_token, "kms");
	assert_string_equal(cfg.hsm_pin_file, "pin");
	assert_string_equal(cfg.policy_file, "policy.conf");
	assert_string_equal(cfg.audit_dir, "audit");
	assert_int_equal(cfg.audit_segment_bytes, 67108864);
	assert_int_equal(cfg.audit_checkpoint_every, 1000);
	assert_int_equal(cfg.audit_checkpoint_seconds, 60);
	assert_int_equal(cfg.audit_sync, 1);
	assert_int_equal(cfg.keys_destroy_wait, 86400);
	assert_int_equal(cfg.keys_min_rotation_period, 3600);
	assert_int_equal(cfg.keys_sync_ms, 1000);
	assert_string_equal(cfg.keys_lock_file, "keys.lock");
}

static void
test_empty_file_keeps_defaults(void **state)
{
	struct fixture *fx = *state;
	char want[256];

	/* Comments and blank lines only. */
	assert_loads(fx, "; nothing\n\n# at all\n   ; indented comment\n");
	assert_string_equal(fx->cfg.listen, "127.0.0.1:7443");
	assert_int_equal(fx->cfg.workers, 2);
	assert_string_equal(fx->cfg.hsm_module,
	    "/usr/lib/softhsm/libsofthsm2.so");
	/* The default relative paths are relative to the file, too. */
	snprintf(want, sizeof(want), "%s/pki/ca.pem", fx->dir);
	assert_string_equal(fx->cfg.ca_file, want);
	snprintf(want, sizeof(want), "%s/pin", fx->dir);
	assert_string_equal(fx->cfg.hsm_pin_file, want);
	snprintf(want, sizeof(want), "%s/policy.conf", fx->dir);
	assert_string_equal(fx->cfg.policy_file, want);
	snprintf(want, sizeof(want), "%s/audit", fx->dir);
	assert_string_equal(fx->cfg.audit_dir, want);
	snprintf(want, sizeof(want), "%s/keys.lock", fx->dir);
	assert_string_equal(fx->cfg.keys_lock_file, want);
}

static void
test_full_file(void **state)
{
	struct fixture *fx = *state;
	char want[256];

	assert_loads(fx,
	    "; a complete configuration\n"
	    "[server]\n"
	    "listen = 0.0.0.0:9443        ; inline comment\n"
	    "ca = /etc/kms/ca.pem\n"
	    "cert = certs/server.pem\n"
	    "key = ../keys/server.key\n"
	    "workers = 64\n"
	    "max_data_bytes = 67108864\n"
	    "max_message_bytes = 134217728\n"
	    "log_level = debug\n"
	    "\n"
	    "[hsm]\n"
	    "module = /opt/hsm/libpkcs11.so\n"
	    "token = 0123456789abcdef0123456789abcdef\n"
	    "pin_file = secret/pin\n"
	    "[policy]\n"
	    "file = /etc/kms/policy.conf\n"
	    "[audit]\n"
	    "dir = log/audit\n"
	    "segment_bytes = 4096\n"
	    "checkpoint_every = 1000000\n"
	    "checkpoint_seconds = 0\n"
	    "sync = no\n");
	assert_string_equal(fx->cfg.listen, "0.0.0.0:9443");
	assert_string_equal(fx->cfg.ca_file, "/etc/kms/ca.pem");
	snprintf(want, sizeof(want), "%s/certs/server.pem", fx->dir);
	assert_string_equal(fx->cfg.cert_file, want);
	snprintf(want, sizeof(want), "%s/../keys/server.key", fx->dir);
	assert_string_equal(fx->cfg.key_file, want);
	assert_int_equal(fx->cfg.workers, 64);
	assert_int_equal(fx->cfg.max_data_bytes, 64 << 20);
	assert_int_equal(fx->cfg.max_message_bytes, 128 << 20);
	assert_int_equal(fx->cfg.log_level, LOG_LEVEL_DEBUG);
	assert_string_equal(fx->cfg.hsm_module, "/opt/hsm/libpkcs11.so");
	assert_string_equal(fx->cfg.hsm_token,
	    "0123456789abcdef0123456789abcdef");
	snprintf(want, sizeof(want), "%s/secret/pin", fx->dir);
	assert_string_equal(fx->cfg.hsm_pin_file, want);
	assert_string_equal(fx->cfg.policy_file, "/etc/kms/policy.conf");
	snprintf(want, sizeof(want), "%s/log/audit", fx->dir);
	assert_string_equal(fx->cfg.audit_dir, want);
	assert_int_equal(fx->cfg.audit_segment_bytes, 4096);
	assert_int_equal(fx->cfg.audit_checkpoint_every, 1000000);
	assert_int_equal(fx->cfg.audit_checkpoint_seconds, 0);
	assert_int_equal(fx->cfg.audit_sync, 0);
}

static void
test_values(void **state)
{
	struct fixture *fx = *state;

	assert_loads(fx, "[server]\nlisten = [::1]:0\nworkers = 1\n"
	    "max_data_bytes = 1\nmax_message_bytes = 65537\n"
	    "log_level = error\n[audit]\nsync = yes\n"
	    "checkpoint_seconds = 86400\nsegment_bytes = 1073741824\n");
	assert_string_equal(fx->cfg.listen, "[::1]:0");
	assert_int_equal(fx->cfg.workers, 1);
	assert_int_equal(fx->cfg.max_data_bytes, 1);
	assert_int_equal(fx->cfg.max_message_bytes, 65537);
	assert_int_equal(fx->cfg.log_level, LOG_LEVEL_ERROR);
	assert_int_equal(fx->cfg.audit_sync, 1);
	assert_int_equal(fx->cfg.audit_checkpoint_seconds, 86400);
	assert_int_equal(fx->cfg.audit_segment_bytes, 1u << 30);

	assert_loads(fx, "[server]\nlisten = kms.example.org:65535\n"
	    "log_level = warn\n[audit]\nsync = false\n");
	assert_string_equal(fx->cfg.listen, "kms.example.org:65535");
	assert_int_equal(fx->cfg.log_level, LOG_LEVEL_WARN);
	assert_int_equal(fx->cfg.audit_sync, 0);
	/* CRLF line ends are fine; a key that repeats keeps its last value. */
	assert_loads(fx, "[server]\r\nworkers = 3\r\nworkers = 4\r\n");
	assert_int_equal(fx->cfg.workers, 4);
	/* A token label of exactly 32 bytes fits. */
	assert_loads(fx, "[hsm]\ntoken = abcdefghijklmnopqrstuvwxyz012345\n");
	assert_int_equal(strlen(fx->cfg.hsm_token), 32);
}

static void
test_relative_to_cwd(void **state)
{
	struct fixture *fx = *state;
	char cwd[4096];
	FILE *f;

	/* A file named without a directory: paths stay relative to "." */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(fx->dir), 0);
	assert_non_null(f = fopen("kmsd.conf", "w"));
	fputs("[hsm]\npin_file = tok/pin\n", f);
	assert_int_equal(fclose(f), 0);
	config_defaults(&fx->cfg);
	assert_int_equal(config_load("kmsd.conf", &fx->cfg, &fx->st), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_string_equal(fx->cfg.hsm_pin_file, "tok/pin");
	assert_string_equal(fx->cfg.audit_dir, "audit");
}

static void
test_unknown_names(void **state)
{
	struct fixture *fx = *state;

	assert_refused(fx, "[server]\nworkers = 2\n[serveur]\nworkers = 2\n",
	    4, "unknown section [serveur]");
	assert_refused(fx, "[server]\nworkers = 2\n\nworker = 2\n", 4,
	    "unknown key \"worker\" in [server]");
	assert_refused(fx, "[hsm]\nslot = 0\n", 2,
	    "unknown key \"slot\" in [hsm]");
	assert_refused(fx, "[policy]\npath = p.conf\n", 2,
	    "unknown key \"path\" in [policy]");
	assert_refused(fx, "[audit]\nfsync = yes\n", 2,
	    "unknown key \"fsync\" in [audit]");
	assert_refused(fx, "workers = 2\n[server]\n", 1,
	    "outside any [section]");
}

static void
test_bad_numbers(void **state)
{
	struct fixture *fx = *state;
	static const char *const bad[] = { "abc", "-1", "+3", "1x", "0x10",
	    "3.0", "", "99999999999999999999999", "1 2" };
	char text[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "; c\n[server]\nworkers = %s\n",
		    bad[i]);
		assert_refused(fx, text, 3, "is not a number");
	}
	assert_refused(fx, "[audit]\ncheckpoint_every = ten\n", 2,
	    "checkpoint_every: \"ten\" is not a number");
}

static void
test_out_of_range(void **state)
{
	struct fixture *fx = *state;

	assert_refused(fx, "[server]\nworkers = 0\n", 2,
	    "workers must be in 1..64");
	assert_refused(fx, "[server]\nworkers = 65\n", 2,
	    "workers must be in 1..64");
	assert_refused(fx, "[server]\nmax_data_bytes = 0\n", 2,
	    "max_data_bytes must be in 1..67108864");
	assert_refused(fx, "[server]\nmax_data_bytes = 67108865\n"
	    "max_message_bytes = 134217728\n", 2,
	    "max_data_bytes must be in 1..67108864");
	assert_refused(fx, "[server]\nmax_message_bytes = 134217729\n", 2,
	    "max_message_bytes must be in");
	assert_refused(fx, "[server]\nmax_message_bytes = 65536\n", 2,
	    "max_message_bytes must be in");
	assert_refused(fx, "[audit]\nsegment_bytes = 4095\n", 2,
	    "segment_bytes must be in 4096..1073741824");
	assert_refused(fx, "[audit]\nsegment_bytes = 1073741825\n", 2,
	    "segment_bytes must be in");
	assert_refused(fx, "[audit]\ncheckpoint_every = 0\n", 2,
	    "checkpoint_every must be in 1..1000000");
	assert_refused(fx, "[audit]\ncheckpoint_every = 1000001\n", 2,
	    "checkpoint_every must be in");
	assert_refused(fx, "[audit]\ncheckpoint_seconds = 86401\n", 2,
	    "checkpoint_seconds must be in 0..86400");
	assert_refused(fx, "[audit]\nsync = maybe\n", 2,
	    "sync must be yes or no");
}

static void
test_message_vs_data(void **state)
{
	struct fixture *fx = *state;

	/* Against the default max_data_bytes (1 MiB): names its own line. */
	assert_refused(fx, "[server]\n\nmax_message_bytes = 1114111\n", 3,
	    "max_message_bytes (1114111) must be at least max_data_bytes "
	    "(1048576) + 65536");
	assert_loads(fx, "[server]\nmax_message_bytes = 1114112\n");
	/* The later of the two lines is named. */
	assert_refused(fx, "[server]\nmax_message_bytes = 2000000\n"
	    "workers = 2\nmax_data_bytes = 2000000\n", 4,
	    "must be at least max_data_bytes");
	assert_refused(fx, "[server]\nmax_data_bytes = 67108864\n"
	    "max_message_bytes = 67174399\n", 3, "max_message_bytes");
	assert_loads(fx, "[server]\nmax_data_bytes = 67108864\n"
	    "max_message_bytes = 67174400\n");
}

static void
test_log_level(void **state)
{
	struct fixture *fx = *state;

	assert_refused(fx, "[server]\nlog_level = verbose\n", 2,
	    "log_level: \"verbose\" is not one of error, warn, info, debug");
	assert_refused(fx, "[server]\nlog_level = INFO\n", 2, "log_level");
	assert_refused(fx, "[server]\nlog_level =\n", 2, "log_level");
}

static void
test_listen(void **state)
{
	struct fixture *fx = *state;
	static const char *const bad[] = { "localhost", ":7443", "host:",
	    "host:65536", "host:-1", "host:+1", "host:80x", "host:123456",
	    "[::1]80", "[]:80", "[::1", "::1:80", "a:b:80", "[::1]:",
	    "[::1]:99999", "" };
	char text[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[server]\nlisten = %s\n", bad[i]);
		assert_refused(fx, text, 2, "is not HOST:PORT");
	}
	assert_loads(fx, "[server]\nlisten = [fe80::1%eth0]:443\n");
	assert_loads(fx, "[server]\nlisten = 127.0.0.1:00080\n");
}

static void
test_token_label(void **state)
{
	struct fixture *fx = *state;

	/* 33 bytes: one more than a PKCS#11 label holds. */
	assert_refused(fx,
	    "[hsm]\n\ntoken = abcdefghijklmnopqrstuvwxyz0123456\n", 3,
	    "is 33 bytes, a PKCS#11 token label is at most 32");
	assert_refused(fx, "[hsm]\ntoken =\n", 2, "token is empty");
}

static void
test_empty_paths(void **state)
{
	struct fixture *fx = *state;

	assert_refused(fx, "[server]\nca =\n", 2, "ca is empty");
	assert_refused(fx, "[hsm]\npin_file = ; nothing\n", 2,
	    "pin_file is empty");
	assert_refused(fx, "[audit]\ndir =\n", 2, "dir is empty");
	assert_refused(fx, "[policy]\nfile =\n", 2, "file is empty");
}

static void
test_syntax(void **state)
{
	struct fixture *fx = *state;
	char text[512];

	assert_refused(fx, "[server]\nworkers 2\n", 2, "syntax error");
	assert_refused(fx, "[server\nworkers = 2\n", 1, "syntax error");
	/* The earlier of a syntax error and a bad value is named. */
	assert_refused(fx, "[server]\nworkers 2\nworkers = 0\n", 2,
	    "syntax error");
	assert_refused(fx, "[server]\nworkers = 0\nworkers 2\n", 2,
	    "workers must be in");
	/* inih would take an indented line as a continuation. */
	assert_refused(fx, "[server]\nlisten = a:1\n  listen = b:2\n", 3,
	    "indented line");
	/* Over-long lines are refused, not cut in two. */
	memset(text, 0, sizeof(text));
	strcpy(text, "[hsm]\nmodule = /");
	memset(text + strlen(text), 'm', 300);
	strcat(text, "\nworkers = 2\n");
	assert_refused(fx, text, 2, "line is longer than 198 bytes");
}

static void
test_file_errors(void **state)
{
	struct fixture *fx = *state;
	char path[160];
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/missing.conf", fx->dir);
	config_defaults(&fx->cfg);
	r = config_load(path, &fx->cfg, &fx->st);
	assert_int_equal(r, KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, path));
	assert_non_null(strstr(fx->st.msg, "No such file"));

	/* A NUL byte would hide the rest of the file from the parser. */
	assert_non_null(f = fopen(fx->path, "w"));
	assert_int_equal(fwrite("[server]\n\0workers = 0\n", 1, 22, f), 22);
	assert_int_equal(fclose(f), 0);
	config_defaults(&fx->cfg);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->st),
	    KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "NUL"));
	/* A NULL status is allowed. */
	config_defaults(&fx->cfg);
	assert_int_equal(config_load(path, &fx->cfg, NULL), KMS_ERR_CONFIG);

	/* A directory is not read, nor is a file over the bound. */
	config_defaults(&fx->cfg);
	assert_int_equal(config_load(fx->dir, &fx->cfg, &fx->st),
	    KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "not a regular file"));
	assert_non_null(f = fopen(fx->path, "w"));
	assert_int_equal(ftruncate(fileno(f), INIFILE_MAX + 1), 0);
	assert_int_equal(fclose(f), 0);
	config_defaults(&fx->cfg);
	assert_int_equal(config_load(fx->path, &fx->cfg, &fx->st),
	    KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "larger than"));
}

/* The one bounded reader: exact contents, NUL-terminated, within max. */
static void
test_fileio(void **state)
{
	struct fixture *fx = *state;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	assert_non_null(f = fopen(fx->path, "w"));
	assert_int_equal(fwrite("abc\n", 1, 4, f), 4);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(fileio_read(fx->path, 4, &text, &len, &fx->st), 0);
	assert_int_equal(len, 4);
	assert_string_equal(text, "abc\n");
	free(text);
	assert_int_equal(fileio_read(fx->path, 3, &text, &len, &fx->st),
	    KMS_ERR_CONFIG);
	assert_null(text);
	assert_int_equal(len, 0);
	assert_non_null(strstr(fx->st.msg, "larger than 3 bytes"));
	assert_non_null(f = fopen(fx->path, "w"));
	assert_int_equal(fclose(f), 0);
	assert_int_equal(fileio_read(fx->path, 4, &text, &len, &fx->st), 0);
	assert_int_equal(len, 0);
	assert_string_equal(text, "");
	free(text);
}

static void
test_keys_section(void **state)
{
	struct fixture *fx = *state;
	char want[256];

	assert_loads(fx, "[keys]\ndestroy_wait = 3\nmin_rotation_period = 2\n"
	    "sync_ms = 200\nlock_file = run/keys.lock\n");
	assert_int_equal(fx->cfg.keys_destroy_wait, 3);
	assert_int_equal(fx->cfg.keys_min_rotation_period, 2);
	assert_int_equal(fx->cfg.keys_sync_ms, 200);
	snprintf(want, sizeof(want), "%s/run/keys.lock", fx->dir);
	assert_string_equal(fx->cfg.keys_lock_file, want);
	assert_refused(fx, "[keys]\ndestroy_wait = 0\n", 2, "destroy_wait");
	assert_refused(fx, "[keys]\n\ndestroy_wait = 31536001\n", 3,
	    "destroy_wait");
	assert_refused(fx, "[keys]\nmin_rotation_period = -1\n", 2,
	    "min_rotation_period");
	assert_refused(fx, "[keys]\nsync_ms = 49\n", 2, "sync_ms");
	assert_refused(fx, "[keys]\nsync_ms = 60001\n", 2, "sync_ms");
	assert_refused(fx, "[keys]\nrotate = yes\n", 2, "unknown key");
	assert_refused(fx, "[keys]\nlock_file =\n", 2, "lock_file");
}

/* [store]: token by default, etcd with endpoints and all or no TLS. */
static void
test_store_section(void **state)
{
	struct fixture *fx = *state;
	char want[256];

	assert_loads(fx, "");
	assert_int_equal(fx->cfg.store_backend, CONFIG_STORE_TOKEN);
	assert_string_equal(fx->cfg.store_prefix, "/kms/");
	assert_int_equal(fx->cfg.store_timeout_ms, 2000);
	assert_loads(fx, "[store]\nbackend = etcd\n"
	    "endpoints = 127.0.0.1:2379, 127.0.0.1:22379\n"
	    "ca = pki/etcd-ca.pem\ncert = pki/c.pem\nkey = pki/c.key\n"
	    "prefix = /prod/kms/\ntimeout_ms = 500\n");
	assert_int_equal(fx->cfg.store_backend, CONFIG_STORE_ETCD);
	assert_string_equal(fx->cfg.store_endpoints,
	    "127.0.0.1:2379, 127.0.0.1:22379");
	snprintf(want, sizeof(want), "%s/pki/etcd-ca.pem", fx->dir);
	assert_string_equal(fx->cfg.store_ca, want);
	assert_string_equal(fx->cfg.store_prefix, "/prod/kms/");
	assert_int_equal(fx->cfg.store_timeout_ms, 500);
	assert_refused(fx, "[store]\nbackend = consul\n", 2, "token or etcd");
	assert_refused(fx, "[store]\nprefix = kms\n", 2, "start with /");
	assert_refused(fx, "[store]\ntimeout_ms = 99\n", 2, "timeout_ms");
	assert_refused(fx, "[store]\nwatch = yes\n", 2, "unknown key");
	/* What the keys say together: checked after the whole file. */
	assert_int_equal(load(fx, "[store]\nbackend = etcd\n"), KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "needs endpoints"));
	/* With backend = token, endpoints name etcd for --migrate-store. */
	assert_loads(fx, "[store]\nendpoints = 127.0.0.1:2379\n");
	assert_int_equal(fx->cfg.store_backend, CONFIG_STORE_TOKEN);
	assert_int_equal(load(fx, "[store]\nca = a.pem\ncert = c.pem\n"
	    "key = c.key\n"), KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "there are none"));
	assert_int_equal(load(fx, "[store]\nbackend = etcd\n"
	    "endpoints = 127.0.0.1:2379\nca = ca.pem\n"), KMS_ERR_CONFIG);
	assert_non_null(strstr(fx->st.msg, "go together"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		T(test_empty_file_keeps_defaults),
		T(test_full_file),
		T(test_values),
		T(test_relative_to_cwd),
		T(test_unknown_names),
		T(test_bad_numbers),
		T(test_out_of_range),
		T(test_message_vs_data),
		T(test_log_level),
		T(test_listen),
		T(test_token_label),
		T(test_empty_paths),
		T(test_syntax),
		T(test_file_errors),
		T(test_keys_section),
		T(test_store_section),
		T(test_fileio),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
