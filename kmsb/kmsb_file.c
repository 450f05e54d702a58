/*
 * kmsb_file.c: whole-or-nothing output files and bounded reads.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmsb_file.h"

int
kmsb_out_open(struct kmsb_out *o, const char *path, int secret)
{
	struct stat sb;
	mode_t mask;
	int fd, e;

	memset(o, 0, sizeof(*o));
	/* Renaming the finished file over a device or pipe would replace it. */
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		errno = ENOTSUP;
		return -1;
	}
	if ((size_t)snprintf(o->path, sizeof(o->path), "%s", path) >=
	    sizeof(o->path) ||
	    (size_t)snprintf(o->tmp, sizeof(o->tmp), "%s.XXXXXX", path) >=
	    sizeof(o->tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = mkstemp(o->tmp)) == -1)
		return -1;
	mask = umask(0);
	umask(mask);
	if (fchmod(fd, secret ? 0600 : (0666 & ~mask)) != 0 ||
	    (o->f = fdopen(fd, "wb")) == NULL) {
		e = errno;
		close(fd);
		unlink(o->tmp);
		errno = e;
		return -1;
	}
	return 0;
}

int
kmsb_out_commit(struct kmsb_out *o)
{
	int e;

	if (o->f == NULL) {
		errno = EBADF;
		return -1;
	}
	if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0) {
		e = errno;
		kmsb_out_abort(o);
		errno = e;
		return -1;
	}
	e = fclose(o->f);
	o->f = NULL;
	if (e != 0 || rename(o->tmp, o->path) != 0) {
		e = errno;
		unlink(o->tmp);
		errno = e;
		return -1;
	}
	return 0;
}

void
kmsb_out_abort(struct kmsb_out *o)
{
	if (o->f == NULL)
		return;
	fclose(o->f);
	o->f = NULL;
	unlink(o->tmp);
}

int
kmsb_read_file(const char *path, size_t max, uint8_t **buf, size_t *len)
{
	FILE *f;
	uint8_t *b;
	size_t n;
	int e;

	*buf = NULL;
	*len = 0;
	if (strcmp(path, "-") == 0)
		f = stdin;
	else if ((f = fopen(path, "rb")) == NULL)
		return -1;
	if ((b = malloc(max + 2)) == NULL) {
		e = ENOMEM;
		goto fail;
	}
	n = fread(b, 1, max + 1, f);
	if (ferror(f)) {
		e = EIO;
		goto fail;
	}
	if (n > max) {
		e = EFBIG;
		goto fail;
	}
	if (f != stdin)
		fclose(f);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
 fail:
	free(b);
	if (f != stdin)
		fclose(f);
	errno = e;
	return -1;
}
