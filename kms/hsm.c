/*
 * hsm.c: the PKCS#11 layer (see hsm.h).  The only file that includes
 * pkcs11.h.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "algo.h"
#include "hsm.h"
#include "kmserr.h"
#include "log.h"
#include "secret.h"

#define PIN_FILE_MAX 4096

struct hsm {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SLOT_ID slot;
	char pin_file[PIN_FILE_MAX];
	pthread_mutex_t login_lock;	/* serialises logins after a loss */
	/*
	 * Serialises, within this process, every call that reads or writes
	 * the token's object store (searches, attribute reads, creation,
	 * destruction, generation); recursive, since hsm_list's callback
	 * may read objects.  SoftHSM2's file store guards its object files
	 * against other processes with fcntl(2) locks, which threads of one
	 * process do not see and which any close(2) of the same file by
	 * another thread drops: concurrent threads could then read an object
	 * that another process is writing, half-written, and SoftHSM2 keeps
	 * such an object invalid (invisible to searches) until it changes
	 * again.  Signing with a known key is not serialised.
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

static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
	{ CKR_OK, "CKR_OK" },
	{ CKR_CANCEL, "CKR_CANCEL" },
	{ CKR_HOST_MEMORY, "CKR_HOST_MEMORY" },
	{ CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID" },
	{ CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR" },
	{ CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED" },
	{ CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD" },
	{ CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY" },
	{ CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE" },
	{ CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID" },
	{ CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID" },
	{ CKR_DATA_INVALID, "CKR_DATA_INVALID" },
	{ CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE" },
	{ CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR" },
	{ CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY" },
	{ CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED" },
	{ CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED" },
	{ CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED" },
	{ CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID" },
	{ CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE" },
	{ CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT" },
	{ CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED" },
	{ CKR_KEY_NOT_WRAPPABLE, "CKR_KEY_NOT_WRAPPABLE" },
	{ CKR_KEY_UNEXTRACTABLE, "CKR_KEY_UNEXTRACTABLE" },
	{ CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID" },
	{ CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID" },
	{ CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID" },
	{ CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE" },
	{ CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED" },
	{ CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT" },
	{ CKR_PIN_LOCKED, "CKR_PIN_LOCKED" },
	{ CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED" },
	{ CKR_SESSION_COUNT, "CKR_SESSION_COUNT" },
	{ CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID" },
	{ CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY" },
	{ CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID" },
	{ CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE" },
	{ CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT" },
	{ CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT" },
	{ CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED" },
	{ CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED" },
	{ CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN" },
	{ CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN" },
	{ CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED" },
	{ CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID" },
	{ CKR_WRAPPED_KEY_INVALID, "CKR_WRAPPED_KEY_INVALID" },
	{ CKR_WRAPPED_KEY_LEN_RANGE, "CKR_WRAPPED_KEY_LEN_RANGE" },
	{ CKR_RANDOM_NO_RNG, "CKR_RANDOM_NO_RNG" },
	{ CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL" },
	{ CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED" },
	{ CKR_CRYPTOKI_ALREADY_INITIALIZED,
	    "CKR_CRYPTOKI_ALREADY_INITIALIZED" },
	{ CKR_NEED_TO_CREATE_THREADS, "CKR_NEED_TO_CREATE_THREADS" },
	{ CKR_CANT_LOCK, "CKR_CANT_LOCK" },
	{ CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID" },
	{ CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE" },
	{ CKR_PIN_INVALID, "CKR_PIN_INVALID" },
	{ CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE" },
	{ CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED" },
	{ CKR_SIGNATURE_LEN_RANGE, "CKR_SIGNATURE_LEN_RANGE" },
	{ CKR_UNWRAPPING_KEY_HANDLE_INVALID,
	    "CKR_UNWRAPPING_KEY_HANDLE_INVALID" },
	{ CKR_WRAPPING_KEY_HANDLE_INVALID, "CKR_WRAPPING_KEY_HANDLE_INVALID" },
	{ CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
	    "CKR_USER_ANOTHER_ALREADY_LOGGED_IN" },
	{ CKR_USER_TOO_MANY_TYPES, "CKR_USER_TOO_MANY_TYPES" },
	{ CKR_SESSION_EXISTS, "CKR_SESSION_EXISTS" },
	{ CKR_SESSION_PARALLEL_NOT_SUPPORTED,
	    "CKR_SESSION_PARALLEL_NOT_SUPPORTED" },
	{ CKR_SESSION_READ_ONLY_EXISTS, "CKR_SESSION_READ_ONLY_EXISTS" },
	{ CKR_SESSION_READ_WRITE_SO_EXISTS,
	    "CKR_SESSION_READ_WRITE_SO_EXISTS" },
	{ CKR_RANDOM_SEED_NOT_SUPPORTED, "CKR_RANDOM_SEED_NOT_SUPPORTED" },
	{ CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID" },
	{ CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED" },
	{ CKR_MUTEX_BAD, "CKR_MUTEX_BAD" },
	{ CKR_MUTEX_NOT_LOCKED, "CKR_MUTEX_NOT_LOCKED" },
	{ CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED" },
	{ CKR_VENDOR_DEFINED, "CKR_VENDOR_DEFINED" },
};

static const char *
rv_name(CK_RV rv)
{
	size_t i;

	for (i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	return "CKR_(other)";
}

/* One place where CKR_* values become kms errors, logged once. */
static int
map_rv(const char *fn, CK_RV rv)
{
	int err;

	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_WRAPPING_KEY_HANDLE_INVALID:
	case CKR_UNWRAPPING_KEY_HANDLE_INVALID:
		err = KMS_ERR_STALE_HANDLE;
		break;
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_FUNCTION_CANCELED:
	case CKR_SESSION_COUNT:
	/*
	 * These three reach here only when the recovery (a new session, a
	 * new login) failed or the retry failed again: the token is not
	 * usable right now.
	 */
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
		err = KMS_ERR_UNAVAILABLE;
		break;
	case CKR_HOST_MEMORY:
		err = KMS_ERR_NOMEM;
		break;
	default:
		err = KMS_ERR_HSM;
	}
	log_warn("hsm: %s failed: %s (0x%lx)", fn, rv_name(rv),
	    (unsigned long)rv);
	return err;
}

static CK_RV
login(struct hsm *hsm, CK_SESSION_HANDLE h)
{
	struct secret *pin = NULL;
	int r;
	CK_RV rv;

	if ((r = secret_read_pin_file(hsm->pin_file, &pin)) != 0) {
		log_warn("hsm: cannot log in again: PIN file %s: %s",
		    hsm->pin_file, kms_strerror(r));
		return CKR_FUNCTION_FAILED;
	}
	rv = hsm->f->C_Login(h, CKU_USER, pin->buf, pin->len);
	secret_free(pin);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv != CKR_OK)
		map_rv("C_Login", rv);
	return rv;
}

