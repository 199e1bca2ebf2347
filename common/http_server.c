/*
 * The HTTP server helper's server: creation and listening, the route
 * table, the lifetime of a request, and the one dispatcher; see http.h
 * for the contract and http_internal.h for the other parts.
 *
 * evhttp hands every request to one generic callback (dispatch), for
 * every method token (the allowed set is all of evhttp's method bits plus
 * its "unknown" one), so that the answers to odd methods are ours and in
 * JSON. The dispatcher checks the framing headers first (an ambiguous
 * request closes the connection: its next bytes cannot be trusted),
 * resolves the route on the percent-decoded path, runs the auth callback,
 * then the checks that cut across handlers (413, query string, 415, JSON
 * body), then the handler. An azc_http_req wraps the evhttp request for
 * exactly as long as evhttp keeps it: until the reply is queued, or until
 * the connection dies under a deferred or streamed request.
 */
#include "common/http_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#define LISTEN_BACKLOG 1024
/* evhttp's method bit for a token it does not know (http-internal.h). */
#define EVHTTP_METHOD_UNKNOWN (1u << 15)
#define EVHTTP_ALL_METHODS (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | \
                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |          \
                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH | EVHTTP_METHOD_UNKNOWN)

static void handle_healthz(azc_http_req *r, void *arg);
static void handle_readyz(azc_http_req *r, void *arg);
static void handle_metrics(azc_http_req *r, void *arg);

static double seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* ---- routes ----------------------------------------------------------- */

static int add_routes(azc_http *h, const azc_http_route *routes, size_t n, void *arg,
                      int quiet, azc_err *e)
{
    struct azc__http_route *tmp;
    size_t i, largest = h->server_max_body;
    int rc = AZC_OK;

    if (n == 0)
        return AZC_OK;
    if (routes == NULL)
        return azc_err_set(e, AZC_EINVAL, "no route table");
    tmp = calloc(n, sizeof *tmp);
    if (tmp == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    /* Parse every entry before touching the server: all or nothing. */
    for (i = 0; i < n && rc == AZC_OK; i++) {
        const azc_http_route *in = &routes[i];
        struct azc__http_route *rt = &tmp[i];

        if (in->methods == 0 || (in->methods & ~AZC__HTTP_ALL_METHODS) != 0)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": bad methods 0x%x",
                             in->pattern != NULL ? in->pattern : "", in->methods);
        else if (in->handler == NULL)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": no handler",
                             in->pattern != NULL ? in->pattern : "");
        else if ((in->flags & ~AZC__HTTP_ROUTE_FLAGS) != 0)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": unknown flags 0x%x",
                             in->pattern != NULL ? in->pattern : "", in->flags);
        else
            rc = azc__http_route_parse(rt, in->pattern, e);
        rt->methods = in->methods;
        /* The built-in probes answer load balancers without credentials. */
        rt->flags = in->flags | (quiet ? AZC_ROUTE_PUBLIC : 0);
        rt->max_body = in->max_body != 0 ? in->max_body : h->max_body;
        rt->quiet = quiet                          ? AZC__HTTP_QUIET_ALL
                    : (in->flags & AZC_ROUTE_QUIET) ? AZC__HTTP_QUIET_OK
                                                    : AZC__HTTP_QUIET_NO;
        rt->handler = in->handler;
        rt->arg = arg;
        if (rt->max_body > largest)
            largest = rt->max_body;
    }
    if (rc == AZC_OK && h->nroutes + n > h->cap) {
        size_t cap = h->cap == 0 ? 16 : h->cap;
        struct azc__http_route *grown;

        while (cap < h->nroutes + n)
            cap *= 2;
        grown = realloc(h->routes, cap * sizeof *grown);
        if (grown == NULL) {
            rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        } else {
            h->routes = grown;
            h->cap = cap;
        }
    }
    if (rc != AZC_OK) {
        for (i = 0; i < n; i++)
            azc__http_route_clear(&tmp[i]);
        free(tmp);
        return rc;
    }
    memcpy(h->routes + h->nroutes, tmp, n * sizeof *tmp);
    h->nroutes += n;
    free(tmp);
    if (largest != h->server_max_body) {
        h->server_max_body = largest;
        evhttp_set_max_body_size(h->http, largest > (size_t)EV_SSIZE_MAX
                                              ? EV_SSIZE_MAX : (ev_ssize_t)largest);
    }
    return AZC_OK;
}

