/*
 * cmdtab.c: every kmsctl command in one table: the file that runs it,
 * whether it needs the server, and its help (kmsctl help CMD, kmsctl CMD
 * --help and the COMMANDS section of kmsctl(1) are printed from here).
 * A new command is one function in its group's file and one row here.
 */
#include <stddef.h>

#include "auditcmd.h"
#include "capgocmd.h"
#include "kmsctl.h"
#include "otacmd.h"

/* The offline commands whose entry points take argv without the group. */
static int
audit_verify_run(struct ctx *x, int argc, char **argv)
{
	return audit_cmd_verify(argc - 1, argv + 1, x->json);
}

static int
ota_keygen_run(struct ctx *x, int argc, char **argv)
{
	return kmsb_cmd_keygen(argc - 1, argv + 1);
}

#define KEY_STATE_HELP(sub) \
"Options:\n" \
"  --version N   the version (required)\n" \
"\n" \
"Versions move ENABLED <-> DISABLED; destroy schedules the destruction\n" \
"(DESTROY_SCHEDULED, after the configured delay) and restore cancels it,\n" \
"leaving the version DISABLED.  The primary version cannot be disabled\n" \
"or destroyed: rotate first.  Needs the officer role.\n" \
"\n" \
"Example:\n" \
"  kmsctl --as officer key " sub " release/android --version 1\n"

#define SIGN_INPUT_HELP \
"  --in FILE        the message (stdin when neither --in nor --digest)\n" \
"  --digest HEX     the hash computed by the caller, in hex\n" \
"  --version N      a version other than the primary one\n"

