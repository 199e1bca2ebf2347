/*
 * GET /v1/policy/changes?after=&wait=&limit=&watermarks=&stream=&exclude_origin=:
 * its waiters and its streams.
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
 * Watermarks from memory. Each raised watermark row announces itself at
 * COMMIT with its values and the feed's last seq as its transaction saw
 * it (sql/authz/006). When no change has been announced since the
 * worker's last read and that read reached the announced seq, the new
 * values hold for every follower at the head of that read: the worker
 * merges them into what it last read and answers those followers from
 * memory, with no query. Heartbeats (five a second per origin) thus cost
 * the store nothing per worker. A notification without a payload, or a
 * follower behind the head, still takes a read.
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
#include "authz/feed_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/pg.h"

static const char SQL_LISTEN[] = "LISTEN authz_changes; LISTEN authz_watermarks";
static const char CHANNEL_WATERMARKS[] = "authz_watermarks";

#define DEFAULT_LIMIT 1000
#define MAX_LIMIT 10000
#define MAX_WAIT_MS 60000


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

/* ---- waiters ----------------------------------------------------------------- */

void az__feed_count_waiters(az_feed *f)
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
    az__feed_count_waiters(f);
}

/* Answers r now with what there is: from the worker's last read when that
 * is current and r is at its head, else from a read of its own. */
static void answer_now(az_feed *f, azc_http_req *r, long long after, int limit,
                       const char *exclude)
{
    feed_read rd;
    answer a;
    azc_err e;
    int rc;

    if (f->fresh && after == f->last.last_seq) {
        a = az__feed_answer_for(&f->last, after, limit);
        az__feed_send_answer(f, r, &f->last, after, &a, exclude);
        return;
    }
    if ((rc = az__feed_read_feed(f, after, limit, "request", &rd, &e)) != AZC_OK) {
        az__feed_send_read_error(f, r, rc, &e);
        return;
    }
    az__feed_remember(f, &rd);
    a = az__feed_answer_for(&rd, after, limit);
    az__feed_send_answer(f, r, &rd, after, &a, exclude);
    az__feed_read_clear(&rd);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    waiter *wt = arg;
    az_feed *f = wt->f;
    azc_http_req *r = wt->r;
    long long after = wt->after;
    int limit = wt->limit;
    char exclude[sizeof wt->exclude];

    (void)fd;
    (void)what;
    memcpy(exclude, wt->exclude, sizeof exclude);
    waiter_unlink_free(wt);
    az__feed_count_waiters(f);
    answer_now(f, r, after, limit, exclude);
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
    char *text = NULL, text_excl[AZC_REGION_MAX + 1] = "", excl[AZC_REGION_MAX + 1];
    long long text_after = -1;
    answer text_ans = { ANS_NONE, 0, 0, 0 };
    size_t i, keep = 0;

    for (i = 0; i < n; i++) {
        waiter *wt = list[i];
        azc_http_req *r = wt->r;
        long long after = wt->after;
        answer a = az__feed_answer_for(rd, after, wt->limit);

        if (a.kind == ANS_SHORT) {
            list[keep++] = wt;
            continue;
        }
        if (a.kind == ANS_NONE &&
            (!wt->want_watermarks || strcmp(wt->watermarks_seen, rd->wm_text) == 0))
            continue;
        memcpy(excl, wt->exclude, sizeof excl);
        waiter_unlink_free(wt);
        if (a.kind == ANS_GONE) {
            az__feed_send_gone(r, rd, after);
            continue;
        }
        if (text == NULL || after != text_after || a.count != text_ans.count ||
            a.more != text_ans.more || strcmp(excl, text_excl) != 0) {
            free(text);
            text = az__feed_body_text(rd, after, &a, excl);
            text_after = after;
            text_ans = a;
            memcpy(text_excl, excl, sizeof text_excl);
        }
        az__feed_send_text(f, r, text);
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
        az__feed_send_read_error(f, r, rc, e);
    }
}

int az__feed_grow_scratch(az_feed *f, size_t waiters, size_t streams)
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
void az__feed_serve(az_feed *f, size_t n, size_t m, const char *why)
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
        if ((rc = az__feed_read_feed(f, after, limit, why, &rd, &e)) != AZC_OK) {
            fail_all(f, f->sorted, n, rc, &e);
            for (i = 0; i < m; i++)
                f->ssorted[i]->pending = 1;
            if (m > 0)
                azc_logf(f->w->sh->log, AZC_LOG_WARN,
                         "feed: %zu streams not served, tried again later: %s", m, e.msg);
            break;
        }
        az__feed_remember(f, &rd);
        n = answer_from(f, &rd, f->sorted, n);
        m = az__feed_stream_answer_from(f, &rd, f->ssorted, m);
        az__feed_read_clear(&rd);
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
    az__feed_metric_inc(f, f->m_wakeups, changes ? "changes" : "watermarks");
    if (az__feed_grow_scratch(f, waiters ? f->nwaiters : 0, streams ? f->nstreams : 0) != 0) {
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
        qsort(f->ssorted, m, sizeof *f->ssorted, az__feed_by_stream_cursor);
    }
    az__feed_serve(f, n, m, "wakeup");
    az__feed_count_waiters(f);
}

