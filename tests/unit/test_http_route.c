/*
 * Unit tests: the HTTP helper's routing functions (common/http_route.c)
 * without sockets or an event loop: patterns, matching and the 405 method
 * set, path splitting with percent-decoding, query strings, and the
 * request framing check.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/http_internal.h"

static void h_any(azc_http_req *r, void *arg)
{
    (void)r;
    (void)arg;
}

static void parse_ok(struct azc__http_route *rt, const char *pattern, unsigned methods)
{
    azc_err e;

    memset(rt, 0, sizeof *rt);
    assert_int_equal(azc__http_route_parse(rt, pattern, &e), AZC_OK);
    rt->methods = methods;
    rt->handler = h_any;
}

static void test_pattern_parse(void **state)
{
    static const char *const bad[] = {
        "nope", "", "/a//b", "/a/", "/{id", "/{1x}", "/{}", "/{a}/{a}", "/a%20", "/a{b}",
        "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18/19/20/21/22/23/24/25/26/27/28/29/30/31/32/33",
    };
    struct azc__http_route rt;
    azc_err e;
    size_t i;
    (void)state;

    parse_ok(&rt, "/v1/teams/{id}/members/{user_id}", AZC_HTTP_GET);
    assert_int_equal(rt.nsegs, 5);
    assert_string_equal(rt.segs[2].text, "id");
    assert_true(rt.segs[2].param);
    assert_false(rt.segs[3].param);
    azc__http_route_clear(&rt);
    parse_ok(&rt, "/", AZC_HTTP_GET);
    assert_int_equal(rt.nsegs, 0);
    azc__http_route_clear(&rt);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&rt, 0, sizeof rt);
        assert_int_equal(azc__http_route_parse(&rt, bad[i], &e), AZC_EINVAL);
        azc__http_route_clear(&rt);
    }
}

static void test_split_path(void **state)
{
    char *segs[AZC_HTTP_MAX_SEGMENTS], *buf;
    size_t n;
    azc_err e;
    (void)state;

    assert_int_equal(azc__http_split_path("/v1/a%20b%2Fc/%C3%A9+x/", &buf, segs, &n, &e), AZC_OK);
    assert_int_equal(n, 4);
    assert_string_equal(segs[1], "a b/c");          /* %2F stays inside the segment */
    assert_string_equal(segs[2], "\xc3\xa9+x");     /* '+' is literal in paths */
    assert_string_equal(segs[3], "");               /* trailing slash: empty segment */
    free(buf);
    assert_int_equal(azc__http_split_path("/", &buf, segs, &n, &e), AZC_OK);
    assert_int_equal(n, 0);
    free(buf);
    assert_int_equal(azc__http_split_path("/a/%zz", &buf, segs, &n, &e), AZC_EINVAL);
    free(buf);
    assert_int_equal(azc__http_split_path("/a%00b", &buf, segs, &n, &e), AZC_EINVAL);
    free(buf);
    assert_int_equal(azc__http_split_path("/a/%2e%2E/b", &buf, segs, &n, &e), AZC_EINVAL);
    assert_string_equal(e.msg, "dot segment in path");
    free(buf);
    assert_int_equal(azc__http_split_path("relative", &buf, segs, &n, &e), AZC_EINVAL);
    free(buf);
    assert_int_equal(azc__http_split_path("/1/2/3/4/5/6/7/8/9/0/1/2/3/4/5/6/7/8/9/0/1/2/3/4/5/6/"
                                          "7/8/9/0/1/2/3", &buf, segs, &n, &e), AZC_ETOOBIG);
    free(buf);
}

static void test_route_find(void **state)
{
    struct azc__http_route rt[3];
    const struct azc__http_route *found, *first;
    char *segs[AZC_HTTP_MAX_SEGMENTS], *buf;
    unsigned allowed;
    char allow[64];
    size_t n, i;
    azc_err e;
    (void)state;

    parse_ok(&rt[0], "/v1/teams/me", AZC_HTTP_GET);
    parse_ok(&rt[1], "/v1/teams/{id}", AZC_HTTP_GET | AZC_HTTP_DELETE);
    parse_ok(&rt[2], "/v1/teams/{id}", AZC_HTTP_PUT);
    assert_int_equal(azc__http_split_path("/v1/teams/me", &buf, segs, &n, &e), AZC_OK);
    /* Registration order: the literal route first. */
    assert_ptr_equal(azc__http_route_find(rt, 3, segs, n, AZC_HTTP_GET, &first, &allowed), &rt[0]);
    /* HEAD is served by GET routes. */
    assert_ptr_equal(azc__http_route_find(rt, 3, segs, n, AZC_HTTP_HEAD, &first, &allowed), &rt[0]);
    assert_ptr_equal(azc__http_route_find(rt, 3, segs, n, AZC_HTTP_PUT, &first, &allowed), &rt[2]);
    free(buf);
    assert_int_equal(azc__http_split_path("/v1/teams/t1", &buf, segs, &n, &e), AZC_OK);
    found = azc__http_route_find(rt, 3, segs, n, AZC_HTTP_PATCH, &first, &allowed);
    assert_null(found);
    assert_ptr_equal(first, &rt[1]);
    azc__http_allow_list(allowed, allow, sizeof allow);
    assert_string_equal(allow, "GET, HEAD, PUT, DELETE");
    free(buf);
    assert_int_equal(azc__http_split_path("/v1/teams/", &buf, segs, &n, &e), AZC_OK);
    assert_null(azc__http_route_find(rt, 3, segs, n, AZC_HTTP_GET, &first, &allowed));
    assert_null(first);                             /* a parameter never matches "" */
    free(buf);
    for (i = 0; i < 3; i++)
        azc__http_route_clear(&rt[i]);
}