int azc_http_add_routes(azc_http *h, const azc_http_route *routes, size_t n, void *arg)
{
    azc_err e;
    int rc;

    if (h == NULL)
        return AZC_EINVAL;
    azc_err_clear(&e);
    rc = add_routes(h, routes, n, arg, 0, &e);
    if (rc != AZC_OK)
        azc_logf(h->log, AZC_LOG_ERROR, "cannot add routes: %s", e.msg);
    return rc;
}

/* ---- request lifetime ------------------------------------------------- */

void azc__http_req_free(azc_http_req *r)
{
    azc__http_unwatch(r);
    azc__http_conn_request_end(r->conn);
    if (r->drain_ev != NULL)
        event_free(r->drain_ev);
    if (r->ctx_free != NULL)
        r->ctx_free(r->ctx);
    json_decref(r->json);
    free(r->path_buf);
    free(r->query_buf);
    free(r->query);
    free(r);
}

static azc_http_req *req_new(azc_http *h, struct evhttp_request *ev)
{
    azc_http_req *r = calloc(1, sizeof *r);
    const char *id;

    if (r == NULL)
        return NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    r->h = h;
    r->ev = ev;
    r->evcon = evhttp_request_get_connection(ev);
    r->method = azc__http_method_flag(evhttp_request_get_command(ev));
    r->route = "unmatched";
    id = evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id");
    if (azc__http_valid_request_id(id)) {
        snprintf(r->id, sizeof r->id, "%s", id);
    } else if (azc_request_id_new(r->id) != AZC_OK) {
        free(r);
        return NULL;
    }
    r->conn = azc__http_conn_request_begin(h, r->evcon);
    return r;
}

/* One access-log line and the two built-in metrics for a finished request. */
void azc__http_access_record(azc_http_req *r, int status)
{
    azc_http *h = r->h;
    double secs = seconds_since(&r->start);
    int loud = status >= 500 || status == AZC__HTTP_STATUS_CLIENT_CLOSED;
    azc_log_level lvl = r->quiet == AZC__HTTP_QUIET_ALL || (r->quiet == AZC__HTTP_QUIET_OK && !loud)
                            ? AZC_LOG_DEBUG
                            : AZC_LOG_INFO;
    const char *method = azc_http_method_name(r->method);

    if (h->m_requests != NULL) {
        char code[16];
        int rc;

        snprintf(code, sizeof code, "%d", status);
        rc = azc_metric_inc(h->m_requests,
                            (const char *const[]){ h->service, r->route, method, code, NULL }, 1);
        if (rc == AZC_OK)
            rc = azc_metric_observe(h->m_duration,
                                    (const char *const[]){ h->service, r->route, NULL }, secs);
        if (rc != AZC_OK && !h->metrics_failed) {
            h->metrics_failed = 1;
            azc_logf(h->log, AZC_LOG_WARN, "http metrics not updated: %s",
                     azc_status_name(rc));
        }
    }
    if (azc_log_enabled(h->log, lvl)) {
        json_t *f = json_pack("{s:s, s:s, s:i, s:f}", "method", method, "route", r->route,
                              "status", status, "duration_ms", secs * 1000.0);

        azc_log_write(h->log, lvl, r->id, f,
                      status == AZC__HTTP_STATUS_CLIENT_CLOSED ? "client closed request" : "request");
        json_decref(f);
    }
}

