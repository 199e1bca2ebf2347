/*
 * Unit tests: deferred and streamed replies of the HTTP helper. A
 * deferred request is answered later or abandoned when its client goes;
 * a stream is produced chunk by chunk from on_drain; a client that resets
 * mid-stream costs nothing (run under the sanitizer build, LeakSanitizer
 * checks that no evhttp request is left behind, and the libevent
 * allocation count checks it in every build).
 */
#include "http_test_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- handlers --------------------------------------------------------- */

static void on_defer_timer(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *fx = arg;
    azc_http_req *r = fx->deferred;
    (void)fd;
    (void)what;

    fx->deferred = NULL;
    azc_http_reply_json(r, 200, json_pack("{s:b}", "deferred", 1));
}

static void on_deferred_close(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;

    if (r == fx->deferred)
        fx->deferred = NULL;
    fx->closed++;
    event_del(fx->timer);
}

/* /v1/defer answers after 20 ms; /v1/hold never answers by itself. */
static void h_defer(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;
    struct timeval tv = { 0, 20000 };

    fx->handler_calls++;
    assert_int_equal(azc_http_req_defer(r, on_deferred_close, fx), AZC_OK);
    fx->deferred = r;
    if (strcmp(azc_http_req_route(r), "/v1/defer") == 0)
        assert_int_equal(evtimer_add(fx->timer, &tv), 0);
}

static void h_defer_then_reply(azc_http_req *r, void *arg)
{
    (void)arg;
    assert_int_equal(azc_http_req_defer(r, NULL, NULL), AZC_OK);
    azc_http_reply_json(r, 200, json_pack("{s:s}", "now", "yes"));
    assert_int_equal(azc_http_req_defer(r, NULL, NULL), AZC_ECONFLICT);
}
/* Streams: /v1/stream sends fx->chunks lines, one per drain, then ends;
 * /v1/endless sends 64 KiB chunks until its client goes away. */
static void on_stream_drain(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;
    struct evbuffer *b = evbuffer_new();

    assert_non_null(b);
    fx->drains++;
    if (strcmp(azc_http_req_route(r), "/v1/endless") == 0) {
        static char block[64 * 1024];

        memset(block, 'x', sizeof block);
        assert_int_equal(evbuffer_add(b, block, sizeof block), 0);
        assert_int_equal(azc_http_reply_chunk(r, b), AZC_OK);
    } else if (fx->sent < fx->chunks) {
        assert_int_equal(evbuffer_add_printf(b, "line %d\n", fx->sent) > 0, 1);
        fx->sent++;
        assert_int_equal(azc_http_reply_chunk(r, b), AZC_OK);
    } else {
        fx->ended++;
        azc_http_reply_end(r);      /* frees r (outside the handler) */
    }
    evbuffer_free(b);
}

static void on_stream_close(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;

    (void)r;
    fx->closed++;
}

static void h_stream(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;

    fx->handler_calls++;
    assert_int_equal(azc_http_reply_start(r, 200, "text/plain", on_stream_drain, on_stream_close,
                                          fx), AZC_OK);
    /* The stream is the one reply: nothing else goes. */
    azc_http_reply_json(r, 200, json_pack("{s:b}", "late", 1));
    on_stream_drain(r, fx);
}

static void h_bad_stream(azc_http_req *r, void *arg)
{
    (void)arg;
    assert_int_equal(azc_http_reply_start(r, 204, NULL, on_stream_drain, NULL, NULL), AZC_EINVAL);
}

static const azc_http_route test_routes[] = {
    { AZC_HTTP_GET, "/v1/defer", h_defer, 0, 0 },
    { AZC_HTTP_GET, "/v1/hold", h_defer, 0, 0 },
    { AZC_HTTP_GET, "/v1/defer-now", h_defer_then_reply, 0, 0 },
    { AZC_HTTP_GET, "/v1/stream", h_stream, 0, 0 },
    { AZC_HTTP_GET, "/v1/endless", h_stream, 0, 0 },
    { AZC_HTTP_GET, "/v1/bad-stream", h_bad_stream, 0, 0 },
};

