/*
 * p11util.c: module loading, login and object listing for the benchmark's
 * PKCS#11 programs (see p11util.h).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "p11util.h"

#define PIN_MAX 256
#define P11_OPEN_RETRIES 20

int
p11_open(struct p11 *p, const char *prog, const char *module,
    const char *token, const char *pin_file)
{
	CK_C_GetFunctionList getfl;
	CK_C_INITIALIZE_ARGS init;
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64, i;
	CK_TOKEN_INFO ti;
	struct timespec pause = { 0, 50 * 1000 * 1000 };
	char pin[PIN_MAX + 2], label[33];
	size_t len, k;
	FILE *pf;
	void *dl;
	int found = 0;
	CK_RV rv;

	memset(p, 0, sizeof(*p));
	if ((pf = fopen(pin_file, "r")) == NULL ||
	    fgets(pin, sizeof(pin), pf) == NULL) {
		fprintf(stderr, "%s: cannot read the PIN file %s\n", prog,
		    pin_file);
		if (pf != NULL)
			fclose(pf);
		return -1;
	}
	fclose(pf);
	len = strcspn(pin, "\r\n");
	pin[len] = '\0';
	if ((dl = dlopen(module, RTLD_NOW)) == NULL ||
	    (getfl = (CK_C_GetFunctionList)dlsym(dl,
	    "C_GetFunctionList")) == NULL || getfl(&p->f) != CKR_OK) {
		fprintf(stderr, "%s: cannot load the PKCS#11 module %s\n",
		    prog, module);
		goto fail;
	}
	/*
	 * SoftHSM2's file store can miss a token while another process
	 * writes to it (its token.object is read without the writer's
	 * lock): the slot list is read again a few times.
	 */
	for (;;) {
		memset(&init, 0, sizeof(init));
		init.flags = CKF_OS_LOCKING_OK;
		if ((rv = p->f->C_Initialize(&init)) != CKR_OK) {
			fprintf(stderr, "%s: C_Initialize failed: 0x%lx\n",
			    prog, (unsigned long)rv);
			goto fail;
		}
		nslots = 64;
		if ((rv = p->f->C_GetSlotList(CK_TRUE, slots, &nslots)) !=
		    CKR_OK) {
			fprintf(stderr, "%s: C_GetSlotList failed: 0x%lx\n",
			    prog, (unsigned long)rv);
			goto fail_final;
		}
		for (i = 0; i < nslots && !found; i++) {
			if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
				continue;
			memcpy(label, ti.label, 32);
			for (k = 32; k > 0 && label[k - 1] == ' '; k--)
				;
			label[k] = '\0';
			if (strcmp(label, token) == 0) {
				p->slot = slots[i];
				found = 1;
			}
		}
		if (found || p->open_retries >= P11_OPEN_RETRIES)
			break;
		p->f->C_Finalize(NULL);
		p->open_retries++;
		nanosleep(&pause, NULL);
	}
	if (!found) {
		fprintf(stderr, "%s: no token labelled %s\n", prog, token);
		goto fail_final;
	}
	if ((rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION |
	    CKF_RW_SESSION, NULL, NULL, &p->s)) != CKR_OK) {
		fprintf(stderr, "%s: C_OpenSession failed: 0x%lx\n", prog,
		    (unsigned long)rv);
		goto fail_final;
	}
	rv = p->f->C_Login(p->s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
	memset(pin, 0, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		fprintf(stderr, "%s: C_Login failed: 0x%lx\n", prog,
		    (unsigned long)rv);
		p->f->C_CloseSession(p->s);
		goto fail_final;
	}
	return 0;
 fail_final:
	p->f->C_Finalize(NULL);
 fail:
	memset(pin, 0, sizeof(pin));
	p->f = NULL;
	return -1;
}

void
p11_close(struct p11 *p)
{
	if (p->f == NULL)
		return;
	p->f->C_CloseSession(p->s);
	p->f->C_Finalize(NULL);
	p->f = NULL;
}

CK_RV
p11_find_all(struct p11 *p, CK_ATTRIBUTE *tpl, CK_ULONG n,
    CK_OBJECT_HANDLE **out, CK_ULONG *count)
{
	CK_OBJECT_HANDLE batch[256], *all = NULL, *na;
	CK_ULONG got, nall = 0, cap = 0;
	CK_RV rv;

	*out = NULL;
	*count = 0;
	if ((rv = p->f->C_FindObjectsInit(p->s, tpl, n)) != CKR_OK)
		return rv;
	/* Collect the handles first: no other call may run inside a search. */
	for (;;) {
		if ((rv = p->f->C_FindObjects(p->s, batch, 256, &got)) !=
		    CKR_OK || got == 0)
			break;
		if (nall + got > cap) {
			cap = (nall + got) * 2;
			if ((na = realloc(all, cap * sizeof(*all))) == NULL) {
				rv = CKR_HOST_MEMORY;
				break;
			}
			all = na;
		}
		memcpy(all + nall, batch, got * sizeof(*batch));
		nall += got;
	}
	p->f->C_FindObjectsFinal(p->s);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	*out = all;
	*count = nall;
	return CKR_OK;
}

CK_RV
p11_get_attr(struct p11 *p, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
    unsigned char **buf, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*buf = NULL;
	*len = 0;
	if ((rv = p->f->C_GetAttributeValue(p->s, h, &a, 1)) != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return CKR_ATTRIBUTE_TYPE_INVALID;
	if ((a.pValue = malloc(a.ulValueLen + 1)) == NULL)
		return CKR_HOST_MEMORY;
	if ((rv = p->f->C_GetAttributeValue(p->s, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	((unsigned char *)a.pValue)[a.ulValueLen] = '\0';
	*buf = a.pValue;
	*len = a.ulValueLen;
	return CKR_OK;
}
