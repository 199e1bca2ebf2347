/*
 * One read of the change feed (rows after a cursor, the feed's bounds and
 * the watermarks, from one snapshot) and the answers built from it: what
 * every waiter, stream and request of a worker is answered with. See
 * feed.c for the design.
 */
#include "authz/feed_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/pg.h"

static const char SQL_CHANGES[] =
    "SELECT authz.feed_last_seq(), f.pruned_through,"
    "  (SELECT coalesce(json_agg(json_build_object('seq', c.seq, 'kind', c.kind, 'row', c.row)"
    "                            ORDER BY c.seq), '[]')::text"
    "     FROM (SELECT seq, kind, row FROM authz.changes WHERE seq > $1::bigint"
    "            ORDER BY seq LIMIT $2::int) c),"
    "  (SELECT coalesce(json_object_agg(origin, json_build_object("
    "            'applied', applied_hlc, 'known', known_hlc) ORDER BY origin), '{}')::text"
    "     FROM authz.watermarks)"
    " FROM authz.feed_state f";

void az__feed_read_clear(feed_read *rd)
{
    json_decref(rd->rows);
    json_decref(rd->wm);
    free(rd->seq);
    free(rd->wm_text);
    memset(rd, 0, sizeof *rd);
}

void az__feed_metric_inc(az_feed *f, azc_metric *m, const char *label)
{
    if (azc_metric_inc(m, (const char *const[]){ label, NULL }, 1) != AZC_OK)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: a metric update failed");
}

/* Reads the rows after `after` (at most `limit`), the bounds and the
 * watermarks into *rd (cleared first). `why` labels the read in
 * authz_feed_reads_total. MALFORMED when the store's JSON does not parse. */
