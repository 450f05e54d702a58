/*
 * test_note.c: C2SP signed notes and checkpoints (note.c).
 *
 * The known answers are the Go reference's, golang.org/x/mod
 * sumdb/note/note_test.go (BSD-style licence, The Go Authors): the keys
 * of "PeterNeumann" and "EnochRoot", the signed text and both signatures,
 * the manglings of a verifier key that must fail, and the malformed
 * notes that must be refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "note.h"

static const char peter_vkey[] =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
static const char peter_skey_b64[] =
    "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
static const char enoch_vkey[] =
    "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
static const char text[] =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n";
static const char peter_sig[] = "\xe2\x80\x94 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
static const char enoch_sig[] = "\xe2\x80\x94 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

static void
test_vkey(void **state)
{
	uint8_t pub[NOTE_ED25519_LEN];
	char name[64], buf[128], *m;
	size_t i, j, len = strlen(peter_vkey);

	(void)state;
	assert_int_equal(note_vkey_parse(peter_vkey, name, sizeof(name), pub),
	    0);
	assert_string_equal(name, "PeterNeumann");
	assert_int_equal(note_key_id(name, pub), 0xc74f20a3);
	assert_int_equal(note_vkey(name, pub, buf, sizeof(buf)), (int)len);
	assert_string_equal(buf, peter_vkey);
	/* Every proper substring and every byte changed is refused. */
	m = strdup(peter_vkey);
	assert_non_null(m);
	for (i = 0; i <= len; i++)
		for (j = i + 1; j <= len; j++) {
			if (i == 0 && j == len)
				continue;
			memcpy(m, peter_vkey + i, j - i);
			m[j - i] = '\0';
			assert_int_not_equal(note_vkey_parse(m, name,
			    sizeof(name), pub), 0);
		}
	for (i = 0; i < len; i++) {
		strcpy(m, peter_vkey);
		m[i]++;
		assert_int_not_equal(note_vkey_parse(m, name, sizeof(name),
		    pub), 0);
	}
	free(m);
	/* Wrong length with adjusted hash; unknown algorithm. */
	assert_int_not_equal(note_vkey_parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
	    name, sizeof(name), pub), 0);
	assert_int_not_equal(note_vkey_parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
	    name, sizeof(name), pub), 0);
}

/* Signing the reference text with the reference seed gives its note. */
static void
test_sign(void **state)
{
	uint8_t raw[40], pub[NOTE_ED25519_LEN], sig[64];
	char name[64], line[256];
	EVP_PKEY *pk;
	EVP_MD_CTX *c;
	size_t siglen = sizeof(sig);

	(void)state;
	assert_int_equal(note_b64_decode(peter_skey_b64,
	    strlen(peter_skey_b64), raw, sizeof(raw)), 33);
	assert_int_equal(raw[0], NOTE_ALG_ED25519);
	assert_non_null(pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519,
	    NULL, raw + 1, 32));
	assert_non_null(c = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestSignInit(c, NULL, NULL, NULL, pk), 1);
	assert_int_equal(EVP_DigestSign(c, sig, &siglen,
	    (const uint8_t *)text, strlen(text)), 1);
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(pk);
	assert_int_equal(note_vkey_parse(peter_vkey, name, sizeof(name), pub),
	    0);
	assert_int_equal(note_sig_line(name, note_key_id(name, pub), sig,
	    siglen, line, sizeof(line)), (int)strlen(peter_sig));
	assert_string_equal(line, peter_sig);
	assert_int_equal(note_sig_line("a+b", 1, sig, siglen, line,
	    sizeof(line)), -1);
}

