/*
 * test_secret.c: wiped secret buffers and the PIN file reader.
 */
#include <sys/stat.h>

#include <errno.h>
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

struct fixture {
	char dir[64];
	char path[128];
};

static int
setup(void **state)
{
	struct fixture *fx;
	const char *tmp = getenv("TMPDIR");

	if ((fx = calloc(1, sizeof(*fx))) == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "%s/kms-secret.XXXXXX",
	    tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/pin", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;
	char p[160];

	unlink(fx->path);
	snprintf(p, sizeof(p), "%s/link", fx->dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/sub", fx->dir);
	rmdir(p);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Writes len bytes of content to fx->path with the given mode. */
static void
write_pin(struct fixture *fx, const void *content, size_t len, mode_t mode)
{
	int fd;

	unlink(fx->path);
	fd = open(fx->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	assert_int_equal(chmod(fx->path, mode), 0);
}

static struct secret *
expect_pin(const char *path, const char *want, size_t want_len)
{
	struct secret *pin = (struct secret *)0x1;
	int r;

	r = secret_read_pin_file(path, &pin);
	if (r != 0)
		fail_msg("%s refused: %s", path, kms_strerror(r));
	assert_non_null(pin);
	assert_int_equal(pin->len, want_len);
	assert_memory_equal(pin->buf, want, want_len);
	return pin;
}

static void
expect_refused(const char *path, int want)
{
	struct secret *pin = (struct secret *)0x1;
	int r;

	r = secret_read_pin_file(path, &pin);
	if (r != want)
		fail_msg("%s: got %d (%s), expected %d (%s)", path, r,
		    kms_strerror(r), want, kms_strerror(want));
	/* The out-parameter is reset even on failure. */
	assert_null(pin);
}

static void
test_modes_accepted(void **state)
{
	struct fixture *fx = *state;

	write_pin(fx, "1234", 4, 0600);
	secret_free(expect_pin(fx->path, "1234", 4));
	write_pin(fx, "1234", 4, 0400);
	secret_free(expect_pin(fx->path, "1234", 4));
}

static void
test_modes_refused(void **state)
{
	struct fixture *fx = *state;
	static const mode_t bad[] = { 0644, 0640, 0604, 0620, 0602, 0610,
	    0601, 0660, 0666, 0777, 0440, 0404 };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_pin(fx, "1234", 4, bad[i]);
		expect_refused(fx->path, KMS_ERR_CONFIG);
	}
}

static void
test_symlink_refused(void **state)
{
	struct fixture *fx = *state;
	struct secret *pin = (struct secret *)0x1;
	char link[160];
	int r;

	write_pin(fx, "1234", 4, 0600);
	snprintf(link, sizeof(link), "%s/link", fx->dir);
	assert_int_equal(symlink(fx->path, link), 0);
	/*
	 * secret.h promises KMS_ERR_CONFIG; O_NOFOLLOW fails with ELOOP,
	 * which the reader reports as an I/O error.  Either way the link
	 * must not be followed.
	 */
	r = secret_read_pin_file(link, &pin);
	assert_true(r == KMS_ERR_CONFIG || r == KMS_ERR_IO);
	assert_null(pin);
	/* The target itself is fine. */
	secret_free(expect_pin(fx->path, "1234", 4));
}

static void
test_not_regular_refused(void **state)
{
	struct fixture *fx = *state;
	char sub[160];

	snprintf(sub, sizeof(sub), "%s/sub", fx->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	expect_refused(sub, KMS_ERR_CONFIG);
}

static void
test_other_owner_refused(void **state)
{
	struct fixture *fx = *state;

	if (geteuid() != 0)
		skip();
	/* As root, a file owned by someone else is refused too. */
	write_pin(fx, "1234", 4, 0600);
	assert_int_equal(chown(fx->path, 1, 1), 0);
	expect_refused(fx->path, KMS_ERR_CONFIG);
}

static void
test_missing_and_empty(void **state)
{
	struct fixture *fx = *state;

	unlink(fx->path);
	expect_refused(fx->path, KMS_ERR_CONFIG);
	write_pin(fx, "", 0, 0600);
	expect_refused(fx->path, KMS_ERR_CONFIG);
	/* A lone newline is an empty PIN, too. */
	write_pin(fx, "\n", 1, 0600);
	expect_refused(fx->path, KMS_ERR_CONFIG);
	write_pin(fx, "\r\n", 2, 0600);
	expect_refused(fx->path, KMS_ERR_CONFIG);
}

static void
test_length_limits(void **state)
{
	struct fixture *fx = *state;
	char buf[300];

	memset(buf, 'p', sizeof(buf));
	write_pin(fx, buf, 256, 0600);
	secret_free(expect_pin(fx->path, buf, 256));
	/* 256 bytes and the newline that ends the line: still 256. */
	buf[256] = '\n';
	write_pin(fx, buf, 257, 0600);
	secret_free(expect_pin(fx->path, buf, 256));
	buf[256] = 'p';
	write_pin(fx, buf, 257, 0600);
	expect_refused(fx->path, KMS_ERR_CONFIG);
	write_pin(fx, buf, sizeof(buf), 0600);
	expect_refused(fx->path, KMS_ERR_CONFIG);
	write_pin(fx, "x", 1, 0600);
	secret_free(expect_pin(fx->path, "x", 1));
}

static void
test_trailing_newline(void **state)
{
	struct fixture *fx = *state;

	write_pin(fx, "1234\n", 5, 0600);
	secret_free(expect_pin(fx->path, "1234", 4));
	write_pin(fx, "1234\r\n", 6, 0600);
	secret_free(expect_pin(fx->path, "1234", 4));
	/* Only one line end is dropped; the rest is part of the PIN. */
	write_pin(fx, "1234\n\n", 6, 0600);
	secret_free(expect_pin(fx->path, "1234\n", 5));
	write_pin(fx, " 12 34 ", 7, 0600);
	secret_free(expect_pin(fx->path, " 12 34 ", 7));
	/* A PIN may hold any byte, NUL included. */
	write_pin(fx, "a\0b", 3, 0600);
	secret_free(expect_pin(fx->path, "a\0b", 3));
}

static struct secret *
make(const char *s, size_t len)
{
	struct secret *x = secret_new(len);

	assert_non_null(x);
	assert_int_equal(x->len, len);
	memcpy(x->buf, s, len);
	return x;
}

static void
test_secret_equal(void **state)
{
	struct secret *a, *b, *c, *d, *e, *z1, *z2;

	(void)state;
	a = make("correct horse", 13);
	b = make("correct horse", 13);
	c = make("correct horsf", 13);
	d = make("correct hors", 12);
	e = make("Correct horse", 13);
	z1 = secret_new(0);
	z2 = secret_new(0);
	assert_non_null(z1);
	assert_non_null(z1->buf);
	assert_true(secret_equal(a, b));
	assert_true(secret_equal(a, a));
	assert_false(secret_equal(a, c));
	assert_false(secret_equal(a, d));
	assert_false(secret_equal(d, a));
	assert_false(secret_equal(a, e));
	assert_false(secret_equal(a, NULL));
	assert_false(secret_equal(NULL, a));
	assert_false(secret_equal(NULL, NULL));
	assert_true(secret_equal(z1, z2));
	assert_false(secret_equal(z1, a));
	secret_free(a);
	secret_free(b);
	secret_free(c);
	secret_free(d);
	secret_free(e);
	secret_free(z1);
	secret_free(z2);
}

static void
test_new_is_zeroed_and_free_null(void **state)
{
	struct secret *s;
	size_t i;

	(void)state;
	s = secret_new(64);
	assert_non_null(s);
	for (i = 0; i < s->len; i++)
		assert_int_equal(s->buf[i], 0);
	secret_free(s);
	secret_free(NULL);
	secret_freezero(NULL, 10);
	secret_freezero(strdup("plaintext"), 10);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_modes_accepted, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_modes_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_not_regular_refused,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_owner_refused,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_empty, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_length_limits, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_trailing_newline, setup,
		    teardown),
		cmocka_unit_test(test_secret_equal),
		cmocka_unit_test(test_new_is_zeroed_and_free_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
