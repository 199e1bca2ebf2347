/*
 * GET /v1/policy/changes?after=&wait=&limit=&watermarks= and its waiters.
 *
 * One statement reads the changes, the feed bounds and the watermarks, so
 * they come from one snapshot: watermarks never claim more than the
 * changes returned with them (and are left out when `limit` cut the
 * answer short). A request with nothing to return waits (deferred) until
 * the LISTEN connection of its worker hears of a commit, its own deadline
 * passes, or its client goes away.
 */
#include "authz/feed.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/pg.h"

static const char SQL_CHANGES[] =
    "SELECT f.last_seq, f.pruned_through,"
    "  (SELECT coalesce(json_agg(json_build_object('seq', c.seq, 'kind', c.kind, 'row', c.row)"
    "                            ORDER BY c.seq), '[]')::text"
    "     FROM (SELECT seq, kind, row FROM authz.changes WHERE seq > $1::bigint"
    "            ORDER BY seq LIMIT $2::int) c),"
    "  (SELECT coalesce(json_object_agg(origin, json_build_object("
    "            'applied', applied_hlc, 'known', known_hlc)), '{}')::text FROM authz.watermarks)"
    " FROM authz.feed_state f";
static const char SQL_LISTEN[] = "LISTEN authz_changes; LISTEN authz_watermarks";

#define DEFAULT_LIMIT 1000
#define MAX_LIMIT 10000
#define MAX_WAIT_MS 60000

typedef struct waiter {
    az_feed *f;
    azc_http_req *r;
    struct event *timer;
    long long after;
    int limit;
    int want_watermarks;
    char *watermarks_seen;     /* the text when it started waiting */
    struct waiter *prev, *next;
} waiter;

struct az_feed {
    az_worker *w;
    PGconn *listen;
    struct event *listen_ev;
    struct event *retry_ev;
    waiter *head;
};

/* ---- answering ----------------------------------------------------------- */

static int parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

typedef enum { SERVE_ANSWERED, SERVE_NOTHING } serve_result;

/*
 * Runs the feed query for (after, limit). Answers r (200, 410 or an error)
 * and returns SERVE_ANSWERED, unless `may_wait` and there is nothing to
 * report: then SERVE_NOTHING, with the watermark text in *wm_out (malloc'd,
 * caller frees) when wm_out is given. "Nothing to report" is no change and,
 * when wm_seen is given, the same watermarks as wm_seen.
 */
static serve_result serve(az_worker *w, azc_http_req *r, long long after, int limit, int may_wait,
                          const char *wm_seen, char **wm_out)
{
    char a[24], l[16];
    const char *p[2] = { a, l };
    PGresult *res = NULL;
    json_t *changes, *body, *last;
    long long last_seq, pruned, cursor;
    const char *wm;
    size_t n;
    int more;
    azc_err e;

    snprintf(a, sizeof a, "%lld", after);
    snprintf(l, sizeof l, "%d", limit);
    if (azc_pg_query(w->pg, SQL_CHANGES, 2, p, &res, &e) != AZC_OK) {
        az_reply_db_error(w, r, &e);
        return SERVE_ANSWERED;
    }
    last_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    pruned = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    wm = PQgetvalue(res, 0, 3);
    if (after < pruned || after > last_seq) {
        PQclear(res);
        azc_http_reply_error(r, 410, "cursor_expired",
                             "cursor %lld is outside the feed (%lld to %lld): reload the snapshot",
                             after, pruned, last_seq);
        return SERVE_ANSWERED;
    }
    if (may_wait && strcmp(PQgetvalue(res, 0, 2), "[]") == 0 &&
        (wm_seen == NULL || strcmp(wm_seen, wm) == 0)) {
        if (wm_out != NULL && (*wm_out = strdup(wm)) == NULL) {
            PQclear(res);
            azc_http_reply_error(r, 500, "internal", "out of memory");
            return SERVE_ANSWERED;
        }
        PQclear(res);
        return SERVE_NOTHING;
    }
    changes = az_json_or_reply(r, PQgetvalue(res, 0, 2));
    if (changes == NULL) {
        PQclear(res);
        return SERVE_ANSWERED;
    }
    n = json_array_size(changes);
    last = json_array_get(changes, n > 0 ? n - 1 : 0);
    cursor = n > 0 ? (long long)json_integer_value(json_object_get(last, "seq")) : after;
    more = n == (size_t)limit && cursor < last_seq;
    snprintf(a, sizeof a, "%lld", cursor);
    body = json_pack("{s:o, s:s, s:b}", "changes", changes, "cursor", a, "more", more);
    if (body != NULL && !more &&
        json_object_set_new(body, "watermarks", json_loads(wm, 0, NULL)) != 0) {
        json_decref(body);
        body = NULL;
    }
    PQclear(res);
    azc_http_reply_json(r, 200, body);
    return SERVE_ANSWERED;
}

