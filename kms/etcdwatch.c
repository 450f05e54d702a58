/*
 * etcdwatch.c: etcd watches (see etcd.h), on the client of etcd.c.
 *
 * A watch is one bidirectional stream, served by a thread of its own on
 * a completion queue of its own: it sends the create request, then reads
 * events until the stream ends, and opens it again (next endpoint, a
 * short pause) from the revision after the last event it gave.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "clock.h"
#include "etcd.h"
#include "etcd_int.h"
#include "etcd/etcdserver/etcdserverpb/rpc.pb-c.h"
#include "grpcbuf.h"
#include "kmserr.h"
#include "log.h"

#define WATCH_TICK_MS 250		/* how soon a stopped watch sees it */
#define WATCH_PAUSE_MIN_MS 100		/* between two tries of a stream */
#define WATCH_PAUSE_MAX_MS 1000
#define PATH_WATCH "/etcdserverpb.Watch/Watch"

struct etcd_watch {
	struct etcd *e;
	char *prefix;
	size_t prefix_len;
	etcd_watch_fn *fn;
	void *arg;
	int64_t next;			/* the revision to resume from */
	pthread_t thread;
	pthread_mutex_t lock;		/* guards stop */
	int stop;
};

/* The watch thread's view of one stream. */
struct stream {
	grpc_completion_queue *cq;
	grpc_call *call;
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status;
	grpc_slice details;
	grpc_byte_buffer *recv;
	int pending;			/* batches not completed yet */
	int ended;			/* the status arrived */
};

static int
watch_stopped(struct etcd_watch *w)
{
	int stop;

	pthread_mutex_lock(&w->lock);
	stop = w->stop;
	pthread_mutex_unlock(&w->lock);
	return stop;
}

/* Waits for the next completion, checking for a stop every tick. */
static int
stream_next(struct etcd_watch *w, struct stream *s, void **tag, int *ok)
{
	grpc_event ev;

	for (;;) {
		ev = grpc_completion_queue_next(s->cq, gpr_time_add(
		    gpr_now(GPR_CLOCK_MONOTONIC),
		    gpr_time_from_millis(WATCH_TICK_MS, GPR_TIMESPAN)), NULL);
		if (ev.type == GRPC_OP_COMPLETE) {
			s->pending--;
			*tag = ev.tag;
			*ok = ev.success;
			return 0;
		}
		if (watch_stopped(w))
			return -1;
	}
}

struct event_ctx {
	struct etcd_watch *w;
	enum etcd_watch_what what;
};

static int
give_event(const struct etcd_kv *kv, void *arg)
{
	struct event_ctx *ec = arg;

	ec->w->fn(ec->w->arg, ec->what, kv, kv->mod_rev, NULL);
	return 0;
}

/* Handles one reply of the stream; non-zero ends the stream. */
static int
watch_reply(struct etcd_watch *w, Etcdserverpb__WatchResponse *m)
{
	struct event_ctx ec;
	Mvccpb__Event *ev;
	size_t i;

	if (m->compact_revision > 0) {
		log_warn("etcd: revision %lld of the watch on %s was "
		    "compacted (the oldest kept is %lld): reloading",
		    (long long)w->next, w->prefix,
		    (long long)m->compact_revision);
		w->next = m->compact_revision;
		w->fn(w->arg, ETCD_WATCH_COMPACTED, NULL, m->compact_revision,
		    NULL);
		return 1;
	}
	if (m->canceled)
		return 1;
	ec.w = w;
	for (i = 0; i < m->n_events; i++) {
		ev = m->events[i];
		if (ev->kv == NULL)
			continue;
		ec.what = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ?
		    ETCD_WATCH_DELETE : ETCD_WATCH_PUT;
		if (etcd_give_kv(ev->kv, give_event, &ec) != 0)
			log_error("etcd: out of memory reading a watch event");
		if (ev->kv->mod_revision >= w->next)
			w->next = ev->kv->mod_revision + 1;
	}
	return 0;
}

static int
stream_post_recv(struct stream *s, void *tag)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv;
	if (grpc_call_start_batch(s->call, &op, 1, tag, NULL) != GRPC_CALL_OK)
		return -1;
	s->pending++;
	return 0;
}

/*
 * One stream on endpoint i, from w->next, until it ends or the watch is
 * stopped.  Returns 1 when it was stopped, else 0 (st says why it ended).
 */
static int
watch_stream(struct etcd_watch *w, size_t i, int *was_up,
    struct kms_status *st)
{
	Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
	Etcdserverpb__WatchCreateRequest cr =
	    ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
	Etcdserverpb__WatchResponse *m;
	uint8_t end[KEY_MAX];
	size_t end_len;
	struct stream s;
	grpc_byte_buffer *send;
	grpc_op ops[4];
	grpc_slice ps;
	char tag_send, tag_status, tag_recv, *msg;
	void *tag;
	int ok, stopped = 0, up = 0;

