/* Unit tests: the policy vocabulary (syntax, grants, covers, wildcards). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/policy.h"

static void rep(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
}

static void test_syntax(void **state)
{
    char t64[80], t65[80], id[300], big[400];
    (void)state;

    assert_true(azc_permission_valid("doc:read"));
    assert_true(azc_permission_valid("doc:*"));
    assert_true(azc_permission_valid("*"));
    assert_true(azc_permission_valid("d0c_x-y:re_ad-2"));
    assert_false(azc_permission_valid(NULL));
    assert_false(azc_permission_valid(""));
    assert_false(azc_permission_valid("doc"));
    assert_false(azc_permission_valid("doc:"));
    assert_false(azc_permission_valid(":read"));
    assert_false(azc_permission_valid("*:read"));
    assert_false(azc_permission_valid("do*:read"));
    assert_false(azc_permission_valid("doc:re*d"));
    assert_false(azc_permission_valid("Doc:read"));
    assert_false(azc_permission_valid("1doc:read"));
    assert_false(azc_permission_valid("doc:read:x"));
    rep(t64, 'a', 64);
    rep(t65, 'a', 65);
    snprintf(big, sizeof big, "%s:read", t64);
    assert_true(azc_permission_valid(big));
    snprintf(big, sizeof big, "%s:read", t65);
    assert_false(azc_permission_valid(big));

    assert_true(azc_resource_valid("doc/42"));
    assert_true(azc_resource_valid("doc/*"));
    assert_true(azc_resource_valid("*"));
    assert_true(azc_resource_valid("doc/A.b~c:d@e+f=g-h_1"));
    assert_false(azc_resource_valid("doc"));
    assert_false(azc_resource_valid("doc/"));
    assert_false(azc_resource_valid("/42"));
    assert_false(azc_resource_valid("doc/*x"));
    assert_false(azc_resource_valid("doc/a b"));
    assert_false(azc_resource_valid("doc/a/b"));
    rep(id, 'x', 256);
    snprintf(big, sizeof big, "doc/%s", id);
    assert_true(azc_resource_valid(big));
    assert_true(azc_check_resource_valid(big));
    rep(id, 'x', 257);
    snprintf(big, sizeof big, "doc/%s", id);
    assert_false(azc_resource_valid(big));

    assert_true(azc_action_valid("doc:read"));
    assert_false(azc_action_valid("doc:*"));
    assert_false(azc_action_valid("*"));
    assert_true(azc_check_resource_valid("doc/1"));
    assert_false(azc_check_resource_valid("doc/*"));
    assert_false(azc_check_resource_valid("*"));

    assert_true(azc_subject_valid("alice@example.com"));
    assert_false(azc_subject_valid(""));
    assert_false(azc_subject_valid("a b"));
    assert_false(azc_subject_valid("a\x01"));
    assert_false(azc_subject_valid("\xc3\xa9"));
    rep(big, 's', 256);
    assert_true(azc_subject_valid(big));
    rep(big, 's', 257);
    assert_false(azc_subject_valid(big));
}

static void test_grants_and_covers(void **state)
{
    (void)state;
    assert_true(azc_permission_grants("doc:read", "doc:read"));
    assert_true(azc_permission_grants("doc:*", "doc:read"));
    assert_true(azc_permission_grants("*", "img:write"));
    assert_false(azc_permission_grants("doc:read", "doc:write"));
    assert_false(azc_permission_grants("doc:*", "docs:read"));
    assert_false(azc_permission_grants("docs:*", "doc:read"));
    assert_false(azc_permission_grants("doc:*", "img:read"));
    assert_false(azc_permission_grants("doc:read", "doc:*"));
    assert_false(azc_permission_grants("bad", "doc:read"));
    assert_false(azc_permission_grants(NULL, "doc:read"));

    assert_true(azc_resource_covers("doc/1", "doc/1"));
    assert_true(azc_resource_covers("doc/*", "doc/1"));
    assert_true(azc_resource_covers("*", "img/9"));
    assert_false(azc_resource_covers("doc/1", "doc/2"));
    assert_false(azc_resource_covers("doc/*", "docs/1"));
    assert_false(azc_resource_covers("docs/*", "doc/1"));
    assert_false(azc_resource_covers("doc/*", "doc/"));
    assert_false(azc_resource_covers("doc/1", "doc/*"));

    assert_true(azc_region_covers("*", "eu"));
    assert_true(azc_region_covers("eu", "eu"));
    assert_false(azc_region_covers("us", "eu"));
    assert_false(azc_region_covers(NULL, "eu"));
}

static void test_wildcards(void **state)
{
    char buf[80];
    (void)state;

    assert_int_equal(azc_action_wildcards("doc:read", buf, sizeof buf), AZC_OK);
    assert_string_equal(buf, "doc:*");
    assert_int_equal(azc_resource_wildcard("img/42", buf, sizeof buf), AZC_OK);
    assert_string_equal(buf, "img/*");
    assert_int_equal(azc_action_wildcards("doc:*", buf, sizeof buf), AZC_EINVAL);
    assert_int_equal(azc_resource_wildcard("img/*", buf, sizeof buf), AZC_EINVAL);
    assert_int_equal(azc_action_wildcards("doc:read", buf, 5), AZC_ETOOBIG);
    assert_int_equal(azc_action_wildcards("doc:read", buf, 6), AZC_OK);
    assert_int_equal(azc_resource_wildcard("img/42", buf, 3), AZC_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_grants_and_covers),
        cmocka_unit_test(test_wildcards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
