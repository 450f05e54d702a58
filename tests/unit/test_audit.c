/*
 * test_audit.c: the audit writer (audit.c) and reader/verifier
 * (auditread.c) together, with a software Ed25519 key standing in for
 * the HSM's audit checkpoint key.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <jansson.h>

#include "audit.h"
#include "auditjson.h"
#include "auditjson_ref.h"
#include "auditread.h"
#include "audittree.h"
#include "kmserr.h"

struct fixture {
	char root[64];
	char chain_dir[128];
	EVP_PKEY *key;
	uint8_t *spki;
	size_t spki_len;
	struct audit_signer signer;
	int sign_fail;
};

static int
soft_sign(void *arg, const uint8_t *md, size_t mdlen, uint8_t *sig,
    size_t *siglen)
{
	struct fixture *fx = arg;
	EVP_MD_CTX *ctx;
	int ok;

	if (fx->sign_fail)
		return KMS_ERR_UNAVAILABLE;
	/* PureEdDSA: md is the checkpoint note's text itself. */
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL,
	    fx->key) == 1 && EVP_DigestSign(ctx, sig, siglen, md, mdlen) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : KMS_ERR_HSM;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	uint8_t *p = NULL;
	int len;

	assert_non_null(fx);
	strcpy(fx->root, "/tmp/kms-test-audit.XXXXXX");
	assert_non_null(mkdtemp(fx->root));
	snprintf(fx->chain_dir, sizeof(fx->chain_dir), "%s/c1", fx->root);
	fx->key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(fx->key);
	len = i2d_PUBKEY(fx->key, &p);
	assert_true(len > 0);
	fx->spki = p;
	fx->spki_len = (size_t)len;
	fx->signer.sign = soft_sign;
	fx->signer.arg = fx;
	fx->signer.spki = fx->spki;
	fx->signer.spki_len = fx->spki_len;
	fx->signer.every = 5;
	fx->signer.seconds = 0;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	nftw(fx->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	OPENSSL_free(fx->spki);
	EVP_PKEY_free(fx->key);
	free(fx);
	return 0;
}

static struct audit *
open_chain(struct fixture *fx, size_t segment_max)
{
	struct kms_status st;
	struct audit *a = NULL;

	kms_status_clear(&st);
	if (audit_open(fx->root, "c1", segment_max, &fx->signer, &a,
	    &st) != 0)
		fail_msg("audit_open: %s", st.msg);
	return a;
}

static uint64_t
append(struct audit *a, const char *rpc, const char *identity)
{
	struct audit_event ev;
	uint8_t h[32];
	uint64_t seq = 0;

	memset(&ev, 0, sizeof(ev));
	memset(h, 0xab, sizeof(h));
	ev.identity = identity;
	ev.rpc = rpc;
	ev.key = "release/a";
	ev.version = 1;
	ev.result = "ok";
	ev.status = "OK";
	ev.request_sha256 = h;
	assert_int_equal(audit_append(a, &ev, &seq), 0);
	assert_true(seq > 0);
	return seq;
}

static int
verify_path(const char *path, struct audit_verify_result *res)
{
	struct kms_status st;

	kms_status_clear(&st);
	return audit_verify(path, NULL, res, NULL, NULL, &st);
}

static void
test_chain_verifies_across_segments_and_restarts(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit *a;
	uint64_t seq, last = 0;
	int i, round;

	for (round = 0; round < 3; round++) {
		a = open_chain(fx, 4096);
		for (i = 0; i < 40; i++) {
			seq = append(a, "Sign", "ci");
			assert_true(seq > last);
			last = seq;
		}
		audit_close(a);
	}
	assert_int_equal(verify_path(fx->root, &res), 0);
	assert_true(res.ok);
	assert_int_equal(res.chains, 1);
	/* 120 records, checkpoints every 5 and at each open and close. */
	assert_true(res.checkpoints >= 120 / 5);
	/*
	 * After the last record come the closing checkpoint and, when the
	 * writer was signing one as the chain closed, that one too.
	 */
	assert_true(res.records >= last + 1 && res.records <= last + 2);
	/* A clean close leaves nothing outside a checkpoint. */
	assert_int_equal(res.unsigned_tail, 0);
}

