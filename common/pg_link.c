/*
 * A loop-owned PostgreSQL connection that (re)connects without blocking
 * its loop; see pg_link.h.
 *
 * States: IDLE (waiting for the backoff timer), CONNECTING (PQconnectPoll
 * driven by one event on the socket libpq names at each step, plus the
 * attempt's deadline), UP, and FAILED (a `once` link that will not try
 * again). libpq ignores connect_timeout under PQconnectPoll, so the
 * deadline timer is what bounds an attempt against a server that accepts
 * and never answers. PQconnectStart resolves host names synchronously:
 * numeric hosts (as the services' URLs use) keep even that off the loop.
 */
#include "common/pg_link.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/pg.h"

enum link_state { LINK_IDLE, LINK_CONNECTING, LINK_UP, LINK_FAILED };

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MS 5000
/* Failed attempts after the first are logged at warn only this often, so
 * an outage logs a line a minute per link instead of one per attempt. */
#define LOG_EVERY 30

struct azc_pg_link {
    struct event_base *base;
    char *conninfo;
    char app[64];
    char options[64];
    int connect_timeout_ms;
    int once;
    int self_watched;
    azc_pg_link_cb cb;
    void *arg;
    azc_log *log;

    enum link_state state;
    PGconn *conn;
    struct event *io;       /* the socket of the attempt under way */
    struct event *deadline; /* of that attempt */
    struct event *retry;    /* backoff, or the first attempt */
    struct event *idle;     /* the socket while up: notices a closed link */
    long backoff_ms;
    int failures;           /* attempts failed since the last success */
};

static void start_attempt(azc_pg_link *l);

static void first_line(const char *m, char *out, size_t len)
{
    size_t n;

    if (m == NULL || m[0] == '\0')
        m = "unknown error";
    n = strcspn(m, "\n");
    snprintf(out, len, "%.*s", (int)n, m);
}

static void unwatch(azc_pg_link *l)
{
    if (l->io != NULL) {
        event_free(l->io);
        l->io = NULL;
    }
    evtimer_del(l->deadline);
}

static void schedule(azc_pg_link *l, long ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    l->state = LINK_IDLE;
    if (evtimer_add(l->retry, &tv) != 0)
        azc_logf(l->log, AZC_LOG_ERROR, "postgres (%s): cannot arm the reconnect timer", l->app);
}

/* Ends the attempt under way. A `once` link reports it and stops: the
 * callback may free the link, so nothing follows it. */
static void attempt_failed(azc_pg_link *l, const char *why)
{
    char msg[AZC_ERRMSG_MAX];
    long wait;

    first_line(why, msg, sizeof msg);
    unwatch(l);
    PQfinish(l->conn);
    l->conn = NULL;
    l->failures++;
    if (l->once) {
        l->state = LINK_FAILED;
        azc_logf(l->log, AZC_LOG_WARN, "postgres (%s): cannot connect: %s", l->app, msg);
        if (l->cb != NULL)
            l->cb(l, 0, l->arg);
        return;
    }
    wait = azc__pg_jitter(l->backoff_ms);
    if (l->failures == 1 || l->failures % LOG_EVERY == 0)
        azc_logf(l->log, AZC_LOG_WARN, "postgres (%s): connect attempt %d failed: %s; retrying",
                 l->app, l->failures, msg);
    else
        azc_logf(l->log, AZC_LOG_DEBUG, "postgres (%s): connect attempt %d failed: %s", l->app,
                 l->failures, msg);
    if (l->backoff_ms < BACKOFF_MAX_MS)
        l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    schedule(l, wait);
}

static void drop(azc_pg_link *l, const char *why);

/* Between queries nothing reads the socket: a server that closed the
 * connection (restart, terminated backend, a proxy gone) is noticed here,
 * so readiness and the next request see it at once. libpq keeps its
 * socket non-blocking at the OS level, so PQconsumeInput never waits. */
static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    azc_pg_link *l = arg;

    (void)fd;
    (void)what;
    if (!PQconsumeInput(l->conn) || PQstatus(l->conn) != CONNECTION_OK)
        drop(l, PQerrorMessage(l->conn));
}

