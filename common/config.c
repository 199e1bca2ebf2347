/*
 * JSON configuration with AUTHZ_<SECTION>_<KEY> environment overrides.
 *
 * File values keep their JSON type and must match the getter exactly; an
 * environment value is text and is parsed strictly by the getter (the whole
 * string must be a number, "true"/"false"/"1"/"0" for booleans). Overrides
 * are kept apart from the file tree for that reason.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/revision.h"

#define ENV_PREFIX "AUTHZ_"

struct azc_config {
    json_t *file;      /* object of section objects */
    json_t *env;       /* object: section -> object: key -> string */
};

static int valid_name(const char *s, size_t n, int allow_underscore)
{
    size_t i;

    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(islower(c) || isdigit(c) || (allow_underscore && c == '_')))
            return 0;
    }
    return 1;
}

/* AUTHZ_HTTP_MAX_BODY=1 -> env["http"]["max_body"] = "1". */
static int load_env(azc_config *cfg, char *const *envp, azc_err *e)
{
    char section[65], key[65];
    size_t i;

    for (; envp != NULL && *envp != NULL; envp++) {
        const char *entry = *envp, *name, *eq, *us;
        size_t slen, klen;
        json_t *sec;

        if (strncmp(entry, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        name = entry + strlen(ENV_PREFIX);
        eq = strchr(name, '=');
        if (eq == NULL)
            continue;
        us = memchr(name, '_', (size_t)(eq - name));
        /* Names that do not fit AUTHZ_<SECTION>_<KEY> (AUTHZ_REGIONS, ...)
         * belong to the tooling, not to a service: not ours to judge. */
        if (us == NULL)
            continue;
        slen = (size_t)(us - name);
        klen = (size_t)(eq - us - 1);
        if (slen >= sizeof section || klen >= sizeof key)
            continue;
        for (i = 0; i < slen; i++)
            section[i] = (char)tolower((unsigned char)name[i]);
        section[slen] = '\0';
        for (i = 0; i < klen; i++)
            key[i] = (char)tolower((unsigned char)us[1 + i]);
        key[klen] = '\0';
        if (!valid_name(section, slen, 0) || !valid_name(key, klen, 1))
            continue;
        sec = json_object_get(cfg->env, section);
        if (sec == NULL) {
            sec = json_object();
            if (sec == NULL || json_object_set_new(cfg->env, section, sec) != 0)
                return azc_err_set(e, AZC_ENOMEM, "out of memory");
        }
        {
            json_t *v = json_stringn(eq + 1, strlen(eq + 1));
            if (v == NULL)
                return azc_err_set(e, AZC_EINVAL, "environment variable %s.%s: value is not UTF-8",
                                   section, key);
            if (json_object_set_new(sec, key, v) != 0)
                return azc_err_set(e, AZC_ENOMEM, "out of memory");
        }
    }
    return AZC_OK;
}

static int check_shape(json_t *root, azc_err *e)
{
    const char *sname, *kname;
    json_t *sec, *v;

    if (!json_is_object(root))
        return azc_err_set(e, AZC_EINVAL, "configuration: top level must be an object of sections");
    json_object_foreach(root, sname, sec) {
        if (!valid_name(sname, strlen(sname), 0))
            return azc_err_set(e, AZC_EINVAL,
                               "configuration: section name \"%s\" must be lower-case letters and digits",
                               sname);
        if (!json_is_object(sec))
            return azc_err_set(e, AZC_EINVAL, "configuration: section \"%s\" must be an object", sname);
        json_object_foreach(sec, kname, v) {
            if (!valid_name(kname, strlen(kname), 1))
                return azc_err_set(e, AZC_EINVAL,
                                   "configuration: key \"%s.%s\" must be lower-case letters, digits, underscores",
                                   sname, kname);
        }
    }
    return AZC_OK;
}

static int finish_load(azc_config **out, json_t *file, char *const *envp, azc_err *e)
{
    azc_config *cfg;
    int rc;

    rc = check_shape(file, e);
    if (rc != AZC_OK) {
        json_decref(file);
        return rc;
    }
    cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        json_decref(file);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    cfg->file = file;
    cfg->env = json_object();
    if (cfg->env == NULL) {
        azc_config_free(cfg);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    rc = load_env(cfg, envp, e);
    if (rc != AZC_OK) {
        azc_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return AZC_OK;
}

int azc_config_load_string(azc_config **out, const char *json, char *const *envp, azc_err *e)
{
    json_error_t jerr;
    json_t *file;

    *out = NULL;
    if (json == NULL)
        return finish_load(out, json_object(), envp, e);
    if (strlen(json) > AZC_CONFIG_MAX_BYTES)
        return azc_err_set(e, AZC_ETOOBIG, "configuration: larger than %d bytes", AZC_CONFIG_MAX_BYTES);
    file = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (file == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: invalid JSON at line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
    return finish_load(out, file, envp, e);
}

int azc_config_load(azc_config **out, const char *path, char *const *envp, azc_err *e)
{
    json_error_t jerr;
    json_t *file;
    struct stat st;
    FILE *f;

    *out = NULL;
    if (path == NULL)
        return finish_load(out, json_object(), envp, e);
    f = fopen(path, "rb");
    if (f == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration file %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return azc_err_set(e, AZC_EINVAL, "configuration file %s: not a regular file", path);
    }
    if (st.st_size > AZC_CONFIG_MAX_BYTES) {
        fclose(f);
        return azc_err_set(e, AZC_ETOOBIG, "configuration file %s: larger than %d bytes",
                           path, AZC_CONFIG_MAX_BYTES);
    }
    file = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (file == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration file %s: invalid JSON at line %d column %d: %s",
                           path, jerr.line, jerr.column, jerr.text);
    return finish_load(out, file, envp, e);
}

void azc_config_free(azc_config *cfg)
{
    if (cfg == NULL)
        return;
    json_decref(cfg->file);
    json_decref(cfg->env);
    free(cfg);
}

static int is_known(const azc_config_key *known, size_t n, const char *s, const char *k)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(known[i].section, s) == 0 && strcmp(known[i].key, k) == 0)
            return 1;
    return 0;
}

static int section_known(const azc_config_key *known, size_t n, const char *s)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(known[i].section, s) == 0)
            return 1;
    return 0;
}

/* In the file every key must be known. In the environment only sections
 * the binary has are checked: AUTHZ_BIN_DIR and the like belong to the
 * tooling, while AUTHZ_HTTP_PROT is a typo worth stopping for. */
static int check_tree(json_t *tree, const char *where, const azc_config_key *known, size_t n,
                      int only_known_sections, azc_err *e)
{
    const char *sname, *kname;
    json_t *sec, *v;

    json_object_foreach(tree, sname, sec) {
        if (only_known_sections && !section_known(known, n, sname))
            continue;
        json_object_foreach(sec, kname, v) {
            if (!is_known(known, n, sname, kname))
                return azc_err_set(e, AZC_EINVAL, "%s: unknown key \"%s.%s\"", where, sname, kname);
        }
    }
    return AZC_OK;
}

int azc_config_check(const azc_config *cfg, const azc_config_key *known, size_t n, azc_err *e)
{
    int rc = check_tree(cfg->file, "configuration", known, n, 0, e);

    if (rc != AZC_OK)
        return rc;
    return check_tree(cfg->env, "environment", known, n, 1, e);
}

/* Finds the value: environment first (*from_env = 1), then the file. */
static json_t *lookup(const azc_config *cfg, const char *section, const char *key, int *from_env)
{
    json_t *v = json_object_get(json_object_get(cfg->env, section), key);

    *from_env = v != NULL;
    if (v != NULL)
        return v;
    return json_object_get(json_object_get(cfg->file, section), key);
}

int azc_config_get_string(const azc_config *cfg, const char *section, const char *key,
                          const char *def, const char **out, azc_err *e)
{
    int from_env;
    json_t *v = lookup(cfg, section, key, &from_env);

    if (v == NULL) {
        *out = def;
        return AZC_OK;
    }
    if (!json_is_string(v))
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s must be a string", section, key);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s contains a NUL byte", section, key);
    *out = json_string_value(v);
    return AZC_OK;
}

