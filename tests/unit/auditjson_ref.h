/*
 * auditjson_ref.h: the audit record as jansson builds it, the reference
 * that kms/auditjson.c must match byte for byte (tests/unit/test_audit.c)
 * and is timed against (bench/auditfmt.c).
 */
#ifndef KMS_AUDITJSON_REF_H
#define KMS_AUDITJSON_REF_H

#include <jansson.h>

#include "auditjson.h"
#include "auditread.h"

static inline int
ref_str(json_t *o, const char *k, const char *v)
{
	return json_object_set_new(o, k, v == NULL ? json_null() :
	    json_string(v));
}

/* The record as format_record built it with jansson. */
static inline char *
jansson_record(const struct auditjson_head *h, const struct audit_event *ev,
    json_t *cp)
{
	char hex[65];
	json_t *o, *detail = NULL;
	char *line = NULL;

	if ((o = json_object()) == NULL)
		return NULL;
	if (json_object_set_new(o, "seq", json_integer((json_int_t)h->seq)) ||
	    ref_str(o, "time", h->time) || ref_str(o, "chain", h->chain) ||
	    ref_str(o, "prev", h->prev) ||
	    ref_str(o, "identity", ev->identity) ||
	    ref_str(o, "fingerprint", ev->fingerprint) ||
	    ref_str(o, "peer", ev->peer) || ref_str(o, "rpc", ev->rpc) ||
	    ref_str(o, "key", ev->key) ||
	    json_object_set_new(o, "version", ev->version == 0 ? json_null() :
	    json_integer(ev->version)) ||
	    ref_str(o, "result", ev->result) ||
	    ref_str(o, "status", ev->status) ||
	    ref_str(o, "reason", ev->reason))
		goto out;
	if (ev->request_sha256 != NULL)
		audit_hex(ev->request_sha256, 32, hex);
	if (ref_str(o, "request_sha256", ev->request_sha256 == NULL ? NULL :
	    hex))
		goto out;
	if (ev->detail_json != NULL &&
	    ((detail = json_loads(ev->detail_json, 0, NULL)) == NULL ||
	    json_object_set(o, "detail", detail)))
		goto out;
	if (cp != NULL && json_object_set(o, "checkpoint", cp))
		goto out;
	line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
 out:
	json_decref(detail);
	json_decref(o);
	return line;
}

#endif /* KMS_AUDITJSON_REF_H */
