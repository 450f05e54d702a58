/*
 * reportcmd.c: `kmsctl audit report`: one self-contained HTML file that
 * an auditor can read, made offline from a copy of the audit log.
 *
 * The page holds the verification verdict of each chain, operations over
 * time per identity and per key (stacked bar charts drawn here as inline
 * SVG), every denial and error, the key lifecycle events, the OTA
 * manifests signed per app and channel, and the top identities and keys.
 * It has no script and loads nothing: a Content-Security-Policy of
 * default-src 'none' says so to the browser too.
 *
 * Memory: one small record (time and three interned names) per record in
 * the window, the interned names, and at most REPORT_LIST_MAX rows per
 * listing.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "auditread.h"
#include "kmsctl.h"
#include "kmserr.h"
#include "version.h"

#define REPORT_BUCKETS	48	/* bars of a chart over time */
#define REPORT_TOP	6	/* series of a chart; the rest is "other" */
#define REPORT_TABLE	20	/* rows of a top table */
#define REPORT_LIST_MAX	500	/* rows of a listing; the rest are counted */
#define REPORT_CHAINS	256

enum { RES_OK, RES_DENIED, RES_ERROR, RES_N };
static const char *const res_names[RES_N] = { "ok", "denied", "error" };
static const char *const res_colors[RES_N] = {
	"#2e7d32", "#ef6c00", "#c62828"
};
static const char *const palette[REPORT_TOP + 1] = {
	"#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#9e9d24", "#4e342e",
	"#9e9e9e"	/* other */
};

/* Interned strings: an id per distinct name, with counts per result. */
struct names {
	char **str;
	uint64_t (*count)[RES_N];
	size_t n, cap;
	uint32_t *slot;			/* id + 1; 0: empty */
	size_t nslot;
};

/* One record of the window, as the charts need it. */
struct event {
	int64_t t;			/* microseconds since 1970 */
	uint32_t ident, key, rpc;
	uint8_t result;
};

/* A row of a listing, its cells already made. */
struct row {
	char *cell[6];
};

struct listing {
	struct row *rows;
	size_t n;
	uint64_t more;			/* rows left out */
};

/* An app and channel of signed OTA manifests. */
struct ota {
	uint64_t n;
	char version[64], time[40], key[160];
};

struct chain_info {
	char name[256];
	char dir[4096];
	int verified;			/* audit_verify could run */
	struct audit_verify_result res;
	char err[600];
	uint64_t in_window;
};

struct report {
	int64_t since, until;		/* 0: open */
	struct names idents, keys, rpcs, otas;
	struct event *ev;
	size_t nev, capev;
	struct ota *ota;		/* by id in otas */
	size_t capota;
	struct listing problems, lifecycle;
	struct chain_info *chains;
	size_t nchains;
	size_t cur;			/* the chain being read */
	int64_t tmin, tmax;
	uint64_t skipped;		/* lines that are not records */
};

static uint32_t
hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void
names_free(struct names *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		free(t->str[i]);
	free(t->str);
	free(t->count);
	free(t->slot);
	memset(t, 0, sizeof(*t));
}

/* Re-hashes into twice the slots. */
static int
names_grow(struct names *t)
{
	size_t ns = t->nslot == 0 ? 256 : 2 * t->nslot, i, j;
	uint32_t *slot;

	if ((slot = calloc(ns, sizeof(*slot))) == NULL)
		return -1;
	for (i = 0; i < t->n; i++) {
		for (j = hash_str(t->str[i]) & (ns - 1); slot[j] != 0;
		    j = (j + 1) & (ns - 1))
			;
		slot[j] = (uint32_t)i + 1;
	}
	free(t->slot);
	t->slot = slot;
	t->nslot = ns;
	return 0;
}

