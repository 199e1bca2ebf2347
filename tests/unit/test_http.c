/*
 * Unit tests: the HTTP helper's dispatcher, over sockets. Routing and
 * decoding, the checks that cut across handlers (404, 405, 413, 415,
 * invalid JSON and query strings), HEAD, request ids, probes, metrics,
 * replies and headers. Deferred and streamed replies are in
 * test_http_defer.c, the hardened edge in test_http_edge.c, the socket-free
 * routing functions in test_http_route.c.
 */
#include "http_test_util.h"

#include <stdlib.h>
#include <string.h>

/* ---- handlers --------------------------------------------------------- */

static void h_member_get(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:s, s:s, s:s, s:s}",
                                          "id", azc_http_req_param(r, "id"),
                                          "user_id", azc_http_req_param(r, "user_id"),
                                          "route", azc_http_req_route(r),
                                          "method", azc_http_method_name(azc_http_req_method(r))));
}

static void h_member_put(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:O}", "put", azc_http_req_json(r)));
}

static void h_team_get(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:s, s:s?, s:s?}",
                                          "id", azc_http_req_param(r, "id"),
                                          "limit", azc_http_req_query(r, "limit"),
                                          "name", azc_http_req_query(r, "name")));
}

static void h_team_me(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:b}", "me", 1));
}

static void h_echo(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_incref(azc_http_req_json(r)));
}

static void h_upload(azc_http_req *r, void *arg)
{
    size_t len;
    const char *body = azc_http_req_body(r, &len);
    (void)arg;

    assert_non_null(body);
    azc_http_reply_json(r, 200, json_pack("{s:I}", "len", (json_int_t)len));
}

static void h_twice(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:i}", "n", 1));
    azc_http_reply_json(r, 201, json_pack("{s:i}", "n", 2));   /* ignored, and not leaked */
    azc_http_reply_error(r, 500, "again", "third");
}

static void h_noreply(azc_http_req *r, void *arg)
{
    (void)r;
    (void)arg;
}

static void h_text(azc_http_req *r, void *arg)
{
    struct fixture *fx = arg;
    struct evbuffer *b = evbuffer_new();

    assert_non_null(b);
    fx->add_header_rc[0] = azc_http_req_add_header(r, "X-Bad", "a\r\nInjected: 1");
    fx->add_header_rc[1] = azc_http_req_add_header(r, "Content-Length", "1");
    fx->add_header_rc[2] = azc_http_req_add_header(r, "Content-Type", "text/plain; charset=utf-8");
    assert_int_equal(azc_http_req_add_header(r, "Bad Name", "x"), AZC_EINVAL);
    assert_int_equal(azc_http_req_add_header(r, "X-Fine", "yes"), AZC_OK);
    assert_int_equal(evbuffer_add(b, "hello\n", 6), 0);
    azc_http_reply_raw(r, 200, NULL, b);
    assert_int_equal(evbuffer_get_length(b), 0);
    assert_int_equal(azc_http_req_add_header(r, "X-Late", "1"), AZC_ECONFLICT);
    evbuffer_free(b);
}

static void h_raw(azc_http_req *r, void *arg)
{
    (void)arg;
    azc_http_reply_json(r, 200, json_pack("{s:s, s:s}", "target", azc_http_req_target(r),
                                          "route", azc_http_req_route(r)));
}

/* Answers with the status its path names (AZC_ROUTE_QUIET). */
static void h_quiet(azc_http_req *r, void *arg)
{
    int status = atoi(azc_http_req_param(r, "status"));

    (void)arg;
    if (status >= 400)
        azc_http_reply_error(r, status, "asked", "asked for %d", status);
    else
        azc_http_reply_json(r, status, json_pack("{s:i}", "status", status));
}

static int ready_cb(void *arg, azc_err *why)
{
    struct fixture *fx = arg;

    if (fx->ready_rc == AZC_OK)
        return AZC_OK;
    return azc_err_set(why, fx->ready_rc, "database down");
}