int azc_config_get_int(const azc_config *cfg, const char *section, const char *key,
                       long long def, long long min, long long max, long long *out, azc_err *e)
{
    int from_env;
    json_t *v = lookup(cfg, section, key, &from_env);
    long long val;

    if (v == NULL) {
        *out = def;
        return AZC_OK;
    }
    if (from_env) {
        const char *s = json_string_value(v);
        char *end;

        errno = 0;
        val = strtoll(s, &end, 10);
        if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || errno == ERANGE)
            return azc_err_set(e, AZC_EINVAL, "environment: %s.%s must be an integer, got \"%s\"",
                               section, key, s);
    } else if (json_is_integer(v)) {
        val = json_integer_value(v);
    } else {
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s must be an integer", section, key);
    }
    if (val < min || val > max)
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s = %lld is out of range [%lld, %lld]",
                           section, key, val, min, max);
    *out = val;
    return AZC_OK;
}

int azc_config_get_bool(const azc_config *cfg, const char *section, const char *key,
                        int def, int *out, azc_err *e)
{
    int from_env;
    json_t *v = lookup(cfg, section, key, &from_env);

    if (v == NULL) {
        *out = def;
        return AZC_OK;
    }
    if (from_env) {
        const char *s = json_string_value(v);
        if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
            *out = 1;
            return AZC_OK;
        }
        if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) {
            *out = 0;
            return AZC_OK;
        }
        return azc_err_set(e, AZC_EINVAL, "environment: %s.%s must be true or false, got \"%s\"",
                           section, key, s);
    }
    if (!json_is_boolean(v))
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s must be true or false", section, key);
    *out = json_is_true(v);
    return AZC_OK;
}

