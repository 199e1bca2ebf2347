/*
 * HTTP server helper over evhttp; see http.h for the contract.
 *
 * evhttp hands every request to one generic callback (dispatch). It
 * resolves the route on the percent-decoded path, runs the checks that cut
 * across handlers (405, 413, query string, 415, JSON body), then calls the
 * handler. An azc_http_req wraps the evhttp request for exactly as long as
 * evhttp keeps it: until the reply is queued, or until the connection dies
 * under a deferred request.
 *
 * Deferred requests need their own disconnect detection: once evhttp has
 * read a request it stops reading the socket, so it never notices a client
 * that leaves while the request waits (libevent issue #666). We watch the
 * fd with a separate event for EV_READ (plus EV_CLOSED where the backend
 * reports it), and on a wake-up peek at the socket: EOF or an error means
 * the client is gone. EV_READ is needed because epoll reports a reset as
 * EPOLLERR, which libevent turns into EV_READ|EV_WRITE, never EV_CLOSED;
 * an EV_CLOSED-only watch would miss it and spin on the level-triggered
 * error. The connection's close callback is a safety net for any other
 * path on which evhttp frees the connection first.
 */
#include "common/http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>

#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_MAX_HEADERS (16 * 1024)
#define DEFAULT_TIMEOUT_SECS 30
#define LISTEN_BACKLOG 1024
/* nginx's code for "client closed request": logged and counted, never sent. */
#define STATUS_CLIENT_CLOSED 499

#define ALL_METHODS (AZC_HTTP_GET | AZC_HTTP_POST | AZC_HTTP_PUT | AZC_HTTP_PATCH | \
                     AZC_HTTP_DELETE | AZC_HTTP_HEAD)
#define ROUTE_FLAGS AZC_ROUTE_JSON_BODY

struct segment {
    const char *text;   /* literal, or the parameter's name */
    int param;
};

struct route {
    unsigned methods;
    unsigned flags;
    size_t max_body;    /* effective limit */
    int quiet;          /* built-in probe: access log at debug level */
    azc_http_handler handler;
    void *arg;
    char *pattern;      /* as registered; the route label */
    char *buf;          /* segment texts point into it */
    struct segment segs[AZC_HTTP_MAX_SEGMENTS];
    size_t nsegs;
};

struct azc_http {
    struct event_base *base;
    struct evhttp *http;
    azc_log *log;
    azc_metrics *metrics;
    azc_metric *m_requests;
    azc_metric *m_duration;
    int metrics_failed;         /* warn once, not per request */
    char *service;
    size_t max_body;            /* default route limit */
    size_t server_max_body;     /* evhttp's limit: the largest route limit */
    struct route *routes;
    size_t nroutes;
    size_t cap;
    azc_http_ready_cb ready_cb;
    void *ready_arg;
    struct evhttp_bound_socket *first_bound;
    azc_http_req *pending;      /* deferred requests being watched */
    short peer_events;
    int reuse_port;             /* SO_REUSEPORT: several loops share a port */
};

struct param {
    const char *name;
    const char *value;
};

struct azc_http_req {
    azc_http *h;
    struct evhttp_request *ev;
    struct evhttp_connection *evcon;
    unsigned method;
    const char *route;          /* route pattern or "unmatched"; outlives r */
    int quiet;
    char id[AZC_HTTP_REQUEST_ID_MAX + 1];
    struct timespec start;
    char *path_buf;             /* decoded segments, NUL-separated */
    struct param params[AZC_HTTP_MAX_SEGMENTS];
    size_t nparams;
    char *query_buf;            /* decoded names and values */
    struct param *query;
    size_t nquery;
    json_t *json;
    unsigned replied : 1;
    unsigned deferred : 1;
    unsigned in_handler : 1;
    unsigned closing : 1;       /* client gone: on_close running or done */
    unsigned watched : 1;       /* on h->pending, close callback installed */
    unsigned streaming : 1;     /* reply_start sent the head, reply_end pending */
    int stream_status;
    azc_http_drain_cb on_drain;
    struct event *drain_ev;     /* calls on_drain when evhttp will not */
    azc_http_close_cb on_close;
    void *close_arg;
    struct event *peer_ev;
    azc_http_req *prev;
    azc_http_req *next;
};

