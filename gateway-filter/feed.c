/*
 * The filter's feed thread (feed.h): snapshot, then the change stream, on
 * one evhttp client connection at a time, on an event loop of its own.
 *
 * Why a stream and not a long poll: a line arrives one network delay
 * after the commit (or the heartbeat) that caused it, with no request in
 * between, and the filter's denies wait on exactly these watermarks.
 *
 * The snapshot is asked for as NDJSON (format=ndjson: a head line, one
 * line per row, an end line with the row counts) and loaded one line at a
 * time as it arrives, so a 1,000,000-row snapshot never exists as one
 * parsed tree (about ten times its text): this thread reads and parses
 * the lines, a loading thread builds the index from them (snapload.h),
 * so transfer, parsing and loading overlap. Nothing is published before
 * the end line has come with the counts of the rows received; an answer
 * cut short is dropped whole. A server that answers plain JSON (one without the
 * format) is parsed whole, as before.
 *
 * evhttp frees a request after its completion callback, and a connection
 * must not be freed from inside one of its own callbacks; giving up on an
 * answer from a body callback therefore only marks it dead and arms
 * abort_ev, which frees the connection once libevent is out of it.
 */
#include "gateway-filter/feed.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <jansson.h>

#include "common/hlc.h"
#include "common/url.h"
#include "gateway-filter/applier.h"
#include "gateway-filter/snapload.h"

#define NDJSON "application/x-ndjson"
#define TOKEN_MAX 8192
#define MAX_LINE (64 * 1024 * 1024)
#define SNAPSHOT_TIMEOUT_S 120
#define APPLY_FAILURES_RELOAD 3   /* bad lines in a row before a snapshot reload */

enum step { STEP_SNAPSHOT, STEP_STREAM };
enum { SNAP_HEAD, SNAP_ROWS, SNAP_END };

struct af_feed {
    af_feed_opts o;
    char *url, *token_file;
    azc_base_url base_url;
    struct event_base *base;
    struct event *step_ev, *abort_ev, *stop_ev;
    struct evhttp_connection *conn;
    struct evbuffer *body;       /* the snapshot, or the stream's partial line */
    enum step step;
    int in_flight;
    int dead;                    /* the answer in flight was given up on */
    int aborting;                /* inside evhttp_connection_free */
    int stream_ok;               /* the stream's headers said 200 NDJSON */
    int snap_ndjson;             /* the snapshot answer is NDJSON */
    int snap_state;              /* SNAP_HEAD, SNAP_ROWS, SNAP_END */
    long long snap_bytes;        /* of the NDJSON snapshot so far */
    json_t *snap_end;            /* its end line's row counts */
    af_snapload *loader;         /* the NDJSON snapshot being loaded */
    af_applier *applier;         /* applies stream lines (NULL: on this thread) */
    int attempt;                 /* failures in a row, for the backoff */
    int apply_failures;
    char abort_msg[AZC_ERRMSG_MAX];
    unsigned seed;
    pthread_t thread;
    int started;
    _Atomic uint64_t snapshots, lines, errors;
    _Atomic int connected;
    _Atomic int64_t last_line_ms;
    char token[TOKEN_MAX];
};

static void arm(af_feed *fd, long long ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (event_add(fd->step_ev, &tv) != 0)
        azc_logf(fd->o.log, AZC_LOG_ERROR, "filter feed: cannot arm the next step");
}

/* Counts a failure and retries the same step after a full-jitter backoff
 * (uniform in [0, cap], cap doubling from 50 ms), so filters restarted
 * together do not reconnect in lockstep. */
static void fail(af_feed *fd, const char *msg)
{
    long long cap = 50;
    int i;

    atomic_fetch_add(&fd->errors, 1);
    atomic_store(&fd->connected, 0);
    for (i = 0; i < fd->attempt && cap < fd->o.backoff_max_ms; i++)
        cap *= 2;
    if (cap > fd->o.backoff_max_ms)
        cap = fd->o.backoff_max_ms;
    fd->attempt++;
    azc_logf(fd->o.log, fd->attempt > 1 ? AZC_LOG_WARN : AZC_LOG_INFO,
             "filter feed: %s (%s; retry %d)", msg,
             fd->step == STEP_SNAPSHOT ? "snapshot" : "stream", fd->attempt);
    arm(fd, (long long)(rand_r(&fd->seed) % (unsigned)(cap + 1)));
}

