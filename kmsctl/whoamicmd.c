/*
 * whoamicmd.c: `kmsctl whoami`: the identity and roles kmsd gives this
 * client certificate.
 */
#include <stdio.h>

#include <jansson.h>

#include "kmsctl.h"

#include "kms/v1/kms.pb-c.h"

int
whoami_cmd(struct ctx *x, int argc, char **argv)
{
	Kms__V1__WhoAmIRequest req = KMS__V1__WHO_AM_IREQUEST__INIT;
	Kms__V1__WhoAmIResponse *w;
	ProtobufCMessage *resp = NULL;
	json_t *roles;
	size_t i;
	int r;

	(void)argv;
	if (argc != 1)
		return die_usage("whoami takes no arguments");
	if ((r = kmsctl_call(x, "WhoAmI", &req.base,
	    &kms__v1__who_am_iresponse__descriptor, &resp)) != 0)
		return r;
	w = (Kms__V1__WhoAmIResponse *)resp;
	if (x->json) {
		roles = json_array();
		for (i = 0; i < w->n_roles; i++)
			json_array_append_new(roles, json_string(w->roles[i]));
		r = print_json(roles == NULL ? NULL : json_pack(
		    "{s:s, s:o, s:s}", "identity", w->identity, "roles",
		    roles, "fingerprint", w->fingerprint));
	} else {
		printf("identity: %s\nroles:", w->identity);
		for (i = 0; i < w->n_roles; i++)
			printf(" %s", w->roles[i]);
		printf("%s\nfingerprint: %s\n", w->n_roles ? "" : " none",
		    w->fingerprint);
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}
