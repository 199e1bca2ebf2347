/*
 * `authz-replicator verify`: do the regions hold the same policy set?
 *
 * Connects to the authz store (PostgreSQL) of every region, each read in
 * one REPEATABLE READ READ ONLY transaction, and compares, for each origin
 * O, the rows of O (users, memberships, policies, tombstones included) up
 * to the watermark every region has applied, W_O = min over regions of
 * applied_hlc[O]. Rows above W_O may still be on their way and are not
 * compared. The rule and the output are in docs/replication.md, "verify".
 *
 * Settings (the replicator's configuration): service.region,
 * service.regions, pg.url (this region's store), and a section "verify"
 * mapping a region name to the PostgreSQL URL of its store (this region
 * defaults to pg.url); verify.connect_timeout_ms bounds the connection
 * attempts to each store (default 5000).
 */
#ifndef RP_VERIFY_H
#define RP_VERIFY_H

#include <stdio.h>

#include "common/config.h"
#include "common/err.h"
#include "common/log.h"

/* Exit statuses of rp_verify_main, the process's exit status as is. */
enum rp_verify_status {
    RP_VERIFY_AGREE = 0,       /* every region agrees on every origin */
    RP_VERIFY_DISAGREE = 1,    /* some region differs (or verify itself failed) */
    RP_VERIFY_BAD_CONFIG = 2,  /* the configuration is unusable */
    RP_VERIFY_UNREACHABLE = 3  /* a region's store could not be reached or read */
};

/*
 * Runs the comparison and writes its JSON lines to stdout (one per region
 * and origin, one per origin with differences, a summary last); progress
 * and errors go to `log` (may be NULL). cfg and log are borrowed. Returns
 * an rp_verify_status; for anything but RP_VERIFY_AGREE, e holds the
 * reason, with e->code AZC_ECONFLICT when regions disagree, AZC_EINVAL for
 * a bad configuration, AZC_EUNAVAIL for an unreachable region, another
 * code when verify itself failed (then the status is RP_VERIFY_DISAGREE).
 */
int rp_verify_main(const azc_config *cfg, azc_log *log, azc_err *e);

/* Same, writing the JSON lines to `out` (borrowed). */
int rp_verify_run(const azc_config *cfg, azc_log *log, FILE *out, azc_err *e);

#endif