/*
 * Called after a failed call: repairs what can be repaired and returns 1
 * when the call should be made once more.
 */
static int
recover(struct hsm_session *s, CK_RV rv)
{
	struct hsm *hsm = s->hsm;
	CK_SESSION_HANDLE nh;
	CK_RV r;

	if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
		log_warn("hsm: session lost (%s): opening a new one",
		    rv_name(rv));
		r = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION |
		    CKF_RW_SESSION, NULL, NULL, &nh);
		if (r != CKR_OK) {
			map_rv("C_OpenSession", r);
			return 0;
		}
		/*
		 * The old handle is most likely gone already; closing it
		 * anyway frees it when the module only said so.
		 */
		(void)hsm->f->C_CloseSession(s->h);
		s->h = nh;
		/* The login may have ended with the old session. */
		pthread_mutex_lock(&hsm->login_lock);
		r = login(hsm, nh);
		pthread_mutex_unlock(&hsm->login_lock);
		return r == CKR_OK;
	}
	if (rv == CKR_USER_NOT_LOGGED_IN) {
		log_warn("hsm: not logged in: logging in again");
		pthread_mutex_lock(&hsm->login_lock);
		r = login(hsm, s->h);
		pthread_mutex_unlock(&hsm->login_lock);
		return r == CKR_OK;
	}
	return 0;
}

/* Runs expr (which sets rv) and retries it once after a recovery. */
#define P11_CALL(s, fn, expr) do {					\
	int tries_;							\
	for (tries_ = 0; ; tries_++) {					\
		expr;							\
		if (rv == CKR_OK || tries_ > 0 || !recover((s), rv))	\
			break;						\
	}								\
} while (0)

int
hsm_open(const char *module, const char *token_label, const char *pin_file,
    struct hsm **out, struct kms_status *st)
{
	CK_C_GetFunctionList getfl;
	CK_C_INITIALIZE_ARGS init;
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64, i;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	struct secret *pin = NULL;
	pthread_mutexattr_t ma;
	struct hsm *hsm;
	char label[33];
	size_t n;
	int r, found = 0, ours = 0;
	CK_RV rv;

	*out = NULL;
	if (strlen(pin_file) >= PIN_FILE_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "PIN file path too "
		    "long");
	if ((hsm = calloc(1, sizeof(*hsm))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&hsm->login_lock, NULL);
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&hsm->store_lock, &ma);
	pthread_mutexattr_destroy(&ma);
	strcpy(hsm->pin_file, pin_file);
	if ((hsm->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "cannot load PKCS#11 "
		    "module %s: %s", module, dlerror());
		goto fail;
	}
	if ((getfl = (CK_C_GetFunctionList)dlsym(hsm->dl,
	    "C_GetFunctionList")) == NULL ||
	    getfl(&hsm->f) != CKR_OK || hsm->f == NULL) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "%s is not a PKCS#11 "
		    "module (no C_GetFunctionList)", module);
		goto fail;
	}
	memset(&init, 0, sizeof(init));
	init.flags = CKF_OS_LOCKING_OK;
	if ((rv = hsm->f->C_Initialize(&init)) != CKR_OK &&
	    rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		r = kms_status_set(st, map_rv("C_Initialize", rv),
		    "cannot initialise %s: %s", module, rv_name(rv));
		goto fail;
	}
	/*
	 * Another struct hsm in this process may have initialised the module
	 * already; only the one that did finalizes it.
	 */
	ours = rv == CKR_OK;
	if ((rv = hsm->f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK) {
		r = kms_status_set(st, map_rv("C_GetSlotList", rv),
		    "cannot list slots: %s", rv_name(rv));
		goto fail;
	}
	for (i = 0; i < nslots && !found; i++) {
		if (hsm->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		for (n = 32; n > 0 && label[n - 1] == ' '; n--)
			label[n - 1] = '\0';
		if (strcmp(label, token_label) == 0) {
			hsm->slot = slots[i];
			found = 1;
		}
	}
	if (!found) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "no token labelled "
		    "\"%s\" in %s (%lu tokens present)", token_label, module,
		    (unsigned long)nslots);
		goto fail;
	}
	if ((r = secret_read_pin_file(pin_file, &pin)) != 0) {
		if (r == KMS_ERR_IO)
			kms_status_set(st, r, "cannot read PIN file %s",
			    pin_file);
		else
			kms_status_set(st, r, "PIN file %s refused: it must "
			    "exist and be a regular file (not a symbolic link) "
			    "owned by this user with mode 0600 or 0400, "
			    "holding 1 to 256 bytes", pin_file);
		goto fail;
	}
	if ((rv = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &h)) != CKR_OK) {
		r = kms_status_set(st, map_rv("C_OpenSession", rv),
		    "cannot open a session: %s", rv_name(rv));
		goto fail;
	}
	rv = hsm->f->C_Login(h, CKU_USER, pin->buf, pin->len);
	secret_free(pin);
	pin = NULL;
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED ||
		    rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE) {
			log_warn("hsm: C_Login failed: %s", rv_name(rv));
			r = kms_status_set(st, KMS_ERR_CONFIG, "login to token "
			    "\"%s\" failed: %s (PIN file %s)", token_label,
			    rv == CKR_PIN_INCORRECT ? "wrong PIN" :
			    rv == CKR_PIN_LOCKED ? "PIN locked" : rv_name(rv),
			    pin_file);
		} else
			r = kms_status_set(st, map_rv("C_Login", rv), "login to "
			    "token \"%s\" failed: %s", token_label, rv_name(rv));
		goto fail;
	}
	/*
	 * The login belongs to the application, not to this session; keep
	 * the session open so that the login does not end with it.
	 */
	hsm->login_session = h;
	hsm->initialized = ours;
	*out = hsm;
	return 0;
 fail:
	secret_free(pin);
	if (h != CK_INVALID_HANDLE)
		hsm->f->C_CloseSession(h);
	if (ours)
		hsm->f->C_Finalize(NULL);
	/*
	 * A module that has run C_Initialize stays loaded (see hsm_close);
	 * one that has not may go.
	 */
	if (hsm->dl != NULL && !ours)
		dlclose(hsm->dl);
	pthread_mutex_destroy(&hsm->login_lock);
	pthread_mutex_destroy(&hsm->store_lock);
	free(hsm);
	return r;
}

