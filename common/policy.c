/* The policy vocabulary; see policy.h. */
#include "common/policy.h"

#include <stdio.h>
#include <string.h>

static int name_char(char c, int first)
{
    if (c >= 'a' && c <= 'z')
        return 1;
    return !first && ((c >= '0' && c <= '9') || c == '_' || c == '-');
}

/* [a-z][a-z0-9_-]{0,63} over s[0..n). */
static int name_valid(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > AZC_POLICY_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        if (!name_char(s[i], i == 0))
            return 0;
    }
    return 1;
}

static int id_valid(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > AZC_POLICY_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr("._~:@+=-", c) != NULL)))
            return 0;
    }
    return 1;
}

/* Length of the <type> before `sep`, or 0 when s does not start with a
 * valid type followed by sep. */
static size_t type_len(const char *s, char sep)
{
    const char *p = strchr(s, sep);

    if (p == NULL || !name_valid(s, (size_t)(p - s)))
        return 0;
    return (size_t)(p - s);
}

int azc_action_valid(const char *s)
{
    size_t t;

    if (s == NULL || (t = type_len(s, ':')) == 0)
        return 0;
    return name_valid(s + t + 1, strlen(s + t + 1));
}

int azc_permission_valid(const char *s)
{
    size_t t;

    if (s == NULL)
        return 0;
    if (strcmp(s, "*") == 0)
        return 1;
    if ((t = type_len(s, ':')) == 0)
        return 0;
    return strcmp(s + t + 1, "*") == 0 || name_valid(s + t + 1, strlen(s + t + 1));
}

int azc_check_resource_valid(const char *s)
{
    size_t t;

    if (s == NULL || (t = type_len(s, '/')) == 0)
        return 0;
    return id_valid(s + t + 1);
}

int azc_resource_valid(const char *s)
{
    size_t t;

    if (s == NULL)
        return 0;
    if (strcmp(s, "*") == 0)
        return 1;
    if ((t = type_len(s, '/')) == 0)
        return 0;
    return strcmp(s + t + 1, "*") == 0 || id_valid(s + t + 1);
}

int azc_subject_valid(const char *s)
{
    size_t n, i;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n == 0 || n > AZC_SUBJECT_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return 0;
    }
    return 1;
}

int azc_permission_grants(const char *permission, const char *action)
{
    size_t t;

    if (!azc_permission_valid(permission) || !azc_action_valid(action))
        return 0;
    if (strcmp(permission, "*") == 0 || strcmp(permission, action) == 0)
        return 1;
    t = type_len(action, ':');
    return strncmp(permission, action, t + 1) == 0 && strcmp(permission + t + 1, "*") == 0;
}

int azc_resource_covers(const char *pattern, const char *resource)
{
    size_t t;

    if (!azc_resource_valid(pattern) || !azc_check_resource_valid(resource))
        return 0;
    if (strcmp(pattern, "*") == 0 || strcmp(pattern, resource) == 0)
        return 1;
    t = type_len(resource, '/');
    return strncmp(pattern, resource, t + 1) == 0 && strcmp(pattern + t + 1, "*") == 0;
}

int azc_region_covers(const char *pattern, const char *region)
{
    if (pattern == NULL || region == NULL)
        return 0;
    return strcmp(pattern, "*") == 0 || strcmp(pattern, region) == 0;
}

static int wildcard(const char *s, size_t t, char sep, char *buf, size_t len)
{
    if (t + 3 > len)
        return AZC_ETOOBIG;
    memcpy(buf, s, t);
    buf[t] = sep;
    buf[t + 1] = '*';
    buf[t + 2] = '\0';
    return AZC_OK;
}

int azc_action_wildcards(const char *action, char *buf, size_t len)
{
    if (!azc_action_valid(action))
        return AZC_EINVAL;
    return wildcard(action, type_len(action, ':'), ':', buf, len);
}

int azc_resource_wildcard(const char *resource, char *buf, size_t len)
{
    if (!azc_check_resource_valid(resource))
        return AZC_EINVAL;
    return wildcard(resource, type_len(resource, '/'), '/', buf, len);
}
