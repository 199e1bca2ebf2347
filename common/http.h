/*
 * The HTTP server helper every service uses, over libevent's evhttp.
 *
 * A service declares its routes in a table and registers it once:
 *
 *   static const azc_http_route routes[] = {
 *       { AZC_HTTP_GET, "/v1/teams/{id}", team_get, 0, 0 },
 *       { AZC_HTTP_POST, "/v1/teams", team_create, AZC_ROUTE_JSON_BODY, 64 * 1024 },
 *   };
 *   azc_http_add_routes(h, routes, 2, ctx);
 *
 * One dispatcher answers everything that cuts across handlers before any
 * handler runs, in this order, always with a JSON body
 * {"error":{"code","message"}}:
 *
 *   501 not_implemented       a method token evhttp does not know (TRACE is
 *                             known; lowercase "get" is not) or CONNECT;
 *                             the connection is closed
 *   400 invalid_request       ambiguous framing: two Content-Length values
 *                             that differ, Content-Length with
 *                             Transfer-Encoding, a Transfer-Encoding other
 *                             than "chunked", a body on HEAD or TRACE; the
 *                             connection is closed ("Connection: close"),
 *                             so bytes after it never run as a request
 *   400 invalid_path          bad percent-encoding, %00 or a "." / ".."
 *                             segment in the path, or a path that is not
 *                             absolute
 *   404 not_found             no route matches the path
 *   405 method_not_allowed    a route matches the path but not the method
 *                             (OPTIONS and TRACE included); the Allow
 *                             header lists the methods it has
 *   (auth callback)           azc_http_set_auth_cb: its 401/403 come
 *                             before every body check below
 *   413 payload_too_large     body over the route's limit
 *   400 invalid_query         query string that is not key=value pairs
 *                             joined by '&' with valid percent-encoding
 *   415 unsupported_media_type  JSON route, Content-Type not application/json
 *   400 invalid_json          JSON route, body not a JSON value (message
 *                             gives jansson's line and column)
 *
 * Connections: a request (line, headers, body) must arrive within
 * request_timeout_secs of its first byte, however slowly the bytes come
 * (the idle timeout restarts on each one), or the connection is closed
 * without an answer; beyond max_connections open connections a new one
 * gets a fixed 503 JSON answer and is closed.
 *
 * Paths: a pattern is literal segments and {name} parameters; a parameter
 * matches exactly one non-empty segment. Each segment is percent-decoded
 * on its own, so "%2F" inside a parameter is a slash in its value, never a
 * separator. Trailing slashes are not redirected: "/v1/teams/" ends with
 * an empty segment and is 404 when only "/v1/teams" exists (a redirect
 * would turn a client bug into an extra round trip and hide it). Routes
 * are tried in registration order and the first match wins, so list
 * "/v1/teams/me" before "/v1/teams/{id}". HEAD is served by GET routes:
 * the handler runs (azc_http_req_method says AZC_HTTP_HEAD), the helper
 * drops the body and sends its length as Content-Length.
 *
 * What evhttp answers by itself, before the dispatcher sees a request,
 * keeps evhttp's HTML body, "Connection: close", no X-Request-Id and no
 * metrics or access log (libevent 2.1 has no hook for it; evhttp_set_errorcb
 * came in 2.2), so these limits stay the library's:
 *   - a body over the largest limit of any route: 413 (the server limit is
 *     that maximum; bodies between a route's own limit and it get the JSON
 *     413 from the dispatcher), before the auth callback runs;
 *   - a request line plus headers over max_header_bytes, or a malformed
 *     request line, header or Content-Length (a list "5, 5", a chunked
 *     body evhttp cannot parse): 400.
 *
 * Every response the dispatcher or a handler sends has an X-Request-Id
 * header (the request's own if it is 1-64 characters of [A-Za-z0-9._-],
 * else a new random one) and Content-Type application/json unless the
 * handler chose another. Each request gets one access-log line (info; debug
 * for /healthz, /readyz and /metrics, and below 500 on AZC_ROUTE_QUIET
 * routes) and, when a registry is given, is
 * counted in http_requests_total{service,route,method,code} and
 * http_request_duration_seconds{service,route}; `route` is the pattern
 * ("unmatched" when none matched) so the label set stays bounded.
 *
 * Built in: GET /healthz (200 {"status":"ok"}), GET /readyz (see
 * azc_http_set_ready_cb), GET /metrics (the registry as Prometheus text;
 * absent, so 404, without a registry).
 *
 * Threads: evhttp is single-threaded; use one azc_http per event_base and
 * call everything here from that base's thread. The process must ignore
 * SIGPIPE (signal(SIGPIPE, SIG_IGN) in main): a write to a client that has
 * gone away would otherwise kill it.
 *
 * TLS: not yet. It will be an option that installs evhttp_set_bevcb with a
 * bufferevent_openssl_socket_new per connection (see azc_http_new).
 */
