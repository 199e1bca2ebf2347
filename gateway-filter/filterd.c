/*
 * authz-filterd: the gateway filter as an HTTP ext-authz service, for
 * gateways that cannot embed C (docs/gateway.md).
 *
 *   GET /auth            nginx auth_request: the original method and URI
 *                        come from extauthz.method_header / uri_header
 *   ANY <path_prefix>/.. Envoy ext_authz (HTTP service): the original
 *                        request's method and path, behind a prefix
 *
 * 200 allow (X-Authz-Subject), 401 no or bad credentials
 * (WWW-Authenticate), 403 with Authz-Decision final or transient (with
 * Retry-After), 503 stale or no policy. A transient deny is held, without
 * blocking anything else, until the library wakes it (its watermark
 * passed, or the policy changed) or the retry budget runs out: the
 * request's event loop gets an event_active from the library's thread and
 * decides again there, with the request's original arrival time.
 *
 * Several loops (http.threads) share the port (SO_REUSEPORT); decisions
 * never lock, so they scale with the cores.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/config.h"
#include "common/hlc.h"
#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/runner.h"
#include "gateway-filter/authzfilter.h"
#include "gateway-filter/filter_internal.h"

#define MAX_THREADS 16
#define HEADER_NAME_MAX 64

typedef struct app app;

typedef struct worker {
    app *a;
    struct event_base *base;
    azc_http *http;
    struct event *tick;
} worker;

struct app {
    const azc_config *cfg;
    azc_log *log;
    azc_metrics *metrics;
    authzfilter *f;
    char addr[64];
    int port, bound_port;
    size_t nthreads;
    char method_header[HEADER_NAME_MAX], uri_header[HEADER_NAME_MAX], prefix[128];
    long long budget_ms;
    unsigned access_flags;   /* AZC_ROUTE_QUIET unless log.access is "all" */
    worker workers[MAX_THREADS];
    struct {
        azc_metric *decisions, *latency, *waits, *wait_time, *lag, *staleness, *generation,
            *assignments, *users, *teams, *memberships, *index_bytes, *routes, *waiting,
            *connected, *snapshots, *feed_errors, *loaded;
    } m;
};

/* A held transient deny. */
typedef struct pending {
    worker *w;
    azc_http_req *r;
    af_request rq;
    char *method, *path, *authorization, *revision;
    struct event *wake, *timeout;
    af_waiter *waiter;
    struct timespec started;
} pending;

static const double US_BUCKETS[] = { 0.5e-6, 1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6,
                                     1e-3, 10e-3 };
static const double WAIT_BUCKETS[] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5 };

/* ---- answers ------------------------------------------------------------ */

static double since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void reply(app *a, azc_http_req *r, const af_decision *d)
{
    char retry[24];
    const char *decision = d->outcome == AF_ALLOW            ? "allow"
                           : d->outcome == AF_DENY_TRANSIENT ? "transient"
                           : d->outcome == AF_UNAVAILABLE    ? "unavailable"
                                                             : "final";

    (void)azc_metric_inc(a->m.decisions,
                         (const char *const[]){ af_outcome_name(d->outcome), d->reason, NULL },
                         1);
    if (azc_http_req_add_header(r, "Authz-Decision", decision) != 0 ||
        azc_http_req_add_header(r, "Authz-Reason", d->reason) != 0 ||
        (d->origin[0] != '\0' && azc_http_req_add_header(r, "Authz-Origin", d->origin) != 0)) {
        azc_http_reply_error(r, 500, "internal", "cannot set the answer's headers");
        return;
    }
    if (d->outcome == AF_DENY_TRANSIENT || d->outcome == AF_UNAVAILABLE) {
        snprintf(retry, sizeof retry, "%d", d->retry_after_ms > 0
                                                ? (d->retry_after_ms + 999) / 1000 : 1);
        (void)azc_http_req_add_header(r, "Retry-After", retry);
    }
    if (d->outcome == AF_ALLOW) {
        if (d->subject[0] != '\0' &&
            azc_http_req_add_header(r, "X-Authz-Subject", d->subject) != 0) {
            azc_http_reply_error(r, 500, "internal", "cannot set the answer's headers");
            return;
        }
        azc_http_reply_json(r, 200, json_pack("{s:s, s:s, s:s}", "decision", "allow",
                                              "reason", d->reason, "subject", d->subject));
        return;
    }
    if (d->unauthenticated) {
        (void)azc_http_req_add_header(r, "WWW-Authenticate",
                                      strcmp(d->reason, "no_token") == 0
                                          ? "Bearer realm=\"authz\""
                                          : "Bearer realm=\"authz\", error=\"invalid_token\"");
        azc_http_reply_error(r, 401, d->reason, "%s", d->reason);
        return;
    }
    if (d->outcome == AF_UNAVAILABLE) {
        azc_http_reply_error(r, 503, d->reason, "%s", d->message);
        return;
    }
    azc_http_reply_error(r, 403, d->reason, "%s",
                         d->message[0] != '\0' ? d->message : "not allowed");
}

