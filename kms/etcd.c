/*
 * etcd.c: the etcd v3 client on gRPC C core (see etcd.h).
 *
 * One channel per endpoint, made at open and connecting lazily.  A unary
 * call (and a keep-alive, which is one message each way on the
 * LeaseKeepAlive stream) has one deadline; it starts at the endpoint that
 * answered last and moves to the next on UNAVAILABLE (a member down, or
 * one without a leader, or a leader being elected) or on a timeout,
 * round after round as long as the deadline allows.  A Txn retried this way may have been
 * applied by the member that failed to answer: its compare then fails,
 * and the caller (store_etcd.c) recognises its own write in what the
 * failure branch read.
 *
 * The watch is in etcdwatch.c; what both files share, in etcd_int.h.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "etcd.h"
#include "etcd_int.h"
#include "etcd/etcdserver/etcdserverpb/rpc.pb-c.h"
#include "fileio.h"
#include "grpcbuf.h"
#include "kmserr.h"
#include "log.h"

#define PEM_MAX (1u << 20)
#define ATTEMPT_MIN_MS 250		/* the least time one endpoint gets */
#define ROUND_PAUSE_MS 50		/* between rounds of the endpoints */

#define PATH_RANGE "/etcdserverpb.KV/Range"
#define PATH_TXN "/etcdserverpb.KV/Txn"
#define PATH_PUT "/etcdserverpb.KV/Put"
#define PATH_DELETE "/etcdserverpb.KV/DeleteRange"
#define PATH_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define PATH_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define PATH_REVOKE "/etcdserverpb.Lease/LeaseRevoke"

/* Whether host (of host:port) is a loopback address. */
static int
is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 ||
	    strncmp(addr, "localhost:", 10) == 0 ||
	    strncmp(addr, "[::1]:", 6) == 0;
}

/* Splits the endpoint list into e->addr. */
static int
parse_endpoints(struct etcd *e, const char *list, struct kms_status *st)
{
	const char *p = list, *end;
	size_t len;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		for (end = p; *end != '\0' && *end != ',' && *end != ' ' &&
		    *end != '\t'; end++)
			;
		if (strncmp(p, "http://", 7) == 0)
			p += 7;
		else if (strncmp(p, "https://", 8) == 0)
			p += 8;
		len = (size_t)(end - p);
		if (e->n == ETCD_ENDPOINTS_MAX)
			return kms_status_set(st, KMS_ERR_CONFIG, "more than %d "
			    "etcd endpoints", ETCD_ENDPOINTS_MAX);
		if (len == 0 || len >= ADDR_MAX || memchr(p, ':', len) == NULL)
			return kms_status_set(st, KMS_ERR_CONFIG, "etcd "
			    "endpoint \"%.*s\" is not host:port", (int)(len >
			    64 ? 64 : len), p);
		memcpy(e->addr[e->n], p, len);
		e->addr[e->n][len] = '\0';
		e->n++;
		p = end;
	}
	if (e->n == 0)
		return kms_status_set(st, KMS_ERR_CONFIG, "no etcd endpoint");
	return 0;
}

static int
read_pem(const char *path, char **out, size_t *len, struct kms_status *st)
{
	return fileio_read(path, PEM_MAX, out, len, st);
}

