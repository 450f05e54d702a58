/*
 * policy.c: roles, members and grants; policy_check is a pure function
 * (see policy.h).
 */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "kmserr.h"
#include "policy.h"

#define ROLE_NAME_MAX 64

struct grant {
	unsigned int ops;		/* bit (1 << op) */
	char *pattern;
};

struct role {
	char name[ROLE_NAME_MAX + 1];
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
	[KMS_OP_WRAP] = "Wrap",
	[KMS_OP_UNWRAP] = "Unwrap",
	[KMS_OP_GENERATE_DATA_KEY] = "GenerateDataKey",
	[KMS_OP_LIST_AUDIT_RECORDS] = "ListAuditRecords",
	[KMS_OP_WHOAMI] = "WhoAmI",
	[KMS_OP_UPDATE_KEY] = "UpdateKey",
	[KMS_OP_SIGN_BUNDLE_MANIFEST] = "SignBundleManifest",
};

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
	int line;
	char last_section[128];
};

static int fail(struct parse_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct parse_ctx *c, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kms_status_set(c->st, KMS_ERR_CONFIG, "%s:%d: %s", c->path, c->line,
	    msg);
	return 0;
}

/* Splits s in place on commas and white space; returns the count. */
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

static struct role *
find_role(struct policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nroles; i++)
		if (strcmp(p->roles[i].name, name) == 0)
			return &p->roles[i];
	return NULL;
}

/* Starts role section "role NAME" (the first key of a section does it). */
static struct role *
section_role(struct parse_ctx *c, const char *section)
{
	struct role *r, *n;
	const char *name;
	size_t i;

	if (strncmp(section, "role ", 5) != 0) {
		fail(c, "unknown section [%s]: sections are [role NAME]",
		    section);
		return NULL;
	}
	for (name = section + 5; *name == ' '; name++)
		;
	if (*name == '\0' || strlen(name) > ROLE_NAME_MAX) {
		fail(c, "role name must be 1 to %d characters", ROLE_NAME_MAX);
		return NULL;
	}
	for (i = 0; name[i] != '\0'; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' &&
		    name[i] != '-') {
			fail(c, "role name \"%s\": use letters, digits, '_' "
			    "and '-'", name);
			return NULL;
		}
	if ((r = find_role(c->p, name)) != NULL) {
		if (strcmp(c->last_section, section) != 0) {
			fail(c, "role \"%s\" is defined twice", name);
			return NULL;
		}
		return r;
	}
	if ((n = realloc(c->p->roles, (c->p->nroles + 1) *
	    sizeof(*n))) == NULL) {
		kms_status_set(c->st, KMS_ERR_NOMEM, "out of memory");
		return NULL;
	}
	c->p->roles = n;
	r = &n[c->p->nroles++];
	memset(r, 0, sizeof(*r));
	strcpy(r->name, name);
	snprintf(c->last_section, sizeof(c->last_section), "%s", section);
	return r;
}

static int
add_members(struct parse_ctx *c, struct role *r, char *value)
{
	char *tok[256], **n;
	size_t i, cnt;

	if ((cnt = split(value, tok, 256)) == 0)
		return fail(c, "members is empty");
	if (cnt > 256)
		return fail(c, "too many members on one line (at most 256)");
	if ((n = realloc(r->members, (r->nmembers + cnt) * sizeof(*n))) ==
	    NULL)
		return fail(c, "out of memory");
	r->members = n;
	for (i = 0; i < cnt; i++) {
		if ((r->members[r->nmembers] = strdup(tok[i])) == NULL)
			return fail(c, "out of memory");
		r->nmembers++;
	}
	return 1;
}