	*was_up = 0;
	memset(&s, 0, sizeof(s));
	s.details = grpc_empty_slice();
	s.status = GRPC_STATUS_UNKNOWN;
	grpc_metadata_array_init(&s.init_md);
	grpc_metadata_array_init(&s.trail_md);
	s.cq = grpc_completion_queue_create_for_next(NULL);
	ps = grpc_slice_from_static_string(PATH_WATCH);
	s.call = grpc_channel_create_call(w->e->ch[i], NULL,
	    GRPC_PROPAGATE_DEFAULTS, s.cq, ps, NULL,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	cr.key.data = (uint8_t *)w->prefix;
	cr.key.len = w->prefix_len;
	etcd_prefix_end(w->prefix, w->prefix_len, end, &end_len);
	cr.range_end.data = end;
	cr.range_end.len = end_len;
	cr.start_revision = w->next;
	cr.progress_notify = 1;
	req.request_union_case =
	    ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	req.create_request = &cr;
	send = etcd_pack(&req.base);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	if (s.call == NULL || grpc_call_start_batch(s.call, ops, 2, &tag_send,
	    NULL) != GRPC_CALL_OK) {
		kms_status_set(st, KMS_ERR_INTERNAL, "cannot open a watch");
		goto out;
	}
	s.pending++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s.trail_md;
	ops[0].data.recv_status_on_client.status = &s.status;
	ops[0].data.recv_status_on_client.status_details = &s.details;
	if (grpc_call_start_batch(s.call, ops, 1, &tag_status, NULL) ==
	    GRPC_CALL_OK)
		s.pending++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[0].data.recv_initial_metadata.recv_initial_metadata = &s.init_md;
	ops[1].op = GRPC_OP_RECV_MESSAGE;
	ops[1].data.recv_message.recv_message = &s.recv;
	if (grpc_call_start_batch(s.call, ops, 2, &tag_recv, NULL) ==
	    GRPC_CALL_OK)
		s.pending++;
	while (s.pending > 0) {
		if (stream_next(w, &s, &tag, &ok) != 0) {
			/* Stopped: cancel, then collect what is pending. */
			stopped = 1;
			grpc_call_cancel(s.call, NULL);
			while (s.pending > 0 && grpc_completion_queue_next(s.cq,
			    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type ==
			    GRPC_OP_COMPLETE)
				s.pending--;
			break;
		}
		if (tag == &tag_status) {
			s.ended = 1;
			continue;
		}
		if (tag != &tag_recv)
			continue;
		if (!ok || s.recv == NULL) {
			/* The stream ended: its status follows. */
			continue;
		}
		m = (Etcdserverpb__WatchResponse *)grpcbuf_unpack(s.recv,
		    &etcdserverpb__watch_response__descriptor);
		grpc_byte_buffer_destroy(s.recv);
		s.recv = NULL;
		if (m == NULL) {
			grpc_call_cancel(s.call, NULL);
			continue;
		}
		if (m->created && !up) {
			up = *was_up = 1;
			w->fn(w->arg, ETCD_WATCH_UP, NULL, w->next, NULL);
		}
		if (watch_reply(w, m) != 0) {
			protobuf_c_message_free_unpacked(&m->base, NULL);
			grpc_call_cancel(s.call, NULL);
			continue;
		}
		protobuf_c_message_free_unpacked(&m->base, NULL);
		if (stream_post_recv(&s, &tag_recv) != 0)
			grpc_call_cancel(s.call, NULL);
	}
	if (!stopped) {
		msg = grpc_slice_to_c_string(s.details);
		kms_status_set(st, KMS_ERR_UNAVAILABLE, "etcd watch on %s "
		    "ended: %s", w->e->addr[i], *msg != '\0' ? msg :
		    kms_grpc_code_name((int)s.status));
		gpr_free(msg);
	}
 out:
	grpc_byte_buffer_destroy(send);
	if (s.recv != NULL)
		grpc_byte_buffer_destroy(s.recv);
	grpc_slice_unref(s.details);
	grpc_metadata_array_destroy(&s.init_md);
	grpc_metadata_array_destroy(&s.trail_md);
	if (s.call != NULL)
		grpc_call_unref(s.call);
	grpc_completion_queue_shutdown(s.cq);
	while (grpc_completion_queue_next(s.cq,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	    GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(s.cq);
	return stopped;
}

static void *
watch_main(void *arg)
{
	struct etcd_watch *w = arg;
	struct kms_status st;
	unsigned int pause = WATCH_PAUSE_MIN_MS, slept;
	size_t i;
	int up;

	pthread_setname_np(pthread_self(), "kms-etcd-watch");
	pthread_mutex_lock(&w->e->lock);
	i = w->e->cur;
	pthread_mutex_unlock(&w->e->lock);
	for (;;) {
		kms_status_clear(&st);
		if (watch_stream(w, i, &up, &st) != 0)
			break;
		/* A stream that ran starts the pauses over. */
		if (up)
			pause = WATCH_PAUSE_MIN_MS;
		w->fn(w->arg, ETCD_WATCH_DOWN, NULL, w->next, &st);
		log_warn("%s; resuming from revision %lld", st.msg,
		    (long long)w->next);
		i = (i + 1) % w->e->n;
		for (slept = 0; slept < pause; slept += 50) {
			if (watch_stopped(w))
				return NULL;
			clock_pause_ms(50);
		}
		if (pause < WATCH_PAUSE_MAX_MS)
			pause *= 2;
	}
	return NULL;
}

int
etcd_watch_start(struct etcd *e, const char *prefix, int64_t from,
    etcd_watch_fn *fn, void *arg, struct etcd_watch **out,
    struct kms_status *st)
{
	struct etcd_watch *w;
	size_t len;
	int r;

	*out = NULL;
	if ((r = etcd_check_key(prefix, &len, st)) != 0)
		return r;
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->prefix = strdup(prefix)) == NULL) {
		free(w);
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	}
	w->e = e;
	w->prefix_len = len;
	w->fn = fn;
	w->arg = arg;
	w->next = from > 0 ? from : 1;
	pthread_mutex_init(&w->lock, NULL);
	if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
		pthread_mutex_destroy(&w->lock);
		free(w->prefix);
		free(w);
		return kms_status_set(st, KMS_ERR_NOMEM, "cannot start the "
		    "etcd watch thread");
	}
	*out = w;
	return 0;
}

void
etcd_watch_stop(struct etcd_watch *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->lock);
	free(w->prefix);
	free(w);
}