static const azc_http_route test_routes[] = {
    { AZC_HTTP_GET, "/v1/teams/{id}/members/{user_id}", h_member_get, 0, 0 },
    { AZC_HTTP_PUT, "/v1/teams/{id}/members/{user_id}", h_member_put, AZC_ROUTE_JSON_BODY, 0 },
    { AZC_HTTP_GET, "/v1/teams/me", h_team_me, 0, 0 },
    { AZC_HTTP_GET | AZC_HTTP_DELETE, "/v1/teams/{id}", h_team_get, 0, 0 },
    { AZC_HTTP_POST, "/v1/echo", h_echo, AZC_ROUTE_JSON_BODY, 1024 },
    { AZC_HTTP_POST, "/v1/upload", h_upload, 0, 64 * 1024 },
    { AZC_HTTP_GET, "/v1/twice", h_twice, 0, 0 },
    { AZC_HTTP_GET, "/v1/noreply", h_noreply, 0, 0 },
    { AZC_HTTP_GET, "/v1/text", h_text, 0, 0 },
    { AZC_HTTP_GET | AZC_HTTP_POST, "/raw", h_raw, AZC_ROUTE_PREFIX, 0 },
    { AZC_HTTP_GET, "/v1/quiet/{status}", h_quiet, AZC_ROUTE_QUIET, 0 },
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

/* ---- tests ------------------------------------------------------------ */

static void test_route_params(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/teams/t1/members/u2", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal(jstr(&resp, "id"), "t1");
    assert_string_equal(jstr(&resp, "user_id"), "u2");
    assert_string_equal(jstr(&resp, "route"), "/v1/teams/{id}/members/{user_id}");
    assert_string_equal(jstr(&resp, "method"), "GET");
    response_clear(&resp);

    /* First match in registration order: the literal route was listed
     * before the parameter one. */
    request(fx, EVHTTP_REQ_GET, "/v1/teams/me", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_true(json_is_true(json_object_get(resp.json, "me")));
    response_clear(&resp);

    /* An absolute-form target routes on its path. */
    request(fx, EVHTTP_REQ_GET, "http://localhost/v1/teams/abc", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "id"), "abc");
    response_clear(&resp);
}

static void test_percent_decoding(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/teams/a%20b%2Fc/members/%C3%A9+x", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "id"), "a b/c");       /* %2F stays in the segment */
    assert_string_equal(jstr(&resp, "user_id"), "\xc3\xa9+x");   /* '+' is literal in paths */
    response_clear(&resp);

    /* Literal segments match decoded text too. */
    request(fx, EVHTTP_REQ_GET, "/v1/%74eams/x/members/y", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

static void test_invalid_path(void **state)
{
    static const char *const bad[] = {
        "/v1/teams/%zz", "/v1/teams/%2", "/v1/teams/a%00b", "/v1/teams/../x",
        "/v1/teams/%2e%2E", "/v1/teams/./x",
    };
    struct fixture *fx = *state;
    struct response resp;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        request(fx, EVHTTP_REQ_GET, bad[i], NULL, NULL, &resp);
        assert_error(&resp, 400, "invalid_path");
        response_clear(&resp);
    }
}

/* A PREFIX route sees the target as sent, odd paths and queries included,
 * and covers only its own path and what is below it. */
static void test_prefix_route(void **state)
{
    static const char *const raw[] = {
        "/raw", "/raw/a/%2F..", "/raw/a/../b", "/raw/%zz?x", "/raw/a?flag&=%",
    };
    struct fixture *fx = *state;
    struct response resp;
    size_t i;

    for (i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        request(fx, EVHTTP_REQ_GET, raw[i], NULL, NULL, &resp);
        assert_int_equal(resp.status, 200);
        assert_string_equal(json_string_value(json_object_get(resp.json, "target")), raw[i]);
        assert_string_equal(json_string_value(json_object_get(resp.json, "route")), "/raw");
        response_clear(&resp);
    }
    request(fx, EVHTTP_REQ_GET, "/rawer", NULL, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    response_clear(&resp);
    /* Another method is not the prefix route's: the path then goes the
     * usual way, and its check refuses the dot segment. */
    request(fx, EVHTTP_REQ_DELETE, "/raw/a/../b", NULL, NULL, &resp);
    assert_error(&resp, 400, "invalid_path");
    response_clear(&resp);
}

static void test_not_found(void **state)
{
    static const char *const missing[] = {
        "/nope", "/v1/teams/", "/v1/teams//members/u", "/", "/v1/teams/t/members/u/extra",
        "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7/8",
    };
    struct fixture *fx = *state;
    struct response resp;
    size_t i;

    for (i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        request(fx, EVHTTP_REQ_GET, missing[i], NULL, NULL, &resp);
        assert_error(&resp, 404, "not_found");
        assert_int_equal(strlen(resp.request_id), 32);
        response_clear(&resp);
    }
}

static void test_method_not_allowed(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    /* Two table entries share the pattern: Allow lists both. */
    request(fx, EVHTTP_REQ_DELETE, "/v1/teams/t1/members/u2", NULL, NULL, &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_string_equal(resp.allow, "GET, HEAD, PUT");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_POST, "/healthz", "application/json", "{}", &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_string_equal(resp.allow, "GET, HEAD");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_PATCH, "/v1/teams/t1", NULL, NULL, &resp);
    assert_error(&resp, 405, "method_not_allowed");
    assert_string_equal(resp.allow, "GET, HEAD, DELETE");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_DELETE, "/v1/teams/t1", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

static void test_payload_too_large(void **state)
{
    struct fixture *fx = *state;
    struct response resp;
    char *big = malloc(70001);
    size_t i;

    assert_non_null(big);
    /* Over the route's own limit (1024), under the server's: JSON 413. */
    big[0] = '"';
    for (i = 1; i < 1999; i++)
        big[i] = 'a';
    big[1999] = '"';
    request_full(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", big, 2000, NULL, &resp);
    assert_error(&resp, 413, "payload_too_large");
    response_clear(&resp);

    /* A route may allow more than the server default (4096). */
    memset(big, 'x', 70000);
    request_full(fx, EVHTTP_REQ_POST, "/v1/upload", "application/octet-stream", big, 10000,
                 NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_int_equal(json_integer_value(json_object_get(resp.json, "len")), 10000);
    response_clear(&resp);

    /* Over the largest route limit: evhttp answers 413 itself, after
     * draining the body (lingering close), with its own HTML page. */
    request_full(fx, EVHTTP_REQ_POST, "/v1/upload", "application/octet-stream", big, 70000,
                 NULL, &resp);
    assert_int_equal(resp.status, 413);
    response_clear(&resp);
    free(big);

    /* The server still answers. */
    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

static void test_unsupported_media_type(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_POST, "/v1/echo", "text/plain", "{}", &resp);
    assert_error(&resp, 415, "unsupported_media_type");
    response_clear(&resp);
    request(fx, EVHTTP_REQ_POST, "/v1/echo", NULL, "{}", &resp);
    assert_error(&resp, 415, "unsupported_media_type");
    response_clear(&resp);
    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/jsonx", "{}", &resp);
    assert_error(&resp, 415, "unsupported_media_type");
    response_clear(&resp);
    request(fx, EVHTTP_REQ_POST, "/v1/echo", "Application/JSON; charset=utf-8", "{}", &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
}

static void test_invalid_json(void **state)
{
    struct fixture *fx = *state;
    struct response resp;
    const char *msg;

    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", "{\n  \"a\": }", &resp);
    assert_error(&resp, 400, "invalid_json");
    msg = json_string_value(json_object_get(json_object_get(resp.json, "error"), "message"));
    assert_non_null(strstr(msg, "line 2, column"));
    response_clear(&resp);

    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", "{\"a\":1,\"a\":2}", &resp);
    assert_error(&resp, 400, "invalid_json");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", NULL, &resp);
    assert_error(&resp, 400, "invalid_json");
    response_clear(&resp);

    /* PUT on a JSON route also parses before the handler. */
    request(fx, EVHTTP_REQ_PUT, "/v1/teams/t/members/u", "application/json", "[1,", &resp);
    assert_error(&resp, 400, "invalid_json");
    response_clear(&resp);
}

static void test_json_echo(void **state)
{
    struct fixture *fx = *state;
    struct response resp;
    const char *doc = "{\"a\":[1,2.5,{\"b\":\"c\"}],\"s\":\"\xc3\xa9\\n\",\"t\":true,\"n\":null}";
    json_t *want = json_loads(doc, 0, NULL);

    assert_non_null(want);
    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", doc, &resp);
    assert_int_equal(resp.status, 200);
    assert_true(json_equal(resp.json, want));
    response_clear(&resp);

    /* Any JSON value, not only objects. */
    request(fx, EVHTTP_REQ_POST, "/v1/echo", "application/json", "42", &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, "42");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_PUT, "/v1/teams/t/members/u", "application/json", doc, &resp);
    assert_int_equal(resp.status, 200);
    assert_true(json_equal(json_object_get(resp.json, "put"), want));
    response_clear(&resp);
    json_decref(want);
}

static void test_head(void **state)
{
    struct fixture *fx = *state;
    static const char head[] =
        "HEAD /v1/teams/t1?limit=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct response get, hd;
    char *raw, *end, want[64];

    request(fx, EVHTTP_REQ_GET, "/v1/teams/t1?limit=5", NULL, NULL, &get);
    assert_int_equal(get.status, 200);
    request(fx, EVHTTP_REQ_HEAD, "/v1/teams/t1?limit=5", NULL, NULL, &hd);
    assert_int_equal(hd.status, 200);
    assert_int_equal(hd.body_len, 0);
    assert_string_equal(hd.content_type, "application/json");
    assert_int_equal(strtol(hd.content_length, NULL, 10), (long)get.body_len);

    /* On the wire: headers, then nothing. */
    raw = raw_exchange(fx, head, sizeof head - 1);
    assert_memory_equal(raw, "HTTP/1.1 200 ", 13);
    snprintf(want, sizeof want, "Content-Length: %zu\r\n", get.body_len);
    assert_non_null(strstr(raw, want));
    end = strstr(raw, "\r\n\r\n");
    assert_non_null(end);
    assert_string_equal(end, "\r\n\r\n");
    free(raw);
    response_clear(&get);
    response_clear(&hd);

    /* HEAD on an unknown path: 404, no body either. */
    request(fx, EVHTTP_REQ_HEAD, "/nope", NULL, NULL, &hd);
    assert_int_equal(hd.status, 404);
    assert_int_equal(hd.body_len, 0);
    response_clear(&hd);
}

static void test_header_too_large(void **state)
{
    struct fixture *fx = *state;
    size_t cap = 20000, len;
    char *req = malloc(cap), *resp;
    struct response ok;

    assert_non_null(req);
    len = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + len, 'a', 10000);
    len += 10000;
    len += (size_t)snprintf(req + len, cap - len, "\r\nConnection: close\r\n\r\n");
    /* Over max_header_bytes (8192): evhttp answers 400 itself. */
    resp = raw_exchange(fx, req, len);
    assert_memory_equal(resp, "HTTP/1.1 400 ", 13);
    free(resp);
    free(req);

    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &ok);
    assert_int_equal(ok.status, 200);
    response_clear(&ok);
}

static void test_query_string(void **state)
{
    static const char *const bad[] = {
        "/v1/teams/t1?limit=%zz", "/v1/teams/t1?=x", "/v1/teams/t1?limit",
        "/v1/teams/t1?a=1&&b=2", "/v1/teams/t1?a=%00", "/v1/teams/t1?a=1&",
    };
    struct fixture *fx = *state;
    struct response resp;
    size_t i;

    request(fx, EVHTTP_REQ_GET, "/v1/teams/t1?limit=10&name=a+b%26c&limit=20", NULL, NULL,
            &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "limit"), "10");        /* first value wins */
    assert_string_equal(jstr(&resp, "name"), "a b&c");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_GET, "/v1/teams/t1?na%6De=x&limit=", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "name"), "x");          /* names are decoded too */
    assert_string_equal(jstr(&resp, "limit"), "");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_GET, "/v1/teams/t1?", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_true(json_is_null(json_object_get(resp.json, "limit")));
    response_clear(&resp);

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        request(fx, EVHTTP_REQ_GET, bad[i], NULL, NULL, &resp);
        assert_error(&resp, 400, "invalid_query");
        response_clear(&resp);
    }
}