#ifndef AZC_HTTP_H
#define AZC_HTTP_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/log.h"
#include "common/metrics.h"

struct event_base;
struct evbuffer;

typedef struct azc_http azc_http;
/* One request, from dispatch until its reply (or until its client goes
 * away, for a deferred one). Owned by the helper. */
typedef struct azc_http_req azc_http_req;

/* Method bit flags for azc_http_route.methods and azc_http_req_method. */
#define AZC_HTTP_GET    0x01u
#define AZC_HTTP_POST   0x02u
#define AZC_HTTP_PUT    0x04u
#define AZC_HTTP_PATCH  0x08u
#define AZC_HTTP_DELETE 0x10u
#define AZC_HTTP_HEAD   0x20u

/* Route flags. JSON_BODY: the body must be a JSON value (any type, no
 * duplicate object keys) sent with Content-Type application/json
 * (parameters such as "; charset=utf-8" allowed); it is parsed before the
 * handler runs and available as azc_http_req_json. */
#define AZC_ROUTE_JSON_BODY 0x01u
/* PUBLIC: the auth callback (azc_http_set_auth_cb) does not run for this
 * route. The built-in /healthz, /readyz and /metrics are public. */
#define AZC_ROUTE_PUBLIC 0x02u
/* PREFIX: the pattern is a literal path prefix that matches itself and
 * every path below it ("/ext" covers "/ext" and "/ext/a/b"), on the raw
 * path, before the path and query checks: for a handler that judges the
 * request target itself (azc_http_req_target), like the gateway filter's
 * ext-authz endpoint, which must see "/a/%2F.." as sent. Tried before the
 * other routes; no parameters. */
#define AZC_ROUTE_PREFIX 0x04u
/* QUIET: the access-log line of an answer below 500 is written at debug
 * level, not info; 5xx answers and clients that closed stay at info. For
 * a route answered tens of thousands of times a second whose outcomes are
 * logged elsewhere (the gateway filter's decisions: the gateway's own
 * access log has each request and its status). Metrics still count every
 * request. */
#define AZC_ROUTE_QUIET 0x08u

#define AZC_HTTP_MAX_SEGMENTS 32     /* path segments in a pattern */
#define AZC_HTTP_REQUEST_ID_MAX 64   /* accepted X-Request-Id length */

/*
 * A handler must answer with exactly one azc_http_reply_* call, either
 * before it returns or later after azc_http_req_defer. Returning without
 * either is a bug the dispatcher answers with 500. `arg` is the one given
 * to azc_http_add_routes.
 */
typedef void (*azc_http_handler)(azc_http_req *r, void *arg);

/* Called when the client of a deferred request has gone away (or the
 * server is being freed). r is freed when it returns: drop every
 * reference to it and do not reply. */
typedef void (*azc_http_close_cb)(azc_http_req *r, void *arg);

/* Readiness: AZC_OK when ready; otherwise a status with `why` filled
 * (its message becomes the "reason"). */
typedef int (*azc_http_ready_cb)(void *arg, azc_err *why);