static void handle_healthz(azc_http_req *r, void *arg);
static void handle_readyz(azc_http_req *r, void *arg);
static void handle_metrics(azc_http_req *r, void *arg);

/* ---- small helpers ---------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Strict percent-decoding of s[0..n) into out (room for n bytes): every
 * '%' must start a two-hex-digit escape and none may decode to NUL, which
 * would silently cut the value short in C. evhttp_uridecode copies a bad
 * escape through unchanged, so it cannot tell us the input was malformed.
 */
static int pct_decode(const char *s, size_t n, char *out, int plus, size_t *outlen)
{
    size_t i, j = 0;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c == '%') {
            int hi, lo;

            if (n - i < 3)
                return -1;
            hi = hex_value(s[i + 1]);
            lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        out[j++] = c;
    }
    *outlen = j;
    return 0;
}

static int is_ident(const char *s)
{
    size_t i;

    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* RFC 9110 token. */
static int is_token(const char *s)
{
    size_t i;

    if (s == NULL || s[0] == '\0')
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (strchr("!#$%&'*+-.^_`|~", c) == NULL)
            return 0;
    }
    return 1;
}

static int valid_request_id(const char *s)
{
    size_t i;

    if (s == NULL)
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];

        if (i == AZC_HTTP_REQUEST_ID_MAX)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return i > 0;
}

/* "application/json", any case, optionally followed by parameters. */
static int is_json_media_type(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;

    if (ct == NULL)
        return 0;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    ct += n;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

static unsigned method_flag(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return AZC_HTTP_GET;
    case EVHTTP_REQ_POST: return AZC_HTTP_POST;
    case EVHTTP_REQ_PUT: return AZC_HTTP_PUT;
    case EVHTTP_REQ_PATCH: return AZC_HTTP_PATCH;
    case EVHTTP_REQ_DELETE: return AZC_HTTP_DELETE;
    case EVHTTP_REQ_HEAD: return AZC_HTTP_HEAD;
    default: return 0;
    }
}

