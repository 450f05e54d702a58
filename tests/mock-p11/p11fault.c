/*
 * p11fault.c: a PKCS#11 module that forwards every call to a real module
 * (P11FAULT_MODULE, default SoftHSM2) and can make the Nth call of one
 * function fail with a chosen CK_RV, so that tests reach the error paths
 * of kms/hsm.c with a real token behind them.
 *
 *   p11fault_set("C_Sign", 1, CKR_DEVICE_ERROR);   the next C_Sign fails
 *   P11FAULT=C_Sign:2:0x30                          the second C_Sign after
 *                                                   C_Initialize fails
 *
 * The function "*" stands for any: p11fault_set("*", 5, rv) fails the
 * fifth PKCS#11 call, whichever it is (the fault sweep of
 * tests/unit/test_faults.c).  p11fault_armed() says whether a fault is
 * set and has not fired yet.
 *
 * A fault fires once, then the switch is clear again.  Two faults make
 * the failure real rather than only reported, so that a recovery has
 * something to repair: CKR_SESSION_HANDLE_INVALID and CKR_SESSION_CLOSED
 * close the real session, CKR_USER_NOT_LOGGED_IN logs the application
 * out of the real token.  A failed C_Sign ends the real signing operation,
 * as the standard says a failed C_Sign does.
 *
 * p11fault_calls("C_Sign") counts the calls made so far, so that a test
 * can see that a recovery opened a new session or logged in again.
 *
 *   P11FAULT_DOWN=/path/file                        while the file exists,
 *                                                   every call fails with
 *                                                   CKR_DEVICE_REMOVED
 *
 * lets a test outside the process pull the HSM out and plug it back in.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

void p11fault_set(const char *func, unsigned long nth, unsigned long rv);
void p11fault_clear(void);
unsigned long p11fault_calls(const char *func);
int p11fault_armed(void);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

/* The state of the switch is shared by every thread of the process. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char fault_func[64];
static unsigned long fault_nth;
static CK_RV fault_rv;
static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST ours;
static char down_path[4096];		/* P11FAULT_DOWN, or "" */

/* Enough rows for every function of a version 2.40 function list. */
#define MAX_COUNTED 80
static struct {
	const char *name;
	unsigned long calls;
} counted[MAX_COUNTED];

void
p11fault_set(const char *func, unsigned long nth, unsigned long rv)
{
	pthread_mutex_lock(&lock);
	snprintf(fault_func, sizeof(fault_func), "%s", func);
	fault_nth = nth;
	fault_rv = rv;
	pthread_mutex_unlock(&lock);
}

void
p11fault_clear(void)
{
	pthread_mutex_lock(&lock);
	fault_func[0] = '\0';
	fault_nth = 0;
	pthread_mutex_unlock(&lock);
}

unsigned long
p11fault_calls(const char *func)
{
	unsigned long n = 0;
	int i;

	pthread_mutex_lock(&lock);
	for (i = 0; i < MAX_COUNTED && counted[i].name != NULL; i++)
		if (strcmp(counted[i].name, func) == 0)
			n = counted[i].calls;
	pthread_mutex_unlock(&lock);
	return n;
}

int
p11fault_armed(void)
{
	int armed;

	pthread_mutex_lock(&lock);
	armed = fault_nth > 0 && fault_func[0] != '\0';
	pthread_mutex_unlock(&lock);
	return armed;
}

/* Counts the call and returns 1 with *rv when it is the one to fail. */
static int
fault_hit(const char *func, CK_RV *rv)
{
	int i, hit = 0;

	pthread_mutex_lock(&lock);
	for (i = 0; i < MAX_COUNTED; i++) {
		if (counted[i].name == NULL)
			counted[i].name = func;
		if (strcmp(counted[i].name, func) == 0) {
			counted[i].calls++;
			break;
		}
	}
	if (down_path[0] != '\0' && strcmp(func, "C_Finalize") != 0 &&
	    strcmp(func, "C_CloseSession") != 0 &&
	    access(down_path, F_OK) == 0) {
		*rv = CKR_DEVICE_REMOVED;
		hit = 1;
	} else if (fault_nth > 0 && (strcmp(fault_func, func) == 0 ||
	    strcmp(fault_func, "*") == 0) && --fault_nth == 0) {
		*rv = fault_rv;
		fault_func[0] = '\0';
		hit = 1;
	}
	pthread_mutex_unlock(&lock);
	return hit;
}