void
hsm_close(struct hsm *hsm)
{
	if (hsm == NULL)
		return;
	/*
	 * Closing the last session ends the login too.  Another struct hsm
	 * on the same module keeps its own sessions and its initialisation.
	 */
	hsm->f->C_CloseSession(hsm->login_session);
	if (hsm->initialized) {
		hsm->f->C_CloseAllSessions(hsm->slot);
		hsm->f->C_Finalize(NULL);
	}
	/*
	 * The module is never unloaded (no dlclose): SoftHSM2 registers
	 * OpenSSL and atexit state that would point into unmapped code, and
	 * leak reports under AddressSanitizer need its symbols at exit.  The
	 * mapping is reused if the module is opened again.
	 */
	pthread_mutex_destroy(&hsm->login_lock);
	pthread_mutex_destroy(&hsm->store_lock);
	free(hsm);
}

int
hsm_session_open(struct hsm *hsm, struct hsm_session **out)
{
	struct hsm_session *s;
	CK_RV rv;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KMS_ERR_NOMEM;
	s->hsm = hsm;
	if ((rv = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &s->h)) != CKR_OK) {
		free(s);
		return map_rv("C_OpenSession", rv);
	}
	*out = s;
	return 0;
}

void
hsm_session_close(struct hsm_session *s)
{
	if (s == NULL)
		return;
	s->hsm->f->C_CloseSession(s->h);
	free(s);
}

static const uint8_t oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};
static const uint8_t oid_p384[] = {
	0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22
};
/*
 * Ed25519 as the OID 1.3.101.112 (RFC 8410).  PKCS#11 3.0 allows this or
 * the PrintableString "edwards25519"; SoftHSM2 2.6.1 takes both, and the
 * OID is what the SubjectPublicKeyInfo carries as well.
 */
static const uint8_t oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

/*
 * The attributes every private or secret key is born with, in one place:
 * a token object, private, sensitive and never extractable, named by
 * label and id.  Adds them to tpl at *n.
 */
static void
add_protected_key(CK_ATTRIBUTE *tpl, CK_ULONG *n, const char *label,
    const uint8_t *id, size_t idlen)
{
	static CK_BBOOL t = CK_TRUE, f = CK_FALSE;

	ADD(tpl, *n, CKA_TOKEN, &t, sizeof(t));
	ADD(tpl, *n, CKA_PRIVATE, &t, sizeof(t));
	ADD(tpl, *n, CKA_SENSITIVE, &t, sizeof(t));
	ADD(tpl, *n, CKA_EXTRACTABLE, &f, sizeof(f));
	ADD(tpl, *n, CKA_LABEL, label, strlen(label));
	ADD(tpl, *n, CKA_ID, id, idlen);
}

static int
hsm_generate_key_pair_unlocked(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen,
    hsm_handle_t *priv, hsm_handle_t *pub)
{
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG bits = alg->bits;
	CK_BYTE exp[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
	CK_ATTRIBUTE pubt[8], privt[8];
	CK_ULONG np = 0, nv = 0;
	CK_RV rv;

	ADD(pubt, np, CKA_TOKEN, &t, sizeof(t));
	ADD(pubt, np, CKA_PRIVATE, &f, sizeof(f));
	ADD(pubt, np, CKA_VERIFY, &t, sizeof(t));
	ADD(pubt, np, CKA_LABEL, label, strlen(label));
	ADD(pubt, np, CKA_ID, id, idlen);
	add_protected_key(privt, &nv, label, id, idlen);
	ADD(privt, nv, CKA_SIGN, &t, sizeof(t));
	switch (alg->family) {
	case KMS_FAMILY_EC:
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		if (alg->bits == 256)
			ADD(pubt, np, CKA_EC_PARAMS, oid_p256, sizeof(oid_p256));
		else
			ADD(pubt, np, CKA_EC_PARAMS, oid_p384, sizeof(oid_p384));
		break;
	case KMS_FAMILY_EDDSA:
		mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
		ADD(pubt, np, CKA_EC_PARAMS, oid_ed25519, sizeof(oid_ed25519));
		break;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		ADD(pubt, np, CKA_MODULUS_BITS, &bits, sizeof(bits));
		ADD(pubt, np, CKA_PUBLIC_EXPONENT, exp, sizeof(exp));
		break;
	default:
		return KMS_ERR_INVALID_ARGUMENT;
	}
	P11_CALL(s, "C_GenerateKeyPair", rv = s->hsm->f->C_GenerateKeyPair(
	    s->h, &mech, pubt, np, privt, nv, &hpub, &hpriv));
	if (rv != CKR_OK)
		return map_rv("C_GenerateKeyPair", rv);
	*priv = hpriv;
	*pub = hpub;
	return 0;
}

static int
hsm_generate_secret_key_unlocked(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen, hsm_handle_t *key)
{
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = alg->bits / 8;
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_OBJECT_HANDLE h = 0;
	CK_ATTRIBUTE tpl[14];
	CK_ULONG n = 0;
	CK_RV rv;

	if (alg->family != KMS_FAMILY_AES_WRAP)
		return KMS_ERR_INVALID_ARGUMENT;
	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, n, CKA_VALUE_LEN, &len, sizeof(len));
	add_protected_key(tpl, &n, label, id, idlen);
	ADD(tpl, n, CKA_WRAP, &t, sizeof(t));
	ADD(tpl, n, CKA_UNWRAP, &t, sizeof(t));
	ADD(tpl, n, CKA_ENCRYPT, &f, sizeof(f));
	ADD(tpl, n, CKA_DECRYPT, &f, sizeof(f));
	P11_CALL(s, "C_GenerateKey", rv = s->hsm->f->C_GenerateKey(s->h,
	    &mech, tpl, n, &h));
	if (rv != CKR_OK)
		return map_rv("C_GenerateKey", rv);
	*key = h;
	return 0;
}

static CK_OBJECT_CLASS
p11_class(enum hsm_obj_class cls)
{
	switch (cls) {
	case HSM_OBJ_PRIVATE_KEY:
		return CKO_PRIVATE_KEY;
	case HSM_OBJ_PUBLIC_KEY:
		return CKO_PUBLIC_KEY;
	case HSM_OBJ_SECRET_KEY:
		return CKO_SECRET_KEY;
	default:
		return CKO_DATA;
	}
}

/*
 * Runs the search tpl: at most max handles in out, their number in *n.
 * No other call may run inside a search, so the handles come first.
 */
static int
search_unlocked(struct hsm_session *s, CK_ATTRIBUTE *tpl, CK_ULONG nt,
    hsm_handle_t *out, size_t max, size_t *n)
{
	CK_OBJECT_HANDLE batch[16];
	CK_ULONG got = 0, i;
	CK_RV rv;

	*n = 0;
	P11_CALL(s, "C_FindObjectsInit", rv = s->hsm->f->C_FindObjectsInit(
	    s->h, tpl, nt));
	if (rv != CKR_OK)
		return map_rv("C_FindObjectsInit", rv);
	for (;;) {
		rv = s->hsm->f->C_FindObjects(s->h, batch,
		    sizeof(batch) / sizeof(batch[0]), &got);
		if (rv != CKR_OK || got == 0)
			break;
		for (i = 0; i < got; i++) {
			if (*n < max)
				out[*n] = batch[i];
			(*n)++;
		}
		if (*n >= max)
			break;
	}
	s->hsm->f->C_FindObjectsFinal(s->h);
	if (rv != CKR_OK)
		return map_rv("C_FindObjects", rv);
	if (*n > max)
		*n = max;
	return 0;
}

