/* Admin input checks; see validate.h. */
#include "identity/validate.h"

#include <stdio.h>
#include <string.h>

/* Decodes one UTF-8 sequence at s (valid: jansson checked it); returns
 * its length, 0 for a malformed one. */
static size_t utf8_next(const unsigned char *s, unsigned long *cp)
{
    size_t n, i;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xe0) == 0xc0)
        n = 2, *cp = s[0] & 0x1fu;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, *cp = s[0] & 0x0fu;
    else if ((s[0] & 0xf8) == 0xf0)
        n = 4, *cp = s[0] & 0x07u;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3fu);
    }
    return n;
}

/*
 * Characters a name must not hold: controls (C0, DEL, C1) and the
 * invisible format characters of Unicode category Cf, which let two names
 * look alike or reorder what an admin sees (U+202E turns text around).
 */
static int is_hidden(unsigned long c)
{
    static const unsigned long cf[][2] = {
        { 0x00ad, 0x00ad }, { 0x0600, 0x0605 }, { 0x061c, 0x061c }, { 0x06dd, 0x06dd },
        { 0x070f, 0x070f }, { 0x0890, 0x0891 }, { 0x08e2, 0x08e2 }, { 0x180e, 0x180e },
        { 0x200b, 0x200f }, { 0x202a, 0x202e }, { 0x2060, 0x2064 }, { 0x2066, 0x206f },
        { 0xfeff, 0xfeff }, { 0xfff9, 0xfffb }, { 0x110bd, 0x110bd }, { 0x110cd, 0x110cd },
        { 0x13430, 0x1343f }, { 0x1bca0, 0x1bca3 }, { 0x1d173, 0x1d17a },
        { 0xe0001, 0xe0001 }, { 0xe0020, 0xe007f },
    };
    size_t i;

    if (c < 0x20 || (c >= 0x7f && c <= 0x9f))
        return 1;
    for (i = 0; i < sizeof cf / sizeof cf[0]; i++)
        if (c >= cf[i][0] && c <= cf[i][1])
            return 1;
    return 0;
}

/* Unicode White_Space: a name made of these only is blank. */
static int is_space(unsigned long c)
{
    return c == ' ' || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

int id_text_valid(const char *s, size_t max, int allow_empty)
{
    const unsigned char *p = (const unsigned char *)s;
    int blank = 1;
    size_t n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n > max || (n == 0 && !allow_empty))
        return 0;
    while (*p != '\0') {
        unsigned long c;
        size_t len = utf8_next(p, &c);

        if (len == 0 || is_hidden(c))
            return 0;
        if (!is_space(c))
            blank = 0;
        p += len;
    }
    return allow_empty || !blank;
}

int id_email_valid(const char *s)
{
    const char *at;
    size_t n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    at = strchr(s, '@');
    if (n < 3 || n > 254 || at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@'))
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int id_permissions_check(const json_t *a, char *field, size_t field_len, azc_err *e)
{
    size_t i, j;

    snprintf(field, field_len, "permissions");
    if (!json_is_array(a))
        return azc_err_set(e, AZC_EINVAL, "permissions must be an array of strings");
    if (json_array_size(a) > ID_MAX_PERMISSIONS)
        return azc_err_set(e, AZC_EINVAL, "at most %d permissions", ID_MAX_PERMISSIONS);
    for (i = 0; i < json_array_size(a); i++) {
        const char *p = json_string_value(json_array_get(a, i));

        snprintf(field, field_len, "permissions[%zu]", i);
        if (p == NULL || !azc_permission_valid(p))
            return azc_err_set(e, AZC_EINVAL,
                               "permission must be \"<type>:<verb>\", \"<type>:*\" or \"*\" "
                               "with type and verb of [a-z][a-z0-9_-]");
        for (j = 0; j < i; j++)
            if (strcmp(p, json_string_value(json_array_get(a, j))) == 0)
                return azc_err_set(e, AZC_EINVAL, "duplicate permission \"%s\"", p);
    }
    return AZC_OK;
}
