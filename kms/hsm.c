/*
 * hsm.c: the PKCS#11 layer (see hsm.h): the module, sessions, login and
 * recovery, key generation and the cryptographic calls.  hsm_obj.c holds
 * searches, listings and object attributes, hsm_rv.c the names of return
 * values; these three files alone include pkcs11.h (via hsm_int.h).  The
 * layer gives raw attributes and raw signatures: encoding them is
 * pubkey.c's business.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "hsm.h"
#include "hsm_int.h"
#include "hsm_rv.h"
#include "kmserr.h"
#include "log.h"
#include "metrics.h"
#include "secret.h"

void
hsm_store_lock(struct hsm_session *s)
{
	pthread_mutex_lock(&s->hsm->store_lock);
}

void
hsm_store_unlock(struct hsm_session *s)
{
	pthread_mutex_unlock(&s->hsm->store_lock);
}

int
hsm_map_rv(const char *fn, CK_RV rv)
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
	log_warn("hsm: %s failed: %s (0x%lx)", fn, hsm_rv_name(rv),
	    (unsigned long)rv);
	return err;
}

/*
 * Logs session h in as the user with the PIN read from the PIN file, and
 * wipes the PIN.  Already logged in counts as done.  Returns 0, the error
 * of reading the PIN file (*rv then CKR_OK), or C_Login's (in *rv).
 */
static int
login(struct hsm *hsm, CK_SESSION_HANDLE h, CK_RV *rv)
{
	struct secret *pin = NULL;
	int r;

	*rv = CKR_OK;
	if ((r = secret_read_pin_file(hsm->pin_file, &pin)) != 0) {
		log_warn("hsm: cannot log in: PIN file %s: %s", hsm->pin_file,
		    kms_strerror(r));
		return r;
	}
	*rv = hsm->f->C_Login(h, CKU_USER, pin->buf, pin->len);
	secret_free(pin);
	if (*rv == CKR_USER_ALREADY_LOGGED_IN)
		*rv = CKR_OK;
	return hsm_map_rv("C_Login", *rv);
}

/* login, one thread at a time, after a lost login or session. */
static int
relogin(struct hsm *hsm, CK_SESSION_HANDLE h)
{
	CK_RV rv;
	int r;

	pthread_mutex_lock(&hsm->login_lock);
	r = login(hsm, h, &rv);
	pthread_mutex_unlock(&hsm->login_lock);
	return r == 0;
}

int
hsm_recover(struct hsm_session *s, CK_RV rv)
{
	struct hsm *hsm = s->hsm;
	CK_SESSION_HANDLE nh;
	CK_RV r;

	/* Every failed call comes here first (P11_CALL and the retry loops). */
	metrics_hsm_error(hsm->metrics, rv);

	/*
	 * CKR_OPERATION_ACTIVE: a call that should have ended an operation
	 * (C_FindObjectsFinal, C_Sign) failed and left it open, and every
	 * later call of its kind on the session would fail.  A new session
	 * has none.
	 */
	if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
	    rv == CKR_OPERATION_ACTIVE) {
		log_warn("hsm: session lost (%s): opening a new one",
		    hsm_rv_name(rv));
		r = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION |
		    CKF_RW_SESSION, NULL, NULL, &nh);
		if (r != CKR_OK) {
			hsm_map_rv("C_OpenSession", r);
			return 0;
		}
		/*
		 * The old handle is most likely gone already; closing it
		 * anyway frees it when the module only said so.
		 */
		(void)hsm->f->C_CloseSession(s->h);
		s->h = nh;
		/* The login may have ended with the old session. */
		return relogin(hsm, nh);
	}
	if (rv == CKR_USER_NOT_LOGGED_IN) {
		log_warn("hsm: not logged in: logging in again");
		return relogin(hsm, s->h);
	}
	return 0;
}

/* Finds the slot of the token labelled label. */
static int
find_slot(struct hsm *hsm, const char *module, const char *token_label,
    struct kms_status *st)
{
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64, i;
	CK_TOKEN_INFO ti;
	char label[33];
	size_t n;
	CK_RV rv;