static int
hsm_find_all_unlocked(struct hsm_session *s, enum hsm_obj_class cls,
    const char *label, hsm_handle_t *out, size_t max, size_t *n)
{
	CK_OBJECT_CLASS c = p11_class(cls);
	CK_ATTRIBUTE tpl[3];
	CK_ULONG nt = 0;

	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	ADD(tpl, nt, CKA_LABEL, label, strlen(label));
	if (cls == HSM_OBJ_DATA)
		ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
		    strlen(HSM_DATA_APPLICATION));
	return search_unlocked(s, tpl, nt, out, max, n);
}

static int
hsm_find_data_value_unlocked(struct hsm_session *s, const uint8_t *value,
    size_t len, hsm_handle_t *out, size_t max, size_t *n)
{
	CK_OBJECT_CLASS c = CKO_DATA;
	CK_ATTRIBUTE tpl[3];
	CK_ULONG nt = 0;

	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
	    strlen(HSM_DATA_APPLICATION));
	ADD(tpl, nt, CKA_VALUE, value, len);
	return search_unlocked(s, tpl, nt, out, max, n);
}

/* The CKA_KEY_TYPE of the key pairs of alg. */
static int
pair_key_type(const struct kms_alg_info *alg, CK_KEY_TYPE *kt)
{
	switch (alg->family) {
	case KMS_FAMILY_EC:
		*kt = CKK_EC;
		return 0;
	case KMS_FAMILY_EDDSA:
		*kt = CKK_EC_EDWARDS;
		return 0;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		*kt = CKK_RSA;
		return 0;
	default:
		return KMS_ERR_INVALID_ARGUMENT;
	}
}

#define PAIR_FIND_MAX 16

