/*
 * admin.h: kmsd's store commands, run instead of serving (kmsd(8)):
 *
 *   kmsd --config F --migrate-store FROM:TO [--dry-run]
 *   kmsd --config F --gc-orphans [--apply]
 *
 * Both print what they find and do on stdout and return kmsd's exit
 * status: 0 when everything was done (or, in a dry run, could be done),
 * 1 otherwise.  docs/etcd.md describes them.
 */
#ifndef KMS_ADMIN_H
#define KMS_ADMIN_H

struct audit_key;
struct service;

/*
 * Copies every key document and counter of one store into the other
 * (spec "token:etcd" or "etcd:token") where it is absent or older,
 * under the destination's claim STORE_CLAIM_ALONE (refused while a kmsd
 * serves from the destination).  A document newer in the destination,
 * or different at the same generation, is kept and reported.  Running it
 * again changes nothing.  With dry_run nothing is written.
 */
int admin_migrate_store(struct service *svc, const char *spec, int dry_run);

/*
 * Lists the key objects of versions (labels NAME#VERSION#RANDOM) that no
 * document of svc's configured store references and, with apply,
 * destroys them, each audited first.  An object is certainly an orphan
 * when its key's document holds that version with other material, or as
 * DESTROYED; one of a version not recorded (yet) may belong to a change
 * in flight, and is one only when no kmsd serves from the store.  The
 * records go to the audit chain "kmsd-admin" (svc->audit, closed before
 * the store it anchors in; its key *akey is closed by the caller).
 */
int admin_gc_orphans(struct service *svc, struct audit_key *akey,
    int apply);

#endif /* KMS_ADMIN_H */
