/*
 * authzctl's pure parts (tools/authzctl/args.c, table.c, env.c): command
 * words and flags, tables, the env file of tools/local-cluster, region
 * lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/authzctl/args.h"
#include "tools/authzctl/env.h"
#include "tools/authzctl/table.h"

static const ctl_flag GLOBAL[] = {
    { "json", NULL, "" },
    { "region", "R", "" },
    { "token", "T", "" },
};
static const ctl_flag CREATE[] = {
    { "name", "NAME", "" },
    { "permission", "PERM", "" },
    { "all", NULL, "" },
};

static int parse(int argc, char **argv, ctl_args *a, char *err, size_t len)
{
    const ctl_flag *sets[2] = { GLOBAL, CREATE };
    size_t n[2] = { 3, 3 };
    int idx[2] = { -1, -1 };
    size_t nw = ctl_args_words(argc, argv, GLOBAL, 3, idx);

    return ctl_args_parse(argc, argv, 1, idx, nw, sets, n, 2, a, err, len);
}

static void test_words(void **state)
{
    char *a1[] = { "authzctl", "--json", "--region", "eu", "roles", "create", "--name", "x" };
    char *a2[] = { "authzctl", "call", "--data", "{}", "GET", "http://x" };
    char *a3[] = { "authzctl", "--region=eu", "status" };
    char *a4[] = { "authzctl", "--json" };
    int idx[2];

    (void)state;
    assert_int_equal(ctl_args_words(8, a1, GLOBAL, 3, idx), 2);
    assert_int_equal(idx[0], 4);
    assert_int_equal(idx[1], 5);
    /* "{}" is the value of a command flag, not a second word */
    assert_int_equal(ctl_args_words(6, a2, GLOBAL, 3, idx), 1);
    assert_int_equal(idx[0], 1);
    assert_int_equal(ctl_args_words(3, a3, GLOBAL, 3, idx), 1);
    assert_int_equal(idx[0], 2);
    assert_int_equal(ctl_args_words(2, a4, GLOBAL, 3, idx), 0);
}

static void test_flags(void **state)
{
    char *argv[] = { "authzctl", "roles", "--json", "create", "--name", "reader",
                     "--permission=doc:read", "--permission", "doc:list,doc:get", "--region",
                     "us", "--", "--literal" };
    const char *perms[4];
    char err[128];
    ctl_args a;

    (void)state;
    assert_int_equal(parse(13, argv, &a, err, sizeof err), 0);
    assert_true(ctl_arg_has(&a, "json"));
    assert_string_equal(ctl_arg(&a, "json"), "");
    assert_string_equal(ctl_arg(&a, "name"), "reader");
    assert_string_equal(ctl_arg(&a, "region"), "us");
    assert_null(ctl_arg(&a, "token"));
    assert_int_equal(ctl_arg_all(&a, "permission", perms, 4), 2);
    assert_string_equal(perms[0], "doc:read");
    assert_string_equal(perms[1], "doc:list,doc:get");
    assert_int_equal(a.npos, 1);   /* after "--" a word is positional */
    assert_string_equal(a.pos[0], "--literal");
}

static void test_flag_errors(void **state)
{
    char *unknown[] = { "authzctl", "roles", "create", "--nmae", "x" };
    char *missing[] = { "authzctl", "roles", "create", "--name" };
    char *switchval[] = { "authzctl", "roles", "create", "--all=yes" };
    char *single[] = { "authzctl", "roles", "create", "-n" };
    char err[128];
    ctl_args a;

    (void)state;
    assert_int_equal(parse(5, unknown, &a, err, sizeof err), -1);
    assert_string_equal(err, "unknown flag --nmae");
    assert_int_equal(parse(4, missing, &a, err, sizeof err), -1);
    assert_string_equal(err, "--name needs a value (NAME)");
    assert_int_equal(parse(4, switchval, &a, err, sizeof err), -1);
    assert_string_equal(err, "--all takes no value");
    assert_int_equal(parse(4, single, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown flag \"-n\""));
}

