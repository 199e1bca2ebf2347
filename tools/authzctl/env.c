/* authzctl's endpoints and token from the environment; see env.h. */
#include "tools/authzctl/env.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/revision.h"

#define LINE_MAX_LEN 8192

static const char *real_getenv(void *arg, const char *name)
{
    (void)arg;
    return getenv(name);
}

void ctl_env_init(ctl_env *e)
{
    memset(e, 0, sizeof *e);
    e->get = real_getenv;
}

void ctl_env_clear(ctl_env *e)
{
    size_t i;

    for (i = 0; i < e->n; i++) {
        free(e->keys[i]);
        free(e->vals[i]);
    }
    e->n = 0;
    e->path[0] = '\0';
}

int ctl_env_parse_line(const char *line, char **name, char **value)
{
    const char *eq, *v;
    size_t nlen, i, o = 0;
    char *out;

    *name = *value = NULL;
    while (*line == ' ' || *line == '\t')
        line++;
    if (*line == '\0' || *line == '\n' || *line == '#')
        return 0;
    if (strncmp(line, "export ", 7) == 0)
        line += 7;
    eq = strchr(line, '=');
    if (eq == NULL || eq == line)
        return -1;
    nlen = (size_t)(eq - line);
    for (i = 0; i < nlen; i++) {
        if (!(isupper((unsigned char)line[i]) || isdigit((unsigned char)line[i]) ||
              line[i] == '_') || (i == 0 && isdigit((unsigned char)line[i])))
            return -1;
    }
    v = eq + 1;
    out = malloc(strlen(v) + 1);
    if (out == NULL)
        return -1;
    if (*v == '\'') {
        /* 'abc'\''def' : quoted runs joined by escaped quotes */
        v++;
        for (;;) {
            if (*v == '\0' || *v == '\n') {
                free(out);
                return -1;
            }
            if (*v != '\'') {
                out[o++] = *v++;
                continue;
            }
            if (strncmp(v, "'\\''", 4) == 0) {
                out[o++] = '\'';
                v += 4;
                continue;
            }
            v++;
            break;
        }
        if (*v != '\0' && *v != '\n') {
            free(out);
            return -1;
        }
    } else {
        while (*v != '\0' && *v != '\n') {
            if (*v == ' ' || *v == '\t' || *v == '"' || *v == '\'' || *v == '$' || *v == '`' ||
                *v == '\\') {
                free(out);
                return -1;
            }
            out[o++] = *v++;
        }
    }
    out[o] = '\0';
    *name = strndup(line, nlen);
    if (*name == NULL) {
        free(out);
        return -1;
    }
    *value = out;
    return 1;
}

int ctl_env_load(ctl_env *e, const char *path, char *err, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[LINE_MAX_LEN];
    int lineno = 0;

    if (f == NULL) {
        snprintf(err, len, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *k, *v;
        int rc;

        lineno++;
        rc = ctl_env_parse_line(line, &k, &v);
        if (rc == 0)
            continue;
        if (rc < 0 || e->n >= CTL_ENV_MAX) {
            free(k);
            free(v);
            snprintf(err, len, "%s:%d: not a NAME=value line", path, lineno);
            fclose(f);
            ctl_env_clear(e);
            return -1;
        }
        e->keys[e->n] = k;
        e->vals[e->n] = v;
        e->n++;
    }
    fclose(f);
    snprintf(e->path, sizeof e->path, "%s", path);
    return 0;
}

const char *ctl_env_get(const ctl_env *e, const char *name)
{
    const char *v = e->get != NULL ? e->get(e->get_arg, name) : NULL;
    size_t i;

    if (v != NULL && v[0] != '\0')
        return v;
    for (i = e->n; i-- > 0;) {
        if (strcmp(e->keys[i], name) == 0)
            return e->vals[i][0] != '\0' ? e->vals[i] : NULL;
    }
    return NULL;
}

int ctl_env_url_name(const char *service, const char *region, char *buf, size_t len)
{
    size_t i, n;
    int w = snprintf(buf, len, "%s_URL_%s", service, region);

    if (w < 0 || (size_t)w >= len)
        return -1;
    n = strlen(buf);
    for (i = strlen(service) + 5; i < n; i++)
        buf[i] = buf[i] == '-' ? '_' : (char)toupper((unsigned char)buf[i]);
    return 0;
}

int ctl_regions_split(const char *list, char *store, size_t storelen, const char **out,
                      size_t max)
{
    size_t n = 0, i;
    char *p, *comma;

    if (list == NULL || strlen(list) >= storelen)
        return -1;
    memcpy(store, list, strlen(list) + 1);
    for (p = store; p != NULL; p = comma != NULL ? comma + 1 : NULL) {
        comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (!azc_region_valid(p) || n >= max)
            return -1;
        for (i = 0; i < n; i++) {
            if (strcmp(out[i], p) == 0)
                return -1;
        }
        out[n++] = p;
    }
    return n == 0 ? -1 : (int)n;
}
