/*
 * handlers.c: the handler table, one row per RPC.  The gate reads a row
 * to know what to decode, whom to let in and what to wipe; see
 * handlers.h for the columns and docs/design.md for adding a row.
 */
#include <stddef.h>

#include "handlers.h"
#include "policy.h"

#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"

#define KMS_PATH(m) "/kms.v1.KeyManagementService/" m
#define MSG(m) &kms__v1__##m##__descriptor

const struct handler_def handler_table[] = {
	{ KMS_PATH("CreateKey"), "CreateKey", KMS_OP_CREATE_KEY, GATE_KEYED,
	    MSG(create_key_request), MSG(key), NULL, h_create_key },
	{ KMS_PATH("GetKey"), "GetKey", KMS_OP_GET_KEY, GATE_KEYED,
	    MSG(get_key_request), MSG(key), NULL, h_get_key },
	/* Filtered by the policy key by key: no grant of its own. */
	{ KMS_PATH("ListKeys"), "ListKeys", KMS_OP_NONE, GATE_NOGRANT,
	    MSG(list_keys_request), MSG(list_keys_response), NULL,
	    h_list_keys },
	{ KMS_PATH("GetPublicKey"), "GetPublicKey", KMS_OP_GET_PUBLIC_KEY,
	    GATE_KEYED, MSG(get_public_key_request), MSG(public_key), NULL,
	    h_get_public_key },
	{ KMS_PATH("Sign"), "Sign", KMS_OP_SIGN, GATE_KEYED,
	    MSG(sign_request), MSG(sign_response), NULL, h_sign },
	{ KMS_PATH("Verify"), "Verify", KMS_OP_VERIFY, GATE_KEYED,
	    MSG(verify_request), MSG(verify_response), NULL, h_verify },
	/* Tells the caller about itself: any verified identity may ask. */
	{ KMS_PATH("WhoAmI"), "WhoAmI", KMS_OP_NONE, GATE_NOGRANT,
	    MSG(who_am_irequest), MSG(who_am_iresponse), NULL, h_whoami },
	{ KMS_PATH("ListAuditRecords"), "ListAuditRecords",
	    KMS_OP_LIST_AUDIT_RECORDS, 0, MSG(list_audit_records_request),
	    MSG(list_audit_records_response), NULL, h_list_audit_records },
	/*
	 * No request_sha256 for Wrap: an unsalted hash of a short
	 * plaintext would let whoever reads the log guess it.
	 */
	{ KMS_PATH("Wrap"), "Wrap", KMS_OP_WRAP, GATE_KEYED | GATE_SECRET_IN,
	    MSG(wrap_request), MSG(wrap_response), NULL, h_wrap },
	{ KMS_PATH("Unwrap"), "Unwrap", KMS_OP_UNWRAP,
	    GATE_KEYED | GATE_SECRET_OUT, MSG(unwrap_request),
	    MSG(unwrap_response), "wrapped", h_unwrap },
	{ KMS_PATH("GenerateDataKey"), "GenerateDataKey",
	    KMS_OP_GENERATE_DATA_KEY, GATE_KEYED | GATE_SECRET_OUT,
	    MSG(generate_data_key_request), MSG(generate_data_key_response),
	    NULL, h_generate_data_key },
	{ KMS_PATH("RotateKey"), "RotateKey", KMS_OP_ROTATE_KEY, GATE_KEYED,
	    MSG(rotate_key_request), MSG(key), NULL, h_rotate_key },
	{ KMS_PATH("SetVersionState"), "SetVersionState",
	    KMS_OP_SET_VERSION_STATE, GATE_KEYED,
	    MSG(set_version_state_request), MSG(key_version), NULL,
	    h_set_version_state },
	{ KMS_PATH("SetCertificateChain"), "SetCertificateChain",
	    KMS_OP_SET_CERTIFICATE_CHAIN, GATE_KEYED,
	    MSG(set_certificate_chain_request), MSG(key_version), NULL,
	    h_set_certificate_chain },
	{ KMS_PATH("UpdateKey"), "UpdateKey", KMS_OP_UPDATE_KEY, GATE_KEYED,
	    MSG(update_key_request), MSG(key), NULL, h_update_key },
	{ KMS_PATH("SignBundleManifest"), "SignBundleManifest",
	    KMS_OP_SIGN_BUNDLE_MANIFEST, GATE_KEYED,
	    MSG(sign_bundle_manifest_request),
	    MSG(sign_bundle_manifest_response), "manifest",
	    h_sign_bundle_manifest },
	/* Auditors, or anyone for the proof of a record of its own. */
	{ KMS_PATH("GetAuditProof"), "GetAuditProof", KMS_OP_NONE,
	    GATE_NOGRANT, MSG(get_audit_proof_request), MSG(audit_proof), NULL,
	    h_get_audit_proof },
	{ KMS_PATH("GetAuditConsistency"), "GetAuditConsistency",
	    KMS_OP_LIST_AUDIT_RECORDS, 0, MSG(get_audit_consistency_request),
	    MSG(audit_consistency), NULL, h_get_audit_consistency },
	/* One call, one record; then a message per record (watch.h). */
	{ KMS_PATH("WatchAuditRecords"), "WatchAuditRecords",
	    KMS_OP_LIST_AUDIT_RECORDS, GATE_STREAM,
	    MSG(watch_audit_records_request), MSG(audit_record), NULL,
	    h_watch_audit_records },
	/* Load balancers ask without a grant; the transport still wants mTLS. */
	{ "/grpc.health.v1.Health/Check", "Health/Check", KMS_OP_NONE,
	    GATE_NOAUTH, &grpc__health__v1__health_check_request__descriptor,
	    &grpc__health__v1__health_check_response__descriptor, NULL,
	    h_health_check },
	{ NULL, NULL, KMS_OP_NONE, 0, NULL, NULL, NULL, NULL }
};
