/*
 * keymeta.c: the metadata document of a key (see keymeta.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "keymeta.h"
#include "kmserr.h"

char *
km_encode(const struct km_key *k)
{
	json_t *o = NULL, *vs = NULL, *v;
	char *s = NULL;
	size_t i;

	if ((o = json_object()) == NULL || (vs = json_array()) == NULL)
		goto out;
	for (i = 0; i < k->nv; i++) {
		v = json_pack("{s:I,s:s,s:I,s:I,s:s}",
		    "version", (json_int_t)k->v[i].version,
		    "state", kms_state_name(k->v[i].state),
		    "create_time", (json_int_t)k->v[i].create_time,
		    "destroy_time", (json_int_t)k->v[i].destroy_time,
		    "label", k->v[i].label);
		if (v == NULL || json_array_append_new(vs, v) != 0)
			goto out;
		if (k->v[i].chain != NULL && json_object_set_new(v,
		    "cert_chain", json_string(k->v[i].chain)) != 0)
			goto out;
	}
	if (json_object_set_new(o, "format", json_integer(KM_FORMAT)) ||
	    json_object_set_new(o, "seq", json_integer((json_int_t)k->seq)) ||
	    json_object_set_new(o, "name", json_string(k->name)) ||
	    json_object_set_new(o, "algorithm", json_string(k->alg->name)) ||
	    json_object_set_new(o, "primary", json_integer(k->primary)) ||
	    json_object_set_new(o, "rotation_period",
	    json_integer(k->rotation_period)) ||
	    json_object_set_new(o, "create_time",
	    json_integer(k->create_time)) ||
	    json_object_set(o, "versions", vs))
		goto out;
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
 out:
	json_decref(vs);
	json_decref(o);
	return s;
}

int
km_decode(const char *text, size_t len, struct km_key *k,
    struct kms_status *st)
{
	json_t *o = NULL, *vs, *v;
	json_error_t jerr;
	const char *name, *alg, *state, *label, *chain;
	json_int_t format, primary, period, ctime, ver, vctime, dtime, seq = 0;
	size_t i;
	int r = KMS_ERR_CONFIG;

	memset(k, 0, sizeof(*k));
	if ((o = json_loadb(text, len, 0, &jerr)) == NULL) {
		kms_status_set(st, r, "metadata is not JSON: %s", jerr.text);
		goto out;
	}
	if (json_unpack_ex(o, &jerr, 0, "{s:I,s?I,s:s,s:s,s:I,s:I,s:I,s:o}",
	    "format", &format, "seq", &seq, "name", &name, "algorithm", &alg,
	    "primary", &primary, "rotation_period", &period,
	    "create_time", &ctime, "versions", &vs) != 0) {
		kms_status_set(st, r, "metadata: %s", jerr.text);
		goto out;
	}
	if (format != KM_FORMAT || !json_is_array(vs) || seq < 0 ||
	    json_array_size(vs) == 0 ||
	    json_array_size(vs) > KS_MAX_VERSIONS ||
	    strlen(name) > KMS_KEY_NAME_MAX) {
		kms_status_set(st, r, "metadata: unsupported format or size");
		goto out;
	}
	if ((k->v = calloc(json_array_size(vs), sizeof(*k->v))) == NULL) {
		r = kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
		goto out;
	}
	strcpy(k->name, name);
	if ((k->alg = kms_alg_by_name(alg)) == NULL) {
		kms_status_set(st, r, "metadata: unknown algorithm");
		goto out;
	}
	k->seq = (uint64_t)seq;
	k->primary = (uint32_t)primary;
	k->rotation_period = period;
	k->create_time = ctime;
	json_array_foreach(vs, i, v) {
		chain = NULL;
		if (json_unpack_ex(v, &jerr, 0, "{s:I,s:s,s:I,s:I,s:s,s?s}",
		    "version", &ver, "state", &state, "create_time", &vctime,
		    "destroy_time", &dtime, "label", &label, "cert_chain",
		    &chain) != 0 ||
		    (chain != NULL && strlen(chain) > KM_CHAIN_MAX) ||
		    ver <= 0 || ver > UINT32_MAX ||
		    strlen(label) >= KM_LABEL_MAX ||
		    (i > 0 && (uint32_t)ver <= k->v[i - 1].version) ||
		    (k->v[i].state = (enum ks_state)kms_state_by_name(state)) == 0) {
			kms_status_set(st, r, "metadata: bad version entry");
			goto out;
		}
		k->v[i].version = (uint32_t)ver;
		k->v[i].create_time = vctime;
		k->v[i].destroy_time = dtime;
		strcpy(k->v[i].label, label);
		k->nv++;
		if (chain != NULL && (k->v[i].chain = strdup(chain)) == NULL) {
			kms_status_set(st, KMS_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	if (km_version(k, k->primary) == NULL) {
		kms_status_set(st, r, "metadata: primary version missing");
		goto out;
	}
	r = 0;
 out:
	if (r != 0)
		km_clear(k);
	json_decref(o);
	return r;
}

void
km_clear(struct km_key *k)
{
	size_t i;

	for (i = 0; i < k->nv && k->v != NULL; i++)
		free(k->v[i].chain);
	free(k->v);
	k->v = NULL;
	k->nv = 0;
}

struct km_version *
km_version(const struct km_key *k, uint32_t version)
{
	size_t i;

	for (i = 0; i < k->nv; i++)
		if (k->v[i].version == version)
			return &k->v[i];
	return NULL;
}

int
km_version_label(const char *name, uint32_t version, char *label,
    size_t size)
{
	uint8_t rnd[8];
	size_t i, j;

	i = (size_t)snprintf(label, size, "%s#%u#", name, version);
	if (i + 2 * sizeof(rnd) >= size || RAND_bytes(rnd, sizeof(rnd)) != 1)
		return KMS_ERR_INTERNAL;
	for (j = 0; j < sizeof(rnd); j++, i += 2)
		snprintf(label + i, 3, "%02x", rnd[j]);
	return 0;
}
