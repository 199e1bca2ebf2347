/*
 * Unit tests of the gateway filter's route table and path normalisation
 * (gateway-filter/route.h): precedence, parameters and resources, the
 * path-confusion spellings of the Envoy and Istio CVEs in every option
 * mode, limits, malformed route documents and a 10,000-route table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway-filter/route.h"

static const af_path_opts DEF = { AF_SLASHES_MERGE, AF_DOTS_REFUSE, AF_ENCSEP_REFUSE };
static const af_path_opts STRICT = { AF_SLASHES_REFUSE, AF_DOTS_REFUSE, AF_ENCSEP_REFUSE };
static const af_path_opts LAX = { AF_SLASHES_MERGE, AF_DOTS_RESOLVE, AF_ENCSEP_KEEP };

/* Normalises raw with o; expect: the output, or NULL for AZC_EINVAL. */
static void norm_is(const af_path_opts *o, const char *raw, const char *expect)
{
    char out[AF_PATH_MAX + 1];
    size_t n = 99;
    azc_err e;
    int rc = af_path_normalize(raw, strlen(raw), o, out, sizeof out, &n, &e);

    if (expect == NULL) {
        if (rc != AZC_EINVAL)
            fail_msg("\"%s\": want AZC_EINVAL, got %d (\"%s\")", raw, rc, rc == 0 ? out : "");
        assert_true(strncmp(e.msg, "bad path: ", 10) == 0);
        return;
    }
    if (rc != AZC_OK)
        fail_msg("\"%s\": want \"%s\", got %d (%s)", raw, expect, rc, e.msg);
    assert_string_equal(out, expect);
    assert_int_equal(n, strlen(expect));
}

static af_routes *build(const char *json)
{
    json_error_t jerr;
    json_t *doc = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    af_routes *rt = NULL;
    azc_err e;

    if (doc == NULL)
        fail_msg("test json: %s", jerr.text);
    if (af_routes_new(doc, &rt, &e) != AZC_OK)
        fail_msg("build: %s", e.msg);
    json_decref(doc);
    return rt;
}

/* Builds and expects an AZC_EINVAL whose message contains `needle`. */
static void build_fails(const char *json, const char *needle)
{
    json_t *doc = json_loads(json, 0, NULL);
    af_routes *rt = (af_routes *)&rt;
    azc_err e;

    assert_non_null(doc);
    assert_int_equal(af_routes_new(doc, &rt, &e), AZC_EINVAL);
    assert_null(rt);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", json, e.msg, needle);
    json_decref(doc);
}

/* Matches; want_route < 0: no route. */
static void match_is(const af_routes *rt, const char *method, const char *path, int want_route,
                     const char *resource)
{
    af_route_match m;
    int rc = af_routes_match(rt, method, path, strlen(path), &m);

    if (want_route < 0) {
        if (rc != 0)
            fail_msg("%s %s: want no route, got %d (route %zu)", method, path, rc, m.route);
        return;
    }
    if (rc != 1)
        fail_msg("%s %s: want route %d, got %d", method, path, want_route, rc);
    if ((int)m.route != want_route)
        fail_msg("%s %s: want route %d, got %zu (%s)", method, path, want_route, m.route,
                 m.pattern);
    if (resource != NULL)
        assert_string_equal(m.resource, resource);
}

/* Normalises with o then matches; NULL when the path is refused. */
static int norm_match(const af_routes *rt, const af_path_opts *o, const char *raw,
                      af_route_match *m)
{
    char out[AF_PATH_MAX + 1];
    size_t n;

    if (af_path_normalize(raw, strlen(raw), o, out, sizeof out, &n, NULL) != AZC_OK)
        return -100;
    return af_routes_match(rt, "GET", out, n, m);
}

/* ---- normalisation ---------------------------------------------------- */

static void test_norm_plain(void **s)
{
    (void)s;
    norm_is(&DEF, "/", "/");
    norm_is(&DEF, "/a/b", "/a/b");
    norm_is(&DEF, "/a?x=/admin", "/a");
    norm_is(&DEF, "/a#frag", "/a");
    norm_is(&DEF, "/a?#", "/a");
    norm_is(&DEF, "/a/?x", "/a/");
    /* A trailing slash is kept: "/admin/" is not "/admin". */
    norm_is(&DEF, "/admin/", "/admin/");
    /* Unreserved escapes decoded, the others kept upper-case. */
    norm_is(&DEF, "/%61%44%2d%5f%7e%30", "/aD-_~0");
    norm_is(&DEF, "/a%20b%3a%3F", "/a%20b%3A%3F");
    norm_is(&DEF, "/%25", "/%25");
    norm_is(&DEF, "/%252F", "/%252F");   /* decoded once only */
    norm_is(&DEF, "/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=");
    norm_is(&DEF, "/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9");
    norm_is(&DEF, "/%F0%9F%98%80", "/%F0%9F%98%80");
    norm_is(&DEF, "/...", "/...");
    norm_is(&DEF, "/a.b/.c/..d", "/a.b/.c/..d");
}