int
etcd_open(const struct etcd_opts *o, struct etcd **out, struct kms_status *st)
{
	grpc_channel_credentials *creds = NULL;
	grpc_ssl_pem_key_cert_pair pair;
	grpc_channel_args args;
	grpc_arg a[2];
	char *ca = NULL, *cert = NULL, *key = NULL;
	size_t calen = 0, certlen = 0, keylen = 0, i;
	struct etcd *e;
	int tls, r;

	*out = NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&e->lock, NULL);
	e->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms :
	    ETCD_DEFAULT_TIMEOUT_MS;
	if ((r = parse_endpoints(e, o->endpoints != NULL ? o->endpoints : "",
	    st)) != 0)
		goto out;
	tls = (o->ca_file != NULL && *o->ca_file != '\0') +
	    (o->cert_file != NULL && *o->cert_file != '\0') +
	    (o->key_file != NULL && *o->key_file != '\0');
	if (tls != 0 && tls != 3) {
		r = kms_status_set(st, KMS_ERR_CONFIG, "etcd TLS needs ca, "
		    "cert and key together (or none of them, for plaintext on "
		    "loopback)");
		goto out;
	}
	for (i = 0; tls == 0 && i < e->n; i++) {
		if (!is_loopback(e->addr[i])) {
			r = kms_status_set(st, KMS_ERR_CONFIG, "etcd endpoint "
			    "%s is not on loopback: set ca, cert and key to "
			    "reach it over TLS", e->addr[i]);
			goto out;
		}
	}
	if (tls && ((r = read_pem(o->ca_file, &ca, &calen, st)) != 0 ||
	    (r = read_pem(o->cert_file, &cert, &certlen, st)) != 0 ||
	    (r = read_pem(o->key_file, &key, &keylen, st)) != 0))
		goto out;
	grpc_init();
	if (tls) {
		pair.private_key = key;
		pair.cert_chain = cert;
		/* etcd is verified against ca alone: no system roots. */
		creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
	} else
		creds = grpc_insecure_credentials_create();
	memset(a, 0, sizeof(a));
	a[0].type = GRPC_ARG_INTEGER;
	a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	a[0].value.integer = (int)ETCD_MAX_REPLY;
	/* A member that comes back is tried again soon. */
	a[1].type = GRPC_ARG_INTEGER;
	a[1].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
	a[1].value.integer = 1000;
	args.num_args = sizeof(a) / sizeof(a[0]);
	args.args = a;
	for (i = 0; i < e->n; i++)
		e->ch[i] = grpc_channel_create(e->addr[i], creds, &args);
	grpc_channel_credentials_release(creds);
	*out = e;
	e = NULL;
	r = 0;
 out:
	free(ca);
	free(cert);
	if (key != NULL) {
		OPENSSL_cleanse(key, keylen);
		free(key);
	}
	if (e != NULL) {
		pthread_mutex_destroy(&e->lock);
		free(e);
	}
	return r;
}

void
etcd_close(struct etcd *e)
{
	size_t i;

	if (e == NULL)
		return;
	for (i = 0; i < e->n; i++)
		grpc_channel_destroy(e->ch[i]);
	pthread_mutex_destroy(&e->lock);
	free(e);
	grpc_shutdown();
}

size_t
etcd_endpoint_count(const struct etcd *e)
{
	return e->n;
}

const char *
etcd_endpoint(const struct etcd *e, size_t i)
{
	return i < e->n ? e->addr[i] : "";
}

static grpc_slice
pack_slice(const ProtobufCMessage *m)
{
	grpc_slice sl;

	sl = grpc_slice_malloc(protobuf_c_message_get_packed_size(m));
	protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
	return sl;
}

grpc_byte_buffer *
etcd_pack(const ProtobufCMessage *m)
{
	grpc_byte_buffer *bb;
	grpc_slice sl = pack_slice(m);

	bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	return bb;
}

/*
 * One call to one endpoint: sends req, reads one reply, waits for the
 * status.  Returns the status; *details (to gpr_free) its message.
 */
static grpc_status_code
call_once(grpc_channel *ch, const char *path, grpc_byte_buffer *send,
    gpr_timespec deadline, grpc_byte_buffer **recv, char **details)
{
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice det = grpc_empty_slice(), ps;
	grpc_completion_queue *cq;
	grpc_call *call;
	grpc_op ops[6];
	grpc_event ev;
	char tag;

	*recv = NULL;
	*details = NULL;
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	cq = grpc_completion_queue_create_for_pluck(NULL);
	ps = grpc_slice_from_static_string(path);
	call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
	    ps, NULL, deadline, NULL);
	if (call == NULL)
		goto out;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &det;
	if (grpc_call_start_batch(call, ops, 6, &tag, NULL) != GRPC_CALL_OK) {
		status = GRPC_STATUS_INTERNAL;
		goto out;
	}
	/* Ends at the latest with the call's deadline. */
	ev = grpc_completion_queue_pluck(cq, &tag,
	    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (ev.type != GRPC_OP_COMPLETE)
		status = GRPC_STATUS_INTERNAL;
	*details = grpc_slice_to_c_string(det);
	/*
	 * A member whose own deadline for the request ran out (a leader
	 * being elected, a slow quorum) may answer with the bare Go error,
	 * which gRPC-go sends as UNKNOWN: it is a timeout like any other.
	 */
	if (status == GRPC_STATUS_UNKNOWN && *details != NULL &&
	    (strcmp(*details, "context deadline exceeded") == 0 ||
	    strcmp(*details, "context canceled") == 0))
		status = GRPC_STATUS_DEADLINE_EXCEEDED;
 out:
	if (status != GRPC_STATUS_OK && *recv != NULL) {
		grpc_byte_buffer_destroy(*recv);
		*recv = NULL;
	}
	grpc_slice_unref(det);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	if (call != NULL)
		grpc_call_unref(call);
	grpcbuf_cq_destroy(cq);
	return status;
}

