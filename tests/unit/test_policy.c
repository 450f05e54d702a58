/*
 * test_policy.c: the policy parser and the pure decision function,
 * against the default hsm-config/policy.conf and against small policies.
 *
 * The default policy is read from $KMS_POLICY_FILE when set, else from
 * hsm-config/policy.conf relative to the current directory (the top of
 * the source tree, where tests/run-unit.sh runs the tests).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kmserr.h"
#include "policy.h"

static const char *
default_policy_path(void)
{
	const char *p = getenv("KMS_POLICY_FILE");

	return p != NULL && *p != '\0' ? p : "hsm-config/policy.conf";
}

static struct policy *
parse_ok(const char *text)
{
	struct kms_status st;
	struct policy *p = NULL;

	if (policy_parse(text, &p, &st) != 0)
		fail_msg("refused: %s\n--\n%s", st.msg, text);
	assert_non_null(p);
	assert_int_equal(st.err, 0);
	return p;
}

/* text is refused with "policy:LINE: ..." holding want. */
static void
assert_refused(const char *text, int line, const char *want)
{
	struct kms_status st;
	struct policy *p = (struct policy *)0x1;
	char prefix[32];
	int r;

	r = policy_parse(text, &p, &st);
	if (r != KMS_ERR_CONFIG)
		fail_msg("got %d (%s), expected KMS_ERR_CONFIG\n--\n%s", r,
		    st.msg, text);
	assert_null(p);
	assert_int_equal(st.err, KMS_ERR_CONFIG);
	if (line > 0) {
		snprintf(prefix, sizeof(prefix), "policy:%d: ", line);
		if (strncmp(st.msg, prefix, strlen(prefix)) != 0)
			fail_msg("message \"%s\" does not start with \"%s\"",
			    st.msg, prefix);
	}
	if (strstr(st.msg, want) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", st.msg, want);
}

static int
allowed(const struct policy *p, const char *who, enum kms_op op,
    const char *key)
{
	struct policy_decision d;

	memset(&d, 'x', sizeof(d));
	policy_check(p, who, op, key, &d);
	assert_true(d.allow == 0 || d.allow == 1);
	/* A decision always comes with a terminated reason. */
	assert_non_null(memchr(d.reason, '\0', sizeof(d.reason)));
	if (d.allow == 0)
		assert_true(strlen(d.reason) > 0);
	return d.allow;
}

static int
setup_default(void **state)
{
	struct kms_status st;
	struct policy *p = NULL;

	if (policy_load(default_policy_path(), &p, &st) != 0) {
		fprintf(stderr, "cannot load %s: %s\n", default_policy_path(),
		    st.msg);
		return -1;
	}
	*state = p;
	return 0;
}

static int
teardown_policy(void **state)
{
	policy_free(*state);
	return 0;
}

/* What each identity of the default policy may do, on any key. */
static const struct {
	const char *who;
	enum kms_op ops[12];
} default_grants[] = {
	{ "officer", { KMS_OP_CREATE_KEY, KMS_OP_GET_KEY, KMS_OP_LIST_KEYS,
	    KMS_OP_GET_PUBLIC_KEY, KMS_OP_VERIFY, KMS_OP_ROTATE_KEY,
	    KMS_OP_SET_VERSION_STATE, KMS_OP_UPDATE_KEY,
	    KMS_OP_SET_CERTIFICATE_CHAIN } },
	{ "ci", { KMS_OP_SIGN, KMS_OP_VERIFY, KMS_OP_GET_KEY,
	    KMS_OP_GET_PUBLIC_KEY, KMS_OP_LIST_KEYS, KMS_OP_WRAP, KMS_OP_GENERATE_DATA_KEY,
	    KMS_OP_SIGN_BUNDLE_MANIFEST } },
	{ "auditor", { KMS_OP_LIST_AUDIT_RECORDS } },
	{ "unwrapper", { KMS_OP_UNWRAP, KMS_OP_GET_KEY,
	    KMS_OP_GET_PUBLIC_KEY } },
	{ "mallory", { KMS_OP_NONE } },
	/* Identities are compared exactly. */
	{ "Officer", { KMS_OP_NONE } },
	{ "ci ", { KMS_OP_NONE } },
};

static int
in_list(const enum kms_op *ops, size_t n, enum kms_op op)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ops[i] == op)
			return 1;
	return 0;
}

