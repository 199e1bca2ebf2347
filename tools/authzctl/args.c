/* authzctl's flag parsing; see args.h. */
#include "tools/authzctl/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ctl_flag *flag_find(const ctl_flag *const *sets, const size_t *nflags, size_t nsets,
                                 const char *name, size_t nlen)
{
    size_t i, j;

    for (i = 0; i < nsets; i++) {
        for (j = 0; j < nflags[i]; j++) {
            if (strlen(sets[i][j].name) == nlen && strncmp(sets[i][j].name, name, nlen) == 0)
                return &sets[i][j];
        }
    }
    return NULL;
}

static int skipped(int i, const int *skip, size_t nskip)
{
    size_t k;

    for (k = 0; k < nskip; k++) {
        if (skip[k] == i)
            return 1;
    }
    return 0;
}

int ctl_args_parse(int argc, char *const *argv, int from, const int *skip, size_t nskip,
                   const ctl_flag *const *sets, const size_t *nflags, size_t nsets, ctl_args *out,
                   char *err, size_t len)
{
    int i, flags_done = 0;

    memset(out, 0, sizeof *out);
    for (i = from; i < argc; i++) {
        const char *a = argv[i], *name, *eq, *value = NULL;
        const ctl_flag *f;
        size_t nlen;

        if (skipped(i, skip, nskip))
            continue;
        if (flags_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (out->npos >= CTL_MAX_ARGS) {
                snprintf(err, len, "too many arguments");
                return -1;
            }
            out->pos[out->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0)
            a = "--help";
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, len, "unknown flag \"%s\" (flags are --name)", a);
            return -1;
        }
        name = a + 2;
        eq = strchr(name, '=');
        nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        f = flag_find(sets, nflags, nsets, name, nlen);
        if (f == NULL) {
            snprintf(err, len, "unknown flag --%.*s", (int)nlen, name);
            return -1;
        }
        if (f->value == NULL) {
            if (eq != NULL) {
                snprintf(err, len, "--%s takes no value", f->name);
                return -1;
            }
            value = "";
        } else if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc && !skipped(i + 1, skip, nskip)) {
            value = argv[++i];
        } else {
            snprintf(err, len, "--%s needs a value (%s)", f->name, f->value);
            return -1;
        }
        if (out->nset >= CTL_MAX_ARGS) {
            snprintf(err, len, "too many flags");
            return -1;
        }
        out->set[out->nset].name = f->name;
        out->set[out->nset].value = value;
        out->nset++;
    }
    return 0;
}

const char *ctl_arg(const ctl_args *a, const char *name)
{
    size_t i;
    const char *v = NULL;

    for (i = 0; i < a->nset; i++) {
        if (strcmp(a->set[i].name, name) == 0)
            v = a->set[i].value;
    }
    return v;
}

int ctl_arg_has(const ctl_args *a, const char *name)
{
    return ctl_arg(a, name) != NULL;
}

size_t ctl_arg_all(const ctl_args *a, const char *name, const char **out, size_t max)
{
    size_t i, n = 0;

    for (i = 0; i < a->nset && n < max; i++) {
        if (strcmp(a->set[i].name, name) == 0)
            out[n++] = a->set[i].value;
    }
    return n;
}

size_t ctl_args_words(int argc, char *const *argv, const ctl_flag *global, size_t nglobal,
                      int idx[2])
{
    size_t n = 0, j;
    int i;

    for (i = 1; i < argc && n < 2; i++) {
        const char *a = argv[i];
        int known = 0;

        if (strcmp(a, "--") == 0)
            break;
        if (a[0] == '-' && a[1] != '\0') {
            size_t nlen = strncmp(a, "--", 2) == 0 ? strcspn(a + 2, "=") : 0;

            for (j = 0; nlen > 0 && j < nglobal; j++) {
                if (strlen(global[j].name) == nlen && strncmp(a + 2, global[j].name, nlen) == 0) {
                    known = 1;
                    /* A global flag's value is not a command word. */
                    if (global[j].value != NULL && a[2 + nlen] != '=')
                        i++;
                    break;
                }
            }
            /* After the first word, a flag of the command itself ends the
             * words: its value must not be taken for a sub-command. */
            if (!known && n == 1)
                break;
            continue;
        }
        idx[n++] = i;
    }
    return n;
}

int ctl_parse_long(const char *s, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

int ctl_parse_secs(const char *s, long max_ms, long *out_ms)
{
    char *end;
    double v;

    if (s == NULL || !((s[0] >= '0' && s[0] <= '9') || s[0] == '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v <= 0 || v * 1000.0 > (double)max_ms)
        return -1;
    *out_ms = (long)(v * 1000.0 + 0.5);
    if (*out_ms < 1)
        *out_ms = 1;
    return 0;
}