/*
 * A call with failover: the endpoints in turn from the last good one,
 * within one deadline.  *resp is the reply (free with
 * protobuf_c_message_free_unpacked).
 */
static int
call(struct etcd *e, const char *path, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
    struct kms_status *st)
{
	grpc_byte_buffer *send, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNAVAILABLE;
	grpc_slice sl;
	gpr_timespec deadline;
	int64_t end = clock_ms() + e->timeout_ms, left, share;
	char *details = NULL, last[200] = "no endpoint tried";
	size_t i, first, at, tried = 0;
	int r;

	*resp = NULL;
	/* gRPC empties a byte buffer it sends: a new one per attempt. */
	sl = pack_slice(req);
	pthread_mutex_lock(&e->lock);
	first = at = e->cur;
	pthread_mutex_unlock(&e->lock);
	for (i = first; (left = end - clock_ms()) > 0; i = (i + 1) % e->n) {
		/*
		 * A round of refusals (members down, a leader being
		 * elected): a pause, then round again while time is left.
		 */
		if (tried > 0 && tried % e->n == 0) {
			if (left <= ROUND_PAUSE_MS)
				break;
			clock_pause_ms(ROUND_PAUSE_MS);
			left = end - clock_ms();
		}
		/*
		 * Each endpoint gets its share of what is left in this round
		 * (at least ATTEMPT_MIN_MS), so that one that hangs leaves
		 * time for the others.
		 */
		share = left / (int64_t)(e->n - tried % e->n);
		if (share < ATTEMPT_MIN_MS)
			share = left < ATTEMPT_MIN_MS ? left : ATTEMPT_MIN_MS;
		deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
		    gpr_time_from_millis(share, GPR_TIMESPAN));
		tried++;
		at = i;
		send = grpc_raw_byte_buffer_create(&sl, 1);
		status = call_once(e->ch[i], path, send, deadline, &recv,
		    &details);
		grpc_byte_buffer_destroy(send);
		if (status == GRPC_STATUS_OK)
			break;
		snprintf(last, sizeof(last), "%s: %s", e->addr[i],
		    details != NULL && *details != '\0' ? details :
		    kms_grpc_code_name((int)status));
		gpr_free(details);
		details = NULL;
		/* Only an endpoint that cannot serve is passed over. */
		if (status != GRPC_STATUS_UNAVAILABLE &&
		    status != GRPC_STATUS_DEADLINE_EXCEEDED)
			break;
	}
	/* The next call starts where this one succeeded, or after. */
	pthread_mutex_lock(&e->lock);
	e->cur = status == GRPC_STATUS_OK ? at : (at + 1) % e->n;
	pthread_mutex_unlock(&e->lock);
	gpr_free(details);
	grpc_slice_unref(sl);
	if (status == GRPC_STATUS_OK) {
		*resp = recv != NULL ? grpcbuf_unpack(recv, desc) : NULL;
		if (recv != NULL)
			grpc_byte_buffer_destroy(recv);
		if (*resp == NULL)
			return kms_status_set(st, KMS_ERR_INTERNAL, "etcd sent "
			    "a malformed reply to %s", path);
		return 0;
	}
	switch (status) {
	case GRPC_STATUS_NOT_FOUND:
		r = KMS_ERR_NOT_FOUND;
		break;
	case GRPC_STATUS_UNAVAILABLE:
	case GRPC_STATUS_DEADLINE_EXCEEDED:
	case GRPC_STATUS_CANCELLED:
		r = KMS_ERR_UNAVAILABLE;
		break;
	default:
		r = KMS_ERR_INTERNAL;
		break;
	}
	return kms_status_set(st, r, "etcd %s (%zu tries on %zu endpoints "
	    "in %u ms): %s", r == KMS_ERR_UNAVAILABLE ? "unavailable" :
	    "refused the call", tried, e->n,
	    e->timeout_ms, last);
}

/* The end of the range of keys starting with key: key + 1 (as etcd's). */
int
etcd_prefix_end(const char *key, size_t len, uint8_t *end, size_t *end_len)
{
	size_t i;

	memcpy(end, key, len);
	for (i = len; i > 0; i--) {
		if ((uint8_t)end[i - 1] < 0xff) {
			end[i - 1]++;
			*end_len = i;
			return 0;
		}
	}
	/* All 0xff (or empty): every key from key on. */
	end[0] = 0;
	*end_len = 1;
	return 0;
}

int
etcd_check_key(const char *key, size_t *len, struct kms_status *st)
{
	*len = strlen(key);
	if (*len == 0 || *len > KEY_MAX)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT, "etcd key "
		    "empty or longer than %d bytes", KEY_MAX);
	return 0;
}