static int is_hex32(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++) {
        if (strchr("0123456789abcdef", s[i]) == NULL)
            return 0;
    }
    return i == 32;
}

static void test_request_id(void **state)
{
    struct fixture *fx = *state;
    struct response resp;
    char max[65], over[66];

    request_full(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, 0, "abc-123_x.Y", &resp);
    assert_string_equal(resp.request_id, "abc-123_x.Y");
    response_clear(&resp);

    memset(max, 'a', 64);
    max[64] = '\0';
    request_full(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, 0, max, &resp);
    assert_string_equal(resp.request_id, max);
    response_clear(&resp);

    memset(over, 'a', 65);
    over[65] = '\0';
    request_full(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, 0, over, &resp);
    assert_true(is_hex32(resp.request_id));
    response_clear(&resp);

    request_full(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, 0, "bad id!", &resp);
    assert_true(is_hex32(resp.request_id));
    response_clear(&resp);

    /* Generated ids differ and appear in the access log; errors carry
     * one too. */
    request(fx, EVHTTP_REQ_GET, "/nope", NULL, NULL, &resp);
    assert_true(is_hex32(resp.request_id));
    assert_non_null(strstr(log_text(fx), resp.request_id));
    {
        char first[33];

        memcpy(first, resp.request_id, sizeof first);
        response_clear(&resp);
        request(fx, EVHTTP_REQ_GET, "/nope", NULL, NULL, &resp);
        assert_string_not_equal(first, resp.request_id);
    }
    response_clear(&resp);
}

