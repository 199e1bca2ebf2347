/*
 * Following one peer (docs/replication.md): a loop of one request at a
 * time on the follower's own event loop.
 *
 *   step: connect the database if needed, read the stored cursor once
 *         (none: bootstrap), then ask the peer: its snapshot
 *         (tombstones=1) when a resync is due, else its change feed after
 *         the cursor as a long poll (wait=replication.wait_ms);
 *   answer: apply it in one transaction (replicator/apply.c), then step
 *         again at once; a 410 makes the next step a resync; anything
 *         else (down, timeout, 5xx, garbage, a database failure) arms the
 *         step after a backoff.
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

struct rp_follower {
    rp_shared *sh;
    size_t index;
    char name[RP_REGION_LEN];
    char host[256];
    char prefix[256];           /* URL path prefix without its trailing '/' */
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
    evhttp_connection_set_timeout(f->conn,
                                  (int)(f->sh->set.wait_ms / 1000) + TIMEOUT_MARGIN_S);
    evhttp_connection_set_max_body_size(f->conn, MAX_BODY);
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

/* Applies a 200 answer. */
static void on_body(rp_follower *f, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in != NULL ? evbuffer_get_length(in) : 0;
    const char *data = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    rp_apply_ctx ctx = { f->sh->set.region, f->name, f->sh->log };
    rp_apply_result res;
    json_error_t jerr;
    json_t *body;
    long long t0, rows;
    azc_err e;
    int rc;

    if (data == NULL) {
        fail(f, "protocol", "cannot read the answer body");
        return;
    }
    body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL) {
        char msg[RP_ERR_LEN];

        snprintf(msg, sizeof msg, "answer is not JSON: %s (line %d)", jerr.text, jerr.line);
        fail(f, "protocol", msg);
        return;
    }
    t0 = rp_now_ms();
    rc = f->in_snapshot ? rp_apply_snapshot(f->pg, &ctx, body, &res, &e)
                        : rp_apply_feed(f->pg, &ctx, body, f->cursor, &res, &e);
    json_decref(body);
    if (rc != AZC_OK) {
        if (rc != AZC_EINVAL && PQstatus(f->pg) != CONNECTION_OK)
            drop_pg(f);
        fail(f, rc == AZC_EINVAL ? "protocol" : "database", e.msg);
        return;
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
    /* A peer that answers "nothing new" at once, again and again (a wait
     * of 0, or one that ignores it), would have this loop spin. */
    rows = res.applied[0] + res.applied[1] + res.applied[2] + res.own_origin + res.older +
           res.dead;
    arm(f, rows == 0 && rp_now_ms() - f->sent_ms < EMPTY_FAST_MS ? EMPTY_PAUSE_MS : 0);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    rp_follower *f = arg;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    char msg[RP_ERR_LEN];

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
    int rc;

    if ((rc = conn_ensure(f, e)) != AZC_OK)
        return rc;
    f->in_snapshot = f->resync;
    if (f->in_snapshot)
        snprintf(path, sizeof path, "%s/v1/policy/snapshot?tombstones=1", f->prefix);
    else
        snprintf(path, sizeof path,
                 "%s/v1/policy/changes?after=%lld&limit=%lld&wait=%lld&watermarks=1", f->prefix,
                 f->cursor, f->sh->set.limit, f->sh->set.wait_ms);
    if ((req = evhttp_request_new(on_response, f)) == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an HTTP request");
    evhttp_request_set_error_cb(req, on_error);
    h = evhttp_request_get_output_headers(req);
    snprintf(hostport, sizeof hostport, "%s:%d", f->host, f->port);
    snprintf(auth, sizeof auth, "Bearer %s", f->token);
    if (evhttp_add_header(h, "Host", hostport) != 0 ||
        evhttp_add_header(h, "Accept", "application/json") != 0 ||
        (f->token[0] != '\0' && evhttp_add_header(h, "Authorization", auth) != 0)) {
        evhttp_request_free(req);
        return azc_err_set(e, AZC_ERROR, "cannot set the request headers");
    }
    if (evhttp_make_request(f->conn, req, EVHTTP_REQ_GET, path) != 0) {
        /* Only when no socket can be made. libevent may already have run
         * the request's callback (and then freed it), so it is not freed
         * here: a leak on this rare path is better than a double free. */
        f->conn_broken = 1;
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
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme, *host, *path;
    size_t n;
    int rc = AZC_OK;

    if (u == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: peers.%s is not a URL", f->name);
    scheme = evhttp_uri_get_scheme(u);
    host = evhttp_uri_get_host(u);
    path = evhttp_uri_get_path(u);
    if (scheme == NULL || strcmp(scheme, "http") != 0)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: peers.%s must be an http:// URL",
                         f->name);
    else if (host == NULL || host[0] == '\0' || strlen(host) >= sizeof f->host)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: peers.%s has no host", f->name);
    else if (evhttp_uri_get_query(u) != NULL || evhttp_uri_get_fragment(u) != NULL ||
             evhttp_uri_get_userinfo(u) != NULL)
        rc = azc_err_set(e, AZC_EINVAL,
                         "configuration: peers.%s must hold no query, fragment or user",
                         f->name);
    else if (path != NULL && strlen(path) >= sizeof f->prefix)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: peers.%s has too long a path", f->name);
    if (rc == AZC_OK) {
        snprintf(f->host, sizeof f->host, "%s", host);
        f->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
        snprintf(f->prefix, sizeof f->prefix, "%s", path != NULL ? path : "");
        n = strlen(f->prefix);
        while (n > 0 && f->prefix[n - 1] == '/')
            f->prefix[--n] = '\0';
    }
    evhttp_uri_free(u);
    return rc;
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
    if ((f->base = event_base_new()) == NULL ||
        (f->step_ev = event_new(f->base, -1, 0, on_step, f)) == NULL) {
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
    if (f->conn != NULL)
        evhttp_connection_free(f->conn);
    if (f->step_ev != NULL)
        event_free(f->step_ev);
    if (f->base != NULL)
        event_base_free(f->base);
    drop_pg(f);
    memset(f->token, 0, sizeof f->token);
    free(f);
}
