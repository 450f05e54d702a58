/*
 * healthsrv.h: the plaintext health port (grpc.health.v1.Health only).
 */
#ifndef KMS_HEALTHSRV_H
#define KMS_HEALTHSRV_H

struct healthsrv;
struct kms_status;

/* Listens on listen (HOST:PORT) without TLS; 0 or an error with st. */
int healthsrv_start(const char *listen, struct healthsrv **out,
    struct kms_status *st);
/* What Check answers and Watch streams from now on: SERVING or not. */
void healthsrv_set(struct healthsrv *hs, int serving);
/* Ends every call and frees; NULL is a no-op. */
void healthsrv_stop(struct healthsrv *hs);

#endif /* KMS_HEALTHSRV_H */
