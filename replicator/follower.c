/*
 * Following one peer (docs/replication.md): a loop of one request at a
 * time on the follower's own event loop.
 *
 *   step: connect the database if needed, read the stored cursor once
 *         (none: bootstrap), then ask the peer: its snapshot
 *         (tombstones=1) when a resync is due, else its change feed after
 *         the cursor, as a stream (stream=1, replication.mode "stream")
 *         or a long poll (wait=replication.wait_ms, mode "poll");
 *   answer: apply it in one transaction (replicator/apply.c), then step
 *         again at once; a 410 makes the next step a resync; anything
 *         else (down, timeout, 5xx, garbage, a database failure) arms the
 *         step after a backoff.
 *
 * A stream is an open-ended answer, one JSON message per line, each
 * applied as a long-poll answer would be, as its line completes: a change
 * committed at the peer arrives one network delay later instead of
 * waiting for the next poll to be sent. libevent drains the request's
 * input buffer after each chunk callback, so the bytes are moved into a
 * line buffer of the follower's own and a partial line waits there for
 * the next chunk. While a message is applied nothing is read: the peer
 * sees the back-pressure and coalesces. Empty lines are keep-alives; the
 * connection's read timeout (replication.stream_timeout_ms, restarted by
 * every byte, keep-alives included) closes a stream whose peer went
 * silent. A stream to give up on (a bad line, a failed apply, a
 * cursor_expired line) is not freed from inside its own callbacks: it is
 * marked dead (its further bytes ignored) and an event frees the
 * connection afterwards; completion callbacks that libevent may run from
 * that free are ignored, and no evhttp_request pointer is kept anywhere.
 *
 * The backoff is "full jitter": a uniform wait in [0, cap] with cap
 * doubling from 50 ms to replication.backoff_max_ms, so many replicators
 * retrying one peer spread out. The request timeout is the long poll's
 * wait plus a margin, so a peer that accepts and then stalls costs one
 * timeout, not a stuck follower.
 *
 * The HTTP connection is only freed from the step (never from inside one
 * of its own callbacks), and the bearer token file is read again for each
 * new connection, so a rotated token is picked up by the next reconnect.
 * The apply blocks this loop (and only this one): that is the point of a
 * thread per peer. SIGTERM stops the loop after the callback in hand, so
 * an answer being applied is committed first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "common/pg.h"
#include "common/url.h"
#include "replicator/apply.h"
#include "replicator/follower.h"

/* A database that stops answering must not hold this follower (and a
 * SIGTERM waiting for it) forever: the statement fails, the batch rolls
 * back and is asked for again after the backoff. */
static const char SQL_SESSION[] = "SELECT set_config('statement_timeout', '30000', false)";
static const char SQL_ORIGINS[] =
    "SELECT origin, applied_hlc, known_hlc, coalesce(source, '') FROM authz.watermarks"
    " ORDER BY origin";

#define BACKOFF_MIN_MS 50
#define TOKEN_MAX 8192
#define PATH_MAX_LEN 1024
#define TIMEOUT_MARGIN_S 10
#define MAX_BODY (1024LL * 1024 * 1024)
#define EMPTY_FAST_MS 20   /* an empty answer quicker than this ... */
#define EMPTY_PAUSE_MS 25  /* ... delays the next request by this */
#define MAX_LINE (256LL * 1024 * 1024) /* a stream line longer than this is refused */
#define NDJSON "application/x-ndjson"