static int
add_grants(struct parse_ctx *c, struct role *r, char *value)
{
	char *tok[256];
	struct grant *n;
	unsigned int ops = 0;
	enum kms_op op;
	size_t i, cnt, on = 0;

	if ((cnt = split(value, tok, 256)) > 256)
		return fail(c, "allow line too long");
	for (i = 0; i < cnt; i++)
		if (strcmp(tok[i], "on") == 0) {
			on = i;
			break;
		}
	if (i == cnt)
		return fail(c, "allow needs \"OPERATION... on PATTERN...\"");
	if (on == 0)
		return fail(c, "allow names no operation before \"on\"");
	if (on == cnt - 1)
		return fail(c, "allow names no key pattern after \"on\"");
	for (i = 0; i < on; i++) {
		if ((op = policy_op_by_name(tok[i])) == KMS_OP_NONE)
			return fail(c, "unknown operation \"%s\"", tok[i]);
		ops |= 1u << op;
	}
	if ((n = realloc(r->grants, (r->ngrants + cnt - on - 1) *
	    sizeof(*n))) == NULL)
		return fail(c, "out of memory");
	r->grants = n;
	for (i = on + 1; i < cnt; i++) {
		if ((r->grants[r->ngrants].pattern = strdup(tok[i])) == NULL)
			return fail(c, "out of memory");
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
	char buf[4096];

	if (c->st->err != 0)
		return 0;
	if ((r = section_role(c, section)) == NULL)
		return 0;
	if (strlen(value) >= sizeof(buf))
		return fail(c, "line too long");
	strcpy(buf, value);
	if (strcmp(key, "members") == 0)
		return add_members(c, r, buf);
	if (strcmp(key, "allow") == 0)
		return add_grants(c, r, buf);
	return fail(c, "unknown key \"%s\": use members or allow", key);
}

struct string_reader {
	const char *p;
	struct parse_ctx *c;
};

static char *
read_string_line(char *buf, int size, void *stream)
{
	struct string_reader *sr = stream;
	int n = 0;

	if (*sr->p == '\0')
		return NULL;
	while (n < size - 1 && sr->p[n] != '\0' && sr->p[n] != '\n')
		n++;
	if (n < size - 1 && sr->p[n] == '\n')
		n++;
	memcpy(buf, sr->p, (size_t)n);
	buf[n] = '\0';
	sr->p += n;
	sr->c->line++;
	return buf;
}

static int
parse(const char *text, const char *path, struct policy **out,
    struct kms_status *st)
{
	struct string_reader sr;
	struct parse_ctx c;
	int r;

	*out = NULL;
	kms_status_clear(st);
	memset(&c, 0, sizeof(c));
	c.st = st;
	c.path = path;
	if ((c.p = calloc(1, sizeof(*c.p))) == NULL)
		return kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
	sr.p = text;
	sr.c = &c;
	r = ini_parse_stream(read_string_line, &sr, handler, &c);
	if (st->err == 0 && r != 0)
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
	return parse(text, "policy", out, st);
}

int
policy_load(const char *path, struct policy **out, struct kms_status *st)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	*out = NULL;
	if ((f = fopen(path, "r")) == NULL)
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: %s", path,
		    strerror(errno));
	if (getdelim(&buf, &len, '\0', f) == -1 && !feof(f)) {
		fclose(f);
		free(buf);
		return kms_status_set(st, KMS_ERR_CONFIG, "%s: cannot read",
		    path);
	}
	fclose(f);
	r = parse(buf == NULL ? "" : buf, path, out, st);
	free(buf);
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

static int
role_allows(const struct role *r, enum kms_op op, const char *key)
{
	size_t i;

	for (i = 0; i < r->ngrants; i++)
		if ((r->grants[i].ops & (1u << op)) != 0 &&
		    fnmatch(r->grants[i].pattern, key, 0) == 0)
			return 1;
	return 0;
}

void
policy_check(const struct policy *p, const char *identity, enum kms_op op,
    const char *key, struct policy_decision *out)
{
	const char *name = policy_op_name(op);
	size_t i, off = 0;
	int any = 0;

	out->allow = 0;
	out->reason[0] = '\0';
	if (identity == NULL || *identity == '\0') {
		snprintf(out->reason, sizeof(out->reason), "no identity");
		return;
	}
	if (name == NULL) {
		snprintf(out->reason, sizeof(out->reason), "unknown operation");
		return;
	}
	/* Any authenticated identity may ask who it is. */
	if (op == KMS_OP_WHOAMI) {
		out->allow = 1;
		return;
	}
	if (key == NULL)
		key = "";
	for (i = 0; p != NULL && i < p->nroles; i++)
		if (is_member(&p->roles[i], identity) &&
		    role_allows(&p->roles[i], op, key)) {
			out->allow = 1;
			return;
		}
	/* Deny, naming the roles held and the grant missing. */
	off = (size_t)snprintf(out->reason, sizeof(out->reason),
	    "identity \"%.64s\" (roles: ", identity);
	for (i = 0; p != NULL && i < p->nroles && off < sizeof(out->reason);
	    i++) {
		if (!is_member(&p->roles[i], identity))
			continue;
		off += (size_t)snprintf(out->reason + off,
		    sizeof(out->reason) - off, "%s%s", any ? ", " : "",
		    p->roles[i].name);
		any = 1;
	}
	if (off < sizeof(out->reason))
		snprintf(out->reason + off, sizeof(out->reason) - off,
		    "%s) has no grant \"%s\" on key \"%.128s\"",
		    any ? "" : "none", name, key);
}

int
policy_may_see(const struct policy *p, const char *identity, const char *key)
{
	size_t i, j;

	if (p == NULL || identity == NULL)
		return 0;
	for (i = 0; i < p->nroles; i++) {
		if (!is_member(&p->roles[i], identity))
			continue;
		for (j = 0; j < p->roles[i].ngrants; j++)
			if (fnmatch(p->roles[i].grants[j].pattern, key,
			    0) == 0 && (p->roles[i].grants[j].ops &
			    ~(1u << KMS_OP_LIST_AUDIT_RECORDS)) != 0)
				return 1;
	}
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
			if (n < max)
				roles[n] = p->roles[i].name;
			n++;
		}
	return n;
}
