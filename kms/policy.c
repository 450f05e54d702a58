/*
 * policy.c: roles, members and grants; policy_check is a pure function
 * (see policy.h).
 *
 * The file format, beyond policy.h:
 *   - the only sections are [role NAME], NAME 1..64 of [A-Za-z0-9_-],
 *     each defined once; a file with no role at all is refused, since an
 *     empty policy is more likely a mistake than a wish to deny everything;
 *   - `members` lists identities separated by commas and/or blanks;
 *   - `allow` is `OP [OP...] on PATTERN [PATTERN...]` with the RPC names
 *     of policy_op_name();
 *   - a line is at most 198 bytes (repeat `members` or `allow` for long
 *     lists), indented lines are refused, and the file is at most 1 MiB.
 *
 * The text is fed to inih line by line (see inifile.h), so that every
 * message names the right line.  The packaged inih also truncates section
 * names to 49 bytes, so the reader handles the [role NAME] lines itself,
 * which also makes a role known even when its section holds no key.
 *
 * WhoAmI: any non-empty identity is allowed, without a grant, so that a
 * caller can always learn who the server thinks it is and which roles it
 * holds.  The handler does not consult the policy for it; policy_check
 * answers the same way for completeness.
 */
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "inifile.h"
#include "kmserr.h"
#include "log.h"
#include "policy.h"

#define ROLE_NAME_MAX 64
#define TOKENS_MAX 128

struct grant {
	unsigned int ops;		/* bit (1 << op) */
	char *pattern;
};

struct role {
	char name[ROLE_NAME_MAX + 1];
	int line;			/* where its section starts */
	char **members;
	size_t nmembers;
	struct grant *grants;
	size_t ngrants;
};

struct policy {
	struct role *roles;
	size_t nroles;
};

static const char *const op_names[KMS_OP_MAX] = {
	[KMS_OP_NONE] = NULL,
	[KMS_OP_CREATE_KEY] = "CreateKey",
	[KMS_OP_GET_KEY] = "GetKey",
	[KMS_OP_LIST_KEYS] = "ListKeys",
	[KMS_OP_GET_PUBLIC_KEY] = "GetPublicKey",
	[KMS_OP_SIGN] = "Sign",
	[KMS_OP_VERIFY] = "Verify",
	[KMS_OP_ROTATE_KEY] = "RotateKey",
	[KMS_OP_SET_VERSION_STATE] = "SetVersionState",
	[KMS_OP_SET_CERTIFICATE_CHAIN] = "SetCertificateChain",
	[KMS_OP_WRAP] = "Wrap",
	[KMS_OP_UNWRAP] = "Unwrap",
	[KMS_OP_GENERATE_DATA_KEY] = "GenerateDataKey",
	[KMS_OP_LIST_AUDIT_RECORDS] = "ListAuditRecords",
	[KMS_OP_WHOAMI] = "WhoAmI",
	[KMS_OP_UPDATE_KEY] = "UpdateKey",
	[KMS_OP_SIGN_BUNDLE_MANIFEST] = "SignBundleManifest",
};

/*
 * Operations that touch no key.  A grant of these says nothing about
 * which keys a caller may see, so policy_may_see ignores them.
 */
#define KEYLESS_OPS \
	((1u << KMS_OP_LIST_AUDIT_RECORDS) | (1u << KMS_OP_WHOAMI))

const char *
policy_op_name(enum kms_op op)
{
	if ((int)op <= KMS_OP_NONE || op >= KMS_OP_MAX)
		return NULL;
	return op_names[op];
}

enum kms_op
policy_op_by_name(const char *name)
{
	int i;

	if (name == NULL)
		return KMS_OP_NONE;
	for (i = KMS_OP_NONE + 1; i < KMS_OP_MAX; i++)
		if (strcmp(op_names[i], name) == 0)
			return (enum kms_op)i;
	return KMS_OP_NONE;
}

void
policy_free(struct policy *p)
{
	size_t i, j;

	if (p == NULL)
		return;
	for (i = 0; i < p->nroles; i++) {
		for (j = 0; j < p->roles[i].nmembers; j++)
			free(p->roles[i].members[j]);
		free(p->roles[i].members);
		for (j = 0; j < p->roles[i].ngrants; j++)
			free(p->roles[i].grants[j].pattern);
		free(p->roles[i].grants);
	}
	free(p->roles);
	free(p);
}