/*
 * The client of a deferred request is gone (or the server is going away):
 * tell the owner, record it, free r. The caller deals with the connection.
 */

/* ---- request accessors ------------------------------------------------ */

const char *azc_http_req_param(const azc_http_req *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nparams; i++) {
        if (strcmp(r->params[i].name, name) == 0)
            return r->params[i].value;
    }
    return NULL;
}

const char *azc_http_req_query(const azc_http_req *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nquery; i++) {
        if (strcmp(r->query[i].name, name) == 0)
            return r->query[i].value;
    }
    return NULL;
}

const char *azc_http_req_header(const azc_http_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->ev), name);
}

size_t azc_http_req_header_count(const azc_http_req *r, const char *name)
{
    struct evkeyvalq *hs = evhttp_request_get_input_headers(r->ev);
    struct evkeyval *kv;
    size_t n = 0;

    for (kv = hs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (evutil_ascii_strcasecmp(kv->key, name) == 0)
            n++;
    }
    return n;
}

json_t *azc_http_req_json(const azc_http_req *r)
{
    return r->json;
}

const char *azc_http_req_body(azc_http_req *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ev);
    size_t n = evbuffer_get_length(in);
    const char *p = n > 0 ? (const char *)evbuffer_pullup(in, -1) : NULL;

    if (p == NULL) {
        *len = 0;
        return "";
    }
    *len = n;
    return p;
}

unsigned azc_http_req_method(const azc_http_req *r)
{
    return r->method;
}

const char *azc_http_req_id(const azc_http_req *r)
{
    return r->id;
}

const char *azc_http_req_route(const azc_http_req *r)
{
    return r->route;
}

const char *azc_http_req_target(const azc_http_req *r)
{
    return evhttp_request_get_uri(r->ev);
}

int azc_http_req_background(azc_http_req *r)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(r->evcon);

    if (bev == NULL || bufferevent_priority_set(bev, AZC_LOOP_PRIO_BACKGROUND) != 0)
        return AZC_ERROR;
    return AZC_OK;
}

struct event_base *azc_http_loop_new(azc_err *e)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base = NULL;

    if (cfg != NULL && event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER) == 0)
        base = event_base_new_with_config(cfg);
    if (cfg != NULL) /* libevent's free does not take NULL */
        event_config_free(cfg);
    if (base == NULL) {
        azc_err_set(e, AZC_ERROR, "cannot create an event loop");
        return NULL;
    }
    /* Before any event is made: a new event takes the middle priority. */
    if (event_base_priority_init(base, AZC_LOOP_PRIORITIES) != 0) {
        event_base_free(base);
        azc_err_set(e, AZC_ERROR, "cannot set the event loop's priorities");
        return NULL;
    }
    return base;
}

int azc_http_req_add_header(azc_http_req *r, const char *name, const char *value)
{
    if (r->replied || r->closing) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "header %s added after the reply",
                     name != NULL ? name : "");
        return AZC_ECONFLICT;
    }
    if (!azc__http_is_token(name) || value == NULL || strpbrk(value, "\r\n") != NULL ||
        strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
        strcasecmp(name, "X-Request-Id") == 0) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "response header refused: %s",
                     azc__http_is_token(name) ? name : "(invalid name)");
        return AZC_EINVAL;
    }
    if (strcasecmp(name, "Content-Type") == 0)
        evhttp_remove_header(evhttp_request_get_output_headers(r->ev), "Content-Type");
    if (evhttp_add_header(evhttp_request_get_output_headers(r->ev), name, value) != 0)
        return AZC_ENOMEM;
    return AZC_OK;
}


void azc_http_req_set_ctx(azc_http_req *r, void *ctx, void (*ctx_free)(void *))
{
    if (r->ctx_free != NULL && r->ctx != ctx)
        r->ctx_free(r->ctx);
    r->ctx = ctx;
    r->ctx_free = ctx_free;
}

void *azc_http_req_ctx(const azc_http_req *r)
{
    return r->ctx;
}