const char *azc_http_method_name(unsigned method)
{
    switch (method) {
    case AZC_HTTP_GET: return "GET";
    case AZC_HTTP_POST: return "POST";
    case AZC_HTTP_PUT: return "PUT";
    case AZC_HTTP_PATCH: return "PATCH";
    case AZC_HTTP_DELETE: return "DELETE";
    case AZC_HTTP_HEAD: return "HEAD";
    default: return "UNKNOWN";
    }
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* ---- routes ----------------------------------------------------------- */

static void route_clear(struct route *rt)
{
    free(rt->pattern);
    free(rt->buf);
}

static int route_parse(struct route *rt, const char *pattern, azc_err *e)
{
    char *p;
    size_t n = 0, i;

    if (pattern == NULL || pattern[0] != '/')
        return azc_err_set(e, AZC_EINVAL, "route pattern \"%s\" must start with '/'",
                           pattern != NULL ? pattern : "");
    rt->pattern = strdup(pattern);
    rt->buf = strdup(pattern + 1);
    if (rt->pattern == NULL || rt->buf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    rt->nsegs = 0;
    if (pattern[1] == '\0')
        return AZC_OK;
    for (p = rt->buf;;) {
        char *slash = strchr(p, '/');
        size_t len;

        if (slash != NULL)
            *slash = '\0';
        len = strlen(p);
        if (n == AZC_HTTP_MAX_SEGMENTS)
            return azc_err_set(e, AZC_EINVAL, "route pattern \"%s\" has more than %d segments",
                               pattern, AZC_HTTP_MAX_SEGMENTS);
        if (len == 0)
            return azc_err_set(e, AZC_EINVAL, "route pattern \"%s\" has an empty segment",
                               pattern);
        if (p[0] == '{') {
            if (p[len - 1] != '}')
                return azc_err_set(e, AZC_EINVAL, "route pattern \"%s\": unclosed parameter",
                                   pattern);
            p[len - 1] = '\0';
            p++;
            if (!is_ident(p))
                return azc_err_set(e, AZC_EINVAL,
                                   "route pattern \"%s\": bad parameter name \"%s\"", pattern, p);
            for (i = 0; i < n; i++) {
                if (rt->segs[i].param && strcmp(rt->segs[i].text, p) == 0)
                    return azc_err_set(e, AZC_EINVAL,
                                       "route pattern \"%s\": parameter \"%s\" repeated",
                                       pattern, p);
            }
            rt->segs[n].param = 1;
        } else if (strpbrk(p, "{}%") != NULL) {
            return azc_err_set(e, AZC_EINVAL,
                               "route pattern \"%s\": '{', '}' or '%%' inside a literal segment",
                               pattern);
        }
        rt->segs[n++].text = p;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    rt->nsegs = n;
    return AZC_OK;
}

static int add_routes(azc_http *h, const azc_http_route *routes, size_t n, void *arg,
                      int quiet, azc_err *e)
{
    struct route *tmp;
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
        struct route *rt = &tmp[i];

        if (in->methods == 0 || (in->methods & ~ALL_METHODS) != 0)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": bad methods 0x%x",
                             in->pattern != NULL ? in->pattern : "", in->methods);
        else if (in->handler == NULL)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": no handler",
                             in->pattern != NULL ? in->pattern : "");
        else if ((in->flags & ~ROUTE_FLAGS) != 0)
            rc = azc_err_set(e, AZC_EINVAL, "route \"%s\": unknown flags 0x%x",
                             in->pattern != NULL ? in->pattern : "", in->flags);
        else
            rc = route_parse(rt, in->pattern, e);
        rt->methods = in->methods;
        rt->flags = in->flags;
        rt->max_body = in->max_body != 0 ? in->max_body : h->max_body;
        rt->quiet = quiet;
        rt->handler = in->handler;
        rt->arg = arg;
        if (rt->max_body > largest)
            largest = rt->max_body;
    }
    if (rc == AZC_OK && h->nroutes + n > h->cap) {
        size_t cap = h->cap == 0 ? 16 : h->cap;
        struct route *grown;

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
            route_clear(&tmp[i]);
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

static int route_matches(const struct route *rt, char *const *segs, size_t nsegs)
{
    size_t i;

    if (rt->nsegs != nsegs)
        return 0;
    for (i = 0; i < nsegs; i++) {
        if (rt->segs[i].param ? segs[i][0] == '\0' : strcmp(rt->segs[i].text, segs[i]) != 0)
            return 0;
    }
    return 1;
}

/* ---- request lifetime ------------------------------------------------- */

static void unwatch(azc_http_req *r)
{
    if (r->peer_ev != NULL) {
        event_free(r->peer_ev);
        r->peer_ev = NULL;
    }
    if (!r->watched)
        return;
    evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        r->h->pending = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->watched = 0;
}

static void req_free(azc_http_req *r)
{
    unwatch(r);
    if (r->drain_ev != NULL)
        event_free(r->drain_ev);
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
    r->method = method_flag(evhttp_request_get_command(ev));
    r->route = "unmatched";
    id = evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id");
    if (valid_request_id(id)) {
        snprintf(r->id, sizeof r->id, "%s", id);
    } else if (azc_request_id_new(r->id) != AZC_OK) {
        free(r);
        return NULL;
    }
    return r;
}

/* One access-log line and the two built-in metrics for a finished request. */
static void access_record(azc_http_req *r, int status)
{
    azc_http *h = r->h;
    double secs = seconds_since(&r->start);
    azc_log_level lvl = r->quiet ? AZC_LOG_DEBUG : AZC_LOG_INFO;
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
                      status == STATUS_CLIENT_CLOSED ? "client closed request" : "request");
        json_decref(f);
    }
}

/*
 * The client of a deferred request is gone (or the server is going away):
 * tell the owner, record it, free r. The caller deals with the connection.
 */
