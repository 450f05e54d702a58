/*
 * module.c: the PKCS#11 v2.40 entry points of libkms-pkcs11.so.
 *
 * One slot holds one token, "kms", whose objects are the signing keys
 * that the configured identity sees in kmsd (p11obj.h).  The module holds
 * no key material: every signature is one Sign call to kmsd (p11kms.h),
 * and verification runs here with the public key.
 *
 * State.  A PKCS#11 module is a library with process-wide state, so this
 * file holds the one mutable global of the module, as main.c does for a
 * program.  One mutex guards it; no call to kmsd is made with the mutex
 * held, so that threads sign in parallel on the one channel.
 *
 * Fork.  A child does not inherit the module: every function answers
 * CKR_CRYPTOKI_NOT_INITIALIZED (the process id no longer matches) until
 * the child calls C_Initialize, which leaves the parent's connection
 * alone and makes a new one.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <p11-kit/pkcs11.h>

#include "algo.h"
#include "kmsclient.h"
#include "kmserr.h"
#include "p11conf.h"
#include "p11kms.h"
#include "p11mech.h"
#include "p11obj.h"
#include "pubkey.h"

#define SLOT_ID 0
#define SESSIONS_MAX 4096
/* How long a listing of the keys serves C_FindObjectsInit. */
#define LIST_FRESH_SECONDS 2

struct op {
	int active;
	CK_MECHANISM_TYPE mech;
	char name[KMS_KEY_NAME_MAX + 1];
	uint32_t version;
	const struct kms_alg_info *alg;
	uint8_t *spki;			/* verify: the public key */
	size_t spkilen;
	EVP_MD_CTX *md;			/* multi-part: the running hash */
	uint8_t *buf;			/* multi-part: the input so far */
	size_t len, cap;
	int updated;			/* C_*Update was called */
};

struct session {
	CK_FLAGS flags;
	CK_OBJECT_HANDLE *found;	/* C_FindObjects' snapshot */
	size_t nfound, pos;
	int finding;
	struct op sign, verify;
};

struct peer {
	int port;			/* 0: unknown */
	int family;			/* AF_INET, AF_INET6, or 0: a name */
	struct in_addr v4;
	struct in6_addr v6;
};

struct module {
	pthread_mutex_t lock;
	int initialized;
	pid_t pid;			/* of the process that initialised */
	int logged_in;
	struct p11conf conf;
	struct kmsclient *client;
	struct peer kmsd;		/* where client connects */
	/* Object handle h names key (h - 1) / P11_KINDS, kind (h - 1) % 3. */
	struct p11_key **keys;		/* NULL where a key went away */
	size_t nkeys;
	time_t listed;			/* CLOCK_MONOTONIC seconds, 0: never */
	struct session *sessions[SESSIONS_MAX];	/* handle = index + 1 */
};

static struct module g = { .lock = PTHREAD_MUTEX_INITIALIZER };
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
fork_prepare(void)
{
	pthread_mutex_lock(&g.lock);
}

static void
fork_release(void)
{
	pthread_mutex_unlock(&g.lock);
}

/* The port, and the address when numeric, of kmsd in addr ("HOST:PORT"). */
static void
parse_peer(const char *addr, struct peer *p)
{
	const char *colon = strrchr(addr, ':');
	char host[P11CONF_ADDR_MAX];
	size_t n;

	memset(p, 0, sizeof(*p));
	if (colon == NULL || (p->port = atoi(colon + 1)) <= 0 ||
	    p->port > 65535)
		return;
	n = (size_t)(colon - addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	memcpy(host, addr, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &p->v4) == 1)
		p->family = AF_INET;
	else if (inet_pton(AF_INET6, host, &p->v6) == 1)
		p->family = AF_INET6;
}

static int
is_kmsd(const struct sockaddr_storage *ss, const struct peer *p)
{
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET)
		return ntohs(in4->sin_port) == p->port &&
		    (p->family != AF_INET ||
		    memcmp(&in4->sin_addr, &p->v4, sizeof(p->v4)) == 0);
	if (ss->ss_family == AF_INET6)
		return ntohs(in6->sin6_port) == p->port &&
		    (p->family != AF_INET6 ||
		    memcmp(&in6->sin6_addr, &p->v6, sizeof(p->v6)) == 0);
	return 0;
}

/*
 * In a child, the parent's connections to kmsd are still open, and gRPC
 * winding down the parent's channel there writes on them (an HTTP/2
 * GOAWAY inside the parent's TLS stream), which breaks the parent's
 * connection.  Each is swapped for an unconnected socket, so that
 * whatever the child writes there goes nowhere.
 */
static void
fork_child(void)
{
	struct sockaddr_storage ss;
	struct dirent *e;
	socklen_t len;
	DIR *d;
	int fd, s;

	if (g.initialized && g.kmsd.port != 0 &&
	    (d = opendir("/proc/self/fd")) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] < '0' || e->d_name[0] > '9' ||
			    (fd = atoi(e->d_name)) == dirfd(d))
				continue;
			len = sizeof(ss);
			if (getpeername(fd, (struct sockaddr *)&ss,
			    &len) != 0 || !is_kmsd(&ss, &g.kmsd))
				continue;
			if ((s = socket(ss.ss_family, SOCK_STREAM, 0)) >= 0) {
				dup2(s, fd);
				close(s);
			}
		}
		closedir(d);
	}
	pthread_mutex_unlock(&g.lock);
}

