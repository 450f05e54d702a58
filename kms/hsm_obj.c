/*
 * hsm_obj.c: the objects of the token (see hsm.h): searches, listings,
 * data objects, labels, public-key attributes, destruction.  Every
 * function takes the store lock (struct hsm) around its own calls.
 */
#include <stdlib.h>
#include <string.h>

#include "hsm.h"
#include "hsm_int.h"
#include "kmserr.h"
#include "log.h"

static CK_OBJECT_CLASS
p11_class(enum hsm_obj_class cls)
{
	switch (cls) {
	case HSM_OBJ_PRIVATE_KEY:
		return CKO_PRIVATE_KEY;
	case HSM_OBJ_PUBLIC_KEY:
		return CKO_PUBLIC_KEY;
	case HSM_OBJ_SECRET_KEY:
		return CKO_SECRET_KEY;
	default:
		return CKO_DATA;
	}
}

/*
 * Runs the search tpl: at most max handles in out (NULL: into a malloc'd
 * *all of any size), their number in *n.  No other call may run inside
 * a search, so the handles come first.  Called with the store lock.
 */
static int
search_locked(struct hsm_session *s, CK_ATTRIBUTE *tpl, CK_ULONG nt,
    hsm_handle_t *out, size_t max, size_t *n, CK_OBJECT_HANDLE **all)
{
	CK_OBJECT_HANDLE batch[256], *na;
	CK_ULONG got = 0, i;
	size_t cap = 0;
	int r = 0;
	CK_RV rv;

	*n = 0;
	P11_CALL(s, rv = s->hsm->f->C_FindObjectsInit(s->h, tpl, nt));
	if (rv != CKR_OK)
		return hsm_map_rv("C_FindObjectsInit", rv);
	for (;;) {
		rv = s->hsm->f->C_FindObjects(s->h, batch,
		    out != NULL ? 16 : 256, &got);
		if (rv != CKR_OK || got == 0)
			break;
		if (out == NULL) {
			if (*n + got > cap) {
				cap = (*n + got) * 2;
				if ((na = realloc(*all, cap * sizeof(**all))) ==
				    NULL) {
					r = KMS_ERR_NOMEM;
					break;
				}
				*all = na;
			}
			memcpy(*all + *n, batch, got * sizeof(*batch));
			*n += got;
			continue;
		}
		for (i = 0; i < got; i++) {
			if (*n < max)
				out[*n] = batch[i];
			(*n)++;
		}
		if (*n >= max)
			break;
	}
	s->hsm->f->C_FindObjectsFinal(s->h);
	if (r == 0 && rv != CKR_OK)
		r = hsm_map_rv("C_FindObjects", rv);
	if (r != 0) {
		if (out == NULL) {
			free(*all);
			*all = NULL;
		}
		*n = 0;
		return r;
	}
	if (out != NULL && *n > max)
		*n = max;
	return 0;
}

/* search_locked under the store lock, into out. */
static int
search(struct hsm_session *s, CK_ATTRIBUTE *tpl, CK_ULONG nt,
    hsm_handle_t *out, size_t max, size_t *n)
{
	int r;

	hsm_store_lock(s);
	r = search_locked(s, tpl, nt, out, max, n, NULL);
	hsm_store_unlock(s);
	return r;
}

int
hsm_find_all(struct hsm_session *s, enum hsm_obj_class cls,
    const char *label, hsm_handle_t *out, size_t max, size_t *n)
{
	CK_OBJECT_CLASS c = p11_class(cls);
	CK_ATTRIBUTE tpl[3];
	CK_ULONG nt = 0;

	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	ADD(tpl, nt, CKA_LABEL, label, strlen(label));
	if (cls == HSM_OBJ_DATA)
		ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
		    strlen(HSM_DATA_APPLICATION));
	return search(s, tpl, nt, out, max, n);
}