/* Makes a lost session or a lost login true in the real module. */
static void
fault_effect(CK_SESSION_HANDLE h, CK_RV rv)
{
	if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED)
		(void)real->C_CloseSession(h);
	else if (rv == CKR_USER_NOT_LOGGED_IN)
		(void)real->C_Logout(h);
}

/* A forwarder for a function without a session handle. */
#define FWD(name, params, args)						\
static CK_RV								\
w_##name params								\
{									\
	CK_RV frv_;							\
									\
	if (fault_hit("C_" #name, &frv_))				\
		return frv_;						\
	return real->C_##name args;					\
}

/* A forwarder for a function whose first parameter is the session h. */
#define FWD_S(name, params, args)					\
static CK_RV								\
w_##name params								\
{									\
	CK_RV frv_;							\
									\
	if (fault_hit("C_" #name, &frv_)) {				\
		fault_effect(h, frv_);					\
		return frv_;						\
	}								\
	return real->C_##name args;					\
}

FWD(Finalize, (CK_VOID_PTR r), (r))
FWD(GetInfo, (CK_INFO_PTR i), (i))
FWD(GetSlotList, (CK_BBOOL p, CK_SLOT_ID_PTR l, CK_ULONG_PTR n), (p, l, n))
FWD(GetSlotInfo, (CK_SLOT_ID s, CK_SLOT_INFO_PTR i), (s, i))
FWD(GetTokenInfo, (CK_SLOT_ID s, CK_TOKEN_INFO_PTR i), (s, i))
FWD(WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID_PTR s, CK_VOID_PTR r),
    (f, s, r))
FWD(GetMechanismList, (CK_SLOT_ID s, CK_MECHANISM_TYPE_PTR l,
    CK_ULONG_PTR n), (s, l, n))
FWD(GetMechanismInfo, (CK_SLOT_ID s, CK_MECHANISM_TYPE t,
    CK_MECHANISM_INFO_PTR i), (s, t, i))
FWD(InitToken, (CK_SLOT_ID s, CK_UTF8CHAR_PTR p, CK_ULONG pl,
    CK_UTF8CHAR_PTR l), (s, p, pl, l))
FWD(OpenSession, (CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n,
    CK_SESSION_HANDLE_PTR h), (s, f, a, n, h))
FWD(CloseAllSessions, (CK_SLOT_ID s), (s))

FWD_S(InitPIN, (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR p, CK_ULONG l),
    (h, p, l))
FWD_S(SetPIN, (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR o, CK_ULONG ol,
    CK_UTF8CHAR_PTR n, CK_ULONG nl), (h, o, ol, n, nl))
FWD_S(CloseSession, (CK_SESSION_HANDLE h), (h))
FWD_S(GetSessionInfo, (CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR i), (h, i))
FWD_S(GetOperationState, (CK_SESSION_HANDLE h, CK_BYTE_PTR s,
    CK_ULONG_PTR l), (h, s, l))
FWD_S(SetOperationState, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG l,
    CK_OBJECT_HANDLE e, CK_OBJECT_HANDLE a), (h, s, l, e, a))
FWD_S(Login, (CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p,
    CK_ULONG l), (h, u, p, l))
FWD_S(Logout, (CK_SESSION_HANDLE h), (h))
FWD_S(CreateObject, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n,
    CK_OBJECT_HANDLE_PTR o), (h, t, n, o))
FWD_S(CopyObject, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR no),
    (h, o, t, n, no))
FWD_S(DestroyObject, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o), (h, o))
FWD_S(GetObjectSize, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
    CK_ULONG_PTR n), (h, o, n))
FWD_S(GetAttributeValue, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, o, t, n))
FWD_S(SetAttributeValue, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n), (h, o, t, n))
FWD_S(FindObjectsInit, (CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t,
    CK_ULONG n), (h, t, n))
FWD_S(FindObjects, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o,
    CK_ULONG m, CK_ULONG_PTR n), (h, o, m, n))
FWD_S(FindObjectsFinal, (CK_SESSION_HANDLE h), (h))
FWD_S(EncryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(Encrypt, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(EncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(EncryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR ol),
    (h, o, ol))
FWD_S(DecryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(Decrypt, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(DecryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(DecryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR ol),
    (h, o, ol))
FWD_S(DigestInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m), (h, m))
FWD_S(Digest, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(DigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl),
    (h, d, dl))
FWD_S(DigestKey, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k), (h, k))
FWD_S(DigestFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR ol),
    (h, o, ol))
FWD_S(SignInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(SignUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl),
    (h, d, dl))
FWD_S(SignFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR ol),
    (h, o, ol))
