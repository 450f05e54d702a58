/*
 * fileio.h: the one bounded file reader of kms, for configuration,
 * policy and PEM files.  (The PIN file has its own reader in secret.c:
 * it also checks owner and mode and never leaves the PIN in a heap
 * buffer that is not wiped.)
 */
#ifndef KMS_FILEIO_H
#define KMS_FILEIO_H

#include <stddef.h>

struct kms_status;

/*
 * Reads all of the regular file path, at most max bytes, into a new
 * NUL-terminated buffer *out (free with free(3); wipe it first when it
 * held a key) of *len bytes without the NUL.  A file that cannot be
 * opened or read, is not a regular file, or is larger than max is
 * KMS_ERR_CONFIG with path and the reason in st; out of memory is
 * KMS_ERR_NOMEM.  An empty file is read as "".
 */
int fileio_read(const char *path, size_t max, char **out, size_t *len,
    struct kms_status *st);

#endif /* KMS_FILEIO_H */