static void test_norm_refused_always(void **s)
{
    const af_path_opts *modes[] = { &DEF, &STRICT, &LAX };
    size_t i;

    (void)s;
    for (i = 0; i < 3; i++) {
        const af_path_opts *o = modes[i];
        norm_is(o, "", NULL);
        norm_is(o, "*", NULL);
        norm_is(o, "http://x/admin", NULL);
        norm_is(o, "admin", NULL);
        norm_is(o, "?/admin", NULL);
        norm_is(o, "/a\\b", NULL);
        norm_is(o, "/a%00b", NULL);
        norm_is(o, "/a%zz", NULL);
        norm_is(o, "/a%2", NULL);
        norm_is(o, "/a%", NULL);
        norm_is(o, "/a%2/", NULL);
        norm_is(o, "/a%g0", NULL);
        norm_is(o, "/a\tb", NULL);
        norm_is(o, "/a\rb", NULL);
        norm_is(o, "/a\x7f", NULL);
        norm_is(o, "/a%0A", NULL);
        norm_is(o, "/a%7F", NULL);
        norm_is(o, "/a b", NULL);
        norm_is(o, "/a{b}", NULL);
        norm_is(o, "/a|b", NULL);
        norm_is(o, "/a\"b", NULL);
        norm_is(o, "/caf\xc3\xa9", NULL);        /* raw bytes >= 0x80 */
        norm_is(o, "/\xc0\xaf", NULL);           /* raw overlong '/' */
        norm_is(o, "/%C0%AF", NULL);             /* encoded overlong '/' */
        norm_is(o, "/%E0%80%AF", NULL);          /* 3-byte overlong '/' */
        norm_is(o, "/%ED%A0%80", NULL);          /* surrogate */
        norm_is(o, "/%F4%90%80%80", NULL);       /* above U+10FFFF */
        norm_is(o, "/%C3", NULL);                /* truncated sequence */
        norm_is(o, "/%C3/%A9", NULL);
        norm_is(o, "/%C3a", NULL);
        norm_is(o, "/%80", NULL);                /* lone continuation */
        norm_is(o, "/%FF", NULL);
        norm_is(o, "/../admin", NULL);           /* never above the root */
        norm_is(o, "/a/../../admin", NULL);
        norm_is(o, "/..", NULL);
        norm_is(o, "/public/..;/admin", NULL);   /* Tomcat reads ".." */
        norm_is(o, "/public/.;x/admin", NULL);
        norm_is(o, "/public/%2e%2e;/admin", NULL);
    }
    norm_is(&DEF, "/public/..x;/a", "/public/..x;/a");
    norm_is(&DEF, "/public/a;b", "/public/a;b");
    {
        char out[16];
        size_t n;
        /* NUL inside the given length. */
        assert_int_equal(af_path_normalize("/a\0b", 4, &DEF, out, sizeof out, &n, NULL),
                         AZC_EINVAL);
        assert_int_equal(af_path_normalize(NULL, 0, &DEF, out, sizeof out, &n, NULL), AZC_EINVAL);
        assert_int_equal(af_path_normalize("/a", 2, &DEF, NULL, 0, &n, NULL), AZC_EINVAL);
        /* NULL options: the defaults. */
        assert_int_equal(af_path_normalize("//a", 3, NULL, out, sizeof out, &n, NULL), AZC_OK);
        assert_string_equal(out, "/a");
        assert_int_equal(af_path_normalize("/%2F", 4, NULL, out, sizeof out, &n, NULL),
                         AZC_EINVAL);
    }
}

static void test_norm_default_mode(void **s)
{
    (void)s;
    norm_is(&DEF, "//admin", "/admin");
    norm_is(&DEF, "///admin//x//", "/admin/x/");
    norm_is(&DEF, "//", "/");
    norm_is(&DEF, "/a/%2F..", NULL);
    norm_is(&DEF, "/admin%2f", NULL);
    norm_is(&DEF, "/a%5Cb", NULL);
    norm_is(&DEF, "/a%5cb", NULL);
    norm_is(&DEF, "/a/%2e%2e/admin", NULL);
    norm_is(&DEF, "/a/.%2e/x", NULL);
    norm_is(&DEF, "/a/%2E/b", NULL);
    norm_is(&DEF, "/a/./b", NULL);
    norm_is(&DEF, "/a/../b", NULL);
    norm_is(&DEF, "/a/.", NULL);
    norm_is(&DEF, "/a//../b", NULL);
}

static void test_norm_strict_mode(void **s)
{
    (void)s;
    norm_is(&STRICT, "//admin", NULL);
    norm_is(&STRICT, "/a//b", NULL);
    norm_is(&STRICT, "/a//", NULL);
    norm_is(&STRICT, "/a/", "/a/");
    norm_is(&STRICT, "/a/%2e%2e/admin", NULL);
    norm_is(&STRICT, "/admin%2F", NULL);
    norm_is(&STRICT, "/a/b", "/a/b");
}

static void test_norm_lax_mode(void **s)
{
    (void)s;
    norm_is(&LAX, "//admin", "/admin");
    norm_is(&LAX, "/a/b/../c", "/a/c");
    norm_is(&LAX, "/a/%2e%2e/admin", "/admin");
    norm_is(&LAX, "/a/.%2e/x", "/x");
    norm_is(&LAX, "/a/%2E/b", "/a/b");
    norm_is(&LAX, "/./a", "/a");
    norm_is(&LAX, "/a/.", "/a/");
    norm_is(&LAX, "/a/b/..", "/a/");
    norm_is(&LAX, "/a/..", "/");
    norm_is(&LAX, "/a//../b", "/b");     /* slashes merged before ".." */
    norm_is(&LAX, "/a/b/../../..", NULL);
    /* Kept encoded: never a separator, so ".." cannot climb over it. */
    norm_is(&LAX, "/a/%2F..", "/a/%2F..");
    norm_is(&LAX, "/admin%2f", "/admin%2F");
    norm_is(&LAX, "/a%5cb", "/a%5Cb");
    norm_is(&LAX, "/a%2F%2E%2E/b", "/a%2F../b");
    {
        af_path_opts o = { AF_SLASHES_REFUSE, AF_DOTS_RESOLVE, AF_ENCSEP_REFUSE };
        norm_is(&o, "/a/./b", "/a/b");
        norm_is(&o, "/a//b", NULL);
        norm_is(&o, "/a%2Fb", NULL);
    }
}

