/*
 * log.c: the operational log on stderr.
 *
 * One line per message: time, level, text.  The level threshold is the
 * only state; it is set once at start-up, before any thread exists.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kmserr.h"
#include "log.h"

static enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level level)
{
	log_threshold = level;
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

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048], ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level > log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line so that lines from threads do not interleave. */
	fprintf(stderr, "%s.%03ldZ kmsd %s: %s\n", ts,
	    (long)(now.tv_nsec / 1000000), level_names[level], line);
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
