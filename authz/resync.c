/*
 * Staging and replacement of an origin's state by a resync; see resync.h
 * and docs/authz.md.
 *
 * Why stage instead of applying as the events arrive: the state is a
 * replacement, and what it replaces is only known at the end (the rows it
 * did not re-assert). Applying it piecemeal would expose a mixture of the
 * old and the new state to checks for as long as the resync takes, and a
 * resync cut short would leave that mixture behind.
 *
 * Why the staged events are read back in pages: a large state (tens of
 * thousands of events) must not be held in memory at once.
 */
#include "authz/resync.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/apply.h"
#include "common/pg.h"

static const char SQL_LOAD[] =
    "SELECT b.epoch, b.seq, b.hlc, s.last_seq, s.n"
    "  FROM authz.resync_staging b,"
    "       (SELECT max(seq) AS last_seq, count(*) - 1 AS n FROM authz.resync_staging"
    "         WHERE origin = $1) s"
    " WHERE b.origin = $1 AND b.type = 'resync.begin'";
static const char SQL_DISCARD[] = "DELETE FROM authz.resync_staging WHERE origin = $1";
static const char SQL_STAGE[] =
    "INSERT INTO authz.resync_staging (origin, seq, epoch, hlc, event_id, type, raw)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)";
static const char SQL_STAGED_ID[] =
    "SELECT event_id FROM authz.resync_staging WHERE origin = $1 AND seq = $2";
static const char SQL_COUNTS[] =
    "SELECT type, count(*) FROM authz.resync_staging"
    " WHERE origin = $1 AND type <> 'resync.begin' GROUP BY type";
#define PAGE 500
static const char SQL_PAGE[] =
    "SELECT seq, raw FROM authz.resync_staging"
    " WHERE origin = $1 AND seq > $2 AND type <> 'resync.begin' ORDER BY seq LIMIT $3";

/* Rows the resync did not re-assert: older than its begin. $1 origin, $2
 * the end's hlc, $3 its seq, $4 the begin's hlc. */
static const char *const SQL_TOMBSTONES[] = {
    "UPDATE authz.users SET deleted = true, hlc = $2, origin_seq = $3"
    " WHERE origin = $1 AND NOT deleted AND hlc < $4",
    "UPDATE authz.memberships SET deleted = true, hlc = $2, origin_seq = $3"
    " WHERE origin = $1 AND NOT deleted AND hlc < $4",
    "UPDATE authz.policies SET deleted = true, hlc = $2, origin_seq = $3"
    " WHERE origin = $1 AND NOT deleted AND hlc < $4",
    "UPDATE authz.roles SET deleted = true, hlc = $2, origin_seq = $3"
    " WHERE origin = $1 AND NOT deleted AND hlc < $4",
};

/* The ids of the older epochs say nothing about the new one. */
static const char SQL_IDS_DROP[] = "DELETE FROM authz.applied_events WHERE origin = $1";
static const char SQL_IDS_FROM_STAGING[] =
    "INSERT INTO authz.applied_events (origin, seq, event_id)"
    " SELECT origin, seq, event_id FROM authz.resync_staging WHERE origin = $1";
static const char SQL_ID_END[] =
    "INSERT INTO authz.applied_events (origin, seq, event_id) VALUES ($1, $2, $3)";

int az_resync_load(PGconn *c, const char *origin, az_resync *out, azc_err *e)
{
    PGresult *res = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = azc_pg_query(c, SQL_LOAD, 1, &origin, &res, e)) != AZC_OK)
        return rc;
    if (PQntuples(res) == 1) {
        out->epoch = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        out->begin_seq = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        out->begin_hlc = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        out->last_seq = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        out->staged = strtoull(PQgetvalue(res, 0, 4), NULL, 10);
    }
    PQclear(res);
    return AZC_OK;
}

