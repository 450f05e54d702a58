/*
 * secret.h: buffers that hold secrets (PINs, plaintext data keys).
 *
 * They are wiped with OPENSSL_cleanse when freed and compared in constant
 * time.  Nothing in here logs.
 */
#ifndef KMS_SECRET_H
#define KMS_SECRET_H

#include <stddef.h>
#include <stdint.h>

struct secret {
	uint8_t *buf;
	size_t len;
};

/* Allocates a zeroed secret of len bytes; returns NULL on failure. */
struct secret *secret_new(size_t len);
/* Wipes and frees; NULL is a no-op. */
void secret_free(struct secret *s);
/* Wipes and frees a plain buffer of len bytes; NULL is a no-op. */
void secret_freezero(void *p, size_t len);
/* 1 when equal (constant time in the length of a), 0 otherwise. */
int secret_equal(const struct secret *a, const struct secret *b);

/*
 * Reads a PIN from path.  The file must be a regular file owned by the
 * caller and not readable, writable or executable by group or others
 * (mode 0600 or 0400), and not a symbolic link: anything else is refused
 * with KMS_ERR_CONFIG (KMS_ERR_IO when it cannot be read).
 * A trailing newline is dropped.  The PIN must be 1..256 bytes.
 * On success *out holds the PIN (free with secret_free).
 */
int secret_read_pin_file(const char *path, struct secret **out);

#endif /* KMS_SECRET_H */
