/*
 * health.h: whether kmsd can do its work (the HSM answers, the audit log
 * can be written), probed once a second by the main thread; the answer
 * feeds the systemd watchdog and the plaintext health port.
 */
#ifndef KMS_HEALTH_H
#define KMS_HEALTH_H

struct audit;
struct hsm;
struct kms_status;

/*
 * 0 when the HSM answers a call on a new session and the audit chain's
 * directory is writable with space left; else KMS_ERR_UNAVAILABLE with
 * the reason in st.
 */
int health_probe(struct hsm *hsm, struct audit *audit, struct kms_status *st);

/*
 * systemd's notification protocol (sd_notify); every call is a no-op
 * when kmsd was not started by systemd.
 */
struct watchdog;

/*
 * Reads $WATCHDOG_USEC.  listen is the configured address and port the
 * one bound, which the watchdog connects to.  Returns 0 or KMS_ERR_NOMEM.
 */
int watchdog_open(const char *listen, int port, struct watchdog **out);
void watchdog_free(struct watchdog *w);
/* READY=1 with a status line. */
void watchdog_ready(const char *status);
/* STOPPING=1 */
void watchdog_stopping(void);
/*
 * Called once a second with the last probe's result: sends WATCHDOG=1,
 * at the pace systemd asked for, only when healthy and a TCP connection
 * to the listener is accepted.
 */
void watchdog_tick(struct watchdog *w, int healthy);

#endif /* KMS_HEALTH_H */