/* ---- held transient denies ----------------------------------------------- */

static void pending_free(pending *p)
{
    if (p->waiter != NULL)
        (void)af_wait_cancel(p->w->a->f, p->waiter);
    /* After the cancel no callback can activate `wake` any more; a pending
     * activation is dropped here. */
    if (p->wake != NULL)
        event_free(p->wake);
    if (p->timeout != NULL)
        event_free(p->timeout);
    free(p->method);
    free(p->path);
    free(p->authorization);
    free(p->revision);
    free(p);
}

/* The library's thread: hand over to the request's loop. */
static void on_library_wake(void *arg)
{
    pending *p = arg;

    event_active(p->wake, EV_READ, 0);
}

static void finish_wait(pending *p, const af_decision *d, const char *result)
{
    app *a = p->w->a;

    (void)azc_metric_inc(a->m.waits, (const char *const[]){ result, NULL }, 1);
    (void)azc_metric_observe(a->m.wait_time, NULL, since(&p->started));
    reply(a, p->r, d);
    pending_free(p);
}

static void decide_again(pending *p, int timed_out)
{
    app *a = p->w->a;
    af_decision d;

    p->waiter = NULL;
    af_check(a->f, &p->rq, &d);
    if (d.outcome != AF_DENY_TRANSIENT) {
        finish_wait(p, &d, d.outcome == AF_ALLOW ? "allowed"
                           : d.outcome == AF_DENY ? "final" : "unavailable");
        return;
    }
    if (timed_out || af_wait(a->f, &d, on_library_wake, p, &p->waiter) != 0) {
        finish_wait(p, &d, timed_out ? "budget_spent" : "waiters_full");
        return;
    }
}

static void on_wake(evutil_socket_t s, short what, void *arg)
{
    (void)s;
    (void)what;
    decide_again(arg, 0);
}

static void on_timeout(evutil_socket_t s, short what, void *arg)
{
    pending *p = arg;

    (void)s;
    (void)what;
    if (p->waiter != NULL && !af_wait_cancel(p->w->a->f, p->waiter)) {
        /* The callback ran just now: its activation is queued; the
         * decision below covers it. */
        event_del(p->wake);
    }
    p->waiter = NULL;
    decide_again(p, 1);
}

static void on_client_gone(azc_http_req *r, void *arg)
{
    pending *p = arg;

    (void)r;
    (void)azc_metric_inc(p->w->a->m.waits, (const char *const[]){ "client_gone", NULL }, 1);
    pending_free(p);
}

static char *dup_or_null(const char *s, int *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *oom = 1;
    return d;
}