static void
register_atfork(void)
{
	void (*pre)(void), (*parent)(void), (*child)(void);

	/*
	 * The mutex is free in the child: no thread of the parent holds it.
	 * These handlers come first, so that the child's run before gRPC's.
	 */
	pthread_atfork(fork_prepare, fork_release, fork_child);
	/*
	 * gRPC restarts its threads in a child only from these handlers,
	 * which Debian's libgrpc does not register itself; without them the
	 * child's calls would wait forever.  They are C++ functions.
	 */
	*(void **)&pre = dlsym(RTLD_DEFAULT, "_Z12grpc_preforkv");
	*(void **)&parent = dlsym(RTLD_DEFAULT, "_Z20grpc_postfork_parentv");
	*(void **)&child = dlsym(RTLD_DEFAULT, "_Z19grpc_postfork_childv");
	if (pre != NULL && parent != NULL && child != NULL)
		pthread_atfork(pre, parent, child);
}

/* Whether the module is initialised in this very process; lock held. */
static int
ready(void)
{
	return g.initialized && g.pid == getpid();
}

static time_t
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void
pad(unsigned char *dst, size_t size, const char *s)
{
	size_t n = strlen(s);

	memset(dst, ' ', size);
	memcpy(dst, s, n < size ? n : size);
}

static void
op_clear(struct op *op)
{
	EVP_MD_CTX_free(op->md);
	free(op->spki);
	if (op->buf != NULL) {
		OPENSSL_cleanse(op->buf, op->cap);
		free(op->buf);
	}
	memset(op, 0, sizeof(*op));
}

static void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	op_clear(&s->sign);
	op_clear(&s->verify);
	free(s->found);
	free(s);
}

/* Frees the keys and sessions; lock held.  The client is the caller's. */
static void
drop_state(void)
{
	size_t i;

	for (i = 0; i < SESSIONS_MAX; i++) {
		session_free(g.sessions[i]);
		g.sessions[i] = NULL;
	}
	for (i = 0; i < g.nkeys; i++)
		p11_key_free(g.keys[i]);
	free(g.keys);
	g.keys = NULL;
	g.nkeys = 0;
	g.listed = 0;
	g.logged_in = 0;
	g.initialized = 0;
}

/* The session of handle h, or NULL; lock held. */
static struct session *
session_of(CK_SESSION_HANDLE h)
{
	if (h == 0 || h > SESSIONS_MAX)
		return NULL;
	return g.sessions[h - 1];
}

/* The key and kind of object handle h, or NULL; lock held. */
static const struct p11_key *
object_of(CK_OBJECT_HANDLE h, enum p11_kind *kind)
{
	const struct p11_key *k;
	size_t i;

	if (h == 0)
		return NULL;
	i = (size_t)(h - 1) / P11_KINDS;
	*kind = (enum p11_kind)((h - 1) % P11_KINDS);
	if (i >= g.nkeys || (k = g.keys[i]) == NULL || !p11_key_has(k, *kind))
		return NULL;
	return k;
}

/*
 * The entry points' one prologue and epilogue.  module_enter locks the
 * module and checks that it is initialised in this process (not a forked
 * child): CKR_OK with the lock held, or CKR_CRYPTOKI_NOT_INITIALIZED with
 * it released.  session_enter also finds session h.  leave releases the
 * lock and returns rv, so that an entry point ends with `return leave(rv)`.
 */
static CK_RV
module_enter(void)
{
	pthread_mutex_lock(&g.lock);
	if (!ready()) {
		pthread_mutex_unlock(&g.lock);
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	}
	return CKR_OK;
}

static CK_RV
leave(CK_RV rv)
{
	pthread_mutex_unlock(&g.lock);
	return rv;
}

static CK_RV
session_enter(CK_SESSION_HANDLE h, struct session **s)
{
	CK_RV rv;

	if ((rv = module_enter()) != CKR_OK)
		return rv;
	if ((*s = session_of(h)) == NULL)
		return leave(CKR_SESSION_HANDLE_INVALID);
	return CKR_OK;
}

/* For the entry points that need no lock beyond the check. */
static CK_RV
check_ready(void)
{
	CK_RV rv;

	return (rv = module_enter()) != CKR_OK ? rv : leave(CKR_OK);
}

