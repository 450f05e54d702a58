/*
 * etcd_int.h: what the etcd client's files share (etcd.c: the calls,
 * etcdwatch.c: the watch).  Not for other modules: they use etcd.h.
 */
#ifndef KMS_ETCD_INT_H
#define KMS_ETCD_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "etcd.h"
#include "etcd/mvcc/mvccpb/kv.pb-c.h"

#define ADDR_MAX 256
#define KEY_MAX 4096			/* the longest key sent */

struct etcd {
	size_t n;
	char addr[ETCD_ENDPOINTS_MAX][ADDR_MAX];
	grpc_channel *ch[ETCD_ENDPOINTS_MAX];
	unsigned int timeout_ms;
	pthread_mutex_t lock;		/* guards cur */
	size_t cur;			/* the endpoint that answered last */
};

/* The bytes of m in a new byte buffer (to destroy). */
grpc_byte_buffer *etcd_pack(const ProtobufCMessage *m);
/* The end of the range of keys starting with key[0..len): etcd's rule. */
int etcd_prefix_end(const char *key, size_t len, uint8_t *end,
    size_t *end_len);
/* 0 when key is not empty and at most KEY_MAX bytes; *len its length. */
int etcd_check_key(const char *key, size_t *len, struct kms_status *st);
/* Gives m to fn, with NUL-terminated copies of its key and value. */
int etcd_give_kv(const Mvccpb__KeyValue *m, etcd_kv_fn *fn, void *arg);

#endif /* KMS_ETCD_INT_H */
