/* Unit tests: the Prometheus registry and its text rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/metrics.h"

#define L(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* The registry rendered as a NUL-terminated string (caller frees). */
static char *render(azc_metrics *m)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;

    assert_non_null(b);
    assert_int_equal(azc_metrics_render(m, b), AZC_OK);
    n = evbuffer_get_length(b);
    s = malloc(n + 1);
    assert_non_null(s);
    assert_int_equal(evbuffer_remove(b, s, n), (int)n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void assert_render(azc_metrics *m, const char *want)
{
    char *got = render(m);

    assert_string_equal(got, want);
    free(got);
}

static void test_counter_without_labels(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *c;
    (void)state;

    assert_non_null(m);
    c = azc_metrics_counter(m, "jobs_total", "Jobs run.", NULL);
    assert_non_null(c);
    /* An unlabelled family shows 0 before its first update. */
    assert_render(m, "# HELP jobs_total Jobs run.\n"
                     "# TYPE jobs_total counter\n"
                     "jobs_total 0\n");
    assert_int_equal(azc_metric_inc(c, NULL, 1), AZC_OK);
    assert_int_equal(azc_metric_inc(c, NULL, 2.5), AZC_OK);
    assert_render(m, "# HELP jobs_total Jobs run.\n"
                     "# TYPE jobs_total counter\n"
                     "jobs_total 3.5\n");
    azc_metrics_free(m);
}

static void test_counter_with_labels(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *c;
    (void)state;

    c = azc_metrics_counter(m, "http_requests_total", "Requests.", L("route", "code"));
    assert_non_null(c);
    /* Labelled family without series: metadata only. */
    assert_render(m, "# HELP http_requests_total Requests.\n"
                     "# TYPE http_requests_total counter\n");
    assert_int_equal(azc_metric_inc(c, L("/a", "200"), 1), AZC_OK);
    assert_int_equal(azc_metric_inc(c, L("/b", "404"), 1), AZC_OK);
    assert_int_equal(azc_metric_inc(c, L("/a", "200"), 1), AZC_OK);
    assert_render(m, "# HELP http_requests_total Requests.\n"
                     "# TYPE http_requests_total counter\n"
                     "http_requests_total{route=\"/a\",code=\"200\"} 2\n"
                     "http_requests_total{route=\"/b\",code=\"404\"} 1\n");
    /* Counters only go up. */
    assert_int_equal(azc_metric_inc(c, L("/a", "200"), -1), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(c, L("/a", "200"), NAN), AZC_EINVAL);
    assert_int_equal(azc_metric_set(c, L("/a", "200"), 5), AZC_EINVAL);
    assert_int_equal(azc_metric_observe(c, L("/a", "200"), 5), AZC_EINVAL);
    azc_metrics_free(m);
}

static void test_gauge(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *g, *q;
    (void)state;

    g = azc_metrics_gauge(m, "temperature", "Degrees.", NULL);
    q = azc_metrics_gauge(m, "queue_depth", "Items waiting.", L("queue"));
    assert_non_null(g);
    assert_non_null(q);
    assert_int_equal(azc_metric_set(g, NULL, -3.25), AZC_OK);
    assert_int_equal(azc_metric_set(q, L("mail"), 10), AZC_OK);
    assert_int_equal(azc_metric_inc(q, L("mail"), -4), AZC_OK);
    assert_int_equal(azc_metric_inc(q, L("sms"), 0.1), AZC_OK);
    assert_int_equal(azc_metric_set(q, L("sms"), INFINITY), AZC_EINVAL);
    assert_int_equal(azc_metric_observe(q, L("sms"), 1), AZC_EINVAL);
    assert_render(m, "# HELP temperature Degrees.\n"
                     "# TYPE temperature gauge\n"
                     "temperature -3.25\n"
                     "# HELP queue_depth Items waiting.\n"
                     "# TYPE queue_depth gauge\n"
                     "queue_depth{queue=\"mail\"} 6\n"
                     "queue_depth{queue=\"sms\"} 0.1\n");
    azc_metrics_free(m);
}

static void test_histogram_cumulative(void **state)
{
    static const double buckets[] = { 0.25, 1, 10 };
    azc_metrics *m = azc_metrics_new();
    azc_metric *h;
    (void)state;

    h = azc_metrics_histogram(m, "latency_seconds", "Latency.", L("route"), buckets, 3);
    assert_non_null(h);
    assert_int_equal(azc_metric_observe(h, L("/x"), 0.125), AZC_OK);
    assert_int_equal(azc_metric_observe(h, L("/x"), 0.25), AZC_OK);  /* le is inclusive */
    assert_int_equal(azc_metric_observe(h, L("/x"), 5), AZC_OK);
    assert_int_equal(azc_metric_observe(h, L("/x"), 20), AZC_OK);
    assert_int_equal(azc_metric_observe(h, L("/x"), NAN), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(h, L("/x"), 1), AZC_EINVAL);
    assert_render(m, "# HELP latency_seconds Latency.\n"
                     "# TYPE latency_seconds histogram\n"
                     "latency_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n"
                     "latency_seconds_bucket{route=\"/x\",le=\"1\"} 2\n"
                     "latency_seconds_bucket{route=\"/x\",le=\"10\"} 3\n"
                     "latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
                     "latency_seconds_sum{route=\"/x\"} 25.375\n"
                     "latency_seconds_count{route=\"/x\"} 4\n");
    azc_metrics_free(m);
}

static void test_histogram_defaults_no_labels(void **state)
{
    static const double with_inf[] = { 1, 2, INFINITY };
    azc_metrics *m = azc_metrics_new();
    azc_metric *h, *h2;
    (void)state;

    h = azc_metrics_histogram(m, "wait_seconds", "Wait.", NULL, NULL, 0);
    assert_non_null(h);
    assert_int_equal(azc_metric_observe(h, NULL, 0.003), AZC_OK);
    assert_render(m, "# HELP wait_seconds Wait.\n"
                     "# TYPE wait_seconds histogram\n"
                     "wait_seconds_bucket{le=\"0.005\"} 1\n"
                     "wait_seconds_bucket{le=\"0.01\"} 1\n"
                     "wait_seconds_bucket{le=\"0.025\"} 1\n"
                     "wait_seconds_bucket{le=\"0.05\"} 1\n"
                     "wait_seconds_bucket{le=\"0.1\"} 1\n"
                     "wait_seconds_bucket{le=\"0.25\"} 1\n"
                     "wait_seconds_bucket{le=\"0.5\"} 1\n"
                     "wait_seconds_bucket{le=\"1\"} 1\n"
                     "wait_seconds_bucket{le=\"2.5\"} 1\n"
                     "wait_seconds_bucket{le=\"5\"} 1\n"
                     "wait_seconds_bucket{le=\"10\"} 1\n"
                     "wait_seconds_bucket{le=\"+Inf\"} 1\n"
                     "wait_seconds_sum 0.003\n"
                     "wait_seconds_count 1\n");
    /* A trailing +Inf bound is the implicit one. */
    h2 = azc_metrics_histogram(m, "size_bytes", "Size.", NULL, with_inf, 3);
    assert_non_null(h2);
    assert_ptr_equal(azc_metrics_histogram(m, "size_bytes", "Size.", NULL, with_inf, 2), h2);
    azc_metrics_free(m);
}

static void test_bad_buckets(void **state)
{
    static const double unsorted[] = { 1, 0.5 };
    static const double dup[] = { 1, 1 };
    static const double nan_b[] = { NAN };
    double many[AZC_METRIC_MAX_BUCKETS + 1];
    azc_metrics *m = azc_metrics_new();
    size_t i;
    (void)state;

    for (i = 0; i < AZC_METRIC_MAX_BUCKETS + 1; i++)
        many[i] = (double)i;
    assert_null(azc_metrics_histogram(m, "a", "", NULL, unsorted, 2));
    assert_null(azc_metrics_histogram(m, "b", "", NULL, dup, 2));
    assert_null(azc_metrics_histogram(m, "c", "", NULL, nan_b, 1));
    assert_null(azc_metrics_histogram(m, "d", "", NULL, many, AZC_METRIC_MAX_BUCKETS + 1));
    assert_non_null(azc_metrics_histogram(m, "e", "", NULL, many, AZC_METRIC_MAX_BUCKETS));
    /* "le" is reserved for buckets. */
    assert_null(azc_metrics_histogram(m, "f", "", L("le"), NULL, 0));
    azc_metrics_free(m);
}

static void test_escaping(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *c;
    (void)state;

    c = azc_metrics_counter(m, "odd_total", "Help with \\ and\nnewline and \"quotes\".",
                            L("v"));
    assert_non_null(c);
    assert_int_equal(azc_metric_inc(c, L("a\\b\"c\nd"), 1), AZC_OK);
    /* HELP escapes backslash and newline only; label values also '"'. */
    assert_render(m, "# HELP odd_total Help with \\\\ and\\nnewline and \"quotes\".\n"
                     "# TYPE odd_total counter\n"
                     "odd_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
    azc_metrics_free(m);
}

static void test_wrong_label_count(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *c, *n;
    (void)state;

    c = azc_metrics_counter(m, "two_total", "", L("a", "b"));
    n = azc_metrics_counter(m, "none_total", "", NULL);
    assert_int_equal(azc_metric_inc(c, NULL, 1), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(c, L("x"), 1), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(c, L("x", "y", "z"), 1), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(n, L("x"), 1), AZC_EINVAL);
    assert_int_equal(azc_metric_inc(n, (const char *const[]){ NULL }, 1), AZC_OK);
    assert_int_equal(azc_metric_inc(NULL, NULL, 1), AZC_EINVAL);
    assert_render(m, "# HELP two_total \n"
                     "# TYPE two_total counter\n"
                     "# HELP none_total \n"
                     "# TYPE none_total counter\n"
                     "none_total 1\n");
    azc_metrics_free(m);
}

static void test_invalid_names(void **state)
{
    azc_metrics *m = azc_metrics_new();
    (void)state;

    assert_null(azc_metrics_counter(m, "", "", NULL));
    assert_null(azc_metrics_counter(m, NULL, "", NULL));
    assert_null(azc_metrics_counter(m, "9lives", "", NULL));
    assert_null(azc_metrics_counter(m, "has-dash", "", NULL));
    assert_null(azc_metrics_counter(m, "has space", "", NULL));
    assert_non_null(azc_metrics_counter(m, "ns:sub_total", "", NULL));
    assert_non_null(azc_metrics_counter(m, "_x9", "", NULL));
    /* Label names: no ':', no leading digit, no "__" prefix, no repeats,
     * at most four. */
    assert_null(azc_metrics_counter(m, "l1", "", L("a:b")));
    assert_null(azc_metrics_counter(m, "l2", "", L("1a")));
    assert_null(azc_metrics_counter(m, "l3", "", L("__name")));
    assert_null(azc_metrics_counter(m, "l4", "", L("a", "a")));
    assert_null(azc_metrics_counter(m, "l5", "", L("a", "b", "c", "d", "e")));
    assert_null(azc_metrics_counter(m, "l6", "", L("")));
    assert_non_null(azc_metrics_counter(m, "l7", "", L("a", "b", "c", "d")));
    assert_null(azc_metrics_counter(NULL, "x", "", NULL));
    azc_metrics_free(m);
}

static void test_duplicate_registration(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *c, *h;
    static const double b1[] = { 1, 2 };
    static const double b2[] = { 1, 3 };
    (void)state;

    c = azc_metrics_counter(m, "dup_total", "First.", L("a"));
    assert_non_null(c);
    assert_ptr_equal(azc_metrics_counter(m, "dup_total", "Other help.", L("a")), c);
    assert_null(azc_metrics_counter(m, "dup_total", "", L("b")));
    assert_null(azc_metrics_counter(m, "dup_total", "", L("a", "b")));
    assert_null(azc_metrics_counter(m, "dup_total", "", NULL));
    assert_null(azc_metrics_gauge(m, "dup_total", "", L("a")));
    h = azc_metrics_histogram(m, "dup_seconds", "", NULL, b1, 2);
    assert_non_null(h);
    assert_ptr_equal(azc_metrics_histogram(m, "dup_seconds", "", NULL, b1, 2), h);
    assert_null(azc_metrics_histogram(m, "dup_seconds", "", NULL, b2, 2));
    assert_null(azc_metrics_histogram(m, "dup_seconds", "", NULL, NULL, 0));
    /* The first help text stays; one family rendered once. */
    assert_int_equal(azc_metric_inc(c, L("x"), 1), AZC_OK);
    {
        char *s = render(m);

        assert_non_null(strstr(s, "# HELP dup_total First.\n"));
        assert_null(strstr(s, "Other help"));
        free(s);
    }
    azc_metrics_free(m);
}

static void test_values_and_series_cap(void **state)
{
    azc_metrics *m = azc_metrics_new();
    azc_metric *g, *c;
    char v[16];
    int i;
    (void)state;

    g = azc_metrics_gauge(m, "big", "", NULL);
    assert_int_equal(azc_metric_set(g, NULL, 12345678901234567.0), AZC_OK);
    assert_render(m, "# HELP big \n# TYPE big gauge\nbig 12345678901234568\n");
    c = azc_metrics_counter(m, "many_total", "", L("k"));
    for (i = 0; i < AZC_METRICS_MAX_SERIES; i++) {
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(azc_metric_inc(c, L(v), 1), AZC_OK);
    }
    assert_int_equal(azc_metric_inc(c, L("one-more"), 1), AZC_ETOOBIG);
    assert_int_equal(azc_metric_inc(c, L("7"), 1), AZC_OK);   /* existing series still fine */
    azc_metrics_free(m);
    azc_metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_without_labels),
        cmocka_unit_test(test_counter_with_labels),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_histogram_defaults_no_labels),
        cmocka_unit_test(test_bad_buckets),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_wrong_label_count),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_duplicate_registration),
        cmocka_unit_test(test_values_and_series_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