static void drop_conn(af_feed *fd)
{
    if (fd->conn != NULL) {
        fd->aborting = 1;
        evhttp_connection_free(fd->conn);
        fd->conn = NULL;
        fd->aborting = 0;
    }
    fd->in_flight = 0;
    fd->dead = 0;
    fd->stream_ok = 0;
    fd->snap_ndjson = 0;
    fd->snap_state = SNAP_HEAD;
    fd->snap_bytes = 0;
    json_decref(fd->snap_end);
    fd->snap_end = NULL;
    af_snapload_free(fd->loader);
    fd->loader = NULL;
    atomic_store(&fd->connected, 0);
    if (fd->body != NULL) /* NULL when af_feed_new failed early */
        (void)evbuffer_drain(fd->body, evbuffer_get_length(fd->body));
}

/* Gives up on the answer in flight from inside one of its callbacks. */
static void give_up(af_feed *fd, const char *msg)
{
    struct timeval now = { 0, 0 };

    if (fd->dead)
        return;
    fd->dead = 1;
    snprintf(fd->abort_msg, sizeof fd->abort_msg, "%s", msg);
    if (event_add(fd->abort_ev, &now) != 0)
        azc_logf(fd->o.log, AZC_LOG_ERROR, "filter feed: cannot arm the abort");
}

static void on_abort(evutil_socket_t s, short what, void *arg)
{
    af_feed *fd = arg;

    (void)s;
    (void)what;
    drop_conn(fd);
    fail(fd, fd->abort_msg);
}

static void publish(af_feed *fd, int changed)
{
    if (fd->o.on_publish != NULL)
        fd->o.on_publish(fd->o.arg, changed);
}

static void reload_snapshot(af_feed *fd, const char *why)
{
    azc_logf(fd->o.log, AZC_LOG_WARN, "filter feed: %s, reloading the snapshot", why);
    fd->step = STEP_SNAPSHOT;
}

/* A line of the stream or of an NDJSON snapshot (`what`) as the JSON
 * object it must be (the caller owns it), or NULL after giving up on the
 * answer. */
static json_t *line_object(af_feed *fd, const char *line, size_t n, const char *what)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    char msg[AZC_ERRMSG_MAX + 64];

    if (j == NULL || !json_is_object(j)) {
        snprintf(msg, sizeof msg, "a %s line that is not a JSON object: %s", what,
                 j == NULL ? jerr.text : "another type");
        json_decref(j);
        give_up(fd, msg);
        return NULL;
    }
    return j;
}

/* One whole line of the stream, without its newline. */
static void stream_line(af_feed *fd, const char *line, size_t n)
{
    json_t *body, *err, *changes;
    azc_err e;
    char msg[AZC_ERRMSG_MAX + 64];

    if (n == 0 || (n == 1 && line[0] == '\r'))
        return; /* keep-alive */
    if ((body = line_object(fd, line, n, "stream")) == NULL)
        return;
    if ((err = json_object_get(body, "error")) != NULL) {
        const char *code = json_string_value(json_object_get(err, "code"));

        if (code != NULL && strcmp(code, "cursor_expired") == 0) {
            reload_snapshot(fd, "the cursor expired mid-stream");
            give_up(fd, "cursor expired");
        } else {
            snprintf(msg, sizeof msg, "the stream ended with error %s",
                     code != NULL ? code : "(no code)");
            give_up(fd, msg);
        }
        json_decref(body);
        return;
    }
    changes = json_object_get(body, "changes");
    if (af_applier_apply(fd->applier, fd->o.ix, body, &e) != AZC_OK) {
        snprintf(msg, sizeof msg, "a stream line not applied: %s", e.msg);
        if (++fd->apply_failures >= APPLY_FAILURES_RELOAD)
            reload_snapshot(fd, "stream lines failed repeatedly");
        json_decref(body);
        give_up(fd, msg);
        return;
    }
    fd->apply_failures = 0;
    fd->attempt = 0;
    atomic_fetch_add(&fd->lines, 1);
    atomic_store(&fd->last_line_ms, (int64_t)azc_wall_ms());
    publish(fd, json_array_size(changes) > 0);
    json_decref(body);
}

