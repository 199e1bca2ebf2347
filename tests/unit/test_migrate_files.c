/* Unit tests: migration file discovery and validation (no database; the
 * integration test applies migrations to a real PostgreSQL). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/migrate.h"

static char *make_dir(void)
{
    char tmpl[] = "/tmp/azc-migrate-XXXXXX";
    char *d = mkdtemp(tmpl);

    assert_non_null(d);
    return strdup(d);
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static void rm_dir(char *dir)
{
    char cmd[600];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static void test_sorted_and_hashed(void **state)
{
    char *dir = make_dir();
    azc_migration *list;
    size_t n;
    azc_err e;
    (void)state;

    put(dir, "010_later.sql", "SELECT 10;");
    put(dir, "002_second.sql", "SELECT 2;");
    put(dir, "001_init.sql", "");
    put(dir, ".hidden", "ignored");
    assert_int_equal(azc_migrations_scan(dir, &list, &n, &e), AZC_OK);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].version, 1);
    assert_int_equal(list[1].version, 2);
    assert_int_equal(list[2].version, 10);
    assert_string_equal(list[2].name, "010_later.sql");
    assert_string_equal(list[1].sql, "SELECT 2;");
    /* sha256 of the empty string */
    assert_string_equal(list[0].sha256,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    azc_migrations_free(list, n);
    rm_dir(dir);
}

static void test_empty_dir(void **state)
{
    char *dir = make_dir();
    azc_migration *list;
    size_t n = 9;
    azc_err e;
    (void)state;

    assert_int_equal(azc_migrations_scan(dir, &list, &n, &e), AZC_OK);
    assert_int_equal(n, 0);
    azc_migrations_free(list, n);
    rm_dir(dir);
}

static void test_bad_names(void **state)
{
    static const char *const bad[] = {
        "1_init.sql", "01_init.sql", "001init.sql", "001_.sql", "001_Init.sql",
        "001_init.SQL", "001_init.sql.bak", "000_zero.sql", "abc_init.sql", "001_in-it.sql",
        "README.md",
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = make_dir();
        azc_migration *list;
        size_t n;
        azc_err e;

        put(dir, "001_ok.sql", "SELECT 1;");
        put(dir, bad[i], "SELECT 1;");
        if (azc_migrations_scan(dir, &list, &n, &e) != AZC_EINVAL)
            fail_msg("accepted file name \"%s\"", bad[i]);
        assert_non_null(strstr(e.msg, bad[i]));
        rm_dir(dir);
    }
}

static void test_duplicate_version(void **state)
{
    char *dir = make_dir();
    azc_migration *list;
    size_t n;
    azc_err e;
    (void)state;

    put(dir, "001_a.sql", "SELECT 1;");
    put(dir, "0001_b.sql", "SELECT 1;");
    assert_int_equal(azc_migrations_scan(dir, &list, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "share version 1"));
    rm_dir(dir);
}

static void test_nul_byte_and_missing_dir(void **state)
{
    char *dir = make_dir();
    char path[512];
    azc_migration *list;
    size_t n;
    azc_err e;
    FILE *f;
    (void)state;

    snprintf(path, sizeof path, "%s/001_bin.sql", dir);
    f = fopen(path, "wb");
    fwrite("SELECT\0 1;", 1, 10, f);
    fclose(f);
    assert_int_equal(azc_migrations_scan(dir, &list, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "NUL byte"));
    rm_dir(dir);
    assert_int_equal(azc_migrations_scan("/nonexistent/azc", &list, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "/nonexistent/azc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sorted_and_hashed),
        cmocka_unit_test(test_empty_dir),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_duplicate_version),
        cmocka_unit_test(test_nul_byte_and_missing_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
