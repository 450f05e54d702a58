/*
 * names.c: the key-name and chain-name grammars and signing-input checks
 * (see names.h).
 */
#include <stddef.h>
#include <string.h>

#include "algo.h"
#include "kmserr.h"
#include "names.h"

static int
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

int
names_check_key(const char *name, struct kms_status *st)
{
	size_t i, len, seg;

	if (name == NULL || (len = strlen(name)) == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "key name is empty");
	if (len > KMS_KEY_NAME_MAX)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "key name is %zu bytes, at most %d are allowed", len,
		    KMS_KEY_NAME_MAX);
	if (!is_alnum(name[0]))
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "key name must start with a letter or digit");
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!is_alnum(c) && c != '.' && c != '_' && c != '/' &&
		    c != '-')
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "key name has a character outside "
			    "[A-Za-z0-9._/-] at byte %zu", i + 1);
	}
	if (name[len - 1] == '/')
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "key name must not end with '/'");
	/* Every segment between slashes: not empty, not "." or "..". */
	for (i = 0; i < len; i = seg + 1) {
		const char *s = name + i;
		const char *e = strchr(s, '/');

		seg = e == NULL ? len : (size_t)(e - name);
		if (seg == i)
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "key name must not contain \"//\"");
		if ((seg - i == 1 && s[0] == '.') ||
		    (seg - i == 2 && s[0] == '.' && s[1] == '.'))
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "key name must not have a \".\" or \"..\" "
			    "segment");
	}
	return 0;
}

static int
is_plain(char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '-';
}

int
names_is_plain(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!is_plain(p[i]))
			return 0;
	return 1;
}

int
names_check_chain(const char *chain, struct kms_status *st)
{
	size_t len = chain == NULL ? 0 : strlen(chain);

	if (len == 0 || len > KMS_CHAIN_NAME_MAX || chain[0] == '.' ||
	    !names_is_plain(chain, len))
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "bad chain name: use the name of a directory under the "
		    "audit directory, e.g. 127.0.0.1_7443");
	return 0;
}

void
names_chain_from(const char *s, char *out, size_t len)
{
	size_t i;

	if (len == 0)
		return;
	if (len > KMS_CHAIN_NAME_MAX + 1)
		len = KMS_CHAIN_NAME_MAX + 1;
	for (i = 0; s[i] != '\0' && i + 1 < len; i++)
		out[i] = is_plain(s[i]) && !(i == 0 && s[i] == '.') ? s[i] :
		    '_';
	out[i] = '\0';
}

int
names_check_sign_input(const struct kms_alg_info *alg, size_t digest_len,
    size_t data_len, size_t max_data, struct kms_status *st)
{
	size_t n;

	if (alg == NULL)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "unknown key algorithm");
	if (!alg->can_sign)
		return kms_status_set(st, KMS_ERR_FAILED_PRECONDITION,
		    "a %s key cannot sign or verify", alg->name);
	if (digest_len > 0 && data_len > 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "set either digest or data, not both");
	if (digest_len == 0 && data_len == 0)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "set digest or data (neither was given)");
	if (alg->family == KMS_FAMILY_RSA_RAW) {
		n = digest_len > 0 ? digest_len : data_len;
		if (n > alg->max_raw_len)
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "%s signs at most %zu bytes, %zu were given",
			    alg->name, alg->max_raw_len, n);
		return 0;
	}
	if (digest_len > 0) {
		if (alg->digest_len == 0)
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "%s signs the message itself: send data, not a "
			    "digest", alg->name);
		if (digest_len != alg->digest_len)
			return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
			    "digest is %zu bytes, %s needs %zu", digest_len,
			    alg->name, alg->digest_len);
		return 0;
	}
	if (data_len > max_data)
		return kms_status_set(st, KMS_ERR_INVALID_ARGUMENT,
		    "data is %zu bytes, at most %zu are accepted (send a "
		    "digest instead)", data_len, max_data);
	return 0;
}