/* Holds `r` until the transient deny `d` may have changed. */
static void hold(worker *w, azc_http_req *r, const af_request *rq, const af_decision *d)
{
    app *a = w->a;
    pending *p = calloc(1, sizeof *p);
    struct timeval tv;
    int oom = 0;

    if (p == NULL) {
        reply(a, r, d);
        return;
    }
    p->w = w;
    p->r = r;
    p->rq = *rq;
    p->method = dup_or_null(rq->method, &oom);
    p->path = dup_or_null(rq->path, &oom);
    p->authorization = dup_or_null(rq->authorization, &oom);
    p->revision = dup_or_null(rq->revision, &oom);
    p->rq.method = p->method;
    p->rq.path = p->path;
    p->rq.authorization = p->authorization;
    p->rq.revision = p->revision;
    clock_gettime(CLOCK_MONOTONIC, &p->started);
    tv.tv_sec = (time_t)(a->budget_ms / 1000);
    tv.tv_usec = (suseconds_t)(a->budget_ms % 1000) * 1000;
    if (oom || (p->wake = event_new(w->base, -1, 0, on_wake, p)) == NULL ||
        (p->timeout = event_new(w->base, -1, 0, on_timeout, p)) == NULL ||
        event_add(p->timeout, &tv) != 0) {
        pending_free(p);
        reply(a, r, d);
        return;
    }
    if (af_wait(a->f, d, on_library_wake, p, &p->waiter) != 0) {
        (void)azc_metric_inc(a->m.waits, (const char *const[]){ "waiters_full", NULL }, 1);
        pending_free(p);
        reply(a, r, d);
        return;
    }
    if (azc_http_req_defer(r, on_client_gone, p) != AZC_OK) {
        pending_free(p);
        reply(a, r, d);
    }
}

/* ---- handlers ----------------------------------------------------------- */

