/*
 * log.c: the operational log on stderr.
 *
 * One line per message: time, level, text; or one JSON object per line
 * (--log-format json) with the same fields.  The level threshold and the
 * format are the only state; they are set once at start-up, before any
 * thread exists.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kmserr.h"
#include "log.h"

static enum log_level log_threshold = LOG_LEVEL_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level level)
{
	log_threshold = level;
}

void
log_set_format(enum log_format format)
{
	log_fmt = format;
}

int
log_format_parse(const char *s, enum log_format *out)
{
	if (s != NULL && strcmp(s, "text") == 0)
		*out = LOG_FORMAT_TEXT;
	else if (s != NULL && strcmp(s, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return KMS_ERR_INVALID_ARGUMENT;
	return 0;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (s != NULL && strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return KMS_ERR_INVALID_ARGUMENT;
}

/*
 * s as the body of a JSON string into buf (size len, truncated, always
 * NUL-terminated): quotes, backslashes and every byte outside printable
 * ASCII escaped, so that the line is valid JSON whatever s holds.
 */
static void
json_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	unsigned char c;

	for (; *s != '\0' && o + 7 < len; s++) {
		c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			memcpy(buf + o, "\\u00", 4);
			buf[o + 4] = hex[c >> 4];
			buf[o + 5] = hex[c & 0xf];
			o += 6;
		} else
			buf[o++] = (char)c;
	}
	buf[o] = '\0';
}

/* Writes one line; source and file may be NULL (kmsd's own message). */
static void
log_line(enum log_level level, const char *source, const char *file,
    int line, const char *text)
{
	char ts[32], esc[6 * 2048 + 8], efile[6 * 128 + 8], where[1024];
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	where[0] = '\0';
	/* One fprintf per line so that lines from threads do not interleave. */
	if (log_fmt == LOG_FORMAT_JSON) {
		json_escape(text, esc, sizeof(esc));
		if (source != NULL) {
			json_escape(file != NULL ? file : "", efile,
			    sizeof(efile));
			snprintf(where, sizeof(where), ",\"source\":\"%s\","
			    "\"file\":\"%s\",\"line\":%d", source, efile,
			    line);
		}
		fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\","
		    "\"msg\":\"%s\"%s}\n", ts, (long)(now.tv_nsec / 1000000),
		    level_names[level], esc, where);
		return;
	}
	if (source != NULL) {
		/* A library's message is not trusted to be one clean line. */
		log_escape(file != NULL ? file : "", efile, 128);
		snprintf(where, sizeof(where), "%s: %s:%d: ", source, efile,
		    line);
		text = log_escape(text, esc, sizeof(esc));
	}
	fprintf(stderr, "%s.%03ldZ kmsd %s: %s%s\n", ts,
	    (long)(now.tv_nsec / 1000000), level_names[level], where, text);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	if (level > log_threshold)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_line(level, NULL, NULL, 0, line);
}

void
log_external(enum log_level level, const char *source, const char *file,
    int line, const char *msg)
{
	char text[2048];

	if (level > log_threshold)
		return;
	snprintf(text, sizeof(text), "%s", msg != NULL ? msg : "");
	log_line(level, source, file, line, text);
}

char *
log_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[4];
	size_t o = 0, n;
	unsigned char c;

	if (buf == NULL || len == 0)
		return buf;
	if (s == NULL)
		s = "(null)";
	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			n = 2;
		} else if (c < 0x20 || c >= 0x7f) {
			tmp[0] = '\\';
			tmp[1] = 'x';
			tmp[2] = hex[c >> 4];
			tmp[3] = hex[c & 0xf];
			n = 4;
		} else {
			tmp[0] = (char)c;
			n = 1;
		}
		/* Keep room for "..." and the terminator. */
		if (o + n + 4 > len) {
			if (len > 4) {
				memcpy(buf + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(buf + o, tmp, n);
		o += n;
	}
	buf[o] = '\0';
	return buf;
}
