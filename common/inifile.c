/*
 * inifile.c: bounded reading and strict line splitting for the inih-based
 * parsers (see inifile.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inifile.h"
#include "kmserr.h"

int
inifile_read(const char *path, char **out, struct kms_status *st)
{
	char *buf = NULL;
	size_t len;
	FILE *f;
	int r;

	*out = NULL;
	if ((f = fopen(path, "r")) == NULL)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: %s", path,
		    strerror(errno));
	if ((buf = malloc(INIFILE_MAX + 1)) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	len = fread(buf, 1, INIFILE_MAX + 1, f);
	if (ferror(f)) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: read error", path);
		goto out;
	}
	if (len > INIFILE_MAX) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: larger than %d "
		    "bytes", path, INIFILE_MAX);
		goto out;
	}
	/* A NUL byte would silently end the text early. */
	if (memchr(buf, '\0', len) != NULL) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s: holds a NUL byte",
		    path);
		goto out;
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
	r = 0;
 out:
	free(buf);
	fclose(f);
	return r;
}

enum inifile_take
inifile_take_line(struct inifile_cursor *c, char *buf, int size,
    size_t *content)
{
	const char *s = c->next, *eol, *p;
	size_t n;

	if (*s == '\0' || size < 3)
		return INIFILE_END;
	eol = strchr(s, '\n');
	n = eol == NULL ? strlen(s) : (size_t)(eol - s) + 1;
	*content = eol == NULL ? n : n - 1;
	if (*content > 0 && s[*content - 1] == '\r')
		(*content)--;
	c->line++;
	/* n counts the newline and must fit in buf with the terminator. */
	if (*content > (size_t)size - 2 || n > (size_t)size - 1)
		return INIFILE_TOO_LONG;
	if (s[0] == ' ' || s[0] == '\t') {
		for (p = s; p < s + *content && (*p == ' ' || *p == '\t'); p++)
			;
		if (p < s + *content && *p != ';' && *p != '#')
			return INIFILE_INDENTED;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	c->next = s + n;
	return INIFILE_LINE;
}