struct rp_follower {
    rp_shared *sh;
    size_t index;
    char name[RP_REGION_LEN];
    char host[AZC_URL_HOST_MAX];
    char prefix[AZC_URL_PREFIX_MAX];           /* URL path prefix without its trailing '/' */
    int port;
    struct event_base *base;
    struct event *step_ev;
    struct evhttp_connection *conn;
    int conn_broken;            /* free conn at the next step */
    int connections;            /* made so far (the second on are reconnects) */
    PGconn *pg;
    int session_set;            /* SQL_SESSION ran on pg */
    long long cursor;
    int cursor_loaded;
    int resync;                 /* the next request is the snapshot */
    int in_snapshot;            /* the request in flight is the snapshot */
    int attempt;                /* failures in a row, for the backoff */
    long long sent_ms;          /* when the request in flight was sent */
    int in_stream;              /* the request in flight is a stream */
    int stream_dead;            /* given up on: its bytes are ignored, abort_ev frees it */
    int stream_ok;              /* its answer's headers said 200 NDJSON */
    int aborting;               /* freeing the connection: ignore its callbacks */
    struct evbuffer *line;      /* the stream's partial line */
    struct event *abort_ev;
    int abort_resync;           /* what abort_ev does next: resync, or fail() with ... */
    char abort_kind[32];
    char abort_msg[RP_ERR_LEN];
    unsigned seed;
    char token[TOKEN_MAX];
};

long long rp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_state(rp_follower *f, const char *state, const char *err, int success)
{
    rp_peer_status *p = &f->sh->peers[f->index];

    pthread_mutex_lock(&f->sh->lock);
    p->state = state;
    p->cursor = f->cursor_loaded ? f->cursor : -1;
    p->stream_open = f->in_stream && f->stream_ok && !f->stream_dead;
    if (err != NULL)
        snprintf(p->last_error, sizeof p->last_error, "%s", err);
    if (success) {
        p->last_success_ms = rp_now_ms();
        p->reached = 1;
    }
    pthread_mutex_unlock(&f->sh->lock);
}

static void arm(rp_follower *f, long ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    if (event_add(f->step_ev, &tv) != 0)
        azc_logf(f->sh->log, AZC_LOG_ERROR, "peer %s: cannot arm the step timer", f->name);
}

/* Counts the failure, logs it and arms the next step after a backoff. */
static void fail(rp_follower *f, const char *kind, const char *msg)
{
    long long cap = BACKOFF_MIN_MS;
    long wait;
    int i;

    for (i = 0; i < f->attempt && cap < f->sh->set.backoff_max_ms; i++)
        cap *= 2;
    if (cap > f->sh->set.backoff_max_ms)
        cap = f->sh->set.backoff_max_ms;
    wait = (long)(rand_r(&f->seed) % (unsigned)(cap + 1));
    if (f->attempt < 30)
        f->attempt++;
    (void)azc_metric_inc(f->sh->m.errors, (const char *const[]){ f->name, kind, NULL }, 1);
    azc_logf(f->sh->log, AZC_LOG_WARN, "peer %s: %s: %s (retry in %ld ms)", f->name, kind, msg,
             wait);
    set_state(f, "backoff", msg, 0);
    arm(f, wait);
}

static void drop_pg(rp_follower *f)
{
    if (f->pg != NULL)
        PQfinish(f->pg);
    f->pg = NULL;
    f->session_set = 0;
}

