/*
 * Replies of the HTTP helper: JSON, errors, raw bodies and streamed
 * (chunked) replies. Every reply sets X-Request-Id and a Content-Type,
 * drops the body where HTTP forbids one, records the access-log line and
 * the metrics, and frees a deferred request once it is answered.
 */
#include "common/http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>

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

void azc__http_set_header(azc_http_req *r, const char *name, const char *value)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);

    evhttp_remove_header(out, name);
    if (evhttp_add_header(out, name, value) != 0)
        azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id, "cannot set response header %s", name);
}

/* Headers every reply carries, and the close of a connection whose next
 * bytes cannot be trusted. */
static void set_reply_headers(azc_http_req *r)
{
    azc__http_set_header(r, "X-Request-Id", r->id);
    if (r->close_after) {
        azc__http_set_header(r, "Connection", "close");
        if (r->method == AZC__HTTP_CONNECT)
            azc__http_conn_close_after_reply(r->conn, r->ev);
    }
}

/* Queues the reply whose body is already in the output buffer. */
static void send_response(azc_http_req *r, int status)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);
    struct evbuffer *body = evhttp_request_get_output_buffer(r->ev);
    size_t len = evbuffer_get_length(body);

    azc__http_unwatch(r);
    set_reply_headers(r);
    if (evhttp_find_header(out, "Content-Type") == NULL)
        azc__http_set_header(r, "Content-Type", "application/json");
    /* evhttp writes whatever is in the output buffer even where HTTP
     * forbids a body, so drop it here. */
    if (r->method == AZC_HTTP_HEAD || status == 204 || status == 304) {
        if (r->method == AZC_HTTP_HEAD && status != 204 && status != 304) {
            char n[32];

            snprintf(n, sizeof n, "%zu", len);
            azc__http_set_header(r, "Content-Length", n);
        }
        if (evbuffer_drain(body, len) != 0)
            azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id, "cannot drop a HEAD body");
    }
    r->replied = 1;
    evhttp_send_reply(r->ev, status, NULL, NULL);
    azc__http_access_record(r, status);
    if (r->deferred && !r->in_handler)
        azc__http_req_free(r);
}

/* Last resort: 500 with a fixed JSON error, or an empty body if even that
 * cannot be built. */
void azc__http_send_internal_error(azc_http_req *r)
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
    azc__http_set_header(r, "Content-Type", "application/json");
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
        azc__http_send_internal_error(r);
        return;
    }
    rc = evbuffer_add(out, text, strlen(text));
    free(text);
    if (rc != 0) {
        azc__http_send_internal_error(r);
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
        azc__http_send_internal_error(r);
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
        azc__http_send_internal_error(r);
        return;
    }
    vsnprintf(msg, sizeof msg, fmt, ap);
    body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    if (body == NULL)   /* the message held invalid UTF-8 (user input) */
        body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message",
                         "(message not valid utf-8)");
    azc__http_set_header(r, "Content-Type", "application/json");
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
        azc__http_send_internal_error(r);
        return;
    }
    out = evhttp_request_get_output_buffer(r->ev);
    if (buf != NULL && evbuffer_add_buffer(out, buf) != 0) {
        azc__http_send_internal_error(r);
        return;
    }
    if (content_type != NULL)
        azc__http_set_header(r, "Content-Type", content_type);
    send_response(r, status);
}

/* ---- streamed replies --------------------------------------------------
 *
 * evhttp frees the connection when a write to a departed client fails;
 * the connection's close hook is how the producer learns of it. evhttp
 * then detaches the request from the connection (it is the user's until
 * evhttp_send_reply_end) and frees only the connection: the request is
 * ours to free, or it leaks. evhttp calls the chunk callback only for a
 * chunk it actually queues, so for HEAD requests and empty chunks the
 * helper calls on_drain itself from drain_ev, to keep the producer going
 * to its reply_end.
 */

static void on_stream_conn_closed(azc_http_req *r)
{
    struct evhttp_request *ev = r->ev;
    int detached = evhttp_request_get_connection(ev) == NULL;

    r->closing = 1;
    if (r->on_close != NULL)
        r->on_close(r, r->close_arg);
    azc__http_access_record(r, AZC__HTTP_STATUS_CLIENT_CLOSED);
    azc__http_req_free(r);
    /* Still attached (the server is being freed, say): evhttp frees it
     * with the connection. */
    if (detached)
        evhttp_request_free(ev);
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
        azc__http_send_internal_error(r);
        return AZC_EINVAL;
    }
    if (r->conn == NULL) {
        /* Without the close hook a departed client would leak the stream. */
        azc_log_reqf(r->h->log, AZC_LOG_ERROR, r->id, "%s: connection not tracked, no stream",
                     r->route);
        azc__http_send_internal_error(r);
        return AZC_ERROR;
    }
    r->drain_ev = event_new(r->h->base, -1, 0, on_drain_event, r);
    if (r->drain_ev == NULL) {
        azc__http_send_internal_error(r);
        return AZC_ENOMEM;
    }
    /* A deferred request is no longer watched for reads: from here on a
     * departed client shows as a failed write. */
    azc__http_unwatch(r);
    r->on_drain = on_drain;
    r->on_close = on_close;
    r->close_arg = arg;
    set_reply_headers(r);
    azc__http_set_header(r, "Content-Type",
                         content_type != NULL ? content_type : "application/json");
    r->replied = 1;
    r->streaming = 1;
    r->stream_status = status;
    azc__http_conn_watch(r->conn, on_stream_conn_closed, r);
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
    azc__http_conn_watch(r->conn, NULL, NULL);
    event_del(r->drain_ev);
    evhttp_send_reply_end(r->ev);
    azc__http_access_record(r, r->stream_status);
    if (!r->in_handler)
        azc__http_req_free(r);
}
