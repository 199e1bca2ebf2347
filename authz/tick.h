/*
 * Worker 0's periodic timer (see tick.c).
 */
#ifndef AZ_TICK_H
#define AZ_TICK_H

#include <event2/util.h>

#include "authz/worker.h"

/* Sets authz_lag_seconds{origin} and authz_origin_silence_seconds{origin}
 * from the stored watermarks and, every feed.prune_interval_ms, prunes
 * the change feed and (feed.collect_tombstones) removes the tombstones
 * every region has applied, each at most feed.prune_batch rows a run (a
 * run that hit the bound runs again on the next tick). arg is the
 * az_worker. */
void az_tick_cb(evutil_socket_t fd, short what, void *arg);

#endif