/* ---- dispatch --------------------------------------------------------- */

/*
 * Methods and framing, before anything else looks at the request. A
 * token evhttp does not know (TRACE and lowercase "get" included) or
 * CONNECT gets 501; a request whose length is ambiguous gets 400. Both
 * close the connection: where this request ends, and so where the next
 * one would start, is not known.
 */
static int framing_or_reply(azc_http_req *r)
{
    enum evhttp_cmd_type t = evhttp_request_get_command(r->ev);
    int body_read;
    azc_err e;

    if (r->method == 0 || r->method == AZC__HTTP_CONNECT) {
        r->close_after = 1;
        azc_http_reply_error(r, 501, "not_implemented", "method %s not implemented",
                             r->method == 0 ? "(unknown)" : "CONNECT");
        return -1;
    }
    /* What evhttp reads a body for (evhttp_method_may_have_body). */
    body_read = t != EVHTTP_REQ_HEAD && t != EVHTTP_REQ_TRACE;
    azc_err_clear(&e);
    if (azc__http_check_framing(evhttp_request_get_input_headers(r->ev), body_read, &e) !=
        AZC_OK) {
        r->close_after = 1;
        azc_http_reply_error(r, 400, "invalid_request", "%s", e.msg);
        return -1;
    }
    return 0;
}

/* A PREFIX route covering the raw path, for the method; NULL otherwise (the
 * path then goes through the checks and patterns below, 405 included). */
static const struct azc__http_route *prefix_find(const azc_http *h, const char *raw,
                                                 unsigned method)
{
    unsigned want = method == AZC_HTTP_HEAD ? (method | AZC_HTTP_GET) : method;
    size_t i, n;

    if (raw == NULL)
        return NULL;
    for (i = 0; i < h->nroutes; i++) {
        const struct azc__http_route *rt = &h->routes[i];

        if (!(rt->flags & AZC_ROUTE_PREFIX) || !(rt->methods & want))
            continue;
        n = strlen(rt->pattern);
        if (strncmp(raw, rt->pattern, n) == 0 && (raw[n] == '\0' || raw[n] == '/'))
            return rt;
    }
    return NULL;
}

/* Finds the route for r, filling its parameters, or replies 400/404/405. */
static const struct azc__http_route *resolve_or_reply(azc_http_req *r)
{
    azc_http *h = r->h;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->ev);
    char *segs[AZC_HTTP_MAX_SEGMENTS];
    const struct azc__http_route *found, *first;
    unsigned allowed;
    size_t nsegs, i;
    azc_err e;
    int rc;

    if ((found = prefix_find(h, uri != NULL ? evhttp_uri_get_path(uri) : NULL,
                             r->method)) != NULL) {
        r->route = found->pattern;
        r->quiet = found->quiet;
        return found;
    }
    azc_err_clear(&e);
    rc = azc__http_split_path(uri != NULL ? evhttp_uri_get_path(uri) : NULL, &r->path_buf, segs,
                              &nsegs, &e);
    if (rc == AZC_ETOOBIG) {
        azc_http_reply_error(r, 404, "not_found", "not found");
        return NULL;
    }
    if (rc != AZC_OK) {
        if (rc == AZC_ENOMEM)
            azc__http_send_internal_error(r);
        else
            azc_http_reply_error(r, 400, "invalid_path", "%s", e.msg);
        return NULL;
    }
    found = azc__http_route_find(h->routes, h->nroutes, segs, nsegs, r->method, &first,
                                 &allowed);
    if (found == NULL) {
        if (first == NULL) {
            azc_http_reply_error(r, 404, "not_found", "not found");
        } else {
            char allow[64];

            r->route = first->pattern;
            azc__http_allow_list(allowed, allow, sizeof allow);
            azc__http_set_header(r, "Allow", allow);
            azc_http_reply_error(r, 405, "method_not_allowed", "method %s not allowed",
                                 azc_http_method_name(r->method));
        }
        return NULL;
    }
    r->route = found->pattern;
    r->quiet = found->quiet;
    for (i = 0; i < nsegs; i++) {
        if (found->segs[i].param) {
            r->params[r->nparams].name = found->segs[i].text;
            r->params[r->nparams].value = segs[i];
            r->nparams++;
        }
    }
    return found;
}

