/*
 * kmsbspeed: the device verifier's throughput in one process on one
 * thread, without process start-up or file I/O: the bundle is read into
 * memory once, then verified RUNS times, fed in BLOCK-byte pieces as a
 * device reading from flash or a socket would.  Prints one JSON object
 * with the best and the median time.  Used by bench/ota.sh.
 *
 *   kmsbspeed ROOT.pem DEVICE.key APP CHANNEL BUNDLE [RUNS [BLOCK]]
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsb/kmsb.h"
#include "kmsb/kmsb_file.h"
#include "kmsb/kmsb_keys.h"

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
count(void *arg, const uint8_t *p, size_t len)
{
	*(size_t *)arg += len;
	return 0;
}

int
main(int argc, char **argv)
{
	struct kmsb_policy pol;
	struct kmsb_verifier *v;
	struct timespec t0, t1;
	struct stat sb;
	uint8_t *bundle, *pem;
	size_t blen, plen, off, n, out, block = 128 * 1024;
	double *t;
	int runs = 20, i, r;

	if (argc < 6 || argc > 8)
		return 2;
	if (argc > 6)
		runs = atoi(argv[6]);
	if (argc > 7)
		block = (size_t)strtoul(argv[7], NULL, 10);
	if (runs < 1 || runs > 1000 || block == 0)
		return 2;
	memset(&pol, 0, sizeof(pol));
	if (kmsb_read_file(argv[1], 8192, &pem, &plen) != 0 ||
	    kmsb_pem_sig_pubkey((char *)pem, plen, &pol.root) != 0)
		return 1;
	free(pem);
	if (kmsb_read_file(argv[2], 8192, &pem, &plen) != 0 ||
	    kmsb_pem_x25519_priv((char *)pem, plen, pol.recipient_sk) != 0)
		return 1;
	free(pem);
	/* The bundle's own size bounds the read (and the allocation). */
	if (stat(argv[5], &sb) != 0 ||
	    kmsb_read_file(argv[5], (size_t)sb.st_size, &bundle, &blen) != 0 ||
	    (t = calloc((size_t)runs, sizeof(*t))) == NULL)
		return 1;
	pol.app_id = argv[3];
	pol.channel = argv[4];
	pol.now = (uint64_t)time(NULL);
	for (i = 0; i < runs; i++) {
		out = 0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (kmsb_verifier_init(&v, &pol) != KMSB_OK)
			return 1;
		r = KMSB_OK;
		for (off = 0; r == KMSB_OK && off < blen; off += n) {
			n = blen - off < block ? blen - off : block;
			r = kmsb_verifier_update(v, bundle + off, n, count, &out);
		}
		if (r == KMSB_OK)
			r = kmsb_verifier_final(v);
		kmsb_verifier_free(v);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (r != KMSB_OK) {
			fprintf(stderr, "kmsbspeed: %s\n", kmsb_strerror(r));
			return 1;
		}
		t[i] = (double)(t1.tv_sec - t0.tv_sec) +
		    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	}
	qsort(t, (size_t)runs, sizeof(*t), cmp_double);
	printf("{\"bundle_bytes\": %zu, \"plaintext_bytes\": %zu, \"runs\": %d, "
	    "\"block\": %zu, \"best_seconds\": %.6f, \"median_seconds\": %.6f, "
	    "\"mb_per_s_best\": %.1f, \"mb_per_s_median\": %.1f}\n", blen, out,
	    runs, block, t[0], t[runs / 2], (double)out / 1e6 / t[0],
	    (double)out / 1e6 / t[runs / 2]);
	free(t);
	free(bundle);
	return 0;
}