static void abandon(azc_http_req *r)
{
    r->closing = 1;
    unwatch(r);
    if (r->on_close != NULL)
        r->on_close(r, r->close_arg);
    access_record(r, STATUS_CLIENT_CLOSED);
    req_free(r);
}

static void on_peer_event(evutil_socket_t fd, short what, void *arg)
{
    azc_http_req *r = arg;
    struct evhttp_connection *evcon = r->evcon;

    if (!(what & EV_CLOSED)) {
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

        if (n > 0) {
            /* A pipelined request: the client is alive, and watching
             * further would wake us for the same bytes again and again. */
            event_free(r->peer_ev);
            r->peer_ev = NULL;
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (event_add(r->peer_ev, NULL) != 0) {
                azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id,
                             "cannot re-arm the disconnect watch of a deferred request");
                event_free(r->peer_ev);
                r->peer_ev = NULL;
            }
            return;
        }
    }
    abandon(r);
    evhttp_connection_free(evcon);
}

/* evhttp is freeing the connection of a watched request by itself. */
static void on_conn_freed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    abandon(arg);
}

int azc_http_req_defer(azc_http_req *r, azc_http_close_cb on_close, void *arg)
{
    struct bufferevent *bev;
    evutil_socket_t fd;

    if (r->replied || r->closing)
        return AZC_ECONFLICT;
    r->on_close = on_close;
    r->close_arg = arg;
    if (r->deferred)
        return AZC_OK;
    bev = evhttp_connection_get_bufferevent(r->evcon);
    fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return AZC_ERROR;
    /* Not persistent: each wake-up decides whether to watch on. */
    r->peer_ev = event_new(r->h->base, fd, r->h->peer_events, on_peer_event, r);
    if (r->peer_ev == NULL)
        return AZC_ERROR;
    if (event_add(r->peer_ev, NULL) != 0) {
        event_free(r->peer_ev);
        r->peer_ev = NULL;
        return AZC_ERROR;
    }
    evhttp_connection_set_closecb(r->evcon, on_conn_freed, r);
    r->next = r->h->pending;
    if (r->next != NULL)
        r->next->prev = r;
    r->h->pending = r;
    r->watched = 1;
    r->deferred = 1;
    return AZC_OK;
}

/* ---- replies ---------------------------------------------------------- */

static int reply_allowed(azc_http_req *r, int status)
{
    if (r->closing) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id,
                     "reply %d to %s after its client went away ignored", status, r->route);
        return 0;
    }
    if (r->replied) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id,
                     "second reply %d to %s ignored (first was %d)", status, r->route,
                     evhttp_request_get_response_code(r->ev));
        return 0;
    }
    return 1;
}

static void set_header(azc_http_req *r, const char *name, const char *value)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);

    evhttp_remove_header(out, name);
    if (evhttp_add_header(out, name, value) != 0)
        azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id, "cannot set response header %s", name);
}

/* Queues the reply whose body is already in the output buffer. */
static void send_response(azc_http_req *r, int status)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);
    struct evbuffer *body = evhttp_request_get_output_buffer(r->ev);
    size_t len = evbuffer_get_length(body);

    unwatch(r);
    set_header(r, "X-Request-Id", r->id);
    if (evhttp_find_header(out, "Content-Type") == NULL)
        set_header(r, "Content-Type", "application/json");
    /* evhttp writes whatever is in the output buffer even where HTTP
     * forbids a body, so drop it here. */
    if (r->method == AZC_HTTP_HEAD || status == 204 || status == 304) {
        if (r->method == AZC_HTTP_HEAD && status != 204 && status != 304) {
            char n[32];

            snprintf(n, sizeof n, "%zu", len);
            set_header(r, "Content-Length", n);
        }
        if (evbuffer_drain(body, len) != 0)
            azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id, "cannot drop a HEAD body");
    }
    r->replied = 1;
    evhttp_send_reply(r->ev, status, NULL, NULL);
    access_record(r, status);
    if (r->deferred && !r->in_handler)
        req_free(r);
}

/* Last resort: 500 with a fixed JSON error, or an empty body if even that
 * cannot be built. */
