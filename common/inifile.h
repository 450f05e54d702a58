/*
 * inifile.h: what the configuration and policy parsers share in feeding
 * text to inih.
 *
 * The packaged inih neither tells its handler the line number nor copes
 * with lines longer than its 200-byte buffer (it cuts them and parses the
 * rest as a line of its own).  So a file is read whole, bounded, and
 * handed to inih one line at a time by the caller's reader, which takes
 * each line from inifile_take_line: lines are counted, over-long ones are
 * refused, and so are indented ones, which inih would take as the
 * continuation of the previous value and so silently replace it.
 */
#ifndef KMS_INIFILE_H
#define KMS_INIFILE_H

#include <stdarg.h>
#include <stddef.h>

struct kms_status;

#define INIFILE_MAX (1024 * 1024)	/* largest file accepted */

/*
 * Reads path whole into *out (malloc'd, NUL-terminated): at most
 * INIFILE_MAX bytes and no NUL byte, else KMS_ERR_CONFIG naming the file.
 */
int inifile_read(const char *path, char **out, struct kms_status *st);

struct inifile_cursor {
	const char *next;		/* text not yet handed out */
	int line;			/* number of the line last handed out */
};

enum inifile_take {
	INIFILE_END = 0,		/* no more text */
	INIFILE_LINE = 1,		/* a line is in buf */
	INIFILE_TOO_LONG = -1,		/* longer than size - 2 bytes */
	INIFILE_INDENTED = -2		/* an indented line with content */
};

/*
 * Copies the next line of c (with its newline) into buf of size bytes
 * (an inih reader's buffer) and counts it in c->line.  *content receives
 * its length without newline or carriage return.  The cursor moves on
 * only over a line handed out.
 */
enum inifile_take inifile_take_line(struct inifile_cursor *c, char *buf,
    int size, size_t *content);

/*
 * A configuration file being parsed: its name, the first error with its
 * line, and the text not yet handed to inih.  inifile_reader is the inih
 * reader over it (pass the struct as inih's stream).
 */
struct inifile_parse {
	const char *path;
	struct kms_status *st;
	struct inifile_cursor cur;
	int err_line;			/* line of the error in st, if any */
};

/*
 * Records the first error as "PATH:LINE: message" (KMS_ERR_CONFIG);
 * returns 0, what an inih handler returns to stop.
 */
int inifile_vfail(struct inifile_parse *p, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
int inifile_fail(struct inifile_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* inih's reader: one line of p per call, refusing long and indented ones. */
char *inifile_reader(char *buf, int size, void *stream);

/*
 * Reads p->path and hands it to inih, one checked line at a time, with
 * handler (inih's ini_handler) and user.  inih's own complaint (a line
 * that is neither [section] nor key = value) wins when it comes from an
 * earlier line than the handler's.  Returns 0 or the error in p->st.
 */
int inifile_parse_file(struct inifile_parse *p,
    int (*handler)(void *user, const char *section, const char *key,
    const char *value), void *user);

/*
 * dir/value into dst of size bytes, or value alone when it is absolute or
 * dir is empty; -1 when it does not fit.
 */
int inifile_join_path(char *dst, size_t size, const char *dir,
    const char *value);

#endif /* KMS_INIFILE_H */