/* One whole line of an NDJSON snapshot, without its newline: the head,
 * a row, or the end with the counts that make the answer complete. */
static void snapshot_line(af_feed *fd, const char *line, size_t n)
{
    json_t *j, *v;
    azc_err e;
    char msg[AZC_ERRMSG_MAX + 64];

    if (n == 0 || (n == 1 && line[0] == '\r'))
        return;
    if (fd->snap_state == SNAP_END) {
        give_up(fd, "the snapshot has lines after its end line");
        return;
    }
    if ((j = line_object(fd, line, n, "snapshot")) == NULL)
        return;
    if (fd->snap_state == SNAP_HEAD) {
        if (af_snapload_new(fd->o.ix, j, &fd->loader, &e) != AZC_OK) {
            snprintf(msg, sizeof msg, "the snapshot was not loaded: %s", e.msg);
            give_up(fd, msg);
        } else
            fd->snap_state = SNAP_ROWS;
    } else if ((v = json_object_get(j, "end")) != NULL) {
        /* Checked against the rows received when the answer ends. */
        fd->snap_end = json_incref(v);
        fd->snap_state = SNAP_END;
    } else {
        /* The loader takes the line (and frees it). */
        if (af_snapload_row(fd->loader, j, &e) != AZC_OK) {
            snprintf(msg, sizeof msg, "the snapshot was not loaded: %s", e.msg);
            give_up(fd, msg);
        }
        return;
    }
    json_decref(j);
}

static int on_headers(struct evhttp_request *req, void *arg)
{
    af_feed *fd = arg;
    const char *ct;

    if (fd->dead || evhttp_request_get_response_code(req) != 200)
        return 0;
    if (fd->step == STEP_SNAPSHOT) {
        ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        fd->snap_ndjson = ct != NULL && strncmp(ct, NDJSON, sizeof NDJSON - 1) == 0;
        return 0;
    }
    if (fd->step == STEP_STREAM) {
        ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        if (ct == NULL || strncmp(ct, NDJSON, sizeof NDJSON - 1) != 0) {
            give_up(fd, "the change stream answered without " NDJSON);
            return 0;
        }
        fd->stream_ok = 1;
        atomic_store(&fd->connected, 1);
    }
    return 0;
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    af_feed *fd = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    char *line;
    size_t n;

    if (fd->dead || evhttp_request_get_response_code(req) != 200 || in == NULL)
        return;
    if (evbuffer_add_buffer(fd->body, in) != 0) {
        give_up(fd, "cannot buffer the answer");
        return;
    }
    if (fd->step == STEP_SNAPSHOT && !fd->snap_ndjson) {
        if ((long long)evbuffer_get_length(fd->body) > fd->o.snapshot_max_bytes)
            give_up(fd, "the snapshot is larger than policy.snapshot_max_bytes");
        return;
    }
    if (fd->step == STEP_SNAPSHOT) {
        fd->snap_bytes += (long long)evbuffer_get_length(fd->body);
        if (fd->snap_bytes > fd->o.snapshot_max_bytes) {
            give_up(fd, "the snapshot is larger than policy.snapshot_max_bytes");
            return;
        }
    }
    while (!fd->dead && (line = evbuffer_readln(fd->body, &n, EVBUFFER_EOL_LF)) != NULL) {
        if (fd->step == STEP_SNAPSHOT)
            snapshot_line(fd, line, n);
        else
            stream_line(fd, line, n);
        free(line);
    }
    /* What is left is the start of a line: counted again with the rest. */
    if (fd->step == STEP_SNAPSHOT)
        fd->snap_bytes -= (long long)evbuffer_get_length(fd->body);
    if (!fd->dead && evbuffer_get_length(fd->body) > MAX_LINE)
        give_up(fd, "a stream line too long");
}

/*
 * A snapshot's parsed tree is several times the index built from it (about
 * 2.5 GB for 1,000,000 assignments against 0.5 GB). Parsed on this thread,
 * its small blocks would sit between the index's in this thread's malloc
 * arena, and freeing it would give nothing back: each nginx worker would
 * keep the peak for good. So the tree is parsed on a short-lived thread of
 * its own, whose arena holds only the tree, and once it is freed the arena's
 * pages go back to the system.
 */
