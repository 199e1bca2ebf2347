/*
 * Check and status handlers and the route table. Check semantics:
 * docs/authz.md.
 */
#include "authz/api.h"
#include "authz/feed.h"
#include "authz/snapshot.h"
#include "authz/status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hlc.h"
#include "common/pg.h"
#include "common/policy.h"
#include "common/revision.h"
#include "common/text.h"

/* One round trip: the first granting assignment (if any), the applied and
 * known HLCs of the revision's origin ($7), the origin that lags most and
 * by how much (milliseconds), the origin not heard from for longest and
 * for how long (ms since its row was last rewritten by a heartbeat or an
 * event), the first of the regions $8 (a text[]: this region only, or
 * every configured region with check.expect_regions) never heard from, and
 * the database's clock in ms (the bound for impossible revisions, taken
 * from the database so every worker and host agrees with updated_at). */
static const char SQL_CHECK[] =
    "WITH u AS (SELECT user_id FROM authz.users WHERE subject = $1 AND NOT deleted),"
    " p AS (SELECT 'user'::text AS t, user_id AS id FROM u"
    "       UNION ALL"
    "       SELECT 'team', m.team_id FROM authz.memberships m JOIN u ON m.user_id = u.user_id"
    "        WHERE NOT m.deleted),"
    " w AS (SELECT origin, applied_hlc, known_hlc,"
    "              (known_hlc >> 16) - (applied_hlc >> 16) AS lag_ms,"
    "              floor(extract(epoch FROM now() - updated_at) * 1000)::bigint AS quiet_ms"
    "         FROM authz.watermarks),"
    " lag AS (SELECT origin, lag_ms FROM w ORDER BY lag_ms DESC LIMIT 1),"
    " quiet AS (SELECT origin, quiet_ms FROM w ORDER BY quiet_ms DESC LIMIT 1)"
    " SELECT (SELECT a.assignment_id::text FROM authz.policies a"
    "           JOIN p ON a.principal_type = p.t AND a.principal_id = p.id"
    "          WHERE NOT a.deleted AND a.region IN ($4, '*') AND a.resource IN ($3, $5, '*')"
    "            AND a.permissions && ARRAY[$2, $6, '*']::text[] LIMIT 1),"
    "        (SELECT applied_hlc FROM w WHERE origin = $7),"
    "        (SELECT lag_ms FROM lag), (SELECT origin FROM lag),"
    "        (SELECT known_hlc FROM w WHERE origin = $7),"
    "        (SELECT quiet_ms FROM quiet), (SELECT origin FROM quiet),"
    "        (SELECT x.r FROM unnest($8::text[]) WITH ORDINALITY AS x(r, n)"
    "          WHERE NOT EXISTS (SELECT 1 FROM w WHERE w.origin = x.r) ORDER BY x.n LIMIT 1),"
    "        floor(extract(epoch FROM now()) * 1000)::bigint";