static void test_norm_long(void **s)
{
    char *raw = malloc(AF_PATH_MAX + 64), out[AF_PATH_MAX + 1], small[8];
    size_t n, i;
    azc_err e;

    (void)s;
    assert_non_null(raw);
    raw[0] = '/';
    for (i = 1; i < AF_PATH_MAX; i++)
        raw[i] = (i % 10 == 0) ? '/' : 'a';
    /* Exactly AF_PATH_MAX bytes: accepted. */
    assert_int_equal(af_path_normalize(raw, AF_PATH_MAX, &DEF, out, sizeof out, &n, &e), AZC_OK);
    assert_int_equal(n, AF_PATH_MAX);
    /* One more: refused, whatever follows. */
    raw[AF_PATH_MAX] = 'a';
    assert_int_equal(af_path_normalize(raw, AF_PATH_MAX + 1, &DEF, out, sizeof out, &n, &e),
                     AZC_ETOOBIG);
    /* A long query does not count. */
    raw[AF_PATH_MAX] = '?';
    for (i = AF_PATH_MAX + 1; i < AF_PATH_MAX + 64; i++)
        raw[i] = 'q';
    assert_int_equal(af_path_normalize(raw, AF_PATH_MAX + 64, &DEF, out, sizeof out, &n, &e),
                     AZC_OK);
    /* Too small an output buffer. */
    assert_int_equal(af_path_normalize("/abcdefghij", 11, &DEF, small, sizeof small, &n, &e),
                     AZC_ETOOBIG);
    assert_int_equal(af_path_normalize("/", 1, &DEF, small, 1, &n, &e), AZC_ETOOBIG);
    /* 4,000 slashes merged. */
    memset(raw, '/', 4000);
    raw[4000] = 'x';
    assert_int_equal(af_path_normalize(raw, 4001, &DEF, out, sizeof out, &n, &e), AZC_OK);
    assert_string_equal(out, "/x");
    free(raw);
}

static void test_opts_parse(void **s)
{
    static const char *const bad[] = {
        "[]", "\"merge\"", "{\"slashes\":\"drop\"}", "{\"slashes\":1}",
        "{\"dot_segments\":\"merge\"}", "{\"encoded_separators\":\"decode\"}",
        "{\"slash\":\"merge\"}", "{\"slashes\":null}",
    };
    af_path_opts o;
    azc_err e;
    json_t *j;
    size_t i;

    (void)s;
    memset(&o, 0x55, sizeof o);
    assert_int_equal(af_path_opts_parse(NULL, &o, &e), AZC_OK);
    assert_int_equal(o.slashes, AF_SLASHES_MERGE);
    assert_int_equal(o.dots, AF_DOTS_REFUSE);
    assert_int_equal(o.encoded_sep, AF_ENCSEP_REFUSE);
    j = json_loads("{\"slashes\":\"refuse\",\"dot_segments\":\"resolve\","
                   "\"encoded_separators\":\"keep\"}", 0, NULL);
    assert_int_equal(af_path_opts_parse(j, &o, &e), AZC_OK);
    assert_int_equal(o.slashes, AF_SLASHES_REFUSE);
    assert_int_equal(o.dots, AF_DOTS_RESOLVE);
    assert_int_equal(o.encoded_sep, AF_ENCSEP_KEEP);
    json_decref(j);
    j = json_loads("{\"dot_segments\":\"resolve\"}", 0, NULL);
    assert_int_equal(af_path_opts_parse(j, &o, &e), AZC_OK);
    assert_int_equal(o.slashes, AF_SLASHES_MERGE);
    assert_int_equal(o.dots, AF_DOTS_RESOLVE);
    json_decref(j);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        if (af_path_opts_parse(j, &o, &e) != AZC_EINVAL)
            fail_msg("%s accepted", bad[i]);
        assert_true(strncmp(e.msg, "path options: ", 14) == 0);
        json_decref(j);
    }
    j = json_loads("{\"slash\":\"merge\"}", 0, NULL);
    assert_int_equal(af_path_opts_parse(j, &o, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "slash"));
    json_decref(j);
}

/* ---- routes ------------------------------------------------------------ */

static const char PREC[] = "{\"routes\":["
    /* 0 */ "{\"method\":\"GET\",\"path\":\"/a/{x}/c\",\"action\":\"a:p\",\"resource\":\"a/{x}\"},"
    /* 1 */ "{\"method\":\"GET\",\"path\":\"/a/b/{y}\",\"action\":\"a:l\",\"resource\":\"a/{y}\"},"
    /* 2 */ "{\"method\":\"GET\",\"path\":\"/a/{rest*}\",\"action\":\"a:r\",\"resource\":\"a/all\"},"
    /* 3 */ "{\"method\":\"GET\",\"path\":\"/a/b/c\",\"action\":\"a:lit\",\"resource\":\"a/abc\"},"
    /* 4 */ "{\"method\":\"*\",\"path\":\"/m\",\"action\":\"m:any\",\"resource\":\"m/1\"},"
    /* 5 */ "{\"method\":[\"POST\",\"PUT\"],\"path\":\"/m\",\"action\":\"m:w\",\"resource\":\"m/1\"},"
    /* 6 */ "{\"method\":\"DELETE\",\"path\":\"/u/{id}\",\"action\":\"u:del\",\"resource\":\"u/{id}\"},"
    /* 7 */ "{\"method\":\"GET\",\"path\":\"/u/me\",\"action\":\"u:me\",\"resource\":\"u/me\"},"
    /* 8 */ "{\"method\":\"HEAD\",\"path\":\"/h\",\"action\":\"h:head\",\"resource\":\"h/1\"},"
    /* 9 */ "{\"method\":\"GET\",\"path\":\"/h\",\"action\":\"h:get\",\"resource\":\"h/1\"},"
    /*10 */ "{\"method\":\"GET\",\"path\":\"/\",\"action\":\"root:read\",\"resource\":\"*\"},"
    /*11 */ "{\"method\":\"GET\",\"path\":\"/t/\",\"action\":\"t:slash\",\"resource\":\"t/s\"},"
    /*12 */ "{\"method\":\"GET\",\"path\":\"/t\",\"action\":\"t:bare\",\"resource\":\"t/b\"},"
    /*13 */ "{\"method\":\"GET\",\"path\":\"/{p}/z\",\"action\":\"p:z\",\"resource\":\"p/{p}\"}"
    "]}";