/* The id of s, added when new; -1 when out of memory. */
static int
names_id(struct names *t, const char *s, uint32_t *id)
{
	size_t j;
	void *p;

	if ((t->n + 1) * 2 > t->nslot && names_grow(t) != 0)
		return -1;
	for (j = hash_str(s) & (t->nslot - 1); t->slot[j] != 0;
	    j = (j + 1) & (t->nslot - 1))
		if (strcmp(t->str[t->slot[j] - 1], s) == 0) {
			*id = t->slot[j] - 1;
			return 0;
		}
	if (t->n == t->cap) {
		t->cap = t->cap == 0 ? 64 : 2 * t->cap;
		if ((p = realloc(t->str, t->cap * sizeof(*t->str))) == NULL)
			return -1;
		t->str = p;
		if ((p = realloc(t->count, t->cap * sizeof(*t->count))) ==
		    NULL)
			return -1;
		t->count = p;
	}
	if ((t->str[t->n] = strdup(s)) == NULL)
		return -1;
	memset(t->count[t->n], 0, sizeof(t->count[t->n]));
	t->slot[j] = (uint32_t)t->n + 1;
	*id = (uint32_t)t->n++;
	return 0;
}

static void
listing_free(struct listing *l)
{
	size_t i, j;

	for (i = 0; i < l->n; i++)
		for (j = 0; j < 6; j++)
			free(l->rows[i].cell[j]);
	free(l->rows);
	memset(l, 0, sizeof(*l));
}

/* Adds a row of up to six cells (NULL: empty); 0 or -1. */
static int
listing_add(struct listing *l, const char *const cells[6])
{
	struct row *r;
	size_t j;

	if (l->n == REPORT_LIST_MAX) {
		l->more++;
		return 0;
	}
	if (l->rows == NULL &&
	    (l->rows = calloc(REPORT_LIST_MAX, sizeof(*l->rows))) == NULL)
		return -1;
	r = &l->rows[l->n];
	for (j = 0; j < 6; j++)
		if ((r->cell[j] = strdup(cells[j] != NULL ? cells[j] : "")) ==
		    NULL)
			return -1;
	l->n++;
	return 0;
}

static const char *
str_or(json_t *o, const char *name, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, name));

	return s != NULL ? s : dflt;
}

static int
is_lifecycle(const char *rpc)
{
	static const char *const rpcs[] = {
		"CreateKey", "RotateKey", "SetVersionState", "UpdateKey",
		"ScheduledRotation", "ScheduledDestroy"
	};
	size_t i;

	for (i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]); i++)
		if (strcmp(rpc, rpcs[i]) == 0)
			return 1;
	return 0;
}

/* What a lifecycle or OTA record did, from its detail. */
static void
detail_text(json_t *rec, char *buf, size_t len)
{
	json_t *d = json_object_get(rec, "detail"), *v;
	const char *k;
	size_t o = 0;
	int n;

	buf[0] = '\0';
	if (!json_is_object(d))
		return;
	json_object_foreach(d, k, v) {
		if (json_is_string(v))
			n = snprintf(buf + o, len - o, "%s%s=%s", o ? " " : "",
			    k, json_string_value(v));
		else if (json_is_integer(v))
			n = snprintf(buf + o, len - o, "%s%s=%" JSON_INTEGER_FORMAT,
			    o ? " " : "", k, json_integer_value(v));
		else
			continue;
		if (n < 0 || (size_t)n >= len - o)
			break;
		o += (size_t)n;
	}
}

static int
add_ota(struct report *rp, json_t *rec, const char *key, const char *time)
{
	json_t *d = json_object_get(rec, "detail");
	char name[300];
	struct ota *o;
	uint32_t id;
	void *p;

	if (!json_is_object(d))
		return 0;
	snprintf(name, sizeof(name), "%s\t%s", str_or(d, "app", "?"),
	    str_or(d, "channel", "?"));
	if (names_id(&rp->otas, name, &id) != 0)
		return -1;
	if (id >= rp->capota) {
		size_t cap = rp->capota == 0 ? 16 : 2 * rp->capota;

		if ((p = realloc(rp->ota, cap * sizeof(*rp->ota))) == NULL)
			return -1;
		rp->ota = p;
		memset(rp->ota + rp->capota, 0,
		    (cap - rp->capota) * sizeof(*rp->ota));
		rp->capota = cap;
	}
	o = &rp->ota[id];
	o->n++;
	snprintf(o->version, sizeof(o->version), "%s",
	    str_or(d, "version", ""));
	snprintf(o->time, sizeof(o->time), "%s", time);
	snprintf(o->key, sizeof(o->key), "%s", key);
	return 0;
}