static void
test_default_matrix(void **state)
{
	const struct policy *p = *state;
	static const char *const keys[] = { "x", "release/android/capgo-v2",
	    "dev/a" };
	size_t i, k, nops;
	int op, want, got;

	for (i = 0; i < sizeof(default_grants) / sizeof(default_grants[0]);
	    i++) {
		nops = sizeof(default_grants[i].ops) /
		    sizeof(default_grants[i].ops[0]);
		for (op = KMS_OP_NONE + 1; op < KMS_OP_MAX; op++) {
			if (op == KMS_OP_WHOAMI)
				continue;
			want = in_list(default_grants[i].ops, nops,
			    (enum kms_op)op);
			for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
				/* Keyless operations are checked against "". */
				const char *key = op ==
				    KMS_OP_LIST_AUDIT_RECORDS ? "" : keys[k];

				got = allowed(p, default_grants[i].who,
				    (enum kms_op)op, key);
				if (got != want)
					fail_msg("%s %s on \"%s\": %s, "
					    "expected %s",
					    default_grants[i].who,
					    policy_op_name((enum kms_op)op),
					    key, got ? "allowed" : "denied",
					    want ? "allowed" : "denied");
			}
		}
	}
}

static void
test_default_separation_of_duties(void **state)
{
	const struct policy *p = *state;
	const char *roles[4];

	/* Spelled out: the properties the default policy exists for. */
	assert_false(allowed(p, "officer", KMS_OP_SIGN, "release/a"));
	assert_false(allowed(p, "officer", KMS_OP_SIGN_BUNDLE_MANIFEST, "a"));
	assert_false(allowed(p, "officer", KMS_OP_UNWRAP, "a"));
	assert_false(allowed(p, "ci", KMS_OP_CREATE_KEY, "release/a"));
	assert_false(allowed(p, "ci", KMS_OP_ROTATE_KEY, "release/a"));
	assert_false(allowed(p, "ci", KMS_OP_UNWRAP, "release/a"));
	assert_false(allowed(p, "ci", KMS_OP_LIST_AUDIT_RECORDS, ""));
	assert_true(allowed(p, "auditor", KMS_OP_LIST_AUDIT_RECORDS, ""));
	assert_false(allowed(p, "auditor", KMS_OP_GET_KEY, "a"));
	assert_false(allowed(p, "unwrapper", KMS_OP_SIGN, "a"));
	/* Nobody holds two roles. */
	assert_int_equal(policy_roles(p, "officer", roles, 4), 1);
	assert_string_equal(roles[0], "officer");
	assert_int_equal(policy_roles(p, "ci", roles, 4), 1);
	assert_string_equal(roles[0], "signer");
	assert_int_equal(policy_roles(p, "auditor", roles, 4), 1);
	assert_string_equal(roles[0], "auditor");
	assert_int_equal(policy_roles(p, "unwrapper", roles, 4), 1);
	assert_string_equal(roles[0], "unwrapper");
	assert_int_equal(policy_roles(p, "mallory", roles, 4), 0);
}

static void
test_default_reasons(void **state)
{
	const struct policy *p = *state;
	struct policy_decision d;

	policy_check(p, "ci", KMS_OP_CREATE_KEY, "x", &d);
	assert_int_equal(d.allow, 0);
	assert_string_equal(d.reason, "identity \"ci\" (roles: signer) has no "
	    "grant \"CreateKey\" on key \"x\"");
	policy_check(p, "mallory", KMS_OP_SIGN, "release/a", &d);
	assert_int_equal(d.allow, 0);
	assert_string_equal(d.reason, "identity \"mallory\" (roles: none) "
	    "has no grant \"Sign\" on key \"release/a\"");
	policy_check(p, "officer", KMS_OP_LIST_AUDIT_RECORDS, "", &d);
	assert_string_equal(d.reason, "identity \"officer\" (roles: officer) "
	    "has no grant \"ListAuditRecords\" on key \"\"");
	/* A NULL key is the empty key. */
	policy_check(p, "auditor", KMS_OP_LIST_AUDIT_RECORDS, NULL, &d);
	assert_int_equal(d.allow, 1);
}

