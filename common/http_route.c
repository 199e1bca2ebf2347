/*
 * Routing for the HTTP helper: route patterns, matching, strict
 * percent-decoding of paths and query strings, and the framing check on
 * request headers. Everything here works on strings and route records
 * only, no sockets and no event loop, so tests/unit/test_http_route.c
 * drives it directly.
 *
 * Each path segment is decoded on its own, after the split, so "%2F" is a
 * slash inside a value and never a separator. evhttp_uridecode copies a
 * bad escape through unchanged and evhttp_parse_query_str leaves keys
 * encoded, so neither can say the input was malformed: the decoders here
 * refuse it instead.
 */
#include "common/http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/keyvalq_struct.h>

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
 * would silently cut the value short in C.
 */
int azc__http_pct_decode(const char *s, size_t n, char *out, int plus, size_t *outlen)
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
int azc__http_is_token(const char *s)
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

int azc__http_valid_request_id(const char *s)
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
int azc__http_is_json_media_type(const char *ct)
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

/* 0 for a method token evhttp does not know (EVHTTP_REQ_UNKNOWN_). */
unsigned azc__http_method_flag(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return AZC_HTTP_GET;
    case EVHTTP_REQ_POST: return AZC_HTTP_POST;
    case EVHTTP_REQ_PUT: return AZC_HTTP_PUT;
    case EVHTTP_REQ_PATCH: return AZC_HTTP_PATCH;
    case EVHTTP_REQ_DELETE: return AZC_HTTP_DELETE;
    case EVHTTP_REQ_HEAD: return AZC_HTTP_HEAD;
    case EVHTTP_REQ_OPTIONS: return AZC__HTTP_OPTIONS;
    case EVHTTP_REQ_TRACE: return AZC__HTTP_TRACE;
    case EVHTTP_REQ_CONNECT: return AZC__HTTP_CONNECT;
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
    case AZC__HTTP_OPTIONS: return "OPTIONS";
    case AZC__HTTP_TRACE: return "TRACE";
    case AZC__HTTP_CONNECT: return "CONNECT";
    default: return "UNKNOWN";
    }
}

/* ---- route patterns ---------------------------------------------------- */

void azc__http_route_clear(struct azc__http_route *rt)
{
    free(rt->pattern);
    free(rt->buf);
    rt->pattern = rt->buf = NULL;
}

int azc__http_route_parse(struct azc__http_route *rt, const char *pattern, azc_err *e)
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

int azc__http_route_matches(const struct azc__http_route *rt, char *const *segs, size_t nsegs)
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

const struct azc__http_route *azc__http_route_find(const struct azc__http_route *routes,
                                                   size_t n, char *const *segs, size_t nsegs,
                                                   unsigned method,
                                                   const struct azc__http_route **first,
                                                   unsigned *allowed)
{
    unsigned want = method;
    size_t i;

    *first = NULL;
    *allowed = 0;
    if (want == AZC_HTTP_HEAD)
        want |= AZC_HTTP_GET;
    for (i = 0; i < n; i++) {
        const struct azc__http_route *rt = &routes[i];

        if (!azc__http_route_matches(rt, segs, nsegs))
            continue;
        if (*first == NULL)
            *first = rt;
        if (rt->methods & want)
            return rt;
        *allowed |= rt->methods;
    }
    return NULL;
}

void azc__http_allow_list(unsigned methods, char *out, size_t len)
{
    static const unsigned order[] = { AZC_HTTP_GET, AZC_HTTP_HEAD, AZC_HTTP_POST,
                                      AZC_HTTP_PUT, AZC_HTTP_PATCH, AZC_HTTP_DELETE };
    size_t i, used = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    if (methods & AZC_HTTP_GET)
        methods |= AZC_HTTP_HEAD;
    for (i = 0; i < sizeof order / sizeof order[0] && used < len; i++) {
        if (methods & order[i]) {
            int w = snprintf(out + used, len - used, "%s%s", used > 0 ? ", " : "",
                             azc_http_method_name(order[i]));

            if (w < 0)
                break;
            used += (size_t)w;
        }
    }
}

/* ---- paths and query strings ------------------------------------------- */

