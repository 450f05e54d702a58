/*
 * inifile.c: bounded reading and strict line splitting for the inih-based
 * parsers (see inifile.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

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

int
inifile_vfail(struct inifile_parse *p, const char *fmt, va_list ap)
{
	char msg[300];

	if (p->st->err != 0)
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	kms_status_set(p->st, KMS_ERR_CONFIG, "%s:%d: %s", p->path,
	    p->cur.line, msg);
	p->err_line = p->cur.line;
	return 0;
}

int
inifile_fail(struct inifile_parse *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	inifile_vfail(p, fmt, ap);
	va_end(ap);
	return 0;
}

char *
inifile_reader(char *buf, int size, void *stream)
{
	struct inifile_parse *p = stream;
	size_t content;

	if (p->st->err != 0)
		return NULL;
	switch (inifile_take_line(&p->cur, buf, size, &content)) {
	case INIFILE_LINE:
		return buf;
	case INIFILE_TOO_LONG:
		inifile_fail(p, "line is longer than %d bytes", size - 2);
		return NULL;
	case INIFILE_INDENTED:
		inifile_fail(p, "indented line (continuation lines are not "
		    "supported)");
		return NULL;
	default:
		return NULL;
	}
}

int
inifile_parse_file(struct inifile_parse *p,
    int (*handler)(void *user, const char *section, const char *key,
    const char *value), void *user)
{
	char *text = NULL;
	int r;

	if ((r = inifile_read(p->path, &text, p->st)) != 0)
		return r;
	p->cur.next = text;
	r = ini_parse_stream(inifile_reader, p, handler, user);
	free(text);
	if (r > 0 && (p->st->err == 0 || r < p->err_line))
		return kms_status_set(p->st, KMS_ERR_CONFIG, "%s:%d: syntax "
		    "error (expected [section] or key = value)", p->path, r);
	return p->st->err;
}

int
inifile_join_path(char *dst, size_t size, const char *dir, const char *value)
{
	int n;

	if (value[0] == '/' || dir[0] == '\0')
		n = snprintf(dst, size, "%s", value);
	else if (strcmp(dir, "/") == 0)
		n = snprintf(dst, size, "/%s", value);
	else
		n = snprintf(dst, size, "%s/%s", dir, value);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}