/* The auth callback, fail-closed; replies on failure. */
static int auth_or_reply(azc_http_req *r, const struct azc__http_route *rt)
{
    azc_http *h = r->h;
    int rc;

    if (h->auth_cb == NULL || (rt->flags & AZC_ROUTE_PUBLIC))
        return 0;
    rc = h->auth_cb(r, rt->arg, h->auth_arg);
    if (rc == AZC_OK && !r->replied)
        return 0;
    if (!r->replied) {
        azc_log_reqf(h->log, AZC_LOG_ERROR, r->id, "auth callback failed (%s) without a reply",
                     azc_status_name(rc));
        azc__http_send_internal_error(r);
    }
    return -1;
}

/* Body limit, query string, media type and JSON body; replies on failure. */
static int check_or_reply(azc_http_req *r, const struct azc__http_route *rt)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->ev);
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ev);
    size_t len = evbuffer_get_length(in);
    azc_err e;
    int rc;

    if (len > rt->max_body) {
        azc_http_reply_error(r, 413, "payload_too_large",
                             "request body is larger than %zu bytes", rt->max_body);
        return -1;
    }
    azc_err_clear(&e);
    /* A PREFIX route's handler reads the raw target (its query included). */
    rc = rt->flags & AZC_ROUTE_PREFIX
             ? AZC_OK
             : azc__http_parse_query(evhttp_uri_get_query(uri), &r->query_buf, &r->query,
                                     &r->nquery, &e);
    if (rc != AZC_OK) {
        if (rc == AZC_ENOMEM)
            azc__http_send_internal_error(r);
        else
            azc_http_reply_error(r, 400, "invalid_query", "%s", e.msg);
        return -1;
    }
    if (rt->flags & AZC_ROUTE_JSON_BODY) {
        json_error_t jerr;
        const char *body;

        if (!azc__http_is_json_media_type(azc_http_req_header(r, "Content-Type"))) {
            azc_http_reply_error(r, 415, "unsupported_media_type",
                                 "content-type must be application/json");
            return -1;
        }
        body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
        if (body == NULL) {
            azc__http_send_internal_error(r);
            return -1;
        }
        r->json = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        if (r->json == NULL) {
            azc_http_reply_error(r, 400, "invalid_json", "invalid json at line %d, column %d: %s",
                                 jerr.line, jerr.column, jerr.text);
            return -1;
        }
    }
    return 0;
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
    azc_http *h = arg;
    azc_http_req *r = req_new(h, ev);
    const struct azc__http_route *rt = NULL;

    if (r == NULL) {
        azc_logf(h->log, AZC_LOG_ERROR, "out of memory for a request");
        evhttp_send_error(ev, 500, NULL);
        return;
    }
    if (framing_or_reply(r) == 0)
        rt = resolve_or_reply(r);
    if (rt != NULL && auth_or_reply(r, rt) == 0 && check_or_reply(r, rt) == 0) {
        azc_http_handler handler = rt->handler;   /* rt may move if a handler adds routes */
        void *harg = rt->arg;

        r->in_handler = 1;
        handler(r, harg);
        r->in_handler = 0;
        if (!r->replied && !r->deferred) {
            azc_log_reqf(h->log, AZC_LOG_ERROR, r->id, "handler for %s returned without a reply",
                         r->route);
            azc__http_send_internal_error(r);
        }
    }
    /* A stream outlives its handler until reply_end. */
    if (r->replied && !r->streaming)
        azc__http_req_free(r);
}

/* ---- built-in routes -------------------------------------------------- */