/*
 * Authentication, run by the dispatcher after routing and before the body
 * checks (413 over the route's limit, query string, 415, JSON body), for
 * every route without AZC_ROUTE_PUBLIC: an anonymous client learns
 * nothing from those answers and costs no parsing. `route_arg` is the arg
 * given to azc_http_add_routes for the matched route, `arg` the one given
 * to azc_http_set_auth_cb. Return AZC_OK to go on; any other status must
 * come with a reply (401, 403, 503 ...), and one that forgot to reply is
 * answered 500: a failed callback never lets the request through. It may
 * keep what it learnt on r with azc_http_req_set_ctx.
 */
typedef int (*azc_http_auth_cb)(azc_http_req *r, void *route_arg, void *arg);

typedef struct azc_http_route {
    unsigned methods;        /* AZC_HTTP_* flags; GET implies HEAD */
    const char *pattern;     /* "/v1/teams/{id}/members/{user_id}"; copied */
    azc_http_handler handler;
    unsigned flags;          /* AZC_ROUTE_* */
    size_t max_body;         /* bytes; 0 = the server's max_body_bytes */
} azc_http_route;

/* Zero (or a NULL options pointer) selects each default. */
typedef struct azc_http_options {
    size_t max_body_bytes;   /* default body limit: 1 MiB */
    size_t max_header_bytes; /* request line + headers: 16 KiB */
    int timeout_secs;        /* idle read/write timeout: 30 s; a deferred
                                request is not subject to it */
    const char *service;     /* "service" label and log field: "authz"; copied */
    int reuse_port;          /* bind with SO_REUSEPORT, so one server per
                                thread (each on its own event_base) can
                                share a port; the kernel balances accepts */
    int request_timeout_secs; /* total time to receive one request (line,
                                headers and body), counted from its first
                                byte (from the accept for the first one):
                                10 s; the connection is closed without an
                                answer past it, however slowly bytes come */
    size_t max_connections;  /* open connections of this server: 4096;
                                beyond it a new connection gets a fixed
                                503 JSON answer and is closed at once */
} azc_http_options;

/*
 * New server on `base` (borrowed), with the built-in routes. `log` and
 * `metrics` are borrowed, may be NULL, and must outlive the server.
 * Returns NULL with e filled on failure (including a registry that already
 * holds http_requests_total or http_request_duration_seconds with other
 * labels). Free with azc_http_free.
 */
azc_http *azc_http_new(struct event_base *base, const azc_http_options *opts, azc_log *log,
                       azc_metrics *metrics, azc_err *e);

/* Closes the listeners and every connection. Deferred requests still
 * pending get their close callback first. NULL is a no-op. */
void azc_http_free(azc_http *h);

/*
 * Registers n routes whose handlers get `arg`. The table is copied. All or
 * nothing: AZC_EINVAL, with the reason (naming the pattern) logged at
 * error level, for a pattern that is not absolute, has an empty segment
 * (except "/" itself), a bad {name} (must be [A-Za-z_][A-Za-z0-9_]*,
 * unique in the pattern), '%', '{' or '}' in a literal, or more than
 * AZC_HTTP_MAX_SEGMENTS segments; no method; NULL handler; unknown flags.
 * Raising a body limit above the current server limit applies to
 * connections accepted from then on.
 */
int azc_http_add_routes(azc_http *h, const azc_http_route *routes, size_t n,
                        void *arg) AZC_WARN_UNUSED;

/* Sets (or with cb NULL removes) the /readyz callback. Without one the
 * server reports ready. */
void azc_http_set_ready_cb(azc_http *h, azc_http_ready_cb cb, void *arg);

/* Sets (or with cb NULL removes) the auth callback; see azc_http_auth_cb. */
void azc_http_set_auth_cb(azc_http *h, azc_http_auth_cb cb, void *arg);

/* Open connections of h, for tests and metrics. */
size_t azc_http_connection_count(const azc_http *h);

/*
 * Listens on addr:port (addr numeric IPv4/IPv6 or a host name resolved
 * with getaddrinfo; NULL = 0.0.0.0; port 0 = ephemeral) with SO_REUSEADDR
 * and a backlog of 1024. May be called more than once.
 */
