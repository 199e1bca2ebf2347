/*
 * GET /v1/policy/changes?after=&wait=&limit=&watermarks=&stream=: its waiters
 * and its streams.
 *
 * One statement reads the changes, the feed bounds and the watermarks, so
 * they come from one snapshot: watermarks never claim more than the
 * changes returned with them (and are left out when `limit` cut the
 * answer short). A request with nothing to return waits (deferred) until
 * the LISTEN connection of its worker hears of a commit, its own deadline
 * passes, or its client goes away.
 *
 * Fan-out. A worker may hold thousands of waiters, most of them on the
 * same cursor (every follower that is up to date). A wake-up therefore
 * runs one read, from the smallest cursor among the waiters and with the
 * largest limit, and answers every waiter from that result in memory;
 * only a waiter whose rows the limit cut off (far behind the others) needs
 * a further read, from its own cursor. Waiters are sorted by (cursor,
 * limit), so those that get the same answer are adjacent and the body is
 * serialised once and copied to each. Watermark notifications (five a
 * second from heartbeats) run that read only when some waiter asked for
 * watermarks, and never answer the others.
 *
 * The worker also keeps what its newest read showed (last seq, pruned
 * through, watermarks). While no notification has been consumed since
 * that read and the LISTEN connection is up, every commit not in it is
 * still to be announced, so a request at the head of the feed can start
 * waiting (and a waiter at its deadline be answered) from memory: a woken
 * waiter that asks again at once costs no query.
 *
 * Streams (stream=1). A follower that wants every advance keeps one
 * chunked answer open instead of asking again after each: one JSON line
 * per message, each the body a long poll would have got, the stream's
 * cursor moving on as each is queued. Streams are served by the same
 * wake-up read as the waiters. A stream whose line is still being
 * written (a slow reader) is not written to again: it is marked pending
 * and served when its line is out, by one catch-up read shared with every
 * other stream that drained meanwhile, so its next message carries all
 * that accumulated (up to its limit). Memory per stream is thus bounded
 * by one message whatever the client's speed. A line is written at
 * least every keep-alive interval (an empty line when nothing happened),
 * so a departed client shows as a failed write and proxies see traffic.
 */
#include "authz/feed.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/pg.h"

static const char SQL_CHANGES[] =
    "SELECT f.last_seq, f.pruned_through,"
    "  (SELECT coalesce(json_agg(json_build_object('seq', c.seq, 'kind', c.kind, 'row', c.row)"
    "                            ORDER BY c.seq), '[]')::text"
    "     FROM (SELECT seq, kind, row FROM authz.changes WHERE seq > $1::bigint"
    "            ORDER BY seq LIMIT $2::int) c),"
    "  (SELECT coalesce(json_object_agg(origin, json_build_object("
    "            'applied', applied_hlc, 'known', known_hlc) ORDER BY origin), '{}')::text"
    "     FROM authz.watermarks)"
    " FROM authz.feed_state f";
static const char SQL_LISTEN[] = "LISTEN authz_changes; LISTEN authz_watermarks";
static const char CHANNEL_WATERMARKS[] = "authz_watermarks";

#define DEFAULT_LIMIT 1000
#define MAX_LIMIT 10000
#define MAX_WAIT_MS 60000
#define NDJSON "application/x-ndjson"

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

/* One stream=1 answer. Owned by the feed from reply_start on; freed by
 * its close callback, its end, or the feed. */
typedef struct stream {
    az_feed *f;
    azc_http_req *r;
    struct event *keepalive;   /* re-armed by every line queued */
    long long cursor;          /* of the last message queued */
    int limit;
    int want_watermarks;
    char *watermarks_sent;     /* want_watermarks: the text of the last message that had them */
    int busy;                  /* a line is queued and not yet written out */
    int pending;               /* something may be due once it is (or a read failed) */
    struct stream *prev, *next;
} stream;

/* One read of the feed: rows after some cursor, and the feed's bounds and
 * watermarks in the same snapshot. */
typedef struct feed_read {
    long long last_seq, pruned;
    json_t *rows;              /* [{seq, kind, row}, ...], oldest first; NULL when n is 0 */
    long long *seq;            /* seq of each row */
    size_t n;
    int cut;                   /* the read's limit stopped it before last_seq */
    char *wm_text;             /* watermarks as PostgreSQL wrote them */
    json_t *wm;
} feed_read;