struct parse_ctx {
	struct policy *p;
	struct kms_status *st;
	const char *path;
	struct inifile_cursor in;	/* text not yet handed to inih */
	int err_line;			/* line of the error in st, if any */
	int in_role;			/* 1 once a [role NAME] line was seen */
	size_t cur;			/* index of the current role */
};

static int fail(struct parse_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records the first error, naming the file and line; returns 0 for inih. */
static int
fail(struct parse_ctx *c, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	if (c->st->err != 0)
		return 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kms_status_set(c->st, KMS_ERR_CONFIG, "%s:%d: %s", c->path,
	    c->in.line, msg);
	c->err_line = c->in.line;
	return 0;
}

static int
nomem(struct parse_ctx *c)
{
	if (c->st->err == 0)
		kms_status_set(c->st, KMS_ERR_NOMEM, "%s:%d: out of memory",
		    c->path, c->in.line);
	c->err_line = c->in.line;
	return 0;
}

static int
is_name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
}

/* Splits s in place on commas and blanks; returns the count or max + 1. */
static size_t
split(char *s, char **out, size_t max)
{
	size_t n = 0;
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (n == max)
			return max + 1;
		out[n++] = tok;
	}
	return n;
}

/*
 * Starts the section whose header is s[0..len-1] (between the brackets):
 * it must read "role NAME" and NAME must be new.
 */
static int
start_section(struct parse_ctx *c, const char *s, size_t len)
{
	struct role *n;
	size_t i, nlen;

	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len < 4 || strncmp(s, "role", 4) != 0 ||
	    (len > 4 && s[4] != ' ' && s[4] != '\t'))
		return fail(c, "unknown section [%.*s]: sections are "
		    "[role NAME]", (int)(len > 64 ? 64 : len), s);
	for (s += 4, len -= 4; len > 0 && (*s == ' ' || *s == '\t');
	    s++, len--)
		;
	nlen = len;
	if (nlen == 0)
		return fail(c, "[role] needs a name: [role NAME]");
	if (nlen > ROLE_NAME_MAX)
		return fail(c, "role name is %zu bytes, at most %d are "
		    "allowed", nlen, ROLE_NAME_MAX);
	for (i = 0; i < nlen; i++)
		if (!is_name_char(s[i]))
			return fail(c, "role name \"%.*s\": use letters, "
			    "digits, '_' and '-'", (int)nlen, s);
	for (i = 0; i < c->p->nroles; i++)
		if (strlen(c->p->roles[i].name) == nlen &&
		    memcmp(c->p->roles[i].name, s, nlen) == 0)
			return fail(c, "role \"%.*s\" is defined twice (first "
			    "on line %d)", (int)nlen, s, c->p->roles[i].line);
	if ((n = realloc(c->p->roles, (c->p->nroles + 1) *
	    sizeof(*n))) == NULL)
		return nomem(c);
	c->p->roles = n;
	c->cur = c->p->nroles++;
	memset(&n[c->cur], 0, sizeof(n[c->cur]));
	memcpy(n[c->cur].name, s, nlen);
	n[c->cur].name[nlen] = '\0';
	n[c->cur].line = c->in.line;
	c->in_role = 1;
	return 1;
}

/* A [section] line: s[0] is '[' and content its length without newline. */
static int
section_line(struct parse_ctx *c, const char *s, size_t content)
{
	const char *rb, *p;

	if ((rb = memchr(s, ']', content)) == NULL)
		return fail(c, "section header without ']'");
	for (p = rb + 1; p < s + content && (*p == ' ' || *p == '\t'); p++)
		;
	if (p < s + content && *p != ';' && *p != '#')
		return fail(c, "text after the section header");
	return start_section(c, s + 1, (size_t)(rb - s - 1));
}

