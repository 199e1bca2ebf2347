/*
 * Check and status handlers, the route table, and worker 0's periodic
 * tick (lag gauges, feed pruning). Check semantics: docs/authz.md.
 */
#include "authz/api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hlc.h"
#include "common/pg.h"
#include "common/policy.h"
#include "common/revision.h"

/* One round trip: the first granting assignment (if any), the applied HLC
 * of the revision's origin, and the origin that lags most and by how much
 * (milliseconds). */
static const char SQL_CHECK[] =
    "WITH u AS (SELECT user_id FROM authz.users WHERE subject = $1 AND NOT deleted),"
    " p AS (SELECT 'user'::text AS t, user_id AS id FROM u"
    "       UNION ALL"
    "       SELECT 'team', m.team_id FROM authz.memberships m JOIN u ON m.user_id = u.user_id"
    "        WHERE NOT m.deleted),"
    " lag AS (SELECT origin, (known_hlc >> 16) - (applied_hlc >> 16) AS ms FROM authz.watermarks"
    "          ORDER BY 2 DESC LIMIT 1)"
    " SELECT (SELECT a.assignment_id::text FROM authz.policies a"
    "           JOIN p ON a.principal_type = p.t AND a.principal_id = p.id"
    "          WHERE NOT a.deleted AND a.region IN ($4, '*') AND a.resource IN ($3, $5, '*')"
    "            AND a.permissions && ARRAY[$2, $6, '*']::text[] LIMIT 1),"
    "        (SELECT applied_hlc FROM authz.watermarks WHERE origin = $7),"
    "        (SELECT ms FROM lag), (SELECT origin FROM lag)";

static const char SQL_STATUS[] =
    "SELECT (SELECT coalesce(json_object_agg(origin, json_build_object("
    "          'applied_seq', applied_seq, 'applied_hlc', applied_hlc, 'known_hlc', known_hlc)),"
    "          '{}')::text FROM authz.watermarks),"
    "       (SELECT count(*) FROM authz.dead_letters),"
    "       last_seq, pruned_through FROM authz.feed_state";

static const char SQL_WATERMARKS[] = "SELECT origin, applied_hlc, known_hlc FROM authz.watermarks";

/* Keeps the newest $1 feed rows. One statement: the feed_state row lock
 * orders it with concurrent appends. */
static const char SQL_PRUNE[] =
    "WITH p AS (UPDATE authz.feed_state"
    "              SET pruned_through = greatest(pruned_through, last_seq - $1::bigint)"
    "            RETURNING pruned_through)"
    " DELETE FROM authz.changes WHERE seq <= (SELECT pruned_through FROM p)";

void az_reply_db_error(az_worker *w, azc_http_req *r, const azc_err *e)
{
    azc_log_reqf(w->sh->log, AZC_LOG_ERROR, azc_http_req_id(r), "database: %s", e->msg);
    if (PQstatus(w->pg) != CONNECTION_OK) {
        PQreset(w->pg);
        azc_http_reply_error(r, 503, "unavailable", "the policy store is unavailable");
        return;
    }
    azc_http_reply_error(r, 500, "internal", "the policy store failed");
}

json_t *az_json_or_reply(azc_http_req *r, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);

    if (j == NULL)
        azc_http_reply_error(r, 500, "internal", "the policy store returned malformed JSON");
    return j;
}

/* ---- POST /v1/check ------------------------------------------------------ */

typedef struct check_req {
    const char *subject, *action, *resource, *region;
    azc_revision rev;
    int has_rev;
} check_req;

static int region_known(const az_settings *s, const char *region)
{
    size_t i;

    for (i = 0; i < s->nregions; i++) {
        if (strcmp(s->regions[i], region) == 0)
            return 1;
    }
    return 0;
}