int azc__http_split_path(const char *path, char **buf, char **segs, size_t *nsegs, azc_err *e)
{
    const char *p;
    char *out;
    size_t n = 0;

    *nsegs = 0;
    *buf = NULL;
    if (path == NULL || path[0] != '/')
        return azc_err_set(e, AZC_EINVAL, "path must start with '/'");
    if (path[1] == '\0')
        return AZC_OK;
    /* Decoding never grows a segment, and each '/' makes room for a NUL. */
    *buf = malloc(strlen(path) + 1);
    if (*buf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    out = *buf;
    for (p = path + 1;; ) {
        size_t seglen = strcspn(p, "/"), dlen;

        if (n == AZC_HTTP_MAX_SEGMENTS)
            return AZC_ETOOBIG;
        if (azc__http_pct_decode(p, seglen, out, 0, &dlen) != 0)
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

int azc__http_parse_query(const char *q, char **buf, struct azc__http_param **pairs, size_t *np,
                          azc_err *e)
{
    size_t n = 1, i, len;
    const char *p;
    char *out;

    *buf = NULL;
    *pairs = NULL;
    *np = 0;
    if (q == NULL || q[0] == '\0')
        return AZC_OK;
    len = strlen(q);
    for (p = q; *p != '\0'; p++)
        n += *p == '&';
    *pairs = calloc(n, sizeof **pairs);
    /* Each "k=v" decodes into at most its length + 1 ("k\0v\0"); the n - 1
     * '&' cover all but one byte. */
    *buf = malloc(len + 1);
    if (*pairs == NULL || *buf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    out = *buf;
    for (i = 0, p = q; i < n; i++) {
        size_t plen = strcspn(p, "&"), klen, dlen;
        const char *eq = memchr(p, '=', plen);

        if (eq == NULL || eq == p)
            return azc_err_set(e, AZC_EINVAL,
                               "malformed query string: expected name=value pairs joined by '&'");
        klen = (size_t)(eq - p);
        if (azc__http_pct_decode(p, klen, out, 1, &dlen) != 0)
            return azc_err_set(e, AZC_EINVAL, "invalid percent-encoding in query string");
        out[dlen] = '\0';
        (*pairs)[i].name = out;
        out += dlen + 1;
        if (azc__http_pct_decode(eq + 1, plen - klen - 1, out, 1, &dlen) != 0)
            return azc_err_set(e, AZC_EINVAL, "invalid percent-encoding in query string");
        out[dlen] = '\0';
        (*pairs)[i].value = out;
        out += dlen + 1;
        *np = i + 1;
        p += plen;
        if (*p == '&')
            p++;
    }
    return AZC_OK;
}

/* ---- framing ------------------------------------------------------------ */

/* A Content-Length value: digits only, at most 18 of them (no overflow). */
static int parse_length(const char *v, unsigned long long *out)
{
    size_t i, n;

    v += strspn(v, " \t");
    n = strspn(v, "0123456789");
    if (n == 0 || n > 18 || v[n + strspn(v + n, " \t")] != '\0')
        return -1;
    *out = 0;
    for (i = 0; i < n; i++)
        *out = *out * 10 + (unsigned long long)(v[i] - '0');
    return 0;
}

int azc__http_check_framing(const struct evkeyvalq *headers, int body_read, azc_err *e)
{
    const struct evkeyval *kv;
    size_t ncl = 0, nte = 0;
    unsigned long long cl = 0;
    const char *te = NULL;

    for (kv = headers->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (evutil_ascii_strcasecmp(kv->key, "Content-Length") == 0) {
            unsigned long long v;

            if (parse_length(kv->value, &v) != 0)
                return azc_err_set(e, AZC_EINVAL, "invalid content-length");
            if (ncl > 0 && v != cl)
                return azc_err_set(e, AZC_EINVAL, "conflicting content-length headers");
            cl = v;
            ncl++;
        } else if (evutil_ascii_strcasecmp(kv->key, "Transfer-Encoding") == 0) {
            te = kv->value;
            nte++;
        }
    }
    if (nte > 0 && ncl > 0)
        return azc_err_set(e, AZC_EINVAL, "content-length together with transfer-encoding");
    /* evhttp reads a chunked body only for exactly "chunked" and ignores
     * anything else, which would leave the body to be read as a request. */
    if (nte > 1 || (nte == 1 && evutil_ascii_strcasecmp(te, "chunked") != 0))
        return azc_err_set(e, AZC_EINVAL, "unsupported transfer-encoding");
    if (!body_read && (nte > 0 || cl > 0))
        return azc_err_set(e, AZC_EINVAL, "a body is not allowed with this method");
    return AZC_OK;
}