static int
hsm_find_key_pair_unlocked(struct hsm_session *s,
    const struct kms_alg_info *alg, const char *label, hsm_handle_t *priv,
    hsm_handle_t *pub)
{
	hsm_handle_t found[PAIR_FIND_MAX];
	CK_OBJECT_CLASS c;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE tpl[2], a;
	CK_ULONG nt = 0;
	size_t n, i;
	int r;
	CK_RV rv;

	*priv = *pub = 0;
	if ((r = pair_key_type(alg, &kt)) != 0)
		return r;
	/*
	 * The key type before the label: SoftHSM2 tests the template in
	 * order.  Its file store decrypts the label of every private object
	 * it tests, and data objects (a third of a key store's token) fail
	 * on the key type already; its db store looks both up in SQLite, and
	 * only keys get that far.  (Measured at 10,000 keys, the label first
	 * cost both stores more: 0.2 s on the file store, 0.3 s of CPU on
	 * the db store.)
	 */
	ADD(tpl, nt, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, nt, CKA_LABEL, label, strlen(label));
	if ((r = search_unlocked(s, tpl, nt, found, PAIR_FIND_MAX, &n)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		a.type = CKA_CLASS;
		a.pValue = &c;
		a.ulValueLen = sizeof(c);
		P11_CALL(s, "C_GetAttributeValue", rv =
		    s->hsm->f->C_GetAttributeValue(s->h, found[i], &a, 1));
		if ((r = map_rv("C_GetAttributeValue", rv)) != 0) {
			/* Destroyed by another process meanwhile. */
			if (r == KMS_ERR_STALE_HANDLE)
				continue;
			*priv = *pub = 0;
			return r;
		}
		if (c == CKO_PRIVATE_KEY && *priv == 0)
			*priv = found[i];
		else if (c == CKO_PUBLIC_KEY && *pub == 0)
			*pub = found[i];
	}
	if (*priv == 0 || *pub == 0) {
		*priv = *pub = 0;
		return KMS_ERR_NOT_FOUND;
	}
	return 0;
}

int
hsm_find(struct hsm_session *s, enum hsm_obj_class cls, const char *label,
    hsm_handle_t *out)
{
	size_t n;
	int r;

	if ((r = hsm_find_all(s, cls, label, out, 1, &n)) != 0)
		return r;
	return n == 0 ? KMS_ERR_NOT_FOUND : 0;
}

/* Reads one variable-length attribute into a malloc'd, NUL-terminated buffer. */
static int
get_attr(struct hsm_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
    uint8_t **buf, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*buf = NULL;
	P11_CALL(s, "C_GetAttributeValue", rv = s->hsm->f->C_GetAttributeValue(
	    s->h, h, &a, 1));
	if (rv != CKR_OK)
		return map_rv("C_GetAttributeValue", rv);
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return KMS_ERR_HSM;
	if ((a.pValue = malloc(a.ulValueLen + 1)) == NULL)
		return KMS_ERR_NOMEM;
	if ((rv = s->hsm->f->C_GetAttributeValue(s->h, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return map_rv("C_GetAttributeValue", rv);
	}
	((uint8_t *)a.pValue)[a.ulValueLen] = '\0';
	*buf = a.pValue;
	*len = a.ulValueLen;
	return 0;
}

/*
 * The buffers of one listing.  The value buffer starts at a size that
 * holds the usual key metadata document and grows to the largest value
 * seen, so that an object costs one C_GetAttributeValue call.
 */
#define LIST_VALUE_INITIAL 4096
#define LIST_READ_TRIES 3

struct list_bufs {
	char label[HSM_LABEL_MAX];
	uint8_t *value;			/* NULL: labels only */
	size_t cap;			/* of value, its NUL not counted */
};

/*
 * Reads the label of h, and its value when b has a value buffer, in one
 * call.  When a buffer is too small (CKR_BUFFER_TOO_SMALL, or a length
 * reported larger than the buffer) the exact sizes are asked for and the
 * read made again; an object that changes size meanwhile is read again,
 * a few times at most.  Returns KMS_ERR_NOT_FOUND for a label of
 * HSM_LABEL_MAX bytes or more or one holding a NUL (the object is
 * skipped).
 */
static int
read_label_value(struct hsm_session *s, CK_OBJECT_HANDLE h,
    struct list_bufs *b, struct hsm_object *o)
{
	CK_ATTRIBUTE a[2];
	CK_ULONG na = b->value != NULL ? 2 : 1;
	uint8_t *nv;
	int tries;
	CK_RV rv;

	for (tries = 0; tries < LIST_READ_TRIES; tries++) {
		a[0].type = CKA_LABEL;
		a[0].pValue = b->label;
		a[0].ulValueLen = sizeof(b->label) - 1;
		a[1].type = CKA_VALUE;
		a[1].pValue = b->value;
		a[1].ulValueLen = b->cap;
		P11_CALL(s, "C_GetAttributeValue", rv =
		    s->hsm->f->C_GetAttributeValue(s->h, h, a, na));
		if (rv == CKR_OK && a[0].ulValueLen < sizeof(b->label) &&
		    (na == 1 || a[1].ulValueLen <= b->cap)) {
			b->label[a[0].ulValueLen] = '\0';
			/* A NUL inside: not a label of ours. */
			if (strlen(b->label) != a[0].ulValueLen)
				return KMS_ERR_NOT_FOUND;
			o->h = h;
			o->label = b->label;
			o->value = b->value;
			o->value_len = 0;
			if (na == 2) {
				b->value[a[1].ulValueLen] = '\0';
				o->value_len = a[1].ulValueLen;
			}
			return 0;
		}
		if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
			return map_rv("C_GetAttributeValue", rv);
		a[0].pValue = a[1].pValue = NULL;
		P11_CALL(s, "C_GetAttributeValue", rv =
		    s->hsm->f->C_GetAttributeValue(s->h, h, a, na));
		if (rv != CKR_OK)
			return map_rv("C_GetAttributeValue", rv);
		if (a[0].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
		    (na == 2 && a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION))
			return KMS_ERR_HSM;
		if (a[0].ulValueLen >= HSM_LABEL_MAX)
			return KMS_ERR_NOT_FOUND;
		if (na == 2 && a[1].ulValueLen > b->cap) {
			if ((nv = realloc(b->value, a[1].ulValueLen + 1)) ==
			    NULL)
				return KMS_ERR_NOMEM;
			b->value = nv;
			b->cap = a[1].ulValueLen;
		}
	}
	log_warn("hsm: object %lu keeps changing size while it is read",
	    (unsigned long)h);
	return KMS_ERR_HSM;
}

static int
hsm_list_unlocked(struct hsm_session *s, enum hsm_obj_class cls,
    int want_value, int (*cb)(const struct hsm_object *o, void *arg),
    void *arg)
{
	CK_OBJECT_CLASS c = p11_class(cls);
	CK_OBJECT_HANDLE batch[256], *all = NULL, *n;
	CK_ATTRIBUTE tpl[2];
	CK_ULONG nt = 0, got = 0;
	struct list_bufs *b = NULL;
	struct hsm_object o;
	size_t nall = 0, cap = 0, i;
	int r = 0;
	CK_RV rv;

	if ((b = calloc(1, sizeof(*b))) == NULL ||
	    (want_value && (b->value = malloc(LIST_VALUE_INITIAL + 1)) ==
	    NULL)) {
		free(b);
		return KMS_ERR_NOMEM;
	}
	b->cap = want_value ? LIST_VALUE_INITIAL : 0;
	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	if (cls == HSM_OBJ_DATA)
		ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
		    strlen(HSM_DATA_APPLICATION));
	P11_CALL(s, "C_FindObjectsInit", rv = s->hsm->f->C_FindObjectsInit(
	    s->h, tpl, nt));
	if (rv != CKR_OK) {
		r = map_rv("C_FindObjectsInit", rv);
		goto out;
	}
	/* Collect the handles first: no other call may run inside a search. */
	for (;;) {
		if ((rv = s->hsm->f->C_FindObjects(s->h, batch, 256,
		    &got)) != CKR_OK) {
			s->hsm->f->C_FindObjectsFinal(s->h);
			r = map_rv("C_FindObjects", rv);
			goto out;
		}
		if (got == 0)
			break;
		if (nall + got > cap) {
			cap = (nall + got) * 2;
			if ((n = realloc(all, cap * sizeof(*all))) == NULL) {
				s->hsm->f->C_FindObjectsFinal(s->h);
				r = KMS_ERR_NOMEM;
				goto out;
			}
			all = n;
		}
		memcpy(all + nall, batch, got * sizeof(*batch));
		nall += got;
	}
	s->hsm->f->C_FindObjectsFinal(s->h);
	for (i = 0; i < nall && r == 0; i++) {
		if ((r = read_label_value(s, all[i], b, &o)) != 0) {
			/*
			 * Destroyed by another process since the search, or
			 * a label that cannot be one of ours.
			 */
			if (r == KMS_ERR_STALE_HANDLE || r == KMS_ERR_NOT_FOUND)
				r = 0;
			continue;
		}
		r = cb(&o, arg);
	}
 out:
	free(all);
	if (b != NULL)
		free(b->value);
	free(b);
	return r;
}

static const uint8_t digestinfo_sha256[] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
	0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
};

/* Raw r || s to a DER ECDSA-Sig-Value. */
static int
ecdsa_to_der(const uint8_t *raw, size_t rawlen, uint8_t *sig, size_t *siglen)
{
	ECDSA_SIG *es;
	BIGNUM *r, *sv;
	unsigned char *p = sig;
	int len;

	if (rawlen == 0 || rawlen % 2 != 0)
		return KMS_ERR_HSM;
	r = BN_bin2bn(raw, (int)(rawlen / 2), NULL);
	sv = BN_bin2bn(raw + rawlen / 2, (int)(rawlen / 2), NULL);
	if ((es = ECDSA_SIG_new()) == NULL || r == NULL || sv == NULL ||
	    ECDSA_SIG_set0(es, r, sv) != 1) {
		BN_free(r);
		BN_free(sv);
		ECDSA_SIG_free(es);
		return KMS_ERR_NOMEM;
	}
	len = i2d_ECDSA_SIG(es, NULL);
	if (len <= 0 || (size_t)len > *siglen) {
		ECDSA_SIG_free(es);
		return KMS_ERR_INTERNAL;
	}
	len = i2d_ECDSA_SIG(es, &p);
	ECDSA_SIG_free(es);
	*siglen = (size_t)len;
	return 0;
}

int
hsm_sign(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t priv, const uint8_t *in, size_t inlen, uint8_t *sig,
    size_t *siglen)
{
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t buf[HSM_SIG_MAX], msg[64 + sizeof(digestinfo_sha256)];
	const uint8_t *data = in;
	CK_ULONG dlen = inlen, outlen;
	CK_RV rv;

	/*
	 * Digests have their exact length and raw input its bound here as
	 * well as in the handlers; Ed25519 messages are bounded by the
	 * configured message size.
	 */
	if (!alg->can_sign)
		return KMS_ERR_FAILED_PRECONDITION;
	if ((alg->digest_len != 0 && inlen != alg->digest_len) ||
	    (alg->family == KMS_FAMILY_RSA_RAW &&
	    (inlen == 0 || inlen > alg->max_raw_len)))
		return KMS_ERR_INVALID_ARGUMENT;
	switch (alg->family) {
	case KMS_FAMILY_EC:
		mech.mechanism = CKM_ECDSA;
		break;
	case KMS_FAMILY_EDDSA:
		mech.mechanism = CKM_EDDSA;
		break;
	case KMS_FAMILY_RSA_PKCS1:
		/* CKM_RSA_PKCS pads what it is given: add the DigestInfo. */
		if (alg->hash != KMS_HASH_SHA256 || inlen != 32)
			return KMS_ERR_INVALID_ARGUMENT;
		mech.mechanism = CKM_RSA_PKCS;
		memcpy(msg, digestinfo_sha256, sizeof(digestinfo_sha256));
		memcpy(msg + sizeof(digestinfo_sha256), in, inlen);
		data = msg;
		dlen = sizeof(digestinfo_sha256) + inlen;
		break;
	case KMS_FAMILY_RSA_PSS:
		if (alg->hash != KMS_HASH_SHA256 || inlen != 32)
			return KMS_ERR_INVALID_ARGUMENT;
		mech.mechanism = CKM_RSA_PKCS_PSS;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
		break;
	case KMS_FAMILY_RSA_RAW:
		mech.mechanism = CKM_RSA_PKCS;
		break;
	default:
		return KMS_ERR_FAILED_PRECONDITION;
	}
	for (int tries = 0; ; tries++) {
		rv = s->hsm->f->C_SignInit(s->h, &mech, priv);
		if (rv == CKR_OK) {
			outlen = sizeof(buf);
			rv = s->hsm->f->C_Sign(s->h, (CK_BYTE_PTR)data, dlen,
			    buf, &outlen);
			if (rv != CKR_OK) {
				if (tries > 0 || !recover(s, rv))
					return map_rv("C_Sign", rv);
				continue;
			}
			break;
		}
		if (tries > 0 || !recover(s, rv))
			return map_rv("C_SignInit", rv);
	}
	if (alg->family == KMS_FAMILY_EC)
		return ecdsa_to_der(buf, outlen, sig, siglen);
	if (outlen > *siglen)
		return KMS_ERR_INTERNAL;
	memcpy(sig, buf, outlen);
	*siglen = outlen;
	return 0;
}

/*
 * CKA_EC_POINT as the standard and SoftHSM2 give it, a DER OCTET STRING
 * around the point, or as some modules give it, the bare point.  The
 * length of the bare point (want) tells the two apart: an uncompressed
 * point also starts with 0x04.
 */
static int
ec_point(const uint8_t **p, size_t *len, size_t want)
{
	if (*len == want)
		return 0;
	if (*len == want + 2 && want < 0x80 && (*p)[0] == 0x04 &&
	    (*p)[1] == want) {
		*p += 2;
		*len -= 2;
		return 0;
	}
	if (*len == want + 3 && want < 0x100 && (*p)[0] == 0x04 &&
	    (*p)[1] == 0x81 && (*p)[2] == want) {
		*p += 3;
		*len -= 3;
		return 0;
	}
	return KMS_ERR_HSM;
}

static int
hsm_public_key_der_unlocked(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t pub, uint8_t **der, size_t *derlen)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	uint8_t *a = NULL, *b = NULL, *out = NULL;
	const uint8_t *pt;
	size_t alen = 0, blen = 0, ptlen;
	int len, r;

	*der = NULL;
	switch (alg->family) {
	case KMS_FAMILY_EC:
	case KMS_FAMILY_EDDSA:
		if ((r = get_attr(s, pub, CKA_EC_POINT, &a, &alen)) != 0)
			goto out;
		pt = a;
		ptlen = alen;
		/* Ed25519: 32 bytes; EC: 0x04 || X || Y, uncompressed. */
		if ((r = ec_point(&pt, &ptlen, alg->family ==
		    KMS_FAMILY_EDDSA ? 32 : 1 + 2 * ((alg->bits + 7) / 8))) != 0) {
			log_warn("hsm: CKA_EC_POINT of %lu bytes is not a %s "
			    "public key", (unsigned long)alen, alg->name);
			goto out;
		}
		r = KMS_ERR_HSM;
		if (alg->family == KMS_FAMILY_EDDSA) {
			pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519,
			    NULL, pt, ptlen);
			break;
		}
		if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_utf8_string(bld,
		    OSSL_PKEY_PARAM_GROUP_NAME, alg->bits == 256 ?
		    "prime256v1" : "secp384r1", 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld,
		    OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen) ||
		    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
		    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ==
		    NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
		    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY,
		    params) != 1)
			goto out;
		break;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		if ((r = get_attr(s, pub, CKA_MODULUS, &a, &alen)) != 0 ||
		    (r = get_attr(s, pub, CKA_PUBLIC_EXPONENT, &b, &blen)) != 0)
			goto out;
		r = KMS_ERR_HSM;
		if ((bn_n = BN_bin2bn(a, (int)alen, NULL)) == NULL ||
		    (bn_e = BN_bin2bn(b, (int)blen, NULL)) == NULL ||
		    (bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
		    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
		    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ==
		    NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
		    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY,
		    params) != 1)
			goto out;
		break;
	default:
		r = KMS_ERR_FAILED_PRECONDITION;
		goto out;
	}
	r = KMS_ERR_HSM;
	if (pk == NULL || (len = i2d_PUBKEY(pk, &out)) <= 0)
		goto out;
	if ((*der = malloc((size_t)len)) == NULL) {
		r = KMS_ERR_NOMEM;
		goto out;
	}
	memcpy(*der, out, (size_t)len);
	*derlen = (size_t)len;
	r = 0;
 out:
	OPENSSL_free(out);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	free(a);
	free(b);
	return r;
}

