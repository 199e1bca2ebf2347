/*
 * Unit tests: the hardened edge of the HTTP helper, with raw sockets.
 * Odd methods get JSON 405/501 from the dispatcher (501 closes the
 * connection, CONNECT included); ambiguous framing (two Content-Length
 * values, Content-Length with Transfer-Encoding, a body on HEAD) gets 400
 * and a closed connection, so trailing bytes never run as a request; a
 * client trickling its request is cut off at the total deadline; beyond
 * max_connections a connection gets a 503; the auth callback answers
 * before any body check.
 */
#include "http_test_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void h_echo(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;

    fx->handler_calls++;
    azc_http_reply_json(r, 200, json_pack("{s:O?, s:s?}", "body", azc_http_req_json(r),
                                          "who", (const char *)azc_http_req_ctx(r)));
}

static void h_smuggled(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;

    fx->closed++;   /* counts requests that should never have been read */
    azc_http_reply_json(r, 200, json_pack("{s:b}", "smuggled", 1));
}

static const azc_http_route test_routes[] = {
    { AZC_HTTP_GET | AZC_HTTP_POST, "/v1/echo", h_echo, AZC_ROUTE_JSON_BODY, 16 },
    { AZC_HTTP_POST, "/v1/open", h_echo, AZC_ROUTE_JSON_BODY | AZC_ROUTE_PUBLIC, 16 },
    { AZC_HTTP_GET, "/v1/smuggled", h_smuggled, 0, 0 },
};

static int setup(void **state)
{
    *state = fixture_new(test_routes, sizeof test_routes / sizeof test_routes[0], NULL);
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* The JSON body of a raw response, parsed (caller decrefs). */
static json_t *raw_json(const char *raw)
{
    const char *body = strstr(raw, "\r\n\r\n");

    assert_non_null(body);
    return json_loads(body + 4, JSON_DISABLE_EOF_CHECK, NULL);
}

static void assert_raw_error(const char *raw, const char *status_line, const char *code)
{
    json_t *j = raw_json(raw);

    assert_memory_equal(raw, status_line, strlen(status_line));
    assert_non_null(strstr(raw, "Content-Type: application/json\r\n"));
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        code);
    json_decref(j);
}

/* Methods: known to evhttp but not routable -> 405 with Allow; unknown
 * tokens and CONNECT -> 501, and the server closes (no "Connection:
 * close" from the client: raw_read_all returns only on the server's
 * close). */
static void test_methods(void **state)
{
    static const char *const unknown[] = {
        "get /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "BREW /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    };
    static const char opt[] = "OPTIONS /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    static const char trace[] = "TRACE /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    static const char none[] = "TRACE /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct fixture *fx = *state;
    char *raw;
    size_t i;

    raw = raw_exchange(fx, opt, sizeof opt - 1);
    assert_raw_error(raw, "HTTP/1.1 405 ", "method_not_allowed");
    assert_non_null(strstr(raw, "\r\nAllow: GET, HEAD, POST\r\n"));
    free(raw);
    raw = raw_exchange(fx, trace, sizeof trace - 1);
    assert_raw_error(raw, "HTTP/1.1 405 ", "method_not_allowed");
    free(raw);
    raw = raw_exchange(fx, none, sizeof none - 1);
    assert_raw_error(raw, "HTTP/1.1 404 ", "not_found");
    free(raw);
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        raw = raw_exchange(fx, unknown[i], strlen(unknown[i]));
        assert_raw_error(raw, "HTTP/1.1 501 ", "not_implemented");
        assert_non_null(strstr(raw, "\r\nX-Request-Id: "));
        free(raw);
    }
    assert_int_equal(fx->handler_calls, 0);
    assert_non_null(strstr(log_text(fx), "\"method\":\"CONNECT\",\"route\":\"unmatched\",\"status\":501"));
}