int az__feed_read_feed(az_feed *f, long long after, int limit, const char *why, feed_read *rd,
                     azc_err *e)
{
    char a[24], l[16];
    const char *p[2] = { a, l };
    PGresult *res = NULL;
    size_t i;
    int rc;

    memset(rd, 0, sizeof *rd);
    snprintf(a, sizeof a, "%lld", after);
    snprintf(l, sizeof l, "%d", limit);
    az__feed_metric_inc(f, f->m_reads, why);
    if ((rc = azc_pg_query(f->w->pg, SQL_CHANGES, 2, p, &res, e)) != AZC_OK)
        return rc;
    rd->last_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    rd->pruned = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    rd->rows = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    rd->wm = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
    PQclear(res);
    if (!json_is_array(rd->rows) || !json_is_object(rd->wm)) {
        az__feed_read_clear(rd);
        return azc_err_set(e, MALFORMED, "the policy store returned malformed JSON");
    }
    /* Written by jansson, as the watermarks merged from notifications
     * are (feed.c), so that equal watermarks compare equal as text. */
    if ((rd->wm_text = json_dumps(rd->wm, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
        az__feed_read_clear(rd);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    rd->n = json_array_size(rd->rows);
    if (rd->n > 0 && (rd->seq = malloc(rd->n * sizeof *rd->seq)) == NULL) {
        az__feed_read_clear(rd);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    for (i = 0; i < rd->n; i++) {
        json_t *s = json_object_get(json_array_get(rd->rows, i), "seq");

        if (!json_is_integer(s) || (i > 0 && json_integer_value(s) <= rd->seq[i - 1])) {
            az__feed_read_clear(rd);
            return azc_err_set(e, MALFORMED, "the policy store returned malformed JSON");
        }
        rd->seq[i] = (long long)json_integer_value(s);
    }
    rd->cut = rd->n == (size_t)limit && rd->seq[rd->n - 1] < rd->last_seq;
    return AZC_OK;
}

/* The LISTEN connection hears every commit from now on. */
int az__feed_listening(const az_feed *f)
{
    return f->listen != NULL && f->listen_ev != NULL && PQstatus(f->listen) == CONNECTION_OK;
}

/* Keeps rd's bounds and watermarks as the worker's newest read. */
void az__feed_remember(az_feed *f, const feed_read *rd)
{
    char *t = strdup(rd->wm_text);

    if (t == NULL) {
        f->fresh = 0;
        return;
    }
    az__feed_read_clear(&f->last);
    f->last.last_seq = rd->last_seq;
    f->last.pruned = rd->pruned;
    f->last.wm_text = t;
    f->last.wm = json_incref(rd->wm);
    f->fresh = az__feed_listening(f);
}


/* What a request (after, limit) gets from rd: exactly what a read of its
 * own would have given. */
answer az__feed_answer_for(const feed_read *rd, long long after, int limit)
{
    answer a = { ANS_NONE, 0, 0, 0 };
    size_t lo = 0, hi = rd->n, avail;
    long long cursor;

    if (after < rd->pruned || after > rd->last_seq) {
        a.kind = ANS_GONE;
        return a;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (rd->seq[mid] <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    avail = rd->n - lo;
    if (rd->cut && avail < (size_t)limit) {
        a.kind = ANS_SHORT;
        return a;
    }
    a.start = lo;
    a.count = avail < (size_t)limit ? avail : (size_t)limit;
    cursor = a.count > 0 ? rd->seq[lo + a.count - 1] : after;
    a.more = a.count == (size_t)limit && cursor < rd->last_seq;
    a.kind = a.count > 0 ? ANS_ROWS : ANS_NONE;
    return a;
}

/* 1 if change c (an element of rd->rows) is a row of origin `exclude`. */
static int of_origin(json_t *c, const char *exclude)
{
    const char *o = json_string_value(json_object_get(json_object_get(c, "row"), "origin"));

    return o != NULL && strcmp(o, exclude) == 0;
}

/* The 200 body of answer a (ANS_ROWS or ANS_NONE) as compact JSON text
 * (malloc'd); NULL when out of memory. Rows of origin `exclude` (a
 * replicator's own region, which it would only skip) are left out; the
 * cursor is still the last row the answer covers, so the follower moves
 * past them. */
char *az__feed_body_text(const feed_read *rd, long long after, const answer *a,
                         const char *exclude)
{
    json_t *changes = json_array(), *body;
    char cur[24];
    char *text;
    size_t i;

    if (changes == NULL)
        return NULL;
    for (i = 0; i < a->count; i++) {
        json_t *c = json_array_get(rd->rows, a->start + i);

        if (exclude[0] != '\0' && of_origin(c, exclude))
            continue;
        if (json_array_append(changes, c) != 0) {
            json_decref(changes);
            return NULL;
        }
    }
    snprintf(cur, sizeof cur, "%lld", a->count > 0 ? rd->seq[a->start + a->count - 1] : after);
    body = json_pack("{s:o, s:s, s:b}", "changes", changes, "cursor", cur, "more", a->more);
    /* Watermarks hold only for a reader that has every change up to the
     * snapshot, so not when the limit cut the answer. */
    if (body != NULL && !a->more && json_object_set(body, "watermarks", rd->wm) != 0) {
        json_decref(body);
        body = NULL;
    }
    text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

void az__feed_send_text(az_feed *f, azc_http_req *r, const char *text)
{
    if (text == NULL || evbuffer_add(f->out, text, strlen(text)) != 0) {
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    azc_http_reply_raw(r, 200, "application/json", f->out);
    /* A refused reply leaves the bytes here. */
    (void)evbuffer_drain(f->out, evbuffer_get_length(f->out));
}

void az__feed_send_gone(azc_http_req *r, const feed_read *rd, long long after)
{
    azc_http_reply_error(r, 410, "cursor_expired",
                         "cursor %lld is outside the feed (%lld to %lld): reload the snapshot",
                         after, rd->pruned, rd->last_seq);
}

/* Answers r with what rd holds for it (never ANS_SHORT: rd was read from
 * its own cursor and limit, or is the worker's last read at its cursor). */
void az__feed_send_answer(az_feed *f, azc_http_req *r, const feed_read *rd, long long after,
                          const answer *a, const char *exclude)
{
    char *text;

    if (a->kind == ANS_GONE) {
        az__feed_send_gone(r, rd, after);
        return;
    }
    text = az__feed_body_text(rd, after, a, exclude);
    az__feed_send_text(f, r, text);
    free(text);
}

/* Answers a failed read: 503 when the connection is down (and starts
 * reconnecting it), 500 otherwise. */
void az__feed_send_read_error(az_feed *f, azc_http_req *r, int rc, const azc_err *e)
{
    if (rc == MALFORMED)
        azc_http_reply_error(r, 500, "internal", "%s", e->msg);
    else
        az_reply_db_error(f->w, r, e);
}