int
hsm_find_data_value(struct hsm_session *s, const uint8_t *value, size_t len,
    hsm_handle_t *out, size_t max, size_t *n)
{
	CK_OBJECT_CLASS c = CKO_DATA;
	CK_ATTRIBUTE tpl[3];
	CK_ULONG nt = 0;

	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
	    strlen(HSM_DATA_APPLICATION));
	ADD(tpl, nt, CKA_VALUE, value, len);
	return search(s, tpl, nt, out, max, n);
}

int
hsm_find(struct hsm_session *s, enum hsm_obj_class cls, const char *label,
    hsm_handle_t *out)
{
	size_t n;
	int r;

	if ((r = hsm_find_all(s, cls, label, out, 1, &n)) != 0)
		return r;
	return n == 0 ? KMS_ERR_NOT_FOUND : 0;
}

/* The CKA_KEY_TYPE of the key pairs of alg. */
static int
pair_key_type(const struct kms_alg_info *alg, CK_KEY_TYPE *kt)
{
	switch (alg->family) {
	case KMS_FAMILY_EC:
		*kt = CKK_EC;
		return 0;
	case KMS_FAMILY_EDDSA:
		*kt = CKK_EC_EDWARDS;
		return 0;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		*kt = CKK_RSA;
		return 0;
	default:
		return KMS_ERR_INVALID_ARGUMENT;
	}
}

#define PAIR_FIND_MAX 16

