/*
 * Prometheus registry; see metrics.h for the model and the trade-offs.
 *
 * Histogram series keep one count per bucket (the observations that fell
 * into that bucket and no lower one) and make them cumulative only when
 * rendering, so an observation touches a single counter. Values are
 * printed with the shortest of %.15g / %.17g that reads back exactly, so
 * 0.1 renders as "0.1" and large counters never lose digits.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct series {
    char *values[AZC_METRIC_MAX_LABELS];
    double value;         /* counter, gauge */
    uint64_t *buckets;    /* histogram: nbuckets per-bucket counts */
    uint64_t count;       /* histogram: observations (the +Inf bucket) */
    double sum;           /* histogram */
};

struct azc_metric {
    azc_metrics *reg;
    enum metric_kind kind;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[AZC_METRIC_MAX_LABELS];
    double *bounds;       /* histogram upper bounds, without +Inf */
    size_t nbounds;
    struct series *series;
    size_t nseries;
    size_t cap;
};

struct azc_metrics {
    pthread_mutex_t mu;
    azc_metric **families;   /* pointers, so families never move */
    size_t n;
    size_t cap;
};

static const double default_buckets[] = AZC_METRICS_LATENCY_BUCKETS;

azc_metrics *azc_metrics_new(void)
{
    azc_metrics *m = calloc(1, sizeof *m);

    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void series_clear(struct series *s)
{
    size_t i;

    for (i = 0; i < AZC_METRIC_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->buckets);
}

static void family_free(azc_metric *f)
{
    size_t i;

    if (f == NULL)
        return;
    for (i = 0; i < f->nseries; i++)
        series_clear(&f->series[i]);
    free(f->series);
    for (i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void azc_metrics_free(azc_metrics *m)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->n; i++)
        family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- names ------------------------------------------------------------ */

static int is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names, the same without ':' for
 * label names. */
static int valid_name(const char *s, int allow_colon)
{
    size_t i;

    if (s == NULL || s[0] == '\0')
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];

        if (is_name_start(c) || (allow_colon && c == ':') || (i > 0 && is_digit(c)))
            continue;
        return 0;
    }
    return 1;
}

static int count_strings(const char *const *v, size_t max, size_t *n)
{
    size_t i = 0;

    if (v != NULL) {
        for (; v[i] != NULL; i++) {
            if (i == max)
                return -1;
        }
    }
    *n = i;
    return 0;
}

static int valid_labels(const char *const *labels, size_t n, enum metric_kind kind)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        if (!valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0)
            return 0;
        if (kind == KIND_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return 0;
        for (j = 0; j < i; j++) {
            if (strcmp(labels[i], labels[j]) == 0)
                return 0;
        }
    }
    return 1;
}

/* ---- registration ----------------------------------------------------- */

static int same_shape(const azc_metric *f, enum metric_kind kind, const char *const *labels,
                      size_t nlabels, const double *bounds, size_t nbounds)
{
    size_t i;

    if (f->kind != kind || f->nlabels != nlabels)
        return 0;
    for (i = 0; i < nlabels; i++) {
        if (strcmp(f->labels[i], labels[i]) != 0)
            return 0;
    }
    if (kind == KIND_HISTOGRAM) {
        if (f->nbounds != nbounds)
            return 0;
        for (i = 0; i < nbounds; i++) {
            if (f->bounds[i] != bounds[i])
                return 0;
        }
    }
    return 1;
}

/* Adds an empty series with copies of `values` (nlabels of them). Caller
 * holds the lock. Returns the series or NULL (*rc says why). */
static struct series *series_add(azc_metric *f, const char *const *values, int *rc)
{
    struct series *s;
    size_t i;

    if (f->nseries == AZC_METRICS_MAX_SERIES) {
        *rc = AZC_ETOOBIG;
        return NULL;
    }
    *rc = AZC_ENOMEM;
    if (f->nseries == f->cap) {
        size_t cap = f->cap == 0 ? 4 : f->cap * 2;
        struct series *grown = realloc(f->series, cap * sizeof *grown);

        if (grown == NULL)
            return NULL;
        f->series = grown;
        f->cap = cap;
    }
    s = &f->series[f->nseries];
    memset(s, 0, sizeof *s);
    for (i = 0; i < f->nlabels; i++) {
        s->values[i] = strdup(values[i]);
        if (s->values[i] == NULL)
            goto fail;
    }
    if (f->kind == KIND_HISTOGRAM && f->nbounds > 0) {
        s->buckets = calloc(f->nbounds, sizeof *s->buckets);
        if (s->buckets == NULL)
            goto fail;
    }
    f->nseries++;
    *rc = AZC_OK;
    return s;

fail:
    series_clear(s);
    return NULL;
}