/* One line of a chain: a record to count, chart and list. */
static int
report_line(const char *line, size_t len, void *arg)
{
	struct report *rp = arg;
	const char *time, *ident, *rpc, *key, *result, *status, *reason;
	char detail[512], ver[16], why[700];
	struct event *e;
	json_t *rec;
	int64_t t;
	int res, r = -1;
	void *p;

	if ((rec = json_loadb(line, len, 0, NULL)) == NULL ||
	    (time = str_or(rec, "time", NULL)) == NULL ||
	    audit_parse_time(time, &t) != 0) {
		rp->skipped++;
		json_decref(rec);
		return 0;
	}
	if ((rp->since != 0 && t < rp->since) ||
	    (rp->until != 0 && t >= rp->until)) {
		json_decref(rec);
		return 0;
	}
	ident = str_or(rec, "identity", "-");
	rpc = str_or(rec, "rpc", "-");
	key = str_or(rec, "key", "");
	result = str_or(rec, "result", "error");
	status = str_or(rec, "status", "");
	reason = str_or(rec, "reason", "");
	res = strcmp(result, "ok") == 0 ? RES_OK :
	    strcmp(result, "denied") == 0 ? RES_DENIED : RES_ERROR;
	if (rp->nev == rp->capev) {
		rp->capev = rp->capev == 0 ? 4096 : 2 * rp->capev;
		if ((p = realloc(rp->ev, rp->capev * sizeof(*rp->ev))) == NULL)
			goto out;
		rp->ev = p;
	}
	e = &rp->ev[rp->nev];
	if (names_id(&rp->idents, ident, &e->ident) != 0 ||
	    names_id(&rp->keys, *key != '\0' ? key : "(none)", &e->key) != 0 ||
	    names_id(&rp->rpcs, rpc, &e->rpc) != 0)
		goto out;
	e->t = t;
	e->result = (uint8_t)res;
	rp->nev++;
	rp->idents.count[e->ident][res]++;
	rp->keys.count[e->key][res]++;
	rp->rpcs.count[e->rpc][res]++;
	if (rp->nev == 1 || t < rp->tmin)
		rp->tmin = t;
	if (rp->nev == 1 || t > rp->tmax)
		rp->tmax = t;
	rp->chains[rp->cur].in_window++;

	ver[0] = '\0';
	if (json_integer_value(json_object_get(rec, "version")) > 0)
		snprintf(ver, sizeof(ver), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(json_object_get(rec, "version")));
	if (res != RES_OK) {
		const char *cells[6] = { time, ident, rpc, key, status, reason };

		if (listing_add(&rp->problems, cells) != 0)
			goto out;
	}
	if (is_lifecycle(rpc)) {
		const char *cells[6] = { time, ident, rpc, key, ver, why };

		detail_text(rec, detail, sizeof(detail));
		snprintf(why, sizeof(why), "%s%s%s", res == RES_OK ? "" :
		    result, res == RES_OK || *detail == '\0' ? "" : ": ",
		    detail);
		if (listing_add(&rp->lifecycle, cells) != 0)
			goto out;
	}
	if (strcmp(rpc, "SignBundleManifest") == 0 && res == RES_OK &&
	    add_ota(rp, rec, key, time) != 0)
		goto out;
	r = 0;
 out:
	json_decref(rec);
	if (r != 0)
		fprintf(stderr, "kmsctl: audit report: out of memory\n");
	return r;
}

