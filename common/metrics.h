/*
 * A small Prometheus registry: counters, gauges and histograms with up to
 * four labels each, rendered in the text exposition format 0.0.4.
 *
 *   azc_metric *req = azc_metrics_counter(m, "jobs_total", "Jobs run.",
 *                                         (const char *const[]){ "queue", NULL });
 *   azc_metric_inc(req, (const char *const[]){ "mail", NULL }, 1);
 *
 * A family is registered once at start-up with its label names; a series
 * (one combination of label values) is created the first time it is
 * updated. Series are found by a linear search over the family's array:
 * with the handful of series a service keeps per family (routes x methods
 * x status codes) that beats hashing, and it keeps the code short. The cost
 * grows with cardinality, so a family refuses more than
 * AZC_METRICS_MAX_SERIES series; never put user input (ids, paths) in a
 * label value.
 *
 * One mutex per registry guards registration, updates and rendering, so
 * any thread may update a metric. Nothing here is global: two registries
 * are independent.
 */
#ifndef AZC_METRICS_H
#define AZC_METRICS_H

#include <stddef.h>

#include "common/err.h"

struct evbuffer;

typedef struct azc_metrics azc_metrics;
/* A metric family (name, help, kind, label names) and its series. */
typedef struct azc_metric azc_metric;

#define AZC_METRIC_MAX_LABELS 4
#define AZC_METRIC_MAX_BUCKETS 32
#define AZC_METRICS_MAX_SERIES 1024

/* New empty registry owned by the caller; NULL when out of memory. */
azc_metrics *azc_metrics_new(void);
/* Frees the registry and every family it returned. NULL is a no-op. */
void azc_metrics_free(azc_metrics *m);

/*
 * Registration. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; `labels` is a
 * NULL-terminated array of at most AZC_METRIC_MAX_LABELS distinct names
 * matching [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__" (NULL or an
 * empty array: no labels). `help` may be NULL (empty help). All strings
 * are copied.
 *
 * The family returned is owned by the registry and lives until
 * azc_metrics_free. Registering a name again returns the existing family
 * when kind, label names (in order) and, for histograms, buckets are the
 * same; otherwise, and for any invalid argument or lack of memory, NULL.
 * A family without labels has its single series from the start, so it is
 * rendered as 0 before the first update.
 */
azc_metric *azc_metrics_counter(azc_metrics *m, const char *name, const char *help,
                                const char *const *labels);
azc_metric *azc_metrics_gauge(azc_metrics *m, const char *name, const char *help,
                              const char *const *labels);
/*
 * `buckets`: nbuckets finite upper bounds in strictly increasing order (a
 * trailing +Inf is accepted and dropped: the +Inf bucket always exists);
 * at most AZC_METRIC_MAX_BUCKETS. NULL selects AZC_METRICS_LATENCY_BUCKETS,
 * request latencies in seconds from 5 ms to 10 s. A label named "le" is
 * refused: the format reserves it for buckets.
 */
azc_metric *azc_metrics_histogram(azc_metrics *m, const char *name, const char *help,
                                  const char *const *labels, const double *buckets,
                                  size_t nbuckets);

/*
 * Updates. `label_values` is a NULL-terminated array with exactly one
 * (non-NULL) value per label name, in registration order; NULL when the
 * family has no labels. Values are copied and may hold any bytes but NUL.
 *
 * AZC_EINVAL: wrong number of values, an update that does not fit the kind
 * (set on a counter, inc on a histogram, ...), a negative or non-finite
 * counter increment, a NaN observation. AZC_ETOOBIG: the family already
 * has AZC_METRICS_MAX_SERIES series. AZC_ENOMEM.
 */
/* Counter: v >= 0. Gauge: any finite v (negative to decrease). */
int azc_metric_inc(azc_metric *f, const char *const *label_values, double v);
/* Gauge only; v finite. */
int azc_metric_set(azc_metric *f, const char *const *label_values, double v);
/* Histogram only; v not NaN (+Inf lands in the +Inf bucket only). */
int azc_metric_observe(azc_metric *f, const char *const *label_values, double v);

/*
 * Appends the whole registry in the text format 0.0.4 to `out` (still
 * owned by the caller): families in registration order, series in creation
 * order, each family with its # HELP and # TYPE lines; histograms as
 * cumulative _bucket{le="..."} lines ending with le="+Inf", then _sum and
 * _count. On failure (AZC_ENOMEM) nothing is appended.
 */
int azc_metrics_render(azc_metrics *m, struct evbuffer *out) AZC_WARN_UNUSED;

/* Default histogram buckets, seconds. */
#define AZC_METRICS_LATENCY_BUCKETS \
    { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

#endif