/* ---- waiters -------------------------------------------------------------- */

static void waiter_unlink_free(waiter *wt)
{
    az_feed *f = wt->f;

    if (wt->prev != NULL)
        wt->prev->next = wt->next;
    else
        f->head = wt->next;
    if (wt->next != NULL)
        wt->next->prev = wt->prev;
    event_free(wt->timer);
    free(wt->watermarks_seen);
    free(wt);
}

static void on_client_gone(azc_http_req *r, void *arg)
{
    (void)r;
    waiter_unlink_free(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    waiter *wt = arg;
    azc_http_req *r = wt->r;
    az_worker *w = wt->f->w;
    long long after = wt->after;
    int limit = wt->limit;

    (void)fd;
    (void)what;
    waiter_unlink_free(wt);
    (void)serve(w, r, after, limit, 0, NULL, NULL);
}

/* Something committed (or the LISTEN connection came back): every waiter
 * looks again. */
static void wake_all(az_feed *f)
{
    waiter *wt = f->head, *next;

    for (; wt != NULL; wt = next) {
        next = wt->next;
        if (serve(f->w, wt->r, wt->after, wt->limit, 1,
                  wt->want_watermarks ? wt->watermarks_seen : NULL, NULL) == SERVE_ANSWERED)
            waiter_unlink_free(wt);
    }
}

void az_changes_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    az_feed *f = w->feed;
    const char *wmq = azc_http_req_query(r, "watermarks");
    long long after, wait = 0, limit = DEFAULT_LIMIT;
    char *wm = NULL;
    waiter *wt;
    struct timeval tv;

    if (parse_ll(azc_http_req_query(r, "after"), 0, LLONG_MAX, &after) != 0) {
        azc_http_reply_error(r, 400, "invalid_request",
                             "after must be a cursor (from the snapshot or a previous answer)");
        return;
    }
    if (azc_http_req_query(r, "wait") != NULL &&
        parse_ll(azc_http_req_query(r, "wait"), 0, MAX_WAIT_MS, &wait) != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "wait must be 0 to %d (ms)", MAX_WAIT_MS);
        return;
    }
    if (azc_http_req_query(r, "limit") != NULL &&
        parse_ll(azc_http_req_query(r, "limit"), 1, MAX_LIMIT, &limit) != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "limit must be 1 to %d", MAX_LIMIT);
        return;
    }
    if (wmq != NULL && strcmp(wmq, "0") != 0 && strcmp(wmq, "1") != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "watermarks must be 0 or 1");
        return;
    }
    if (serve(w, r, after, (int)limit, wait > 0, NULL, &wm) == SERVE_ANSWERED)
        return;
    wt = calloc(1, sizeof *wt);
    if (wt == NULL || (wt->timer = evtimer_new(w->base, on_deadline, wt)) == NULL) {
        free(wt);
        free(wm);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    wt->f = f;
    wt->r = r;
    wt->after = after;
    wt->limit = (int)limit;
    wt->want_watermarks = wmq != NULL && strcmp(wmq, "1") == 0;
    wt->watermarks_seen = wm;
    if (azc_http_req_defer(r, on_client_gone, wt) != AZC_OK) {
        event_free(wt->timer);
        free(wt->watermarks_seen);
        free(wt);
        (void)serve(w, r, after, (int)limit, 0, NULL, NULL);
        return;
    }
    wt->next = f->head;
    if (f->head != NULL)
        f->head->prev = wt;
    f->head = wt;
    tv.tv_sec = wait / 1000;
    tv.tv_usec = (wait % 1000) * 1000;
    evtimer_add(wt->timer, &tv);
}

