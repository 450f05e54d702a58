/*
 * p11util.h: what the benchmark's PKCS#11 programs (p11raw, kmsfill) share:
 * loading a module, finding a token by label and logging in with a PIN
 * read from a file, and listing objects.
 */
#ifndef BENCH_P11UTIL_H
#define BENCH_P11UTIL_H

#include <p11-kit/pkcs11.h>

struct p11 {
	CK_FUNCTION_LIST_PTR f;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE s;		/* read-write, logged in as the user */
	unsigned int open_retries;	/* times the token was not found */
};

/*
 * Loads module, initialises it (OS locking), finds the token labelled
 * token, opens a read-write session and logs in with the PIN in pin_file,
 * which is wiped at once.  A token not found is looked for again, up to 20
 * times in 1 s (p->open_retries counts them).  prog names the program in
 * error messages.
 * Returns 0, or -1 after printing why.
 */
int p11_open(struct p11 *p, const char *prog, const char *module,
    const char *token, const char *pin_file);
/* Closes the session and finalizes the module. */
void p11_close(struct p11 *p);

/*
 * The handles of every object matching tpl (n attributes) into a malloc'd
 * array of *count handles.  Returns the CK_RV of the first failing call.
 */
CK_RV p11_find_all(struct p11 *p, CK_ATTRIBUTE *tpl, CK_ULONG n,
    CK_OBJECT_HANDLE **out, CK_ULONG *count);

/*
 * Reads one variable-length attribute into a malloc'd, NUL-terminated
 * buffer of *len bytes (the NUL not counted).
 */
CK_RV p11_get_attr(struct p11 *p, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
    unsigned char **buf, CK_ULONG *len);

#endif /* BENCH_P11UTIL_H */
