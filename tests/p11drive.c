/*
 * p11drive: drives a PKCS#11 module through its function list, for what
 * the signing tools do not show: the exact CK_RV of a refusal, multi-part
 * and local verification, the fork rule, a signature held across a
 * change on the server, and C_Sign from many threads.
 *
 *   p11drive MODULE list
 *   p11drive MODULE sign LABEL MECH IN OUT [multi]
 *   p11drive MODULE verify LABEL MECH IN SIG [multi]
 *   p11drive MODULE fork LABEL MECH IN
 *   p11drive MODULE hold LABEL MECH IN	(signs, waits for a line, signs)
 *   p11drive MODULE bench LABEL MECH THREADS SECONDS
 *
 * MECH is ECDSA, ECDSA_SHA256, ECDSA_SHA384, EDDSA, RSA_PKCS,
 * SHA256_RSA_PKCS, RSA_PKCS_PSS, SHA256_RSA_PKCS_PSS, or
 * RSA_PKCS_PSS_SALT20 (PSS with a 20-byte salt).  A failed call prints
 * "FUNCTION: CKR_NAME" on stdout and exits 3; bad usage exits 2.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *p11;

static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
	{ CKR_OK, "CKR_OK" },
	{ CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR" },
	{ CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED" },
	{ CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD" },
	{ CKR_DATA_INVALID, "CKR_DATA_INVALID" },
	{ CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE" },
	{ CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR" },
	{ CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED" },
	{ CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID" },
	{ CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT" },
	{ CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED" },
	{ CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID" },
	{ CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID" },
	{ CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID" },
	{ CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE" },
	{ CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED" },
	{ CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID" },
	{ CKR_SIGNATURE_LEN_RANGE, "CKR_SIGNATURE_LEN_RANGE" },
	{ CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED" },
	{ CKR_CRYPTOKI_ALREADY_INITIALIZED,
	    "CKR_CRYPTOKI_ALREADY_INITIALIZED" },
	{ CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED" },
	{ CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE" },
};

static const char *
rv_name(CK_RV rv)
{
	static char buf[32];
	size_t i;

	for (i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	snprintf(buf, sizeof(buf), "0x%lx", (unsigned long)rv);
	return buf;
}

static void
check(const char *fn, CK_RV rv)
{
	if (rv == CKR_OK)
		return;
	printf("%s: %s\n", fn, rv_name(rv));
	exit(3);
}

static CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
static CK_RSA_PKCS_PSS_PARAMS pss20 = { CKM_SHA256, CKG_MGF1_SHA256, 20 };

static int
mechanism(const char *name, CK_MECHANISM *m)
{
	static const struct {
		const char *name;
		CK_MECHANISM_TYPE t;
	} tab[] = {
		{ "ECDSA", CKM_ECDSA }, { "ECDSA_SHA256", CKM_ECDSA_SHA256 },
		{ "ECDSA_SHA384", CKM_ECDSA_SHA384 }, { "EDDSA", CKM_EDDSA },
		{ "RSA_PKCS", CKM_RSA_PKCS },
		{ "SHA256_RSA_PKCS", CKM_SHA256_RSA_PKCS },
		{ "RSA_PKCS_PSS", CKM_RSA_PKCS_PSS },
		{ "SHA256_RSA_PKCS_PSS", CKM_SHA256_RSA_PKCS_PSS },
		{ "RSA_PKCS_PSS_SALT20", CKM_RSA_PKCS_PSS },
	};
	size_t i;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(tab[i].name, name) == 0) {
			m->mechanism = tab[i].t;
			if (strstr(name, "PSS") != NULL) {
				m->pParameter = strstr(name, "SALT20") ?
				    &pss20 : &pss;
				m->ulParameterLen = sizeof(pss);
			}
			return 0;
		}
	fprintf(stderr, "p11drive: unknown mechanism %s\n", name);
	exit(2);
}

static unsigned char *
read_file(const char *path, size_t *len)
{
	FILE *f;
	unsigned char *buf;
	long n;

	if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) != 0 ||
	    (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    (buf = malloc((size_t)n + 1)) == NULL ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "p11drive: cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void
write_file(const char *path, const unsigned char *p, size_t len)
{
	FILE *f;

	if ((f = fopen(path, "wb")) == NULL || fwrite(p, 1, len, f) != len ||
	    fclose(f) != 0) {
		fprintf(stderr, "p11drive: cannot write %s\n", path);
		exit(2);
	}
}

static CK_SESSION_HANDLE
open_session(void)
{
	CK_SLOT_ID slot;
	CK_ULONG n = 1;
	CK_SESSION_HANDLE s;

	check("C_GetSlotList", p11->C_GetSlotList(CK_TRUE, &slot, &n));
	check("C_OpenSession", p11->C_OpenSession(slot, CKF_SERIAL_SESSION,
	    NULL, NULL, &s));
	return s;
}

/* The object of class cls labelled label. */
static CK_OBJECT_HANDLE
find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label)
{
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE h;
	CK_ULONG n = 0;

	check("C_FindObjectsInit", p11->C_FindObjectsInit(s, t, 2));
	check("C_FindObjects", p11->C_FindObjects(s, &h, 1, &n));
	check("C_FindObjectsFinal", p11->C_FindObjectsFinal(s));
	if (n != 1) {
		printf("no object labelled %s\n", label);
		exit(3);
	}
	return h;
}