static void
test_default_may_see(void **state)
{
	const struct policy *p = *state;

	assert_true(policy_may_see(p, "officer", "release/a"));
	assert_true(policy_may_see(p, "ci", "release/a"));
	assert_true(policy_may_see(p, "unwrapper", "dev/b"));
	/* A grant that touches no key shows no key. */
	assert_false(policy_may_see(p, "auditor", "release/a"));
	assert_false(policy_may_see(p, "mallory", "release/a"));
	assert_false(policy_may_see(p, "", "release/a"));
	assert_false(policy_may_see(p, NULL, "release/a"));
}

static void
test_whoami(void **state)
{
	const struct policy *p = *state;
	struct policy_decision d;

	/* Any identity may ask who it is, grant or no grant. */
	assert_true(allowed(p, "mallory", KMS_OP_WHOAMI, ""));
	assert_true(allowed(p, "auditor", KMS_OP_WHOAMI, "x"));
	assert_true(allowed(NULL, "anyone", KMS_OP_WHOAMI, NULL));
	/* But only an identity. */
	policy_check(p, "", KMS_OP_WHOAMI, "", &d);
	assert_int_equal(d.allow, 0);
	assert_string_equal(d.reason, "no identity");
	policy_check(p, NULL, KMS_OP_WHOAMI, "", &d);
	assert_int_equal(d.allow, 0);
	policy_check(p, NULL, KMS_OP_SIGN, "x", &d);
	assert_int_equal(d.allow, 0);
}

static void
test_deny_by_default(void **state)
{
	struct policy_decision d;
	struct policy *p;

	(void)state;
	p = parse_ok("[role r]\nmembers = alice\nallow = Sign on a\n");
	assert_true(allowed(p, "alice", KMS_OP_SIGN, "a"));
	assert_false(allowed(p, "alice", KMS_OP_SIGN, "b"));
	assert_false(allowed(p, "alice", KMS_OP_VERIFY, "a"));
	assert_false(allowed(p, "bob", KMS_OP_SIGN, "a"));
	/* Invalid operations are denied, even for a member. */
	policy_check(p, "alice", KMS_OP_NONE, "a", &d);
	assert_int_equal(d.allow, 0);
	policy_check(p, "alice", KMS_OP_MAX, "a", &d);
	assert_int_equal(d.allow, 0);
	policy_check(p, "alice", (enum kms_op)-1, "a", &d);
	assert_int_equal(d.allow, 0);
	/* No policy at all denies everything. */
	policy_check(NULL, "alice", KMS_OP_SIGN, "a", &d);
	assert_int_equal(d.allow, 0);
	assert_string_equal(d.reason, "identity \"alice\" (roles: none) has "
	    "no grant \"Sign\" on key \"a\"");
	/* A role with no members and no grants changes nothing. */
	policy_free(p);
	p = parse_ok("[role empty]\n");
	assert_false(allowed(p, "alice", KMS_OP_SIGN, "a"));
	policy_free(p);
}

static void
test_globs(void **state)
{
	struct policy *p;

	(void)state;
	p = parse_ok(
	    "[role rel]\n"
	    "members = r\n"
	    "allow = Sign on release/*\n"
	    "[role dev]\n"
	    "members = d\n"
	    "allow = Sign on dev-? exact [ab]x/*\n");
	/* `*` crosses `/`: every key below release/. */
	assert_true(allowed(p, "r", KMS_OP_SIGN, "release/a"));
	assert_true(allowed(p, "r", KMS_OP_SIGN, "release/a/b"));
	assert_true(allowed(p, "r", KMS_OP_SIGN, "release/a/b/c.d"));
	assert_true(allowed(p, "r", KMS_OP_SIGN, "release/.x"));
	assert_false(allowed(p, "r", KMS_OP_SIGN, "release"));
	assert_false(allowed(p, "r", KMS_OP_SIGN, "releases/a"));
	assert_false(allowed(p, "r", KMS_OP_SIGN, "x/release/a"));
	assert_false(allowed(p, "r", KMS_OP_SIGN, ""));
	assert_true(allowed(p, "d", KMS_OP_SIGN, "dev-1"));
	assert_false(allowed(p, "d", KMS_OP_SIGN, "dev-12"));
	assert_true(allowed(p, "d", KMS_OP_SIGN, "exact"));
	assert_false(allowed(p, "d", KMS_OP_SIGN, "exactly"));
	assert_true(allowed(p, "d", KMS_OP_SIGN, "ax/1"));
	assert_true(allowed(p, "d", KMS_OP_SIGN, "bx/1/2"));
	assert_false(allowed(p, "d", KMS_OP_SIGN, "cx/1"));
	/* A role grants only to its own members. */
	assert_false(allowed(p, "r", KMS_OP_SIGN, "dev-1"));
	assert_false(allowed(p, "d", KMS_OP_SIGN, "release/a"));
	/* Keyless operations need a pattern that matches "". */
	policy_free(p);
	p = parse_ok("[role a]\nmembers = x\nallow = ListAuditRecords on "
	    "audit*\n[role b]\nmembers = y\nallow = ListAuditRecords on *\n");
	assert_false(allowed(p, "x", KMS_OP_LIST_AUDIT_RECORDS, ""));
	assert_true(allowed(p, "y", KMS_OP_LIST_AUDIT_RECORDS, ""));
	policy_free(p);
}