static void send_internal_error(azc_http_req *r)
{
    struct evbuffer *body = evhttp_request_get_output_buffer(r->ev);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", "internal",
                          "message", "internal error");
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (evbuffer_drain(body, evbuffer_get_length(body)) != 0 ||
        (text != NULL && evbuffer_add(body, text, strlen(text)) != 0))
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "cannot write the 500 body");
    free(text);
    set_header(r, "Content-Type", "application/json");
    send_response(r, 500);
}

/* Encodes body (stolen) into the output buffer and sends it. */
static void send_json(azc_http_req *r, int status, json_t *body)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(r->ev);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    int rc;

    json_decref(body);
    if (text == NULL) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id,
                     "%s: no response body could be encoded (status %d)", r->route, status);
        send_internal_error(r);
        return;
    }
    rc = evbuffer_add(out, text, strlen(text));
    free(text);
    if (rc != 0) {
        send_internal_error(r);
        return;
    }
    send_response(r, status);
}

void azc_http_reply_json(azc_http_req *r, int status, json_t *body)
{
    if (!reply_allowed(r, status)) {
        json_decref(body);
        return;
    }
    if (status < 200 || status > 599) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "%s: bad status %d", r->route, status);
        json_decref(body);
        send_internal_error(r);
        return;
    }
    send_json(r, status, body);
}

static void vreply_error(azc_http_req *r, int status, const char *code, const char *fmt,
                         va_list ap)
{
    char msg[512];
    json_t *body;

    if (!reply_allowed(r, status))
        return;
    if (status < 400 || status > 599 || code == NULL) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "%s: bad error status %d", r->route,
                     status);
        send_internal_error(r);
        return;
    }
    vsnprintf(msg, sizeof msg, fmt, ap);
    body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    if (body == NULL)   /* the message held invalid UTF-8 (user input) */
        body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message",
                         "(message not valid utf-8)");
    set_header(r, "Content-Type", "application/json");
    send_json(r, status, body);
}

void azc_http_reply_error(azc_http_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreply_error(r, status, code, fmt, ap);
    va_end(ap);
}

void azc_http_reply_raw(azc_http_req *r, int status, const char *content_type,
                        struct evbuffer *buf)
{
    struct evbuffer *out;

    if (!reply_allowed(r, status))
        return;
    if (status < 200 || status > 599) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "%s: bad status %d", r->route, status);
        send_internal_error(r);
        return;
    }
    out = evhttp_request_get_output_buffer(r->ev);
    if (buf != NULL && evbuffer_add_buffer(out, buf) != 0) {
        send_internal_error(r);
        return;
    }
    if (content_type != NULL)
        set_header(r, "Content-Type", content_type);
    send_response(r, status);
}

/* ---- streamed replies --------------------------------------------------
 *
 * evhttp frees the connection (and the request with it) when a write to a
 * departed client fails; its close callback is how the producer learns of
 * it. evhttp calls the chunk callback only for a chunk it actually
 * queues, so for HEAD requests and empty chunks the helper calls on_drain
 * itself from drain_ev, to keep the producer going to its reply_end.
 */

static void on_stream_conn_freed(struct evhttp_connection *evcon, void *arg)
{
    azc_http_req *r = arg;

    (void)evcon;
    r->closing = 1;
    if (r->on_close != NULL)
        r->on_close(r, r->close_arg);
    access_record(r, STATUS_CLIENT_CLOSED);
    req_free(r);
}

static void on_chunk_written(struct evhttp_connection *evcon, void *arg)
{
    azc_http_req *r = arg;

    (void)evcon;
    if (r->streaming && !r->closing && r->on_drain != NULL)
        r->on_drain(r, r->close_arg);
}

static void on_drain_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    on_chunk_written(NULL, arg);
}