/* The inih reader: one line of the text per call (see inifile.h). */
static char *
read_line(char *buf, int size, void *stream)
{
	struct parse_ctx *c = stream;
	const char *p = buf;
	size_t content;

	if (c->st->err != 0)
		return NULL;
	switch (inifile_take_line(&c->in, buf, size, &content)) {
	case INIFILE_LINE:
		break;
	case INIFILE_TOO_LONG:
		fail(c, "line is longer than %d bytes (repeat members or "
		    "allow instead)", size - 2);
		return NULL;
	case INIFILE_INDENTED:
		fail(c, "indented line (continuation lines are not "
		    "supported)");
		return NULL;
	default:
		return NULL;
	}
	/* Skip a UTF-8 byte order mark on the first line, as inih does. */
	if (c->in.line == 1 && content >= 3 &&
	    memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
		p = buf + 3;
	if (*p == '[' && !section_line(c, p, content - (size_t)(p - buf)))
		return NULL;
	return buf;
}

static int
add_members(struct parse_ctx *c, struct role *r, char *value)
{
	char *tok[TOKENS_MAX], **n;
	size_t i, cnt;

	if ((cnt = split(value, tok, TOKENS_MAX)) == 0)
		return fail(c, "members is empty");
	if (cnt > TOKENS_MAX)
		return fail(c, "more than %d members on one line",
		    TOKENS_MAX);
	if ((n = realloc(r->members, (r->nmembers + cnt) * sizeof(*n))) ==
	    NULL)
		return nomem(c);
	r->members = n;
	for (i = 0; i < cnt; i++) {
		if ((r->members[r->nmembers] = strdup(tok[i])) == NULL)
			return nomem(c);
		r->nmembers++;
	}
	return 1;
}

static int
add_grants(struct parse_ctx *c, struct role *r, char *value)
{
	char *tok[TOKENS_MAX];
	struct grant *n;
	unsigned int ops = 0;
	enum kms_op op;
	size_t i, cnt, on;

	if ((cnt = split(value, tok, TOKENS_MAX)) == 0)
		return fail(c, "allow is empty: allow = OPERATION... on "
		    "PATTERN...");
	if (cnt > TOKENS_MAX)
		return fail(c, "more than %d words in one allow line",
		    TOKENS_MAX);
	for (on = 0; on < cnt; on++)
		if (strcmp(tok[on], "on") == 0)
			break;
	if (on == cnt)
		return fail(c, "allow has no \"on\": allow = OPERATION... on "
		    "PATTERN...");
	if (on == 0)
		return fail(c, "allow names no operation before \"on\"");
	if (on == cnt - 1)
		return fail(c, "allow names no key pattern after \"on\"");
	for (i = 0; i < on; i++) {
		if ((op = policy_op_by_name(tok[i])) == KMS_OP_NONE)
			return fail(c, "unknown operation \"%.64s\"", tok[i]);
		ops |= 1u << op;
	}
	if ((n = realloc(r->grants, (r->ngrants + cnt - on - 1) *
	    sizeof(*n))) == NULL)
		return nomem(c);
	r->grants = n;
	for (i = on + 1; i < cnt; i++) {
		if ((r->grants[r->ngrants].pattern = strdup(tok[i])) == NULL)
			return nomem(c);
		r->grants[r->ngrants].ops = ops;
		r->ngrants++;
	}
	return 1;
}

static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;
	struct role *r;
	char buf[512];

	if (c->st->err != 0)
		return 0;
	/* The section is the one read_line saw, not inih's truncated copy. */
	if (!c->in_role)
		return fail(c, "\"%.64s\" is outside any [role NAME] section",
		    key);
	r = &c->p->roles[c->cur];
	if (strlen(value) >= sizeof(buf))
		return fail(c, "value is too long");
	strcpy(buf, value);
	if (strcmp(key, "members") == 0)
		return add_members(c, r, buf);
	if (strcmp(key, "allow") == 0)
		return add_grants(c, r, buf);
	return fail(c, "unknown key \"%.64s\": use members or allow", key);
}

static int
parse(const char *text, const char *path, struct policy **out,
    struct kms_status *st)
{
	struct parse_ctx c;
	int r;