static CK_RV
sign(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k, CK_MECHANISM *m,
    const unsigned char *in, size_t len, int multi, unsigned char *sig,
    CK_ULONG *siglen, const char **failed)
{
	CK_RV rv;
	size_t off, step;

	*failed = "C_SignInit";
	if ((rv = p11->C_SignInit(s, m, k)) != CKR_OK)
		return rv;
	if (!multi) {
		*failed = "C_Sign";
		return p11->C_Sign(s, (CK_BYTE_PTR)in, len, sig, siglen);
	}
	*failed = "C_SignUpdate";
	for (off = 0; off < len; off += step) {
		step = len - off < 7 ? len - off : 7;
		if ((rv = p11->C_SignUpdate(s, (CK_BYTE_PTR)in + off,
		    step)) != CKR_OK)
			return rv;
	}
	*failed = "C_SignFinal";
	return p11->C_SignFinal(s, sig, siglen);
}

static int
cmd_list(void)
{
	CK_SESSION_HANDLE s = open_session();
	CK_OBJECT_HANDLE h[64];
	CK_OBJECT_CLASS cls;
	CK_BBOOL sens, extr;
	char label[256];
	unsigned char id[64];
	CK_ULONG n = 0, i, j;
	CK_RV rv;

	check("C_FindObjectsInit", p11->C_FindObjectsInit(s, NULL, 0));
	check("C_FindObjects", p11->C_FindObjects(s, h, 64, &n));
	check("C_FindObjectsFinal", p11->C_FindObjectsFinal(s));
	for (i = 0; i < n; i++) {
		CK_ATTRIBUTE t[3] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_LABEL, label, sizeof(label) - 1 },
			{ CKA_ID, id, sizeof(id) },
		};
		CK_ATTRIBUTE p[2] = {
			{ CKA_SENSITIVE, &sens, sizeof(sens) },
			{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		};
		unsigned char value[8];
		CK_ATTRIBUTE v = { CKA_VALUE, value, sizeof(value) };

		check("C_GetAttributeValue",
		    p11->C_GetAttributeValue(s, h[i], t, 3));
		label[t[1].ulValueLen] = '\0';
		printf("%s %s ", cls == CKO_PRIVATE_KEY ? "private" :
		    cls == CKO_PUBLIC_KEY ? "public" : "certificate", label);
		for (j = 0; j < t[2].ulValueLen; j++)
			printf("%02x", id[j]);
		if (cls == CKO_PRIVATE_KEY) {
			check("C_GetAttributeValue",
			    p11->C_GetAttributeValue(s, h[i], p, 2));
			rv = p11->C_GetAttributeValue(s, h[i], &v, 1);
			printf(" sensitive=%d extractable=%d value=%s",
			    sens, extr, rv_name(rv));
		}
		printf("\n");
	}
	return 0;
}

