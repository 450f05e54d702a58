/*
 * sealcost: the cost of one audit batch seal, HMAC-SHA256 over 1200 bytes
 * in SoftHSM2 (C_SignInit + C_Sign), with the token's first generic
 * secret key (the seal key) and with its copy as a session object, as
 * kms/auditkey.c now uses it.  Thread CPU time and wall time per seal,
 * median of 3 rounds of N each.
 * Usage: sealcost MODULE TOKEN PIN_FILE [N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "p11util.h"

static double
now_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Mean thread CPU and wall µs per seal of n, or -1 on a failed call. */
static int
seal_n(struct p11 *p, CK_OBJECT_HANDLE key, long n, double *cpu,
    double *wall)
{
	CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
	unsigned char in[1200], mac[32];
	double c0, w0;
	CK_ULONG len;
	long i;

	memset(in, 0x5a, sizeof(in));
	c0 = now_us(CLOCK_THREAD_CPUTIME_ID);
	w0 = now_us(CLOCK_MONOTONIC);
	for (i = 0; i < n; i++) {
		len = sizeof(mac);
		if (p->f->C_SignInit(p->s, &mech, key) != CKR_OK ||
		    p->f->C_Sign(p->s, in, sizeof(in), mac, &len) != CKR_OK)
			return -1;
	}
	*cpu = (now_us(CLOCK_THREAD_CPUTIME_ID) - c0) / (double)n;
	*wall = (now_us(CLOCK_MONOTONIC) - w0) / (double)n;
	return 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_ATTRIBUTE find[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
	};
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE copy[] = { { CKA_TOKEN, &no, sizeof(no) } };
	CK_OBJECT_HANDLE *keys = NULL, k[2];
	CK_ULONG count = 0;
	double cpu[2][3], wall[2][3];
	long n = argc > 4 ? atol(argv[4]) : 2000;
	struct p11 p;
	int i, r;

	if (argc < 4 || n <= 0) {
		fprintf(stderr, "usage: sealcost MODULE TOKEN PIN_FILE [N]\n");
		return 2;
	}
	if (p11_open(&p, "sealcost", argv[1], argv[2], argv[3]) != 0)
		return 1;
	if (p11_find_all(&p, find, 2, &keys, &count) != CKR_OK ||
	    count == 0) {
		fprintf(stderr, "sealcost: no generic secret key on the token "
		    "(start kmsd with an audit log on it once)\n");
		return 1;
	}
	k[0] = keys[0];
	if (p.f->C_CopyObject(p.s, keys[0], copy, 1, &k[1]) != CKR_OK) {
		fprintf(stderr, "sealcost: C_CopyObject failed\n");
		return 1;
	}
	for (r = 0; r < 3; r++) {
		for (i = 0; i < 2; i++) {
			if (seal_n(&p, k[i], n, &cpu[i][r], &wall[i][r]) != 0) {
				fprintf(stderr, "sealcost: HMAC failed\n");
				return 1;
			}
		}
	}
	for (i = 0; i < 2; i++) {
		qsort(cpu[i], 3, sizeof(double), cmp_double);
		qsort(wall[i], 3, sizeof(double), cmp_double);
	}
	printf("{\"seals\": %ld, \"token_cpu_us\": %.1f, \"token_wall_us\": "
	    "%.1f, \"session_cpu_us\": %.1f, \"session_wall_us\": %.1f}\n",
	    n, cpu[0][1], wall[0][1], cpu[1][1], wall[1][1]);
	free(keys);
	p11_close(&p);
	return 0;
}