int azc_http_reply_start(azc_http_req *r, int status, const char *content_type,
                         azc_http_drain_cb on_drain, azc_http_close_cb on_close, void *arg)
{
    if (!reply_allowed(r, status))
        return AZC_ECONFLICT;
    if (status < 200 || status > 599 || status == 204 || status == 304 || on_drain == NULL) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "%s: bad stream (status %d)", r->route,
                     status);
        send_internal_error(r);
        return AZC_EINVAL;
    }
    r->drain_ev = event_new(r->h->base, -1, 0, on_drain_event, r);
    if (r->drain_ev == NULL) {
        send_internal_error(r);
        return AZC_ENOMEM;
    }
    /* A deferred request is no longer watched for reads: from here on a
     * departed client shows as a failed write. */
    unwatch(r);
    r->on_drain = on_drain;
    r->on_close = on_close;
    r->close_arg = arg;
    set_header(r, "X-Request-Id", r->id);
    set_header(r, "Content-Type", content_type != NULL ? content_type : "application/json");
    r->replied = 1;
    r->streaming = 1;
    r->stream_status = status;
    evhttp_connection_set_closecb(r->evcon, on_stream_conn_freed, r);
    evhttp_send_reply_start(r->ev, status, NULL);
    return AZC_OK;
}

int azc_http_reply_chunk(azc_http_req *r, struct evbuffer *buf)
{
    if (!r->streaming || r->closing)
        return AZC_ECONFLICT;
    if (r->method == AZC_HTTP_HEAD || evbuffer_get_length(buf) == 0) {
        if (evbuffer_drain(buf, evbuffer_get_length(buf)) != 0)
            return AZC_ERROR;
        event_active(r->drain_ev, EV_TIMEOUT, 0);
        return AZC_OK;
    }
    evhttp_send_reply_chunk_with_cb(r->ev, buf, on_chunk_written, r);
    return AZC_OK;
}

void azc_http_reply_end(azc_http_req *r)
{
    if (!r->streaming || r->closing) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "reply_end without a stream ignored");
        return;
    }
    r->streaming = 0;
    evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    event_del(r->drain_ev);
    evhttp_send_reply_end(r->ev);
    access_record(r, r->stream_status);
    if (!r->in_handler)
        req_free(r);
}

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

int azc_http_req_add_header(azc_http_req *r, const char *name, const char *value)
{
    if (r->replied || r->closing) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "header %s added after the reply",
                     name != NULL ? name : "");
        return AZC_ECONFLICT;
    }
    if (!is_token(name) || value == NULL || strpbrk(value, "\r\n") != NULL ||
        strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
        strcasecmp(name, "X-Request-Id") == 0) {
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "response header refused: %s",
                     is_token(name) ? name : "(invalid name)");
        return AZC_EINVAL;
    }
    if (strcasecmp(name, "Content-Type") == 0)
        evhttp_remove_header(evhttp_request_get_output_headers(r->ev), "Content-Type");
    if (evhttp_add_header(evhttp_request_get_output_headers(r->ev), name, value) != 0)
        return AZC_ENOMEM;
    return AZC_OK;
}

/* ---- dispatch --------------------------------------------------------- */

/*
 * Splits the raw path into segments decoded one by one into r->path_buf.
 * "/" has no segment; "/a/" has "a" and "". AZC_ETOOBIG: more segments than
 * any route can have.
 */
