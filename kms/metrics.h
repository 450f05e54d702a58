/*
 * metrics.h: kmsd's Prometheus metrics ([metrics] listen, off by
 * default).  Counters are atomics updated where the work happens, so the
 * hot path pays a few relaxed additions; the text is made only when
 * GET /metrics asks for it, served by libmicrohttpd.  No key name and no
 * identity appears in it, only counts.
 */
#ifndef KMS_METRICS_H
#define KMS_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct kms_status;
struct metrics;

/* The HSM operations counted (kms_hsm_operations_total{op}). */
enum metrics_hsm_op {
	METRICS_HSM_SIGN,
	METRICS_HSM_GENERATE_KEY_PAIR,
	METRICS_HSM_GENERATE_KEY,
	METRICS_HSM_WRAP,
	METRICS_HSM_UNWRAP,
	METRICS_HSM_RANDOM,
	METRICS_HSM_NOPS
};

/*
 * Gauges read when a scrape asks: the number of keys and of open client
 * connections.  The callbacks must be safe to call from the HTTP thread.
 */
struct metrics_gauges {
	size_t (*keys)(void *arg);
	unsigned int (*connections)(void *arg);
	void *arg;
};

/* nmethods: the RPC methods served (labels from method_name). */
int metrics_new(size_t nmethods, const char *(*method_name)(size_t),
    struct metrics **out);
/* Stops serving (if started) and frees; NULL is a no-op. */
void metrics_free(struct metrics *m);
/* Serves GET /metrics on listen (HOST:PORT); 0 or an error with st. */
int metrics_serve(struct metrics *m, const char *listen,
    const struct metrics_gauges *g, struct kms_status *st);

/*
 * Every update below takes m == NULL as "metrics off".
 *
 * A call of method (method == nmethods: an unknown method) ended with the
 * gRPC status code in seconds.
 */
void metrics_request(struct metrics *m, size_t method, int code,
    double seconds);
/* An HSM operation, ok or not. */
void metrics_hsm_op(struct metrics *m, enum metrics_hsm_op op, int ok);
/* A PKCS#11 call that returned rv (not CKR_OK). */
void metrics_hsm_error(struct metrics *m, unsigned long rv);
/* A batch of records made durable in seconds (the write and its sync). */
void metrics_audit_batch(struct metrics *m, uint64_t records, double seconds);
/* A checkpoint was signed as record seq. */
void metrics_audit_checkpoint(struct metrics *m, uint64_t seq);

#endif /* KMS_METRICS_H */
