/*
 * GET /v1/policy/snapshot: the live policy set, streamed.
 *
 * The set is read in one REPEATABLE READ transaction on a connection of
 * its own (the worker's stays free for checks), with the feed cursor and
 * watermarks of the same snapshot, through server-side cursors a page at a
 * time: the next page is fetched only when the client has taken the
 * previous one, so a large set or a slow client never makes the server
 * hold the whole answer. Rows are the JSON PostgreSQL makes of them
 * (to_jsonb), the same shape the change feed carries; only the framing
 * between them is written here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "authz/api.h"
#include "common/pg.h"

static const char SQL_BEGIN[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
static const char SQL_HEAD[] =
    "SELECT last_seq::text,"
    "  (SELECT coalesce(json_object_agg(origin, json_build_object("
    "            'applied', applied_hlc, 'known', known_hlc)), '{}')::text FROM authz.watermarks)"
    " FROM authz.feed_state";
static const char SQL_DECLARE[] =
    "DECLARE snap_users NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.users t WHERE NOT deleted;"
    "DECLARE snap_memberships NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.memberships t WHERE NOT deleted;"
    "DECLARE snap_policies NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.policies t WHERE NOT deleted";

/* Constant statements: FETCH takes no parameters. */
static const struct {
    const char *name;
    const char *fetch;
} TABLES[] = {
    { "users", "FETCH 1000 FROM snap_users" },
    { "memberships", "FETCH 1000 FROM snap_memberships" },
    { "policies", "FETCH 1000 FROM snap_policies" },
};
#define NTABLES (sizeof TABLES / sizeof TABLES[0])

typedef struct snap {
    az_worker *w;
    azc_http_req *r;
    PGconn *pg;
    size_t table;      /* the one being sent; NTABLES when done */
    int rows_sent;     /* in this table, for the commas */
} snap;

static void snap_free(snap *s)
{
    PQfinish(s->pg);
    free(s);
}

static void on_close(azc_http_req *r, void *arg)
{
    (void)r;
    snap_free(arg);
}

/* Sends the next page (or the end of a table, or of the answer). */
static void on_drain(azc_http_req *r, void *arg)
{
    snap *s = arg;
    struct evbuffer *b = evbuffer_new();
    PGresult *res = NULL;
    azc_err e;
    int i, n, bad = b == NULL;

    if (bad)
        goto failed;
    if (azc_pg_query(s->pg, TABLES[s->table].fetch, 0, NULL, &res, &e) != AZC_OK) {
        azc_log_reqf(s->w->sh->log, AZC_LOG_ERROR, azc_http_req_id(r), "snapshot: %s", e.msg);
        goto failed;
    }
    n = PQntuples(res);
    for (i = 0; i < n; i++) {
        bad |= evbuffer_add_printf(b, "%s%s", s->rows_sent++ > 0 ? "," : "",
                                   PQgetvalue(res, i, 0)) < 0;
    }
    PQclear(res);
    if (n == 0) {
        s->table++;
        s->rows_sent = 0;
        if (s->table < NTABLES)
            bad |= evbuffer_add_printf(b, "],\"%s\":[", TABLES[s->table].name) < 0;
        else
            bad |= evbuffer_add(b, "]}", 2) != 0;
    }
    if (bad)
        goto failed;
    if (azc_http_reply_chunk(r, b) != AZC_OK)
        goto failed;
    evbuffer_free(b);
    if (s->table == NTABLES) {
        azc_http_reply_end(r);
        snap_free(s);
    }
    return;
failed:
    /* Mid-stream there is no status to change: cutting the stream short
     * (an unterminated JSON body) is how the client learns of it. */
    if (b != NULL)
        evbuffer_free(b);
    azc_http_reply_end(r);
    snap_free(s);
}

void az_snapshot_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    snap *s = calloc(1, sizeof *s);
    struct evbuffer *b = NULL;
    PGresult *res = NULL;
    json_t *head = NULL;
    char *text = NULL;
    azc_err e;

    if (s == NULL) {
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    s->w = w;
    s->r = r;
    if (azc_pg_connect(w->sh->set.pg_url, "authz-snapshot", 2000, w->sh->log, &s->pg, &e) !=
            AZC_OK ||
        azc_pg_query(s->pg, SQL_BEGIN, 0, NULL, NULL, &e) != AZC_OK ||
        azc_pg_query(s->pg, SQL_HEAD, 0, NULL, &res, &e) != AZC_OK ||
        azc_pg_exec_script(s->pg, SQL_DECLARE, &e) != AZC_OK) {
        PQclear(res);
        azc_log_reqf(w->sh->log, AZC_LOG_ERROR, azc_http_req_id(r), "snapshot: %s", e.msg);
        azc_http_reply_error(r, 503, "unavailable", "the policy store is unavailable");
        snap_free(s);
        return;
    }
    head = json_pack("{s:s, s:s, s:o?}", "region", w->sh->set.region, "cursor",
                     PQgetvalue(res, 0, 0), "watermarks",
                     json_loads(PQgetvalue(res, 0, 1), 0, NULL));
    PQclear(res);
    text = head != NULL ? json_dumps(head, JSON_COMPACT) : NULL;
    json_decref(head);
    b = evbuffer_new();
    /* The head object, left open for the tables that follow. */
    if (text == NULL || b == NULL || evbuffer_add(b, text, strlen(text) - 1) != 0 ||
        evbuffer_add_printf(b, ",\"%s\":[", TABLES[0].name) < 0) {
        free(text);
        if (b != NULL)
            evbuffer_free(b);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        snap_free(s);
        return;
    }
    free(text);
    if (azc_http_reply_start(r, 200, "application/json", on_drain, on_close, s) != AZC_OK) {
        evbuffer_free(b);
        snap_free(s);
        return;
    }
    if (azc_http_reply_chunk(r, b) != AZC_OK) {
        evbuffer_free(b);
        azc_http_reply_end(r);
        snap_free(s);
        return;
    }
    evbuffer_free(b);
}