CK_RV
C_Initialize(CK_VOID_PTR init_args)
{
	CK_C_INITIALIZE_ARGS *a = init_args;
	struct kmsclient_opts o;
	struct kmsclient *c = NULL;
	struct kms_status st;
	struct p11conf conf;
	CK_RV rv = CKR_OK;

	if (a != NULL) {
		if (a->pReserved != NULL)
			return CKR_ARGUMENTS_BAD;
		/* Either all four mutex functions or none. */
		if ((a->CreateMutex == NULL) != (a->DestroyMutex == NULL) ||
		    (a->CreateMutex == NULL) != (a->LockMutex == NULL) ||
		    (a->CreateMutex == NULL) != (a->UnlockMutex == NULL))
			return CKR_ARGUMENTS_BAD;
		/* Only the operating system's locks are used here. */
		if (a->CreateMutex != NULL && !(a->flags & CKF_OS_LOCKING_OK))
			return CKR_CANT_LOCK;
	}
	pthread_once(&atfork_once, register_atfork);
	kms_status_clear(&st);
	if (p11conf_load(getenv("KMS_PKCS11_CONFIG"), &conf, &st) != 0) {
		fprintf(stderr, "kms-pkcs11: %s\n", st.msg);
		return CKR_GENERAL_ERROR;
	}
	pthread_mutex_lock(&g.lock);
	if (g.initialized && g.pid == getpid()) {
		rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
		goto out;
	}
	if (g.initialized) {
		/*
		 * A child of the process that initialised: its channel
		 * belongs to the parent and is left alone (not closed, which
		 * would reach into the parent's connection).
		 */
		g.client = NULL;
		drop_state();
	}
	memset(&o, 0, sizeof(o));
	o.addr = conf.addr;
	o.ca_file = conf.ca;
	o.cert_file = conf.cert;
	o.key_file = conf.key;
	o.timeout_seconds = conf.timeout;
	o.quiet = 1;
	o.concurrent = 1;
	/* gRPC resets itself in a child only when asked to before it starts. */
	setenv("GRPC_ENABLE_FORK_SUPPORT", "true", 0);
	if (kmsclient_open(&o, &c, &st) != 0) {
		fprintf(stderr, "kms-pkcs11: %s%s%s\n", conf.source,
		    conf.source[0] != '\0' ? ": " : "", st.msg);
		rv = CKR_GENERAL_ERROR;
		goto out;
	}
	g.conf = conf;
	parse_peer(conf.addr, &g.kmsd);
	g.client = c;
	g.pid = getpid();
	g.initialized = 1;
 out:
	return leave(rv);
}

CK_RV
C_Finalize(CK_VOID_PTR reserved)
{
	struct kmsclient *c;
	CK_RV rv;

	if (reserved != NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = module_enter()) != CKR_OK)
		return rv;
	c = g.client;
	g.client = NULL;
	drop_state();
	pthread_mutex_unlock(&g.lock);
	kmsclient_close(c);
	return CKR_OK;
}

CK_RV
C_GetInfo(CK_INFO_PTR info)
{
	CK_RV rv;

	if ((rv = check_ready()) != CKR_OK)
		return rv;
	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	info->cryptokiVersion.major = 2;
	info->cryptokiVersion.minor = 40;
	pad(info->manufacturerID, sizeof(info->manufacturerID), "kms");
	pad(info->libraryDescription, sizeof(info->libraryDescription),
	    "kms PKCS#11 module");
	info->libraryVersion.major = 1;
	info->libraryVersion.minor = 0;
	return CKR_OK;
}

CK_RV
C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list,
    CK_ULONG_PTR count)
{
	CK_RV rv;

	if ((rv = check_ready()) != CKR_OK)
		return rv;
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if (list != NULL) {
		if (*count < 1) {
			*count = 1;
			return CKR_BUFFER_TOO_SMALL;
		}
		list[0] = SLOT_ID;
	}
	*count = 1;
	return CKR_OK;
}

CK_RV
C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	CK_RV rv;

	if ((rv = check_ready()) != CKR_OK)
		return rv;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	pad(info->slotDescription, sizeof(info->slotDescription),
	    "kms key management service");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "kms");
	info->flags = CKF_TOKEN_PRESENT;
	info->hardwareVersion.major = 1;
	info->firmwareVersion.major = 1;
	return CKR_OK;
}

CK_RV
C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	CK_ULONG n = 0, rw = 0;
	size_t i;
	CK_RV rv;

	if (info == NULL)
		return slot != SLOT_ID ? CKR_SLOT_ID_INVALID :
		    CKR_ARGUMENTS_BAD;
	if ((rv = module_enter()) != CKR_OK)
		return rv;
	for (i = 0; i < SESSIONS_MAX; i++)
		if (g.sessions[i] != NULL) {
			n++;
			if (g.sessions[i]->flags & CKF_RW_SESSION)
				rw++;
		}
	pthread_mutex_unlock(&g.lock);
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	memset(info, 0, sizeof(*info));
	pad(info->label, sizeof(info->label), "kms");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "kms");
	pad(info->model, sizeof(info->model), "kmsd");
	pad(info->serialNumber, sizeof(info->serialNumber), "1");
	/* The client certificate is the identity: no login is needed. */
	info->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED;
	info->ulMaxSessionCount = SESSIONS_MAX;
	info->ulSessionCount = n;
	info->ulMaxRwSessionCount = SESSIONS_MAX;
	info->ulRwSessionCount = rw;
	info->ulMaxPinLen = 256;
	info->ulMinPinLen = 0;
	info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->hardwareVersion.major = 1;
	info->firmwareVersion.major = 1;
	return CKR_OK;
}

CK_RV
C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list,
    CK_ULONG_PTR count)
{
	const CK_MECHANISM_TYPE *m;
	size_t n;
	CK_RV rv;

	if ((rv = check_ready()) != CKR_OK)
		return rv;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	m = p11_mech_list(&n);
	if (list != NULL) {
		if (*count < n) {
			*count = n;
			return CKR_BUFFER_TOO_SMALL;
		}
		memcpy(list, m, n * sizeof(*m));
	}
	*count = n;
	return CKR_OK;
}

