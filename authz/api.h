/*
 * The authz server's HTTP API (docs/authz.md): the route table and the
 * check and status handlers; the change feed is feed.c's, the snapshot
 * snapshot.c's.
 */
#ifndef AZ_API_H
#define AZ_API_H

#include "authz/worker.h"

/* Registers every route of the API on w->http. */
int az_api_register(az_worker *w, azc_err *e) AZC_WARN_UNUSED;

/* Route handlers; arg is the az_worker. */
void az_check_handler(azc_http_req *r, void *arg);
void az_status_handler(azc_http_req *r, void *arg);

#endif