static azc_metric *family_new(enum metric_kind kind, const char *name, const char *help,
                              const char *const *labels, size_t nlabels,
                              const double *bounds, size_t nbounds)
{
    azc_metric *f = calloc(1, sizeof *f);
    size_t i;

    if (f == NULL)
        return NULL;
    f->kind = kind;
    f->name = strdup(name);
    f->help = strdup(help != NULL ? help : "");
    if (f->name == NULL || f->help == NULL)
        goto fail;
    for (i = 0; i < nlabels; i++) {
        f->labels[i] = strdup(labels[i]);
        if (f->labels[i] == NULL)
            goto fail;
        f->nlabels = i + 1;
    }
    if (nbounds > 0) {
        f->bounds = malloc(nbounds * sizeof *f->bounds);
        if (f->bounds == NULL)
            goto fail;
        memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
    }
    f->nbounds = nbounds;
    if (nlabels == 0) {
        int rc;

        if (series_add(f, NULL, &rc) == NULL)
            goto fail;
    }
    return f;

fail:
    family_free(f);
    return NULL;
}

static azc_metric *family_register(azc_metrics *m, enum metric_kind kind, const char *name,
                                   const char *help, const char *const *labels,
                                   const double *bounds, size_t nbounds)
{
    azc_metric *f = NULL;
    size_t nlabels, i;

    if (m == NULL || !valid_name(name, 1))
        return NULL;
    if (count_strings(labels, AZC_METRIC_MAX_LABELS, &nlabels) != 0 ||
        !valid_labels(labels, nlabels, kind))
        return NULL;

    pthread_mutex_lock(&m->mu);
    for (i = 0; i < m->n; i++) {
        if (strcmp(m->families[i]->name, name) == 0) {
            f = m->families[i];
            if (!same_shape(f, kind, labels, nlabels, bounds, nbounds))
                f = NULL;
            goto out;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap == 0 ? 8 : m->cap * 2;
        azc_metric **grown = realloc(m->families, cap * sizeof *grown);

        if (grown == NULL)
            goto out;
        m->families = grown;
        m->cap = cap;
    }
    f = family_new(kind, name, help, labels, nlabels, bounds, nbounds);
    if (f != NULL) {
        f->reg = m;
        m->families[m->n++] = f;
    }
out:
    pthread_mutex_unlock(&m->mu);
    return f;
}

azc_metric *azc_metrics_counter(azc_metrics *m, const char *name, const char *help,
                                const char *const *labels)
{
    return family_register(m, KIND_COUNTER, name, help, labels, NULL, 0);
}

azc_metric *azc_metrics_gauge(azc_metrics *m, const char *name, const char *help,
                              const char *const *labels)
{
    return family_register(m, KIND_GAUGE, name, help, labels, NULL, 0);
}

azc_metric *azc_metrics_histogram(azc_metrics *m, const char *name, const char *help,
                                  const char *const *labels, const double *buckets,
                                  size_t nbuckets)
{
    size_t i;

    if (buckets == NULL) {
        buckets = default_buckets;
        nbuckets = sizeof default_buckets / sizeof default_buckets[0];
    }
    if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
        nbuckets--;
    if (nbuckets > AZC_METRIC_MAX_BUCKETS)
        return NULL;
    for (i = 0; i < nbuckets; i++) {
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
            return NULL;
    }
    return family_register(m, KIND_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

/* ---- updates ---------------------------------------------------------- */

/* Finds or creates the series for `values`. Caller holds the lock. */
static struct series *series_get(azc_metric *f, const char *const *values, int *rc)
{
    size_t n, i, j;

    if (count_strings(values, f->nlabels, &n) != 0 || n != f->nlabels) {
        *rc = AZC_EINVAL;
        return NULL;
    }
    for (i = 0; i < f->nseries; i++) {
        for (j = 0; j < n; j++) {
            if (strcmp(f->series[i].values[j], values[j]) != 0)
                break;
        }
        if (j == n)
            return &f->series[i];
    }
    return series_add(f, values, rc);
}

/* op: 'i' add, 's' set, 'o' observe; the caller checked it fits the kind. */
static int update(azc_metric *f, const char *const *values, int op, double v)
{
    struct series *s;
    int rc = AZC_OK;
    size_t i;

    pthread_mutex_lock(&f->reg->mu);
    s = series_get(f, values, &rc);
    if (s == NULL)
        goto out;
    switch (op) {
    case 'i':
        s->value += v;
        break;
    case 's':
        s->value = v;
        break;
    default:
        for (i = 0; i < f->nbounds; i++) {
            if (v <= f->bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
        s->count++;
        s->sum += v;
        break;
    }
out:
    pthread_mutex_unlock(&f->reg->mu);
    return rc;
}

int azc_metric_inc(azc_metric *f, const char *const *label_values, double v)
{
    if (f == NULL || !isfinite(v))
        return AZC_EINVAL;
    if (f->kind == KIND_COUNTER) {
        if (v < 0)
            return AZC_EINVAL;
    } else if (f->kind != KIND_GAUGE) {
        return AZC_EINVAL;
    }
    return update(f, label_values, 'i', v);
}

int azc_metric_set(azc_metric *f, const char *const *label_values, double v)
{
    if (f == NULL || f->kind != KIND_GAUGE || !isfinite(v))
        return AZC_EINVAL;
    return update(f, label_values, 's', v);
}

int azc_metric_observe(azc_metric *f, const char *const *label_values, double v)
{
    if (f == NULL || f->kind != KIND_HISTOGRAM || isnan(v))
        return AZC_EINVAL;
    return update(f, label_values, 'o', v);
}

/* ---- rendering -------------------------------------------------------- */

static void format_value(char *buf, size_t len, double v)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(buf, len, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, len, "%.17g", v);
    }
}

/* Appends s with the characters in `special` backslash-escaped (a newline
 * as \n). Returns 0 or -1. */
static int add_escaped(struct evbuffer *b, const char *s, const char *special)
{
    int rc = 0;

    while (*s != '\0') {
        size_t run = strcspn(s, special);

        if (run > 0)
            rc |= evbuffer_add(b, s, run);
        s += run;
        if (*s == '\0')
            break;
        rc |= evbuffer_add(b, *s == '\n' ? "\\n" : *s == '\\' ? "\\\\" : "\\\"", 2);
        s++;
    }
    return rc;
}

/* name{l1="v1",...[,le="x"]} value\n. `suffix` is appended to the name. */
static int add_sample(struct evbuffer *b, const azc_metric *f, const struct series *s,
                      const char *suffix, const char *le, double value)
{
    char num[32];
    size_t i;
    int rc = 0;

    rc |= evbuffer_add_printf(b, "%s%s", f->name, suffix) < 0;
    if (f->nlabels > 0 || le != NULL) {
        rc |= evbuffer_add(b, "{", 1);
        for (i = 0; i < f->nlabels; i++) {
            rc |= evbuffer_add_printf(b, "%s%s=\"", i > 0 ? "," : "", f->labels[i]) < 0;
            rc |= add_escaped(b, s->values[i], "\\\"\n");
            rc |= evbuffer_add(b, "\"", 1);
        }
        if (le != NULL)
            rc |= evbuffer_add_printf(b, "%sle=\"%s\"", f->nlabels > 0 ? "," : "", le) < 0;
        rc |= evbuffer_add(b, "}", 1);
    }
    format_value(num, sizeof num, value);
    rc |= evbuffer_add_printf(b, " %s\n", num) < 0;
    return rc;
}

static int render_family(struct evbuffer *b, const azc_metric *f)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    size_t i, j;
    int rc = 0;

    rc |= evbuffer_add_printf(b, "# HELP %s ", f->name) < 0;
    rc |= add_escaped(b, f->help, "\\\n");
    rc |= evbuffer_add_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->kind]) < 0;
    for (i = 0; i < f->nseries; i++) {
        const struct series *s = &f->series[i];
        uint64_t cum = 0;
        char le[32];

        if (f->kind != KIND_HISTOGRAM) {
            rc |= add_sample(b, f, s, "", NULL, s->value);
            continue;
        }
        for (j = 0; j < f->nbounds; j++) {
            cum += s->buckets[j];
            format_value(le, sizeof le, f->bounds[j]);
            rc |= add_sample(b, f, s, "_bucket", le, (double)cum);
        }
        rc |= add_sample(b, f, s, "_bucket", "+Inf", (double)s->count);
        rc |= add_sample(b, f, s, "_sum", NULL, s->sum);
        rc |= add_sample(b, f, s, "_count", NULL, (double)s->count);
    }
    return rc;
}

int azc_metrics_render(azc_metrics *m, struct evbuffer *out)
{
    struct evbuffer *b;
    size_t i;
    int rc = 0;

    if (m == NULL || out == NULL)
        return AZC_EINVAL;
    /* Render aside and move at the end, so a failure appends nothing. */
    b = evbuffer_new();
    if (b == NULL)
        return AZC_ENOMEM;
    pthread_mutex_lock(&m->mu);
    for (i = 0; i < m->n && rc == 0; i++)
        rc |= render_family(b, m->families[i]);
    pthread_mutex_unlock(&m->mu);
    if (rc == 0)
        rc = evbuffer_add_buffer(out, b);
    evbuffer_free(b);
    return rc == 0 ? AZC_OK : AZC_ENOMEM;
}