/* Gives one KeyValue to fn, with NUL-terminated copies of key and value. */
int
etcd_give_kv(const Mvccpb__KeyValue *m, etcd_kv_fn *fn, void *arg)
{
	struct etcd_kv kv;
	char *key;
	uint8_t *val;
	int r;

	if ((key = malloc(m->key.len + 1)) == NULL ||
	    (val = malloc(m->value.len + 1)) == NULL) {
		free(key);
		return KMS_ERR_NOMEM;
	}
	if (m->key.len > 0)
		memcpy(key, m->key.data, m->key.len);
	key[m->key.len] = '\0';
	if (m->value.len > 0)
		memcpy(val, m->value.data, m->value.len);
	val[m->value.len] = '\0';
	kv.key = key;
	kv.key_len = m->key.len;
	kv.value = val;
	kv.len = m->value.len;
	kv.create_rev = m->create_revision;
	kv.mod_rev = m->mod_revision;
	kv.version = m->version;
	kv.lease = m->lease;
	r = fn(&kv, arg);
	free(key);
	free(val);
	return r;
}

int
etcd_range(struct etcd *e, const char *key, int prefix, etcd_kv_fn *fn,
    void *arg, int64_t *rev, size_t *count, struct kms_status *st)
{
	Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RangeResponse *resp = NULL;
	uint8_t end[KEY_MAX];
	size_t len, end_len, i;
	int r;

	if (rev != NULL)
		*rev = 0;
	if (count != NULL)
		*count = 0;
	if ((r = etcd_check_key(key, &len, st)) != 0)
		return r;
	req.key.data = (uint8_t *)key;
	req.key.len = len;
	if (prefix) {
		etcd_prefix_end(key, len, end, &end_len);
		req.range_end.data = end;
		req.range_end.len = end_len;
	}
	req.count_only = fn == NULL;
	if ((r = call(e, PATH_RANGE, &req.base,
	    &etcdserverpb__range_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	if (rev != NULL && resp->header != NULL)
		*rev = resp->header->revision;
	if (count != NULL)
		*count = fn == NULL ? (size_t)resp->count : resp->n_kvs;
	for (i = 0; fn != NULL && i < resp->n_kvs && r == 0; i++)
		r = etcd_give_kv(resp->kvs[i], fn, arg);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return r;
}

int
etcd_put_if(struct etcd *e, const char *key, int64_t mod_rev,
    const uint8_t *value, size_t len, int64_t lease, int64_t *new_rev,
    etcd_kv_fn *cur, void *arg, struct kms_status *st)
{
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1];
	Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RequestOp op_put = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp op_get = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp *succ[1], *fail[1];
	Etcdserverpb__TxnResponse *resp = NULL;
	Etcdserverpb__RangeResponse *rr;
	size_t klen, i;
	int r;

	if (new_rev != NULL)
		*new_rev = 0;
	if ((r = etcd_check_key(key, &klen, st)) != 0)
		return r;
	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.key.data = (uint8_t *)key;
	cmp.key.len = klen;
	if (mod_rev > 0) {
		cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
		cmp.target_union_case =
		    ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
		cmp.mod_revision = mod_rev;
	} else {
		cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
		cmp.target_union_case =
		    ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
		cmp.create_revision = 0;
	}
	cmps[0] = &cmp;
	put.key = cmp.key;
	put.value.data = (uint8_t *)value;
	put.value.len = len;
	put.lease = lease;
	op_put.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	op_put.request_put = &put;
	get.key = cmp.key;
	op_get.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	op_get.request_range = &get;
	succ[0] = &op_put;
	fail[0] = &op_get;
	req.n_compare = 1;
	req.compare = cmps;
	req.n_success = 1;
	req.success = succ;
	req.n_failure = 1;
	req.failure = fail;
	if ((r = call(e, PATH_TXN, &req.base,
	    &etcdserverpb__txn_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	if (resp->succeeded) {
		if (new_rev != NULL && resp->header != NULL)
			*new_rev = resp->header->revision;
		r = 0;
		goto out;
	}
	r = kms_status_set(st, KMS_ERR_CONFLICT, "etcd key %s changed "
	    "meanwhile", key);
	if (cur == NULL || resp->n_responses != 1 ||
	    resp->responses[0]->response_case !=
	    ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
		goto out;
	rr = resp->responses[0]->response_range;
	for (i = 0; i < rr->n_kvs; i++) {
		if ((r = etcd_give_kv(rr->kvs[i], cur, arg)) != KMS_ERR_CONFLICT)
			goto out;
	}
	r = KMS_ERR_CONFLICT;
 out:
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return r;
}

int
etcd_put(struct etcd *e, const char *key, const uint8_t *value, size_t len,
    int64_t lease, int64_t *new_rev, struct kms_status *st)
{
	Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__PutResponse *resp = NULL;
	size_t klen;
	int r;

	if (new_rev != NULL)
		*new_rev = 0;
	if ((r = etcd_check_key(key, &klen, st)) != 0)
		return r;
	req.key.data = (uint8_t *)key;
	req.key.len = klen;
	req.value.data = (uint8_t *)value;
	req.value.len = len;
	req.lease = lease;
	if ((r = call(e, PATH_PUT, &req.base,
	    &etcdserverpb__put_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	if (new_rev != NULL && resp->header != NULL)
		*new_rev = resp->header->revision;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return 0;
}

int
etcd_delete(struct etcd *e, const char *key, int prefix, int64_t mod_rev,
    size_t *deleted, struct kms_status *st)
{
	Etcdserverpb__DeleteRangeRequest del =
	    ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__DeleteRangeResponse *dr = NULL;
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1];
	Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, *succ[1];
	Etcdserverpb__TxnResponse *resp = NULL;
	uint8_t end[KEY_MAX];
	size_t len, end_len;
	int r;

	if (deleted != NULL)
		*deleted = 0;
	if ((r = etcd_check_key(key, &len, st)) != 0)
		return r;
	del.key.data = (uint8_t *)key;
	del.key.len = len;
	if (prefix) {
		etcd_prefix_end(key, len, end, &end_len);
		del.range_end.data = end;
		del.range_end.len = end_len;
	}
	if (mod_rev <= 0 || prefix) {
		if ((r = call(e, PATH_DELETE, &del.base,
		    &etcdserverpb__delete_range_response__descriptor,
		    (ProtobufCMessage **)&dr, st)) != 0)
			return r;
		if (deleted != NULL)
			*deleted = (size_t)dr->deleted;
		protobuf_c_message_free_unpacked(&dr->base, NULL);
		return 0;
	}
	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
	cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
	cmp.mod_revision = mod_rev;
	cmp.key = del.key;
	cmps[0] = &cmp;
	op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	op.request_delete_range = &del;
	succ[0] = &op;
	req.n_compare = 1;
	req.compare = cmps;
	req.n_success = 1;
	req.success = succ;
	if ((r = call(e, PATH_TXN, &req.base,
	    &etcdserverpb__txn_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	if (!resp->succeeded)
		r = kms_status_set(st, KMS_ERR_CONFLICT, "etcd key %s changed "
		    "meanwhile", key);
	else if (deleted != NULL && resp->n_responses == 1 &&
	    resp->responses[0]->response_case ==
	    ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE)
		*deleted = (size_t)
		    resp->responses[0]->response_delete_range->deleted;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return r;
}

int
etcd_lease_grant(struct etcd *e, int64_t ttl, int64_t *id,
    struct kms_status *st)
{
	Etcdserverpb__LeaseGrantRequest req =
	    ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	Etcdserverpb__LeaseGrantResponse *resp = NULL;
	int r;

	*id = 0;
	req.ttl = ttl;
	if ((r = call(e, PATH_GRANT, &req.base,
	    &etcdserverpb__lease_grant_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	if (resp->error != NULL && *resp->error != '\0')
		r = kms_status_set(st, KMS_ERR_UNAVAILABLE, "etcd granted no "
		    "lease: %.200s", resp->error);
	else
		*id = resp->id;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return r;
}

int
etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_left,
    struct kms_status *st)
{
	Etcdserverpb__LeaseKeepAliveRequest req =
	    ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
	Etcdserverpb__LeaseKeepAliveResponse *resp = NULL;
	int r;

	*ttl_left = 0;
	req.id = id;
	if ((r = call(e, PATH_KEEPALIVE, &req.base,
	    &etcdserverpb__lease_keep_alive_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	/* An expired lease is answered with a TTL of 0 or less. */
	if (resp->ttl <= 0)
		r = kms_status_set(st, KMS_ERR_NOT_FOUND, "etcd lease %llx has "
		    "expired", (unsigned long long)id);
	else
		*ttl_left = resp->ttl;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return r;
}

int
etcd_lease_revoke(struct etcd *e, int64_t id, struct kms_status *st)
{
	Etcdserverpb__LeaseRevokeRequest req =
	    ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
	Etcdserverpb__LeaseRevokeResponse *resp = NULL;
	int r;

	req.id = id;
	if ((r = call(e, PATH_REVOKE, &req.base,
	    &etcdserverpb__lease_revoke_response__descriptor,
	    (ProtobufCMessage **)&resp, st)) != 0)
		return r;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return 0;
}