static void test_numbers(void **state)
{
    long v;

    (void)state;
    assert_int_equal(ctl_parse_long("500", 500, &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(ctl_parse_long("501", 500, &v), -1);
    assert_int_equal(ctl_parse_long("0", 500, &v), -1);
    assert_int_equal(ctl_parse_long("-1", 500, &v), -1);
    assert_int_equal(ctl_parse_long("12x", 500, &v), -1);
    assert_int_equal(ctl_parse_long("", 500, &v), -1);
    assert_int_equal(ctl_parse_secs("30", 60000, &v), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(ctl_parse_secs("0.25", 60000, &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(ctl_parse_secs("0", 60000, &v), -1);
    assert_int_equal(ctl_parse_secs("61", 60000, &v), -1);
    assert_int_equal(ctl_parse_secs("nan", 60000, &v), -1);
    assert_int_equal(ctl_parse_secs("1e3", 60000000, &v), 0);
    assert_int_equal(ctl_parse_secs("-2", 60000, &v), -1);
}

static char *print(const ctl_table *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    ctl_table_print(t, f);
    fclose(f);
    return buf;
}

static void test_table(void **state)
{
    static const char *const hdr[] = { "ID", "NAME", "N" };
    const char *r1[] = { "a1", "payments", "3" };
    const char *r2[] = { "b22", "équipe", NULL };          /* UTF-8 counts as characters */
    const char *r3[] = { "c", "evil\x1b[2Jname", "" };      /* a terminal escape */
    ctl_table *t = ctl_table_new(hdr, 3);
    char *out;

    (void)state;
    assert_non_null(t);
    assert_int_equal(ctl_table_add(t, r1), 0);
    assert_int_equal(ctl_table_add(t, r2), 0);
    assert_int_equal(ctl_table_add(t, r3), 0);
    assert_int_equal(ctl_table_rows(t), 3);
    out = print(t);
    assert_string_equal(out, "ID   NAME          N\n"
                             "a1   payments      3\n"
                             "b22  équipe        -\n"
                             "c    evil?[2Jname\n");
    free(out);
    ctl_table_free(t);
    ctl_table_free(NULL);
    assert_null(ctl_table_new(hdr, 0));
}

static void test_cell_clean(void **state)
{
    char buf[64];

    (void)state;
    assert_int_equal(ctl_cell_clean("abcdefghij", buf, sizeof buf, 8), 8);
    assert_string_equal(buf, "abcde...");
    assert_int_equal(ctl_cell_clean("abcdefgh", buf, sizeof buf, 8), 8);
    assert_string_equal(buf, "abcdefgh");
    assert_int_equal(ctl_cell_clean("ééééééééé", buf, sizeof buf, 8), 8);
    assert_string_equal(buf, "ééééé...");
    assert_int_equal(ctl_cell_clean("a\xff\tb", buf, sizeof buf, 8), 4);   /* bad byte, tab */
    assert_string_equal(buf, "a??b");
    assert_int_equal(ctl_cell_clean("\xc3", buf, sizeof buf, 8), 1);      /* cut sequence */
    assert_string_equal(buf, "?");
}

static void test_env_lines(void **state)
{
    char *k, *v;

    (void)state;
    assert_int_equal(ctl_env_parse_line("IDENTITY_URL_US=http://127.0.0.1:20120\n", &k, &v), 1);
    assert_string_equal(k, "IDENTITY_URL_US");
    assert_string_equal(v, "http://127.0.0.1:20120");
    free(k);
    free(v);
    assert_int_equal(ctl_env_parse_line("AUTHZ_RUN_DIR='/tmp/a b/it'\\''s'\n", &k, &v), 1);
    assert_string_equal(v, "/tmp/a b/it's");
    free(k);
    free(v);
    assert_int_equal(ctl_env_parse_line("export AUTHZ_REGIONS=us,eu", &k, &v), 1);
    assert_string_equal(k, "AUTHZ_REGIONS");
    free(k);
    free(v);
    assert_int_equal(ctl_env_parse_line("\n", &k, &v), 0);
    assert_int_equal(ctl_env_parse_line("# comment", &k, &v), 0);
    assert_int_equal(ctl_env_parse_line("lower=x", &k, &v), -1);
    assert_int_equal(ctl_env_parse_line("X=$(rm -rf /)", &k, &v), -1);
    assert_int_equal(ctl_env_parse_line("X='open", &k, &v), -1);
    assert_int_equal(ctl_env_parse_line("X='a'b", &k, &v), -1);
    assert_int_equal(ctl_env_parse_line("=x", &k, &v), -1);
}

static const char *fake_getenv(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "AUTHZ_URL_EU") == 0 ? "http://from-env" : NULL;
}

static void test_env_file(void **state)
{
    char path[] = "/tmp/test_authzctl_envXXXXXX", err[256], name[64];
    int fd = mkstemp(path);
    FILE *f;
    ctl_env e;

    (void)state;
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("AUTHZ_REGIONS=us,eu\nAUTHZ_URL_EU=http://from-file\nIDENTITY_URL_US=http://id\n", f);
    fclose(f);
    ctl_env_init(&e);
    e.get = fake_getenv;
    assert_int_equal(ctl_env_load(&e, path, err, sizeof err), 0);
    assert_string_equal(ctl_env_get(&e, "AUTHZ_REGIONS"), "us,eu");
    assert_string_equal(ctl_env_get(&e, "AUTHZ_URL_EU"), "http://from-env");   /* env first */
    assert_string_equal(ctl_env_get(&e, "IDENTITY_URL_US"), "http://id");
    assert_null(ctl_env_get(&e, "IDENTITY_URL_EU"));
    ctl_env_clear(&e);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("A=1\nnot a line\n", f);
    fclose(f);
    assert_int_equal(ctl_env_load(&e, path, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2: not a NAME=value line"));
    unlink(path);
    assert_int_equal(ctl_env_load(&e, path, err, sizeof err), -1);
    assert_int_equal(ctl_env_url_name("IDENTITY", "us-east", name, sizeof name), 0);
    assert_string_equal(name, "IDENTITY_URL_US_EAST");
    ctl_env_clear(&e);
}

static void test_regions(void **state)
{
    const char *r[4];
    char store[64];

    (void)state;
    assert_int_equal(ctl_regions_split("us,eu,ap", store, sizeof store, r, 4), 3);
    assert_string_equal(r[0], "us");
    assert_string_equal(r[2], "ap");
    assert_int_equal(ctl_regions_split("us", store, sizeof store, r, 4), 1);
    assert_int_equal(ctl_regions_split("us,us", store, sizeof store, r, 4), -1);
    assert_int_equal(ctl_regions_split("us,,eu", store, sizeof store, r, 4), -1);
    assert_int_equal(ctl_regions_split("US", store, sizeof store, r, 4), -1);
    assert_int_equal(ctl_regions_split("", store, sizeof store, r, 4), -1);
    assert_int_equal(ctl_regions_split("a,b,c,d,e", store, sizeof store, r, 4), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words),      cmocka_unit_test(test_flags),
        cmocka_unit_test(test_flag_errors), cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_table),      cmocka_unit_test(test_cell_clean),
        cmocka_unit_test(test_env_lines),  cmocka_unit_test(test_env_file),
        cmocka_unit_test(test_regions),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
