/*
 * fileio.c: the bounded file reader (see fileio.h).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "kmserr.h"
#include "secret.h"

int
fileio_read(const char *path, size_t max, char **out, size_t *len,
    struct kms_status *st)
{
	struct stat sb;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	ssize_t got;
	int fd, r;

	*out = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: %s", path,
		    strerror(errno));
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: not a regular "
		    "file", path);
		goto out;
	}
	if ((unsigned long long)sb.st_size > max) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: larger than %zu "
		    "bytes", path, max);
		goto out;
	}
	/* One byte more than the file holds shows that it did not grow. */
	cap = (size_t)sb.st_size + 1;
	if ((buf = malloc(cap + 1)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	while (n < cap) {
		if ((got = read(fd, buf + n, cap - n)) == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			r = kms_status_set(st, KMS_ERR_CONFIG, "%s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > max || n == cap) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: changed while it "
		    "was read", path);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
	r = 0;
 out:
	if (buf != NULL)
		secret_freezero(buf, cap + 1);
	close(fd);
	return r;
}
