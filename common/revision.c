/* Revision token encoding; see revision.h for the format and why. */
#include "common/revision.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define PREFIX "v1."

int azc_region_valid(const char *s)
{
    size_t i, n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n == 0 || n > AZC_REGION_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    return 1;
}

int azc_revision_encode(const azc_revision *rev, char *buf, size_t len, azc_err *e)
{
    int n;

    if (!azc_region_valid(rev->origin))
        return azc_err_set(e, AZC_EINVAL, "revision: invalid origin region");
    if (rev->hlc == 0)
        return azc_err_set(e, AZC_EINVAL, "revision: hlc must not be zero");
    n = snprintf(buf, len, PREFIX "%s.%016" PRIx64, rev->origin, rev->hlc);
    if (n < 0 || (size_t)n >= len)
        return azc_err_set(e, AZC_ETOOBIG, "revision: buffer too small");
    return AZC_OK;
}

int azc_revision_decode(const char *token, azc_revision *rev, azc_err *e)
{
    const char *origin, *dot;
    char region[AZC_REGION_MAX + 1];
    uint64_t hlc = 0;
    size_t olen, i;

    if (token == NULL || strncmp(token, PREFIX, strlen(PREFIX)) != 0)
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    origin = token + strlen(PREFIX);
    dot = strchr(origin, '.');
    if (dot == NULL)
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    olen = (size_t)(dot - origin);
    if (olen == 0 || olen > AZC_REGION_MAX)
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    memcpy(region, origin, olen);
    region[olen] = '\0';
    if (!azc_region_valid(region))
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    /* Exactly 16 lower-case hex digits: one spelling per value, so tokens
     * can be compared and cached as strings. */
    for (i = 0; i < 16; i++) {
        char c = dot[1 + i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
        hlc = (hlc << 4) | d;
    }
    if (dot[17] != '\0')
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    if (hlc == 0)
        return azc_err_set(e, AZC_EINVAL, "revision: malformed token");
    memcpy(rev->origin, region, olen + 1);
    rev->hlc = hlc;
    return AZC_OK;
}