FWD_S(SignRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(SignRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(VerifyInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(Verify, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR s, CK_ULONG sl), (h, d, dl, s, sl))
FWD_S(VerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl),
    (h, d, dl))
FWD_S(VerifyFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sl),
    (h, s, sl))
FWD_S(VerifyRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE k), (h, m, k))
FWD_S(VerifyRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, s, sl, o, ol))
FWD_S(DigestEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(DecryptDigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(SignEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl,
    CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(DecryptVerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d,
    CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, d, dl, o, ol))
FWD_S(GenerateKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (h, m, t, n, k))
FWD_S(GenerateKeyPair, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_ATTRIBUTE_PTR pt, CK_ULONG pn, CK_ATTRIBUTE_PTR vt, CK_ULONG vn,
    CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv),
    (h, m, pt, pn, vt, vn, pub, priv))
FWD_S(WrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w,
    CK_OBJECT_HANDLE k, CK_BYTE_PTR o, CK_ULONG_PTR ol), (h, m, w, k, o, ol))
FWD_S(UnwrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE u, CK_BYTE_PTR in, CK_ULONG inl, CK_ATTRIBUTE_PTR t,
    CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (h, m, u, in, inl, t, n, k))
FWD_S(DeriveKey, (CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR t, CK_ULONG n,
    CK_OBJECT_HANDLE_PTR k), (h, m, b, t, n, k))
FWD_S(SeedRandom, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG l),
    (h, s, l))
FWD_S(GenerateRandom, (CK_SESSION_HANDLE h, CK_BYTE_PTR b, CK_ULONG n),
    (h, b, n))
FWD_S(GetFunctionStatus, (CK_SESSION_HANDLE h), (h))
FWD_S(CancelFunction, (CK_SESSION_HANDLE h), (h))

static CK_RV
w_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
    CK_ULONG_PTR sl)
{
	CK_BYTE buf[1024];
	CK_ULONG n = sizeof(buf);
	CK_RV rv;

	if (!fault_hit("C_Sign", &rv))
		return real->C_Sign(h, d, dl, s, sl);
	/* A failed C_Sign ends the operation: finish the real one unseen. */
	(void)real->C_Sign(h, d, dl, buf, &n);
	fault_effect(h, rv);
	return rv;
}

/* From P11FAULT="FUNC:NTH:RV" (NTH and RV in C notation, e.g. 0x30). */
static void
fault_from_env(void)
{
	const char *e = getenv("P11FAULT"), *down = getenv("P11FAULT_DOWN");
	char func[64], *end;
	const char *p;
	unsigned long nth, rv;
	size_t n;

	pthread_mutex_lock(&lock);
	snprintf(down_path, sizeof(down_path), "%s", down != NULL ? down : "");
	pthread_mutex_unlock(&lock);
	if (e == NULL || (p = strchr(e, ':')) == NULL ||
	    (n = (size_t)(p - e)) == 0 || n >= sizeof(func))
		return;
	memcpy(func, e, n);
	func[n] = '\0';
	nth = strtoul(p + 1, &end, 0);
	if (*end != ':' || nth == 0)
		return;
	rv = strtoul(end + 1, &end, 0);
	if (*end != '\0')
		return;
	p11fault_set(func, nth, rv);
}