static void
test_members_and_allow_lines(void **state)
{
	const char *roles[8];
	struct policy *p;

	(void)state;
	p = parse_ok(
	    "# members and grants may repeat and mix separators\n"
	    "[role ops]\n"
	    "members = alice, bob carol,dave\t erin\n"
	    "allow = Sign Verify on a/* b\n"
	    "members = spiffe://example.org/ci\n"
	    "allow = Wrap,Unwrap on c\n"
	    "\n"
	    "[role second_role-2]\n"
	    "members = bob   ; inline comment\n"
	    "allow = GetKey on *\n");
	assert_true(allowed(p, "alice", KMS_OP_SIGN, "a/1"));
	assert_true(allowed(p, "bob", KMS_OP_VERIFY, "b"));
	assert_true(allowed(p, "carol", KMS_OP_SIGN, "b"));
	assert_true(allowed(p, "dave", KMS_OP_SIGN, "b"));
	assert_true(allowed(p, "erin", KMS_OP_SIGN, "b"));
	assert_true(allowed(p, "spiffe://example.org/ci", KMS_OP_WRAP, "c"));
	assert_true(allowed(p, "alice", KMS_OP_UNWRAP, "c"));
	/* Grants do not mix across lines: Wrap was not granted on b. */
	assert_false(allowed(p, "alice", KMS_OP_WRAP, "b"));
	assert_false(allowed(p, "alice", KMS_OP_SIGN, "c"));
	assert_false(allowed(p, "alice", KMS_OP_GET_KEY, "a/1"));
	assert_true(allowed(p, "bob", KMS_OP_GET_KEY, "zzz"));

	assert_int_equal(policy_roles(p, "bob", roles, 8), 2);
	assert_string_equal(roles[0], "ops");
	assert_string_equal(roles[1], "second_role-2");
	/* Only max are written; the total comes back. */
	roles[0] = roles[1] = NULL;
	assert_int_equal(policy_roles(p, "bob", roles, 1), 2);
	assert_string_equal(roles[0], "ops");
	assert_null(roles[1]);
	assert_int_equal(policy_roles(p, "bob", NULL, 0), 2);
	assert_int_equal(policy_roles(p, "alice", roles, 8), 1);
	assert_int_equal(policy_roles(p, "nobody", roles, 8), 0);
	assert_int_equal(policy_roles(NULL, "bob", roles, 8), 0);
	assert_int_equal(policy_roles(p, NULL, roles, 8), 0);

	/* Every role held is named when denying. */
	{
		struct policy_decision d;

		policy_check(p, "bob", KMS_OP_CREATE_KEY, "k", &d);
		assert_int_equal(d.allow, 0);
		assert_string_equal(d.reason, "identity \"bob\" (roles: ops, "
		    "second_role-2) has no grant \"CreateKey\" on key \"k\"");
	}

	assert_true(policy_may_see(p, "alice", "a/x"));
	assert_true(policy_may_see(p, "alice", "c"));
	assert_false(policy_may_see(p, "alice", "d"));
	assert_true(policy_may_see(p, "bob", "d"));
	assert_false(policy_may_see(NULL, "bob", "d"));
	policy_free(p);
}

