/*
 * Unit tests of the stream applier (gateway-filter/applier.c): answers
 * applied through it leave the index exactly as applying them in place
 * does, line after line; a refused answer's code and message come back
 * to the caller and change nothing; without a thread (NULL) it applies in
 * place; starting and stopping idle appliers leaks nothing (the sanitizer
 * build checks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <urcu-bp.h>

#include "gateway-filter/applier.h"
#include "gateway-filter/index.h"

#define LINES 300

static const char SNAP[] =
    "{\"region\":\"us\",\"cursor\":\"10\",\"watermarks\":{\"us\":{\"applied\":50,\"known\":60}},"
    "\"users\":[{\"user_id\":\"u1\",\"subject\":\"alice\",\"hlc\":1,\"origin\":\"us\","
    "\"origin_seq\":1,\"deleted\":false}],\"memberships\":[],\"policies\":[]}";

static af_index *loaded(void)
{
    af_index *ix = af_index_new("us");
    json_t *j = json_loads(SNAP, 0, NULL);
    azc_err e;

    assert_non_null(ix);
    assert_non_null(j);
    assert_int_equal(af_index_load_snapshot(ix, j, &e), AZC_OK);
    json_decref(j);
    return ix;
}

/* Line i (seq 10 + i): grants alice doc:read on doc/<i>, and revokes the
 * grant of line i - 2, so grants come and go. */
static json_t *line(int i)
{
    char id[16], res[16], cur[16];
    json_t *ch = json_array();

    snprintf(id, sizeof id, "a-%d", i);
    snprintf(res, sizeof res, "doc/%d", i);
    json_array_append_new(ch, json_pack(
        "{s:i, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:i, s:s, s:i, s:b}}", "seq",
        20 * i, "kind", "policy", "row", "assignment_id", id, "principal_type", "user",
        "principal_id", "u1", "role_id", "r", "region", "*", "resource", res, "permissions",
        "doc:read", "hlc", i, "origin", "us", "origin_seq", i, "deleted", 0));
    if (i >= 2) {
        snprintf(id, sizeof id, "a-%d", i - 2);
        snprintf(res, sizeof res, "doc/%d", i - 2);
        json_array_append_new(ch, json_pack(
            "{s:i, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:i, s:s, s:i, s:b}}", "seq",
            20 * i + 1, "kind", "policy", "row", "assignment_id", id, "principal_type",
            "user", "principal_id", "u1", "role_id", "r", "region", "*", "resource", res,
            "permissions", "doc:read", "hlc", i, "origin", "us", "origin_seq", i, "deleted", 1));
    }
    snprintf(cur, sizeof cur, "%d", 20 * i + 1);
    return json_pack("{s:o, s:s, s:b, s:{s:{s:i, s:i}}}", "changes", ch, "cursor", cur, "more",
                     0, "watermarks", "us", "applied", 50 + i, "known", 60 + i);
}

static int allows(af_index *ix, int doc)
{
    char res[16];
    af_result r;

    snprintf(res, sizeof res, "doc/%d", doc);
    af_index_check(ix, &(af_query){ "alice", "doc:read", res }, &r);
    return r.allowed;
}

static void test_same_as_in_place(void **state)
{
    af_index *direct = loaded(), *via = loaded();
    af_applier *a = af_applier_new();
    azc_err e;
    int i, d;

    (void)state;
    assert_non_null(a);
    for (i = 1; i <= LINES; i++) {
        json_t *j = line(i);

        assert_int_equal(af_index_apply(direct, j, &e), AZC_OK);
        assert_int_equal(af_applier_apply(a, via, j, &e), AZC_OK);
        json_decref(j);
        assert_int_equal(af_index_cursor(via), af_index_cursor(direct));
        for (d = i - 3; d <= i + 1; d++)
            assert_int_equal(allows(via, d), allows(direct, d));
    }
    /* The last two grants stand, the others were revoked. */
    assert_true(allows(via, LINES) && allows(via, LINES - 1) && !allows(via, LINES - 2));
    assert_int_equal(af_index_cursor(via), 20 * LINES + 1);
    af_applier_free(a);
    af_index_free(direct);
    af_index_free(via);
}

static void test_refused_answer(void **state)
{
    af_index *ix = loaded();
    af_applier *a = af_applier_new();
    json_t *ok = line(1), *bad = line(1);
    azc_err e, e2;

    (void)state;
    assert_int_equal(af_applier_apply(a, ix, ok, &e), AZC_OK);
    /* The same line again: its seq is not above the cursor now. */
    assert_int_equal(af_applier_apply(a, ix, bad, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "is not above"));
    assert_int_equal(af_index_apply(ix, bad, &e2), AZC_EINVAL);
    assert_string_equal(e.msg, e2.msg);
    assert_int_equal(af_index_cursor(ix), 21);
    assert_true(allows(ix, 1));
    /* Before any snapshot: the index's own conflict, through the thread. */
    af_index_free(ix);
    ix = af_index_new("us");
    assert_int_equal(af_applier_apply(a, ix, ok, &e), AZC_ECONFLICT);
    json_decref(ok);
    json_decref(bad);
    af_applier_free(a);
    af_index_free(ix);
}

static void test_without_a_thread(void **state)
{
    af_index *ix = loaded();
    json_t *j = line(1);
    azc_err e;

    (void)state;
    assert_int_equal(af_applier_apply(NULL, ix, j, &e), AZC_OK);
    assert_true(allows(ix, 1));
    json_decref(j);
    af_applier_free(NULL);
    af_index_free(ix);
}

static void test_start_stop_idle(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < 50; i++) {
        af_applier *a = af_applier_new();

        assert_non_null(a);
        af_applier_free(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_in_place),
        cmocka_unit_test(test_refused_answer),
        cmocka_unit_test(test_without_a_thread),
        cmocka_unit_test(test_start_stop_idle),
    };

    rcu_register_thread();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