/* Rewrites line n (1-based) of file with repl, or deletes it (repl NULL). */
static void
edit_line(const char *file, int n, const char *repl)
{
	char *buf = NULL, *out, *p, *nl;
	size_t len = 0, olen = 0;
	FILE *f;
	int line = 1;

	f = fopen(file, "r");
	assert_non_null(f);
	assert_int_not_equal(getdelim(&buf, &len, '\0', f), -1);
	fclose(f);
	out = calloc(1, strlen(buf) + (repl ? strlen(repl) : 0) + 2);
	for (p = buf; *p != '\0'; p = nl + 1, line++) {
		nl = strchr(p, '\n');
		assert_non_null(nl);
		if (line == n) {
			if (repl != NULL)
				olen += (size_t)sprintf(out + olen, "%s\n",
				    repl);
			continue;
		}
		memcpy(out + olen, p, (size_t)(nl - p) + 1);
		olen += (size_t)(nl - p) + 1;
	}
	f = fopen(file, "w");
	fwrite(out, 1, olen, f);
	fclose(f);
	free(out);
	free(buf);
}

static void
first_segment(struct fixture *fx, char *path, size_t len)
{
	snprintf(path, len, "%s/%020d.jsonl", fx->chain_dir, 1);
}

/*
 * The chain continues after a crash from a segment far larger than the
 * tail window read at start, whose last record is near the line limit
 * and is followed by a torn write, so that the window has to grow.
 */
