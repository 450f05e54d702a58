/*
 * output.c: how kmsctl reads its input and writes its output: bounded
 * reads of files and stdin, output files written whole or not at all,
 * JSON, base64 and times in one form for every command.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "kmsctl.h"

/* Writes buf to the stream f already open (stdout, a device, a pipe). */
static int
write_stream(FILE *f, const char *name, const void *buf, size_t len)
{
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0) {
		fprintf(stderr, "kmsctl: cannot write to %s: %s\n", name,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/*
 * Writes buf to path, or to stdout when path is NULL or "-".  A file is
 * written to a temporary file beside it and renamed over it, so that a
 * failure never leaves a partial file; an existing device or pipe is
 * written directly.  Secrets are written mode 0600,
 * anything else 0666 less the umask, like any other new file.
 */
int
write_out(const char *path, const void *buf, size_t len, int secret)
{
	char tmp[PATH_MAX];
	struct stat sb;
	mode_t mask;
	FILE *f = NULL;
	int fd = -1, r = KMSCTL_EXIT_IO;

	if (path == NULL || strcmp(path, "-") == 0)
		return write_stream(stdout, "stdout", buf, len);
	/*
	 * An existing device or pipe (/dev/null, /dev/stdout, a FIFO) is
	 * written as it is: renaming a file over it would replace it.
	 */
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		if (S_ISDIR(sb.st_mode)) {
			fprintf(stderr, "kmsctl: %s is a directory\n", path);
			return KMSCTL_EXIT_IO;
		}
		if ((fd = open(path, O_WRONLY | O_CLOEXEC)) == -1 ||
		    (f = fdopen(fd, "wb")) == NULL) {
			fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
			    strerror(errno));
			if (fd != -1)
				close(fd);
			return KMSCTL_EXIT_IO;
		}
		r = write_stream(f, path, buf, len);
		if (fclose(f) != 0 && r == 0) {
			fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
			    strerror(errno));
			r = KMSCTL_EXIT_IO;
		}
		return r;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >=
	    sizeof(tmp)) {
		fprintf(stderr, "kmsctl: %s: path too long\n", path);
		return KMSCTL_EXIT_IO;
	}
	if ((fd = mkstemp(tmp)) == -1) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	mask = umask(0);
	umask(mask);
	if (fchmod(fd, secret ? 0600 : (0666 & ~mask)) != 0 ||
	    (f = fdopen(fd, "wb")) == NULL)
		goto out;
	fd = -1;
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0)
		goto out;
	r = fclose(f) == 0 ? 0 : KMSCTL_EXIT_IO;
	f = NULL;
	if (r == 0 && rename(tmp, path) != 0)
		r = KMSCTL_EXIT_IO;
 out:
	if (r != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		unlink(tmp);
	}
	if (f != NULL)
		fclose(f);
	if (fd != -1)
		close(fd);
	return r;
}

const char *
in_name(const char *path)
{
	return path == NULL || strcmp(path, "-") == 0 ? "stdin" : path;
}

/* Opens path for reading, stdin when it is NULL or "-". */
int
open_input(const char *path, FILE **f)
{
	if (path == NULL || strcmp(path, "-") == 0) {
		*f = stdin;
		return 0;
	}
	if ((*f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", path,
		    strerror(errno));
		return KMSCTL_EXIT_IO;
	}
	return 0;
}

/*
 * Reads at most max + 1 bytes of f, so that *len > max tells the caller
 * that there is more; the rest stays unread in f.
 */
int
read_prefix(FILE *f, const char *path, size_t max, uint8_t **buf,
    size_t *len)
{
	size_t cap = 0, n;
	uint8_t *b = NULL, *nb;

	*buf = NULL;
	*len = 0;
	for (;;) {
		if (*len == cap) {
			if (cap > max)
				break;
			cap = cap == 0 ? 65536 : 2 * cap;
			if (cap > max + 1)
				cap = max + 1;
			if ((nb = realloc(b, cap)) == NULL) {
				fprintf(stderr, "kmsctl: out of memory\n");
				goto fail;
			}
			b = nb;
		}
		if ((n = fread(b + *len, 1, cap - *len, f)) == 0)
			break;
		*len += n;
	}
	if (ferror(f)) {
		fprintf(stderr, "kmsctl: cannot read %s: %s\n", in_name(path),
		    strerror(errno));
		goto fail;
	}
	/* An empty input still gets a buffer, so that NULL means failure. */
	if (b == NULL && (b = malloc(1)) == NULL)
		goto fail;
	*buf = b;
	return 0;
 fail:
	free(b);
	*len = 0;
	return KMSCTL_EXIT_IO;
}

/* Reads all of path (stdin for NULL or "-"); more than max is an error. */
int
read_all(const char *path, uint8_t **buf, size_t *len, size_t max)
{
	FILE *f;
	int r;

	*buf = NULL;
	*len = 0;
	if ((r = open_input(path, &f)) != 0)
		return r;
	r = read_prefix(f, path, max, buf, len);
	if (f != stdin)
		fclose(f);
	if (r == 0 && *len > max) {
		fprintf(stderr, "kmsctl: %s is larger than %zu bytes\n",
		    in_name(path), max);
		free(*buf);
		*buf = NULL;
		*len = 0;
		return KMSCTL_EXIT_USAGE;
	}
	return r;
}

int
hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
	size_t i, n = strlen(hex);
	unsigned int v;

	if (n == 0 || n % 2 != 0 || n / 2 > cap)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(hex + 2 * i, "%2x", &v) != 1 ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i]) == NULL ||
		    strchr("0123456789abcdefABCDEF", hex[2 * i + 1]) == NULL)
			return -1;
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

/* Base64 of in, with room for a newline after it. */
char *
kmsctl_b64(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 2);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

int
print_json(json_t *o)
{
	int r = 0;

	if (o == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return KMSCTL_EXIT_IO;
	}
	if (json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
	    fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
		fprintf(stderr, "kmsctl: cannot write to stdout\n");
		r = KMSCTL_EXIT_IO;
	}
	json_decref(o);
	return r;
}

void
kmsctl_fmt_time(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || *s == '\0' || *s == '-' ||
	    v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

void
kmsctl_audit_dir(char *buf, size_t len)
{
	const char *home = getenv("KMS_HOME");

	snprintf(buf, len, "%s/audit", home != NULL && *home != '\0' ? home :
	    "var");
}