static void
test_open(void **state)
{
	static struct note n;
	uint8_t peter[32], enoch[32];
	char name[64], msg[NOTE_MAX], *big;
	size_t i;

	(void)state;
	assert_int_equal(note_vkey_parse(peter_vkey, name, sizeof(name),
	    peter), 0);
	assert_int_equal(note_vkey_parse(enoch_vkey, name, sizeof(name),
	    enoch), 0);
	snprintf(msg, sizeof(msg), "%s\n%s%s", text, peter_sig, enoch_sig);
	assert_int_equal(note_parse(msg, strlen(msg), &n), 0);
	assert_int_equal(n.text_len, strlen(text));
	assert_memory_equal(n.text, text, strlen(text));
	assert_int_equal(n.nsigs, 2);
	assert_int_equal(n.sigs[0].key_id, 0xc74f20a3);
	assert_int_equal(n.sigs[1].key_id, 0xaf0cfe78);
	assert_int_equal(note_verify(&n, "PeterNeumann", peter), 0);
	assert_int_equal(note_verify(&n, "EnochRoot", enoch), 0);
	/* A key that signed nothing; the right key under another name. */
	assert_int_equal(note_verify(&n, "PeterNeumann", enoch), -1);
	assert_int_equal(note_verify(&n, "CarmenSandiego", peter), -1);
	/* An invalid signature: "ABCD" spliced in at byte 60. */
	snprintf(msg, sizeof(msg), "%s\n%.60sABCD%s", text, peter_sig,
	    peter_sig + 60);
	assert_int_equal(note_parse(msg, strlen(msg), &n), 0);
	assert_int_equal(note_verify(&n, "PeterNeumann", peter), -2);
	/* Malformed notes. */
	const char *bad[] = { "text-only", "text-nl", "sig-no-nl", "ctl",
	    "ff", "bad-name", "unexpected" };
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		switch (i) {
		case 0:
			snprintf(msg, sizeof(msg), "%s", text);
			break;
		case 1:
			snprintf(msg, sizeof(msg), "%s\n", text);
			break;
		case 2:
			snprintf(msg, sizeof(msg), "%s\n%.*s", text,
			    (int)strlen(peter_sig) - 1, peter_sig);
			break;
		case 3:
			snprintf(msg, sizeof(msg), "\x01%s\n%s", text,
			    peter_sig);
			break;
		case 4:
			snprintf(msg, sizeof(msg), "\xff%s\n%s", text,
			    peter_sig);
			break;
		case 5:
			snprintf(msg, sizeof(msg), "%s\n\xe2\x80\x94 Bad Name "
			    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
			    text);
			break;
		default:
			snprintf(msg, sizeof(msg), "%s\n%sUnexpected line.\n",
			    text, peter_sig);
		}
		assert_int_equal(note_parse(msg, strlen(msg), &n), -1);
	}
	/* More than 100 signatures. */
	assert_non_null(big = malloc(strlen(text) + 1 +
	    101 * strlen(peter_sig) + 1));
	strcpy(big, text);
	strcat(big, "\n");
	for (i = 0; i < 101; i++)
		strcat(big, peter_sig);
	assert_int_equal(note_parse(big, strlen(big), &n), -1);
	free(big);
}

static void
test_checkpoint(void **state)
{
	struct checkpoint cp;
	uint8_t root[32];
	char buf[256];
	const char *bad[] = {
		"", "kms/a\n", "kms/a\n5\n", "\n5\nAAAA\n",
		"kms/a\n05\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"kms/a\n-5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"kms/a\n18446744073709551616\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"kms/a\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n",
		"kms/a\n5\nAAAA\n",
		"kms/a\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
		"kms/a\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
	};
	size_t i;
	int n;

	(void)state;
	memset(root, 0xab, sizeof(root));
	n = checkpoint_text("kms/127.0.0.1_7443", 18446744073709551615u, root,
	    buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(checkpoint_parse(buf, (size_t)n, &cp), 0);
	assert_string_equal(cp.origin, "kms/127.0.0.1_7443");
	assert_true(cp.size == UINT64_MAX);
	assert_memory_equal(cp.root, root, 32);
	strcat(buf, "extension line\n");
	assert_int_equal(checkpoint_parse(buf, strlen(buf), &cp), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(checkpoint_parse(bad[i], strlen(bad[i]), &cp),
		    -1);
	/* Base64 is strict: no non-zero unused bits, no stray bytes. */
	assert_int_equal(note_b64_decode("AB==", 4, root, 32), -1);
	assert_int_equal(note_b64_decode("AA==", 4, root, 32), 1);
	assert_int_equal(note_b64_decode("AA=A", 4, root, 32), -1);
	assert_int_equal(note_b64_decode("A A=", 4, root, 32), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vkey),
		cmocka_unit_test(test_sign),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_checkpoint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
