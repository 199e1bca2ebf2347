/* Unit tests: error records, the JSON-lines logger, request ids and the
 * shared command line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/err.h"
#include "common/log.h"

static void test_err_set(void **state)
{
    azc_err e;
    (void)state;

    assert_int_equal(azc_err_set(&e, AZC_EINVAL, "bad %s %d", "key", 7), AZC_EINVAL);
    assert_int_equal(e.code, AZC_EINVAL);
    assert_string_equal(e.msg, "bad key 7");
    assert_int_equal(azc_err_set(NULL, AZC_ETOOBIG, "x"), AZC_ETOOBIG);
    azc_err_clear(&e);
    assert_int_equal(e.code, AZC_OK);
    assert_string_equal(e.msg, "");
    assert_string_equal(azc_status_name(AZC_EINVAL), "invalid");
    assert_string_equal(azc_status_name(-99), "error");
}

/* Reads what the logger wrote to a memory stream, one line expected. */
static json_t *log_one(azc_log_level min, azc_log_level lvl, const char *rid, json_t *fields,
                       const char *msg, size_t *nlines)
{
    char *buf = NULL;
    size_t len = 0, i;
    FILE *f = open_memstream(&buf, &len);
    azc_log *lg;
    json_t *j = NULL;

    assert_non_null(f);
    lg = azc_log_new("unit", min, f);
    assert_non_null(lg);
    azc_log_write(lg, lvl, rid, fields, msg);
    azc_log_free(lg);
    fclose(f);
    *nlines = 0;
    for (i = 0; i < len; i++)
        *nlines += buf[i] == '\n';
    if (len > 0)
        j = json_loads(buf, 0, NULL);
    free(buf);
    return j;
}

static void test_log_line(void **state)
{
    json_t *fields = json_pack("{s:i, s:s, s:s}", "port", 8080, "msg", "ignored", "x", "y");
    size_t lines;
    json_t *j;
    (void)state;

    j = log_one(AZC_LOG_INFO, AZC_LOG_WARN, "abc123", fields, "line \"one\"\nsplit", &lines);
    assert_int_equal(lines, 1);   /* a newline in msg is escaped, never a second line */
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "component")), "unit");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "line \"one\"\nsplit");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "abc123");
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 8080);
    assert_string_equal(json_string_value(json_object_get(j, "x")), "y");
    assert_int_equal(strlen(json_string_value(json_object_get(j, "ts"))), 24);
    json_decref(j);
    json_decref(fields);
}

static void test_log_level_filter(void **state)
{
    size_t lines;
    json_t *j;
    (void)state;

    j = log_one(AZC_LOG_WARN, AZC_LOG_INFO, NULL, NULL, "dropped", &lines);
    assert_null(j);
    assert_int_equal(lines, 0);
    j = log_one(AZC_LOG_DEBUG, AZC_LOG_DEBUG, NULL, NULL, "kept", &lines);
    assert_non_null(j);
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
}

static void test_log_invalid_utf8(void **state)
{
    size_t lines;
    json_t *j;
    (void)state;

    j = log_one(AZC_LOG_INFO, AZC_LOG_ERROR, NULL, NULL, "bad \xff\xfe bytes", &lines);
    assert_int_equal(lines, 1);
    assert_non_null(j);
    /* The line keeps the message, with the bytes that are not UTF-8 as ?. */
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad ?? bytes");
    json_decref(j);
}

static void test_log_level_parse(void **state)
{
    azc_log_level l;
    azc_err e;
    (void)state;

    assert_int_equal(azc_log_level_parse("warn", &l, &e), AZC_OK);
    assert_int_equal(l, AZC_LOG_WARN);
    assert_int_equal(azc_log_level_parse("verbose", &l, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "verbose"));
    assert_int_equal(azc_log_level_parse(NULL, &l, &e), AZC_EINVAL);
}

static void test_request_id(void **state)
{
    char a[AZC_REQUEST_ID_LEN], b[AZC_REQUEST_ID_LEN];
    size_t i;
    (void)state;

    assert_int_equal(azc_request_id_new(a), AZC_OK);
    assert_int_equal(azc_request_id_new(b), AZC_OK);
    assert_int_equal(strlen(a), 32);
    assert_string_not_equal(a, b);
    for (i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
}

static int run_cli(int argc, char *const *argv, azc_cli *cli, char **out_text)
{
    char *ob = NULL, *eb = NULL;
    size_t ol = 0, el = 0;
    FILE *o = open_memstream(&ob, &ol), *er = open_memstream(&eb, &el);
    int rc = azc_cli_parse(argc, argv, "authz-test", "a test", cli, o, er);

    fclose(o);
    fclose(er);
    *out_text = rc == AZC_EINVAL ? eb : ob;
    free(rc == AZC_EINVAL ? ob : eb);
    return rc;
}

static void test_cli(void **state)
{
    azc_cli cli;
    char *text;
    (void)state;

    {
        char *argv[] = { "p", "--config", "a.json", NULL };
        assert_int_equal(run_cli(3, argv, &cli, &text), AZC_CLI_RUN);
        assert_string_equal(cli.config_path, "a.json");
        free(text);
    }
    {
        char *argv[] = { "p", "--config=b.json", NULL };
        assert_int_equal(run_cli(2, argv, &cli, &text), AZC_CLI_RUN);
        assert_string_equal(cli.config_path, "b.json");
        free(text);
    }
    {
        char *argv[] = { "p", NULL };
        assert_int_equal(run_cli(1, argv, &cli, &text), AZC_CLI_RUN);
        assert_null(cli.config_path);
        free(text);
    }
    {
        char *argv[] = { "p", "--help", NULL };
        assert_int_equal(run_cli(2, argv, &cli, &text), AZC_CLI_EXIT);
        assert_non_null(strstr(text, "usage: authz-test"));
        free(text);
    }
    {
        char *argv[] = { "p", "--version", NULL };
        assert_int_equal(run_cli(2, argv, &cli, &text), AZC_CLI_EXIT);
        assert_non_null(strstr(text, AUTHZ_VERSION));
        free(text);
    }
    {
        char *argv[] = { "p", "--config", NULL };
        assert_int_equal(run_cli(2, argv, &cli, &text), AZC_EINVAL);
        assert_non_null(strstr(text, "needs a file name"));
        free(text);
    }
    {
        char *argv[] = { "p", "--port", "80", NULL };
        assert_int_equal(run_cli(3, argv, &cli, &text), AZC_EINVAL);
        assert_non_null(strstr(text, "unknown argument \"--port\""));
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set),
        cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_log_level_filter),
        cmocka_unit_test(test_log_invalid_utf8),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
