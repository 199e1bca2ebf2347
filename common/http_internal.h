/*
 * Internals of the HTTP server helper, shared by its files and its unit
 * tests; services use common/http.h only.
 *
 *   http_route.c   route patterns, matching, percent-decoding, query
 *                  strings: pure functions on strings, no sockets
 *   http_conn.c    one record per connection: the connection cap, the
 *                  total receive deadline, and the close hook that the
 *                  deferred and streamed requests listen to
 *   http_defer.c   deferred requests and the disconnect watch
 *   http_reply.c   replies and streamed replies
 *   http_server.c  the server, request lifetime, dispatch and built-ins
 *
 * Names here start with azc__http_ (internal, not API).
 */
#ifndef AZC_HTTP_INTERNAL_H
#define AZC_HTTP_INTERNAL_H

#include <stddef.h>
#include <time.h>

#include <event2/http.h>
#include <event2/util.h>

#include "common/http.h"

#define AZC__HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define AZC__HTTP_DEFAULT_MAX_HEADERS (16 * 1024)
#define AZC__HTTP_DEFAULT_TIMEOUT_SECS 30
#define AZC__HTTP_DEFAULT_REQUEST_TIMEOUT_SECS 10
#define AZC__HTTP_DEFAULT_MAX_CONNECTIONS 4096
/* nginx's code for "client closed request": logged and counted, never sent. */
#define AZC__HTTP_STATUS_CLIENT_CLOSED 499

#define AZC__HTTP_ALL_METHODS (AZC_HTTP_GET | AZC_HTTP_POST | AZC_HTTP_PUT | AZC_HTTP_PATCH | \
                               AZC_HTTP_DELETE | AZC_HTTP_HEAD)
#define AZC__HTTP_ROUTE_FLAGS (AZC_ROUTE_JSON_BODY | AZC_ROUTE_PUBLIC | AZC_ROUTE_PREFIX | \
                               AZC_ROUTE_QUIET)

/* Access-log level of a route's answers: info; debug (the built-in
 * probes); debug below 500 (AZC_ROUTE_QUIET). */
#define AZC__HTTP_QUIET_NO 0
#define AZC__HTTP_QUIET_ALL 1
#define AZC__HTTP_QUIET_OK 2

/* Methods evhttp knows that no route may register: they get 404 or 405
 * from the dispatcher (CONNECT: 501), and names in logs and metrics. */
#define AZC__HTTP_OPTIONS 0x40u
#define AZC__HTTP_TRACE   0x80u
#define AZC__HTTP_CONNECT 0x100u

struct azc__http_segment {
    const char *text;   /* literal, or the parameter's name */
    int param;
};

struct azc__http_route {
    unsigned methods;
    unsigned flags;
    size_t max_body;    /* effective limit */
    int quiet;          /* AZC__HTTP_QUIET_* */
    azc_http_handler handler;
    void *arg;
    char *pattern;      /* as registered; the route label */
    char *buf;          /* segment texts point into it */
    struct azc__http_segment segs[AZC_HTTP_MAX_SEGMENTS];
    size_t nsegs;
};

struct azc__http_param {
    const char *name;
    const char *value;
};

/* One accepted connection (http_conn.c). */
typedef struct azc__http_conn azc__http_conn;

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
    struct azc__http_route *routes;
    size_t nroutes;
    size_t cap;
    azc_http_ready_cb ready_cb;
    void *ready_arg;
    azc_http_auth_cb auth_cb;
    void *auth_arg;
    struct evhttp_bound_socket *first_bound;
    azc_http_req *pending;      /* deferred requests being watched */
    short peer_events;
    int reuse_port;             /* SO_REUSEPORT: several loops share a port */
    int request_timeout;        /* seconds to receive one request */
    size_t max_connections;
    size_t nconns;              /* open connections, refused ones included */
    azc__http_conn *conns;      /* every connection record */
    azc__http_conn **by_fd;     /* connection of each fd, for dispatch */
    size_t nby_fd;
};

struct azc_http_req {
    azc_http *h;
    struct evhttp_request *ev;
    struct evhttp_connection *evcon;
    azc__http_conn *conn;       /* NULL if the connection has no record */
    unsigned method;
    const char *route;          /* route pattern or "unmatched"; outlives r */
    int quiet;
    char id[AZC_HTTP_REQUEST_ID_MAX + 1];
    struct timespec start;
    char *path_buf;             /* decoded segments, NUL-separated */
    struct azc__http_param params[AZC_HTTP_MAX_SEGMENTS];
    size_t nparams;
    char *query_buf;            /* decoded names and values */
    struct azc__http_param *query;
    size_t nquery;
    json_t *json;
    void *ctx;                  /* azc_http_req_set_ctx */
    void (*ctx_free)(void *);
    unsigned replied : 1;
    unsigned deferred : 1;
    unsigned in_handler : 1;
    unsigned closing : 1;       /* client gone: on_close running or done */
    unsigned watched : 1;       /* on h->pending, its connection's close goes to it */
    unsigned streaming : 1;     /* reply_start sent the head, reply_end pending */
    unsigned close_after : 1;   /* close the connection once the reply is out */
    int stream_status;
    azc_http_drain_cb on_drain;
    struct event *drain_ev;     /* calls on_drain when evhttp will not */
    azc_http_close_cb on_close;
    void *close_arg;
    struct event *peer_ev;
    azc_http_req *prev;
    azc_http_req *next;
};