/*
 * Watermark-only wake-up answered from memory: `upd` (origin -> {applied,
 * known}) raises f->last's watermarks, which still cover every change
 * announced (the caller checked). The followers that want watermarks are
 * marked due and answered in the background a slice at a time (on_wm_due,
 * the streams' catch-up): those at the head of f->last from memory, any
 * behind it (a limit cut them short, a slow reader) by one read.
 */
static void wake_from_memory(az_feed *f, json_t *upd)
{
    json_t *wm = json_deep_copy(f->last.wm), *v;
    const char *origin;
    size_t n = 0, m = 0;
    int raised = 0;
    char *text;
    waiter *wt;
    stream *st;

    if (wm == NULL)
        goto read;
    json_object_foreach(upd, origin, v) {
        json_t *cur = json_object_get(wm, origin);
        json_int_t a = json_integer_value(json_object_get(v, "applied"));
        json_int_t k = json_integer_value(json_object_get(v, "known"));
        json_int_t ca = cur != NULL ? json_integer_value(json_object_get(cur, "applied")) : -1;
        json_int_t ck = cur != NULL ? json_integer_value(json_object_get(cur, "known")) : -1;

        if (a <= ca && k <= ck)
            continue;
        /* Watermarks only rise: a late notification of an older value
         * never lowers what a newer read showed. */
        if (json_object_set_new(wm, origin, json_pack("{s:I, s:I}", "applied", a > ca ? a : ca,
                                                      "known", k > ck ? k : ck)) != 0)
            goto read;
        raised = 1;
    }
    if (!raised) {
        json_decref(wm);
        return;
    }
    if ((text = json_dumps(wm, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
        goto read;
    json_decref(f->last.wm);
    free(f->last.wm_text);
    f->last.wm = wm;
    f->last.wm_text = text;
    az__feed_metric_inc(f, f->m_wakeups, "watermarks");
    /* Waiters (on_wm_due) and streams (the catch-up) get theirs paced, in
     * the background, from memory at the head, so that a heartbeat's
     * thousands of answers never hold up the loop's checks. */
    for (wt = f->head; wt != NULL; wt = wt->next) {
        if (wt->want_watermarks) {
            wt->wm_due = 1;
            n++;
        }
    }
    for (st = f->streams; st != NULL; st = st->next) {
        if (st->want_watermarks) {
            st->pending = 1;
            m++;
        }
    }
    if (n > 0)
        az__feed_run_soon(f, f->wm_due, "the watermark answers");
    if (m > 0)
        az__feed_catch_up_soon(f);
    return;
read:
    json_decref(wm);
    wake(f, 0);
}

/*
 * The waiters a watermark raise is due to, paced (az__feed_pace): those at
 * the head of a current last read from memory, the others by one read.
 * Waiters answered meanwhile by a commit's wake-up are gone from the list,
 * and one that is no longer due (an equal text) keeps waiting.
 *
 * Paced, not a slice per loop turn: each answer is a round trip (the
 * waiter asks again at once), about 30 us of the server's CPU, so a
 * thousand waiters answered back to back hold the worker's core for tens
 * of milliseconds at every heartbeat, and a check that arrives meanwhile
 * waits for the CPU even when it runs between two slices (a second
 * worker on the same core runs its own burst at the same moment). Eight a
 * millisecond is about a quarter of a core; the last of 500 waiters hears
 * of the raise some 60 ms late, commits are answered at once as ever.
 */

static void on_wm_due(evutil_socket_t fd, short what, void *arg)
{
    az_feed *f = arg;
    /* Paced on the waiters that want watermarks (a count kept as they
     * come and go), not a walk of the list to count those due. */
    size_t n = 0, hn = 0, i, slice = az__feed_pace(&f->wm_pace, f->nwant_wm);
    waiter *wt;

    (void)fd;
    (void)what;
    if (az__feed_grow_scratch(f, slice, 0) != 0) {
        /* They are answered at their deadlines, or by the next wake-up. */
        azc_logf(f->w->sh->log, AZC_LOG_ERROR, "feed: out of memory answering waiters");
        return;
    }
    for (wt = f->head; wt != NULL; wt = wt->next) {
        if (!wt->wm_due)
            continue;
        if (n == slice) {
            az__feed_run_paced(f, f->wm_due, "the watermark answers");
            break;
        }
        wt->wm_due = 0;
        f->sorted[n++] = wt;
    }
    /* Heads first, then those behind, for one read. */
    for (i = 0; i < n && f->fresh; i++) {
        if (f->sorted[i]->after == f->last.last_seq) {
            waiter *t = f->sorted[hn];

            f->sorted[hn++] = f->sorted[i];
            f->sorted[i] = t;
        }
    }
    /* At the head nothing can be cut short: every one is answered. */
    (void)answer_from(f, &f->last, f->sorted, hn);
    if (n > hn) {
        memmove(f->sorted, f->sorted + hn, (n - hn) * sizeof *f->sorted);
        qsort(f->sorted, n - hn, sizeof *f->sorted, by_cursor);
        az__feed_serve(f, n - hn, 0, "wakeup");
    }
    az__feed_count_waiters(f);
}

void az__feed_run_soon(az_feed *f, struct event *ev, const char *what)
{
    static const struct timeval now = { 0, 0 };

    /* A timer, not event_active: it runs after the loop has polled again,
     * so whatever became ready meanwhile (checks) goes first. */
    if (evtimer_add(ev, &now) != 0)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: cannot schedule %s", what);
}

void az__feed_run_paced(az_feed *f, struct event *ev, const char *what)
{
    static const struct timeval ms = { 0, 1000 };

    if (evtimer_add(ev, &ms) != 0)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: cannot schedule %s", what);
}

size_t az__feed_pace(az_pace *p, size_t due)
{
    size_t rate = (due + AZ_PACE_SPREAD_MAX_MS - 1) / AZ_PACE_SPREAD_MAX_MS, n;
    struct timespec ts;
    uint64_t now, us;

    if (rate < AZ_PACE_PER_MS)
        rate = AZ_PACE_PER_MS;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    us = p->last_us != 0 && now > p->last_us ? now - p->last_us : 1000;
    p->last_us = now;
    /* Over 4 ms: the first slice of a pass (or a loop held up), which
     * starts at the rate, not with a burst. */
    if (us < 1000 || us > 4000)
        us = 1000;
    n = (rate * (size_t)us + 999) / 1000;
    return n;
}

/* The higher of a and b. */
static json_int_t max_ji(json_int_t a, json_int_t b)
{
    return a > b ? a : b;
}

/*
 * Adds a watermark notification's payload ({"seq", "origin", "applied",
 * "known"}, sql/authz/006) to upd (origin -> the highest values) and
 * raises *seq to its seq. 0 when there is no usable payload: the
 * watermarks must then be read.
 */
static int note_watermark(json_t *upd, const char *payload, long long *seq)
{
    json_t *j = payload[0] != '\0' ? json_loads(payload, 0, NULL) : NULL, *s, *o, *a, *k, *cur;
    json_int_t ca = 0, ck = 0;
    int ok = 0;

    if (j == NULL)
        return 0;
    s = json_object_get(j, "seq");
    o = json_object_get(j, "origin");
    a = json_object_get(j, "applied");
    k = json_object_get(j, "known");
    if (!json_is_integer(s) || !json_is_string(o) || !json_is_integer(a) ||
        !json_is_integer(k) || json_integer_value(s) < 0 || json_integer_value(a) < 0 ||
        json_integer_value(k) < 0 || json_string_length(o) == 0 ||
        json_string_length(o) > AZC_REGION_MAX)
        goto out;
    if ((cur = json_object_get(upd, json_string_value(o))) != NULL) {
        ca = json_integer_value(json_object_get(cur, "applied"));
        ck = json_integer_value(json_object_get(cur, "known"));
    }
    if (json_object_set_new(upd, json_string_value(o),
                            json_pack("{s:I, s:I}", "applied", max_ji(ca, json_integer_value(a)),
                                      "known", max_ji(ck, json_integer_value(k)))) != 0)
        goto out;
    if (json_integer_value(s) > *seq)
        *seq = json_integer_value(s);
    ok = 1;
out:
    json_decref(j);
    return ok;
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
                          const char *exclude, char *wm_seen, long long wait)
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
    snprintf(wt->exclude, sizeof wt->exclude, "%s", exclude);
    wt->watermarks_seen = wm_seen;
    tv.tv_sec = wait / 1000;
    tv.tv_usec = (wait % 1000) * 1000;
    /* The timer first: once deferred, r's close callback owns wt. */
    if (evtimer_add(wt->timer, &tv) != 0 || azc_http_req_defer(r, on_client_gone, wt) != AZC_OK) {
        event_free(wt->timer);
        free(wm_seen);
        free(wt);
        answer_now(f, r, after, limit, exclude);
        return;
    }
    /* A follower's connection: its answers and its next polls wait for
     * the checks of the same loop turn. */
    if (azc_http_req_background(r) != AZC_OK)
        azc_log_reqf(f->w->sh->log, AZC_LOG_WARN, azc_http_req_id(r),
                     "feed: cannot lower a waiter's priority");
    wt->next = f->head;
    if (f->head != NULL)
        f->head->prev = wt;
    f->head = wt;
    f->nwaiters++;
    if (want_wm)
        f->nwant_wm++;
    az__feed_count_waiters(f);
}

void az_changes_handler(azc_http_req *r, void *arg)
{
    az_worker *w = arg;
    az_feed *f = w->feed;
    const char *wmq = azc_http_req_query(r, "watermarks");
    const char *sq = azc_http_req_query(r, "stream");
    const char *xq = azc_http_req_query(r, "exclude_origin");
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
    /* A replicator leaves out its own region's rows: it would only skip
     * them, after this server encoded and sent them and it parsed them. */
    if (xq != NULL && !azc_region_valid(xq)) {
        azc_http_reply_error(r, 400, "invalid_request", "exclude_origin must be a region name");
        return;
    }
    if (xq == NULL)
        xq = "";
    if (sq != NULL && strcmp(sq, "1") == 0) {
        /* A stream never ends by itself: a wait would be a contradiction
         * the follower should learn of, not have ignored. */
        if (azc_http_req_query(r, "wait") != NULL) {
            azc_http_reply_error(r, 400, "invalid_request",
                                 "wait does not apply to a stream (stream=1)");
            return;
        }
        az__feed_start_stream(f, r, after, (int)limit, want_wm, xq);
        return;
    }
    /* At the head of a current last read there is nothing to read: the
     * next commit's notification is still to come and will wake it. */
    if (wait > 0 && f->fresh && after == f->last.last_seq) {
        start_waiting(f, r, after, (int)limit, want_wm, xq, strdup(f->last.wm_text), wait);
        return;
    }
    if ((rc = az__feed_read_feed(f, after, (int)limit, "request", &rd, &e)) != AZC_OK) {
        az__feed_send_read_error(f, r, rc, &e);
        return;
    }
    az__feed_remember(f, &rd);
    a = az__feed_answer_for(&rd, after, (int)limit);
    if (a.kind == ANS_NONE && wait > 0) {
        char *seen = rd.wm_text;

        rd.wm_text = NULL;
        az__feed_read_clear(&rd);
        start_waiting(f, r, after, (int)limit, want_wm, xq, seen, wait);
        return;
    }
    az__feed_send_answer(f, r, &rd, after, &a, xq);
    az__feed_read_clear(&rd);
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
    int any = 0, changes = 0, from_memory = 1;
    long long seq = -1;
    json_t *upd = json_object();

    (void)fd;
    (void)what;
    if (!PQconsumeInput(f->listen)) {
        json_decref(upd);
        listen_lost(f, PQerrorMessage(f->listen));
        wake_all(f);
        return;
    }
    while ((n = PQnotifies(f->listen)) != NULL) {
        any = 1;
        /* Anything but a watermark notification may mean new rows. */
        if (strcmp(n->relname, CHANNEL_WATERMARKS) != 0)
            changes = 1;
        else if (from_memory && (upd == NULL || !note_watermark(upd, n->extra, &seq)))
            from_memory = 0;
        PQfreemem(n);
    }
    /* From memory only while the last read covers every announced change
     * and reached every seq the new watermarks hold for. */
    if (any && !changes && from_memory && f->fresh && seq <= f->last.last_seq)
        wake_from_memory(f, upd);
    else if (any)
        wake(f, changes);
    json_decref(upd);
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
    f->catch_up = event_new(w->base, -1, 0, az__feed_on_catch_up, f);
    f->wm_due = event_new(w->base, -1, 0, on_wm_due, f);
    if (f->m_reads == NULL || f->m_wakeups == NULL || f->m_waiters == NULL ||
        f->m_streams == NULL || f->out == NULL || f->catch_up == NULL || f->wm_due == NULL ||
        event_priority_set(f->catch_up, AZC_LOOP_PRIO_BACKGROUND) != 0 ||
        event_priority_set(f->wm_due, AZC_LOOP_PRIO_BACKGROUND) != 0) {
        azc_err_set(e, AZC_ERROR, "cannot set up the change feed's metrics and buffers");
        az_feed_free(f);
        return NULL;
    }
    az_feed_set_stream_keepalive(f, AZ_FEED_STREAM_KEEPALIVE_MS);
    az__feed_count_waiters(f);
    az__feed_count_streams(f);
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
        az__feed_stream_free(f->streams);
    if (f->catch_up != NULL)
        event_free(f->catch_up);
    if (f->wm_due != NULL)
        event_free(f->wm_due);
    if (f->listen_ev != NULL)
        event_free(f->listen_ev);
    azc_pg_link_free(f->link);
    if (f->out != NULL)
        evbuffer_free(f->out);
    az__feed_read_clear(&f->last);
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