static void
test_tail_of_a_long_segment(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit_event ev;
	struct audit *a;
	char path[256], *detail;
	uint64_t seq = 0, last = 0;
	size_t blob = AUDIT_LINE_MAX - 1024;
	pid_t pid;
	FILE *f;
	int i, wst;

	detail = malloc(blob + 32);
	assert_non_null(detail);
	memcpy(detail, "{\"blob\":\"", 9);
	memset(detail + 9, 'x', blob);
	strcpy(detail + 9 + blob, "\"}");
	if ((pid = fork()) == 0) {
		/* A kmsd that dies without closing its chain. */
		a = open_chain(fx, 64 * 1024 * 1024);
		for (i = 0; i < 2000; i++)
			append(a, "Sign", "ci");
		memset(&ev, 0, sizeof(ev));
		ev.identity = "ci";
		ev.rpc = "Sign";
		ev.result = "ok";
		ev.status = "OK";
		ev.detail_json = detail;
		_exit(audit_append(a, &ev, &seq) == 0 ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	first_segment(fx, path, sizeof(path));
	f = fopen(path, "a");
	assert_non_null(f);
	fputs("{\"seq\":99999,\"torn", f);
	for (i = 0; i < 10 * 1024; i++)
		fputc('y', f);
	fclose(f);
	a = open_chain(fx, 64 * 1024 * 1024);
	last = append(a, "Sign", "ci");
	audit_close(a);
	free(detail);
	/* 2001 records and the opening checkpoints come before it. */
	assert_true(last > 2001);
	assert_int_equal(verify_path(fx->root, &res), 0);
	assert_true(res.ok);
	assert_int_equal(res.records, last + 1);
}

static void
test_changed_record_is_named(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit *a;
	char seg[256];
	int i;

	a = open_chain(fx, 1 << 20);
	for (i = 0; i < 10; i++)
		append(a, "Sign", "ci");
	audit_close(a);
	first_segment(fx, seg, sizeof(seg));
	/* Delete line 4: the record that follows names what is missing. */
	edit_line(seg, 4, NULL);
	assert_int_equal(verify_path(fx->chain_dir, &res), 0);
	assert_false(res.ok);
	assert_string_equal(res.file, seg);
	assert_int_equal(res.line, 4);
	assert_int_equal(res.seq, 5);
	assert_non_null(strstr(res.why, "missing"));
}

static void
test_bad_json_and_foreign_chain(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit *a;
	char seg[256];
	int i;

	a = open_chain(fx, 1 << 20);
	for (i = 0; i < 3; i++)
		append(a, "Sign", "ci");
	audit_close(a);
	first_segment(fx, seg, sizeof(seg));
	edit_line(seg, 2, "{\"seq\":2,\"seq\":2}");
	assert_int_equal(verify_path(fx->chain_dir, &res), 0);
	assert_false(res.ok);
	assert_int_equal(res.line, 2);
	assert_non_null(strstr(res.why, "JSON"));
}

static void
test_unreadable_path_is_an_error(void **state)
{
	struct audit_verify_result res;
	struct kms_status st;

	(void)state;
	kms_status_clear(&st);
	assert_int_not_equal(audit_verify("/nonexistent/audit", NULL, &res,
	    NULL, NULL, &st), 0);
	assert_non_null(strstr(st.msg, "/nonexistent/audit"));
}

struct list_ctx {
	uint64_t seqs[64];
	size_t n;
};

static int
collect(const struct audit_record *rec, void *arg)
{
	struct list_ctx *l = arg;

	if (l->n == 64)
		return -1;
	l->seqs[l->n++] = rec->seq;
	assert_non_null(rec->line);
	return 0;
}

static void
test_list_pages_and_filters(void **state)
{
	struct fixture *fx = *state;
	struct audit_filter f;
	struct list_ctx l;
	struct kms_status st;
	struct audit *a;
	uint64_t next, after = 0, total = 0;
	int i;

	a = open_chain(fx, 4096);
	for (i = 0; i < 30; i++)
		append(a, i % 3 == 0 ? "Verify" : "Sign", i % 2 ? "ci" : "x");
	audit_close(a);
	memset(&f, 0, sizeof(f));
	do {
		memset(&l, 0, sizeof(l));
		assert_int_equal(audit_list(fx->chain_dir, after, 7, 1000, &f,
		    collect, &l, &next, &st), 0);
		assert_true(l.n <= 7);
		for (i = 0; i < (int)l.n; i++)
			assert_int_equal(l.seqs[i], after + 1 + (uint64_t)i);
		total += l.n;
		after = next;
	} while (l.n > 0);
	assert_true(total >= 30);
	/* Only the 10 Verify records. */
	f.rpc = "Verify";
	memset(&l, 0, sizeof(l));
	assert_int_equal(audit_list(fx->chain_dir, 0, 64, 1000, &f, collect,
	    &l, &next, &st), 0);
	assert_int_equal(l.n, 10);
	f.rpc = NULL;
	f.time_from = "not a time";
	assert_int_equal(audit_list(fx->chain_dir, 0, 64, 1000, &f, collect,
	    &l, &next, &st), KMS_ERR_INVALID_ARGUMENT);
	f.time_from = "2999-01-01T00:00:00Z";
	memset(&l, 0, sizeof(l));
	assert_int_equal(audit_list(fx->chain_dir, 0, 64, 1000, &f, collect,
	    &l, &next, &st), 0);
	assert_int_equal(l.n, 0);
}

static void
test_failed_write_fails_closed_and_recovers(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit_event ev;
	struct rlimit old, rl;
	struct audit *a;
	uint64_t seq, before;

	a = open_chain(fx, 1 << 20);
	before = append(a, "Sign", "ci");
	/* A file size limit makes the next write fail (EFBIG), as ENOSPC would. */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	rl = old;
	rl.rlim_cur = 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
	memset(&ev, 0, sizeof(ev));
	ev.identity = "ci";
	ev.rpc = "Sign";
	ev.result = "ok";
	ev.status = "OK";
	assert_int_equal(audit_append(a, &ev, &seq), KMS_ERR_AUDIT);
	assert_int_equal(seq, 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	/* The failed record left nothing behind; the chain goes on. */
	seq = append(a, "Sign", "ci");
	assert_true(seq > before);
	audit_close(a);
	assert_int_equal(verify_path(fx->root, &res), 0);
	assert_true(res.ok);
}

static void
test_checkpoint_signing_failure_refuses_records(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	struct audit_event ev;
	struct audit *a;
	uint64_t seq;
	int i, r = 0;

	a = open_chain(fx, 1 << 20);
	fx->sign_fail = 1;
	memset(&ev, 0, sizeof(ev));
	ev.identity = "ci";
	ev.rpc = "Sign";
	ev.result = "ok";
	ev.status = "OK";
	/*
	 * The writer may lag one interval (`every` records) behind: two
	 * intervals go in, the record after them needs a checkpoint first
	 * and cannot have one.
	 */
	for (i = 0; i < 11 && r == 0; i++)
		r = audit_append(a, &ev, &seq);
	assert_int_equal(i, 11);
	assert_int_equal(r, KMS_ERR_AUDIT);
	fx->sign_fail = 0;
	append(a, "Sign", "ci");
	audit_close(a);
	assert_int_equal(verify_path(fx->root, &res), 0);
	assert_true(res.ok);
}

struct thr {
	struct audit *a;
	uint64_t seqs[200];
};

static void *
appender(void *arg)
{
	struct thr *t = arg;
	struct audit_event ev;
	int i;

	memset(&ev, 0, sizeof(ev));
	ev.identity = "ci";
	ev.rpc = "Sign";
	ev.result = "ok";
	ev.status = "OK";
	for (i = 0; i < 200; i++)
		if (audit_append(t->a, &ev, &t->seqs[i]) != 0)
			t->seqs[i] = 0;
	return NULL;
}

static void
test_group_commit_concurrent_appends(void **state)
{
	struct fixture *fx = *state;
	struct audit_verify_result res;
	static struct thr t[8];
	pthread_t th[8];
	static uint8_t seen[2000];
	struct audit *a;
	int i, j;

	a = open_chain(fx, 16384);
	for (i = 0; i < 8; i++) {
		t[i].a = a;
		assert_int_equal(pthread_create(&th[i], NULL, appender,
		    &t[i]), 0);
	}
	for (i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	audit_close(a);
	memset(seen, 0, sizeof(seen));
	for (i = 0; i < 8; i++)
		for (j = 0; j < 200; j++) {
			assert_true(t[i].seqs[j] > 0 &&
			    t[i].seqs[j] < sizeof(seen));
			assert_int_equal(seen[t[i].seqs[j]], 0);
			seen[t[i].seqs[j]] = 1;
		}
	assert_int_equal(verify_path(fx->root, &res), 0);
	assert_true(res.ok);
	assert_true(res.records >= 1600);
}

static void
test_chain_is_locked(void **state)
{
	struct fixture *fx = *state;
	struct kms_status st;
	struct audit *a, *b = NULL;

	a = open_chain(fx, 1 << 20);
	kms_status_clear(&st);
	assert_int_equal(audit_open(fx->root, "c1", 1 << 20, NULL, &b, &st),
	    KMS_ERR_ALREADY_EXISTS);
	assert_null(b);
	audit_close(a);
}

static void
test_parse_time(void **state)
{
	int64_t t;

	(void)state;
	assert_int_equal(audit_parse_time("1970-01-01T00:00:01Z", &t), 0);
	assert_int_equal(t, 1000000);
	assert_int_equal(audit_parse_time("1970-01-01T00:00:01.5Z", &t), 0);
	assert_int_equal(t, 1500000);
	assert_int_equal(audit_parse_time("1970-01-01T00:00:01.000002Z", &t),
	    0);
	assert_int_equal(t, 1000002);
	assert_int_not_equal(audit_parse_time("1970-01-01T00:00:01", &t), 0);
	assert_int_not_equal(audit_parse_time("1970-01-01T00:00:01.Z", &t), 0);
	assert_int_not_equal(audit_parse_time("1970-01-01T00:00:01.1234567Z",
	    &t), 0);
	assert_int_not_equal(audit_parse_time("yesterday", &t), 0);
}

/*
 * The audit record's encoder (auditjson.c) against jansson, which wrote
 * the log before it: the same object must give the same bytes, and a
 * string jansson refuses must be refused.
 */
static char *
jansson_quote(const char *s)
{
	json_t *v;
	char *out;

	if ((v = json_string(s)) == NULL)
		return NULL;
	out = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
	json_decref(v);
	return out;
}

/* Both texts the same, or both refused; frees them. */
static void
assert_same_text(char *a, char *b)
{
	if (b == NULL)
		assert_null(a);
	else {
		assert_non_null(a);
		assert_string_equal(a, b);
	}
	free(a);
	free(b);
}

static void
assert_same_quote(const char *s)
{
	assert_same_text(auditjson_quote(s), jansson_quote(s));
}

static const char *const tricky[] = {
	"", "plain", "quote\" and \\ backslash", "slash / stays",
	"\b\f\n\r\t", "\x01\x02\x1f\x7f", "caf\xc3\xa9", "\xe2\x82\xac euro",
	"\xf0\x9f\x94\x91 key", "\xf4\x8f\xbf\xbf", "\xef\xbb\xbf bom",
	"\xed\x9f\xbf", "\xee\x80\x80",
	/* Refused by json_string(): */
	"\xc3", "\xc0\x80", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80",
	"\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\x80",
	"ok\xbf", "\xe2\x82", "\xff",
};

static void
test_record_encoder_matches_jansson(void **state)
{
	static const uint8_t digest[32] = { 0x00, 0x01, 0xab, 0xff, 0x10 };
	struct auditjson_head h = { 18446744073709551615ULL / 2,
	    "2026-12-04T21:00:00.000001Z", "127.0.0.1_7443",
	    "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff" };
	struct audit_event ev;
	unsigned char buf[24];
	json_t *cp;
	size_t i, j, n;
	unsigned int seed = 1;

	(void)state;
	for (i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++)
		assert_same_quote(tricky[i]);
	/* Random bytes: the valid UTF-8 among them and the invalid. */
	for (i = 0; i < 20000; i++) {
		n = (size_t)(rand_r(&seed) % (sizeof(buf) - 1));
		for (j = 0; j < n; j++) {
			do
				buf[j] = (unsigned char)rand_r(&seed);
			while (buf[j] == 0);
			/* Mostly UTF-8 lead and continuation bytes. */
			if (rand_r(&seed) % 2)
				buf[j] |= 0x80;
		}
		buf[n] = '\0';
		assert_same_quote((const char *)buf);
	}

	cp = json_pack("{s:s}", "note", "kms/x\n42\nQUJD\n\n\xe2\x80\x94 kms "
	    "c2lnbmF0dXJl\n");
	assert_non_null(cp);
	for (i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
		memset(&ev, 0, sizeof(ev));
		ev.identity = tricky[i];
		ev.fingerprint = i % 2 ? NULL : "ab";
		ev.peer = "ipv6:[::1]:5000";
		ev.rpc = "Sign";
		ev.key = i % 3 ? tricky[(i + 1) %
		    (sizeof(tricky) / sizeof(tricky[0]))] : NULL;
		ev.version = (uint32_t)(i % 4 == 0 ? 0 : i == 5 ? 4294967295u :
		    i);
		ev.result = "denied";
		ev.status = "PERMISSION_DENIED";
		ev.reason = i % 2 ? "no rule \"allows\" it\n" : NULL;
		ev.request_sha256 = i % 2 ? digest : NULL;
		ev.detail_json = i % 4 == 1 ? "{ \"b\" : 1.5e3, \"a\": "
		    "[true, null, \"\\u00e9\\/\"], \"c\": {} }" :
		    i % 4 == 3 ? "{\"cert_chain\":\"x\"}" : NULL;
		h.seq = i;
		assert_same_text(auditjson_record(&h, &ev, i % 5 == 2 ? cp :
		    NULL), jansson_record(&h, &ev, i % 5 == 2 ? cp : NULL));
	}
	/* Bad detail text is refused by both. */
	memset(&ev, 0, sizeof(ev));
	ev.rpc = "Sign";
	ev.detail_json = "{\"a\":";
	assert_null(auditjson_record(&h, &ev, NULL));
	json_decref(cp);
}

/*
 * The tree's nodes wait in memory until a flush (the writer flushes
 * before each checkpoint): then every completed node is in its file and
 * the root read from the files is the writer's.
 */
static void
test_tree_nodes_written_at_flush(void **state)
{
	struct fixture *fx = *state;
	struct audit_tree *t = NULL;
	struct kms_status st;
	uint8_t leaf[MERKLE_HASH_LEN], got[MERKLE_HASH_LEN];
	uint8_t root[MERKLE_HASH_LEN], want[MERKLE_HASH_LEN];
	char line[32];
	int i, n;

	assert_int_equal(mkdir(fx->chain_dir, 0700), 0);
	kms_status_clear(&st);
	assert_int_equal(audit_tree_open(fx->chain_dir, &t, &st), 0);
	for (i = 0; i < 7; i++) {
		n = snprintf(line, sizeof(line), "{\"seq\":%d}", i);
		assert_int_equal(audit_tree_add(t, line, (size_t)n), 0);
	}
	/* 7 leaves, 3 nodes above them, 1 above those. */
	assert_int_equal(audit_tree_pending(t), 11 * MERKLE_HASH_LEN);
	assert_int_not_equal(audit_tree_node(fx->chain_dir, 0, 0, got), 0);
	assert_int_equal(audit_tree_flush(t), 0);
	assert_int_equal(audit_tree_pending(t), 0);
	n = snprintf(line, sizeof(line), "{\"seq\":%d}", 6);
	merkle_leaf_hash(line, (size_t)n, leaf);
	assert_int_equal(audit_tree_node(fx->chain_dir, 0, 6, got), 0);
	assert_memory_equal(got, leaf, MERKLE_HASH_LEN);
	assert_int_equal(audit_tree_node(fx->chain_dir, 2, 0, got), 0);
	audit_tree_root(t, want);
	assert_int_equal(merkle_root(audit_tree_node, fx->chain_dir, 7, root),
	    0);
	assert_memory_equal(root, want, MERKLE_HASH_LEN);
	/* One more leaf: in memory only until the next flush. */
	assert_int_equal(audit_tree_add(t, "x", 1), 0);
	assert_int_not_equal(audit_tree_node(fx->chain_dir, 0, 7, got), 0);
	assert_int_equal(audit_tree_flush(t), 0);
	assert_int_equal(audit_tree_node(fx->chain_dir, 3, 0, got), 0);
	audit_tree_close(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_chain_verifies_across_segments_and_restarts, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_changed_record_is_named,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_json_and_foreign_chain,
		    setup, teardown),
		cmocka_unit_test(test_unreadable_path_is_an_error),
		cmocka_unit_test_setup_teardown(test_list_pages_and_filters,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_failed_write_fails_closed_and_recovers, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_checkpoint_signing_failure_refuses_records, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_group_commit_concurrent_appends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_is_locked, setup,
		    teardown),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_record_encoder_matches_jansson),
		cmocka_unit_test_setup_teardown(test_tail_of_a_long_segment,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_tree_nodes_written_at_flush, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
