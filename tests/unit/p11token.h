/*
 * p11token.h: the throw-away SoftHSM2 token of the unit tests that go
 * through the fault-injecting module p11fault.so (test_hsm.c,
 * test_keystore.c): its directory, PIN file and module path, and the
 * module's fault switch.  Included by one test file each, so its
 * definitions are static.
 *
 * The module is P11FAULT_SO, else $BUILD/p11fault.so, else
 * build/p11fault.so.
 */
#ifndef KMS_TEST_P11TOKEN_H
#define KMS_TEST_P11TOKEN_H

#include <sys/stat.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], pin[128], module[PATH_MAX];
static void (*fault_set)(const char *, unsigned long, unsigned long);
static void (*fault_clear)(void);
static unsigned long (*fault_calls)(const char *);

static void
write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static void
find_module(void)
{
	const char *so = getenv("P11FAULT_SO"), *build = getenv("BUILD");
	char rel[PATH_MAX];

	if (so == NULL) {
		snprintf(rel, sizeof(rel), "%s/p11fault.so",
		    build != NULL ? build : "build");
		so = rel;
	}
	/* Absolute, so that RTLD_NOLOAD and a child process find it too. */
	if (realpath(so, module) == NULL)
		snprintf(module, sizeof(module), "%s", so);
}

/*
 * Makes dir from tmpl (mkdtemp), a softhsm2.conf there in SOFTHSM2_CONF,
 * one token per label of labels (NULL-terminated, user PIN 1234) and the
 * PIN file pin.  0 or -1.
 */
static int
p11token_make(const char *tmpl, const char *const *labels)
{
	char conf[128], text[256], cmd[256];

	find_module();
	snprintf(dir, sizeof(dir), "%s", tmpl);
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
	snprintf(text, sizeof(text), "directories.tokendir = %s\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", dir);
	write_file(conf, text, 0600);
	setenv("SOFTHSM2_CONF", conf, 1);
	for (; *labels != NULL; labels++) {
		snprintf(cmd, sizeof(cmd), "softhsm2-util --init-token --free "
		    "--label %s --so-pin 1234 --pin 1234 >/dev/null", *labels);
		if (system(cmd) != 0)
			return -1;
	}
	snprintf(pin, sizeof(pin), "%s/pin", dir);
	write_file(pin, "1234\n", 0600);
	return 0;
}

/* Finds the fault switch of the module, loaded already by hsm_open. */
static int
p11token_faults(void)
{
	void *dl;

	if ((dl = dlopen(module, RTLD_NOW | RTLD_NOLOAD)) == NULL)
		return -1;
	fault_set = (void (*)(const char *, unsigned long,
	    unsigned long))dlsym(dl, "p11fault_set");
	fault_clear = (void (*)(void))dlsym(dl, "p11fault_clear");
	fault_calls = (unsigned long (*)(const char *))dlsym(dl,
	    "p11fault_calls");
	/* Drops only the reference taken just now. */
	dlclose(dl);
	return fault_set == NULL || fault_clear == NULL ||
	    fault_calls == NULL ? -1 : 0;
}

#endif