/* Reads auth.token_file into f->token ("" without one). */
static int token_read(rp_follower *f, azc_err *e)
{
    FILE *fp;
    size_t n;

    f->token[0] = '\0';
    if (f->sh->set.token_file == NULL)
        return AZC_OK;
    if ((fp = fopen(f->sh->set.token_file, "r")) == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot read auth.token_file");
    n = fread(f->token, 1, sizeof f->token - 1, fp);
    fclose(fp);
    f->token[n] = '\0';
    while (n > 0 && (f->token[n - 1] == '\n' || f->token[n - 1] == '\r' ||
                     f->token[n - 1] == ' ' || f->token[n - 1] == '\t'))
        f->token[--n] = '\0';
    if (n == 0 || strpbrk(f->token, "\r\n") != NULL)
        return azc_err_set(e, AZC_EINVAL, "auth.token_file holds no single-line token");
    return AZC_OK;
}

static int conn_ensure(rp_follower *f, azc_err *e)
{
    int rc;

    if (f->conn != NULL && !f->conn_broken)
        return AZC_OK;
    if (f->conn != NULL) {
        evhttp_connection_free(f->conn);
        f->conn = NULL;
    }
    if ((rc = token_read(f, e)) != AZC_OK)
        return rc;
    f->conn = evhttp_connection_base_new(f->base, NULL, f->host, (unsigned short)f->port);
    if (f->conn == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an HTTP connection");
    evhttp_connection_set_retries(f->conn, 0);
    f->conn_broken = 0;
    if (f->connections++ > 0)
        (void)azc_metric_inc(f->sh->m.reconnects, (const char *const[]){ f->name, NULL }, 1);
    return AZC_OK;
}

/* Copies this region's watermarks into the shared status and the lag
 * gauges. Best effort: a failure only leaves them as they were. */
static void origins_refresh(rp_follower *f)
{
    rp_shared *sh = f->sh;
    PGresult *r = NULL;
    azc_err e;
    int i, n;

    if (azc_pg_query(f->pg, SQL_ORIGINS, 0, NULL, &r, &e) != AZC_OK)
        return;
    n = PQntuples(r);
    pthread_mutex_lock(&sh->lock);
    sh->norigins = 0;
    for (i = 0; i < n && i < RP_MAX_ORIGINS; i++) {
        rp_origin_status *o = &sh->origins[sh->norigins++];

        snprintf(o->origin, sizeof o->origin, "%s", PQgetvalue(r, i, 0));
        o->applied = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        o->known = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        snprintf(o->source, sizeof o->source, "%s", PQgetvalue(r, i, 3));
    }
    pthread_mutex_unlock(&sh->lock);
    for (i = 0; i < n; i++) {
        long long a = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        long long k = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        /* HLCs hold milliseconds above a 16-bit counter. */
        double lag = k > a ? (double)((k >> 16) - (a >> 16)) / 1000.0 : 0.0;

        (void)azc_metric_set(sh->m.lag, (const char *const[]){ PQgetvalue(r, i, 0), NULL }, lag);
    }
    PQclear(r);
}

static void count(rp_follower *f, const rp_apply_result *res, double secs)
{
    rp_metrics *m = &f->sh->m;
    int k;

    for (k = 0; k < RP_NKINDS; k++)
        if (res->applied[k] > 0)
            (void)azc_metric_inc(m->applied, (const char *const[]){ f->name, rp_kind_names[k],
                                                                    NULL },
                                 (double)res->applied[k]);
    if (res->own_origin > 0)
        (void)azc_metric_inc(m->skipped, (const char *const[]){ f->name, "own_origin", NULL },
                             (double)res->own_origin);
    if (res->older > 0)
        (void)azc_metric_inc(m->skipped, (const char *const[]){ f->name, "older", NULL },
                             (double)res->older);
    if (res->dead > 0) {
        (void)azc_metric_inc(m->dead, (const char *const[]){ f->name, NULL }, (double)res->dead);
        azc_logf(f->sh->log, AZC_LOG_WARN,
                 "peer %s: %lld bad rows moved to authz.replication_dead_letters", f->name,
                 res->dead);
    }
    (void)azc_metric_observe(m->batch, (const char *const[]){ f->name, NULL }, secs);
}

/* Applies one answer (a poll's body, a stream's line, or the snapshot).
 * On failure fills kind and msg for fail(). */
static int apply_answer(rp_follower *f, json_t *body, const char **kind, char *msg,
                        long long *rows)
{
    rp_apply_ctx ctx = { f->sh->set.region, f->name, f->sh->log };
    rp_apply_result res;
    long long t0;
    azc_err e;
    int rc;

    t0 = rp_now_ms();
    rc = f->in_snapshot ? rp_apply_snapshot(f->pg, &ctx, body, &res, &e)
                        : rp_apply_feed(f->pg, &ctx, body, f->cursor, &res, &e);
    if (rc != AZC_OK) {
        if (rc != AZC_EINVAL && PQstatus(f->pg) != CONNECTION_OK)
            drop_pg(f);
        *kind = rc == AZC_EINVAL ? "protocol" : "database";
        snprintf(msg, RP_ERR_LEN, "%s", e.msg);
        return rc;
    }
    count(f, &res, (double)(rp_now_ms() - t0) / 1000.0);
    if (f->in_snapshot) {
        (void)azc_metric_inc(f->sh->m.resyncs, (const char *const[]){ f->name, NULL }, 1);
        azc_logf(f->sh->log, AZC_LOG_INFO, "peer %s: resynchronised from its snapshot at cursor "
                 "%lld (%lld rows applied, %lld dead letters)", f->name, res.cursor,
                 res.applied[0] + res.applied[1] + res.applied[2], res.dead);
        f->resync = 0;
    }
    f->cursor = res.cursor;
    f->attempt = 0;
    origins_refresh(f);
    set_state(f, "following", NULL, 1);
    *rows = res.applied[0] + res.applied[1] + res.applied[2] + res.own_origin + res.older +
            res.dead;
    return AZC_OK;
}

/* Applies a 200 answer. */
static void on_body(rp_follower *f, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in != NULL ? evbuffer_get_length(in) : 0;
    const char *data = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    const char *kind = NULL;
    char msg[RP_ERR_LEN];
    json_error_t jerr;
    json_t *body;
    long long rows = 0;
    int rc;

    if (data == NULL) {
        fail(f, "protocol", "cannot read the answer body");
        return;
    }
    body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL) {
        snprintf(msg, sizeof msg, "answer is not JSON: %s (line %d)", jerr.text, jerr.line);
        fail(f, "protocol", msg);
        return;
    }
    rc = apply_answer(f, body, &kind, msg, &rows);
    json_decref(body);
    if (rc != AZC_OK) {
        fail(f, kind, msg);
        return;
    }
    /* A peer that answers "nothing new" at once, again and again (a wait
     * of 0, or one that ignores it), would have this loop spin. */
    arm(f, rows == 0 && rp_now_ms() - f->sent_ms < EMPTY_FAST_MS ? EMPTY_PAUSE_MS : 0);
}

/* ---- streams ---------------------------------------------------------------- */

static void stream_closed(rp_follower *f)
{
    f->in_stream = 0;
    f->stream_dead = 0;
    f->stream_ok = 0;
    if (f->line != NULL)
        (void)evbuffer_drain(f->line, evbuffer_get_length(f->line));
}

/* Gives up on the stream in flight from inside one of its callbacks:
 * abort_ev frees the connection once libevent is out of them. */
static void stream_abort(rp_follower *f, int resync, const char *kind, const char *msg)
{
    struct timeval now = { 0, 0 };

    if (f->stream_dead)
        return;
    f->stream_dead = 1;
    f->abort_resync = resync;
    snprintf(f->abort_kind, sizeof f->abort_kind, "%s", kind);
    snprintf(f->abort_msg, sizeof f->abort_msg, "%s", msg);
    if (event_add(f->abort_ev, &now) != 0) {
        /* Without the event the connection is still dropped: the next
         * completion (the read timeout at the latest) fails the step. */
        azc_logf(f->sh->log, AZC_LOG_ERROR, "peer %s: cannot arm the stream abort", f->name);
        f->stream_dead = 0;
        f->conn_broken = 1;
    }
}

static void on_abort(evutil_socket_t fd, short what, void *arg)
{
    rp_follower *f = arg;

    (void)fd;
    (void)what;
    if (f->conn != NULL) {
        f->aborting = 1;
        evhttp_connection_free(f->conn);
        f->conn = NULL;
        f->aborting = 0;
    }
    stream_closed(f);
    if (f->abort_resync) {
        set_state(f, "resyncing", "cursor expired", 0);
        arm(f, 0);
    } else
        fail(f, f->abort_kind, f->abort_msg);
}

/* One complete line of the stream (without its newline). */
static void stream_line(rp_follower *f, const char *line, size_t n)
{
    const char *kind = NULL;
    char msg[RP_ERR_LEN];
    json_error_t jerr;
    json_t *body, *err;
    long long rows = 0;

    if (n == 0 || (n == 1 && line[0] == '\r'))
        return; /* a keep-alive: the read timeout restarted with its bytes */
    body = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL) {
        snprintf(msg, sizeof msg, "stream line is not JSON: %s (column %d)", jerr.text,
                 jerr.column);
        stream_abort(f, 0, "protocol", msg);
        return;
    }
    if (json_is_object(body) && (err = json_object_get(body, "error")) != NULL) {
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *text = json_string_value(json_object_get(err, "message"));

        if (code != NULL && strcmp(code, "cursor_expired") == 0) {
            (void)azc_metric_inc(f->sh->m.errors,
                                 (const char *const[]){ f->name, "cursor_expired", NULL }, 1);
            azc_logf(f->sh->log, AZC_LOG_WARN,
                     "peer %s: cursor %lld expired mid-stream, resynchronising", f->name,
                     f->cursor);
            f->resync = 1;
            stream_abort(f, 1, "cursor_expired", "cursor expired");
        } else {
            snprintf(msg, sizeof msg, "stream ended with error %s: %s",
                     code != NULL ? code : "(no code)", text != NULL ? text : "");
            stream_abort(f, 0, "protocol", msg);
        }
        json_decref(body);
        return;
    }
    if (apply_answer(f, body, &kind, msg, &rows) != AZC_OK)
        stream_abort(f, 0, kind, msg);
    json_decref(body);
}

