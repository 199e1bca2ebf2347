/*
 * Worker 0's periodic timer (see tick.c).
 */
#ifndef AZ_TICK_H
#define AZ_TICK_H

#include <event2/util.h>

#include "authz/worker.h"

/* Sets authz_lag_seconds{origin} and authz_origin_silence_seconds{origin}
 * from the stored watermarks and prunes the change feed every
 * feed.prune_interval_ms, at most feed.prune_batch rows a tick (a prune
 * that hit the bound runs again on the next tick). arg is the az_worker. */
void az_tick_cb(evutil_socket_t fd, short what, void *arg);

#endif
