/*
 * Hybrid logical clock (DESIGN section 4): 64 bits, the high 48 bits are
 * milliseconds since the Unix epoch, the low 16 bits a counter.
 *
 * azc_hlc_now never returns a value <= one it returned before, even when
 * the wall clock steps back: it then keeps the last millisecond and counts
 * up, carrying into the millisecond field when the counter is full. A
 * received HLC far ahead of the local wall clock is refused rather than
 * adopted, so one peer with a broken clock cannot drag every region's
 * clock into the future.
 *
 * Not thread-safe: one clock per writer, guarded by its owner.
 */
#ifndef AZC_HLC_H
#define AZC_HLC_H

#include <stdint.h>

#include "common/err.h"

typedef uint64_t azc_hlc_t;

#define AZC_HLC_COUNTER_BITS 16
#define AZC_HLC_MS(h) ((uint64_t)(h) >> AZC_HLC_COUNTER_BITS)
#define AZC_HLC_COUNTER(h) ((uint64_t)(h) & 0xffffu)
#define AZC_HLC_MAKE(ms, c) (((uint64_t)(ms) << AZC_HLC_COUNTER_BITS) | ((uint64_t)(c) & 0xffffu))
#define AZC_HLC_MAX_MS ((UINT64_C(1) << 48) - 1)

/* Milliseconds since the epoch; the default reads CLOCK_REALTIME. */
typedef uint64_t (*azc_wall_clock_fn)(void *arg);

typedef struct azc_hlc azc_hlc;

/* New clock. `wall` may be NULL for the real clock (tests inject one).
 * `max_drift_ms` bounds how far ahead of the wall clock a received HLC may
 * be. Returns NULL when out of memory. */
azc_hlc *azc_hlc_new(azc_wall_clock_fn wall, void *arg, uint64_t max_drift_ms);
void azc_hlc_free(azc_hlc *h);

/* Raises the clock to at least `floor` (e.g. the last HLC persisted before
 * a restart), so values after a restart stay above those before it. */
void azc_hlc_restore(azc_hlc *h, azc_hlc_t floor);

/* Next local timestamp, strictly greater than every value this clock
 * returned or observed. */
azc_hlc_t azc_hlc_now(azc_hlc *h);

/* Observes a received timestamp and returns in *out a local timestamp
 * greater than both it and every earlier value. AZC_EINVAL if `remote` is
 * more than max_drift_ms ahead of the wall clock (the clock is unchanged). */
int azc_hlc_update(azc_hlc *h, azc_hlc_t remote, azc_hlc_t *out, azc_err *e) AZC_WARN_UNUSED;

/* The last value issued or observed (0 before any). */
azc_hlc_t azc_hlc_last(const azc_hlc *h);

/* Wall clock in milliseconds (CLOCK_REALTIME). */
uint64_t azc_wall_ms(void);

#endif