CK_RV
C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
    CK_MECHANISM_INFO_PTR info)
{
	CK_RV rv;

	if ((rv = check_ready()) != CKR_OK)
		return rv;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	return p11_mech_info(type, info);
}

CK_RV
C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app,
    CK_NOTIFY notify, CK_SESSION_HANDLE_PTR out)
{
	struct session *s;
	size_t i;
	CK_RV rv;

	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	if (!(flags & CKF_SERIAL_SESSION))
		return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return CKR_HOST_MEMORY;
	s->flags = flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION);
	if ((rv = module_enter()) != CKR_OK)
		goto out;
	rv = slot != SLOT_ID ? CKR_SLOT_ID_INVALID : CKR_SESSION_COUNT;
	for (i = 0; slot == SLOT_ID && i < SESSIONS_MAX; i++)
		if (g.sessions[i] == NULL) {
			g.sessions[i] = s;
			*out = (CK_SESSION_HANDLE)(i + 1);
			s = NULL;
			rv = CKR_OK;
			break;
		}
	leave(rv);
 out:
	free(s);
	return rv;
}

CK_RV
C_CloseSession(CK_SESSION_HANDLE h)
{
	struct session *s;
	CK_RV rv;

	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	g.sessions[h - 1] = NULL;
	pthread_mutex_unlock(&g.lock);
	session_free(s);
	return CKR_OK;
}

CK_RV
C_CloseAllSessions(CK_SLOT_ID slot)
{
	size_t i;
	CK_RV rv;

	if ((rv = module_enter()) != CKR_OK)
		return rv;
	if (slot != SLOT_ID)
		return leave(CKR_SLOT_ID_INVALID);
	for (i = 0; i < SESSIONS_MAX; i++) {
		session_free(g.sessions[i]);
		g.sessions[i] = NULL;
	}
	g.logged_in = 0;
	return leave(CKR_OK);
}

CK_RV
C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info)
{
	struct session *s;
	CK_RV rv;
	int rw;

	if (info == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	rw = (s->flags & CKF_RW_SESSION) != 0;
	memset(info, 0, sizeof(*info));
	info->slotID = SLOT_ID;
	info->flags = s->flags;
	if (g.logged_in)
		info->state = rw ? CKS_RW_USER_FUNCTIONS :
		    CKS_RO_USER_FUNCTIONS;
	else
		info->state = rw ? CKS_RW_PUBLIC_SESSION :
		    CKS_RO_PUBLIC_SESSION;
	return leave(CKR_OK);
}

/*
 * Any PIN is accepted and none is kept or looked at: the client
 * certificate is the identity, and tools that always log in still work.
 */
CK_RV
C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
    CK_ULONG pin_len)
{
	struct session *s;
	CK_RV rv;

	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if (user != CKU_USER && user != CKU_SO && user != CKU_CONTEXT_SPECIFIC)
		rv = CKR_USER_TYPE_INVALID;
	else if (g.logged_in && user != CKU_CONTEXT_SPECIFIC)
		rv = CKR_USER_ALREADY_LOGGED_IN;
	else
		g.logged_in = 1;
	return leave(rv);
}

CK_RV
C_Logout(CK_SESSION_HANDLE h)
{
	struct session *s;
	CK_RV rv;

	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	rv = g.logged_in ? CKR_OK : CKR_USER_NOT_LOGGED_IN;
	g.logged_in = 0;
	return leave(rv);
}

CK_RV
C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	const struct p11_key *k;
	enum p11_kind kind;
	struct session *s;
	CK_RV rv;

	if (tmpl == NULL && n > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if ((k = object_of(obj, &kind)) == NULL)
		rv = CKR_OBJECT_HANDLE_INVALID;
	else
		rv = p11_obj_get(k, kind, tmpl, n);
	return leave(rv);
}

/*
 * Replaces the key table with a new listing, keeping each key name's
 * handles: a rotated key's objects show the new primary version under
 * the old handles, and a key that went away leaves its handles invalid.
 * Takes the keys of list; lock held.
 */
