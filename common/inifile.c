/*
 * inifile.c: bounded reading and strict line splitting for the inih-based
 * parsers (see inifile.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "inifile.h"
#include "kmserr.h"

int
inifile_read(const char *path, char **out, struct kms_status *st)
{
	char *buf = NULL;
	size_t len;
	int r;

	*out = NULL;
	if ((r = fileio_read(path, INIFILE_MAX, &buf, &len, st)) != 0)
		return r;
	/* A NUL byte would silently end the text early. */
	if (memchr(buf, '\0', len) != NULL) {
		free(buf);
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: holds a NUL "
		    "byte", path);
	}
	*out = buf;
	return 0;
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
