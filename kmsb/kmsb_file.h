/*
 * kmsb_file.h: the file handling the bundle tools share (build/kmsb and
 * kmsctl ota): bounded whole-file reads, and output files that appear
 * whole or not at all (a temporary file beside the target, fsync'd and
 * renamed over it).
 */
#ifndef KMSB_FILE_H
#define KMSB_FILE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* An output file being written. */
struct kmsb_out {
	char path[PATH_MAX];
	char tmp[PATH_MAX];
	FILE *f;
};

/*
 * Starts writing path (through a temporary file; mode 0600 when secret,
 * else 0666 less the umask).  Returns 0, or -1 with errno set; ENOTSUP
 * when path exists and is not a regular file (a device or pipe, which the
 * rename into place would replace).
 */
int kmsb_out_open(struct kmsb_out *o, const char *path, int secret);
/* Flushes, syncs and renames into place; on failure removes it. -1/errno. */
int kmsb_out_commit(struct kmsb_out *o);
/* Removes the temporary file; no-op when not open. */
void kmsb_out_abort(struct kmsb_out *o);

/*
 * Reads all of path ("-": stdin) if it has at most max bytes, plus a NUL
 * after them (not counted).  Returns 0, -1 with errno (EFBIG: too large).
 */
int kmsb_read_file(const char *path, size_t max, uint8_t **buf,
    size_t *len);

#endif /* KMSB_FILE_H */
