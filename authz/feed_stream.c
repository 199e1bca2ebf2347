/*
 * stream=1 answers of the change feed: one JSON line per message on an
 * open chunked answer, served by the worker's shared wake-up reads, with
 * at most one unsent line per stream (a slow reader gets what accumulated
 * in its next line) and a keep-alive line when nothing happened. See
 * feed.c for the design.
 */
#include "authz/feed_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/pg.h"

void az__feed_count_streams(az_feed *f)
{
    if (azc_metric_set(f->m_streams, (const char *const[]){ f->worker_label, NULL },
                       (double)f->nstreams) != AZC_OK)
        azc_logf(f->w->sh->log, AZC_LOG_WARN, "feed: a metric update failed");
}

/* Forgets st; its request is no longer touched (it is being freed, or was
 * ended just before). */
void az__feed_stream_free(stream *st)
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
        az__feed_count_streams(f);
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
    az__feed_stream_free(st);
}

static void on_stream_close(azc_http_req *r, void *arg)
{
    (void)r;
    az__feed_stream_free(arg);
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

int az__feed_by_stream_cursor(const void *a, const void *b)
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
size_t az__feed_stream_answer_from(az_feed *f, const feed_read *rd, stream **list, size_t n)
{
    char *text = NULL, text_excl[AZC_REGION_MAX + 1] = "";
    long long text_after = -1;
    answer text_ans = { ANS_NONE, 0, 0, 0 };
    size_t i, keep = 0;

    for (i = 0; i < n; i++) {
        stream *st = list[i];
        answer a = az__feed_answer_for(rd, st->cursor, st->limit);

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
            a.more != text_ans.more || strcmp(st->exclude, text_excl) != 0) {
            free(text);
            text = az__feed_body_text(rd, st->cursor, &a, st->exclude);
            text_after = st->cursor;
            text_ans = a;
            memcpy(text_excl, st->exclude, sizeof text_excl);
        }
        stream_deliver(f, st, rd, &a, text);
    }
    free(text);
    return keep;
}

/* Streams served by a catch-up: a heartbeat's lines to thousands of
 * streams go out paced (az__feed_pace), so that checks neither wait
 * behind them in the loop nor for the core (see on_wm_due in feed.c: the
 * same reasoning, at about 20 us a line). A commit's lines do not wait:
 * its wake-up writes to every stream that is not busy at once. */

void az__feed_catch_up_soon(az_feed *f)
{
    az__feed_run_soon(f, f->catch_up, "a stream catch-up");
}

/* Streams whose line is out and that have something due, a slice of them
 * (the rest a millisecond later): those at the head of a current last
 * read are answered from it, the others by one read shared by all. */
void az__feed_on_catch_up(evutil_socket_t fd, short what, void *arg)
{
    az_feed *f = arg;
    stream *st;
    /* Paced on the open streams, a count kept as they come and go. */
    size_t m = 0, i, keep = 0, slice = az__feed_pace(&f->catch_up_pace, f->nstreams);

    (void)fd;
    (void)what;
    if (az__feed_grow_scratch(f, 0, f->nstreams) != 0) {
        /* They stay pending: their next keep-alive drains into here again. */
        azc_logf(f->w->sh->log, AZC_LOG_ERROR, "feed: out of memory serving streams");
        return;
    }
    for (st = f->streams; st != NULL; st = st->next) {
        if (st->pending && !st->busy) {
            if (m == slice) {
                az__feed_run_paced(f, f->catch_up, "a stream catch-up");
                break;
            }
            f->ssorted[m++] = st;
        }
    }
    if (f->fresh) {
        for (i = 0; i < m; i++) {
            st = f->ssorted[i];
            /* Nothing has been announced since: only watermarks can
             * be due (a changed text since its last message). */
            if (st->cursor == f->last.last_seq)
                (void)az__feed_stream_answer_from(f, &f->last, &st, 1);
            else
                f->ssorted[keep++] = st;
        }
        m = keep;
    }
    qsort(f->ssorted, m, sizeof *f->ssorted, az__feed_by_stream_cursor);
    az__feed_serve(f, 0, m, "stream");
}

static void on_stream_drain(azc_http_req *r, void *arg)
{
    stream *st = arg;

    (void)r;
    st->busy = 0;
    /* Scheduled once however many streams drain in this loop turn, and
     * run after them: they share one read. */
    if (st->pending)
        az__feed_catch_up_soon(st->f);
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

static void on_head_drain(azc_http_req *r, void *arg)
{
    (void)r;
    (void)arg;
}

/* Answers r as a stream: its first message now (from the worker's last
 * read when that is current and r is at its head, else from a read of its
 * own), the next ones from wake-ups. A cursor outside the feed, or a
 * failed read, gets the long poll's error status instead. */
void az__feed_start_stream(az_feed *f, azc_http_req *r, long long after, int limit, int want_wm,
                           const char *exclude)
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
        if ((rc = az__feed_read_feed(f, after, limit, "request", &rd, &e)) != AZC_OK) {
            az__feed_send_read_error(f, r, rc, &e);
            return;
        }
        az__feed_remember(f, &rd);
    }
    a = az__feed_answer_for(src, after, limit);
    if (a.kind == ANS_GONE) {
        az__feed_send_gone(r, src, after);
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
        (text = az__feed_body_text(src, after, &a, exclude)) == NULL) {
        if (st != NULL)
            az__feed_stream_free(st);
        azc_http_reply_error(r, 500, "internal", "out of memory");
        goto out;
    }
    st->cursor = after;
    st->limit = limit;
    st->want_watermarks = want_wm;
    snprintf(st->exclude, sizeof st->exclude, "%s", exclude);
    /* On failure it has answered 500 itself. */
    if (azc_http_reply_start(r, 200, NDJSON, on_stream_drain, on_stream_close, st) != AZC_OK) {
        az__feed_stream_free(st);
        goto out;
    }
    st->r = r;
    /* Its heartbeat lines wait for the checks of the same loop turn. */
    if (azc_http_req_background(r) != AZC_OK ||
        event_priority_set(st->keepalive, AZC_LOOP_PRIO_BACKGROUND) != 0)
        azc_log_reqf(f->w->sh->log, AZC_LOG_WARN, azc_http_req_id(r),
                     "feed: cannot lower a stream's priority");
    st->next = f->streams;
    if (f->streams != NULL)
        f->streams->prev = st;
    f->streams = st;
    f->nstreams++;
    if (want_wm)
        f->nstream_wm++;
    az__feed_count_streams(f);
    stream_deliver(f, st, src, &a, text);
out:
    free(text);
    az__feed_read_clear(&rd);
}