/* Framing: each request is followed by a second one that must never run. */
static void test_framing(void **state)
{
    static const char *const bad[] = {
        /* evhttp would read 2 bytes and run the rest as a request. */
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nContent-Length: 41\r\n\r\n{}",
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: identity\r\n\r\n{}",
        /* evhttp reads no body for HEAD: the body would be a request. */
        "HEAD /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 41\r\n\r\n",
    };
    static const char tail[] = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char same[] =
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    struct fixture *fx = *state;
    char buf[512], *raw;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int n = snprintf(buf, sizeof buf, "%s%s", bad[i], tail);

        raw = raw_exchange(fx, buf, (size_t)n);
        /* Two lengths: ours (JSON). The others evhttp refuses by itself
         * as well (its HTML 400) or has no body to answer with (HEAD). */
        assert_memory_equal(raw, "HTTP/1.1 400 ", 13);
        if (i == 0)
            assert_raw_error(raw, "HTTP/1.1 400 ", "invalid_request");
        assert_non_null(strstr(raw, "\r\nConnection: close\r\n"));
        assert_null(strstr(raw + 1, "HTTP/1.1 "));      /* one response only */
        free(raw);
    }
    assert_int_equal(fx->closed, 0);
    assert_int_equal(fx->handler_calls, 0);

    /* The same value twice is no ambiguity. */
    raw = raw_exchange(fx, same, sizeof same - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    free(raw);
    assert_int_equal(fx->handler_calls, 1);
}

struct trickle {
    int fd;
    struct event *ev;
    int sent;
};

static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
    struct trickle *t = arg;
    struct timeval tv = { 0, 300000 };
    (void)fd;
    (void)what;

    /* One header byte at a time, well inside the 5 s idle timeout. */
    if (send(t->fd, "X", 1, MSG_NOSIGNAL) == 1) {
        t->sent++;
        assert_int_equal(evtimer_add(t->ev, &tv), 0);
    }
}

