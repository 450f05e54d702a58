/*
 * auditjson.h: an audit record's JSON text, made without a JSON library
 * on the hot path.  The text is byte for byte what jansson's
 * json_dumps(JSON_COMPACT | JSON_ENSURE_ASCII) makes of the same object
 * (members in this order, strings escaped as jansson escapes them, a
 * string that is not valid UTF-8 refused as json_string() refuses it),
 * so that the log's format does not depend on which encoder wrote a line.
 * tests/unit/test_audit.c compares the two.  The rare members (a detail
 * object, a checkpoint) still go through jansson.
 */
#ifndef KMS_AUDITJSON_H
#define KMS_AUDITJSON_H

#include <stdint.h>

#include <jansson.h>

#include "audit.h"

/* What the chain adds to an event. */
struct auditjson_head {
	uint64_t seq;
	const char *time;		/* RFC 3339, UTC */
	const char *chain;
	const char *prev;		/* hex SHA-256 of the previous line */
};

/*
 * The record {"seq":..,"time":..,"chain":..,"prev":..,"identity":..,
 * "fingerprint":..,"peer":..,"rpc":..,"key":..,"version":..,"result":..,
 * "status":..,"reason":..,"request_sha256":..[,"detail":..]
 * [,"checkpoint":..]} without a newline, allocated; NULL when out of
 * memory or when a string is not valid UTF-8 or detail not valid JSON.
 */
char *auditjson_record(const struct auditjson_head *h,
    const struct audit_event *ev, const json_t *cp);

/* s as a JSON string (with its quotes), allocated; NULL as above. */
char *auditjson_quote(const char *s);

#endif /* KMS_AUDITJSON_H */
