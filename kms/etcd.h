/*
 * etcd.h: a small etcd v3 client on gRPC C core (etcd.c), for the etcd
 * store (store_etcd.c) and kmsd's coordination through etcd.
 *
 * It speaks etcd's own gRPC API (proto/etcd/, etcd v3.4.23): KV Range,
 * Txn and DeleteRange, Lease Grant, KeepAlive and Revoke, and Watch.
 * Every call is bounded by the client's timeout (2 s unless told) and
 * tries the endpoints in turn, starting with the one that answered last,
 * round after round while that time lasts: a member that is down or has
 * lost its leader is passed over, and an election is waited out.  Errors are KMS_ERR_UNAVAILABLE (no endpoint answered in
 * time, or the cluster has no quorum; the message names etcd and the
 * reason), KMS_ERR_CONFLICT (a compare failed), KMS_ERR_NOT_FOUND, or
 * KMS_ERR_INTERNAL (a reply that makes no sense).
 *
 * etcd.c and etcdwatch.c are part of the RPC layer: with kms/rpc.c and
 * kms/healthsrv.c they are the files that include gRPC headers (docs/design.md); nothing
 * gRPC or protobuf leaves it.
 */
#ifndef KMS_ETCD_H
#define KMS_ETCD_H

#include <stddef.h>
#include <stdint.h>

struct kms_status;
struct etcd;
struct etcd_watch;

#define ETCD_ENDPOINTS_MAX 16
#define ETCD_DEFAULT_TIMEOUT_MS 2000
#define ETCD_MAX_REPLY (64u << 20)	/* the largest reply accepted */

struct etcd_opts {
	/* "host:port, host:port": an optional http:// or https:// is dropped */
	const char *endpoints;
	/* TLS when all three are set; none: plaintext, on loopback only */
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	unsigned int timeout_ms;	/* per call; 0: ETCD_DEFAULT_TIMEOUT_MS */
};

/* One key of a reply: valid during the callback only. */
struct etcd_kv {
	const char *key;		/* NUL-terminated; key_len bytes */
	size_t key_len;
	const uint8_t *value;		/* NUL-terminated; len bytes */
	size_t len;
	int64_t create_rev;
	int64_t mod_rev;
	int64_t version;
	int64_t lease;
};

/* A non-zero return stops the walk and is returned by the caller. */
typedef int etcd_kv_fn(const struct etcd_kv *kv, void *arg);

/* Opens a client (channels connect lazily). */
int etcd_open(const struct etcd_opts *o, struct etcd **out,
    struct kms_status *st);
/* NULL is a no-op.  Watches must be stopped first. */
void etcd_close(struct etcd *e);

/*
 * Every key equal to key (prefix 0) or starting with it (prefix 1), in
 * key order, linearizable; fn may be NULL.  *rev (may be NULL) is the
 * store's revision the reply reflects, *count (may be NULL) how many keys
 * there were.
 */
int etcd_range(struct etcd *e, const char *key, int prefix, etcd_kv_fn *fn,
    void *arg, int64_t *rev, size_t *count, struct kms_status *st);

/*
 * One transaction: if key's mod_revision is mod_rev (0: the key does not
 * exist), put value there (attached to lease, 0: none) and set *new_rev
 * (may be NULL) to the put's revision; else read key and answer
 * KMS_ERR_CONFLICT, giving what is there now to cur (may be NULL; not
 * called when the key does not exist).
 */
int etcd_put_if(struct etcd *e, const char *key, int64_t mod_rev,
    const uint8_t *value, size_t len, int64_t lease, int64_t *new_rev,
    etcd_kv_fn *cur, void *arg, struct kms_status *st);

/* Puts value at key, whatever is there (lease 0: none). */
int etcd_put(struct etcd *e, const char *key, const uint8_t *value,
    size_t len, int64_t lease, int64_t *new_rev, struct kms_status *st);

/*
 * Deletes key (prefix 0) or every key starting with it (prefix 1); with
 * mod_rev > 0 (and prefix 0) only while key's mod_revision is mod_rev,
 * else KMS_ERR_CONFLICT.  *deleted (may be NULL): how many went.
 */
int etcd_delete(struct etcd *e, const char *key, int prefix, int64_t mod_rev,
    size_t *deleted, struct kms_status *st);

/* Leases: granted for ttl seconds; *ttl_left is what the server says. */
int etcd_lease_grant(struct etcd *e, int64_t ttl, int64_t *id,
    struct kms_status *st);
/* One keep-alive; KMS_ERR_NOT_FOUND when the lease has expired. */
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_left,
    struct kms_status *st);
int etcd_lease_revoke(struct etcd *e, int64_t id, struct kms_status *st);

/* What a watch reports. */
enum etcd_watch_what {
	ETCD_WATCH_PUT,		/* kv was put */
	ETCD_WATCH_DELETE,	/* kv (its key, the deletion's mod_rev) went */
	ETCD_WATCH_COMPACTED,	/* rev: the revision resumed from was
				 * compacted; events before rev are lost:
				 * reload */
	ETCD_WATCH_DOWN,	/* the stream broke (st says why); it is
				 * resumed from the next revision */
	ETCD_WATCH_UP		/* the stream runs (again) */
};

/*
 * Called on the watch's own thread, in revision order; kv is NULL but
 * for PUT and DELETE; st only for DOWN.  It must not call etcd_watch_stop.
 */
typedef void etcd_watch_fn(void *arg, enum etcd_watch_what what,
    const struct etcd_kv *kv, int64_t rev, const struct kms_status *st);

/*
 * Watches every key starting with prefix from revision from (> 0), on a
 * thread of its own, until etcd_watch_stop.  A broken stream is opened
 * again on the next endpoint and resumed from the revision after the
 * last event given; a compacted revision is reported
 * (ETCD_WATCH_COMPACTED) and the watch goes on from the oldest revision
 * kept.
 */
int etcd_watch_start(struct etcd *e, const char *prefix, int64_t from,
    etcd_watch_fn *fn, void *arg, struct etcd_watch **out,
    struct kms_status *st);
/* Stops and frees the watch (within about 250 ms); NULL is a no-op. */
void etcd_watch_stop(struct etcd_watch *w);

/* The endpoint count and the i-th endpoint, for messages. */
size_t etcd_endpoint_count(const struct etcd *e);
const char *etcd_endpoint(const struct etcd *e, size_t i);

#endif /* KMS_ETCD_H */
