/*
 * Applying what a peer sent (one feed answer, or its whole snapshot) to
 * this region's policy store, in one transaction with the peer's cursor
 * and the watermarks it reported (docs/replication.md, "Rules").
 */
#ifndef RP_APPLY_H
#define RP_APPLY_H

#include <jansson.h>
#include <libpq-fe.h>

#include "common/err.h"
#include "common/log.h"

enum { RP_KIND_USER = 0, RP_KIND_MEMBERSHIP, RP_KIND_POLICY, RP_NKINDS };

/* The kind names of the feed ("user", "membership", "policy"). */
extern const char *const rp_kind_names[RP_NKINDS];

typedef struct rp_apply_ctx {
    const char *region;   /* this region: rows of this origin are skipped */
    const char *peer;     /* the peer the rows came from */
    azc_log *log;         /* borrowed, may be NULL */
} rp_apply_ctx;

/* What one transaction did, for the metrics (filled only on success). */
typedef struct rp_apply_result {
    long long applied[RP_NKINDS]; /* rows that replaced or created a local row */
    long long own_origin;         /* rows of this region's origin, skipped */
    long long older;              /* rows not newer than the local one, skipped */
    long long dead;               /* rows moved to authz.replication_dead_letters */
    long long cursor;             /* the cursor stored */
    int watermarks_raised;        /* some origin's watermark went up */
} rp_apply_result;

/*
 * Applies one 200 answer of GET /v1/policy/changes (body borrowed) after
 * cursor `after`. AZC_EINVAL with the reason when the answer itself is not
 * a feed answer (then nothing is written); AZC_EUNAVAIL when the database
 * is gone (rolled back); AZC_ERROR for other database failures.
 */
int rp_apply_feed(PGconn *c, const rp_apply_ctx *ctx, json_t *body, long long after,
                  rp_apply_result *res, azc_err *e) AZC_WARN_UNUSED;

/* Same for a GET /v1/policy/snapshot document: every row LWW, the
 * snapshot's cursor stored with resynced_at, its watermarks adopted. */
int rp_apply_snapshot(PGconn *c, const rp_apply_ctx *ctx, json_t *body, rp_apply_result *res,
                      azc_err *e) AZC_WARN_UNUSED;

/* The stored cursor of `peer` into *cursor, or -1 when there is none
 * (bootstrap from the snapshot). */
int rp_cursor_load(PGconn *c, const char *peer, long long *cursor, azc_err *e) AZC_WARN_UNUSED;

#endif
