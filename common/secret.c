/*
 * secret.c: wiped buffers and the PIN file reader.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "kmserr.h"
#include "secret.h"

#define PIN_MAX 256

struct secret *
secret_new(size_t len)
{
	struct secret *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	/* Allocate at least one byte so that buf is never NULL. */
	if ((s->buf = calloc(1, len == 0 ? 1 : len)) == NULL) {
		free(s);
		return NULL;
	}
	s->len = len;
	return s;
}

void
secret_freezero(void *p, size_t len)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

void
secret_free(struct secret *s)
{
	if (s == NULL)
		return;
	secret_freezero(s->buf, s->len == 0 ? 1 : s->len);
	free(s);
}

int
secret_equal(const struct secret *a, const struct secret *b)
{
	if (a == NULL || b == NULL || a->len != b->len)
		return 0;
	return CRYPTO_memcmp(a->buf, b->buf, a->len) == 0;
}

int
secret_read_pin_file(const char *path, struct secret **out)
{
	uint8_t buf[PIN_MAX + 2];
	struct secret *pin = NULL;
	struct stat sb;
	size_t len = 0;
	ssize_t n;
	int fd = -1, r = KMS_ERR_CONFIG;

	*out = NULL;
	/* O_NOFOLLOW: a PIN file that is a link could point anywhere. */
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		/* ELOOP: a symbolic link, refused like a bad mode. */
		r = errno == ENOENT || errno == ELOOP ? KMS_ERR_CONFIG :
		    KMS_ERR_IO;
		goto out;
	}
	if (fstat(fd, &sb) == -1) {
		r = KMS_ERR_IO;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_uid != geteuid() ||
	    (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		goto out;
	while (len < sizeof(buf)) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = KMS_ERR_IO;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (len == 0 || len > PIN_MAX)
		goto out;
	if ((pin = secret_new(len)) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	memcpy(pin->buf, buf, len);
	*out = pin;
	r = 0;
 out:
	OPENSSL_cleanse(buf, sizeof(buf));
	if (fd != -1)
		close(fd);
	return r;
}