static void test_probes(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, "{\"status\":\"ok\"}");
    response_clear(&resp);

    request(fx, EVHTTP_REQ_GET, "/readyz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "status"), "ready");
    response_clear(&resp);

    azc_http_set_ready_cb(fx->h, ready_cb, fx);
    fx->ready_rc = AZC_EUNAVAIL;
    request(fx, EVHTTP_REQ_GET, "/readyz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 503);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal(jstr(&resp, "status"), "not_ready");
    assert_string_equal(jstr(&resp, "reason"), "database down");
    response_clear(&resp);

    fx->ready_rc = AZC_OK;
    request(fx, EVHTTP_REQ_GET, "/readyz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(jstr(&resp, "status"), "ready");
    response_clear(&resp);

    /* Probes log at debug level, other requests at info. */
    assert_non_null(strstr(log_text(fx), "\"level\":\"debug\",\"component\":\"test\","
                                         "\"msg\":\"request\""));
}

/* The level of the access line of the request to `route` answered with
 * `status`, from the captured log; NULL when there is none. */
static const char *access_level(struct fixture *fx, const char *route, int status)
{
    static char level[16];
    const char *p = log_text(fx);

    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        json_t *line = json_loadb(p, nl != NULL ? (size_t)(nl - p) : strlen(p), 0, NULL);
        const char *r = json_string_value(json_object_get(line, "route"));
        const char *msg = json_string_value(json_object_get(line, "msg"));

        if (r != NULL && msg != NULL && strcmp(r, route) == 0 && strcmp(msg, "request") == 0 &&
            json_integer_value(json_object_get(line, "status")) == status) {
            snprintf(level, sizeof level, "%s",
                     json_string_value(json_object_get(line, "level")));
            json_decref(line);
            return level;
        }
        json_decref(line);
        p = nl != NULL ? nl + 1 : NULL;
    }
    return NULL;
}

static void test_quiet_route(void **state)
{
    static const int statuses[] = { 200, 403, 503 };
    struct fixture *fx = *state;
    struct response resp;
    char path[32];
    size_t i;

    for (i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        snprintf(path, sizeof path, "/v1/quiet/%d", statuses[i]);
        request(fx, EVHTTP_REQ_GET, path, NULL, NULL, &resp);
        assert_int_equal(resp.status, statuses[i]);
        response_clear(&resp);
    }
    /* Below 500 at debug, a 5xx at info; other routes at info. */
    assert_string_equal(access_level(fx, "/v1/quiet/{status}", 200), "debug");
    assert_string_equal(access_level(fx, "/v1/quiet/{status}", 403), "debug");
    assert_string_equal(access_level(fx, "/v1/quiet/{status}", 503), "info");
    request(fx, EVHTTP_REQ_GET, "/v1/teams/a", NULL, NULL, &resp);
    response_clear(&resp);
    assert_string_equal(access_level(fx, "/v1/teams/{id}", 200), "info");
}

static void test_metrics_endpoint(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/teams/a/members/b", NULL, NULL, &resp);
    response_clear(&resp);
    request(fx, EVHTTP_REQ_GET, "/v1/teams/c/members/d", NULL, NULL, &resp);
    response_clear(&resp);
    request(fx, EVHTTP_REQ_GET, "/nope", NULL, NULL, &resp);
    response_clear(&resp);
    request(fx, EVHTTP_REQ_DELETE, "/healthz", NULL, NULL, &resp);
    response_clear(&resp);

    request(fx, EVHTTP_REQ_GET, "/metrics", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "text/plain; version=0.0.4");
    assert_non_null(strstr(resp.body, "# TYPE http_requests_total counter\n"));
    assert_non_null(strstr(resp.body,
        "http_requests_total{service=\"test\",route=\"/v1/teams/{id}/members/{user_id}\","
        "method=\"GET\",code=\"200\"} 2\n"));
    assert_non_null(strstr(resp.body,
        "http_requests_total{service=\"test\",route=\"unmatched\",method=\"GET\",code=\"404\"} 1\n"));
    assert_non_null(strstr(resp.body,
        "http_requests_total{service=\"test\",route=\"/healthz\",method=\"DELETE\",code=\"405\"} 1\n"));
    assert_non_null(strstr(resp.body, "# TYPE http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(resp.body,
        "http_request_duration_seconds_count{service=\"test\","
        "route=\"/v1/teams/{id}/members/{user_id}\"} 2\n"));
    assert_non_null(strstr(resp.body,
        "http_request_duration_seconds_bucket{service=\"test\",route=\"unmatched\",le=\"+Inf\"} 1\n"));
    response_clear(&resp);
}

static void test_no_registry(void **state)
{
    struct fixture *fx = *state;
    azc_http *h;
    azc_err e;
    struct response resp;
    int saved = fx->port;

    h = azc_http_new(fx->base, NULL, NULL, NULL, &e);
    assert_non_null(h);
    assert_int_equal(azc_http_bind(h, "127.0.0.1", 0, &e), AZC_OK);
    fx->port = azc_http_bound_port(h);
    request(fx, EVHTTP_REQ_GET, "/metrics", NULL, NULL, &resp);
    assert_error(&resp, 404, "not_found");
    response_clear(&resp);
    request(fx, EVHTTP_REQ_GET, "/healthz", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    response_clear(&resp);
    azc_http_free(h);
    fx->port = saved;
}
static void test_double_reply(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/twice", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, "{\"n\":1}");
    assert_non_null(strstr(log_text(fx), "second reply 201 to /v1/twice ignored (first was 200)"));
    assert_non_null(strstr(log_text(fx), "second reply 500 to /v1/twice ignored"));
    response_clear(&resp);
}

static void test_handler_without_reply(void **state)
{
    struct fixture *fx = *state;
    struct response resp;

    request(fx, EVHTTP_REQ_GET, "/v1/noreply", NULL, NULL, &resp);
    assert_error(&resp, 500, "internal");
    assert_non_null(strstr(log_text(fx), "returned without a reply"));
    response_clear(&resp);
}

static void test_raw_reply_and_headers(void **state)
{
    struct fixture *fx = *state;
    static const char req[] = "GET /v1/text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct response resp;
    char *raw;

    request(fx, EVHTTP_REQ_GET, "/v1/text", NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "text/plain; charset=utf-8");
    assert_string_equal(resp.body, "hello\n");
    assert_int_equal(fx->add_header_rc[0], AZC_EINVAL);
    assert_int_equal(fx->add_header_rc[1], AZC_EINVAL);
    assert_int_equal(fx->add_header_rc[2], AZC_OK);
    response_clear(&resp);

    raw = raw_exchange(fx, req, sizeof req - 1);
    assert_non_null(strstr(raw, "\r\nX-Fine: yes\r\n"));
    assert_null(strstr(raw, "Injected"));
    assert_non_null(strstr(raw, "\r\nContent-Length: 6\r\n"));
    free(raw);
}

static void test_bad_routes(void **state)
{
    static const char *const bad[] = {
        "nope", "", "/a//b", "/a/", "/{id", "/{1x}", "/{}", "/{a}/{a}", "/a%20", "/a{b}",
        "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18/19/20/21/22/23/24/25/26/27/28/29/30/31/32/33",
    };
    struct fixture *fx = *state;
    struct response resp;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        azc_http_route rt = { AZC_HTTP_GET, bad[i], h_team_me, 0, 0 };

        assert_int_equal(azc_http_add_routes(fx->h, &rt, 1, NULL), AZC_EINVAL);
    }
    {
        azc_http_route no_method = { 0, "/x", h_team_me, 0, 0 };
        azc_http_route no_handler = { AZC_HTTP_GET, "/x", NULL, 0, 0 };
        azc_http_route bad_flags = { AZC_HTTP_GET, "/x", h_team_me, 0x80, 0 };
        azc_http_route bad_method = { 0x100, "/x", h_team_me, 0, 0 };

        assert_int_equal(azc_http_add_routes(fx->h, &no_method, 1, NULL), AZC_EINVAL);
        assert_int_equal(azc_http_add_routes(fx->h, &no_handler, 1, NULL), AZC_EINVAL);
        assert_int_equal(azc_http_add_routes(fx->h, &bad_flags, 1, NULL), AZC_EINVAL);
        assert_int_equal(azc_http_add_routes(fx->h, &bad_method, 1, NULL), AZC_EINVAL);
    }
    {
        /* All or nothing: the good entry is not registered either. */
        const azc_http_route pair[] = {
            { AZC_HTTP_GET, "/good", h_team_me, 0, 0 },
            { AZC_HTTP_GET, "/bad//", h_team_me, 0, 0 },
        };

        assert_int_equal(azc_http_add_routes(fx->h, pair, 2, NULL), AZC_EINVAL);
        request(fx, EVHTTP_REQ_GET, "/good", NULL, NULL, &resp);
        assert_int_equal(resp.status, 404);
        response_clear(&resp);
        assert_int_equal(azc_http_add_routes(fx->h, pair, 1, NULL), AZC_OK);
        request(fx, EVHTTP_REQ_GET, "/good", NULL, NULL, &resp);
        assert_int_equal(resp.status, 200);
        response_clear(&resp);
    }
    assert_non_null(strstr(log_text(fx), "cannot add routes: route pattern \\\"/a//b\\\" has an empty segment"));
}

static void test_bind_errors(void **state)
{
    struct fixture *fx = *state;
    azc_err e;

    assert_int_equal(azc_http_bind(fx->h, "127.0.0.1", 70000, &e), AZC_EINVAL);
    assert_int_equal(azc_http_bind(fx->h, "not an address", 0, &e), AZC_EINVAL);
    /* The port in use (no SO_REUSEPORT): refused. */
    assert_int_equal(azc_http_bind(fx->h, "127.0.0.1", fx->port, &e), AZC_ERROR);
    assert_non_null(strstr(e.msg, "cannot listen on 127.0.0.1"));
    assert_int_equal(azc_http_bound_port(fx->h), fx->port);
    azc_http_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_route_params),
        T(test_percent_decoding),
        T(test_invalid_path),
        T(test_prefix_route),
        T(test_not_found),
        T(test_method_not_allowed),
        T(test_payload_too_large),
        T(test_unsupported_media_type),
        T(test_invalid_json),
        T(test_json_echo),
        T(test_head),
        T(test_header_too_large),
        T(test_query_string),
        T(test_request_id),
        T(test_probes),
        T(test_quiet_route),
        T(test_metrics_endpoint),
        T(test_no_registry),
        T(test_double_reply),
        T(test_handler_without_reply),
        T(test_raw_reply_and_headers),
        T(test_bad_routes),
        T(test_bind_errors),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
