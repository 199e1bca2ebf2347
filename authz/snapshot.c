/*
 * GET /v1/policy/snapshot: the live policy set, streamed; with
 * tombstones=1 the deleted rows too (a replicator resynchronising from it
 * must see the deletes, or a stale live row of its own would survive).
 * With format=ndjson the same answer is framed one JSON object a line
 * (head, one line per row, an end line with the counts), so a client
 * loading a very large set parses and applies a row at a time instead of
 * building one tree of the whole answer.
 *
 * The set is read in one REPEATABLE READ transaction on a connection of
 * its own (the worker's stays free for checks; it is opened without
 * blocking the loop, and at most snapshot.max_concurrent are open at a
 * time: 503 with Retry-After beyond), with the feed cursor and watermarks
 * of the same snapshot, through server-side cursors a page at a time: the
 * next page is fetched only when the client has taken the
 * previous one, so a large set or a slow client never makes the server
 * hold the whole answer. Rows are the JSON PostgreSQL makes of them
 * (to_jsonb), the same shape the change feed carries; only the framing
 * between them is written here.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "authz/snapshot.h"
#include "common/pg.h"

static const char SQL_BEGIN[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
static const char SQL_HEAD[] =
    "SELECT authz.feed_last_seq()::text,"
    "  (SELECT coalesce(json_object_agg(origin, json_build_object("
    "            'applied', applied_hlc, 'known', known_hlc)), '{}')::text FROM authz.watermarks)"
    " FROM authz.feed_state";
static const char SQL_DECLARE_LIVE[] =
    "DECLARE snap_users NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.users t WHERE NOT deleted;"
    "DECLARE snap_memberships NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.memberships t WHERE NOT deleted;"
    "DECLARE snap_policies NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.policies t WHERE NOT deleted";
static const char SQL_DECLARE_ALL[] =
    "DECLARE snap_users NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.users t;"
    "DECLARE snap_memberships NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.memberships t;"
    "DECLARE snap_policies NO SCROLL CURSOR FOR"
    "  SELECT to_jsonb(t)::text FROM authz.policies t";

/* Constant statements: FETCH takes no parameters. `kind` is the change
 * feed's name for a row of the table, which the NDJSON lines reuse. */
static const struct {
    const char *name;
    const char *kind;
    const char *fetch;
} TABLES[] = {
    { "users", "user", "FETCH 1000 FROM snap_users" },
    { "memberships", "membership", "FETCH 1000 FROM snap_memberships" },
    { "policies", "policy", "FETCH 1000 FROM snap_policies" },
};
#define NTABLES (sizeof TABLES / sizeof TABLES[0])

typedef struct snap {
    az_worker *w;
    azc_http_req *r;
    azc_pg_link *db;   /* this snapshot's own connection */
    int started;       /* up, past on_db_state: later losses are seen by
                          the query that meets them */
    size_t table;      /* the one being sent; NTABLES when done */
    long long sent[NTABLES]; /* rows sent per table: the JSON framing's
                                commas, the NDJSON end line's counts */
    int tombstones;    /* tombstones=1: deleted rows too */
    int ndjson;        /* format=ndjson: one JSON object a line */
} snap;

/* Also gives the snapshot's place back (az_shared.snapshots). */
static void snap_free(snap *s)
{
    azc_pg_link_free(s->db);
    atomic_fetch_sub(&s->w->sh->snapshots, 1);
    free(s);
}

static void on_close(azc_http_req *r, void *arg)
{
    (void)r;
    snap_free(arg);
}

/*
 * The framing, the one thing the two formats do not share; each returns
 * nonzero when the buffer cannot take it.
 *
 * One row of table s->table. A row is on one line whatever its content:
 * the text of a jsonb has no raw newline (one in a string is escaped).
 */
static int add_row(snap *s, struct evbuffer *b, const char *row)
{
    if (s->ndjson)
        return evbuffer_add_printf(b, "{\"kind\":\"%s\",\"row\":%s}\n",
                                   TABLES[s->table].kind, row) < 0;
    return evbuffer_add_printf(b, "%s%s", s->sent[s->table] > 0 ? "," : "", row) < 0;
}

/* The table before s->table has been sent whole (s->table is NTABLES
 * after the last one). NDJSON needs nothing between tables; its end line
 * is what tells a complete answer from one cut short. */
static int add_table_end(snap *s, struct evbuffer *b)
{
    size_t t;
    int bad = 0;

    if (!s->ndjson) {
        if (s->table < NTABLES)
            return evbuffer_add_printf(b, "],\"%s\":[", TABLES[s->table].name) < 0;
        return evbuffer_add(b, "]}", 2) != 0;
    }
    if (s->table < NTABLES)
        return 0;
    bad |= evbuffer_add(b, "{\"end\":{", 8) != 0;
    for (t = 0; t < NTABLES; t++)
        bad |= evbuffer_add_printf(b, "%s\"%s\":%lld", t > 0 ? "," : "", TABLES[t].name,
                                   s->sent[t]) < 0;
    bad |= evbuffer_add(b, "}}\n", 3) != 0;
    return bad;
}

/* The head (`text`, a compact JSON object): in JSON left open for the
 * tables that follow, in NDJSON a line of its own. */