static const char SQL_STATUS[] =
    "SELECT (SELECT coalesce(json_object_agg(origin, json_build_object("
    "          'applied_seq', applied_seq, 'applied_hlc', applied_hlc, 'known_hlc', known_hlc,"
    "          'silence_ms', floor(extract(epoch FROM now() - updated_at) * 1000)::bigint,"
    "          'source', source)),"
    "          '{}')::text FROM authz.watermarks),"
    "       (SELECT count(*) FROM authz.dead_letters),"
    "       authz.feed_last_seq(), pruned_through FROM authz.feed_state";

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
            azc_http_reply_error(r, 400, "invalid_request", "unknown member \"%.*s\"",
                                 (int)azc_utf8_cut(k, 64), k);
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
    /* Two tokens name two points in time: which one the client meant is
     * unknowable, and answering for either could deny finally too early. */
    if (azc_http_req_header_count(r, "Authz-Revision") > 1) {
        azc_http_reply_error(r, 400, "invalid_revision", "more than one Authz-Revision header");
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

static long long int_or(const PGresult *res, int col, long long dflt)
{
    return PQgetisnull(res, 0, col) ? dflt : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/*
 * Picks the decision for a check whose SQL_CHECK row is `res` (see
 * docs/authz.md, "POST /v1/check"): an allow; a final deny for a revision no
 * origin could have issued yet; a transient deny while the revision is not
 * applied, an origin is silent or one lags; else a final deny. Writes the
 * reason into reason[len].
 */
static const char *decide(const az_worker *w, const check_req *q, const PGresult *res,
                          long long *lag_ms, char *reason, size_t len)
{
    const az_settings *s = &w->sh->set;
    long long silence_max = s->heartbeat_ms * s->silence_heartbeats;
    long long quiet_ms = int_or(res, 5, 0), db_ms = int_or(res, 8, 0);

    *lag_ms = int_or(res, 2, 0);
    if (!PQgetisnull(res, 0, 0)) {
        azc_text_fmt(reason, len, "granted by assignment %s", PQgetvalue(res, 0, 0));
        return "allow";
    }
    if (q->has_rev) {
        uint64_t known = PQgetisnull(res, 0, 4) ? 0 : strtoull(PQgetvalue(res, 0, 4), NULL, 10);
        uint64_t applied = PQgetisnull(res, 0, 1) ? 0 : strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        long long bound = (long long)AZC_HLC_MS(known);

        /* A token from a write whose heartbeat has not arrived yet is at
         * most the clock skew ahead of now; one beyond that (a forged or
         * corrupted token) would otherwise stay transient forever. */
        if (db_ms > bound)
            bound = db_ms;
        if ((long long)AZC_HLC_MS(q->rev.hlc) > bound + s->clock_tolerance_ms) {
            azc_text_fmt(reason, len,
                         "the revision is ahead of anything origin %s has issued (%lld ms past "
                         "its newest HLC and this region's clock, tolerance %lld ms)",
                         q->rev.origin, (long long)AZC_HLC_MS(q->rev.hlc) - bound,
                         s->clock_tolerance_ms);
            return "deny";
        }
        if (applied < q->rev.hlc) {
            azc_text_fmt(reason, len, "the revision of %s is not applied in this region yet",
                         q->rev.origin);
            return "deny-transient";
        }
    }
    if (!PQgetisnull(res, 0, 7)) {
        azc_text_fmt(reason, len, "this region has never heard from origin %s",
                     PQgetvalue(res, 0, 7));
        return "deny-transient";
    }
    if (!PQgetisnull(res, 0, 6) && quiet_ms > silence_max) {
        azc_text_fmt(reason, len,
                     "this region has not heard from origin %s for %lld ms (silent above %lld "
                     "ms): it may be behind",
                     PQgetvalue(res, 0, 6), quiet_ms, silence_max);
        return "deny-transient";
    }
    if (*lag_ms > s->transient_lag_ms) {
        azc_text_fmt(reason, len, "this region lags origin %s by %lld ms", PQgetvalue(res, 0, 3),
                     *lag_ms);
        return "deny-transient";
    }
    azc_text_fmt(reason, len, "no assignment grants %s on %s in %s", q->action, q->resource,
                 q->region);
    return "deny";
}

void az_check_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    check_req q;
    char awild[80], rwild[80], reason[512], own[AZC_REGION_MAX + 3];
    const char *p[8];
    const char *decision;
    PGresult *res = NULL;
    azc_err e;
    long long lag_ms = 0;
    int allowed;

    if (check_parse(w, r, &q) != 0)
        return;
    azc_text_fmt(own, sizeof own, "{%s}", w->sh->set.region);
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
    p[7] = w->sh->set.expect_regions ? w->sh->set.regions_array : own;
    if (azc_pg_query_prepared(w->pg, "authz_check", SQL_CHECK, 8, p, &res, &e) != AZC_OK) {
        az_reply_db_error(w, r, &e);
        return;
    }
    decision = decide(w, &q, res, &lag_ms, reason, sizeof reason);
    allowed = strcmp(decision, "allow") == 0;
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
    case AZ_CONSUMER_STALLED:
        return "stalled";
    default:
        return "starting";
    }
}

/* The consumer section of /v1/status (docs/authz.md); NULL when out of
 * memory. */