static CK_RV
merge_keys(struct p11_key **list, size_t n)
{
	struct p11_key **next;
	size_t i, j, old = g.nkeys, total = g.nkeys;

	if (old + n > 4 * P11KMS_KEYS_MAX)
		return CKR_DEVICE_MEMORY;
	if ((next = calloc(old + n > 0 ? old + n : 1, sizeof(*next))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < n; i++) {
		for (j = 0; j < old; j++)
			if (g.keys[j] != NULL &&
			    strcmp(g.keys[j]->name, list[i]->name) == 0)
				break;
		if (j < old && next[j] == NULL)
			next[j] = list[i];
		else
			next[total++] = list[i];
		list[i] = NULL;
	}
	for (j = 0; j < old; j++)
		p11_key_free(g.keys[j]);
	free(g.keys);
	g.keys = next;
	g.nkeys = total;
	return CKR_OK;
}

/* Lists the keys again unless the last listing is fresh; lock not held. */
static CK_RV
refresh_keys(void)
{
	char prefix[P11CONF_PREFIX_MAX + 1];
	struct kmsclient *c;
	struct p11_key **list = NULL;
	size_t i, n = 0;
	CK_RV rv;

	pthread_mutex_lock(&g.lock);
	c = g.client;
	strcpy(prefix, g.conf.prefix);
	rv = g.listed != 0 && now_seconds() - g.listed < LIST_FRESH_SECONDS ?
	    CKR_OK : CKR_FUNCTION_FAILED;
	pthread_mutex_unlock(&g.lock);
	if (rv == CKR_OK)
		return CKR_OK;
	if ((rv = p11kms_list(c, prefix, &list, &n)) != CKR_OK)
		return rv;
	pthread_mutex_lock(&g.lock);
	/* Finalised, or forked, while the listing was on its way. */
	if (!ready() || g.client != c)
		rv = CKR_CRYPTOKI_NOT_INITIALIZED;
	else if ((rv = merge_keys(list, n)) == CKR_OK)
		g.listed = now_seconds();
	pthread_mutex_unlock(&g.lock);
	for (i = 0; i < n; i++)
		p11_key_free(list[i]);
	free(list);
	return rv;
}

CK_RV
C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	CK_OBJECT_HANDLE *found = NULL;
	struct session *s;
	size_t i, cnt = 0;
	int kind;
	CK_RV rv;

	if (tmpl == NULL && n > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	rv = s->finding ? CKR_OPERATION_ACTIVE : CKR_OK;
	pthread_mutex_unlock(&g.lock);
	if (rv != CKR_OK || (rv = refresh_keys()) != CKR_OK)
		return rv;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if (s->finding) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	if (g.nkeys > 0 &&
	    (found = calloc(g.nkeys * P11_KINDS, sizeof(*found))) == NULL) {
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	for (i = 0; i < g.nkeys; i++)
		for (kind = 0; kind < P11_KINDS; kind++)
			if (g.keys[i] != NULL && p11_obj_match(g.keys[i],
			    (enum p11_kind)kind, tmpl, n))
				found[cnt++] = (CK_OBJECT_HANDLE)(i *
				    P11_KINDS + (size_t)kind + 1);
	s->found = found;
	s->nfound = cnt;
	s->pos = 0;
	s->finding = 1;
	found = NULL;
 out:
	pthread_mutex_unlock(&g.lock);
	free(found);
	return rv;
}

CK_RV
C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
    CK_ULONG_PTR count)
{
	struct session *s;
	CK_RV rv;

	if (out == NULL || count == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	*count = 0;
	if (!s->finding)
		rv = CKR_OPERATION_NOT_INITIALIZED;
	while (rv == CKR_OK && *count < max && s->pos < s->nfound)
		out[(*count)++] = s->found[s->pos++];
	return leave(rv);
}

CK_RV
C_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	struct session *s;
	CK_RV rv;

	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if (!s->finding)
		rv = CKR_OPERATION_NOT_INITIALIZED;
	free(s->found);
	s->found = NULL;
	s->nfound = s->pos = 0;
	s->finding = 0;
	return leave(rv);
}

/* C_SignInit and C_VerifyInit: the key, mechanism and running hash. */
static CK_RV
op_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key,
    int verify)
{
	const struct p11_key *k;
	enum p11_kind kind;
	enum kms_hash hash;
	struct session *s;
	struct op *op;
	CK_RV rv;

	if (m == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	op = verify ? &s->verify : &s->sign;
	if (op->active) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	if ((k = object_of(key, &kind)) == NULL || kind == P11_CERT) {
		rv = CKR_KEY_HANDLE_INVALID;
		goto out;
	}
	/* Signing takes the private key; verifying either half. */
	if (!verify && kind != P11_PRIVATE) {
		rv = CKR_KEY_FUNCTION_NOT_PERMITTED;
		goto out;
	}
	if ((rv = p11_mech_check(m, k->alg)) != CKR_OK)
		goto out;
	memset(op, 0, sizeof(*op));
	if (verify) {
		if ((op->spki = malloc(k->spki.len)) == NULL) {
			rv = CKR_HOST_MEMORY;
			goto out;
		}
		memcpy(op->spki, k->spki.p, k->spki.len);
		op->spkilen = k->spki.len;
	}
	hash = p11_mech_hash(m->mechanism);
	if (hash != KMS_HASH_NONE && ((op->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(op->md, hash == KMS_HASH_SHA256 ?
	    EVP_sha256() : EVP_sha384(), NULL) != 1)) {
		op_clear(op);
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	strcpy(op->name, k->name);
	op->version = k->version;
	op->alg = k->alg;
	op->mech = m->mechanism;
	op->active = 1;
 out:
	return leave(rv);
}

CK_RV
C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key)
{
	return op_init(h, m, key, 0);
}

CK_RV
C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key)
{
	return op_init(h, m, key, 1);
}

/* C_SignUpdate and C_VerifyUpdate: hash, or keep, the next part. */
static CK_RV
op_update(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len, int verify)
{
	struct session *s;
	struct op *op;
	uint8_t *grown;
	size_t cap;
	CK_RV rv;

	if (part == NULL && len > 0)
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	op = verify ? &s->verify : &s->sign;
	if (!op->active) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
		goto out;
	}
	op->updated = 1;
	if (op->md != NULL) {
		if (len > 0 && EVP_DigestUpdate(op->md, part, len) != 1)
			rv = CKR_FUNCTION_FAILED;
		goto out;
	}
	if (len > P11_DATA_MAX - op->len) {
		rv = CKR_DATA_LEN_RANGE;
		goto out;
	}
	if (op->len + len > op->cap) {
		cap = op->cap > 0 ? op->cap : 4096;
		while (cap < op->len + len)
			cap *= 2;
		/* Not realloc: the old buffer is wiped before it is freed. */
		if ((grown = malloc(cap)) == NULL) {
			rv = CKR_HOST_MEMORY;
			goto out;
		}
		if (op->len > 0)
			memcpy(grown, op->buf, op->len);
		if (op->buf != NULL) {
			OPENSSL_cleanse(op->buf, op->cap);
			free(op->buf);
		}
		op->buf = grown;
		op->cap = cap;
	}
	if (len > 0)
		memcpy(op->buf + op->len, part, len);
	op->len += len;
 out:
	if (rv != CKR_OK)
		op_clear(op);
	return leave(rv);
}

