/*
 * watch.h: WatchAuditRecords, the audit records streamed to auditors as
 * they become durable (docs/audit.md, "Reading").
 *
 * The hub has one thread of its own, the pump.  The audit writer tells the
 * hub (watch_hub_notify, through audit_set_notify) the last durable seq
 * after each batch, which is all it does for the watchers: the pump reads
 * the records back from the segment files, one reader per watcher, keeps
 * those that pass the watcher's filters and queues them, packed, for the
 * transport, which sends one message at a time.  A watcher that is
 * catching up reads only as fast as its queue drains; one that has caught
 * up and lets its queue fill (queue_max records) is cut off with
 * KMS_ERR_RESOURCE_EXHAUSTED, naming the seq to resume after, so that no
 * reader ever holds the writer or the memory of kmsd.  At most
 * max_watchers are open at once.
 *
 * Nothing here names gRPC or protobuf types: the transport sees bytes
 * (rpc.c) and the handler packs the records (h_service.c).
 */
#ifndef KMS_WATCH_H
#define KMS_WATCH_H

#include <stddef.h>
#include <stdint.h>

struct audit;
struct audit_filter;
struct audit_record;
struct kms_status;
struct watch_hub;
struct watcher;

/* Packs rec as one message of the stream into *body (malloc'd). */
typedef int watch_pack_fn(const struct audit_record *rec, uint8_t **body,
    size_t *len);

/*
 * What the transport does for a started watcher.  The hub calls these
 * without its lock, from the pump or from the thread that called it.
 */
struct watch_ops {
	/* Sends one message (takes body); then calls watch_sent. */
	void (*send)(void *arg, uint8_t *body, size_t len);
	/* Ends the call with err (KMS_ERR_*) and msg; then watch_closed. */
	void (*end)(void *arg, int err, const char *msg);
	/* The hub is done with the watcher: the transport frees arg. */
	void (*release)(void *arg);
};

int watch_hub_new(struct audit *a, unsigned int max_watchers,
    unsigned int queue_max, struct watch_hub **out, struct kms_status *st);
/* For audit_set_notify: seq is durable. */
void watch_hub_notify(void *hub, uint64_t durable_seq);
/*
 * Ends every watcher with KMS_ERR_UNAVAILABLE and refuses new ones; the
 * transport still sees their calls close (watch_closed).
 */
void watch_hub_shutdown(struct watch_hub *h);
/* Frees the hub once shut down and every watcher is released; NULL ok. */
void watch_hub_free(struct watch_hub *h);

/*
 * Opens a watcher for the records after after_seq that pass f (copied),
 * counted against max_watchers at once; it does nothing until started.
 * Errors: KMS_ERR_INVALID_ARGUMENT (a bad time bound),
 * KMS_ERR_RESOURCE_EXHAUSTED (too many watchers), KMS_ERR_UNAVAILABLE
 * (stopping), KMS_ERR_NOMEM; st says which.
 */
int watch_open(struct watch_hub *h, uint64_t after_seq,
    const struct audit_filter *f, watch_pack_fn *pack, struct watcher **out,
    struct kms_status *st);
/*
 * Starts streaming to the transport (once the call's own audit record is
 * durable).  KMS_ERR_UNAVAILABLE when the hub is stopping: the transport
 * then answers the call itself and calls watch_drop.
 */
int watch_start(struct watcher *w, const struct watch_ops *ops, void *arg);
/* Frees a watcher that was opened but never started. */
void watch_drop(struct watcher *w);
/* The message given to ops->send has left (ok) or failed. */
void watch_sent(struct watcher *w, int ok);
/* The call is over (ended, cancelled by the client, or past its deadline). */
void watch_closed(struct watcher *w);

#endif /* KMS_WATCH_H */