static void test_precedence(void **s)
{
    af_routes *rt = build(PREC);
    af_route_match m;

    (void)s;
    assert_int_equal(af_routes_count(rt), 14);
    match_is(rt, "GET", "/a/b/c", 3, "a/abc");          /* literal beats all */
    match_is(rt, "GET", "/a/b/d", 1, "a/d");            /* literal 2nd beats {x} */
    match_is(rt, "GET", "/a/q/c", 0, "a/q");            /* {x} beats rest */
    match_is(rt, "GET", "/a/b/c/d", 2, "a/all");        /* backtracks to rest */
    match_is(rt, "GET", "/a/q", 2, NULL);
    match_is(rt, "GET", "/a/q/d/e/f", 2, NULL);
    match_is(rt, "GET", "/a/b/", 2, NULL);              /* {y} needs a non-empty segment */
    match_is(rt, "GET", "/a", -1, NULL);                /* rest needs one segment */
    match_is(rt, "GET", "/a/", -1, NULL);
    match_is(rt, "GET", "/a/b/c/", 2, NULL);
    /* Method before "*" at the same path. */
    match_is(rt, "POST", "/m", 5, NULL);
    match_is(rt, "PUT", "/m", 5, NULL);
    match_is(rt, "GET", "/m", 4, NULL);
    match_is(rt, "PROPFIND", "/m", 4, NULL);
    match_is(rt, "post", "/m", 4, NULL);                /* methods are case-sensitive */
    /* A leaf without the method falls back to a less specific template. */
    match_is(rt, "DELETE", "/u/me", 6, "u/me");
    match_is(rt, "GET", "/u/me", 7, NULL);
    match_is(rt, "GET", "/u/you", -1, NULL);
    match_is(rt, "POST", "/a/b/c", -1, NULL);
    /* GET also matches HEAD, an explicit HEAD route first. */
    match_is(rt, "HEAD", "/h", 8, NULL);
    match_is(rt, "GET", "/h", 9, NULL);
    match_is(rt, "HEAD", "/u/me", 7, NULL);
    match_is(rt, "HEAD", "/a/b/c", 3, NULL);
    /* The root and trailing slashes are significant. */
    match_is(rt, "GET", "/", 10, "*");
    match_is(rt, "GET", "/t/", 11, NULL);
    match_is(rt, "GET", "/t", 12, NULL);
    match_is(rt, "GET", "/t/x", -1, NULL);
    /* Parameter at the first segment; a literal child there ("a") does not
     * hide it. */
    match_is(rt, "GET", "/a/z", 2, NULL);               /* "a" literal wins, then rest */
    match_is(rt, "GET", "/q/z", 13, "p/q");
    assert_int_equal(af_routes_match(rt, "GET", "/a/b/c", 6, &m), 1);
    assert_string_equal(m.pattern, "/a/b/c");
    assert_string_equal(m.action, "a:lit");
    /* Bad calls. */
    assert_int_equal(af_routes_match(rt, "GET", "", 0, &m), AZC_EINVAL);
    assert_int_equal(af_routes_match(rt, "GET", "a", 1, &m), AZC_EINVAL);
    assert_int_equal(af_routes_match(NULL, "GET", "/a", 2, &m), AZC_EINVAL);
    assert_int_equal(af_routes_match(rt, NULL, "/a", 2, &m), AZC_EINVAL);
    /* Only `len` bytes count. */
    assert_int_equal(af_routes_match(rt, "GET", "/a/b/c", 4, &m), 1);
    assert_int_equal(m.route, 2);
    af_routes_free(rt);
}

static void test_params_resources(void **s)
{
    af_routes *rt = build("{\"routes\":["
        "{\"method\":\"GET\",\"path\":\"/runtime-groups/{id}\",\"action\":\"runtime_groups:read\","
        " \"resource\":\"runtime_groups/{id}\"},"
        "{\"method\":\"GET\",\"path\":\"/orgs/{org}/teams/{team}\",\"action\":\"teams:read\","
        " \"resource\":\"teams/{org}.{team}-x\"},"
        "{\"method\":\"GET\",\"path\":\"/files/{org}/{path*}\",\"action\":\"files:read\","
        " \"resource\":\"orgs/{org}\"},"
        "{\"method\":\"GET\",\"path\":\"/k/{id}\",\"action\":\"k:read\","
        " \"resource\":\"k/{id}{id}\"}"
        "]}");
    af_route_match m;
    char big[AF_PATH_MAX];
    size_t n;

    (void)s;
    match_is(rt, "GET", "/runtime-groups/rg-1", 0, "runtime_groups/rg-1");
    match_is(rt, "GET", "/runtime-groups/A.b~c:d@e+f=g", 0, "runtime_groups/A.b~c:d@e+f=g");
    match_is(rt, "GET", "/orgs/acme/teams/red", 1, "teams/acme.red-x");
    match_is(rt, "GET", "/files/acme/a/b/c", 2, "orgs/acme");
    match_is(rt, "GET", "/files/acme/a/", 2, "orgs/acme");
    match_is(rt, "GET", "/files/acme/", -1, NULL);
    match_is(rt, "GET", "/k/ab", 3, "k/abab");
    match_is(rt, "GET", "/runtime-groups", -1, NULL);
    match_is(rt, "GET", "/runtime-groups/", -1, NULL);
    match_is(rt, "GET", "/runtime-groups/a/b", -1, NULL);
    /* A parameter may never turn into a wildcard or an invalid id. */
    assert_int_equal(af_routes_match(rt, "GET", "/runtime-groups/*", 17, &m), AZC_EINVAL);
    assert_int_equal(af_routes_match(rt, "GET", "/runtime-groups/a%2Fb", 21, &m), AZC_EINVAL);
    assert_int_equal(af_routes_match(rt, "GET", "/runtime-groups/a!", 18, &m), AZC_EINVAL);
    /* The resource is the normalised spelling: "%72g" reads as "rg". */
    assert_int_equal(norm_match(rt, &DEF, "/runtime-groups/%72g", &m), 1);
    assert_string_equal(m.resource, "runtime_groups/rg");
    /* A substituted resource over AF_RESOURCE_MAX. */
    memset(big, 'a', sizeof big);
    memcpy(big, "/k/", 3);
    n = 3 + 600;
    assert_int_equal(af_routes_match(rt, "GET", big, n, &m), AZC_ETOOBIG);
    /* An id over 256 characters fits the buffer but is not a resource. */
    n = 3 + 300;
    assert_int_equal(af_routes_match(rt, "GET", big, n, &m), AZC_EINVAL);
    af_routes_free(rt);
}