	if ((rv = hsm->f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK)
		return kms_status_set(st, hsm_map_rv("C_GetSlotList", rv),
		    "cannot list slots: %s", hsm_rv_name(rv));
	for (i = 0; i < nslots; i++) {
		if (hsm->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		for (n = 32; n > 0 && label[n - 1] == ' '; n--)
			label[n - 1] = '\0';
		if (strcmp(label, token_label) == 0) {
			hsm->slot = slots[i];
			return 0;
		}
	}
	return kms_status_set(st, KMS_ERR_CONFIG, "no token labelled \"%s\" "
	    "in %s (%lu tokens present)", token_label, module,
	    (unsigned long)nslots);
}

int
hsm_open(const char *module, const char *token_label, const char *pin_file,
    struct hsm **out, struct kms_status *st)
{
	CK_C_GetFunctionList getfl;
	CK_C_INITIALIZE_ARGS init;
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
	struct hsm *hsm;
	int r, ours = 0;
	CK_RV rv;

	*out = NULL;
	if (strlen(pin_file) >= PIN_FILE_MAX)
		return kms_status_set(st, KMS_ERR_CONFIG, "PIN file path too "
		    "long");
	if ((hsm = calloc(1, sizeof(*hsm))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&hsm->login_lock, NULL);
	pthread_mutex_init(&hsm->store_lock, NULL);
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
		r = kms_status_set(st, hsm_map_rv("C_Initialize", rv),
		    "cannot initialise %s: %s", module, hsm_rv_name(rv));
		goto fail;
	}
	/*
	 * Another struct hsm in this process may have initialised the module
	 * already; only the one that did finalizes it.
	 */
	ours = rv == CKR_OK;
	if ((r = find_slot(hsm, module, token_label, st)) != 0)
		goto fail;
	if ((rv = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &h)) != CKR_OK) {
		r = kms_status_set(st, hsm_map_rv("C_OpenSession", rv),
		    "cannot open a session: %s", hsm_rv_name(rv));
		goto fail;
	}
	if ((r = login(hsm, h, &rv)) != 0) {
		if (rv == CKR_OK && r == KMS_ERR_IO)
			kms_status_set(st, r, "cannot read PIN file %s",
			    pin_file);
		else if (rv == CKR_OK)
			kms_status_set(st, r, "PIN file %s refused: it must "
			    "exist and be a regular file (not a symbolic link) "
			    "owned by this user with mode 0600 or 0400, "
			    "holding 1 to 256 bytes", pin_file);
		else if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED ||
		    rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE)
			r = kms_status_set(st, KMS_ERR_CONFIG, "login to token "
			    "\"%s\" failed: %s (PIN file %s)", token_label,
			    rv == CKR_PIN_INCORRECT ? "wrong PIN" :
			    rv == CKR_PIN_LOCKED ? "PIN locked" :
			    hsm_rv_name(rv), pin_file);
		else
			kms_status_set(st, r, "login to token \"%s\" failed: "
			    "%s", token_label, hsm_rv_name(rv));
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
		return hsm_map_rv("C_OpenSession", rv);
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
generate_key_pair_op(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen,
    hsm_handle_t *priv, hsm_handle_t *pub)
{
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG bits = alg->bits;
	CK_BYTE exp[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
	CK_ATTRIBUTE pubt[8], privt[12];
	CK_ULONG np = 0, nv = 0;
	CK_RV rv;

	ADD(pubt, np, CKA_TOKEN, &t, sizeof(t));
	ADD(pubt, np, CKA_PRIVATE, &f, sizeof(f));
	ADD(pubt, np, CKA_VERIFY, &t, sizeof(t));
	ADD(pubt, np, CKA_LABEL, label, strlen(label));
	ADD(pubt, np, CKA_ID, id, idlen);
	add_protected_key(privt, &nv, label, id, idlen);
	/*
	 * A signing key signs and does nothing else: modules default the
	 * other usages (SoftHSM2 gives an RSA private key decrypt and
	 * unwrap), so they are refused here explicitly.
	 */
	ADD(privt, nv, CKA_SIGN, &t, sizeof(t));
	ADD(privt, nv, CKA_DECRYPT, &f, sizeof(f));
	ADD(privt, nv, CKA_UNWRAP, &f, sizeof(f));
	ADD(privt, nv, CKA_DERIVE, &f, sizeof(f));
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
	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_GenerateKeyPair(s->h, &mech, pubt, np,
	    privt, nv, &hpub, &hpriv));
	hsm_store_unlock(s);
	if (rv != CKR_OK)
		return hsm_map_rv("C_GenerateKeyPair", rv);
	*priv = hpriv;
	*pub = hpub;
	return 0;
}

/*
 * A secret key born in the token: protected (add_protected_key) and usable
 * only as usage says, 1 or 0 for CKA_WRAP/UNWRAP/ENCRYPT/DECRYPT/SIGN/VERIFY.
 */
struct secret_usage {
	CK_BBOOL wrap, encrypt, sign;
};

static int
generate_secret(struct hsm_session *s, CK_MECHANISM_TYPE mt, CK_KEY_TYPE kt,
    CK_ULONG len, const struct secret_usage *u, const char *label,
    const uint8_t *id, size_t idlen, hsm_handle_t *key)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_MECHANISM mech = { mt, NULL, 0 };
	CK_OBJECT_HANDLE h = 0;
	CK_ATTRIBUTE tpl[16];
	CK_ULONG n = 0;
	CK_RV rv;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, n, CKA_VALUE_LEN, &len, sizeof(len));
	add_protected_key(tpl, &n, label, id, idlen);
	ADD(tpl, n, CKA_WRAP, &u->wrap, sizeof(u->wrap));
	ADD(tpl, n, CKA_UNWRAP, &u->wrap, sizeof(u->wrap));
	ADD(tpl, n, CKA_ENCRYPT, &u->encrypt, sizeof(u->encrypt));
	ADD(tpl, n, CKA_DECRYPT, &u->encrypt, sizeof(u->encrypt));
	ADD(tpl, n, CKA_SIGN, &u->sign, sizeof(u->sign));
	ADD(tpl, n, CKA_VERIFY, &u->sign, sizeof(u->sign));
	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_GenerateKey(s->h, &mech, tpl, n, &h));
	hsm_store_unlock(s);
	if (rv != CKR_OK)
		return hsm_map_rv("C_GenerateKey", rv);
	*key = h;
	return 0;
}