static void connected(azc_pg_link *l)
{
    unwatch(l);
    if (!l->self_watched) {
        l->idle = event_new(l->base, PQsocket(l->conn), EV_READ | EV_PERSIST, on_idle, l);
        if (l->idle == NULL || event_add(l->idle, NULL) != 0) {
            if (l->idle != NULL)
                event_free(l->idle);
            l->idle = NULL;
            attempt_failed(l, "cannot watch the socket");
            return;
        }
    }
    l->state = LINK_UP;
    l->backoff_ms = BACKOFF_FIRST_MS;
    if (l->failures > 0)
        azc_logf(l->log, AZC_LOG_INFO, "postgres (%s): connected after %d failed attempts", l->app,
                 l->failures);
    l->failures = 0;
    if (l->cb != NULL)
        l->cb(l, 1, l->arg);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

/* Waits for what PQconnectPoll asked for, on the socket it names now: the
 * socket changes when libpq moves on to the next address or retries
 * without SSL, so the event is made anew at each step. */
static int watch(azc_pg_link *l, PostgresPollingStatusType want)
{
    evutil_socket_t fd = PQsocket(l->conn);

    if (l->io != NULL) {
        event_free(l->io);
        l->io = NULL;
    }
    if (fd < 0)
        return -1;
    l->io = event_new(l->base, fd, want == PGRES_POLLING_READING ? EV_READ : EV_WRITE, on_io, l);
    if (l->io == NULL || event_add(l->io, NULL) != 0)
        return -1;
    return 0;
}

static void step(azc_pg_link *l, PostgresPollingStatusType st)
{
    switch (st) {
    case PGRES_POLLING_OK:
        connected(l);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (watch(l, st) != 0)
            attempt_failed(l, "cannot watch the socket");
        return;
    default:
        attempt_failed(l, PQerrorMessage(l->conn));
        return;
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    azc_pg_link *l = arg;

    (void)fd;
    (void)what;
    step(l, PQconnectPoll(l->conn));
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    azc_pg_link *l = arg;
    char msg[64];

    (void)fd;
    (void)what;
    snprintf(msg, sizeof msg, "no answer within %d ms", l->connect_timeout_ms);
    attempt_failed(l, msg);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_attempt(arg);
}

static void start_attempt(azc_pg_link *l)
{
    const char *keys[10], *vals[10];
    struct timeval tv = { l->connect_timeout_ms / 1000, (l->connect_timeout_ms % 1000) * 1000 };
    int n = 0;

#define KV(k, v) (keys[n] = (k), vals[n++] = (v))
    KV("application_name", l->app);
    if (l->options[0] != '\0')
        KV("options", l->options);
    KV("keepalives", "1");
    KV("keepalives_idle", "10");
    KV("keepalives_interval", "5");
    KV("keepalives_count", "3");
    KV("tcp_user_timeout", "10000");
    KV("dbname", l->conninfo);
#undef KV
    keys[n] = vals[n] = NULL;
    /* expand_dbname = 1: conninfo's own settings override the ones before
     * it. Keepalives and tcp_user_timeout bound how long a query can wait
     * on a peer that vanished from the network. */
    l->state = LINK_CONNECTING;
    l->conn = PQconnectStartParams(keys, vals, 1);
    if (l->conn == NULL) {
        attempt_failed(l, "out of memory");
        return;
    }
    if (PQstatus(l->conn) == CONNECTION_BAD) {
        attempt_failed(l, PQerrorMessage(l->conn));
        return;
    }
    PQsetNoticeProcessor(l->conn, azc__pg_on_notice, l->log);
    if (evtimer_add(l->deadline, &tv) != 0) {
        attempt_failed(l, "cannot arm the connect deadline");
        return;
    }
    /* Before the first poll the connection counts as waiting to write. */
    step(l, PGRES_POLLING_WRITING);
}

azc_pg_link *azc_pg_link_new(struct event_base *base, const char *conninfo,
                             const azc_pg_link_options *opts, azc_log *log, azc_err *e)
{
    azc_pg_link *l;
    struct timeval now = { 0, 0 };

    if (conninfo == NULL || conninfo[0] == '\0') {
        azc_err_set(e, AZC_EINVAL, "postgres: empty connection string");
        return NULL;
    }
    l = calloc(1, sizeof *l);
    if (l == NULL || (l->conninfo = strdup(conninfo)) == NULL) {
        free(l);
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    l->base = base;
    l->log = log;
    snprintf(l->app, sizeof l->app, "%s",
             opts != NULL && opts->application_name != NULL ? opts->application_name : "authz");
    if (opts != NULL && opts->statement_timeout_ms > 0)
        snprintf(l->options, sizeof l->options, "-c statement_timeout=%d",
                 opts->statement_timeout_ms);
    l->connect_timeout_ms =
        opts != NULL && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : CONNECT_TIMEOUT_MS;
    l->once = opts != NULL && opts->once;
    l->self_watched = opts != NULL && opts->self_watched;
    l->cb = opts != NULL ? opts->on_state : NULL;
    l->arg = opts != NULL ? opts->arg : NULL;
    l->backoff_ms = BACKOFF_FIRST_MS;
    l->deadline = evtimer_new(base, on_deadline, l);
    l->retry = evtimer_new(base, on_retry, l);
    /* The first attempt starts from the loop, so that its callback never
     * runs before the caller holds the link. */
    if (l->deadline == NULL || l->retry == NULL || evtimer_add(l->retry, &now) != 0) {
        azc_pg_link_free(l);
        azc_err_set(e, AZC_ERROR, "postgres: cannot create the connection's events");
        return NULL;
    }
    return l;
}

void azc_pg_link_free(azc_pg_link *l)
{
    if (l == NULL)
        return;
    if (l->io != NULL)
        event_free(l->io);
    if (l->idle != NULL)
        event_free(l->idle);
    if (l->deadline != NULL)
        event_free(l->deadline);
    if (l->retry != NULL)
        event_free(l->retry);
    PQfinish(l->conn);
    free(l->conninfo);
    free(l);
}

/* An established connection is gone: tell the user while the PGconn is
 * still valid (it unwatches the socket), close it, and try again at once;
 * the first attempt after a loss is not delayed (a restarted server is
 * usually back). */
static void drop(azc_pg_link *l, const char *why)
{
    char msg[AZC_ERRMSG_MAX];

    first_line(why, msg, sizeof msg);
    azc_logf(l->log, AZC_LOG_WARN, "postgres (%s): connection lost: %s%s", l->app, msg,
             l->once ? "" : "; reconnecting");
    if (l->cb != NULL)
        l->cb(l, 0, l->arg);
    if (l->idle != NULL)
        event_free(l->idle);
    l->idle = NULL;
    PQfinish(l->conn);
    l->conn = NULL;
    if (l->once) {
        l->state = LINK_FAILED;
        return;
    }
    start_attempt(l);
}

PGconn *azc_pg_link_conn(azc_pg_link *l)
{
    if (l == NULL || l->state != LINK_UP)
        return NULL;
    if (PQstatus(l->conn) == CONNECTION_OK)
        return l->conn;
    drop(l, PQerrorMessage(l->conn));
    return NULL;
}

int azc_pg_link_up(const azc_pg_link *l)
{
    return l != NULL && l->state == LINK_UP && PQstatus(l->conn) == CONNECTION_OK;
}

void azc_pg_link_lost(azc_pg_link *l)
{
    if (l != NULL && l->state == LINK_UP)
        drop(l, PQstatus(l->conn) == CONNECTION_OK ? "given up by its user"
                                                    : PQerrorMessage(l->conn));
}

void azc_pg_reply_error(azc_pg_link *l, azc_http_req *r, const azc_err *e, azc_log *log)
{
    int down = l != NULL && azc_pg_link_conn(l) == NULL;

    azc_log_reqf(log, AZC_LOG_ERROR, azc_http_req_id(r), "database: %s",
                 e != NULL && e->msg[0] != '\0' ? e->msg : "not connected");
    if (down || (e != NULL && e->code == AZC_EUNAVAIL)) {
        (void)azc_http_req_add_header(r, "Retry-After", "1");
        azc_http_reply_error(r, 503, "unavailable", "the database is unavailable; retry later");
        return;
    }
    azc_http_reply_error(r, 500, "internal", "internal error (request id %s)", azc_http_req_id(r));
}
