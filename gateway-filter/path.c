/*
 * Path normalisation of the gateway filter (route.h): one left-to-right
 * pass that writes each segment into the output as it decodes it and then
 * decides what the segment is (empty, "." or ".."), so a dot segment spelt
 * "%2e%2E" is treated exactly as "..". What it writes is both what the
 * route table matches and what goes into the resource.
 */
#include "gateway-filter/route.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
/* ---- path normalisation ------------------------------------------------ */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_unreserved(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 3986 pchar other than '%': what may appear literally in a segment. */
static int is_pchar(unsigned char c)
{
    return is_unreserved(c) || (c != '\0' && strchr("!$&'()*+,;=:@", c) != NULL);
}

/* State of a UTF-8 sequence spelt with percent-escapes: an encoded byte
 * >= 0x80 must be part of a well-formed sequence (no overlong form, no
 * surrogate), so "%C0%AF", which a lax decoder downstream would turn into
 * '/', is refused instead of passed on. */
struct utf8 {
    int need;
    unsigned char lo, hi;
};

static int utf8_step(struct utf8 *u, unsigned char b)
{
    if (u->need > 0) {
        if (b < u->lo || b > u->hi)
            return 0;
        u->need--;
        u->lo = 0x80;
        u->hi = 0xBF;
        return 1;
    }
    u->lo = 0x80;
    u->hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        u->need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        u->need = 2;
        if (b == 0xE0)
            u->lo = 0xA0;
        else if (b == 0xED)
            u->hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        u->need = 3;
        if (b == 0xF0)
            u->lo = 0x90;
        else if (b == 0xF4)
            u->hi = 0x8F;
    } else
        return 0;
    return 1;
}

static const af_path_opts default_opts = { AF_SLASHES_MERGE, AF_DOTS_REFUSE, AF_ENCSEP_REFUSE };

static int bad(azc_err *e, const char *what, size_t at)
{
    return azc_err_set(e, AZC_EINVAL, "bad path: %s at offset %zu", what, at);
}

static int too_long(azc_err *e)
{
    return azc_err_set(e, AZC_ETOOBIG, "bad path: longer than %d bytes or the output buffer",
                       AF_PATH_MAX);
}