static int
hsm_data_create_unlocked(struct hsm_session *s, const char *label,
    const uint8_t *data, size_t len, hsm_handle_t *out)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL t = CK_TRUE;
	CK_ATTRIBUTE tpl[7];
	CK_OBJECT_HANDLE h = 0;
	CK_ULONG n = 0;
	CK_RV rv;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_TOKEN, &t, sizeof(t));
	ADD(tpl, n, CKA_PRIVATE, &t, sizeof(t));
	ADD(tpl, n, CKA_MODIFIABLE, &t, sizeof(t));
	ADD(tpl, n, CKA_LABEL, label, strlen(label));
	ADD(tpl, n, CKA_APPLICATION, HSM_DATA_APPLICATION,
	    strlen(HSM_DATA_APPLICATION));
	ADD(tpl, n, CKA_VALUE, data, len);
	P11_CALL(s, "C_CreateObject", rv = s->hsm->f->C_CreateObject(s->h,
	    tpl, n, &h));
	if (rv != CKR_OK)
		return map_rv("C_CreateObject", rv);
	*out = h;
	return 0;
}

int
hsm_data_set(struct hsm_session *s, const char *label, hsm_handle_t *h,
    const uint8_t *data, size_t len)
{
	CK_ATTRIBUTE a = { CKA_VALUE, (void *)data, len };
	hsm_handle_t nh;
	int r;
	CK_RV rv;

	P11_CALL(s, "C_SetAttributeValue", rv = s->hsm->f->C_SetAttributeValue(
	    s->h, *h, &a, 1));
	if (rv != CKR_ATTRIBUTE_READ_ONLY)
		return map_rv("C_SetAttributeValue", rv);
	/* Make the new object first: the value is never missing. */
	if ((r = hsm_data_create(s, label, data, len, &nh)) != 0)
		return r;
	if ((r = hsm_destroy(s, *h)) != 0 && r != KMS_ERR_STALE_HANDLE) {
		hsm_destroy(s, nh);
		return r;
	}
	*h = nh;
	return 0;
}