static int split_path(azc_http_req *r, const char *path, char **segs, size_t *nsegs,
                      azc_err *e)
{
    const char *p;
    char *out;
    size_t n = 0;

    *nsegs = 0;
    if (path == NULL || path[0] != '/')
        return azc_err_set(e, AZC_EINVAL, "path must start with '/'");
    if (path[1] == '\0')
        return AZC_OK;
    /* Decoding never grows a segment, and each '/' makes room for a NUL. */
    r->path_buf = malloc(strlen(path) + 1);
    if (r->path_buf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    out = r->path_buf;
    for (p = path + 1;; ) {
        size_t seglen = strcspn(p, "/"), dlen;

        if (n == AZC_HTTP_MAX_SEGMENTS)
            return AZC_ETOOBIG;
        if (pct_decode(p, seglen, out, 0, &dlen) != 0)
            return azc_err_set(e, AZC_EINVAL, "invalid percent-encoding in path");
        out[dlen] = '\0';
        if (strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
            return azc_err_set(e, AZC_EINVAL, "dot segment in path");
        segs[n++] = out;
        out += dlen + 1;
        if (p[seglen] == '\0')
            break;
        p += seglen + 1;
    }
    *nsegs = n;
    return AZC_OK;
}

/*
 * key=value pairs joined by '&', '+' and %XX decoded in both. Not
 * evhttp_parse_query_str: it leaves keys encoded and lets bad escapes
 * through.
 */
static int parse_query(azc_http_req *r, const char *q, azc_err *e)
{
    size_t n = 1, i, len;
    const char *p;
    char *out;

    if (q == NULL || q[0] == '\0')
        return AZC_OK;
    len = strlen(q);
    for (p = q; *p != '\0'; p++)
        n += *p == '&';
    r->query = calloc(n, sizeof *r->query);
    /* Each "k=v" decodes into at most its length + 1 ("k\0v\0"); the n - 1
     * '&' cover all but one byte. */
    r->query_buf = malloc(len + 1);
    if (r->query == NULL || r->query_buf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    out = r->query_buf;
    for (i = 0, p = q; i < n; i++) {
        size_t plen = strcspn(p, "&"), klen, dlen;
        const char *eq = memchr(p, '=', plen);

        if (eq == NULL || eq == p)
            return azc_err_set(e, AZC_EINVAL,
                               "malformed query string: expected name=value pairs joined by '&'");
        klen = (size_t)(eq - p);
        if (pct_decode(p, klen, out, 1, &dlen) != 0)
            return azc_err_set(e, AZC_EINVAL, "invalid percent-encoding in query string");
        out[dlen] = '\0';
        r->query[i].name = out;
        out += dlen + 1;
        if (pct_decode(eq + 1, plen - klen - 1, out, 1, &dlen) != 0)
            return azc_err_set(e, AZC_EINVAL, "invalid percent-encoding in query string");
        out[dlen] = '\0';
        r->query[i].value = out;
        out += dlen + 1;
        r->nquery = i + 1;
        p += plen;
        if (*p == '&')
            p++;
    }
    return AZC_OK;
}

static void set_allow_header(azc_http_req *r, unsigned methods)
{
    static const unsigned order[] = { AZC_HTTP_GET, AZC_HTTP_HEAD, AZC_HTTP_POST,
                                      AZC_HTTP_PUT, AZC_HTTP_PATCH, AZC_HTTP_DELETE };
    char allow[64];
    size_t i, len = 0;

    allow[0] = '\0';
    if (methods & AZC_HTTP_GET)
        methods |= AZC_HTTP_HEAD;
    /* At most 6 names of up to 6 characters plus separators: fits. */
    for (i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (methods & order[i])
            len += (size_t)snprintf(allow + len, sizeof allow - len, "%s%s",
                                    len > 0 ? ", " : "", azc_http_method_name(order[i]));
    }
    set_header(r, "Allow", allow);
}

/* Finds the route for r, filling its parameters, or replies 400/404/405. */
static const struct route *resolve_or_reply(azc_http_req *r)
{
    azc_http *h = r->h;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->ev);
    char *segs[AZC_HTTP_MAX_SEGMENTS];
    const struct route *found = NULL, *first = NULL;
    unsigned want = r->method, allowed = 0;
    size_t nsegs, i;
    azc_err e;
    int rc;

    azc_err_clear(&e);
    rc = split_path(r, uri != NULL ? evhttp_uri_get_path(uri) : NULL, segs, &nsegs, &e);
    if (rc == AZC_ETOOBIG) {
        azc_http_reply_error(r, 404, "not_found", "not found");
        return NULL;
    }
    if (rc != AZC_OK) {
        if (rc == AZC_ENOMEM)
            send_internal_error(r);
        else
            azc_http_reply_error(r, 400, "invalid_path", "%s", e.msg);
        return NULL;
    }
    if (want == AZC_HTTP_HEAD)
        want |= AZC_HTTP_GET;
    for (i = 0; i < h->nroutes; i++) {
        const struct route *rt = &h->routes[i];

        if (!route_matches(rt, segs, nsegs))
            continue;
        if (first == NULL)
            first = rt;
        if (rt->methods & want) {
            found = rt;
            break;
        }
        allowed |= rt->methods;
    }
    if (found == NULL) {
        if (first == NULL) {
            azc_http_reply_error(r, 404, "not_found", "not found");
        } else {
            r->route = first->pattern;
            set_allow_header(r, allowed);
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

/* Body limit, query string, media type and JSON body; replies on failure. */
static int check_or_reply(azc_http_req *r, const struct route *rt)
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
    rc = parse_query(r, evhttp_uri_get_query(uri), &e);
    if (rc != AZC_OK) {
        if (rc == AZC_ENOMEM)
            send_internal_error(r);
        else
            azc_http_reply_error(r, 400, "invalid_query", "%s", e.msg);
        return -1;
    }
    if (rt->flags & AZC_ROUTE_JSON_BODY) {
        json_error_t jerr;
        const char *body;

        if (!is_json_media_type(azc_http_req_header(r, "Content-Type"))) {
            azc_http_reply_error(r, 415, "unsupported_media_type",
                                 "content-type must be application/json");
            return -1;
        }
        body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
        if (body == NULL) {
            send_internal_error(r);
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
    const struct route *rt;

    if (r == NULL) {
        azc_logf(h->log, AZC_LOG_ERROR, "out of memory for a request");
        evhttp_send_error(ev, 500, NULL);
        return;
    }
    rt = resolve_or_reply(r);
    if (rt != NULL && check_or_reply(r, rt) == 0) {
        azc_http_handler handler = rt->handler;   /* rt may move if a handler adds routes */
        void *harg = rt->arg;

        r->in_handler = 1;
        handler(r, harg);
        r->in_handler = 0;
        if (!r->replied && !r->deferred) {
            azc_log_reqf(h->log, AZC_LOG_ERROR, r->id, "handler for %s returned without a reply",
                         r->route);
            send_internal_error(r);
        }
    }
    /* A stream outlives its handler until reply_end. */
    if (r->replied && !r->streaming)
        req_free(r);
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
    if (base == NULL || o.timeout_secs < 0) {
        azc_err_set(e, AZC_EINVAL, base == NULL ? "no event base"
                                                : "http timeout must not be negative");
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
    h->max_body = o.max_body_bytes != 0 ? o.max_body_bytes : DEFAULT_MAX_BODY;
    h->reuse_port = o.reuse_port;
    h->service = strdup(o.service != NULL ? o.service : "authz");
    h->http = evhttp_new(base);
    if (h->service == NULL || h->http == NULL) {
        azc_err_set(e, AZC_ENOMEM, "cannot create the http server");
        goto fail;
    }
    evhttp_set_gencb(h->http, dispatch, h);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(h->http, (ev_ssize_t)(o.max_header_bytes != 0
                                                          ? o.max_header_bytes
                                                          : DEFAULT_MAX_HEADERS));
    evhttp_set_timeout(h->http, o.timeout_secs != 0 ? o.timeout_secs : DEFAULT_TIMEOUT_SECS);
    /* Drain an oversized body before answering 413, or the client may get a
     * reset instead of the answer. */
    if (evhttp_set_flags(h->http, EVHTTP_SERVER_LINGERING_CLOSE) != 0) {
        azc_err_set(e, AZC_ERROR, "evhttp refuses lingering close");
        goto fail;
    }
    /* TLS goes here: evhttp_set_bevcb(h->http, cb, ssl_ctx) with a callback
     * returning bufferevent_openssl_socket_new(..., BUFFEREVENT_SSL_ACCEPTING,
     * BEV_OPT_CLOSE_ON_FREE) and allow_dirty_shutdown set. It must never
     * return NULL: evhttp would then serve plaintext on the TLS port. */
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
        abandon(h->pending);
    if (h->http != NULL)
        evhttp_free(h->http);
    for (i = 0; i < h->nroutes; i++)
        route_clear(&h->routes[i]);
    free(h->routes);
    free(h->service);
    free(h);
}

void azc_http_set_ready_cb(azc_http *h, azc_http_ready_cb cb, void *arg)
{
    h->ready_cb = cb;
    h->ready_arg = arg;
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