int
hsm_find_key_pair(struct hsm_session *s, const struct kms_alg_info *alg,
    const char *label, hsm_handle_t *priv, hsm_handle_t *pub)
{
	hsm_handle_t found[PAIR_FIND_MAX];
	CK_OBJECT_CLASS c;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE tpl[2], a;
	CK_ULONG nt = 0;
	size_t n, i;
	int r;
	CK_RV rv;

	*priv = *pub = 0;
	if ((r = pair_key_type(alg, &kt)) != 0)
		return r;
	/*
	 * The key type before the label: SoftHSM2 tests the template in
	 * order, and most objects then fail on the key type already
	 * (docs/design.md, "Store and keystore").
	 */
	ADD(tpl, nt, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(tpl, nt, CKA_LABEL, label, strlen(label));
	hsm_store_lock(s);
	if ((r = search_locked(s, tpl, nt, found, PAIR_FIND_MAX, &n,
	    NULL)) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		a.type = CKA_CLASS;
		a.pValue = &c;
		a.ulValueLen = sizeof(c);
		P11_CALL(s, rv = s->hsm->f->C_GetAttributeValue(s->h,
		    found[i], &a, 1));
		if ((r = hsm_map_rv("C_GetAttributeValue", rv)) != 0) {
			/* Destroyed by another process meanwhile. */
			if (r == KMS_ERR_STALE_HANDLE)
				continue;
			goto out;
		}
		if (c == CKO_PRIVATE_KEY && *priv == 0)
			*priv = found[i];
		else if (c == CKO_PUBLIC_KEY && *pub == 0)
			*pub = found[i];
	}
	r = *priv == 0 || *pub == 0 ? KMS_ERR_NOT_FOUND : 0;
 out:
	hsm_store_unlock(s);
	if (r != 0)
		*priv = *pub = 0;
	return r;
}

int
hsm_get_attr(struct hsm_session *s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
    uint8_t **buf, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*buf = NULL;
	P11_CALL(s, rv = s->hsm->f->C_GetAttributeValue(s->h, h, &a, 1));
	if (rv != CKR_OK)
		return hsm_map_rv("C_GetAttributeValue", rv);
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return KMS_ERR_HSM;
	if ((a.pValue = malloc(a.ulValueLen + 1)) == NULL)
		return KMS_ERR_NOMEM;
	if ((rv = s->hsm->f->C_GetAttributeValue(s->h, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return hsm_map_rv("C_GetAttributeValue", rv);
	}
	((uint8_t *)a.pValue)[a.ulValueLen] = '\0';
	*buf = a.pValue;
	*len = a.ulValueLen;
	return 0;
}

/*
 * The buffers of one listing.  The value buffer starts at a size that
 * holds the usual key metadata document and grows to the largest value
 * seen, so that an object costs one C_GetAttributeValue call.
 */
#define LIST_VALUE_INITIAL 4096
#define LIST_READ_TRIES 3

struct list_bufs {
	char label[HSM_LABEL_MAX];
	uint8_t *value;			/* NULL: labels only */
	size_t cap;			/* of value, its NUL not counted */
};

/*
 * Reads the label of h, and its value when b has a value buffer, in one
 * call.  When a buffer is too small (CKR_BUFFER_TOO_SMALL, or a length
 * reported larger than the buffer) the exact sizes are asked for and the
 * read made again; an object that changes size meanwhile is read again,
 * a few times at most.  Returns KMS_ERR_NOT_FOUND for a label of
 * HSM_LABEL_MAX bytes or more or one holding a NUL (the object is
 * skipped).  Called with the store lock.
 */
static int
read_label_value(struct hsm_session *s, CK_OBJECT_HANDLE h,
    struct list_bufs *b, struct hsm_object *o)
{
	CK_ATTRIBUTE a[2];
	CK_ULONG na = b->value != NULL ? 2 : 1;
	uint8_t *nv;
	int tries;
	CK_RV rv;

	for (tries = 0; tries < LIST_READ_TRIES; tries++) {
		a[0].type = CKA_LABEL;
		a[0].pValue = b->label;
		a[0].ulValueLen = sizeof(b->label) - 1;
		a[1].type = CKA_VALUE;
		a[1].pValue = b->value;
		a[1].ulValueLen = b->cap;
		P11_CALL(s, rv = s->hsm->f->C_GetAttributeValue(s->h, h, a,
		    na));
		if (rv == CKR_OK && a[0].ulValueLen < sizeof(b->label) &&
		    (na == 1 || a[1].ulValueLen <= b->cap)) {
			b->label[a[0].ulValueLen] = '\0';
			/* A NUL inside: not a label of ours. */
			if (strlen(b->label) != a[0].ulValueLen)
				return KMS_ERR_NOT_FOUND;
			o->h = h;
			o->label = b->label;
			o->value = b->value;
			o->value_len = 0;
			if (na == 2) {
				b->value[a[1].ulValueLen] = '\0';
				o->value_len = a[1].ulValueLen;
			}
			return 0;
		}
		if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
			return hsm_map_rv("C_GetAttributeValue", rv);
		a[0].pValue = a[1].pValue = NULL;
		P11_CALL(s, rv = s->hsm->f->C_GetAttributeValue(s->h, h, a,
		    na));
		if (rv != CKR_OK)
			return hsm_map_rv("C_GetAttributeValue", rv);
		if (a[0].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
		    (na == 2 && a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION))
			return KMS_ERR_HSM;
		if (a[0].ulValueLen >= HSM_LABEL_MAX)
			return KMS_ERR_NOT_FOUND;
		if (na == 2 && a[1].ulValueLen > b->cap) {
			if ((nv = realloc(b->value, a[1].ulValueLen + 1)) ==
			    NULL)
				return KMS_ERR_NOMEM;
			b->value = nv;
			b->cap = a[1].ulValueLen;
		}
	}
	log_warn("hsm: object %lu keeps changing size while it is read",
	    (unsigned long)h);
	return KMS_ERR_HSM;
}

/*
 * Lists the objects of class cls: the handles under the store lock, then
 * each object read under the lock and given to cb without it, so that cb
 * may call this layer again.
 */
static int
list_objects(struct hsm_session *s, enum hsm_obj_class cls, int want_value,
    int (*cb)(const struct hsm_object *o, void *arg), void *arg)
{
	CK_OBJECT_CLASS c = p11_class(cls);
	CK_OBJECT_HANDLE *all = NULL;
	CK_ATTRIBUTE tpl[2];
	CK_ULONG nt = 0;
	struct list_bufs *b = NULL;
	struct hsm_object o;
	size_t nall = 0, i;
	int r = 0;

	if ((b = calloc(1, sizeof(*b))) == NULL ||
	    (want_value && (b->value = malloc(LIST_VALUE_INITIAL + 1)) ==
	    NULL)) {
		free(b);
		return KMS_ERR_NOMEM;
	}
	b->cap = want_value ? LIST_VALUE_INITIAL : 0;
	ADD(tpl, nt, CKA_CLASS, &c, sizeof(c));
	if (cls == HSM_OBJ_DATA)
		ADD(tpl, nt, CKA_APPLICATION, HSM_DATA_APPLICATION,
		    strlen(HSM_DATA_APPLICATION));
	hsm_store_lock(s);
	r = search_locked(s, tpl, nt, NULL, 0, &nall, &all);
	hsm_store_unlock(s);
	for (i = 0; i < nall && r == 0; i++) {
		hsm_store_lock(s);
		r = read_label_value(s, all[i], b, &o);
		hsm_store_unlock(s);
		if (r != 0) {
			/*
			 * Destroyed by another process since the search, or
			 * a label that cannot be one of ours.
			 */
			if (r == KMS_ERR_STALE_HANDLE || r == KMS_ERR_NOT_FOUND)
				r = 0;
			continue;
		}
		r = cb(&o, arg);
	}
	free(all);
	free(b->value);
	free(b);
	return r;
}

/* hsm_list's callback, called from the listing of labels. */
struct label_cb {
	int (*cb)(const char *label, hsm_handle_t h, void *arg);
	void *arg;
};

static int
label_only(const struct hsm_object *o, void *arg)
{
	struct label_cb *lc = arg;

	return lc->cb(o->label, o->h, lc->arg);
}

int
hsm_list(struct hsm_session *s, enum hsm_obj_class cls,
    int (*cb)(const char *label, hsm_handle_t h, void *arg), void *arg)
{
	struct label_cb lc = { cb, arg };

	return list_objects(s, cls, 0, label_only, &lc);
}

int
hsm_list_data(struct hsm_session *s,
    int (*cb)(const struct hsm_object *o, void *arg), void *arg)
{
	return list_objects(s, HSM_OBJ_DATA, 1, cb, arg);
}

int
hsm_public_key(struct hsm_session *s, const struct kms_alg_info *alg,
    hsm_handle_t pub, struct hsm_pubkey *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	hsm_store_lock(s);
	switch (alg->family) {
	case KMS_FAMILY_EC:
	case KMS_FAMILY_EDDSA:
		r = hsm_get_attr(s, pub, CKA_EC_POINT, &out->a, &out->alen);
		break;
	case KMS_FAMILY_RSA_PKCS1:
	case KMS_FAMILY_RSA_PSS:
	case KMS_FAMILY_RSA_RAW:
		if ((r = hsm_get_attr(s, pub, CKA_MODULUS, &out->a,
		    &out->alen)) == 0)
			r = hsm_get_attr(s, pub, CKA_PUBLIC_EXPONENT, &out->b,
			    &out->blen);
		break;
	default:
		r = KMS_ERR_FAILED_PRECONDITION;
	}
	hsm_store_unlock(s);
	if (r != 0)
		hsm_pubkey_clear(out);
	return r;
}

void
hsm_pubkey_clear(struct hsm_pubkey *pk)
{
	free(pk->a);
	free(pk->b);
	memset(pk, 0, sizeof(*pk));
}

int
hsm_data_create(struct hsm_session *s, const char *label,
    const uint8_t *data, size_t len, hsm_handle_t *out)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL t = CK_TRUE;
	CK_ATTRIBUTE tpl[7];
	CK_OBJECT_HANDLE h = 0;
	CK_ULONG n = 0;
	CK_RV rv;

	ADD(tpl, n, CKA_CLASS, &cls, sizeof(cls));
	ADD(tpl, n, CKA_TOKEN, &t, sizeof(t));
	ADD(tpl, n, CKA_PRIVATE, &t, sizeof(t));
	ADD(tpl, n, CKA_MODIFIABLE, &t, sizeof(t));
	ADD(tpl, n, CKA_LABEL, label, strlen(label));
	ADD(tpl, n, CKA_APPLICATION, HSM_DATA_APPLICATION,
	    strlen(HSM_DATA_APPLICATION));
	ADD(tpl, n, CKA_VALUE, data, len);
	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_CreateObject(s->h, tpl, n, &h));
	hsm_store_unlock(s);
	if (rv != CKR_OK)
		return hsm_map_rv("C_CreateObject", rv);
	*out = h;
	return 0;
}

/* C_SetAttributeValue of one attribute of a token object. */
static int
set_attr(struct hsm_session *s, hsm_handle_t h, CK_ATTRIBUTE_TYPE type,
    const void *value, size_t len, CK_RV *rvp)
{
	CK_ATTRIBUTE a = { type, (void *)value, len };
	CK_RV rv;

	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_SetAttributeValue(s->h, h, &a, 1));
	hsm_store_unlock(s);
	if (rvp != NULL)
		*rvp = rv;
	return rv == CKR_ATTRIBUTE_READ_ONLY && rvp != NULL ? 0 :
	    hsm_map_rv("C_SetAttributeValue", rv);
}