static int
hsm_data_get_unlocked(struct hsm_session *s, hsm_handle_t h, uint8_t **data,
    size_t *len)
{
	return get_attr(s, h, CKA_VALUE, data, len);
}

static int
hsm_label_get_unlocked(struct hsm_session *s, hsm_handle_t h, char *label,
    size_t size)
{
	uint8_t *buf;
	size_t len;
	int r;

	if ((r = get_attr(s, h, CKA_LABEL, &buf, &len)) != 0)
		return r;
	if (len >= size || strlen((char *)buf) != len)
		r = KMS_ERR_HSM;
	else
		memcpy(label, buf, len + 1);
	free(buf);
	return r;
}

static int
hsm_label_set_unlocked(struct hsm_session *s, hsm_handle_t h,
    const char *label)
{
	CK_ATTRIBUTE a = { CKA_LABEL, (void *)label, strlen(label) };
	CK_RV rv;

	P11_CALL(s, "C_SetAttributeValue", rv = s->hsm->f->C_SetAttributeValue(
	    s->h, h, &a, 1));
	return map_rv("C_SetAttributeValue", rv);
}

static int
hsm_destroy_unlocked(struct hsm_session *s, hsm_handle_t h)
{
	CK_RV rv;

	P11_CALL(s, "C_DestroyObject", rv = s->hsm->f->C_DestroyObject(s->h,
	    h));
	return map_rv("C_DestroyObject", rv);
}

static int
hsm_key_is_protected_unlocked(struct hsm_session *s, hsm_handle_t h, int *ok)
{
	CK_BBOOL sens = 0, asens = 0, extr = 1, nextr = 0;
	CK_ATTRIBUTE a[] = {
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		{ CKA_NEVER_EXTRACTABLE, &nextr, sizeof(nextr) },
	};
	CK_RV rv;

	*ok = 0;
	P11_CALL(s, "C_GetAttributeValue", rv = s->hsm->f->C_GetAttributeValue(
	    s->h, h, a, 4));
	/* A public key or a data object has no such attributes: not protected. */
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return 0;
	if (rv != CKR_OK)
		return map_rv("C_GetAttributeValue", rv);
	*ok = sens == CK_TRUE && asens == CK_TRUE && extr == CK_FALSE &&
	    nextr == CK_TRUE;
	return 0;
}

int
hsm_random(struct hsm_session *s, uint8_t *buf, size_t len)
{
	CK_RV rv;

	P11_CALL(s, "C_GenerateRandom", rv = s->hsm->f->C_GenerateRandom(
	    s->h, buf, len));
	return map_rv("C_GenerateRandom", rv);
}

/* A session secret object holding bytes, so that they can be wrapped. */
static int
transient_secret(struct hsm_session *s, const uint8_t *in, size_t inlen,
    CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ATTRIBUTE tpl[6];
	CK_ULONG n = 0;
	CK_RV rv;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, n, CKA_TOKEN, &f, sizeof(f));
	ADD(tpl, n, CKA_EXTRACTABLE, &t, sizeof(t));
	ADD(tpl, n, CKA_SENSITIVE, &f, sizeof(f));
	ADD(tpl, n, CKA_VALUE, in, inlen);
	P11_CALL(s, "C_CreateObject", rv = s->hsm->f->C_CreateObject(s->h,
	    tpl, n, out));
	return map_rv("C_CreateObject", rv);
}

int
hsm_wrap(struct hsm_session *s, hsm_handle_t kek, const uint8_t *in,
    size_t inlen, uint8_t *out, size_t *outlen, unsigned long *mech)
{
	CK_MECHANISM m = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_OBJECT_HANDLE obj = 0;
	CK_ULONG olen = 0;
	CK_RV rv;
	int r, tries;

	if (inlen == 0 || inlen > HSM_WRAP_MAX_IN ||
	    *outlen < ((inlen + 7) / 8) * 8 + 8)
		return KMS_ERR_INVALID_ARGUMENT;
	/*
	 * The transient object lives in the session: after a recovery it
	 * is gone with the old session and is made again in the new one.
	 */
	for (tries = 0; ; tries++) {
		if ((r = transient_secret(s, in, inlen, &obj)) != 0)
			return r;
		olen = *outlen;
		rv = s->hsm->f->C_WrapKey(s->h, &m, kek, obj, out, &olen);
		(void)s->hsm->f->C_DestroyObject(s->h, obj);
		if (rv == CKR_OK || tries > 0 || !recover(s, rv))
			break;
	}
	if (rv != CKR_OK)
		return map_rv("C_WrapKey", rv);
	*outlen = olen;
	*mech = CKM_AES_KEY_WRAP_PAD;
	return 0;
}

