/* Admin input checks; see validate.h. */
#include "identity/validate.h"

#include <stdio.h>
#include <string.h>

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