int
hsm_data_set(struct hsm_session *s, const char *label, hsm_handle_t *h,
    const uint8_t *data, size_t len)
{
	hsm_handle_t nh;
	int r;
	CK_RV rv;

	if ((r = set_attr(s, *h, CKA_VALUE, data, len, &rv)) != 0 ||
	    rv != CKR_ATTRIBUTE_READ_ONLY)
		return r;
	/* Make the new object first: the value is never missing. */
	if ((r = hsm_data_create(s, label, data, len, &nh)) != 0)
		return r;
	if ((r = hsm_destroy(s, *h)) != 0 && r != KMS_ERR_STALE_HANDLE) {
		hsm_destroy(s, nh);
		return r;
	}
	*h = nh;
	return 0;
}

int
hsm_data_get(struct hsm_session *s, hsm_handle_t h, uint8_t **data,
    size_t *len)
{
	int r;

	hsm_store_lock(s);
	r = hsm_get_attr(s, h, CKA_VALUE, data, len);
	hsm_store_unlock(s);
	return r;
}

int
hsm_label_get(struct hsm_session *s, hsm_handle_t h, char *label,
    size_t size)
{
	uint8_t *buf;
	size_t len;
	int r;

	hsm_store_lock(s);
	r = hsm_get_attr(s, h, CKA_LABEL, &buf, &len);
	hsm_store_unlock(s);
	if (r != 0)
		return r;
	if (len >= size || strlen((char *)buf) != len)
		r = KMS_ERR_HSM;
	else
		memcpy(label, buf, len + 1);
	free(buf);
	return r;
}