static void
test_reason_escaping_and_bounds(void **state)
{
	struct policy_decision d;
	struct policy *p;
	char text[4096], who[600], key[300];
	size_t off = 0;
	int i;

	(void)state;
	/* A client cannot forge a log line through its identity or key. */
	policy_check(NULL, "evil\"\ninjected", KMS_OP_SIGN, "k\"\n", &d);
	assert_int_equal(d.allow, 0);
	assert_null(strchr(d.reason, '\n'));
	assert_string_equal(d.reason, "identity \"evil\\\"\\x0ainjected\" "
	    "(roles: none) has no grant \"Sign\" on key \"k\\\"\\x0a\"");

	/* Many long role names and a huge identity: the tail still fits. */
	for (i = 0; i < 12; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off,
		    "[role %040d]\nmembers = m\n", i);
	p = parse_ok(text);
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	policy_check(p, "m", KMS_OP_SIGN, key, &d);
	assert_int_equal(d.allow, 0);
	assert_non_null(strstr(d.reason, "(roles: 00000"));
	assert_non_null(strstr(d.reason, "...) has no grant \"Sign\" on key"));
	assert_int_equal(d.reason[strlen(d.reason) - 1], '"');
	memset(who, 'w', sizeof(who) - 1);
	who[sizeof(who) - 1] = '\0';
	policy_check(p, who, KMS_OP_SIGN, "x", &d);
	assert_int_equal(d.allow, 0);
	assert_true(strlen(d.reason) < POLICY_REASON_MAX);
	assert_non_null(strstr(d.reason, "...\" (roles: none) has no grant "
	    "\"Sign\" on key \"x\""));
	policy_free(p);
}

static void
test_op_names(void **state)
{
	int op;

	(void)state;
	for (op = KMS_OP_NONE + 1; op < KMS_OP_MAX; op++) {
		const char *n = policy_op_name((enum kms_op)op);

		assert_non_null(n);
		assert_int_equal(policy_op_by_name(n), op);
	}
	assert_string_equal(policy_op_name(KMS_OP_SIGN), "Sign");
	assert_string_equal(policy_op_name(KMS_OP_LIST_AUDIT_RECORDS),
	    "ListAuditRecords");
	assert_string_equal(policy_op_name(KMS_OP_SIGN_BUNDLE_MANIFEST),
	    "SignBundleManifest");
	assert_null(policy_op_name(KMS_OP_NONE));
	assert_null(policy_op_name(KMS_OP_MAX));
	assert_int_equal(policy_op_by_name("sign"), KMS_OP_NONE);
	assert_int_equal(policy_op_by_name(""), KMS_OP_NONE);
	assert_int_equal(policy_op_by_name(NULL), KMS_OP_NONE);
}