int azc_http_bind(azc_http *h, const char *addr, int port, azc_err *e) AZC_WARN_UNUSED;

/* Port of the first successful bind; -1 before any. */
int azc_http_bound_port(const azc_http *h);

/* ---- request, for handlers -------------------------------------------
 * Strings returned are borrowed from r and valid until its reply (or its
 * close callback). */

/* Value of path parameter {name}, percent-decoded; NULL if the route has
 * no such parameter. */
const char *azc_http_req_param(const azc_http_req *r, const char *name);
/* First value of query parameter `name` ('+' and percent-escapes decoded
 * in names and values); NULL if absent. */
const char *azc_http_req_query(const azc_http_req *r, const char *name);
/* Request header, case-insensitive name; NULL if absent. The first one
 * when the request repeats it: a handler for which a repeated header is
 * ambiguous refuses it with azc_http_req_header_count. */
const char *azc_http_req_header(const azc_http_req *r, const char *name);
/* How many times header `name` (case-insensitive) appears in the request. */
size_t azc_http_req_header_count(const azc_http_req *r, const char *name);
/* Parsed body of an AZC_ROUTE_JSON_BODY route, borrowed (json_incref to
 * keep it); NULL on other routes. */
json_t *azc_http_req_json(const azc_http_req *r);
/* Raw body (not NUL-terminated) and its length in *len; "" and 0 if empty. */
const char *azc_http_req_body(azc_http_req *r, size_t *len);
/* One AZC_HTTP_* flag. */
unsigned azc_http_req_method(const azc_http_req *r);
/* "GET", ... for one AZC_HTTP_* flag; "UNKNOWN" otherwise. */
const char *azc_http_method_name(unsigned method);
/* The X-Request-Id of this request (never NULL). */
const char *azc_http_req_id(const azc_http_req *r);
/* The matched pattern, e.g. "/v1/teams/{id}". */
const char *azc_http_req_route(const azc_http_req *r);
/* The request target as received ("/a/%2F..?x=1"), not decoded. */
const char *azc_http_req_target(const azc_http_req *r);
/* Attaches ctx to r (the auth callback's verified identity, say);
 * ctx_free(ctx), when not NULL, runs when r is freed or ctx replaced. */
void azc_http_req_set_ctx(azc_http_req *r, void *ctx, void (*ctx_free)(void *));
/* What azc_http_req_set_ctx attached; NULL if nothing. */
void *azc_http_req_ctx(const azc_http_req *r);

/* Adds a response header (copied). AZC_EINVAL for an empty name, a name
 * that is not an HTTP token, CR or LF in the value, or a header the helper
 * owns (Content-Length, Transfer-Encoding, X-Request-Id); AZC_ECONFLICT
 * once the reply is sent. A refused header is also logged (error), so the
 * result may be ignored. A Content-Type added here replaces the default. */
int azc_http_req_add_header(azc_http_req *r, const char *name, const char *value);

/*
 * Loop priorities. A loop made with AZC_LOOP_PRIORITIES priorities
 * (event_base_priority_init) runs its events at AZC_LOOP_PRIO_DEFAULT
 * unless told otherwise; azc_http_req_background puts r's connection at
 * AZC_LOOP_PRIO_BACKGROUND, so that in each loop turn its reads and writes
 * run only after every ready event of higher priority. For long-lived
 * answers with many small writes (change-feed streams: thousands of them
 * get a line at each heartbeat), so that they do not delay the other
 * requests of the loop. AZC_ERROR when the loop has fewer priorities.
 */
#define AZC_LOOP_PRIORITIES 3
#define AZC_LOOP_PRIO_DEFAULT 1
#define AZC_LOOP_PRIO_BACKGROUND 2
int azc_http_req_background(azc_http_req *r) AZC_WARN_UNUSED;