/* HTML text of s: markup characters escaped. */
static void
html(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		default:
			/* Control characters never reach the page. */
			if ((unsigned char)*s < 0x20 && *s != '\t')
				fputc(' ', f);
			else
				fputc(*s, f);
		}
	}
}

static void
fmt_usec(int64_t t, char *buf, size_t len)
{
	kmsctl_fmt_time(t / 1000000, buf, len);
}

static uint64_t
total(const uint64_t c[RES_N])
{
	return c[RES_OK] + c[RES_DENIED] + c[RES_ERROR];
}

/* Ids of t by total count, highest first (ties by name); caller frees. */
static uint32_t *
ranked(const struct names *t)
{
	uint32_t *ids = malloc((t->n + 1) * sizeof(*ids)), tmp;
	size_t i, j;

	if (ids == NULL)
		return NULL;
	for (i = 0; i < t->n; i++)
		ids[i] = (uint32_t)i;
	/* Insertion sort of the top only would do; n is small in practice. */
	for (i = 1; i < t->n; i++)
		for (j = i; j > 0; j--) {
			uint64_t a = total(t->count[ids[j - 1]]);
			uint64_t b = total(t->count[ids[j]]);

			if (a > b || (a == b && strcmp(t->str[ids[j - 1]],
			    t->str[ids[j]]) <= 0))
				break;
			tmp = ids[j];
			ids[j] = ids[j - 1];
			ids[j - 1] = tmp;
		}
	return ids;
}

/*
 * A stacked bar chart of the window's records over time, one series per
 * top name of t (which member of the event by which) and "other".
 */
static int
chart_over_time(FILE *f, const struct report *rp, const struct names *t,
    int by_key, const char *title)
{
	uint64_t count[REPORT_BUCKETS][REPORT_TOP + 1], sum, max = 1;
	int series[REPORT_TOP + 1];
	const double W = 880, H = 240, L = 56, R = 10, T = 10, B = 36;
	double bw = (W - L - R) / REPORT_BUCKETS, y, h, per;
	int64_t span = rp->tmax - rp->tmin + 1;
	uint32_t *ids, id;
	char t0[32], t1[32];
	size_t i, b, s, ns;

	if ((ids = ranked(t)) == NULL)
		return -1;
	ns = t->n < REPORT_TOP ? t->n : REPORT_TOP;
	memset(count, 0, sizeof(count));
	for (i = 0; i < rp->nev; i++) {
		id = by_key ? rp->ev[i].key : rp->ev[i].ident;
		b = (size_t)((double)(rp->ev[i].t - rp->tmin) / (double)span *
		    REPORT_BUCKETS);
		if (b >= REPORT_BUCKETS)
			b = REPORT_BUCKETS - 1;
		for (s = 0; s < ns && ids[s] != id; s++)
			;
		count[b][s]++;		/* s == ns: other */
	}
	for (b = 0; b < REPORT_BUCKETS; b++) {
		for (sum = 0, s = 0; s <= ns; s++)
			sum += count[b][s];
		if (sum > max)
			max = sum;
	}
	for (s = 0; s <= REPORT_TOP; s++)
		series[s] = s < ns ? (int)s : REPORT_TOP;
	fmt_usec(rp->tmin, t0, sizeof(t0));
	fmt_usec(rp->tmax, t1, sizeof(t1));
	fprintf(f, "<figure><figcaption>");
	html(f, title);
	fprintf(f, "</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
	    "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
	    "role=\"img\" class=\"chart\">\n", W, H, W, H);
	fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
	    "fill=\"#fafafa\" stroke=\"#bbb\"/>\n", L, T, W - L - R,
	    H - T - B);
	for (b = 0; b < REPORT_BUCKETS; b++) {
		y = H - B;
		for (s = 0; s <= ns; s++) {
			if (count[b][s] == 0)
				continue;
			h = (double)count[b][s] / (double)max * (H - T - B);
			y -= h;
			fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
			    "height=\"%.1f\" fill=\"%s\"><title>%" PRIu64
			    "</title></rect>\n", L + b * bw + 1, y, bw - 2, h,
			    palette[series[s]], count[b][s]);
		}
	}
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
	    "class=\"ax\">%" PRIu64 "</text>\n", L - 6, T + 10, max);
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
	    "class=\"ax\">0</text>\n", L - 6, H - B);
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"ax\">%s</text>\n", L,
	    H - B + 16, t0);
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
	    "class=\"ax\">%s</text>\n", W - R, H - B + 16, t1);
	per = (double)span / 1e6 / REPORT_BUCKETS;
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
	    "class=\"ax\">records per %.3g %s</text>\n", (W + L) / 2,
	    H - B + 30, per < 1 ? per * 1000 : per < 120 ? per : per < 7200 ?
	    per / 60 : per / 3600, per < 1 ? "ms" : per < 120 ? "s" :
	    per < 7200 ? "min" : "h");
	fprintf(f, "</svg>\n<p class=\"legend\">");
	for (s = 0; s <= ns; s++) {
		if (s == ns && t->n <= ns)
			break;
		fprintf(f, "<span><svg width=\"12\" height=\"12\"><rect "
		    "width=\"12\" height=\"12\" fill=\"%s\"/></svg> ",
		    palette[series[s]]);
		html(f, s < ns ? t->str[ids[s]] : "other");
		fprintf(f, "</span> ");
	}
	fprintf(f, "</p></figure>\n");
	free(ids);
	return 0;
}

