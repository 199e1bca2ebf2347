/*
 * Unit tests of the threaded snapshot loader (gateway-filter/snapload.c):
 * more rows than its queue holds, loaded whole and in order; a bad row
 * anywhere publishes nothing; counts that do not match publish nothing;
 * a load dropped half way (the connection lost) frees everything, which
 * the sanitizer build checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <urcu-bp.h>

#include "gateway-filter/index.h"
#include "gateway-filter/snapload.h"

/* Well past the queue (8 batches of 512), so the producer has to wait. */
#define NROWS 20000

static json_t *head(const char *cursor)
{
    return json_pack("{s:s, s:s, s:{s:{s:i, s:i}}}", "region", "us", "cursor", cursor,
                     "watermarks", "us", "applied", 5, "known", 6);
}

/* Row i: user i / 3, its membership of t-1, its policy (doc:read on every doc). */
static json_t *row_line(int i, const char *kind_override)
{
    char id[24], sub[24], asg[24];
    int u = i / 3;

    snprintf(id, sizeof id, "u-%d", u);
    snprintf(sub, sizeof sub, "s%d", u);
    snprintf(asg, sizeof asg, "a-%d", u);
    switch (i % 3) {
    case 0:
        return json_pack("{s:s, s:{s:s, s:s, s:i, s:s, s:i, s:b}}", "kind",
                         kind_override ? kind_override : "user", "row", "user_id", id, "subject",
                         sub, "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0);
    case 1:
        return json_pack("{s:s, s:{s:s, s:s, s:i, s:s, s:i, s:b}}", "kind",
                         kind_override ? kind_override : "membership", "row", "team_id", "t-1",
                         "user_id", id, "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0);
    default:
        return json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:i, s:s, s:i, s:b}}",
                         "kind", kind_override ? kind_override : "policy", "row",
                         "assignment_id", asg, "principal_type", "user", "principal_id", id,
                         "role_id", "r-1", "region", "*", "resource", "doc/*", "permissions",
                         "doc:read", "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0);
    }
}

static json_t *counts(int users, int memberships, int policies)
{
    return json_pack("{s:i, s:i, s:i}", "users", users, "memberships", memberships, "policies",
                     policies);
}

static int allowed(af_index *ix, const char *subject)
{
    af_query q = { subject, "doc:read", "doc/x" };
    af_result r;

    af_index_check(ix, &q, &r);
    return r.loaded && r.allowed;
}

/* Feeds rows 0..n-1 (row `bad` with an unknown kind, -1: none); the
 * first error is returned, the rest are still handed over. */
static int feed_rows(af_snapload *s, int n, int bad, azc_err *e)
{
    int i, rc = AZC_OK;
    azc_err e2;

    for (i = 0; i < n; i++) {
        int r = af_snapload_row(s, row_line(i, i == bad ? "gizmo" : NULL), &e2);

        if (r != AZC_OK && rc == AZC_OK) {
            rc = r;
            *e = e2;
        }
    }
    return rc;
}

static void test_loads_more_than_the_queue(void **state)
{
    af_index *ix = af_index_new("us");
    af_snapload *s;
    af_index_stats st;
    json_t *h = head("77"), *c = counts(NROWS / 3 + 1, NROWS / 3 + 1, NROWS / 3 + 1);
    azc_err e;

    (void)state;
    assert_int_equal(af_snapload_new(ix, h, &s, &e), AZC_OK);
    assert_int_equal(feed_rows(s, NROWS + 1, -1, &e), AZC_OK);
    /* Nothing is visible before the commit. */
    assert_false(allowed(ix, "s0"));
    assert_int_equal(af_snapload_commit(s, c, &e), AZC_OK);
    af_index_get_stats(ix, &st);
    assert_int_equal(st.cursor, 77);
    assert_int_equal(st.users, NROWS / 3 + 1);
    assert_int_equal(st.assignments, NROWS / 3 + 1);
    assert_true(allowed(ix, "s0"));
    assert_true(allowed(ix, "s6666"));    /* the last row */
    assert_false(allowed(ix, "s6667"));   /* no such user */
    json_decref(h);
    json_decref(c);
    af_index_free(ix);
}

/* A first load, then a second whose row `bad` is refused: the index keeps
 * the first, whichever batch the bad row is in. */
static void refused(int bad)
{
    af_index *ix = af_index_new("us");
    af_snapload *s;
    af_index_stats st;
    json_t *h = head("5"), *h2 = head("9"), *c = counts(2, 1, 1);
    azc_err e;
    int rc;

    assert_int_equal(af_snapload_new(ix, h, &s, &e), AZC_OK);
    assert_int_equal(feed_rows(s, 4, -1, &e), AZC_OK);
    assert_int_equal(af_snapload_commit(s, c, &e), AZC_OK);
    assert_int_equal(af_snapload_new(ix, h2, &s, &e), AZC_OK);
    rc = feed_rows(s, NROWS, bad, &e);
    if (rc == AZC_OK)
        rc = af_snapload_commit(s, NULL, &e);
    assert_int_not_equal(rc, AZC_OK);
    assert_non_null(strstr(e.msg, "unknown kind"));
    af_snapload_free(s);
    af_index_get_stats(ix, &st);
    assert_int_equal(st.cursor, 5);
    assert_int_equal(st.users, 2);
    assert_true(allowed(ix, "s0"));
    assert_false(allowed(ix, "s100"));
    json_decref(h);
    json_decref(h2);
    json_decref(c);
    af_index_free(ix);
}

static void test_bad_row_publishes_nothing(void **state)
{
    (void)state;
    refused(3);              /* in the first batch */
    refused(NROWS / 2);      /* once the queue has filled */
    refused(NROWS - 1);      /* the last row: only the commit can tell */
}

static void test_counts_must_match(void **state)
{
    af_index *ix = af_index_new("us");
    af_snapload *s;
    json_t *h = head("5"), *c = counts(NROWS / 3 + 2, NROWS / 3 + 1, NROWS / 3 + 1);
    azc_err e;

    (void)state;
    assert_int_equal(af_snapload_new(ix, h, &s, &e), AZC_OK);
    assert_int_equal(feed_rows(s, NROWS + 1, -1, &e), AZC_OK);
    assert_int_not_equal(af_snapload_commit(s, c, &e), AZC_OK);
    assert_non_null(strstr(e.msg, "users"));
    af_snapload_free(s);
    assert_false(allowed(ix, "s0"));
    json_decref(h);
    json_decref(c);
    af_index_free(ix);
}

static void test_dropped_half_way(void **state)
{
    af_index *ix = af_index_new("us");
    af_snapload *s;
    json_t *h = head("5");
    azc_err e;

    (void)state;
    assert_int_equal(af_snapload_new(ix, h, &s, &e), AZC_OK);
    assert_int_equal(feed_rows(s, NROWS / 2, -1, &e), AZC_OK);
    af_snapload_free(s);            /* with batches queued and one half full */
    af_snapload_free(NULL);
    assert_false(allowed(ix, "s0"));
    /* A bad head starts nothing. */
    json_decref(h);
    h = json_pack("{s:s, s:s}", "region", "eu", "cursor", "1");
    s = (af_snapload *)&e;
    assert_int_not_equal(af_snapload_new(ix, h, &s, &e), AZC_OK);
    assert_null(s);
    json_decref(h);
    af_index_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_more_than_the_queue),
        cmocka_unit_test(test_bad_row_publishes_nothing),
        cmocka_unit_test(test_counts_must_match),
        cmocka_unit_test(test_dropped_half_way),
    };

    rcu_register_thread();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