static int
cmd_sign(char **argv, int multi)
{
	CK_SESSION_HANDLE s = open_session();
	CK_MECHANISM m;
	unsigned char sig[1024], *in;
	CK_ULONG siglen = sizeof(sig);
	const char *failed;
	size_t len;
	CK_RV rv;

	mechanism(argv[1], &m);
	in = read_file(argv[2], &len);
	rv = sign(s, find(s, CKO_PRIVATE_KEY, argv[0]), &m, in, len, multi,
	    sig, &siglen, &failed);
	check(failed, rv);
	write_file(argv[3], sig, siglen);
	free(in);
	return 0;
}

static int
cmd_verify(char **argv, int multi)
{
	CK_SESSION_HANDLE s = open_session();
	CK_OBJECT_HANDLE k = find(s, CKO_PUBLIC_KEY, argv[0]);
	CK_MECHANISM m;
	unsigned char *in, *sig;
	size_t len, siglen;

	mechanism(argv[1], &m);
	in = read_file(argv[2], &len);
	sig = read_file(argv[3], &siglen);
	check("C_VerifyInit", p11->C_VerifyInit(s, &m, k));
	if (multi) {
		check("C_VerifyUpdate", p11->C_VerifyUpdate(s, in, len));
		check("C_VerifyFinal", p11->C_VerifyFinal(s, sig, siglen));
	} else
		check("C_Verify", p11->C_Verify(s, in, len, sig, siglen));
	printf("verified\n");
	free(in);
	free(sig);
	return 0;
}

/* Signs once; for the child of a fork, first proves the module is gone. */
static void
sign_once(const char *label, CK_MECHANISM *m, const unsigned char *in,
    size_t len)
{
	CK_SESSION_HANDLE s = open_session();
	unsigned char sig[1024];
	CK_ULONG siglen = sizeof(sig);
	const char *failed;

	check(failed, sign(s, find(s, CKO_PRIVATE_KEY, label), m, in, len, 0,
	    sig, &siglen, &failed));
	check("C_CloseSession", p11->C_CloseSession(s));
}

static int
cmd_fork(char **argv)
{
	CK_MECHANISM m;
	CK_INFO info;
	CK_SESSION_HANDLE s;
	CK_ULONG n = 1;
	CK_SLOT_ID slot;
	unsigned char *in;
	size_t len;
	pid_t pid;
	int status;

	mechanism(argv[1], &m);
	in = read_file(argv[2], &len);
	sign_once(argv[0], &m, in, len);
	s = open_session();
	fflush(stdout);
	if ((pid = fork()) < 0)
		return 2;
	if (pid == 0) {
		/* Every function refuses until the child initialises. */
		if (p11->C_GetInfo(&info) != CKR_CRYPTOKI_NOT_INITIALIZED ||
		    p11->C_GetSlotList(CK_TRUE, &slot, &n) !=
		    CKR_CRYPTOKI_NOT_INITIALIZED ||
		    p11->C_CloseSession(s) != CKR_CRYPTOKI_NOT_INITIALIZED ||
		    p11->C_Finalize(NULL) != CKR_CRYPTOKI_NOT_INITIALIZED) {
			printf("child: the module answered before "
			    "C_Initialize\n");
			fflush(stdout);
			_exit(4);
		}
		printf("child: CKR_CRYPTOKI_NOT_INITIALIZED\n");
		check("child C_Initialize", p11->C_Initialize(NULL));
		sign_once(argv[0], &m, in, len);
		printf("child: signed\n");
		fflush(stdout);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		printf("child failed\n");
		return 3;
	}
	/* The parent's module is untouched by the child. */
	check("C_CloseSession", p11->C_CloseSession(s));
	sign_once(argv[0], &m, in, len);
	printf("parent: signed\n");
	free(in);
	return 0;
}

