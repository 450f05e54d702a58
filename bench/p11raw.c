/*
 * p11raw: calls C_Sign directly on a token key, as the baseline kms is
 * measured against (and, through p11-kit's client module, as the
 * remote-PKCS#11 peer).
 *
 *   p11raw --module SO --token LABEL --pin-file F --alg ecdsa|eddsa|rsa
 *          [--threads T] [--seconds S]
 *
 * The key pair "bench-raw-ALG" is made in the token (token object,
 * sensitive, not extractable) when it is not there yet.  Each thread has
 * its own session.  Prints one JSON object with ops, ops_per_s, latency
 * percentiles and the process CPU time per operation.
 */
#include <sys/resource.h>

#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#include "p11util.h"

#define MAX_SAMPLES (1024 * 1024)

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID slot;
static CK_MECHANISM mech;
static CK_OBJECT_HANDLE key;
static int seconds = 5;
static size_t inlen = 32;

struct worker {
	pthread_t th;
	double *lat;
	size_t n;
	unsigned long errors;
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
die(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11raw: %s failed: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

static CK_OBJECT_HANDLE
find_or_make(CK_SESSION_HANDLE s, const char *alg, const char *label)
{
	static const CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
	    0x3d, 0x03, 0x01, 0x07 };
	static const CK_BYTE ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BBOOL t = CK_TRUE, fa = CK_FALSE;
	CK_ULONG bits = 2048, got = 0;
	CK_BYTE exp[] = { 1, 0, 1 };
	CK_ATTRIBUTE find[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE pub[5] = {
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_VERIFY, &t, sizeof(t) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_PRIVATE, &t, sizeof(t) },
		{ CKA_SENSITIVE, &t, sizeof(t) },
		{ CKA_EXTRACTABLE, &fa, sizeof(fa) },
		{ CKA_SIGN, &t, sizeof(t) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_MECHANISM gen = { 0, NULL, 0 };
	CK_OBJECT_HANDLE h = 0, hp;
	CK_ULONG np = 3;
	CK_RV rv;

	if ((rv = f->C_FindObjectsInit(s, find, 2)) != CKR_OK)
		die("C_FindObjectsInit", rv);
	f->C_FindObjects(s, &h, 1, &got);
	f->C_FindObjectsFinal(s);
	if (got == 1)
		return h;
	if (strcmp(alg, "ecdsa") == 0) {
		gen.mechanism = CKM_EC_KEY_PAIR_GEN;
		pub[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)p256,
		    sizeof(p256) };
	} else if (strcmp(alg, "eddsa") == 0) {
		gen.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
		pub[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)ed25519,
		    sizeof(ed25519) };
	} else {
		gen.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		pub[np++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits,
		    sizeof(bits) };
		pub[np++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, exp,
		    sizeof(exp) };
	}
	if ((rv = f->C_GenerateKeyPair(s, &gen, pub, np, priv, 6, &hp,
	    &h)) != CKR_OK)
		die("C_GenerateKeyPair", rv);
	return h;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	CK_SESSION_HANDLE s;
	CK_BYTE in[64], sig[512];
	CK_ULONG siglen;
	double t0, t1, end;
	CK_RV rv;

	memset(in, 0x11, sizeof(in));
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
	    &s)) != CKR_OK)
		die("C_OpenSession", rv);
	end = now_ms() + seconds * 1e3;
	while ((t0 = now_ms()) < end) {
		siglen = sizeof(sig);
		if ((rv = f->C_SignInit(s, &mech, key)) != CKR_OK ||
		    (rv = f->C_Sign(s, in, inlen, sig, &siglen)) != CKR_OK) {
			w->errors++;
			continue;
		}
		t1 = now_ms();
		if (w->n < MAX_SAMPLES)
			w->lat[w->n++] = t1 - t0;
	}
	f->C_CloseSession(s);
	return NULL;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },
		{ "pin-file", required_argument, NULL, 'p' },
		{ "alg", required_argument, NULL, 'a' },
		{ "threads", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 }
	};
	const char *module = NULL, *token = NULL, *pinfile = NULL;
	const char *alg = "ecdsa";
	struct p11 p;
	CK_SESSION_HANDLE s;
	struct rusage ru0, ru1;
	struct worker *w;
	char label[64];
	double *all, t0, el, cpu;
	size_t n = 0;
	unsigned long ops = 0, errors = 0;
	int ch, threads = 1;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'm': module = optarg; break;
		case 't': token = optarg; break;
		case 'p': pinfile = optarg; break;
		case 'a': alg = optarg; break;
		case 'n': threads = atoi(optarg); break;
		case 's': seconds = atoi(optarg); break;
		default: return 2;
		}
	}
	if (module == NULL || token == NULL || pinfile == NULL ||
	    threads < 1 || threads > 64 || seconds < 1) {
		fprintf(stderr, "usage: p11raw --module SO --token LABEL "
		    "--pin-file F --alg ecdsa|eddsa|rsa [--threads T] "
		    "[--seconds S]\n");
		return 2;
	}
	if (strcmp(alg, "ecdsa") == 0) {
		mech.mechanism = CKM_ECDSA;
		inlen = 32;
	} else if (strcmp(alg, "eddsa") == 0) {
		mech.mechanism = CKM_EDDSA;
		inlen = 32;
	} else if (strcmp(alg, "rsa") == 0) {
		/* What kms signs for RSA_PKCS1_2048_SHA256: DigestInfo + hash. */
		mech.mechanism = CKM_RSA_PKCS;
		inlen = 51;
	} else
		return 2;
	if (p11_open(&p, "p11raw", module, token, pinfile) != 0)
		return 1;
	f = p.f;
	slot = p.slot;
	s = p.s;
	snprintf(label, sizeof(label), "bench-raw-%s", alg);
	key = find_or_make(s, alg, label);
	w = calloc((size_t)threads, sizeof(*w));
	for (ch = 0; ch < threads; ch++)
		w[ch].lat = malloc(MAX_SAMPLES * sizeof(double));
	getrusage(RUSAGE_SELF, &ru0);
	t0 = now_ms();
	for (ch = 0; ch < threads; ch++)
		pthread_create(&w[ch].th, NULL, worker_main, &w[ch]);
	for (ch = 0; ch < threads; ch++)
		pthread_join(w[ch].th, NULL);
	el = (now_ms() - t0) / 1e3;
	getrusage(RUSAGE_SELF, &ru1);
	cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	    (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	    ((ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
	    (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / 1e6;
	for (ch = 0; ch < threads; ch++) {
		n += w[ch].n;
		errors += w[ch].errors;
	}
	all = malloc((n + 1) * sizeof(double));
	for (n = 0, ch = 0; ch < threads; ch++) {
		memcpy(all + n, w[ch].lat, w[ch].n * sizeof(double));
		n += w[ch].n;
		free(w[ch].lat);
	}
	ops = n;
	qsort(all, n, sizeof(double), cmp);
#define PCT(p) (n == 0 ? 0.0 : all[(size_t)((p) * (n - 1))])
	printf("{\"alg\":\"%s\",\"threads\":%d,\"seconds\":%.3f,\"ops\":%lu,"
	    "\"errors\":%lu,\"ops_per_s\":%.1f,\"p50_ms\":%.3f,"
	    "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"cpu_us_per_op\":%.1f}\n",
	    alg, threads, el, ops, errors, ops / el, PCT(0.5), PCT(0.99),
	    PCT(0.999), ops ? cpu * 1e6 / ops : 0.0);
	p11_close(&p);
	free(all);
	free(w);
	return ops == 0;
}