/* Fills q from the body and headers, or replies 400 and returns -1. */
static int check_parse(az_worker *w, azc_http_req *r, check_req *q)
{
    json_t *b = azc_http_req_json(r), *v;
    const char *k, *h;
    azc_err e;

    memset(q, 0, sizeof *q);
    if (!json_is_object(b)) {
        azc_http_reply_error(r, 400, "invalid_request", "the body must be a JSON object");
        return -1;
    }
    json_object_foreach(b, k, v) {
        if (strcmp(k, "subject") != 0 && strcmp(k, "action") != 0 && strcmp(k, "resource") != 0 &&
            strcmp(k, "region") != 0) {
            azc_http_reply_error(r, 400, "invalid_request", "unknown member \"%.64s\"", k);
            return -1;
        }
        if (!json_is_string(v)) {
            azc_http_reply_error(r, 400, "invalid_request", "%s must be a string", k);
            return -1;
        }
    }
    q->subject = json_string_value(json_object_get(b, "subject"));
    q->action = json_string_value(json_object_get(b, "action"));
    q->resource = json_string_value(json_object_get(b, "resource"));
    q->region = json_string_value(json_object_get(b, "region"));
    if (q->subject == NULL || !azc_subject_valid(q->subject)) {
        azc_http_reply_error(r, 400, "invalid_request",
                             "subject must be 1-256 printable characters without spaces");
        return -1;
    }
    if (q->action == NULL || !azc_action_valid(q->action)) {
        azc_http_reply_error(r, 400, "invalid_request", "action must be \"<type>:<verb>\"");
        return -1;
    }
    if (q->resource == NULL || !azc_check_resource_valid(q->resource)) {
        azc_http_reply_error(r, 400, "invalid_request", "resource must be \"<type>/<id>\"");
        return -1;
    }
    if (q->region == NULL)
        q->region = w->sh->set.region;
    else if (!azc_region_valid(q->region) || !region_known(&w->sh->set, q->region)) {
        azc_http_reply_error(r, 400, "invalid_request", "region must be one of service.regions");
        return -1;
    }
    h = azc_http_req_header(r, "Authz-Revision");
    if (h != NULL) {
        if (azc_revision_decode(h, &q->rev, &e) != AZC_OK) {
            azc_http_reply_error(r, 400, "invalid_revision", "Authz-Revision: %s", e.msg);
            return -1;
        }
        if (!region_known(&w->sh->set, q->rev.origin)) {
            azc_http_reply_error(r, 400, "invalid_revision",
                                 "Authz-Revision names an unknown region");
            return -1;
        }
        q->has_rev = 1;
    }
    return 0;
}

void az_check_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    check_req q;
    char awild[80], rwild[80], reason[512];
    const char *p[7];
    const char *decision;
    PGresult *res = NULL;
    azc_err e;
    long long lag_ms = 0;
    int allowed;

    if (check_parse(w, r, &q) != 0)
        return;
    if (azc_action_wildcards(q.action, awild, sizeof awild) != AZC_OK ||
        azc_resource_wildcard(q.resource, rwild, sizeof rwild) != AZC_OK) {
        azc_http_reply_error(r, 400, "invalid_request", "action or resource too long");
        return;
    }
    p[0] = q.subject;
    p[1] = q.action;
    p[2] = q.resource;
    p[3] = q.region;
    p[4] = rwild;
    p[5] = awild;
    p[6] = q.has_rev ? q.rev.origin : NULL;
    if (azc_pg_query(w->pg, SQL_CHECK, 7, p, &res, &e) != AZC_OK) {
        az_reply_db_error(w, r, &e);
        return;
    }
    allowed = !PQgetisnull(res, 0, 0);
    if (!PQgetisnull(res, 0, 2))
        lag_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    if (allowed) {
        decision = "allow";
        snprintf(reason, sizeof reason, "granted by assignment %s", PQgetvalue(res, 0, 0));
    } else if (q.has_rev && (PQgetisnull(res, 0, 1) ||
                             strtoull(PQgetvalue(res, 0, 1), NULL, 10) < q.rev.hlc)) {
        decision = "deny-transient";
        snprintf(reason, sizeof reason, "the revision of %s is not applied in this region yet",
                 q.rev.origin);
    } else if (lag_ms > w->sh->set.transient_lag_ms) {
        decision = "deny-transient";
        snprintf(reason, sizeof reason, "this region lags origin %s by %lld ms",
                 PQgetvalue(res, 0, 3), lag_ms);
    } else {
        decision = "deny";
        snprintf(reason, sizeof reason, "no assignment grants %s on %s in %s", q.action,
                 q.resource, q.region);
    }
    PQclear(res);
    if (azc_metric_inc(w->sh->m_checks, (const char *const[]){ decision, NULL }, 1) != AZC_OK)
        azc_log_reqf(w->sh->log, AZC_LOG_WARN, azc_http_req_id(r), "cannot count a check");
    azc_http_reply_json(r, 200,
                        json_pack("{s:b, s:s, s:s, s:I}", "allowed", allowed, "decision", decision,
                                  "reason", reason, "lag_ms", (json_int_t)(lag_ms > 0 ? lag_ms : 0)));
}

/* ---- GET /v1/status ------------------------------------------------------- */

static const char *state_name(az_consumer_state s)
{
    switch (s) {
    case AZ_CONSUMER_RUNNING:
        return "running";
    case AZ_CONSUMER_STOPPED:
        return "stopped";
    default:
        return "starting";
    }
}