/* ---- the LISTEN connection -------------------------------------------------- */

static void listen_connect(az_feed *f);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    listen_connect(arg);
}

static void listen_lost(az_feed *f, const char *why)
{
    struct timeval tv = { 1, 0 };

    azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: LISTEN connection lost (%s); reconnecting", why);
    if (f->listen_ev != NULL) {
        event_free(f->listen_ev);
        f->listen_ev = NULL;
    }
    PQfinish(f->listen);
    f->listen = NULL;
    evtimer_add(f->retry_ev, &tv);
}

static void on_listen_readable(evutil_socket_t fd, short what, void *arg)
{
    az_feed *f = arg;
    PGnotify *n;
    int any = 0;

    (void)fd;
    (void)what;
    if (!PQconsumeInput(f->listen)) {
        listen_lost(f, PQerrorMessage(f->listen));
        wake_all(f);
        return;
    }
    while ((n = PQnotifies(f->listen)) != NULL) {
        any = 1;
        PQfreemem(n);
    }
    if (any)
        wake_all(f);
}

/* (Re)connects; on failure tries again in a second. A reconnect wakes
 * every waiter: notifications sent meanwhile are lost. */
static void listen_connect(az_feed *f)
{
    azc_err e;

    azc_err_set(&e, AZC_ERROR, "cannot make the connection non-blocking");
    if (azc_pg_connect(f->w->sh->set.pg_url, "authz-feed", 500, f->w->sh->log, &f->listen, &e) !=
            AZC_OK ||
        azc_pg_exec_script(f->listen, SQL_LISTEN, &e) != AZC_OK ||
        PQsetnonblocking(f->listen, 1) != 0) {
        listen_lost(f, e.msg);
        return;
    }
    f->listen_ev = event_new(f->w->base, PQsocket(f->listen), EV_READ | EV_PERSIST,
                             on_listen_readable, f);
    if (f->listen_ev == NULL || event_add(f->listen_ev, NULL) != 0) {
        listen_lost(f, "cannot watch the socket");
        return;
    }
    wake_all(f);
}

az_feed *az_feed_new(az_worker *w, azc_err *e)
{
    az_feed *f = calloc(1, sizeof *f);

    if (f == NULL || (f->retry_ev = evtimer_new(w->base, on_retry, f)) == NULL) {
        free(f);
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    f->w = w;
    if (azc_pg_connect(w->sh->set.pg_url, "authz-feed", 30000, w->sh->log, &f->listen, e) !=
            AZC_OK ||
        azc_pg_exec_script(f->listen, SQL_LISTEN, e) != AZC_OK ||
        PQsetnonblocking(f->listen, 1) != 0) {
        az_feed_free(f);
        return NULL;
    }
    f->listen_ev = event_new(w->base, PQsocket(f->listen), EV_READ | EV_PERSIST,
                             on_listen_readable, f);
    if (f->listen_ev == NULL || event_add(f->listen_ev, NULL) != 0) {
        azc_err_set(e, AZC_ERROR, "cannot watch the LISTEN connection");
        az_feed_free(f);
        return NULL;
    }
    return f;
}

void az_feed_free(az_feed *f)
{
    if (f == NULL)
        return;
    while (f->head != NULL)
        waiter_unlink_free(f->head);
    if (f->listen_ev != NULL)
        event_free(f->listen_ev);
    if (f->retry_ev != NULL)
        event_free(f->retry_ev);
    PQfinish(f->listen);
    free(f);
}