/* Every confusing spelling reaches what its plain form reaches, or nothing. */
static void test_confusion(void **s)
{
    af_routes *rt = build("{\"routes\":["
        "{\"method\":\"GET\",\"path\":\"/admin\",\"action\":\"admin:read\",\"resource\":\"admin/x\"},"
        "{\"method\":\"GET\",\"path\":\"/a/{id}\",\"action\":\"a:read\",\"resource\":\"a/{id}\"},"
        "{\"method\":\"GET\",\"path\":\"/public/{p*}\",\"action\":\"pub:read\",\"resource\":\"pub/x\"}"
        "]}");
    static const char *const odd[] = {
        "//admin", "/a/%2F..", "/a%5C..%5Cadmin", "/a/%2e%2e/admin", "/a/.%2e/admin",
        "/a/%2E/admin", "/admin%2f", "/admin/", "/a\\..\\admin", "/admin%00", "/admin%zz",
        "/admin%2", "/a?x=/admin", "/a#/admin", "/public/%C0%AE%C0%AE/admin",
        "/public/..%2Fadmin", "/public/..%5Cadmin", "/public/%2e%2e/admin", "/public/../admin",
        "/ADMIN", "/admin;x", "/public/..;/admin", "*", "http://x/admin", "", "/admin\x01",
    };
    const af_path_opts *modes[] = { &DEF, &STRICT, &LAX };
    af_route_match m;
    size_t i, k;

    (void)s;
    for (k = 0; k < 3; k++) {
        for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
            int rc = norm_match(rt, modes[k], odd[i], &m);
            /* Refused, no route, or a route whose resource is the one the
             * normalised path spells: "/admin" only via a spelling that
             * means "/admin" in this mode. */
            if (rc == 1 && m.route == 0) {
                int ok = (strcmp(odd[i], "//admin") == 0 && modes[k]->slashes == AF_SLASHES_MERGE) ||
                         (modes[k]->dots == AF_DOTS_RESOLVE &&
                          (strstr(odd[i], "%2e%2e") || strstr(odd[i], ".%2e") ||
                           strstr(odd[i], "/../") || strstr(odd[i], "%2E")));
                if (!ok)
                    fail_msg("mode %zu: \"%s\" reached /admin", k, odd[i]);
            }
            if (rc == 1 && m.route == 1)
                assert_true(strncmp(m.resource, "a/", 2) == 0);
        }
    }
    /* Merge: "//admin" matches what "/admin" matches. */
    assert_int_equal(norm_match(rt, &DEF, "//admin", &m), 1);
    assert_int_equal(m.route, 0);
    assert_int_equal(norm_match(rt, &DEF, "/admin", &m), 1);
    assert_int_equal(m.route, 0);
    assert_int_equal(norm_match(rt, &STRICT, "//admin", &m), -100);
    /* Resolve: "/a/%2e%2e/admin" is "/admin". */
    assert_int_equal(norm_match(rt, &LAX, "/a/%2e%2e/admin", &m), 1);
    assert_int_equal(m.route, 0);
    assert_int_equal(norm_match(rt, &DEF, "/a/%2e%2e/admin", &m), -100);
    /* Keep: "/a/%2F.." stays under /a/ and fails the id check; never
     * "/admin" nor "/". */
    assert_int_equal(norm_match(rt, &LAX, "/a/%2F..", &m), AZC_EINVAL);
    assert_int_equal(norm_match(rt, &LAX, "/public/..%2Fadmin", &m), 1);
    assert_int_equal(m.route, 2);
    /* Trailing slash: no route. */
    assert_int_equal(norm_match(rt, &DEF, "/admin/", &m), 0);
    af_routes_free(rt);
}