/* The top names of t as a table with horizontal bars by result. */
static int
top_table(FILE *f, const struct names *t, const char *what)
{
	uint32_t *ids;
	uint64_t max;
	size_t i, r;
	double x;

	if ((ids = ranked(t)) == NULL)
		return -1;
	max = t->n > 0 ? total(t->count[ids[0]]) : 1;
	fprintf(f, "<table><tr><th>");
	html(f, what);
	fprintf(f, "</th><th>records</th><th>ok</th><th>denied</th>"
	    "<th>error</th><th></th></tr>\n");
	for (i = 0; i < t->n && i < REPORT_TABLE; i++) {
		const uint64_t *c = t->count[ids[i]];

		fprintf(f, "<tr><td>");
		html(f, t->str[ids[i]]);
		fprintf(f, "</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%"
		    PRIu64 "</td><td>%" PRIu64 "</td><td><svg width=\"200\" "
		    "height=\"12\">", total(c), c[RES_OK], c[RES_DENIED],
		    c[RES_ERROR]);
		for (x = 0, r = 0; r < RES_N; r++) {
			double w = (double)c[r] / (double)max * 200;

			if (c[r] == 0)
				continue;
			fprintf(f, "<rect x=\"%.1f\" width=\"%.1f\" height=\"12\" "
			    "fill=\"%s\"/>", x, w, res_colors[r]);
			x += w;
		}
		fprintf(f, "</svg></td></tr>\n");
	}
	fprintf(f, "</table>\n");
	if (t->n > REPORT_TABLE)
		fprintf(f, "<p>%zu more.</p>\n", t->n - REPORT_TABLE);
	free(ids);
	return 0;
}

static void
listing_html(FILE *f, const struct listing *l, const char *const head[6],
    const char *none)
{
	size_t i, j;

	if (l->n == 0) {
		fprintf(f, "<p>");
		html(f, none);
		fprintf(f, "</p>\n");
		return;
	}
	fprintf(f, "<table><tr>");
	for (j = 0; j < 6; j++)
		fprintf(f, "<th>%s</th>", head[j]);
	fprintf(f, "</tr>\n");
	for (i = 0; i < l->n; i++) {
		fprintf(f, "<tr>");
		for (j = 0; j < 6; j++) {
			fprintf(f, "<td>");
			html(f, l->rows[i].cell[j]);
			fprintf(f, "</td>");
		}
		fprintf(f, "</tr>\n");
	}
	fprintf(f, "</table>\n");
	if (l->more > 0)
		fprintf(f, "<p>%" PRIu64 " more not listed (narrow the window "
		    "with --since and --until).</p>\n", l->more);
}

