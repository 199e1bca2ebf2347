/* Unit tests: the identity service's policy vocabulary syntax. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "identity/validate.h"

static void test_permissions(void **state)
{
    static const char *const good[] = { "*", "doc:read", "doc:*", "a:b", "doc-x_1:write-all",
                                        "a234567890123456789012345678901234567890123456789012345678901234:r" };
    static const char *const bad[] = { "", "doc", "doc:", ":read", "*:read", "Doc:read", "doc:Read",
                                       "doc:read:x", "doc :read", "1doc:read", "doc:1read", "**",
                                       "doc:**", "a2345678901234567890123456789012345678901234567890123456789012345:r" };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!azc_permission_valid(good[i]))
            fail_msg("rejected \"%s\"", good[i]);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (azc_permission_valid(bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(azc_permission_valid(NULL));
}

static void test_resources(void **state)
{
    static const char *const good[] = { "*", "doc/*", "doc/42", "doc/a.b:c@d~e+f=g-h_i",
                                        "img/ABC" };
    static const char *const bad[] = { "", "doc", "doc/", "/42", "*/42", "Doc/1", "doc/a b",
                                       "doc/a/b", "doc/**", "doc/*x", "doc/\xc3\xa9" };
    char longid[300];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!azc_resource_valid(good[i]))
            fail_msg("rejected \"%s\"", good[i]);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (azc_resource_valid(bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    memcpy(longid, "doc/", 4);
    memset(longid + 4, 'x', 257);
    longid[261] = '\0';
    assert_false(azc_resource_valid(longid));
    longid[260] = '\0';
    assert_true(azc_resource_valid(longid));
}

static void test_texts(void **state)
{
    (void)state;
    assert_true(azc_subject_valid("user-42@idp"));
    assert_false(azc_subject_valid("has space"));
    assert_false(azc_subject_valid(""));
    assert_false(azc_subject_valid("tab\there"));
    assert_true(id_email_valid("a@b.c"));
    assert_false(id_email_valid("@b.c"));
    assert_false(id_email_valid("a@"));
    assert_false(id_email_valid("a@b@c"));
    assert_false(id_email_valid("a b@c"));
    assert_true(id_text_valid("Ünïcode name", 100, 0));
    assert_false(id_text_valid("", 100, 0));
    assert_true(id_text_valid("", 100, 1));
    assert_false(id_text_valid("new\nline", 100, 0));
    assert_false(id_text_valid("abc", 2, 0));
}

/* Names that look blank or hide characters are refused. */
static void test_hidden_characters(void **state)
{
    static const char *const bad[] = {
        " ", "   \t", "\xc2\xa0\xe3\x80\x80",         /* blank: spaces, NBSP, ideographic */
        "tab\there", "del\x7f", "c1\xc2\x85" "x",           /* C0, DEL, C1 (NEL) */
        "evil\xe2\x80\xaetxt.exe",                    /* U+202E right-to-left override */
        "zero\xe2\x80\x8b" "width",                       /* U+200B zero width space */
        "join\xe2\x80\x8d", "\xef\xbb\xbf" "bom",         /* U+200D, U+FEFF */
        "soft\xc2\xadhyphen", "word\xe2\x81\xa0joiner", /* U+00AD, U+2060 */
        "iso\xe2\x81\xa6late", "arabic\xd8\x9c" "mark",     /* U+2066, U+061C */
        "mongolian\xe1\xa0\x8e", "tag\xf3\xa0\x80\x81",  /* U+180E, U+E0001 */
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(id_text_valid(bad[i], 100, 0));
    }
    /* Descriptions may be empty or blank, but not hide characters. */
    assert_true(id_text_valid("  ", 100, 1));
    assert_false(id_text_valid("a\xe2\x80\xae" "b", 100, 1));
    /* Visible text outside ASCII stays fine. */
    assert_true(id_text_valid(" padded name ", 100, 0));
    assert_true(id_text_valid("\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", 100, 0));
}

static void test_permission_lists(void **state)
{
    json_t *ok = json_pack("[s,s,s]", "doc:read", "doc:*", "*");
    json_t *dup = json_pack("[s,s]", "doc:read", "doc:read");
    json_t *wrong = json_pack("[s,i]", "doc:read", 5);
    json_t *notarr = json_string("doc:read");
    json_t *many = json_array();
    char field[32];
    azc_err e;
    int i;
    (void)state;

    assert_int_equal(id_permissions_check(ok, field, sizeof field, &e), AZC_OK);
    assert_int_equal(id_permissions_check(dup, field, sizeof field, &e), AZC_EINVAL);
    assert_string_equal(field, "permissions[1]");
    assert_non_null(strstr(e.msg, "duplicate"));
    assert_int_equal(id_permissions_check(wrong, field, sizeof field, &e), AZC_EINVAL);
    assert_string_equal(field, "permissions[1]");
    assert_int_equal(id_permissions_check(notarr, field, sizeof field, &e), AZC_EINVAL);
    assert_string_equal(field, "permissions");
    for (i = 0; i < ID_MAX_PERMISSIONS + 1; i++)
        json_array_append_new(many, json_string("a:b"));
    assert_int_equal(id_permissions_check(many, field, sizeof field, &e), AZC_EINVAL);
    json_decref(ok);
    json_decref(dup);
    json_decref(wrong);
    json_decref(notarr);
    json_decref(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_resources),
        cmocka_unit_test(test_texts),
        cmocka_unit_test(test_hidden_characters),
        cmocka_unit_test(test_permission_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