CK_RV
C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len)
{
	return op_update(h, part, len, 0);
}

CK_RV
C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len)
{
	return op_update(h, part, len, 1);
}

/*
 * What a finished operation signs or verifies, taken out of the session
 * so that kmsd is called without the lock.
 */
struct job {
	CK_MECHANISM_TYPE mech;
	char name[KMS_KEY_NAME_MAX + 1];
	uint32_t version;
	const struct kms_alg_info *alg;
	uint8_t *spki;
	size_t spkilen;
	uint8_t md[EVP_MAX_MD_SIZE];	/* the digest of a hashing mechanism */
	const uint8_t *in;		/* the mechanism's input */
	size_t inlen;
	uint8_t *owned;			/* a multi-part input taken over */
	size_t ownedcap;
};

static void
job_clear(struct job *j)
{
	free(j->spki);
	if (j->owned != NULL) {
		OPENSSL_cleanse(j->owned, j->ownedcap);
		free(j->owned);
	}
	memset(j, 0, sizeof(*j));
}

/*
 * Ends the operation op into j: with data, a single-part call on data
 * (hashed here for hashing mechanisms); without, the multi-part input.
 * Lock held.
 */
static CK_RV
take_job(struct op *op, const uint8_t *data, size_t len, int single,
    struct job *j)
{
	unsigned int mdlen = 0;
	CK_RV rv = CKR_OK;

	memset(j, 0, sizeof(*j));
	j->mech = op->mech;
	strcpy(j->name, op->name);
	j->version = op->version;
	j->alg = op->alg;
	j->spki = op->spki;
	j->spkilen = op->spkilen;
	op->spki = NULL;
	if (single && op->updated) {
		/* C_Sign after C_SignUpdate mixes the two forms. */
		rv = CKR_OPERATION_ACTIVE;
	} else if (op->md != NULL) {
		if ((single && len > 0 &&
		    EVP_DigestUpdate(op->md, data, len) != 1) ||
		    EVP_DigestFinal_ex(op->md, j->md, &mdlen) != 1)
			rv = CKR_FUNCTION_FAILED;
		j->in = j->md;
		j->inlen = mdlen;
	} else if (single) {
		j->in = data;
		j->inlen = len;
	} else {
		j->owned = op->buf;
		j->ownedcap = op->cap;
		j->in = op->buf;
		j->inlen = op->len;
		op->buf = NULL;
	}
	op_clear(op);
	return rv;
}

/*
 * C_Sign and C_SignFinal: answers a length query or a short buffer with
 * the operation still active, else ends it and signs through kmsd.
 */
static CK_RV
sign_finish(CK_SESSION_HANDLE h, const uint8_t *data, size_t len,
    int single, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	struct kmsclient *c;
	struct p11_input in;
	struct session *s;
	struct job j;
	size_t want, got;
	CK_RV rv;

	memset(&j, 0, sizeof(j));
	if (siglen == NULL || (single && data == NULL && len > 0))
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if (!s->sign.active) {
		return leave(CKR_OPERATION_NOT_INITIALIZED);
	}
	want = p11_sig_len(s->sign.alg);
	if (sig == NULL || *siglen < want) {
		rv = sig == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
		*siglen = want;
		return leave(rv);
	}
	rv = take_job(&s->sign, data, len, single, &j);
	c = g.client;
	pthread_mutex_unlock(&g.lock);
	if (rv == CKR_OK)
		rv = p11_mech_input(j.mech, j.alg, j.in, j.inlen, &in);
	if (rv == CKR_OK)
		rv = p11kms_sign(c, j.name, j.version, j.alg, &in, sig, &got);
	if (rv == CKR_OK)
		*siglen = got;
	job_clear(&j);
	return rv;
}

CK_RV
C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
    CK_ULONG_PTR siglen)
{
	return sign_finish(h, data, len, 1, sig, siglen);
}

CK_RV
C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	return sign_finish(h, NULL, 0, 0, sig, siglen);
}

