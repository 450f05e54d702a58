/*
 * auditjson.c: an audit record's JSON text without a JSON library on the
 * hot path (see auditjson.h).  Every Sign writes one record under the
 * audit lock; building it as a jansson object (15 members, each a
 * string copied and checked, a hash table, then a dump) took about half
 * of the record's cost.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "auditjson.h"
#include "auditread.h"

#define JT_FIRST 1024

/* A growing text; a failed step marks it bad and later steps do nothing. */
struct jtext {
	char *p;
	size_t len, cap;
	int bad;
};

static void
jt_put(struct jtext *t, const char *s, size_t n)
{
	size_t ncap;
	char *np;

	if (t->bad)
		return;
	if (t->len + n + 1 > t->cap) {
		ncap = t->cap == 0 ? JT_FIRST : t->cap;
		while (ncap < t->len + n + 1)
			ncap *= 2;
		if ((np = realloc(t->p, ncap)) == NULL) {
			t->bad = 1;
			return;
		}
		t->p = np;
		t->cap = ncap;
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

static void
jt_lit(struct jtext *t, const char *s)
{
	jt_put(t, s, strlen(s));
}

/*
 * The code point at s (of n bytes left) and its length in *len, or -1 for
 * what jansson's UTF-8 check refuses: a stray continuation byte, an
 * overlong form, a surrogate, a value past U+10FFFF, a short sequence.
 */
static int32_t
utf8_next(const unsigned char *s, size_t n, size_t *len)
{
	int32_t v;
	size_t i, need;

	if (s[0] < 0x80) {
		*len = 1;
		return s[0];
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		need = 2;
		v = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		need = 3;
		v = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		need = 4;
		v = s[0] & 0x07;
	} else
		return -1;
	if (need > n)
		return -1;
	for (i = 1; i < need; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF)
			return -1;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) ||
	    (need == 3 && v < 0x800) || (need == 4 && v < 0x10000))
		return -1;
	*len = need;
	return v;
}

/* s quoted and escaped as jansson escapes with JSON_ENSURE_ASCII. */
static void
jt_str(struct jtext *t, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s), run = 0, i = 0, cl;
	char esc[16];
	int32_t cp;

	jt_put(t, "\"", 1);
	while (i < n) {
		if ((cp = utf8_next(u + i, n - i, &cl)) < 0) {
			t->bad = 1;
			return;
		}
		if (cp >= 0x20 && cp <= 0x7F && cp != '"' && cp != '\\') {
			i += cl;
			run++;
			continue;
		}
		jt_put(t, s + i - run, run);
		run = 0;
		switch (cp) {
		case '"':
			jt_lit(t, "\\\"");
			break;
		case '\\':
			jt_lit(t, "\\\\");
			break;
		case '\b':
			jt_lit(t, "\\b");
			break;
		case '\f':
			jt_lit(t, "\\f");
			break;
		case '\n':
			jt_lit(t, "\\n");
			break;
		case '\r':
			jt_lit(t, "\\r");
			break;
		case '\t':
			jt_lit(t, "\\t");
			break;
		default:
			if (cp < 0x10000)
				snprintf(esc, sizeof(esc), "\\u%04X",
				    (unsigned int)cp);
			else {
				cp -= 0x10000;
				snprintf(esc, sizeof(esc), "\\u%04X\\u%04X",
				    (unsigned int)(0xD800 | ((cp & 0xFFC00) >> 10)),
				    (unsigned int)(0xDC00 | (cp & 0x3FF)));
			}
			jt_lit(t, esc);
			break;
		}
		i += cl;
	}
	jt_put(t, s + i - run, run);
	jt_put(t, "\"", 1);
}

/* ,"key":value for a string or NULL (every member is always present). */
static void
jt_member(struct jtext *t, const char *key, const char *v)
{
	jt_put(t, ",\"", 2);
	jt_lit(t, key);
	jt_put(t, "\":", 2);
	if (v == NULL)
		jt_put(t, "null", 4);
	else
		jt_str(t, v);
}

/* ,"key": and v as jansson dumps it (a nested value dumps the same). */
static void
jt_json(struct jtext *t, const char *key, const json_t *v)
{
	char *s;

	jt_put(t, ",\"", 2);
	jt_lit(t, key);
	jt_put(t, "\":", 2);
	if ((s = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII |
	    JSON_ENCODE_ANY)) == NULL) {
		t->bad = 1;
		return;
	}
	jt_lit(t, s);
	free(s);
}

char *
auditjson_quote(const char *s)
{
	struct jtext t = { NULL, 0, 0, 0 };

	jt_str(&t, s);
	if (t.bad) {
		free(t.p);
		return NULL;
	}
	return t.p;
}

char *
auditjson_record(const struct auditjson_head *h,
    const struct audit_event *ev, const json_t *cp)
{
	struct jtext t = { NULL, 0, 0, 0 };
	char num[32], hex[SHA256_DIGEST_LENGTH * 2 + 1];
	json_t *detail = NULL;

	snprintf(num, sizeof(num), "{\"seq\":%" PRIu64, h->seq);
	jt_lit(&t, num);
	jt_member(&t, "time", h->time);
	jt_member(&t, "chain", h->chain);
	jt_member(&t, "prev", h->prev);
	jt_member(&t, "identity", ev->identity);
	jt_member(&t, "fingerprint", ev->fingerprint);
	jt_member(&t, "peer", ev->peer);
	jt_member(&t, "rpc", ev->rpc);
	jt_member(&t, "key", ev->key);
	if (ev->version == 0)
		jt_lit(&t, ",\"version\":null");
	else {
		snprintf(num, sizeof(num), ",\"version\":%" PRIu32,
		    ev->version);
		jt_lit(&t, num);
	}
	jt_member(&t, "result", ev->result);
	jt_member(&t, "status", ev->status);
	jt_member(&t, "reason", ev->reason);
	if (ev->request_sha256 != NULL)
		audit_hex(ev->request_sha256, SHA256_DIGEST_LENGTH, hex);
	jt_member(&t, "request_sha256", ev->request_sha256 == NULL ? NULL :
	    hex);
	/* Parsed and dumped again: the log holds jansson's form of it. */
	if (ev->detail_json != NULL) {
		if ((detail = json_loads(ev->detail_json, 0, NULL)) == NULL)
			t.bad = 1;
		else
			jt_json(&t, "detail", detail);
		json_decref(detail);
	}
	if (cp != NULL)
		jt_json(&t, "checkpoint", cp);
	jt_put(&t, "}", 1);
	if (t.bad) {
		free(t.p);
		return NULL;
	}
	return t.p;
}