int
hsm_label_set(struct hsm_session *s, hsm_handle_t h, const char *label)
{
	return set_attr(s, h, CKA_LABEL, label, strlen(label), NULL);
}

int
hsm_destroy(struct hsm_session *s, hsm_handle_t h)
{
	CK_RV rv;

	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_DestroyObject(s->h, h));
	hsm_store_unlock(s);
	return hsm_map_rv("C_DestroyObject", rv);
}

int
hsm_key_is_protected(struct hsm_session *s, hsm_handle_t h, int *ok)
{
	CK_BBOOL sens = 0, asens = 0, extr = 1, nextr = 0;
	CK_ATTRIBUTE a[] = {
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		{ CKA_NEVER_EXTRACTABLE, &nextr, sizeof(nextr) },
	};
	CK_RV rv;

	*ok = 0;
	hsm_store_lock(s);
	P11_CALL(s, rv = s->hsm->f->C_GetAttributeValue(s->h, h, a, 4));
	hsm_store_unlock(s);
	/* A public key or a data object has no such attributes: not protected. */
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return 0;
	if (rv != CKR_OK)
		return hsm_map_rv("C_GetAttributeValue", rv);
	*ok = sens == CK_TRUE && asens == CK_TRUE && extr == CK_FALSE &&
	    nextr == CK_TRUE;
	return 0;
}

