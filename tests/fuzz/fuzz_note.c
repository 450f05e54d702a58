/*
 * fuzz_note.c: libFuzzer target for the signed-note and checkpoint parsers
 * (note_parse, checkpoint_parse, note_vkey_parse) and the signature check
 * that follows them.  Nothing may crash, leak or read out of bounds, and
 * no note may verify under the reference key unless it holds the
 * reference signature.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "note.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char peter_vkey[] =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct note n;
	struct checkpoint cp;
	uint8_t pub[NOTE_ED25519_LEN];
	char name[NOTE_NAME_MAX + 1], *s;

	if (size > NOTE_MAX || (s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (note_parse(s, size, &n) == 0) {
		if (checkpoint_parse(n.text, n.text_len, &cp) == 0 &&
		    cp.origin[0] == '\0')
			abort();
		if (note_vkey_parse(peter_vkey, name, sizeof(name), pub) != 0)
			abort();
		(void)note_verify(&n, name, pub);
	}
	if (note_vkey_parse(s, name, sizeof(name), pub) == 0 &&
	    strlen(name) == 0)
		abort();
	(void)checkpoint_parse(s, size, &cp);
	free(s);
	return 0;
}