struct az_feed {
    az_worker *w;
    azc_pg_link *link;         /* the LISTEN connection; reconnects by itself */
    PGconn *listen;            /* its connection while up, else NULL */
    struct event *listen_ev;
    waiter *head;
    size_t nwaiters, nwant_wm;
    /* The newest read (bounds and watermarks only, n = 0), and whether it
     * still covers every notification consumed. */
    feed_read last;
    int fresh;
    waiter **sorted;           /* wake-up scratch, capacity cap */
    size_t cap;
    stream *streams;
    size_t nstreams, nstream_wm;
    stream **ssorted;          /* wake-up scratch for streams, capacity scap */
    size_t scap;
    struct event *catch_up;    /* serves the streams that drained with something due */
    struct timeval keepalive;  /* the interval, and the common-timeout form of it */
    const struct timeval *keepalive_tv;
    struct evbuffer *out;      /* reply scratch */
    azc_metric *m_reads;       /* authz_feed_reads_total{for} */
    azc_metric *m_wakeups;     /* authz_feed_wakeups_total{channel} */
    azc_metric *m_waiters;     /* authz_feed_waiters{worker} */
    azc_metric *m_streams;     /* authz_feed_streams{worker} */
    char worker_label[16];
};

/* ---- reading --------------------------------------------------------------- */

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

static void read_clear(feed_read *rd)
{
    json_decref(rd->rows);
    json_decref(rd->wm);
    free(rd->seq);
    free(rd->wm_text);
    memset(rd, 0, sizeof *rd);
}

/* Marks a malformed answer of the store: the reply is 500, never a retry
 * hint (503), since asking again gets the same text. */
#define MALFORMED AZC_EINVAL

static void metric_inc(az_feed *f, azc_metric *m, const char *label)
{
    if (azc_metric_inc(m, (const char *const[]){ label, NULL }, 1) != AZC_OK)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: a metric update failed");
}

/* Reads the rows after `after` (at most `limit`), the bounds and the
 * watermarks into *rd (cleared first). `why` labels the read in
 * authz_feed_reads_total. MALFORMED when the store's JSON does not parse. */
