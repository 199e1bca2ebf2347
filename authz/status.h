/*
 * The consumer's status as the HTTP workers see it: a copy taken under
 * the status lock of az_shared, and the progress judgement (a consumer
 * that is running but cannot make progress is "stalled"). The consumer
 * thread writes the status (consumer.c); /v1/status, /readyz and the
 * stall gauge read it through here.
 */
#ifndef AZ_STATUS_H
#define AZ_STATUS_H

#include <stdint.h>

#include "authz/service.h"

/* Milliseconds of CLOCK_MONOTONIC: the clock of every age in the status. */
int64_t az_mono_ms(void);

/* Copies the consumer status out under its lock, as the consumer left it. */
void az_status_get(az_shared *sh, az_consumer_status *out);

/*
 * az_status_get, then judges progress: a running consumer whose batches
 * have kept rolling back, or that has received no message at all (the
 * relay sends a heartbeat every 200 ms), for longer than
 * consumer.stall_ms is reported as AZ_CONSUMER_STALLED with
 * out->stall_reason; sets authz_consumer_stalled. Any thread.
 */
void az_consumer_status_get(az_shared *sh, az_consumer_status *out);

#endif