static int
generate_secret_key_op(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen, hsm_handle_t *key)
{
	static const struct secret_usage kek = { CK_TRUE, CK_FALSE, CK_FALSE };

	if (alg->family != KMS_FAMILY_AES_WRAP)
		return KMS_ERR_INVALID_ARGUMENT;
	return generate_secret(s, CKM_AES_KEY_GEN, CKK_AES, alg->bits / 8,
	    &kek, label, id, idlen, key);
}

static const uint8_t digestinfo_sha256[] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
	0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
};

static int
sign_op(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t priv, const uint8_t *in, size_t inlen, uint8_t *sig,
    size_t *siglen)
{
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t msg[64 + sizeof(digestinfo_sha256)];
	const uint8_t *data = in;
	CK_ULONG dlen = inlen, outlen;
	CK_RV rv;
	int tries;

	/*
	 * Digests have their exact length and raw input its bound here as
	 * well as in the handlers; Ed25519 messages are bounded by the
	 * configured message size.
	 */
	if (!alg->can_sign)
		return KMS_ERR_INTERNAL;	/* refused by the caller already */
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
	for (tries = 0; ; tries++) {
		if ((rv = s->hsm->f->C_SignInit(s->h, &mech, priv)) != CKR_OK) {
			if (tries > 0 || !hsm_recover(s, rv))
				return hsm_map_rv("C_SignInit", rv);
			continue;
		}
		outlen = *siglen;
		if ((rv = s->hsm->f->C_Sign(s->h, (CK_BYTE_PTR)data, dlen, sig,
		    &outlen)) == CKR_OK)
			break;
		if (tries > 0 || !hsm_recover(s, rv))
			return hsm_map_rv("C_Sign", rv);
	}
	*siglen = outlen;
	return 0;
}

static int
random_op(struct hsm_session *s, uint8_t *buf, size_t len)
{
	CK_RV rv;

	P11_CALL(s, rv = s->hsm->f->C_GenerateRandom(s->h, buf, len));
	return hsm_map_rv("C_GenerateRandom", rv);
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
	P11_CALL(s, rv = s->hsm->f->C_CreateObject(s->h,
	    tpl, n, out));
	return hsm_map_rv("C_CreateObject", rv);
}

/*
 * Destroys a transient object, which holds plaintext.  When the module
 * refuses twice, the session is replaced: a session's objects go with it.
 */
static void
transient_destroy(struct hsm_session *s, CK_OBJECT_HANDLE obj)
{
	if (s->hsm->f->C_DestroyObject(s->h, obj) == CKR_OK ||
	    s->hsm->f->C_DestroyObject(s->h, obj) == CKR_OK)
		return;
	log_warn("hsm: a transient object could not be destroyed: closing "
	    "its session");
	(void)hsm_recover(s, CKR_SESSION_CLOSED);
}

static int
wrap_op(struct hsm_session *s, hsm_handle_t kek, const uint8_t *in,
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
		transient_destroy(s, obj);
		if (rv == CKR_OK || tries > 0 || !hsm_recover(s, rv))
			break;
	}
	if (rv != CKR_OK)
		return hsm_map_rv("C_WrapKey", rv);
	*outlen = olen;
	*mech = CKM_AES_KEY_WRAP_PAD;
	return 0;
}