static CK_RV
w_Initialize(CK_VOID_PTR args)
{
	CK_RV rv;

	fault_from_env();
	if (fault_hit("C_Initialize", &rv))
		return rv;
	return real->C_Initialize(args);
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	CK_C_GetFunctionList getfl;
	const char *path = getenv("P11FAULT_MODULE");
	CK_RV rv = CKR_OK;
	void *dl;

	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&lock);
	if (real != NULL)
		goto out;
	/* The real module stays loaded for the life of the process. */
	if ((dl = dlopen(path != NULL ? path : DEFAULT_MODULE,
	    RTLD_NOW | RTLD_LOCAL)) == NULL ||
	    (getfl = (CK_C_GetFunctionList)dlsym(dl,
	    "C_GetFunctionList")) == NULL || getfl(&real) != CKR_OK ||
	    real == NULL) {
		real = NULL;
		rv = CKR_GENERAL_ERROR;
		goto out;
	}
	/* Its version and anything this file does not know are kept. */
	ours = *real;
	ours.C_Initialize = w_Initialize;
	ours.C_Finalize = w_Finalize;
	ours.C_GetInfo = w_GetInfo;
	ours.C_GetFunctionList = C_GetFunctionList;
	ours.C_GetSlotList = w_GetSlotList;
	ours.C_GetSlotInfo = w_GetSlotInfo;
	ours.C_GetTokenInfo = w_GetTokenInfo;
	ours.C_GetMechanismList = w_GetMechanismList;
	ours.C_GetMechanismInfo = w_GetMechanismInfo;
	ours.C_InitToken = w_InitToken;
	ours.C_InitPIN = w_InitPIN;
	ours.C_SetPIN = w_SetPIN;
	ours.C_OpenSession = w_OpenSession;
	ours.C_CloseSession = w_CloseSession;
	ours.C_CloseAllSessions = w_CloseAllSessions;
	ours.C_GetSessionInfo = w_GetSessionInfo;
	ours.C_GetOperationState = w_GetOperationState;
	ours.C_SetOperationState = w_SetOperationState;
	ours.C_Login = w_Login;
	ours.C_Logout = w_Logout;
	ours.C_CreateObject = w_CreateObject;
	ours.C_CopyObject = w_CopyObject;
	ours.C_DestroyObject = w_DestroyObject;
	ours.C_GetObjectSize = w_GetObjectSize;
	ours.C_GetAttributeValue = w_GetAttributeValue;
	ours.C_SetAttributeValue = w_SetAttributeValue;
	ours.C_FindObjectsInit = w_FindObjectsInit;
	ours.C_FindObjects = w_FindObjects;
	ours.C_FindObjectsFinal = w_FindObjectsFinal;
	ours.C_EncryptInit = w_EncryptInit;
	ours.C_Encrypt = w_Encrypt;
	ours.C_EncryptUpdate = w_EncryptUpdate;
	ours.C_EncryptFinal = w_EncryptFinal;
	ours.C_DecryptInit = w_DecryptInit;
	ours.C_Decrypt = w_Decrypt;
	ours.C_DecryptUpdate = w_DecryptUpdate;
	ours.C_DecryptFinal = w_DecryptFinal;
	ours.C_DigestInit = w_DigestInit;
	ours.C_Digest = w_Digest;
	ours.C_DigestUpdate = w_DigestUpdate;
	ours.C_DigestKey = w_DigestKey;
	ours.C_DigestFinal = w_DigestFinal;
	ours.C_SignInit = w_SignInit;
	ours.C_Sign = w_Sign;
	ours.C_SignUpdate = w_SignUpdate;
	ours.C_SignFinal = w_SignFinal;
	ours.C_SignRecoverInit = w_SignRecoverInit;
	ours.C_SignRecover = w_SignRecover;
	ours.C_VerifyInit = w_VerifyInit;
	ours.C_Verify = w_Verify;
	ours.C_VerifyUpdate = w_VerifyUpdate;
	ours.C_VerifyFinal = w_VerifyFinal;
	ours.C_VerifyRecoverInit = w_VerifyRecoverInit;
	ours.C_VerifyRecover = w_VerifyRecover;
	ours.C_DigestEncryptUpdate = w_DigestEncryptUpdate;
	ours.C_DecryptDigestUpdate = w_DecryptDigestUpdate;
	ours.C_SignEncryptUpdate = w_SignEncryptUpdate;
	ours.C_DecryptVerifyUpdate = w_DecryptVerifyUpdate;
	ours.C_GenerateKey = w_GenerateKey;
	ours.C_GenerateKeyPair = w_GenerateKeyPair;
	ours.C_WrapKey = w_WrapKey;
	ours.C_UnwrapKey = w_UnwrapKey;
	ours.C_DeriveKey = w_DeriveKey;
	ours.C_SeedRandom = w_SeedRandom;
	ours.C_GenerateRandom = w_GenerateRandom;
	ours.C_GetFunctionStatus = w_GetFunctionStatus;
	ours.C_CancelFunction = w_CancelFunction;
	ours.C_WaitForSlotEvent = w_WaitForSlotEvent;
 out:
	pthread_mutex_unlock(&lock);
	if (rv == CKR_OK)
		*list = &ours;
	return rv;
}
