/*
 * rpclog.h: routes gRPC's own log into kmsd's (log.h).
 */
#ifndef KMS_RPCLOG_H
#define KMS_RPCLOG_H

/* Call once at start-up, after the log format is set, before grpc_init. */
void rpc_log_init(void);

#endif /* KMS_RPCLOG_H */
