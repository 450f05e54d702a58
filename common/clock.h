/*
 * clock.h: the monotonic clock in milliseconds, and short pauses.
 */
#ifndef KMS_CLOCK_H
#define KMS_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC: for deadlines and periods only. */
int64_t clock_ms(void);

/* Sleeps ms milliseconds (less when a signal interrupts it). */
void clock_pause_ms(unsigned int ms);

#endif /* KMS_CLOCK_H */