static int read_feed(az_feed *f, long long after, int limit, const char *why, feed_read *rd,
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
    metric_inc(f, f->m_reads, why);
    if ((rc = azc_pg_query(f->w->pg, SQL_CHANGES, 2, p, &res, e)) != AZC_OK)
        return rc;
    rd->last_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    rd->pruned = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    rd->rows = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    rd->wm_text = strdup(PQgetvalue(res, 0, 3));
    rd->wm = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
    PQclear(res);
    if (rd->wm_text == NULL) {
        read_clear(rd);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    if (!json_is_array(rd->rows) || !json_is_object(rd->wm)) {
        read_clear(rd);
        return azc_err_set(e, MALFORMED, "the policy store returned malformed JSON");
    }
    rd->n = json_array_size(rd->rows);
    if (rd->n > 0 && (rd->seq = malloc(rd->n * sizeof *rd->seq)) == NULL) {
        read_clear(rd);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    for (i = 0; i < rd->n; i++) {
        json_t *s = json_object_get(json_array_get(rd->rows, i), "seq");

        if (!json_is_integer(s) || (i > 0 && json_integer_value(s) <= rd->seq[i - 1])) {
            read_clear(rd);
            return azc_err_set(e, MALFORMED, "the policy store returned malformed JSON");
        }
        rd->seq[i] = (long long)json_integer_value(s);
    }
    rd->cut = rd->n == (size_t)limit && rd->seq[rd->n - 1] < rd->last_seq;
    return AZC_OK;
}

/* The LISTEN connection hears every commit from now on. */
static int listening(const az_feed *f)
{
    return f->listen != NULL && f->listen_ev != NULL && PQstatus(f->listen) == CONNECTION_OK;
}

/* Keeps rd's bounds and watermarks as the worker's newest read. */
static void remember(az_feed *f, const feed_read *rd)
{
    char *t = strdup(rd->wm_text);

    if (t == NULL) {
        f->fresh = 0;
        return;
    }
    read_clear(&f->last);
    f->last.last_seq = rd->last_seq;
    f->last.pruned = rd->pruned;
    f->last.wm_text = t;
    f->last.wm = json_incref(rd->wm);
    f->fresh = listening(f);
}

/* ---- answering --------------------------------------------------------------- */

typedef enum {
    ANS_GONE,      /* 410: the cursor is outside the feed */
    ANS_SHORT,     /* the read stopped before this waiter's rows: read again */
    ANS_NONE,      /* no row after the cursor */
    ANS_ROWS
} answer_kind;

typedef struct answer {
    answer_kind kind;
    size_t start, count;   /* rd->rows[start .. start + count) */
    int more;
} answer;

/* What a request (after, limit) gets from rd: exactly what a read of its
 * own would have given. */
static answer answer_for(const feed_read *rd, long long after, int limit)
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

/* The 200 body of answer a (ANS_ROWS or ANS_NONE) as compact JSON text
 * (malloc'd); NULL when out of memory. */
static char *body_text(const feed_read *rd, long long after, const answer *a)
{
    json_t *changes = json_array(), *body;
    char cur[24];
    char *text;
    size_t i;

    if (changes == NULL)
        return NULL;
    for (i = 0; i < a->count; i++) {
        if (json_array_append(changes, json_array_get(rd->rows, a->start + i)) != 0) {
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

static void send_text(az_feed *f, azc_http_req *r, const char *text)
{
    if (text == NULL || evbuffer_add(f->out, text, strlen(text)) != 0) {
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    azc_http_reply_raw(r, 200, "application/json", f->out);
    /* A refused reply leaves the bytes here. */
    (void)evbuffer_drain(f->out, evbuffer_get_length(f->out));
}

static void send_gone(azc_http_req *r, const feed_read *rd, long long after)
{
    azc_http_reply_error(r, 410, "cursor_expired",
                         "cursor %lld is outside the feed (%lld to %lld): reload the snapshot",
                         after, rd->pruned, rd->last_seq);
}

/* Answers r with what rd holds for it (never ANS_SHORT: rd was read from
 * its own cursor and limit, or is the worker's last read at its cursor). */
static void send_answer(az_feed *f, azc_http_req *r, const feed_read *rd, long long after,
                        const answer *a)
{
    char *text;

    if (a->kind == ANS_GONE) {
        send_gone(r, rd, after);
        return;
    }
    text = body_text(rd, after, a);
    send_text(f, r, text);
    free(text);
}

/* Answers a failed read: 503 when the connection is down (and starts
 * reconnecting it), 500 otherwise. */
static void send_read_error(az_feed *f, azc_http_req *r, int rc, const azc_err *e)
{
    if (rc == MALFORMED)
        azc_http_reply_error(r, 500, "internal", "%s", e->msg);
    else
        az_reply_db_error(f->w, r, e);
}

/* ---- waiters ----------------------------------------------------------------- */

static void count_waiters(az_feed *f)
{
    if (azc_metric_set(f->m_waiters, (const char *const[]){ f->worker_label, NULL },
                       (double)f->nwaiters) != AZC_OK)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: a metric update failed");
}

static void waiter_unlink_free(waiter *wt)
{
    az_feed *f = wt->f;

    if (wt->prev != NULL)
        wt->prev->next = wt->next;
    else
        f->head = wt->next;
    if (wt->next != NULL)
        wt->next->prev = wt->prev;
    f->nwaiters--;
    if (wt->want_watermarks)
        f->nwant_wm--;
    event_free(wt->timer);
    free(wt->watermarks_seen);
    free(wt);
}

static void on_client_gone(azc_http_req *r, void *arg)
{
    az_feed *f = ((waiter *)arg)->f;

    (void)r;
    waiter_unlink_free(arg);
    count_waiters(f);
}

/* Answers r now with what there is: from the worker's last read when that
 * is current and r is at its head, else from a read of its own. */
static void answer_now(az_feed *f, azc_http_req *r, long long after, int limit)
{
    feed_read rd;
    answer a;
    azc_err e;
    int rc;

    if (f->fresh && after == f->last.last_seq) {
        a = answer_for(&f->last, after, limit);
        send_answer(f, r, &f->last, after, &a);
        return;
    }
    if ((rc = read_feed(f, after, limit, "request", &rd, &e)) != AZC_OK) {
        send_read_error(f, r, rc, &e);
        return;
    }
    remember(f, &rd);
    a = answer_for(&rd, after, limit);
    send_answer(f, r, &rd, after, &a);
    read_clear(&rd);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    waiter *wt = arg;
    az_feed *f = wt->f;
    azc_http_req *r = wt->r;
    long long after = wt->after;
    int limit = wt->limit;

    (void)fd;
    (void)what;
    waiter_unlink_free(wt);
    count_waiters(f);
    answer_now(f, r, after, limit);
}

static int by_cursor(const void *a, const void *b)
{
    const waiter *x = *(waiter *const *)a, *y = *(waiter *const *)b;

    if (x->after != y->after)
        return x->after < y->after ? -1 : 1;
    return (x->limit > y->limit) - (x->limit < y->limit);
}

/* Answers every waiter of list[0..n) (sorted by cursor) that rd has
 * something for; moves those it stopped short of to the front and returns
 * how many. Waiters that get the same answer share one serialised body. */
static size_t answer_from(az_feed *f, const feed_read *rd, waiter **list, size_t n)
{
    char *text = NULL;
    long long text_after = -1;
    answer text_ans = { ANS_NONE, 0, 0, 0 };
    size_t i, keep = 0;

    for (i = 0; i < n; i++) {
        waiter *wt = list[i];
        azc_http_req *r = wt->r;
        long long after = wt->after;
        answer a = answer_for(rd, after, wt->limit);

        if (a.kind == ANS_SHORT) {
            list[keep++] = wt;
            continue;
        }
        if (a.kind == ANS_NONE &&
            (!wt->want_watermarks || strcmp(wt->watermarks_seen, rd->wm_text) == 0))
            continue;
        waiter_unlink_free(wt);
        if (a.kind == ANS_GONE) {
            send_gone(r, rd, after);
            continue;
        }
        if (text == NULL || after != text_after || a.count != text_ans.count ||
            a.more != text_ans.more) {
            free(text);
            text = body_text(rd, after, &a);
            text_after = after;
            text_ans = a;
        }
        send_text(f, r, text);
    }
    free(text);
    return keep;
}

/* Fails every waiter of list[0..n): the read they were woken for failed.
 * Each gets what a request of its own would (503 with Retry-After while
 * the store is away), so followers retry instead of waiting out their
 * deadlines for a wake-up that was lost. */
static void fail_all(az_feed *f, waiter **list, size_t n, int rc, const azc_err *e)
{
    size_t i;

    for (i = 0; i < n; i++) {
        azc_http_req *r = list[i]->r;

        waiter_unlink_free(list[i]);
        send_read_error(f, r, rc, e);
    }
}

/* ---- streams ----------------------------------------------------------------- */

static void count_streams(az_feed *f)
{
    if (azc_metric_set(f->m_streams, (const char *const[]){ f->worker_label, NULL },
                       (double)f->nstreams) != AZC_OK)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: a metric update failed");
}

/* Forgets st; its request is no longer touched (it is being freed, or was
 * ended just before). */
static void stream_free(stream *st)
{
    az_feed *f = st->f;

    if (st->prev != NULL)
        st->prev->next = st->next;
    else if (f->streams == st)
        f->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    if (st->r != NULL) {    /* NULL: never linked (a failed start) */
        f->nstreams--;
        if (st->want_watermarks)
            f->nstream_wm--;
        count_streams(f);
    }
    if (st->keepalive != NULL)
        event_free(st->keepalive);
    free(st->watermarks_sent);
    free(st);
}

/* Finishes st's answer (a well-formed end of the chunked body: the
 * follower reconnects from its last cursor) and frees st. */
static void stream_end(stream *st)
{
    azc_http_reply_end(st->r);
    stream_free(st);
}

static void on_stream_close(azc_http_req *r, void *arg)
{
    (void)r;
    stream_free(arg);
}

/* Queues `line` and its newline as one chunk; the stream is busy until
 * the helper reports it written. -1 when it cannot be queued. */
static int stream_queue(az_feed *f, stream *st, const char *line)
{
    if (evbuffer_add(f->out, line, strlen(line)) != 0 || evbuffer_add(f->out, "\n", 1) != 0 ||
        azc_http_reply_chunk(st->r, f->out) != AZC_OK) {
        (void)evbuffer_drain(f->out, evbuffer_get_length(f->out));
        return -1;
    }
    st->busy = 1;
    if (evtimer_add(st->keepalive, f->keepalive_tv) != 0)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: cannot re-arm a stream's keep-alive");
    return 0;
}

/* Queues message `text` (answer a of rd, NULL when it could not be
 * built) on st and moves st's cursor past it. */
static void stream_deliver(az_feed *f, stream *st, const feed_read *rd, const answer *a,
                           const char *text)
{
    if (text == NULL || stream_queue(f, st, text) != 0) {
        azc_log_reqf(f->w->sh->log, AZC_LOG_ERROR, azc_http_req_id(st->r),
                     "feed: cannot queue a stream message (out of memory): stream ended");
        stream_end(st);
        return;
    }
    if (a->count > 0)
        st->cursor = rd->seq[a->start + a->count - 1];
    /* A message the limit cut is followed at once by the next one. */
    st->pending = a->more;
    if (st->want_watermarks && !a->more) {
        char *t = strdup(rd->wm_text);

        /* Out of memory, the old text stays: at worst one more message. */
        if (t != NULL) {
            free(st->watermarks_sent);
            st->watermarks_sent = t;
        }
    }
}

/* The stream's cursor left the feed: a last error line, then the end. */
static void stream_gone(az_feed *f, stream *st, const feed_read *rd)
{
    char msg[160];
    json_t *j;
    char *text;

    snprintf(msg, sizeof msg, "cursor %lld is outside the feed (%lld to %lld): reload the snapshot",
             st->cursor, rd->pruned, rd->last_seq);
    j = json_pack("{s:{s:s, s:s}}", "error", "code", "cursor_expired", "message", msg);
    text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    /* Without the line the follower still sees the stream end, and its
     * next request gets the 410. */
    if (text == NULL || stream_queue(f, st, text) != 0)
        azc_log_reqf(f->w->sh->log, AZC_LOG_ERROR, azc_http_req_id(st->r),
                     "feed: cannot queue a stream's cursor_expired line");
    free(text);
    stream_end(st);
}

static int by_stream_cursor(const void *a, const void *b)
{
    const stream *x = *(stream *const *)a, *y = *(stream *const *)b;

    if (x->cursor != y->cursor)
        return x->cursor < y->cursor ? -1 : 1;
    return (x->limit > y->limit) - (x->limit < y->limit);
}

/* answer_from for streams: sends each stream of list[0..n) (sorted by
 * cursor, none busy) what rd has for it, sharing the text among those on
 * the same cursor; moves those rd stopped short of to the front and
 * returns how many. */
static size_t stream_answer_from(az_feed *f, const feed_read *rd, stream **list, size_t n)
{
    char *text = NULL;
    long long text_after = -1;
    answer text_ans = { ANS_NONE, 0, 0, 0 };
    size_t i, keep = 0;

    for (i = 0; i < n; i++) {
        stream *st = list[i];
        answer a = answer_for(rd, st->cursor, st->limit);

        if (a.kind == ANS_SHORT) {
            list[keep++] = st;
            continue;
        }
        st->pending = 0;
        if (a.kind == ANS_GONE) {
            stream_gone(f, st, rd);
            continue;
        }
        if (a.kind == ANS_NONE &&
            (!st->want_watermarks || strcmp(st->watermarks_sent, rd->wm_text) == 0))
            continue;
        if (text == NULL || st->cursor != text_after || a.count != text_ans.count ||
            a.more != text_ans.more) {
            free(text);
            text = body_text(rd, st->cursor, &a);
            text_after = st->cursor;
            text_ans = a;
        }
        stream_deliver(f, st, rd, &a, text);
    }
    free(text);
    return keep;
}

static int grow_scratch(az_feed *f, size_t waiters, size_t streams)
{
    if (f->cap < waiters) {
        waiter **s = realloc(f->sorted, waiters * sizeof *s);

        if (s == NULL)
            return -1;
        f->sorted = s;
        f->cap = waiters;
    }
    if (f->scap < streams) {
        stream **s = realloc(f->ssorted, streams * sizeof *s);

        if (s == NULL)
            return -1;
        f->ssorted = s;
        f->scap = streams;
    }
    return 0;
}

/* Answers the waiters f->sorted[0..n) and the streams f->ssorted[0..m)
 * (each sorted by cursor): one read from the smallest cursor with the
 * largest limit serves them all; a further read only for those it
 * stopped short of. When a read fails the waiters get the error and the
 * streams stay pending, to be tried again at their next wake-up or
 * keep-alive. */
static void serve(az_feed *f, size_t n, size_t m, const char *why)
{
    while (n > 0 || m > 0) {
        long long after = LLONG_MAX;
        int limit = 1, rc;
        feed_read rd;
        azc_err e;
        size_t i;

        if (n > 0)
            after = f->sorted[0]->after;
        if (m > 0 && f->ssorted[0]->cursor < after)
            after = f->ssorted[0]->cursor;
        for (i = 0; i < n; i++)
            if (f->sorted[i]->limit > limit)
                limit = f->sorted[i]->limit;
        for (i = 0; i < m; i++)
            if (f->ssorted[i]->limit > limit)
                limit = f->ssorted[i]->limit;
        if ((rc = read_feed(f, after, limit, why, &rd, &e)) != AZC_OK) {
            fail_all(f, f->sorted, n, rc, &e);
            for (i = 0; i < m; i++)
                f->ssorted[i]->pending = 1;
            if (m > 0)
                azc_logf(f->w->sh->log, AZC_LOG_WARN,
                         "feed: %zu streams not served, tried again later: %s", m, e.msg);
            break;
        }
        remember(f, &rd);
        n = answer_from(f, &rd, f->sorted, n);
        m = stream_answer_from(f, &rd, f->ssorted, m);
        read_clear(&rd);
    }
}

/* Streams whose line is out and that have something due: those at the
 * head of a current last read are answered from it, the others by one
 * read shared by all. */
static void on_catch_up(evutil_socket_t fd, short what, void *arg)
{
    az_feed *f = arg;
    stream *st;
    size_t m = 0, i, keep = 0;

    (void)fd;
    (void)what;
    if (grow_scratch(f, 0, f->nstreams) != 0) {
        /* They stay pending: their next keep-alive drains into here again. */
        azc_logf(f->w->sh->log, AZC_LOG_ERROR, "feed: out of memory serving streams");
        return;
    }
    for (st = f->streams; st != NULL; st = st->next)
        if (st->pending && !st->busy)
            f->ssorted[m++] = st;
    if (f->fresh) {
        for (i = 0; i < m; i++) {
            st = f->ssorted[i];
            /* Nothing has been announced since: only watermarks can
             * be due (a changed text since its last message). */
            if (st->cursor == f->last.last_seq)
                (void)stream_answer_from(f, &f->last, &st, 1);
            else
                f->ssorted[keep++] = st;
        }
        m = keep;
    }
    qsort(f->ssorted, m, sizeof *f->ssorted, by_stream_cursor);
    serve(f, 0, m, "stream");
}

static void on_stream_drain(azc_http_req *r, void *arg)
{
    stream *st = arg;

    (void)r;
    st->busy = 0;
    /* Activated once however many streams drain in this loop turn, and
     * run after them: they share one read. */
    if (st->pending)
        event_active(st->f->catch_up, EV_TIMEOUT, 0);
}

/* Nothing was queued for a keep-alive interval: an empty line. Not while
 * the last line is still unsent (one queued line per stream at most);
 * such a client is dropped by the connection's write timeout. */
static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    stream *st = arg;
    az_feed *f = st->f;

    (void)fd;
    (void)what;
    if (st->busy) {
        if (evtimer_add(st->keepalive, f->keepalive_tv) != 0)
            azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: cannot re-arm a stream's keep-alive");
        return;
    }
    if (stream_queue(f, st, "") != 0) {
        azc_log_reqf(f->w->sh->log, AZC_LOG_ERROR, azc_http_req_id(st->r),
                     "feed: cannot queue a keep-alive: stream ended");
        stream_end(st);
    }
}

/* ---- wake-ups ------------------------------------------------------------------ */

/* Notifications were consumed. `changes`: a commit may have added rows
 * (else only watermarks moved). One read from the smallest cursor serves
 * every waiter and every stream that is not busy; further reads only for
 * those that read stopped short of. Busy streams are marked pending and
 * caught up once their line is out. When nobody can be answered by what
 * was announced, nothing is read and the last read is no longer current. */
static void wake(az_feed *f, int changes)
{
    int waiters = f->nwaiters > 0 && (changes || f->nwant_wm > 0);
    int streams = f->nstreams > 0 && (changes || f->nstream_wm > 0);
    size_t n = 0, m = 0;
    waiter *wt;
    stream *st;

    f->fresh = 0;
    if (!waiters && !streams)
        return;
    metric_inc(f, f->m_wakeups, changes ? "changes" : "watermarks");
    if (grow_scratch(f, waiters ? f->nwaiters : 0, streams ? f->nstreams : 0) != 0) {
        /* Waiters are answered at their deadlines; streams drain into a
         * catch-up at their next keep-alive. */
        azc_logf(f->w->sh->log, AZC_LOG_ERROR, "feed: out of memory waking waiters");
        for (st = f->streams; st != NULL; st = st->next)
            st->pending = 1;
        return;
    }
    if (waiters) {
        for (wt = f->head; wt != NULL; wt = wt->next)
            f->sorted[n++] = wt;
        qsort(f->sorted, n, sizeof *f->sorted, by_cursor);
    }
    if (streams) {
        for (st = f->streams; st != NULL; st = st->next) {
            if (!changes && !st->want_watermarks)
                continue;
            if (st->busy)
                st->pending = 1;
            else
                f->ssorted[m++] = st;
        }
        qsort(f->ssorted, m, sizeof *f->ssorted, by_stream_cursor);
    }
    serve(f, n, m, "wakeup");
    count_waiters(f);
}

/* Something committed, or the LISTEN connection was lost or came back
 * (notifications may be lost meanwhile): every waiter looks again. */
static void wake_all(az_feed *f)
{
    wake(f, 1);
}

/* Makes r wait; wm_seen (stolen) is the watermark text it was answered
 * against. On failure r is answered now. */
static void start_waiting(az_feed *f, azc_http_req *r, long long after, int limit, int want_wm,
                          char *wm_seen, long long wait)
{
    waiter *wt = calloc(1, sizeof *wt);
    struct timeval tv;

    if (wm_seen == NULL || wt == NULL ||
        (wt->timer = evtimer_new(f->w->base, on_deadline, wt)) == NULL) {
        free(wt);
        free(wm_seen);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    wt->f = f;
    wt->r = r;
    wt->after = after;
    wt->limit = limit;
    wt->want_watermarks = want_wm;
    wt->watermarks_seen = wm_seen;
    tv.tv_sec = wait / 1000;
    tv.tv_usec = (wait % 1000) * 1000;
    /* The timer first: once deferred, r's close callback owns wt. */
    if (evtimer_add(wt->timer, &tv) != 0 || azc_http_req_defer(r, on_client_gone, wt) != AZC_OK) {
        event_free(wt->timer);
        free(wm_seen);
        free(wt);
        answer_now(f, r, after, limit);
        return;
    }
    wt->next = f->head;
    if (f->head != NULL)
        f->head->prev = wt;
    f->head = wt;
    f->nwaiters++;
    if (want_wm)
        f->nwant_wm++;
    count_waiters(f);
}

static void on_head_drain(azc_http_req *r, void *arg)
{
    (void)r;
    (void)arg;
}

/* Answers r as a stream: its first message now (from the worker's last
 * read when that is current and r is at its head, else from a read of its
 * own), the next ones from wake-ups. A cursor outside the feed, or a
 * failed read, gets the long poll's error status instead. */
static void start_stream(az_feed *f, azc_http_req *r, long long after, int limit, int want_wm)
{
    feed_read rd, *src = &rd;
    stream *st = NULL;
    char *text = NULL;
    answer a;
    azc_err e;
    int rc;

    memset(&rd, 0, sizeof rd);
    if (f->fresh && after == f->last.last_seq) {
        src = &f->last;
    } else {
        if ((rc = read_feed(f, after, limit, "request", &rd, &e)) != AZC_OK) {
            send_read_error(f, r, rc, &e);
            return;
        }
        remember(f, &rd);
    }
    a = answer_for(src, after, limit);
    if (a.kind == ANS_GONE) {
        send_gone(r, src, after);
        goto out;
    }
    /* A HEAD never gets a line, so a stream would never notice its client
     * leave: the head of the answer, and done. */
    if (azc_http_req_method(r) == AZC_HTTP_HEAD) {
        if (azc_http_reply_start(r, 200, NDJSON, on_head_drain, NULL, NULL) == AZC_OK)
            azc_http_reply_end(r);
        goto out;
    }
    if ((st = calloc(1, sizeof *st)) != NULL)
        st->f = f;
    if (st == NULL || (st->keepalive = evtimer_new(f->w->base, on_keepalive, st)) == NULL ||
        (want_wm && (st->watermarks_sent = strdup("")) == NULL) ||
        (text = body_text(src, after, &a)) == NULL) {
        if (st != NULL)
            stream_free(st);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        goto out;
    }
    st->cursor = after;
    st->limit = limit;
    st->want_watermarks = want_wm;
    /* On failure it has answered 500 itself. */
    if (azc_http_reply_start(r, 200, NDJSON, on_stream_drain, on_stream_close, st) != AZC_OK) {
        stream_free(st);
        goto out;
    }
    st->r = r;
    st->next = f->streams;
    if (f->streams != NULL)
        f->streams->prev = st;
    f->streams = st;
    f->nstreams++;
    if (want_wm)
        f->nstream_wm++;
    count_streams(f);
    stream_deliver(f, st, src, &a, text);
out:
    free(text);
    read_clear(&rd);
}

void az_changes_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    az_feed *f = w->feed;
    const char *wmq = azc_http_req_query(r, "watermarks");
    const char *sq = azc_http_req_query(r, "stream");
    long long after, wait = 0, limit = DEFAULT_LIMIT;
    int want_wm, rc;
    feed_read rd;
    answer a;
    azc_err e;

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
    want_wm = wmq != NULL && strcmp(wmq, "1") == 0;
    if (sq != NULL && strcmp(sq, "0") != 0 && strcmp(sq, "1") != 0) {
        azc_http_reply_error(r, 400, "invalid_request", "stream must be 0 or 1");
        return;
    }
    if (sq != NULL && strcmp(sq, "1") == 0) {
        /* A stream never ends by itself: a wait would be a contradiction
         * the follower should learn of, not have ignored. */
        if (azc_http_req_query(r, "wait") != NULL) {
            azc_http_reply_error(r, 400, "invalid_request",
                                 "wait does not apply to a stream (stream=1)");
            return;
        }
        start_stream(f, r, after, (int)limit, want_wm);
        return;
    }
    /* At the head of a current last read there is nothing to read: the
     * next commit's notification is still to come and will wake it. */
    if (wait > 0 && f->fresh && after == f->last.last_seq) {
        start_waiting(f, r, after, (int)limit, want_wm, strdup(f->last.wm_text), wait);
        return;
    }
    if ((rc = read_feed(f, after, (int)limit, "request", &rd, &e)) != AZC_OK) {
        send_read_error(f, r, rc, &e);
        return;
    }
    remember(f, &rd);
    a = answer_for(&rd, after, (int)limit);
    if (a.kind == ANS_NONE && wait > 0) {
        char *seen = rd.wm_text;

        rd.wm_text = NULL;
        read_clear(&rd);
        start_waiting(f, r, after, (int)limit, want_wm, seen, wait);
        return;
    }
    send_answer(f, r, &rd, after, &a);
    read_clear(&rd);
}

/* ---- the LISTEN connection -------------------------------------------------- */

/* The link closes the connection (on_listen_state unwatches it first) and
 * reconnects without blocking the loop. */
static void listen_lost(az_feed *f, const char *why)
{
    azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: LISTEN connection lost (%s); reconnecting", why);
    azc_pg_link_lost(f->link);
}

static void on_listen_readable(evutil_socket_t fd, short what, void *arg)
{
    az_feed *f = arg;
    PGnotify *n;
    int any = 0, changes = 0;

    (void)fd;
    (void)what;
    if (!PQconsumeInput(f->listen)) {
        listen_lost(f, PQerrorMessage(f->listen));
        wake_all(f);
        return;
    }
    while ((n = PQnotifies(f->listen)) != NULL) {
        any = 1;
        /* Anything but a watermark notification may mean new rows. */
        if (strcmp(n->relname, CHANNEL_WATERMARKS) != 0)
            changes = 1;
        PQfreemem(n);
    }
    if (any)
        wake(f, changes);
}

/* Each connection the link makes LISTENs and is watched here; going down,
 * the watch goes first. A (re)connect wakes every waiter: notifications
 * sent meanwhile are lost. */
static void on_listen_state(azc_pg_link *l, int up, void *arg)
{
    az_feed *f = arg;
    azc_err e;

    if (!up) {
        if (f->listen_ev != NULL) {
            event_free(f->listen_ev);
            f->listen_ev = NULL;
        }
        f->listen = NULL;
        return;
    }
    f->listen = azc_pg_link_conn(l);
    azc_err_set(&e, AZC_ERROR, "cannot make the connection non-blocking");
    if (azc_pg_exec_script(f->listen, SQL_LISTEN, &e) != AZC_OK ||
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
    azc_pg_link_options o;

    if (f == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    f->w = w;
    snprintf(f->worker_label, sizeof f->worker_label, "%d", w->index);
    /* Every worker registers the same families: the registry hands back
     * the existing one. */
    f->m_reads = azc_metrics_counter(w->sh->metrics, "authz_feed_reads_total",
                                     "Change-feed reads, for a request or for a wake-up of "
                                     "waiting long polls.",
                                     (const char *const[]){ "for", NULL });
    f->m_wakeups = azc_metrics_counter(w->sh->metrics, "authz_feed_wakeups_total",
                                       "Notifications that woke waiting long polls, by channel.",
                                       (const char *const[]){ "channel", NULL });
    f->m_waiters = azc_metrics_gauge(w->sh->metrics, "authz_feed_waiters",
                                     "Long polls waiting on the change feed, per HTTP worker.",
                                     (const char *const[]){ "worker", NULL });
    f->m_streams = azc_metrics_gauge(w->sh->metrics, "authz_feed_streams",
                                     "Change-feed streams (stream=1) open, per HTTP worker.",
                                     (const char *const[]){ "worker", NULL });
    f->out = evbuffer_new();
    f->catch_up = event_new(w->base, -1, 0, on_catch_up, f);
    if (f->m_reads == NULL || f->m_wakeups == NULL || f->m_waiters == NULL ||
        f->m_streams == NULL || f->out == NULL || f->catch_up == NULL) {
        azc_err_set(e, AZC_ERROR, "cannot set up the change feed's metrics and buffers");
        az_feed_free(f);
        return NULL;
    }
    az_feed_set_stream_keepalive(f, AZ_FEED_STREAM_KEEPALIVE_MS);
    count_waiters(f);
    count_streams(f);
    /* Connects from the loop, without blocking it; until it is up,
     * waiters are answered at their deadlines. */
    memset(&o, 0, sizeof o);
    o.application_name = "authz-feed";
    o.statement_timeout_ms = AZ_STATEMENT_TIMEOUT_MS;
    o.self_watched = 1;
    o.on_state = on_listen_state;
    o.arg = f;
    if ((f->link = azc_pg_link_new(w->base, w->sh->set.pg_url, &o, w->sh->log, e)) == NULL) {
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
    while (f->streams != NULL)
        stream_free(f->streams);
    if (f->catch_up != NULL)
        event_free(f->catch_up);
    if (f->listen_ev != NULL)
        event_free(f->listen_ev);
    azc_pg_link_free(f->link);
    if (f->out != NULL)
        evbuffer_free(f->out);
    read_clear(&f->last);
    free(f->sorted);
    free(f->ssorted);
    free(f);
}

void az_feed_set_stream_keepalive(az_feed *f, long long ms)
{
    if (ms <= 0)
        ms = AZ_FEED_STREAM_KEEPALIVE_MS;
    f->keepalive.tv_sec = (time_t)(ms / 1000);
    f->keepalive.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    /* Thousands of streams re-arm the same interval: libevent keeps such
     * timers in a queue instead of its heap. */
    f->keepalive_tv = event_base_init_common_timeout(f->w->base, &f->keepalive);
    if (f->keepalive_tv == NULL)
        f->keepalive_tv = &f->keepalive;
}