static const char STYLE[] =
"body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1100px}"
"h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px "
"solid #ccc}table{border-collapse:collapse;margin:8px 0}"
"td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;"
"vertical-align:top}th{background:#f0f0f0}"
".ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}"
".ax{font-size:11px;fill:#555}figure{margin:12px 0}"
"figcaption{font-weight:bold}.legend span{margin-right:14px}"
".legend svg{vertical-align:middle}";

static int
report_html(FILE *f, const struct report *rp, const char *path)
{
	static const char *const phead[6] = { "time", "identity", "rpc", "key",
	    "status", "reason" };
	static const char *const lhead[6] = { "time", "identity", "event",
	    "key", "version", "detail" };
	const struct chain_info *c;
	char a[32], b[32], now[32];
	size_t i;
	char *tab;

	kmsctl_fmt_time((int64_t)time(NULL), now, sizeof(now));
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
	    "charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" "
	    "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
	    "<title>kms audit report</title>\n<style>%s</style></head>"
	    "<body>\n<h1>kms audit report</h1>\n<p>Audit log <code>", STYLE);
	html(f, path);
	fprintf(f, "</code>, made %s by kmsctl %s.  Window: ", now,
	    KMS_VERSION);
	if (rp->since != 0)
		fmt_usec(rp->since, a, sizeof(a));
	if (rp->until != 0)
		fmt_usec(rp->until, b, sizeof(b));
	fprintf(f, "%s to %s; %zu records in it", rp->since ? a :
	    "the beginning", rp->until ? b : "the end", rp->nev);
	if (rp->nev > 0) {
		fmt_usec(rp->tmin, a, sizeof(a));
		fmt_usec(rp->tmax, b, sizeof(b));
		fprintf(f, ", from %s to %s", a, b);
	}
	fprintf(f, ".</p>\n");

	fprintf(f, "<h2 id=\"verdict\">Verification</h2>\n<table><tr><th>chain"
	    "</th><th>verdict</th><th>records</th><th>checkpoints</th>"
	    "<th>after the last checkpoint</th><th>in the window</th></tr>\n");
	for (i = 0; i < rp->nchains; i++) {
		c = &rp->chains[i];
		fprintf(f, "<tr><td>");
		html(f, c->name);
		if (!c->verified) {
			fprintf(f, "</td><td class=\"bad\">not verified: ");
			html(f, c->err);
			fprintf(f, "</td><td></td><td></td><td></td>");
		} else {
			fprintf(f, "</td><td class=\"%s\">", c->res.ok ? "ok" :
			    "bad");
			if (c->res.ok)
				fprintf(f, "intact");
			else {
				fprintf(f, "FAILED: ");
				html(f, c->res.file);
				if (c->res.line != 0)
					fprintf(f, " line %lu", c->res.line);
				if (c->res.seq != 0)
					fprintf(f, " seq %" PRIu64, c->res.seq);
				fprintf(f, ": ");
				html(f, c->res.why);
			}
			fprintf(f, "</td><td>%" PRIu64 "</td><td>%" PRIu64
			    "</td><td>%" PRIu64 "</td>", c->res.records,
			    c->res.checkpoints, c->res.unsigned_tail);
		}
		fprintf(f, "<td>%" PRIu64 "</td></tr>\n", c->in_window);
	}
	fprintf(f, "</table>\n<p>Checkpoints are signed in the HSM; records "
	    "after the last one are protected by the hash chain only.</p>\n");

	fprintf(f, "<h2 id=\"time\">Operations over time</h2>\n");
	if (rp->nev == 0)
		fprintf(f, "<p>No records in the window.</p>\n");
	else if (chart_over_time(f, rp, &rp->idents, 0,
	    "Records per identity") != 0 ||
	    chart_over_time(f, rp, &rp->keys, 1, "Records per key") != 0)
		return -1;

	fprintf(f, "<h2 id=\"top\">Top identities and keys</h2>\n"
	    "<p class=\"legend\">");
	for (i = 0; i < RES_N; i++)
		fprintf(f, "<span><svg width=\"12\" height=\"12\"><rect "
		    "width=\"12\" height=\"12\" fill=\"%s\"/></svg> %s</span> ",
		    res_colors[i], res_names[i]);
	fprintf(f, "</p>\n");
	if (top_table(f, &rp->idents, "identity") != 0 ||
	    top_table(f, &rp->keys, "key") != 0 ||
	    top_table(f, &rp->rpcs, "rpc") != 0)
		return -1;

	fprintf(f, "<h2 id=\"problems\">Denials and errors</h2>\n");
	listing_html(f, &rp->problems, phead,
	    "No request was denied or failed in the window.");

	fprintf(f, "<h2 id=\"lifecycle\">Key lifecycle</h2>\n");
	listing_html(f, &rp->lifecycle, lhead,
	    "No key was created, rotated or changed in the window.");

	fprintf(f, "<h2 id=\"ota\">OTA manifests signed</h2>\n");
	if (rp->otas.n == 0)
		fprintf(f, "<p>No OTA manifest was signed in the window.</p>\n");
	else {
		fprintf(f, "<table><tr><th>app</th><th>channel</th><th>manifests"
		    "</th><th>last version</th><th>last signed</th><th>by key"
		    "</th></tr>\n");
		for (i = 0; i < rp->otas.n; i++) {
			const struct ota *o = &rp->ota[i];

			tab = strchr(rp->otas.str[i], '\t');
			fprintf(f, "<tr><td>");
			if (tab != NULL)
				*tab = '\0';
			html(f, rp->otas.str[i]);
			fprintf(f, "</td><td>");
			html(f, tab != NULL ? tab + 1 : "");
			if (tab != NULL)
				*tab = '\t';
			fprintf(f, "</td><td>%" PRIu64 "</td><td>", o->n);
			html(f, o->version);
			fprintf(f, "</td><td>");
			html(f, o->time);
			fprintf(f, "</td><td>");
			html(f, o->key);
			fprintf(f, "</td></tr>\n");
		}
		fprintf(f, "</table>\n");
	}
	if (rp->skipped > 0)
		fprintf(f, "<p>%" PRIu64 " line(s) were not records and are not "
		    "counted (see the verdict).</p>\n", rp->skipped);
	fprintf(f, "</body></html>\n");
	return ferror(f) ? -1 : 0;
}