static void test_query(void **state)
{
    static const char *const bad[] = { "limit=%zz", "=x", "limit", "a=1&&b=2", "a=%00", "a=1&" };
    struct azc__http_param *q;
    char *buf;
    size_t n, i;
    azc_err e;
    (void)state;

    assert_int_equal(azc__http_parse_query("limit=10&na%6De=a+b%26c&limit=", &buf, &q, &n, &e),
                     AZC_OK);
    assert_int_equal(n, 3);
    assert_string_equal(q[0].name, "limit");
    assert_string_equal(q[0].value, "10");
    assert_string_equal(q[1].name, "name");
    assert_string_equal(q[1].value, "a b&c");
    assert_string_equal(q[2].value, "");
    free(buf);
    free(q);
    assert_int_equal(azc__http_parse_query(NULL, &buf, &q, &n, &e), AZC_OK);
    assert_int_equal(n, 0);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(azc__http_parse_query(bad[i], &buf, &q, &n, &e), AZC_EINVAL);
        free(buf);
        free(q);
    }
}

/* Headers from "Name: value" strings, NULL-terminated. */
static int framing(int body_read, const char *const *hs)
{
    struct evkeyvalq q;
    azc_err e;
    int rc;

    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    for (; *hs != NULL; hs += 2)
        assert_int_equal(evhttp_add_header(&q, hs[0], hs[1]), 0);
    rc = azc__http_check_framing(&q, body_read, &e);
    evhttp_clear_headers(&q);
    return rc;
}

static void test_framing(void **state)
{
    (void)state;
    assert_int_equal(framing(1, (const char *const[]){ "Content-Length", "5", NULL }), AZC_OK);
    assert_int_equal(framing(1, (const char *const[]){ "Content-Length", "5",
                                                       "content-length", "5", NULL }), AZC_OK);
    assert_int_equal(framing(1, (const char *const[]){ "Content-Length", "5",
                                                       "Content-Length", "6", NULL }), AZC_EINVAL);
    assert_int_equal(framing(1, (const char *const[]){ "Content-Length", "5, 5", NULL }),
                     AZC_EINVAL);
    assert_int_equal(framing(1, (const char *const[]){ "Content-Length", "-1", NULL }),
                     AZC_EINVAL);
    assert_int_equal(framing(1, (const char *const[]){ "Transfer-Encoding", "chunked", NULL }),
                     AZC_OK);
    assert_int_equal(framing(1, (const char *const[]){ "Transfer-Encoding", "chunked",
                                                       "Content-Length", "3", NULL }), AZC_EINVAL);
    assert_int_equal(framing(1, (const char *const[]){ "Transfer-Encoding", "gzip, chunked",
                                                       NULL }), AZC_EINVAL);
    assert_int_equal(framing(1, (const char *const[]){ "Transfer-Encoding", "chunked",
                                                       "Transfer-Encoding", "chunked", NULL }),
                     AZC_EINVAL);
    /* HEAD and TRACE: evhttp reads no body, so none may be announced. */
    assert_int_equal(framing(0, (const char *const[]){ "Content-Length", "0", NULL }), AZC_OK);
    assert_int_equal(framing(0, (const char *const[]){ "Content-Length", "4", NULL }), AZC_EINVAL);
    assert_int_equal(framing(0, (const char *const[]){ "Transfer-Encoding", "chunked", NULL }),
                     AZC_EINVAL);
}

static void test_names_and_tokens(void **state)
{
    (void)state;
    assert_string_equal(azc_http_method_name(azc__http_method_flag(EVHTTP_REQ_TRACE)), "TRACE");
    assert_string_equal(azc_http_method_name(azc__http_method_flag(EVHTTP_REQ_CONNECT)),
                        "CONNECT");
    assert_int_equal(azc__http_method_flag((enum evhttp_cmd_type)(1 << 15)), 0);
    assert_string_equal(azc_http_method_name(0), "UNKNOWN");
    assert_true(azc__http_is_token("X-Fine"));
    assert_false(azc__http_is_token("Bad Name"));
    assert_true(azc__http_valid_request_id("abc-123_x.Y"));
    assert_false(azc__http_valid_request_id("bad id!"));
    assert_true(azc__http_is_json_media_type("Application/JSON; charset=utf-8"));
    assert_false(azc__http_is_json_media_type("application/jsonx"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern_parse),
        cmocka_unit_test(test_split_path),
        cmocka_unit_test(test_route_find),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_names_and_tokens),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