/* The answer's headers: a 200 that is not NDJSON is no stream. */
static int on_headers(struct evhttp_request *req, void *arg)
{
    rp_follower *f = arg;
    const char *ct;
    char msg[RP_ERR_LEN];

    if (f->stream_dead || evhttp_request_get_response_code(req) != 200)
        return 0;
    ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (ct == NULL || strncmp(ct, NDJSON, sizeof NDJSON - 1) != 0) {
        snprintf(msg, sizeof msg, "stream=1 answered with Content-Type %s, not " NDJSON,
                 ct != NULL ? ct : "(none)");
        stream_abort(f, 0, "protocol", msg);
        return 0;
    }
    f->stream_ok = 1;
    set_state(f, "following", NULL, 0);
    return 0;
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    rp_follower *f = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    char *line;
    size_t n;

    /* An error answer's body is left for on_response, which reads only
     * its status. */
    if (f->stream_dead || evhttp_request_get_response_code(req) != 200 || in == NULL)
        return;
    if (evbuffer_add_buffer(f->line, in) != 0) {
        stream_abort(f, 0, "protocol", "cannot buffer the stream");
        return;
    }
    while (!f->stream_dead &&
           (line = evbuffer_readln(f->line, &n, EVBUFFER_EOL_LF)) != NULL) {
        stream_line(f, line, n);
        free(line);
    }
    if (!f->stream_dead && (long long)evbuffer_get_length(f->line) > MAX_LINE)
        stream_abort(f, 0, "protocol", "stream line too long");
}