static int
unwrap_op(struct hsm_session *s, hsm_handle_t kek, unsigned long mech,
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
	P11_CALL(s, rv = s->hsm->f->C_UnwrapKey(s->h, &m,
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
			    "wrapped blob does not verify", hsm_rv_name(rv),
			    (unsigned long)rv);
			return KMS_ERR_VERIFY_FAILED;
		}
		return hsm_map_rv("C_UnwrapKey", rv);
	}
	r = hsm_get_attr(s, obj, CKA_VALUE, &val, &vlen);
	transient_destroy(s, obj);
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

/*
 * HMAC-SHA256 keys for the audit log's batch seals (kms/auditkey.c): a
 * generic secret, born in the token, sensitive and never extractable,
 * that can only sign (MAC) and verify.
 */
int
hsm_generate_hmac_key(struct hsm_session *s, const char *label,
    hsm_handle_t *key)
{
	static const struct secret_usage mac = { CK_FALSE, CK_FALSE, CK_TRUE };

	return generate_secret(s, CKM_GENERIC_SECRET_KEY_GEN,
	    CKK_GENERIC_SECRET, HSM_HMAC_LEN, &mac, label,
	    (const uint8_t *)label, strlen(label), key);
}

int
hsm_hmac(struct hsm_session *s, hsm_handle_t key, const uint8_t *in,
    size_t inlen, uint8_t out[HSM_HMAC_LEN])
{
	CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
	CK_ULONG outlen = HSM_HMAC_LEN;
	CK_RV rv;

	P11_CALL(s, {
		outlen = HSM_HMAC_LEN;
		if ((rv = s->hsm->f->C_SignInit(s->h, &mech, key)) == CKR_OK)
			rv = s->hsm->f->C_Sign(s->h, (CK_BYTE_PTR)in, inlen,
			    out, &outlen);
	});
	if (rv != CKR_OK)
		return hsm_map_rv("C_Sign", rv);
	return outlen == HSM_HMAC_LEN ? 0 : KMS_ERR_HSM;
}

int
hsm_session_copy(struct hsm_session *s, hsm_handle_t key, hsm_handle_t *copy)
{
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE tpl[] = { { CKA_TOKEN, &no, sizeof(no) } };
	CK_OBJECT_HANDLE h = 0;
	CK_RV rv;

	*copy = 0;
	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_CopyObject(s->h, key, tpl, 1, &h));
	hsm_store_unlock(s);
	if (rv != CKR_OK)
		return hsm_map_rv("C_CopyObject", rv);
	*copy = h;
	return 0;
}

/*
 * The operations as the metrics count them (kms_hsm_operations_total):
 * each public entry point runs its _op and counts the result.
 */
void
hsm_set_metrics(struct hsm *hsm, struct metrics *m)
{
	hsm->metrics = m;
}

static int
counted(struct hsm_session *s, enum metrics_hsm_op op, int r)
{
	metrics_hsm_op(s->hsm->metrics, op, r == 0);
	return r;
}

int
hsm_generate_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen,
    hsm_handle_t *priv, hsm_handle_t *pub)
{
	return counted(s, METRICS_HSM_GENERATE_KEY_PAIR, generate_key_pair_op(s,
	    alg, label, id, idlen, priv, pub));
}

int
hsm_generate_secret_key(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, const uint8_t *id, size_t idlen, hsm_handle_t *key)
{
	return counted(s, METRICS_HSM_GENERATE_KEY, generate_secret_key_op(s,
	    alg, label, id, idlen, key));
}

int
hsm_sign(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t priv, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen)
{
	return counted(s, METRICS_HSM_SIGN, sign_op(s, alg, priv, in, inlen,
	    sig, siglen));
}

int
hsm_random(struct hsm_session *s, uint8_t *buf, size_t len)
{
	return counted(s, METRICS_HSM_RANDOM, random_op(s, buf, len));
}

int
hsm_wrap(struct hsm_session *s, hsm_handle_t kek,
    const uint8_t *in, size_t inlen, uint8_t *out, size_t *outlen,
    unsigned long *mech)
{
	return counted(s, METRICS_HSM_WRAP, wrap_op(s, kek, in, inlen, out,
	    outlen, mech));
}

int
hsm_unwrap(struct hsm_session *s, hsm_handle_t kek, unsigned long mech,
    const uint8_t *in, size_t inlen, struct secret **out)
{
	return counted(s, METRICS_HSM_UNWRAP, unwrap_op(s, kek, mech, in, inlen,
	    out));
}
