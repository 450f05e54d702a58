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

#endif /* KMS_INIFILE_H */