/* The stream's completion: it ended, failed, or was refused. */
static void on_stream_done(rp_follower *f, int code)
{
    int partial = evbuffer_get_length(f->line) > 0;

    /* Whatever the peer did, the next stream starts on a new connection. */
    f->conn_broken = 1;
    stream_closed(f);
    if (code == 200)
        fail(f, partial ? "protocol" : "stream_end",
             partial ? "the stream ended inside a line" : "the peer ended the stream");
}

static void on_response(struct evhttp_request *req, void *arg)
{
    rp_follower *f = arg;
    int code;
    char msg[RP_ERR_LEN];

    /* From evhttp_connection_free (on_abort, rp_follower_free): the
     * request is gone and the caller decides what comes next. */
    if (f->aborting)
        return;
    /* A stream given up on: abort_ev is due and does the rest. */
    if (f->in_stream && f->stream_dead)
        return;
    code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    /* A stream's 200 has ended (on_stream_done fails it); its refusals
     * and failures are handled below like a poll's. */
    if (f->in_stream) {
        on_stream_done(f, code);
        if (code == 200)
            return;
    }
    if (code == 0) {
        f->conn_broken = 1;
        fail(f, "connect", "no answer (peer down, connection reset or timed out)");
        return;
    }
    if (code == 410 && !f->in_snapshot) {
        (void)azc_metric_inc(f->sh->m.errors,
                             (const char *const[]){ f->name, "cursor_expired", NULL }, 1);
        azc_logf(f->sh->log, AZC_LOG_WARN, "peer %s: cursor %lld expired, resynchronising",
                 f->name, f->cursor);
        f->resync = 1;
        set_state(f, "resyncing", "cursor expired", 0);
        arm(f, 0);
        return;
    }
    if (code != 200) {
        /* A refused token may have been rotated: read it again. */
        if (code == 401 || code == 403)
            f->conn_broken = 1;
        snprintf(msg, sizeof msg, "HTTP %d from %s", code,
                 f->in_snapshot ? "the snapshot" : "the change feed");
        fail(f, code >= 500 ? "http_5xx" : "http_4xx", msg);
        return;
    }
    on_body(f, req);
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    rp_follower *f = arg;

    (void)err;
    f->conn_broken = 1;
}