static int stage_row(PGconn *c, const azc_event *ev, const void *raw, size_t len, azc_err *e)
{
    char seq[24], epoch[24], hlc[24];
    const char *p[7] = { ev->origin, seq, epoch, hlc, ev->id, azc_event_type_name(ev->type),
                         raw != NULL ? raw : "" };
    int lens[7] = { 0, 0, 0, 0, 0, 0, (int)len };
    int fmts[7] = { 0, 0, 0, 0, 0, 0, 1 };
    PGresult *res;
    int rc = AZC_OK;

    snprintf(seq, sizeof seq, "%" PRIu64, ev->seq);
    snprintf(epoch, sizeof epoch, "%" PRIu64, ev->epoch);
    snprintf(hlc, sizeof hlc, "%" PRIu64, ev->hlc);
    /* The envelope goes in binary format, exactly as it was read. */
    res = PQexecParams(c, SQL_STAGE, 7, NULL, p, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = azc_err_set(e, PQstatus(c) == CONNECTION_OK ? AZC_ERROR : AZC_EUNAVAIL,
                         "resync staging: %s", PQerrorMessage(c));
    PQclear(res);
    return rc;
}

int az_resync_start(PGconn *c, const azc_event *ev, const void *raw, size_t len, az_resync *rs,
                    azc_err *e)
{
    const char *origin = ev->origin;
    int rc;

    if ((rc = azc_pg_query(c, SQL_DISCARD, 1, &origin, NULL, e)) != AZC_OK ||
        (rc = stage_row(c, ev, raw, len, e)) != AZC_OK)
        return rc;
    rs->epoch = ev->epoch;
    rs->begin_seq = rs->last_seq = ev->seq;
    rs->begin_hlc = ev->hlc;
    rs->staged = 0;
    return AZC_OK;
}

int az_resync_stage(PGconn *c, const azc_event *ev, const void *raw, size_t len, az_resync *rs,
                    azc_err *e)
{
    int rc;

    if ((rc = stage_row(c, ev, raw, len, e)) != AZC_OK)
        return rc;
    rs->last_seq = ev->seq;
    rs->staged++;
    return AZC_OK;
}

int az_resync_staged_id(PGconn *c, const char *origin, uint64_t seq, char *found_id, azc_err *e)
{
    char s[24];
    const char *p[2] = { origin, s };
    PGresult *res = NULL;
    int rc;

    found_id[0] = '\0';
    snprintf(s, sizeof s, "%" PRIu64, seq);
    if ((rc = azc_pg_query(c, SQL_STAGED_ID, 2, p, &res, e)) != AZC_OK)
        return rc;
    if (PQntuples(res) == 1)
        snprintf(found_id, AZC_UUID_LEN, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return AZC_OK;
}

static int check_counts(PGconn *c, const azc_event *end, azc_err *e)
{
    long long staged[AZ_RESYNC_KINDS] = { 0 };
    const char *origin = end->origin;
    PGresult *res = NULL;
    int i, rc;

    if ((rc = azc_pg_query(c, SQL_COUNTS, 1, &origin, &res, e)) != AZC_OK)
        return rc;
    for (i = 0; i < PQntuples(res); i++) {
        azc_event_type t;
        int k;

        /* Only state types are ever staged after the begin. */
        if (azc_event_type_parse(PQgetvalue(res, i, 0), &t, NULL) != AZC_OK ||
            (k = az_resync_kind(t)) < 0) {
            rc = azc_err_set(e, AZC_EINVAL, "resync: a %s event is staged",
                             PQgetvalue(res, i, 0));
            break;
        }
        staged[k] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    if (rc != AZC_OK)
        return rc;
    for (i = 0; i < AZ_RESYNC_KINDS; i++) {
        long long want = (long long)json_integer_value(json_object_get(end->data,
                                                                       az_resync_kinds[i]));

        if (want != staged[i])
            return azc_err_set(e, AZC_EINVAL,
                               "resync of epoch %" PRIu64 " is incomplete: resync.end counts %lld"
                               " %s, %lld were received",
                               end->epoch, want, az_resync_kinds[i], staged[i]);
    }
    return AZC_OK;
}

/* Applies one page of staged events after seq *after; *n is how many. */
static int apply_page(PGconn *c, const char *origin, uint64_t *after, int *n, azc_err *e)
{
    char a[24], lim[16];
    const char *p[3] = { origin, a, lim };
    PGresult *res = NULL;
    int i, rc;

    snprintf(a, sizeof a, "%" PRIu64, *after);
    snprintf(lim, sizeof lim, "%d", PAGE);
    if ((rc = azc_pg_query(c, SQL_PAGE, 3, p, &res, e)) != AZC_OK)
        return rc;
    *n = PQntuples(res);
    for (i = 0; i < *n && rc == AZC_OK; i++) {
        size_t len = 0;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &len);
        azc_event ev;
        azc_err ae;

        *after = strtoull(PQgetvalue(res, i, 0), NULL, 10);
        if (raw == NULL) {
            rc = azc_err_set(e, AZC_ENOMEM, "resync: out of memory");
            break;
        }
        if (azc_event_decode(raw, len, &ev, &ae) != AZC_OK ||
            az_event_data_check(&ev, &ae) != AZC_OK) {
            rc = azc_err_set(e, AZC_EINVAL, "resync event seq %" PRIu64 ": %s", *after, ae.msg);
        } else {
            rc = az_event_apply(c, &ev, &ae);
            if (rc == AZC_EINVAL || rc == AZC_ECONFLICT)
                rc = azc_err_set(e, AZC_EINVAL, "resync event seq %" PRIu64 " does not apply: %s",
                                 *after, ae.msg);
            else if (rc != AZC_OK)
                *e = ae;
        }
        azc_event_clear(&ev);
        PQfreemem(raw);
    }
    PQclear(res);
    return rc;
}

int az_resync_finish(PGconn *c, const azc_event *end, const az_resync *rs, azc_err *e)
{
    char eh[24], es[24], bh[24];
    const char *origin = end->origin;
    const char *pt[4] = { origin, eh, es, bh };
    const char *pid[3] = { origin, es, end->id };
    uint64_t after = rs->begin_seq;
    size_t i;
    int n = PAGE, rc;

    if ((rc = check_counts(c, end, e)) != AZC_OK)
        return rc;
    while (n == PAGE) {
        if ((rc = apply_page(c, origin, &after, &n, e)) != AZC_OK)
            return rc;
    }
    snprintf(eh, sizeof eh, "%" PRIu64, end->hlc);
    snprintf(es, sizeof es, "%" PRIu64, end->seq);
    snprintf(bh, sizeof bh, "%" PRIu64, rs->begin_hlc);
    for (i = 0; i < sizeof SQL_TOMBSTONES / sizeof SQL_TOMBSTONES[0]; i++) {
        if ((rc = azc_pg_query(c, SQL_TOMBSTONES[i], 4, pt, NULL, e)) != AZC_OK)
            return rc;
    }
    if ((rc = azc_pg_query(c, SQL_IDS_DROP, 1, &origin, NULL, e)) != AZC_OK ||
        (rc = azc_pg_query(c, SQL_IDS_FROM_STAGING, 1, &origin, NULL, e)) != AZC_OK ||
        (rc = azc_pg_query(c, SQL_ID_END, 3, pid, NULL, e)) != AZC_OK)
        return rc;
    return azc_pg_query(c, SQL_DISCARD, 1, &origin, NULL, e);
}