static void test_long_paths(void **s)
{
    af_routes *rt = build("{\"routes\":["
        "{\"method\":\"GET\",\"path\":\"/a/{p*}\",\"action\":\"a:read\",\"resource\":\"a/x\"},"
        "{\"method\":\"GET\",\"path\":\"/{x}\",\"action\":\"x:read\",\"resource\":\"x/{x}\"}]}");
    char *p = malloc(AF_PATH_MAX + 2);
    af_route_match m;
    size_t i;

    (void)s;
    assert_non_null(p);
    /* 4,096 segments: past every template's depth, still answered. */
    for (i = 0; i < AF_PATH_MAX; i += 2) {
        p[i] = '/';
        p[i + 1] = 'a';
    }
    assert_int_equal(af_routes_match(rt, "GET", p, AF_PATH_MAX, &m), 1);
    assert_int_equal(m.route, 0);
    p[1] = 'b';
    assert_int_equal(af_routes_match(rt, "GET", p, AF_PATH_MAX, &m), 0);
    assert_int_equal(af_routes_match(rt, "GET", p, AF_PATH_MAX + 1, &m), AZC_ETOOBIG);
    /* One long segment. */
    p[0] = '/';
    memset(p + 1, 'z', AF_PATH_MAX - 1);
    assert_int_equal(af_routes_match(rt, "GET", p, AF_PATH_MAX, &m), AZC_ETOOBIG);
    assert_int_equal(af_routes_match(rt, "GET", p, 200, &m), 1);
    assert_int_equal(m.route, 1);
    free(p);
    af_routes_free(rt);
}

