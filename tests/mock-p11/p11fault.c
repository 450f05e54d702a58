/*
 * p11fault.c: a PKCS#11 module that forwards every call to a real module
 * (P11FAULT_MODULE, default SoftHSM2) and can make the Nth call of one
 * function fail with a chosen CK_RV, so that tests reach the error paths
 * of kms/hsm.c with a real token behind them.
 *
 *   p11fault_set("C_Sign", 1, CKR_DEVICE_ERROR);   the next C_Sign fails
 *   P11FAULT=C_Sign:2:0x30                          the same, from the environment
 *
 * A fault fires once, then the switch is clear again.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

void p11fault_set(const char *func, unsigned long nth, unsigned long rv);
void p11fault_clear(void);
unsigned long p11fault_calls(const char *func);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char fault_func[64];
static unsigned long fault_nth;
static CK_RV fault_rv;
static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST ours;

#define MAX_COUNTED 32
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
	if (fault_nth > 0 && strcmp(fault_func, func) == 0 &&
	    --fault_nth == 0) {
		*rv = fault_rv;
		fault_func[0] = '\0';
		hit = 1;
	}
	pthread_mutex_unlock(&lock);
	return hit;
}

#define FAULT(name) do {						\
	CK_RV frv_;							\
	if (fault_hit(#name, &frv_))					\
		return frv_;						\
} while (0)

static CK_RV
w_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG l)
{
	FAULT(C_Login);
	return real->C_Login(h, u, p, l);
}

static CK_RV
w_OpenSession(CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n,
    CK_SESSION_HANDLE_PTR h)
{
	FAULT(C_OpenSession);
	return real->C_OpenSession(s, f, a, n, h);
}

static CK_RV
w_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	FAULT(C_SignInit);
	return real->C_SignInit(h, m, k);
}

static CK_RV
w_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
    CK_ULONG_PTR sl)
{
	CK_RV rv;

	if (fault_hit("C_Sign", &rv)) {
		/* A failed C_Sign ends the operation, as the standard says. */
		CK_BYTE buf[1024];
		CK_ULONG n = sizeof(buf);

		real->C_Sign(h, d, dl, buf, &n);
		return rv;
	}
	return real->C_Sign(h, d, dl, s, sl);
}

static CK_RV
w_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m,
    CK_ATTRIBUTE_PTR pt, CK_ULONG pn, CK_ATTRIBUTE_PTR vt, CK_ULONG vn,
    CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv)
{
	FAULT(C_GenerateKeyPair);
	return real->C_GenerateKeyPair(h, m, pt, pn, vt, vn, pub, priv);
}

static CK_RV
w_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t,
    CK_ULONG n, CK_OBJECT_HANDLE_PTR k)
{
	FAULT(C_GenerateKey);
	return real->C_GenerateKey(h, m, t, n, k);
}

static CK_RV
w_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	FAULT(C_FindObjectsInit);
	return real->C_FindObjectsInit(h, t, n);
}

static CK_RV
w_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	FAULT(C_GetAttributeValue);
	return real->C_GetAttributeValue(h, o, t, n);
}

static CK_RV
w_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n,
    CK_OBJECT_HANDLE_PTR o)
{
	FAULT(C_CreateObject);
	return real->C_CreateObject(h, t, n, o);
}

static CK_RV
w_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
	FAULT(C_DestroyObject);
	return real->C_DestroyObject(h, o);
}

static CK_RV
w_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR b, CK_ULONG n)
{
	FAULT(C_GenerateRandom);
	return real->C_GenerateRandom(h, b, n);
}

static CK_RV
w_WrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w,
    CK_OBJECT_HANDLE k, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{
	FAULT(C_WrapKey);
	return real->C_WrapKey(h, m, w, k, o, ol);
}

static CK_RV
w_UnwrapKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u,
    CK_BYTE_PTR in, CK_ULONG inl, CK_ATTRIBUTE_PTR t, CK_ULONG n,
    CK_OBJECT_HANDLE_PTR k)
{
	FAULT(C_UnwrapKey);
	return real->C_UnwrapKey(h, m, u, in, inl, t, n, k);
}

/* From P11FAULT="FUNC:NTH:RV" (RV in C notation, e.g. 0x30). */
static void
fault_from_env(void)
{
	const char *e = getenv("P11FAULT");
	char func[64];
	unsigned long nth, rv;

	if (e != NULL && sscanf(e, "%63[^:]:%lu:%li", func, &nth,
	    (long *)&rv) == 3)
		p11fault_set(func, nth, rv);
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	CK_C_GetFunctionList getfl;
	const char *path = getenv("P11FAULT_MODULE");
	void *dl;

	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	if (real == NULL) {
		if ((dl = dlopen(path != NULL ? path : DEFAULT_MODULE,
		    RTLD_NOW | RTLD_LOCAL)) == NULL ||
		    (getfl = (CK_C_GetFunctionList)dlsym(dl,
		    "C_GetFunctionList")) == NULL || getfl(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		ours = *real;
		ours.C_Login = w_Login;
		ours.C_OpenSession = w_OpenSession;
		ours.C_SignInit = w_SignInit;
		ours.C_Sign = w_Sign;
		ours.C_GenerateKeyPair = w_GenerateKeyPair;
		ours.C_GenerateKey = w_GenerateKey;
		ours.C_FindObjectsInit = w_FindObjectsInit;
		ours.C_GetAttributeValue = w_GetAttributeValue;
		ours.C_CreateObject = w_CreateObject;
		ours.C_DestroyObject = w_DestroyObject;
		ours.C_GenerateRandom = w_GenerateRandom;
		ours.C_WrapKey = w_WrapKey;
		ours.C_UnwrapKey = w_UnwrapKey;
		fault_from_env();
	}
	*list = &ours;
	return CKR_OK;
}