/* ---- http_route.c ------------------------------------------------------ */

int azc__http_pct_decode(const char *s, size_t n, char *out, int plus, size_t *outlen);
int azc__http_is_token(const char *s);
int azc__http_valid_request_id(const char *s);
int azc__http_is_json_media_type(const char *ct);
unsigned azc__http_method_flag(enum evhttp_cmd_type t);

/* Parses `pattern` into rt (its strings are rt's own: free with
 * azc__http_route_clear, also after a failure). */
int azc__http_route_parse(struct azc__http_route *rt, const char *pattern,
                          azc_err *e) AZC_WARN_UNUSED;
void azc__http_route_clear(struct azc__http_route *rt);
int azc__http_route_matches(const struct azc__http_route *rt, char *const *segs, size_t nsegs);

/*
 * Splits an absolute path into segments, each percent-decoded on its own
 * into *buf (malloc'd, the caller frees it, also on failure); segs[i]
 * point into it. "/" has no segment; "/a/" has "a" and "". AZC_ETOOBIG:
 * more than AZC_HTTP_MAX_SEGMENTS; AZC_EINVAL: not absolute, a bad
 * escape, %00, or a "." / ".." segment.
 */
int azc__http_split_path(const char *path, char **buf, char **segs, size_t *nsegs,
                         azc_err *e) AZC_WARN_UNUSED;

/*
 * key=value pairs joined by '&', '+' and %XX decoded in both; *buf and
 * *pairs are malloc'd (the caller frees both, also on failure).
 */
int azc__http_parse_query(const char *q, char **buf, struct azc__http_param **pairs,
                          size_t *n, azc_err *e) AZC_WARN_UNUSED;

/*
 * The first of routes[0..n) whose pattern matches segs and whose methods
 * include `method` (HEAD is served by GET routes). NULL when none does;
 * then *first is the first route matching the path with other methods
 * (NULL: no route has the path) and *allowed the union of their methods.
 */
const struct azc__http_route *azc__http_route_find(const struct azc__http_route *routes,
                                                   size_t n, char *const *segs, size_t nsegs,
                                                   unsigned method,
                                                   const struct azc__http_route **first,
                                                   unsigned *allowed);

/* "GET, HEAD, PUT" for the Allow header, in a fixed order; GET adds HEAD. */
void azc__http_allow_list(unsigned methods, char *out, size_t len);

/*
 * Request framing (RFC 9112 section 6): AZC_OK, or AZC_EINVAL with the
 * reason for two Content-Length values that differ or are not a number,
 * Content-Length with Transfer-Encoding, a Transfer-Encoding other than a
 * single "chunked", or a body on a method evhttp reads no body for (HEAD,
 * TRACE): evhttp would take the first value, or leave the body to be read
 * as the next request. `body_read` says whether evhttp reads a body for
 * the method.
 */
int azc__http_check_framing(const struct evkeyvalq *headers, int body_read, azc_err *e);

/* ---- http_conn.c -------------------------------------------------------- */

/* Installs the per-connection hooks on h->http (bevcb). */
int azc__http_conns_init(azc_http *h, azc_err *e);
/* Frees the records left after evhttp_free. */
void azc__http_conns_free(azc_http *h);
/* The record of r's connection, or NULL; marks it busy (request read). */
azc__http_conn *azc__http_conn_request_begin(azc_http *h, struct evhttp_connection *evcon);
/* r's reply is done: the connection reads its next request. */
void azc__http_conn_request_end(azc__http_conn *c);
/* While set, the connection's close calls cb(r) before the record goes
 * (a deferred or streamed request); NULL cb clears it. */
void azc__http_conn_watch(azc__http_conn *c, void (*cb)(azc_http_req *r), azc_http_req *r);
/* Close the connection once the reply in flight is written. */
void azc__http_conn_close_after_reply(azc__http_conn *c, struct evhttp_request *ev);

/* ---- http_defer.c ------------------------------------------------------- */

void azc__http_unwatch(azc_http_req *r);
/* The client is gone (or the server is going away): on_close, a 499
 * record, and r freed. The caller deals with the connection. */
void azc__http_abandon(azc_http_req *r);

/* ---- http_reply.c ------------------------------------------------------- */

void azc__http_set_header(azc_http_req *r, const char *name, const char *value);
void azc__http_send_internal_error(azc_http_req *r);

/* ---- http_server.c ------------------------------------------------------ */

void azc__http_req_free(azc_http_req *r);
void azc__http_access_record(azc_http_req *r, int status);

#endif