static int setup(void **state)
{
    struct fixture *fx = fixture_new(test_routes, sizeof test_routes / sizeof test_routes[0],
                                     NULL);

    fx->timer = evtimer_new(fx->base, on_defer_timer, fx);
    assert_non_null(fx->timer);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* ---- tests ------------------------------------------------------------ */

static void test_deferred_reply(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/defer", NULL, NULL, &resp);
    assert_int_equal(fx->handler_calls, 1);
    assert_int_equal(resp.status, 200);
    assert_true(json_is_true(json_object_get(resp.json, "deferred")));
    assert_int_equal(strlen(resp.request_id), 32);
    assert_null(fx->deferred);
    assert_int_equal(fx->closed, 0);
    response_clear(&resp);

    /* Deferring and replying inside the handler is fine too. */
    request(fx, EVHTTP_REQ_GET, "/v1/defer-now", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "now"), "yes");
    response_clear(&resp);
}

static void disconnect_while_deferred(struct fixture *fx, int reset)
{
    static const char req[] = "GET /v1/hold HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(fx), calls = fx->handler_calls + 1;
    struct response resp;

    raw_send(fd, req, sizeof req - 1);
    run_until_count(fx->base, &fx->handler_calls, calls);
    assert_non_null(fx->deferred);
    if (reset) {
        struct linger lg = { 1, 0 };

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    }
    close(fd);
    assert_true(run_until(fx->base, &fx->closed, DEADLINE_SECS));
    assert_int_equal(fx->closed, 1);
    assert_null(fx->deferred);
    assert_non_null(strstr(log_text(fx), "\"msg\":\"client closed request\""));
    assert_non_null(strstr(log_text(fx), "\"status\":499"));

    /* Still serving. */
    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

static void test_deferred_client_closes(void **state)
{
    disconnect_while_deferred(*state, 0);
}

static void test_deferred_client_resets(void **state)
{
    disconnect_while_deferred(*state, 1);
}

static void test_deferred_pending_at_free(void **state)
{
    struct fixture *fx = *state;
    static const char req[] = "GET /v1/hold HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(fx);

    raw_send(fd, req, sizeof req - 1);
    run_until_count(fx->base, &fx->handler_calls, 1);
    azc_http_free(fx->h);
    fx->h = NULL;
    assert_int_equal(fx->closed, 1);
    assert_null(fx->deferred);
    close(fd);
}

/* A client that pipelines a second request behind a deferred one is alive:
 * the watch must not take the new bytes for a disconnect. */
static void test_deferred_pipelined(void **state)
{
    struct fixture *fx = *state;
    static const char first[] = "GET /v1/defer HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char second[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int fd = raw_connect(fx);
    char *raw, *next;

    raw_send(fd, first, sizeof first - 1);
    run_until_count(fx->base, &fx->handler_calls, 1);
    raw_send(fd, second, sizeof second - 1);   /* before the 20 ms reply */
    raw = raw_read_all(fx, fd);
    close(fd);
    assert_int_equal(fx->closed, 0);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    assert_non_null(strstr(raw, "{\"deferred\":true}"));
    next = strstr(raw + 1, "HTTP/1.1 200 ");
    assert_non_null(next);
    assert_non_null(strstr(next, "{\"status\":\"ok\"}"));
    free(raw);
}

static void test_stream(void **state)
{
    static const char get[] = "GET /v1/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    static const char head[] = "HEAD /v1/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct fixture *fx = *state;
    struct response resp;
    char *raw;

    fx->chunks = 3;
    request(fx, EVHTTP_REQ_GET, "/v1/stream", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "text/plain");
    assert_int_equal(strlen(resp.request_id), 32);
    assert_string_equal(resp.body, "line 0\nline 1\nline 2\n");
    assert_int_equal(fx->ended, 1);
    assert_int_equal(fx->drains, 4);
    assert_non_null(strstr(log_text(fx), "second reply 200 to /v1/stream ignored"));
    response_clear(&resp);

    /* On the wire: chunked, one chunk per reply_chunk, then the last one. */
    fx->sent = 0;
    raw = raw_exchange(fx, get, sizeof get - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    assert_non_null(strstr(raw, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(raw, "\r\n\r\n7\r\nline 0\n\r\n7\r\nline 1\n\r\n7\r\nline 2\n\r\n0\r\n\r\n"));
    free(raw);

    /* HEAD: headers only, and the producer still runs to its end. */
    fx->sent = 0;
    raw = raw_exchange(fx, head, sizeof head - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    assert_string_equal(strstr(raw, "\r\n\r\n"), "\r\n\r\n");
    assert_int_equal(fx->ended, 3);
    free(raw);
    assert_int_equal(fx->closed, 0);

    /* A 204 stream is refused with a 500. */
    request(fx, EVHTTP_REQ_GET, "/v1/bad-stream", NULL, NULL, &resp);
    assert_error(&resp, 500, "internal");
    response_clear(&resp);
}

/* libevent's allocations still held, counted by the functions main()
 * installs: a leaked evhttp request keeps several. */
static long ev_blocks;

static void *count_malloc(size_t n)
{
    void *p = malloc(n);

    if (p != NULL)
        ev_blocks++;
    return p;
}

static void *count_realloc(void *p, size_t n)
{
    void *q = realloc(p, n);

    if (p == NULL && q != NULL)
        ev_blocks++;
    return q;
}

static void count_free(void *p)
{
    if (p != NULL)
        ev_blocks--;
    free(p);
}

struct some {
    int done;
};

static void on_some(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    (void)what;

    if (recv(fd, buf, sizeof buf, MSG_DONTWAIT) != 0)
        ((struct some *)arg)->done = 1;
}

/* Waits until the server has sent something on fd. */
static void wait_readable(struct fixture *fx, int fd)
{
    struct some s = { 0 };
    struct event *ev = event_new(fx->base, fd, EV_READ | EV_PERSIST, on_some, &s);

    assert_non_null(ev);
    assert_int_equal(event_add(ev, NULL), 0);
    assert_true(run_until(fx->base, &s.done, DEADLINE_SECS));
    event_free(ev);
}

/* Runs the loop until libevent holds `want` blocks again, within the
 * deadline; returns whether it did. */
static int settle_to(struct fixture *fx, long want)
{
    int i;

    for (i = 0; i < 1000 && ev_blocks != want; i++) {
        struct timeval tv = { 0, 2000 };

        assert_true(event_base_loopexit(fx->base, &tv) == 0);
        assert_true(event_base_dispatch(fx->base) >= 0);
    }
    return ev_blocks == want;
}

static void reset_mid_stream(struct fixture *fx)
{
    static const char req[] = "GET /v1/endless HTTP/1.1\r\nHost: x\r\n\r\n";
    struct linger lg = { 1, 0 };
    int fd = raw_connect(fx), closed = fx->closed;

    raw_send(fd, req, sizeof req - 1);
    wait_readable(fx, fd);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    run_until_count(fx->base, &fx->closed, closed + 1);
}

/* 20 clients reset mid-stream: each gets its on_close, and every evhttp
 * request is freed (before the fix each one leaked). */
static void test_stream_client_resets(void **state)
{
    struct fixture *fx = *state;
    struct response resp;
    long before;
    int i;

    reset_mid_stream(fx);           /* warm-up: lazily made structures */
    for (i = 0; i < 20; i++) {
        struct timeval tv = { 0, 2000 };

        assert_true(event_base_loopexit(fx->base, &tv) == 0);
        assert_true(event_base_dispatch(fx->base) >= 0);
    }
    before = ev_blocks;
    for (i = 0; i < 20; i++)
        reset_mid_stream(fx);
    assert_int_equal(fx->closed, 21);
    assert_int_equal(azc_http_connection_count(fx->h), 0);
    assert_non_null(strstr(log_text(fx), "\"route\":\"/v1/endless\",\"status\":499"));
    assert_true(settle_to(fx, before));

    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_deferred_reply),
        T(test_deferred_client_closes),
        T(test_deferred_client_resets),
        T(test_deferred_pending_at_free),
        T(test_deferred_pipelined),
        T(test_stream),
        T(test_stream_client_resets),
#undef T
    };

    /* Before any libevent allocation. */
    event_set_mem_functions(count_malloc, count_realloc, count_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