static int request(rp_follower *f, azc_err *e)
{
    char path[PATH_MAX_LEN], hostport[300], auth[TOKEN_MAX + 16];
    struct evhttp_request *req;
    struct evkeyvalq *h;
    struct timeval tv;
    int rc, stream;

    if ((rc = conn_ensure(f, e)) != AZC_OK)
        return rc;
    f->in_snapshot = f->resync;
    stream = !f->in_snapshot && f->sh->set.stream;
    if (f->in_snapshot)
        snprintf(path, sizeof path, "%s/v1/policy/snapshot?tombstones=1", f->prefix);
    else if (stream)
        snprintf(path, sizeof path,
                 "%s/v1/policy/changes?after=%lld&limit=%lld&watermarks=1&stream=1"
                 "&exclude_origin=%s", f->prefix, f->cursor, f->sh->set.limit,
                 f->sh->set.region);
    else
        snprintf(path, sizeof path,
                 "%s/v1/policy/changes?after=%lld&limit=%lld&wait=%lld&watermarks=1"
                 "&exclude_origin=%s", f->prefix, f->cursor, f->sh->set.limit,
                 f->sh->set.wait_ms, f->sh->set.region);
    /* A stream's body has no end, only its lines are bounded (MAX_LINE);
     * its timeout is the dead-peer one, restarted by every byte. */
    if (stream) {
        tv.tv_sec = (time_t)(f->sh->set.stream_timeout_ms / 1000);
        tv.tv_usec = (suseconds_t)(f->sh->set.stream_timeout_ms % 1000) * 1000;
        evhttp_connection_set_max_body_size(f->conn, -1);
    } else {
        tv.tv_sec = (time_t)(f->sh->set.wait_ms / 1000) + TIMEOUT_MARGIN_S;
        tv.tv_usec = 0;
        evhttp_connection_set_max_body_size(f->conn, MAX_BODY);
    }
    evhttp_connection_set_timeout_tv(f->conn, &tv);
    if ((req = evhttp_request_new(on_response, f)) == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an HTTP request");
    evhttp_request_set_error_cb(req, on_error);
    if (stream) {
        evhttp_request_set_header_cb(req, on_headers);
        evhttp_request_set_chunked_cb(req, on_chunk);
        stream_closed(f);
        f->in_stream = 1;
    }
    h = evhttp_request_get_output_headers(req);
    snprintf(hostport, sizeof hostport, "%s:%d", f->host, f->port);
    snprintf(auth, sizeof auth, "Bearer %s", f->token);
    if (evhttp_add_header(h, "Host", hostport) != 0 ||
        evhttp_add_header(h, "Accept", stream ? NDJSON : "application/json") != 0 ||
        (f->token[0] != '\0' && evhttp_add_header(h, "Authorization", auth) != 0)) {
        evhttp_request_free(req);
        return azc_err_set(e, AZC_ERROR, "cannot set the request headers");
    }
    if (evhttp_make_request(f->conn, req, EVHTTP_REQ_GET, path) != 0) {
        /* Only when no socket can be made. libevent may already have run
         * the request's callback (and then freed it), so it is not freed
         * here: a leak on this rare path is better than a double free. */
        f->conn_broken = 1;
        f->in_stream = 0;
        return azc_err_set(e, AZC_EUNAVAIL, "cannot send the request");
    }
    f->sent_ms = rp_now_ms();
    set_state(f, f->in_snapshot ? "resyncing" : "following", NULL, 0);
    return AZC_OK;
}

static void on_step(evutil_socket_t fd, short what, void *arg)
{
    rp_follower *f = arg;
    azc_err e;
    int rc;

    (void)fd;
    (void)what;
    if (f->pg == NULL &&
        azc_pg_connect(f->sh->set.pg_url, "authz-replicator", 2000, f->sh->log, &f->pg, &e) !=
            AZC_OK) {
        f->pg = NULL;
        fail(f, "database", e.msg);
        return;
    }
    if (!f->session_set) {
        if (azc_pg_query(f->pg, SQL_SESSION, 0, NULL, NULL, &e) != AZC_OK) {
            drop_pg(f);
            fail(f, "database", e.msg);
            return;
        }
        f->session_set = 1;
    }
    if (!f->cursor_loaded) {
        if ((rc = rp_cursor_load(f->pg, f->name, &f->cursor, &e)) != AZC_OK) {
            drop_pg(f);
            fail(f, "database", e.msg);
            return;
        }
        f->cursor_loaded = 1;
        if (f->cursor < 0) {
            azc_logf(f->sh->log, AZC_LOG_INFO,
                     "peer %s: no cursor stored, bootstrapping from its snapshot", f->name);
            f->resync = 1;
            f->cursor = 0;
        }
    }
    if ((rc = request(f, &e)) != AZC_OK)
        fail(f, rc == AZC_EINVAL ? "token" : "connect", e.msg);
}

static int url_parse(rp_follower *f, const char *url, azc_err *e)
{
    azc_base_url u;
    char what[96];
    int rc;

    snprintf(what, sizeof what, "peers.%s", f->name);
    if ((rc = azc_base_url_parse(url, what, &u, e)) != AZC_OK)
        return rc;
    snprintf(f->host, sizeof f->host, "%s", u.host);
    f->port = u.port;
    snprintf(f->prefix, sizeof f->prefix, "%s", u.prefix);
    return AZC_OK;
}

int rp_follower_url_check(const char *name, const char *url, azc_err *e)
{
    rp_follower *f = calloc(1, sizeof *f);
    int rc;

    if (f == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    snprintf(f->name, sizeof f->name, "%s", name);
    rc = url_parse(f, url, e);
    free(f);
    return rc;
}

rp_follower *rp_follower_new(rp_shared *sh, size_t index, const char *name, const char *url,
                             azc_err *e)
{
    rp_follower *f = calloc(1, sizeof *f);
    rp_peer_status *p = &sh->peers[index];

    if (f == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    f->sh = sh;
    f->index = index;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->seed = (unsigned)time(NULL) ^ (unsigned)(index * 2654435761u);
    if (url_parse(f, url, e) != AZC_OK)
        goto fail;
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->url, sizeof p->url, "%s", url);
    p->cursor = -1;
    p->state = "starting";
    p->mode = sh->set.stream ? "stream" : "poll";
    if ((f->base = event_base_new()) == NULL ||
        (f->step_ev = event_new(f->base, -1, 0, on_step, f)) == NULL ||
        (f->abort_ev = event_new(f->base, -1, 0, on_abort, f)) == NULL ||
        (f->line = evbuffer_new()) == NULL) {
        azc_err_set(e, AZC_ERROR, "cannot create the event loop of peer %s", name);
        goto fail;
    }
    arm(f, 0);
    return f;
fail:
    rp_follower_free(f);
    return NULL;
}

struct event_base *rp_follower_base(rp_follower *f)
{
    return f->base;
}

void rp_follower_free(rp_follower *f)
{
    if (f == NULL)
        return;
    if (f->conn != NULL) {
        f->aborting = 1;
        evhttp_connection_free(f->conn);
    }
    if (f->step_ev != NULL)
        event_free(f->step_ev);
    if (f->abort_ev != NULL)
        event_free(f->abort_ev);
    if (f->line != NULL)
        evbuffer_free(f->line);
    if (f->base != NULL)
        event_base_free(f->base);
    drop_pg(f);
    memset(f->token, 0, sizeof f->token);
    free(f);
}
