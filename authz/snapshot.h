/*
 * GET /v1/policy/snapshot: the whole policy set with tombstones, streamed
 * from one repeatable-read transaction (see snapshot.c).
 */
#ifndef AZ_SNAPSHOT_H
#define AZ_SNAPSHOT_H

#include "authz/worker.h"

/* Route handler; arg is the az_worker. */
void az_snapshot_handler(azc_http_req *r, void *arg);

#endif