int azc_config_get_double(const azc_config *cfg, const char *section, const char *key,
                          double def, double min, double max, double *out, azc_err *e)
{
    int from_env;
    json_t *v = lookup(cfg, section, key, &from_env);
    double val;

    if (v == NULL) {
        *out = def;
        return AZC_OK;
    }
    if (from_env) {
        const char *s = json_string_value(v);
        char *end;

        errno = 0;
        val = strtod(s, &end);
        if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || errno == ERANGE ||
            !isfinite(val))
            return azc_err_set(e, AZC_EINVAL, "environment: %s.%s must be a number, got \"%s\"",
                               section, key, s);
    } else if (json_is_number(v)) {
        val = json_number_value(v);
    } else {
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s must be a number", section, key);
    }
    if (val < min || val > max)
        return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s = %g is out of range [%g, %g]",
                           section, key, val, min, max);
    *out = val;
    return AZC_OK;
}

int azc_config_split_list(const char *s, char *slots, size_t slot_len, size_t max, size_t *n,
                          const char *key, azc_err *e)
{
    const char *p = s;

    *n = 0;
    while (p != NULL && *p != '\0') {
        size_t len = strcspn(p, ",");
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (len == 0 || len >= slot_len)
            return azc_err_set(e, AZC_EINVAL, "configuration: %s has an empty or too long item",
                               key);
        if (*n == max)
            return azc_err_set(e, AZC_EINVAL, "configuration: %s has more than %zu items", key, max);
        memcpy(slots + *n * slot_len, p, len);
        slots[*n * slot_len + len] = '\0';
        (*n)++;
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    return AZC_OK;
}

int azc_config_regions(const azc_config *cfg, const char **region, char *regions,
                       size_t slot_len, size_t max, size_t *n, azc_err *e)
{
    const char *list = NULL;
    size_t i;
    int rc, found = 0;

    if ((rc = azc_config_get_string(cfg, "service", "region", NULL, region, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "service", "regions", NULL, &list, e)) != AZC_OK)
        return rc;
    if (*region == NULL || !azc_region_valid(*region))
        return azc_err_set(e, AZC_EINVAL, "configuration: service.region must be set to a region "
                                          "name ([a-z][a-z0-9-], at most 32 characters)");
    if (list == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: service.regions must list every region "
                                          "(comma-separated)");
    if ((rc = azc_config_split_list(list, regions, slot_len, max, n, "service.regions", e)) !=
        AZC_OK)
        return rc;
    for (i = 0; i < *n; i++) {
        if (!azc_region_valid(regions + i * slot_len))
            return azc_err_set(e, AZC_EINVAL, "configuration: service.regions: \"%s\" is not a "
                                              "region name", regions + i * slot_len);
        found |= strcmp(regions + i * slot_len, *region) == 0;
    }
    if (!found)
        return azc_err_set(e, AZC_EINVAL, "configuration: service.regions must include "
                                          "service.region \"%s\"", *region);
    return AZC_OK;
}
