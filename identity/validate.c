/* Policy vocabulary syntax; see validate.h. */
#include "identity/validate.h"

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

    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++)
        if (!name_char(s[i], i == 0))
            return 0;
    return 1;
}

static int id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._~:@+=-", c) != NULL;
}

int id_permission_valid(const char *s)
{
    const char *colon;

    if (s == NULL)
        return 0;
    if (strcmp(s, "*") == 0)
        return 1;
    colon = strchr(s, ':');
    if (colon == NULL || !name_valid(s, (size_t)(colon - s)))
        return 0;
    if (strcmp(colon + 1, "*") == 0)
        return 1;
    return name_valid(colon + 1, strlen(colon + 1));
}

int id_resource_valid(const char *s)
{
    const char *slash, *id;
    size_t n;

    if (s == NULL)
        return 0;
    if (strcmp(s, "*") == 0)
        return 1;
    slash = strchr(s, '/');
    if (slash == NULL || !name_valid(s, (size_t)(slash - s)))
        return 0;
    id = slash + 1;
    if (strcmp(id, "*") == 0)
        return 1;
    n = strlen(id);
    if (n == 0 || n > 256)
        return 0;
    for (; *id; id++)
        if (!id_char(*id))
            return 0;
    return 1;
}

int id_text_valid(const char *s, size_t max, int allow_empty)
{
    size_t n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n > max || (n == 0 && !allow_empty))
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int id_subject_valid(const char *s)
{
    size_t n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n == 0 || n > 256)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
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
        if (p == NULL || !id_permission_valid(p))
            return azc_err_set(e, AZC_EINVAL,
                               "permission must be \"<type>:<verb>\", \"<type>:*\" or \"*\" "
                               "with type and verb of [a-z][a-z0-9_-]");
        for (j = 0; j < i; j++)
            if (strcmp(p, json_string_value(json_array_get(a, j))) == 0)
                return azc_err_set(e, AZC_EINVAL, "duplicate permission \"%s\"", p);
    }
    return AZC_OK;
}