static void
test_broken_files(void **state)
{
	char text[512], name[80];

	(void)state;
	assert_refused("[group x]\nmembers = a\n", 1,
	    "unknown section [group x]");
	assert_refused("[role a]\nmembers = a\n[roles b]\n", 3,
	    "unknown section [roles b]");
	assert_refused("[role a]\nmembers = a\n[]\n", 3, "unknown section");
	assert_refused("[role]\nmembers = a\n", 1, "needs a name");
	assert_refused("[role  ]\nmembers = a\n", 1, "needs a name");
	assert_refused("[role a b]\nmembers = a\n", 1, "role name \"a b\"");
	assert_refused("[role a.b]\n", 1, "role name \"a.b\"");
	assert_refused("[role caf\xc3\xa9]\n", 1, "use letters, digits");
	/* Duplicate roles, next to each other or apart, even if empty. */
	assert_refused("[role a]\nmembers = x\n[role a]\nallow = Sign on *\n",
	    3, "role \"a\" is defined twice (first on line 1)");
	assert_refused("[role a]\n[role b]\nmembers = y\n\n[role a]\n", 5,
	    "role \"a\" is defined twice (first on line 1)");
	assert_refused("[role a]\nmembers = x\nowner = y\n", 3,
	    "unknown key \"owner\"");
	assert_refused("[role a]\nallow = Sign Frobnicate on *\n", 2,
	    "unknown operation \"Frobnicate\"");
	assert_refused("[role a]\nallow = sign on *\n", 2,
	    "unknown operation \"sign\"");
	assert_refused("[role a]\nmembers = x\nallow = Sign Verify *\n", 3,
	    "allow has no \"on\"");
	assert_refused("[role a]\nallow = on *\n", 2,
	    "no operation before \"on\"");
	assert_refused("[role a]\nallow = Sign on\n", 2,
	    "no key pattern after \"on\"");
	assert_refused("[role a]\nallow = Sign on ; comment\n", 2,
	    "no key pattern after \"on\"");
	assert_refused("[role a]\nallow =\n", 2, "allow is empty");
	assert_refused("[role a]\nmembers =\n", 2, "members is empty");
	assert_refused("[role a]\nmembers = , ,\n", 2, "members is empty");
	assert_refused("members = x\n[role a]\n", 1,
	    "outside any [role NAME] section");
	assert_refused("; top\n[role a]\nmembers x\n", 3, "syntax error");
	assert_refused("[role a\nmembers = x\n", 1, "without ']'");
	assert_refused("[role a] junk\n", 1, "text after the section header");
	assert_refused("[role a]\nmembers = x\n  y\n", 3,
	    "indented line");
	assert_refused("", 0, "no role is defined");
	assert_refused("; only a comment\n", 0, "no role is defined");
	/* The earliest error is the one named. */
	assert_refused("[role a]\nmembers x\nallow = Bad on *\n", 2,
	    "syntax error");
	assert_refused("[role a]\nallow = Bad on *\nmembers x\n", 2,
	    "unknown operation");

	/* Role names: 64 bytes are fine (and kept whole), 65 are not. */
	memset(name, 'r', 64);
	name[64] = '\0';
	snprintf(text, sizeof(text), "[role %s]\nmembers = m\n", name);
	{
		struct policy *p = parse_ok(text);
		const char *roles[1];

		assert_int_equal(policy_roles(p, "m", roles, 1), 1);
		assert_string_equal(roles[0], name);
		policy_free(p);
	}
	snprintf(text, sizeof(text), "[role a]\n[role %sr]\n", name);
	assert_refused(text, 2, "role name is 65 bytes, at most 64");

	/* A line too long for the parser is refused, not cut in two. */
	memset(text, 0, sizeof(text));
	strcpy(text, "[role a]\nmembers = ");
	memset(text + strlen(text), 'm', 250);
	strcat(text, "\nallow = Sign on *\n");
	assert_refused(text, 2, "line is longer than 198 bytes");
}

static void
test_load_files(void **state)
{
	char dir[64], path[128];
	struct kms_status st;
	struct policy *p = (struct policy *)0x1;
	FILE *f;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/kms-policy.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/policy.conf", dir);

	/* Messages from a file name the file and the line. */
	assert_non_null(f = fopen(path, "w"));
	fputs("[role a]\nmembers = x\n\nallow = Sign on\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(policy_load(path, &p, &st), KMS_ERR_CONFIG);
	assert_null(p);
	assert_true(strncmp(st.msg, path, strlen(path)) == 0);
	assert_non_null(strstr(st.msg, ":4: allow names no key pattern"));

	/* A NUL byte would silently end the policy early. */
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fwrite("[role a]\n\0[role a]\n", 1, 19, f), 19);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(policy_load(path, &p, &st), KMS_ERR_CONFIG);
	assert_non_null(strstr(st.msg, "NUL"));

	assert_non_null(f = fopen(path, "w"));
	fputs("\xEF\xBB\xBF[role a]\r\nmembers = x\r\nallow = Sign on *\r\n",
	    f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(policy_load(path, &p, &st), 0);
	assert_true(allowed(p, "x", KMS_OP_SIGN, "k"));
	policy_free(p);

	unlink(path);
	p = (struct policy *)0x1;
	assert_int_equal(policy_load(path, &p, &st), KMS_ERR_CONFIG);
	assert_null(p);
	assert_non_null(strstr(st.msg, "No such file"));
	assert_int_equal(rmdir(dir), 0);
	policy_free(NULL);
}

#define D(f) cmocka_unit_test_setup_teardown(f, setup_default, \
    teardown_policy)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		D(test_default_matrix),
		D(test_default_separation_of_duties),
		D(test_default_reasons),
		D(test_default_may_see),
		D(test_whoami),
		cmocka_unit_test(test_deny_by_default),
		cmocka_unit_test(test_globs),
		cmocka_unit_test(test_members_and_allow_lines),
		cmocka_unit_test(test_reason_escaping_and_bounds),
		cmocka_unit_test(test_op_names),
		cmocka_unit_test(test_broken_files),
		cmocka_unit_test(test_load_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