static int
add_chain(const char *dir, const char *name, void *arg)
{
	struct report *rp = arg;
	struct chain_info *c;

	if (rp->nchains == REPORT_CHAINS) {
		fprintf(stderr, "kmsctl: audit report: more than %d chains\n",
		    REPORT_CHAINS);
		return KMS_ERR_RESOURCE_EXHAUSTED;
	}
	c = &rp->chains[rp->nchains++];
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	snprintf(c->name, sizeof(c->name), "%s", name);
	return 0;
}

/* The chain directories of path: itself, or those in it. */
static int
find_chains(struct report *rp, const char *path)
{
	struct kms_status st;
	int r;

	kms_status_clear(&st);
	if ((r = audit_chain_dirs(path, 1, add_chain, rp, &st)) == 0)
		return 0;
	if (r == KMS_ERR_RESOURCE_EXHAUSTED)
		return KMSCTL_EXIT_USAGE;
	fprintf(stderr, "kmsctl: audit report: %s\n", st.msg);
	return KMSCTL_EXIT_IO;
}

static void
report_free(struct report *rp)
{
	names_free(&rp->idents);
	names_free(&rp->keys);
	names_free(&rp->rpcs);
	names_free(&rp->otas);
	listing_free(&rp->problems);
	listing_free(&rp->lifecycle);
	free(rp->ev);
	free(rp->ota);
	free(rp->chains);
}

