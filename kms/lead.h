/*
 * lead.h: who uses an etcd store, and which instance runs the scheduled
 * rotations and destructions (lead.c; docs/etcd.md, "Scheduling").
 *
 * Every serving kmsd holds a lease of LEAD_TTL_SECONDS, kept alive every
 * LEAD_TICK_MS by a thread of its own, and under it:
 *  - its presence, PREFIX "instances/" RANDOM, so that a store command
 *    knows an instance serves (store_claim);
 *  - when it is the leader, PREFIX "leader" (created only where absent),
 *    which makes it the one instance that runs the scheduled changes.
 * A leader that dies takes its lease with it at most LEAD_TTL_SECONDS
 * later; the others try to create the key every tick, and one of them
 * leads from then on.  A store command holds PREFIX "alone" under a
 * lease of its own instead, refused while any instance is present, and
 * no instance starts while it exists.
 */
#ifndef KMS_LEAD_H
#define KMS_LEAD_H

#include "store.h"

#define LEAD_TTL_SECONDS 5
#define LEAD_TICK_MS 1000

struct etcd;
struct kms_status;
struct lead;

/*
 * Claims the store under prefix for how (see store_claim), with a lease
 * kept alive until lead_free; KMS_ERR_UNAVAILABLE when refused, or when
 * etcd does not answer.
 */
int lead_open(struct etcd *e, const char *prefix, enum store_claim how,
    struct lead **out, struct kms_status *st);

/*
 * 1 when this instance leads (holds PREFIX "leader" under a lease kept
 * alive within the last LEAD_TTL_SECONDS - 1 s), else 0; 1 for NULL (no
 * claim: nothing to share the work with).
 */
int lead_leads(struct lead *l);

/* Stops the keep-alive and revokes the lease (a leader hands over at once). */
void lead_free(struct lead *l);

#endif /* KMS_LEAD_H */