static json_t *consumer_json(az_worker *w)
{
    az_consumer_status cs;
    json_t *o, *div = NULL, *rs = NULL;
    const char *error;

    az_consumer_status_get(w->sh, &cs);
    error = cs.state == AZ_CONSUMER_STALLED ? cs.stall_reason : cs.error;
    if (cs.diverged)
        div = json_pack("{s:I, s:s?, s:s?, s:I}", "seq", (json_int_t)cs.div_seq, "applied_id",
                        cs.div_applied_id[0] != '\0' ? cs.div_applied_id : NULL, "received_id",
                        cs.div_received_id[0] != '\0' ? cs.div_received_id : NULL,
                        "kafka_offset", (json_int_t)cs.div_offset);
    if (cs.resync_epoch != 0)
        rs = json_pack("{s:I, s:I}", "epoch", (json_int_t)cs.resync_epoch, "staged",
                       (json_int_t)cs.resync_staged);
    o = json_pack("{s:s, s:i, s:I, s:s, s:s?, s:I, s:I, s:I, s:I, s:o?, s:o?}",
                  "topic", w->sh->set.topic, "partition", 0,
                  "next_offset", (json_int_t)cs.next_offset, "state", state_name(cs.state),
                  "error", error[0] != '\0' ? error : NULL,
                  "epoch", (json_int_t)cs.epoch,
                  "events_applied", (json_int_t)cs.events_applied,
                  "duplicates", (json_int_t)cs.duplicates,
                  "last_message_age_ms", (json_int_t)cs.last_message_age_ms,
                  "divergence", div, "resync", rs);
    return o;
}

/* Adds silent and silence_ms to each origin of `origins`, and an entry
 * for each configured region never heard from. Only this region's own
 * origin counts as silent when never heard, unless check.expect_regions
 * says every configured region's watermarks must arrive (through the
 * replicator). */
static int add_silence(const az_settings *s, json_t *origins)
{
    long long max = s->heartbeat_ms * s->silence_heartbeats;
    const char *name;
    json_t *o;
    size_t i;
    int bad = 0;

    json_object_foreach(origins, name, o) {
        json_t *q = json_object_get(o, "silence_ms");

        bad |= json_object_set_new(o, "silent", json_boolean(json_integer_value(q) > max)) != 0;
        bad |= json_object_set_new(o, "counted", json_true()) != 0;
    }
    for (i = 0; i < s->nregions; i++) {
        int own = s->expect_regions || strcmp(s->regions[i], s->region) == 0;

        if (json_object_get(origins, s->regions[i]) != NULL)
            continue;
        o = json_pack("{s:i, s:i, s:i, s:i, s:n, s:b, s:n, s:b, s:n}", "applied_seq", 0,
                      "applied_hlc", 0, "known_hlc", 0, "lag_ms", 0, "staleness_ms", "silent",
                      own, "silence_ms", "counted", own, "source");
        bad |= json_object_set_new(origins, s->regions[i], o) != 0;
    }
    return bad ? AZC_ENOMEM : AZC_OK;
}

void az_status_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
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
    if (add_silence(&w->sh->set, origins) != AZC_OK)
        azc_log_reqf(w->sh->log, AZC_LOG_WARN, azc_http_req_id(r), "status: out of memory");
    body = json_pack("{s:s, s:o, s:o, s:I, s:{s:s, s:s}}",
                     "region", w->sh->set.region,
                     "consumer", consumer_json(w),
                     "origins", origins,
                     "dead_letters", (json_int_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10),
                     "feed", "cursor", PQgetvalue(res, 0, 2), "pruned_through",
                     PQgetvalue(res, 0, 3));
    PQclear(res);
    azc_http_reply_json(r, 200, body);
}

/* ---- routes ------------------------------------------------------------------ */

int az_api_register(az_worker *w, azc_err *e)
{
    const azc_http_route routes[] = {
        /* Public: gateways and operators; the feed and the snapshot carry
         * the whole policy set, so peers authenticate (auth.keys_file). */
        { AZC_HTTP_POST, "/v1/check", az_check_handler,
          AZC_ROUTE_JSON_BODY | AZC_ROUTE_PUBLIC, 16 * 1024 },
        { AZC_HTTP_GET, "/v1/status", az_status_handler, AZC_ROUTE_PUBLIC, 0 },
        { AZC_HTTP_GET, "/v1/policy/changes", az_changes_handler, 0, 0 },
        { AZC_HTTP_GET, "/v1/policy/snapshot", az_snapshot_handler, 0, 0 },
    };

    if (azc_http_add_routes(w->http, routes, sizeof routes / sizeof routes[0], w) != AZC_OK)
        return azc_err_set(e, AZC_ERROR, "cannot register the routes");
    return AZC_OK;
}