static double now_secs(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A header sent a byte every 0.3 s: closed at the 1 s total deadline,
 * although each byte restarts the 5 s idle timeout. */
static void test_slow_client(void **state)
{
    static const char start[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    struct fixture *fx = *state;
    azc_http_options o = { 0 };
    struct trickle t = { 0 };
    struct timeval tv = { 0, 300000 };
    struct fixture *slow;
    double t0;
    char *raw;

    (void)fx;
    o.timeout_secs = 5;
    o.request_timeout_secs = 1;
    slow = fixture_new(test_routes, sizeof test_routes / sizeof test_routes[0], &o);
    t.fd = raw_connect(slow);
    t.ev = evtimer_new(slow->base, on_trickle, &t);
    assert_non_null(t.ev);
    raw_send(t.fd, start, sizeof start - 1);
    assert_int_equal(evtimer_add(t.ev, &tv), 0);
    t0 = now_secs();
    raw = raw_read_all_within(slow, t.fd, 4.0);
    assert_true(now_secs() - t0 < 2.5);
    assert_true(t.sent >= 2);
    assert_string_equal(raw, "");       /* closed, no answer */
    assert_non_null(strstr(log_text(slow), "request not received within 1 s"));
    free(raw);
    event_free(t.ev);
    close(t.fd);

    /* A connection that sends nothing goes at the deadline too. */
    t.fd = raw_connect(slow);
    raw = raw_read_all_within(slow, t.fd, 4.0);
    assert_string_equal(raw, "");
    free(raw);
    close(t.fd);
    fixture_free(slow);
}

/* max_connections 2: the third connection gets a 503 JSON and a close,
 * and once the first two go a new one is served. */
static void test_connection_cap(void **state)
{
    static const char ok[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct fixture *fx = *state;
    azc_http_options o = { 0 };
    struct fixture *capped;
    int a, b, c, never = 0;
    double t0;
    char *raw;

    (void)fx;
    o.max_connections = 2;
    capped = fixture_new(test_routes, sizeof test_routes / sizeof test_routes[0], &o);
    a = raw_connect(capped);
    b = raw_connect(capped);
    c = raw_connect(capped);
    raw = raw_read_all(capped, c);
    assert_raw_error(raw, "HTTP/1.1 503 ", "unavailable");
    assert_non_null(strstr(raw, "\r\nConnection: close\r\n"));
    free(raw);
    close(c);
    assert_int_equal(azc_http_connection_count(capped->h), 2);
    assert_non_null(strstr(log_text(capped), "connection refused: 2 open (max_connections)"));
    close(a);
    close(b);
    /* The server notices the two closes on its next reads. */
    t0 = now_secs();
    while (azc_http_connection_count(capped->h) > 0 && now_secs() - t0 < DEADLINE_SECS)
        (void)run_until(capped->base, &never, 0.05);
    assert_int_equal(azc_http_connection_count(capped->h), 0);
    raw = raw_exchange(capped, ok, sizeof ok - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    free(raw);
    fixture_free(capped);
}

/* Lets "Authorization: ok" through, answers 401 otherwise; "broken"
 * fails without a reply. */
static int auth_cb(azc_http_req *r, void *route_arg, void *arg)
{
    struct fixture *fx = arg;
    const char *a = azc_http_req_header(r, "Authorization");

    assert_ptr_equal(route_arg, fx);
    fx->auth_calls++;
    if (a != NULL && strcmp(a, "broken") == 0)
        return AZC_ERROR;
    if (a == NULL || strcmp(a, "ok") != 0) {
        azc_http_reply_error(r, 401, "unauthorized", "a valid token is required");
        return AZC_EINVAL;
    }
    azc_http_req_set_ctx(r, strdup("alice"), free);
    return AZC_OK;
}

static char *post(struct fixture *fx, const char *auth, const char *type, const char *body)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "POST /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
                     auth != NULL ? "Authorization: " : "", auth != NULL ? auth : "",
                     auth != NULL ? "\r\n" : "", type, strlen(body), body);

    return raw_exchange(fx, buf, (size_t)n);
}

/* Authentication runs before 413, 415 and the JSON parse. */
static void test_auth_before_body_checks(void **state)
{
    static const char open[] =
        "POST /v1/open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    static const char health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct fixture *fx = *state;
    char *raw;
    json_t *j;

    azc_http_set_auth_cb(fx->h, auth_cb, fx);
    raw = post(fx, NULL, "application/json", "[\"way over sixteen bytes\"]");
    assert_raw_error(raw, "HTTP/1.1 401 ", "unauthorized");
    free(raw);
    raw = post(fx, NULL, "text/plain", "{}");
    assert_raw_error(raw, "HTTP/1.1 401 ", "unauthorized");
    free(raw);
    raw = post(fx, "nope", "application/json", "{");
    assert_raw_error(raw, "HTTP/1.1 401 ", "unauthorized");
    free(raw);
    assert_int_equal(fx->handler_calls, 0);

    /* Authenticated: the body checks apply, then the handler sees ctx. */
    raw = post(fx, "ok", "application/json", "[\"way over sixteen bytes\"]");
    assert_raw_error(raw, "HTTP/1.1 413 ", "payload_too_large");
    free(raw);
    raw = post(fx, "ok", "application/json", "{");
    assert_raw_error(raw, "HTTP/1.1 400 ", "invalid_json");
    free(raw);
    raw = post(fx, "ok", "application/json", "{\"a\":1}");
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    j = raw_json(raw);
    assert_string_equal(json_string_value(json_object_get(j, "who")), "alice");
    json_decref(j);
    free(raw);

    /* A failed callback that forgot to reply: 500, never the handler. */
    raw = post(fx, "broken", "application/json", "{}");
    assert_raw_error(raw, "HTTP/1.1 500 ", "internal");
    free(raw);
    assert_int_equal(fx->handler_calls, 1);

    /* Public routes and the built-ins skip it. */
    fx->auth_calls = 0;
    raw = raw_exchange(fx, open, sizeof open - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    free(raw);
    raw = raw_exchange(fx, health, sizeof health - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    free(raw);
    assert_int_equal(fx->auth_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_methods),
        T(test_framing),
        T(test_slow_client),
        T(test_connection_cap),
        T(test_auth_before_body_checks),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