/*
 * A new loop with AZC_LOOP_PRIORITIES priorities and precise timers
 * (EVENT_BASE_FLAG_PRECISE_TIMER: a timerfd on Linux, so that a timer of
 * 1 ms fires after about 1 ms; without it epoll's timeout follows the
 * kernel's tick, 4 ms on a 250 Hz kernel), for background work paced a
 * slice per millisecond; the price is a system call per loop turn that
 * has a timer to set. Free with event_base_free; NULL with e filled.
 */
struct event_base *azc_http_loop_new(azc_err *e);

/* ---- replies ----------------------------------------------------------
 * Exactly one per request. A second one is a bug: it is logged (error) and
 * ignored. After the reply of a deferred request, r is freed. A status
 * outside 200-599 (400-599 for reply_error) is logged and answered 500.
 * 204 and 304 replies, and all replies to HEAD, go without a body. */

/* Sends `body` (stolen, also on error) as compact JSON. A NULL body (a
 * failed json_pack) or one json_dumps cannot encode answers 500 with a
 * JSON error instead. */
void azc_http_reply_json(azc_http_req *r, int status, json_t *body);

/* Sends {"error":{"code":code,"message":<printf of fmt>}}; Content-Type is
 * always application/json. The message is for clients: no secrets. */
void azc_http_reply_error(azc_http_req *r, int status, const char *code, const char *fmt, ...)
    AZC_PRINTF(4, 5);

/* Sends the contents of `buf` (drained; the buffer stays the caller's)
 * with `content_type` (NULL: keep the handler's or the default). */
void azc_http_reply_raw(azc_http_req *r, int status, const char *content_type,
                        struct evbuffer *buf);

/*
 * Streamed (chunked) replies, for bodies produced a piece at a time:
 *
 *   azc_http_reply_start(r, 200, "application/json", on_drain, on_close, p);
 *   azc_http_reply_chunk(r, first);        ...then from on_drain:
 *   azc_http_reply_chunk(r, next);  ...  azc_http_reply_end(r);
 *
 * reply_start sends the status and headers (it counts as the request's one
 * reply; a 204/304 status or a NULL on_drain is refused with a 500). Each
 * reply_chunk queues the contents of buf (drained; the buffer stays the
 * caller's) and, once they have been written to the socket, calls
 * on_drain(r, arg): produce the next chunk there, so a slow client never
 * makes the server hold more than one chunk. For HEAD requests chunks are
 * dropped but on_drain still comes. reply_end finishes the body; r is
 * freed by it (after the handler returns when called from inside it).
 *
 * When the client goes away mid-stream, on_close(r, arg) runs once and r
 * is freed when it returns: no more calls on r. reply_start may follow
 * azc_http_req_defer (the stream's on_close replaces the deferred one).
 * HTTP/1.0 clients get a body delimited by the connection's close.
 * reply_chunk returns AZC_ECONFLICT without a stream.
 */
typedef void (*azc_http_drain_cb)(azc_http_req *r, void *arg);

int azc_http_reply_start(azc_http_req *r, int status, const char *content_type,
                         azc_http_drain_cb on_drain, azc_http_close_cb on_close,
                         void *arg) AZC_WARN_UNUSED;
int azc_http_reply_chunk(azc_http_req *r, struct evbuffer *buf) AZC_WARN_UNUSED;
void azc_http_reply_end(azc_http_req *r);

/*
 * Marks r as answered later (long polls): the handler returns without
 * replying and keeps r; a later azc_http_reply_* on the same thread sends
 * the answer and frees r. Until then the helper watches the connection;
 * when the client closes it (or resets it) `on_close(r, arg)` runs, the
 * connection is closed, and r is freed. A client that half-closes its side
 * counts as gone. The idle timeout does not apply meanwhile: the caller
 * owns the deadline (reply 200/204 from a timer). If the client pipelines
 * another request behind this one, it is no longer watched until the
 * reply. Calling it again replaces the callback. AZC_ECONFLICT after a
 * reply; AZC_ERROR if the watch cannot be set up (then reply now).
 */
int azc_http_req_defer(azc_http_req *r, azc_http_close_cb on_close, void *arg) AZC_WARN_UNUSED;

#endif