static void test_bad_documents(void **s)
{
#define R(x) "{\"routes\":[{\"method\":\"GET\",\"path\":\"/ok\",\"action\":\"a:b\",\"resource\":\"a/b\"}," x "]}"
#define ONE(m, p, a, r) R("{\"method\":" m ",\"path\":" p ",\"action\":" a ",\"resource\":" r "}")
    (void)s;
    build_fails("[]", "not an object");
    build_fails("{}", "must be an array");
    build_fails("{\"routes\":{}}", "must be an array");
    build_fails("{\"routes\":[],\"x\":1}", "unknown member \"x\"");
    build_fails(R("1"), "route 1: not an object");
    build_fails(R("{\"method\":\"GET\",\"path\":\"/x\",\"action\":\"a:b\"}"),
                "route 1: missing member \"resource\"");
    build_fails(R("{\"method\":\"GET\",\"path\":\"/x\",\"action\":\"a:b\",\"resource\":\"a/b\",\"y\":1}"),
                "route 1: unknown member \"y\"");
    build_fails(ONE("\"GET\"", "1", "\"a:b\"", "\"a/b\""), "route 1: path, action");
    build_fails(ONE("\"GET\"", "\"/x\"", "null", "\"a/b\""), "route 1: path, action");
    build_fails(ONE("\"get\"", "\"/x\"", "\"a:b\"", "\"a/b\""), "route 1: unknown method");
    build_fails(ONE("\"FOO\"", "\"/x\"", "\"a:b\"", "\"a/b\""), "route 1: unknown method");
    build_fails(ONE("[]", "\"/x\"", "\"a:b\"", "\"a/b\""), "route 1: method must be");
    build_fails(ONE("1", "\"/x\"", "\"a:b\"", "\"a/b\""), "route 1: method must be");
    build_fails(ONE("[\"GET\",\"*\"]", "\"/x\"", "\"a:b\"", "\"a/b\""), "stands alone");
    build_fails(ONE("[\"GET\",1]", "\"/x\"", "\"a:b\"", "\"a/b\""), "route 1: method 1");
    build_fails(ONE("[\"GET\",\"GET\"]", "\"/x\"", "\"a:b\"", "\"a/b\""), "listed twice");
    build_fails(ONE("\"GET\"", "\"x\"", "\"a:b\"", "\"a/b\""), "must start with '/'");
    build_fails(ONE("\"GET\"", "\"\"", "\"a:b\"", "\"a/b\""), "must start with '/'");
    build_fails(ONE("\"GET\"", "\"//x\"", "\"a:b\"", "\"a/b\""), "empty segment");
    build_fails(ONE("\"GET\"", "\"/a/./b\"", "\"a:b\"", "\"a/b\""), "dot segment");
    build_fails(ONE("\"GET\"", "\"/a/../b\"", "\"a:b\"", "\"a/b\""), "dot segment");
    build_fails(ONE("\"GET\"", "\"/%61\"", "\"a:b\"", "\"a/b\""), "not in normalised form");
    build_fails(ONE("\"GET\"", "\"/%3a\"", "\"a:b\"", "\"a/b\""), "not in normalised form");
    build_fails(ONE("\"GET\"", "\"/a?b\"", "\"a:b\"", "\"a/b\""), "not in normalised form");
    build_fails(ONE("\"GET\"", "\"/a\\\\b\"", "\"a:b\"", "\"a/b\""), "backslash");
    build_fails(ONE("\"GET\"", "\"/a%00\"", "\"a:b\"", "\"a/b\""), "%00");
    build_fails(ONE("\"GET\"", "\"/a b\"", "\"a:b\"", "\"a/b\""), "not allowed");
    build_fails(ONE("\"GET\"", "\"/a{x}\"", "\"a:b\"", "\"a/b\""), "whole segment");
    build_fails(ONE("\"GET\"", "\"/{x}a\"", "\"a:b\"", "\"a/b\""), "bad parameter");
    build_fails(ONE("\"GET\"", "\"/{}\"", "\"a:b\"", "\"a/b\""), "bad parameter");
    build_fails(ONE("\"GET\"", "\"/{*}\"", "\"a:b\"", "\"a/b\""), "bad parameter");
    build_fails(ONE("\"GET\"", "\"/{1x}\"", "\"a:b\"", "\"a/b\""), "bad parameter");
    build_fails(ONE("\"GET\"", "\"/{a-b}\"", "\"a:b\"", "\"a/b\""), "bad parameter");
    build_fails(ONE("\"GET\"", "\"/{p*}/x\"", "\"a:b\"", "\"a/b\""), "must be the last");
    build_fails(ONE("\"GET\"", "\"/{a}/{a}\"", "\"a:b\"", "\"a/b\""), "used twice");
    build_fails(ONE("\"GET\"", "\"/{a}/{a*}\"", "\"a:b\"", "\"a/b\""), "used twice");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"ab\"", "\"a/b\""), "route 1: action");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:*\"", "\"a/b\""), "route 1: action");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"A:b\"", "\"a/b\""), "route 1: action");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:b\"", "\"ab\""), "route 1: resource");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:b\"", "\"a/*\""), "route 1: resource");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:b\"", "\"a/\""), "route 1: resource");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:b\"", "\"a/b c\""), "route 1: resource");
    build_fails(ONE("\"GET\"", "\"/{t}\"", "\"a:b\"", "\"{t}/b\""), "fixed type");
    build_fails(ONE("\"GET\"", "\"/{t}\"", "\"a:b\"", "\"a/{u}\""), "{u}, which is not");
    build_fails(ONE("\"GET\"", "\"/{t}\"", "\"a:b\"", "\"a/{t\""), "unmatched '{'");
    build_fails(ONE("\"GET\"", "\"/{t}\"", "\"a:b\"", "\"a/t}\""), "unmatched '}'");
    build_fails(ONE("\"GET\"", "\"/{t*}\"", "\"a:b\"", "\"a/{t}\""), "rest parameter");
    build_fails(ONE("\"GET\"", "\"/x\"", "\"a:b\"", "\"a/{}\""), "not a parameter");
    /* Duplicates: same shape (parameter names do not count), overlapping
     * method. */
    build_fails(ONE("\"GET\"", "\"/ok\"", "\"a:c\"", "\"a/c\""), "as route 0");
    build_fails(ONE("[\"PUT\",\"GET\"]", "\"/ok\"", "\"a:c\"", "\"a/c\""), "(GET) as route 0");
    build_fails("{\"routes\":[{\"method\":\"GET\",\"path\":\"/u/{a}\",\"action\":\"a:b\",\"resource\":\"a/b\"},"
                "{\"method\":\"GET\",\"path\":\"/u/{b}\",\"action\":\"a:b\",\"resource\":\"a/b\"}]}",
                "route 1: same path shape");
    build_fails("{\"routes\":[{\"method\":\"*\",\"path\":\"/u\",\"action\":\"a:b\",\"resource\":\"a/b\"},"
                "{\"method\":\"*\",\"path\":\"/u\",\"action\":\"a:b\",\"resource\":\"a/b\"}]}",
                "route 1: same path shape");
    {
        /* Different methods, "*" beside a method, GET beside HEAD: fine. */
        af_routes *rt = build("{\"routes\":["
            "{\"method\":\"GET\",\"path\":\"/u/{a}\",\"action\":\"a:b\",\"resource\":\"a/b\"},"
            "{\"method\":\"POST\",\"path\":\"/u/{b}\",\"action\":\"a:c\",\"resource\":\"a/b\"},"
            "{\"method\":\"*\",\"path\":\"/u/{c}\",\"action\":\"a:d\",\"resource\":\"a/b\"},"
            "{\"method\":\"HEAD\",\"path\":\"/u/{d}\",\"action\":\"a:e\",\"resource\":\"a/b\"}]}");
        assert_int_equal(af_routes_count(rt), 4);
        af_routes_free(rt);
    }
    {
        /* Too many segments; an over-long action; an over-long path. */
        char doc[AF_PATH_MAX * 2], path[AF_PATH_MAX + 8];
        size_t i;
        for (i = 0; i < 65; i++)
            memcpy(path + 2 * i, "/s", 2);
        path[130] = '\0';
        snprintf(doc, sizeof doc, ONE("\"GET\"", "\"%s\"", "\"a:b\"", "\"a/b\""), path);
        build_fails(doc, "more than 64 segments");
        path[128] = '\0';
        snprintf(doc, sizeof doc, ONE("\"GET\"", "\"%s\"", "\"a:b\"", "\"a/b\""), path);
        {
            json_t *j = json_loads(doc, 0, NULL);
            af_routes *rt = NULL;
            assert_int_equal(af_routes_new(j, &rt, NULL), AZC_OK);
            json_decref(j);
            match_is(rt, "GET", path, 1, "a/b");
            af_routes_free(rt);
        }
        memset(path, 'a', 100);
        path[100] = '\0';
        snprintf(doc, sizeof doc, ONE("\"GET\"", "\"/x\"", "\"b:%s\"", "\"a/b\""), path);
        build_fails(doc, "route 1: action");
        path[0] = '/';
        memset(path + 1, 'a', AF_PATH_MAX);
        path[AF_PATH_MAX + 1] = '\0';
        snprintf(doc, sizeof doc, ONE("\"GET\"", "\"%s\"", "\"a:b\"", "\"a/b\""), path);
        build_fails(doc, "longer than");
    }
    {
        af_routes *rt = (af_routes *)&rt;
        assert_int_equal(af_routes_new(NULL, &rt, NULL), AZC_EINVAL);
        assert_null(rt);
        assert_int_equal(af_routes_new(NULL, NULL, NULL), AZC_EINVAL);
        af_routes_free(NULL);
        assert_int_equal(af_routes_count(NULL), 0);
    }
#undef ONE
#undef R
}

static void test_empty_table(void **s)
{
    af_routes *rt = build("{\"routes\":[]}");
    af_route_match m;

    (void)s;
    assert_int_equal(af_routes_count(rt), 0);
    assert_int_equal(af_routes_match(rt, "GET", "/", 1, &m), 0);
    assert_int_equal(af_routes_match(rt, "GET", "/a/b", 4, &m), 0);
    af_routes_free(rt);
}