int af_path_normalize(const char *raw, size_t len, const af_path_opts *o, char *out,
                      size_t outsz, size_t *outlen, azc_err *e)
{
    size_t n, i, w, segstart;
    struct utf8 u = { 0, 0x80, 0xBF };

    if (o == NULL)
        o = &default_opts;
    if (outlen != NULL)
        *outlen = 0;
    if (out == NULL || (raw == NULL && len > 0))
        return azc_err_set(e, AZC_EINVAL, "bad path: no input or output buffer");
    if (outsz > 0)
        out[0] = '\0';
    /* The path ends at the query or fragment; look no further than the
     * limit so a huge target costs no more than a refused one. */
    for (n = 0; n < len && n <= AF_PATH_MAX && raw[n] != '?' && raw[n] != '#'; n++)
        ;
    if (n > AF_PATH_MAX)
        return too_long(e);
    if (n == 0)
        return azc_err_set(e, AZC_EINVAL, "bad path: empty");
    /* Refuses "*" (asterisk form) and "http://x/admin" (absolute form):
     * a route is only ever matched against an origin-form path. */
    if (raw[0] != '/')
        return azc_err_set(e, AZC_EINVAL, "bad path: does not start with '/'");
    if (outsz < 2)
        return too_long(e);
    out[0] = '/';
    w = 1;
    i = 1;
    for (;;) {
        int last;
        size_t seglen;

        segstart = w;
        while (i < n && raw[i] != '/') {
            unsigned char c = (unsigned char)raw[i];
            if (w + 1 >= outsz)
                return too_long(e);
            if (c == '%') {
                int hi, lo;
                unsigned char b;
                if (i + 2 >= n)
                    return bad(e, "truncated percent-escape", i);
                hi = hexval((unsigned char)raw[i + 1]);
                lo = hexval((unsigned char)raw[i + 2]);
                if (hi < 0 || lo < 0)
                    return bad(e, "malformed percent-escape", i);
                b = (unsigned char)(hi * 16 + lo);
                if (!utf8_step(&u, b))
                    return bad(e, "percent-escapes that are not well-formed utf-8", i);
                if (b == 0)
                    return bad(e, "%00", i);
                if (b < 0x20 || b == 0x7f)
                    return bad(e, "encoded control character", i);
                if ((b == '/' || b == '\\') && o->encoded_sep == AF_ENCSEP_REFUSE)
                    return bad(e, "encoded separator (%2F or %5C)", i);
                if (is_unreserved(b)) {
                    out[w++] = (char)b;
                } else {
                    static const char hex[] = "0123456789ABCDEF";
                    if (w + 3 >= outsz)
                        return too_long(e);
                    out[w++] = '%';
                    out[w++] = hex[b >> 4];
                    out[w++] = hex[b & 15];
                }
                i += 3;
                continue;
            }
            if (u.need > 0)
                return bad(e, "percent-escapes that are not well-formed utf-8", i);
            if (c == '\\')
                return bad(e, "backslash", i);
            if (c < 0x20 || c == 0x7f)
                return bad(e, "control character", i);
            if (c >= 0x80)
                return bad(e, "byte >= 0x80 not percent-encoded", i);
            if (!is_pchar(c))
                return bad(e, "character not allowed in a path", i);
            out[w++] = (char)c;
            i++;
        }
        if (u.need > 0)
            return bad(e, "percent-escapes that are not well-formed utf-8", i);
        last = i >= n;
        seglen = w - segstart;
        if (seglen == 0 && !last) {
            /* An empty segment followed by '/': "//". */
            if (o->slashes == AF_SLASHES_REFUSE)
                return bad(e, "empty segment (\"//\")", i);
        } else if (seglen >= 2 && out[segstart] == '.' &&
                   (out[segstart + 1] == ';' ||
                    (seglen >= 3 && out[segstart + 1] == '.' && out[segstart + 2] == ';'))) {
            /* Servlet containers strip ";params" before resolving dots, so
             * "/public/..;/admin" is "/admin" to Tomcat: no mode lets that
             * through as an ordinary segment. */
            return bad(e, "dot segment with ';' parameters", segstart);
        } else if ((seglen == 1 && out[segstart] == '.') ||
                   (seglen == 2 && out[segstart] == '.' && out[segstart + 1] == '.')) {
            if (o->dots == AF_DOTS_REFUSE)
                return bad(e, "dot segment", i - 1);
            w = segstart;
            if (seglen == 2) {
                /* ".." above the root is refused, not clamped as RFC 3986
                 * does: nginx answers it with 400, and a client that sends it
                 * is probing, not browsing. */
                if (segstart == 1)
                    return bad(e, "dot segment above the root", i - 1);
                w = segstart - 1;
                while (out[w - 1] != '/')
                    w--;
            }
        } else if (!last) {
            if (w + 1 >= outsz)
                return too_long(e);
            out[w++] = '/';
        }
        if (last)
            break;
        i++;   /* the '/' */
    }
    out[w] = '\0';
    if (outlen != NULL)
        *outlen = w;
    return AZC_OK;
}

static int opt_choice(const json_t *spec, const char *key, const char *a, const char *b,
                      int *val, azc_err *e)
{
    const json_t *v = json_object_get(spec, key);
    const char *s;

    if (v == NULL)
        return AZC_OK;
    s = json_string_value(v);
    if (s != NULL && strcmp(s, a) == 0)
        *val = 0;
    else if (s != NULL && strcmp(s, b) == 0)
        *val = 1;
    else
        return azc_err_set(e, AZC_EINVAL, "path options: %s must be \"%s\" or \"%s\"", key, a, b);
    return AZC_OK;
}

int af_path_opts_parse(const json_t *spec, af_path_opts *o, azc_err *e)
{
    const char *key;
    json_t *v;
    int s = 0, d = 0, x = 0, rc;

    if (o == NULL)
        return azc_err_set(e, AZC_EINVAL, "path options: no output");
    *o = default_opts;
    if (spec == NULL)
        return AZC_OK;
    if (!json_is_object(spec))
        return azc_err_set(e, AZC_EINVAL, "path options: not an object");
    json_object_foreach((json_t *)spec, key, v) {
        if (strcmp(key, "slashes") != 0 && strcmp(key, "dot_segments") != 0 &&
            strcmp(key, "encoded_separators") != 0)
            return azc_err_set(e, AZC_EINVAL, "path options: unknown member \"%s\"", key);
    }
    if ((rc = opt_choice(spec, "slashes", "merge", "refuse", &s, e)) != AZC_OK ||
        (rc = opt_choice(spec, "dot_segments", "refuse", "resolve", &d, e)) != AZC_OK ||
        (rc = opt_choice(spec, "encoded_separators", "refuse", "keep", &x, e)) != AZC_OK)
        return rc;
    o->slashes = s ? AF_SLASHES_REFUSE : AF_SLASHES_MERGE;
    o->dots = d ? AF_DOTS_RESOLVE : AF_DOTS_REFUSE;
    o->encoded_sep = x ? AF_ENCSEP_KEEP : AF_ENCSEP_REFUSE;
    return AZC_OK;
}