void az_status_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    az_consumer_status cs;
    PGresult *res = NULL;
    json_t *origins, *o, *body;
    const char *name;
    azc_err e;
    uint64_t now = azc_wall_ms();

    if (azc_pg_query(w->pg, SQL_STATUS, 0, NULL, &res, &e) != AZC_OK) {
        az_reply_db_error(w, r, &e);
        return;
    }
    origins = az_json_or_reply(r, PQgetvalue(res, 0, 0));
    if (origins == NULL) {
        PQclear(res);
        return;
    }
    json_object_foreach(origins, name, o) {
        uint64_t applied = (uint64_t)json_integer_value(json_object_get(o, "applied_hlc"));
        uint64_t known = (uint64_t)json_integer_value(json_object_get(o, "known_hlc"));
        uint64_t ams = AZC_HLC_MS(applied);

        if (json_object_set_new(o, "lag_ms", json_integer((json_int_t)(AZC_HLC_MS(known) - ams))) !=
                0 ||
            json_object_set_new(o, "staleness_ms",
                                applied == 0 ? json_null()
                                             : json_integer(now > ams ? (json_int_t)(now - ams) : 0)) !=
                0)
            azc_log_reqf(w->sh->log, AZC_LOG_WARN, azc_http_req_id(r), "status: out of memory");
    }
    az_status_get(w->sh, &cs);
    body = json_pack("{s:s, s:{s:s, s:i, s:I, s:s, s:s?, s:I, s:I}, s:o, s:I, s:{s:s, s:s}}",
                     "region", w->sh->set.region,
                     "consumer", "topic", w->sh->set.topic, "partition", 0,
                     "next_offset", (json_int_t)cs.next_offset, "state", state_name(cs.state),
                     "error", cs.error[0] != '\0' ? cs.error : NULL,
                     "events_applied", (json_int_t)cs.events_applied,
                     "duplicates", (json_int_t)cs.duplicates,
                     "origins", origins,
                     "dead_letters", (json_int_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10),
                     "feed", "cursor", PQgetvalue(res, 0, 2), "pruned_through",
                     PQgetvalue(res, 0, 3));
    PQclear(res);
    azc_http_reply_json(r, 200, body);
}

/* ---- worker 0's tick -------------------------------------------------------- */

void az_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    az_worker *w = arg;
    PGresult *res = NULL;
    char retain[24];
    const char *p = retain;
    long long now = (long long)azc_wall_ms();
    azc_err e;
    int i;

    (void)fd;
    (void)what;
    if (PQstatus(w->pg) != CONNECTION_OK)
        PQreset(w->pg);
    if (azc_pg_query(w->pg, SQL_WATERMARKS, 0, NULL, &res, &e) != AZC_OK) {
        azc_logf(w->sh->log, AZC_LOG_WARN, "tick: %s", e.msg);
        return;
    }
    for (i = 0; i < PQntuples(res); i++) {
        uint64_t applied = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        uint64_t known = strtoull(PQgetvalue(res, i, 2), NULL, 10);

        if (azc_metric_set(w->sh->m_lag, (const char *const[]){ PQgetvalue(res, i, 0), NULL },
                           (double)(AZC_HLC_MS(known) - AZC_HLC_MS(applied)) / 1000.0) != AZC_OK)
            azc_logf(w->sh->log, AZC_LOG_WARN, "tick: cannot set authz_lag_seconds");
    }
    PQclear(res);
    if (now - w->last_prune_ms < w->sh->set.prune_interval_ms)
        return;
    w->last_prune_ms = now;
    snprintf(retain, sizeof retain, "%lld", w->sh->set.feed_retain);
    if (azc_pg_query(w->pg, SQL_PRUNE, 1, &p, &res, &e) != AZC_OK) {
        azc_logf(w->sh->log, AZC_LOG_WARN, "feed prune: %s", e.msg);
        return;
    }
    if (atoi(PQcmdTuples(res)) > 0)
        azc_logf(w->sh->log, AZC_LOG_DEBUG, "feed prune: %s rows removed", PQcmdTuples(res));
    PQclear(res);
}

/* ---- routes ------------------------------------------------------------------ */

int az_api_register(az_worker *w, azc_err *e)
{
    const azc_http_route routes[] = {
        { AZC_HTTP_POST, "/v1/check", az_check_handler, AZC_ROUTE_JSON_BODY, 16 * 1024 },
        { AZC_HTTP_GET, "/v1/status", az_status_handler, 0, 0 },
        { AZC_HTTP_GET, "/v1/policy/changes", az_changes_handler, 0, 0 },
        { AZC_HTTP_GET, "/v1/policy/snapshot", az_snapshot_handler, 0, 0 },
    };

    if (azc_http_add_routes(w->http, routes, sizeof routes / sizeof routes[0], w) != AZC_OK)
        return azc_err_set(e, AZC_ERROR, "cannot register the routes");
    return AZC_OK;
}