/* Checks sig over the job's input with the public key, here. */
static CK_RV
verify_local(const struct job *j, const uint8_t *sig, size_t siglen)
{
	struct p11_input in;
	/* kms's verifier takes ECDSA signatures in DER (at most 9 more). */
	uint8_t der[P11_SIG_MAX + 16];
	size_t derlen = sizeof(der);
	int valid = 0;
	CK_RV rv;

	if (siglen != p11_sig_len(j->alg))
		return CKR_SIGNATURE_LEN_RANGE;
	if ((rv = p11_mech_input(j->mech, j->alg, j->in, j->inlen, &in)) !=
	    CKR_OK)
		return rv;
	if (pubkey_sig_encode(j->alg, sig, siglen, der, &derlen) != 0)
		return CKR_SIGNATURE_INVALID;
	if (pubkey_verify(j->alg, j->spki, j->spkilen, in.p, in.len, der,
	    derlen, &valid) != 0)
		return CKR_FUNCTION_FAILED;
	return valid ? CKR_OK : CKR_SIGNATURE_INVALID;
}

static CK_RV
verify_finish(CK_SESSION_HANDLE h, const uint8_t *data, size_t len,
    int single, const uint8_t *sig, size_t siglen)
{
	struct session *s;
	struct job j;
	CK_RV rv;

	if (sig == NULL || (single && data == NULL && len > 0))
		return CKR_ARGUMENTS_BAD;
	if ((rv = session_enter(h, &s)) != CKR_OK)
		return rv;
	if (!s->verify.active) {
		return leave(CKR_OPERATION_NOT_INITIALIZED);
	}
	rv = take_job(&s->verify, data, len, single, &j);
	pthread_mutex_unlock(&g.lock);
	if (rv == CKR_OK)
		rv = verify_local(&j, sig, siglen);
	job_clear(&j);
	return rv;
}

CK_RV
C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
    CK_ULONG siglen)
{
	return verify_finish(h, data, len, 1, sig, siglen);
}

CK_RV
C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG siglen)
{
	return verify_finish(h, NULL, 0, 0, sig, siglen);
}

/*
 * Everything else: the token neither stores nor makes objects, nor
 * encrypts; these answer CKR_FUNCTION_NOT_SUPPORTED once initialised.
 */
#define UNSUPPORTED(name, params)					\
CK_RV name params							\
{									\
	CK_RV rv_;							\
	return (rv_ = check_ready()) != CKR_OK ? rv_ :			\
	    CKR_FUNCTION_NOT_SUPPORTED;					\
}

UNSUPPORTED(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c,
    CK_UTF8CHAR_PTR d))
UNSUPPORTED(C_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c))
UNSUPPORTED(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c,
    CK_UTF8CHAR_PTR d, CK_ULONG e))
UNSUPPORTED(C_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG_PTR c))
UNSUPPORTED(C_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e))
UNSUPPORTED(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b,
    CK_ULONG c, CK_OBJECT_HANDLE_PTR d))
UNSUPPORTED(C_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
    CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
UNSUPPORTED(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
UNSUPPORTED(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
    CK_ULONG_PTR c))
UNSUPPORTED(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
    CK_ATTRIBUTE_PTR c, CK_ULONG d))
UNSUPPORTED(C_EncryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c))
UNSUPPORTED(C_Encrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_EncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_EncryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG_PTR c))
UNSUPPORTED(C_DecryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c))
UNSUPPORTED(C_Decrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DecryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DecryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG_PTR c))
UNSUPPORTED(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b))
UNSUPPORTED(C_Digest, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
UNSUPPORTED(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
UNSUPPORTED(C_DigestFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG_PTR c))
UNSUPPORTED(C_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c))
UNSUPPORTED(C_SignRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_VerifyRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c))
UNSUPPORTED(C_VerifyRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
    CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DigestEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DecryptDigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_SignEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e))
UNSUPPORTED(C_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
UNSUPPORTED(C_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f,
    CK_OBJECT_HANDLE_PTR g_, CK_OBJECT_HANDLE_PTR h))
UNSUPPORTED(C_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f))
UNSUPPORTED(C_UnwrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, CK_ATTRIBUTE_PTR f,
    CK_ULONG g_, CK_OBJECT_HANDLE_PTR h))
UNSUPPORTED(C_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
    CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e,
    CK_OBJECT_HANDLE_PTR f))
UNSUPPORTED(C_SeedRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
UNSUPPORTED(C_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b,
    CK_ULONG c))
UNSUPPORTED(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b,
    CK_VOID_PTR c))

/* Legacy functions: PKCS#11 fixes their answer. */
CK_RV
C_GetFunctionStatus(CK_SESSION_HANDLE h)
{
	CK_RV rv;

	return (rv = check_ready()) != CKR_OK ? rv :
	    CKR_FUNCTION_NOT_PARALLEL;
}

CK_RV
C_CancelFunction(CK_SESSION_HANDLE h)
{
	CK_RV rv;

	return (rv = check_ready()) != CKR_OK ? rv :
	    CKR_FUNCTION_NOT_PARALLEL;
}

