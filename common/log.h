/*
 * log.h: the operational log, on stderr, apart from the audit log.
 *
 * Never pass key bytes, PINs or plaintext.  Untrusted strings (key names,
 * identities from certificates) go through log_escape() first so that a
 * client cannot forge log lines.
 */
#ifndef KMS_LOG_H
#define KMS_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG
};

enum log_format {
	LOG_FORMAT_TEXT = 0,	/* "TIME kmsd LEVEL: MESSAGE" */
	LOG_FORMAT_JSON		/* one JSON object per line */
};

void log_set_level(enum log_level level);
/* Set once at start-up, before any thread exists, as the level. */
void log_set_format(enum log_format format);
/* Parses "text" or "json"; returns 0 or KMS_ERR_INVALID_ARGUMENT. */
int log_format_parse(const char *s, enum log_format *out);
/* Parses "error", "warn", "info", "debug"; returns 0 or KMS_ERR_INVALID_ARGUMENT. */
int log_level_parse(const char *s, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A message from a library with its own logger (gRPC): logged under the
 * name source, with the file and line it came from, in the same format
 * and with the same threshold as kmsd's own.
 */
void log_external(enum log_level level, const char *source, const char *file,
    int line, const char *msg);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * Copies s into buf (size len), replacing control characters, quotes and
 * backslashes by escapes and truncating with "..." so the result always
 * fits and is NUL-terminated.  Returns buf.  s may be NULL ("(null)").
 */
char *log_escape(const char *s, char *buf, size_t len);

#endif /* KMS_LOG_H */