	memset(&c, 0, sizeof(c));
	c.st = st;
	c.path = path;
	c.in.next = text;
	if ((c.p = calloc(1, sizeof(*c.p))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	r = ini_parse_stream(read_line, &c, handler, &c);
	/*
	 * inih's own complaint (a line that is neither [section] nor
	 * key = value) wins when it comes from an earlier line.
	 */
	if (r > 0 && (st->err == 0 || r < c.err_line))
		kms_status_set(st, KMS_ERR_CONFIG, "%s:%d: syntax error "
		    "(expected [role NAME] or key = value)", path, r);
	if (st->err == 0 && c.p->nroles == 0)
		kms_status_set(st, KMS_ERR_CONFIG, "%s: no role is defined",
		    path);
	if (st->err != 0) {
		policy_free(c.p);
		return st->err;
	}
	*out = c.p;
	return 0;
}

int
policy_parse(const char *text, struct policy **out, struct kms_status *st)
{
	struct kms_status local;

	if (st == NULL)
		st = &local;
	*out = NULL;
	kms_status_clear(st);
	if (text == NULL)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "no policy text");
	return parse(text, "policy", out, st);
}

int
policy_load(const char *path, struct policy **out, struct kms_status *st)
{
	struct kms_status local;
	char *text = NULL;
	int r;

	if (st == NULL)
		st = &local;
	*out = NULL;
	kms_status_clear(st);
	if ((r = inifile_read(path, &text, st)) != 0)
		return r;
	r = parse(text, path, out, st);
	free(text);
	return r;
}

static int
is_member(const struct role *r, const char *identity)
{
	size_t i;

	for (i = 0; i < r->nmembers; i++)
		if (strcmp(r->members[i], identity) == 0)
			return 1;
	return 0;
}

/* 1 when r holds a grant with any op of mask whose pattern matches key. */
static int
role_allows(const struct role *r, unsigned int mask, const char *key)
{
	size_t i;

	for (i = 0; i < r->ngrants; i++)
		if ((r->grants[i].ops & mask) != 0 &&
		    fnmatch(r->grants[i].pattern, key, 0) == 0)
			return 1;
	return 0;
}

void
policy_check(const struct policy *p, const char *identity, enum kms_op op,
    const char *key, struct policy_decision *out)
{
	const char *name = policy_op_name(op);
	char eid[96], ekey[160];
	size_t i, off, room;
	int any = 0, n;

	out->allow = 0;
	out->reason[0] = '\0';
	if (identity == NULL || *identity == '\0') {
		snprintf(out->reason, sizeof(out->reason), "no identity");
		return;
	}
	if (name == NULL) {
		snprintf(out->reason, sizeof(out->reason),
		    "unknown operation %d", (int)op);
		return;
	}
	/* Any authenticated identity may ask who it is (see the top). */
	if (op == KMS_OP_WHOAMI) {
		out->allow = 1;
		return;
	}
	if (key == NULL)
		key = "";
	for (i = 0; p != NULL && i < p->nroles; i++)
		if (is_member(&p->roles[i], identity) &&
		    role_allows(&p->roles[i], 1u << op, key)) {
			out->allow = 1;
			return;
		}
	/*
	 * Deny, naming the roles held and the grant missing.  Identity and
	 * key come from the client: escape them so that the reason cannot
	 * forge log lines, and bound them so that the end of the sentence
	 * always fits.
	 */
	log_escape(identity, eid, sizeof(eid));
	log_escape(key, ekey, sizeof(ekey));
	n = snprintf(out->reason, sizeof(out->reason),
	    "identity \"%s\" (roles: ", eid);
	off = n < 0 ? 0 : (size_t)n;
	/* Keep room for the tail: ") has no grant "OP" on key "KEY"". */
	room = sizeof(out->reason) - strlen(name) - strlen(ekey) - 32;
	for (i = 0; p != NULL && i < p->nroles; i++) {
		if (!is_member(&p->roles[i], identity))
			continue;
		if (off + strlen(p->roles[i].name) + 6 > room) {
			n = snprintf(out->reason + off,
			    sizeof(out->reason) - off, "%s...",
			    any ? ", " : "");
			off += (size_t)n;
			any = 1;
			break;
		}
		n = snprintf(out->reason + off, sizeof(out->reason) - off,
		    "%s%s", any ? ", " : "", p->roles[i].name);
		off += (size_t)n;
		any = 1;
	}
	snprintf(out->reason + off, sizeof(out->reason) - off,
	    "%s) has no grant \"%s\" on key \"%s\"", any ? "" : "none", name,
	    ekey);
}

int
policy_may_see(const struct policy *p, const char *identity, const char *key)
{
	size_t i;

	if (p == NULL || identity == NULL || *identity == '\0' || key == NULL)
		return 0;
	for (i = 0; i < p->nroles; i++)
		if (is_member(&p->roles[i], identity) &&
		    role_allows(&p->roles[i], ~KEYLESS_OPS, key))
			return 1;
	return 0;
}

size_t
policy_roles(const struct policy *p, const char *identity,
    const char **roles, size_t max)
{
	size_t i, n = 0;

	if (p == NULL || identity == NULL)
		return 0;
	for (i = 0; i < p->nroles; i++)
		if (is_member(&p->roles[i], identity)) {
			if (n < max && roles != NULL)
				roles[n] = p->roles[i].name;
			n++;
		}
	return n;
}
