/*
 * UTF-8 boundaries and scrubbing; see text.h. The decoder follows RFC 3629
 * table 3-7 (the byte ranges jansson also accepts), so whatever passes here
 * passes json_string.
 */
#include "common/text.h"

#include <stdio.h>
#include <string.h>

/* Length (1-4) of the valid sequence starting at p with `avail` bytes
 * left, or 0 when the bytes there do not form one. */
static size_t seq_len(const unsigned char *p, size_t avail)
{
    unsigned char b = p[0], lo = 0x80, hi = 0xBF;
    size_t n, i;

    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        n = 2;
    else if (b >= 0xE0 && b <= 0xEF)
        n = 3;
    else if (b >= 0xF0 && b <= 0xF4)
        n = 4;
    else
        return 0;   /* continuation byte, overlong lead (C0, C1) or above U+10FFFF */
    if (avail < n)
        return 0;
    /* The second byte's range excludes overlongs, surrogates and > U+10FFFF. */
    if (b == 0xE0)
        lo = 0xA0;
    else if (b == 0xED)
        hi = 0x9F;
    else if (b == 0xF0)
        lo = 0x90;
    else if (b == 0xF4)
        hi = 0x8F;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

size_t azc_utf8_prefix(const char *s, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t at = 0, n;

    if (s == NULL)
        return 0;
    while (at < len) {
        n = seq_len(p + at, len - at);
        if (n == 0)
            n = 1;
        if (at + n > max)
            break;
        at += n;
    }
    return at;
}

size_t azc_utf8_cut(const char *s, size_t max)
{
    if (s == NULL)
        return 0;
    return azc_utf8_prefix(s, strnlen(s, max + 4), max);
}

int azc_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t at = 0, n;

    while (at < len) {
        if (p[at] == '\0' || (n = seq_len(p + at, len - at)) == 0)
            return 0;
        at += n;
    }
    return 1;
}

size_t azc_utf8_scrub(char *s, size_t len)
{
    unsigned char *p = (unsigned char *)s;
    size_t at = 0, n, replaced = 0;

    while (at < len) {
        n = p[at] == '\0' ? 0 : seq_len(p + at, len - at);
        if (n == 0) {
            p[at] = '?';
            replaced++;
            n = 1;
        }
        at += n;
    }
    return replaced;
}

/* vsnprintf cuts at a byte: drops a sequence whose lead byte survived the
 * cut but not all of its continuation bytes, so the cut lands where the
 * character began instead of leaving a stray byte to be scrubbed. */
static size_t trim_partial(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t k = len, need;

    while (k > 0 && len - k < 3 && (p[k - 1] & 0xC0) == 0x80)
        k--;
    if (k == 0 || p[k - 1] < 0xC0)
        return len;
    need = p[k - 1] >= 0xF0 ? 4 : p[k - 1] >= 0xE0 ? 3 : 2;
    return len - (k - 1) < need ? k - 1 : len;
}

int azc_text_vfmt(char *buf, size_t size, const char *fmt, va_list ap)
{
    size_t len;
    int n, cut = 0;

    if (size == 0)
        return 0;
    n = vsnprintf(buf, size, fmt, ap);
    if (n < 0) {
        buf[0] = '\0';
        return 1;
    }
    len = strlen(buf);
    if ((size_t)n >= size) {
        len = trim_partial(buf, len);
        buf[len] = '\0';
        cut = 1;
    }
    azc_utf8_scrub(buf, len);
    return cut;
}

int azc_text_fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int cut;

    va_start(ap, fmt);
    cut = azc_text_vfmt(buf, size, fmt, ap);
    va_end(ap);
    return cut;
}
