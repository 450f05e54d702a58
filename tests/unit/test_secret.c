/*
 * test_secret.c: PIN files are refused unless private, and secrets
 * compare in constant time.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kmserr.h"
#include "secret.h"

static char dir[64];

static int
setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/kms-test-secret.XXXXXX");
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *
write_pin(const char *name, const char *text, size_t len, mode_t mode)
{
	static char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void
test_good_pin_files(void **state)
{
	struct secret *s = NULL;

	(void)state;
	assert_int_equal(secret_read_pin_file(write_pin("a", "1234\n", 5,
	    0600), &s), 0);
	assert_int_equal(s->len, 4);
	assert_memory_equal(s->buf, "1234", 4);
	secret_free(s);
	assert_int_equal(secret_read_pin_file(write_pin("b", "pin", 3,
	    0400), &s), 0);
	assert_int_equal(s->len, 3);
	secret_free(s);
}

static void
test_bad_pin_files(void **state)
{
	char big[300], link[160];
	struct secret *s = NULL;
	const char *p;

	(void)state;
	assert_int_equal(secret_read_pin_file(write_pin("c", "1234", 4,
	    0644), &s), KMS_ERR_CONFIG);
	assert_null(s);
	assert_int_equal(secret_read_pin_file(write_pin("d", "1234", 4,
	    0640), &s), KMS_ERR_CONFIG);
	assert_int_equal(secret_read_pin_file(write_pin("e", "", 0, 0600),
	    &s), KMS_ERR_CONFIG);
	assert_int_equal(secret_read_pin_file(write_pin("f", "\n", 1, 0600),
	    &s), KMS_ERR_CONFIG);
	memset(big, '7', sizeof(big));
	assert_int_equal(secret_read_pin_file(write_pin("g", big, 257,
	    0600), &s), KMS_ERR_CONFIG);
	assert_int_equal(secret_read_pin_file(write_pin("h", big, 256,
	    0600), &s), 0);
	secret_free(s);
	s = NULL;
	p = write_pin("i", "1234", 4, 0600);
	snprintf(link, sizeof(link), "%s/link", dir);
	assert_int_equal(symlink(p, link), 0);
	assert_int_not_equal(secret_read_pin_file(link, &s), 0);
	assert_null(s);
	snprintf(link, sizeof(link), "%s/missing", dir);
	assert_int_not_equal(secret_read_pin_file(link, &s), 0);
	assert_int_not_equal(secret_read_pin_file(dir, &s), 0);
}

static void
test_equal_and_free(void **state)
{
	struct secret *a = secret_new(4), *b = secret_new(4), *c = secret_new(5);

	(void)state;
	memcpy(a->buf, "abcd", 4);
	memcpy(b->buf, "abcd", 4);
	memcpy(c->buf, "abcde", 5);
	assert_true(secret_equal(a, b));
	b->buf[3] = 'x';
	assert_false(secret_equal(a, b));
	assert_false(secret_equal(a, c));
	assert_false(secret_equal(a, NULL));
	secret_free(a);
	secret_free(b);
	secret_free(c);
	secret_free(NULL);
	secret_freezero(NULL, 10);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_pin_files),
		cmocka_unit_test(test_bad_pin_files),
		cmocka_unit_test(test_equal_and_free),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