static int
parse_when(const char *opt, const char *s, int64_t *t)
{
	if (audit_parse_time(s, t) != 0 || *t == 0) {
		fprintf(stderr, "kmsctl: %s: an RFC 3339 time in UTC, like "
		    "2026-01-02T03:04:05Z\n", opt);
		return die_usage(NULL);
	}
	return 0;
}

int
audit_report_cmd(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "pubkey", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	struct report rp;
	struct kms_status st;
	const char *out = NULL, *pubkey = NULL, *path;
	char defpath[4096];
	char *buf = NULL;
	size_t len = 0, i;
	FILE *f = NULL;
	int ch, r;

	memset(&rp, 0, sizeof(rp));
	/* argv[0] is "audit"; options follow "report". */
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if ((r = parse_when("--since", optarg, &rp.since)) != 0)
				return r;
			break;
		case 'u':
			if ((r = parse_when("--until", optarg, &rp.until)) != 0)
				return r;
			break;
		case 'p':
			pubkey = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		default:
			return die_usage(NULL);
		}
	}
	if (argc - optind > 1)
		return die_usage("audit report takes one PATH");
	if (out == NULL)
		return die_usage("audit report needs -o REPORT.html");
	if (rp.since != 0 && rp.until != 0 && rp.until <= rp.since)
		return die_usage("--until must be after --since");
	if (optind < argc)
		path = argv[optind];
	else {
		kmsctl_audit_dir(defpath, sizeof(defpath));
		path = defpath;
	}
	if ((rp.chains = calloc(REPORT_CHAINS, sizeof(*rp.chains))) == NULL) {
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	if ((r = find_chains(&rp, path)) != 0)
		goto out;
	for (i = 0; i < rp.nchains; i++) {
		struct chain_info *c = &rp.chains[i];

		kms_status_clear(&st);
		if (audit_verify(c->dir, pubkey, &c->res, NULL, NULL, &st) == 0)
			c->verified = 1;
		else
			snprintf(c->err, sizeof(c->err), "%s", st.msg);
		rp.cur = i;
		kms_status_clear(&st);
		if (audit_scan(c->dir, report_line, &rp, &st) != 0) {
			if (st.msg[0] != '\0')
				fprintf(stderr, "kmsctl: audit report: %s\n",
				    st.msg);
			r = KMSCTL_EXIT_IO;
			goto out;
		}
	}
	if ((f = open_memstream(&buf, &len)) == NULL ||
	    report_html(f, &rp, path) != 0 || fclose(f) != 0) {
		f = NULL;
		fprintf(stderr, "kmsctl: audit report: out of memory\n");
		r = KMSCTL_EXIT_IO;
		goto out;
	}
	f = NULL;
	if ((r = write_out(out, buf, len, 0)) != 0)
		goto out;
	for (i = 0; i < rp.nchains; i++)
		if (!rp.chains[i].verified || !rp.chains[i].res.ok)
			r = KMSCTL_EXIT_VERIFY;
	if (!x->json)
		fprintf(stderr, "wrote %s: %zu chain(s), %zu records in the "
		    "window%s\n", out, rp.nchains, rp.nev,
		    r == KMSCTL_EXIT_VERIFY ? "; a chain FAILED verification" :
		    "");
	else if (print_json(json_pack("{s:s, s:i, s:I, s:b}", "output", out,
	    "chains", (int)rp.nchains, "records", (json_int_t)rp.nev,
	    "intact", r == 0)) != 0)
		r = KMSCTL_EXIT_IO;
 out:
	if (f != NULL)
		fclose(f);
	free(buf);
	report_free(&rp);
	return r;
}