static int add_head(snap *s, struct evbuffer *b, const char *text)
{
    if (s->ndjson)
        return evbuffer_add(b, text, strlen(text)) != 0 || evbuffer_add(b, "\n", 1) != 0;
    return evbuffer_add(b, text, strlen(text) - 1) != 0 ||
           evbuffer_add_printf(b, ",\"%s\":[", TABLES[0].name) < 0;
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
    if (azc_pg_query(azc_pg_link_conn(s->db), TABLES[s->table].fetch, 0, NULL, &res, &e) !=
        AZC_OK) {
        azc_log_reqf(s->w->sh->log, AZC_LOG_ERROR, azc_http_req_id(r), "snapshot: %s", e.msg);
        goto failed;
    }
    n = PQntuples(res);
    for (i = 0; i < n && !bad; i++) {
        bad |= add_row(s, b, PQgetvalue(res, i, 0));
        s->sent[s->table]++;
    }
    PQclear(res);
    if (n == 0 && !bad) {
        s->table++;
        bad |= add_table_end(s, b);
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
     * (an unterminated JSON body, NDJSON without its end line) is how the
     * client learns of it. */
    if (b != NULL)
        evbuffer_free(b);
    azc_http_reply_end(r);
    snap_free(s);
}

/* The connection is up: open the snapshot and send its head. */
static void start(snap *s)
{
    azc_http_req *r = s->r;
    az_worker *w = s->w;
    PGconn *pg = azc_pg_link_conn(s->db);
    struct evbuffer *b = NULL;
    PGresult *res = NULL;
    json_t *head = NULL;
    char *text = NULL;
    azc_err e;

    /* From here on a failure is answered here; a link that goes down
     * meanwhile must not answer again from on_db_state. */
    s->started = 1;
    if (azc_pg_query(pg, SQL_BEGIN, 0, NULL, NULL, &e) != AZC_OK ||
        azc_pg_query(pg, SQL_HEAD, 0, NULL, &res, &e) != AZC_OK ||
        azc_pg_exec_script(pg, s->tombstones ? SQL_DECLARE_ALL : SQL_DECLARE_LIVE, &e) !=
            AZC_OK) {
        PQclear(res);
        azc_pg_reply_error(s->db, r, &e, w->sh->log);
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
    if (text == NULL || b == NULL || add_head(s, b, text) != 0) {
        free(text);
        if (b != NULL)
            evbuffer_free(b);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        snap_free(s);
        return;
    }
    free(text);
    if (azc_http_reply_start(r, 200, s->ndjson ? "application/x-ndjson" : "application/json",
                             on_drain, on_close, s) != AZC_OK) {
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

static void on_db_state(azc_pg_link *l, int up, void *arg)
{
    snap *s = arg;
    azc_err e;

    (void)l;
    if (s->started)
        return;
    if (up) {
        start(s);
        return;
    }
    azc_err_set(&e, AZC_EUNAVAIL, "snapshot: cannot connect to the database");
    azc_pg_reply_error(NULL, s->r, &e, s->w->sh->log);
    snap_free(s);
}

/*
 * Takes one of the snapshot.max_concurrent places (each holds a database
 * connection and a transaction open for as long as its client reads) and
 * connects without blocking the loop; the request waits, deferred, until
 * the connection is up (start) or has failed (503).
 */
void az_snapshot_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    const char *tq = azc_http_req_query(r, "tombstones");
    const char *fq = azc_http_req_query(r, "format");
    azc_pg_link_options o;
    snap *s;
    azc_err e;

    if (tq != NULL && strcmp(tq, "0") != 0 && strcmp(tq, "1") != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "tombstones must be 0 or 1");
        return;
    }
    if (fq != NULL && strcmp(fq, "json") != 0 && strcmp(fq, "ndjson") != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "format must be json or ndjson");
        return;
    }
    if (atomic_fetch_add(&w->sh->snapshots, 1) >= w->sh->set.snapshot_max) {
        atomic_fetch_sub(&w->sh->snapshots, 1);
        azc_log_reqf(w->sh->log, AZC_LOG_WARN, azc_http_req_id(r),
                     "snapshot: refused, %lld already being sent", w->sh->set.snapshot_max);
        (void)azc_http_req_add_header(r, "Retry-After", "1");
        azc_http_reply_error(r, 503, "unavailable",
                             "too many snapshots are being sent (%lld); retry later",
                             w->sh->set.snapshot_max);
        return;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        atomic_fetch_sub(&w->sh->snapshots, 1);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    s->w = w;
    s->r = r;
    s->tombstones = tq != NULL && strcmp(tq, "1") == 0;
    s->ndjson = fq != NULL && strcmp(fq, "ndjson") == 0;
    memset(&o, 0, sizeof o);
    o.application_name = "authz-snapshot";
    o.statement_timeout_ms = AZ_STATEMENT_TIMEOUT_MS;
    o.connect_timeout_ms = 2000;
    o.once = 1;
    o.on_state = on_db_state;
    o.arg = s;
    if ((s->db = azc_pg_link_new(w->base, w->sh->set.pg_url, &o, w->sh->log, &e)) == NULL) {
        azc_log_reqf(w->sh->log, AZC_LOG_ERROR, azc_http_req_id(r), "snapshot: %s", e.msg);
        azc_http_reply_error(r, 500, "internal", "cannot start the snapshot");
        snap_free(s);
        return;
    }
    if (azc_http_req_defer(r, on_close, s) != AZC_OK) {
        azc_http_reply_error(r, 500, "internal", "cannot start the snapshot");
        snap_free(s);
    }
}