int
hsm_unwrap(struct hsm_session *s, hsm_handle_t kek, unsigned long mech,
    const uint8_t *in, size_t inlen, struct secret **out)
{
	CK_MECHANISM m = { mech, NULL, 0 };
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_OBJECT_HANDLE obj = 0;
	CK_ATTRIBUTE tpl[5];
	CK_ULONG n = 0;
	uint8_t *val = NULL;
	size_t vlen = 0;
	int r;
	CK_RV rv;

	*out = NULL;
	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, n, CKA_TOKEN, &f, sizeof(f));
	ADD(tpl, n, CKA_EXTRACTABLE, &t, sizeof(t));
	ADD(tpl, n, CKA_SENSITIVE, &f, sizeof(f));
	P11_CALL(s, "C_UnwrapKey", rv = s->hsm->f->C_UnwrapKey(s->h, &m,
	    kek, (CK_BYTE_PTR)in, inlen, tpl, n, &obj));
	if (rv != CKR_OK) {
		/*
		 * The integrity check of the key wrap failed.  SoftHSM2 says
		 * CKR_GENERAL_ERROR for a tampered blob, the standard
		 * CKR_WRAPPED_KEY_INVALID or CKR_ENCRYPTED_DATA_INVALID; a
		 * blob naming a mechanism this module lacks is not its blob.
		 */
		if (rv == CKR_GENERAL_ERROR || rv == CKR_WRAPPED_KEY_INVALID ||
		    rv == CKR_WRAPPED_KEY_LEN_RANGE || rv == CKR_DATA_INVALID ||
		    rv == CKR_ENCRYPTED_DATA_INVALID ||
		    rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
		    rv == CKR_MECHANISM_INVALID) {
			log_warn("hsm: C_UnwrapKey failed: %s (0x%lx): the "
			    "wrapped blob does not verify", rv_name(rv),
			    (unsigned long)rv);
			return KMS_ERR_VERIFY_FAILED;
		}
		return map_rv("C_UnwrapKey", rv);
	}
	r = get_attr(s, obj, CKA_VALUE, &val, &vlen);
	s->hsm->f->C_DestroyObject(s->h, obj);
	if (r != 0)
		return r;
	if ((*out = secret_new(vlen)) == NULL) {
		secret_freezero(val, vlen + 1);
		return KMS_ERR_NOMEM;
	}
	memcpy((*out)->buf, val, vlen);
	secret_freezero(val, vlen + 1);
	return 0;
}

/* The object-store calls, serialised in this process (see store_lock). */

int
hsm_generate_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen,
    hsm_handle_t *priv, hsm_handle_t *pub)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_generate_key_pair_unlocked(s, alg, label, id, idlen, priv, pub);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_generate_secret_key(struct hsm_session *s,
    const struct kms_alg_info *alg, const char *label, const uint8_t *id,
    size_t idlen, hsm_handle_t *key)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_generate_secret_key_unlocked(s, alg, label, id, idlen, key);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_find_all(struct hsm_session *s, enum hsm_obj_class cls,
    const char *label, hsm_handle_t *out, size_t max, size_t *n)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_find_all_unlocked(s, cls, label, out, max, n);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_find_data_value(struct hsm_session *s, const uint8_t *value, size_t len,
    hsm_handle_t *out, size_t max, size_t *n)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_find_data_value_unlocked(s, value, len, out, max, n);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_find_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, hsm_handle_t *priv, hsm_handle_t *pub)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_find_key_pair_unlocked(s, alg, label, priv, pub);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

/* hsm_list's callback, called from the listing of labels. */
struct label_cb {
	int (*cb)(const char *label, hsm_handle_t h, void *arg);
	void *arg;
};

static int
label_only(const struct hsm_object *o, void *arg)
{
	struct label_cb *lc = arg;

	return lc->cb(o->label, o->h, lc->arg);
}

int
hsm_list(struct hsm_session *s, enum hsm_obj_class cls,
    int (*cb)(const char *label, hsm_handle_t h, void *arg), void *arg)
{
	struct label_cb lc = { cb, arg };
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_list_unlocked(s, cls, 0, label_only, &lc);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_list_data(struct hsm_session *s,
    int (*cb)(const struct hsm_object *o, void *arg), void *arg)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_list_unlocked(s, HSM_OBJ_DATA, 1, cb, arg);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_public_key_der(struct hsm_session *s,
    const struct kms_alg_info *alg, hsm_handle_t pub, uint8_t **der,
    size_t *derlen)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_public_key_der_unlocked(s, alg, pub, der, derlen);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_data_create(struct hsm_session *s, const char *label,
    const uint8_t *value, size_t len, hsm_handle_t *out)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_data_create_unlocked(s, label, value, len, out);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_data_get(struct hsm_session *s, hsm_handle_t h, uint8_t **value,
    size_t *len)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_data_get_unlocked(s, h, value, len);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_label_get(struct hsm_session *s, hsm_handle_t h, char *label,
    size_t size)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_label_get_unlocked(s, h, label, size);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_label_set(struct hsm_session *s, hsm_handle_t h, const char *label)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_label_set_unlocked(s, h, label);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_destroy(struct hsm_session *s, hsm_handle_t h)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_destroy_unlocked(s, h);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

int
hsm_key_is_protected(struct hsm_session *s, hsm_handle_t h, int *ok)
{
	int r;

	pthread_mutex_lock(&s->hsm->store_lock);
	r = hsm_key_is_protected_unlocked(s, h, ok);
	pthread_mutex_unlock(&s->hsm->store_lock);
	return r;
}

/*
 * HMAC-SHA256 keys for the audit log's batch seals (kms/auditkey.c): a
 * generic secret, born in the token, sensitive and never extractable,
 * that can only sign (MAC) and verify.
 */
int
hsm_generate_hmac_key(struct hsm_session *s, const char *label,
    hsm_handle_t *key)
{
	CK_BBOOL t = CK_TRUE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_ULONG len = HSM_HMAC_LEN;
	CK_MECHANISM mech = { CKM_GENERIC_SECRET_KEY_GEN, NULL, 0 };
	CK_OBJECT_HANDLE h = 0;
	CK_ATTRIBUTE tpl[12];
	CK_ULONG n = 0;
	CK_RV rv;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, n, CKA_VALUE_LEN, &len, sizeof(len));
	add_protected_key(tpl, &n, label, (const uint8_t *)label,
	    strlen(label));
	ADD(tpl, n, CKA_SIGN, &t, sizeof(t));
	ADD(tpl, n, CKA_VERIFY, &t, sizeof(t));
	pthread_mutex_lock(&s->hsm->store_lock);
	P11_CALL(s, "C_GenerateKey", rv = s->hsm->f->C_GenerateKey(s->h,
	    &mech, tpl, n, &h));
	pthread_mutex_unlock(&s->hsm->store_lock);
	if (rv != CKR_OK)
		return map_rv("C_GenerateKey", rv);
	*key = h;
	return 0;
}

int
hsm_hmac(struct hsm_session *s, hsm_handle_t key, const uint8_t *in,
    size_t inlen, uint8_t out[HSM_HMAC_LEN])
{
	CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
	CK_ULONG outlen = HSM_HMAC_LEN;
	CK_RV rv;

	P11_CALL(s, "C_Sign", {
		outlen = HSM_HMAC_LEN;
		if ((rv = s->hsm->f->C_SignInit(s->h, &mech, key)) == CKR_OK)
			rv = s->hsm->f->C_Sign(s->h, (CK_BYTE_PTR)in, inlen,
			    out, &outlen);
	});
	if (rv != CKR_OK)
		return map_rv("C_Sign", rv);
	return outlen == HSM_HMAC_LEN ? 0 : KMS_ERR_HSM;
}