typedef struct parse_job {
    const char *text;
    size_t len;
    json_t *snap;
    json_error_t err;
} parse_job;

static void *parse_main(void *arg)
{
    parse_job *j = arg;

    j->snap = json_loadb(j->text, j->len, JSON_REJECT_DUPLICATES, &j->err);
    return NULL;
}

static json_t *parse_apart(const char *text, size_t len, json_error_t *err)
{
    parse_job j = { .text = text, .len = len };
    pthread_t th;

    if (pthread_create(&th, NULL, parse_main, &j) != 0)
        parse_main(&j); /* the memory stays, the answer is the same */
    else
        (void)pthread_join(th, NULL);
    *err = j.err;
    return j.snap;
}

static void trim_now(evutil_socket_t s, short what, void *arg)
{
    (void)s;
    (void)what;
    (void)arg;
#ifdef __GLIBC__
    (void)malloc_trim(0);
#endif
}

/* Once the answer's own buffers are freed too, which libevent does after
 * the callback in progress returns: on a later turn of the loop. */
static void release_heap(af_feed *fd)
{
    struct timeval soon = { 0, 100000 };

    if (event_base_once(fd->base, -1, EV_TIMEOUT, trim_now, NULL, &soon) != 0)
        trim_now(-1, 0, NULL);
}

static void snapshot_loaded(af_feed *fd);

static void snapshot_done(af_feed *fd)
{
    size_t len = evbuffer_get_length(fd->body);
    const char *text = (const char *)evbuffer_pullup(fd->body, -1);
    json_error_t jerr;
    json_t *snap;
    azc_err e;

    if (text == NULL && len > 0) {
        fail(fd, "cannot read the snapshot");
        return;
    }
    snap = parse_apart(text != NULL ? text : "", len, &jerr);
    (void)evbuffer_drain(fd->body, len);
    if (snap == NULL) {
        char msg[AZC_ERRMSG_MAX + 32];

        snprintf(msg, sizeof msg, "the snapshot is not JSON: %s", jerr.text);
        fail(fd, msg);
        return;
    }
    if (af_index_load_snapshot(fd->o.ix, snap, &e) != AZC_OK) {
        char msg[AZC_ERRMSG_MAX + 32];

        json_decref(snap);
        release_heap(fd);
        snprintf(msg, sizeof msg, "the snapshot was not loaded: %s", e.msg);
        fail(fd, msg);
        return;
    }
    json_decref(snap);
    release_heap(fd);
    snapshot_loaded(fd);
}

/* The snapshot is the index's state now: on to the stream. */
static void snapshot_loaded(af_feed *fd)
{
    atomic_fetch_add(&fd->snapshots, 1);
    atomic_store(&fd->last_line_ms, (int64_t)azc_wall_ms());
    azc_logf(fd->o.log, AZC_LOG_INFO, "filter feed: snapshot loaded at cursor %lld",
             af_index_cursor(fd->o.ix));
    publish(fd, 1);
    fd->step = STEP_STREAM;
    fd->attempt = 0;
    fd->apply_failures = 0;
    arm(fd, 0);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    af_feed *fd = arg;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    char msg[96];

    if (fd->aborting || fd->dead)
        return; /* abort_ev (or the caller freeing) does the rest */
    fd->in_flight = 0;
    fd->stream_ok = 0;
    atomic_store(&fd->connected, 0);
    if (code == 410 && fd->step == STEP_STREAM) {
        (void)evbuffer_drain(fd->body, evbuffer_get_length(fd->body));
        reload_snapshot(fd, "the cursor expired (410)");
        arm(fd, 0);
        return;
    }
    if (code != 200) {
        (void)evbuffer_drain(fd->body, evbuffer_get_length(fd->body));
        if (code == 0)
            snprintf(msg, sizeof msg, "no answer (server down, reset or timed out)");
        else
            snprintf(msg, sizeof msg, "HTTP %d", code);
        fail(fd, msg);
        return;
    }
    if (fd->step == STEP_SNAPSHOT && fd->snap_ndjson) {
        int complete = fd->snap_state == SNAP_END && evbuffer_get_length(fd->body) == 0;
        azc_err e;

        (void)evbuffer_drain(fd->body, evbuffer_get_length(fd->body));
        if (!complete) {
            af_snapload_free(fd->loader);
            fd->loader = NULL;
            fail(fd, "the snapshot ended before its end line");
            return;
        }
        if (af_snapload_commit(fd->loader, fd->snap_end, &e) != AZC_OK) {
            char m[AZC_ERRMSG_MAX + 32];

            af_snapload_free(fd->loader);
            fd->loader = NULL;
            snprintf(m, sizeof m, "the snapshot was not loaded: %s", e.msg);
            fail(fd, m);
            return;
        }
        fd->loader = NULL;
        snapshot_loaded(fd);
        return;
    }
    if (fd->step == STEP_SNAPSHOT) {
        snapshot_done(fd);
        return;
    }
    /* A stream's 200 has ended: the server stopped, or a proxy cut it. */
    (void)evbuffer_drain(fd->body, evbuffer_get_length(fd->body));
    fail(fd, "the server ended the stream");
}