static int
cmd_hold(char **argv)
{
	CK_SESSION_HANDLE s = open_session();
	CK_OBJECT_HANDLE k = find(s, CKO_PRIVATE_KEY, argv[0]);
	CK_MECHANISM m;
	unsigned char sig[1024], *in;
	CK_ULONG siglen = sizeof(sig);
	const char *failed;
	char line[16];
	size_t len;
	CK_RV rv;

	mechanism(argv[1], &m);
	in = read_file(argv[2], &len);
	check(failed, sign(s, k, &m, in, len, 0, sig, &siglen, &failed));
	printf("signed\n");
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL)
		return 2;
	siglen = sizeof(sig);
	rv = sign(s, k, &m, in, len, 0, sig, &siglen, &failed);
	printf("%s: %s\n", failed, rv_name(rv));
	free(in);
	return rv == CKR_OK ? 0 : 3;
}

struct bench {
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m;
	double until;
	unsigned long done, failed;
};

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *
bench_thread(void *arg)
{
	struct bench *b = arg;
	CK_SESSION_HANDLE s = open_session();
	unsigned char digest[64] = { 1 }, sig[1024];
	CK_ULONG siglen;
	const char *failed;

	while (now() < b->until) {
		siglen = sizeof(sig);
		if (sign(s, b->key, &b->m, digest, 32, 0, sig, &siglen,
		    &failed) == CKR_OK)
			b->done++;
		else
			b->failed++;
	}
	p11->C_CloseSession(s);
	return NULL;
}

static int
cmd_bench(char **argv)
{
	CK_SESSION_HANDLE s = open_session();
	struct bench *b;
	pthread_t *th;
	unsigned long done = 0, failed = 0;
	int i, n = atoi(argv[2]);
	double secs = atof(argv[3]), t0;

	if (n < 1 || n > 256 || secs <= 0)
		return 2;
	b = calloc((size_t)n, sizeof(*b));
	th = calloc((size_t)n, sizeof(*th));
	if (b == NULL || th == NULL)
		return 2;
	t0 = now();
	for (i = 0; i < n; i++) {
		b[i].key = find(s, CKO_PRIVATE_KEY, argv[0]);
		mechanism(argv[1], &b[i].m);
		b[i].until = t0 + secs;
		pthread_create(&th[i], NULL, bench_thread, &b[i]);
	}
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		done += b[i].done;
		failed += b[i].failed;
	}
	printf("threads=%d seconds=%.1f signatures=%lu failed=%lu "
	    "rate=%.0f/s\n", n, now() - t0, done, failed,
	    (double)done / (now() - t0));
	free(b);
	free(th);
	return failed == 0 ? 0 : 3;
}

int
main(int argc, char **argv)
{
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_C_INITIALIZE_ARGS args;
	void *h;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: p11drive MODULE COMMAND ...\n");
		return 2;
	}
	if ((h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "p11drive: %s\n", dlerror());
		return 2;
	}
	*(void **)&get = dlsym(h, "C_GetFunctionList");
	if (get == NULL || get(&p11) != CKR_OK)
		return 2;
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	check("C_Initialize", p11->C_Initialize(&args));
	if (strcmp(argv[2], "list") == 0)
		r = cmd_list();
	else if (strcmp(argv[2], "sign") == 0 && (argc == 7 || argc == 8))
		r = cmd_sign(argv + 3, argc == 8);
	else if (strcmp(argv[2], "verify") == 0 && (argc == 7 || argc == 8))
		r = cmd_verify(argv + 3, argc == 8);
	else if (strcmp(argv[2], "fork") == 0 && argc == 6)
		r = cmd_fork(argv + 3);
	else if (strcmp(argv[2], "hold") == 0 && argc == 6)
		r = cmd_hold(argv + 3);
	else if (strcmp(argv[2], "bench") == 0 && argc == 7)
		r = cmd_bench(argv + 3);
	else {
		fprintf(stderr, "p11drive: bad command\n");
		return 2;
	}
	check("C_Finalize", p11->C_Finalize(NULL));
	return r;
}
