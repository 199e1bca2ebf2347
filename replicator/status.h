/*
 * What the replicator shows of itself: its metric families, GET
 * /v1/status and the /readyz rule (every peer reached once).
 */
#ifndef RP_STATUS_H
#define RP_STATUS_H

#include "common/err.h"
#include "common/http.h"
#include "replicator/rp.h"

/* Registers the rp_* families into sh->m. */
int rp_metrics_register(rp_shared *sh, azc_err *e) AZC_WARN_UNUSED;

/* Adds GET /v1/status and the readiness callback to h. */
int rp_status_register(azc_http *h, rp_shared *sh, azc_err *e) AZC_WARN_UNUSED;

#endif