/* 10,000 routes: 2,500 resource types x 4 shapes. */
static void test_many_routes(void **s)
{
    json_t *doc = json_object(), *list = json_array();
    af_routes *rt = NULL;
    af_route_match m;
    char path[128], res[128], act[128], want[128];
    size_t i;
    azc_err e;

    (void)s;
    assert_int_equal(json_object_set_new(doc, "routes", list), 0);
    for (i = 0; i < 2500; i++) {
        static const char *const fmt[4][3] = {
            { "/v1/t%zu/{id}", "t%zu:read", "t%zu/{id}" },
            { "/v1/t%zu/{id}/items/{item}", "t%zu:item", "t%zu/{id}.{item}" },
            { "/v1/t%zu/special/items/{item}", "t%zu:special", "t%zu/s-{item}" },
            { "/v1/t%zu/{id}/files/{f*}", "t%zu:files", "t%zu/{id}" },
        };
        size_t k;
        for (k = 0; k < 4; k++) {
            json_t *r = json_object();
            snprintf(path, sizeof path, fmt[k][0], i);
            snprintf(act, sizeof act, fmt[k][1], i);
            snprintf(res, sizeof res, fmt[k][2], i);
            assert_int_equal(json_object_set_new(r, "method", json_string("GET")), 0);
            assert_int_equal(json_object_set_new(r, "path", json_string(path)), 0);
            assert_int_equal(json_object_set_new(r, "action", json_string(act)), 0);
            assert_int_equal(json_object_set_new(r, "resource", json_string(res)), 0);
            assert_int_equal(json_array_append_new(list, r), 0);
        }
    }
    if (af_routes_new(doc, &rt, &e) != AZC_OK)
        fail_msg("%s", e.msg);
    json_decref(doc);
    assert_int_equal(af_routes_count(rt), 10000);
    for (i = 0; i < 2500; i += 7) {
        snprintf(path, sizeof path, "/v1/t%zu/g%zu", i, i);
        snprintf(want, sizeof want, "t%zu/g%zu", i, i);
        match_is(rt, "GET", path, (int)(4 * i), want);
        snprintf(path, sizeof path, "/v1/t%zu/g1/items/x%zu", i, i);
        snprintf(want, sizeof want, "t%zu/g1.x%zu", i, i);
        match_is(rt, "GET", path, (int)(4 * i + 1), want);
        snprintf(path, sizeof path, "/v1/t%zu/special/items/x", i);
        snprintf(want, sizeof want, "t%zu/s-x", i);
        match_is(rt, "GET", path, (int)(4 * i + 2), want);
        /* "special" literal then no "items": falls back to {id}. */
        snprintf(path, sizeof path, "/v1/t%zu/special/files/a/b", i);
        snprintf(want, sizeof want, "t%zu/special", i);
        match_is(rt, "GET", path, (int)(4 * i + 3), want);
        assert_int_equal(af_routes_match(rt, "GET", path, strlen(path), &m), 1);
        assert_string_equal(m.pattern + 0, m.pattern);
        snprintf(act, sizeof act, "t%zu:files", i);
        assert_string_equal(m.action, act);
        snprintf(path, sizeof path, "/v1/t%zu/g/other", i);
        match_is(rt, "GET", path, -1, NULL);
        snprintf(path, sizeof path, "/v1/u%zu/g", i);
        match_is(rt, "GET", path, -1, NULL);
        snprintf(path, sizeof path, "/v1/t%zu/g", i);
        match_is(rt, "POST", path, -1, NULL);
    }
    af_routes_free(rt);
}

static void test_load_file(void **s)
{
    char name[] = "/tmp/test_route_XXXXXX";
    af_routes *rt = NULL;
    azc_err e;
    FILE *f;
    int fd;

    (void)s;
    fd = mkstemp(name);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("{\"routes\":[{\"method\":\"GET\",\"path\":\"/runtime-groups/{id}\","
          "\"action\":\"runtime_groups:read\",\"resource\":\"runtime_groups/{id}\"}]}", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(af_routes_load_file(name, &rt, &e), AZC_OK);
    match_is(rt, "GET", "/runtime-groups/x1", 0, "runtime_groups/x1");
    af_routes_free(rt);

    /* Duplicate members are refused. */
    f = fopen(name, "w");
    assert_non_null(f);
    fputs("{\"routes\":[],\"routes\":[]}", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(af_routes_load_file(name, &rt, &e), AZC_EINVAL);
    assert_null(rt);
    assert_non_null(strstr(e.msg, "invalid JSON"));
    /* A bad route: the message names it. */
    f = fopen(name, "w");
    assert_non_null(f);
    fputs("{\"routes\":[{\"method\":\"GET\",\"path\":\"x\",\"action\":\"a:b\",\"resource\":\"a/b\"}]}", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(af_routes_load_file(name, &rt, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "route 0"));
    /* Not JSON. */
    f = fopen(name, "w");
    assert_non_null(f);
    fputs("{\"routes\":[", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(af_routes_load_file(name, &rt, &e), AZC_EINVAL);
    assert_int_equal(unlink(name), 0);
    /* Missing file, a directory, no name. */
    assert_int_equal(af_routes_load_file(name, &rt, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, name));
    assert_int_equal(af_routes_load_file("/tmp", &rt, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "not a regular file"));
    assert_int_equal(af_routes_load_file(NULL, &rt, &e), AZC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_plain),
        cmocka_unit_test(test_norm_refused_always),
        cmocka_unit_test(test_norm_default_mode),
        cmocka_unit_test(test_norm_strict_mode),
        cmocka_unit_test(test_norm_lax_mode),
        cmocka_unit_test(test_norm_long),
        cmocka_unit_test(test_opts_parse),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_params_resources),
        cmocka_unit_test(test_confusion),
        cmocka_unit_test(test_long_paths),
        cmocka_unit_test(test_bad_documents),
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
