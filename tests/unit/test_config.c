/* Unit tests: configuration file, environment overrides, typed getters and
 * the known-key check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"

static const char FILE_JSON[] =
    "{\"http\": {\"port\": 8080, \"addr\": \"127.0.0.1\", \"tls\": false},"
    " \"kafka\": {\"linger_ms\": 1.5, \"brokers\": \"a:1\"}}";

static const azc_config_key KNOWN[] = {
    { "http", "port" }, { "http", "addr" }, { "http", "tls" },
    { "kafka", "linger_ms" }, { "kafka", "brokers" }, { "log", "level" },
};

static azc_config *load(const char *json, char *const *env)
{
    azc_config *cfg = NULL;
    azc_err e;

    azc_err_clear(&e);
    assert_int_equal(azc_config_load_string(&cfg, json, env, &e), AZC_OK);
    assert_non_null(cfg);
    return cfg;
}

static void test_file_values(void **state)
{
    azc_config *cfg = load(FILE_JSON, NULL);
    const char *s;
    long long i;
    int b;
    double d;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e), AZC_OK);
    assert_int_equal(i, 8080);
    assert_int_equal(azc_config_get_string(cfg, "http", "addr", "x", &s, &e), AZC_OK);
    assert_string_equal(s, "127.0.0.1");
    assert_int_equal(azc_config_get_bool(cfg, "http", "tls", 1, &b, &e), AZC_OK);
    assert_int_equal(b, 0);
    assert_int_equal(azc_config_get_double(cfg, "kafka", "linger_ms", 0, 0, 100, &d, &e), AZC_OK);
    assert_true(d > 1.49 && d < 1.51);
    /* defaults for absent keys and sections */
    assert_int_equal(azc_config_get_int(cfg, "http", "timeout", 30, 1, 60, &i, &e), AZC_OK);
    assert_int_equal(i, 30);
    assert_int_equal(azc_config_get_string(cfg, "log", "level", "info", &s, &e), AZC_OK);
    assert_string_equal(s, "info");
    assert_int_equal(azc_config_check(cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], &e), AZC_OK);
    azc_config_free(cfg);
}

static void test_wrong_types_name_the_key(void **state)
{
    azc_config *cfg = load("{\"http\": {\"port\": \"80\", \"addr\": 5, \"tls\": 1}}", NULL);
    const char *s;
    long long i;
    int b;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "http.port"));
    assert_int_equal(azc_config_get_string(cfg, "http", "addr", "x", &s, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "http.addr"));
    assert_int_equal(azc_config_get_bool(cfg, "http", "tls", 0, &b, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "http.tls"));
    azc_config_free(cfg);
}

static void test_range(void **state)
{
    azc_config *cfg = load("{\"http\": {\"port\": 70000}}", NULL);
    long long i = 5;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "http.port = 70000 is out of range"));
    assert_int_equal(i, 5);
    azc_config_free(cfg);
}

static void test_env_overrides(void **state)
{
    char *env[] = { "PATH=/bin", "AUTHZ_HTTP_PORT=9090", "AUTHZ_HTTP_TLS=true",
                    "AUTHZ_LOG_LEVEL=debug", "AUTHZ_KAFKA_LINGER_MS=2.5", NULL };
    azc_config *cfg = load(FILE_JSON, env);
    const char *s;
    long long i;
    int b;
    double d;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e), AZC_OK);
    assert_int_equal(i, 9090);
    assert_int_equal(azc_config_get_bool(cfg, "http", "tls", 0, &b, &e), AZC_OK);
    assert_int_equal(b, 1);
    assert_int_equal(azc_config_get_string(cfg, "log", "level", "info", &s, &e), AZC_OK);
    assert_string_equal(s, "debug");
    assert_int_equal(azc_config_get_double(cfg, "kafka", "linger_ms", 0, 0, 100, &d, &e), AZC_OK);
    assert_true(d > 2.49 && d < 2.51);
    assert_int_equal(azc_config_check(cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], &e), AZC_OK);
    azc_config_free(cfg);
}

static void test_env_bad_values(void **state)
{
    static char *const cases[][2] = {
        { "AUTHZ_HTTP_PORT=80x", "http.port must be an integer" },
        { "AUTHZ_HTTP_PORT=", "http.port must be an integer" },
        { "AUTHZ_HTTP_PORT= 80", "http.port must be an integer" },
        { "AUTHZ_HTTP_PORT=99999999999999999999", "http.port must be an integer" },
        { "AUTHZ_HTTP_TLS=yes", "http.tls must be true or false" },
        { "AUTHZ_KAFKA_LINGER_MS=nan", "kafka.linger_ms must be a number" },
    };
    size_t k;
    (void)state;

    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *env[] = { cases[k][0], NULL };
        azc_config *cfg = load(NULL, env);
        long long i;
        int b;
        double d;
        azc_err e;
        int rc;

        azc_err_clear(&e);
        if (strstr(cases[k][0], "TLS"))
            rc = azc_config_get_bool(cfg, "http", "tls", 0, &b, &e);
        else if (strstr(cases[k][0], "LINGER"))
            rc = azc_config_get_double(cfg, "kafka", "linger_ms", 0, 0, 100, &d, &e);
        else
            rc = azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e);
        assert_int_equal(rc, AZC_EINVAL);
        assert_non_null(strstr(e.msg, cases[k][1]));
        azc_config_free(cfg);
    }
}

