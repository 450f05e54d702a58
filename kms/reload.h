/*
 * reload.h: SIGHUP.  Reloads the server certificate and key, the CA
 * bundle, the CRL and the policy as one set: every file is read and
 * checked first, the reload is audited (rpc "Reload", what changed,
 * accepted or refused), and only then is the new set swapped in.  A
 * broken file, or an audit record that cannot be written, keeps the old
 * set in force.
 */
#ifndef KMS_RELOAD_H
#define KMS_RELOAD_H

#include <stdint.h>

#include "tlsctx.h"

struct rpc_server;
struct service;

/* What the files held at the last accepted load, to say what changed. */
struct reload_state {
	uint8_t tls[TLS_FILE_COUNT][32];
	uint8_t policy[32];
};

/* Records the digests of the files as they are now (at start-up). */
void reload_init(struct reload_state *rs, const struct service *svc);

/*
 * Reloads everything (see above).  Returns 0 when the new set is in
 * force, an error code when the old one stays; logs either way.
 */
int reload_run(struct reload_state *rs, struct service *svc,
    struct rpc_server *srv);

#endif /* KMS_RELOAD_H */
