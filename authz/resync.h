/*
 * Resynchronisation of an origin (docs/authz.md, "Epochs and resync"): a
 * new epoch of the origin opens with resync.begin, carries the origin's
 * whole authorization state as ordinary creation events and closes with
 * resync.end. The consumer stages those events in authz.resync_staging
 * (committed with its position, so a crash resumes mid-resync) and, at the
 * end, replaces the origin's rows with the staged state in its batch
 * transaction. Every function runs on the caller's open transaction.
 */
#ifndef AZ_RESYNC_H
#define AZ_RESYNC_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/event.h"

/* A resync being staged for one origin. */
typedef struct az_resync {
    uint64_t epoch;                 /* 0: none in progress */
    uint64_t begin_seq, begin_hlc;
    uint64_t last_seq;              /* newest staged seq (begin_seq at first) */
    uint64_t staged;                /* state events staged after the begin */
} az_resync;

/* Loads the resync in progress for origin from the staging table (epoch 0
 * when there is none). */
int az_resync_load(PGconn *c, const char *origin, az_resync *out, azc_err *e) AZC_WARN_UNUSED;

/* Drops whatever is staged for origin and stages the begin event ev (its
 * raw envelope raw[0..len)); *rs describes the new resync. */
int az_resync_start(PGconn *c, const azc_event *ev, const void *raw, size_t len, az_resync *rs,
                    azc_err *e) AZC_WARN_UNUSED;

/* Stages one state event (checked, seq = rs->last_seq + 1) and advances
 * *rs. */
int az_resync_stage(PGconn *c, const azc_event *ev, const void *raw, size_t len, az_resync *rs,
                    azc_err *e) AZC_WARN_UNUSED;

/* The id of the staged event at seq in *found_id (AZC_UUID_LEN bytes; ""
 * when nothing is staged there). */
int az_resync_staged_id(PGconn *c, const char *origin, uint64_t seq, char *found_id,
                        azc_err *e) AZC_WARN_UNUSED;

/*
 * Applies the resync closed by end (checked resync.end, seq =
 * rs->last_seq + 1): verifies end's counts against the staged events,
 * applies them in seq order (last writer wins), tombstones every live row
 * of the origin in users, memberships, policies and roles that the resync
 * did not re-assert (hlc below the begin's), makes the staged ids (and
 * end's) the origin's applied ids and empties the staging. The caller
 * stores the watermarks and wraps the call in a savepoint.
 *
 * AZC_EINVAL when the resync cannot be applied (counts differ, a staged
 * event does not apply): nothing is meant to be kept then. Other codes are
 * database failures.
 */
int az_resync_finish(PGconn *c, const azc_event *end, const az_resync *rs,
                     azc_err *e) AZC_WARN_UNUSED;

#endif
