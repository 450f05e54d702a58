/*
 * hsm_int.h: what the files of the PKCS#11 layer share (hsm.c: the
 * module, sessions, login, recovery, generation and the cryptographic
 * calls; hsm_obj.c: searches, listings and object attributes).  Only
 * they include pkcs11.h; nothing else includes this header.
 */
#ifndef KMS_HSM_INT_H
#define KMS_HSM_INT_H

#include <pthread.h>

#include <p11-kit/pkcs11.h>

#include "hsm.h"

#define PIN_FILE_MAX 4096

struct metrics;

struct hsm {
	struct metrics *metrics;	/* NULL: off; set before any session */
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SLOT_ID slot;
	char pin_file[PIN_FILE_MAX];
	pthread_mutex_t login_lock;	/* serialises logins after a loss */
	/*
	 * Serialises, within this process, every call that reads or writes
	 * the token's object store (searches, attribute reads, creation,
	 * destruction, generation); each function takes it around its own
	 * calls and releases it before it calls back or returns.  SoftHSM2's
	 * file store guards its object files against other processes with
	 * fcntl(2) locks, which threads of one process do not see and which
	 * any close(2) of the same file by another thread drops: concurrent
	 * threads could then read an object that another process is writing,
	 * half-written, and SoftHSM2 keeps such an object invalid (invisible
	 * to searches) until it changes again.  Signing with a known key is
	 * not serialised.
	 */
	pthread_mutex_t store_lock;
	/*
	 * The session opened at login and kept open: the login belongs to
	 * the application and ends when its last session closes.
	 */
	CK_SESSION_HANDLE login_session;
	int initialized;		/* C_Initialize was ours to undo */
};

/* Appends one attribute to a template. */
#define ADD(tpl, n, ty, p, l) do {					\
	(tpl)[n].type = (ty);						\
	(tpl)[n].pValue = (void *)(p);					\
	(tpl)[n].ulValueLen = (l);					\
	(n)++;								\
} while (0)

struct hsm_session {
	struct hsm *hsm;
	CK_SESSION_HANDLE h;
};

/* The store lock of s's module (see struct hsm). */
void hsm_store_lock(struct hsm_session *s);
void hsm_store_unlock(struct hsm_session *s);

/* One place where CKR_* values become kms errors, logged once. */
int hsm_map_rv(const char *fn, CK_RV rv);

/*
 * Called after a failed call: repairs what can be repaired (a lost
 * session, a lost login) and returns 1 when the call should be made once
 * more.
 */
int hsm_recover(struct hsm_session *s, CK_RV rv);

/* Runs expr (which sets rv) and retries it once after a recovery. */
#define P11_CALL(s, expr) do {						\
	int tries_;							\
	for (tries_ = 0; ; tries_++) {					\
		expr;							\
		if (rv == CKR_OK || tries_ > 0 || !hsm_recover((s), rv))	\
			break;						\
	}								\
} while (0)

/*
 * Reads one variable-length attribute into a malloc'd, NUL-terminated
 * buffer.  Called with the store lock where the object is a token object.
 */
int hsm_get_attr(struct hsm_session *s, CK_OBJECT_HANDLE h,
    CK_ATTRIBUTE_TYPE type, uint8_t **buf, size_t *len);

#endif /* KMS_HSM_INT_H */