static int token_read(af_feed *fd, azc_err *e)
{
    FILE *fp;
    size_t n;

    fd->token[0] = '\0';
    if (fd->token_file == NULL)
        return AZC_OK;
    if ((fp = fopen(fd->token_file, "r")) == NULL)
        return azc_err_set(e, AZC_EINVAL, "cannot read policy.token_file: %s", strerror(errno));
    n = fread(fd->token, 1, sizeof fd->token - 1, fp);
    fclose(fp);
    fd->token[n] = '\0';
    while (n > 0 && (fd->token[n - 1] == '\n' || fd->token[n - 1] == '\r' ||
                     fd->token[n - 1] == ' '))
        fd->token[--n] = '\0';
    if (n == 0 || strchr(fd->token, '\n') != NULL)
        return azc_err_set(e, AZC_EINVAL, "policy.token_file must hold one token on one line");
    return AZC_OK;
}

static int request(af_feed *fd, azc_err *e)
{
    char path[AZC_URL_PREFIX_MAX + 128], hostport[AZC_URL_HOST_MAX + 16],
        auth[TOKEN_MAX + 16];
    struct evhttp_request *req;
    struct evkeyvalq *h;
    struct timeval tv;
    long long ms;
    int rc;

    drop_conn(fd);
    if ((rc = token_read(fd, e)) != AZC_OK)
        return rc;
    fd->conn = evhttp_connection_base_new(fd->base, NULL, fd->base_url.host,
                                          (unsigned short)fd->base_url.port);
    if (fd->conn == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an HTTP connection");
    evhttp_connection_set_retries(fd->conn, 0);
    /* Bodies are read through on_chunk, which enforces its own bounds. */
    evhttp_connection_set_max_body_size(fd->conn, -1);
    ms = fd->step == STEP_SNAPSHOT ? SNAPSHOT_TIMEOUT_S * 1000LL : fd->o.stream_timeout_ms;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    evhttp_connection_set_timeout_tv(fd->conn, &tv);
    if (fd->step == STEP_SNAPSHOT)
        snprintf(path, sizeof path, "%s/v1/policy/snapshot?format=ndjson", fd->base_url.prefix);
    else
        snprintf(path, sizeof path, "%s/v1/policy/changes?after=%lld&watermarks=1&stream=1",
                 fd->base_url.prefix, af_index_cursor(fd->o.ix));
    if ((req = evhttp_request_new(on_response, fd)) == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an HTTP request");
    evhttp_request_set_header_cb(req, on_headers);
    evhttp_request_set_chunked_cb(req, on_chunk);
    h = evhttp_request_get_output_headers(req);
    snprintf(hostport, sizeof hostport, "%s:%d", fd->base_url.host, fd->base_url.port);
    snprintf(auth, sizeof auth, "Bearer %s", fd->token);
    if (evhttp_add_header(h, "Host", hostport) != 0 ||
        evhttp_add_header(h, "Accept",
                          fd->step == STEP_STREAM ? NDJSON : NDJSON ", application/json") != 0 ||
        (fd->token[0] != '\0' && evhttp_add_header(h, "Authorization", auth) != 0)) {
        evhttp_request_free(req);
        return azc_err_set(e, AZC_ERROR, "cannot set the request headers");
    }
    if (evhttp_make_request(fd->conn, req, EVHTTP_REQ_GET, path) != 0)
        return azc_err_set(e, AZC_EUNAVAIL, "cannot send the request");
    fd->in_flight = 1;
    return AZC_OK;
}

static void on_step(evutil_socket_t s, short what, void *arg)
{
    af_feed *fd = arg;
    azc_err e;

    (void)s;
    (void)what;
    if (fd->step == STEP_STREAM && af_index_cursor(fd->o.ix) < 0)
        fd->step = STEP_SNAPSHOT;
    if (request(fd, &e) != AZC_OK)
        fail(fd, e.msg);
}

static void on_stop(evutil_socket_t s, short what, void *arg)
{
    af_feed *fd = arg;

    (void)s;
    (void)what;
    (void)event_base_loopbreak(fd->base);
}

static void *feed_main(void *arg)
{
    af_feed *fd = arg;

    (void)event_base_loop(fd->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

void af_feed_free(af_feed *fd)
{
    if (fd == NULL)
        return;
    if (fd->started) {
        event_active(fd->stop_ev, EV_READ, 0);
        (void)pthread_join(fd->thread, NULL);
    }
    drop_conn(fd);
    af_applier_free(fd->applier);
    if (fd->step_ev != NULL)
        event_free(fd->step_ev);
    if (fd->abort_ev != NULL)
        event_free(fd->abort_ev);
    if (fd->stop_ev != NULL)
        event_free(fd->stop_ev);
    if (fd->body != NULL)
        evbuffer_free(fd->body);
    if (fd->base != NULL)
        event_base_free(fd->base);
    free(fd->url);
    free(fd->token_file);
    free(fd);
}

af_feed *af_feed_new(const af_feed_opts *o, azc_err *e)
{
    af_feed *fd;
    azc_err te;

    /* Stopping the loop from another thread needs libevent's locking;
     * a process calls this once, a second call is harmless. */
    if (evthread_use_pthreads() != 0) {
        azc_err_set(e, AZC_ERROR, "cannot enable libevent's threads");
        return NULL;
    }
    if ((fd = calloc(1, sizeof *fd)) == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    fd->o = *o;
    fd->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)fd;
    if ((fd->url = strdup(o->url)) == NULL ||
        (o->token_file != NULL && (fd->token_file = strdup(o->token_file)) == NULL)) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto fail;
    }
    if (azc_base_url_parse(o->url, "policy.url", &fd->base_url, e) != AZC_OK)
        goto fail;
    if (token_read(fd, &te) != AZC_OK) {
        azc_err_set(e, AZC_EINVAL, "configuration: %s", te.msg);
        goto fail;
    }
    if ((fd->base = event_base_new()) == NULL ||
        (fd->step_ev = event_new(fd->base, -1, 0, on_step, fd)) == NULL ||
        (fd->abort_ev = event_new(fd->base, -1, 0, on_abort, fd)) == NULL ||
        (fd->stop_ev = event_new(fd->base, -1, 0, on_stop, fd)) == NULL ||
        (fd->body = evbuffer_new()) == NULL) {
        azc_err_set(e, AZC_ERROR, "cannot create the feed's event loop");
        goto fail;
    }
    /* Without it lines are applied here, only more slowly over time. */
    if ((fd->applier = af_applier_new()) == NULL)
        azc_logf(o->log, AZC_LOG_WARN, "filter feed: no applier thread; applying on the feed's");
    fd->step = STEP_SNAPSHOT;
    arm(fd, 0);
    if (pthread_create(&fd->thread, NULL, feed_main, fd) != 0) {
        azc_err_set(e, AZC_ERROR, "cannot start the feed thread");
        goto fail;
    }
    fd->started = 1;
    return fd;
fail:
    af_feed_free(fd);
    return NULL;
}

void af_feed_get_stats(af_feed *fd, af_feed_stats *st)
{
    st->snapshots = atomic_load(&fd->snapshots);
    st->lines = atomic_load(&fd->lines);
    st->errors = atomic_load(&fd->errors);
    st->connected = atomic_load(&fd->connected);
    st->last_line_ms = atomic_load(&fd->last_line_ms);
}