/* Tooling variables (other sections, other shapes) are not errors. */
static void test_env_foreign_names_ignored(void **state)
{
    char *env[] = { "AUTHZ_REGIONS=us,eu", "AUTHZ_HTTP_=1", "AUTHZ_HT-TP_PORT=1",
                    "AUTHZ_BIN_DIR=/x", "AUTHZ_RUN_DIR=/y", NULL };
    azc_config *cfg = load(NULL, env);
    long long port;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_check(cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], &e), AZC_OK);
    assert_int_equal(azc_config_get_int(cfg, "http", "port", 7, 1, 65535, &port, &e), AZC_OK);
    assert_int_equal(port, 7);
    azc_config_free(cfg);
}

static void test_unknown_keys(void **state)
{
    char *env[] = { "AUTHZ_HTTP_PROT=1", NULL };
    azc_config *cfg;
    azc_err e;
    (void)state;

    cfg = load("{\"http\": {\"prot\": 1}}", NULL);
    assert_int_equal(azc_config_check(cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "unknown key \"http.prot\""));
    azc_config_free(cfg);
    cfg = load(NULL, env);
    assert_int_equal(azc_config_check(cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "environment: unknown key \"http.prot\""));
    azc_config_free(cfg);
}

static void test_malformed_files(void **state)
{
    static const char *const bad[][2] = {
        { "{\"http\": {\"port\": 1,}}", "invalid JSON at line 1" },
        { "[1, 2]", "top level must be an object" },
        { "{\"http\": 5}", "section \"http\" must be an object" },
        { "{\"Http\": {}}", "section name \"Http\"" },
        { "{\"http\": {\"Port\": 1}}", "key \"http.Port\"" },
        { "{\"http\": {\"port\": 1, \"port\": 2}}", "duplicate" },
        { "", "invalid JSON" },
    };
    size_t k;
    (void)state;

    for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        azc_config *cfg = NULL;
        azc_err e;

        azc_err_clear(&e);
        assert_int_equal(azc_config_load_string(&cfg, bad[k][0], NULL, &e), AZC_EINVAL);
        assert_null(cfg);
        if (strstr(e.msg, bad[k][1]) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", k, e.msg, bad[k][1]);
    }
}

static void test_file_io(void **state)
{
    char path[] = "/tmp/azc-config-XXXXXX";
    int fd = mkstemp(path);
    azc_config *cfg = NULL;
    long long i;
    azc_err e;
    (void)state;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, FILE_JSON, strlen(FILE_JSON)), (ssize_t)strlen(FILE_JSON));
    close(fd);
    assert_int_equal(azc_config_load(&cfg, path, NULL, &e), AZC_OK);
    assert_int_equal(azc_config_get_int(cfg, "http", "port", 1, 1, 65535, &i, &e), AZC_OK);
    assert_int_equal(i, 8080);
    azc_config_free(cfg);
    unlink(path);
    assert_int_equal(azc_config_load(&cfg, path, NULL, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(azc_config_load(&cfg, "/", NULL, &e), AZC_EINVAL);
    azc_config_free(NULL);
}

static void test_lists_and_regions(void **state)
{
    char slots[4][8];
    const char *region = NULL;
    azc_config *cfg = NULL;
    size_t n = 9;
    azc_err e;
    (void)state;

    assert_int_equal(azc_config_split_list(" us, eu ,ap", &slots[0][0], 8, 4, &n, "k", &e), AZC_OK);
    assert_int_equal(n, 3);
    assert_string_equal(slots[0], "us");
    assert_string_equal(slots[1], "eu");
    assert_string_equal(slots[2], "ap");
    assert_int_equal(azc_config_split_list("", &slots[0][0], 8, 4, &n, "k", &e), AZC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(azc_config_split_list("us,,eu", &slots[0][0], 8, 4, &n, "k", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "k has an empty"));
    assert_int_equal(azc_config_split_list("a,b,c,d,e", &slots[0][0], 8, 4, &n, "k", &e), AZC_EINVAL);
    assert_int_equal(azc_config_split_list("toolongitem", &slots[0][0], 8, 4, &n, "k", &e),
                     AZC_EINVAL);

    assert_int_equal(azc_config_load_string(&cfg, "{\"service\": {\"region\": \"eu\", "
                                                   "\"regions\": \"us,eu\"}}", NULL, &e), AZC_OK);
    assert_int_equal(azc_config_regions(cfg, &region, &slots[0][0], 8, 4, &n, &e), AZC_OK);
    assert_string_equal(region, "eu");
    assert_int_equal(n, 2);
    azc_config_free(cfg);
    assert_int_equal(azc_config_load_string(&cfg, "{\"service\": {\"region\": \"ap\", "
                                                   "\"regions\": \"us,eu\"}}", NULL, &e), AZC_OK);
    assert_int_equal(azc_config_regions(cfg, &region, &slots[0][0], 8, 4, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "must include"));
    azc_config_free(cfg);
    assert_int_equal(azc_config_load_string(&cfg, "{\"service\": {\"region\": \"us\", "
                                                   "\"regions\": \"us,E-U\"}}", NULL, &e), AZC_OK);
    assert_int_equal(azc_config_regions(cfg, &region, &slots[0][0], 8, 4, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "E-U"));
    azc_config_free(cfg);
    assert_int_equal(azc_config_load_string(&cfg, "{}", NULL, &e), AZC_OK);
    assert_int_equal(azc_config_regions(cfg, &region, &slots[0][0], 8, 4, &n, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "service.region"));
    azc_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_values),
        cmocka_unit_test(test_wrong_types_name_the_key),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_env_bad_values),
        cmocka_unit_test(test_env_foreign_names_ignored),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_file_io),
        cmocka_unit_test(test_lists_and_regions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