const struct kmsctl_cmd kmsctl_cmds[] = {
	{ "key", "create", 0, NULL, key_cmd,
	  "create a key in the HSM (officer)",
	  "key create NAME --algorithm ALG [--rotation-period SECONDS]",
"Options:\n"
"  --algorithm ALG          EC_P256_SHA256, EC_P384_SHA384, ED25519,\n"
"                           RSA_PKCS1_{2048,3072,4096}_SHA256,\n"
"                           RSA_PSS_{2048,3072,4096}_SHA256,\n"
"                           RSA_RAW_PKCS1_2048, AES_256_KWP\n"
"  --rotation-period S      rotate every S seconds (0: never)\n"
"\n"
"Names: 1-128 of A-Z a-z 0-9 . _ / -, starting with a letter or digit.\n"
"\n"
"Examples:\n"
"  kmsctl --as officer key create release/android --algorithm EC_P256_SHA256\n"
"  kmsctl --as officer key create backup/kek --algorithm AES_256_KWP \\\n"
"      --rotation-period 7776000\n" },
	{ "key", "get", 0, NULL, key_cmd,
	  "show a key: algorithm, versions, states and times",
	  "key get NAME",
"Example:\n"
"  kmsctl --as ci key get release/android\n" },
	{ "key", "list", 0, NULL, key_cmd,
	  "list the keys you may see, with their versions and states",
	  "key list [--prefix P]",
"Each key is a line \"NAME ALGORITHM vPRIMARY [next_rotation T]\" followed\n"
"by one line per version: number, state, creation time and, if any, its\n"
"destruction time.  --json prints {\"keys\": [...]} as key get does.\n"
"\n"
"Example:\n"
"  kmsctl --as officer key list --prefix release/\n" },
	{ "key", "rotate", 0, NULL, key_cmd,
	  "make a new primary version (officer)",
	  "key rotate NAME",
"Older versions stay ENABLED: what they signed still verifies.\n"
"\n"
"Example:\n"
"  kmsctl --as officer key rotate release/android\n" },
	{ "key", "enable", 0, NULL, key_cmd,
	  "enable a version (officer)",
	  "key enable NAME --version N", KEY_STATE_HELP("enable") },
	{ "key", "disable", 0, NULL, key_cmd,
	  "disable a version (officer)",
	  "key disable NAME --version N", KEY_STATE_HELP("disable") },
	{ "key", "destroy", 0, NULL, key_cmd,
	  "schedule the destruction of a version (officer)",
	  "key destroy NAME --version N", KEY_STATE_HELP("destroy") },
	{ "key", "restore", 0, NULL, key_cmd,
	  "cancel a scheduled destruction (officer)",
	  "key restore NAME --version N", KEY_STATE_HELP("restore") },
	{ "key", "update", 0, NULL, key_cmd,
	  "change the rotation period (officer)",
	  "key update NAME --rotation-period SECONDS",
"  --rotation-period S   seconds between scheduled rotations; 0 turns\n"
"                        scheduled rotation off\n"
"\n"
"Example:\n"
"  kmsctl --as officer key update release/android --rotation-period 0\n" },
	{ "key", "cert", 0, NULL, key_cert_cmd,
	  "attach a certificate chain to a version, or self-sign one",
	  "key cert set NAME [--version N] FILE\n"
	  "       kmsctl key cert self-sign NAME [--version N] [--subject DN]\n"
	  "           [--days N] [-o FILE | --attach]",
"set (officer): FILE holds PEM certificates, leaf first (- reads stdin);\n"
"the leaf must certify the version's public key.  GetKey and GetPublicKey\n"
"return the chain, and the PKCS#11 module shows the leaf beside the key\n"
"(jarsigner, apksigner and osslsigncode need it).  An empty FILE removes\n"
"the chain.\n"
"\n"
"self-sign (signer): a self-signed code-signing certificate for the\n"
"version's public key, signed by the key itself with one Sign (the key\n"
"never leaves kmsd), checked against the public key, then written to\n"
"FILE (default stdout) or, with --attach, attached as by set (which\n"
"needs an identity that may both sign and attach).  For development.\n"
"\n"
"Options:\n"
"  --version N     a version (default: the primary one)\n"
"  --subject DN    CN=a,O=b or /CN=a/O=b (default CN=NAME)\n"
"  --days N        validity from now, 1 to 36500 (default 365)\n"
"\n"
"Examples:\n"
"  kmsctl --as officer key cert set release/android release.pem\n"
"  kmsctl --as ci key cert self-sign release/android -o dev.pem\n"
"  kmsctl --as officer key cert set release/android dev.pem\n" },
	{ "pubkey", NULL, 0, NULL, pubkey_cmd,
	  "print the public key (PEM) of a version",
	  "pubkey NAME [--version N] [--format spki|pkcs1] [-o FILE]",
"Options:\n"
"  --version N       a version (default: the primary one)\n"
"  --format pkcs1    \"BEGIN RSA PUBLIC KEY\", as Capgo apps embed it\n"
"                    (RSA keys); spki (the default) is \"BEGIN PUBLIC KEY\"\n"
"  -o FILE           write the PEM there\n"
"\n"
"Example:\n"
"  kmsctl --as ci pubkey release/android -o release.pem\n" },
	{ "sign", NULL, 0, NULL, sign_cmd,
	  "sign a message or a digest (signer)",
	  "sign NAME [--in FILE | --digest HEX] [--version N] [-o FILE]\n"
	  "       [--format raw|base64|hex]",
"Options:\n"
SIGN_INPUT_HELP
"  -o FILE          write the signature there (raw by default)\n"
"  --format F       raw, base64 (the default on stdout) or hex\n"
"\n"
"Files up to 1 MiB are sent as they are; larger ones are hashed here, in\n"
"constant memory, with the key's hash (not for ED25519 and\n"
"RSA_RAW_PKCS1_2048 keys).  ECDSA signatures are DER, Ed25519 64 bytes.\n"
"\n"
"Examples:\n"
"  kmsctl --as ci sign release/android --in app.zip -o app.sig\n"
"  openssl dgst -sha256 -verify release.pem -signature app.sig app.zip\n" },
	{ "verify", NULL, 0, NULL, verify_cmd,
	  "check a signature with the key in kms (exit 1: invalid)",
	  "verify NAME --signature FILE [--in FILE | --digest HEX] [--version N]",
"Options:\n"
"  --signature FILE the signature, raw\n"
SIGN_INPUT_HELP
"\n"
"Example:\n"
"  kmsctl --as ci verify release/android --signature app.sig --in app.zip\n" },
	{ "wrap", NULL, 0, NULL, wrapping_cmd,
	  "encrypt up to 64 KiB with an AES_256_KWP key (signer)",
	  "wrap NAME [--in FILE] [--base64] [-o FILE]",
"Options:\n"
"  --in FILE   the plaintext (stdin without it)\n"
"  --base64    the input is base64\n"
"  -o FILE     write the wrapped blob there, raw (else base64 on stdout)\n"
"\n"
"Example:\n"
"  kmsctl --as ci wrap backup/kek --in secret.bin -o secret.wrapped\n" },
	{ "unwrap", NULL, 0, NULL, wrapping_cmd,
	  "decrypt what wrap made (unwrapper)",
	  "unwrap NAME [--in FILE] [--base64] [-o FILE]",
"Options:\n"
"  --in FILE   the wrapped blob (stdin without it)\n"
"  --base64    the input is base64\n"
"  -o FILE     write the plaintext there, raw, mode 0600 (else base64 on\n"
"              stdout)\n"
"\n"
"Example:\n"
"  kmsctl --as unwrapper unwrap backup/kek --in secret.wrapped -o secret.bin\n" },
	{ "datakey", NULL, 0, NULL, wrapping_cmd,
	  "make a data key and its wrapped form (signer)",
	  "datakey NAME [--length N] [-o FILE] --wrapped-out FILE\n"
	  "       datakey NAME [--length N] --json",
"Options:\n"
"  --length N          bytes (default 32)\n"
"  -o FILE             the data key, raw, mode 0600 (else base64 on stdout)\n"
"  --wrapped-out FILE  its wrapped form (required: without it the data\n"
"                      key could never be unwrapped again)\n"
"  --json              without -o: print both, base64, in one object\n"
"\n"
"Example:\n"
"  kmsctl --as ci datakey backup/kek -o dek.bin --wrapped-out dek.wrapped\n" },
	{ "whoami", NULL, 0, NULL, whoami_cmd,
	  "show the identity and roles of your certificate",
	  "whoami",
"Example:\n"
"  kmsctl --as ci whoami\n" },
	{ "audit", "list", 0, NULL, audit_list_cmd,
	  "list audit records (auditor)",
	  "audit list [--follow] [--chain C] [--identity I] [--key-name K]\n"
	  "       [--rpc R] [--result ok|denied|error] [--since RFC3339]\n"
	  "       [--until RFC3339] [--after SEQ] [--limit N]",
"Options:\n"
"  --follow         then keep printing each record as it becomes durable,\n"
"                   on one WatchAuditRecords stream (recorded once; no\n"
"                   deadline unless --timeout)\n"
"  --rpc R          an RPC name (Sign, CreateKey, ...), any case; an\n"
"                   unknown name is refused\n"
"  --result R       ok, denied or error, any case\n"
"  --after SEQ      records after this sequence number\n"
"  --limit N        at most N records\n"
"\n"
"Text lines: SEQ TIME IDENTITY RPC KEY RESULT [REASON]; --json prints each\n"
"record as it is in the log.\n"
"\n"
"Example:\n"
"  kmsctl --as auditor audit list --rpc sign --result denied --since \\\n"
"      2026-01-01T00:00:00Z\n" },
	{ "audit", "verify", 1, NULL, audit_verify_run,
	  "check a copy of the audit log offline",
	  "audit verify [--pubkey PEM] [--witness PUB [--cosigned DIR]] [PATH]",
"PATH is the audit directory ($KMS_HOME/audit by default) or one chain\n"
"directory in it.  Exit 0 intact, 1 altered (the first bad record is\n"
"named) or, with --witness, not witnessed; 5 unreadable.\n"
"\n"
"Options:\n"
"  --pubkey PEM     the audit key to trust, instead of the one beside the\n"
"                   log\n"
"  --witness PUB    also require, for every chain, a checkpoint of the log\n"
"                   cosigned by this witness key (Ed25519 PEM); a cosigned\n"
"                   checkpoint the log does not hold (cut, forked) fails\n"
"  --cosigned DIR   where the cosigned notes are (the witness's --state\n"
"                   directory); default CHAIN/witness/ beside each chain\n"
"\n"
"Example:\n"
"  kmsctl audit verify --pubkey audit-key.pem --witness witness-pub.pem \\\n"
"      --cosigned /var/lib/witness /backup/kms/audit\n" },
	{ "audit", "prove", 0, NULL, audit_prove_cmd,
	  "fetch and check the inclusion proof of a record",
	  "audit prove [--pubkey PEM] SEQ",
"Fetches the record, its RFC 9162 inclusion proof and the signed\n"
"checkpoint (a checkpoint is made at once when none covers it yet) and\n"
"checks them here.  Any identity may prove its own records (receipts),\n"
"auditors any.  Exit 0 verified, 1 not.\n"
"\n"
"Options:\n"
"  --pubkey PEM   the pinned audit key (else the one kmsd names)\n"
"\n"
"Example:\n"
"  kmsctl --as ci audit prove --pubkey audit-key.pem 1234\n" },
	{ "audit", "consistency", 0, NULL, audit_consistency_cmd,
	  "fetch and check a consistency proof between checkpoints (auditor)",
	  "audit consistency [--pubkey PEM] OLD NEW",
"OLD and NEW are checkpoint tree sizes (NEW 0: the latest).  Exit 0 when\n"
"the new checkpoint extends the old one, 1 not.\n"
"\n"
"Example:\n"
"  kmsctl --as auditor audit consistency --pubkey audit-key.pem 1000 0\n" },
	{ "audit", "witness", 0, NULL, audit_witness_cmd,
	  "cosign kmsd's latest checkpoint if it extends the last one seen",
	  "audit witness --state DIR --key KEY --pubkey AUDIT_PUB\n"
	  "       [--name NAME]",
"Keeps the last checkpoint it cosigned in DIR/latest (and each in\n"
"DIR/SIZE.note).  Given kmsd's latest, it checks the audit key's\n"
"signature and the RFC 9162 consistency proof from the one it holds,\n"
"then appends its own signed-note signature (Ed25519 PEM key, key name\n"
"NAME, default kms-witness).  A fork or a truncation is refused with both\n"
"checkpoints, exit 1.  Run it as an auditor, from a machine of its own.\n"
"After \"audit witness\", --key is the witness's key (--witness-key is the\n"
"same); give the client certificate with --as or before the command.\n"
"\n"
"Example:\n"
"  kmsctl --as auditor audit witness --state /var/lib/witness \\\n"
"      --key witness.pem --pubkey audit-key.pem\n" },
	{ "audit", "report", 1, NULL, audit_report_cmd,
	  "write an HTML report of an audit log, offline",
	  "audit report [--since RFC3339] [--until RFC3339] -o REPORT.html [PATH]",
"One self-contained HTML file (charts drawn as inline SVG, no scripts, no\n"
"external resources): the verification verdict per chain, operations over\n"
"time per identity and per key, every denial and error, key lifecycle\n"
"events, OTA manifests signed per app and channel, the top identities and\n"
"keys.  PATH is the audit directory ($KMS_HOME/audit by default).\n"
"\n"
"Options:\n"
"  --since T, --until T   only records in [T, T) (RFC 3339)\n"
"  -o FILE                the report (required)\n"
"  --pubkey PEM           the audit key to trust for the verdict\n"
"\n"
"Example:\n"
"  kmsctl audit report --since 2026-01-01T00:00:00Z -o q1.html /backup/audit\n" },
	{ "ota", "seal", 0, NULL, kmsb_cmd,
	  "make a signed, encrypted kms OTA bundle (signer)",
	  "ota seal --key NAME[:VER] --app A --channel C --version V --seq N\n"
	  "       [--expires-in S] [--chunk-size N] --recipient PUB.pem ...\n"
	  "       --statement FILE -o OUT IN",
"Options:\n"
"  --key NAME[:VER]     the signing key (named by the statement)\n"
"  --app A, --channel C the application id and release channel\n"
"  --version V          the release's version string\n"
"  --seq N              its sequence number (devices refuse lower ones)\n"
"  --expires-in S       seconds of validity (default 30 days)\n"
"  --chunk-size N       1024 to 1048576 bytes per encrypted chunk\n"
"  --recipient PUB.pem  a device's X25519 key (ota keygen); up to 16\n"
"  --statement FILE     the signing-key statement (ota statement)\n"
"  -o OUT               the bundle, written whole or not at all\n"
"\n"
"The payload is encrypted and hashed here; only the manifest goes to kms\n"
"to be signed.  Format: docs/bundle-format.md.\n"
"\n"
"Example:\n"
"  kmsctl --as ci ota seal --key ota/myapp/sign --app com.example.app \\\n"
"      --channel production --version 2.4.1 --seq 42 \\\n"
"      --recipient DEVICE.pub --statement statement.kmss \\\n"
"      -o app-2.4.1.kmsb app-2.4.1.zip\n" },
	{ "ota", "statement", 0, NULL, kmsb_cmd,
	  "sign the list of OTA signing keys with the root key (signer)",
	  "ota statement --root-key NAME[:VER] --app A --signing-key NAME[:VER]\n"
	  "       [--signing-key ...] --seq N --expires-in S [--key-expires-in S]\n"
	  "       -o FILE",
"Options:\n"
"  --root-key NAME[:VER]     the root key whose public key the app embeds\n"
"  --signing-key NAME[:VER]  a key allowed to sign bundles; up to 8\n"
"  --app A                   the application id\n"
"  --seq N                   the statement's sequence number\n"
"  --expires-in S            seconds of validity of the statement\n"
"  --key-expires-in S        seconds of validity of each signing key\n"
"  -o FILE                   the statement\n"
"\n"
"Example:\n"
"  kmsctl --as ci ota statement --root-key ota/myapp/root \\\n"
"      --app com.example.app --signing-key ota/myapp/sign --seq 1 \\\n"
"      --expires-in 2592000 -o statement.kmss\n" },
	{ "ota", "keygen", 1, NULL, ota_keygen_run,
	  "make a device's X25519 key pair, offline",
	  "ota keygen -o PRIVATE.pem --pub PUBLIC.pem",
"The private key is written mode 0600; it stays on the device.\n"
"\n"
"Example:\n"
"  kmsctl ota keygen -o device.key --pub device.pub\n" },
	{ "bundle", "encrypt", 0, NULL, bundle_cmd,
	  "encrypt a Capgo bundle, signing with an RSA_RAW_PKCS1_2048 key",
	  "bundle encrypt --format capgo --key NAME [--version N] -o OUT.zip IN.zip",
"Prints ivSessionKey and checksum (as JSON with --json), ready for\n"
"capgo bundle upload --iv-session-key ... --encrypted-checksum ...\n"
"\n"
"Example:\n"
"  kmsctl --as ci --json bundle encrypt --format capgo --key ota/capgo \\\n"
"      -o app.enc.zip app.zip\n" },
	{ "bundle", "decrypt", 0, bundle_cmd_offline, bundle_cmd,
	  "check and decrypt a Capgo bundle as a device does",
	  "bundle decrypt --format capgo (--pubkey PEM | --key NAME [--version N])\n"
	  "       --iv-session-key S --checksum HEX -o OUT.zip IN.zip",
"With --pubkey it needs no server and no certificate.\n"
"\n"
"Example:\n"
"  kmsctl bundle decrypt --format capgo --pubkey capgo.pem \\\n"
"      --iv-session-key IV:KEY --checksum HEX -o app.zip app.enc.zip\n" },
	{ "bundle", "verify", 0, bundle_cmd_offline, bundle_cmd,
	  "check a Capgo bundle's signature and checksum",
	  "bundle verify --format capgo (--pubkey PEM | --key NAME [--version N])\n"
	  "       --iv-session-key S --checksum HEX IN.zip",
"With --pubkey it needs no server and no certificate.\n"
"\n"
"Example:\n"
"  kmsctl bundle verify --format capgo --pubkey capgo.pem \\\n"
"      --iv-session-key IV:KEY --checksum HEX app.enc.zip\n" },
	{ NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL }
};