static void handle_healthz(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(azc_http_req *r, void *arg)
{
    azc_http *h = arg;
    azc_err why;
    int rc;

    if (h->ready_cb == NULL) {
        azc_http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
        return;
    }
    azc_err_clear(&why);
    rc = h->ready_cb(h->ready_arg, &why);
    if (rc == AZC_OK) {
        azc_http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
        return;
    }
    azc_http_reply_json(r, 503, json_pack("{s:s, s:s}", "status", "not_ready", "reason",
                                          why.msg[0] != '\0' ? why.msg : azc_status_name(rc)));
}

static void handle_metrics(azc_http_req *r, void *arg)
{
    azc_http *h = arg;
    struct evbuffer *b = evbuffer_new();

    if (b == NULL || azc_metrics_render(h->metrics, b) != AZC_OK) {
        if (b != NULL)
            evbuffer_free(b);
        azc_http_reply_error(r, 500, "internal", "cannot render metrics");
        return;
    }
    azc_http_reply_raw(r, 200, "text/plain; version=0.0.4", b);
    evbuffer_free(b);
}

/* ---- server ----------------------------------------------------------- */

azc_http *azc_http_new(struct event_base *base, const azc_http_options *opts, azc_log *log,
                       azc_metrics *metrics, azc_err *e)
{
    static const azc_http_route builtin[] = {
        { AZC_HTTP_GET, "/healthz", handle_healthz, 0, 0 },
        { AZC_HTTP_GET, "/readyz", handle_readyz, 0, 0 },
        { AZC_HTTP_GET, "/metrics", handle_metrics, 0, 0 },   /* last: only with a registry */
    };
    azc_http_options o = { 0 };
    azc_http *h;

    if (opts != NULL)
        o = *opts;
    if (base == NULL || o.timeout_secs < 0 || o.request_timeout_secs < 0) {
        azc_err_set(e, AZC_EINVAL, base == NULL ? "no event base"
                                                : "http timeouts must not be negative");
        return NULL;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    h->base = base;
    h->log = log;
    h->metrics = metrics;
    h->max_body = o.max_body_bytes != 0 ? o.max_body_bytes : AZC__HTTP_DEFAULT_MAX_BODY;
    h->reuse_port = o.reuse_port;
    h->request_timeout = o.request_timeout_secs != 0 ? o.request_timeout_secs
                                                     : AZC__HTTP_DEFAULT_REQUEST_TIMEOUT_SECS;
    h->max_connections = o.max_connections != 0 ? o.max_connections
                                                : AZC__HTTP_DEFAULT_MAX_CONNECTIONS;
    h->service = strdup(o.service != NULL ? o.service : "authz");
    h->http = evhttp_new(base);
    if (h->service == NULL || h->http == NULL) {
        azc_err_set(e, AZC_ENOMEM, "cannot create the http server");
        goto fail;
    }
    evhttp_set_gencb(h->http, dispatch, h);
    /* Every method reaches dispatch, which answers odd ones in JSON. */
    evhttp_set_allowed_methods(h->http, (ev_uint16_t)EVHTTP_ALL_METHODS);
    evhttp_set_max_headers_size(h->http, (ev_ssize_t)(o.max_header_bytes != 0
                                                          ? o.max_header_bytes
                                                          : AZC__HTTP_DEFAULT_MAX_HEADERS));
    evhttp_set_timeout(h->http, o.timeout_secs != 0 ? o.timeout_secs : AZC__HTTP_DEFAULT_TIMEOUT_SECS);
    /* Drain an oversized body before answering 413, or the client may get a
     * reset instead of the answer. */
    if (evhttp_set_flags(h->http, EVHTTP_SERVER_LINGERING_CLOSE) != 0) {
        azc_err_set(e, AZC_ERROR, "evhttp refuses lingering close");
        goto fail;
    }
    if (azc__http_conns_init(h, e) != AZC_OK)
        goto fail;
    h->peer_events = EV_READ;
    if (event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE)
        h->peer_events |= EV_CLOSED;
    if (metrics != NULL) {
        h->m_requests = azc_metrics_counter(
            metrics, "http_requests_total",
            "HTTP requests answered, by route pattern, method and status code.",
            (const char *const[]){ "service", "route", "method", "code", NULL });
        h->m_duration = azc_metrics_histogram(
            metrics, "http_request_duration_seconds",
            "Time from dispatch to reply of HTTP requests, by route pattern.",
            (const char *const[]){ "service", "route", NULL }, NULL, 0);
        if (h->m_requests == NULL || h->m_duration == NULL) {
            azc_err_set(e, AZC_EINVAL, "metrics registry holds conflicting http metrics");
            goto fail;
        }
    }
    h->server_max_body = h->max_body;
    evhttp_set_max_body_size(h->http, h->max_body > (size_t)EV_SSIZE_MAX
                                          ? EV_SSIZE_MAX : (ev_ssize_t)h->max_body);
    if (add_routes(h, builtin, metrics != NULL ? 3 : 2, h, 1, e) != AZC_OK)
        goto fail;
    return h;

fail:
    azc_http_free(h);
    return NULL;
}

void azc_http_free(azc_http *h)
{
    size_t i;

    if (h == NULL)
        return;
    while (h->pending != NULL)
        azc__http_abandon(h->pending);
    if (h->http != NULL)
        evhttp_free(h->http);
    azc__http_conns_free(h);
    for (i = 0; i < h->nroutes; i++)
        azc__http_route_clear(&h->routes[i]);
    free(h->routes);
    free(h->service);
    free(h);
}

void azc_http_set_ready_cb(azc_http *h, azc_http_ready_cb cb, void *arg)
{
    h->ready_cb = cb;
    h->ready_arg = arg;
}

void azc_http_set_auth_cb(azc_http *h, azc_http_auth_cb cb, void *arg)
{
    h->auth_cb = cb;
    h->auth_arg = arg;
}

int azc_http_bind(azc_http *h, const char *addr, int port, azc_err *e)
{
    struct addrinfo hints, *res = NULL;
    struct evconnlistener *lev;
    struct evhttp_bound_socket *bound;
    char portstr[8];
    int rc;

    if (port < 0 || port > 65535)
        return azc_err_set(e, AZC_EINVAL, "port %d out of range", port);
    if (addr == NULL)
        addr = "0.0.0.0";
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%d", port);
    rc = getaddrinfo(addr, portstr, &hints, &res);
    if (rc != 0)
        return azc_err_set(e, AZC_EINVAL, "cannot resolve listen address %s: %s", addr,
                           gai_strerror(rc));
    /* Our own listener: evhttp_bind_socket would listen with a backlog of
     * 128. LEV_OPT_REUSEABLE sets SO_REUSEADDR, so a restart does not wait
     * for TIME_WAIT sockets. With reuse_port, one server per thread binds
     * the same port and the kernel spreads connections over them. */
    lev = evconnlistener_new_bind(h->base, NULL, NULL,
                                  LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
                                      LEV_OPT_CLOSE_ON_EXEC |
                                      (h->reuse_port ? LEV_OPT_REUSEABLE_PORT : 0),
                                  LISTEN_BACKLOG, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (lev == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot listen on %s port %d: %s", addr, port,
                           strerror(errno));
    bound = evhttp_bind_listener(h->http, lev);   /* evhttp owns lev from here */
    if (bound == NULL) {
        evconnlistener_free(lev);
        return azc_err_set(e, AZC_ENOMEM, "cannot attach the listener");
    }
    if (h->first_bound == NULL)
        h->first_bound = bound;
    return AZC_OK;
}

int azc_http_bound_port(const azc_http *h)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (h == NULL || h->first_bound == NULL)
        return -1;
    if (getsockname(evhttp_bound_socket_get_fd(h->first_bound), (struct sockaddr *)&ss,
                    &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}