static void decide(worker *w, azc_http_req *r, const char *method, const char *target)
{
    app *a = w->a;
    af_request rq;
    af_decision d;
    struct timespec t0;

    memset(&rq, 0, sizeof rq);
    rq.method = method;
    rq.path = target;
    rq.authorization = azc_http_req_header(r, "Authorization");
    rq.revision = azc_http_req_header(r, "Authz-Revision");
    rq.revision_count = (int)azc_http_req_header_count(r, "Authz-Revision");
    rq.arrival_ms = (int64_t)azc_wall_ms();
    if (azc_http_req_header_count(r, "Authorization") > 1) {
        azc_http_reply_error(r, 400, "invalid_request", "more than one Authorization header");
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    af_check(a->f, &rq, &d);
    (void)azc_metric_observe(a->m.latency, NULL, since(&t0));
    if (d.outcome == AF_DENY_TRANSIENT && a->budget_ms > 0) {
        hold(w, r, &rq, &d);
        return;
    }
    reply(a, r, &d);
}

static void auth_request(azc_http_req *r, void *arg)
{
    worker *w = arg;
    app *a = w->a;
    const char *method = azc_http_req_header(r, a->method_header);
    const char *uri = azc_http_req_header(r, a->uri_header);

    if (azc_http_req_header_count(r, a->method_header) > 1 ||
        azc_http_req_header_count(r, a->uri_header) > 1) {
        azc_http_reply_error(r, 400, "invalid_request", "%s or %s given more than once",
                             a->method_header, a->uri_header);
        return;
    }
    if (method == NULL || uri == NULL) {
        azc_http_reply_error(r, 400, "invalid_request", "%s and %s are required",
                             a->method_header, a->uri_header);
        return;
    }
    decide(w, r, method, uri);
}

static void ext_authz(azc_http_req *r, void *arg)
{
    worker *w = arg;
    app *a = w->a;
    const char *target = azc_http_req_target(r);
    size_t n = strlen(a->prefix);

    /* The dispatcher matched the prefix on the raw path. */
    target = target != NULL && strlen(target) > n ? target + n : "/";
    decide(w, r, azc_http_method_name(azc_http_req_method(r)), target);
}

static int ready(void *arg, azc_err *why)
{
    worker *w = arg;

    if (af_ready(w->a->f))
        return AZC_OK;
    return azc_err_set(why, AZC_EUNAVAIL, "no policy loaded yet");
}

/* Gauges, refreshed every second by the first loop. */
static void on_tick(evutil_socket_t s, short what, void *arg)
{
    app *a = arg;
    af_stats st;
    size_t i;

    (void)s;
    (void)what;
    af_get_stats(a->f, &st);
    (void)azc_metric_set(a->m.loaded, NULL, st.loaded);
    (void)azc_metric_set(a->m.generation, NULL, (double)st.generation);
    (void)azc_metric_set(a->m.assignments, NULL, (double)st.assignments);
    (void)azc_metric_set(a->m.users, NULL, (double)st.users);
    (void)azc_metric_set(a->m.teams, NULL, (double)st.teams);
    (void)azc_metric_set(a->m.memberships, NULL, (double)st.memberships);
    (void)azc_metric_set(a->m.index_bytes, NULL, (double)st.index_bytes);
    (void)azc_metric_set(a->m.routes, NULL, (double)st.routes);
    (void)azc_metric_set(a->m.waiting, NULL, (double)st.waiters);
    (void)azc_metric_set(a->m.connected, NULL, st.feed_connected);
    (void)azc_metric_set(a->m.snapshots, NULL, (double)st.snapshots_loaded);
    (void)azc_metric_set(a->m.feed_errors, NULL, (double)st.feed_errors);
    for (i = 0; i < st.n_origins; i++) {
        const char *const lbl[] = { st.origins[i].name, NULL };

        (void)azc_metric_set(a->m.lag, lbl, (double)st.origins[i].lag_ms / 1000.0);
        (void)azc_metric_set(a->m.staleness, lbl, (double)st.origins[i].staleness_ms / 1000.0);
    }
}

/* ---- service ------------------------------------------------------------ */

static int register_metrics(app *a, azc_err *e)
{
    azc_metrics *m = a->metrics;

    a->m.decisions = azc_metrics_counter(m, "filter_decisions_total",
                                         "decisions by outcome and reason",
                                         (const char *const[]){ "outcome", "reason", NULL });
    a->m.latency = azc_metrics_histogram(m, "filter_decision_duration_seconds",
                                         "time of one in-process decision (af_check)", NULL,
                                         US_BUCKETS, sizeof US_BUCKETS / sizeof US_BUCKETS[0]);
    a->m.waits = azc_metrics_counter(m, "filter_waits_total",
                                     "held transient denies by how they ended",
                                     (const char *const[]){ "result", NULL });
    a->m.wait_time = azc_metrics_histogram(m, "filter_wait_duration_seconds",
                                           "how long a transient deny was held", NULL,
                                           WAIT_BUCKETS,
                                           sizeof WAIT_BUCKETS / sizeof WAIT_BUCKETS[0]);
    a->m.lag = azc_metrics_gauge(m, "filter_origin_lag_seconds",
                                 "known minus applied, per origin",
                                 (const char *const[]){ "origin", NULL });
    a->m.staleness = azc_metrics_gauge(m, "filter_origin_staleness_seconds",
                                       "now minus the origin's applied watermark",
                                       (const char *const[]){ "origin", NULL });
    a->m.loaded = azc_metrics_gauge(m, "filter_policy_loaded", "1 once a snapshot is loaded",
                                    NULL);
    a->m.generation = azc_metrics_gauge(m, "filter_index_generation",
                                        "the policy index's generation", NULL);
    a->m.assignments = azc_metrics_gauge(m, "filter_index_assignments",
                                         "assignments in the index", NULL);
    a->m.users = azc_metrics_gauge(m, "filter_index_users", "users in the index", NULL);
    a->m.teams = azc_metrics_gauge(m, "filter_index_teams", "teams in the index", NULL);
    a->m.memberships = azc_metrics_gauge(m, "filter_index_memberships",
                                         "memberships in the index", NULL);
    a->m.index_bytes = azc_metrics_gauge(m, "filter_index_bytes",
                                         "memory the index holds, approximately", NULL);
    a->m.routes = azc_metrics_gauge(m, "filter_routes", "routes loaded", NULL);
    a->m.waiting = azc_metrics_gauge(m, "filter_waiting", "transient denies held now", NULL);
    a->m.connected = azc_metrics_gauge(m, "filter_feed_connected",
                                       "1 while the change stream is open", NULL);
    a->m.snapshots = azc_metrics_gauge(m, "filter_snapshots_loaded",
                                       "snapshots loaded since start", NULL);
    a->m.feed_errors = azc_metrics_gauge(m, "filter_feed_errors",
                                         "failed feed requests and bad answers since start",
                                         NULL);
    if (a->m.decisions == NULL || a->m.latency == NULL || a->m.waits == NULL ||
        a->m.wait_time == NULL || a->m.lag == NULL || a->m.staleness == NULL ||
        a->m.loaded == NULL || a->m.generation == NULL || a->m.assignments == NULL ||
        a->m.users == NULL || a->m.teams == NULL || a->m.memberships == NULL ||
        a->m.index_bytes == NULL || a->m.routes == NULL || a->m.waiting == NULL ||
        a->m.connected == NULL || a->m.snapshots == NULL || a->m.feed_errors == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot register the metrics");
    return AZC_OK;
}

static int header_name(const azc_config *cfg, const char *key, const char *def, char *out,
                       size_t n, azc_err *e)
{
    const char *s;
    size_t i;
    int rc;

    if ((rc = azc_config_get_string(cfg, "extauthz", key, def, &s, e)) != AZC_OK)
        return rc;
    if (s[0] == '\0' || strlen(s) >= n)
        return azc_err_set(e, AZC_EINVAL, "configuration: extauthz.%s must be a header name",
                           key);
    for (i = 0; s[i] != '\0'; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
            return azc_err_set(e, AZC_EINVAL,
                               "configuration: extauthz.%s must be a header name", key);
    snprintf(out, n, "%s", s);
    return AZC_OK;
}

static int configure(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    static const azc_config_key own[] = {
        { "http", "addr" },          { "http", "port" },          { "http", "threads" },
        { "extauthz", "method_header" }, { "extauthz", "uri_header" },
        { "extauthz", "path_prefix" }, { "log", "level" }, { "log", "access" },
    };
    azc_config_key known[128];
    const azc_config_key *lib;
    const char *addr, *prefix, *access;
    long long port, threads;
    size_t n, i;
    int rc;

    a->cfg = azc_service_config(svc);
    a->log = azc_service_log(svc);
    a->metrics = azc_service_metrics(svc);
    lib = af__config_keys(&n);
    if (n + sizeof own / sizeof own[0] > sizeof known / sizeof known[0])
        return azc_err_set(e, AZC_ERROR, "too many configuration keys");
    memcpy(known, lib, n * sizeof *lib);
    for (i = 0; i < sizeof own / sizeof own[0]; i++)
        known[n++] = own[i];
    if ((rc = azc_config_check(a->cfg, known, n, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "http", "addr", "127.0.0.1", &addr, e)) ||
        (rc = azc_config_get_int(a->cfg, "http", "port", 8070, 0, 65535, &port, e)) ||
        (rc = azc_config_get_int(a->cfg, "http", "threads", 2, 1, MAX_THREADS, &threads, e)) ||
        (rc = header_name(a->cfg, "method_header", "X-Original-Method", a->method_header,
                          sizeof a->method_header, e)) ||
        (rc = header_name(a->cfg, "uri_header", "X-Original-URI", a->uri_header,
                          sizeof a->uri_header, e)) ||
        (rc = azc_config_get_string(a->cfg, "extauthz", "path_prefix", "/ext-authz", &prefix,
                                    e)) ||
        (rc = azc_config_get_string(a->cfg, "log", "access", "errors", &access, e)))
        return rc;
    /* A decision's access line costs more than the decision (a JSON line,
     * a write and the stream's lock, per request): by default only the
     * answers that say something is wrong (5xx) get one. */
    if (strcmp(access, "all") == 0)
        a->access_flags = 0;
    else if (strcmp(access, "errors") == 0)
        a->access_flags = AZC_ROUTE_QUIET;
    else
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: log.access must be \"all\" or \"errors\", not \"%s\"",
                           access);
    if (strlen(addr) >= sizeof a->addr)
        return azc_err_set(e, AZC_EINVAL, "configuration: http.addr is too long");
    if (prefix[0] != '/' || prefix[1] == '\0' || strlen(prefix) >= sizeof a->prefix ||
        prefix[strlen(prefix) - 1] == '/' || strcmp(prefix, "/auth") == 0 ||
        strpbrk(prefix, "%?#{}") != NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: extauthz.path_prefix must be a path like "
                           "\"/ext-authz\" (no trailing '/', not /auth)");
    snprintf(a->addr, sizeof a->addr, "%s", addr);
    snprintf(a->prefix, sizeof a->prefix, "%s", prefix);
    a->port = (int)port;
    a->nthreads = (size_t)threads;
    return register_metrics(a, e);
}

static int start(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    const azc_http_route routes[] = {
        { AZC_HTTP_GET, "/auth", auth_request, a->access_flags, 0 },
        { AZC_HTTP_GET | AZC_HTTP_POST | AZC_HTTP_PUT | AZC_HTTP_PATCH | AZC_HTTP_DELETE,
          a->prefix, ext_authz, AZC_ROUTE_PREFIX | a->access_flags, 0 },
    };
    azc_http_options opts;
    struct timeval tv = { 1, 0 };
    size_t i;
    int rc;

    if ((rc = af__open_config(a->cfg, a->log, &a->f, e)) != AZC_OK)
        return rc;
    a->budget_ms = af_retry_budget_ms(a->f);
    memset(&opts, 0, sizeof opts);
    opts.service = "filter";
    opts.reuse_port = 1;
    for (i = 0; i < a->nthreads; i++) {
        worker *w = &a->workers[i];

        w->a = a;
        if ((w->base = event_base_new()) == NULL)
            return azc_err_set(e, AZC_ERROR, "cannot create an event loop");
        if ((w->http = azc_http_new(w->base, &opts, a->log, a->metrics, e)) == NULL)
            return AZC_ERROR;
        azc_http_set_ready_cb(w->http, ready, w);
        if (azc_http_add_routes(w->http, routes, sizeof routes / sizeof routes[0], w) !=
            AZC_OK)
            return azc_err_set(e, AZC_ERROR, "cannot register the routes");
        /* Port 0: the first loop's port, for the others too. */
        if ((rc = azc_http_bind(w->http, a->addr, i == 0 ? a->port : a->bound_port, e)) !=
            AZC_OK)
            return rc;
        if (i == 0) {
            a->bound_port = azc_http_bound_port(w->http);
            w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, a);
            if (w->tick == NULL || event_add(w->tick, &tv) != 0)
                return azc_err_set(e, AZC_ERROR, "cannot start the metrics timer");
        }
        if ((rc = azc_service_add_loop(svc, w->base, e)) != AZC_OK)
            return rc;
    }
    return AZC_OK;
}

static void reload(void *arg, azc_service *svc)
{
    app *a = arg;
    char err[256];

    (void)svc;
    if (a->f != NULL && af_reload(a->f, err, sizeof err) == 0)
        azc_logf(a->log, AZC_LOG_INFO, "keys and routes reloaded");
}

static json_t *describe(void *arg)
{
    app *a = arg;

    return json_pack("{s:i, s:i, s:s}", "port", a->bound_port, "threads", (int)a->nthreads,
                     "ext_authz_prefix", a->prefix);
}

static void cleanup(void *arg)
{
    app *a = arg;
    size_t i;

    /* The servers first: held requests are cancelled (their waits too)
     * before the filter goes. */
    for (i = 0; i < MAX_THREADS; i++) {
        worker *w = &a->workers[i];

        azc_http_free(w->http);
        if (w->tick != NULL)
            event_free(w->tick);
        if (w->base != NULL)
            event_base_free(w->base);
    }
    af_close(a->f);
}

static const azc_service_def SERVICE = {
    .prog = "authz-filterd",
    .summary = "the gateway filter as an ext-authz service (nginx auth_request, Envoy ext_authz)",
    .log_name = "filter",
    .hup = 1,
    .configure = configure,
    .start = start,
    .reload = reload,
    .describe = describe,
    .cleanup = cleanup,
};

int main(int argc, char **argv)
{
    app a;

    memset(&a, 0, sizeof a);
    return azc_service_main(&SERVICE, &a, argc, argv);
}
