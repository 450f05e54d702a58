/*
 * auditfmt: the CPU time of building one audit record, a Sign's as the
 * gate makes it, with kms/auditjson.c and with jansson (the encoder it
 * replaced, tests/unit/auditjson_ref.h).  Thread CPU time, so another
 * process's load changes it little.  Usage: auditfmt [RECORDS]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "auditjson.h"
#include "auditjson_ref.h"

static double
cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int
main(int argc, char **argv)
{
	static const uint8_t digest[32] = { 0x5a, 0xa5 };
	struct auditjson_head h = { 1, "2026-12-04T21:00:00.000001Z",
	    "127.0.0.1_7443",
	    "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff" };
	struct audit_event ev;
	long i, n = argc > 1 ? atol(argv[1]) : 200000;
	double t0, t1, t2;
	char *a, *b;

	if (n <= 0) {
		fprintf(stderr, "usage: auditfmt [RECORDS]\n");
		return 2;
	}
	memset(&ev, 0, sizeof(ev));
	ev.identity = "ci";
	ev.fingerprint = "3f1c0d7e5b2a9c8e4f6a1b3d5c7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
	ev.peer = "ipv4:127.0.0.1:53124";
	ev.rpc = "Sign";
	ev.key = "bench/p256";
	ev.version = 1;
	ev.result = "ok";
	ev.status = "OK";
	ev.request_sha256 = digest;
	a = auditjson_record(&h, &ev, NULL);
	b = jansson_record(&h, &ev, NULL);
	if (a == NULL || b == NULL || strcmp(a, b) != 0) {
		fprintf(stderr, "auditfmt: the encoders differ\n");
		return 1;
	}
	free(a);
	free(b);
	t0 = cpu_ns();
	for (i = 0; i < n; i++) {
		h.seq = (uint64_t)i;
		free(auditjson_record(&h, &ev, NULL));
	}
	t1 = cpu_ns();
	for (i = 0; i < n; i++) {
		h.seq = (uint64_t)i;
		free(jansson_record(&h, &ev, NULL));
	}
	t2 = cpu_ns();
	printf("{\"records\": %ld, \"auditjson_ns\": %.0f, \"jansson_ns\": %.0f}\n",
	    n, (t1 - t0) / (double)n, (t2 - t1) / (double)n);
	return 0;
}