static CK_FUNCTION_LIST function_list = {
	.version = { 2, 40 },
	.C_Initialize = C_Initialize,
	.C_Finalize = C_Finalize,
	.C_GetInfo = C_GetInfo,
	.C_GetFunctionList = C_GetFunctionList,
	.C_GetSlotList = C_GetSlotList,
	.C_GetSlotInfo = C_GetSlotInfo,
	.C_GetTokenInfo = C_GetTokenInfo,
	.C_GetMechanismList = C_GetMechanismList,
	.C_GetMechanismInfo = C_GetMechanismInfo,
	.C_InitToken = C_InitToken,
	.C_InitPIN = C_InitPIN,
	.C_SetPIN = C_SetPIN,
	.C_OpenSession = C_OpenSession,
	.C_CloseSession = C_CloseSession,
	.C_CloseAllSessions = C_CloseAllSessions,
	.C_GetSessionInfo = C_GetSessionInfo,
	.C_GetOperationState = C_GetOperationState,
	.C_SetOperationState = C_SetOperationState,
	.C_Login = C_Login,
	.C_Logout = C_Logout,
	.C_CreateObject = C_CreateObject,
	.C_CopyObject = C_CopyObject,
	.C_DestroyObject = C_DestroyObject,
	.C_GetObjectSize = C_GetObjectSize,
	.C_GetAttributeValue = C_GetAttributeValue,
	.C_SetAttributeValue = C_SetAttributeValue,
	.C_FindObjectsInit = C_FindObjectsInit,
	.C_FindObjects = C_FindObjects,
	.C_FindObjectsFinal = C_FindObjectsFinal,
	.C_EncryptInit = C_EncryptInit,
	.C_Encrypt = C_Encrypt,
	.C_EncryptUpdate = C_EncryptUpdate,
	.C_EncryptFinal = C_EncryptFinal,
	.C_DecryptInit = C_DecryptInit,
	.C_Decrypt = C_Decrypt,
	.C_DecryptUpdate = C_DecryptUpdate,
	.C_DecryptFinal = C_DecryptFinal,
	.C_DigestInit = C_DigestInit,
	.C_Digest = C_Digest,
	.C_DigestUpdate = C_DigestUpdate,
	.C_DigestKey = C_DigestKey,
	.C_DigestFinal = C_DigestFinal,
	.C_SignInit = C_SignInit,
	.C_Sign = C_Sign,
	.C_SignUpdate = C_SignUpdate,
	.C_SignFinal = C_SignFinal,
	.C_SignRecoverInit = C_SignRecoverInit,
	.C_SignRecover = C_SignRecover,
	.C_VerifyInit = C_VerifyInit,
	.C_Verify = C_Verify,
	.C_VerifyUpdate = C_VerifyUpdate,
	.C_VerifyFinal = C_VerifyFinal,
	.C_VerifyRecoverInit = C_VerifyRecoverInit,
	.C_VerifyRecover = C_VerifyRecover,
	.C_DigestEncryptUpdate = C_DigestEncryptUpdate,
	.C_DecryptDigestUpdate = C_DecryptDigestUpdate,
	.C_SignEncryptUpdate = C_SignEncryptUpdate,
	.C_DecryptVerifyUpdate = C_DecryptVerifyUpdate,
	.C_GenerateKey = C_GenerateKey,
	.C_GenerateKeyPair = C_GenerateKeyPair,
	.C_WrapKey = C_WrapKey,
	.C_UnwrapKey = C_UnwrapKey,
	.C_DeriveKey = C_DeriveKey,
	.C_SeedRandom = C_SeedRandom,
	.C_GenerateRandom = C_GenerateRandom,
	.C_GetFunctionStatus = C_GetFunctionStatus,
	.C_CancelFunction = C_CancelFunction,
	.C_WaitForSlotEvent = C_WaitForSlotEvent,
};

/*
 * The entry points a caller finds by name (libkms-pkcs11.map):
 * C_GetFunctionList, and PKCS#11 3.0's C_GetInterfaceList and
 * C_GetInterface, through which a 3.0 caller finds the same v2.40
 * function list as the one interface "PKCS 11".  Debian 12's p11-kit
 * headers stop at v2.40, so the 3.0 interface type is declared here, as
 * the standard's pkcs11t.h has it.
 */
CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	*out = &function_list;
	return CKR_OK;
}

struct p11_interface {			/* CK_INTERFACE */
	CK_CHAR *pInterfaceName;
	CK_VOID_PTR pFunctionList;
	CK_FLAGS flags;
};

#define P11_INTERFACE_NAME	"PKCS 11"

/* The one interface; read-only, whatever the 3.0 signature's type says. */
static const struct p11_interface interface = {
	(CK_CHAR *)P11_INTERFACE_NAME, &function_list, 0
};

CK_RV C_GetInterfaceList(struct p11_interface *list, CK_ULONG_PTR count);
CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
    struct p11_interface **out, CK_FLAGS flags);

CK_RV
C_GetInterfaceList(struct p11_interface *list, CK_ULONG_PTR count)
{
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if (list != NULL) {
		if (*count < 1) {
			*count = 1;
			return CKR_BUFFER_TOO_SMALL;
		}
		list[0] = interface;
	}
	*count = 1;
	return CKR_OK;
}

/*
 * The interface named name (NULL: the default), of version (NULL: any)
 * and with the flags asked for: "PKCS 11" 2.40 without flags, or
 * CKR_ARGUMENTS_BAD.
 */
CK_RV
C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
    struct p11_interface **out, CK_FLAGS flags)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	if (name != NULL && strcmp((const char *)name,
	    P11_INTERFACE_NAME) != 0)
		return CKR_ARGUMENTS_BAD;
	if (version != NULL && (version->major !=
	    function_list.version.major || version->minor !=
	    function_list.version.minor))
		return CKR_ARGUMENTS_BAD;
	if (flags != 0)
		return CKR_ARGUMENTS_BAD;
	*out = (struct p11_interface *)&interface;
	return CKR_OK;
}
